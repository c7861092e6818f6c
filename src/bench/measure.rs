//! What the benchmark reads besides its own clocks: CPU and memory of the service and of
//! PostgreSQL from `/proc`, and commits, statements and WAL from PostgreSQL's statistics.

use std::time::Duration;

use sqlx::PgPool;

/// Clock ticks per second for `/proc/<pid>/stat` (Linux reports 100 on every platform we run).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system) of a process and, optionally, its children, from `/proc`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime, stime are fields 14 and 15 of the stat line: indexes 11 and 12 after the name.
    (field(11) + field(12)) / TICKS_PER_SECOND
}

/// CPU seconds of a server and everything it forked: its own time, the time of children it
/// has already reaped (PostgreSQL backends that disconnected), and its live children's time.
pub fn cpu_seconds_tree(root: u32) -> f64 {
    let reaped = stat_fields(root).map_or(0.0, |f| {
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (field(13) + field(14)) / TICKS_PER_SECOND
    });
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return cpu_seconds(root) + reaped;
    };
    let children: f64 = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_fields(*pid).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok()))
                == Some(root)
        })
        .map(cpu_seconds)
        .sum();
    cpu_seconds(root) + reaped + children
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Peak resident memory of a process, in MiB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kb = line
                    .strip_prefix("VmHWM:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim();
                kb.parse::<f64>().ok()
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// PostgreSQL counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbCounters {
    /// Committed transactions in the database.
    pub commits: i64,
    /// Statements executed (pg_stat_statements), if the extension is there.
    pub statements: Option<i64>,
    /// WAL position in bytes.
    pub wal_bytes: i64,
}

/// Reads the counters of the current database.
pub async fn db_counters(pool: &PgPool) -> DbCounters {
    // Statistics are sent by backends with a delay; ask for a fresh snapshot.
    let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(pool)
        .await;
    let commits: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(0);
    let statements: Option<i64> = sqlx::query_scalar(
        "SELECT sum(calls)::bigint FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .ok()
    .flatten();
    let wal_bytes: i64 =
        sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(pool)
            .await
            .unwrap_or(0);
    DbCounters {
        commits,
        statements,
        wal_bytes,
    }
}

/// The `p`-th percentile (0–100) of sorted `values`.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median of `values`.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(100));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn this_process_has_cpu_and_memory() {
        let pid = std::process::id();
        assert!(peak_rss_mb(pid) > 0.0);
        assert!(cpu_seconds(pid) >= 0.0);
    }
}
