//! The behaviour every [`BookRepository`] must have, as a suite of checks that any storage can
//! run: the in-memory repository and the PostgreSQL one run it, and so can an embedder's own.
//!
//! Each check takes a fresh, empty repository and panics (as a test does) when the repository
//! breaks the contract. [`crate::repository_contract!`] turns the suite into one `#[test]` per
//! check:
//!
//! ```
//! mod in_memory {
//!     books_domain::repository_contract!(|| ((), books_domain::InMemoryBookRepository::default()));
//! }
//! ```
//!
//! The closure returns what must live as long as the test (a database, say) and the repository.

use std::ops::ControlFlow;

use chrono::TimeDelta;

use crate::{
    Author, Book, BookField, BookFilter, BookId, BookInput, BookPatch, BookRepository, ChangeKind,
    ChangeLimit, CreateBookError, ExportQuery, Facets, Genre, GetBookError, IdempotencyKey, Isbn,
    IsbnTaken, ListQuery, NewBook, NewBooks, PageSize, Position, Raw, SearchQuery, SearchTerm,
    SearchText, Sort, SortKey, TargetedPatch, Version, VersionCheck, WriteBookError,
};

/// Turns the contract into one test per check, each on the repository `$make` returns.
#[macro_export]
macro_rules! repository_contract {
    ($make:expr) => {
        $crate::repository_contract!(@tests $make;
            a_created_book_is_found_by_id_at_version_one,
            a_batch_is_created_whole_and_in_input_order,
            many_ids_are_read_at_once_and_missing_ones_are_left_out,
            a_patch_that_changes_something_makes_exactly_one_new_version,
            a_patch_to_the_stored_values_keeps_the_version_and_the_time,
            a_write_at_a_version_not_allowed_changes_nothing_and_names_the_current_one,
            a_missing_book_is_not_found_by_reads_and_writes,
            a_delete_removes_the_book_once_and_checks_the_version,
            patches_of_many_books_each_get_their_own_outcome,
            filters_match_author_and_genre_ignoring_case_and_search_title_and_author,
            pages_follow_the_sort_and_continue_strictly_after_their_position,
            an_export_hands_over_every_match_in_order,
            an_idempotent_create_replays_the_first_book_and_refuses_other_fields,
            a_key_of_a_single_create_is_refused_for_a_batch_and_the_other_way_round,
            the_feed_shows_every_write_once_in_order_with_the_book_it_left,
            the_isbn_and_year_are_kept_cleared_and_found_like_any_optional_field,
            an_isbn_belongs_to_one_book_and_a_write_that_would_share_it_changes_nothing,
            patches_that_give_two_books_one_isbn_let_exactly_one_win,
            search_forgives_typos_and_accents_ranks_highlights_and_counts,
            search_sees_every_write_path_and_finds_an_isbn_first,
        );
    };
    (@tests $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let (_keep, repository) = ($make)();
                $crate::contract::$case(&repository);
            }
        )*
    };
}

fn draft(title: &str, author: &str, genre: Option<&str>) -> NewBook {
    let input = BookInput::default()
        .with(BookField::Title, title)
        .with(BookField::Author, author)
        .with(BookField::Genre, genre.map_or(Raw::Absent, Raw::from));
    NewBook::parse(&input).expect("a valid book")
}

fn patch(input: &BookInput) -> BookPatch {
    BookPatch::parse(input).expect("a valid patch")
}

fn genre_patch(genre: &str) -> BookPatch {
    patch(&BookInput {
        genre: genre.into(),
        ..BookInput::default()
    })
}

fn at(version: Version) -> VersionCheck {
    VersionCheck::OneOf(vec![version])
}

fn titles(books: &[Book]) -> Vec<&str> {
    books.iter().map(|b| b.title().as_str()).collect()
}

fn all(limit: u64) -> ListQuery {
    ListQuery {
        limit: PageSize::new(limit).expect("a page size"),
        ..ListQuery::default()
    }
}

/// A created book has an id, version 1, equal timestamps, and reads back as created.
pub fn a_created_book_is_found_by_id_at_version_one(repository: &impl BookRepository) {
    let dune = draft("Dune", "Frank Herbert", Some("SF"));
    let created = repository.create(&dune).expect("created");
    assert_eq!(created.fields(), &dune);
    assert_eq!(created.version(), Version::FIRST);
    assert_eq!(created.created_at(), created.updated_at());
    assert_eq!(repository.find_by_id(created.id()).expect("found"), created);
}

