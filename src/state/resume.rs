//! Deciding, from the saved state, what a new run does: which specs are up to date,
//! which run again and with which retry count, and which process groups a killed
//! runner left behind. Pure: reads the state, touches nothing.

use super::model::{IterationState, RunningProcess, StateFile, definition_hash};
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
    /// For an iterating spec that continues an interrupted loop: where it was (the
    /// same iteration runs again, its number and no-progress streak carried over).
    pub loops: Vec<Option<IterationState>>,
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
        loops: vec![None; n],
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
                let interrupted = matches!(
                    s.status,
                    Status::Running | Status::Backoff | Status::Stopped | Status::Pending
                );
                if interrupted && spec.iterates() {
                    plan.loops[i] = s.iteration.clone();
                }
                if interrupted && s.retry_count <= spec.policy.retry.max_retries {
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
