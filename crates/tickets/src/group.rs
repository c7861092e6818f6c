//! Groups: departments or teams tickets are routed to (seed 002's departments, 004's groups).
//! Names are unique per workspace, case-insensitively. Deleting a group leaves its tickets
//! without a group.
//!
//! Owns the `agent_group` table. Must never change tickets beyond that `ON DELETE SET NULL`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, Postgres, QueryBuilder};

use crate::{
    Helpdesk, TicketError,
    ids::{Kind, encode},
    listing::{ListSpec, Page, PageRequest, contains_pattern, fetch_page},
    validate::{self, Problems},
};

/// A group as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `grp_…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    id: i64,
    name: String,
    description: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<GroupRow> for Group {
    fn from(row: GroupRow) -> Self {
        Self {
            key: row.id,
            id: encode(Kind::Group, row.id),
            name: row.name,
            description: row.description,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

macro_rules! group_columns {
    () => {
        "g.id, g.name, g.description, g.created_at, g.updated_at"
    };
}

const LIST: ListSpec = ListSpec {
    select: concat!(group_columns!(), " FROM agent_group g"),
    from: "agent_group g",
    key: "g.id",
    sorts: crate::listing::named_sorts!("g"),
};

/// A new group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// Name (unique per workspace).
    pub name: String,
    /// Description.
    pub description: Option<String>,
}

/// Changes to a group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPatch {
    /// Name.
    pub name: Option<String>,
    /// Description (`null` clears).
    #[serde(default, deserialize_with = "validate::nullable")]
    pub description: Option<Option<String>>,
}

/// Group list filters.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    /// Substring of the name.
    pub search: Option<String>,
}

fn duplicate_name(error: sqlx::Error) -> TicketError {
    if validate::is_unique_violation(&error, "agent_group_name") {
        TicketError::invalid("name", "is already used by another group")
    } else {
        error.into()
    }
}

pub(crate) async fn fetch(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    key: i64,
) -> Result<Option<Group>, TicketError> {
    let row: Option<GroupRow> = sqlx::query_as(concat!(
        "SELECT ",
        group_columns!(),
        " FROM agent_group g WHERE g.workspace_id = $1 AND g.id = $2"
    ))
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

impl Helpdesk<'_> {
    /// Creates a group.
    pub async fn create_group(&self, input: NewGroup) -> Result<Group, TicketError> {
        let mut problems = Problems::default();
        let name = problems.check(validate::required_text("name", &input.name, 200));
        let description = problems
            .check(validate::optional_text(
                "description",
                input.description.as_deref(),
                2000,
            ))
            .flatten();
        problems.finish()?;
        let key: i64 = sqlx::query_scalar(
            "INSERT INTO agent_group (workspace_id, name, description) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(self.workspace_id)
        .bind(name)
        .bind(description)
        .fetch_one(self.pool)
        .await
        .map_err(duplicate_name)?;
        self.group(key).await
    }

    /// One group.
    pub async fn group(&self, key: i64) -> Result<Group, TicketError> {
        fetch(self.pool, self.workspace_id, key)
            .await?
            .ok_or(TicketError::NotFound("Group"))
    }

    /// Changes a group.
    pub async fn update_group(&self, key: i64, patch: GroupPatch) -> Result<Group, TicketError> {
        let mut problems = Problems::default();
        let mut update = QueryBuilder::<Postgres>::new("UPDATE agent_group SET updated_at = now()");
        if let Some(name) = &patch.name
            && let Some(name) = problems.check(validate::required_text("name", name, 200))
        {
            update.push(", name = ").push_bind(name);
        }
        if let Some(description) = &patch.description {
            let text = problems
                .check(validate::optional_text(
                    "description",
                    description.as_deref(),
                    2000,
                ))
                .flatten();
            update.push(", description = ").push_bind(text);
        }
        problems.finish()?;
        update
            .push(" WHERE workspace_id = ")
            .push_bind(self.workspace_id)
            .push(" AND id = ")
            .push_bind(key);
        let done = update
            .build()
            .execute(self.pool)
            .await
            .map_err(duplicate_name)?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("Group"));
        }
        self.group(key).await
    }

    /// Deletes a group; its tickets keep going without one.
    pub async fn delete_group(&self, key: i64) -> Result<(), TicketError> {
        // Cleared here, not by the foreign key: one that includes the workspace cannot set
        // NULL (it would null the workspace too; Citus refuses it outright).
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE ticket SET group_id = NULL WHERE workspace_id = $1 AND group_id = $2")
            .bind(self.workspace_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM agent_group WHERE workspace_id = $1 AND id = $2")
            .bind(self.workspace_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("Group"));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lists groups.
    pub async fn list_groups(
        &self,
        filter: &GroupFilter,
        page: &PageRequest,
    ) -> Result<Page<Group>, TicketError> {
        let workspace_id = self.workspace_id;
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query.push("g.workspace_id = ").push_bind(workspace_id);
            if let Some(search) = &filter.search {
                query
                    .push(" AND g.name ILIKE ")
                    .push_bind(contains_pattern(search));
            }
        };
        let page: Page<GroupRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        Ok(page.map(Into::into))
    }
}