/// A batch creates every book, in the order given.
pub fn a_batch_is_created_whole_and_in_input_order(repository: &impl BookRepository) {
    let books = NewBooks::new(vec![
        draft("C", "X", None),
        draft("A", "Y", Some("SF")),
        draft("B", "Z", None),
    ])
    .expect("a batch");
    let created = repository.create_many(&books).expect("created");
    assert_eq!(titles(&created), ["C", "A", "B"]);
    assert!(created.windows(2).all(|w| w[0].id() < w[1].id()));
    for (book, given) in created.iter().zip(books.as_slice()) {
        assert_eq!(book.fields(), given);
    }
}

/// `find_by_ids` answers every id that has a book, and leaves out those that have none.
pub fn many_ids_are_read_at_once_and_missing_ones_are_left_out(repository: &impl BookRepository) {
    let a = repository.create(&draft("A", "X", None)).expect("created");
    let b = repository.create(&draft("B", "X", None)).expect("created");
    let missing = BookId::new(i64::MAX).expect("an id");
    let mut found = repository
        .find_by_ids(&[b.id(), missing, a.id()])
        .expect("read");
    found.sort_by_key(Book::id);
    assert_eq!(found, [a, b]);
}

/// A patch that changes a field makes one new version and moves `updated_at`, and keeps every
/// field it does not name; `null` clears an optional field.
pub fn a_patch_that_changes_something_makes_exactly_one_new_version(
    repository: &impl BookRepository,
) {
    let book = repository
        .create(&draft("Dune", "Frank Herbert", Some("SF")))
        .expect("created");
    let patched = repository
        .patch(book.id(), &genre_patch("Classic"), &VersionCheck::Any)
        .expect("patched");
    assert_eq!(patched.version(), Version::FIRST.next());
    assert_eq!(patched.genre().map(Genre::as_str), Some("Classic"));
    assert_eq!(patched.title(), book.title());
    assert!(patched.updated_at() >= book.updated_at());
    assert_eq!(patched.created_at(), book.created_at());
    let cleared = repository
        .patch(
            book.id(),
            &patch(&BookInput {
                genre: Raw::Null,
                ..BookInput::default()
            }),
            &at(patched.version()),
        )
        .expect("patched");
    assert_eq!(cleared.genre(), None);
    assert_eq!(cleared.version().get(), 3);
    // A replacement is the patch of every field: what it leaves out is cleared.
    let replaced = repository
        .patch(
            book.id(),
            &BookPatch::from(draft("Emma", "Jane Austen", None)),
            &VersionCheck::Any,
        )
        .expect("replaced");
    assert_eq!(replaced.fields(), &draft("Emma", "Jane Austen", None));
    assert_eq!(repository.find_by_id(book.id()).expect("found"), replaced);
}

/// A patch to what is stored (or an empty one) changes nothing: not the version, not
/// `updated_at`, and no change in the feed.
pub fn a_patch_to_the_stored_values_keeps_the_version_and_the_time(
    repository: &impl BookRepository,
) {
    let book = repository
        .create(&draft("Dune", "Frank Herbert", None))
        .expect("created");
    let before = repository.last_change().expect("the feed");
    for same in [
        BookPatch::default(),
        patch(&BookInput {
            title: " Dune ".into(),
            genre: Raw::Null,
            ..BookInput::default()
        }),
        BookPatch::from(draft("Dune", "Frank Herbert", None)),
    ] {
        let kept = repository
            .patch(book.id(), &same, &at(Version::FIRST))
            .expect("a no-op");
        assert_eq!(kept, book);
    }
    assert_eq!(repository.sequence_changes().expect("the feed"), before);
}

