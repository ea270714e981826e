//! The original Flask tutorial's routes, with its bugs fixed.

use actix_web::http::Method;
use serde_json::json;

use crate::helpers::TestApp;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

#[actix_web::test]
async fn a_book_created_with_query_parameters_comes_back_in_the_tutorials_shapes() {
    let app = TestApp::spawn().await;
    let reply = app
        .request(
            Method::POST,
            "/booksApi?title=Dune&author=Frank%20Herbert&genre=SF",
            &[],
            None,
        )
        .await;
    assert_eq!(reply.status, 201);
    let created = reply.json();
    let id = created["Book"]["id"].as_i64().unwrap();
    assert_eq!(
        created,
        json!({"Book": {"id": id, "title": "Dune", "author": "Frank Herbert", "genre": "SF"}})
    );
    assert_eq!(
        app.get(&format!("/booksApi/{id}")).await.json(),
        json!({"books": created["Book"]})
    );
    assert_eq!(
        app.get("/booksApi").await.json(),
        json!({"books": [created["Book"]]})
    );
    assert_eq!(
        app.get(&format!("/api/v1/books/{id}")).await.json()["title"],
        "Dune"
    );
}

#[actix_web::test]
async fn a_form_body_works_like_query_parameters() {
    let app = TestApp::spawn().await;
    let reply = app
        .request(
            Method::POST,
            "/booksApi",
            &[FORM],
            Some(b"title=Emma&author=Jane+Austen"),
        )
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["Book"]["genre"], serde_json::Value::Null);
}

#[actix_web::test]
async fn an_update_replaces_only_the_fields_given_non_empty_and_answers_in_text() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"title": "Dune", "author": "Frank Herbert", "genre": "SF"}))
        .await["id"]
        .as_i64()
        .unwrap();
    let reply = app
        .request(
            Method::PUT,
            &format!("/booksApi/{id}?title=Dune%20Messiah&author="),
            &[],
            None,
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        format!("Updated a Book with id {id}")
    );
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let book = app.get(&format!("/api/v1/books/{id}")).await.json();
    assert_eq!(
        (
            book["title"].as_str(),
            book["author"].as_str(),
            book["genre"].as_str()
        ),
        (Some("Dune Messiah"), Some("Frank Herbert"), Some("SF"))
    );
    let reply = app
        .request(
            Method::PUT,
            &format!("/booksApi/{id}"),
            &[FORM],
            Some(b"genre=Epic"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        app.get(&format!("/api/v1/books/{id}")).await.json()["genre"],
        "Epic"
    );
}

#[actix_web::test]
async fn a_delete_answers_in_text_and_a_missing_book_is_404_everywhere() {
    let app = TestApp::spawn().await;
    let id = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await["id"]
        .as_i64()
        .unwrap();
    let reply = app
        .request(Method::DELETE, &format!("/booksApi/{id}"), &[], None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        format!("Removed Book with id {id}")
    );
    let path = format!("/booksApi/{id}");
    app.get(&path).await.problem(404);
    app.request(Method::DELETE, &path, &[], None)
        .await
        .problem(404);
    app.request(Method::PUT, &format!("{path}?title=X"), &[], None)
        .await
        .problem(404);
}

#[actix_web::test]
async fn tutorial_routes_validate_like_v1_and_change_nothing_on_bad_input() {
    let app = TestApp::spawn().await;
    let problem = app
        .request(Method::POST, "/booksApi?title=%20%20", &[], None)
        .await
        .problem(422);
    assert_eq!(
        problem["errors"],
        json!([{"field": "title", "message": "must not be empty"}, {"field": "author", "message": "is required"}])
    );
    app.request(
        Method::POST,
        &format!("/booksApi?title={}&author=A", "x".repeat(251)),
        &[],
        None,
    )
    .await
    .problem(422);
    app.request(Method::POST, "/booksApi?title=T&author=A%00B", &[], None)
        .await
        .problem(422);
    app.request(
        Method::POST,
        "/booksApi",
        &[("content-type", "application/json")],
        Some(b"{}"),
    )
    .await
    .problem(415);
    app.get("/booksApi/abc").await.problem(400);
    let problem = app
        .request(
            Method::POST,
            "/booksApi",
            &[FORM],
            Some(b"title=T&author=A&autor=B"),
        )
        .await
        .problem(422);
    assert_eq!(problem["errors"][0]["field"], "autor");
    assert_eq!(app.get("/booksApi").await.json(), json!({"books": []}));
}

#[actix_web::test]
async fn the_tutorial_routes_are_deprecated_in_the_document() {
    let document: serde_json::Value = serde_json::from_str(&books_http::document_json()).unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            assert_eq!(
                operation["deprecated"].as_bool().unwrap_or(false),
                path.starts_with("/booksApi"),
                "{path}"
            );
        }
    }
}

#[actix_web::test]
async fn the_tutorial_list_streams_every_book_across_pages_in_id_order() {
    let app = TestApp::spawn().await;
    for i in 0..230 {
        app.create(json!({"title": format!("Book {i}"), "author": "A"}))
            .await;
    }
    let reply = app.get("/booksApi").await;
    assert_eq!(reply.status, 200);
    // Streamed a page at a time, so its length is not known in advance.
    assert_eq!(reply.header("content-length"), None);
    let books = reply.json()["books"].as_array().unwrap().clone();
    assert_eq!(books.len(), 230);
    let ids: Vec<i64> = books.iter().map(|b| b["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(books[229]["title"], "Book 229");
}
