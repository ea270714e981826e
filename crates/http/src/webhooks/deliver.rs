//! The instance's dispatcher and each subscription's delivering task (see [`super`]).

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_tls::connect::Resolver;
use actix_web::web;
use books_application::{ChangeHub, FollowError};
use books_domain::{
    Assignment, BookService, Change, ChangesError, Delivery, NextStep, Progress, SubscriptionId,
    WebhookRepository, WebhookSecret,
};
use chrono::Utc;
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::destination::{CheckingResolver, is_internal};
use super::{Outcome, WebhookSettings, WebhookStats};
use crate::representation::schemas::ChangeResponse;

/// How much of a receiver's answer is read (to let the connection be reused); the rest is
/// dropped with the connection.
const ANSWER_LIMIT: usize = 4096;

/// Finds subscriptions with changes waiting and runs a task for each (see [`super`]).
pub(crate) struct Dispatcher {
    repository: Arc<dyn WebhookRepository>,
    books: BookService,
    hub: Arc<ChangeHub>,
    settings: WebhookSettings,
    stats: Arc<WebhookStats>,
    holder: String,
    load: Load,
}

/// How busy the instance is: deliveries slow down while it answers many requests.
#[derive(Clone)]
pub(crate) struct Load {
    /// Requests in flight now.
    in_flight: Arc<AtomicUsize>,
    /// From this many on, the instance is busy.
    busy_at: usize,
}

impl Load {
    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) >= self.busy_at
    }
}

/// While the instance is busy, the record lane writes at most one batch per this long: every
/// delivery waits for its record, so this paces them all (with 100 subscriptions, at most 2 000
/// deliveries a second), and leaves the cores to the requests. Idle, it writes as fast as it can.
const PACED_CYCLE: Duration = Duration::from_millis(50);

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

/// What each task shares: the client (of this thread), the hub it follows, the lane that
/// records, and what the blocking calls take.
struct Shared {
    store: Arc<Store>,
    stats: Arc<WebhookStats>,
    client: awc::Client,
    hub: Arc<ChangeHub>,
    recorder: Recorder,
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
/// checked, each attempt bounded, TLS for `https`.
fn client(settings: &WebhookSettings) -> awc::Client {
    let resolver = Resolver::custom(CheckingResolver {
        allow_internal: settings.allow_internal,
    });
    let connector = awc::Connector::new()
        .connector(actix_tls::connect::Connector::new(resolver).service())
        .rustls_0_23(crate::tls::client_config(
            &settings.trusted_roots,
            "WEBHOOKS_CA_FILE",
        ))
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
        hub: Arc<ChangeHub>,
        settings: WebhookSettings,
        stats: Arc<WebhookStats>,
    ) -> Self {
        Self {
            repository,
            books,
            hub,
            settings,
            stats,
            holder: holder(),
            load: Load {
                in_flight: Arc::new(AtomicUsize::new(0)),
                busy_at: usize::MAX,
            },
        }
    }

