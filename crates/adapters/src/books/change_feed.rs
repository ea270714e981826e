//! The change feed on PostgreSQL: reading sequenced changes, the retention purge, and a listener
//! that wakes on the writes' notifications (see `migrations/…_record_book_changes/up.sql` for how
//! changes are recorded and sequenced).

use anyhow::{Context as _, anyhow};
use books_domain::{
    Book, BookId, Change, ChangeFeed, ChangeKind, ChangeLimit, ChangeSignal, ChangesError,
    StorageError, Version,
};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::BigInt;

use super::BookRow;
use crate::connection::{checkout, storage_error};
use crate::errors::{Failure, classify};
use crate::schema::{book_change, book_change_counter};
use crate::{PgPool, PostgresBookRepository};

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = book_change, check_for_backend(Pg))]
struct ChangeRow {
    seq: Option<i64>,
    kind: String,
    book_id: i64,
    version: i64,
    at: DateTime<Utc>,
    title: Option<String>,
    author: Option<String>,
    genre: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    isbn: Option<String>,
    published_year: Option<i32>,
}

impl TryFrom<ChangeRow> for Change {
    type Error = StorageError;

    fn try_from(row: ChangeRow) -> Result<Self, StorageError> {
        let seq = row.seq;
        let change = (|| {
            let book_id = BookId::new(row.book_id).context("book_id")?;
            let version = Version::new(row.version).context("version")?;
            let kind = ChangeKind::parse(&row.kind).context("kind")?;
            let book = match (row.title, row.author, row.created_at, row.updated_at) {
                (Some(title), Some(author), Some(created_at), Some(updated_at)) => {
                    Some(Book::try_from(BookRow {
                        id: row.book_id,
                        title,
                        author,
                        genre: row.genre,
                        version: row.version,
                        created_at,
                        updated_at,
                        isbn: row.isbn,
                        published_year: row.published_year,
                    })?)
                }
                _ => None,
            };
            anyhow::ensure!(
                book.is_some() == (kind != ChangeKind::Deleted),
                "a {kind} change {} a book",
                if book.is_some() { "carries" } else { "lacks" }
            );
            Ok::<_, anyhow::Error>(Change {
                seq: u64::try_from(row.seq.context("seq")?).context("seq")?,
                kind,
                book_id,
                version,
                at: row.at,
                book,
            })
        })();
        change
            .with_context(|| format!("the stored change {seq:?} breaks the domain's rules"))
            .map_err(StorageError::Unknown)
    }
}

#[derive(QueryableByName)]
struct Sequenced {
    #[diesel(sql_type = BigInt)]
    last: i64,
}

/// How many changes one numbering statement of the background sequencer handles at most: small
/// enough that each takes a small fraction of a second, far inside the statement timeout even on
/// a machine busy with other work, however large the backlog. A reader that numbers before
/// reading waits for at most one such step (it holds the counter's lock), then takes a smaller
/// one itself.
const STEP: i64 = 2_000;

/// How many changes a reader numbers before it reads: enough to see its own write at once, little
/// enough that a reader never waits long behind a backlog (the background numbers the rest).
const READER_STEP: i64 = 1_000;

/// How many changes one purging statement removes at most (no counter lock is held meanwhile).
const PURGE_STEP: i64 = 10_000;

/// The most steps one call goes through, so that a call returns even while writers keep up with
/// it (the next call goes on).
const MAX_STEPS: usize = 1_000;

/// Gives seqs to at most `step` of the changes committed since the last call (one round trip;
/// nothing is locked when there is nothing to give), and returns the newest seq.
fn sequence(conn: &mut PgConnection, step: i64) -> Result<i64, DieselError> {
    diesel::sql_query("SELECT sequence_book_changes($1) AS last")
        .bind::<diesel::sql_types::Integer, _>(i32::try_from(step).unwrap_or(i32::MAX))
        .get_result::<Sequenced>(conn)
        .map(|row| row.last)
}

/// A reader's numbering step, best effort: a reader numbers so that it sees a write that has just
/// committed, but the background numbers every change anyway, so a step that runs out of time
/// (it waited behind the background's step on a busy machine) must not fail the read. Returns
/// the newest seq when the step ran.
fn reader_step(conn: &mut PgConnection) -> Result<Option<i64>, StorageError> {
    match sequence(conn, READER_STEP) {
        Ok(last) => Ok(Some(last)),
        Err(error) if matches!(classify(&error), Failure::Transient | Failure::LockTimeout) => {
            tracing::debug!(error = %error, "a reader's numbering step ran out of time; it reads what is numbered");
            Ok(None)
        }
        Err(error) => Err(storage_error(conn, error)),
    }
}

