//! `/v1/api-keys` and `/v1/workspace` (admin): keys are listed by prefix only, shown once at
//! creation, revoked, and rotated with an optional grace period.

use std::time::Duration;

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    ApiError, AppState,
    auth::{Principal, RequireScope as _, Scope},
    extract::{Json, OptionalJson},
    pagination,
};
use crate::{
    auth::{self, ApiKeyRecord},
    ids::{self, Kind},
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{id}", get(show).delete(revoke))
        .route("/api-keys/{id}/rotate", post(rotate))
        .route("/workspace", get(workspace).patch(update_workspace))
}

/// A key as the API shows it.
#[derive(Debug, Serialize)]
struct KeyView {
    id: String,
    name: Option<String>,
    prefix: String,
    scopes: Vec<Scope>,
    user_id: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<String>,
}

impl KeyView {
    fn new(record: ApiKeyRecord, api_key: Option<String>) -> Self {
        Self {
            id: ids::encode(Kind::ApiKey, record.id),
            name: record.name,
            prefix: record.prefix,
            scopes: record.scopes,
            user_id: record.user_id.map(|u| ids::encode(Kind::User, u)),
            created_at: record.created_at,
            last_used_at: record.last_used_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            api_key,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[schema(value_type = Vec<String>, example = json!(["read"]))]
    scopes: Vec<Scope>,
    name: Option<String>,
    user_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "List the workspace's API keys (prefix only; admin)",
    responses((status = 200, description = "The keys", body = crate::http::openapi::ListEnvelope))
)]
async fn list(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let keys: Vec<KeyView> = auth::list_keys(&state.pool, principal.workspace_id)
        .await?
        .into_iter()
        .map(|record| KeyView::new(record, None))
        .collect();
    let total = i64::try_from(keys.len()).unwrap_or(i64::MAX);
    Ok(axum::Json(pagination::list_envelope(
        &keys,
        total.max(1),
        None,
        Some(total),
    ))
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "Create an API key (admin); the key is shown this once",
    request_body = CreateKey,
    responses((status = 201, description = "The key, with `api_key`", body = crate::http::openapi::DataEnvelope))
)]
async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateKey>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    if body.scopes.is_empty() {
        return Err(ApiError::invalid_field(
            "scopes",
            "must name at least one scope",
        ));
    }
    let user_id = match body.user_id.as_deref() {
        None => None,
        Some(id) => Some(
            ids::decode(Kind::User, id)
                .ok_or_else(|| ApiError::invalid_field("user_id", "is not a user id (usr_…)"))?,
        ),
    };
    let created = auth::create_key(
        &state.pool,
        principal.workspace_id,
        &body.scopes,
        body.name.as_deref(),
        user_id,
    )
    .await?;
    let view = KeyView::new(created.record, Some(created.key));
    Ok((StatusCode::CREATED, axum::Json(pagination::one(&view))).into_response())
}

fn key_id(id: &str) -> Result<i64, ApiError> {
    ids::decode(Kind::ApiKey, id).ok_or_else(|| ApiError::not_found("API key"))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "Get an API key (admin)",
    params(("id" = String, Path, description = "The API key (`key_…`)'s id")),
    responses((status = 200, description = "The key", body = crate::http::openapi::DataEnvelope))
)]
async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let record = auth::get_key(&state.pool, principal.workspace_id, key_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(axum::Json(pagination::one(&KeyView::new(record, None))).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "Revoke an API key (admin)",
    params(("id" = String, Path, description = "The API key (`key_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let id = key_id(&id)?;
    if !auth::revoke_key(&state.pool, principal.workspace_id, id, None).await? {
        return Err(ApiError::not_found("API key"));
    }
    state.auth.forget_all();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The longest a rotated-out key keeps working, as for rotated webhook secrets.
const MAX_GRACE_SECONDS: u64 = 30 * 86_400;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    grace_seconds: Option<u64>,
}

#[utoipa::path(
    post,
    path = "/v1/api-keys/{id}/rotate",
    tag = "api-keys",
    summary = "Issue a new key and revoke the old one, after an optional grace (admin)",
    params(("id" = String, Path, description = "The API key (`key_…`)'s id")),
    request_body(content = Option<RotateKey>, description = "Optional"),
    responses((status = 201, description = "The new key, with `api_key`", body = crate::http::openapi::DataEnvelope))
)]
async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateKey>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let id = key_id(&id)?;
    let grace = body.unwrap_or_default().grace_seconds;
    if grace.is_some_and(|seconds| seconds > MAX_GRACE_SECONDS) {
        return Err(ApiError::invalid_field(
            "grace_seconds",
            "must be at most 30 days (2592000)",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let old = auth::get_key(&mut *tx, principal.workspace_id, id)
        .await?
        .filter(|k| k.revoked_at.is_none())
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let created = auth::create_key(
        &mut *tx,
        principal.workspace_id,
        &old.scopes,
        old.name.as_deref(),
        old.user_id,
    )
    .await?;
    auth::revoke_key(
        &mut *tx,
        principal.workspace_id,
        id,
        grace.map(Duration::from_secs),
    )
    .await?;
    tx.commit().await?;
    state.auth.forget_all();
    let view = KeyView::new(created.record, Some(created.key));
    Ok((StatusCode::CREATED, axum::Json(pagination::one(&view))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/workspace",
    tag = "workspace",
    summary = "Get the key's workspace",
    responses((status = 200, description = "The workspace", body = crate::http::openapi::DataEnvelope))
)]
async fn workspace(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let (name, limit, created_at): (String, Option<i32>, DateTime<Utc>) = sqlx::query_as(
        "SELECT name, rate_limit_per_minute, created_at FROM workspace WHERE id = $1",
    )
    .bind(principal.workspace_id)
    .fetch_one(&state.pool)
    .await?;
    Ok(axum::Json(json!({"data": {
        "id": ids::encode(Kind::Workspace, principal.workspace_id),
        "name": name,
        "rate_limit_per_minute": limit,
        "created_at": created_at,
    }}))
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateWorkspace {
    #[schema(minimum = 1)]
    rate_limit_per_minute: Option<u32>,
}

#[utoipa::path(
    patch,
    path = "/v1/workspace",
    tag = "workspace",
    summary = "Lower the workspace's own rate limit, at most the operator's (admin)",
    request_body = UpdateWorkspace,
    responses((status = 200, description = "The workspace", body = crate::http::openapi::DataEnvelope))
)]
async fn update_workspace(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<UpdateWorkspace>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    if body.rate_limit_per_minute == Some(0) {
        return Err(ApiError::invalid_field(
            "rate_limit_per_minute",
            "must be a positive number of requests per minute, or null",
        ));
    }
    if let (Some(asked), Some(ceiling)) = (body.rate_limit_per_minute, state.rate_limiter.ceiling())
        && asked > ceiling
    {
        return Err(ApiError::invalid_field(
            "rate_limit_per_minute",
            format!("must be at most {ceiling}, this instance's limit (DESKHOOK_RATE_LIMIT)"),
        ));
    }
    auth::set_workspace_rate_limit(
        &state.pool,
        principal.workspace_id,
        body.rate_limit_per_minute,
    )
    .await?;
    state.auth.forget_all();
    workspace(State(state), principal).await
}
