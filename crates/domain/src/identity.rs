//! The values that identify an edition of a book: its ISBN and the year it was published.
//!
//! The ISBN check is written here rather than taken from a crate: the rules are a few lines
//! (ISO 2108's two check digits), while the crates that parse ISBNs also hyphenate them, which
//! builds the international ISBN agency's range table into the binary at compile time; this
//! service never hyphenates.

use std::fmt;

use thiserror::Error;

/// Why an ISBN was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IsbnError {
    /// Not 10 or 13 digits once hyphens and spaces are left out.
    #[error("must have 10 or 13 digits (hyphens and spaces aside), not {0}")]
    WrongLength(usize),
    /// A character that is not a digit, a hyphen or a space (or the final `X` of an ISBN-10).
    #[error("must hold only digits, hyphens and spaces (and a final X in an ISBN-10)")]
    NotADigit,
    /// Thirteen digits that do not begin with 978 or 979, the prefixes GS1 gave to books.
    #[error("must begin with 978 or 979 when it has 13 digits")]
    NotABookPrefix,
    /// The check digit does not match the other digits (a mistyped digit, or two swapped).
    #[error("has a wrong check digit")]
    WrongCheckDigit,
}

/// An International Standard Book Number, held as the 13 digits of its ISBN-13 form (ASCII).
///
/// An ISBN-10 is read as the ISBN-13 that replaced it: `978` before its first nine digits, and a
/// new check digit. Two spellings of one ISBN are therefore one value.
///
/// ```
/// use books_domain::Isbn;
/// let dune = Isbn::parse("0-441-01359-7")?;
/// assert_eq!(dune.as_str(), "9780441013593");
/// assert_eq!(Isbn::parse("978 0 441 01359 3")?, dune);
/// assert!(Isbn::parse("0-441-01359-8").is_err());
/// # Ok::<(), books_domain::IsbnError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Isbn([u8; 13]);

impl Isbn {
    /// Reads an ISBN-10 or ISBN-13, with or without hyphens and spaces (surrounding white space
    /// is trimmed; a final `x` counts as `X`).
    ///
    /// # Errors
    ///
    /// [`IsbnError`] for a wrong length, a character that is not a digit, a 13-digit number that
    /// is not a book's, or a wrong check digit.
    pub fn parse(raw: &str) -> Result<Self, IsbnError> {
        let mut digits: Vec<u8> = Vec::with_capacity(13);
        let mut ten_at_end = false;
        for c in raw.trim().chars() {
            match c {
                '-' | ' ' => {}
                _ if ten_at_end => return Err(IsbnError::NotADigit),
                '0'..='9' => digits.push(c as u8 - b'0'),
                'X' | 'x' => {
                    ten_at_end = true;
                    digits.push(10);
                }
                _ => return Err(IsbnError::NotADigit),
            }
            if digits.len() > 13 {
                // Counting further would only make the message longer.
                return Err(IsbnError::WrongLength(
                    raw.chars().filter(char::is_ascii_digit).count(),
                ));
            }
        }
        match digits.len() {
            10 => Self::from_isbn10(&digits),
            13 if ten_at_end => Err(IsbnError::NotADigit),
            13 => Self::from_isbn13(&digits),
            n => Err(IsbnError::WrongLength(n)),
        }
    }

