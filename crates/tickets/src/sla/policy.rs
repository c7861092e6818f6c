//! SLA policies as data: the schema (sla.md "Policy schema"), its validation, which policy a
//! ticket falls under (`match`), and the target a metric has for a priority.
//!
//! Pure: this module must never touch the database or read the clock. The SQL that stores
//! policies is in `super::store`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Metric;
use crate::{
    ids::{Kind, encode},
    ticket::{Priority, Status},
    validate::Problems,
};

/// The longest target: ten years of minutes.
const MAX_MINUTES: f64 = 10.0 * 366.0 * 24.0 * 60.0;

/// A condition's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The field equals the value (for tags: the ticket carries it).
    Is,
    /// Not `is`.
    IsNot,
    /// The field holds any of the values.
    Includes,
    /// The field holds none of the values.
    Excludes,
    /// The field's value is one of the values.
    In,
}

/// One condition of a policy's `match`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// `priority`, `tags`, `source`, `group_id`, `customer.email`, `customer.company` or
    /// `custom_fields.<name>`.
    pub field: String,
    /// The operator.
    pub op: Op,
    /// A string, number or boolean, or a list of them.
    pub value: Value,
}

/// Which tickets a policy applies to: every `all` condition and, if there are any, at least
/// one `any` condition. Empty means every ticket (a default policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Conditions that must all hold.
    #[serde(default)]
    pub all: Vec<Condition>,
    /// Conditions of which one must hold (when non-empty).
    #[serde(default)]
    pub any: Vec<Condition>,
}

/// A target: how long a metric may take at a priority, and how early to warn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The metric.
    pub metric: Metric,
    /// The priority it applies to.
    pub priority: Priority,
    /// The target in minutes (decimals allowed: `0.1` is six seconds).
    pub minutes: f64,
    /// Counted in the policy calendar's open hours (else around the clock).
    #[serde(default)]
    pub business_hours: bool,
    /// Warn this many minutes before the deadline (`0`: only `sla.breached`).
    #[serde(default)]
    pub warn_before_minutes: f64,
}

impl Target {
    /// The target as a duration (millisecond precision).
    pub fn duration(&self) -> Duration {
        minutes_to_duration(self.minutes)
    }

    /// The warning window as a duration.
    pub fn warn(&self) -> Duration {
        minutes_to_duration(self.warn_before_minutes)
    }
}

fn minutes_to_duration(minutes: f64) -> Duration {
    // Bounded by validation (MAX_MINUTES), so the cast cannot overflow.
    Duration::milliseconds((minutes * 60_000.0).round() as i64)
}

/// Statuses that pause each metric's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseStatuses {
    /// For `first_response` (none by default).
    #[serde(default)]
    pub first_response: Vec<Status>,
    /// For `next_response` (none by default).
    #[serde(default)]
    pub next_response: Vec<Status>,
    /// For `resolution` (`pending`, `on_hold` by default).
    #[serde(default = "default_resolution_pauses")]
    pub resolution: Vec<Status>,
}

fn default_resolution_pauses() -> Vec<Status> {
    vec![Status::Pending, Status::OnHold]
}

impl Default for PauseStatuses {
    fn default() -> Self {
        Self {
            first_response: Vec::new(),
            next_response: Vec::new(),
            resolution: default_resolution_pauses(),
        }
    }
}

impl PauseStatuses {
    /// Whether `status` pauses `metric`.
    pub fn pauses(&self, metric: Metric, status: Status) -> bool {
        match metric {
            Metric::FirstResponse => &self.first_response,
            Metric::NextResponse => &self.next_response,
            Metric::Resolution => &self.resolution,
        }
        .contains(&status)
    }
}

/// Policy switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// An agent's internal note fulfils first/next response.
    #[serde(default)]
    pub internal_note_fulfils: bool,
    /// A ticket an agent opened for a customer starts the first-response clock.
    #[serde(default)]
    pub agent_created_ticket_starts_first_response: bool,
}

