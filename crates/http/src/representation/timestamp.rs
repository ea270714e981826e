//! Timestamps as the API writes them: RFC 3339 in UTC, `2026-12-04T07:35:52.468425Z`, the
//! fraction in 0, 3, 6 or 9 digits, as few as keep it exact: exactly what chrono's own `Serialize`
//! writes, without its way there. chrono formats through `core::fmt`, a call per field, and serde
//! passes that through an escaping writer a character at a time: for a list page's 40 timestamps
//! that was 12 % of the service's CPU (`docs/performance.md`, tenth round).

use chrono::{DateTime, Datelike as _, SecondsFormat, Timelike as _, Utc};
use serde::Serializer;

/// The longest text: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LONGEST: usize = 30;

/// Serializes `at` as chrono does (for `#[serde(serialize_with)]`).
///
/// # Errors
///
/// Those of the serializer.
pub(crate) fn serialize<S: Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match Text::of(at) {
        Some(text) => serializer.serialize_str(text.as_str()),
        // A year of more or fewer than four digits, or a leap second: chrono's own way.
        None => serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

/// A timestamp's text, on the stack.
struct Text {
    bytes: [u8; LONGEST],
    length: usize,
}

impl Text {
    /// `at`'s text, or `None` when chrono writes it in a form of its own.
    fn of(at: &DateTime<Utc>) -> Option<Self> {
        let year = u32::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
        let nanos = at.nanosecond();
        if nanos >= 1_000_000_000 {
            return None;
        }
        let mut text = Self {
            bytes: [0; LONGEST],
            length: 0,
        };
        text.digits(year, 4);
        text.byte(b'-');
        text.digits(at.month(), 2);
        text.byte(b'-');
        text.digits(at.day(), 2);
        text.byte(b'T');
        text.digits(at.hour(), 2);
        text.byte(b':');
        text.digits(at.minute(), 2);
        text.byte(b':');
        text.digits(at.second(), 2);
        if nanos != 0 {
            text.byte(b'.');
            if nanos.is_multiple_of(1_000_000) {
                text.digits(nanos / 1_000_000, 3);
            } else if nanos.is_multiple_of(1_000) {
                text.digits(nanos / 1_000, 6);
            } else {
                text.digits(nanos, 9);
            }
        }
        text.byte(b'Z');
        Some(text)
    }

    fn byte(&mut self, byte: u8) {
        self.bytes[self.length] = byte;
        self.length += 1;
    }

    /// The last `count` decimal digits of `value`, zeros first.
    fn digits(&mut self, mut value: u32, count: usize) {
        for place in (0..count).rev() {
            // A remainder of 10 is below 10.
            self.bytes[self.length + place] = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.length += count;
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators were written.
        std::str::from_utf8(&self.bytes[..self.length]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[derive(serde::Serialize)]
    struct Ours(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    #[test]
    fn timestamps_are_written_exactly_as_chrono_writes_them() {
        let mut nanos = vec![
            0,
            1,
            999,
            1_000,
            1_000_000,
            468_425_000,
            468_000_000,
            999_999_999,
        ];
        // And a spread of others, of every class of fraction.
        let mut state = 0x9E37_79B9_u32;
        for _ in 0..2_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let value = state % 1_000_000_000;
            nanos.extend([value, value / 1_000 * 1_000, value / 1_000_000 * 1_000_000]);
        }
        let seconds = [
            0,
            1,
            59,
            86_399,
            951_782_400,
            1_733_300_000,
            4_102_444_799,
            253_402_300_799,
        ];
        for (index, nano) in nanos.iter().enumerate() {
            let at = Utc
                .timestamp_opt(seconds[index % seconds.len()], *nano)
                .unwrap();
            assert_eq!(
                serde_json::to_string(&Ours(at)).unwrap(),
                serde_json::to_string(&at).unwrap()
            );
        }
    }

    #[test]
    fn years_chrono_writes_in_a_form_of_its_own_are_left_to_it() {
        for at in [
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
        ] {
            assert_eq!(
                serde_json::to_string(&Ours(at)).unwrap(),
                serde_json::to_string(&at).unwrap()
            );
        }
    }
}
