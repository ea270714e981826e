//! Entity tags and the conditional request headers (RFC 9110, section 13).
//!
//! A book's ETag is strong and made of its id and version, so it changes exactly when the book
//! changes and a client can send it back in `If-Match` to write only over what it has read.

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderName};
use books_domain::{Book, BookId, Version, VersionCheck};

/// The ETag of `book`, quoted as the header carries it.
pub(crate) fn etag(book: &Book) -> String {
    format!("\"{}-{}\"", book.id(), book.version())
}

/// The comma-separated members of every instance of a list header, trimmed.
fn list_members(request: &HttpRequest, name: &HeaderName) -> Option<Vec<String>> {
    let mut values = request.headers().get_all(name).peekable();
    values.peek()?;
    Some(
        values
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(|member| member.trim().to_owned())
            .filter(|member| !member.is_empty())
            .collect(),
    )
}

/// The version an entity tag names for book `id`, if it is one of ours and about that book.
fn version_of(tag: &str, id: BookId) -> Option<Version> {
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    let (tag_id, version) = inner.split_once('-')?;
    (tag_id.parse::<i64>().ok()? == id.get()).then_some(())?;
    Version::new(version.parse().ok()?)
}

/// What `If-Match` allows a write to book `id` to overwrite. Strong comparison: a weak tag
/// (`W/"…"`) never matches, and neither does a tag that is not ours.
pub(crate) fn if_match(request: &HttpRequest, id: BookId) -> VersionCheck {
    match list_members(request, &header::IF_MATCH) {
        None => VersionCheck::Any,
        Some(tags) if tags.iter().any(|tag| tag == "*") => VersionCheck::Any,
        Some(tags) => {
            VersionCheck::OneOf(tags.iter().filter_map(|tag| version_of(tag, id)).collect())
        }
    }
}

/// True when `If-None-Match` matches `book`, so a GET can answer 304. Weak comparison.
pub(crate) fn if_none_match(request: &HttpRequest, book: &Book) -> bool {
    list_members(request, &header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.iter().any(|tag| {
            tag == "*"
                || version_of(tag.strip_prefix("W/").unwrap_or(tag), book.id())
                    == Some(book.version())
        })
    })
}

/// The `If-Match` header, as the OpenAPI document describes it.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "documents a header that `if_match` reads")]
pub(crate) struct IfMatchHeader {
    /// Write only while the book still has one of these ETags (comma-separated), or `*` for
    /// any; otherwise 412 and nothing changes.
    #[serde(rename = "If-Match")]
    #[param(nullable = false)]
    if_match: Option<String>,
}

/// The `If-None-Match` header, as the OpenAPI document describes it.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "documents a header that `if_none_match` reads")]
pub(crate) struct IfNoneMatchHeader {
    /// ETags of copies the client holds; when one matches, the answer is 304 with no body.
    #[serde(rename = "If-None-Match")]
    #[param(nullable = false)]
    if_none_match: Option<String>,
}
