//! A book's identity: its ISBN (any accepted spelling in, the 13 digits out, one book per ISBN)
//! and its year of publication, through every path a book takes.

use actix_web::http::Method;
use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const BOOKS: &str = "/api/v1/books";
const DUNE_13: &str = "9780441013593";

async fn dune(app: &TestApp) -> Value {
    app.create(json!({"title": "Dune", "author": "Frank Herbert", "isbn": "0-441-01359-7", "published_year": 1965}))
        .await
}

#[actix_web::test]
async fn an_isbn_10_is_stored_and_answered_as_its_isbn_13_beside_the_year() {
    let app = TestApp::spawn().await;
    let book = dune(&app).await;
    assert_eq!(book["isbn"], DUNE_13);
    assert_eq!(book["published_year"], 1965);
    let plain = app
        .create(json!({"title": "Emma", "author": "Jane Austen"}))
        .await;
    assert_eq!(
        (&plain["isbn"], &plain["published_year"]),
        (&Value::Null, &Value::Null)
    );
    let read = app.get(&format!("{BOOKS}/{}", book["id"])).await.json();
    assert_eq!(read, book);
}

#[actix_web::test]
async fn an_isbn_another_book_has_in_any_spelling_is_409_naming_that_book_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let first = dune(&app).await;
    let existing = format!("{BOOKS}/{}", first["id"]);
    let again = app
        .send_json(
            Method::POST,
            BOOKS,
            &json!({"title": "Dune (reprint)", "author": "Frank Herbert", "isbn": "978 0 441 01359 3"}),
            &[],
        )
        .await
        .problem(409);
    assert_eq!(again["existing"], existing);
    assert!(
        again["detail"].as_str().unwrap().contains(DUNE_13),
        "{again}"
    );
    assert_eq!(app.count().await, 1);

    let emma = app
        .create(json!({"title": "Emma", "author": "Jane Austen"}))
        .await;
    let path = format!("{BOOKS}/{}", emma["id"]);
    let patched = app
        .send_json(Method::PATCH, &path, &json!({"isbn": DUNE_13}), &[])
        .await
        .problem(409);
    assert_eq!(patched["existing"], existing);
    let replaced = app
        .send_json(
            Method::PUT,
            &path,
            &json!({"title": "Emma", "author": "Jane Austen", "isbn": "0441013597"}),
            &[],
        )
        .await
        .problem(409);
    assert_eq!(replaced["existing"], existing);
    assert_eq!(app.get(&path).await.json(), emma, "nothing changed");
}

#[actix_web::test]
async fn concurrent_creates_of_one_isbn_make_exactly_one_book_and_the_others_get_409() {
    let app = TestApp::spawn().await;
    let creates = (0..12).map(|i| {
        let body =
            json!({"title": format!("Dune {i}"), "author": "Frank Herbert", "isbn": DUNE_13});
        let app = &app;
        async move { app.send_json(Method::POST, BOOKS, &body, &[]).await }
    });
    let replies = join_all(creates).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        11,
        "{statuses:?}"
    );
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn a_batch_repeating_an_isbn_is_422_and_one_with_a_taken_isbn_is_409_and_neither_creates_anything()
 {
    let app = TestApp::spawn().await;
    let first = dune(&app).await;
    let repeated = app
        .send_json(
            Method::POST,
            "/api/v1/books/batch",
            &json!({"books": [
                {"title": "Emma", "author": "Jane Austen", "isbn": "978-0-14-143951-8"},
                {"title": "Persuasion", "author": "Jane Austen"},
                {"title": "Emma again", "author": "Jane Austen", "isbn": "9780141439518"}
            ]}),
            &[],
        )
        .await
        .problem(422);
    assert_eq!(
        repeated["errors"][0]["field"], "books[2].isbn",
        "{repeated}"
    );
    let taken = app
        .request(
            Method::POST,
            "/api/v1/books/batch",
            &[("content-type", "text/csv")],
            Some(b"title,author,isbn\r\nEmma,Jane Austen,\r\nCopy,Anon,0-441-01359-7\r\n"),
        )
        .await
        .problem(409);
    assert_eq!(taken["existing"], format!("{BOOKS}/{}", first["id"]));
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn an_invalid_isbn_or_year_is_422_naming_each_field() {
    let app = TestApp::spawn().await;
    let problem = app
        .send_json(
            Method::POST,
            BOOKS,
            &json!({"title": "Dune", "author": "Frank Herbert", "isbn": "0-441-01359-8", "published_year": 2101}),
            &[],
        )
        .await
        .problem(422);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["isbn", "published_year"], "{problem}");
    for body in [
        json!({"title": "Dune", "author": "Frank Herbert", "isbn": "12345"}),
        json!({"title": "Dune", "author": "Frank Herbert", "isbn": 9_780_441_013_593_i64}),
        json!({"title": "Dune", "author": "Frank Herbert", "published_year": "1965"}),
        json!({"title": "Dune", "author": "Frank Herbert", "published_year": 1965.5}),
    ] {
        app.send_json(Method::POST, BOOKS, &body, &[])
            .await
            .problem(422);
    }
    assert_eq!(app.count().await, 0);
}

