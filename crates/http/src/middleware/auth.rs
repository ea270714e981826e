//! Who may write: bearer API keys, checked in memory, and OpenID Connect access tokens
//! (`crate::middleware::oidc`) when an issuer is configured.
//!
//! Every request under the API is looked at by [`admit`]: no `Authorization` header means
//! an anonymous caller (reads are open); a valid key puts its [`Principal`] in the request; any
//! other credential is a 401, so that a typo in a key never passes for anonymity. Write handlers
//! take a [`WriteAccess`], which turns "anonymous" into 401 and "read scope" into 403.
//!
//! The keys live in a [`KeyCache`] refreshed from the database every [`REFRESH_EVERY`], so a
//! request costs no database round trip and a revoked key stops working within that time, on
//! every instance. A key the cache does not know is looked up (the keys reloaded, once for all
//! the requests waiting then, at most four times a second) before it is refused, so a key just
//! created works at once; made-up keys are budgeted by address before they cost that look. While refreshes fail (the database is out of reach) the cache would keep a
//! revoked key working; so it is trusted for a bounded time only (10 s by default,
//! [`crate::ServerSettings::key_cache_max_age`]): past it, no key is verified until a refresh
//! succeeds: a write is answered 503 with `Retry-After`, and a read goes on as an anonymous one
//! (reads are open, so a revoked key gains nothing by it).

use std::future::{Ready, ready};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use books_domain::{CallerName, KeyRing, KeyService, Principal, Scope};

use crate::blocking::blocking_call;
use crate::middleware::oidc::{Issuer, WRITE_SCOPE, looks_like_jwt};
use crate::middleware::rate_limit::local::RateLimiter;
use crate::middleware::rate_limit::{AddressKeying, Caller};
use crate::representation::problem::ApiError;

/// How often the keys are reloaded: the longest a revoked key keeps working.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// The active keys, shared by all workers.
#[derive(Debug)]
pub(crate) struct KeyCache {
    /// The keys, and when they were loaded (`None`: never).
    ring: RwLock<(KeyRing, Option<Instant>)>,
    keys: KeyService,
    /// How old the keys may get while refreshes fail before they are no longer trusted.
    max_age: Duration,
    /// True once the keys' going untrusted has been logged.
    reported_stale: AtomicBool,
    /// Held by the one reload that requests with an unknown key wait for (see
    /// [`KeyCache::look_up`]); it also says when the last such reload began.
    looking_up: tokio::sync::Mutex<Option<Instant>>,
}

/// The least time between two reloads made for unknown keys: a flood of made-up keys costs at
/// most this many reloads a second (one query each), whatever its size.
const LOOK_UP_EVERY: Duration = Duration::from_millis(250);

impl KeyCache {
    /// A cache over `keys`, trusted for `max_age` after each successful load, loaded once now
    /// (when the database is down, keys are answered 503 until a refresh loads them).
    pub(crate) fn load(keys: KeyService, max_age: Duration) -> Self {
        let ring = match keys.ring() {
            Ok(ring) => (ring, Some(Instant::now())),
            Err(error) => {
                tracing::warn!(error = %error, "could not load the API keys; requests with a key get 503 until they load");
                (KeyRing::default(), None)
            }
        };
        Self {
            ring: RwLock::new(ring),
            keys,
            max_age,
            reported_stale: AtomicBool::new(false),
            looking_up: tokio::sync::Mutex::new(None),
        }
    }

    /// The keys, unless they are older than `max_age`: then a revoked key might still be among
    /// them, and no key can be trusted.
    fn current(&self) -> Result<KeyRing, ApiError> {
        // A poisoned lock still holds a valid ring: a panic cannot leave it half-written.
        let (ring, loaded) = &*self
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match loaded {
            Some(loaded) if loaded.elapsed() <= self.max_age => Ok(ring.clone()),
            _ => Err(ApiError::Unavailable(anyhow::anyhow!(
                "the API keys could not be reloaded for longer than {:?}: no key is trusted until they are",
                self.max_age
            ))),
        }
    }

