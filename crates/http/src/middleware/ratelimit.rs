//! Rate limiting: a token bucket per API key, or per client address for callers without a valid
//! one. [`crate::middleware::auth::admit`] applies it to each request, before authentication.
//!
//! The buckets are spread over [`SHARDS`] independently locked maps, so two requests contend only
//! when their callers hash to the same shard, and each holds the lock for a few arithmetic
//! operations: there is no global lock on the hot path. Limits are per instance.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::representation::problem::ApiError;

const SHARDS: usize = 32;
/// Buckets idle this long are full again and can be forgotten.
const IDLE: Duration = Duration::from_secs(300);
/// A shard is swept of idle buckets when it grows past this many.
const SWEEP_AT: usize = 4096;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests that may come at once after a quiet spell.
    pub burst: f64,
}

impl RateLimit {
    /// `per_second` sustained with bursts of twice that; `None` for 0 (no limiting).
    pub fn per_second(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second: f64::from(per_second),
            burst: 2.0 * f64::from(per_second),
        })
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// The holder of a valid API key, by the key's name.
    Key(String),
    /// Anyone else, by client address.
    Address(Option<IpAddr>),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The outcome of one request's check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    limit: u64,
    remaining: u64,
    /// Seconds until a token is available (when refused) or the bucket is full (when allowed).
    reset: u64,
}

impl Decision {
    /// The 429 for a request that was not allowed.
    pub(crate) fn refusal(&self) -> ApiError {
        ApiError::TooManyRequests {
            detail: format!("too many requests; retry in {} s", self.reset),
            retry_after: self.reset,
        }
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, for every answer.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", self.limit),
            ("ratelimit-remaining", self.remaining),
            ("ratelimit-reset", self.reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

/// The buckets of all callers.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<Caller, Bucket>>>,
}

impl RateLimiter {
    /// A limiter applying `limit` to each caller.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Spends one of `caller`'s tokens, if it has one.
    pub(crate) fn check(&self, caller: Caller, now: Instant) -> Decision {
        let RateLimit { per_second, burst } = self.limit;
        let shard = &self.shards[(self.hasher.hash_one(&caller) as usize) % SHARDS];
        let mut buckets = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > SWEEP_AT {
            buckets.retain(|_, bucket| now.duration_since(bucket.updated) < IDLE);
        }
        let bucket = buckets.entry(caller).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let seconds_until = |tokens: f64| (tokens / per_second).ceil().max(0.0) as u64;
        Decision {
            allowed,
            limit: burst as u64,
            remaining: bucket.tokens.floor().max(0.0) as u64,
            reset: if allowed {
                seconds_until(burst - bucket.tokens)
            } else {
                seconds_until(1.0 - bucket.tokens).max(1)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_are_refused_until_tokens_return() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        });
        let start = Instant::now();
        let caller = || Caller::Key("k".into());
        let allowed: Vec<bool> = (0..4)
            .map(|_| limiter.check(caller(), start).allowed)
            .collect();
        assert_eq!(allowed, [true, true, true, false]);
        assert_eq!(limiter.check(caller(), start).reset, 1);
        assert!(
            limiter
                .check(caller(), start + Duration::from_millis(150))
                .allowed
        );
    }

    #[test]
    fn callers_have_buckets_of_their_own() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 1.0,
        });
        let now = Instant::now();
        assert!(limiter.check(Caller::Key("a".into()), now).allowed);
        assert!(!limiter.check(Caller::Key("a".into()), now).allowed);
        assert!(limiter.check(Caller::Key("b".into()), now).allowed);
        assert!(limiter.check(Caller::Address(None), now).allowed);
    }

    #[test]
    fn zero_turns_limiting_off_and_the_default_burst_is_twice_the_rate() {
        assert_eq!(RateLimit::per_second(0), None);
        assert_eq!(
            RateLimit::per_second(100),
            Some(RateLimit {
                per_second: 100.0,
                burst: 200.0
            })
        );
    }
}
