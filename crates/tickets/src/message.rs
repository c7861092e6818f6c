//! The conversation: public replies and internal notes on a ticket, written by an agent or the
//! customer.
//!
//! Adding a message updates its ticket in the same transaction: a public reply counts in
//! `replies_count` and `latest_message_preview`; an agent's first public reply on a
//! customer-originated ticket stamps `first_responded_at`; a customer's public reply reopens a
//! `pending`, `on_hold`, `solved` or `closed` ticket. A public message fires `ticket.replied`
//! (and a reopen `ticket.reopened`); a note fires nothing. Owns the `message` table; must never
//! let a note be public or a customer write a note.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::{
    Actor, Helpdesk, TicketError,
    activity::{self, Entry},
    events::{self, EventKind},
    ids::{Kind, encode},
    listing::{ListSpec, Page, PageRequest, SortExpression, SortField, fetch_page},
    sla::store::{self as sla, Change},
    ticket::{Status, Ticket, TicketPatch, TicketRef, store},
    validate::Problems,
};

/// The longest message body.
pub const MAX_BODY: usize = 500_000;

/// A public reply or an internal note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Visible to the customer.
    Reply,
    /// Internal to agents.
    Note,
}

impl MessageKind {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::Note => "note",
        }
    }

    /// Parses a name.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "reply" => Some(Self::Reply),
            "note" => Some(Self::Note),
            _ => None,
        }
    }
}

/// Who wrote a message, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageAuthor {
    /// `agent` or `customer`.
    #[serde(rename = "type")]
    pub kind: AuthorKind,
    /// `usr_…` or `cus_…`.
    pub id: Option<String>,
    /// Name when the message was written.
    pub name: Option<String>,
    /// Email when the message was written.
    pub email: Option<String>,
}

/// The two kinds of authors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorKind {
    /// An agent.
    Agent,
    /// The customer.
    Customer,
}

impl AuthorKind {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Customer => "customer",
        }
    }
}

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `msg_…`.
    pub id: String,
    /// `tkt_…`.
    pub ticket_id: String,
    /// Reply or note.
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// Whether only agents see it (notes).
    pub internal: bool,
    /// The text.
    pub body: String,
    /// Who wrote it.
    pub author: MessageAuthor,
    /// When.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: i64,
    ticket_id: i64,
    kind: String,
    internal: bool,
    body: String,
    author_type: String,
    author_id: Option<i64>,
    author_name: Option<String>,
    author_email: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<MessageRow> for Message {
    fn from(row: MessageRow) -> Self {
        let (kind, id_kind) = if row.author_type == "agent" {
            (AuthorKind::Agent, Kind::User)
        } else {
            (AuthorKind::Customer, Kind::Customer)
        };
        Self {
            key: row.id,
            id: encode(Kind::Message, row.id),
            ticket_id: encode(Kind::Ticket, row.ticket_id),
            kind: MessageKind::parse(&row.kind).unwrap_or(MessageKind::Note),
            internal: row.internal,
            body: row.body,
            author: MessageAuthor {
                kind,
                id: row.author_id.map(|key| encode(id_kind, key)),
                name: row.author_name,
                email: row.author_email,
            },
            created_at: row.created_at,
        }
    }
}

macro_rules! message_columns {
    () => {
        "m.id, m.ticket_id, m.kind, m.internal, m.body, m.author_type, m.author_id, \
         m.author_name, m.author_email, m.created_at"
    };
}

/// The start of a message as a one-line preview: SQL over the text expression `body`.
pub(crate) fn preview_sql(body: &str) -> String {
    format!("left(regexp_replace(btrim({body}), '\\s+', ' ', 'g'), 140)")
}

const LIST: ListSpec = ListSpec {
    select: concat!(
        message_columns!(),
        " FROM message m JOIN ticket t ON t.workspace_id = m.workspace_id AND t.id = m.ticket_id AND t.deleted_at IS NULL"
    ),
    from: "message m JOIN ticket t ON t.workspace_id = m.workspace_id AND t.id = m.ticket_id AND t.deleted_at IS NULL",
    key: "m.id",
    sorts: |field| match field {
        SortField::CreatedAt | SortField::UpdatedAt => Some(SortExpression {
            sql: "m.created_at",
            cast: "timestamptz",
        }),
        _ => None,
    },
};

/// Who is to be recorded as the author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorInput {
    /// An agent of the workspace.
    Agent(i64),
    /// A customer; `None` is the ticket's requester.
    Customer(Option<i64>),
}

