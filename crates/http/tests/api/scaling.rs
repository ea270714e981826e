//! Past one machine (issue 11): the service behind the engines operators already run.

use actix_web::http::Method;
use books_adapters::testing::TestDatabase;
use books_adapters::{PoolOptions, connect};
use serde_json::json;

use crate::cli::books_api;
use crate::helpers::TestApp;
use books_http::RateLimit;

use crate::topology::{PgBouncer, Redis};

#[actix_web::test]
async fn behind_pgbouncer_in_transaction_mode_migrations_keys_and_every_endpoint_work() {
    let database = TestDatabase::unmigrated();
    let bouncer = PgBouncer::start(database.url());
    let url = bouncer.url(database.name());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("DB_PREPARED_STATEMENTS", "false"),
    ];
    let migrated = books_api(&["migrate"], &env);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let created = books_api(&["keys", "create", "--name", "through-pgbouncer"], &env);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let listed = books_api(&["keys", "list"], &env);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("through-pgbouncer"));

    let pool = connect(
        &url,
        &PoolOptions {
            max_size: 8,
            prepared_statements: false,
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let app = TestApp::spawn_on(pool, None, None);
    // Many requests at once, so that PgBouncer hands each transaction to whichever of its four
    // server connections is free: nothing may depend on a session.
    let creates = (0..24).map(|i| {
        let key = format!("pgbouncer-{}", i % 12);
        let app = &app;
        async move {
            app.send_json(
                Method::POST,
                "/api/v1/books",
                &json!({"title": format!("Book {}", i % 12), "author": "Pooled"}),
                &[("idempotency-key", &key)],
            )
            .await
        }
    });
    let created = futures_util::future::join_all(creates).await;
    assert!(
        created.iter().all(|reply| reply.status == 201),
        "{:?}",
        created.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(app.count().await, 12, "one book per idempotency key");
    let first = created[0].json();
    let path = format!("/api/v1/books/{}", first["id"]);
    let etag = format!("\"{}-1\"", first["id"]);
    let reads = (0..24).map(|_| app.get(&path));
    assert!(
        futures_util::future::join_all(reads)
            .await
            .iter()
            .all(|r| r.status == 200)
    );
    let patched = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"genre": "Pooled"}),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(patched.status, 200);
    let stale = app
        .send_json(
            Method::PUT,
            &path,
            &json!({"title": "T", "author": "A"}),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(stale.status, 412);
    assert_eq!(
        app.get("/api/v1/books?sort=-title&limit=5").await.status,
        200
    );
    assert_eq!(app.get("/booksApi").await.status, 200);
    assert_eq!(app.get("/readyz").await.status, 200);
    let deleted = app.request(Method::DELETE, &path, &[], None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.get(&path).await.status, 404);
}

async fn rate_limit_shared(app: &TestApp) -> Option<String> {
    let text = String::from_utf8(app.get("/metrics").await.body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("rate_limit_shared "))
        .map(str::to_owned)
}

#[actix_web::test]
async fn two_instances_sharing_a_redis_spend_one_budget_and_fall_back_when_it_is_gone() {
    let database = TestDatabase::new();
    let mut redis = Redis::start();
    let limit = Some(RateLimit {
        per_second: 1,
        burst: 4,
    });
    let a = TestApp::spawn_sharing(database.pool(), None, limit, Some(redis.url()));
    let b = TestApp::spawn_sharing(database.pool(), None, limit, Some(redis.url()));
    let anonymous = [("authorization", "")];
    let mut allowed = 0;
    for i in 0..12 {
        let app = if i % 2 == 0 { &a } else { &b };
        let reply = app
            .request(Method::GET, "/api/v1/books", &anonymous, None)
            .await;
        allowed += usize::from(reply.status == 200);
    }
    // One budget of 4 (plus at most one refilled in the time the requests took), not 4 each.
    assert!((4..=5).contains(&allowed), "{allowed} allowed");
    assert_eq!(rate_limit_shared(&a).await.as_deref(), Some("1"));

    // Redis goes away: requests are limited by each instance on its own, never failed.
    let port = redis.port;
    redis.program.kill();
    let reply = a.request(Method::GET, "/api/v1/books", &[], None).await;
    assert_eq!(
        reply.status, 200,
        "a request never fails because Redis is down"
    );
    assert_eq!(rate_limit_shared(&a).await.as_deref(), Some("0"));

    // Back on the same port: shared again once the back-off has passed.
    let _redis = Redis::start_on(port);
    let mut shared = false;
    for _ in 0..30 {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
        a.request(Method::GET, "/api/v1/books", &[], None).await;
        if rate_limit_shared(&a).await.as_deref() == Some("1") {
            shared = true;
            break;
        }
    }
    assert!(
        shared,
        "the limits were not shared again after Redis came back"
    );
    drop(database);
}

#[test]
fn a_redis_url_that_is_not_one_stops_the_start_naming_the_setting() {
    let database = TestDatabase::new();
    let output = books_api(
        &[],
        &[
            ("DATABASE_URL", database.url()),
            ("BIND", "127.0.0.1:0"),
            ("RATE_LIMIT_REDIS_URL", "http://not-redis"),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RATE_LIMIT_REDIS_URL"), "{stderr}");
}
