//! What operators rely on: rate limits, request ids, metrics.

use std::time::{Duration, Instant};

use actix_web::http::Method;
use books_adapters::{PoolOptions, connect, ensure_database, run_migrations};
use books_http::RateLimit;
use books_local_postgres::testing::TestDatabase;
use books_local_postgres::{ClusterOptions, LocalCluster};
use serde_json::json;

use std::io::{Read as _, Write as _};

use crate::helpers::{TestApp, free_port, serve, wait_ready};

#[actix_web::test]
async fn a_caller_past_its_burst_gets_429_with_retry_after_and_others_are_unaffected() {
    let app = TestApp::spawn_with(Some(RateLimit {
        per_second: 1,
        burst: 3,
    }))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = app
            .request(Method::GET, "/api/v1/books", &[("authorization", "")], None)
            .await;
        assert!(
            reply.header("ratelimit-limit").is_some()
                && reply.header("ratelimit-remaining").is_some()
        );
        statuses.push(reply.status);
        if reply.status == 429 {
            reply.problem(429);
            let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // A key has a bucket of its own.
    assert_eq!(app.get("/api/v1/books").await.status, 200);
    // Health probes are never limited.
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[actix_web::test]
async fn every_answer_carries_a_request_id_and_a_client_one_is_echoed() {
    let app = TestApp::spawn().await;
    let generated = app.get("/api/v1/books").await;
    assert!(
        generated
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 16)
    );
    let echoed = app
        .request(
            Method::GET,
            "/nowhere",
            &[("x-request-id", "trace-42")],
            None,
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-42"));
}

#[actix_web::test]
async fn metrics_count_requests_by_route_template_and_status_and_report_the_pool() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"].clone();
    app.get(&format!("/api/v1/books/{id}")).await;
    app.get("/api/v1/books/999999").await;
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(reply.body).unwrap();
    for line in [
        r#"http_requests_total{method="POST",route="/api/v1/books",status="201"} 1"#,
        r#"http_requests_total{method="GET",route="/api/v1/books/{id}",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/api/v1/books/{id}",status="404"} 1"#,
        r#"http_request_duration_seconds_count{method="GET",route="/api/v1/books/{id}",status="200"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(text.contains("db_pool_connections ") && text.contains("db_pool_idle_connections "));
    assert!(text.contains(r#"le="+Inf""#));
}

/// Polls `path` until it answers `status`, for at most `within`; returns how long that took.
async fn wait_for(app: &TestApp, path: &str, status: u16, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if app.get(path).await.status == status {
            return Some(started.elapsed());
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A server on a PostgreSQL cluster of the test's own (with a pool of 4), for tests that stop the
/// database: stopping the shared cluster would fail every other test.
struct OwnCluster {
    app: TestApp,
    cluster: LocalCluster,
    root: std::path::PathBuf,
    options: ClusterOptions,
}

impl OwnCluster {
    fn start(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("books-api-{name}-{}", std::process::id()));
        let options = ClusterOptions {
            ephemeral: false,
            remove_on_exit: true,
            leave_running: false,
        };
        let cluster = LocalCluster::start(&root, &options).unwrap();
        ensure_database(&cluster.connection_url("postgres"), "books").unwrap();
        let url = cluster.connection_url("books");
        run_migrations(&url, true).unwrap();
        let pool = connect(
            &url,
            &PoolOptions {
                max_size: 4,
                ..PoolOptions::default()
            },
        )
        .unwrap();
        Self {
            app: TestApp::spawn_on(pool, None, None),
            cluster,
            root,
            options,
        }
    }
}

#[actix_web::test]
async fn with_the_database_down_requests_get_503_quickly_and_the_service_recovers_by_itself() {
    let OwnCluster {
        app,
        cluster,
        root,
        options,
    } = OwnCluster::start("outage");
    let id = app
        .create(json!({"title": "Kept", "author": "Durable"}))
        .await["id"]
        .clone();

    // Kept alive to the end: dropping a cluster lets its watchdog stop and delete it.
    let stopped = actix_web::web::block(move || cluster.stop().map(|()| cluster))
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let reply = app.get("/api/v1/books").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    reply.problem(503);
    assert!(reply.header("retry-after").is_some());
    assert!(!String::from_utf8_lossy(&reply.body).contains(root.to_string_lossy().as_ref()));
    app.send_json(
        Method::POST,
        "/api/v1/books",
        &json!({"title": "T", "author": "A"}),
        &[],
    )
    .await
    .problem(503);
    assert_eq!(app.get("/readyz").await.status, 503);
    assert_eq!(app.get("/healthz").await.status, 200);

    let restarted = actix_web::web::block(move || LocalCluster::start(&root, &options))
        .await
        .unwrap()
        .unwrap();
    assert!(
        wait_for(&app, "/readyz", 200, Duration::from_secs(15))
            .await
            .is_some(),
        "no recovery"
    );
    assert_eq!(
        app.get(&format!("/api/v1/books/{id}")).await.json()["title"],
        "Kept"
    );
    assert_eq!(
        app.send_json(
            Method::POST,
            "/api/v1/books",
            &json!({"title": "T", "author": "A"}),
            &[]
        )
        .await
        .status,
        201
    );
    drop(app);
    actix_web::web::block(move || restarted.stop().and(stopped.stop()))
        .await
        .unwrap()
        .unwrap();
}

#[actix_web::test]
async fn authenticated_answers_are_never_stored_by_shared_caches() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/api/v1/books").await.header("cache-control"),
        Some("no-store")
    );
    let anonymous = app
        .request(Method::GET, "/api/v1/books", &[("authorization", "")], None)
        .await;
    assert_ne!(anonymous.header("cache-control"), Some("no-store"));
}

#[actix_web::test]
async fn cors_answers_preflights_for_configured_origins_only() {
    let app = TestApp::spawn().await;
    let headers = |origin| {
        [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("authorization", ""),
        ]
    };
    let allowed = app
        .request(
            Method::OPTIONS,
            "/api/v1/books",
            &headers("https://books.example"),
            None,
        )
        .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://books.example")
    );
    let refused = app
        .request(
            Method::OPTIONS,
            "/api/v1/books",
            &headers("https://evil.example"),
            None,
        )
        .await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
}

#[actix_web::test]
async fn a_graceful_stop_finishes_requests_in_flight_and_then_refuses_new_ones() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"]
        .as_i64()
        .unwrap();
    // Hold the book's row lock for a while, so that a PATCH is in flight when the stop begins.
    let locker = lock_row(
        app.database_url().to_owned(),
        id,
        Duration::from_millis(700),
    )
    .await;
    let path = format!("/api/v1/books/{id}");
    let body = json!({"genre": "SF"});
    let patch = app.send_json(Method::PATCH, &path, &body, &[]);
    let stop = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        app.stop_gracefully().await;
    };
    let (reply, ()) = futures_util::join!(patch, stop);
    assert_eq!(reply.status, 200, "the request in flight was cut off");
    assert_eq!(reply.json()["genre"], "SF");
    assert_eq!(
        app.try_get("/healthz").await,
        None,
        "a stopped server still answers"
    );
    locker.join().unwrap();
}

