//! The v1 book endpoints. Each handler reads the request into domain values, runs one use case on
//! the blocking pool, and maps the result; the rules live in the domain, the storage in adapters.

use actix_web::http::header;
use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use books_domain::{
    Author, Book, BookFilter, BookId, BookPatch, Created, Genre, IdempotencyKey, Isbn, ListQuery,
    NewBook, PageSize, SearchTerm, Sort, TargetedPatch, TextError, VersionCheck,
};
use utoipa::IntoParams;

use crate::blocking::blocking_write;
use crate::middleware::auth::WriteAccess;
use crate::representation::consistency::{ConsistencyTokenHeader, stamp};
use crate::representation::csv::{self, CSV};
use crate::representation::cursor;
use crate::representation::etag::{IfMatchHeader, IfNoneMatchHeader, etag};
use crate::representation::negotiate::{BookFormat, preferred};
use crate::representation::params::Params;
use crate::representation::problem::ApiError;
use crate::representation::reading::{Body, JsonObject, MERGE_PATCH};
use crate::representation::schemas::{BookInput, BookPage, BookPatchInput, BookResponse, Problem};
use crate::representation::xml::{self, XML};
use crate::routes::BASE;
use crate::state::State;
use books_application::{ScanListings, Written};

/// The book a request names in its path (`{id}`): a positive 64-bit integer in plain decimal
/// digits, or the request is a 400.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BookPath(pub(crate) BookId);

impl FromRequest for BookPath {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_id(request.match_info().get("id").unwrap_or_default()).map(Self))
    }
}

/// The book a write names in its path, and the versions its `If-Match` allows it to overwrite.
#[derive(Debug)]
pub(crate) struct WriteTarget {
    pub(crate) id: BookId,
    pub(crate) check: VersionCheck,
}

impl FromRequest for WriteTarget {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        ready(
            BookPath::from_request(request, payload)
                .into_inner()
                .and_then(|BookPath(id)| {
                    Ok(Self {
                        id,
                        check: IfMatchHeader::read(request)?.check(id),
                    })
                }),
        )
    }
}

fn parse_id(raw: &str) -> Result<BookId, ApiError> {
    raw.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| raw.parse::<i64>().ok())
        .flatten()
        .and_then(BookId::new)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "the book id must be a positive 64-bit integer, not {:?}",
                truncate(raw)
            ))
        })
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

/// A single book in `format`, with its validator. Clients must revalidate before reusing a
/// stored copy.
pub(super) fn book_response(
    mut response: actix_web::HttpResponseBuilder,
    book: &Book,
    format: BookFormat,
) -> HttpResponse {
    response
        .insert_header((header::ETAG, etag(book, format)))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::VARY, "Accept"))
        .insert_header(("Accept-Patch", MERGE_PATCH.join(", ")));
    match format {
        BookFormat::Json => response.json(BookResponse::from(book)),
        BookFormat::Xml => response.content_type(XML).body(xml::book(book)),
    }
}

/// The media types a book's body may have.
const BOOK_BODIES: &[&str] = &["application/json", XML];

/// A new book, or a full replacement, from a JSON or an XML body.
fn read_new_book(request: &HttpRequest, body: &[u8]) -> Result<NewBook, ApiError> {
    match BookFormat::of_body(request) {
        BookFormat::Xml => xml::read_new_book(body),
        BookFormat::Json => JsonObject::parse(request, body, BOOK_BODIES)?.into_new_book(),
    }
}

/// The paging parameters of a listing.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Page size, 1 to 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page. It carries the sort and filters of the query it
    /// came from; other values for them are refused.
    cursor: Option<String>,
}

