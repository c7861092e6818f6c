//! Request extractors whose rejections are [`ApiError`]s: JSON bodies (400 malformed, 415 not
//! JSON, 413 too large, 422 wrong types, unknown fields or bad values with `details.fields`)
//! and query strings (400 for unknown parameters or bad values).
//!
//! A body's syntax is checked whole before its shape (it is parsed to a [`Value`] first), so a
//! syntax error anywhere is a 400 even when an earlier field is already wrong. Text holding a
//! NUL character, which PostgreSQL cannot store, is refused here: 422 naming the field in a
//! body, 400 in a query string.
//!
//! Query strings accept both the plain (`status=open,pending`) and the bracketed
//! (`filter[status]=open`) spellings; both reach the handler as the same field.
//!
//! These extractors must never call the database, and never let a client's mistake through
//! to become a 500 later.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiError, ErrorCode, error::body_error};

/// A JSON body, parsed with field-located errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Expected `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_error(&rejection.body_text()))?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body that may be absent: an empty body, or JSON `null` (as the OpenAPI document's
/// `oneOf [T, null]` allows), is `None` (actions like `rotate` whose body is optional).
#[derive(Debug, Clone, Default)]
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_error(&rejection.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        let value: Value = parse_json(&bytes)?;
        if value.is_null() {
            return Ok(Self(None));
        }
        parse_value(value).map(|value| Self(Some(value)))
    }
}

/// Parses JSON bytes into `T`: syntax errors anywhere are 400; then shape and value errors,
/// and text with a NUL character, are 422 naming the field (`priority`, `requester.email`,
/// `events[3].type`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::bad_request(format!(
            "Malformed JSON: {}",
            clean_serde_message(&error.to_string())
        ))
    })?;
    parse_value(value)
}

/// Reads an already parsed document into `T` (JSON, or a form turned into a JSON object):
/// text with a NUL character, and every shape or value error, are 422 naming the field.
pub fn parse_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if let Some(field) = nul_in(&value, "") {
        return Err(ApiError::invalid_field(
            field_or_body(field),
            "must not contain NUL characters",
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let field = field_or_body(error.path().to_string());
        ApiError::invalid_field(field, clean_serde_message(&error.into_inner().to_string()))
    })
}

/// The document's root is named `body`.
fn field_or_body(path: String) -> String {
    if path.is_empty() || path == "." {
        "body".to_owned()
    } else {
        path
    }
}

