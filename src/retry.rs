//! Retry decisions: the backoff schedule, jitter and rule matching.
//!
//! Pure code: no I/O, no clock, no global randomness. The runner feeds it the facts of
//! a failed attempt and a random source; it answers whether and when to retry.

use std::time::Duration;

use regex::bytes::Regex;

/// How a delay is randomised (the AWS "Exponential Backoff And Jitter" formulas).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// The delay as computed.
    #[default]
    None,
    /// A uniform random delay between 0 and the computed delay.
    Full,
    /// Half the computed delay plus a uniform random part of the other half.
    Equal,
    /// `min(cap, uniform(base, previous delay × 3))`.
    Decorrelated,
}

/// Which kind of timeout a rule matches.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutKind {
    /// No output for `activity_timeout_seconds` (a hang).
    Activity,
    /// The attempt ran longer than `timeout_seconds`.
    Total,
    /// Either kind.
    Any,
}

/// What a rule does when it matches.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Retry (still bounded by the retry limits).
    Retry,
    /// Fail this spec now: no more retries.
    Fail,
    /// Stop the whole run.
    Abort,
}

/// The condition of one rule; every present condition must hold.
#[derive(Clone, Debug, Default)]
pub struct RuleMatch {
    /// Exit codes, one of which the attempt must have exited with.
    pub exit_codes: Option<Vec<i32>>,
    /// Signal numbers.
    pub signals: Option<Vec<i32>>,
    /// The kind of timeout that must have ended the attempt.
    pub timeout: Option<TimeoutKind>,
    /// Matched against the last 64 KiB of the attempt's output.
    pub output: Option<Regex>,
}

/// One validated retry rule.
#[derive(Clone, Debug)]
pub struct RetryRule {
    /// When the rule applies.
    pub when: RuleMatch,
    /// What happens when it does.
    pub action: RuleAction,
    /// This rule's own first delay; the multiplier and cap still apply.
    pub backoff: Option<Duration>,
    /// Where the rule was written, for reasons: e.g. `spec-runner.toml retry_rules[1]`.
    pub origin: String,
}

/// The effective retry policy of one spec.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// `retry_max_retries`: retries after the first attempt.
    pub max_retries: u32,
    /// `retry_backoff_seconds`: the delay before the first retry.
    pub backoff: Duration,
    /// `retry_backoff_multiplier`: the factor per retry (validated to be ≥ 1).
    pub multiplier: f64,
    /// `retry_max_backoff_seconds`: the cap on one delay.
    pub max_backoff: Duration,
    /// `retry_jitter`.
    pub jitter: Jitter,
    /// `retry_on_crash`: retry a failed attempt that no rule matched.
    pub on_crash: bool,
    /// `retry_max_total_seconds`: give up when the next retry would start later than
    /// this after the first attempt started.
    pub max_total: Option<Duration>,
    /// The spec's own rules first, then the global ones: first match wins.
    pub rules: Vec<RetryRule>,
}

/// The most entries [`schedule`] returns.
///
/// `retry_max_retries` may be as large as `u32::MAX`; the schedule is for display
/// (`plan`), and past this many retries every delay has long reached its cap anyway
/// for any multiplier > 1.
pub const SCHEDULE_LIMIT: usize = 10_000;

/// The un-jittered delay before retry `retry` (1 for the first retry):
/// `min(backoff × multiplier^(retry − 1), max_backoff)`.
///
/// Never panics and never overflows: the arithmetic is done in floating point and the
/// result saturates at `max_backoff`. `retry` 0 is treated as 1. Inputs that validation
/// rejects still get a defined answer: a zero `backoff` gives zero whatever the
/// multiplier, a negative product gives zero, and a NaN product (a NaN multiplier)
/// gives `max_backoff`, the cautious choice.
pub fn base_delay(
    backoff: Duration,
    multiplier: f64,
    max_backoff: Duration,
    retry: u32,
) -> Duration {
    // Checked first so that 0 × ∞ (a huge power) cannot turn into NaN.
    if backoff.is_zero() {
        return Duration::ZERO;
    }
    let exponent = f64::from(retry.saturating_sub(1));
    // Nanoseconds rather than seconds keep exact results exact: 0.2 s × 2 is
    // 400_000_000 ns, not 0.4 s rounded twice.
    let nanos = backoff.as_nanos() as f64 * multiplier.powf(exponent);
    let cap = max_backoff.as_nanos() as f64;
    if nanos.is_nan() || nanos >= cap {
        return max_backoff;
    }
    if nanos <= 0.0 {
        return Duration::ZERO;
    }
    // `nanos` is below the cap here, so it fits; the `min` guards the last rounding.
    duration_from_nanos(nanos.round() as u128).min(max_backoff)
}

/// The un-jittered delays before retries 1, 2, … of `policy`, as `plan` shows them.
///
/// Holds `max_retries` entries, at most [`SCHEDULE_LIMIT`]. Uses the policy's own
/// `backoff`: a matching rule's `backoff` applies only when that rule fires.
pub fn schedule(policy: &RetryPolicy) -> Vec<Duration> {
    let len = usize::try_from(policy.max_retries).map_or(SCHEDULE_LIMIT, |n| n.min(SCHEDULE_LIMIT));
    (1..)
        .take(len)
        .map(|retry| base_delay(policy.backoff, policy.multiplier, policy.max_backoff, retry))
        .collect()
}

