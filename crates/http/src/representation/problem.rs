//! Errors at the HTTP edge, and the one place they become responses.
//!
//! The policy: inside the request path, errors are typed (the domain's per-use-case enums); here
//! they become one [`ApiError`], rendered as an RFC 9457 `application/problem+json` body. Client
//! errors say exactly what to fix. Server errors are logged with their whole cause chain and the
//! client gets only the status and a generic sentence: a driver message or a connection string in
//! a response would tell an attacker about our internals and tell a client nothing useful.
//!
//! Responses that actix-web produces by itself (no such route, wrong method, a body too large)
//! pass through [`render_problem`], so that every error, whoever made it, has the same shape.

use std::fmt;

use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use books_domain::{
    BookId, ChangesError, CreateBookError, GetBookError, InvalidBatch, InvalidBook, IsbnTaken,
    ListBooksError, MAX_BATCH, StorageError, WriteBookError,
};

use crate::representation::schemas::{FieldViolation, Problem};

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client should wait before retrying when the database is unavailable.
const RETRY_AFTER_SECONDS: &str = "2";

/// Everything a request can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: malformed JSON, a bad query parameter, a bad path id.
    BadRequest(String),
    /// 401: no credentials where they are needed, or credentials that are not valid.
    Unauthorized {
        /// What to send.
        detail: String,
        /// True when a credential was sent but is not valid.
        invalid_token: bool,
    },
    /// 403: valid credentials without the needed scope.
    Forbidden(String),
    /// 404: no such book.
    NotFound(String),
    /// 408: the request body stalled or took too long; what the limits are.
    RequestTimeout(String),
    /// 405: the route exists, but not with this method (the caller adds `Allow`).
    MethodNotAllowed(String),
    /// 410: what was asked for is no longer kept (changes past the retention).
    Gone(String),
    /// 406: the operation has no representation the client accepts.
    NotAcceptable(String),
    /// 409: a request with the same idempotency key is still in flight.
    Conflict(String),
    /// 409: the ISBN belongs to another book, which the problem names (`existing`).
    IsbnTaken(IsbnTaken),
    /// 412: an `If-Match` precondition failed.
    PreconditionFailed(String),
    /// 413: the body is larger than the operation accepts (the limit in bytes).
    PayloadTooLarge(usize),
    /// 415: the body is not of a media type the operation accepts.
    UnsupportedMediaType(String),
    /// 422: fields failed validation; each one is listed.
    Unprocessable(Vec<FieldViolation>),
    /// 422: the body as a whole is not what the operation takes (not a JSON object, say).
    InvalidBody(String),
    /// 429: the caller's rate limit is used up.
    TooManyRequests {
        /// What happened.
        detail: String,
        /// Seconds until a request will be accepted.
        retry_after: u64,
    },
    /// 503: the instance is at a limit of its own (say which); retry shortly.
    Busy(String),
    /// 503: the database cannot be reached or no connection was free in time.
    Unavailable(anyhow::Error),
    /// 500: a bug. Logged, never described to the client.
    Internal(anyhow::Error),
}

