//! The pool's connections through an outage of the database, on a real server stopped and
//! started again.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use books_adapters::PatientConnectionManager;
use books_local_postgres::{ClusterOptions, LocalCluster};
use diesel::r2d2::ManageConnection as _;

/// A cluster of the test's own, in a folder removed once the test process ends.
fn cluster(name: &str) -> (PathBuf, ClusterOptions, LocalCluster) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let root =
        std::env::temp_dir().join(format!("books-pool-{name}-{}-{nanos}", std::process::id()));
    let options = ClusterOptions {
        ephemeral: true,
        remove_on_exit: true,
        leave_running: false,
    };
    let cluster = LocalCluster::start(&root, &options).unwrap();
    (root, options, cluster)
}

#[test]
fn a_new_connection_keeps_trying_until_the_database_is_back_within_its_patience() {
    let (root, options, stopped) = cluster("back");
    let url = stopped.connection_url("postgres");
    stopped.stop().unwrap();
    // The database comes back a second after the attempt began. Before, the attempt failed at
    // once, and the pool tried again only after its own delay (up to a second).
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        LocalCluster::start(&root, &options).unwrap()
    });
    let manager = PatientConnectionManager::new(&url, Duration::from_secs(60));
    let connected = manager.connect();
    let restarted = restart.join().unwrap();
    assert!(
        connected.is_ok(),
        "the attempt gave up: {:?}",
        connected.err()
    );
    drop(connected);
    restarted.stop().unwrap();
    drop((restarted, stopped));
}

#[test]
fn a_new_connection_gives_up_once_its_patience_is_spent() {
    let (_root, _options, stopped) = cluster("gone");
    let url = stopped.connection_url("postgres");
    stopped.stop().unwrap();
    let manager = PatientConnectionManager::new(&url, Duration::from_millis(300));
    assert!(manager.connect().is_err());
}
