//! The per-ticket activity log: who changed what, when. Entries are appended in the same
//! transaction as the change they describe and never updated.
//!
//! Owns the `ticket_activity` table. Must never be the only record of a change (the ticket row
//! is the truth; this is its history) and never emits events.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::{
    Actor, Helpdesk, TicketError,
    ids::{Kind, encode},
    listing::{ListSpec, Page, PageRequest, SortExpression, SortField, fetch_page},
    ticket::TicketRef,
};

/// Who did something, as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ActorRef {
    /// `agent`, `customer`, `api_key` or `system`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `usr_…`, `cus_…` or `key_…`.
    pub id: Option<String>,
}

/// One entry of the log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Activity {
    /// `act_…`.
    pub id: String,
    /// `tkt_…`.
    pub ticket_id: String,
    /// What happened: `created`, `updated`, `message_added`, `message_deleted`, `archived`,
    /// `restored`, `deleted`.
    pub action: String,
    /// The field that changed, for `updated`.
    pub field: Option<String>,
    /// Its value before.
    pub from: Option<Value>,
    /// Its value after.
    pub to: Option<Value>,
    /// Who did it.
    pub actor: ActorRef,
    /// When.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ActivityRow {
    id: i64,
    ticket_id: i64,
    action: String,
    field: Option<String>,
    old_value: Option<Value>,
    new_value: Option<Value>,
    actor_type: String,
    actor_id: Option<i64>,
    created_at: DateTime<Utc>,
}

impl From<ActivityRow> for Activity {
    fn from(row: ActivityRow) -> Self {
        let kind = match row.actor_type.as_str() {
            "agent" => Some(Kind::User),
            "customer" => Some(Kind::Customer),
            "api_key" => Some(Kind::ApiKey),
            _ => None,
        };
        Self {
            id: encode(Kind::Activity, row.id),
            ticket_id: encode(Kind::Ticket, row.ticket_id),
            action: row.action,
            field: row.field,
            from: row.old_value,
            to: row.new_value,
            actor: ActorRef {
                id: kind.zip(row.actor_id).map(|(kind, key)| encode(kind, key)),
                kind: row.actor_type,
            },
            created_at: row.created_at,
        }
    }
}

/// One entry to append.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub action: &'static str,
    pub field: Option<&'static str>,
    pub from: Option<Value>,
    pub to: Option<Value>,
}

impl Entry {
    pub fn action(action: &'static str) -> Self {
        Self {
            action,
            field: None,
            from: None,
            to: None,
        }
    }

    pub fn change(field: &'static str, from: Value, to: Value) -> Self {
        Self {
            action: "updated",
            field: Some(field),
            from: Some(from),
            to: Some(to),
        }
    }
}

/// Appends `entries` about `ticket_key` by `actor`.
pub(crate) async fn append(
    conn: &mut PgConnection,
    workspace_id: i64,
    ticket_key: i64,
    actor: Actor,
    entries: &[Entry],
) -> Result<(), TicketError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO ticket_activity \
         (workspace_id, ticket_id, action, field, old_value, new_value, actor_type, actor_id) ",
    );
    insert.push_values(entries, |mut row, entry| {
        row.push_bind(workspace_id)
            .push_bind(ticket_key)
            .push_bind(entry.action)
            .push_bind(entry.field)
            .push_bind(entry.from.clone())
            .push_bind(entry.to.clone())
            .push_bind(actor.kind())
            .push_bind(actor.key());
    });
    insert.build().execute(&mut *conn).await?;
    Ok(())
}

const LIST: ListSpec = ListSpec {
    select: "a.id, a.ticket_id, a.action, a.field, a.old_value, a.new_value, a.actor_type, \
             a.actor_id, a.created_at FROM ticket_activity a",
    from: "ticket_activity a",
    key: "a.id",
    sorts: |field| match field {
        SortField::CreatedAt => Some(SortExpression {
            sql: "a.created_at",
            cast: "timestamptz",
        }),
        _ => None,
    },
};

impl Helpdesk<'_> {
    /// A ticket's activity log (oldest first by default).
    pub async fn list_activities(
        &self,
        ticket: TicketRef,
        page: &PageRequest,
    ) -> Result<Page<Activity>, TicketError> {
        let ticket_key = self.ticket_key(ticket).await?;
        let workspace_id = self.workspace_id;
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query
                .push("a.workspace_id = ")
                .push_bind(workspace_id)
                .push(" AND a.ticket_id = ")
                .push_bind(ticket_key);
        };
        let page: Page<ActivityRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        Ok(page.map(Into::into))
    }
}
