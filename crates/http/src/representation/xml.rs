//! Books as XML, beside JSON: `<book>` with one child element per field, named as in JSON (a
//! null field left out), `<books next_cursor="…">` around a page, `<books>` around an export or a
//! batch.
//!
//! Written with serde (quick-xml's serializer) from the same [`BookResponse`] JSON is written
//! from, so a field added there appears in both. Read in two passes: a scan of the document's
//! events refuses what must never reach a parser's later stages (a DOCTYPE, and with it any
//! entity declaration, which is how XXE and "billion laughs" documents start; an undeclared
//! entity; nesting deeper than [`MAX_DEPTH`]); then serde reads the elements into the same
//! [`BookInput`] a CSV row becomes, each element's text read as its field's kind, so the domain
//! checks XML exactly as it checks JSON and CSV.

use std::fmt;

use books_domain::{Book, BookField, BookInput, NewBook, Raw};
use quick_xml::events::Event;
use serde::Serialize;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::representation::problem::ApiError;
use crate::representation::reading::{Members, check_batch_size, every_book, violation};
use crate::representation::schemas::{BookResponse, FieldViolation};

/// The media type.
pub(crate) const XML: &str = "application/xml";

/// How deeply elements may nest; a book needs two levels, a batch three.
pub(crate) const MAX_DEPTH: usize = 64;

/// One book, as `<book>…</book>`.
pub(crate) fn book(book: &Book) -> String {
    written(quick_xml::se::to_string_with_root("book", &fields_of(book)))
}

/// A page of books, as `<books next_cursor="…">` (the attribute only when there is a next page)
/// around their `<book>` elements; also a batch's answer, with no cursor.
pub(crate) fn books(books: &[Book], next_cursor: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Books<'a> {
        #[serde(rename = "@next_cursor", skip_serializing_if = "Option::is_none")]
        next_cursor: Option<&'a str>,
        book: Vec<Map<String, Value>>,
    }
    let page = Books {
        next_cursor,
        book: books.iter().map(fields_of).collect(),
    };
    written(quick_xml::se::to_string_with_root("books", &page))
}

/// The opening and closing tags around an export's `<book>` elements.
pub(crate) const EXPORT_START: &str = "<books>";
pub(crate) const EXPORT_END: &str = "</books>";

/// Appends each book's `<book>` element to `out`.
pub(crate) fn append_books(out: &mut Vec<u8>, books: &[Book]) {
    for each in books {
        out.extend_from_slice(book(each).as_bytes());
    }
}

/// A book's members as JSON has them, the null ones left out.
fn fields_of(book: &Book) -> Map<String, Value> {
    match serde_json::to_value(BookResponse::from(book)) {
        Ok(Value::Object(mut members)) => {
            members.retain(|_, value| !value.is_null());
            members
        }
        // A struct of strings, numbers and timestamps always becomes an object.
        _ => unreachable!("a book serializes as an object"),
    }
}

fn written(result: Result<String, quick_xml::SeError>) -> String {
    // Element names are the book's field names and every value is text or a number: the
    // serializer has nothing it could refuse.
    result.unwrap_or_else(|error| unreachable!("a book is always valid XML: {error}"))
}

/// Reads a new book (or a full replacement) from `<book>…</book>`.
pub(crate) fn read_new_book(body: &[u8]) -> Result<NewBook, ApiError> {
    let text = scan(body, "book")?;
    let elements: Elements = quick_xml::de::from_str(text).map_err(|error| not_a_book(&error))?;
    elements.finish("", NewBook::parse)
}

