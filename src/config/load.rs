//! Reading the layers — `config.json`, the pipeline file, `SPEC_RUNNER_*` variables,
//! command-line flags — and merging them with figment.
//!
//! This module knows where every value came from; it does not judge values (that is
//! `validate`). It never reads the process environment itself: callers pass it in, so
//! tests and fuzzers can drive it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::diag::{PathSeg, Problem, Source};
use super::matrix;
use super::raw::{RawPolicy, RawRunPolicy, SPEC_KEYS};

/// The default pipeline file name.
pub const PIPELINE_FILE: &str = "spec-runner.toml";
/// The default policy file name, looked up next to the pipeline file.
pub const CONFIG_FILE: &str = "config.json";
/// Prefix of every variable spec-runner reads.
pub const ENV_PREFIX: &str = "SPEC_RUNNER_";

/// `SPEC_RUNNER_*` names that are not policy: those spec-runner sets for its children,
/// and those that stand for command-line options. The loader ignores them.
pub const RESERVED_VARIABLES: &[&str] = &[
    "SPEC_RUNNER_SPEC",
    "SPEC_RUNNER_ATTEMPT",
    "SPEC_RUNNER_MAX_ATTEMPTS",
    "SPEC_RUNNER_RUN_ID",
    "SPEC_RUNNER_REASON",
    "SPEC_RUNNER_LOG",
    "SPEC_RUNNER_ATTEMPTS",
    "SPEC_RUNNER_JOB_ID",
    "SPEC_RUNNER_ITERATION",
    "SPEC_RUNNER_TASKS_DONE",
    "SPEC_RUNNER_TASKS_TOTAL",
    "SPEC_RUNNER_TASKS_PENDING",
    "SPEC_RUNNER_TASKS_IN_PROGRESS",
    "SPEC_RUNNER_TASKS_SUMMARY",
    "SPEC_RUNNER_FILE",
    "SPEC_RUNNER_CONFIG",
    "SPEC_RUNNER_PROGRESS",
    "SPEC_RUNNER_COLOR",
    "SPEC_RUNNER_FORMAT",
];

/// Whether a `SPEC_RUNNER_*` name is one the loader ignores: reserved, or set by
/// spec-runner for a matrix instance (`SPEC_RUNNER_MATRIX_<KEY>`).
fn is_reserved(name: &str) -> bool {
    RESERVED_VARIABLES.contains(&name) || name.starts_with(matrix::ENV_PREFIX)
}

/// Values given on the command line; they beat every other layer.
#[derive(Clone, Debug, Default)]
pub struct CliOverrides {
    pub jobs: Option<u32>,
    pub fail_fast: Option<bool>,
}

/// What to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `-f/--file` or `SPEC_RUNNER_FILE`; default `spec-runner.toml` in `cwd`.
    pub file: Option<PathBuf>,
    /// `--config`; default `config.json` next to the pipeline file, when it exists.
    pub config: Option<PathBuf>,
    /// The environment (all of it; the loader keeps `SPEC_RUNNER_*`).
    pub env: Vec<(String, String)>,
    pub cli: CliOverrides,
    /// The directory relative `file` and `config` paths resolve against.
    pub cwd: PathBuf,
}

/// The kind of a layer, lowest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerKind {
    ConfigJson,
    Pipeline,
    Env,
    Cli,
}

/// One layer's values, as read.
#[derive(Debug)]
pub struct Layer {
    pub kind: LayerKind,
    /// How to name this layer to a user: the file as given, or "environment".
    pub display: String,
    /// The layer's values. Empty for `Pipeline` once merged: the pipeline file's
    /// values were moved into the merge rather than copied (they are most of the
    /// data), and `merged` holds them; `top_keys` remembers which keys it set.
    pub dict: Dict,
    /// For `Pipeline`: the keys at the top of the file.
    pub top_keys: Vec<String>,
    /// For `Env`: key path (`retry_max_retries`, `specs.a.jobs`) → variable name.
    pub variables: BTreeMap<String, String>,
    /// For `Cli`: key → flag.
    pub flags: BTreeMap<String, String>,
    /// For `Pipeline`: the file's text, to find line and column of a problem.
    pub text: Option<String>,
    /// For `ConfigJson`: keys the file wrote under the original tool's name
    /// (spec-runner's name → the name written, e.g. `no_progress_limit` →
    /// `no_commit_limit`), so that origins name what the user wrote.
    pub aliases: BTreeMap<String, String>,
}

/// All layers plus their merge.
#[derive(Debug)]
pub struct Layers {
    pub pipeline_file: PathBuf,
    pub pipeline_dir: PathBuf,
    /// Lowest precedence first.
    pub layers: Vec<Layer>,
    pub merged: Dict,
    /// Problems found while reading (bad variables), reported with validation's.
    pub problems: Vec<Problem>,
    /// Values a higher layer overrides. They take no effect, but a bad one is still
    /// a problem of its file or variable: the day the override goes, it would break.
    pub shadowed: Vec<Shadowed>,
    /// Non-fatal findings while reading (unknown `SPEC_RUNNER_*` variables), one line
    /// each.
    pub warnings: Vec<String>,
    /// Matrix spec name → its instances' names (see `matrix`).
    pub matrix_groups: BTreeMap<String, Vec<String>>,
    /// Instance name → the matrix spec in the file that made it.
    pub instance_of: BTreeMap<String, String>,
    /// Spec tables kept as the pipeline file's text: in `merged` such a spec's table
    /// holds only what variables set in it; `spec_table` gives the whole of it.
    pub lazy: super::parse::Lazy,
}

