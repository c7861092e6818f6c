//! SLA timers as subscribers see them: policies and calendars through the API, deadlines of
//! seconds (`minutes` accepts decimals), and `sla.at_risk` / `sla.breached` arriving signed at a
//! real receiver — once per deadline, with two instances, and after a restart.

mod api;
mod instances;
mod lag;
mod timer;

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Api, TestApp, receiver::Receiver};

/// Long enough for any deadline these tests set (they are seconds), short enough to fail fast.
const WAIT: Duration = Duration::from_secs(20);

/// A workspace with an agent and a receiver subscribed to the SLA events.
pub struct Desk {
    pub api: Api,
    pub agent: String,
    pub receiver: Receiver,
}

impl Desk {
    pub async fn new(app: &TestApp) -> Self {
        let api = app.api("Acme").await;
        let agent = api.user("Agent", "agent@example.com").await["id"]
            .as_str()
            .expect("user id")
            .to_owned();
        let receiver = Receiver::start().await;
        let (status, created) = api
            .post(
                "/webhooks",
                json!({"url": receiver.url, "events": ["sla.at_risk", "sla.breached"]}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        receiver.trust(&[created["data"]["secret"].as_str().expect("secret")]);
        Self {
            api,
            agent,
            receiver,
        }
    }

    /// Creates a policy with `targets`; returns it.
    pub async fn policy(&self, targets: Value) -> Value {
        let (status, body) = self
            .api
            .post("/sla-policies", json!({"name": "Fast", "targets": targets}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"].clone()
    }

    /// Creates a customer ticket at `priority`; returns it.
    pub async fn ticket(&self, subject: &str, priority: &str) -> Value {
        let (status, body) = self
            .api
            .post(
                "/tickets",
                json!({
                    "subject": subject,
                    "priority": priority,
                    "requester": {"email": "customer@example.com", "name": "Customer"},
                    "message": "Help",
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"].clone()
    }

    /// Adds a message to `ticket`: `who` is `agent` or `customer`, `kind` `reply` or `note`.
    pub async fn message(&self, ticket: &Value, who: &str, kind: &str) -> Value {
        let author = if who == "agent" {
            json!({"type": "agent", "id": self.agent})
        } else {
            json!({"type": "customer"})
        };
        let (status, body) = self
            .api
            .post(
                &format!("/tickets/{}/messages", id(ticket)),
                json!({"body": "Hello", "type": kind, "author": author}),
            )
            .await;
        assert!(status == 201 || status == 200, "{status} {body}");
        body
    }

    /// Changes `ticket`; returns it.
    pub async fn change(&self, ticket: &Value, patch: Value) -> Value {
        let (status, body) = self
            .api
            .patch(&format!("/tickets/{}", id(ticket)), patch)
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// The ticket as the API shows it now.
    pub async fn show(&self, ticket: &Value) -> Value {
        let (status, body) = self.api.get(&format!("/tickets/{}", id(ticket))).await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// The SLA events the receiver got about `ticket`: (type, data.sla), in arrival order.
    pub fn events_of(&self, ticket: &Value) -> Vec<(String, Value)> {
        sla_events(&self.receiver, ticket)
    }

    /// Waits until the receiver has `count` events of `kind` about `ticket`.
    pub async fn wait(&self, ticket: &Value, kind: &str, count: usize) -> Vec<(String, Value)> {
        let ticket = ticket.clone();
        let kind = kind.to_owned();
        self.receiver
            .wait_until(WAIT, |received| {
                received
                    .iter()
                    .filter(|r| {
                        r.json["type"] == kind && r.json["data"]["ticket"]["id"] == ticket["id"]
                    })
                    .count()
                    >= count
            })
            .await;
        self.events_of(&ticket)
    }
}

pub fn id(ticket: &Value) -> &str {
    ticket["id"].as_str().expect("ticket id")
}

pub fn sla_events(receiver: &Receiver, ticket: &Value) -> Vec<(String, Value)> {
    let mut seen = std::collections::HashSet::new();
    receiver
        .received()
        .into_iter()
        .filter(|r| r.json["data"]["ticket"]["id"] == ticket["id"])
        // A redelivery (same webhook-id) is the same event.
        .filter(|r| seen.insert(r.event_id()))
        .map(|r| {
            assert_eq!(r.verified_by, [0], "signature must verify");
            (
                r.json["type"].as_str().unwrap_or_default().to_owned(),
                r.json["data"]["sla"].clone(),
            )
        })
        .collect()
}

pub fn count(events: &[(String, Value)], kind: &str, metric: &str) -> usize {
    events
        .iter()
        .filter(|(k, sla)| k == kind && sla["metric"] == metric)
        .count()
}

pub fn instant(value: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(value.as_str().expect("an instant"))
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}
