//! Writing books: creates, patches (a replacement is the patch that sets every field) and
//! deletes, each one statement in the usual case.

use anyhow::anyhow;
use books_domain::{
    Book, BookField, BookId, BookPatch, BookWriter, ConsistencyToken, CreateBookError, Isbn,
    IsbnTaken, NewBook, NewBooks, StorageError, TargetedPatch, Version, VersionCheck,
    WriteBookError,
};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Bool, Nullable};

use super::PostgresBookRepository;
use super::rows::{BookRow, INSERT, bind_field, update};
use crate::connection::storage_error;
use crate::errors::violates;
use crate::schema::book;

/// The constraint that keeps an ISBN to one book (`migrations/…_identify_editions`).
const ISBN_KEY: &str = "book_isbn_key";

/// When `error` is the ISBN's unique constraint refusing a write: the first of `isbns` that a
/// book other than `except` has, read after the refused statement. `None` for any other error.
/// Should that book be gone already (deleted in between), the write may simply be tried again,
/// so the answer is then "unavailable", which clients retry.
fn isbn_conflict(
    conn: &mut PgConnection,
    error: &DieselError,
    isbns: impl IntoIterator<Item = Isbn>,
    except: Option<BookId>,
) -> Option<Result<IsbnTaken, StorageError>> {
    if !violates(error, ISBN_KEY) {
        return None;
    }
    let isbns: Vec<Isbn> = isbns.into_iter().collect();
    let texts: Vec<&str> = isbns.iter().map(Isbn::as_str).collect();
    let owners = book::table
        .filter(book::isbn.eq_any(&texts))
        .filter(book::id.ne(except.map_or(0, BookId::get)))
        .select((book::id, book::isbn))
        .load::<(i64, Option<String>)>(conn);
    let owners = match owners {
        Ok(owners) => owners,
        Err(error) => return Some(Err(storage_error(conn, error))),
    };
    let taken = isbns.iter().find_map(|isbn| {
        let (id, _) = owners
            .iter()
            .find(|(_, owned)| owned.as_deref() == Some(isbn.as_str()))?;
        Some(IsbnTaken {
            isbn: *isbn,
            existing: BookId::new(*id)?,
        })
    });
    Some(taken.ok_or_else(|| {
        StorageError::Unavailable(anyhow!(
            "an ISBN was taken by a book deleted since; the write can be tried again"
        ))
    }))
}

/// A create refused by storage: an ISBN another book has, or a storage failure.
pub(super) fn create_error(
    conn: &mut PgConnection,
    error: DieselError,
    books: &[NewBook],
) -> CreateBookError {
    match isbn_conflict(conn, &error, books.iter().filter_map(|b| b.isbn), None) {
        Some(Ok(taken)) => CreateBookError::IsbnTaken(taken),
        Some(Err(error)) => error.into(),
        None => storage_error(conn, error).into(),
    }
}

/// Inserts books in one statement whatever their number: all rows or, when any fails, none.
/// Returns the rows in input order.
pub(super) fn insert_books(
    conn: &mut PgConnection,
    books: &[NewBook],
) -> Result<Vec<BookRow>, DieselError> {
    let mut statement = INSERT.query();
    for field in BookField::ALL {
        statement = bind_field(statement, field, books.iter().map(|b| Some(b.value(field))));
    }
    let mut rows: Vec<BookRow> = statement.load(conn)?;
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}

/// One patch of a statement: the patch, its book, and the version it must be at (`None` for any).
struct Planned<'a> {
    id: BookId,
    patch: &'a BookPatch,
    expected: Option<i64>,
}

