//! What a run would do: dependency waves, each spec's effective policy with the origin
//! of every value, and its backoff schedule. Pure: renders a loaded pipeline.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value, json};

use crate::config::policy::{CommandLine, Origins, Pipeline, Policy, Spec};
use crate::config::raw::RawRunPolicy;
use crate::retry::{self, RetryRule};
use crate::state::resume::Why;

/// Names that look secret: their values are never printed.
const SECRET_MARKERS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "KEY",
    "CREDENTIAL",
    "AUTH",
];

/// Whether an environment variable's value must be hidden in output.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|m| upper.contains(m))
}

fn secs(d: Duration) -> Value {
    json!(d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, secs)
}

/// A path as the user thinks of it: relative to the pipeline folder when inside it.
pub fn show_path(dir: &Path, p: &Path) -> String {
    match p.strip_prefix(dir) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => p.display().to_string(),
    }
}

fn command_json(c: &CommandLine) -> Value {
    match c {
        CommandLine::Shell(s) => json!(s),
        CommandLine::Argv(v) => json!(v),
    }
}

fn rule_json(rule: &RetryRule) -> Value {
    let mut m = Map::new();
    if let Some(codes) = &rule.when.exit_codes {
        m.insert("exit_codes".into(), json!(codes));
    }
    if let Some(sigs) = &rule.when.signals {
        let names: Vec<Value> = sigs
            .iter()
            .map(|&n| retry::signal_name(n).map_or(json!(n), |s| json!(s)))
            .collect();
        m.insert("signals".into(), Value::Array(names));
    }
    if let Some(t) = rule.when.timeout {
        m.insert("timeout".into(), json!(t));
    }
    if let Some(re) = &rule.when.output {
        m.insert("output".into(), json!(re.as_str()));
    }
    m.insert("action".into(), json!(rule.action));
    if let Some(b) = rule.backoff {
        m.insert("backoff_seconds".into(), secs(b));
    }
    Value::Object(m)
}

/// Every policy key, in the order of DESIGN §3 (retry rules after the retry keys).
pub const POLICY_KEYS: [&str; 22] = [
    "retry_max_retries",
    "retry_backoff_seconds",
    "retry_backoff_multiplier",
    "retry_max_backoff_seconds",
    "retry_jitter",
    "retry_on_crash",
    "retry_max_total_seconds",
    "retry_budget",
    "retry_log_dir",
    "retry_rules",
    "timeout_seconds",
    "activity_timeout_seconds",
    "terminate_grace_seconds",
    "jobs",
    "fail_fast",
    "state_dir",
    "on_exhausted",
    "junit_path",
    "backend",
    "slurm",
    "max_iterations",
    "no_progress_limit",
];

/// The effective value of every policy key of one spec (run-wide ones included), in
/// the order of [`POLICY_KEYS`].
fn policy_values(p: &Pipeline, spec: &Spec) -> [Value; POLICY_KEYS.len()] {
    values_of(p, &spec.policy)
}

/// Every policy key's value under `pol` and the run-wide policy.
fn values_of(p: &Pipeline, pol: &Policy) -> [Value; POLICY_KEYS.len()] {
    let r = &pol.retry;
    let run = &p.run;
    [
        json!(r.max_retries),
        secs(r.backoff),
        json!(r.multiplier),
        secs(r.max_backoff),
        json!(r.jitter),
        json!(r.on_crash),
        opt_secs(r.max_total),
        json!(run.retry_budget),
        json!(show_path(&p.dir, &pol.retry_log_dir)),
        Value::Array(r.rules.iter().map(rule_json).collect()),
        opt_secs(pol.timeout),
        opt_secs(pol.activity_timeout),
        secs(pol.terminate_grace),
        json!(run.jobs),
        json!(run.fail_fast),
        json!(show_path(&p.dir, &run.state_dir)),
        pol.on_exhausted.as_ref().map_or(Value::Null, command_json),
        run.junit_path
            .as_ref()
            .map_or(Value::Null, |j| json!(show_path(&p.dir, j))),
        json!(pol.backend),
        slurm_json(&run.slurm),
        json!(pol.iterate.max_iterations),
        json!(pol.iterate.no_progress_limit),
    ]
}

/// The `[slurm]` table's effective values.
fn slurm_json(s: &crate::config::policy::SlurmSettings) -> Value {
    json!({
        "partition": s.partition,
        "account": s.account,
        "qos": s.qos,
        "sbatch_args": s.sbatch_args,
        "time_limit_margin_seconds": secs(s.time_limit_margin),
        "poll_interval_seconds": secs(s.poll_interval),
    })
}

