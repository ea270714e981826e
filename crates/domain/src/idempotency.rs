//! Idempotent creation: a client names a create with a key, and a retry with the same key gets
//! the first outcome again instead of a second book.

use std::fmt;

use chrono::TimeDelta;
use thiserror::Error;

use crate::Book;

/// How long a key is remembered, at least.
pub const IDEMPOTENCY_KEY_RETENTION: TimeDelta = TimeDelta::hours(24);

/// A client's name for one create: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// The key given to [`IdempotencyKey::new`] is empty, too long, or not visible ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("an idempotency key must be 1 to 255 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// Checks a raw key.
    ///
    /// ```
    /// use books_domain::IdempotencyKey;
    /// assert!(IdempotencyKey::new("order-42/attempt").is_ok());
    /// assert!(IdempotencyKey::new("has space").is_err());
    /// assert!(IdempotencyKey::new("").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidIdempotencyKey`] when the key breaks the rule.
    pub fn new(raw: &str) -> Result<Self, InvalidIdempotencyKey> {
        let valid = (1..=255).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome of an idempotent create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The book as the first request with this key created it.
    pub book: Book,
    /// True when this is a replay: the key had been used before, and nothing new was created.
    pub replayed: bool,
}
