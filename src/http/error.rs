//! The one mapping from errors to HTTP: [`ApiError`], its closed table of codes, and the error
//! envelope `{"error": {"code", "message", "details"}}`.
//!
//! Every handler returns `Result<_, ApiError>`; library errors convert into it here and only
//! here. A 5xx logs its cause and answers a generic message: internals never leak, and bad
//! input is never a 500.

use axum::{
    Json,
    extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

/// The closed table of error codes and their statuses (api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: malformed syntax, unknown query parameters or values.
    BadRequest,
    /// 401: no key, or an unknown or revoked one.
    Unauthorized,
    /// 403: the key lacks the scope.
    Forbidden,
    /// 404: no such resource in this workspace.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: a state conflict (idempotency key reuse, retry of a live delivery).
    Conflict,
    /// 413: the body is over the cap.
    PayloadTooLarge,
    /// 408: the request (headers, body and answer) took longer than the server allows.
    RequestTimeout,
    /// 415: not JSON on a JSON route.
    UnsupportedMediaType,
    /// 422: well-formed but invalid; `details.fields` says which.
    ValidationFailed,
    /// 429: over the rate limit; `Retry-After` says when to come back.
    TooManyRequests,
    /// 500: a bug.
    InternalServerError,
    /// 503: the database is unreachable or not migrated yet.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The HTTP status of this code.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The code as it appears in the envelope.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Conflict => "CONFLICT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }
}

/// An error answer: a code, a human message, structured details, and extra headers.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    details: Map<String, Value>,
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message` and no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
            retry_after_seconds: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 404 for a resource named in words (`"Ticket"`).
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// 422 with `details.fields = {field: reason}`.
    pub fn invalid_fields<I, K, V>(fields: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let fields: Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k.into(), Value::String(v.into())))
            .collect();
        let summary = fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(
            ErrorCode::ValidationFailed,
            format!("Validation failed: {summary}"),
        )
        .with_detail("fields", Value::Object(fields))
    }

    /// 422 for one field.
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::invalid_fields([(field.into(), reason.into())])
    }

    /// 500: logs `cause` and answers a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorCode::InternalServerError,
            "Internal server error; the cause was logged",
        )
    }

    /// Adds a detail entry.
    #[must_use]
    pub fn with_detail(mut self, key: &str, value: Value) -> Self {
        self.details.insert(key.to_owned(), value);
        self
    }

    /// Adds a `Retry-After` header.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "details": self.details,
            }
        });
        let mut response = (self.code.status(), Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %error, "database unavailable");
                Self::new(
                    ErrorCode::ServiceUnavailable,
                    "The database is unavailable; try again shortly",
                )
                .with_retry_after(1)
            }
            _ => Self::internal(&error),
        }
    }
}

impl From<deskhook_tickets::TicketError> for ApiError {
    fn from(error: deskhook_tickets::TicketError) -> Self {
        use deskhook_tickets::TicketError;
        match error {
            TicketError::NotFound(what) => Self::not_found(what),
            TicketError::Invalid(fields) => Self::invalid_fields(fields),
            TicketError::Conflict(message) => Self::conflict(message),
            TicketError::BadRequest(message) => Self::bad_request(message),
            TicketError::Database(error) => error.into(),
        }
    }
}

impl From<crate::webhooks::WebhookError> for ApiError {
    fn from(error: crate::webhooks::WebhookError) -> Self {
        use crate::webhooks::WebhookError;
        match error {
            WebhookError::NotFound => Self::not_found("Webhook endpoint"),
            WebhookError::Invalid(fields) => Self::invalid_fields(fields),
            WebhookError::Secret(error) => Self::internal(&error),
            WebhookError::Database(error) => error.into(),
        }
    }
}

impl From<crate::auth::KeyError> for ApiError {
    fn from(error: crate::auth::KeyError) -> Self {
        use crate::auth::KeyError;
        match error {
            KeyError::UnknownUser => {
                Self::invalid_field("user_id", "is not a user of this workspace")
            }
            KeyError::Database(error) => error.into(),
        }
    }
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(error: crate::ingest::IngestError) -> Self {
        use crate::ingest::IngestError;
        match error {
            IngestError::Malformed(message) => {
                Self::bad_request(format!("Malformed JSON: {message}"))
            }
            IngestError::Invalid(fields) => Self::invalid_fields(fields),
            IngestError::Database(error) => error.into(),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => {
                // serde's message names the field path (`priority: unknown variant ...`).
                let text = error.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&text)
                    .to_owned();
                let field = detail
                    .split_once(": ")
                    .map_or_else(|| "body".to_owned(), |(path, _)| path.to_owned());
                let reason = detail
                    .split_once(": ")
                    .map_or(detail.as_str(), |(_, reason)| reason)
                    .to_owned();
                Self::invalid_field(field, reason)
            }
            JsonRejection::JsonSyntaxError(error) => {
                Self::bad_request(format!("Malformed JSON: {}", error.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                ErrorCode::UnsupportedMediaType,
                "Expected `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(error) => body_error(&error.body_text()),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        body_error(&rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(format!("Invalid query string: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            ErrorCode::NotFound,
            format!("Not found: {}", rejection.body_text()),
        )
    }
}

/// A body that could not be read: over the cap (413) or broken off.
pub fn body_error(text: &str) -> ApiError {
    if text.contains("length limit") || text.contains("too large") {
        ApiError::new(ErrorCode::PayloadTooLarge, "The request body is too large")
    } else {
        ApiError::bad_request(format!("Could not read the request body: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_envelope_carries_code_message_and_details() {
        let response =
            ApiError::invalid_field("priority", "must be one of low, normal, high, urgent")
                .into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let value: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["error"]["code"], "VALIDATION_FAILED");
        assert_eq!(
            value["error"]["details"]["fields"]["priority"],
            "must be one of low, normal, high, urgent"
        );
    }

    #[test]
    fn retry_after_is_a_header() {
        let response = ApiError::new(ErrorCode::TooManyRequests, "slow down")
            .with_retry_after(7)
            .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
