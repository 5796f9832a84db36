//! Judging the merged values: every key typed, every range checked, specs and their
//! dependency graph sound. Collects every problem before giving up.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use figment::value::{Dict, Value};
use regex::bytes::Regex;

use super::diag::{PathSeg, Problem, did_you_mean, path, show_value};
use super::load::{LayerKind, Layers, Target, TomlIndex, known_root_keys};
use super::policy::{CommandLine, Iterate, Origins, Pipeline, Policy, RunPolicy, Spec};
use super::raw::{
    LEGACY_KEYS, RULE_KEYS, RawCommand, RawPolicy, RawRetryRule, RawRunPolicy, SPEC_KEYS,
};
use crate::retry::{Jitter, RetryPolicy, RetryRule, RuleAction, RuleMatch, TimeoutKind};

/// Defaults of DESIGN §3.
pub mod defaults {
    pub const RETRY_MAX_RETRIES: u32 = 3;
    pub const RETRY_BACKOFF_SECONDS: f64 = 5.0;
    pub const RETRY_BACKOFF_MULTIPLIER: f64 = 2.0;
    pub const RETRY_MAX_BACKOFF_SECONDS: f64 = 300.0;
    pub const RETRY_ON_CRASH: bool = true;
    pub const RETRY_LOG_DIR: &str = ".spec-runner/logs";
    pub const TERMINATE_GRACE_SECONDS: f64 = 10.0;
    pub const FAIL_FAST: bool = false;
    pub const STATE_DIR: &str = ".spec-runner";
    pub const MAX_ITERATIONS: u32 = 50;
    pub const NO_PROGRESS_LIMIT: u32 = 3;
}

struct Ctx<'a> {
    layers: &'a Layers,
    toml: TomlIndex<'a>,
    problems: Vec<Problem>,
    /// While checking an overridden value: the layer that holds it, which is where
    /// its problems are, rather than the layer the merged value came from.
    in_layer: Option<usize>,
    /// The problems pushed so far, as printed: a matrix spec's problem is found once
    /// per instance and reported once.
    reported: std::collections::HashSet<String>,
}

impl Ctx<'_> {
    /// A problem with the value at `at`.
    fn problem(&mut self, at: &[PathSeg], message: String) {
        self.push(at, Target::Value, message);
    }

    /// A problem with the key at `at` itself (it should not be there).
    fn key_problem(&mut self, at: &[PathSeg], message: String) {
        self.push(at, Target::Key, message);
    }

    fn push(&mut self, at: &[PathSeg], target: Target, message: String) {
        let source = match self.in_layer {
            Some(layer) => self.layers.source_in(layer, at, target, &self.toml),
            None => self.layers.source_of(at, target, &self.toml),
        };
        // A problem written in the file is named by the file's key path: a matrix
        // instance's by its matrix spec's, once for all instances.
        let key = match source {
            super::diag::Source::File { .. } => PathSeg::join(&self.layers.in_file(at)),
            _ => PathSeg::join(at),
        };
        let problem = Problem::new(source, &key, message);
        if self.reported.insert(problem.to_string()) {
            self.problems.push(problem);
        }
    }
}

