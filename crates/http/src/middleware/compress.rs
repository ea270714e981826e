//! Response compression (gzip, Brotli or zstd, as `Accept-Encoding` asks) for bodies of 1 KiB and
//! more, on by default.
//!
//! Two paths, because answers come in two shapes:
//! - A body the handler built whole (a book, a page, a search, a batch's answer) is compressed
//!   here, in place, on the worker that built it, by [`compress_whole_bodies`], with encoders
//!   each worker thread keeps and resets. It leaves with a `Content-Length`, in one write.
//! - A streamed body (an export, the tutorial's list) is left to actix-web's `Compress`, which
//!   compresses it chunk by chunk as it is produced, so that it stays streamed.
//!
//! Why not actix-web's `Compress` for everything: it compresses every chunk of 1 KiB or more on
//! the blocking pool (the threads that run the database work, sized to the pool), builds a new
//! encoder for every answer (Brotli's with a 4 MiB window), and sends a whole body as a stream
//! (head, chunks, then the encoder's end as a chunk of its own). On a 3.7 KiB list page that cost
//! 75 % of the throughput at 32 connections (`docs/performance.md`, "Compression on by default").
//!
//! actix-web's `Compress` compresses every body its client accepts compressed, unless the response
//! already names a `Content-Encoding`. So the body that must stay as it is (short, an event
//! stream) is marked `identity` inside `Compress`, and [`drop_identity_marks`], outside it,
//! removes the mark before the response leaves (`identity` is not meant to appear in
//! `Content-Encoding`).

use std::cell::RefCell;
use std::io::Write as _;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{
    self, AcceptEncoding, ContentEncoding, Encoding, Header as _, HeaderValue,
};
use actix_web::middleware::Next;
use actix_web::web::Bytes;

/// Bodies at least this long are compressed when the client accepts it.
pub(crate) const COMPRESS_FROM: u64 = 1024;

/// Whole bodies up to this long are compressed on the worker: at the fast levels used here that
/// takes well under a millisecond. A longer whole body (none of the service's answers is, today)
/// goes to actix-web's `Compress`, which hands its chunks to the blocking pool.
const COMPRESS_IN_PLACE_UP_TO: usize = 256 * 1024;

/// Compression levels: the fastest of each encoder. A list page compresses to about a fifth with
/// each of them; the higher levels win a few percent more for several times the CPU.
const GZIP_LEVEL: u32 = 1;
const ZSTD_LEVEL: i32 = 1;
const BROTLI_QUALITY: u32 = 1;
/// Brotli's window, as a power of two: 64 KiB, larger than any whole body compressed here (the
/// default, 4 MiB, only costs memory).
const BROTLI_WINDOW: u32 = 16;

/// Inside `Compress`: compresses a whole body of 1 KiB or more in the encoding the client prefers
/// and marks short bodies and event streams so that they are sent as they are. An event stream is
/// never compressed: a compressor holds small writes back until it has enough to compress, and an
/// event must reach its client when it happens.
///
/// # Errors
///
/// Those of the inner service.
pub(crate) async fn compress_whole_bodies(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let accepted = AcceptEncoding::parse(request.request()).ok();
    let response = next.call(request).await?;
    if response.headers().contains_key(header::CONTENT_ENCODING)
        || matches!(
            response.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
        )
    {
        return Ok(response.map_into_boxed_body());
    }
    let events = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
    let size = response.response().body().size();
    let small = matches!(size, BodySize::Sized(n) if n < COMPRESS_FROM);
    if events || small {
        let mut response = response.map_into_boxed_body();
        mark_identity(&mut response);
        return Ok(response);
    }
    let whole = matches!(size, BodySize::Sized(n) if n <= COMPRESS_IN_PLACE_UP_TO as u64);
    if !whole {
        // A stream, or a body too long to compress on the worker: `Compress` takes it.
        return Ok(response.map_into_boxed_body());
    }
    let (request, response) = response.into_parts();
    let (mut response, body) = response.into_parts();
    let body = match body.try_into_bytes() {
        Ok(bytes) => bytes,
        // A sized body that is not held in memory: `Compress` streams it.
        Err(body) => {
            return Ok(ServiceResponse::new(
                request,
                response.set_body(body).map_into_boxed_body(),
            ));
        }
    };
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let encoding = accepted
        .and_then(|accepted| accepted.negotiate(SUPPORTED.iter()))
        .and_then(|encoding| match encoding {
            Encoding::Known(encoding) if encoding != ContentEncoding::Identity => Some(encoding),
            _ => None,
        });
    let body = match encoding.map(|encoding| (encoding, compressed(encoding, &body))) {
        Some((encoding, Some(compressed))) => {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, encoding.to_header_value());
            compressed
        }
        _ => {
            let mut response = ServiceResponse::new(request, response.set_body(BoxBody::new(body)));
            mark_identity(&mut response);
            return Ok(response);
        }
    };
    Ok(ServiceResponse::new(
        request,
        response.set_body(BoxBody::new(body)),
    ))
}

/// The encodings offered. Between equal weights actix-web's negotiation prefers Brotli, then
/// zstd, then gzip, whatever the order here or in the request.
const SUPPORTED: [Encoding; 4] = [
    Encoding::Known(ContentEncoding::Zstd),
    Encoding::Known(ContentEncoding::Brotli),
    Encoding::Known(ContentEncoding::Gzip),
    Encoding::Known(ContentEncoding::Identity),
];

