//! Coalesced database work (issue 12): concurrent reads by id, creates and listings share
//! batches, and each request still gets its own answer, never a stale one.

use std::time::Duration;

use actix_web::http::Method;
use serde_json::json;

use crate::helpers::TestApp;
use crate::operations::{lock_row, one_connection_and_one_book};

async fn metric(app: &TestApp, name: &str) -> u64 {
    let text = String::from_utf8(app.get("/metrics").await.body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}")) as u64
}

/// Runs `requests` while the pool's only connection is taken by a patch that waits for a row
/// lock: every lane waits for it, so the requests queue up and share batches.
async fn while_the_connection_is_held<T>(
    app: &TestApp,
    url: String,
    held: i64,
    requests: impl std::future::Future<Output = T>,
) -> T {
    let locker = lock_row(url, held, Duration::from_millis(1200)).await;
    let path = format!("/api/v1/books/{held}");
    let held_genre = json!({"genre": "Held"});
    let blocked = app.send_json(Method::PATCH, &path, &held_genre, &[]);
    let later = async {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        requests.await
    };
    let (patched, output) = futures_util::join!(blocked, later);
    locker.join().unwrap();
    assert_eq!(patched.status, 200);
    output
}

#[actix_web::test]
async fn concurrent_reads_of_the_same_and_other_ids_share_queries_and_each_gets_its_own_book() {
    // One connection, held by a patch waiting for a row lock: every lane waits for it, and
    // the reads arriving meanwhile share batches.
    let (app, url, held) = one_connection_and_one_book().await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            app.create(json!({"title": format!("Batched {i}"), "author": "A"}))
                .await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let missing = ids.iter().max().unwrap() + 1000;
    let (reads_before, queries_before) = (
        metric(&app, "book_reads_coalesced").await,
        metric(&app, "book_read_queries").await,
    );
    let reads = async {
        let wanted: Vec<i64> = (0..66)
            .map(|i| {
                if i % 11 == 10 {
                    missing
                } else {
                    ids[i % 11 % 10]
                }
            })
            .collect();
        let replies = {
            let paths: Vec<String> = wanted
                .iter()
                .map(|id| format!("/api/v1/books/{id}"))
                .collect();
            futures_util::future::join_all(paths.iter().map(|path| app.get(path))).await
        };
        (wanted, replies)
    };
    let (wanted, replies) = while_the_connection_is_held(&app, url, held, reads).await;
    for (id, reply) in wanted.iter().zip(&replies) {
        if *id == missing {
            reply.problem(404);
        } else {
            assert_eq!(reply.status, 200);
            assert_eq!(reply.json()["id"], *id, "a read got another request's book");
        }
    }
    let reads = metric(&app, "book_reads_coalesced").await - reads_before;
    let queries = metric(&app, "book_read_queries").await - queries_before;
    assert_eq!(reads, 66);
    assert!(queries < 20, "66 reads took {queries} queries");
}

#[actix_web::test]
async fn a_read_that_starts_after_a_write_commits_sees_it_even_among_concurrent_reads() {
    let app = TestApp::spawn().await;
    let book = app.create(json!({"title": "Fresh", "author": "A"})).await;
    let path = format!("/api/v1/books/{}", book["id"]);
    for round in 1..=15 {
        // Background readers keep batches forming all the time.
        let noise = futures_util::future::join_all((0..12).map(|_| app.get(&path)));
        let write_then_read = async {
            let written = app
                .send_json(
                    Method::PATCH,
                    &path,
                    &json!({"genre": format!("Round {round}")}),
                    &[],
                )
                .await;
            assert_eq!(written.status, 200);
            let version = written.json()["version"].as_i64().unwrap();
            let read = app.get(&path).await.json();
            assert!(
                read["version"].as_i64().unwrap() >= version,
                "a read after version {version} saw {}",
                read["version"]
            );
        };
        futures_util::join!(noise, write_then_read);
    }
}

