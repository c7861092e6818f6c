//! Business-hours calendars: their schema and validation, and the business-time arithmetic
//! SLA deadlines are computed with (`add`, `sub`, `counted`; sla.md "How the due times are
//! computed").
//!
//! All arithmetic is on UTC instants. Each local open interval is converted to UTC per date in
//! the calendar's IANA time zone, so DST changes shorten or lengthen the days they fall on and
//! nothing else. A deadline that lands exactly on the end of an interval is that instant. This
//! module must never touch the database or read the clock: callers pass every instant.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// The week's day keys, Monday first (chrono's `num_days_from_monday` order).
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// How far the walk looks for open time before giving up (a calendar whose every open day is
/// a holiday for years).
const HORIZON_DAYS: i64 = 366 * 3;

/// Seconds in a day: an interval may end at `24:00`.
const DAY_SECONDS: u32 = 86_400;

/// A holiday: a whole local date without open time.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holiday {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A calendar as stored and shown (`weekly` intervals as `["HH:MM","HH:MM"]` pairs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CalendarSpec {
    /// IANA time zone (`Europe/Berlin`).
    pub timezone: String,
    /// Day key → sorted, non-overlapping open intervals.
    pub weekly: BTreeMap<String, Vec<[String; 2]>>,
    /// Dates without open time.
    #[serde(default)]
    pub holidays: Vec<Holiday>,
}

/// A validated calendar, ready for arithmetic.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    tz: Tz,
    /// Per weekday (Monday first): open intervals as seconds of the local day.
    weekly: [Vec<(u32, u32)>; 7],
    holidays: BTreeSet<NaiveDate>,
}

fn parse_clock(text: &str) -> Option<u32> {
    let (hours, minutes) = text.trim().split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u32 = hours.parse().ok()?;
    let minutes: u32 = minutes.parse().ok()?;
    if minutes >= 60 || hours > 24 || (hours == 24 && minutes != 0) {
        return None;
    }
    Some(hours * 3600 + minutes * 60)
}

impl CalendarSpec {
    /// Validates the spec (reporting fields under `prefix`) and builds the calendar.
    pub(crate) fn check(&self, problems: &mut Problems, prefix: &str) -> Option<Calendar> {
        let field = |name: &str| format!("{prefix}{name}");
        let tz = match self.timezone.trim().parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                problems.add(
                    &field("timezone"),
                    "must be an IANA time zone like Europe/Berlin",
                );
                None
            }
        };
        let mut weekly: [Vec<(u32, u32)>; 7] = Default::default();
        let mut ok = true;
        for (day, intervals) in &self.weekly {
            let Some(index) = DAYS.iter().position(|d| d == day) else {
                problems.add(
                    &field(&format!("weekly.{day}")),
                    "must be one of mon, tue, wed, thu, fri, sat, sun",
                );
                ok = false;
                continue;
            };
            let mut previous_end = 0;
            for (i, [start, end]) in intervals.iter().enumerate() {
                let here = field(&format!("weekly.{day}[{i}]"));
                let (Some(start), Some(end)) = (parse_clock(start), parse_clock(end)) else {
                    problems.add(&here, "times must be HH:MM (00:00 to 24:00)");
                    ok = false;
                    continue;
                };
                if start >= end {
                    problems.add(&here, "must start before it ends, within one day");
                    ok = false;
                } else if i > 0 && start < previous_end {
                    problems.add(&here, "intervals must be sorted and must not overlap");
                    ok = false;
                } else {
                    weekly[index].push((start, end));
                }
                previous_end = end.max(previous_end);
            }
        }
        if ok && weekly.iter().all(Vec::is_empty) {
            problems.add(
                &field("weekly"),
                "must contain at least one open interval in the week",
            );
            ok = false;
        }
        let mut holidays = BTreeSet::new();
        for (i, holiday) in self.holidays.iter().enumerate() {
            match NaiveDate::parse_from_str(holiday.date.trim(), "%Y-%m-%d") {
                Ok(date) => {
                    holidays.insert(date);
                }
                Err(_) => {
                    problems.add(
                        &field(&format!("holidays[{i}].date")),
                        "must be a date like 2026-12-25",
                    );
                    ok = false;
                }
            }
        }
        match (tz, ok) {
            (Some(tz), true) => Some(Calendar {
                tz,
                weekly,
                holidays,
            }),
            _ => None,
        }
    }

    /// The calendar of a stored, already validated spec.
    pub(crate) fn build(&self) -> Option<Calendar> {
        self.check(&mut Problems::default(), "")
    }
}