/// A policy as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Row key.
    #[serde(skip)]
    pub key: i64,
    /// `slp_…`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Order among the workspace's policies (the first matching active one applies).
    pub position: i32,
    /// Whether it applies at all.
    pub active: bool,
    /// Which tickets it applies to.
    #[serde(rename = "match")]
    pub match_spec: MatchSpec,
    /// `cal_…`, or `null` for 24×7.
    pub calendar_id: Option<String>,
    /// The calendar's key.
    #[serde(skip)]
    pub calendar_key: Option<i64>,
    /// Targets, at most one per (metric, priority).
    pub targets: Vec<Target>,
    /// Statuses that pause each metric.
    pub pause_statuses: PauseStatuses,
    /// Switches.
    pub settings: Settings,
    /// Bumps on every change.
    pub version: i32,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Policy {
    /// The target of `metric` at `priority`, if the policy has one.
    pub fn target(&self, metric: Metric, priority: Priority) -> Option<&Target> {
        self.targets
            .iter()
            .find(|t| t.metric == metric && t.priority == priority)
    }
}

/// A policy to create, or the fields of one to change (absent fields are kept).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Read-only; accepted and ignored so a fetched policy can be sent back.
    #[serde(default)]
    pub id: Option<Value>,
    /// Name (required on create).
    pub name: Option<String>,
    /// Description (`null` clears it).
    #[serde(default, deserialize_with = "crate::validate::nullable")]
    pub description: Option<Option<String>>,
    /// Position (default: after the last).
    pub position: Option<i32>,
    /// Active (default true).
    pub active: Option<bool>,
    /// Match (default: every ticket).
    #[serde(rename = "match")]
    pub match_spec: Option<MatchSpec>,
    /// `cal_…` or `null`.
    #[serde(default, deserialize_with = "crate::validate::nullable")]
    pub calendar_id: Option<Option<String>>,
    /// Targets.
    pub targets: Option<Vec<Target>>,
    /// Pause statuses.
    pub pause_statuses: Option<PauseStatuses>,
    /// Settings.
    pub settings: Option<Settings>,
    /// Read-only.
    #[serde(default)]
    pub version: Option<Value>,
    /// Read-only.
    #[serde(default)]
    pub created_at: Option<Value>,
    /// Read-only.
    #[serde(default)]
    pub updated_at: Option<Value>,
}

const FIELDS: [&str; 5] = ["priority", "tags", "source", "group_id", "customer.email"];

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_lowercase()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The values a condition compares against, lower-cased.
fn values(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|v| vec![v]),
    }
}

/// Checks a policy's conditions, targets and names; reports every problem.
pub(crate) fn check(
    problems: &mut Problems,
    name: &str,
    match_spec: &MatchSpec,
    targets: &[Target],
) {
    if name.trim().is_empty() {
        problems.add("name", "must not be blank");
    } else if name.trim().chars().count() > 200 {
        problems.add("name", "must be at most 200 characters");
    }
    for (group, conditions) in [("all", &match_spec.all), ("any", &match_spec.any)] {
        for (i, condition) in conditions.iter().enumerate() {
            let here = format!("match.{group}[{i}]");
            let known = FIELDS.contains(&condition.field.as_str())
                || condition.field == "customer.company"
                || condition
                    .field
                    .strip_prefix("custom_fields.")
                    .is_some_and(|name| !name.is_empty());
            if !known {
                problems.add(
                    &format!("{here}.field"),
                    "must be priority, tags, source, group_id, customer.email, customer.company \
                     or custom_fields.<name>",
                );
            }
            let list_ok = matches!(condition.op, Op::Includes | Op::Excludes | Op::In);
            match &condition.value {
                Value::Array(_) if !list_ok => problems.add(
                    &format!("{here}.value"),
                    "must be a single value for is / is_not",
                ),
                value if values(value).is_none() => problems.add(
                    &format!("{here}.value"),
                    "must be a string, number or boolean, or a list of them",
                ),
                _ => {}
            }
        }
    }
    for (i, target) in targets.iter().enumerate() {
        let here = format!("targets[{i}]");
        if !(target.minutes.is_finite() && target.minutes > 0.0 && target.minutes <= MAX_MINUTES)
            || target.duration() <= Duration::zero()
        {
            problems.add(
                &format!("{here}.minutes"),
                "must be greater than 0 (decimals allowed) and at most ten years",
            );
        }
        if !(target.warn_before_minutes.is_finite()
            && target.warn_before_minutes >= 0.0
            && target.warn_before_minutes < target.minutes)
        {
            problems.add(
                &format!("{here}.warn_before_minutes"),
                "must be at least 0 and less than minutes",
            );
        }
        if targets[..i]
            .iter()
            .any(|t| t.metric == target.metric && t.priority == target.priority)
        {
            problems.add(
                &here,
                "duplicates another target's metric and priority (at most one each)",
            );
        }
    }
}

