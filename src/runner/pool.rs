//! The worker pool: `jobs` threads, each running one attempt at a time through `exec`.
//!
//! Workers own no run state: they take a job (an attempt, or a hook such as
//! `on_exhausted`), run it to its end, and send the result back to the dispatcher.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::inbox::InboxTx;

use crate::config::policy::{BackendKind, CommandLine};
use crate::exec::{AttemptEnd, AttemptSpec, ControlRx, EndCause, LiveOutput, SharedLive, Started};

/// What a job is: a spec's attempt, or a hook run because of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// An attempt: logged as `task_<n>.log`, announced when it starts.
    Attempt,
    /// The `on_exhausted` command of a spec that failed for good: logged as
    /// `on_exhausted_<n>.log`, reported only when it ends.
    OnExhausted,
    /// The `until` command of an iterating spec (is the work done?): logged as
    /// `until_<n>.log`, reported only when it ends.
    Until,
}

impl JobKind {
    /// The policy key of a hook (`on_exhausted`); `attempt` for an attempt.
    pub fn key(self) -> &'static str {
        match self {
            JobKind::Attempt => "attempt",
            JobKind::OnExhausted => "on_exhausted",
            JobKind::Until => "until",
        }
    }

    pub fn log_name(self, n: u32) -> String {
        match self {
            JobKind::Attempt => format!("task_{n}.log"),
            JobKind::OnExhausted => format!("on_exhausted_{n}.log"),
            JobKind::Until => format!("until_{n}.log"),
        }
    }
}

/// One command to run: an attempt or a hook.
pub struct Job {
    pub kind: JobKind,
    /// Whether a reporter shows the last output line: without one, the pump does not
    /// look for line ends at all.
    pub live: bool,
    pub spec: usize,
    pub attempt: u32,
    pub name: String,
    pub command: CommandLine,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    /// `<retry_log_dir>/<spec>`.
    pub log_dir: PathBuf,
    /// The first log number to try; taken numbers are skipped, never reused.
    pub first_log_number: u32,
    pub timeout: Option<Duration>,
    pub activity_timeout: Option<Duration>,
    pub terminate_grace: Duration,
    pub control: ControlRx,
    /// What runs it (a hook always runs here).
    pub backend: BackendKind,
    /// A job a killed runner left running for this attempt: watched again to its
    /// end, with the log it already writes.
    pub reattach: Option<Reattach>,
    /// Who has the job, for an attempt the dispatcher may still take back: the first
    /// of a worker (starting it) and the dispatcher (withdrawing it) to change it
    /// from [`QUEUED`] wins. `None`: the job cannot be withdrawn (hooks).
    pub claim: Option<Claim>,
}

/// A job's claim (see [`Job::claim`]): [`QUEUED`], then [`TAKEN`] or [`WITHDRAWN`].
pub type Claim = Arc<AtomicU8>;
/// Handed to the pool, nobody's yet.
const QUEUED: u8 = 0;
/// A worker took it: it runs.
const TAKEN: u8 = 1;
/// The dispatcher took it back: it never runs, and nobody reports on it.
const WITHDRAWN: u8 = 2;

/// A claim for a job about to be handed out: nobody's yet.
pub fn new_claim() -> Claim {
    Arc::new(AtomicU8::new(QUEUED))
}

/// Takes `claim` for a worker: whether the job may run.
fn take(claim: Option<&Claim>) -> bool {
    claim.is_none_or(|c| settle(c, TAKEN))
}

/// Takes `claim` back for the dispatcher: whether the job will never run (`false`: a
/// worker has it).
pub fn withdraw(claim: &Claim) -> bool {
    settle(claim, WITHDRAWN)
}

/// Whether a worker or the dispatcher has settled `claim` already.
pub fn is_settled(claim: &Claim) -> bool {
    claim.load(Ordering::Acquire) != QUEUED
}

/// Moves `claim` from [`QUEUED`] to `to`: the first to try wins.
fn settle(claim: &Claim, to: u8) -> bool {
    claim
        .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// A job left running by a killed runner, and the attempt it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reattach {
    pub job_id: u64,
    /// The `n` of its `task_<n>.log`.
    pub log_number: u32,
}

