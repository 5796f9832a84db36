//! Deciding, from the saved state, what a new run does: which specs are up to date,
//! which run again (and why) and with which retry count, and which process groups a
//! killed runner left behind. Pure: reads the state, touches nothing.
//!
//! A success stays up to date the way a file does for make: while its definition is
//! unchanged and no dependency has succeeded since it started, nor runs again now.

use chrono::{DateTime, Utc};

use super::model::{
    DefinitionHash, IterationState, RunningProcess, SpecState, StateFile, definition_hash,
};
use crate::config::Pipeline;
use crate::events::Status;

/// Why a requested spec runs, or why it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Not requested by this run.
    NotRequested,
    /// Succeeded with this definition, and no dependency succeeded after it.
    UpToDate,
    /// No saved state of it: it never ran here.
    New,
    /// Its command, cwd, env or dependencies changed since it last ran.
    Changed,
    /// `--fresh` (or a restart): every requested spec runs.
    Fresh,
    /// It failed for good last time.
    Failed,
    /// It was skipped last time (a dependency failed).
    Skipped,
    /// It did not finish last time (it was running, waiting to retry, stopped, or not
    /// yet started when the run ended); its retry cycle continues.
    Unfinished(Status),
    /// This dependency succeeded after it started: it may have used an old result.
    DependencyRan(String),
    /// This dependency runs in this run, so this spec runs after it.
    DependencyRuns(String),
}

