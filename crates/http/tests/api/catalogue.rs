//! Whole catalogues in and out: batch creates (JSON and CSV), the streaming export, and listings
//! as CSV.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use books_local_postgres::testing::TestDatabase;
use diesel::prelude::*;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, free_port, memory, serve, wait_ready};

const BATCH: &str = "/api/v1/books/batch";
const EXPORT: &str = "/api/v1/books/export";

async fn post_csv(app: &TestApp, csv: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "text/csv")];
    all.extend_from_slice(headers);
    app.request(Method::POST, BATCH, &all, Some(csv)).await
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

fn execute(url: &str, sql: &str) {
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(sql).execute(&mut conn).unwrap();
}

#[actix_web::test]
async fn a_json_batch_creates_every_book_in_input_order() {
    let app = TestApp::spawn().await;
    let books: Vec<Value> = (0..250)
        .map(|i| json!({"title": format!("Book {i}"), "author": "Anon", "genre": if i % 2 == 0 { json!("SF") } else { json!(null) }}))
        .collect();
    let reply = app
        .send_json(Method::POST, BATCH, &json!({ "books": books }), &[])
        .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let created = reply.json()["books"].as_array().unwrap().clone();
    assert_eq!(created.len(), 250);
    for (i, book) in created.iter().enumerate() {
        assert_eq!(book["title"], format!("Book {i}"));
        assert_eq!(book["version"], 1);
        if i > 0 {
            assert!(book["id"].as_i64() > created[i - 1]["id"].as_i64());
        }
        let stored = app
            .get(&format!("/api/v1/books/{}", book["id"]))
            .await
            .json();
        assert_eq!(&stored, book);
    }
    assert_eq!(app.count().await, 250);
}

#[actix_web::test]
async fn a_csv_batch_reads_its_header_in_any_order_with_quotes_and_a_byte_order_mark() {
    let app = TestApp::spawn().await;
    let csv = "\u{feff}genre,Author,title\r\nScience fiction,Frank Herbert,\"Dune, the novel\"\r\n,Jane Austen,\"Emma \"\"the\"\" novel\"\r\n";
    let reply = post_csv(&app, csv.as_bytes(), &[]).await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let books = reply.json()["books"].clone();
    assert_eq!(books[0]["title"], "Dune, the novel");
    assert_eq!(books[0]["genre"], "Science fiction");
    assert_eq!(books[1]["title"], "Emma \"the\" novel");
    assert_eq!(books[1]["genre"], Value::Null);
}

#[actix_web::test]
async fn one_invalid_book_refuses_the_whole_batch_and_names_every_invalid_field() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(251);
    let body = json!({"books": [
        {"title": "Fine", "author": "A"},
        {"title": "  ", "author": "A"},
        {"title": "Fine", "author": "A", "isbn": "1"},
        {"author": long, "title": 7},
        "not a book",
    ]});
    let problem = app
        .send_json(Method::POST, BATCH, &body, &[])
        .await
        .problem(422);
    assert_eq!(
        fields(&problem),
        [
            "books[1].title",
            "books[2].isbn",
            "books[3].title",
            "books[3].author",
            "books[4]"
        ],
        "{problem}"
    );
    let csv = "title,author\nFine,A\n,B\nAlso fine,\n";
    let problem = post_csv(&app, csv.as_bytes(), &[]).await.problem(422);
    assert_eq!(fields(&problem), ["books[1].title", "books[2].author"]);
    assert_eq!(app.count().await, 0, "nothing is half-imported");
}