/// The path of the first string or object key holding a NUL character, if any.
fn nul_in(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| nul_in(item, &format!("{path}[{index}]"))),
        Value::Object(fields) => fields.iter().find_map(|(name, item)| {
            let here = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if name.contains('\0') {
                Some(here)
            } else {
                nul_in(item, &here)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// serde's messages end with ` at line 1 column 42`: useless to an API client.
fn clean_serde_message(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string, with `filter[x]` folded into `x` and unknown names rejected (400) when `T`
/// denies unknown fields.
#[derive(Debug, Clone, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Parses a query string into `T` (see [`Query`]).
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name.contains('\0') || value.contains('\0') {
            return Err(ApiError::bad_request(
                "Query parameters must not contain NUL characters",
            ));
        }
        let name = name
            .strip_prefix("filter[")
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(&name)
            .trim_end_matches("[]")
            .to_owned();
        // Repeated parameters (`tags[]=a&tags[]=b`) join into one comma list.
        fields
            .entry(name)
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let pairs = fields.into_iter().collect::<Vec<_>>();
    let encoded = serde_urlencoded::to_string(&pairs)
        .map_err(|error| ApiError::bad_request(format!("Invalid query string: {error}")))?;
    serde_urlencoded::from_str(&encoded)
        .map_err(|error| ApiError::bad_request(format!("Invalid query string: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Filters {
        status: Option<String>,
        tags: Option<String>,
        limit: Option<u32>,
    }

    #[test]
    fn bracketed_and_plain_spellings_are_the_same_field() {
        let plain: Filters = parse_query("status=open,pending&limit=5").expect("plain");
        let bracketed: Filters =
            parse_query("filter%5Bstatus%5D=open,pending&limit=5").expect("bracketed");
        assert_eq!(plain, bracketed);
        let repeated: Filters = parse_query("tags[]=a&tags[]=b").expect("repeated");
        assert_eq!(repeated.tags.as_deref(), Some("a,b"));
    }

    #[test]
    fn unknown_parameters_and_bad_values_are_400() {
        let unknown = parse_query::<Filters>("colour=red").expect_err("unknown");
        assert_eq!(unknown.code(), ErrorCode::BadRequest);
        let bad = parse_query::<Filters>("limit=-3").expect_err("negative");
        assert_eq!(bad.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            priority: Option<u8>,
        }
        let syntax = parse_json::<Body>(b"{\"priority\": ").expect_err("syntax");
        assert_eq!(syntax.code(), ErrorCode::BadRequest);
        let typed = parse_json::<Body>(br#"{"priority": "high"}"#).expect_err("type");
        assert_eq!(typed.code(), ErrorCode::ValidationFailed);
        let unknown = parse_json::<Body>(br#"{"priorty": 1}"#).expect_err("unknown");
        assert_eq!(unknown.code(), ErrorCode::ValidationFailed);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Nested {
        name: Option<String>,
        items: Option<Vec<Item>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        kind: String,
    }

    /// The error's debug form, which shows `details.fields`.
    fn field_of(error: &ApiError) -> String {
        format!("{error:?}")
    }

    #[test]
    fn syntax_anywhere_is_400_even_after_a_shape_error() {
        // The first field is already the wrong type; the document is still cut short.
        let truncated = parse_json::<Nested>(br#"{"name": 5, "items": [ "#).expect_err("cut");
        assert_eq!(truncated.code(), ErrorCode::BadRequest);
        let trailing = parse_json::<Nested>(br#"{"name": "a"} x"#).expect_err("trailing");
        assert_eq!(trailing.code(), ErrorCode::BadRequest);
        let empty = parse_json::<Nested>(b"").expect_err("empty");
        assert_eq!(empty.code(), ErrorCode::BadRequest);
    }

    #[test]
    fn shape_errors_are_422_naming_the_nested_field() {
        let wrong =
            parse_json::<Nested>(br#"{"items": [{"kind": "a"}, {"kind": 3}]}"#).expect_err("type");
        assert_eq!(wrong.code(), ErrorCode::ValidationFailed);
        assert!(field_of(&wrong).contains("items[1].kind"), "{wrong:?}");
        let root = parse_json::<Nested>(br#""text""#).expect_err("a string");
        assert_eq!(root.code(), ErrorCode::ValidationFailed);
        assert!(field_of(&root).contains("\"body\""), "{root:?}");
    }

    #[test]
    fn nul_characters_are_refused_in_bodies_and_queries() {
        let value = parse_json::<Nested>(br#"{"name": "a\u0000b"}"#).expect_err("value");
        assert_eq!(value.code(), ErrorCode::ValidationFailed);
        assert!(field_of(&value).contains("\"name\""), "{value:?}");
        let nested =
            parse_json::<Nested>(br#"{"items": [{"kind": "\u0000"}]}"#).expect_err("nested");
        assert!(field_of(&nested).contains("items[0].kind"), "{nested:?}");
        let key = parse_json::<Value>(br#"{"k\u0000": 1}"#).expect_err("key");
        assert_eq!(key.code(), ErrorCode::ValidationFailed);
        assert!(parse_json::<Nested>(br#"{"name": "fine \u00e9"}"#).is_ok());

        let query = parse_query::<Filters>("status=a%00b").expect_err("query value");
        assert_eq!(query.code(), ErrorCode::BadRequest);
        let name = parse_query::<Filters>("st%00atus=a").expect_err("query name");
        assert_eq!(name.code(), ErrorCode::BadRequest);
    }
}
