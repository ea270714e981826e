//! What operators see: a tracing span and a request id per request, one log line per request,
//! and Prometheus metrics.
//!
//! The span ([`RequestSpan`], through `tracing-actix-web`) carries the request id, so anything
//! logged while the request is handled, deep in a use case included, can be matched to it. The
//! metrics are kept by the `metrics` crate's Prometheus exporter, one registry per server; the
//! route template (`/api/v1/books/{id}`, or `unmatched`), not the path, and a fixed set of methods
//! keep the number of series bounded whatever clients send.

pub(crate) mod gauges;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _, web};
use books_domain::{PoolStatus, StorageHealth};
use metrics::{Key, Label, Metadata, Recorder as _};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;

use crate::middleware::head::HeadRequest;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const METADATA: Metadata<'static> = Metadata::new("books_http", metrics::Level::INFO, None);
/// The methods that have series of their own; any other (TRACE, CONNECT, PROPFIND, FOO…) is
/// labelled `other`.
const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The service's metrics: a Prometheus registry of its own (so that several servers in one
/// process, as in the tests, never mix their counts), and storage's health (its pool).
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    storage: Arc<dyn StorageHealth>,
    gauges: Vec<(Key, Gauge)>,
    webhooks: Option<Arc<crate::webhooks::WebhookStats>>,
    /// Requests being answered now (until their head is ready): how busy the instance is, which
    /// background work (webhooks) reads to yield.
    in_flight: Arc<AtomicUsize>,
    /// The handles of each request series seen so far, by method and status, then route.
    series: RwLock<SeriesByLabels>,
}

