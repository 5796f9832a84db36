//! Deciding, from the saved state, what a new run does: which specs are up to date,
//! which run again and with which retry count, and which process groups a killed
//! runner left behind. Pure: reads the state, touches nothing.

use super::model::{RunningProcess, StateFile, definition_hash};
use crate::config::Pipeline;
use crate::events::Status;

#[derive(Debug, Clone)]
pub struct ResumePlan {
    /// Definition hash of every spec.
    pub hashes: Vec<String>,
    /// Specs this run starts.
    pub to_run: Vec<bool>,
    /// Requested specs skipped because they succeeded with this very definition.
    pub up_to_date: Vec<bool>,
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
    let hashes: Vec<String> = p.specs.iter().map(|s| definition_hash(p, s)).collect();
    let mut plan = ResumePlan {
        hashes,
        to_run: vec![false; n],
        up_to_date: vec![false; n],
        initial_retries: vec![0; n],
        cycle_age: vec![None; n],
        previous_delay: vec![None; n],
        next_log: vec![1; n],
        abandoned: Vec::new(),
        jobs_left: Vec::new(),
        reattach: vec![None; n],
    };
    for (i, spec) in p.specs.iter().enumerate() {
        let prev = previous.and_then(|f| f.specs.get(&spec.name));
        if let Some(s) = prev {
            plan.next_log[i] = s.last_log_number() + 1;
            if let Some(proc) = s.running {
                match proc.job_id {
                    Some(id) => plan.jobs_left.push((i, id, s.last_log_number())),
                    None => plan.abandoned.push((spec.name.clone(), proc)),
                }
            }
        }
        if !requested[i] {
            continue;
        }
        let unchanged = prev.is_some_and(|s| s.definition_hash == plan.hashes[i]);
        match (mode, prev) {
            (Mode::Resume, Some(s)) if unchanged && s.status == Status::Succeeded => {
                plan.up_to_date[i] = true
            }
            (Mode::Resume, Some(s)) if unchanged => {
                plan.to_run[i] = true;
                // Interrupted work continues its cycle; a spec that ended (failed,
                // skipped) starts a new one.
                if matches!(
                    s.status,
                    Status::Running | Status::Backoff | Status::Stopped | Status::Pending
                ) && s.retry_count <= spec.policy.retry.max_retries
                {
                    // (A count beyond a since-lowered limit starts a new cycle rather
                    // than an attempt "4 of 2".)
                    plan.initial_retries[i] = s.retry_count;
                    let first = s.attempts.iter().rev().find(|a| a.attempt == 1);
                    plan.cycle_age[i] = first.map(|a| {
                        (chrono::Utc::now() - a.started_at)
                            .to_std()
                            .unwrap_or_default()
                    });
                    if s.retry_count > 0 {
                        plan.previous_delay[i] =
                            s.last_delay_ms.map(std::time::Duration::from_millis);
                    }
                }
            }
            _ => plan.to_run[i] = true,
        }
    }
    plan
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
            f.specs.insert((*name).to_string(), s);
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
            .map(|i| p.specs[i].name.clone())
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
