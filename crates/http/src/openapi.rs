//! The OpenAPI document, generated from the handlers' annotations.
//!
//! The error responses every operation shares are added here, by one rule, rather than repeated
//! on each handler: a handler lists only what is particular to it.

use books_domain::{BookField, FieldKind};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::xml::XmlBuilder;
use utoipa::openapi::{Components, ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::representation::problem::PROBLEM_JSON;
use crate::representation::rules;
use crate::representation::schemas::{
    BookBatch, BookBatchInput, BookInput, BookPage, BookPatchInput, BookResponse,
    ChangeKindResponse, ChangePageResponse, ChangeResponse, FieldViolation, Problem,
};
use crate::representation::xml::XML;
use crate::routes::legacy::LEGACY_FIELDS;
use crate::routes::search::{FacetCount, SearchFacets, SearchHighlight, SearchItem, SearchPage};
use crate::routes::webhooks::{
    DeliveryList, DeliveryResponse, EventName, NewSubscriptionInput, ReplayInput, Resumable,
    StatusName, SubscriptionList, SubscriptionPatchInput, SubscriptionResponse,
};
use crate::routes::{batch_and_export, books, change_feed, legacy, operations, search, webhooks};

/// The API's description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Books API",
        version = "1.0.0",
        description = "A catalogue of books: create, read, update and delete books, list them with \
            keyset pagination, filters and search. Errors are `application/problem+json` (RFC 9457).",
        license(name = "MIT", identifier = "MIT"),
    ),
    servers(
        (url = "/", description = "The server that serves this document"),
        (url = "http://127.0.0.1:8080", description = "A local books-api with the default bind address"),
    ),
    paths(
        books::list_books,
        books::create_book,
        books::get_book,
        books::replace_book,
        books::patch_book,
        books::delete_book,
        batch_and_export::create_books,
        batch_and_export::export_books,
        change_feed::list_changes,
        search::search_books,
        webhooks::create_webhook,
        webhooks::list_webhooks,
        webhooks::get_webhook,
        webhooks::update_webhook,
        webhooks::delete_webhook,
        webhooks::list_deliveries,
        webhooks::replay_webhook,
        legacy::list,
        legacy::create,
        legacy::get,
        legacy::update,
        legacy::delete,
        operations::healthz,
        operations::readyz,
    ),
    components(schemas(
        BookResponse, BookPage, BookInput, BookPatchInput, BookBatchInput, BookBatch,
        ChangeResponse, ChangeKindResponse, ChangePageResponse, Problem, FieldViolation,
        SearchPage, SearchItem, SearchHighlight, SearchFacets, FacetCount,
        SubscriptionResponse, SubscriptionList, NewSubscriptionInput, SubscriptionPatchInput,
        ReplayInput, DeliveryResponse, DeliveryList, EventName, StatusName, Resumable
    )),
    tags(
        (name = "books", description = "The catalogue"),
        (name = "webhooks", description = "The catalogue's changes pushed to your URL: signed (Standard Webhooks), in order, retried, replayable. Subscriptions belong to the key that made them"),
        (name = "booksApi", description = "The routes of the original Flask tutorial, kept for its clients (deprecated: use /api/v1)"),
        (name = "service", description = "Health of the service"),
    ),
    modifiers(&SharedErrorResponses),
)]
pub struct ApiDoc;

/// The document as `books-api openapi` prints it and `openapi/openapi.json` holds it.
pub fn document_json() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

/// The same API as OpenAPI 3.0.3 (see [`crate::openapi_3_0`]), as `books-api openapi --version
/// 3.0` prints it and `openapi/openapi-3.0.json` holds it.
pub fn document_3_0_json() -> String {
    let document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let mut json =
        serde_json::to_string_pretty(&crate::openapi_3_0::downgrade(document)).unwrap_or_default();
    json.push('\n');
    json
}

/// The name of the OpenID Connect scheme in the live document.
const OPENID_CONNECT: &str = "openIdConnect";

