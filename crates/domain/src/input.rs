//! What callers send to create, replace and patch books, checked field by field.

use std::fmt;

use thiserror::Error;

use crate::{Author, Genre, TextError, Title};

/// A field of a book that a caller provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BookField {
    /// The title.
    Title,
    /// The author.
    Author,
    /// The genre.
    Genre,
}

impl BookField {
    /// The field's name as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Title => "title",
            Self::Author => "author",
            Self::Genre => "genre",
        }
    }
}

impl fmt::Display for BookField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    /// Each invalid field, in the order title, author, genre.
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

/// Collects field errors while the fields of one input are checked.
#[derive(Default)]
struct Checker(Vec<FieldError>);

impl Checker {
    fn check<T>(&mut self, field: BookField, result: Result<T, FieldProblem>) -> Option<T> {
        result
            .map_err(|problem| self.0.push(FieldError { field, problem }))
            .ok()
    }

    fn required<T>(
        &mut self,
        field: BookField,
        raw: Option<&str>,
        parse: fn(&str) -> Result<T, TextError>,
    ) -> Option<T> {
        let result = raw
            .ok_or(FieldProblem::Missing)
            .and_then(|raw| Ok(parse(raw)?));
        self.check(field, result)
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, InvalidBook> {
        match value() {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(InvalidBook { errors: self.0 }),
        }
    }
}

/// The fields of a new book, or of a full replacement of an existing one.
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
    /// Checks raw fields (`None` where the caller gave none) and reports every invalid one.
    ///
    /// ```
    /// use books_domain::{BookField, NewBook};
    /// let refused = NewBook::parse(Some(" "), None, Some("Poetry")).unwrap_err();
    /// let fields: Vec<_> = refused.errors.iter().map(|e| e.field).collect();
    /// assert_eq!(fields, [BookField::Title, BookField::Author]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidBook`] listing each missing or invalid field.
    pub fn parse(
        title: Option<&str>,
        author: Option<&str>,
        genre: Option<&str>,
    ) -> Result<Self, InvalidBook> {
        let mut checker = Checker::default();
        let title = checker.required(BookField::Title, title, Title::new);
        let author = checker.required(BookField::Author, author, Author::new);
        let genre = checker.check(
            BookField::Genre,
            Genre::optional(genre).map_err(FieldProblem::from),
        );
        checker.finish(|| {
            Some(Self {
                title: title?,
                author: author?,
                genre: genre?,
            })
        })
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

/// A merge patch of a book: each field is kept, or replaced. Only the genre can be cleared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookPatch {
    /// The new title, if it changes.
    pub title: Option<Title>,
    /// The new author, if it changes.
    pub author: Option<Author>,
    /// The new genre (`Some(None)` clears it), if it changes.
    pub genre: Option<Option<Genre>>,
}

/// A replacement is the patch that sets every field: title, author, and the genre (none clears
/// it).
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
    /// Checks the members of a merge patch and reports every invalid one. A null title or
    /// author is refused (a book always has both); a null or blank genre clears the genre.
    ///
    /// ```
    /// use books_domain::{BookPatch, PatchValue};
    /// let patch = BookPatch::parse(PatchValue::Keep, PatchValue::Set(" Le Guin "), PatchValue::Clear)?;
    /// assert_eq!(patch.author.unwrap().as_str(), "Le Guin");
    /// assert_eq!(patch.genre, Some(None));
    /// # Ok::<(), books_domain::InvalidBook>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidBook`] listing each invalid member.
    pub fn parse(
        title: PatchValue<&str>,
        author: PatchValue<&str>,
        genre: PatchValue<&str>,
    ) -> Result<Self, InvalidBook> {
        fn required<T>(
            value: PatchValue<&str>,
            parse: fn(&str) -> Result<T, TextError>,
        ) -> Result<Option<T>, FieldProblem> {
            match value {
                PatchValue::Keep => Ok(None),
                PatchValue::Clear => Err(FieldProblem::Null),
                PatchValue::Set(raw) => Ok(Some(parse(raw)?)),
            }
        }
        let mut checker = Checker::default();
        let title = checker.check(BookField::Title, required(title, Title::new));
        let author = checker.check(BookField::Author, required(author, Author::new));
        let genre = checker.check(
            BookField::Genre,
            match genre {
                PatchValue::Keep => Ok(None),
                PatchValue::Clear => Ok(Some(None)),
                PatchValue::Set(raw) => Genre::optional(Some(raw))
                    .map(Some)
                    .map_err(FieldProblem::from),
            },
        );
        checker.finish(|| {
            Some(Self {
                title: title?,
                author: author?,
                genre: genre?,
            })
        })
    }

    /// True when the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.author.is_none() && self.genre.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_invalid_field_is_reported_at_once() {
        let error = NewBook::parse(None, Some(&"a".repeat(300)), Some("x\u{7}")).unwrap_err();
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
        let book = NewBook::parse(Some(" Dune "), Some(" Frank Herbert "), Some("  ")).unwrap();
        assert_eq!(book.title.as_str(), "Dune");
        assert_eq!(book.author.as_str(), "Frank Herbert");
        assert_eq!(book.genre, None);
    }

    #[test]
    fn a_patch_that_nulls_the_title_is_rejected() {
        let error =
            BookPatch::parse(PatchValue::Clear, PatchValue::Keep, PatchValue::Keep).unwrap_err();
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
        let patch =
            BookPatch::parse(PatchValue::Keep, PatchValue::Keep, PatchValue::Set(" ")).unwrap();
        assert_eq!(patch.genre, Some(None));
    }

    #[test]
    fn an_empty_patch_changes_nothing() {
        assert!(
            BookPatch::parse(PatchValue::Keep, PatchValue::Keep, PatchValue::Keep)
                .unwrap()
                .is_empty()
        );
    }
}
