//! Access control: reads are open, writes need a key with the write scope.

use std::time::Duration;

use actix_web::http::Method;
use books_domain::KeyName;
use serde_json::json;

use crate::helpers::{Reply, TestApp};

/// A request: method, path, headers and body.
type Request = (
    Method,
    String,
    Vec<(&'static str, &'static str)>,
    Option<Vec<u8>>,
);

/// Every write route of the service, with a body that would succeed.
fn writes(id: i64) -> Vec<Request> {
    let json = vec![("content-type", "application/json")];
    let form = vec![("content-type", "application/x-www-form-urlencoded")];
    let book = br#"{"title": "T", "author": "A"}"#.to_vec();
    vec![
        (
            Method::POST,
            "/api/v1/books".to_owned(),
            json.clone(),
            Some(book.clone()),
        ),
        (
            Method::PUT,
            format!("/api/v1/books/{id}"),
            json.clone(),
            Some(book),
        ),
        (
            Method::PATCH,
            format!("/api/v1/books/{id}"),
            json,
            Some(br#"{"genre": "G"}"#.to_vec()),
        ),
        (
            Method::POST,
            "/booksApi".to_owned(),
            form.clone(),
            Some(b"title=T&author=A".to_vec()),
        ),
        (
            Method::PUT,
            format!("/booksApi/{id}"),
            form,
            Some(b"genre=G".to_vec()),
        ),
        (Method::DELETE, format!("/booksApi/{id}"), vec![], None),
        (Method::DELETE, format!("/api/v1/books/{id}"), vec![], None),
    ]
}

async fn send_as(app: &TestApp, authorization: &str, id: i64) -> Vec<Reply> {
    let mut replies = Vec::new();
    for (method, path, mut headers, body) in writes(id) {
        headers.push(("authorization", authorization));
        replies.push(app.request(method, &path, &headers, body.as_deref()).await);
    }
    replies
}

#[actix_web::test]
async fn every_write_route_refuses_anonymous_callers_with_401_and_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"]
        .as_i64()
        .unwrap();
    for reply in send_as(&app, "", id).await {
        reply.problem(401);
        assert!(
            reply
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
    }
    assert_eq!(app.count().await, 1);
    assert_eq!(
        app.get(&format!("/api/v1/books/{id}")).await.json()["version"],
        1
    );
}

#[actix_web::test]
async fn every_write_route_refuses_an_unknown_or_malformed_key_with_401() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"]
        .as_i64()
        .unwrap();
    for credentials in ["Bearer bk_0000", "Bearer", "Basic dXNlcjpwYXNz", "bk_only"] {
        for reply in send_as(&app, credentials, id).await {
            reply.problem(401);
            assert!(
                reply
                    .header("www-authenticate")
                    .unwrap()
                    .contains("invalid_token")
            );
        }
    }
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn every_write_route_refuses_a_read_key_with_403() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"]
        .as_i64()
        .unwrap();
    let bearer = format!("Bearer {}", app.read_key);
    for reply in send_as(&app, &bearer, id).await {
        reply.problem(403);
    }
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn every_write_route_accepts_a_write_key() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"]
        .as_i64()
        .unwrap();
    let bearer = format!("bearer {}", app.write_key);
    let statuses: Vec<u16> = send_as(&app, &bearer, id)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    // The last delete finds the book already deleted by the tutorial route.
    assert_eq!(statuses, [201, 200, 200, 201, 200, 200, 404]);
}

#[actix_web::test]
async fn reads_are_open_to_anonymous_callers_and_to_read_keys() {
    let app = TestApp::spawn().await;
    let id = app.create(json!({"title": "Dune", "author": "F"})).await["id"]
        .as_i64()
        .unwrap();
    let bearer = format!("Bearer {}", app.read_key);
    for authorization in ["", bearer.as_str()] {
        for path in [
            "/api/v1/books".to_owned(),
            format!("/api/v1/books/{id}"),
            "/booksApi".to_owned(),
            format!("/booksApi/{id}"),
        ] {
            let reply = app
                .request(
                    Method::GET,
                    &path,
                    &[("authorization", authorization)],
                    None,
                )
                .await;
            assert_eq!(reply.status, 200, "{path}");
        }
    }
}

