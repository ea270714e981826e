//! Plug your own storage into the use cases: a repository that wraps another one and keeps an
//! audit trail of every write. Any type that implements the four roles (`BookReader`,
//! `BookWriter`, `IdempotencyRecords`, `ChangeFeed`) is a `BookRepository`, a database of your
//! team's included.
//!
//! `cargo run -p books-domain --example audited_repository`

#![allow(
    clippy::print_stdout,
    reason = "an example shows what it does on standard output"
)]

use std::sync::Mutex;

use books_domain::{
    Book, BookField, BookId, BookInput, BookPatch, BookReader, BookSearch, BookService, BookWriter,
    Change, ChangeFeed, ChangeLimit, ChangesError, ConsistencyToken, CreateBookError, Created,
    CreatedBooks, ExportQuery, ExportSink, GetBookError, IdempotencyKey, IdempotencyRecords,
    InMemoryBookRepository, ListBooksError, ListQuery, NewBook, NewBooks, SearchQuery,
    SearchResults, StorageError, VersionCheck, WriteBookError,
};
use chrono::TimeDelta;

/// Delegates to `inner` and records what was written.
#[derive(Debug, Default)]
struct Audited<R> {
    inner: R,
    trail: Mutex<Vec<String>>,
}

impl<R> Audited<R> {
    fn note(&self, entry: String) {
        if let Ok(mut trail) = self.trail.lock() {
            trail.push(entry);
        }
    }
}

impl<R: BookReader> BookReader for Audited<R> {
    fn export(&self, query: &ExportQuery, sink: &mut ExportSink<'_>) -> Result<(), ListBooksError> {
        self.inner.export(query, sink)
    }
    fn find_by_id(&self, id: BookId) -> Result<Book, GetBookError> {
        self.inner.find_by_id(id)
    }
    fn list(&self, query: &ListQuery, count: usize) -> Result<Vec<Book>, ListBooksError> {
        self.inner.list(query, count)
    }
}

impl<R: BookWriter> BookWriter for Audited<R> {
    fn create(&self, book: &NewBook) -> Result<Book, CreateBookError> {
        let created = self.inner.create(book)?;
        self.note(format!("created {} ({})", created.id(), created.title()));
        Ok(created)
    }
    fn create_many(&self, books: &NewBooks) -> Result<Vec<Book>, CreateBookError> {
        let created = self.inner.create_many(books)?;
        self.note(format!("created a batch of {}", created.len()));
        Ok(created)
    }
    fn patch(
        &self,
        id: BookId,
        patch: &BookPatch,
        check: &VersionCheck,
    ) -> Result<Book, WriteBookError> {
        let patched = self.inner.patch(id, patch, check)?;
        self.note(format!("patched {id}, now version {}", patched.version()));
        Ok(patched)
    }
    fn delete(&self, id: BookId, check: &VersionCheck) -> Result<(), WriteBookError> {
        self.inner.delete(id, check)?;
        self.note(format!("deleted {id}"));
        Ok(())
    }
}

impl<R: IdempotencyRecords> IdempotencyRecords for Audited<R> {
    fn create_once(
        &self,
        key: &IdempotencyKey,
        book: &NewBook,
    ) -> Result<Created, CreateBookError> {
        let created = self.inner.create_once(key, book)?;
        self.note(format!("created {} once for key {key}", created.book.id()));
        Ok(created)
    }
    fn create_many_once(
        &self,
        key: &IdempotencyKey,
        books: &NewBooks,
    ) -> Result<CreatedBooks, CreateBookError> {
        let created = self.inner.create_many_once(key, books)?;
        self.note(format!(
            "created a batch of {} once for key {key}",
            created.books.len()
        ));
        Ok(created)
    }
    fn forget_keys_older_than(&self, age: TimeDelta) -> Result<u64, StorageError> {
        self.inner.forget_keys_older_than(age)
    }
}

impl<R: ChangeFeed> ChangeFeed for Audited<R> {
    fn changes(&self, after: u64, limit: ChangeLimit) -> Result<Vec<Change>, ChangesError> {
        self.inner.changes(after, limit)
    }
    fn last_change(&self) -> Result<u64, StorageError> {
        self.inner.last_change()
    }
    fn forget_changes_older_than(&self, age: TimeDelta) -> Result<u64, StorageError> {
        self.inner.forget_changes_older_than(age)
    }
}

impl<R: BookSearch> BookSearch for Audited<R> {
    fn search(
        &self,
        query: &SearchQuery,
        seen: Option<ConsistencyToken>,
    ) -> Result<SearchResults, ListBooksError> {
        self.inner.search(query, seen)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repository = std::sync::Arc::new(Audited::<InMemoryBookRepository>::default());
    // The caller keeps a handle on what it gives the service.
    let catalogue = BookService::shared(repository.clone());
    let book = catalogue.create_book(&NewBook::parse(&BookInput {
        title: "Dune".into(),
        author: "Frank Herbert".into(),
        ..BookInput::default()
    })?)?;
    // A full replacement is the patch that sets every field.
    let replacement = NewBook::parse(
        &BookInput::default()
            .with(BookField::Title, "Dune")
            .with(BookField::Author, "F. Herbert")
            .with(BookField::Genre, "SF"),
    )?;
    catalogue.patch_book(book.id(), &BookPatch::from(replacement), &VersionCheck::Any)?;
    catalogue.delete_book(book.id(), &VersionCheck::Any)?;
    for entry in repository.trail.lock().map_err(|_| "poisoned")?.iter() {
        println!("{entry}");
    }
    Ok(())
}
