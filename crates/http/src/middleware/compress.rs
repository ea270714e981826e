//! Response compression (gzip, Brotli or zstd, as `Accept-Encoding` asks) for bodies of about
//! 1 KiB and more: actix-web's `Compress` does the work; the two small middlewares here keep small
//! bodies, which compression makes no smaller and only slower, as they are.
//!
//! actix-web compresses every body its client accepts compressed, unless the response already
//! names a `Content-Encoding`. So [`keep_small_bodies_plain`], inside `Compress`, marks a body
//! shorter than [`COMPRESS_FROM`] as `identity`, and [`drop_identity_marks`], outside it, removes
//! the mark before the response leaves (`identity` is not meant to appear in `Content-Encoding`).

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;

/// Bodies at least this long are compressed when the client accepts it.
pub(crate) const COMPRESS_FROM: u64 = 1024;

/// Inside `Compress`: marks short bodies, and event streams, so that they are sent as they are.
/// An event stream is never compressed: a compressor holds small writes back until it has
/// enough to compress, and an event must reach its client when it happens (and each compressed
/// stream would keep a compressor's state, hundreds of KiB, for as long as it is open).
///
/// # Errors
///
/// Those of the inner service.
pub(crate) async fn keep_small_bodies_plain(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(request).await?;
    let small =
        matches!(response.response().body().size(), BodySize::Sized(n) if n < COMPRESS_FROM);
    let events = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    if (small || events) && !response.headers().contains_key(header::CONTENT_ENCODING) {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    Ok(response)
}

/// Outside `Compress`: removes the marks [`keep_small_bodies_plain`] left.
///
/// # Errors
///
/// Those of the inner service.
pub(crate) async fn drop_identity_marks(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(request).await?;
    if response
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|value| value == "identity")
    {
        response.headers_mut().remove(header::CONTENT_ENCODING);
    }
    Ok(response)
}
