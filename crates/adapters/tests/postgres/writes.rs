use std::sync::Barrier;

use books_domain::{BookInput, BookPatch, GetBookError, Version, VersionCheck, WriteBookError};

use crate::fixtures::{BookBuilder, Store};

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
                    let patch = BookPatch::parse(&BookInput {
                        title: title.as_str().into(),
                        ..BookInput::default()
                    })
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
                    let patch = BookPatch::parse(&BookInput {
                        genre: genre.as_str().into(),
                        ..BookInput::default()
                    })
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
    let store = Store::new();
    books_domain::BookReader::ping(&store.repository).unwrap();
}

#[test]
fn waiting_for_the_database_returns_at_once_when_it_answers_and_gives_up_when_it_never_does() {
    use std::time::{Duration, Instant};
    let database = books_local_postgres::testing::TestDatabase::new();
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

#[test]
fn the_batch_insert_and_update_are_prepared_and_planned_once_per_connection() {
    use books_adapters::PostgresBookRepository;
    use books_domain::{BookField, BookService, NewBook, NewBooks, TargetedPatch};
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    let database = books_local_postgres::testing::TestDatabase::new();
    // A catalogue of some size: on a handful of rows any plan costs nothing, and PostgreSQL
    // would keep the generic plan whatever the statement.
    let mut admin = PgConnection::establish(database.url()).unwrap();
    diesel::sql_query(
        "INSERT INTO book (title, author) SELECT 'Title ' || n, 'Author ' || n \
         FROM generate_series(1, 10000) AS n",
    )
    .execute(&mut admin)
    .unwrap();
    diesel::sql_query("ANALYZE book")
        .execute(&mut admin)
        .unwrap();
    let pool = crate::fixtures::one_session(&database);
    let service = BookService::new(PostgresBookRepository::new(pool.clone()));
    // Batches of five, as the coalescers make them under load.
    let rounds = 8;
    for round in 0..rounds {
        let books = (0..5)
            .map(|i| {
                let title = format!("Book {round}.{i}");
                let input = BookInput::default()
                    .with(BookField::Title, title.as_str())
                    .with(BookField::Author, "Anonymous");
                NewBook::parse(&input).unwrap()
            })
            .collect();
        let created = service
            .create_books(&NewBooks::new(books).unwrap())
            .unwrap();
        let genre = format!("Genre {round}");
        let patch =
            BookPatch::parse(&BookInput::default().with(BookField::Genre, genre.as_str())).unwrap();
        let patches: Vec<TargetedPatch> = created
            .iter()
            .map(|book| TargetedPatch {
                id: book.id(),
                patch: patch.clone(),
                check: VersionCheck::Any,
            })
            .collect();
        assert!(service.patch_books(&patches).iter().all(Result::is_ok));
    }
    #[derive(QueryableByName, Debug)]
    struct Use {
        #[diesel(sql_type = Text)]
        statement: String,
        #[diesel(sql_type = BigInt)]
        generic_plans: i64,
        #[diesel(sql_type = BigInt)]
        custom_plans: i64,
    }
    // Once sent as SQL text, parsed and planned at every batch; then prepared, and the `UPDATE`
    // still planned at every batch (custom plans, for the arrays' lengths at hand).
    let uses: Vec<Use> = diesel::sql_query(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'INSERT INTO book %' OR statement LIKE 'UPDATE book AS b %' \
         ORDER BY statement",
    )
    .load(&mut pool.get().unwrap())
    .unwrap();
    assert_eq!(uses.len(), 2, "{uses:?}");
    assert!(uses[0].statement.starts_with("INSERT"), "{uses:?}");
    // The patches set the genre only: the title and the author are not assigned (assigning them
    // would make PostgreSQL compute their search words again).
    assert!(
        uses[1].statement.contains("genre = CASE") && !uses[1].statement.contains("title ="),
        "{uses:?}"
    );
    // PostgreSQL makes custom plans for the first five executions, then keeps the generic plan
    // when it costs no more.
    assert!(
        uses.iter()
            .all(|used| used.custom_plans == 5 && used.generic_plans == rounds - 5),
        "{uses:?}"
    );
}

#[test]
fn the_write_position_asked_after_every_batch_is_prepared_once_per_connection() {
    use books_adapters::PostgresBookRepository;
    use books_domain::BookService;
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    let database = books_local_postgres::testing::TestDatabase::new();
    let pool = crate::fixtures::one_session(&database);
    let service = BookService::new(PostgresBookRepository::new(pool.clone()));
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(service.consistency_token().unwrap().expect("a token"));
    }
    assert!(
        tokens.windows(2).all(|pair| pair[0] <= pair[1]),
        "{tokens:?}"
    );
    #[derive(QueryableByName, Debug)]
    struct Use {
        #[diesel(sql_type = BigInt)]
        executions: i64,
    }
    // Sent as SQL text it was parsed and planned after every batch of writes, and never appeared
    // here.
    let uses: Vec<Use> = diesel::sql_query(
        "SELECT generic_plans + custom_plans AS executions FROM pg_prepared_statements \
         WHERE statement LIKE '%pg_current_wal_insert_lsn()%'",
    )
    .load(&mut pool.get().unwrap())
    .unwrap();
    assert_eq!(uses.len(), 1, "{uses:?}");
    assert_eq!(uses[0].executions, 8, "{uses:?}");
}