/// Validates merged layers into a pipeline, or returns every problem found.
pub fn validate(layers: &Layers) -> Result<Pipeline, Vec<Problem>> {
    let mut cx = Ctx {
        layers,
        toml: TomlIndex::new(layers.pipeline_text()),
        problems: layers.problems.clone(),
        in_layer: None,
        reported: std::collections::HashSet::new(),
    };
    let mut run = RawRunPolicy::default();
    let mut global = RawPolicy::default();
    let mut legacy = Vec::new();
    let mut specs_value = None;

    for (key, value) in &layers.merged {
        let at = path(&[key]);
        if key == "specs" {
            specs_value = Some(value);
            continue;
        }
        if set_policy_key(&mut cx, &mut global, key, value, &at)
            || set_run_key(&mut cx, &mut run, key, value, &at)
        {
            continue;
        }
        let from_json = layers.layer_of(&at).map(|l| l.kind) == Some(LayerKind::ConfigJson);
        if from_json && LEGACY_KEYS.contains(&key.as_str()) {
            legacy.push(key.as_str());
            continue;
        }
        let hint = did_you_mean(key, known_root_keys())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        cx.key_problem(&at, format!("unknown key{hint}"));
    }

    // config.json holds policy defaults only: no specs, and no command (a command runs
    // with the user's rights, so it comes only from the committed pipeline file;
    // variables that try are rejected in `load`).
    if let Some(json) = layers
        .layers
        .iter()
        .find(|l| l.kind == LayerKind::ConfigJson)
    {
        for (key, why) in [
            (
                "specs",
                "specs are declared only in the pipeline file; config.json holds policy defaults",
            ),
            (
                "on_exhausted",
                "`on_exhausted` is a command: commands come only from the pipeline file",
            ),
        ] {
            if json.dict.contains_key(key) {
                cx.problems.push(Problem::new(
                    super::diag::Source::File {
                        path: json.display.clone(),
                        location: None,
                    },
                    key,
                    why.into(),
                ));
            }
        }
    }

    check_policy(&mut cx, &global, &[]);

    // The spec tables, by name. A spec's raw parts are read here to check them, and
    // read again when its `Spec` is built, rather than kept for all specs at once;
    // problems found twice are reported once. A spec table kept as the file's text
    // (`Layers::lazy`) is parsed for each reading: once, below.
    let mut spec_tables: Vec<(&str, &Dict)> = Vec::new();
    match specs_value {
        None => {}
        Some(Value::Dict(_, specs)) => {
            spec_tables.reserve_exact(specs.len());
            for (name, value) in specs {
                let at = path(&["specs", name]);
                check_spec_name(&mut cx, name, &at);
                match value {
                    // A spec kept as the file's text is checked when its `Spec` is
                    // built, below, so that it is parsed once more, not twice: its
                    // problems are at its own keys, so they read in the same order.
                    Value::Dict(_, table) if layers.lazy.has(name) => {
                        spec_tables.push((name.as_str(), table));
                    }
                    Value::Dict(_, table) => {
                        let parts = spec_parts(&mut cx, name, table);
                        check_policy(&mut cx, &parts.policy, &at);
                        spec_tables.push((name.as_str(), table));
                    }
                    other => cx.problem(
                        &at,
                        format!("expected a table of spec keys, found {}", show_value(other)),
                    ),
                }
            }
        }
        Some(other) => cx.problem(
            &path(&["specs"]),
            format!("expected a table of specs, found {}", show_value(other)),
        ),
    }

    let dir = layers.pipeline_dir.clone();
    let run_policy = run_policy(&mut cx, &run, &dir);
    let global_rules = rules(
        &mut cx,
        global.retry_rules.as_deref().unwrap_or(&[]),
        &path(&["retry_rules"]),
    );

    // Where each global value came from, worked out once for all specs.
    let default: Arc<str> = Arc::from("default");
    let global_origins: Vec<(&'static str, Arc<str>)> = RawPolicy::KEYS
        .iter()
        .map(|&key| {
            let origin = layers
                .origin(&path(&[key]))
                .map_or_else(|| default.clone(), Arc::from);
            (key, origin)
        })
        .collect();

    // What a spec that sets nothing of its own gets: `plan --explain` shows it once
    // and, per spec, only what differs.
    let (global_policy, global_policy_origins) = effective_policy(
        &mut cx,
        "",
        &RawPolicy::default(),
        &global,
        &global_origins,
        Vec::new(),
        &global_rules,
        &dir,
    );
    let (global_policy, global_policy_origins) =
        (Arc::new(global_policy), Arc::new(global_policy_origins));

    // Names → indices, for depends_on.
    let names: Vec<&str> = spec_tables.iter().map(|(n, _)| *n).collect();
    let mut specs = Vec::with_capacity(spec_tables.len());
    let no_env: Arc<BTreeMap<String, String>> = Arc::default();
    // Each distinct working folder once, shared by the specs that run in it.
    let mut folders: BTreeMap<std::path::PathBuf, Arc<std::path::PathBuf>> = BTreeMap::new();
    // Each distinct command once, likewise.
    let mut commands: std::collections::HashSet<Arc<CommandLine>> =
        std::collections::HashSet::new();
    for &(name, table) in &spec_tables {
        let parts = spec_parts(&mut cx, name, &layers.spec_table(name, table));
        let at = path(&["specs", name]);
        if layers.lazy.has(name) {
            check_policy(&mut cx, &parts.policy, &at);
        }
        let command = match &parts.command {
            // Present but of the wrong type: already reported.
            None if parts.has_command => CommandLine::Argv(Vec::new()),
            None => {
                cx.problem(
                    &at,
                    "missing `command` (a string run with `sh -c`, or an array of strings)".into(),
                );
                CommandLine::Argv(Vec::new())
            }
            Some(RawCommand::Shell(s)) => {
                if s.trim().is_empty() {
                    cx.problem(
                        &path(&["specs", name, "command"]),
                        "empty command: expected a command to run".into(),
                    );
                }
                CommandLine::Shell(s.clone())
            }
            Some(RawCommand::Argv(v)) => {
                if v.first().is_none_or(|p| p.trim().is_empty()) {
                    cx.problem(
                        &path(&["specs", name, "command"]),
                        "empty command: expected a non-empty array whose first element is the program".into(),
                    );
                }
                CommandLine::Argv(v.clone())
            }
        };
        let mut depends_on = Vec::new();
        for (i, dep) in parts.depends_on.iter().enumerate() {
            // A matrix spec's name stands for all its instances.
            let group = layers.matrix_groups.get(dep.as_str());
            let targets: Vec<&str> = match group {
                Some(instances) if names.binary_search(&dep.as_str()).is_err() => {
                    instances.iter().map(String::as_str).collect()
                }
                _ => vec![dep.as_str()],
            };
            match targets
                .iter()
                .map(|t| names.binary_search(t))
                .collect::<Result<Vec<usize>, usize>>()
            {
                Ok(indices) => {
                    for idx in indices {
                        if !depends_on.contains(&idx) {
                            depends_on.push(idx);
                        }
                    }
                }
                Err(_) => {
                    let candidates = names
                        .iter()
                        .copied()
                        .chain(layers.matrix_groups.keys().map(String::as_str));
                    let hint = did_you_mean(dep, candidates)
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    let mut at = path(&["specs", name, "depends_on"]);
                    at.push(PathSeg::Index(i));
                    cx.problem(&at, format!("`{dep}` is not a spec of this pipeline{hint}"));
                }
            }
        }
        for (key, value) in &parts.env {
            let at = path(&["specs", name, "env", key]);
            let problem = if key.is_empty() {
                Some("empty variable name: expected a name such as `RUST_LOG`".to_string())
            } else if key.contains('=') {
                Some(format!(
                    "variable name `{key}` holds `=`: expected a name without `=` (the value goes after the `=` of TOML)"
                ))
            } else if key.contains('\0') {
                Some("variable name holds a NUL byte: expected a name without one".to_string())
            } else {
                None
            };
            if let Some(message) = problem {
                cx.key_problem(&at, message);
            }
            if value.contains('\0') {
                cx.problem(&at, "value holds a NUL byte, which no environment variable can: expected text without one".into());
            }
        }
        let spec_rules = rules(
            &mut cx,
            parts.policy.retry_rules.as_deref().unwrap_or(&[]),
            &path(&["specs", name, "retry_rules"]),
        );
        let (policy, origins) = effective_policy(
            &mut cx,
            name,
            &parts.policy,
            &global,
            &global_origins,
            spec_rules,
            &global_rules,
            &dir,
        );
        // A spec that takes every value from the global policy (the same origins say
        // so: a spec's own key has an origin naming the spec) shares its one copy.
        let (policy, origins) = if origins == *global_policy_origins {
            (global_policy.clone(), global_policy_origins.clone())
        } else {
            (Arc::new(policy), Arc::new(origins))
        };
        let cwd = parts
            .cwd
            .as_deref()
            .map(|c| dir.join(c))
            .unwrap_or_else(|| dir.clone());
        let command = match commands.get(&command) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(command);
                commands.insert(shared.clone());
                shared
            }
        };
        let cwd = match folders.get(&cwd) {
            Some(shared) => shared.clone(),
            None => {
                let shared = Arc::new(cwd.clone());
                folders.insert(cwd, shared.clone());
                shared
            }
        };
        let tasks = match parts.tasks.as_deref() {
            Some(t) if t.trim().is_empty() => {
                cx.problem(
                    &path(&["specs", name, "tasks"]),
                    "empty path: expected the spec's tasks file, e.g. \"tasks.md\" (relative to `cwd`)".into(),
                );
                None
            }
            Some(t) => Some(cwd.join(t)),
            None => None,
        };
        let until = match &parts.until {
            Some(RawCommand::Shell(s)) if !s.trim().is_empty() => {
                Some(CommandLine::Shell(s.clone()))
            }
            Some(RawCommand::Argv(v)) if v.first().is_some_and(|p| !p.is_empty()) => {
                Some(CommandLine::Argv(v.clone()))
            }
            Some(_) => {
                cx.problem(
                    &path(&["specs", name, "until"]),
                    "empty command: expected a string run with `sh -c`, or a non-empty array whose first element is the program".into(),
                );
                None
            }
            None => None,
        };
        specs.push(Spec {
            name: name.into(),
            command,
            cwd,
            env: if parts.env.is_empty() {
                no_env.clone()
            } else {
                Arc::new(parts.env)
            },
            depends_on: depends_on.into_boxed_slice(),
            iterate: (tasks.is_some() || until.is_some())
                .then(|| Box::new(Iterate { tasks, until })),
            policy,
            origins,
        });
    }

    let waves = match waves(&specs) {
        Ok(w) => w,
        Err(cycles) => {
            for cycle in cycles {
                let names: Vec<&str> = cycle.iter().map(|&i| specs[i].name.as_ref()).collect();
                // Point at the dependency that closes the walk's first step.
                let mut at = path(&["specs", names[0], "depends_on"]);
                let first_dep = spec_tables
                    .iter()
                    .find(|(n, _)| *n == names[0])
                    .map(|&(n, table)| spec_parts(&mut cx, n, &layers.spec_table(n, table)))
                    .and_then(|parts| parts.depends_on.iter().position(|d| d == names[1]));
                if let Some(i) = first_dep {
                    at.push(PathSeg::Index(i));
                }
                cx.problem(
                    &at,
                    format!(
                        "dependency cycle: {} (depends_on must form a DAG)",
                        names.join(" → ")
                    ),
                );
            }
            Vec::new()
        }
    };

    check_shadowed(&mut cx);

    let mut warnings = layers.warnings.clone();
    if !legacy.is_empty() {
        let file = layers
            .layers
            .iter()
            .find(|l| l.kind == LayerKind::ConfigJson)
            .map(|l| l.display.as_str())
            .unwrap_or("config.json");
        warnings.push(format!(
            "{file}: ignoring keys of the original spec-workflow-runner that spec-runner does not use: {}",
            legacy.join(", ")
        ));
    }

    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    let mut run_origins = Origins::default();
    for key in RawRunPolicy::KEYS {
        let origin = layers.origin(&path(&[key]));
        run_origins.insert(key, origin.map_or_else(|| Arc::from("default"), Arc::from));
    }
    Ok(Pipeline {
        file: layers.pipeline_file.clone(),
        dir,
        run: run_policy,
        run_origins,
        global: global_policy,
        global_origins: global_policy_origins,
        groups: layers
            .matrix_groups
            .iter()
            .map(|(base, instances)| {
                let indices = instances
                    .iter()
                    .filter_map(|n| specs.binary_search_by(|s| s.name.as_ref().cmp(n)).ok())
                    .collect();
                (base.clone(), indices)
            })
            .collect(),
        specs,
        waves,
        warnings,
    })
}

