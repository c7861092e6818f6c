//! When to try again: the configured schedule (`DESKHOOK_RETRY_SCHEDULE`), ±20 % jitter, and
//! `Retry-After` honoured between 1 s (or the planned delay, if shorter) and the schedule's longest
//! delay. Pure and unit-tested.

use std::time::Duration;

use rand::Rng as _;

use crate::config::RetrySchedule;

/// The shortest wait a `Retry-After` can ask for.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The delay before the next attempt after a failed one, or `None` when the delivery is dead.
///
/// `attempts_since_replay` counts the attempts made since the delivery was (re)queued,
/// including the one that just failed: the schedule restarts after a manual retry.
pub fn next_delay(
    schedule: &RetrySchedule,
    attempts_since_replay: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let index = usize::try_from(attempts_since_replay.checked_sub(1)?).ok()?;
    let planned = *schedule.delays.get(index)?;
    if let Some(asked) = retry_after {
        let longest = schedule.delays.iter().max().copied().unwrap_or(planned);
        // A receiver answering `Retry-After: 0` must not turn its schedule into a tight loop
        // (review L7); a schedule faster than the floor keeps its own pace.
        let floor = planned.min(MIN_RETRY_AFTER);
        return Some(asked.max(floor).min(longest));
    }
    Some(jitter(planned))
}

/// ±20 %, so receivers recovering from an outage are not hit by a synchronised wave.
fn jitter(delay: Duration) -> Duration {
    let factor: f64 = rand::thread_rng().gen_range(0.8..=1.2);
    delay.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        "5s,30s,2m".parse().expect("schedule")
    }

    #[test]
    fn follows_the_schedule_with_jitter_then_gives_up() {
        for (attempt, base) in [(1, 5.0), (2, 30.0), (3, 120.0)] {
            for _ in 0..50 {
                let delay = next_delay(&schedule(), attempt, None)
                    .expect("a retry is left")
                    .as_secs_f64();
                assert!(
                    (base * 0.8..=base * 1.2).contains(&delay),
                    "attempt {attempt}: {delay}"
                );
            }
        }
        assert_eq!(
            next_delay(&schedule(), 4, None),
            None,
            "1 + 3 attempts, then dead"
        );
        assert_eq!(next_delay(&RetrySchedule { delays: vec![] }, 1, None), None);
    }

    #[test]
    fn retry_after_replaces_the_delay_up_to_the_longest_one() {
        assert_eq!(
            next_delay(&schedule(), 1, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            next_delay(&schedule(), 1, Some(Duration::from_secs(86_400))),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            next_delay(&schedule(), 4, Some(Duration::from_secs(1))),
            None
        );
    }

    #[test]
    fn retry_after_zero_cannot_make_a_burst_of_immediate_retries() {
        for asked in [Duration::ZERO, Duration::from_millis(10)] {
            assert_eq!(
                next_delay(&schedule(), 1, Some(asked)),
                Some(Duration::from_secs(1)),
                "asked {asked:?}"
            );
        }
        // A schedule faster than the floor keeps its own pace.
        let fast: RetrySchedule = "100ms,200ms".parse().expect("schedule");
        assert_eq!(
            next_delay(&fast, 1, Some(Duration::ZERO)),
            Some(Duration::from_millis(100))
        );
    }

    mod properties {
        use std::time::Duration;

        use proptest::prelude::*;

        use super::super::*;

        fn schedules() -> impl Strategy<Value = RetrySchedule> {
            proptest::collection::vec(1_u64..86_400_000, 1..=RetrySchedule::MAX_ENTRIES).prop_map(
                |ms| RetrySchedule {
                    delays: ms.into_iter().map(Duration::from_millis).collect(),
                },
            )
        }

        proptest! {
            /// Attempt n waits for the schedule's nth delay ±20 %, and the delivery is dead
            /// once the schedule is used up (or before any attempt was counted).
            #[test]
            fn the_schedule_with_jitter_then_dead(schedule in schedules(), attempt in 0_u32..30) {
                let delay = next_delay(&schedule, attempt, None);
                match attempt.checked_sub(1).and_then(|i| schedule.delays.get(i as usize)) {
                    None => prop_assert_eq!(delay, None),
                    Some(planned) => {
                        let delay = delay.expect("a retry is left").as_secs_f64();
                        let planned = planned.as_secs_f64();
                        prop_assert!(delay >= planned * 0.8 - 1e-9 && delay <= planned * 1.2 + 1e-9);
                    }
                }
            }

            /// A receiver's `Retry-After` is honoured, but never below 1 s (or the planned delay,
            /// if shorter) and never beyond the schedule's longest delay.
            #[test]
            fn retry_after_is_bounded(schedule in schedules(), attempt in 1_u32..=20, asked_ms in 0_u64..1_000_000_000) {
                prop_assume!((attempt as usize) <= schedule.delays.len());
                let planned = schedule.delays[attempt as usize - 1];
                let longest = *schedule.delays.iter().max().expect("not empty");
                let delay = next_delay(&schedule, attempt, Some(Duration::from_millis(asked_ms)))
                    .expect("a retry is left");
                prop_assert!(delay <= longest);
                prop_assert!(delay >= planned.min(Duration::from_secs(1)).min(longest));
            }
        }
    }
}
