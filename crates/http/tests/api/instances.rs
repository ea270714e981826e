//! Two instances behind one database: what one does, the other honours.

use std::time::Duration;

use actix_web::http::Method;
use books_domain::KeyName;
use books_local_postgres::testing::TestDatabase;
use serde_json::json;

use crate::helpers::TestApp;

fn pair() -> (TestApp, TestApp) {
    let database = TestDatabase::new();
    let first = TestApp::spawn_on(database.pool(), None, None);
    let second = TestApp::spawn_on(database.pool(), Some(database), None);
    (first, second)
}

#[actix_web::test]
async fn an_idempotency_key_used_on_one_instance_is_replayed_by_the_other() {
    let (a, b) = pair();
    let body = json!({"title": "Dune", "author": "Frank Herbert"});
    // The same client (the same API key) retries through the other instance.
    let bearer = format!("Bearer {}", a.write_key);
    let key = [
        ("idempotency-key", "two-instances"),
        ("authorization", bearer.as_str()),
    ];
    let first = a
        .send_json(Method::POST, "/api/v1/books", &body, &key)
        .await;
    let retry = b
        .send_json(Method::POST, "/api/v1/books", &body, &key)
        .await;
    assert_eq!((first.status, retry.status), (201, 201));
    assert_eq!(first.json(), retry.json());
    assert_eq!(b.count().await, 1);
}

#[actix_web::test]
async fn an_etag_read_on_one_instance_guards_a_write_on_the_other() {
    let (a, b) = pair();
    let id = a.create(json!({"title": "Dune", "author": "F"})).await["id"].clone();
    let path = format!("/api/v1/books/{id}");
    let etag = a.get(&path).await.header("etag").unwrap().to_owned();
    let patch = json!({"genre": "SF"});
    assert_eq!(
        b.send_json(Method::PATCH, &path, &patch, &[("if-match", &etag)])
            .await
            .status,
        200
    );
    a.send_json(Method::PATCH, &path, &patch, &[("if-match", &etag)])
        .await
        .problem(412);
}

#[actix_web::test]
async fn a_key_revoked_through_one_instance_stops_working_on_both() {
    let (a, b) = pair();
    let keys = a.keys.clone();
    let name = KeyName::new(&b.write_key_name).unwrap();
    actix_web::web::block(move || keys.revoke(&name))
        .await
        .unwrap()
        .unwrap();
    let body = json!({"title": "T", "author": "A"});
    let bearer = format!("Bearer {}", b.write_key);
    let auth = [("authorization", bearer.as_str())];
    let mut refused = (false, false);
    for _ in 0..20 {
        refused.0 |= a
            .send_json(Method::POST, "/api/v1/books", &body, &auth)
            .await
            .status
            == 401;
        refused.1 |= b
            .send_json(Method::POST, "/api/v1/books", &body, &auth)
            .await
            .status
            == 401;
        if refused == (true, true) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(refused, (true, true));
}
