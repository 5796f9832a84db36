//! Types that mirror the files: serde + schemars, nothing validated yet.
//!
//! The loader deserializes every key into these field types one by one (so that it can
//! report every problem, not only the first), and the JSON schemas under `schema/` are
//! generated from these same structs.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::retry::{Jitter, RuleAction, TimeoutKind};

/// A duration in seconds: a number (fractions allowed) or a string such as `"90s"`,
/// `"5m"`, `"1.5h"`, `"250ms"`, or a compound one such as `"1h30m"` or `"2h 15m 30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub f64);

/// Largest duration we accept: about 31 years, far beyond any sane timeout, and small
/// enough that arithmetic on it never overflows a `Duration`.
pub const MAX_SECONDS: f64 = 1.0e9;

impl Seconds {
    /// Parses `"90s"`, `"5m"`, `"1.5h"`, `"250ms"`, `"2d"`, a bare number of seconds, or
    /// a compound duration such as `"1h30m"` (humantime's syntax: whole numbers, each
    /// with its unit).
    pub fn parse(text: &str) -> Result<Seconds, String> {
        Seconds::parse_simple(text).or_else(|simple| {
            // Only a duration of several parts goes to humantime: a single one is the
            // simple parser's, whose message names the unit it did not know.
            let t = text.trim();
            let is_unit = |c: char| c.is_alphabetic();
            let compound = t.trim_end_matches(is_unit).contains(is_unit);
            match humantime::parse_duration(t) {
                Ok(d) if compound => {
                    let seconds = d.as_secs_f64();
                    Seconds::check(seconds, &format!("`{text}` ({seconds} seconds)"))
                }
                _ => Err(simple),
            }
        })
    }

    /// One number, optionally with fractions, and one optional unit.
    fn parse_simple(text: &str) -> Result<Seconds, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            format!(
                "`{text}` is not a duration (expected e.g. 30, \"90s\", \"5m\", \"1h\", \"1h30m\")"
            )
        })?;
        let factor = match unit.trim() {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "ms" => 0.001,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            other => {
                return Err(format!(
                    "`{text}` is not a duration: unknown unit `{other}` (expected a number followed by ms, s, m, h or d, or parts like \"1h30m\")"
                ));
            }
        };
        let seconds = value * factor;
        Seconds::check(seconds, &format!("`{text}` ({seconds} seconds)"))
    }

    fn from_f64(value: f64) -> Result<Seconds, String> {
        Seconds::check(value, &value.to_string())
    }

    /// `value` seconds when in range; `shown` names it in the error.
    fn check(value: f64, shown: &str) -> Result<Seconds, String> {
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{shown} is out of range: expected a duration ≥ 0"));
        }
        if value > MAX_SECONDS {
            return Err(format!(
                "{shown} is too long: expected at most {MAX_SECONDS} seconds (about 31 years)"
            ));
        }
        Ok(Seconds(value))
    }

    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a duration ≥ 0: seconds as a number, or a string like \"90s\" or \"5m\"",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Seconds::from_f64(v as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                Seconds::from_f64(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::from_f64(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                Seconds::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A compound duration as humantime reads it, as a JSON-schema pattern: whole numbers,
/// each with a unit.
const COMPOUND_DURATION_PATTERN: &str = "^\\s*([0-9]+(\\.[0-9]+)?\\s*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\\s*)+$";

impl JsonSchema for Seconds {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Seconds".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: seconds as a number (fractions allowed), or a string such as \"90s\", \"5m\", \"1.5h\", \"250ms\", or a compound one such as \"1h30m\".",
            "anyOf": [
                { "type": "number", "minimum": 0, "maximum": MAX_SECONDS },
                { "type": "string", "pattern": SECONDS_PATTERN },
                { "type": "string", "pattern": COMPOUND_DURATION_PATTERN }
            ]
        })
    }
}

/// A command: a string runs under `sh -c`; an array of strings runs directly.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawCommand {
    Shell(String),
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a command: a string (run with `sh -c`) or an array of strings (run directly)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    argv.push(arg);
                }
                Ok(RawCommand::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawCommand {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Command".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A command: a string runs under `sh -c`; an array of strings runs directly (the first is looked up on PATH).",
            "anyOf": [
                { "type": "string", "pattern": NON_BLANK },
                {
                    "type": "array",
                    "prefixItems": [{ "type": "string", "pattern": NON_BLANK }],
                    "items": { "type": "string" },
                    "minItems": 1
                }
            ]
        })
    }
}

/// A JSON-schema pattern that a string matches when it is not blank: it holds a
/// character other than ASCII white space. (ECMA 262's `\S` would also refuse U+FEFF,
/// which Rust's `trim`, and so the loader, keeps; this refuses only what the loader
/// refuses too.)
pub const NON_BLANK: &str = r"[^\t\n\v\f\r ]";