/// Every policy key of one spec (run-wide ones included), by name.
pub fn policy_json(p: &Pipeline, spec: &Spec) -> Map<String, Value> {
    POLICY_KEYS
        .iter()
        .map(|k| (*k).to_string())
        .zip(policy_values(p, spec))
        .collect()
}

/// Where the value of policy key `key` of `spec` came from.
pub fn origin<'a>(p: &'a Pipeline, spec: &'a Spec, key: &str) -> &'a str {
    origin_in(p, &spec.origins, key)
}

fn origin_in<'a>(p: &'a Pipeline, origins: &'a Origins, key: &str) -> &'a str {
    origins
        .get(key)
        .or_else(|| p.run_origins.get(key))
        .unwrap_or("default")
}

/// Where each value in `policy_json` came from.
pub fn origins(p: &Pipeline, spec: &Spec) -> Map<String, Value> {
    POLICY_KEYS
        .iter()
        .map(|k| ((*k).to_string(), json!(origin(p, spec, k))))
        .collect()
}

/// The `plan --format json` document (DESIGN §5), serialized as it is written:
/// `serde_json::to_string_pretty(&plan_json(&p))`.
///
/// It streams instead of building a `serde_json::Value` first: for a 1,000-spec
/// pipeline the tree (about 100 allocations per spec), its copy into the output and
/// its drop cost more than loading the pipeline did.
///
/// `view.only` limits it to some specs: `order` keeps their names (waves left empty
/// are dropped), `specs` only them.
///
/// With `view.why`, each spec also has `will_run` (whether `apply` would run it),
/// `why` (a sentence) and `why_kind` (`new`, `changed`, `fresh`, `failed`, `skipped`,
/// `unfinished`, `dependency_ran`, `dependency_runs`, `up_to_date`).
pub fn plan_json<'a>(p: &'a Pipeline, view: &View<'a>) -> PlanJson<'a> {
    PlanJson(p, view.only, view.why)
}

/// [`plan_json`] of every spec as a `serde_json::Value`, for callers that inspect it.
pub fn plan_value(p: &Pipeline) -> Value {
    serde_json::to_value(PlanJson(p, None, None)).unwrap_or(Value::Null)
}

/// See [`plan_json`].
pub struct PlanJson<'a>(&'a Pipeline, Option<&'a [bool]>, Option<&'a [Why]>);

impl Serialize for PlanJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let PlanJson(p, only, why) = *self;
        let shown = move |i: usize| only.is_none_or(|o| o.get(i).copied().unwrap_or(false));
        let mut doc = ser.serialize_map(Some(2))?;
        if only.is_none() {
            doc.serialize_entry("order", &Seq(p.waves.iter().map(|w| Names(p, w))))?;
        } else {
            let waves: Vec<Vec<usize>> = p
                .waves
                .iter()
                .map(|w| w.iter().copied().filter(|&i| shown(i)).collect::<Vec<_>>())
                .filter(|w| !w.is_empty())
                .collect();
            doc.serialize_entry("order", &Seq(waves.iter().map(|w| Names(p, w))))?;
        }
        let specs = p
            .specs
            .iter()
            .enumerate()
            .filter(move |(i, _)| shown(*i))
            .map(move |(i, s)| SpecJson(p, s, why.and_then(|w| w.get(i))));
        doc.serialize_entry("specs", &Seq(specs))?;
        doc.end()
    }
}

/// Serializes the items of an iterator that can be cloned (walked again).
struct Seq<I>(I);

impl<I, T> Serialize for Seq<I>
where
    I: Iterator<Item = T> + Clone,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let items = self.0.clone();
        let mut seq = ser.serialize_seq(items.size_hint().1)?;
        for item in items {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

/// Spec names by index.
#[derive(Clone, Copy)]
struct Names<'a>(&'a Pipeline, &'a [usize]);

impl Serialize for Names<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let Names(p, indices) = *self;
        Seq(indices.iter().map(|&i| p.specs[i].name.as_ref())).serialize(ser)
    }
}

#[derive(Clone, Copy)]
struct SpecJson<'a>(&'a Pipeline, &'a Spec, Option<&'a Why>);

