//! The change feed: every committed change once, in order, on every write path; live over
//! Server-Sent Events; retention.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use books_local_postgres::testing::TestDatabase;
use diesel::prelude::*;
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::helpers::{TestApp, free_port, memory, serve, wait_ready};

const CHANGES: &str = "/api/v1/books/changes";

/// Every change after `after`, following `next_after` until a page comes back empty.
async fn follow(app: &TestApp, mut after: i64) -> (Vec<Value>, i64) {
    let mut seen = Vec::new();
    loop {
        let page = app.get(&format!("{CHANGES}?after={after}&limit=7")).await;
        assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
        let page = page.json();
        let items = page["items"].as_array().unwrap().clone();
        let next = page["next_after"].as_i64().unwrap();
        if items.is_empty() {
            assert_eq!(next, after, "an empty page continues where it was asked");
            return (seen, after);
        }
        assert_eq!(next, items.last().unwrap()["seq"].as_i64().unwrap());
        after = next;
        seen.extend(items);
    }
}

fn summary(changes: &[Value]) -> Vec<(String, i64, i64)> {
    changes
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_owned(),
                c["book_id"].as_i64().unwrap(),
                c["version"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn assert_dense_and_ordered(changes: &[Value], first: i64) {
    for (i, change) in changes.iter().enumerate() {
        assert_eq!(
            change["seq"].as_i64().unwrap(),
            first + i as i64,
            "seqs follow one another: {changes:?}"
        );
    }
}

#[actix_web::test]
async fn every_write_path_records_its_change_in_order() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let id = book["id"].as_i64().unwrap();
    let path = format!("/api/v1/books/{id}");
    let put = json!({"title": "Dune", "author": "Frank Herbert", "genre": "SF"});
    assert_eq!(
        app.send_json(Method::PUT, &path, &put, &[]).await.status,
        200
    );
    let patch = json!({"genre": "Science fiction"});
    assert_eq!(
        app.send_json(Method::PATCH, &path, &patch, &[])
            .await
            .status,
        200
    );
    // A write that changes nothing makes no change.
    assert_eq!(
        app.send_json(Method::PATCH, &path, &patch, &[])
            .await
            .status,
        200
    );
    let batch = json!({"books": [{"title": "A", "author": "X"}, {"title": "B", "author": "X"}]});
    let made = app
        .send_json(Method::POST, "/api/v1/books/batch", &batch, &[])
        .await
        .json();
    let (a, b) = (
        made["books"][0]["id"].as_i64().unwrap(),
        made["books"][1]["id"].as_i64().unwrap(),
    );
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let legacy = app
        .request(
            Method::POST,
            "/booksApi",
            &form,
            Some(b"title=Emma&author=Jane+Austen"),
        )
        .await
        .json();
    let emma = legacy["Book"]["id"].as_i64().unwrap();
    let update = app
        .request(
            Method::PUT,
            &format!("/booksApi/{emma}"),
            &form,
            Some(b"genre=Classic"),
        )
        .await;
    assert_eq!(update.status, 200);
    assert_eq!(
        app.request(Method::DELETE, &format!("/booksApi/{emma}"), &[], None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.request(Method::DELETE, &path, &[], None).await.status,
        204
    );

    let (changes, _) = follow(&app, 0).await;
    let s = |kind: &str, book: i64, version: i64| (kind.to_owned(), book, version);
    assert_eq!(
        summary(&changes),
        [
            s("created", id, 1),
            s("updated", id, 2),
            s("updated", id, 3),
            s("created", a, 1),
            s("created", b, 1),
            s("created", emma, 1),
            s("updated", emma, 2),
            s("deleted", emma, 3),
            s("deleted", id, 4),
        ]
    );
    assert_dense_and_ordered(&changes, 1);
    assert_eq!(
        changes[2]["book"]["genre"], "Science fiction",
        "the book as the change left it"
    );
    assert_eq!(changes[0]["book"]["genre"], Value::Null);
    assert_eq!(changes[7]["book"], Value::Null, "a delete carries no book");
    assert!(changes[0]["at"].is_string());
}

fn connect(url: &str) -> PgConnection {
    PgConnection::establish(url).unwrap()
}

#[actix_web::test]
async fn a_change_whose_transaction_commits_late_is_still_seen_once_and_a_rollback_leaves_none() {
    let app = TestApp::spawn().await;
    let url = app.database_url().to_owned();
    // A writer that starts first and commits last: its change is recorded before the others',
    // but must not be skipped by a reader who has already moved past them.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<bool>();
    let holder = std::thread::spawn(move || {
        let mut conn = connect(&url);
        for _ in 0..2 {
            conn.transaction::<_, diesel::result::Error, _>(|conn| {
                diesel::sql_query("INSERT INTO book (title, author) VALUES ('Slow', 'Writer')")
                    .execute(conn)?;
                held_tx.send(()).unwrap();
                if release_rx.recv().unwrap() {
                    Ok(())
                } else {
                    Err(diesel::result::Error::RollbackTransaction)
                }
            })
            .ok();
        }
    });
    let wait =
        |rx: &std::sync::mpsc::Receiver<()>| rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // First round: rolled back.
    wait(&held_rx);
    app.create(json!({"title": "Quick 1", "author": "W"})).await;
    release_tx.send(false).unwrap();
    // Second round: held open while others commit and a reader reads past them.
    wait(&held_rx);
    for i in 2..=4 {
        app.create(json!({"title": format!("Quick {i}"), "author": "W"}))
            .await;
    }
    let (before, after) = follow(&app, 0).await;
    let titles = |changes: &[Value]| -> Vec<String> {
        changes
            .iter()
            .map(|c| c["book"]["title"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        titles(&before),
        ["Quick 1", "Quick 2", "Quick 3", "Quick 4"]
    );
    release_tx.send(true).unwrap();
    holder.join().unwrap();
    let (late, _) = follow(&app, after).await;
    assert_eq!(
        titles(&late),
        ["Slow"],
        "the late commit comes after what was already read"
    );
    assert_dense_and_ordered(&[before, late].concat(), 1);
}

#[actix_web::test]
async fn concurrent_writers_on_two_instances_give_every_change_exactly_once_in_version_order() {
    let database = TestDatabase::new();
    let first = TestApp::spawn_on(database.pool(), None, None);
    let second = TestApp::spawn_on(database.pool(), Some(database), None);
    let books: Vec<i64> = {
        let batch: Vec<Value> = (0..8)
            .map(|i| json!({"title": format!("B{i}"), "author": "W"}))
            .collect();
        let made = first
            .send_json(
                Method::POST,
                "/api/v1/books/batch",
                &json!({"books": batch}),
                &[],
            )
            .await
            .json();
        made["books"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_i64().unwrap())
            .collect()
    };
    // Eight writers per instance, each patching every book in turn, while a reader follows.
    let writers = (0..16).map(|w| {
        let app = if w % 2 == 0 { &first } else { &second };
        let books = books.clone();
        async move {
            for round in 0..5 {
                for id in &books {
                    let body = json!({"genre": format!("w{w}r{round}")});
                    let reply = app
                        .send_json(Method::PATCH, &format!("/api/v1/books/{id}"), &body, &[])
                        .await;
                    assert_eq!(reply.status, 200);
                }
            }
        }
    });
    let reader = async {
        let mut seen = Vec::new();
        let mut after = 0;
        for _ in 0..40 {
            let (page, next) = follow(&second, after).await;
            seen.extend(page);
            after = next;
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        (seen, after)
    };
    let (_, (mut seen, after)) =
        futures_util::join!(futures_util::future::join_all(writers), reader);
    let (rest, _) = follow(&first, after).await;
    seen.extend(rest);
    // 8 creates and 16 × 5 × 8 updates, each once.
    assert_eq!(seen.len(), 8 + 16 * 5 * 8);
    assert_dense_and_ordered(&seen, 1);
    for id in books {
        let versions: Vec<i64> = seen
            .iter()
            .filter(|c| c["book_id"] == id)
            .map(|c| c["version"].as_i64().unwrap())
            .collect();
        assert_eq!(
            versions,
            (1..=81).collect::<Vec<_>>(),
            "book {id}'s changes in version order"
        );
    }
}

#[actix_web::test]
async fn a_batch_the_database_refuses_leaves_no_change() {
    let app = TestApp::spawn().await;
    let mut conn = connect(app.database_url());
    diesel::sql_query("ALTER TABLE book ADD CONSTRAINT no_poison CHECK (title <> 'poison')")
        .execute(&mut conn)
        .unwrap();
    let batch =
        json!({"books": [{"title": "fine", "author": "A"}, {"title": "poison", "author": "A"}]});
    let reply = app
        .send_json(Method::POST, "/api/v1/books/batch", &batch, &[])
        .await;
    assert!(reply.status >= 500);
    app.create(json!({"title": "after", "author": "A"})).await;
    let (changes, _) = follow(&app, 0).await;
    assert_eq!(summary(&changes).len(), 1);
    assert_eq!(
        changes[0]["seq"], 1,
        "no seq was used up by the rolled-back batch"
    );
}

#[actix_web::test]
async fn bad_positions_and_limits_are_refused() {
    let app = TestApp::spawn().await;
    for query in [
        "after=-1",
        "after=abc",
        "after=99999999999999999999",
        "after=",
        "limit=0",
        "limit=1001",
        "after=1&after=2",
    ] {
        app.get(&format!("{CHANGES}?{query}")).await.problem(400);
    }
    for accept in ["application/json", "text/event-stream"] {
        // Not a seq, negative, and 19 digits (the document allows 1 to 18).
        for id in ["x", "-1", "1234567890123456789"] {
            let headers = [("accept", accept), ("last-event-id", id)];
            app.request(Method::GET, CHANGES, &headers, None)
                .await
                .problem(400);
        }
    }
    let both = format!("{CHANGES}?after=-1");
    app.request(Method::GET, &both, &[("last-event-id", "3")], None)
        .await
        .problem(400);
    app.request(Method::GET, CHANGES, &[("accept", "text/html")], None)
        .await
        .problem(406);
    // HEAD answers as GET would, for the feed (a stream included) and the export alike, and
    // holds nothing open.
    for (path, accept, status) in [
        (CHANGES, "*/*", 200),
        (CHANGES, "text/event-stream", 200),
        (CHANGES, "text/csv", 406),
        ("/api/v1/books/export", "*/*", 200),
        ("/api/v1/books/export", "text/csv", 200),
        ("/api/v1/books/export", "text/event-stream", 406),
    ] {
        let reply = app
            .request(Method::HEAD, path, &[("accept", accept)], None)
            .await;
        assert_eq!(reply.status, status, "HEAD {path} ({accept})");
        assert!(reply.body.is_empty());
    }
    let empty = app.get(&format!("{CHANGES}?after=0")).await.json();
    assert_eq!(empty, json!({"items": [], "next_after": 0}));
}

#[actix_web::test]
async fn a_position_past_the_newest_change_is_a_409_never_an_empty_page() {
    let app = TestApp::spawn().await;
    app.create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let (changes, newest) = follow(&app, 0).await;
    assert_eq!(changes.len(), 1);
    // At the newest seq: an empty page, and a stream that waits.
    let at_newest = app.get(&format!("{CHANGES}?after={newest}")).await;
    assert_eq!(at_newest.status, 200);
    // Past it: a position this feed never reached would silently skip what comes next.
    let past = newest + 1;
    let problem = app
        .get(&format!("{CHANGES}?after={past}"))
        .await
        .problem(409);
    assert!(
        problem["detail"].as_str().unwrap().contains("export"),
        "{problem}"
    );
    let id = past.to_string();
    for headers in [
        vec![
            ("accept", "text/event-stream"),
            ("last-event-id", id.as_str()),
        ],
        vec![("accept", "text/event-stream")],
    ] {
        let path = if headers.len() == 1 {
            format!("{CHANGES}?after={past}")
        } else {
            CHANGES.to_owned()
        };
        app.request(Method::GET, &path, &headers, None)
            .await
            .problem(409);
    }
}

/// The body of an awc response.
type BodyStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>>,
>;

/// An open Server-Sent Events stream, read with a deadline.
struct Events {
    body: awc::ClientResponse<BodyStream>,
    buffer: String,
}

impl Events {
    async fn open(app: &TestApp, headers: &[(&str, &str)]) -> Self {
        let mut request = app
            .client
            .get(format!("{}{CHANGES}", app.address))
            .insert_header(("accept", "text/event-stream"));
        for header in headers {
            request = request.insert_header(*header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("content-type").unwrap(),
            "text/event-stream"
        );
        Self {
            body: response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped) as (id, event, data), within `patience`.
    async fn next(&mut self, patience: Duration) -> Option<(String, String, Value)> {
        let deadline = Instant::now() + patience;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_owned)
                };
                if let (Some(id), Some(event), Some(data)) =
                    (field("id: "), field("event: "), field("data: "))
                {
                    return Some((id, event, serde_json::from_str(&data).unwrap()));
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match actix_web::rt::time::timeout(left, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                _ => return None,
            }
        }
    }
}

#[actix_web::test]
async fn a_stream_delivers_changes_live_and_resumes_after_the_last_event_id() {
    let app = TestApp::spawn().await;
    app.create(json!({"title": "Before", "author": "A"})).await;
    let mut events = Events::open(&app, &[]).await;
    let (id, kind, data) = events.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!((id.as_str(), kind.as_str()), ("1", "created"));
    assert_eq!(data["book"]["title"], "Before");
    let written = Instant::now();
    let book = app.create(json!({"title": "Live", "author": "A"})).await;
    let (id, kind, data) = events
        .next(Duration::from_secs(5))
        .await
        .expect("the change arrives");
    let latency = written.elapsed();
    assert_eq!((id.as_str(), kind.as_str()), ("2", "created"));
    assert_eq!(data["book_id"], book["id"]);
    assert!(
        latency < Duration::from_secs(2),
        "arrived after {latency:?}"
    );
    drop(events);
    app.request(
        Method::DELETE,
        &format!("/api/v1/books/{}", book["id"]),
        &[],
        None,
    )
    .await;
    // A reconnect names the last event it saw; `after` is overruled by it.
    let mut resumed = Events::open(&app, &[("last-event-id", "1")]).await;
    let (id, _, _) = resumed.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(id, "2");
    let (id, kind, _) = resumed.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!((id.as_str(), kind.as_str()), ("3", "deleted"));
}

impl Events {
    /// True when a keep-alive comment line (any comment but the greeting) arrives within
    /// `patience`.
    async fn heartbeat(&mut self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let comment = |buffer: &str| {
            buffer
                .lines()
                .any(|line| line.starts_with(':') && !line.starts_with(": changes after"))
        };
        while !comment(&self.buffer) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match actix_web::rt::time::timeout(left, self.body.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                _ => return false,
            }
        }
        true
    }
}

#[actix_web::test]
async fn an_idle_stream_sends_heartbeats() {
    // The test server sends a comment every 300 ms (the service, every 15 s).
    let app = TestApp::spawn().await;
    let mut events = Events::open(&app, &[]).await;
    for _ in 0..2 {
        assert!(events.heartbeat(Duration::from_secs(3)).await);
        events.buffer.clear();
    }
}

#[actix_web::test]
async fn a_change_on_one_instance_reaches_streams_on_the_other_with_or_without_notifications() {
    let database = TestDatabase::new();
    // The first instance has no listener (it polls); the second listens for notifications.
    let polling = TestApp::spawn_on(database.pool(), None, None);
    let listening = TestApp::spawn_on(database.pool(), Some(database), None);
    let mut on_polling = Events::open(&polling, &[]).await;
    let mut on_listening = Events::open(&listening, &[]).await;
    for (writer, title) in [(&polling, "one"), (&listening, "two")] {
        writer.create(json!({"title": title, "author": "A"})).await;
        for stream in [&mut on_polling, &mut on_listening] {
            let (_, _, data) = stream
                .next(Duration::from_secs(5))
                .await
                .expect("delivered");
            assert_eq!(data["book"]["title"], title);
        }
    }
}

#[actix_web::test]
async fn idle_streams_hold_no_database_connection() {
    let (app, _, id) = crate::operations::one_connection_and_one_book().await;
    let mut streams = Vec::new();
    // As many as one caller may hold.
    for _ in 0..8 {
        streams.push(Events::open(&app, &[]).await);
    }
    // The pool's only connection is free for everyone else.
    for _ in 0..5 {
        assert_eq!(app.get(&format!("/api/v1/books/{id}")).await.status, 200);
    }
    app.create(json!({"title": "Seen by all", "author": "A"}))
        .await;
    for stream in &mut streams {
        let (_, _, first) = stream.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first["seq"], 1);
        let (_, _, second) = stream.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(second["book"]["title"], "Seen by all");
    }
}

fn open_stream(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {CHANGES} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    stream
}

#[test]
fn a_thousand_idle_streams_stay_small_and_shutdown_ends_them_cleanly() {
    let database = TestDatabase::new();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    // One address stands for a thousand callers here.
    let mut service = serve(&[
        ("DATABASE_URL", database.url()),
        ("BIND", &bind),
        ("STREAMS_PER_CALLER", "2000"),
        ("STREAMS_TOTAL", "2000"),
    ]);
    assert!(wait_ready(port, &mut service, Duration::from_secs(60)));
    let pid = service.0.id();
    // Warm up with a few streams, so that the baseline holds what any stream needs.
    let warm: Vec<TcpStream> = (0..10).map(|_| open_stream(port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (before, _) = memory(pid);
    let streams: Vec<TcpStream> = (0..1000).map(|_| open_stream(port)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let (after, _) = memory(pid);
    eprintln!(
        "1 000 idle streams: RSS {} MiB before, {} MiB after",
        before / (1024 * 1024),
        after / (1024 * 1024)
    );
    assert!(
        after.saturating_sub(before) < 64 * 1024 * 1024,
        "1 000 idle streams added {} MiB",
        (after - before) / (1024 * 1024)
    );
    drop(streams);
    // SIGTERM: the streams end with the chunked body's last chunk, and the process exits.
    let mut stream = warm.into_iter().next().unwrap();
    service.terminate();
    let stopping = Instant::now();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "the stream ended cleanly: {rest:?}"
    );
    assert!(stopping.elapsed() < Duration::from_secs(5));
    assert!(
        service
            .exit_within(stopping, Duration::from_secs(15))
            .success()
    );
}

#[test]
fn changes_past_the_retention_are_purged_and_asking_for_them_is_a_410() {
    let database = TestDatabase::new();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut service = serve(&[
        ("DATABASE_URL", database.url()),
        ("BIND", &bind),
        ("CHANGES_RETENTION", "1s"),
    ]);
    assert!(wait_ready(port, &mut service, Duration::from_secs(60)));
    let mut conn = connect(database.url());
    diesel::sql_query(
        "INSERT INTO book (title, author) SELECT 'T' || n, 'A' FROM generate_series(1, 3) n",
    )
    .execute(&mut conn)
    .unwrap();
    let get = |path: &str| -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        (answer[9..12].parse().unwrap(), answer)
    };
    // Sequenced now; purged once older than a second.
    assert_eq!(get(&format!("{CHANGES}?after=0")).0, 200);
    let started = Instant::now();
    let (status, answer) = loop {
        let (status, answer) = get(&format!("{CHANGES}?after=0"));
        if status != 200 || started.elapsed() > Duration::from_secs(10) {
            break (status, answer);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 410, "{answer}");
    assert!(
        answer.contains("application/problem+json") && answer.contains("export"),
        "{answer}"
    );
    // From where the purge stopped, the feed goes on.
    assert_eq!(get(&format!("{CHANGES}?after=3")).0, 200);
    let (_, export) = get("/api/v1/books/export");
    assert!(export.contains("changes-after: 3"), "{export}");
}
