//! End-to-end tests: the real server on a loopback port, a real HTTP client, and a PostgreSQL
//! database of each test's own.

mod books;
mod errors;
mod helpers;
mod listing;
mod openapi;
mod service;
