//! Time-compressed soaks: what hours of writes with nobody reading leave behind, on a real
//! PostgreSQL whose statement timeout is a fifth of the service's default, so that any statement
//! that grows with the backlog fails here first.

use std::time::{Duration, Instant};

use books_adapters::{PoolOptions, connect};
use books_local_postgres::testing::TestDatabase;
use diesel::prelude::*;
use serde_json::json;

use crate::helpers::TestApp;
use crate::topology::query_text;

const CHANGES: &str = "/api/v1/books/changes";

/// A pool whose statements are cancelled after one second.
fn impatient_pool(database: &TestDatabase) -> books_adapters::PgPool {
    connect(
        database.url(),
        &PoolOptions {
            max_size: 8,
            statement_timeout: Duration::from_secs(1),
            ..PoolOptions::default()
        },
    )
    .unwrap()
}

fn execute(url: &str, sql: &str) {
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(sql)
        .execute(&mut conn)
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

fn number(url: &str, sql: &str) -> i64 {
    query_text(url, &format!("SELECT ({sql})::text AS value"))
        .parse()
        .unwrap()
}

/// `count` changes recorded and committed, none numbered: what a bulk load or hours of writes
/// leave when nobody reads the feed (written straight into the table: the trigger would record
/// the same rows, only slower).
fn unread_changes(url: &str, count: i64, age: &str) {
    execute(
        url,
        &format!(
            "INSERT INTO book_change (kind, book_id, version, at, title, author, created_at, updated_at) \
             SELECT 'created', n, 1, now() - interval '{age}', 'Title ' || n, 'Author', now(), now() \
             FROM generate_series(1, {count}) AS n"
        ),
    );
}

async fn wait_until(patience: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < patience {
        if done() {
            return Some(started.elapsed());
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

#[actix_web::test]
async fn a_million_unread_changes_are_numbered_in_the_background_and_the_feed_and_export_keep_answering()
 {
    let database = TestDatabase::new();
    let url = database.url().to_owned();
    execute(
        &url,
        "INSERT INTO book (title, author) SELECT 'Book ' || n, 'Author' FROM generate_series(1, 1000) n",
    );
    unread_changes(&url, 999_000, "1 minute");
    let total = 1_000_000;
    assert_eq!(
        number(&url, "SELECT count(*) FROM book_change WHERE seq IS NULL"),
        total
    );

    let app = TestApp::spawn_on(impatient_pool(&database), Some(database), None);
    // While the backlog is numbered, the feed and the export answer at once.
    let asked = Instant::now();
    let first = app.get(&format!("{CHANGES}?after=0&limit=5")).await;
    eprintln!(
        "the first page of the feed answered in {:.1?}",
        asked.elapsed()
    );
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["items"].as_array().unwrap().len(), 5);
    let export = app.get("/api/v1/books/export").await;
    assert_eq!(export.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&export.body).lines().count(),
        1000,
        "the whole export"
    );

    // Nobody reads from now on: the service numbers the rest by itself, in short steps.
    let numbered = wait_until(Duration::from_secs(240), || {
        number(&url, "SELECT last_seq FROM book_change_counter") == total
    })
    .await;
    let took = numbered.expect("the backlog was not numbered within 240 s");
    eprintln!("a backlog of {total} changes numbered in {took:.1?}");
    assert_eq!(
        number(&url, "SELECT count(*) FROM book_change WHERE seq IS NULL"),
        0
    );
    assert_eq!(
        number(&url, "SELECT count(DISTINCT seq) FROM book_change"),
        total
    );
    let end = app
        .get(&format!("{CHANGES}?after={}", total - 3))
        .await
        .json();
    let seqs: Vec<i64> = end["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [total - 2, total - 1, total]);
    // The next write is numbered after all of them.
    app.create(json!({"title": "After", "author": "The backlog"}))
        .await;
    let next = app.get(&format!("{CHANGES}?after={total}")).await.json();
    assert_eq!(next["items"][0]["seq"], total + 1, "{next}");
}

#[actix_web::test]
async fn retention_purges_a_large_backlog_in_bounded_steps_while_writes_go_on() {
    let database = TestDatabase::new();
    let url = database.url().to_owned();
    let old = 300_000;
    unread_changes(&url, old, "2 hours");
    let app = TestApp::spawn_tuned(impatient_pool(&database), Some(database), None, |s| {
        s.changes_retention = chrono::TimeDelta::hours(1);
    });
    // Writes go on meanwhile; they are younger than the retention and must all stay.
    let mut written = 0;
    let purged = {
        let started = Instant::now();
        loop {
            app.create(json!({"title": format!("New {written}"), "author": "Writer"}))
                .await;
            written += 1;
            let purged_through = number(&url, "SELECT purged_through FROM book_change_counter");
            if purged_through == old {
                break Some(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(240) {
                break None;
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let took = purged.expect("the old changes were not purged within 240 s");
    eprintln!("{old} changes past the retention purged in {took:.1?}, {written} written meanwhile");
    assert_eq!(
        number(
            &url,
            "SELECT count(*) FROM book_change WHERE at < now() - interval '1 hour'"
        ),
        0
    );
    // Every new change is kept, and the feed reads on from the purge point.
    let page = app
        .get(&format!("{CHANGES}?after={old}&limit=1000"))
        .await
        .json();
    let kept = page["items"].as_array().unwrap();
    let _ = wait_until(Duration::from_secs(5), || {
        number(&url, "SELECT count(*) FROM book_change WHERE seq IS NULL") == 0
    })
    .await;
    assert_eq!(
        number(&url, "SELECT count(*) FROM book_change"),
        i64::try_from(written).unwrap()
    );
    assert_eq!(kept.len(), written.min(1000));
    assert_eq!(kept[0]["book"]["title"], "New 0");
    app.get(&format!("{CHANGES}?after={}", old - 1))
        .await
        .problem(410);
}