/// `document` (either version) with the OpenID Connect scheme of the issuer described at
/// `discovery_url` beside the bearer one: every operation that takes an API key takes a token
/// too (`write` becomes `books:write`), so that Swagger UI's Authorize offers both. Only the
/// live document has it: the committed ones do not depend on where the service runs.
pub fn with_openid_connect(document: &str, discovery_url: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<serde_json::Value>(document) else {
        return document.to_owned();
    };
    if let Some(schemes) = document
        .pointer_mut("/components/securitySchemes")
        .and_then(serde_json::Value::as_object_mut)
    {
        schemes.insert(
            OPENID_CONNECT.to_owned(),
            serde_json::json!({
                "type": "openIdConnect",
                "openIdConnectUrl": discovery_url,
                "description": "An access token of the OpenID Connect issuer (a JWT with this service's audience). Writes need the `books:write` scope; reads are open.",
            }),
        );
    }
    let operations = document
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let Some(security) = operation
            .get_mut("security")
            .and_then(serde_json::Value::as_array_mut)
        else {
            continue;
        };
        let tokens: Vec<serde_json::Value> = security
            .iter()
            .filter_map(|requirement| requirement.get(BEARER))
            .map(|scopes| {
                let scopes: Vec<&str> = scopes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(serde_json::Value::as_str)
                    .map(|scope| match scope {
                        "write" => crate::middleware::oidc::WRITE_SCOPE,
                        other => other,
                    })
                    .collect();
                serde_json::json!({ OPENID_CONNECT: scopes })
            })
            .collect();
        security.extend(tokens);
    }
    let mut json = serde_json::to_string_pretty(&document).unwrap_or_default();
    json.push('\n');
    json
}

struct SharedErrorResponses;

fn problem(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn retry_later(description: &str) -> Response {
    let mut response = problem(description);
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .build();
    response.headers.insert(
        "Retry-After".to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        ),
    );
    response
}

/// The name of the bearer scheme in the document.
const BEARER: &str = "bearerAuth";

/// The body schemas whose members are a book's fields, and which of [`BookField::ALL`] each has.
fn field_schemas() -> [(&'static str, Vec<BookField>); 4] {
    [
        ("BookInput", BookField::ALL.to_vec()),
        ("BookPatchInput", BookField::ALL.to_vec()),
        ("LegacyNewFields", LEGACY_FIELDS.to_vec()),
        ("LegacyFields", LEGACY_FIELDS.to_vec()),
    ]
}

/// Whether a field of a schema must be non-blank text: a required field of a create. A patch and
/// the tutorial's update may leave any field out, but a required one they give must be text.
fn required_text(schema: &str, field: BookField) -> bool {
    field.required() && schema != "LegacyFields"
}

/// Sets a string schema's pattern. The pattern bounds the length once trimmed, which a length
/// limit on the raw text cannot say (surrounding white space is allowed and trimmed).
fn restrict(schema: &mut RefOr<Schema>, pattern: String) {
    if let RefOr::T(Schema::Object(object)) = schema {
        object.pattern = Some(pattern);
        object.max_length = None;
        object.min_length = None;
    }
}

/// Writes every rule the service checks on strings into the document (see [`crate::rules`]).
fn state_the_rules(openapi: &mut utoipa::openapi::OpenApi) {
    if let Some(components) = openapi.components.as_mut() {
        // A subscription's events are each named once; its bodies take no other members.
        for name in [
            "NewSubscriptionInput",
            "SubscriptionPatchInput",
            "ReplayInput",
        ] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                object.additional_properties =
                    Some(Box::new(AdditionalProperties::FreeForm(false)));
                if let Some(RefOr::T(Schema::Array(events))) = object.properties.get_mut("events") {
                    events.unique_items = true;
                }
                // A description is read as a genre is (trimmed, blank for none, no control
                // character): the same pattern.
                if let Some(description) = object.properties.get_mut("description") {
                    restrict(description, rules::optional_text());
                }
            }
        }
        // The readers refuse members they do not know (422): say so.
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut("BookBatchInput")
        {
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
        for (name, fields) in field_schemas() {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) else {
                continue;
            };
            object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            for field in fields {
                let Some(schema) = object.properties.get_mut(field.name()) else {
                    continue;
                };
                // Text fields get the trimmed-length pattern, ISBNs theirs; a year states its
                // bounds on the schema itself.
                match field.kind() {
                    FieldKind::Text if required_text(name, field) => {
                        restrict(schema, rules::required_text());
                    }
                    FieldKind::Text => restrict(schema, rules::optional_text()),
                    FieldKind::Isbn => restrict(schema, rules::isbn()),
                    FieldKind::Year => {}
                }
            }
        }
    }
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let search = operation.operation_id.as_deref() == Some("searchBooks");
            for parameter in operation.parameters.iter_mut().flatten() {
                let RefOr::T(parameter) = parameter else {
                    continue;
                };
                let pattern = match (&parameter.parameter_in, parameter.name.as_str()) {
                    (ParameterIn::Query, "q") if search => rules::search_text(),
                    (ParameterIn::Query, "author" | "genre" | "q") => rules::optional_text(),
                    (ParameterIn::Query, "isbn") => rules::isbn(),
                    (ParameterIn::Header, "If-Match" | "If-None-Match") => {
                        rules::CONDITION.to_owned()
                    }
                    _ => continue,
                };
                if let Some(schema) = parameter.schema.as_mut() {
                    restrict(schema, pattern);
                }
            }
        }
    }
}

