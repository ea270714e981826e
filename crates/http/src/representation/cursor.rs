//! Opaque listing cursors.
//!
//! A cursor carries the whole query it continues (sort, filters) and the position of the last
//! book shown, so a client only passes it back. It is checked, not secret: a checksum over the
//! content turns an edited, truncated or foreign cursor into a 400 instead of a silently
//! different listing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use books_domain::{
    Author, BookFilter, BookId, Genre, Isbn, ListQuery, PageSize, Position, SearchTerm, Sort,
    SortValue, Title,
};
use chrono::{DateTime, Datelike as _};
use serde::{Deserialize, Serialize};

/// Longer than any cursor we make (250-character sort values and filters included).
const MAX_CURSOR_LEN: usize = 8192;
const CHECKSUM_LEN: usize = 8;
/// Mixed into the checksum so that a cursor of another service of the same shape is refused.
const CHECKSUM_KEY: &[u8] = b"books-api/cursor/v1";

#[derive(Serialize, Deserialize)]
struct Token {
    /// The sort order, as the `sort` parameter spells it.
    s: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    g: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    q: Option<String>,
    /// The ISBN filter, as its 13 digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    /// A text sort value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
    /// A time sort value, in microseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<i64>,
    /// The id of the last book shown.
    i: i64,
    /// The page size. (Cursors made before it was carried have none: the default then.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<u64>,
}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    // FNV-1a: stable across builds and versions, which a cursor handed out yesterday needs.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in CHECKSUM_KEY.iter().chain(payload) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.to_be_bytes()
}

/// The cursor that continues `query` after `position`.
pub(crate) fn encode(query: &ListQuery, position: &Position) -> String {
    let (t, m) = match &position.value {
        SortValue::Id => (None, None),
        SortValue::Text(text) => (Some(text.clone()), None),
        SortValue::Time(time) => (None, Some(time.timestamp_micros())),
    };
    let token = Token {
        s: query.sort.to_param(),
        a: query.filter.author.as_ref().map(|a| a.as_str().to_owned()),
        g: query.filter.genre.as_ref().map(|g| g.as_str().to_owned()),
        q: query.filter.search.as_ref().map(|q| q.as_str().to_owned()),
        n: query.filter.isbn.map(|isbn| isbn.as_str().to_owned()),
        t,
        m,
        i: position.id.get(),
        l: Some(query.limit.get() as u64),
    };
    let mut bytes = serde_json::to_vec(&token).unwrap_or_default();
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads a cursor: the listing it continues, with its position and page size; `None` when it is
/// not one we made.
pub(crate) fn decode(cursor: &str) -> Option<ListQuery> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let (payload, sum) = bytes.split_at_checked(bytes.len().checked_sub(CHECKSUM_LEN)?)?;
    if checksum(payload) != sum {
        return None;
    }
    let token: Token = serde_json::from_slice(payload).ok()?;
    let sort = Sort::parse(&token.s)?;
    let filter = BookFilter {
        author: token.a.as_deref().map(Author::new).transpose().ok()?,
        genre: token.g.as_deref().map(Genre::new).transpose().ok()?,
        search: token.q.as_deref().map(SearchTerm::new).transpose().ok()?,
        isbn: token.n.as_deref().map(Isbn::parse).transpose().ok()?,
    };
    // The checksum stops accidents, not someone who has read this file: the values are checked
    // again as any input would be, so that a forged cursor is a 400 and never a database error.
    let value = match (token.t, token.m) {
        (None, None) => SortValue::Id,
        (Some(text), None) => SortValue::Text(Title::new(&text).ok()?.into_string()),
        (None, Some(micros)) => {
            let time = DateTime::from_timestamp_micros(micros)?;
            (1..=9999)
                .contains(&time.year())
                .then_some(SortValue::Time(time))?
        }
        (Some(_), Some(_)) => return None,
    };
    let after = Position {
        key: sort.key,
        value,
        id: BookId::new(token.i)?,
    };
    let limit = match token.l {
        None => PageSize::default(),
        Some(size) => PageSize::new(size)?,
    };
    after.is_consistent().then_some(ListQuery {
        filter,
        sort,
        limit,
        after: Some(after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use books_domain::SortKey;

    fn query() -> ListQuery {
        ListQuery {
            sort: Sort {
                key: SortKey::Title,
                descending: true,
            },
            filter: BookFilter {
                author: Some(Author::new("Frank Herbert").unwrap()),
                ..BookFilter::default()
            },
            ..ListQuery::default()
        }
    }

    fn position() -> Position {
        Position {
            key: SortKey::Title,
            value: SortValue::Text("Dune ✓".into()),
            id: BookId::new(7).unwrap(),
        }
    }

    #[test]
    fn a_cursor_reads_back_as_the_query_and_position_it_was_made_from() {
        let cursor = encode(&query(), &position());
        let continuation = decode(&cursor).expect("our own cursor");
        assert_eq!(continuation.sort, query().sort);
        assert_eq!(continuation.filter, query().filter);
        assert_eq!(continuation.after, Some(position()));
        assert_eq!(continuation.limit, query().limit);
    }

    #[test]
    fn an_edited_cursor_is_refused() {
        let cursor = encode(&query(), &position());
        for i in 0..cursor.len() {
            let mut edited = cursor.clone().into_bytes();
            edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(edited).unwrap();
            assert!(decode(&edited).is_none(), "edit at {i} went unnoticed");
        }
    }

    #[test]
    fn a_well_formed_cursor_with_values_no_book_can_have_is_refused() {
        let forge = |payload: &str| {
            let mut bytes = payload.as_bytes().to_vec();
            bytes.extend_from_slice(&checksum(payload.as_bytes()));
            URL_SAFE_NO_PAD.encode(bytes)
        };
        assert!(decode(&forge(r#"{"s":"title","t":"Du\u0000ne","i":1}"#)).is_none());
        assert!(
            decode(&forge(&format!(
                r#"{{"s":"title","t":"{}","i":1}}"#,
                "x".repeat(300)
            )))
            .is_none()
        );
        assert!(
            decode(&forge(
                r#"{"s":"created_at","m":9223372036854775807,"i":1}"#
            ))
            .is_none()
        );
        assert!(decode(&forge(r#"{"s":"id","i":-5}"#)).is_none());
        assert!(decode(&forge(r#"{"s":"title","t":"Dune","i":1}"#)).is_some());
    }

    #[test]
    fn garbage_and_truncated_cursors_are_refused() {
        let cursor = encode(&query(), &position());
        for bad in [
            "",
            "x",
            "%%%",
            &cursor[..cursor.len() - 2],
            &"A".repeat(MAX_CURSOR_LEN + 1),
        ] {
            assert!(decode(bad).is_none(), "{bad}");
        }
    }
}
