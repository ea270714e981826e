//! Idempotent creates: a key remembers a digest of what its create asked for and the ids it
//! made, in the create's own transaction.

use anyhow::anyhow;
use books_domain::{
    Book, BookId, CreateBookError, Created, CreatedBooks, IdempotencyKey, IdempotencyRecords,
    NewBook, NewBooks, RequestDigest, StorageError, Version,
};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::PostgresBookRepository;
use super::writing::{create_error, insert_books};
use crate::connection::storage_error;
use crate::errors::{Failure, classify};
use crate::schema::idempotency_key;

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = idempotency_key, check_for_backend(Pg))]
struct KeyRow {
    request_digest: Vec<u8>,
    digest_fields: i16,
    book_ids: Option<Vec<i64>>,
    created_at: DateTime<Utc>,
}

impl KeyRow {
    /// The books exactly as the first request returned them: the same books as this request's
    /// (their digest matched), with the ids the first one got, at version 1, created when the
    /// key was stored (the same transaction, so the same `now()`).
    fn first_books(self, books: &[NewBook]) -> Result<Vec<Book>, StorageError> {
        let ids = self
            .book_ids
            .filter(|ids| ids.len() == books.len())
            .ok_or_else(|| anyhow!("an idempotency key was stored without its books"))?;
        ids.into_iter()
            .zip(books)
            .map(|(id, book)| {
                Ok(Book::new(
                    BookId::new(id).ok_or_else(|| anyhow!("a key remembered book id {id}"))?,
                    book.clone(),
                    Version::FIRST,
                    self.created_at,
                    self.created_at,
                ))
            })
            .collect()
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

/// The key's owner as stored: the API key's digest, empty for callers without one.
fn owner_of(key: &IdempotencyKey) -> Vec<u8> {
    key.owner()
        .map(|digest| digest.0.to_vec())
        .unwrap_or_default()
}

/// Claims an idempotency key for this transaction: true when the key is new (and now held until
/// the transaction ends), false when it was stored before. A retry that arrives while the first
/// request holds the key waits on the key's row lock; past this wait it is told the first is
/// still in flight.
fn claim(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    digest: &RequestDigest,
) -> Result<bool, DieselError> {
    conn.batch_execute("SET LOCAL lock_timeout = '3s'")?;
    let claimed = diesel::insert_into(idempotency_key::table)
        .values((
            idempotency_key::owner.eq(owner_of(key)),
            idempotency_key::key.eq(key.as_str()),
            idempotency_key::request_digest.eq(digest.bytes.to_vec()),
            idempotency_key::digest_fields.eq(i16::try_from(digest.fields).unwrap_or(i16::MAX)),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    Ok(claimed == 1)
}

impl PostgresBookRepository {
    /// Creates `books` once per `key`, `digest` telling what they were: the first call creates
    /// them and remembers the key; a later call whose request `matches` the stored digest gets
    /// the first call's books.
    fn create_with_key(
        &self,
        key: &IdempotencyKey,
        digest: &RequestDigest,
        matches: impl Fn(&RequestDigest) -> bool,
        books: &[NewBook],
    ) -> Result<(Vec<Book>, bool), CreateBookError> {
        let mut conn = self.conn()?;
        let outcome = conn.transaction::<_, CreateOnceError, _>(|conn| {
            let refused = |error: StorageError| CreateOnceError::Refused(error.into());
            if claim(conn, key, digest)? {
                let rows = insert_books(conn, books)?;
                let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
                diesel::update(idempotency_key::table.find((owner_of(key), key.as_str())))
                    .set(idempotency_key::book_ids.eq(ids))
                    .execute(conn)?;
                let books = rows
                    .into_iter()
                    .map(Book::try_from)
                    .collect::<Result<_, _>>()
                    .map_err(refused)?;
                return Ok((books, false));
            }
            let stored: KeyRow = idempotency_key::table
                .find((owner_of(key), key.as_str()))
                .select(KeyRow::as_select())
                .first(conn)?;
            let remembered = RequestDigest {
                bytes: stored.request_digest.as_slice().try_into().map_err(|_| {
                    refused(anyhow!("a stored request digest is not 32 bytes").into())
                })?,
                fields: usize::try_from(stored.digest_fields).unwrap_or(0),
            };
            if !matches(&remembered) {
                return Err(CreateOnceError::Refused(CreateBookError::KeyReused));
            }
            Ok((stored.first_books(books).map_err(refused)?, true))
        });
        outcome.map_err(|error| match error {
            CreateOnceError::Refused(error) => error,
            CreateOnceError::Database(error) if classify(&error) == Failure::LockTimeout => {
                CreateBookError::KeyInFlight
            }
            CreateOnceError::Database(error) => create_error(&mut conn, error, books),
        })
    }
}

impl IdempotencyRecords for PostgresBookRepository {
    fn create_once(&self, key: &IdempotencyKey, new: &NewBook) -> Result<Created, CreateBookError> {
        let (mut books, replayed) = self.create_with_key(
            key,
            &new.digest(),
            |stored| stored.is_of_book(new),
            std::slice::from_ref(new),
        )?;
        let book = books
            .pop()
            .ok_or_else(|| StorageError::Unknown(anyhow!("an idempotent create made no book")))?;
        Ok(Created { book, replayed })
    }

    fn create_many_once(
        &self,
        key: &IdempotencyKey,
        books: &NewBooks,
    ) -> Result<CreatedBooks, CreateBookError> {
        let (books, replayed) = self.create_with_key(
            key,
            &books.digest(),
            |stored| stored.is_of_books(books.as_slice()),
            books.as_slice(),
        )?;
        Ok(CreatedBooks { books, replayed })
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
}