/// What a policy's conditions look at on a ticket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub priority: Option<Priority>,
    pub tags: Vec<String>,
    pub source: String,
    pub group_id: Option<i64>,
    pub customer_email: Option<String>,
    pub customer_company: Option<String>,
    pub custom_fields: Value,
}

impl Facts {
    fn field(&self, name: &str) -> Vec<String> {
        let lower = |s: &String| s.trim().to_lowercase();
        match name {
            "priority" => self
                .priority
                .map(|p| p.as_str().to_owned())
                .into_iter()
                .collect(),
            "tags" => self.tags.iter().map(lower).collect(),
            "source" => vec![self.source.clone()],
            "group_id" => self
                .group_id
                .map(|key| encode(Kind::Group, key).to_lowercase())
                .into_iter()
                .collect(),
            "customer.email" => self.customer_email.iter().map(lower).collect(),
            "customer.company" => self.customer_company.iter().map(lower).collect(),
            other => other
                .strip_prefix("custom_fields.")
                .and_then(|name| self.custom_fields.get(name))
                .and_then(values)
                .unwrap_or_default(),
        }
    }

    fn holds(&self, condition: &Condition) -> bool {
        let have = self.field(&condition.field);
        let want = values(&condition.value).unwrap_or_default();
        let any = want.iter().any(|w| have.contains(w));
        match condition.op {
            Op::Is | Op::Includes | Op::In => any,
            Op::IsNot | Op::Excludes => !any,
        }
    }

    /// Whether a policy's `match` fits these facts.
    pub fn matches(&self, spec: &MatchSpec) -> bool {
        spec.all.iter().all(|c| self.holds(c))
            && (spec.any.is_empty() || spec.any.iter().any(|c| self.holds(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(field: &str, op: Op, value: Value) -> Condition {
        Condition {
            field: field.into(),
            op,
            value,
        }
    }

    #[test]
    fn policies_match_on_company_tags_and_custom_fields() {
        let facts = Facts {
            priority: Some(Priority::Urgent),
            tags: vec!["VIP".into(), "billing".into()],
            source: "email".into(),
            customer_company: Some("Acme".into()),
            custom_fields: json!({"plan": "gold", "seats": 40}),
            ..Facts::default()
        };
        let spec = MatchSpec {
            all: vec![condition("customer.company", Op::Is, json!("acme"))],
            any: vec![
                condition("tags", Op::Includes, json!(["vip"])),
                condition("priority", Op::Is, json!("low")),
            ],
        };
        assert!(facts.matches(&spec));
        assert!(facts.matches(&MatchSpec::default()));
        assert!(facts.matches(&MatchSpec {
            all: vec![
                condition("custom_fields.plan", Op::In, json!(["gold", "platinum"])),
                condition("custom_fields.seats", Op::Is, json!(40)),
                condition("source", Op::IsNot, json!("web")),
                condition("tags", Op::Excludes, json!(["spam"])),
            ],
            any: vec![],
        }));
        assert!(!facts.matches(&MatchSpec {
            all: vec![condition("customer.email", Op::Is, json!("x@y.z"))],
            any: vec![],
        }));
    }

    #[test]
    fn targets_are_checked() {
        let target = |minutes: f64, warn: f64| Target {
            metric: Metric::FirstResponse,
            priority: Priority::Urgent,
            minutes,
            business_hours: false,
            warn_before_minutes: warn,
        };
        let mut problems = Problems::default();
        check(
            &mut problems,
            "x",
            &MatchSpec::default(),
            &[target(0.1, 0.05)],
        );
        assert!(problems.finish().is_ok());
        assert_eq!(target(0.1, 0.0).duration(), Duration::seconds(6));
        let mut problems = Problems::default();
        check(
            &mut problems,
            "",
            &MatchSpec {
                all: vec![condition("colour", Op::Is, json!(["a"]))],
                any: vec![],
            },
            &[target(0.0, 0.0), target(5.0, 5.0), target(5.0, 1.0)],
        );
        let Err(crate::TicketError::Invalid(fields)) = problems.finish() else {
            panic!("invalid");
        };
        for field in [
            "name",
            "match.all[0].field",
            "match.all[0].value",
            "targets[0].minutes",
            "targets[1].warn_before_minutes",
            "targets[2]",
        ] {
            assert!(fields.contains_key(field), "{field}: {fields:?}");
        }
    }
}
