//! The command line of the `books-api` binary: its arguments, the database it runs against, the
//! short commands (`migrate`, `keys`, `openapi`), and logging.

use std::path::PathBuf;

use anyhow::Context;
use books_adapters::{PoolOptions, ensure_database};
use books_domain::Scope;
use books_local_postgres::{ClusterOptions, LocalCluster};
use clap::{Args, Parser, Subcommand, ValueEnum};

mod commands;
mod logging;

pub use commands::{keys, migrate, print};
pub use logging::init_logging;

/// A REST service for a catalogue of books, on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "books-api", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; serving HTTP when left out.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for serving, when no command is given.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, coloured on a terminal.
    Text,
    /// For log collectors: one JSON object per line.
    Json,
}

/// What an API key allows, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// Reads only.
    Read,
    /// Reads and writes.
    Write,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Read => Self::Read,
            ScopeArg::Write => Self::Write,
        }
    }
}

/// The OpenAPI versions the document is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpecVersion {
    /// OpenAPI 3.1 (`openapi/openapi.json`), the document the code generates.
    #[value(name = "3.1")]
    V3_1,
    /// OpenAPI 3.0.3 (`openapi/openapi-3.0.json`), for generators that read only 3.0.
    #[value(name = "3.0")]
    V3_0,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations, then exit.
    Migrate(DatabaseArgs),
    /// Print the OpenAPI document (JSON) to standard output.
    Openapi {
        /// Which OpenAPI version to render the document in.
        #[arg(long = "spec-version", value_enum, default_value = "3.1")]
        version: SpecVersion,
    },
    /// Create, list and revoke API keys.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// The key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once, alone on the last line.
    Create {
        /// The key's name: letters, digits, '.', '_' and '-'.
        #[arg(long)]
        name: String,
        /// What the key allows.
        #[arg(long, value_enum, default_value_t = ScopeArg::Write)]
        scope: ScopeArg,
    },
    /// List the active keys (names and scopes; keys themselves are never stored).
    List,
    /// Revoke a key: it stops working within seconds, on every instance.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// Settings for serving HTTP.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Async worker threads [default: one per core].
    #[arg(long, env = "WORKERS")]
    pub workers: Option<usize>,
    /// Requests per second per API key, or per client address without one; bursts of twice as
    /// many are allowed. 0 turns limiting off.
    #[arg(long, env = "RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,
    /// A Redis (`redis://host:port/`) through which all instances share one rate-limit budget
    /// per caller. While it cannot be reached, each instance limits on its own.
    #[arg(long, env = "RATE_LIMIT_REDIS_URL", hide_env_values = true)]
    pub rate_limit_redis_url: Option<String>,
    /// Compress answers of 1 KiB and more (gzip, Brotli or zstd, as the client accepts); event
    /// streams never. `false` leaves compressing to a proxy in front.
    #[arg(long, env = "COMPRESS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub compress: bool,
    /// Origins allowed to call the API from a browser, comma-separated (`*` for any). CORS is
    /// off when empty.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', default_value = "")]
    pub cors_origins: Vec<String>,
    // More than a few connections per core only adds waiting: on 2 cores, 8 served GET by id
    // 10 % faster than 16, with a 40 times shorter p99 (docs/performance.md).
    /// The most database connections open at once [default: four per core].
    #[arg(long, env = "DB_POOL_SIZE")]
    pub pool_size: Option<u32>,
    /// A read replica (a PostgreSQL streaming standby): reads go to the replicas in use, writes
    /// to the primary. Repeat the flag, or comma-separate the variable, for several.
    #[arg(
        long = "replica-url",
        env = "REPLICA_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub replica_urls: Vec<String>,
    /// The most a replica's replay may lag behind the primary, in seconds, for reads to go to it.
    #[arg(long, env = "REPLICA_MAX_LAG", default_value_t = 5.0, value_parser = non_negative_seconds)]
    pub replica_max_lag: f64,
    /// How long the change feed keeps changes: a number with a unit, `s`, `m`, `h` or `d` (`7d`,
    /// `36h`). A reader further behind gets a 410 and starts again from an export.
    #[arg(long, env = "CHANGES_RETENTION", default_value = "7d", value_parser = retention)]
    pub changes_retention: chrono::TimeDelta,
    /// The most live change streams (Server-Sent Events) one caller holds open at once (a key,
    /// or an address); past it, 429.
    #[arg(long, env = "STREAMS_PER_CALLER", default_value_t = 8)]
    pub streams_per_caller: usize,
    /// The most live change streams open at once on this instance; past it, 503. Keep it well
    /// below the connections the workers accept (2 048 each).
    #[arg(long, env = "STREAMS_TOTAL", default_value_t = 1000)]
    pub streams_total: usize,
    /// How long a live change stream lives before it ends cleanly (clients reconnect with
    /// Last-Event-ID): `s`, `m`, `h` or `d`.
    #[arg(long, env = "STREAM_LIFETIME", default_value = "30m", value_parser = retention)]
    pub stream_lifetime: chrono::TimeDelta,
    /// The most exports one caller streams at once; past it, 429.
    #[arg(long, env = "EXPORTS_PER_CALLER", default_value_t = 1)]
    pub exports_per_caller: usize,
    /// The longest an export may take (it holds a snapshot open, which holds back vacuum); past
    /// it the export ends without its final chunk, so the client sees it is incomplete.
    #[arg(long, env = "EXPORT_MAX_DURATION", default_value = "10m", value_parser = retention)]
    pub export_max_duration: chrono::TimeDelta,
    /// Callers without a key are told apart by address; IPv6 ones by this many leading bits
    /// (a site usually has a whole /64).
    #[arg(long, env = "IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub ipv6_prefix: u8,
    /// Deliver webhooks to loopback, private and link-local addresses too (receivers on the
    /// service's own network); refused by default, against server-side request forgery.
    #[arg(long, env = "WEBHOOKS_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub webhooks_allow_private: bool,
    /// How long a webhook delivery is retried before its subscription is failing: `s`, `m`, `h`
    /// or `d`.
    #[arg(long, env = "WEBHOOKS_RETRY_WINDOW", default_value = "3d", value_parser = retention)]
    pub webhooks_retry_window: chrono::TimeDelta,
    /// The longest wait between two attempts of a webhook delivery: `s`, `m`, `h` or `d`.
    #[arg(long, env = "WEBHOOKS_BACKOFF_CAP", default_value = "1h", value_parser = retention)]
    pub webhooks_backoff_cap: chrono::TimeDelta,
    /// How long a receiver has to acknowledge a delivery (2xx): `s`, `m`, `h` or `d`.
    #[arg(long, env = "WEBHOOKS_TIMEOUT", default_value = "10s", value_parser = retention)]
    pub webhooks_timeout: chrono::TimeDelta,
    /// PEM certificates trusted for `https` webhook receivers beside the public roots (a
    /// private certificate authority).
    #[arg(long, env = "WEBHOOKS_CA_FILE")]
    pub webhooks_ca_file: Option<PathBuf>,
    /// The key that seals webhook signing secrets at rest: base64 of 32 random bytes
    /// (`head -c32 /dev/urandom | base64`). Without it secrets are stored as they are, and a
    /// copy of the database can sign deliveries.
    #[arg(long, env = "WEBHOOKS_SECRET_KEY", hide_env_values = true, value_parser = sealing_key)]
    pub webhooks_secret_key: Option<SealingKey>,
    /// The OpenID Connect issuer whose access tokens are accepted beside API keys, exactly as
    /// its tokens' `iss` says (`https://id.example.com/realms/books`). Its keys are found
    /// through `{issuer}/.well-known/openid-configuration`.
    #[arg(long, env = "OIDC_ISSUER", requires = "oidc_audience")]
    pub oidc_issuer: Option<String>,
    /// The audience the tokens must be issued for (their `aud`), such as `books-api`.
    #[arg(long, env = "OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,
    /// The clock skew allowed on a token's `exp` and `nbf`, in seconds.
    #[arg(long, env = "OIDC_LEEWAY", default_value_t = 60)]
    pub oidc_leeway: u64,
    /// The least time, in seconds, between two fetches of the issuer's keys made for a key id
    /// they do not hold (a rotation needs no restart; made-up key ids cannot flood the issuer).
    #[arg(long, env = "OIDC_REFETCH_AFTER", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub oidc_refetch_after: u64,
    /// PEM certificates trusted for an `https` issuer beside the public roots.
    #[arg(long, env = "OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,
    /// Seconds to wait at start for the database to accept connections.
    #[arg(long, env = "STARTUP_WAIT", default_value_t = 30)]
    pub startup_wait: u64,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

