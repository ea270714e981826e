//! Rate limiting: GCRA (a token bucket's exact equivalent) per API key, or per client address for
//! callers without a valid one. [`crate::middleware::auth::admit`] applies it to each request,
//! before authentication.
//!
//! The limiter is `governor`'s keyed limiter: a concurrent map of one timestamp per caller, with
//! no global lock on the hot path. Limits are per instance.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::middleware::shared_limit::SharedBudgets;
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
    fn seconds(duration: Duration) -> u64 {
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

type Keyed = DefaultKeyedRateLimiter<Caller, StateInformationMiddleware>;

/// The budgets of all callers: this instance's own, and those shared through Redis when
/// configured (the instance's own then stand in whenever Redis cannot answer).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    keyed: Keyed,
    clock: DefaultClock,
    shared: Option<SharedBudgets>,
}

impl RateLimiter {
    /// A limiter applying `limit` to each caller.
    pub fn new(limit: RateLimit) -> Self {
        let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(limit.interval())
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limit,
            keyed: governor::RateLimiter::keyed(quota).with_middleware(),
            clock: DefaultClock::default(),
            shared: None,
        }
    }

    /// The same limits, shared with every instance that uses `budgets`.
    #[must_use]
    pub fn sharing(self, budgets: SharedBudgets) -> Self {
        Self {
            shared: Some(budgets),
            ..self
        }
    }

    /// The shared budgets, when configured.
    pub fn shared(&self) -> Option<&SharedBudgets> {
        self.shared.as_ref()
    }

    /// Spends one of `caller`'s requests, from the shared budget when there is one and it
    /// answers, else from this instance's.
    pub(crate) async fn check(&self, caller: &Caller) -> Decision {
        if let Some(shared) = &self.shared
            && let Some(decision) = shared.check(caller, self.limit).await
        {
            return decision;
        }
        self.check_locally(caller)
    }

    /// Spends one of `caller`'s requests from this instance's budget.
    pub(crate) fn check_locally(&self, caller: &Caller) -> Decision {
        let limit = u64::from(self.limit.burst);
        match self.keyed.check_key(caller) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let empty = self.limit.burst.saturating_sub(remaining);
                Decision {
                    allowed: true,
                    limit,
                    remaining: u64::from(remaining),
                    reset: RateLimit::seconds(self.limit.interval() * empty),
                }
            }
            Err(not_until) => Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset: RateLimit::seconds(not_until.wait_time_from(self.clock.now())).max(1),
            },
        }
    }

    /// Forgets callers whose budget is full again: the map holds only recent callers.
    pub(crate) fn forget_idle_callers(&self) {
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_requests_are_refused_until_tokens_return() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        let caller = Caller::Key("k".into());
        let allowed: Vec<bool> = (0..4)
            .map(|_| limiter.check_locally(&caller).allowed)
            .collect();
        assert_eq!(allowed, [true, true, true, false]);
        assert_eq!(limiter.check_locally(&caller).reset, 1);
        // A request is allowed again after a tenth of a second.
        std::thread::sleep(Duration::from_millis(150));
        assert!(limiter.check_locally(&caller).allowed);
    }

    #[test]
    fn callers_have_buckets_of_their_own() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1,
            burst: 1,
        });
        assert!(limiter.check_locally(&Caller::Key("a".into())).allowed);
        assert!(!limiter.check_locally(&Caller::Key("a".into())).allowed);
        assert!(limiter.check_locally(&Caller::Key("b".into())).allowed);
        assert!(limiter.check_locally(&Caller::Address(None)).allowed);
    }

    #[test]
    fn zero_turns_limiting_off_and_the_default_burst_is_twice_the_rate() {
        assert_eq!(RateLimit::per_second(0), None);
        assert_eq!(
            RateLimit::per_second(100),
            Some(RateLimit {
                per_second: 100,
                burst: 200
            })
        );
    }
}
