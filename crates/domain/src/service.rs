//! The use cases.

use std::fmt;
use std::sync::Arc;

use crate::{
    Book, BookId, BookPatch, BookRepository, ChangeLimit, ChangePage, ChangesError,
    ConsistencyToken, CreateBookError, Created, CreatedBooks, ExportQuery, ExportSink,
    GetBookError, IDEMPOTENCY_KEY_RETENTION, IdempotencyKey, ListBooksError, ListQuery, NewBook,
    NewBooks, Page, Position, SearchQuery, SearchResults, StorageError, VersionCheck,
    WriteBookError,
};

/// The use cases of the catalogue, over any [`BookRepository`].
///
/// Cloning is cheap (the repository is shared), so an async caller can move a clone onto a
/// blocking thread for each call.
#[derive(Clone)]
pub struct BookService {
    repository: Arc<dyn BookRepository>,
}

impl fmt::Debug for BookService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BookService").finish_non_exhaustive()
    }
}

impl BookService {
    /// A service that keeps its books in `repository`.
    pub fn new(repository: impl BookRepository) -> Self {
        Self::shared(Arc::new(repository))
    }

    /// A service over a repository the caller keeps a handle on too.
    pub fn shared(repository: Arc<dyn BookRepository>) -> Self {
        Self { repository }
    }

    /// Adds a book to the catalogue.
    ///
    /// # Errors
    ///
    /// [`CreateBookError`] when storage fails.
    pub fn create_book(&self, book: &NewBook) -> Result<Book, CreateBookError> {
        self.repository.create(book)
    }

    /// Adds a book unless a request with the same idempotency key already did, in which case the
    /// first book is returned again and nothing is created.
    ///
    /// ```
    /// use books_domain::{BookInput, BookService, IdempotencyKey, InMemoryBookRepository, NewBook};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// let key = IdempotencyKey::new("client-7f3a")?;
    /// let draft = NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?;
    /// let first = service.create_book_once(&key, &draft)?;
    /// let retry = service.create_book_once(&key, &draft)?;
    /// assert_eq!(retry.book, first.book);
    /// assert!(retry.replayed && !first.replayed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`CreateBookError::KeyReused`] when the key came with other fields before,
    /// [`CreateBookError::KeyInFlight`] when a request with the key is still running.
    pub fn create_book_once(
        &self,
        key: &IdempotencyKey,
        book: &NewBook,
    ) -> Result<Created, CreateBookError> {
        self.repository.create_once(key, book)
    }

    /// Adds every book of a batch to the catalogue, or none of them.
    ///
    /// ```
    /// use books_domain::{BookInput, BookService, InMemoryBookRepository, NewBook, NewBooks};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// let book = |t: &str| NewBook::parse(&BookInput { title: t.into(), author: "Anon".into(), ..BookInput::default() }).unwrap();
    /// let created = service.create_books(&NewBooks::new(vec![book("A"), book("B")])?)?;
    /// assert_eq!(created[1].title().as_str(), "B");
    /// assert!(created[0].id() < created[1].id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`CreateBookError`] when storage fails; nothing is created then.
    pub fn create_books(&self, books: &NewBooks) -> Result<Vec<Book>, CreateBookError> {
        self.repository.create_many(books)
    }

    /// [`BookService::create_books`], once per idempotency key (see
    /// [`BookService::create_book_once`]).
    ///
    /// # Errors
    ///
    /// [`CreateBookError::KeyReused`] when the key came with other books (or one book) before,
    /// [`CreateBookError::KeyInFlight`] when a request with the key is still running.
    pub fn create_books_once(
        &self,
        key: &IdempotencyKey,
        books: &NewBooks,
    ) -> Result<CreatedBooks, CreateBookError> {
        self.repository.create_many_once(key, books)
    }