/// The newest seq, once one more (reader's) step of the committed changes has its seq.
pub(crate) fn last_change(pool: &PgPool) -> Result<u64, StorageError> {
    let mut conn = checkout(pool)?;
    let last = match reader_step(&mut conn)? {
        Some(last) => last,
        None => book_change_counter::table
            .select(book_change_counter::last_seq)
            .first::<i64>(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?,
    };
    Ok(u64::try_from(last).unwrap_or(0))
}

/// Numbers every committed change that has no seq yet, a step at a time, each step its own
/// short transaction; returns the newest seq.
pub(crate) fn sequence_all(pool: &PgPool) -> Result<u64, StorageError> {
    let mut conn = checkout(pool)?;
    let mut previous: Option<i64> = None;
    for _ in 0..MAX_STEPS {
        let last = sequence(&mut conn, STEP).map_err(|error| storage_error(&mut conn, error))?;
        // A step that gave fewer than STEP seqs found the end of the backlog.
        if previous.is_some_and(|previous| last - previous < STEP) {
            return Ok(u64::try_from(last).unwrap_or(0));
        }
        previous = Some(last);
    }
    Ok(previous
        .and_then(|last| u64::try_from(last).ok())
        .unwrap_or(0))
}

#[derive(Queryable)]
struct Counter {
    last_seq: i64,
    purged_through: i64,
}

/// The changes after `after`, once one more step of the committed changes has its seq.
pub(crate) fn changes(
    pool: &PgPool,
    after: u64,
    limit: ChangeLimit,
) -> Result<Vec<Change>, ChangesError> {
    let mut conn = checkout(pool)?;
    reader_step(&mut conn)?;
    let after_seq = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit.get()).unwrap_or(i64::MAX);
    // The counter and the changes from one snapshot, so that a purge in between cannot make a
    // reader skip what it removed.
    let read = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run::<_, DieselError, _>(|conn| {
            let counter: Counter = book_change_counter::table
                .select((
                    book_change_counter::last_seq,
                    book_change_counter::purged_through,
                ))
                .first(conn)?;
            if after_seq < counter.purged_through || after_seq > counter.last_seq {
                return Ok(Err(counter));
            }
            let rows = book_change::table
                .filter(book_change::seq.gt(after_seq))
                .order(book_change::seq)
                .limit(limit)
                .select(ChangeRow::as_select())
                .load(conn)?;
            Ok(Ok(rows))
        })
        .map_err(|error| storage_error(&mut conn, error))?;
    let seq = |n: i64| u64::try_from(n).unwrap_or(0);
    match read {
        Err(counter) if after_seq < counter.purged_through => Err(ChangesError::Expired {
            purged_through: seq(counter.purged_through),
        }),
        Err(counter) => Err(ChangesError::Ahead {
            after,
            newest: seq(counter.last_seq),
        }),
        Ok(rows) => Ok(rows
            .into_iter()
            .map(Change::try_from)
            .collect::<Result<_, _>>()?),
    }
}

#[derive(QueryableByName)]
struct Purged {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Purges the numbered changes made before `now - age`, oldest first, a step at a time (each
/// step its own short transaction, so a purge of any size never meets the statement timeout and
/// never holds locks for long), and moves the watermark past them: what is kept is always a
/// suffix of the feed.
pub(crate) fn forget_older_than(pool: &PgPool, age: TimeDelta) -> Result<u64, StorageError> {
    let cutoff = Utc::now() - age;
    // Only numbered changes can be purged (the watermark is a seq): number what is due first.
    sequence_all(pool)?;
    let mut conn = checkout(pool)?;
    let mut total = 0;
    for _ in 0..MAX_STEPS {
        let purged = diesel::sql_query("SELECT purge_book_changes($1, $2) AS count")
            .bind::<diesel::sql_types::Timestamptz, _>(cutoff)
            .bind::<diesel::sql_types::Integer, _>(PURGE_STEP as i32)
            .get_result::<Purged>(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        total += u64::try_from(purged.count).unwrap_or(0);
        if purged.count < PURGE_STEP {
            break;
        }
    }
    Ok(total)
}

/// Wakes when any instance numbers new changes (`sequence_book_changes()` sends `NOTIFY
/// book_changes` when it gives seqs), through PostgreSQL's `LISTEN`, on a connection of its own
/// (a pooled one would be handed to others, and a session behind PgBouncer's transaction mode may
/// not keep its `LISTEN`). When it cannot listen, callers poll.
pub struct ChangeListener {
    url: String,
    connection: Option<PgConnection>,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("ChangeListener")
            .field("listening", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// A listener on the database at `url`; it connects on first use and again after a failure.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            connection: None,
        }
    }

    fn connect(&self) -> Result<PgConnection, StorageError> {
        let mut conn = PgConnection::establish(&self.url)
            .map_err(|error| StorageError::Unavailable(anyhow!(error)))?;
        conn.batch_execute("LISTEN book_changes")
            .map_err(|error| StorageError::Unavailable(anyhow!(error)))?;
        Ok(conn)
    }
}

impl ChangeSignal for ChangeListener {
    fn changed(&mut self) -> Result<bool, StorageError> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
            // Whatever happened while not listening is unknown: say it may have changed.
            return Ok(true);
        }
        let Some(conn) = self.connection.as_mut() else {
            return Ok(true);
        };
        let mut changed = false;
        let mut failed = None;
        for notification in conn.notifications_iter() {
            match notification {
                Ok(_) => changed = true,
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = failed {
            self.connection = None;
            return Err(StorageError::Unavailable(
                anyhow!(error).context("the change listener lost its connection"),
            ));
        }
        Ok(changed)
    }
}

impl ChangeFeed for PostgresBookRepository {
    fn changes(&self, after: u64, limit: ChangeLimit) -> Result<Vec<Change>, ChangesError> {
        // Always on the primary: giving seqs is a write.
        changes(self.pool(), after, limit)
    }

    fn last_change(&self) -> Result<u64, StorageError> {
        last_change(self.pool())
    }

    fn sequence_changes(&self) -> Result<u64, StorageError> {
        sequence_all(self.pool())
    }

    fn forget_changes_older_than(&self, age: TimeDelta) -> Result<u64, StorageError> {
        forget_older_than(self.pool(), age)
    }
}