/// The XML schemas, made from the JSON ones so that each field is spelled once: in XML a null
/// field is an element left out (or, on input, an empty one), never a null value.
fn xml_schemas(components: &mut Components) {
    let element = |components: &Components, source: &str, name: &'static str, input: bool| {
        let Some(RefOr::T(Schema::Object(object))) = components.schemas.get(source) else {
            return None;
        };
        let mut object: Object = object.clone();
        object.xml = Some(XmlBuilder::new().name(Some(name)).build());
        object.example = None;
        let mut nullable = Vec::new();
        for (field, property) in &mut object.properties {
            if let RefOr::T(Schema::Object(property)) = property
                && let SchemaType::Array(types) = &property.schema_type
            {
                let kept: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                if let [only] = kept.as_slice() {
                    property.schema_type = match only {
                        // In XML every value is text (and an empty element is null): the year
                        // is read from text, as the pattern says. As "an integer, or a string
                        // of length 0", a fuzzer's string "0" was a violation the server took.
                        Type::Integer if input => {
                            property.format = None;
                            property.minimum = None;
                            property.maximum = None;
                            property.pattern = Some(rules::year_text());
                            SchemaType::Type(Type::String)
                        }
                        _ => SchemaType::Type(only.clone()),
                    };
                    nullable.push(field.clone());
                }
            }
        }
        object.required.retain(|field| !nullable.contains(field));
        Some(object)
    };
    let book = element(components, "BookResponse", "book", false);
    let input = element(components, "BookInput", "book", true);
    let books = |item: &str, cursor: bool, bounds: bool| {
        let mut list = ArrayBuilder::new()
            .items(Ref::from_schema_name(item))
            .description(Some("One `<book>` element each"));
        if bounds {
            list = list.min_items(Some(1)).max_items(Some(1000));
        }
        let mut object = ObjectBuilder::new()
            .xml(Some(XmlBuilder::new().name(Some("books")).build()))
            .property("book", list);
        if bounds {
            object = object.required("book");
        }
        if cursor {
            object = object.property(
                "next_cursor",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .xml(Some(XmlBuilder::new().attribute(Some(true)).build()))
                    .description(Some(
                        "Pass as `cursor` to get the next page; left out on the last page",
                    )),
            );
        }
        object
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .build()
    };
    if let (Some(book), Some(input)) = (book, input) {
        components
            .schemas
            .insert("BookXml".to_owned(), Schema::Object(book).into());
        components
            .schemas
            .insert("BookXmlInput".to_owned(), Schema::Object(input).into());
        components.schemas.insert(
            "BooksXml".to_owned(),
            Schema::Object(books("BookXml", true, false)).into(),
        );
        components.schemas.insert(
            "BooksXmlInput".to_owned(),
            Schema::Object(books("BookXmlInput", false, true)).into(),
        );
    }
}

/// Which operations offer XML, and with which schemas: the answer's (by status) and the body's.
const XML_OPERATIONS: [(&str, &str, Option<&str>, &str); 7] = [
    ("getBook", "200", None, "BookXml"),
    ("patchBook", "200", None, "BookXml"),
    ("replaceBook", "200", Some("BookXmlInput"), "BookXml"),
    ("createBook", "201", Some("BookXmlInput"), "BookXml"),
    ("listBooks", "200", None, "BooksXml"),
    ("createBooks", "201", Some("BooksXmlInput"), "BooksXml"),
    ("exportBooks", "200", None, "BooksXml"),
];

/// Adds `application/xml` beside JSON to the operations that offer it, and the 406 of their
/// negotiation.
fn offer_xml(operation: &mut Operation) {
    let Some((_, status, input, output)) = XML_OPERATIONS
        .iter()
        .find(|(id, ..)| operation.operation_id.as_deref() == Some(id))
    else {
        return;
    };
    let content = |schema: &str| {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(schema)))
            .build()
    };
    if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
        response
            .content
            .insert(XML.to_owned(), content(output).into());
    }
    if let (Some(input), Some(RefOr::T(body))) = (input, operation.request_body.as_mut()) {
        body.content.insert(XML.to_owned(), content(input).into());
    }
    operation
        .responses
        .responses
        .entry("406".to_owned())
        .or_insert(RefOr::T(problem(
            "The client accepts neither application/json nor application/xml (Accept); nothing was changed",
        )));
}

