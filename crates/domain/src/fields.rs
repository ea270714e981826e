//! A book's fields as callers write them, described once.
//!
//! [`BookField::ALL`] is the one list of a book's writable fields. Every reader and writer walks
//! it instead of spelling the fields again: the JSON and CSV readers fill a [`BookInput`] field
//! by field, the CSV writer and the document's rules take their columns from it, storage builds
//! its statements from it, and the digest of an idempotent create covers every field in it. A new
//! field is a new entry here (its name, its [`FieldKind`], whether it is required), a slot in
//! [`BookInput`], [`NewBook`] and [`BookPatch`], and the lines that check it.

use std::fmt;

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::{Author, Genre, Isbn, IsbnError, PublishedYear, TextError, Title, YearOutOfRange};

/// A field of a book that a caller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookField {
    /// The title.
    Title,
    /// The author.
    Author,
    /// The genre.
    Genre,
    /// The ISBN, as its 13 digits.
    Isbn,
    /// The year the edition was published.
    PublishedYear,
}

/// What a field holds, as readers and storage need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text: trimmed, 1 to [`crate::MAX_TEXT_CHARS`] characters, no control characters. An
    /// optional text field takes blank text as "none".
    Text,
    /// An ISBN: text on the wire, 10 or 13 digits with hyphens or spaces on input, the 13 digits
    /// on output. Blank text is "none".
    Isbn,
    /// A year: an integer on the wire, -3000 to 2100.
    Year,
}

impl FieldKind {
    /// True when the field is text on the wire (a JSON string), false for an integer.
    pub fn is_text(self) -> bool {
        matches!(self, Self::Text | Self::Isbn)
    }
}

impl BookField {
    /// Every field, in the order they are shown, read and reported.
    pub const ALL: [Self; 5] = [
        Self::Title,
        Self::Author,
        Self::Genre,
        Self::Isbn,
        Self::PublishedYear,
    ];

    /// The field's name as clients spell it (a JSON member, a CSV column, a table column).
    pub fn name(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Author => "author",
            Self::Genre => "genre",
            Self::Isbn => "isbn",
            Self::PublishedYear => "published_year",
        }
    }

    /// What it holds.
    pub fn kind(self) -> FieldKind {
        match self {
            Self::Title | Self::Author | Self::Genre => FieldKind::Text,
            Self::Isbn => FieldKind::Isbn,
            Self::PublishedYear => FieldKind::Year,
        }
    }

    /// True when a new book must have it (and a patch may not clear it).
    pub fn required(self) -> bool {
        matches!(self, Self::Title | Self::Author)
    }

    /// The field of this name, if any.
    ///
    /// ```
    /// use books_domain::BookField;
    /// assert_eq!(BookField::named("genre"), Some(BookField::Genre));
    /// assert_eq!(BookField::named("Genre"), None);
    /// ```
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.name() == name)
    }
}

impl fmt::Display for BookField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One field as a caller gave it, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Raw {
    /// Not given.
    #[default]
    Absent,
    /// Given as null: "none" in a new book, "clear it" in a patch.
    Null,
    /// Text, from a format whose values have types (a JSON string).
    Text(String),
    /// Text from a format where every value is text (a CSV cell): read as the field's kind.
    Cell(String),
    /// An integer (a JSON number without a fraction).
    Integer(i64),
    /// A value of another type (a JSON boolean, array, object or fractional number).
    Other,
}

impl From<&str> for Raw {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// A book's fields as a caller gave them: what [`NewBook::parse`] and [`BookPatch::parse`] check.
///
/// ```
/// use books_domain::{BookInput, NewBook};
/// let dune = NewBook::parse(&BookInput { title: "Dune".into(), author: "Frank Herbert".into(), ..BookInput::default() })?;
/// assert_eq!(dune.genre, None);
/// # Ok::<(), books_domain::InvalidBook>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookInput {
    /// The title.
    pub title: Raw,
    /// The author.
    pub author: Raw,
    /// The genre.
    pub genre: Raw,
    /// The ISBN.
    pub isbn: Raw,
    /// The year of publication.
    pub published_year: Raw,
}

