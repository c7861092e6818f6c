//! The conversation: `/v1/tickets/{id}/messages`, seed 002's `/v1/tickets/{id}/replies` and
//! seed 001's flat `/v1/conversations`, all over the same messages.
//!
//! Bodies: `{body, type, internal?, author?}` with the seed aliases `content` (001) and
//! `ticketreply_text`/`ticketreply_type` (002, also as a form). The author defaults to the
//! key's user; a key bound to no user must name one (422). Must never pick an author the
//! request did not name or the key is not bound to.

use axum::{
    Router,
    extract::{Path, State},
    routing::{delete, get},
};
use deskhook_tickets::{
    ids::Kind,
    listing::{Page, Sort, SortField},
    message::{AuthorInput, AuthorKind, Message, MessageFilter, MessageKind, NewMessage},
    ticket::TicketRef,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Answer, actor,
    body::JsonOrForm,
    created, desk, list, no_content, ok,
    params::{body_id, csv_of, list_query, path_id, query_bool, read_bool, ticket_path},
};
use crate::http::{
    ApiError, AppState,
    auth::{Principal, RequireScope as _},
    extract::Query,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/tickets/{id}/messages",
            get(list_ticket_messages).post(add_ticket_message),
        )
        .route(
            "/tickets/{id}/messages/{message_id}",
            get(show_ticket_message).delete(delete_ticket_message),
        )
        .route(
            "/tickets/{id}/replies",
            get(list_ticket_messages).post(add_ticket_message),
        )
        .route(
            "/tickets/{id}/replies/{message_id}",
            delete(delete_ticket_message).get(show_ticket_message),
        )
        .route(
            "/conversations",
            get(list_conversations).post(add_conversation),
        )
        .route("/conversations/{message_id}", get(show_conversation))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AuthorBody {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "customer")]
    kind: AuthorKind,
    id: Option<String>,
}

/// A new message, with the seeds' spellings.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    #[serde(alias = "content", alias = "ticketreply_text")]
    body: Option<String>,
    #[serde(rename = "type", alias = "ticketreply_type")]
    kind: Option<String>,
    internal: Option<Value>,
    author: Option<AuthorBody>,
    /// Seed 001's flat route names the ticket in the body.
    ticket_id: Option<Value>,
}

impl MessageBody {
    fn into_new_message(self, principal: &Principal) -> Result<NewMessage, ApiError> {
        let mut problems = Vec::new();
        let kind = match self
            .kind
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
        {
            None => None,
            Some(text) => {
                let kind = MessageKind::parse(text);
                if kind.is_none() {
                    problems.push(("type", "must be reply or note".to_owned()));
                }
                kind
            }
        };
        let internal = match &self.internal {
            None | Some(Value::Null) => None,
            Some(Value::Bool(flag)) => Some(*flag),
            Some(Value::String(text)) if read_bool(text).is_some() => read_bool(text),
            Some(_) => {
                problems.push(("internal", "must be true or false".to_owned()));
                None
            }
        };
        let body = self.body.unwrap_or_default();
        if body.trim().is_empty() {
            problems.push(("body", "is required".to_owned()));
        }
        let author = match self.author {
            Some(AuthorBody {
                kind: AuthorKind::Agent,
                id: Some(id),
            }) => body_id(Kind::User, &id, "author.id").map(AuthorInput::Agent),
            Some(AuthorBody {
                kind: AuthorKind::Agent,
                id: None,
            }) => principal.user_id.map(AuthorInput::Agent).ok_or_else(|| {
                ApiError::invalid_field("author.id", "is required for an agent author")
            }),
            Some(AuthorBody {
                kind: AuthorKind::Customer,
                id: Some(id),
            }) => body_id(Kind::Customer, &id, "author.id")
                .map(|key| AuthorInput::Customer(Some(key))),
            Some(AuthorBody {
                kind: AuthorKind::Customer,
                id: None,
            }) => Ok(AuthorInput::Customer(None)),
            None => principal.user_id.map(AuthorInput::Agent).ok_or_else(|| {
                ApiError::invalid_field(
                    "author",
                    "is required: this API key is not bound to a user",
                )
            }),
        };
        let author = match author {
            Ok(author) => Some(author),
            Err(error) if problems.is_empty() => return Err(error),
            Err(_) => {
                problems.push(("author", "is invalid".to_owned()));
                None
            }
        };
        if !problems.is_empty() {
            return Err(ApiError::invalid_fields(problems));
        }
        Ok(NewMessage {
            body,
            kind,
            internal,
            author: author.unwrap_or(AuthorInput::Customer(None)),
            send_at: None,
        })
    }
}

list_query!(MessageQuery {
    ticket_id,
    #[serde(rename = "type")]
    kind,
    internal,
});

// A ticket's own list: the ticket is in the path, so `ticket_id` is no parameter of it.
list_query!(TicketMessageQuery {
    #[serde(rename = "type")]
    kind,
    internal,
});

fn message_filter(
    ticket: Option<TicketRef>,
    kind: Option<&str>,
    internal: Option<&str>,
) -> Result<MessageFilter, ApiError> {
    Ok(MessageFilter {
        ticket,
        kinds: csv_of("type", kind, MessageKind::parse)?,
        internal: query_bool("internal", internal)?,
    })
}

fn message_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::Message, id, "Message")
}

