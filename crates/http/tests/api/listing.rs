use actix_web::http::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn seed(app: &TestApp) {
    for (title, author, genre) in [
        ("Beta", "Xavier", Some("Poetry")),
        ("alpha", "Yolanda", None),
        ("Beta", "Zoe", Some("poetry")),
        ("Gamma", "Xavier", None),
        ("Beta", "Yolanda", Some("Drama")),
    ] {
        app.create(json!({"title": title, "author": author, "genre": genre}))
            .await;
    }
}

/// Follows `next_cursor` from `first` and returns every book's (title, id), checking the Link
/// header of each page on the way.
async fn walk(app: &TestApp, first: &str) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..100 {
        let reply = app.get(&path).await;
        assert_eq!(
            reply.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let page = reply.json();
        for book in page["items"].as_array().unwrap() {
            seen.push((
                book["title"].as_str().unwrap().to_owned(),
                book["id"].as_i64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                let link = reply
                    .header("link")
                    .expect("a Link header when there is a next page");
                assert!(
                    link.ends_with("; rel=\"next\"") && link.contains(cursor),
                    "{link}"
                );
                path = link[1..link.find('>').unwrap()].to_owned();
            }
            None => {
                assert!(reply.header("link").is_none());
                return seen;
            }
        }
    }
    panic!("the listing never ended");
}

#[actix_web::test]
async fn an_empty_catalogue_lists_no_items_and_no_cursor() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.get("/api/v1/books").await.json(),
        json!({"items": [], "next_cursor": null})
    );
}

#[actix_web::test]
async fn following_next_cursor_visits_every_book_once_in_each_sort_order() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    for sort in [
        "id",
        "-id",
        "title",
        "-title",
        "author",
        "-author",
        "created_at",
        "-created_at",
    ] {
        let whole = walk(&app, &format!("/api/v1/books?sort={sort}&limit=100")).await;
        assert_eq!(whole.len(), 5, "{sort}");
        let paged = walk(&app, &format!("/api/v1/books?sort={sort}&limit=2")).await;
        assert_eq!(paged, whole, "{sort}");
    }
    let by_title: Vec<String> = walk(&app, "/api/v1/books?sort=title")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut sorted = by_title.clone();
    sorted.sort();
    assert_eq!(by_title, sorted);
}

#[actix_web::test]
async fn the_default_page_holds_twenty_books() {
    let app = TestApp::spawn().await;
    for i in 0..21 {
        app.create(json!({"title": format!("Book {i}"), "author": "A"}))
            .await;
    }
    let page = app.get("/api/v1/books").await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    assert!(page["next_cursor"].is_string());
}

#[actix_web::test]
async fn filters_and_search_are_case_insensitive_and_carried_by_the_cursor() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let titles = |books: Vec<(String, i64)>| books.into_iter().map(|(t, _)| t).collect::<Vec<_>>();
    assert_eq!(
        titles(walk(&app, "/api/v1/books?author=XAVIER&limit=1").await),
        ["Beta", "Gamma"]
    );
    assert_eq!(
        titles(walk(&app, "/api/v1/books?genre=POETRY&limit=1").await),
        ["Beta", "Beta"]
    );
    assert_eq!(titles(walk(&app, "/api/v1/books?q=ALP").await), ["alpha"]);
    assert_eq!(
        titles(walk(&app, "/api/v1/books?q=yol&sort=-title&limit=1").await),
        ["alpha", "Beta"]
    );
}

#[actix_web::test]
async fn a_cursor_used_with_another_sort_or_filter_is_400() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let page: Value = app.get("/api/v1/books?sort=title&limit=1").await.json();
    let cursor = page["next_cursor"].as_str().unwrap();
    app.get(&format!("/api/v1/books?sort=-title&cursor={cursor}"))
        .await
        .problem(400);
    app.get(&format!("/api/v1/books?author=Zoe&cursor={cursor}"))
        .await
        .problem(400);
    assert_eq!(
        app.get(&format!("/api/v1/books?sort=title&cursor={cursor}"))
            .await
            .status,
        200
    );
    let mut tampered = cursor.to_owned();
    tampered.replace_range(2..3, if &cursor[2..3] == "A" { "B" } else { "A" });
    app.get(&format!("/api/v1/books?cursor={tampered}"))
        .await
        .problem(400);
}

#[actix_web::test]
async fn a_book_created_between_pages_is_reached_once() {
    let app = TestApp::spawn().await;
    seed(&app).await;
    let page: Value = app.get("/api/v1/books?limit=2").await.json();
    let mut ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_i64().unwrap())
        .collect();
    app.send_json(
        Method::POST,
        "/api/v1/books",
        &json!({"title": "Late", "author": "A"}),
        &[],
    )
    .await;
    let rest = walk(
        &app,
        &format!(
            "/api/v1/books?limit=2&cursor={}",
            page["next_cursor"].as_str().unwrap()
        ),
    )
    .await;
    ids.extend(rest.into_iter().map(|(_, id)| id));
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids);
    assert_eq!(ids.len(), 6);
}
