//! Hostile clients, round 2: HEAD on streamed answers, malformed and undecodable bodies, made-up
//! methods in metrics, keys used the moment they are made, and the rate-limit headers.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use actix_web::http::Method;
use books_domain::{KeyName, Scope};
use serde_json::json;

use crate::helpers::TestApp;

/// The head of the answer to `request`, sent raw on a connection of its own, lower-cased (off the
/// test's thread: the exchange blocks).
async fn raw_head(app: &TestApp, request: String) -> String {
    let address = app.address.clone();
    actix_web::web::block(move || head_of(&address, &request))
        .await
        .unwrap()
}

fn head_of(address: &str, request: &str) -> String {
    let address = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    text.split("\r\n\r\n").next().unwrap().to_owned()
}

fn header_names(head: &str) -> Vec<String> {
    let mut names: Vec<String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_owned())
        .filter(|name| !["date", "x-request-id"].contains(&name.as_str()))
        .collect();
    names.sort();
    names
}

#[actix_web::test]
async fn head_on_a_stream_or_an_export_sends_the_headers_get_sends() {
    let app = TestApp::spawn().await;
    app.create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    for (path, accept) in [
        ("/api/v1/books/export", "application/x-ndjson"),
        ("/api/v1/books/export", "text/csv"),
        ("/api/v1/books/changes", "text/event-stream"),
    ] {
        let request = |method: &str| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
            )
        };
        let get = raw_head(&app, request("GET")).await;
        let head = raw_head(&app, request("HEAD")).await;
        assert!(get.contains("transfer-encoding: chunked"), "{get}");
        assert!(
            !head.contains("content-length"),
            "HEAD {path} ({accept}): {head}"
        );
        assert_eq!(header_names(&get), header_names(&head), "{path} ({accept})");
    }
}

#[actix_web::test]
async fn malformed_json_is_a_400_on_every_route_that_reads_json() {
    let app = TestApp::spawn().await;
    let json_type = [("content-type", "application/json")];
    for body in ["[", "[1,", "5x", "{\"books\": [", "{} {}"] {
        for path in ["/api/v1/books", "/api/v1/books/batch"] {
            let reply = app
                .request(Method::POST, path, &json_type, Some(body.as_bytes()))
                .await;
            let problem = reply.problem(400);
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap()
                    .contains("not valid JSON"),
                "{path} {body}: {problem}"
            );
        }
    }
    // Well-formed JSON of the wrong shape stays a 422.
    app.request(
        Method::POST,
        "/api/v1/books/batch",
        &json_type,
        Some(b"[1, 2]"),
    )
    .await
    .problem(422);
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn a_body_in_an_encoding_or_charset_the_service_does_not_decode_is_a_415() {
    let app = TestApp::spawn().await;
    let book = br#"{"title": "Dune", "author": "Frank Herbert"}"#;
    for headers in [
        vec![
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        vec![
            ("content-type", "application/json"),
            ("content-encoding", "br, identity"),
        ],
        vec![("content-type", "application/json; charset=utf-16")],
        vec![("content-type", "application/json; charset=\"ISO-8859-1\"")],
        vec![("content-type", "text/csv; charset=latin1")],
    ] {
        let path = if headers[0].1.starts_with("text/csv") {
            "/api/v1/books/batch"
        } else {
            "/api/v1/books"
        };
        app.request(Method::POST, path, &headers, Some(book))
            .await
            .problem(415);
    }
    assert_eq!(app.count().await, 0, "nothing was created");
    for headers in [
        vec![("content-type", "application/json; charset=utf-8")],
        vec![("content-type", "application/json; charset=\"UTF-8\"")],
        vec![
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
        ],
    ] {
        let reply = app
            .request(Method::POST, "/api/v1/books", &headers, Some(book))
            .await;
        assert_eq!(reply.status, 201, "{headers:?}");
    }
}

#[actix_web::test]
async fn a_key_works_the_moment_it_is_created() {
    let app = TestApp::spawn().await;
    // Made after the server loaded its keys: it knows nothing of this one yet.
    let secret = app
        .keys
        .create(&KeyName::new("made-just-now").unwrap(), Scope::Write)
        .unwrap()
        .1
        .expose()
        .to_owned();
    let bearer = format!("Bearer {secret}");
    let book = json!({"title": "Dune", "author": "Frank Herbert"});
    let headers = [("authorization", bearer.as_str())];
    let replies = futures_util::future::join_all(
        (0..10).map(|_| app.send_json(Method::POST, "/api/v1/books", &book, &headers)),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
    // A key that is not one is still refused.
    let reply = app
        .send_json(
            Method::POST,
            "/api/v1/books",
            &book,
            &[("authorization", "Bearer bk_made_up")],
        )
        .await;
    reply.problem(401);
}

#[actix_web::test]
async fn the_rate_limit_headers_say_the_policy_they_count_against() {
    let database = books_local_postgres::testing::TestDatabase::new();
    let app = TestApp::spawn_tuned(database.pool(), Some(database), None, |settings| {
        settings.rate_limit = books_http::RateLimit::per_second(100);
    });
    let reply = app.get("/api/v1/books").await;
    // 100 per second with bursts of 200: a bucket of 200, which 2 s at the sustained rate fill.
    assert_eq!(reply.header("ratelimit-limit"), Some("200"));
    assert_eq!(reply.header("ratelimit-policy"), Some("200;w=2"));
    let remaining: u64 = reply
        .header("ratelimit-remaining")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 200);
    assert!(reply.header("ratelimit-reset").is_some());
}

/// The whole answer to `request`, read until the server closes the connection (or 5 s pass).
fn raw_exchange(address: &str, request: &[u8]) -> String {
    let address = address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_web::test]
async fn what_the_http_library_refuses_before_the_application_runs_is_listed_in_the_docs() {
    let app = TestApp::spawn().await;
    // Each row of docs/operations.md's table of actix-http's own answers, sent raw: a 400 with
    // an empty body, and the connection closed (so nothing after it is read as a request). The
    // exchanges block, so they run off the test's thread, where the server's own tasks run.
    let refused: [&[u8]; 8] = [
        b"GET /healthz\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
        b"POST /api/v1/books HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /api/v1/books HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /api/v1/books HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST /api/v1/books HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ];
    let address = app.address.clone();
    for request in refused {
        let address = address.clone();
        let answer = actix_web::web::block(move || raw_exchange(&address, request))
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(request);
        assert!(answer.starts_with("HTTP/1.1 400"), "{shown:?} → {answer:?}");
        assert!(
            answer.ends_with("\r\n\r\n"),
            "{shown:?}: a body came with it: {answer:?}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1").count(),
            1,
            "{shown:?} → {answer:?}"
        );
    }
    assert_eq!(app.count().await, 0, "nothing was created");
}

#[actix_web::test]
async fn an_event_stream_is_never_compressed_even_for_a_client_that_accepts_gzip() {
    // The tests' servers compress answers of 1 KiB and more.
    let app = TestApp::spawn().await;
    let request = "GET /api/v1/books/changes HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\
                   Accept-Encoding: gzip, br, zstd\r\nConnection: close\r\n\r\n"
        .to_owned();
    let head = raw_head(&app, request).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    // A large page of the feed, as JSON, still is.
    for n in 0..20 {
        app.create(json!({"title": format!("Book {n} with a title long enough"), "author": "A"}))
            .await;
    }
    let page = app
        .request(
            Method::GET,
            "/api/v1/books/changes",
            &[("accept-encoding", "gzip")],
            None,
        )
        .await;
    assert_eq!(page.header("content-encoding"), Some("gzip"));
}
