//! `Idempotency-Key` on `POST` (api.md): a middleware on `/v1`, after authentication, that
//! answers a repeat of a request with the first request's answer.
//!
//! - Keys are scoped per API key and kept 24 hours; expired ones are purged at most once a
//!   minute per instance, in the background, and are never replayed.
//! - The same key with the same request (method, path and query, body) gets the first answer:
//!   its status, body and the headers that matter (`Content-Type`, `Location`, `ETag`), plus
//!   `Idempotency-Replayed: true`. The same key with another request is a 409.
//! - 2xx, 3xx and 4xx answers are stored except 429; 5xx and 429 are not, so the client may
//!   simply try again. Stored bodies are bounded ([`MAX_STORED_BODY`]); a larger answer is
//!   passed through unstored.
//! - A repeat that arrives while the first is still running waits for its answer (a few
//!   seconds at most), then gets a 409: the request never runs twice at once. A claim whose
//!   instance died is taken over after its lease ([`LEASE_SECONDS`]).
//! - A claimed request runs to its end in its own task even when its client goes away or the
//!   request deadline answers 408 first, so the retry gets its answer instead of a 409.
//!
//! - Stored answer bodies are sealed with the operator key ring, like endpoint secrets: the
//!   answers of `POST /v1/api-keys` and `POST /v1/webhooks` carry a key or a secret, and the
//!   table must never hold one readable (security review H5).
//!
//! Requests without the header, and every method but `POST`, pass straight through: ingest is
//! hot and must pay nothing for this. This module must never hold a database connection while
//! the handler runs, and must never store or replay across API keys. It owns the
//! `idempotency_key` table; its SQL lives here.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use tracing::Instrument as _;

use super::{ApiError, AppState, ErrorCode, error::body_error};
use crate::{auth::Principal, secret_box::SecretBox};

/// The request header.
pub const KEY_HEADER: &str = "idempotency-key";
/// The header on a replayed answer.
pub const REPLAYED_HEADER: &str = "idempotency-replayed";
/// How long a key is kept.
pub const RETENTION_HOURS: i32 = 24;
/// How long an unfinished claim is honoured before a repeat may take it over.
pub const LEASE_SECONDS: i32 = 300;
/// The largest answer body stored for replay.
pub const MAX_STORED_BODY: usize = 1024 * 1024;
/// The largest request body read here: the largest cap of any route (ingest's). The route's
/// own, smaller cap still applies when its handler reads the body.
const MAX_REQUEST_BODY: usize = crate::ingest::MAX_BODY_BYTES;
/// How long a repeat waits for a first request that is still running.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(5);
/// The answer headers stored and replayed.
const STORED_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// The middleware (see the module docs).
pub async fn idempotent_post(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(KEY_HEADER) else {
        return next.run(request).await;
    };
    let key = match read_key(value) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let Some((workspace_id, api_key_id)) = request
        .extensions()
        .get::<Principal>()
        .map(|principal| (principal.workspace_id, principal.key_id))
    else {
        // Not authenticated: the handler's own extractor answers 401.
        return next.run(request).await;
    };
    let secret_box = &state.config.secret_box;
    let owner = (workspace_id, api_key_id);
    match run_once(&state.pool, secret_box, owner, &key, request, next).await {
        Ok(response) | Err(Failure::Answer(response)) => response,
        Err(Failure::Error(error)) => error.into_response(),
    }
}

/// Why a request was not run: an error, or an answer already made (a replay).
enum Failure {
    Error(ApiError),
    Answer(Response),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self::Error(error)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Error(error.into())
    }
}

