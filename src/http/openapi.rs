//! The published description of the API: the OpenAPI 3.1 document at `GET /openapi.json` and a
//! rendered reference at `GET /docs`, both served without a key.
//!
//! The document is generated from the code, so it cannot drift from what is served: every
//! handler carries `#[utoipa::path]` (method, path, parameters, body, success answers), request
//! bodies derive `ToSchema` and query structs `IntoParams`, and [`ApiDoc`] lists the handlers.
//! [`Conventions`] then adds what every `/v1` operation shares (bearer auth, the error envelope
//! and its codes, the rate-limit headers, `Idempotency-Key` on POST), and [`ALIASES`] copies
//! the operations served at a second path. [`served_routes`] reads the routes off the router
//! itself; the tests fail when one of them is missing from the document.
//!
//! `/docs` is one self-contained HTML page rendered on the server from the same document:
//! nothing is fetched from the network. This module must never describe a route the router
//! does not serve, and holds no handler logic.

use std::{fmt::Write as _, sync::LazyLock};

use axum::{
    Router,
    http::header,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::Value;
use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::{
        self, Content, HttpMethod, RefOr, Required,
        header::HeaderBuilder,
        path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem},
        response::ResponseBuilder,
        schema::{Object, ObjectBuilder, Schema, SchemaType, Type},
        security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
    },
};

use super::{AppState, ErrorCode};

/// `{"data": …}`: one resource (or one action's result).
#[derive(Debug, ToSchema)]
pub struct DataEnvelope {
    /// The resource.
    pub data: Value,
}

/// `{"data": [...], "meta": {...}}`: one page of a list.
#[derive(Debug, ToSchema)]
pub struct ListEnvelope {
    /// The page's items.
    pub data: Vec<Value>,
    /// Where the page is.
    #[schema(schema_with = list_meta)]
    pub meta: Value,
}

/// `{"error": {"code", "message", "details"}}`: every error answer.
#[derive(Debug, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    #[schema(schema_with = error_body)]
    pub error: Value,
}

/// A list's `meta`.
fn list_meta() -> Object {
    ObjectBuilder::new()
        .property(
            "limit",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("The page size used (default 25, at most 100)")),
        )
        .required("limit")
        .property(
            "next_cursor",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .description(Some(
                    "Pass back as `cursor` for the next page; `null` on the last page",
                )),
        )
        .required("next_cursor")
        .property(
            "total",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                .description(Some(
                    "The number of matching rows, exact up to 10,000, then `null`",
                )),
        )
        .required("total")
        .build()
}

/// The error object: a code of the closed table, a message, and details.
fn error_body() -> Object {
    let codes: Vec<&str> = ERRORS.iter().map(|(code, _, _)| code.as_str()).collect();
    ObjectBuilder::new()
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes))
                .description(Some("One of the closed table of codes")),
        )
        .required("code")
        .property(
            "message",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("For humans")),
        )
        .required("message")
        .property(
            "details",
            ObjectBuilder::new().description(Some(
                "Structured details; on 422, `fields` maps each invalid field to its reason",
            )),
        )
        .required("details")
        .build()
}