#[actix_web::test]
async fn a_null_in_a_patch_clears_the_isbn_or_year_and_a_put_that_leaves_them_out_clears_both() {
    let app = TestApp::spawn().await;
    let book = dune(&app).await;
    let path = format!("{BOOKS}/{}", book["id"]);
    let merge = [("content-type", "application/merge-patch+json")];
    let reply = app
        .request(
            Method::PATCH,
            &path,
            &merge,
            Some(br#"{"published_year": null}"#),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        (&reply.json()["isbn"], &reply.json()["published_year"]),
        (&json!(DUNE_13), &Value::Null)
    );
    let replaced = app
        .send_json(
            Method::PUT,
            &path,
            &json!({"title": "Dune", "author": "Frank Herbert"}),
            &[],
        )
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.json()["isbn"], Value::Null);
    // The ISBN is free again.
    dune(&app).await;
}

#[actix_web::test]
async fn the_listing_finds_a_book_by_its_isbn_in_any_spelling_and_an_invalid_one_is_400() {
    let app = TestApp::spawn().await;
    let book = dune(&app).await;
    app.create(json!({"title": "Emma", "author": "Jane Austen", "isbn": "9780141439518"}))
        .await;
    for spelling in ["0441013597", "978-0-441-01359-3", "978%200441%2001359%203"] {
        let page = app.get(&format!("{BOOKS}?isbn={spelling}")).await.json();
        assert_eq!(page["items"], json!([book]), "{spelling}");
    }
    app.get(&format!("{BOOKS}?isbn=0441013598"))
        .await
        .problem(400);
}

#[actix_web::test]
async fn csv_import_and_export_carry_the_isbn_and_year_in_the_last_columns() {
    let app = TestApp::spawn().await;
    let reply = app
        .request(
            Method::POST,
            "/api/v1/books/batch",
            &[("content-type", "text/csv")],
            Some(b"published_year,isbn,title,author\r\n-300,,Anabasis,Xenophon\r\n1965,0-441-01359-7,Dune,Frank Herbert\r\n"),
        )
        .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let books = reply.json()["books"].clone();
    assert_eq!(books[0]["published_year"], -300);
    assert_eq!(books[1]["isbn"], DUNE_13);
    let export = app
        .request(
            Method::GET,
            "/api/v1/books/export",
            &[("accept", "text/csv")],
            None,
        )
        .await;
    let text = String::from_utf8(export.body).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "id,title,author,genre,version,created_at,updated_at,isbn,published_year"
    );
    assert!(rows[1].ends_with(",,-300"), "{}", rows[1]);
    assert!(
        rows[2].ends_with(&format!(",{DUNE_13},1965")),
        "{}",
        rows[2]
    );
}

#[actix_web::test]
async fn the_change_feed_carries_the_isbn_and_year_as_each_change_left_them() {
    let app = TestApp::spawn().await;
    let book = dune(&app).await;
    let path = format!("{BOOKS}/{}", book["id"]);
    app.send_json(Method::PATCH, &path, &json!({"isbn": null}), &[])
        .await;
    let changes = app.get("/api/v1/books/changes").await.json();
    let items = changes["items"].as_array().unwrap();
    assert_eq!(items[0]["book"]["isbn"], DUNE_13);
    assert_eq!(items[0]["book"]["published_year"], 1965);
    assert_eq!(items[1]["book"]["isbn"], Value::Null);
    assert_eq!(items[1]["book"]["published_year"], 1965);
}

#[actix_web::test]
async fn the_tutorials_routes_keep_their_shapes_and_leave_the_new_fields_alone() {
    let app = TestApp::spawn().await;
    let book = dune(&app).await;
    let id = book["id"].as_i64().unwrap();
    assert_eq!(
        app.get(&format!("/booksApi/{id}")).await.json(),
        json!({"books": {"id": id, "title": "Dune", "author": "Frank Herbert", "genre": null}})
    );
    let updated = app
        .request(Method::PUT, &format!("/booksApi/{id}?genre=SF"), &[], None)
        .await;
    assert_eq!(updated.status, 200);
    let now = app.get(&format!("{BOOKS}/{id}")).await.json();
    assert_eq!(
        (&now["genre"], &now["isbn"], &now["published_year"]),
        (&json!("SF"), &json!(DUNE_13), &json!(1965))
    );
}
