//! `/v1/tickets`: list, create, get, change, delete, the `PUT` actions (status, assignee, tags,
//! archive, restore) and the activity log.
//!
//! Creates accept the canonical body and the seed spellings: seed 000's `requester {email,
//! name}` and `message`, seed 001's `customer_email` and `description`; `PUT /status` takes a
//! name or seed 002's status ids. Must never decide lifecycle rules here: the crate does.

use std::collections::BTreeMap;

use axum::{
    Router,
    extract::{Path, State},
    routing::{get, put},
};
use chrono::{DateTime, Utc};
use deskhook_tickets::{
    ids::Kind,
    listing::{Sort, SortField},
    message::AuthorKind,
    ticket::{
        NewTicket, Opener, Priority, RequesterInput, Source, Status, TicketFilter, TicketPatch,
    },
    validate::nullable,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Answer, actor,
    body::JsonOrForm,
    created, desk, list, no_content, ok,
    params::{
        self, body_id, csv_ids, csv_of, list_query, query_bool, query_time, text, ticket_path,
    },
};
use crate::http::{
    ApiError, AppState,
    auth::{Principal, RequireScope as _},
    extract::{OptionalJson, Query},
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/tickets", get(list_tickets).post(create_ticket))
        .route(
            "/tickets/{id}",
            get(show_ticket).patch(update_ticket).delete(delete_ticket),
        )
        .route("/tickets/{id}/status", put(set_status))
        .route("/tickets/{id}/assignee", put(set_assignee))
        .route("/tickets/{id}/tags", put(set_tags).get(show_tags))
        .route("/tickets/{id}/archive", put(archive).post(archive))
        .route("/tickets/{id}/restore", put(restore).post(restore))
        .route("/tickets/{id}/activities", get(list_activities))
}

list_query!(TicketQuery {
    status,
    priority,
    assignee_id,
    customer_id,
    requester_id,
    client_id,
    group_id,
    category_id,
    unassigned,
    assigned_to_me,
    tags,
    search,
    archived,
    active_state,
    created_after,
    created_before,
    updated_after,
    updated_before,
});

/// A status name, or a seed 002 status id (number or digits).
fn read_status(value: &Value) -> Option<Status> {
    match value {
        Value::String(text) => {
            Status::parse(text).or_else(|| text.trim().parse().ok().and_then(Status::from_seed_002))
        }
        Value::Number(number) => number.as_i64().and_then(Status::from_seed_002),
        _ => None,
    }
}

fn status_field(field: &str, value: &Value) -> Result<Status, (String, String)> {
    read_status(value).ok_or_else(|| {
        (
            field.to_owned(),
            format!("must be one of {} (or a status id 1-5)", Status::names()),
        )
    })
}

/// Tag names: a JSON array of strings, or a comma list (forms).
fn tags_field(field: &str, value: &Value) -> Result<Vec<String>, (String, String)> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(ToOwned::to_owned)
                    .ok_or_else(|| (field.to_owned(), "must be a list of tag names".to_owned()))
            })
            .collect(),
        Value::String(list) => Ok(params::csv(Some(list))
            .into_iter()
            .map(ToOwned::to_owned)
            .collect()),
        Value::Null => Ok(Vec::new()),
        _ => Err((field.to_owned(), "must be a list of tag names".to_owned())),
    }
}

/// Collects 422 field errors.
#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Fields {
    fn take<T>(&mut self, result: Result<T, (String, String)>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err((field, reason)) => {
                self.0.entry(field).or_insert(reason);
                None
            }
        }
    }

    fn id(&mut self, kind: Kind, id: &str, field: &str) -> Option<i64> {
        match body_id(kind, id, field) {
            Ok(key) => Some(key),
            Err(_) => {
                self.0
                    .entry(field.to_owned())
                    .or_insert_with(|| format!("must be an id like {}_…", kind.prefix()));
                None
            }
        }
    }

    fn add(&mut self, field: &str, reason: &str) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| reason.to_owned());
    }

    fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.0))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RequesterBody {
    email: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreatedBy {
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "agent")]
    kind: AuthorKind,
    id: Option<String>,
}

