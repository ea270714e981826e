//! What a hostile client, a crash and a strict fuzzer found (issue 9): each test here failed
//! before its fix.

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::Method;
use books_domain::{KeyName, Scope};
use books_http::RateLimit;
use books_local_postgres::testing::TestDatabase;
use serde_json::json;

use crate::helpers::{Process, TestApp, free_port, memory, serve, serve_with_stderr, wait_ready};

/// Sends `request` over a raw connection to `address` (`http://host:port`) and reads until the
/// server closes it or `patience` runs out.
async fn raw_exchange(address: &str, request: Vec<u8>, patience: Duration) -> String {
    let host = address.trim_start_matches("http://").to_owned();
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(host).unwrap();
        stream.set_read_timeout(Some(patience)).unwrap();
        stream.write_all(&request).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap()
}

#[actix_web::test]
async fn a_flood_of_invalid_keys_is_throttled_like_any_other_traffic() {
    let app = TestApp::spawn_with(Some(RateLimit {
        per_second: 1,
        burst: 5,
    }))
    .await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let bearer = format!("Bearer bk_{i:064x}");
        let reply = app
            .request(
                Method::GET,
                "/api/v1/books",
                &[("authorization", &bearer)],
                None,
            )
            .await;
        statuses.push(reply.status);
    }
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 10,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    // The bad keys spent the address's budget: an anonymous request from there waits too.
    let anonymous = app
        .request(Method::GET, "/api/v1/books", &[("authorization", "")], None)
        .await;
    anonymous.problem(429);
    assert!(anonymous.header("retry-after").is_some());
    // A valid key has a budget of its own.
    assert_eq!(app.get("/api/v1/books").await.status, 200);
}

