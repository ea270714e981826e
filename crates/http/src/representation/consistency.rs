//! `Consistency-Token`: reading one's own writes when reads may go to replicas. Every successful
//! write answers one (the primary's WAL position once the write had committed); a read that
//! sends it back is answered only from data that holds that write.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponseBuilder};
use books_domain::ConsistencyToken;
use utoipa::IntoParams;

use crate::representation::problem::ApiError;

/// The header's name.
pub(crate) const CONSISTENCY_TOKEN: &str = "Consistency-Token";

/// The `Consistency-Token` header of a read, read.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct ConsistencyTokenHeader {
    /// The `Consistency-Token` answered to the client's last write: the answer then comes from
    /// data that already holds that write (a replica that has replayed past it, else the
    /// primary), so a client always reads what it wrote, and a 304 never comes from older data.
    #[param(rename = "Consistency-Token", value_type = Option<String>, nullable = false, pattern = "^[0-9a-f]{16}$")]
    pub(crate) token: Option<ConsistencyToken>,
}

/// A token as this service writes it: 16 lowercase hexadecimal digits.
fn parse(raw: &str) -> Option<ConsistencyToken> {
    (raw.len() == 16 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u64::from_str_radix(raw, 16).ok())
        .flatten()
        .map(ConsistencyToken::new)
}

impl ConsistencyTokenHeader {
    /// The token of `request`, if it sends one.
    ///
    /// # Errors
    ///
    /// 400 when it is given twice or is not a token this service answered.
    pub(crate) fn read(request: &HttpRequest) -> Result<Self, ApiError> {
        let invalid = |reason: &str| ApiError::BadRequest(format!("{CONSISTENCY_TOKEN} {reason}"));
        let mut values = request.headers().get_all(CONSISTENCY_TOKEN);
        let token = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => return Err(invalid("must be given once")),
            (Some(value), None) => Some(value.to_str().ok().and_then(parse).ok_or_else(|| {
                invalid("must be a token a write answered (16 hexadecimal digits)")
            })?),
        };
        Ok(Self { token })
    }
}

impl FromRequest for ConsistencyTokenHeader {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::read(request))
    }
}

/// Adds the write's token to its answer, when storage has one.
pub(crate) fn stamp(response: &mut HttpResponseBuilder, token: Option<ConsistencyToken>) {
    if let Some(token) = token {
        response.insert_header((CONSISTENCY_TOKEN, token.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header's `pattern` in the document: [`parse`]'s rule.
    const PATTERN: &str = "^[0-9a-f]{16}$";

    #[test]
    fn a_token_reads_back_as_written_and_anything_else_is_refused() {
        let token = ConsistencyToken::new(0x1_6B37_4D48);
        assert_eq!(token.to_string(), "000000016b374d48");
        assert_eq!(parse(&token.to_string()), Some(token));
        let pattern = regex::Regex::new(PATTERN).unwrap();
        assert!(pattern.is_match(&token.to_string()));
        for bad in [
            "",
            "16b374d48",
            "000000016B374D48",
            "000000016b374d4g",
            "0000000016b374d48",
            " 00000016b374d48",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }
}
