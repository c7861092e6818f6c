//! The event catalogue and the wire format of a delivery's body.
//!
//! Body: `{"id": "evt_…", "type": "…", "timestamp": "…", "workspace_id": "ws_…", "data": {…}}`,
//! with `data` inserted verbatim from the stored raw JSON, so the body is the same bytes on
//! every attempt and for every endpoint.

use chrono::{DateTime, SecondsFormat, Utc};
use deskhook_tickets::{events::EventKind, sla::clock::Firing};

use crate::ids::{self, Kind};

/// Every event type Deskhook emits: the ticket core's kinds, its SLA firings, and the test
/// ping. Built from the ticket crate's own lists, so a kind added there is in the catalogue
/// (ingest, endpoint filters, the API's enums) with no second list to edit.
pub const EVENT_TYPES: &[&str] = &catalogue();

const CATALOGUE_LEN: usize = EventKind::ALL.len() + Firing::ALL.len() + 1;

const fn catalogue() -> [&'static str; CATALOGUE_LEN] {
    let mut all = [TEST_EVENT; CATALOGUE_LEN];
    let mut i = 0;
    while i < EventKind::ALL.len() {
        all[i] = EventKind::ALL[i].as_str();
        i += 1;
    }
    let mut j = 0;
    while j < Firing::ALL.len() {
        all[i + j] = Firing::ALL[j].event_type();
        j += 1;
    }
    all
}

/// The ping sent by `POST /v1/webhooks/{id}/test`; never subscribed to, never ingested.
pub const TEST_EVENT: &str = "webhook.test";

/// Whether `event_type` is one endpoints may subscribe to and producers may ingest.
pub fn is_subscribable(event_type: &str) -> bool {
    event_type != TEST_EVENT && EVENT_TYPES.contains(&event_type)
}

/// Builds the POST body of an event.
pub fn body(
    event_id: i64,
    event_type: &str,
    occurred_at: DateTime<Utc>,
    workspace_id: i64,
    data: &str,
) -> String {
    let mut out = String::with_capacity(data.len() + 160);
    out.push_str(r#"{"id":""#);
    out.push_str(&ids::encode(Kind::Event, event_id));
    out.push_str(r#"","type":"#);
    // Event types are from a closed set of plain ASCII names, but escape anyway.
    out.push_str(&serde_json::to_string(event_type).expect("a string serialises"));
    out.push_str(r#","timestamp":""#);
    out.push_str(&occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true));
    out.push_str(r#"","workspace_id":""#);
    out.push_str(&ids::encode(Kind::Workspace, workspace_id));
    out.push_str(r#"","data":"#);
    out.push_str(data);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_valid_json_with_the_documented_fields() {
        let at = DateTime::parse_from_rfc3339("2026-06-17T17:42:00.123Z")
            .expect("time")
            .with_timezone(&Utc);
        let text = body(42, "ticket.replied", at, 7, r#"{"ticket":{"id":"tkt_1"}}"#);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["id"], ids::encode(Kind::Event, 42));
        assert_eq!(value["type"], "ticket.replied");
        assert_eq!(value["timestamp"], "2026-06-17T17:42:00.123Z");
        assert_eq!(value["workspace_id"], ids::encode(Kind::Workspace, 7));
        assert_eq!(value["data"]["ticket"]["id"], "tkt_1");
    }

    #[test]
    fn the_catalogue_is_the_ticket_cores_kinds_then_its_sla_firings_then_the_ping() {
        assert_eq!(
            EVENT_TYPES,
            [
                "ticket.created",
                "ticket.replied",
                "ticket.closed",
                "ticket.updated",
                "ticket.assigned",
                "ticket.reopened",
                "sla.at_risk",
                "sla.breached",
                "webhook.test",
            ]
        );
    }

    #[test]
    fn the_test_event_is_not_subscribable() {
        assert!(is_subscribable("ticket.created"));
        assert!(is_subscribable("sla.at_risk"));
        assert!(!is_subscribable("webhook.test"));
        assert!(!is_subscribable("ticket.exploded"));
    }
}
