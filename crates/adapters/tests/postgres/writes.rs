use std::sync::Barrier;

use books_domain::{
    BookId, BookPatch, GetBookError, NewBook, PatchValue, Version, VersionCheck, WriteBookError,
};

use crate::fixtures::{BookBuilder, Store};

fn draft(title: &str, author: &str, genre: Option<&str>) -> NewBook {
    NewBook::parse(Some(title), Some(author), genre).expect("valid")
}

#[test]
fn a_created_book_reads_back_with_version_one_and_server_timestamps() {
    let store = Store::new();
    let created = BookBuilder::new(" Dune ")
        .author("Frank Herbert")
        .genre("Science fiction")
        .insert(&store);
    assert!(created.id().get() > 0);
    assert_eq!(created.version(), Version::FIRST);
    assert_eq!(created.created_at(), created.updated_at());
    let found = store.service.get_book(created.id()).unwrap();
    assert_eq!(found, created);
    assert_eq!(found.title().as_str(), "Dune");
}

#[test]
fn text_is_stored_exactly_including_250_multibyte_characters() {
    let store = Store::new();
    let long = "ü".repeat(250);
    let created = BookBuilder::new(&long).author("Ünïcödé 🦀").insert(&store);
    let found = store.service.get_book(created.id()).unwrap();
    assert_eq!(found.title().as_str(), long);
    assert_eq!(found.author().as_str(), "Ünïcödé 🦀");
}

#[test]
fn a_missing_book_is_not_found() {
    let store = Store::new();
    let id = BookId::new(i64::MAX).unwrap();
    assert!(
        matches!(store.service.get_book(id), Err(GetBookError::NotFound(missing)) if missing == id)
    );
    assert!(matches!(
        store.service.delete_book(id, &VersionCheck::Any),
        Err(WriteBookError::NotFound(_))
    ));
    assert!(matches!(
        store
            .service
            .replace_book(id, &draft("A", "B", None), &VersionCheck::Any),
        Err(WriteBookError::NotFound(_))
    ));
}

#[test]
fn a_replace_sets_every_field_and_bumps_the_version() {
    let store = Store::new();
    let book = BookBuilder::new("Dune").genre("SF").insert(&store);
    let replaced = store
        .service
        .replace_book(
            book.id(),
            &draft("Emma", "Jane Austen", None),
            &VersionCheck::OneOf(vec![Version::FIRST]),
        )
        .unwrap();
    assert_eq!(
        (
            replaced.title().as_str(),
            replaced.author().as_str(),
            replaced.genre(),
            replaced.version().get()
        ),
        ("Emma", "Jane Austen", None, 2)
    );
    assert_eq!(replaced.created_at(), book.created_at());
    assert!(replaced.updated_at() >= book.updated_at());
}

#[test]
fn a_write_at_a_stale_version_is_refused_and_changes_nothing() {
    let store = Store::new();
    let book = BookBuilder::new("Dune").insert(&store);
    let stale = VersionCheck::OneOf(vec![Version::new(5).unwrap()]);
    let patch =
        BookPatch::parse(PatchValue::Set("Other"), PatchValue::Keep, PatchValue::Keep).unwrap();
    assert!(matches!(
        store.service.patch_book(book.id(), &patch, &stale),
        Err(WriteBookError::VersionMismatch { current, .. }) if current == Version::FIRST
    ));
    assert!(matches!(
        store.service.delete_book(book.id(), &stale),
        Err(WriteBookError::VersionMismatch { .. })
    ));
    assert_eq!(store.service.get_book(book.id()).unwrap(), book);
}

#[test]
fn a_patch_changes_only_what_it_names_and_null_genre_clears_it() {
    let store = Store::new();
    let book = BookBuilder::new("Dune")
        .author("Frank Herbert")
        .genre("SF")
        .insert(&store);
    let patch = BookPatch::parse(PatchValue::Keep, PatchValue::Keep, PatchValue::Clear).unwrap();
    let patched = store
        .service
        .patch_book(book.id(), &patch, &VersionCheck::Any)
        .unwrap();
    assert_eq!(
        (
            patched.title().as_str(),
            patched.author().as_str(),
            patched.genre()
        ),
        ("Dune", "Frank Herbert", None)
    );
    assert_eq!(patched.version().get(), 2);
}

