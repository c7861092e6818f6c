//! Each seed API's documented example requests, translated to this API's paths and ids.

use deskhook::{auth::Scope, ids::Kind};
use reqwest::Method;
use serde_json::json;

use crate::support::{Api, TestApp, key_of};

#[tokio::test]
async fn seed_000_create_and_list() {
    let app = TestApp::spawn().await;
    let api = app.api("cherryrise").await;
    let (status, created) = api
        .post(
            "/tickets",
            json!({
                "subject": "My first ticket",
                "requester": {"email": "jane@example.com", "name": "Jane"},
                "message": "Hello, I need help.",
                "priority": "normal",
                "tags": ["onboarding"],
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let ticket = &created["data"];
    assert_eq!(ticket["subject"], "My first ticket");
    assert_eq!(ticket["status"], "open");
    assert_eq!(ticket["priority"], "normal");
    assert_eq!(ticket["requester"]["email"], "jane@example.com");
    assert!(ticket.as_object().expect("object").contains_key("sla"));
    assert!(ticket["created_at"].as_str().expect("time").ends_with('Z'));
    let (status, listed) = api.get("/tickets").await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["id"], ticket["id"]);
    // Subject and requester are required.
    let (status, body) = api.post("/tickets", json!({"message": "no subject"})).await;
    assert_eq!(status, 422);
    assert!(body["error"]["details"]["fields"]["subject"].is_string());
    assert!(body["error"]["details"]["fields"]["requester"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn seed_001_tickets_customers_and_tags() {
    let app = TestApp::spawn().await;
    let api = app.api("selfhosted").await;
    let agent = api.user("Agent", "agent@example.com").await;
    let (status, created) = api
        .post(
            "/tickets",
            json!({
                "subject": "Help needed",
                "description": "Detailed description of the issue",
                "customer_email": "user@example.com",
                "priority": "medium",
                "tags": ["support"],
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let ticket = &created["data"];
    assert_eq!(ticket["priority"], "normal");
    assert_eq!(ticket["description"], "Detailed description of the issue");
    assert_eq!(ticket["requester"]["email"], "user@example.com");
    let id = ticket["id"].as_str().expect("id");

    let (status, list) = api.get("/tickets?status=open&limit=25").await;
    assert_eq!(status, 200);
    assert_eq!(list["meta"]["limit"], 25);
    assert_eq!(list["meta"]["total"], 1);
    assert!(list["meta"]["next_cursor"].is_null());

    let (status, patched) = api
        .patch(
            &format!("/tickets/{id}"),
            json!({"status": "pending", "priority": "high", "assignee_id": agent["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let agent_id = agent["id"].as_str().expect("id");
    let (_, filtered) = api
        .get(&format!(
            "/tickets?status=pending&priority=high&assignee_id={agent_id}"
        ))
        .await;
    assert_eq!(filtered["meta"]["total"], 1);
    let (_, by_tags) = api.get("/tickets?tags=billing,support").await;
    assert_eq!(by_tags["meta"]["total"], 1);
    let (_, sorted) = api.get("/tickets?order_by=created_at&order_dir=asc").await;
    assert_eq!(sorted["data"][0]["id"], id);
    let (status, _) = api.delete(&format!("/tickets/{id}")).await;
    assert_eq!(status, 204);

    let (status, customer) = api
        .post(
            "/customers",
            json!({"email": "john@example.com", "name": "John Doe", "phone": "+1-555-0123", "company": "Acme Inc"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(customer["data"]["phone"], "+1-555-0123");
    let (status, tag) = api
        .post("/tags", json!({"name": "billing", "color": "#ff0000"}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(tag["data"]["color"], "#ff0000");
    let (status, users) = api.get("/users").await;
    assert_eq!(status, 200);
    assert_eq!(users["data"][0]["id"], agent["id"]);
    app.stop().await;
}

#[tokio::test]
async fn seed_002_status_ids_archive_tags_and_form_bodies() {
    let app = TestApp::spawn().await;
    let api = app.api("crm").await;
    let ticket = api.ticket("Cannot log in", "client@example.com").await;
    let number = ticket["number"].as_i64().expect("number");

    // curl -G .../tickets -d status=1
    let (status, open) = api.get("/tickets?status=1").await;
    assert_eq!(status, 200);
    assert_eq!(open["meta"]["total"], 1);
    // curl -X PUT .../tickets/32/status -d status=2
    let (status, closed) = api
        .form(
            Method::PUT,
            &format!("/tickets/{number}/status"),
            &[("status", "2")],
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["data"]["status"], "closed");
    let (status, reopened) = api
        .put(&format!("/tickets/{number}/status"), json!({"status": 5}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(reopened["data"]["status"], "open");

    // `PUT /tickets/{id}/archive` with no body at all.
    let (status, archived) =
        Api::send(api.request(Method::PUT, &format!("/tickets/{number}/archive"))).await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["data"]["archived"], true);
    let (_, archived_list) = api.get("/tickets?active_state=archived").await;
    assert_eq!(archived_list["meta"]["total"], 1);
    let (status, _) = api
        .put(&format!("/tickets/{number}/restore"), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, tagged) = api
        .put(
            &format!("/tickets/{number}/tags"),
            json!({"tags": ["billing", "urgent"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(tagged["data"]["tags"], json!(["billing", "urgent"]));
    let (_, by_tag) = api.get("/tickets?tags[]=billing").await;
    assert_eq!(by_tag["meta"]["total"], 1);
    let (status, _) = api.delete(&format!("/tickets/{number}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&format!("/tickets/{number}")).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn seed_003_filters_sort_status_and_assignee() {
    let app = TestApp::spawn().await;
    let api = app.api("therethere").await;
    let agent = api.user("Jane Smith", "jane@example.com").await;
    let ticket = api
        .ticket("Cannot reset my password", "john@customer.com")
        .await;
    let id = ticket["id"].as_str().expect("id");
    api.ticket("Other", "other@customer.com").await;

    let (status, page) = api
        .get("/tickets?filter[status]=open&sort=-updated_at&per_page=10")
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["meta"]["limit"], 10);
    assert_eq!(page["meta"]["total"], 2);
    assert_eq!(page["data"][0]["latest_message_preview"], "About Other");

    let (status, closed) = api
        .put(
            &format!("/tickets/{id}/status"),
            json!({"status": "closed"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(closed["data"]["status"], "closed");
    let (status, spam) = api
        .put(&format!("/tickets/{id}/status"), json!({"status": "spam"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(spam["data"]["status"], "spam");
    let (_, spam_list) = api.get("/tickets?filter[status]=spam").await;
    assert_eq!(spam_list["data"][0]["id"], id);

    let (status, assigned) = api
        .put(
            &format!("/tickets/{id}/assignee"),
            json!({"user_id": agent["id"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(assigned["data"]["assignee"]["email"], "jane@example.com");
    let (status, unassigned) = api
        .put(&format!("/tickets/{id}/assignee"), json!({"user_id": null}))
        .await;
    assert_eq!(status, 200);
    assert!(unassigned["data"]["assignee"].is_null());
    let (_, none_assigned) = api
        .get("/tickets?filter[unassigned]=true&filter[status]=open,spam")
        .await;
    assert_eq!(none_assigned["meta"]["total"], 2);
    // 003's integer user ids are not ids here.
    let (status, _) = api
        .put(&format!("/tickets/{id}/assignee"), json!({"user_id": 5}))
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}

#[tokio::test]
async fn seed_004_compose_and_reply_with_its_field_names() {
    let app = TestApp::spawn().await;
    let api = app.api("cerb").await;
    let worker = api.user("Worker", "worker@example.com").await;
    let worker_api = api
        .other_key(
            &app.pool,
            &[Scope::Write],
            Some(key_of(Kind::User, &worker["id"])),
        )
        .await;
    let (_, group) = api.post("/groups", json!({"name": "Support"})).await;
    let group_id = group["data"]["id"].as_str().expect("id");

    // POST /rest/tickets/compose.json, as a form with the seed's fields.
    let (status, composed) = worker_api
        .form(
            Method::POST,
            "/tickets/compose",
            &[
                ("expand", "bucket_,group_,custom_"),
                ("group_id", group_id),
                ("bucket_id", "6"),
                ("org_id", "123"),
                ("to", "customer@example.com"),
                ("cc", "cc@example.com"),
                ("bcc", "bcc@example.com"),
                ("subject", "Testing compose from API"),
                ("content", "This is the raw message with an attachment"),
                ("status", "1"),
                ("reopen_at", "1712160000"),
                ("file_id[]", "368"),
                ("html_template_id", "1"),
                ("custom_5", "+1 hour"),
                ("custom_6", "Line 1\nLine 2\nLine 3"),
                ("custom_4", "Option 3"),
            ],
        )
        .await;
    assert_eq!(status, 201, "{composed}");
    let ticket = &composed["data"];
    assert_eq!(ticket["subject"], "Testing compose from API");
    assert_eq!(ticket["status"], "pending");
    assert_eq!(ticket["requester"]["email"], "customer@example.com");
    assert_eq!(ticket["group"]["id"], group_id);
    assert_eq!(ticket["snoozed_until"], "2024-04-03T16:00:00Z");
    assert_eq!(ticket["custom_fields"]["custom_4"], "Option 3");
    assert_eq!(
        ticket["description"],
        "This is the raw message with an attachment"
    );
    let id = ticket["id"].as_str().expect("id");
    let (_, messages) = api.get(&format!("/tickets/{id}/messages")).await;
    let first = &messages["data"][0];
    assert_eq!(
        first["author"]["type"], "agent",
        "compose is written by the worker"
    );
    let message_id = first["id"].as_str().expect("id");

    // POST /rest/tickets/reply.json
    let (status, replied) = worker_api
        .form(
            Method::POST,
            "/tickets/reply",
            &[
                ("expand", "bucket_,group_,custom_"),
                ("message_id", message_id),
                ("content", "This is the raw message with an attachment"),
                ("bcc", "bcc@example.com"),
                ("bucket_id", "6"),
                ("cc", "cc@example.com"),
                ("custom_4", "Option 3"),
                ("custom_5", "+1 hour"),
                ("file_id[]", "368"),
                ("reopen_at", "+2 hours"),
                ("status", "2"),
                ("subject", "Testing compose from API (reply)"),
                ("to", "customer@example.com"),
                ("html_template_id", "1"),
                ("owner_id", worker["id"].as_str().expect("id")),
            ],
        )
        .await;
    assert_eq!(status, 201, "{replied}");
    assert_eq!(replied["data"]["type"], "reply");
    let (_, after) = api.get(&format!("/tickets/{id}")).await;
    assert_eq!(after["data"]["status"], "closed");
    assert_eq!(after["data"]["subject"], "Testing compose from API (reply)");
    assert_eq!(after["data"]["assignee"]["id"], worker["id"]);
    assert_eq!(after["data"]["replies_count"], 1);

    // owner_id=0 unassigns; status 3 deletes; JSON works too.
    let (status, _) = worker_api
        .post(
            "/tickets/reply",
            json!({"message_id": message_id, "content": "bye", "owner_id": 0, "status": 0}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, unassigned) = api.get(&format!("/tickets/{id}")).await;
    assert!(unassigned["data"]["assignee"].is_null());
    let (status, _) = worker_api
        .post(
            "/tickets/reply",
            json!({"message_id": message_id, "content": "gone", "status": 3}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = api.get(&format!("/tickets/{id}")).await;
    assert_eq!(status, 404);

    // Unknown fields, bad statuses and missing authors are 422.
    let (status, body) = worker_api
        .post("/tickets/compose", json!({"to": "a@example.com", "subject": "s", "content": "c", "colour": "red", "status": 7}))
        .await;
    assert_eq!(status, 422);
    assert!(body["error"]["details"]["fields"]["colour"].is_string());
    assert!(body["error"]["details"]["fields"]["status"].is_string());
    let (status, body) = api
        .post(
            "/tickets/compose",
            json!({"to": "a@example.com", "subject": "s", "content": "c"}),
        )
        .await;
    assert_eq!(status, 422, "an unbound key must name the worker: {body}");
    let (status, _) = api
        .post(
            "/tickets/compose",
            json!({"to": "a@example.com", "subject": "s", "content": "c", "worker_id": worker["id"], "reopen_at": "Friday 2pm"}),
        )
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}
