//! The bodies the API sends and receives. They are the HTTP contract, kept apart from the domain
//! types so that either can change without the other noticing.

use books_domain::{Book, Change, ChangeKind, FieldError, PatchValue};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::timestamp;

/// A book in the catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "id": 42, "title": "Dune", "author": "Frank Herbert", "genre": "Science fiction",
    "isbn": "9780441013593", "published_year": 1965, "version": 3,
    "created_at": "2026-11-24T06:26:29.123456Z", "updated_at": "2026-11-24T07:01:02.000001Z"
}))]
pub(crate) struct BookResponse {
    /// Assigned by the server; positive and never reused.
    #[schema(minimum = 1, format = Int64)]
    pub id: i64,
    /// 1 to 250 characters, trimmed.
    pub title: String,
    /// 1 to 250 characters, trimmed.
    pub author: String,
    /// Up to 250 characters, trimmed; null when the book has no genre.
    #[schema(required = true)]
    pub genre: Option<String>,
    /// The 13 digits of the edition's ISBN-13 (an ISBN-10 given on input is answered in this
    /// form); unique; null when the book has none.
    #[schema(required = true, pattern = "^97[89][0-9]{10}$")]
    pub isbn: Option<String>,
    /// The year the edition was published, -3000 to 2100; null when unknown.
    #[schema(required = true, minimum = -3000, maximum = 2100)]
    pub published_year: Option<i32>,
    /// 1 when created, one more after each successful change. The `ETag` is derived from it.
    #[schema(minimum = 1, format = Int64)]
    pub version: i64,
    /// When the book was created (RFC 3339, UTC).
    #[serde(serialize_with = "timestamp::serialize")]
    pub created_at: DateTime<Utc>,
    /// When the book last changed (RFC 3339, UTC).
    #[serde(serialize_with = "timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

impl From<&Book> for BookResponse {
    fn from(book: &Book) -> Self {
        Self {
            id: book.id().get(),
            title: book.title().as_str().to_owned(),
            author: book.author().as_str().to_owned(),
            genre: book.genre().map(|g| g.as_str().to_owned()),
            isbn: book.fields().isbn.map(|isbn| isbn.as_str().to_owned()),
            published_year: book.fields().published_year.map(|year| year.get()),
            version: book.version().get(),
            created_at: book.created_at(),
            updated_at: book.updated_at(),
        }
    }
}

/// One page of books.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BookPage {
    /// The books of this page, in the requested order.
    pub items: Vec<BookResponse>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The books of a batch create, as JSON.
//
// The document's schema only: read by `reading::read_batch_json`, element by element like
// `BookInput`, so that a 422 names every invalid field of every book (`books[3].title`).
#[derive(Debug, ToSchema)]
#[schema(example = json!({"books": [
    {"title": "Dune", "author": "Frank Herbert", "genre": "Science fiction"},
    {"title": "Emma", "author": "Jane Austen"}
]}))]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read field by field"
)]
pub(crate) struct BookBatchInput {
    /// 1 to 1 000 books, created together or not at all.
    #[schema(min_items = 1, max_items = 1000)]
    pub(crate) books: Vec<BookInput>,
}

/// The books a batch created, in the order they were given.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BookBatch {
    /// The new books, in input order.
    pub(crate) books: Vec<BookResponse>,
}

/// What a change did to its book.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ChangeKindResponse {
    /// The book was created (version 1).
    Created,
    /// The book was replaced or patched.
    Updated,
    /// The book was deleted.
    Deleted,
}

/// One committed change to the catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "seq": 1207, "kind": "updated", "book_id": 42, "version": 3, "at": "2026-11-24T07:01:02.000001Z",
    "book": {"id": 42, "title": "Dune", "author": "Frank Herbert", "genre": "Science fiction",
        "isbn": "9780441013593", "published_year": 1965, "version": 3, "created_at": "2026-11-24T06:26:29.123456Z", "updated_at": "2026-11-24T07:01:02.000001Z"}
}))]
pub(crate) struct ChangeResponse {
    /// Its place in the feed: every change has a larger one than the changes before it.
    #[schema(minimum = 1, format = Int64)]
    pub(crate) seq: i64,
    /// What happened.
    pub(crate) kind: ChangeKindResponse,
    /// Which book.
    #[schema(minimum = 1, format = Int64)]
    pub(crate) book_id: i64,
    /// The book's version after the change (for a delete, the version deleted).
    #[schema(minimum = 1, format = Int64)]
    pub(crate) version: i64,
    /// When the change was made (RFC 3339, UTC).
    #[serde(serialize_with = "timestamp::serialize")]
    pub(crate) at: DateTime<Utc>,
    /// The book as the change left it; null for a delete.
    #[schema(required = true)]
    pub(crate) book: Option<BookResponse>,
}