/// The document: every handler, plus the shared conventions.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Deskhook API",
        description = "One REST API over JSON under `/v1`: the helpdesk (tickets, messages, \
customers, users, groups, tags, articles), webhook endpoints and deliveries, event ingest, and \
API keys.\n\nEvery `/v1` request carries `Authorization: Bearer <api key>`; another \
workspace's ids answer 404. A single object is `{\"data\": {...}}`, a list `{\"data\": [...], \
\"meta\": {\"limit\", \"next_cursor\", \"total\"}}`, an error `{\"error\": {\"code\", \
\"message\", \"details\"}}`. Lists take `limit` (1-100) and an opaque `cursor`; filters also in \
the `filter[status]=open` form; sorting with `order_by`/`order_dir` or `sort=-updated_at`. \
Every answer carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`; \
over the limit, 429 with `Retry-After`. A POST with `Idempotency-Key` is answered once per key \
and request for 24 hours."
    ),
    paths(
        super::api_keys::list,
        super::api_keys::create,
        super::api_keys::show,
        super::api_keys::revoke,
        super::api_keys::rotate,
        super::api_keys::workspace,
        super::api_keys::update_workspace,
        super::helpdesk::tickets::list_tickets,
        super::helpdesk::tickets::create_ticket,
        super::helpdesk::tickets::show_ticket,
        super::helpdesk::tickets::update_ticket,
        super::helpdesk::tickets::delete_ticket,
        super::helpdesk::tickets::set_status,
        super::helpdesk::tickets::set_assignee,
        super::helpdesk::tickets::set_tags,
        super::helpdesk::tickets::show_tags,
        super::helpdesk::tickets::archive,
        super::helpdesk::tickets::restore,
        super::helpdesk::tickets::list_activities,
        super::helpdesk::compose::compose,
        super::helpdesk::compose::reply,
        super::helpdesk::messages::list_ticket_messages,
        super::helpdesk::messages::add_ticket_message,
        super::helpdesk::messages::show_ticket_message,
        super::helpdesk::messages::delete_ticket_message,
        super::helpdesk::messages::list_conversations,
        super::helpdesk::messages::add_conversation,
        super::helpdesk::messages::show_conversation,
        super::helpdesk::people::list_customers,
        super::helpdesk::people::create_customer,
        super::helpdesk::people::show_customer,
        super::helpdesk::people::update_customer,
        super::helpdesk::people::delete_customer,
        super::helpdesk::people::list_users,
        super::helpdesk::people::create_user,
        super::helpdesk::people::show_user,
        super::helpdesk::people::update_user,
        super::helpdesk::people::delete_user,
        super::helpdesk::taxonomy::list_groups,
        super::helpdesk::taxonomy::create_group,
        super::helpdesk::taxonomy::show_group,
        super::helpdesk::taxonomy::update_group,
        super::helpdesk::taxonomy::delete_group,
        super::helpdesk::taxonomy::list_tags,
        super::helpdesk::taxonomy::create_tag,
        super::helpdesk::taxonomy::show_tag,
        super::helpdesk::taxonomy::update_tag,
        super::helpdesk::taxonomy::delete_tag,
        super::helpdesk::articles::list_articles,
        super::helpdesk::articles::create_article,
        super::helpdesk::articles::show_article,
        super::helpdesk::articles::update_article,
        super::helpdesk::articles::delete_article,
        super::helpdesk::sla::list_policies,
        super::helpdesk::sla::create_policy,
        super::helpdesk::sla::show_policy,
        super::helpdesk::sla::update_policy,
        super::helpdesk::sla::delete_policy,
        super::helpdesk::sla::reapply_policy,
        super::helpdesk::sla::list_calendars,
        super::helpdesk::sla::create_calendar,
        super::helpdesk::sla::show_calendar,
        super::helpdesk::sla::update_calendar,
        super::helpdesk::sla::delete_calendar,
        super::webhooks::list_endpoints,
        super::webhooks::create_endpoint,
        super::webhooks::show_endpoint,
        super::webhooks::update_endpoint,
        super::webhooks::delete_endpoint,
        super::webhooks::enable_endpoint,
        super::webhooks::reveal_secret,
        super::webhooks::rotate_secret,
        super::webhooks::send_test,
        super::webhooks::recover,
        super::webhooks::list_deliveries,
        super::webhooks::show_delivery,
        super::webhooks::retry_delivery,
        super::webhooks::ingest_events,
        super::webhooks::list_events,
        super::webhooks::show_event,
    ),
    components(schemas(ErrorEnvelope)),
    modifiers(&Conventions),
)]
pub struct ApiDoc;

/// Operations served at a second path (seed spellings): (alias, the documented path).
pub const ALIASES: &[(&str, &str)] = &[
    ("/v1/tickets/{id}/replies", "/v1/tickets/{id}/messages"),
    (
        "/v1/tickets/{id}/replies/{message_id}",
        "/v1/tickets/{id}/messages/{message_id}",
    ),
];