impl Why {
    /// A short stable name, for JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Why::NotRequested => "not_requested",
            Why::UpToDate => "up_to_date",
            Why::New => "new",
            Why::Changed => "changed",
            Why::Fresh => "fresh",
            Why::Failed => "failed",
            Why::Skipped => "skipped",
            Why::Unfinished(_) => "unfinished",
            Why::DependencyRan(_) => "dependency_ran",
            Why::DependencyRuns(_) => "dependency_runs",
        }
    }

    /// Whether the spec runs.
    pub fn runs(&self) -> bool {
        !matches!(self, Why::NotRequested | Why::UpToDate)
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NotRequested => write!(f, "not requested"),
            Why::UpToDate => write!(
                f,
                "up to date: it succeeded with this definition, and no dependency ran after it"
            ),
            Why::New => write!(f, "new (it has not run here yet)"),
            Why::Changed => write!(
                f,
                "its definition changed (command, cwd, env or dependencies)"
            ),
            Why::Fresh => write!(f, "--fresh"),
            Why::Failed => write!(f, "it failed last time"),
            Why::Skipped => write!(f, "it was skipped last time"),
            Why::Unfinished(status) => write!(
                f,
                "it did not finish last time ({}); its retry cycle continues",
                status.as_str()
            ),
            Why::DependencyRan(dep) => {
                write!(f, "dependency `{dep}` succeeded again after it started")
            }
            Why::DependencyRuns(dep) => write!(f, "dependency `{dep}` runs again"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResumePlan {
    /// Definition hash of every spec.
    pub hashes: Vec<DefinitionHash>,
    /// Specs this run starts.
    pub to_run: Vec<bool>,
    /// Requested specs skipped because they succeeded with this very definition.
    pub up_to_date: Vec<bool>,
    /// Why each spec runs or does not.
    pub why: Vec<Why>,
    /// Retry count each spec starts from.
    pub initial_retries: Vec<u32>,
    /// For a spec that continues an interrupted cycle: how long ago its first attempt
    /// started (`retry_max_total_seconds` counts from there, across runs).
    pub cycle_age: Vec<Option<std::time::Duration>>,
    /// For a spec that continues a cycle: the delay before its last retry
    /// (decorrelated jitter grows from it).
    pub previous_delay: Vec<Option<std::time::Duration>>,
    /// The next log number of each spec.
    pub next_log: Vec<u32>,
    /// For an iterating spec that continues an interrupted loop: where it was (the
    /// same iteration runs again, its number and no-progress streak carried over).
    pub loops: Vec<Option<Box<IterationState>>>,
    /// Processes recorded as running: a killed runner left them.
    pub abandoned: Vec<(String, RunningProcess)>,
    /// Batch jobs recorded as running (spec index, job id, log number): a killed
    /// runner left them; they may still run.
    pub jobs_left: Vec<(usize, u64, u32)>,
    /// Per spec: the job (id, log number) of `jobs_left` this run follows again,
    /// decided by the caller, which can ask the cluster (this module cannot).
    pub reattach: Vec<Option<(u64, u32)>>,
}

/// How a run treats what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Skip succeeded, unchanged specs; carry interrupted specs' retry counts over.
    Resume,
    /// Run every requested spec from scratch.
    Fresh,
}

pub fn plan(
    p: &Pipeline,
    requested: &[bool],
    previous: Option<&StateFile>,
    mode: Mode,
) -> ResumePlan {
    let n = p.specs.len();
    let hashes: Vec<DefinitionHash> = p.specs.iter().map(|s| definition_hash(p, s)).collect();
    let mut plan = ResumePlan {
        hashes,
        to_run: vec![false; n],
        up_to_date: vec![false; n],
        why: vec![Why::NotRequested; n],
        initial_retries: vec![0; n],
        cycle_age: vec![None; n],
        previous_delay: vec![None; n],
        next_log: vec![1; n],
        loops: vec![None; n],
        abandoned: Vec::new(),
        jobs_left: Vec::new(),
        reattach: vec![None; n],
    };
    for (i, spec) in p.specs.iter().enumerate() {
        let prev = previous.and_then(|f| f.specs.get(&spec.name));
        if let Some(s) = prev {
            plan.next_log[i] = s.last_log_number() + 1;
            if let Some(&proc) = s.running() {
                match proc.job_id {
                    Some(id) => plan.jobs_left.push((i, id, s.last_log_number())),
                    None => plan.abandoned.push((spec.name.to_string(), proc)),
                }
            }
        }
    }
    // In dependency order: whether a dependency runs is known before its dependents.
    for &i in p.waves.iter().flatten() {
        if !requested[i] {
            continue;
        }
        let spec = &p.specs[i];
        let prev = previous.and_then(|f| f.specs.get(&spec.name));
        let unchanged = prev.is_some_and(|s| s.definition_hash == plan.hashes[i]);
        let why = match (mode, prev) {
            (Mode::Fresh, _) => Why::Fresh,
            (Mode::Resume, None) => Why::New,
            (Mode::Resume, Some(_)) if !unchanged => Why::Changed,
            (Mode::Resume, Some(s)) => match s.status {
                Status::Succeeded => {
                    stale_because(p, i, s, previous, &plan.to_run).unwrap_or(Why::UpToDate)
                }
                Status::Failed => Why::Failed,
                Status::Skipped => Why::Skipped,
                other => Why::Unfinished(other),
            },
        };
        plan.up_to_date[i] = why == Why::UpToDate;
        plan.to_run[i] = why.runs();
        plan.why[i] = why;
        // An interrupted loop continues in the same iteration; a loop that ended
        // (failed, skipped) or whose definition changed starts afresh.
        if let (Why::Unfinished(_), Some(s)) = (&plan.why[i], prev)
            && spec.iterates()
        {
            plan.loops[i] = s.iteration().cloned().map(Box::new);
        }
        // Interrupted work continues its cycle; a spec that ended (failed, skipped)
        // starts a new one. (A count beyond a since-lowered limit starts a new cycle
        // rather than an attempt "4 of 2".)
        if let (Why::Unfinished(_), Some(s)) = (&plan.why[i], prev)
            && s.retry_count <= spec.policy.retry.max_retries
        {
            plan.initial_retries[i] = s.retry_count;
            let first = s.attempts.iter().rev().find(|a| a.attempt == 1);
            plan.cycle_age[i] = first.map(|a| {
                (chrono::Utc::now() - a.started_at)
                    .to_std()
                    .unwrap_or_default()
            });
            if s.retry_count > 0 {
                plan.previous_delay[i] = s.last_delay_ms().map(std::time::Duration::from_millis);
            }
        }
    }
    plan
}

/// When a success of spec `i` is stale by make's rule: a dependency that runs in this
/// run, or one that succeeded after this spec's successful attempt started.
fn stale_because(
    p: &Pipeline,
    i: usize,
    own: &SpecState,
    previous: Option<&StateFile>,
    to_run: &[bool],
) -> Option<Why> {
    let spec = &p.specs[i];
    if let Some(&d) = spec.depends_on.iter().find(|&&d| to_run[d]) {
        return Some(Why::DependencyRuns(p.specs[d].name.to_string()));
    }
    let started = own.attempts.last().map(|a| a.started_at)?;
    spec.depends_on.iter().find_map(|&d| {
        let dep = previous?.specs.get(&p.specs[d].name)?;
        let ended = succeeded_at(dep)?;
        (ended > started).then(|| Why::DependencyRan(p.specs[d].name.to_string()))
    })
}

/// When a spec's last success ended, if its state is a success.
fn succeeded_at(s: &SpecState) -> Option<DateTime<Utc>> {
    if s.status != Status::Succeeded {
        return None;
    }
    s.attempts.last().and_then(|a| a.ended_at)
}

/// Why a dependency does not count as done for a spec run on its own (`restart`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmetDependency {
    /// The dependency's index in the pipeline.
    pub index: usize,
    /// `failed`, `skipped`, `stopped`, `running`, …, `never ran`, or `changed since it
    /// succeeded`.
    pub why: String,
}

