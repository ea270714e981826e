//! Listing books: filters, sort orders and keyset positions.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use crate::book::checked_text;
use crate::{Author, Book, BookId, Genre, Isbn, TextError};

/// How many books one page holds: 1 to 100, 20 unless the caller says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u8);

impl PageSize {
    /// The largest page.
    pub const MAX: u8 = 100;

    /// A page size, if `raw` is between 1 and [`PageSize::MAX`].
    pub fn new(raw: u64) -> Option<Self> {
        u8::try_from(raw)
            .ok()
            .filter(|n| (1..=Self::MAX).contains(n))
            .map(Self)
    }

    /// The size.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self(20)
    }
}

/// Text to look for, case-insensitively, in titles and authors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

impl SearchTerm {
    /// Trims `raw` and checks it like any book text.
    ///
    /// # Errors
    ///
    /// [`TextError`] when the trimmed text is empty, too long or holds a control character.
    pub fn new(raw: &str) -> Result<Self, TextError> {
        checked_text(raw).map(Self)
    }

    /// The text to look for.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which books a listing shows. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookFilter {
    /// Only books by this author (case-insensitive exact match).
    pub author: Option<Author>,
    /// Only books of this genre (case-insensitive exact match).
    pub genre: Option<Genre>,
    /// Only books whose title or author contains this text (case-insensitive).
    pub search: Option<SearchTerm>,
    /// Only the book with this ISBN.
    pub isbn: Option<Isbn>,
}

impl BookFilter {
    /// True when `book` passes the filter. Storage adapters may use their own, equivalent, test.
    pub fn matches(&self, book: &Book) -> bool {
        let same = |a: &str, b: &str| a.to_lowercase() == b.to_lowercase();
        self.author
            .as_ref()
            .is_none_or(|author| same(author.as_str(), book.author().as_str()))
            && self.genre.as_ref().is_none_or(|genre| {
                book.genre()
                    .is_some_and(|g| same(genre.as_str(), g.as_str()))
            })
            && self
                .isbn
                .is_none_or(|isbn| book.fields().isbn == Some(isbn))
            && self.search.as_ref().is_none_or(|term| {
                let needle = term.as_str().to_lowercase();
                book.title().as_str().to_lowercase().contains(&needle)
                    || book.author().as_str().to_lowercase().contains(&needle)
            })
    }
}

/// What a listing is ordered by. Ties are always broken by id, in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SortKey {
    /// The id, which is also the order of creation.
    #[default]
    Id,
    /// The title.
    Title,
    /// The author.
    Author,
    /// The time of creation.
    CreatedAt,
}

impl SortKey {
    /// The key's name as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Title => "title",
            Self::Author => "author",
            Self::CreatedAt => "created_at",
        }
    }
}

/// An order for listing: a key and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sort {
    /// The key.
    pub key: SortKey,
    /// True for descending order.
    pub descending: bool,
}

impl Sort {
    /// Reads `id`, `title`, `author` or `created_at`, optionally prefixed with `-` for descending.
    ///
    /// ```
    /// use books_domain::{Sort, SortKey};
    /// assert_eq!(Sort::parse("-title"), Some(Sort { key: SortKey::Title, descending: true }));
    /// assert_eq!(Sort::parse("price"), None);
    /// ```
    pub fn parse(raw: &str) -> Option<Self> {
        let (descending, name) = match raw.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, raw),
        };
        let key = [
            SortKey::Id,
            SortKey::Title,
            SortKey::Author,
            SortKey::CreatedAt,
        ]
        .into_iter()
        .find(|key| key.name() == name)?;
        Some(Self { key, descending })
    }

    /// The order as [`Sort::parse`] reads it.
    pub fn to_param(self) -> String {
        format!(
            "{}{}",
            if self.descending { "-" } else { "" },
            self.key.name()
        )
    }
}

/// The value of a sort key in one book.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    /// The id is the whole key: no further value.
    Id,
    /// A title or an author.
    Text(String),
    /// A creation time.
    Time(DateTime<Utc>),
}

/// Where a page ended: the sort key's value in its last book, and that book's id.
/// The next page starts strictly after this position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The sort key.
    pub key: SortKey,
    /// The sort key's value in the last book.
    pub value: SortValue,
    /// The last book's id.
    pub id: BookId,
}

impl Position {
    /// The position of `book` in a listing sorted by `key`.
    pub fn of(book: &Book, key: SortKey) -> Self {
        let value = match key {
            SortKey::Id => SortValue::Id,
            SortKey::Title => SortValue::Text(book.title().as_str().to_owned()),
            SortKey::Author => SortValue::Text(book.author().as_str().to_owned()),
            SortKey::CreatedAt => SortValue::Time(book.created_at()),
        };
        Self {
            key,
            value,
            id: book.id(),
        }
    }

