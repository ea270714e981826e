use actix_web::http::Method;
use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::TestApp;

#[actix_web::test]
async fn creating_a_book_answers_201_with_location_etag_and_the_trimmed_book() {
    let app = TestApp::spawn().await;
    let reply = app
        .send_json(
            Method::POST,
            "/api/v1/books",
            &json!({"title": "  Dune ", "author": "Frank Herbert", "genre": "Science fiction"}),
            &[],
        )
        .await;
    assert_eq!(reply.status, 201);
    let book = reply.json();
    let id = book["id"].as_i64().unwrap();
    assert!(id > 0);
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/v1/books/{id}").as_str())
    );
    assert_eq!(reply.header("etag"), Some(format!("\"{id}-1\"").as_str()));
    assert_eq!(book["title"], "Dune");
    assert_eq!(book["genre"], "Science fiction");
    assert_eq!(book["version"], 1);
    assert_eq!(book["created_at"], book["updated_at"]);
    let created_at = book["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created_at).is_ok(),
        "{created_at}"
    );
}

#[actix_web::test]
async fn a_created_book_is_served_at_its_location_with_its_etag() {
    let app = TestApp::spawn().await;
    let created = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let reply = app.get(&format!("/api/v1/books/{}", created["id"])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), created);
    assert_eq!(reply.json()["genre"], serde_json::Value::Null);
    assert!(reply.header("etag").is_some());
}

#[actix_web::test]
async fn a_get_with_a_matching_if_none_match_answers_304_with_no_body() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await["id"]
        .clone();
    let path = format!("/api/v1/books/{id}");
    let etag = app.get(&path).await.header("etag").unwrap().to_owned();
    let reply = app
        .request(Method::GET, &path, &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty());
    assert_eq!(reply.header("etag"), Some(etag.as_str()));
    let weak = format!("W/{etag}");
    assert_eq!(
        app.request(Method::GET, &path, &[("if-none-match", &weak)], None)
            .await
            .status,
        304
    );
    assert_eq!(
        app.request(Method::GET, &path, &[("if-none-match", "\"other\"")], None)
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn a_put_replaces_every_field_and_a_left_out_genre_becomes_null() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"title": "Dune", "author": "Frank Herbert", "genre": "SF"}))
        .await["id"]
        .clone();
    let path = format!("/api/v1/books/{id}");
    let reply = app
        .send_json(
            Method::PUT,
            &path,
            &json!({"title": "Emma", "author": "Jane Austen"}),
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    let book = reply.json();
    assert_eq!(
        (
            book["title"].as_str(),
            book["author"].as_str(),
            &book["genre"],
            &book["version"]
        ),
        (Some("Emma"), Some("Jane Austen"), &json!(null), &json!(2))
    );
    assert_eq!(reply.header("etag"), Some(format!("\"{id}-2\"").as_str()));
    assert_eq!(app.get(&path).await.json(), book);
}

#[actix_web::test]
async fn a_patch_is_a_merge_patch_under_both_media_types_and_a_null_genre_clears_it() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"title": "Dune", "author": "Frank Herbert", "genre": "SF"}))
        .await["id"]
        .clone();
    let path = format!("/api/v1/books/{id}");
    let merge = [("content-type", "application/merge-patch+json")];
    let reply = app
        .request(
            Method::PATCH,
            &path,
            &merge,
            Some(br#"{"title": "Dune Messiah"}"#),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        (
            reply.json()["title"].as_str(),
            reply.json()["genre"].as_str()
        ),
        (Some("Dune Messiah"), Some("SF"))
    );
    let reply = app
        .send_json(Method::PATCH, &path, &json!({"genre": null}), &[])
        .await;
    assert_eq!(reply.status, 200);
    let book = reply.json();
    assert_eq!(
        (&book["genre"], &book["author"], &book["version"]),
        (&json!(null), &json!("Frank Herbert"), &json!(3))
    );
    assert!(
        reply
            .header("accept-patch")
            .unwrap()
            .contains("application/merge-patch+json")
    );
}

#[actix_web::test]
async fn a_patch_that_nulls_the_title_or_author_is_422_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let before = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let path = format!("/api/v1/books/{}", before["id"]);
    let reply = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"title": null, "author": null}),
            &[],
        )
        .await;
    let problem = reply.problem(422);
    assert_eq!(
        problem["errors"],
        json!([{"field": "title", "message": "must not be null"}, {"field": "author", "message": "must not be null"}])
    );
    assert_eq!(app.get(&path).await.json(), before);
}

