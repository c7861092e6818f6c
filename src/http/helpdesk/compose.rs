//! Seed 004's RPC-style routes with its field names, as JSON or a form:
//! `POST /v1/tickets/compose` (create a ticket with its first message, to a customer) and
//! `POST /v1/tickets/reply` (reply to a ticket's message as an agent, optionally changing the
//! ticket in the same transaction).
//!
//! Field mapping: `to` → requester (found or created by email), `content` → the message,
//! `status` 0 open / 1 pending / 2 closed / 3 deleted, `owner_id` → assignee (`0` unassigns),
//! `group_id` → group, `reopen_at` → `snoozed_until`, `send_at` → recorded on the reply,
//! `custom_<name>` → `custom_fields`. Accepted and ignored (out of scope, as in the seed's
//! own API surface here): `expand`, `bucket_id`, `org_id`, `cc`, `bcc`, `file_id[]`,
//! `html_template_id`, `content_format`, `dont_send` (Deskhook sends no email), and the reply's
//! mail flags. Anything else is 422. Must never guess an author: the key's user or `worker_id`.

use std::collections::BTreeMap;

use axum::{Router, extract::State, routing::post};
use chrono::{DateTime, Duration, Utc};
use deskhook_tickets::{
    ids::Kind,
    message::{AuthorInput, MessageKind, NewMessage},
    ticket::{NewTicket, Opener, RequesterInput, Status, TicketPatch, TicketRef},
};
use serde_json::{Map, Value};

use super::{
    Answer, actor,
    body::JsonOrForm,
    created, desk,
    params::{read_bool, read_time},
};
use crate::http::{
    ApiError, AppState,
    auth::{Principal, RequireScope as _},
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tickets/compose", post(compose))
        .route("/tickets/reply", post(reply))
}

/// Fields both routes accept and ignore.
const IGNORED: &[&str] = &[
    "expand",
    "bucket_id",
    "cc",
    "bcc",
    "file_id",
    "html_template_id",
    "content_format",
    "dont_send",
];
/// Fields only compose accepts and ignores.
const COMPOSE_IGNORED: &[&str] = &["org_id"];
/// Fields only reply accepts and ignores.
const REPLY_IGNORED: &[&str] = &[
    "to",
    "dont_keep_copy",
    "is_autoreply",
    "is_broadcast",
    "is_forward",
];

/// What seed 004's `status` integer asks for.
enum StatusRequest {
    Set(Status),
    Delete,
}

/// The body as named fields, with 422s collected per field.
struct Fields {
    values: Map<String, Value>,
    problems: BTreeMap<String, String>,
}

impl Fields {
    fn new(values: Map<String, Value>) -> Self {
        Self {
            values,
            problems: BTreeMap::new(),
        }
    }

    fn problem(&mut self, field: &str, reason: &str) {
        self.problems
            .entry(field.to_owned())
            .or_insert_with(|| reason.to_owned());
    }

    /// A field as text (strings, and numbers as forms would have sent them).
    fn text(&mut self, field: &str) -> Option<String> {
        match self.values.get(field)? {
            Value::String(text) => Some(text.trim().to_owned()).filter(|t| !t.is_empty()),
            Value::Number(number) => Some(number.to_string()),
            Value::Null => None,
            _ => {
                self.problem(field, "must be a string");
                None
            }
        }
    }

    fn required(&mut self, field: &str) -> Option<String> {
        let value = self.text(field);
        if value.is_none() && !self.problems.contains_key(field) {
            self.problem(field, "is required");
        }
        value
    }

    fn id(&mut self, field: &str, kind: Kind) -> Option<i64> {
        let text = self.text(field)?;
        let key = deskhook_tickets::ids::decode(kind, &text);
        if key.is_none() {
            self.problem(field, &format!("must be an id like {}_…", kind.prefix()));
        }
        key
    }

    fn status(&mut self) -> Option<StatusRequest> {
        let text = self.text("status")?;
        let status = match text.as_str() {
            "0" => StatusRequest::Set(Status::Open),
            "1" => StatusRequest::Set(Status::Pending),
            "2" => StatusRequest::Set(Status::Closed),
            "3" => StatusRequest::Delete,
            _ => {
                self.problem(
                    "status",
                    "must be 0 (open), 1 (waiting), 2 (closed) or 3 (deleted)",
                );
                return None;
            }
        };
        Some(status)
    }