/// A value that a higher layer overrides.
#[derive(Debug)]
pub struct Shadowed {
    /// Index into `Layers::layers` of the layer that holds it.
    pub layer: usize,
    pub path: Vec<PathSeg>,
    pub value: Value,
}

impl Layers {
    /// The highest layer that set `path`: where the merged value came from. A table
    /// that a variable only created on the way to its key (`specs.a` for
    /// `SPEC_RUNNER_SPECS__A__JOBS`) was not set by it: the spec comes from the file.
    pub fn layer_of(&self, path: &[PathSeg]) -> Option<&Layer> {
        let mut key = None;
        self.layers.iter().rev().find(|l| match l.kind {
            LayerKind::Env | LayerKind::Cli => {
                lookup(&l.dict, path).is_some()
                    && l.setter_of(key.get_or_insert_with(|| PathSeg::join(path)))
                        .is_some()
            }
            // What is merged and not from a higher layer is the file's when it set
            // that key at its top: it replaced config.json's value or table there
            // (config.json's `specs` are not merged).
            LayerKind::Pipeline => {
                matches!(path.first(), Some(PathSeg::Key(k)) if l.top_keys.contains(k))
                    && self.merged_has(path)
            }
            LayerKind::ConfigJson => lookup(&l.dict, path).is_some(),
        })
    }

    /// The merged table of spec `name`, whose value in `merged` is `table`: for a spec
    /// kept as text, the file's table with what variables set merged over it (as
    /// figment merges), parsed again for the asking.
    pub fn spec_table<'a>(&self, name: &str, table: &'a Dict) -> std::borrow::Cow<'a, Dict> {
        let file = match self.pipeline_text() {
            Some(text) if self.lazy.has(name) => self.lazy.table(text, name),
            _ => None,
        };
        match file {
            Some(file) => {
                let mut merged = Some(Value::from(file));
                if !table.is_empty() {
                    merge_value(&mut merged, Value::from(table.clone()));
                }
                match merged {
                    Some(Value::Dict(_, d)) => std::borrow::Cow::Owned(d),
                    _ => std::borrow::Cow::Borrowed(table),
                }
            }
            None => std::borrow::Cow::Borrowed(table),
        }
    }

    /// Whether the merged values hold `path` (reading a spec kept as text).
    fn merged_has(&self, path: &[PathSeg]) -> bool {
        if let [PathSeg::Key(specs), PathSeg::Key(name), rest @ ..] = path
            && specs == "specs"
            && !rest.is_empty()
            && self.lazy.has(name)
            && let Some(Value::Dict(_, table)) = lookup(&self.merged, &path[..2])
        {
            return lookup(&self.spec_table(name, table), rest).is_some();
        }
        lookup(&self.merged, path).is_some()
    }

    /// Names a value's origin: `spec-runner.toml: specs.a.jobs`, a variable, a flag.
    pub fn origin(&self, path: &[PathSeg]) -> Option<String> {
        let layer = self.layer_of(path)?;
        let key = PathSeg::join(path);
        Some(match layer.kind {
            LayerKind::ConfigJson => {
                let written = match path.split_last() {
                    Some((PathSeg::Key(last), [])) => {
                        layer.aliases.get(last).map_or(key.as_str(), String::as_str)
                    }
                    _ => key.as_str(),
                };
                format!("{}: {written}", layer.display)
            }
            LayerKind::Pipeline => {
                format!("{}: {}", layer.display, PathSeg::join(&self.in_file(path)))
            }
            LayerKind::Env | LayerKind::Cli => layer.setter_of(&key).cloned().unwrap_or(key),
        })
    }

    /// Where a problem at `path` in layer `layer` (an index into `layers`) should
    /// point, whether or not the merged value came from there.
    pub fn source_in(
        &self,
        layer: usize,
        path: &[PathSeg],
        target: Target,
        toml: &TomlIndex,
    ) -> Source {
        match self.layers.get(layer) {
            Some(l) => self.layer_source(l, path, target, toml),
            None => self.source_of(path, target, toml),
        }
    }

    /// Where a problem at `path` should point: the file or variable that set it. For
    /// the pipeline file, `toml` finds the line and column of the key or its value.
    pub fn source_of(&self, path: &[PathSeg], target: Target, toml: &TomlIndex) -> Source {
        match self.layer_of(path) {
            Some(layer) => self.layer_source(layer, path, target, toml),
            None => Source::File {
                path: self.layers_display(LayerKind::Pipeline),
                location: None,
            },
        }
    }

    /// Where `path` is written in the pipeline file: a matrix instance's keys are its
    /// matrix spec's (`specs.test-a.py.cwd` → `specs.test.cwd`).
    pub fn in_file(&self, path: &[PathSeg]) -> Vec<PathSeg> {
        let mut out = path.to_vec();
        if let [PathSeg::Key(specs), PathSeg::Key(name), ..] = path
            && specs == "specs"
            && let Some(base) = self.instance_of.get(name)
        {
            out[1] = PathSeg::Key(base.clone());
        }
        out
    }

    /// The pipeline file's text, when it was read.
    pub fn pipeline_text(&self) -> Option<&str> {
        self.layers
            .iter()
            .find(|l| l.kind == LayerKind::Pipeline)
            .and_then(|l| l.text.as_deref())
    }

    fn layers_display(&self, kind: LayerKind) -> String {
        self.layers
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.display.clone())
            .unwrap_or_else(|| self.pipeline_file.display().to_string())
    }

    fn layer_source(
        &self,
        layer: &Layer,
        path: &[PathSeg],
        target: Target,
        toml: &TomlIndex,
    ) -> Source {
        let key = PathSeg::join(path);
        match layer.kind {
            LayerKind::ConfigJson => Source::File {
                path: layer.display.clone(),
                location: None,
            },
            LayerKind::Pipeline => Source::File {
                path: layer.display.clone(),
                location: toml.locate(&self.in_file(path), target),
            },
            LayerKind::Env => Source::Variable(
                layer
                    .setter_of(&key)
                    .cloned()
                    .unwrap_or_else(|| "environment".into()),
            ),
            LayerKind::Cli => Source::Flag(layer.setter_of(&key).cloned().unwrap_or(key)),
        }
    }
}

