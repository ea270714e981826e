//! The `books-api` binary: the composition root. Configuration, then adapters, then the service,
//! then the server; nothing else happens here.

use std::io::{IsTerminal as _, Write as _};
use std::net::TcpListener;
use std::process::ExitCode;

use anyhow::Context;
use books_adapters::{PoolOptions, PostgresBookRepository, connect, run_migrations};
use books_domain::BookService;
use books_http::cli::{Cli, Command, DatabaseArgs, ServeArgs};
use books_http::openapi::document_json;
use books_http::{Application, ServerSettings};
use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let outcome = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Migrate(args)) => migrate(&args),
        Some(Command::Openapi) => std::io::stdout()
            .write_all(document_json().as_bytes())
            .context("could not write the document"),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
}

fn migrate(args: &DatabaseArgs) -> anyhow::Result<()> {
    let database = args.open()?;
    let applied = run_migrations(&database.url);
    let closed = database.close();
    let applied = applied?;
    tracing::info!(count = applied.len(), migrations = ?applied, "migrations applied");
    closed
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let database = args.database.open()?;
    let served = serve_on(args, &database.url);
    // The cluster stops whether serving ended well or not.
    let closed = database.close();
    served.and(closed)
}

fn serve_on(args: &ServeArgs, database_url: &str) -> anyhow::Result<()> {
    let applied = run_migrations(database_url)?;
    if !applied.is_empty() {
        tracing::info!(migrations = ?applied, "migrations applied");
    }
    let pool = connect(
        database_url,
        &PoolOptions {
            max_size: args.pool_size,
            ..PoolOptions::default()
        },
    )?;
    let service = BookService::new(PostgresBookRepository::new(pool));
    let listener = TcpListener::bind(&args.bind)
        .with_context(|| format!("could not listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    let settings = ServerSettings {
        workers: args.workers.unwrap_or(ServerSettings::default().workers),
        ..ServerSettings::default()
    };
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(listener, service, &settings)?;
        tracing::info!("serving on http://{address}; Swagger UI at http://{address}/swagger-ui/");
        app.run_until_stopped().await.context("the server failed")
    })?;
    tracing::info!("the server has stopped");
    Ok(())
}
