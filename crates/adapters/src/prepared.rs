//! Statements written as SQL text that diesel keeps prepared on each connection.
//!
//! `diesel::sql_query` is never cached: diesel cannot know that its text is fixed, so PostgreSQL
//! parses and plans it again on every call. The batch statements (a coalesced create's `INSERT`,
//! a coalesced patch's `UPDATE`) are long and run once per batch, so they are written as a
//! [`Sql`]: text fixed once, with its placeholders `$1`, `$2`, … in order, each used once. diesel
//! then writes each placeholder itself, sees nothing that varies, and keeps the statement in the
//! connection's cache by its text (unless the pool turns caching off, behind a transaction pooler).

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{PgConnection, QueryResult, RunQueryDsl};

/// SQL text whose placeholders are `$1` to `$n`, in that order, each once: held as the pieces
/// between them.
#[derive(Debug)]
pub(crate) struct Sql {
    pieces: Vec<String>,
}

impl Sql {
    /// # Panics
    ///
    /// When the placeholders are not `$1` to `$n` in order, each once: a programming error in a
    /// statement written here, caught by the first test that runs it.
    pub(crate) fn new(text: &str) -> Self {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            let digits = rest[at + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - at - 1);
            let number: usize = rest[at + 1..at + 1 + digits]
                .parse()
                .unwrap_or_else(|_| panic!("a '$' that is no placeholder in {text}"));
            pieces.push(rest[..at].to_owned());
            assert_eq!(number, pieces.len(), "placeholders out of order in {text}");
            rest = &rest[at + 1 + digits..];
        }
        pieces.push(rest.to_owned());
        Self { pieces }
    }

    /// The statement, with no value bound yet.
    pub(crate) fn query(&'static self) -> Prepared<'static> {
        Prepared {
            sql: self,
            binds: Vec::with_capacity(self.pieces.len() - 1),
        }
    }
}

/// A [`Sql`] statement and the values bound so far, one per placeholder in order.
pub(crate) struct Prepared<'a> {
    sql: &'static Sql,
    binds: Vec<Box<dyn QueryFragment<Pg> + Send + 'a>>,
}

impl<'a> Prepared<'a> {
    /// Binds the next placeholder to `value`, as SQL type `T`.
    pub(crate) fn bind<'b, T, V>(self, value: V) -> Prepared<'b>
    where
        'a: 'b,
        Pg: HasSqlType<T>,
        V: ToSql<T, Pg> + Send + 'b,
        T: Send + 'b,
    {
        let mut binds: Vec<Box<dyn QueryFragment<Pg> + Send + 'b>> = self.binds;
        binds.push(Box::new(Bind {
            value,
            sql_type: PhantomData::<T>,
        }));
        Prepared {
            sql: self.sql,
            binds,
        }
    }
}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if self.binds.len() + 1 != self.sql.pieces.len() {
            return Err(diesel::result::Error::QueryBuilderError(
                format!(
                    "{} values bound for {} placeholders",
                    self.binds.len(),
                    self.sql.pieces.len() - 1
                )
                .into(),
            ));
        }
        let (first, rest) = self.sql.pieces.split_first().expect("one piece at least");
        pass.push_sql(first);
        for (bind, piece) in self.binds.iter().zip(rest) {
            bind.walk_ast(pass.reborrow())?;
            pass.push_sql(piece);
        }
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    // Cached by its text, which is the same at every call.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

impl RunQueryDsl<PgConnection> for Prepared<'_> {}

/// One bound value: diesel writes its placeholder.
struct Bind<T, V> {
    value: V,
    sql_type: PhantomData<T>,
}

impl<T, V> QueryFragment<Pg> for Bind<T, V>
where
    Pg: HasSqlType<T>,
    V: ToSql<T, Pg>,
{
    fn walk_ast<'b>(&'b self, mut pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        pass.push_bind_param::<T, V>(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::Sql;

    #[test]
    fn a_statement_is_held_as_the_text_between_its_placeholders() {
        let sql = Sql::new("SELECT $1::int[], $2 WHERE x = $3");
        assert_eq!(sql.pieces, ["SELECT ", "::int[], ", " WHERE x = ", ""]);
    }

    #[test]
    #[should_panic(expected = "placeholders out of order")]
    fn placeholders_out_of_order_are_refused() {
        let _ = Sql::new("SELECT $2, $1");
    }
}
