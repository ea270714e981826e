//! The engines operators run beside the service, started for a test from the programs Debian
//! packages (pgbouncer, redis-server, haproxy), on loopback ports of their own, in a folder of
//! their own, and stopped (folder removed) when the value is dropped, whatever the test did.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use books_adapters::ensure_database;
use books_local_postgres::{ClusterOptions, LocalCluster};

use crate::helpers::free_port;

/// A program started for a test, with its folder.
pub(crate) struct Program {
    name: &'static str,
    child: Child,
    folder: PathBuf,
}

impl Program {
    /// The program's log so far, for a failure message.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.folder.join("log")).unwrap_or_default()
    }

    /// Stops it now (SIGKILL), as an outage would.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The path of a packaged program, or a failure that says what to install.
pub(crate) fn program(path: &str, package: &str) -> PathBuf {
    let found = [
        path,
        &format!(
            "/usr/bin/{}",
            Path::new(path).file_name().unwrap().to_string_lossy()
        ),
    ]
    .iter()
    .map(PathBuf::from)
    .find(|candidate| candidate.exists());
    found.unwrap_or_else(|| {
        panic!(
            "{path} is missing: install the Debian package {package} (apt-get install {package})"
        )
    })
}

/// A folder for a program, writable by the user it runs as (`postgres` when we are root:
/// pgbouncer refuses to run as root, and the others need not).
pub(crate) fn folder(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!(
        "books-api-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    folder
}

/// The uid and gid of `postgres`, from /etc/passwd.
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let fields: Vec<&str> = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .expect("a postgres user (the PostgreSQL server package makes one)");
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

pub(crate) fn start(name: &'static str, folder: PathBuf, binary: &Path, args: &[&str]) -> Program {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(binary);
    if running_as_root() {
        // The program itself runs as postgres (not a wrapper such as runuser, whose death
        // would leave the program running), so that killing the child stops it.
        let (uid, gid) = postgres_ids();
        command.uid(uid).gid(gid);
    }
    let log = std::fs::File::create(folder.join("log")).unwrap();
    std::fs::set_permissions(folder.join("log"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let child = command
        .args(args)
        .current_dir(&folder)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("could not start {name}: {error}"));
    Program {
        name,
        child,
        folder,
    }
}

/// Waits until `port` on loopback accepts connections.
pub(crate) fn wait_for_port(program: &mut Program, port: u16) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(status)) = program.child.try_wait() {
            panic!("{} exited ({status}): {}", program.name, program.log());
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} did not listen on {port}: {}",
        program.name,
        program.log()
    );
}

/// Where a libpq connection string points: its `host` (a socket folder or an address) and port.
pub(crate) fn server_of(url: &str) -> (String, u16) {
    let value = |key: &str| {
        url.split_whitespace()
            .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    };
    if let Some(rest) = url.split_once("://").map(|(_, rest)| rest) {
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host_port = authority.rsplit('@').next().unwrap_or("");
        let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
        return (host.to_owned(), port.parse().unwrap_or(5432));
    }
    (
        value("host").unwrap_or_else(|| "localhost".to_owned()),
        value("port").and_then(|p| p.parse().ok()).unwrap_or(5432),
    )
}

/// PgBouncer in transaction pooling mode in front of the PostgreSQL server of `backend_url`.
pub(crate) struct PgBouncer {
    pub(crate) port: u16,
    _program: Program,
}

impl PgBouncer {
    pub(crate) fn start(backend_url: &str) -> Self {
        let binary = program("/usr/sbin/pgbouncer", "pgbouncer");
        let (host, backend_port) = server_of(backend_url);
        let port = free_port();
        let folder = folder("pgbouncer");
        let config = format!(
            "[databases]\n* = host={host} port={backend_port} user=postgres\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = transaction\ndefault_pool_size = 4\n\
             max_client_conn = 500\nignore_startup_parameters = extra_float_digits\n\
             pidfile = {}/pgbouncer.pid\n",
            folder.display()
        );
        std::fs::write(folder.join("pgbouncer.ini"), config).unwrap();
        let ini = folder.join("pgbouncer.ini");
        let mut program = start("pgbouncer", folder, &binary, &[ini.to_str().unwrap()]);
        wait_for_port(&mut program, port);
        Self {
            port,
            _program: program,
        }
    }

    /// A connection string for `database` through PgBouncer.
    pub(crate) fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database}",
            self.port
        )
    }
}
/// A Redis server of the test's own (no persistence), on a loopback port.
pub(crate) struct Redis {
    pub(crate) port: u16,
    pub(crate) program: Program,
}

