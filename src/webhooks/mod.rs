//! Webhook endpoints (subscriptions): their settings, event filters and signing secrets.
//!
//! Owns the `endpoint` and `endpoint_secret` tables. Secrets are generated here, shown once
//! (at creation and through the admin-only reveal), and stored encrypted with the operator key
//! ([`crate::secret_box`]). Validation is pure and lives here, not in the handlers. Nothing here
//! sends a request or writes the delivery queue's rows itself: on create, disable, enable and
//! delete it calls the queue (`queue::claim`) in the same transaction to register, park, unpark
//! or end the endpoint's deliveries. After a change commits it tells this instance what the
//! change means for it: the dispatcher's cached send settings ([`cache`]) are forgotten, and an
//! enabled endpoint's backlog wakes the dispatcher.

pub mod cache;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{PgExecutor, PgPool};
use url::Url;

pub use cache::{Cached, TargetCache};

use crate::{
    events,
    ids::{self, Kind},
    queue::Wakeup,
    secret_box::{SealedFor, SecretBox, SecretBoxError},
    signing::SigningSecret,
    ssrf::AddressGuard,
};

/// What a committed endpoint change must tell this instance: its dispatcher's cached send
/// settings are stale, and an enabled endpoint may have a backlog to claim. (Other instances
/// read the change within [`cache::TARGET_TTL`] and their next poll.)
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    /// The dispatcher's cache of send settings.
    pub targets: &'a TargetCache,
    /// The dispatcher's wake-up.
    pub wakeup: &'a Wakeup,
}

impl Instance<'_> {
    fn endpoint_changed(self, enabled: bool) {
        self.targets.invalidate();
        if enabled {
            self.wakeup.notify_local();
        }
    }
}

/// What an endpoint operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such endpoint in this workspace.
    #[error("webhook endpoint not found")]
    NotFound,
    /// Invalid settings: field → reason.
    #[error("invalid webhook settings: {0:?}")]
    Invalid(BTreeMap<String, String>),
    /// A stored secret cannot be opened with the configured operator key.
    #[error(transparent)]
    Secret(#[from] SecretBoxError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How deliveries to an endpoint are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Any order, as fast as possible.
    None,
    /// Strictly in event order per ticket, one in flight per ticket.
    PerTicket,
}

impl Ordering {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::PerTicket => "per_ticket",
        }
    }
}

/// An endpoint as the API shows it (never with its secret).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// `wh_…`
    pub id: String,
    /// The URL deliveries are POSTed to.
    pub url: String,
    /// Free text.
    pub description: Option<String>,
    /// Subscribed types, or `["*"]`.
    pub events: Vec<String>,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it is disabled: `manual`, `gone_410` or `consecutive_failures`.
    pub disabled_reason: Option<String>,
    /// `none` or `per_ticket`.
    pub ordering: Ordering,
    /// Concurrent attempts at most.
    pub max_in_flight: i32,
    /// Requests per second at most (per instance), if limited.
    pub rate_limit_per_second: Option<i32>,
    /// Extra request headers. Their values are receiver credentials: they are sealed at rest,
    /// and a view holds them only after [`Endpoint::reveal_headers`] (admin keys); otherwise
    /// each name has a null value.
    pub headers: Map<String, Value>,
    /// Also send the bare-hex HMAC of the body in this header (seed 000 receivers).
    pub legacy_signature_header: Option<String>,
    /// Whether internal notes are delivered.
    pub include_internal_notes: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    #[serde(skip)]
    /// The database key.
    pub key: i64,
    #[serde(skip)]
    /// The sealed header values, if any.
    sealed_headers: Option<Vec<u8>>,
}

impl Endpoint {
    /// Fills in the header values (for admin keys).
    pub fn reveal_headers(&mut self, secret_box: &SecretBox) -> Result<(), SecretBoxError> {
        if let Some(sealed) = &self.sealed_headers {
            self.headers = open_headers(secret_box, self.key, sealed)?;
        }
        Ok(())
    }