#[actix_web::test]
async fn a_stale_if_match_is_412_for_put_patch_and_delete_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let before = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let path = format!("/api/v1/books/{}", before["id"]);
    let stale = format!("\"{}-7\"", before["id"]);
    let body = json!({"title": "Other", "author": "Other"});
    for method in [Method::PUT, Method::PATCH] {
        app.send_json(method, &path, &body, &[("if-match", &stale)])
            .await
            .problem(412);
    }
    app.request(Method::DELETE, &path, &[("if-match", &stale)], None)
        .await
        .problem(412);
    app.request(Method::DELETE, &path, &[("if-match", "W/\"1-1\"")], None)
        .await
        .problem(412);
    assert_eq!(app.get(&path).await.json(), before);
}

#[actix_web::test]
async fn if_match_with_the_current_etag_in_a_list_or_a_star_lets_the_write_through() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let path = format!("/api/v1/books/{}", book["id"]);
    let list = format!("\"{}-9\", \"{}-1\"", book["id"], book["id"]);
    let reply = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"genre": "SF"}),
            &[("if-match", &list)],
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = app
        .send_json(
            Method::PATCH,
            &path,
            &json!({"genre": "Epic"}),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(reply.json()["version"], 3);
}

#[actix_web::test]
async fn a_dozen_clients_patching_with_the_same_etag_produce_exactly_one_winner() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let path = format!("/api/v1/books/{}", book["id"]);
    let etag = format!("\"{}-1\"", book["id"]);
    let bodies: Vec<_> = (0..12)
        .map(|i| json!({"title": format!("Writer {i}")}))
        .collect();
    let headers = [("if-match", etag.as_str())];
    let replies = join_all(
        bodies
            .iter()
            .map(|body| app.send_json(Method::PATCH, &path, body, &headers)),
    )
    .await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [[200].as_slice(), &[412; 11]].concat());
    assert_eq!(app.get(&path).await.json()["version"], 2);
}

#[actix_web::test]
async fn a_delete_answers_204_with_no_body_and_the_book_is_gone() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let path = format!("/api/v1/books/{}", book["id"]);
    let reply = app.request(Method::DELETE, &path, &[], None).await;
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    app.get(&path).await.problem(404);
    app.request(Method::DELETE, &path, &[], None)
        .await
        .problem(404);
    app.send_json(
        Method::PUT,
        &path,
        &json!({"title": "A", "author": "B"}),
        &[],
    )
    .await
    .problem(404);
}

#[actix_web::test]
async fn a_missing_book_is_404_problem() {
    let app = TestApp::spawn().await;
    let problem = app
        .get("/api/v1/books/9223372036854775807")
        .await
        .problem(404);
    assert_eq!(
        problem["detail"],
        "there is no book with id 9223372036854775807"
    );
}

#[actix_web::test]
async fn a_retried_create_with_the_same_idempotency_key_returns_the_first_book_and_creates_nothing()
{
    let app = TestApp::spawn().await;
    let body = json!({"title": "Dune", "author": "Frank Herbert"});
    let key = [("idempotency-key", "create-dune-1")];
    let first = app
        .send_json(Method::POST, "/api/v1/books", &body, &key)
        .await;
    let retry = app
        .send_json(Method::POST, "/api/v1/books", &body, &key)
        .await;
    assert_eq!((first.status, retry.status), (201, 201));
    assert_eq!(retry.json(), first.json());
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn the_same_idempotency_key_with_another_body_is_422_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let key = [("idempotency-key", "k")];
    app.send_json(
        Method::POST,
        "/api/v1/books",
        &json!({"title": "Dune", "author": "F"}),
        &key,
    )
    .await;
    let problem = app
        .send_json(
            Method::POST,
            "/api/v1/books",
            &json!({"title": "Emma", "author": "J"}),
            &key,
        )
        .await
        .problem(422);
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn concurrent_retries_with_one_idempotency_key_create_exactly_one_book() {
    let app = TestApp::spawn().await;
    let body = json!({"title": "Dune", "author": "Frank Herbert"});
    let key = [("idempotency-key", "race-1")];
    let replies =
        join_all((0..8).map(|_| app.send_json(Method::POST, "/api/v1/books", &body, &key))).await;
    let ids: std::collections::HashSet<_> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.json()["id"].clone())
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(replies.iter().all(|r| r.status == 201 || r.status == 409));
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn an_invalid_idempotency_key_is_400() {
    let app = TestApp::spawn().await;
    let body = json!({"title": "Dune", "author": "F"});
    let long = "k".repeat(256);
    for key in ["has space", long.as_str(), "tab\there"] {
        app.send_json(
            Method::POST,
            "/api/v1/books",
            &body,
            &[("idempotency-key", key)],
        )
        .await
        .problem(400);
    }
    assert_eq!(app.count().await, 0);
}
