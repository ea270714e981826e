//! The PostgreSQL repository against a real server: one database per test.

mod fixtures;
mod listing;
mod writes;