/// What a problem's line and column point at in the pipeline file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The value (for a table, its header): a bad value.
    Value,
    /// The key itself: a key that should not be there.
    Key,
}

/// Looks a path up in a dict.
pub fn lookup<'a>(dict: &'a Dict, path: &[PathSeg]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let PathSeg::Key(k) = first else { return None };
    let mut cur = dict.get(k.as_str())?;
    for seg in rest {
        cur = match (seg, cur) {
            (PathSeg::Key(k), Value::Dict(_, d)) => d.get(k.as_str())?,
            (PathSeg::Index(i), Value::Array(_, a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Reads every layer and merges them. Problems that stop loading (a missing or
/// unparsable file) come back as `Err`; problems with variables are collected too.
pub fn read_layers(opts: &LoadOptions) -> Result<Layers, Vec<Problem>> {
    let pipeline_file = absolute(
        &opts.cwd,
        opts.file.as_deref().unwrap_or(Path::new(PIPELINE_FILE)),
    );
    let pipeline_display = display_path(&opts.cwd, opts.file.as_deref(), PIPELINE_FILE);
    let pipeline_dir = pipeline_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| opts.cwd.clone());
    let mut problems = Vec::new();
    let mut layers = Vec::new();

    // config.json: optional next to the pipeline file, required when named.
    let (config_path, config_display, required) = match &opts.config {
        Some(p) => (absolute(&opts.cwd, p), p.display().to_string(), true),
        None => {
            let p = pipeline_dir.join(CONFIG_FILE);
            let shown = match opts.file.as_deref().and_then(Path::parent) {
                Some(parent) if !parent.as_os_str().is_empty() => {
                    parent.join(CONFIG_FILE).display().to_string()
                }
                _ => CONFIG_FILE.to_string(),
            };
            (p, shown, false)
        }
    };
    match std::fs::read_to_string(&config_path) {
        Ok(text) => match parse_config_json(&text) {
            Ok(mut dict) => {
                let aliases = apply_aliases(&mut dict, &config_display, &mut problems);
                let mut layer = Layer::file(LayerKind::ConfigJson, config_display, dict, None);
                layer.aliases = aliases;
                layers.push(layer);
            }
            Err((location, message)) => problems.push(Problem::new(
                Source::File {
                    path: config_display,
                    location,
                },
                "",
                message,
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
        Err(e) => problems.push(Problem::new(
            Source::File {
                path: config_display,
                location: None,
            },
            "",
            format!("cannot read the policy file: {e}"),
        )),
    }

    // Matrix specs become their instances as soon as the file is read: variables,
    // validation and everything after see plain specs. Their problems are reported
    // with validation's.
    let mut expansion = matrix::Expansion::default();
    let mut lazy = super::parse::Lazy::default();
    let mut matrix_problems = Vec::new();
    match std::fs::read_to_string(&pipeline_file) {
        // Straight into figment's values, a spec table at a time (see `parse`).
        Ok(text) => match super::parse::pipeline(&text) {
            Ok((mut dict, kept)) => {
                lazy = kept;
                dict.values_mut().for_each(datetimes_as_strings);
                if let Some(Value::Dict(_, specs)) = dict.get_mut("specs") {
                    expansion = matrix::expand(specs, &pipeline_dir);
                    let index = TomlIndex::new(Some(&text));
                    for mp in std::mem::take(&mut expansion.problems) {
                        matrix_problems.push(Problem::new(
                            Source::File {
                                path: pipeline_display.clone(),
                                location: index.locate(&mp.path, mp.target),
                            },
                            &PathSeg::join(&mp.path),
                            mp.message,
                        ));
                    }
                }
                layers.push(Layer::file(LayerKind::Pipeline, pipeline_display, dict, Some(text)));
            }
            Err(e) => {
                let location = e.span().map(|s| line_col(&text, s.start));
                problems.push(Problem::new(
                    Source::File { path: pipeline_display, location },
                    "",
                    format!("invalid TOML: {}", e.message().trim()),
                ));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => problems.push(Problem::new(
            Source::File { path: pipeline_display, location: None },
            "",
            "no pipeline file here: create one with `spec-runner init`, or name one with -f/--file or SPEC_RUNNER_FILE".to_string(),
        )),
        Err(e) => problems.push(Problem::new(
            Source::File { path: pipeline_display, location: None },
            "",
            format!("cannot read the pipeline file: {e}"),
        )),
    }

    let spec_names = layers
        .iter()
        .find(|l| l.kind == LayerKind::Pipeline)
        .and_then(|l| match l.dict.get("specs") {
            Some(Value::Dict(_, d)) => Some(d),
            _ => None,
        });
    let mut warnings = Vec::new();
    let env = env_layer(
        &opts.env,
        spec_names,
        &expansion.groups,
        &mut problems,
        &mut warnings,
    );
    if !env.dict.is_empty() {
        layers.push(env);
    }
    let cli = cli_layer(&opts.cli);
    if !cli.dict.is_empty() {
        layers.push(cli);
    }

    // A file that cannot be read or parsed stops here; problems with variables are
    // kept and reported together with everything validation finds.
    if layers.iter().all(|l| l.kind != LayerKind::Pipeline)
        || problems
            .iter()
            .any(|p| matches!(p.source, Source::File { .. }))
    {
        return Err(problems);
    }
    problems.extend(matrix_problems);

    let shadowed = shadowed_values(&layers, &lazy);
    // The specs skip figment: it would copy them (most of the data) once more. They
    // are merged below the way figment merges, a higher layer's value winning and
    // tables merged key by key.
    let mut specs: Option<Value> = None;
    let mut figment = Figment::new();
    for layer in &mut layers {
        let dict = match layer.kind {
            LayerKind::Pipeline => {
                layer.top_keys = layer.dict.keys().cloned().collect();
                let mut dict = std::mem::take(&mut layer.dict);
                if let Some(v) = dict.remove("specs") {
                    merge_value(&mut specs, v);
                }
                dict
            }
            // Specs in config.json are an error (validate reports it); merged they
            // would pass for the pipeline file's.
            LayerKind::ConfigJson => {
                let mut d = layer.dict.clone();
                d.remove("specs");
                d
            }
            LayerKind::Env | LayerKind::Cli => {
                let mut dict = layer.dict.clone();
                if let Some(v) = dict.remove("specs") {
                    merge_value(&mut specs, v);
                }
                dict
            }
        };
        figment = figment.merge(LayerProvider {
            name: layer.display.clone(),
            dict: std::cell::Cell::new(Some(dict)),
        });
    }
    // The merged values as figment holds them (every layer is in the default
    // profile); `extract` would copy them twice more.
    let mut merged = Provider::data(&figment)
        .map(|mut profiles| profiles.remove(&Profile::Default).unwrap_or_default())
        .map_err(|e| {
            vec![Problem::new(
                Source::File {
                    path: pipeline_file.display().to_string(),
                    location: None,
                },
                "",
                format!("cannot merge the configuration layers: {}", e.kind),
            )]
        })?;
    drop(figment);
    if let Some(specs) = specs {
        merged.insert("specs".into(), specs);
    }
    Ok(Layers {
        pipeline_file,
        pipeline_dir,
        layers,
        merged,
        problems,
        shadowed,
        warnings,
        matrix_groups: expansion.groups,
        instance_of: expansion.instance_of,
        lazy,
    })
}

/// The keys a layer sets: `[key]` at the top, `[specs, name, key]` in a spec (for
/// the pipeline file, only its top: nothing lower holds specs).
fn set_paths(layer: &Layer) -> Vec<Vec<PathSeg>> {
    let mut out = Vec::new();
    for (key, value) in &layer.dict {
        match value {
            Value::Dict(_, specs) if key == "specs" && layer.kind != LayerKind::Pipeline => {
                for (name, table) in specs {
                    if let Value::Dict(_, t) = table {
                        for k in t.keys() {
                            out.push(vec![
                                PathSeg::Key("specs".into()),
                                PathSeg::Key(name.clone()),
                                PathSeg::Key(k.clone()),
                            ]);
                        }
                    }
                }
            }
            _ if key == "specs" => {}
            _ => out.push(vec![PathSeg::Key(key.clone())]),
        }
    }
    out
}

/// Values of lower layers at the paths that higher layers set.
fn shadowed_values(layers: &[Layer], lazy: &super::parse::Lazy) -> Vec<Shadowed> {
    let mut out = Vec::new();
    for (high, h) in layers.iter().enumerate() {
        if h.kind == LayerKind::ConfigJson {
            continue;
        }
        for path in set_paths(h) {
            for (low, l) in layers[..high].iter().enumerate() {
                // A spec table kept as text is read for the asking.
                let kept = match (&path[..], l.kind, l.text.as_deref()) {
                    (
                        [PathSeg::Key(specs), PathSeg::Key(name), rest @ ..],
                        LayerKind::Pipeline,
                        Some(text),
                    ) if specs == "specs" && !rest.is_empty() && lazy.has(name) => Some(
                        lazy.table(text, name)
                            .and_then(|t| lookup(&t, rest).cloned()),
                    ),
                    _ => None,
                };
                let value = match kept {
                    Some(v) => v,
                    None => lookup(&l.dict, &path).cloned(),
                };
                if let Some(value) = value {
                    out.push(Shadowed {
                        layer: low,
                        path: path.clone(),
                        value,
                    });
                }
            }
        }
    }
    out
}

impl Layer {
    /// For a variable or flag layer: the variable or flag that set `key`, or set a
    /// value that holds it (`retry_rules` for `retry_rules[0].action`).
    pub fn setter_of(&self, key: &str) -> Option<&String> {
        let setters = match self.kind {
            LayerKind::Env => &self.variables,
            LayerKind::Cli => &self.flags,
            LayerKind::ConfigJson | LayerKind::Pipeline => return None,
        };
        setters.get(key).or_else(|| {
            setters
                .iter()
                .filter(|(k, _)| {
                    key.strip_prefix(k.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
                })
                .max_by_key(|(k, _)| k.len())
                .map(|(_, v)| v)
        })
    }

    fn file(kind: LayerKind, display: String, dict: Dict, text: Option<String>) -> Layer {
        Layer {
            kind,
            display,
            dict,
            top_keys: Vec::new(),
            variables: BTreeMap::new(),
            flags: BTreeMap::new(),
            text,
            aliases: BTreeMap::new(),
        }
    }
}

/// Merges `high` over `low` as figment's `merge` does: tables key by key, any other
/// value replaced.
fn merge_value(low: &mut Option<Value>, high: Value) {
    match (low.as_mut(), high) {
        (Some(Value::Dict(_, l)), Value::Dict(_, h)) => {
            for (key, value) in h {
                match l.remove(&key) {
                    Some(old) => {
                        let mut slot = Some(old);
                        merge_value(&mut slot, value);
                        l.insert(key, slot.unwrap_or(Value::from(Dict::new())));
                    }
                    None => {
                        l.insert(key, value);
                    }
                }
            }
        }
        (_, high) => *low = Some(high),
    }
}

/// Hands a layer's dict to figment: the dict itself rather than a copy, since figment
/// asks a provider for its data once, when it is merged.
struct LayerProvider {
    name: String,
    dict: std::cell::Cell<Option<Dict>>,
}

impl Provider for LayerProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.take().unwrap_or_default()))
    }
}

/// toml hands a date-time to serde as a one-key table; spec-runner has no use for
/// dates, so it becomes the string it was written as, for messages to show.
pub(crate) fn datetimes_as_strings(v: &mut Value) {
    const DATETIME_KEY: &str = "$__toml_private_datetime";
    match v {
        Value::Dict(tag, d) => {
            if d.len() == 1
                && let Some(Value::String(_, text)) = d.get(DATETIME_KEY)
            {
                *v = Value::String(*tag, text.clone());
                return;
            }
            d.values_mut().for_each(datetimes_as_strings);
        }
        Value::Array(_, a) => a.iter_mut().for_each(datetimes_as_strings),
        _ => {}
    }
}

/// Spec names in variable names: upper-case, `-` and `.` written as `_`.
pub fn env_spec_name(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Keys whose value is a path: a variable's text is taken as it is, so that a folder
/// called `2024` or `true` stays a string.
const PATH_KEYS: &[&str] = &["retry_log_dir", "state_dir", "junit_path"];

/// A variable's text as a value of `key`.
fn env_value(key: &str, text: &str) -> Value {
    if PATH_KEYS.contains(&key) {
        return Value::from(text.to_string());
    }
    // A variable's value is read as a TOML value, the pipeline file's own syntax:
    // `7`, `0.5`, `true`, `[2, 64]`, `{ action = "fail" }`, `"quoted"`; anything else
    // (`5m`, `info`) is a string. (figment's own value parser panics on some input,
    // e.g. `["ü\t"]`, found by the fuzzer.)
    let parsed = toml::from_str::<Dict>(&format!("v = {text}"))
        .ok()
        .filter(|d| d.len() == 1)
        .and_then(|mut d| d.remove("v"))
        .unwrap_or_else(|| Value::from(text.to_string()));
    match parsed {
        // A command is a string or an array; `42` or `true` is a (strange) command
        // name, not a number.
        Value::Num(..) | Value::Bool(..) | Value::Char(..) if key == "on_exhausted" => {
            Value::from(text.to_string())
        }
        other => other,
    }
}

/// A variable that looks like ours but names no setting: a warning, not an error, so
/// that an unrelated `SPEC_RUNNER_VERSION=0.1.0` (an install pin in CI) stops nothing.
/// A per-spec variable (`SPEC_RUNNER_SPECS__…`) is unmistakably meant for us: its
/// problems stay errors.
fn unknown_variable(var: &str) -> String {
    let candidates: Vec<String> = known_root_keys()
        .filter(|k| *k != "specs")
        .map(|k| format!("{ENV_PREFIX}{}", k.to_ascii_uppercase()))
        .chain(RESERVED_VARIABLES.iter().map(|v| (*v).to_string()))
        .collect();
    let hint = super::diag::did_you_mean(var, candidates.iter().map(String::as_str))
        .map(|s| format!("; did you mean {s}?"))
        .unwrap_or_default();
    format!(
        "ignoring variable {var}: spec-runner has no such setting (expected SPEC_RUNNER_<KEY> or SPEC_RUNNER_SPECS__<SPEC>__<KEY>){hint}"
    )
}

fn env_layer(
    env: &[(String, String)],
    specs: Option<&Dict>,
    groups: &BTreeMap<String, Vec<String>>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<String>,
) -> Layer {
    let mut layer = Layer::file(LayerKind::Env, "environment".into(), Dict::new(), None);
    // Sorted, so that problems come out in the same order whatever the environment's.
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !is_reserved(k))
        .collect();
    vars.sort();
    // Spec names as variables write them; built only when a variable needs it.
    let mut by_env_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    if vars.iter().any(|(k, _)| k.contains("__")) {
        for name in specs.into_iter().flat_map(Dict::keys) {
            by_env_name
                .entry(env_spec_name(name))
                .or_default()
                .push(name);
        }
    }
    for (var, raw_value) in vars {
        let rest = &var[ENV_PREFIX.len()..];
        let source = Source::Variable(var.clone());
        let parts: Vec<&str> = rest.split("__").collect();
        let (targets, key): (Vec<Option<String>>, String) = match parts.as_slice() {
            [key] => {
                let key = key.to_ascii_lowercase();
                let known = known_root_keys().any(|k| k == key)
                    || key == "on_exhausted"
                    || SPEC_KEYS.contains(&key.as_str());
                if !known {
                    warnings.push(unknown_variable(var));
                    continue;
                }
                (vec![None], key)
            }
            [specs, spec, key] if specs.eq_ignore_ascii_case("SPECS") => {
                let key = key.to_ascii_lowercase();
                let written = format!("specs.{spec}.{key}");
                match by_env_name
                    .get(&spec.to_ascii_uppercase())
                    .map(Vec::as_slice)
                {
                    Some([one]) => (vec![Some(one.to_string())], key),
                    Some(many) => {
                        problems.push(Problem::new(
                            source,
                            &written,
                            format!(
                                "`{spec}` names more than one spec ({}): rename one of them to address it from a variable",
                                many.join(", ")
                            ),
                        ));
                        continue;
                    }
                    // A matrix spec's name: every instance that no variable of its
                    // own addresses (those sort first, and the more specific wins).
                    None if groups
                        .keys()
                        .any(|g| env_spec_name(g) == spec.to_ascii_uppercase()) =>
                    {
                        let instances = groups
                            .iter()
                            .filter(|(g, _)| env_spec_name(g) == spec.to_ascii_uppercase())
                            .flat_map(|(_, i)| i.iter())
                            .filter(|i| !layer.variables.contains_key(&format!("specs.{i}.{key}")))
                            .map(|i| Some(i.clone()))
                            .collect();
                        (instances, key)
                    }
                    None => {
                        let hint =
                            super::diag::did_you_mean(spec, by_env_name.keys().map(String::as_str))
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default();
                        problems.push(Problem::new(
                            source,
                            &written,
                            format!(
                                "no spec is named `{spec}` (spec names in variables are upper-case with `-` and `.` written as `_`){hint}"
                            ),
                        ));
                        continue;
                    }
                }
            }
            [first, ..] if first.eq_ignore_ascii_case("SPECS") => {
                problems.push(Problem::new(
                    source,
                    "",
                    "not a spec-runner variable: expected SPEC_RUNNER_SPECS__<SPEC>__<KEY>"
                        .to_string(),
                ));
                continue;
            }
            _ => {
                warnings.push(unknown_variable(var));
                continue;
            }
        };
        for spec in targets {
            let path = match &spec {
                Some(s) => format!("specs.{s}.{key}"),
                None => key.clone(),
            };
            if key == "on_exhausted" {
                problems.push(Problem::new(
                    source,
                    &path,
                    "`on_exhausted` is a command: commands come only from the pipeline file, never from variables".into(),
                ));
                break;
            }
            if key == "specs" || SPEC_KEYS.contains(&key.as_str()) {
                problems.push(Problem::new(
                    source,
                    &path,
                    format!(
                        "`{key}` can only be set in the pipeline file: variables may override policy keys only (e.g. retry_max_retries)"
                    ),
                ));
                break;
            }
            if spec.is_some() && RawRunPolicy::KEYS.contains(&key.as_str()) {
                problems.push(Problem::new(
                    source,
                    &path,
                    format!(
                        "`{key}` is run-wide: set it with SPEC_RUNNER_{}, not per spec",
                        key.to_ascii_uppercase()
                    ),
                ));
                break;
            }
            if let Some(other) = layer.variables.get(&path) {
                problems.push(Problem::new(
                    source,
                    &path,
                    format!("also set by {other}: set it with one variable only"),
                ));
                break;
            }
            let value = env_value(&key, raw_value);
            match spec {
                Some(s) => {
                    let Value::Dict(_, specs) = layer
                        .dict
                        .entry("specs".into())
                        .or_insert_with(|| Value::from(Dict::new()))
                    else {
                        break;
                    };
                    let Value::Dict(_, one) =
                        specs.entry(s).or_insert_with(|| Value::from(Dict::new()))
                    else {
                        break;
                    };
                    one.insert(key.clone(), value);
                }
                None => {
                    layer.dict.insert(key.clone(), value);
                }
            }
            layer.variables.insert(path, var.clone());
        }
    }
    layer
}

fn cli_layer(cli: &CliOverrides) -> Layer {
    let mut layer = Layer::file(LayerKind::Cli, "command line".into(), Dict::new(), None);
    if let Some(jobs) = cli.jobs {
        layer.dict.insert("jobs".into(), Value::from(jobs));
        layer.flags.insert("jobs".into(), "--jobs".into());
    }
    if let Some(ff) = cli.fail_fast {
        layer.dict.insert("fail_fast".into(), Value::from(ff));
        layer.flags.insert("fail_fast".into(), "--fail-fast".into());
    }
    layer
}

fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    }
}

fn display_path(_cwd: &Path, given: Option<&Path>, default: &str) -> String {
    given
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| default.to_string())
}

/// Renames the original tool's keys that take effect under spec-runner's name
/// (`no_commit_limit` → `no_progress_limit`); returns spec-runner's name → the name
/// written. Both names in one file is a problem: which one was meant?
fn apply_aliases(
    dict: &mut Dict,
    display: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for (old, new) in super::raw::CONFIG_ALIASES {
        let Some(value) = dict.remove(*old) else {
            continue;
        };
        if dict.contains_key(*new) {
            problems.push(Problem::new(
                Source::File { path: display.to_string(), location: None },
                old,
                format!("`{old}` is the original tool's name for `{new}`, which is set too: keep one of them"),
            ));
            continue;
        }
        dict.insert((*new).to_string(), value);
        aliases.insert((*new).to_string(), (*old).to_string());
    }
    aliases
}

/// `config.json`'s text as a dict of keys. A key set to `null` counts as not set (JSON
/// has no other way to say "none"). Errors carry a line and column when JSON knows one.
fn parse_config_json(text: &str) -> Result<Dict, (Option<(usize, usize)>, String)> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let location = (e.line() > 0).then(|| (e.line(), e.column().max(1)));
        (
            location,
            format!("invalid JSON: {}", strip_json_position(&e.to_string())),
        )
    })?;
    let serde_json::Value::Object(mut map) = value else {
        let found = match value {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err((
            None,
            format!("expected a JSON object of policy keys, found {found}"),
        ));
    };
    map.retain(|_, v| !v.is_null());
    serde_json::from_value::<Dict>(serde_json::Value::Object(map))
        .map_err(|e| (None, format!("invalid JSON: {e}")))
}

fn strip_json_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Finds where key paths are written in the pipeline file. The file is parsed again
/// with spans, once, and only when a problem needs a location: loading a valid file
/// never pays for it.
pub struct TomlIndex<'a> {
    text: Option<&'a str>,
    doc: std::cell::OnceCell<Option<toml::Spanned<toml::de::DeTable<'a>>>>,
}

