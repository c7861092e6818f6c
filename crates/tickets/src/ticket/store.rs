//! The ticket SQL: render, lock, create, change, archive, restore, delete and list.
//!
//! Every mutation runs in one transaction that locks the ticket row, applies the change,
//! appends the activity log, renders the ticket as it will be committed, and records the
//! change's events before committing (see [`crate::Helpdesk`]). Must never emit an event for a
//! change that did not happen (a no-op patch fires nothing) and never read across workspaces.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

use super::{
    GroupRef, NewTicket, Opener, PersonRef, Priority, RequesterInput, Source, Status, Ticket,
    TicketFilter, TicketPatch, TicketRef, lifecycle::status_change_event,
};
use crate::{
    Actor, Helpdesk, TicketError,
    activity::{self, Entry},
    customer,
    events::{self, EventKind},
    ids::{Kind, encode},
    listing::{
        ListSpec, Page, PageRequest, SortExpression, SortField, contains_pattern, fetch_page,
    },
    message::{self, Author, AuthorInput, Draft, MessageKind},
    sla::store::{self as sla, Change},
    tag,
    validate::{self, Problems},
};

/// The longest description (first message).
const MAX_DESCRIPTION: usize = message::MAX_BODY;

macro_rules! ticket_columns {
    () => {
        "t.id, t.number, t.subject, t.description, t.status, t.priority, t.source, \
         t.custom_fields, t.replies_count, t.latest_message_preview, t.snoozed_until, \
         t.archived_at, t.created_at, t.updated_at, t.status_changed_at, t.first_responded_at, \
         t.solved_at, t.closed_at, t.reopened_at, \
         c.id AS requester_key, c.email AS requester_email, c.name AS requester_name, \
         a.id AS assignee_key, a.email AS assignee_email, a.name AS assignee_name, \
         g.id AS group_key, g.name AS group_name, \
         coalesce((SELECT array_agg(tg.name ORDER BY lower(tg.name)) FROM ticket_tag tt \
                   JOIN tag tg ON tg.workspace_id = tt.workspace_id AND tg.id = tt.tag_id \
                   WHERE tt.workspace_id = t.workspace_id AND tt.ticket_id = t.id), '{}') AS tags"
    };
}

macro_rules! ticket_from {
    () => {
        " FROM ticket t LEFT JOIN customer c ON c.workspace_id = t.workspace_id AND c.id = t.requester_id \
          LEFT JOIN agent a ON a.workspace_id = t.workspace_id AND a.id = t.assignee_id \
          LEFT JOIN agent_group g ON g.workspace_id = t.workspace_id AND g.id = t.group_id"
    };
}

#[derive(sqlx::FromRow)]
struct TicketRow {
    id: i64,
    number: i64,
    subject: String,
    description: Option<String>,
    status: String,
    priority: String,
    source: String,
    custom_fields: Value,
    replies_count: i32,
    latest_message_preview: Option<String>,
    snoozed_until: Option<DateTime<Utc>>,
    archived_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    status_changed_at: DateTime<Utc>,
    first_responded_at: Option<DateTime<Utc>>,
    solved_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
    reopened_at: Option<DateTime<Utc>>,
    requester_key: Option<i64>,
    requester_email: Option<String>,
    requester_name: Option<String>,
    assignee_key: Option<i64>,
    assignee_email: Option<String>,
    assignee_name: Option<String>,
    group_key: Option<i64>,
    group_name: Option<String>,
    tags: Vec<String>,
}

impl From<TicketRow> for Ticket {
    fn from(row: TicketRow) -> Self {
        Self {
            key: row.id,
            id: encode(Kind::Ticket, row.id),
            number: row.number,
            subject: row.subject,
            description: row.description,
            status: Status::parse(&row.status).unwrap_or(Status::Open),
            priority: Priority::parse(&row.priority).unwrap_or(Priority::Normal),
            source: Source::parse(&row.source).unwrap_or_default(),
            requester: row.requester_key.map(|key| PersonRef {
                id: encode(Kind::Customer, key),
                email: row.requester_email,
                name: row.requester_name,
            }),
            assignee: row.assignee_key.map(|key| PersonRef {
                id: encode(Kind::User, key),
                email: row.assignee_email,
                name: row.assignee_name,
            }),
            group: row
                .group_key
                .zip(row.group_name)
                .map(|(key, name)| GroupRef {
                    id: encode(Kind::Group, key),
                    name,
                }),
            tags: row.tags,
            custom_fields: row.custom_fields,
            archived: row.archived_at.is_some(),
            archived_at: row.archived_at,
            snoozed_until: row.snoozed_until,
            sla: None,
            replies_count: row.replies_count,
            latest_message_preview: row.latest_message_preview,
            created_at: row.created_at,
            updated_at: row.updated_at,
            status_changed_at: row.status_changed_at,
            first_responded_at: row.first_responded_at,
            solved_at: row.solved_at,
            closed_at: row.closed_at,
            reopened_at: row.reopened_at,
        }
    }
}