    /// `owner_id`: an agent, or `0` to unassign.
    fn owner(&mut self) -> Option<Option<i64>> {
        if self.text("owner_id").as_deref() == Some("0") {
            return Some(None);
        }
        self.id("owner_id", Kind::User).map(Some)
    }

    /// A time: Unix seconds, RFC 3339, or relative (`+2 hours`).
    fn when(&mut self, field: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let text = self.text(field)?;
        let parsed = read_time(&text).or_else(|| relative_time(&text, now));
        if parsed.is_none() {
            self.problem(
                field,
                "must be Unix seconds, an RFC 3339 timestamp, or relative like +2 hours",
            );
        }
        parsed
    }

    /// The author: `worker_id`, else the key's user.
    fn author(&mut self, principal: &Principal) -> Option<i64> {
        let worker = self.id("worker_id", Kind::User);
        let author = worker.or(principal.user_id);
        if author.is_none() && !self.problems.contains_key("worker_id") {
            self.problem(
                "worker_id",
                "is required: this API key is not bound to a user",
            );
        }
        author
    }

    /// `custom_<name>` fields as an object, if any.
    fn custom_fields(&self) -> Map<String, Value> {
        self.values
            .iter()
            .filter(|(name, _)| name.starts_with("custom_") && name.len() > "custom_".len())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    /// 422 for any field not in `known` (nor ignored, nor `custom_*`); checks the flags.
    fn check_rest(&mut self, known: &[&str], ignored: &[&str]) {
        let unknown: Vec<String> = self
            .values
            .keys()
            .filter(|name| {
                !known.contains(&name.as_str())
                    && !IGNORED.contains(&name.as_str())
                    && !ignored.contains(&name.as_str())
                    && !name.starts_with("custom_")
            })
            .cloned()
            .collect();
        for name in unknown {
            self.problem(&name, "unknown field");
        }
        if let Some(flag) = self.text("dont_send")
            && read_bool(&flag).is_none()
        {
            self.problem("dont_send", "must be 0 or 1");
        }
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.problems))
        }
    }
}

/// `+2 hours`, `+30 minutes`, `+1 day`, `+1 week`.
fn relative_time(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let rest = text.trim().strip_prefix('+')?.trim();
    let (amount, unit) = rest.split_once(char::is_whitespace)?;
    let amount: i64 = amount.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let step = match unit.trim_end_matches('s') {
        "second" | "sec" => Duration::seconds(1),
        "minute" | "min" => Duration::minutes(1),
        "hour" | "hr" => Duration::hours(1),
        "day" => Duration::days(1),
        "week" => Duration::weeks(1),
        _ => return None,
    };
    now.checked_add_signed(step.checked_mul(i32::try_from(amount).ok()?)?)
}

fn object(value: Value) -> Result<Map<String, Value>, ApiError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::invalid_field(
            "body",
            "must be an object of fields",
        )),
    }
}

