//! One dispatcher turn in one statement and one commit: settle the attempts that finished,
//! then claim what is due with the room they freed.
//!
//! Fusing the two is what lets `max_in_flight` bound concurrent requests rather than
//! throughput: a slot is busy from the claim until the settle commits, and with the settle
//! riding on the next claim the slot comes back in the same statement that reuses it. It also
//! halves the dispatcher's commits at low load (queue.md, "Fused settle and claim").
//!
//! The claim's CTEs see the statement's snapshot, in which the attempts being settled are
//! still in flight; they subtract what `settled` freed per endpoint (see `claim::FAIR_CTES`).

use sqlx::{PgPool, Row as _};

use super::{
    Claimed,
    claim::{CLAIMED_COLUMNS, FAIR_CTES},
    settle::{SETTLE_CTES, Settled, Settlement, Verdict},
};

/// What one turn did.
#[derive(Debug, Default)]
pub struct Turn {
    /// The settle's result.
    pub settled: Settled,
    /// What was claimed.
    pub claimed: Vec<Claimed>,
}

fn statement() -> &'static str {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STATEMENT.get_or_init(|| {
        format!(
            "WITH RECURSIVE {SETTLE_CTES}{FAIR_CTES}
SELECT {CLAIMED_COLUMNS},
       NULL::bigint AS applied, NULL::bigint[] AS disabled_ids, NULL::text[] AS disabled_reasons
FROM claimed c
JOIN event e ON e.id = c.event_id
JOIN per_endpoint p ON p.endpoint_id = c.endpoint_id
JOIN room r ON r.endpoint_id = c.endpoint_id
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM settled),
       coalesce((SELECT array_agg(id) FROM endpoints WHERE NOT enabled AND disabled_at = now()), '{{}}'),
       coalesce((SELECT array_agg(disabled_reason) FROM endpoints
                 WHERE NOT enabled AND disabled_at = now()), '{{}}')
"
        )
    })
}

/// Settles `batch` and claims up to `wanted` due unordered deliveries, leased for
/// `lease_seconds` to `dispatcher` (a random id per dispatcher), walking endpoints after
/// `cursor` (`i64::MIN` to start from the first).
pub async fn turn(
    pool: &PgPool,
    batch: &[Settlement],
    wanted: usize,
    lease_seconds: f64,
    cursor: i64,
    dispatcher: i64,
) -> Result<Turn, sqlx::Error> {
    let now = chrono::Utc::now();
    let rows = sqlx::query(statement())
        .bind(batch.iter().map(|s| s.id).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.lease_id).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.verdict.code()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|s| match s.verdict {
                    Verdict::Retry(at) => at,
                    _ => now,
                })
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|s| s.started_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.duration_ms).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.status_code).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.outcome).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.error.as_deref()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|s| s.response_body.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|s| s.endpoint_id).collect::<Vec<_>>())
        .bind(i64::try_from(wanted).unwrap_or(i64::MAX))
        .bind(lease_seconds)
        .bind(cursor)
        .bind(dispatcher)
        .bind(batch.iter().map(|s| s.attempt).collect::<Vec<_>>())
        .bind(batch.iter().map(|s| s.workspace_id).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
    let mut turn = Turn::default();
    for row in &rows {
        if let Some(applied) = row.try_get::<Option<i64>, _>("applied")? {
            let applied = u64::try_from(applied).unwrap_or_default();
            let ids: Vec<i64> = row.try_get("disabled_ids")?;
            let reasons: Vec<String> = row.try_get("disabled_reasons")?;
            turn.settled = Settled {
                applied,
                fenced: batch.len() as u64 - applied.min(batch.len() as u64),
                disabled: ids.into_iter().zip(reasons).collect(),
            };
        } else {
            turn.claimed.push(Claimed::from_row(row)?);
        }
    }
    Ok(turn)
}

/// Settles `batch` without claiming (shutdown, tests).
pub async fn settle(pool: &PgPool, batch: &[Settlement]) -> Result<Settled, sqlx::Error> {
    if batch.is_empty() {
        return Ok(Settled::default());
    }
    Ok(turn(pool, batch, 0, 0.0, i64::MIN, 0).await?.settled)
}
