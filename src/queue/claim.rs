//! Claiming due deliveries: leased, fenced, fair, and at a cost that follows due work.
//!
//! A claim reads only *ready* rows (state 0). Retries wait as *scheduled* rows (state 2) and
//! are promoted by [`tick`] when due, like River's scheduler; rows of disabled endpoints are
//! *parked* (state 3). So a hundred thousand endpoints each holding a retry due in an hour, or a
//! disabled endpoint's backlog, cost a claim nothing (docs/queue.md has the measurements).
//!
//! Unordered deliveries use the fair claim ([`FAIR_CTES`], run fused with the settle by
//! `queue::cycle`): a skip-scan over `delivery_ready` lists endpoints with ready rows,
//! starting after a cursor that rotates across claims, and keeps those with room under their
//! `max_in_flight` and an open rate slot, at most 256 of them. Each gets at most
//! `min(room, rate slots, batch / endpoints + 1)` rows, handed out round robin. Endpoints
//! found disabled or deleted have their ready rows parked or ended (dead, with the reason in
//! the attempt log) on the way.
//!
//! Caps and rate limits hold across instances without counters: a claim locks the
//! `endpoint_queue` rows of the endpoints it takes from (`FOR UPDATE SKIP LOCKED`, so claims
//! never wait on each other) and skips an endpoint whose `claim_seq` moved since its snapshot,
//! because then its in-flight count is stale. The rate limit is a GCRA slot (`next_send_at`)
//! read and advanced by the claim, so nothing ever sleeps holding a worker or a lease; its slots
//! are [`SLOT_SPACING`] intervals apart, so the limit holds where the receiver counts.
//!
//! `max_in_flight` bounds concurrent requests, not throughput: while one dispatcher alone holds
//! an endpoint's in-flight rows (`delivery.leased_by`), the fair claim lets it lease up to
//! [`LEASE_AHEAD`] × `max_in_flight` of them; that dispatcher sends at most `max_in_flight` at
//! once and starts a leased-ahead row the moment a response is read. Once another dispatcher
//! holds one of the endpoint's rows, or the endpoint is rate limited, the room is
//! `max_in_flight` less everything in flight, so the cap holds across instances.
//!
//! `per_ticket` endpoints use FIFO lanes ([`claim_lanes`]), one per `(order_key, endpoint_id)`
//! (the key is a hash, so the endpoint is part of the lane's identity and two tenants' lanes
//! never merge): only the head (lowest id) of a lane is eligible, only while nothing of the lane is in flight or scheduled before it; a unique
//! index makes two in flight impossible. Heads are ranked per endpoint so one statement never
//! exceeds an endpoint's cap or rate, and the walk starts after a rotating cursor so no lane
//! starves. Rows queued behind a lane's scheduled retry are scheduled with it.
//!
//! On a distributed schema (Citus) the same SQL runs one workspace at a time: [`confined`]
//! turns its `/*ws alias*/` markers into filters on the workspace so each statement runs whole
//! on the workspace's shard, the recursive walks are statements of their own ([`walk_in`],
//! [`claim_lanes_in`]), and [`discover`] lists the workspaces with work (docs/scaling.md,
//! "The claim on Citus").
//!
//! This module must never sign, send or know HTTP; it hands rows to the dispatcher.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _, postgres::PgRow};

/// Scheduled retries promoted to ready per [`tick`].
pub const PROMOTE: i64 = 5_000;

/// A claimed delivery with its event.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Delivery key.
    pub id: i64,
    /// Target endpoint.
    pub endpoint_id: i64,
    /// The event.
    pub event_id: i64,
    /// The attempt this claim is (1-based, counts on across replays).
    pub attempt: i32,
    /// Attempts made before the last replay; the retry schedule restarts after them.
    pub attempt_base: i32,
    /// The fencing token of this claim.
    pub lease_id: i64,
    /// The event's workspace.
    pub workspace_id: i64,
    /// The event type.
    pub event_type: String,
    /// When the event happened.
    pub occurred_at: DateTime<Utc>,
    /// When the event was accepted (for end-to-end latency).
    pub accepted_at: DateTime<Utc>,
    /// The raw JSON data object.
    pub data: String,
    /// The claim took all the room the endpoint's `max_in_flight` left: more of its work is
    /// probably waiting for this attempt to be settled, so settle it without lingering.
    pub capped: bool,
    /// The per-ticket lane, for lane claims.
    pub order_key: Option<i64>,
}

impl Claimed {
    /// Reads a claimed row (the columns of [`CLAIMED_COLUMNS`]).
    pub(crate) fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            endpoint_id: row.try_get("endpoint_id")?,
            event_id: row.try_get("event_id")?,
            attempt: row.try_get("attempt")?,
            attempt_base: row.try_get("attempt_base")?,
            lease_id: row.try_get("lease_id")?,
            workspace_id: row.try_get("workspace_id")?,
            event_type: row.try_get("event_type")?,
            occurred_at: row.try_get("occurred_at")?,
            accepted_at: row.try_get("accepted_at")?,
            data: row.try_get("data")?,
            capped: row.try_get("capped")?,
            order_key: row.try_get("order_key")?,
        })
    }
}

/// Ends `ended` rows (of deleted endpoints) dead, with the reason in their attempt log.
macro_rules! ended_ctes {
    () => {
        r"
ended_history AS (
  INSERT INTO delivery_attempt (workspace_id, delivery_id, attempt, endpoint_id, started_at,
                                duration_ms, outcome, error)
  SELECT workspace_id, id, attempt + 1, endpoint_id, now(), 0, 'refused',
         'the endpoint was deleted'
  FROM ended
),
ended_moved AS (
  INSERT INTO delivery_finished (id, workspace_id, endpoint_id, event_id, priority, status, attempts,
                                 last_attempt_at, last_status_code, created_at)
  SELECT id, workspace_id, endpoint_id, event_id, priority, 'dead', attempt + 1, last_attempt_at,
         last_status_code, created_at
  FROM ended
)"
    };
}

