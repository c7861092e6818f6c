//! Request extractors whose rejections are [`ApiError`]s: JSON bodies (400 malformed, 415 not
//! JSON, 413 too large, 422 wrong types, unknown fields or bad values with `details.fields`)
//! and query strings (400 for unknown parameters or bad values).
//!
//! Query strings accept both the plain (`status=open,pending`) and the bracketed
//! (`filter[status]=open`) spellings; both reach the handler as the same field.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

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

/// A JSON body that may be absent: an empty body is `None` (actions like `rotate` whose body
/// is optional).
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
        parse_json(&bytes).map(|value| Self(Some(value)))
    }
}

/// Parses JSON bytes into `T`: syntax errors are 400, shape and value errors 422 naming the
/// field (`priority`, `requester.email`, `events[3].type`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            ApiError::bad_request(format!("Malformed JSON: {inner}"))
        } else {
            let field = if path == "." || path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            ApiError::invalid_field(field, clean_serde_message(&inner.to_string()))
        }
    })
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
}
