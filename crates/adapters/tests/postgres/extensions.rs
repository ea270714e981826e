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

/// GIN's pending list would make every search scan each write's entries since the last cleanup
/// (up to 4 MB: hundreds of ms a search after a burst of creates); the words index has none.
#[test]
fn the_words_index_takes_each_write_at_once_so_that_searches_never_scan_a_pending_list() {
    let database = TestDatabase::new();
    let mut connection = PgConnection::establish(database.url()).unwrap();
    let without_list: i64 = diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "SELECT count(*) FROM pg_class \
         WHERE relname = 'book_words_idx' AND 'fastupdate=off' = ANY (reloptions)",
    )
    .get_result(&mut connection)
    .unwrap();
    assert_eq!(without_list, 1);
}
