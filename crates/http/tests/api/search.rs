//! `GET /api/v1/books/search`: the contract's rules, end to end.

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const SEARCH: &str = "/api/v1/books/search";

async fn catalogue(app: &TestApp) {
    let reply = app
        .send_json(
            Method::POST,
            "/api/v1/books/batch",
            &json!({"books": [
                {"title": "Pride and Prejudice", "author": "Jane Austen", "genre": "Classic", "isbn": "9780141439518"},
                {"title": "Emma", "author": "Jane Austen", "genre": "Classic"},
                {"title": "Cien años de soledad", "author": "Gabriel García Márquez", "genre": "Novel"},
                {"title": "Dune", "author": "Frank Herbert", "genre": "Science fiction"},
                {"title": "Dune Messiah", "author": "Frank Herbert", "genre": "Science fiction"},
                {"title": "<script>alert(1)</script> & Dune", "author": "Mallory"}
            ]}),
            &[],
        )
        .await;
    assert_eq!(reply.status, 201);
}

fn titles(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["book"]["title"].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn a_search_with_typos_finds_the_book_first_with_a_score_and_a_highlight() {
    let app = TestApp::spawn().await;
    catalogue(&app).await;
    let page = app
        .get(&format!("{SEARCH}?q=pride%20and%20prejudise"))
        .await;
    assert_eq!(page.status, 200);
    let page = page.json();
    assert_eq!(titles(&page)[0], "Pride and Prejudice");
    let first = &page["items"][0];
    assert_eq!(
        first["highlight"]["title"],
        "<em>Pride</em> <em>and</em> <em>Prejudice</em>"
    );
    assert_eq!(first["book"]["isbn"], "9780141439518");
    let score = first["score"].as_f64().unwrap();
    assert!(score > 0.0 && score <= 1.0, "{score}");
    assert_eq!(page["total_capped"], false);
    let accents = app
        .get(&format!("{SEARCH}?q=garcia%20marquez"))
        .await
        .json();
    assert_eq!(titles(&accents), ["Cien años de soledad"]);
    assert_eq!(
        accents["items"][0]["highlight"]["author"],
        "Gabriel <em>García</em> <em>Márquez</em>"
    );
}

#[actix_web::test]
async fn results_are_ranked_paged_counted_and_faceted_over_every_result() {
    let app = TestApp::spawn().await;
    catalogue(&app).await;
    let page = app
        .get(&format!("{SEARCH}?q=dune&facets=genre,author"))
        .await
        .json();
    assert_eq!(
        titles(&page),
        ["Dune", "Dune Messiah", "<script>alert(1)</script> & Dune"]
    );
    let scores: Vec<f64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert_eq!(page["total"], 3);
    assert_eq!(
        page["facets"]["genre"],
        json!([{"value": "Science fiction", "count": 2}])
    );
    assert_eq!(
        page["facets"]["author"][0],
        json!({"value": "Frank Herbert", "count": 2})
    );
    assert_eq!(
        page["items"][2]["highlight"]["title"],
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; <em>Dune</em>"
    );
    let second = app
        .get(&format!(
            "{SEARCH}?q=dune&limit=1&offset=1&genre=science%20FICTION"
        ))
        .await
        .json();
    assert_eq!(titles(&second), ["Dune Messiah"]);
    assert_eq!(second["total"], 2);
    assert!(second.get("facets").is_none());
    // As the user types: the last word is a prefix.
    let typing = app.get(&format!("{SEARCH}?q=frank%20her")).await.json();
    assert_eq!(titles(&typing), ["Dune", "Dune Messiah"]);
    let isbn = app
        .get(&format!("{SEARCH}?q=978-0-14-143951-8"))
        .await
        .json();
    assert_eq!(titles(&isbn)[0], "Pride and Prejudice");
}

#[actix_web::test]
async fn a_write_is_searchable_as_soon_as_it_is_acknowledged() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Zanzibar Nocturne", "author": "Anon"}))
        .await;
    let found = app.get(&format!("{SEARCH}?q=zanzibar")).await.json();
    assert_eq!(found["items"][0]["book"]["id"], book["id"]);
    app.send_json(
        Method::PATCH,
        &format!("/api/v1/books/{}", book["id"]),
        &json!({"title": "Quixotic Nocturne"}),
        &[],
    )
    .await;
    assert_eq!(
        app.get(&format!("{SEARCH}?q=zanzibar")).await.json()["total"],
        0
    );
    assert_eq!(
        app.get(&format!("{SEARCH}?q=quixotik")).await.json()["total"],
        1
    );
}

#[actix_web::test]
async fn bad_search_parameters_are_400_problems() {
    let app = TestApp::spawn().await;
    for query in [
        "",
        "?q=",
        "?q=%20%20",
        "?q=%3F!%20-%20%E2%80%94",
        "?q=dune&limit=0",
        "?q=dune&limit=101",
        "?q=dune&offset=1001",
        "?q=dune&offset=-1",
        "?q=dune&facets=isbn",
        "?q=dune&q=emma",
    ] {
        app.get(&format!("{SEARCH}{query}")).await.problem(400);
    }
    let long = "a".repeat(201);
    app.get(&format!("{SEARCH}?q={long}")).await.problem(400);
}

#[actix_web::test]
async fn past_ten_thousand_results_the_total_is_capped_and_says_so() {
    let app = TestApp::spawn().await;
    for batch in 0..11 {
        let books: Vec<Value> = (0..1000)
            .map(|i| json!({"title": format!("Common tale {batch}-{i}"), "author": "Anon"}))
            .collect();
        let reply = app
            .send_json(
                Method::POST,
                "/api/v1/books/batch",
                &json!({ "books": books }),
                &[],
            )
            .await;
        assert_eq!(reply.status, 201);
    }
    let page = app
        .get(&format!("{SEARCH}?q=common&facets=author"))
        .await
        .json();
    assert_eq!(
        (&page["total"], &page["total_capped"]),
        (&json!(10000), &json!(true))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 20);
    assert_eq!(
        page["facets"]["author"],
        json!([{"value": "Anon", "count": 10000}])
    );
}

#[actix_web::test]
async fn books_written_through_the_tutorials_routes_are_searchable_at_once() {
    let app = TestApp::spawn().await;
    let created = app
        .request(
            Method::POST,
            "/booksApi?title=Wuthering%20Heights&author=Emily%20Bronte",
            &[],
            None,
        )
        .await;
    assert_eq!(created.status, 201);
    let id = created.json()["Book"]["id"].as_i64().unwrap();
    let found = app
        .get(&format!("{SEARCH}?q=wutherin%20hieghts"))
        .await
        .json();
    assert_eq!(found["items"][0]["book"]["id"], id);
    let updated = app
        .request(
            Method::PUT,
            &format!("/booksApi/{id}?title=Agnes%20Grey"),
            &[],
            None,
        )
        .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        app.get(&format!("{SEARCH}?q=wuthering")).await.json()["total"],
        0
    );
    assert_eq!(
        app.get(&format!("{SEARCH}?q=agnes")).await.json()["total"],
        1
    );
}
