//! Customers, users, groups, tags and articles: create, get, list with filters, update, delete;
//! and workspace isolation across every resource.

use serde_json::json;

use crate::support::TestApp;

#[tokio::test]
async fn customers_are_managed_and_unique_by_email() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;
    let (status, created) = api
        .post(
            "/customers",
            json!({"email": "user@example.com", "name": "John Doe", "phone": "+1-555-0123", "company": "Acme Inc"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let customer = &created["data"];
    let id = customer["id"].as_str().expect("id");
    assert!(id.starts_with("cus_"));
    assert_eq!(customer["company"], "Acme Inc");
    assert_eq!(customer["ticket_count"], 0);
    assert_eq!(customer["custom_fields"], json!({}));

    let (status, duplicate) = api
        .post("/customers", json!({"email": "USER@example.com"}))
        .await;
    assert_eq!(status, 422);
    assert!(duplicate["error"]["details"]["fields"]["email"].is_string());

    api.post("/tickets", json!({"subject": "Hi", "customer_id": id}))
        .await;
    let (_, fetched) = api.get(&format!("/customers/{id}")).await;
    assert_eq!(fetched["data"]["ticket_count"], 1);

    let (status, updated) = api
        .patch(
            &format!("/customers/{id}"),
            json!({"name": "John D.", "phone": null}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["data"]["name"], "John D.");
    assert!(updated["data"]["phone"].is_null());

    api.post(
        "/customers",
        json!({"email": "other@example.com", "name": "Mary"}),
    )
    .await;
    let (_, by_email) = api.get("/customers?email=USER@example.com").await;
    assert_eq!(by_email["meta"]["total"], 1);
    let (_, searched) = api.get("/customers?search=mary").await;
    assert_eq!(searched["data"][0]["email"], "other@example.com");
    let (_, sorted) = api
        .get("/customers?order_by=created_at&order_dir=asc")
        .await;
    assert_eq!(sorted["data"][0]["id"], id);

    let (status, _) = api.delete(&format!("/customers/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&format!("/customers/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = api
        .post("/customers", json!({"email": "user@example.com"}))
        .await;
    assert_eq!(status, 201, "a deleted customer's email is free again");
    app.stop().await;
}

#[tokio::test]
async fn users_groups_tags_and_articles_are_managed() {
    let app = TestApp::spawn().await;
    let api = app.api("acme").await;

    let user = api.user("Jane Smith", "jane@example.com").await;
    let user_id = user["id"].as_str().expect("id");
    assert!(user_id.starts_with("usr_"));
    assert_eq!(user["role"], "agent");
    assert_eq!(user["active"], true);
    let (status, _) = api
        .post(
            "/users",
            json!({"name": "Dup", "email": "JANE@example.com"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, admin) = api
        .patch(
            &format!("/users/{user_id}"),
            json!({"role": "admin", "active": false}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin["data"]["role"], "admin");
    let (_, inactive) = api.get("/users?active=false").await;
    assert_eq!(inactive["meta"]["total"], 1);
    let (status, _) = api
        .post(
            "/users",
            json!({"name": "X", "email": "x@example.com", "role": "owner"}),
        )
        .await;
    assert_eq!(status, 422);
    let (status, _) = api.get(&format!("/users/{user_id}")).await;
    assert_eq!(status, 200);
    let (status, _) = api.delete(&format!("/users/{user_id}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&format!("/users/{user_id}")).await;
    assert_eq!(status, 404);

    let (status, group) = api
        .post("/groups", json!({"name": "Sales", "description": "Leads"}))
        .await;
    assert_eq!(status, 201);
    let group_id = group["data"]["id"].as_str().expect("id");
    assert!(group_id.starts_with("grp_"));
    let ticket = api.ticket("Quote", "a@example.com").await;
    let ticket_id = ticket["id"].as_str().expect("id");
    let (_, routed) = api
        .patch(
            &format!("/tickets/{ticket_id}"),
            json!({"group_id": group_id}),
        )
        .await;
    assert_eq!(
        routed["data"]["group"],
        json!({"id": group_id, "name": "Sales"})
    );
    let (_, renamed) = api
        .patch(&format!("/groups/{group_id}"), json!({"name": "Presales"}))
        .await;
    assert_eq!(renamed["data"]["name"], "Presales");
    let (_, groups) = api.get("/groups?search=pre").await;
    assert_eq!(groups["meta"]["total"], 1);
    let (status, _) = api.delete(&format!("/groups/{group_id}")).await;
    assert_eq!(status, 204);
    let (_, ungrouped) = api.get(&format!("/tickets/{ticket_id}")).await;
    assert!(ungrouped["data"]["group"].is_null());

    let (status, tag) = api
        .post("/tags", json!({"name": "billing", "color": "#ff0000"}))
        .await;
    assert_eq!(status, 201, "{tag}");
    let tag_id = tag["data"]["id"].as_str().expect("id");
    assert!(tag_id.starts_with("tag_"));
    let (status, _) = api.post("/tags", json!({"name": "BILLING"})).await;
    assert_eq!(status, 422, "tag names are unique case-insensitively");
    let (status, _) = api
        .post("/tags", json!({"name": "x", "color": "not a colour!"}))
        .await;
    assert_eq!(status, 422);
    api.put(
        &format!("/tickets/{ticket_id}/tags"),
        json!({"tags": ["Billing"]}),
    )
    .await;
    let (_, counted) = api.get(&format!("/tags/{tag_id}")).await;
    assert_eq!(counted["data"]["ticket_count"], 1);
    let (status, recoloured) = api
        .patch(&format!("/tags/{tag_id}"), json!({"color": "red"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(recoloured["data"]["color"], "red");
    let (status, _) = api.delete(&format!("/tags/{tag_id}")).await;
    assert_eq!(status, 204);
    let (_, untagged) = api.get(&format!("/tickets/{ticket_id}")).await;
    assert_eq!(untagged["data"]["tags"], json!([]));

    // Seed 001's article example.
    let (status, article) = api
        .post(
            "/articles",
            json!({"title": "How to reset password", "body": "Article content in markdown...", "collection_id": "col_123", "status": "draft"}),
        )
        .await;
    assert_eq!(status, 201, "{article}");
    let article_id = article["data"]["id"].as_str().expect("id");
    assert!(article_id.starts_with("art_"));
    assert!(article["data"]["published_at"].is_null());
    let (_, published) = api
        .patch(
            &format!("/articles/{article_id}"),
            json!({"status": "published"}),
        )
        .await;
    assert!(published["data"]["published_at"].is_string());
    api.post(
        "/articles",
        json!({"title": "Billing FAQ", "collection_id": "col_9"}),
    )
    .await;
    let (_, in_collection) = api
        .get("/articles?collection_id=col_123&status=published")
        .await;
    assert_eq!(in_collection["meta"]["total"], 1);
    let (_, searched) = api.get("/articles?search=markdown").await;
    assert_eq!(searched["data"][0]["id"], article_id);
    let (status, _) = api.get("/articles?status=archived").await;
    assert_eq!(status, 400);
    let (status, _) = api.delete(&format!("/articles/{article_id}")).await;
    assert_eq!(status, 204);
    let (status, _) = api.get(&format!("/articles/{article_id}")).await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn another_workspace_sees_nothing_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let acme = app.api("acme").await;
    let globex = app.api("globex").await;
    let ticket = acme.ticket("Private", "jane@example.com").await;
    let ticket_id = ticket["id"].as_str().expect("id");
    let customer_id = ticket["requester"]["id"].as_str().expect("id");
    let user = acme.user("Sam", "sam@example.com").await;
    let user_id = user["id"].as_str().expect("id");
    let (_, group) = acme.post("/groups", json!({"name": "Sales"})).await;
    let group_id = group["data"]["id"].as_str().expect("id");
    let (_, tag) = acme.post("/tags", json!({"name": "vip"})).await;
    let tag_id = tag["data"]["id"].as_str().expect("id");
    let (_, article) = acme.post("/articles", json!({"title": "Secret"})).await;
    let article_id = article["data"]["id"].as_str().expect("id");
    let (_, messages) = acme.get(&format!("/tickets/{ticket_id}/messages")).await;
    let message_id = messages["data"][0]["id"].as_str().expect("id");

    for path in [
        format!("/tickets/{ticket_id}"),
        "/tickets/1".to_owned(),
        format!("/tickets/{ticket_id}/messages"),
        format!("/tickets/{ticket_id}/activities"),
        format!("/tickets/{ticket_id}/messages/{message_id}"),
        format!("/conversations/{message_id}"),
        format!("/customers/{customer_id}"),
        format!("/users/{user_id}"),
        format!("/groups/{group_id}"),
        format!("/tags/{tag_id}"),
        format!("/articles/{article_id}"),
    ] {
        let (status, body) = globex.get(&path).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    let changes = [
        (
            reqwest::Method::PATCH,
            format!("/tickets/{ticket_id}"),
            json!({"subject": "mine"}),
        ),
        (
            reqwest::Method::PUT,
            format!("/tickets/{ticket_id}/status"),
            json!({"status": "closed"}),
        ),
        (
            reqwest::Method::POST,
            format!("/tickets/{ticket_id}/messages"),
            json!({"body": "x", "author": {"type": "customer"}}),
        ),
        (
            reqwest::Method::PATCH,
            format!("/customers/{customer_id}"),
            json!({"name": "x"}),
        ),
        (
            reqwest::Method::PATCH,
            format!("/tags/{tag_id}"),
            json!({"name": "x"}),
        ),
    ];
    for (method, path, body) in changes {
        let (status, answer) =
            crate::support::Api::send(globex.request(method.clone(), &path).json(&body)).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    for path in [
        format!("/tickets/{ticket_id}"),
        format!("/articles/{article_id}"),
        format!("/groups/{group_id}"),
    ] {
        let (status, _) = globex.delete(&path).await;
        assert_eq!(status, 404, "DELETE {path}");
    }
    // Globex numbers its own tickets from 1.
    let own = globex.ticket("Mine", "x@example.com").await;
    assert_eq!(own["number"], 1);
    // Referring to another workspace's rows in a body is invalid, not a leak.
    let (status, body) = globex
        .post(
            "/tickets",
            json!({"subject": "x", "customer_id": customer_id}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, lists) = globex.get("/tickets").await;
    assert_eq!(lists["meta"]["total"], 1);
    let (_, conversations) = globex.get("/conversations").await;
    assert_eq!(conversations["meta"]["total"], 1);
    let (_, untouched) = acme.get(&format!("/tickets/{ticket_id}")).await;
    assert_eq!(untouched["data"]["subject"], "Private");
    app.stop().await;
}