impl Modify for SharedErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        state_the_rules(openapi);
        if let Some(components) = openapi.components.as_mut() {
            xml_schemas(components);
        }
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API key from `books-api keys create`. Writes need the `write` scope; reads are open.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
        for (path, item) in &mut openapi.paths.paths {
            if path.starts_with("/api/v1/webhooks") {
                webhook_operations(item, path.contains('{'));
                continue;
            }
            let about_one_book = path.contains('{');
            let legacy = path.starts_with("/booksApi");
            let operations = [
                (&mut item.get, false, false),
                (&mut item.post, false, true),
                (&mut item.put, true, true),
                (&mut item.patch, true, true),
                (&mut item.delete, true, true),
            ];
            for (operation, conditional, writes) in operations {
                if let Some(operation) = operation {
                    offer_xml(operation);
                    add_error_responses(operation, about_one_book, conditional && about_one_book);
                    if writes {
                        require_write_key(operation);
                    }
                    if legacy {
                        operation.deprecated = Some(utoipa::openapi::Deprecated::True);
                    }
                }
            }
        }
    }
}

/// The `/webhooks` operations: a caller of either scope, their own subscriptions only.
fn webhook_operations(item: &mut utoipa::openapi::PathItem, about_one: bool) {
    let operations = [
        &mut item.get,
        &mut item.post,
        &mut item.patch,
        &mut item.delete,
    ];
    for operation in operations.into_iter().flatten() {
        if about_one {
            operation
                .responses
                .responses
                .entry("404".to_owned())
                .or_insert(RefOr::T(problem(
                    "You have no subscription with this id (another caller's does not exist for you)",
                )));
        }
        add_error_responses(operation, false, false);
        operation.security = Some(vec![SecurityRequirement::new(BEARER, [] as [&str; 0])]);
        operation
            .responses
            .responses
            .entry("401".to_owned())
            .or_insert(RefOr::T(unauthorized()));
    }
}

fn unauthorized() -> Response {
    let mut unauthorized = problem("No API key, or one that is not valid");
    let challenge = ObjectBuilder::new().schema_type(Type::String).build();
    unauthorized.headers.insert(
        "WWW-Authenticate".to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(challenge))
                .description(Some("`Bearer realm=\"books-api\"`"))
                .build(),
        ),
    );
    unauthorized
}

fn require_write_key(operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(BEARER, ["write"])]);
    let unauthorized = unauthorized();
    let responses = &mut operation.responses.responses;
    responses
        .entry("401".to_owned())
        .or_insert(RefOr::T(unauthorized));
    responses
        .entry("403".to_owned())
        .or_insert(RefOr::T(problem("The API key lacks the write scope")));
}

fn add_error_responses(operation: &mut Operation, about_one_book: bool, conditional: bool) {
    let has_body = operation.request_body.is_some();
    let is_probe = operation
        .tags
        .as_ref()
        .is_some_and(|tags| tags.iter().any(|t| t == "service"));
    let mut add = |status: &str, response: Response| {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    };
    if !is_probe {
        add(
            "400",
            problem(
                "Malformed request: invalid JSON or XML (an XML document with a DOCTYPE, an \
                 entity it does not define or over 64 levels deep is refused before it is read), \
                 a bad query parameter or a bad path id",
            ),
        );
        add(
            "429",
            retry_later(
                "Too many requests from this key or address; retry after Retry-After seconds",
            ),
        );
        add(
            "500",
            problem("The server failed; the cause is logged, not returned"),
        );
    }
    if about_one_book {
        add("404", problem("There is no book with this id"));
    }
    if conditional {
        add(
            "412",
            problem("If-Match named none of the book's current ETags; nothing was changed"),
        );
    }
    if has_body {
        add("413", problem("The request body is larger than 64 KiB"));
        add(
            "415",
            problem(
                "The request body is not of an accepted media type, is compressed \
                 (Content-Encoding), or declares a charset other than UTF-8",
            ),
        );
        add(
            "422",
            problem("Fields failed validation; `errors` lists each one"),
        );
    }
    add(
        "503",
        retry_later("The database is unavailable or busy; retry after Retry-After seconds"),
    );
}
