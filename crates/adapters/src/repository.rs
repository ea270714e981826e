//! The book repository on PostgreSQL.

use anyhow::{Context, anyhow};
use books_domain::{
    Author, Book, BookFilter, BookId, BookPatch, BookRepository, Change, ChangeLimit, ChangesError,
    ConsistencyToken, CreateBookError, Created, CreatedBooks, EXPORT_SLICE, ExportQuery,
    ExportSink, Genre, GetBookError, IdempotencyKey, ListBooksError, ListQuery, NewBook, NewBooks,
    PatchOf, Position, Sort, StorageError, Title, Version, VersionCheck, WriteBookError,
};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::connection::SimpleConnection;
use diesel::dsl::now;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text};

use std::sync::Arc;

use crate::PgPool;
use crate::condition::{Order, after, filter_conditions};
use crate::connection::{checkout, storage_error};
use crate::errors::{Failure, classify};
use crate::replicas::Replicas;
use crate::schema::{book, idempotency_key};

/// Stores books in the `book` table. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PostgresBookRepository {
    pool: PgPool,
    replicas: Option<Arc<Replicas>>,
}

impl PostgresBookRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            replicas: None,
        }
    }

    /// The same repository, reading from `replicas` while one is in use (see [`Replicas`]).
    #[must_use]
    pub fn reading_from(self, replicas: Arc<Replicas>) -> Self {
        Self {
            replicas: Some(replicas),
            ..self
        }
    }

    /// Runs `read` on a replica in use that holds every write up to `seen`, or else (none does,
    /// or the read failed there) on the primary: a replica's trouble never fails a read the
    /// primary can answer.
    fn read<T>(
        &self,
        seen: Option<ConsistencyToken>,
        read: impl Fn(&mut PgConnection) -> Result<T, DieselError>,
    ) -> Result<T, StorageError> {
        if let Some(value) = self
            .replicas
            .as_ref()
            .and_then(|replicas| replicas.read(seen, &read))
        {
            return Ok(value);
        }
        let mut conn = self.conn()?;
        read(&mut conn).map_err(|error| storage_error(&mut conn, error))
    }

    /// The pool, for health checks and metrics.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every checkout goes through [`checkout`], so that waiting requests are counted alike for
    /// books and keys.
    fn conn(&self) -> Result<PooledConnection<ConnectionManager<PgConnection>>, StorageError> {
        checkout(&self.pool)
    }
}

#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = book, check_for_backend(Pg))]
struct BookRow {
    id: i64,
    title: String,
    author: String,
    genre: Option<String>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<BookRow> for Book {
    type Error = StorageError;

    fn try_from(row: BookRow) -> Result<Self, StorageError> {
        // The table's constraints match the domain's rules, so a failure here means the two
        // have drifted apart: a bug to report, not input to reject.
        let id = row.id;
        let book = (|| {
            Ok::<_, anyhow::Error>(Book::new(
                BookId::new(row.id).context("id")?,
                Title::new(&row.title).context("title")?,
                Author::new(&row.author).context("author")?,
                Genre::optional(row.genre.as_deref()).context("genre")?,
                Version::new(row.version).context("version")?,
                row.created_at,
                row.updated_at,
            ))
        })();
        book.with_context(|| format!("the stored book {id} breaks the domain's rules"))
            .map_err(StorageError::Unknown)
    }
}

#[derive(AsChangeset)]
#[diesel(table_name = book)]
struct BookChanges<'a> {
    title: Option<&'a str>,
    author: Option<&'a str>,
    genre: Option<Option<&'a str>>,
}

type VersionFilter = Box<dyn BoxableExpression<book::table, Pg, SqlType = Bool>>;

/// The `WHERE` clause of a write: this id, at a version the caller allows. The check and the
/// write are one statement, so there is no window between reading a version and writing.
fn target(id: BookId, check: &VersionCheck) -> VersionFilter {
    let this_book = book::id.eq(id.get());
    match check {
        VersionCheck::Any => Box::new(this_book),
        VersionCheck::OneOf(versions) => Box::new(
            this_book
                .and(book::version.eq_any(versions.iter().map(|v| v.get()).collect::<Vec<_>>())),
        ),
    }
}

