//! The Slurm backend: one attempt = one batch job (DESIGN §8, docs/SLURM.md).
//!
//! A sibling of `exec`: it starts an attempt, follows its log, says how it ended and
//! ends it on request, like a local process group, but through `sbatch`, `squeue`,
//! `scancel` and `scontrol`. Every call of those goes through `cmd` (timeouts, parsers).
//! It never prints and never decides retries; the runner knows it only through
//! `runner/backend.rs`.

mod attempt;
mod cmd;
mod job;
mod script;
mod watch;

pub use attempt::{Cluster, SubmitError, cancel_left, find_job, reattachable};
pub use cmd::{CmdError, JobState, tools_missing};
pub use job::{StartError, job_main};
pub use watch::PollError;

/// The name of the hidden subcommand a job runs: `spec-runner __slurm-job …`.
pub const JOB_SUBCOMMAND: &str = "__slurm-job";
