//! Signed POSTs: what a receiver gets, retries, dead letters and replay, 410, rotation.

use std::time::Duration;

use hmac::{Hmac, Mac as _};
use reqwest::Method;
use serde_json::json;
use sha2::Sha256;

use super::{Client, event, fast_retry_app};
use crate::support::{TestApp, receiver::Receiver};

const WAIT: Duration = Duration::from_secs(15);

fn hex_hmac(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn each_product_event_arrives_signed_and_well_formed() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (_, secret) = client.endpoint(&receiver, json!({})).await;

    let types = [
        "ticket.created",
        "ticket.replied",
        "ticket.closed",
        "sla.at_risk",
    ];
    let accepted = client
        .ingest(json!({ "events": types.iter().enumerate()
            .map(|(i, t)| event(&format!("e{i}"), t)).collect::<Vec<_>>() }))
        .await;
    assert!(accepted.iter().all(|a| a["status"] == "accepted"));

    let received = receiver.wait_for(4, WAIT).await;
    assert_eq!(received.len(), 4);
    for request in &received {
        assert_eq!(request.verified_by, [0], "standard signature must verify");
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("Deskhook/"));
        assert_eq!(request.header("deskhook-attempt"), "1");
        assert_eq!(request.header("webhook-id"), request.event_id());
        assert_eq!(request.header("deskhook-event-type"), request.json["type"]);
        let simple = format!("sha256={}", hex_hmac(secret.as_bytes(), &request.body));
        assert_eq!(request.header("deskhook-signature"), simple);
        let body = &request.json;
        assert!(body["id"].as_str().is_some_and(|id| id.starts_with("evt_")));
        assert!(
            body["workspace_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("ws_"))
        );
        assert!(
            chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().unwrap_or("")).is_ok()
        );
        assert_eq!(body["data"]["ticket"]["subject"], "Printer on fire");
        let accepted_id = accepted
            .iter()
            .find(|a| a["id"] == body["id"])
            .expect("the event id is the one ingest answered");
        assert!(
            accepted_id["external_id"]
                .as_str()
                .is_some_and(|x| x.starts_with('e'))
        );
    }
    let mut got: Vec<String> = received
        .iter()
        .map(|r| r.json["type"].as_str().unwrap_or("").to_owned())
        .collect();
    got.sort();
    let mut want: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
    want.sort();
    assert_eq!(got, want);
    app.stop().await;
}

#[tokio::test]
async fn ingest_is_idempotent_by_producer_id() {
    ingest_is_idempotent(TestApp::spawn().await).await;
}

/// Events posted again under their producer ids are answered `duplicate` with the first
/// event's id, and delivered once.
pub(crate) async fn ingest_is_idempotent(app: TestApp) {
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    let first = client.ingest(event("order-1", "ticket.created")).await;
    let again = client
        .ingest(json!({ "events": [event("order-1", "ticket.created"), event("order-2", "ticket.closed"), event("order-2", "ticket.closed")] }))
        .await;
    assert_eq!(first[0]["status"], "accepted");
    assert_eq!(again[0]["status"], "duplicate");
    assert_eq!(
        again[0]["id"], first[0]["id"],
        "a duplicate names the first event"
    );
    assert_eq!(again[1]["status"], "accepted");
    assert_eq!(again[2]["status"], "duplicate");
    assert_eq!(again[2]["id"], again[1]["id"]);
    receiver.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "duplicates are not delivered again"
    );
    app.stop().await;
}