const LIST: ListSpec = ListSpec {
    select: concat!(ticket_columns!(), ticket_from!()),
    from: "ticket t",
    key: "t.id",
    sorts: |field| {
        Some(match field {
            SortField::CreatedAt => SortExpression {
                sql: "t.created_at",
                cast: "timestamptz",
            },
            SortField::UpdatedAt => SortExpression {
                sql: "t.updated_at",
                cast: "timestamptz",
            },
            SortField::Priority => SortExpression {
                sql: "array_position(ARRAY['low','normal','high','urgent']::text[], t.priority)",
                cast: "integer",
            },
            SortField::Status => SortExpression {
                sql: "array_position(ARRAY['open','pending','on_hold','solved','closed','spam']::text[], t.status)",
                cast: "integer",
            },
            SortField::Name => return None,
        })
    },
};

/// A live ticket, rendered (with its `sla` object).
pub(crate) async fn fetch(
    conn: &mut PgConnection,
    workspace_id: i64,
    key: i64,
) -> Result<Option<Ticket>, TicketError> {
    // Its own statement, not `fetch_many`'s `= ANY($1)`: for an array parameter PostgreSQL
    // kept planning afresh on every call (0.32 ms, more than the 0.19 ms the read takes;
    // `pg_stat_statements` in `deskhook bench --scenario tickets`), while a point read by key
    // settles on its cached plan. Every change reads its ticket back once or twice.
    let row: Option<TicketRow> = sqlx::query_as(concat!(
        "SELECT ",
        ticket_columns!(),
        ticket_from!(),
        " WHERE t.id = $1 AND t.workspace_id = $2 AND t.deleted_at IS NULL"
    ))
    .bind(key)
    .bind(workspace_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(rendered(conn, row.into_iter().collect(), Utc::now())
        .await?
        .pop())
}

/// Tickets by key (of one workspace when given; deleted ones unless `live_only`), rendered
/// with their `sla` objects as of `now`, in key order.
pub(crate) async fn fetch_many(
    conn: &mut PgConnection,
    workspace_id: Option<i64>,
    keys: &[i64],
    now: DateTime<Utc>,
    live_only: bool,
) -> Result<Vec<Ticket>, TicketError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<TicketRow> = sqlx::query_as(concat!(
        "SELECT ",
        ticket_columns!(),
        ticket_from!(),
        " WHERE t.id = ANY($1) AND ($2::bigint IS NULL OR t.workspace_id = $2) \
          AND (NOT $3 OR t.deleted_at IS NULL) ORDER BY t.id"
    ))
    .bind(keys)
    .bind(workspace_id)
    .bind(live_only)
    .fetch_all(&mut *conn)
    .await?;
    rendered(conn, rows, now).await
}

/// Tickets from their rows, with their `sla` objects as of `now`.
async fn rendered(
    conn: &mut PgConnection,
    rows: Vec<TicketRow>,
    now: DateTime<Utc>,
) -> Result<Vec<Ticket>, TicketError> {
    let mut tickets: Vec<Ticket> = rows.into_iter().map(Into::into).collect();
    attach_sla(conn, &mut tickets, now).await?;
    Ok(tickets)
}

/// Fills in the `sla` objects of `tickets`.
async fn attach_sla(
    conn: &mut PgConnection,
    tickets: &mut [Ticket],
    now: DateTime<Utc>,
) -> Result<(), TicketError> {
    let keys: Vec<i64> = tickets.iter().map(|t| t.key).collect();
    let mut views = sla::views(conn, &keys, now).await?;
    for ticket in tickets {
        ticket.sla = views.remove(&ticket.key);
    }
    Ok(())
}