#[actix_web::test]
async fn when_the_database_fails_each_read_of_a_batch_gets_its_own_503() {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;
    let database = books_local_postgres::testing::TestDatabase::new();
    let pool = database.pool();
    let name = database.name().to_owned();
    let url = database.url().to_owned();
    let app = TestApp::spawn_on(pool, None, None);
    let book = app
        .create(json!({"title": "Unreachable", "author": "A"}))
        .await;
    let path = format!("/api/v1/books/{}", book["id"]);
    // No new connection accepted, the open ones ended: the pool cannot read at all.
    let admin = url.replace(&format!("dbname={name}"), "dbname=postgres");
    let mut conn = PgConnection::establish(&admin).unwrap();
    cut_off(&mut conn, &name);
    let replies = futures_util::future::join_all((0..12).map(|_| app.get(&path))).await;
    for reply in &replies {
        reply.problem(503);
        assert!(reply.header("retry-after").is_some());
    }
    conn.batch_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .unwrap();
    let mut recovered = false;
    for _ in 0..20 {
        if app.get(&path).await.status == 200 {
            recovered = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "reads did not recover");
    drop(app);
    drop(database);
}

#[actix_web::test]
async fn concurrent_creates_share_transactions_and_each_gets_its_own_book() {
    // The pool's only connection is held by a patch waiting for a row lock, so the creates
    // arriving meanwhile queue up and share batches.
    let (app, url, held) = one_connection_and_one_book().await;
    let (creates_before, batches_before) = (
        metric(&app, "book_creates_coalesced").await,
        metric(&app, "book_create_batches").await,
    );
    let creates = async {
        let bodies: Vec<serde_json::Value> = (0..40)
            .map(|i| json!({"title": format!("Created {i}"), "author": "Batch"}))
            .collect();
        futures_util::future::join_all(
            bodies
                .iter()
                .map(|body| app.send_json(Method::POST, "/api/v1/books", body, &[])),
        )
        .await
    };
    let replies = while_the_connection_is_held(&app, url, held, creates).await;
    let mut ids = std::collections::HashSet::new();
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 201);
        let book = reply.json();
        assert_eq!(
            book["title"],
            format!("Created {i}"),
            "a create got another's book"
        );
        assert_eq!(
            reply.header("location"),
            Some(format!("/api/v1/books/{}", book["id"]).as_str())
        );
        let stored = app
            .get(&format!("/api/v1/books/{}", book["id"]))
            .await
            .json();
        assert_eq!(stored, book);
        assert!(ids.insert(book["id"].as_i64().unwrap()));
    }
    let creates = metric(&app, "book_creates_coalesced").await - creates_before;
    let batches = metric(&app, "book_create_batches").await - batches_before;
    assert_eq!(creates, 40);
    assert!(batches < 10, "40 creates took {batches} transactions");
}

#[actix_web::test]
async fn listings_waiting_together_share_a_batch_and_each_gets_its_own_page() {
    let (app, url, held) = one_connection_and_one_book().await;
    for i in 0..5 {
        app.create(json!({"title": format!("Listed {i}"), "author": "L"}))
            .await;
    }
    let (pages_before, batches_before) = (
        metric(&app, "book_listings_coalesced").await,
        metric(&app, "book_listing_batches").await,
    );
    let listings = async {
        let paths: Vec<String> = (0..30)
            .map(|i| {
                if i % 3 == 0 {
                    "/api/v1/books?limit=2&author=L".to_owned()
                } else {
                    "/api/v1/books?limit=3".to_owned()
                }
            })
            .collect();
        futures_util::future::join_all(paths.iter().map(|path| app.get(path))).await
    };
    let pages = while_the_connection_is_held(&app, url, held, listings).await;
    for (i, page) in pages.iter().enumerate() {
        let items = page.json()["items"].as_array().unwrap().clone();
        if i % 3 == 0 {
            let titles: Vec<&str> = items.iter().map(|b| b["title"].as_str().unwrap()).collect();
            assert_eq!(titles, ["Listed 0", "Listed 1"]);
        } else {
            assert_eq!(items.len(), 3);
            assert_eq!(items[0]["title"], "Dune");
        }
    }
    let pages = metric(&app, "book_listings_coalesced").await - pages_before;
    let batches = metric(&app, "book_listing_batches").await - batches_before;
    assert_eq!(pages, 30);
    assert!(batches < 8, "30 listings took {batches} batches");
}

