use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use std::time::Instant;

use actix_web::dev::ServerHandle;
use actix_web::http::Method;
use actix_web::http::header::HeaderMap;
use books_adapters::{
    PgPool, PostgresApiKeyRepository, PostgresBookRepository, PostgresWebhookRepository, Replicas,
};
use books_domain::{BookService, KeyName, KeyService, Scope, StorageHealth, WebhookService};
use books_http::RateLimit;
use books_http::{Application, ServerSettings, Services};
use books_local_postgres::testing::TestDatabase;
use serde_json::Value;

static NEXT_KEY: AtomicU32 = AtomicU32::new(0);

/// A running server on a database of its own.
pub(crate) struct TestApp {
    pub(crate) address: String,
    /// A key with the write scope, sent with every request unless the request says otherwise.
    pub(crate) write_key: String,
    pub(crate) write_key_name: String,
    /// A key with the read scope.
    pub(crate) read_key: String,
    pub(crate) keys: KeyService,
    pub(crate) client: awc::Client,
    handle: ServerHandle,
    _database: Option<TestDatabase>,
}

/// What the server answered.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an RFC 9457 problem with this status, and returns it.
    pub(crate) fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let problem = self.json();
        assert_eq!(problem["status"], status);
        assert_eq!(problem["type"], "about:blank");
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{problem}"
        );
        problem
    }
}

impl TestApp {
    /// A server without rate limits (tests send bursts).
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(None).await
    }

    pub(crate) async fn spawn_with(rate_limit: Option<RateLimit>) -> Self {
        let database = TestDatabase::new();
        let pool = database.pool();
        Self::spawn_on(pool, Some(database), rate_limit)
    }

    /// A server on `pool`, keeping `database` alive as long as itself.
    pub(crate) fn spawn_on(
        pool: PgPool,
        database: Option<TestDatabase>,
        rate_limit: Option<RateLimit>,
    ) -> Self {
        Self::spawn_configured(pool, database, rate_limit, None, None)
    }

    /// A server on `pool` whose rate limits are shared through the Redis at `redis_url`, and
    /// whose reads go to `replicas`, when given.
    pub(crate) fn spawn_configured(
        pool: PgPool,
        database: Option<TestDatabase>,
        rate_limit: Option<RateLimit>,
        redis_url: Option<String>,
        replicas: Option<Arc<Replicas>>,
    ) -> Self {
        Self::spawn_tuned(pool, database, replicas, |settings| {
            settings.rate_limit = rate_limit;
            settings.rate_limit_redis_url = redis_url;
        })
    }

    /// A server on `pool` with the tests' settings, changed by `tune`.
    pub(crate) fn spawn_tuned(
        pool: PgPool,
        database: Option<TestDatabase>,
        replicas: Option<Arc<Replicas>>,
        tune: impl FnOnce(&mut ServerSettings),
    ) -> Self {
        let mut books = PostgresBookRepository::new(pool.clone());
        if let Some(replicas) = replicas {
            books = books.reading_from(replicas);
        }
        // Storage reports on its pool and replicas through its own port.
        let storage: Arc<dyn StorageHealth> = Arc::new(books.clone());
        let service = BookService::new(books);
        let webhook_pool = pool.clone();
        let keys = KeyService::new(PostgresApiKeyRepository::new(pool));
        let create = |name: &str, scope| {
            keys.create(&KeyName::new(name).unwrap(), scope)
                .unwrap()
                .1
                .expose()
                .to_owned()
        };
        // Numbered, so that several servers can share one database.
        let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let write_key_name = format!("tests-write-{n}");
        let (write_key, read_key) = (
            create(&write_key_name, Scope::Write),
            create(&format!("tests-read-{n}"), Scope::Read),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let mut settings = ServerSettings {
            workers: 1,
            shutdown_timeout: Duration::from_secs(1),
            handle_signals: false,
            blocking_threads_per_worker: 8,
            batches_in_flight: 1,
            write_batches_in_flight: 2,
            exports_in_flight: 2,
            rate_limit: None,
            rate_limit_redis_url: None,
            compress: true,
            cors_origins: vec!["https://books.example".to_owned()],
            changes_retention: books_domain::CHANGES_RETENTION,
            // Short, so that a test can see one without waiting 15 s.
            change_heartbeat: Duration::from_millis(300),
            // Receivers in the tests are on loopback.
            webhooks: books_http::WebhookSettings {
                allow_internal: true,
                ..books_http::WebhookSettings::default()
            },
            // Long-lived answers' bounds and the keys' trust as in production.
            ..ServerSettings::default()
        };
        tune(&mut settings);
        let services = Services {
            books: service,
            keys: keys.clone(),
            webhooks: WebhookService::new(
                PostgresWebhookRepository::new(webhook_pool).sealing_with([7; 32]),
            ),
            storage,
            change_signal: database.as_ref().map(|db| {
                Box::new(books_adapters::ChangeListener::new(db.url()))
                    as Box<dyn books_domain::ChangeSignal>
            }),
        };
        let app = Application::build(listener, services, &settings).expect("the server builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        actix_web::rt::spawn(app.run_until_stopped());
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .disable_redirects()
            .finish();
        Self {
            address,
            write_key,
            write_key_name,
            read_key,
            keys,
            client,
            handle,
            _database: database,
        }
    }

    /// Sends a request with the write key, unless `headers` holds an `authorization` of its
    /// own; an empty one sends none.
    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            let bearer = format!("Bearer {}", self.write_key);
            request = request.insert_header(("authorization", bearer));
        }
        for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
            request = request.insert_header((*name, *value));
        }
        let sent = match body {
            Some(body) => request.send_body(body.to_vec()).await,
            None => request.send().await,
        };
        let mut response = sent.expect("the server answers");
        let body = response
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .expect("a body");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: body.to_vec(),
        }
    }

    /// Sends exactly these headers, repeated and empty ones included, and no others.
    pub(crate) async fn send_exact(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        for header in headers {
            request = request.append_header(*header);
        }
        let mut response = request.send().await.expect("the server answers");
        let body = response.body().await.expect("a body");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: body.to_vec(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, &[], None).await
    }

    /// Sends `body` as `application/json`.
    pub(crate) async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request(method, path, &all, Some(body.to_string().as_bytes()))
            .await
    }

    /// Creates a book and returns its JSON.
    pub(crate) async fn create(&self, body: Value) -> Value {
        let reply = self
            .send_json(Method::POST, "/api/v1/books", &body, &[])
            .await;
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    /// How many books the catalogue holds, counted by walking the whole listing.
    pub(crate) async fn count(&self) -> usize {
        let mut count = 0;
        let mut path = "/api/v1/books?limit=100".to_owned();
        loop {
            let page = self.get(&path).await.json();
            count += page["items"].as_array().map_or(0, Vec::len);
            match page["next_cursor"].as_str() {
                Some(cursor) => path = format!("/api/v1/books?limit=100&cursor={cursor}"),
                None => return count,
            }
        }
    }
}