/// The fields of a ticket a change compares against, read under the row lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LockedRow {
    id: i64,
    subject: String,
    status: String,
    priority: String,
    requester_id: Option<i64>,
    assignee_id: Option<i64>,
    group_id: Option<i64>,
    custom_fields: Value,
    snoozed_until: Option<DateTime<Utc>>,
    archived_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
}

/// A ticket locked for a change, with its current values.
#[derive(Debug, Clone)]
pub(crate) struct LockedTicket {
    pub key: i64,
    pub subject: String,
    pub status: Status,
    pub priority: Priority,
    pub requester: Option<i64>,
    pub assignee: Option<i64>,
    pub group: Option<i64>,
    pub custom_fields: Value,
    pub snoozed_until: Option<DateTime<Utc>>,
    pub archived: bool,
    pub deleted: bool,
}

/// Locks the ticket `reference` names (`FOR UPDATE`); deleted tickets only when asked.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    workspace_id: i64,
    reference: TicketRef,
    include_deleted: bool,
) -> Result<LockedTicket, TicketError> {
    let (column, value) = match reference {
        TicketRef::Key(key) => ("id", key),
        TicketRef::Number(number) => ("number", number),
    };
    let row: Option<LockedRow> = sqlx::query_as(&format!(
        "SELECT id, subject, status, priority, requester_id, assignee_id, group_id, custom_fields, \
         snoozed_until, archived_at, deleted_at FROM ticket \
         WHERE workspace_id = $1 AND {column} = $2 FOR UPDATE"
    ))
    .bind(workspace_id)
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?;
    let row = row
        .filter(|row| include_deleted || row.deleted_at.is_none())
        .ok_or(TicketError::NotFound("Ticket"))?;
    Ok(LockedTicket {
        key: row.id,
        subject: row.subject,
        status: Status::parse(&row.status).unwrap_or(Status::Open),
        priority: Priority::parse(&row.priority).unwrap_or(Priority::Normal),
        requester: row.requester_id,
        assignee: row.assignee_id,
        group: row.group_id,
        custom_fields: row.custom_fields,
        snoozed_until: row.snoozed_until,
        archived: row.archived_at.is_some(),
        deleted: row.deleted_at.is_some(),
    })
}

/// Checks that an agent exists, is not deleted and is active.
async fn check_assignee(
    conn: &mut PgConnection,
    workspace_id: i64,
    key: i64,
) -> Result<(), TicketError> {
    let active: Option<bool> = sqlx::query_scalar(
        "SELECT active FROM agent WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
    )
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    match active {
        Some(true) => Ok(()),
        Some(false) => Err(TicketError::invalid("assignee_id", "is not an active user")),
        None => Err(TicketError::invalid(
            "assignee_id",
            "is not a user of this workspace",
        )),
    }
}

async fn check_exists(
    conn: &mut PgConnection,
    sql: &str,
    workspace_id: i64,
    key: i64,
    field: &str,
    reason: &str,
) -> Result<(), TicketError> {
    let found: Option<i32> = sqlx::query_scalar(sql)
        .bind(workspace_id)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| TicketError::invalid(field, reason))
}

async fn check_group(
    conn: &mut PgConnection,
    workspace_id: i64,
    key: i64,
) -> Result<(), TicketError> {
    check_exists(
        conn,
        "SELECT 1 FROM agent_group WHERE workspace_id = $1 AND id = $2",
        workspace_id,
        key,
        "group_id",
        "is not a group of this workspace",
    )
    .await
}

async fn check_customer(
    conn: &mut PgConnection,
    workspace_id: i64,
    key: i64,
    field: &str,
) -> Result<(), TicketError> {
    check_exists(
        conn,
        "SELECT 1 FROM customer WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
        workspace_id,
        key,
        field,
        "is not a customer of this workspace",
    )
    .await
}

/// Replaces the ticket's tags with `names` (already validated); returns whether they changed.
async fn replace_tags(
    conn: &mut PgConnection,
    workspace_id: i64,
    ticket_key: i64,
    names: &[String],
) -> Result<bool, TicketError> {
    let keys = tag::ensure(conn, workspace_id, names).await?;
    let removed = sqlx::query(
        "DELETE FROM ticket_tag \
             WHERE workspace_id = $3 AND ticket_id = $1 AND NOT (tag_id = ANY($2))",
    )
    .bind(ticket_key)
    .bind(&keys)
    .bind(workspace_id)
    .execute(&mut *conn)
    .await?;
    let added = sqlx::query(
        "INSERT INTO ticket_tag (workspace_id, ticket_id, tag_id) \
         SELECT $3, $1, unnest($2::bigint[]) ON CONFLICT DO NOTHING",
    )
    .bind(ticket_key)
    .bind(&keys)
    .bind(workspace_id)
    .execute(&mut *conn)
    .await?;
    Ok(removed.rows_affected() + added.rows_affected() > 0)
}

