//! Tags: labels on tickets. Names are unique per workspace, case-insensitively; setting a
//! ticket's tags by name creates the unknown ones. Deleting a tag removes it from its tickets.
//!
//! Owns the `tag` and `ticket_tag` tables. Must never emit events itself: a ticket's tag change
//! is the ticket module's change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};

use crate::{
    Helpdesk, TicketError,
    ids::{Kind, encode},
    listing::{ListSpec, Page, PageRequest, contains_pattern, fetch_page},
    validate::{self, Problems},
};

/// The longest tag name.
pub const MAX_NAME: usize = 100;

/// A tag as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Tag {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `tag_…`.
    pub id: String,
    /// Name (unique per workspace, case-insensitively).
    pub name: String,
    /// Colour (`#ff0000` or a name).
    pub color: Option<String>,
    /// Tickets carrying it (not deleted).
    pub ticket_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct TagRow {
    id: i64,
    name: String,
    color: Option<String>,
    ticket_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<TagRow> for Tag {
    fn from(row: TagRow) -> Self {
        Self {
            key: row.id,
            id: encode(Kind::Tag, row.id),
            name: row.name,
            color: row.color,
            ticket_count: row.ticket_count,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

macro_rules! tag_columns {
    () => {
        "g.id, g.name, g.color, \
         (SELECT count(*) FROM ticket_tag tt JOIN ticket t ON t.workspace_id = tt.workspace_id AND t.id = tt.ticket_id \
          WHERE tt.workspace_id = g.workspace_id AND tt.tag_id = g.id AND t.deleted_at IS NULL) AS ticket_count, \
         g.created_at, g.updated_at"
    };
}

const LIST: ListSpec = ListSpec {
    select: concat!(tag_columns!(), " FROM tag g"),
    from: "tag g",
    key: "g.id",
    sorts: crate::listing::named_sorts!("g"),
};

/// A new tag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTag {
    /// Name.
    pub name: String,
    /// Colour.
    pub color: Option<String>,
}

/// Changes to a tag.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagPatch {
    /// Name.
    pub name: Option<String>,
    /// Colour (`null` clears).
    #[serde(default, deserialize_with = "validate::nullable")]
    pub color: Option<Option<String>>,
}

/// Tag list filters.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    /// Substring of the name.
    pub search: Option<String>,
    /// Exact name (case-insensitive).
    pub name: Option<String>,
}

/// A tag name: trimmed, 1–100 characters, no commas (lists of names are comma-separated).
pub(crate) fn tag_name(field: &str, value: &str) -> Result<String, (String, String)> {
    let name = validate::required_text(field, value, MAX_NAME)?;
    if name.contains(',') {
        return Err((field.to_owned(), "must not contain commas".to_owned()));
    }
    Ok(name)
}

/// Validates a set of names and removes case-insensitive duplicates, keeping the first spelling.
pub(crate) fn tag_names(field: &str, names: &[String]) -> Result<Vec<String>, TicketError> {
    let mut problems = Problems::default();
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    for (index, name) in names.iter().enumerate() {
        if let Some(name) = problems.check(tag_name(&format!("{field}[{index}]"), name))
            && seen.insert(name.to_lowercase())
        {
            kept.push(name);
        }
    }
    problems.finish()?;
    Ok(kept)
}

/// The keys of tags named `names` in the workspace, creating the missing ones. Existing tags
/// are read without locking; only missing names are inserted.
pub(crate) async fn ensure(
    conn: &mut PgConnection,
    workspace_id: i64,
    names: &[String],
) -> Result<Vec<i64>, TicketError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let lowered: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    let find = || {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT id, lower(name) FROM tag WHERE workspace_id = $1 AND lower(name) = ANY($2)",
        )
        .bind(workspace_id)
        .bind(&lowered)
    };
    let existing = find().fetch_all(&mut *conn).await?;
    if existing.len() == names.len() {
        return Ok(existing.into_iter().map(|(key, _)| key).collect());
    }
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| {
            let lower = name.to_lowercase();
            !existing.iter().any(|(_, found)| *found == lower)
        })
        .collect();
    sqlx::query(
        "INSERT INTO tag (workspace_id, name) SELECT $1, name FROM unnest($2::text[]) AS n(name) \
         ON CONFLICT (workspace_id, lower(name)) DO NOTHING",
    )
    .bind(workspace_id)
    .bind(&missing)
    .execute(&mut *conn)
    .await?;
    Ok(find()
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|(key, _)| key)
        .collect())
}