/// Writes every planned patch whose version is allowed and that changes something, in one
/// statement and one commit; returns the rows written (a patch left out was not written).
fn update_books(
    conn: &mut PgConnection,
    planned: &[Planned<'_>],
) -> Result<Vec<BookRow>, DieselError> {
    let ids: Vec<i64> = planned.iter().map(|p| p.id.get()).collect();
    let expected: Vec<Option<i64>> = planned.iter().map(|p| p.expected).collect();
    // The fields some patch of the batch sets: the others are left alone (see `update`).
    let fields: Vec<BookField> = BookField::ALL
        .into_iter()
        .filter(|field| planned.iter().any(|p| p.patch.value(*field).is_some()))
        .collect();
    let mut statement = update(&fields)
        .query()
        .bind::<Array<BigInt>, _>(ids)
        .bind::<Array<Nullable<BigInt>>, _>(expected);
    for field in fields {
        let sets: Vec<bool> = planned
            .iter()
            .map(|p| p.patch.value(field).is_some())
            .collect();
        statement = statement.bind::<Array<Bool>, _>(sets);
        statement = bind_field(
            statement,
            field,
            planned.iter().map(|p| p.patch.value(field)),
        );
    }
    statement.load(conn)
}

/// The version a write must find, when the statement can say it (`Any`, or one version).
fn expected(check: &VersionCheck) -> Option<Option<i64>> {
    match check {
        VersionCheck::Any => Some(None),
        VersionCheck::OneOf(versions) if versions.len() == 1 => Some(Some(versions[0].get())),
        VersionCheck::OneOf(_) => None,
    }
}

fn mismatch(id: BookId, version: i64) -> WriteBookError {
    match Version::new(version) {
        Some(current) => WriteBookError::VersionMismatch { id, current },
        None => StorageError::Unknown(anyhow!("book {id} has version {version}")).into(),
    }
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
        As(Book),
    }
    enum Failed {
        Database(DieselError),
        Broken(StorageError),
    }
    impl From<DieselError> for Failed {
        fn from(error: DieselError) -> Self {
            Self::Database(error)
        }
    }
    let outcome = conn.transaction::<_, Failed, _>(|conn| {
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
        let version = stored.version;
        let current = Book::try_from(stored).map_err(Failed::Broken)?;
        if !patch.changes(current.fields()) {
            return Ok(Outcome::As(current));
        }
        let planned = Planned {
            id,
            patch,
            expected: Some(version),
        };
        let row = update_books(conn, std::slice::from_ref(&planned))?
            .pop()
            .ok_or_else(|| {
                Failed::Broken(StorageError::Unknown(anyhow!(
                    "book {id} was not written under its lock"
                )))
            })?;
        Book::try_from(row).map(Outcome::As).map_err(Failed::Broken)
    });
    match outcome {
        Ok(Outcome::Missing) => Err(WriteBookError::NotFound(id)),
        Ok(Outcome::Stale(version)) => Err(mismatch(id, version)),
        Ok(Outcome::As(book)) => Ok(book),
        Err(Failed::Broken(error)) => Err(error.into()),
        Err(Failed::Database(error)) => {
            let isbn = patch.isbn.flatten();
            match isbn_conflict(conn, &error, isbn, Some(id)) {
                Some(Ok(taken)) => Err(WriteBookError::IsbnTaken(taken)),
                Some(Err(error)) => Err(error.into()),
                None => Err(storage_error(conn, error).into()),
            }
        }
    }
}