/// Reads a batch from `<books><book>…</book>…</books>`, at most `max` books, every invalid field
/// of every book named (`books[3].title`).
pub(crate) fn read_batch(body: &[u8], max: usize) -> Result<Vec<NewBook>, ApiError> {
    let text = scan(body, "books")?;
    let batch: Batch = quick_xml::de::from_str(text).map_err(|error| not_a_book(&error))?;
    let errors: Vec<FieldViolation> = batch
        .unknown
        .iter()
        .map(|name| {
            violation(
                "",
                name,
                "is not a known element: a batch holds <book> elements",
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable(errors));
    }
    check_batch_size(batch.books.len(), max)?;
    every_book(
        batch
            .books
            .into_iter()
            .enumerate()
            .map(|(index, elements)| elements.finish(&format!("books[{index}]."), NewBook::parse)),
    )
}

/// A document serde could not read as the elements of a book (a field holding elements of its
/// own, say): well-formed, so the client's to correct, as with JSON of the wrong shape.
fn not_a_book(error: &quick_xml::DeError) -> ApiError {
    ApiError::InvalidBody(format!(
        "the XML document does not have the shape of a book: {}",
        cut(&error.to_string())
    ))
}

fn cut(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Checks the document before serde reads it: UTF-8, well formed, one root element named `root`,
/// no DOCTYPE, no entity but the five XML predefines and character references, at most
/// [`MAX_DEPTH`] levels. Answers the document as text.
fn scan<'a>(body: &'a [u8], root: &str) -> Result<&'a str, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the XML document is not valid UTF-8".to_owned()))?;
    let mut reader = quick_xml::Reader::from_str(text);
    let malformed = |reader: &quick_xml::Reader<&[u8]>, error: &dyn fmt::Display| {
        ApiError::BadRequest(format!(
            "the request body is not well-formed XML (byte {}): {}",
            reader.error_position(),
            cut(&error.to_string())
        ))
    };
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|error| malformed(&reader, &error))?;
        let opens = match &event {
            Event::Start(element) | Event::Empty(element) => Some(element.name()),
            _ => None,
        };
        if let Some(name) = opens {
            if depth == 0 {
                roots += 1;
                if roots > 1 {
                    return Err(ApiError::BadRequest(
                        "the XML document has more than one root element".to_owned(),
                    ));
                }
                if name.as_ref() != root {
                    return Err(ApiError::InvalidBody(format!(
                        "the XML document's root element must be <{root}>"
                    )));
                }
            }
            if depth + 1 > MAX_DEPTH {
                return Err(ApiError::BadRequest(format!(
                    "the XML document nests elements more than {MAX_DEPTH} levels deep"
                )));
            }
        }
        match event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::DocType(_) => {
                return Err(ApiError::BadRequest(
                    "the XML document has a DOCTYPE: document types and entity declarations \
                     are not accepted"
                        .to_owned(),
                ));
            }
            Event::GeneralRef(reference) => {
                let predefined =
                    matches!(reference.as_ref(), "lt" | "gt" | "amp" | "apos" | "quot");
                if !predefined && !reference.is_char_ref() {
                    return Err(ApiError::BadRequest(format!(
                        "the XML document refers to an entity that is not defined: &{};",
                        cut(&reference)
                    )));
                }
                reference
                    .resolve_char_ref()
                    .map_err(|error| malformed(&reader, &error))?;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if roots == 0 {
        return Err(ApiError::BadRequest(
            "the XML document has no root element".to_owned(),
        ));
    }
    Ok(text)
}

/// The child elements of a `<book>`: the book's fields, read as its CSV cells are (text, each
/// read as its field's kind; an empty element is null), and the names of the others.
struct Elements {
    input: BookInput,
    given: Vec<BookField>,
    repeated: Vec<String>,
    unknown: Vec<String>,
}

impl Elements {
    fn finish<T>(
        self,
        prefix: &str,
        parse: impl FnOnce(&BookInput) -> Result<T, books_domain::InvalidBook>,
    ) -> Result<T, ApiError> {
        if !self.repeated.is_empty() {
            return Err(ApiError::Unprocessable(
                self.repeated
                    .iter()
                    .map(|name| violation(prefix, name, "is given more than once"))
                    .collect(),
            ));
        }
        Members::given(self.input, self.unknown).finish(prefix, parse)
    }
}

impl<'de> Deserialize<'de> for Elements {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementsVisitor;
        impl<'de> Visitor<'de> for ElementsVisitor {
            type Value = Elements;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a <book> element")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Elements, A::Error> {
                let mut elements = Elements {
                    input: BookInput::default(),
                    given: Vec::new(),
                    repeated: Vec::new(),
                    unknown: Vec::new(),
                };
                while let Some(name) = map.next_key::<String>()? {
                    match BookField::named(&name) {
                        Some(field) if elements.given.contains(&field) => {
                            map.next_value::<IgnoredAny>()?;
                            if !elements.repeated.contains(&name) {
                                elements.repeated.push(name);
                            }
                        }
                        Some(field) => {
                            let Text(text) = map.next_value()?;
                            *elements.input.field_mut(field) = text;
                            elements.given.push(field);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            elements.unknown.push(name);
                        }
                    }
                }
                Ok(elements)
            }
        }
        deserializer.deserialize_map(ElementsVisitor)
    }
}

/// A field's element: its text, read as the field's kind (an empty element is null); an element
/// that holds elements is a value of the wrong type.
struct Text(Raw);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }

            fn visit_str<E>(self, text: &str) -> Result<Text, E> {
                Ok(Text(Raw::Cell(text.to_owned())))
            }

            fn visit_string<E>(self, text: String) -> Result<Text, E> {
                Ok(Text(Raw::Cell(text)))
            }

            fn visit_unit<E>(self) -> Result<Text, E> {
                Ok(Text(Raw::Cell(String::new())))
            }

            // quick-xml gives an element as a map: its text under `$text`, each child element
            // under its name.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                let mut text = String::new();
                let mut elements = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "$text" {
                        text.push_str(&map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        elements = true;
                    }
                }
                Ok(Text(if elements {
                    Raw::Other
                } else {
                    Raw::Cell(text)
                }))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// The children of a batch's `<books>`.
struct Batch {
    books: Vec<Elements>,
    unknown: Vec<String>,
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = Batch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a <books> element")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Batch, A::Error> {
                let mut batch = Batch {
                    books: Vec::new(),
                    unknown: Vec::new(),
                };
                while let Some(name) = map.next_key::<String>()? {
                    if name == "book" {
                        batch.books.push(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                        if !batch.unknown.contains(&name) {
                            batch.unknown.push(name);
                        }
                    }
                }
                Ok(batch)
            }
        }
        deserializer.deserialize_map(BatchVisitor)
    }
}