    /// Slows deliveries down while `in_flight` requests are `busy_at` or more.
    #[must_use]
    pub(crate) fn yielding_to(mut self, in_flight: Arc<AtomicUsize>, busy_at: usize) -> Self {
        self.load = Load { in_flight, busy_at };
        self
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
        let store = Arc::new(Store {
            holder: self.holder,
            repository: self.repository,
            books: self.books,
            settings: self.settings,
        });
        let shared = Rc::new(Shared {
            client: client(&store.settings),
            recorder: Recorder::start(store.clone(), self.load),
            hub: self.hub,
            store,
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

/// Runs a blocking call of the repository off the async thread.
async fn off_thread<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    web::block(call)
        .await
        .map_err(|error| format!("the blocking pool is gone: {error}"))
}

/// How long one following of the hub lasts before the task follows again (it resumes from its
/// position; the hub's streams end after their lifetime).
const FOLLOW_FOR: Duration = Duration::from_secs(600);

/// Delivers a subscription's changes, in order, as the hub broadcasts them (or as it reads them
/// from storage while the subscription is behind), for as long as it holds the lease: until an
/// attempt fails (a retry waits without a lease), the subscription gives up or is disabled,
/// paused or changed, or the instance stops. While nothing comes it renews its lease, and
/// records how far it has skipped changes it did not ask for.
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
    let renew_every = shared.store.settings.lease() / 3;
    loop {
        let followed = shared
            .hub
            .follow(shared.store.books.clone(), from, FOLLOW_FOR, ())
            .await;
        let changes = match followed {
            Ok(changes) => changes,
            Err(FollowError::Changes(ChangesError::Expired { purged_through })) => {
                let reason = format!(
                    "changes after {from} were purged (retention) before they were delivered: \
                     the feed now starts after {purged_through}; replay from an export's position"
                );
                tracing::warn!(subscription = %id, %reason, "a webhook subscription is disabled");
                shared.stats.count(Outcome::Failed);
                settle(&shared, id, from, NextStep::Disable, reason).await;
                return;
            }
            Err(FollowError::Stopped) => return,
            Err(FollowError::Changes(error)) => {
                tracing::warn!(subscription = %id, error = %error, "could not read changes for a webhook; it is claimed again later");
                release(&shared, id).await;
                return;
            }
        };
        tokio::pin!(changes);
        // How far the subscription may move without a delivery: past changes it did not ask for.
        let mut skipped_to = from;
        let mut delivered_since_renewal = false;
        let mut renew = actix_web::rt::time::interval_at(
            tokio::time::Instant::now() + renew_every,
            renew_every,
        );
        loop {
            let change = tokio::select! {
                change = changes.next() => change,
                _ = renew.tick() => {
                    let go_on = shared
                        .recorder
                        .record(Record {
                            id,
                            from,
                            seq: skipped_to,
                            attempt: None,
                            next: NextStep::Acknowledged,
                            reason: None,
                        })
                        .await;
                    if !go_on {
                        // Paused, changed or taken over: this instance no longer reports it.
                        shared.stats.forget(id);
                        return;
                    }
                    from = skipped_to;
                    if !delivered_since_renewal {
                        shared.stats.waiting(id, None);
                    }
                    delivered_since_renewal = false;
                    continue;
                }
            };
            let Some(change) = change else {
                // The following ended (its lifetime, or a read that failed): follow again.
                break;
            };
            if !events.includes(change.kind) {
                skipped_to = change.seq;
                continue;
            }
            delivered_since_renewal = true;
            shared.stats.waiting(id, Some(change.at));
            let attempt_number = attempts + 1;
            let (delivery, acknowledged, gone) =
                attempt(&shared, &url, &change, &secret, attempt_number).await;
            let next = if acknowledged {
                NextStep::Acknowledged
            } else {
                shared.store.settings.retry.after_failure(
                    attempt_number,
                    failing_since,
                    Utc::now(),
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
            let go_on = shared
                .recorder
                .record(Record {
                    id,
                    from,
                    seq: change.seq,
                    attempt: Some(delivery),
                    next: next.clone(),
                    reason,
                })
                .await;
            if !matches!(next, NextStep::Acknowledged) {
                // Waiting for a retry, failing or disabled: still behind, its lag stays reported.
                return;
            }
            if !go_on {
                // Paused, changed or taken over: this instance no longer reports it.
                shared.stats.forget(id);
                return;
            }
            from = change.seq;
            skipped_to = from;
            attempts = 0;
            failing_since = None;
        }
    }
}

/// What a task reports, to be written with the other tasks' reports in one transaction.
struct Record {
    id: SubscriptionId,
    from: u64,
    seq: u64,
    attempt: Option<Delivery>,
    next: NextStep,
    reason: Option<String>,
}

/// The one lane that writes the tasks' reports: those that arrive while a batch is being
/// written wait and go together, in one transaction (one commit), so that a hundred
/// subscriptions acknowledging the same change cost one commit, not a hundred, and webhooks
/// never hold more than one of the pool's connections.
struct Recorder {
    sender: mpsc::UnboundedSender<(Record, oneshot::Sender<bool>)>,
}

/// The most reports written in one transaction.
const RECORD_BATCH: usize = 256;

impl Recorder {
    /// The lane, writing through `store` (runs until its last sender is gone).
    fn start(store: Arc<Store>, load: Load) -> Self {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(Record, oneshot::Sender<bool>)>();
        actix_web::rt::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < RECORD_BATCH {
                    match receiver.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let started = tokio::time::Instant::now();
                let (records, replies): (Vec<Record>, Vec<oneshot::Sender<bool>>) =
                    batch.into_iter().unzip();
                let store = store.clone();
                let written = off_thread(move || {
                    let lease = store.settings.lease();
                    let progress: Vec<Progress<'_>> = records
                        .iter()
                        .map(|record| Progress {
                            id: record.id,
                            from: record.from,
                            seq: record.seq,
                            attempt: record.attempt.as_ref(),
                            next: record.next.clone(),
                            reason: record.reason.as_deref(),
                            lease,
                        })
                        .collect();
                    store.repository.record_many(&store.holder, &progress)
                })
                .await;
                let outcomes = match written {
                    Ok(Ok(outcomes)) => outcomes,
                    Ok(Err(error)) => {
                        tracing::warn!(error = %error, "could not record webhook deliveries; they will be made again");
                        Vec::new()
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not record webhook deliveries");
                        Vec::new()
                    }
                };
                for (index, reply) in replies.into_iter().enumerate() {
                    let _ = reply.send(outcomes.get(index).copied().unwrap_or(false));
                }
                if load.busy() {
                    actix_web::rt::time::sleep_until(started + PACED_CYCLE).await;
                }
            }
        });
        Self { sender }
    }

    /// Writes `record`; true when the task may go on (it still holds the lease, and the
    /// subscription is active and where the task had it).
    async fn record(&self, record: Record) -> bool {
        let (reply, answer) = oneshot::channel();
        if self.sender.send((record, reply)).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// Ends a subscription's deliveries for `reason`: it is failing or disabled (`next`).
async fn settle(shared: &Shared, id: SubscriptionId, from: u64, next: NextStep, reason: String) {
    shared
        .recorder
        .record(Record {
            id,
            from,
            seq: from,
            attempt: None,
            next,
            reason: Some(reason),
        })
        .await;
}

async fn release(shared: &Shared, id: SubscriptionId) {
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
