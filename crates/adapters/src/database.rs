//! The connection pool and the embedded migrations.

use std::time::Duration;

use anyhow::{Context, anyhow};
use diesel::connection::CacheSize;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// A pool of PostgreSQL connections.
pub type PgPool = Pool<ConnectionManager<PgConnection>>;

/// The migrations in the workspace's `migrations/` folder, embedded in the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// How the pool behaves.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The most connections open at once.
    pub max_size: u32,
    /// How long a request waits for a free connection before it is answered 503.
    pub checkout_timeout: Duration,
    /// How long one statement may run before PostgreSQL cancels it (set on each connection's
    /// session; see `prepared_statements`).
    pub statement_timeout: Duration,
    /// Prepare and cache statements on each connection (fast). Off for a pooler in transaction
    /// mode (PgBouncer before 1.21), where a prepared statement or a session setting lands on
    /// whichever server connection the pooler picked: then every statement is sent unprepared in
    /// one round trip, and nothing is set on the session (give the role a `statement_timeout`
    /// instead: `docs/scaling.md`).
    pub prepared_statements: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            checkout_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            prepared_statements: true,
        }
    }
}

/// Sets up each new connection, once, so no request pays for it.
#[derive(Debug)]
struct SessionSettings {
    statement_timeout_ms: u128,
    prepared_statements: bool,
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSettings {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        if !self.prepared_statements {
            // Behind a transaction pooler a session is not ours: prepare nothing, set nothing.
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
            return Ok(());
        }
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET TIME ZONE 'UTC'",
            self.statement_timeout_ms
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Builds a pool for `url` (a libpq connection string or URI) without waiting for a connection:
/// a database that is down at start is reported by the first request, not by a crash.
///
/// # Errors
///
/// Never today; the `Result` leaves room for options that can be refused.
pub fn connect(url: &str, options: &PoolOptions) -> anyhow::Result<PgPool> {
    let pool = Pool::builder()
        .max_size(options.max_size)
        .min_idle(Some(0))
        .connection_timeout(options.checkout_timeout)
        // r2d2 would run a query to test every connection it hands out, doubling the round trips
        // of a simple request. A connection that broke is found on use instead: the request gets
        // 503, and the pool drops the connection and opens a fresh one for the next.
        .test_on_check_out(false)
        .connection_customizer(Box::new(SessionSettings {
            statement_timeout_ms: options.statement_timeout.as_millis(),
            prepared_statements: options.prepared_statements,
        }))
        .build_unchecked(ConnectionManager::new(url));
    Ok(pool)
}

/// Applies the pending migrations on `url`, then builds a pool for it: what a process that serves
/// or administers the catalogue needs first.
///
/// # Errors
///
/// When the database cannot be reached or a migration fails.
pub fn open_pool(url: &str, options: &PoolOptions) -> anyhow::Result<PgPool> {
    run_migrations(url, options.prepared_statements)?;
    connect(url, options)
}

/// The language PostgreSQL writes its messages in on a new session of `url`, when it is not
/// English (`None` when it is). The service tells a few errors apart by their message, because
/// diesel does not hand on their SQLSTATE (see the `errors` module): in another language a lock
/// timeout would read as an unexpected error (500 instead of 409), and a statement timeout too
/// (500 instead of 503). The migrations pin `lc_messages = 'C'` on the service's role in its
/// database where the role may (a superuser-only setting); otherwise the caller should warn.
///
/// # Errors
///
/// When the database cannot be reached.
pub fn foreign_message_language(url: &str) -> anyhow::Result<Option<String>> {
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        value: String,
    }
    let mut conn = PgConnection::establish(url).context("could not connect to the database")?;
    let language = diesel::sql_query("SELECT current_setting('lc_messages') AS value")
        .get_result::<Setting>(&mut conn)
        .context("could not read lc_messages")?
        .value;
    Ok((!is_english(&language)).then_some(language))
}

/// True for the locales whose messages are PostgreSQL's own English ones.
fn is_english(locale: &str) -> bool {
    let language = locale.split(['.', '@']).next().unwrap_or_default();
    language.is_empty()
        || ["C", "POSIX"].contains(&language)
        || language == "en"
        || language.starts_with("en_")
}

/// Waits until the database at `url` accepts a connection, trying once a second, for at most
/// `patience`: a service started together with its database (a deployment, a compose file)
/// should wait for it rather than fail.
///
/// # Errors
///
/// The last connection error, when `patience` runs out.
pub fn wait_for_database(url: &str, patience: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        match PgConnection::establish(url) {
            Ok(_) => return Ok(()),
            Err(error) if started.elapsed() < patience => {
                tracing::warn!(error = %error, "waiting for the database");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => return Err(error).context("the database did not answer in time"),
        }
    }
}

/// Applies the pending migrations and returns the names of those applied; without
/// `prepared_statements`, as for a transaction pooler (see [`PoolOptions`]).
///
/// # Errors
///
/// When the database cannot be reached or a migration fails.
pub fn run_migrations(url: &str, prepared_statements: bool) -> anyhow::Result<Vec<String>> {
    let mut conn = PgConnection::establish(url).context("could not connect to the database")?;
    if !prepared_statements {
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
    }
    create_extensions(&mut conn)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|error| anyhow!(error))
        .context("could not apply the migrations")?;
    Ok(applied.iter().map(ToString::to_string).collect())
}

