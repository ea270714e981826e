//! The routes of the original Flask tutorial, `/booksApi`, kept for clients written against it.
//!
//! They answer in the tutorial's shapes (`{"books": …}`, `{"Book": …}`, plain-text messages) and
//! take `title`, `author` and `genre` as query parameters or as a form body, as Flask's
//! `request.values` did. The tutorial's bugs are fixed: a missing book is a 404 instead of a crash
//! or a silent success, input is validated exactly as in v1, and ids are never reused.

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use books_domain::{Book, BookPatch, BookService, ListQuery, NewBook, PageSize, PatchValue};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::WriteAccess;
use crate::books::{BookPath, WriteTarget, blocking};
use crate::error::ApiError;
use crate::etag::IfMatchHeader;

/// A book as the tutorial shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyBook {
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
pub struct LegacyBookList {
    /// All books, by id.
    pub books: Vec<LegacyBook>,
}

/// `GET /booksApi/{id}`: one book, under the tutorial's (plural) name.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyBookItem {
    /// The book.
    pub books: LegacyBook,
}

/// `POST /booksApi`: the created book.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyCreated {
    /// The book.
    #[serde(rename = "Book")]
    #[schema(rename = "Book")]
    pub book: LegacyBook,
}

/// The tutorial's fields, as query parameters or a form body.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
#[expect(
    dead_code,
    reason = "documents parameters that `legacy_fields` reads from the query or the form"
)]
pub struct LegacyFields {
    /// The title (required to create).
    #[param(nullable = false)]
    #[schema(nullable = false)]
    title: Option<String>,
    /// The author (required to create).
    #[param(nullable = false)]
    #[schema(nullable = false)]
    author: Option<String>,
    /// The genre.
    #[param(nullable = false)]
    #[schema(nullable = false)]
    genre: Option<String>,
}

const FORM: &str = "application/x-www-form-urlencoded";

/// The fields from the query string, overridden by a form body when there is one.
fn legacy_fields(request: &HttpRequest, body: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let parse = |text: &str| {
        web::Query::<HashMap<String, String>>::from_query(text)
            .map(web::Query::into_inner)
            .map_err(|error| ApiError::BadRequest(format!("the parameters are invalid: {error}")))
    };
    let mut fields = parse(request.query_string())?;
    if !body.is_empty() {
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
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::BadRequest("the form is not UTF-8".to_owned()))?;
        let form = parse(text)?;
        if let Some(unknown) = form
            .keys()
            .find(|name| !["title", "author", "genre"].contains(&name.as_str()))
        {
            let name: String = unknown.chars().take(100).collect();
            return Err(ApiError::Unprocessable(vec![crate::dto::FieldViolation {
                field: name,
                message: "is not a known field".to_owned(),
            }]));
        }
        fields.extend(form);
    }
    Ok(fields)
}

fn text_response(message: String) -> HttpResponse {
    HttpResponse::Ok()
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
pub(crate) async fn list(service: web::Data<BookService>) -> Result<HttpResponse, ApiError> {
    let books = blocking(&service, |s| {
        let mut query = ListQuery {
            limit: PageSize::new(u64::from(PageSize::MAX)).unwrap_or_default(),
            ..ListQuery::default()
        };
        let mut books = Vec::new();
        loop {
            let page = s.list_books(&query)?;
            books.extend(page.items.iter().map(LegacyBook::from));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok::<_, books_domain::ListBooksError>(books),
            }
        }
    })
    .await?;
    Ok(HttpResponse::Ok().json(LegacyBookList { books }))
}

/// Create a book (tutorial route)
#[utoipa::path(
    post,
    path = "/booksApi",
    operation_id = "legacyCreateBook",
    tag = "booksApi",
    params(LegacyFields),
    request_body(content = LegacyFields, content_type = "application/x-www-form-urlencoded"),
    responses((status = 201, description = "The book was created", body = LegacyCreated,
        headers(("Location" = String, description = "The new book's URL")))),
)]
pub(crate) async fn create(
    _writer: WriteAccess,
    service: web::Data<BookService>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let fields = legacy_fields(&request, &body)?;
    let field = |name: &str| fields.get(name).map(String::as_str);
    let draft = NewBook::parse(field("title"), field("author"), field("genre"))?;
    let book = blocking(&service, move |s| s.create_book(&draft)).await?;
    Ok(HttpResponse::Created()
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
    service: web::Data<BookService>,
    BookPath(id): BookPath,
) -> Result<HttpResponse, ApiError> {
    let book = blocking(&service, move |s| s.get_book(id)).await?;
    Ok(HttpResponse::Ok().json(LegacyBookItem {
        books: LegacyBook::from(&book),
    }))
}

/// Update a book (tutorial route)
///
/// Each of title, author and genre given non-empty replaces the stored value; the others stay.
#[utoipa::path(
    put,
    path = "/booksApi/{id}",
    operation_id = "legacyUpdateBook",
    tag = "booksApi",
    params(("id" = i64, Path, description = "The book's id", minimum = 1), LegacyFields, IfMatchHeader),
    request_body(content = LegacyFields, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "`Updated a Book with id {id}`", body = String, content_type = "text/plain")),
)]
pub(crate) async fn update(
    _writer: WriteAccess,
    service: web::Data<BookService>,
    WriteTarget { id, check }: WriteTarget,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let fields = legacy_fields(&request, &body)?;
    let member = |name: &str| match fields.get(name).map(|v| v.trim()) {
        Some(value) if !value.is_empty() => PatchValue::Set(value),
        _ => PatchValue::Keep,
    };
    let patch: BookPatch = BookPatch::parse(member("title"), member("author"), member("genre"))?;
    blocking(&service, move |s| s.patch_book(id, &patch, &check)).await?;
    Ok(text_response(format!("Updated a Book with id {id}")))
}

/// Delete a book (tutorial route)
#[utoipa::path(
    delete,
    path = "/booksApi/{id}",
    operation_id = "legacyDeleteBook",
    tag = "booksApi",
    params(("id" = i64, Path, description = "The book's id", minimum = 1), IfMatchHeader),
    responses((status = 200, description = "`Removed Book with id {id}`", body = String, content_type = "text/plain")),
)]
pub(crate) async fn delete(
    _writer: WriteAccess,
    service: web::Data<BookService>,
    WriteTarget { id, check }: WriteTarget,
) -> Result<HttpResponse, ApiError> {
    blocking(&service, move |s| s.delete_book(id, &check)).await?;
    Ok(text_response(format!("Removed Book with id {id}")))
}
