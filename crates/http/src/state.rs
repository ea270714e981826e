//! What the handlers share: one typed state, built once by the server and registered as the
//! application's data, so that a handler names what it uses (`state.reads`, `state.hub`) and a
//! part cannot be forgotten at registration. (The middleware's own data, below the handlers,
//! is registered apart: the key cache, the rate limiter, the address keying and the metrics.)

use std::sync::Arc;

use books_application::{
    ChangeHub, CreateCoalescer, ListCoalescer, PatchCoalescer, ReadCoalescer, ScanListings,
};
use books_domain::{BookService, StorageHealth, WebhookService};

use crate::long_lived::{ExportSlots, StreamSlots};
use crate::webhooks::{WebhookSettings, WebhookStats};

/// The handlers' state.
pub(crate) struct State {
    /// The use cases.
    pub(crate) service: BookService,
    /// Reads by id, batched.
    pub(crate) reads: Arc<ReadCoalescer>,
    /// Creates without an idempotency key, batched.
    pub(crate) creates: Arc<CreateCoalescer>,
    /// Listing pages, batched.
    pub(crate) listings: Arc<ListCoalescer>,
    /// Listings too short for the trigram indexes, in a lane of their own.
    pub(crate) scans: ScanListings,
    /// Patches and replacements, batched.
    pub(crate) patches: Arc<PatchCoalescer>,
    /// The exports' slots and bounds.
    pub(crate) exports: ExportSlots,
    /// The live streams' slots and bounds.
    pub(crate) streams: StreamSlots,
    /// The instance's live change feed.
    pub(crate) hub: Arc<ChangeHub>,
    /// The webhook subscriptions.
    pub(crate) webhooks: WebhookService,
    /// How webhooks are delivered (whether internal addresses are allowed).
    pub(crate) webhook_settings: WebhookSettings,
    /// What deliveries report to `/metrics`.
    pub(crate) webhook_stats: Arc<WebhookStats>,
    /// What storage says of itself, for readiness.
    pub(crate) storage: Arc<dyn StorageHealth>,
    /// The OpenAPI document, rendered once at start.
    pub(crate) documents: Documents,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

/// The OpenAPI document, rendered once at start in both versions.
#[derive(Debug)]
pub(crate) struct Documents {
    pub(crate) v3_1: String,
    pub(crate) v3_0: String,
}
