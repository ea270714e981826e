//! The books-api HTTP service: actix-web handlers over the domain's `BookService`, the OpenAPI
//! document generated from them, Swagger UI, and the `books-api` binary that composes it all.
//!
//! The one decision to know: **handlers never block and never see the database**. Each handler
//! turns the request into domain values, runs one use case through [`books::blocking`] (the
//! blocking thread pool, because diesel is synchronous), and maps the outcome to a response.
//! Every error becomes an RFC 9457 problem in one place, [`error`].

pub mod app;
pub mod auth;
mod body;
pub mod books;
pub mod cli;
mod cursor;
pub mod dto;
pub mod error;
mod etag;
pub mod legacy;
pub mod observe;
pub mod openapi;
mod params;
mod probes;
pub mod ratelimit;
mod rules;

pub use app::{Application, ServerSettings, Services};
