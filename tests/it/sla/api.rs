//! `/v1/sla-policies` and `/v1/calendars`: validation, order, updates, reapply, and the
//! ticket's `sla` object.

use serde_json::json;

use super::{Desk, instant};
use crate::support::TestApp;

#[tokio::test]
async fn policies_and_calendars_are_validated_ordered_and_versioned() {
    let app = TestApp::spawn().await;
    let desk = Desk::new(&app).await;
    let api = &desk.api;

    let (status, body) = api
        .post(
            "/calendars",
            json!({"name": "Nowhere", "timezone": "Mars/Base", "weekly": {"mon": [["17:00", "09:00"]], "sat": [["09:00", "12:00"], ["11:00", "13:00"]]}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields = &body["error"]["details"]["fields"];
    assert!(fields.to_string().contains("timezone"), "{body}");
    assert!(fields.to_string().contains("weekly.mon[0]"), "{body}");
    assert!(fields.to_string().contains("weekly.sat[1]"), "{body}");

    let (status, calendar) = api
        .post(
            "/calendars",
            json!({"name": "EMEA", "timezone": "Europe/Berlin",
                   "weekly": {"mon": [["09:00", "17:00"]], "tue": [["09:00", "12:00"], ["13:00", "17:00"]]},
                   "holidays": [{"date": "2026-12-25", "name": "Christmas"}]}),
        )
        .await;
    assert_eq!(status, 201, "{calendar}");
    let calendar_id = calendar["data"]["id"].as_str().expect("id").to_owned();
    assert!(calendar_id.starts_with("cal_"));

    let (status, body) = api
        .post(
            "/sla-policies",
            json!({"name": "Bad", "targets": [
                {"metric": "first_response", "priority": "urgent", "minutes": 0, "warn_before_minutes": 0},
                {"metric": "resolution", "priority": "urgent", "minutes": 5, "warn_before_minutes": 5}]}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields = body["error"]["details"]["fields"].to_string();
    assert!(fields.contains("targets[0].minutes"), "{body}");
    assert!(fields.contains("targets[1].warn_before_minutes"), "{body}");
    let (status, body) = api
        .post(
            "/sla-policies",
            json!({"name": "Bad", "targets": [{"metric": "first_reply", "priority": "urgent", "minutes": 5}]}),
        )
        .await;
    assert_eq!(status, 422, "unknown metric: {body}");

    let (status, enterprise) = api
        .post(
            "/sla-policies",
            json!({"name": "Enterprise", "position": 2, "calendar_id": calendar_id,
                   "match": {"all": [{"field": "tags", "op": "includes", "value": ["vip"]}]},
                   "targets": [{"metric": "first_response", "priority": "urgent", "minutes": 0.1,
                                "business_hours": true, "warn_before_minutes": 0.05}]}),
        )
        .await;
    assert_eq!(status, 201, "{enterprise}");
    let enterprise = &enterprise["data"];
    assert_eq!(
        enterprise["targets"][0]["minutes"], 0.1,
        "decimals stored as sent"
    );
    assert_eq!(enterprise["version"], 1);
    let (status, default) = api
        .post("/sla-policies", json!({"name": "Default", "position": 1}))
        .await;
    assert_eq!(status, 201, "{default}");
    let (_, list) = api.get("/sla-policies").await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["Default", "Enterprise"], "ordered by position");

    let id = enterprise["id"].as_str().expect("id");
    let (status, updated) = api
        .patch(
            &format!("/sla-policies/{id}"),
            json!({"description": "Gold"}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["data"]["version"], 2);
    assert_eq!(updated["data"]["calendar_id"], calendar_id.as_str());

    let (status, body) = api.delete(&format!("/calendars/{calendar_id}")).await;
    assert_eq!(status, 409, "a calendar in use is kept: {body}");
    let (status, body) = api
        .post(&format!("/sla-policies/{id}/reapply"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["recomputed"], 0);
    let (status, _) = api.delete(&format!("/sla-policies/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&format!("/sla-policies/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = api.delete(&format!("/calendars/{calendar_id}")).await;
    assert_eq!(status, 204);
    app.stop().await;
}

#[tokio::test]
async fn tickets_show_their_clocks_and_reapply_starts_them() {
    let app = TestApp::spawn().await;
    let desk = Desk::new(&app).await;
    let before = desk.ticket("Before any policy", "normal").await;
    assert!(before["sla"].is_null(), "no policy, no sla: {before}");

    let policy = desk
        .policy(json!([
            {"metric": "first_response", "priority": "normal", "minutes": 60, "warn_before_minutes": 10},
            {"metric": "resolution", "priority": "normal", "minutes": 480, "warn_before_minutes": 60},
        ]))
        .await;
    let ticket = desk.ticket("Printer", "normal").await;
    let sla = &ticket["sla"];
    assert_eq!(sla["policy_id"], policy["id"]);
    let created = instant(&ticket["created_at"]);
    let due = instant(&sla["first_response_due"]);
    assert!(
        (due - created - chrono::Duration::minutes(60))
            .num_seconds()
            .abs()
            <= 1,
        "{sla}"
    );
    assert!(sla["resolution_due"].is_string());
    assert!(sla["next_response_due"].is_null());
    assert_eq!(sla["at_risk"], false);
    assert_eq!(sla["breached"], json!([]));
    assert_eq!(sla["clocks"].as_array().map(Vec::len), Some(2));

    // Pending pauses resolution (the default pause statuses), not first response.
    let pending = desk.change(&ticket, json!({"status": "pending"})).await;
    assert!(pending["sla"]["resolution_due"].is_null(), "{pending}");
    assert!(pending["sla"]["first_response_due"].is_string());
    // Spam cancels every clock.
    let spam = desk.change(&ticket, json!({"status": "spam"})).await;
    assert!(
        spam["sla"]["clocks"]
            .as_array()
            .expect("clocks")
            .iter()
            .all(|c| c["state"] == "cancelled"),
        "{spam}"
    );

    // The ticket created before the policy gets its clocks on reapply.
    let id = policy["id"].as_str().expect("id");
    let (status, body) = desk
        .api
        .post(&format!("/sla-policies/{id}/reapply"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["recomputed"], 1, "the spam ticket is not open");
    let before = desk.show(&before).await;
    assert_eq!(before["sla"]["policy_id"], policy["id"], "{before}");
    app.stop().await;
}