/// Holds the row lock of book `id` for `hold`, from a connection of its own; returns once taken.
pub(crate) async fn lock_row(url: String, id: i64, hold: Duration) -> std::thread::JoinHandle<()> {
    use diesel::prelude::*;
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let locker = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            diesel::sql_query("SELECT id FROM book WHERE id = $1 FOR UPDATE")
                .bind::<diesel::sql_types::BigInt, _>(id)
                .execute(conn)?;
            locked_tx.send(()).unwrap();
            std::thread::sleep(hold);
            Ok(())
        })
        .unwrap();
    });
    actix_web::web::block(move || locked_rx.recv())
        .await
        .unwrap()
        .unwrap();
    locker
}

/// A server whose pool has a single connection, its database's URL, and the id of a book in it.
pub(crate) async fn one_connection_and_one_book() -> (TestApp, String, i64) {
    let database = TestDatabase::new();
    let url = database.url().to_owned();
    let pool = connect(
        &url,
        &PoolOptions {
            max_size: 1,
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let app = TestApp::spawn_on(pool, Some(database), None);
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"]
        .as_i64()
        .unwrap();
    (app, url, id)
}

#[actix_web::test]
async fn an_exhausted_pool_answers_503_with_retry_after_instead_of_hanging() {
    let (app, url, id) = one_connection_and_one_book().await;
    let locker = lock_row(url, id, Duration::from_millis(3500)).await;
    let path = format!("/api/v1/books/{id}");
    let body = json!({"genre": "SF"});
    // The patch takes the pool's only connection and waits for the row lock.
    let blocked = app.send_json(Method::PATCH, &path, &body, &[]);
    let starved = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let reply = app.get(&path).await;
        (reply, started.elapsed())
    };
    let (patched, (starved, waited)) = futures_util::join!(blocked, starved);
    starved.problem(503);
    assert!(starved.header("retry-after").is_some());
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(patched.status, 200);
    assert_eq!(app.get(&path).await.status, 200);
    locker.join().unwrap();
}

#[actix_web::test]
async fn db_pool_waiting_counts_book_requests_that_wait_for_a_connection() {
    let (app, url, id) = one_connection_and_one_book().await;
    let locker = lock_row(url, id, Duration::from_millis(1500)).await;
    let path = format!("/api/v1/books/{id}");
    let body = json!({"genre": "SF"});
    // The patch takes the pool's only connection and waits for the row lock; a listing, a read
    // by id and a create then wait for the connection. (The key cache's reload may wait too: one
    // at most. Requests of one kind would share one batch, so one waiter.)
    let blocked = app.send_json(Method::PATCH, &path, &body, &[]);
    let waiting = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        let new_book = json!({"title": "Waiting", "author": "A"});
        let reads = futures_util::future::join3(
            app.get("/api/v1/books"),
            app.get(&path),
            app.send_json(Method::POST, "/api/v1/books", &new_book, &[]),
        );
        let probe = async {
            actix_web::rt::time::sleep(Duration::from_millis(400)).await;
            let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
            metrics
                .lines()
                .find_map(|line| line.strip_prefix("db_pool_waiting "))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        futures_util::join!(reads, probe).1
    };
    let (patched, waiting) = futures_util::join!(blocked, waiting);
    assert_eq!(patched.status, 200);
    assert!(
        waiting.is_some_and(|n| n >= 3),
        "db_pool_waiting was {waiting:?}"
    );
    locker.join().unwrap();
}

#[actix_web::test]
async fn after_a_quick_database_restart_each_stale_connection_fails_at_most_one_request() {
    let OwnCluster {
        app,
        cluster,
        root,
        options,
    } = OwnCluster::start("restart");
    // Four requests at once leave four open connections in the pool.
    let warm = futures_util::future::join_all((0..4).map(|_| app.get("/api/v1/books"))).await;
    assert!(warm.iter().all(|reply| reply.status == 200));

    // Restart with no request in between: every pooled connection is now dead.
    let (stopped, restarted) = actix_web::web::block(move || {
        cluster.stop()?;
        let restarted = LocalCluster::start(&root, &options)?;
        Ok::<_, anyhow::Error>((cluster, restarted))
    })
    .await
    .unwrap()
    .unwrap();

    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(app.get("/api/v1/books").await.status);
    }
    let failed = statuses.iter().filter(|status| **status == 503).count();
    assert!(failed <= 4, "{statuses:?}");
    assert!(
        statuses[4..].iter().all(|status| *status == 200),
        "{statuses:?}"
    );
    drop(app);
    actix_web::web::block(move || restarted.stop().and(stopped.stop()))
        .await
        .unwrap()
        .unwrap();
}

