//! `/v1/webhooks` (endpoints), `/v1/deliveries` and `/v1/events`: thin handlers over
//! [`crate::webhooks`], [`crate::queue`] and [`crate::ingest`].

use std::time::Duration;

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use super::{
    ApiError, AppState, ErrorCode,
    auth::{Principal, RequireScope as _},
    extract::{Json, OptionalJson, Query},
    pagination::{decode_cursor, encode_cursor, list_envelope, one, page_limit},
};
use crate::{
    ids::{self, Kind},
    ingest,
    queue::{
        self,
        deliveries::{DeliveryFilter, DeliveryRecord, RetryResult},
    },
    webhooks::{self, EndpointSettings, Ordering},
};

pub(super) fn routes() -> Router<AppState> {
    let ingest = Router::new()
        .route("/events", post(ingest_events).get(list_events))
        .layer(DefaultBodyLimit::max(ingest::MAX_BODY_BYTES));
    Router::new()
        .route("/webhooks", get(list_endpoints).post(create_endpoint))
        .route(
            "/webhooks/{id}",
            get(show_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route("/webhooks/{id}/secret", get(reveal_secret))
        .route("/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/webhooks/{id}/test", post(send_test))
        .route("/webhooks/{id}/enable", post(enable_endpoint))
        .route("/webhooks/{id}/recover", post(recover))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}", get(show_delivery))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .route("/events/{id}", get(show_event))
        .merge(ingest)
}

/// `Some(None)` for an explicit `null`, `None` for an absent field.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EndpointBody {
    url: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    events: Option<Vec<String>>,
    enabled: Option<bool>,
    #[schema(value_type = Option<String>, example = "none")]
    ordering: Option<Ordering>,
    max_in_flight: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i32>)]
    rate_limit_per_second: Option<Option<i32>>,
    #[schema(value_type = Option<Object>)]
    headers: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    legacy_signature_header: Option<Option<String>>,
    include_internal_notes: Option<bool>,
}

impl From<EndpointBody> for EndpointSettings {
    fn from(body: EndpointBody) -> Self {
        Self {
            url: body.url,
            description: body.description,
            events: body.events,
            enabled: body.enabled,
            ordering: body.ordering,
            max_in_flight: body.max_in_flight,
            rate_limit_per_second: body.rate_limit_per_second,
            headers: body.headers,
            legacy_signature_header: body.legacy_signature_header,
            include_internal_notes: body.include_internal_notes,
        }
    }
}

fn endpoint_key(id: &str) -> Result<i64, ApiError> {
    ids::decode(Kind::Webhook, id).ok_or_else(|| ApiError::not_found("Webhook endpoint"))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    /// Page size, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The same as `limit` (seed 003's name).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<i64>,
    /// `meta.next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    summary = "List webhook endpoints",
    params(ListParams),
    responses((status = 200, description = "A page of endpoints", body = crate::http::openapi::ListEnvelope))
)]
async fn list_endpoints(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let limit = page_limit(params.limit, params.per_page)?;
    let after = params
        .cursor
        .as_deref()
        .map(decode_cursor::<i64>)
        .transpose()?;
    let (endpoints, total) =
        webhooks::list(&state.pool, principal.workspace_id, after, limit + 1).await?;
    let (page, next) = split_page(endpoints, limit, |e| encode_cursor(&e.key));
    let page = page
        .into_iter()
        .map(|endpoint| shown(&state, &principal, endpoint))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(list_envelope(&page, limit, next.as_deref(), Some(total))).into_response())
}

/// An endpoint as `principal` may see it: header values are receiver credentials, shown to
/// admin keys only (security review M2); other keys see the names.
fn shown(
    state: &AppState,
    principal: &Principal,
    mut endpoint: webhooks::Endpoint,
) -> Result<webhooks::Endpoint, ApiError> {
    if principal.is_admin() {
        endpoint
            .reveal_headers(&state.config.secret_box)
            .map_err(webhooks::WebhookError::from)?;
    } else {
        endpoint.redact_headers();
    }
    Ok(endpoint)
}