/// A message to add.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The text (required).
    pub body: String,
    /// Reply or note; absent means a note when `internal` is true, else a reply.
    pub kind: Option<MessageKind>,
    /// Seed 001's `internal` flag (must agree with `kind`).
    pub internal: Option<bool>,
    /// The author.
    pub author: AuthorInput,
    /// When to send a scheduled reply (seed 004 `send_at`); recorded, not delayed.
    pub send_at: Option<DateTime<Utc>>,
}

/// Message list filters.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this ticket.
    pub ticket: Option<TicketRef>,
    /// Only these kinds.
    pub kinds: Vec<MessageKind>,
    /// Only internal (or public) messages.
    pub internal: Option<bool>,
}

/// A resolved author.
pub(crate) struct Author {
    kind: AuthorKind,
    key: Option<i64>,
    name: Option<String>,
    email: Option<String>,
}

impl Author {
    /// Looks the author up in the workspace; a missing one is invalid input at `field`.
    pub(crate) async fn resolve(
        conn: &mut PgConnection,
        workspace_id: i64,
        input: AuthorInput,
        requester: Option<i64>,
        field: &str,
    ) -> Result<Self, TicketError> {
        match input {
            AuthorInput::Agent(key) => {
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT name, email FROM agent \
                     WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
                )
                .bind(workspace_id)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
                let (name, email) = row.ok_or_else(|| {
                    TicketError::invalid(field, "is not a user of this workspace")
                })?;
                Ok(Self {
                    kind: AuthorKind::Agent,
                    key: Some(key),
                    name: Some(name),
                    email: Some(email),
                })
            }
            AuthorInput::Customer(key) => {
                let key = key.or(requester).ok_or_else(|| {
                    TicketError::invalid(field, "the ticket has no requester; name the customer")
                })?;
                let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                    "SELECT name, email FROM customer WHERE workspace_id = $1 AND id = $2",
                )
                .bind(workspace_id)
                .bind(key)
                .fetch_optional(&mut *conn)
                .await?;
                let (name, email) = row.ok_or_else(|| {
                    TicketError::invalid(field, "is not a customer of this workspace")
                })?;
                Ok(Self {
                    kind: AuthorKind::Customer,
                    key: Some(key),
                    name,
                    email,
                })
            }
        }
    }
}

/// A message row about to be written.
pub(crate) struct Draft<'a> {
    pub kind: MessageKind,
    pub body: &'a str,
    pub author: &'a Author,
    /// The ticket's first message (its description).
    pub opening: bool,
    pub send_at: Option<DateTime<Utc>>,
}

/// Inserts a message row and returns it.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    workspace_id: i64,
    ticket_key: i64,
    draft: &Draft<'_>,
) -> Result<Message, TicketError> {
    let row: MessageRow = sqlx::query_as(concat!(
        "INSERT INTO message AS m (workspace_id, ticket_id, kind, internal, body, opening, \
         author_type, author_id, author_name, author_email, send_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ",
        message_columns!()
    ))
    .bind(workspace_id)
    .bind(ticket_key)
    .bind(draft.kind.as_str())
    .bind(draft.kind == MessageKind::Note)
    .bind(draft.body)
    .bind(draft.opening)
    .bind(draft.author.kind.as_str())
    .bind(draft.author.key)
    .bind(&draft.author.name)
    .bind(&draft.author.email)
    .bind(draft.send_at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.into())
}

/// Checks a new message's body and kind; returns the trimmed body and the kind.
fn validate(input: &NewMessage) -> Result<(String, MessageKind), TicketError> {
    let mut problems = Problems::default();
    let body = input.body.trim().to_owned();
    if body.is_empty() {
        problems.add("body", "must not be blank");
    } else if body.chars().count() > MAX_BODY {
        problems.add("body", format!("must be at most {MAX_BODY} characters"));
    }
    let kind = match (input.kind, input.internal) {
        (Some(MessageKind::Reply), Some(true)) => {
            problems.add(
                "internal",
                "a reply is public; send type note for an internal note",
            );
            MessageKind::Reply
        }
        (Some(MessageKind::Note), Some(false)) => {
            problems.add("internal", "a note is always internal");
            MessageKind::Note
        }
        (Some(kind), _) => kind,
        (None, Some(true)) => MessageKind::Note,
        (None, _) => MessageKind::Reply,
    };
    if kind == MessageKind::Note && matches!(input.author, AuthorInput::Customer(_)) {
        problems.add("type", "customers cannot write internal notes");
    }
    problems.finish()?;
    Ok((body, kind))
}

