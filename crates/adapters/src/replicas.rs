//! Read replicas: PostgreSQL streaming standbys that answer reads while they are up and close
//! enough behind the primary.
//!
//! Each replica is checked every [`Replicas::check_interval`] ([`Replicas::check`], run by the
//! service in the background). Its lag is measured against the **primary's own WAL position**:
//! each check first samples the primary's position, then asks the replica how far it has
//! replayed, and the lag is the time since the newest sample the replica had fully replayed
//! (none when it has replayed the sample just taken). A replica that has replayed everything it
//! *received* but receives nothing (its link to the primary is cut) falls behind the primary's
//! samples as soon as the primary writes, and its lag grows from there; a replica of an idle
//! primary lacks nothing and has no lag. A replica is *in use* when it answers and its lag plus
//! one check interval is at most the configured maximum, so that between two checks it is never
//! further behind than allowed.
//!
//! Reads go to the replicas in use, in turn; a read that fails on a replica is answered by the
//! primary instead (and the replica is left out until the next check finds it well), so a
//! replica's trouble never becomes an error for a read the primary could answer. A read that
//! carries a [`ConsistencyToken`] (the primary's WAL position after a write) goes to a replica
//! only once that replica has replayed past it, else to the primary. Writes, their version
//! checks and idempotency records never use a replica.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use books_domain::ConsistencyToken;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{BigInt, Bool};

use crate::connection::{checkout, storage_error};
use crate::database::{PgPool, PoolOptions, connect};
use crate::prepared::Sql;

/// How long a read waits for a replica's connection before the primary answers it instead.
const REPLICA_CHECKOUT: Duration = Duration::from_millis(300);

/// What is known of one replica.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaState {
    /// Its name in logs and metrics: its position in the configuration, from 0.
    pub name: String,
    /// True while reads go to it.
    pub in_use: bool,
    /// True when it answered the last check.
    pub reachable: bool,
    /// How far its replay was behind the primary at the last check, in seconds.
    pub lag_seconds: f64,
}

#[derive(Debug)]
struct Replica {
    name: String,
    pool: PgPool,
    in_use: AtomicBool,
    reachable: AtomicBool,
    lag_millis: AtomicU64,
    /// The WAL position it had replayed when last asked.
    replayed: AtomicU64,
    /// What was last said in the log, so that a change is logged once, not per request.
    last_logged: Mutex<Option<bool>>,
}

/// The configured replicas.
#[derive(Debug)]
pub struct Replicas {
    primary: PgPool,
    members: Vec<Replica>,
    max_lag: Duration,
    next: AtomicUsize,
    /// The primary's WAL position at recent checks, oldest first.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

#[derive(QueryableByName)]
struct Position {
    #[diesel(sql_type = BigInt)]
    lsn: i64,
}

#[derive(QueryableByName)]
struct Replay {
    #[diesel(sql_type = Bool)]
    standby: bool,
    #[diesel(sql_type = BigInt)]
    lsn: i64,
}

/// Where the primary's WAL is written to: what a standby can have received at most.
static PRIMARY_POSITION: LazyLock<Sql> =
    LazyLock::new(|| Sql::new("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS lsn"));

/// Where the WAL has been inserted to: after a write has committed, at or past its commit record
/// (the written position may not be, under `synchronous_commit = off`). Asked after every batch
/// of writes, so kept prepared: as `sql_query` text it was parsed and planned each time.
static WRITE_POSITION: LazyLock<Sql> = LazyLock::new(|| {
    Sql::new("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint AS lsn")
});

/// How far a standby has replayed (a server that is not a standby answers its own position).
const REPLAYED: &str = "SELECT pg_is_in_recovery() AS standby, \
     (CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) \
           ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint AS lsn";

fn position(conn: &mut PgConnection, sql: &'static Sql) -> Result<u64, DieselError> {
    let row = sql.query().get_result::<Position>(conn)?;
    Ok(u64::try_from(row.lsn).unwrap_or(0))
}

/// The primary's position after the writes that have returned: a token for reading them.
pub(crate) fn write_position(pool: &PgPool) -> Result<u64, books_domain::StorageError> {
    let mut conn = checkout(pool)?;
    position(&mut conn, &WRITE_POSITION).map_err(|error| storage_error(&mut conn, error))
}

/// The lag of a replica that has replayed to `replayed`, given the primary's positions at
/// recent checks (oldest first) and the time now: none when it has replayed the newest sample;
/// else the time since the newest sample it had replayed, or since the oldest kept when it lacks
/// even that one. `None` when nothing is known of the primary.
fn lag(samples: &VecDeque<(Instant, u64)>, replayed: u64, now: Instant) -> Option<Duration> {
    let (_, newest) = samples.back()?;
    if replayed >= *newest {
        return Some(Duration::ZERO);
    }
    let held = samples
        .iter()
        .rev()
        .find(|(_, lsn)| *lsn <= replayed)
        .or(samples.front())
        .map(|(at, _)| *at)?;
    Some(now.saturating_duration_since(held))
}

impl Replicas {
    /// Replicas at `urls` (libpq URIs or connection strings), used while their lag behind the
    /// primary (reached through `primary`) is at most `max_lag`. No connection is made yet: a
    /// replica that is down at start is simply not used until a check finds it up.
    ///
    /// # Errors
    ///
    /// When a URL is empty.
    pub fn new(
        primary: PgPool,
        urls: &[String],
        options: &PoolOptions,
        max_lag: Duration,
    ) -> anyhow::Result<Self> {
        let members = urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                anyhow::ensure!(
                    looks_like_a_connection_string(url),
                    "--replica-url (REPLICA_URLS) number {} is not a PostgreSQL URL \
                     (postgres://user@host:port/db) or connection string (host=… dbname=…)",
                    index + 1
                );
                let pool = connect(
                    url,
                    &PoolOptions {
                        checkout_timeout: REPLICA_CHECKOUT,
                        ..options.clone()
                    },
                )
                .with_context(|| format!("--replica-url number {} is not usable", index + 1))?;
                Ok(Replica {
                    name: index.to_string(),
                    pool,
                    in_use: AtomicBool::new(false),
                    reachable: AtomicBool::new(false),
                    lag_millis: AtomicU64::new(0),
                    replayed: AtomicU64::new(0),
                    last_logged: Mutex::new(None),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            primary,
            members,
            max_lag,
            next: AtomicUsize::new(0),
            samples: Mutex::new(VecDeque::new()),
        })
    }