/// Keeps `limit` rows and makes the cursor of the last one if there were more.
fn split_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(cursor);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    summary = "Create a webhook endpoint; the answer carries its `secret` this once",
    request_body = EndpointBody,
    responses((status = 201, description = "The endpoint, with `secret`", body = crate::http::openapi::DataEnvelope))
)]
async fn create_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<EndpointBody>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let settings = EndpointSettings::from(body);
    settings.validate(true, &state.address_guard)?;
    let (endpoint, secret) = webhooks::create(
        &state.pool,
        &state.config.secret_box,
        principal.workspace_id,
        &settings,
    )
    .await?;
    let endpoint = shown(&state, &principal, endpoint)?;
    let mut data = serde_json::to_value(&endpoint).map_err(|e| ApiError::internal(&e))?;
    data["secret"] = Value::String(secret.expose().to_owned());
    Ok((StatusCode::CREATED, axum::Json(json!({ "data": data }))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Get a webhook endpoint",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    responses((status = 200, description = "The endpoint", body = crate::http::openapi::DataEnvelope))
)]
async fn show_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let endpoint = webhooks::get(&state.pool, principal.workspace_id, endpoint_key(&id)?).await?;
    Ok(axum::Json(one(&shown(&state, &principal, endpoint)?)).into_response())
}

#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Change a webhook endpoint",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    request_body = EndpointBody,
    responses((status = 200, description = "The endpoint", body = crate::http::openapi::DataEnvelope))
)]
async fn update_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<EndpointBody>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let key = endpoint_key(&id)?;
    let settings = EndpointSettings::from(body);
    settings.validate(false, &state.address_guard)?;
    let endpoint = webhooks::update(
        &state.pool,
        &state.config.secret_box,
        state.instance(),
        principal.workspace_id,
        key,
        &settings,
    )
    .await?;
    Ok(axum::Json(one(&shown(&state, &principal, endpoint)?)).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook endpoint",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    webhooks::delete(
        &state.pool,
        state.instance(),
        principal.workspace_id,
        endpoint_key(&id)?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/enable",
    tag = "webhooks",
    summary = "Enable an endpoint; its waiting deliveries resume",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    responses((status = 200, description = "The endpoint", body = crate::http::openapi::DataEnvelope))
)]
async fn enable_endpoint(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let settings = EndpointSettings {
        enabled: Some(true),
        ..EndpointSettings::default()
    };
    let endpoint = webhooks::update(
        &state.pool,
        &state.config.secret_box,
        state.instance(),
        principal.workspace_id,
        endpoint_key(&id)?,
        &settings,
    )
    .await?;
    Ok(axum::Json(one(&shown(&state, &principal, endpoint)?)).into_response())
}

#[derive(Debug, Serialize)]
struct SecretView {
    /// Shown to admin keys only (api.md: the secret appears in no other answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    previous: Vec<PreviousSecret>,
}

#[derive(Debug, Serialize)]
struct PreviousSecret {
    expires_at: DateTime<Utc>,
}

async fn secret_view(
    state: &AppState,
    workspace_id: i64,
    key: i64,
) -> Result<SecretView, ApiError> {
    let (current, previous) =
        webhooks::reveal_secret(&state.pool, &state.config.secret_box, workspace_id, key).await?;
    Ok(SecretView {
        secret: Some(current.expose().to_owned()),
        previous: previous
            .into_iter()
            .map(|expires_at| PreviousSecret { expires_at })
            .collect(),
    })
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/secret",
    tag = "webhooks",
    summary = "Reveal the endpoint's signing secret (admin)",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    responses((status = 200, description = "`{secret, previous: [{expires_at}]}`", body = crate::http::openapi::DataEnvelope))
)]
async fn reveal_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let view = secret_view(&state, principal.workspace_id, endpoint_key(&id)?).await?;
    Ok(axum::Json(one(&view)).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    expire_in_seconds: Option<u64>,
}