#[actix_web::test]
async fn a_request_body_that_stalls_is_cut_with_a_408_problem() {
    let app = TestApp::spawn().await;
    let started = Instant::now();
    let request = format!(
        "POST /api/v1/books HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        app.write_key
    );
    let answer = raw_exchange(&app.address, request.into_bytes(), Duration::from_secs(20)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(app.count().await, 0);
}

async fn create_with_shared_name(
    app: &TestApp,
    body: &serde_json::Value,
    bearer: Option<&str>,
) -> crate::helpers::Reply {
    let mut headers = vec![("idempotency-key", "shared-name")];
    if let Some(bearer) = bearer {
        headers.push(("authorization", bearer));
    }
    app.send_json(Method::POST, "/api/v1/books", body, &headers)
        .await
}

#[actix_web::test]
async fn idempotency_keys_belong_to_the_api_key_that_used_them() {
    let app = TestApp::spawn().await;
    let (_, other) = app
        .keys
        .create(&KeyName::new("another-client").unwrap(), Scope::Write)
        .unwrap();
    let other_bearer = format!("Bearer {}", other.expose());
    // The key ring is reloaded every two seconds.
    for _ in 0..20 {
        let auth = [("authorization", other_bearer.as_str())];
        if app
            .request(Method::GET, "/api/v1/books", &auth, None)
            .await
            .status
            == 200
        {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    let dune = json!({"title": "Dune", "author": "Frank Herbert"});
    let emma = json!({"title": "Emma", "author": "Jane Austen"});
    let first = create_with_shared_name(&app, &dune, None).await;
    assert_eq!(first.status, 201);
    let theirs = create_with_shared_name(&app, &dune, Some(&other_bearer)).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(
        theirs.json()["id"],
        first.json()["id"],
        "not another's replay"
    );
    assert_eq!(theirs.header("idempotent-replayed"), None);
    // Another body under the same name is the other client's own first use, not a reuse.
    let other_body = create_with_shared_name(&app, &emma, Some(&other_bearer)).await;
    other_body.problem(422);
    let replay = create_with_shared_name(&app, &dune, Some(&other_bearer)).await;
    assert_eq!(replay.json()["id"], theirs.json()["id"]);
    assert_eq!(create_with_shared_name(&app, &emma, None).await.status, 422);
    assert_eq!(app.count().await, 2);
}

#[actix_web::test]
async fn ambiguous_requests_are_refused_and_name_what_is_ambiguous() {
    let app = TestApp::spawn().await;
    let (write, read) = (
        format!("Bearer {}", app.write_key),
        format!("Bearer {}", app.read_key),
    );
    let two_keys = app
        .send_exact(
            Method::GET,
            "/api/v1/books",
            &[("authorization", &read), ("authorization", &write)],
        )
        .await;
    let problem = two_keys.problem(400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Authorization")
    );

    let duplicate = app
        .request(
            Method::POST,
            "/api/v1/books",
            &[("content-type", "application/json")],
            Some(br#"{"title": "a", "title": "b", "author": "c"}"#),
        )
        .await;
    let problem = duplicate.problem(422);
    assert_eq!(problem["errors"][0]["field"], "title");
    assert_eq!(problem["errors"][0]["message"], "is given more than once");

    for (method, path) in [
        (Method::GET, "/api/v1/books?limit=1&limit=2"),
        (Method::POST, "/booksApi?title=a&title=b&author=c"),
    ] {
        let problem = app.request(method, path, &[], None).await.problem(400);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("more than once"), "{detail}");
        assert!(!detail.contains("deserialize"), "{detail}");
    }

    let both = app
        .request(
            Method::POST,
            "/booksApi?title=Dune&author=Herbert",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"title=Emma&author=Austen"),
        )
        .await;
    let problem = both.problem(400);
    assert!(problem["detail"].as_str().unwrap().contains("query string"));
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn a_write_that_changes_nothing_keeps_the_version_updated_at_and_etag() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Dune", "author": "Frank Herbert", "genre": "SF"}))
        .await;
    let path = format!("/api/v1/books/{}", book["id"]);
    let etag = app.get(&path).await.header("etag").unwrap().to_owned();
    let same = [
        (Method::PATCH, json!({})),
        (Method::PATCH, json!({"title": " Dune ", "genre": "SF"})),
        (
            Method::PUT,
            json!({"title": "Dune", "author": "Frank Herbert", "genre": "SF"}),
        ),
    ];
    for (method, body) in same {
        let reply = app.send_json(method, &path, &body, &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), book, "{body}");
        assert_eq!(reply.header("etag"), Some(etag.as_str()));
    }
    let legacy = app
        .request(
            Method::PUT,
            &format!("/booksApi/{}?title=", book["id"]),
            &[],
            None,
        )
        .await;
    assert_eq!(legacy.status, 200);
    assert_eq!(app.get(&path).await.json(), book);

    // The ETag read before the no-ops still wins the next real write.
    let changed = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"genre": null}),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["version"], 2);
}

#[actix_web::test]
async fn the_tutorial_routes_refuse_invalid_utf8() {
    let app = TestApp::spawn().await;
    let query = app
        .request(
            Method::POST,
            "/booksApi?title=%FF%FE&author=Someone",
            &[],
            None,
        )
        .await;
    query.problem(400);
    let form = app
        .request(
            Method::POST,
            "/booksApi",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"title=%C3%28&author=Someone"),
        )
        .await;
    form.problem(400);
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn head_is_answered_wherever_get_is_with_the_same_status_and_headers() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let book_path = format!("/api/v1/books/{}", book["id"]);
    for path in [
        book_path.as_str(),
        "/api/v1/books",
        "/booksApi",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api-docs/openapi.json",
        "/api/v1/books/999999",
    ] {
        let get = app.get(path).await;
        let head = app.request(Method::HEAD, path, &[], None).await;
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(head.header("etag"), get.header("etag"), "{path}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
    }
}

