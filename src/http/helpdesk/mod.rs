//! The helpdesk resources of `/v1`: thin handlers over the `deskhook-tickets` crate.
//!
//! Each handler checks the key's scope, reads the request (including the seed APIs' field
//! spellings), calls one [`Helpdesk`] operation confined to the key's workspace, and shapes the
//! answer (`{data}` or `{data, meta}`). Handlers must never hold SQL or business rules, and
//! never map errors to statuses themselves: [`ApiError`] does that in one place.

pub(super) mod articles;
mod body;
pub(super) mod compose;
pub(super) mod messages;
mod params;
pub(super) mod people;
pub(super) mod sla;
pub(super) mod taxonomy;
pub(super) mod tickets;

use axum::{
    Router,
    extract::Request,
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use deskhook_tickets::{Actor, Helpdesk, listing::Page};
use serde::Serialize;

use super::{
    ApiError, AppState,
    auth::Principal,
    pagination::{self, encode_cursor},
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .merge(tickets::routes())
        .merge(sla::routes())
        .merge(messages::routes())
        .merge(compose::routes())
        .merge(people::routes())
        .merge(taxonomy::routes())
        .merge(articles::routes())
        .route_layer(middleware::from_fn(refuse_nul_in_query))
}

/// A NUL character in a query value can never match and PostgreSQL cannot take it as text:
/// a 400 here instead of a database error later.
async fn refuse_nul_in_query(request: Request, next: Next) -> Response {
    let has_nul = request.uri().query().is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes())
            .any(|(name, value)| name.contains('\0') || value.contains('\0'))
    });
    if has_nul {
        return ApiError::bad_request("Query values must not contain NUL characters")
            .into_response();
    }
    next.run(request).await
}

/// The key's workspace's helpdesk.
fn desk<'a>(state: &'a AppState, principal: &Principal) -> Helpdesk<'a> {
    Helpdesk::new(&state.pool, state.outbox.as_ref(), principal.workspace_id)
}

/// Who acts: the key's user, else the key itself.
fn actor(principal: &Principal) -> Actor {
    principal
        .user_id
        .map_or(Actor::ApiKey(principal.key_id), Actor::Agent)
}

/// `200 {"data": …}`.
fn ok<T: Serialize>(data: &T) -> Response {
    axum::Json(pagination::one(data)).into_response()
}

/// `201 {"data": …}`.
fn created<T: Serialize>(data: &T) -> Response {
    (StatusCode::CREATED, axum::Json(pagination::one(data))).into_response()
}

/// `204`.
fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `200 {"data": [...], "meta": {...}}`.
fn list<T: Serialize>(page: &Page<T>, limit: i64) -> Response {
    let next = page.next.as_ref().map(encode_cursor);
    axum::Json(pagination::list_envelope(
        &page.items,
        limit,
        next.as_deref(),
        page.total,
    ))
    .into_response()
}

/// Result of a handler.
type Answer = Result<Response, ApiError>;
