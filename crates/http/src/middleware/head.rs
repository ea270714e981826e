//! HEAD, answered wherever GET is.

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;

/// A request marked as a HEAD that is routed as a GET.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadRequest;

/// Answers HEAD wherever GET is answered, with the same status and headers (RFC 9110, 9.3.2):
/// the request is routed as a GET, and actix-web sends no body in answer to a HEAD, whatever the
/// handler produced.
pub(crate) async fn head_as_get(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if request.method() == Method::HEAD {
        request.head_mut().method = Method::GET;
        request.extensions_mut().insert(HeadRequest);
    }
    next.call(request).await
}

impl HeadRequest {
    /// True when `request` came as a HEAD. Handlers whose body is a stream with no end of its
    /// own (a live feed) or a costly one (an export) answer it with their headers alone.
    pub(crate) fn came_as_head(request: &actix_web::HttpRequest) -> bool {
        request.extensions().contains::<Self>()
    }
}