/// The dependencies of spec `i` that have not succeeded with their current definition
/// according to `state`, in `depends_on` order. Pure: the check behind `restart SPEC`
/// (offline, from the state file; a live run can ask it of its own snapshot).
pub fn unmet_dependencies(
    p: &Pipeline,
    state: Option<&StateFile>,
    i: usize,
) -> Vec<UnmetDependency> {
    p.specs[i]
        .depends_on
        .iter()
        .filter_map(|&d| {
            let dep = &p.specs[d];
            let why = match state.and_then(|f| f.specs.get(&dep.name)) {
                None => "never ran".to_string(),
                Some(s) if s.status != Status::Succeeded => s.status.as_str().to_string(),
                Some(s) if s.definition_hash != definition_hash(p, dep) => {
                    "changed since it succeeded".to_string()
                }
                Some(_) => return None,
            };
            Some(UnmetDependency { index: d, why })
        })
        .collect()
}

/// What `restart` runs: the named specs, and with `with_deps` every dependency (and
/// theirs, transitively) that has not succeeded, so that it runs first. Without
/// `with_deps`, a named spec with such a dependency is an error naming each one.
pub fn restart_selection(
    p: &Pipeline,
    named: &[bool],
    state: Option<&StateFile>,
    with_deps: bool,
) -> Result<Vec<bool>, String> {
    let mut selected = named.to_vec();
    let mut work: Vec<usize> = (0..named.len()).filter(|&i| named[i]).collect();
    let mut refused = Vec::new();
    while let Some(i) = work.pop() {
        let unmet: Vec<UnmetDependency> = unmet_dependencies(p, state, i)
            .into_iter()
            .filter(|u| !selected[u.index])
            .collect();
        if unmet.is_empty() {
            continue;
        }
        if with_deps {
            for u in unmet {
                selected[u.index] = true;
                work.push(u.index);
            }
        } else {
            refused.push((i, unmet));
        }
    }
    if refused.is_empty() {
        return Ok(selected);
    }
    refused.sort_by_key(|(i, _)| *i);
    let lines: Vec<String> = refused
        .iter()
        .map(|(i, unmet)| {
            let name = &p.specs[*i].name;
            let deps: Vec<String> = unmet
                .iter()
                .map(|u| format!("`{}` ({})", p.specs[u.index].name, u.why))
                .collect();
            let (noun, verb) = if deps.len() == 1 {
                ("dependency", "has")
            } else {
                ("dependencies", "have")
            };
            format!(
                "cannot restart `{name}`: its {noun} {} {verb} not succeeded; \
                 `spec-runner restart {name} --with-deps` runs {} first",
                deps.join(", "),
                if deps.len() == 1 { "it" } else { "them" }
            )
        })
        .collect();
    Err(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, load};
    use crate::state::model::{AttemptRecord, SpecState};

    fn pipeline(toml: &str) -> Pipeline {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("spec-runner.toml"), toml).expect("write");
        load(&LoadOptions {
            cwd: dir.path().to_path_buf(),
            ..LoadOptions::default()
        })
        .expect("valid pipeline")
    }

    const BUILD_DEPLOY: &str = "\
[specs.build]
command = \"make\"
[specs.deploy]
command = \"deploy\"
depends_on = [\"build\"]
[specs.docs]
command = \"docs\"
";

    fn at(minute: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 1, 1, 12, minute, 0)
            .single()
            .expect("time")
    }

    /// A state where each named spec ended as `status`, its last attempt running
    /// from minute `start` to `end`.
    fn state(p: &Pipeline, specs: &[(&str, Status, u32, u32)]) -> StateFile {
        let mut f = StateFile::new("run-1");
        for &(name, status, start, end) in specs {
            let i = p.index_of(name).expect("spec");
            let mut s = SpecState::new(definition_hash(p, &p.specs[i]), 3);
            s.status = status;
            let mut a = AttemptRecord::started(1, 1, at(start), "task_1.log".into(), None);
            a.ended_at = Some(at(end));
            a.exit_code = Some(if status == Status::Succeeded { 0 } else { 1 });
            s.attempts.push(a);
            f.specs.insert(name.into(), s);
        }
        f
    }

    fn why(p: &Pipeline, f: Option<&StateFile>, mode: Mode) -> Vec<(String, Why)> {
        let plan = plan(p, &vec![true; p.specs.len()], f, mode);
        p.specs
            .iter()
            .map(|s| s.name.to_string())
            .zip(plan.why.iter().cloned())
            .collect()
    }

    fn named(list: &[(&str, Why)]) -> Vec<(String, Why)> {
        list.iter()
            .map(|(n, w)| ((*n).to_string(), w.clone()))
            .collect()
    }

    #[test]
    fn an_interrupted_loop_continues_and_a_changed_or_ended_one_starts_afresh() {
        let toml = "[specs.work]\ncommand = \"agent\"\ntasks = \"tasks.md\"\n";
        let p = pipeline(toml);
        let where_it_was = IterationState {
            iteration: 3,
            max_iterations: 50,
            no_progress_streak: 1,
            tasks: None,
            start_head: Some("abc".into()),
            start_tasks_done: Some(2),
        };
        let loops = |status: Status, hash: Option<&str>| {
            let mut f = state(&p, &[("work", status, 0, 1)]);
            let s = f.specs.get_mut("work").expect("spec");
            s.set_iteration(Some(Box::new(where_it_was.clone())));
            if let Some(h) = hash {
                s.definition_hash = h.into();
            }
            plan(&p, &[true], Some(&f), Mode::Resume).loops[0].clone()
        };
        for status in [
            Status::Running,
            Status::Backoff,
            Status::Stopped,
            Status::Pending,
        ] {
            assert_eq!(
                loops(status, None).as_deref(),
                Some(&where_it_was),
                "{status:?}"
            );
        }
        assert_eq!(loops(Status::Failed, None), None);
        assert_eq!(loops(Status::Running, Some("changed")), None);
        // `tasks` is part of the definition: a spec that starts iterating changed.
        let plain = pipeline("[specs.work]\ncommand = \"agent\"\n");
        assert_ne!(
            definition_hash(&plain, &plain.specs[0]),
            definition_hash(&p, &p.specs[0])
        );
    }

    #[test]
    fn a_success_is_up_to_date_until_a_dependency_succeeds_after_it() {
        let p = pipeline(BUILD_DEPLOY);
        use Status::Succeeded as Ok;
        // build, then deploy after it: all up to date.
        let f = state(
            &p,
            &[
                ("build", Ok, 0, 1),
                ("deploy", Ok, 1, 2),
                ("docs", Ok, 0, 1),
            ],
        );
        assert_eq!(
            why(&p, Some(&f), Mode::Resume),
            named(&[
                ("build", Why::UpToDate),
                ("deploy", Why::UpToDate),
                ("docs", Why::UpToDate)
            ])
        );
        // `restart build` later: deploy used the old build.
        let f = state(
            &p,
            &[
                ("build", Ok, 5, 6),
                ("deploy", Ok, 1, 2),
                ("docs", Ok, 0, 1),
            ],
        );
        let w = why(&p, Some(&f), Mode::Resume);
        assert_eq!(w[0].1, Why::UpToDate);
        assert_eq!(w[1].1, Why::DependencyRan("build".into()));
        assert_eq!(w[2].1, Why::UpToDate);
        let plan = plan(&p, &[true; 3], Some(&f), Mode::Resume);
        assert_eq!(plan.to_run, [false, true, false]);
        assert_eq!(plan.up_to_date, [true, false, true]);
        // A dependency that ended while the dependent ran counts too (it started first).
        let f = state(
            &p,
            &[
                ("build", Ok, 0, 3),
                ("deploy", Ok, 2, 4),
                ("docs", Ok, 0, 1),
            ],
        );
        assert_eq!(
            why(&p, Some(&f), Mode::Resume)[1].1,
            Why::DependencyRan("build".into())
        );
    }

    #[test]
    fn a_dependency_that_runs_now_makes_its_dependents_run() {
        let p = pipeline(BUILD_DEPLOY);
        use Status::{Failed, Succeeded as Ok};
        // build failed last time (say after a later restart): it runs, so deploy does.
        let f = state(
            &p,
            &[
                ("build", Failed, 5, 6),
                ("deploy", Ok, 1, 2),
                ("docs", Ok, 0, 1),
            ],
        );
        assert_eq!(
            why(&p, Some(&f), Mode::Resume),
            named(&[
                ("build", Why::Failed),
                ("deploy", Why::DependencyRuns("build".into())),
                ("docs", Why::UpToDate)
            ])
        );
        // A changed build: the same.
        let mut f = state(&p, &[("build", Ok, 0, 1), ("deploy", Ok, 1, 2)]);
        if let Some(b) = f.specs.get_mut("build") {
            b.definition_hash = "something else".into();
        }
        assert_eq!(
            why(&p, Some(&f), Mode::Resume),
            named(&[
                ("build", Why::Changed),
                ("deploy", Why::DependencyRuns("build".into())),
                ("docs", Why::New)
            ])
        );
    }

    #[test]
    fn each_other_reason() {
        let p = pipeline(BUILD_DEPLOY);
        assert!(
            why(&p, None, Mode::Resume)
                .iter()
                .all(|(_, w)| *w == Why::New)
        );
        let f = state(
            &p,
            &[
                ("build", Status::Stopped, 0, 1),
                ("deploy", Status::Skipped, 1, 2),
                ("docs", Status::Succeeded, 0, 1),
            ],
        );
        assert_eq!(
            why(&p, Some(&f), Mode::Resume),
            named(&[
                ("build", Why::Unfinished(Status::Stopped)),
                ("deploy", Why::Skipped),
                ("docs", Why::UpToDate)
            ])
        );
        assert!(
            why(&p, Some(&f), Mode::Fresh)
                .iter()
                .all(|(_, w)| *w == Why::Fresh)
        );
        // Not requested: neither run nor up to date.
        let plan = plan(&p, &[false, false, true], Some(&f), Mode::Resume);
        assert_eq!(plan.why[0], Why::NotRequested);
        assert_eq!(plan.to_run, [false, false, false]);
        // Every reason reads as a sentence and has a kind.
        for w in [
            Why::UpToDate,
            Why::New,
            Why::Changed,
            Why::Fresh,
            Why::Failed,
            Why::Skipped,
            Why::Unfinished(Status::Running),
            Why::DependencyRan("b".into()),
            Why::DependencyRuns("b".into()),
        ] {
            assert!(!w.to_string().is_empty() && !w.kind().is_empty());
        }
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;
    use crate::state::model::SpecState;

    fn pipeline(toml: &str) -> (Pipeline, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("spec-runner.toml"), toml).expect("write");
        let opts = crate::config::LoadOptions {
            cwd: dir.path().to_path_buf(),
            ..crate::config::LoadOptions::default()
        };
        (crate::config::load(&opts).expect("valid"), dir)
    }

    fn with(p: &Pipeline, specs: &[(&str, Status)]) -> StateFile {
        let mut f = StateFile::new("r");
        for (name, status) in specs {
            let i = p.index_of(name).unwrap();
            let mut s = SpecState::new(definition_hash(p, &p.specs[i]), 0);
            s.status = *status;
            f.specs.insert((*name).into(), s);
        }
        f
    }

    const CHAIN: &str = "[specs.build]\ncommand = \"true\"\n[specs.lint]\ncommand = \"true\"\n[specs.test]\ncommand = \"true\"\ndepends_on = [\"build\"]\n[specs.deploy]\ncommand = \"true\"\ndepends_on = [\"test\", \"lint\"]\n";

    fn named(p: &Pipeline, names: &[&str]) -> Vec<bool> {
        let mut v = vec![false; p.specs.len()];
        for n in names {
            v[p.index_of(n).unwrap()] = true;
        }
        v
    }

    fn names(p: &Pipeline, sel: &[bool]) -> Vec<String> {
        (0..sel.len())
            .filter(|&i| sel[i])
            .map(|i| p.specs[i].name.to_string())
            .collect()
    }

    #[test]
    fn restart_refuses_a_spec_whose_dependencies_have_not_succeeded_naming_them() {
        let (p, _d) = pipeline(CHAIN);
        let st = with(&p, &[("build", Status::Failed), ("test", Status::Skipped)]);
        let err = restart_selection(&p, &named(&p, &["deploy"]), Some(&st), false).unwrap_err();
        assert_eq!(
            err,
            "cannot restart `deploy`: its dependencies `test` (skipped), `lint` (never ran) have not succeeded; `spec-runner restart deploy --with-deps` runs them first"
        );
        // Named together, a dependency runs first in the same run: nothing to refuse
        // about it.
        let st = with(
            &p,
            &[("build", Status::Succeeded), ("lint", Status::Succeeded)],
        );
        let sel = restart_selection(&p, &named(&p, &["test", "deploy"]), Some(&st), false);
        let mut got = names(&p, &sel.unwrap());
        got.sort();
        assert_eq!(got, ["deploy", "test"]);
    }

    #[test]
    fn with_deps_adds_every_dependency_that_has_not_succeeded_transitively() {
        let (p, _d) = pipeline(CHAIN);
        let st = with(
            &p,
            &[
                ("build", Status::Failed),
                ("test", Status::Skipped),
                ("lint", Status::Succeeded),
            ],
        );
        let sel = restart_selection(&p, &named(&p, &["deploy"]), Some(&st), true).unwrap();
        let mut got = names(&p, &sel);
        got.sort();
        assert_eq!(got, ["build", "deploy", "test"]);
    }

    #[test]
    fn a_dependency_changed_since_it_succeeded_is_not_done() {
        let (p, _d) = pipeline(CHAIN);
        let mut st = with(&p, &[("build", Status::Succeeded)]);
        st.specs.get_mut("build").unwrap().definition_hash = "old".into();
        let unmet = unmet_dependencies(&p, Some(&st), p.index_of("test").unwrap());
        assert_eq!(unmet.len(), 1);
        assert_eq!(unmet[0].why, "changed since it succeeded");
        let st = with(&p, &[("build", Status::Succeeded)]);
        assert!(unmet_dependencies(&p, Some(&st), p.index_of("test").unwrap()).is_empty());
    }
}