impl Calendar {
    /// The UTC instant of `seconds` into local `date` (`86400` is the next midnight). A local
    /// time skipped by a DST change maps to the first instant after the gap; a repeated one to
    /// its first occurrence.
    fn instant(&self, date: NaiveDate, seconds: u32) -> DateTime<Utc> {
        let (date, seconds) = if seconds >= DAY_SECONDS {
            (date.succ_opt().unwrap_or(date), seconds - DAY_SECONDS)
        } else {
            (date, seconds)
        };
        let time = NaiveTime::from_num_seconds_from_midnight_opt(seconds, 0).unwrap_or_default();
        let local = date.and_time(time);
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
            LocalResult::None => {
                // In a spring-forward gap: the wall clock jumps past it, so the interval opens
                // (or closes) when the clock resumes.
                let mut probe = local;
                for _ in 0..240 {
                    probe += Duration::minutes(1);
                    if let Some(t) = self.tz.from_local_datetime(&probe).earliest() {
                        return t.with_timezone(&Utc);
                    }
                }
                Utc.from_utc_datetime(&local)
            }
        }
    }

    /// The open intervals of local `date`, as UTC instants (none on a holiday).
    fn open_on(&self, date: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        if self.holidays.contains(&date) {
            return Vec::new();
        }
        let day = date.weekday().num_days_from_monday() as usize;
        self.weekly[day]
            .iter()
            .map(|&(start, end)| (self.instant(date, start), self.instant(date, end)))
            .filter(|(start, end)| start < end)
            .collect()
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.tz).date_naive()
    }

    /// The instant reached after `amount` of open time counted from `from`. `None` when the
    /// calendar has no open time within its horizon.
    pub fn add(&self, from: DateTime<Utc>, amount: Duration) -> Option<DateTime<Utc>> {
        let mut left = amount.max(Duration::zero());
        let first = self.local_date(from).pred_opt()?;
        for offset in 0..HORIZON_DAYS {
            let date = first + Duration::days(offset);
            for (start, end) in self.open_on(date) {
                if end <= from {
                    continue;
                }
                let start = start.max(from);
                let available = end - start;
                if left <= available {
                    return Some(start + left);
                }
                left -= available;
            }
        }
        None
    }

    /// The instant `amount` of open time before `to` (the inverse of [`Self::add`]).
    pub fn sub(&self, to: DateTime<Utc>, amount: Duration) -> Option<DateTime<Utc>> {
        if amount <= Duration::zero() {
            return Some(to);
        }
        let mut left = amount;
        let last = self.local_date(to).succ_opt()?;
        for offset in 0..HORIZON_DAYS {
            let date = last - Duration::days(offset);
            for (start, end) in self.open_on(date).into_iter().rev() {
                if start >= to {
                    continue;
                }
                let end = end.min(to);
                let available = end - start;
                if left <= available {
                    return Some(end - left);
                }
                left -= available;
            }
        }
        None
    }

    /// The open time between `from` and `to`.
    pub fn counted(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        if to <= from {
            return Duration::zero();
        }
        let mut total = Duration::zero();
        let (Some(first), Some(last)) = (
            self.local_date(from).pred_opt(),
            self.local_date(to).succ_opt(),
        ) else {
            return total;
        };
        let mut date = first;
        while date <= last {
            for (start, end) in self.open_on(date) {
                let start = start.max(from);
                let end = end.min(to);
                if end > start {
                    total += end - start;
                }
            }
            match date.succ_opt() {
                Some(next) => date = next,
                None => break,
            }
        }
        total
    }
}

