//! The read side of events: recent events with a summary of their deliveries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// An event as the API lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRecord {
    /// Key.
    pub id: i64,
    /// Type.
    pub event_type: String,
    /// `api`, `ingest`, `sla` or `test`.
    pub source: String,
    /// The producer's id (ingest) or deadline key (SLA).
    pub external_id: Option<String>,
    /// The ticket it is about.
    pub ticket_key: Option<String>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// The raw data object (only when asked for).
    pub data: Option<String>,
}

/// A page of events, newest first, optionally of one type, before `before`.
pub async fn list(
    pool: &PgPool,
    workspace_id: i64,
    event_type: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EventRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_type, source, external_id, ticket_key, occurred_at, created_at, NULL::text AS data \
         FROM event WHERE workspace_id = $1 AND ($2::text IS NULL OR event_type = $2) \
           AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(workspace_id)
    .bind(event_type)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One event with its data.
pub async fn get(
    pool: &PgPool,
    workspace_id: i64,
    id: i64,
) -> Result<Option<EventRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_type, source, external_id, ticket_key, occurred_at, created_at, data \
         FROM event WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Delivery counts by status for each of `event_ids`.
pub async fn delivery_summaries(
    pool: &PgPool,
    workspace_id: i64,
    event_ids: &[i64],
) -> Result<HashMap<i64, HashMap<String, i64>>, sqlx::Error> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT event_id, status, count(*) FROM ( \
           SELECT event_id, CASE WHEN state = 1 THEN 'delivering' WHEN attempt = 0 THEN 'pending' \
                                 ELSE 'retrying' END AS status \
           FROM delivery WHERE workspace_id = $2 AND event_id = ANY($1) \
           UNION ALL \
           SELECT event_id, status FROM delivery_finished \
           WHERE workspace_id = $2 AND event_id = ANY($1)) x \
         GROUP BY event_id, status",
    )
    .bind(event_ids)
    .bind(workspace_id)
    .fetch_all(pool)
    .await?;
    let mut out: HashMap<i64, HashMap<String, i64>> = HashMap::new();
    for (event_id, status, count) in rows {
        out.entry(event_id).or_default().insert(status, count);
    }
    Ok(out)
}
