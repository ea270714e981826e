//! The input rules the service checks, written as the OpenAPI document states them, so that a
//! generated client (or a fuzzer) can check a request before sending it and agree with the
//! server about every string.
//!
//! The text rule is the domain's (`books_domain::Title::new` and its kin): white space around
//! the text is trimmed, the rest must be 1 to 250 characters with no control character. The
//! patterns spell that out with explicit classes, since `\s` means different things in
//! ECMAScript, Python and Rust; white space is Unicode's `White_Space`, as Rust's `trim` uses,
//! and a control character is Unicode's `Cc`, as `char::is_control` tests.

/// White space, as `str::trim` removes it.
const SPACE: &str = r"[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";
/// A character that may stand first or last once the text is trimmed.
const EDGE: &str = r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";
/// A character that may stand inside the text.
const INNER: &str = r"[^\x00-\x1F\x7F-\x9F]";

/// A required text (title, author): 1 to 250 characters once trimmed, no control character.
pub(crate) fn required_text() -> String {
    format!("^{SPACE}*{EDGE}(?:{INNER}{{0,248}}{EDGE})?{SPACE}*$")
}

/// What a search looks for: 1 to 200 characters once trimmed, no control character. (That it
/// must hold a word, not only punctuation, the parameter's description says: a pattern that
/// says both grows past what generators handle.)
pub(crate) fn search_text() -> String {
    format!("^{SPACE}*{EDGE}(?:{INNER}{{0,198}}{EDGE})?{SPACE}*$")
}

/// An optional text (genre, a filter): blank, meaning none, or as [`required_text`].
pub(crate) fn optional_text() -> String {
    format!("^{SPACE}*(?:{EDGE}(?:{INNER}{{0,248}}{EDGE})?{SPACE}*)?$")
}

/// An optional ISBN as the domain reads it (`books_domain::Isbn::parse`): blank, meaning none, or
/// 10 digits (the last may be `X` or `x`) or 13 digits beginning 978 or 979, with hyphens and
/// spaces anywhere between, and white space around. The check digit is the one rule no pattern
/// states; the document says it in words.
pub(crate) fn isbn() -> String {
    let gap = "[- ]*";
    let digit = format!("[0-9]{gap}");
    format!(
        "^{SPACE}*(?:{gap}(?:(?:{digit}){{9}}[0-9Xx]|9{gap}7{gap}[89]{gap}(?:{digit}){{9}}[0-9]){gap})?{SPACE}*$"
    )
}

/// A year as XML or CSV text (`books_domain::PublishedYear` read from text): blank, meaning none,
/// or an integer from -3000 to 2100 (a sign, leading zeros and white space around allowed). In
/// XML every value is text, so the year is a string there, and its range a pattern.
pub(crate) fn year_text() -> String {
    format!(
        "^{SPACE}*(?:[+-]?0*(?:[0-9]{{1,3}}|1[0-9]{{3}}|20[0-9]{{2}}|2100)|-0*(?:2[0-9]{{3}}|3000))?{SPACE}*$"
    )
}

/// `If-Match` and `If-None-Match` (RFC 9110, 13.1.1 and 13.1.2): `*`, or entity tags separated
/// by commas, each optionally weak.
pub(crate) const CONDITION: &str =
    r#"^(\*|(W/)?"[\x21\x23-\x7E]*"([ \t]*,[ \t]*(W/)?"[\x21\x23-\x7E]*")*)$"#;

#[cfg(test)]
mod tests {
    use super::*;
    use books_domain::{Genre, Title};
    use regex::Regex;

