//! Response compression (issue 12): bodies of 1 KiB and more, in the encoding the client asks for.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;

/// The head of the answer to `GET path` with `Accept-Encoding: encoding`, and the body's length.
async fn head_of(app: &TestApp, path: &str, encoding: &str) -> (String, usize) {
    let host = app.address.trim_start_matches("http://").to_owned();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: {encoding}\r\nConnection: close\r\n\r\n"
    );
    actix_web::rt::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&answer[..split]).to_lowercase(),
            answer.len() - split - 4,
        )
    })
    .await
    .unwrap()
}

#[actix_web::test]
async fn large_bodies_are_compressed_as_asked_and_small_ones_are_not() {
    let app = TestApp::spawn().await;
    for i in 0..20 {
        app.create(json!({"title": format!("A title long enough to fill a page {i}"), "author": "Someone"}))
            .await;
    }
    let (plain_head, plain_length) = head_of(&app, "/api/v1/books?limit=20", "identity").await;
    assert!(!plain_head.contains("content-encoding"), "{plain_head}");
    for encoding in ["gzip", "br", "zstd"] {
        let (head, length) = head_of(&app, "/api/v1/books?limit=20", encoding).await;
        assert!(
            head.contains(&format!("content-encoding: {encoding}")),
            "{head}"
        );
        assert!(
            length < plain_length / 2,
            "{encoding}: {length} of {plain_length} bytes"
        );
    }
    // A single book is well under 1 KiB: sent as it is, with no mark left on it.
    let (head, _) = head_of(&app, "/api/v1/books/1", "gzip, br, zstd").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
}
