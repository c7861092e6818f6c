//! The claim/settle state machine against a model: random sequences of ingest, claim, settle
//! (fresh or fenced), lease expiry, retries coming due, disable, enable, delete and replay, run
//! on a real PostgreSQL through the same calls the dispatcher and the API make. After every
//! step the database must hold exactly what the model says: no delivery lost, none finished
//! twice, none claimed while another attempt of it is in flight, none claimed for a disabled
//! or deleted endpoint; and at the end everything not finished is still deliverable.

use std::collections::BTreeMap;

use deskhook::{
    ids::{self, Kind},
    queue::{Claimed, Verdict, claim, cycle},
};
use proptest::{
    prelude::*,
    sample::Index,
    strategy::ValueTree as _,
    test_runner::{Config, TestRng, TestRunner},
};
use reqwest::Method;
use serde_json::json;

use super::{Client, settlement};
use crate::support::{TestApp, receiver::Receiver};

const ENDPOINTS: usize = 3;
const TYPES: [&str; ENDPOINTS] = ["ticket.created", "ticket.updated", "ticket.closed"];

#[derive(Debug, Clone)]
enum Op {
    Ingest { endpoint: usize, count: usize },
    Claim { wanted: usize },
    Settle { pick: Index, verdict: u8 },
    ExpireLeases,
    RetriesComeDue,
    Disable(usize),
    Enable(usize),
    Delete(usize),
    Replay(Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..ENDPOINTS, 1_usize..4).prop_map(|(endpoint, count)| Op::Ingest { endpoint, count }),
        3 => (1_usize..6).prop_map(|wanted| Op::Claim { wanted }),
        4 => (any::<Index>(), 0_u8..4).prop_map(|(pick, verdict)| Op::Settle { pick, verdict }),
        2 => Just(Op::ExpireLeases),
        1 => Just(Op::RetriesComeDue),
        1 => (0..ENDPOINTS).prop_map(Op::Disable),
        1 => (0..ENDPOINTS).prop_map(Op::Enable),
        1 => (0..ENDPOINTS).prop_map(Op::Delete),
        1 => any::<Index>().prop_map(Op::Replay),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Waiting { due: bool },
    InFlight,
    Finished { succeeded: bool },
}

#[derive(Debug)]
struct Delivery {
    endpoint: usize,
    status: Status,
}

#[derive(Debug, Default, Clone, Copy)]
struct Endpoint {
    disabled: bool,
    deleted: bool,
    dead_streak: u32,
}

/// What the queue must look like.
#[derive(Debug, Default)]
struct Model {
    deliveries: BTreeMap<i64, Delivery>,
    endpoints: [Endpoint; ENDPOINTS],
    /// Claims in hand: the live ones and those whose lease was lost (their settle is fenced).
    claims: Vec<(Claimed, bool)>,
}

impl Model {
    fn claimable(&self, id: i64) -> bool {
        let delivery = &self.deliveries[&id];
        let endpoint = self.endpoints[delivery.endpoint];
        delivery.status == Status::Waiting { due: true } && !endpoint.disabled && !endpoint.deleted
    }
}

struct World {
    app: TestApp,
    client: Client,
    endpoint_ids: Vec<String>,
    endpoint_keys: Vec<i64>,
    next_event: usize,
}

impl World {
    async fn new() -> Self {
        // API only: this test is the only claimer.
        let app = TestApp::spawn_api_only().await;
        let client = Client::new(&app).await;
        let receiver = Receiver::start().await;
        let mut endpoint_ids = Vec::new();
        for event_type in TYPES {
            let (id, _) = client
                .endpoint(
                    &receiver,
                    json!({ "events": [event_type], "max_in_flight": 1000 }),
                )
                .await;
            endpoint_ids.push(id);
        }
        let endpoint_keys = endpoint_ids
            .iter()
            .map(|id| ids::decode(Kind::Webhook, id).expect("key"))
            .collect();
        Self {
            app,
            client,
            endpoint_ids,
            endpoint_keys,
            next_event: 0,
        }
    }

    fn endpoint_of(&self, key: i64) -> usize {
        self.endpoint_keys
            .iter()
            .position(|k| *k == key)
            .expect("one of ours")
    }

