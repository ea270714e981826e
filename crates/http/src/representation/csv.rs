//! Books as CSV (RFC 4180): written for exports and listings, read for batch creates.
//!
//! Written values that a spreadsheet would run as a formula (those starting with `=`, `+`, `-`,
//! `@`, a tab or a carriage return) are neutralised as OWASP recommends: a single quote is put in
//! front, so that the cell shows the text instead of evaluating it. Only the text columns can
//! start so; ids, ISBNs, versions and timestamps are the service's own, and a year before the
//! common era (`-300`) is the number a spreadsheet should read.

use std::sync::LazyLock;

use books_domain::{Book, BookField, BookInput, FieldKind, Raw};
use chrono::SecondsFormat;

use crate::representation::problem::ApiError;
use crate::representation::schemas::FieldViolation;

/// The media type.
pub(crate) const CSV: &str = "text/csv";

/// How many of [`BookField::ALL`] the tutorial's book had. Its fields come before the service's
/// own columns (`version`, `created_at`, `updated_at`) and fields added since come after them, so
/// that a reader who counted columns keeps finding each where it was.
const FIRST_FIELDS: usize = 3;

/// A column of written CSV.
#[derive(Clone, Copy)]
enum Column {
    Id,
    Field(BookField),
    Version,
    CreatedAt,
    UpdatedAt,
}

/// The columns of written CSV, in order.
static COLUMNS: LazyLock<Vec<Column>> = LazyLock::new(|| {
    let (first, later) = BookField::ALL.split_at(FIRST_FIELDS.min(BookField::ALL.len()));
    std::iter::once(Column::Id)
        .chain(first.iter().copied().map(Column::Field))
        .chain([Column::Version, Column::CreatedAt, Column::UpdatedAt])
        .chain(later.iter().copied().map(Column::Field))
        .collect()
});

/// The header row of written CSV.
pub(crate) static HEADER: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = COLUMNS
        .iter()
        .map(|column| match column {
            Column::Id => "id",
            Column::Field(field) => field.name(),
            Column::Version => "version",
            Column::CreatedAt => "created_at",
            Column::UpdatedAt => "updated_at",
        })
        .collect();
    names.join(",")
});

/// Appends `books` as CSV rows to `out`, after the header row when `with_header`.
pub(crate) fn write_books(out: &mut Vec<u8>, books: &[Book], with_header: bool) {
    if with_header {
        out.extend_from_slice(HEADER.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    for book in books {
        let record = COLUMNS.iter().map(|column| match column {
            Column::Id => book.id().to_string(),
            Column::Field(field) => book
                .fields()
                .value(*field)
                .to_text()
                .map(|text| match field.kind() {
                    FieldKind::Text => neutralised(&text),
                    // Digits, or a year that a spreadsheet reads as the number it is (-300).
                    FieldKind::Isbn | FieldKind::Year => text,
                })
                .unwrap_or_default(),
            Column::Version => book.version().to_string(),
            Column::CreatedAt => time(book.created_at()),
            Column::UpdatedAt => time(book.updated_at()),
        });
        // Writing to memory cannot fail.
        let _ = writer.write_record(record);
    }
    let _ = writer.flush();
}

/// The value as a spreadsheet will show it, never run it.
pub(crate) fn neutralised(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    }
}

/// The fields a batch must have, and those it may have, as the header's messages name them:
/// "title, author" and "genre".
fn field_names(required: bool) -> String {
    let names: Vec<&str> = BookField::ALL
        .iter()
        .filter(|field| field.required() == required)
        .map(|field| field.name())
        .collect();
    names.join(", ")
}

/// Reads a batch as CSV: a header row naming the book's fields (see [`BookField::ALL`]: the
/// required ones, and any of the others) in any order (case and surrounding white space
/// ignored), then one book per row. A UTF-8 byte order mark is
/// skipped; reading stops at `max + 1` rows, which is enough to say the batch is too long.
///
/// Malformed CSV (invalid UTF-8, a quote that is not closed or stands inside a field) is a 400
/// naming the row; a header or a row of the wrong shape is a 422 naming it.
pub(crate) fn read_books(body: &[u8], max: usize) -> Result<Vec<BookInput>, ApiError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut records = reader.byte_records();
    let header_problem = |message: String| {
        ApiError::Unprocessable(vec![FieldViolation {
            field: "header".to_owned(),
            message,
        }])
    };
    let Some(header) = records.next() else {
        return Err(header_problem(format!(
            "is missing: the first row must name the columns ({} and optionally {})",
            field_names(true),
            field_names(false)
        )));
    };
    let header = header.map_err(|error| malformed(&error, None))?;
    let columns = columns(&header, body).map_err(header_problem)?;
    let mut books = Vec::new();
    for (index, record) in records.enumerate() {
        // One row past the most is enough to say the batch is too long.
        if index > max {
            break;
        }
        let record = record.map_err(|error| malformed(&error, Some(index)))?;
        check_quotes(&record, body, index)?;
        if record.len() != columns.len() {
            return Err(ApiError::Unprocessable(vec![FieldViolation {
                field: format!("books[{index}]"),
                message: format!(
                    "has {} fields where the header has {} (line {})",
                    record.len(),
                    columns.len(),
                    line(&record)
                ),
            }]));
        }
        let mut input = BookInput::default();
        for (column, raw) in columns.iter().zip(record.iter()) {
            let text = std::str::from_utf8(raw)
                .map_err(|_| {
                    ApiError::BadRequest(format!(
                        "books[{index}] (line {}) is not valid UTF-8",
                        line(&record)
                    ))
                })?
                .to_owned();
            *input.field_mut(*column) = Raw::Cell(text);
        }
        books.push(input);
    }
    Ok(books)
}

