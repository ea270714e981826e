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

use crate::{Author, Genre, TextError, Title};

/// A field of a book that a caller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookField {
    /// The title.
    Title,
    /// The author.
    Author,
    /// The genre.
    Genre,
}

/// What a field holds, as readers and storage need to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Text: trimmed, 1 to [`crate::MAX_TEXT_CHARS`] characters, no control characters. An
    /// optional text field takes blank text as "none".
    Text,
}

impl BookField {
    /// Every field, in the order they are shown, read and reported.
    pub const ALL: [Self; 3] = [Self::Title, Self::Author, Self::Genre];

    /// The field's name as clients spell it (a JSON member, a CSV column, a table column).
    pub fn name(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Author => "author",
            Self::Genre => "genre",
        }
    }

    /// What it holds.
    pub fn kind(self) -> FieldKind {
        match self {
            Self::Title | Self::Author | Self::Genre => FieldKind::Text,
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
}

impl BookInput {
    /// The raw value of `field`.
    pub fn field(&self, field: BookField) -> &Raw {
        match field {
            BookField::Title => &self.title,
            BookField::Author => &self.author,
            BookField::Genre => &self.genre,
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

/// A field's raw value, read as the field's kind: `None` for absent, null or (optional fields)
/// blank text; what a patch does with `None` depends on whether the member was there at all.
fn read<T>(
    field: BookField,
    raw: &Raw,
    parse: fn(&str) -> Result<T, TextError>,
) -> Result<Option<T>, FieldProblem> {
    match (field.kind(), raw) {
        (_, Raw::Absent | Raw::Null) => Ok(None),
        (FieldKind::Text, Raw::Text(text) | Raw::Cell(text)) => {
            if !field.required() && text.trim().is_empty() {
                Ok(None)
            } else {
                Ok(Some(parse(text)?))
            }
        }
        (FieldKind::Text, Raw::Integer(_) | Raw::Other) => Err(FieldProblem::WrongType {
            expected: "a string",
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
    fn new_value<T>(
        &mut self,
        input: &BookInput,
        field: BookField,
        parse: fn(&str) -> Result<T, TextError>,
    ) -> Option<Option<T>> {
        let value = read(field, input.field(field), parse).and_then(|value| match value {
            None if field.required() => Err(FieldProblem::Missing),
            value => Ok(value),
        });
        self.check(field, value)
    }

    /// The member of a patch: `None` keeps, `Some(None)` clears (refused for a required field).
    fn patch_value<T>(
        &mut self,
        input: &BookInput,
        field: BookField,
        parse: fn(&str) -> Result<T, TextError>,
    ) -> Option<Option<Option<T>>> {
        let raw = input.field(field);
        let value = read(field, raw, parse).and_then(|value| match (raw, value) {
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
}

impl FieldValue<'_> {
    /// The value as text (`None` when it has none): for CSV cells and digests.
    pub fn to_text(self) -> Option<String> {
        match self {
            Self::None => None,
            Self::Text(text) => Some(text.to_owned()),
        }
    }
}

fn optional_text(value: Option<&str>) -> FieldValue<'_> {
    value.map_or(FieldValue::None, FieldValue::Text)
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
        let title = checker.new_value(input, BookField::Title, Title::new);
        let author = checker.new_value(input, BookField::Author, Author::new);
        let genre = checker.new_value(input, BookField::Genre, Genre::new);
        checker.finish(|| {
            Some(Self {
                title: title??,
                author: author??,
                genre: genre?,
            })
        })
    }

    /// The value of `field`.
    pub fn value(&self, field: BookField) -> FieldValue<'_> {
        match field {
            BookField::Title => FieldValue::Text(self.title.as_str()),
            BookField::Author => FieldValue::Text(self.author.as_str()),
            BookField::Genre => optional_text(self.genre.as_ref().map(Genre::as_str)),
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
}

/// A replacement is the patch that sets every field (an optional field left out is cleared).
impl From<NewBook> for BookPatch {
    fn from(book: NewBook) -> Self {
        Self {
            title: Some(book.title),
            author: Some(book.author),
            genre: Some(book.genre),
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
        let title = checker.patch_value(input, BookField::Title, Title::new);
        let author = checker.patch_value(input, BookField::Author, Author::new);
        let genre = checker.patch_value(input, BookField::Genre, Genre::new);
        checker.finish(|| {
            Some(Self {
                // A required field's `Some(None)` (null) was refused above.
                title: title?.flatten(),
                author: author?.flatten(),
                genre: genre?,
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
        BookInput {
            title,
            author,
            genre,
        }
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
    fn the_field_table_names_every_field_once() {
        for field in BookField::ALL {
            assert_eq!(BookField::named(field.name()), Some(field));
        }
    }
}