/// A rotated-out secret keeps signing this long unless asked otherwise.
const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Rotate the signing secret; the old one signs too for 24 h or `expire_in_seconds`",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    request_body(content = Option<RotateBody>, description = "Optional"),
    responses((status = 200, description = "`{secret, previous: [{expires_at}]}`; `secret` for admin keys only", body = crate::http::openapi::DataEnvelope))
)]
async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let key = endpoint_key(&id)?;
    let overlap = body
        .unwrap_or_default()
        .expire_in_seconds
        .map_or(ROTATION_OVERLAP, Duration::from_secs);
    if overlap > Duration::from_secs(30 * 86_400) {
        return Err(ApiError::invalid_field(
            "expire_in_seconds",
            "must be at most 30 days (2592000)",
        ));
    }
    webhooks::rotate_secret(
        &state.pool,
        &state.config.secret_box,
        state.instance(),
        principal.workspace_id,
        key,
        overlap,
    )
    .await?;
    let mut view = secret_view(&state, principal.workspace_id, key).await?;
    // A write key may rotate (e.g. after a leak) but reads the new secret nowhere (review L2).
    if !principal.is_admin() {
        view.secret = None;
    }
    Ok(axum::Json(one(&view)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    tag = "webhooks",
    summary = "Send a `webhook.test` event to the endpoint",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    responses(
        (status = 202, description = "`{event_id, delivery_id}`", body = crate::http::openapi::DataEnvelope),
        (status = 409, description = "The endpoint is disabled", body = crate::http::openapi::ErrorEnvelope)
    )
)]
async fn send_test(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let key = endpoint_key(&id)?;
    let endpoint = webhooks::get(&state.pool, principal.workspace_id, key).await?;
    // A disabled endpoint claims nothing: its test would wait unseen (review L13).
    if !endpoint.enabled {
        return Err(ApiError::conflict(
            "This webhook endpoint is disabled; enable it before sending a test event",
        ));
    }
    let data = json!({ "webhook": { "id": endpoint.id, "url": endpoint.url },
                       "message": "This is a test event from Deskhook." });
    let (event_id, delivery_id) = queue::deliveries::send_test(
        &state.pool,
        &state.wakeup,
        principal.workspace_id,
        key,
        &data.to_string(),
    )
    .await?;
    state
        .metrics
        .events_total
        .with_label_values(&["webhook.test", "test"])
        .inc();
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "data": {
            "event_id": ids::encode(Kind::Event, event_id),
            "delivery_id": ids::encode(Kind::Delivery, delivery_id),
        }})),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/recover",
    tag = "webhooks",
    summary = "Re-queue the endpoint's dead deliveries finished in `[since, until)`",
    params(("id" = String, Path, description = "The webhook endpoint (`wh_…`)'s id")),
    request_body = RecoverBody,
    responses((status = 200, description = "`{requeued: N}`", body = crate::http::openapi::DataEnvelope))
)]
async fn recover(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<RecoverBody>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let key = endpoint_key(&id)?;
    webhooks::get(&state.pool, principal.workspace_id, key).await?;
    if body.until.is_some_and(|until| until <= body.since) {
        return Err(ApiError::invalid_field("until", "must be after `since`"));
    }
    let requeued = queue::deliveries::recover(
        &state.pool,
        &state.wakeup,
        principal.workspace_id,
        key,
        body.since,
        body.until,
    )
    .await?;
    Ok(axum::Json(json!({ "data": { "requeued": requeued } })).into_response())
}

/// A delivery as the API shows it.
#[derive(Debug, Serialize)]
struct DeliveryView {
    id: String,
    webhook_id: String,
    event_id: String,
    event_type: String,
    status: String,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    last_status_code: Option<i16>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_log: Option<Vec<AttemptView>>,
}

