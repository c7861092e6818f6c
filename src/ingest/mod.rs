//! Ingest: events posted by a helpdesk core outside this process (`POST /v1/events`).
//!
//! A body is one event or `{"events": [...]}` (at most [`MAX_BATCH`]). Validation is
//! all-or-nothing: one bad event rejects the whole batch with every problem named by index,
//! so a producer never has to guess what was kept. Accepted events are durably committed
//! before the answer; an event whose producer id the workspace already has is a duplicate and
//! is not queued again. Ingest only queues events: it never creates or changes tickets.

mod batcher;

use std::collections::{BTreeMap, HashSet};

use crate::{
    events,
    queue::{NewEvent, Stored},
};
pub use batcher::IngestBatcher;
use chrono::{DateTime, Utc};
use deskhook_tickets::outbox::EventSource;
use rand::{Rng as _, distributions::Alphanumeric};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Events per request at most.
pub const MAX_BATCH: usize = 500;
/// The largest `data` object.
pub const MAX_DATA_BYTES: usize = 256 * 1024;

/// Why a value with U+0000 is refused: PostgreSQL `text` and `jsonb` cannot hold it, and a
/// statement failing on one event would fail its whole group commit.
const NUL_REFUSED: &str = "must not contain NUL characters (\\u0000)";

/// Whether raw JSON holds U+0000 in a string or a key. JSON can only spell it as an escape, so
/// the text is parsed only when that escape appears in it.
fn holds_nul(raw: &str) -> bool {
    fn walk(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(walk),
            serde_json::Value::Object(fields) => fields
                .iter()
                .any(|(name, item)| name.contains('\0') || walk(item)),
            _ => false,
        }
    }
    raw.contains("\\u0000")
        && serde_json::from_str::<serde_json::Value>(raw).is_ok_and(|value| walk(&value))
}
/// The largest request body.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// What ingest can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not JSON.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// Events are invalid: field path → reason.
    #[error("invalid events: {0:?}")]
    Invalid(BTreeMap<String, String>),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incoming<'a> {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    occurred_at: Option<DateTime<Utc>>,
    #[serde(borrow)]
    data: &'a RawValue,
    ticket_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// The answer for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The event key (`evt_…`); the first one's for a duplicate.
    pub event_id: i64,
    /// The producer's id (or the generated one).
    pub external_id: String,
    /// Whether it had been accepted before.
    pub duplicate: bool,
    /// The event type.
    pub event_type: String,
}