/// Randomises `computed` (from [`base_delay`]) as `jitter` says, after AWS
/// "Exponential Backoff And Jitter":
///
/// - `None`: `computed`.
/// - `Full`: uniform in `[0, computed]`.
/// - `Equal`: `computed / 2` plus uniform in `[0, computed − computed / 2]`, so within
///   `[computed / 2, computed]`.
/// - `Decorrelated`: `min(cap, uniform(base, previous × 3))`, with `previous` defaulting
///   to `base` for the first retry. It ignores `computed`: the delay grows from the
///   previous one instead. When `previous × 3` is below `base` (a smaller rule backoff
///   came before) the range collapses to `base`; with `base` zero and no previous delay
///   the result is zero. The result is within `[min(base, cap), cap]`.
///
/// `base` is the first delay (the policy's or the matching rule's backoff) and `cap` is
/// `max_backoff`. Bounds are inclusive; nothing here panics for any input.
pub fn apply_jitter(
    jitter: Jitter,
    computed: Duration,
    base: Duration,
    cap: Duration,
    previous: Option<Duration>,
    rng: &mut impl rand::Rng,
) -> Duration {
    match jitter {
        Jitter::None => computed,
        Jitter::Full => uniform(Duration::ZERO, computed, rng),
        Jitter::Equal => {
            let half = computed / 2;
            // `computed - half` rather than `half` again, so an odd nanosecond count can
            // still reach `computed` and the bounds stay exactly [computed / 2, computed].
            half + uniform(Duration::ZERO, computed - half, rng)
        }
        Jitter::Decorrelated => {
            let high = previous.unwrap_or(base).saturating_mul(3).max(base);
            uniform(base, high, rng).min(cap)
        }
    }
}

/// A uniform random duration in `[low, high]`, to the nanosecond; `low` when the range
/// is empty.
fn uniform(low: Duration, high: Duration, rng: &mut impl rand::Rng) -> Duration {
    if high <= low {
        return low;
    }
    duration_from_nanos(rng.random_range(low.as_nanos()..=high.as_nanos()))
}