/// Says why a conditional write touched no row: the book is gone, or its version moved on.
fn explain_missed_write(conn: &mut PgConnection, id: BookId) -> WriteBookError {
    let current = book::table
        .find(id.get())
        .select(book::version)
        .first::<i64>(conn)
        .optional();
    match current {
        Ok(None) => WriteBookError::NotFound(id),
        Ok(Some(version)) => match Version::new(version) {
            Some(current) => WriteBookError::VersionMismatch { id, current },
            None => StorageError::Unknown(anyhow!("book {id} has version {version}")).into(),
        },
        Err(error) => storage_error(conn, error).into(),
    }
}

fn changes(patch: &BookPatch) -> BookChanges<'_> {
    BookChanges {
        title: patch.title.as_ref().map(Title::as_str),
        author: patch.author.as_ref().map(Author::as_str),
        genre: patch
            .genre
            .as_ref()
            .map(|genre| genre.as_ref().map(Genre::as_str)),
    }
}

/// "The stored book differs from what `patch` sets", or `None` for a patch that sets nothing.
fn differs(patch: &BookPatch) -> Option<VersionFilter> {
    let mut conditions: Vec<VersionFilter> = Vec::new();
    if let Some(title) = &patch.title {
        conditions.push(Box::new(book::title.ne(title.as_str().to_owned())));
    }
    if let Some(author) = &patch.author {
        conditions.push(Box::new(book::author.ne(author.as_str().to_owned())));
    }
    if let Some(genre) = &patch.genre {
        let genre = genre.as_ref().map(|g| g.as_str().to_owned());
        conditions.push(Box::new(book::genre.is_distinct_from(genre)));
    }
    conditions
        .into_iter()
        .reduce(|any, next| Box::new(any.or(next)))
}

/// True when applying `patch` to `row` would leave it as it is.
fn leaves_unchanged(patch: &BookPatch, row: &BookRow) -> bool {
    patch.title.as_ref().is_none_or(|t| t.as_str() == row.title)
        && patch
            .author
            .as_ref()
            .is_none_or(|a| a.as_str() == row.author)
        && patch
            .genre
            .as_ref()
            .is_none_or(|g| g.as_ref().map(Genre::as_str) == row.genre.as_deref())
}

/// A patch that the one-statement path did not write: the book is missing, at a version the
/// caller did not allow, or already as the patch would make it (or was changed by someone else
/// in between). Decided under the row's lock, so that the answer describes one state of the book.
fn patch_under_lock(
    conn: &mut PgConnection,
    id: BookId,
    patch: &BookPatch,
    check: &VersionCheck,
) -> Result<Book, WriteBookError> {
    enum Outcome {
        Missing,
        Stale(i64),
        As(BookRow),
    }
    let outcome = conn.transaction::<_, DieselError, _>(|conn| {
        let stored = book::table
            .find(id.get())
            .for_update()
            .select(BookRow::as_select())
            .first(conn)
            .optional()?;
        let Some(stored) = stored else {
            return Ok(Outcome::Missing);
        };
        if !Version::new(stored.version).is_some_and(|version| check.allows(version)) {
            return Ok(Outcome::Stale(stored.version));
        }
        if leaves_unchanged(patch, &stored) {
            return Ok(Outcome::As(stored));
        }
        diesel::update(book::table.find(id.get()))
            .set((
                changes(patch),
                book::version.eq(book::version + 1),
                book::updated_at.eq(now),
            ))
            .returning(BookRow::as_returning())
            .get_result(conn)
            .map(Outcome::As)
    });
    match outcome.map_err(|error| storage_error(conn, error))? {
        Outcome::Missing => Err(WriteBookError::NotFound(id)),
        Outcome::Stale(version) => match Version::new(version) {
            Some(current) => Err(WriteBookError::VersionMismatch { id, current }),
            None => Err(StorageError::Unknown(anyhow!("book {id} has version {version}")).into()),
        },
        Outcome::As(row) => Ok(row.try_into()?),
    }
}

