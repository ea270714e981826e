//! The work an instance does beside answering requests: numbering and purging the change feed,
//! forgetting expired idempotency keys and idle rate-limit callers, refreshing the API keys and
//! the OpenID Connect issuer's keys,
//! checking the replicas, delivering webhooks, draining the metrics' histograms; and stopping on a
//! signal.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::rt::task::JoinHandle;
use actix_web::web;
use books_application::ChangeHub;
use books_domain::{BookService, StorageHealth};
use chrono::TimeDelta;

use crate::blocking::{blocking, blocking_call};
use crate::middleware::auth::KeyCache;
use crate::middleware::observe::Metrics;
use crate::middleware::oidc::Issuer;
use crate::middleware::rate_limit::local::RateLimiter;
use crate::representation::problem::ApiError;
use crate::webhooks::deliver::Dispatcher;

/// What the background tasks work on.
pub(super) struct Background {
    pub(super) service: BookService,
    pub(super) key_cache: web::Data<KeyCache>,
    pub(super) issuer: Option<web::Data<Issuer>>,
    pub(super) limiter: Option<web::Data<RateLimiter>>,
    pub(super) storage: Arc<dyn StorageHealth>,
    pub(super) hub: Arc<ChangeHub>,
    pub(super) changes_retention: TimeDelta,
    pub(super) webhooks: Dispatcher,
    pub(super) metrics: web::Data<Metrics>,
}

/// The background tasks while they run; [`Running::stop`] ends them.
pub(super) struct Running(Vec<JoinHandle<()>>);

impl Background {
    /// Starts every task on the current (actix) runtime.
    pub(super) fn start(self) -> Running {
        let mut tasks = vec![
            actix_web::rt::spawn(forget_expired_keys_periodically(self.service.clone())),
            actix_web::rt::spawn(KeyCache::refresh_periodically(self.key_cache)),
            actix_web::rt::spawn(forget_old_changes_periodically(
                self.service.clone(),
                self.changes_retention,
            )),
            actix_web::rt::spawn(sequence_changes_continuously(self.service)),
            actix_web::rt::spawn(self.webhooks.run()),
            actix_web::rt::spawn(drain_metrics_periodically(self.metrics)),
        ];
        if let Some(issuer) = self.issuer {
            tasks.push(actix_web::rt::spawn(Issuer::refresh_periodically(issuer)));
        }
        if let Some(limiter) = self.limiter {
            tasks.push(actix_web::rt::spawn(forget_idle_callers_periodically(
                limiter,
            )));
        }
        if let Some(every) = self.storage.replica_check_interval() {
            tasks.push(actix_web::rt::spawn(check_replicas_periodically(
                self.storage,
                every,
            )));
        }
        Running(tasks)
    }
}

impl Running {
    /// Ends every task (each is a loop with nothing to finish).
    pub(super) fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

/// On SIGINT or SIGTERM: ends the change streams, then stops the server gracefully.
pub(super) async fn stop_on_signal(server: ServerHandle, hub: Arc<ChangeHub>) {
    let interrupt = actix_web::rt::signal::ctrl_c();
    #[cfg(unix)]
    {
        use actix_web::rt::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => drop(interrupt.await),
        }
    }
    #[cfg(not(unix))]
    drop(interrupt.await);
    tracing::info!("stopping: ending change streams, then finishing requests in flight");
    hub.stop();
    server.stop(true).await;
}

/// How often committed changes are numbered in the background.
const SEQUENCE_EVERY: Duration = Duration::from_millis(200);

/// Numbers committed changes as they come, whether or not anyone reads the feed, so that no
/// backlog builds up for a reader to meet (each call numbers in bounded steps). With several
/// instances each one does; they take turns, and a turn with nothing to do costs one short
/// query. A failure is logged once, and again when it clears.
async fn sequence_changes_continuously(service: BookService) {
    let mut interval = actix_web::rt::time::interval(SEQUENCE_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        interval.tick().await;
        match blocking(&service, BookService::sequence_changes).await {
            Ok(_) if failing => {
                tracing::info!("changes are numbered again");
                failing = false;
            }
            Ok(_) => {}
            Err(error) if !failing => {
                tracing::warn!(error = %error, "could not number new changes; trying again");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Purges changes older than the retention, at a pace that follows it (a tenth of it, between
/// a second and a minute: each purge goes in bounded steps through whatever is due, so a write
/// rate of any size is kept up with), on the blocking pool.
async fn forget_old_changes_periodically(service: BookService, retention: TimeDelta) {
    let every = (retention / 10)
        .to_std()
        .unwrap_or(Duration::from_secs(60))
        .clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut interval = actix_web::rt::time::interval(every);
    loop {
        interval.tick().await;
        match blocking(&service, move |s| s.forget_old_changes(retention)).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "purged changes past the retention"),
            Err(error) => tracing::warn!(error = %error, "could not purge old changes"),
        }
    }
}

/// Checks the replicas `every` so often, on the blocking pool.
async fn check_replicas_periodically(storage: Arc<dyn StorageHealth>, every: Duration) {
    let mut interval = actix_web::rt::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let storage = storage.clone();
        let checked = blocking_call(move || {
            storage.check_replicas();
            Ok::<_, ApiError>(())
        })
        .await;
        if let Err(error) = checked {
            tracing::warn!(error = %error, "could not check the replicas");
        }
    }
}

/// Folds the request durations recorded since the last pass into their histograms' buckets,
/// every 5 s. Until then the exporter keeps each duration as a sample of its own, so without this
/// the service's memory grew with every request it answered (by about 14 bytes each, 13 MiB per
/// million) for as long as nothing scraped `/metrics`.
async fn drain_metrics_periodically(metrics: web::Data<Metrics>) {
    let mut interval = actix_web::rt::time::interval(Duration::from_secs(5));
    loop {
        interval.tick().await;
        metrics.drain_histograms();
    }
}

/// Forgets callers whose rate limit is full again, once a minute, so that the limiter's memory
/// follows the callers of the last minute, not every address ever seen.
async fn forget_idle_callers_periodically(limiter: web::Data<RateLimiter>) {
    let mut interval = actix_web::rt::time::interval(Duration::from_secs(60));
    loop {
        interval.tick().await;
        limiter.forget_idle_callers();
    }
}

/// Forgets expired idempotency keys once an hour, off the request path, on the blocking pool.
/// With several instances each one purges; the deletes are idempotent, so that is harmless.
async fn forget_expired_keys_periodically(service: BookService) {
    let mut interval = actix_web::rt::time::interval(Duration::from_secs(3600));
    loop {
        interval.tick().await;
        match blocking(&service, BookService::forget_expired_keys).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "forgot expired idempotency keys"),
            Err(error) => {
                tracing::warn!(error = %error, "could not forget expired idempotency keys")
            }
        }
    }
}