fn mark_identity(response: &mut ServiceResponse<BoxBody>) {
    response.headers_mut().insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

thread_local! {
    /// The last body this worker compressed, with the encoding and the result. The requests of a
    /// batch that asked for the same page send the same bytes (`books_application::SharedPage`),
    /// and each worker compresses them once, not once per request. The body is held, so its
    /// memory cannot be freed and reused while it is remembered: the same address and length
    /// are then the same bytes (`Bytes` never change).
    static LAST: RefCell<Option<(Bytes, ContentEncoding, Bytes)>> = const { RefCell::new(None) };
}

/// `body` compressed (the same result as the last time when `body` is the bytes this worker
/// compressed last), or `None` when the encoder failed (the body is then sent as it is).
fn compressed(encoding: ContentEncoding, body: &Bytes) -> Option<Bytes> {
    let remembered = LAST.with_borrow(|last| match last {
        Some((source, was, result))
            if *was == encoding
                && source.as_ptr() == body.as_ptr()
                && source.len() == body.len() =>
        {
            Some(result.clone())
        }
        _ => None,
    });
    if remembered.is_some() {
        return remembered;
    }
    let result = Bytes::from(compress(encoding, body)?);
    LAST.set(Some((body.clone(), encoding, result.clone())));
    Some(result)
}

/// `body` compressed, or `None` when the encoder failed (the body is then sent as it is).
fn compress(encoding: ContentEncoding, body: &[u8]) -> Option<Vec<u8>> {
    match encoding {
        ContentEncoding::Gzip => Some(gzip(body)),
        ContentEncoding::Zstd => zstd(body),
        ContentEncoding::Brotli => brotli(body),
        _ => None,
    }
}

thread_local! {
    /// Each worker's deflate state (about 256 KiB), reset for every answer instead of allocated.
    static DEFLATE: RefCell<flate2::Compress> =
        RefCell::new(flate2::Compress::new(flate2::Compression::new(GZIP_LEVEL), false));
    /// Each worker's zstd context, reused likewise.
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        RefCell::new(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok());
}

/// A gzip member (RFC 1952): the fixed ten-byte header, raw deflate from the thread's reusable
/// state, then the CRC-32 and length of the input. flate2's `GzEncoder` would allocate a new
/// deflate state for every answer.
fn gzip(body: &[u8]) -> Vec<u8> {
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut out = Vec::with_capacity(body.len() / 3 + 64);
    out.extend_from_slice(&HEADER);
    DEFLATE.with_borrow_mut(|deflate| {
        deflate.reset();
        loop {
            let read = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX);
            out.reserve(body.len().saturating_sub(read) / 2 + 64);
            match deflate.compress_vec(&body[read..], &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => {}
                // Deflate fails only on a misuse of its state, which `reset` rules out.
                Err(error) => unreachable!("deflate failed: {error}"),
            }
        }
    });
    let mut crc = flate2::Crc::new();
    crc.update(body);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952, 2.3.1).
    let length = u32::try_from(body.len() & 0xFFFF_FFFF).unwrap_or(u32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out
}

fn zstd(body: &[u8]) -> Option<Vec<u8>> {
    ZSTD.with_borrow_mut(|compressor| compressor.as_mut()?.compress(body).ok())
}

fn brotli(body: &[u8]) -> Option<Vec<u8>> {
    let mut writer = brotli::CompressorWriter::new(
        Vec::with_capacity(body.len() / 3 + 64),
        4096,
        BROTLI_QUALITY,
        BROTLI_WINDOW,
    );
    writer.write_all(body).ok()?;
    // `into_inner` ends the stream.
    Some(writer.into_inner())
}

/// Outside `Compress`: removes the marks [`compress_whole_bodies`] left.
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

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn page() -> Vec<u8> {
        (0..40)
            .map(|i| {
                format!(r#"{{"id":{i},"title":"A title of some length {i}","author":"Someone"}},"#)
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn gzip_answers_decode_to_the_body_each_time_the_state_is_reused() {
        for _ in 0..3 {
            let body = page();
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(gzip(&body).as_slice())
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, body);
        }
    }

    #[test]
    fn one_body_sent_to_several_requests_is_compressed_once_and_any_other_body_anew() {
        let shared = Bytes::from(page());
        // Two requests' bodies: clones of one `Bytes`, as `SharedPage` hands them out.
        let (one, another) = (shared.clone(), shared.clone());
        let first = compressed(ContentEncoding::Gzip, &one).unwrap();
        let again = compressed(ContentEncoding::Gzip, &another).unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr(), "compressed once");
        // The same text in other bytes, another encoding, or a body freed in between: each is
        // compressed on its own, and decodes to its own body.
        let copy = Bytes::from(page());
        let other = compressed(ContentEncoding::Gzip, &copy).unwrap();
        assert_ne!(first.as_ptr(), other.as_ptr());
        let zstd = compressed(ContentEncoding::Zstd, &copy).unwrap();
        assert_eq!(zstd::stream::decode_all(&zstd[..]).unwrap(), page());
        drop((shared, one, another, copy));
        for round in 0..50 {
            let body = Bytes::from(format!("{round:04}").repeat(400));
            let result = compressed(ContentEncoding::Gzip, &body).unwrap();
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&result[..])
                .read_to_end(&mut decoded)
                .unwrap();
            assert_eq!(decoded, body, "round {round}");
        }
    }

    #[test]
    fn zstd_and_brotli_answers_decode_to_the_body() {
        let body = page();
        let zstd = zstd(&body).unwrap();
        assert!(
            zstd.len() < body.len() / 3,
            "{} of {}",
            zstd.len(),
            body.len()
        );
        assert_eq!(zstd::stream::decode_all(zstd.as_slice()).unwrap(), body);
        let brotli = brotli(&body).unwrap();
        assert!(
            brotli.len() < body.len() / 3,
            "{} of {}",
            brotli.len(),
            body.len()
        );
        let mut decoded = Vec::new();
        brotli::Decompressor::new(brotli.as_slice(), 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, body);
    }
}