    /// Blanks the header values, keeping their names (for keys below admin). Rows written
    /// before values were sealed hold them in clear until the service seals them at start.
    pub fn redact_headers(&mut self) {
        for value in self.headers.values_mut() {
            *value = Value::Null;
        }
    }
}

/// What is stored of custom headers: the names, each with a null value, in clear, and the
/// whole object sealed (`None` when there are none).
fn seal_headers(
    secret_box: &SecretBox,
    endpoint_id: i64,
    headers: &Map<String, Value>,
) -> (sqlx::types::Json<Map<String, Value>>, Option<Vec<u8>>) {
    if headers.is_empty() {
        return (header_names(headers), None);
    }
    let sealed = secret_box.seal(
        &Value::Object(headers.clone()).to_string(),
        &SealedFor::endpoint_headers(endpoint_id),
    );
    (header_names(headers), Some(sealed))
}

/// The header names as stored in clear, each with a null value.
fn header_names(headers: &Map<String, Value>) -> sqlx::types::Json<Map<String, Value>> {
    sqlx::types::Json(
        headers
            .keys()
            .map(|name| (name.clone(), Value::Null))
            .collect(),
    )
}

fn open_headers(
    secret_box: &SecretBox,
    endpoint_id: i64,
    sealed: &[u8],
) -> Result<Map<String, Value>, SecretBoxError> {
    serde_json::from_str(&secret_box.open(sealed, &SealedFor::endpoint_headers(endpoint_id))?)
        .map_err(|_| SecretBoxError::Damaged)
}

