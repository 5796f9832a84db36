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
    pub exit_codes: Option<Vec<i32>>,
    /// Signal numbers.
    pub signals: Option<Vec<i32>>,
    pub timeout: Option<TimeoutKind>,
    /// Matched against the last 64 KiB of the attempt's output.
    pub output: Option<Regex>,
}

/// One validated retry rule.
#[derive(Clone, Debug)]
pub struct RetryRule {
    pub when: RuleMatch,
    pub action: RuleAction,
    /// This rule's own first delay; the multiplier and cap still apply.
    pub backoff: Option<Duration>,
    /// Where the rule was written, for reasons: e.g. `spec-runner.toml retry_rules[1]`.
    pub origin: String,
}

/// The effective retry policy of one spec.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Duration,
    pub multiplier: f64,
    pub max_backoff: Duration,
    pub jitter: Jitter,
    pub on_crash: bool,
    pub max_total: Option<Duration>,
    /// The spec's own rules first, then the global ones: first match wins.
    pub rules: Vec<RetryRule>,
}

// TEMPORARY until the retry branch lands.
pub fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("SIG").unwrap_or(&n);
    [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM",
    ]
    .iter()
    .position(|s| *s == n)
    .map(|i| i as i32 + 1)
}
// TEMPORARY until the retry branch lands.
pub fn schedule(policy: &RetryPolicy) -> Vec<Duration> {
    (1..=policy.max_retries.min(10_000))
        .map(|n| {
            policy
                .backoff
                .mul_f64(policy.multiplier.powi(n as i32 - 1))
                .min(policy.max_backoff)
        })
        .collect()
}
pub fn signal_name(n: i32) -> Option<&'static str> {
    [
        "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE",
        "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM",
    ]
    .get((n - 1) as usize)
    .copied()
}
