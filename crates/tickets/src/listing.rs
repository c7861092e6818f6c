//! Lists: sort orders, keyset positions, page numbers and the count, shared by every resource.
//!
//! A list is ordered by one sort expression and then by the row key, so rows with equal sort
//! values (equal timestamps) still have a strict order and a [`Keyset`] position after the last
//! row served never skips or repeats one. Page numbers are offered beside positions but only
//! down to [`MAX_DEPTH`] rows, which bounds the cost of the offset they need. The count is exact
//! up to [`MAX_DEPTH`] and reported as more than that beyond.
//!
//! This module must never format cursors for clients (that is the API's business) nor build
//! SQL from caller-supplied text: sort expressions come from each resource's fixed table.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row as _, postgres::PgRow};

use crate::TicketError;

/// Rows beyond this are neither counted exactly nor reachable by page number.
pub const MAX_DEPTH: i64 = 10_000;

/// What a list can be ordered by (each resource accepts a subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortField {
    /// Creation time.
    CreatedAt,
    /// Last change.
    UpdatedAt,
    /// Ticket priority (low < normal < high < urgent).
    Priority,
    /// Ticket status in lifecycle order.
    Status,
    /// Name or title, case-insensitively.
    Name,
}

impl SortField {
    /// Parses a client's name for the field.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created_at" | "created" | "ticket_created" => Some(Self::CreatedAt),
            "updated_at" | "updated" | "last_activity_at" | "ticket_last_updated" => {
                Some(Self::UpdatedAt)
            }
            "priority" | "ticket_priority" => Some(Self::Priority),
            "status" | "ticket_status" => Some(Self::Status),
            "name" | "title" => Some(Self::Name),
            _ => None,
        }
    }

    /// The canonical name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Priority => "priority",
            Self::Status => "status",
            Self::Name => "name",
        }
    }

    /// Whether the field is a timestamp (a seed-001 timestamp cursor can start there).
    pub const fn is_time(self) -> bool {
        matches!(self, Self::CreatedAt | Self::UpdatedAt)
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// A list order: a field and a direction (ties broken by the row key in the same direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The sort field.
    pub field: SortField,
    /// The direction.
    pub direction: Direction,
}

impl Sort {
    /// `field` descending.
    pub const fn desc(field: SortField) -> Self {
        Self {
            field,
            direction: Direction::Desc,
        }
    }

    /// `field` ascending.
    pub const fn asc(field: SortField) -> Self {
        Self {
            field,
            direction: Direction::Asc,
        }
    }

    /// Reads the two spellings: `order_by` + `order_dir`, or `sort=-field` (seed 003; a
    /// leading `-` is descending, `+` or nothing ascending). Absent means `default`; an
    /// unknown field or direction is a bad request.
    pub fn parse(
        order_by: Option<&str>,
        order_dir: Option<&str>,
        sort: Option<&str>,
        default: Self,
    ) -> Result<Self, TicketError> {
        let direction = |text: &str| match text.to_ascii_lowercase().as_str() {
            "asc" => Ok(Direction::Asc),
            "desc" => Ok(Direction::Desc),
            other => Err(TicketError::BadRequest(format!(
                "order_dir must be asc or desc (got `{other}`)"
            ))),
        };
        let field = |text: &str| {
            SortField::parse(text)
                .ok_or_else(|| TicketError::BadRequest(format!("cannot sort by `{text}`")))
        };
        if let Some(sort) = sort.filter(|s| !s.is_empty()) {
            if order_by.is_some() {
                return Err(TicketError::BadRequest(
                    "give either sort or order_by, not both".to_owned(),
                ));
            }
            return Ok(match sort.strip_prefix('-') {
                Some(name) => Self::desc(field(name)?),
                None => Self::asc(field(sort.trim_start_matches('+'))?),
            });
        }
        let mut chosen = match order_by.filter(|s| !s.is_empty()) {
            // A field named without a direction sorts descending, like the default lists.
            Some(name) => Self::desc(field(name)?),
            None => default,
        };
        if let Some(dir) = order_dir.filter(|s| !s.is_empty()) {
            chosen.direction = direction(dir)?;
        }
        Ok(chosen)
    }