/// 1-255 printable ASCII characters.
fn read_key(value: &HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1-255 printable ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// SHA-256 of what makes two requests the same request.
fn request_hash(method: &Method, path_and_query: &str, body: &[u8]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(path_and_query.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hasher.finalize().to_vec()
}

/// Whether an answer with `status` is kept for replay.
fn is_stored(status: StatusCode) -> bool {
    (200..500).contains(&status.as_u16()) && status != StatusCode::TOO_MANY_REQUESTS
}

/// `owner` is the key's workspace and the key.
async fn run_once(
    pool: &PgPool,
    secret_box: &SecretBox,
    (workspace_id, api_key_id): (i64, i64),
    key: &str,
    request: Request,
    next: Next,
) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|error| body_error(&error.to_string()))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let hash = request_hash(&parts.method, path, &body);

    let deadline = tokio::time::Instant::now() + WAIT_FOR_FIRST;
    loop {
        if store::claim(pool, workspace_id, api_key_id, key, &hash).await? {
            purge_now_and_then(pool);
            break;
        }
        match store::find(pool, secret_box, api_key_id, key).await? {
            // Gone (its first request failed with a 5xx, or it expired): claim again.
            None => {}
            Some(found) if found.request_hash != hash => {
                return Err(ApiError::conflict(
                    "This Idempotency-Key was already used with a different request",
                )
                .into());
            }
            Some(store::Found {
                answer: Some(answer),
                ..
            }) => return Err(Failure::Answer(replay(answer))),
            Some(_) if tokio::time::Instant::now() >= deadline => {
                return Err(ApiError::conflict(
                    "A request with this Idempotency-Key is still in progress; try again later",
                )
                .into());
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }

    // The claimed request runs to its end in its own task. A client that disconnects, or the
    // request deadline, drops this future; the handler must not be cut off between its commit
    // and the stored answer, or every retry would get a 409 for the whole lease (review L16).
    let request = Request::from_parts(parts, Body::from(body));
    let (task_pool, task_box, task_key) = (pool.clone(), secret_box.clone(), key.to_owned());
    let task = tokio::spawn(
        async move {
            let response = next.run(request).await;
            remember(&task_pool, &task_box, api_key_id, &task_key, response).await
        }
        .instrument(tracing::Span::current()),
    );
    match task.await {
        Ok(response) => Ok(response),
        Err(failed) => {
            // A panic (answered 500 by the panic layer) or a runtime shutting down: nothing
            // was stored, so a retry may run the request again.
            release(pool, api_key_id, key).await;
            match failed.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "The service is shutting down; try again",
                )
                .into()),
            }
        }
    }
}

/// Stores `response` under the claimed key (or releases the claim) and returns it unchanged.
async fn remember(
    pool: &PgPool,
    secret_box: &SecretBox,
    api_key_id: i64,
    key: &str,
    response: Response,
) -> Response {
    let status = response.status();
    if !is_stored(status) {
        release(pool, api_key_id, key).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let (kept, rest) = read_bounded(body, MAX_STORED_BODY).await;
    let Some(rest) = rest else {
        let answer = store::Answer {
            status: status.as_u16(),
            headers: stored_headers(&parts.headers),
            body: kept.to_vec(),
        };
        if let Err(error) = store::finish(pool, secret_box, api_key_id, key, &answer).await {
            tracing::warn!(error = %error, "could not store an idempotent answer");
        }
        return Response::from_parts(parts, Body::from(kept));
    };
    tracing::warn!(
        limit = MAX_STORED_BODY,
        "an answer is too large to store for idempotent replay; passed through unstored"
    );
    release(pool, api_key_id, key).await;
    Response::from_parts(parts, rest)
}

async fn release(pool: &PgPool, api_key_id: i64, key: &str) {
    if let Err(error) = store::release(pool, api_key_id, key).await {
        tracing::warn!(error = %error, "could not release an idempotency key");
    }
}

/// Reads at most `limit` bytes of `body`: the whole body, or (when it is larger) what was read
/// and a body that yields it all again.
async fn read_bounded(body: Body, limit: usize) -> (Bytes, Option<Body>) {
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                size += chunk.len();
                chunks.push(chunk);
                if size > limit {
                    let head = futures::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
                    return (Bytes::new(), Some(Body::from_stream(head.chain(stream))));
                }
            }
            Err(error) => {
                // The handler's body broke off: pass the break on, store nothing.
                let head = futures::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
                let tail = futures::stream::iter([Err(error)]);
                return (Bytes::new(), Some(Body::from_stream(head.chain(tail))));
            }
        }
    }
    (chunks.concat().into(), None)
}

