//! Request bodies that may be JSON or, as in the seeds' curl examples (`-d field=value`),
//! `application/x-www-form-urlencoded`. A form becomes a JSON object of strings (repeated or
//! `name[]` fields become arrays) and is then read with the same rules as JSON. Anything else
//! is 415; over the cap is 413.
//!
//! The whole body's syntax is checked before its shape, so a truncated document is always a
//! 400 even when an earlier field is already wrong; after that every error is a 422 naming the
//! field (unknown fields, wrong types, bad values).
//!
//! Must never accept a body another way than these two, nor read past the body limit.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::header,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::http::{
    ApiError, ErrorCode,
    error::body_error,
    extract::{parse_json, parse_value},
};

/// A JSON or form body.
#[derive(Debug, Clone)]
pub(super) struct JsonOrForm<T>(pub T);

enum Encoding {
    Json,
    Form,
}

fn encoding(request: &Request) -> Option<Encoding> {
    let mime = request
        .headers()
        .get(header::CONTENT_TYPE)?
        .to_str()
        .ok()?
        .split(';')
        .next()?
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Some(Encoding::Json)
    } else if mime == "application/x-www-form-urlencoded" {
        Some(Encoding::Form)
    } else {
        None
    }
}

impl<T, S> FromRequest<S> for JsonOrForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Some(encoding) = encoding(&request) else {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Expected `Content-Type: application/json` or `application/x-www-form-urlencoded`",
            ));
        };
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_error(&rejection.body_text()))?;
        match encoding {
            Encoding::Json => parse_json(&bytes).map(JsonOrForm),
            Encoding::Form => parse_value(form_to_json(&bytes)).map(JsonOrForm),
        }
    }
}

/// `a=1&b[]=x&b[]=y` → `{"a": "1", "b": ["x", "y"]}`.
pub(super) fn form_to_json(bytes: &[u8]) -> Value {
    let mut object = Map::new();
    for (name, value) in form_urlencoded::parse(bytes) {
        let (name, is_list) = match name.strip_suffix("[]") {
            Some(stripped) => (stripped.to_owned(), true),
            None => (name.into_owned(), false),
        };
        let value = Value::String(value.into_owned());
        match object.get_mut(&name) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None if is_list => {
                object.insert(name, Value::Array(vec![value]));
            }
            None => {
                object.insert(name, value);
            }
        }
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: Option<String>,
    }

    #[test]
    fn syntax_is_checked_before_shape() {
        let truncated = parse_json::<Body>(br#"{"unknown": 1, "#).expect_err("truncated");
        assert_eq!(truncated.code(), ErrorCode::BadRequest);
        let unknown = parse_json::<Body>(br#"{"unknown": 1}"#).expect_err("unknown");
        assert_eq!(unknown.code(), ErrorCode::ValidationFailed);
        let shape = parse_json::<Body>(b"[1, 2]").expect_err("array");
        assert_eq!(shape.code(), ErrorCode::ValidationFailed);
        let nul = parse_json::<Body>(br#"{"name": "a\u0000b"}"#).expect_err("nul");
        assert_eq!(nul.code(), ErrorCode::ValidationFailed);
    }

    #[test]
    fn forms_become_objects_of_strings() {
        let value = form_to_json(b"status=2&tags[]=a&tags[]=b&note=a+b");
        assert_eq!(
            value,
            serde_json::json!({"status": "2", "tags": ["a", "b"], "note": "a b"})
        );
    }
}
