//! Hand-written SQL conditions that diesel may still cache as prepared statements.
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

/// One piece of a condition.
#[derive(Debug, Clone)]
pub(crate) enum Part {
    /// SQL text. Always one of this crate's constants: never input.
    Sql(&'static str),
    Text(String),
    BigInt(i64),
    Time(DateTime<Utc>),
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
            }
        }
        Ok(())
    }
}
