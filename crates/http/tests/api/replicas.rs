//! Read replicas under partial faults: a standby whose link to the primary is cut, a standby that
//! stops replaying, reading one's own writes through an asynchronous standby under write load,
//! and the change feed across a promotion. Each test runs a real primary and a real streaming
//! standby (`pg_basebackup -R`) of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use books_adapters::{PoolOptions, Replicas, connect};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::scaling::{book_reads, replica_metric, replica_reads_since, wait_for_metric};
use crate::topology::{Streaming, query_text};

const TOKEN: &str = "consistency-token";

/// A service on the topology's primary whose reads go to its standby while that is at most
/// `max_lag` behind.
fn service_on(topology: &Streaming, max_lag: Duration) -> TestApp {
    let primary_url = topology.primary_url();
    books_adapters::run_migrations(&primary_url, true).unwrap();
    let options = PoolOptions {
        max_size: 8,
        ..PoolOptions::default()
    };
    let pool = connect(&primary_url, &options).unwrap();
    let replicas = Arc::new(
        Replicas::new(
            pool.clone(),
            std::slice::from_ref(&topology.replica_url()),
            &options,
            max_lag,
        )
        .unwrap(),
    );
    TestApp::spawn_configured(pool, None, None, None, Some(replicas))
}

async fn sql(url: &str, statement: &str) -> String {
    let (url, statement) = (url.to_owned(), statement.to_owned());
    actix_web::web::block(move || query_text(&url, &statement))
        .await
        .unwrap()
}

