//! Tickets: create, read by id or number, change, the PUT actions, lifecycle rules, filters,
//! sorting, soft delete and restore, and the activity log.

use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn a_ticket_is_created_read_changed_and_deleted() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let (status, body) = api
        .post(
            "/tickets",
            json!({
                "subject": "Cannot log in",
                "requester": {"email": "jane@example.com", "name": "Jane"},
                "message": "I get an error",
                "priority": "high",
                "tags": ["billing", "vip"],
                "custom_fields": {"plan": "pro"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let ticket = &body["data"];
    let id = ticket["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("tkt_"));
    assert_eq!(ticket["number"], 1);
    assert_eq!(ticket["status"], "open");
    assert_eq!(ticket["priority"], "high");
    assert_eq!(ticket["description"], "I get an error");
    assert_eq!(ticket["requester"]["email"], "jane@example.com");
    assert_eq!(ticket["requester"]["name"], "Jane");
    assert_eq!(ticket["tags"], json!(["billing", "vip"]));
    assert_eq!(ticket["custom_fields"], json!({"plan": "pro"}));
    assert_eq!(ticket["source"], "api");
    assert_eq!(ticket["archived"], false);
    assert_eq!(ticket["sla"], serde_json::Value::Null);
    assert_eq!(ticket["replies_count"], 0);
    assert_eq!(ticket["latest_message_preview"], "I get an error");
    assert!(ticket["assignee"].is_null());
    for field in ["created_at", "updated_at", "status_changed_at"] {
        assert!(ticket[field].is_string(), "{field}");
    }

    // By id and by number, the same object.
    let (status, by_id) = api.get(&format!("/tickets/{id}")).await;
    assert_eq!(status, 200);
    let (status, by_number) = api.get("/tickets/1").await;
    assert_eq!(status, 200);
    assert_eq!(by_id, by_number);
    assert_eq!(&by_id["data"], ticket);

    let agent = api.user("Sam", "sam@example.com").await;
    let (status, patched) = api
        .patch(
            &format!("/tickets/{id}"),
            json!({"status": "pending", "priority": "medium", "assignee_id": agent["id"]}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["data"]["status"], "pending");
    assert_eq!(patched["data"]["priority"], "normal");
    assert_eq!(patched["data"]["assignee"]["id"], agent["id"]);
    assert_eq!(patched["data"]["assignee"]["name"], "Sam");

    let (status, unassigned) = api
        .put(&format!("/tickets/{id}/assignee"), json!({"user_id": null}))
        .await;
    assert_eq!(status, 200);
    assert!(unassigned["data"]["assignee"].is_null());

    let (status, tagged) = api
        .put(
            &format!("/tickets/{id}/tags"),
            json!({"tags": ["Refund", "billing"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(tagged["data"]["tags"], json!(["billing", "Refund"]));
    let (status, cleared) = api
        .put(&format!("/tickets/{id}/tags"), json!({"tags": []}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(cleared["data"]["tags"], json!([]));
    let (_, tags) = api.get("/tags?search=refund").await;
    assert_eq!(
        tags["data"][0]["name"], "Refund",
        "unknown tag names are created"
    );

    let (status, activities) = api.get(&format!("/tickets/{id}/activities")).await;
    assert_eq!(status, 200);
    let actions: Vec<(String, Option<String>)> = activities["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|a| {
            (
                a["action"].as_str().expect("action").to_owned(),
                a["field"].as_str().map(ToOwned::to_owned),
            )
        })
        .collect();
    assert_eq!(actions[0], ("created".to_owned(), None));
    assert!(actions.contains(&("updated".to_owned(), Some("status".to_owned()))));
    assert!(actions.contains(&("updated".to_owned(), Some("assignee".to_owned()))));
    assert!(actions.contains(&("updated".to_owned(), Some("tags".to_owned()))));
    assert_eq!(activities["data"][0]["actor"]["type"], "api_key");

    let (status, _) = api.delete(&format!("/tickets/{id}")).await;
    assert_eq!(status, 204);
    for path in [
        format!("/tickets/{id}"),
        "/tickets/1".to_owned(),
        format!("/tickets/{id}/messages"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    let (_, listed) = api.get("/tickets").await;
    assert_eq!(listed["meta"]["total"], 0);
    let (status, restored) = api.put(&format!("/tickets/{id}/restore"), json!({})).await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["data"]["id"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn status_changes_follow_the_lifecycle_rules() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let ticket = api.ticket("Broken", "a@example.com").await;
    let path = format!("/tickets/{}/status", ticket["id"].as_str().expect("id"));

    let (status, solved) = api.put(&path, json!({"status": "solved"})).await;
    assert_eq!(status, 200);
    assert!(solved["data"]["solved_at"].is_string());
    let (_, closed) = api.put(&path, json!({"status": "closed"})).await;
    assert_eq!(closed["data"]["status"], "closed");
    assert!(closed["data"]["closed_at"].is_string());

    // From closed only open or spam.
    for refused in ["pending", "on_hold", "solved"] {
        let (status, body) = api.put(&path, json!({"status": refused})).await;
        assert_eq!(status, 422, "closed → {refused}: {body}");
        assert!(body["error"]["details"]["fields"]["status"].is_string());
    }
    let (status, reopened) = api.put(&path, json!({"status": "open"})).await;
    assert_eq!(status, 200);
    assert!(reopened["data"]["reopened_at"].is_string());
    assert!(reopened["data"]["solved_at"].is_null());

    // Seed 002's numeric ids: 1 open, 2 closed, 3 on_hold, 4 pending, 5 open.
    for (number, expected) in [
        (3, "on_hold"),
        (4, "pending"),
        (5, "open"),
        (2, "closed"),
        (1, "open"),
    ] {
        let (status, body) = api.put(&path, json!({"status": number})).await;
        assert_eq!(status, 200, "{number}: {body}");
        assert_eq!(body["data"]["status"], expected);
    }
    let (status, body) = api.put(&path, json!({"status": "reopened"})).await;
    assert_eq!(status, 422);
    assert!(body["error"]["details"]["fields"]["status"].is_string());
    let (status, _) = api.put(&path, json!({"status": 9})).await;
    assert_eq!(status, 422);
    app.stop().await;
}

#[tokio::test]
async fn archived_tickets_leave_the_default_list_until_restored() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let ticket = api.ticket("Old", "a@example.com").await;
    api.ticket("New", "b@example.com").await;
    let id = ticket["id"].as_str().expect("id");
    let (status, archived) = api.put(&format!("/tickets/{id}/archive"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(archived["data"]["archived"], true);
    let (_, active) = api.get("/tickets").await;
    assert_eq!(active["meta"]["total"], 1);
    let (_, only_archived) = api.get("/tickets?archived=true").await;
    assert_eq!(only_archived["data"][0]["id"], id);
    let (_, seed_002) = api.get("/tickets?active_state=archived").await;
    assert_eq!(seed_002["meta"]["total"], 1);
    let (status, restored) = api.put(&format!("/tickets/{id}/restore"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(restored["data"]["archived"], false);
    let (_, all) = api.get("/tickets").await;
    assert_eq!(all["meta"]["total"], 2);
    app.stop().await;
}

#[tokio::test]
async fn lists_filter_and_sort_in_both_spellings() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let agent = api.user("Sam", "sam@example.com").await;
    let first = api.ticket("Refund please", "jane@example.com").await;
    let second = api.ticket("Login broken", "joe@example.com").await;
    let third = api.ticket("Invoice copy", "jane@example.com").await;
    let first_id = first["id"].as_str().expect("id");
    let second_id = second["id"].as_str().expect("id");
    let third_id = third["id"].as_str().expect("id");
    api.patch(
        &format!("/tickets/{first_id}"),
        json!({"status": "pending", "priority": "urgent", "assignee_id": agent["id"], "tags": ["billing"]}),
    )
    .await;
    api.patch(
        &format!("/tickets/{third_id}"),
        json!({"priority": "low", "tags": ["vip"]}),
    )
    .await;
    // A search hit in a later message, not the subject.
    let (status, _) = api
        .post(
            &format!("/tickets/{second_id}/messages"),
            json!({"body": "the password reset mail never arrives", "author": {"type": "customer"}}),
        )
        .await;
    assert_eq!(status, 201);

    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["data"]
            .as_array()
            .expect("list")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (_, pending) = api.get("/tickets?status=pending").await;
    assert_eq!(ids(&pending), vec![first_id]);
    let (_, bracketed) = api
        .get("/tickets?filter[status]=open,pending&sort=-updated_at")
        .await;
    assert_eq!(bracketed["meta"]["total"], 3);
    let (_, open_or_pending) = api.get("/tickets?status=open,pending").await;
    assert_eq!(open_or_pending["meta"]["total"], 3);
    let (_, assigned) = api
        .get(&format!(
            "/tickets?assignee_id={}",
            agent["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(ids(&assigned), vec![first_id]);
    let (_, unassigned) = api
        .get("/tickets?unassigned=true&order_by=created_at&order_dir=asc")
        .await;
    assert_eq!(ids(&unassigned), vec![second_id, third_id]);
    let (_, tagged) = api
        .get("/tickets?tags=billing,vip&order_by=created_at&order_dir=asc")
        .await;
    assert_eq!(ids(&tagged), vec![first_id, third_id]);
    let (_, tagged_brackets) = api.get("/tickets?tags[]=vip").await;
    assert_eq!(ids(&tagged_brackets), vec![third_id]);
    let customer = first["requester"]["id"].as_str().expect("requester");
    let (_, by_customer) = api
        .get(&format!("/tickets?customer_id={customer}&sort=created_at"))
        .await;
    assert_eq!(ids(&by_customer), vec![first_id, third_id]);
    let (_, searched) = api.get("/tickets?search=PASSWORD%20reset").await;
    assert_eq!(ids(&searched), vec![second_id]);
    let (_, by_subject) = api.get("/tickets?filter[search]=invoice").await;
    assert_eq!(ids(&by_subject), vec![third_id]);
    let (_, by_priority) = api.get("/tickets?order_by=priority&order_dir=desc").await;
    assert_eq!(ids(&by_priority), vec![first_id, second_id, third_id]);
    let (_, urgent) = api.get("/tickets?priority=urgent,high").await;
    assert_eq!(ids(&urgent), vec![first_id]);
    let (_, after) = api
        .get("/tickets?created_after=2000-01-01T00:00:00Z&created_before=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(after["meta"]["total"], 3);
    let (_, none) = api.get("/tickets?updated_after=2999-01-01T00:00:00Z").await;
    assert_eq!(none["meta"]["total"], 0);

    // assigned_to_me needs a key bound to a user.
    let (status, body) = api.get("/tickets?assigned_to_me=true").await;
    assert_eq!(status, 400, "{body}");
    let mine = api
        .other_key(
            &app.pool,
            &[deskhook::auth::Scope::Read],
            Some(crate::support::key_of(
                deskhook::ids::Kind::User,
                &agent["id"],
            )),
        )
        .await;
    let (status, me) = mine.get("/tickets?filter[assigned_to_me]=true").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&me), vec![first_id]);
    app.stop().await;
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let ticket = api.ticket("Hello", "a@example.com").await;
    let reader = api
        .other_key(&app.pool, &[deskhook::auth::Scope::Read], None)
        .await;
    let (status, _) = reader
        .get(&format!("/tickets/{}", ticket["id"].as_str().expect("id")))
        .await;
    assert_eq!(status, 200);
    let (status, body) = reader.post("/tickets", json!({"subject": "x"})).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    let ingest = api
        .other_key(&app.pool, &[deskhook::auth::Scope::Ingest], None)
        .await;
    let (status, _) = ingest.get("/tickets").await;
    assert_eq!(status, 403);
    let anonymous = app
        .client
        .get(app.url("/v1/tickets"))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), 401);
    app.stop().await;
}
