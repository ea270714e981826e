//! The change feed: every committed change to the catalogue, in one order that readers can
//! follow and resume.
//!
//! Each change has a sequence number (`seq`) given in the order changes become visible, so that a
//! reader who keeps asking for the changes after the last `seq` it saw visits every committed
//! change exactly once, in order, whatever the concurrency of writers, and a book's changes in
//! version order. Storage records a change in the same transaction as the write it describes; a
//! write that rolls back leaves none.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use thiserror::Error;

use crate::{Book, BookId, StorageError, Version};

/// How long changes are kept, unless configured otherwise.
pub const CHANGES_RETENTION: TimeDelta = TimeDelta::days(7);

/// What a change did to its book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The book was created (version 1).
    Created,
    /// The book was replaced or patched (a new version).
    Updated,
    /// The book was deleted.
    Deleted,
}

impl ChangeKind {
    /// The kind as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Created, Self::Updated, Self::Deleted]
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One committed change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its place in the feed: positive, and larger than that of every change before it.
    pub seq: u64,
    /// What happened.
    pub kind: ChangeKind,
    /// To which book.
    pub book_id: BookId,
    /// The book's version after the change. A deletion counts as one more change: it carries
    /// the deleted version + 1, so that a copy which applies a change only when its version is
    /// newer than the one it holds never misses a deletion.
    pub version: Version,
    /// When the change was made.
    pub at: DateTime<Utc>,
    /// The book as the change left it; `None` for a delete.
    pub book: Option<Book>,
}

/// How many changes one read returns at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLimit(usize);

impl ChangeLimit {
    /// The largest limit.
    pub const MAX: usize = 1000;

    /// A limit of 1 to [`ChangeLimit::MAX`].
    pub fn new(limit: u64) -> Option<Self> {
        usize::try_from(limit)
            .ok()
            .filter(|limit| (1..=Self::MAX).contains(limit))
            .map(Self)
    }

    /// The limit.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for ChangeLimit {
    fn default() -> Self {
        Self(100)
    }
}

/// The changes after a point of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePage {
    /// The changes, in `seq` order.
    pub items: Vec<Change>,
    /// Where to continue: the last item's `seq`, or the `after` asked for when there is none.
    pub next_after: u64,
}

/// Why changes could not be read.
#[derive(Debug, Error)]
pub enum ChangesError {
    /// Changes after `after` were already purged: the reader must start again from a full
    /// export, then follow the feed from the `seq` it was at.
    #[error("changes up to {purged_through} are no longer kept")]
    Expired {
        /// The last `seq` that was purged; `after` must be at least this.
        purged_through: u64,
    },
    /// `after` is past the newest seq ever given: the reader holds a position this feed never
    /// reached (it followed a server that was replaced by a failover, or made the number up).
    /// Answering an empty page would make it skip every change up to its position.
    #[error("{after} is past the newest change, {newest}")]
    Ahead {
        /// The position asked for.
        after: u64,
        /// The newest seq given.
        newest: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Says whether the catalogue may have changed since it was last asked: how a feed's live readers
/// learn of new changes without asking storage over and over. Storage adapters provide one (the
/// PostgreSQL adapter listens for the writes' notifications); without one, readers poll.
pub trait ChangeSignal: Send {
    /// True when a change was signalled since the last call. Never blocks for long.
    ///
    /// # Errors
    ///
    /// When the signal cannot be read now; callers poll instead, and ask again later.
    fn changed(&mut self) -> Result<bool, StorageError>;
}