async fn tag_names_of(
    conn: &mut PgConnection,
    workspace_id: i64,
    ticket_key: i64,
) -> Result<Vec<String>, TicketError> {
    Ok(sqlx::query_scalar(
        "SELECT tg.name FROM ticket_tag tt \
         JOIN tag tg ON tg.workspace_id = tt.workspace_id AND tg.id = tt.tag_id \
         WHERE tt.workspace_id = $2 AND tt.ticket_id = $1 ORDER BY lower(tg.name)",
    )
    .bind(ticket_key)
    .bind(workspace_id)
    .fetch_all(&mut *conn)
    .await?)
}

fn public_id(kind: Kind, key: Option<i64>) -> Value {
    key.map_or(Value::Null, |key| Value::String(encode(kind, key)))
}

/// Applies `patch` to a locked ticket; returns the events the change fires (none for a
/// no-op). Runs inside the caller's transaction.
pub(crate) async fn apply_patch(
    conn: &mut PgConnection,
    workspace_id: i64,
    actor: Actor,
    ticket: &LockedTicket,
    patch: &TicketPatch,
) -> Result<Vec<EventKind>, TicketError> {
    let mut problems = Problems::default();
    let mut entries = Vec::new();
    let mut kinds = Vec::new();
    let mut update = QueryBuilder::<Postgres>::new("UPDATE ticket SET updated_at = now()");
    let mut changed = false;

    if let Some(subject) = &patch.subject
        && let Some(subject) = problems.check(validate::required_text("subject", subject, 1000))
        && subject != ticket.subject
    {
        update.push(", subject = ").push_bind(subject.clone());
        entries.push(Entry::change(
            "subject",
            ticket.subject.clone().into(),
            subject.into(),
        ));
        kinds.push(EventKind::Updated);
        changed = true;
    }
    if let Some(to) = patch.status
        && to != ticket.status
    {
        let from = ticket.status;
        if from.may_become(to) {
            update.push(", status = ").push_bind(to.as_str());
            update.push(", status_changed_at = now()");
            match to {
                Status::Solved => {
                    update.push(", solved_at = now()");
                }
                Status::Closed => {
                    // Bound, not now(): Citus evaluates no stable function in a COALESCE.
                    update
                        .push(", closed_at = now(), solved_at = coalesce(solved_at, ")
                        .push_bind(Utc::now())
                        .push(")");
                }
                Status::Open | Status::Pending | Status::OnHold if from.is_terminal() => {
                    update.push(", reopened_at = now(), solved_at = NULL, closed_at = NULL");
                }
                _ => {}
            }
            entries.push(Entry::change(
                "status",
                from.as_str().into(),
                to.as_str().into(),
            ));
            kinds.extend(status_change_event(from, to));
            changed = true;
        } else {
            problems.add(
                "status",
                format!(
                    "a closed ticket can only become open or spam (not {})",
                    to.as_str()
                ),
            );
        }
    }
    if let Some(priority) = patch.priority
        && priority != ticket.priority
    {
        update.push(", priority = ").push_bind(priority.as_str());
        entries.push(Entry::change(
            "priority",
            ticket.priority.as_str().into(),
            priority.as_str().into(),
        ));
        kinds.push(EventKind::Updated);
        changed = true;
    }
    if let Some(assignee) = patch.assignee
        && assignee != ticket.assignee
    {
        if let Some(key) = assignee {
            check_assignee(conn, workspace_id, key).await?;
        }
        update.push(", assignee_id = ").push_bind(assignee);
        entries.push(Entry::change(
            "assignee",
            public_id(Kind::User, ticket.assignee),
            public_id(Kind::User, assignee),
        ));
        kinds.push(EventKind::Assigned);
        changed = true;
    }
    if let Some(group) = patch.group
        && group != ticket.group
    {
        if let Some(key) = group {
            check_group(conn, workspace_id, key).await?;
        }
        update.push(", group_id = ").push_bind(group);
        entries.push(Entry::change(
            "group",
            public_id(Kind::Group, ticket.group),
            public_id(Kind::Group, group),
        ));
        kinds.push(EventKind::Updated);
        changed = true;
    }
    if let Some(requester) = patch.requester
        && Some(requester) != ticket.requester
    {
        check_customer(conn, workspace_id, requester, "requester_id").await?;
        update.push(", requester_id = ").push_bind(requester);
        entries.push(Entry::change(
            "requester",
            public_id(Kind::Customer, ticket.requester),
            public_id(Kind::Customer, Some(requester)),
        ));
        kinds.push(EventKind::Updated);
        changed = true;
    }
    if let Some(custom) = &patch.custom_fields
        && let Some(custom) = problems.check(validate::custom_fields("custom_fields", custom))
        && custom != ticket.custom_fields
    {
        update.push(", custom_fields = ").push_bind(custom.clone());
        entries.push(Entry::change(
            "custom_fields",
            ticket.custom_fields.clone(),
            custom,
        ));
        kinds.push(EventKind::Updated);
        changed = true;
    }
    if let Some(snoozed) = patch.snoozed_until
        && snoozed != ticket.snoozed_until
    {
        update.push(", snoozed_until = ").push_bind(snoozed);
        entries.push(Entry::change(
            "snoozed_until",
            serde_json::to_value(ticket.snoozed_until).unwrap_or_default(),
            serde_json::to_value(snoozed).unwrap_or_default(),
        ));
        kinds.push(EventKind::Updated);
        changed = true;
    }
    let tags = match &patch.tags {
        Some(names) => match tag::tag_names("tags", names) {
            Ok(names) => Some(names),
            Err(TicketError::Invalid(fields)) => {
                for (field, reason) in fields {
                    problems.add(&field, reason);
                }
                None
            }
            Err(other) => return Err(other),
        },
        None => None,
    };
    problems.finish()?;

    if let Some(names) = tags {
        let before = tag_names_of(conn, workspace_id, ticket.key).await?;
        if replace_tags(conn, workspace_id, ticket.key, &names).await? {
            let after = tag_names_of(conn, workspace_id, ticket.key).await?;
            entries.push(Entry::change("tags", before.into(), after.into()));
            kinds.push(EventKind::Updated);
            changed = true;
        }
    }
    if changed {
        update
            .push(" WHERE workspace_id = ")
            .push_bind(workspace_id)
            .push(" AND id = ")
            .push_bind(ticket.key);
        update.build().execute(&mut *conn).await?;
        activity::append(conn, workspace_id, ticket.key, actor, &entries).await?;
    }
    Ok(kinds)
}

