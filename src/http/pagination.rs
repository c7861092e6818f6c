//! List conventions: `limit` (default 25, 1–100; `per_page` is the seed-003 spelling), opaque
//! keyset cursors, and the `{"data": [...], "meta": {...}}` envelope.
//!
//! A cursor is the sort key and id of the last row served, base64url-encoded JSON. Clients
//! must treat it as opaque; a garbage cursor is a 400. Keyset pagination (never OFFSET) keeps
//! pages stable while rows are inserted, including rows with equal timestamps (the id breaks
//! ties).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::ApiError;

/// The default page size.
pub const DEFAULT_LIMIT: i64 = 25;
/// The largest page size.
pub const MAX_LIMIT: i64 = 100;
/// `meta.total` is counted exactly up to this many rows, then reported as `null`.
pub const TOTAL_CAP: i64 = 10_000;

/// The page size from `limit` or `per_page`: 400 outside 1–100.
pub fn page_limit(limit: Option<i64>, per_page: Option<i64>) -> Result<i64, ApiError> {
    match limit.or(per_page) {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT} (got {n})"
        ))),
    }
}

/// Encodes the position after the last row served.
pub fn encode_cursor<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).expect("cursor positions serialise"))
}

/// Decodes a cursor made by [`encode_cursor`]; 400 for anything else.
pub fn decode_cursor<T: DeserializeOwned>(cursor: &str) -> Result<T, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::bad_request("Invalid cursor: pass back `meta.next_cursor` as given")
        })
}

/// `{"data": [...], "meta": {"limit", "next_cursor", "total"}}`.
pub fn list_envelope<T: Serialize>(
    data: &[T],
    limit: i64,
    next_cursor: Option<&str>,
    total: Option<i64>,
) -> Value {
    json!({
        "data": data,
        "meta": {
            "limit": limit,
            "next_cursor": next_cursor,
            "total": total.filter(|t| *t <= TOTAL_CAP),
        }
    })
}

/// `{"data": {...}}`.
pub fn one<T: Serialize>(data: &T) -> Value {
    json!({ "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(page_limit(None, None).ok(), Some(25));
        assert_eq!(page_limit(Some(100), None).ok(), Some(100));
        assert_eq!(page_limit(None, Some(10)).ok(), Some(10));
        assert!(page_limit(Some(0), None).is_err());
        assert!(page_limit(Some(101), None).is_err());
        assert!(page_limit(Some(-5), None).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let cursor = encode_cursor(&("2026-01-01T00:00:00Z", 42_i64));
        let back: (String, i64) = decode_cursor(&cursor).expect("round trip");
        assert_eq!(back, ("2026-01-01T00:00:00Z".to_owned(), 42));
        assert!(decode_cursor::<(String, i64)>("not a cursor!").is_err());
        assert!(decode_cursor::<(String, i64)>(&encode_cursor(&"x")).is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// A cursor gives back the position it was made from.
            #[test]
            fn a_cursor_round_trips(id in any::<i64>(), name in ".{0,40}") {
                let cursor = encode_cursor(&(id, name.clone()));
                prop_assert_eq!(decode_cursor::<(i64, String)>(&cursor).ok(), Some((id, name)));
            }

            /// Anything else a client sends as a cursor is a 400, never a panic or a 500.
            #[test]
            fn any_other_text_is_a_clear_400(text in ".{0,80}") {
                if let Err(error) = decode_cursor::<(i64, String)>(&text) {
                    prop_assert_eq!(error.code(), crate::http::ErrorCode::BadRequest);
                }
            }
        }
    }
}
