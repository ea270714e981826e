//! The same API as OpenAPI 3.0.3, for the code generators that read only 3.0.
//!
//! It is derived from the 3.1 document rather than generated separately, so the two can never
//! describe different APIs. OpenAPI 3.1 schemas are JSON Schema 2020-12; 3.0 schemas are an older,
//! extended subset. What this service's document uses that 3.0 spells differently:
//!
//! | 3.1 | 3.0 |
//! |---|---|
//! | `"type": ["string", "null"]` | `"type": "string", "nullable": true` |
//! | `"oneOf": [{"type": "null"}, X]` | `"allOf": [X], "nullable": true` (one `X`), or `"oneOf"` of the rest, nullable |
//! | `"const": v` | `"enum": [v]` |
//! | `"examples": [v, …]` in a schema | `"example": v` |
//! | `"exclusiveMinimum": n` | `"minimum": n, "exclusiveMinimum": true` (same for maximum) |
//! | `info.license.identifier` | left out (3.0 has only `name` and `url`) |
//!
//! and 3.1-only members (`jsonSchemaDialect`, `webhooks`, `$schema`, `contentMediaType`,
//! `contentEncoding`) are left out.

use serde_json::{Map, Value, json};

/// The 3.0.3 rendering of a 3.1 document.
pub fn downgrade(mut document: Value) -> Value {
    if let Some(top) = document.as_object_mut() {
        top.insert("openapi".to_owned(), json!("3.0.3"));
        top.remove("jsonSchemaDialect");
        top.remove("webhooks");
        if let Some(license) = top
            .get_mut("info")
            .and_then(|info| info.get_mut("license"))
            .and_then(Value::as_object_mut)
        {
            license.remove("identifier");
        }
    }
    walk(&mut document);
    document
}

/// Rewrites every schema found anywhere below `value` (members named `schema`, the entries of
/// `components.schemas`, and everything nested in them alike: the rewrites only touch keywords
/// that mean nothing else in OpenAPI).
fn walk(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for child in object.values_mut() {
                walk(child);
            }
            if looks_like_a_schema(object) {
                rewrite_schema(object);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}

fn looks_like_a_schema(object: &Map<String, Value>) -> bool {
    [
        "type",
        "oneOf",
        "anyOf",
        "const",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "$ref",
    ]
    .iter()
    .any(|keyword| object.contains_key(*keyword))
        || object.get("examples").is_some_and(Value::is_array)
}

fn rewrite_schema(schema: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = schema.get("type").cloned() {
        let others: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
        if others.len() < types.len() {
            schema.insert("nullable".to_owned(), json!(true));
        }
        match others.as_slice() {
            [] => {
                schema.remove("type");
            }
            [one] => {
                schema.insert("type".to_owned(), (*one).clone());
            }
            // Several types: 3.0 says it with oneOf.
            many => {
                schema.remove("type");
                let alternatives = many.iter().map(|t| json!({ "type": t })).collect();
                schema.insert("oneOf".to_owned(), Value::Array(alternatives));
            }
        }
    }
    for keyword in ["oneOf", "anyOf"] {
        let Some(Value::Array(alternatives)) = schema.get(keyword).cloned() else {
            continue;
        };
        let is_null = |s: &Value| s.get("type").is_some_and(|t| t == "null");
        if !alternatives.iter().any(is_null) {
            continue;
        }
        let rest: Vec<Value> = alternatives.into_iter().filter(|s| !is_null(s)).collect();
        schema.remove(keyword);
        schema.insert("nullable".to_owned(), json!(true));
        match rest.len() {
            0 => {}
            1 => {
                schema.insert("allOf".to_owned(), Value::Array(rest));
            }
            _ => {
                schema.insert(keyword.to_owned(), Value::Array(rest));
            }
        }
    }
    if let Some(value) = schema.remove("const") {
        schema.insert("enum".to_owned(), json!([value]));
    }
    if let Some(Value::Array(examples)) = schema.remove("examples")
        && let Some(first) = examples.into_iter().next()
    {
        schema.entry("example").or_insert(first);
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(limit) = schema.get(exclusive).filter(|v| v.is_number()).cloned() {
            schema.insert(bound.to_owned(), limit);
            schema.insert(exclusive.to_owned(), json!(true));
        }
    }
    for only_3_1 in ["$schema", "contentMediaType", "contentEncoding"] {
        schema.remove(only_3_1);
    }
    // A `$ref` with siblings is a 3.1 idiom; 3.0 ignores the siblings, so wrap the reference
    // when it carries something that matters (nullable).
    if schema.contains_key("nullable")
        && let Some(reference) = schema.remove("$ref")
    {
        schema.insert("allOf".to_owned(), json!([{ "$ref": reference }]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_lists_and_null_alternatives_become_nullable() {
        let document = json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1", "license": {"name": "MIT", "identifier": "MIT"}},
            "components": {"schemas": {"A": {"type": "object", "properties": {
                "genre": {"type": ["string", "null"], "maxLength": 250},
                "next": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/B"}]},
                "kind": {"const": "x"},
                "n": {"type": "integer", "exclusiveMinimum": 0, "examples": [3]}
            }}}}
        });
        let down = downgrade(document);
        assert_eq!(down["openapi"], "3.0.3");
        assert!(down["info"]["license"].get("identifier").is_none());
        let properties = &down["components"]["schemas"]["A"]["properties"];
        assert_eq!(
            properties["genre"],
            json!({"type": "string", "nullable": true, "maxLength": 250})
        );
        assert_eq!(
            properties["next"],
            json!({"nullable": true, "allOf": [{"$ref": "#/components/schemas/B"}]})
        );
        assert_eq!(properties["kind"], json!({"enum": ["x"]}));
        assert_eq!(
            properties["n"],
            json!({"type": "integer", "minimum": 0, "exclusiveMinimum": true, "example": 3})
        );
    }
}