/// Validated create input.
struct CreatePlan {
    subject: String,
    description: Option<String>,
    custom_fields: Value,
    tags: Vec<String>,
}

fn plan_create(input: &NewTicket) -> Result<CreatePlan, TicketError> {
    let mut problems = Problems::default();
    let subject = problems.check(validate::required_text("subject", &input.subject, 1000));
    let description = input
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(ToOwned::to_owned);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        problems.add(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        );
    }
    if input.requester.is_none() {
        problems.add(
            "requester",
            "is required: give customer_id, requester {email, name} or customer_email",
        );
    }
    if let Some(RequesterInput::ByEmail { email, .. }) = &input.requester {
        problems.check(validate::email("requester.email", email));
    }
    let custom_fields = match &input.custom_fields {
        Some(value) => problems.check(validate::custom_fields("custom_fields", value)),
        None => Some(serde_json::json!({})),
    };
    let tags = match tag::tag_names("tags", &input.tags) {
        Ok(tags) => tags,
        Err(TicketError::Invalid(fields)) => {
            for (field, reason) in fields {
                problems.add(&field, reason);
            }
            Vec::new()
        }
        Err(other) => return Err(other),
    };
    problems.finish()?;
    Ok(CreatePlan {
        subject: subject.unwrap_or_default(),
        description,
        custom_fields: custom_fields.unwrap_or_default(),
        tags,
    })
}

