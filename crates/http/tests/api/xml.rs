//! XML beside JSON: the same books, read and written as `<book>` elements, negotiated by
//! `Accept` and `Content-Type`, checked as strictly, and never a way in for a hostile document.

use actix_web::http::Method;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp};

const BOOKS: &str = "/api/v1/books";
const XML: &str = "application/xml";

fn text(reply: &Reply) -> String {
    String::from_utf8(reply.body.clone()).unwrap()
}

/// Sends `body` as `application/xml`.
async fn send_xml(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut all = vec![("content-type", XML)];
    all.extend_from_slice(headers);
    app.request(method, path, &all, Some(body.as_bytes())).await
}

async fn get_xml(app: &TestApp, path: &str) -> Reply {
    app.request(Method::GET, path, &[("accept", XML)], None)
        .await
}

#[actix_web::test]
async fn a_book_reads_as_xml_with_one_element_per_field_and_no_null_ones() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Dune & <Sons>", "author": "Frank Herbert", "isbn": "0441013597"}))
        .await;
    let path = format!("{BOOKS}/{}", book["id"]);
    let reply = get_xml(&app, &path).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(XML));
    let body = text(&reply);
    let expected = format!(
        "<book><id>{}</id><title>Dune &amp; &lt;Sons&gt;</title><author>Frank Herbert</author>\
         <isbn>9780441013593</isbn><version>1</version><created_at>{}</created_at>\
         <updated_at>{}</updated_at></book>",
        book["id"],
        book["created_at"].as_str().unwrap(),
        book["updated_at"].as_str().unwrap()
    );
    assert_eq!(body, expected);
    // Each representation has its own strong validator; either one names the version.
    let json_tag = app.get(&path).await.header("etag").unwrap().to_owned();
    let xml_tag = reply.header("etag").unwrap().to_owned();
    assert_ne!(json_tag, xml_tag);
    assert!(reply.header("vary").is_some_and(|v| v.contains("Accept")));
    for tag in [&json_tag, &xml_tag] {
        let cached = app
            .request(
                Method::GET,
                &path,
                &[("accept", XML), ("if-none-match", tag)],
                None,
            )
            .await;
        assert_eq!(cached.status, 304, "{tag}");
        assert_eq!(cached.header("etag"), Some(xml_tag.as_str()));
    }
    let patched = app
        .request(
            Method::PATCH,
            &path,
            &[
                ("content-type", "application/merge-patch+json"),
                ("if-match", &xml_tag),
                ("accept", XML),
            ],
            Some(br#"{"genre": "Science fiction"}"#),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", text(&patched));
    // A patch is JSON, its answer in the representation asked for, with that one's new tag.
    assert_eq!(patched.header("content-type"), Some(XML));
    let body = text(&patched);
    assert!(
        body.contains("<genre>Science fiction</genre>") && body.contains("<version>2</version>"),
        "{body}"
    );
    assert!(
        patched
            .header("etag")
            .is_some_and(|tag| tag.ends_with("-2-xml\""))
    );
    // A stale tag of either representation is refused, and nothing changes.
    for stale in [&json_tag, &xml_tag] {
        app.request(
            Method::PATCH,
            &path,
            &[
                ("content-type", "application/merge-patch+json"),
                ("if-match", stale),
            ],
            Some(br#"{"genre": "Other"}"#),
        )
        .await
        .problem(412);
    }
    assert_eq!(app.get(&path).await.json()["genre"], "Science fiction");
}

#[actix_web::test]
async fn accept_weights_choose_the_representation_and_what_is_not_offered_is_406() {
    let app = TestApp::spawn().await;
    let book = app
        .create(json!({"title": "Emma", "author": "Jane Austen"}))
        .await;
    let path = format!("{BOOKS}/{}", book["id"]);
    for (accept, expected) in [
        ("application/json;q=0.5, application/xml", XML),
        (
            "application/xml;q=0.4, application/json;q=0.6",
            "application/json",
        ),
        ("application/*", "application/json"),
        ("text/html, application/xml;q=0.1", XML),
        ("*/*", "application/json"),
    ] {
        let reply = app
            .request(Method::GET, &path, &[("accept", accept)], None)
            .await;
        assert_eq!(reply.status, 200, "{accept}");
        assert_eq!(reply.header("content-type"), Some(expected), "{accept}");
    }
    for accept in ["text/html", "application/xml;q=0, application/json;q=0"] {
        let reply = app
            .request(Method::GET, &path, &[("accept", accept)], None)
            .await;
        reply.problem(406);
    }
}

#[actix_web::test]
async fn a_page_as_xml_carries_its_cursor_as_an_attribute() {
    let app = TestApp::spawn().await;
    for title in ["One", "Two", "Three"] {
        app.create(json!({"title": title, "author": "A"})).await;
    }
    let first = get_xml(&app, &format!("{BOOKS}?limit=2")).await;
    assert_eq!(first.status, 200);
    let body = text(&first);
    let cursor = body
        .strip_prefix("<books next_cursor=\"")
        .and_then(|rest| rest.split_once('"'))
        .map(|(cursor, _)| cursor.to_owned())
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(body.matches("<book>").count(), 2, "{body}");
    let second = text(&get_xml(&app, &format!("{BOOKS}?cursor={cursor}")).await);
    assert!(second.starts_with("<books><book>"), "{second}");
    assert!(second.contains("<title>Three</title>"), "{second}");
    let none = text(&get_xml(&app, &format!("{BOOKS}?author=nobody")).await);
    assert_eq!(none, "<books/>");
}

#[actix_web::test]
async fn a_book_created_and_replaced_from_xml_is_checked_like_json() {
    let app = TestApp::spawn().await;
    let created = send_xml(
        &app,
        Method::POST,
        BOOKS,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<book>\n  <title> Dune </title>\n  \
         <author>Frank Herbert</author>\n  <genre/>\n  <published_year>1965</published_year>\n</book>",
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{}", text(&created));
    // Answered in the representation it was sent in, unless the client asks for another.
    assert_eq!(created.header("content-type"), Some(XML));
    let location = created.header("location").unwrap().to_owned();
    let book = app.get(&location).await.json();
    assert_eq!(
        (&book["title"], &book["genre"], &book["published_year"]),
        (&json!("Dune"), &Value::Null, &json!(1965))
    );
    let as_json = send_xml(
        &app,
        Method::POST,
        BOOKS,
        "<book><title>Emma</title><author>Jane Austen</author></book>",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(as_json.status, 201);
    assert_eq!(as_json.json()["title"], "Emma");

    let tag = get_xml(&app, &location)
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let replaced = send_xml(
        &app,
        Method::PUT,
        &location,
        "<book><title>Dune Messiah</title><author>Frank Herbert</author></book>",
        &[("if-match", &tag)],
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", text(&replaced));
    assert!(text(&replaced).contains("<title>Dune Messiah</title>"));
    assert!(
        !text(&replaced).contains("published_year"),
        "a replacement clears what it leaves out"
    );

    let invalid = send_xml(
        &app,
        Method::POST,
        BOOKS,
        "<book><title></title><author>A</author><published_year>MCMLXV</published_year>\
         <isbn>123</isbn><colour>red</colour><author>B</author></book>",
        &[],
    )
    .await
    .problem(422);
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["author"],
        "a repeated element is named first: {invalid}"
    );
    let invalid = send_xml(
        &app,
        Method::POST,
        BOOKS,
        "<book><title></title><author>A</author><published_year>MCMLXV</published_year>\
         <isbn>123</isbn><colour>red</colour></book>",
        &[],
    )
    .await
    .problem(422);
    let mut fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["colour", "isbn", "published_year", "title"],
        "{invalid}"
    );
    let nested = send_xml(
        &app,
        Method::POST,
        BOOKS,
        "<book><title><b>Dune</b></title><author>A</author></book>",
        &[],
    )
    .await
    .problem(422);
    assert_eq!(nested["errors"][0]["field"], "title", "{nested}");
    send_xml(
        &app,
        Method::POST,
        BOOKS,
        "<novel><title>Dune</title></novel>",
        &[],
    )
    .await
    .problem(422);
    assert_eq!(app.count().await, 2);
}

#[actix_web::test]
async fn a_hostile_xml_document_is_400_before_it_is_read_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let laughs = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">\
                  <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\
                  <book><title>&lol2;</title><author>A</author></book>";
    let external = "<?xml version=\"1.0\"?><!DOCTYPE book [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
                    <book><title>&xxe;</title><author>A</author></book>";
    let undeclared = "<book><title>&xxe;</title><author>A</author></book>";
    let deep = format!(
        "<book><title>T</title><author>A</author>{}{}</book>",
        "<x>".repeat(64),
        "</x>".repeat(64)
    );
    let malformed = "<book><title>T</author></book>";
    let two_roots = "<book><title>T</title><author>A</author></book><book/>";
    let not_utf8: &[u8] = b"<book><title>\xff</title><author>A</author></book>";
    for (name, body) in [
        ("billion laughs", laughs.as_bytes()),
        ("external entity", external.as_bytes()),
        ("undeclared entity", undeclared.as_bytes()),
        ("65 levels", deep.as_bytes()),
        ("malformed", malformed.as_bytes()),
        ("two roots", two_roots.as_bytes()),
        ("not UTF-8", not_utf8),
    ] {
        let reply = app
            .request(Method::POST, BOOKS, &[("content-type", XML)], Some(body))
            .await;
        let problem = reply.problem(400);
        assert!(problem["detail"].is_string(), "{name}: {problem}");
    }
    // 64 levels are fine as XML; the extra element is then an unknown field.
    let deep_enough = format!(
        "<book><title>T</title><author>A</author>{}{}</book>",
        "<x>".repeat(62),
        "</x>".repeat(62)
    );
    send_xml(&app, Method::POST, BOOKS, &deep_enough, &[])
        .await
        .problem(422);
    // Character references and the predefined entities are text like any other.
    let fine = send_xml(
        &app,
        Method::POST,
        BOOKS,
        "<book><title>Caf&#233; &amp; Cr&#xE8;me</title><author>&quot;A&quot;</author></book>",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(fine.status, 201, "{}", text(&fine));
    assert_eq!(fine.json()["title"], "Café & Crème");
    assert_eq!(app.count().await, 1);
}

#[actix_web::test]
async fn a_batch_in_xml_is_created_whole_or_refused_naming_each_book() {
    let app = TestApp::spawn().await;
    let refused = send_xml(
        &app,
        Method::POST,
        &format!("{BOOKS}/batch"),
        "<books><book><title>One</title><author>A</author></book>\
         <book><title></title><author>B</author></book></books>",
        &[],
    )
    .await
    .problem(422);
    assert_eq!(refused["errors"][0]["field"], "books[1].title", "{refused}");
    assert_eq!(app.count().await, 0);
    let created = send_xml(
        &app,
        Method::POST,
        &format!("{BOOKS}/batch"),
        "<books><book><title>One</title><author>A</author></book>\
         <book><title>Two</title><author>B</author><isbn>978-0-441-01359-3</isbn></book></books>",
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{}", text(&created));
    let body = text(&created);
    assert!(body.starts_with("<books><book><id>"), "{body}");
    assert_eq!(body.matches("<book>").count(), 2, "{body}");
    send_xml(
        &app,
        Method::POST,
        &format!("{BOOKS}/batch"),
        "<books/>",
        &[],
    )
    .await
    .problem(422);
    assert_eq!(app.count().await, 2);
}

#[actix_web::test]
async fn an_export_as_xml_is_one_books_element_around_every_book() {
    let app = TestApp::spawn().await;
    let none = get_xml(&app, &format!("{BOOKS}/export")).await;
    assert_eq!(text(&none), "<books></books>");
    for n in 0..250 {
        app.create(json!({"title": format!("Book {n}"), "author": "A"}))
            .await;
    }
    let reply = get_xml(&app, &format!("{BOOKS}/export")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some(XML));
    let body = text(&reply);
    assert!(body.starts_with("<books><book>") && body.ends_with("</book></books>"));
    assert_eq!(body.matches("<book>").count(), 250);
    // Each book as the listing writes it, in the same order.
    let listed = text(&get_xml(&app, &format!("{BOOKS}?limit=100")).await);
    let books_of = |document: &str| -> Vec<String> {
        document
            .split("<book>")
            .skip(1)
            .map(|rest| rest.split("</book>").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(books_of(&body)[..100], books_of(&listed)[..]);
}
