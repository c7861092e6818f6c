//! Operations routes, served by every role without a key: `/healthz` (the process is alive),
//! `/readyz` (the database answers and the schema is migrated) and `/metrics`.

use std::time::Duration;

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

use super::{ApiError, AppState, ErrorCode, ok_status};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    ok_status("alive")
}

async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.is_migrated() {
        return Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "Database migrations are not applied yet",
        ));
    }
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    match ping {
        Ok(Ok(_)) => Ok(ok_status("ready")),
        Ok(Err(error)) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            format!("The database does not answer: {}", error_kind(&error)),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "The database did not answer within 2 s",
        )),
    }
}

/// A short description of a database error that cannot carry a secret.
fn error_kind(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::PoolTimedOut => "no connection could be made in time",
        sqlx::Error::Io(_) => "connection failed",
        sqlx::Error::Database(_) => "it answered with an error",
        _ => "unexpected error",
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
