//! The application layer of books-api: how the service uses the domain under load, knowing
//! nothing of HTTP.
//!
//! - [`batching`]: concurrent requests that wait for the database are served together, one
//!   hand-off to the blocking pool and one round of work per batch (reads by id, creates,
//!   listings, patches), each request still getting its own outcome;
//! - [`live_feed`]: the instance's live change feed, one reader of storage broadcasting to every open
//!   stream, each stream catching up on its own and taking every change once, in order;
//! - [`export`]: a whole export read from one snapshot and streamed with back-pressure.
//!
//! Everything here answers in the domain's errors and exposes streams; the HTTP layer frames
//! them. The one decision to know: **the use cases block** (diesel is synchronous), so every call
//! into [`BookService`] runs on tokio's blocking pool ([`run_blocking`]), never on an async worker.

pub mod batching;
pub mod export;
pub mod live_feed;

use std::time::Duration;

use books_domain::{BookService, ConsistencyToken, StorageError};

pub use batching::{
    BATCH_CAP, Coalescer, CreateCoalescer, ListCoalescer, PatchCoalescer, ReadCoalescer,
    ScanListings, SharedPage,
};
pub use export::{ExportCut, ExportLimits, export};
pub use live_feed::{ChangeHub, FollowError, SharedChange};

/// The longest a caller waits for its database work before it is told storage is unavailable.
/// Longer than any wait the service allows itself (a 2 s checkout plus a 5 s statement), so it
/// fires only when something is badly wrong, and the caller still gets an answer.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A write's outcome, with where the history of writes stood once it had committed (for the
/// answer's consistency token).
#[derive(Debug)]
pub struct Written<A> {
    /// What the write did.
    pub outcome: A,
    /// Where the history of writes stood after it, when storage says.
    pub token: Option<ConsistencyToken>,
}

/// Runs a use case on the blocking pool, within [`DEADLINE`].
///
/// # Errors
///
/// The use case's own, or [`StorageError::Unavailable`] when it takes too long or the pool is
/// gone.
pub async fn run_blocking<T, E>(
    service: &BookService,
    call: impl FnOnce(&BookService) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<StorageError> + Send + 'static,
{
    let service = service.clone();
    match tokio::time::timeout(
        DEADLINE,
        tokio::task::spawn_blocking(move || call(&service)),
    )
    .await
    {
        Ok(Ok(result)) => result,
        Ok(Err(error)) => Err(StorageError::Unavailable(
            anyhow::anyhow!(error).context("the blocking pool is gone"),
        )
        .into()),
        Err(_) => Err(StorageError::Unavailable(anyhow::anyhow!(
            "the database work took longer than {DEADLINE:?}"
        ))
        .into()),
    }
}

/// Where the history of writes stands, asked right after a write has committed (blocking). A
/// failure here does not undo the write: the answer then goes without a token (logged).
pub fn token_after_write(service: &BookService) -> Option<ConsistencyToken> {
    service.consistency_token().unwrap_or_else(|error| {
        tracing::warn!(error = %format!("{:#}", anyhow::Error::from(error)), "no consistency token for a write that committed");
        None
    })
}
