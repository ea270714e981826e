//! Failover on Patroni: one etcd, three PostgreSQL nodes under Patroni with strict synchronous
//! replication, and the service on a libpq multi-host URL (`target_session_attrs=read-write`),
//! under a load of idempotent creates. The leader is killed (its Patroni and its postmaster,
//! SIGKILL); later a switchover demotes a live primary. Every acknowledged create must survive,
//! once, in the feed, with no 500 and no restart of the service. Timings are reported, not
//! asserted: a timed assertion is flaky on a shared machine.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Process, serve, wait_ready};
use crate::topology::{Program, folder, program, start, wait_for_port};

/// A loopback port below 32768, free now: the kernel hands out 32768–60999 to outgoing
/// connections, and a server port in that range can be taken by one of them between our check
/// and the server's bind.
fn low_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = 20_000 + u64::from(std::process::id() % 100) * 100;
    loop {
        let candidate =
            u16::try_from(base + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000).unwrap_or(20_000);
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return candidate;
        }
    }
}

/// Debian's Patroni program `name`, or the one in `PATRONI_BIN_DIR` when that is set (a newer
/// Patroni from PyPI in a virtual environment, to measure what it gives).
fn patroni_program(name: &str) -> PathBuf {
    match std::env::var_os("PATRONI_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => program(&format!("/usr/bin/{name}"), "patroni"),
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status, the head (lower-cased) and the body;
/// an error when the server cannot be reached or does not answer within 15 s.
fn exchange(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    Ok((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// One Patroni node: its program, its ports, its folder.
struct Node {
    name: String,
    rest: u16,
    postgres: u16,
    config: PathBuf,
    data: PathBuf,
    program: Option<Program>,
}

/// etcd and three Patroni nodes, stopped (folders removed) when dropped.
struct Patroni {
    _etcd: Program,
    nodes: Vec<Node>,
}

impl Patroni {
    fn start() -> Self {
        let etcd_binary = program("/usr/bin/etcd", "etcd-server");
        let patroni = patroni_program("patroni");
        let (client, peer) = (low_port(), low_port());
        let etcd_folder = folder("etcd");
        let data = etcd_folder.join("data");
        let args = [
            "--name".to_owned(),
            "e0".to_owned(),
            "--data-dir".to_owned(),
            data.display().to_string(),
            "--listen-client-urls".to_owned(),
            format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls".to_owned(),
            format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls".to_owned(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls".to_owned(),
            format!("http://127.0.0.1:{peer}"),
            "--initial-cluster".to_owned(),
            format!("e0=http://127.0.0.1:{peer}"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut etcd = start("etcd", etcd_folder, &etcd_binary, &args);
        wait_for_port(&mut etcd, client);
        let bin_dir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("the PostgreSQL server programs (apt-get install postgresql)")
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .find(|bin| bin.join("pg_ctl").exists())
            .expect("pg_ctl under /usr/lib/postgresql/*/bin");
        let mut cluster = Self {
            _etcd: etcd,
            nodes: Vec::new(),
        };
        for index in 0..3 {
            let name = format!("node{index}");
            let (rest, postgres) = (low_port(), low_port());
            let node_folder = folder(&format!("patroni-{index}"));
            let data = node_folder.join("data");
            let config = node_folder.join("patroni.yml");
            std::fs::write(
                &config,
                format!(
                    "scope: books\nname: {name}\n\
                     restapi:\n  listen: 127.0.0.1:{rest}\n  connect_address: 127.0.0.1:{rest}\n\
                     etcd3:\n  hosts: 127.0.0.1:{client}\n\
                     bootstrap:\n  dcs:\n    ttl: 10\n    loop_wait: 2\n    retry_timeout: 4\n\
                     \x20   maximum_lag_on_failover: 1048576\n    synchronous_mode: true\n\
                     \x20   synchronous_mode_strict: true\n\
                     \x20   postgresql:\n      use_pg_rewind: false\n      use_slots: true\n\
                     \x20     parameters:\n        wal_level: replica\n        hot_standby: 'on'\n\
                     \x20       max_wal_senders: 10\n        max_replication_slots: 10\n\
                     \x20       max_connections: 100\n\
                     \x20       wal_retrieve_retry_interval: 500ms\n\
                     \x20 initdb:\n  - encoding: UTF8\n  - locale: C\n\
                     \x20 pg_hba:\n  - local all all trust\n  - host all all 127.0.0.1/32 trust\n\
                     \x20 - host replication all 127.0.0.1/32 trust\n\
                     postgresql:\n  listen: 127.0.0.1:{postgres}\n\
                     \x20 connect_address: 127.0.0.1:{postgres}\n  data_dir: {data}\n\
                     \x20 bin_dir: {bin}\n  pgpass: {folder}/pgpass\n\
                     \x20 authentication:\n    superuser:\n      username: postgres\n\
                     \x20     password: postgres\n    replication:\n      username: replicator\n\
                     \x20     password: replicator\n\
                     \x20 parameters:\n    unix_socket_directories: '{folder}'\n",
                    data = data.display(),
                    bin = bin_dir.display(),
                    folder = node_folder.display(),
                ),
            )
            .unwrap();
            let args = [config.to_str().unwrap().to_owned()];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let node = start("patroni", node_folder, &patroni, &args);
            cluster.nodes.push(Node {
                name,
                rest,
                postgres,
                config,
                data,
                program: Some(node),
            });
            // The first node bootstraps the cluster; the others clone it once it leads.
            if index == 0 {
                cluster.wait_for_leader(Duration::from_secs(60));
            }
        }
        // Both standbys streaming, one of them synchronous.
        let started = Instant::now();
        while cluster.replicas_streaming() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the standbys did not start streaming: {}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|node| {
                node.program
                    .as_ref()
                    .map(|p| format!("{}: {}", node.name, p.log()))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Patroni's REST answer for `path` on `node`: its status code.
    fn rest(node: &Node, path: &str) -> Option<u16> {
        exchange("GET", node.rest, path, &[], None)
            .ok()
            .map(|(status, _, _)| status)
    }

    /// The first running node whose Patroni answers 200 on `path` (`/primary`, `/sync`, …).
    fn answering(&self, path: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.program.is_some() && Self::rest(node, path) == Some(200))
    }

    fn replicas_streaming(&self) -> usize {
        self.nodes
            .iter()
            .filter(|node| node.program.is_some() && Self::rest(node, "/replica") == Some(200))
            .count()
    }

    /// The first node that answers 200 on `path` within `patience`; the test fails otherwise.
    fn wait_for(&self, path: &str, patience: Duration) -> usize {
        let started = Instant::now();
        loop {
            if let Some(node) = self.answering(path) {
                return node;
            }
            assert!(
                started.elapsed() < patience,
                "no node answered {path} within {patience:?}: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The synchronous standby, once there is one: in synchronous mode the only node a switchover
    /// may go to (Patroni refuses any other, and patronictl still exits 0).
    fn wait_for_synchronous_standby(&self, patience: Duration) -> usize {
        self.wait_for("/sync", patience)
    }

    /// The node that leads, once one does.
    fn wait_for_leader(&self, patience: Duration) -> usize {
        self.wait_for("/primary", patience)
    }

    /// The libpq multi-host URL of database `name`, for writes: whichever node is primary.
    fn url(&self, name: &str) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.postgres))
            .collect();
        format!(
            "postgresql://postgres:postgres@{}/{name}?target_session_attrs=read-write&connect_timeout=2",
            hosts.join(",")
        )
    }

    /// Kills node `index` as a crash would: its Patroni, then its postmaster, both SIGKILL.
    fn crash(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let postmaster = std::fs::read_to_string(node.data.join("postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next().map(str::to_owned));
        if let Some(mut program) = node.program.take() {
            program.kill();
            // The folder stays until the test ends: dropping the program removes it.
            std::mem::forget(program);
        }
        if let Some(pid) = postmaster {
            let _ = Command::new("kill")
                .args(["-9", &pid])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// A switchover from the leader to `candidate`, with patronictl.
    fn switchover(&self, leader: usize, candidate: usize) {
        let patronictl = patroni_program("patronictl");
        let out = Command::new(patronictl)
            .args([
                "-c",
                self.nodes[leader].config.to_str().unwrap(),
                "switchover",
                "--leader",
                &self.nodes[leader].name,
                "--candidate",
                &self.nodes[candidate].name,
                "--force",
            ])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // patronictl reports a refused switchover on its output, and exits 0.
        assert!(
            out.status.success() && !said.to_lowercase().contains("failed"),
            "patronictl switchover failed: {said}"
        );
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        // Stop the nodes' PostgreSQL too: Patroni killed by SIGKILL leaves its postmaster.
        for node in &mut self.nodes {
            drop(node.program.take());
            if let Ok(pid) = std::fs::read_to_string(node.data.join("postmaster.pid"))
                && let Some(pid) = pid.lines().next()
            {
                let _ = Command::new("kill")
                    .args(["-9", pid])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            if let Some(parent) = node.data.parent() {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
    }
}

/// HAProxy in front of the nodes, as Patroni's documentation shows: one port for writes, whose
/// servers are checked with `GET /primary` on Patroni's REST API, and one for reads, checked with
/// `GET /replica`; connections to a server that fails its check are cut.
fn haproxy(cluster: &Patroni) -> (Program, u16, u16) {
    let binary = program("/usr/sbin/haproxy", "haproxy");
    let (write, read) = (low_port(), low_port());
    let servers: String = cluster
        .nodes
        .iter()
        .map(|node| {
            format!(
                "    server {} 127.0.0.1:{} check port {} inter 500ms fall 1 rise 1 \
                 on-marked-down shutdown-sessions\n",
                node.name, node.postgres, node.rest
            )
        })
        .collect();
    let config = format!(
        "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    \
         timeout server 60s\n\n\
         listen primary\n    bind 127.0.0.1:{write}\n    option httpchk GET /primary\n    \
         http-check expect status 200\n{servers}\n\
         listen replicas\n    bind 127.0.0.1:{read}\n    balance roundrobin\n    \
         option httpchk GET /replica\n    http-check expect status 200\n{servers}"
    );
    let haproxy_folder = folder("haproxy-patroni");
    std::fs::write(haproxy_folder.join("haproxy.cfg"), config).unwrap();
    let cfg = haproxy_folder.join("haproxy.cfg");
    let mut program = start(
        "haproxy",
        haproxy_folder,
        &binary,
        &["-db", "-f", cfg.to_str().unwrap()],
    );
    wait_for_port(&mut program, write);
    (program, write, read)
}

/// One reader asking for a listing page every 20 ms until `stop`: the statuses it got, and the
/// longest stretch without a 200.
fn read_load(
    port: u16,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<(BTreeMap<u16, u64>, Duration)> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        let mut statuses = BTreeMap::new();
        let mut last_ok = Instant::now();
        let mut longest = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let status = exchange("GET", port, "/api/v1/books?limit=5", &[], None)
                .map_or(0, |(status, _, _)| status);
            *statuses.entry(status).or_default() += 1;
            if status == 200 {
                longest = longest.max(last_ok.elapsed());
                last_ok = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (statuses, longest.max(last_ok.elapsed()))
    })
}

/// What the writers saw.
#[derive(Default)]
struct Outcomes {
    /// Idempotency key → (book id, when acknowledged, whether it was a replay).
    acknowledged: HashMap<String, (i64, Instant, bool)>,
    /// Answers by status, over every attempt.
    statuses: BTreeMap<u16, u64>,
}

/// Eight writers creating books with idempotency keys (each at most 40 a second), each retrying
/// a key on 5xx or a connection error until it is acknowledged, until `stop` is set. The keys
/// hold `phase`: a key of an earlier phase would be answered as a replay, not a new book, and
/// the outage measured from new books would grow by the time spent replaying them.
fn write_load(
    phase: &'static str,
    base: &str,
    key: &str,
    stop: &Arc<AtomicBool>,
) -> (Vec<std::thread::JoinHandle<()>>, Arc<Mutex<Outcomes>>) {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let writers = (0..8)
        .map(|writer| {
            let (base, key, stop, outcomes) = (
                base.to_owned(),
                key.to_owned(),
                stop.clone(),
                outcomes.clone(),
            );
            std::thread::spawn(move || {
                let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let idempotency = format!("failover-{phase}-{writer}-{n}");
                    let body = json!({"title": idempotency, "author": "Failover"}).to_string();
                    let headers = [
                        ("authorization", format!("Bearer {key}")),
                        ("idempotency-key", idempotency.clone()),
                        ("content-type", "application/json".to_owned()),
                    ];
                    let answer = exchange("POST", port, "/api/v1/books", &headers, Some(&body));
                    match answer {
                        Ok((status, headers, body)) => {
                            *outcomes.lock().unwrap().statuses.entry(status).or_default() += 1;
                            if status == 201 {
                                let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
                                    .as_i64()
                                    .unwrap();
                                let replayed = headers.contains("idempotent-replayed: true");
                                outcomes
                                    .lock()
                                    .unwrap()
                                    .acknowledged
                                    .insert(idempotency, (id, Instant::now(), replayed));
                                n += 1;
                                // A steady load, not a flood: the tests that run beside this one
                                // (CI runs them in parallel on two cores) keep their cores.
                                std::thread::sleep(Duration::from_millis(25));
                            } else {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
        })
        .collect();
    (writers, outcomes)
}

/// Stops the writers, waits for them, and returns what they saw, with when they were told to stop.
fn finish(
    stop: &AtomicBool,
    writers: Vec<std::thread::JoinHandle<()>>,
    outcomes: Arc<Mutex<Outcomes>>,
) -> (Outcomes, Instant) {
    stop.store(true, Ordering::Relaxed);
    let stopped_at = Instant::now();
    for writer in writers {
        writer.join().unwrap();
    }
    let outcomes = Arc::try_unwrap(outcomes)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();
    (outcomes, stopped_at)
}

/// The longest stretch with no new book acknowledged (replays of creates made before are not
/// new) between `from` and `until`, the end of the load.
fn longest_gap(outcomes: &Outcomes, from: Instant, until: Instant) -> Duration {
    let mut times: Vec<Instant> = outcomes
        .acknowledged
        .values()
        .filter(|(_, at, replayed)| !replayed && *at >= from)
        .map(|(_, at, _)| *at)
        .collect();
    times.sort();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for at in times {
        longest = longest.max(at - previous);
        previous = at;
    }
    longest.max(until.saturating_duration_since(previous))
}

/// Asserts that writes went on to the end of the load: a new book acknowledged in its last 3 s.
fn assert_writes_resumed(outcomes: &Outcomes, stopped_at: Instant, phase: &str) {
    assert!(
        outcomes
            .acknowledged
            .values()
            .any(|(_, at, replayed)| !replayed && *at + Duration::from_secs(3) > stopped_at),
        "{phase}: writes did not resume ({:?})",
        outcomes.statuses
    );
}

/// Every acknowledged create is in the database once, and in the feed once, in seq order.
fn check_everything_acknowledged_survived(base: &str, url: &str, outcomes: &Outcomes) {
    use diesel::prelude::*;
    let acknowledged: HashMap<&str, i64> = outcomes
        .acknowledged
        .iter()
        .map(|(key, (id, _, _))| (key.as_str(), *id))
        .collect();
    let mut conn = PgConnection::establish(url).unwrap();
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        title: String,
    }
    let rows: Vec<Row> = diesel::sql_query("SELECT id, title FROM book WHERE author = 'Failover'")
        .load(&mut conn)
        .unwrap();
    let mut by_title: HashMap<&str, Vec<i64>> = HashMap::new();
    for row in &rows {
        by_title.entry(&row.title).or_default().push(row.id);
    }
    for (key, id) in &acknowledged {
        assert_eq!(
            by_title.get(key).map(Vec::as_slice),
            Some(&[*id][..]),
            "the acknowledged create {key} is there, once, with the id it was answered"
        );
    }
    assert!(
        by_title.values().all(|ids| ids.len() == 1),
        "no idempotency key made two books"
    );
    // The feed, from 0 through the service: every acknowledged create once, seqs increasing.
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let ids: HashSet<i64> = acknowledged.values().copied().collect();
    let mut created: HashMap<i64, u32> = HashMap::new();
    let (mut after, mut last_seq) = (0_u64, 0_u64);
    loop {
        let (status, _, body) = exchange(
            "GET",
            port,
            &format!("/api/v1/books/changes?after={after}&limit=1000"),
            &[],
            None,
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        for change in items {
            let seq = change["seq"].as_u64().unwrap();
            assert!(seq > last_seq, "seqs increase: {last_seq} then {seq}");
            last_seq = seq;
            if change["kind"] == "created" {
                *created
                    .entry(change["book_id"].as_i64().unwrap())
                    .or_default() += 1;
            }
        }
        after = page["next_after"].as_u64().unwrap();
    }
    for id in &ids {
        assert_eq!(
            created.get(id),
            Some(&1),
            "book {id} is created once in the feed"
        );
    }
}

/// When a write of a client of its own first commits after `since` (strict synchronous mode: a
/// commit returns once a synchronous standby holds it), and the longest the database then kept
/// such a client waiting over the next 5 s: a database that takes one write and then holds the
/// next (a synchronous standby named after the promotion) is not yet taking writes.
fn first_write_after(url: &str, since: Instant) -> (Instant, Duration) {
    use diesel::connection::SimpleConnection as _;
    use diesel::prelude::*;
    let write = || {
        PgConnection::establish(url).is_ok_and(|mut conn| {
            conn.batch_execute(
                "SET statement_timeout = 500; \
                 CREATE TABLE IF NOT EXISTS failover_probe (at timestamptz); \
                 INSERT INTO failover_probe VALUES (now())",
            )
            .is_ok()
        })
    };
    let first = loop {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "no write within 60 s"
        );
        if write() {
            break Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut last, mut longest) = (first, Duration::ZERO);
    while first.elapsed() < Duration::from_secs(5) {
        if write() {
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (first, longest.max(last.elapsed()))
}

#[test]
fn on_patroni_a_killed_leader_and_a_switchover_lose_no_acknowledged_create_and_answer_no_500() {
    let mut cluster = Patroni::start();
    cluster.wait_for_leader(Duration::from_secs(30));
    {
        use diesel::prelude::*;
        let mut conn = PgConnection::establish(&cluster.url("postgres")).unwrap();
        diesel::sql_query("CREATE DATABASE books")
            .execute(&mut conn)
            .unwrap();
    }
    let url = cluster.url("books");
    let port = low_port();
    let bind = format!("127.0.0.1:{port}");
    let mut service: Process = serve(&[
        ("DATABASE_URL", url.as_str()),
        ("BIND", &bind),
        ("STARTUP_WAIT", "60"),
    ]);
    assert!(
        wait_ready(port, &mut service, Duration::from_secs(60)),
        "the service is ready"
    );
    let service_pid = service.0.id();
    let key = {
        let out = Command::new(env!("CARGO_BIN_EXE_books-api"))
            .args(["keys", "create", "--name", "failover"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    let base = format!("http://{bind}");

    // 1. HAProxy with Patroni's checks, writes to /primary and reads from /replica, through a
    //    switchover while all three nodes are up: reads go on from a standby, writes resume
    //    on the new primary.
    let (_haproxy, write_port, read_port) = haproxy(&cluster);
    let proxied_leader = cluster.wait_for_leader(Duration::from_secs(30));
    let candidate = cluster.wait_for_synchronous_standby(Duration::from_secs(30));
    let proxied_port = low_port();
    let proxied_bind = format!("127.0.0.1:{proxied_port}");
    let write_url = format!(
        "host=127.0.0.1 port={write_port} user=postgres password=postgres dbname=books connect_timeout=2"
    );
    let read_url = format!(
        "host=127.0.0.1 port={read_port} user=postgres password=postgres dbname=books connect_timeout=2"
    );
    // HAProxy marks servers up after their first check: wait until it routes to the primary.
    {
        use diesel::prelude::*;
        let started = Instant::now();
        while PgConnection::establish(&write_url).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "HAProxy routes to no primary"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let log = std::env::temp_dir()
        .join(format!("books-api-proxied-{}.log", std::process::id()))
        .display()
        .to_string();
    let mut proxied: Process = serve(&[
        ("DATABASE_URL", write_url.as_str()),
        ("REPLICA_URLS", read_url.as_str()),
        ("REPLICA_MAX_LAG", "2"),
        ("STARTUP_WAIT", "60"),
        ("BIND", &proxied_bind),
        ("STDERR", &log),
    ]);
    assert!(wait_ready(
        proxied_port,
        &mut proxied,
        Duration::from_secs(60)
    ));
    let proxied_base = format!("http://{proxied_bind}");
    let stop = Arc::new(AtomicBool::new(false));
    let (writers, outcomes) = write_load("haproxy", &proxied_base, &key, &stop);
    let reader = read_load(proxied_port, &stop);
    std::thread::sleep(Duration::from_secs(5));
    let switched_at = Instant::now();
    cluster.switchover(proxied_leader, candidate);
    std::thread::sleep(Duration::from_secs(10));
    let (outcomes, stopped_at) = finish(&stop, writers, outcomes);
    let (reads, longest_read_gap) = reader.join().unwrap();
    println!(
        "HAProxy, switchover: {} creates acknowledged, answers {:?}; the longest stretch with no \
         new book: {:.1} s; reads {:?}, the longest stretch without a 200: {:.2} s",
        outcomes.acknowledged.len(),
        outcomes.statuses,
        longest_gap(&outcomes, switched_at, stopped_at).as_secs_f64(),
        reads,
        longest_read_gap.as_secs_f64()
    );
    assert!(
        !outcomes.statuses.contains_key(&500),
        "{:?}",
        outcomes.statuses
    );
    assert!(!reads.contains_key(&500), "{reads:?}");
    assert_writes_resumed(&outcomes, stopped_at, "HAProxy switchover");
    check_everything_acknowledged_survived(&proxied_base, &url, &outcomes);
    assert!(proxied.0.try_wait().unwrap().is_none());

    // 2. The leader crashes 10 s into the load. Meanwhile the service behind HAProxy reads
    //    from the standbys: its reads should go on while no primary exists.
    let stop = Arc::new(AtomicBool::new(false));
    let (writers, outcomes) = write_load("crash", &base, &key, &stop);
    let reader = read_load(proxied_port, &stop);
    std::thread::sleep(Duration::from_secs(10));
    let killed_at = Instant::now();
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    cluster.crash(leader);
    // When the database itself takes a write again, seen from a client of its own.
    let database_writes_at = {
        let url = url.clone();
        std::thread::spawn(move || first_write_after(&url, killed_at))
    };
    let new_leader = cluster.wait_for_leader(Duration::from_secs(60));
    let promoted_after = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(15));
    let (outcomes, stopped_at) = finish(&stop, writers, outcomes);
    let outage = longest_gap(&outcomes, killed_at - Duration::from_secs(1), stopped_at);
    let (database_writes_at, database_held) = database_writes_at.join().unwrap();
    let (reads, longest_read_gap) = reader.join().unwrap();
    let first_new = outcomes
        .acknowledged
        .values()
        .filter(|(_, at, replayed)| !replayed && *at > killed_at)
        .map(|(_, at, _)| *at)
        .min()
        .unwrap();
    println!(
        "killed leader: {} creates acknowledged, answers {:?}; a new leader after {:.1} s, \
         taking writes after {:.1} s (then holding its own writer up to {:.0} ms); the service's \
         first new book {:.0} ms after that; the longest stretch with no new book: {:.1} s; \
         reads behind HAProxy {:?}, the longest stretch without a 200: {:.2} s",
        outcomes.acknowledged.len(),
        outcomes.statuses,
        promoted_after.as_secs_f64(),
        (database_writes_at - killed_at).as_secs_f64(),
        database_held.as_secs_f64() * 1000.0,
        first_new
            .saturating_duration_since(database_writes_at)
            .as_secs_f64()
            * 1000.0,
        outage.as_secs_f64(),
        reads,
        longest_read_gap.as_secs_f64()
    );
    assert!(
        !outcomes.statuses.contains_key(&500),
        "{:?}",
        outcomes.statuses
    );
    assert!(!reads.contains_key(&500), "{reads:?}");
    assert_writes_resumed(&outcomes, stopped_at, "killed leader");
    check_everything_acknowledged_survived(&base, &url, &outcomes);
    assert!(service.0.try_wait().unwrap().is_none() && service.0.id() == service_pid);

    // 3. A switchover under load on the multi-host URL: the old primary stays up as a standby.
    let candidate = cluster.wait_for_synchronous_standby(Duration::from_secs(60));
    let stop = Arc::new(AtomicBool::new(false));
    let (writers, outcomes) = write_load("switchover", &base, &key, &stop);
    std::thread::sleep(Duration::from_secs(5));
    let switched_at = Instant::now();
    cluster.switchover(new_leader, candidate);
    // With one node gone for good, the demoted primary must rejoin as the synchronous standby
    // before strict synchronous mode lets a commit return: 3.6-4.7 s here, so 20 s leaves room.
    std::thread::sleep(Duration::from_secs(20));
    let (outcomes, stopped_at) = finish(&stop, writers, outcomes);
    println!(
        "switchover: {} creates acknowledged, answers {:?}; the longest stretch with no new \
         book: {:.1} s",
        outcomes.acknowledged.len(),
        outcomes.statuses,
        longest_gap(&outcomes, switched_at, stopped_at).as_secs_f64()
    );
    assert!(
        !outcomes.statuses.contains_key(&500),
        "{:?}",
        outcomes.statuses
    );
    assert_writes_resumed(&outcomes, stopped_at, "switchover");
    check_everything_acknowledged_survived(&base, &url, &outcomes);
    assert!(service.0.try_wait().unwrap().is_none() && service.0.id() == service_pid);
}
