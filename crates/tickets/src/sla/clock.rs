//! One metric instance's clock as a state machine: started, paused, resumed, fulfilled,
//! retargeted, cancelled, revived, and fired by the timer (sla.md "Per-ticket SLA state").
//!
//! ```text
//!            pause            fulfil
//!   active ───────▶ paused ─────────▶ achieved ──(reopen)──▶ active
//!     │ ▲  ◀─────── │                     
//!     │ │  resume   └──cancel──▶ cancelled ──(revive)──▶ active | paused
//!     │ └──────────────────────────────────────┘
//!     └── due_at passes (timer) ──▶ breached   (final; a late fulfilment is only stamped)
//! ```
//!
//! While active, `due_at = add(cal, running_since, target − elapsed)` and `at_risk_at =
//! sub(cal, due_at, warn)` (none when `warn` is 0). The at-risk latch (`at_risk_emitted_at`)
//! is cleared only when a recomputation moves `at_risk_at` into the future. Pure: this module
//! must never touch the database or read the clock; every instant is passed in.

use chrono::{DateTime, Duration, Utc};

use super::{Metric, calendar::Counting};

/// Where a clock is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockState {
    /// Counting towards its deadline.
    Active,
    /// Stopped by a pause status; keeps its elapsed time.
    Paused,
    /// Fulfilled in time.
    Achieved,
    /// Its deadline passed unmet.
    Breached,
    /// Stopped without a result (spam, delete, no target any more).
    Cancelled,
}

impl ClockState {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Achieved => "achieved",
            Self::Breached => "breached",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "active" => Self::Active,
            "paused" => Self::Paused,
            "achieved" => Self::Achieved,
            "breached" => Self::Breached,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Active or paused: the clock still has a deadline to meet.
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Active | Self::Paused)
    }
}

/// The target a clock counts towards, taken from a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSpec {
    /// The policy's key.
    pub policy_id: i64,
    /// The policy's version.
    pub policy_version: i32,
    /// The calendar business hours are counted in.
    pub calendar_id: Option<i64>,
    /// The target.
    pub target: Duration,
    /// The warning window (zero: no at-risk instant).
    pub warn: Duration,
    /// Counted in business hours.
    pub business_hours: bool,
}

/// What the timer does with a due clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// `sla.at_risk`: the at-risk instant passed, the deadline is still ahead.
    AtRisk,
    /// `sla.breached`: the deadline passed.
    Breached,
}

impl Firing {
    /// Every firing (Deskhook's event catalogue is built from this).
    pub const ALL: [Self; 2] = [Self::AtRisk, Self::Breached];

    /// The event type.
    pub const fn event_type(self) -> &'static str {
        match self {
            Self::AtRisk => "sla.at_risk",
            Self::Breached => "sla.breached",
        }
    }

    /// The metric label (`at_risk`, `breached`).
    pub const fn label(self) -> &'static str {
        match self {
            Self::AtRisk => "at_risk",
            Self::Breached => "breached",
        }
    }
}

/// One metric instance of a ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    /// Row key; `None` until stored.
    pub key: Option<i64>,
    /// The metric.
    pub metric: Metric,
    /// 1, 2, … per metric (next_response has one per customer turn).
    pub instance: i32,
    /// What it counts towards.
    pub spec: TargetSpec,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Counted time up to `running_since` (or up to the pause).
    pub elapsed: Duration,
    /// Counting since (active only).
    pub running_since: Option<DateTime<Utc>>,
    /// The deadline (active only).
    pub due_at: Option<DateTime<Utc>>,
    /// The at-risk instant (active, with a warning window).
    pub at_risk_at: Option<DateTime<Utc>>,
    /// Where it is.
    pub state: ClockState,
    /// The at-risk latch.
    pub at_risk_emitted_at: Option<DateTime<Utc>>,
    /// When it breached.
    pub breached_at: Option<DateTime<Utc>>,
    /// When it was fulfilled.
    pub fulfilled_at: Option<DateTime<Utc>>,
}