/// Parses and validates a body into events ready to queue.
pub fn parse(body: &[u8]) -> Result<Vec<NewEvent>, IngestError> {
    let value: &RawValue =
        serde_json::from_slice(body).map_err(|error| IngestError::Malformed(error.to_string()))?;
    let trimmed = value.get().trim_start();
    if !trimmed.starts_with('{') {
        return Err(IngestError::Invalid(BTreeMap::from([(
            "body".to_owned(),
            "must be an event object or {\"events\": [...]}".to_owned(),
        )])));
    }
    // A batch is the only shape with an `events` key.
    let raw_events: Vec<(String, &RawValue)> = match serde_json::from_str::<Batch<'_>>(value.get())
    {
        Ok(batch) => batch
            .events
            .into_iter()
            .enumerate()
            .map(|(i, raw)| (format!("events[{i}]"), raw))
            .collect(),
        Err(_) if has_events_key(value) => {
            return Err(IngestError::Invalid(BTreeMap::from([(
                "events".to_owned(),
                "must be an array of event objects and the only key of a batch".to_owned(),
            )])));
        }
        Err(_) => vec![(String::new(), value)],
    };
    let mut errors = BTreeMap::new();
    if raw_events.is_empty() {
        errors.insert(
            "events".to_owned(),
            "must hold at least one event".to_owned(),
        );
    }
    if raw_events.len() > MAX_BATCH {
        errors.insert(
            "events".to_owned(),
            format!(
                "holds {} events; at most {MAX_BATCH} per request",
                raw_events.len()
            ),
        );
        return Err(IngestError::Invalid(errors));
    }
    let now = Utc::now();
    let mut out = Vec::with_capacity(raw_events.len());
    for (path, raw) in raw_events {
        let field = |name: &str| {
            if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        };
        let incoming: Incoming<'_> = match serde_json::from_str(raw.get()) {
            Ok(incoming) => incoming,
            Err(error) => {
                let message = error.to_string();
                let message = message
                    .rfind(" at line ")
                    .map_or(message.as_str(), |i| &message[..i]);
                errors.insert(
                    if path.is_empty() {
                        "body".to_owned()
                    } else {
                        path.clone()
                    },
                    message.to_owned(),
                );
                continue;
            }
        };
        if !events::is_subscribable(&incoming.event_type) {
            errors.insert(
                field("type"),
                format!(
                    "`{}` is not an event type; expected one of {}",
                    incoming.event_type,
                    events::EVENT_TYPES
                        .iter()
                        .filter(|t| **t != events::TEST_EVENT)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        if let Some(id) = &incoming.id
            && !valid_producer_id(id)
        {
            errors.insert(
                field("id"),
                "must be 1-255 characters of A-Z, a-z, 0-9, `_`, `.`, `:` or `-`".to_owned(),
            );
        }
        if let Some(ticket) = &incoming.ticket_id
            && (ticket.is_empty() || ticket.len() > 255)
        {
            errors.insert(field("ticket_id"), "must be 1-255 characters".to_owned());
        } else if let Some(ticket) = &incoming.ticket_id
            && ticket.contains('\0')
        {
            errors.insert(field("ticket_id"), NUL_REFUSED.to_owned());
        }
        let data = incoming.data.get();
        if !data.trim_start().starts_with('{') {
            errors.insert(field("data"), "must be a JSON object".to_owned());
        } else if data.len() > MAX_DATA_BYTES {
            errors.insert(
                field("data"),
                format!("is {} bytes; at most {MAX_DATA_BYTES}", data.len()),
            );
        } else if holds_nul(data) {
            errors.insert(field("data"), NUL_REFUSED.to_owned());
        }
        out.push(NewEvent {
            event_type: incoming.event_type,
            source: EventSource::Ingest,
            ticket_key: incoming.ticket_id,
            external_id: Some(incoming.id.unwrap_or_else(generated_id)),
            occurred_at: incoming.occurred_at.unwrap_or(now),
            data: data.to_owned(),
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(IngestError::Invalid(errors))
    }
}

fn has_events_key(value: &RawValue) -> bool {
    serde_json::from_str::<BTreeMap<String, &RawValue>>(value.get())
        .is_ok_and(|map| map.contains_key("events"))
}

fn valid_producer_id(id: &str) -> bool {
    (1..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn generated_id() -> String {
    let random: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("dh_{random}")
}

/// Stores the events of one request; returns once they are committed (possibly together with
/// other requests' events: see [`IngestBatcher`]).
pub async fn accept(
    batcher: &IngestBatcher,
    workspace_id: i64,
    events: Vec<NewEvent>,
) -> Result<Vec<Accepted>, IngestError> {
    // Only the ids and types are needed afterwards: the events themselves move into the batch.
    let labels: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e.external_id.clone().unwrap_or_default(),
                e.event_type.clone(),
            )
        })
        .collect();
    let stored: Vec<Stored> = batcher.submit(workspace_id, events).await?;
    // Within one request, a repeated producer id is a duplicate of its first occurrence.
    let mut seen = HashSet::new();
    Ok(labels
        .into_iter()
        .zip(stored)
        .map(|((external_id, event_type), stored)| {
            let repeated = !seen.insert(external_id.clone());
            Accepted {
                event_id: stored.event_id,
                duplicate: stored.duplicate || repeated,
                external_id,
                event_type,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(body: &str) -> BTreeMap<String, String> {
        match parse(body.as_bytes()) {
            Err(IngestError::Invalid(fields)) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn one_event_or_a_batch() {
        let one = parse(br#"{"id":"a-1","type":"ticket.created","data":{"x":1}}"#).expect("one");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].external_id.as_deref(), Some("a-1"));
        assert_eq!(one[0].data, r#"{"x":1}"#);
        let batch = parse(
            br#"{"events":[{"type":"ticket.created","data":{}},{"type":"sla.at_risk","data":{},"ticket_id":"T-9"}]}"#,
        )
        .expect("batch");
        assert_eq!(batch.len(), 2);
        assert!(
            batch[0]
                .external_id
                .as_deref()
                .is_some_and(|id| id.starts_with("dh_"))
        );
        assert_eq!(batch[1].ticket_key.as_deref(), Some("T-9"));
    }

    #[test]
    fn a_batch_is_all_or_nothing_with_every_problem_named() {
        let fields = invalid(
            r#"{"events":[{"type":"ticket.created","data":{}},{"type":"nope","data":[]},{"id":"bad id!","type":"ticket.closed","data":{}}]}"#,
        );
        assert!(fields.contains_key("events[1].type"), "{fields:?}");
        assert!(fields.contains_key("events[1].data"), "{fields:?}");
        assert!(fields.contains_key("events[2].id"), "{fields:?}");
        assert!(!fields.keys().any(|k| k.starts_with("events[0]")));
    }

    #[test]
    fn bad_shapes_are_named() {
        assert!(invalid(r#"{"type":"webhook.test","data":{}}"#).contains_key("type"));
        assert!(invalid(r#"{"type":"ticket.created"}"#).contains_key("body"));
        assert!(invalid(r#"{"type":"ticket.created","data":{},"extra":1}"#).contains_key("body"));
        assert!(invalid(r#"{"events":[]}"#).contains_key("events"));
        assert!(invalid(r#"{"events":{}}"#).contains_key("events"));
        assert!(invalid("[1,2]").contains_key("body"));
        let big = format!(
            r#"{{"type":"ticket.created","data":{{"x":"{}"}}}}"#,
            "a".repeat(MAX_DATA_BYTES)
        );
        assert!(invalid(&big).contains_key("data"));
        let many = format!(
            r#"{{"events":[{}]}}"#,
            vec![r#"{"type":"ticket.created","data":{}}"#; MAX_BATCH + 1].join(",")
        );
        assert!(invalid(&many).contains_key("events"));
        assert!(matches!(parse(b"{nope"), Err(IngestError::Malformed(_))));
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Value, json};

        use super::super::*;

        fn event() -> impl Strategy<Value = (String, String, Option<String>, Value)> {
            let types: Vec<&str> = events::EVENT_TYPES
                .iter()
                .copied()
                .filter(|t| *t != events::TEST_EVENT)
                .collect();
            (
                proptest::sample::select(types),
                "[A-Za-z0-9_.:-]{1,64}",
                proptest::option::of("[^\\u{0}]{1,40}"),
                proptest::collection::btree_map("[a-z]{1,8}", "[^\\u{0}]{0,20}", 0..5),
            )
                .prop_map(|(t, id, ticket, data)| (t.to_owned(), id, ticket, json!(data)))
        }

        proptest! {
            /// Any bytes at all are an answer (events or a validation error), never a panic.
            #[test]
            fn any_body_is_parsed_or_refused(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse(&body);
            }

            /// Valid events come out as they went in, in order, alone or in a batch.
            #[test]
            fn valid_events_keep_their_fields_and_order(events in proptest::collection::vec(event(), 1..8)) {
                let json_events: Vec<Value> = events
                    .iter()
                    .map(|(t, id, ticket, data)| {
                        let mut e = json!({ "type": t, "id": id, "data": data });
                        if let Some(ticket) = ticket {
                            e["ticket_id"] = json!(ticket);
                        }
                        e
                    })
                    .collect();
                let batch = parse(json!({ "events": json_events }).to_string().as_bytes())
                    .expect("a valid batch");
                prop_assert_eq!(batch.len(), events.len());
                for (parsed, (t, id, ticket, data)) in batch.iter().zip(&events) {
                    prop_assert_eq!(&parsed.event_type, t);
                    prop_assert_eq!(parsed.external_id.as_deref(), Some(id.as_str()));
                    prop_assert_eq!(&parsed.ticket_key, ticket);
                    prop_assert_eq!(&serde_json::from_str::<Value>(&parsed.data).expect("json"), data);
                }
                let one = parse(json_events[0].to_string().as_bytes()).expect("one event");
                prop_assert_eq!(one.len(), 1);
            }

            /// A NUL anywhere PostgreSQL's text would refuse it is a 422 naming the field,
            /// never a stored event (review L4).
            #[test]
            fn a_nul_is_refused_by_field((t, id, _, _) in event(), before in "[a-z]{0,5}", after in "[a-z]{0,5}") {
                let nul = format!("{before}\u{0}{after}");
                for (body, field) in [
                    (json!({ "type": t, "id": id, "ticket_id": nul, "data": {} }), "ticket_id"),
                    (json!({ "type": t, "id": id, "data": { "note": nul } }), "data"),
                ] {
                    match parse(body.to_string().as_bytes()) {
                        Err(IngestError::Invalid(fields)) => prop_assert!(fields.contains_key(field), "{:?}", fields),
                        other => prop_assert!(false, "{:?}", other),
                    }
                }
            }
        }
    }
}
