//! A worker instance killed (SIGKILL) twenty times under load while another instance runs.

use std::{collections::HashSet, time::Duration};

use serde_json::json;

use super::{produce, settle_and_report};
use crate::{
    delivery::{
        Client,
        failures::{free_port, start_service_with, wait_ready},
    },
    support::{TestApp, receiver::Receiver},
};

#[tokio::test]
async fn twenty_sigkills_of_a_worker_under_load_lose_nothing() {
    // The instance that stays: API, workers and timers (its reaper rescues the dead one's rows).
    let app = TestApp::spawn_with(|config| {
        config.attempt_timeout = Duration::from_secs(1);
    })
    .await;
    let client = Client::new(&app).await;
    let receiver = Receiver::start().await;
    // Slow enough that the killed worker always has requests in flight.
    receiver.delay(Duration::from_millis(30));
    client
        .endpoint(&receiver, json!({ "max_in_flight": 32 }))
        .await;
    let data_dir = std::env::temp_dir().join(format!("deskhook-kills-{}", std::process::id()));
    let mut accepted = HashSet::new();
    let cycles = 20;
    for cycle in 0..cycles {
        let port = free_port();
        let mut worker = start_service_with(
            &app.db.url,
            port,
            &data_dir,
            &[("DESKHOOK_ROLES", "workers")],
        );
        wait_ready(port).await;
        produce(
            &client,
            &format!("kill{cycle}"),
            40,
            "ticket.created",
            &mut accepted,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(150 + 10 * cycle as u64)).await;
        worker.kill().expect("SIGKILL");
        worker.wait().expect("reaped");
    }
    // Leases of the killed worker run out (2 x attempt timeout + 5 s) and are rescued.
    settle_and_report(
        "worker SIGKILL under load",
        cycles,
        &accepted,
        &receiver,
        Duration::from_secs(60),
    )
    .await;
    assert!(receiver.received().iter().all(|r| r.verified_by == [0]));
    app.stop().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