    async fn apply(&mut self, model: &mut Model, op: &Op) {
        let pool = &self.app.pool;
        match op {
            Op::Ingest { endpoint, count } => {
                let events: Vec<_> = (0..*count)
                    .map(|_| {
                        self.next_event += 1;
                        json!({ "id": format!("m-{}", self.next_event), "type": TYPES[*endpoint],
                                "data": {} })
                    })
                    .collect();
                let accepted = self.client.ingest(json!({ "events": events })).await;
                let event_keys: Vec<i64> = accepted
                    .iter()
                    .map(|e| ids::decode(Kind::Event, e["id"].as_str().expect("id")).expect("key"))
                    .collect();
                let rows: Vec<i64> =
                    sqlx::query_scalar("SELECT id FROM delivery WHERE event_id = ANY($1)")
                        .bind(&event_keys)
                        .fetch_all(pool)
                        .await
                        .expect("fan-out");
                let live =
                    !model.endpoints[*endpoint].disabled && !model.endpoints[*endpoint].deleted;
                assert_eq!(
                    rows.len(),
                    if live { *count } else { 0 },
                    "fan-out of {op:?}"
                );
                for id in rows {
                    model.deliveries.insert(
                        id,
                        Delivery {
                            endpoint: *endpoint,
                            status: Status::Waiting { due: true },
                        },
                    );
                }
            }
            Op::Claim { wanted } => {
                let claimable = model
                    .deliveries
                    .keys()
                    .filter(|id| model.claimable(**id))
                    .count();
                let claimed = cycle::turn(pool, &[], *wanted, 300.0, claim::FIRST_ENDPOINT, 1)
                    .await
                    .expect("claim")
                    .claimed;
                for c in &claimed {
                    assert!(
                        model.claimable(c.id),
                        "claimed {} which is {:?} (endpoint {:?})",
                        c.id,
                        model.deliveries[&c.id],
                        model.endpoints[model.deliveries[&c.id].endpoint]
                    );
                    model.deliveries.get_mut(&c.id).expect("known").status = Status::InFlight;
                    model.claims.push((c.clone(), true));
                }
                assert!(
                    claimed.len() <= *wanted && (claimable == 0 || !claimed.is_empty()),
                    "{} claimed of {wanted} wanted with {claimable} claimable",
                    claimed.len()
                );
            }
            Op::Settle { pick, verdict } => {
                if model.claims.is_empty() {
                    return;
                }
                let (claimed, live) = model.claims.remove(pick.index(model.claims.len()));
                let now = chrono::Utc::now();
                let verdict = match verdict {
                    0 => Verdict::Succeeded,
                    1 => Verdict::Retry(now - chrono::Duration::milliseconds(1)),
                    2 => Verdict::Retry(now + chrono::Duration::hours(1)),
                    _ => Verdict::Dead,
                };
                let settled = cycle::settle(pool, &[settlement(&claimed, verdict)])
                    .await
                    .expect("settle");
                assert_eq!(
                    (settled.applied, settled.fenced),
                    if live { (1, 0) } else { (0, 1) },
                    "settle of {} (lease live: {live})",
                    claimed.id
                );
                if !live {
                    return;
                }
                let endpoint = self.endpoint_of(claimed.endpoint_id);
                let delivery = model.deliveries.get_mut(&claimed.id).expect("known");
                delivery.status = match verdict {
                    Verdict::Succeeded => Status::Finished { succeeded: true },
                    Verdict::Dead | Verdict::Gone => Status::Finished { succeeded: false },
                    Verdict::Retry(at) => Status::Waiting { due: at <= now },
                };
                let state = &mut model.endpoints[endpoint];
                match verdict {
                    Verdict::Succeeded => state.dead_streak = 0,
                    Verdict::Dead | Verdict::Gone => {
                        state.dead_streak += 1;
                        // Three dead deliveries in a row disable the endpoint.
                        if state.dead_streak >= 3 {
                            state.disabled = true;
                        }
                    }
                    Verdict::Retry(_) => {}
                }
            }
            Op::ExpireLeases => {
                sqlx::query(
                    "UPDATE delivery SET lease_until = now() - interval '1 second' WHERE state = 1",
                )
                .execute(pool)
                .await
                .expect("expire");
                let rescued = claim::rescue_expired(pool).await.expect("rescue");
                let expected = model
                    .deliveries
                    .values()
                    .filter(|d| d.status == Status::InFlight)
                    .count();
                assert_eq!(rescued as usize, expected, "rescued");
                for delivery in model.deliveries.values_mut() {
                    if delivery.status == Status::InFlight {
                        delivery.status = Status::Waiting { due: true };
                    }
                }
                for (_, live) in &mut model.claims {
                    *live = false;
                }
            }
            Op::RetriesComeDue => {
                sqlx::query("UPDATE delivery SET run_at = now() - interval '1 second' WHERE state IN (2, 3)")
                    .execute(pool)
                    .await
                    .expect("come due");
                claim::tick(pool).await.expect("tick");
                for delivery in model.deliveries.values_mut() {
                    if delivery.status == (Status::Waiting { due: false }) {
                        delivery.status = Status::Waiting { due: true };
                    }
                }
            }
            Op::Disable(endpoint) | Op::Enable(endpoint) => {
                let enable = matches!(op, Op::Enable(_));
                let (status, body) = self
                    .client
                    .call(
                        Method::PATCH,
                        &format!("/v1/webhooks/{}", self.endpoint_ids[*endpoint]),
                        Some(json!({ "enabled": enable })),
                    )
                    .await;
                let state = &mut model.endpoints[*endpoint];
                if state.deleted {
                    assert_eq!(status, 404, "{body}");
                } else {
                    assert_eq!(status, 200, "{body}");
                    state.disabled = !enable;
                    if enable {
                        state.dead_streak = 0;
                    }
                }
            }
            Op::Delete(endpoint) => {
                let (status, body) = self
                    .client
                    .call(
                        Method::DELETE,
                        &format!("/v1/webhooks/{}", self.endpoint_ids[*endpoint]),
                        None,
                    )
                    .await;
                if model.endpoints[*endpoint].deleted {
                    assert_eq!(status, 404, "{body}");
                    return;
                }
                assert_eq!(status, 204, "{body}");
                model.endpoints[*endpoint].deleted = true;
                // Everything of a deleted endpoint ends dead, in flight included: those
                // attempts' settles are fenced from now on.
                for (id, delivery) in &mut model.deliveries {
                    if delivery.endpoint == *endpoint
                        && !matches!(delivery.status, Status::Finished { .. })
                    {
                        delivery.status = Status::Finished { succeeded: false };
                        for (claimed, live) in &mut model.claims {
                            if claimed.id == *id {
                                *live = false;
                            }
                        }
                    }
                }
            }
            Op::Replay(pick) => {
                let finished: Vec<i64> = model
                    .deliveries
                    .iter()
                    .filter(|(_, d)| {
                        matches!(d.status, Status::Finished { .. })
                            && !model.endpoints[d.endpoint].deleted
                    })
                    .map(|(id, _)| *id)
                    .collect();
                if finished.is_empty() {
                    return;
                }
                let id = finished[pick.index(finished.len())];
                let (status, body) = self
                    .client
                    .call(
                        Method::POST,
                        &format!("/v1/deliveries/{}/retry", ids::encode(Kind::Delivery, id)),
                        None,
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
                model.deliveries.get_mut(&id).expect("known").status =
                    Status::Waiting { due: true };
            }
        }
    }

    /// The database holds exactly the model's deliveries, each in the model's state.
    async fn check(&self, model: &Model, after: &Op) {
        let live: Vec<(i64, i16)> = sqlx::query_as("SELECT id, state FROM delivery ORDER BY id")
            .fetch_all(&self.app.pool)
            .await
            .expect("live");
        let finished: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, status FROM delivery_finished ORDER BY id")
                .fetch_all(&self.app.pool)
                .await
                .expect("finished");
        let mut found: BTreeMap<i64, String> = BTreeMap::new();
        for (id, state) in live {
            let kind = if state == 1 { "in flight" } else { "waiting" };
            assert!(found.insert(id, kind.to_owned()).is_none());
        }
        for (id, status) in finished {
            assert!(
                found.insert(id, status).is_none(),
                "{id} is both live and finished after {after:?}"
            );
        }
        let expected: BTreeMap<i64, String> = model
            .deliveries
            .iter()
            .map(|(id, d)| {
                let kind = match d.status {
                    Status::Waiting { .. } => "waiting",
                    Status::InFlight => "in flight",
                    Status::Finished { succeeded: true } => "succeeded",
                    Status::Finished { succeeded: false } => "dead",
                };
                (*id, kind.to_owned())
            })
            .collect();
        assert_eq!(found, expected, "after {after:?}");
    }

    /// Nothing is stuck: with every surviving endpoint enabled, every lease expired and every
    /// retry due, everything not finished is claimed.
    async fn drain(&mut self, model: &mut Model) {
        for endpoint in 0..ENDPOINTS {
            if !model.endpoints[endpoint].deleted {
                self.apply(model, &Op::Enable(endpoint)).await;
            }
        }
        self.apply(model, &Op::ExpireLeases).await;
        self.apply(model, &Op::RetriesComeDue).await;
        let waiting = model
            .deliveries
            .values()
            .filter(|d| matches!(d.status, Status::Waiting { .. }))
            .count();
        let mut claimed = 0;
        for _ in 0..100 {
            let before = model.claims.len();
            self.apply(model, &Op::Claim { wanted: 50 }).await;
            claimed += model.claims.len() - before;
            if claimed >= waiting {
                break;
            }
        }
        assert_eq!(claimed, waiting, "deliveries left unclaimable");
        self.check(model, &Op::Claim { wanted: 50 }).await;
    }
}

#[tokio::test]
async fn the_queue_matches_a_model_under_random_operations() {
    // Deterministic: a failure names its sequence, and the same sequence runs again.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let sequences = proptest::collection::vec(op(), 30..60);
    for case in 0..16 {
        let ops = sequences
            .new_tree(&mut runner)
            .expect("a sequence")
            .current();
        let mut world = World::new().await;
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            eprintln!("case {case} step {step}: {op:?}");
            world.apply(&mut model, op).await;
            world.check(&model, op).await;
        }
        world.drain(&mut model).await;
        world.app.stop().await;
    }
}
