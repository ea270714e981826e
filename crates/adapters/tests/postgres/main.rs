//! The PostgreSQL repository against a real server: one database per test.
#![allow(
    clippy::unwrap_used,
    reason = "helpers here are test code: a failed unwrap is a failed test"
)]

mod fixtures;
mod idempotency;
mod keys;
mod listing;
mod writes;