/// A spec table's non-policy keys plus its policy overrides.
#[derive(Default)]
struct RawSpecParts {
    command: Option<RawCommand>,
    /// Whether the table has a `command` key at all, valid or not.
    has_command: bool,
    cwd: Option<String>,
    env: BTreeMap<String, String>,
    depends_on: Vec<String>,
    tasks: Option<String>,
    until: Option<RawCommand>,
    policy: RawPolicy,
}

fn spec_parts(cx: &mut Ctx, name: &str, table: &Dict) -> RawSpecParts {
    let mut parts = RawSpecParts::default();
    for (key, value) in table {
        let at = path(&["specs", name, key]);
        let result = match key.as_str() {
            "command" => {
                parts.has_command = true;
                value.deserialize().map(|v| parts.command = Some(v))
            }
            "cwd" => value.deserialize().map(|v| parts.cwd = Some(v)),
            "env" => value.deserialize().map(|v| parts.env = v),
            "depends_on" => value.deserialize().map(|v| parts.depends_on = v),
            "tasks" => value.deserialize().map(|v| parts.tasks = Some(v)),
            "until" => value.deserialize().map(|v| parts.until = Some(v)),
            _ => {
                if set_policy_key(cx, &mut parts.policy, key, value, &at) {
                    continue;
                }
                if RawRunPolicy::KEYS.contains(&key.as_str()) {
                    cx.key_problem(
                        &at,
                        format!("`{key}` is run-wide: set it at the top of the pipeline file, not per spec"),
                    );
                    continue;
                }
                let candidates = SPEC_KEYS.iter().chain(RawPolicy::KEYS).copied();
                let hint = did_you_mean(key, candidates)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                cx.key_problem(&at, format!("unknown key{hint}"));
                continue;
            }
        };
        if let Err(e) = result {
            report_type_error(cx, &at, value, &e);
        }
    }
    parts
}

