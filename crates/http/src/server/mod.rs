//! The HTTP server: the routes and middleware, the settings it runs with, the handlers' state
//! (`crate::state`), and the background tasks that run beside it ([`tasks`]).

mod tasks;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{Compress, Condition, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context;
use books_application::{
    ChangeHub, CreateCoalescer, ExportLimits, ListCoalescer, PatchCoalescer, ReadCoalescer,
    ScanListings,
};
use books_domain::{
    BookService, CHANGES_RETENTION, ChangeSignal, KeyService, StorageHealth, WebhookService,
};
use chrono::TimeDelta;
use tracing_actix_web::TracingLogger;

use crate::long_lived::LongLived;
use crate::long_lived::{ExportSlots, StreamSlots};
use crate::middleware::auth::KeyCache;
use crate::middleware::compress::{compress_whole_bodies, drop_identity_marks};
use crate::middleware::cors::cors;
use crate::middleware::head::head_as_get;
use crate::middleware::observe::gauges::{Observed, counts_of};
use crate::middleware::observe::{Metrics, RequestSpan};
use crate::middleware::oidc::{Issuer, OidcSettings};
use crate::middleware::rate_limit::AddressKeying;
use crate::middleware::rate_limit::RateLimit;
use crate::middleware::rate_limit::local::RateLimiter;
use crate::middleware::rate_limit::shared::SharedBudgets;
use crate::openapi::{document_3_0_json, document_json, with_openid_connect};
use crate::routes::batch_and_export::STALLED_READER;
use crate::routes::configure;
use crate::state::{Documents, State};
use crate::webhooks::{WebhookSettings, WebhookStats};
use tasks::{Background, stop_on_signal};

/// The most connections one worker serves at once.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 2048;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Async worker threads (each serves many connections; database calls run on the blocking pool).
    pub workers: usize,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_timeout: Duration,
    /// Stop on SIGINT and SIGTERM. Off in tests, where the test stops the server.
    pub handle_signals: bool,
    /// Threads per worker for database work (see [`Application::build`]).
    pub blocking_threads_per_worker: usize,
    /// The most batches of reads by id, listing pages and creates worked on at once (see
    /// `books_application::batching`). Fewer batches in flight mean larger batches and fewer
    /// thread hand-offs; one per two cores measured best (`docs/performance.md`).
    pub batches_in_flight: usize,
    /// The most batches of patches and replacements worked on at once. More than for reads: an
    /// update batch spends most of its time waiting for its commit to reach the disk, and commits
    /// in flight together share one flush (`docs/performance.md`). Half the pool by default.
    pub write_batches_in_flight: usize,
    /// The most exports streaming at once on this instance; each holds a database connection and
    /// a blocking thread while its client reads, so a few slow readers must not take them all.
    /// Past it, an export is a 503 with `Retry-After`.
    pub exports_in_flight: usize,
    /// The most exports one caller (a key, or an address: see `ipv6_prefix`) streams at once;
    /// past it, 429. One by default, so that no caller can take every slot.
    pub exports_per_caller: usize,
    /// The longest an export may take: its snapshot is held open meanwhile, which keeps vacuum
    /// from cleaning `book` and `book_change`. Past it the export ends without its final chunk,
    /// so the client sees an incomplete answer (10 minutes).
    pub export_max_duration: Duration,
    /// The most live change streams open at once on this instance; past it, 503. Well below the
    /// connections a worker accepts, so that short requests and the health endpoints always find
    /// room.
    pub streams_total: usize,
    /// The most live change streams one caller holds at once; past it, 429.
    pub streams_per_caller: usize,
    /// How long a live change stream lives: then it ends cleanly, and the client reconnects with
    /// `Last-Event-ID` (30 minutes), so that no stream holds its place for ever.
    pub stream_lifetime: Duration,
    /// Callers without a key are told apart by address; IPv6 ones by this many leading bits
    /// (64: a site's usual allocation, in which every address would otherwise be a new caller).
    pub ipv6_prefix: u8,
    /// Requests per caller, or `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// A Redis through which every instance shares one budget per caller (`redis://…`).
    pub rate_limit_redis_url: Option<String>,
    /// Compress bodies of 1 KiB and more when the client accepts it (gzip, Brotli, zstd); on by
    /// default (`middleware::compress` says how it stays cheap).
    pub compress: bool,
    /// Origins allowed to call from a browser (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// How long the change feed keeps changes (purged in the background).
    pub changes_retention: TimeDelta,
    /// How often a change stream sends a keep-alive comment (15 s).
    pub change_heartbeat: Duration,
    /// How long the API keys are trusted after their last successful reload (10 s): while
    /// reloads fail, a revoked key would otherwise keep working; past this, no key is verified
    /// until a reload succeeds (writes get 503, reads go on as anonymous ones). Reloads run
    /// every 2 s.
    pub key_cache_max_age: Duration,
    /// How webhooks are delivered.
    pub webhooks: WebhookSettings,
    /// The OpenID Connect issuer whose access tokens are accepted beside API keys, if any.
    pub oidc: Option<OidcSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            shutdown_timeout: Duration::from_secs(10),
            handle_signals: true,
            blocking_threads_per_worker: 8,
            batches_in_flight: std::thread::available_parallelism()
                .map_or(1, |cores| usize::from(cores).div_ceil(2)),
            write_batches_in_flight: 4,
            exports_in_flight: 2,
            exports_per_caller: 1,
            export_max_duration: Duration::from_secs(600),
            streams_total: 1000,
            streams_per_caller: 8,
            stream_lifetime: Duration::from_secs(1800),
            ipv6_prefix: 64,
            rate_limit: RateLimit::per_second(100),
            rate_limit_redis_url: None,
            compress: true,
            cors_origins: Vec::new(),
            changes_retention: CHANGES_RETENTION,
            change_heartbeat: Duration::from_secs(15),
            key_cache_max_age: Duration::from_secs(10),
            webhooks: WebhookSettings::default(),
            oidc: None,
        }
    }
}