/// The next ticket number of a workspace, from its own sequence (created on first use, under
/// an advisory lock so concurrent first creates do not race). Drawn outside the create's
/// transaction: a rolled-back create leaves a gap, and creates never wait on each other.
async fn next_number(pool: &PgPool, workspace_id: i64) -> Result<i64, TicketError> {
    let sequence = format!("ticket_number_ws_{workspace_id}");
    let draw = || {
        sqlx::query_scalar::<_, i64>("SELECT nextval($1::regclass)")
            .bind(sequence.clone())
            .fetch_one(pool)
    };
    match draw().await {
        Ok(number) => Ok(number),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P01") => {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(&sequence)
                .execute(&mut *tx)
                .await?;
            // The name is built from an integer: nothing of the caller's reaches this DDL.
            sqlx::query(&format!("CREATE SEQUENCE IF NOT EXISTS {sequence}"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(draw().await?)
        }
        Err(other) => Err(other.into()),
    }
}

impl Helpdesk<'_> {
    /// The key of the live ticket `reference` names.
    pub async fn ticket_key(&self, reference: TicketRef) -> Result<i64, TicketError> {
        let key: Option<i64> = match reference {
            TicketRef::Key(key) => sqlx::query_scalar(
                "SELECT id FROM ticket WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(self.workspace_id)
            .bind(key),
            TicketRef::Number(number) => sqlx::query_scalar(
                "SELECT id FROM ticket WHERE workspace_id = $1 AND number = $2 AND deleted_at IS NULL",
            )
            .bind(self.workspace_id)
            .bind(number),
        }
        .fetch_optional(self.pool)
        .await?;
        key.ok_or(TicketError::NotFound("Ticket"))
    }

    /// One live ticket.
    pub async fn ticket(&self, reference: TicketRef) -> Result<Ticket, TicketError> {
        let key = self.ticket_key(reference).await?;
        let mut conn = self.pool.acquire().await?;
        fetch(&mut conn, self.workspace_id, key)
            .await?
            .ok_or(TicketError::NotFound("Ticket"))
    }

    /// Creates a ticket (with its first message when it has a description). Fires
    /// `ticket.created` only.
    pub async fn create_ticket(
        &self,
        actor: Actor,
        input: NewTicket,
    ) -> Result<Ticket, TicketError> {
        let plan = plan_create(&input)?;
        let number = next_number(self.pool, self.workspace_id).await?;
        let mut tx = self.pool.begin().await?;
        let workspace_id = self.workspace_id;
        let requester = match &input.requester {
            Some(RequesterInput::Existing(key)) => {
                check_customer(&mut tx, workspace_id, *key, "customer_id").await?;
                *key
            }
            Some(RequesterInput::ByEmail { email, name }) => {
                customer::find_or_create_by_email(
                    &mut tx,
                    workspace_id,
                    email.trim(),
                    name.as_deref(),
                )
                .await?
            }
            None => return Err(TicketError::invalid("requester", "is required")),
        };
        if let Some(assignee) = input.assignee {
            check_assignee(&mut tx, workspace_id, assignee).await?;
        }
        if let Some(group) = input.group {
            check_group(&mut tx, workspace_id, group).await?;
        }
        let (opener_type, opener_key) = match input.opener {
            Opener::Customer => ("customer", Some(requester)),
            Opener::Agent(key) => ("agent", Some(key)),
        };
        let status = input.status.unwrap_or(Status::Open);
        let key: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO ticket (workspace_id, number, subject, description, status, priority, \
             source, requester_id, assignee_id, group_id, custom_fields, created_by_type, \
             created_by_id, snoozed_until, solved_at, closed_at, latest_message_preview) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             CASE WHEN $5 IN ('solved', 'closed') THEN now() END, \
             CASE WHEN $5 = 'closed' THEN now() END, \
             {}) RETURNING id",
            message::preview_sql("$4::text")
        ))
        .bind(workspace_id)
        .bind(number)
        .bind(&plan.subject)
        .bind(&plan.description)
        .bind(status.as_str())
        .bind(input.priority.unwrap_or(Priority::Normal).as_str())
        .bind(input.source.unwrap_or_default().as_str())
        .bind(requester)
        .bind(input.assignee)
        .bind(input.group)
        .bind(&plan.custom_fields)
        .bind(opener_type)
        .bind(opener_key)
        .bind(input.snoozed_until)
        .fetch_one(&mut *tx)
        .await?;
        if !plan.tags.is_empty() {
            replace_tags(&mut tx, workspace_id, key, &plan.tags).await?;
        }
        if let Some(description) = &plan.description {
            let author_input = match input.opener {
                Opener::Customer => AuthorInput::Customer(Some(requester)),
                Opener::Agent(agent) => AuthorInput::Agent(agent),
            };
            let author = Author::resolve(
                &mut tx,
                workspace_id,
                author_input,
                Some(requester),
                "created_by.id",
            )
            .await?;
            let draft = Draft {
                kind: MessageKind::Reply,
                body: description,
                author: &author,
                opening: true,
                send_at: None,
            };
            message::insert(&mut tx, workspace_id, key, &draft).await?;
        }
        activity::append(
            &mut tx,
            workspace_id,
            key,
            actor,
            &[Entry::action("created")],
        )
        .await?;
        let next = sla::sync(&mut tx, workspace_id, key, Change::Ticket, Utc::now()).await?;
        let ticket = fetch(&mut tx, workspace_id, key)
            .await?
            .ok_or(TicketError::NotFound("Ticket"))?;
        let event = events::ticket_event(EventKind::Created, &ticket, None, ticket.created_at)?;
        self.commit_with_events(tx, &[event]).await?;
        sla::poke(next);
        Ok(ticket)
    }

    /// Changes a ticket. Fires `ticket.closed`, `ticket.reopened`, `ticket.assigned` and/or
    /// `ticket.updated` as the change warrants, each at most once; nothing for a no-op.
    pub async fn update_ticket(
        &self,
        actor: Actor,
        reference: TicketRef,
        patch: TicketPatch,
    ) -> Result<Ticket, TicketError> {
        let mut tx = self.pool.begin().await?;
        let locked = lock(&mut tx, self.workspace_id, reference, false).await?;
        let kinds = apply_patch(&mut tx, self.workspace_id, actor, &locked, &patch).await?;
        let next = if kinds.is_empty() {
            None
        } else {
            sla::sync(
                &mut tx,
                self.workspace_id,
                locked.key,
                Change::Ticket,
                Utc::now(),
            )
            .await?
        };
        let ticket = self.finish_change(tx, locked.key, &kinds).await?;
        sla::poke(next);
        Ok(ticket)
    }

    /// Archives a ticket (idempotent). Fires `ticket.updated` when it was not archived.
    pub async fn archive_ticket(
        &self,
        actor: Actor,
        reference: TicketRef,
    ) -> Result<Ticket, TicketError> {
        let mut tx = self.pool.begin().await?;
        let locked = lock(&mut tx, self.workspace_id, reference, false).await?;
        let mut kinds = Vec::new();
        if !locked.archived {
            sqlx::query(
                "UPDATE ticket SET archived_at = now(), updated_at = now() \
                 WHERE workspace_id = $2 AND id = $1",
            )
            .bind(locked.key)
            .bind(self.workspace_id)
            .execute(&mut *tx)
            .await?;
            activity::append(
                &mut tx,
                self.workspace_id,
                locked.key,
                actor,
                &[Entry::action("archived")],
            )
            .await?;
            kinds.push(EventKind::Updated);
        }
        self.finish_change(tx, locked.key, &kinds).await
    }

    /// Undoes archive and delete. Fires `ticket.updated` when something was undone.
    pub async fn restore_ticket(
        &self,
        actor: Actor,
        reference: TicketRef,
    ) -> Result<Ticket, TicketError> {
        let mut tx = self.pool.begin().await?;
        let locked = lock(&mut tx, self.workspace_id, reference, true).await?;
        let mut kinds = Vec::new();
        if locked.archived || locked.deleted {
            sqlx::query(
                "UPDATE ticket SET archived_at = NULL, deleted_at = NULL, updated_at = now() \
                 WHERE workspace_id = $2 AND id = $1",
            )
            .bind(locked.key)
            .bind(self.workspace_id)
            .execute(&mut *tx)
            .await?;
            activity::append(
                &mut tx,
                self.workspace_id,
                locked.key,
                actor,
                &[Entry::action("restored")],
            )
            .await?;
            kinds.push(EventKind::Updated);
        }
        let next = if kinds.is_empty() {
            None
        } else {
            sla::sync(
                &mut tx,
                self.workspace_id,
                locked.key,
                Change::Ticket,
                Utc::now(),
            )
            .await?
        };
        let ticket = self.finish_change(tx, locked.key, &kinds).await?;
        sla::poke(next);
        Ok(ticket)
    }

    /// Deletes a ticket (soft: it answers 404 until restored). Fires no event.
    pub async fn delete_ticket(
        &self,
        actor: Actor,
        reference: TicketRef,
    ) -> Result<(), TicketError> {
        let mut tx = self.pool.begin().await?;
        let locked = lock(&mut tx, self.workspace_id, reference, false).await?;
        sqlx::query("UPDATE ticket SET deleted_at = now() WHERE workspace_id = $2 AND id = $1")
            .bind(locked.key)
            .bind(self.workspace_id)
            .execute(&mut *tx)
            .await?;
        activity::append(
            &mut tx,
            self.workspace_id,
            locked.key,
            actor,
            &[Entry::action("deleted")],
        )
        .await?;
        sla::sync(
            &mut tx,
            self.workspace_id,
            locked.key,
            Change::Ticket,
            Utc::now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Renders the changed ticket, records `kinds` as events, and commits.
    async fn finish_change(
        &self,
        mut tx: sqlx::Transaction<'_, Postgres>,
        key: i64,
        kinds: &[EventKind],
    ) -> Result<Ticket, TicketError> {
        let ticket = fetch(&mut tx, self.workspace_id, key)
            .await?
            .ok_or(TicketError::NotFound("Ticket"))?;
        let events = events::ticket_events(kinds, &ticket, None, ticket.updated_at)?;
        self.commit_with_events(tx, &events).await?;
        Ok(ticket)
    }

    /// Lists tickets.
    pub async fn list_tickets(
        &self,
        filter: &TicketFilter,
        page: &PageRequest,
    ) -> Result<Page<Ticket>, TicketError> {
        let workspace_id = self.workspace_id;
        let statuses: Vec<&'static str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let priorities: Vec<&'static str> = filter.priorities.iter().map(|p| p.as_str()).collect();
        let tags: Vec<String> = filter
            .tags
            .iter()
            .map(|t| t.trim().to_lowercase())
            .collect();
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query
                .push("t.workspace_id = ")
                .push_bind(workspace_id)
                .push(" AND t.deleted_at IS NULL");
            if filter.archived == Some(true) {
                query.push(" AND t.archived_at IS NOT NULL");
            } else {
                query.push(" AND t.archived_at IS NULL");
            }
            if !statuses.is_empty() {
                query
                    .push(" AND t.status = ANY(")
                    .push_bind(statuses.clone())
                    .push(")");
            }
            if !priorities.is_empty() {
                query
                    .push(" AND t.priority = ANY(")
                    .push_bind(priorities.clone())
                    .push(")");
            }
            for (column, keys) in [
                ("t.assignee_id", &filter.assignees),
                ("t.requester_id", &filter.requesters),
                ("t.group_id", &filter.groups),
            ] {
                if !keys.is_empty() {
                    query
                        .push(format_args!(" AND {column} = ANY("))
                        .push_bind(keys.clone())
                        .push(")");
                }
            }
            match filter.unassigned {
                Some(true) => {
                    query.push(" AND t.assignee_id IS NULL");
                }
                Some(false) => {
                    query.push(" AND t.assignee_id IS NOT NULL");
                }
                None => {}
            }
            if !tags.is_empty() {
                query
                    .push(
                        " AND EXISTS (SELECT 1 FROM ticket_tag ft JOIN tag fg ON fg.workspace_id = ft.workspace_id AND fg.id = ft.tag_id \
                         WHERE ft.workspace_id = t.workspace_id AND ft.ticket_id = t.id AND lower(fg.name) = ANY(",
                    )
                    .push_bind(tags.clone())
                    .push("))");
            }
            if let Some(search) = filter
                .search
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                let pattern = contains_pattern(search);
                query
                    .push(" AND (t.subject ILIKE ")
                    .push_bind(pattern.clone())
                    .push(" OR t.description ILIKE ")
                    .push_bind(pattern.clone())
                    .push(
                        " OR EXISTS (SELECT 1 FROM message fm WHERE fm.workspace_id = t.workspace_id AND fm.ticket_id = t.id \
                         AND fm.deleted_at IS NULL AND fm.body ILIKE ",
                    )
                    .push_bind(pattern)
                    .push("))");
            }
            for (condition, instant) in [
                (" AND t.created_at >= ", filter.created_after),
                (" AND t.created_at < ", filter.created_before),
                (" AND t.updated_at >= ", filter.updated_after),
                (" AND t.updated_at < ", filter.updated_before),
            ] {
                if let Some(instant) = instant {
                    query.push(condition).push_bind(instant);
                }
            }
        };
        let page: Page<TicketRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        let mut page: Page<Ticket> = page.map(Into::into);
        let mut conn = self.pool.acquire().await?;
        attach_sla(&mut conn, &mut page.items, Utc::now()).await?;
        Ok(page)
    }
}
