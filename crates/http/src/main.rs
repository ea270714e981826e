//! The `books-api` binary: the composition root. Configuration, then adapters, then the services,
//! then the server; nothing else happens here.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use books_adapters::{
    ChangeListener, PostgresApiKeyRepository, PostgresBookRepository, PostgresWebhookRepository,
    Replicas, open_pool, wait_for_database,
};
use books_domain::{
    BookService, KeyName, KeyService, RetryPolicy, Scope, StorageHealth, WebhookService,
};
use books_http::cli::{
    Cli, Command, Database, ServeArgs, SpecVersion, init_logging, keys, migrate, print,
};
use books_http::middleware::oidc::OidcSettings;
use books_http::{
    Application, RateLimit, ServerSettings, Services, WebhookSettings, document_3_0_json,
    document_json,
};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of `main`: dropping it writes out the lines still waiting.
    let _logging = match init_logging(cli.log_format) {
        Ok(guard) => guard,
        Err(error) => {
            // No logger yet: standard error is the only place to say it.
            let _ = writeln!(std::io::stderr(), "books-api: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Migrate(args)) => migrate(&args),
        Some(Command::Openapi { version }) => print(&match version {
            SpecVersion::V3_1 => document_json(),
            SpecVersion::V3_0 => document_3_0_json(),
        }),
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

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let database = args.database.open()?;
    let served = serve_on(args, &database);
    // The cluster stops whether serving ended well or not.
    let closed = database.close();
    served.and(closed)
}

fn serve_on(args: &ServeArgs, database: &Database) -> anyhow::Result<()> {
    let embedded = database.cluster.is_some();
    wait_for_database(&database.url, Duration::from_secs(args.startup_wait))?;
    let pool = open_pool(&database.url, &database.pool_options(args.pool_size()))?;
    warn_of_a_foreign_message_language(&database.url);
    let replica_urls: Vec<String> = args
        .replica_urls
        .iter()
        .filter(|url| !url.trim().is_empty())
        .cloned()
        .collect();
    let replicas = if replica_urls.is_empty() {
        None
    } else {
        Some(Arc::new(Replicas::new(
            pool.clone(),
            &replica_urls,
            &database.pool_options(args.pool_size()),
            Duration::from_secs_f64(args.replica_max_lag),
        )?))
    };
    let mut books = PostgresBookRepository::new(pool.clone());
    if let Some(replicas) = &replicas {
        books = books.reading_from(replicas.clone());
    }
    // Storage reports on its pool and replicas through its own port.
    let storage: Arc<dyn StorageHealth> = Arc::new(books.clone());
    let service = BookService::new(books);
    let pool_for_webhooks = pool.clone();
    let keys = KeyService::new(PostgresApiKeyRepository::new(pool));
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
        // A quarter of the connections at most for exports, so that reads and writes always
        // find one.
        exports_in_flight: (args.pool_size() as usize / 4).max(1),
        write_batches_in_flight: (args.pool_size() as usize / 2).max(1),
        rate_limit: RateLimit::per_second(args.rate_limit),
        compress: args.compress,
        rate_limit_redis_url: args
            .rate_limit_redis_url
            .clone()
            .filter(|url| !url.is_empty()),
        cors_origins: args
            .cors_origins
            .iter()
            .filter(|o| !o.is_empty())
            .cloned()
            .collect(),
        changes_retention: args.changes_retention,
        streams_per_caller: args.streams_per_caller,
        streams_total: args.streams_total,
        stream_lifetime: args
            .stream_lifetime
            .to_std()
            .unwrap_or(Duration::from_secs(1800)),
        exports_per_caller: args.exports_per_caller,
        export_max_duration: args
            .export_max_duration
            .to_std()
            .unwrap_or(Duration::from_secs(600)),
        ipv6_prefix: args.ipv6_prefix,
        webhooks: WebhookSettings {
            allow_internal: args.webhooks_allow_private,
            trusted_roots: trusted_roots(args.webhooks_ca_file.as_deref())?,
            retry: RetryPolicy {
                window: args.webhooks_retry_window,
                cap: args
                    .webhooks_backoff_cap
                    .to_std()
                    .unwrap_or(Duration::from_secs(3600)),
                timeout: args
                    .webhooks_timeout
                    .to_std()
                    .unwrap_or(Duration::from_secs(10)),
                ..RetryPolicy::default()
            },
            ..WebhookSettings::default()
        },
        oidc: match (&args.oidc_issuer, &args.oidc_audience) {
            (Some(issuer), Some(audience)) => Some(OidcSettings {
                leeway: Duration::from_secs(args.oidc_leeway),
                refetch_after: Duration::from_secs(args.oidc_refetch_after),
                trusted_roots: trusted_roots(args.oidc_ca_file.as_deref())?,
                ..OidcSettings::new(issuer, audience)
            }),
            _ => None,
        },
        ..ServerSettings::default()
    };
    let mut webhook_store = PostgresWebhookRepository::new(pool_for_webhooks);
    match &args.webhooks_secret_key {
        Some(key) => webhook_store = webhook_store.sealing_with(key.0),
        None => tracing::warn!(
            "webhook signing secrets are stored unsealed: set WEBHOOKS_SECRET_KEY (base64 of 32 \
             random bytes) so that a copy of the database cannot sign deliveries"
        ),
    }
    let services = Services {
        books: service,
        keys,
        webhooks: WebhookService::new(webhook_store),
        storage,
        change_signal: Some(Box::new(ChangeListener::new(&database.url))),
    };
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(listener, services, &settings)?;
        tracing::info!("serving on http://{address}; Swagger UI at http://{address}/swagger-ui/");
        app.run_until_stopped().await.context("the server failed")
    })?;
    tracing::info!("the server has stopped");
    Ok(())
}

/// The certificates of a CA file (PEM), as DER; a file that holds none is an error.
fn trusted_roots(path: Option<&std::path::Path>) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let roots: Vec<Vec<u8>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("could not read {}", path.display()))?
        .map(|certificate| certificate.map(|der| der.to_vec()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not PEM certificates", path.display()))?;
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
    Ok(roots)
}

/// Warns when PostgreSQL answers the service in another language than English: a few errors are
/// told apart by their message (see `docs/operations.md`, "The database's language").
fn warn_of_a_foreign_message_language(url: &str) {
    match books_adapters::foreign_message_language(url) {
        Ok(None) => {}
        Ok(Some(language)) => tracing::warn!(
            lc_messages = %language,
            "PostgreSQL writes its messages in another language than English, and the service's \
             role may not change that: lock and statement timeouts would be answered 500 instead \
             of 409 and 503. Ask the database's administrator to run \
             ALTER ROLE <role> IN DATABASE <database> SET lc_messages = 'C'"
        ),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "could not read the database's message language")
        }
    }
}