    /// How often [`Replicas::check`] should run: a quarter of the maximum lag, between 100 ms
    /// and a second, so that a replica is left out well within the maximum.
    pub fn check_interval(&self) -> Duration {
        (self.max_lag / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Checks every replica once (blocking: run it off the async workers) and updates which are
    /// in use.
    pub fn check(&self) {
        self.sample_primary();
        let samples = lock(&self.samples).clone();
        for replica in &self.members {
            let replay = checkout(&replica.pool)
                .map_err(|error| anyhow::anyhow!(error))
                .and_then(|mut conn| {
                    diesel::sql_query(REPLAYED)
                        .get_result::<Replay>(&mut conn)
                        .map_err(|error| anyhow::anyhow!(storage_error(&mut conn, error)))
                });
            match replay {
                Ok(replay) => {
                    replica.reachable.store(true, Ordering::Relaxed);
                    if !replay.standby {
                        // Promoted (a failover made it the primary), or a primary of its own
                        // that was never demoted: its position says nothing of what it lacks,
                        // and the primary takes the reads meanwhile. It comes back into use once
                        // it is a standby again (demoted, rejoined) and has caught up.
                        replica.set_in_use(false, "it is not a standby (promoted by a failover?)");
                        continue;
                    }
                    let replayed = u64::try_from(replay.lsn).unwrap_or(0);
                    replica.replayed.fetch_max(replayed, Ordering::Relaxed);
                    let Some(lag) = lag(&samples, replayed, Instant::now()) else {
                        replica.set_in_use(false, "the primary's position is not known");
                        continue;
                    };
                    replica
                        .lag_millis
                        .store(lag.as_millis() as u64, Ordering::Relaxed);
                    replica.set_in_use(
                        lag + self.check_interval() <= self.max_lag,
                        &format!(
                            "replay lag {:.1} s behind the primary, at most {:.1} s allowed",
                            lag.as_secs_f64(),
                            self.max_lag.as_secs_f64()
                        ),
                    );
                }
                Err(error) => {
                    replica.reachable.store(false, Ordering::Relaxed);
                    replica.set_in_use(false, &format!("{error:#}"));
                }
            }
        }
    }

    /// Records the primary's position now, keeping the samples of the last maximum lag and a
    /// little more. When the primary cannot be reached nothing is recorded: a replica that has
    /// replayed the last position known stays in use (it lacks no write the service could have
    /// acknowledged before), one that has not falls further behind with every check.
    fn sample_primary(&self) {
        let sampled = checkout(&self.primary)
            .map_err(|error| anyhow::anyhow!(error))
            .and_then(|mut conn| {
                position(&mut conn, &PRIMARY_POSITION)
                    .map_err(|error| anyhow::anyhow!(storage_error(&mut conn, error)))
            });
        let now = Instant::now();
        let mut samples = lock(&self.samples);
        match sampled {
            Ok(lsn) => samples.push_back((now, lsn)),
            Err(error) => {
                tracing::debug!(error = %format!("{error:#}"), "the primary's position could not be read")
            }
        }
        let keep = self.max_lag + Duration::from_secs(5);
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep)
        {
            samples.pop_front();
        }
    }

    /// The replicas' state, for metrics and readiness.
    pub fn states(&self) -> Vec<ReplicaState> {
        self.members
            .iter()
            .map(|replica| ReplicaState {
                name: replica.name.clone(),
                in_use: replica.in_use.load(Ordering::Relaxed),
                reachable: replica.reachable.load(Ordering::Relaxed),
                lag_seconds: replica.lag_millis.load(Ordering::Relaxed) as f64 / 1000.0,
            })
            .collect()
    }

    /// Runs `read` on a replica in use, in turn, that has replayed past `seen`; `None` when none
    /// is, or when the read failed there (the replica is then left out until the next check
    /// finds it well).
    pub(crate) fn read<T>(
        &self,
        seen: Option<ConsistencyToken>,
        read: impl Fn(&mut PgConnection) -> Result<T, DieselError>,
    ) -> Option<T> {
        let count = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let replica = (0..count)
            .map(|offset| &self.members[(start + offset) % count])
            .find(|replica| replica.in_use.load(Ordering::Relaxed))?;
        let outcome = checkout(&replica.pool)
            .map_err(|error| anyhow::anyhow!(error))
            .and_then(|mut conn| {
                if let Some(seen) = seen
                    && replica.replayed.load(Ordering::Relaxed) < seen.get()
                {
                    // Not known to hold the write yet: ask it once (replay only moves forward).
                    let (_, replayed) = diesel::sql_query(REPLAYED)
                        .get_result::<Replay>(&mut conn)
                        .map(|replay| (replay.standby, u64::try_from(replay.lsn).unwrap_or(0)))
                        .map_err(|error| anyhow::anyhow!(storage_error(&mut conn, error)))?;
                    replica.replayed.fetch_max(replayed, Ordering::Relaxed);
                    if replayed < seen.get() {
                        return Ok(None);
                    }
                }
                read(&mut conn)
                    .map(Some)
                    .map_err(|error| anyhow::anyhow!(storage_error(&mut conn, error)))
            });
        match outcome {
            Ok(value) => value,
            Err(error) => {
                replica.set_in_use(false, &format!("a read failed: {error:#}"));
                None
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock still holds a usable value: nothing here is left half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// True for a `postgres://` or `postgresql://` URI, or a libpq `key=value` string. (libpq checks
/// the rest when it connects; this catches a value that is not one at all, at start.)
fn looks_like_a_connection_string(url: &str) -> bool {
    let url = url.trim();
    if let Some((scheme, rest)) = url.split_once("://") {
        return ["postgres", "postgresql"].contains(&scheme) && !rest.is_empty();
    }
    !url.is_empty()
        && url
            .split_whitespace()
            .all(|pair| pair.split_once('=').is_some_and(|(key, _)| !key.is_empty()))
}

impl Replica {
    /// Puts the replica in or out of use, logging a change once.
    fn set_in_use(&self, in_use: bool, why: &str) {
        self.in_use.store(in_use, Ordering::Relaxed);
        let mut last = lock(&self.last_logged);
        if *last != Some(in_use) {
            if in_use {
                tracing::info!(replica = %self.name, why, "the replica answers reads");
            } else {
                tracing::warn!(replica = %self.name, why, "the replica is left out: the primary answers its reads");
            }
            *last = Some(in_use);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_measured_against_the_primarys_own_positions() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let samples: VecDeque<(Instant, u64)> =
            [(at(0), 100), (at(1), 100), (at(2), 250), (at(3), 400)].into();
        let now = at(3);
        // Nothing known of the primary: no lag can be told.
        assert_eq!(lag(&VecDeque::new(), 0, now), None);
        // Holds the newest sample: no lag.
        assert_eq!(lag(&samples, 400, now), Some(Duration::ZERO));
        // Holds what the primary had 2 s ago, not what it had 1 s ago: 2 s, whatever it received.
        assert_eq!(lag(&samples, 249, now), Some(Duration::from_secs(2)));
        assert_eq!(lag(&samples, 250, now), Some(Duration::from_secs(1)));
        // Lacks even the oldest sample kept: at least as old as that.
        assert_eq!(lag(&samples, 99, now), Some(Duration::from_secs(3)));
        // A replica cut off at 400 while the primary stays idle lacks nothing.
        let idle: VecDeque<(Instant, u64)> = [(at(0), 400), (at(3), 400)].into();
        assert_eq!(lag(&idle, 400, now), Some(Duration::ZERO));
    }

    #[test]
    fn replica_urls_are_checked_for_their_shape_at_start() {
        for good in [
            "postgres://reader@10.0.0.2:5432/books",
            "postgresql:///books?host=/run/postgresql",
            "host=10.0.0.2 port=5432 dbname=books",
        ] {
            assert!(looks_like_a_connection_string(good), "{good}");
        }
        for bad in [
            "",
            "  ",
            "10.0.0.2:5432",
            "http://x",
            "host=a b",
            "postgres://",
        ] {
            assert!(!looks_like_a_connection_string(bad), "{bad}");
        }
    }
}
