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
    /// Shared: every spec's copy of a global rule points at one compiled regex.
    pub output: Option<std::sync::Arc<Regex>>,
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
/// `retry_max_retries` may be as large as `u32::MAX`, and a vector of that many delays
/// would take 64 GiB. The schedule is for display (`plan`), where ten thousand entries
/// are already more than anyone reads; [`base_delay`] answers for any retry number.
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
///   previous one instead. When `previous × 3` is below `base` (the previous retry
///   used a smaller backoff, e.g. under another rule) the range collapses to `base`; with `base` zero and no previous delay
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

/// What is known about a failed attempt, for rule matching.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailureFacts<'a> {
    /// The exit code, if the process exited rather than being killed.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    /// Which timeout fired (`Activity` or `Total`), `None` if none did.
    pub timeout: Option<TimeoutKind>,
    /// The last 64 KiB (at most) of the attempt's output.
    pub output_tail: &'a [u8],
}

/// The first rule, with its index in `rules`, whose every present condition holds
/// for `facts`. A rule without conditions matches every failure.
///
/// A list condition holds when the fact is present and in the list, so an attempt that
/// was killed (no exit code) never matches `exit_codes`, and an empty list matches
/// nothing. A `timeout` condition of `Any` holds for either kind of timeout; `Activity`
/// and `Total` only for their own kind (facts are expected to name the kind that fired).
pub fn matching_rule<'r>(
    rules: &'r [RetryRule],
    facts: &FailureFacts,
) -> Option<(usize, &'r RetryRule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, rule)| rule.when.matches(facts))
}

impl RuleMatch {
    /// Whether every present condition holds for `facts`.
    pub fn matches(&self, facts: &FailureFacts) -> bool {
        fn listed(list: Option<&Vec<i32>>, fact: Option<i32>) -> bool {
            list.is_none_or(|list| fact.is_some_and(|value| list.contains(&value)))
        }
        let timeout = self
            .timeout
            .is_none_or(|wanted| match (wanted, facts.timeout) {
                (_, None) => false,
                (TimeoutKind::Any, Some(_)) => true,
                (wanted, Some(fired)) => wanted == fired,
            });
        listed(self.exit_codes.as_ref(), facts.exit_code)
            && listed(self.signals.as_ref(), facts.signal)
            && timeout
            // Last: the regex is the only costly condition.
            && self.output.as_ref().is_none_or(|re| re.is_match(facts.output_tail))
    }
}

/// Where a spec stands when an attempt has failed: the run-wide facts [`decide`] needs
/// besides the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryContext {
    /// The retry that would come next: 1 for the first retry (0 is treated as 1).
    pub retry: u32,
    /// Time since the spec's first attempt started (not since the run started).
    pub elapsed_since_first_start: Duration,
    /// Retries left in the run-wide `retry_budget`; `None` when there is no budget.
    pub budget_left: Option<u32>,
    /// The delay before the previous retry, for decorrelated jitter.
    pub previous_delay: Option<Duration>,
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start the next attempt after `delay`.
    Retry {
        /// The jittered delay.
        delay: Duration,
        /// The index, in the policy's rules, of the rule that asked for the retry;
        /// `None` when no rule matched and `retry_on_crash` did.
        rule: Option<usize>,
    },
    /// The spec has failed for good.
    GiveUp {
        /// Why, as a lowercase fragment for a log line.
        reason: String,
    },
    /// Stop the whole run.
    Abort {
        /// Why, as a lowercase fragment for a log line.
        reason: String,
    },
}