/// How many rows of an endpoint one dispatcher may hold leased per `max_in_flight` while no
/// other dispatcher holds any: the ones beyond the cap wait in that dispatcher, which sends
/// at most `max_in_flight` at once, so the next request starts the moment a response is read
/// instead of after the settle's round trip. [`LEASE_AHEAD`] is the same number for Rust.
macro_rules! lease_ahead {
    () => {
        "16"
    };
}

/// See `lease_ahead!`: rows one dispatcher may hold leased per `max_in_flight` of an endpoint.
pub const LEASE_AHEAD: u32 = 16;

/// How far apart a rate limit's slots are, in units of `1/rate`: 2 % more, so that a limit of
/// N/s holds *at the receiver* in every sliding second, not only at the sender. Requests reach
/// the receiver after a latency that varies (measured: up to 6 ms on loopback under load, more
/// behind a load balancer); N + 1 requests spaced this way span 1.02 s, so up to 20 ms of
/// varying latency still cannot put them in one second. [`SLOT_SPACING`] is the same for Rust.
macro_rules! slot_spacing {
    () => {
        "1.02"
    };
}

/// See `slot_spacing!`.
pub const SLOT_SPACING: f64 = 1.02;

/// The time between two requests to an endpoint limited to `rate` per second.
pub fn slot_interval(rate: i32) -> Duration {
    Duration::from_secs_f64(SLOT_SPACING / f64::from(rate.max(1)))
}

/// The first slot a claim may use: the endpoint's next slot, or now less the burst credit
/// (none up to 50/s, so an endpoint set to N/s never gets more than N requests in any
/// second; 20 ms' worth above, so a fast limit is not bounded by how often claims run); now
/// when it never had one. No `CASE` or `coalesce` holds `now()` (Citus refuses that in a
/// statement that writes), and `greatest` skips the NULL slot.
macro_rules! first_slot {
    ($rate:expr, $slot:expr) => {
        concat!(
            "greatest(",
            $slot,
            ", now() - make_interval(secs => CASE WHEN ",
            $slot,
            " IS NOT NULL AND ",
            $rate,
            " > 50 THEN 0.02 ELSE 0 END))"
        )
    };
}

/// How many requests the rate limit allows now: one per slot (`slot_spacing!` / `rate`
/// seconds) since the first slot, at least one when the slot is open; NULL without a limit
/// (so `least` skips it).
macro_rules! rate_slots {
    ($rate:expr, $slot:expr) => {
        concat!(
            "floor(extract(epoch FROM now() - ",
            first_slot!($rate, $slot),
            ") * ",
            $rate,
            " / ",
            slot_spacing!(),
            ")::int + 1"
        )
    };
}

/// The slot after `n` more requests from the first slot `first` (`first_slot!`, computed
/// before the `UPDATE`); NULL without a limit.
macro_rules! next_slot {
    ($rate:expr, $first:expr, $n:expr) => {
        concat!(
            $first,
            " + make_interval(secs => ",
            $n,
            "::float8 * ",
            slot_spacing!(),
            " / ",
            $rate,
            ")"
        )
    };
}

/// The claim's writes, common to the fair and the lane claim: lease the rows of `$rows`
/// (`id`, `workspace_id`) with the lease id `$lease` for `$secs` seconds to dispatcher
/// `$dispatcher`, count them per endpoint, and move each endpoint's `claim_seq` and rate slot
/// on (from `room`). Ends in `claimed`, `per_endpoint` and `paced`.
macro_rules! lease_and_pace {
    ($rows:literal, $lease:literal, $secs:literal, $dispatcher:literal) => {
        concat!(
            "lease AS MATERIALIZED (SELECT ", $lease, "::bigint AS id, now() + make_interval(secs => ", $secs, ") AS until),
claimed AS (
  UPDATE delivery d
  SET state = 1, attempt = d.attempt + 1, lease_until = k.until, lease_id = k.id,
      leased_by = ", $dispatcher, "
  FROM ", $rows, " CROSS JOIN lease k
  WHERE d.id = ", $rows, ".id AND d.workspace_id = ", $rows, ".workspace_id /*ws d*/
  RETURNING d.id, d.workspace_id, d.endpoint_id, d.event_id, d.attempt, d.attempt_base,
            d.lease_id, d.order_key
),
per_endpoint AS MATERIALIZED (SELECT endpoint_id, count(*) AS n FROM claimed GROUP BY endpoint_id),
pace AS MATERIALIZED (
  SELECT c.endpoint_id, r.workspace_id, ",
            next_slot!("r.rate", "r.slot", "c.n"),
            " AS next
  FROM per_endpoint c JOIN room r ON r.endpoint_id = c.endpoint_id
),
paced AS (
  UPDATE endpoint_queue q SET claim_seq = q.claim_seq + 1, next_send_at = p.next
  FROM pace p
  WHERE q.endpoint_id = p.endpoint_id AND q.workspace_id = p.workspace_id /*ws q*/
),"
        )
    };
}

/// The walk over endpoints with ready unordered rows: one index probe per endpoint, starting
/// after the cursor `($19, $14)` (a workspace and an endpoint id). It is recursive, and Citus
/// runs a recursive CTE only alone in a statement that names one workspace, so the
/// distributed claim runs it as a statement of its own ([`walk_in`]).
macro_rules! endpoint_walk {
    () => {
        r"
lane AS (
  (SELECT workspace_id, endpoint_id FROM delivery d
    WHERE state = 0 AND order_key IS NULL AND (workspace_id, endpoint_id) > ($19, $14) AND $12 > 0
    /*ws d*/
    ORDER BY workspace_id, endpoint_id LIMIT 1)
  UNION ALL
  SELECT nxt.workspace_id, nxt.endpoint_id FROM lane
  CROSS JOIN LATERAL (
    SELECT d.workspace_id, d.endpoint_id FROM delivery d
    WHERE d.state = 0 AND d.order_key IS NULL
      AND (d.workspace_id, d.endpoint_id) > (lane.workspace_id, lane.endpoint_id) /*ws d*/
    ORDER BY d.workspace_id, d.endpoint_id LIMIT 1) nxt
),"
    };
}

