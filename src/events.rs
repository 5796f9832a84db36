//! What happens during a run, as data: the dispatcher emits these, reporters and the
//! state sink consume them. A module of its own so that `runner`, `report` and `state`
//! all depend on it and none on another's internals. Field names are those of DESIGN §5 (`--format json`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

/// Identity of a started attempt's leader, for the state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    pub pid: u32,
    pub pgid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22), to tell a
    /// reused pid from ours.
    pub start_time: Option<u64>,
    /// The batch job running the attempt, for a backend that submits jobs (pid and
    /// pgid are then 0: no local process to signal).
    pub job: Option<BackendJob>,
}

/// A job of a cluster's workload manager that runs one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendJob {
    /// The backend's name, as `backend = "…"` spells it.
    pub backend: &'static str,
    pub id: u64,
}

/// Live view of a running attempt's output, read by progress reporters.
#[derive(Debug, Default)]
pub struct LiveOutput {
    pub last_line: Mutex<String>,
    /// Set while the attempt waits for a place to run, e.g. `PENDING (slurm job 123)`.
    pub waiting: Mutex<Option<String>>,
}

pub type SharedLive = Arc<LiveOutput>;

/// A spec's status (DESIGN §6), as persisted and reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Backoff,
    Succeeded,
    Failed,
    Skipped,
    Stopped,
}

impl Status {
    /// Whether the spec is done for this run.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Skipped | Status::Stopped
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Backoff => "backoff",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Stopped => "stopped",
        }
    }
}

/// Output bytes shared between events without copying.
pub type Tail = std::sync::Arc<[u8]>;

fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// One event. Serialized as `{"event": "...", "ts": "...", ...}`.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    RunStarted {
        run_id: String,
        /// Specs this run starts.
        specs: usize,
        /// Requested specs skipped because they already succeeded unchanged.
        up_to_date: usize,
        jobs: usize,
    },
    AttemptStarted {
        spec: String,
        attempt: u32,
        /// Retries so far in this spec's current cycle (0 on the first attempt).
        retry: u32,
        max_retries: u32,
        log: PathBuf,
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        /// The batch job running the attempt (a backend that submits jobs).
        #[serde(skip_serializing_if = "Option::is_none")]
        job_id: Option<u64>,
        #[serde(skip)]
        live: Option<SharedLive>,
        /// The `n` of `task_<n>.log`.
        #[serde(skip)]
        log_number: u32,
        /// The leader's identity, for the state file.
        #[serde(skip)]
        started: Option<Started>,
    },
    /// A job a killed runner left running for this attempt is followed again to its
    /// end, instead of a new attempt (no `attempt_started`).
    AttemptReattached {
        spec: String,
        attempt: u32,
        retry: u32,
        max_retries: u32,
        log: PathBuf,
        job_id: u64,
        #[serde(skip)]
        live: Option<SharedLive>,
        /// The `n` of `task_<n>.log`.
        #[serde(skip)]
        log_number: u32,
    },
    AttemptFinished {
        spec: String,
        attempt: u32,
        exit_code: Option<i32>,
        signal: Option<String>,
        /// Why it failed; `None` on success.
        reason: Option<String>,
        #[serde(rename = "duration_ms", serialize_with = "ms")]
        duration: Duration,
        log: PathBuf,
        /// The end of this attempt's output (at most 64 KiB).
        #[serde(skip)]
        tail: Tail,
    },
    RetryScheduled {
        spec: String,
        /// The retry that comes next: 1 for the first retry.
        retry: u32,
        max_retries: u32,
        #[serde(rename = "delay_ms", serialize_with = "ms")]
        delay: Duration,
        reason: String,
    },
    SpecFinished {
        spec: String,
        status: Status,
        /// Attempts of this retry cycle, those of earlier (killed) runs included.
        attempts: u32,
        retries: u32,
        reason: Option<String>,
        log: Option<PathBuf>,
        /// An iterating spec: the iterations it ran (the last one's number).
        #[serde(skip_serializing_if = "Option::is_none")]
        iterations: Option<u32>,
        /// The end of the last attempt's output, for failure reports.
        #[serde(skip)]
        tail: Tail,
    },
    /// A person asked for this spec to run again (`restart`, the control socket), or a
    /// spec it depends on was restarted: a new cycle begins, its retry count at 0. A
    /// running attempt it ended is not a failure and not a retry.
    SpecRestarted {
        spec: String,
        /// What it was before (`running`, `backoff`, `failed`, `skipped`, …).
        previous: Status,
        reason: String,
    },
    /// An iterating spec starts an iteration (the first, the next, or on resume the
    /// one a killed runner cut short).
    IterationStarted {
        spec: String,
        iteration: u32,
        max_iterations: u32,
        /// The task counts as the iteration starts (`null` without a tasks file).
        tasks_done: Option<u32>,
        tasks_total: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tasks_pending: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tasks_in_progress: Option<u32>,
        /// Iterations in a row without progress before this one.
        no_progress_streak: u32,
        /// The git HEAD and the tasks done as the iteration started (for a resumed
        /// iteration, when the killed runner started it): progress is measured from here.
        #[serde(skip)]
        head: Option<String>,
        #[serde(skip)]
        start_tasks_done: Option<u32>,
    },
    /// An iteration of an iterating spec ended in success (its attempt cycle did);
    /// `done` says whether the work is done, `progress` whether it moved.
    IterationFinished {
        spec: String,
        iteration: u32,
        max_iterations: u32,
        tasks_done: Option<u32>,
        tasks_total: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tasks_pending: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tasks_in_progress: Option<u32>,
        progress: bool,
        done: bool,
        /// Iterations in a row without progress, this one included.
        no_progress_streak: u32,
    },
    /// A hook (`on_exhausted`) ran for a spec that failed for good. Its failure is
    /// reported, never counted against the run.
    HookFinished {
        spec: String,
        /// The policy key that named the command.
        hook: &'static str,
        exit_code: Option<i32>,
        signal: Option<String>,
        /// Why it failed; `None` on success.
        reason: Option<String>,
        #[serde(rename = "duration_ms", serialize_with = "ms")]
        duration: Duration,
        log: PathBuf,
    },
    RunFinished {
        succeeded: usize,
        failed: usize,
        skipped: usize,
        stopped: usize,
        /// Requested specs not run because they succeeded unchanged before.
        up_to_date: usize,
        /// Specs never started (an interrupted run).
        not_run: usize,
        retries: u32,
        flaky: Vec<String>,
        /// The names of the specs that failed, were skipped, were stopped (in pipeline
        /// order), for the closing lines.
        failed_specs: Vec<String>,
        skipped_specs: Vec<String>,
        stopped_specs: Vec<String>,
        #[serde(rename = "duration_ms", serialize_with = "ms")]
        duration: Duration,
        exit_code: u8,
    },
}

impl Event {
    pub fn now(kind: EventKind) -> Event {
        Event {
            ts: Utc::now(),
            kind,
        }
    }
}

/// Receives every event, in order, on the dispatcher thread.
pub trait EventSink {
    fn event(&mut self, event: &Event);
    /// How often `tick` is wanted while the dispatcher has nothing else to do
    /// (progress redraws). Asked once, when the run starts.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    fn tick(&mut self) {}
}
