//! A PostgreSQL cluster of the service's own, run from the server programs on the machine.
//!
//! The cluster listens on a Unix socket in its own folder and on no TCP port, so it never clashes
//! with another server on the machine. PostgreSQL refuses to run as root; when this process is
//! root, the programs run as an unprivileged user (`postgres`, else `nobody`) through `runuser`,
//! and the cluster's folders belong to that user.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{PermissionsExt as _, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const SOCKET_PORT: u16 = 5432;
/// How long a start waits for the server of a run that has just ended to stop.
const LOCK_PATIENCE: Duration = Duration::from_secs(90);
/// The longest Unix socket path most systems accept (`sun_path` is 104 to 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// How a cluster is run.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Trade durability for speed (no fsync): for throwaway test clusters only.
    pub ephemeral: bool,
    /// Delete the cluster's folder once this process has exited, however it exits.
    pub remove_on_exit: bool,
    /// When the server is already running (a service is using it), use it and leave it running:
    /// for short commands such as `books-api keys list`.
    pub leave_running: bool,
}

/// A running cluster. It is stopped by [`LocalCluster::stop`], when the value is dropped, and in
/// any case once this process has exited: a watchdog process waits for the value's pipe to close
/// (which the kernel also does when the process dies) and then stops the server, so not even a
/// crash or `kill -9` leaves PostgreSQL running.
#[derive(Debug)]
pub struct LocalCluster {
    root: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<String>,
    /// False when the server was running before and is to be left so.
    owns_server: bool,
    // Held open for the life of this process; its closing is the watchdog's signal.
    _watchdog: Option<(Child, ChildStdin)>,
    // Held (and shared with the watchdog) while this process owns the server.
    _lock: Option<fs::File>,
}