impl BookInput {
    /// The raw value of `field`.
    pub fn field(&self, field: BookField) -> &Raw {
        match field {
            BookField::Title => &self.title,
            BookField::Author => &self.author,
            BookField::Genre => &self.genre,
            BookField::Isbn => &self.isbn,
            BookField::PublishedYear => &self.published_year,
        }
    }

    /// This input with `field` set to `raw`: for building an input without naming every field.
    ///
    /// ```
    /// use books_domain::{BookField, BookInput, NewBook};
    /// let input = BookInput::default()
    ///     .with(BookField::Title, "Dune")
    ///     .with(BookField::Author, "Frank Herbert");
    /// assert!(NewBook::parse(&input).is_ok());
    /// ```
    #[must_use]
    pub fn with(mut self, field: BookField, raw: impl Into<Raw>) -> Self {
        *self.field_mut(field) = raw.into();
        self
    }

    /// The raw value of `field`, to fill in.
    pub fn field_mut(&mut self, field: BookField) -> &mut Raw {
        match field {
            BookField::Title => &mut self.title,
            BookField::Author => &mut self.author,
            BookField::Genre => &mut self.genre,
            BookField::Isbn => &mut self.isbn,
            BookField::PublishedYear => &mut self.published_year,
        }
    }
}

/// What is wrong with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FieldProblem {
    /// A required field was not given (or was given as null).
    #[error("is required")]
    Missing,
    /// A required field was explicitly set to null in a patch.
    #[error("must not be null")]
    Null,
    /// The value is of the wrong type (a number where text belongs).
    #[error("must be {expected}")]
    WrongType {
        /// What the field takes ("a string").
        expected: &'static str,
    },
    /// The text breaks a rule.
    #[error(transparent)]
    Text(#[from] TextError),
    /// Not an ISBN.
    #[error(transparent)]
    Isbn(#[from] IsbnError),
    /// A year out of range.
    #[error(transparent)]
    Year(#[from] YearOutOfRange),
}

/// One invalid field and what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{field} {problem}")]
pub struct FieldError {
    /// The field.
    pub field: BookField,
    /// What is wrong with it.
    pub problem: FieldProblem,
}

/// The input was refused; `errors` names every invalid field, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct InvalidBook {
    /// Each invalid field, in the order of [`BookField::ALL`].
    pub errors: Vec<FieldError>,
}

impl fmt::Display for InvalidBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A checked value of one field, built from what a caller gave.
trait FieldType: Sized {
    /// From text (a JSON string, or any CSV cell).
    fn from_text(text: &str) -> Result<Self, FieldProblem>;
}

macro_rules! text_field_type {
    ($($name:ident),*) => {$(
        impl FieldType for $name {
            fn from_text(text: &str) -> Result<Self, FieldProblem> {
                Ok(Self::new(text)?)
            }
        }
    )*};
}
text_field_type!(Title, Author, Genre);

impl FieldType for Isbn {
    fn from_text(text: &str) -> Result<Self, FieldProblem> {
        Ok(Self::parse(text)?)
    }
}

impl FieldType for PublishedYear {
    fn from_text(text: &str) -> Result<Self, FieldProblem> {
        let year: i64 = text.trim().parse().map_err(|_| FieldProblem::WrongType {
            expected: "an integer",
        })?;
        Ok(Self::new(year)?)
    }
}

/// A field's raw value, read as the field's kind: `None` for absent, null or (optional fields)
/// blank text; what a patch does with `None` depends on whether the member was there at all.
fn read<T: FieldType>(field: BookField, raw: &Raw) -> Result<Option<T>, FieldProblem> {
    let text = field.kind().is_text();
    match raw {
        Raw::Absent | Raw::Null => Ok(None),
        // A CSV cell is text whatever the field holds; a JSON string only where text belongs.
        Raw::Cell(value) | Raw::Text(value) if text || matches!(raw, Raw::Cell(_)) => {
            if !field.required() && value.trim().is_empty() {
                Ok(None)
            } else {
                T::from_text(value).map(Some)
            }
        }
        Raw::Integer(year) if !text => T::from_text(&year.to_string()).map(Some),
        _ if text => Err(FieldProblem::WrongType {
            expected: "a string",
        }),
        _ => Err(FieldProblem::WrongType {
            expected: "an integer",
        }),
    }
}

/// Collects field errors while the fields of one input are checked.
#[derive(Default)]
struct Checker(Vec<FieldError>);

impl Checker {
    fn check<T>(&mut self, field: BookField, result: Result<T, FieldProblem>) -> Option<T> {
        result
            .map_err(|problem| self.0.push(FieldError { field, problem }))
            .ok()
    }

    /// The field of a new book: a required one must be there.
    fn new_value<T: FieldType>(
        &mut self,
        input: &BookInput,
        field: BookField,
    ) -> Option<Option<T>> {
        let value = read(field, input.field(field)).and_then(|value| match value {
            None if field.required() => Err(FieldProblem::Missing),
            value => Ok(value),
        });
        self.check(field, value)
    }

    /// The member of a patch: `None` keeps, `Some(None)` clears (refused for a required field).
    fn patch_value<T: FieldType>(
        &mut self,
        input: &BookInput,
        field: BookField,
    ) -> Option<Option<Option<T>>> {
        let raw = input.field(field);
        let value = read(field, raw).and_then(|value| match (raw, value) {
            (Raw::Absent, _) => Ok(None),
            (Raw::Null, _) if field.required() => Err(FieldProblem::Null),
            (_, value) => Ok(Some(value)),
        });
        self.check(field, value)
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, InvalidBook> {
        match value() {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(InvalidBook { errors: self.0 }),
        }
    }
}

/// One checked field's value, as storage and writers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// The field has no value (an optional field left empty).
    None,
    /// Text.
    Text(&'a str),
    /// An integer.
    Integer(i64),
}

impl FieldValue<'_> {
    /// The value as text (`None` when it has none): for CSV cells and digests.
    pub fn to_text(self) -> Option<String> {
        match self {
            Self::None => None,
            Self::Text(text) => Some(text.to_owned()),
            Self::Integer(number) => Some(number.to_string()),
        }
    }
}

fn optional_text(value: Option<&str>) -> FieldValue<'_> {
    value.map_or(FieldValue::None, FieldValue::Text)
}

