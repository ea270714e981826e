//! What operators rely on: rate limits, request ids, metrics.

use actix_web::http::Method;
use books_http::ratelimit::RateLimit;
use serde_json::json;

use crate::helpers::TestApp;

#[actix_web::test]
async fn a_caller_past_its_burst_gets_429_with_retry_after_and_others_are_unaffected() {
    let app = TestApp::spawn_with(Some(RateLimit {
        per_second: 0.5,
        burst: 3.0,
    }))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = app
            .request(Method::GET, "/api/v1/books", &[("authorization", "")], None)
            .await;
        assert!(
            reply.header("ratelimit-limit").is_some()
                && reply.header("ratelimit-remaining").is_some()
        );
        statuses.push(reply.status);
        if reply.status == 429 {
            reply.problem(429);
            let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // A key has a bucket of its own.
    assert_eq!(app.get("/api/v1/books").await.status, 200);
    // Health probes are never limited.
    assert_eq!(app.get("/healthz").await.status, 200);
}

#[actix_web::test]
async fn every_answer_carries_a_request_id_and_a_client_one_is_echoed() {
    let app = TestApp::spawn().await;
    let generated = app.get("/api/v1/books").await;
    assert!(
        generated
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 16)
    );
    let echoed = app
        .request(
            Method::GET,
            "/nowhere",
            &[("x-request-id", "trace-42")],
            None,
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("trace-42"));
}

#[actix_web::test]
async fn metrics_count_requests_by_route_template_and_status_and_report_the_pool() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"].clone();
    app.get(&format!("/api/v1/books/{id}")).await;
    app.get("/api/v1/books/999999").await;
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(reply.body).unwrap();
    for line in [
        r#"http_requests_total{method="POST",route="/api/v1/books",status="201"} 1"#,
        r#"http_requests_total{method="GET",route="/api/v1/books/{id}",status="200"} 1"#,
        r#"http_requests_total{method="GET",route="/api/v1/books/{id}",status="404"} 1"#,
        r#"http_request_duration_seconds_count{method="GET",route="/api/v1/books/{id}",status="200"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(text.contains("db_pool_connections ") && text.contains("db_pool_idle_connections "));
    assert!(text.contains(r#"le="+Inf""#));
}
