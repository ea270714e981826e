//! Whole catalogues in and out: creating many books in one step, and reading every matching book
//! from one snapshot.

use std::collections::HashMap;
use std::ops::ControlFlow;

use thiserror::Error;

use crate::{Book, BookField, BookFilter, NewBook, RequestDigest, Sort};

/// The most books one batch may create.
pub const MAX_BATCH: usize = 1000;

/// 1 to [`MAX_BATCH`] new books, created together or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBooks(Vec<NewBook>);

/// Why a list of books given to [`NewBooks::new`] is not a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InvalidBatch {
    /// The list is empty or longer than [`MAX_BATCH`].
    #[error("a batch must hold 1 to {MAX_BATCH} books, not {0}")]
    Size(usize),
    /// Two books of the batch have one ISBN: both cannot be created, so neither is.
    #[error("books[{again}] has the ISBN of books[{first}]")]
    RepeatedIsbn {
        /// The position of the first book with the ISBN.
        first: usize,
        /// The position of a later book with the same ISBN.
        again: usize,
    },
}

impl NewBooks {
    /// Checks a batch: its size, and that no two of its books have one ISBN.
    ///
    /// ```
    /// use books_domain::{BookInput, NewBook, NewBooks};
    /// let dune = NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?;
    /// assert_eq!(NewBooks::new(vec![dune])?.len(), 1);
    /// assert!(NewBooks::new(Vec::new()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidBatch`] when `books` is empty or longer than [`MAX_BATCH`], or two of them have
    /// one ISBN (the first such pair is named).
    pub fn new(books: Vec<NewBook>) -> Result<Self, InvalidBatch> {
        if !(1..=MAX_BATCH).contains(&books.len()) {
            return Err(InvalidBatch::Size(books.len()));
        }
        let mut seen = HashMap::with_capacity(books.len());
        for (again, book) in books.iter().enumerate() {
            if let Some(isbn) = book.isbn
                && let Some(first) = seen.insert(isbn, again)
            {
                return Err(InvalidBatch::RepeatedIsbn { first, again });
            }
        }
        Ok(Self(books))
    }

    /// The books, in the order given.
    pub fn as_slice(&self) -> &[NewBook] {
        &self.0
    }

    /// How many books.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a batch holds at least one book.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What an idempotent create of this batch asked for: every book, in order (see
    /// [`RequestDigest`]).
    ///
    /// ```
    /// use books_domain::{BookField, BookInput, NewBook, NewBooks};
    /// let book = |t: &str| NewBook::parse(&BookInput::default().with(BookField::Title, t).with(BookField::Author, "Anon")).unwrap();
    /// let ab = NewBooks::new(vec![book("A"), book("B")])?;
    /// let ba = NewBooks::new(vec![book("B"), book("A")])?;
    /// assert!(!ab.digest().is_of_books(ba.as_slice()));
    /// assert!(ab.digest().is_of_books(ab.as_slice()));
    /// # Ok::<(), books_domain::InvalidBatch>(())
    /// ```
    pub fn digest(&self) -> RequestDigest {
        RequestDigest::of_books(&self.0, BookField::ALL.len())
    }
}

/// The outcome of an idempotent batch create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedBooks {
    /// The books as the first request with this key created them, in input order.
    pub books: Vec<Book>,
    /// True when this is a replay: the key had been used before, and nothing new was created.
    pub replayed: bool,
}

/// Which books an export reads, and in what order: a listing without pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportQuery {
    /// Which books.
    pub filter: BookFilter,
    /// In what order.
    pub sort: Sort,
}

/// Where an export's books go, a slice at a time, in order. Answering [`ControlFlow::Break`]
/// stops the export at once (its reader has gone); storage then lets go of what it holds.
pub type ExportSink<'a> = dyn FnMut(Vec<Book>) -> ControlFlow<()> + 'a;

/// How many books an export hands its sink at a time, at most: enough to make each read worth
/// its round trip, few enough that memory stays flat whatever the catalogue's size.
pub const EXPORT_SLICE: usize = 1000;