/// `POST /v1/tickets` (canonical fields plus seed 000 and 001 spellings).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTicketBody {
    subject: Option<String>,
    description: Option<String>,
    /// Seed 000: the first message (a string, or `{"body": …}`).
    message: Option<Value>,
    requester: Option<RequesterBody>,
    #[serde(alias = "requester_id")]
    customer_id: Option<String>,
    /// Seed 001.
    customer_email: Option<String>,
    #[schema(value_type = Option<String>, example = "high")]
    priority: Option<Priority>,
    status: Option<Value>,
    #[schema(value_type = Option<String>, example = "api")]
    source: Option<Source>,
    tags: Option<Value>,
    assignee_id: Option<String>,
    group_id: Option<String>,
    custom_fields: Option<Value>,
    created_by: Option<CreatedBy>,
    snoozed_until: Option<DateTime<Utc>>,
}

impl CreateTicketBody {
    fn into_new_ticket(self) -> Result<NewTicket, ApiError> {
        let mut fields = Fields::default();
        let subject = self.subject.unwrap_or_default();
        if subject.trim().is_empty() {
            fields.add("subject", "is required");
        }
        let message = match self.message {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(Value::Object(object)) => match object.get("body") {
                Some(Value::String(text)) if object.len() == 1 => Some(text.clone()),
                _ => {
                    fields.add("message", "must be a string or {\"body\": \"…\"}");
                    None
                }
            },
            Some(_) => {
                fields.add("message", "must be a string");
                None
            }
        };
        if message.is_some() && self.description.is_some() {
            fields.add("message", "give either message or description, not both");
        }
        let description = message.or(self.description);

        let given = [
            self.customer_id.is_some(),
            self.requester.is_some(),
            self.customer_email.is_some(),
        ]
        .into_iter()
        .filter(|given| *given)
        .count();
        if given > 1 {
            fields.add(
                "requester",
                "give only one of customer_id, requester or customer_email",
            );
        }
        let requester = if let Some(id) = &self.customer_id {
            fields
                .id(Kind::Customer, id, "customer_id")
                .map(RequesterInput::Existing)
        } else if let Some(requester) = self.requester {
            Some(RequesterInput::ByEmail {
                email: requester.email,
                name: requester.name,
            })
        } else {
            self.customer_email
                .map(|email| RequesterInput::ByEmail { email, name: None })
        };
        if given == 0 {
            fields.add(
                "requester",
                "is required: give customer_id, requester {email, name} or customer_email",
            );
        }
        let status = self
            .status
            .as_ref()
            .and_then(|value| fields.take(status_field("status", value)));
        let tags = match &self.tags {
            Some(value) => fields.take(tags_field("tags", value)).unwrap_or_default(),
            None => Vec::new(),
        };
        let assignee = self
            .assignee_id
            .as_deref()
            .and_then(|id| fields.id(Kind::User, id, "assignee_id"));
        let group = self
            .group_id
            .as_deref()
            .and_then(|id| fields.id(Kind::Group, id, "group_id"));
        let opener = match self.created_by {
            None
            | Some(CreatedBy {
                kind: AuthorKind::Customer,
                ..
            }) => Opener::Customer,
            Some(CreatedBy {
                kind: AuthorKind::Agent,
                id,
            }) => match id {
                Some(id) => fields
                    .id(Kind::User, &id, "created_by.id")
                    .map_or(Opener::Customer, Opener::Agent),
                None => {
                    fields.add("created_by.id", "is required for an agent");
                    Opener::Customer
                }
            },
        };
        fields.finish()?;
        Ok(NewTicket {
            subject,
            description,
            requester,
            status,
            priority: self.priority,
            source: self.source,
            assignee,
            group,
            tags,
            custom_fields: self.custom_fields,
            opener,
            snoozed_until: self.snoozed_until,
        })
    }
}

/// `PATCH /v1/tickets/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchTicketBody {
    subject: Option<String>,
    status: Option<Value>,
    #[schema(value_type = Option<String>, example = "high")]
    priority: Option<Priority>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    assignee_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    group_id: Option<Option<String>>,
    #[serde(alias = "requester_id")]
    customer_id: Option<String>,
    tags: Option<Value>,
    custom_fields: Option<Value>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    snoozed_until: Option<Option<DateTime<Utc>>>,
}

impl PatchTicketBody {
    fn into_patch(self) -> Result<TicketPatch, ApiError> {
        let mut fields = Fields::default();
        let status = self
            .status
            .as_ref()
            .and_then(|value| fields.take(status_field("status", value)));
        let assignee = self
            .assignee_id
            .map(|id| id.and_then(|id| fields.id(Kind::User, &id, "assignee_id")));
        let group = self
            .group_id
            .map(|id| id.and_then(|id| fields.id(Kind::Group, &id, "group_id")));
        let requester = self
            .customer_id
            .and_then(|id| fields.id(Kind::Customer, &id, "customer_id"));
        let tags = self
            .tags
            .as_ref()
            .and_then(|value| fields.take(tags_field("tags", value)));
        fields.finish()?;
        Ok(TicketPatch {
            subject: self.subject,
            status,
            priority: self.priority,
            assignee,
            group,
            requester,
            tags,
            custom_fields: self.custom_fields,
            snoozed_until: self.snoozed_until,
        })
    }
}