impl TestApp {
    /// Stops accepting, lets in-flight requests finish, then returns.
    pub(crate) async fn stop_gracefully(&self) {
        self.handle.stop(true).await;
    }

    /// Like `get`, but `None` when no answer comes (the server is gone).
    pub(crate) async fn try_get(&self, path: &str) -> Option<u16> {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .ok()?;
        Some(response.status().as_u16())
    }

    /// The connection string of the server's database.
    pub(crate) fn database_url(&self) -> &str {
        self._database
            .as_ref()
            .map_or("", |database| database.url())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// A `books-api` process, killed when dropped.
pub(crate) struct Process(pub(crate) Child);

impl Process {
    /// Sends SIGTERM, as a supervisor stopping the service does.
    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// How the process exited, within `patience` of `since`, or the test fails.
    pub(crate) fn exit_within(&mut self, since: Instant, patience: Duration) -> ExitStatus {
        loop {
            if let Some(exit) = self.0.try_wait().unwrap() {
                return exit;
            }
            assert!(since.elapsed() < patience, "the service did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn serve(env: &[(&str, &str)]) -> Process {
    serve_with_stderr(env, Stdio::null())
}

/// [`serve`], with standard error going to `stderr` (unless `STDERR` names a file).
pub(crate) fn serve_with_stderr(env: &[(&str, &str)], stderr: Stdio) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_books-api"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("DATA_DIR")
        .env("RATE_LIMIT", "0")
        .stdout(Stdio::null())
        .stderr(stderr);
    for (name, value) in env {
        if *name == "STDERR" {
            command.stderr(std::fs::File::create(value).expect("a log file"));
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    Process(command.spawn().expect("the binary starts"))
}

/// Waits until `GET /readyz` on `port` answers 200, for at most `patience`.
pub(crate) fn wait_ready(port: u16, process: &mut Process, patience: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < patience {
        if process.0.try_wait().unwrap().is_some() {
            return false;
        }
        let ready = TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut stream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
            let mut answer = String::new();
            stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
        });
        if ready {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The resident memory of a process now (`VmRSS`) and at its peak (`VmHWM`), in bytes.
pub(crate) fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let read = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap()
            * 1024
    };
    (read("VmRSS:"), read("VmHWM:"))
}
