//! Keyset pagination: stable under equal timestamps and concurrent inserts, never skipping or
//! repeating; page numbers; the exact total; seed 001's timestamp cursor.

use std::collections::HashSet;

use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn pages_are_stable_when_timestamps_are_equal() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    for n in 0..23 {
        api.ticket(&format!("Ticket {n}"), &format!("c{n}@example.com"))
            .await;
    }
    // Give every ticket the same timestamps.
    sqlx::query(
        "UPDATE ticket SET created_at = '2026-01-01T00:00:00Z', updated_at = '2026-01-01T00:00:00Z' \
         WHERE workspace_id = $1",
    )
    .bind(api.workspace_id)
    .execute(&app.pool)
    .await
    .expect("equal timestamps");

    for order in [
        "sort=-updated_at",
        "order_by=created_at&order_dir=asc",
        "order_by=priority",
        "order_by=status&order_dir=asc",
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/tickets?{order}&limit=5&cursor={cursor}"),
                None => format!("/tickets?{order}&limit=5"),
            };
            let (status, page) = api.get(&path).await;
            assert_eq!(status, 200, "{order}: {page}");
            let total = page["meta"]["total"].as_i64();
            assert!(matches!(total, Some(23 | 24)), "{order}: total {total:?}");
            assert_eq!(page["meta"]["limit"], 5);
            for ticket in page["data"].as_array().expect("list") {
                seen.push(ticket["id"].as_str().expect("id").to_owned());
            }
            pages += 1;
            // A ticket created mid-walk sorts first (newest) or last but never disturbs the walk.
            if pages == 2 {
                api.ticket("Late arrival", "late@example.com").await;
                sqlx::query("UPDATE ticket SET created_at = '2026-01-01T00:00:00Z', updated_at = '2026-01-01T00:00:00Z' WHERE subject = 'Late arrival'")
                    .execute(&app.pool)
                    .await
                    .expect("equal timestamps");
            }
            match page["meta"]["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{order}: no repeats");
        assert!(
            seen.len() >= 23,
            "{order}: nothing skipped ({})",
            seen.len()
        );
        sqlx::query("DELETE FROM ticket WHERE subject = 'Late arrival'")
            .execute(&app.pool)
            .await
            .expect("cleanup");
    }

    // Page numbers (seed 002/003) walk the same order.
    let (_, first) = api
        .get("/tickets?per_page=10&page=1&order_by=created_at&order_dir=asc")
        .await;
    let (_, third) = api
        .get("/tickets?per_page=10&page=3&order_by=created_at&order_dir=asc")
        .await;
    assert_eq!(first["data"].as_array().expect("list").len(), 10);
    assert_eq!(third["data"].as_array().expect("list").len(), 3);
    let (status, _) = api.get("/tickets?limit=100&page=101").await;
    assert_eq!(status, 400, "page numbers stop at 10,000 rows deep");

    // A cursor made for one order is refused for another.
    let (_, page) = api.get("/tickets?limit=5").await;
    let cursor = page["meta"]["next_cursor"].as_str().expect("cursor");
    let (status, body) = api
        .get(&format!("/tickets?limit=5&sort=priority&cursor={cursor}"))
        .await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_seed_001_timestamp_cursor_starts_after_that_instant() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    for (n, day) in ["2025-01-14", "2025-01-15", "2025-01-16"]
        .iter()
        .enumerate()
    {
        let ticket = api.ticket(&format!("T{n}"), "a@example.com").await;
        sqlx::query("UPDATE ticket SET created_at = $1::date WHERE id = $2")
            .bind(*day)
            .bind(crate::support::key_of(
                deskhook::ids::Kind::Ticket,
                &ticket["id"],
            ))
            .execute(&app.pool)
            .await
            .expect("backdate");
    }
    let (status, page) = api
        .get("/tickets?limit=50&cursor=2025-01-15T00:00:00Z&order_by=created_at&order_dir=desc")
        .await;
    assert_eq!(status, 200, "{page}");
    let subjects: Vec<&str> = page["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["subject"].as_str().expect("subject"))
        .collect();
    assert_eq!(subjects, vec!["T0"]);
    let (_, customers) = api.get("/customers?limit=1").await;
    assert_eq!(customers["meta"]["total"], 1);
    assert!(customers["meta"]["next_cursor"].is_null());
    let (status, _) = api
        .post("/customers", json!({"email": "b@example.com"}))
        .await;
    assert_eq!(status, 201);
    let (_, customers) = api.get("/customers?limit=1").await;
    assert!(customers["meta"]["next_cursor"].is_string());
    app.stop().await;
}