    fn from_isbn10(digits: &[u8]) -> Result<Self, IsbnError> {
        // Weights 10 down to 1; the check digit (X = 10) makes the sum a multiple of 11.
        let sum: u32 = digits
            .iter()
            .zip((1..=10).rev())
            .map(|(d, weight)| u32::from(*d) * weight)
            .sum();
        if !sum.is_multiple_of(11) {
            return Err(IsbnError::WrongCheckDigit);
        }
        let mut isbn13 = [9, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        isbn13[3..12].copy_from_slice(&digits[..9]);
        isbn13[12] = check_digit_13(&isbn13);
        Ok(Self::from_digits(isbn13))
    }

    fn from_isbn13(digits: &[u8]) -> Result<Self, IsbnError> {
        if digits[..3] != [9, 7, 8] && digits[..3] != [9, 7, 9] {
            return Err(IsbnError::NotABookPrefix);
        }
        let mut isbn13 = [0; 13];
        isbn13.copy_from_slice(digits);
        if check_digit_13(&isbn13) != isbn13[12] {
            return Err(IsbnError::WrongCheckDigit);
        }
        Ok(Self::from_digits(isbn13))
    }

    /// Kept as ASCII, so that the value is its own text.
    fn from_digits(digits: [u8; 13]) -> Self {
        Self(digits.map(|d| b'0' + d))
    }

    /// The 13 digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored (`from_digits`), so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The EAN-13 check digit of the first twelve digits: weights 1 and 3 alternately, and the digit
/// that makes the sum a multiple of 10.
fn check_digit_13(digits: &[u8; 13]) -> u8 {
    let sum: u32 = digits[..12]
        .iter()
        .zip([1, 3].into_iter().cycle())
        .map(|(d, weight)| u32::from(*d) * weight)
        .sum();
    // The remainder is below 10, so the cast keeps every value.
    ((10 - sum % 10) % 10) as u8
}

impl fmt::Display for Isbn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The earliest publication year a book may have.
pub const EARLIEST_YEAR: i32 = -3000;
/// The latest publication year a book may have.
pub const LATEST_YEAR: i32 = 2100;

/// A publication year outside [`EARLIEST_YEAR`]..=[`LATEST_YEAR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("must be from {EARLIEST_YEAR} to {LATEST_YEAR}")]
pub struct YearOutOfRange;

/// The year an edition was published: -3000 (clay tablets) to 2100 (announced editions).
///
/// ```
/// use books_domain::PublishedYear;
/// assert_eq!(PublishedYear::new(1965)?.get(), 1965);
/// assert!(PublishedYear::new(2101).is_err());
/// # Ok::<(), books_domain::YearOutOfRange>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishedYear(i32);

impl PublishedYear {
    /// Checks the range.
    ///
    /// # Errors
    ///
    /// [`YearOutOfRange`] before -3000 or after 2100.
    pub fn new(year: i64) -> Result<Self, YearOutOfRange> {
        i32::try_from(year)
            .ok()
            .filter(|year| (EARLIEST_YEAR..=LATEST_YEAR).contains(year))
            .map(Self)
            .ok_or(YearOutOfRange)
    }

    /// The year.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl fmt::Display for PublishedYear {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ISBNs as printed, each with its ISBN-13.
    const EDITIONS: [(&str, &str); 9] = [
        // Dune, Ace 2005
        ("0-441-01359-7", "9780441013593"),
        // The Hobbit, Houghton Mifflin 1997
        ("0-618-00221-9", "9780618002214"),
        // An ISBN-10 whose check digit is X (the example of Wikipedia's article on ISBNs)
        ("0-8044-2957-X", "9780804429573"),
        // The same, with a lower-case x
        ("080442957x", "9780804429573"),
        // Pride and Prejudice, Penguin Classics 2003
        ("978-0-14-143951-8", "9780141439518"),
        // A 979 ISBN (France's 979-10 range), which has no ISBN-10
        ("979-10-90636-07-1", "9791090636071"),
        // Spaces instead of hyphens
        ("978 1 4920 6766 5", "9781492067665"),
        // Surrounding white space
        ("  9780306406157 ", "9780306406157"),
        // A Korean edition (group 89)
        ("89-6626-126-4", "9788966261260"),
    ];

    #[test]
    fn real_isbns_are_read_as_their_isbn_13() {
        for (printed, isbn13) in EDITIONS {
            assert_eq!(
                Isbn::parse(printed).map(|isbn| isbn.to_string()),
                Ok(isbn13.to_owned()),
                "{printed}"
            );
        }
    }

    #[test]
    fn one_mistyped_or_swapped_digit_is_caught_by_the_check_digit() {
        assert_eq!(
            Isbn::parse("0-441-01358-7"),
            Err(IsbnError::WrongCheckDigit)
        );
        assert_eq!(
            Isbn::parse("0-441-10359-7"),
            Err(IsbnError::WrongCheckDigit)
        );
        assert_eq!(
            Isbn::parse("9780441013594"),
            Err(IsbnError::WrongCheckDigit)
        );
        assert_eq!(
            Isbn::parse("979-10-90636-07-2"),
            Err(IsbnError::WrongCheckDigit)
        );
    }

    #[test]
    fn a_wrong_length_or_a_stray_character_is_refused() {
        assert_eq!(Isbn::parse("044101359"), Err(IsbnError::WrongLength(9)));
        assert_eq!(
            Isbn::parse("97804410135931"),
            Err(IsbnError::WrongLength(14))
        );
        assert_eq!(Isbn::parse("0-441-0135a-7"), Err(IsbnError::NotADigit));
        assert_eq!(Isbn::parse("X-441-01359-7"), Err(IsbnError::NotADigit));
        assert_eq!(Isbn::parse("978044101359X"), Err(IsbnError::NotADigit));
        assert_eq!(Isbn::parse("0.441.01359.7"), Err(IsbnError::NotADigit));
        assert_eq!(Isbn::parse("٠٤٤١٠١٣٥٩٧"), Err(IsbnError::NotADigit));
    }

    #[test]
    fn thirteen_digits_that_are_not_a_books_are_refused() {
        // A valid EAN-13 of a grocery product.
        assert_eq!(Isbn::parse("4006381333931"), Err(IsbnError::NotABookPrefix));
    }

    #[test]
    fn years_from_3000_bc_to_2100_are_accepted() {
        assert!(PublishedYear::new(-3000).is_ok());
        assert!(PublishedYear::new(2100).is_ok());
        assert_eq!(PublishedYear::new(-3001), Err(YearOutOfRange));
        assert_eq!(PublishedYear::new(i64::MAX), Err(YearOutOfRange));
    }
}
