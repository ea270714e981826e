//! A repository in memory, for tests and for embedders who need no persistence.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use chrono::{TimeDelta, Utc};

use crate::{
    Book, BookId, BookPatch, BookReader, BookWriter, Change, ChangeFeed, ChangeKind, ChangeLimit,
    ChangesError, CreateBookError, Created, CreatedBooks, EXPORT_SLICE, ExportQuery, ExportSink,
    GetBookError, IdempotencyKey, IdempotencyRecords, Isbn, IsbnTaken, ListBooksError, ListQuery,
    NewBook, NewBooks, StorageError, Version, VersionCheck, WriteBookError,
};
use crate::{
    BookSearch, Candidate, ConsistencyToken, SearchQuery, SearchResults, fold, query_words, rank,
    words,
};

/// Keeps books in a map behind a mutex. Ids start at 1 and are never reused.
///
/// ```
/// use books_domain::{BookInput, BookService, InMemoryBookRepository, NewBook, VersionCheck};
/// let service = BookService::new(InMemoryBookRepository::default());
/// let book = service.create_book(&NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?)?;
/// service.delete_book(book.id(), &VersionCheck::Any)?;
/// assert!(service.get_book(book.id()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct InMemoryBookRepository {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_id: i64,
    books: BTreeMap<BookId, Book>,
    /// The book that has each ISBN: an ISBN is unique, as in storage.
    isbns: HashMap<Isbn, BookId>,
    /// Each key with what it came with and what it created.
    keys: HashMap<IdempotencyKey, Remembered>,
    /// The change feed, in `seq` order: each write records its change under the same lock.
    changes: Vec<Change>,
    last_seq: u64,
    /// The last `seq` purged (0 when none was).
    purged_through: u64,
}

/// What an idempotency key came with, and what it created.
#[derive(Debug)]
enum Remembered {
    One(NewBook, Book),
    Many(NewBooks, Vec<Book>),
}

impl Remembered {
    fn created_at(&self) -> Option<chrono::DateTime<Utc>> {
        match self {
            Self::One(_, book) => Some(book.created_at()),
            Self::Many(_, books) => books.first().map(Book::created_at),
        }
    }
}

impl InMemoryBookRepository {
    fn state(&self) -> Result<MutexGuard<'_, State>, StorageError> {
        self.state.lock().map_err(|_| {
            StorageError::Unknown(anyhow::anyhow!(
                "the in-memory book store was poisoned by a panic"
            ))
        })
    }

    /// Runs `change` on the stored book once `check` allows it, then bumps version and time.
    fn write(
        &self,
        id: BookId,
        check: &VersionCheck,
        change: impl FnOnce(&mut NewBook),
    ) -> Result<Book, WriteBookError> {
        let mut state = self.state()?;
        let stored = state
            .books
            .get_mut(&id)
            .ok_or(WriteBookError::NotFound(id))?;
        if !check.allows(stored.version()) {
            return Err(WriteBookError::VersionMismatch {
                id,
                current: stored.version(),
            });
        }
        let before = stored.fields().clone();
        let mut fields = before.clone();
        change(&mut fields);
        if fields == before {
            // Nothing changes, so neither does the version: other clients' ETags stay good.
            return Ok(stored.clone());
        }
        if let Some(taken) = state.taken(fields.isbn, Some(id)) {
            return Err(WriteBookError::IsbnTaken(taken));
        }
        if let Some(isbn) = before.isbn {
            state.isbns.remove(&isbn);
        }
        if let Some(isbn) = fields.isbn {
            state.isbns.insert(isbn, id);
        }
        let stored = state
            .books
            .get_mut(&id)
            .ok_or(WriteBookError::NotFound(id))?;
        *stored = Book::new(
            id,
            fields,
            stored.version().next(),
            stored.created_at(),
            Utc::now(),
        );
        let updated = stored.clone();
        state.record(ChangeKind::Updated, &updated, Some(updated.clone()));
        Ok(updated)
    }
}

impl State {
    /// The book other than `except` that has `isbn`, if any.
    fn taken(&self, isbn: Option<Isbn>, except: Option<BookId>) -> Option<IsbnTaken> {
        let isbn = isbn?;
        let existing = *self.isbns.get(&isbn)?;
        (Some(existing) != except).then_some(IsbnTaken { isbn, existing })
    }