/// The error answers every operation may give, and when.
const ERRORS: &[(ErrorCode, &str, When)] = &[
    (
        ErrorCode::BadRequest,
        "Malformed JSON, an unknown query parameter or value, a bad cursor or limit, a malformed `Idempotency-Key`",
        When::Input,
    ),
    (
        ErrorCode::Unauthorized,
        "No key, or an unknown, revoked or expired one",
        When::Always,
    ),
    (
        ErrorCode::Forbidden,
        "The key lacks the scope (`details.required_scope`)",
        When::Always,
    ),
    (
        ErrorCode::NotFound,
        "No such resource in this key's workspace",
        When::PathId,
    ),
    (
        ErrorCode::MethodNotAllowed,
        "The path exists, the method does not",
        When::Never,
    ),
    (
        ErrorCode::Conflict,
        "The state forbids it, or the Idempotency-Key was used with another request",
        When::Post,
    ),
    (
        ErrorCode::PayloadTooLarge,
        "The body is over the cap (1 MiB; ingest 5 MiB)",
        When::Body,
    ),
    (
        ErrorCode::UnsupportedMediaType,
        "The body is not JSON (or, where accepted, a form)",
        When::Body,
    ),
    (
        ErrorCode::ValidationFailed,
        "Well-formed but invalid: `details.fields` maps each field to its reason",
        When::Body,
    ),
    (
        ErrorCode::TooManyRequests,
        "Over the key's rate limit; `Retry-After` says when to come back",
        When::Always,
    ),
    (
        ErrorCode::InternalServerError,
        "A bug (never bad input); the cause was logged",
        When::Always,
    ),
    (
        ErrorCode::ServiceUnavailable,
        "The database is unavailable; `Retry-After` says when to try again",
        When::Always,
    ),
];

/// Which operations can give an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Always,
    /// Operations with a body or query parameters.
    Input,
    /// Operations with an id in the path.
    PathId,
    /// Operations with a request body.
    Body,
    /// POST operations.
    Post,
    /// No operation lists it (the route exists, the method does not); its code is listed.
    Never,
}

/// Adds the conventions every `/v1` operation shares.
#[derive(Debug)]
pub struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        add_shared_components(components);
        for (alias, documented) in ALIASES {
            if let Some(item) = doc.paths.paths.get(*documented).cloned() {
                let mut item = item;
                for (_, operation) in operations_mut(&mut item) {
                    if let Some(id) = &mut operation.operation_id {
                        id.push_str("_alias");
                    }
                }
                doc.paths.paths.insert((*alias).to_owned(), item);
            }
        }
        for item in doc.paths.paths.values_mut() {
            for (method, operation) in operations_mut(item) {
                add_conventions(method == HttpMethod::Post, operation);
            }
        }
    }
}

/// The operations of a path item, with their methods.
fn operations_mut(item: &mut PathItem) -> Vec<(HttpMethod, &mut Operation)> {
    [
        (HttpMethod::Get, item.get.as_mut()),
        (HttpMethod::Post, item.post.as_mut()),
        (HttpMethod::Put, item.put.as_mut()),
        (HttpMethod::Patch, item.patch.as_mut()),
        (HttpMethod::Delete, item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|operation| (method, operation)))
    .collect()
}

/// The answer headers on every `/v1` answer.
const RATE_LIMIT_HEADERS: [(&str, &str); 3] = [
    (
        "X-RateLimit-Limit",
        "Requests per minute allowed for this key",
    ),
    (
        "X-RateLimit-Remaining",
        "Requests left in the current burst",
    ),
    (
        "X-RateLimit-Reset",
        "Unix seconds when the bucket is full again",
    ),
];

/// The header on a replayed idempotent answer.
const REPLAYED: &str = "Idempotency-Replayed";

fn header_ref(name: &str) -> RefOr<openapi::header::Header> {
    RefOr::Ref(openapi::Ref::new(format!("#/components/headers/{name}")))
}