/// Decides what follows a failed attempt.
///
/// The first matching rule decides: `abort` stops the run, `fail` gives up, `retry`
/// retries. Without a matching rule the attempt is retried when `on_crash` is true. A
/// retry still needs `ctx.retry ≤ max_retries`, room in the run-wide budget, and a start
/// no later than `max_total` after the first attempt; otherwise the spec gives up. The
/// delay is [`base_delay`] from the rule's own `backoff` if it has one (else the
/// policy's), then [`apply_jitter`].
pub fn decide(
    policy: &RetryPolicy,
    facts: &FailureFacts,
    ctx: &RetryContext,
    rng: &mut impl rand::Rng,
) -> Decision {
    let (rule, first_delay) = match matching_rule(&policy.rules, facts) {
        Some((_, rule)) if rule.action == RuleAction::Abort => {
            return Decision::Abort {
                reason: format!("rule {} says abort", rule.origin),
            };
        }
        Some((_, rule)) if rule.action == RuleAction::Fail => {
            return give_up(format!("rule {} says fail", rule.origin));
        }
        Some((index, rule)) => (Some(index), rule.backoff.unwrap_or(policy.backoff)),
        None if policy.on_crash => (None, policy.backoff),
        None => return give_up("retry_on_crash is false".to_owned()),
    };
    if ctx.retry > policy.max_retries {
        return give_up(format!(
            "retries exhausted ({}/{})",
            ctx.retry.saturating_sub(1),
            policy.max_retries
        ));
    }
    if ctx.budget_left == Some(0) {
        return give_up("run-wide retry budget exhausted".to_owned());
    }
    let computed = base_delay(
        first_delay,
        policy.multiplier,
        policy.max_backoff,
        ctx.retry,
    );
    let delay = apply_jitter(
        policy.jitter,
        computed,
        first_delay,
        policy.max_backoff,
        ctx.previous_delay,
        rng,
    );
    if let Some(max_total) = policy.max_total
        && ctx.elapsed_since_first_start.saturating_add(delay) > max_total
    {
        return give_up(format!(
            "next retry would start past retry_max_total_seconds ({}s)",
            max_total.as_secs_f64()
        ));
    }
    Decision::Retry { delay, rule }
}

fn give_up(reason: String) -> Decision {
    Decision::GiveUp { reason }
}

/// The standard Linux signals, numbered as on x86_64 and aarch64 (which agree for 1–31).
const SIGNALS: [(i32, &str); 31] = [
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (3, "SIGQUIT"),
    (4, "SIGILL"),
    (5, "SIGTRAP"),
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (8, "SIGFPE"),
    (9, "SIGKILL"),
    (10, "SIGUSR1"),
    (11, "SIGSEGV"),
    (12, "SIGUSR2"),
    (13, "SIGPIPE"),
    (14, "SIGALRM"),
    (15, "SIGTERM"),
    (16, "SIGSTKFLT"),
    (17, "SIGCHLD"),
    (18, "SIGCONT"),
    (19, "SIGSTOP"),
    (20, "SIGTSTP"),
    (21, "SIGTTIN"),
    (22, "SIGTTOU"),
    (23, "SIGURG"),
    (24, "SIGXCPU"),
    (25, "SIGXFSZ"),
    (26, "SIGVTALRM"),
    (27, "SIGPROF"),
    (28, "SIGWINCH"),
    (29, "SIGIO"),
    (30, "SIGPWR"),
    (31, "SIGSYS"),
];

/// Other names Linux accepts for the same numbers; [`signal_name`] never returns these.
const SIGNAL_ALIASES: [(i32, &str); 3] = [(6, "SIGIOT"), (17, "SIGCLD"), (29, "SIGPOLL")];

/// The Linux number of a signal name: `"SIGSEGV"`, `"SEGV"` and `"sigsegv"` all give 11.
///
/// Knows the standard signals 1–31 and the aliases `SIGIOT`, `SIGCLD` and `SIGPOLL`.
/// Real-time signals and numbers written as text are not names here: they give `None`.
pub fn signal_number(name: &str) -> Option<i32> {
    let bare = strip_sig(name);
    SIGNALS
        .iter()
        .chain(&SIGNAL_ALIASES)
        .find(|(_, known)| strip_sig(known).eq_ignore_ascii_case(bare))
        .map(|&(number, _)| number)
}

