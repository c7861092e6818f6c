//! The HTTP surface: the router, its middleware, and the handlers, grouped by resource.
//!
//! Handlers are thin: they parse the request, call domain or queue code, and shape the answer.
//! They hold no SQL and no business rules. Errors become HTTP only in [`error`].

pub mod error;
mod ops;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{config::Config, metrics::Metrics};
pub use error::{ApiError, ErrorCode};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// Every metric.
    pub metrics: Metrics,
    /// The instance's configuration.
    pub config: Arc<Config>,
    /// Set once migrations are known to be applied.
    pub migrated: Arc<AtomicBool>,
}

impl AppState {
    /// Whether the schema is in place.
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }
}

/// The whole router: operations routes always, `/v1` when the `api` role runs.
pub fn router(state: AppState) -> Router {
    let router = Router::new().merge(ops::routes());
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::internal(&"a request handler panicked").into_response()
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "No such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "This route does not support that method",
    )
}

/// Counts and times every request under its route template (never the raw path: ids in
/// paths would make the label set unbounded).
async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .http_requests_total
        .with_label_values(&[
            method.as_str(),
            route.as_str(),
            crate::metrics::status_class(status.as_u16()),
        ])
        .inc();
    state
        .metrics
        .http_request_duration_seconds
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `200 OK` with a small JSON status body.
fn ok_status(status: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": status })),
    )
        .into_response()
}
