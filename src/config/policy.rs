//! The validated, immutable result of loading: what the rest of the program runs on.
//!
//! Nothing here reads files or the environment; `load` and `validate` build these.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::retry::RetryPolicy;

/// How a command is run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CommandLine {
    /// A string, run as `sh -c STRING`.
    Shell(String),
    /// An argv, run directly (the first element is looked up on `PATH`).
    Argv(Vec<String>),
}

impl CommandLine {
    /// The program and its arguments as they will be executed.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            CommandLine::Argv(v) => v.clone(),
        }
    }
}

/// Where a spec's attempts run.
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
pub enum BackendKind {
    /// Process groups on this machine.
    #[default]
    Local,
    /// One Slurm batch job per attempt.
    Slurm,
}

/// The `[slurm]` table, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmSettings {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub sbatch_args: Vec<String>,
    pub time_limit_margin: Duration,
    pub poll_interval: Duration,
}

impl Default for SlurmSettings {
    fn default() -> SlurmSettings {
        SlurmSettings {
            partition: None,
            account: None,
            qos: None,
            sbatch_args: Vec::new(),
            time_limit_margin: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Per-spec policy: every key a spec may override.
#[derive(Clone, Debug)]
pub struct Policy {
    pub retry: RetryPolicy,
    pub retry_log_dir: PathBuf,
    pub timeout: Option<Duration>,
    pub activity_timeout: Option<Duration>,
    pub terminate_grace: Duration,
    pub on_exhausted: Option<CommandLine>,
    pub backend: BackendKind,
    /// `max_iterations` and `no_progress_limit`: they matter only to iterating specs.
    pub iterate: crate::iterate::LoopPolicy,
}

/// Run-wide policy: keys that only make sense once per run.
#[derive(Clone, Debug)]
pub struct RunPolicy {
    pub jobs: usize,
    pub fail_fast: bool,
    pub retry_budget: Option<u32>,
    pub state_dir: PathBuf,
    pub junit_path: Option<PathBuf>,
    pub slurm: SlurmSettings,
}

/// Where each effective value came from, by key: `default`, a file and key
/// (`spec-runner.toml: specs.a.retry_max_retries`), a variable name or a flag.
///
/// Most specs take most values from the same global key, so the texts are shared
/// rather than formatted and stored once per spec and key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins(Vec<(&'static str, Arc<str>)>);

impl Origins {
    /// Sets where `key`'s value came from.
    pub fn insert(&mut self, key: &'static str, origin: Arc<str>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = origin,
            None => self.0.push((key, origin)),
        }
    }

    /// Where `key`'s value came from, when it is one of these keys.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, o)| &**o)
    }

    /// Every key and origin, in the order set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(k, o)| (*k, &**o))
    }
}

/// One spec, ready to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Shared with the run's state, which keys its map of specs by it.
    pub name: Arc<str>,
    /// Shared by the specs that run the same command (one copy for a thousand specs
    /// that run the same script in different folders or with different variables).
    pub command: Arc<CommandLine>,
    /// Absolute (resolved against the pipeline file's folder). Shared by the specs
    /// that run in the same folder (most of them): one copy, not one per spec. (An
    /// `Arc<PathBuf>`: 8 bytes a spec less than an `Arc<Path>`.)
    pub cwd: Arc<PathBuf>,
    /// Shared by the specs that set none (most of them): 16 bytes a spec less than
    /// the map itself.
    pub env: Arc<BTreeMap<String, String>>,
    /// Indices into `Pipeline::specs`. (A boxed slice: 8 bytes less than a `Vec` in
    /// every spec.)
    pub depends_on: Box<[usize]>,
    /// `tasks` and `until`, boxed together: most specs have neither, and a run holds
    /// every spec (8 bytes a spec less than a box each). `None` when neither is set.
    pub iterate: Option<Box<Iterate>>,
    /// Shared with `Pipeline::global` (and so with every other such spec) when the
    /// spec sets no policy key of its own: one copy for thousands of specs.
    pub policy: Arc<Policy>,
    /// For each effective key, where its value came from (`default`, a file and key,
    /// a variable name or a flag). Shared like `policy`.
    pub origins: Arc<Origins>,
}

/// What makes a spec iterate (see [`Spec::iterate`]); at least one is set.
#[derive(Clone, Debug)]
pub struct Iterate {
    /// `tasks`, absolute (resolved against `cwd`): the spec iterates until none is open.
    pub tasks: Option<PathBuf>,
    /// `until`: the spec iterates until this command exits 0 (run in `cwd`).
    pub until: Option<CommandLine>,
}

impl Spec {
    /// Whether the spec iterates (has `tasks` or `until`): one successful attempt
    /// cycle is one iteration, not the end.
    pub fn iterates(&self) -> bool {
        self.iterate.is_some()
    }

    /// `tasks`, absolute.
    pub fn tasks(&self) -> Option<&Path> {
        self.iterate.as_ref()?.tasks.as_deref()
    }

    /// `until`.
    pub fn until(&self) -> Option<&CommandLine> {
        self.iterate.as_ref()?.until.as_ref()
    }
}

/// A loaded, validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The pipeline file, absolute.
    pub file: PathBuf,
    /// Its folder: relative paths resolve against it.
    pub dir: PathBuf,
    pub run: RunPolicy,
    /// Where each run-wide value came from.
    pub run_origins: Origins,
    /// The policy of a spec that sets no key of its own (the global effective policy).
    pub global: Arc<Policy>,
    /// Where each value of `global` came from.
    pub global_origins: Arc<Origins>,
    /// Sorted by name.
    pub specs: Vec<Spec>,
    /// Matrix spec name → the indices of its instances (which are in `specs`).
    pub groups: BTreeMap<String, Vec<usize>>,
    /// Dependency order: each wave holds specs whose dependencies are all in earlier waves.
    pub waves: Vec<Vec<usize>>,
    /// Non-fatal findings (ignored keys of the original tool), one line each.
    pub warnings: Vec<String>,
}

impl Pipeline {
    /// The specs `name` stands for: the spec of that name, or every instance of the
    /// matrix spec of that name.
    pub fn resolve(&self, name: &str) -> Option<Vec<usize>> {
        match self.index_of(name) {
            Some(i) => Some(vec![i]),
            None => self.groups.get(name).cloned(),
        }
    }

    /// "no spec named `x` in FILE; did you mean `y`?"
    pub fn no_such_spec(&self, name: &str) -> String {
        // Where a matrix name does not do (one spec's logs): name its instances.
        if let Some(instances) = self.groups.get(name) {
            let shown: Vec<&str> = instances
                .iter()
                .take(5)
                .map(|&i| self.specs[i].name.as_ref())
                .collect();
            let more = if instances.len() > shown.len() {
                ", …"
            } else {
                ""
            };
            return format!(
                "`{name}` is a matrix of {} instances: name one of them ({}{more})",
                instances.len(),
                shown.join(", ")
            );
        }
        let names = self.specs.iter().map(|s| s.name.as_ref());
        let hint =
            super::diag::did_you_mean(name, names.chain(self.groups.keys().map(String::as_str)))
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
        format!("no spec named `{name}` in {}{hint}", self.file.display())
    }

    /// The index of the spec called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs
            .binary_search_by(|s| s.name.as_ref().cmp(name))
            .ok()
    }
}