/// A duration of `nanos` nanoseconds, saturating at [`Duration::MAX`].
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9, so it always fits in a u32.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff: secs(5.0),
            multiplier: 2.0,
            max_backoff: secs(300.0),
            jitter: Jitter::None,
            on_crash: true,
            max_total: None,
            rules: Vec::new(),
        }
    }

    #[test]
    fn schedule_with_defaults_is_5_10_20() {
        assert_eq!(schedule(&policy()), [secs(5.0), secs(10.0), secs(20.0)]);
    }

    #[test]
    fn schedule_with_multiplier_1_5() {
        let p = RetryPolicy {
            max_retries: 5,
            backoff: secs(3.0),
            multiplier: 1.5,
            ..policy()
        };
        assert_eq!(
            schedule(&p),
            [
                secs(3.0),
                secs(4.5),
                secs(6.75),
                secs(10.125),
                secs(15.1875)
            ]
        );
    }

    #[test]
    fn schedule_with_fractional_backoff_is_exact() {
        let p = RetryPolicy {
            max_retries: 2,
            backoff: ms(200),
            ..policy()
        };
        assert_eq!(schedule(&p), [ms(200), ms(400)]);
    }

    #[test]
    fn delays_are_capped_at_max_backoff() {
        let p = RetryPolicy {
            max_retries: 8,
            max_backoff: secs(60.0),
            ..policy()
        };
        let expected = [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0].map(secs);
        assert_eq!(schedule(&p), expected);
    }

    #[test]
    fn schedule_length_is_capped() {
        let p = RetryPolicy {
            max_retries: u32::MAX,
            ..policy()
        };
        assert_eq!(schedule(&p).len(), SCHEDULE_LIMIT);
        let p = RetryPolicy {
            max_retries: 0,
            ..policy()
        };
        assert!(schedule(&p).is_empty());
    }

    #[test]
    fn base_delay_survives_extreme_inputs() {
        let cap = secs(300.0);
        assert_eq!(base_delay(secs(5.0), 2.0, cap, u32::MAX), cap);
        assert_eq!(base_delay(secs(5.0), 1e300, cap, 3), cap);
        assert_eq!(
            base_delay(Duration::MAX, 1e300, Duration::MAX, u32::MAX),
            Duration::MAX
        );
        assert_eq!(
            base_delay(Duration::ZERO, 1e300, cap, u32::MAX),
            Duration::ZERO
        );
        assert_eq!(base_delay(Duration::ZERO, f64::NAN, cap, 2), Duration::ZERO);
        assert_eq!(base_delay(secs(5.0), f64::NAN, cap, 2), cap);
        assert_eq!(base_delay(secs(5.0), f64::INFINITY, cap, 2), cap);
        assert_eq!(base_delay(secs(5.0), -2.0, cap, 2), Duration::ZERO);
        assert_eq!(
            base_delay(secs(5.0), 2.0, Duration::ZERO, 1),
            Duration::ZERO
        );
        // Retry 0 does not exist; it gets the first delay rather than a panic.
        assert_eq!(base_delay(secs(5.0), 2.0, cap, 0), secs(5.0));
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5EED)
    }

    /// Many jittered samples, to check bounds and that the range is actually used.
    fn samples(
        jitter: Jitter,
        computed: Duration,
        base: Duration,
        cap: Duration,
        previous: Option<Duration>,
    ) -> Vec<Duration> {
        let mut rng = rng();
        (0..2_000)
            .map(|_| apply_jitter(jitter, computed, base, cap, previous, &mut rng))
            .collect()
    }

    fn min_max(v: &[Duration]) -> (Duration, Duration) {
        let min = v.iter().min().copied().unwrap_or_default();
        let max = v.iter().max().copied().unwrap_or_default();
        (min, max)
    }

    #[test]
    fn no_jitter_keeps_the_computed_delay() {
        let v = samples(
            Jitter::None,
            secs(20.0),
            secs(5.0),
            secs(300.0),
            Some(secs(10.0)),
        );
        assert!(v.iter().all(|&d| d == secs(20.0)));
    }

    #[test]
    fn full_jitter_spans_zero_to_computed() {
        let v = samples(Jitter::Full, secs(20.0), secs(5.0), secs(300.0), None);
        let (min, max) = min_max(&v);
        assert!(max <= secs(20.0));
        // With 2000 draws the extremes come within 1 % of the bounds.
        assert!(min < secs(0.2) && max > secs(19.8), "{min:?}..{max:?}");
    }

    #[test]
    fn equal_jitter_spans_half_to_computed() {
        let v = samples(Jitter::Equal, secs(20.0), secs(5.0), secs(300.0), None);
        let (min, max) = min_max(&v);
        assert!(min >= secs(10.0) && max <= secs(20.0), "{min:?}..{max:?}");
        assert!(min < secs(10.1) && max > secs(19.9), "{min:?}..{max:?}");
    }

    #[test]
    fn equal_jitter_of_an_odd_nanosecond_count_stays_in_bounds() {
        let computed = Duration::from_nanos(3);
        let v = samples(Jitter::Equal, computed, computed, computed, None);
        assert!(
            v.iter()
                .all(|&d| Duration::from_nanos(1) <= d && d <= computed)
        );
        assert!(v.contains(&computed));
    }

    #[test]
    fn decorrelated_jitter_spans_base_to_three_times_previous() {
        let v = samples(
            Jitter::Decorrelated,
            secs(20.0),
            secs(5.0),
            secs(300.0),
            Some(secs(10.0)),
        );
        let (min, max) = min_max(&v);
        assert!(min >= secs(5.0) && max <= secs(30.0), "{min:?}..{max:?}");
        assert!(min < secs(5.3) && max > secs(29.7), "{min:?}..{max:?}");
    }

    #[test]
    fn decorrelated_jitter_starts_from_base() {
        let v = samples(
            Jitter::Decorrelated,
            secs(5.0),
            secs(5.0),
            secs(300.0),
            None,
        );
        let (min, max) = min_max(&v);
        assert!(min >= secs(5.0) && max <= secs(15.0), "{min:?}..{max:?}");
    }

    #[test]
    fn decorrelated_jitter_is_capped() {
        let v = samples(
            Jitter::Decorrelated,
            secs(5.0),
            secs(5.0),
            secs(20.0),
            Some(secs(100.0)),
        );
        let (min, max) = min_max(&v);
        assert!(min >= secs(5.0) && max == secs(20.0), "{min:?}..{max:?}");
    }

    #[test]
    fn decorrelated_jitter_degenerate_ranges() {
        // previous × 3 below base: the range collapses to base.
        let v = samples(
            Jitter::Decorrelated,
            secs(60.0),
            secs(60.0),
            secs(300.0),
            Some(secs(1.0)),
        );
        assert!(v.iter().all(|&d| d == secs(60.0)));
        // Zero base and no previous delay: zero.
        let v = samples(
            Jitter::Decorrelated,
            secs(5.0),
            Duration::ZERO,
            secs(300.0),
            None,
        );
        assert!(v.iter().all(|d| d.is_zero()));
        // Base above the cap: the cap wins.
        let v = samples(
            Jitter::Decorrelated,
            secs(5.0),
            secs(600.0),
            secs(300.0),
            None,
        );
        assert!(v.iter().all(|&d| d == secs(300.0)));
        // Huge previous delay: saturates instead of overflowing.
        let v = samples(
            Jitter::Decorrelated,
            secs(5.0),
            secs(5.0),
            Duration::MAX,
            Some(Duration::MAX),
        );
        assert!(v.iter().all(|&d| d >= secs(5.0)));
    }

    #[test]
    fn jitter_of_zero_is_zero() {
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
            let v = samples(jitter, Duration::ZERO, secs(5.0), secs(300.0), None);
            assert!(v.iter().all(|d| d.is_zero()), "{jitter:?}");
        }
    }
}
