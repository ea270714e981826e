//! Query strings and form bodies (`application/x-www-form-urlencoded`), read strictly.
//!
//! The framework's decoder replaces invalid UTF-8 with U+FFFD and lets a repeated parameter
//! silently override the first, so a client's mistake would be stored or acted on as something
//! else. Here both are a 400 that names the parameter.

use percent_encoding::percent_decode;

use crate::representation::problem::ApiError;

/// The parameters of one query string or form body, each name at most once, in order.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Decodes `text` (`name=value&…`, `+` for a space, `%XX` escapes).
    ///
    /// # Errors
    ///
    /// 400 when a name or value is not UTF-8 once decoded, or a name is given twice.
    pub(crate) fn parse(text: &[u8], source: &str) -> Result<Self, ApiError> {
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in text.split(|b| *b == b'&').filter(|pair| !pair.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            let name = decode(name).ok_or_else(|| {
                ApiError::BadRequest(format!("a parameter name in the {source} is not UTF-8"))
            })?;
            let value = decode(value).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "the parameter {} in the {source} is not UTF-8",
                    quoted_name(&name)
                ))
            })?;
            if params.iter().any(|(known, _)| *known == name) {
                return Err(ApiError::BadRequest(format!(
                    "the parameter {} is given more than once in the {source}; give it once",
                    quoted_name(&name)
                )));
            }
            params.push((name, value));
        }
        Ok(Self(params))
    }

    /// The value of `name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    /// The names given, in order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }
}

fn decode(raw: &[u8]) -> Option<String> {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_decode(&spaced)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

/// A client's own parameter name, quoted and cut short for a message.
pub(crate) fn quoted_name(name: &str) -> String {
    format!("{:?}", name.chars().take(100).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_with_plus_as_space_and_percent_escapes() {
        let params = Params::parse(b"title=Le+Guin%21&genre=&flag", "query string").unwrap();
        assert_eq!(params.get("title"), Some("Le Guin!"));
        assert_eq!(params.get("genre"), Some(""));
        assert_eq!(params.get("flag"), Some(""));
        assert_eq!(
            params.names().collect::<Vec<_>>(),
            ["title", "genre", "flag"]
        );
    }

    #[test]
    fn invalid_utf8_is_refused_not_replaced() {
        assert!(Params::parse(b"title=%FF%FE", "query string").is_err());
        assert!(Params::parse(b"%C3=x", "form body").is_err());
    }

    #[test]
    fn a_repeated_parameter_is_refused() {
        let error = Params::parse(b"limit=1&limit=2", "query string").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"limit\" is given more than once")
        );
    }
}