impl<'a> TomlIndex<'a> {
    /// An index of `text`; `None` when there is no pipeline text (every lookup fails).
    pub fn new(text: Option<&'a str>) -> TomlIndex<'a> {
        TomlIndex {
            text,
            doc: std::cell::OnceCell::new(),
        }
    }

    /// Line and column of `path`: its key or its value (for a table, the key in its
    /// header), or failing that of the deepest part of the path that is written.
    pub fn locate(&self, path: &[PathSeg], target: Target) -> Option<(usize, usize)> {
        use toml::de::{DeTable, DeValue};
        let text = self.text?;
        let doc = self
            .doc
            .get_or_init(|| DeTable::parse(text).ok())
            .as_ref()?;
        let mut span = None;
        let mut table = Some(doc.get_ref());
        let mut array: Option<&toml::de::DeArray> = None;
        for (i, seg) in path.iter().enumerate() {
            let last = i + 1 == path.len();
            let found = match (seg, table, array) {
                (PathSeg::Key(k), Some(t), _) => {
                    t.get_key_value(k.as_str()).map(|(key, v)| {
                        // Point at the key of a table header or of a key that should
                        // not be there, at the value of a plain key.
                        let at_key = matches!(v.get_ref(), DeValue::Table(_))
                            || (last && target == Target::Key);
                        (if at_key { key.span() } else { v.span() }, v.get_ref())
                    })
                }
                (PathSeg::Index(i), _, Some(a)) => a.get(*i).map(|v| (v.span(), v.get_ref())),
                _ => None,
            };
            let Some((s, v)) = found else { break };
            span = Some(s);
            table = None;
            array = None;
            match v {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => {}
            }
        }
        span.map(|s| line_col(text, s.start))
    }
}

/// Finds where `path` is written in a TOML document (its value, or failing that the
/// deepest table that exists). Parses `text` on every call: for one-off lookups.
pub fn toml_location(text: &str, path: &[PathSeg]) -> Option<(usize, usize)> {
    TomlIndex::new(Some(text)).locate(path, Target::Value)
}

/// Keys a spec table or the root may hold, for did-you-mean.
pub fn known_root_keys() -> impl Iterator<Item = &'static str> {
    RawRunPolicy::KEYS
        .iter()
        .chain(RawPolicy::KEYS)
        .copied()
        .chain(["specs"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::diag::path;

    /// A spec table kept as the file's text reads as it would as values: with the
    /// variables' values merged over it, its origins and overridden values found.
    #[test]
    fn a_spec_table_kept_as_text_reads_as_values_with_variables_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(
            &file,
            "jobs = 2\n[specs.a]\ncommand = [\"true\"]\nretry_max_retries = 1\nenv = { K = \"v\" }\n",
        )
        .unwrap();
        let opts = LoadOptions {
            file: Some(PathBuf::from("p.toml")),
            env: vec![
                ("SPEC_RUNNER_SPECS__A__RETRY_MAX_RETRIES".into(), "4".into()),
                ("SPEC_RUNNER_SPECS__A__TIMEOUT_SECONDS".into(), "5".into()),
            ],
            cwd: dir.path().to_path_buf(),
            ..LoadOptions::default()
        };
        let layers = read_layers(&opts).unwrap();
        assert!(layers.lazy.has("a"));
        let Some(Value::Dict(_, merged)) = lookup(&layers.merged, &path(&["specs", "a"])) else {
            panic!("no spec a");
        };
        let table = layers.spec_table("a", merged);
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["command", "env", "retry_max_retries", "timeout_seconds"]
        );
        assert_eq!(table["retry_max_retries"].to_i128(), Some(4));
        assert_eq!(
            layers.origin(&path(&["specs", "a", "env"])).as_deref(),
            Some("p.toml: specs.a.env")
        );
        assert_eq!(
            layers
                .origin(&path(&["specs", "a", "retry_max_retries"]))
                .as_deref(),
            Some("SPEC_RUNNER_SPECS__A__RETRY_MAX_RETRIES")
        );
        assert_eq!(layers.origin(&path(&["specs", "a", "cwd"])), None);
        // The file's value under the variable's is still known (a bad one is reported).
        assert!(
            layers
                .shadowed
                .iter()
                .any(|s| s.path == path(&["specs", "a", "retry_max_retries"])
                    && s.value.to_i128() == Some(1))
        );
    }

