//! The ports that storage adapters implement, one trait per role.
//!
//! A caller names the role it needs (a health check needs a [`BookReader`], the sequencer a
//! [`ChangeFeed`]); a storage adapter implements all five, and so is a [`BookRepository`].

use chrono::TimeDelta;

use crate::{
    Book, BookId, BookPatch, Change, ChangeLimit, ChangesError, ConsistencyToken, CreateBookError,
    Created, CreatedBooks, ExportQuery, ExportSink, GetBookError, IdempotencyKey, ListBooksError,
    ListQuery, NewBook, NewBooks, SearchQuery, SearchResults, Version, WriteBookError,
};

/// Which versions of a book a write may apply to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VersionCheck {
    /// Whatever the version.
    #[default]
    Any,
    /// Only while the book is at one of these versions (an `If-Match` list). An empty list
    /// matches nothing.
    OneOf(Vec<Version>),
}

impl VersionCheck {
    /// True when a book at `version` may be written.
    pub fn allows(&self, version: Version) -> bool {
        match self {
            Self::Any => true,
            Self::OneOf(versions) => versions.contains(&version),
        }
    }
}

/// One patch of a batch: which book, what to change, and which versions it may apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetedPatch {
    /// The book.
    pub id: BookId,
    /// The changes.
    pub patch: BookPatch,
    /// The versions the patch may apply to.
    pub check: VersionCheck,
}

/// Reading books.
pub trait BookReader: Send + Sync + 'static {
    /// Finds the book with this id.
    ///
    /// # Errors
    ///
    /// [`GetBookError::NotFound`] when there is none.
    fn find_by_id(&self, id: BookId) -> Result<Book, GetBookError>;

    /// Finds the books with these ids, in no particular order; an id with no book is simply
    /// absent from the result. Meant for answering many reads at once: the default asks
    /// [`Self::find_by_id`] for each; storage that can do better should.
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when storage fails.
    fn find_by_ids(&self, ids: &[BookId]) -> Result<Vec<Book>, crate::StorageError> {
        let mut books = Vec::with_capacity(ids.len());
        for id in ids {
            match self.find_by_id(*id) {
                Ok(book) => books.push(book),
                Err(GetBookError::NotFound(_)) => {}
                Err(GetBookError::Storage(error)) => return Err(error),
            }
        }
        Ok(books)
    }

    /// [`Self::find_by_ids`], answered from a copy of the data that holds every write
    /// up to `seen` (see [`ConsistencyToken`]). Storage without lagging copies reads as
    /// `find_by_ids` does, which is the default.
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when storage fails.
    fn find_by_ids_seeing(
        &self,
        ids: &[BookId],
        seen: Option<ConsistencyToken>,
    ) -> Result<Vec<Book>, crate::StorageError> {
        let _ = seen;
        self.find_by_ids(ids)
    }

    /// Returns at most `count` books that match `query.filter`, in `query.sort` order, strictly
    /// after `query.after` when it is set. (`count` is `query.limit` plus one, so that the
    /// service can tell whether another page follows.)
    ///
    /// # Errors
    ///
    /// [`ListBooksError::Storage`] when storage fails.
    fn list(&self, query: &ListQuery, count: usize) -> Result<Vec<Book>, ListBooksError>;

    /// [`Self::list`], answered from a copy of the data that holds every write up to
    /// `seen`. The default reads as `list` does.
    ///
    /// # Errors
    ///
    /// [`ListBooksError::Storage`] when storage fails.
    fn list_seeing(
        &self,
        query: &ListQuery,
        count: usize,
        seen: Option<ConsistencyToken>,
    ) -> Result<Vec<Book>, ListBooksError> {
        let _ = seen;
        self.list(query, count)
    }

    /// Hands every book that matches `query.filter` to `sink`, in `query.sort` order, at most
    /// [`crate::EXPORT_SLICE`] at a time, all read from one consistent state of the catalogue
    /// (writes that commit meanwhile are not seen). Stops as soon as `sink` answers
    /// [`std::ops::ControlFlow::Break`].
    ///
    /// # Errors
    ///
    /// [`ListBooksError::Storage`] when storage fails, possibly after some slices were handed
    /// over.
    fn export(&self, query: &ExportQuery, sink: &mut ExportSink<'_>) -> Result<(), ListBooksError>;

    /// Checks that storage answers now.
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when it does not.
    fn ping(&self) -> Result<(), crate::StorageError> {
        Ok(())
    }
}

