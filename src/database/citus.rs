//! The schema on Citus: which tables are reference tables (a copy on every node) and which are
//! distributed by `workspace_id`, all in one co-location group so a workspace's rows of every
//! table live on one shard. The tables are the migrations'; this only tells Citus where they go,
//! and it is idempotent (a table already placed is left alone). docs/scaling.md has the plan
//! and what does not run distributed yet.
//!
//! It must never create, alter or drop a table: the schema is the migrations', one schema on
//! plain PostgreSQL and on Citus alike.

use sqlx::{Connection as _, PgConnection};

/// Global tables, small and read by every tenant's requests (auth looks keys up by hash).
pub const REFERENCE_TABLES: &[&str] = &["workspace", "api_key"];

/// Tenant tables, distributed by `workspace_id`. Referenced tables come before the tables that
/// refer to them, as Citus places a foreign key's target first.
pub const DISTRIBUTED_TABLES: &[&str] = &[
    "endpoint",
    "endpoint_secret",
    "endpoint_queue",
    "event",
    "delivery",
    "delivery_finished",
    "delivery_attempt",
    "idempotency_key",
    "customer",
    "agent",
    "agent_group",
    "tag",
    "article",
    "ticket",
    "ticket_tag",
    "message",
    "ticket_activity",
    "sla_calendar",
    "sla_policy",
    "sla_clock",
];

/// Why the schema could not be distributed.
#[derive(Debug, thiserror::Error)]
pub enum CitusError {
    /// The database has no Citus extension.
    #[error(
        "the database has no Citus extension: run `CREATE EXTENSION citus` on the coordinator \
         and add the workers first (docs/scaling.md)"
    )]
    NotCitus,
    /// Citus refused to place a table.
    #[error("placing table {table} on Citus: {reason}")]
    Placing {
        /// The table.
        table: &'static str,
        /// What Citus said, with its detail and hint.
        reason: String,
    },
    /// A catalogue query failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Whether the database has the Citus extension.
pub async fn is_citus(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')")
        .fetch_one(conn)
        .await
}

/// Places every table not placed yet; returns how many it placed. One transaction: Citus
/// distributes a table only when no local table refers to it, so the foreign keys between
/// tenant tables are taken off, the tables placed, and the same keys put back (Citus then
/// keeps them on every shard); a failure leaves everything as it was.
pub async fn distribute(conn: &mut PgConnection) -> Result<usize, CitusError> {
    if !is_citus(conn).await? {
        return Err(CitusError::NotCitus);
    }
    let mut tx = conn.begin().await?;
    // DDL over shards that refer to reference tables must run on one connection per node.
    sqlx::query("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        .execute(&mut *tx)
        .await?;
    let between_tenants: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE contype = 'f' AND conrelid::regclass::text = ANY($1) \
           AND confrelid::regclass::text = ANY($1)",
    )
    .bind(DISTRIBUTED_TABLES)
    .fetch_all(&mut *tx)
    .await?;
    let mut pending = Vec::new();
    for &table in DISTRIBUTED_TABLES {
        if !is_placed(&mut tx, table, Placement::Distributed).await? {
            pending.push(table);
        }
    }
    if !pending.is_empty() {
        for (table, name, _) in &between_tenants {
            sqlx::query(&format!(r#"ALTER TABLE {table} DROP CONSTRAINT "{name}""#))
                .execute(&mut *tx)
                .await?;
        }
    }
    let mut placed = 0;
    for &table in REFERENCE_TABLES {
        if !is_placed(&mut tx, table, Placement::Reference).await? {
            sqlx::query("SELECT create_reference_table($1)")
                .bind(table)
                .execute(&mut *tx)
                .await
                .map_err(|error| refused(table, &error))?;
            placed += 1;
        }
    }
    let anchor = DISTRIBUTED_TABLES[0];
    for &table in &pending {
        let colocate_with = if table == anchor { "default" } else { anchor };
        sqlx::query("SELECT create_distributed_table($1, 'workspace_id', colocate_with => $2)")
            .bind(table)
            .bind(colocate_with)
            .execute(&mut *tx)
            .await
            .map_err(|error| refused(table, &error))?;
        placed += 1;
    }
    if !pending.is_empty() {
        for (table, name, definition) in &between_tenants {
            sqlx::query(&format!(
                r#"ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}"#
            ))
            .execute(&mut *tx)
            .await
            .map_err(|error| refused(table_name(table), &error))?;
        }
    }
    // Statements of one workspace run whole on its shard's worker, drawing ids there: the
    // id function goes to every node, and with it (its dependency) the sequence.
    sqlx::query(
        "SELECT create_distributed_function('deskhook_id()') \
         WHERE NOT EXISTS (SELECT 1 FROM pg_dist_object WHERE objid = 'deskhook_id()'::regprocedure)",
    )
    .execute(&mut *tx)
    .await
    .map_err(|error| refused("deskhook_id()", &error))?;
    tx.commit().await?;
    Ok(placed)
}

/// `table` as one of ours (for errors), or "a tenant table".
fn table_name(table: &str) -> &'static str {
    DISTRIBUTED_TABLES
        .iter()
        .find(|t| **t == table)
        .copied()
        .unwrap_or("a tenant table")
}

/// Citus's reasons are in the error's detail and hint as often as in its message.
fn refused(table: &'static str, error: &sqlx::Error) -> CitusError {
    let reason = match error {
        sqlx::Error::Database(db) => {
            let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
            [
                Some(db.message()),
                pg.and_then(|pg| pg.detail()),
                pg.and_then(|pg| pg.hint()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ")
        }
        other => other.to_string(),
    };
    CitusError::Placing { table, reason }
}

/// Where a table goes.
#[derive(Clone, Copy)]
enum Placement {
    Reference,
    Distributed,
}

/// Whether `table` is already where it goes. A table with a foreign key to a reference table
/// is in Citus's metadata too, as a "Citus local" table (not replicated, not distributed):
/// that one still has to be distributed.
async fn is_placed(
    conn: &mut PgConnection,
    table: &str,
    placement: Placement,
) -> Result<bool, sqlx::Error> {
    let condition = match placement {
        Placement::Reference => "partmethod = 'n' AND repmodel = 't'",
        Placement::Distributed => "partmethod = 'h'",
    };
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_partition \
                        WHERE logicalrelid = $1::regclass AND {condition})"
    ))
    .bind(table)
    .fetch_one(conn)
    .await
}

/// Whether the queue's tables are distributed (Citus): the dispatcher then claims one
/// workspace at a time, each statement on the workspace's shard. Read once when an instance
/// starts, so instances are restarted after `deskhook migrate --distribute`.
pub async fn queue_is_distributed(pool: &sqlx::PgPool) -> bool {
    let distributed = sqlx::query_scalar::<_, bool>(
        "SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .unwrap_or(false);
    distributed
        && sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
                            WHERE logicalrelid = 'delivery'::regclass)",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(false)
}