#[derive(Debug, Serialize)]
struct AttemptView {
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_ms: i32,
    status_code: Option<i16>,
    outcome: String,
    error: Option<String>,
    response_body: Option<String>,
    fenced: bool,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(record: DeliveryRecord) -> Self {
        Self {
            id: ids::encode(Kind::Delivery, record.id),
            webhook_id: ids::encode(Kind::Webhook, record.endpoint_id),
            event_id: ids::encode(Kind::Event, record.event_id),
            event_type: record.event_type,
            status: record.status,
            attempts: record.attempts,
            next_attempt_at: record.next_attempt_at,
            last_attempt_at: record.last_attempt_at,
            last_status_code: record.last_status_code,
            created_at: record.created_at,
            finished_at: record.finished_at,
            attempt_log: None,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeliveryParams {
    webhook_id: Option<String>,
    event_id: Option<String>,
    event_type: Option<String>,
    status: Option<String>,
    /// Page size, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The same as `limit` (seed 003's name).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<i64>,
    /// `meta.next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    summary = "List deliveries (the dead-letter queue is `status=dead`)",
    params(DeliveryParams),
    responses((status = 200, description = "A page of deliveries", body = crate::http::openapi::ListEnvelope))
)]
async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<DeliveryParams>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let limit = page_limit(params.limit, params.per_page)?;
    // An id of another kind can match nothing; say so instead of listing everything.
    let endpoint_id = params
        .webhook_id
        .as_deref()
        .map(|id| {
            ids::decode(Kind::Webhook, id)
                .ok_or_else(|| ApiError::bad_request("webhook_id is not a webhook id (wh_…)"))
        })
        .transpose()?;
    let event_id = params
        .event_id
        .as_deref()
        .map(|id| {
            ids::decode(Kind::Event, id)
                .ok_or_else(|| ApiError::bad_request("event_id is not an event id (evt_…)"))
        })
        .transpose()?;
    let statuses = params
        .status
        .as_deref()
        .map(|text| {
            text.split(',')
                .map(str::trim)
                .map(|status| {
                    if queue::deliveries::STATUSES.contains(&status) {
                        Ok(status.to_owned())
                    } else {
                        Err(ApiError::bad_request(format!(
                            "status `{status}` is not one of {}",
                            queue::deliveries::STATUSES.join(", ")
                        )))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let filter = DeliveryFilter {
        endpoint_id,
        event_id,
        event_type: params.event_type,
        statuses,
        before: params
            .cursor
            .as_deref()
            .map(decode_cursor::<i64>)
            .transpose()?,
    };
    let rows =
        queue::deliveries::list(&state.pool, principal.workspace_id, &filter, limit + 1).await?;
    let (page, next) = split_page(rows, limit, |d| encode_cursor(&d.id));
    let views: Vec<DeliveryView> = page.into_iter().map(Into::into).collect();
    Ok(axum::Json(list_envelope(&views, limit, next.as_deref(), None)).into_response())
}

fn delivery_key(id: &str) -> Result<i64, ApiError> {
    ids::decode(Kind::Delivery, id).ok_or_else(|| ApiError::not_found("Delivery"))
}

#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    tag = "deliveries",
    summary = "Get a delivery with its `attempt_log`",
    params(("id" = String, Path, description = "The delivery (`dlv_…`)'s id")),
    responses((status = 200, description = "The delivery", body = crate::http::openapi::DataEnvelope))
)]
async fn show_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let key = delivery_key(&id)?;
    let record = queue::deliveries::get(&state.pool, principal.workspace_id, key)
        .await?
        .ok_or_else(|| ApiError::not_found("Delivery"))?;
    let attempts = queue::deliveries::attempts(&state.pool, principal.workspace_id, key).await?;
    let mut view = DeliveryView::from(record);
    view.attempt_log = Some(
        attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                started_at: a.started_at,
                duration_ms: a.duration_ms,
                status_code: a.status_code,
                outcome: a.outcome,
                error: a.error,
                response_body: a.response_body,
                fenced: a.fenced,
            })
            .collect(),
    );
    Ok(axum::Json(one(&view)).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    tag = "deliveries",
    summary = "Re-queue a dead or succeeded delivery (409 otherwise)",
    params(("id" = String, Path, description = "The delivery (`dlv_…`)'s id")),
    responses((status = 202, description = "The delivery", body = crate::http::openapi::DataEnvelope))
)]
async fn retry_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_write()?;
    let key = delivery_key(&id)?;
    match queue::deliveries::retry(&state.pool, &state.wakeup, principal.workspace_id, key).await? {
        RetryResult::Requeued => {}
        RetryResult::NotFinished => {
            return Err(ApiError::conflict(
                "Only succeeded or dead deliveries can be retried; this one is still queued",
            ));
        }
        RetryResult::Exhausted => {
            return Err(ApiError::conflict(format!(
                "This delivery has used up its {} attempts and cannot be retried again",
                queue::deliveries::MAX_ATTEMPTS
            )));
        }
        RetryResult::NotFound => return Err(ApiError::not_found("Delivery")),
    }
    let record = queue::deliveries::get(&state.pool, principal.workspace_id, key)
        .await?
        .ok_or_else(|| ApiError::not_found("Delivery"))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(one(&DeliveryView::from(record))),
    )
        .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    summary = "Ingest events from an external helpdesk core (scope `ingest` or `write`)",
    request_body(content = Object, description = "One event `{id?, type, occurred_at?, ticket_id?, data}` or a batch `{events: [...]}` of up to 500; at most 5 MiB"),
    responses((status = 202, description = "`[{id, external_id, status: accepted|duplicate}]`, after the events are durably stored", body = crate::http::openapi::DataEnvelope))
)]
async fn ingest_events(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require_ingest()?;
    // Over the 5 MiB cap: 413 in the error envelope, not axum's plain text.
    let body = body?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Expected `Content-Type: application/json`",
        ));
    }
    let events = ingest::parse(&body)?;
    let accepted = ingest::accept(&state.ingest, principal.workspace_id, events).await?;
    let data: Vec<Value> = accepted
        .iter()
        .map(|a| {
            if !a.duplicate {
                state
                    .metrics
                    .events_total
                    .with_label_values(&[a.event_type.as_str(), "ingest"])
                    .inc();
            }
            json!({
                "id": ids::encode(Kind::Event, a.event_id),
                "external_id": a.external_id,
                "status": if a.duplicate { "duplicate" } else { "accepted" },
            })
        })
        .collect();
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "data": data }))).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Page size, 1–100 (default 25).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The same as `limit` (seed 003's name).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<i64>,
    /// `meta.next_cursor` of the previous page.
    cursor: Option<String>,
}