/// The contrib extensions search needs (see `migrations/…_search_books/up.sql`).
const EXTENSIONS: [&str; 3] = ["unaccent", "pg_trgm", "fuzzystrmatch"];

/// Creates the extensions the migrations need, before they run, so that a database where this
/// role may not create them stops the start with the SQL an administrator must run, instead of
/// a failed migration.
fn create_extensions(conn: &mut PgConnection) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let installed: Vec<Name> = diesel::sql_query(
        "SELECT extname::text AS name FROM pg_extension \
         UNION ALL SELECT current_database()::text",
    )
    .load(conn)
    .context("could not read the database's extensions")?;
    let database = installed.last().map_or("", |n| n.name.as_str()).to_owned();
    for extension in EXTENSIONS {
        if installed.iter().any(|n| n.name == extension) {
            continue;
        }
        if let Err(error) =
            conn.batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS {extension}"))
        {
            anyhow::bail!(
                "search needs the PostgreSQL extension {extension}, which database {database} \
                 does not have and which this role may not create ({error}): run \
                 `CREATE EXTENSION {extension};` in database {database} as its owner or a \
                 superuser (the package postgresql-contrib, or Debian's postgresql, ships it), \
                 then start the service again"
            );
        }
    }
    Ok(())
}

/// Creates the database `name` through the maintenance connection `admin_url`, unless it exists.
///
/// # Errors
///
/// When the server cannot be reached or refuses.
pub fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Bool, Text};

    let mut conn = PgConnection::establish(admin_url).context("could not connect to the server")?;
    let present: bool = diesel::select(
        sql::<Bool>("EXISTS (SELECT 1 FROM pg_database WHERE datname = ")
            .bind::<Text, _>(name)
            .sql(")"),
    )
    .get_result(&mut conn)
    .context("could not list the databases")?;
    if !present {
        conn.batch_execute(&format!("CREATE DATABASE {}", quote_identifier(name)))
            .with_context(|| format!("could not create the database {name}"))?;
    }
    Ok(())
}

/// Quotes an SQL identifier (CREATE DATABASE takes no bind parameters).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_and_the_c_locale_are_told_from_other_languages() {
        for english in [
            "",
            "C",
            "C.UTF-8",
            "C.utf8",
            "POSIX",
            "en_US.UTF-8",
            "en_GB",
            "en",
        ] {
            assert!(is_english(english), "{english}");
        }
        for other in ["de_DE.UTF-8", "fr_FR", "es_ES.utf8@euro", "cs_CZ", "Enlish"] {
            assert!(!is_english(other), "{other}");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