#[actix_web::test]
async fn a_batch_the_database_refuses_halfway_leaves_nothing_behind() {
    let app = TestApp::spawn().await;
    // A rule the domain does not know, so that the database refuses the 600th row itself.
    execute(
        app.database_url(),
        "ALTER TABLE book ADD CONSTRAINT no_poison CHECK (title <> 'poison')",
    );
    let books: Vec<Value> = (0..1000)
        .map(|i| json!({"title": if i == 600 { "poison".to_owned() } else { format!("B{i}") }, "author": "A"}))
        .collect();
    let reply = app
        .send_json(Method::POST, BATCH, &json!({ "books": books }), &[])
        .await;
    assert!(reply.status >= 500, "{}", reply.status);
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn batches_of_the_wrong_size_or_shape_are_refused() {
    let app = TestApp::spawn().await;
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({"title": "T", "author": "A"}))
        .collect();
    for body in [
        json!({"books": []}),
        json!({ "books": too_many }),
        json!({"books": {"title": "T"}}),
        json!({"items": [{"title": "T", "author": "A"}]}),
        json!([{"title": "T", "author": "A"}]),
    ] {
        let reply = app.send_json(Method::POST, BATCH, &body, &[]).await;
        reply.problem(422);
    }
    let duplicate = br#"{"books": [{"title": "T", "title": "U", "author": "A"}]}"#;
    let reply = app
        .request(
            Method::POST,
            BATCH,
            &[("content-type", "application/json")],
            Some(duplicate),
        )
        .await;
    assert_eq!(fields(&reply.problem(422)), ["books[0].title"]);
    let too_many_rows = format!("title,author\n{}", "T,A\n".repeat(1001));
    for (csv, field) in [
        (too_many_rows.as_str(), "books"),
        ("title,isbn\nT,1\n", "header"),
        ("genre,author\nG,A\n", "header"),
        ("title,title,author\nT,T,A\n", "header"),
        ("title,author\n", "books"),
        ("title,author\nT,A\nU,A,extra\n", "books[1]"),
    ] {
        let problem = post_csv(&app, csv.as_bytes(), &[]).await.problem(422);
        assert_eq!(fields(&problem), [field], "{csv:?}: {problem}");
    }
    for csv in [
        &b"title,author\nT,A\n\"U,A\n"[..],
        b"title,author\nT,A\nU,A\"B\n",
        b"title,author\nT,A\nU,\xff\n",
    ] {
        let problem = post_csv(&app, csv, &[]).await.problem(400);
        assert!(
            problem["detail"].as_str().unwrap().starts_with("books[1]"),
            "{problem}"
        );
    }
    let reply = app
        .request(
            Method::POST,
            BATCH,
            &[("content-type", "text/plain")],
            Some(b"x"),
        )
        .await;
    reply.problem(415);
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn a_batch_body_may_reach_one_mebibyte_and_no_more() {
    let app = TestApp::spawn().await;
    // About 760 KiB: above the single-book limit of 64 KiB, under the batch's 1 MiB.
    let title = "t".repeat(250);
    let books: Vec<Value> = (0..1000)
        .map(|_| json!({"title": title, "author": "a".repeat(250), "genre": "g".repeat(250)}))
        .collect();
    let body = json!({ "books": books });
    assert!(body.to_string().len() > 700 * 1024);
    let reply = app.send_json(Method::POST, BATCH, &body, &[]).await;
    assert_eq!(reply.status, 201);
    let padding = " ".repeat(1024 * 1024);
    let reply = app
        .request(
            Method::POST,
            BATCH,
            &[("content-type", "application/json")],
            Some(format!("{{\"books\": []{padding}}}").as_bytes()),
        )
        .await;
    reply.problem(413);
}

#[actix_web::test]
async fn an_idempotency_key_replays_a_batch_and_refuses_other_books() {
    let app = TestApp::spawn().await;
    let body = json!({"books": [{"title": "A", "author": "X"}, {"title": "B", "author": "X"}]});
    let key = [("idempotency-key", "batch-1")];
    let first = app.send_json(Method::POST, BATCH, &body, &key).await;
    assert_eq!(first.status, 201);
    let again = app.send_json(Method::POST, BATCH, &body, &key).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json(), first.json());
    assert_eq!(app.count().await, 2);
    // Other books, or one book, under the same key: a reuse.
    let other = json!({"books": [{"title": "B", "author": "X"}, {"title": "A", "author": "X"}]});
    app.send_json(Method::POST, BATCH, &other, &key)
        .await
        .problem(422);
    app.send_json(
        Method::POST,
        "/api/v1/books",
        &json!({"title": "A", "author": "X"}),
        &key,
    )
    .await
    .problem(422);
    // The same batch as CSV is the same request.
    let replay = post_csv(&app, b"title,author\nA,X\nB,X\n", &key).await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.json(), first.json());
    // Another client's identical key is another request.
    let (_, other) = app
        .keys
        .create(
            &books_domain::KeyName::new("other").unwrap(),
            books_domain::Scope::Write,
        )
        .unwrap();
    let bearer = format!("Bearer {}", other.expose());
    let auth = [("authorization", bearer.as_str())];
    // The key ring is reloaded every two seconds.
    for _ in 0..20 {
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
    let theirs = app
        .send_json(
            Method::POST,
            BATCH,
            &body,
            &[("idempotency-key", "batch-1"), ("authorization", &bearer)],
        )
        .await;
    assert_eq!(theirs.status, 201);
    assert_eq!(theirs.header("idempotent-replayed"), None);
    assert_eq!(app.count().await, 4);
}