impl LocalCluster {
    /// Starts the cluster kept under `root`, creating it with `initdb` on first use. A server
    /// already running there (left by a crash) is adopted.
    ///
    /// # Errors
    ///
    /// When the server programs are not installed, or `initdb` or the server fail (the message
    /// then quotes their output and the server's log).
    pub fn start(root: &Path, options: &ClusterOptions) -> anyhow::Result<Self> {
        let bin_dir = find_server_programs()?;
        let run_as = if running_as_root()? {
            Some(unprivileged_user()?)
        } else {
            None
        };
        fs::create_dir_all(root).with_context(|| format!("could not create {}", root.display()))?;
        let root = root
            .canonicalize()
            .with_context(|| format!("could not resolve {}", root.display()))?;
        let mut cluster = Self {
            root,
            bin_dir,
            run_as,
            owns_server: true,
            _watchdog: None,
            _lock: None,
        };
        let socket_dir = cluster.socket_dir();
        fs::create_dir_all(&socket_dir)?;
        if socket_dir.join(".s.PGSQL.5432").as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "the cluster folder {} is too deep for a Unix socket path: move the project to a shorter path, or set DATABASE_URL",
                cluster.root.display()
            );
        }
        if let Some(user) = &cluster.run_as {
            give_to(user, &[&cluster.root, &socket_dir])?;
        }
        // Whoever holds the lock owns the server: a service while it runs, and after it ends the
        // watchdog that stops the server (it inherits the lock), so that a restart right after a
        // crash waits for the old server to be stopped instead of finding it shutting down.
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(cluster.root.join("owner.lock"))
            .with_context(|| format!("could not open the lock of {}", cluster.root.display()))?;
        let locked = match lock.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            Err(fs::TryLockError::Error(error)) => {
                return Err(error).context("could not lock the cluster");
            }
        };
        let running = cluster.data_dir().join("PG_VERSION").exists() && cluster.is_running();
        cluster.owns_server = locked || !(running && options.leave_running);
        if cluster.owns_server {
            if !locked {
                cluster.wait_for_owner(&lock)?;
            }
            // Before anything can fail, so that even a failed start leaves nothing behind.
            cluster._watchdog = Some(cluster.spawn_watchdog(options.remove_on_exit, &lock)?);
            cluster._lock = Some(lock);
        }
        if !cluster.data_dir().join("PG_VERSION").exists() {
            cluster.init()?;
        }
        if !cluster.is_running() {
            cluster.launch(options.ephemeral)?;
        }
        Ok(cluster)
    }

    /// The folder the cluster lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The libpq connection string for `database` on this cluster.
    pub fn connection_url(&self, database: &str) -> String {
        format!(
            "host={} port={SOCKET_PORT} user=postgres dbname={database}",
            self.socket_dir().display()
        )
    }

    /// Stops the server (fast shutdown: open sessions are ended, committed work is kept), unless
    /// it was running before and `leave_running` was asked for.
    ///
    /// # Errors
    ///
    /// When `pg_ctl stop` fails while the server is still running.
    pub fn stop(&self) -> anyhow::Result<()> {
        if !self.owns_server || !self.is_running() {
            return Ok(());
        }
        let output = self
            .pg_command("pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .output()
            .context("could not run pg_ctl stop")?;
        self.check(&output, "pg_ctl stop")
    }

    /// Waits until the owner of the cluster lets go or its server is stopped: the watchdog of a
    /// service that has just ended is stopping the server. (An owner whose server is stopped
    /// already has nothing left to do with it.) Another service still running keeps both: that
    /// is an error.
    fn wait_for_owner(&self, lock: &fs::File) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut told = false;
        while started.elapsed() < LOCK_PATIENCE {
            match lock.try_lock() {
                Ok(()) => return Ok(()),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(error)) => {
                    return Err(error).context("could not lock the cluster");
                }
            }
            if !self.data_dir().join("postmaster.pid").exists() {
                return Ok(());
            }
            if !told {
                tracing::info!(cluster = %self.root.display(), "waiting for the PostgreSQL server of a previous run to stop");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "another books-api is using the cluster in {}: stop it, or give this one another --data-dir",
            self.root.display()
        )
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn is_running(&self) -> bool {
        self.pg_command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn init(&self) -> anyhow::Result<()> {
        let initdb = |locale: &[&str]| {
            self.pg_command("initdb")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8"])
                .args(locale)
                .output()
                .context("could not run initdb")
        };
        // C.UTF-8 gives Unicode-aware lower() for case-insensitive filters; not every system
        // has it, and the plain C locale works everywhere.
        let output = initdb(&["--locale=C.UTF-8"])?;
        let output = if output.status.success() {
            output
        } else {
            initdb(&["--no-locale"])?
        };
        self.check(&output, "initdb")
    }

    fn launch(&self, ephemeral: bool) -> anyhow::Result<()> {
        let mut settings = format!(
            "-c listen_addresses='' -k {} -p {SOCKET_PORT}",
            shell_quote(self.socket_dir().as_os_str())?
        );
        if ephemeral {
            settings.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let output = self
            .pg_command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .arg("-o")
            .arg(settings)
            .output()
            .context("could not run pg_ctl start")?;
        self.check(&output, "pg_ctl start")
    }

    /// Stops the server (and deletes the cluster if asked) once this process has exited, holding
    /// `lock` until it is done.
    fn spawn_watchdog(&self, remove: bool, lock: &fs::File) -> anyhow::Result<(Child, ChildStdin)> {
        let stop = self.shell_line(
            "pg_ctl",
            &[
                "stop",
                "-m",
                "fast",
                "-w",
                "-D",
                &self.data_dir().to_string_lossy(),
            ],
        )?;
        let mut script = format!("{stop} >/dev/null 2>&1");
        if remove {
            let stop_now = self.shell_line(
                "pg_ctl",
                &[
                    "stop",
                    "-m",
                    "immediate",
                    "-D",
                    &self.data_dir().to_string_lossy(),
                ],
            )?;
            script = format!(
                "{stop_now} >/dev/null 2>&1; rm -rf {}",
                shell_quote(self.root.as_os_str())?
            );
        }
        run_at_exit(&script, Some(lock))
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        };
        // The server's user may not be allowed into our working directory.
        command.current_dir(&self.root).stdin(Stdio::null());
        command
    }

    fn shell_line(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut words = Vec::new();
        if let Some(user) = &self.run_as {
            words.extend([
                "runuser".to_owned(),
                "-u".to_owned(),
                shell_quote(OsStr::new(user))?,
                "--".to_owned(),
            ]);
        }
        words.push(shell_quote(self.bin_dir.join(program).as_os_str())?);
        for arg in args {
            words.push(shell_quote(OsStr::new(arg))?);
        }
        Ok(words.join(" "))
    }

    fn check(&self, output: &Output, what: &str) -> anyhow::Result<()> {
        if output.status.success() {
            return Ok(());
        }
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let log_tail: Vec<&str> = log.lines().rev().take(15).collect();
        bail!(
            "{what} failed ({}) for the cluster in {}:\n{}{}\n{}",
            output.status,
            self.root.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            log_tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        )
    }
}

/// Runs the shell `script` once this process has exited, however it exits: a child `sh` waits
/// for its standard input to close (the kernel closes it when we go), ignoring the terminal's
/// signals so that Ctrl-C cannot skip it. Keep the returned pair alive as long as the process.
///
/// `hold`, a locked file, becomes the script's standard output (the script writes nothing there):
/// a lock belongs to the open file, so the script keeps it locked until it has run.
pub(crate) fn run_at_exit(
    script: &str,
    hold: Option<&fs::File>,
) -> anyhow::Result<(Child, ChildStdin)> {
    let stdout = match hold {
        Some(file) => Stdio::from(
            file.try_clone()
                .context("could not share the cluster lock")?,
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("trap '' INT TERM HUP; cat >/dev/null; {script}"))
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::null())
        .current_dir("/")
        .spawn()
        .context("could not start a watchdog (sh)")?;
    let stdin = child
        .stdin
        .take()
        .context("the watchdog has no standard input")?;
    Ok((child, stdin))
}

/// Where `initdb` and `pg_ctl` are: on `PATH`, or in the usual install places.
fn find_server_programs() -> anyhow::Result<PathBuf> {
    let has_programs = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned = Vec::new();
    for pattern_dir in [
        "/usr/lib/postgresql",
        "/usr/local/opt",
        "/opt/homebrew/opt",
        "/usr",
    ] {
        if let Ok(entries) = fs::read_dir(pattern_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let relevant = pattern_dir == "/usr/lib/postgresql"
                    || name.starts_with("postgresql")
                    || name.starts_with("pgsql-");
                if relevant {
                    let version: u32 = name
                        .chars()
                        .filter(char::is_ascii_digit)
                        .collect::<String>()
                        .parse()
                        .unwrap_or(0);
                    versioned.push((version, entry.path().join("bin")));
                }
            }
        }
    }
    // The newest installed version first.
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let fixed = [
        "/usr/local/pgsql/bin",
        "/opt/homebrew/bin",
        "/usr/local/bin",
    ]
    .map(PathBuf::from);
    on_path
        .into_iter()
        .chain(versioned.into_iter().map(|(_, dir)| dir))
        .chain(fixed)
        .find(|dir| has_programs(dir))
        .context(
            "the PostgreSQL server programs (initdb, pg_ctl) were not found on PATH or in the usual \
             install places: install them (Debian/Ubuntu: apt-get install postgresql; macOS: \
             brew install postgresql), or set DATABASE_URL to a PostgreSQL server you run yourself",
        )
}