/// Writing books.
///
/// Implementations must make each write atomic: the version check and the change happen in one
/// step, so two writers that expect the same version can never both succeed, and concurrent
/// unconditional writes never lose an increment of the version. Every write records its change
/// for the [`ChangeFeed`] in the same step.
pub trait BookWriter: Send + Sync + 'static {
    /// Stores a new book at version 1 and returns it with its id and timestamps.
    ///
    /// # Errors
    ///
    /// [`CreateBookError::Storage`] when storage fails.
    fn create(&self, book: &NewBook) -> Result<Book, CreateBookError>;

    /// Stores every book of `books` at version 1, all of them or none, and returns them in the
    /// order given.
    ///
    /// # Errors
    ///
    /// [`CreateBookError::Storage`] when storage fails; nothing is stored then.
    fn create_many(&self, books: &NewBooks) -> Result<Vec<Book>, CreateBookError>;

    /// Applies a merge patch, increments the version and sets `updated_at`. A patch that
    /// changes nothing (no member, or only the stored values) leaves the book as it is, version
    /// and `updated_at` included, and returns it.
    ///
    /// # Errors
    ///
    /// [`WriteBookError::NotFound`], or [`WriteBookError::VersionMismatch`] when `check` does
    /// not allow the stored version (nothing is changed then).
    fn patch(
        &self,
        id: BookId,
        patch: &BookPatch,
        check: &VersionCheck,
    ) -> Result<Book, WriteBookError>;

    /// Applies many patches, each exactly as [`Self::patch`] would (its own version
    /// check, its own outcome), to distinct books. Meant for answering many writes at once: the
    /// default applies them one by one; storage that can do better (one statement, one commit)
    /// should.
    ///
    /// # Errors
    ///
    /// Each patch's own [`WriteBookError`], in the order given.
    fn patch_many(&self, patches: &[TargetedPatch]) -> Vec<Result<Book, WriteBookError>> {
        patches
            .iter()
            .map(|p| self.patch(p.id, &p.patch, &p.check))
            .collect()
    }

    /// Deletes the book.
    ///
    /// # Errors
    ///
    /// As for [`Self::patch`].
    fn delete(&self, id: BookId, check: &VersionCheck) -> Result<(), WriteBookError>;

    /// Where storage's history of writes stands now: every write that has returned is at or
    /// before it, so a caller that asks right after a write gets a token for it. `None` for
    /// storage whose reads always see every write (the default).
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when storage fails.
    fn consistency_token(&self) -> Result<Option<ConsistencyToken>, crate::StorageError> {
        Ok(None)
    }
}

/// Creates that a client names with an idempotency key, and the records that remember them.
pub trait IdempotencyRecords: Send + Sync + 'static {
    /// Creates a book once per `key`: the first call creates it and remembers the key with the
    /// book; a later call with the same key and the same fields returns that first book again
    /// (`replayed`) and creates nothing. Concurrent calls with one key create one book at most.
    ///
    /// # Errors
    ///
    /// [`CreateBookError::KeyReused`] when the key was used with other fields,
    /// [`CreateBookError::KeyInFlight`] when a call with the key is still running.
    fn create_once(&self, key: &IdempotencyKey, book: &NewBook)
    -> Result<Created, CreateBookError>;

    /// [`BookWriter::create_many`] once per `key`, as [`Self::create_once`] is
    /// for one book: a later call with the same key and the same books (in the same order)
    /// returns the first call's books again. A key is one namespace for single and batch
    /// creates: a key used for one book is reused by a batch, and the other way round.
    ///
    /// # Errors
    ///
    /// As for [`Self::create_once`].
    fn create_many_once(
        &self,
        key: &IdempotencyKey,
        books: &NewBooks,
    ) -> Result<CreatedBooks, CreateBookError>;

    /// Forgets the idempotency keys first used longer ago than `age`; returns how many.
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when storage fails.
    fn forget_keys_older_than(&self, age: TimeDelta) -> Result<u64, crate::StorageError>;
}

/// The feed of committed changes.
pub trait ChangeFeed: Send + Sync + 'static {
    /// The committed changes with a `seq` greater than `after`, in `seq` order, at most `limit`
    /// of them (see [`crate::Change`] for the guarantee).
    ///
    /// # Errors
    ///
    /// [`ChangesError::Expired`] when changes after `after` were purged,
    /// [`ChangesError::Ahead`] when `after` is past the newest seq.
    fn changes(&self, after: u64, limit: ChangeLimit) -> Result<Vec<Change>, ChangesError>;

    /// Gives seqs to the changes committed since the last call, if storage numbers them apart
    /// from the writes (in bounded steps, so that a backlog of any size is numbered by short
    /// operations), and returns the newest seq. Run in the background, so that changes are
    /// numbered as they commit whether or not anyone reads. Storage that numbers each change as
    /// it commits has nothing to do: the default returns [`Self::last_change`].
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when storage fails.
    fn sequence_changes(&self) -> Result<u64, crate::StorageError> {
        self.last_change()
    }

    /// The `seq` of the newest committed change (0 when there is none): where a reader who has
    /// just read the whole catalogue starts following the feed.
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when storage fails.
    fn last_change(&self) -> Result<u64, crate::StorageError>;

    /// Purges the changes made longer ago than `age`; returns how many.
    ///
    /// # Errors
    ///
    /// A [`crate::StorageError`] when storage fails.
    fn forget_changes_older_than(&self, age: TimeDelta) -> Result<u64, crate::StorageError>;
}

/// Ranked search: a storage finds the candidates its way and ranks them with
/// [`crate::rank`], so that the rules are the same whatever the storage.
pub trait BookSearch: Send + Sync + 'static {
    /// One page of the results of `query` (with their total and the facets it asks for), from
    /// data that holds every write up to `seen`.
    ///
    /// # Errors
    ///
    /// [`ListBooksError::Storage`] when storage fails.
    fn search(
        &self,
        query: &SearchQuery,
        seen: Option<ConsistencyToken>,
    ) -> Result<SearchResults, ListBooksError>;
}

/// Storage of books in every role: what [`crate::BookService`] runs on. Implement the five role
/// traits; this one follows.
pub trait BookRepository:
    BookReader + BookWriter + IdempotencyRecords + ChangeFeed + BookSearch
{
}

impl<R: BookReader + BookWriter + IdempotencyRecords + ChangeFeed + BookSearch> BookRepository
    for R
{
}