#[actix_web::test]
async fn a_revoked_key_stops_working_within_seconds() {
    let app = TestApp::spawn().await;
    let keys = app.keys.clone();
    let name = KeyName::new(&app.write_key_name).unwrap();
    actix_web::web::block(move || keys.revoke(&name))
        .await
        .unwrap()
        .unwrap();
    let body = json!({"title": "T", "author": "A"});
    let mut refused_after = None;
    for attempt in 0..20 {
        let reply = app
            .send_json(Method::POST, "/api/v1/books", &body, &[])
            .await;
        if reply.status == 401 {
            refused_after = Some(attempt);
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        refused_after.is_some(),
        "the revoked key still works after 10 seconds"
    );
}

#[actix_web::test]
async fn the_document_declares_the_bearer_scheme_on_every_write_and_webhook_route_and_on_no_read() {
    let document: serde_json::Value = serde_json::from_str(&books_http::document_json()).unwrap();
    assert_eq!(
        document["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| !s.is_empty());
            if path.starts_with("/api/v1/webhooks") {
                // Every webhook route needs a caller, of either scope.
                assert!(secured, "{method} {path}");
                assert_eq!(
                    operation["security"][0]["bearerAuth"],
                    serde_json::json!([])
                );
                assert!(operation["responses"]["401"].is_object());
                assert!(operation["responses"]["403"].is_null(), "{method} {path}");
                continue;
            }
            assert_eq!(secured, method != "get", "{method} {path}");
            if secured {
                assert!(
                    operation["responses"]["401"].is_object()
                        && operation["responses"]["403"].is_object()
                );
            }
        }
    }
}

#[actix_web::test]
async fn while_the_keys_cannot_be_reloaded_a_revoked_key_stops_working_within_the_bound() {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;
    let database = books_local_postgres::testing::TestDatabase::new();
    let url = database.url().to_owned();
    let max_age = Duration::from_secs(3);
    let app = TestApp::spawn_tuned(database.pool(), Some(database), None, |settings| {
        settings.key_cache_max_age = max_age;
    });
    let book = json!({"title": "T", "author": "A"});
    let create = || app.send_json(Method::POST, "/api/v1/books", &book, &[]);
    assert_eq!(create().await.status, 201);

    // Revoked, and the keys out of reach in the same transaction: no reload sees the revocation.
    let mut conn = PgConnection::establish(&url).unwrap();
    conn.batch_execute(&format!(
        "BEGIN; UPDATE api_key SET revoked_at = now() WHERE name = '{}'; \
         ALTER TABLE api_key RENAME TO api_key_out_of_reach; COMMIT",
        app.write_key_name
    ))
    .unwrap();
    let revoked = std::time::Instant::now();
    let refused = loop {
        let reply = create().await;
        if reply.status != 201 {
            break reply;
        }
        assert!(
            revoked.elapsed() < max_age + Duration::from_secs(1),
            "a revoked key kept working while the keys could not be reloaded"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    refused.problem(503);
    assert!(refused.header("retry-after").is_some());
    // Reads go on, with the key (as an anonymous read: reads are open) or without.
    assert_eq!(app.get("/api/v1/books").await.status, 200);
    let anonymous = [("authorization", "")];
    assert_eq!(
        app.request(Method::GET, "/api/v1/books", &anonymous, None)
            .await
            .status,
        200
    );

    // Reachable again: the revocation is seen, and the key is refused for good.
    conn.batch_execute("ALTER TABLE api_key_out_of_reach RENAME TO api_key")
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let status = create().await.status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reloaded"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}