    /// `created_at:desc`: what a position remembers about the order it was made in.
    fn tag(self) -> String {
        let dir = match self.direction {
            Direction::Asc => "asc",
            Direction::Desc => "desc",
        };
        format!("{}:{dir}", self.field.as_str())
    }
}

/// The position after the last row served: the order it belongs to, that row's sort value (as
/// PostgreSQL printed it) and its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyset {
    /// The order (`created_at:desc`).
    #[serde(rename = "o")]
    pub order: String,
    /// The sort value of the last row.
    #[serde(rename = "v")]
    pub value: String,
    /// The key of the last row.
    #[serde(rename = "k")]
    pub key: i64,
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// The first page.
    #[default]
    First,
    /// After a position a previous page returned.
    After(Keyset),
    /// Strictly after a timestamp in the sort direction (seed 001's timestamp cursor).
    Since(DateTime<Utc>),
    /// A page number, from 1 (seeds 002 and 003).
    Page(i64),
}

/// One page to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows per page.
    pub limit: i64,
    /// The order.
    pub sort: Sort,
    /// Where to start.
    pub start: Start,
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// The position after the last row, when there are more.
    pub next: Option<Keyset>,
    /// How many rows match, when there are at most [`MAX_DEPTH`].
    pub total: Option<i64>,
}

impl<T> Page<T> {
    /// Applies `f` to each item.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
            total: self.total,
        }
    }
}

/// A sort expression of a resource and the SQL type its printed value casts back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SortExpression {
    pub sql: &'static str,
    pub cast: &'static str,
}

/// How one resource is listed: its FROM clause, key column and sort expressions.
/// The sorts of a named resource whose row is aliased `$alias`: creation time, change time,
/// and name (case-insensitive). Groups, tags and users sort this way.
macro_rules! named_sorts {
    ($alias:literal) => {
        |field| match field {
            $crate::listing::SortField::CreatedAt => Some($crate::listing::SortExpression {
                sql: concat!($alias, ".created_at"),
                cast: "timestamptz",
            }),
            $crate::listing::SortField::UpdatedAt => Some($crate::listing::SortExpression {
                sql: concat!($alias, ".updated_at"),
                cast: "timestamptz",
            }),
            $crate::listing::SortField::Name => Some($crate::listing::SortExpression {
                sql: concat!("lower(", $alias, ".name)"),
                cast: "text",
            }),
            $crate::listing::SortField::Priority | $crate::listing::SortField::Status => None,
        }
    };
}
pub(crate) use named_sorts;

pub(crate) struct ListSpec {
    /// `columns FROM table alias JOIN …` (no WHERE).
    pub select: &'static str,
    /// `table alias JOIN …` for the count (no columns).
    pub from: &'static str,
    /// The key column (`t.id`).
    pub key: &'static str,
    /// The sort expressions this resource accepts.
    pub sorts: fn(SortField) -> Option<SortExpression>,
}