fn duplicate_name(error: sqlx::Error) -> TicketError {
    if validate::is_unique_violation(&error, "tag_name") {
        TicketError::invalid("name", "is already used by another tag")
    } else {
        error.into()
    }
}

async fn fetch(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    key: i64,
) -> Result<Option<Tag>, TicketError> {
    let row: Option<TagRow> = sqlx::query_as(concat!(
        "SELECT ",
        tag_columns!(),
        " FROM tag g WHERE g.workspace_id = $1 AND g.id = $2"
    ))
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

impl Helpdesk<'_> {
    /// Creates a tag.
    pub async fn create_tag(&self, input: NewTag) -> Result<Tag, TicketError> {
        let mut problems = Problems::default();
        let name = problems.check(tag_name("name", &input.name));
        let color = match input.color.as_deref() {
            Some(color) => problems.check(validate::color("color", color)),
            None => None,
        };
        problems.finish()?;
        let key: i64 = sqlx::query_scalar(
            "INSERT INTO tag (workspace_id, name, color) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(self.workspace_id)
        .bind(name)
        .bind(color)
        .fetch_one(self.pool)
        .await
        .map_err(duplicate_name)?;
        self.tag(key).await
    }

    /// One tag.
    pub async fn tag(&self, key: i64) -> Result<Tag, TicketError> {
        fetch(self.pool, self.workspace_id, key)
            .await?
            .ok_or(TicketError::NotFound("Tag"))
    }

    /// Changes a tag (a rename shows on its tickets at once).
    pub async fn update_tag(&self, key: i64, patch: TagPatch) -> Result<Tag, TicketError> {
        let mut problems = Problems::default();
        let mut update = QueryBuilder::<Postgres>::new("UPDATE tag SET updated_at = now()");
        if let Some(name) = &patch.name
            && let Some(name) = problems.check(tag_name("name", name))
        {
            update.push(", name = ").push_bind(name);
        }
        if let Some(color) = &patch.color {
            let color = match color.as_deref() {
                Some(color) => problems.check(validate::color("color", color)),
                None => None,
            };
            update.push(", color = ").push_bind(color);
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
            return Err(TicketError::NotFound("Tag"));
        }
        self.tag(key).await
    }

    /// Deletes a tag and takes it off its tickets.
    pub async fn delete_tag(&self, key: i64) -> Result<(), TicketError> {
        let done = sqlx::query("DELETE FROM tag WHERE workspace_id = $1 AND id = $2")
            .bind(self.workspace_id)
            .bind(key)
            .execute(self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("Tag"));
        }
        Ok(())
    }

    /// Lists tags.
    pub async fn list_tags(
        &self,
        filter: &TagFilter,
        page: &PageRequest,
    ) -> Result<Page<Tag>, TicketError> {
        let workspace_id = self.workspace_id;
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query.push("g.workspace_id = ").push_bind(workspace_id);
            if let Some(search) = &filter.search {
                query
                    .push(" AND g.name ILIKE ")
                    .push_bind(contains_pattern(search));
            }
            if let Some(name) = &filter.name {
                query
                    .push(" AND lower(g.name) = lower(")
                    .push_bind(name.clone())
                    .push(")");
            }
        };
        let page: Page<TagRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        Ok(page.map(Into::into))
    }
}
