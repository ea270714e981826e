//! The HTTP application: routes, middleware and the server around them.

use std::net::TcpListener;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::{Condition, DefaultHeaders, ErrorHandlers, Next, from_fn};
use actix_web::{
    App, HttpMessage as _, HttpRequest, HttpResponse, HttpServer, Resource, ResponseError as _,
    Route, web,
};
use anyhow::Context;
use books_domain::{BookService, KeyService};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::auth::{KeyCache, admit};
use crate::books::{self, BASE};
use crate::error::{ApiError, render_problem};
use crate::observe::{self, Metrics, PoolProbe, observe};
use crate::openapi::document_json;
use crate::ratelimit::{RateLimit, RateLimiter};
use crate::{legacy, probes};

/// The most connections one worker serves at once.
pub const MAX_CONNECTIONS_PER_WORKER: usize = 2048;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Async worker threads (each serves many connections; database calls run on the blocking pool).
    pub workers: usize,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub shutdown_timeout: Duration,
    /// Stop on SIGINT and SIGTERM. Off in tests, where the test stops the server.
    pub handle_signals: bool,
    /// Threads per worker for database work (see [`Application::build`]).
    pub blocking_threads_per_worker: usize,
    /// Requests per caller, or `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Origins allowed to call from a browser (CORS); none by default.
    pub cors_origins: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            shutdown_timeout: Duration::from_secs(10),
            handle_signals: true,
            blocking_threads_per_worker: 8,
            rate_limit: RateLimit::per_second(100),
            cors_origins: Vec::new(),
        }
    }
}

/// What the server serves: the use cases, and what it reports on.
pub struct Services {
    /// The catalogue.
    pub books: BookService,
    /// The API keys.
    pub keys: KeyService,
    /// The database pool's state, for `/metrics`.
    pub pool_probe: Option<PoolProbe>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").finish_non_exhaustive()
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
    service: BookService,
    key_cache: web::Data<KeyCache>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Builds the server on `listener` (bind port 0 to let the system choose).
    ///
    /// # Errors
    ///
    /// When the listener cannot be used.
    pub fn build(
        listener: TcpListener,
        services: Services,
        settings: &ServerSettings,
    ) -> anyhow::Result<Self> {
        let Services {
            books: service,
            keys,
            pool_probe,
        } = services;
        let port = listener
            .local_addr()
            .context("the listener has no address")?
            .port();
        let data = web::Data::new(service.clone());
        let key_cache = web::Data::new(KeyCache::load(keys));
        let key_cache_for_workers = key_cache.clone();
        let metrics = web::Data::new(Metrics::new(pool_probe));
        let cors_origins = settings.cors_origins.clone();
        let limiter = settings
            .rate_limit
            .map(|limit| web::Data::new(RateLimiter::new(limit)));
        let document = web::Data::new(document_json());
        let mut server = HttpServer::new(move || {
            let app = App::new()
                .app_data(data.clone())
                .app_data(key_cache_for_workers.clone())
                .app_data(metrics.clone())
                .app_data(document.clone());
            let app = match &limiter {
                Some(limiter) => app.app_data(limiter.clone()),
                None => app,
            };
            app.wrap(from_fn(head_as_get))
                .wrap(Condition::new(
                    !cors_origins.is_empty(),
                    cors(&cors_origins),
                ))
                .configure(configure)
        })
        .workers(settings.workers)
        // Database work runs on each worker's blocking threads. As many of them as there are
        // pooled connections is enough: more only park on the pool's lock, and on a small machine
        // every parked and woken thread costs the CPU the database needs.
        .worker_max_blocking_threads(settings.blocking_threads_per_worker)
        // A client gets 5 s to send its request head (its body: see `body::Body`), and an idle
        // connection is closed after 15 s: idle connections cost memory and file descriptors,
        // and a client that holds thousands of them open must not be able to keep them. (Set a
        // load balancer's idle timeout below 15 s, so that it closes first.)
        .client_request_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(15))
        // Past this many connections a worker stops accepting; the rest wait in the backlog.
        .max_connections(MAX_CONNECTIONS_PER_WORKER)
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .listen(listener)
        .context("could not listen")?;
        if !settings.handle_signals {
            server = server.disable_signals();
        }
        Ok(Self {
            port,
            server: server.run(),
            service,
            key_cache,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle to stop the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (by a signal, or through its handle), then returns once
    /// in-flight requests have finished or the shutdown timeout has passed.
    ///
    /// # Errors
    ///
    /// When the server fails.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let purge = actix_web::rt::spawn(forget_expired_keys_periodically(self.service));
        let refresh = actix_web::rt::spawn(KeyCache::refresh_periodically(self.key_cache));
        let outcome = self.server.await;
        purge.abort();
        refresh.abort();
        outcome
    }
}

/// Cross-origin access for the given origins (`*` for any), with the headers clients need to
/// read: validators, paging links, limits and request ids.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::LINK,
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("ratelimit-limit"),
            header::HeaderName::from_static("ratelimit-remaining"),
            header::HeaderName::from_static("ratelimit-reset"),
        ])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}