fn stored_headers(headers: &HeaderMap) -> Value {
    let pairs: Vec<Value> = STORED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some(Value::Array(vec![
                Value::String(name.as_str().to_owned()),
                Value::String(value.to_owned()),
            ]))
        })
        .collect();
    Value::Array(pairs)
}

/// The stored answer, marked as a replay.
fn replay(answer: store::Answer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = (status, answer.body).into_response();
    response.headers_mut().remove(header::CONTENT_TYPE);
    if let Value::Array(pairs) = &answer.headers {
        for pair in pairs {
            let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

/// Unix seconds of this instance's last purge.
static LAST_PURGE: AtomicI64 = AtomicI64::new(0);

/// Deletes expired keys in the background, at most once a minute per instance.
fn purge_now_and_then(pool: &PgPool) {
    let now = chrono::Utc::now().timestamp();
    let last = LAST_PURGE.load(Ordering::Relaxed);
    if now - last < 60
        || LAST_PURGE
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let pool = pool.clone();
    tokio::spawn(async move {
        match store::purge_expired(&pool).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "purged expired idempotency keys"),
            Err(error) => tracing::debug!(error = %error, "could not purge idempotency keys"),
        }
    });
}

/// The `idempotency_key` table.
mod store {
    use serde_json::Value;
    use sqlx::PgPool;

    use super::{LEASE_SECONDS, RETENTION_HOURS};
    use crate::{http::ApiError, secret_box::SecretBox};

    /// A stored answer.
    pub(super) struct Answer {
        pub status: u16,
        pub headers: Value,
        pub body: Vec<u8>,
    }

    /// A live key: its request, and its answer once there is one.
    pub(super) struct Found {
        pub request_hash: Vec<u8>,
        pub answer: Option<Answer>,
    }

    /// Claims the key for this request: a new key, an expired one, or an unfinished claim of
    /// the same request whose lease ran out. False if someone else holds it.
    pub(super) async fn claim(
        pool: &PgPool,
        workspace_id: i64,
        api_key_id: i64,
        key: &str,
        request_hash: &[u8],
    ) -> Result<bool, sqlx::Error> {
        let claimed: Option<bool> = sqlx::query_scalar(
            "INSERT INTO idempotency_key
                 (workspace_id, api_key_id, idem_key, request_hash, locked_until, expires_at)
             VALUES ($6, $1, $2, $3, now() + make_interval(secs => $4),
                     now() + make_interval(hours => $5))
             ON CONFLICT (api_key_id, idem_key, workspace_id) DO UPDATE
                SET request_hash = EXCLUDED.request_hash, status = NULL, headers = NULL,
                    body = NULL, locked_until = EXCLUDED.locked_until, created_at = now(),
                    expires_at = EXCLUDED.expires_at
              WHERE idempotency_key.expires_at <= now()
                 OR (idempotency_key.status IS NULL
                     AND idempotency_key.locked_until <= now()
                     AND idempotency_key.request_hash = EXCLUDED.request_hash)
             RETURNING true",
        )
        .bind(api_key_id)
        .bind(key)
        .bind(request_hash)
        .bind(f64::from(LEASE_SECONDS))
        .bind(RETENTION_HOURS)
        .bind(workspace_id)
        .fetch_optional(pool)
        .await?;
        Ok(claimed.is_some())
    }

    /// The live (unexpired) key, if any. A stored answer no key of the ring opens (the
    /// operator key changed without keeping the old one) is a 409: running the request again
    /// could do it twice.
    pub(super) async fn find(
        pool: &PgPool,
        secret_box: &SecretBox,
        api_key_id: i64,
        key: &str,
    ) -> Result<Option<Found>, ApiError> {
        type Row = (Vec<u8>, Option<i16>, Option<Value>, Option<Vec<u8>>, bool);
        let row: Option<Row> = sqlx::query_as(
            "SELECT request_hash, status, headers, body, body_sealed FROM idempotency_key
              WHERE api_key_id = $1 AND idem_key = $2 AND expires_at > now()",
        )
        .bind(api_key_id)
        .bind(key)
        .fetch_optional(pool)
        .await?;
        let Some((request_hash, status, headers, body, sealed)) = row else {
            return Ok(None);
        };
        let body = match body {
            Some(body) if sealed => secret_box
                .open_bytes(&body, &crate::secret_box::SealedFor::idempotent_answer(api_key_id, key))
                .map_err(|_| {
                ApiError::conflict(
                    "The first answer to this Idempotency-Key cannot be read with the current secret keys",
                )
            })?,
            body => body.unwrap_or_default(),
        };
        Ok(Some(Found {
            request_hash,
            answer: status.map(|status| Answer {
                status: u16::try_from(status).unwrap_or(200),
                headers: headers.unwrap_or(Value::Null),
                body,
            }),
        }))
    }

    /// Stores the answer of a claimed key.
    pub(super) async fn finish(
        pool: &PgPool,
        secret_box: &SecretBox,
        api_key_id: i64,
        key: &str,
        answer: &Answer,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE idempotency_key SET status = $3, headers = $4, body = $5, body_sealed = true
              WHERE api_key_id = $1 AND idem_key = $2 AND status IS NULL",
        )
        .bind(api_key_id)
        .bind(key)
        .bind(i16::try_from(answer.status).unwrap_or(500))
        .bind(&answer.headers)
        .bind(secret_box.seal_bytes(
            &answer.body,
            &crate::secret_box::SealedFor::idempotent_answer(api_key_id, key),
        ))
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Gives up a claim without an answer, so that a repeat runs the request again.
    pub(super) async fn release(
        pool: &PgPool,
        api_key_id: i64,
        key: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DELETE FROM idempotency_key
              WHERE api_key_id = $1 AND idem_key = $2 AND status IS NULL",
        )
        .bind(api_key_id)
        .bind(key)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Deletes up to 10,000 expired keys; returns how many.
    pub(super) async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM idempotency_key WHERE (api_key_id, idem_key) IN (
                 SELECT api_key_id, idem_key FROM idempotency_key
                  WHERE expires_at <= now() LIMIT 10000)",
        )
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_up_to_255() {
        assert_eq!(
            read_key(&HeaderValue::from_static(" 7f3c-a1 "))
                .ok()
                .as_deref(),
            Some("7f3c-a1")
        );
        assert!(read_key(&HeaderValue::from_static("")).is_err());
        assert!(read_key(&HeaderValue::from_str(&"k".repeat(256)).expect("header")).is_err());
        assert!(read_key(&HeaderValue::from_bytes(b"caf\xc3\xa9").expect("header")).is_err());
    }

    #[test]
    fn the_same_request_is_method_path_and_body() {
        let a = request_hash(&Method::POST, "/v1/tickets", b"{}");
        assert_eq!(a, request_hash(&Method::POST, "/v1/tickets", b"{}"));
        assert_ne!(a, request_hash(&Method::POST, "/v1/tickets", b"{ }"));
        assert_ne!(a, request_hash(&Method::POST, "/v1/tags", b"{}"));
        assert_ne!(a, request_hash(&Method::PUT, "/v1/tickets", b"{}"));
    }

    #[test]
    fn answers_but_5xx_and_429_are_stored() {
        assert!(is_stored(StatusCode::CREATED));
        assert!(is_stored(StatusCode::ACCEPTED));
        assert!(is_stored(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(is_stored(StatusCode::NOT_FOUND));
        assert!(!is_stored(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_stored(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!is_stored(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[tokio::test]
    async fn large_answers_pass_through_whole() {
        let (kept, rest) = read_bounded(Body::from("small"), 16).await;
        assert_eq!(&kept[..], b"small");
        assert!(rest.is_none());
        let big = "x".repeat(100);
        let (_, rest) = read_bounded(Body::from(big.clone()), 16).await;
        let whole = axum::body::to_bytes(rest.expect("passed through"), 1000)
            .await
            .expect("body");
        assert_eq!(whole, big.as_bytes());
    }

    #[test]
    fn a_replay_carries_the_stored_headers_and_the_marker() {
        let response = replay(store::Answer {
            status: 201,
            headers: serde_json::json!([
                ["content-type", "application/json"],
                ["location", "/v1/x"]
            ]),
            body: b"{}".to_vec(),
        });
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::LOCATION], "/v1/x");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[REPLAYED_HEADER], "true");
    }
}
