//! The instance's dispatcher and each subscription's delivering task (see [`super`]).

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_tls::connect::Resolver;
use actix_web::web;
use books_domain::{
    Assignment, BookService, Change, ChangeLimit, ChangesError, Delivery, NextStep, Progress,
    WebhookRepository, WebhookSecret,
};
use chrono::Utc;
use futures_util::StreamExt as _;
use tokio::task::JoinSet;

use super::destination::{CheckingResolver, is_internal};
use super::{Outcome, WebhookSettings, WebhookStats};
use crate::representation::schemas::ChangeResponse;

/// How many changes a task reads from the feed at once.
const PAGE: usize = 100;
/// How much of a receiver's answer is read (to let the connection be reused); the rest is
/// dropped with the connection.
const ANSWER_LIMIT: usize = 4096;

/// Finds subscriptions with changes waiting and runs a task for each (see [`super`]).
pub(crate) struct Dispatcher {
    repository: Arc<dyn WebhookRepository>,
    books: BookService,
    settings: WebhookSettings,
    stats: Arc<WebhookStats>,
    holder: String,
}

/// Gives the instance's leases back when it stops.
pub(crate) struct Leases {
    repository: Arc<dyn WebhookRepository>,
    holder: String,
}

impl Leases {
    /// Gives every lease back, so that another instance resumes at once what this one was
    /// delivering (the attempt in flight, if any, is made again: at least once).
    pub(crate) async fn give_back(self) {
        let Self { repository, holder } = self;
        match web::block(move || repository.release_all(&holder)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "could not give the webhook leases back; they expire by themselves");
            }
            Err(error) => tracing::warn!(error = %error, "the blocking pool is gone"),
        }
    }
}

/// What each task shares: the client (of this thread), and what the blocking calls take.
struct Shared {
    store: Arc<Store>,
    stats: Arc<WebhookStats>,
    client: awc::Client,
}

/// What the blocking calls take.
struct Store {
    repository: Arc<dyn WebhookRepository>,
    books: BookService,
    settings: WebhookSettings,
    holder: String,
}

/// This instance's name in leases: unique per process run, so that a restarted instance does
/// not take its predecessor's leases for its own.
fn holder() -> String {
    let mut bytes = [0_u8; 6];
    let _ = getrandom::fill(&mut bytes);
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("pid{}-{random}", std::process::id())
}

/// The client deliveries are made with: no redirects followed, every connection's addresses
/// checked, each attempt bounded.
fn client(settings: &WebhookSettings) -> awc::Client {
    let resolver = Resolver::custom(CheckingResolver {
        allow_internal: settings.allow_internal,
    });
    let connector = awc::Connector::new()
        .connector(actix_tls::connect::Connector::new(resolver).service())
        .timeout(settings.retry.timeout.min(Duration::from_secs(5)))
        // A receiver's connection is kept a while for its next delivery.
        .conn_keep_alive(Duration::from_secs(15));
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .timeout(settings.retry.timeout)
        .add_default_header(("user-agent", "books-api-webhooks"))
        .finish()
}

impl Dispatcher {
    /// A dispatcher with a holder name of its own.
    pub(crate) fn new(
        repository: Arc<dyn WebhookRepository>,
        books: BookService,
        settings: WebhookSettings,
        stats: Arc<WebhookStats>,
    ) -> Self {
        Self {
            repository,
            books,
            settings,
            stats,
            holder: holder(),
        }
    }

    /// What gives its leases back at stop.
    pub(crate) fn leases(&self) -> Leases {
        Leases {
            repository: self.repository.clone(),
            holder: self.holder.clone(),
        }
    }

    /// Runs until dropped (its tasks end with it).
    pub(crate) async fn run(self) {
        let shared = Rc::new(Shared {
            client: client(&self.settings),
            store: Arc::new(Store {
                holder: self.holder,
                repository: self.repository,
                books: self.books,
                settings: self.settings,
            }),
            stats: self.stats,
        });
        let mut tasks = JoinSet::new();
        let mut interval = actix_web::rt::time::interval(shared.store.settings.poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            interval.tick().await;
            while tasks.try_join_next().is_some() {}
            let room = shared.store.settings.in_flight.saturating_sub(tasks.len());
            if room == 0 {
                continue;
            }
            let claim = {
                let store = shared.store.clone();
                web::block(move || {
                    store
                        .repository
                        .claim(&store.holder, store.settings.lease(), room)
                })
                .await
            };
            match claim {
                Ok(Ok(assignments)) => {
                    if failing {
                        tracing::info!("webhook subscriptions are claimed again");
                        failing = false;
                    }
                    for assignment in assignments {
                        tasks.spawn_local(work(shared.clone(), assignment));
                    }
                }
                Ok(Err(error)) if !failing => {
                    tracing::warn!(error = %error, "could not claim webhook subscriptions; trying again");
                    failing = true;
                }
                Ok(Err(_)) => {}
                Err(error) => tracing::warn!(error = %error, "the blocking pool is gone"),
            }
        }
    }
}

