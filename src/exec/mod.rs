//! Running one attempt of one spec as a real process group.
//!
//! The interface is deliberately narrow — start an attempt, stream its output to its
//! log, tell how it ended, terminate it on request — so that another backend (Slurm)
//! can slot in beside local processes. `exec` never prints and never decides retries.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::policy::{BackendKind, CommandLine};

mod child;
mod output;
mod spawn;
mod unix;
mod wake;

pub use child::run_attempt;
pub use output::last_line;
pub use wake::{ControlRx, ControlTx, control_channel};
// Shared with the reporters, which may not see `exec`: they live in `events`.
pub use crate::events::{BackendJob, LiveOutput, SharedLive, Started};
pub use unix::{
    ControlEchoOff, become_child_subreaper, end_abandoned_group, end_processes_of_run,
    hide_control_echo, process_start_time, request_stop, share_malloc_arenas,
};

/// Everything needed to run one attempt.
#[derive(Clone, Debug)]
pub struct AttemptSpec {
    pub command: CommandLine,
    pub cwd: PathBuf,
    /// Added to the runner's own environment.
    pub env: Vec<(OsString, OsString)>,
    /// A new file: created, never overwritten (fails if it exists).
    pub log_path: PathBuf,
    pub timeout: Option<Duration>,
    pub activity_timeout: Option<Duration>,
    pub terminate_grace: Duration,
    /// What runs it: a process group here, or a batch job of a cluster.
    pub backend: BackendKind,
    /// A job a killed runner left running for this attempt: watch it to its end
    /// (its log exists) instead of starting the attempt anew.
    pub reattach: Option<u64>,
}

/// A request from the runner to a live attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM the group, SIGKILL after the grace period.
    Terminate,
    /// SIGKILL the group now.
    Kill,
}

/// Why an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// The leader exited or was killed by a signal on its own.
    Exited,
    /// `timeout` elapsed; the group was terminated.
    TimedOut,
    /// No output for `activity_timeout`; the group was terminated.
    Hung,
    /// The runner asked (Control); the group was terminated.
    Stopped,
    /// The command could not be started (not found, cwd missing, …), and would not
    /// start on another try either.
    SpawnFailed(String),
    /// The command could not be started where it was sent, but another try may start
    /// it (a cluster's controller that refused the job, a node without the folder):
    /// the retry policy decides.
    StartRefused(String),
    /// The log could not be written; the group was terminated.
    LogFailed(String),
}

/// What the runner learns when an attempt is over (the whole group is gone).
#[derive(Clone, Debug)]
pub struct AttemptEnd {
    pub cause: EndCause,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration: Duration,
    /// The last (at most) 64 KiB of output, bytes as written.
    pub tail: Vec<u8>,
}
