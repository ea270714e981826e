use std::sync::Barrier;

use books_adapters::{PostgresBookRepository, run_migrations};
use books_domain::{
    BookField, BookInput, BookService, CreateBookError, IdempotencyKey, IdempotencyRecords as _,
    ListQuery, NewBook, NewBooks, PageSize, RequestDigest,
};
use books_local_postgres::testing::{TestDatabase, migrate_until};
use chrono::TimeDelta;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

use crate::fixtures::Store;

fn dune() -> NewBook {
    let input = BookInput::default()
        .with(BookField::Title, "Dune")
        .with(BookField::Author, "Frank Herbert")
        .with(BookField::Genre, "SF");
    NewBook::parse(&input).unwrap()
}

fn count(store: &Store) -> usize {
    let query = ListQuery {
        limit: PageSize::new(100).unwrap(),
        ..ListQuery::default()
    };
    store.service.list_books(&query).unwrap().items.len()
}

#[test]
fn concurrent_requests_with_one_key_create_exactly_one_book() {
    let store = Store::new();
    let key = IdempotencyKey::new("race").unwrap();
    let barrier = Barrier::new(8);
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (service, barrier, key) = (&store.service, &barrier, &key);
                scope.spawn(move || {
                    barrier.wait();
                    service.create_book_once(key, &dune())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(created.iter().filter(|c| !c.replayed).count(), 1);
    assert!(created.iter().all(|c| c.book == created[0].book));
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(_) | Err(CreateBookError::KeyInFlight)))
    );
    assert_eq!(count(&store), 1);
}

#[test]
fn keys_older_than_the_retention_are_forgotten_and_younger_ones_kept() {
    let store = Store::new();
    let key = IdempotencyKey::new("old").unwrap();
    store.service.create_book_once(&key, &dune()).unwrap();
    assert_eq!(store.service.forget_expired_keys().unwrap(), 0);
    assert!(
        store
            .service
            .create_book_once(&key, &dune())
            .unwrap()
            .replayed
    );
    assert_eq!(
        store
            .repository
            .forget_keys_older_than(TimeDelta::seconds(-1))
            .unwrap(),
        1
    );
    assert!(
        !store
            .service
            .create_book_once(&key, &dune())
            .unwrap()
            .replayed
    );
    assert_eq!(count(&store), 2);
}

#[test]
fn keys_stored_before_the_digest_migration_still_replay_and_still_refuse_other_books() {
    let database = TestDatabase::unmigrated();
    migrate_until(database.url(), "remember_a_digest_of_each_create");
    // Keys as the previous release stored them: a single create's fields, a batch's digest.
    let emma = NewBook::parse(&BookInput {
        title: "Emma".into(),
        author: "Jane Austen".into(),
        ..BookInput::default()
    })
    .unwrap();
    let batch = NewBooks::new(vec![dune(), emma.clone()]).unwrap();
    let mut conn = PgConnection::establish(database.url()).unwrap();
    // The previous release's digest covered title, author and genre.
    let digest: String = RequestDigest::of_books(batch.as_slice(), 3)
        .bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    conn.batch_execute(&format!(
        "INSERT INTO book (title, author, genre) VALUES ('Dune', 'Frank Herbert', 'SF'), \
             ('Dune', 'Frank Herbert', 'SF'), ('Emma', 'Jane Austen', NULL);
         INSERT INTO idempotency_key (owner, key, title, author, genre, book_id) \
             VALUES ('\\x', 'single', 'Dune', 'Frank Herbert', 'SF', 1);
         INSERT INTO idempotency_key (owner, key, batch_digest, book_ids) \
             VALUES ('\\x', 'batch', '\\x{digest}', ARRAY[2, 3]);"
    ))
    .unwrap();
    run_migrations(database.url(), true).unwrap();
    let repository = PostgresBookRepository::new(database.pool());
    let single = IdempotencyKey::new("single").unwrap();
    let replayed = repository.create_once(&single, &dune()).unwrap();
    assert!(replayed.replayed);
    assert_eq!(replayed.book.id().get(), 1);
    assert!(matches!(
        repository.create_once(&single, &emma),
        Err(CreateBookError::KeyReused)
    ));
    let many = IdempotencyKey::new("batch").unwrap();
    let replayed = repository.create_many_once(&many, &batch).unwrap();
    assert!(replayed.replayed);
    let ids: Vec<i64> = replayed.books.iter().map(|b| b.id().get()).collect();
    assert_eq!(ids, [2, 3]);
    // A single create and a batch of one never share a digest.
    let one = NewBooks::new(vec![dune()]).unwrap();
    assert!(matches!(
        repository.create_many_once(&single, &one),
        Err(CreateBookError::KeyReused)
    ));
    let service = BookService::new(repository);
    let all = ListQuery {
        limit: PageSize::new(100).unwrap(),
        ..ListQuery::default()
    };
    assert_eq!(service.list_books(&all).unwrap().items.len(), 3);
}
