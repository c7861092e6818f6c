//! The SLA SQL: `sla_calendar` and `sla_policy` (CRUD, reapply), `sla_clock` (kept in step
//! with each ticket change by [`sync`], shown on the ticket by [`views`], and fired by the
//! timer through [`fire_due`]).
//!
//! [`sync`] runs inside the ticket mutation's transaction, after the ticket row is locked and
//! changed, and locks the ticket's clocks; [`fire_due`] claims due clocks with `SKIP LOCKED`
//! and never locks tickets, so the two never wait on each other in a cycle. Must never emit
//! an SLA event except through [`fire_due`], whose dedupe key makes a repeat a duplicate.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::{
    Metric,
    calendar::{Calendar, CalendarSpec, Counting, Holiday},
    clock::{Clock, ClockState, Firing, TargetSpec},
    policy::{self, Facts, MatchSpec, PauseStatuses, Policy, PolicyInput, Settings},
    signal,
};
use crate::{
    Helpdesk, TicketError,
    ids::{Kind, encode},
    outbox::{EventSource, Outbox, OutboxEvent},
    ticket::{Priority, Status, Ticket, TicketRef, store as tickets},
    validate::{Problems, serialisation_failed},
};

// ---------------------------------------------------------------------------------------------
// Calendars
// ---------------------------------------------------------------------------------------------

/// A calendar as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalendarView {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `cal_…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// IANA time zone.
    pub timezone: String,
    /// Weekly open intervals.
    pub weekly: BTreeMap<String, Vec<[String; 2]>>,
    /// Dates without open time.
    pub holidays: Vec<Holiday>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A calendar to create, or the fields of one to change (absent fields are kept).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarInput {
    /// Read-only; accepted and ignored.
    #[serde(default)]
    pub id: Option<Value>,
    /// Name (required on create).
    pub name: Option<String>,
    /// IANA time zone (required on create).
    pub timezone: Option<String>,
    /// Weekly open intervals (required on create).
    pub weekly: Option<BTreeMap<String, Vec<[String; 2]>>>,
    /// Holidays.
    pub holidays: Option<Vec<Holiday>>,
    /// Read-only.
    #[serde(default)]
    pub created_at: Option<Value>,
    /// Read-only.
    #[serde(default)]
    pub updated_at: Option<Value>,
}

