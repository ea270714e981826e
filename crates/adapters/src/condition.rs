//! Hand-written SQL conditions and orders that diesel may still cache as prepared statements.
//!
//! Keyset paging needs row comparisons (`(title, id) > ($1, $2)`), which PostgreSQL turns into an
//! index range scan and which diesel's DSL cannot spell. `diesel::dsl::sql` can, but it marks the
//! whole query as not cacheable, so every such request would parse and plan its statement again:
//! measurably slower for deep pages than for the first one. A [`Condition`] is made of fixed SQL
//! text and bind parameters only, so diesel caches it by its SQL text like any other query.

use chrono::{DateTime, Utc};
use diesel::expression::{AppearsOnTable, Expression, ValidGrouping, is_aggregate};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};

use books_domain::{BookFilter, Position, Sort, SortKey, SortValue};

/// One piece of a condition.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// SQL text. Always one of this crate's constants: never input.
    Sql(&'static str),
    Text(String),
    BigInt(i64),
    Time(DateTime<Utc>),
    /// Plan the statement for its values each time instead of caching it: the plan that serves
    /// one search term (a trigram index scan) is the wrong one for another, and a cached generic
    /// plan walks the whole table by id (measured: `docs/performance.md`).
    PlanForEachValue,
}

/// A boolean condition on the `book` table.
#[derive(Debug, Clone)]
pub(crate) struct Condition(pub(crate) Vec<Part>);

impl Expression for Condition {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for Condition {}

impl ValidGrouping<()> for Condition {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for Condition {
    // No static id: the statement cache keys such queries by their SQL text, which differs
    // whenever the fixed parts do.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for Condition {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for part in &self.0 {
            match part {
                Part::Sql(sql) => out.push_sql(sql),
                Part::Text(text) => out.push_bind_param::<Text, _>(text)?,
                Part::BigInt(number) => out.push_bind_param::<BigInt, _>(number)?,
                Part::Time(time) => out.push_bind_param::<Timestamptz, _>(time)?,
                Part::PlanForEachValue => out.unsafe_to_cache_prepared(),
            }
        }
        Ok(())
    }
}

/// The `book` column a sort key orders by. A constant for each key: never input.
fn column(key: SortKey) -> &'static str {
    match key {
        SortKey::Id => "id",
        SortKey::Title => "title",
        SortKey::Author => "author",
        SortKey::CreatedAt => "created_at",
    }
}

/// The conditions of a listing's filter: exact matches ignoring case, the ISBN, and a search in
/// title and author (`%` and `_` in the term are literal).
pub(crate) fn filter_conditions(filter: &BookFilter) -> Vec<Condition> {
    let mut conditions = Vec::new();
    if let Some(author) = &filter.author {
        let value = Part::Text(author.as_str().to_owned());
        conditions.push(Condition(vec![
            Part::Sql("lower(author) = lower("),
            value,
            Part::Sql(")"),
        ]));
    }
    if let Some(genre) = &filter.genre {
        let value = Part::Text(genre.as_str().to_owned());
        conditions.push(Condition(vec![
            Part::Sql("lower(genre) = lower("),
            value,
            Part::Sql(")"),
        ]));
    }
    if let Some(isbn) = &filter.isbn {
        // Stored in the one form the domain gives it, so an equality on the unique index.
        conditions.push(Condition(vec![
            Part::Sql("isbn = "),
            Part::Text(isbn.as_str().to_owned()),
        ]));
    }
    if let Some(term) = &filter.search {
        let pattern = like_pattern(term.as_str());
        conditions.push(Condition(vec![
            Part::PlanForEachValue,
            Part::Sql("(title ILIKE "),
            Part::Text(pattern.clone()),
            Part::Sql(" OR author ILIKE "),
            Part::Text(pattern),
            Part::Sql(")"),
        ]));
    }
    conditions
}

fn like_pattern(term: &str) -> String {
    let escaped = term
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// "Strictly after `position`" in the listing's order: a row comparison, `(title, id) > ($1, $2)`,
/// so that PostgreSQL walks the `(key, id)` index from the position.
pub(crate) fn after(position: &Position, descending: bool) -> Condition {
    let beyond = if descending { " < " } else { " > " };
    let id = Part::BigInt(position.id.get());
    let value = match &position.value {
        SortValue::Id => return Condition(vec![Part::Sql("id"), Part::Sql(beyond), id]),
        SortValue::Text(text) => Part::Text(text.clone()),
        SortValue::Time(time) => Part::Time(*time),
    };
    Condition(vec![
        Part::Sql("("),
        Part::Sql(column(position.key)),
        Part::Sql(", id)"),
        Part::Sql(beyond),
        Part::Sql("("),
        value,
        Part::Sql(", "),
        id,
        Part::Sql(")"),
    ])
}

/// `ORDER BY` a listing's sort key, ties broken by id, all in one direction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Order(pub(crate) Sort);

impl Expression for Order {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for Order {}

impl ValidGrouping<()> for Order {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for Order {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for Order {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let direction = if self.0.descending { " DESC" } else { " ASC" };
        out.push_sql(column(self.0.key));
        out.push_sql(direction);
        if self.0.key != SortKey::Id {
            out.push_sql(", id");
            out.push_sql(direction);
        }
        Ok(())
    }
}
