//! Reading books: by id, many ids at once, pages of a listing, and whole exports.

use books_domain::{
    Book, BookFilter, BookId, BookReader, ConsistencyToken, EXPORT_SLICE, ExportQuery, ExportSink,
    GetBookError, ListBooksError, ListQuery, Position, Sort, StorageError,
};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use super::PostgresBookRepository;
use super::rows::BookRow;
use crate::condition::{Order, after, filter_conditions};
use crate::connection::storage_error;
use crate::schema::book;

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

impl BookReader for PostgresBookRepository {
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

    fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .map_err(|error| storage_error(&mut conn, error))?;
        Ok(())
    }
}