    fn insert(&mut self, book: &NewBook) -> Result<Book, CreateBookError> {
        if let Some(taken) = self.taken(book.isbn, None) {
            return Err(CreateBookError::IsbnTaken(taken));
        }
        self.last_id += 1;
        let id = BookId::new(self.last_id)
            .ok_or_else(|| StorageError::Unknown(anyhow::anyhow!("book ids ran out")))?;
        let now = Utc::now();
        let created = Book::new(id, book.clone(), Version::FIRST, now, now);
        self.books.insert(id, created.clone());
        if let Some(isbn) = book.isbn {
            self.isbns.insert(isbn, id);
        }
        self.record(ChangeKind::Created, &created, Some(created.clone()));
        Ok(created)
    }

    fn record(&mut self, kind: ChangeKind, book: &Book, after: Option<Book>) {
        self.last_seq += 1;
        self.changes.push(Change {
            seq: self.last_seq,
            kind,
            book_id: book.id(),
            // A deletion is one more change of the book.
            version: if kind == ChangeKind::Deleted {
                book.version().next()
            } else {
                book.version()
            },
            at: after.as_ref().map_or_else(Utc::now, Book::updated_at),
            book: after,
        });
    }

    /// Inserts every book or, when one fails, none: whatever the batch had stored is taken back.
    fn insert_all(&mut self, books: &NewBooks) -> Result<Vec<Book>, CreateBookError> {
        let (before, seq_before) = (self.last_id, self.last_seq);
        let created = books
            .as_slice()
            .iter()
            .map(|book| self.insert(book))
            .collect::<Result<Vec<_>, _>>();
        if created.is_err() {
            self.books.retain(|id, _| id.get() <= before);
            self.isbns.retain(|_, id| id.get() <= before);
            self.changes.retain(|change| change.seq <= seq_before);
            self.last_seq = seq_before;
        }
        created
    }
}

impl BookReader for InMemoryBookRepository {
    fn export(&self, query: &ExportQuery, sink: &mut ExportSink<'_>) -> Result<(), ListBooksError> {
        // The snapshot: the matching books are copied under the lock, handed over outside it.
        let listing = ListQuery {
            filter: query.filter.clone(),
            sort: query.sort,
            ..ListQuery::default()
        };
        let mut books: Vec<Book> = self
            .state()?
            .books
            .values()
            .filter(|book| query.filter.matches(book))
            .cloned()
            .collect();
        books.sort_by(|a, b| listing.compare(a, b));
        let mut rest = books.into_iter();
        loop {
            let slice: Vec<Book> = rest.by_ref().take(EXPORT_SLICE).collect();
            if slice.is_empty() || sink(slice).is_break() {
                return Ok(());
            }
        }
    }
    fn find_by_id(&self, id: BookId) -> Result<Book, GetBookError> {
        self.state()?
            .books
            .get(&id)
            .cloned()
            .ok_or(GetBookError::NotFound(id))
    }
    fn list(&self, query: &ListQuery, count: usize) -> Result<Vec<Book>, ListBooksError> {
        let state = self.state()?;
        let mut books: Vec<Book> = state
            .books
            .values()
            .filter(|book| query.filter.matches(book) && query.is_after_position(book))
            .cloned()
            .collect();
        books.sort_by(|a, b| query.compare(a, b));
        books.truncate(count);
        Ok(books)
    }
}

impl BookWriter for InMemoryBookRepository {
    fn create(&self, book: &NewBook) -> Result<Book, CreateBookError> {
        self.state()?.insert(book)
    }
    fn create_many(&self, books: &NewBooks) -> Result<Vec<Book>, CreateBookError> {
        self.state()?.insert_all(books)
    }
    fn patch(
        &self,
        id: BookId,
        patch: &BookPatch,
        check: &VersionCheck,
    ) -> Result<Book, WriteBookError> {
        self.write(id, check, |fields| *fields = patch.applied_to(fields))
    }
    fn delete(&self, id: BookId, check: &VersionCheck) -> Result<(), WriteBookError> {
        let mut state = self.state()?;
        let stored = state.books.get(&id).ok_or(WriteBookError::NotFound(id))?;
        if !check.allows(stored.version()) {
            return Err(WriteBookError::VersionMismatch {
                id,
                current: stored.version(),
            });
        }
        if let Some(deleted) = state.books.remove(&id) {
            if let Some(isbn) = deleted.fields().isbn {
                state.isbns.remove(&isbn);
            }
            state.record(ChangeKind::Deleted, &deleted, None);
        }
        Ok(())
    }
}

