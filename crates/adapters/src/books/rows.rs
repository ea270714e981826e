//! A stored book as diesel reads it, and the statements that write a book's fields, built from
//! the domain's field table ([`BookField::ALL`]) so that a new field needs no SQL of its own here.

use std::sync::{LazyLock, OnceLock};

use anyhow::Context as _;
use books_domain::{
    Book, BookField, BookId, BookInput, FieldKind, FieldValue, NewBook, Raw, StorageError, Version,
};
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, Integer, Nullable, Text};

use crate::prepared::{Prepared, Sql};
use crate::schema::book;

/// A row of `book`. Its fields are the table's columns: diesel checks them against `schema.rs`.
#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = book, check_for_backend(Pg))]
pub(crate) struct BookRow {
    pub(crate) id: i64,
    pub(crate) title: String,
    pub(crate) author: String,
    pub(crate) genre: Option<String>,
    pub(crate) version: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) isbn: Option<String>,
    pub(crate) published_year: Option<i32>,
}

impl TryFrom<BookRow> for Book {
    type Error = StorageError;

    fn try_from(row: BookRow) -> Result<Self, StorageError> {
        // The table's constraints match the domain's rules, so a failure here means the two
        // have drifted apart: a bug to report, not input to reject.
        let id = row.id;
        // The row's writable fields, as a caller would have given them.
        let text = |value: Option<String>| value.map_or(Raw::Null, Raw::Text);
        let input = BookInput {
            title: Raw::Text(row.title),
            author: Raw::Text(row.author),
            genre: text(row.genre),
            isbn: text(row.isbn),
            published_year: row
                .published_year
                .map_or(Raw::Null, |year| Raw::Integer(year.into())),
        };
        let book = (|| {
            Ok::<_, anyhow::Error>(Book::new(
                BookId::new(row.id).context("id")?,
                NewBook::parse(&input)?,
                Version::new(row.version).context("version")?,
                row.created_at,
                row.updated_at,
            ))
        })();
        book.with_context(|| format!("the stored book {id} breaks the domain's rules"))
            .map_err(StorageError::Unknown)
    }
}

/// Every column of `book` a statement returns, in [`BookRow`]'s terms.
pub(crate) static RETURNED: LazyLock<String> = LazyLock::new(|| {
    let fields: Vec<&str> = BookField::ALL.iter().map(|f| f.name()).collect();
    format!("id, {}, version, created_at, updated_at", fields.join(", "))
});

/// The SQL type of a field's column.
fn sql_type(field: BookField) -> &'static str {
    match field.kind() {
        FieldKind::Text | FieldKind::Isbn => "varchar",
        FieldKind::Year => "integer",
    }
}

/// Binds one field's values, one per row, as an array of the field's SQL type (`None` is NULL).
pub(crate) fn bind_field<'a>(
    statement: Prepared<'a>,
    field: BookField,
    values: impl Iterator<Item = Option<FieldValue<'a>>>,
) -> Prepared<'a> {
    match field.kind() {
        FieldKind::Year => {
            let values: Vec<Option<i32>> = values
                .map(|value| match value {
                    // The domain keeps years within -3000..=2100.
                    Some(FieldValue::Integer(year)) => i32::try_from(year).ok(),
                    _ => None,
                })
                .collect();
            statement.bind::<Array<Nullable<Integer>>, _>(values)
        }
        FieldKind::Text | FieldKind::Isbn => {
            let values: Vec<Option<&'a str>> = values
                .map(|value| match value {
                    Some(FieldValue::Text(text)) => Some(text),
                    _ => None,
                })
                .collect();
            statement.bind::<Array<Nullable<Text>>, _>(values)
        }
    }
}

/// How the batch `UPDATE` passes its first array, so that PostgreSQL plans it once per
/// connection.
///
/// A prepared statement is planned again at every execution for as long as PostgreSQL expects a
/// plan made for the values at hand (a custom plan) to be cheaper than one made for any values
/// (the generic plan). For `unnest` of array parameters the custom plan knows each array's length
/// (a batch of 5: cost 42) and the generic one assumes 10 (cost 83), so the `UPDATE` was planned
/// again at every batch, to the same plan (one index probe by primary key per row): 15 % of
/// PostgreSQL's CPU under PATCH load (`docs/performance.md`, twelfth round). Behind a sub-select
/// the first array's length is unknown to both plans, both assume 10 rows, and after its first
/// five executions the statement keeps its generic plan. (The `INSERT` keeps its generic plan as
/// it is.)
const GENERIC: &str = "(SELECT {})";