fn running_as_root() -> anyhow::Result<bool> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .context("could not run id -u")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The first of `postgres` and `nobody` that exists.
fn unprivileged_user() -> anyhow::Result<String> {
    let passwd = fs::read_to_string("/etc/passwd").context("could not read /etc/passwd")?;
    ["postgres", "nobody"]
        .into_iter()
        .find(|name| passwd.lines().any(|line| line.split(':').next() == Some(name)))
        .map(str::to_owned)
        .context("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")
}

/// Hands `dirs` (the cluster's root first) over to `user`, so PostgreSQL running as that user can write there.
fn give_to(user: &str, dirs: &[&Path]) -> anyhow::Result<()> {
    let passwd = fs::read_to_string("/etc/passwd").context("could not read /etc/passwd")?;
    let fields: Vec<&str> = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&user))
        .with_context(|| format!("no user {user} in /etc/passwd"))?;
    let uid: u32 = fields
        .get(2)
        .and_then(|v| v.parse().ok())
        .context("bad uid in /etc/passwd")?;
    let gid: u32 = fields
        .get(3)
        .and_then(|v| v.parse().ok())
        .context("bad gid in /etc/passwd")?;
    for dir in dirs {
        chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("could not give {} to {user}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    // Every folder above must let that user through.
    let above = dirs
        .first()
        .map(|dir| dir.ancestors().skip(1))
        .into_iter()
        .flatten();
    for ancestor in above {
        let mode = fs::metadata(ancestor)?.permissions().mode();
        if mode & 0o001 == 0 {
            bail!(
                "PostgreSQL runs as {user}, who cannot enter {} (mode {:o}): put the project elsewhere, or set DATABASE_URL",
                ancestor.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

/// Quotes one word for `sh`.
pub(crate) fn shell_quote(word: &OsStr) -> anyhow::Result<String> {
    let text = word.to_str().context("a path is not valid UTF-8")?;
    Ok(format!("'{}'", text.replace('\'', "'\\''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_quotes_and_spaces() {
        assert_eq!(shell_quote(OsStr::new("a b'c")).unwrap(), "'a b'\\''c'");
    }
}