    #[test]
    fn line_col_counts_characters_and_survives_any_offset() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // The `=` after the two-byte é is byte 10 but character 4 of its line.
        assert_eq!(line_col(text, 10), (2, 4));
        // Inside a character or past the end: no panic.
        assert_eq!(line_col(text, 8), (2, 2));
        assert_eq!(line_col(text, 999).0, 3);
    }

    #[test]
    fn locations_inside_rules_and_spec_tables() {
        let text = "\
jobs = 2

[[retry_rules]]
exit_codes = [64]
action = \"fail\"

[[retry_rules]]
output = \"x\"
action = \"retry\"

[specs.a]
command = \"true\"
retry_rules = [{ action = \"retry\" }, { signals = [\"SIGSEGV\", \"SIGX\"], action = \"fail\" }]

[specs.\"b.c\"]
command = [\"ls\", 7]

[[specs.\"b.c\".retry_rules]]
action = \"abort\"
";
        let idx = TomlIndex::new(Some(text));
        let at = |keys: &[&str], more: &[PathSeg]| {
            let mut p = path(keys);
            p.extend_from_slice(more);
            p
        };
        let v = Target::Value;
        assert_eq!(idx.locate(&path(&["jobs"]), v), Some((1, 8)));
        assert_eq!(idx.locate(&path(&["jobs"]), Target::Key), Some((1, 1)));
        let rule1 = at(
            &["retry_rules"],
            &[PathSeg::Index(1), PathSeg::Key("output".into())],
        );
        assert_eq!(idx.locate(&rule1, v), Some((8, 10)));
        let action0 = at(
            &["retry_rules"],
            &[PathSeg::Index(0), PathSeg::Key("action".into())],
        );
        assert_eq!(idx.locate(&action0, v), Some((5, 10)));
        assert_eq!(idx.locate(&action0, Target::Key), Some((5, 1)));
        // A spec table points at its name in the header.
        assert_eq!(idx.locate(&path(&["specs", "a"]), v), Some((11, 8)));
        assert_eq!(idx.locate(&path(&["specs", "b.c"]), v), Some((15, 8)));
        let sig = at(
            &["specs", "a", "retry_rules"],
            &[
                PathSeg::Index(1),
                PathSeg::Key("signals".into()),
                PathSeg::Index(1),
            ],
        );
        assert_eq!(idx.locate(&sig, v), Some((13, 62)));
        let argv = at(&["specs", "b.c", "command"], &[PathSeg::Index(1)]);
        assert_eq!(idx.locate(&argv, v), Some((16, 18)));
        let nested = at(
            &["specs", "b.c", "retry_rules"],
            &[PathSeg::Index(0), PathSeg::Key("action".into())],
        );
        assert_eq!(idx.locate(&nested, v), Some((19, 10)));
        // A key that is not written: the deepest part that is.
        assert_eq!(idx.locate(&path(&["specs", "a", "cwd"]), v), Some((11, 8)));
        assert_eq!(idx.locate(&path(&["nope"]), v), None);
        // No text, or text that is not TOML: no location, no panic.
        assert_eq!(TomlIndex::new(None).locate(&path(&["jobs"]), v), None);
        assert_eq!(TomlIndex::new(Some("[x")).locate(&path(&["x"]), v), None);
    }
}