    /// True when the value has the type the key needs.
    pub fn is_consistent(&self) -> bool {
        matches!(
            (self.key, &self.value),
            (SortKey::Id, SortValue::Id)
                | (SortKey::Title | SortKey::Author, SortValue::Text(_))
                | (SortKey::CreatedAt, SortValue::Time(_))
        )
    }
}

/// A page was asked for that continues a listing (from its cursor) with another sort or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a cursor continues its own listing: another sort or filter cannot be given with it")]
pub struct CursorConflict;

impl BookFilter {
    /// True when each condition given here is also `other`'s: a request that repeats its
    /// cursor's filters (or gives none) agrees with it; one that changes them does not.
    pub fn agrees_with(&self, other: &Self) -> bool {
        fn same<T: PartialEq>(mine: Option<&T>, theirs: Option<&T>) -> bool {
            mine.is_none_or(|mine| Some(mine) == theirs)
        }
        same(self.author.as_ref(), other.author.as_ref())
            && same(self.genre.as_ref(), other.genre.as_ref())
            && same(self.search.as_ref(), other.search.as_ref())
            && same(self.isbn.as_ref(), other.isbn.as_ref())
    }
}

/// One listing request: which books, in what order, how many, and after which position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Which books.
    pub filter: BookFilter,
    /// In what order.
    pub sort: Sort,
    /// How many at most.
    pub limit: PageSize,
    /// Start strictly after this position (from the previous page), or at the beginning.
    /// Its key must be `sort.key`; the service refuses a query where it is not.
    pub after: Option<Position>,
}

impl ListQuery {
    /// The next page of `continued` (a listing and its position, as a cursor carries them) for a
    /// request that may repeat the listing's sort and filters but not change them, and whose
    /// page size, when it gives one, wins over the listing's.
    ///
    /// ```
    /// use books_domain::{Author, BookFilter, ListQuery, PageSize, Sort};
    /// let by_herbert = BookFilter { author: Some(Author::new("Frank Herbert")?), ..BookFilter::default() };
    /// let continued = ListQuery { filter: by_herbert.clone(), ..ListQuery::default() };
    /// let next = ListQuery::resume(continued.clone(), None, &by_herbert, PageSize::new(5))?;
    /// assert_eq!((next.filter, next.limit.get()), (by_herbert, 5));
    /// let other = BookFilter { author: Some(Author::new("Le Guin")?), ..BookFilter::default() };
    /// assert!(ListQuery::resume(continued, None, &other, None).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`CursorConflict`] when `sort` or `filter` differs from the listing's.
    pub fn resume(
        continued: Self,
        sort: Option<Sort>,
        filter: &BookFilter,
        limit: Option<PageSize>,
    ) -> Result<Self, CursorConflict> {
        if sort.is_some_and(|sort| sort != continued.sort) || !filter.agrees_with(&continued.filter)
        {
            return Err(CursorConflict);
        }
        Ok(Self {
            limit: limit.unwrap_or(continued.limit),
            ..continued
        })
    }

    /// Compares two books in this query's order (the sort key, then the id).
    pub fn compare(&self, a: &Book, b: &Book) -> Ordering {
        let key = self.sort.key;
        let order = Position::of(a, key)
            .value
            .cmp(&Position::of(b, key).value)
            .then(a.id().cmp(&b.id()));
        if self.sort.descending {
            order.reverse()
        } else {
            order
        }
    }

    /// True when `book` comes strictly after this query's position (always, without one).
    pub fn is_after_position(&self, book: &Book) -> bool {
        self.after.as_ref().is_none_or(|after| {
            let mine = Position::of(book, self.sort.key);
            let order = (&mine.value, mine.id).cmp(&(&after.value, after.id));
            if self.sort.descending {
                order.is_lt()
            } else {
                order.is_gt()
            }
        })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The books, in order.
    pub items: Vec<Book>,
    /// Where the next page starts, or `None` when this page is the last.
    pub next: Option<Position>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_outside_one_to_a_hundred_are_refused() {
        assert!(PageSize::new(0).is_none());
        assert!(PageSize::new(101).is_none());
        assert!(PageSize::new(u64::MAX).is_none());
        assert_eq!(PageSize::new(100).map(PageSize::get), Some(100));
        assert_eq!(PageSize::default().get(), 20);
    }

    #[test]
    fn every_sort_key_reads_back_in_both_directions() {
        for raw in [
            "id",
            "-id",
            "title",
            "-title",
            "author",
            "-author",
            "created_at",
            "-created_at",
        ] {
            assert_eq!(Sort::parse(raw).map(Sort::to_param).as_deref(), Some(raw));
        }
        assert_eq!(Sort::parse("--id"), None);
        assert_eq!(Sort::parse(""), None);
    }
}