#[test]
fn the_patches_a_batch_statement_did_not_write_are_decided_together_in_one_transaction() {
    use std::sync::{Arc, Mutex};

    use books_adapters::PostgresBookRepository;
    use books_domain::{BookField, BookId, BookService, TargetedPatch};
    use diesel::connection::{Connection, InstrumentationEvent};

    let database = books_local_postgres::testing::TestDatabase::new();
    let pool = crate::fixtures::one_session(&database);
    let service = BookService::new(PostgresBookRepository::new(pool.clone()));
    let books: Vec<_> = (0..5)
        .map(|i| {
            let title = format!("Book {i}");
            let input = BookInput::default()
                .with(BookField::Title, title.as_str())
                .with(BookField::Author, "Anonymous")
                .with(BookField::Genre, "Old");
            service
                .create_book(&books_domain::NewBook::parse(&input).unwrap())
                .unwrap()
        })
        .collect();
    let genre =
        |name: &str| BookPatch::parse(&BookInput::default().with(BookField::Genre, name)).unwrap();
    let target = |i: usize, patch: BookPatch, check: VersionCheck| TargetedPatch {
        id: books[i].id(),
        patch,
        check,
    };
    let version = books[0].version();
    let patches = vec![
        // Written by the batch's statement.
        target(0, genre("New"), VersionCheck::Any),
        // Change nothing: a client's retry, a value already set.
        target(1, genre("Old"), VersionCheck::Any),
        target(2, genre("Old"), VersionCheck::OneOf(vec![version])),
        // At a version not allowed.
        target(3, genre("New"), VersionCheck::OneOf(vec![version.next()])),
        // An If-Match of two versions, the statement cannot say: written under the lock.
        target(
            4,
            genre("New"),
            VersionCheck::OneOf(vec![version, version.next()]),
        ),
        // A book that does not exist.
        TargetedPatch {
            id: BookId::new(1_000_000).unwrap(),
            patch: genre("New"),
            check: VersionCheck::Any,
        },
    ];
    let transactions = Arc::new(Mutex::new(0));
    {
        let counted = transactions.clone();
        pool.get()
            .unwrap()
            .set_instrumentation(move |event: InstrumentationEvent<'_>| {
                if matches!(event, InstrumentationEvent::BeginTransaction { .. }) {
                    *counted.lock().unwrap() += 1;
                }
            });
    }
    let outcomes = service.patch_books(&patches);
    // One by one, each of the five would have taken a transaction of its own.
    assert_eq!(*transactions.lock().unwrap(), 1);
    let genre_of = |i: usize| {
        outcomes[i]
            .as_ref()
            .map(|book| (book.genre().map(|g| g.as_str().to_owned()), book.version()))
    };
    assert_eq!(genre_of(0).unwrap(), (Some("New".into()), version.next()));
    assert_eq!(genre_of(1).unwrap(), (Some("Old".into()), version));
    assert_eq!(genre_of(2).unwrap(), (Some("Old".into()), version));
    assert!(
        matches!(&outcomes[3], Err(WriteBookError::VersionMismatch { current, .. }) if *current == version),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(genre_of(4).unwrap(), (Some("New".into()), version.next()));
    assert!(
        matches!(&outcomes[5], Err(WriteBookError::NotFound(_))),
        "{:?}",
        outcomes[5]
    );
    // What was answered is what is stored.
    for (i, book) in books.iter().enumerate() {
        let stored = service.get_book(book.id()).unwrap();
        let expected = if matches!(i, 0 | 4) { "New" } else { "Old" };
        assert_eq!(
            stored.genre().map(|g| g.as_str()),
            Some(expected),
            "book {i}"
        );
    }
}