/// The patches of a batch that its one statement did not write, decided together under their
/// rows' locks: one transaction locks the rows (in id order), answers each patch whose book is
/// missing, at a version not allowed or already as the patch would make it, and writes the rest
/// (changed by someone else in between, or allowed by an `If-Match` of several versions) in one
/// statement. A patch that changes nothing (a client's retry, two clients setting one value) is
/// common, and one by one each took a transaction of its own: three round trips.
///
/// `None` when the transaction fails (an ISBN another book has, a deadlock with another batch)
/// or the patches name a book twice: then each patch goes its own way, which says why.
fn patch_leftovers(
    conn: &mut PgConnection,
    leftovers: &[&TargetedPatch],
) -> Option<Vec<Result<Book, WriteBookError>>> {
    let mut ids: Vec<i64> = leftovers.iter().map(|p| p.id.get()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|pair| pair[0] == pair[1]) {
        return None;
    }
    let decided = conn.transaction::<_, DieselError, _>(|conn| {
        let mut rows: Vec<BookRow> = book::table
            .filter(book::id.eq_any(&ids))
            .order(book::id)
            .for_update()
            .select(BookRow::as_select())
            .load(conn)?;
        let mut outcomes: Vec<Option<Result<Book, WriteBookError>>> = Vec::new();
        let mut planned: Vec<Planned<'_>> = Vec::new();
        for p in leftovers {
            let Some(at) = rows.iter().position(|row| row.id == p.id.get()) else {
                outcomes.push(Some(Err(WriteBookError::NotFound(p.id))));
                continue;
            };
            let row = rows.swap_remove(at);
            let version = row.version;
            if !Version::new(version).is_some_and(|v| p.check.allows(v)) {
                outcomes.push(Some(Err(mismatch(p.id, version))));
                continue;
            }
            match Book::try_from(row) {
                Ok(current) if !p.patch.changes(current.fields()) => {
                    outcomes.push(Some(Ok(current)))
                }
                Ok(_) => {
                    planned.push(Planned {
                        id: p.id,
                        patch: &p.patch,
                        expected: Some(version),
                    });
                    outcomes.push(None);
                }
                Err(error) => outcomes.push(Some(Err(error.into()))),
            }
        }
        if !planned.is_empty() {
            planned.sort_by_key(|p| p.id);
            let mut written = update_books(conn, &planned)?;
            for (p, outcome) in leftovers.iter().zip(outcomes.iter_mut()) {
                if outcome.is_none() {
                    // Under the row's lock, at the version just read: the statement writes it.
                    let at = written.iter().position(|row| row.id == p.id.get());
                    *outcome = Some(match at {
                        Some(at) => Book::try_from(written.swap_remove(at)).map_err(Into::into),
                        None => Err(StorageError::Unknown(anyhow!(
                            "book {} was not written under its lock",
                            p.id
                        ))
                        .into()),
                    });
                }
            }
        }
        Ok(outcomes.into_iter().flatten().collect::<Vec<_>>())
    });
    decided
        .ok()
        .filter(|outcomes| outcomes.len() == leftovers.len())
}

impl BookWriter for PostgresBookRepository {
    fn create(&self, new: &NewBook) -> Result<Book, CreateBookError> {
        let mut conn = self.conn()?;
        let books = std::slice::from_ref(new);
        let mut rows = insert_books(&mut conn, books)
            .map_err(|error| create_error(&mut conn, error, books))?;
        let row = rows
            .pop()
            .ok_or_else(|| StorageError::Unknown(anyhow!("an insert returned no row")))?;
        Ok(row.try_into()?)
    }

    fn create_many(&self, books: &NewBooks) -> Result<Vec<Book>, CreateBookError> {
        let mut conn = self.conn()?;
        let books = books.as_slice();
        let rows = insert_books(&mut conn, books)
            .map_err(|error| create_error(&mut conn, error, books))?;
        Ok(rows
            .into_iter()
            .map(Book::try_from)
            .collect::<Result<_, _>>()?)
    }

    fn patch(
        &self,
        id: BookId,
        patch: &BookPatch,
        check: &VersionCheck,
    ) -> Result<Book, WriteBookError> {
        let mut results = self.patch_many(&[TargetedPatch {
            id,
            patch: patch.clone(),
            check: check.clone(),
        }]);
        results
            .pop()
            .unwrap_or_else(|| Err(StorageError::Unknown(anyhow!("a patch had no outcome")).into()))
    }