    /// Reads every book matching `query`, in order and from one snapshot, into `sink` a slice
    /// at a time, so that a caller can stream a catalogue of any size in flat memory.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use books_domain::{BookInput, BookService, ExportQuery, InMemoryBookRepository, NewBook};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// service.create_book(&NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?)?;
    /// let mut titles = Vec::new();
    /// service.export_books(&ExportQuery::default(), &mut |books| {
    ///     titles.extend(books.iter().map(|b| b.title().to_string()));
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(titles, ["Dune"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ListBooksError`] when storage fails (possibly after some books were handed over).
    pub fn export_books(
        &self,
        query: &ExportQuery,
        sink: &mut ExportSink<'_>,
    ) -> Result<(), ListBooksError> {
        self.repository.export(query, sink)
    }

    /// Forgets idempotency keys older than [`IDEMPOTENCY_KEY_RETENTION`]; returns how many.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn forget_expired_keys(&self) -> Result<u64, StorageError> {
        self.repository
            .forget_keys_older_than(IDEMPOTENCY_KEY_RETENTION)
    }

    /// Fetches one book.
    ///
    /// # Errors
    ///
    /// [`GetBookError::NotFound`] when there is no such book.
    pub fn get_book(&self, id: BookId) -> Result<Book, GetBookError> {
        self.repository.find_by_id(id)
    }

    /// Fetches many books at once: those of `ids` that exist, in no particular order. The
    /// answer reflects one state of the catalogue, as of the call.
    ///
    /// ```
    /// use books_domain::{BookId, BookInput, BookService, InMemoryBookRepository, NewBook};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// let dune = service.create_book(&NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?)?;
    /// let missing = BookId::new(999).unwrap();
    /// let found = service.get_books(&[dune.id(), missing])?;
    /// assert_eq!(found, [dune]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn get_books(&self, ids: &[BookId]) -> Result<Vec<Book>, StorageError> {
        self.repository.find_by_ids(ids)
    }

    /// [`BookService::get_books`], from data that holds every write up to `seen` (see
    /// [`ConsistencyToken`]).
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn get_books_seeing(
        &self,
        ids: &[BookId],
        seen: Option<ConsistencyToken>,
    ) -> Result<Vec<Book>, StorageError> {
        self.repository.find_by_ids_seeing(ids, seen)
    }

    /// Where the history of writes stands now: asked right after a write, a token that a later
    /// read can send back to be sure to see it. `None` when every read sees every write anyway.
    ///
    /// ```
    /// use books_domain::{BookService, InMemoryBookRepository};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// assert_eq!(service.consistency_token()?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn consistency_token(&self) -> Result<Option<ConsistencyToken>, StorageError> {
        self.repository.consistency_token()
    }

    /// Lists one page of books and says where the next page starts.
    ///
    /// ```
    /// use books_domain::{BookInput, BookService, InMemoryBookRepository, ListQuery, NewBook, PageSize};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// for title in ["A", "B", "C"] {
    ///     service.create_book(&NewBook::parse(&BookInput { title: title.into(), author: "Anon".into(), ..BookInput::default() })?)?;
    /// }
    /// let mut query = ListQuery { limit: PageSize::new(2).unwrap(), ..ListQuery::default() };
    /// let first = service.list_books(&query)?;
    /// assert_eq!(first.items.len(), 2);
    /// query.after = first.next;
    /// let second = service.list_books(&query)?;
    /// assert_eq!(second.items[0].title().as_str(), "C");
    /// assert!(second.next.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ListBooksError`] when storage fails, or when the query's position was made for another
    /// sort key (a caller bug, reported as an unknown storage error).
    pub fn list_books(&self, query: &ListQuery) -> Result<Page, ListBooksError> {
        self.list_books_seeing(query, None)
    }

    /// Searches the catalogue: one page of ranked results, their total and the facets asked
    /// for (see [`crate::rank`] for the rules), from data that holds every write up to `seen`.
    ///
    /// ```
    /// use books_domain::{BookField, BookInput, BookService, InMemoryBookRepository, NewBook, SearchQuery, SearchText};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// let input = BookInput::default().with(BookField::Title, "Pride and Prejudice").with(BookField::Author, "Jane Austen");
    /// service.create_book(&NewBook::parse(&input)?)?;
    /// let found = service.search_books(&SearchQuery::new(SearchText::new("pride and prejudise")?), None)?;
    /// assert_eq!(found.hits[0].highlight.title, "<em>Pride</em> <em>and</em> <em>Prejudice</em>");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ListBooksError`] when storage fails.
    pub fn search_books(
        &self,
        query: &SearchQuery,
        seen: Option<ConsistencyToken>,
    ) -> Result<SearchResults, ListBooksError> {
        self.repository.search(query, seen)
    }

