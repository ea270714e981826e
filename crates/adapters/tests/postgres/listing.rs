use books_domain::{BookFilter, ListQuery, PageSize, SearchTerm, Sort, SortKey};

use crate::fixtures::{BookBuilder, Store};

/// Follows the positions from the first page to the last and returns every (title, id) seen.
fn walk(store: &Store, mut query: ListQuery) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let page = store.service.list_books(&query).unwrap();
        assert!(page.items.len() <= query.limit.get());
        seen.extend(
            page.items
                .iter()
                .map(|b| (b.title().as_str().to_owned(), b.id().get())),
        );
        match page.next {
            Some(next) => query.after = Some(next),
            None => return seen,
        }
    }
    panic!("the listing never ended");
}

fn seed(store: &Store) {
    for (title, author) in [
        ("Beta", "Xavier"),
        ("alpha", "Yolanda"),
        ("Beta", "Zoe"),
        ("Gamma", "Xavier"),
        ("Beta", "Yolanda"),
        ("Alpha", "Zoe"),
        ("Delta", "Xavier"),
    ] {
        BookBuilder::new(title).author(author).insert(store);
    }
}

#[test]
fn every_sort_order_visits_every_book_exactly_once_in_order_with_duplicate_keys() {
    let store = Store::new();
    seed(&store);
    for key in [
        SortKey::Id,
        SortKey::Title,
        SortKey::Author,
        SortKey::CreatedAt,
    ] {
        for descending in [false, true] {
            let sort = Sort { key, descending };
            let whole = walk(
                &store,
                ListQuery {
                    sort,
                    limit: PageSize::new(100).unwrap(),
                    ..ListQuery::default()
                },
            );
            assert_eq!(whole.len(), 7, "{sort:?}");
            for size in [1, 2, 3] {
                let paged = walk(
                    &store,
                    ListQuery {
                        sort,
                        limit: PageSize::new(size).unwrap(),
                        ..ListQuery::default()
                    },
                );
                assert_eq!(paged, whole, "{sort:?} in pages of {size}");
            }
        }
    }
}

#[test]
fn ties_on_the_sort_key_are_broken_by_id_in_the_same_direction() {
    let store = Store::new();
    seed(&store);
    let query = |descending| ListQuery {
        sort: Sort {
            key: SortKey::Title,
            descending,
        },
        limit: PageSize::new(2).unwrap(),
        ..ListQuery::default()
    };
    let ascending: Vec<i64> = walk(&store, query(false))
        .into_iter()
        .filter(|(t, _)| t == "Beta")
        .map(|(_, id)| id)
        .collect();
    assert!(ascending.is_sorted());
    let mut descending: Vec<i64> = walk(&store, query(true))
        .into_iter()
        .filter(|(t, _)| t == "Beta")
        .map(|(_, id)| id)
        .collect();
    descending.reverse();
    assert_eq!(descending, ascending);
}

#[test]
fn books_inserted_between_pages_do_not_disturb_the_walk() {
    let store = Store::new();
    seed(&store);
    let mut query = ListQuery {
        limit: PageSize::new(3).unwrap(),
        ..ListQuery::default()
    };
    let first = store.service.list_books(&query).unwrap();
    BookBuilder::new("Late").insert(&store);
    query.after = first.next;
    let mut ids: Vec<i64> = first.items.iter().map(|b| b.id().get()).collect();
    loop {
        let page = store.service.list_books(&query).unwrap();
        ids.extend(page.items.iter().map(|b| b.id().get()));
        if page.next.is_none() {
            break;
        }
        query.after = page.next;
    }
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique, ids);
    assert_eq!(
        ids.len(),
        8,
        "the book added after the first page is reached, as it sorts last by id"
    );
}

#[test]
fn a_search_term_is_served_by_the_trigram_indexes_every_time_not_only_while_plans_are_fresh() {
    use books_adapters::PostgresBookRepository;
    use books_domain::BookService;
    use diesel::prelude::*;

    let database = books_local_postgres::testing::TestDatabase::new();
    let mut admin = PgConnection::establish(database.url()).unwrap();
    diesel::sql_query(
        "INSERT INTO book (title, author) SELECT 'Title number ' || n || ' ' || md5(n::text), \
         'Author ' || (n % 977) FROM generate_series(1, 100000) AS n",
    )
    .execute(&mut admin)
    .unwrap();
    diesel::sql_query("ANALYZE book")
        .execute(&mut admin)
        .unwrap();
    // One connection, so that every listing runs on the same session: after five executions of a
    // prepared statement PostgreSQL may switch to a generic plan, and for ILIKE that plan walks
    // the whole table by id.
    let pool = crate::fixtures::one_session(&database);
    let service = BookService::new(PostgresBookRepository::new(pool));
    let scans = |conn: &mut PgConnection| -> i64 {
        #[derive(QueryableByName)]
        struct Scans {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            scans: i64,
        }
        diesel::sql_query(
            "SELECT coalesce(sum(idx_scan), 0)::bigint AS scans FROM pg_stat_user_indexes \
             WHERE indexrelname = 'book_title_trgm_idx'",
        )
        .get_result::<Scans>(conn)
        .unwrap()
        .scans
    };
    let before = scans(&mut admin);
    let searches = 12;
    for n in 0..searches {
        let query = ListQuery {
            filter: BookFilter {
                search: Some(SearchTerm::new(&format!("zq{n}x")).unwrap()),
                ..BookFilter::default()
            },
            ..ListQuery::default()
        };
        assert!(service.list_books(&query).unwrap().items.is_empty());
    }
    // A session publishes its statistics at most once a second, at the end of a transaction.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    service.list_books(&ListQuery::default()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    diesel::sql_query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut admin)
        .unwrap();
    let used = scans(&mut admin) - before;
    assert!(
        used >= searches,
        "the title index served {used} of {searches} searches"
    );
}