impl Redis {
    pub(crate) fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On `port`: to bring a stopped one back where the service expects it.
    pub(crate) fn start_on(port: u16) -> Self {
        let binary = program("/usr/bin/redis-server", "redis-server");
        let folder = folder("redis");
        let port_text = port.to_string();
        let dir = folder.to_str().unwrap().to_owned();
        let mut program = start(
            "redis-server",
            folder,
            &binary,
            &[
                "--bind",
                "127.0.0.1",
                "--port",
                &port_text,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir,
            ],
        );
        wait_for_port(&mut program, port);
        Self { port, program }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// HAProxy balancing HTTP over `backends` (loopback ports), round robin.
pub(crate) struct HaProxy {
    pub(crate) port: u16,
    _program: Program,
}

impl HaProxy {
    pub(crate) fn start(backends: &[u16]) -> Self {
        let binary = program("/usr/sbin/haproxy", "haproxy");
        let port = free_port();
        let folder = folder("haproxy");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, backend)| format!("    server s{i} 127.0.0.1:{backend} check inter 500ms\n"))
            .collect();
        let config = format!(
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
             frontend books\n    bind 127.0.0.1:{port}\n    default_backend instances\n\n\
             backend instances\n    balance roundrobin\n    option httpchk GET /healthz\n{servers}"
        );
        std::fs::write(folder.join("haproxy.cfg"), config).unwrap();
        let cfg = folder.join("haproxy.cfg");
        let mut program = start(
            "haproxy",
            folder,
            &binary,
            &["-db", "-f", cfg.to_str().unwrap()],
        );
        wait_for_port(&mut program, port);
        Self {
            port,
            _program: program,
        }
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A PostgreSQL primary and a streaming standby made from it with `pg_basebackup -R`, each
/// listening on a Unix socket in its own folder, stopped and removed with the value.
pub(crate) struct Streaming {
    pub(crate) primary: LocalCluster,
    pub(crate) replica: Option<LocalCluster>,
    replica_root: PathBuf,
    // Stopped clusters are kept until the end: dropping one lets its watchdog delete the folder.
    retired: Vec<LocalCluster>,
}

fn server_program(name: &str) -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin").join(name))
        .collect();
    candidates.sort();
    candidates
        .pop()
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn cluster_options() -> ClusterOptions {
    ClusterOptions {
        ephemeral: false,
        remove_on_exit: true,
        leave_running: false,
    }
}

impl Streaming {
    pub(crate) fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        let primary_root = folder("primary");
        let primary = LocalCluster::start(&primary_root, &cluster_options()).unwrap();
        ensure_database(&primary.connection_url("postgres"), "books").unwrap();
        let replica_root = folder("replica");
        let (socket, port) = server_of(&primary.connection_url("postgres"));
        let mut backup = Command::new(server_program("pg_basebackup"));
        backup
            .arg("-D")
            .arg(replica_root.join("data"))
            .args([
                "-R", "-X", "stream", "-c", "fast", "-U", "postgres", "-h", &socket,
            ])
            .args(["-p", &port.to_string()]);
        if running_as_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(&replica_root, Some(uid), Some(gid)).unwrap();
            backup.uid(uid).gid(gid);
        }
        let output = backup.output().expect("pg_basebackup runs");
        assert!(
            output.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let replica = LocalCluster::start(&replica_root, &cluster_options()).unwrap();
        Self {
            primary,
            replica: Some(replica),
            replica_root,
            retired: Vec::new(),
        }
    }

    pub(crate) fn primary_url(&self) -> String {
        self.primary.connection_url("books")
    }

    /// The replica's connection string (it stays the same while the replica is stopped).
    pub(crate) fn replica_url(&self) -> String {
        format!(
            "host={} port=5432 user=postgres dbname=books",
            self.replica_root.join("run").display()
        )
    }

    pub(crate) fn stop_replica(&mut self) {
        if let Some(replica) = &self.replica {
            replica.stop().unwrap();
        }
    }

    pub(crate) fn start_replica(&mut self) {
        self.retired.extend(self.replica.take());
        self.replica = Some(LocalCluster::start(&self.replica_root, &cluster_options()).unwrap());
    }
}

/// Runs `sql` on the database at `url` and returns the first column of the first row as text.
pub(crate) fn query_text(url: &str, sql: &str) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(sql)
        .get_result::<Row>(&mut conn)
        .map(|row| row.value)
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}
