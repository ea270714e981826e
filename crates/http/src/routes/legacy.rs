//! The routes of the original Flask tutorial, `/booksApi`, kept for clients written against it.
//!
//! They answer in the tutorial's shapes (`{"books": …}`, `{"Book": …}`, plain-text messages) and
//! take `title`, `author` and `genre` as query parameters or as a form body, as Flask's
//! `request.values` did. The tutorial's bugs are fixed: a missing book is a 404 instead of a crash
//! or a silent success, input is validated exactly as in v1, and ids are never reused.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use books_domain::{
    Book, BookField, BookPatch, BookService, ListQuery, NewBook, Page, PageSize, Raw,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::blocking::{blocking, blocking_write};
use crate::middleware::auth::WriteAccess;
use crate::representation::consistency::stamp;
use crate::representation::etag::IfMatchHeader;
use crate::representation::params::{Params, quoted_name};
use crate::representation::problem::ApiError;
use crate::representation::reading::Body;
use crate::representation::schemas::FieldViolation;
use crate::routes::books::{BookPath, WriteTarget};
use crate::state::State;

/// A book as the tutorial shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LegacyBook {
    /// The book's id.
    #[schema(format = Int64)]
    pub id: i64,
    /// The title.
    pub title: String,
    /// The author.
    pub author: String,
    /// The genre, or null.
    #[schema(required = true)]
    pub genre: Option<String>,
}

impl From<&Book> for LegacyBook {
    fn from(book: &Book) -> Self {
        Self {
            id: book.id().get(),
            title: book.title().as_str().to_owned(),
            author: book.author().as_str().to_owned(),
            genre: book.genre().map(|g| g.as_str().to_owned()),
        }
    }
}

/// `GET /booksApi`: every book.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LegacyBookList {
    /// All books, by id.
    pub books: Vec<LegacyBook>,
}

/// `GET /booksApi/{id}`: one book, under the tutorial's (plural) name.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LegacyBookItem {
    /// The book.
    pub books: LegacyBook,
}

/// `POST /booksApi`: the created book.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LegacyCreated {
    /// The book.
    #[serde(rename = "Book")]
    #[schema(rename = "Book")]
    pub book: LegacyBook,
}

/// The tutorial's fields to create a book, as a form body (or as query parameters, the
/// tutorial's way, but not both).
//
// Read from the parameters (`legacy_fields`); the document adds `additionalProperties: false`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"title": "Emma", "author": "Jane Austen", "genre": "Romance"}))]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read field by field"
)]
pub(crate) struct LegacyNewFields {
    /// The title: 1 to 250 characters once trimmed.
    #[schema(value_type = String, required = true)]
    title: Option<String>,
    /// The author: 1 to 250 characters once trimmed.
    #[schema(value_type = String, required = true)]
    author: Option<String>,
    /// The genre: blank for none, else at most 250 characters once trimmed.
    #[schema(nullable = false)]
    genre: Option<String>,
}

/// The tutorial's fields to update a book, as a form body (or as query parameters, the
/// tutorial's way, but not both). Each one given non-blank replaces the stored value.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"genre": "Classic"}))]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read field by field"
)]
pub(crate) struct LegacyFields {
    /// A new title (1 to 250 characters once trimmed), or blank to keep it.
    #[schema(nullable = false)]
    title: Option<String>,
    /// A new author (1 to 250 characters once trimmed), or blank to keep it.
    #[schema(nullable = false)]
    author: Option<String>,
    /// A new genre (at most 250 characters once trimmed), or blank to keep it.
    #[schema(nullable = false)]
    genre: Option<String>,
}

/// The tutorial's fields, in its order: `/booksApi` keeps these whatever fields a book gains.
pub(crate) const LEGACY_FIELDS: [BookField; 3] =
    [BookField::Title, BookField::Author, BookField::Genre];

/// The fields of a create, as the domain reads them.
fn new_fields(params: &Params) -> books_domain::BookInput {
    let mut input = books_domain::BookInput::default();
    for field in LEGACY_FIELDS {
        if let Some(value) = params.get(field.name()) {
            *input.field_mut(field) = Raw::from(value);
        }
    }
    input
}

