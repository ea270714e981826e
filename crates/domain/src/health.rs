//! What storage reports of its own state, for operators: the port behind readiness and metrics,
//! so that the service reports on storage without knowing what storage is.

use std::time::Duration;

/// A storage's connection pool, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The most connections the pool opens.
    pub max: u32,
    /// Connections open.
    pub open: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Requests waiting for a connection.
    pub waiting: u64,
}

/// A copy of the data that storage reads from (a read replica), as its last check found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaStatus {
    /// Its name in logs and metrics.
    pub name: String,
    /// True while reads go to it.
    pub in_use: bool,
    /// True when it answered its last check.
    pub reachable: bool,
    /// How far its replay was behind the primary at the last check, in seconds.
    pub lag_seconds: f64,
}

/// The state of storage, for `/readyz` and `/metrics`. Storage without a pool or replicas keeps
/// the defaults.
pub trait StorageHealth: Send + Sync + 'static {
    /// The connection pool now, if storage has one.
    fn pool(&self) -> Option<PoolStatus> {
        None
    }

    /// Each read replica, as its last check found it.
    fn replicas(&self) -> Vec<ReplicaStatus> {
        Vec::new()
    }

    /// How often [`StorageHealth::check_replicas`] must run; `None` when there is nothing to
    /// check.
    fn replica_check_interval(&self) -> Option<Duration> {
        None
    }

    /// Checks the replicas again: whether each answers, and how far it lags (blocking).
    fn check_replicas(&self) {}
}