/// Where the fair claim's walk starts: after this `(workspace_id, endpoint_id)`.
pub type EndpointCursor = (i64, i64);

/// The cursor that starts the fair claim's walk from the first endpoint.
pub const FIRST_ENDPOINT: EndpointCursor = (i64::MIN, i64::MIN);

/// The walk when it is given: workspace `$18`'s endpoints `$19` from [`walk_in`].
pub(crate) const GIVEN_WALK: &str = "
lane AS (SELECT $18::bigint AS workspace_id, unnest($19::bigint[]) AS endpoint_id),";

/// The walk over endpoints, after the cursor `($19, $14)`, for `queue::cycle`.
pub(crate) const ENDPOINT_WALK: &str = endpoint_walk!();

/// The distributed claim's walk, a statement of its own: up to [`WALK`] endpoints of
/// `workspace_id` with ready unordered rows, after endpoint `after`, in id order.
pub async fn walk_in(
    pool: &PgPool,
    workspace_id: i64,
    after: i64,
) -> Result<Vec<i64>, sqlx::Error> {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let statement = STATEMENT.get_or_init(|| {
        let walk = endpoint_walk!()
            .replace("($19, $14)", "($1, $2)")
            .replace("$12 > 0", "true")
            .trim_end_matches(',')
            .to_owned();
        confined(
            &format!("WITH RECURSIVE{walk}\nSELECT endpoint_id FROM lane LIMIT {WALK}"),
            "$1",
            "$3",
        )
    });
    sqlx::query_scalar(statement)
        .bind(workspace_id)
        .bind(after)
        .bind(Utc::now())
        .fetch_all(pool)
        .await
}

/// Confines a queue statement to the workspace bound as `param`: every `/*ws alias*/` marker
/// becomes `AND alias.workspace_id = <param>`, and `now()` becomes the parameter `now`
/// (Citus evaluates no `now()` inside a `CASE` or `coalesce` of a statement that writes, so
/// the instance binds the time). On plain PostgreSQL the markers stay comments (the
/// joins already pair the workspace); on Citus the explicit filter on each table is what makes
/// the statement run whole on the one shard that holds the workspace.
pub(crate) fn confined(sql: &str, param: &str, now: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 256);
    let mut rest = sql;
    while let Some(at) = rest.find("/*ws ") {
        out.push_str(&rest[..at]);
        let marker = &rest[at + 5..];
        let close = marker.find("*/").expect("a closed /*ws*/ marker");
        out.push_str("AND ");
        out.push_str(marker[..close].trim());
        out.push_str(".workspace_id = ");
        out.push_str(param);
        rest = &marker[close + 2..];
    }
    out.push_str(rest);
    out.replace("now()", &format!("{now}::timestamptz"))
}

