//! Webhook delivery as subscribers and operators see it: signed POSTs to real receivers on
//! loopback, retries, dead letters, replay, isolation, ordering, SSRF, crashes.

pub(crate) mod failures;
mod hardening;
pub mod isolation;
mod model;
mod retention;
mod scale;
pub(crate) mod signed;

use std::time::Duration;

use deskhook::auth::{self, Scope};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, receiver::Receiver};

/// A workspace with an admin key on a running app.
pub struct Client {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Client {
    pub async fn new(app: &TestApp) -> Self {
        let workspace = auth::create_workspace(&app.pool, "Acme")
            .await
            .expect("workspace");
        let key = auth::create_key(&app.pool, workspace, &[Scope::Admin], None, None)
            .await
            .expect("key");
        Self {
            base: app.url(""),
            key: key.key,
            http: reqwest::Client::new(),
        }
    }

    /// The same workspace and key against another instance.
    pub fn on(&self, app: &TestApp) -> Self {
        Self {
            base: app.url(""),
            key: self.key.clone(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Creates an endpoint for `receiver`; returns its id and secret.
    pub async fn endpoint(&self, receiver: &Receiver, settings: Value) -> (String, String) {
        let mut body = json!({ "url": receiver.url });
        if let (Some(target), Some(extra)) = (body.as_object_mut(), settings.as_object()) {
            target.extend(extra.clone());
        }
        let (status, created) = self.call(Method::POST, "/v1/webhooks", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["data"]["id"].as_str().expect("id").to_owned();
        let secret = created["data"]["secret"]
            .as_str()
            .expect("secret")
            .to_owned();
        receiver.trust(&[&secret]);
        (id, secret)
    }

    /// Ingests events; returns the answer's data.
    pub async fn ingest(&self, body: Value) -> Vec<Value> {
        let (status, answer) = self.call(Method::POST, "/v1/events", Some(body)).await;
        assert_eq!(status, 202, "{answer}");
        answer["data"].as_array().expect("data").clone()
    }

    /// Waits until the delivery reaches `status`.
    pub async fn wait_delivery(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let delivery = self.get(&format!("/v1/deliveries/{id}")).await;
            if delivery["data"]["status"] == status {
                return delivery["data"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "delivery {id} did not become {status}: {delivery}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// An app whose retries come fast enough to test.
pub async fn fast_retry_app(schedule: &str) -> TestApp {
    let schedule = schedule.parse().expect("schedule");
    TestApp::spawn_with(move |config| config.retry_schedule = schedule).await
}

pub fn event(id: &str, event_type: &str) -> Value {
    json!({ "id": id, "type": event_type, "data": { "ticket": { "id": format!("T-{id}"), "subject": "Printer on fire" } } })
}

/// The settlement a worker makes after attempting `claimed`: `200`/`success` when it
/// succeeded, `500`/`http_error` otherwise.
pub fn settlement(
    claimed: &deskhook::queue::Claimed,
    verdict: deskhook::queue::Verdict,
) -> deskhook::queue::Settlement {
    let succeeded = verdict == deskhook::queue::Verdict::Succeeded;
    deskhook::queue::Settlement {
        id: claimed.id,
        lease_id: claimed.lease_id,
        workspace_id: claimed.workspace_id,
        endpoint_id: claimed.endpoint_id,
        attempt: claimed.attempt,
        urgent: false,
        verdict,
        started_at: chrono::Utc::now(),
        duration_ms: 1,
        status_code: Some(if succeeded { 200 } else { 500 }),
        outcome: if succeeded { "success" } else { "http_error" },
        error: None,
        response_body: None,
    }
}
