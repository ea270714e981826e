//! Read replicas: PostgreSQL streaming standbys that answer reads while they are up and close
//! enough behind the primary.
//!
//! Each replica is checked once a second ([`Replicas::check`], run by the service in the
//! background): it is *in use* when it answers and its replay lag is at most the configured
//! maximum. Reads go to the replicas in use, in turn; a read that fails on a replica is answered by
//! the primary instead (and the replica is left out until the next check finds it well), so a
//! replica's trouble never becomes an error for a read the primary could answer. Writes, their
//! version checks and idempotency records never use a replica.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Bool, Double};

use crate::connection::{checkout, storage_error};
use crate::database::{PgPool, PoolOptions, connect};

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
    /// What was last said in the log, so that a change is logged once, not per request.
    last_logged: Mutex<Option<bool>>,
}

/// The configured replicas.
#[derive(Debug)]
pub struct Replicas {
    members: Vec<Replica>,
    max_lag: Duration,
    next: AtomicUsize,
}

#[derive(QueryableByName)]
struct Health {
    #[diesel(sql_type = Bool)]
    standby: bool,
    #[diesel(sql_type = Double)]
    lag: f64,
}

/// The replay lag of a standby: none when it has replayed all it received, else the age of the
/// last transaction it replayed (which keeps growing while replay stalls or the primary is
/// unreachable). A server that is not a standby has no lag.
const HEALTH: &str = "SELECT pg_is_in_recovery() AS standby, \
     CASE WHEN NOT pg_is_in_recovery() THEN 0::float8 \
          WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
          ELSE coalesce(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8, 0) END AS lag";

impl Replicas {
    /// Replicas at `urls` (libpq URIs or connection strings), used while their lag is at most
    /// `max_lag`. No connection is made yet: a replica that is down at start is simply not used
    /// until a check finds it up.
    ///
    /// # Errors
    ///
    /// When a URL is empty.
    pub fn new(urls: &[String], options: &PoolOptions, max_lag: Duration) -> anyhow::Result<Self> {
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
                    last_logged: Mutex::new(None),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            members,
            max_lag,
            next: AtomicUsize::new(0),
        })
    }

    /// Checks every replica once (blocking: run it off the async workers) and updates which are
    /// in use.
    pub fn check(&self) {
        for replica in &self.members {
            let health = checkout(&replica.pool)
                .map_err(|error| anyhow::anyhow!(error))
                .and_then(|mut conn| {
                    diesel::sql_query(HEALTH)
                        .get_result::<Health>(&mut conn)
                        .map_err(|error| anyhow::anyhow!(storage_error(&mut conn, error)))
                });
            match health {
                Ok(health) => {
                    let lag = Duration::from_secs_f64(health.lag.max(0.0));
                    replica.reachable.store(true, Ordering::Relaxed);
                    replica
                        .lag_millis
                        .store(lag.as_millis() as u64, Ordering::Relaxed);
                    let fit = lag <= self.max_lag;
                    if !health.standby {
                        tracing::warn!(replica = %replica.name, "a configured replica is not a standby");
                    }
                    replica.set_in_use(
                        fit,
                        &format!(
                            "replay lag {:.1} s, at most {:.1} s allowed",
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

    /// Runs `read` on a replica in use, in turn; `None` when none is, or when the read failed
    /// there (the replica is then left out until the next check finds it well).
    pub(crate) fn read<T>(
        &self,
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
                read(&mut conn).map_err(|error| anyhow::anyhow!(storage_error(&mut conn, error)))
            });
        match outcome {
            Ok(value) => Some(value),
            Err(error) => {
                replica.set_in_use(false, &format!("a read failed: {error:#}"));
                None
            }
        }
    }
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
        let mut last = self
            .last_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
