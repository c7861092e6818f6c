//! The HTTP surface: the router, its middleware, and the handlers, grouped by resource.
//!
//! Handlers are thin: they parse the request, call domain or queue code, and shape the answer.
//! They hold no SQL and no business rules. Errors become HTTP only in [`error`].

mod api_keys;
pub mod auth;
pub mod error;
pub mod extract;
mod helpdesk;
pub mod idempotency;
pub mod openapi;
mod ops;
pub mod pagination;
pub mod rate_limit;
pub mod serve;
mod webhooks;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    auth::Authenticator,
    config::Config,
    metrics::Metrics,
    queue::{QueueOutbox, Wakeup},
    ssrf::AddressGuard,
    webhooks::TargetCache,
};
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
    /// Resolves bearer keys.
    pub auth: Arc<Authenticator>,
    /// The per-key rate limit.
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    /// The ticket core's outbox: enqueues events in the change's transaction.
    pub outbox: Arc<QueueOutbox>,
    /// Wakes the delivery dispatcher after events are committed.
    pub wakeup: Wakeup,
    /// The dispatcher's cache of endpoint settings, invalidated on endpoint changes.
    pub targets: Arc<TargetCache>,
    /// Which destinations endpoints may point at.
    pub address_guard: Arc<AddressGuard>,
    /// Group commit for ingest.
    pub ingest: crate::ingest::IngestBatcher,
}

impl AppState {
    /// Whether the schema is in place.
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    /// What endpoint changes through this instance's API tell it.
    pub fn instance(&self) -> crate::webhooks::Instance<'_> {
        crate::webhooks::Instance {
            targets: &self.targets,
            wakeup: &self.wakeup,
        }
    }
}

/// Request bodies are capped at this by default (api.md); ingest has its own, larger cap.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The whole router: operations routes always, `/v1` when the `api` role runs.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new().merge(ops::routes()).merge(openapi::routes());
    if state.config.roles.api {
        let v1 = v1_routes()
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                idempotency::idempotent_post,
            ))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_key,
            ));
        router = router.nest("/v1", v1);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_deadline,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::internal(&"a request handler panicked").into_response()
        }))
        .with_state(state)
}

/// The `/v1` routes, before their middleware.
fn v1_routes() -> Router<AppState> {
    Router::new()
        .merge(api_keys::routes())
        .merge(helpdesk::routes())
        .merge(webhooks::routes())
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
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .http_requests_total
        .with_label_values(&[
            method,
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

/// Ends a request that takes longer than `DESKHOOK_REQUEST_TIMEOUT`, body upload included,
/// with a 408 envelope: a client sending a byte a minute cannot hold a connection and a
/// handler forever. What the handler had not committed is rolled back.
async fn request_deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.config.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "The request took longer than {limit:?} (DESKHOOK_REQUEST_TIMEOUT); a POST with \
                 an Idempotency-Key still finishes, and its retry gets the answer"
            ),
        )
        .into_response(),
    }
}

/// The `method` label: the standard methods by name, anything else (hyper accepts any token,
/// and some routes need no key) as `other`, so the label set stays bounded.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `200 OK` with a small JSON status body.
fn ok_status(status: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": status })),
    )
        .into_response()
}
