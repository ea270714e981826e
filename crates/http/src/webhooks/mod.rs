//! Delivering webhooks: each instance claims the subscriptions that have changes waiting, and
//! works each one on a task of its own, one change at a time, in seq order.
//!
//! - **Claims** ([`deliver::Dispatcher`]): every [`WebhookSettings::poll`] the instance leases
//!   the subscriptions that are due (active, behind the feed, no retry waiting for later, lease
//!   free or expired). The lease is a row update that expires ([`WebhookSettings::lease`]), so a
//!   dead instance's subscriptions pass to another by themselves, and PgBouncer in transaction
//!   mode is fine; a stopping instance gives its leases back.
//! - **A subscription's task** follows the instance's change hub (`books_application::live_feed`)
//!   from the subscription's position, as a live stream does: the hub reads each new change once
//!   for every task and stream, and a task that is behind reads pages from storage on its own. It
//!   skips the changes the subscription did not ask for and delivers the next one; the outcome is
//!   recorded before the next change is sent, so an acknowledged change is never sent again except
//!   when the instance dies between the receiver's 2xx and that record. While nothing comes, the
//!   task renews its lease (every third of it). A failed attempt records when to retry, gives the
//!   lease back and ends the task; a later claim resumes.
//! - **Records** go through one lane per instance (`deliver::Recorder`): the reports that arrive
//!   while a batch is being written go together, in one transaction, so a hundred subscriptions
//!   acknowledging one change cost one commit, and webhooks hold at most one pooled connection for
//!   writing.
//! - **Safety** ([`destination`]): internal addresses are refused at subscription and at every
//!   connection, redirects are not followed, a receiver's answer is read up to 4 KiB, and each
//!   attempt is bounded by the timeout: a slow receiver holds only its own subscription's task.

pub(crate) mod deliver;
pub(crate) mod destination;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use books_domain::{RetryPolicy, SubscriptionId};
use chrono::{DateTime, Utc};

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Deliver to loopback, private and link-local addresses too (tests, and networks where the
    /// receivers are internal). Off by default.
    pub allow_internal: bool,
    /// Retries: the first within 5 s, at most an hour apart, for 3 days; 10 s per attempt.
    pub retry: RetryPolicy,
    /// How often an instance looks for subscriptions with changes waiting (200 ms).
    pub poll: Duration,
    /// Certificates (DER) trusted for `https` receivers beside the public roots: a private
    /// certificate authority, say.
    pub trusted_roots: Vec<Vec<u8>>,
    /// The most subscriptions an instance works at once (each a task following the change hub,
    /// not a thread).
    pub in_flight: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_internal: false,
            retry: RetryPolicy::default(),
            poll: Duration::from_millis(200),
            trusted_roots: Vec::new(),
            in_flight: 1000,
        }
    }
}

impl WebhookSettings {
    /// How long a claim lasts without news from its holder: long enough for an attempt and its
    /// record, short enough that a dead instance's subscriptions soon pass to another.
    pub fn lease(&self) -> Duration {
        self.retry.timeout * 2 + Duration::from_secs(5)
    }
}

/// What `/metrics` reports of deliveries.
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    /// For each subscription behind the feed: when its oldest undelivered change was made.
    oldest_waiting: Mutex<HashMap<SubscriptionId, DateTime<Utc>>>,
}

/// How an attempt ended, for the counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// Acknowledged.
    Delivered,
    /// Failed; it will be retried.
    Retried,
    /// Failed, and the subscription gave up (failing) or was disabled.
    Failed,
}

impl WebhookStats {
    pub(crate) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Delivered => &self.delivered,
            Outcome::Retried => &self.retried,
            Outcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The subscription's next change to deliver was made `at` (`None`: it is caught up).
    pub(crate) fn waiting(&self, id: SubscriptionId, at: Option<DateTime<Utc>>) {
        if let Ok(mut waiting) = self.oldest_waiting.lock() {
            match at {
                Some(at) => waiting.insert(id, at),
                None => waiting.remove(&id),
            };
        }
    }

    /// Forgets a deleted subscription.
    pub(crate) fn forget(&self, id: SubscriptionId) {
        self.waiting(id, None);
    }

    /// The counts of attempts by outcome.
    pub(crate) fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("delivered", self.delivered.load(Ordering::Relaxed)),
            ("retried", self.retried.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }

    /// Each waiting subscription's lag: seconds since its oldest undelivered change was made.
    pub(crate) fn lags(&self) -> Vec<(SubscriptionId, f64)> {
        let now = Utc::now();
        self.oldest_waiting
            .lock()
            .map(|waiting| {
                waiting
                    .iter()
                    .map(|(id, at)| {
                        let lag = (now - *at).num_milliseconds().max(0) as f64 / 1000.0;
                        (*id, lag)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