/// Seals the header values of rows written before they were sealed at rest (migration
/// `20261204000100`); run by every instance at start, idempotent and safe to race. Returns how
/// many endpoints it sealed.
pub async fn seal_clear_headers(pool: &PgPool, secret_box: &SecretBox) -> Result<u64, sqlx::Error> {
    let mut sealed = 0;
    loop {
        let rows: Vec<(i64, sqlx::types::Json<Map<String, Value>>)> = sqlx::query_as(
            "SELECT id, headers FROM endpoint \
             WHERE headers_sealed IS NULL AND headers <> '{}'::jsonb \
               AND EXISTS (SELECT 1 FROM jsonb_each(headers) h WHERE h.value <> 'null'::jsonb) \
             ORDER BY id LIMIT 500",
        )
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(sealed);
        }
        for (id, clear) in rows {
            let (names, values) = seal_headers(secret_box, id, &clear.0);
            let done = sqlx::query(
                "UPDATE endpoint SET headers = $2, headers_sealed = $3 \
                 WHERE id = $1 AND headers_sealed IS NULL AND headers = $4",
            )
            .bind(id)
            .bind(names)
            .bind(values)
            .bind(&clear)
            .execute(pool)
            .await?;
            sealed += done.rows_affected();
        }
    }
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: i64,
    url: String,
    description: Option<String>,
    event_types: Vec<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    ordering: String,
    max_in_flight: i32,
    rate_limit_per_second: Option<i32>,
    headers: sqlx::types::Json<Map<String, Value>>,
    headers_sealed: Option<Vec<u8>>,
    legacy_signature_header: Option<String>,
    include_internal_notes: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(row: EndpointRow) -> Self {
        Self {
            id: ids::encode(Kind::Webhook, row.id),
            key: row.id,
            url: row.url,
            description: row.description,
            events: row.event_types,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            ordering: if row.ordering == "per_ticket" {
                Ordering::PerTicket
            } else {
                Ordering::None
            },
            max_in_flight: row.max_in_flight,
            rate_limit_per_second: row.rate_limit_per_second,
            headers: row.headers.0,
            sealed_headers: row.headers_sealed,
            legacy_signature_header: row.legacy_signature_header,
            include_internal_notes: row.include_internal_notes,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const COLUMNS: &str = "id, url, description, event_types, enabled, disabled_reason, ordering, \
    max_in_flight, rate_limit_per_second, headers, headers_sealed, legacy_signature_header, \
    include_internal_notes, created_at, updated_at";

/// Settings of a new endpoint or a change to one (`None` = unchanged / default).
#[derive(Debug, Clone, Default)]
pub struct EndpointSettings {
    /// Target URL (required on create).
    pub url: Option<String>,
    /// Description; `Some(None)` clears it.
    pub description: Option<Option<String>>,
    /// Subscribed types.
    pub events: Option<Vec<String>>,
    /// Enabled.
    pub enabled: Option<bool>,
    /// Ordering.
    pub ordering: Option<Ordering>,
    /// In-flight cap.
    pub max_in_flight: Option<i32>,
    /// Rate limit; `Some(None)` removes it.
    pub rate_limit_per_second: Option<Option<i32>>,
    /// Custom headers (replaces all).
    pub headers: Option<Map<String, Value>>,
    /// Legacy header name; `Some(None)` removes it.
    pub legacy_signature_header: Option<Option<String>>,
    /// Deliver internal notes.
    pub include_internal_notes: Option<bool>,
}

/// Headers Deskhook sets itself; custom headers may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "user-agent",
    "host",
    "connection",
    "transfer-encoding",
];

impl EndpointSettings {
    /// Checks every given field; on create, `url` is required.
    pub fn validate(&self, creating: bool, guard: &AddressGuard) -> Result<(), WebhookError> {
        let mut errors = BTreeMap::new();
        match &self.url {
            Some(url) => {
                if let Err(reason) = validate_url(url, guard) {
                    errors.insert("url".to_owned(), reason);
                }
            }
            None if creating => {
                errors.insert("url".to_owned(), "is required".to_owned());
            }
            None => {}
        }
        if let Some(types) = &self.events {
            if types.is_empty() {
                errors.insert(
                    "events".to_owned(),
                    "must list at least one event type, or [\"*\"]".to_owned(),
                );
            } else if let Some(bad) = types
                .iter()
                .find(|t| t.as_str() != "*" && !events::is_subscribable(t))
            {
                errors.insert(
                    "events".to_owned(),
                    format!(
                        "unknown event type `{bad}`; expected \"*\" or some of: {}",
                        events::EVENT_TYPES
                            .iter()
                            .filter(|t| **t != events::TEST_EVENT)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        if let Some(max) = self.max_in_flight
            && !(1..=1000).contains(&max)
        {
            errors.insert(
                "max_in_flight".to_owned(),
                "must be between 1 and 1000".to_owned(),
            );
        }
        if let Some(Some(rate)) = self.rate_limit_per_second
            && rate < 1
        {
            errors.insert(
                "rate_limit_per_second".to_owned(),
                "must be a positive number or null".to_owned(),
            );
        }
        let legacy = self
            .legacy_signature_header
            .as_ref()
            .and_then(|h| h.as_deref())
            .map(str::to_ascii_lowercase);
        if let Some(name) = &legacy
            && (reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || RESERVED_HEADERS.contains(&name.as_str())
                || name.starts_with("deskhook-"))
        {
            errors.insert(
                "legacy_signature_header".to_owned(),
                "must be a valid header name that Deskhook does not set itself".to_owned(),
            );
        }
        if let Some(headers) = &self.headers {
            for (name, value) in headers {
                let lower = name.to_ascii_lowercase();
                let reason = if RESERVED_HEADERS.contains(&lower.as_str())
                    || lower.starts_with("deskhook-")
                    || legacy.as_deref() == Some(lower.as_str())
                {
                    Some("Deskhook sets this header itself; it cannot be overridden")
                } else if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    Some("is not a valid header name")
                } else if value
                    .as_str()
                    .is_none_or(|v| reqwest::header::HeaderValue::from_str(v).is_err())
                {
                    Some("the value must be a string valid in an HTTP header")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    errors.insert(format!("headers.{name}"), reason.to_owned());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(WebhookError::Invalid(errors))
        }
    }
}

fn validate_url(text: &str, guard: &AddressGuard) -> Result<(), String> {
    let url = Url::parse(text).map_err(|error| format!("is not a valid URL ({error})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".to_owned());
    }
    let host = url.host().ok_or("must have a host")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use custom headers".to_owned());
    }
    let literal = match host {
        url::Host::Ipv4(ip) => Some(std::net::IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(std::net::IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    if let Some(ip) = literal {
        guard.check(ip).map_err(|refused| refused.to_string())?;
    }
    Ok(())
}

/// Creates an endpoint with a fresh secret; returns it and the secret (shown once).
pub async fn create(
    pool: &PgPool,
    secret_box: &SecretBox,
    workspace_id: i64,
    settings: &EndpointSettings,
) -> Result<(Endpoint, SigningSecret), WebhookError> {
    let secret = SigningSecret::generate();
    let headers = settings.headers.clone().unwrap_or_default();
    // Sealed values are bound to the endpoint's id, which the insert draws: names go in
    // first, the sealed values once the id is known.
    let mut tx = pool.begin().await?;
    let row: EndpointRow = sqlx::query_as(&format!(
        "INSERT INTO endpoint (workspace_id, url, description, event_types, enabled, disabled_reason, \
             disabled_at, ordering, max_in_flight, rate_limit_per_second, headers, \
             legacy_signature_header, include_internal_notes) \
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $5 THEN NULL ELSE 'manual' END, \
                 CASE WHEN $5 THEN NULL ELSE now() END, $6, $7, $8, $9, $10, $11) \
         RETURNING {COLUMNS}"
    ))
    .bind(workspace_id)
    .bind(settings.url.as_deref().unwrap_or_default())
    .bind(settings.description.clone().flatten())
    .bind(settings.events.clone().unwrap_or_else(|| vec!["*".to_owned()]))
    .bind(settings.enabled.unwrap_or(true))
    .bind(settings.ordering.unwrap_or(Ordering::None).as_str())
    .bind(settings.max_in_flight.unwrap_or(8))
    .bind(settings.rate_limit_per_second.flatten())
    .bind(header_names(&headers))
    .bind(settings.legacy_signature_header.clone().flatten())
    .bind(settings.include_internal_notes.unwrap_or(false))
    .fetch_one(&mut *tx)
    .await?;
    let row = if headers.is_empty() {
        row
    } else {
        let (_, sealed) = seal_headers(secret_box, row.id, &headers);
        sqlx::query_as(&format!(
            "UPDATE endpoint SET headers_sealed = $2 WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(row.id)
        .bind(sealed)
        .fetch_one(&mut *tx)
        .await?
    };
    sqlx::query(
        "INSERT INTO endpoint_secret (workspace_id, endpoint_id, ciphertext) VALUES ($3, $1, $2)",
    )
    .bind(row.id)
    .bind(secret_box.seal(secret.expose(), &SealedFor::endpoint_secret(row.id)))
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    crate::queue::claim::register(&mut tx, workspace_id, row.id).await?;
    tx.commit().await?;
    Ok((row.into(), secret))
}

/// A page of the workspace's endpoints after `after` (by id), and the total.
pub async fn list(
    pool: &PgPool,
    workspace_id: i64,
    after: Option<i64>,
    limit: i64,
) -> Result<(Vec<Endpoint>, i64), WebhookError> {
    let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM endpoint WHERE workspace_id = $1 AND deleted_at IS NULL \
           AND id > coalesce($2, 0) ORDER BY id LIMIT $3"
    ))
    .bind(workspace_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM endpoint WHERE workspace_id = $1 AND deleted_at IS NULL LIMIT 10001) t",
    )
    .bind(workspace_id)
    .fetch_one(pool)
    .await?;
    Ok((rows.into_iter().map(Into::into).collect(), total))
}

/// One endpoint of the workspace.
pub async fn get(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    key: i64,
) -> Result<Endpoint, WebhookError> {
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM endpoint WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"
    ))
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    row.map(Into::into).ok_or(WebhookError::NotFound)
}

/// Applies a change. Disabling by hand records `manual`; enabling clears the reason and the
/// failure streak.
pub async fn update(
    pool: &PgPool,
    secret_box: &SecretBox,
    instance: Instance<'_>,
    workspace_id: i64,
    key: i64,
    settings: &EndpointSettings,
) -> Result<Endpoint, WebhookError> {
    let (header_names, sealed_headers) = match &settings.headers {
        Some(headers) => {
            let (names, sealed) = seal_headers(secret_box, key, headers);
            (Some(names), sealed)
        }
        None => (None, None),
    };
    let mut tx = pool.begin().await?;
    // The state before the change, locked: parking follows the transition it makes.
    let before: Option<(bool, String)> = sqlx::query_as(
        "SELECT enabled, ordering FROM endpoint \
         WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((was_enabled, was_ordering)) = before else {
        return Err(WebhookError::NotFound);
    };
    let row: Option<EndpointRow> = sqlx::query_as(&format!(
        "UPDATE endpoint SET \
           url = coalesce($3, url), \
           description = CASE WHEN $4 THEN $5 ELSE description END, \
           event_types = coalesce($6, event_types), \
           enabled = coalesce($7, enabled), \
           disabled_reason = CASE WHEN $7 IS NULL THEN disabled_reason \
                                  WHEN $7 THEN NULL \
                                  WHEN enabled THEN 'manual' ELSE disabled_reason END, \
           disabled_at = CASE WHEN $7 IS NULL THEN disabled_at WHEN $7 THEN NULL \
                              WHEN enabled THEN $17 ELSE disabled_at END, \
           consecutive_dead = CASE WHEN $7 THEN 0 ELSE consecutive_dead END, \
           ordering = coalesce($8, ordering), \
           max_in_flight = coalesce($9, max_in_flight), \
           rate_limit_per_second = CASE WHEN $10 THEN $11 ELSE rate_limit_per_second END, \
           headers = coalesce($12, headers), \
           headers_sealed = CASE WHEN $12 IS NULL THEN headers_sealed ELSE $16 END, \
           legacy_signature_header = CASE WHEN $13 THEN $14 ELSE legacy_signature_header END, \
           include_internal_notes = coalesce($15, include_internal_notes), \
           updated_at = now() \
         WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL \
         RETURNING {COLUMNS}"
    ))
    .bind(workspace_id)
    .bind(key)
    .bind(settings.url.as_deref())
    .bind(settings.description.is_some())
    .bind(settings.description.clone().flatten())
    .bind(settings.events.clone())
    .bind(settings.enabled)
    .bind(settings.ordering.map(Ordering::as_str))
    .bind(settings.max_in_flight)
    .bind(settings.rate_limit_per_second.is_some())
    .bind(settings.rate_limit_per_second.flatten())
    .bind(header_names)
    .bind(settings.legacy_signature_header.is_some())
    .bind(settings.legacy_signature_header.clone().flatten())
    .bind(settings.include_internal_notes)
    .bind(sealed_headers)
    // The time from here, not now(): Citus evaluates no stable function inside a CASE.
    .bind(Utc::now())
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or(WebhookError::NotFound)?;
    // Waiting rows of a disabled endpoint are parked (a claim never reads them) and come back
    // when it is enabled again.
    match (was_enabled, row.enabled) {
        (true, false) => {
            crate::queue::claim::park(&mut tx, workspace_id, key).await?;
        }
        (false, true) => {
            crate::queue::claim::unpark(&mut tx, workspace_id, key).await?;
        }
        _ => {}
    }
    // The backlog follows an ordering change, so FIFO holds from the switch on (review L13).
    if row.ordering != was_ordering {
        let per_ticket = row.ordering == Ordering::PerTicket.as_str();
        crate::queue::claim::reorder(&mut tx, workspace_id, key, per_ticket).await?;
    }
    tx.commit().await?;
    instance.endpoint_changed(row.enabled);
    Ok(row.into())
}

/// Deletes an endpoint (soft); its waiting and in-flight deliveries end dead, with the
/// reason in their attempt log.
pub async fn delete(
    pool: &PgPool,
    instance: Instance<'_>,
    workspace_id: i64,
    key: i64,
) -> Result<(), WebhookError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query(
        "UPDATE endpoint SET deleted_at = now(), enabled = false \
         WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(workspace_id)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    if deleted.rows_affected() == 0 {
        return Err(WebhookError::NotFound);
    }
    crate::queue::claim::end_deleted(&mut tx, workspace_id, key).await?;
    tx.commit().await?;
    instance.endpoint_changed(false);
    Ok(())
}

/// The current secret and the expiry times of rotated-out secrets still valid.
pub async fn reveal_secret(
    pool: &PgPool,
    secret_box: &SecretBox,
    workspace_id: i64,
    key: i64,
) -> Result<(SigningSecret, Vec<DateTime<Utc>>), WebhookError> {
    get(pool, workspace_id, key).await?;
    let rows: Vec<(i64, Vec<u8>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT id, ciphertext, expires_at FROM endpoint_secret \
         WHERE endpoint_id = $1 AND workspace_id = $2 \
           AND (expires_at IS NULL OR expires_at > now()) ORDER BY id DESC",
    )
    .bind(key)
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    let mut current = None;
    let mut previous = Vec::new();
    for (id, ciphertext, expires_at) in rows {
        match expires_at {
            None if current.is_none() => {
                let text = secret_box.open(&ciphertext, &SealedFor::endpoint_secret(key))?;
                reseal_if_stale(pool, secret_box, workspace_id, key, id, &ciphertext, &text).await;
                current = SigningSecret::parse(&text).ok();
            }
            Some(at) => previous.push(at),
            None => {}
        }
    }
    let current = current.ok_or(WebhookError::NotFound)?;
    Ok((current, previous))
}

/// Rotated-out secrets that keep signing at most, per endpoint (as Svix keeps): a rotation
/// beyond that retires the oldest at once.
pub const MAX_PREVIOUS_SECRETS: i64 = 5;

/// Replaces the current secret; the old one keeps signing until `expire_in` from now.
pub async fn rotate_secret(
    pool: &PgPool,
    secret_box: &SecretBox,
    instance: Instance<'_>,
    workspace_id: i64,
    key: i64,
    expire_in: std::time::Duration,
) -> Result<SigningSecret, WebhookError> {
    let mut tx = pool.begin().await?;
    get(&mut *tx, workspace_id, key).await?;
    sqlx::query(
        "UPDATE endpoint_secret SET expires_at = now() + make_interval(secs => $2) \
         WHERE endpoint_id = $1 AND expires_at IS NULL",
    )
    .bind(key)
    .bind(expire_in.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    // Every live secret signs every delivery: keep the newest few rotated-out ones and drop
    // the expired, so rotating in a loop cannot multiply the work of each send.
    sqlx::query(
        "DELETE FROM endpoint_secret \
         WHERE endpoint_id = $1 AND expires_at IS NOT NULL \
           AND (expires_at <= now() \
                OR id NOT IN (SELECT id FROM endpoint_secret \
                              WHERE endpoint_id = $1 AND expires_at > now() \
                              ORDER BY id DESC LIMIT $2))",
    )
    .bind(key)
    .bind(MAX_PREVIOUS_SECRETS)
    .execute(&mut *tx)
    .await?;
    let secret = SigningSecret::generate();
    sqlx::query(
        "INSERT INTO endpoint_secret (workspace_id, endpoint_id, ciphertext) VALUES ($3, $1, $2)",
    )
    .bind(key)
    .bind(secret_box.seal(secret.expose(), &SealedFor::endpoint_secret(key)))
    .bind(workspace_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE endpoint SET updated_at = now() WHERE id = $1")
        .bind(key)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    instance.endpoint_changed(false);
    Ok(secret)
}

/// What the dispatcher needs to send to an endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where to POST.
    pub url: Url,
    /// Live secrets, newest first.
    pub secrets: Vec<SigningSecret>,
    /// Custom headers.
    pub headers: Vec<(String, String)>,
    /// The legacy signature header, if any.
    pub legacy_signature_header: Option<String>,
    /// Requests per second at most, if limited.
    pub rate_limit_per_second: Option<i32>,
    /// Concurrent requests at most.
    pub max_in_flight: i32,
    /// Disabled endpoints are sent nothing more, not even what was claimed before.
    pub enabled: bool,
}

/// Re-seals a secret a previous operator key opened under the current one, so the previous
/// key can be retired. Best effort: a failure leaves it readable as it was, to retry next read.
async fn reseal_if_stale(
    pool: &PgPool,
    secret_box: &SecretBox,
    workspace_id: i64,
    endpoint_id: i64,
    id: i64,
    ciphertext: &[u8],
    plain: &str,
) {
    if secret_box.is_current(ciphertext) {
        return;
    }
    let resealed = sqlx::query(
        "UPDATE endpoint_secret SET ciphertext = $2 \
             WHERE id = $1 AND workspace_id = $4 AND ciphertext = $3",
    )
    .bind(id)
    .bind(secret_box.seal(plain, &SealedFor::endpoint_secret(endpoint_id)))
    .bind(ciphertext)
    .bind(workspace_id)
    .execute(pool)
    .await;
    if let Err(error) = resealed {
        tracing::warn!(error = %error, "re-sealing a secret under the current key failed; it stays readable with the previous key");
    }
}

/// Re-seals header values a previous operator key opened, like [`reseal_if_stale`].
async fn reseal_headers(
    pool: &PgPool,
    secret_box: &SecretBox,
    workspace_id: i64,
    id: i64,
    sealed: &[u8],
    headers: &Map<String, Value>,
) {
    let (_, resealed) = seal_headers(secret_box, id, headers);
    let result = sqlx::query(
        "UPDATE endpoint SET headers_sealed = $2 \
         WHERE id = $1 AND workspace_id = $4 AND headers_sealed = $3",
    )
    .bind(id)
    .bind(resealed)
    .bind(sealed)
    .bind(workspace_id)
    .execute(pool)
    .await;
    if let Err(error) = result {
        tracing::warn!(error = %error, "re-sealing header values under the current key failed; they stay readable with the previous key");
    }
}

/// Checks that the key ring opens the newest stored secret, so an instance started with the
/// wrong `DESKHOOK_SECRET_KEY` stops at once instead of failing every delivery. Nothing to
/// check (no secret yet, or no schema yet) is fine.
pub async fn check_secret_key(pool: &PgPool, secret_box: &SecretBox) -> Result<(), WebhookError> {
    let newest: Option<(i64, Vec<u8>)> = match sqlx::query_as(
        "SELECT endpoint_id, ciphertext FROM endpoint_secret ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    {
        Ok(newest) => newest,
        // 42P01: the table does not exist yet (migrations have not run).
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => None,
        Err(error) => return Err(error.into()),
    };
    match newest {
        Some((endpoint_id, ciphertext)) => secret_box
            .open(&ciphertext, &SealedFor::endpoint_secret(endpoint_id))
            .map(drop)
            .map_err(Into::into),
        None => Ok(()),
    }
}

/// Loads the send settings of `keys`, `(workspace_id, endpoint_id)` pairs (deleted or unknown endpoints
/// are absent). An endpoint whose secrets cannot be opened is answered with its own error: it never fails the others.
pub async fn targets(
    pool: &PgPool,
    secret_box: &SecretBox,
    keys: &[(i64, i64)],
) -> Result<HashMap<i64, Result<Target, SecretBoxError>>, WebhookError> {
    #[derive(sqlx::FromRow)]
    struct TargetRow {
        id: i64,
        workspace_id: i64,
        url: String,
        headers: sqlx::types::Json<Map<String, Value>>,
        headers_sealed: Option<Vec<u8>>,
        legacy_signature_header: Option<String>,
        rate_limit_per_second: Option<i32>,
        max_in_flight: i32,
        enabled: bool,
        secret_ids: Vec<i64>,
        secrets: Vec<Vec<u8>>,
    }
    let (workspaces, endpoints): (Vec<i64>, Vec<i64>) = keys.iter().copied().unzip();
    // Both keys as arrays: one index probe each on plain PostgreSQL, and on Citus a read of the
    // listed workspaces' shards only, each joined on its own shard.
    let rows: Vec<TargetRow> = sqlx::query_as(
        "SELECT e.id, e.workspace_id, e.url, e.headers, e.headers_sealed, \
                e.legacy_signature_header, e.rate_limit_per_second, \
                e.max_in_flight, e.enabled, s.secret_ids, s.secrets \
         FROM endpoint e CROSS JOIN LATERAL ( \
           SELECT coalesce(array_agg(id ORDER BY expires_at IS NULL DESC, id DESC), '{}') AS secret_ids, \
                  coalesce(array_agg(ciphertext ORDER BY expires_at IS NULL DESC, id DESC), '{}') AS secrets \
           FROM endpoint_secret \
           WHERE endpoint_id = e.id AND workspace_id = e.workspace_id \
             AND (expires_at IS NULL OR expires_at > now())) s \
         WHERE e.id = ANY($1) AND e.workspace_id = ANY($2) AND e.deleted_at IS NULL",
    )
    .bind(&endpoints)
    .bind(&workspaces)
    .fetch_all(pool)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let Ok(url) = Url::parse(&row.url) else {
            continue;
        };
        let mut secrets = Vec::with_capacity(row.secrets.len());
        let mut unreadable = None;
        for (id, ciphertext) in row.secret_ids.iter().zip(&row.secrets) {
            match secret_box.open(ciphertext, &SealedFor::endpoint_secret(row.id)) {
                Ok(text) => {
                    reseal_if_stale(
                        pool,
                        secret_box,
                        row.workspace_id,
                        row.id,
                        *id,
                        ciphertext,
                        &text,
                    )
                    .await;
                    secrets.extend(SigningSecret::parse(&text).ok());
                }
                Err(error) => {
                    unreadable = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = unreadable {
            out.insert(row.id, Err(error));
            continue;
        }
        if secrets.is_empty() {
            continue;
        }
        let headers = match &row.headers_sealed {
            None => row.headers.0,
            Some(sealed) => match open_headers(secret_box, row.id, sealed) {
                Ok(headers) => {
                    if !secret_box.is_current(sealed) {
                        reseal_headers(
                            pool,
                            secret_box,
                            row.workspace_id,
                            row.id,
                            sealed,
                            &headers,
                        )
                        .await;
                    }
                    headers
                }
                Err(error) => {
                    out.insert(row.id, Err(error));
                    continue;
                }
            },
        };
        let headers = headers
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
            .collect();
        out.insert(
            row.id,
            Ok(Target {
                url,
                secrets,
                headers,
                legacy_signature_header: row.legacy_signature_header,
                rate_limit_per_second: row.rate_limit_per_second,
                max_in_flight: row.max_in_flight,
                enabled: row.enabled,
            }),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use proptest::prelude::*;

    use super::*;
    use crate::ssrf::forbidden_class;

    proptest! {
        /// However an IPv4 literal is written in a URL (dotted, one decimal number, hex, octal,
        /// dotted octal, bracketed IPv6-mapped), the guard judges the address it means.
        #[test]
        fn every_spelling_of_an_address_literal_is_judged_as_the_address(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let [a, b, c, d] = v4.octets();
            let refused = forbidden_class(IpAddr::V4(v4)).is_some();
            for host in [
                v4.to_string(),
                raw.to_string(),
                format!("0x{raw:x}"),
                format!("0{raw:o}"),
                format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
                format!("0x{a:x}.{b}.0{c:o}.{d}"),
                format!("[::ffff:{v4}]"),
            ] {
                let url = format!("http://{host}:8080/hook");
                let judged = validate_url(&url, &AddressGuard::default());
                prop_assert_eq!(judged.is_err(), refused, "{} -> {:?}", url, judged);
            }
        }
    }
}