/// The fields of an update, as the domain reads a patch: blank is the tutorial's "leave it as
/// it is".
fn changed_fields(params: &Params) -> books_domain::BookInput {
    let mut input = books_domain::BookInput::default();
    for field in LEGACY_FIELDS {
        if let Some(value) = params
            .get(field.name())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            *input.field_mut(field) = Raw::from(value);
        }
    }
    input
}

const FORM: &str = "application/x-www-form-urlencoded";

/// The fields, from the query string or from a form body, never both: a client that sends both
/// cannot tell which one counts, so the request is refused as ambiguous.
fn legacy_fields(request: &HttpRequest, body: &[u8]) -> Result<Params, ApiError> {
    let query = Params::parse(request.query_string().as_bytes(), "query string")?;
    if body.is_empty() {
        return Ok(query);
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case(FORM)
        });
    if !is_form {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the request body must be {FORM}"
        )));
    }
    let form = Params::parse(body, "form body")?;
    if let Some(unknown) = form
        .names()
        .find(|name| BookField::named(name).is_none_or(|f| !LEGACY_FIELDS.contains(&f)))
    {
        return Err(ApiError::Unprocessable(vec![FieldViolation {
            field: unknown.chars().take(100).collect(),
            message: "is not a known field".to_owned(),
        }]));
    }
    if let Some(twice) = query
        .names()
        .find(|name| BookField::named(name).is_some_and(|f| LEGACY_FIELDS.contains(&f)))
    {
        return Err(ApiError::BadRequest(format!(
            "{} is given in the query string and a form body is sent too: send the fields one way",
            quoted_name(twice)
        )));
    }
    Ok(form)
}

fn text_response(message: String, token: Option<books_domain::ConsistencyToken>) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    stamp(&mut response, token);
    response
        .content_type("text/plain; charset=utf-8")
        .body(message)
}

/// List every book (tutorial route)
#[utoipa::path(
    get,
    path = "/booksApi",
    operation_id = "legacyListBooks",
    tag = "booksApi",
    responses((status = 200, description = "Every book", body = LegacyBookList)),
)]
pub(crate) async fn list(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let query = ListQuery {
        limit: PageSize::new(u64::from(PageSize::MAX)).unwrap_or_default(),
        ..ListQuery::default()
    };
    // The first page is read before the answer starts, so that a database that is down is a 503
    // here as anywhere else; the rest follow page by page as the client reads.
    let first = {
        let query = query.clone();
        blocking(&state.service, move |s| s.list_books(&query)).await?
    };
    let pages = Pages {
        service: state.service.clone(),
        query,
        page: Some(first),
        opened: false,
        any_book: false,
    };
    let body = futures_util::stream::unfold(pages, Pages::next_chunk);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(body))
}

/// Every book as one JSON document, `{"books": [...]}`, written a page at a time so that the
/// whole catalogue is never in memory at once.
struct Pages {
    service: BookService,
    query: ListQuery,
    /// The page to write next; `None` once the document is closed.
    page: Option<Page>,
    opened: bool,
    any_book: bool,
}