/// A write that names versions the book is not at is refused with the current version, and
/// changes nothing.
pub fn a_write_at_a_version_not_allowed_changes_nothing_and_names_the_current_one(
    repository: &impl BookRepository,
) {
    let book = repository
        .create(&draft("Dune", "X", None))
        .expect("created");
    let stale = at(Version::FIRST.next());
    let expect_mismatch = |outcome: Result<Book, WriteBookError>| match outcome {
        Err(WriteBookError::VersionMismatch { id, current }) => {
            assert_eq!((id, current), (book.id(), Version::FIRST));
        }
        other => panic!("expected a version mismatch, got {other:?}"),
    };
    expect_mismatch(repository.patch(book.id(), &genre_patch("SF"), &stale));
    // Checked before the no-op rule: a stale If-Match fails even when nothing would change.
    expect_mismatch(repository.patch(book.id(), &BookPatch::default(), &stale));
    expect_mismatch(repository.patch(book.id(), &genre_patch("SF"), &VersionCheck::OneOf(vec![])));
    assert!(matches!(
        repository.delete(book.id(), &stale),
        Err(WriteBookError::VersionMismatch { .. })
    ));
    // Any of several versions will do.
    let either = VersionCheck::OneOf(vec![Version::FIRST.next(), Version::FIRST]);
    let patched = repository
        .patch(book.id(), &genre_patch("SF"), &either)
        .expect("patched");
    assert_eq!(patched.version(), Version::FIRST.next());
}

/// Reads and writes of an id with no book say it is not found.
pub fn a_missing_book_is_not_found_by_reads_and_writes(repository: &impl BookRepository) {
    let missing = BookId::new(i64::MAX).expect("an id");
    assert!(matches!(
        repository.find_by_id(missing),
        Err(GetBookError::NotFound(id)) if id == missing
    ));
    assert!(matches!(
        repository.patch(missing, &genre_patch("SF"), &VersionCheck::Any),
        Err(WriteBookError::NotFound(_))
    ));
    assert!(matches!(
        repository.patch(missing, &BookPatch::default(), &VersionCheck::Any),
        Err(WriteBookError::NotFound(_))
    ));
    assert!(matches!(
        repository.delete(missing, &VersionCheck::Any),
        Err(WriteBookError::NotFound(_))
    ));
}

/// A delete at an allowed version removes the book; a second one finds nothing.
pub fn a_delete_removes_the_book_once_and_checks_the_version(repository: &impl BookRepository) {
    let book = repository
        .create(&draft("Dune", "X", None))
        .expect("created");
    repository
        .delete(book.id(), &at(Version::FIRST))
        .expect("deleted");
    assert!(matches!(
        repository.find_by_id(book.id()),
        Err(GetBookError::NotFound(_))
    ));
    assert!(matches!(
        repository.delete(book.id(), &VersionCheck::Any),
        Err(WriteBookError::NotFound(_))
    ));
}

/// `patch_many` gives each patch the outcome `patch` would have given it alone.
pub fn patches_of_many_books_each_get_their_own_outcome(repository: &impl BookRepository) {
    let a = repository.create(&draft("A", "X", None)).expect("created");
    let b = repository.create(&draft("B", "X", None)).expect("created");
    let c = repository.create(&draft("C", "X", None)).expect("created");
    let missing = BookId::new(i64::MAX).expect("an id");
    let of = |id, patch, check| TargetedPatch { id, patch, check };
    let outcomes = repository.patch_many(&[
        of(c.id(), genre_patch("SF"), VersionCheck::Any),
        of(missing, genre_patch("SF"), VersionCheck::Any),
        of(a.id(), genre_patch("SF"), at(Version::FIRST.next())),
        of(b.id(), BookPatch::default(), VersionCheck::Any),
    ]);
    assert_eq!(outcomes.len(), 4);
    let written = outcomes[0].as_ref().expect("written");
    assert_eq!((written.id(), written.version().get()), (c.id(), 2));
    assert!(matches!(outcomes[1], Err(WriteBookError::NotFound(_))));
    assert!(matches!(
        outcomes[2],
        Err(WriteBookError::VersionMismatch { current, .. }) if current == Version::FIRST
    ));
    assert_eq!(outcomes[3].as_ref().expect("unchanged"), &b);
    assert_eq!(repository.find_by_id(a.id()).expect("found"), a);
}

