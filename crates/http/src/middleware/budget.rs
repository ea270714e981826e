//! The vocabulary of rate limiting, shared by the instance's own limiter ([`super::ratelimit`])
//! and the budgets shared through Redis ([`super::shared_limit`]): the limit, whose budget a
//! request spends, and what was decided.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::representation::problem::ApiError;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests that may come at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` sustained with bursts of twice that; `None` for 0 (no limiting).
    pub fn per_second(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second,
            burst: per_second.saturating_mul(2),
        })
    }

    /// The time between two requests at the sustained rate.
    pub(crate) fn interval(self) -> Duration {
        Duration::from_secs(1) / self.per_second.max(1)
    }

    /// Whole seconds, rounded up, for the headers.
    pub(crate) fn seconds(duration: Duration) -> u64 {
        duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
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

/// The outcome of one request's check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    limit: u64,
    remaining: u64,
    /// Seconds until a request is allowed (when refused) or the budget is full (when allowed).
    reset: u64,
}

impl Decision {
    pub(crate) fn new(allowed: bool, limit: u64, remaining: u64, reset: u64) -> Self {
        Self {
            allowed,
            limit,
            remaining,
            reset,
        }
    }

    /// Seconds until a request is allowed (refused) or the budget is full (allowed).
    #[cfg(test)]
    pub(crate) fn reset(&self) -> u64 {
        self.reset
    }

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
