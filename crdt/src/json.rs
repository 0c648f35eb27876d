//! [`Json`]: a JSON value held as its canonical text, the payload of registers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A JSON value in canonical form (object keys sorted, no insignificant whitespace).
/// Two equal values always have equal text, so the text orders and hashes them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json(String);

impl Json {
    /// The canonical form of a parsed value.
    pub fn from_value(v: &serde_json::Value) -> Self {
        // serde_json's map is a BTreeMap (no `preserve_order`), so keys come out sorted.
        Json(v.to_string())
    }

    /// `text` as JSON if it parses, else `text` as a JSON string: the CLI's rule for
    /// `doc set DOC KEY VALUE`.
    pub fn parse_or_string(text: &str) -> Self {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => Json::from_value(&v),
            Err(_) => Json::from_value(&serde_json::Value::String(text.to_owned())),
        }
    }

    /// Accepts text only if it is already canonical JSON (used on untrusted input).
    pub fn from_canonical(text: String) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let canonical = v.to_string();
        (canonical == text).then_some(Json(text))
    }

    pub fn to_value(&self) -> serde_json::Value {
        // Canonical text always parses; fall back to a string rather than panic.
        serde_json::from_str(&self.0).unwrap_or_else(|_| serde_json::Value::String(self.0.clone()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Self {
        Json::parse_or_string(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_or_falls_back_to_a_string() {
        assert_eq!(Json::parse_or_string("42").as_str(), "42");
        assert_eq!(
            Json::parse_or_string("{ \"b\":1, \"a\":2 }").as_str(),
            r#"{"a":2,"b":1}"#
        );
        assert_eq!(Json::parse_or_string("hello").as_str(), r#""hello""#);
    }

    #[test]
    fn only_canonical_text_is_accepted_from_the_wire() {
        assert!(Json::from_canonical(r#"{"a":1}"#.into()).is_some());
        assert!(Json::from_canonical(r#"{ "a": 1 }"#.into()).is_none());
        assert!(Json::from_canonical("not json".into()).is_none());
    }
}
