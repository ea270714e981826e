//! A webhook receiver in Rust: verifies each delivery's Standard Webhooks signature, skips the
//! ones it has seen (by `webhook-id`), and acknowledges at once. `bench/webhooks.py` uses it as
//! the receiver whose cost it does not want to measure.
//!
//!     cargo run --release --example webhook_receiver -- PORT [whsec_…]
//!
//! Without a secret it does not verify. Every request to any path is a delivery; `GET /count`
//! answers how many were received. With `LOG_DELIVERIES=1` it prints one line per delivery:
//! the arrival (Unix milliseconds), the path, the `webhook-id`, and the change's `at`.
#![allow(clippy::print_stdout, reason = "an example: its output is the point")]

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};

struct Receiver {
    key: Option<Vec<u8>>,
    seen: Mutex<HashSet<String>>,
    count: AtomicU64,
    log: bool,
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> &'a str {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// True when `webhook-signature` holds a `v1` signature of this delivery with the key.
fn verified(key: &[u8], request: &HttpRequest, body: &[u8]) -> bool {
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(header(request, "webhook-id").as_bytes());
    mac.update(b".");
    mac.update(header(request, "webhook-timestamp").as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    // The header may hold several signatures, separated by spaces (during a secret's rotation).
    header(request, "webhook-signature")
        .split(' ')
        .any(|signature| signature == expected)
}

async fn deliver(
    request: HttpRequest,
    body: web::Bytes,
    receiver: web::Data<Receiver>,
) -> HttpResponse {
    if request.method() == actix_web::http::Method::GET && request.path() == "/count" {
        return HttpResponse::Ok().body(receiver.count.load(Ordering::Relaxed).to_string());
    }
    if let Some(key) = &receiver.key
        && !verified(key, &request, &body)
    {
        return HttpResponse::Unauthorized().finish();
    }
    let id = header(&request, "webhook-id").to_owned();
    let first_time = receiver
        .seen
        .lock()
        .map(|mut seen| seen.insert(id.clone()))
        .unwrap_or(true);
    if first_time {
        // Apply the change to your copy here (only when its version is newer than the copy's).
    }
    receiver.count.fetch_add(1, Ordering::Relaxed);
    if receiver.log {
        let at = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|change| change["at"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let arrived = chrono::Utc::now().timestamp_millis();
        println!("{arrived} {} {id} {at}", request.path());
    }
    HttpResponse::NoContent().finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(9000);
    let key = args.next().map(|secret| {
        BASE64
            .decode(secret.trim_start_matches("whsec_"))
            .expect("the secret is whsec_ followed by base64")
    });
    let receiver = web::Data::new(Receiver {
        key,
        seen: Mutex::new(HashSet::new()),
        count: AtomicU64::new(0),
        log: std::env::var("LOG_DELIVERIES").is_ok_and(|v| v == "1"),
    });
    println!("receiving on 127.0.0.1:{port}");
    HttpServer::new(move || {
        App::new()
            .app_data(receiver.clone())
            .default_service(web::to(deliver))
    })
    .workers(1)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
