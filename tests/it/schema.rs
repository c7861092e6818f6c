//! The schema's history as an operator upgrading meets it: a migration that adds a column to
//! tables with rows fills it from what the rows already say.

use std::borrow::Cow;

use deskhook::database::MIGRATOR;
use deskhook_testkit::TestDatabase;
use sqlx::{Connection as _, PgConnection};

/// An empty database on the test server with every migration before `version` applied.
async fn database_before(version: i64) -> PgConnection {
    let db = TestDatabase::create_empty().await;
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    apply_before(&mut conn, version).await;
    conn
}

/// Applies every migration before `version` to the database behind `conn`.
pub async fn apply_before(conn: &mut PgConnection, version: i64) {
    let older = sqlx::migrate::Migrator {
        migrations: Cow::Owned(
            MIGRATOR
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    };
    older.run(conn).await.expect("older migrations");
}

#[tokio::test]
async fn upgrading_names_the_workspace_of_every_tag_secret_key_and_attempt() {
    let mut conn = database_before(20261204000600).await;
    sqlx::raw_sql(
        r"
INSERT INTO workspace (id, name) VALUES (1, 'one'), (2, 'two');
INSERT INTO api_key (id, workspace_id, prefix, key_hash, scopes)
  VALUES (10, 2, 'dk_live_', '\x01', '{admin}');
INSERT INTO idempotency_key (api_key_id, idem_key, request_hash, locked_until, expires_at)
  VALUES (10, 'k', '\x02', now(), now() + interval '1 day');
INSERT INTO endpoint (id, workspace_id, url) VALUES (20, 2, 'http://127.0.0.1:1/hook');
INSERT INTO endpoint_secret (endpoint_id, ciphertext) VALUES (20, '\x03');
INSERT INTO ticket (id, workspace_id, number, subject) VALUES (30, 2, 1, 'hello');
INSERT INTO tag (id, workspace_id, name) VALUES (40, 2, 'vip');
INSERT INTO ticket_tag (ticket_id, tag_id) VALUES (30, 40);
-- One attempt with its endpoint; one whose endpoint and delivery went with a deleted workspace.
INSERT INTO delivery_attempt (delivery_id, attempt, endpoint_id, started_at, duration_ms, outcome)
  VALUES (50, 1, 20, now(), 3, 'success'), (51, 1, 99, now(), 3, 'success');
",
    )
    .execute(&mut conn)
    .await
    .expect("rows of the older schema");

    MIGRATOR.run(&mut conn).await.expect("the upgrade");

    for table in [
        "ticket_tag",
        "endpoint_secret",
        "idempotency_key",
        "delivery_attempt",
    ] {
        let workspaces: Vec<i64> = sqlx::query_scalar(&format!("SELECT workspace_id FROM {table}"))
            .fetch_all(&mut conn)
            .await
            .expect("workspace ids");
        assert_eq!(workspaces, vec![2], "{table}'s rows name their workspace");
    }
    let null_allowed: bool = sqlx::query_scalar(
        "SELECT bool_or(is_nullable = 'YES') FROM information_schema.columns \
         WHERE column_name = 'workspace_id' \
           AND table_name IN ('ticket_tag', 'endpoint_secret', 'idempotency_key', 'delivery_attempt')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("columns");
    assert!(
        !null_allowed,
        "every writer must name the workspace from now on"
    );
}
