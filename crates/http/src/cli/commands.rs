//! The short commands: `migrate`, `keys …`, and writing what a command produces.

use std::io::Write as _;

use anyhow::Context as _;
use books_adapters::{PostgresApiKeyRepository, open_pool, run_migrations};
use books_domain::{KeyName, KeyService, Scope};

use super::{DatabaseArgs, KeysCommand};

/// Writes to standard output: what a command produces, as opposed to its log.
pub fn print(text: &str) -> anyhow::Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("could not write to standard output")
}

/// `books-api migrate`.
///
/// # Errors
///
/// When the database cannot be opened or a migration fails.
pub fn migrate(args: &DatabaseArgs) -> anyhow::Result<()> {
    let database = args.open_briefly()?;
    let applied = run_migrations(&database.url, database.prepared_statements);
    let closed = database.close();
    let applied = applied?;
    tracing::info!(count = applied.len(), migrations = ?applied, "migrations applied");
    closed
}

/// `books-api keys …`.
///
/// # Errors
///
/// When the database cannot be opened, or the command is refused (a name taken, no such key).
pub fn keys(command: &KeysCommand, args: &DatabaseArgs) -> anyhow::Result<()> {
    let database = args.open_briefly()?;
    let outcome = open_pool(&database.url, &database.pool_options(2)).and_then(|pool| {
        let keys = KeyService::new(PostgresApiKeyRepository::new(pool));
        match command {
            KeysCommand::Create { name, scope } => {
                let name = KeyName::new(name)?;
                                let (key, secret) = keys.create(&name, Scope::from(*scope))?;
                print(&format!(
                    "Created the {} key {}. It is shown once, now; only its digest is stored:\n{}\n",
                    key.scope.name(),
                    key.name,
                    secret.expose()
                ))
            }
            KeysCommand::List => {
                let mut table = format!("{:<32} {:<6} {}\n", "NAME", "SCOPE", "CREATED");
                for key in keys.list()? {
                    let created = key.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    table.push_str(&format!("{:<32} {:<6} {created}\n", key.name.as_str(), key.scope.name()));
                }
                print(&table)
            }
            KeysCommand::Revoke { name } => {
                keys.revoke(&KeyName::new(name)?)?;
                print(&format!("Revoked the key {name}; it stops working within seconds.\n"))
            }
        }
    });
    let closed = database.close();
    outcome.and(closed)
}
