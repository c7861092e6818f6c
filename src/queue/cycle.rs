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

use sqlx::{PgPool, Row as _, postgres::PgRow};

use super::{
    Claimed,
    claim::{
        self, CLAIMED_COLUMNS, CONFINED_FAIR_WRITES, ENDPOINT_WALK, EndpointCursor, FAIR_CTES,
        FAIR_WRITES, GIVEN_WALK, WALK, confined,
    },
    settle::{
        RECORD_ATTEMPTS, RECORD_CTES, RECORD_FINISHED, SETTLE_CTES, Settled, Settlement, Verdict,
    },
};

/// What one turn did.
#[derive(Debug, Default)]
pub struct Turn {
    /// The settle's result.
    pub settled: Settled,
    /// What was claimed.
    pub claimed: Vec<Claimed>,
}

/// The statement's end: the claimed rows with their events, then one row with the settle's
/// (and, where `{RECORDS}` says so, the history rows to insert).
const TAIL: &str = "
SELECT {CLAIMED_COLUMNS},
       NULL::bigint AS applied, NULL::bigint[] AS disabled_ids, NULL::text[] AS disabled_reasons,
       NULL::text AS finished_rows, NULL::text AS attempt_rows
FROM claimed c
JOIN event e ON e.id = c.event_id AND e.workspace_id = c.workspace_id /*ws e*/
JOIN per_endpoint p ON p.endpoint_id = c.endpoint_id
JOIN room r ON r.endpoint_id = c.endpoint_id
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM settled),
       coalesce((SELECT array_agg(id) FROM endpoints WHERE NOT enabled AND disabled_at = now()), '{}'),
       coalesce((SELECT array_agg(disabled_reason) FROM endpoints
                 WHERE NOT enabled AND disabled_at = now()), '{}'),
       {RECORDS}
";

/// The history rows a statement returns rather than inserts.
const RETURNED_RECORDS: &str = "(SELECT json_agg(f)::text FROM finished_rows f),
       (SELECT json_agg(a)::text FROM attempt_rows a)";

fn tail(records: &str) -> String {
    TAIL.replace("{CLAIMED_COLUMNS}", CLAIMED_COLUMNS)
        .replace("{RECORDS}", records)
}

/// The turn over every workspace, its walk inside (plain PostgreSQL).
fn statement() -> &'static str {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STATEMENT.get_or_init(|| {
        format!(
            "WITH RECURSIVE {SETTLE_CTES}{ENDPOINT_WALK}{FAIR_CTES}{RECORD_CTES}{FAIR_WRITES}{}",
            tail("NULL, NULL")
        )
    })
}

/// The turn of one workspace on endpoints walked before: every table filtered by the
/// workspace, so on Citus it runs whole on the workspace's shard.
fn confined_statement() -> &'static str {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    STATEMENT.get_or_init(|| {
        confined(
            &format!(
                "WITH {SETTLE_CTES}{GIVEN_WALK}{FAIR_CTES}{CONFINED_FAIR_WRITES}{}",
                tail(RETURNED_RECORDS)
            ),
            "$18",
            "$20",
        )
    })
}

/// Settles `batch` and claims up to `wanted` due unordered deliveries, leased for
/// `lease_seconds` to `dispatcher` (a random id per dispatcher), walking endpoints after
/// `cursor` ([`claim::FIRST_ENDPOINT`] to start from the first).
pub async fn turn(
    pool: &PgPool,
    batch: &[Settlement],
    wanted: usize,
    lease_seconds: f64,
    cursor: EndpointCursor,
    dispatcher: i64,
) -> Result<Turn, sqlx::Error> {
    let args = TurnArgs {
        batch,
        wanted,
        lease_seconds,
        after: cursor.1,
        dispatcher,
    };
    let rows = args
        .bind(sqlx::query(statement()))
        .bind(0_i64)
        .bind(cursor.0)
        .bind(chrono::Utc::now())
        .bind(claim::lease_token())
        .fetch_all(pool)
        .await?;
    Ok(read_turn(&rows, batch)?.0)
}

