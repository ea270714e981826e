//! Idempotent creation: a client names a create with a key, and a retry with the same key gets
//! the first outcome again instead of a second book.

use std::fmt;

use chrono::TimeDelta;
use thiserror::Error;

use crate::{Book, KeyDigest};

/// How long a key is remembered, at least.
pub const IDEMPOTENCY_KEY_RETENTION: TimeDelta = TimeDelta::hours(24);

/// A client's name for one create: 1 to 255 visible ASCII characters, and the API key it belongs
/// to. Two clients that happen to pick the same name make two different keys: neither can replay
/// the other's response or learn that the name is in use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    owner: Option<KeyDigest>,
    key: String,
}

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
            Ok(Self {
                owner: None,
                key: raw.to_owned(),
            })
        } else {
            Err(InvalidIdempotencyKey)
        }
    }

    /// The same key, belonging to the API key `owner`.
    ///
    /// ```
    /// use books_domain::{IdempotencyKey, KeyDigest};
    /// let mine = IdempotencyKey::new("retry-1")?.owned_by(KeyDigest::of("bk_mine"));
    /// let theirs = IdempotencyKey::new("retry-1")?.owned_by(KeyDigest::of("bk_theirs"));
    /// assert_ne!(mine, theirs);
    /// # Ok::<(), books_domain::InvalidIdempotencyKey>(())
    /// ```
    #[must_use]
    pub fn owned_by(self, owner: KeyDigest) -> Self {
        Self {
            owner: Some(owner),
            ..self
        }
    }

    /// The client's name for the create.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The API key the idempotency key belongs to, if any.
    pub fn owner(&self) -> Option<&KeyDigest> {
        self.owner.as_ref()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
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
