//! Entity tags and the conditional request headers (RFC 9110, section 13).
//!
//! A book's ETag is strong and made of its id and version, so it changes exactly when the book
//! changes and a client can send it back in `If-Match` to write only over what it has read. Each
//! representation has its own (`"42-3"` for JSON, `"42-3-xml"` for XML), as a strong validator
//! must; the conditions accept either for the version it names.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderName};
use actix_web::{FromRequest, HttpRequest};
use books_domain::{Book, BookId, Version, VersionCheck};
use utoipa::IntoParams;

use crate::representation::negotiate::BookFormat;
use crate::representation::problem::ApiError;

/// The ETag of `book` in `format`, quoted as the header carries it.
pub(crate) fn etag(book: &Book, format: BookFormat) -> String {
    match format {
        BookFormat::Json => format!("\"{}-{}\"", book.id(), book.version()),
        BookFormat::Xml => format!("\"{}-{}{XML_SUFFIX}\"", book.id(), book.version()),
    }
}

/// What sets an XML representation's tag apart.
const XML_SUFFIX: &str = "-xml";

/// One member of a condition header.
#[derive(Debug, PartialEq, Eq)]
enum Member {
    Any,
    Tag { weak: bool, tag: String },
}

/// The members of one header value, or `None` when it does not follow [`crate::representation::rules::CONDITION`].
/// (A tag may hold a comma, so the value is scanned rather than split.)
fn members(value: &str) -> Option<Vec<Member>> {
    let is_tag_char = |c: char| c == '\x21' || ('\x23'..='\x7E').contains(&c);
    let mut members = Vec::new();
    let mut rest = value;
    loop {
        if let Some(after) = rest.strip_prefix('*') {
            members.push(Member::Any);
            rest = after;
        } else {
            let (weak, quoted) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let inner = quoted.strip_prefix('"')?;
            let end = inner.find(|c: char| !is_tag_char(c))?;
            inner[end..].starts_with('"').then_some(())?;
            members.push(Member::Tag {
                weak,
                tag: quoted[..end + 2].to_owned(),
            });
            rest = &inner[end + 1..];
        }
        rest = rest.trim_start_matches([' ', '\t']);
        if rest.is_empty() {
            return Some(members);
        }
        rest = rest.strip_prefix(',')?.trim_start_matches([' ', '\t']);
    }
}

/// The members of every instance of a condition header; `None` when there is none.
///
/// # Errors
///
/// 400 when a value is empty or not `*` or a list of entity tags: a condition the server cannot
/// read must not be taken for one that failed (412) or for none at all.
fn condition(request: &HttpRequest, name: &HeaderName) -> Result<Option<Vec<Member>>, ApiError> {
    let mut values = request.headers().get_all(name).peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::BadRequest(format!(
            "{} must be * or a comma-separated list of entity tags such as \"42-3\"",
            header_name(name)
        ))
    };
    let mut all = Vec::new();
    for value in values {
        let text = value.to_str().map_err(|_| invalid())?;
        all.extend(members(text).ok_or_else(invalid)?);
    }
    let members = all;
    let star_alone = members.len() == 1 || !members.contains(&Member::Any);
    star_alone.then_some(Some(members)).ok_or_else(invalid)
}

fn header_name(name: &HeaderName) -> &'static str {
    if *name == header::IF_MATCH {
        "If-Match"
    } else {
        "If-None-Match"
    }
}

/// The version an entity tag names for book `id`, if it is one of ours and about that book.
fn version_of(tag: &str, id: BookId) -> Option<Version> {
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    let inner = inner.strip_suffix(XML_SUFFIX).unwrap_or(inner);
    let (tag_id, version) = inner.split_once('-')?;
    (tag_id.parse::<i64>().ok()? == id.get()).then_some(())?;
    Version::new(version.parse().ok()?)
}

/// The `If-Match` header, read: the type the document describes is the one the request is
/// read into.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct IfMatchHeader {
    /// Write only while the book still has one of these ETags (comma-separated), or `*` for
    /// any; otherwise 412 and nothing changes.
    #[param(rename = "If-Match", value_type = Option<String>, nullable = false)]
    if_match: Option<Vec<Member>>,
}

impl IfMatchHeader {
    /// Reads `If-Match`.
    ///
    /// # Errors
    ///
    /// 400 when it is not well formed.
    pub(crate) fn read(request: &HttpRequest) -> Result<Self, ApiError> {
        Ok(Self {
            if_match: condition(request, &header::IF_MATCH)?,
        })
    }

    /// What it allows a write to book `id` to overwrite. Strong comparison: a weak tag
    /// (`W/"…"`) never matches, and neither does a tag that is not ours.
    pub(crate) fn check(&self, id: BookId) -> VersionCheck {
        match &self.if_match {
            None => VersionCheck::Any,
            Some(members) if members.contains(&Member::Any) => VersionCheck::Any,
            Some(members) => VersionCheck::OneOf(
                members
                    .iter()
                    .filter_map(|member| match member {
                        Member::Tag { weak: false, tag } => version_of(tag, id),
                        _ => None,
                    })
                    .collect(),
            ),
        }
    }
}

/// The `If-None-Match` header, read.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct IfNoneMatchHeader {
    /// ETags of copies the client holds; when one matches, the answer is 304 with no body.
    #[param(rename = "If-None-Match", value_type = Option<String>, nullable = false)]
    if_none_match: Option<Vec<Member>>,
}

impl FromRequest for IfNoneMatchHeader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            condition(request, &header::IF_NONE_MATCH).map(|if_none_match| Self { if_none_match }),
        )
    }
}

impl IfNoneMatchHeader {
    /// True when it matches `book`, so that a GET can answer 304. Weak comparison.
    pub(crate) fn matches(&self, book: &Book) -> bool {
        self.if_none_match.as_ref().is_some_and(|members| {
            members.iter().any(|member| match member {
                Member::Any => true,
                Member::Tag { tag, .. } => version_of(tag, book.id()) == Some(book.version()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_representations_tag_names_the_version() {
        let id = BookId::new(42).unwrap();
        assert_eq!(version_of(r#""42-3""#, id), Version::new(3));
        assert_eq!(version_of(r#""42-3-xml""#, id), Version::new(3));
        assert_eq!(version_of(r#""42-3-csv""#, id), None);
        assert_eq!(version_of(r#""41-3-xml""#, id), None);
    }

    #[test]
    fn condition_lists_are_read_as_the_pattern_describes() {
        assert_eq!(members("*"), Some(vec![Member::Any]));
        assert_eq!(
            members(r#""1-2" ,W/"a,b""#),
            Some(vec![
                Member::Tag {
                    weak: false,
                    tag: r#""1-2""#.to_owned()
                },
                Member::Tag {
                    weak: true,
                    tag: r#""a,b""#.to_owned()
                },
            ])
        );
        for bad in ["", " ", "1-2", r#""1-2"#, r#""1-2","#, r#""a b""#, "W/*"] {
            assert_eq!(members(bad), None, "{bad:?}");
        }
    }
}
