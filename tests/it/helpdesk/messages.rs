//! The conversation: messages, seed 002's replies and seed 001's conversations; author rules;
//! notes stay internal; a customer's reply reopens the ticket.

use deskhook::{auth::Scope, ids::Kind};
use serde_json::json;

use crate::support::{Api, TestApp, key_of};

async fn bound_key(app: &TestApp, api: &Api) -> (Api, serde_json::Value) {
    let agent = api.user("Sam", "sam@example.com").await;
    let key = api
        .other_key(
            &app.pool,
            &[Scope::Write],
            Some(key_of(Kind::User, &agent["id"])),
        )
        .await;
    (key, agent)
}

#[tokio::test]
async fn replies_and_notes_build_the_conversation() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let (agent_api, agent) = bound_key(&app, &api).await;
    let ticket = api.ticket("Refund", "jane@example.com").await;
    let id = ticket["id"].as_str().expect("id");

    // An unbound key must name the author.
    let (status, body) = api
        .post(&format!("/tickets/{id}/messages"), json!({"body": "hi"}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["details"]["fields"]["author"].is_string());

    // A bound key's user is the default author.
    let (status, reply) = agent_api
        .post(
            &format!("/tickets/{id}/messages"),
            json!({"body": "We are on it", "type": "reply"}),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let reply = &reply["data"];
    assert!(reply["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!(reply["ticket_id"], id);
    assert_eq!(reply["type"], "reply");
    assert_eq!(reply["internal"], false);
    assert_eq!(reply["body"], "We are on it");
    assert_eq!(reply["author"]["type"], "agent");
    assert_eq!(reply["author"]["id"], agent["id"]);
    assert_eq!(reply["author"]["name"], "Sam");
    assert_eq!(reply["author"]["email"], "sam@example.com");

    let (status, note) = agent_api
        .post(
            &format!("/tickets/{id}/messages"),
            json!({"content": "check billing", "type": "note"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(note["data"]["internal"], true);
    let (status, body) = api
        .post(
            &format!("/tickets/{id}/messages"),
            json!({"body": "x", "type": "note", "author": {"type": "customer"}}),
        )
        .await;
    assert_eq!(status, 422, "customers write no notes: {body}");
    let (status, _) = api
        .post(&format!("/tickets/{id}/messages"), json!({"body": "x", "type": "reply", "internal": true, "author": {"type": "agent", "id": agent["id"]}}))
        .await;
    assert_eq!(status, 422);

    let (_, after) = api.get(&format!("/tickets/{id}")).await;
    assert_eq!(after["data"]["replies_count"], 1);
    assert_eq!(after["data"]["latest_message_preview"], "We are on it");
    assert!(after["data"]["first_responded_at"].is_string());

    let (status, listed) = api.get(&format!("/tickets/{id}/messages")).await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> = listed["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(
        bodies,
        vec!["About Refund", "We are on it", "check billing"]
    );
    let (_, notes) = api.get(&format!("/tickets/{id}/messages?type=note")).await;
    assert_eq!(notes["meta"]["total"], 1);
    let (_, public) = api
        .get(&format!("/tickets/{id}/messages?internal=false"))
        .await;
    assert_eq!(public["meta"]["total"], 2);

    let reply_id = reply["id"].as_str().expect("id");
    let (status, one) = api.get(&format!("/tickets/{id}/messages/{reply_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"]["id"], reply_id);
    let (status, _) = api
        .delete(&format!("/tickets/{id}/messages/{reply_id}"))
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .delete(&format!("/tickets/{id}/messages/{reply_id}"))
        .await;
    assert_eq!(status, 404);
    let (_, after_delete) = api.get(&format!("/tickets/{id}")).await;
    assert_eq!(after_delete["data"]["replies_count"], 0);
    app.stop().await;
}

#[tokio::test]
async fn a_customer_reply_reopens_a_waiting_or_finished_ticket() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    for status in ["pending", "on_hold", "solved", "closed"] {
        let ticket = api
            .ticket(&format!("Waiting {status}"), "jane@example.com")
            .await;
        let id = ticket["id"].as_str().expect("id");
        let (code, _) = api
            .put(&format!("/tickets/{id}/status"), json!({"status": status}))
            .await;
        assert_eq!(code, 200);
        let (code, _) = api
            .post(
                &format!("/tickets/{id}/messages"),
                json!({"body": "Any news?", "author": {"type": "customer"}}),
            )
            .await;
        assert_eq!(code, 201);
        let (_, after) = api.get(&format!("/tickets/{id}")).await;
        assert_eq!(after["data"]["status"], "open", "{status}");
        assert!(after["data"]["reopened_at"].is_string());
    }
    app.stop().await;
}

#[tokio::test]
async fn seed_002_replies_and_seed_001_conversations_are_the_same_messages() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let (agent_api, _) = bound_key(&app, &api).await;
    let ticket = api.ticket("Cannot log in", "jane@example.com").await;
    let id = ticket["id"].as_str().expect("id");
    let number = ticket["number"].as_i64().expect("number");

    // Seed 002: `curl -X POST .../tickets/32/replies -d ticketreply_text="..."` (a form).
    let (status, reply) = agent_api
        .form(
            reqwest::Method::POST,
            &format!("/tickets/{number}/replies"),
            &[("ticketreply_text", "We are looking into this for you.")],
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["data"]["type"], "reply");
    let (status, note) = agent_api
        .post(
            &format!("/tickets/{number}/replies"),
            json!({"ticketreply_text": "internal", "ticketreply_type": "note"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(note["data"]["internal"], true);
    let (_, replies) = api.get(&format!("/tickets/{number}/replies")).await;
    assert_eq!(replies["meta"]["total"], 3);
    let reply_id = reply["data"]["id"].as_str().expect("id");
    let (status, _) = api
        .delete(&format!("/tickets/{number}/replies/{reply_id}"))
        .await;
    assert_eq!(status, 204);

    // Seed 001: POST /conversations {ticket_id, content, type, internal}; GET ?ticket_id=.
    let (status, conversation) = agent_api
        .post(
            "/conversations",
            json!({"ticket_id": id, "content": "Thank you for reaching out...", "type": "reply", "internal": false}),
        )
        .await;
    assert_eq!(status, 201, "{conversation}");
    assert_eq!(
        conversation["data"]["content_text"],
        "Thank you for reaching out..."
    );
    let (status, private) = agent_api
        .post(
            "/conversations",
            json!({"ticket_id": id, "content": "private", "internal": true}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(private["data"]["type"], "note");
    let (status, listed) = api
        .get(&format!("/conversations?ticket_id={id}&limit=50"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["meta"]["limit"], 50);
    assert_eq!(listed["meta"]["total"], 4);
    let (_, notes) = api
        .get(&format!("/conversations?ticket_id={id}&internal=true"))
        .await;
    assert_eq!(notes["meta"]["total"], 2);
    let conversation_id = conversation["data"]["id"].as_str().expect("id");
    let (status, one) = api.get(&format!("/conversations/{conversation_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["data"]["content_text"], "Thank you for reaching out...");
    let (status, _) = api
        .post(
            "/conversations",
            json!({"ticket_id": "tkt_nope", "content": "x", "type": "reply"}),
        )
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}