/// The shared headers, and one shared answer per error code (named by the code).
fn add_shared_components(components: &mut openapi::Components) {
    for (name, description) in RATE_LIMIT_HEADERS {
        components.headers.insert(
            name.to_owned(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(integer()))
                    .description(Some(description))
                    .build(),
            ),
        );
    }
    components.headers.insert(
        REPLAYED.to_owned(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some("`true` on an answer replayed for an Idempotency-Key"))
                .build(),
        ),
    );
    for (code, description, _) in ERRORS {
        let mut response = ResponseBuilder::new()
            .description(format!("`{}`: {description}", code.as_str()))
            .content(
                "application/json",
                Content::new(Some(RefOr::Ref(openapi::Ref::from_schema_name(
                    "ErrorEnvelope",
                )))),
            );
        if matches!(
            code,
            ErrorCode::TooManyRequests | ErrorCode::ServiceUnavailable
        ) {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(integer()))
                    .description(Some("Seconds to wait"))
                    .build(),
            );
        }
        let mut response = response.build();
        for (name, _) in RATE_LIMIT_HEADERS {
            response.headers.insert(name.to_owned(), header_ref(name));
        }
        components
            .responses
            .insert(code.as_str().to_owned(), RefOr::T(response));
    }
}

fn add_conventions(is_post: bool, operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    let has_path_id = parameters.iter().any(|p| {
        matches!(
            p,
            RefOr::T(Parameter {
                parameter_in: ParameterIn::Path,
                ..
            })
        )
    });
    let has_query = parameters.iter().any(|p| {
        matches!(
            p,
            RefOr::T(Parameter {
                parameter_in: ParameterIn::Query,
                ..
            })
        )
    });
    if is_post {
        parameters.push(RefOr::T(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "1-255 printable ASCII characters. The same key and request within 24 h \
                     get the first answer (with `Idempotency-Replayed: true`); the same key \
                     with another request is a 409. Scoped per API key.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[ -~]*[!-~][ -~]*$")),
                ))
                .build(),
        ));
    }
    for (status, response) in &mut operation.responses.responses {
        let RefOr::T(response) = response else {
            continue;
        };
        for (name, _) in RATE_LIMIT_HEADERS {
            response.headers.insert(name.to_owned(), header_ref(name));
        }
        if is_post && status.starts_with('2') {
            response
                .headers
                .insert(REPLAYED.to_owned(), header_ref(REPLAYED));
        }
    }
    let has_body = operation.request_body.is_some();
    for (code, _, when) in ERRORS {
        let applies = match when {
            When::Always => true,
            // A POST's `Idempotency-Key` header is input too.
            When::Input => has_body || has_query || is_post,
            When::PathId => has_path_id,
            When::Body => has_body,
            When::Post => is_post,
            When::Never => false,
        };
        let status = code.status().as_u16().to_string();
        if applies && !operation.responses.responses.contains_key(&status) {
            operation.responses.responses.insert(
                status,
                RefOr::Ref(openapi::Ref::new(format!(
                    "#/components/responses/{}",
                    code.as_str()
                ))),
            );
        }
    }
}

fn integer() -> Schema {
    ObjectBuilder::new().schema_type(Type::Integer).into()
}

/// The document as served.
pub fn document() -> openapi::OpenApi {
    ApiDoc::openapi()
}

static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
});

static DOCS_HTML: LazyLock<String> = LazyLock::new(|| {
    let value: Value = serde_json::from_str(&DOCUMENT_JSON).expect("the OpenAPI document is JSON");
    render_html(&value)
});

/// `GET /openapi.json` and `GET /docs` (no key).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
        .into_response()
}

async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML.as_str())
}

/// Every `(METHOD, path)` the `/v1` router serves, read off the router itself (its `Debug`
/// form lists each route's path and allowed methods). `HEAD` is left out: axum answers it for
/// every `GET`.
pub fn served_routes() -> Vec<(String, String)> {
    routes_in_debug(&format!("{:?}", super::v1_routes()), "/v1")
}

/// Every `(METHOD, path)` a document describes.
pub fn documented_routes(doc: &openapi::OpenApi) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, operation) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
            ("OPTIONS", &item.options),
            ("TRACE", &item.trace),
        ] {
            if operation.is_some() {
                routes.push((method.to_owned(), path.clone()));
            }
        }
    }
    routes.sort();
    routes
}