    /// [`BookService::list_books`], from data that holds every write up to `seen` (see
    /// [`ConsistencyToken`]).
    ///
    /// # Errors
    ///
    /// As for [`BookService::list_books`].
    pub fn list_books_seeing(
        &self,
        query: &ListQuery,
        seen: Option<ConsistencyToken>,
    ) -> Result<Page, ListBooksError> {
        if let Some(after) = &query.after
            && (after.key != query.sort.key || !after.is_consistent())
        {
            let bug = anyhow::anyhow!(
                "a listing position for {:?} was used to sort by {:?}",
                after.key,
                query.sort.key
            );
            return Err(StorageError::Unknown(bug).into());
        }
        let limit = query.limit.get();
        let mut items = self.repository.list_seeing(query, limit + 1, seen)?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| Position::of(last, query.sort.key))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Applies a merge patch to a book (a full replacement is the patch that sets every field:
    /// [`BookPatch::from`] a [`NewBook`]). A patch that changes something makes a new version; one
    /// that changes nothing leaves the book exactly as it was, so that it never makes other
    /// clients' `If-Match` fail for nothing.
    ///
    /// ```
    /// use books_domain::{BookInput, BookPatch, BookService, InMemoryBookRepository, NewBook, VersionCheck};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// let book = service.create_book(&NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?)?;
    /// let same = service.patch_book(book.id(), &BookPatch::default(), &VersionCheck::Any)?;
    /// assert_eq!(same, book);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`WriteBookError::NotFound`], or [`WriteBookError::VersionMismatch`] when `check` fails.
    pub fn patch_book(
        &self,
        id: BookId,
        patch: &BookPatch,
        check: &VersionCheck,
    ) -> Result<Book, WriteBookError> {
        self.repository.patch(id, patch, check)
    }

    /// Applies many patches to distinct books at once, each with its own outcome, as
    /// [`BookService::patch_book`] would give it.
    pub fn patch_books(
        &self,
        patches: &[crate::TargetedPatch],
    ) -> Vec<Result<Book, WriteBookError>> {
        self.repository.patch_many(patches)
    }

    /// Deletes a book.
    ///
    /// # Errors
    ///
    /// [`WriteBookError::NotFound`], or [`WriteBookError::VersionMismatch`] when `check` fails.
    pub fn delete_book(&self, id: BookId, check: &VersionCheck) -> Result<(), WriteBookError> {
        self.repository.delete(id, check)
    }

    /// The changes after `after` (a `seq`; 0 for the beginning), and where to continue.
    ///
    /// ```
    /// use books_domain::{BookInput, BookService, ChangeKind, ChangeLimit, InMemoryBookRepository, NewBook, VersionCheck};
    /// let service = BookService::new(InMemoryBookRepository::default());
    /// let dune = service.create_book(&NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?)?;
    /// service.delete_book(dune.id(), &VersionCheck::Any)?;
    /// let page = service.changes(0, ChangeLimit::default())?;
    /// let kinds: Vec<_> = page.items.iter().map(|c| c.kind).collect();
    /// assert_eq!(kinds, [ChangeKind::Created, ChangeKind::Deleted]);
    /// assert_eq!(page.next_after, page.items[1].seq);
    /// assert!(service.changes(page.next_after, ChangeLimit::default())?.items.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChangesError::Expired`] when changes after `after` were purged, [`ChangesError::Ahead`]
    /// when `after` is past the newest seq.
    pub fn changes(&self, after: u64, limit: ChangeLimit) -> Result<ChangePage, ChangesError> {
        let items = self.repository.changes(after, limit)?;
        let next_after = items.last().map_or(after, |change| change.seq);
        Ok(ChangePage { items, next_after })
    }

    /// The `seq` of the newest committed change (0 when there is none).
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn last_change(&self) -> Result<u64, StorageError> {
        self.repository.last_change()
    }

    /// Numbers the changes committed since the last call (see
    /// [`BookRepository::sequence_changes`]); returns the newest seq.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn sequence_changes(&self) -> Result<u64, StorageError> {
        self.repository.sequence_changes()
    }

    /// Purges changes older than `retention`; returns how many.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn forget_old_changes(&self, retention: chrono::TimeDelta) -> Result<u64, StorageError> {
        self.repository.forget_changes_older_than(retention)
    }

    /// Checks that the catalogue's storage answers.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when it does not.
    pub fn check_storage(&self) -> Result<(), StorageError> {
        self.repository.ping()
    }
}
