//! Rate limiting: GCRA (a token bucket's exact equivalent) per API key, or per client address for
//! callers without a valid one. [`crate::middleware::auth::admit`] applies it to each request,
//! before authentication.
//!
//! The limiter is `governor`'s keyed limiter: a concurrent map of one timestamp per caller, with
//! no global lock on the hot path. Limits are per instance.

use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::middleware::rate_limit::shared::SharedBudgets;
use crate::middleware::rate_limit::{Caller, Decision, RateLimit};

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
        let limit = self.limit;
        match self.keyed.check_key(caller) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let empty = self.limit.burst.saturating_sub(remaining);
                Decision::new(
                    true,
                    limit,
                    u64::from(remaining),
                    RateLimit::seconds(self.limit.interval() * empty),
                )
            }
            Err(not_until) => Decision::new(
                false,
                limit,
                0,
                RateLimit::seconds(not_until.wait_time_from(self.clock.now())).max(1),
            ),
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
    use std::time::Duration;

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
        assert_eq!(limiter.check_locally(&caller).reset(), 1);
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