fn insert_book(conn: &mut PgConnection, new: &NewBook) -> Result<BookRow, DieselError> {
    diesel::insert_into(book::table)
        .values((
            book::title.eq(new.title.as_str()),
            book::author.eq(new.author.as_str()),
            book::genre.eq(new.genre.as_ref().map(Genre::as_str)),
        ))
        .returning(BookRow::as_returning())
        .get_result(conn)
}

/// Inserts a batch in one statement whatever its size: three array parameters, unnested in
/// input order. Identity values are drawn row by row in that order, so sorting the returned rows
/// by id gives them back in input order.
fn insert_books(conn: &mut PgConnection, books: &NewBooks) -> Result<Vec<BookRow>, DieselError> {
    let books = books.as_slice();
    let titles: Vec<&str> = books.iter().map(|b| b.title.as_str()).collect();
    let authors: Vec<&str> = books.iter().map(|b| b.author.as_str()).collect();
    let genres: Vec<Option<&str>> = books
        .iter()
        .map(|b| b.genre.as_ref().map(Genre::as_str))
        .collect();
    let mut rows: Vec<BookRow> = diesel::sql_query(
        "INSERT INTO book (title, author, genre) \
         SELECT title, author, genre \
         FROM unnest($1::varchar[], $2::varchar[], $3::varchar[]) WITH ORDINALITY \
              AS given (title, author, genre, position) \
         ORDER BY position \
         RETURNING id, title, author, genre, version, created_at, updated_at",
    )
    .bind::<Array<Text>, _>(titles)
    .bind::<Array<Text>, _>(authors)
    .bind::<Array<Nullable<Text>>, _>(genres)
    .load(conn)?;
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}

/// One page of a listing, read on `conn`: the listing and the export share it.
fn page(
    conn: &mut PgConnection,
    filter: &BookFilter,
    sort: Sort,
    position: Option<&Position>,
    count: usize,
) -> Result<Vec<BookRow>, DieselError> {
    let limit = i64::try_from(count).unwrap_or(i64::MAX);
    let mut select = book::table.select(BookRow::as_select()).into_boxed::<Pg>();
    for condition in filter_conditions(filter) {
        select = select.filter(condition);
    }
    if let Some(position) = position {
        select = select.filter(after(position, sort.descending));
    }
    select.order(Order(sort)).limit(limit).load(conn)
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = idempotency_key, check_for_backend(Pg))]
struct KeyRow {
    title: Option<String>,
    author: Option<String>,
    genre: Option<String>,
    book_id: Option<i64>,
    created_at: DateTime<Utc>,
    batch_digest: Option<Vec<u8>>,
    book_ids: Option<Vec<i64>>,
}

impl KeyRow {
    fn came_with(&self, book: &NewBook) -> bool {
        self.title.as_deref() == Some(book.title.as_str())
            && self.author.as_deref() == Some(book.author.as_str())
            && self.genre.as_deref() == book.genre.as_ref().map(Genre::as_str)
    }

    /// The books exactly as the first batch request returned them: the same books as this
    /// request's (their digest matched), with the ids the first one got, at version 1, created
    /// when the key was stored (the same transaction, so the same `now()`).
    fn first_books(self, books: &NewBooks) -> Result<Vec<Book>, StorageError> {
        let ids = self
            .book_ids
            .filter(|ids| ids.len() == books.len())
            .ok_or_else(|| anyhow!("a batch's idempotency key was stored without its books"))?;
        ids.into_iter()
            .zip(books.as_slice())
            .map(|(id, book)| {
                Ok(Book::new(
                    BookId::new(id).ok_or_else(|| anyhow!("a batch remembered book id {id}"))?,
                    book.title.clone(),
                    book.author.clone(),
                    book.genre.clone(),
                    Version::FIRST,
                    self.created_at,
                    self.created_at,
                ))
            })
            .collect()
    }

    /// The book exactly as the first request returned it: the key was stored in the same
    /// transaction as the book, so `now()` (the transaction's start) is the book's creation time.
    fn first_book(self) -> Result<Book, StorageError> {
        let book_id = self
            .book_id
            .ok_or_else(|| anyhow!("an idempotency key was stored without its book"))?;
        let (Some(title), Some(author)) = (self.title, self.author) else {
            return Err(
                anyhow!("a single create's idempotency key was stored without its fields").into(),
            );
        };
        BookRow {
            id: book_id,
            title,
            author,
            genre: self.genre,
            version: Version::FIRST.get(),
            created_at: self.created_at,
            updated_at: self.created_at,
        }
        .try_into()
    }
}

