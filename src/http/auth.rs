//! Bearer-key authentication for `/v1`: a middleware that resolves the key to a [`Principal`]
//! (401 otherwise) and applies the per-key rate limit, and the scope checks handlers call.
//!
//! Handlers take `Principal` as an extractor; it is always there on `/v1` routes because this
//! middleware ran first. Another workspace's resources are invisible: every store call takes
//! `principal.workspace_id`, so they answer 404, never 403.

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState, ErrorCode};
pub use crate::auth::{Principal, Scope};

/// Authenticates the request, enforces the rate limit, and adds `X-RateLimit-*` headers.
pub async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match authenticate(&state, request.headers()).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let decision = state.rate_limiter.check(&principal);
    if !decision.allowed {
        let mut response = ApiError::new(
            ErrorCode::TooManyRequests,
            "Rate limit exceeded for this API key",
        )
        .with_retry_after(decision.retry_after_seconds.max(1))
        .into_response();
        decision.write_headers(response.headers_mut());
        return response;
    }
    // Read-only keys may only read, whatever the route.
    if principal.scopes == [Scope::Read]
        && request.method() != Method::GET
        && request.method() != Method::HEAD
    {
        let mut response =
            ApiError::new(ErrorCode::Forbidden, "This key is read-only").into_response();
        decision.write_headers(response.headers_mut());
        return response;
    }
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    decision.write_headers(response.headers_mut());
    response
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("Missing `Authorization: Bearer <api key>`"))?;
    let value = value
        .to_str()
        .map_err(|_| unauthorized("Malformed Authorization header"))?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("Expected `Authorization: Bearer <api key>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("Expected `Authorization: Bearer <api key>`"));
    }
    match state.auth.authenticate(key.trim()).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(unauthorized("Unknown, revoked or expired API key")),
        Err(crate::auth::AuthError::Database(error)) => Err(error.into()),
        Err(error @ crate::auth::AuthError::TooManyUnknownKeys) => {
            Err(ApiError::new(ErrorCode::TooManyRequests, error.to_string()).with_retry_after(1))
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| unauthorized("Missing `Authorization: Bearer <api key>`"))
    }
}

/// Scope checks, answering 403 with the scope that is missing.
pub trait RequireScope {
    /// Read access (GET on helpdesk data and webhooks).
    fn require_read(&self) -> Result<(), ApiError>;
    /// Write access.
    fn require_write(&self) -> Result<(), ApiError>;
    /// Ingest access (`POST /v1/events`).
    fn require_ingest(&self) -> Result<(), ApiError>;
    /// Admin access.
    fn require_admin(&self) -> Result<(), ApiError>;
}

impl RequireScope for Principal {
    fn require_read(&self) -> Result<(), ApiError> {
        check(self.can_read(), "read")
    }

    fn require_write(&self) -> Result<(), ApiError> {
        check(self.can_write(), "write")
    }

    fn require_ingest(&self) -> Result<(), ApiError> {
        check(self.can_ingest(), "ingest")
    }

    fn require_admin(&self) -> Result<(), ApiError> {
        check(self.is_admin(), "admin")
    }
}

fn check(allowed: bool, scope: &str) -> Result<(), ApiError> {
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("This API key lacks the `{scope}` scope"),
        )
        .with_detail(
            "required_scope",
            serde_json::Value::String(scope.to_owned()),
        ))
    }
}