    /// The holder of `token`, which the keys in memory do not know: a key created since the last
    /// reload (`books-api keys create` just printed it) must work at once, not 2 s later. So the
    /// keys are reloaded first, once for all the requests waiting at the same time, and at most
    /// every [`LOOK_UP_EVERY`]; `None` when the reload does not know it either.
    async fn look_up(&self, token: &str) -> Option<Principal> {
        let arrived = Instant::now();
        let mut last = self.looking_up.lock().await;
        // A reload that began after this request arrived already answers for it.
        let reloaded_since = self
            .ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .is_some_and(|loaded| loaded > arrived);
        if !reloaded_since {
            if let Some(wait) = last.map(|at| LOOK_UP_EVERY.saturating_sub(at.elapsed())) {
                actix_web::rt::time::sleep(wait).await;
            }
            *last = Some(Instant::now());
            self.refresh().await;
        }
        drop(last);
        self.current().ok()?.authenticate(token).cloned()
    }

    /// Reloads the keys from the database, off the async workers. Keys that go untrusted are
    /// logged once, and again when they load again.
    pub(crate) async fn refresh(&self) {
        let keys = self.keys.clone();
        // The keys as of the query's start: a key made before it is in them.
        let started = Instant::now();
        let outcome = blocking_call(move || keys.ring()).await;
        let mut state = self
            .ring
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(ring) => {
                if self.reported_stale.swap(false, Ordering::Relaxed) {
                    tracing::info!("the API keys are loaded again: keys are accepted again");
                }
                *state = (ring, Some(started));
            }
            Err(error) => {
                let stale = state.1.is_none_or(|loaded| loaded.elapsed() > self.max_age);
                if stale && !self.reported_stale.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %error, "the API keys could not be reloaded for {:?}: requests with a key get 503 until they are", self.max_age);
                } else {
                    tracing::debug!(error = %error, "could not reload the API keys");
                }
            }
        }
    }

    /// Reloads the keys every [`REFRESH_EVERY`], forever.
    pub(crate) async fn refresh_periodically(cache: web::Data<Self>) {
        let mut interval = actix_web::rt::time::interval(REFRESH_EVERY);
        loop {
            interval.tick().await;
            cache.refresh().await;
        }
    }
}

/// What a request's `Authorization` says.
enum Credentials {
    /// Nothing: an anonymous caller.
    None,
    /// A key the keys in memory know.
    Known(Principal),
    /// A bearer key they do not know (yet?): looked up once the request is within its budget.
    Unknown(String),
    /// An access token signed by a key the issuer's cached keys do not hold: checked once the
    /// request is within its budget, with the keys fetched again.
    Token(String),
}

/// The caller's credentials, or a refusal (401 for a credential that is not a bearer key, 400 for
/// two `Authorization` headers, which would leave it to chance which one counts, 503 while the
/// keys cannot be trusted).
fn read_credentials(request: &ServiceRequest) -> Result<Credentials, ApiError> {
    let mut values = request.headers().get_all(header::AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(Credentials::None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "Authorization is given more than once: send one key".to_owned(),
        ));
    }
    let cache = request
        .app_data::<web::Data<KeyCache>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the key cache is not configured")))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // An access token does not depend on the API keys, nor they on its issuer.
    if let (Some(token), Some(issuer)) = (
        token.filter(|token| looks_like_jwt(token)),
        request.app_data::<web::Data<Issuer>>(),
    ) {
        return match issuer.verify_cached(token) {
            Some(verified) => verified.map(Credentials::Known),
            None => Ok(Credentials::Token(token.to_owned())),
        };
    }
    let ring = cache.current()?;
    match token {
        None => Err(not_a_valid_key()),
        Some(token) => Ok(match ring.authenticate(token) {
            Some(principal) => Credentials::Known(principal.clone()),
            None => Credentials::Unknown(token.to_owned()),
        }),
    }
}

fn not_a_valid_key() -> ApiError {
    ApiError::Unauthorized {
        detail: "the API key is not valid: send Authorization: Bearer <key> with an active key"
            .to_owned(),
        invalid_token: true,
    }
}