/// Sets a per-spec-able policy key; `false` when `key` is not one.
fn set_policy_key(
    cx: &mut Ctx,
    raw: &mut RawPolicy,
    key: &str,
    value: &Value,
    at: &[PathSeg],
) -> bool {
    if key == "retry_rules" {
        let Value::Array(_, items) = value else {
            cx.problem(
                at,
                format!(
                    "expected an array of rules ([[retry_rules]] tables), found {}",
                    show_value(value)
                ),
            );
            return true;
        };
        let mut rules = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut at = at.to_vec();
            at.push(PathSeg::Index(i));
            // A bad rule is kept as far as it parsed: its other fields are still
            // checked, the indices of the rules after it stay right, and since its
            // problems are reported it is never run.
            rules.push(parse_rule(cx, item, &at));
        }
        raw.retry_rules = Some(rules);
        return true;
    }
    reported(cx, at, value, raw.set(key, value))
}

fn set_run_key(
    cx: &mut Ctx,
    raw: &mut RawRunPolicy,
    key: &str,
    value: &Value,
    at: &[PathSeg],
) -> bool {
    reported(cx, at, value, raw.set(key, value))
}

/// The outcome of a `Raw*::set`: whether the key was one of the struct's, with a type
/// error reported where the key was written.
fn reported(
    cx: &mut Ctx,
    at: &[PathSeg],
    value: &Value,
    set: Option<Result<(), figment::Error>>,
) -> bool {
    match set {
        None => false,
        Some(Ok(())) => true,
        Some(Err(e)) => {
            report_type_error(cx, at, value, &e);
            true
        }
    }
}

/// One rule, key by key, so that every bad key of it is reported. Keys with problems
/// are left out of the result (a missing or bad `action` reads as `fail`); the
/// problems are reported, so such a rule is never run.
fn parse_rule(cx: &mut Ctx, item: &Value, at: &[PathSeg]) -> RawRetryRule {
    let mut rule = RawRetryRule {
        exit_codes: None,
        signals: None,
        timeout: None,
        output: None,
        action: RuleAction::Fail,
        backoff_seconds: None,
    };
    let Value::Dict(_, table) = item else {
        cx.problem(
            at,
            format!(
                "expected a table (a [[retry_rules]] entry: conditions and an `action`), found {}",
                show_value(item)
            ),
        );
        return rule;
    };
    let mut action = None;
    for (key, value) in table {
        let mut at = at.to_vec();
        at.push(PathSeg::Key(key.clone()));
        let result = match key.as_str() {
            "exit_codes" => value.deserialize().map(|v| rule.exit_codes = Some(v)),
            "signals" => value.deserialize().map(|v| rule.signals = Some(v)),
            "timeout" => value.deserialize().map(|v| rule.timeout = Some(v)),
            "output" => value.deserialize().map(|v| rule.output = Some(v)),
            "action" => value.deserialize().map(|v| action = Some(v)),
            "backoff_seconds" => value.deserialize().map(|v| rule.backoff_seconds = Some(v)),
            _ => {
                let hint = did_you_mean(key, RULE_KEYS.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("; a rule holds {}", quoted(RULE_KEYS)));
                cx.key_problem(&at, format!("unknown key{hint}"));
                continue;
            }
        };
        if let Err(e) = result {
            report_type_error(cx, &at, value, &e);
        }
    }
    match action {
        Some(a) => rule.action = a,
        None if !table.contains_key("action") => cx.problem(
            at,
            format!(
                "missing `action`: expected one of {}",
                quoted(variants::<RuleAction>())
            ),
        ),
        None => {}
    }
    rule
}

/// `a`, `b`, `c` as "`a`, `b`, `c`".
fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names serde accepts for a unit-variant enum, asked of serde itself (an unknown
/// name makes it list them), so the list cannot drift from the type.
fn variants<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    match Value::from("\u{0}").deserialize::<T>() {
        Err(figment::Error {
            kind: figment::error::Kind::UnknownVariant(_, expected),
            ..
        }) => expected,
        _ => &[],
    }
}

/// What serde's name for an expected type means to a user.
fn expected_text(expected: &str) -> String {
    match expected {
        "u32" | "u64" | "usize" => "a whole number ≥ 0".into(),
        "i32" | "i64" | "isize" => "a whole number".into(),
        "f64" | "f32" => "a number".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        "enum Jitter" => format!("one of {}", quoted(variants::<Jitter>())),
        "enum RuleAction" => format!("one of {}", quoted(variants::<RuleAction>())),
        "enum TimeoutKind" => format!("one of {}", quoted(variants::<TimeoutKind>())),
        other => other.to_string(),
    }
}

/// The range of an integer type serde names, for "out of range" messages about `n`.
fn integer_range(expected: &str, n: i128) -> Option<String> {
    let (min, max) = match expected {
        "u32" => (0, i128::from(u32::MAX)),
        "i32" => (i128::from(i32::MIN), i128::from(i32::MAX)),
        "u64" => (0, i128::from(u64::MAX)),
        _ => return None,
    };
    Some(if n < min && min == 0 {
        "a whole number ≥ 0".to_string()
    } else if n < min {
        format!("a whole number ≥ {min}")
    } else {
        format!("a whole number ≤ {max}")
    })
}

