use std::sync::Barrier;

use books_domain::{
    BookRepository as _, CreateBookError, IdempotencyKey, ListQuery, NewBook, PageSize,
};
use chrono::TimeDelta;

use crate::fixtures::Store;

fn dune() -> NewBook {
    NewBook::parse(Some("Dune"), Some("Frank Herbert"), Some("SF")).unwrap()
}

fn count(store: &Store) -> usize {
    let query = ListQuery {
        limit: PageSize::new(100).unwrap(),
        ..ListQuery::default()
    };
    store.service.list_books(&query).unwrap().items.len()
}

#[test]
fn a_retry_with_the_same_key_and_fields_replays_the_first_book_exactly() {
    let store = Store::new();
    let key = IdempotencyKey::new("retry-1").unwrap();
    let first = store.service.create_book_once(&key, &dune()).unwrap();
    let retry = store.service.create_book_once(&key, &dune()).unwrap();
    assert!(!first.replayed && retry.replayed);
    assert_eq!(retry.book, first.book);
    assert_eq!(count(&store), 1);
}

#[test]
fn the_replay_is_the_first_response_even_after_the_book_changed() {
    let store = Store::new();
    let key = IdempotencyKey::new("retry-2").unwrap();
    let first = store.service.create_book_once(&key, &dune()).unwrap();
    store
        .service
        .replace_book(
            first.book.id(),
            &NewBook::parse(Some("X"), Some("Y"), None).unwrap(),
            &Default::default(),
        )
        .unwrap();
    assert_eq!(
        store.service.create_book_once(&key, &dune()).unwrap().book,
        first.book
    );
}

#[test]
fn the_same_key_with_other_fields_is_refused_and_creates_nothing() {
    let store = Store::new();
    let key = IdempotencyKey::new("retry-3").unwrap();
    store.service.create_book_once(&key, &dune()).unwrap();
    let emma = NewBook::parse(Some("Emma"), Some("Jane Austen"), None).unwrap();
    assert!(matches!(
        store.service.create_book_once(&key, &emma),
        Err(CreateBookError::KeyReused)
    ));
    assert_eq!(count(&store), 1);
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