impl Clock {
    /// A new instance started at `at` (paused from the start when `paused`).
    pub fn start(
        metric: Metric,
        instance: i32,
        spec: TargetSpec,
        at: DateTime<Utc>,
        paused: bool,
        counting: Counting<'_>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut clock = Self {
            key: None,
            metric,
            instance,
            spec,
            started_at: at,
            elapsed: Duration::zero(),
            running_since: Some(at),
            due_at: None,
            at_risk_at: None,
            state: ClockState::Active,
            at_risk_emitted_at: None,
            breached_at: None,
            fulfilled_at: None,
        };
        if paused {
            clock.pause(counting, now);
        } else {
            clock.schedule(counting, now);
        }
        clock
    }

    /// Recomputes `due_at` and `at_risk_at` of an active clock; clears the latch when the
    /// at-risk instant moves into the future.
    fn schedule(&mut self, counting: Counting<'_>, now: DateTime<Utc>) {
        let Some(since) = self
            .running_since
            .filter(|_| self.state == ClockState::Active)
        else {
            self.due_at = None;
            self.at_risk_at = None;
            return;
        };
        let left = self.spec.target - self.elapsed;
        // A calendar without open time in its horizon: the deadline is as far as it can be.
        let due = counting
            .add(since, left)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let at_risk = (self.spec.warn > Duration::zero())
            .then(|| counting.sub(due, self.spec.warn))
            .flatten()
            .filter(|at| *at < due);
        if at_risk.is_some_and(|at| at > now) {
            self.at_risk_emitted_at = None;
        }
        self.due_at = Some(due);
        self.at_risk_at = at_risk;
    }

    /// Adds the counted time since `running_since` to `elapsed` and stops counting.
    fn stop_counting(&mut self, counting: Counting<'_>, now: DateTime<Utc>) {
        if let Some(since) = self.running_since.take() {
            self.elapsed += counting.counted(since, now);
        }
    }

    /// Enters a pause status: keeps the elapsed time, no deadline while paused.
    pub fn pause(&mut self, counting: Counting<'_>, now: DateTime<Utc>) {
        if self.state == ClockState::Active {
            self.stop_counting(counting, now);
        }
        if self.state.is_open() {
            self.state = ClockState::Paused;
            self.due_at = None;
            self.at_risk_at = None;
        }
    }

    /// Leaves a pause status: counting resumes now.
    pub fn resume(&mut self, counting: Counting<'_>, now: DateTime<Utc>) {
        if self.state == ClockState::Paused {
            self.state = ClockState::Active;
            self.running_since = Some(now);
            self.schedule(counting, now);
        }
    }

    /// Met: an agent replied, or the ticket was solved. A breached clock only records when.
    pub fn fulfil(&mut self, counting: Counting<'_>, now: DateTime<Utc>) {
        match self.state {
            ClockState::Active | ClockState::Paused => {
                self.stop_counting(counting, now);
                self.state = ClockState::Achieved;
                self.fulfilled_at = Some(now);
            }
            ClockState::Breached if self.fulfilled_at.is_none() => {
                self.fulfilled_at = Some(now);
            }
            _ => {}
        }
    }

    /// Stopped without a result.
    pub fn cancel(&mut self, counting: Counting<'_>, now: DateTime<Utc>) {
        if self.state.is_open() {
            self.stop_counting(counting, now);
            self.state = ClockState::Cancelled;
            self.due_at = None;
            self.at_risk_at = None;
        }
    }

    /// Counts again with its elapsed time (a reopened resolution, a restored ticket); the time
    /// it spent stopped does not count.
    pub fn revive(&mut self, paused: bool, counting: Counting<'_>, now: DateTime<Utc>) {
        if matches!(self.state, ClockState::Achieved | ClockState::Cancelled) {
            self.fulfilled_at = None;
            self.state = ClockState::Paused;
            if !paused {
                self.resume(counting, now);
            }
        }
    }

    /// Counts towards another target (priority, policy or calendar change): the deadline is
    /// recomputed from the elapsed time, so time already used stays used.
    pub fn retarget(&mut self, spec: TargetSpec, counting: Counting<'_>, now: DateTime<Utc>) {
        self.spec = spec;
        if self.state == ClockState::Active {
            self.schedule(counting, now);
        }
    }

    /// The next instant the timer must act on: the at-risk instant while the latch is clear,
    /// else the deadline. `None` unless active.
    pub fn next_at(&self) -> Option<DateTime<Utc>> {
        if self.state != ClockState::Active {
            return None;
        }
        match (self.at_risk_at, self.at_risk_emitted_at) {
            (Some(at), None) => Some(at),
            _ => self.due_at,
        }
    }

    /// The timer's step at `now`: breached when the deadline has passed (never at-risk after,
    /// even if the at-risk instant was missed while down), else at-risk once when its instant
    /// has passed. Returns what to emit, with the instant it is about.
    pub fn fire(&mut self, now: DateTime<Utc>) -> Option<(Firing, DateTime<Utc>)> {
        if self.state != ClockState::Active {
            return None;
        }
        let due = self.due_at?;
        if due <= now {
            self.state = ClockState::Breached;
            self.breached_at = Some(now);
            return Some((Firing::Breached, due));
        }
        match (self.at_risk_at, self.at_risk_emitted_at) {
            (Some(at), None) if at <= now => {
                self.at_risk_emitted_at = Some(now);
                Some((Firing::AtRisk, at))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000 + seconds, 0).expect("instant")
    }

    fn spec(target: i64, warn: i64) -> TargetSpec {
        TargetSpec {
            policy_id: 1,
            policy_version: 1,
            calendar_id: None,
            target: Duration::seconds(target),
            warn: Duration::seconds(warn),
            business_hours: false,
        }
    }

    #[test]
    fn at_risk_then_breached_each_once() {
        let wall = Counting::Wall;
        let mut clock = Clock::start(
            Metric::FirstResponse,
            1,
            spec(60, 10),
            t(0),
            false,
            wall,
            t(0),
        );
        assert_eq!(clock.due_at, Some(t(60)));
        assert_eq!(clock.next_at(), Some(t(50)));
        assert_eq!(clock.fire(t(49)), None);
        assert_eq!(clock.fire(t(50)), Some((Firing::AtRisk, t(50))));
        assert_eq!(clock.fire(t(55)), None);
        assert_eq!(clock.next_at(), Some(t(60)));
        assert_eq!(clock.fire(t(61)), Some((Firing::Breached, t(60))));
        assert_eq!(clock.fire(t(62)), None);
        assert_eq!(clock.next_at(), None);
    }

    #[test]
    fn catching_up_after_the_deadline_breaches_without_at_risk() {
        let mut clock = Clock::start(
            Metric::Resolution,
            1,
            spec(60, 10),
            t(0),
            false,
            Counting::Wall,
            t(0),
        );
        assert_eq!(clock.fire(t(600)), Some((Firing::Breached, t(60))));
        assert_eq!(clock.at_risk_emitted_at, None);
    }

    #[test]
    fn pauses_keep_elapsed_time_and_resuming_rearms_the_latch() {
        let wall = Counting::Wall;
        let mut clock = Clock::start(Metric::Resolution, 1, spec(60, 20), t(0), false, wall, t(0));
        assert_eq!(clock.fire(t(45)), Some((Firing::AtRisk, t(40))));
        clock.pause(wall, t(50));
        assert_eq!(
            (clock.state, clock.due_at, clock.next_at()),
            (ClockState::Paused, None, None)
        );
        assert_eq!(clock.elapsed, Duration::seconds(50));
        clock.resume(wall, t(1000));
        // 10 s left: due 1010, at-risk instant 990 is already past, so the latch stays set.
        assert_eq!(clock.due_at, Some(t(1010)));
        assert!(clock.at_risk_emitted_at.is_some());
        assert_eq!(clock.next_at(), Some(t(1010)));
    }

    #[test]
    fn a_lower_priority_moves_the_deadline_and_a_higher_one_can_breach_at_once() {
        let wall = Counting::Wall;
        let mut clock = Clock::start(
            Metric::FirstResponse,
            1,
            spec(60, 10),
            t(0),
            false,
            wall,
            t(0),
        );
        assert_eq!(clock.fire(t(52)), Some((Firing::AtRisk, t(50))));
        clock.retarget(spec(600, 10), wall, t(55));
        assert_eq!(clock.due_at, Some(t(600)));
        assert_eq!(
            clock.at_risk_emitted_at, None,
            "the new at-risk instant is ahead"
        );
        clock.retarget(spec(30, 10), wall, t(56));
        assert_eq!(clock.fire(t(56)), Some((Firing::Breached, t(30))));
    }

    #[test]
    fn fulfilment_stops_the_clock() {
        let wall = Counting::Wall;
        let mut clock = Clock::start(
            Metric::NextResponse,
            2,
            spec(60, 0),
            t(0),
            false,
            wall,
            t(0),
        );
        assert_eq!(
            clock.at_risk_at, None,
            "no warning window, no at-risk instant"
        );
        clock.fulfil(wall, t(30));
        assert_eq!(clock.state, ClockState::Achieved);
        assert_eq!(clock.fire(t(100)), None);
        clock.revive(false, wall, t(200));
        assert_eq!(clock.due_at, Some(t(230)));
    }
}
