//! Test support: a database of its own for each test, on real PostgreSQL.
//!
//! Once per test binary the server is found, and a template database is created and migrated.
//! Each [`TestDatabase`] is a copy of that template (fast: PostgreSQL copies files) and is dropped
//! when the value is. The server is the one `TEST_DATABASE_URL` points to (any database on it: it
//! is only used to create and drop others), or else a throwaway cluster started for this process
//! from the installed server programs and deleted when the process exits.

use std::ffi::OsStr;
use std::process::{Child, ChildStdin};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use books_adapters::{MIGRATIONS, PgPool, PoolOptions, connect, run_migrations};

use crate::cluster::{run_at_exit, shell_quote};
use crate::{ClusterOptions, LocalCluster};

const PREFIX: &str = "books_test_";

struct Server {
    admin_url: String,
    template: String,
    _cluster: Option<LocalCluster>,
    _drop_template_at_exit: Option<(Child, ChildStdin)>,
}

impl Server {
    fn execute(&self, statement: &str) -> anyhow::Result<()> {
        let mut admin = PgConnection::establish(&self.admin_url)
            .context("could not connect to the test server")?;
        admin.batch_execute(statement)?;
        Ok(())
    }
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

fn server() -> &'static Server {
    SERVER.get_or_init(|| match start_server() {
        Ok(server) => server,
        Err(error) => panic!("could not prepare the test database server: {error:#}"),
    })
}

fn start_server() -> anyhow::Result<Server> {
    let pid = std::process::id();
    let (admin_url, cluster) = match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let root = std::env::temp_dir().join(format!("books-api-test-{pid}"));
            let options = ClusterOptions {
                ephemeral: true,
                remove_on_exit: true,
                leave_running: false,
            };
            let cluster = LocalCluster::start(&root, &options)?;
            (cluster.connection_url("postgres"), Some(cluster))
        }
    };
    let mut admin =
        PgConnection::establish(&admin_url).context("could not connect to the test server")?;
    drop_leftovers(&mut admin)?;
    let template = format!("{PREFIX}{pid}_template");
    admin.batch_execute(&format!("CREATE DATABASE {}", quote_identifier(&template)))?;
    run_migrations(&with_database(&admin_url, &template), true)?;
    // A throwaway cluster goes with everything in it; on a shared server the template is dropped
    // at exit with psql where it is installed, and otherwise by the next run (drop_leftovers).
    let drop_template_at_exit = match &cluster {
        Some(_) => None,
        None => {
            let statement = format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(&template)
            );
            let script = format!(
                "command -v psql >/dev/null && psql -q -d {} -c {} >/dev/null 2>&1",
                shell_quote(OsStr::new(&admin_url))?,
                shell_quote(OsStr::new(&statement))?
            );
            Some(run_at_exit(&script, None)?)
        }
    };
    Ok(Server {
        admin_url,
        template,
        _cluster: cluster,
        _drop_template_at_exit: drop_template_at_exit,
    })
}

/// Drops the databases of earlier test runs on a shared server whose process is gone (a run that
/// was killed cannot clean up after itself).
fn drop_leftovers(admin: &mut PgConnection) -> anyhow::Result<()> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        datname: String,
    }
    let names: Vec<Name> =
        diesel::sql_query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind::<Text, _>(PREFIX)
            .load(admin)?;
    for Name { datname } in names {
        let owner_alive = datname[PREFIX.len()..]
            .split('_')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !owner_alive {
            admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(&datname)
            ))?;
        }
    }
    Ok(())
}

/// A migrated database of its own for one test, dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, migrated, empty database.
    ///
    /// # Panics
    ///
    /// When no server can be had: a test cannot run without one.
    pub fn new() -> Self {
        Self::create(Some(&server().template))
    }

    /// Creates a database with no tables at all, for tests of the migrations themselves.
    ///
    /// # Panics
    ///
    /// As [`TestDatabase::new`].
    pub fn unmigrated() -> Self {
        Self::create(None)
    }

    fn create(template: Option<&str>) -> Self {
        let server = server();
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let create = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_identifier(&name),
            quote_identifier(template.unwrap_or("template0"))
        );
        if let Err(error) = server.execute(&create) {
            panic!("could not create the test database {name}: {error:#}");
        }
        let url = with_database(&server.admin_url, &name);
        Self { name, url }
    }

    /// The connection string of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name on its server.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A small pool on this database.
    ///
    /// # Panics
    ///
    /// Never in practice: the options are valid.
    pub fn pool(&self) -> PgPool {
        let options = PoolOptions {
            max_size: 8,
            ..PoolOptions::default()
        };
        connect(&self.url, &options).expect("valid pool options")
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(server) = SERVER.get() else { return };
        // FORCE ends the sessions the test's pool still holds.
        let drop = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&self.name)
        );
        if let Err(error) = server.execute(&drop) {
            eprintln!("could not drop the test database {}: {error:#}", self.name);
        }
    }
}

/// Applies the migrations in order up to, not including, the first whose name contains
/// `before`: a database as an older release left it, for tests of an upgrade.
///
/// # Panics
///
/// When the database cannot be reached, a migration fails, or no migration is so named.
pub fn migrate_until(url: &str, before: &str) {
    use diesel_migrations::MigrationHarness as _;

    let mut conn = PgConnection::establish(url).expect("the test database answers");
    let pending = conn
        .pending_migrations(MIGRATIONS)
        .expect("the embedded migrations are readable");
    assert!(
        pending
            .iter()
            .any(|m| m.name().to_string().contains(before)),
        "no migration is named {before:?}"
    );
    for migration in pending {
        if migration.name().to_string().contains(before) {
            return;
        }
        conn.run_migration(&*migration)
            .expect("an older migration applies");
    }
}

/// Quotes an SQL identifier (CREATE DATABASE takes no bind parameters).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `url` with its database name replaced by `database`. Works for URIs
/// (`postgres://user@host:5432/db?sslmode=require`) and key/value strings (`host=… dbname=…`).
fn with_database(url: &str, database: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest_start = scheme_end + 3;
        let query_start = url[rest_start..]
            .find('?')
            .map_or(url.len(), |i| rest_start + i);
        let path_start = url[rest_start..query_start]
            .find('/')
            .map_or(query_start, |i| rest_start + i);
        format!("{}/{}{}", &url[..path_start], database, &url[query_start..])
    } else {
        // libpq lets a later keyword override an earlier one.
        format!("{url} dbname={database}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_uri_is_replaced_and_its_options_kept() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/old?sslmode=require", "new"),
            "postgres://u:p@h:5432/new?sslmode=require"
        );
        assert_eq!(with_database("postgresql://h", "new"), "postgresql://h/new");
        assert_eq!(
            with_database("postgresql://h?x=1", "new"),
            "postgresql://h/new?x=1"
        );
    }

    #[test]
    fn the_database_of_a_key_value_string_is_overridden() {
        assert_eq!(
            with_database("host=/tmp user=postgres", "db"),
            "host=/tmp user=postgres dbname=db"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