#[tokio::test]
async fn retries_then_success_keep_the_same_webhook_id() {
    let app = fast_retry_app("50ms,50ms,50ms").await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    receiver.script(&[500, 503]);
    let accepted = client.ingest(event("r1", "ticket.replied")).await;

    let received = receiver.wait_for(3, WAIT).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.iter().all(|id| *id == accepted[0]["id"]), "{ids:?}");
    let attempts: Vec<&str> = received
        .iter()
        .map(|r| r.header("deskhook-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(
        received.windows(2).all(|w| w[0].body == w[1].body),
        "same bytes on every attempt"
    );
    assert!(received.iter().all(|r| r.verified_by == [0]));

    let listed = client
        .get(&format!(
            "/v1/deliveries?event_id={}",
            accepted[0]["id"].as_str().unwrap_or("")
        ))
        .await;
    let delivery_id = listed["data"][0]["id"]
        .as_str()
        .expect("delivery")
        .to_owned();
    let delivery = client.wait_delivery(&delivery_id, "succeeded", WAIT).await;
    assert_eq!(delivery["attempts"], 3);
    let log = delivery["attempt_log"].as_array().expect("attempt log");
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["outcome"], "http_error");
    assert_eq!(log[0]["status_code"], 500);
    assert_eq!(log[2]["outcome"], "success");
    app.stop().await;
}