/// What can go wrong inside the idempotent-create transaction.
enum CreateOnceError {
    Database(DieselError),
    Refused(CreateBookError),
}

impl From<DieselError> for CreateOnceError {
    fn from(error: DieselError) -> Self {
        Self::Database(error)
    }
}

/// Claims an idempotency key for this transaction: true when the key is new (and now held until
/// the transaction ends), false when it was stored before. A retry that arrives while the first
/// request holds the key waits on the key's row lock; past this wait it is told the first is
/// still in flight.
fn claim(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    fields: Option<&NewBook>,
    batch: Option<&NewBooks>,
) -> Result<bool, DieselError> {
    conn.batch_execute("SET LOCAL lock_timeout = '3s'")?;
    let claimed = diesel::insert_into(idempotency_key::table)
        .values((
            idempotency_key::owner.eq(owner_of(key)),
            idempotency_key::key.eq(key.as_str()),
            idempotency_key::title.eq(fields.map(|new| new.title.as_str())),
            idempotency_key::author.eq(fields.map(|new| new.author.as_str())),
            idempotency_key::genre.eq(fields.and_then(|new| new.genre.as_ref().map(Genre::as_str))),
            idempotency_key::batch_digest.eq(batch.map(|books| books.digest().to_vec())),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(claimed == 1)
}

/// The key's owner as stored: the API key's digest, empty for callers without one.
fn owner_of(key: &IdempotencyKey) -> Vec<u8> {
    key.owner()
        .map(|digest| digest.0.to_vec())
        .unwrap_or_default()
}

/// What a key was stored with, read inside the claiming transaction.
fn stored_key(conn: &mut PgConnection, key: &IdempotencyKey) -> Result<KeyRow, DieselError> {
    idempotency_key::table
        .find((owner_of(key), key.as_str()))
        .select(KeyRow::as_select())
        .first(conn)
}

/// Maps what went wrong in an idempotent create.
fn create_once_failed(conn: &mut PgConnection, error: CreateOnceError) -> CreateBookError {
    match error {
        CreateOnceError::Refused(error) => error,
        CreateOnceError::Database(error) if classify(&error) == Failure::LockTimeout => {
            CreateBookError::KeyInFlight
        }
        CreateOnceError::Database(error) => storage_error(conn, error).into(),
    }
}

/// What can go wrong inside an export's transaction.
enum ExportError {
    Database(DieselError),
    Broken(StorageError),
}

impl From<DieselError> for ExportError {
    fn from(error: DieselError) -> Self {
        Self::Database(error)
    }
}

impl PostgresBookRepository {
    /// The one-statement update of many books (see `patch_many`): `patches[i]` for each `(i,
    /// expected version)` of `batched`, the ids all distinct.
    fn patch_together(
        &self,
        patches: &[PatchOf],
        batched: &[(usize, Option<i64>)],
    ) -> Result<Vec<BookRow>, StorageError> {
        let pick = |(i, _): &(usize, Option<i64>)| &patches[*i];
        let ids: Vec<i64> = batched.iter().map(|b| pick(b).id.get()).collect();
        let titles: Vec<Option<&str>> = batched
            .iter()
            .map(|b| pick(b).patch.title.as_ref().map(Title::as_str))
            .collect();
        let authors: Vec<Option<&str>> = batched
            .iter()
            .map(|b| pick(b).patch.author.as_ref().map(Author::as_str))
            .collect();
        let set_genres: Vec<bool> = batched
            .iter()
            .map(|b| pick(b).patch.genre.is_some())
            .collect();
        let genres: Vec<Option<&str>> = batched
            .iter()
            .map(|b| {
                pick(b)
                    .patch
                    .genre
                    .as_ref()
                    .and_then(|g| g.as_ref().map(Genre::as_str))
            })
            .collect();
        let expected: Vec<Option<i64>> = batched.iter().map(|(_, e)| *e).collect();
        let mut conn = self.conn()?;
        diesel::sql_query(
            "UPDATE book AS b SET \
                 title = COALESCE(p.title, b.title), \
                 author = COALESCE(p.author, b.author), \
                 genre = CASE WHEN p.set_genre THEN p.genre ELSE b.genre END, \
                 version = b.version + 1, \
                 updated_at = now() \
             FROM unnest($1::bigint[], $2::varchar[], $3::varchar[], $4::bool[], $5::varchar[], \
                         $6::bigint[]) AS p (id, title, author, set_genre, genre, expected) \
             WHERE b.id = p.id \
               AND (p.expected IS NULL OR b.version = p.expected) \
               AND ((p.title IS NOT NULL AND b.title <> p.title) \
                 OR (p.author IS NOT NULL AND b.author <> p.author) \
                 OR (p.set_genre AND b.genre IS DISTINCT FROM p.genre)) \
             RETURNING b.id, b.title, b.author, b.genre, b.version, b.created_at, b.updated_at",
        )
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Array<Nullable<Text>>, _>(titles)
        .bind::<Array<Nullable<Text>>, _>(authors)
        .bind::<Array<diesel::sql_types::Bool>, _>(set_genres)
        .bind::<Array<Nullable<Text>>, _>(genres)
        .bind::<Array<Nullable<BigInt>>, _>(expected)
        .load(&mut conn)
        .map_err(|error| storage_error(&mut conn, error))
    }
}

impl BookRepository for PostgresBookRepository {
    fn create_many(&self, books: &NewBooks) -> Result<Vec<Book>, CreateBookError> {
        let mut conn = self.conn()?;
        // One statement: all rows or, when any fails, none.
        let rows =
            insert_books(&mut conn, books).map_err(|error| storage_error(&mut conn, error))?;
        Ok(rows
            .into_iter()
            .map(Book::try_from)
            .collect::<Result<_, _>>()?)
    }

    fn create_many_once(
        &self,
        key: &IdempotencyKey,
        books: &NewBooks,
    ) -> Result<CreatedBooks, CreateBookError> {
        let mut conn = self.conn()?;
        let outcome = conn.transaction::<_, CreateOnceError, _>(|conn| {
            if claim(conn, key, None, Some(books))? {
                let rows = insert_books(conn, books)?;
                let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
                diesel::update(idempotency_key::table.find((owner_of(key), key.as_str())))
                    .set(idempotency_key::book_ids.eq(ids))
                    .execute(conn)?;
                let books = rows
                    .into_iter()
                    .map(Book::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(|e| CreateOnceError::Refused(e.into()))?;
                return Ok(CreatedBooks {
                    books,
                    replayed: false,
                });
            }
            let stored = stored_key(conn, key)?;
            if stored.batch_digest.as_deref() != Some(books.digest().as_slice()) {
                return Err(CreateOnceError::Refused(CreateBookError::KeyReused));
            }
            let books = stored
                .first_books(books)
                .map_err(|e| CreateOnceError::Refused(e.into()))?;
            Ok(CreatedBooks {
                books,
                replayed: true,
            })
        });
        outcome.map_err(|error| create_once_failed(&mut conn, error))
    }

    fn export(&self, query: &ExportQuery, sink: &mut ExportSink<'_>) -> Result<(), ListBooksError> {
        // Always on the primary: a replica that fails mid-export cannot hand over to another
        // without repeating or losing books, and the primary's snapshot is the freshest.
        let mut conn = self.conn()?;
        let outcome = conn
            .build_transaction()
            .repeatable_read()
            .read_only()
            .run::<_, ExportError, _>(|conn| {
                // One snapshot for every page: REPEATABLE READ fixes it at the first query.
                let mut position: Option<Position> = None;
                loop {
                    let rows = page(
                        conn,
                        &query.filter,
                        query.sort,
                        position.as_ref(),
                        EXPORT_SLICE,
                    )?;
                    let last_page = rows.len() < EXPORT_SLICE;
                    let books = rows
                        .into_iter()
                        .map(Book::try_from)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(ExportError::Broken)?;
                    position = books.last().map(|last| Position::of(last, query.sort.key));
                    if books.is_empty() || sink(books).is_break() || last_page {
                        return Ok(());
                    }
                }
            });
        match outcome {
            Ok(()) => Ok(()),
            Err(ExportError::Broken(error)) => Err(error.into()),
            Err(ExportError::Database(error)) => Err(storage_error(&mut conn, error).into()),
        }
    }

    fn create_once(&self, key: &IdempotencyKey, new: &NewBook) -> Result<Created, CreateBookError> {
        let mut conn = self.conn()?;
        let outcome = conn.transaction::<_, CreateOnceError, _>(|conn| {
            if claim(conn, key, Some(new), None)? {
                let row = insert_book(conn, new)?;
                diesel::update(idempotency_key::table.find((owner_of(key), key.as_str())))
                    .set(idempotency_key::book_id.eq(row.id))
                    .execute(conn)?;
                let book = Book::try_from(row).map_err(|e| CreateOnceError::Refused(e.into()))?;
                return Ok(Created {
                    book,
                    replayed: false,
                });
            }
            let stored = stored_key(conn, key)?;
            if !stored.came_with(new) {
                return Err(CreateOnceError::Refused(CreateBookError::KeyReused));
            }
            let book = stored
                .first_book()
                .map_err(|e| CreateOnceError::Refused(e.into()))?;
            Ok(Created {
                book,
                replayed: true,
            })
        });
        outcome.map_err(|error| create_once_failed(&mut conn, error))
    }

    fn forget_keys_older_than(&self, age: TimeDelta) -> Result<u64, StorageError> {
        let cutoff = Utc::now() - age;
        let mut conn = self.conn()?;
        let deleted =
            diesel::delete(idempotency_key::table.filter(idempotency_key::created_at.lt(cutoff)))
                .execute(&mut conn)
                .map_err(|error| storage_error(&mut conn, error))?;
        Ok(deleted as u64)
    }

    fn create(&self, new: &NewBook) -> Result<Book, CreateBookError> {
        let mut conn = self.conn()?;
        let row = insert_book(&mut conn, new).map_err(|error| storage_error(&mut conn, error))?;
        Ok(row.try_into()?)
    }

    fn find_by_id(&self, id: BookId) -> Result<Book, GetBookError> {
        let row = self.read(None, |conn| {
            book::table
                .find(id.get())
                .select(BookRow::as_select())
                .first(conn)
                .optional()
        })?;
        Ok(row.ok_or(GetBookError::NotFound(id))?.try_into()?)
    }

    fn find_by_ids(&self, ids: &[BookId]) -> Result<Vec<Book>, StorageError> {
        self.find_by_ids_seeing(ids, None)
    }

    fn find_by_ids_seeing(
        &self,
        ids: &[BookId],
        seen: Option<ConsistencyToken>,
    ) -> Result<Vec<Book>, StorageError> {
        let ids: Vec<i64> = ids.iter().map(|id| id.get()).collect();
        // One statement for the whole batch: `id = ANY($1)`, one bind parameter whatever the
        // count, so that diesel's statement cache holds one entry for every batch size.
        let rows = self.read(seen, |conn| {
            book::table
                .filter(book::id.eq_any(&ids))
                .select(BookRow::as_select())
                .load(conn)
        })?;
        rows.into_iter().map(Book::try_from).collect()
    }

    fn list(&self, query: &ListQuery, count: usize) -> Result<Vec<Book>, ListBooksError> {
        self.list_seeing(query, count, None)
    }

    fn list_seeing(
        &self,
        query: &ListQuery,
        count: usize,
        seen: Option<ConsistencyToken>,
    ) -> Result<Vec<Book>, ListBooksError> {
        let rows = self.read(seen, |conn| {
            page(conn, &query.filter, query.sort, query.after.as_ref(), count)
        })?;
        Ok(rows
            .into_iter()
            .map(Book::try_from)
            .collect::<Result<_, _>>()?)
    }

    fn replace(
        &self,
        id: BookId,
        new: &NewBook,
        check: &VersionCheck,
    ) -> Result<Book, WriteBookError> {
        self.patch(id, &BookPatch::from(new.clone()), check)
    }

    fn patch(
        &self,
        id: BookId,
        patch: &BookPatch,
        check: &VersionCheck,
    ) -> Result<Book, WriteBookError> {
        let mut conn = self.conn()?;
        if let Some(differs) = differs(patch) {
            // The usual case in one statement: write when the version is allowed and something
            // differs. `version = version + 1` is evaluated by PostgreSQL under the row lock, so
            // concurrent patches each add one: none is lost.
            let row = diesel::update(book::table)
                .filter(target(id, check))
                .filter(differs)
                .set((
                    changes(patch),
                    book::version.eq(book::version + 1),
                    book::updated_at.eq(now),
                ))
                .returning(BookRow::as_returning())
                .get_result(&mut conn)
                .optional()
                .map_err(|error| storage_error(&mut conn, error))?;
            if let Some(row) = row {
                return Ok(row.try_into()?);
            }
        }
        patch_under_lock(&mut conn, id, patch, check)
    }

    fn patch_many(&self, patches: &[PatchOf]) -> Vec<Result<Book, WriteBookError>> {
        // The usual case, for every patch at once: one statement and one commit, writing each
        // book whose version is allowed and that something differs in (the same conditions as
        // `patch`'s one-statement path). Whatever it did not write (a missing book, a stale
        // version, a patch that changes nothing, an If-Match with several versions) then takes
        // the one-by-one path, which says why under the row's lock.
        let mut batched: Vec<(usize, Option<i64>)> = patches
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let expected = match &p.check {
                    VersionCheck::Any => None,
                    VersionCheck::OneOf(versions) if versions.len() == 1 => Some(versions[0].get()),
                    VersionCheck::OneOf(_) => return None,
                };
                differs(&p.patch).map(|_| (i, expected))
            })
            .collect();
        // Rows are locked in the order given: in id order, two batches in flight at once can
        // never wait for each other in a circle.
        batched.sort_by_key(|(i, _)| patches[*i].id);
        let mut written: Vec<Option<Result<Book, WriteBookError>>> =
            patches.iter().map(|_| None).collect();
        if batched.len() > 1 {
            match self.patch_together(patches, &batched) {
                Ok(rows) => {
                    for row in rows {
                        if let Some(i) = patches.iter().position(|p| p.id.get() == row.id) {
                            written[i] = Some(Book::try_from(row).map_err(Into::into));
                        }
                    }
                }
                Err(error @ StorageError::Unavailable(_)) => {
                    let cause = format!("{:#}", anyhow!(error));
                    return patches
                        .iter()
                        .map(|_| Err(StorageError::Unavailable(anyhow!("{cause}")).into()))
                        .collect();
                }
                // A deadlock with another batch, say: each patch goes its own way.
                Err(_) => {}
            }
        }
        written
            .into_iter()
            .zip(patches)
            .map(|(done, p)| done.unwrap_or_else(|| self.patch(p.id, &p.patch, &p.check)))
            .collect()
    }

    fn delete(&self, id: BookId, check: &VersionCheck) -> Result<(), WriteBookError> {
        let mut conn = self.conn()?;
        let deleted = diesel::delete(book::table)
            .filter(target(id, check))
            .execute(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        if deleted == 0 {
            return Err(explain_missed_write(&mut conn, id));
        }
        Ok(())
    }

    fn changes(&self, after: u64, limit: ChangeLimit) -> Result<Vec<Change>, ChangesError> {
        // Always on the primary: giving seqs is a write.
        crate::changes::changes(&self.pool, after, limit)
    }

    fn last_change(&self) -> Result<u64, StorageError> {
        crate::changes::last_change(&self.pool)
    }

    fn consistency_token(&self) -> Result<Option<ConsistencyToken>, StorageError> {
        crate::replicas::write_position(&self.pool).map(|lsn| Some(ConsistencyToken::new(lsn)))
    }

    fn sequence_changes(&self) -> Result<u64, StorageError> {
        crate::changes::sequence_all(&self.pool)
    }

    fn forget_changes_older_than(&self, age: TimeDelta) -> Result<u64, StorageError> {
        crate::changes::forget_older_than(&self.pool, age)
    }

    fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        Ok(())
    }
}
