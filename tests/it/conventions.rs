//! The REST API's conventions across every resource (api.md): idempotency keys on POST, the
//! published OpenAPI document and its rendered reference, rate-limit headers and 429s, and the
//! 401/403/404 answers of keys and scopes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Api, TestApp};

/// Sends `request` and returns the status, the headers and the JSON body.
async fn send(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, headers, body)
}

/// `POST /v1{path}` with an `Idempotency-Key`.
async fn post_with_key(
    api: &Api,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    send(
        api.request(Method::POST, path)
            .header("idempotency-key", key)
            .json(body),
    )
    .await
}

fn replayed(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("idempotency-replayed")
        .is_some_and(|v| v == "true")
}

async fn ticket_total(api: &Api) -> i64 {
    let (status, list) = api.get("/tickets").await;
    assert_eq!(status, 200, "{list}");
    list["meta"]["total"].as_i64().expect("total")
}

#[tokio::test]
async fn an_idempotent_post_is_answered_once_and_replayed() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let body = json!({"subject": "Printer on fire", "customer_email": "ann@example.com"});

    let (status, headers, first) = post_with_key(&api, "/tickets", "create-1", &body).await;
    assert_eq!(status, 201, "{first}");
    assert!(!replayed(&headers));

    let (status, headers, again) = post_with_key(&api, "/tickets", "create-1", &body).await;
    assert_eq!(status, 201, "{again}");
    assert!(replayed(&headers), "{headers:?}");
    assert_eq!(again, first, "the very same answer");
    assert_eq!(
        headers
            .get("content-type")
            .map(|v| v.to_str().expect("ascii")),
        Some("application/json")
    );
    assert_eq!(ticket_total(&api).await, 1, "one ticket, not two");
    let events = api.events(&app.pool).await;
    assert_eq!(
        events.iter().filter(|(t, _)| t == "ticket.created").count(),
        1
    );

    // The same key with another body: 409, and nothing happens.
    let other = json!({"subject": "Printer fine", "customer_email": "ann@example.com"});
    let (status, _, conflict) = post_with_key(&api, "/tickets", "create-1", &other).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "CONFLICT");
    // ... and on another route.
    let (status, _, conflict) = post_with_key(
        &api,
        "/customers",
        "create-1",
        &json!({"email": "x@example.com"}),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(ticket_total(&api).await, 1);

    // Without a key, a POST runs every time.
    api.post("/tickets", body.clone()).await;
    api.post("/tickets", body.clone()).await;
    assert_eq!(ticket_total(&api).await, 3);
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_api_key() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let other_key = api
        .other_key(&app.pool, &[deskhook::auth::Scope::Write], None)
        .await;
    let body = json!({"subject": "Hello", "customer_email": "bob@example.com"});
    let (status, _, first) = post_with_key(&api, "/tickets", "shared", &body).await;
    assert_eq!(status, 201);
    let (status, headers, second) = post_with_key(&other_key, "/tickets", "shared", &body).await;
    assert_eq!(status, 201, "{second}");
    assert!(
        !replayed(&headers),
        "another key's answer is never replayed"
    );
    assert_ne!(first["data"]["id"], second["data"]["id"]);

    // Another workspace's key with the same key name runs too (and sees its own data only).
    let stranger = app.api("globex").await;
    let (status, headers, _) = post_with_key(&stranger, "/tickets", "shared", &body).await;
    assert_eq!(status, 201);
    assert!(!replayed(&headers));
    assert_eq!(ticket_total(&api).await, 2);
    assert_eq!(ticket_total(&stranger).await, 1);
}

