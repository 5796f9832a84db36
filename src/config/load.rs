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
    "SPEC_RUNNER_FILE",
    "SPEC_RUNNER_CONFIG",
    "SPEC_RUNNER_PROGRESS",
    "SPEC_RUNNER_COLOR",
    "SPEC_RUNNER_FORMAT",
];

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
    pub dict: Dict,
    /// For `Env`: key path (`retry_max_retries`, `specs.a.jobs`) → variable name.
    pub variables: BTreeMap<String, String>,
    /// For `Cli`: key → flag.
    pub flags: BTreeMap<String, String>,
    /// For `Pipeline`: the file's text, to find line and column of a problem.
    pub text: Option<String>,
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
}

impl Layers {
    /// The highest layer that holds `path`: where the merged value came from.
    pub fn layer_of(&self, path: &[PathSeg]) -> Option<&Layer> {
        self.layers
            .iter()
            .rev()
            .find(|l| lookup(&l.dict, path).is_some())
    }

    /// Names a value's origin: `spec-runner.toml: specs.a.jobs`, a variable, a flag.
    pub fn origin(&self, path: &[PathSeg]) -> Option<String> {
        let layer = self.layer_of(path)?;
        let key = PathSeg::join(path);
        Some(match layer.kind {
            LayerKind::ConfigJson | LayerKind::Pipeline => format!("{}: {key}", layer.display),
            LayerKind::Env => layer.variables.get(&key).cloned().unwrap_or(key),
            LayerKind::Cli => layer.flags.get(&key).cloned().unwrap_or(key),
        })
    }

    /// Where a problem at `path` should point: the file or variable that set it.
    pub fn source_of(&self, path: &[PathSeg]) -> Source {
        match self.layer_of(path) {
            Some(layer) => self.layer_source(layer, path),
            None => Source::File {
                path: self.layers_display(LayerKind::Pipeline),
                location: None,
            },
        }
    }

    fn layers_display(&self, kind: LayerKind) -> String {
        self.layers
            .iter()
            .find(|l| l.kind == kind)
            .map(|l| l.display.clone())
            .unwrap_or_else(|| self.pipeline_file.display().to_string())
    }

    fn layer_source(&self, layer: &Layer, path: &[PathSeg]) -> Source {
        let key = PathSeg::join(path);
        match layer.kind {
            LayerKind::ConfigJson => Source::File {
                path: layer.display.clone(),
                location: None,
            },
            LayerKind::Pipeline => Source::File {
                path: layer.display.clone(),
                location: layer.text.as_deref().and_then(|t| toml_location(t, path)),
            },
            LayerKind::Env => Source::Variable(
                layer
                    .variables
                    .iter()
                    .find(|(k, _)| {
                        key == **k
                            || key.starts_with(&format!("{k}."))
                            || key.starts_with(&format!("{k}["))
                    })
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| "environment".into()),
            ),
            LayerKind::Cli => Source::Flag(layer.flags.get(&key).cloned().unwrap_or(key)),
        }
    }
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
        Ok(text) => match serde_json::from_str::<Dict>(&text) {
            Ok(dict) => layers.push(Layer::file(
                LayerKind::ConfigJson,
                config_display,
                dict,
                None,
            )),
            Err(e) => problems.push(Problem::new(
                Source::File {
                    path: config_display,
                    location: Some((e.line(), e.column())),
                },
                "",
                format!("invalid JSON: {}", strip_json_position(&e.to_string())),
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

    match std::fs::read_to_string(&pipeline_file) {
        Ok(text) => match toml::from_str::<toml::Table>(&text) {
            Ok(table) => match toml_table_to_dict(table) {
                Ok(dict) => layers.push(Layer::file(LayerKind::Pipeline, pipeline_display, dict, Some(text))),
                Err(msg) => problems.push(Problem::new(
                    Source::File { path: pipeline_display, location: None },
                    "",
                    msg,
                )),
            },
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

    let spec_names: Vec<String> = layers
        .iter()
        .find(|l| l.kind == LayerKind::Pipeline)
        .and_then(|l| match l.dict.get("specs") {
            Some(Value::Dict(_, d)) => Some(d.keys().cloned().collect()),
            _ => None,
        })
        .unwrap_or_default();
    let env = env_layer(&opts.env, &spec_names, &mut problems);
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

    let mut figment = Figment::new();
    for layer in &layers {
        figment = figment.merge(LayerProvider(layer));
    }
    let merged = figment.extract::<Dict>().map_err(|e| {
        vec![Problem::new(
            Source::File {
                path: pipeline_file.display().to_string(),
                location: None,
            },
            "",
            format!("cannot merge the configuration layers: {}", e.kind),
        )]
    })?;
    Ok(Layers {
        pipeline_file,
        pipeline_dir,
        layers,
        merged,
        problems,
    })
}

impl Layer {
    fn file(kind: LayerKind, display: String, dict: Dict, text: Option<String>) -> Layer {
        Layer {
            kind,
            display,
            dict,
            variables: BTreeMap::new(),
            flags: BTreeMap::new(),
            text,
        }
    }
}

/// Hands a layer's dict to figment.
struct LayerProvider<'a>(&'a Layer);

impl Provider for LayerProvider<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.0.display.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.dict.clone()))
    }
}