/// Runs a blocking call of the repository or the catalogue off the async thread.
async fn off_thread<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    web::block(call)
        .await
        .map_err(|error| format!("the blocking pool is gone: {error}"))
}

/// Delivers a subscription's waiting changes, in order, until it is caught up, an attempt fails,
/// or it loses its lease.
async fn work(shared: Rc<Shared>, assignment: Assignment) {
    let Assignment {
        id,
        url,
        events,
        delivered_through,
        mut attempts,
        mut failing_since,
        secret,
    } = assignment;
    let mut from = delivered_through;
    let secret = match secret {
        Ok(secret) => secret,
        Err(reason) => {
            tracing::error!(subscription = %id, %reason, "a webhook secret cannot be read; the subscription is failing");
            settle(&shared, id, from, NextStep::GiveUp, reason).await;
            return;
        }
    };
    loop {
        let books = shared.store.books.clone();
        let limit = ChangeLimit::new(PAGE as u64).unwrap_or_default();
        let page = match off_thread(move || books.changes(from, limit)).await {
            Ok(Ok(page)) => page,
            Ok(Err(ChangesError::Expired { purged_through })) => {
                let reason = format!(
                    "changes after {from} were purged (retention) before they were delivered: \
                     the feed now starts after {purged_through}; replay from an export's position"
                );
                tracing::warn!(subscription = %id, %reason, "a webhook subscription is disabled");
                shared.stats.count(Outcome::Failed);
                settle(&shared, id, from, NextStep::Disable, reason).await;
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(subscription = %id, error = %error, "could not read changes for a webhook");
                release(&shared, id).await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "could not read changes for a webhook");
                return;
            }
        };
        let Some(last) = page.items.last().map(|change| change.seq) else {
            shared.stats.waiting(id, None);
            release(&shared, id).await;
            return;
        };
        for change in &page.items {
            if !events.includes(change.kind) {
                continue;
            }
            shared.stats.waiting(id, Some(change.at));
            let attempt_number = attempts + 1;
            let (delivery, acknowledged, gone) =
                attempt(&shared, &url, change, &secret, attempt_number).await;
            let now = Utc::now();
            let next = if acknowledged {
                NextStep::Acknowledged
            } else {
                shared.store.settings.retry.after_failure(
                    attempt_number,
                    failing_since,
                    now,
                    gone,
                    jitter(),
                )
            };
            let reason = match &next {
                NextStep::Disable => Some("the receiver answered 410 Gone".to_owned()),
                NextStep::GiveUp => Some(format!(
                    "gave up after {attempt_number} attempts over the retry window: {}",
                    delivery.error.as_deref().unwrap_or("no acknowledgement")
                )),
                _ => None,
            };
            shared.stats.count(match next {
                NextStep::Acknowledged => Outcome::Delivered,
                NextStep::Retry { .. } => Outcome::Retried,
                NextStep::GiveUp | NextStep::Disable => Outcome::Failed,
            });
            let recorded = {
                let store = shared.store.clone();
                let next = next.clone();
                let seq = change.seq;
                off_thread(move || {
                    store.repository.record(
                        &store.holder,
                        &Progress {
                            id,
                            from,
                            seq,
                            attempt: Some(&delivery),
                            next,
                            reason: reason.as_deref(),
                            lease: store.settings.lease(),
                        },
                    )
                })
                .await
            };
            let go_on = match recorded {
                Ok(Ok(go_on)) => go_on,
                Ok(Err(error)) => {
                    tracing::warn!(subscription = %id, error = %error, "could not record a webhook delivery; it will be made again");
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, "could not record a webhook delivery");
                    false
                }
            };
            if !matches!(next, NextStep::Acknowledged) || !go_on {
                return;
            }
            from = change.seq;
            attempts = 0;
            failing_since = None;
        }
        if last > from {
            // The rest of the page was changes the subscription did not ask for.
            let store = shared.store.clone();
            let recorded = off_thread(move || {
                store.repository.record(
                    &store.holder,
                    &Progress {
                        id,
                        from,
                        seq: last,
                        attempt: None,
                        next: NextStep::Acknowledged,
                        reason: None,
                        lease: store.settings.lease(),
                    },
                )
            })
            .await;
            if !matches!(recorded, Ok(Ok(true))) {
                return;
            }
            from = last;
        }
    }
}