impl BookSearch for InMemoryBookRepository {
    fn search(
        &self,
        query: &SearchQuery,
        _seen: Option<ConsistencyToken>,
    ) -> Result<SearchResults, ListBooksError> {
        let folded = |text: &str| -> Vec<String> {
            words(text)
                .into_iter()
                .map(|(start, end)| fold(&text[start..end]))
                .collect()
        };
        let query_words = query_words(&query.text, fold);
        let isbn = query.text.isbn();
        // Every admitted book is a candidate: the ranking leaves out those that match nothing.
        let candidates: Vec<Candidate> = self
            .state()?
            .books
            .values()
            .filter(|book| query.admits(book))
            .map(|book| Candidate {
                title_words: folded(book.title().as_str()),
                author_words: folded(book.author().as_str()),
                book: book.clone(),
            })
            .collect();
        let isbn_match = isbn.and_then(|isbn| {
            candidates
                .iter()
                .find(|c| c.book.fields().isbn == Some(isbn))
                .map(|c| c.book.id())
        });
        let ranked = rank(&query_words, candidates, isbn_match);
        Ok(SearchResults::page_of(ranked, query))
    }
}

impl IdempotencyRecords for InMemoryBookRepository {
    fn create_once(
        &self,
        key: &IdempotencyKey,
        book: &NewBook,
    ) -> Result<Created, CreateBookError> {
        // One lock around the check and the insert: a concurrent call with the key waits.
        let mut state = self.state()?;
        match state.keys.get(key) {
            Some(Remembered::One(fields, first)) if fields == book => {
                return Ok(Created {
                    book: first.clone(),
                    replayed: true,
                });
            }
            Some(_) => return Err(CreateBookError::KeyReused),
            None => {}
        }
        let created = state.insert(book)?;
        state
            .keys
            .insert(key.clone(), Remembered::One(book.clone(), created.clone()));
        Ok(Created {
            book: created,
            replayed: false,
        })
    }
    fn create_many_once(
        &self,
        key: &IdempotencyKey,
        books: &NewBooks,
    ) -> Result<CreatedBooks, CreateBookError> {
        let mut state = self.state()?;
        match state.keys.get(key) {
            Some(Remembered::Many(given, first)) if given == books => {
                return Ok(CreatedBooks {
                    books: first.clone(),
                    replayed: true,
                });
            }
            Some(_) => return Err(CreateBookError::KeyReused),
            None => {}
        }
        let created = state.insert_all(books)?;
        state.keys.insert(
            key.clone(),
            Remembered::Many(books.clone(), created.clone()),
        );
        Ok(CreatedBooks {
            books: created,
            replayed: false,
        })
    }
    fn forget_keys_older_than(&self, age: TimeDelta) -> Result<u64, StorageError> {
        let mut state = self.state()?;
        let before = state.keys.len();
        let cutoff = Utc::now() - age;
        state
            .keys
            .retain(|_, remembered| remembered.created_at().is_some_and(|at| at >= cutoff));
        Ok((before - state.keys.len()) as u64)
    }
}

