//! `/v1/groups` and `/v1/tags`: list (search, cursor), create, get, update, delete. Must never
//! change tickets directly (deleting a tag or group detaches it in the crate).

use axum::{
    Router,
    extract::{Path, State},
    routing::get,
};
use deskhook_tickets::{
    group::{GroupFilter, GroupPatch, NewGroup},
    ids::Kind,
    listing::{Sort, SortField},
    tag::{NewTag, TagFilter, TagPatch},
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
        .route("/groups", get(list_groups).post(create_group))
        .route(
            "/groups/{id}",
            get(show_group)
                .patch(update_group)
                .put(update_group)
                .delete(delete_group),
        )
        .route("/tags", get(list_tags).post(create_tag))
        .route(
            "/tags/{id}",
            get(show_tag)
                .patch(update_tag)
                .put(update_tag)
                .delete(delete_tag),
        )
}

list_query!(GroupQuery { search });

#[utoipa::path(
    get,
    path = "/v1/groups",
    tag = "groups",
    summary = "List groups",
    params(GroupQuery),
    responses((status = 200, description = "A page of groups", body = crate::http::openapi::ListEnvelope))
)]
async fn list_groups(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<GroupQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::asc(SortField::Name))?;
    let filter = GroupFilter {
        search: text(query.search.as_ref()),
    };
    let groups = desk(&state, &principal).list_groups(&filter, &page).await?;
    Ok(list(&groups, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/groups",
    tag = "groups",
    summary = "Create a group",
    request_body(content = Object, description = "`{name, description?}`"),
    responses((status = 201, description = "The group", body = crate::http::openapi::DataEnvelope))
)]
async fn create_group(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<NewGroup>,
) -> Answer {
    principal.require_write()?;
    Ok(created(&desk(&state, &principal).create_group(body).await?))
}

fn group_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::Group, id, "Group")
}

#[utoipa::path(
    get,
    path = "/v1/groups/{id}",
    tag = "groups",
    summary = "Get a group",
    params(("id" = String, Path, description = "The group (`grp_…`)'s id")),
    responses((status = 200, description = "The group", body = crate::http::openapi::DataEnvelope))
)]
async fn show_group(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    Ok(ok(&desk(&state, &principal).group(group_key(&id)?).await?))
}

#[utoipa::path(
    method(patch, put),
    path = "/v1/groups/{id}",
    tag = "groups",
    summary = "Change a group",
    params(("id" = String, Path, description = "The group (`grp_…`)'s id")),
    request_body(content = Object, description = "The group's fields to change"),
    responses((status = 200, description = "The group", body = crate::http::openapi::DataEnvelope))
)]
async fn update_group(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<GroupPatch>,
) -> Answer {
    principal.require_write()?;
    let key = group_key(&id)?;
    Ok(ok(&desk(&state, &principal)
        .update_group(key, body)
        .await?))
}

#[utoipa::path(
    delete,
    path = "/v1/groups/{id}",
    tag = "groups",
    summary = "Delete a group",
    params(("id" = String, Path, description = "The group (`grp_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_group(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal)
        .delete_group(group_key(&id)?)
        .await?;
    Ok(no_content())
}

list_query!(TagQuery { search, name });

#[utoipa::path(
    get,
    path = "/v1/tags",
    tag = "tags",
    summary = "List tags",
    params(TagQuery),
    responses((status = 200, description = "A page of tags", body = crate::http::openapi::ListEnvelope))
)]
async fn list_tags(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<TagQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::asc(SortField::Name))?;
    let filter = TagFilter {
        search: text(query.search.as_ref()),
        name: text(query.name.as_ref()),
    };
    let tags = desk(&state, &principal).list_tags(&filter, &page).await?;
    Ok(list(&tags, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/tags",
    tag = "tags",
    summary = "Create a tag",
    request_body(content = Object, description = "`{name, color?}`"),
    responses((status = 201, description = "The tag", body = crate::http::openapi::DataEnvelope))
)]
async fn create_tag(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<NewTag>,
) -> Answer {
    principal.require_write()?;
    Ok(created(&desk(&state, &principal).create_tag(body).await?))
}

fn tag_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::Tag, id, "Tag")
}

#[utoipa::path(
    get,
    path = "/v1/tags/{id}",
    tag = "tags",
    summary = "Get a tag",
    params(("id" = String, Path, description = "The tag (`tag_…`)'s id")),
    responses((status = 200, description = "The tag", body = crate::http::openapi::DataEnvelope))
)]
async fn show_tag(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    Ok(ok(&desk(&state, &principal).tag(tag_key(&id)?).await?))
}

#[utoipa::path(
    method(patch, put),
    path = "/v1/tags/{id}",
    tag = "tags",
    summary = "Change a tag",
    params(("id" = String, Path, description = "The tag (`tag_…`)'s id")),
    request_body(content = Object, description = "The tag's fields to change"),
    responses((status = 200, description = "The tag", body = crate::http::openapi::DataEnvelope))
)]
async fn update_tag(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<TagPatch>,
) -> Answer {
    principal.require_write()?;
    let key = tag_key(&id)?;
    Ok(ok(&desk(&state, &principal).update_tag(key, body).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/tags/{id}",
    tag = "tags",
    summary = "Delete a tag",
    params(("id" = String, Path, description = "The tag (`tag_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_tag(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal).delete_tag(tag_key(&id)?).await?;
    Ok(no_content())
}