pub enum JobResult {
    Started {
        spec: usize,
        attempt: u32,
        log: PathBuf,
        log_number: u32,
        started: Option<Started>,
        live: Option<SharedLive>,
        /// It follows a job a killed runner left (`Job::reattach`).
        reattached: bool,
    },
    Finished {
        spec: usize,
        attempt: u32,
        log: PathBuf,
        log_number: u32,
        end: AttemptEnd,
    },
    /// A hook's command ended (hooks send no `Started`).
    HookFinished {
        spec: usize,
        kind: JobKind,
        log: PathBuf,
        end: AttemptEnd,
    },
}

pub struct Pool {
    jobs: Option<Sender<Job>>,
    /// Attempts handed out ahead of a free worker: a worker takes one only right
    /// after an attempt of its own succeeded, when nothing the dispatcher has yet to
    /// decide about that attempt can keep the next from starting (a failure may mean
    /// `fail_fast`, an abort or a retry that goes first).
    ahead: Option<Sender<Job>>,
    /// The dispatcher's inbox, where results go.
    results: InboxTx,
    backend: std::sync::Arc<dyn super::backend::Backend>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `threads` workers that send their results to `results`.
    pub fn start(
        threads: usize,
        backend: std::sync::Arc<dyn super::backend::Backend>,
        results: InboxTx,
    ) -> Pool {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
        let (ahead_tx, ahead_rx) = crossbeam_channel::unbounded::<Job>();
        let workers = (0..threads)
            .map(|n| {
                let jobs = jobs_rx.clone();
                let ahead = ahead_rx.clone();
                let results = results.clone();
                let backend = backend.clone();
                std::thread::Builder::new()
                    .name(format!("worker-{n}"))
                    .spawn(move || {
                        let mut succeeded = false;
                        loop {
                            let job = match succeeded.then(|| ahead.try_recv().ok()).flatten() {
                                Some(job) => job,
                                None => match jobs.recv() {
                                    Ok(job) => job,
                                    Err(_) => break,
                                },
                            };
                            if !take(job.claim.as_ref()) {
                                // Withdrawn: the next one ahead may still be there.
                                continue;
                            }
                            let (spec, attempt, kind) = (job.spec, job.attempt, job.kind);
                            let log = job.log_dir.clone();
                            // A bug must not leave the dispatcher waiting forever for
                            // this job: report it as a failed attempt and go on.
                            let run =
                                std::panic::AssertUnwindSafe(|| run_job(job, &*backend, &results));
                            let ran = std::panic::catch_unwind(run);
                            succeeded = matches!(ran, Ok(true));
                            if ran.is_err() {
                                let end = AttemptEnd {
                                    cause: EndCause::SpawnFailed(
                                        "internal error: the worker running it panicked".into(),
                                    ),
                                    exit_code: None,
                                    signal: None,
                                    duration: Duration::ZERO,
                                    tail: Vec::new(),
                                };
                                results.job(match kind {
                                    JobKind::Attempt => JobResult::Finished {
                                        spec,
                                        attempt,
                                        log,
                                        log_number: 0,
                                        end,
                                    },
                                    _ => JobResult::HookFinished {
                                        spec,
                                        kind,
                                        log,
                                        end,
                                    },
                                });
                            }
                        }
                    })
            })
            // A thread the system refuses (a process or thread limit) means fewer
            // workers, not a crash.
            .filter_map(Result::ok)
            .collect();
        Pool {
            jobs: Some(jobs_tx),
            ahead: Some(ahead_tx),
            results,
            backend,
            workers,
        }
    }

    pub fn submit(&self, job: Job) {
        if self.workers.is_empty() {
            // Not a single worker thread could be started: run the job here, slowly
            // but surely, rather than queue it for nobody.
            if take(job.claim.as_ref()) {
                run_job(job, &*self.backend, &self.results);
            }
            return;
        }
        if let Some(tx) = &self.jobs {
            // Workers live as long as the pool: the send cannot fail.
            let _ = tx.send(job);
        }
    }