/// Author and genre match whole values ignoring case; the search finds text inside titles and
/// authors, ignoring case, with `%` and `_` taken literally.
pub fn filters_match_author_and_genre_ignoring_case_and_search_title_and_author(
    repository: &impl BookRepository,
) {
    for (title, author, genre) in [
        ("Dune", "Frank Herbert", Some("SF")),
        ("Dune Messiah", "Frank Herbert", None),
        ("Emma", "Jane Austen", Some("Classic")),
        ("100% Sun", "Anon_ymous", Some("sf")),
    ] {
        repository
            .create(&draft(title, author, genre))
            .expect("created");
    }
    let listed = |filter: BookFilter| {
        let query = ListQuery { filter, ..all(100) };
        let books = repository.list(&query, 100).expect("listed");
        titles(&books)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let by_author = BookFilter {
        author: Some(Author::new("frank HERBERT").expect("an author")),
        ..BookFilter::default()
    };
    assert_eq!(listed(by_author), ["Dune", "Dune Messiah"]);
    let by_genre = BookFilter {
        genre: Some(Genre::new("Sf").expect("a genre")),
        ..BookFilter::default()
    };
    assert_eq!(listed(by_genre), ["Dune", "100% Sun"]);
    let search = |term: &str| BookFilter {
        search: Some(SearchTerm::new(term).expect("a term")),
        ..BookFilter::default()
    };
    assert_eq!(listed(search("AUST")), ["Emma"]);
    assert_eq!(listed(search("messiah")), ["Dune Messiah"]);
    assert_eq!(listed(search("0%")), ["100% Sun"]);
    assert_eq!(listed(search("n_y")), ["100% Sun"]);
    assert!(listed(search("n%y")).is_empty());
}

/// A listing is in its sort's order (ties by id), and the next page starts strictly after the
/// last book of the previous one.
pub fn pages_follow_the_sort_and_continue_strictly_after_their_position(
    repository: &impl BookRepository,
) {
    for title in ["B", "C", "A", "B", "C"] {
        repository
            .create(&draft(title, "X", None))
            .expect("created");
    }
    for descending in [false, true] {
        let sort = Sort {
            key: SortKey::Title,
            descending,
        };
        let mut seen = Vec::new();
        let mut after: Option<Position> = None;
        loop {
            let query = ListQuery {
                sort,
                after: after.clone(),
                ..all(2)
            };
            let page = repository.list(&query, 2).expect("listed");
            if page.is_empty() {
                break;
            }
            after = page.last().map(|last| Position::of(last, SortKey::Title));
            seen.extend(page);
        }
        let mut expected = seen.clone();
        expected.sort_by(|a, b| {
            let order = a.title().cmp(b.title()).then(a.id().cmp(&b.id()));
            if descending { order.reverse() } else { order }
        });
        assert_eq!(seen.len(), 5);
        assert_eq!(seen, expected);
    }
}

/// An export hands over every matching book once, in order, however many slices it takes.
pub fn an_export_hands_over_every_match_in_order(repository: &impl BookRepository) {
    let books: Vec<NewBook> = (0..crate::EXPORT_SLICE + 5)
        .map(|n| {
            draft(
                &format!("T{n:05}"),
                if n % 2 == 0 { "Even" } else { "Odd" },
                None,
            )
        })
        .collect();
    for chunk in books.chunks(crate::MAX_BATCH) {
        let batch = NewBooks::new(chunk.to_vec()).expect("a batch");
        repository.create_many(&batch).expect("created");
    }
    let query = ExportQuery {
        filter: BookFilter {
            author: Some(Author::new("even").expect("an author")),
            ..BookFilter::default()
        },
        sort: Sort {
            key: SortKey::Title,
            descending: true,
        },
    };
    let mut exported: Vec<Book> = Vec::new();
    repository
        .export(&query, &mut |slice| {
            assert!(slice.len() <= crate::EXPORT_SLICE);
            exported.extend(slice);
            ControlFlow::Continue(())
        })
        .expect("exported");
    assert_eq!(exported.len(), crate::EXPORT_SLICE.div_ceil(2) + 3);
    assert!(exported.iter().all(|b| b.author().as_str() == "Even"));
    assert!(exported.windows(2).all(|w| w[0].title() > w[1].title()));
}

/// A retry with the same key and fields gets the first book back, as it was created, even after
/// the book changed; other fields with the key are refused and create nothing.
pub fn an_idempotent_create_replays_the_first_book_and_refuses_other_fields(
    repository: &impl BookRepository,
) {
    let key = IdempotencyKey::new("contract-1").expect("a key");
    let dune = draft("Dune", "Frank Herbert", Some("SF"));
    let first = repository.create_once(&key, &dune).expect("created");
    assert!(!first.replayed);
    repository
        .patch(first.book.id(), &genre_patch("Classic"), &VersionCheck::Any)
        .expect("patched");
    let retry = repository.create_once(&key, &dune).expect("replayed");
    assert!(retry.replayed);
    assert_eq!(retry.book, first.book);
    for other in [
        draft("Dune", "Frank Herbert", None),
        draft("Dune", "Frank Herbert", Some("sf")),
        draft("Emma", "Jane Austen", Some("SF")),
    ] {
        assert!(matches!(
            repository.create_once(&key, &other),
            Err(CreateBookError::KeyReused)
        ));
    }
    assert_eq!(repository.list(&all(100), 100).expect("listed").len(), 1);
    // Keys are forgotten by age only.
    assert_eq!(
        repository
            .forget_keys_older_than(TimeDelta::hours(1))
            .expect("purged"),
        0
    );
}

/// Single and batch creates share the keys: a key used for one is refused for the other, even
/// with the same book.
pub fn a_key_of_a_single_create_is_refused_for_a_batch_and_the_other_way_round(
    repository: &impl BookRepository,
) {
    let dune = draft("Dune", "Frank Herbert", None);
    let one = NewBooks::new(vec![dune.clone()]).expect("a batch");
    let single = IdempotencyKey::new("contract-single").expect("a key");
    repository.create_once(&single, &dune).expect("created");
    assert!(matches!(
        repository.create_many_once(&single, &one),
        Err(CreateBookError::KeyReused)
    ));
    let batch = IdempotencyKey::new("contract-batch").expect("a key");
    let first = repository.create_many_once(&batch, &one).expect("created");
    assert!(matches!(
        repository.create_once(&batch, &dune),
        Err(CreateBookError::KeyReused)
    ));
    let retry = repository.create_many_once(&batch, &one).expect("replayed");
    assert!(retry.replayed);
    assert_eq!(retry.books, first.books);
}

/// Every write that changed something is in the feed once, in order, with the book as it left
/// it (none for a delete); reading from the last seq gives nothing more.
pub fn the_feed_shows_every_write_once_in_order_with_the_book_it_left(
    repository: &impl BookRepository,
) {
    let book = repository
        .create(&draft("Dune", "X", None))
        .expect("created");
    let patched = repository
        .patch(book.id(), &genre_patch("SF"), &VersionCheck::Any)
        .expect("patched");
    repository
        .patch(book.id(), &genre_patch("SF"), &VersionCheck::Any)
        .expect("a no-op");
    repository
        .delete(book.id(), &VersionCheck::Any)
        .expect("deleted");
    let newest = repository.sequence_changes().expect("sequenced");
    let changes = repository
        .changes(0, ChangeLimit::default())
        .expect("the feed");
    let kinds: Vec<ChangeKind> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deleted
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(changes[0].book.as_ref(), Some(&book));
    assert_eq!(changes[1].book.as_ref(), Some(&patched));
    assert_eq!(changes[2].book, None);
    assert_eq!(changes[2].version.get(), 3);
    assert_eq!(changes.last().map(|c| c.seq), Some(newest));
    assert_eq!(repository.last_change().expect("the feed"), newest);
    assert!(
        repository
            .changes(newest, ChangeLimit::default())
            .expect("the feed")
            .is_empty()
    );
}

fn edition(title: &str, isbn: &str, year: Option<i64>) -> NewBook {
    let input = BookInput::default()
        .with(BookField::Title, title)
        .with(BookField::Author, "Anon")
        .with(BookField::Isbn, isbn)
        .with(
            BookField::PublishedYear,
            year.map_or(Raw::Absent, Raw::Integer),
        );
    NewBook::parse(&input).expect("a valid book")
}

fn isbn(text: &str) -> Isbn {
    Isbn::parse(text).expect("an ISBN")
}

/// The ISBN and the year are stored as given (the ISBN as its 13 digits), cleared by a null in a
/// patch, and the listing finds a book by its ISBN.
pub fn the_isbn_and_year_are_kept_cleared_and_found_like_any_optional_field(
    repository: &impl BookRepository,
) {
    let dune = repository
        .create(&edition("Dune", "0-441-01359-7", Some(1965)))
        .expect("created");
    repository
        .create(&edition("Emma", "978-0-14-143951-8", None))
        .expect("created");
    assert_eq!(dune.fields().isbn, Some(isbn("9780441013593")));
    assert_eq!(dune.fields().published_year.map(|y| y.get()), Some(1965));
    let by_isbn = ListQuery {
        filter: BookFilter {
            isbn: Some(isbn("978-0-441-01359-3")),
            ..BookFilter::default()
        },
        ..all(100)
    };
    assert_eq!(
        titles(&repository.list(&by_isbn, 100).expect("listed")),
        ["Dune"]
    );
    let cleared = repository
        .patch(
            dune.id(),
            &patch(&BookInput::default().with(BookField::PublishedYear, Raw::Null)),
            &VersionCheck::Any,
        )
        .expect("patched");
    assert_eq!(cleared.fields().published_year, None);
    assert_eq!(cleared.fields().isbn, dune.fields().isbn);
    assert_eq!(repository.find_by_id(dune.id()).expect("found"), cleared);
}

/// A create, a batch or a patch that would give a book another book's ISBN is refused, names
/// that book, and writes nothing; an ISBN is free again once its book is gone.
pub fn an_isbn_belongs_to_one_book_and_a_write_that_would_share_it_changes_nothing(
    repository: &impl BookRepository,
) {
    let dune = repository
        .create(&edition("Dune", "9780441013593", None))
        .expect("created");
    let taken = IsbnTaken {
        isbn: isbn("9780441013593"),
        existing: dune.id(),
    };
    assert!(matches!(
        repository.create(&edition("Copy", "0441013597", None)),
        Err(CreateBookError::IsbnTaken(t)) if t == taken
    ));
    let batch = NewBooks::new(vec![
        edition("Emma", "9780141439518", None),
        edition("Copy", "9780441013593", None),
    ])
    .expect("a batch");
    assert!(matches!(
        repository.create_many(&batch),
        Err(CreateBookError::IsbnTaken(t)) if t == taken
    ));
    let key = IdempotencyKey::new("isbn-taken").expect("a key");
    assert!(matches!(
        repository.create_many_once(&key, &batch),
        Err(CreateBookError::IsbnTaken(t)) if t == taken
    ));
    let everything = repository.list(&all(100), 100).expect("listed");
    assert_eq!(
        titles(&everything),
        ["Dune"],
        "nothing of the batch was created"
    );
    let emma = repository
        .create(&edition("Emma", "9780141439518", None))
        .expect("created");
    let to_dune = patch(&BookInput::default().with(BookField::Isbn, "978-0-441-01359-3"));
    assert!(matches!(
        repository.patch(emma.id(), &to_dune, &VersionCheck::Any),
        Err(WriteBookError::IsbnTaken(t)) if t == taken
    ));
    assert_eq!(repository.find_by_id(emma.id()).expect("found"), emma);
    assert_eq!(
        repository
            .patch(dune.id(), &to_dune, &VersionCheck::Any)
            .expect("its own ISBN")
            .version(),
        Version::FIRST
    );
    repository
        .delete(dune.id(), &VersionCheck::Any)
        .expect("deleted");
    let moved = repository
        .patch(emma.id(), &to_dune, &VersionCheck::Any)
        .expect("the ISBN is free again");
    assert_eq!(moved.fields().isbn, Some(isbn("9780441013593")));
}

/// Two patches of one call that would give two books one ISBN: the first wins, the other is
/// refused and names it; the rest of the call is written.
pub fn patches_that_give_two_books_one_isbn_let_exactly_one_win(repository: &impl BookRepository) {
    let a = repository.create(&draft("A", "X", None)).expect("created");
    let b = repository.create(&draft("B", "X", None)).expect("created");
    let c = repository.create(&draft("C", "X", None)).expect("created");
    let to = |text: &str| patch(&BookInput::default().with(BookField::Isbn, text));
    let of = |id, patch| TargetedPatch {
        id,
        patch,
        check: VersionCheck::Any,
    };
    let outcomes = repository.patch_many(&[
        of(a.id(), to("9780441013593")),
        of(b.id(), to("9780441013593")),
        of(c.id(), genre_patch("SF")),
    ]);
    let ok: Vec<usize> = (0..2).filter(|i| outcomes[*i].is_ok()).collect();
    assert_eq!(ok.len(), 1, "exactly one of the two: {outcomes:?}");
    let (winner, loser) = if ok[0] == 0 { (&a, 1) } else { (&b, 0) };
    assert!(matches!(
        &outcomes[loser],
        Err(WriteBookError::IsbnTaken(t)) if t.existing == winner.id()
    ));
    assert_eq!(outcomes[2].as_ref().expect("written").version().get(), 2);
}

fn search(repository: &impl BookRepository, text: &str) -> crate::SearchResults {
    let query = SearchQuery::new(SearchText::new(text).expect("a search"));
    repository.search(&query, None).expect("searched")
}

fn found(results: &crate::SearchResults) -> Vec<&str> {
    results
        .hits
        .iter()
        .map(|hit| hit.book.title().as_str())
        .collect()
}

/// Search forgives a typo by the word's length, ignores case and diacritics, matches the last
/// word as a prefix, ranks by the domain's rules, highlights, and counts every result.
pub fn search_forgives_typos_and_accents_ranks_highlights_and_counts(
    repository: &impl BookRepository,
) {
    for (title, author, genre) in [
        ("Pride and Prejudice", "Jane Austen", Some("Classic")),
        (
            "Cien años de soledad",
            "Gabriel García Márquez",
            Some("Novel"),
        ),
        ("Dune", "Frank Herbert", Some("Science fiction")),
        ("Dune Messiah", "Frank Herbert", Some("Science fiction")),
        ("Emma", "Jane Austen", Some("Classic")),
    ] {
        repository
            .create(&draft(title, author, genre))
            .expect("created");
    }
    let pride = search(repository, "pride and prejudise");
    assert_eq!(found(&pride)[0], "Pride and Prejudice");
    assert_eq!(
        pride.hits[0].highlight.title,
        "<em>Pride</em> <em>and</em> <em>Prejudice</em>"
    );
    assert_eq!(
        found(&search(repository, "garcia marquez")),
        ["Cien años de soledad"]
    );
    assert_eq!(
        found(&search(repository, "GARCÍA")),
        ["Cien años de soledad"]
    );
    let dune = search(repository, "dun");
    assert_eq!(found(&dune), ["Dune", "Dune Messiah"]);
    assert_eq!(dune.total, 2);
    let exact = search(repository, "dune");
    assert_eq!(
        found(&exact),
        ["Dune", "Dune Messiah"],
        "an equal title first"
    );
    assert!(exact.hits[0].score > exact.hits[1].score);
    // Four letters forgive no typo.
    assert!(search(repository, "dume").hits.is_empty());
    let mut austen = SearchQuery::new(SearchText::new("austen").expect("a search"));
    austen.facets = Facets {
        genre: true,
        author: false,
    };
    let counted = repository.search(&austen, None).expect("searched");
    assert_eq!(counted.total, 2);
    let genres = counted.facets.and_then(|f| f.genre).expect("genre facet");
    assert_eq!((genres[0].value.as_str(), genres[0].count), ("Classic", 2));
    austen.limit = PageSize::new(1).expect("a size");
    austen.offset = 1;
    let second = repository.search(&austen, None).expect("searched");
    assert_eq!((second.hits.len(), second.total), (1, 2));
}

/// A book is searchable as soon as a create, a batch or a patch is written, and no longer after
/// a patch or a delete took its words away; a query that is an ISBN finds that book first.
pub fn search_sees_every_write_path_and_finds_an_isbn_first(repository: &impl BookRepository) {
    let batch = NewBooks::new(vec![
        draft("Zanzibar Blues", "Anon", None),
        edition("The Left Hand of Darkness", "9780441478125", Some(1969)),
    ])
    .expect("a batch");
    let created = repository.create_many(&batch).expect("created");
    assert_eq!(found(&search(repository, "zanzibar")), ["Zanzibar Blues"]);
    repository
        .patch(
            created[0].id(),
            &patch(&BookInput::default().with(BookField::Title, "Quixotic Tales")),
            &VersionCheck::Any,
        )
        .expect("patched");
    assert!(search(repository, "zanzibar").hits.is_empty());
    assert_eq!(found(&search(repository, "quixotic")), ["Quixotic Tales"]);
    // The patch's new words are expanded to at once: with a typo, and as a prefix.
    assert_eq!(found(&search(repository, "quixtoic")), ["Quixotic Tales"]);
    assert_eq!(
        found(&search(repository, "tales quixo")),
        ["Quixotic Tales"]
    );
    let by_isbn = search(repository, "0-441-47812-3");
    assert_eq!(found(&by_isbn)[0], "The Left Hand of Darkness");
    assert!((by_isbn.hits[0].score - 1.0).abs() < f64::EPSILON);
    repository
        .delete(created[0].id(), &VersionCheck::Any)
        .expect("deleted");
    assert!(search(repository, "quixotic").hits.is_empty());
}
