//! The dispatcher's claim statement, timed by pg_stat_statements: its mean execution time over
//! a run is what shows whether a claim's cost follows due work or the number of endpoints.

use sqlx::PgPool;

/// A fragment only the fused settle-and-claim statement (`queue::cycle`) contains.
const CLAIM_STATEMENT: &str = "FROM settled GROUP BY endpoint_id";

/// The claim statement's cumulative figures at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTime {
    /// Total execution time, in milliseconds.
    pub total_ms: f64,
    /// Executions.
    pub calls: i64,
}

/// Reads the claim statement's figures in the current database; `None` without
/// pg_stat_statements.
pub async fn read(pool: &PgPool) -> Option<ClaimTime> {
    // The fragment is bound, not inlined: this query's own text must not match it.
    let (total_ms, calls): (Option<f64>, Option<i64>) = sqlx::query_as(
        "SELECT sum(s.total_exec_time)::float8, sum(s.calls)::bigint FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid \
         WHERE d.datname = current_database() AND strpos(s.query, $1) > 0",
    )
    .bind(CLAIM_STATEMENT)
    .fetch_one(pool)
    .await
    .ok()?;
    Some(ClaimTime {
        total_ms: total_ms.unwrap_or(0.0),
        calls: calls.unwrap_or(0),
    })
}

/// The mean execution time of the claims made between two readings, in milliseconds; `None`
/// when either reading is missing or no claim ran.
pub fn mean_ms(before: Option<ClaimTime>, after: Option<ClaimTime>) -> Option<f64> {
    let (before, after) = (before?, after?);
    let calls = after.calls - before.calls;
    (calls > 0).then(|| (after.total_ms - before.total_ms) / calls as f64)
}
