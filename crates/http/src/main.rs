//! The `books-api` binary: the composition root. Configuration, then adapters, then the services,
//! then the server; nothing else happens here.

use std::io::{IsTerminal as _, Write as _};
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use books_adapters::{
    PgPool, PoolOptions, PostgresApiKeyRepository, PostgresBookRepository, connect, run_migrations,
    wait_for_database,
};
use books_domain::{BookService, KeyName, KeyService, Scope};
use books_http::cli::{Cli, Command, DatabaseArgs, KeysCommand, ServeArgs};
use books_http::observe::pool_probe;
use books_http::openapi::document_json;
use books_http::ratelimit::RateLimit;
use books_http::{Application, ServerSettings, Services};
use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format == "json");
    let outcome = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Migrate(args)) => migrate(&args),
        Some(Command::Openapi) => print(&document_json()),
        Some(Command::Keys { command, database }) => keys(&command, &database),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(layer.json().flatten_event(true)).init();
    } else {
        registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .init();
    }
}

/// Writes to standard output: what a command produces, as opposed to its log.
fn print(text: &str) -> anyhow::Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("could not write to standard output")
}

fn migrate(args: &DatabaseArgs) -> anyhow::Result<()> {
    let database = args.open_briefly()?;
    let applied = run_migrations(&database.url);
    let closed = database.close();
    let applied = applied?;
    tracing::info!(count = applied.len(), migrations = ?applied, "migrations applied");
    closed
}

fn pool(url: &str, max_size: u32) -> anyhow::Result<PgPool> {
    run_migrations(url)?;
    connect(
        url,
        &PoolOptions {
            max_size,
            ..PoolOptions::default()
        },
    )
}

fn keys(command: &KeysCommand, args: &DatabaseArgs) -> anyhow::Result<()> {
    let database = args.open_briefly()?;
    let outcome = pool(&database.url, 2).and_then(|pool| {
        let keys = KeyService::new(PostgresApiKeyRepository::new(pool));
        match command {
            KeysCommand::Create { name, scope } => {
                let name = KeyName::new(name)?;
                let scope = Scope::parse(scope).context("the scope must be read or write")?;
                let (key, secret) = keys.create(&name, scope)?;
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

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let database = args.database.open()?;
    let embedded = database.cluster.is_some();
    let served = serve_on(args, &database.url, embedded);
    // The cluster stops whether serving ended well or not.
    let closed = database.close();
    served.and(closed)
}

fn serve_on(args: &ServeArgs, database_url: &str, embedded: bool) -> anyhow::Result<()> {
    wait_for_database(database_url, Duration::from_secs(args.startup_wait))?;
    let pool = pool(database_url, args.pool_size())?;
    let service = BookService::new(PostgresBookRepository::new(pool.clone()));
    let keys = KeyService::new(PostgresApiKeyRepository::new(pool.clone()));
    if embedded && keys.list()?.is_empty() {
        // A newcomer on the embedded default can try writes in Swagger UI at once.
        let (key, secret) = keys.create(&KeyName::new("local")?, Scope::Write)?;
        print(&format!(
            "This new local service has one write key, {}, shown once (Swagger UI: Authorize):\n{}\n",
            key.name,
            secret.expose()
        ))?;
    }
    let listener = TcpListener::bind(&args.bind)
        .with_context(|| format!("could not listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    let workers = args
        .workers
        .unwrap_or(ServerSettings::default().workers)
        .max(1);
    let settings = ServerSettings {
        workers,
        // Enough threads to keep every pooled connection busy, and no more.
        blocking_threads_per_worker: (args.pool_size() as usize).div_ceil(workers).max(1),
        rate_limit: RateLimit::per_second(args.rate_limit),
        cors_origins: args
            .cors_origins
            .iter()
            .filter(|o| !o.is_empty())
            .cloned()
            .collect(),
        ..ServerSettings::default()
    };
    let pool_probe = pool_probe(pool);
    let services = Services {
        books: service,
        keys,
        pool_probe: Some(pool_probe),
    };
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(listener, services, &settings)?;
        tracing::info!("serving on http://{address}; Swagger UI at http://{address}/swagger-ui/");
        app.run_until_stopped().await.context("the server failed")
    })?;
    tracing::info!("the server has stopped");
    Ok(())
}
