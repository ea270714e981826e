//! Liveness and readiness, for orchestrators and load balancers.

use actix_web::{HttpResponse, web};
use books_domain::BookService;
use serde_json::json;

use crate::books::blocking;
use crate::error::ApiError;

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
/// 200 when the database answers, 503 when it does not.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "service",
    responses((status = 200, description = "The database answers", body = serde_json::Value, example = json!({"status": "ready"}))),
)]
pub(crate) async fn readyz(service: web::Data<BookService>) -> Result<HttpResponse, ApiError> {
    blocking(&service, BookService::check_storage).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
