//! Knowledge-base articles (seed 001): a title, a markdown body, a status (`draft` or
//! `published`) and an optional collection the client names.
//!
//! Owns the `article` table. Must never touch tickets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};

use crate::{
    Helpdesk, TicketError,
    ids::{Kind, encode},
    listing::{
        ListSpec, Page, PageRequest, SortExpression, SortField, contains_pattern, fetch_page,
    },
    validate::{self, Problems},
};

/// Whether readers can see an article.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ArticleStatus {
    /// Being written.
    #[default]
    Draft,
    /// Visible.
    Published,
}

impl ArticleStatus {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "draft" => Some(Self::Draft),
            "published" => Some(Self::Published),
            _ => None,
        }
    }
}

/// An article as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Article {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `art_…`.
    pub id: String,
    /// Title.
    pub title: String,
    /// Markdown body.
    pub body: String,
    /// Draft or published.
    pub status: ArticleStatus,
    /// The collection (the client's own id, e.g. `col_123`).
    pub collection_id: Option<String>,
    /// When it was first published.
    pub published_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ArticleRow {
    id: i64,
    title: String,
    body: String,
    status: String,
    collection_id: Option<String>,
    published_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ArticleRow> for Article {
    fn from(row: ArticleRow) -> Self {
        Self {
            key: row.id,
            id: encode(Kind::Article, row.id),
            title: row.title,
            body: row.body,
            status: ArticleStatus::parse(&row.status).unwrap_or_default(),
            collection_id: row.collection_id,
            published_at: row.published_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

macro_rules! article_columns {
    () => {
        "r.id, r.title, r.body, r.status, r.collection_id, r.published_at, r.created_at, r.updated_at"
    };
}

const LIST: ListSpec = ListSpec {
    select: concat!(article_columns!(), " FROM article r"),
    from: "article r",
    key: "r.id",
    sorts: |field| match field {
        SortField::CreatedAt => Some(SortExpression {
            sql: "r.created_at",
            cast: "timestamptz",
        }),
        SortField::UpdatedAt => Some(SortExpression {
            sql: "r.updated_at",
            cast: "timestamptz",
        }),
        SortField::Name => Some(SortExpression {
            sql: "lower(r.title)",
            cast: "text",
        }),
        SortField::Priority | SortField::Status => None,
    },
};

/// A new article.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewArticle {
    /// Title.
    pub title: String,
    /// Markdown body.
    #[serde(default)]
    pub body: String,
    /// Collection.
    pub collection_id: Option<String>,
    /// Status (default draft).
    pub status: Option<ArticleStatus>,
}

/// Changes to an article.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArticlePatch {
    /// Title.
    pub title: Option<String>,
    /// Body.
    pub body: Option<String>,
    /// Collection (`null` clears).
    #[serde(default, deserialize_with = "validate::nullable")]
    pub collection_id: Option<Option<String>>,
    /// Status.
    pub status: Option<ArticleStatus>,
}

/// Article list filters.
#[derive(Debug, Clone, Default)]
pub struct ArticleFilter {
    /// Only this collection.
    pub collection_id: Option<String>,
    /// Only this status.
    pub status: Option<ArticleStatus>,
    /// Substring of title or body.
    pub search: Option<String>,
}

const MAX_BODY: usize = 200_000;

impl Helpdesk<'_> {
    /// Creates an article.
    pub async fn create_article(&self, input: NewArticle) -> Result<Article, TicketError> {
        let mut problems = Problems::default();
        let title = problems.check(validate::required_text("title", &input.title, 500));
        if input.body.chars().count() > MAX_BODY {
            problems.add("body", format!("must be at most {MAX_BODY} characters"));
        }
        let collection = problems
            .check(validate::optional_text(
                "collection_id",
                input.collection_id.as_deref(),
                200,
            ))
            .flatten();
        problems.finish()?;
        let status = input.status.unwrap_or_default();
        let key: i64 = sqlx::query_scalar(
            "INSERT INTO article (workspace_id, title, body, status, collection_id, published_at) \
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $4 = 'published' THEN now() END) RETURNING id",
        )
        .bind(self.workspace_id)
        .bind(title)
        .bind(&input.body)
        .bind(status.as_str())
        .bind(collection)
        .fetch_one(self.pool)
        .await?;
        self.article(key).await
    }

    /// One article.
    pub async fn article(&self, key: i64) -> Result<Article, TicketError> {
        let row: Option<ArticleRow> = sqlx::query_as(concat!(
            "SELECT ",
            article_columns!(),
            " FROM article r WHERE r.workspace_id = $1 AND r.id = $2"
        ))
        .bind(self.workspace_id)
        .bind(key)
        .fetch_optional(self.pool)
        .await?;
        row.map(Into::into).ok_or(TicketError::NotFound("Article"))
    }

    /// Changes an article; publishing stamps `published_at` the first time.
    pub async fn update_article(
        &self,
        key: i64,
        patch: ArticlePatch,
    ) -> Result<Article, TicketError> {
        let mut problems = Problems::default();
        let mut update = QueryBuilder::<Postgres>::new("UPDATE article SET updated_at = now()");
        if let Some(title) = &patch.title
            && let Some(title) = problems.check(validate::required_text("title", title, 500))
        {
            update.push(", title = ").push_bind(title);
        }
        if let Some(body) = &patch.body {
            if body.chars().count() > MAX_BODY {
                problems.add("body", format!("must be at most {MAX_BODY} characters"));
            }
            update.push(", body = ").push_bind(body.clone());
        }
        if let Some(collection) = &patch.collection_id {
            let collection = problems
                .check(validate::optional_text(
                    "collection_id",
                    collection.as_deref(),
                    200,
                ))
                .flatten();
            update.push(", collection_id = ").push_bind(collection);
        }
        if let Some(status) = patch.status {
            update
                .push(", status = ")
                .push_bind(status.as_str())
                .push(", published_at = CASE WHEN ")
                .push_bind(status.as_str())
                .push(" = 'published' THEN coalesce(published_at, ")
                // Bound, not now(): Citus evaluates no stable function inside a CASE.
                .push_bind(Utc::now())
                .push(") ELSE published_at END");
        }
        problems.finish()?;
        update
            .push(" WHERE workspace_id = ")
            .push_bind(self.workspace_id)
            .push(" AND id = ")
            .push_bind(key);
        let done = update.build().execute(self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("Article"));
        }
        self.article(key).await
    }

    /// Deletes an article.
    pub async fn delete_article(&self, key: i64) -> Result<(), TicketError> {
        let done = sqlx::query("DELETE FROM article WHERE workspace_id = $1 AND id = $2")
            .bind(self.workspace_id)
            .bind(key)
            .execute(self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("Article"));
        }
        Ok(())
    }

    /// Lists articles.
    pub async fn list_articles(
        &self,
        filter: &ArticleFilter,
        page: &PageRequest,
    ) -> Result<Page<Article>, TicketError> {
        let workspace_id = self.workspace_id;
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query.push("r.workspace_id = ").push_bind(workspace_id);
            if let Some(collection) = &filter.collection_id {
                query
                    .push(" AND r.collection_id = ")
                    .push_bind(collection.clone());
            }
            if let Some(status) = filter.status {
                query.push(" AND r.status = ").push_bind(status.as_str());
            }
            if let Some(search) = &filter.search {
                let pattern = contains_pattern(search);
                query
                    .push(" AND (r.title ILIKE ")
                    .push_bind(pattern.clone())
                    .push(" OR r.body ILIKE ")
                    .push_bind(pattern)
                    .push(")");
            }
        };
        let page: Page<ArticleRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        Ok(page.map(Into::into))
    }
}