#[actix_web::test]
async fn a_wrong_method_on_a_service_endpoint_is_405_with_allow() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::POST, "/healthz"),
        (Method::TRACE, "/readyz"),
        (Method::DELETE, "/metrics"),
        (Method::PUT, "/api-docs/openapi.json"),
        (Method::POST, "/"),
    ] {
        let reply = app.request(method.clone(), path, &[], None).await;
        reply.problem(405);
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
    let v1 = app.request(Method::TRACE, "/api/v1/books", &[], None).await;
    v1.problem(405);
    assert!(v1.header("allow").unwrap().contains("HEAD"));
}

#[actix_web::test]
async fn errors_all_look_alike_and_quote_no_framework() {
    let app = TestApp::spawn().await;
    let not_an_object = app
        .request(
            Method::POST,
            "/api/v1/books",
            &[("content-type", "application/json")],
            Some(b"[1, 2]"),
        )
        .await;
    let problem = not_an_object.problem(422);
    let detail = problem["detail"].as_str().unwrap();
    assert_eq!(detail, detail.trim_start());
    assert!(
        problem["errors"]
            .as_array()
            .is_none_or(|errors| errors.iter().all(|e| e["field"] != "")),
        "{problem}"
    );
    let book = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let path = format!("/api/v1/books/{}", book["id"]);
    for if_match in ["1-1", "\"1-1", "*, \"1-1\"", "W/*"] {
        let reply = app
            .request(Method::DELETE, &path, &[("if-match", if_match)], None)
            .await;
        assert_eq!(reply.problem(400)["status"], 400, "{if_match}");
    }
    let bearer = format!("Bearer {}", app.write_key);
    let empty = app
        .send_exact(
            Method::DELETE,
            &path,
            &[("authorization", &bearer), ("if-match", "")],
        )
        .await;
    empty.problem(400);
    assert_eq!(app.get(&path).await.status, 200, "nothing was deleted");
}

#[actix_web::test]
async fn a_cursor_carries_its_page_size_and_a_limit_beside_it_wins() {
    let app = TestApp::spawn().await;
    for i in 0..7 {
        app.create(json!({"title": format!("Book {i}"), "author": "A"}))
            .await;
    }
    let first = app.get("/api/v1/books?limit=2").await.json();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get(&format!("/api/v1/books?cursor={cursor}"))
        .await
        .json();
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    let wider = app
        .get(&format!("/api/v1/books?cursor={cursor}&limit=3"))
        .await
        .json();
    assert_eq!(wider["items"].as_array().unwrap().len(), 3);
}

#[test]
fn thousands_of_connections_opened_held_and_closed_leave_the_service_small() {
    let database = TestDatabase::new();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut service = serve(&[("DATABASE_URL", database.url()), ("BIND", &bind)]);
    assert!(wait_ready(port, &mut service, Duration::from_secs(60)));
    for _ in 0..10 {
        // Five hundred at a time: half idle, half stalled in a request head or a body.
        let held: Vec<TcpStream> = (0..500)
            .filter_map(|i| {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
                let partial: &[u8] = match i % 3 {
                    0 => b"",
                    1 => b"GET /healthz HTTP/1.1\r\nHost: t\r\n",
                    _ => b"POST /booksApi HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nti",
                };
                stream.write_all(partial).ok()?;
                Some(stream)
            })
            .collect();
        assert!(held.len() > 400);
        drop(held);
    }
    assert!(wait_ready(port, &mut service, Duration::from_secs(10)));
    let (_, peak) = memory(service.0.id());
    assert!(peak < 64 * 1024 * 1024, "peak RSS {} MiB", peak >> 20);
}

/// Sends `count` `GET /healthz` on one connection, pipelined a hundred at a time, and reads every
/// answer, which must be a 200.
fn pipelined_health_checks(port: u16, count: usize) {
    pipelined_health_checks_counted(port, count, &AtomicUsize::new(0));
}

