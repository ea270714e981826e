//! The books-api HTTP service: actix-web handlers over the domain's `BookService`, the OpenAPI
//! document generated from them, Swagger UI, and the `books-api` binary that composes it all.
//!
//! **How a request reaches the database.** A handler never blocks and never holds a connection.
//! It reads the request into domain values ([`representation`]), then hands the work on:
//!
//! - a read by id, a listing page, a create without an idempotency key, and a patch or a
//!   replacement join a batch of the application layer (`books_application::batching`): a lane
//!   on the blocking pool works on each batch with one query or one statement (one commit), and
//!   each request gets its own outcome back on its own worker;
//! - every other use case (idempotent and batch creates, deletes, feed pages, readiness) runs on
//!   the blocking pool through [`blocking`];
//! - a live stream follows the instance's change hub (`books_application::live_feed`), and an
//!   export is read on a blocking thread and streamed with back-pressure
//!   (`books_application::export`).
//!
//! Every one of them ends in `BookService` over the PostgreSQL repository (`books_adapters`),
//! which checks a connection out of its pool there, on the blocking thread, and reads from a
//! replica when one in use holds every write the request must see. The outcome comes back as a
//! domain value or a domain error; every error becomes an RFC 9457 problem in one place,
//! [`representation::problem`].
//!
//! The folders name the parts:
//!
//! | folder | what |
//! |---|---|
//! | [`routes`] | the route table and the handlers, a file per part of the API: `books` (v1), `batch_and_export`, `change_feed`, `search`, `webhooks` (subscriptions), `legacy` (`/booksApi`), `operations` (health, readiness, metrics, documents) |
//! | [`middleware`] | what wraps every request: authentication, rate limits (`rate_limit`), observation, compression, HEAD, CORS |
//! | [`webhooks`] | delivering the change feed to webhook subscribers: the dispatcher, each subscription's task, and where deliveries may go |
//! | [`representation`] | the bodies' schemas (`schemas`), how bodies are read (`reading`) and written, ETags, cursors, problems |
//!
//! [`openapi`] generates the document from the routes and bodies ([`openapi_3_0`] renders it as
//! OpenAPI 3.0 too); [`server`] builds the server from them and runs its background tasks;
//! [`cli`] reads the command line; `main.rs` composes it all, and is the only place that names
//! the pool and the replicas.

mod blocking;
pub mod cli;
mod long_lived;
pub mod middleware;
pub mod openapi;
pub mod openapi_3_0;
pub mod representation;
mod routes;
pub mod server;
mod state;
mod tls;
pub mod webhooks;

pub use middleware::rate_limit::RateLimit;
pub use openapi::{document_3_0_json, document_json};
pub use server::{Application, ServerSettings, Services};
pub use webhooks::WebhookSettings;