impl Serialize for SpecJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let SpecJson(p, s, why) = *self;
        let mut m = ser.serialize_map(Some(13))?;
        m.serialize_entry("name", &s.name)?;
        match &*s.command {
            CommandLine::Shell(c) => m.serialize_entry("command", c)?,
            CommandLine::Argv(v) => m.serialize_entry("command", v)?,
        }
        m.serialize_entry("cwd", &show_path(&p.dir, &s.cwd))?;
        m.serialize_entry("env", &EnvJson(s))?;
        m.serialize_entry("depends_on", &Names(p, &s.depends_on))?;
        m.serialize_entry("tasks", &s.tasks().map(|t| show_path(&p.dir, t)))?;
        m.serialize_entry("until", &s.until().map(command_json))?;
        m.serialize_entry("policy", &PolicyJson(p, s))?;
        m.serialize_entry("origins", &OriginsJson(p, s))?;
        let schedule = retry::schedule(&s.policy.retry);
        m.serialize_entry(
            "backoff_seconds",
            &Seq(schedule.iter().map(Duration::as_secs_f64)),
        )?;
        if let Some(why) = why {
            m.serialize_entry("will_run", &why.runs())?;
            m.serialize_entry("why", &why.to_string())?;
            m.serialize_entry("why_kind", why.kind())?;
        }
        m.end()
    }
}

/// A spec's env, secret values redacted.
struct EnvJson<'a>(&'a Spec);

impl Serialize for EnvJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(self.0.env.len()))?;
        for (k, v) in self.0.env.iter() {
            let shown = if is_secret_name(k) { "<redacted>" } else { v };
            m.serialize_entry(k, shown)?;
        }
        m.end()
    }
}

struct PolicyJson<'a>(&'a Pipeline, &'a Spec);

impl Serialize for PolicyJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(POLICY_KEYS.len()))?;
        for (k, v) in POLICY_KEYS.iter().zip(policy_values(self.0, self.1)) {
            m.serialize_entry(k, &v)?;
        }
        m.end()
    }
}

struct OriginsJson<'a>(&'a Pipeline, &'a Spec);

impl Serialize for OriginsJson<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(POLICY_KEYS.len()))?;
        for k in POLICY_KEYS {
            m.serialize_entry(k, origin(self.0, self.1, k))?;
        }
        m.end()
    }
}

