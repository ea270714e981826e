//! Checking out a connection and reading what went wrong on it: the two things every repository
//! (books, keys, replicas) does the same way, and counts the same way.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::anyhow;
use books_domain::StorageError;
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::result::Error as DieselError;

use crate::PgPool;
use crate::errors::{Failure, classify};

/// Checkouts under way in this process: requests waiting for a database connection.
static WAITING: AtomicU64 = AtomicU64::new(0);

/// How many requests of this process are waiting for a database connection now (a gauge for
/// metrics; r2d2 reports open and idle connections, not waiters).
pub fn waiting_for_connection() -> u64 {
    WAITING.load(Ordering::Relaxed)
}

/// Counts one waiter for as long as it lives, whichever way the checkout ends.
struct Waiter;

impl Waiter {
    fn new() -> Self {
        WAITING.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection from the pool; waiting too long for one means the database is unavailable.
pub(crate) fn checkout(
    pool: &PgPool,
) -> Result<PooledConnection<ConnectionManager<PgConnection>>, StorageError> {
    let _waiter = Waiter::new();
    pool.get().map_err(|error| {
        StorageError::Unavailable(anyhow!(error).context("no database connection was free in time"))
    })
}

/// Turns a driver error on `conn` into the domain's words (see [`classify`]): a connection that
/// is gone, or a server that is busy or restarting, means the store is unavailable (retry
/// later); anything else is unexpected.
///
/// A connection that is gone is also marked broken, so that the pool drops it instead of handing
/// it out again. (The pool does not test connections on checkout: that would cost every request
/// a round trip.)
pub(crate) fn storage_error(conn: &mut PgConnection, error: DieselError) -> StorageError {
    match classify(&error) {
        Failure::ConnectionLost => {
            AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
            StorageError::Unavailable(anyhow!(error))
        }
        Failure::Transient | Failure::LockTimeout => StorageError::Unavailable(anyhow!(error)),
        Failure::UniqueViolation | Failure::Other => StorageError::Unknown(anyhow!(error)),
    }
}