/// Which books a listing or an export shows, and in what order.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SelectionParams {
    /// Only books by this author (exact match, case-insensitive).
    #[param(max_length = 250)]
    author: Option<String>,
    /// Only books of this genre (exact match, case-insensitive).
    #[param(max_length = 250)]
    genre: Option<String>,
    /// Only books whose title or author contains this text (case-insensitive).
    #[param(max_length = 250)]
    q: Option<String>,
    /// Only the book with this ISBN, in any form a book's `isbn` accepts (ISBN-10 or ISBN-13,
    /// hyphens and spaces allowed); an invalid one is a 400.
    isbn: Option<String>,
    /// Order: `id`, `title`, `author` or `created_at`, with a leading `-` for descending. Ties
    /// are broken by id.
    #[param(pattern = "^-?(id|title|author|created_at)$", default = "id")]
    sort: Option<String>,
}

/// A blank parameter counts as not given.
pub(crate) fn given(value: Option<&String>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl SelectionParams {
    /// Takes its parameters from a query string's.
    pub(super) fn take(params: &Params) -> Self {
        let take = |name: &str| params.get(name).map(str::to_owned);
        Self {
            author: take("author"),
            genre: take("genre"),
            q: take("q"),
            isbn: take("isbn"),
            sort: take("sort"),
        }
    }

    /// The filters; a blank one counts as not given, as HTML forms send them.
    pub(super) fn filter(&self) -> Result<BookFilter, ApiError> {
        Ok(BookFilter {
            author: text_filter("author", self.author.as_ref(), Author::new)?,
            genre: text_filter("genre", self.genre.as_ref(), Genre::new)?,
            search: text_filter("q", self.q.as_ref(), SearchTerm::new)?,
            isbn: given(self.isbn.as_ref())
                .map(Isbn::parse)
                .transpose()
                .map_err(|error| ApiError::BadRequest(format!("isbn {error}")))?,
        })
    }

    /// The order, when one is given. Unlike a filter, a blank sort is a mistake worth reporting.
    pub(super) fn sort(&self) -> Result<Option<Sort>, ApiError> {
        self.sort.as_deref().map(sort).transpose()
    }
}

/// Reads a listing's query string; other parameters than these are ignored.
fn read_listing(request: &HttpRequest) -> Result<ListQuery, ApiError> {
    let params = Params::parse(request.query_string().as_bytes(), "query string")?;
    let page = PageParams {
        limit: params.get("limit").map(str::to_owned),
        cursor: params.get("cursor").map(str::to_owned),
    };
    into_query(&page, &SelectionParams::take(&params))
}

/// The listing asked for: a new one, or the continuation of a cursor's (paging policy is the
/// domain's: [`ListQuery::resume`]).
fn into_query(page: &PageParams, selection: &SelectionParams) -> Result<ListQuery, ApiError> {
    // Unlike the filters, a blank limit is a mistake worth reporting.
    let limit = page.limit.as_deref().map(page_size).transpose()?;
    let sort = selection.sort()?;
    let filter = selection.filter()?;
    let Some(raw_cursor) = given(page.cursor.as_ref()) else {
        return Ok(ListQuery {
            filter,
            sort: sort.unwrap_or_default(),
            limit: limit.unwrap_or_default(),
            after: None,
        });
    };
    let continued = cursor::decode(raw_cursor).ok_or_else(|| {
        ApiError::BadRequest(
            "cursor is not one this service made; start again without it".to_owned(),
        )
    })?;
    ListQuery::resume(continued, sort, &filter, limit).map_err(|conflict| {
        ApiError::BadRequest(format!("{conflict}; leave them out or start again"))
    })
}

fn page_size(raw: &str) -> Result<PageSize, ApiError> {
    raw.parse().ok().and_then(PageSize::new).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "limit must be an integer from 1 to {}",
            PageSize::MAX
        ))
    })
}

fn sort(raw: &str) -> Result<Sort, ApiError> {
    Sort::parse(raw).ok_or_else(|| {
        ApiError::BadRequest(
            "sort must be one of id, title, author, created_at, optionally prefixed with -"
                .to_owned(),
        )
    })
}