/// A command on one line: a multi-line script shows its first line and "…" (the JSON
/// plan has all of it).
fn command_text(c: &CommandLine) -> String {
    let full = match c {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Argv(v) => serde_json::to_string(v).unwrap_or_default(),
    };
    let mut lines = full
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty());
    match (lines.next(), lines.next()) {
        (Some(first), Some(_)) => format!("{first} …"),
        (Some(first), None) => first.to_string(),
        (None, _) => String::new(),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn schedule_text(d: &[Duration]) -> String {
    const SHOWN: usize = 8;
    let mut parts: Vec<String> = d
        .iter()
        .take(SHOWN)
        .map(|d| format!("{}s", round(d.as_secs_f64())))
        .collect();
    if d.len() > SHOWN {
        parts.push(format!("… ({} retries)", d.len()));
    }
    if parts.is_empty() {
        "no retries".into()
    } else {
        parts.join(", ")
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How much `plan` explains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Explain {
    /// Order, commands, dependencies, backoff schedules.
    #[default]
    No,
    /// Also: run-wide values and the global effective policy once, with their origins,
    /// and per spec what differs from it.
    Diff,
    /// Also: every effective value of every spec with its origin.
    All,
}

/// What `plan` shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct View<'a> {
    pub explain: Explain,
    /// Only the specs marked here (by index); every spec when `None`.
    pub only: Option<&'a [bool]>,
    /// Why each spec runs or not (from the saved state), when known.
    pub why: Option<&'a [Why]>,
}

/// One `key = value (origin)` line, the key padded to `width`.
fn explain_line(out: &mut String, width: usize, key: &str, value: &Value, origin: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "  {key:width$} = {:<24} ({origin})", value_text(value));
}

/// The human `plan`: waves, then per spec its command and backoff schedule; with
/// `explain`, the values and their origins (see [`Explain`]).
pub fn plan_text(p: &Pipeline, view: &View) -> String {
    let mut all = String::new();
    write_plan_text(p, view, &mut |part| all.push_str(part));
    all
}

/// [`plan_text`] handed to `part` a piece at a time (about 64 KiB each), not held
/// whole: a 100,000-spec plan is ~14 MB of text.
pub fn write_plan_text(p: &Pipeline, view: &View, part: &mut dyn FnMut(&str)) {
    use std::fmt::Write;
    let shown = |i: usize| view.only.is_none_or(|o| o.get(i).copied().unwrap_or(false));
    let mut out = String::new();
    let total = p.specs.len();
    let _ = write!(
        out,
        "{total} spec{} in {} wave{}, {} at once",
        if total == 1 { "" } else { "s" },
        p.waves.len(),
        if p.waves.len() == 1 { "" } else { "s" },
        p.run.jobs
    );
    if let Some(why) = view.why {
        let runs = (0..total)
            .filter(|&i| why.get(i).is_some_and(Why::runs))
            .count();
        let _ = write!(out, "; {runs} to run, {} up to date", total - runs);
    }
    if view.only.is_some() {
        let n = (0..total).filter(|&i| shown(i)).count();
        let _ = write!(out, "; showing {n}");
    }
    let _ = writeln!(out);
    for (i, wave) in p.waves.iter().enumerate() {
        let names: Vec<&str> = wave
            .iter()
            .filter(|&&i| shown(i))
            .map(|&i| p.specs[i].name.as_ref())
            .collect();
        if !names.is_empty() {
            let _ = writeln!(out, "wave {}: {}", i + 1, names.join(", "));
        }
    }
    let width = POLICY_KEYS.iter().map(|k| k.len()).max().unwrap_or(0);
    let is_run_wide = |k: &str| RawRunPolicy::KEYS.contains(&k);
    let global = values_of(p, &p.global);
    if view.explain == Explain::Diff {
        let _ = writeln!(out);
        let _ = writeln!(out, "run-wide:");
        for (k, v) in POLICY_KEYS.iter().zip(&global) {
            if is_run_wide(k) {
                explain_line(&mut out, width, k, v, origin_in(p, &p.global_origins, k));
            }
        }
        let _ = writeln!(out, "every spec, unless it says otherwise below:");
        for (k, v) in POLICY_KEYS.iter().zip(&global) {
            if !is_run_wide(k) {
                explain_line(&mut out, width, k, v, origin_in(p, &p.global_origins, k));
            }
        }
    }
    for (i, spec) in p.specs.iter().enumerate() {
        if out.len() >= 1 << 16 {
            part(&out);
            out.clear();
        }
        if !shown(i) {
            continue;
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "[{}] {}", spec.name, command_text(&spec.command));
        if !spec.depends_on.is_empty() {
            let deps: Vec<&str> = spec
                .depends_on
                .iter()
                .map(|&d| p.specs[d].name.as_ref())
                .collect();
            let _ = writeln!(out, "  depends on: {}", deps.join(", "));
        }
        match view.why.and_then(|w| w.get(i)) {
            Some(why) if why.runs() => {
                let _ = writeln!(out, "  runs: {why}");
            }
            Some(why) => {
                let _ = writeln!(out, "  {why}");
            }
            None => {}
        }
        let _ = writeln!(
            out,
            "  backoff: {}",
            schedule_text(&retry::schedule(&spec.policy.retry))
        );
        if spec.iterates() {
            let i = spec.policy.iterate;
            let _ = writeln!(
                out,
                "  iterates: at most {} iterations, fails after {} in a row without progress",
                i.max_iterations, i.no_progress_limit
            );
        }
        if view.explain == Explain::No {
            continue;
        }
        let cwd = show_path(&p.dir, &spec.cwd);
        if view.explain == Explain::All || cwd != "." {
            let _ = writeln!(out, "  cwd = {cwd}");
        }
        // Loop keys come only from the pipeline file.
        let file = show_path(&p.dir, &p.file);
        if let Some(t) = spec.tasks() {
            let _ = writeln!(
                out,
                "  tasks = {} ({file}: specs.{}.tasks)",
                show_path(&p.dir, t),
                spec.name
            );
        }
        if let Some(u) = spec.until() {
            let _ = writeln!(
                out,
                "  until = {} ({file}: specs.{}.until)",
                command_text(u),
                spec.name
            );
        }
        for (k, v) in spec.env.iter() {
            let shown = if is_secret_name(k) { "<redacted>" } else { v };
            let _ = writeln!(out, "  env.{k} = {shown}");
        }
        for ((k, v), g) in POLICY_KEYS.iter().zip(policy_values(p, spec)).zip(&global) {
            let origin = origin(p, spec, k);
            // A value of its own, or the same value from somewhere else (a per-spec
            // variable that repeats the global value), is worth a line.
            let differs = v != *g || origin != origin_in(p, &p.global_origins, k);
            if view.explain == Explain::All || differs {
                explain_line(&mut out, width, k, &v, origin);
            }
        }
    }
    part(&out);
}