#[utoipa::path(
    get,
    path = "/v1/tickets/{id}/messages",
    tag = "messages",
    summary = "List a ticket's messages (also at `/replies`, seed 002)",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number"), TicketMessageQuery),
    responses((status = 200, description = "A page of messages", body = crate::http::openapi::ListEnvelope))
)]
async fn list_ticket_messages(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<TicketMessageQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::asc(SortField::CreatedAt))?;
    let filter = message_filter(
        Some(ticket_path(&id)?),
        query.kind.as_deref(),
        query.internal.as_deref(),
    )?;
    let messages = desk(&state, &principal)
        .list_messages(&filter, &page)
        .await?;
    Ok(list(&messages, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/tickets/{id}/messages",
    tag = "messages",
    summary = "Add a reply or an internal note (also at `/replies`, seed 002)",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    request_body = MessageBody,
    responses((status = 201, description = "The message", body = crate::http::openapi::DataEnvelope))
)]
async fn add_ticket_message(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<MessageBody>,
) -> Answer {
    principal.require_write()?;
    let reference = ticket_path(&id)?;
    if body.ticket_id.is_some() {
        return Err(ApiError::invalid_field(
            "ticket_id",
            "is not a field of this route: the ticket is in the path",
        ));
    }
    let input = body.into_new_message(&principal)?;
    let (message, _ticket) = desk(&state, &principal)
        .add_message(actor(&principal), reference, input)
        .await?;
    Ok(created(&message))
}

#[utoipa::path(
    get,
    path = "/v1/tickets/{id}/messages/{message_id}",
    tag = "messages",
    summary = "Get a ticket's message",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number"), ("message_id" = String, Path, description = "The message's `msg_…` id")),
    responses((status = 200, description = "The message", body = crate::http::openapi::DataEnvelope))
)]
async fn show_ticket_message(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, message_id)): Path<(String, String)>,
) -> Answer {
    principal.require_read()?;
    let desk = desk(&state, &principal);
    let ticket = desk.ticket(ticket_path(&id)?).await?;
    let message = desk.message(message_key(&message_id)?).await?;
    if message.ticket_id != ticket.id {
        return Err(ApiError::not_found("Message"));
    }
    Ok(ok(&message))
}

#[utoipa::path(
    delete,
    path = "/v1/tickets/{id}/messages/{message_id}",
    tag = "messages",
    summary = "Delete a ticket's message",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number"), ("message_id" = String, Path, description = "The message's `msg_…` id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_ticket_message(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, message_id)): Path<(String, String)>,
) -> Answer {
    principal.require_write()?;
    let reference = ticket_path(&id)?;
    desk(&state, &principal)
        .delete_message(actor(&principal), reference, message_key(&message_id)?)
        .await?;
    Ok(no_content())
}

/// A message with seed 001's read field `content_text` beside `body`.
#[derive(Serialize)]
struct Conversation<'a> {
    #[serde(flatten)]
    message: &'a Message,
    content_text: &'a str,
}

impl<'a> From<&'a Message> for Conversation<'a> {
    fn from(message: &'a Message) -> Self {
        Self {
            message,
            content_text: &message.body,
        }
    }
}

fn ticket_query(value: Option<&str>) -> Result<Option<TicketRef>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) => TicketRef::parse(text)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("`{text}` is not a ticket id or number"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/conversations",
    tag = "messages",
    summary = "List messages across tickets (seed 001; `ticket_id` filters)",
    params(MessageQuery),
    responses((status = 200, description = "A page of messages", body = crate::http::openapi::ListEnvelope))
)]
async fn list_conversations(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<MessageQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::asc(SortField::CreatedAt))?;
    let filter = message_filter(
        ticket_query(query.ticket_id.as_deref())?,
        query.kind.as_deref(),
        query.internal.as_deref(),
    )?;
    let messages = desk(&state, &principal)
        .list_messages(&filter, &page)
        .await?;
    let view = Page {
        items: messages.items.iter().map(Conversation::from).collect(),
        next: messages.next.clone(),
        total: messages.total,
    };
    Ok(list(&view, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "messages",
    summary = "Add a message, naming the ticket in `ticket_id` (seed 001)",
    request_body = MessageBody,
    responses((status = 201, description = "The message", body = crate::http::openapi::DataEnvelope))
)]
async fn add_conversation(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<MessageBody>,
) -> Answer {
    principal.require_write()?;
    let reference = match &body.ticket_id {
        Some(Value::String(text)) => TicketRef::parse(text),
        Some(Value::Number(number)) => number.as_i64().filter(|n| *n > 0).map(TicketRef::Number),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::invalid_field("ticket_id", "must name a ticket (tkt_… or its number)")
    })?;
    let input = MessageBody {
        ticket_id: None,
        ..body
    }
    .into_new_message(&principal)?;
    let (message, _ticket) = desk(&state, &principal)
        .add_message(actor(&principal), reference, input)
        .await?;
    Ok(created(&Conversation::from(&message)))
}

#[utoipa::path(
    get,
    path = "/v1/conversations/{message_id}",
    tag = "messages",
    summary = "Get a message (seed 001)",
    params(("message_id" = String, Path, description = "The message's `msg_…` id")),
    responses((status = 200, description = "The message", body = crate::http::openapi::DataEnvelope))
)]
async fn show_conversation(
    State(state): State<AppState>,
    principal: Principal,
    Path(message_id): Path<String>,
) -> Answer {
    principal.require_read()?;
    let message = desk(&state, &principal)
        .message(message_key(&message_id)?)
        .await?;
    Ok(ok(&Conversation::from(&message)))
}