/// [`turn`] for one workspace, the way Citus runs it: `batch` holds that workspace's
/// settlements only, and the walk over its endpoints (after endpoint `after`, `i64::MIN` to
/// start from the first) is a statement of its own. Also returns where the next walk of the
/// workspace starts: `None` once this one reached its last endpoint.
pub async fn turn_in(
    pool: &PgPool,
    workspace_id: i64,
    batch: &[Settlement],
    wanted: usize,
    lease_seconds: f64,
    after: i64,
    dispatcher: i64,
) -> Result<(Turn, Option<i64>), sqlx::Error> {
    debug_assert!(batch.iter().all(|s| s.workspace_id == workspace_id));
    let endpoints = if wanted > 0 {
        claim::walk_in(pool, workspace_id, after).await?
    } else {
        Vec::new()
    };
    let next = (endpoints.len() >= WALK)
        .then(|| endpoints.last().copied())
        .flatten();
    if batch.is_empty() && endpoints.is_empty() {
        return Ok((Turn::default(), next));
    }
    let args = TurnArgs {
        batch,
        wanted,
        lease_seconds,
        after,
        dispatcher,
    };
    // The claim and settle, then the history they return, in one transaction: a delivery
    // leaves the hot table only with its `delivery_finished` row.
    let mut tx = pool.begin().await?;
    let rows = args
        .bind(sqlx::query(confined_statement()))
        .bind(workspace_id)
        .bind(endpoints)
        .bind(chrono::Utc::now())
        .bind(claim::lease_token())
        .fetch_all(&mut *tx)
        .await?;
    let (turn, records) = read_turn(&rows, batch)?;
    if let Some(finished) = records.finished {
        sqlx::query(RECORD_FINISHED)
            .bind(finished)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(attempts) = records.attempts {
        sqlx::query(RECORD_ATTEMPTS)
            .bind(attempts)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((turn, next))
}

/// History rows a confined turn returned (JSON arrays), to insert in its transaction.
#[derive(Default)]
struct Records {
    finished: Option<String>,
    attempts: Option<String>,
}

/// The parameters both turns bind first, `$1`..`$17`.
struct TurnArgs<'a> {
    batch: &'a [Settlement],
    wanted: usize,
    lease_seconds: f64,
    after: i64,
    dispatcher: i64,
}

impl<'a> TurnArgs<'a> {
    fn bind(
        &self,
        query: sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'a, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let batch = self.batch;
        let now = chrono::Utc::now();
        query
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
            .bind(i64::try_from(self.wanted).unwrap_or(i64::MAX))
            .bind(self.lease_seconds)
            .bind(self.after)
            .bind(self.dispatcher)
            .bind(batch.iter().map(|s| s.attempt).collect::<Vec<_>>())
            .bind(batch.iter().map(|s| s.workspace_id).collect::<Vec<_>>())
    }
}

fn read_turn(rows: &[PgRow], batch: &[Settlement]) -> Result<(Turn, Records), sqlx::Error> {
    let mut turn = Turn::default();
    let mut records = Records::default();
    for row in rows {
        if let Some(applied) = row.try_get::<Option<i64>, _>("applied")? {
            records = Records {
                finished: row.try_get("finished_rows")?,
                attempts: row.try_get("attempt_rows")?,
            };
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
    Ok((turn, records))
}

/// Settles `batch` without claiming (shutdown, tests).
pub async fn settle(pool: &PgPool, batch: &[Settlement]) -> Result<Settled, sqlx::Error> {
    if batch.is_empty() {
        return Ok(Settled::default());
    }
    Ok(turn(pool, batch, 0, 0.0, claim::FIRST_ENDPOINT, 0)
        .await?
        .settled)
}

/// [`settle`] one workspace at a time, the way Citus runs it.
pub async fn settle_by_workspace(
    pool: &PgPool,
    batch: &[Settlement],
) -> Result<Settled, sqlx::Error> {
    let mut workspaces: Vec<i64> = batch.iter().map(|s| s.workspace_id).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    let mut total = Settled::default();
    for workspace_id in workspaces {
        let part: Vec<Settlement> = batch
            .iter()
            .filter(|s| s.workspace_id == workspace_id)
            .cloned()
            .collect();
        let (turn, _) = turn_in(pool, workspace_id, &part, 0, 0.0, i64::MIN, 0).await?;
        total.applied += turn.settled.applied;
        total.fenced += turn.settled.fenced;
        total.disabled.extend(turn.settled.disabled);
    }
    Ok(total)
}
