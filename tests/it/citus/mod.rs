//! The service on a real Citus cluster (a coordinator and two workers on loopback, from the
//! test kit): migrated the way `deskhook migrate` does it, then used the way tenants use it.
//! Without the Citus extension these tests say so and pass, unless `DESKHOOK_REQUIRE_CITUS`
//! is set (CI installs Citus and sets it, so there they always run).

use std::time::Duration;

use deskhook_testkit::TestDatabase;
use serde_json::json;

use crate::{
    delivery::{Client, event},
    support::{TestApp, receiver::Receiver},
};

/// A fresh database on the Citus cluster, or `None` (with a note) where Citus is missing.
async fn citus_database() -> Option<TestDatabase> {
    let db = TestDatabase::create_on_citus().await;
    if db.is_none() {
        assert!(
            std::env::var_os("DESKHOOK_REQUIRE_CITUS").is_none(),
            "DESKHOOK_REQUIRE_CITUS is set but the Citus extension is not installed \
             (run ../shared/citus/install)"
        );
        eprintln!("skipped: the Citus extension is not installed");
    }
    db
}

#[tokio::test]
async fn an_event_is_delivered_signed_on_citus() {
    let Some(db) = citus_database().await else {
        return;
    };
    let app = TestApp::spawn_on(db, |_| {}).await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    client.endpoint(&receiver, json!({})).await;
    client
        .ingest(json!({ "events": [event("citus-1", "ticket.created")] }))
        .await;
    let received = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(received[0].json["type"], "ticket.created");
    assert_eq!(
        received[0].verified_by,
        vec![0],
        "signed with the endpoint's secret"
    );
    app.stop().await;
}
