//! The gauges `/metrics` reports besides requests and the pool: what the service's parts say of
//! themselves at each scrape (replicas, shared rate limits, long-lived answers, and the batching
//! achieved), wired here so that the server only hands over what is observed.

use std::sync::Arc;

use books_application::{ChangeHub, Coalescer};
use books_domain::{ReplicaStatus, StorageHealth};

use super::Metrics;

/// A part of the service that reports how much batching it achieved.
pub(crate) type Counts = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// A reading of a coalescer's counts: requests served, and the batches they took.
pub(crate) fn counts_of<T: Send + 'static, A: Send + 'static>(
    coalescer: &Arc<Coalescer<T, A>>,
) -> Counts {
    let coalescer = Arc::clone(coalescer);
    Arc::new(move || coalescer.counts())
}

/// What the gauges observe.
pub(crate) struct Observed {
    /// The replicas, through storage's own report.
    pub(crate) storage: Arc<dyn StorageHealth>,
    /// Whether rate limits are shared through Redis now, when they are configured to be.
    pub(crate) limits_shared: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    /// Exports streaming now.
    pub(crate) exports_open: Box<dyn Fn() -> usize + Send + Sync>,
    /// The live change feed.
    pub(crate) hub: Arc<ChangeHub>,
    /// The batching of reads, creates, listings and writes.
    pub(crate) reads: Counts,
    pub(crate) creates: Counts,
    pub(crate) listings: Counts,
    pub(crate) writes: Counts,
}

impl Metrics {
    /// These metrics, with a gauge for each thing `observed` reports.
    #[must_use]
    pub(crate) fn observing(mut self, observed: Observed) -> Self {
        let Observed {
            storage,
            limits_shared,
            exports_open,
            hub,
            reads,
            creates,
            listings,
            writes,
        } = observed;
        if let Some(shared) = limits_shared {
            self = self.with_gauge(
                "rate_limit_shared",
                "1 while rate limits are shared through Redis, 0 while each instance limits on its own.",
                Box::new(move || f64::from(u8::from(shared()))),
            );
        }
        for state in storage.replicas() {
            let labels = vec![("replica", state.name.clone())];
            let (in_use, lag) = (storage.clone(), storage.clone());
            let name = state.name.clone();
            self = self.with_labeled_gauge(
                "replica_in_use",
                "1 while reads go to the replica, 0 while it is left out (down, or lagging too far).",
                labels.clone(),
                Box::new(move || {
                    replica_state(&*in_use, &name, |s| f64::from(u8::from(s.in_use)))
                }),
            );
            let name = state.name.clone();
            self = self.with_labeled_gauge(
                "replica_lag_seconds",
                "How far the replica's replay was behind the primary at the last check.",
                labels,
                Box::new(move || replica_state(&*lag, &name, |s| s.lag_seconds)),
            );
        }
        self = self
            .with_gauge(
                "exports_open",
                "Exports streaming on this instance now.",
                Box::new(move || exports_open() as f64),
            )
            .with_gauge(
                "change_streams_open",
                "Server-Sent Events streams of the change feed open on this instance.",
                Box::new(move || hub.streams() as f64),
            );
        for (served, batches, counts) in [
            (
                (
                    "book_reads_coalesced",
                    "Reads of a book by id answered so far through the read coalescer.",
                ),
                (
                    "book_read_queries",
                    "Queries the read coalescer made for them: reads per query is the batching achieved.",
                ),
                reads,
            ),
            (
                (
                    "book_creates_coalesced",
                    "Creates without an idempotency key served so far through the create coalescer.",
                ),
                (
                    "book_create_batches",
                    "Multi-row inserts (one transaction each) the create coalescer made for them.",
                ),
                creates,
            ),
            (
                (
                    "book_listings_coalesced",
                    "Listing pages served so far through the listing coalescer.",
                ),
                (
                    "book_listing_batches",
                    "Batches the listing coalescer worked on (identical pages in a batch are read once).",
                ),
                listings,
            ),
            (
                (
                    "book_writes_coalesced",
                    "Patches and replacements served so far through the write coalescer.",
                ),
                (
                    "book_write_batches",
                    "Batches the write coalescer worked on (one UPDATE for those that apply).",
                ),
                writes,
            ),
        ] {
            let other = counts.clone();
            self = self
                .with_gauge(served.0, served.1, Box::new(move || counts().0 as f64))
                .with_gauge(batches.0, batches.1, Box::new(move || other().1 as f64));
        }
        self
    }
}

/// One number of the state of the replica `name`.
fn replica_state(storage: &dyn StorageHealth, name: &str, read: fn(&ReplicaStatus) -> f64) -> f64 {
    storage
        .replicas()
        .into_iter()
        .find(|s| s.name == name)
        .map_or(0.0, |state| read(&state))
}
