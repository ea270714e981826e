//! Whole catalogues in and out: the batch create and the streaming export.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use books_application::{ExportCut, export};
use books_domain::{Book, BookService, ExportQuery, MAX_BATCH, NewBooks};
use futures_util::StreamExt as _;

use crate::blocking::{blocking, blocking_write};
use crate::middleware::auth::WriteAccess;
use crate::middleware::head::HeadRequest;
use crate::middleware::rate_limit::Caller;
use crate::representation::consistency::stamp;
use crate::representation::csv::{self, CSV};
use crate::representation::negotiate::{BookFormat, media_type, preferred};
use crate::representation::params::Params;
use crate::representation::problem::ApiError;
use crate::representation::reading::{Body, check_batch, read_batch_json};
use crate::representation::schemas::{BookBatch, BookBatchInput, BookResponse, Problem};
use crate::representation::xml::{self, XML};
use crate::routes::books::{IdempotencyKeyHeader, SelectionParams};
use crate::routes::change_feed::no_body;
use crate::state::State;

/// The largest batch body: 1 000 books of 250-character fields fit with room to spare.
pub(crate) const BATCH_BODY_LIMIT: usize = 1024 * 1024;

/// Create many books
///
/// 1 to 1 000 books in one request, created together in one transaction or not at all: when any
/// book is invalid, the 422 lists every invalid field of every book (`books[3].title`, counting
/// from 0; CSV data rows are counted the same way) and nothing is created. The body is JSON
/// (`{"books": [...]}`), CSV (`text/csv`, UTF-8, RFC 4180) whose header row names the columns
/// `title`, `author` and optionally `genre`, `isbn`, `published_year`, in any order, or XML
/// (`<books>` around `<book>` elements). The answer is in the body's format (JSON for CSV) unless
/// `Accept` asks for the other.
#[utoipa::path(
    post,
    path = "/api/v1/books/batch",
    operation_id = "createBooks",
    tag = "books",
    params(IdempotencyKeyHeader),
    request_body(content(
        (BookBatchInput = "application/json"),
        (String = "text/csv", example = "title,author,genre\r\nDune,Frank Herbert,Science fiction\r\nEmma,Jane Austen,\r\n"),
    )),
    responses(
        (status = 201, description = "Every book was created (or, for a retried Idempotency-Key, had been), in input order", body = BookBatch, headers(
            ("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same Idempotency-Key"),
            ("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write"),
        )),
        (status = 400, description = "Malformed JSON or CSV (an unclosed quote, invalid UTF-8): the detail names the row",
            body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress (retry shortly), or a book's isbn belongs to a book that exists, which `existing` names",
            body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The request body is larger than 1 MiB",
            body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A book is invalid, the batch is empty or longer than 1 000, or the CSV header or a row has the wrong shape; `errors` lists each problem and nothing was created",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_books(
    WriteAccess(writer): WriteAccess,
    state: web::Data<State>,
    IdempotencyKeyHeader { key }: IdempotencyKeyHeader,
    request: HttpRequest,
    Body(body): Body<BATCH_BODY_LIMIT>,
) -> Result<HttpResponse, ApiError> {
    let key = key.map(|key| key.owned_by(writer.key));
    let books = match media_type(&request).as_deref() {
        Some("application/json") => read_batch_json(&body, MAX_BATCH)?,
        Some(CSV) => check_batch(&csv::read_books(&body, MAX_BATCH)?, MAX_BATCH)?,
        Some(XML) => xml::read_batch(&body, MAX_BATCH)?,
        _ => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the request body must be application/json, text/csv or {XML} (Content-Type)"
            )));
        }
    };
    // The answer is XML when the batch was, unless the client asks otherwise.
    let format = BookFormat::answer(&request, BookFormat::of_body(&request))?;
    let books = NewBooks::new(books)?;
    let (created, token) = blocking_write(&state.service, move |s| match key {
        Some(key) => s.create_books_once(&key, &books),
        None => s
            .create_books(&books)
            .map(|books| books_domain::CreatedBooks {
                books,
                replayed: false,
            }),
    })
    .await?;
    let mut response = HttpResponse::Created();
    stamp(&mut response, token);
    if created.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.insert_header((header::VARY, "Accept"));
    Ok(match format {
        BookFormat::Json => response.json(BookBatch {
            books: created.books.iter().map(BookResponse::from).collect(),
        }),
        BookFormat::Xml => response
            .content_type(XML)
            .body(xml::books(&created.books, None)),
    })
}

/// Reads an export's query string: a listing's filters and sort, without pages.
fn read_export(request: &HttpRequest) -> Result<ExportQuery, ApiError> {
    let params = Params::parse(request.query_string().as_bytes(), "query string")?;
    if params.get("limit").is_some() || params.get("cursor").is_some() {
        return Err(ApiError::BadRequest(
            "an export has no pages: leave out limit and cursor".to_owned(),
        ));
    }
    let selection = SelectionParams::take(&params);
    Ok(ExportQuery {
        filter: selection.filter()?,
        sort: selection.sort()?.unwrap_or_default(),
    })
}