    /// Hands out an attempt ahead of a free worker (see [`Pool::ahead`]); it should
    /// carry a claim, so that the dispatcher can take it back.
    pub fn submit_ahead(&self, job: Job) {
        match &self.ahead {
            Some(tx) if !self.workers.is_empty() => {
                let _ = tx.send(job);
            }
            _ => self.submit(job),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        self.ahead = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

enum LogDir {
    /// Made by this call: empty.
    Made,
    /// It was there already.
    Found,
}

/// A job that could not be prepared. Its text is the reason the runner records.
#[derive(Debug, thiserror::Error)]
enum PoolError {
    #[error("cannot create the log folder `{}`: {source}", .path.display())]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes a spec's log folder (and its parents) if needed. Private (0700), like the
/// state folder: logs may hold secrets.
fn make_log_dir(dir: &std::path::Path) -> Result<LogDir, PoolError> {
    let failed = |source| PoolError::LogDir {
        path: dir.to_owned(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    match builder.create(dir) {
        Ok(()) => Ok(LogDir::Made),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            Ok(LogDir::Found)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match builder.recursive(true).create(dir) {
                // Made with its parents, unless someone else made it meanwhile.
                Ok(()) => Ok(LogDir::Found),
                Err(e) => Err(failed(e)),
            }
        }
        Err(e) => Err(failed(e)),
    }
}

/// Runs a job and reports on it; returns whether it was an attempt that succeeded.
fn run_job(job: Job, backend: &dyn super::backend::Backend, results: &InboxTx) -> bool {
    let live: SharedLive = Arc::new(LiveOutput::default());
    let mut n = job.first_log_number.max(1);
    let prepared = make_log_dir(&job.log_dir);
    match job.reattach {
        Some(r) => n = r.log_number,
        // A folder made just now holds no logs: no need to look for taken numbers.
        None if matches!(prepared, Ok(LogDir::Made)) => {}
        None => {
            while job.log_dir.join(job.kind.log_name(n)).exists() {
                n += 1;
            }
        }
    }
    let log = job.log_dir.join(job.kind.log_name(n));
    // Only attempts are announced: the dispatcher counts them and the state file
    // records their process groups.
    let announce = |started: Option<Started>, live: Option<SharedLive>| {
        if job.kind == JobKind::Attempt {
            results.job(JobResult::Started {
                spec: job.spec,
                attempt: job.attempt,
                log: log.clone(),
                log_number: n,
                started,
                live,
                reattached: job.reattach.is_some(),
            });
        }
    };
    let end = match prepared {
        Err(why) => {
            announce(None, None);
            AttemptEnd {
                cause: EndCause::LogFailed(why.to_string()),
                exit_code: None,
                signal: None,
                duration: Duration::ZERO,
                tail: Vec::new(),
            }
        }
        Ok(_) => {
            let spec = AttemptSpec {
                command: job.command,
                cwd: job.cwd,
                env: job.env,
                log_path: log.clone(),
                timeout: job.timeout,
                activity_timeout: job.activity_timeout,
                terminate_grace: job.terminate_grace,
                backend: job.backend,
                reattach: job.reattach.map(|r| r.job_id),
            };
            let mut announced = false;
            let shown = job.live.then_some(&live);
            let end = backend.run_attempt(&spec, &job.control, shown, &mut |started| {
                announced = true;
                announce(Some(started), shown.cloned());
            });
            if !announced {
                announce(None, None);
            }
            end
        }
    };
    let succeeded =
        job.kind == JobKind::Attempt && end.cause == EndCause::Exited && end.exit_code == Some(0);
    results.job(match job.kind {
        JobKind::Attempt => JobResult::Finished {
            spec: job.spec,
            attempt: job.attempt,
            log,
            log_number: n,
            end,
        },
        kind => JobResult::HookFinished {
            spec: job.spec,
            kind,
            log,
            end,
        },
    });
    succeeded
}
