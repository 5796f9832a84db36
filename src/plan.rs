//! What a run would do: dependency waves, each spec's effective policy with the origin
//! of every value, and its backoff schedule. Pure: renders a loaded pipeline.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::policy::{CommandLine, Pipeline, Spec};
use crate::retry::{self, RetryRule};

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

/// Every policy key of one spec (run-wide ones included), by name.
pub fn policy_json(p: &Pipeline, spec: &Spec) -> Map<String, Value> {
    let r = &spec.policy.retry;
    let pol = &spec.policy;
    let run = &p.run;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("retry_max_retries", json!(r.max_retries));
    put("retry_backoff_seconds", secs(r.backoff));
    put("retry_backoff_multiplier", json!(r.multiplier));
    put("retry_max_backoff_seconds", secs(r.max_backoff));
    put("retry_jitter", json!(r.jitter));
    put("retry_on_crash", json!(r.on_crash));
    put("retry_max_total_seconds", opt_secs(r.max_total));
    put("retry_budget", json!(run.retry_budget));
    put(
        "retry_log_dir",
        json!(show_path(&p.dir, &pol.retry_log_dir)),
    );
    put(
        "retry_rules",
        Value::Array(r.rules.iter().map(rule_json).collect()),
    );
    put("timeout_seconds", opt_secs(pol.timeout));
    put("activity_timeout_seconds", opt_secs(pol.activity_timeout));
    put("terminate_grace_seconds", secs(pol.terminate_grace));
    put("jobs", json!(run.jobs));
    put("fail_fast", json!(run.fail_fast));
    put("state_dir", json!(show_path(&p.dir, &run.state_dir)));
    put(
        "on_exhausted",
        pol.on_exhausted.as_ref().map_or(Value::Null, command_json),
    );
    put(
        "junit_path",
        run.junit_path
            .as_ref()
            .map_or(Value::Null, |j| json!(show_path(&p.dir, j))),
    );
    m
}

/// Where each value in `policy_json` came from.
pub fn origins(p: &Pipeline, spec: &Spec) -> Map<String, Value> {
    let mut m: Map<String, Value> = spec
        .origins
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    for (k, v) in &p.run_origins {
        m.insert((*k).to_string(), json!(v));
    }
    m
}

fn env_json(spec: &Spec) -> Value {
    let m: Map<String, Value> = spec
        .env
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                if is_secret_name(k) {
                    json!("<redacted>")
                } else {
                    json!(v)
                },
            )
        })
        .collect();
    Value::Object(m)
}

/// The `plan --format json` document (DESIGN §5).
pub fn plan_json(p: &Pipeline) -> Value {
    let order: Vec<Vec<&str>> = p
        .waves
        .iter()
        .map(|w| w.iter().map(|&i| p.specs[i].name.as_str()).collect())
        .collect();
    let specs: Vec<Value> = p
        .specs
        .iter()
        .map(|s| {
            let schedule: Vec<f64> = retry::schedule(&s.policy.retry).iter().map(Duration::as_secs_f64).collect();
            json!({
                "name": s.name,
                "command": command_json(&s.command),
                "cwd": show_path(&p.dir, &s.cwd),
                "env": env_json(s),
                "depends_on": s.depends_on.iter().map(|&d| p.specs[d].name.as_str()).collect::<Vec<_>>(),
                "policy": Value::Object(policy_json(p, s)),
                "origins": Value::Object(origins(p, s)),
                "backoff_seconds": schedule,
            })
        })
        .collect();
    json!({ "order": order, "specs": specs })
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

/// The human `plan`: waves, then per spec its command and backoff schedule; with
/// `explain`, every effective value and its origin.
pub fn plan_text(p: &Pipeline, explain: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} specs in {} waves, {} at once",
        p.specs.len(),
        p.waves.len(),
        p.run.jobs
    );
    for (i, wave) in p.waves.iter().enumerate() {
        let names: Vec<&str> = wave.iter().map(|&i| p.specs[i].name.as_str()).collect();
        let _ = writeln!(out, "wave {}: {}", i + 1, names.join(", "));
    }
    for spec in &p.specs {
        let _ = writeln!(out);
        let _ = writeln!(out, "[{}] {}", spec.name, command_text(&spec.command));
        if !spec.depends_on.is_empty() {
            let deps: Vec<&str> = spec
                .depends_on
                .iter()
                .map(|&d| p.specs[d].name.as_str())
                .collect();
            let _ = writeln!(out, "  depends on: {}", deps.join(", "));
        }
        let _ = writeln!(
            out,
            "  backoff: {}",
            schedule_text(&retry::schedule(&spec.policy.retry))
        );
        if explain {
            let _ = writeln!(out, "  cwd = {}", show_path(&p.dir, &spec.cwd));
            for (k, v) in &spec.env {
                let shown = if is_secret_name(k) { "<redacted>" } else { v };
                let _ = writeln!(out, "  env.{k} = {shown}");
            }
            let origins = origins(p, spec);
            let width = origins.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in policy_json(p, spec) {
                let origin = origins
                    .get(&k)
                    .map(value_text)
                    .unwrap_or_else(|| "default".into());
                let _ = writeln!(out, "  {k:width$} = {:<24} ({origin})", value_text(&v));
            }
        }
    }
    out
}
