//! PostgreSQL of the service's own, for machines that have the server programs but no server for
//! it: [`LocalCluster`] initialises, starts and stops a cluster in a folder (as an unprivileged
//! user when run as root, since PostgreSQL refuses root), which is how `cargo run` works with no
//! `DATABASE_URL`. With the `testing` feature, `testing` gives each test a database of its own,
//! cloned from a migrated template on a throwaway cluster and dropped with the test.
//!
//! It is kept apart from the adapters: nothing here is part of storing books, and the binary
//! links only the cluster manager, never the test support.

mod cluster;
#[cfg(feature = "testing")]
pub mod testing;

pub use cluster::{ClusterOptions, LocalCluster};