#[test]
fn a_patch_that_changes_nothing_leaves_the_book_exactly_as_it_was() {
    let store = Store::new();
    let book = BookBuilder::new("Dune").insert(&store);
    let at_version_1 = VersionCheck::OneOf(vec![book.version()]);
    let same_title = BookPatch::parse(
        PatchValue::Set(" Dune "),
        PatchValue::Keep,
        PatchValue::Keep,
    )
    .unwrap();
    for patch in [BookPatch::default(), same_title] {
        let patched = store
            .service
            .patch_book(book.id(), &patch, &at_version_1)
            .unwrap();
        assert_eq!(patched, book, "version and updated_at are kept");
    }
    let replaced = store
        .service
        .replace_book(
            book.id(),
            &NewBook::parse(Some("Dune"), Some(book.author().as_str()), None).unwrap(),
            &at_version_1,
        )
        .unwrap();
    assert_eq!(replaced, book);
}

#[test]
fn a_no_op_is_still_checked_against_if_match_and_existence() {
    let store = Store::new();
    let book = BookBuilder::new("Dune").insert(&store);
    let stale = VersionCheck::OneOf(vec![Version::new(7).unwrap()]);
    assert!(matches!(
        store
            .service
            .patch_book(book.id(), &BookPatch::default(), &stale),
        Err(WriteBookError::VersionMismatch { .. })
    ));
    let missing = BookId::new(book.id().get() + 100).unwrap();
    assert!(matches!(
        store
            .service
            .patch_book(missing, &BookPatch::default(), &VersionCheck::Any),
        Err(WriteBookError::NotFound(_))
    ));
}

#[test]
fn ids_are_never_reused_after_a_delete() {
    let store = Store::new();
    let first = BookBuilder::new("A").insert(&store);
    store
        .service
        .delete_book(first.id(), &VersionCheck::Any)
        .unwrap();
    assert!(matches!(
        store.service.get_book(first.id()),
        Err(GetBookError::NotFound(_))
    ));
    let second = BookBuilder::new("B").insert(&store);
    assert!(second.id() > first.id());
}

#[test]
fn of_a_dozen_writers_holding_the_same_version_exactly_one_wins() {
    let store = Store::new();
    let id = BookBuilder::new("Dune").insert(&store).id();
    let writers = 12;
    let barrier = Barrier::new(writers);
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|i| {
                let (service, barrier) = (&store.service, &barrier);
                scope.spawn(move || {
                    let title = format!("Writer {i}");
                    let patch = BookPatch::parse(
                        PatchValue::Set(&title),
                        PatchValue::Keep,
                        PatchValue::Keep,
                    )
                    .unwrap();
                    barrier.wait();
                    service.patch_book(id, &patch, &VersionCheck::OneOf(vec![Version::FIRST]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = outcomes.iter().filter(|o| o.is_ok()).count();
    let losers = outcomes
        .iter()
        .filter(|o| matches!(o, Err(WriteBookError::VersionMismatch { .. })))
        .count();
    assert_eq!((winners, losers), (1, writers - 1));
    assert_eq!(store.service.get_book(id).unwrap().version().get(), 2);
}

#[test]
fn concurrent_unconditional_patches_lose_no_version_increment() {
    let store = Store::new();
    let id = BookBuilder::new("Dune").insert(&store).id();
    let (writers, rounds) = (6, 5);
    std::thread::scope(|scope| {
        for i in 0..writers {
            let service = &store.service;
            scope.spawn(move || {
                for round in 0..rounds {
                    let genre = format!("genre {i}.{round}");
                    let patch = BookPatch::parse(
                        PatchValue::Keep,
                        PatchValue::Keep,
                        PatchValue::Set(&genre),
                    )
                    .unwrap();
                    service.patch_book(id, &patch, &VersionCheck::Any).unwrap();
                }
            });
        }
    });
    assert_eq!(
        store.service.get_book(id).unwrap().version().get(),
        1 + writers * rounds
    );
}

#[test]
fn the_repository_answers_a_ping() {
    use books_domain::BookRepository as _;
    let store = Store::new();
    store.repository.ping().unwrap();
}

#[test]
fn waiting_for_the_database_returns_at_once_when_it_answers_and_gives_up_when_it_never_does() {
    use std::time::{Duration, Instant};
    let database = books_adapters::testing::TestDatabase::new();
    books_adapters::wait_for_database(database.url(), Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    let nowhere = "host=/nonexistent-books-api-socket-dir dbname=books";
    assert!(books_adapters::wait_for_database(nowhere, Duration::from_secs(1)).is_err());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