/// Parses `RouteId(n): MethodRouter(... allow_header: Bytes(b"GET,HEAD,POST") ...)` and
/// `RouteId(n): "/path"` out of a router's `Debug` form (its main path router only).
fn routes_in_debug(debug: &str, prefix: &str) -> Vec<(String, String)> {
    let main = debug.split("fallback_router:").next().unwrap_or_default();
    let (endpoints, paths) = main.split_once("node: Node").unwrap_or((main, ""));
    let mut methods = std::collections::HashMap::new();
    for chunk in endpoints.split("RouteId(").skip(1) {
        let Some((id, rest)) = chunk.split_once(')') else {
            continue;
        };
        let Some(allowed) = rest
            .split_once("allow_header: Bytes(b\"")
            .and_then(|(_, tail)| tail.split_once('"'))
            .map(|(allowed, _)| allowed)
        else {
            continue;
        };
        methods.insert(id.to_owned(), allowed.to_owned());
    }
    let mut routes = Vec::new();
    for chunk in paths.split("RouteId(").skip(1) {
        let Some((id, rest)) = chunk.split_once("): \"") else {
            continue;
        };
        let Some((path, _)) = rest.split_once('"') else {
            continue;
        };
        for method in methods
            .get(id)
            .map(String::as_str)
            .unwrap_or_default()
            .split(',')
        {
            if !method.is_empty() && method != "HEAD" {
                routes.push((method.to_owned(), format!("{prefix}{path}")));
            }
        }
    }
    routes.sort();
    routes
}

/// The served routes the document does not describe.
pub fn undocumented_routes(doc: &openapi::OpenApi) -> Vec<(String, String)> {
    let documented = documented_routes(doc);
    served_routes()
        .into_iter()
        .filter(|route| !documented.contains(route))
        .collect()
}

// ----- The rendered reference -----------------------------------------------------------

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text with `code spans` rendered as `<code>`, escaped.
fn prose(text: &str) -> String {
    let mut out = String::new();
    for (index, part) in text.split('`').enumerate() {
        if index % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part).replace("\n\n", "</p><p>"));
        }
    }
    out
}

fn anchor(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// A schema in one line: a link for a `$ref`, else its type (with items, enum, nullability).
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{}\">{}</a>", anchor(name), esc(name));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let sep = if key == "allOf" { " &amp; " } else { " | " };
            return options.iter().map(type_of).collect::<Vec<_>>().join(sep);
        }
    }
    let types: Vec<String> = match schema.get("type") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(Value::as_str)
            .map(ToOwned::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let mut shown: Vec<String> = types
        .iter()
        .map(|kind| match kind.as_str() {
            "array" => format!(
                "array of {}",
                schema
                    .get("items")
                    .map_or_else(|| "any".to_owned(), type_of)
            ),
            "string" => match schema.get("format").and_then(Value::as_str) {
                Some(format) => format!("string ({})", esc(format)),
                None => "string".to_owned(),
            },
            other => esc(other),
        })
        .collect();
    if shown.is_empty() {
        shown.push(if schema.get("properties").is_some() {
            "object".to_owned()
        } else {
            "any".to_owned()
        });
    }
    let mut text = shown.join(" | ");
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .collect();
        let _ = write!(text, ": one of {}", values.join(", "));
    }
    text
}

/// A table of an object schema's properties.
fn properties_table(schema: &Value) -> String {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return format!("<p>{}</p>", type_of(schema));
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = String::from(
        "<table><tr><th>Field</th><th>Type</th><th>Required</th><th>Description</th></tr>",
    );
    for (name, property) in properties {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            type_of(property),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            prose(
                property
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
        );
    }
    out.push_str("</table>");
    out
}

