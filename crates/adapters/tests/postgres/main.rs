//! The PostgreSQL repository against a real server: one database per test.
#![allow(
    clippy::unwrap_used,
    reason = "helpers here are test code: a failed unwrap is a failed test"
)]

mod extensions;
mod feed;
mod fixtures;
mod idempotency;
mod keys;
mod listing;
mod relevance;
mod webhooks;
mod writes;

/// The contract every repository keeps, on PostgreSQL (the in-memory one runs it too).
mod contract {
    use books_adapters::PostgresBookRepository;
    use books_local_postgres::testing::TestDatabase;

    books_domain::repository_contract!(|| {
        let database = TestDatabase::new();
        let repository = PostgresBookRepository::new(database.pool());
        (database, repository)
    });
}