/// The clock a target is counted in: wall-clock time, or a calendar's open hours.
#[derive(Debug, Clone, Copy)]
pub enum Counting<'a> {
    /// Every second counts (24×7).
    Wall,
    /// Only the calendar's open time counts.
    Business(&'a Calendar),
}

impl Counting<'_> {
    /// `add(cal, t, d)` of sla.md.
    pub fn add(self, from: DateTime<Utc>, amount: Duration) -> Option<DateTime<Utc>> {
        match self {
            Self::Wall => from.checked_add_signed(amount.max(Duration::zero())),
            Self::Business(calendar) => calendar.add(from, amount),
        }
    }

    /// `sub(cal, t, d)` of sla.md.
    pub fn sub(self, to: DateTime<Utc>, amount: Duration) -> Option<DateTime<Utc>> {
        match self {
            Self::Wall => to.checked_sub_signed(amount.max(Duration::zero())),
            Self::Business(calendar) => calendar.sub(to, amount),
        }
    }

    /// The counted time between two instants.
    pub fn counted(self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        match self {
            Self::Wall => (to - from).max(Duration::zero()),
            Self::Business(calendar) => calendar.counted(from, to),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("instant")
            .with_timezone(&Utc)
    }

    fn calendar(tz: &str, weekly: &[(&str, &[(&str, &str)])], holidays: &[&str]) -> Calendar {
        let spec = CalendarSpec {
            timezone: tz.to_owned(),
            weekly: weekly
                .iter()
                .map(|(day, intervals)| {
                    (
                        (*day).to_owned(),
                        intervals
                            .iter()
                            .map(|(a, b)| [(*a).to_owned(), (*b).to_owned()])
                            .collect(),
                    )
                })
                .collect(),
            holidays: holidays
                .iter()
                .map(|d| Holiday {
                    date: (*d).to_owned(),
                    name: None,
                })
                .collect(),
        };
        let mut problems = Problems::default();
        let calendar = spec.check(&mut problems, "");
        problems.finish().expect("valid calendar");
        calendar.expect("calendar")
    }

    const WEEKDAYS: [(&str, &[(&str, &str)]); 5] = [
        ("mon", &[("09:00", "17:00")]),
        ("tue", &[("09:00", "17:00")]),
        ("wed", &[("09:00", "17:00")]),
        ("thu", &[("09:00", "17:00")]),
        ("fri", &[("09:00", "17:00")]),
    ];

    #[test]
    fn a_deadline_landing_exactly_at_closing_time_is_that_instant() {
        let cal = calendar("Europe/Berlin", &WEEKDAYS, &[]);
        // Monday 2026-06-15 16:00 CEST (14:00 UTC) + 1 h → 17:00 CEST the same day.
        let due = cal.add(utc("2026-06-15T14:00:00Z"), Duration::hours(1));
        assert_eq!(due, Some(utc("2026-06-15T15:00:00Z")));
        // One more second goes to the next morning.
        let due = cal.add(utc("2026-06-15T14:00:00Z"), Duration::seconds(3601));
        assert_eq!(due, Some(utc("2026-06-16T07:00:01Z")));
        // And back: 1 h before closing is 16:00.
        assert_eq!(
            cal.sub(utc("2026-06-15T15:00:00Z"), Duration::hours(1)),
            Some(utc("2026-06-15T14:00:00Z"))
        );
    }

    #[test]
    fn business_hours_across_the_spring_dst_change() {
        let cal = calendar("Europe/Berlin", &WEEKDAYS, &[]);
        // Friday 2026-03-27 16:00 CET = 15:00 UTC; 2 business hours: 1 h on Friday, 1 h on
        // Monday 2026-03-30, which opens at 09:00 CEST = 07:00 UTC (after the change).
        let due = cal.add(utc("2026-03-27T15:00:00Z"), Duration::hours(2));
        assert_eq!(due, Some(utc("2026-03-30T08:00:00Z")));
        assert_eq!(
            cal.counted(utc("2026-03-27T15:00:00Z"), utc("2026-03-30T08:00:00Z")),
            Duration::hours(2)
        );
        assert_eq!(
            cal.sub(utc("2026-03-30T08:00:00Z"), Duration::hours(2)),
            Some(utc("2026-03-27T15:00:00Z"))
        );
    }

    #[test]
    fn the_dst_day_itself_is_an_hour_shorter_or_longer() {
        // Open around the clock on Sundays: 29 March 2026 has 23 hours in Berlin, 25 October
        // 2026 has 25.
        let cal = calendar("Europe/Berlin", &[("sun", &[("00:00", "24:00")])], &[]);
        assert_eq!(
            cal.counted(utc("2026-03-28T00:00:00Z"), utc("2026-03-30T00:00:00Z")),
            Duration::hours(23)
        );
        assert_eq!(
            cal.counted(utc("2026-10-24T00:00:00Z"), utc("2026-10-27T00:00:00Z")),
            Duration::hours(25)
        );
        // An interval across the skipped hour (01:00–04:00 local) holds two real hours.
        let night = calendar("Europe/Berlin", &[("sun", &[("01:00", "04:00")])], &[]);
        let opens = utc("2026-03-29T00:00:00Z"); // 01:00 CET
        assert_eq!(
            night.add(opens, Duration::hours(2)),
            Some(utc("2026-03-29T02:00:00Z")) // 04:00 CEST
        );
        assert_eq!(
            night.add(opens, Duration::hours(3)),
            Some(utc("2026-04-05T00:00:00Z")) // a week later, 02:00 CEST
        );
    }

    #[test]
    fn holidays_have_no_open_time() {
        let cal = calendar("America/New_York", &WEEKDAYS, &["2026-12-25"]);
        // Thursday 2026-12-24 16:00 EST (21:00 UTC) + 2 h: 1 h on Thursday, Friday is
        // Christmas, so the second hour is Monday 2026-12-28 09:00–10:00 EST.
        let due = cal.add(utc("2026-12-24T21:00:00Z"), Duration::hours(2));
        assert_eq!(due, Some(utc("2026-12-28T15:00:00Z")));
        // Created outside hours: counting starts at the next opening.
        let due = cal.add(utc("2026-12-26T12:00:00Z"), Duration::minutes(30));
        assert_eq!(due, Some(utc("2026-12-28T14:30:00Z")));
    }

    #[test]
    fn wall_clock_counting_ignores_calendars() {
        let t = utc("2026-06-15T14:00:00Z");
        assert_eq!(
            Counting::Wall.add(t, Duration::milliseconds(6000)),
            Some(utc("2026-06-15T14:00:06Z"))
        );
        assert_eq!(
            Counting::Wall.sub(t, Duration::minutes(1)),
            Some(utc("2026-06-15T13:59:00Z"))
        );
    }

    #[test]
    fn invalid_calendars_name_their_fields() {
        let spec = CalendarSpec {
            timezone: "Mars/Olympus".into(),
            weekly: BTreeMap::from([
                (
                    "mon".to_owned(),
                    vec![
                        ["09:00".to_owned(), "12:00".to_owned()],
                        ["11:00".to_owned(), "13:00".to_owned()],
                    ],
                ),
                ("tue".to_owned(), vec![["17:00".into(), "09:00".into()]]),
                ("funday".to_owned(), vec![]),
            ]),
            holidays: vec![Holiday {
                date: "2026-13-01".into(),
                name: None,
            }],
        };
        let mut problems = Problems::default();
        assert!(spec.check(&mut problems, "").is_none());
        let Err(crate::TicketError::Invalid(fields)) = problems.finish() else {
            panic!("invalid");
        };
        for field in [
            "timezone",
            "weekly.mon[1]",
            "weekly.tue[0]",
            "weekly.funday",
            "holidays[0].date",
        ] {
            assert!(fields.contains_key(field), "{field}: {fields:?}");
        }
        let empty = CalendarSpec {
            timezone: "UTC".into(),
            weekly: BTreeMap::from([("sat".to_owned(), vec![])]),
            holidays: vec![],
        };
        let mut problems = Problems::default();
        assert!(empty.check(&mut problems, "").is_none());
        assert!(problems.finish().is_err());
    }
}