/// A text filter: a blank one counts as not given, as HTML forms send them.
fn text_filter<T>(
    name: &str,
    raw: Option<&String>,
    parse: fn(&str) -> Result<T, TextError>,
) -> Result<Option<T>, ApiError> {
    given(raw)
        .map(parse)
        .transpose()
        .map_err(|error| ApiError::BadRequest(format!("{name} {error}")))
}

/// List books
///
/// One page of books, filtered and sorted. Follow `next_cursor` (or the `Link` header) until it
/// is null to visit every matching book exactly once. With `Accept: text/csv` the same page comes
/// as CSV (the export's columns and formula neutralising), and the next page only in `Link`; with
/// `Accept: application/xml` as `<books next_cursor="…">` around `<book>` elements.
#[utoipa::path(
    get,
    path = "/api/v1/books",
    operation_id = "listBooks",
    tag = "books",
    params(PageParams, SelectionParams, ConsistencyTokenHeader),
    responses(
        (status = 200, description = "A page of books",
            content(
                (BookPage = "application/json"),
                (String = "text/csv", example = "id,title,author,genre,version,created_at,updated_at,isbn,published_year\r\n42,Dune,Frank Herbert,Science fiction,3,2026-11-24T06:26:29.123456Z,2026-11-24T07:01:02.000001Z,9780441013593,1965\r\n"),
            ),
            headers(("Link" = String, description = "`<…>; rel=\"next\"` (RFC 8288) when a next page exists"))),
        (status = 406, description = "The client accepts none of application/json, text/csv and application/xml",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list_books(
    state: web::Data<State>,
    ConsistencyTokenHeader { token }: ConsistencyTokenHeader,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let format = preferred(&request, &LIST_FORMATS).ok_or_else(|| {
        ApiError::NotAcceptable(format!("a page is {} (Accept)", LIST_FORMATS.join(" or ")))
    })?;
    let query = read_listing(&request)?;
    // Read with the other listings waiting at the same time (identical ones once); a search that
    // no index serves in a lane of its own, so that it cannot delay the others.
    let lane = if ScanListings::needed_for(&query) {
        Arc::clone(&state.scans.0)
    } else {
        Arc::clone(&state.listings)
    };
    let shared = lane.page(query.clone(), token).await?;
    let page = shared.page();
    let next_cursor = page.next.as_ref().map(|next| cursor::encode(&query, next));
    let mut response = HttpResponse::Ok();
    response.insert_header((header::VARY, "Accept"));
    if let Some(cursor) = &next_cursor {
        response.insert_header((
            header::LINK,
            format!(
                "<{BASE}/books?limit={}&cursor={cursor}>; rel=\"next\"",
                query.limit.get()
            ),
        ));
    }
    if format == CSV {
        let mut body = Vec::new();
        csv::write_books(&mut body, &page.items, true);
        return Ok(response.content_type(CSV).body(body));
    }
    if format == XML {
        return Ok(response
            .content_type(XML)
            .body(xml::books(&page.items, next_cursor.as_deref())));
    }
    // JSON, the usual answer: the requests of a batch that asked for this page (the same query,
    // so the same body) send one serialization of it.
    let body = shared
        .rendering(|page| {
            serde_json::to_vec(&BookPage {
                items: page.items.iter().map(BookResponse::from).collect(),
                next_cursor,
            })
        })
        .map_err(|error| ApiError::Internal(anyhow::Error::new(error).context("a page")))?;
    Ok(response
        .content_type("application/json")
        .body(web::Bytes::from_owner(body)))
}

/// A page's formats, in order of preference when the client has none.
const LIST_FORMATS: [&str; 3] = ["application/json", CSV, XML];

/// The `Idempotency-Key` header, read: the type the document describes is the one the request
/// is read into.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct IdempotencyKeyHeader {
    /// 1 to 255 visible ASCII characters naming this create. A retry with the same key and body
    /// returns the first response (same book, 201) and creates nothing; the same key with another
    /// body is refused (422). Keys are remembered for at least 24 hours, and belong to the API
    /// key that sent them.
    #[param(
        rename = "Idempotency-Key",
        value_type = Option<String>,
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[\\x21-\\x7E]+$"
    )]
    pub(crate) key: Option<IdempotencyKey>,
}