#[utoipa::path(
    post,
    path = "/v1/tickets/compose",
    tag = "tickets",
    summary = "Seed 004: create a ticket with its first message to a customer",
    request_body(content = Object, description = "Seed 004's fields: `to`, `subject`, `content`, `status`, `owner_id`, `group_id`, `reopen_at`, `custom_<name>`, ..."),
    responses((status = 201, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn compose(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<Value>,
) -> Answer {
    principal.require_write()?;
    let now = Utc::now();
    let mut fields = Fields::new(object(body)?);
    fields.check_rest(
        &[
            "to",
            "subject",
            "content",
            "group_id",
            "owner_id",
            "status",
            "reopen_at",
            "send_at",
            "worker_id",
        ],
        COMPOSE_IGNORED,
    );
    let to = fields.required("to");
    let subject = fields.required("subject");
    let content = fields.required("content");
    let group = fields.id("group_id", Kind::Group);
    let assignee = fields.owner().flatten();
    let status = match fields.status() {
        Some(StatusRequest::Set(status)) => Some(status),
        Some(StatusRequest::Delete) => {
            fields.problem("status", "a new ticket cannot be composed deleted");
            None
        }
        None => None,
    };
    let snoozed_until = fields.when("reopen_at", now);
    fields.when("send_at", now);
    let author = fields.author(&principal);
    let custom = fields.custom_fields();
    // Seed 004's `to` is a comma list of addresses; the first is the requester.
    let email = to.and_then(|to| to.split(',').next().map(|first| first.trim().to_owned()));
    fields.finish()?;
    let input = NewTicket {
        subject: subject.unwrap_or_default(),
        description: content,
        requester: email.map(|email| RequesterInput::ByEmail { email, name: None }),
        status,
        assignee,
        group,
        custom_fields: (!custom.is_empty()).then_some(Value::Object(custom)),
        opener: author.map_or(Opener::Customer, Opener::Agent),
        snoozed_until,
        ..NewTicket::default()
    };
    let ticket = desk(&state, &principal)
        .create_ticket(actor(&principal), input)
        .await?;
    Ok(created(&ticket))
}

#[utoipa::path(
    post,
    path = "/v1/tickets/reply",
    tag = "tickets",
    summary = "Seed 004: reply to a ticket's message, optionally changing the ticket",
    request_body(content = Object, description = "Seed 004's fields: `message_id`, `content`, `status`, `owner_id`, `send_at`, ..."),
    responses((status = 201, description = "The message", body = crate::http::openapi::DataEnvelope))
)]
async fn reply(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<Value>,
) -> Answer {
    principal.require_write()?;
    let now = Utc::now();
    let mut fields = Fields::new(object(body)?);
    fields.check_rest(
        &[
            "message_id",
            "content",
            "status",
            "owner_id",
            "group_id",
            "subject",
            "reopen_at",
            "send_at",
            "worker_id",
        ],
        REPLY_IGNORED,
    );
    let message_id = fields.required("message_id");
    let content = fields.required("content");
    let status = fields.status();
    let assignee = fields.owner();
    let group = fields.id("group_id", Kind::Group);
    let subject = fields.text("subject");
    let snoozed_until = fields.when("reopen_at", now);
    let send_at = fields.when("send_at", now);
    let author = fields.author(&principal);
    let custom = fields.custom_fields();
    fields.finish()?;

    let desk = desk(&state, &principal);
    let message_key = message_id
        .as_deref()
        .and_then(|id| deskhook_tickets::ids::decode(Kind::Message, id))
        .ok_or_else(|| ApiError::not_found("Message"))?;
    let ticket_key = desk.ticket_of_message(message_key).await?;
    let custom_fields = if custom.is_empty() {
        None
    } else {
        let mut merged = match desk.ticket(TicketRef::Key(ticket_key)).await?.custom_fields {
            Value::Object(existing) => existing,
            _ => Map::new(),
        };
        merged.extend(custom);
        Some(Value::Object(merged))
    };
    let patch = TicketPatch {
        subject,
        status: match status {
            Some(StatusRequest::Set(status)) => Some(status),
            _ => None,
        },
        assignee,
        group: group.map(Some),
        custom_fields,
        snoozed_until: snoozed_until.map(Some),
        ..TicketPatch::default()
    };
    let message = NewMessage {
        body: content.unwrap_or_default(),
        kind: Some(MessageKind::Reply),
        internal: None,
        author: author.map_or(AuthorInput::Customer(None), AuthorInput::Agent),
        send_at,
    };
    let (message, _ticket) = desk
        .reply_and_update(
            actor(&principal),
            TicketRef::Key(ticket_key),
            message,
            patch,
        )
        .await?;
    if matches!(status, Some(StatusRequest::Delete)) {
        desk.delete_ticket(actor(&principal), TicketRef::Key(ticket_key))
            .await?;
    }
    Ok(created(&message))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn relative_times() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).single().expect("time");
        assert_eq!(
            relative_time("+2 hours", now),
            Some(now + Duration::hours(2))
        );
        assert_eq!(relative_time("+1 day", now), Some(now + Duration::days(1)));
        assert_eq!(relative_time("Friday 2pm", now), None);
        assert_eq!(relative_time("+x hours", now), None);
    }
}