/// The signal a shell reports as exit status 128 + N: `sh -c` turns a child killed
/// by SIGSEGV into exit 139. Only for commands run under a shell; N is 1–64 (Linux
/// signals, real-time ones included).
pub fn signal_in_shell(exit_code: Option<i32>) -> Option<i32> {
    exit_code
        .filter(|code| (129..=128 + 64).contains(code))
        .map(|code| code - 128)
}

/// The conventional name of a Linux signal number, e.g. `"SIGSEGV"` for 11.
pub fn signal_name(number: i32) -> Option<&'static str> {
    SIGNALS
        .iter()
        .find(|&&(known, _)| known == number)
        .map(|&(_, name)| name)
}

/// `name` without a leading `SIG` in any case.
fn strip_sig(name: &str) -> &str {
    // `get` because the name may start with a multi-byte character; when it succeeds,
    // byte 3 is a character boundary and the second `get` cannot fail.
    match (name.get(..3), name.get(3..)) {
        (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case("SIG") => rest,
        _ => name,
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

    fn rule(when: RuleMatch, action: RuleAction, origin: &str) -> RetryRule {
        RetryRule {
            when,
            action,
            backoff: None,
            origin: origin.to_owned(),
        }
    }

    fn regex(pattern: &str) -> Option<std::sync::Arc<Regex>> {
        // A test-only pattern written by hand: a bad one should fail the test loudly.
        Some(std::sync::Arc::new(
            Regex::new(pattern).expect("test regex is valid"),
        ))
    }

    fn exited(code: i32) -> FailureFacts<'static> {
        FailureFacts {
            exit_code: Some(code),
            ..FailureFacts::default()
        }
    }

    fn killed(signal: i32) -> FailureFacts<'static> {
        FailureFacts {
            signal: Some(signal),
            ..FailureFacts::default()
        }
    }

    fn timed_out(kind: TimeoutKind) -> FailureFacts<'static> {
        FailureFacts {
            timeout: Some(kind),
            signal: Some(15),
            ..FailureFacts::default()
        }
    }

    fn index_of(rules: &[RetryRule], facts: &FailureFacts) -> Option<usize> {
        matching_rule(rules, facts).map(|(i, _)| i)
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = [
            rule(
                RuleMatch {
                    exit_codes: Some(vec![2, 64]),
                    ..RuleMatch::default()
                },
                RuleAction::Fail,
                "a",
            ),
            rule(
                RuleMatch {
                    exit_codes: Some(vec![1, 2]),
                    ..RuleMatch::default()
                },
                RuleAction::Retry,
                "b",
            ),
            rule(RuleMatch::default(), RuleAction::Abort, "c"),
        ];
        assert_eq!(index_of(&rules, &exited(2)), Some(0));
        assert_eq!(index_of(&rules, &exited(64)), Some(0));
        assert_eq!(index_of(&rules, &exited(1)), Some(1));
        assert_eq!(index_of(&rules, &exited(3)), Some(2));
        assert_eq!(index_of(&rules, &killed(9)), Some(2));
        let found = matching_rule(&rules, &exited(1)).map(|(_, r)| r.origin.as_str());
        assert_eq!(found, Some("b"));
    }

    #[test]
    fn no_rules_match_nothing() {
        assert!(matching_rule(&[], &exited(1)).is_none());
    }

    #[test]
    fn a_rule_without_conditions_matches_everything() {
        let when = RuleMatch::default();
        assert!(when.matches(&exited(0)));
        assert!(when.matches(&killed(9)));
        assert!(when.matches(&timed_out(TimeoutKind::Total)));
        assert!(when.matches(&FailureFacts::default()));
    }

    #[test]
    fn exit_code_condition() {
        let when = RuleMatch {
            exit_codes: Some(vec![2, 64]),
            ..RuleMatch::default()
        };
        assert!(when.matches(&exited(64)));
        assert!(!when.matches(&exited(1)));
        // Killed by a signal: there is no exit code to match.
        assert!(!when.matches(&killed(2)));
        let empty = RuleMatch {
            exit_codes: Some(Vec::new()),
            ..RuleMatch::default()
        };
        assert!(!empty.matches(&exited(1)));
    }

    #[test]
    fn signal_condition() {
        let when = RuleMatch {
            signals: Some(vec![11, 6]),
            ..RuleMatch::default()
        };
        assert!(when.matches(&killed(11)));
        assert!(when.matches(&killed(6)));
        assert!(!when.matches(&killed(9)));
        // Exit code 11 is not SIGSEGV.
        assert!(!when.matches(&exited(11)));
    }

    #[test]
    fn timeout_condition() {
        let kinds = [TimeoutKind::Activity, TimeoutKind::Total, TimeoutKind::Any];
        let when = |kind| RuleMatch {
            timeout: Some(kind),
            ..RuleMatch::default()
        };
        let activity = timed_out(TimeoutKind::Activity);
        let total = timed_out(TimeoutKind::Total);
        assert!(when(TimeoutKind::Activity).matches(&activity));
        assert!(!when(TimeoutKind::Activity).matches(&total));
        assert!(when(TimeoutKind::Total).matches(&total));
        assert!(!when(TimeoutKind::Total).matches(&activity));
        assert!(when(TimeoutKind::Any).matches(&activity));
        assert!(when(TimeoutKind::Any).matches(&total));
        for kind in kinds {
            // The same SIGTERM without a timeout is not a timeout.
            assert!(!when(kind).matches(&killed(15)), "{kind:?}");
            assert!(!when(kind).matches(&exited(1)), "{kind:?}");
        }
    }

    #[test]
    fn output_condition() {
        let when = RuleMatch {
            output: regex(r"(?i)\brate limit(ed)?\b|429 Too Many Requests"),
            ..RuleMatch::default()
        };
        let with_output = |tail: &'static [u8]| FailureFacts {
            output_tail: tail,
            ..exited(1)
        };
        assert!(when.matches(&with_output(b"error: Rate Limited, try later\n")));
        assert!(when.matches(&with_output(b"HTTP 429 Too Many Requests")));
        assert!(!when.matches(&with_output(b"ratelimiting\n")));
        assert!(!when.matches(&with_output(b"")));
        // Output is bytes, not necessarily UTF-8.
        assert!(when.matches(&with_output(b"\xff\xfe rate limit \xc3")));
    }

    #[test]
    fn every_present_condition_must_hold() {
        let when = RuleMatch {
            exit_codes: Some(vec![1]),
            output: regex("OOM"),
            ..RuleMatch::default()
        };
        let facts = |code, tail: &'static [u8]| FailureFacts {
            output_tail: tail,
            ..exited(code)
        };
        assert!(when.matches(&facts(1, b"killed: OOM")));
        assert!(!when.matches(&facts(2, b"killed: OOM")));
        assert!(!when.matches(&facts(1, b"fine")));
    }

    #[test]
    fn a_shell_status_above_128_names_the_signal() {
        assert_eq!(signal_in_shell(Some(139)), Some(11));
        assert_eq!(signal_in_shell(Some(129)), Some(1));
        assert_eq!(signal_in_shell(Some(192)), Some(64));
        for not in [
            Some(128),
            Some(193),
            Some(255),
            Some(1),
            Some(0),
            Some(-1),
            None,
        ] {
            assert_eq!(signal_in_shell(not), None, "{not:?}");
        }
    }

    #[test]
    fn signal_names_and_numbers() {
        for name in ["SIGSEGV", "SEGV", "sigsegv", "segv", "SigSegv"] {
            assert_eq!(signal_number(name), Some(11), "{name}");
        }
        assert_eq!(signal_number("SIGHUP"), Some(1));
        assert_eq!(signal_number("KILL"), Some(9));
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("SIGSYS"), Some(31));
        assert_eq!(signal_number("SIGIOT"), Some(6));
        assert_eq!(signal_number("POLL"), Some(29));
        for bad in [
            "",
            "SIG",
            "11",
            "SIGSIGSEGV",
            "SIGRTMIN",
            "SEGVX",
            " SIGSEGV",
            "ßIGSEGV",
        ] {
            assert_eq!(signal_number(bad), None, "{bad:?}");
        }
        assert_eq!(signal_name(1), Some("SIGHUP"));
        assert_eq!(signal_name(11), Some("SIGSEGV"));
        assert_eq!(signal_name(29), Some("SIGIO"));
        assert_eq!(signal_name(31), Some("SIGSYS"));
        for bad in [0, 32, 64, -1, i32::MIN, i32::MAX] {
            assert_eq!(signal_name(bad), None, "{bad}");
        }
        for number in 1..=31 {
            let name = signal_name(number);
            assert_eq!(name.and_then(signal_number), Some(number), "{name:?}");
        }
    }

    fn ctx(retry: u32) -> RetryContext {
        RetryContext {
            retry,
            elapsed_since_first_start: Duration::ZERO,
            budget_left: None,
            previous_delay: None,
        }
    }

    fn decide_once(policy: &RetryPolicy, facts: &FailureFacts, ctx: &RetryContext) -> Decision {
        decide(policy, facts, ctx, &mut rng())
    }

    fn retry_after(delay: Duration, rule: Option<usize>) -> Decision {
        Decision::Retry { delay, rule }
    }

    fn gave_up(reason: &str) -> Decision {
        Decision::GiveUp {
            reason: reason.to_owned(),
        }
    }

    /// A policy with the rules: exit 2 fails, exit 3 aborts, exit 75 retries after 60 s.
    fn policy_with_rules() -> RetryPolicy {
        let exit = |code| RuleMatch {
            exit_codes: Some(vec![code]),
            ..RuleMatch::default()
        };
        let mut slow = rule(
            exit(75),
            RuleAction::Retry,
            "spec-runner.toml retry_rules[2]",
        );
        slow.backoff = Some(secs(60.0));
        RetryPolicy {
            rules: vec![
                rule(
                    exit(2),
                    RuleAction::Fail,
                    "spec-runner.toml specs.a.retry_rules[0]",
                ),
                rule(
                    exit(3),
                    RuleAction::Abort,
                    "spec-runner.toml retry_rules[1]",
                ),
                slow,
            ],
            ..policy()
        }
    }

    #[test]
    fn retries_on_crash_with_the_schedule() {
        let p = policy();
        assert_eq!(
            decide_once(&p, &exited(1), &ctx(1)),
            retry_after(secs(5.0), None)
        );
        assert_eq!(
            decide_once(&p, &killed(9), &ctx(2)),
            retry_after(secs(10.0), None)
        );
        assert_eq!(
            decide_once(&p, &exited(1), &ctx(3)),
            retry_after(secs(20.0), None)
        );
    }

    #[test]
    fn gives_up_when_retries_are_exhausted() {
        let p = policy();
        assert_eq!(
            decide_once(&p, &exited(1), &ctx(4)),
            gave_up("retries exhausted (3/3)")
        );
        let none = RetryPolicy {
            max_retries: 0,
            ..policy()
        };
        assert_eq!(
            decide_once(&none, &exited(1), &ctx(1)),
            gave_up("retries exhausted (0/0)")
        );
    }

    #[test]
    fn gives_up_when_retry_on_crash_is_false() {
        let p = RetryPolicy {
            on_crash: false,
            ..policy()
        };
        assert_eq!(
            decide_once(&p, &exited(1), &ctx(1)),
            gave_up("retry_on_crash is false")
        );
    }

    #[test]
    fn a_retry_rule_overrides_retry_on_crash_false() {
        let p = RetryPolicy {
            on_crash: false,
            ..policy_with_rules()
        };
        assert_eq!(
            decide_once(&p, &exited(75), &ctx(1)),
            retry_after(secs(60.0), Some(2))
        );
    }

    #[test]
    fn a_fail_rule_gives_up() {
        assert_eq!(
            decide_once(&policy_with_rules(), &exited(2), &ctx(1)),
            gave_up("rule spec-runner.toml specs.a.retry_rules[0] says fail")
        );
    }

    #[test]
    fn an_abort_rule_aborts_even_with_no_retries_left() {
        let p = policy_with_rules();
        for retry in [1, 4] {
            assert_eq!(
                decide_once(&p, &exited(3), &ctx(retry)),
                Decision::Abort {
                    reason: "rule spec-runner.toml retry_rules[1] says abort".to_owned()
                }
            );
        }
    }

    #[test]
    fn a_retry_rule_uses_its_own_backoff_with_the_multiplier_and_cap() {
        let p = policy_with_rules();
        assert_eq!(
            decide_once(&p, &exited(75), &ctx(1)),
            retry_after(secs(60.0), Some(2))
        );
        assert_eq!(
            decide_once(&p, &exited(75), &ctx(2)),
            retry_after(secs(120.0), Some(2))
        );
        assert_eq!(
            decide_once(&p, &exited(75), &ctx(3)),
            retry_after(secs(240.0), Some(2))
        );
        let capped = RetryPolicy {
            max_retries: 10,
            ..policy_with_rules()
        };
        assert_eq!(
            decide_once(&capped, &exited(75), &ctx(4)),
            retry_after(secs(300.0), Some(2))
        );
        // Other failures still follow the policy's own backoff.
        assert_eq!(
            decide_once(&p, &exited(1), &ctx(2)),
            retry_after(secs(10.0), None)
        );
    }

    #[test]
    fn a_retry_rule_is_still_bounded_by_max_retries() {
        assert_eq!(
            decide_once(&policy_with_rules(), &exited(75), &ctx(4)),
            gave_up("retries exhausted (3/3)")
        );
    }

    #[test]
    fn gives_up_when_the_run_wide_budget_is_spent() {
        let p = policy();
        let spent = RetryContext {
            budget_left: Some(0),
            ..ctx(1)
        };
        assert_eq!(
            decide_once(&p, &exited(1), &spent),
            gave_up("run-wide retry budget exhausted")
        );
        let one_left = RetryContext {
            budget_left: Some(1),
            ..ctx(1)
        };
        assert_eq!(
            decide_once(&p, &exited(1), &one_left),
            retry_after(secs(5.0), None)
        );
    }

    #[test]
    fn gives_up_when_the_next_retry_would_start_past_max_total() {
        let p = RetryPolicy {
            max_total: Some(secs(60.0)),
            ..policy()
        };
        let at = |elapsed: f64, retry| RetryContext {
            elapsed_since_first_start: secs(elapsed),
            ..ctx(retry)
        };
        // 40 s + 20 s lands exactly on the limit: still allowed.
        assert_eq!(
            decide_once(&p, &exited(1), &at(40.0, 3)),
            retry_after(secs(20.0), None)
        );
        assert_eq!(
            decide_once(&p, &exited(1), &at(40.5, 3)),
            gave_up("next retry would start past retry_max_total_seconds (60s)")
        );
    }

    #[test]
    fn the_delay_is_jittered() {
        let p = RetryPolicy {
            jitter: Jitter::Decorrelated,
            ..policy()
        };
        let after_10s = RetryContext {
            previous_delay: Some(secs(10.0)),
            ..ctx(2)
        };
        let mut rng = rng();
        let delays: Vec<Duration> = (0..200)
            .filter_map(|_| match decide(&p, &exited(1), &after_10s, &mut rng) {
                Decision::Retry { delay, .. } => Some(delay),
                _ => None,
            })
            .collect();
        assert_eq!(delays.len(), 200);
        assert!(delays.iter().all(|&d| secs(5.0) <= d && d <= secs(30.0)));
        assert!(delays.iter().any(|&d| d != delays[0]));
    }

    /// Property tests: bounds and "never panics" over arbitrary, often absurd, inputs.
    mod properties {
        use proptest::prelude::*;
        use rand::SeedableRng;
        use rand::rngs::StdRng;

        use super::super::*;

        /// Everyday delays mixed with extremes: zero, `Duration::MAX` and anything between.
        fn duration() -> impl Strategy<Value = Duration> {
            prop_oneof![
                4 => (0u64..=3_600_000).prop_map(Duration::from_millis),
                2 => (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
                1 => Just(Duration::ZERO),
                1 => Just(Duration::MAX),
            ]
        }

        /// Any multiplier at all, NaN and negative ones included.
        fn any_multiplier() -> impl Strategy<Value = f64> {
            prop_oneof![
                1.0..10.0f64,
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(1e300),
            ]
        }

        /// Multipliers that validation accepts (≥ 1), up to absurd ones.
        fn valid_multiplier() -> impl Strategy<Value = f64> {
            prop_oneof![1.0..4.0f64, 1.0..1e300f64, Just(1.0), Just(f64::INFINITY)]
        }

        fn retry_number() -> impl Strategy<Value = u32> {
            prop_oneof![0u32..40, any::<u32>(), Just(u32::MAX)]
        }

        fn jitter() -> impl Strategy<Value = Jitter> {
            prop_oneof![
                Just(Jitter::None),
                Just(Jitter::Full),
                Just(Jitter::Equal),
                Just(Jitter::Decorrelated),
            ]
        }

        fn timeout_kind() -> impl Strategy<Value = TimeoutKind> {
            prop_oneof![
                Just(TimeoutKind::Activity),
                Just(TimeoutKind::Total),
                Just(TimeoutKind::Any),
            ]
        }

        fn small_ints() -> impl Strategy<Value = Vec<i32>> {
            prop::collection::vec(prop_oneof![-2i32..70, any::<i32>()], 0..4)
        }

        fn rule() -> impl Strategy<Value = RetryRule> {
            let patterns = vec![
                "",
                "x",
                "(?i)rate limit",
                "^$",
                r"\x00",
                "(?-u:.)$",
                r"\bOOM\b",
            ];
            (
                proptest::option::of(small_ints()),
                proptest::option::of(small_ints()),
                proptest::option::of(timeout_kind()),
                proptest::option::of(prop::sample::select(patterns)),
                prop_oneof![
                    Just(RuleAction::Retry),
                    Just(RuleAction::Fail),
                    Just(RuleAction::Abort),
                ],
                proptest::option::of(duration()),
                ".{0,12}",
            )
                .prop_map(
                    |(exit_codes, signals, timeout, pattern, action, backoff, origin)| {
                        RetryRule {
                            when: RuleMatch {
                                exit_codes,
                                signals,
                                timeout,
                                // Fixed, known-good patterns: a bad one is a bug in this test.
                                output: pattern.map(|p| {
                                    std::sync::Arc::new(Regex::new(p).expect("test regex is valid"))
                                }),
                            },
                            action,
                            backoff,
                            origin,
                        }
                    },
                )
        }

        fn policy() -> impl Strategy<Value = RetryPolicy> {
            (
                (any::<u32>(), 0u32..6),
                duration(),
                any_multiplier(),
                duration(),
                jitter(),
                any::<bool>(),
                proptest::option::of(duration()),
                prop::collection::vec(rule(), 0..4),
            )
                .prop_map(
                    |(
                        (max_any, max_small),
                        backoff,
                        multiplier,
                        max_backoff,
                        jitter,
                        on_crash,
                        max_total,
                        rules,
                    )| RetryPolicy {
                        // Small limits make every branch of `decide` likely.
                        max_retries: if max_any % 2 == 0 { max_small } else { max_any },
                        backoff,
                        multiplier,
                        max_backoff,
                        jitter,
                        on_crash,
                        max_total,
                        rules,
                    },
                )
        }

        fn context() -> impl Strategy<Value = RetryContext> {
            (
                prop_oneof![0u32..8, any::<u32>()],
                duration(),
                proptest::option::of(prop_oneof![0u32..3, any::<u32>()]),
                proptest::option::of(duration()),
            )
                .prop_map(|(retry, elapsed, budget_left, previous_delay)| {
                    RetryContext {
                        retry,
                        elapsed_since_first_start: elapsed,
                        budget_left,
                        previous_delay,
                    }
                })
        }

        proptest! {
            #[test]
            fn base_delay_never_exceeds_max_backoff(
                backoff in duration(),
                multiplier in any_multiplier(),
                max_backoff in duration(),
                retry in retry_number(),
            ) {
                prop_assert!(base_delay(backoff, multiplier, max_backoff, retry) <= max_backoff);
            }

            #[test]
            fn base_delay_is_monotonic_when_multiplier_is_at_least_one(
                backoff in duration(),
                multiplier in valid_multiplier(),
                max_backoff in duration(),
                retry in retry_number(),
            ) {
                let retry = retry.min(u32::MAX - 1);
                let this = base_delay(backoff, multiplier, max_backoff, retry);
                let next = base_delay(backoff, multiplier, max_backoff, retry + 1);
                prop_assert!(this <= next, "{this:?} > {next:?}");
            }

            #[test]
            fn schedule_is_bounded(policy in policy()) {
                let delays = schedule(&policy);
                prop_assert!(delays.len() <= SCHEDULE_LIMIT);
                prop_assert!(delays.len() as u64 <= u64::from(policy.max_retries));
                prop_assert!(delays.iter().all(|&d| d <= policy.max_backoff));
            }

            #[test]
            fn jitter_stays_within_its_bounds(
                computed in duration(),
                base in duration(),
                cap in duration(),
                previous in proptest::option::of(duration()),
                seed in any::<u64>(),
            ) {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut jittered =
                    |jitter| apply_jitter(jitter, computed, base, cap, previous, &mut rng);

                prop_assert_eq!(jittered(Jitter::None), computed);

                let full = jittered(Jitter::Full);
                prop_assert!(full <= computed, "full {full:?} > {computed:?}");

                let equal = jittered(Jitter::Equal);
                prop_assert!(computed / 2 <= equal && equal <= computed, "equal {equal:?}");

                let decorrelated = jittered(Jitter::Decorrelated);
                let high = previous.unwrap_or(base).saturating_mul(3).max(base);
                prop_assert!(decorrelated <= cap, "decorrelated {decorrelated:?} > cap");
                prop_assert!(
                    base.min(cap) <= decorrelated && decorrelated <= high,
                    "decorrelated {decorrelated:?} outside [{base:?}, {high:?}]"
                );
            }

            #[test]
            fn decide_never_panics_and_keeps_its_limits(
                policy in policy(),
                exit_code in proptest::option::of(prop_oneof![0i32..70, any::<i32>()]),
                signal in proptest::option::of(prop_oneof![1i32..32, any::<i32>()]),
                timeout in proptest::option::of(timeout_kind()),
                output_tail in prop::collection::vec(any::<u8>(), 0..64),
                ctx in context(),
                seed in any::<u64>(),
            ) {
                let facts = FailureFacts { exit_code, signal, timeout, output_tail: &output_tail };
                let mut rng = StdRng::seed_from_u64(seed);
                match decide(&policy, &facts, &ctx, &mut rng) {
                    Decision::Retry { delay, rule } => {
                        prop_assert!(delay <= policy.max_backoff);
                        prop_assert!(ctx.retry <= policy.max_retries);
                        prop_assert_ne!(ctx.budget_left, Some(0));
                        if let Some(max_total) = policy.max_total {
                            let start = ctx.elapsed_since_first_start.saturating_add(delay);
                            prop_assert!(start <= max_total);
                        }
                        match rule {
                            Some(index) => {
                                let found = matching_rule(&policy.rules, &facts).map(|(i, _)| i);
                                prop_assert_eq!(found, Some(index));
                                prop_assert_eq!(policy.rules[index].action, RuleAction::Retry);
                            }
                            None => prop_assert!(policy.on_crash),
                        }
                    }
                    Decision::GiveUp { reason } | Decision::Abort { reason } => {
                        prop_assert!(!reason.is_empty());
                    }
                }
            }
        }
    }
}