fn optional_year(value: Option<PublishedYear>) -> FieldValue<'static> {
    value.map_or(FieldValue::None, |year| {
        FieldValue::Integer(i64::from(year.get()))
    })
}

/// The fields a caller writes, checked: those of a new book, of a full replacement, or of a
/// stored book ([`crate::Book::fields`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBook {
    /// The title.
    pub title: Title,
    /// The author.
    pub author: Author,
    /// The genre, if any.
    pub genre: Option<Genre>,
    /// The ISBN, if any.
    pub isbn: Option<Isbn>,
    /// The year of publication, if known.
    pub published_year: Option<PublishedYear>,
}

impl NewBook {
    /// Checks raw fields and reports every invalid one.
    ///
    /// ```
    /// use books_domain::{BookField, BookInput, NewBook};
    /// let refused = NewBook::parse(&BookInput { title: " ".into(), genre: "Poetry".into(), ..BookInput::default() }).unwrap_err();
    /// let fields: Vec<_> = refused.errors.iter().map(|e| e.field).collect();
    /// assert_eq!(fields, [BookField::Title, BookField::Author]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidBook`] listing each missing or invalid field.
    pub fn parse(input: &BookInput) -> Result<Self, InvalidBook> {
        let mut checker = Checker::default();
        let title = checker.new_value(input, BookField::Title);
        let author = checker.new_value(input, BookField::Author);
        let genre = checker.new_value(input, BookField::Genre);
        let isbn = checker.new_value(input, BookField::Isbn);
        let published_year = checker.new_value(input, BookField::PublishedYear);
        checker.finish(|| {
            Some(Self {
                title: title??,
                author: author??,
                genre: genre?,
                isbn: isbn?,
                published_year: published_year?,
            })
        })
    }