/// Admits a request to the API: counts it against its caller's rate limit, then reads its
/// credentials into the request.
///
/// The limit comes first so that a flood of made-up keys is throttled like any other traffic: a
/// request whose key is valid counts against that key, every other request (no key, a key that
/// is not valid, an ambiguous one) against the client's address.
///
/// # Errors
///
/// Those of the inner service.
pub(crate) async fn admit(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let credentials = match read_credentials(&request) {
        // The keys are too old to trust (they cannot be reloaded): the request goes on as an
        // anonymous one, so reads still work, and a write is refused with 503 (`WriteAccess`).
        Err(ApiError::Unavailable(cause)) => {
            request
                .extensions_mut()
                .insert(KeysUntrusted(cause.to_string()));
            Ok(Credentials::None)
        }
        other => other,
    };
    let known = match &credentials {
        Ok(Credentials::Known(principal)) => Some(principal),
        _ => None,
    };
    let limit = match request.app_data::<web::Data<RateLimiter>>().cloned() {
        None => None,
        Some(limiter) => {
            let keying = request
                .app_data::<web::Data<AddressKeying>>()
                .map_or_else(AddressKeying::default, |keying| *keying.get_ref());
            let caller = Caller::of(
                known,
                request.peer_addr().map(|address| address.ip()),
                keying,
            );
            Some(limiter.check(&caller).await)
        }
    };
    let sent_credentials = request.headers().contains_key(header::AUTHORIZATION);
    let admitted = match (&limit, credentials) {
        (Some(decision), _) if !decision.allowed => Err(decision.refusal()),
        (_, Err(refusal)) => Err(refusal),
        (_, Ok(Credentials::None)) => Ok(None),
        (_, Ok(Credentials::Known(principal))) => Ok(Some(principal)),
        // Within its address's budget: worth one look in the database.
        (_, Ok(Credentials::Unknown(token))) => match request.app_data::<web::Data<KeyCache>>() {
            Some(cache) => cache
                .look_up(&token)
                .await
                .map(Some)
                .ok_or_else(not_a_valid_key),
            None => Err(not_a_valid_key()),
        },
        (_, Ok(Credentials::Token(token))) => match request.app_data::<web::Data<Issuer>>() {
            Some(issuer) => issuer.verify(&token).await.map(Some),
            None => Err(not_a_valid_key()),
        },
    };
    let mut response = match admitted {
        Err(refusal) => request.error_response(refusal).map_into_right_body(),
        Ok(principal) => {
            if let Some(principal) = principal {
                request.extensions_mut().insert(principal);
            }
            next.call(request).await?.map_into_left_body()
        }
    };
    if sent_credentials {
        // What a key holder sees is theirs alone: no shared cache may keep it.
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    if let Some(decision) = limit {
        decision.write_headers(response.headers_mut());
    }
    Ok(response)
}

/// Marks a request that sent a key while the keys could not be trusted.
#[derive(Debug, Clone)]
struct KeysUntrusted(String);

/// The caller `admit` verified, if any: a 503 while the keys cannot be trusted, and a 401
/// saying `why` (what the operation needs) for an anonymous caller.
fn verified_caller(request: &HttpRequest, why: &str) -> Result<Principal, ApiError> {
    let extensions = request.extensions();
    if let Some(KeysUntrusted(cause)) = extensions.get::<KeysUntrusted>() {
        return Err(ApiError::Unavailable(anyhow::anyhow!("{cause}")));
    }
    extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthorized {
            detail: format!("{why}: send Authorization: Bearer <API key or access token>"),
            invalid_token: false,
        })
}

/// Proof that the caller holds a key with the `write` scope. A handler that takes one refuses
/// anonymous callers (401) and read keys (403) before it reads the body.
#[derive(Debug)]
pub(crate) struct WriteAccess(pub(crate) Principal);

impl FromRequest for WriteAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            verified_caller(
                request,
                "this operation needs an API key with the write scope, or an access token with books:write",
            )
            .and_then(|principal| {
                if principal.scope.allows(Scope::Write) {
                    Ok(Self(principal))
                } else {
                    Err(ApiError::Forbidden(match &principal.name {
                        CallerName::Key(name) => format!(
                            "the key {name} has the {} scope; this operation needs write",
                            principal.scope.name()
                        ),
                        CallerName::Subject { .. } => format!(
                            "the access token does not grant {WRITE_SCOPE}, which this operation needs"
                        ),
                    }))
                }
            }),
        )
    }
}

/// Proof that the caller holds a key, of either scope: what `/webhooks` needs, whose
/// subscriptions belong to their caller. Anonymous callers get 401.
#[derive(Debug)]
pub(crate) struct CallerAccess(pub(crate) Principal);

impl FromRequest for CallerAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(verified_caller(request, "webhook subscriptions belong to their caller").map(Self))
    }
}
