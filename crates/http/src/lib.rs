//! The books-api HTTP service: actix-web handlers over the domain's `BookService`, the OpenAPI
//! document generated from them, Swagger UI, and the `books-api` binary that composes it all.
//!
//! The one decision to know: **handlers never block and never see the database**. Each handler
//! turns the request into domain values, runs one use case through [`blocking`] (the blocking
//! thread pool, because diesel is synchronous), and maps the outcome to a response. Every error
//! becomes an RFC 9457 problem in one place, [`representation::problem`].
//!
//! The folders name the parts:
//!
//! | folder | what |
//! |---|---|
//! | [`routes`] | the route table and the handlers: v1 books, the tutorial's routes, the service endpoints |
//! | [`middleware`] | what wraps every request: authentication and rate limits, observation, HEAD, CORS |
//! | [`representation`] | bodies, how they are read and written, ETags, cursors, problems |
//!
//! [`openapi`] generates the document from the routes and bodies ([`openapi_3_0`] renders it as
//! OpenAPI 3.0 too); [`server`] builds the server
//! from them; [`cli`] reads the command line; `main.rs` composes it all.

mod blocking;
pub mod cli;
mod longlived;
pub mod middleware;
pub mod openapi;
pub mod openapi_3_0;
pub mod representation;
mod routes;
pub mod server;

pub use middleware::budget::RateLimit;
pub use openapi::{document_3_0_json, document_json};
pub use server::{Application, ServerSettings, Services};