#[utoipa::path(
    get,
    path = "/v1/tickets",
    tag = "tickets",
    summary = "List tickets (filters, search, sorting, cursor or page)",
    params(TicketQuery),
    responses((status = 200, description = "A page of tickets", body = crate::http::openapi::ListEnvelope))
)]
async fn list_tickets(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<TicketQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::desc(SortField::CreatedAt))?;
    let mut assignees = csv_ids("assignee_id", query.assignee_id.as_deref(), Kind::User)?;
    if query_bool("assigned_to_me", query.assigned_to_me.as_deref())? == Some(true) {
        let me = principal.user_id.ok_or_else(|| {
            ApiError::bad_request("assigned_to_me needs an API key bound to a user")
        })?;
        assignees.push(me);
    }
    let mut requesters = csv_ids("customer_id", query.customer_id.as_deref(), Kind::Customer)?;
    requesters.extend(csv_ids(
        "requester_id",
        query.requester_id.as_deref(),
        Kind::Customer,
    )?);
    requesters.extend(csv_ids(
        "client_id",
        query.client_id.as_deref(),
        Kind::Customer,
    )?);
    let mut groups = csv_ids("group_id", query.group_id.as_deref(), Kind::Group)?;
    groups.extend(csv_ids(
        "category_id",
        query.category_id.as_deref(),
        Kind::Group,
    )?);
    let archived = match query.active_state.as_deref() {
        None | Some("") => query_bool("archived", query.archived.as_deref())?,
        Some("archived") => Some(true),
        Some("active") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "active_state must be active or archived (got `{other}`)"
            )));
        }
    };
    let filter = TicketFilter {
        statuses: csv_of("status", query.status.as_deref(), |s| {
            read_status(&Value::String(s.to_owned()))
        })?,
        priorities: csv_of("priority", query.priority.as_deref(), Priority::parse)?,
        assignees,
        requesters,
        groups,
        unassigned: query_bool("unassigned", query.unassigned.as_deref())?,
        tags: params::csv(query.tags.as_deref())
            .into_iter()
            .map(ToOwned::to_owned)
            .collect(),
        search: text(query.search.as_ref()),
        archived,
        created_after: query_time("created_after", query.created_after.as_deref())?,
        created_before: query_time("created_before", query.created_before.as_deref())?,
        updated_after: query_time("updated_after", query.updated_after.as_deref())?,
        updated_before: query_time("updated_before", query.updated_before.as_deref())?,
    };
    let tickets = desk(&state, &principal)
        .list_tickets(&filter, &page)
        .await?;
    Ok(list(&tickets, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/tickets",
    tag = "tickets",
    summary = "Create a ticket (also seed 000 and 001 bodies; JSON or a form)",
    request_body = CreateTicketBody,
    responses((status = 201, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn create_ticket(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<CreateTicketBody>,
) -> Answer {
    principal.require_write()?;
    let input = body.into_new_ticket()?;
    let ticket = desk(&state, &principal)
        .create_ticket(actor(&principal), input)
        .await?;
    Ok(created(&ticket))
}

#[utoipa::path(
    get,
    path = "/v1/tickets/{id}",
    tag = "tickets",
    summary = "Get a ticket",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    responses((status = 200, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn show_ticket(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    let ticket = desk(&state, &principal).ticket(ticket_path(&id)?).await?;
    Ok(ok(&ticket))
}

#[utoipa::path(
    patch,
    path = "/v1/tickets/{id}",
    tag = "tickets",
    summary = "Change a ticket",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    request_body = PatchTicketBody,
    responses((status = 200, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn update_ticket(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<PatchTicketBody>,
) -> Answer {
    principal.require_write()?;
    let reference = ticket_path(&id)?;
    let patch = body.into_patch()?;
    let ticket = desk(&state, &principal)
        .update_ticket(actor(&principal), reference, patch)
        .await?;
    Ok(ok(&ticket))
}

#[utoipa::path(
    delete,
    path = "/v1/tickets/{id}",
    tag = "tickets",
    summary = "Delete a ticket (soft; `restore` undoes it)",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_ticket(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal)
        .delete_ticket(actor(&principal), ticket_path(&id)?)
        .await?;
    Ok(no_content())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: Value,
}

#[utoipa::path(
    put,
    path = "/v1/tickets/{id}/status",
    tag = "tickets",
    summary = "Set the status (a name, or seed 002's status id)",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    request_body = StatusBody,
    responses((status = 200, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn set_status(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<StatusBody>,
) -> Answer {
    principal.require_write()?;
    let reference = ticket_path(&id)?;
    let status = status_field("status", &body.status)
        .map_err(|(field, reason)| ApiError::invalid_field(field, reason))?;
    let patch = TicketPatch {
        status: Some(status),
        ..TicketPatch::default()
    };
    let ticket = desk(&state, &principal)
        .update_ticket(actor(&principal), reference, patch)
        .await?;
    Ok(ok(&ticket))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AssigneeBody {
    #[serde(alias = "assignee_id")]
    user_id: Option<String>,
}

#[utoipa::path(
    put,
    path = "/v1/tickets/{id}/assignee",
    tag = "tickets",
    summary = "Assign the ticket (`{\"user_id\": null}` unassigns)",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    request_body = AssigneeBody,
    responses((status = 200, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn set_assignee(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<AssigneeBody>,
) -> Answer {
    principal.require_write()?;
    let reference = ticket_path(&id)?;
    let assignee = match body.user_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(body_id(Kind::User, id, "user_id")?),
    };
    let patch = TicketPatch {
        assignee: Some(assignee),
        ..TicketPatch::default()
    };
    let ticket = desk(&state, &principal)
        .update_ticket(actor(&principal), reference, patch)
        .await?;
    Ok(ok(&ticket))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TagsBody {
    tags: Value,
}

#[utoipa::path(
    put,
    path = "/v1/tickets/{id}/tags",
    tag = "tickets",
    summary = "Replace the ticket's tags (unknown names are created; empty clears)",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    request_body = TagsBody,
    responses((status = 200, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn set_tags(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<TagsBody>,
) -> Answer {
    principal.require_write()?;
    let reference = ticket_path(&id)?;
    let tags = tags_field("tags", &body.tags)
        .map_err(|(field, reason)| ApiError::invalid_field(field, reason))?;
    let patch = TicketPatch {
        tags: Some(tags),
        ..TicketPatch::default()
    };
    let ticket = desk(&state, &principal)
        .update_ticket(actor(&principal), reference, patch)
        .await?;
    Ok(ok(&ticket))
}

#[utoipa::path(
    get,
    path = "/v1/tickets/{id}/tags",
    tag = "tickets",
    summary = "The ticket's tags",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    responses((status = 200, description = "The tag names", body = crate::http::openapi::DataEnvelope))
)]
async fn show_tags(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    let ticket = desk(&state, &principal).ticket(ticket_path(&id)?).await?;
    Ok(ok(&ticket.tags))
}

#[utoipa::path(
    method(put, post),
    path = "/v1/tickets/{id}/archive",
    tag = "tickets",
    summary = "Archive a ticket",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    responses((status = 200, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn archive(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(_ignored): OptionalJson<Value>,
) -> Answer {
    principal.require_write()?;
    let ticket = desk(&state, &principal)
        .archive_ticket(actor(&principal), ticket_path(&id)?)
        .await?;
    Ok(ok(&ticket))
}

#[utoipa::path(
    method(put, post),
    path = "/v1/tickets/{id}/restore",
    tag = "tickets",
    summary = "Undo archive and delete",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number")),
    responses((status = 200, description = "The ticket", body = crate::http::openapi::DataEnvelope))
)]
async fn restore(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    OptionalJson(_ignored): OptionalJson<Value>,
) -> Answer {
    principal.require_write()?;
    let ticket = desk(&state, &principal)
        .restore_ticket(actor(&principal), ticket_path(&id)?)
        .await?;
    Ok(ok(&ticket))
}

list_query!(ActivityQuery {});

#[utoipa::path(
    get,
    path = "/v1/tickets/{id}/activities",
    tag = "tickets",
    summary = "The ticket's activity log: who changed what, when",
    params(("id" = String, Path, description = "The ticket: its `tkt_…` id or its number"), ActivityQuery),
    responses((status = 200, description = "A page of activities", body = crate::http::openapi::ListEnvelope))
)]
async fn list_activities(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<ActivityQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::asc(SortField::CreatedAt))?;
    let activities = desk(&state, &principal)
        .list_activities(ticket_path(&id)?, &page)
        .await?;
    Ok(list(&activities, page.limit))
}