impl ChangeFeed for InMemoryBookRepository {
    fn changes(&self, after: u64, limit: ChangeLimit) -> Result<Vec<Change>, ChangesError> {
        let state = self.state()?;
        if after < state.purged_through {
            return Err(ChangesError::Expired {
                purged_through: state.purged_through,
            });
        }
        if after > state.last_seq {
            return Err(ChangesError::Ahead {
                after,
                newest: state.last_seq,
            });
        }
        // Sorted by seq: the first change after `after` is found by bisection.
        let start = state.changes.partition_point(|change| change.seq <= after);
        Ok(state.changes[start..]
            .iter()
            .take(limit.get())
            .cloned()
            .collect())
    }
    fn last_change(&self) -> Result<u64, StorageError> {
        Ok(self.state()?.last_seq)
    }
    fn forget_changes_older_than(&self, age: TimeDelta) -> Result<u64, StorageError> {
        let mut state = self.state()?;
        let cutoff = Utc::now() - age;
        let old = state.changes.partition_point(|change| change.at < cutoff);
        if let Some(last) = state.changes.get(old.wrapping_sub(1)) {
            state.purged_through = last.seq;
        }
        state.changes.drain(..old);
        Ok(old as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BookField, BookInput, BookService, PageSize, Raw, Sort, SortKey};

    fn service_with(books: &[(&str, &str, Option<&str>)]) -> BookService {
        let service = BookService::new(InMemoryBookRepository::default());
        for (title, author, genre) in books {
            let input = BookInput::default()
                .with(BookField::Title, *title)
                .with(BookField::Author, *author)
                .with(BookField::Genre, genre.map_or(Raw::Absent, Raw::from));
            let draft = NewBook::parse(&input).expect("valid book");
            service.create_book(&draft).expect("created");
        }
        service
    }

    fn titles(service: &BookService, mut query: ListQuery) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let page = service.list_books(&query).expect("listed");
            seen.extend(page.items.iter().map(|b| b.title().as_str().to_owned()));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return seen,
            }
        }
    }

    #[test]
    fn ids_are_never_reused_after_a_delete() {
        let service = service_with(&[("A", "X", None)]);
        service
            .delete_book(BookId::new(1).unwrap(), &VersionCheck::Any)
            .unwrap();
        let next = service
            .create_book(
                &NewBook::parse(&BookInput {
                    title: "B".into(),
                    author: "X".into(),
                    ..BookInput::default()
                })
                .unwrap(),
            )
            .unwrap();
        assert_eq!(next.id().get(), 2);
    }

    #[test]
    fn following_positions_visits_every_book_once_with_duplicate_sort_keys() {
        let service = service_with(&[
            ("B", "X", None),
            ("A", "Y", None),
            ("B", "Z", None),
            ("C", "X", None),
            ("B", "Y", None),
        ]);
        let query = ListQuery {
            sort: Sort {
                key: SortKey::Title,
                descending: true,
            },
            limit: PageSize::new(2).unwrap(),
            ..ListQuery::default()
        };
        assert_eq!(titles(&service, query), ["C", "B", "B", "B", "A"]);
    }

    #[test]
    fn forgotten_keys_create_anew() {
        let service = service_with(&[]);
        let key = IdempotencyKey::new("k-2").unwrap();
        let dune = NewBook::parse(&BookInput {
            title: "Dune".into(),
            author: "Frank Herbert".into(),
            ..BookInput::default()
        })
        .unwrap();
        let first = service.create_book_once(&key, &dune).unwrap();
        assert_eq!(service.forget_expired_keys().unwrap(), 0);
        let repository = InMemoryBookRepository::default();
        repository.create_once(&key, &dune).unwrap();
        assert_eq!(
            repository
                .forget_keys_older_than(TimeDelta::zero() - TimeDelta::seconds(1))
                .unwrap(),
            1
        );
        assert!(!repository.create_once(&key, &dune).unwrap().replayed);
        assert!(!first.replayed);
    }

    #[test]
    fn the_feed_records_every_write_once_in_order_and_purged_changes_are_expired() {
        let service = service_with(&[("A", "X", None), ("B", "X", None)]);
        let limit = crate::ChangeLimit::new(1000).unwrap();
        let a = BookId::new(1).unwrap();
        let patch = BookPatch::parse(&BookInput {
            genre: "SF".into(),
            ..BookInput::default()
        })
        .unwrap();
        service.patch_book(a, &patch, &VersionCheck::Any).unwrap();
        // The same patch again changes nothing, and records nothing.
        service.patch_book(a, &patch, &VersionCheck::Any).unwrap();
        service.delete_book(a, &VersionCheck::Any).unwrap();
        let page = service.changes(0, limit).unwrap();
        let seen: Vec<(u64, ChangeKind, i64)> = page
            .items
            .iter()
            .map(|c| (c.seq, c.kind, c.version.get()))
            .collect();
        assert_eq!(
            seen,
            [
                (1, ChangeKind::Created, 1),
                (2, ChangeKind::Created, 1),
                (3, ChangeKind::Updated, 2),
                (4, ChangeKind::Deleted, 3),
            ]
        );
        assert_eq!(
            service
                .changes(2, crate::ChangeLimit::new(1).unwrap())
                .unwrap()
                .next_after,
            3
        );
        assert_eq!(service.last_change().unwrap(), 4);
        assert_eq!(
            service.forget_old_changes(TimeDelta::seconds(-1)).unwrap(),
            4
        );
        assert!(matches!(
            service.changes(3, limit),
            Err(ChangesError::Expired { purged_through: 4 })
        ));
        assert!(service.changes(4, limit).unwrap().items.is_empty());
        assert!(matches!(
            service.changes(5, limit),
            Err(ChangesError::Ahead {
                after: 5,
                newest: 4
            })
        ));
    }
}

#[cfg(test)]
mod contract {
    crate::repository_contract!(|| ((), crate::InMemoryBookRepository::default()));
}