    /// The value of `field`.
    pub fn value(&self, field: BookField) -> FieldValue<'_> {
        match field {
            BookField::Title => FieldValue::Text(self.title.as_str()),
            BookField::Author => FieldValue::Text(self.author.as_str()),
            BookField::Genre => optional_text(self.genre.as_ref().map(Genre::as_str)),
            BookField::Isbn => optional_text(self.isbn.as_ref().map(Isbn::as_str)),
            BookField::PublishedYear => optional_year(self.published_year),
        }
    }

    /// Feeds the first `fields` fields of [`BookField::ALL`], in order, to a digest. Each value is
    /// length-prefixed and "none" is told from empty, so that no two different inputs run
    /// together into the same bytes.
    pub(crate) fn digest_into(&self, hasher: &mut Sha256, fields: usize) {
        for field in BookField::ALL.into_iter().take(fields) {
            match self.value(field).to_text() {
                None => hasher.update([0]),
                Some(text) => {
                    hasher.update([1]);
                    hasher.update((text.len() as u64).to_be_bytes());
                    hasher.update(text.as_bytes());
                }
            }
        }
    }

    /// True when a field past the first `fields` of [`BookField::ALL`] has a value.
    pub(crate) fn has_values_past(&self, fields: usize) -> bool {
        BookField::ALL
            .into_iter()
            .skip(fields)
            .any(|field| self.value(field) != FieldValue::None)
    }

    /// What an idempotent create of this book asked for, for telling a replay (the same fields)
    /// from a reuse of its key (other fields), and a single create from a batch of one.
    ///
    /// ```
    /// use books_domain::{BookField, BookInput, NewBook, NewBooks};
    /// let input = BookInput::default().with(BookField::Title, "Dune").with(BookField::Author, "Frank Herbert");
    /// let dune = NewBook::parse(&input)?;
    /// assert!(dune.clone().digest().is_of_book(&dune));
    /// assert!(!NewBooks::new(vec![dune.clone()])?.digest().is_of_book(&dune));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn digest(&self) -> RequestDigest {
        RequestDigest::of_book(self, BookField::ALL.len())
    }
}

/// A digest of what an idempotent create asked for, over the first `fields` fields of
/// [`BookField::ALL`]: all of them when it is made, fewer for a key stored before a field was
/// added. A retry is compared over the same fields, and must leave the later ones empty; so a
/// key stored by an older release still replays after an upgrade that added a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestDigest {
    /// The SHA-256 digest.
    pub bytes: [u8; 32],
    /// How many fields of [`BookField::ALL`] it covers.
    pub fields: usize,
}

impl RequestDigest {
    /// The digest of a single create of `book`, over the first `fields` fields.
    pub fn of_book(book: &NewBook, fields: usize) -> Self {
        let mut hasher = Sha256::new();
        // A batch's bytes start with a field's marker (0 or 1): 2 cannot begin one.
        hasher.update([2]);
        book.digest_into(&mut hasher, fields);
        Self {
            bytes: hasher.finalize().into(),
            fields,
        }
    }

    /// The digest of a batch create of `books`, in order, over the first `fields` fields.
    pub fn of_books(books: &[NewBook], fields: usize) -> Self {
        let mut hasher = Sha256::new();
        for book in books {
            book.digest_into(&mut hasher, fields);
        }
        Self {
            bytes: hasher.finalize().into(),
            fields,
        }
    }

    /// True when this is the digest of a single create of `book`.
    pub fn is_of_book(&self, book: &NewBook) -> bool {
        !book.has_values_past(self.fields) && Self::of_book(book, self.fields).bytes == self.bytes
    }

    /// True when this is the digest of a batch create of `books`, in this order.
    pub fn is_of_books(&self, books: &[NewBook]) -> bool {
        !books.iter().any(|book| book.has_values_past(self.fields))
            && Self::of_books(books, self.fields).bytes == self.bytes
    }
}