/// Request series by method and status, then by route (looked up by a borrowed `&str`).
type SeriesByLabels = HashMap<(&'static str, u16), HashMap<Box<str>, Series>>;

/// The two series of requests with one method, route and status.
struct Series {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl Series {
    fn record(&self, seconds: f64) {
        self.requests.increment(1);
        self.duration.record(seconds);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A poisoned lock still holds usable handles: nothing here is left half-written.
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts one request in flight for as long as it lives, however its handling ends.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A gauge read when `/metrics` is asked for.
pub type Gauge = Box<dyn Fn() -> f64 + Send + Sync>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Each series the service exports, with its help text. The names are the service's contract
/// with its dashboards: they do not change.
const DESCRIPTIONS: [(&str, &str); 9] = [
    (
        "http_requests_total",
        "Requests answered, by method, route template and status.",
    ),
    (
        "http_request_duration_seconds",
        "Time to answer, by method, route template and status.",
    ),
    (
        "http_server_errors_total",
        "Answers with a 5xx status other than 503.",
    ),
    (
        "database_unavailable_total",
        "Answers of 503 because the database was unreachable or busy.",
    ),
    (
        "db_pool_max_connections",
        "The most connections the pool opens.",
    ),
    (
        "db_pool_waiting",
        "Requests waiting for a database connection.",
    ),
    (
        "db_pool_connections",
        "Database connections open in the pool.",
    ),
    ("db_pool_idle_connections", "Open connections not in use."),
    ("db_pool_busy_connections", "Open connections in use."),
];

impl Metrics {
    /// Empty metrics; `storage` reports its pool, if it has one.
    pub fn new(storage: Arc<dyn StorageHealth>) -> Self {
        // The builder refuses only an empty bucket list.
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".to_owned()),
                &BUCKETS,
            )
            .map_or_else(
                |_| PrometheusBuilder::new().build_recorder(),
                PrometheusBuilder::build_recorder,
            );
        for (name, help) in DESCRIPTIONS {
            if name.starts_with("http_request_duration") {
                recorder.describe_histogram(name.into(), None, help.into());
            } else if name.starts_with("db_pool") {
                recorder.describe_gauge(name.into(), None, help.into());
            } else {
                recorder.describe_counter(name.into(), None, help.into());
            }
        }
        // Zero until something happens, rather than absent.
        for name in ["http_server_errors_total", "database_unavailable_total"] {
            recorder
                .register_counter(&Key::from_static_name(name), &METADATA)
                .absolute(0);
        }
        let handle = recorder.handle();
        Self {
            recorder,
            handle,
            storage,
            gauges: Vec::new(),
            webhooks: None,
            in_flight: Arc::new(AtomicUsize::new(0)),
            series: RwLock::new(HashMap::new()),
        }
    }

    /// Folds the samples recorded since the last call into the histograms' buckets: the
    /// exporter keeps every sample until then (a scrape does it too).
    pub(crate) fn drain_histograms(&self) {
        self.handle.run_upkeep();
    }

    /// The count of requests in flight, shared.
    pub(crate) fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// Reports webhook deliveries: attempts by outcome, and each subscription's lag.
    #[must_use]
    pub(crate) fn reporting_webhooks(mut self, stats: Arc<crate::webhooks::WebhookStats>) -> Self {
        self.recorder.describe_counter(
            "webhook_deliveries_total".into(),
            None,
            "Webhook delivery attempts by this instance, by outcome: delivered (acknowledged), \
             retried (failed, to be tried again), failed (the subscription gave up or was disabled)."
                .into(),
        );
        self.recorder.describe_gauge(
            "webhook_lag_seconds".into(),
            None,
            "For each subscription this instance delivers to and that is behind the feed: seconds \
             since its oldest undelivered change was made."
                .into(),
        );
        self.webhooks = Some(stats);
        self
    }

    /// Reports `read()` as the gauge `name` at each scrape.
    #[must_use]
    pub fn with_gauge(self, name: &'static str, help: &'static str, read: Gauge) -> Self {
        self.with_labeled_gauge(name, help, Vec::new(), read)
    }

    /// Reports `read()` as the gauge `name` with `labels` at each scrape.
    #[must_use]
    pub fn with_labeled_gauge(
        mut self,
        name: &'static str,
        help: &'static str,
        labels: Vec<(&'static str, String)>,
        read: Gauge,
    ) -> Self {
        self.recorder.describe_gauge(name.into(), None, help.into());
        let labels: Vec<Label> = labels
            .into_iter()
            .map(|(label, value)| Label::new(label, value))
            .collect();
        self.gauges.push((Key::from_parts(name, labels), read));
        self
    }

    fn record(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let counter = |name: &'static str| {
            self.recorder
                .register_counter(&Key::from_static_name(name), &METADATA)
                .increment(1);
        };
        match status {
            503 => counter("database_unavailable_total"),
            500..=599 => counter("http_server_errors_total"),
            _ => {}
        }
        // The series' handles are looked up by borrowed parts: building the labelled keys and
        // finding them in the registry for every request cost GET by id 3 % of its CPU.
        let known = read(&self.series)
            .get(&(method, status))
            .and_then(|routes| routes.get(route))
            .map(|series| series.record(seconds))
            .is_some();
        if !known {
            let series = self.series_of(method, route, status);
            series.record(seconds);
            write(&self.series)
                .entry((method, status))
                .or_default()
                .insert(route.into(), series);
        }
    }

    /// The handles of one request series, registered.
    fn series_of(&self, method: &'static str, route: &str, status: u16) -> Series {
        let labels = vec![
            Label::new("method", method),
            Label::new("route", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        Series {
            duration: self.recorder.register_histogram(
                &Key::from_parts("http_request_duration_seconds", labels.clone()),
                &METADATA,
            ),
            requests: self
                .recorder
                .register_counter(&Key::from_parts("http_requests_total", labels), &METADATA),
        }
    }

    /// The metrics in the Prometheus text format, the pool's state read now.
    pub fn render(&self) -> String {
        if let Some(pool) = self.storage.pool() {
            let PoolStatus {
                max,
                open,
                idle,
                waiting,
            } = pool;
            let gauges = [
                ("db_pool_max_connections", f64::from(max)),
                ("db_pool_waiting", waiting as f64),
                ("db_pool_connections", f64::from(open)),
                ("db_pool_idle_connections", f64::from(idle)),
                (
                    "db_pool_busy_connections",
                    f64::from(open.saturating_sub(idle)),
                ),
            ];
            for (name, value) in gauges {
                self.recorder
                    .register_gauge(&Key::from_static_name(name), &METADATA)
                    .set(value);
            }
        }
        for (key, read) in &self.gauges {
            self.recorder.register_gauge(key, &METADATA).set(read());
        }
        if let Some(stats) = &self.webhooks {
            for (outcome, count) in stats.counts() {
                let key = Key::from_parts(
                    "webhook_deliveries_total",
                    vec![Label::new("outcome", outcome)],
                );
                self.recorder
                    .register_counter(&key, &METADATA)
                    .absolute(count);
            }
            for (id, lag) in stats.lags() {
                let key = Key::from_parts(
                    "webhook_lag_seconds",
                    vec![Label::new("subscription", id.to_string())],
                );
                self.recorder.register_gauge(&key, &METADATA).set(lag);
            }
        }
        self.handle.render()
    }
}

/// A request's id: the client's `X-Request-Id` (1 to 128 visible ASCII characters), or a new one.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(HeaderValue);

impl RequestId {
    fn of(request: &ServiceRequest) -> Self {
        let given = request.headers().get(&REQUEST_ID).filter(|value| {
            let bytes = value.as_bytes();
            (1..=128).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
        });
        if let Some(value) = given {
            return Self(value.clone());
        }
        // `TracingLogger` has drawn a random UUID for the request already: drawing another one
        // would be a second `getrandom` call per request (with formatting, 3 % of GET by id's
        // CPU).
        if let Some(drawn) = request.extensions().get::<tracing_actix_web::RequestId>() {
            let mut text = [0_u8; uuid::fmt::Simple::LENGTH];
            let hex = drawn.simple().encode_lower(&mut text);
            if let Ok(value) = HeaderValue::from_str(hex) {
                return Self(value);
            }
        }
        let mut bytes = [0_u8; 12];
        // Without randomness a request id is still useful as long as it is unique enough to
        // grep: fall back to the clock.
        if getrandom::fill(&mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            bytes.copy_from_slice(&nanos.to_be_bytes()[4..]);
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(HeaderValue::from_str(&hex).unwrap_or_else(|_| HeaderValue::from_static("unknown")))
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }
}

/// The route template a request matched (`/api/v1/books/{id}`), or `unmatched`.
#[derive(Debug, Clone)]
struct Route(String);

/// The span of each request, opened by `tracing_actix_web::TracingLogger` before anything else
/// runs: it carries the request id, method and route template, and the status once known.
#[derive(Debug)]
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let id = RequestId::of(request);
        // Matched once here (it walks the route table again) and kept for `observe`'s metrics.
        let route = Route(
            request
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned()),
        );
        let span = tracing::info_span!(
            "request",
            request_id = id.as_str(),
            method = %request.method(),
            route = route.0,
            status = tracing::field::Empty,
        );
        let mut extensions = request.extensions_mut();
        extensions.insert(id);
        extensions.insert(route);
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        if let Ok(response) = outcome {
            span.record("status", response.status().as_u16());
        }
    }
}

/// Echoes the request id in `X-Request-Id`, logs one line for the request and records it.
///
/// # Errors
///
/// Those of the inner service.
pub(crate) async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(|| RequestId::of(&request));
    let method = if request.extensions().contains::<HeadRequest>() {
        Method::HEAD
    } else {
        request.method().clone()
    };
    let path = request.path().to_owned();
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    let counted = metrics
        .as_ref()
        .map(|metrics| InFlight::new(&metrics.in_flight));
    let mut response = next.call(request).await?;
    drop(counted);
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    if let Some(metrics) = metrics {
        // The template, not the path, and known methods only: the number of series stays
        // bounded whatever clients send.
        let series_method = KNOWN_METHODS
            .into_iter()
            .find(|known| *known == method.as_str())
            .unwrap_or("other");
        let request = response.request();
        let extensions = request.extensions();
        match extensions.get::<Route>() {
            Some(Route(route)) => metrics.record(series_method, route, status, seconds),
            None => {
                let route = request.match_pattern();
                let route = route.as_deref().unwrap_or("unmatched");
                metrics.record(series_method, route, status, seconds);
            }
        }
    }
    tracing::info!(method = %method, path, status, ms = seconds * 1000.0, "request");
    response.headers_mut().insert(REQUEST_ID, id.0);
    Ok(response)
}