#[tokio::test]
async fn a_4xx_is_stored_and_replayed_but_a_5xx_is_not() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;

    // A 422 is an answer like any other: replayed, even if the data would now be valid.
    let invalid = json!({"subject": "", "customer_email": "c@example.com"});
    let (status, headers, first) = post_with_key(&api, "/tickets", "bad-1", &invalid).await;
    assert_eq!(status, 422, "{first}");
    assert!(!replayed(&headers));
    let (status, headers, again) = post_with_key(&api, "/tickets", "bad-1", &invalid).await;
    assert_eq!(status, 422);
    assert!(replayed(&headers));
    assert_eq!(again, first);

    // A 5xx is not stored: the same request with the same key runs again once the fault is
    // gone. The fault: the table the handler writes to is briefly missing.
    let tag = json!({"name": "vip"});
    sqlx::query("ALTER TABLE tag RENAME TO tag_away")
        .execute(&app.pool)
        .await
        .expect("rename");
    let (status, headers, failed) = post_with_key(&api, "/tags", "tag-1", &tag).await;
    sqlx::query("ALTER TABLE tag_away RENAME TO tag")
        .execute(&app.pool)
        .await
        .expect("rename back");
    assert_eq!(status, 500, "{failed}");
    assert!(!replayed(&headers));
    let (status, headers, created) = post_with_key(&api, "/tags", "tag-1", &tag).await;
    assert_eq!(status, 201, "{created}");
    assert!(!replayed(&headers), "the 500 was not stored");
    let (status, headers, replay) = post_with_key(&api, "/tags", "tag-1", &tag).await;
    assert_eq!(status, 201);
    assert!(replayed(&headers));
    assert_eq!(replay, created);
}