/// Waits until `done` answers true, asking every 50 ms; the test fails with `what` once `patience`
/// has passed.
async fn eventually(patience: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < patience, "{what}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a statement that returns no rows.
async fn execute(url: &str, statement: &str) {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;
    let (url, statement) = (url.to_owned(), statement.to_owned());
    actix_web::web::block(move || {
        PgConnection::establish(&url)
            .unwrap()
            .batch_execute(&statement)
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    })
    .await
    .unwrap();
}

/// Points the standby's WAL receiver at a port where nothing listens (and reloads): it keeps
/// serving what it has, and receives nothing more. Returns what to restore once the old receiver
/// has stopped: the reload is applied asynchronously, and a write made before that would still
/// reach the standby.
async fn cut_off(replica_url: &str) -> String {
    let original = sql(
        replica_url,
        "SELECT current_setting('primary_conninfo') AS value",
    )
    .await;
    execute(
        replica_url,
        "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1 connect_timeout=1'",
    )
    .await;
    sql(replica_url, "SELECT pg_reload_conf()::text AS value").await;
    eventually(
        Duration::from_secs(20),
        "the standby still streams",
        async || {
            sql(
            replica_url,
            "SELECT count(*)::text AS value FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        )
        .await
            == "0"
        },
    )
    .await;
    original
}

async fn reconnect(replica_url: &str, original: &str) {
    execute(
        replica_url,
        &format!(
            "ALTER SYSTEM SET primary_conninfo = '{}'",
            original.replace('\'', "''")
        ),
    )
    .await;
    sql(replica_url, "SELECT pg_reload_conf()::text AS value").await;
}

fn id_of(book: &Value) -> i64 {
    book["id"].as_i64().unwrap()
}

#[actix_web::test]
async fn a_replica_cut_off_from_its_primary_is_left_out_within_the_maximum_lag() {
    let topology = actix_web::web::block(Streaming::start).await.unwrap();
    let replica_url = topology.replica_url();
    let max_lag = Duration::from_secs(2);
    let app = service_on(&topology, max_lag);
    assert!(
        wait_for_metric(&app, "replica_in_use", "1").await,
        "the replica never came into use"
    );

    let original = cut_off(&replica_url).await;
    // An idle primary: the replica lacks nothing, and stays in use.
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        replica_metric(&app, "replica_in_use").await.as_deref(),
        Some("1")
    );

    // Writes it cannot receive: left out within the maximum lag of the first one.
    let first_write = Instant::now();
    let mut written = Vec::new();
    let left_out = loop {
        written.push(app.create(json!({"title": "Unseen", "author": "A"})).await);
        if replica_metric(&app, "replica_in_use").await.as_deref() == Some("0") {
            break Some(first_write.elapsed());
        }
        if first_write.elapsed() > Duration::from_secs(20) {
            break None;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    let left_out = left_out.expect("a replica cut off from its primary stayed in use for 20 s");
    eprintln!(
        "cut-off replica left out {left_out:.2?} after the first write it missed (maximum lag {max_lag:?})"
    );
    assert!(
        left_out <= max_lag + Duration::from_millis(500),
        "left out only after {left_out:?}"
    );
    let lag: f64 = replica_metric(&app, "replica_lag_seconds")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(lag > 0.0, "the lag shows {lag}");
    // Every book written since is found (the primary answers).
    for book in &written {
        let path = format!("/api/v1/books/{}", id_of(book));
        assert_eq!(app.get(&path).await.status, 200, "{path}");
    }
    // It still has not received them: it was truly cut off.
    let last = id_of(written.last().unwrap());
    assert_eq!(
        sql(
            &replica_url,
            &format!("SELECT count(*)::text AS value FROM book WHERE id = {last}")
        )
        .await,
        "0"
    );

    // Linked again, it catches up and is used again.
    reconnect(&replica_url, &original).await;
    assert!(
        wait_for_metric(&app, "replica_in_use", "1").await,
        "the replica was not used again once it caught up"
    );
}

#[actix_web::test]
async fn reads_that_send_back_a_writes_token_see_it_through_an_asynchronous_replica_under_load() {
    let topology = actix_web::web::block(Streaming::start).await.unwrap();
    let replica_url = topology.replica_url();
    let app = std::rc::Rc::new(service_on(&topology, Duration::from_secs(5)));
    assert!(
        wait_for_metric(&app, "replica_in_use", "1").await,
        "the replica never came into use"
    );

    // A standby a little behind, as one across a network under load is: it applies each
    // transaction 300 ms after its commit (well within the maximum lag, so it stays in use).
    execute(
        &replica_url,
        "ALTER SYSTEM SET recovery_min_apply_delay = '300ms'",
    )
    .await;
    sql(&replica_url, "SELECT pg_reload_conf()::text AS value").await;
    // Four writers keep the primary and the standby busy meanwhile.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|n| {
            let (app, stop) = (app.clone(), stop.clone());
            actix_web::rt::spawn(async move {
                let mut count = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    app.create(json!({"title": format!("Load {n}-{count}"), "author": "W"}))
                        .await;
                    count += 1;
                }
                count
            })
        })
        .collect();

    let reads_before = book_reads(&replica_url);
    let (mut with_token, mut without_token) = (0, 0);
    for n in 0..50 {
        let created = app
            .send_json(
                Method::POST,
                "/api/v1/books",
                &json!({"title": format!("Mine {n}"), "author": "Me"}),
                &[],
            )
            .await;
        assert_eq!(created.status, 201);
        let token = created
            .header(TOKEN)
            .expect("a write answers a Consistency-Token")
            .to_owned();
        let location = created.header("location").unwrap().to_owned();
        let read = app
            .request(Method::GET, &location, &[(TOKEN, token.as_str())], None)
            .await;
        assert_eq!(read.status, 200, "POST then GET {location} with its token");
        with_token += 1;
        if app.get(&location).await.status == 200 {
            without_token += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut load = 0;
    for writer in writers {
        load += writer.await.unwrap();
    }
    let served_by_replica = replica_reads_since(&app, &replica_url, reads_before, 1).await;
    eprintln!(
        "read-your-writes: {with_token} of 50 with the token, {without_token} of 50 without, \
         {load} other creates meanwhile, {served_by_replica} reads served by the replica"
    );
    assert!(
        without_token < 50 && served_by_replica > 0,
        "reads without the token did not go to the lagging replica"
    );
    assert_eq!(
        replica_metric(&app, "replica_in_use").await.as_deref(),
        Some("1"),
        "the replica was in use throughout"
    );

    // A listing with the token sees the write too.
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/books",
            &json!({"title": "Listed", "author": "Only once"}),
            &[],
        )
        .await;
    let token = created.header(TOKEN).unwrap().to_owned();
    let page = app
        .request(
            Method::GET,
            "/api/v1/books?author=Only%20once",
            &[(TOKEN, token.as_str())],
            None,
        )
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");

    // So does a search, typo and all: the new words are in the dictionary it reads.
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/books",
            &json!({"title": "Xylophonic Serenades", "author": "Quentin Zabriskie"}),
            &[],
        )
        .await;
    let token = created.header(TOKEN).unwrap().to_owned();
    let found = app
        .request(
            Method::GET,
            "/api/v1/books/search?q=xylophnoic%20serenades",
            &[(TOKEN, token.as_str())],
            None,
        )
        .await
        .json();
    assert_eq!(
        found["items"][0]["book"]["title"], "Xylophonic Serenades",
        "{found}"
    );

    // A token the service never answered is refused, not ignored.
    for bad in ["xyz", "0000000000000000000", "000000000000000G"] {
        app.request(Method::GET, &location_of(&created), &[(TOKEN, bad)], None)
            .await
            .problem(400);
    }
}

