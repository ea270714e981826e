//! PostgreSQL adapters for the books catalogue.
//!
//! [`PostgresBookRepository`] implements the domain's [`books_domain::BookRepository`] port with
//! diesel over an r2d2 pool. The migrations in the workspace's `migrations/` folder are embedded
//! in the binary and applied by [`run_migrations`]. [`PostgresWebhookRepository`] keeps the
//! webhook subscriptions and their delivery progress. (A cluster of the service's own, and the test
//! databases, are the `books-local-postgres` crate's.)
//!
//! The one decision to know: **diesel is synchronous**. Every method here blocks the calling
//! thread on the network, including the pool checkout; async callers must run them on a blocking
//! thread pool (`actix_web::web::block`, `tokio::task::spawn_blocking`), never on an async worker.
//! Driver errors never leave this crate: they become the domain's error types, with a lost or
//! refused connection reported as [`books_domain::StorageError::Unavailable`].

mod books;
mod condition;
mod connection;
mod database;
mod errors;
mod keys;
mod prepared;
mod replicas;
mod schema;
mod webhooks;

pub use books::ChangeListener;
pub use books::PostgresBookRepository;
pub use connection::waiting_for_connection;
pub use database::{
    MIGRATIONS, PgPool, PoolOptions, connect, ensure_database, foreign_message_language, open_pool,
    run_migrations, wait_for_database,
};
pub use keys::PostgresApiKeyRepository;
pub use replicas::{ReplicaState, Replicas};
pub use webhooks::PostgresWebhookRepository;