impl ApiError {
    fn detail(&self) -> String {
        match self {
            Self::BadRequest(detail)
            | Self::Unauthorized { detail, .. }
            | Self::Forbidden(detail)
            | Self::TooManyRequests { detail, .. }
            | Self::NotFound(detail)
            | Self::Conflict(detail)
            | Self::PreconditionFailed(detail)
            | Self::UnsupportedMediaType(detail)
            | Self::NotAcceptable(detail)
            | Self::Gone(detail)
            | Self::Busy(detail)
            | Self::InvalidBody(detail) => detail.clone(),
            Self::MethodNotAllowed(method) => format!("{method} is not allowed here"),
            Self::RequestTimeout(detail) => detail.clone(),
            Self::PayloadTooLarge(limit) => {
                format!("the request body must be at most {}", bytes(*limit))
            }
            Self::Unprocessable(errors) => errors
                .iter()
                .map(|e| format!("{} {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            Self::IsbnTaken(taken) => format!(
                "the isbn {} belongs to another book, {}",
                taken.isbn,
                book_path(taken.existing)
            ),
            Self::Unavailable(_) => "the database is unavailable; retry shortly".to_owned(),
            Self::Internal(_) => "the server failed to handle the request".to_owned(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unavailable(cause) | Self::Internal(cause) => write!(f, "{cause:#}"),
            _ => f.write_str(&self.detail()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) | Self::IsbnTaken(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) | Self::InvalidBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Gone(_) => StatusCode::GONE,
            Self::Busy(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "database unavailable")
            }
            Self::Internal(cause) => {
                tracing::error!(error = format!("{cause:?}"), "request failed")
            }
            _ => {}
        }
        let errors = match self {
            Self::Unprocessable(errors) => errors.clone(),
            _ => Vec::new(),
        };
        let mut response = match self {
            Self::IsbnTaken(taken) => problem_response_naming(
                self.status_code(),
                self.detail(),
                book_path(taken.existing),
            ),
            _ => problem_response(self.status_code(), self.detail(), errors),
        };
        if let Self::TooManyRequests { retry_after, .. } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        // RFC 6750, 3: the challenge says what was wrong with the credential. Its description is
        // the problem's detail, words of ours that name the check, never an internal error.
        let challenge = match self {
            Self::Unauthorized {
                invalid_token: true,
                detail,
            } => Some(format!(
                "Bearer realm=\"books-api\", error=\"invalid_token\", error_description=\"{}\"",
                detail.replace(['"', '\\'], "'")
            )),
            Self::Unauthorized { .. } => Some("Bearer realm=\"books-api\"".to_owned()),
            Self::Forbidden(_) => {
                Some("Bearer realm=\"books-api\", error=\"insufficient_scope\"".to_owned())
            }
            _ => None,
        };
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// A size in the unit it is written in (64 KiB, 1 MiB).
fn bytes(size: usize) -> String {
    match size {
        size if size % (1024 * 1024) == 0 => format!("{} MiB", size / (1024 * 1024)),
        size if size % 1024 == 0 => format!("{} KiB", size / 1024),
        size => format!("{size} bytes"),
    }
}

/// The status's name as RFC 9110 gives it (actix-web still uses some older names).
fn title_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable Content",
        StatusCode::PAYLOAD_TOO_LARGE => "Content Too Large",
        _ => status.canonical_reason().unwrap_or("Error"),
    }
}

/// The path of a book, as `Location` and a problem's `existing` give it.
pub(crate) fn book_path(id: BookId) -> String {
    format!("/api/v1/books/{id}")
}

/// A problem+json response. Errors are never cached: they describe one moment.
pub(crate) fn problem_response(
    status: StatusCode,
    detail: String,
    errors: Vec<FieldViolation>,
) -> HttpResponse {
    respond(Problem {
        kind: "about:blank".to_owned(),
        title: title_of(status).to_owned(),
        status: status.as_u16(),
        detail,
        errors,
        existing: None,
    })
}

/// A problem+json response naming the resource that stands in the way (`existing`).
fn problem_response_naming(status: StatusCode, detail: String, existing: String) -> HttpResponse {
    respond(Problem {
        kind: "about:blank".to_owned(),
        title: title_of(status).to_owned(),
        status: status.as_u16(),
        detail,
        errors: Vec::new(),
        existing: Some(existing),
    })
}

fn respond(problem: Problem) -> HttpResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response
        .content_type(PROBLEM_JSON)
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS));
    }
    response.json(problem)
}

/// Turns an error response that actix-web made by itself into problem+json, keeping its status
/// and headers such as `Allow`. Responses that are problem+json already pass through.
///
/// # Errors
///
/// Never; the signature is the one `ErrorHandlers` wants.
pub(crate) fn render_problem<B>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let detail = match status {
        StatusCode::NOT_FOUND => "there is nothing at this path".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => format!("{} is not allowed here", res.request().method()),
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large".to_owned(),
        // A framework's own wording may name its internals; the status's phrase says enough.
        status if status.is_client_error() => format!(
            "the request was refused: {}",
            status
                .canonical_reason()
                .unwrap_or("client error")
                .to_lowercase()
        ),
        _ => {
            if let Some(error) = res.response().error() {
                tracing::error!(error = %error, "request failed");
            }
            "the server failed to handle the request".to_owned()
        }
    };
    let kept: Vec<(header::HeaderName, HeaderValue)> = [
        header::ALLOW,
        header::RETRY_AFTER,
        header::HeaderName::from_static("accept-patch"),
    ]
    .into_iter()
    .filter_map(|name| res.headers().get(&name).map(|value| (name, value.clone())))
    .collect();
    let (request, _) = res.into_parts();
    let mut response = problem_response(status, detail, Vec::new());
    for (name, value) in kept {
        response.headers_mut().insert(name, value);
    }
    with_head_allowed(response.headers_mut());
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(request, response).map_into_right_body(),
    ))
}