fn lines(reply: &Reply) -> Vec<String> {
    String::from_utf8(reply.body.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[actix_web::test]
async fn an_export_streams_every_matching_book_as_ndjson_or_csv() {
    let app = TestApp::spawn().await;
    let books: Vec<Value> = (0..2500)
        .map(|i| json!({"title": format!("T{:04}", 2499 - i), "author": if i % 5 == 0 { "Five" } else { "Other" }}))
        .collect();
    for chunk in books.chunks(1000) {
        let reply = app
            .send_json(Method::POST, BATCH, &json!({ "books": chunk }), &[])
            .await;
        assert_eq!(reply.status, 201);
    }
    let reply = app.get(EXPORT).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(
        reply.header("content-length"),
        None,
        "streamed, not buffered"
    );
    let ids: Vec<i64> = lines(&reply)
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 2500);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in id order, each once"
    );

    let reply = app
        .request(
            Method::GET,
            &format!("{EXPORT}?author=five&sort=-title"),
            &[("accept", "text/csv")],
            None,
        )
        .await;
    assert_eq!(reply.header("content-type"), Some("text/csv"));
    let rows = lines(&reply);
    assert_eq!(
        rows[0],
        "id,title,author,genre,version,created_at,updated_at,isbn,published_year"
    );
    assert_eq!(rows.len(), 1 + 500);
    let titles: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(1).unwrap())
        .collect();
    let mut sorted = titles.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(titles, sorted);

    let empty = app
        .request(
            Method::GET,
            &format!("{EXPORT}?author=nobody"),
            &[("accept", "text/csv")],
            None,
        )
        .await;
    assert_eq!(
        lines(&empty),
        ["id,title,author,genre,version,created_at,updated_at,isbn,published_year"]
    );
}

#[actix_web::test]
async fn exported_csv_neutralises_formulas_and_quotes_what_needs_it() {
    let app = TestApp::spawn().await;
    app.create(
        json!({"title": "=HYPERLINK(\"http://evil\")", "author": "@admin", "genre": "-2+3"}),
    )
    .await;
    app.create(json!({"title": "Dune, again", "author": "Frank Herbert"}))
        .await;
    let reply = app
        .request(Method::GET, EXPORT, &[("accept", "text/csv")], None)
        .await;
    let mut reader = csv::ReaderBuilder::new().from_reader(&reply.body[..]);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&rows[0][1], "'=HYPERLINK(\"http://evil\")");
    assert_eq!(&rows[0][2], "'@admin");
    assert_eq!(&rows[0][3], "'-2+3");
    assert_eq!(&rows[1][1], "Dune, again");
    assert_eq!(&rows[1][3], "");
}

#[actix_web::test]
async fn an_export_refuses_other_media_types_and_pages() {
    let app = TestApp::spawn().await;
    let reply = app
        .request(Method::GET, EXPORT, &[("accept", "application/json")], None)
        .await;
    reply.problem(406);
    app.get(&format!("{EXPORT}?limit=10")).await.problem(400);
    app.get(&format!("{EXPORT}?sort=isbn")).await.problem(400);
    let reply = app.request(Method::POST, EXPORT, &[], None).await;
    assert_eq!(reply.status, 405);
}