#[tokio::test]
async fn exhausted_deliveries_die_and_a_retry_delivers_the_same_id() {
    let app = fast_retry_app("20ms,20ms").await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (webhook, _) = client.endpoint(&receiver, json!({})).await;
    receiver.respond_with(500);
    client.ingest(event("d1", "ticket.closed")).await;
    receiver.wait_for(3, WAIT).await;

    let listed = client
        .get(&format!("/v1/deliveries?webhook_id={webhook}"))
        .await;
    let delivery_id = listed["data"][0]["id"]
        .as_str()
        .expect("a delivery")
        .to_owned();
    let delivery = client.wait_delivery(&delivery_id, "dead", WAIT).await;
    let dead = client
        .get(&format!("/v1/deliveries?status=dead&webhook_id={webhook}"))
        .await;
    assert_eq!(
        dead["data"][0]["id"], delivery_id,
        "the dead-letter queue lists it"
    );
    assert_eq!(delivery["attempts"], 3);

    // A live delivery cannot be retried; a dead one can, under the same id.
    receiver.respond_with(200);
    let (status, answer) = client
        .call(
            Method::POST,
            &format!("/v1/deliveries/{delivery_id}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["data"]["id"], delivery_id);
    let received = receiver.wait_for(4, WAIT).await;
    assert_eq!(received[3].header("deskhook-attempt"), "4");
    let delivered = client.wait_delivery(&delivery_id, "succeeded", WAIT).await;
    assert_eq!(delivered["attempts"], 4);

    let (status, _) = client
        .call(Method::POST, "/v1/deliveries/dlv_0000000000001/retry", None)
        .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_until_enabled() {
    let app = fast_retry_app("20ms").await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (webhook, _) = client.endpoint(&receiver, json!({})).await;
    receiver.respond_with(410);
    client.ingest(event("g1", "ticket.created")).await;
    receiver.wait_for(1, WAIT).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let endpoint = loop {
        let endpoint = client.get(&format!("/v1/webhooks/{webhook}")).await;
        if endpoint["data"]["enabled"] == false {
            break endpoint;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not disabled: {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(endpoint["data"]["disabled_reason"], "gone_410");
    let dead = client
        .get(&format!("/v1/deliveries?status=dead&webhook_id={webhook}"))
        .await;
    assert_eq!(
        dead["data"].as_array().map(Vec::len),
        Some(1),
        "410 dead-letters at once"
    );

    // While disabled, new events are not queued for it.
    client.ingest(event("g2", "ticket.created")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);

    receiver.respond_with(204);
    let (status, enabled) = client
        .call(
            Method::POST,
            &format!("/v1/webhooks/{webhook}/enable"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(enabled["data"]["enabled"], true);
    assert_eq!(enabled["data"]["disabled_reason"], serde_json::Value::Null);
    client.ingest(event("g3", "ticket.created")).await;
    let received = receiver.wait_for(2, WAIT).await;
    assert_eq!(received[1].json["data"]["ticket"]["id"], "T-g3");
    app.stop().await;
}

#[tokio::test]
async fn a_rotation_sends_both_signatures_until_the_old_key_expires() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (webhook, old_secret) = client.endpoint(&receiver, json!({})).await;

    let (status, rotated) = client
        .call(
            Method::POST,
            &format!("/v1/webhooks/{webhook}/rotate-secret"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["data"]["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert_ne!(new_secret, old_secret);
    assert_eq!(
        rotated["data"]["previous"].as_array().map(Vec::len),
        Some(1)
    );
    receiver.trust(&[&new_secret, &old_secret]);

    client.ingest(event("rot1", "ticket.created")).await;
    let received = receiver.wait_for(1, WAIT).await;
    let signatures: Vec<&str> = received[0].header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "new and old key both sign");
    assert_eq!(
        received[0].verified_by,
        [0, 1],
        "each key verifies on its own"
    );
    let simple = format!(
        "sha256={}",
        hex_hmac(new_secret.as_bytes(), &received[0].body)
    );
    assert_eq!(received[0].header("deskhook-signature"), simple);

    // Expire the old key at once: only the new signature remains.
    client
        .call(
            Method::POST,
            &format!("/v1/webhooks/{webhook}/rotate-secret"),
            Some(json!({"expire_in_seconds": 0})),
        )
        .await;
    let (_, revealed) = client
        .call(Method::GET, &format!("/v1/webhooks/{webhook}/secret"), None)
        .await;
    let newest = revealed["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    receiver.trust(&[&newest]);
    client.ingest(event("rot2", "ticket.created")).await;
    let received = receiver.wait_for(2, WAIT).await;
    let signatures: Vec<&str> = received[1].header("webhook-signature").split(' ').collect();
    // The first rotation's key is still in its 24 h window; the one expired now is gone.
    assert_eq!(signatures.len(), 2);
    assert_eq!(received[1].verified_by, [0]);
    app.stop().await;
}

#[tokio::test]
async fn rotating_in_a_loop_keeps_at_most_five_old_secrets_signing() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (webhook, _) = client.endpoint(&receiver, json!({})).await;
    let mut rotated = serde_json::Value::Null;
    for _ in 0..8 {
        let (status, answer) = client
            .call(
                Method::POST,
                &format!("/v1/webhooks/{webhook}/rotate-secret"),
                Some(json!({"expire_in_seconds": 2_592_000})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        rotated = answer;
    }
    assert_eq!(
        rotated["data"]["previous"].as_array().map(Vec::len),
        Some(5),
        "{rotated}"
    );
    let newest = rotated["data"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    receiver.trust(&[&newest]);
    client.ingest(event("loop1", "ticket.created")).await;
    let received = receiver.wait_for(1, WAIT).await;
    let signatures = received[0].header("webhook-signature").split(' ').count();
    assert_eq!(signatures, 6, "the current key and five old ones sign");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM endpoint_secret WHERE endpoint_id = $1")
            .bind(deskhook::ids::decode(deskhook::ids::Kind::Webhook, &webhook).expect("key"))
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(stored, 6, "retired secrets are deleted, not kept");
    app.stop().await;
}

#[tokio::test]
async fn seed_000_receivers_get_their_bare_hex_header() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (_, secret) = client
        .endpoint(
            &receiver,
            json!({ "legacy_signature_header": "cherryrise-signature" }),
        )
        .await;
    client.ingest(event("legacy", "ticket.created")).await;
    let received = receiver.wait_for(1, WAIT).await;
    // Exactly what seed 000's sample computes: hex HMAC-SHA256 of the raw body with the secret.
    assert_eq!(
        received[0].header("cherryrise-signature"),
        hex_hmac(secret.as_bytes(), &received[0].body)
    );
    app.stop().await;
}

#[tokio::test]
async fn the_test_action_pings_only_that_endpoint() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let pinged = Receiver::start().await;
    let other = Receiver::start().await;
    let (webhook, _) = client.endpoint(&pinged, json!({})).await;
    client.endpoint(&other, json!({})).await;
    let (status, answer) = client
        .call(Method::POST, &format!("/v1/webhooks/{webhook}/test"), None)
        .await;
    assert_eq!(status, 202, "{answer}");
    let received = pinged.wait_for(1, WAIT).await;
    assert_eq!(received[0].json["type"], "webhook.test");
    assert_eq!(received[0].json["id"], answer["data"]["event_id"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        other.received().is_empty(),
        "webhook.test goes only where asked"
    );
    app.stop().await;
}

#[tokio::test]
async fn endpoints_only_get_the_types_they_subscribe_to() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let closed_only = Receiver::start().await;
    client
        .endpoint(&closed_only, json!({ "events": ["ticket.closed"] }))
        .await;
    client
        .ingest(json!({ "events": [event("s1", "ticket.created"), event("s2", "ticket.closed"), event("s3", "sla.at_risk")] }))
        .await;
    let received = closed_only.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(closed_only.received().len(), 1);
    assert_eq!(received[0].json["type"], "ticket.closed");
    app.stop().await;
}

#[tokio::test]
async fn recover_requeues_an_endpoints_dead_letters_in_a_range() {
    let app = fast_retry_app("").await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (webhook, _) = client.endpoint(&receiver, json!({})).await;
    receiver.respond_with(500);
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    client
        .ingest(json!({ "events": [event("rec-1", "ticket.created"), event("rec-2", "ticket.closed")] }))
        .await;
    receiver.wait_for(2, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let dead = client
            .get(&format!("/v1/deliveries?status=dead&webhook_id={webhook}"))
            .await;
        if dead["data"].as_array().map(Vec::len) == Some(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not dead: {dead}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A range that ends before they died re-queues nothing.
    let (status, none) = client
        .call(
            Method::POST,
            &format!("/v1/webhooks/{webhook}/recover"),
            Some(json!({ "since": since - chrono::Duration::hours(1), "until": since })),
        )
        .await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["data"]["requeued"], 0);

    receiver.respond_with(204);
    let (status, recovered) = client
        .call(
            Method::POST,
            &format!("/v1/webhooks/{webhook}/recover"),
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(recovered["data"]["requeued"], 2);
    let received = receiver
        .wait_until(WAIT, |r| r.iter().filter(|r| r.answered < 300).count() == 2)
        .await;
    assert!(received.iter().all(|r| r.verified_by == [0]));
    app.stop().await;
}

#[tokio::test]
async fn a_write_key_can_rotate_a_secret_but_never_sees_it() {
    let app = TestApp::spawn().await;
    let admin = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (webhook, old_secret) = admin.endpoint(&receiver, json!({})).await;
    let (status, created) = admin
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(json!({ "scopes": ["write"], "name": "ci" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let write = Client {
        key: created["data"]["api_key"].as_str().expect("key").to_owned(),
        ..admin.on(&app)
    };
    let (status, rotated) = write
        .call(
            Method::POST,
            &format!("/v1/webhooks/{webhook}/rotate-secret"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated["data"].get("secret").is_none(), "{rotated}");
    assert!(!rotated.to_string().contains("whsec_"), "{rotated}");
    assert_eq!(
        rotated["data"]["previous"].as_array().map(Vec::len),
        Some(1)
    );
    // The rotation happened: an admin reads a new secret.
    let revealed = admin.get(&format!("/v1/webhooks/{webhook}/secret")).await;
    let new_secret = revealed["data"]["secret"].as_str().expect("secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != old_secret);
    app.stop().await;
}

#[tokio::test]
async fn an_optional_body_may_be_json_null_as_the_openapi_document_says() {
    let app = TestApp::spawn().await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    let (id, _) = client.endpoint(&receiver, json!({})).await;
    let (status, body) = client
        .call(
            Method::POST,
            &format!("/v1/webhooks/{id}/rotate-secret"),
            Some(serde_json::Value::Null),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["secret"].is_string(), "{body}");
    app.stop().await;
}