/// Fetches one page of rows of `spec` matching the condition `push_where` writes (it must
/// start with the workspace condition), and counts all matching rows up to [`MAX_DEPTH`] + 1.
pub(crate) async fn fetch_page<T>(
    pool: &PgPool,
    spec: &ListSpec,
    push_where: &(dyn Fn(&mut QueryBuilder<'static, Postgres>) + Sync),
    request: &PageRequest,
) -> Result<Page<T>, TicketError>
where
    T: for<'r> FromRow<'r, PgRow>,
{
    let sort = request.sort;
    let expression = (spec.sorts)(sort.field).ok_or_else(|| {
        TicketError::BadRequest(format!("cannot sort this list by {}", sort.field.as_str()))
    })?;
    let (comparison, direction) = match sort.direction {
        Direction::Asc => (">", "ASC"),
        Direction::Desc => ("<", "DESC"),
    };

    let mut query = QueryBuilder::<Postgres>::new("SELECT (");
    query.push(expression.sql);
    query.push(")::text AS list_sort_value, ");
    query.push(spec.key);
    query.push(" AS list_key, ");
    query.push(spec.select);
    query.push(" WHERE ");
    push_where(&mut query);
    let mut offset = None;
    match &request.start {
        Start::First => {}
        Start::After(keyset) => {
            if keyset.order != sort.tag() {
                return Err(TicketError::BadRequest(
                    "the cursor belongs to another sort order; start again without it".to_owned(),
                ));
            }
            query.push(format_args!(
                " AND (({}), {}) {comparison} (CAST(",
                expression.sql, spec.key
            ));
            query.push_bind(keyset.value.clone());
            query.push(format_args!(" AS {}), ", expression.cast));
            query.push_bind(keyset.key);
            query.push(")");
        }
        Start::Since(instant) => {
            if !sort.field.is_time() {
                return Err(TicketError::BadRequest(
                    "a timestamp cursor needs a created_at or updated_at order".to_owned(),
                ));
            }
            query.push(format_args!(" AND ({}) {comparison} ", expression.sql));
            query.push_bind(*instant);
        }
        Start::Page(page) => {
            if *page < 1 {
                return Err(TicketError::BadRequest(
                    "page numbers start at 1".to_owned(),
                ));
            }
            let skipped = (page - 1).saturating_mul(request.limit);
            if skipped.saturating_add(request.limit) > MAX_DEPTH {
                return Err(TicketError::BadRequest(format!(
                    "page numbers reach {MAX_DEPTH} rows deep; use cursors beyond"
                )));
            }
            offset = Some(skipped);
        }
    }
    query.push(format_args!(
        " ORDER BY ({}) {direction}, {} {direction} LIMIT ",
        expression.sql, spec.key
    ));
    query.push_bind(request.limit + 1);
    if let Some(offset) = offset {
        query.push(" OFFSET ");
        query.push_bind(offset);
    }
    let rows = query
        .build()
        .fetch_all(pool)
        .await
        .map_err(|error| refuse_bad_position(error, &request.start))?;

    let mut items = Vec::with_capacity(rows.len());
    let mut last: Option<(String, i64)> = None;
    let more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > request.limit;
    for row in rows
        .iter()
        .take(usize::try_from(request.limit).unwrap_or(usize::MAX))
    {
        items.push(T::from_row(row)?);
        last = Some((row.try_get("list_sort_value")?, row.try_get("list_key")?));
    }
    let next = match last {
        Some((value, key)) if more => Some(Keyset {
            order: sort.tag(),
            value,
            key,
        }),
        _ => None,
    };

    let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM (SELECT 1 FROM ");
    count.push(spec.from);
    count.push(" WHERE ");
    push_where(&mut count);
    count.push(" LIMIT ");
    count.push_bind(MAX_DEPTH + 1);
    count.push(") AS matching");
    let total: i64 = count.build_query_scalar().fetch_one(pool).await?;
    Ok(Page {
        items,
        next,
        total: (total <= MAX_DEPTH).then_some(total),
    })
}

/// A position whose value does not cast back to the sort's type (a tampered cursor) makes
/// PostgreSQL raise a data exception (SQLSTATE class 22): that is the client's bad request.
fn refuse_bad_position(error: sqlx::Error, start: &Start) -> TicketError {
    let data_exception = matches!(&error, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| code.starts_with("22")));
    if data_exception && matches!(start, Start::After(_)) {
        TicketError::BadRequest("Invalid cursor: pass back `meta.next_cursor` as given".to_owned())
    } else {
        error.into()
    }
}

/// `%term%` for ILIKE, with the pattern characters of `term` escaped.
pub(crate) fn contains_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sort_spellings_agree() {
        let default = Sort::desc(SortField::CreatedAt);
        let plain = Sort::parse(Some("updated_at"), Some("desc"), None, default).expect("plain");
        let dashed = Sort::parse(None, None, Some("-updated_at"), default).expect("dashed");
        assert_eq!(plain, dashed);
        let ascending = Sort::parse(Some("priority"), Some("asc"), None, default).expect("asc");
        assert_eq!(ascending, Sort::asc(SortField::Priority));
        assert_eq!(Sort::parse(None, None, None, default).ok(), Some(default));
        assert!(Sort::parse(Some("colour"), None, None, default).is_err());
        assert!(Sort::parse(Some("created_at"), Some("up"), None, default).is_err());
    }

    #[test]
    fn search_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("50%_off"), "%50\\%\\_off%");
    }
}