/// The fair claim's CTEs after the walk (`endpoint_walk!` or [`GIVEN_WALK`]), to follow the
/// settle's in one statement (`queue::cycle`). They read `settled(id, endpoint_id, attempt)`
/// and `endpoints(id, enabled, ...)` from the settle (the attempts it settles free room in
/// the same statement) and bind `$12` (rows wanted), `$13` (lease seconds) and `$15` (the
/// claiming dispatcher's id, which may lease ahead: `lease_ahead!`). They end in `claimed`,
/// `per_endpoint` and `room`. Every statement pairs the workspace on each join, and Citus
/// evaluates no function in an `UPDATE`'s `SET`, so times and the lease are computed first.
pub(crate) const FAIR_CTES: &str = concat!(
    r"
freed AS MATERIALIZED (SELECT endpoint_id, count(*) AS n FROM settled GROUP BY endpoint_id),
busy AS MATERIALIZED (
  SELECT i.endpoint_id, i.n - coalesce(f.n, 0) AS n, i.others
  FROM (SELECT endpoint_id, count(*) AS n,
               count(*) FILTER (WHERE leased_by IS DISTINCT FROM $15) AS others
        FROM delivery b WHERE state = 1 /*ws b*/ GROUP BY endpoint_id) i
  LEFT JOIN freed f ON f.endpoint_id = i.endpoint_id
),
walk AS MATERIALIZED (
  SELECT l.endpoint_id, l.workspace_id,
         coalesce(ep.enabled AND ep.deleted_at IS NULL, false)
           AND NOT EXISTS (SELECT 1 FROM endpoints x WHERE x.id = l.endpoint_id AND NOT x.enabled)
           AS live,
         ep.id IS NULL OR ep.deleted_at IS NOT NULL AS gone,
         lim.leasable - coalesce(b.n, 0) AS room,
         ep.rate_limit_per_second AS rate, q.claim_seq AS seen, q.next_send_at
  FROM lane l
  LEFT JOIN endpoint ep
    ON ep.id = l.endpoint_id AND ep.workspace_id = l.workspace_id /*ws ep*/
  LEFT JOIN endpoint_queue q
    ON q.endpoint_id = l.endpoint_id AND q.workspace_id = l.workspace_id /*ws q*/
  LEFT JOIN busy b ON b.endpoint_id = l.endpoint_id
  -- Lease ahead only while no other dispatcher holds a row of the endpoint, and never for a
  -- rate-limited one (its sends must go out when their slot was claimed).
  CROSS JOIN LATERAL (
    SELECT coalesce(ep.max_in_flight, 0)
           * CASE WHEN coalesce(b.others, 0) = 0 AND ep.rate_limit_per_second IS NULL
                  THEN ",
    lease_ahead!(),
    r" ELSE 1 END AS leasable) lim
  WHERE NOT coalesce(ep.enabled AND ep.deleted_at IS NULL, false)
     OR (lim.leasable > coalesce(b.n, 0)
         AND (q.next_send_at IS NULL OR q.next_send_at <= now()))
  LIMIT 256 -- endpoints with room per claim; the cursor carries the walk on
),
locked AS MATERIALIZED (
  SELECT q.endpoint_id, q.claim_seq FROM endpoint_queue q
  WHERE q.endpoint_id = ANY (ARRAY(SELECT endpoint_id FROM walk WHERE live AND seen IS NOT NULL))
    /*ws q*/
  ORDER BY q.endpoint_id
  FOR UPDATE SKIP LOCKED
),
room AS MATERIALIZED (
  SELECT w.endpoint_id, w.workspace_id, w.rate, w.room,
         -- The first slot this claim may use.
         ",
    first_slot!("w.rate", "w.next_send_at"),
    r" AS slot,
         least(w.room, ",
    rate_slots!("w.rate", "w.next_send_at"),
    r", $12 / count(*) OVER () + 1) AS take
  FROM walk w JOIN locked k ON k.endpoint_id = w.endpoint_id AND k.claim_seq = w.seen
  WHERE w.live
),
picked AS MATERIALIZED (
  SELECT r.endpoint_id, p.id, p.workspace_id, p.priority, p.run_at
  FROM room r
  CROSS JOIN LATERAL (
    SELECT d.id, d.workspace_id, d.priority, d.run_at FROM delivery d
    WHERE d.state = 0 AND d.order_key IS NULL AND d.workspace_id = r.workspace_id
      AND d.endpoint_id = r.endpoint_id /*ws d*/
    ORDER BY d.priority, d.run_at, d.id
    LIMIT greatest(r.take, 0)
    FOR UPDATE SKIP LOCKED) p
),
chosen AS (
  SELECT id, workspace_id FROM (
    SELECT id, workspace_id, priority, run_at,
           row_number() OVER (PARTITION BY endpoint_id ORDER BY priority, run_at, id) AS rn
    FROM picked) x
  ORDER BY rn, priority, run_at, id
  LIMIT $12
),
",
    lease_and_pace!("chosen", "$21", "$13", "$15"),
    r"
tidy AS MATERIALIZED (
  SELECT x.id, x.workspace_id, w.gone FROM walk w
  CROSS JOIN LATERAL (
    SELECT d.id, d.workspace_id FROM delivery d
    WHERE d.state = 0 AND d.order_key IS NULL AND d.workspace_id = w.workspace_id
      AND d.endpoint_id = w.endpoint_id /*ws d*/
    LIMIT 1000 FOR UPDATE SKIP LOCKED) x
  WHERE NOT w.live
),
",
);

/// What the fair claim writes besides the claim on plain PostgreSQL: registers endpoints
/// without an `endpoint_queue` row (rows written by hand; the API registers every endpoint it
/// creates), parks the ready rows of disabled endpoints and ends those of deleted ones.
pub(crate) const FAIR_WRITES: &str = concat!(
    "
registered AS (
  INSERT INTO endpoint_queue (endpoint_id, workspace_id)
  SELECT endpoint_id, workspace_id FROM walk WHERE live AND seen IS NULL
  ON CONFLICT DO NOTHING
),
parked AS (
  UPDATE delivery d SET state = 3 FROM tidy t
  WHERE d.id = t.id AND d.workspace_id = t.workspace_id AND NOT t.gone /*ws d*/
),
ended AS (
  DELETE FROM delivery d USING tidy t
  WHERE d.id = t.id AND d.workspace_id = t.workspace_id AND t.gone /*ws d*/
  RETURNING d.id, d.workspace_id, d.endpoint_id, d.event_id, d.priority, d.attempt,
            d.last_attempt_at, d.last_status_code, d.created_at
),
",
    ended_ctes!()
);

/// [`FAIR_WRITES`] in a statement of one workspace on Citus, where an `INSERT` in a CTE would
/// split the statement: the ready rows of disabled and deleted endpoints are parked (a delete
/// through the API has ended its endpoint's rows already).
pub(crate) const CONFINED_FAIR_WRITES: &str = "
parked AS (
  UPDATE delivery d SET state = 3 FROM tidy t
  WHERE d.id = t.id AND d.workspace_id = t.workspace_id /*ws d*/
)
";

/// The columns every claim returns for a claimed row (joined with its event), from
/// `claimed c`, `per_endpoint p` and `room r`.
pub(crate) const CLAIMED_COLUMNS: &str = "c.id, c.endpoint_id, c.event_id, c.attempt, \
    c.attempt_base, c.lease_id, e.workspace_id, e.event_type, e.occurred_at, \
    e.created_at AS accepted_at, e.data, (p.n >= r.room) AS capped, c.order_key";

/// The walk over the heads of `per_ticket` lanes with ready rows, after the cursor
/// `($7, $3, $5)` (workspace, `order_key`, endpoint). Like `endpoint_walk!`, the distributed
/// claim runs it as a statement of its own.
macro_rules! lane_walk {
    () => {
        r"
head AS (
  (SELECT workspace_id, order_key, id, endpoint_id FROM delivery d
    WHERE state = 0 AND order_key IS NOT NULL
      AND (workspace_id, order_key, endpoint_id) > ($7, $3, $5) AND $1 > 0 /*ws d*/
    ORDER BY workspace_id, order_key, endpoint_id, id LIMIT 1)
  UNION ALL
  SELECT n.workspace_id, n.order_key, n.id, n.endpoint_id FROM head h
  CROSS JOIN LATERAL (
    SELECT d.workspace_id, d.order_key, d.id, d.endpoint_id FROM delivery d
    WHERE d.state = 0 AND d.order_key IS NOT NULL
      AND (d.workspace_id, d.order_key, d.endpoint_id)
          > (h.workspace_id, h.order_key, h.endpoint_id) /*ws d*/
    ORDER BY d.workspace_id, d.order_key, d.endpoint_id, d.id LIMIT 1) n
),"
    };
}

/// The lane heads when given: one workspace's, from the statement before.
const GIVEN_HEADS: &str = "
head AS (
  SELECT $6::bigint AS workspace_id, unnest($8::bigint[]) AS order_key,
         unnest($9::bigint[]) AS id, unnest($10::bigint[]) AS endpoint_id
),";

/// The lane claim after its walk (`lane_walk!` or [`GIVEN_HEADS`]).
const CLAIM_LANES: &str = concat!(
    r"
busy AS MATERIALIZED (
  SELECT endpoint_id, count(*) AS n FROM delivery b WHERE state = 1 /*ws b*/
  GROUP BY endpoint_id
),
walk AS MATERIALIZED (
  SELECT h.order_key, h.id, h.endpoint_id, h.workspace_id,
         coalesce(ep.enabled AND ep.deleted_at IS NULL, false) AS live,
         ep.id IS NULL OR ep.deleted_at IS NOT NULL AS gone,
         coalesce(ep.max_in_flight, 0) - coalesce(b.n, 0) AS room,
         ep.rate_limit_per_second AS rate, q.claim_seq AS seen, q.next_send_at,
         (SELECT s.run_at FROM delivery s
           WHERE s.state = 2 AND s.order_key = h.order_key AND s.endpoint_id = h.endpoint_id
             AND s.workspace_id = h.workspace_id AND s.id < h.id /*ws s*/
           ORDER BY s.order_key, s.endpoint_id, s.id LIMIT 1) AS blocked_until
  FROM head h
  LEFT JOIN endpoint ep
    ON ep.id = h.endpoint_id AND ep.workspace_id = h.workspace_id /*ws ep*/
  LEFT JOIN endpoint_queue q
    ON q.endpoint_id = h.endpoint_id AND q.workspace_id = h.workspace_id /*ws q*/
  LEFT JOIN busy b ON b.endpoint_id = h.endpoint_id
  WHERE NOT EXISTS (SELECT 1 FROM delivery f
                     WHERE f.state = 1 AND f.order_key = h.order_key
                       AND f.endpoint_id = h.endpoint_id AND f.workspace_id = h.workspace_id
                       /*ws f*/)
    -- Still the lane's head: on Citus the heads come from a statement before, and an earlier
    -- row of the lane may be ready again since (a settled retry due at once).
    AND NOT EXISTS (SELECT 1 FROM delivery r
                     WHERE r.state = 0 AND r.order_key = h.order_key
                       AND r.endpoint_id = h.endpoint_id AND r.workspace_id = h.workspace_id
                       AND r.id < h.id /*ws r*/)
    AND (NOT coalesce(ep.enabled AND ep.deleted_at IS NULL, false)
         OR EXISTS (SELECT 1 FROM delivery s
                     WHERE s.state = 2 AND s.order_key = h.order_key
                       AND s.endpoint_id = h.endpoint_id AND s.workspace_id = h.workspace_id
                       AND s.id < h.id /*ws s*/)
         OR (coalesce(ep.max_in_flight, 0) > coalesce(b.n, 0)
             AND (q.next_send_at IS NULL OR q.next_send_at <= now())))
  LIMIT 256
),
locked AS MATERIALIZED (
  SELECT q.endpoint_id, q.claim_seq FROM endpoint_queue q
  WHERE q.endpoint_id = ANY (ARRAY(SELECT endpoint_id FROM walk
                                   WHERE live AND blocked_until IS NULL AND seen IS NOT NULL))
    /*ws q*/
  ORDER BY q.endpoint_id
  FOR UPDATE SKIP LOCKED
),
ranked AS MATERIALIZED (
  SELECT w.id, w.workspace_id, w.order_key, w.endpoint_id, w.room, w.rate, w.next_send_at,
         ",
    rate_slots!("w.rate", "w.next_send_at"),
    r" AS slots,
         row_number() OVER (PARTITION BY w.endpoint_id ORDER BY w.order_key) AS rn
  FROM walk w JOIN locked k ON k.endpoint_id = w.endpoint_id AND k.claim_seq = w.seen
  WHERE w.live AND w.blocked_until IS NULL
),
room AS MATERIALIZED (
  SELECT DISTINCT endpoint_id, workspace_id, rate, room, ",
    first_slot!("rate", "next_send_at"),
    r" AS slot
  FROM ranked
),
eligible AS (
  SELECT id FROM ranked
  WHERE rn <= least(room, slots)
  ORDER BY rn, order_key
  LIMIT $1
),
picked AS MATERIALIZED (
  SELECT d.id, d.workspace_id FROM delivery d
  WHERE d.id = ANY (ARRAY(SELECT id FROM eligible)) AND d.state = 0 /*ws d*/
  FOR UPDATE SKIP LOCKED
),
",
    lease_and_pace!("picked", "$12", "$2", "$4"),
    r"
behind AS MATERIALIZED (
  SELECT d.id, d.workspace_id, w.blocked_until FROM walk w
  JOIN delivery d ON d.order_key = w.order_key AND d.endpoint_id = w.endpoint_id
                 AND d.workspace_id = w.workspace_id AND d.state = 0 /*ws d*/
  WHERE w.live AND w.blocked_until IS NOT NULL
  FOR UPDATE OF d SKIP LOCKED
),
demoted AS (
  UPDATE delivery d SET state = 2, run_at = b.blocked_until FROM behind b
  WHERE d.id = b.id AND d.workspace_id = b.workspace_id /*ws d*/
),
tidy AS MATERIALIZED (
  SELECT d.id, d.workspace_id, w.gone FROM walk w
  JOIN delivery d ON d.order_key = w.order_key AND d.endpoint_id = w.endpoint_id
                 AND d.workspace_id = w.workspace_id AND d.state = 0 /*ws d*/
  WHERE NOT w.live
  FOR UPDATE OF d SKIP LOCKED
),
"
);

/// What the lane claim writes besides the claim on plain PostgreSQL (as [`FAIR_WRITES`]).
const LANE_WRITES: &str = concat!(
    "
registered AS (
  INSERT INTO endpoint_queue (endpoint_id, workspace_id)
  SELECT DISTINCT endpoint_id, workspace_id FROM walk WHERE live AND seen IS NULL
  ON CONFLICT DO NOTHING
),
parked AS (
  UPDATE delivery d SET state = 3 FROM tidy t
  WHERE d.id = t.id AND d.workspace_id = t.workspace_id AND NOT t.gone /*ws d*/
),
ended AS (
  DELETE FROM delivery d USING tidy t
  WHERE d.id = t.id AND d.workspace_id = t.workspace_id AND t.gone /*ws d*/
  RETURNING d.id, d.workspace_id, d.endpoint_id, d.event_id, d.priority, d.attempt,
            d.last_attempt_at, d.last_status_code, d.created_at
),
",
    ended_ctes!()
);

/// [`LANE_WRITES`] in a statement of one workspace on Citus (as [`CONFINED_FAIR_WRITES`]).
const CONFINED_LANE_WRITES: &str = "
parked AS (
  UPDATE delivery d SET state = 3 FROM tidy t
  WHERE d.id = t.id AND d.workspace_id = t.workspace_id /*ws d*/
)";

/// The lane claim's result: the claimed rows with their events.
const LANE_TAIL: &str = "
SELECT c.id, c.endpoint_id, c.event_id, c.attempt, c.attempt_base, c.lease_id, e.workspace_id,
       e.event_type, e.occurred_at, e.created_at AS accepted_at, e.data,
       (p.n >= r.room) AS capped, c.order_key
FROM claimed c
JOIN event e ON e.id = c.event_id AND e.workspace_id = c.workspace_id /*ws e*/
JOIN per_endpoint p ON p.endpoint_id = c.endpoint_id
JOIN room r ON r.endpoint_id = c.endpoint_id
";

/// A fresh lease id, the fencing token of one claim statement: the time in milliseconds and a
/// counter of this process. Two claims of one row are a lease apart (its expiry, or a settle or
/// release in between), so their tokens never meet; drawn here rather than from a sequence,
/// as Citus runs a volatile function in a claim only by splitting the statement.
pub fn lease_token() -> i64 {
    static COUNTER: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let counter = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xF_FFFF;
    (Utc::now().timestamp_millis() << 20) | counter
}

/// Where a walk over lanes starts: after this lane, `(workspace_id, order_key, endpoint_id)`.
pub type LaneCursor = (i64, i64, i64);

/// The cursor that starts a walk from the first lane.
pub const FIRST_LANE: LaneCursor = (i64::MIN, i64::MIN, i64::MIN);

/// How many lane heads or endpoints one distributed claim statement considers.
pub const WALK: usize = 256;

/// Claims up to `limit` due heads of `per_ticket` lanes, leased for `lease_seconds`, walking
/// lanes after `cursor` ([`FIRST_LANE`] to start from the first).
pub async fn claim_lanes(
    pool: &PgPool,
    limit: usize,
    lease_seconds: f64,
    cursor: LaneCursor,
    dispatcher: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let statement = STATEMENT.get_or_init(|| {
        format!(
            "WITH RECURSIVE{}{CLAIM_LANES}{LANE_WRITES}{LANE_TAIL}",
            lane_walk!()
        )
    });
    let args = LaneArgs {
        limit,
        lease_seconds,
        cursor,
        dispatcher,
        heads: &[],
    };
    let claimed = args.bind(statement).fetch_all(pool).await;
    lane_claims(claimed)
}

/// [`claim_lanes`] for one workspace, the way Citus runs it (the walk first, as a statement of
/// its own, then the claim on the heads it found), with the walk starting after `after`
/// (`(order_key, endpoint_id)`). Also returns where the next walk of this workspace starts:
/// `None` once the walk reached its last lane.
pub async fn claim_lanes_in(
    pool: &PgPool,
    workspace_id: i64,
    limit: usize,
    lease_seconds: f64,
    after: (i64, i64),
    dispatcher: i64,
) -> Result<(Vec<Claimed>, Option<(i64, i64)>), sqlx::Error> {
    static WALK_STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static CLAIM_STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let walk = WALK_STATEMENT.get_or_init(|| {
        confined(
            &format!(
                "WITH RECURSIVE{}\nSELECT order_key, id, endpoint_id FROM head LIMIT {WALK}",
                lane_walk!().trim_end_matches(',')
            ),
            "$6",
            "$11",
        )
    });
    let mut args = LaneArgs {
        limit,
        lease_seconds,
        cursor: (workspace_id, after.0, after.1),
        dispatcher,
        heads: &[],
    };
    let heads: Vec<(i64, i64, i64)> = args
        .bind(walk)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let next = (heads.len() >= WALK)
        .then(|| heads.last().map(|&(key, _, endpoint)| (key, endpoint)))
        .flatten();
    if heads.is_empty() {
        return Ok((Vec::new(), next));
    }
    let statement = CLAIM_STATEMENT.get_or_init(|| {
        confined(
            &format!("WITH{GIVEN_HEADS}{CLAIM_LANES}{CONFINED_LANE_WRITES}{LANE_TAIL}"),
            "$6",
            "$11",
        )
    });
    args.heads = &heads;
    let claimed = args.bind(statement).fetch_all(pool).await;
    Ok((lane_claims(claimed)?, next))
}

/// The lane claim's parameters, `$1`..`$12`, bound in one place for its statements: rows
/// wanted, lease seconds, the cursor's `order_key`, the dispatcher, the cursor's endpoint, the
/// workspace (`$6`, for [`confined`]) and the cursor's, the given heads, the time, the lease.
struct LaneArgs<'a> {
    limit: usize,
    lease_seconds: f64,
    cursor: LaneCursor,
    dispatcher: i64,
    heads: &'a [(i64, i64, i64)],
}

impl LaneArgs<'_> {
    fn bind<'q>(
        &self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql)
            .bind(i64::try_from(self.limit).unwrap_or(i64::MAX))
            .bind(self.lease_seconds)
            .bind(self.cursor.1)
            .bind(self.dispatcher)
            .bind(self.cursor.2)
            .bind(self.cursor.0)
            .bind(self.cursor.0)
            .bind(self.heads.iter().map(|h| h.0).collect::<Vec<_>>())
            .bind(self.heads.iter().map(|h| h.1).collect::<Vec<_>>())
            .bind(self.heads.iter().map(|h| h.2).collect::<Vec<_>>())
            .bind(Utc::now())
            .bind(lease_token())
    }
}