#[derive(sqlx::FromRow)]
struct CalendarRow {
    id: i64,
    name: String,
    timezone: String,
    weekly: Value,
    holidays: Value,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl CalendarRow {
    fn spec(&self) -> CalendarSpec {
        CalendarSpec {
            timezone: self.timezone.clone(),
            weekly: serde_json::from_value(self.weekly.clone()).unwrap_or_default(),
            holidays: serde_json::from_value(self.holidays.clone()).unwrap_or_default(),
        }
    }

    fn view(self) -> CalendarView {
        let spec = self.spec();
        CalendarView {
            key: self.id,
            id: encode(Kind::Calendar, self.id),
            name: self.name,
            timezone: spec.timezone,
            weekly: spec.weekly,
            holidays: spec.holidays,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

const CALENDAR_COLUMNS: &str = "id, name, timezone, weekly, holidays, created_at, updated_at";

/// Validates a whole calendar; returns its name and spec.
fn check_calendar(
    name: Option<&str>,
    spec: &CalendarSpec,
    problems: &mut Problems,
) -> Option<String> {
    let name = problems.check(crate::validate::required_text(
        "name",
        name.unwrap_or_default(),
        200,
    ));
    spec.check(problems, "");
    name
}

async fn load_calendars(
    conn: &mut PgConnection,
    workspace_id: i64,
    keys: &[i64],
) -> Result<HashMap<i64, Calendar>, TicketError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<CalendarRow> = sqlx::query_as(&format!(
        "SELECT {CALENDAR_COLUMNS} FROM sla_calendar WHERE workspace_id = $1 AND id = ANY($2)"
    ))
    .bind(workspace_id)
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| row.spec().build().map(|cal| (row.id, cal)))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct PolicyRow {
    id: i64,
    name: String,
    description: Option<String>,
    position: i32,
    active: bool,
    #[sqlx(rename = "match")]
    match_spec: Value,
    calendar_id: Option<i64>,
    targets: Value,
    pause_statuses: Value,
    settings: Value,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<PolicyRow> for Policy {
    fn from(row: PolicyRow) -> Self {
        Self {
            key: row.id,
            id: encode(Kind::SlaPolicy, row.id),
            name: row.name,
            description: row.description,
            position: row.position,
            active: row.active,
            match_spec: serde_json::from_value(row.match_spec).unwrap_or_default(),
            calendar_id: row.calendar_id.map(|key| encode(Kind::Calendar, key)),
            calendar_key: row.calendar_id,
            targets: serde_json::from_value(row.targets).unwrap_or_default(),
            pause_statuses: serde_json::from_value(row.pause_statuses).unwrap_or_default(),
            settings: serde_json::from_value(row.settings).unwrap_or_default(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const POLICY_COLUMNS: &str = "id, name, description, position, active, match, calendar_id, \
     targets, pause_statuses, settings, version, created_at, updated_at";

async fn active_policies(
    conn: &mut PgConnection,
    workspace_id: i64,
) -> Result<Vec<Policy>, TicketError> {
    let rows: Vec<PolicyRow> = sqlx::query_as(&format!(
        "SELECT {POLICY_COLUMNS} FROM sla_policy WHERE workspace_id = $1 AND active \
         ORDER BY position, id"
    ))
    .bind(workspace_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

fn to_json<T: Serialize>(value: &T) -> Result<Value, TicketError> {
    serde_json::to_value(value).map_err(serialisation_failed)
}

/// A policy with every field decided, ready to store.
struct PolicyPlan {
    name: String,
    description: Option<String>,
    position: Option<i32>,
    active: bool,
    match_spec: MatchSpec,
    calendar: Option<i64>,
    targets: Vec<policy::Target>,
    pause_statuses: PauseStatuses,
    settings: Settings,
}

impl PolicyPlan {
    /// `input` over `base` (a create starts from defaults), validated as a whole.
    async fn new(
        conn: &mut PgConnection,
        workspace_id: i64,
        base: Option<Policy>,
        input: PolicyInput,
    ) -> Result<Self, TicketError> {
        let mut problems = Problems::default();
        let calendar = match input.calendar_id {
            Some(Some(id)) => match crate::ids::decode(Kind::Calendar, id.trim()) {
                Some(key) => Some(key),
                None => {
                    problems.add("calendar_id", "must be an id like cal_…");
                    None
                }
            },
            Some(None) => None,
            None => base.as_ref().and_then(|b| b.calendar_key),
        };
        if let Some(key) = calendar {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM sla_calendar WHERE workspace_id = $1 AND id = $2",
            )
            .bind(workspace_id)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
            if found.is_none() {
                problems.add("calendar_id", "is not a calendar of this workspace");
            }
        }
        let plan = Self {
            name: input
                .name
                .or_else(|| base.as_ref().map(|b| b.name.clone()))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            description: match input.description {
                Some(value) => value.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()),
                None => base.as_ref().and_then(|b| b.description.clone()),
            },
            position: input.position.or(base.as_ref().map(|b| b.position)),
            active: input
                .active
                .or(base.as_ref().map(|b| b.active))
                .unwrap_or(true),
            match_spec: input
                .match_spec
                .or_else(|| base.as_ref().map(|b| b.match_spec.clone()))
                .unwrap_or_default(),
            calendar,
            targets: input
                .targets
                .or_else(|| base.as_ref().map(|b| b.targets.clone()))
                .unwrap_or_default(),
            pause_statuses: input
                .pause_statuses
                .or_else(|| base.as_ref().map(|b| b.pause_statuses.clone()))
                .unwrap_or_default(),
            settings: input
                .settings
                .or(base.as_ref().map(|b| b.settings))
                .unwrap_or_default(),
        };
        policy::check(&mut problems, &plan.name, &plan.match_spec, &plan.targets);
        if plan
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 2000)
        {
            problems.add("description", "must be at most 2000 characters");
        }
        problems.finish()?;
        Ok(plan)
    }
}

// ---------------------------------------------------------------------------------------------
// Clocks
// ---------------------------------------------------------------------------------------------

const CLOCK_COLUMNS: &str = "id, ticket_id, metric, instance, policy_id, \
     policy_version, calendar_id, target_ms, warn_ms, business_hours, started_at, elapsed_ms, \
     running_since, due_at, at_risk_at, state, at_risk_emitted_at, breached_at, fulfilled_at";

#[derive(sqlx::FromRow)]
struct ClockRow {
    id: i64,
    ticket_id: i64,
    metric: String,
    instance: i32,
    policy_id: i64,
    policy_version: i32,
    calendar_id: Option<i64>,
    target_ms: i64,
    warn_ms: i64,
    business_hours: bool,
    started_at: DateTime<Utc>,
    elapsed_ms: i64,
    running_since: Option<DateTime<Utc>>,
    due_at: Option<DateTime<Utc>>,
    at_risk_at: Option<DateTime<Utc>>,
    state: String,
    at_risk_emitted_at: Option<DateTime<Utc>>,
    breached_at: Option<DateTime<Utc>>,
    fulfilled_at: Option<DateTime<Utc>>,
}

impl ClockRow {
    fn clock(&self) -> Clock {
        Clock {
            key: Some(self.id),
            metric: Metric::parse(&self.metric).unwrap_or(Metric::Resolution),
            instance: self.instance,
            spec: TargetSpec {
                policy_id: self.policy_id,
                policy_version: self.policy_version,
                calendar_id: self.calendar_id,
                target: Duration::milliseconds(self.target_ms),
                warn: Duration::milliseconds(self.warn_ms),
                business_hours: self.business_hours,
            },
            started_at: self.started_at,
            elapsed: Duration::milliseconds(self.elapsed_ms),
            running_since: self.running_since,
            due_at: self.due_at,
            at_risk_at: self.at_risk_at,
            state: ClockState::parse(&self.state).unwrap_or(ClockState::Cancelled),
            at_risk_emitted_at: self.at_risk_emitted_at,
            breached_at: self.breached_at,
            fulfilled_at: self.fulfilled_at,
        }
    }
}

/// Writes a clock (insert when new, else update); returns its key.
async fn save(
    conn: &mut PgConnection,
    workspace_id: i64,
    ticket_key: i64,
    clock: &Clock,
) -> Result<i64, TicketError> {
    let sql = if clock.key.is_some() {
        "UPDATE sla_clock SET policy_id = $4, policy_version = $5, calendar_id = $6, \
         target_ms = $7, warn_ms = $8, business_hours = $9, started_at = $10, elapsed_ms = $11, \
         running_since = $12, due_at = $13, at_risk_at = $14, state = $15, \
         at_risk_emitted_at = $16, breached_at = $17, fulfilled_at = $18, next_at = $19, \
         updated_at = now() WHERE workspace_id = $1 AND id = $20 RETURNING id"
    } else {
        "INSERT INTO sla_clock (workspace_id, ticket_id, metric, instance, policy_id, \
         policy_version, calendar_id, target_ms, warn_ms, business_hours, started_at, \
         elapsed_ms, running_since, due_at, at_risk_at, state, at_risk_emitted_at, breached_at, \
         fulfilled_at, next_at) \
         VALUES ($1, $2, $3, $21, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
         $17, $18, $19) RETURNING id"
    };
    let query = sqlx::query_scalar::<_, i64>(sql)
        .bind(workspace_id)
        .bind(ticket_key)
        .bind(clock.metric.as_str())
        .bind(clock.spec.policy_id)
        .bind(clock.spec.policy_version)
        .bind(clock.spec.calendar_id)
        .bind(clock.spec.target.num_milliseconds())
        .bind(clock.spec.warn.num_milliseconds())
        .bind(clock.spec.business_hours)
        .bind(clock.started_at)
        .bind(clock.elapsed.num_milliseconds().max(0))
        .bind(clock.running_since)
        .bind(clock.due_at)
        .bind(clock.at_risk_at)
        .bind(clock.state.as_str())
        .bind(clock.at_risk_emitted_at)
        .bind(clock.breached_at)
        .bind(clock.fulfilled_at)
        .bind(clock.next_at())
        .bind(clock.key.unwrap_or_default())
        .bind(clock.instance);
    Ok(query.fetch_one(&mut *conn).await?)
}

/// What happened to a ticket, as far as its clocks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Created, changed, restored or deleted: the clocks follow the ticket's state.
    Ticket,
    /// As `Ticket`, and every open clock's deadline is recomputed (a calendar changed, or a
    /// policy is reapplied).
    Recompute,
    /// A message was added.
    Message {
        /// Written by an agent (else by the customer).
        agent: bool,
        /// A public reply (else an internal note).
        public: bool,
        /// When.
        at: DateTime<Utc>,
    },
}

#[derive(sqlx::FromRow)]
struct FactsRow {
    status: String,
    priority: String,
    source: String,
    group_id: Option<i64>,
    custom_fields: Value,
    created_at: DateTime<Utc>,
    created_by_type: String,
    first_responded_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    customer_email: Option<String>,
    customer_company: Option<String>,
    tags: Vec<String>,
}

fn counting<'a>(spec: &TargetSpec, calendars: &'a HashMap<i64, Calendar>) -> Counting<'a> {
    match spec.calendar_id.and_then(|key| calendars.get(&key)) {
        Some(calendar) if spec.business_hours => Counting::Business(calendar),
        _ => Counting::Wall,
    }
}

/// Brings a ticket's clocks in step with the ticket as it now is (inside the mutation's
/// transaction, after the ticket row is locked and changed). Returns the earliest instant a
/// changed clock now falls due at, for [`signal::poke`] after the commit.
pub(crate) async fn sync(
    conn: &mut PgConnection,
    workspace_id: i64,
    ticket_key: i64,
    change: Change,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, TicketError> {
    let rows: Vec<ClockRow> = sqlx::query_as(&format!(
        "SELECT {CLOCK_COLUMNS} FROM sla_clock WHERE workspace_id = $2 AND ticket_id = $1 \
         ORDER BY metric, instance FOR UPDATE"
    ))
    .bind(ticket_key)
    .bind(workspace_id)
    .fetch_all(&mut *conn)
    .await?;
    let policies = active_policies(conn, workspace_id).await?;
    if rows.is_empty() && policies.is_empty() {
        return Ok(None);
    }
    let facts: Option<FactsRow> = sqlx::query_as(
        "SELECT t.status, t.priority, t.source, t.group_id, t.custom_fields, t.created_at, \
         t.created_by_type, t.first_responded_at, t.deleted_at, \
         c.email AS customer_email, c.company AS customer_company, \
         coalesce((SELECT array_agg(tg.name) FROM ticket_tag tt JOIN tag tg ON tg.workspace_id = tt.workspace_id AND tg.id = tt.tag_id \
                   WHERE tt.workspace_id = t.workspace_id AND tt.ticket_id = t.id), '{}') AS tags \
         FROM ticket t LEFT JOIN customer c ON c.workspace_id = t.workspace_id AND c.id = t.requester_id \
         WHERE t.workspace_id = $1 AND t.id = $2",
    )
    .bind(workspace_id)
    .bind(ticket_key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(facts) = facts else {
        return Ok(None);
    };
    let status = Status::parse(&facts.status).unwrap_or(Status::Open);
    let priority = Priority::parse(&facts.priority).unwrap_or(Priority::Normal);
    let dead = facts.deleted_at.is_some() || status == Status::Spam;
    let terminal = status.is_terminal();
    let matcher = Facts {
        priority: Some(priority),
        tags: facts.tags.clone(),
        source: facts.source.clone(),
        group_id: facts.group_id,
        customer_email: facts.customer_email.clone(),
        customer_company: facts.customer_company.clone(),
        custom_fields: facts.custom_fields.clone(),
    };
    let policy = if dead {
        None
    } else {
        policies.iter().find(|p| matcher.matches(&p.match_spec))
    };
    let mut calendar_keys: Vec<i64> = rows.iter().filter_map(|r| r.calendar_id).collect();
    calendar_keys.extend(policy.and_then(|p| p.calendar_key));
    calendar_keys.sort_unstable();
    calendar_keys.dedup();
    let calendars = load_calendars(conn, workspace_id, &calendar_keys).await?;
    let spec_for = |metric: Metric| {
        let policy = policy?;
        let target = policy.target(metric, priority)?;
        Some(TargetSpec {
            policy_id: policy.key,
            policy_version: policy.version,
            calendar_id: policy.calendar_key,
            target: target.duration(),
            warn: target.warn(),
            business_hours: target.business_hours,
        })
    };
    let pauses = |metric: Metric| policy.is_some_and(|p| p.pause_statuses.pauses(metric, status));

    let original: Vec<Clock> = rows.iter().map(ClockRow::clock).collect();
    let mut clocks = original.clone();

    // Messages: an agent's reply fulfils the response clocks; a customer's public message
    // opens the next next_response instance once no response clock is open.
    if let Change::Message { agent, public, at } = change {
        let note_fulfils = policy.is_some_and(|p| p.settings.internal_note_fulfils);
        if agent && (public || note_fulfils) {
            for clock in clocks.iter_mut().filter(|c| c.metric != Metric::Resolution) {
                let counting = counting(&clock.spec, &calendars);
                clock.fulfil(counting, now);
            }
        } else if !agent && public && !dead {
            let response_open = clocks
                .iter()
                .any(|c| c.metric != Metric::Resolution && c.state.is_open());
            if !response_open && let Some(spec) = spec_for(Metric::NextResponse) {
                let instance = clocks
                    .iter()
                    .filter(|c| c.metric == Metric::NextResponse)
                    .map(|c| c.instance)
                    .max()
                    .unwrap_or(0)
                    + 1;
                clocks.push(Clock::start(
                    Metric::NextResponse,
                    instance,
                    spec,
                    at,
                    pauses(Metric::NextResponse),
                    counting(&spec, &calendars),
                    now,
                ));
            }
        }
    }

    // Targets: no policy or no target any more cancels; a changed one recomputes.
    for clock in clocks.iter_mut().filter(|c| c.state.is_open()) {
        match spec_for(clock.metric) {
            None => {
                let counting = counting(&clock.spec, &calendars);
                clock.cancel(counting, now);
            }
            Some(spec) if spec != clock.spec || change == Change::Recompute => {
                clock.retarget(spec, counting(&spec, &calendars), now);
            }
            Some(_) => {}
        }
    }

    // Solving fulfils every open clock; reopening resumes resolution; a live ticket revives
    // its cancelled clocks (restore, a target that is back).
    if terminal {
        for clock in clocks.iter_mut() {
            let counting = counting(&clock.spec, &calendars);
            if clock.state.is_open() {
                clock.fulfil(counting, now);
            }
        }
    } else if !dead {
        for metric in [Metric::Resolution, Metric::FirstResponse] {
            let Some(spec) = spec_for(metric) else {
                continue;
            };
            let Some(latest) = clocks
                .iter_mut()
                .filter(|c| c.metric == metric)
                .max_by_key(|c| c.instance)
            else {
                continue;
            };
            let revive = match latest.state {
                ClockState::Cancelled => {
                    metric == Metric::Resolution || facts.first_responded_at.is_none()
                }
                ClockState::Achieved => metric == Metric::Resolution,
                _ => false,
            };
            if revive {
                let counting = counting(&spec, &calendars);
                latest.retarget(spec, counting, now);
                latest.revive(pauses(metric), counting, now);
            }
        }
    }

    // Pause statuses.
    for clock in clocks.iter_mut().filter(|c| c.state.is_open()) {
        let counting = counting(&clock.spec, &calendars);
        if pauses(clock.metric) {
            clock.pause(counting, now);
        } else {
            clock.resume(counting, now);
        }
    }

    // Clocks a ticket starts with (also when a policy starts to apply later).
    if !dead && !terminal {
        let opened_by_customer = facts.created_by_type == "customer"
            || policy.is_some_and(|p| p.settings.agent_created_ticket_starts_first_response);
        for metric in [Metric::FirstResponse, Metric::Resolution] {
            let wanted = match metric {
                Metric::FirstResponse => opened_by_customer && facts.first_responded_at.is_none(),
                _ => true,
            };
            if wanted
                && !clocks.iter().any(|c| c.metric == metric)
                && let Some(spec) = spec_for(metric)
            {
                clocks.push(Clock::start(
                    metric,
                    1,
                    spec,
                    facts.created_at,
                    pauses(metric),
                    counting(&spec, &calendars),
                    now,
                ));
            }
        }
    }

    let mut earliest: Option<DateTime<Utc>> = None;
    for (index, clock) in clocks.iter().enumerate() {
        if original.get(index) == Some(clock) {
            continue;
        }
        save(conn, workspace_id, ticket_key, clock).await?;
        if let Some(at) = clock.next_at() {
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    Ok(earliest)
}

/// Tells this process's timer about `earliest` (call after the commit).
pub(crate) fn poke(earliest: Option<DateTime<Utc>>) {
    if let Some(at) = earliest {
        signal::poke(at);
    }
}

// ---------------------------------------------------------------------------------------------
// The ticket's `sla` object
// ---------------------------------------------------------------------------------------------

/// One clock as the ticket shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClockView {
    /// The metric.
    pub metric: Metric,
    /// Its instance.
    pub instance: i32,
    /// Its state.
    pub state: ClockState,
    /// Its deadline (null unless active).
    pub due_at: Option<DateTime<Utc>>,
    /// Its at-risk instant (null unless active with a warning window).
    pub at_risk_at: Option<DateTime<Utc>>,
}

/// A ticket's `sla` object (sla.md "Per-ticket SLA state").
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlaView {
    /// The policy the ticket's current clocks run under.
    pub policy_id: String,
    /// The active first_response deadline.
    pub first_response_due: Option<DateTime<Utc>>,
    /// The active next_response deadline.
    pub next_response_due: Option<DateTime<Utc>>,
    /// The active resolution deadline.
    pub resolution_due: Option<DateTime<Utc>>,
    /// Whether any active clock is past its at-risk instant.
    pub at_risk: bool,
    /// The metrics that breached.
    pub breached: Vec<Metric>,
    /// Every clock, by metric and instance.
    pub clocks: Vec<ClockView>,
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    ticket_id: i64,
    metric: String,
    instance: i32,
    state: String,
    policy_id: i64,
    due_at: Option<DateTime<Utc>>,
    at_risk_at: Option<DateTime<Utc>>,
}

/// The `sla` objects of `tickets` (tickets without clocks have none), as of `now`.
pub(crate) async fn views(
    conn: &mut PgConnection,
    tickets: &[i64],
    now: DateTime<Utc>,
) -> Result<HashMap<i64, SlaView>, TicketError> {
    if tickets.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<ViewRow> = sqlx::query_as(
        "SELECT ticket_id, metric, instance, state, policy_id, due_at, at_risk_at \
         FROM sla_clock WHERE ticket_id = ANY($1) ORDER BY ticket_id, metric, instance",
    )
    .bind(tickets)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<i64, (SlaView, bool)> = HashMap::new();
    for row in rows {
        let metric = Metric::parse(&row.metric).unwrap_or(Metric::Resolution);
        let state = ClockState::parse(&row.state).unwrap_or(ClockState::Cancelled);
        let (view, policy_from_open) = out.entry(row.ticket_id).or_insert_with(|| {
            (
                SlaView {
                    policy_id: encode(Kind::SlaPolicy, row.policy_id),
                    first_response_due: None,
                    next_response_due: None,
                    resolution_due: None,
                    at_risk: false,
                    breached: Vec::new(),
                    clocks: Vec::new(),
                },
                false,
            )
        });
        if state.is_open() && !*policy_from_open {
            view.policy_id = encode(Kind::SlaPolicy, row.policy_id);
            *policy_from_open = true;
        }
        if state == ClockState::Active {
            let due = match metric {
                Metric::FirstResponse => &mut view.first_response_due,
                Metric::NextResponse => &mut view.next_response_due,
                Metric::Resolution => &mut view.resolution_due,
            };
            *due = row.due_at;
            view.at_risk |= row.at_risk_at.is_some_and(|at| at <= now);
        }
        if state == ClockState::Breached && !view.breached.contains(&metric) {
            view.breached.push(metric);
        }
        view.clocks.push(ClockView {
            metric,
            instance: row.instance,
            state,
            due_at: row.due_at,
            at_risk_at: row.at_risk_at,
        });
    }
    Ok(out
        .into_iter()
        .map(|(key, (view, _))| (key, view))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The timer's side
// ---------------------------------------------------------------------------------------------

/// An SLA event the timer recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emitted {
    /// At-risk or breached.
    pub firing: Firing,
    /// The metric.
    pub metric: Metric,
    /// The instant it is about (the at-risk instant or the deadline).
    pub instant: DateTime<Utc>,
}

/// What one [`fire_due`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fired {
    /// Clocks claimed (at most the limit; fewer when others hold the rest).
    pub claimed: usize,
    /// Events recorded (duplicates excluded).
    pub emitted: Vec<Emitted>,
}

/// The earliest instant any active clock falls due at (one look-up on the timer's index).
pub async fn next_instant(pool: &PgPool) -> Result<Option<DateTime<Utc>>, TicketError> {
    Ok(
        sqlx::query_scalar("SELECT min(next_at) FROM sla_clock WHERE next_at IS NOT NULL")
            .fetch_one(pool)
            .await?,
    )
}

#[derive(Serialize)]
struct SlaDetail {
    metric: Metric,
    due_at: Option<DateTime<Utc>>,
    at_risk_at: Option<DateTime<Utc>>,
    policy_id: String,
    remaining_seconds: i64,
}

#[derive(Serialize)]
struct SlaPayload<'a> {
    ticket: &'a Ticket,
    sla: SlaDetail,
}

/// The dedupe key of an SLA event: the same deadline always gives the same key, so a second
/// emission (another instance, a retry after a crash) is a duplicate the database refuses.
fn dedupe_key(firing: Firing, ticket_key: i64, clock: &Clock) -> String {
    format!(
        "deskhook.sla:{}:{}:{}:{}:{}",
        firing.label(),
        encode(Kind::Ticket, ticket_key),
        clock.metric.as_str(),
        clock.instance,
        clock.due_at.map_or(0, |due| due.timestamp_millis()),
    )
}

/// Fires up to `limit` clocks due at `now`, earliest first, one workspace per transaction
/// ([`fire_due_in`]). Which workspaces have due clocks is read without locks; each
/// workspace's clocks are then claimed, moved on and their events recorded on their own, so on
/// Citus every statement but that read touches one shard. Returns what was emitted
/// (duplicates excluded).
pub async fn fire_due(
    pool: &PgPool,
    outbox: &dyn Outbox,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Fired, TicketError> {
    let workspaces: Vec<i64> = sqlx::query_scalar(
        "SELECT workspace_id FROM (SELECT workspace_id, next_at FROM sla_clock \
                                   WHERE next_at <= $1 ORDER BY next_at LIMIT $2) due \
         GROUP BY workspace_id ORDER BY min(next_at)",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut total = Fired::default();
    for workspace_id in workspaces {
        let left = limit - i64::try_from(total.claimed).unwrap_or(i64::MAX);
        if left <= 0 {
            break;
        }
        let fired = fire_due_in(pool, outbox, workspace_id, now, left).await?;
        total.claimed += fired.claimed;
        total.emitted.extend(fired.emitted);
    }
    Ok(total)
}

/// Claims up to `limit` of one workspace's clocks due at `now` (skipping those another
/// transaction holds), moves each one on (at-risk latch, or breached), and records their
/// events through `outbox` in the same transaction.
async fn fire_due_in(
    pool: &PgPool,
    outbox: &dyn Outbox,
    workspace_id: i64,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Fired, TicketError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<ClockRow> = sqlx::query_as(&format!(
        "SELECT {CLOCK_COLUMNS} FROM sla_clock WHERE workspace_id = $3 AND next_at <= $1 \
         ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED"
    ))
    .bind(now)
    .bind(limit)
    .bind(workspace_id)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(Fired::default());
    }
    let mut fired = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut clock = row.clock();
        let firing = clock.fire(now);
        save(&mut tx, workspace_id, row.ticket_id, &clock).await?;
        if let Some((firing, instant)) = firing {
            fired.push((row.ticket_id, clock, firing, instant));
        }
    }
    let mut keys: Vec<i64> = fired.iter().map(|f| f.0).collect();
    keys.sort_unstable();
    keys.dedup();
    let rendered: HashMap<i64, Ticket> =
        tickets::fetch_many(&mut tx, Some(workspace_id), &keys, now, false)
            .await?
            .into_iter()
            .map(|t| (t.key, t))
            .collect();
    let mut events = Vec::with_capacity(fired.len());
    let mut emitted = Vec::with_capacity(fired.len());
    for (ticket_key, clock, firing, instant) in &fired {
        let Some(ticket) = rendered.get(ticket_key) else {
            continue;
        };
        let due = clock.due_at;
        let payload = SlaPayload {
            ticket,
            sla: SlaDetail {
                metric: clock.metric,
                due_at: due,
                at_risk_at: clock.at_risk_at,
                policy_id: encode(Kind::SlaPolicy, clock.spec.policy_id),
                remaining_seconds: due.map_or(0, |due| (due - now).num_seconds().max(0)),
            },
        };
        let data = serde_json::to_string(&payload).map_err(serialisation_failed)?;
        events.push(OutboxEvent {
            event_type: firing.event_type(),
            ticket_id: Some(*ticket_key),
            occurred_at: *instant,
            data,
            source: EventSource::Sla,
            dedupe_key: Some(dedupe_key(*firing, *ticket_key, clock)),
        });
        emitted.push(Emitted {
            firing: *firing,
            metric: clock.metric,
            instant: *instant,
        });
    }
    let new = outbox.record(&mut tx, workspace_id, &events).await?;
    tx.commit().await?;
    if new > 0 {
        outbox.committed();
    }
    // Duplicates (the deadline's event already exists) are not emissions.
    if new < emitted.len() as u64 {
        emitted.truncate(usize::try_from(new).unwrap_or(0));
    }
    Ok(Fired {
        claimed: rows.len(),
        emitted,
    })
}

// ---------------------------------------------------------------------------------------------
// The API's operations
// ---------------------------------------------------------------------------------------------

impl Helpdesk<'_> {
    /// Every calendar of the workspace, oldest first.
    pub async fn list_calendars(&self) -> Result<Vec<CalendarView>, TicketError> {
        let rows: Vec<CalendarRow> = sqlx::query_as(&format!(
            "SELECT {CALENDAR_COLUMNS} FROM sla_calendar WHERE workspace_id = $1 ORDER BY id"
        ))
        .bind(self.workspace_id)
        .fetch_all(self.pool)
        .await?;
        Ok(rows.into_iter().map(CalendarRow::view).collect())
    }

    /// One calendar.
    pub async fn calendar(&self, key: i64) -> Result<CalendarView, TicketError> {
        let row: Option<CalendarRow> = sqlx::query_as(&format!(
            "SELECT {CALENDAR_COLUMNS} FROM sla_calendar WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(self.workspace_id)
        .bind(key)
        .fetch_optional(self.pool)
        .await?;
        row.map(CalendarRow::view)
            .ok_or(TicketError::NotFound("Calendar"))
    }

    /// Creates a calendar.
    pub async fn create_calendar(&self, input: CalendarInput) -> Result<CalendarView, TicketError> {
        let spec = CalendarSpec {
            timezone: input.timezone.unwrap_or_default().trim().to_owned(),
            weekly: input.weekly.unwrap_or_default(),
            holidays: input.holidays.unwrap_or_default(),
        };
        let mut problems = Problems::default();
        let name = check_calendar(input.name.as_deref(), &spec, &mut problems);
        problems.finish()?;
        let row: CalendarRow = sqlx::query_as(&format!(
            "INSERT INTO sla_calendar (workspace_id, name, timezone, weekly, holidays) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {CALENDAR_COLUMNS}"
        ))
        .bind(self.workspace_id)
        .bind(name.unwrap_or_default())
        .bind(&spec.timezone)
        .bind(to_json(&spec.weekly)?)
        .bind(to_json(&spec.holidays)?)
        .fetch_one(self.pool)
        .await?;
        Ok(row.view())
    }

    /// Changes a calendar; the open clocks counted in it are recomputed from their elapsed
    /// time, so time already used stays used.
    pub async fn update_calendar(
        &self,
        key: i64,
        input: CalendarInput,
    ) -> Result<CalendarView, TicketError> {
        let current = self.calendar(key).await?;
        let spec = CalendarSpec {
            timezone: input
                .timezone
                .map_or(current.timezone, |t| t.trim().to_owned()),
            weekly: input.weekly.unwrap_or(current.weekly),
            holidays: input.holidays.unwrap_or(current.holidays),
        };
        let name = input.name.unwrap_or(current.name);
        let mut problems = Problems::default();
        let name = check_calendar(Some(&name), &spec, &mut problems);
        problems.finish()?;
        let row: CalendarRow = sqlx::query_as(&format!(
            "UPDATE sla_calendar SET name = $3, timezone = $4, weekly = $5, holidays = $6, \
             updated_at = now() WHERE workspace_id = $1 AND id = $2 RETURNING {CALENDAR_COLUMNS}"
        ))
        .bind(self.workspace_id)
        .bind(key)
        .bind(name.unwrap_or_default())
        .bind(&spec.timezone)
        .bind(to_json(&spec.weekly)?)
        .bind(to_json(&spec.holidays)?)
        .fetch_one(self.pool)
        .await?;
        let tickets: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT ticket_id FROM sla_clock WHERE workspace_id = $1 \
             AND calendar_id = $2 AND state IN ('active', 'paused')",
        )
        .bind(self.workspace_id)
        .bind(key)
        .fetch_all(self.pool)
        .await?;
        self.resync(&tickets).await?;
        Ok(row.view())
    }

    /// Deletes a calendar no policy uses (409 otherwise).
    pub async fn delete_calendar(&self, key: i64) -> Result<(), TicketError> {
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM sla_policy WHERE workspace_id = $1 AND calendar_id = $2 LIMIT 1",
        )
        .bind(self.workspace_id)
        .bind(key)
        .fetch_optional(self.pool)
        .await?;
        if let Some(policy) = used {
            return Err(TicketError::Conflict(format!(
                "the calendar is used by SLA policy {}",
                encode(Kind::SlaPolicy, policy)
            )));
        }
        let deleted = sqlx::query("DELETE FROM sla_calendar WHERE workspace_id = $1 AND id = $2")
            .bind(self.workspace_id)
            .bind(key)
            .execute(self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(TicketError::NotFound("Calendar"));
        }
        Ok(())
    }

    /// Every SLA policy of the workspace, in the order they are tried.
    pub async fn list_sla_policies(&self) -> Result<Vec<Policy>, TicketError> {
        let rows: Vec<PolicyRow> = sqlx::query_as(&format!(
            "SELECT {POLICY_COLUMNS} FROM sla_policy WHERE workspace_id = $1 \
             ORDER BY position, id"
        ))
        .bind(self.workspace_id)
        .fetch_all(self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// One SLA policy.
    pub async fn sla_policy(&self, key: i64) -> Result<Policy, TicketError> {
        let row: Option<PolicyRow> = sqlx::query_as(&format!(
            "SELECT {POLICY_COLUMNS} FROM sla_policy WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(self.workspace_id)
        .bind(key)
        .fetch_optional(self.pool)
        .await?;
        row.map(Into::into)
            .ok_or(TicketError::NotFound("SLA policy"))
    }

    /// Creates an SLA policy. It applies to tickets from their next change (or a reapply).
    pub async fn create_sla_policy(&self, input: PolicyInput) -> Result<Policy, TicketError> {
        let mut conn = self.pool.acquire().await?;
        let plan = PolicyPlan::new(&mut conn, self.workspace_id, None, input).await?;
        let row: PolicyRow = sqlx::query_as(&format!(
            // INSERT … SELECT: Citus plans no subquery inside an INSERT's VALUES.
            "INSERT INTO sla_policy (workspace_id, name, description, position, active, match, \
             calendar_id, targets, pause_statuses, settings) \
             SELECT $1, $2, $3, coalesce($4, coalesce(max(position), 0) + 1), $5, $6, $7, $8, \
                    $9, $10 \
             FROM sla_policy WHERE workspace_id = $1 \
             RETURNING {POLICY_COLUMNS}"
        ))
        .bind(self.workspace_id)
        .bind(&plan.name)
        .bind(&plan.description)
        .bind(plan.position)
        .bind(plan.active)
        .bind(to_json(&plan.match_spec)?)
        .bind(plan.calendar)
        .bind(to_json(&plan.targets)?)
        .bind(to_json(&plan.pause_statuses)?)
        .bind(to_json(&plan.settings)?)
        .fetch_one(&mut *conn)
        .await?;
        Ok(row.into())
    }

    /// Changes an SLA policy (its version bumps). Open tickets pick the change up at their
    /// next change, or all at once through [`Helpdesk::reapply_sla_policy`].
    pub async fn update_sla_policy(
        &self,
        key: i64,
        input: PolicyInput,
    ) -> Result<Policy, TicketError> {
        let current = self.sla_policy(key).await?;
        let mut conn = self.pool.acquire().await?;
        let plan = PolicyPlan::new(&mut conn, self.workspace_id, Some(current), input).await?;
        let row: Option<PolicyRow> = sqlx::query_as(&format!(
            "UPDATE sla_policy SET name = $3, description = $4, position = $5, active = $6, \
             match = $7, calendar_id = $8, targets = $9, pause_statuses = $10, settings = $11, \
             version = version + 1, updated_at = now() \
             WHERE workspace_id = $1 AND id = $2 RETURNING {POLICY_COLUMNS}"
        ))
        .bind(self.workspace_id)
        .bind(key)
        .bind(&plan.name)
        .bind(&plan.description)
        .bind(plan.position.unwrap_or(1))
        .bind(plan.active)
        .bind(to_json(&plan.match_spec)?)
        .bind(plan.calendar)
        .bind(to_json(&plan.targets)?)
        .bind(to_json(&plan.pause_statuses)?)
        .bind(to_json(&plan.settings)?)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(Into::into)
            .ok_or(TicketError::NotFound("SLA policy"))
    }

    /// Deletes an SLA policy. Clocks it started keep their history; open ones are re-matched
    /// at their ticket's next change (or a reapply of another policy).
    pub async fn delete_sla_policy(&self, key: i64) -> Result<(), TicketError> {
        let deleted = sqlx::query("DELETE FROM sla_policy WHERE workspace_id = $1 AND id = $2")
            .bind(self.workspace_id)
            .bind(key)
            .execute(self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(TicketError::NotFound("SLA policy"));
        }
        Ok(())
    }

    /// Re-matches and recomputes the clocks of every open ticket (status open, pending or
    /// on hold) now, instead of at their next change. Returns how many tickets were visited.
    pub async fn reapply_sla_policy(&self, key: i64) -> Result<u64, TicketError> {
        self.sla_policy(key).await?;
        let mut after = 0_i64;
        let mut visited = 0_u64;
        loop {
            let batch: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM ticket WHERE workspace_id = $1 AND id > $2 \
                 AND deleted_at IS NULL AND status IN ('open', 'pending', 'on_hold') \
                 ORDER BY id LIMIT 500",
            )
            .bind(self.workspace_id)
            .bind(after)
            .fetch_all(self.pool)
            .await?;
            let Some(last) = batch.last() else {
                return Ok(visited);
            };
            after = *last;
            visited += self.resync(&batch).await?;
        }
    }

    /// Recomputes the clocks of `tickets`, each in its own short transaction under its row
    /// lock. Returns how many still existed.
    async fn resync(&self, tickets: &[i64]) -> Result<u64, TicketError> {
        let mut count = 0;
        let mut earliest: Option<DateTime<Utc>> = None;
        for &key in tickets {
            let mut tx = self.pool.begin().await?;
            match tickets::lock(&mut tx, self.workspace_id, TicketRef::Key(key), true).await {
                Ok(_) => {}
                Err(TicketError::NotFound(_)) => continue,
                Err(other) => return Err(other),
            }
            let next = sync(
                &mut tx,
                self.workspace_id,
                key,
                Change::Recompute,
                Utc::now(),
            )
            .await?;
            tx.commit().await?;
            earliest = match (earliest, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            count += 1;
        }
        poke(earliest);
        Ok(count)
    }
}