fn retention(raw: &str) -> Result<chrono::TimeDelta, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    number
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0 && seconds_per > 0)
        .and_then(|n| n.checked_mul(seconds_per))
        .and_then(chrono::TimeDelta::try_seconds)
        .ok_or_else(|| format!("{raw:?} is not a duration such as 45s, 30m, 36h or 7d"))
}

/// The key that seals webhook secrets (never printed).
#[derive(Clone)]
pub struct SealingKey(pub [u8; 32]);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

fn sealing_key(raw: &str) -> Result<SealingKey, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .map(SealingKey)
        .ok_or_else(|| "the webhook sealing key must be base64 of exactly 32 bytes".to_owned())
}

fn non_negative_seconds(raw: &str) -> Result<f64, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .ok_or_else(|| format!("{raw:?} is not a number of seconds (0 or more)"))
}

/// Which database to use.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL or libpq connection string. Without it, the service runs a
    /// PostgreSQL cluster of its own under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the service's own cluster lives when no database URL is given.
    #[arg(long, env = "DATA_DIR", default_value = ".data/postgres")]
    pub data_dir: PathBuf,
    /// Prepare and cache SQL statements on each connection. Set false behind a pooler in
    /// transaction mode (PgBouncer before 1.21): statements are then sent unprepared, and no
    /// session setting is made (give the database role a statement_timeout instead).
    #[arg(
        long,
        env = "DB_PREPARED_STATEMENTS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub db_prepared_statements: bool,
}