impl From<&Change> for ChangeResponse {
    fn from(change: &Change) -> Self {
        Self {
            seq: i64::try_from(change.seq).unwrap_or(i64::MAX),
            kind: match change.kind {
                ChangeKind::Created => ChangeKindResponse::Created,
                ChangeKind::Updated => ChangeKindResponse::Updated,
                ChangeKind::Deleted => ChangeKindResponse::Deleted,
            },
            book_id: change.book_id.get(),
            version: change.version.get(),
            at: change.at,
            book: change.book.as_ref().map(BookResponse::from),
        }
    }
}

/// The changes after a point of the feed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangePageResponse {
    /// The changes, in `seq` order.
    pub(crate) items: Vec<ChangeResponse>,
    /// Pass as `after` to continue: the last item's `seq`, or the `after` given when there is
    /// none.
    #[schema(minimum = 0, format = Int64)]
    pub(crate) next_after: i64,
}

/// The body of a create (`POST`) or a full replacement (`PUT`).
//
// The document's schema only: the body is read member by member into the domain's
// `BookInput` (`reading::JsonObject`), so that a 422 names every invalid field at once. The document
// adds each field's rules and `additionalProperties: false` (`openapi::state_the_rules`).
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "title": "Dune", "author": "Frank Herbert", "genre": "Science fiction",
    "isbn": "978-0-441-01359-3", "published_year": 1965
}))]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read field by field"
)]
pub(crate) struct BookInput {
    /// Required; 1 to 250 characters after trimming white space.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 250)]
    pub(crate) title: Option<String>,
    /// Required; 1 to 250 characters after trimming white space.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 250)]
    pub(crate) author: Option<String>,
    /// Optional; at most 250 characters after trimming; blank or null means no genre.
    #[schema(max_length = 250)]
    pub(crate) genre: Option<String>,
    /// Optional; an ISBN-13 (978 or 979 first) or ISBN-10, hyphens and spaces allowed, a final
    /// `x` read as `X`, with a valid check digit; stored and answered as the 13 digits of the
    /// ISBN-13. Blank or null means none. Unique: another book's ISBN is a 409 naming that book.
    pub(crate) isbn: Option<String>,
    /// Optional; the year the edition was published, -3000 to 2100. Null means unknown.
    #[schema(minimum = -3000, maximum = 2100)]
    pub(crate) published_year: Option<i32>,
}

/// A JSON merge patch (RFC 7396) of a book: members left out are kept.
//
// The document's schema only, read member by member like `BookInput`: each member is left out
// (kept), null, or a value.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"genre": null}))]
#[expect(
    dead_code,
    reason = "the document's schema: the body is read field by field"
)]
pub(crate) struct BookPatchInput {
    /// A new title, 1 to 250 characters after trimming. Null is refused.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 250, nullable = false)]
    pub(crate) title: PatchValue<String>,
    /// A new author, 1 to 250 characters after trimming. Null is refused.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 250, nullable = false)]
    pub(crate) author: PatchValue<String>,
    /// A new genre, at most 250 characters after trimming; null or blank clears it.
    #[schema(value_type = Option<String>, max_length = 250)]
    pub(crate) genre: PatchValue<String>,
    /// A new ISBN (ISBN-13 or ISBN-10, as on create); null or blank clears it.
    #[schema(value_type = Option<String>)]
    pub(crate) isbn: PatchValue<String>,
    /// A new year of publication, -3000 to 2100; null clears it.
    #[schema(value_type = Option<i32>, minimum = -3000, maximum = 2100)]
    pub(crate) published_year: PatchValue<i32>,
}

/// An error, as RFC 9457 describes it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: the status says what kind of problem this is.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: String,
    /// The standard phrase of the status.
    pub title: String,
    /// The HTTP status code.
    #[schema(value_type = i32, minimum = 100, maximum = 599)]
    pub status: u16,
    /// What went wrong with this request, for a human.
    pub detail: String,
    /// On validation errors (422): each invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldViolation>,
    /// On 409 for an ISBN: the path of the book that has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    pub existing: Option<String>,
}

/// One invalid field of a request body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldViolation {
    /// The member's name.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl From<&FieldError> for FieldViolation {
    fn from(error: &FieldError) -> Self {
        Self {
            field: error.field.name().to_owned(),
            message: error.problem.to_string(),
        }
    }
}