#[tokio::test]
async fn concurrent_repeats_never_run_twice() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let body = json!({"subject": "Race", "customer_email": "race@example.com"});
    let requests = (0..8).map(|_| post_with_key(&api, "/tickets", "race-1", &body));
    let answers = futures::future::join_all(requests).await;
    let mut fresh = 0;
    for (status, headers, answer) in &answers {
        match status {
            201 if replayed(headers) => {}
            201 => fresh += 1,
            409 => assert_eq!(answer["error"]["code"], "CONFLICT"),
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one request ran");
    assert_eq!(ticket_total(&api).await, 1);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_400_and_other_methods_ignore_it() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let long = "k".repeat(256);
    let (status, _, body) = post_with_key(
        &api,
        "/tickets",
        &long,
        &json!({"subject": "x", "customer_email": "x@example.com"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "BAD_REQUEST");

    // GET is idempotent already: the header changes nothing.
    let (status, headers, _) = send(
        api.request(Method::GET, "/tickets")
            .header("idempotency-key", "g"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!replayed(&headers));
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_is_openapi_3_1() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "no key needed");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    let text = response.text().await.expect("body");
    let raw: Value = serde_json::from_str(&text).expect("JSON");
    assert!(
        raw["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        raw["openapi"]
    );
    // An independent OpenAPI 3.1 parser reads it.
    let spec = oas3::from_json(&text).expect("a well-formed OpenAPI 3.1 document");
    let version = spec.validate_version().expect("a supported version");
    assert_eq!((version.major, version.minor), (3, 1));
    let served = deskhook::http::openapi::served_routes();
    let served_paths: std::collections::BTreeSet<&str> =
        served.iter().map(|(_, path)| path.as_str()).collect();
    assert_eq!(
        spec.paths.as_ref().map_or(0, |paths| paths.len()),
        served_paths.len()
    );
    let mut documented = Vec::new();
    for (path, item) in raw["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "patch", "delete", "options", "trace"] {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let missing: Vec<_> = served.iter().filter(|r| !documented.contains(r)).collect();
    assert!(missing.is_empty(), "served but undocumented: {missing:?}");
    let extra: Vec<_> = documented.iter().filter(|r| !served.contains(r)).collect();
    assert!(extra.is_empty(), "documented but not served: {extra:?}");

    // Every reference points at a schema the document defines.
    let schemas = raw["components"]["schemas"].as_object().expect("schemas");
    for reference in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("name");
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
}

#[tokio::test]
async fn the_reference_is_html_without_a_key_and_fetches_nothing() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .get(app.url("/docs"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let html = response.text().await.expect("body");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<code>/v1/tickets</code>"));
    assert!(html.contains("Idempotency-Key"));
    for remote in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(remote), "the page would fetch {remote}");
    }
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn every_v1_answer_carries_rate_limit_headers_and_429_has_retry_after() {
    let app =
        TestApp::spawn_with(|c| c.rate_limit = deskhook::config::RateLimit::PerMinute(3)).await;
    let api = app.api("acme").await;
    let other = api
        .other_key(&app.pool, &[deskhook::auth::Scope::Read], None)
        .await;

    // A burst of 1.67 × 3 = 5 requests, whatever their answers (200, 404, 422, 403).
    let answers = [
        send(api.request(Method::GET, "/tickets")).await,
        send(api.request(Method::GET, "/tickets/tkt_0000000000000")).await,
        send(api.request(Method::POST, "/tickets").json(&json!({}))).await,
        send(api.request(Method::GET, "/workspace")).await,
        send(api.request(Method::GET, "/customers")).await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [200, 404, 422, 200, 200]);
    let mut remaining = Vec::new();
    for (_, headers, _) in &answers {
        assert_eq!(header(headers, "x-ratelimit-limit"), Some("3"));
        let reset: u64 = header(headers, "x-ratelimit-reset")
            .expect("reset")
            .parse()
            .expect("unix seconds");
        assert!(reset > 1_700_000_000);
        remaining.push(
            header(headers, "x-ratelimit-remaining")
                .expect("remaining")
                .parse::<u32>()
                .expect("number"),
        );
    }
    // Never more than the limit, even while the burst above it is being spent (review).
    assert_eq!(remaining, [3, 3, 2, 1, 0]);

    let (status, headers, body) = send(api.request(Method::GET, "/tickets")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "TOO_MANY_REQUESTS");
    let retry: u64 = header(&headers, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&headers, "x-ratelimit-limit"), Some("3"));
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("0"));

    // The limit is per key: another key of the same workspace is not affected.
    let (status, headers, _) = send(other.request(Method::GET, "/tickets")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("3"));
}

/// Asserts an error answer's status and envelope code.
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(answer.1["error"]["message"].is_string());
    assert!(answer.1["error"]["details"].is_object());
}

#[tokio::test]
async fn keys_are_checked_with_401_and_the_envelope() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let url = app.url("/v1/tickets");
    let no_key = Api::send(app.client.get(&url)).await;
    assert_error(&no_key, 401, "UNAUTHORIZED");
    let basic = Api::send(app.client.get(&url).header("authorization", "Basic YTpi")).await;
    assert_error(&basic, 401, "UNAUTHORIZED");
    let unknown = Api::send(
        app.client
            .get(&url)
            .bearer_auth("dhk_notarealkeyatall00000000000000000"),
    )
    .await;
    assert_error(&unknown, 401, "UNAUTHORIZED");

    // A revoked key stops working at once.
    let (status, created) = api
        .post("/api-keys", json!({"scopes": ["read"], "name": "temp"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let temp_key = created["data"]["api_key"].as_str().expect("key").to_owned();
    let temp_id = created["data"]["id"].as_str().expect("id").to_owned();
    let works = Api::send(app.client.get(&url).bearer_auth(&temp_key)).await;
    assert_eq!(works.0, 200);
    assert_eq!(api.delete(&format!("/api-keys/{temp_id}")).await.0, 204);
    let revoked = Api::send(app.client.get(&url).bearer_auth(&temp_key)).await;
    assert_error(&revoked, 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn scopes_are_enforced_with_403() {
    use deskhook::auth::Scope;
    let app = TestApp::spawn().await;
    let admin = app.api("acme").await;
    let ticket = admin.ticket("Scoped", "scope@example.com").await;
    let t = ticket["id"].as_str().expect("id");

    // read: GET only.
    let read = admin.other_key(&app.pool, &[Scope::Read], None).await;
    assert_eq!(read.get("/tickets").await.0, 200);
    assert_eq!(read.get(&format!("/tickets/{t}")).await.0, 200);
    assert_error(
        &read
            .post(
                "/tickets",
                json!({"subject": "x", "customer_email": "x@example.com"}),
            )
            .await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &read
            .patch(&format!("/tickets/{t}"), json!({"subject": "y"}))
            .await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &read.delete(&format!("/tickets/{t}")).await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &read
            .post("/events", json!({"type": "ticket.created", "data": {}}))
            .await,
        403,
        "FORBIDDEN",
    );

    // ingest: only POST /v1/events.
    let ingest = admin.other_key(&app.pool, &[Scope::Ingest], None).await;
    let (status, accepted) = ingest
        .post(
            "/events",
            json!({"id": "ext-1", "type": "ticket.created", "data": {"id": "t1"}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["data"][0]["status"], "accepted");
    for (method, path) in [
        (Method::GET, "/tickets".to_owned()),
        (Method::GET, format!("/tickets/{t}")),
        (Method::GET, "/events".to_owned()),
        (Method::GET, "/webhooks".to_owned()),
        (Method::GET, "/deliveries".to_owned()),
    ] {
        let answer = Api::send(ingest.request(method.clone(), &path)).await;
        assert_error(&answer, 403, "FORBIDDEN");
    }
    assert_error(
        &ingest
            .post(
                "/tickets",
                json!({"subject": "x", "customer_email": "x@example.com"}),
            )
            .await,
        403,
        "FORBIDDEN",
    );

    // write: everything but API keys (admin).
    let write = admin.other_key(&app.pool, &[Scope::Write], None).await;
    assert_eq!(
        write
            .post(
                "/tickets",
                json!({"subject": "w", "customer_email": "w@example.com"})
            )
            .await
            .0,
        201
    );
    let denied = write.get("/api-keys").await;
    assert_error(&denied, 403, "FORBIDDEN");
    assert_eq!(denied.1["error"]["details"]["required_scope"], "admin");
    assert_error(
        &write.post("/api-keys", json!({"scopes": ["admin"]})).await,
        403,
        "FORBIDDEN",
    );
}

#[tokio::test]
async fn another_workspaces_ids_are_404() {
    let app = TestApp::spawn().await;
    let mine = app.api("acme").await;
    let theirs = app.api("globex").await;
    let ticket = theirs.ticket("Theirs", "them@example.com").await;
    let t = ticket["id"].as_str().expect("id");
    let number = ticket["number"].as_i64().expect("number");
    let (status, endpoint) = theirs
        .post("/webhooks", json!({"url": "https://hooks.example.com/x"}))
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let wh = endpoint["data"]["id"].as_str().expect("id");
    let (_, keys) = theirs.get("/api-keys").await;
    let key = keys["data"][0]["id"].as_str().expect("key id");

    for path in [
        format!("/tickets/{t}"),
        format!("/tickets/{t}/messages"),
        format!("/tickets/{t}/activities"),
        format!("/webhooks/{wh}"),
        format!("/api-keys/{key}"),
    ] {
        assert_error(&mine.get(&path).await, 404, "NOT_FOUND");
    }
    assert_error(
        &mine
            .patch(&format!("/tickets/{t}"), json!({"subject": "mine now"}))
            .await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &mine.delete(&format!("/webhooks/{wh}")).await,
        404,
        "NOT_FOUND",
    );
    // Their ticket number is not a ticket of mine either (I have none).
    assert_error(
        &mine.get(&format!("/tickets/{number}")).await,
        404,
        "NOT_FOUND",
    );
    // Ids of the wrong kind are 404 too.
    assert_error(&mine.get(&format!("/webhooks/{t}")).await, 404, "NOT_FOUND");
    // And nothing of theirs changed.
    let (status, still) = theirs.get(&format!("/tickets/{t}")).await;
    assert_eq!(status, 200);
    assert_eq!(still["data"]["subject"], "Theirs");
}

#[tokio::test]
async fn nul_characters_and_broken_json_are_4xx_on_the_webhook_and_key_routes() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let (status, endpoint) = api
        .post("/webhooks", json!({"url": "https://hooks.example.com/a"}))
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let wh = endpoint["data"]["id"].as_str().expect("id");

    // NUL in a body: 422 naming the field, never a database error.
    for (method, path, body, field) in [
        (
            Method::POST,
            "/webhooks".to_owned(),
            json!({"url": "https://hooks.example.com/b", "description": "a\u{0}b"}),
            "description",
        ),
        (
            Method::PATCH,
            format!("/webhooks/{wh}"),
            json!({"headers": {"x-team": "a\u{0}"}}),
            "headers.x-team",
        ),
        (
            Method::POST,
            "/api-keys".to_owned(),
            json!({"scopes": ["read"], "name": "\u{0}"}),
            "name",
        ),
    ] {
        let answer = Api::send(api.request(method, &path).json(&body)).await;
        assert_error(&answer, 422, "VALIDATION_FAILED");
        assert!(
            answer.1["error"]["details"]["fields"][field].is_string(),
            "{path}: {}",
            answer.1
        );
    }
    // NUL in a query string: 400.
    for path in [
        "/webhooks?cursor=%00",
        "/deliveries?event_type=a%00b",
        "/events?type=%00",
    ] {
        assert_error(&api.get(path).await, 400, "BAD_REQUEST");
    }
    // A syntax error after a shape error is still a syntax error (400, not 422).
    let truncated = Api::send(
        api.request(Method::POST, "/webhooks")
            .header("content-type", "application/json")
            .body(r#"{"url": 5, "events": ["#),
    )
    .await;
    assert_error(&truncated, 400, "BAD_REQUEST");
    // Ingest: NUL inside an event's data is stored as given (it is JSON text), never a 500.
    let (status, body) = api
        .post(
            "/events",
            json!({"type": "ticket.created", "data": {"note": "a\u{0}b"}}),
        )
        .await;
    assert!(status == 202 || status == 422, "{status} {body}");
}

#[tokio::test]
async fn an_expired_idempotency_key_is_never_replayed() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let body = json!({"subject": "Old", "customer_email": "old@example.com"});
    let (status, _, first) = post_with_key(&api, "/tickets", "old-key", &body).await;
    assert_eq!(status, 201);
    // A day later (the clock moved on by rewriting the row's expiry).
    sqlx::query(
        "UPDATE idempotency_key SET expires_at = now() - interval '1 second'
          WHERE idem_key = 'old-key'",
    )
    .execute(&app.pool)
    .await
    .expect("expire");
    let (status, headers, second) = post_with_key(&api, "/tickets", "old-key", &body).await;
    assert_eq!(status, 201, "{second}");
    assert!(!replayed(&headers), "an expired key starts afresh");
    assert_ne!(first["data"]["id"], second["data"]["id"]);
    // ... and it is a live key again from then on.
    let (_, headers, third) = post_with_key(&api, "/tickets", "old-key", &body).await;
    assert!(replayed(&headers));
    assert_eq!(third, second);
}

/// Every API key (`api_key`) and signing secret (`secret`) in `value`; a key's `prefix` is
/// shown on purpose and is no credential.
fn credentials_in(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|item| credentials_in(item, found)),
        Value::Object(fields) => {
            for (name, item) in fields {
                match item.as_str() {
                    Some(text) if name == "api_key" || name == "secret" => {
                        found.push(text.to_owned());
                    }
                    _ => credentials_in(item, found),
                }
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn answers_that_carry_a_credential_are_never_stored_readable() {
    let app = TestApp::spawn_with(|config| {
        config.allow_networks = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    let api = app.api("acme").await;
    let mut shown = Vec::new();
    let mut posted = Vec::new();
    let (status, _, key) =
        post_with_key(&api, "/api-keys", "k1", &json!({"scopes": ["read"]})).await;
    assert_eq!(status, 201, "{key}");
    posted.push((
        "/api-keys".to_owned(),
        "k1",
        json!({"scopes": ["read"]}),
        key.clone(),
    ));
    let rotate_key = format!(
        "/api-keys/{}/rotate",
        key["data"]["id"].as_str().expect("id")
    );
    let (status, _, rotated) = post_with_key(&api, &rotate_key, "k2", &json!({})).await;
    assert_eq!(status, 201, "{rotated}");
    posted.push((rotate_key, "k2", json!({}), rotated));
    let hook = json!({"url": "http://127.0.0.1:9/hook"});
    let (status, _, webhook) = post_with_key(&api, "/webhooks", "k3", &hook).await;
    assert_eq!(status, 201, "{webhook}");
    let rotate_secret = format!(
        "/webhooks/{}/rotate-secret",
        webhook["data"]["id"].as_str().expect("id")
    );
    posted.push(("/webhooks".to_owned(), "k3", hook, webhook));
    let (status, _, secret) = post_with_key(&api, &rotate_secret, "k4", &json!({})).await;
    assert_eq!(status, 200, "{secret}");
    posted.push((rotate_secret, "k4", json!({}), secret));

    // Repeats still get the first answers, credentials included.
    for (path, key, body, first) in &posted {
        credentials_in(first, &mut shown);
        let (_, headers, again) = post_with_key(&api, path, key, body).await;
        assert!(replayed(&headers), "{path} was not replayed");
        assert_eq!(&again, first, "{path}");
    }
    assert!(shown.len() >= 4, "credentials shown: {shown:?}");

    // No table holds one readable: not as text, and not as the bytes of a bytea column.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .expect("tables");
    for credential in &shown {
        let as_bytes = hex::encode(credential.as_bytes());
        for table in &tables {
            let hits: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM \"{table}\" t \
                  WHERE strpos(t::text, $1) > 0 OR strpos(t::text, $2) > 0"
            ))
            .bind(credential)
            .bind(&as_bytes)
            .fetch_one(&app.pool)
            .await
            .expect("scan");
            assert_eq!(hits, 0, "{table} holds a credential readable");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_random_keys_evicts_no_valid_key_and_costs_a_bounded_number_of_queries() {
    use rand::{Rng as _, distributions::Alphanumeric};
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let auth = deskhook::auth::Authenticator::new(app.pool.clone());
    assert!(matches!(auth.authenticate(&api.key).await, Ok(Some(_))));
    let started = std::time::Instant::now();
    let (mut looked_up, mut refused) = (0_u32, 0_u32);
    for _ in 0..12_000 {
        let random: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        match auth.authenticate(&format!("dhk_{random}")).await {
            Ok(None) => looked_up += 1,
            Ok(Some(_)) => panic!("a random key was accepted"),
            Err(_) => refused += 1,
        }
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as u32 + 1;
    assert!(
        looked_up <= deskhook::auth::MISSES_PER_SECOND * seconds,
        "{looked_up} random keys were looked up in {seconds} s ({refused} refused)"
    );
    // The valid key is still cached: revoked behind the cache's back, it is still known for
    // the cache's few seconds, so the flood did not evict it.
    sqlx::query("UPDATE api_key SET revoked_at = now()")
        .execute(&app.pool)
        .await
        .expect("revoke");
    assert!(
        matches!(auth.authenticate(&api.key).await, Ok(Some(_))),
        "the flood evicted a valid key"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_key_rotation_grace_is_bounded_and_never_extends_an_expiry() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let (status, created) = api
        .post("/api-keys", json!({"scopes": ["read"], "name": "old"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["data"]["id"].as_str().expect("id").to_owned();
    let rotate = format!("/api-keys/{id}/rotate");
    // Out of PostgreSQL's interval range: was a 500.
    let huge = api
        .post(&rotate, json!({"grace_seconds": 1_000_000_000_000_000u64}))
        .await;
    assert_error(&huge, 422, "VALIDATION_FAILED");
    assert!(huge.1["error"]["details"]["fields"]["grace_seconds"].is_string());
    assert_error(
        &api.post(&rotate, json!({"grace_seconds": 30 * 86_400 + 1}))
            .await,
        422,
        "VALIDATION_FAILED",
    );

    let expiry = |answer: &Value| {
        answer["data"]["expires_at"]
            .as_str()
            .expect("expires_at")
            .parse::<chrono::DateTime<chrono::Utc>>()
            .expect("time")
    };
    assert_eq!(api.post(&rotate, json!({"grace_seconds": 60})).await.0, 201);
    let first = expiry(&api.get(&format!("/api-keys/{id}")).await.1);
    // Rotating the same key again with a longer grace keeps the earlier expiry.
    assert_eq!(
        api.post(&rotate, json!({"grace_seconds": 86_400})).await.0,
        201
    );
    let second = expiry(&api.get(&format!("/api-keys/{id}")).await.1);
    assert!(second <= first, "{second} extended {first}");
    app.stop().await;
}

#[tokio::test]
async fn a_request_cut_off_mid_way_finishes_and_its_retry_gets_the_answer() {
    let app = TestApp::spawn_with(|config| {
        config.allow_networks = vec!["127.0.0.0/8".parse().expect("net")];
        config.request_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let api = app.api("acme").await;
    let hook = json!({"url": "http://127.0.0.1:9/hook"});
    // Hold the handler inside its transaction past the request deadline (as a client that
    // disconnects would): the answer never reaches the client.
    let mut blocker = app.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE endpoint IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .expect("lock");
    let (status, _, cut) = post_with_key(&api, "/webhooks", "cut-off", &hook).await;
    assert_eq!(status, 408, "{cut}");
    blocker.commit().await.expect("unlock");

    // The retry gets the one answer the request made (not a 409 for the claim's lease) ...
    let (status, headers, retried) = post_with_key(&api, "/webhooks", "cut-off", &hook).await;
    assert_eq!(status, 201, "{retried}");
    assert!(replayed(&headers), "{retried}");
    // ... and the endpoint was created once.
    let (status, list) = api.get("/webhooks").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_is_bound_only_to_a_user_of_its_own_workspace() {
    let app = TestApp::spawn().await;
    let mine = app.api("acme").await;
    let theirs = app.api("globex").await;
    let their_user = theirs.user("Their Agent", "agent@globex.example").await;
    let their_user = their_user["id"].as_str().expect("user id");
    let (_, before) = mine.get("/api-keys").await;

    let answer = mine
        .post(
            "/api-keys",
            json!({"scopes": ["write"], "user_id": their_user}),
        )
        .await;
    assert_error(&answer, 422, "VALIDATION_FAILED");
    assert!(
        answer.1.to_string().contains("user_id"),
        "the error names the field: {}",
        answer.1
    );
    let (_, after) = mine.get("/api-keys").await;
    let ids = |list: &Value| -> Vec<Value> {
        list["data"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| key["id"].clone())
            .collect()
    };
    assert_eq!(ids(&after), ids(&before), "no key was made");

    // A user of the key's own workspace is accepted, and shown on the key.
    let my_user = mine.user("My Agent", "agent@acme.example").await;
    let my_user = my_user["id"].as_str().expect("user id");
    let (status, created) = mine
        .post(
            "/api-keys",
            json!({"scopes": ["write"], "user_id": my_user}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["data"]["user_id"], my_user);
}

#[tokio::test]
async fn a_workspace_can_lower_its_rate_limit_but_never_raise_it_past_the_operators() {
    let app =
        TestApp::spawn_with(|c| c.rate_limit = deskhook::config::RateLimit::PerMinute(600)).await;
    let api = app.api("acme").await;
    let (status, body) = api
        .patch(
            "/workspace",
            json!({ "rate_limit_per_minute": 4_000_000_000_u32 }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["details"]["fields"]["rate_limit_per_minute"]
            .as_str()
            .is_some_and(|reason| reason.contains("600")),
        "{body}"
    );
    let (_, headers, _) = send(api.request(Method::GET, "/workspace")).await;
    assert_eq!(header(&headers, "x-ratelimit-limit"), Some("600"));

    // Lowering it is the workspace's own business.
    let (status, body) = api
        .patch("/workspace", json!({ "rate_limit_per_minute": 120 }))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, headers, _) = send(api.request(Method::GET, "/workspace")).await;
    assert_eq!(header(&headers, "x-ratelimit-limit"), Some("120"));
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_states_the_bounds_the_server_enforces() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let parameter = |path: &str, name: &str| {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
    };
    for path in ["/v1/tickets", "/v1/webhooks", "/v1/deliveries"] {
        let limit = parameter(path, "limit").expect("limit");
        assert_eq!(limit["schema"]["maximum"], 100, "{path}: {limit}");
        assert_eq!(limit["schema"]["minimum"], 1, "{path}: {limit}");
    }
    // A ticket's own messages take the ticket from the path only, and say so.
    assert!(parameter("/v1/tickets/{id}/messages", "ticket_id").is_none());
    assert!(parameter("/v1/conversations", "ticket_id").is_some());
    let api = app.api("acme").await;
    let ticket = api.ticket("Hello", "a@example.com").await;
    let id = ticket["id"].as_str().expect("id");
    let (status, body) = api
        .get(&format!("/tickets/{id}/messages?ticket_id={id}"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.get("/tickets?limit=101").await;
    assert_eq!(status, 400, "{body}");
    app.stop().await;
}