/// HEAD is answered wherever GET is, so an `Allow` that names GET names HEAD too.
fn with_head_allowed(headers: &mut header::HeaderMap) {
    let Some(allowed) = headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let methods: Vec<&str> = allowed.split(',').map(str::trim).collect();
    if methods.contains(&"GET") && !methods.contains(&"HEAD") {
        let with_head = format!("{allowed}, HEAD");
        if let Ok(value) = HeaderValue::from_str(&with_head) {
            headers.insert(header::ALLOW, value);
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Unavailable(cause) => Self::Unavailable(cause),
            StorageError::Unknown(cause) => Self::Internal(cause),
        }
    }
}

impl From<CreateBookError> for ApiError {
    fn from(error: CreateBookError) -> Self {
        match error {
            CreateBookError::KeyReused => Self::Unprocessable(vec![FieldViolation {
                field: "Idempotency-Key".to_owned(),
                message: "was already used with a different request body".to_owned(),
            }]),
            CreateBookError::KeyInFlight => Self::Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly"
                    .to_owned(),
            ),
            CreateBookError::IsbnTaken(taken) => Self::IsbnTaken(taken),
            CreateBookError::Storage(error) => error.into(),
        }
    }
}

impl From<ListBooksError> for ApiError {
    fn from(error: ListBooksError) -> Self {
        match error {
            ListBooksError::Storage(error) => error.into(),
        }
    }
}

impl From<ChangesError> for ApiError {
    fn from(error: ChangesError) -> Self {
        match error {
            ChangesError::Expired { purged_through } => Self::Gone(format!(
                "changes up to {purged_through} are no longer kept: start again from a full export \
                 (GET /api/v1/books/export, whose Changes-After header says where to follow on)"
            )),
            ChangesError::Ahead { after, newest } => Self::Conflict(format!(
                "{after} is past the newest change, {newest}: this position was never reached \
                 here (a failover replaced the server it came from?); start again from a full \
                 export (GET /api/v1/books/export, whose Changes-After header says where to follow on)"
            )),
            ChangesError::Storage(error) => error.into(),
        }
    }
}

impl From<books_domain::WebhookError> for ApiError {
    fn from(error: books_domain::WebhookError) -> Self {
        use books_domain::WebhookError;
        match error {
            WebhookError::NotFound(id) => {
                Self::NotFound(format!("you have no webhook subscription with id {id}"))
            }
            WebhookError::TooMany => Self::Unprocessable(vec![FieldViolation {
                field: "url".to_owned(),
                message: format!(
                    "you already hold {} subscriptions, the most a caller may: delete one first",
                    books_domain::MAX_SUBSCRIPTIONS
                ),
            }]),
            WebhookError::Position(error) => error.into(),
            WebhookError::Storage(error) => error.into(),
        }
    }
}

impl From<GetBookError> for ApiError {
    fn from(error: GetBookError) -> Self {
        match error {
            GetBookError::NotFound(id) => Self::NotFound(format!("there is no book with id {id}")),
            GetBookError::Storage(error) => error.into(),
        }
    }
}

impl From<WriteBookError> for ApiError {
    fn from(error: WriteBookError) -> Self {
        match error {
            WriteBookError::NotFound(id) => {
                Self::NotFound(format!("there is no book with id {id}"))
            }
            WriteBookError::VersionMismatch { id, current } => Self::PreconditionFailed(format!(
                "book {id} is at version {current}, which matches none of the ETags in If-Match; fetch it again"
            )),
            WriteBookError::IsbnTaken(taken) => Self::IsbnTaken(taken),
            WriteBookError::Storage(error) => error.into(),
        }
    }
}

impl From<InvalidBatch> for ApiError {
    fn from(invalid: InvalidBatch) -> Self {
        let (field, message) = match invalid {
            InvalidBatch::Size(_) => (
                "books".to_owned(),
                format!("must hold 1 to {MAX_BATCH} books"),
            ),
            InvalidBatch::RepeatedIsbn { first, again } => (
                format!("books[{again}].isbn"),
                format!("repeats the isbn of books[{first}]: an ISBN names one book"),
            ),
        };
        Self::Unprocessable(vec![FieldViolation { field, message }])
    }
}

impl From<InvalidBook> for ApiError {
    fn from(invalid: InvalidBook) -> Self {
        Self::Unprocessable(invalid.errors.iter().map(FieldViolation::from).collect())
    }
}