/// Reports a serde error at the deepest key it names, with the value found there.
fn report_type_error(cx: &mut Ctx, at: &[PathSeg], value: &Value, e: &figment::Error) {
    use figment::error::{Actual, Kind};
    let mut at = at.to_vec();
    let mut value = value;
    for key in &e.path {
        match value {
            Value::Dict(_, d) => {
                at.push(PathSeg::Key(key.clone()));
                if let Some(v) = d.get(key) {
                    value = v;
                }
            }
            Value::Array(_, a) => match key.parse::<usize>() {
                Ok(i) => {
                    at.push(PathSeg::Index(i));
                    if let Some(v) = a.get(i) {
                        value = v;
                    }
                }
                Err(_) => at.push(PathSeg::Key(key.clone())),
            },
            _ => at.push(PathSeg::Key(key.clone())),
        }
    }
    let shown = show_value(value);
    // A key whose range is narrower than its type's says so.
    let narrower = match at.last() {
        Some(PathSeg::Key(k)) if k == "jobs" => {
            Some(format!("a whole number from 1 to {MAX_JOBS}"))
        }
        // 0 is refused for these too (see `check_policy`): never say "≥ 0".
        Some(PathSeg::Key(k)) if k == "max_iterations" || k == "no_progress_limit" => {
            Some("a whole number ≥ 1".to_string())
        }
        Some(PathSeg::Index(_))
            if at.iter().rev().nth(1) == Some(&PathSeg::Key("exit_codes".into())) =>
        {
            Some("an exit code, a whole number from 0 to 255".to_string())
        }
        _ => None,
    };
    let msg = match &e.kind {
        Kind::InvalidType(_, expected) => {
            let expected = narrower.unwrap_or_else(|| expected_text(expected));
            format!("expected {expected}, found {shown}")
        }
        Kind::InvalidValue(actual, expected) => {
            let n = match actual {
                Actual::Signed(n) => Some(*n),
                Actual::Unsigned(n) => Some(i128::try_from(*n).unwrap_or(i128::MAX)),
                _ => None,
            };
            match n.and_then(|n| Some((n, integer_range(expected, n)?))) {
                Some((n, range)) => format!(
                    "{n} is out of range: expected {}",
                    narrower.unwrap_or(range)
                ),
                None => format!(
                    "invalid value {shown}: expected {}",
                    expected_text(expected)
                ),
            }
        }
        Kind::UnknownVariant(found, expected) => {
            format!(
                "unknown value `{found}`: expected one of {}",
                quoted(expected)
            )
        }
        Kind::UnknownField(found, expected) => {
            let hint = did_you_mean(found, expected.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            format!("unknown key `{found}`{hint}")
        }
        Kind::MissingField(name) => format!("missing `{name}` (found {shown})"),
        // Our own messages (durations) name the value already; a table or an array
        // is shown so the user sees which one.
        Kind::Message(m) if matches!(value, Value::Dict(..) | Value::Array(..)) => {
            format!("{m} (found {shown})")
        }
        // A limit of 0 is refused too (see `check_policy`): never say "≥ 0".
        Kind::Message(m)
            if matches!(at.last(), Some(PathSeg::Key(k))
                if k == "timeout_seconds" || k == "activity_timeout_seconds") =>
        {
            m.replace("a duration ≥ 0", "a duration > 0")
        }
        Kind::Message(m) if matches!(at.last(), Some(PathSeg::Key(k)) if k == "poll_interval_seconds") => {
            m.replace(
                "a duration ≥ 0",
                &format!("a duration ≥ {MIN_POLL_SECONDS} seconds"),
            )
        }
        Kind::Message(m) => m.clone(),
        kind => format!("{kind} (found {shown})"),
    };
    cx.problem(&at, msg);
}

fn check_spec_name(cx: &mut Ctx, name: &str, at: &[PathSeg]) {
    if !valid_spec_name(name) {
        cx.problem(
            at,
            format!(
                "invalid spec name `{name}`: expected letters, digits, `.`, `_` or `-`, starting with a letter or digit, without `..`"
            ),
        );
    }
}

/// `[A-Za-z0-9][A-Za-z0-9._-]*` without `..`: safe as a folder name under the log dir.
pub fn valid_spec_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.contains("..")
}

/// Range checks of the run-wide values.
/// More specs at once than any machine runs usefully; each costs a few threads.
pub const MAX_JOBS: u32 = 1024;

fn check_run(cx: &mut Ctx, raw: &RawRunPolicy) {
    if let Some(slurm) = &raw.slurm {
        check_slurm(cx, slurm);
    }
    match raw.jobs {
        Some(0) => cx.problem(
            &path(&["jobs"]),
            "0 is out of range: expected at least 1".into(),
        ),
        Some(n) if n > MAX_JOBS => cx.problem(
            &path(&["jobs"]),
            format!("{n} is out of range: expected at most {MAX_JOBS}"),
        ),
        _ => {}
    }
}

/// Values that a higher layer overrides are checked too, each against the file or
/// variable that holds it: the types and ranges of its keys (unknown keys of a lower
/// layer are reported with the higher layer's same key).
fn check_shadowed(cx: &mut Ctx) {
    let layers = cx.layers;
    for sh in &layers.shadowed {
        cx.in_layer = Some(sh.layer);
        match sh.path.as_slice() {
            [PathSeg::Key(key)] => {
                let mut policy = RawPolicy::default();
                let mut run = RawRunPolicy::default();
                if set_policy_key(cx, &mut policy, key, &sh.value, &sh.path) {
                    check_policy(cx, &policy, &[]);
                    rules(cx, policy.retry_rules.as_deref().unwrap_or(&[]), &sh.path);
                } else if set_run_key(cx, &mut run, key, &sh.value, &sh.path) {
                    check_run(cx, &run);
                }
            }
            [PathSeg::Key(specs), PathSeg::Key(_), PathSeg::Key(key)] if specs == "specs" => {
                let mut policy = RawPolicy::default();
                if set_policy_key(cx, &mut policy, key, &sh.value, &sh.path) {
                    check_policy(cx, &policy, &sh.path[..2]);
                    rules(cx, policy.retry_rules.as_deref().unwrap_or(&[]), &sh.path);
                }
            }
            _ => {}
        }
        cx.in_layer = None;
    }
}

