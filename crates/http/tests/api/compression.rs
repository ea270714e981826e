//! Response compression, on by default: bodies of 1 KiB and more, in the encoding the client
//! prefers; whole bodies leave compressed in one piece, streamed ones stay streamed.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;

/// An answer read off the wire: its head (lower-cased) and its body, de-chunked when it came in
/// chunks but never decompressed.
struct Raw {
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn chunked(&self) -> bool {
        self.head.contains("transfer-encoding: chunked")
    }

    fn encoding(&self) -> Option<&str> {
        self.head
            .lines()
            .find_map(|line| line.strip_prefix("content-encoding: "))
    }

    /// The body, decompressed as its `Content-Encoding` says.
    fn decoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.encoding() {
            None => out.clone_from(&self.body),
            Some("gzip") => {
                flate2::read::GzDecoder::new(self.body.as_slice())
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("br") => {
                brotli::Decompressor::new(self.body.as_slice(), 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Some("zstd") => out = zstd::stream::decode_all(self.body.as_slice()).unwrap(),
            Some(other) => panic!("unexpected content-encoding {other}"),
        }
        out
    }
}

/// `GET path` with `Accept-Encoding: encoding` (none when empty) and the read key, over a
/// connection of its own.
async fn fetch(app: &TestApp, path: &str, encoding: &str, accept: &str) -> Raw {
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
        app.read_key
    );
    if !encoding.is_empty() {
        request.push_str(&format!("Accept-Encoding: {encoding}\r\n"));
    }
    if !accept.is_empty() {
        request.push_str(&format!("Accept: {accept}\r\n"));
    }
    request.push_str("\r\n");
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
        let mut body = answer[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunked(&body);
        }
        Raw { head, body }
    })
    .await
    .unwrap()
}

/// The data of a chunked body (RFC 9112, 7.1).
fn dechunked(mut rest: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return data;
        }
        data.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

async fn twenty_books(app: &TestApp) {
    for i in 0..20 {
        app.create(json!({"title": format!("A title long enough to fill a page {i}"), "author": "Someone"}))
            .await;
    }
}

#[actix_web::test]
async fn a_whole_answer_leaves_compressed_in_one_piece_and_decodes_to_the_plain_one() {
    let app = TestApp::spawn().await;
    twenty_books(&app).await;
    let plain = fetch(&app, "/api/v1/books?limit=20", "", "").await;
    assert_eq!(plain.encoding(), None, "{}", plain.head);
    assert!(
        plain.head.contains("vary: accept-encoding"),
        "{}",
        plain.head
    );
    for encoding in ["gzip", "br", "zstd"] {
        let answer = fetch(&app, "/api/v1/books?limit=20", encoding, "").await;
        assert_eq!(answer.encoding(), Some(encoding), "{}", answer.head);
        assert!(
            answer.head.contains("vary: accept-encoding"),
            "{}",
            answer.head
        );
        // Compressed where it was built, so its length is known: one write, no chunks.
        assert!(!answer.chunked(), "{}", answer.head);
        assert!(
            answer
                .head
                .contains(&format!("content-length: {}", answer.body.len())),
            "{}",
            answer.head
        );
        assert!(
            answer.body.len() < plain.body.len() / 2,
            "{encoding}: {} of {} bytes",
            answer.body.len(),
            plain.body.len()
        );
        assert_eq!(answer.decoded(), plain.body, "{encoding}");
    }
    // XML and CSV pages too.
    for accept in ["application/xml", "text/csv"] {
        let plain = fetch(&app, "/api/v1/books?limit=20", "", accept).await;
        let answer = fetch(&app, "/api/v1/books?limit=20", "gzip", accept).await;
        assert_eq!(answer.encoding(), Some("gzip"), "{}", answer.head);
        assert_eq!(answer.decoded(), plain.body, "{accept}");
    }
}

#[actix_web::test]
async fn a_small_answer_is_sent_as_it_is_with_no_mark_left_on_it() {
    let app = TestApp::spawn().await;
    app.create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let answer = fetch(&app, "/api/v1/books/1", "gzip, br, zstd", "").await;
    assert!(answer.head.starts_with("http/1.1 200"), "{}", answer.head);
    assert_eq!(answer.encoding(), None, "{}", answer.head);
    assert!(!answer.head.contains("identity"), "{}", answer.head);
}

#[actix_web::test]
async fn the_clients_weights_choose_the_encoding() {
    let app = TestApp::spawn().await;
    twenty_books(&app).await;
    for (accepted, chosen) in [
        ("gzip;q=0.5, zstd", Some("zstd")),
        ("br;q=0, gzip", Some("gzip")),
        ("zstd;q=0.1, br;q=0.9", Some("br")),
        // Equal weights: Brotli, then zstd, then gzip.
        ("gzip, br", Some("br")),
        ("gzip, zstd", Some("zstd")),
        ("identity", None),
        ("compress, deflate", None),
        ("gzip;q=0", None),
    ] {
        let answer = fetch(&app, "/api/v1/books?limit=20", accepted, "").await;
        assert!(
            answer.head.starts_with("http/1.1 200"),
            "{accepted}: {}",
            answer.head
        );
        assert_eq!(answer.encoding(), chosen, "{accepted}: {}", answer.head);
    }
}

#[actix_web::test]
async fn a_compressed_export_stays_streamed_and_decodes_to_the_plain_one() {
    let app = TestApp::spawn().await;
    twenty_books(&app).await;
    for accept in ["application/x-ndjson", "text/csv", "application/xml"] {
        let plain = fetch(&app, "/api/v1/books/export", "", accept).await;
        let answer = fetch(&app, "/api/v1/books/export", "gzip", accept).await;
        assert!(answer.chunked(), "{accept}: {}", answer.head);
        assert_eq!(answer.encoding(), Some("gzip"), "{accept}: {}", answer.head);
        assert_eq!(answer.decoded(), plain.body, "{accept}");
    }
}
