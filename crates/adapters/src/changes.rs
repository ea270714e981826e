//! The change feed on PostgreSQL: reading sequenced changes, the retention purge, and a listener
//! that wakes on the writes' notifications (see `migrations/…_record_book_changes/up.sql` for how
//! changes are recorded and sequenced).

use anyhow::{Context as _, anyhow};
use books_domain::{
    Author, Book, BookId, Change, ChangeKind, ChangeLimit, ChangeSignal, ChangesError, Genre,
    StorageError, Title, Version,
};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::BigInt;

use crate::PgPool;
use crate::connection::{checkout, storage_error};
use crate::schema::{book_change, book_change_counter};

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
                (Some(title), Some(author), Some(created_at), Some(updated_at)) => Some(Book::new(
                    book_id,
                    Title::new(&title).context("title")?,
                    Author::new(&author).context("author")?,
                    Genre::optional(row.genre.as_deref()).context("genre")?,
                    version,
                    created_at,
                    updated_at,
                )),
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

/// Gives seqs to the changes committed since the last call (one round trip; nothing is locked
/// when there is nothing to give).
fn sequence(conn: &mut PgConnection) -> Result<i64, DieselError> {
    diesel::sql_query("SELECT sequence_book_changes() AS last")
        .get_result::<Sequenced>(conn)
        .map(|row| row.last)
}

/// The newest seq, once every committed change has its seq.
pub(crate) fn last_change(pool: &PgPool) -> Result<u64, StorageError> {
    let mut conn = checkout(pool)?;
    let last = sequence(&mut conn).map_err(|error| storage_error(&mut conn, error))?;
    Ok(u64::try_from(last).unwrap_or(0))
}

/// The changes after `after`, once every committed change has its seq.
pub(crate) fn changes(
    pool: &PgPool,
    after: u64,
    limit: ChangeLimit,
) -> Result<Vec<Change>, ChangesError> {
    let mut conn = checkout(pool)?;
    sequence(&mut conn).map_err(|error| storage_error(&mut conn, error))?;
    let after_seq = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit.get()).unwrap_or(i64::MAX);
    // The purge watermark and the changes from one snapshot, so that a purge in between cannot
    // make a reader skip what it removed.
    let read = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run::<_, DieselError, _>(|conn| {
            let purged_through: i64 = book_change_counter::table
                .select(book_change_counter::purged_through)
                .first(conn)?;
            if after_seq < purged_through {
                return Ok(Err(purged_through));
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
    match read {
        Err(purged_through) => Err(ChangesError::Expired {
            purged_through: u64::try_from(purged_through).unwrap_or(0),
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

/// Purges every sequenced change up to the last one made before `now - age`, and moves the
/// watermark there: what is kept is always a suffix of the feed.
pub(crate) fn forget_older_than(pool: &PgPool, age: TimeDelta) -> Result<u64, StorageError> {
    let cutoff = Utc::now() - age;
    let mut conn = checkout(pool)?;
    let purged = diesel::sql_query(
        "WITH cut AS ( \
             SELECT max(seq) AS through FROM book_change WHERE seq IS NOT NULL AND at < $1 \
         ), gone AS ( \
             DELETE FROM book_change WHERE seq <= (SELECT through FROM cut) RETURNING seq \
         ), moved AS ( \
             UPDATE book_change_counter \
             SET purged_through = GREATEST(purged_through, (SELECT through FROM cut)) \
             WHERE (SELECT through FROM cut) IS NOT NULL \
         ) \
         SELECT count(*) AS count FROM gone",
    )
    .bind::<diesel::sql_types::Timestamptz, _>(cutoff)
    .get_result::<Purged>(&mut conn)
    .map_err(|error| storage_error(&mut conn, error))?;
    Ok(u64::try_from(purged.count).unwrap_or(0))
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