fn location_of(reply: &crate::helpers::Reply) -> String {
    reply.header("location").unwrap().to_owned()
}

#[actix_web::test]
async fn a_304_never_comes_from_data_older_than_the_token_and_every_write_answers_one() {
    let topology = actix_web::web::block(Streaming::start).await.unwrap();
    let replica_url = topology.replica_url();
    // Trusted however far behind, so that a paused standby stays in use.
    let app = service_on(&topology, Duration::from_secs(3600));
    assert!(wait_for_metric(&app, "replica_in_use", "1").await);
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/books",
            &json!({"title": "Dune", "author": "Frank Herbert"}),
            &[],
        )
        .await;
    let path = location_of(&created);
    let first_etag = created.header("etag").unwrap().to_owned();
    let id = id_of(&created.json());
    // Wait for the standby to hold it, then stop its replay.
    let started = Instant::now();
    while sql(
        &replica_url,
        &format!("SELECT count(*)::text AS value FROM book WHERE id = {id}"),
    )
    .await
        != "1"
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never replayed"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    sql(&replica_url, "SELECT pg_wal_replay_pause()::text AS value").await;

    let patched = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"genre": "Science fiction"}),
            &[],
        )
        .await;
    assert_eq!(patched.status, 200);
    let token = patched.header(TOKEN).unwrap().to_owned();
    let cached = [("if-none-match", first_etag.as_str())];
    // Without the token the stale standby answers: the client's copy looks current.
    assert_eq!(
        app.request(Method::GET, &path, &cached, None).await.status,
        304
    );
    // With it, the primary answers, and the copy is not current.
    let fresh = app
        .request(
            Method::GET,
            &path,
            &[cached[0], (TOKEN, token.as_str())],
            None,
        )
        .await;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.json()["genre"], "Science fiction");

    // Every kind of write answers a token, each at or past the one before.
    let mut tokens = vec![token];
    let writes = [
        (
            Method::PUT,
            path.clone(),
            Some(json!({"title": "Dune", "author": "Frank Herbert"})),
        ),
        (
            Method::POST,
            "/api/v1/books/batch".to_owned(),
            Some(json!({"books": [{"title": "A", "author": "B"}]})),
        ),
        (Method::DELETE, path.clone(), None),
    ];
    for (method, target, body) in writes {
        let reply = match body {
            Some(body) => app.send_json(method.clone(), &target, &body, &[]).await,
            None => app.request(method.clone(), &target, &[], None).await,
        };
        assert!(reply.status < 300, "{method} {target}: {}", reply.status);
        tokens.push(
            reply
                .header(TOKEN)
                .unwrap_or_else(|| panic!("{method} {target} answered no token"))
                .to_owned(),
        );
    }
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let legacy = app
        .request(
            Method::POST,
            "/booksApi",
            &form,
            Some(b"title=Emma&author=Austen"),
        )
        .await;
    tokens.push(legacy.header(TOKEN).unwrap().to_owned());
    let mut sorted = tokens.clone();
    sorted.sort();
    assert_eq!(sorted, tokens, "tokens never go back");
    sql(&replica_url, "SELECT pg_wal_replay_resume()::text AS value").await;
}

/// The newest change the feed shows after `after`, following it to its end.
async fn feed_end(app: &TestApp, mut after: i64) -> (i64, Vec<Value>) {
    let mut seen = Vec::new();
    loop {
        let reply = app
            .get(&format!("/api/v1/books/changes?after={after}&limit=1000"))
            .await;
        if reply.status != 200 {
            return (after, seen);
        }
        let page = reply.json();
        let items = page["items"].as_array().unwrap().clone();
        if items.is_empty() {
            return (after, seen);
        }
        after = page["next_after"].as_i64().unwrap();
        seen.extend(items);
    }
}

