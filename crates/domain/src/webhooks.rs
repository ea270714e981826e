//! Webhooks: the change feed pushed to subscribers, signed, in order, retried, replayable.
//!
//! A [`Subscription`] belongs to the caller that made it (its [`Owner`]) and follows the feed
//! from its `delivered_through` position: each change it asked for is delivered once the one
//! before it was acknowledged, so a receiver sees them in `seq` order, one at a time. A delivery
//! that is not acknowledged is tried again after [`RetryPolicy::delay`], for the policy's window;
//! then the subscription is [`SubscriptionStatus::Failing`] until its owner resumes it. Every
//! attempt is signed as the Standard Webhooks specification says ([`WebhookSecret::sign`]).
//!
//! The delivering itself (HTTP, timers) is the caller's: this module says what to do next
//! ([`RetryPolicy::after_failure`]), and the [`WebhookRepository`] port keeps the progress, so a
//! restart loses nothing, and hands each subscription to one worker at a time through an
//! expiring lease ([`WebhookRepository::claim`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{KeyInit as _, Mac as _};
use thiserror::Error;

use crate::{ChangeKind, Principal, StorageError, TextError};

/// The most subscriptions one caller may hold.
pub const MAX_SUBSCRIPTIONS: usize = 20;
/// The longest URL a subscription may have.
pub const MAX_URL_CHARS: usize = 2048;
/// The longest description: a book's text rule (see [`subscription_description`]).
pub const MAX_DESCRIPTION_CHARS: usize = crate::MAX_TEXT_CHARS;
/// How many attempts each subscription's log keeps.
pub const DELIVERY_LOG: usize = 100;

/// Reads a subscription's description as a book's genre is read: trimmed, blank meaning none,
/// at most [`MAX_DESCRIPTION_CHARS`] characters and no control character (PostgreSQL's text
/// holds no NUL, and a log or a dashboard showing it should not be steered by escapes).
///
/// ```
/// use books_domain::subscription_description as description;
/// assert_eq!(description("  ratings copy ")?.as_deref(), Some("ratings copy"));
/// assert_eq!(description("   ")?, None);
/// assert!(description("ratings\u{0}copy").is_err());
/// # Ok::<(), books_domain::TextError>(())
/// ```
///
/// # Errors
///
/// [`TextError`] when the trimmed text is too long or holds a control character.
pub fn subscription_description(raw: &str) -> Result<Option<String>, TextError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    crate::book::checked_text(raw).map(Some)
}

/// A subscription's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(i64);