impl FromRequest for IdempotencyKeyHeader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let invalid = |reason: &str| ApiError::BadRequest(format!("Idempotency-Key {reason}"));
        let mut values = request.headers().get_all("idempotency-key");
        let key = match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(invalid("must be given once")),
            (Some(value), None) => value
                .to_str()
                .map_err(|_| invalid("must be visible ASCII"))
                .and_then(|text| {
                    IdempotencyKey::new(text).map_err(|e| ApiError::BadRequest(e.to_string()))
                })
                .map(Some),
        };
        ready(key.map(|key| Self { key }))
    }
}

/// Create a book
///
/// With an `Idempotency-Key`, a retry of the same request is answered with the first response
/// instead of creating a second book. The body is JSON or XML (`<book>` with one element per
/// field, an empty or missing one null); the answer is in the body's format unless `Accept` asks
/// for the other.
#[utoipa::path(
    post,
    path = "/api/v1/books",
    operation_id = "createBook",
    tag = "books",
    params(IdempotencyKeyHeader),
    request_body(content = BookInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The book was created (or, for a retried Idempotency-Key, had been)", body = BookResponse, headers(
            ("Location" = String, description = "The new book's URL"),
            ("ETag" = String, description = "The new book's entity tag"),
            ("Idempotent-Replayed" = String, description = "`true` when this answer replays an earlier request with the same Idempotency-Key"),
            ("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write"),
        )),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress (retry shortly), or the isbn belongs to another book, which `existing` names",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_book(
    WriteAccess(writer): WriteAccess,
    state: web::Data<State>,
    IdempotencyKeyHeader { key }: IdempotencyKeyHeader,
    request: HttpRequest,
    Body(body): Body,
) -> Result<HttpResponse, ApiError> {
    // An idempotency key is the writer's own: another client's identical key is another request.
    let key = key.map(|key| key.owned_by(writer.key));
    let draft = read_new_book(&request, &body)?;
    let format = BookFormat::answer(&request, BookFormat::of_body(&request))?;
    let (created, token) = match key {
        Some(key) => {
            blocking_write(&state.service, move |s| s.create_book_once(&key, &draft)).await?
        }
        // Without a key, created in one transaction with the other creates waiting now.
        None => {
            let Written { outcome, token } = state.creates.create(draft).await?;
            let created = Created {
                book: outcome,
                replayed: false,
            };
            (created, token)
        }
    };
    let mut response = HttpResponse::Created();
    stamp(&mut response, token);
    response.insert_header((
        header::LOCATION,
        format!("{BASE}/books/{}", created.book.id()),
    ));
    if created.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(book_response(response, &created.book, format))
}

/// Get a book
///
/// As JSON, or as XML with `Accept: application/xml` (each representation has its own ETag;
/// `If-None-Match` and `If-Match` accept either).
#[utoipa::path(
    get,
    path = "/api/v1/books/{id}",
    operation_id = "getBook",
    tag = "books",
    params(
        ("id" = i64, Path, description = "The book's id", minimum = 1),
        IfNoneMatchHeader,
        ConsistencyTokenHeader,
    ),
    responses(
        (status = 200, description = "The book", body = BookResponse,
            headers(("ETag" = String, description = "The book's entity tag"))),
        (status = 304, description = "The book has not changed since the client fetched it",
            headers(("ETag" = String, description = "The book's entity tag"))),
    )
)]
pub(crate) async fn get_book(
    state: web::Data<State>,
    BookPath(id): BookPath,
    cached: IfNoneMatchHeader,
    ConsistencyTokenHeader { token }: ConsistencyTokenHeader,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let format = BookFormat::answer(&request, BookFormat::Json)?;
    // The hottest read: answered together with the other reads waiting for the database (from
    // data that holds the client's last write, when it says which: then a 304 is never stale).
    let book = state.reads.get(id, token).await?;
    if cached.matches(&book) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag(&book, format)))
            .insert_header((header::VARY, "Accept"))
            .finish());
    }
    Ok(book_response(HttpResponse::Ok(), &book, format))
}