#[actix_web::test]
async fn unknown_paths_and_methods_never_make_new_series() {
    let app = TestApp::spawn().await;
    for path in ["/nope-1", "/nope-2/deeper", "/api/v1/bookz"] {
        assert_eq!(app.get(path).await.status, 404);
    }
    for made_up in ["BREW", "PROPFIND", "FOO"] {
        let method = Method::from_bytes(made_up.as_bytes()).unwrap();
        app.request(method, "/healthz", &[], None).await;
    }
    app.request(Method::TRACE, "/healthz", &[], None).await;
    let text = String::from_utf8(app.get("/metrics").await.body).unwrap();
    for never in ["nope", "bookz", "BREW", "PROPFIND", "FOO", "TRACE"] {
        assert!(!text.contains(never), "{never} made a series");
    }
    assert!(
        text.contains(r#"route="unmatched",status="404"} 3"#),
        "{text}"
    );
    // Every method without a series of its own is one `other`, never passed off as another.
    assert!(
        text.contains(r#"http_requests_total{method="other",route="/healthz",status="405"} 4"#),
        "{text}"
    );
}

#[test]
fn every_log_line_of_a_request_carries_its_request_id() {
    let database = TestDatabase::new();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("books-api-log-{}-{port}", std::process::id()));
    let log_path = log.to_str().unwrap().to_owned();
    let mut service = serve(&[
        ("DATABASE_URL", database.url()),
        ("BIND", &bind),
        ("LOG_FORMAT", "json"),
        ("STDERR", &log_path),
    ]);
    assert!(wait_ready(port, &mut service, Duration::from_secs(60)));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /api/v1/books/424242 HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-me-42\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("x-request-id: trace-me-42"), "{answer}");
    // Lines are written by the service's log thread, a moment after the answer may have left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let lines = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = lines
            .lines()
            .find(|line| line.contains("/api/v1/books/424242"))
        {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no log line for the request: {lines}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(service);
    let _ = std::fs::remove_file(&log);
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["span"]["request_id"], "trace-me-42", "{line}");
    assert_eq!(event["span"]["route"], "/api/v1/books/{id}", "{line}");
}
