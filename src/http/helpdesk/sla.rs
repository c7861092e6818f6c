//! `/v1/sla-policies` (list in the order they are tried, create, get, update, delete,
//! `POST /{id}/reapply`) and `/v1/calendars` (list, create, get, update, delete). Thin: the
//! schema, validation (422 with `details.fields`) and clock recomputation live in the ticket
//! core's `sla` module; these handlers must never compute deadlines themselves.

use axum::{
    Router,
    extract::{Path, State},
    response::{IntoResponse as _, Response},
    routing::{get, post},
};
use deskhook_tickets::{ids::Kind, sla::CalendarInput, sla::policy::PolicyInput};
use serde::Serialize;

use super::{Answer, body::JsonOrForm, created, desk, no_content, ok, params::path_id};
use crate::http::{
    ApiError, AppState,
    auth::{Principal, RequireScope as _},
    pagination,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/sla-policies", get(list_policies).post(create_policy))
        .route(
            "/sla-policies/{id}",
            get(show_policy)
                .patch(update_policy)
                .put(update_policy)
                .delete(delete_policy),
        )
        .route("/sla-policies/{id}/reapply", post(reapply_policy))
        .route("/calendars", get(list_calendars).post(create_calendar))
        .route(
            "/calendars/{id}",
            get(show_calendar)
                .patch(update_calendar)
                .put(update_calendar)
                .delete(delete_calendar),
        )
}

/// Every item at once (these lists are short and ordered by meaning, not paged).
fn all<T: Serialize>(items: &[T]) -> Response {
    let count = i64::try_from(items.len()).unwrap_or(i64::MAX);
    axum::Json(pagination::list_envelope(items, count, None, Some(count))).into_response()
}

fn policy_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::SlaPolicy, id, "SLA policy")
}

fn calendar_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::Calendar, id, "Calendar")
}

#[utoipa::path(
    get,
    path = "/v1/sla-policies",
    tag = "sla",
    summary = "List SLA policies (all at once)",
    responses((status = 200, description = "The policies", body = crate::http::openapi::ListEnvelope))
)]
async fn list_policies(State(state): State<AppState>, principal: Principal) -> Answer {
    principal.require_read()?;
    Ok(all(&desk(&state, &principal).list_sla_policies().await?))
}

#[utoipa::path(
    post,
    path = "/v1/sla-policies",
    tag = "sla",
    summary = "Create an SLA policy",
    request_body(content = Object, description = "The policy: name, conditions, targets per priority, calendar"),
    responses((status = 201, description = "The policy", body = crate::http::openapi::DataEnvelope))
)]
async fn create_policy(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<PolicyInput>,
) -> Answer {
    principal.require_write()?;
    Ok(created(
        &desk(&state, &principal).create_sla_policy(body).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/sla-policies/{id}",
    tag = "sla",
    summary = "Get an SLA policy",
    params(("id" = String, Path, description = "The SLA policy (`slp_…`)'s id")),
    responses((status = 200, description = "The policy", body = crate::http::openapi::DataEnvelope))
)]
async fn show_policy(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    Ok(ok(&desk(&state, &principal)
        .sla_policy(policy_key(&id)?)
        .await?))
}

#[utoipa::path(
    method(patch, put),
    path = "/v1/sla-policies/{id}",
    tag = "sla",
    summary = "Change an SLA policy",
    params(("id" = String, Path, description = "The SLA policy (`slp_…`)'s id")),
    request_body(content = Object, description = "The policy's fields to change"),
    responses((status = 200, description = "The policy", body = crate::http::openapi::DataEnvelope))
)]
async fn update_policy(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<PolicyInput>,
) -> Answer {
    principal.require_write()?;
    let key = policy_key(&id)?;
    Ok(ok(&desk(&state, &principal)
        .update_sla_policy(key, body)
        .await?))
}

#[utoipa::path(
    delete,
    path = "/v1/sla-policies/{id}",
    tag = "sla",
    summary = "Delete an SLA policy",
    params(("id" = String, Path, description = "The SLA policy (`slp_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_policy(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal)
        .delete_sla_policy(policy_key(&id)?)
        .await?;
    Ok(no_content())
}

#[derive(Serialize)]
struct Reapplied {
    recomputed: u64,
}

#[utoipa::path(
    post,
    path = "/v1/sla-policies/{id}/reapply",
    tag = "sla",
    summary = "Recompute the clocks of open tickets under this policy",
    params(("id" = String, Path, description = "The SLA policy (`slp_…`)'s id")),
    responses((status = 200, description = "How many tickets were recomputed", body = crate::http::openapi::DataEnvelope))
)]
async fn reapply_policy(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    let recomputed = desk(&state, &principal)
        .reapply_sla_policy(policy_key(&id)?)
        .await?;
    Ok(ok(&Reapplied { recomputed }))
}

#[utoipa::path(
    get,
    path = "/v1/calendars",
    tag = "sla",
    summary = "List business-hours calendars (all at once)",
    responses((status = 200, description = "The calendars", body = crate::http::openapi::ListEnvelope))
)]
async fn list_calendars(State(state): State<AppState>, principal: Principal) -> Answer {
    principal.require_read()?;
    Ok(all(&desk(&state, &principal).list_calendars().await?))
}

#[utoipa::path(
    post,
    path = "/v1/calendars",
    tag = "sla",
    summary = "Create a business-hours calendar",
    request_body(content = Object, description = "The calendar: name, time zone, weekly hours, holidays"),
    responses((status = 201, description = "The calendar", body = crate::http::openapi::DataEnvelope))
)]
async fn create_calendar(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<CalendarInput>,
) -> Answer {
    principal.require_write()?;
    Ok(created(
        &desk(&state, &principal).create_calendar(body).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/calendars/{id}",
    tag = "sla",
    summary = "Get a calendar",
    params(("id" = String, Path, description = "The calendar (`cal_…`)'s id")),
    responses((status = 200, description = "The calendar", body = crate::http::openapi::DataEnvelope))
)]
async fn show_calendar(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    Ok(ok(&desk(&state, &principal)
        .calendar(calendar_key(&id)?)
        .await?))
}

#[utoipa::path(
    method(patch, put),
    path = "/v1/calendars/{id}",
    tag = "sla",
    summary = "Change a calendar",
    params(("id" = String, Path, description = "The calendar (`cal_…`)'s id")),
    request_body(content = Object, description = "The calendar's fields to change"),
    responses((status = 200, description = "The calendar", body = crate::http::openapi::DataEnvelope))
)]
async fn update_calendar(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<CalendarInput>,
) -> Answer {
    principal.require_write()?;
    let key = calendar_key(&id)?;
    Ok(ok(&desk(&state, &principal)
        .update_calendar(key, body)
        .await?))
}

#[utoipa::path(
    delete,
    path = "/v1/calendars/{id}",
    tag = "sla",
    summary = "Delete a calendar",
    params(("id" = String, Path, description = "The calendar (`cal_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_calendar(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal)
        .delete_calendar(calendar_key(&id)?)
        .await?;
    Ok(no_content())
}