/// Forgets expired idempotency keys once an hour, off the request path, on the blocking pool.
/// With several instances each one purges; the deletes are idempotent, so that is harmless.
async fn forget_expired_keys_periodically(service: BookService) {
    let mut interval = actix_web::rt::time::interval(Duration::from_secs(3600));
    loop {
        interval.tick().await;
        match books::blocking(&service, BookService::forget_expired_keys).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "forgot expired idempotency keys"),
            Err(error) => {
                tracing::warn!(error = %error, "could not forget expired idempotency keys")
            }
        }
    }
}

/// Everything the application serves, with its middleware. Needs `web::Data<BookService>` and
/// `web::Data<String>` (the OpenAPI document) in the app data.
pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("")
            .wrap(ErrorHandlers::new().default_handler(render_problem))
            .wrap(DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")))
            .wrap(from_fn(observe))
            .service(
                web::scope(BASE)
                    .wrap(from_fn(admit))
                    .service(
                        web::resource("/books")
                            .route(web::get().to(books::list_books))
                            .route(web::post().to(books::create_book)),
                    )
                    .service(
                        web::resource("/books/{id}")
                            .route(web::get().to(books::get_book))
                            .route(web::put().to(books::replace_book))
                            .route(web::patch().to(books::patch_book))
                            .route(web::delete().to(books::delete_book)),
                    ),
            )
            .service(
                web::scope("/booksApi")
                    .wrap(from_fn(admit))
                    .service(
                        web::resource("")
                            .route(web::get().to(legacy::list))
                            .route(web::post().to(legacy::create)),
                    )
                    .service(
                        web::resource("/{id}")
                            .route(web::get().to(legacy::get))
                            .route(web::put().to(legacy::update))
                            .route(web::delete().to(legacy::delete)),
                    ),
            )
            .service(read_only(
                "/api-docs/openapi.json",
                web::get().to(openapi_document),
            ))
            .service(
                SwaggerUi::new("/swagger-ui/{_:.*}").config(Config::from("/api-docs/openapi.json")),
            )
            .service(read_only(
                "/swagger-ui",
                web::get().to(|| redirect("/swagger-ui/")),
            ))
            .service(read_only("/", web::get().to(|| redirect("/swagger-ui/"))))
            .service(read_only("/healthz", web::get().to(probes::healthz)))
            .service(read_only("/readyz", web::get().to(probes::readyz)))
            .service(read_only("/metrics", web::get().to(observe::metrics)))
            .default_service(web::to(not_found)),
    );
}

/// A resource answering GET (and so HEAD) at `path`, and 405 with `Allow` to any other method.
/// (Without its own default, a resource in a scope that has one answers 404 to other methods.)
fn read_only(path: &str, get: Route) -> Resource {
    web::resource(path)
        .route(get)
        .default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(request: HttpRequest) -> HttpResponse {
    let mut response = ApiError::MethodNotAllowed(request.method().to_string()).error_response();
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    response
}

/// A request marked as a HEAD that is routed as a GET.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadRequest;

/// Answers HEAD wherever GET is answered, with the same status and headers (RFC 9110, 9.3.2):
/// the request is routed as a GET, and actix-web sends no body in answer to a HEAD, whatever the
/// handler produced.
async fn head_as_get(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if request.method() == Method::HEAD {
        request.head_mut().method = Method::GET;
        request.extensions_mut().insert(HeadRequest);
    }
    next.call(request).await
}

async fn openapi_document(document: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.get_ref().clone())
}

async fn redirect(to: &'static str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, to))
        .finish()
}

async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "there is nothing at {}",
        request.path().chars().take(200).collect::<String>()
    )))
}