#[actix_web::test]
async fn after_a_failover_to_a_standby_that_missed_the_last_numbering_no_seq_is_given_twice() {
    let topology = actix_web::web::block(Streaming::start).await.unwrap();
    let (primary_url, replica_url) = (topology.primary_url(), topology.replica_url());
    books_adapters::run_migrations(&primary_url, true).unwrap();
    // The service follows whichever of the two accepts writes, as behind Patroni.
    let both = format!(
        "{primary_url} target_session_attrs=read-write host={},{} port=5432,5432",
        server_dir(&primary_url),
        server_dir(&replica_url),
    );
    let options = PoolOptions {
        max_size: 4,
        ..PoolOptions::default()
    };
    let app = TestApp::spawn_on(connect(&both, &options).unwrap(), None, None);
    for title in ["One", "Two", "Three"] {
        app.create(json!({"title": title, "author": "Before"}))
            .await;
    }
    let (three, _) = feed_end(&app, 0).await;
    assert_eq!(three, 3);
    // The standby holds those three numberings, then is cut off and misses the next two.
    eventually(Duration::from_secs(10), "never replayed", async || {
        sql(
            &replica_url,
            "SELECT count(seq)::text AS value FROM book_change",
        )
        .await
            == "3"
    })
    .await;
    cut_off(&replica_url).await;
    for title in ["Four", "Five"] {
        app.create(json!({"title": title, "author": "Lost with the primary"}))
            .await;
    }
    // A reader follows the feed to seq 5 on the primary.
    let (reader_at, _) = feed_end(&app, 3).await;
    assert_eq!(reader_at, 5);

    // The primary dies; the standby that lacks seqs 4 and 5 is promoted.
    topology.primary.stop().unwrap();
    sql(&replica_url, "SELECT pg_promote(true, 60)::text AS value").await;
    // The service follows by itself: the next write succeeds on the new primary.
    let started = Instant::now();
    let after_failover = loop {
        let reply = app
            .send_json(
                Method::POST,
                "/api/v1/books",
                &json!({"title": "Six", "author": "After the failover"}),
                &[],
            )
            .await;
        if reply.status == 201 {
            break reply.json();
        }
        assert!(
            reply.status == 503,
            "during the failover: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the service never wrote to the new primary"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };

    // The reader at 5 is not made to skip the new change: it comes after 5, with a seq the old
    // primary never gave.
    let started = Instant::now();
    let (_, news) = loop {
        let (end, news) = feed_end(&app, reader_at).await;
        if !news.is_empty() {
            break (end, news);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reader at {reader_at} never saw the write made after the failover"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    let new_seq = news[0]["seq"].as_i64().unwrap();
    eprintln!("after the promotion the feed went on at seq {new_seq}");
    assert!(new_seq > reader_at, "seq {new_seq} was given twice");
    assert_eq!(news[0]["book_id"], after_failover["id"]);
    assert_eq!(news.len(), 1, "{news:?}");
    // A reader from the start sees the three changes both servers had, then the new one.
    let (_, all) = feed_end(&app, 0).await;
    let seqs: Vec<i64> = all.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, new_seq]);
}

/// The socket folder of a cluster's connection string (`host=… port=… …`).
fn server_dir(url: &str) -> String {
    url.split_whitespace()
        .find_map(|pair| pair.strip_prefix("host="))
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn a_replica_promoted_by_a_failover_is_no_longer_read_from() {
    let topology = actix_web::web::block(Streaming::start).await.unwrap();
    let replica_url = topology.replica_url();
    let app = service_on(&topology, Duration::from_secs(2));
    assert!(
        wait_for_metric(&app, "replica_in_use", "1").await,
        "the replica never came into use"
    );
    // Promoted, it is a primary of its own: what it holds is no longer what the service's
    // primary holds, however current its position looks.
    execute(&replica_url, "SELECT pg_promote()").await;
    assert!(
        wait_for_metric(&app, "replica_in_use", "0").await,
        "a promoted replica stayed in use"
    );
    let book = app.create(json!({"title": "After", "author": "A"})).await;
    let path = format!("/api/v1/books/{}", id_of(&book));
    assert_eq!(app.get(&path).await.status, 200, "the primary answers");
}

/// The primary's standbys by name, with their synchronous state (`name:state,…`).
async fn standbys(primary_url: &str) -> String {
    sql(
        primary_url,
        "SELECT coalesce(string_agg(application_name || ':' || sync_state, ','), '') AS value \
         FROM pg_stat_replication",
    )
    .await
}

/// How many sessions on the primary wait for a synchronous standby to confirm their commit.
async fn commits_waiting(primary_url: &str) -> String {
    sql(
        primary_url,
        "SELECT count(*)::text AS value FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
    )
    .await
}

#[actix_web::test]
async fn a_create_held_by_a_missing_synchronous_standby_is_never_acknowledged_nor_seen_before_it_holds()
 {
    let topology = actix_web::web::block(Streaming::start).await.unwrap();
    let (primary_url, replica_url) = (topology.primary_url(), topology.replica_url());
    books_adapters::run_migrations(&primary_url, true).unwrap();
    let options = PoolOptions {
        max_size: 4,
        ..PoolOptions::default()
    };
    let app = TestApp::spawn_on(connect(&primary_url, &options).unwrap(), None, None);
    app.create(json!({"title": "Before", "author": "Replicated"}))
        .await;
    // Numbered now: numbering is a commit of its own, which would wait for the standby too.
    assert_eq!(feed_end(&app, 0).await.0, 1);

    // The standby becomes the synchronous one, as under Patroni's strict synchronous mode.
    let started = Instant::now();
    let name = loop {
        let listed = standbys(&primary_url).await;
        if let Some((name, _)) = listed.split_once(':') {
            break name.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no standby streams"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    execute(
        &primary_url,
        &format!(
            "ALTER SYSTEM SET synchronous_standby_names = '\"{}\"'",
            name.replace('\'', "''")
        ),
    )
    .await;
    sql(&primary_url, "SELECT pg_reload_conf()::text AS value").await;
    eventually(Duration::from_secs(20), "never synchronous", async || {
        standbys(&primary_url).await == format!("{name}:sync")
    })
    .await;
    let original = cut_off(&replica_url).await;
    eventually(Duration::from_secs(20), "still streaming", async || {
        standbys(&primary_url).await.is_empty()
    })
    .await;

    // A create whose commit waits for the standby that is gone. The statement timeout (5 s) does
    // not end that wait; the service's own deadline answers 503, which a client retries.
    let key = [("idempotency-key", "held-by-the-standby")];
    let body = json!({"title": "Held", "author": "Unreplicated"});
    let create = app.send_json(Method::POST, "/api/v1/books", &body, &key);
    let watch = async {
        eventually(Duration::from_secs(10), "no commit waits", async || {
            commits_waiting(&primary_url).await != "0"
        })
        .await;
        // While it waits, neither the feed nor the catalogue shows it.
        let (end, _) = feed_end(&app, 0).await;
        let listed = app.get("/api/v1/books?limit=100").await.json();
        (end, listed["items"].as_array().unwrap().len())
    };
    let (held, (feed_while_waiting, books_while_waiting)) =
        futures_util::future::join(create, watch).await;
    assert_eq!(
        held.status,
        503,
        "a commit no standby holds was answered: {}",
        String::from_utf8_lossy(&held.body)
    );
    assert!(held.header("retry-after").is_some());
    assert_eq!((feed_while_waiting, books_while_waiting), (1, 1));
    // Answered, it still waits in PostgreSQL, and is still unseen.
    assert_ne!(commits_waiting(&primary_url).await, "0");
    assert_eq!(feed_end(&app, 0).await.0, 1);

    // The standby comes back: the commit completes, and the client's retry gets the one book.
    reconnect(&replica_url, &original).await;
    eventually(
        Duration::from_secs(30),
        "the commit still waits",
        async || commits_waiting(&primary_url).await == "0",
    )
    .await;
    let retried = app
        .send_json(Method::POST, "/api/v1/books", &body, &key)
        .await;
    assert_eq!(retried.status, 201);
    let (end, changes) = feed_end(&app, 0).await;
    assert_eq!(end, 2, "{changes:?}");
    assert_eq!(changes[1]["book_id"], retried.json()["id"]);
    assert_eq!(app.count().await, 2);
}
