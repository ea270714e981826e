//! The errors of the use cases.
//!
//! Each use case has its own error type, whose variants are the outcomes a caller must handle
//! (a missing book, a stale version). Everything else is a [`StorageError`], which keeps its
//! cause chain for the log; callers show it to nobody.

use thiserror::Error;

use crate::{BookId, Isbn, Version};

/// The ISBN a write asked for belongs to another book; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("the ISBN {isbn} belongs to book {existing}")]
pub struct IsbnTaken {
    /// The ISBN.
    pub isbn: Isbn,
    /// The book that has it.
    pub existing: BookId,
}

/// Storage failed in a way the caller cannot fix by changing the request.
#[derive(Debug, Error)]
pub enum StorageError {
    /// Storage cannot be reached now (connection refused or lost, no free connection in time).
    /// Worth retrying later.
    #[error("the book store is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug or a broken invariant, to be logged and investigated.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

impl StorageError {
    /// The same kind of error with the same message (its cause chain as text), for answering
    /// several callers that met one failure.
    #[must_use]
    pub fn copy(&self) -> Self {
        match self {
            Self::Unavailable(cause) => Self::Unavailable(anyhow::anyhow!("{cause:#}")),
            Self::Unknown(cause) => Self::Unknown(anyhow::anyhow!("{cause:#}")),
        }
    }
}

/// Why a book could not be created.
#[derive(Debug, Error)]
pub enum CreateBookError {
    /// The idempotency key was first used with a different book; nothing was created.
    #[error("this idempotency key was already used with a different request body")]
    KeyReused,
    /// Another request with the same idempotency key is still being processed.
    #[error("a request with this idempotency key is still in progress")]
    KeyInFlight,
    /// A book to create has the ISBN of a book that exists; nothing was created.
    #[error(transparent)]
    IsbnTaken(IsbnTaken),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a book could not be fetched.
#[derive(Debug, Error)]
pub enum GetBookError {
    /// There is no book with this id.
    #[error("there is no book with id {0}")]
    NotFound(BookId),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why books could not be listed.
#[derive(Debug, Error)]
pub enum ListBooksError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a book could not be replaced, patched or deleted.
#[derive(Debug, Error)]
pub enum WriteBookError {
    /// There is no book with this id.
    #[error("there is no book with id {0}")]
    NotFound(BookId),
    /// The book exists but its version is not one the caller allowed; nothing was changed.
    #[error("book {id} is at version {current}, which the request did not expect")]
    VersionMismatch {
        /// The book.
        id: BookId,
        /// Its version now.
        current: Version,
    },
    /// The write would give the book the ISBN of another book; nothing was changed.
    #[error(transparent)]
    IsbnTaken(IsbnTaken),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}
