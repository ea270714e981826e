use std::time::{Duration, Instant};

use books_adapters::{PoolOptions, PostgresBookRepository, connect};
use books_domain::{BookField, BookInput, BookWriter as _, ChangeFeed as _, ChangeLimit, NewBook};
use books_local_postgres::testing::TestDatabase;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

#[test]
fn a_reader_whose_numbering_step_waits_too_long_still_reads_what_is_numbered() {
    let database = TestDatabase::new();
    let pool = connect(
        database.url(),
        &PoolOptions {
            max_size: 2,
            statement_timeout: Duration::from_millis(500),
            ..PoolOptions::default()
        },
    )
    .unwrap();
    let repository = PostgresBookRepository::new(pool);
    let dune = NewBook::parse(
        &BookInput::default()
            .with(BookField::Title, "Dune")
            .with(BookField::Author, "Frank Herbert"),
    )
    .unwrap();
    repository.create(&dune).unwrap();
    let numbered = repository.sequence_changes().unwrap();
    repository.create(&dune).unwrap();
    // Someone holds the counter (as the background sequencer does for a step): the reader's own
    // numbering waits past the statement timeout.
    let mut holder = PgConnection::establish(database.url()).unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM book_change_counter FOR UPDATE")
        .unwrap();
    let started = Instant::now();
    let changes = repository.changes(0, ChangeLimit::default()).unwrap();
    assert_eq!(changes.len(), 1, "what was numbered, and only that");
    assert_eq!(changes[0].seq, numbered);
    assert_eq!(repository.last_change().unwrap(), numbered);
    assert!(started.elapsed() < Duration::from_secs(5));
    holder.batch_execute("ROLLBACK").unwrap();
    // Once the counter is free, the reader numbers the rest itself.
    assert_eq!(
        repository.changes(0, ChangeLimit::default()).unwrap().len(),
        2
    );
}