    fn patch_many(&self, patches: &[TargetedPatch]) -> Vec<Result<Book, WriteBookError>> {
        // The usual case, for every patch at once: one statement and one commit, writing each
        // book whose version is allowed and that something differs in. Whatever it did not write
        // (a missing book, a stale version, a patch that changes nothing, an If-Match with
        // several versions) then takes the one-by-one path, which says why under the row's lock.
        let mut planned: Vec<(usize, Planned<'_>)> = patches
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.patch.is_empty())
            .filter_map(|(i, p)| {
                let expected = expected(&p.check)?;
                Some((
                    i,
                    Planned {
                        id: p.id,
                        patch: &p.patch,
                        expected,
                    },
                ))
            })
            .collect();
        // Rows are locked in the order given: in id order, two batches in flight at once can
        // never wait for each other in a circle.
        planned.sort_by_key(|(_, p)| p.id);
        let mut written: Vec<Option<Result<Book, WriteBookError>>> =
            patches.iter().map(|_| None).collect();
        let mut conn = match self.conn() {
            Ok(conn) => conn,
            Err(error) => {
                let cause = format!("{:#}", anyhow!(error));
                return patches
                    .iter()
                    .map(|_| Err(StorageError::Unavailable(anyhow!("{cause}")).into()))
                    .collect();
            }
        };
        if !planned.is_empty() {
            let statement: Vec<Planned<'_>> = planned.into_iter().map(|(_, p)| p).collect();
            match update_books(&mut conn, &statement) {
                Ok(rows) => {
                    for row in rows {
                        if let Some(i) = patches.iter().position(|p| p.id.get() == row.id) {
                            written[i] = Some(Book::try_from(row).map_err(Into::into));
                        }
                    }
                }
                Err(error) => {
                    if let StorageError::Unavailable(error) = storage_error(&mut conn, error) {
                        let cause = format!("{error:#}");
                        return patches
                            .iter()
                            .map(|_| Err(StorageError::Unavailable(anyhow!("{cause}")).into()))
                            .collect();
                    }
                    // Otherwise (a deadlock with another batch, say) each patch goes its own way.
                }
            }
        }
        let leftovers: Vec<&TargetedPatch> = written
            .iter()
            .zip(patches)
            .filter(|(done, _)| done.is_none())
            .map(|(_, p)| p)
            .collect();
        if !leftovers.is_empty()
            && let Some(mut decided) = patch_leftovers(&mut conn, &leftovers).map(Vec::into_iter)
        {
            for done in written.iter_mut().filter(|done| done.is_none()) {
                *done = decided.next();
            }
        }
        written
            .into_iter()
            .zip(patches)
            .map(|(done, p)| {
                done.unwrap_or_else(|| patch_under_lock(&mut conn, p.id, &p.patch, &p.check))
            })
            .collect()
    }

    fn delete(&self, id: BookId, check: &VersionCheck) -> Result<(), WriteBookError> {
        let mut conn = self.conn()?;
        let this_book = book::id.eq(id.get());
        let deleted = match check {
            VersionCheck::Any => diesel::delete(book::table)
                .filter(this_book)
                .execute(&mut conn),
            VersionCheck::OneOf(versions) => {
                let versions: Vec<i64> = versions.iter().map(|v| v.get()).collect();
                diesel::delete(book::table)
                    .filter(this_book.and(book::version.eq_any(versions)))
                    .execute(&mut conn)
            }
        }
        .map_err(|error| storage_error(&mut conn, error))?;
        if deleted > 0 {
            return Ok(());
        }
        // Why the delete touched no row: the book is gone, or its version moved on.
        let current = book::table
            .find(id.get())
            .select(book::version)
            .first::<i64>(&mut conn)
            .optional()
            .map_err(|error| storage_error(&mut conn, error))?;
        Err(current.map_or(WriteBookError::NotFound(id), |version| {
            mismatch(id, version)
        }))
    }

    fn consistency_token(&self) -> Result<Option<ConsistencyToken>, StorageError> {
        crate::replicas::write_position(&self.pool).map(|lsn| Some(ConsistencyToken::new(lsn)))
    }
}
