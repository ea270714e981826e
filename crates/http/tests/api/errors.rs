//! Bad input of every kind: a clear problem+json, never a 500, and nothing changed.

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const BOOKS: &str = "/api/v1/books";

#[actix_web::test]
async fn every_invalid_field_is_listed_at_once() {
    let app = TestApp::spawn().await;
    let body = json!({"title": "   ", "genre": 42, "autor": "typo"});
    let problem = app
        .send_json(Method::POST, BOOKS, &body, &[])
        .await
        .problem(422);
    assert_eq!(problem["title"], "Unprocessable Content");
    assert_eq!(
        problem["errors"],
        json!([
            {"field": "title", "message": "must not be empty"},
            {"field": "author", "message": "is required"},
            {"field": "genre", "message": "must be a string"},
            {"field": "autor", "message": "is not a known field"},
        ])
    );
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn a_missing_or_null_required_field_is_422() {
    let app = TestApp::spawn().await;
    for body in [
        json!({"author": "A"}),
        json!({"title": null, "author": "A"}),
        json!({"title": "T", "author": null}),
    ] {
        app.send_json(Method::POST, BOOKS, &body, &[])
            .await
            .problem(422);
    }
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn titles_are_limited_to_250_characters_not_bytes() {
    let app = TestApp::spawn().await;
    let ok = "é".repeat(250);
    assert_eq!(
        app.create(json!({"title": ok, "author": "A"})).await["title"],
        ok
    );
    let problem = app
        .send_json(
            Method::POST,
            BOOKS,
            &json!({"title": "x".repeat(251), "author": "A"}),
            &[],
        )
        .await
        .problem(422);
    assert_eq!(
        problem["errors"][0]["message"],
        "must be at most 250 characters"
    );
    app.send_json(
        Method::POST,
        BOOKS,
        &json!({"title": "T", "author": "A", "genre": "g".repeat(251)}),
        &[],
    )
    .await
    .problem(422);
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn nul_and_control_characters_are_422_not_500() {
    let app = TestApp::spawn().await;
    for title in ["Du\u{0}ne", "line\nbreak", "\u{1b}[31mred"] {
        let problem = app
            .send_json(
                Method::POST,
                BOOKS,
                &json!({"title": title, "author": "A"}),
                &[],
            )
            .await
            .problem(422);
        assert_eq!(
            problem["errors"][0]["message"],
            "must not contain control characters"
        );
    }
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn odd_but_valid_unicode_round_trips() {
    let app = TestApp::spawn().await;
    let title = "𝔇𝔲𝔫𝔢 \u{202e}ٴ 🏜️ 漢字 e\u{301}";
    assert_eq!(
        app.create(json!({"title": title, "author": "A"})).await["title"],
        title
    );
}

#[actix_web::test]
async fn wrong_json_types_and_non_object_bodies_are_422() {
    let app = TestApp::spawn().await;
    for body in [
        json!({"title": ["Dune"], "author": {"name": "F"}}),
        json!([1, 2]),
        json!("Dune"),
        json!(null),
        json!(12),
    ] {
        app.send_json(Method::POST, BOOKS, &body, &[])
            .await
            .problem(422);
    }
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn malformed_or_empty_json_is_400() {
    let app = TestApp::spawn().await;
    let json_type = [("content-type", "application/json")];
    for body in [
        &b"{\"title\": "[..],
        b"",
        b"{'title': 'x'}",
        b"\xff\xfe",
        b"{\"title\": \"\\ud800\", \"author\": \"A\"}",
    ] {
        let problem = app
            .request(Method::POST, BOOKS, &json_type, Some(body))
            .await
            .problem(400);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("not valid JSON"),
            "{problem}"
        );
    }
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn a_body_that_is_not_declared_json_is_415() {
    let app = TestApp::spawn().await;
    let body = br#"{"title": "Dune", "author": "A"}"#;
    app.request(
        Method::POST,
        BOOKS,
        &[("content-type", "text/plain")],
        Some(body),
    )
    .await
    .problem(415);
    app.request(Method::POST, BOOKS, &[], Some(body))
        .await
        .problem(415);
    app.request(
        Method::POST,
        BOOKS,
        &[("content-type", "application/merge-patch+json")],
        Some(body),
    )
    .await
    .problem(415);
    assert_eq!(
        app.request(
            Method::POST,
            BOOKS,
            &[("content-type", "application/json; charset=utf-8")],
            Some(body)
        )
        .await
        .status,
        201
    );
}

#[actix_web::test]
async fn a_body_over_64_kib_is_413() {
    let app = TestApp::spawn().await;
    let body = json!({"title": "x".repeat(70 * 1024), "author": "A"}).to_string();
    let reply = app
        .request(
            Method::POST,
            BOOKS,
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .await;
    let problem = reply.problem(413);
    assert_eq!(problem["title"], "Content Too Large");
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn a_path_id_that_is_not_a_positive_int64_is_400() {
    let app = TestApp::spawn().await;
    for id in [
        "abc",
        "0",
        "-1",
        "9223372036854775808",
        "1.5",
        "+1",
        "%20",
        "1e3",
    ] {
        let path = format!("{BOOKS}/{id}");
        app.get(&path).await.problem(400);
        app.request(Method::DELETE, &path, &[], None)
            .await
            .problem(400);
    }
}

#[actix_web::test]
async fn an_unknown_route_is_404_and_a_wrong_method_is_405_with_allow() {
    let app = TestApp::spawn().await;
    app.get("/no/such/route").await.problem(404);
    app.get("/api/v1/nothing").await.problem(404);
    let reply = app.request(Method::DELETE, BOOKS, &[], None).await;
    reply.problem(405);
    assert_eq!(reply.header("allow"), Some("GET, POST, HEAD"));
    let reply = app
        .request(Method::POST, &format!("{BOOKS}/1"), &[], None)
        .await;
    reply.problem(405);
    assert_eq!(reply.header("allow"), Some("GET, PUT, PATCH, DELETE, HEAD"));
}

#[actix_web::test]
async fn bad_listing_parameters_are_400() {
    let app = TestApp::spawn().await;
    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=99999999999999999999",
        "sort=price",
        "sort=--id",
        "cursor=garbage",
        "author=a%00b",
        "limit=1&limit=2",
        "sort=",
        "limit=",
    ] {
        app.get(&format!("{BOOKS}?{query}")).await.problem(400);
    }
}

#[actix_web::test]
async fn errors_are_never_cached_and_never_leak_internals() {
    let app = TestApp::spawn().await;
    let reply = app.send_json(Method::POST, BOOKS, &json!({}), &[]).await;
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let text: Value = reply.json();
    let text = text.to_string().to_lowercase();
    for leak in ["diesel", "sql", "postgres", "panicked"] {
        assert!(!text.contains(leak), "{text}");
    }
}
