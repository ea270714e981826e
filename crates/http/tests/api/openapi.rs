use std::collections::HashSet;

use books_http::document_json;
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

#[actix_web::test]
async fn the_served_document_is_the_committed_one() {
    let app = TestApp::spawn().await;
    let reply = app.get("/api-docs/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(String::from_utf8(reply.body).unwrap(), committed());
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
    assert_eq!(ids.len(), 13);
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
                // A book of its own for each request, so that a delete or a replace of one
                // example never stands in another's way.
                let book = app
                    .create(serde_json::json!({"title": "Target", "author": "Someone"}))
                    .await;
                let target = path.replace("{id}", &book["id"].to_string());
                let body = if media_type.ends_with("json") {
                    example.to_string()
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
    // Create and replace (JSON), patch (two media types), and the tutorial's create and update.
    assert!(sent >= 6, "only {sent} examples were sent");
}