fn lane_claims(claimed: Result<Vec<PgRow>, sqlx::Error>) -> Result<Vec<Claimed>, sqlx::Error> {
    match claimed {
        Ok(rows) => rows.iter().map(Claimed::from_row).collect(),
        // Another claimer took a lane head at the same instant: the unique index refused the
        // second in-flight row. Nothing was claimed; the next cycle tries again.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("23505") => {
            Ok(Vec::new())
        }
        Err(error) => Err(error),
    }
}

/// What a [`tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Scheduled retries made ready.
    pub promoted: u64,
    /// The next instant something becomes claimable without a wake-up: a scheduled retry's
    /// due time or a rate-limited endpoint's next slot. `None`: nothing is scheduled.
    pub next_at: Option<DateTime<Utc>>,
    /// Whether any ready row belongs to a `per_ticket` lane (the lane claim is skipped
    /// otherwise).
    pub lanes: bool,
}

/// Promotes due scheduled retries to ready (at most [`PROMOTE`]) and reads when the next one
/// is due. Every index read is one probe into a partial index; safe in every instance.
pub async fn tick(pool: &PgPool) -> Result<Tick, sqlx::Error> {
    let (promoted, next_at, lanes): (i64, Option<DateTime<Utc>>, bool) = sqlx::query_as(
        r"
WITH promoted AS (
  UPDATE delivery d SET state = 0
  WHERE d.id = ANY (ARRAY(SELECT id FROM delivery WHERE state = 2 AND run_at <= now()
                          ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED))
  RETURNING 1
)
SELECT (SELECT count(*) FROM promoted),
       least((SELECT min(run_at) FROM delivery WHERE state = 2 AND run_at > now()),
             (SELECT min(next_send_at) FROM endpoint_queue WHERE next_send_at > now())),
       EXISTS (SELECT 1 FROM delivery WHERE state = 0 AND order_key IS NOT NULL)
",
    )
    .bind(PROMOTE)
    .fetch_one(pool)
    .await?;
    let promoted = u64::try_from(promoted).unwrap_or_default();
    Ok(Tick {
        promoted,
        // More were due than one tick promotes: the next tick is due at once.
        next_at: if promoted >= PROMOTE as u64 {
            Some(Utc::now())
        } else {
            next_at
        },
        lanes,
    })
}

