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
