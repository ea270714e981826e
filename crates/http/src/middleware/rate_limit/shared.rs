//! One rate-limit budget per caller for every instance that shares a Redis: GCRA in one Lua
//! script, so that reading and updating a caller's budget is a single atomic step on the server,
//! timed by the server's clock (instances' clocks never disagree about it).
//!
//! Redis is an optimisation of fairness, not a dependency: when it cannot be reached, or answers
//! slowly, the request is limited by the instance's own limiter instead, the change is logged
//! once (and again when Redis is back), and `/metrics` says which is in use.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};

use crate::middleware::rate_limit::{Caller, Decision, RateLimit};

/// GCRA, in microseconds of the Redis server's clock. KEYS[1]: the caller's budget; ARGV[1]: the
/// interval between requests at the sustained rate; ARGV[2]: the burst. Returns
/// `{allowed (0/1), remaining, microseconds until allowed (refused) or full (allowed)}`.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local window = interval * burst
local next_tat = tat + interval
if next_tat - now > window then
  return {0, 0, next_tat - window - now}
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, math.floor((window - (next_tat - now)) / interval), next_tat - now}
";

/// How long a request waits for Redis at most, to connect or for an answer.
const PATIENCE: Duration = Duration::from_millis(250);
/// After a failure, how long requests use the local limiter before Redis is tried again.
const BACK_OFF: Duration = Duration::from_secs(1);

/// The shared budgets, in the Redis at one URL.
#[derive(Debug)]
pub struct SharedBudgets {
    client: Client,
    script: Script,
    connection: Mutex<Option<MultiplexedConnection>>,
    /// Until when Redis is not tried again after a failure.
    resting_until: Mutex<Option<Instant>>,
    /// Whether the last attempt reached Redis: what `/metrics` reports, and what a change of
    /// is logged for.
    reachable: AtomicBool,
}

impl SharedBudgets {
    /// Budgets in the Redis at `url` (`redis://host:port/db`). Nothing is connected yet: a Redis
    /// that is down at start only means the local limiter is used until it is up.
    ///
    /// # Errors
    ///
    /// When `url` is not a Redis URL.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = Client::open(url).context(
            "--rate-limit-redis-url (RATE_LIMIT_REDIS_URL) is not a Redis URL such as redis://127.0.0.1:6379/",
        )?;
        Ok(Self {
            client,
            script: Script::new(GCRA),
            connection: Mutex::new(None),
            resting_until: Mutex::new(None),
            reachable: AtomicBool::new(true),
        })
    }

    /// True while the budgets are shared (the last attempt reached Redis).
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Spends one of `caller`'s requests from its shared budget, or `None` when Redis cannot say
    /// (the caller then uses the local limiter).
    pub(crate) async fn check(&self, caller: &Caller, limit: RateLimit) -> Option<Decision> {
        if self.resting() {
            return None;
        }
        let outcome = self.ask(caller, limit).await;
        match outcome {
            Ok(decision) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rate limits are shared across instances");
                }
                Some(decision)
            }
            Err(error) => {
                *lock(&self.connection) = None;
                *lock(&self.resting_until) = Some(Instant::now() + BACK_OFF);
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "Redis cannot be reached: each instance limits on its own until it is back"
                    );
                }
                None
            }
        }
    }

    fn resting(&self) -> bool {
        let mut resting = lock(&self.resting_until);
        match *resting {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *resting = None;
                false
            }
            None => false,
        }
    }

    async fn ask(&self, caller: &Caller, limit: RateLimit) -> anyhow::Result<Decision> {
        let mut connection = self.connection().await?;
        let interval = Duration::from_secs(1) / limit.per_second.max(1);
        let (allowed, remaining, wait): (i64, i64, i64) = self
            .script
            .key(key_of(caller))
            .arg(interval.as_micros() as u64)
            .arg(limit.burst)
            .invoke_async(&mut connection)
            .await
            .context("the rate-limit script failed")?;
        let seconds = |micros: i64| u64::try_from(micros).unwrap_or(0).div_ceil(1_000_000);
        Ok(Decision::new(
            allowed == 1,
            limit,
            u64::try_from(remaining).unwrap_or(0),
            if allowed == 1 {
                seconds(wait)
            } else {
                seconds(wait).max(1)
            },
        ))
    }

    async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        if let Some(connection) = lock(&self.connection).clone() {
            return Ok(connection);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(PATIENCE))
            .set_response_timeout(Some(PATIENCE));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .context("could not connect to Redis")?;
        *lock(&self.connection) = Some(connection.clone());
        Ok(connection)
    }
}

/// The Redis key of a caller's budget. Key names are letters, digits, `.`, `_` and `-`.
fn key_of(caller: &Caller) -> String {
    match caller {
        Caller::Key(name) => format!("books-api:rate:key:{name}"),
        Caller::Subject(digest) => format!("books-api:rate:subject:{digest}"),
        Caller::Address(Some(address)) => format!("books-api:rate:address:{address}"),
        Caller::Address(None) => "books-api:rate:address:unknown".to_owned(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock still holds a usable value: a panic cannot leave it half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