/// Ends a subscription's deliveries for `reason`: it is failing or disabled (`next`).
async fn settle(
    shared: &Shared,
    id: books_domain::SubscriptionId,
    from: u64,
    next: NextStep,
    reason: String,
) {
    let store = shared.store.clone();
    let recorded = off_thread(move || {
        store.repository.record(
            &store.holder,
            &Progress {
                id,
                from,
                seq: from,
                attempt: None,
                next,
                reason: Some(&reason),
                lease: store.settings.lease(),
            },
        )
    })
    .await;
    match recorded {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(error = %error, "could not record a webhook's state"),
        Err(error) => tracing::warn!(%error, "could not record a webhook's state"),
    }
}

async fn release(shared: &Shared, id: books_domain::SubscriptionId) {
    let store = shared.store.clone();
    let released = off_thread(move || store.repository.release(&store.holder, id)).await;
    if let Ok(Err(error)) = released {
        tracing::warn!(error = %error, "could not give a webhook lease back; it expires by itself");
    }
}

/// A number in 0..1 for the backoff's jitter.
fn jitter() -> f64 {
    let mut bytes = [0_u8; 4];
    let _ = getrandom::fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

/// One attempt: the change, signed now, posted to the URL. Returns the log's record of it,
/// whether it was acknowledged, and whether the receiver is gone (410).
async fn attempt(
    shared: &Shared,
    url: &books_domain::WebhookUrl,
    change: &Change,
    secret: &WebhookSecret,
    number: u32,
) -> (Delivery, bool, bool) {
    let started = Instant::now();
    let at = Utc::now();
    let outcome = send(shared, url, change, secret).await;
    let (status, error) = match outcome {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (
            Some(status),
            Some(format!("the receiver answered {status}")),
        ),
        Err(error) => (None, Some(error)),
    };
    let acknowledged = error.is_none();
    let delivery = Delivery {
        seq: change.seq,
        attempt: number,
        at,
        status,
        error,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    (delivery, acknowledged, status == Some(410))
}

/// Posts the change; the receiver's status, or what went wrong.
async fn send(
    shared: &Shared,
    url: &books_domain::WebhookUrl,
    change: &Change,
    secret: &WebhookSecret,
) -> Result<u16, String> {
    let settings = &shared.store.settings;
    if !settings.allow_internal
        && let Ok(address) = url.host().parse::<IpAddr>()
        && is_internal(address)
    {
        return Err(format!("{address} is an internal address"));
    }
    let body = serde_json::to_vec(&ChangeResponse::from(change))
        .map_err(|error| format!("the change could not be written: {error}"))?;
    let id = change.seq.to_string();
    let timestamp = Utc::now().timestamp();
    let signature = secret.sign(&id, timestamp, &body);
    let deadline = Instant::now() + settings.retry.timeout;
    let mut response = shared
        .client
        .post(url.as_str())
        .insert_header(("content-type", "application/json"))
        .insert_header(("webhook-id", id))
        .insert_header(("webhook-timestamp", timestamp.to_string()))
        .insert_header(("webhook-signature", signature))
        .send_body(body)
        .await
        .map_err(|error| match error {
            awc::error::SendRequestError::Timeout => format!(
                "no answer within {} s",
                settings.retry.timeout.as_secs_f64()
            ),
            awc::error::SendRequestError::Connect(error) => {
                format!("could not connect: {error}")
            }
            awc::error::SendRequestError::Url(_) => "the URL cannot be requested".to_owned(),
            other => format!("the request failed: {other}"),
        })?;
    let status = response.status().as_u16();
    // Read a little of the answer, within what is left of the attempt's time, so that the
    // connection can serve the next delivery; a longer or slower answer is dropped with it.
    let remaining = deadline.saturating_duration_since(Instant::now());
    let _ = actix_web::rt::time::timeout(remaining, async {
        let mut read = 0;
        while let Some(Ok(chunk)) = response.next().await {
            read += chunk.len();
            if read > ANSWER_LIMIT {
                break;
            }
        }
    })
    .await;
    Ok(status)
}
