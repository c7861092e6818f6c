//! `/v1/articles`: the knowledge base (seed 001): list (collection, status, search, cursor),
//! create, get, update, delete. Must never touch tickets.

use axum::{
    Router,
    extract::{Path, State},
    routing::get,
};
use deskhook_tickets::{
    article::{ArticleFilter, ArticlePatch, ArticleStatus, NewArticle},
    ids::Kind,
    listing::{Sort, SortField},
};

use super::{
    Answer,
    body::JsonOrForm,
    created, desk, list, no_content, ok,
    params::{list_query, path_id, text},
};
use crate::http::{
    ApiError, AppState,
    auth::{Principal, RequireScope as _},
    extract::Query,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/articles", get(list_articles).post(create_article))
        .route(
            "/articles/{id}",
            get(show_article)
                .patch(update_article)
                .put(update_article)
                .delete(delete_article),
        )
}

list_query!(ArticleQuery {
    collection_id,
    status,
    search,
});

#[utoipa::path(
    get,
    path = "/v1/articles",
    tag = "articles",
    summary = "List articles",
    params(ArticleQuery),
    responses((status = 200, description = "A page of articles", body = crate::http::openapi::ListEnvelope))
)]
async fn list_articles(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ArticleQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::desc(SortField::CreatedAt))?;
    let status = match text(query.status.as_ref()) {
        None => None,
        Some(status) => Some(ArticleStatus::parse(&status).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status must be draft or published (got `{status}`)"
            ))
        })?),
    };
    let filter = ArticleFilter {
        collection_id: text(query.collection_id.as_ref()),
        status,
        search: text(query.search.as_ref()),
    };
    let articles = desk(&state, &principal)
        .list_articles(&filter, &page)
        .await?;
    Ok(list(&articles, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/articles",
    tag = "articles",
    summary = "Create a article",
    request_body(content = Object, description = "`{title, body?, status?, collection_id?}`"),
    responses((status = 201, description = "The article", body = crate::http::openapi::DataEnvelope))
)]
async fn create_article(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<NewArticle>,
) -> Answer {
    principal.require_write()?;
    Ok(created(
        &desk(&state, &principal).create_article(body).await?,
    ))
}

fn article_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::Article, id, "Article")
}

#[utoipa::path(
    get,
    path = "/v1/articles/{id}",
    tag = "articles",
    summary = "Get a article",
    params(("id" = String, Path, description = "The article (`art_…`)'s id")),
    responses((status = 200, description = "The article", body = crate::http::openapi::DataEnvelope))
)]
async fn show_article(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    Ok(ok(&desk(&state, &principal)
        .article(article_key(&id)?)
        .await?))
}

#[utoipa::path(
    method(patch, put),
    path = "/v1/articles/{id}",
    tag = "articles",
    summary = "Change a article",
    params(("id" = String, Path, description = "The article (`art_…`)'s id")),
    request_body(content = Object, description = "The article's fields to change"),
    responses((status = 200, description = "The article", body = crate::http::openapi::DataEnvelope))
)]
async fn update_article(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<ArticlePatch>,
) -> Answer {
    principal.require_write()?;
    let key = article_key(&id)?;
    Ok(ok(&desk(&state, &principal)
        .update_article(key, body)
        .await?))
}

#[utoipa::path(
    delete,
    path = "/v1/articles/{id}",
    tag = "articles",
    summary = "Delete a article",
    params(("id" = String, Path, description = "The article (`art_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_article(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal)
        .delete_article(article_key(&id)?)
        .await?;
    Ok(no_content())
}