/// [`pipelined_health_checks`], adding each answer to `answered` as it comes.
fn pipelined_health_checks_counted(port: u16, count: usize, answered_so_far: &AtomicUsize) {
    const OK: &[u8] = b"HTTP/1.1 200 OK";
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let batch = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".repeat(100);
    let mut buffer = vec![0_u8; 64 * 1024];
    // The end of what was read before, too short to hold a whole status line: one that a read
    // splits is counted once it is complete.
    let mut carried = Vec::new();
    for _ in 0..count / 100 {
        stream.write_all(&batch).unwrap();
        let mut answered = 0;
        while answered < 100 {
            let read = stream
                .read(&mut buffer)
                .expect("every request is answered 200");
            assert!(read > 0, "the service closed the connection");
            carried.extend_from_slice(&buffer[..read]);
            let complete = carried.windows(OK.len()).filter(|w| *w == OK).count();
            answered += complete;
            answered_so_far.fetch_add(complete, Ordering::Relaxed);
            carried.drain(..carried.len().saturating_sub(OK.len() - 1));
        }
    }
}

#[test]
fn the_service_does_not_grow_with_the_number_of_requests_it_answers() {
    let database = TestDatabase::new();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut service = serve(&[("DATABASE_URL", database.url()), ("BIND", &bind)]);
    assert!(wait_ready(port, &mut service, Duration::from_secs(60)));
    let pid = service.0.id();
    // Rounds of 150,000 requests on four connections, each followed by 6 s of rest, longer than
    // the service takes to fold request durations into its histograms (every 5 s). The first
    // round brings the service to its working size; the next two may not add to it. Before the
    // durations were folded, each request kept about 14 bytes until `/metrics` was scraped: the
    // two rounds would have added 4 MiB.
    let round = || {
        let clients: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(move || pipelined_health_checks(port, 37_500)))
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        std::thread::sleep(Duration::from_secs(6));
        memory(pid).0
    };
    let working = round();
    let after = (round(), round());
    let grown = after.1.saturating_sub(working);
    eprintln!(
        "resident after 150,000 requests {} KiB, after 300,000 more {} and {} KiB",
        working >> 10,
        after.0 >> 10,
        after.1 >> 10
    );
    assert!(
        grown < 1536 * 1024,
        "300,000 requests added {} KiB",
        grown >> 10
    );
}

/// A service whose standard error is a pipe that nobody reads yet (it holds 64 KiB, about 300
/// lines), once it has answered `count` pipelined health checks (within the helper's 30 s read
/// timeout, or the test fails). Its database comes along, to outlive it.
fn health_checks_behind_an_unread_log(count: usize) -> (TestDatabase, Process) {
    let (database, service, port) = behind_an_unread_log();
    pipelined_health_checks(port, count);
    (database, service)
}

/// A ready service whose standard error is a pipe that nobody reads yet, its database, and its
/// port.
fn behind_an_unread_log() -> (TestDatabase, Process, u16) {
    let database = TestDatabase::new();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut service = serve_with_stderr(
        &[("DATABASE_URL", database.url()), ("BIND", &bind)],
        std::process::Stdio::piped(),
    );
    assert!(wait_ready(port, &mut service, Duration::from_secs(60)));
    (database, service, port)
}

#[test]
fn a_log_reader_that_stops_reading_holds_up_no_request_and_loses_no_line() {
    // When the workers wrote each request's line themselves, the 300th request stopped them all.
    let (_database, mut service) = health_checks_behind_an_unread_log(20_000);
    // Once the reader comes back, every one of those lines is there.
    let logged = health_check_lines(service.0.stderr.take().unwrap(), 20_000);
    assert_eq!(logged, 20_000, "lines of the 20,000 health checks");
}

