//! What the service answers, and where: the route table, and one file of handlers per part of
//! the API.
//!
//! - [`books`]: the v1 API under [`BASE`], one book at a time and listings;
//! - [`batch_and_export`]: its whole-catalogue operations, the batch create and the export;
//! - [`change_feed`]: the change feed, as JSON pages and as Server-Sent Events;
//! - [`search`]: ranked search that forgives typos;
//! - [`webhooks`]: the callers' webhook subscriptions (their delivery is `crate::webhooks`');
//! - [`legacy`]: the original tutorial's `/booksApi` routes;
//! - [`operations`]: health, readiness, metrics, the OpenAPI document and Swagger UI.
//!
//! Each handler reads the request into domain values (with the extractors and readers of
//! [`crate::representation`]), hands the work to the application layer's batches and streams or
//! runs one use case through [`crate::blocking`], and maps the outcome to a response; the rules
//! live in the domain, the storage in the adapters.

use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, ErrorHandlers, from_fn};
use actix_web::web;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::middleware::auth::admit;
use crate::middleware::observe::observe;
use crate::representation::problem::render_problem;

pub(crate) mod batch_and_export;
pub(crate) mod books;
pub(crate) mod change_feed;
pub(crate) mod legacy;
pub(crate) mod operations;
pub(crate) mod search;
pub(crate) mod webhooks;

use operations::{not_found, openapi_3_0_document, openapi_document, read_only, redirect};

/// Where the v1 API lives.
pub(crate) const BASE: &str = "/api/v1";

/// Everything the application serves, with its middleware. Needs `web::Data<BookService>` and
/// `web::Data<String>` (the OpenAPI document) in the app data.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("")
            .wrap(ErrorHandlers::new().default_handler(render_problem))
            .wrap(DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")))
            .wrap(from_fn(observe))
            .service(
                web::scope(BASE)
                    .wrap(from_fn(admit))
                    .service(
                        web::resource("/books")
                            .route(web::get().to(books::list_books))
                            .route(web::post().to(books::create_book)),
                    )
                    // Before `/books/{id}`, which would take these names for ids.
                    .service(
                        web::resource("/books/batch")
                            .route(web::post().to(batch_and_export::create_books)),
                    )
                    .service(
                        web::resource("/books/export")
                            .route(web::get().to(batch_and_export::export_books)),
                    )
                    .service(
                        web::resource("/books/search").route(web::get().to(search::search_books)),
                    )
                    .service(
                        web::resource("/books/changes")
                            .route(web::get().to(change_feed::list_changes)),
                    )
                    .service(
                        web::resource("/webhooks")
                            .route(web::get().to(webhooks::list_webhooks))
                            .route(web::post().to(webhooks::create_webhook)),
                    )
                    .service(
                        web::resource("/webhooks/{id}")
                            .route(web::get().to(webhooks::get_webhook))
                            .route(web::patch().to(webhooks::update_webhook))
                            .route(web::delete().to(webhooks::delete_webhook)),
                    )
                    .service(
                        web::resource("/webhooks/{id}/deliveries")
                            .route(web::get().to(webhooks::list_deliveries)),
                    )
                    .service(
                        web::resource("/webhooks/{id}/replay")
                            .route(web::post().to(webhooks::replay_webhook)),
                    )
                    .service(
                        web::resource("/books/{id}")
                            .route(web::get().to(books::get_book))
                            .route(web::put().to(books::replace_book))
                            .route(web::patch().to(books::patch_book))
                            .route(web::delete().to(books::delete_book)),
                    ),
            )
            .service(
                web::scope("/booksApi")
                    .wrap(from_fn(admit))
                    .service(
                        web::resource("")
                            .route(web::get().to(legacy::list))
                            .route(web::post().to(legacy::create)),
                    )
                    .service(
                        web::resource("/{id}")
                            .route(web::get().to(legacy::get))
                            .route(web::put().to(legacy::update))
                            .route(web::delete().to(legacy::delete)),
                    ),
            )
            .service(read_only(
                "/api-docs/openapi.json",
                web::get().to(openapi_document),
            ))
            .service(read_only(
                "/api-docs/openapi-3.0.json",
                web::get().to(openapi_3_0_document),
            ))
            .service(
                SwaggerUi::new("/swagger-ui/{_:.*}").config(Config::from("/api-docs/openapi.json")),
            )
            .service(read_only(
                "/swagger-ui",
                web::get().to(|| redirect("/swagger-ui/")),
            ))
            .service(read_only("/", web::get().to(|| redirect("/swagger-ui/"))))
            .service(read_only("/healthz", web::get().to(operations::healthz)))
            .service(read_only("/readyz", web::get().to(operations::readyz)))
            .service(read_only("/metrics", web::get().to(operations::metrics)))
            .default_service(web::to(not_found)),
    );
}