impl Pages {
    async fn next_chunk(mut self) -> Option<(Result<web::Bytes, std::io::Error>, Self)> {
        let page = self.page.take()?;
        let mut chunk = Vec::new();
        if !self.opened {
            chunk.extend_from_slice(br#"{"books":["#);
            self.opened = true;
        }
        for book in &page.items {
            if self.any_book {
                chunk.push(b',');
            }
            self.any_book = true;
            if let Err(error) = serde_json::to_writer(&mut chunk, &LegacyBook::from(book)) {
                return Some((Err(std::io::Error::other(error)), self));
            }
        }
        match page.next {
            None => chunk.extend_from_slice(b"]}"),
            Some(next) => {
                self.query.after = Some(next);
                let query = self.query.clone();
                match blocking(&self.service, move |s| s.list_books(&query)).await {
                    Ok(page) => self.page = Some(page),
                    // The status is sent: all that is left is to cut the answer short, which
                    // the client sees as an incomplete body, never as a complete list.
                    Err(error) => {
                        tracing::warn!(error = %error, "the book list was cut short");
                        return Some((Err(std::io::Error::other(error.to_string())), self));
                    }
                }
            }
        }
        Some((Ok(web::Bytes::from(chunk)), self))
    }
}

/// Create a book (tutorial route)
///
/// The fields come as a form, or as query parameters the way the tutorial sent them; a request
/// that sends fields both ways is refused (400).
#[utoipa::path(
    post,
    path = "/booksApi",
    operation_id = "legacyCreateBook",
    tag = "booksApi",
    request_body(content = LegacyNewFields, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "The book was created", body = LegacyCreated,
        headers(("Location" = String, description = "The new book's URL"),
            ("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write")))),
)]
pub(crate) async fn create(
    _writer: WriteAccess,
    state: web::Data<State>,
    request: HttpRequest,
    Body(body): Body,
) -> Result<HttpResponse, ApiError> {
    let draft = NewBook::parse(&new_fields(&legacy_fields(&request, &body)?))?;
    let (book, token) = blocking_write(&state.service, move |s| s.create_book(&draft)).await?;
    let mut response = HttpResponse::Created();
    stamp(&mut response, token);
    Ok(response
        .insert_header((header::LOCATION, format!("/booksApi/{}", book.id())))
        .json(LegacyCreated {
            book: LegacyBook::from(&book),
        }))
}

/// Get a book (tutorial route)
#[utoipa::path(
    get,
    path = "/booksApi/{id}",
    operation_id = "legacyGetBook",
    tag = "booksApi",
    params(("id" = i64, Path, description = "The book's id", minimum = 1)),
    responses((status = 200, description = "The book", body = LegacyBookItem)),
)]
pub(crate) async fn get(
    state: web::Data<State>,
    BookPath(id): BookPath,
) -> Result<HttpResponse, ApiError> {
    let book = state.reads.get(id, None).await?;
    Ok(HttpResponse::Ok().json(LegacyBookItem {
        books: LegacyBook::from(&book),
    }))
}

/// Update a book (tutorial route)
///
/// Each of title, author and genre given non-blank replaces the stored value; the others stay.
/// The fields come as a form, or as query parameters the way the tutorial sent them; a request
/// that sends fields both ways is refused (400).
#[utoipa::path(
    put,
    path = "/booksApi/{id}",
    operation_id = "legacyUpdateBook",
    tag = "booksApi",
    params(("id" = i64, Path, description = "The book's id", minimum = 1), IfMatchHeader),
    request_body(content = LegacyFields, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "`Updated a Book with id {id}`", body = String, content_type = "text/plain",
        headers(("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write")))),
)]
pub(crate) async fn update(
    _writer: WriteAccess,
    state: web::Data<State>,
    WriteTarget { id, check }: WriteTarget,
    request: HttpRequest,
    Body(body): Body,
) -> Result<HttpResponse, ApiError> {
    let patch = BookPatch::parse(&changed_fields(&legacy_fields(&request, &body)?))?;
    let (_, token) =
        blocking_write(&state.service, move |s| s.patch_book(id, &patch, &check)).await?;
    Ok(text_response(format!("Updated a Book with id {id}"), token))
}

/// Delete a book (tutorial route)
#[utoipa::path(
    delete,
    path = "/booksApi/{id}",
    operation_id = "legacyDeleteBook",
    tag = "booksApi",
    params(("id" = i64, Path, description = "The book's id", minimum = 1), IfMatchHeader),
    responses((status = 200, description = "`Removed Book with id {id}`", body = String, content_type = "text/plain",
        headers(("Consistency-Token" = String, description = "Where the history of writes stood once this write had committed: send it back on a read to be sure to see this write")))),
)]
pub(crate) async fn delete(
    _writer: WriteAccess,
    state: web::Data<State>,
    WriteTarget { id, check }: WriteTarget,
) -> Result<HttpResponse, ApiError> {
    let ((), token) = blocking_write(&state.service, move |s| s.delete_book(id, &check)).await?;
    Ok(text_response(format!("Removed Book with id {id}"), token))
}