/// The database the service uses, and the cluster it runs itself, if any.
#[derive(Debug)]
pub struct Database {
    /// The connection string.
    pub url: String,
    /// The embedded cluster, when no URL was given.
    pub cluster: Option<LocalCluster>,
    /// Whether statements may be prepared (see [`DatabaseArgs::db_prepared_statements`]).
    pub prepared_statements: bool,
}

impl Database {
    /// Pool settings for this database, with at most `max_size` connections.
    pub fn pool_options(&self, max_size: u32) -> PoolOptions {
        PoolOptions {
            max_size,
            prepared_statements: self.prepared_statements,
            ..PoolOptions::default()
        }
    }
}

impl ServeArgs {
    /// The pool size: as configured, or four connections per core.
    pub fn pool_size(&self) -> u32 {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        self.pool_size
            .unwrap_or(u32::try_from(4 * cores).unwrap_or(16))
            .max(1)
    }
}

impl DatabaseArgs {
    /// The configured database; starts (and on first use creates) the embedded cluster when no
    /// URL is configured.
    ///
    /// # Errors
    ///
    /// When the embedded cluster cannot be created or started.
    pub fn open(&self) -> anyhow::Result<Database> {
        self.open_with(&ClusterOptions::default())
    }

    /// Like [`DatabaseArgs::open`], for a short command: an embedded cluster that a running
    /// service already uses is used as it is and left running.
    ///
    /// # Errors
    ///
    /// As for [`DatabaseArgs::open`].
    pub fn open_briefly(&self) -> anyhow::Result<Database> {
        self.open_with(&ClusterOptions {
            leave_running: true,
            ..ClusterOptions::default()
        })
    }

    fn open_with(&self, options: &ClusterOptions) -> anyhow::Result<Database> {
        if let Some(url) = self.database_url.as_deref().filter(|url| !url.is_empty()) {
            return Ok(Database {
                url: url.to_owned(),
                cluster: None,
                prepared_statements: self.db_prepared_statements,
            });
        }
        let cluster = LocalCluster::start(&self.data_dir, options).context(
            "could not start the embedded PostgreSQL (set DATABASE_URL to use another server)",
        )?;
        ensure_database(&cluster.connection_url("postgres"), "books")?;
        tracing::info!(data = %cluster.root().display(), "PostgreSQL runs from the embedded default cluster");
        Ok(Database {
            url: cluster.connection_url("books"),
            cluster: Some(cluster),
            prepared_statements: self.db_prepared_statements,
        })
    }
}

impl Database {
    /// Stops the embedded cluster, if the service runs one.
    ///
    /// # Errors
    ///
    /// When the cluster does not stop.
    pub fn close(self) -> anyhow::Result<()> {
        if let Some(cluster) = self.cluster {
            cluster.stop()?;
            tracing::info!("the embedded PostgreSQL cluster has stopped");
        }
        Ok(())
    }
}