/// Replace a book
///
/// Sets every field; an optional one left out becomes null. The body is JSON or XML, as on create.
#[utoipa::path(
    put,
    path = "/api/v1/books/{id}",
    operation_id = "replaceBook",
    tag = "books",
    params(
        ("id" = i64, Path, description = "The book's id", minimum = 1),
        IfMatchHeader,
    ),
    request_body(content = BookInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The book as replaced", body = BookResponse,
            headers(("ETag" = String, description = "The book's new entity tag"),
            ("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write"),)),
        (status = 409, description = "The isbn belongs to another book, which `existing` names; nothing was changed",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn replace_book(
    _writer: WriteAccess,
    state: web::Data<State>,
    WriteTarget { id, check }: WriteTarget,
    request: HttpRequest,
    Body(body): Body,
) -> Result<HttpResponse, ApiError> {
    let replacement = read_new_book(&request, &body)?;
    let format = BookFormat::answer(&request, BookFormat::of_body(&request))?;
    // A replacement is a patch of every field, written with the other writes waiting now.
    let patch = BookPatch::from(replacement);
    let Written {
        outcome: book,
        token,
    } = state
        .patches
        .patch(TargetedPatch { id, patch, check })
        .await?;
    let mut response = HttpResponse::Ok();
    stamp(&mut response, token);
    Ok(book_response(response, &book, format))
}

/// Patch a book
///
/// A JSON merge patch (RFC 7396): members left out are kept; `"genre": null` clears the genre.
#[utoipa::path(
    patch,
    path = "/api/v1/books/{id}",
    operation_id = "patchBook",
    tag = "books",
    params(
        ("id" = i64, Path, description = "The book's id", minimum = 1),
        IfMatchHeader,
    ),
    request_body(content(
        (BookPatchInput = "application/merge-patch+json"),
        (BookPatchInput = "application/json"),
    )),
    responses(
        (status = 200, description = "The book as patched", body = BookResponse,
            headers(("ETag" = String, description = "The book's new entity tag"),
            ("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write"),)),
        (status = 409, description = "The isbn belongs to another book, which `existing` names; nothing was changed",
            body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn patch_book(
    _writer: WriteAccess,
    state: web::Data<State>,
    WriteTarget { id, check }: WriteTarget,
    request: HttpRequest,
    Body(body): Body,
) -> Result<HttpResponse, ApiError> {
    let patch = JsonObject::parse(&request, &body, MERGE_PATCH)?.into_patch()?;
    let format = BookFormat::answer(&request, BookFormat::Json)?;
    // Written with the other writes waiting now: one statement and one commit for them all.
    let Written {
        outcome: book,
        token,
    } = state
        .patches
        .patch(TargetedPatch { id, patch, check })
        .await?;
    let mut response = HttpResponse::Ok();
    stamp(&mut response, token);
    Ok(book_response(response, &book, format))
}

/// Delete a book
#[utoipa::path(
    delete,
    path = "/api/v1/books/{id}",
    operation_id = "deleteBook",
    tag = "books",
    params(
        ("id" = i64, Path, description = "The book's id", minimum = 1),
        IfMatchHeader,
    ),
    responses((status = 204, description = "The book was deleted", headers(
            ("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write"),
    ))),
)]
pub(crate) async fn delete_book(
    _writer: WriteAccess,
    state: web::Data<State>,
    WriteTarget { id, check }: WriteTarget,
) -> Result<HttpResponse, ApiError> {
    let ((), token) = blocking_write(&state.service, move |s| s.delete_book(id, &check)).await?;
    let mut response = HttpResponse::NoContent();
    stamp(&mut response, token);
    Ok(response.finish())
}