/// The schema of a duration that must be more than 0 (`timeout_seconds`,
/// `activity_timeout_seconds`): 0 would end every attempt at once.
fn positive_seconds(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A duration > 0: seconds as a number (fractions allowed), or a string such as \"90s\", \"5m\", \"1.5h\", \"250ms\", or a compound one such as \"1h30m\". Leave the key out for no limit.",
        "anyOf": [
            { "type": "number", "exclusiveMinimum": 0, "maximum": MAX_SECONDS },
            { "type": "string", "pattern": format!("(?=[^1-9]*[1-9]){SECONDS_PATTERN}") },
            { "type": "string", "pattern": format!("(?=[^1-9]*[1-9]){COMPOUND_DURATION_PATTERN}") }
        ]
    })
}

/// The strings [`Seconds::parse`] reads, as a JSON-schema pattern.
const SECONDS_PATTERN: &str = "^\\s*([0-9]+(\\.[0-9]*)?|\\.[0-9]+)\\s*(ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hour|hours|d|day|days)?\\s*$";

/// One selective-retry rule. Every condition present must hold; the first matching
/// rule wins (a spec's own rules before the global ones).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRetryRule {
    /// Match when the command exited with one of these codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1), inner(range(min = 0, max = 255)))]
    pub exit_codes: Option<Vec<i32>>,
    /// Match when the command was killed by one of these signals, e.g. `["SIGSEGV"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub signals: Option<Vec<String>>,
    /// Match when the attempt timed out: `activity` (a hang), `total`, or `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutKind>,
    /// Match when this regular expression matches the last 64 KiB of the attempt's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `retry`, `fail` (no more retries for this spec) or `abort` (stop the whole run).
    pub action: RuleAction,
    /// This rule's own first delay; the multiplier and cap still apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_seconds: Option<Seconds>,
}

/// Keys of a retry rule, in declaration order: the loader reads a rule key by key.
pub const RULE_KEYS: &[&str] = &[
    "exit_codes",
    "signals",
    "timeout",
    "output",
    "action",
    "backoff_seconds",
];

/// Declares the policy structs and, from the same field list, the table of keys the
/// loader walks: one place to add a key.
macro_rules! policy_struct {
    (
        $(#[$smeta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$smeta])*
        #[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $name {
            /// Every key of this struct, in declaration order.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Deserializes `value` into the field named `key`. `None` when no such key.
            pub fn set(
                &mut self,
                key: &str,
                value: &figment::value::Value,
            ) -> Option<Result<(), figment::Error>> {
                match key {
                    $(stringify!($field) => Some(value.deserialize().map(|v| self.$field = Some(v))),)*
                    _ => None,
                }
            }
        }
    };
}

policy_struct! {
    /// Policy keys a spec may override (in `[specs.NAME]` or `SPEC_RUNNER_SPECS__NAME__KEY`).
    pub struct RawPolicy {
        /// Retries after the first attempt (attempts = 1 + retries). Default 3.
        retry_max_retries: u32,
        /// Delay before the first retry. Default 5 s.
        retry_backoff_seconds: Seconds,
        /// Factor applied to the delay for each further retry; at least 1. Default 2.0.
        #[schemars(range(min = 1))]
        retry_backoff_multiplier: f64,
        /// Cap on one delay. Default 300 s.
        retry_max_backoff_seconds: Seconds,
        /// Randomisation of each delay: `none`, `full`, `equal` or `decorrelated` (the AWS formulas). Default `none`.
        retry_jitter: Jitter,
        /// Retry failed attempts at all. Default true.
        retry_on_crash: bool,
        /// Give up when the next retry would start later than this after the first attempt started. Default: no limit.
        retry_max_total_seconds: Seconds,
        /// Folder of the attempt logs, `<dir>/<spec>/task_<attempt>.log`; relative to the pipeline file. Default `.spec-runner/logs`.
        retry_log_dir: String,
        /// Selective retry: ordered rules, first match wins; a spec's rules come before the global ones.
        retry_rules: Vec<RawRetryRule>,
        /// Wall-clock limit of one attempt; more than 0. Default: none.
        #[schemars(schema_with = "positive_seconds")]
        timeout_seconds: Seconds,
        /// End an attempt that printed nothing for this long (a hang); more than 0. Default: none.
        #[schemars(schema_with = "positive_seconds")]
        activity_timeout_seconds: Seconds,
        /// After SIGTERM to the process group, SIGKILL it after this long. Default 10 s.
        terminate_grace_seconds: Seconds,
        /// A command run when a spec fails for good. Default: none.
        on_exhausted: RawCommand,
        /// Where attempts run: `local` (process groups on this machine) or `slurm` (one batch job per attempt; see the `slurm` table). Default `local`.
        backend: crate::config::policy::BackendKind,
        /// An iterating spec (one with `tasks` or `until`) gives up when its work is not done after this many iterations. Default 50.
        #[schemars(range(min = 1))]
        max_iterations: u32,
        /// An iterating spec fails when this many iterations in a row made no progress (no new commit, no more tasks checked). Default 3. config.json's `no_commit_limit` sets it too.
        #[schemars(range(min = 1))]
        no_progress_limit: u32,
    }
}

