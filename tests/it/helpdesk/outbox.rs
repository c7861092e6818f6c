//! The outbox guarantee, read from the `event` table: one event per committed change, with the
//! ticket as the API returns it; none for internal notes, no-op changes, deletes, or changes
//! that failed.

use deskhook::{auth::Scope, ids::Kind};
use serde_json::json;

use crate::support::{TestApp, key_of};

fn types(events: &[(String, serde_json::Value)]) -> Vec<&str> {
    events.iter().map(|(kind, _)| kind.as_str()).collect()
}

#[tokio::test]
async fn every_committed_change_has_exactly_its_event() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let agent = api.user("Sam", "sam@example.com").await;
    let agent_api = api
        .other_key(
            &app.pool,
            &[Scope::Write],
            Some(key_of(Kind::User, &agent["id"])),
        )
        .await;

    // Created with its first message: ticket.created only.
    let ticket = api.ticket("Refund", "jane@example.com").await;
    let id = ticket["id"].as_str().expect("id").to_owned();
    let events = api.events(&app.pool).await;
    assert_eq!(types(&events), vec!["ticket.created"]);
    assert_eq!(
        events[0].1["ticket"], ticket,
        "the payload is the API object"
    );

    // A note: nothing.
    let (status, _) = agent_api
        .post(
            &format!("/tickets/{id}/messages"),
            json!({"body": "psst", "type": "note"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(api.events(&app.pool).await.len(), 1);

    // A public reply: ticket.replied with the message.
    let (_, reply) = agent_api
        .post(&format!("/tickets/{id}/messages"), json!({"body": "On it"}))
        .await;
    let events = api.events(&app.pool).await;
    assert_eq!(types(&events)[1..], ["ticket.replied"]);
    assert_eq!(events[1].1["message"], reply["data"]);
    assert_eq!(events[1].1["ticket"]["replies_count"], 1);

    // Assign, then the same again (a no-op fires nothing).
    let (_, assigned) = api
        .put(
            &format!("/tickets/{id}/assignee"),
            json!({"user_id": agent["id"]}),
        )
        .await;
    api.put(
        &format!("/tickets/{id}/assignee"),
        json!({"user_id": agent["id"]}),
    )
    .await;
    let events = api.events(&app.pool).await;
    assert_eq!(types(&events)[2..], ["ticket.assigned"]);
    assert_eq!(events[2].1["ticket"], assigned["data"]);

    // Priority: ticket.updated. Solve: ticket.closed. Solved → closed: no second closed.
    api.patch(&format!("/tickets/{id}"), json!({"priority": "high"}))
        .await;
    api.put(
        &format!("/tickets/{id}/status"),
        json!({"status": "solved"}),
    )
    .await;
    api.put(
        &format!("/tickets/{id}/status"),
        json!({"status": "closed"}),
    )
    .await;
    let events = api.events(&app.pool).await;
    assert_eq!(
        types(&events)[3..],
        ["ticket.updated", "ticket.closed", "ticket.updated"]
    );
    assert_eq!(events[4].1["ticket"]["status"], "solved");

    // The customer replies: replied, then reopened.
    api.post(
        &format!("/tickets/{id}/messages"),
        json!({"body": "Still broken", "author": {"type": "customer"}}),
    )
    .await;
    let events = api.events(&app.pool).await;
    assert_eq!(types(&events)[6..], ["ticket.replied", "ticket.reopened"]);
    assert_eq!(events[7].1["ticket"]["status"], "open");
    assert_eq!(events[6].1["message"]["author"]["type"], "customer");

    // Closing again fires again.
    api.put(
        &format!("/tickets/{id}/status"),
        json!({"status": "closed"}),
    )
    .await;
    let events = api.events(&app.pool).await;
    assert_eq!(types(&events)[8..], ["ticket.closed"]);

    // Delete fires nothing.
    api.delete(&format!("/tickets/{id}")).await;
    assert_eq!(api.events(&app.pool).await.len(), 9);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_change_leaves_no_event() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let ticket = api.ticket("Refund", "jane@example.com").await;
    let id = ticket["id"].as_str().expect("id");
    api.put(
        &format!("/tickets/{id}/status"),
        json!({"status": "closed"}),
    )
    .await;
    let before = api.events(&app.pool).await.len();

    // Refused by the lifecycle, by validation inside the transaction (an unknown assignee after
    // a valid status change), and by the database (an impossible body): no event, no change.
    let (status, _) = api
        .put(
            &format!("/tickets/{id}/status"),
            json!({"status": "pending"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = api
        .patch(
            &format!("/tickets/{id}"),
            json!({"status": "open", "assignee_id": "usr_0000000000001"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = api
        .post(
            &format!("/tickets/{id}/messages"),
            json!({"body": "x", "author": {"type": "agent", "id": "usr_0000000000001"}}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(api.events(&app.pool).await.len(), before);
    let (_, after) = api.get(&format!("/tickets/{id}")).await;
    assert_eq!(
        after["data"]["status"], "closed",
        "the rolled-back status change is gone"
    );

    // A rolled-back create: an unknown group, after the requester was found or created.
    let (status, _) = api
        .post(
            "/tickets",
            json!({"subject": "x", "requester": {"email": "new@example.com"}, "group_id": "grp_0000000000001"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(api.events(&app.pool).await.len(), before);
    let (_, customers) = api.get("/customers?email=new@example.com").await;
    assert_eq!(
        customers["meta"]["total"], 0,
        "the customer was rolled back with the ticket"
    );
    app.stop().await;
}