fn event_view(
    record: &queue::events::EventRecord,
    summary: Option<&std::collections::HashMap<String, i64>>,
) -> Value {
    let data = record
        .data
        .as_deref()
        .and_then(|d| serde_json::from_str::<Value>(d).ok());
    let mut view = json!({
        "id": ids::encode(Kind::Event, record.id),
        "type": record.event_type,
        "source": record.source,
        "external_id": record.external_id,
        "ticket_id": record.ticket_key,
        "occurred_at": record.occurred_at,
        "created_at": record.created_at,
        "deliveries": summary.cloned().unwrap_or_default(),
    });
    if let Some(data) = data {
        view["data"] = data;
    }
    view
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    summary = "List recent events with their delivery summary",
    params(EventParams),
    responses((status = 200, description = "A page of events", body = crate::http::openapi::ListEnvelope))
)]
async fn list_events(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<EventParams>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let limit = page_limit(params.limit, params.per_page)?;
    let before = params
        .cursor
        .as_deref()
        .map(decode_cursor::<i64>)
        .transpose()?;
    let rows = queue::events::list(
        &state.pool,
        principal.workspace_id,
        params.event_type.as_deref(),
        before,
        limit + 1,
    )
    .await?;
    let (page, next) = split_page(rows, limit, |e| encode_cursor(&e.id));
    let ids_on_page: Vec<i64> = page.iter().map(|e| e.id).collect();
    let summaries =
        queue::events::delivery_summaries(&state.pool, principal.workspace_id, &ids_on_page)
            .await?;
    let views: Vec<Value> = page
        .into_iter()
        .map(|e| {
            let summary = summaries.get(&e.id);
            event_view(&e, summary)
        })
        .collect();
    Ok(axum::Json(list_envelope(&views, limit, next.as_deref(), None)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    summary = "Get an event with its delivery summary",
    params(("id" = String, Path, description = "The event (`evt_…`)'s id")),
    responses((status = 200, description = "The event", body = crate::http::openapi::DataEnvelope))
)]
async fn show_event(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    principal.require_read()?;
    let key = ids::decode(Kind::Event, &id).ok_or_else(|| ApiError::not_found("Event"))?;
    let record = queue::events::get(&state.pool, principal.workspace_id, key)
        .await?
        .ok_or_else(|| ApiError::not_found("Event"))?;
    let summaries =
        queue::events::delivery_summaries(&state.pool, principal.workspace_id, &[key]).await?;
    Ok(axum::Json(json!({ "data": event_view(&record, summaries.get(&key)) })).into_response())
}