/// The export's formats, in order of preference when the client has none.
const NDJSON: &str = "application/x-ndjson";
const EXPORT_FORMATS: [&str; 3] = [NDJSON, CSV, XML];

/// How long an export waits for its client to take the next slice before giving up: a client
/// that stops reading must not hold a database connection for ever.
pub(crate) const STALLED_READER: Duration = Duration::from_secs(30);

/// Export books
///
/// Every book matching the filters, in `sort` order, read from one consistent snapshot and
/// streamed as it is read: memory stays flat whatever the catalogue's size. `Accept: text/csv`
/// gives CSV with the header `id,title,author,genre,version,created_at,updated_at,isbn,published_year` (text that a
/// spreadsheet would run as a formula, starting with `=`, `+`, `-`, `@`, tab or carriage return, is
/// prefixed with `'`); `application/x-ndjson` (the default) one Book JSON object per line;
/// `application/xml` one `<books>` element around a `<book>` element per book. A
/// caller streams one export at a time (past it 429; past the instance's slots 503), and an export
/// may take 10 minutes at most (it holds a
/// snapshot open meanwhile): past that, or when its client stops reading for 30 s, it ends
/// without its final chunk, so the client sees an incomplete answer and starts again.
#[utoipa::path(
    get,
    path = "/api/v1/books/export",
    operation_id = "exportBooks",
    tag = "books",
    params(SelectionParams),
    responses(
        (status = 200, description = "Every matching book, streamed", headers(
            ("Changes-After" = i64, description = "Follow `GET /api/v1/books/changes?after=` this seq to keep the exported copy current: every change up to it is in the export (a few after it may be too; apply changes by version)"),
        ), content(
            (BookResponse = "application/x-ndjson", example = json!({"id": 42, "title": "Dune", "author": "Frank Herbert", "genre": "Science fiction", "version": 3, "created_at": "2026-11-24T06:26:29.123456Z", "updated_at": "2026-11-24T07:01:02.000001Z"})),
            (String = "text/csv"),
        )),
        (status = 406, description = "The client accepts none of application/x-ndjson, text/csv and application/xml",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn export_books(
    state: web::Data<State>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let format = preferred(&request, &EXPORT_FORMATS).ok_or_else(|| {
        ApiError::NotAcceptable(format!(
            "an export is {} (Accept)",
            EXPORT_FORMATS.join(" or ")
        ))
    })?;
    let query = read_export(&request)?;
    if HeadRequest::came_as_head(&request) {
        // The headers alone: no slot, no snapshot, nothing read.
        let changes_after = blocking(&state.service, BookService::last_change).await?;
        return Ok(export_head(format, changes_after).streaming(no_body()));
    }
    let slot = state.exports.slots.open(Caller::of_request(&request))?;
    // Where the feed stands before the snapshot is taken: everything up to it is in the export.
    let changes_after = blocking(&state.service, BookService::last_change).await?;
    let encoder = move |books: &[Book], first: bool| encode(books, format, first);
    let slices = export(
        state.service.clone(),
        query,
        state.exports.limits,
        encoder,
        slot,
    )
    .await?;
    // A slice that cannot come ends the body without its final chunk: the client sees an
    // incomplete answer, never a complete-looking short one.
    // XML's closing tag follows the last slice, only when the export is complete: a cut stream
    // ends with its error, and nothing is sent after it.
    let end = (format == XML).then(|| Ok(web::Bytes::from_static(xml::EXPORT_END.as_bytes())));
    let body = slices.map(|slice| {
        slice.map_err(|cut| {
            match cut {
                ExportCut::StoppedShort => tracing::debug!("an export's response is cut short"),
                ExportCut::Failed(error) => tracing::error!(
                    error = %format!("{:#}", anyhow::Error::from(error)),
                    "an export ended early; its response is cut short"
                ),
            }
            actix_web::error::ErrorInternalServerError("export cut short")
        })
    });
    let body = body.chain(futures_util::stream::iter(end));
    Ok(export_head(format, changes_after).streaming(body))
}

/// The headers of an export in `format`.
fn export_head(format: &str, changes_after: u64) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::Ok();
    response.content_type(format);
    response.insert_header((header::VARY, "Accept"));
    response.insert_header(("Changes-After", changes_after.to_string()));
    if format == CSV {
        response.insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"books.csv\"",
        ));
    }
    response
}

/// One slice of books in the export's format (`first`: the export's first, which opens it).
fn encode(books: &[Book], format: &str, first: bool) -> web::Bytes {
    let mut out = Vec::with_capacity(books.len() * 200);
    match format {
        CSV => csv::write_books(&mut out, books, first),
        XML => {
            if first {
                out.extend_from_slice(xml::EXPORT_START.as_bytes());
            }
            xml::append_books(&mut out, books);
        }
        _ => {
            for book in books {
                // A book always serializes.
                let _ = serde_json::to_writer(&mut out, &BookResponse::from(book));
                out.push(b'\n');
            }
        }
    }
    out.into()
}
