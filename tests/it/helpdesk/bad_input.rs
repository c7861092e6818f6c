//! Bad input through every helpdesk route family: each answer is a 4xx with the error envelope,
//! never a 500.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::TestApp;

/// What a bad request sends.
enum Body {
    None,
    Raw(&'static str, String),
    Json(Value),
}

struct Case {
    method: Method,
    path: String,
    body: Body,
    expected: u16,
}

fn case(method: Method, path: &str, body: Body, expected: u16) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body,
        expected,
    }
}

#[tokio::test]
async fn bad_input_is_a_4xx_with_the_envelope_on_every_route() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let ticket = api.ticket("Target", "jane@example.com").await;
    let t = ticket["id"].as_str().expect("id").to_owned();
    let customer = ticket["requester"]["id"].as_str().expect("id").to_owned();
    let user = api.user("Sam", "sam@example.com").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, group) = api.post("/groups", json!({"name": "G"})).await;
    let group = group["data"]["id"].as_str().expect("id").to_owned();
    let (_, tag) = api.post("/tags", json!({"name": "T"})).await;
    let tag = tag["data"]["id"].as_str().expect("id").to_owned();
    let (_, article) = api.post("/articles", json!({"title": "A"})).await;
    let article = article["data"]["id"].as_str().expect("id").to_owned();
    let oversized = format!("{{\"subject\": \"{}\"}}", "x".repeat(1024 * 1024 + 10));

    // Every create/update route with a JSON body.
    let writes: Vec<(Method, String)> = vec![
        (Method::POST, "/tickets".to_owned()),
        (Method::PATCH, format!("/tickets/{t}")),
        (Method::PUT, format!("/tickets/{t}/status")),
        (Method::PUT, format!("/tickets/{t}/assignee")),
        (Method::PUT, format!("/tickets/{t}/tags")),
        (Method::POST, format!("/tickets/{t}/messages")),
        (Method::POST, format!("/tickets/{t}/replies")),
        (Method::POST, "/conversations".to_owned()),
        (Method::POST, "/tickets/compose".to_owned()),
        (Method::POST, "/tickets/reply".to_owned()),
        (Method::POST, "/customers".to_owned()),
        (Method::PATCH, format!("/customers/{customer}")),
        (Method::POST, "/users".to_owned()),
        (Method::PATCH, format!("/users/{user}")),
        (Method::POST, "/groups".to_owned()),
        (Method::PATCH, format!("/groups/{group}")),
        (Method::POST, "/tags".to_owned()),
        (Method::PATCH, format!("/tags/{tag}")),
        (Method::POST, "/articles".to_owned()),
        (Method::PATCH, format!("/articles/{article}")),
    ];
    let mut cases = Vec::new();
    for (method, path) in &writes {
        cases.push(case(
            method.clone(),
            path,
            Body::Raw("application/json", "{\"subject\": ".to_owned()),
            400,
        ));
        cases.push(case(
            method.clone(),
            path,
            Body::Raw("application/json", "[1, 2".to_owned()),
            400,
        ));
        cases.push(case(
            method.clone(),
            path,
            Body::Raw("text/plain", "{}".to_owned()),
            415,
        ));
        cases.push(case(
            method.clone(),
            path,
            Body::Raw("application/json", oversized.clone()),
            413,
        ));
        cases.push(case(
            method.clone(),
            path,
            Body::Json(json!({"no_such_field": 1})),
            422,
        ));
        cases.push(case(
            method.clone(),
            path,
            Body::Json(json!([1, 2, 3])),
            422,
        ));
    }
    // Wrong types and unknown enum values.
    for (method, path, body) in [
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": 5, "customer_email": "a@example.com"}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_email": "a@example.com", "priority": "critical"}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_email": "a@example.com", "status": "resolvedish"}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_email": "not-an-email"}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_email": "a@example.com", "tags": "a,b", "custom_fields": [1]}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_email": "a@example.com", "source": "fax"}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_id": "usr_0000000000001"}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_email": "a@example.com", "tags": [1, 2]}),
        ),
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "s", "customer_email": "a@example.com", "tags": ["a,b"]}),
        ),
        (
            Method::PATCH,
            format!("/tickets/{t}"),
            json!({"priority": 3}),
        ),
        (
            Method::PATCH,
            format!("/tickets/{t}"),
            json!({"assignee_id": "cus_0000000000001"}),
        ),
        (
            Method::PATCH,
            format!("/tickets/{t}"),
            json!({"subject": ""}),
        ),
        (
            Method::PATCH,
            format!("/tickets/{t}"),
            json!({"snoozed_until": "soon"}),
        ),
        (
            Method::PUT,
            format!("/tickets/{t}/status"),
            json!({"status": true}),
        ),
        (
            Method::PUT,
            format!("/tickets/{t}/assignee"),
            json!({"user_id": "usr_nope"}),
        ),
        (
            Method::PUT,
            format!("/tickets/{t}/assignee"),
            json!({"user_id": "usr_0000000000001"}),
        ),
        (
            Method::PUT,
            format!("/tickets/{t}/tags"),
            json!({"tags": {"a": 1}}),
        ),
        (
            Method::POST,
            format!("/tickets/{t}/messages"),
            json!({"body": "x", "type": "memo", "author": {"type": "customer"}}),
        ),
        (
            Method::POST,
            format!("/tickets/{t}/messages"),
            json!({"body": "", "author": {"type": "customer"}}),
        ),
        (
            Method::POST,
            format!("/tickets/{t}/messages"),
            json!({"body": "x", "author": {"type": "robot"}}),
        ),
        (
            Method::POST,
            format!("/tickets/{t}/messages"),
            json!({"body": "x", "internal": "perhaps", "author": {"type": "customer"}}),
        ),
        (Method::POST, "/customers".to_owned(), json!({"email": 12})),
        (
            Method::POST,
            "/customers".to_owned(),
            json!({"name": "no email"}),
        ),
        (
            Method::POST,
            "/customers".to_owned(),
            json!({"email": "a@example.com", "custom_fields": "x"}),
        ),
        (
            Method::POST,
            "/users".to_owned(),
            json!({"name": "x", "email": "x@example.com", "role": "owner"}),
        ),
        (Method::POST, "/users".to_owned(), json!({"name": "x"})),
        (Method::POST, "/groups".to_owned(), json!({"name": "  "})),
        (
            Method::POST,
            "/tags".to_owned(),
            json!({"name": "x".repeat(200)}),
        ),
        (
            Method::POST,
            "/articles".to_owned(),
            json!({"title": "x", "status": "live"}),
        ),
        (
            Method::POST,
            "/tickets/reply".to_owned(),
            json!({"message_id": "msg_0000000000001"}),
        ),
        // NUL characters, which PostgreSQL cannot store as text.
        (
            Method::POST,
            "/tickets".to_owned(),
            json!({"subject": "a\u{0}b", "customer_email": "a@example.com"}),
        ),
        (
            Method::POST,
            format!("/tickets/{t}/messages"),
            json!({"body": "nul \u{0}", "author": {"type": "customer"}}),
        ),
        (
            Method::PATCH,
            format!("/customers/{customer}"),
            json!({"custom_fields": {"k\u{0}": 1}}),
        ),
    ] {
        cases.push(case(method, &path, Body::Json(body), 422));
    }
    // Query strings: unknown parameters, bad values, garbage cursors, limits out of range.
    let lists = [
        "/tickets",
        "/customers",
        "/users",
        "/groups",
        "/tags",
        "/articles",
        "/conversations",
    ];
    let ticket_lists = [
        format!("/tickets/{t}/messages"),
        format!("/tickets/{t}/activities"),
        format!("/tickets/{t}/replies"),
    ];
    for path in lists.iter().map(|p| (*p).to_owned()).chain(ticket_lists) {
        for query in [
            "colour=red",
            "limit=0",
            "limit=-1",
            "limit=1000",
            "limit=ten",
            "per_page=101",
            "cursor=garbage!!",
            "cursor=eyJub3QiOiJhIGN1cnNvciJ9",
            "page=0",
            "page=-3",
            "order_by=colour",
            "order_dir=sideways",
            "sort=-colour",
            "cursor=2025-01-01T00:00:00Z&page=2",
            // Well-formed positions whose values do not cast back: tampered cursors.
            "cursor=eyJvIjoiY3JlYXRlZF9hdDpkZXNjIiwidiI6Im5vdCBhIHRpbWUiLCJrIjoxfQ",
            "cursor=eyJvIjoiY3JlYXRlZF9hdDphc2MiLCJ2Ijoibm90IGEgdGltZSIsImsiOjF9",
        ] {
            cases.push(case(
                Method::GET,
                &format!("{path}?{query}"),
                Body::None,
                400,
            ));
        }
    }
    for query in [
        "status=resolvedish",
        "priority=critical",
        "assignee_id=cus_0000000000001",
        "customer_id=garbage",
        "unassigned=maybe",
        "archived=2",
        "created_after=yesterday",
        "assigned_to_me=true",
        "active_state=sleeping",
        "search=a%00b",
        "tags=%00",
    ] {
        cases.push(case(
            Method::GET,
            &format!("/tickets?{query}"),
            Body::None,
            400,
        ));
    }
    // Ids of the wrong kind, garbage ids, and numbers that are no ticket.
    for path in [
        format!("/tickets/{customer}"),
        "/tickets/tkt_!!!".to_owned(),
        "/tickets/999999".to_owned(),
        "/tickets/-1".to_owned(),
        format!("/tickets/{t}/messages/{t}"),
        format!("/customers/{t}"),
        format!("/users/{customer}"),
        format!("/groups/{tag}"),
        format!("/tags/{group}"),
        format!("/articles/{tag}"),
    ] {
        cases.push(case(Method::GET, &path, Body::None, 404));
        cases.push(case(Method::DELETE, &path, Body::None, 404));
    }
    cases.push(case(
        Method::GET,
        &format!("/conversations/{t}"),
        Body::None,
        404,
    ));

    let mut failures = Vec::new();
    for case in cases {
        let mut request = api.request(case.method.clone(), &case.path);
        request = match case.body {
            Body::None => request,
            Body::Raw(content_type, text) => {
                request.header("content-type", content_type).body(text)
            }
            Body::Json(value) => request.json(&value),
        };
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let envelope: Option<Value> = serde_json::from_str(&text).ok();
        let has_envelope = envelope
            .as_ref()
            .is_some_and(|v| v["error"]["code"].is_string() && v["error"]["details"].is_object());
        if status != case.expected || !has_envelope {
            failures.push(format!(
                "{} {} → {status} (expected {}): {}",
                case.method,
                case.path,
                case.expected,
                text.chars().take(200).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Nothing above changed the target ticket.
    let (status, after) = api.get(&format!("/tickets/{t}")).await;
    assert_eq!(status, 200);
    assert_eq!(after["data"]["subject"], "Target");
    app.stop().await;
}
