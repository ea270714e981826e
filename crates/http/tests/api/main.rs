//! End-to-end tests: the real server on a loopback port, a real HTTP client, and a PostgreSQL
//! database of each test's own.
#![allow(
    clippy::unwrap_used,
    reason = "helpers here are test code: a failed unwrap is a failed test"
)]

mod auth;
mod books;
mod catalogue;
mod change_feed;
mod cli;
mod coalescing;
mod compression;
mod endurance;
mod errors;
mod failover;
mod hardening;
mod helpers;
mod hostile;
mod identity;
mod instances;
mod legacy;
mod listing;
mod long_lived;
mod oidc;
mod openapi;
mod operations;
mod replicas;
mod scaling;
mod search;
mod service;
mod topology;
mod webhooks;
mod xml;
