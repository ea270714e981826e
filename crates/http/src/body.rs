//! Reading JSON request bodies member by member, so that a 422 names every invalid field at once
//! (a derive-based decoder stops at the first surprise).

use actix_web::HttpRequest;
use actix_web::http::header;
use books_domain::{BookField, BookPatch, InvalidBook, NewBook, PatchValue};
use serde_json::{Map, Value};

use crate::dto::FieldViolation;
use crate::error::ApiError;

/// The media types a create or a replacement accepts.
pub(crate) const JSON: &[&str] = &["application/json"];
/// The media types a patch accepts.
pub(crate) const MERGE_PATCH: &[&str] = &["application/merge-patch+json", "application/json"];

/// A request body that is a JSON object.
pub(crate) struct JsonObject(Map<String, Value>);

impl JsonObject {
    /// Checks the media type, then parses `body`.
    pub(crate) fn parse(
        request: &HttpRequest,
        body: &[u8],
        accepted: &[&str],
    ) -> Result<Self, ApiError> {
        let media_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        if !media_type
            .as_deref()
            .is_some_and(|given| accepted.contains(&given))
        {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the request body must be {} (Content-Type)",
                accepted.join(" or ")
            )));
        }
        let value: Value = serde_json::from_slice(body).map_err(|error| {
            ApiError::BadRequest(format!("the request body is not valid JSON: {error}"))
        })?;
        match value {
            Value::Object(members) => Ok(Self(members)),
            _ => Err(ApiError::Unprocessable(vec![violation(
                "",
                "the request body must be a JSON object",
            )])),
        }
    }

    /// Reads a new book (or a full replacement): title and author required, genre optional.
    pub(crate) fn into_new_book(self) -> Result<NewBook, ApiError> {
        let members = Members::take(self.0);
        let [title, author, genre] = members
            .values
            .each_ref()
            .map(|m| m.as_patch_value().into_option());
        let parsed = NewBook::parse(title, author, genre);
        members.finish(parsed)
    }

    /// Reads a merge patch: members left out are kept, `null` clears (where that is allowed).
    pub(crate) fn into_patch(self) -> Result<BookPatch, ApiError> {
        let members = Members::take(self.0);
        let [title, author, genre] = members.values.each_ref().map(Member::as_patch_value);
        let parsed = BookPatch::parse(title, author, genre);
        members.finish(parsed)
    }
}

const FIELDS: [BookField; 3] = [BookField::Title, BookField::Author, BookField::Genre];

/// One known member of the body.
enum Member {
    Absent,
    Null,
    Text(String),
    /// Present, but neither a string nor null.
    WrongType,
}

impl Member {
    fn as_patch_value(&self) -> PatchValue<&str> {
        match self {
            Self::Absent | Self::WrongType => PatchValue::Keep,
            Self::Null => PatchValue::Clear,
            Self::Text(text) => PatchValue::Set(text),
        }
    }
}

trait IntoOption<'a> {
    fn into_option(self) -> Option<&'a str>;
}

impl<'a> IntoOption<'a> for PatchValue<&'a str> {
    /// Outside merge patches, null means the same as leaving the member out.
    fn into_option(self) -> Option<&'a str> {
        match self {
            PatchValue::Set(text) => Some(text),
            PatchValue::Keep | PatchValue::Clear => None,
        }
    }
}

/// The known members, taken out of the object; whatever is left is unknown.
struct Members {
    values: [Member; 3],
    unknown: Vec<String>,
}

impl Members {
    fn take(mut object: Map<String, Value>) -> Self {
        let values = FIELDS.map(|field| match object.remove(field.name()) {
            None => Member::Absent,
            Some(Value::Null) => Member::Null,
            Some(Value::String(text)) => Member::Text(text),
            Some(_) => Member::WrongType,
        });
        Self {
            values,
            unknown: object.into_iter().map(|(name, _)| name).collect(),
        }
    }

    /// Merges the domain's verdict with what was wrong in the JSON itself, field by field.
    fn finish<T>(self, parsed: Result<T, InvalidBook>) -> Result<T, ApiError> {
        let domain_errors = parsed
            .as_ref()
            .err()
            .map(|invalid| invalid.errors.as_slice())
            .unwrap_or_default();
        let mut errors = Vec::new();
        for (field, member) in FIELDS.iter().zip(&self.values) {
            if matches!(member, Member::WrongType) {
                errors.push(violation(field.name(), "must be a string"));
            } else {
                errors.extend(
                    domain_errors
                        .iter()
                        .filter(|e| e.field == *field)
                        .map(FieldViolation::from),
                );
            }
        }
        for name in self.unknown {
            errors.push(violation(&name, "is not a known field"));
        }
        match parsed {
            Ok(value) if errors.is_empty() => Ok(value),
            _ => Err(ApiError::Unprocessable(errors)),
        }
    }
}

fn violation(field: &str, message: &str) -> FieldViolation {
    // A client's own member name, cut short so that a huge key does not make a huge response.
    let field: String = field.chars().take(100).collect();
    FieldViolation {
        field,
        message: message.to_owned(),
    }
}