/// A workspace with claimable work, from [`discover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyWorkspace {
    /// The workspace.
    pub workspace_id: i64,
    /// Some of its ready rows belong to `per_ticket` lanes.
    pub lanes: bool,
}

/// How many workspaces one [`discover`] lists.
pub const DISCOVER: i64 = 1_000;

/// The distributed tick: reads, without locks and across shards, which workspaces have ready
/// rows or due retries (those with the oldest work first, at most [`DISCOVER`]), promotes
/// each one's due retries in a statement of its own on its shard, and reads when the next
/// retry or rate slot is due. The read scans the partial indexes of ready and due rows,
/// so it costs what is due, never the table or the number of endpoints.
pub async fn discover(pool: &PgPool) -> Result<(Tick, Vec<ReadyWorkspace>), sqlx::Error> {
    let found: Vec<(i64, bool, bool)> = sqlx::query_as(
        "SELECT workspace_id, bool_or(state = 2) AS due, \
                bool_or(state = 0 AND order_key IS NOT NULL) AS lanes \
         FROM delivery WHERE state = 0 OR (state = 2 AND run_at <= now()) \
         GROUP BY workspace_id ORDER BY min(run_at), workspace_id LIMIT $1",
    )
    .bind(DISCOVER)
    .fetch_all(pool)
    .await?;
    let mut promoted = 0;
    for &(workspace_id, due, _) in &found {
        if due {
            promoted += promote_in(pool, workspace_id).await?;
        }
    }
    let next_at: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(run_at) FROM delivery WHERE state = 2 AND run_at > now()")
            .fetch_one(pool)
            .await?;
    let next_slot: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(next_send_at) FROM endpoint_queue WHERE next_send_at > now()",
    )
    .fetch_one(pool)
    .await?;
    let ready = found
        .iter()
        .map(|&(workspace_id, _, lanes)| ReadyWorkspace {
            workspace_id,
            lanes,
        })
        .collect();
    let tick = Tick {
        promoted,
        next_at: if promoted >= PROMOTE as u64 {
            Some(Utc::now())
        } else {
            next_at.into_iter().chain(next_slot).min()
        },
        lanes: found.iter().any(|w| w.2),
    };
    Ok((tick, ready))
}

