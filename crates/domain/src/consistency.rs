//! Reading one's own writes when storage keeps copies that lag behind it (read replicas).

use std::fmt;

/// A point in storage's history of writes. Every write reaches one, and storage tells it (see
/// [`crate::BookRepository::consistency_token`]); a read given a token is answered only from a
/// copy of the data that holds every write up to it, so a client that sends back the token of its
/// last write always reads that write. Tokens of one storage are ordered: a later write's token
/// is greater or equal.
///
/// The value is opaque to clients (the PostgreSQL adapter's is a WAL position); storage that
/// keeps no lagging copies has no tokens, and every read sees every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsistencyToken(u64);

impl ConsistencyToken {
    /// Wraps a position in storage's history.
    pub fn new(position: u64) -> Self {
        Self(position)
    }

    /// The position.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The later of two optional tokens: a batch of reads that must see both sees the later.
    ///
    /// ```
    /// use books_domain::ConsistencyToken;
    /// let (a, b) = (ConsistencyToken::new(7), ConsistencyToken::new(9));
    /// assert_eq!(ConsistencyToken::latest(Some(a), Some(b)), Some(b));
    /// assert_eq!(ConsistencyToken::latest(None, Some(a)), Some(a));
    /// assert_eq!(ConsistencyToken::latest(None, None), None);
    /// ```
    pub fn latest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        a.max(b)
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}