/// TOML values become figment values. Dates have no meaning here and are refused.
fn toml_table_to_dict(table: toml::Table) -> Result<Dict, String> {
    table
        .into_iter()
        .map(|(k, v)| Ok((k, toml_to_value(v)?)))
        .collect()
}

fn toml_to_value(v: toml::Value) -> Result<Value, String> {
    Ok(match v {
        toml::Value::String(s) => Value::from(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::from(b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(a) => Value::from(
            a.into_iter()
                .map(toml_to_value)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        toml::Value::Table(t) => Value::from(toml_table_to_dict(t)?),
    })
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

fn env_layer(
    env: &[(String, String)],
    spec_names: &[String],
    problems: &mut Vec<Problem>,
) -> Layer {
    let mut layer = Layer::file(LayerKind::Env, "environment".into(), Dict::new(), None);
    let mut by_env_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for name in spec_names {
        by_env_name
            .entry(env_spec_name(name))
            .or_default()
            .push(name);
    }
    for (var, raw_value) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if RESERVED_VARIABLES.contains(&var.as_str()) {
            continue;
        }
        let source = Source::Variable(var.clone());
        let parts: Vec<&str> = rest.split("__").collect();
        let (spec, key) = match parts.as_slice() {
            [key] => (None, key.to_ascii_lowercase()),
            [specs, spec, key] if specs.eq_ignore_ascii_case("SPECS") => {
                match by_env_name
                    .get(&spec.to_ascii_uppercase())
                    .map(Vec::as_slice)
                {
                    Some([one]) => (Some(one.to_string()), key.to_ascii_lowercase()),
                    Some(many) => {
                        problems.push(Problem::new(
                            source,
                            "",
                            format!(
                                "`{spec}` names more than one spec ({}): rename one of them to address it from a variable",
                                many.join(", ")
                            ),
                        ));
                        continue;
                    }
                    None => {
                        let known: Vec<String> = by_env_name.keys().cloned().collect();
                        let hint =
                            super::diag::did_you_mean(spec, known.iter().map(String::as_str))
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default();
                        problems.push(Problem::new(
                            source,
                            "",
                            format!(
                                "no spec is named `{spec}` (spec names in variables are upper-case with `-` and `.` written as `_`){hint}"
                            ),
                        ));
                        continue;
                    }
                }
            }
            _ => {
                problems.push(Problem::new(
                    source,
                    "",
                    "not a spec-runner variable: expected SPEC_RUNNER_<KEY> or SPEC_RUNNER_SPECS__<SPEC>__<KEY>".to_string(),
                ));
                continue;
            }
        };
        if key == "specs" || SPEC_KEYS.contains(&key.as_str()) {
            problems.push(Problem::new(
                source,
                &key,
                format!(
                    "`{key}` can only be set in the pipeline file: variables may override policy keys only (e.g. retry_max_retries)"
                ),
            ));
            continue;
        }
        if spec.is_some() && RawRunPolicy::KEYS.contains(&key.as_str()) {
            problems.push(Problem::new(
                source,
                &key,
                format!(
                    "`{key}` is run-wide: set it with SPEC_RUNNER_{}, not per spec",
                    key.to_ascii_uppercase()
                ),
            ));
            continue;
        }
        let value: Value = raw_value
            .parse()
            .unwrap_or_else(|never: std::convert::Infallible| match never {});
        let path = match &spec {
            Some(s) => format!("specs.{s}.{key}"),
            None => key.clone(),
        };
        match spec {
            Some(s) => {
                let Value::Dict(_, specs) = layer
                    .dict
                    .entry("specs".into())
                    .or_insert_with(|| Value::from(Dict::new()))
                else {
                    continue;
                };
                let Value::Dict(_, one) =
                    specs.entry(s).or_insert_with(|| Value::from(Dict::new()))
                else {
                    continue;
                };
                one.insert(key, value);
            }
            None => {
                layer.dict.insert(key, value);
            }
        }
        layer.variables.insert(path, var.clone());
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

fn strip_json_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before.len() - i)
        .unwrap_or(before.len() + 1);
    (line, col)
}

/// Finds where `path` is written in a TOML document (its value, or failing that the
/// deepest table that exists).
pub fn toml_location(text: &str, path: &[PathSeg]) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut span = None;
    let mut table = Some(doc.get_ref());
    let mut array: Option<&toml::de::DeArray> = None;
    for seg in path {
        let value = match (seg, table, array) {
            (PathSeg::Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                .map(|(key, v)| {
                    // Point at the key of a table header, the value of a plain key.
                    (
                        if matches!(v.get_ref(), DeValue::Table(_)) {
                            key.span()
                        } else {
                            v.span()
                        },
                        v.get_ref(),
                    )
                }),
            (PathSeg::Index(i), _, Some(a)) => a.get(*i).map(|v| (v.span(), v.get_ref())),
            _ => None,
        };
        let Some((s, v)) = value else { break };
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

/// Keys a spec table or the root may hold, for did-you-mean.
pub fn known_root_keys() -> impl Iterator<Item = &'static str> {
    RawRunPolicy::KEYS
        .iter()
        .chain(RawPolicy::KEYS)
        .copied()
        .chain(["specs"])
}
