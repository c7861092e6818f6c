//! Users: the agents who work tickets (assignees, message authors, the "me" of a bound API
//! key). Email is unique per workspace, case-insensitively; delete is soft so history keeps
//! its authors.
//!
//! Owns the `agent` table. Must never change tickets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use crate::{
    Helpdesk, TicketError,
    ids::{Kind, encode},
    listing::{ListSpec, Page, PageRequest, contains_pattern, fetch_page},
    validate::{self, Problems},
};

/// What an agent may do in the helpdesk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the helpdesk.
    Admin,
    /// Works tickets.
    #[default]
    Agent,
}

impl Role {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Agent => "agent",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "agent" => Some(Self::Agent),
            _ => None,
        }
    }
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `usr_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Whether the agent can be assigned work.
    pub active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    name: String,
    email: String,
    role: String,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            key: row.id,
            id: encode(Kind::User, row.id),
            name: row.name,
            email: row.email,
            role: Role::parse(&row.role).unwrap_or_default(),
            active: row.active,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

macro_rules! user_columns {
    () => {
        "a.id, a.name, a.email, a.role, a.active, a.created_at, a.updated_at"
    };
}

const LIST: ListSpec = ListSpec {
    select: concat!(user_columns!(), " FROM agent a"),
    from: "agent a",
    key: "a.id",
    sorts: crate::listing::named_sorts!("a"),
};

/// A new agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Email (unique per workspace).
    pub email: String,
    /// Role (default `agent`).
    pub role: Option<Role>,
    /// Active (default true).
    pub active: Option<bool>,
}

/// Changes to an agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Display name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Role.
    pub role: Option<Role>,
    /// Active.
    pub active: Option<bool>,
}

/// Agent list filters.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Exact email (case-insensitive).
    pub email: Option<String>,
    /// Only this role.
    pub role: Option<Role>,
    /// Only active (or inactive) agents.
    pub active: Option<bool>,
    /// Substring of name or email.
    pub search: Option<String>,
}

fn duplicate_email(error: sqlx::Error) -> TicketError {
    if validate::is_unique_violation(&error, "agent_email") {
        TicketError::invalid("email", "is already used by another user")
    } else {
        error.into()
    }
}

pub(crate) async fn fetch(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    key: i64,
) -> Result<Option<User>, TicketError> {
    let row: Option<UserRow> = sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM agent a WHERE a.workspace_id = $1 AND a.id = $2 AND a.deleted_at IS NULL"
    ))
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

impl Helpdesk<'_> {
    /// Creates an agent.
    pub async fn create_user(&self, input: NewUser) -> Result<User, TicketError> {
        let mut problems = Problems::default();
        let name = problems.check(validate::required_text("name", &input.name, 200));
        let email = problems.check(validate::email("email", &input.email));
        problems.finish()?;
        let key: i64 = sqlx::query_scalar(
            "INSERT INTO agent (workspace_id, name, email, role, active) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(self.workspace_id)
        .bind(name)
        .bind(email)
        .bind(input.role.unwrap_or_default().as_str())
        .bind(input.active.unwrap_or(true))
        .fetch_one(self.pool)
        .await
        .map_err(duplicate_email)?;
        self.user(key).await
    }

    /// One agent.
    pub async fn user(&self, key: i64) -> Result<User, TicketError> {
        fetch(self.pool, self.workspace_id, key)
            .await?
            .ok_or(TicketError::NotFound("User"))
    }

    /// Changes an agent.
    pub async fn update_user(&self, key: i64, patch: UserPatch) -> Result<User, TicketError> {
        let mut problems = Problems::default();
        let mut update = QueryBuilder::<Postgres>::new("UPDATE agent SET updated_at = now()");
        if let Some(name) = &patch.name
            && let Some(name) = problems.check(validate::required_text("name", name, 200))
        {
            update.push(", name = ").push_bind(name);
        }
        if let Some(email) = &patch.email
            && let Some(email) = problems.check(validate::email("email", email))
        {
            update.push(", email = ").push_bind(email);
        }
        if let Some(role) = patch.role {
            update.push(", role = ").push_bind(role.as_str());
        }
        if let Some(active) = patch.active {
            update.push(", active = ").push_bind(active);
        }
        problems.finish()?;
        update
            .push(" WHERE workspace_id = ")
            .push_bind(self.workspace_id)
            .push(" AND id = ")
            .push_bind(key)
            .push(" AND deleted_at IS NULL");
        let done = update
            .build()
            .execute(self.pool)
            .await
            .map_err(duplicate_email)?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("User"));
        }
        self.user(key).await
    }

    /// Deletes an agent (soft; their tickets are unassigned by the caller's next change, and
    /// their messages keep their name).
    pub async fn delete_user(&self, key: i64) -> Result<(), TicketError> {
        let done = sqlx::query(
            "UPDATE agent SET deleted_at = now(), active = false, updated_at = now() \
             WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(self.workspace_id)
        .bind(key)
        .execute(self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("User"));
        }
        Ok(())
    }

    /// Lists agents.
    pub async fn list_users(
        &self,
        filter: &UserFilter,
        page: &PageRequest,
    ) -> Result<Page<User>, TicketError> {
        let workspace_id = self.workspace_id;
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query
                .push("a.workspace_id = ")
                .push_bind(workspace_id)
                .push(" AND a.deleted_at IS NULL");
            if let Some(email) = &filter.email {
                query
                    .push(" AND lower(a.email) = lower(")
                    .push_bind(email.clone())
                    .push(")");
            }
            if let Some(role) = filter.role {
                query.push(" AND a.role = ").push_bind(role.as_str());
            }
            if let Some(active) = filter.active {
                query.push(" AND a.active = ").push_bind(active);
            }
            if let Some(search) = &filter.search {
                let pattern = contains_pattern(search);
                query
                    .push(" AND (a.name ILIKE ")
                    .push_bind(pattern.clone())
                    .push(" OR a.email ILIKE ")
                    .push_bind(pattern)
                    .push(")");
            }
        };
        let page: Page<UserRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        Ok(page.map(Into::into))
    }
}