fn text_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Renders the whole document as one HTML page.
fn render_html(doc: &Value) -> String {
    let title = doc["info"]["title"].as_str().unwrap_or("API");
    let mut toc = String::new();
    let mut body = String::new();
    let mut by_tag: std::collections::BTreeMap<String, Vec<(String, String, &Value)>> =
        std::collections::BTreeMap::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                if let Some(operation) = item.get(method) {
                    let tag = operation["tags"][0].as_str().unwrap_or("other").to_owned();
                    by_tag.entry(tag).or_default().push((
                        method.to_uppercase(),
                        path.clone(),
                        operation,
                    ));
                }
            }
        }
    }
    for (tag, operations) in &by_tag {
        let _ = write!(
            toc,
            "<li><a href=\"#tag-{}\">{}</a><ul>",
            anchor(tag),
            esc(tag)
        );
        let _ = write!(body, "<h2 id=\"tag-{}\">{}</h2>", anchor(tag), esc(tag));
        for (method, path, operation) in operations {
            let id = anchor(&format!("{method} {path}"));
            let _ = write!(
                toc,
                "<li><a href=\"#{id}\"><span class=\"m {m}\">{method}</span> {}</a></li>",
                esc(path),
                m = method.to_lowercase(),
            );
            let _ = write!(
                body,
                "<section id=\"{id}\"><h3><span class=\"m {m}\">{method}</span> <code>{}</code></h3><p>{}</p>",
                esc(path),
                prose(text_of(operation, "summary")),
                m = method.to_lowercase(),
            );
            render_parameters(&mut body, operation);
            if let Some(request) = operation.get("requestBody") {
                let _ = write!(
                    body,
                    "<h4>Body</h4><p>{}</p>",
                    prose(text_of(request, "description"))
                );
                if let Some(schema) = request["content"]["application/json"].get("schema") {
                    body.push_str(&schema_block(schema, doc));
                }
            }
            render_responses(&mut body, operation, doc);
            body.push_str("</section>");
        }
        toc.push_str("</ul></li>");
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        body.push_str("<h2 id=\"schemas\">Schemas</h2>");
        toc.push_str("<li><a href=\"#schemas\">Schemas</a></li>");
        for (name, schema) in schemas {
            let _ = write!(
                body,
                "<section id=\"schema-{}\"><h3>{}</h3><p>{}</p>{}</section>",
                anchor(name),
                esc(name),
                prose(text_of(schema, "description")),
                properties_table(schema)
            );
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} reference</title><style>{STYLE}</style></head><body>\
<nav><h1>{title}</h1><p><a href=\"/openapi.json\">openapi.json</a> (OpenAPI {version})</p><ul>{toc}</ul></nav>\
<main><h1>{title} {api_version}</h1><p>{description}</p>{body}</main></body></html>",
        title = esc(title),
        version = esc(doc["openapi"].as_str().unwrap_or_default()),
        api_version = esc(doc["info"]["version"].as_str().unwrap_or_default()),
        description = prose(doc["info"]["description"].as_str().unwrap_or_default()),
    )
}

/// A request body's schema: its properties, following one `$ref` into the components.
fn schema_block(schema: &Value, doc: &Value) -> String {
    let resolved = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|reference| reference.rsplit('/').next())
        .and_then(|name| doc["components"]["schemas"].get(name));
    match resolved {
        Some(target) => format!("<p>{}</p>{}", type_of(schema), properties_table(target)),
        None => properties_table(schema),
    }
}

fn render_parameters(body: &mut String, operation: &Value) {
    let Some(parameters) = operation["parameters"].as_array().filter(|p| !p.is_empty()) else {
        return;
    };
    body.push_str(
        "<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Type</th><th>Required</th><th>Description</th></tr>",
    );
    for parameter in parameters {
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(text_of(parameter, "name")),
            esc(text_of(parameter, "in")),
            parameter.get("schema").map_or_else(String::new, type_of),
            if parameter["required"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            prose(text_of(parameter, "description")),
        );
    }
    body.push_str("</table>");
}

fn render_responses(body: &mut String, operation: &Value, doc: &Value) {
    let Some(responses) = operation["responses"].as_object() else {
        return;
    };
    body.push_str(
        "<h4>Answers</h4><table><tr><th>Status</th><th>Body</th><th>Description</th></tr>",
    );
    for (status, response) in responses {
        let response = response
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|reference| reference.rsplit('/').next())
            .and_then(|name| doc["components"]["responses"].get(name))
            .unwrap_or(response);
        let schema = response["content"]["application/json"]
            .get("schema")
            .map_or_else(String::new, type_of);
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(status),
            schema,
            prose(text_of(response, "description")),
        );
    }
    body.push_str("</table>");
}

