//! Past one machine (issue 11): the service behind the engines operators already run.

use actix_web::http::Method;
use books_adapters::testing::TestDatabase;
use books_adapters::{PoolOptions, connect};
use serde_json::json;

use crate::cli::books_api;
use crate::helpers::TestApp;
use crate::topology::PgBouncer;

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