#[test]
fn past_65536_waiting_lines_requests_wait_for_the_log_reader_and_no_line_is_lost() {
    // The buffer between the workers and the log's writer thread is bounded: a reader that never
    // comes back must not make the service grow without end, and lines are not dropped either
    // (an error's cause chain is the one line an operator cannot do without). So once 65,536
    // lines wait (and the pipe's 64 KiB and the writer's buffer are full), requests wait.
    const SENT: usize = 70_000;
    let (_database, mut service, port) = behind_an_unread_log();
    let answered = Arc::new(AtomicUsize::new(0));
    let client = {
        let answered = Arc::clone(&answered);
        std::thread::spawn(move || pipelined_health_checks_counted(port, SENT, &answered))
    };
    // Answers come until the buffer is full, then stop: wait until none has come for 3 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut last, mut since) = (0, Instant::now());
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        let now = answered.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    // 65,536 lines in the buffer, a few hundred in the pipe and the writer's buffer (about 200
    // bytes each), and up to a hundred answers of the last pipelined round not yet sent.
    assert!(
        (65_436..67_000).contains(&last),
        "{last} of {SENT} health checks answered while nobody read the log"
    );
    // The reader comes back: the requests that waited are answered, and every line is there.
    let logged = health_check_lines(service.0.stderr.take().unwrap(), SENT);
    assert_eq!(logged, SENT, "lines of the {SENT} health checks");
    client.join().expect("every health check is answered 200");
    assert_eq!(answered.load(Ordering::Relaxed), SENT);
}

/// Reads `log` until `expected` lines of `/healthz` requests have come, it ends, or 30 s pass;
/// how many came.
fn health_check_lines(mut log: impl Read + Send + 'static, expected: usize) -> usize {
    let (lines, counted) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = vec![0_u8; 64 * 1024];
        let mut carried = Vec::new();
        while let Ok(read) = log.read(&mut buffer) {
            if read == 0 {
                break;
            }
            carried.extend_from_slice(&buffer[..read]);
            let whole = carried
                .iter()
                .rposition(|byte| *byte == b'\n')
                .map_or(0, |at| at + 1);
            let text = String::from_utf8_lossy(&carried[..whole]).into_owned();
            carried.drain(..whole);
            let health = text
                .lines()
                .filter(|line| line.contains(r#"path="/healthz""#))
                .count();
            if lines.send(health).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut logged = 0;
    while logged < expected && Instant::now() < deadline {
        match counted.recv_timeout(Duration::from_millis(200)) {
            Ok(health) => logged += health,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    logged
}

#[test]
fn lines_still_waiting_when_the_service_is_told_to_stop_are_all_written_before_it_exits() {
    let (_database, mut service) = health_checks_behind_an_unread_log(20_000);
    // Nobody has read standard error yet: all but the pipe's 64 KiB of those lines still wait in
    // the service when it is told to stop. Ending without writing them would lose them.
    service.terminate();
    let stopping = Instant::now();
    let logged = health_check_lines(service.0.stderr.take().unwrap(), 20_000);
    assert_eq!(logged, 20_000, "lines of the 20,000 health checks");
    let exit = service.exit_within(stopping, Duration::from_secs(30));
    assert!(exit.success(), "{exit}");
}

#[test]
fn a_service_restarted_right_after_a_crash_on_the_embedded_default_comes_up() {
    use std::os::unix::fs::PermissionsExt as _;
    let folder = std::env::temp_dir().join(format!("books-api-crash-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    // As root the cluster runs as an unprivileged user, who must be able to enter the folder.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(folder.clone());
    let data = folder.join("postgres");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let env = [
        ("DATA_DIR", data.to_str().unwrap()),
        ("BIND", bind.as_str()),
    ];
    for round in 0..3 {
        let mut service = serve(&env);
        assert!(
            wait_ready(port, &mut service, Duration::from_secs(120)),
            "round {round}: the service did not come up"
        );
        // kill -9, and the next round starts at once, as a supervisor would.
        service.0.kill().unwrap();
        service.0.wait().unwrap();
    }
    // The last watchdog stops the cluster once the last service is gone.
    let started = Instant::now();
    while data.join("data/postmaster.pid").exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!data.join("data/postmaster.pid").exists());
}