policy_struct! {
    /// Run-wide keys: global only (not inside `[specs.NAME]`).
    pub struct RawRunPolicy {
        /// Specs running at once; 1 to 1024. Default: the number of CPUs.
        #[schemars(range(min = 1, max = 1024))]
        jobs: u32,
        /// Stop starting new specs after the first spec fails for good. Default false.
        fail_fast: bool,
        /// Run-wide cap on retries across all specs. Default: no cap.
        retry_budget: u32,
        /// Folder of the state file and lock, relative to the pipeline file. Default `.spec-runner`.
        state_dir: String,
        /// Write a JUnit XML report there after each run. Default: none.
        junit_path: String,
        /// Settings of the Slurm backend (specs with `backend = "slurm"`).
        slurm: RawSlurm,
    }
}

/// The `[slurm]` table: how specs with `backend = "slurm"` are submitted and watched.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSlurm {
    /// `sbatch --partition`. Default: the cluster's default partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NON_BLANK))]
    pub partition: Option<String>,
    /// `sbatch --account`. Default: the user's default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NON_BLANK))]
    pub account: Option<String>,
    /// `sbatch --qos`. Default: the account's default QOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NON_BLANK))]
    pub qos: Option<String>,
    /// Further `sbatch` arguments, one per element, e.g. `["--mem=4G", "--cpus-per-task=2"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = "^-")))]
    pub sbatch_args: Option<Vec<String>>,
    /// Slurm's own time limit (`--time`) of a spec with `timeout_seconds` is that timeout plus this margin, rounded up to whole minutes: a backstop in case the runner dies. Default 300 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_margin_seconds: Option<Seconds>,
    /// How often one `squeue` call checks every job of the run. Default 1 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_seconds: Option<Seconds>,
}

/// One spec: `[specs.NAME]` in the pipeline file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// The command: a string runs under `sh -c`; an array runs directly.
    #[schemars(required)]
    pub command: Option<RawCommand>,
    /// Working directory, relative to the pipeline file. Default: the pipeline file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Variables added to the command's environment. Names are not empty and hold no `=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("propertyNames" = { "minLength": 1, "pattern": r"^[^=\x00]*$" }))]
    pub env: Option<BTreeMap<String, String>>,
    /// Specs that must succeed before this one starts. A matrix spec's name stands for
    /// all its instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(regex(pattern = SPEC_NAME_PATTERN)))]
    pub depends_on: Option<Vec<String>>,
    /// Fan-out: one instance of this spec per combination of values, e.g.
    /// `{ file = ["a.py", "b.py"], py = ["3.11", "3.12"] }`, or a list from files:
    /// `{ file = { glob = "tests/test_*.py" } }`. `${matrix.KEY}` in `command`, `cwd` and
    /// `env` values is replaced; each instance gets `SPEC_RUNNER_MATRIX_<KEY>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("propertyNames" = { "pattern": MATRIX_KEY_PATTERN }, "minProperties" = 1))]
    pub matrix: Option<BTreeMap<String, RawMatrixValues>>,
    /// A `tasks.md` (relative to `cwd`): the spec iterates until no open task is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tasks: Option<String>,
    /// A command (run in `cwd`): the spec iterates until it exits 0. With `tasks`, both must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<RawCommand>,
    #[serde(flatten)]
    pub policy: RawPolicy,
}

/// Matrix keys: usable in `${matrix.KEY}` and as `SPEC_RUNNER_MATRIX_<KEY>`.
pub const MATRIX_KEY_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

/// The values of one matrix key: a list, or the files a glob matches.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RawMatrixValues {
    List(Vec<String>),
    Glob { glob: String },
}