fn run_policy(cx: &mut Ctx, raw: &RawRunPolicy, dir: &Path) -> RunPolicy {
    check_run(cx, raw);
    let jobs = match raw.jobs {
        Some(0) => 1,
        Some(n) => n as usize,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    RunPolicy {
        jobs,
        fail_fast: raw.fail_fast.unwrap_or(defaults::FAIL_FAST),
        retry_budget: raw.retry_budget,
        state_dir: dir.join(raw.state_dir.as_deref().unwrap_or(defaults::STATE_DIR)),
        junit_path: raw.junit_path.as_deref().map(|p| dir.join(p)),
        slurm: slurm_settings(raw.slurm.as_ref()),
    }
}

/// The `[slurm]` table with its defaults; out-of-range values were reported by
/// `check_run`.
fn slurm_settings(raw: Option<&super::raw::RawSlurm>) -> super::policy::SlurmSettings {
    let mut s = super::policy::SlurmSettings::default();
    let Some(raw) = raw else { return s };
    s.partition.clone_from(&raw.partition);
    s.account.clone_from(&raw.account);
    s.qos.clone_from(&raw.qos);
    s.sbatch_args = raw.sbatch_args.clone().unwrap_or_default();
    if let Some(m) = raw.time_limit_margin_seconds {
        s.time_limit_margin = m.duration();
    }
    if let Some(p) = raw.poll_interval_seconds
        && p.0 >= MIN_POLL_SECONDS
    {
        s.poll_interval = p.duration();
    }
    s
}

/// The shortest `slurm.poll_interval_seconds`: more often would load the controller
/// for nothing (a job's end is seen within one interval).
const MIN_POLL_SECONDS: f64 = 0.05;

/// `sbatch` options the Slurm backend sets itself: a `sbatch_args` entry that sets
/// one would break how attempts are logged, found again or passed their environment.
const OWN_SBATCH_OPTIONS: &[(&str, Option<char>)] = &[
    ("--output", Some('o')),
    ("--error", Some('e')),
    ("--input", Some('i')),
    ("--open-mode", None),
    ("--chdir", Some('D')),
    ("--job-name", Some('J')),
    ("--comment", None),
    ("--export", None),
    ("--parsable", None),
    ("--wrap", None),
    ("--wait", Some('W')),
    ("--array", Some('a')),
    ("--requeue", None),
    ("--no-requeue", None),
];

fn check_slurm(cx: &mut Ctx, raw: &super::raw::RawSlurm) {
    if let Some(p) = raw.poll_interval_seconds
        && p.0 < MIN_POLL_SECONDS
    {
        cx.problem(
            &path(&["slurm", "poll_interval_seconds"]),
            format!(
                "{} is out of range: expected at least {MIN_POLL_SECONDS} seconds",
                p.0
            ),
        );
    }
    for (i, arg) in raw.sbatch_args.iter().flatten().enumerate() {
        let mut at = path(&["slurm", "sbatch_args"]);
        at.push(PathSeg::Index(i));
        let own = OWN_SBATCH_OPTIONS.iter().find(|(long, short)| {
            arg == long
                || arg.starts_with(&format!("{long}="))
                || short.is_some_and(|c| {
                    let mut chars = arg.chars();
                    chars.next() == Some('-') && chars.next() == Some(c)
                })
        });
        if let Some((long, _)) = own {
            cx.problem(
                &at,
                format!(
                    "`{arg}`: spec-runner sets `{long}` itself (logs, job names and the environment depend on it); remove it"
                ),
            );
        } else if !arg.starts_with('-') {
            cx.problem(
                &at,
                format!(
                    "`{arg}` is not an option: expected one `--option=value` per element (a script or command is not allowed)"
                ),
            );
        }
    }
    for (key, value) in [
        ("partition", &raw.partition),
        ("account", &raw.account),
        ("qos", &raw.qos),
    ] {
        if value.as_ref().is_some_and(|v| v.trim().is_empty()) {
            cx.problem(
                &path(&["slurm", key]),
                "empty: expected a name (leave the key out for the cluster's default)".into(),
            );
        }
    }
}

/// Range checks of one set of policy values — the global ones (`base` empty) or one
/// spec's own — each reported where it was written, whether or not a spec uses it.
fn check_policy(cx: &mut Ctx, raw: &RawPolicy, base: &[PathSeg]) {
    let at = |key: &str| {
        let mut p = base.to_vec();
        p.push(PathSeg::Key(key.into()));
        p
    };
    if let Some(m) = raw.retry_backoff_multiplier
        && !(m.is_finite() && m >= 1.0)
    {
        cx.problem(
            &at("retry_backoff_multiplier"),
            format!("{m} is out of range: expected a number ≥ 1"),
        );
    }
    // A zero limit would end every attempt at once: surely a mistake for "no limit",
    // which is written by leaving the key out.
    for (key, value) in [
        ("timeout_seconds", raw.timeout_seconds),
        ("activity_timeout_seconds", raw.activity_timeout_seconds),
    ] {
        if value.is_some_and(|s| s.0 == 0.0) {
            cx.problem(
                &at(key),
                "0 would end every attempt at once: expected a duration > 0 (leave the key out for no limit)".into(),
            );
        }
    }
    // No iteration at all, or a breaker that trips before any: surely a mistake.
    for (key, value) in [
        ("max_iterations", raw.max_iterations),
        ("no_progress_limit", raw.no_progress_limit),
    ] {
        if value == Some(0) {
            cx.problem(
                &at(key),
                "0 is out of range: expected a whole number ≥ 1".into(),
            );
        }
    }
    let empty = match &raw.on_exhausted {
        Some(RawCommand::Shell(s)) => s.trim().is_empty(),
        Some(RawCommand::Argv(v)) => v.first().is_none_or(|p| p.trim().is_empty()),
        None => false,
    };
    if empty {
        cx.problem(
            &at("on_exhausted"),
            "empty command: expected a string run with `sh -c`, or a non-empty array whose first element is the program".into(),
        );
    }
}

fn rules(cx: &mut Ctx, raw: &[RawRetryRule], at: &[PathSeg]) -> Vec<RetryRule> {
    let origin_base = cx.layers.origin(at).unwrap_or_else(|| PathSeg::join(at));
    let mut out = Vec::with_capacity(raw.len());
    for (i, rule) in raw.iter().enumerate() {
        let mut at = at.to_vec();
        at.push(PathSeg::Index(i));
        let field = |name: &str| {
            let mut p = at.clone();
            p.push(PathSeg::Key(name.into()));
            p
        };
        if rule.exit_codes.as_ref().is_some_and(Vec::is_empty) {
            cx.problem(
                &field("exit_codes"),
                "empty list matches nothing: expected at least one exit code (leave `exit_codes` out to match any)".into(),
            );
        }
        for (j, code) in rule.exit_codes.iter().flatten().enumerate() {
            if !(0..=255).contains(code) {
                let mut at = field("exit_codes");
                at.push(PathSeg::Index(j));
                cx.problem(
                    &at,
                    format!("{code} can never match: expected an exit code from 0 to 255 (a process killed by a signal has none: use `signals`)"),
                );
            }
        }
        let mut signals = None;
        if let Some(names) = &rule.signals {
            if names.is_empty() {
                cx.problem(
                    &field("signals"),
                    "empty list matches nothing: expected at least one signal name (leave `signals` out to match any)".into(),
                );
            }
            let mut nums = Vec::new();
            for (j, name) in names.iter().enumerate() {
                match crate::retry::signal_number(name) {
                    Some(n) => nums.push(n),
                    None => {
                        let mut at = field("signals");
                        at.push(PathSeg::Index(j));
                        cx.problem(&at, format!("unknown signal `{name}`: expected a name such as SIGSEGV, SIGKILL, SIGTERM"));
                    }
                }
            }
            signals = Some(nums);
        }
        let output = rule.output.as_deref().and_then(|re| match Regex::new(re) {
            Ok(r) => Some(std::sync::Arc::new(r)),
            Err(e) => {
                let mut at = at.clone();
                at.push(PathSeg::Key("output".into()));
                let text = e.to_string();
                let last = text.lines().last().unwrap_or("").trim();
                let detail = last.strip_prefix("error: ").unwrap_or(last).to_string();
                cx.problem(&at, format!("invalid regular expression {re:?}: {detail}"));
                None
            }
        });
        out.push(RetryRule {
            when: RuleMatch {
                exit_codes: rule.exit_codes.clone(),
                signals,
                timeout: rule.timeout,
                output,
            },
            action: rule.action,
            backoff: rule.backoff_seconds.map(|s| s.duration()),
            origin: format!("{origin_base}[{i}]"),
        });
    }
    out
}

/// The value of one key for one spec: the spec's own (whatever layer set it), else the
/// global one (whatever layer), else the default. Scope beats layer.
#[allow(clippy::too_many_arguments)]
fn effective_policy(
    cx: &mut Ctx,
    name: &str,
    own: &RawPolicy,
    global: &RawPolicy,
    global_origins: &[(&'static str, Arc<str>)],
    spec_rules: Vec<RetryRule>,
    global_rules: &[RetryRule],
    dir: &Path,
) -> (Policy, Origins) {
    let mut origins = Origins::default();
    let layers = cx.layers;
    let mut origin_of = |key: &'static str, spec_set: bool| {
        let spec_origin = if spec_set {
            layers.origin(&path(&["specs", name, key]))
        } else {
            None
        };
        let origin = match spec_origin {
            Some(o) => Arc::from(o),
            None => global_origins
                .iter()
                .find(|(k, _)| *k == key)
                .map_or_else(|| Arc::from("default"), |(_, o)| o.clone()),
        };
        origins.insert(key, origin);
    };
    macro_rules! pick {
        ($field:ident) => {{
            origin_of(stringify!($field), own.$field.is_some());
            own.$field.clone().or_else(|| global.$field.clone())
        }};
    }
    let max_retries = pick!(retry_max_retries).unwrap_or(defaults::RETRY_MAX_RETRIES);
    let backoff = pick!(retry_backoff_seconds).map_or(defaults::RETRY_BACKOFF_SECONDS, |s| s.0);
    let multiplier = pick!(retry_backoff_multiplier).unwrap_or(defaults::RETRY_BACKOFF_MULTIPLIER);
    let max_backoff =
        pick!(retry_max_backoff_seconds).map_or(defaults::RETRY_MAX_BACKOFF_SECONDS, |s| s.0);
    let jitter = pick!(retry_jitter).unwrap_or_default();
    let on_crash = pick!(retry_on_crash).unwrap_or(defaults::RETRY_ON_CRASH);
    let max_total = pick!(retry_max_total_seconds).map(|s| s.duration());
    let log_dir = pick!(retry_log_dir);
    let timeout = pick!(timeout_seconds).map(|s| s.duration());
    let activity = pick!(activity_timeout_seconds).map(|s| s.duration());
    let grace = pick!(terminate_grace_seconds).map_or(defaults::TERMINATE_GRACE_SECONDS, |s| s.0);
    let on_exhausted = pick!(on_exhausted);
    let backend = pick!(backend).unwrap_or_default();
    let max_iterations = pick!(max_iterations).unwrap_or(defaults::MAX_ITERATIONS);
    let no_progress_limit = pick!(no_progress_limit).unwrap_or(defaults::NO_PROGRESS_LIMIT);
    origin_of("retry_rules", own.retry_rules.is_some());
    if let (Some(_), Some(_)) = (&own.retry_rules, &global.retry_rules) {
        let both = format!(
            "{} + {}",
            layers
                .origin(&path(&["specs", name, "retry_rules"]))
                .unwrap_or_default(),
            layers.origin(&path(&["retry_rules"])).unwrap_or_default()
        );
        origins.insert("retry_rules", Arc::from(both));
    }

    // Out-of-range values were reported by `check_policy`; these stand-ins are never run.
    let on_exhausted = on_exhausted.and_then(|c| match c {
        RawCommand::Shell(s) if !s.trim().is_empty() => Some(CommandLine::Shell(s)),
        RawCommand::Argv(v) if v.first().is_some_and(|p| !p.is_empty()) => {
            Some(CommandLine::Argv(v))
        }
        _ => None,
    });

    let mut rules = spec_rules;
    rules.extend(global_rules.iter().cloned());
    let policy = Policy {
        retry: RetryPolicy {
            max_retries,
            backoff: Duration::from_secs_f64(backoff),
            multiplier: if multiplier.is_finite() {
                multiplier.max(1.0)
            } else {
                1.0
            },
            max_backoff: Duration::from_secs_f64(max_backoff),
            jitter,
            on_crash,
            max_total,
            rules,
        },
        retry_log_dir: dir.join(log_dir.as_deref().unwrap_or(defaults::RETRY_LOG_DIR)),
        timeout,
        activity_timeout: activity,
        terminate_grace: Duration::from_secs_f64(grace),
        on_exhausted,
        backend,
        iterate: crate::iterate::LoopPolicy {
            max_iterations: max_iterations.max(1),
            no_progress_limit: no_progress_limit.max(1),
        },
    };
    (policy, origins)
}

/// Kahn's algorithm in waves. When the graph has cycles, returns every one of them:
/// one per knot of specs that depend on each other (a strongly connected component),
/// plus every spec that depends on itself, each as spec indices closed
/// (first == last) and starting at the knot's first spec by index.
pub fn waves(specs: &[Spec]) -> Result<Vec<Vec<usize>>, Vec<Vec<usize>>> {
    let n = specs.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, s) in specs.iter().enumerate() {
        indegree[i] = s.depends_on.len();
        for &d in &s.depends_on {
            dependents[d].push(i);
        }
    }
    let mut wave: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut out = Vec::new();
    let mut seen = 0;
    while !wave.is_empty() {
        seen += wave.len();
        let mut next = Vec::new();
        for &i in &wave {
            for &j in &dependents[i] {
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        // Kept with the pipeline for the whole run: no spare room (a wave of 10,000
        // specs would hold 16,384 places).
        wave.shrink_to_fit();
        out.push(std::mem::replace(&mut wave, next));
    }
    if seen == n {
        return Ok(out);
    }
    // Only specs left with a dependency left can be on a cycle.
    let left: Vec<bool> = indegree.iter().map(|&d| d > 0).collect();
    let deps = |i: usize| specs[i].depends_on.iter().copied().filter(|&d| left[d]);
    let mut cycles = Vec::new();
    for component in components(n, &left, &deps) {
        let first = component[0];
        let inside = |i: usize| component.binary_search(&i).is_ok();
        let self_loop = |i: usize| specs[i].depends_on.contains(&i);
        if component.len() > 1 {
            cycles.push(shortest_cycle(first, &inside, &deps));
        }
        for &i in &component {
            if self_loop(i) {
                cycles.push(vec![i, i]);
            }
        }
    }
    cycles.sort();
    Err(cycles)
}

/// The strongly connected components of the graph of the `left` nodes, each sorted,
/// in the order of their first node (Tarjan's algorithm, iterative: a long chain of
/// dependencies must not overflow the stack).
fn components<I: Iterator<Item = usize>>(
    n: usize,
    left: &[bool],
    deps: &impl Fn(usize) -> I,
) -> Vec<Vec<usize>> {
    const NONE: usize = usize::MAX;
    let mut index = vec![NONE; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut out = Vec::new();
    for root in (0..n).filter(|&i| left[i]) {
        if index[root] != NONE {
            continue;
        }
        // (node, its dependencies still to visit)
        let mut work: Vec<(usize, Vec<usize>)> = Vec::new();
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        work.push((root, deps(root).collect()));
        while let Some((v, todo)) = work.last_mut() {
            let v = *v;
            if let Some(w) = todo.pop() {
                if index[w] == NONE {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, deps(w).collect()));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some((parent, _)) = work.last() {
                low[*parent] = low[*parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                out.push(component);
            }
        }
    }
    out.sort();
    out
}

/// The shortest walk along dependencies from `start` back to itself, staying inside
/// its component (breadth first).
fn shortest_cycle<I: Iterator<Item = usize>>(
    start: usize,
    inside: &impl Fn(usize) -> bool,
    deps: &impl Fn(usize) -> I,
) -> Vec<usize> {
    let mut from: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        let mut next: Vec<usize> = deps(v).filter(|&d| inside(d)).collect();
        next.sort_unstable();
        for d in next {
            if d == start && v != start {
                let mut path = vec![start];
                let mut cur = v;
                while cur != start {
                    path.push(cur);
                    cur = from[&cur];
                }
                path.push(start);
                // `path` runs backwards from start: start, v, …, start. Reverse the
                // middle so it reads along dependencies.
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if d != start && !from.contains_key(&d) {
                from.insert(d, v);
                queue.push_back(d);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::{self, LoadOptions};

    #[test]
    fn specs_without_policy_keys_share_the_global_policy_and_one_with_a_key_has_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("spec-runner.toml"),
            "retry_max_retries = 4\n\
             [specs.a]\ncommand = \"true\"\n\
             [specs.b]\ncommand = \"true\"\nenv = { X = \"1\" }\n\
             [specs.c]\ncommand = \"true\"\nretry_max_retries = 1\n",
        )
        .expect("write");
        let opts = LoadOptions {
            cwd: dir.path().to_path_buf(),
            ..LoadOptions::default()
        };
        let p = config::load(&opts).expect("valid pipeline");
        let [a, b, c] = [0, 1, 2].map(|i| &p.specs[i]);
        for s in [a, b] {
            assert!(Arc::ptr_eq(&s.policy, &p.global), "{} shares", s.name);
            assert!(Arc::ptr_eq(&s.origins, &p.global_origins));
            assert_eq!(s.policy.retry.max_retries, 4);
        }
        assert!(!Arc::ptr_eq(&c.policy, &p.global));
        assert_eq!(c.policy.retry.max_retries, 1);
        assert_eq!(p.global.retry.max_retries, 4);
        assert!(
            c.origins
                .get("retry_max_retries")
                .is_some_and(|o| o.contains("specs.c.retry_max_retries")),
            "{:?}",
            c.origins
        );
    }
}
