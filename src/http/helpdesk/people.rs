//! `/v1/customers` and `/v1/users` (agents): list with filters, search and cursor; create; get;
//! update; delete. Must never expose another workspace's people (every call is confined by the
//! key's workspace).

use axum::{
    Router,
    extract::{Path, State},
    routing::get,
};
use deskhook_tickets::{
    customer::{CustomerFilter, CustomerPatch, NewCustomer},
    ids::Kind,
    listing::{Sort, SortField},
    user::{NewUser, Role, UserFilter, UserPatch},
};

use super::{
    Answer,
    body::JsonOrForm,
    created, desk, list, no_content, ok,
    params::{list_query, path_id, query_bool, text},
};
use crate::http::{
    ApiError, AppState,
    auth::{Principal, RequireScope as _},
    extract::Query,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/customers", get(list_customers).post(create_customer))
        .route(
            "/customers/{id}",
            get(show_customer)
                .patch(update_customer)
                .put(update_customer)
                .delete(delete_customer),
        )
        .route("/users", get(list_users).post(create_user))
        .route(
            "/users/{id}",
            get(show_user)
                .patch(update_user)
                .put(update_user)
                .delete(delete_user),
        )
}

list_query!(CustomerQuery {
    email,
    phone,
    search
});

#[utoipa::path(
    get,
    path = "/v1/customers",
    tag = "customers",
    summary = "List customers",
    params(CustomerQuery),
    responses((status = 200, description = "A page of customers", body = crate::http::openapi::ListEnvelope))
)]
async fn list_customers(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<CustomerQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::desc(SortField::CreatedAt))?;
    let filter = CustomerFilter {
        email: text(query.email.as_ref()),
        phone: text(query.phone.as_ref()),
        search: text(query.search.as_ref()),
    };
    let customers = desk(&state, &principal)
        .list_customers(&filter, &page)
        .await?;
    Ok(list(&customers, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/customers",
    tag = "customers",
    summary = "Create a customer",
    request_body(content = Object, description = "`{email, name?, phone?, company?, custom_fields?}`"),
    responses((status = 201, description = "The customer", body = crate::http::openapi::DataEnvelope))
)]
async fn create_customer(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<NewCustomer>,
) -> Answer {
    principal.require_write()?;
    Ok(created(
        &desk(&state, &principal).create_customer(body).await?,
    ))
}

fn customer_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::Customer, id, "Customer")
}

#[utoipa::path(
    get,
    path = "/v1/customers/{id}",
    tag = "customers",
    summary = "Get a customer",
    params(("id" = String, Path, description = "The customer (`cus_…`)'s id")),
    responses((status = 200, description = "The customer", body = crate::http::openapi::DataEnvelope))
)]
async fn show_customer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    Ok(ok(&desk(&state, &principal)
        .customer(customer_key(&id)?)
        .await?))
}

#[utoipa::path(
    method(patch, put),
    path = "/v1/customers/{id}",
    tag = "customers",
    summary = "Change a customer",
    params(("id" = String, Path, description = "The customer (`cus_…`)'s id")),
    request_body(content = Object, description = "The customer's fields to change"),
    responses((status = 200, description = "The customer", body = crate::http::openapi::DataEnvelope))
)]
async fn update_customer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<CustomerPatch>,
) -> Answer {
    principal.require_write()?;
    let key = customer_key(&id)?;
    Ok(ok(&desk(&state, &principal)
        .update_customer(key, body)
        .await?))
}

#[utoipa::path(
    delete,
    path = "/v1/customers/{id}",
    tag = "customers",
    summary = "Delete a customer",
    params(("id" = String, Path, description = "The customer (`cus_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_customer(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal)
        .delete_customer(customer_key(&id)?)
        .await?;
    Ok(no_content())
}

list_query!(UserQuery {
    email,
    role,
    active,
    search
});

#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    summary = "List users",
    params(UserQuery),
    responses((status = 200, description = "A page of users", body = crate::http::openapi::ListEnvelope))
)]
async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<UserQuery>,
) -> Answer {
    principal.require_read()?;
    let page = query.page_request(Sort::desc(SortField::CreatedAt))?;
    let role = match text(query.role.as_ref()) {
        None => None,
        Some(role) => Some(Role::parse(&role).ok_or_else(|| {
            ApiError::bad_request(format!("role must be admin or agent (got `{role}`)"))
        })?),
    };
    let filter = UserFilter {
        email: text(query.email.as_ref()),
        role,
        active: query_bool("active", query.active.as_deref())?,
        search: text(query.search.as_ref()),
    };
    let users = desk(&state, &principal).list_users(&filter, &page).await?;
    Ok(list(&users, page.limit))
}

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    summary = "Create a user",
    request_body(content = Object, description = "`{email, name, role?, active?}`"),
    responses((status = 201, description = "The user", body = crate::http::openapi::DataEnvelope))
)]
async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    JsonOrForm(body): JsonOrForm<NewUser>,
) -> Answer {
    principal.require_write()?;
    Ok(created(&desk(&state, &principal).create_user(body).await?))
}

fn user_key(id: &str) -> Result<i64, ApiError> {
    path_id(Kind::User, id, "User")
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Get a user",
    params(("id" = String, Path, description = "The user (`usr_…`)'s id")),
    responses((status = 200, description = "The user", body = crate::http::openapi::DataEnvelope))
)]
async fn show_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_read()?;
    Ok(ok(&desk(&state, &principal).user(user_key(&id)?).await?))
}

#[utoipa::path(
    method(patch, put),
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Change a user",
    params(("id" = String, Path, description = "The user (`usr_…`)'s id")),
    request_body(content = Object, description = "The user's fields to change"),
    responses((status = 200, description = "The user", body = crate::http::openapi::DataEnvelope))
)]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    JsonOrForm(body): JsonOrForm<UserPatch>,
) -> Answer {
    principal.require_write()?;
    let key = user_key(&id)?;
    Ok(ok(&desk(&state, &principal).update_user(key, body).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    summary = "Delete a user",
    params(("id" = String, Path, description = "The user (`usr_…`)'s id")),
    responses((status = 204, description = "Done; no body"))
)]
async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Answer {
    principal.require_write()?;
    desk(&state, &principal).delete_user(user_key(&id)?).await?;
    Ok(no_content())
}