/// `INSERT` of many books in one statement whatever their number: one array parameter per field,
/// unnested in input order. Identity values are drawn row by row in that order, so sorting the
/// returned rows by id gives them back in input order.
pub(crate) static INSERT: LazyLock<Sql> = LazyLock::new(|| {
    let names: Vec<&str> = BookField::ALL.iter().map(|f| f.name()).collect();
    let arrays: Vec<String> = BookField::ALL
        .iter()
        .enumerate()
        .map(|(i, field)| format!("${}::{}[]", i + 1, sql_type(*field)))
        .collect();
    let names = names.join(", ");
    Sql::new(&format!(
        "INSERT INTO book ({names}) SELECT {names} \
         FROM unnest({}) WITH ORDINALITY AS new_book ({names}, position) \
         ORDER BY position RETURNING {}",
        arrays.join(", "),
        *RETURNED
    ))
});

/// `UPDATE` of many books in one statement: per book its id, the version it must be at (NULL for
/// any), and per field of `fields` whether the patch sets it and to what. A book is written only
/// when its version is allowed and something differs, so that a patch that changes nothing keeps
/// the version (the domain's rule, [`books_domain::BookPatch::changes`]). `version + 1` is
/// evaluated under the row lock, so concurrent patches each add one.
///
/// `fields` are those some patch of the batch sets (in [`BookField::ALL`]'s order): a column that
/// no patch sets is not assigned at all, because assigning a column, even its own value, makes
/// PostgreSQL compute again what is derived from it (the search words of the title and the
/// author: about a sixth of a genre `UPDATE`'s rate, `docs/performance.md`). One statement per
/// set of fields, 32 at most, each made once and kept prepared.
pub(crate) fn update(fields: &[BookField]) -> &'static Sql {
    static UPDATES: LazyLock<Vec<OnceLock<Sql>>> = LazyLock::new(|| {
        (0..1 << BookField::ALL.len())
            .map(|_| OnceLock::new())
            .collect()
    });
    let key = BookField::ALL
        .iter()
        .enumerate()
        .filter(|(_, field)| fields.contains(field))
        .fold(0, |key, (i, _)| key | 1 << i);
    UPDATES[key].get_or_init(|| update_of(fields))
}

fn update_of(fields: &[BookField]) -> Sql {
    // The first array behind a sub-select: see `GENERIC`.
    let mut arrays = vec![
        GENERIC.replace("{}", "$1::bigint[]"),
        "$2::bigint[]".to_owned(),
    ];
    let mut columns = vec!["id".to_owned(), "expected".to_owned()];
    let mut sets = Vec::new();
    let mut differs = Vec::new();
    for field in BookField::ALL.into_iter().filter(|f| fields.contains(f)) {
        let name = field.name();
        let n = arrays.len();
        arrays.push(format!("${}::bool[]", n + 1));
        arrays.push(format!("${}::{}[]", n + 2, sql_type(field)));
        columns.push(format!("set_{name}"));
        columns.push(name.to_owned());
        sets.push(format!(
            "{name} = CASE WHEN p.set_{name} THEN p.{name} ELSE b.{name} END, "
        ));
        differs.push(format!(
            "(p.set_{name} AND b.{name} IS DISTINCT FROM p.{name})"
        ));
    }
    if differs.is_empty() {
        // No field to write: no book differs.
        differs.push("false".to_owned());
    }
    let returned: Vec<String> = RETURNED.split(", ").map(|c| format!("b.{c}")).collect();
    Sql::new(&format!(
        "UPDATE book AS b SET {}version = b.version + 1, updated_at = now() \
         FROM unnest({}) AS p ({}) \
         WHERE b.id = p.id AND (p.expected IS NULL OR b.version = p.expected) AND ({}) \
         RETURNING {}",
        sets.concat(),
        arrays.join(", "),
        columns.join(", "),
        differs.join(" OR "),
        returned.join(", ")
    ))
}
