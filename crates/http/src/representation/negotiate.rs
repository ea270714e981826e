//! Content negotiation: which of the representations an operation can send the client prefers,
//! by its `Accept` header (RFC 9110 §12.5.1).

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::representation::problem::ApiError;
use crate::representation::xml::XML;

/// The representations of a book, and of a page or a batch of books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BookFormat {
    Json,
    Xml,
}

impl BookFormat {
    /// The media type.
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Xml => XML,
        }
    }

    /// The format of the request's body, by its `Content-Type`: XML for `application/xml`,
    /// JSON otherwise (a JSON reader then says what it accepts).
    pub(crate) fn of_body(request: &HttpRequest) -> Self {
        if media_type(request).as_deref() == Some(XML) {
            Self::Xml
        } else {
            Self::Json
        }
    }

    /// The format the client prefers (`Accept`), `first` when it has no preference between them.
    ///
    /// # Errors
    ///
    /// 406 when it accepts neither.
    pub(crate) fn answer(request: &HttpRequest, first: Self) -> Result<Self, ApiError> {
        let offers = match first {
            Self::Json => [Self::Json, Self::Xml],
            Self::Xml => [Self::Xml, Self::Json],
        };
        let types = offers.map(Self::media_type);
        preferred(request, &types)
            .and_then(|chosen| {
                offers
                    .into_iter()
                    .find(|offer| offer.media_type() == chosen)
            })
            .ok_or_else(|| {
                ApiError::NotAcceptable(format!("a book is application/json or {XML} (Accept)"))
            })
    }
}

/// The request's media type, lower-cased, without parameters.
pub(crate) fn media_type(request: &HttpRequest) -> Option<String> {
    let value = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

/// The offered media type the client prefers: the highest `q` wins, a more specific range
/// (`text/csv` over `text/*` over `*/*`) decides a type's `q`, and ties go to the earlier offer.
/// No `Accept` header takes the first offer; `None` means no offer is acceptable (a 406).
pub(crate) fn preferred<'a>(request: &HttpRequest, offers: &[&'a str]) -> Option<&'a str> {
    let mut values = request.headers().get_all(header::ACCEPT).peekable();
    if values.peek().is_none() {
        return offers.first().copied();
    }
    let ranges: Vec<Range> = values
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(Range::parse)
        .collect();
    let mut best: Option<(&str, u16)> = None;
    for offer in offers {
        let q = ranges
            .iter()
            .filter_map(|range| range.specificity(offer).map(|s| (s, range.q)))
            .max_by_key(|(specificity, _)| *specificity)
            .map_or(0, |(_, q)| q);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((offer, q));
        }
    }
    best.map(|(offer, _)| offer)
}

/// One media range of an `Accept` header, with its weight in thousandths.
struct Range {
    kind: String,
    subtype: String,
    q: u16,
}

impl Range {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(';');
        let (kind, subtype) = parts.next()?.trim().split_once('/')?;
        let mut q = 1000;
        for parameter in parts {
            if let Some((name, value)) = parameter.split_once('=')
                && name.trim().eq_ignore_ascii_case("q")
            {
                q = weight(value.trim())?;
            }
        }
        Some(Self {
            kind: kind.trim().to_ascii_lowercase(),
            subtype: subtype.trim().to_ascii_lowercase(),
            q,
        })
    }

    /// How closely this range names `offer` (2 exactly, 1 by its type, 0 as `*/*`), or `None`
    /// when it does not cover it.
    fn specificity(&self, offer: &str) -> Option<u8> {
        let (kind, subtype) = offer.split_once('/')?;
        match (self.kind.as_str(), self.subtype.as_str()) {
            ("*", "*") => Some(0),
            (k, "*") if k == kind => Some(1),
            (k, s) if k == kind && s == subtype => Some(2),
            _ => None,
        }
    }
}

/// A `q` value (`0` to `1`, at most three decimals) in thousandths.
fn weight(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn pick(accept: Option<&str>) -> Option<&'static str> {
        let mut request = TestRequest::default();
        if let Some(accept) = accept {
            request = request.insert_header((header::ACCEPT, accept));
        }
        preferred(
            &request.to_http_request(),
            &["application/x-ndjson", "text/csv"],
        )
    }

    #[test]
    fn no_accept_header_takes_the_first_offer() {
        assert_eq!(pick(None), Some("application/x-ndjson"));
        assert_eq!(pick(Some("*/*")), Some("application/x-ndjson"));
    }

    #[test]
    fn the_highest_weight_wins_and_a_specific_range_decides_a_types_weight() {
        assert_eq!(pick(Some("text/csv")), Some("text/csv"));
        assert_eq!(pick(Some("TEXT/CSV; charset=utf-8")), Some("text/csv"));
        assert_eq!(
            pick(Some("application/x-ndjson;q=0.5, text/*;q=0.8")),
            Some("text/csv")
        );
        assert_eq!(
            pick(Some("*/*, application/x-ndjson;q=0")),
            Some("text/csv")
        );
    }

    #[test]
    fn nothing_acceptable_and_malformed_weights_give_no_offer() {
        assert_eq!(pick(Some("application/json")), None);
        assert_eq!(pick(Some("text/csv;q=0")), None);
        assert_eq!(pick(Some("text/csv;q=2")), None);
        assert_eq!(pick(Some("nonsense")), None);
    }
}