/// The sessions of `url`'s database that are inside a transaction, other than the asking one.
/// Sessions holding a transaction open while doing nothing: an export waiting for its client
/// (the background numbering of changes is in transactions too, but always busy).
fn sessions_in_a_transaction(url: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        count: i64,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(
        "SELECT count(*) AS count FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND state = 'idle in transaction'",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .count
}

pub(crate) fn seed(url: &str, count: u32) {
    execute(
        url,
        &format!(
            "INSERT INTO book (title, author, genre) \
             SELECT 'Title number ' || n, 'Author ' || (n % 977), 'Genre ' || (n % 13) \
             FROM generate_series(1, {count}) AS n"
        ),
    );
}

#[actix_web::test]
async fn a_client_that_leaves_mid_export_releases_the_database_connection_at_once() {
    let app = TestApp::spawn().await;
    let url = app.database_url().to_owned();
    seed(&url, 60_000);
    let address = app.address.trim_start_matches("http://").to_owned();
    let (url_for_thread, address_for_thread) = (url.clone(), address);
    let held = actix_web::web::block(move || {
        let mut stream = TcpStream::connect(&address_for_thread).unwrap();
        stream
            .write_all(b"GET /api/v1/books/export HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut start = [0u8; 4096];
        stream.read_exact(&mut start).unwrap();
        // Not reading on: the export fills the socket and waits, inside its snapshot (on a busy
        // machine it may still be reading a slice when first looked at: look again).
        let waiting = Instant::now();
        let during = loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = sessions_in_a_transaction(&url_for_thread);
            if now == 1 || waiting.elapsed() > Duration::from_secs(3) {
                break now;
            }
        };
        drop(stream);
        let left = Instant::now();
        let after = loop {
            let now = sessions_in_a_transaction(&url_for_thread);
            if now == 0 || left.elapsed() > Duration::from_secs(5) {
                break now;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (during, after, left.elapsed())
    })
    .await
    .unwrap();
    let (during, after, took) = held;
    assert_eq!(
        during, 1,
        "the export holds its snapshot while the client is there"
    );
    assert_eq!(
        after, 0,
        "the connection is released once the client leaves"
    );
    assert!(took < Duration::from_secs(2), "released in {took:?}");
    // And the service goes on serving.
    assert_eq!(app.get("/api/v1/books?limit=1").await.status, 200);
}

#[test]
fn exporting_two_hundred_thousand_books_keeps_memory_flat_and_reads_one_snapshot() {
    let database = TestDatabase::new();
    seed(database.url(), 200_000);
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut service = serve(&[("DATABASE_URL", database.url()), ("BIND", &bind)]);
    assert!(wait_ready(port, &mut service, Duration::from_secs(60)));
    let pid = service.0.id();
    // Warm up: a page and a small export, so that the baseline holds what any request needs.
    for path in [
        "/api/v1/books?limit=100",
        "/api/v1/books/export?author=Author%201",
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        std::io::copy(&mut stream, &mut std::io::sink()).unwrap();
    }
    let (_, peak_before) = memory(pid);

    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/books/export HTTP/1.1\r\nHost: t\r\nAccept: text/csv\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    // Once the export has begun: the last book goes and a new one comes. Neither is seen.
    execute(database.url(), "DELETE FROM book WHERE id = 200000");
    execute(
        database.url(),
        "INSERT INTO book (title, author) VALUES ('Late', 'Comer')",
    );
    let mut body = Vec::new();
    reader.read_to_end(&mut body).unwrap();
    let (_, peak_after) = memory(pid);

    // The body is chunked: count CSV rows by their id column, which starts each data line.
    let text = String::from_utf8(body).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) && l.contains(",Title number"))
        .collect();
    assert_eq!(rows.len(), 200_000, "every book exactly once");
    assert!(
        rows.last().unwrap().starts_with("200000,"),
        "the deleted book is in the snapshot"
    );
    assert!(!text.contains("Late,Comer"), "the new book is not");
    let grown = peak_after.saturating_sub(peak_before);
    eprintln!(
        "export of 200 000 books: peak RSS {} MiB before, {} MiB after",
        peak_before / (1024 * 1024),
        peak_after / (1024 * 1024)
    );
    assert!(
        grown < 32 * 1024 * 1024,
        "exporting 200 000 books grew the peak RSS by {} MiB",
        grown / (1024 * 1024)
    );
}

#[actix_web::test]
async fn a_listing_page_comes_as_csv_with_the_same_link() {
    let app = TestApp::spawn().await;
    for title in ["A", "B", "C"] {
        app.create(json!({"title": title, "author": "X"})).await;
    }
    let json_page = app.get("/api/v1/books?limit=2").await;
    let csv_page = app
        .request(
            Method::GET,
            "/api/v1/books?limit=2",
            &[("accept", "text/csv")],
            None,
        )
        .await;
    assert_eq!(csv_page.status, 200);
    assert_eq!(csv_page.header("content-type"), Some("text/csv"));
    assert_eq!(csv_page.header("link"), json_page.header("link"));
    let rows = lines(&csv_page);
    assert_eq!(rows.len(), 3);
    assert!(rows[1].contains(",A,X,,1,"), "{rows:?}");
    let next = csv_page.header("link").unwrap();
    let next = &next[1..next.find('>').unwrap()];
    let rest = app
        .request(Method::GET, next, &[("accept", "text/csv")], None)
        .await;
    let rows = lines(&rest);
    assert_eq!(rows.len(), 2);
    assert!(rows[1].contains(",C,X,"));
    app.request(
        Method::GET,
        "/api/v1/books",
        &[("accept", "text/html")],
        None,
    )
    .await
    .problem(406);
}
