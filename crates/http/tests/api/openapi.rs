use std::collections::HashSet;

use books_http::{document_3_0_json, document_json};
use serde_json::Value;

use crate::helpers::TestApp;

pub(crate) fn committed() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi/openapi.json");
    std::fs::read_to_string(path).expect("openapi/openapi.json is committed")
}

#[test]
fn the_committed_document_is_what_the_code_generates() {
    assert!(
        committed() == document_json(),
        "openapi/openapi.json is stale: run `cargo run -p books-http -- openapi > openapi/openapi.json` and commit it"
    );
}

fn committed_3_0() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../openapi/openapi-3.0.json"
    );
    std::fs::read_to_string(path).expect("openapi/openapi-3.0.json is committed")
}

#[test]
fn the_committed_3_0_rendering_is_what_the_code_generates() {
    assert!(
        committed_3_0() == document_3_0_json(),
        "openapi/openapi-3.0.json is stale: run `cargo run -p books-http -- openapi --spec-version 3.0 > openapi/openapi-3.0.json` and commit it"
    );
}

#[test]
fn the_3_0_rendering_uses_no_3_1_construct_and_describes_the_same_operations() {
    let down: Value = serde_json::from_str(&document_3_0_json()).unwrap();
    let up: Value = serde_json::from_str(&document_json()).unwrap();
    assert_eq!(down["openapi"], "3.0.3");
    let text = down.to_string();
    for only_3_1 in [
        r#""type":["#,
        r#"{"type":"null"}"#,
        r#""const":"#,
        r#""identifier":"#,
    ] {
        assert!(
            !text.contains(only_3_1),
            "the 3.0 rendering still has {only_3_1}"
        );
    }
    let operations = |doc: &Value| -> Vec<String> {
        let mut ids: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(operations(&down), operations(&up));
    // Book.genre is nullable in both.
    assert_eq!(
        down["components"]["schemas"]["BookResponse"]["properties"]["genre"]["nullable"],
        true
    );
}

#[actix_web::test]
async fn the_served_documents_are_the_committed_ones() {
    let app = TestApp::spawn().await;
    let reply = app.get("/api-docs/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(String::from_utf8(reply.body).unwrap(), committed());
    let reply = app.get("/api-docs/openapi-3.0.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(String::from_utf8(reply.body).unwrap(), committed_3_0());
}

#[test]
fn every_operation_has_a_unique_id_a_summary_and_described_responses() {
    let document: Value = serde_json::from_str(&document_json()).unwrap();
    let mut ids = HashSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
            assert!(operation["summary"].is_string(), "{id} has no summary");
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{id} {status} has no description"
                );
            }
        }
    }
    assert_eq!(ids.len(), 24);
    assert!(document["info"]["license"]["name"].is_string());
    assert!(!document["servers"].as_array().unwrap().is_empty());
}

/// The example a request body's media type gives, itself or through its schema.
fn example_of(document: &Value, media: &Value) -> Option<Value> {
    if let Some(example) = media.get("example") {
        return Some(example.clone());
    }
    let reference = media["schema"]["$ref"].as_str()?;
    let name = reference.rsplit('/').next()?;
    document["components"]["schemas"][name]
        .get("example")
        .cloned()
}

fn form_encoded(example: &Value) -> String {
    example
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| format!("{name}={}", value.as_str().unwrap_or("").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&")
}

#[actix_web::test]
async fn every_documented_request_example_is_accepted_by_the_live_service() {
    let app = TestApp::spawn().await;
    let document: Value = serde_json::from_str(&committed()).unwrap();
    let mut sent = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(content) = operation["requestBody"]["content"].as_object() else {
                continue;
            };
            for (media_type, media) in content {
                let Some(example) = example_of(&document, media) else {
                    continue;
                };
                // A catalogue of one book for each request, so that a delete or a replace of
                // one example, or the ISBN another example gave a book, never stands in its way.
                for listed in app.get("/api/v1/books?limit=100").await.json()["items"]
                    .as_array()
                    .unwrap()
                {
                    let gone = app
                        .request(
                            actix_web::http::Method::DELETE,
                            &format!("/api/v1/books/{}", listed["id"]),
                            &[],
                            None,
                        )
                        .await;
                    assert_eq!(gone.status, 204);
                }
                let book = app
                    .create(serde_json::json!({"title": "Target", "author": "Someone"}))
                    .await;
                let target = path.replace("{id}", &book["id"].to_string());
                let body = if media_type.ends_with("json") {
                    example.to_string()
                } else if let Some(text) = example.as_str() {
                    // A text body (CSV) is its example as it stands.
                    text.to_owned()
                } else {
                    form_encoded(&example)
                };
                let method =
                    actix_web::http::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let reply = app
                    .request(
                        method.clone(),
                        &target,
                        &[("content-type", media_type)],
                        Some(body.as_bytes()),
                    )
                    .await;
                assert!(
                    (200..300).contains(&reply.status),
                    "{method} {path} ({media_type}) refused its own example {body}: {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                );
                sent += 1;
            }
        }
    }
    // Create and replace (JSON), patch (two media types), batch create (JSON and CSV), and the
    // tutorial's create and update.
    assert!(sent >= 8, "only {sent} examples were sent");
}