/// One member of a JSON merge patch (RFC 7396): left out, set to null, or set to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchValue<T> {
    /// The member was left out: keep the stored value.
    #[default]
    Keep,
    /// The member was null: clear the stored value.
    Clear,
    /// The member has a value: store it.
    Set(T),
}

/// A merge patch of a book: each field is kept, or replaced. Only optional fields can be cleared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookPatch {
    /// The new title, if it changes.
    pub title: Option<Title>,
    /// The new author, if it changes.
    pub author: Option<Author>,
    /// The new genre (`Some(None)` clears it), if it changes.
    pub genre: Option<Option<Genre>>,
    /// The new ISBN (`Some(None)` clears it), if it changes.
    pub isbn: Option<Option<Isbn>>,
    /// The new year of publication (`Some(None)` clears it), if it changes.
    pub published_year: Option<Option<PublishedYear>>,
}

/// A replacement is the patch that sets every field (an optional field left out is cleared).
impl From<NewBook> for BookPatch {
    fn from(book: NewBook) -> Self {
        Self {
            title: Some(book.title),
            author: Some(book.author),
            genre: Some(book.genre),
            isbn: Some(book.isbn),
            published_year: Some(book.published_year),
        }
    }
}

impl BookPatch {
    /// Checks the members of a merge patch and reports every invalid one. A null required field
    /// is refused (a book always has it); a null or blank optional one is cleared.
    ///
    /// ```
    /// use books_domain::{BookInput, BookPatch, Raw};
    /// let patch = BookPatch::parse(&BookInput { author: " Le Guin ".into(), genre: Raw::Null, ..BookInput::default() })?;
    /// assert_eq!(patch.author.unwrap().as_str(), "Le Guin");
    /// assert_eq!(patch.genre, Some(None));
    /// # Ok::<(), books_domain::InvalidBook>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidBook`] listing each invalid member.
    pub fn parse(input: &BookInput) -> Result<Self, InvalidBook> {
        let mut checker = Checker::default();
        let title = checker.patch_value(input, BookField::Title);
        let author = checker.patch_value(input, BookField::Author);
        let genre = checker.patch_value(input, BookField::Genre);
        let isbn = checker.patch_value(input, BookField::Isbn);
        let published_year = checker.patch_value(input, BookField::PublishedYear);
        checker.finish(|| {
            Some(Self {
                // A required field's `Some(None)` (null) was refused above.
                title: title?.flatten(),
                author: author?.flatten(),
                genre: genre?,
                isbn: isbn?,
                published_year: published_year?,
            })
        })
    }

