//! The extensions search needs, on a database where the service's role may not create them.

use books_adapters::run_migrations;
use books_local_postgres::testing::TestDatabase;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

#[test]
fn a_role_that_may_not_create_the_extensions_is_told_which_and_the_sql_to_run() {
    let database = TestDatabase::unmigrated();
    if database.url().contains("://") {
        // A server of one's own (TEST_DATABASE_URL) may not let a new role in without a
        // password; the local cluster the tests start trusts local roles.
        eprintln!("skipped: needs the tests' own cluster");
        return;
    }
    let role = format!("limited_{}", database.name());
    let mut admin = PgConnection::establish(database.url()).unwrap();
    // Allowed to connect and to create tables, not to create extensions (not the owner, and
    // without CREATE on the database).
    admin
        .batch_execute(&format!(
            "CREATE ROLE \"{role}\" LOGIN; GRANT CREATE ON SCHEMA public TO \"{role}\";"
        ))
        .unwrap();
    let outcome = run_migrations(&format!("{} user={role}", database.url()), true);
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON SCHEMA public FROM \"{role}\"; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"
        ))
        .unwrap();
    let message = format!("{:#}", outcome.expect_err("the start is refused"));
    assert!(
        message.contains("extension unaccent") && message.contains("CREATE EXTENSION unaccent;"),
        "{message}"
    );
    let tables: i64 = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    )
    .get_result(&mut admin)
    .unwrap();
    assert_eq!(tables, 0, "nothing was migrated");
}

/// The words index keeps a short GIN pending list: without one, every create and patch wrote each
/// of its words into the index at once (most of what search cost writes); with PostgreSQL's
/// default of 4 MB, every search scanned up to 17,000 entries in each of its index scans (hundreds
/// of ms after a burst of creates). Writes go through the list, and it never holds more than
/// 64 kB: the writer that fills it merges it into the index (docs/performance.md).
#[test]
fn the_words_index_takes_writes_into_a_pending_list_of_at_most_64_kb() {
    let database = TestDatabase::new();
    let mut connection = PgConnection::establish(database.url()).unwrap();
    diesel::sql_query("CREATE EXTENSION pgstattuple")
        .execute(&mut connection)
        .unwrap();
    let mut pages = Vec::new();
    for round in 0..30 {
        // 100 books a statement, each with words no other book has.
        diesel::sql_query(format!(
            "INSERT INTO book (title, author) \
             SELECT 'Title' || g || ' of r{round} and w' || (g * 7919 % 1000), 'Author' || g \
             FROM generate_series({round} * 100 + 1, {round} * 100 + 100) AS g"
        ))
        .execute(&mut connection)
        .unwrap();
        pages.push(
            diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "SELECT pending_pages::bigint FROM pgstatginindex('book_words_idx')",
            )
            .get_result::<i64>(&mut connection)
            .unwrap(),
        );
    }
    assert!(
        pages.iter().any(|&p| p > 0),
        "writes go through the pending list: {pages:?}"
    );
    // 64 kB is 8 pages of 8 kB; the write that passes the limit merges the list.
    assert!(
        pages.iter().all(|&p| p <= 8),
        "the list stays within 64 kB: {pages:?}"
    );
}