impl SubscriptionId {
    /// Wraps a raw id (positive).
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The raw id.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who a subscription belongs to: an opaque, never reused identity of the caller (an API key's
/// digest). For any other caller the subscription does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(Vec<u8>);

impl Owner {
    /// The owner that `principal` is.
    pub fn of(principal: &Principal) -> Self {
        Self(principal.key.0.to_vec())
    }

    /// An owner from its stored bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Its bytes, for storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Where deliveries go: an absolute `http` or `https` URL with a host, at most
/// [`MAX_URL_CHARS`] long, without credentials or a fragment. Whether its host may be reached
/// (not a private address, say) is the delivering side's question: it needs name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: String,
    host: String,
    port: u16,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct InvalidUrl(pub &'static str);

impl WebhookUrl {
    /// Checks a raw URL.
    ///
    /// ```
    /// use books_domain::WebhookUrl;
    /// let url = WebhookUrl::parse("https://hooks.example:8443/books?x=1")?;
    /// assert_eq!((url.host(), url.port()), ("hooks.example", 8443));
    /// assert!(WebhookUrl::parse("ftp://hooks.example/").is_err());
    /// assert!(WebhookUrl::parse("http://user:pw@hooks.example/").is_err());
    /// # Ok::<(), books_domain::InvalidUrl>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidUrl`], saying what is wrong.
    pub fn parse(raw: &str) -> Result<Self, InvalidUrl> {
        if raw.chars().count() > MAX_URL_CHARS {
            return Err(InvalidUrl("must be at most 2048 characters"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidUrl("must not contain white space"));
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or(InvalidUrl("must be an absolute http or https URL"))?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(InvalidUrl("must be an http or https URL")),
        };
        if rest.contains('#') {
            return Err(InvalidUrl("must not have a fragment"));
        }
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(InvalidUrl("must not hold credentials"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or(InvalidUrl("has a malformed IPv6 host"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(InvalidUrl("has a malformed IPv6 host"));
            }
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && (host.contains(':')
                || host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
        if !valid_host {
            return Err(InvalidUrl("must have a host"));
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or(InvalidUrl("has an invalid port"))?,
        };
        Ok(Self {
            url: raw.to_owned(),
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Its host: a name, or an IP address (without an IPv6 address's brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its port (80 or 443 when none is given).
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Which kinds of change a subscription receives (never none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFilter {
    created: bool,
    updated: bool,
    deleted: bool,
}

impl Default for EventFilter {
    fn default() -> Self {
        Self {
            created: true,
            updated: true,
            deleted: true,
        }
    }
}

/// The events given to [`EventFilter::parse`] break the rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("must list at least one of created, updated and deleted, each at most once")]
pub struct InvalidEvents;

impl EventFilter {
    /// The kinds named (each of `created`, `updated`, `deleted` at most once, at least one).
    ///
    /// # Errors
    ///
    /// [`InvalidEvents`] otherwise.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, InvalidEvents> {
        let mut filter = Self {
            created: false,
            updated: false,
            deleted: false,
        };
        for name in names {
            let kind = ChangeKind::parse(name).ok_or(InvalidEvents)?;
            let slot = filter.slot(kind);
            if std::mem::replace(slot, true) {
                return Err(InvalidEvents);
            }
        }
        if filter.names().is_empty() {
            return Err(InvalidEvents);
        }
        Ok(filter)
    }

    fn slot(&mut self, kind: ChangeKind) -> &mut bool {
        match kind {
            ChangeKind::Created => &mut self.created,
            ChangeKind::Updated => &mut self.updated,
            ChangeKind::Deleted => &mut self.deleted,
        }
    }

    /// True when changes of `kind` are delivered.
    pub fn includes(self, kind: ChangeKind) -> bool {
        match kind {
            ChangeKind::Created => self.created,
            ChangeKind::Updated => self.updated,
            ChangeKind::Deleted => self.deleted,
        }
    }

    /// The kinds' names, in the feed's order of kinds.
    pub fn names(self) -> Vec<&'static str> {
        [
            ChangeKind::Created,
            ChangeKind::Updated,
            ChangeKind::Deleted,
        ]
        .into_iter()
        .filter(|kind| self.includes(*kind))
        .map(ChangeKind::name)
        .collect()
    }
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    /// Changes are delivered.
    Active,
    /// Its owner paused it: nothing is delivered until it is made active again.
    Paused,
    /// A change could not be delivered for the whole retry window: nothing is delivered until
    /// its owner makes it active again; it then continues where it stopped.
    Failing,
    /// The receiver answered `410 Gone`, or the change it needs next was purged.
    Disabled,
}

impl SubscriptionStatus {
    /// The status as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Failing => "failing",
            Self::Disabled => "disabled",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Active, Self::Paused, Self::Failing, Self::Disabled]
            .into_iter()
            .find(|status| status.name() == name)
    }
}

/// A subscription, as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its id.
    pub id: SubscriptionId,
    /// Where deliveries go.
    pub url: WebhookUrl,
    /// Which changes it receives.
    pub events: EventFilter,
    /// Its owner's words for it.
    pub description: Option<String>,
    /// Where it stands.
    pub status: SubscriptionStatus,
    /// Every change up to this seq was delivered (or is not one it asked for).
    pub delivered_through: u64,
    /// Why the last attempt failed, until one succeeds.
    pub last_error: Option<String>,
    /// When the next attempt is due, while a change waits to be retried.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// What a new subscription is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// Where deliveries go.
    pub url: WebhookUrl,
    /// Which changes it receives.
    pub events: EventFilter,
    /// Its owner's words for it.
    pub description: Option<String>,
    /// Deliver the changes after this seq; `None` for the newest seq now (only what comes next).
    pub after: Option<u64>,
}

/// The status an owner may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Deliver again (from where it stopped).
    Active,
    /// Stop delivering.
    Paused,
}

/// A change to a subscription; `None` leaves a member as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionPatch {
    /// A new URL.
    pub url: Option<WebhookUrl>,
    /// New events.
    pub events: Option<EventFilter>,
    /// A new description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// Resume or pause.
    pub status: Option<Resume>,
}

/// One attempt to deliver a change, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The change's seq.
    pub seq: u64,
    /// 1 for the first attempt of this change, and so on.
    pub attempt: u32,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The receiver's status code, when it answered.
    pub status: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// The secret a subscription's deliveries are signed with: 32 random bytes, shown to the owner
/// once as `whsec_` + their base64.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret([u8; 32]);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

impl WebhookSecret {
    /// A new random secret.
    ///
    /// # Errors
    ///
    /// When the system has no randomness to give.
    pub fn generate() -> Result<Self, StorageError> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes).map_err(|error| {
            StorageError::Unknown(anyhow::anyhow!(
                "the system has no randomness to give: {error}"
            ))
        })?;
        Ok(Self(bytes))
    }

    /// A secret from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Its bytes, for storage.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// As its owner is shown it: `whsec_` + base64.
    pub fn expose(&self) -> String {
        format!("whsec_{}", BASE64.encode(self.0))
    }

    /// The `webhook-signature` header of one attempt: `v1,` + base64 of HMAC-SHA256 over
    /// `{id}.{timestamp}.{body}` (Standard Webhooks).
    ///
    /// ```
    /// use books_domain::WebhookSecret;
    /// let secret = WebhookSecret::from_bytes([7; 32]);
    /// let signature = secret.sign("12", 1_700_000_000, b"{}");
    /// assert!(signature.starts_with("v1,") && signature.len() == 3 + 44);
    /// assert_ne!(signature, secret.sign("12", 1_700_000_001, b"{}"));
    /// ```
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry comes at most this long after the first failure (5 s).
    pub first: Duration,
    /// Retries are at most this far apart (an hour).
    pub cap: Duration,
    /// A change is retried for this long after its first failure (3 days); then the
    /// subscription is failing.
    pub window: TimeDelta,
    /// An attempt not acknowledged within this long failed (10 s).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(5),
            cap: Duration::from_secs(3600),
            window: TimeDelta::days(3),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// The change was acknowledged: go on with the next one.
    Acknowledged,
    /// Try the same change again at `at`.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Since when the change has been failing (kept across retries).
        failing_since: DateTime<Utc>,
    },
    /// The retry window has passed: the subscription is failing.
    GiveUp,
    /// The receiver is gone, or the change is: the subscription is disabled.
    Disable,
}

impl RetryPolicy {
    /// How long to wait after the `failures`-th failed attempt of a change: doubling from
    /// [`RetryPolicy::first`], capped at [`RetryPolicy::cap`], less up to half at random
    /// (`jitter` in 0..1), so that receivers that come back are not met by every retry at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use books_domain::RetryPolicy;
    /// let policy = RetryPolicy::default();
    /// assert_eq!(policy.delay(1, 0.0), Duration::from_secs(5));
    /// assert_eq!(policy.delay(1, 0.999_999).as_millis(), 2_500);
    /// assert_eq!(policy.delay(2, 0.0), Duration::from_secs(10));
    /// assert_eq!(policy.delay(40, 0.0), Duration::from_secs(3600));
    /// ```
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let doubled = self
            .first
            .saturating_mul(1_u32 << failures.saturating_sub(1).min(30));
        let full = doubled.min(self.cap);
        full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
    }

    /// What follows a failed attempt: the `failures`-th of a change that has been failing since
    /// `failing_since` (`None`: this was its first failure). `gone` says the receiver answered
    /// `410 Gone`.
    pub fn after_failure(
        &self,
        failures: u32,
        failing_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        gone: bool,
        jitter: f64,
    ) -> NextStep {
        if gone {
            return NextStep::Disable;
        }
        let failing_since = failing_since.unwrap_or(now);
        let at =
            now + TimeDelta::from_std(self.delay(failures, jitter)).unwrap_or(TimeDelta::hours(1));
        if at - failing_since > self.window {
            return NextStep::GiveUp;
        }
        NextStep::Retry { at, failing_since }
    }
}

/// What a worker needs to deliver a subscription's next changes, while it holds its lease.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The subscription.
    pub id: SubscriptionId,
    /// Where its deliveries go.
    pub url: WebhookUrl,
    /// Which changes it receives.
    pub events: EventFilter,
    /// Where it stands: the next change to deliver is the first after this.
    pub delivered_through: u64,
    /// How many attempts the next change has had.
    pub attempts: u32,
    /// Since when the next change has been failing, if it has.
    pub failing_since: Option<DateTime<Utc>>,
    /// The signing secret, or why it cannot be read (it was sealed with another key).
    pub secret: Result<WebhookSecret, String>,
}

/// Why a subscription use case failed.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// The caller has no subscription with this id.
    #[error("no subscription {0}")]
    NotFound(SubscriptionId),
    /// The caller already holds [`MAX_SUBSCRIPTIONS`].
    #[error("a caller may hold at most {MAX_SUBSCRIPTIONS} subscriptions")]
    TooMany,
    /// The position asked for is not in the feed (past its newest change, or purged).
    #[error(transparent)]
    Position(#[from] crate::ChangesError),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Storage of subscriptions and their progress.
pub trait WebhookRepository: Send + Sync + 'static {
    /// Stores a new active subscription, unless `owner` holds [`MAX_SUBSCRIPTIONS`] already.
    /// It starts after `new.after`, or after the newest seq now.
    ///
    /// # Errors
    ///
    /// [`WebhookError::TooMany`]; [`WebhookError::Position`] when `after` is past the newest
    /// change or already purged.
    fn create(
        &self,
        owner: &Owner,
        new: &NewSubscription,
        secret: &WebhookSecret,
    ) -> Result<Subscription, WebhookError>;

    /// The owner's subscriptions, by id.
    ///
    /// # Errors
    ///
    /// When storage fails.
    fn list(&self, owner: &Owner) -> Result<Vec<Subscription>, StorageError>;

    /// One of the owner's subscriptions.
    ///
    /// # Errors
    ///
    /// [`WebhookError::NotFound`] when the owner has none with this id.
    fn get(&self, owner: &Owner, id: SubscriptionId) -> Result<Subscription, WebhookError>;

    /// Changes one of the owner's subscriptions. Making it active clears its retry state, so
    /// that the change it stopped at is tried at once.
    ///
    /// # Errors
    ///
    /// [`WebhookError::NotFound`].
    fn update(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        patch: &SubscriptionPatch,
    ) -> Result<Subscription, WebhookError>;

    /// Deletes one of the owner's subscriptions, with its log.
    ///
    /// # Errors
    ///
    /// [`WebhookError::NotFound`].
    fn delete(&self, owner: &Owner, id: SubscriptionId) -> Result<(), WebhookError>;

    /// The latest attempts of one of the owner's subscriptions, newest first.
    ///
    /// # Errors
    ///
    /// [`WebhookError::NotFound`].
    fn deliveries(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        limit: usize,
    ) -> Result<Vec<Delivery>, WebhookError>;

    /// Moves one of the owner's subscriptions back (or forward) to `after`, clearing its retry
    /// state: every change after `after` is delivered again.
    ///
    /// # Errors
    ///
    /// [`WebhookError::NotFound`]; [`WebhookError::Position`] when `after` is past the newest
    /// change or already purged.
    fn rewind(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        after: u64,
    ) -> Result<Subscription, WebhookError>;

    /// Leases up to `max` active subscriptions that have changes to deliver and no attempt
    /// waiting for later, and whose lease is free or expired, to `holder` for `lease`.
    ///
    /// # Errors
    ///
    /// When storage fails.
    fn claim(
        &self,
        holder: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Assignment>, StorageError>;

    /// Records an attempt of the change `seq` and what follows it (or, with no attempt, moves
    /// past changes the subscription did not ask for), and extends the lease, if `holder` still
    /// holds the subscription and it still stands at `from` (else nothing is written and the
    /// answer is false: the worker must stop).
    ///
    /// # Errors
    ///
    /// When storage fails.
    fn record(&self, holder: &str, progress: &Progress<'_>) -> Result<bool, StorageError> {
        Ok(self
            .record_many(holder, std::slice::from_ref(progress))?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// Records several workers' reports at once (one transaction); an answer for each, in order,
    /// as [`WebhookRepository::record`] gives.
    ///
    /// # Errors
    ///
    /// When storage fails: nothing is recorded.
    fn record_many(
        &self,
        holder: &str,
        reports: &[Progress<'_>],
    ) -> Result<Vec<bool>, StorageError>;

    /// Gives the lease back.
    ///
    /// # Errors
    ///
    /// When storage fails.
    fn release(&self, holder: &str, id: SubscriptionId) -> Result<(), StorageError>;

    /// Gives back every lease `holder` has (it is stopping), so that another instance takes
    /// its subscriptions at once rather than when the leases expire.
    ///
    /// # Errors
    ///
    /// When storage fails.
    fn release_all(&self, holder: &str) -> Result<(), StorageError>;
}

/// What a worker reports to [`WebhookRepository::record`].
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// The subscription.
    pub id: SubscriptionId,
    /// Where it stood when the worker read it.
    pub from: u64,
    /// The change attempted, or skipped through.
    pub seq: u64,
    /// The attempt, if one was made (none when skipping changes it did not ask for).
    pub attempt: Option<&'a Delivery>,
    /// What follows.
    pub next: NextStep,
    /// Why, for [`NextStep::GiveUp`] and [`NextStep::Disable`] (kept as the last error).
    pub reason: Option<&'a str>,
    /// How long to extend the lease.
    pub lease: Duration,
}

/// The subscription use cases.
#[derive(Clone)]
pub struct WebhookService {
    repository: Arc<dyn WebhookRepository>,
}

impl fmt::Debug for WebhookService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService").finish_non_exhaustive()
    }
}

impl WebhookService {
    /// A service over `repository`.
    pub fn new(repository: impl WebhookRepository) -> Self {
        Self {
            repository: Arc::new(repository),
        }
    }

    /// The repository, for the delivering side.
    pub fn repository(&self) -> &Arc<dyn WebhookRepository> {
        &self.repository
    }

    /// Creates a subscription and returns it with its secret, which is shown once.
    ///
    /// # Errors
    ///
    /// As [`WebhookRepository::create`].
    pub fn create(
        &self,
        owner: &Owner,
        new: &NewSubscription,
    ) -> Result<(Subscription, WebhookSecret), WebhookError> {
        let secret = WebhookSecret::generate()?;
        let subscription = self.repository.create(owner, new, &secret)?;
        Ok((subscription, secret))
    }

    /// The owner's subscriptions.
    ///
    /// # Errors
    ///
    /// When storage fails.
    pub fn list(&self, owner: &Owner) -> Result<Vec<Subscription>, StorageError> {
        self.repository.list(owner)
    }

    /// One subscription.
    ///
    /// # Errors
    ///
    /// As [`WebhookRepository::get`].
    pub fn get(&self, owner: &Owner, id: SubscriptionId) -> Result<Subscription, WebhookError> {
        self.repository.get(owner, id)
    }

    /// Changes a subscription.
    ///
    /// # Errors
    ///
    /// As [`WebhookRepository::update`].
    pub fn update(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        patch: &SubscriptionPatch,
    ) -> Result<Subscription, WebhookError> {
        self.repository.update(owner, id, patch)
    }

    /// Deletes a subscription.
    ///
    /// # Errors
    ///
    /// As [`WebhookRepository::delete`].
    pub fn delete(&self, owner: &Owner, id: SubscriptionId) -> Result<(), WebhookError> {
        self.repository.delete(owner, id)
    }

    /// A subscription's latest attempts.
    ///
    /// # Errors
    ///
    /// As [`WebhookRepository::deliveries`].
    pub fn deliveries(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        limit: usize,
    ) -> Result<Vec<Delivery>, WebhookError> {
        self.repository
            .deliveries(owner, id, limit.clamp(1, DELIVERY_LOG))
    }

    /// Delivers again every change after `after`.
    ///
    /// # Errors
    ///
    /// As [`WebhookRepository::rewind`].
    pub fn replay(
        &self,
        owner: &Owner,
        id: SubscriptionId,
        after: u64,
    ) -> Result<Subscription, WebhookError> {
        self.repository.rewind(owner, id, after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_or_https_with_a_host() {
        for good in [
            "http://hooks.example/",
            "HTTPS://Hooks.Example",
            "http://127.0.0.1:9000/in?x=1",
            "http://[::1]:8080/hook",
        ] {
            assert!(WebhookUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "hooks.example/path",
            "ftp://hooks.example/",
            "javascript://x",
            "http:///path",
            "http://:80/",
            "http://hooks.example:0/",
            "http://hooks.example:99999/",
            "http://a b/",
            "http://u:p@hooks.example/",
            "http://hooks.example/#frag",
            "http://[not-ipv6]/",
            "http://hooks.example/\u{0}",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad:?}");
        }
        let url = WebhookUrl::parse("http://[::1]/").unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 80));
        assert!(WebhookUrl::parse(&format!("http://h/{}", "x".repeat(2048))).is_err());
    }

    #[test]
    fn an_event_filter_names_each_kind_once_and_at_least_one() {
        assert_eq!(
            EventFilter::parse(["deleted", "created"]).unwrap().names(),
            ["created", "deleted"]
        );
        assert!(EventFilter::parse([]).is_err());
        assert!(EventFilter::parse(["created", "created"]).is_err());
        assert!(EventFilter::parse(["moved"]).is_err());
        let only_deletes = EventFilter::parse(["deleted"]).unwrap();
        assert!(only_deletes.includes(ChangeKind::Deleted));
        assert!(!only_deletes.includes(ChangeKind::Created));
    }

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The Standard Webhooks specification's example: secret
        // whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek,
        // timestamp 1614265330, body {"test": 2432232314}.
        let bytes = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut key = [0_u8; 32];
        // The example's key is 24 bytes; HMAC takes any length, so sign with those bytes.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&bytes).unwrap();
        mac.update(b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}");
        assert_eq!(
            BASE64.encode(mac.finalize().into_bytes()),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // And ours signs the same way over a 32-byte key.
        key[..24].copy_from_slice(&bytes);
        let secret = WebhookSecret::from_bytes(key);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"5.1614265330.{}");
        assert_eq!(
            secret.sign("5", 1_614_265_330, b"{}"),
            format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
        );
        assert!(secret.expose().starts_with("whsec_"));
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
    }

    #[test]
    fn retries_back_off_to_the_cap_and_give_up_after_the_window() {
        let policy = RetryPolicy::default();
        let start = Utc::now();
        let first = policy.after_failure(1, None, start, false, 0.0);
        assert_eq!(
            first,
            NextStep::Retry {
                at: start + TimeDelta::seconds(5),
                failing_since: start
            }
        );
        let late = start + TimeDelta::days(3);
        assert_eq!(
            policy.after_failure(60, Some(start), late, false, 0.0),
            NextStep::GiveUp
        );
        assert_eq!(
            policy.after_failure(1, None, start, true, 0.0),
            NextStep::Disable
        );
        let delays: Vec<u64> = (1..=12).map(|n| policy.delay(n, 0.0).as_secs()).collect();
        assert_eq!(
            delays,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        // Within a three-day window that is about 80 attempts per change.
        let mut at = start;
        let mut attempts = 1;
        while let NextStep::Retry { at: next, .. } =
            policy.after_failure(attempts, Some(start), at, false, 0.0)
        {
            at = next;
            attempts += 1;
        }
        assert!((70..=90).contains(&attempts), "{attempts}");
    }
}