/// What the server serves: the use cases, and what it reports on.
pub struct Services {
    /// The catalogue.
    pub books: BookService,
    /// The API keys.
    pub keys: KeyService,
    /// The webhook subscriptions, delivered by every instance.
    pub webhooks: WebhookService,
    /// What storage says of its pool and its read replicas: reported in `/metrics` and
    /// `/readyz`, and the replicas checked in the background.
    pub storage: Arc<dyn StorageHealth>,
    /// What wakes the live change feed when a write commits; without one it polls every second.
    pub change_signal: Option<Box<dyn ChangeSignal>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    tasks: Background,
    handle_signals: bool,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds the server on `listener` (bind port 0 to let the system choose).
    ///
    /// # Errors
    ///
    /// When the listener cannot be used.
    pub fn build(
        listener: TcpListener,
        services: Services,
        settings: &ServerSettings,
    ) -> anyhow::Result<Self> {
        let Services {
            books: service,
            keys,
            webhooks,
            storage,
            change_signal,
        } = services;
        let webhook_stats = Arc::new(WebhookStats::default());
        let port = listener
            .local_addr()
            .context("the listener has no address")?
            .port();
        let reads = Arc::new(ReadCoalescer::reads(
            service.clone(),
            settings.batches_in_flight,
        ));
        // Creates take the reads' lanes: a multi-row insert costs little more for many rows, so
        // the fewer and larger its batches the better (measured: `docs/performance.md`).
        let creates = Arc::new(CreateCoalescer::creates(
            service.clone(),
            settings.batches_in_flight,
        ));
        let listings = Arc::new(ListCoalescer::listings(
            service.clone(),
            settings.batches_in_flight,
        ));
        let patches = Arc::new(PatchCoalescer::patches(
            service.clone(),
            settings.write_batches_in_flight,
        ));
        let hub = Arc::new(ChangeHub::start(service.clone(), change_signal));
        let state = web::Data::new(State {
            service: service.clone(),
            reads: reads.clone(),
            creates: creates.clone(),
            listings: listings.clone(),
            scans: ScanListings(Arc::new(ListCoalescer::listings(service.clone(), 1))),
            patches: patches.clone(),
            exports: ExportSlots {
                slots: LongLived::new(
                    "exports",
                    settings.exports_per_caller,
                    settings.exports_in_flight,
                ),
                limits: ExportLimits {
                    max_duration: settings.export_max_duration,
                    stalled_reader: STALLED_READER,
                },
            },
            streams: StreamSlots {
                slots: LongLived::new(
                    "live streams",
                    settings.streams_per_caller,
                    settings.streams_total,
                ),
                lifetime: settings.stream_lifetime,
                keep_alive: settings.change_heartbeat,
            },
            hub: hub.clone(),
            webhooks: webhooks.clone(),
            webhook_settings: settings.webhooks.clone(),
            webhook_stats: webhook_stats.clone(),
            storage: storage.clone(),
            documents: match &settings.oidc {
                None => Documents {
                    v3_1: document_json(),
                    v3_0: document_3_0_json(),
                },
                Some(oidc) => Documents {
                    v3_1: with_openid_connect(&document_json(), &oidc.discovery_url()),
                    v3_0: with_openid_connect(&document_3_0_json(), &oidc.discovery_url()),
                },
            },
        });
        // The middleware's own data.
        let keying = web::Data::new(AddressKeying::new(settings.ipv6_prefix));
        let key_cache = web::Data::new(KeyCache::load(keys, settings.key_cache_max_age));
        let issuer = settings
            .oidc
            .clone()
            .map(|oidc| web::Data::new(Issuer::new(oidc)));
        let limiter = match settings.rate_limit {
            None => None,
            Some(limit) => {
                let limiter = RateLimiter::new(limit);
                Some(web::Data::new(match &settings.rate_limit_redis_url {
                    Some(url) => limiter.sharing(SharedBudgets::new(url)?),
                    None => limiter,
                }))
            }
        };
        let exports_open = state.exports.slots.clone();
        let metrics = web::Data::new(
            Metrics::new(storage.clone())
                .reporting_webhooks(webhook_stats.clone())
                .observing(Observed {
                    storage: storage.clone(),
                    limits_shared: limiter
                        .clone()
                        .filter(|limiter| limiter.shared().is_some())
                        .map(|limiter| {
                            Box::new(move || {
                                limiter.shared().is_some_and(SharedBudgets::is_reachable)
                            }) as Box<dyn Fn() -> bool + Send + Sync>
                        }),
                    exports_open: Box::new(move || exports_open.open_now()),
                    hub: hub.clone(),
                    reads: counts_of(&reads),
                    creates: counts_of(&creates),
                    listings: counts_of(&listings),
                    writes: counts_of(&patches),
                }),
        );
        let tasks = Background {
            metrics: metrics.clone(),
            webhooks: crate::webhooks::deliver::Dispatcher::new(
                webhooks.repository().clone(),
                service.clone(),
                hub.clone(),
                settings.webhooks.clone(),
                webhook_stats,
            )
            .yielding_to(metrics.in_flight(), settings.workers * 2),
            service,
            key_cache: key_cache.clone(),
            issuer: issuer.clone(),
            limiter: limiter.clone(),
            storage,
            hub,
            changes_retention: settings.changes_retention,
        };
        let cors_origins = settings.cors_origins.clone();
        let compress = settings.compress;
        let mut server = HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                .app_data(keying.clone())
                .app_data(key_cache.clone())
                .app_data(metrics.clone());
            let app = match &limiter {
                Some(limiter) => app.app_data(limiter.clone()),
                None => app,
            };
            let app = match &issuer {
                Some(issuer) => app.app_data(issuer.clone()),
                None => app,
            };
            app.wrap(from_fn(head_as_get))
                .wrap(Condition::new(
                    !cors_origins.is_empty(),
                    cors(&cors_origins),
                ))
                .wrap(Condition::new(compress, from_fn(compress_whole_bodies)))
                .wrap(Condition::new(compress, Compress::default()))
                .wrap(Condition::new(compress, from_fn(drop_identity_marks)))
                .wrap(TracingLogger::<RequestSpan>::new())
                .configure(configure)
        })
        .workers(settings.workers)
        // A streamed answer (a compressed one, an export, a live stream) leaves in several
        // writes: the head, then each chunk. With Nagle's algorithm a small write that follows
        // another waits for the client to acknowledge the first, and clients delay that
        // acknowledgement by up to 40 ms (measured: `docs/performance.md`, "Compression's 40 ms").
        // Every write here is a whole head or chunk, so nothing gains from being held back.
        .on_connect(|connection, _| {
            if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
        })
        // Database work runs on each worker's blocking threads. As many of them as there are
        // pooled connections is enough: more only park on the pool's lock, and on a small machine
        // every parked and woken thread costs the CPU the database needs.
        .worker_max_blocking_threads(settings.blocking_threads_per_worker)
        // A client gets 5 s to send its request head (its body: see `reading::Body`), and an idle
        // connection is closed after 15 s: idle connections cost memory and file descriptors,
        // and a client that holds thousands of them open must not be able to keep them. (Set a
        // load balancer's idle timeout below 15 s, so that it closes first.)
        .client_request_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(15))
        // Past this many connections a worker stops accepting; the rest wait in the backlog.
        .max_connections(MAX_CONNECTIONS_PER_WORKER)
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .listen(listener)
        .context("could not listen")?;
        // Signals are handled in `run_until_stopped`, which ends the change streams before the
        // server waits for requests in flight (an open stream would hold the shutdown up to its
        // timeout, then be cut).
        server = server.disable_signals();
        Ok(Self {
            port,
            server: server.run(),
            tasks,
            handle_signals: settings.handle_signals,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (by a signal, or through its handle), then returns once
    /// in-flight requests have finished or the shutdown timeout has passed.
    ///
    /// # Errors
    ///
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let hub = self.tasks.hub.clone();
        let leases = self.tasks.webhooks.leases();
        let running = self.tasks.start();
        let signals = self
            .handle_signals
            .then(|| actix_web::rt::spawn(stop_on_signal(self.server.handle(), hub.clone())));
        let outcome = self.server.await;
        hub.stop();
        running.stop();
        leases.give_back().await;
        if let Some(signals) = signals {
            signals.abort();
        }
        outcome
    }
}