    /// What the patch does to `field`: `None` keeps it, `Some(value)` sets it
    /// ([`FieldValue::None`] clears it).
    pub fn value(&self, field: BookField) -> Option<FieldValue<'_>> {
        match field {
            BookField::Title => self.title.as_ref().map(|t| FieldValue::Text(t.as_str())),
            BookField::Author => self.author.as_ref().map(|a| FieldValue::Text(a.as_str())),
            BookField::Genre => self
                .genre
                .as_ref()
                .map(|genre| optional_text(genre.as_ref().map(Genre::as_str))),
            BookField::Isbn => self
                .isbn
                .as_ref()
                .map(|isbn| optional_text(isbn.as_ref().map(Isbn::as_str))),
            BookField::PublishedYear => self.published_year.map(optional_year),
        }
    }

    /// `fields` as the patch leaves them.
    #[must_use]
    pub fn applied_to(&self, fields: &NewBook) -> NewBook {
        let mut patched = fields.clone();
        if let Some(title) = &self.title {
            patched.title.clone_from(title);
        }
        if let Some(author) = &self.author {
            patched.author.clone_from(author);
        }
        if let Some(genre) = &self.genre {
            patched.genre.clone_from(genre);
        }
        if let Some(isbn) = self.isbn {
            patched.isbn = isbn;
        }
        if let Some(year) = self.published_year {
            patched.published_year = year;
        }
        patched
    }

    /// True when applying the patch to `fields` would change them. A patch that changes nothing
    /// writes nothing: not the version, not `updated_at`, and no change in the feed.
    pub fn changes(&self, fields: &NewBook) -> bool {
        BookField::ALL
            .into_iter()
            .any(|field| self.value(field).is_some_and(|v| v != fields.value(field)))
    }

    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        BookField::ALL
            .into_iter()
            .all(|field| self.value(field).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(title: Raw, author: Raw, genre: Raw) -> BookInput {
        BookInput::default()
            .with(BookField::Title, title)
            .with(BookField::Author, author)
            .with(BookField::Genre, genre)
    }

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let error = NewBook::parse(&input(
            Raw::Absent,
            Raw::from("a".repeat(300).as_str()),
            Raw::from("x\u{7}"),
        ))
        .unwrap_err();
        assert_eq!(
            error.errors,
            [
                FieldError {
                    field: BookField::Title,
                    problem: FieldProblem::Missing
                },
                FieldError {
                    field: BookField::Author,
                    problem: TextError::TooLong { max: 250 }.into()
                },
                FieldError {
                    field: BookField::Genre,
                    problem: TextError::ControlCharacter.into()
                },
            ]
        );
        assert_eq!(
            error.to_string(),
            "title is required; author must be at most 250 characters; genre must not contain control characters"
        );
    }

    #[test]
    fn a_valid_new_book_keeps_trimmed_values() {
        let book = NewBook::parse(&input(
            " Dune ".into(),
            " Frank Herbert ".into(),
            "  ".into(),
        ))
        .unwrap();
        assert_eq!(book.title.as_str(), "Dune");
        assert_eq!(book.author.as_str(), "Frank Herbert");
        assert_eq!(book.genre, None);
    }

    #[test]
    fn a_number_where_text_belongs_is_named_as_the_wrong_type() {
        let error = NewBook::parse(&input(Raw::Integer(5), "Anon".into(), Raw::Other)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "title must be a string; genre must be a string"
        );
    }

    #[test]
    fn a_csv_cell_is_read_as_the_fields_kind() {
        let book = NewBook::parse(&input(
            Raw::Cell("Dune".to_owned()),
            Raw::Cell("Frank Herbert".to_owned()),
            Raw::Cell(String::new()),
        ))
        .unwrap();
        assert_eq!(book.genre, None);
    }

    #[test]
    fn a_patch_that_nulls_the_title_is_rejected() {
        let error = BookPatch::parse(&input(Raw::Null, Raw::Absent, Raw::Absent)).unwrap_err();
        assert_eq!(
            error.errors,
            [FieldError {
                field: BookField::Title,
                problem: FieldProblem::Null
            }]
        );
    }

    #[test]
    fn a_patch_with_a_blank_genre_clears_it() {
        let patch = BookPatch::parse(&input(Raw::Absent, Raw::Absent, " ".into())).unwrap();
        assert_eq!(patch.genre, Some(None));
    }

    #[test]
    fn an_empty_patch_changes_nothing() {
        let patch = BookPatch::parse(&BookInput::default()).unwrap();
        assert!(patch.is_empty());
    }

    #[test]
    fn a_patch_to_the_stored_values_changes_nothing() {
        let stored = NewBook::parse(&input("Dune".into(), "Herbert".into(), Raw::Absent)).unwrap();
        let same = BookPatch::parse(&input("Dune".into(), Raw::Absent, Raw::Null)).unwrap();
        assert!(!same.changes(&stored));
        let other = BookPatch::parse(&input(Raw::Absent, Raw::Absent, "SF".into())).unwrap();
        assert!(other.changes(&stored));
        assert_eq!(
            other.applied_to(&stored).genre.map(Genre::into_string),
            Some("SF".to_owned())
        );
    }

    #[test]
    fn a_digest_stored_before_a_field_was_added_matches_a_retry_that_leaves_it_empty() {
        // As if the release that stored the key knew only the first two fields.
        let plain = NewBook::parse(&input("Dune".into(), "Herbert".into(), Raw::Absent)).unwrap();
        let older = RequestDigest::of_book(&plain, 2);
        assert!(older.is_of_book(&plain));
        let with_genre =
            NewBook::parse(&input("Dune".into(), "Herbert".into(), "SF".into())).unwrap();
        assert!(
            !older.is_of_book(&with_genre),
            "a value in a newer field is another request"
        );
        let other = NewBook::parse(&input("Emma".into(), "Herbert".into(), Raw::Absent)).unwrap();
        assert!(!older.is_of_book(&other));
        assert!(RequestDigest::of_books(std::slice::from_ref(&plain), 2).is_of_books(&[plain]));
    }

    #[test]
    fn an_isbn_and_a_year_are_read_from_json_and_from_csv_cells() {
        let json = BookInput::default()
            .with(BookField::Title, "Dune")
            .with(BookField::Author, "Herbert")
            .with(BookField::Isbn, "0-441-01359-7")
            .with(BookField::PublishedYear, Raw::Integer(1965));
        let cells = BookInput::default()
            .with(BookField::Title, Raw::Cell("Dune".to_owned()))
            .with(BookField::Author, Raw::Cell("Herbert".to_owned()))
            .with(BookField::Isbn, Raw::Cell("9780441013593".to_owned()))
            .with(BookField::PublishedYear, Raw::Cell(" 1965 ".to_owned()));
        let from_json = NewBook::parse(&json).unwrap();
        assert_eq!(NewBook::parse(&cells).unwrap(), from_json);
        assert_eq!(
            from_json.value(BookField::Isbn),
            FieldValue::Text("9780441013593")
        );
        assert_eq!(
            from_json.value(BookField::PublishedYear),
            FieldValue::Integer(1965)
        );
    }

    #[test]
    fn a_year_as_a_json_string_or_an_isbn_as_a_number_is_the_wrong_type() {
        let input = BookInput::default()
            .with(BookField::Title, "Dune")
            .with(BookField::Author, "Herbert")
            .with(BookField::Isbn, Raw::Integer(9_780_441_013_593))
            .with(BookField::PublishedYear, "1965");
        assert_eq!(
            NewBook::parse(&input).unwrap_err().to_string(),
            "isbn must be a string; published_year must be an integer"
        );
        let cell = BookInput::default()
            .with(BookField::Title, "Dune")
            .with(BookField::Author, "Herbert")
            .with(BookField::PublishedYear, Raw::Cell("MCMLXV".to_owned()));
        assert_eq!(
            NewBook::parse(&cell).unwrap_err().to_string(),
            "published_year must be an integer"
        );
    }

    #[test]
    fn an_empty_isbn_or_year_is_none_and_a_bad_one_is_named() {
        let blank = BookInput::default()
            .with(BookField::Title, "Dune")
            .with(BookField::Author, "Herbert")
            .with(BookField::Isbn, " ")
            .with(BookField::PublishedYear, Raw::Cell(String::new()));
        let book = NewBook::parse(&blank).unwrap();
        assert_eq!((book.isbn, book.published_year), (None, None));
        let bad = blank
            .with(BookField::Isbn, "0-441-01359-8")
            .with(BookField::PublishedYear, Raw::Integer(2101));
        assert_eq!(
            NewBook::parse(&bad).unwrap_err().to_string(),
            "isbn has a wrong check digit; published_year must be from -3000 to 2100"
        );
    }

    #[test]
    fn a_patch_clears_the_year_and_keeps_the_isbn() {
        let stored = NewBook::parse(
            &BookInput::default()
                .with(BookField::Title, "Dune")
                .with(BookField::Author, "Herbert")
                .with(BookField::Isbn, "9780441013593")
                .with(BookField::PublishedYear, Raw::Integer(1965)),
        )
        .unwrap();
        let patch =
            BookPatch::parse(&BookInput::default().with(BookField::PublishedYear, Raw::Null))
                .unwrap();
        let patched = patch.applied_to(&stored);
        assert_eq!(patched.published_year, None);
        assert_eq!(patched.isbn, stored.isbn);
        assert!(patch.changes(&stored));
    }

    #[test]
    fn the_field_table_names_every_field_once() {
        for field in BookField::ALL {
            assert_eq!(BookField::named(field.name()), Some(field));
        }
    }
}
