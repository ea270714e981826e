//! The book repository on PostgreSQL, one file per role of the domain's ports: [`reading`],
//! [`writing`], [`idempotency`], [`change_feed`] and [`search`]. [`rows`] holds the row
//! type and the statements built from the domain's field table.

mod change_feed;
mod idempotency;
mod reading;
mod rows;
mod search;
mod writing;

use std::sync::Arc;
use std::time::Duration;

use books_domain::{ConsistencyToken, PoolStatus, ReplicaStatus, StorageError, StorageHealth};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::result::Error as DieselError;

pub use change_feed::ChangeListener;
pub(crate) use rows::BookRow;

use crate::PgPool;
use crate::connection::{checkout, storage_error};
use crate::replicas::Replicas;

/// Stores books in the `book` table. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PostgresBookRepository {
    pool: PgPool,
    replicas: Option<Arc<Replicas>>,
}

impl PostgresBookRepository {
    /// A repository over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            replicas: None,
        }
    }

    /// The same repository, reading from `replicas` while one is in use (see [`Replicas`]).
    #[must_use]
    pub fn reading_from(self, replicas: Arc<Replicas>) -> Self {
        Self {
            replicas: Some(replicas),
            ..self
        }
    }

    /// Runs `read` on a replica in use that holds every write up to `seen`, or else (none does,
    /// or the read failed there) on the primary: a replica's trouble never fails a read the
    /// primary can answer.
    pub(crate) fn read<T>(
        &self,
        seen: Option<ConsistencyToken>,
        read: impl Fn(&mut PgConnection) -> Result<T, DieselError>,
    ) -> Result<T, StorageError> {
        if let Some(value) = self
            .replicas
            .as_ref()
            .and_then(|replicas| replicas.read(seen, &read))
        {
            return Ok(value);
        }
        let mut conn = self.conn()?;
        read(&mut conn).map_err(|error| storage_error(&mut conn, error))
    }

    /// The pool, for health checks and metrics.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Every checkout goes through [`checkout`], so that waiting requests are counted alike for
    /// books and keys.
    pub(crate) fn conn(
        &self,
    ) -> Result<PooledConnection<ConnectionManager<PgConnection>>, StorageError> {
        checkout(&self.pool)
    }
}

impl StorageHealth for PostgresBookRepository {
    fn pool(&self) -> Option<PoolStatus> {
        let state = self.pool.state();
        Some(PoolStatus {
            max: self.pool.max_size(),
            open: state.connections,
            idle: state.idle_connections,
            waiting: crate::waiting_for_connection(),
        })
    }

    fn replicas(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .flat_map(|replicas| replicas.states())
            .map(|state| ReplicaStatus {
                name: state.name,
                in_use: state.in_use,
                reachable: state.reachable,
                lag_seconds: state.lag_seconds,
            })
            .collect()
    }

    fn replica_check_interval(&self) -> Option<Duration> {
        self.replicas
            .as_ref()
            .map(|replicas| replicas.check_interval())
    }

    fn check_replicas(&self) {
        if let Some(replicas) = &self.replicas {
            replicas.check();
        }
    }
}