#[actix_web::test]
async fn when_the_database_fails_each_create_of_a_batch_gets_its_own_503_and_none_is_made() {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;
    let database = books_local_postgres::testing::TestDatabase::new();
    let (name, url) = (database.name().to_owned(), database.url().to_owned());
    let app = TestApp::spawn_on(database.pool(), None, None);
    let admin = url.replace(&format!("dbname={name}"), "dbname=postgres");
    let mut conn = PgConnection::establish(&admin).unwrap();
    cut_off(&mut conn, &name);
    let body = json!({"title": "Never", "author": "A"});
    let replies = futures_util::future::join_all(
        (0..12).map(|_| app.send_json(Method::POST, "/api/v1/books", &body, &[])),
    )
    .await;
    for reply in &replies {
        reply.problem(503);
    }
    conn.batch_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .unwrap();
    let mut recovered = false;
    for _ in 0..20 {
        if app.get("/api/v1/books").await.status == 200 {
            recovered = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "the service did not recover");
    assert_eq!(app.count().await, 0, "no create of a failed batch was made");
    drop(app);
    drop(database);
}

#[actix_web::test]
async fn concurrent_writes_share_statements_and_each_keeps_its_own_outcome() {
    let (app, url, held) = one_connection_and_one_book().await;
    let mut books = Vec::new();
    for i in 0..8 {
        books.push(
            app.create(json!({"title": format!("W{i}"), "author": "A"}))
                .await,
        );
    }
    let id = |i: usize| books[i]["id"].as_i64().unwrap();
    let missing = id(7) + 1000;
    let (writes_before, batches_before) = (
        metric(&app, "book_writes_coalesced").await,
        metric(&app, "book_write_batches").await,
    );
    let app_ref = &app;
    let writes = async {
        let stale = "\"0-1\"".to_owned();
        let current = |i: usize| format!("\"{}-1\"", id(i));
        let requests: Vec<(Method, String, serde_json::Value, Option<String>)> = vec![
            // Plain patches of distinct books.
            (
                Method::PATCH,
                format!("/api/v1/books/{}", id(0)),
                json!({"genre": "G0"}),
                None,
            ),
            (
                Method::PATCH,
                format!("/api/v1/books/{}", id(1)),
                json!({"title": "T1"}),
                None,
            ),
            // Two writes to one book: both apply.
            (
                Method::PATCH,
                format!("/api/v1/books/{}", id(2)),
                json!({"genre": "first"}),
                None,
            ),
            (
                Method::PATCH,
                format!("/api/v1/books/{}", id(2)),
                json!({"genre": "second"}),
                None,
            ),
            // The right ETag, and a stale one.
            (
                Method::PATCH,
                format!("/api/v1/books/{}", id(3)),
                json!({"genre": "G3"}),
                Some(current(3)),
            ),
            (
                Method::PATCH,
                format!("/api/v1/books/{}", id(4)),
                json!({"genre": "G4"}),
                Some(stale.replace('0', &id(4).to_string()).replace("-1", "-9")),
            ),
            // A patch that changes nothing, a replacement, a missing book.
            (
                Method::PATCH,
                format!("/api/v1/books/{}", id(5)),
                json!({"title": "W5"}),
                None,
            ),
            (
                Method::PUT,
                format!("/api/v1/books/{}", id(6)),
                json!({"title": "New", "author": "B"}),
                None,
            ),
            (
                Method::PATCH,
                format!("/api/v1/books/{missing}"),
                json!({"genre": "G"}),
                None,
            ),
        ];
        futures_util::future::join_all(requests.iter().map(|(method, path, body, etag)| {
            let headers: Vec<(&str, &str)> =
                etag.iter().map(|e| ("if-match", e.as_str())).collect();
            let (method, path, body) = (method.clone(), path.clone(), body.clone());
            async move { app_ref.send_json(method, &path, &body, &headers).await }
        }))
        .await
    };
    let replies = while_the_connection_is_held(&app, url, held, writes).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 412, 200, 200, 404]);
    assert_eq!(replies[0].json()["genre"], "G0");
    assert_eq!(replies[1].json()["title"], "T1");
    // Two concurrent writes to one book: both apply, one after the other (either may go first).
    let (a, b) = (replies[2].json(), replies[3].json());
    let mut versions = [
        a["version"].as_i64().unwrap(),
        b["version"].as_i64().unwrap(),
    ];
    versions.sort_unstable();
    assert_eq!(versions, [2, 3]);
    let last = if a["version"] == 3 { &a } else { &b };
    let stored = app.get(&format!("/api/v1/books/{}", id(2))).await.json();
    assert_eq!(stored["genre"], last["genre"]);
    assert_eq!(replies[4].json()["version"], 2);
    assert_eq!(
        replies[6].json()["version"],
        1,
        "a patch that changes nothing keeps the version"
    );
    assert_eq!(
        (
            replies[7].json()["title"].clone(),
            replies[7].json()["genre"].clone()
        ),
        (json!("New"), json!(null))
    );
    let stored = app.get(&format!("/api/v1/books/{}", id(4))).await.json();
    assert_eq!(
        (stored["version"].clone(), stored["genre"].clone()),
        (json!(1), json!(null)),
        "the stale write changed nothing"
    );
    let writes = metric(&app, "book_writes_coalesced").await - writes_before;
    let batches = metric(&app, "book_write_batches").await - batches_before;
    assert_eq!(writes, 9 + 1, "nine writes and the held patch");
    assert!(batches <= 4, "ten writes took {batches} batches");
}

