//! The service's own endpoints: liveness and readiness for orchestrators and load balancers,
//! metrics, the OpenAPI document, and the answers for paths and methods that do not exist.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, Resource, ResponseError as _, Route, web};

use books_domain::BookService;
use serde_json::json;

use crate::blocking::blocking;
use crate::middleware::observe::Metrics;
use crate::middleware::oidc::Issuer;
use crate::representation::problem::ApiError;
use crate::state::State;

/// Liveness
///
/// 200 while the process is up, whatever the database does.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "service",
    responses((status = 200, description = "The process is up", body = serde_json::Value, example = json!({"status": "ok"}))),
)]
pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness
///
/// 200 when the database (the primary) answers, 503 when it does not. With read replicas, the
/// body also says which are in use, which answer, and how far each lags (a replica that is down
/// never makes the service unready: the primary answers its reads). With an OpenID Connect
/// issuer, it says whether the issuer could be reached and how many of its keys are cached
/// (never a reason to be unready either: API keys work without it).
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "service",
    responses((status = 200, description = "The database answers", body = serde_json::Value, example = json!({"status": "ready"}))),
)]
pub(crate) async fn readyz(
    state: web::Data<State>,
    issuer: Option<web::Data<Issuer>>,
) -> Result<HttpResponse, ApiError> {
    blocking(&state.service, BookService::check_storage).await?;
    let mut body = json!({"status": "ready"});
    // Reported, never a reason to be unready: API keys work without the issuer.
    if let Some(issuer) = issuer {
        body["oidc"] = json!(issuer.status());
    }
    let replicas = state.storage.replicas();
    if !replicas.is_empty() {
        body["replicas"] = replicas
            .iter()
            .map(|state| {
                json!({
                    "replica": state.name,
                    "in_use": state.in_use,
                    "reachable": state.reachable,
                    "lag_seconds": state.lag_seconds,
                })
            })
            .collect();
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /metrics`: the Prometheus text format.
pub(crate) async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

/// A resource answering GET (and so HEAD) at `path`, and 405 with `Allow` to any other method.
/// (Without its own default, a resource in a scope that has one answers 404 to other methods.)
pub(crate) fn read_only(path: &str, get: Route) -> Resource {
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

pub(crate) async fn openapi_document(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.documents.v3_1.clone())
}

pub(crate) async fn openapi_3_0_document(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.documents.v3_0.clone())
}

pub(crate) async fn redirect(to: &'static str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, to))
        .finish()
}

pub(crate) async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "there is nothing at {}",
        request.path().chars().take(200).collect::<String>()
    )))
}
