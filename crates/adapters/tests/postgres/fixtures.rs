use books_adapters::{PgPool, PoolOptions, PostgresBookRepository, connect};
use books_domain::{Book, BookField, BookInput, BookService, NewBook, Raw};
use books_local_postgres::testing::TestDatabase;

/// A repository on a database of its own; the database lives as long as this value.
pub(crate) struct Store {
    pub(crate) service: BookService,
    pub(crate) repository: PostgresBookRepository,
    _database: TestDatabase,
}

impl Store {
    pub(crate) fn new() -> Self {
        let database = TestDatabase::new();
        let repository = PostgresBookRepository::new(database.pool());
        Self {
            service: BookService::new(repository.clone()),
            repository,
            _database: database,
        }
    }
}

/// A pool of one connection to `database`: every statement runs on the one session, which a test
/// can then look into (its prepared statements, its plans).
pub(crate) fn one_session(database: &TestDatabase) -> PgPool {
    connect(
        database.url(),
        &PoolOptions {
            max_size: 1,
            ..PoolOptions::default()
        },
    )
    .expect("a pool")
}

/// `BookBuilder::new("Dune").author("Frank Herbert").insert(&store)`.
pub(crate) struct BookBuilder {
    title: String,
    author: String,
    genre: Option<String>,
}

impl BookBuilder {
    pub(crate) fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            author: "Anonymous".to_owned(),
            genre: None,
        }
    }

    pub(crate) fn author(mut self, author: &str) -> Self {
        author.clone_into(&mut self.author);
        self
    }

    pub(crate) fn insert(self, store: &Store) -> Book {
        let input = BookInput::default()
            .with(BookField::Title, self.title.as_str())
            .with(BookField::Author, self.author.as_str())
            .with(
                BookField::Genre,
                self.genre.as_deref().map_or(Raw::Absent, Raw::from),
            );
        let draft = NewBook::parse(&input).expect("a valid book");
        store
            .service
            .create_book(&draft)
            .expect("the book is stored")
    }
}