impl<'de> Deserialize<'de> for RawMatrixValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMatrixValues;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of values, or { glob = \"pattern\" }")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawMatrixValues, A::Error> {
                let mut values = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    values.push(v);
                }
                Ok(RawMatrixValues::List(values))
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawMatrixValues, A::Error> {
                let mut glob = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "glob" {
                        return Err(de::Error::unknown_field(&key, &["glob"]));
                    }
                    glob = Some(map.next_value::<String>()?);
                }
                glob.map(|glob| RawMatrixValues::Glob { glob })
                    .ok_or_else(|| de::Error::missing_field("glob"))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RawMatrixValues {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MatrixValues".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The values of one matrix key: a non-empty list (strings; whole numbers and booleans are taken as their text), or `{ glob = \"pattern\" }`: the paths it matches, relative to the pipeline file, sorted.",
            "anyOf": [
                { "type": "array", "items": { "type": ["string", "integer", "boolean"] }, "minItems": 1 },
                {
                    "type": "object",
                    "properties": { "glob": { "type": "string", "minLength": 1 } },
                    "required": ["glob"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// Spec names as a JSON-schema (ECMA 262) pattern: what `validate::valid_spec_name`
/// accepts.
pub const SPEC_NAME_PATTERN: &str = r"^(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]*$";

/// Keys of a spec table besides the policy keys.
pub const SPEC_KEYS: &[&str] = &[
    "command",
    "cwd",
    "env",
    "depends_on",
    "tasks",
    "until",
    "matrix",
];

/// The pipeline file, `spec-runner.toml`. Used to generate its schema; the loader walks
/// the same field types key by key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[schemars(
    title = "spec-runner pipeline file (spec-runner.toml)",
    description = "A pipeline of specs for spec-runner: run-wide keys and policy defaults at the top, one [specs.NAME] table per spec (its command, cwd, env, depends_on and policy overrides)."
)]
pub struct RawPipelineFile {
    #[serde(flatten)]
    pub run: RawRunPolicy,
    #[serde(flatten)]
    pub policy: RawPolicy,
    /// The specs, by name (`[A-Za-z0-9][A-Za-z0-9._-]*`, no `..`).
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "pattern": SPEC_NAME_PATTERN }))]
    pub specs: BTreeMap<String, RawSpec>,
}

/// Keys of the original's `config.json` that take effect under another name:
/// (the original's name, spec-runner's).
pub const CONFIG_ALIASES: &[(&str, &str)] = &[("no_commit_limit", "no_progress_limit")];

/// Keys of the original spec-workflow-runner's `config.json` that spec-runner accepts
/// and ignores (named in one warning). (`no_commit_limit` is not one: it takes effect
/// as `no_progress_limit`, see [`CONFIG_ALIASES`].)
pub const LEGACY_KEYS: &[&str] = &[
    "repos_root",
    "spec_workflow_dir_name",
    "specs_subdir",
    "tasks_filename",
    "codex_command",
    "prompt_template",
    "pre_session_validation_prompt",
    "enable_pre_session_validation",
    "log_dir_name",
    "log_file_template",
    "ignore_dirs",
    "monitor_refresh_seconds",
    "cache_dir",
    "cache_max_age_days",
    "activity_check_interval_seconds",
    "mcp_server_name",
    "mcp_package",
    "codex_config_overrides",
    "enable_smart_completion_check",
    "completion_check_max_probes",
    "completion_check_probe_interval",
    "enable_three_phase_workflow",
    "block_commits_during_implementation",
    "implementation_prompt",
    "post_session_verification_prompt",
    "tui_refresh_seconds",
    "tui_log_tail_lines",
    "tui_min_terminal_cols",
    "tui_min_terminal_rows",
    "max_retries",
    "context_limit_wait_seconds",
    "iteration_timeout_seconds",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_keys<T: JsonSchema>() -> Vec<String> {
        let schema = schemars::schema_for!(T).to_value();
        let mut keys: Vec<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|k| (*k).to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn key_lists_match_the_structs() {
        // The loader walks these lists; the schema comes from the structs.
        assert_eq!(schema_keys::<RawRetryRule>(), sorted(RULE_KEYS));
        let spec_keys: Vec<&str> = SPEC_KEYS.iter().chain(RawPolicy::KEYS).copied().collect();
        assert_eq!(schema_keys::<RawSpec>(), sorted(&spec_keys));
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("90", 90.0),
            ("90s", 90.0),
            ("5m", 300.0),
            ("1.5h", 5400.0),
            ("250ms", 0.25),
            ("2d", 172_800.0),
            (" 2 min ", 120.0),
            ("1h30m", 5400.0),
            ("1h 30m", 5400.0),
            ("2h15m30s", 8130.0),
            ("1m500ms", 60.5),
            ("1.5h30m", 7200.0),
            (".5s", 0.5),
            ("0", 0.0),
        ] {
            assert_eq!(Seconds::parse(text), Ok(Seconds(secs)), "{text}");
        }
        for text in [
            "",
            "s",
            "-5s",
            "5 parsecs",
            "1e3",
            "1.2.3s",
            "inf",
            "NaN",
            "20000d",
            "1h30",
            "1h-30m",
            "40000w2d",
        ] {
            assert!(Seconds::parse(text).is_err(), "{text}");
        }
    }
}