#[actix_web::test]
async fn writes_on_connections_to_a_demoted_primary_are_503_and_those_connections_leave_the_pool() {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;
    let database = books_local_postgres::testing::TestDatabase::new();
    let name = database.name().to_owned();
    let url = database.url().to_owned();
    let app = TestApp::spawn_on(database.pool(), None, None);
    app.create(json!({"title": "Before", "author": "A"})).await;
    // The server stops taking writes, as a primary does when a switchover demotes it: every
    // connection opened from now on is read-only, and the open ones are ended, so that the pool
    // holds only connections of the demoted server.
    let admin = url.replace(&format!("dbname={name}"), "dbname=postgres");
    let mut conn = PgConnection::establish(&admin).unwrap();
    conn.batch_execute(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .unwrap();
    let body = json!({"title": "During", "author": "A"});
    let mut unavailable = 0;
    for _ in 0..10 {
        let reply = app
            .send_json(Method::POST, "/api/v1/books", &body, &[])
            .await;
        assert_ne!(
            reply.status,
            500,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        if reply.status == 503 {
            assert!(reply.header("retry-after").is_some());
            reply.problem(503);
            unavailable += 1;
        }
    }
    assert_eq!(unavailable, 10, "a read-only server takes no write");
    assert_eq!(
        app.get("/api/v1/books?limit=5").await.status,
        200,
        "reads go on"
    );
    // The new primary takes writes; connections still open to the old one are read-only for
    // their whole life, so each must leave the pool at its first refused write.
    conn.batch_execute(&format!(
        "ALTER DATABASE \"{name}\" RESET default_transaction_read_only"
    ))
    .unwrap();
    let mut refused_after = 0;
    let mut written = false;
    for _ in 0..40 {
        let reply = app
            .send_json(Method::POST, "/api/v1/books", &body, &[])
            .await;
        assert_ne!(
            reply.status,
            500,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        if reply.status == 201 {
            written = true;
            break;
        }
        refused_after += 1;
    }
    assert!(
        written,
        "writes resume once the read-only connections are gone ({refused_after} refused)"
    );
    drop(database);
}

/// Lets no new connection into database `name` and ends every open one, again until none is
/// left: a connection the pool was opening at that moment may appear after the first round.
fn cut_off(conn: &mut diesel::PgConnection, name: &str) {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;
    conn.batch_execute(&format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
    ))
    .unwrap();
    for _ in 0..50 {
        let ended: Vec<Ended> = diesel::sql_query(format!(
            "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .load(conn)
        .unwrap();
        if ended.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("connections to {name} kept coming");
}

#[derive(diesel::QueryableByName)]
struct Ended {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    #[expect(dead_code, reason = "read to count the rows")]
    ended: bool,
}