const STYLE: &str = "body{margin:0;font:15px/1.5 system-ui,sans-serif;color:#1d2330;display:flex}\
nav{width:300px;height:100vh;overflow:auto;position:sticky;top:0;background:#f4f6f9;padding:1em;\
box-sizing:border-box;font-size:13px}nav ul{list-style:none;padding-left:.8em;margin:.2em 0}\
nav a{color:#1d2330;text-decoration:none}main{flex:1;padding:1em 2em;max-width:980px}\
section{border-top:1px solid #dde2ea;padding:.4em 0 1em}h2{margin-top:2em;text-transform:capitalize}\
table{border-collapse:collapse;margin:.4em 0;width:100%}td,th{border:1px solid #dde2ea;\
padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f4f6f9}\
code{background:#f0f2f5;padding:0 .25em;border-radius:3px}.m{display:inline-block;min-width:4.2em;\
font:bold 12px monospace;color:#fff;border-radius:3px;padding:0 .3em;text-align:center}\
.get{background:#2f7d32}.post{background:#1f5fbf}.put{background:#a15c00}.patch{background:#7a4bbd}\
.delete{background:#b3261e}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_v1_route_is_in_the_document() {
        let served = served_routes();
        assert!(
            served.len() > 60,
            "the router's routes were read: {served:?}"
        );
        assert!(served.contains(&("POST".to_owned(), "/v1/tickets".to_owned())));
        let missing = undocumented_routes(&document());
        assert!(missing.is_empty(), "undocumented routes: {missing:?}");
    }

    #[test]
    fn the_document_describes_only_served_routes() {
        let served = served_routes();
        let extra: Vec<_> = documented_routes(&document())
            .into_iter()
            .filter(|route| !served.contains(route))
            .collect();
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_conventions() {
        let value: Value = serde_json::from_str(&DOCUMENT_JSON).expect("json");
        assert!(
            value["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1"))
        );
        let create = &value["paths"]["/v1/tickets"]["post"];
        assert_eq!(create["security"][0]["bearer"], serde_json::json!([]));
        assert!(create["responses"]["201"].is_object());
        assert!(create["responses"]["409"].is_object());
        assert!(create["responses"]["422"].is_object());
        assert_eq!(
            create["responses"]["429"]["$ref"],
            "#/components/responses/TOO_MANY_REQUESTS"
        );
        let too_many = &value["components"]["responses"]["TOO_MANY_REQUESTS"];
        assert!(too_many["headers"]["Retry-After"].is_object());
        assert!(create["responses"]["201"]["headers"]["X-RateLimit-Limit"].is_object());
        assert!(create["responses"]["201"]["headers"]["Idempotency-Replayed"].is_object());
        assert!(
            create["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .any(|p| p["name"] == "Idempotency-Key")
        );
        assert!(
            value["components"]["schemas"]["CreateTicketBody"]["properties"]["subject"].is_object()
        );
        assert!(value["paths"]["/v1/tickets/{id}/replies"]["post"].is_object());
    }

    #[test]
    fn the_reference_page_is_self_contained_html() {
        let html = DOCS_HTML.as_str();
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("/v1/tickets/{id}/status"));
        assert!(html.contains("id=\"schema-CreateTicketBody\""));
        for remote in ["<script", "src=\"http", "href=\"http", "@import"] {
            assert!(!html.contains(remote), "fetches {remote}");
        }
    }

    #[test]
    fn router_debug_forms_are_read() {
        let debug = "Router { path_router: PathRouter { routes: {RouteId(2): MethodRouter(MethodRouter { get: None, allow_header: Bytes(b\"POST\") }), RouteId(1): MethodRouter(MethodRouter { get: BoxedHandler, allow_header: Bytes(b\"GET,HEAD,DELETE\") })}, node: Node { paths: {RouteId(1): \"/a/{id}\", RouteId(2): \"/a\"} } }, fallback_router: PathRouter { routes: {}, node: Node { paths: {RouteId(1): \"/\"} } } }";
        assert_eq!(
            routes_in_debug(debug, "/v1"),
            vec![
                ("DELETE".to_owned(), "/v1/a/{id}".to_owned()),
                ("GET".to_owned(), "/v1/a/{id}".to_owned()),
                ("POST".to_owned(), "/v1/a".to_owned()),
            ]
        );
    }
}
