//! Who may write: bearer API keys, checked in memory.
//!
//! Every request under the API is looked at by [`authenticate`]: no `Authorization` header means
//! an anonymous caller (reads are open); a valid key puts its [`Principal`] in the request; any
//! other credential is a 401, so that a typo in a key never passes for anonymity. Write handlers
//! take a [`WriteAccess`], which turns "anonymous" into 401 and "read scope" into 403.
//!
//! The keys live in a [`KeyCache`] refreshed from the database every [`REFRESH_EVERY`], so a
//! request costs no database round trip and a revoked key stops working within that time, on
//! every instance.

use std::future::{Ready, ready};
use std::sync::RwLock;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};
use books_domain::{KeyRing, KeyService, Principal, Scope};

use crate::books::blocking_call;
use crate::error::ApiError;

/// How often the keys are reloaded: the longest a revoked key keeps working.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// The active keys, shared by all workers.
#[derive(Debug)]
pub struct KeyCache {
    ring: RwLock<KeyRing>,
    keys: KeyService,
}

impl KeyCache {
    /// A cache over `keys`, loaded once now (empty, with a warning, when the database is down:
    /// the refresh will load it).
    pub fn load(keys: KeyService) -> Self {
        let ring = keys.ring().unwrap_or_else(|error| {
            tracing::warn!(error = %error, "could not load the API keys; writes are refused until they load");
            KeyRing::default()
        });
        Self {
            ring: RwLock::new(ring),
            keys,
        }
    }

    fn current(&self) -> KeyRing {
        // A poisoned lock still holds a valid ring: a panic cannot leave it half-written.
        self.ring
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reloads the keys from the database, off the async workers.
    pub async fn refresh(&self) {
        let keys = self.keys.clone();
        match blocking_call(move || keys.ring()).await {
            Ok(ring) => {
                *self
                    .ring
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = ring
            }
            Err(error) => tracing::warn!(error = %error, "could not reload the API keys"),
        }
    }

    /// Reloads the keys every [`REFRESH_EVERY`], forever.
    pub async fn refresh_periodically(cache: web::Data<Self>) {
        let mut interval = actix_web::rt::time::interval(REFRESH_EVERY);
        loop {
            interval.tick().await;
            cache.refresh().await;
        }
    }
}

/// Reads the caller's credentials, if any, into the request.
///
/// # Errors
///
/// 401 when an `Authorization` header is present but is not a valid bearer key.
pub(crate) async fn authenticate(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let authenticated = request.headers().contains_key(header::AUTHORIZATION);
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let Some(cache) = request.app_data::<web::Data<KeyCache>>().cloned() else {
            let missing = ApiError::Internal(anyhow::anyhow!("the key cache is not configured"));
            return Ok(request.error_response(missing).map_into_right_body());
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match token.and_then(|token| cache.current().authenticate(token).cloned()) {
            Some(principal) => {
                request.extensions_mut().insert(principal);
            }
            None => {
                let refusal = ApiError::Unauthorized {
                    detail: "the API key is not valid: send Authorization: Bearer <key> with an active key"
                        .to_owned(),
                    invalid_token: true,
                };
                return Ok(request.error_response(refusal).map_into_right_body());
            }
        }
    }
    let mut response = next.call(request).await?;
    if authenticated {
        // What a key holder sees is theirs alone: no shared cache may keep it.
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    Ok(response.map_into_left_body())
}

/// Proof that the caller holds a key with the `write` scope. A handler that takes one refuses
/// anonymous callers (401) and read keys (403) before it reads the body.
#[derive(Debug)]
pub(crate) struct WriteAccess(
    #[expect(dead_code, reason = "kept for logs and per-key limits")] pub(crate) Principal,
);

impl FromRequest for WriteAccess {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match request.extensions().get::<Principal>() {
            None => Err(ApiError::Unauthorized {
                detail: "this operation needs an API key with the write scope: send Authorization: Bearer <key>".to_owned(),
                invalid_token: false,
            }),
            Some(principal) if !principal.scope.allows(Scope::Write) => Err(ApiError::Forbidden(format!(
                "the key {} has the {} scope; this operation needs write",
                principal.name,
                principal.scope.name()
            ))),
            Some(principal) => Ok(Self(principal.clone())),
        })
    }
}