/// Promotes one workspace's due retries (at most [`PROMOTE`]), on its shard.
async fn promote_in(pool: &PgPool, workspace_id: i64) -> Result<u64, sqlx::Error> {
    let promoted = sqlx::query(
        "UPDATE delivery d SET state = 0 \
         WHERE d.workspace_id = $2 AND d.id = ANY (ARRAY( \
           SELECT id FROM delivery WHERE workspace_id = $2 AND state = 2 AND run_at <= now() \
           ORDER BY run_at LIMIT $1 FOR UPDATE SKIP LOCKED))",
    )
    .bind(PROMOTE)
    .bind(workspace_id)
    .execute(pool)
    .await?;
    Ok(promoted.rows_affected())
}

/// Gives back claimed rows that were never attempted (a stopping dispatcher's leased-ahead
/// rows): ready again at once, their attempt not counted. Rows whose lease moved on are left.
/// `rows` are `(workspace_id, id, lease_id)`; each workspace's are given back in one
/// statement on its shard.
pub async fn release(pool: &PgPool, rows: &[(i64, i64, i64)]) -> Result<u64, sqlx::Error> {
    let mut rows = rows.to_vec();
    rows.sort_unstable();
    let mut released = 0;
    for group in rows.chunk_by(|a, b| a.0 == b.0) {
        released += sqlx::query(
            "UPDATE delivery d SET state = 0, attempt = d.attempt - 1, lease_until = NULL, \
                    lease_id = NULL, leased_by = NULL \
             FROM unnest($1::bigint[], $2::bigint[]) AS r(id, lease_id) \
             WHERE d.workspace_id = $3 AND d.id = r.id AND d.lease_id = r.lease_id \
               AND d.state = 1",
        )
        .bind(group.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(group.iter().map(|r| r.2).collect::<Vec<_>>())
        .bind(group[0].0)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(released)
}

/// Puts deliveries whose lease expired (their worker died) back to ready. Safe to run from
/// every instance. Returns how many were rescued.
pub async fn rescue_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE delivery d SET state = 0, run_at = now(), lease_until = NULL, lease_id = NULL \
         WHERE d.id = ANY (ARRAY(SELECT id FROM delivery WHERE state = 1 AND lease_until < now() \
                                 ORDER BY lease_until LIMIT 1000 FOR UPDATE SKIP LOCKED))",
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// [`rescue_expired`] the way Citus runs it: a lock-free read across shards of the workspaces
/// with expired leases, then one statement per workspace on its shard.
pub async fn rescue_expired_by_workspace(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let workspaces: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT workspace_id FROM delivery WHERE state = 1 AND lease_until < now() \
         LIMIT $1",
    )
    .bind(DISCOVER)
    .fetch_all(pool)
    .await?;
    let mut rescued = 0;
    for workspace_id in workspaces {
        rescued += sqlx::query(
            "UPDATE delivery d SET state = 0, run_at = $2, lease_until = NULL, lease_id = NULL \
             WHERE d.workspace_id = $1 AND d.id = ANY (ARRAY( \
               SELECT id FROM delivery WHERE workspace_id = $1 AND state = 1 \
                 AND lease_until < now() ORDER BY lease_until LIMIT 1000 FOR UPDATE SKIP LOCKED))",
        )
        .bind(workspace_id)
        .bind(Utc::now())
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(rescued)
}

/// Parks an endpoint's ready rows (it was disabled). Scheduled rows are parked when they come
/// due, and any row the claim meets of a disabled endpoint, so nothing is missed.
pub async fn park(
    conn: &mut sqlx::PgConnection,
    workspace_id: i64,
    endpoint_id: i64,
) -> Result<u64, sqlx::Error> {
    let parked = sqlx::query(
        "UPDATE delivery SET state = 3 \
         WHERE workspace_id = $2 AND endpoint_id = $1 AND state = 0 AND order_key IS NULL",
    )
    .bind(endpoint_id)
    .bind(workspace_id)
    .execute(conn)
    .await?;
    Ok(parked.rows_affected())
}

/// Re-keys an endpoint's waiting rows after its `ordering` changed: with `per_ticket` they
/// join their ticket's lane (FIFO by id, as new rows do), with `none` they leave it. Rows in
/// flight keep their key and finish as they were claimed.
pub async fn reorder(
    conn: &mut sqlx::PgConnection,
    workspace_id: i64,
    endpoint_id: i64,
    per_ticket: bool,
) -> Result<u64, sqlx::Error> {
    let rekeyed = sqlx::query(
        "UPDATE delivery d \
         SET order_key = CASE WHEN $2 THEN deskhook_lane_key(d.endpoint_id, e.ticket_key) END \
         FROM event e \
         WHERE d.workspace_id = $3 AND d.endpoint_id = $1 AND d.state <> 1 \
           AND e.workspace_id = d.workspace_id AND e.id = d.event_id \
           AND d.order_key IS DISTINCT FROM \
               (CASE WHEN $2 THEN deskhook_lane_key(d.endpoint_id, e.ticket_key) END)",
    )
    .bind(endpoint_id)
    .bind(per_ticket)
    .bind(workspace_id)
    .execute(conn)
    .await?;
    Ok(rekeyed.rows_affected())
}

/// Brings an endpoint's parked rows back (it was enabled): ready when due, else scheduled.
pub async fn unpark(
    conn: &mut sqlx::PgConnection,
    workspace_id: i64,
    endpoint_id: i64,
) -> Result<u64, sqlx::Error> {
    // The time bound, not now(): Citus evaluates no stable function inside a CASE.
    let unparked = sqlx::query(
        "UPDATE delivery SET state = CASE WHEN run_at <= $3 THEN 0 ELSE 2 END \
         WHERE workspace_id = $2 AND endpoint_id = $1 AND state = 3",
    )
    .bind(endpoint_id)
    .bind(workspace_id)
    .bind(Utc::now())
    .execute(conn)
    .await?;
    Ok(unparked.rows_affected())
}

/// Ends every row of a deleted endpoint dead, with the reason in its attempt log, in flight
/// ones included: a settle whose snapshot predates the delete would otherwise reschedule its
/// row after this ran and leave it waiting for an endpoint that is gone. Deleting the row
/// serialises with that settle (this waits on its row lock, or the settle finds the row gone
/// and is fenced), so nothing of the endpoint is left whichever commits first.
pub async fn end_deleted(
    conn: &mut sqlx::PgConnection,
    workspace_id: i64,
    endpoint_id: i64,
) -> Result<u64, sqlx::Error> {
    let ended: i64 = sqlx::query_scalar(concat!(
        r"
WITH ended AS (
  DELETE FROM delivery d WHERE d.workspace_id = $2 AND d.endpoint_id = $1
  RETURNING d.id, d.workspace_id, d.endpoint_id, d.event_id, d.priority, d.attempt,
            d.last_attempt_at, d.last_status_code, d.created_at
),
",
        ended_ctes!(),
        "
SELECT count(*) FROM ended"
    ))
    .bind(endpoint_id)
    .bind(workspace_id)
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(ended).unwrap_or_default())
}

/// Registers an endpoint with the claim (its `endpoint_queue` row).
pub async fn register(
    conn: &mut sqlx::PgConnection,
    workspace_id: i64,
    endpoint_id: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO endpoint_queue (endpoint_id, workspace_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(endpoint_id)
    .bind(workspace_id)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_and_rust_slot_spacing_agree() {
        assert_eq!(slot_spacing!().parse::<f64>(), Ok(SLOT_SPACING));
        assert_eq!(slot_interval(1), Duration::from_millis(1020));
        assert_eq!(slot_interval(0), slot_interval(1));
    }
}
