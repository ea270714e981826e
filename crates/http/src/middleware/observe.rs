//! What operators see: one log line and a request id per request, and Prometheus metrics.
//!
//! Series are kept in [`SHARDS`] independently locked maps keyed by method, route template and
//! status, so recording never takes a global lock; the route template (`/api/v1/books/{id}`), not
//! the path, keeps the number of series bounded whatever clients send.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, web};

const SHARDS: usize = 16;
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The pool's state: connections open, idle, and requests waiting for one.
pub type PoolProbe = Box<dyn Fn() -> PoolState + Send + Sync>;

/// What `/metrics` reports of the database pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolState {
    /// The most connections the pool opens.
    pub max: u32,
    /// Connections open.
    pub open: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Requests waiting for a connection.
    pub waiting: u64,
}

/// Method, route template, status.
type SeriesKey = (Method, String, u16);

#[derive(Debug, Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// The service's counters.
pub struct Metrics {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<SeriesKey, Series>>>,
    server_errors: AtomicU64,
    unavailable: AtomicU64,
    pool: Option<PoolProbe>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Empty metrics; `pool` reports the database pool when given.
    pub fn new(pool: Option<PoolProbe>) -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            server_errors: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            pool,
        }
    }

    fn record(&self, method: Method, route: String, status: u16, seconds: f64) {
        match status {
            503 => {
                self.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            500..=599 => {
                self.server_errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let key = (method, route, status);
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let mut series = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let series = series.entry(key).or_default();
        series.count += 1;
        series.sum += seconds;
        for (bucket, bound) in series.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut all: Vec<(SeriesKey, Series)> = Vec::new();
        for shard in &self.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            all.extend(shard.iter().map(|(k, s)| {
                (
                    k.clone(),
                    Series {
                        count: s.count,
                        sum: s.sum,
                        buckets: s.buckets,
                    },
                )
            }));
        }
        all.sort_by(|a, b| (a.0.0.as_str(), &a.0.1, a.0.2).cmp(&(b.0.0.as_str(), &b.0.1, b.0.2)));
        let mut out = String::new();
        out.push_str(
            "# HELP http_requests_total Requests answered, by method, route template and status.\n",
        );
        out.push_str("# TYPE http_requests_total counter\n");
        for ((method, route, status), series) in &all {
            let _ = writeln!(
                out,
                "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                series.count
            );
        }
        out.push_str("# HELP http_request_duration_seconds Time to answer, by method, route template and status.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for ((method, route, status), series) in &all {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            for (bound, count) in BUCKETS.iter().zip(series.buckets) {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                series.count
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels}}} {}",
                series.sum
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels}}} {}",
                series.count
            );
        }
        out.push_str("# HELP http_server_errors_total Answers with a 5xx status other than 503.\n");
        out.push_str("# TYPE http_server_errors_total counter\n");
        let _ = writeln!(
            out,
            "http_server_errors_total {}",
            self.server_errors.load(Ordering::Relaxed)
        );
        out.push_str("# HELP database_unavailable_total Answers of 503 because the database was unreachable or busy.\n");
        out.push_str("# TYPE database_unavailable_total counter\n");
        let _ = writeln!(
            out,
            "database_unavailable_total {}",
            self.unavailable.load(Ordering::Relaxed)
        );
        if let Some(pool) = &self.pool {
            let PoolState {
                max,
                open,
                idle,
                waiting,
            } = pool();
            out.push_str("# HELP db_pool_max_connections The most connections the pool opens.\n# TYPE db_pool_max_connections gauge\n");
            let _ = writeln!(out, "db_pool_max_connections {max}");
            out.push_str("# HELP db_pool_waiting Requests waiting for a database connection.\n# TYPE db_pool_waiting gauge\n");
            let _ = writeln!(out, "db_pool_waiting {waiting}");
            out.push_str("# HELP db_pool_connections Database connections open in the pool.\n# TYPE db_pool_connections gauge\n");
            let _ = writeln!(out, "db_pool_connections {open}");
            out.push_str("# HELP db_pool_idle_connections Open connections not in use.\n# TYPE db_pool_idle_connections gauge\n");
            let _ = writeln!(out, "db_pool_idle_connections {idle}");
            out.push_str("# HELP db_pool_busy_connections Open connections in use.\n# TYPE db_pool_busy_connections gauge\n");
            let _ = writeln!(
                out,
                "db_pool_busy_connections {}",
                open.saturating_sub(idle)
            );
        }
        out
    }
}

/// A probe of `pool` for `/metrics`.
pub fn pool_probe(pool: books_adapters::PgPool) -> PoolProbe {
    Box::new(move || {
        let state = pool.state();
        PoolState {
            max: pool.max_size(),
            open: state.connections,
            idle: state.idle_connections,
            waiting: books_adapters::waiting_for_connection(),
        }
    })
}

/// A request id from the client (1 to 128 visible ASCII characters), or a new one.
fn request_id(request: &ServiceRequest) -> HeaderValue {
    let given = request.headers().get(&REQUEST_ID).filter(|value| {
        let bytes = value.as_bytes();
        (1..=128).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
    });
    if let Some(value) = given {
        return value.clone();
    }
    let mut bytes = [0_u8; 12];
    // Without randomness a request id is still useful as long as it is unique enough to grep:
    // fall back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        bytes.copy_from_slice(&nanos.to_be_bytes()[4..]);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&hex).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Gives the request an id (echoed in `X-Request-Id`), logs one line for it and records it.
///
/// # Errors
///
/// Those of the inner service.
pub(crate) async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&request);
    let method = if request
        .extensions()
        .contains::<crate::middleware::head::HeadRequest>()
    {
        Method::HEAD
    } else {
        request.method().clone()
    };
    let path = request.path().to_owned();
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    let mut response = next.call(request).await?;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    if let Some(metrics) = metrics {
        // The template, not the path, so that the number of series stays bounded.
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        // Likewise, a client's invented methods share one series.
        let known = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ];
        let series_method = if known.contains(&method) {
            method.clone()
        } else {
            Method::TRACE
        };
        metrics.record(series_method, route, status, seconds);
    }
    let request_id = id.to_str().unwrap_or("");
    tracing::info!(request_id, method = %method, path, status, ms = seconds * 1000.0, "request");
    response.headers_mut().insert(REQUEST_ID, id);
    Ok(response)
}