    /// Strings near every edge of the rule: padding, control and space characters at each
    /// position, lengths around 250.
    fn samples() -> Vec<String> {
        let pieces = [
            "", " ", "\t", "\n", "\u{85}", "\u{a0}", "\u{3000}", "\u{feff}", "\u{0}", "\u{7}",
            "\u{7f}", "\u{9f}", "a", "é", "✓", "🦀", "x y", "\u{200b}",
        ];
        let mut samples = Vec::new();
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    samples.push(format!("{a}{b}{c}"));
                    samples.push(format!("{a}Dune{b}{c}"));
                }
            }
        }
        for n in [248, 249, 250, 251, 300] {
            samples.push("a".repeat(n));
            samples.push(format!("  {}  ", "é".repeat(n)));
            samples.push(format!("a{}a", " ".repeat(n)));
            samples.push(format!(" {}\u{1}", "b".repeat(n)));
        }
        samples
    }

    #[test]
    fn the_required_text_pattern_accepts_exactly_what_a_title_accepts() {
        let pattern = Regex::new(&required_text()).unwrap();
        for sample in samples() {
            assert_eq!(
                pattern.is_match(&sample),
                Title::new(&sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn the_year_pattern_accepts_exactly_the_texts_a_year_is_read_from() {
        use books_domain::{BookField, BookInput, NewBook, Raw};
        let pattern = Regex::new(&year_text()).unwrap();
        let mut samples: Vec<String> = ["", " ", "\u{3000}", "+", "-", "+-1", "1e3", "12a", "１２"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for year in (-3100..=2200).chain([-99_999, 99_999, i64::MAX]) {
            for text in [
                year.to_string(),
                format!("+{year}"),
                format!("00{year}"),
                format!("-00{}", year.abs()),
                format!(" \t{year}\u{a0}"),
                format!("{year} 1"),
            ] {
                samples.push(text);
            }
        }
        for sample in samples {
            let input = BookInput::default()
                .with(BookField::Title, "Dune")
                .with(BookField::Author, "Frank Herbert")
                .with(BookField::PublishedYear, Raw::Cell(sample.clone()));
            assert_eq!(
                pattern.is_match(&sample),
                NewBook::parse(&input).is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn the_isbn_pattern_accepts_what_the_domain_reads_but_for_the_check_digit() {
        use books_domain::{Isbn, IsbnError};
        let pattern = Regex::new(&isbn()).unwrap();
        let mut samples = vec![
            String::new(),
            "  ".to_owned(),
            "---".to_owned(),
            "0-441-01359-7".to_owned(),
            "0-441-01359-8".to_owned(),
            "080442957x".to_owned(),
            "X-441-01359-7".to_owned(),
            "978044101359X".to_owned(),
            " 978 0 441 01359 3 ".to_owned(),
            "979-10-90636-07-1".to_owned(),
            "4006381333931".to_owned(),
            "97804410135931".to_owned(),
            "044101359".to_owned(),
            "0.441.01359.7".to_owned(),
            "-9780441013593-".to_owned(),
            "\u{a0}9780441013593".to_owned(),
        ];
        for piece in ["", "-", " ", "x", "X", "7", "\u{3000}"] {
            samples.push(format!("{piece}0441013597{piece}"));
            samples.push(format!("978{piece}0441013593"));
        }
        for sample in samples {
            let domain = sample.trim().is_empty()
                || matches!(
                    Isbn::parse(&sample),
                    Ok(_) | Err(IsbnError::WrongCheckDigit)
                );
            assert_eq!(pattern.is_match(&sample), domain, "{sample:?}");
        }
    }

    #[test]
    fn the_search_pattern_accepts_what_a_search_accepts_but_for_the_word_rule() {
        use books_domain::{SearchText, SearchTextError};
        let pattern = Regex::new(&search_text()).unwrap();
        let mut samples = samples();
        for n in [198, 199, 200, 201] {
            samples.push(format!("  {}  ", "a".repeat(n)));
        }
        for sample in samples {
            let domain = !matches!(
                SearchText::new(&sample),
                Err(SearchTextError::TooLong | SearchTextError::ControlCharacter)
            ) && !sample.trim().is_empty();
            assert_eq!(pattern.is_match(&sample), domain, "{sample:?}");
        }
    }

    #[test]
    fn the_optional_text_pattern_accepts_exactly_what_a_genre_accepts() {
        let pattern = Regex::new(&optional_text()).unwrap();
        for sample in samples() {
            assert_eq!(
                pattern.is_match(&sample),
                Genre::optional(Some(&sample)).is_ok(),
                "{sample:?}"
            );
        }
    }
}