/// Adds a message to a locked ticket and updates the ticket; returns the message and the
/// events it fires. Runs inside the caller's transaction.
pub(crate) async fn add_to_locked(
    conn: &mut PgConnection,
    workspace_id: i64,
    actor: Actor,
    ticket: &store::LockedTicket,
    input: &NewMessage,
) -> Result<(Message, Vec<EventKind>), TicketError> {
    let (body, kind) = validate(input)?;
    let author = Author::resolve(
        conn,
        workspace_id,
        input.author,
        ticket.requester,
        "author.id",
    )
    .await?;
    let draft = Draft {
        kind,
        body: &body,
        author: &author,
        opening: false,
        send_at: input.send_at,
    };
    let message = insert(conn, workspace_id, ticket.key, &draft).await?;
    let public = kind == MessageKind::Reply;
    let reopens =
        public && author.kind == AuthorKind::Customer && ticket.status.reopens_on_customer_reply();
    let mut update = QueryBuilder::<Postgres>::new("UPDATE ticket SET updated_at = now()");
    if public {
        // From the body in hand, not a subquery: Citus plans no subquery in a modification.
        let preview = preview_sql("\u{0}");
        let (before, after) = preview.split_once('\u{0}').expect("one body");
        update
            .push(", replies_count = replies_count + 1, latest_message_preview = ")
            .push(before)
            .push_bind(body.as_str())
            .push("::text")
            .push(after);
        if author.kind == AuthorKind::Agent {
            // The time bound, not now(): Citus evaluates no stable function inside a CASE.
            update
                .push(
                    ", first_responded_at = CASE WHEN created_by_type = 'customer' \
                     THEN coalesce(first_responded_at, ",
                )
                .push_bind(Utc::now())
                .push(") ELSE first_responded_at END");
        }
    }
    if reopens {
        update.push(
            ", status = 'open', status_changed_at = now(), reopened_at = now(), \
             solved_at = NULL, closed_at = NULL",
        );
    }
    update
        .push(" WHERE workspace_id = ")
        .push_bind(workspace_id)
        .push(" AND id = ")
        .push_bind(ticket.key);
    update.build().execute(&mut *conn).await?;

    let mut entries = vec![Entry {
        action: "message_added",
        field: None,
        from: None,
        to: Some(serde_json::json!({"message_id": message.id, "type": kind.as_str()})),
    }];
    let mut kinds = Vec::new();
    if public {
        kinds.push(EventKind::Replied);
    }
    if reopens {
        entries.push(Entry::change(
            "status",
            ticket.status.as_str().into(),
            Status::Open.as_str().into(),
        ));
        kinds.push(EventKind::Reopened);
    }
    activity::append(conn, workspace_id, ticket.key, actor, &entries).await?;
    Ok((message, kinds))
}