/// The header's columns, each a field of the book, the required ones among them, none twice.
fn columns(header: &csv::ByteRecord, body: &[u8]) -> Result<Vec<BookField>, String> {
    if check_quotes(header, body, 0).is_err() {
        return Err("has a quote that is not closed".to_owned());
    }
    let mut found = Vec::new();
    for raw in header {
        let name = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
        let short: String = name.chars().take(40).collect();
        let column = BookField::named(&name).ok_or_else(|| {
            let all: Vec<&str> = BookField::ALL.iter().map(|f| f.name()).collect();
            format!("column {short:?} is not one of {}", all.join(", "))
        })?;
        if found.contains(&column) {
            return Err(format!(
                "column {:?} is given more than once",
                column.name()
            ));
        }
        found.push(column);
    }
    for required in BookField::ALL.into_iter().filter(|field| field.required()) {
        if !found.contains(&required) {
            return Err(format!("needs a {required} column"));
        }
    }
    Ok(found)
}

/// A quote that is never closed runs to the end of the input, and one inside an unquoted field is
/// kept as text: both are malformed RFC 4180, which the reader tolerates, so each record's own
/// bytes are checked to hold quotes in pairs.
fn check_quotes(record: &csv::ByteRecord, body: &[u8], index: usize) -> Result<(), ApiError> {
    let Some(position) = record.position() else {
        return Ok(());
    };
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    let raw = body.get(start..).unwrap_or_default();
    // This record's bytes: up to the end of its last field (the reader does not say where that
    // is, so count quotes up to the first line break outside quotes).
    let mut quotes = 0usize;
    for byte in raw {
        match byte {
            b'"' => quotes += 1,
            b'\n' | b'\r' if quotes.is_multiple_of(2) => break,
            _ => {}
        }
    }
    let unbalanced = !quotes.is_multiple_of(2);
    let misplaced = raw_fields(raw)
        .iter()
        .any(|field| field.contains(&b'"') && !field.starts_with(b"\""));
    if unbalanced || misplaced {
        return Err(ApiError::BadRequest(format!(
            "books[{index}] (line {}) has a quote that is not closed or stands inside a field",
            position.line()
        )));
    }
    Ok(())
}

/// The raw fields of one record's line (quotes kept), split at commas outside quotes.
fn raw_fields(raw: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, byte) in raw.iter().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                fields.push(&raw[start..i]);
                start = i + 1;
            }
            b'\n' | b'\r' if !quoted => {
                fields.push(&raw[start..i]);
                return fields;
            }
            _ => {}
        }
    }
    fields.push(&raw[start..]);
    fields
}

fn line(record: &csv::ByteRecord) -> u64 {
    record.position().map_or(0, csv::Position::line)
}

fn malformed(error: &csv::Error, index: Option<usize>) -> ApiError {
    let line = error.position().map_or(0, csv::Position::line);
    let row = index.map_or_else(|| "the header".to_owned(), |i| format!("books[{i}]"));
    ApiError::BadRequest(format!("{row} (line {line}) is not valid CSV"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_neutralised_and_plain_text_is_kept() {
        assert_eq!(neutralised("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        for risky in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(neutralised(risky).starts_with('\''));
        }
        assert_eq!(neutralised("Dune"), "Dune");
        assert_eq!(neutralised("A=B"), "A=B");
    }

    #[test]
    fn columns_come_in_any_order_after_a_byte_order_mark() {
        let books = read_books(
            "\u{feff}Genre, author ,title\r\nSF,Frank Herbert,\"Dune, the novel\"\r\n,Anon,\"Say \"\"hi\"\"\"\n"
                .as_bytes(),
            10,
        )
        .expect("valid CSV");
        let cell = |text: &str| Raw::Cell(text.to_owned());
        assert_eq!(books.len(), 2);
        assert_eq!(books[0].title, cell("Dune, the novel"));
        assert_eq!(books[0].genre, cell("SF"));
        assert_eq!(books[1].title, cell("Say \"hi\""));
    }

    #[test]
    fn reading_stops_one_row_past_the_most_so_that_a_long_batch_is_seen_as_too_long() {
        let body = format!("title,author\n{}", "T,A\n".repeat(5));
        assert_eq!(read_books(body.as_bytes(), 3).expect("valid CSV").len(), 4);
        assert_eq!(read_books(body.as_bytes(), 5).expect("valid CSV").len(), 5);
    }

    #[test]
    fn written_columns_keep_the_tutorials_fields_before_the_services_own() {
        assert_eq!(
            HEADER.as_str(),
            "id,title,author,genre,version,created_at,updated_at,isbn,published_year"
        );
    }

    #[test]
    fn malformed_rows_are_named() {
        let detail = |body: &str| match read_books(body.as_bytes(), 10) {
            Err(ApiError::BadRequest(detail)) => detail,
            Err(ApiError::Unprocessable(errors)) => {
                format!("{} {}", errors[0].field, errors[0].message)
            }
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(detail("title,author\nA,B\n\"C,D\n").starts_with("books[1]"));
        assert!(detail("title,author\nA,B\nC,D\"x\"\n").starts_with("books[1]"));
        assert!(detail("title,author\nA,B,C\n").starts_with("books[0] has 3 fields"));
        assert!(detail("title,pages\nA,B\n").starts_with("header column \"pages\""));
        assert!(detail("genre,author\nA,B\n").starts_with("header needs a title"));
        assert!(detail("").starts_with("header is missing"));
        let invalid = read_books(b"title,author\nA,\xff\n", 10);
        assert!(matches!(invalid, Err(ApiError::BadRequest(d)) if d.starts_with("books[0]")));
    }
}
