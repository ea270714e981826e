//! The book and the values it is made of.

use std::fmt;

use chrono::{DateTime, Utc};
use thiserror::Error;

use crate::NewBook;

/// The most characters (Unicode scalar values, not bytes) a title, author or genre may have.
pub const MAX_TEXT_CHARS: usize = 250;

/// Why a piece of text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TextError {
    /// Nothing but white space was given.
    #[error("must not be empty")]
    Empty,
    /// More than [`MAX_TEXT_CHARS`] characters remained after trimming.
    #[error("must be at most {max} characters")]
    TooLong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// A control character (NUL, a line break, an escape…) was found inside the text.
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// Trims `raw` and checks it against the rules shared by every text field.
pub(crate) fn checked_text(raw: &str) -> Result<String, TextError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    // Checked before the length so that a long string of garbage reports the more useful error.
    if text.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(TextError::TooLong {
            max: MAX_TEXT_CHARS,
        });
    }
    Ok(text.to_owned())
}

macro_rules! text_value {
    ($(#[$doc:meta])* $name:ident, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Trims `raw` and checks it: 1 to 250 characters, no control characters.
            ///
            /// ```
            #[doc = concat!("use books_domain::", stringify!($name), ";")]
            #[doc = concat!("let value = ", stringify!($name), "::new(\"  ", $example, " \")?;")]
            #[doc = concat!("assert_eq!(value.as_str(), \"", $example, "\");")]
            #[doc = concat!("assert!(", stringify!($name), "::new(\"   \").is_err());")]
            /// # Ok::<(), books_domain::TextError>(())
            /// ```
            ///
            /// # Errors
            ///
            /// [`TextError`] when the trimmed text is empty, too long or holds a control character.
            pub fn new(raw: &str) -> Result<Self, TextError> {
                checked_text(raw).map(Self)
            }

            /// The text, trimmed.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, trimmed, as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_value!(
    /// The title of a book: trimmed, 1 to 250 characters, no control characters.
    Title,
    "Dune"
);
text_value!(
    /// The author of a book: trimmed, 1 to 250 characters, no control characters.
    Author,
    "Frank Herbert"
);
text_value!(
    /// The genre of a book: trimmed, 1 to 250 characters, no control characters.
    ///
    /// A book's genre is optional: see [`Genre::optional`] for the rule that turns blank input
    /// into "no genre".
    Genre,
    "Science fiction"
);

impl Genre {
    /// Reads an optional genre: `None`, or text that is blank after trimming, means no genre.
    ///
    /// ```
    /// use books_domain::Genre;
    /// assert_eq!(Genre::optional(Some("  "))?, None);
    /// assert_eq!(Genre::optional(Some(" Poetry "))?.unwrap().as_str(), "Poetry");
    /// # Ok::<(), books_domain::TextError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`TextError`] when the text is too long or holds a control character.
    pub fn optional(raw: Option<&str>) -> Result<Option<Self>, TextError> {
        match raw {
            Some(text) if !text.trim().is_empty() => Self::new(text).map(Some),
            _ => Ok(None),
        }
    }
}

/// The identity of a book: a positive 64-bit integer assigned by storage and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BookId(i64);

impl BookId {
    /// Wraps a raw id.
    ///
    /// ```
    /// use books_domain::BookId;
    /// assert_eq!(BookId::new(42).map(BookId::get), Some(42));
    /// assert_eq!(BookId::new(0), None);
    /// ```
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The raw id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for BookId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many times a book has been written: 1 on create, one more on every successful change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(i64);

impl Version {
    /// The version of a book just created.
    pub const FIRST: Self = Self(1);

    /// Wraps a raw version; `None` unless it is at least 1.
    pub fn new(raw: i64) -> Option<Self> {
        (raw >= 1).then_some(Self(raw))
    }

    /// The raw version.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The version that follows this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A book in the catalogue. Every `Book` is valid: its parts were checked when they were built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    id: BookId,
    fields: NewBook,
    version: Version,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Book {
    /// Assembles a book from stored parts. Storage adapters call this; the parts are already valid.
    pub fn new(
        id: BookId,
        fields: NewBook,
        version: Version,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            fields,
            version,
            created_at,
            updated_at,
        }
    }

    /// The book's id.
    pub fn id(&self) -> BookId {
        self.id
    }

    /// The fields callers write (see [`crate::BookField`]).
    pub fn fields(&self) -> &NewBook {
        &self.fields
    }

    /// The book's title.
    pub fn title(&self) -> &Title {
        &self.fields.title
    }

    /// The book's author.
    pub fn author(&self) -> &Author {
        &self.fields.author
    }

    /// The book's genre, if it has one.
    pub fn genre(&self) -> Option<&Genre> {
        self.fields.genre.as_ref()
    }

    /// How many times the book has been written.
    pub fn version(&self) -> Version {
        self.version
    }

    /// When the book was created.
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }

    /// When the book was last changed.
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_white_space_is_trimmed() {
        assert_eq!(
            Title::new("\t Dune \n").map(Title::into_string),
            Ok("Dune".to_owned())
        );
    }

    #[test]
    fn a_blank_title_is_rejected() {
        assert_eq!(Title::new(" \t "), Err(TextError::Empty));
    }

    #[test]
    fn two_hundred_fifty_characters_are_counted_as_characters_not_bytes() {
        let accented = "é".repeat(250);
        assert_eq!(accented.len(), 500);
        assert!(Author::new(&accented).is_ok());
    }

    #[test]
    fn a_title_longer_than_250_characters_is_rejected() {
        assert_eq!(
            Title::new(&"x".repeat(251)),
            Err(TextError::TooLong { max: 250 })
        );
    }

    #[test]
    fn a_nul_character_inside_the_text_is_rejected() {
        assert_eq!(Title::new("Du\0ne"), Err(TextError::ControlCharacter));
    }

    #[test]
    fn odd_but_printable_unicode_is_accepted() {
        assert!(Title::new("𝔇𝔲𝔫𝔢 🏜️ \u{202e}ٴ").is_ok());
    }

    #[test]
    fn a_blank_genre_means_no_genre() {
        assert_eq!(Genre::optional(Some("   ")), Ok(None));
        assert_eq!(Genre::optional(None), Ok(None));
    }

    #[test]
    fn a_genre_longer_than_250_characters_is_rejected() {
        assert!(Genre::optional(Some(&"g".repeat(251))).is_err());
    }

    #[test]
    fn ids_and_versions_must_be_positive() {
        assert!(BookId::new(0).is_none());
        assert!(BookId::new(-1).is_none());
        assert!(Version::new(0).is_none());
        assert_eq!(Version::FIRST.next().get(), 2);
    }
}