impl Helpdesk<'_> {
    /// Adds a message to a ticket.
    pub async fn add_message(
        &self,
        actor: Actor,
        ticket: TicketRef,
        input: NewMessage,
    ) -> Result<(Message, Ticket), TicketError> {
        self.reply_and_update(actor, ticket, input, TicketPatch::default())
            .await
    }

    /// Adds a message and applies `patch` to the ticket in the same transaction (seed 004's
    /// reply, which can also change status, owner and subject).
    pub async fn reply_and_update(
        &self,
        actor: Actor,
        ticket: TicketRef,
        input: NewMessage,
        patch: TicketPatch,
    ) -> Result<(Message, Ticket), TicketError> {
        let mut tx = self.pool.begin().await?;
        let locked = store::lock(&mut tx, self.workspace_id, ticket, false).await?;
        let (message, mut kinds) =
            add_to_locked(&mut tx, self.workspace_id, actor, &locked, &input).await?;
        if !patch.is_empty() {
            let relocked = store::lock(
                &mut tx,
                self.workspace_id,
                TicketRef::Key(locked.key),
                false,
            )
            .await?;
            kinds.extend(
                store::apply_patch(&mut tx, self.workspace_id, actor, &relocked, &patch).await?,
            );
        }
        let change = Change::Message {
            agent: message.author.kind == AuthorKind::Agent,
            public: message.kind == MessageKind::Reply,
            at: message.created_at,
        };
        let next = sla::sync(&mut tx, self.workspace_id, locked.key, change, Utc::now()).await?;
        let ticket = store::fetch(&mut tx, self.workspace_id, locked.key)
            .await?
            .ok_or(TicketError::NotFound("Ticket"))?;
        let events = events::ticket_events(&kinds, &ticket, Some(&message), message.created_at)?;
        self.commit_with_events(tx, &events).await?;
        sla::poke(next);
        Ok((message, ticket))
    }

    /// The ticket a message belongs to (seed 004 replies name a message, not a ticket).
    pub async fn ticket_of_message(&self, message_key: i64) -> Result<i64, TicketError> {
        sqlx::query_scalar(
            "SELECT m.ticket_id FROM message m JOIN ticket t ON t.workspace_id = m.workspace_id AND t.id = m.ticket_id \
             WHERE m.workspace_id = $1 AND m.id = $2 AND m.deleted_at IS NULL \
             AND t.deleted_at IS NULL",
        )
        .bind(self.workspace_id)
        .bind(message_key)
        .fetch_optional(self.pool)
        .await?
        .ok_or(TicketError::NotFound("Message"))
    }

    /// One message (of a live ticket).
    pub async fn message(&self, key: i64) -> Result<Message, TicketError> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "SELECT ",
            message_columns!(),
            " FROM message m JOIN ticket t ON t.workspace_id = m.workspace_id AND t.id = m.ticket_id AND t.deleted_at IS NULL \
             WHERE m.workspace_id = $1 AND m.id = $2 AND m.deleted_at IS NULL"
        ))
        .bind(self.workspace_id)
        .bind(key)
        .fetch_optional(self.pool)
        .await?;
        row.map(Into::into).ok_or(TicketError::NotFound("Message"))
    }

    /// Deletes a message (soft) of `ticket`; the ticket's counters follow. Fires no event.
    pub async fn delete_message(
        &self,
        actor: Actor,
        ticket: TicketRef,
        key: i64,
    ) -> Result<(), TicketError> {
        let mut tx = self.pool.begin().await?;
        let locked = store::lock(&mut tx, self.workspace_id, ticket, false).await?;
        let deleted = sqlx::query(
            "UPDATE message SET deleted_at = now() \
             WHERE workspace_id = $1 AND ticket_id = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(self.workspace_id)
        .bind(locked.key)
        .bind(key)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(TicketError::NotFound("Message"));
        }
        sqlx::query(&format!(
            "UPDATE ticket t SET updated_at = now(), \
             replies_count = (SELECT count(*) FROM message m \
               WHERE m.workspace_id = t.workspace_id AND m.ticket_id = t.id \
               AND NOT m.internal AND NOT m.opening AND m.deleted_at IS NULL), \
             latest_message_preview = (SELECT {} FROM message m \
               WHERE m.workspace_id = t.workspace_id AND m.ticket_id = t.id \
               AND NOT m.internal AND m.deleted_at IS NULL ORDER BY m.created_at DESC, m.id DESC LIMIT 1) \
             WHERE t.workspace_id = $2 AND t.id = $1",
            preview_sql("m.body")
        ))
        .bind(locked.key)
        .bind(self.workspace_id)
        .execute(&mut *tx)
        .await?;
        let entry = Entry {
            action: "message_deleted",
            field: None,
            from: Some(serde_json::json!({"message_id": encode(Kind::Message, key)})),
            to: None,
        };
        activity::append(&mut tx, self.workspace_id, locked.key, actor, &[entry]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lists messages, oldest first by default.
    pub async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> Result<Page<Message>, TicketError> {
        let ticket_key = match filter.ticket {
            Some(ticket) => Some(self.ticket_key(ticket).await?),
            None => None,
        };
        let workspace_id = self.workspace_id;
        let kinds: Vec<&'static str> = filter.kinds.iter().map(|k| k.as_str()).collect();
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query
                .push("m.workspace_id = ")
                .push_bind(workspace_id)
                .push(" AND m.deleted_at IS NULL");
            if let Some(ticket_key) = ticket_key {
                query.push(" AND m.ticket_id = ").push_bind(ticket_key);
            }
            if !kinds.is_empty() {
                query
                    .push(" AND m.kind = ANY(")
                    .push_bind(kinds.clone())
                    .push(")");
            }
            if let Some(internal) = filter.internal {
                query.push(" AND m.internal = ").push_bind(internal);
            }
        };
        let page: Page<MessageRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        Ok(page.map(Into::into))
    }
}
