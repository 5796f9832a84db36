//! One attempt as one batch job: submit it, follow it (state from the watcher, activity
//! from its log's growth), end it on request or timeout, and read how it ended.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::cmd::{self, CmdError, JobState, Listed};
use super::job::{Status, read_status};
use super::script;
use super::watch::{PollError, Seen, Watcher};
use crate::config::policy::SlurmSettings;
use crate::exec::{AttemptEnd, AttemptSpec, BackendJob, Control, EndCause, SharedLive, Started};

/// How often a waiting attempt looks at its log and its clocks.
const TICK: Duration = Duration::from_millis(100);
/// The end of the output kept for rules and failure reports, as for a local attempt.
const TAIL_BYTES: u64 = 64 * 1024;
/// How long to wait for a finished job's status file to show up (a shared
/// filesystem may show it late).
const STATUS_WAIT: Duration = Duration::from_secs(3);

/// The backend's name, as `backend = "slurm"` spells it.
pub const NAME: &str = "slurm";

/// How many `sbatch` calls run at once: a few hide the controller's latency; hundreds
/// at once (one per worker) only make it and the machine thrash.
const SUBMITTERS: usize = 4;

/// How many times one attempt's job is offered to `sbatch` while its refusals say
/// the controller cannot take it *now* (down, busy, restarting): a blip is ridden out
/// here; a longer outage fails the attempt, whose retries are the spec's policy.
const SUBMIT_TRIES: u32 = 4;
/// The wait before the second try, doubled before each next one (1 + 2 + 4 s).
const SUBMIT_BACKOFF: Duration = Duration::from_secs(1);

/// Why an attempt's job could not be submitted: the attempt could not start.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot create the log `{}`: {source}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find the spec-runner program to run in the job: {0}")]
    Exe(#[source] std::io::Error),
    /// `sbatch` ran and said no for good (its standard error, one line): an invalid
    /// partition, account or QOS, a bad option, a limit.
    #[error("sbatch refused the job: {stderr}")]
    Refused { stderr: String },
    /// `sbatch` said no each time for a reason that may pass (the controller was
    /// unreachable, busy or slow); the last reason.
    #[error("sbatch could not submit the job ({tries} tries): {last}")]
    Unavailable { tries: u32, last: String },
    /// `sbatch` could not be run or printed no job id.
    #[error("sbatch did not take the job: {0}")]
    Sbatch(#[source] CmdError),
    /// The runner asked the attempt to stop while it waited to try again.
    #[error("stopped before sbatch took the job")]
    Stopped,
}

impl SubmitError {
    /// How the attempt ended, as the runner records it.
    fn cause(&self) -> EndCause {
        match self {
            SubmitError::Log { .. } => EndCause::LogFailed(self.to_string()),
            SubmitError::Stopped => EndCause::Stopped,
            _ => EndCause::StartRefused(self.to_string()),
        }
    }
}

/// The Slurm side of one run: its settings and the watcher of all its jobs.
pub struct Cluster {
    settings: SlurmSettings,
    run_id: String,
    watcher: Watcher,
    /// `sbatch` calls in flight, at most [`SUBMITTERS`].
    submitting: (std::sync::Mutex<usize>, std::sync::Condvar),
}

impl Cluster {
    pub fn new(settings: SlurmSettings, run_id: String) -> Cluster {
        let watcher = Watcher::new(settings.poll_interval);
        Cluster {
            settings,
            run_id,
            watcher,
            submitting: (std::sync::Mutex::new(0), std::sync::Condvar::new()),
        }
    }

    /// Runs one attempt as a batch job (or follows the job a killed runner left for
    /// it, `spec.reattach`) to its end.
    pub fn run_attempt(
        &self,
        spec: &AttemptSpec,
        control: &Receiver<Control>,
        live: Option<&SharedLive>,
        on_start: &mut dyn FnMut(Started),
    ) -> AttemptEnd {
        let status_path = script::status_path(&spec.log_path);
        let id = match spec.reattach {
            Some(id) => id,
            None => match self.submit(spec, &status_path, control) {
                Ok(id) => id,
                Err(e) => {
                    // The line the log holds, as the tail: rules can match it.
                    let tail = format!("spec-runner: {e}\n").into_bytes();
                    return ended(e.cause(), None, None, Duration::ZERO, tail);
                }
            },
        };
        let updates = self.watcher.watch(id);
        if let Some(live) = live {
            set_waiting(live, Some(format!("PENDING ({NAME} job {id})")));
        }
        on_start(Started {
            pid: 0,
            pgid: 0,
            start_time: None,
            job: Some(BackendJob { backend: NAME, id }),
        });
        let end = Follow::new(id, spec, live).run(control, &updates, &status_path);
        self.watcher.forget(id);
        if let Some(live) = live {
            set_waiting(live, None);
        }
        end
    }

    /// Creates the log, then submits the job; its id, or why it could not start.
    fn submit(
        &self,
        spec: &AttemptSpec,
        status_path: &Path,
        control: &Receiver<Control>,
    ) -> Result<u64, SubmitError> {
        let log_dir = spec.log_path.parent().unwrap_or(Path::new("/"));
        // The log exists before the job does: its number is taken, `logs` shows it
        // while the job waits, and Slurm appends to it (never truncates).
        let mut log = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&spec.log_path)
            .map_err(|source| SubmitError::Log {
                path: spec.log_path.clone(),
                source,
            })?;
        let _ = std::fs::remove_file(status_path);
        let exe = std::env::current_exe().map_err(SubmitError::Exe)?;
        let spec_name = env_of(spec, "SPEC_RUNNER_SPEC").unwrap_or_default();
        let attempt = env_of(spec, "SPEC_RUNNER_ATTEMPT").unwrap_or_default();
        let log_name = spec
            .log_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let script = script::job_script(
            &exe,
            status_path,
            &spec.cwd,
            &self.run_id,
            &spec.command.argv(),
        );
        let job_name = script::job_name(&self.run_id, &spec_name);
        // Unique to the attempt: how an unanswered submission is found again.
        let comment = format!(
            "spec-runner run {} spec {spec_name} attempt {attempt} log {log_name}",
            self.run_id
        );
        let mut args: Vec<OsString> = vec![
            "--parsable".into(),
            format!("--job-name={job_name}").into(),
            format!("--comment={comment}").into(),
            {
                let mut o = OsString::from("--output=");
                o.push(script::output_path(&spec.log_path));
                o
            },
            "--open-mode=append".into(),
            {
                // The job's own folder is entered by the job side; Slurm's must exist.
                let mut d = OsString::from("--chdir=");
                d.push(log_dir);
                d
            },
            "--export=ALL".into(),
            // Retries are the runner's: a job Slurm requeued after a node failure would
            // run again behind its back, into a log already judged.
            "--no-requeue".into(),
        ];
        let s = &self.settings;
        for (flag, value) in [
            ("--partition", &s.partition),
            ("--account", &s.account),
            ("--qos", &s.qos),
        ] {
            if let Some(v) = value {
                args.push(format!("{flag}={v}").into());
            }
        }
        if let Some(t) = spec.timeout {
            let minutes = script::time_limit_minutes(t, s.time_limit_margin);
            args.push(format!("--time={minutes}").into());
        }
        args.extend(s.sbatch_args.iter().map(OsString::from));
        // The environment goes through sbatch's own (`--export=ALL`): a value with a
        // comma, a quote or a newline arrives whole. The run id is an argument of the
        // job side instead, so that a later runner's sweep of this run's processes
        // leaves a re-attachable job alone.
        let env: Vec<(OsString, OsString)> = spec
            .env
            .iter()
            .filter(|(k, _)| k != "SPEC_RUNNER_RUN_ID")
            .cloned()
            .collect();
        let id = self.offer(&args, &env, &script, control, &job_name, &comment);
        if let Err(e) = &id {
            // In the log too, where `logs` shows it.
            let _ = writeln!(log, "spec-runner: {e}");
        }
        id
    }

    /// Runs `sbatch` until it takes the job, says no for good, or has said "not now"
    /// [`SUBMIT_TRIES`] times.
    fn offer(
        &self,
        args: &[OsString],
        env: &[(OsString, OsString)],
        script: &[u8],
        control: &Receiver<Control>,
        job_name: &str,
        comment: &str,
    ) -> Result<u64, SubmitError> {
        let mut delay = SUBMIT_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let why = match self.sbatch(args, env, script) {
                Ok(o) if o.success => {
                    return cmd::parse_sbatch(&o.stdout).map_err(SubmitError::Sbatch);
                }
                Ok(o) if cmd::transient_refusal(&o.stderr) => cmd::one_line(&o.stderr),
                Ok(o) => {
                    return Err(SubmitError::Refused {
                        stderr: cmd::one_line(&o.stderr),
                    });
                }
                Err(e @ CmdError::Timeout { .. }) => e.to_string(),
                Err(e) => return Err(SubmitError::Sbatch(e)),
            };
            if tries >= SUBMIT_TRIES {
                return Err(SubmitError::Unavailable { tries, last: why });
            }
            tracing::warn!(tries, %why, ?delay, "sbatch could not submit the job; trying again");
            match control.recv_timeout(delay) {
                Ok(_) => return Err(SubmitError::Stopped),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(delay);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            }
            delay *= 2;
            // A controller that answered too late may have taken the job after all.
            if let Some(id) = submitted(job_name, comment) {
                return Ok(id);
            }
        }
    }

    /// One `sbatch` call, at most [`SUBMITTERS`] at once.
    fn sbatch(
        &self,
        args: &[OsString],
        env: &[(OsString, OsString)],
        script: &[u8],
    ) -> Result<cmd::Output, CmdError> {
        let (count, freed) = &self.submitting;
        let mut n = count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= SUBMITTERS {
            n = freed
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n += 1;
        drop(n);
        let out = cmd::run("sbatch", args, env, Some(script), cmd::COMMAND_TIMEOUT);
        *count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
        freed.notify_one();
        out
    }
}

/// The job named `name` whose comment is `comment`, when the cluster lists one.
fn submitted(name: &str, comment: &str) -> Option<u64> {
    let args: Vec<OsString> = [
        "-h",
        "-t",
        "all",
        &format!("--name={name}"),
        "-o",
        cmd::SUBMITTED_FORMAT,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    let out = cmd::run("squeue", &args, &[], None, cmd::COMMAND_TIMEOUT).ok()?;
    cmd::parse_submitted(&out.stdout, comment)
}

/// Job `id` as squeue lists it now; `None` when it is not known (any more).
pub fn find_job(id: u64) -> Result<Option<Listed>, PollError> {
    Ok(super::watch::query(&[id])?
        .into_iter()
        .find(|job| job.id == id))
}

fn env_of(spec: &AttemptSpec, key: &str) -> Option<String> {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.to_string_lossy().into_owned())
}

fn set_waiting(live: &SharedLive, text: Option<String>) {
    if let Ok(mut w) = live.waiting.lock() {
        *w = text;
    }
}

fn ended(
    cause: EndCause,
    exit_code: Option<i32>,
    signal: Option<i32>,
    duration: Duration,
    tail: Vec<u8>,
) -> AttemptEnd {
    AttemptEnd {
        cause,
        exit_code,
        signal,
        duration,
        tail,
    }
}

/// `scancel ARGS… ID`; whether it said yes.
fn scancel(args: &[&str], id: u64) -> bool {
    let mut a: Vec<OsString> = args.iter().map(OsString::from).collect();
    a.push(id.to_string().into());
    match cmd::run("scancel", &a, &[], None, cmd::COMMAND_TIMEOUT) {
        Ok(o) => o.success,
        Err(why) => {
            tracing::warn!(id, %why, "scancel failed");
            false
        }
    }
}

/// Following one job to its end.
struct Follow<'a> {
    id: u64,
    spec: &'a AttemptSpec,
    live: Option<&'a SharedLive>,
    running_since: Option<Instant>,
    pending: bool,
    log_size: u64,
    last_activity: Instant,
    /// Why the runner ended it, once it asked: a TERMed job may still end
    /// COMPLETED or FAILED in Slurm's words.
    cancel: Option<EndCause>,
    term_at: Option<Instant>,
    killed: bool,
}

impl<'a> Follow<'a> {
    fn new(id: u64, spec: &'a AttemptSpec, live: Option<&'a SharedLive>) -> Follow<'a> {
        let meta = std::fs::metadata(&spec.log_path).ok();
        let log_size = meta.as_ref().map_or(0, std::fs::Metadata::len);
        // A job a killed runner left has been silent since its log last grew, not
        // since now.
        let last_activity = spec
            .reattach
            .and(meta)
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .and_then(|ago| Instant::now().checked_sub(ago))
            .unwrap_or_else(Instant::now);
        Follow {
            id,
            spec,
            live,
            running_since: None,
            pending: true,
            log_size,
            last_activity,
            cancel: None,
            term_at: None,
            killed: false,
        }
    }

    fn run(
        mut self,
        control: &Receiver<Control>,
        updates: &Receiver<Seen>,
        status_path: &Path,
    ) -> AttemptEnd {
        let tick = crossbeam_channel::tick(TICK);
        let mut control = control.clone();
        let final_state = loop {
            select! {
                recv(control) -> c => match c {
                    Ok(Control::Terminate) => self.terminate(EndCause::Stopped),
                    Ok(Control::Kill) => {
                        self.terminate(EndCause::Stopped);
                        self.kill();
                    }
                    Err(_) => control = crossbeam_channel::never(),
                },
                recv(updates) -> seen => match seen {
                    Ok(Seen::Listed(JobState::Ended(state))) => break Some(state),
                    Ok(Seen::Listed(JobState::Running(_))) => self.now_running(),
                    Ok(Seen::Listed(JobState::Pending(_))) => {}
                    Ok(Seen::Gone) | Err(_) => break None,
                    Ok(Seen::Failed(why)) => {
                        tracing::warn!(id = self.id, %why, "cannot see the job's state");
                    }
                },
                recv(tick) -> _ => self.check(),
            }
        };
        self.check_log();
        self.finish(final_state.as_deref(), status_path)
    }

    fn now_running(&mut self) {
        if self.running_since.is_none() {
            let now = Instant::now();
            if self.spec.reattach.is_some() {
                // A job a killed runner left started before this runner saw it:
                // its clock (timeout, duration) runs from Slurm's start.
                let since = time_used(self.id).and_then(|used| now.checked_sub(used));
                self.running_since = Some(since.unwrap_or(now));
            } else {
                self.running_since = Some(now);
                self.last_activity = now;
            }
            self.pending = false;
            if let Some(live) = self.live {
                set_waiting(live, None);
            }
        }
    }

    /// Activity, timeouts and the grace period.
    fn check(&mut self) {
        if self.check_log() && self.running_since.is_none() {
            // Output before squeue said RUNNING: it runs.
            self.now_running();
        }
        let now = Instant::now();
        if let Some(since) = self.running_since
            && self.cancel.is_none()
        {
            if self.spec.timeout.is_some_and(|t| now >= since + t) {
                self.terminate(EndCause::TimedOut);
            } else if self
                .spec
                .activity_timeout
                .is_some_and(|t| now >= self.last_activity + t)
            {
                self.terminate(EndCause::Hung);
            }
        }
        if let Some(t) = self.term_at
            && !self.killed
            && now >= t + self.spec.terminate_grace
        {
            self.kill();
        }
    }

    /// Whether the log grew; updates the live line.
    fn check_log(&mut self) -> bool {
        let size = std::fs::metadata(&self.spec.log_path).map_or(0, |m| m.len());
        if size <= self.log_size {
            return false;
        }
        let from = self.log_size.max(size.saturating_sub(4096));
        self.log_size = size;
        self.last_activity = Instant::now();
        if let Some(live) = self.live
            && let Some(line) = read_from(&self.spec.log_path, from)
                .as_deref()
                .and_then(crate::exec::last_line)
            && let Ok(mut last) = live.last_line.lock()
        {
            *last = line;
        }
        true
    }

    /// SIGTERM to the batch shell's process group (a pending job is just
    /// cancelled); KILL follows after the grace period.
    fn terminate(&mut self, cause: EndCause) {
        if self.cancel.is_some() {
            return;
        }
        self.cancel = Some(cause);
        self.term_at = Some(Instant::now());
        if self.pending {
            scancel(&[], self.id);
            // A pending job has nothing to be graceful with.
            self.killed = true;
        } else if !scancel(&["--signal=TERM", "--full"], self.id) {
            scancel(&[], self.id);
        }
    }

    fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        scancel(&["--signal=KILL", "--full"], self.id);
        scancel(&[], self.id);
    }

    fn finish(self, state: Option<&str>, status_path: &Path) -> AttemptEnd {
        let duration = self.running_since.map_or(Duration::ZERO, |t| t.elapsed());
        let tail = read_from(
            &self.spec.log_path,
            self.log_size.saturating_sub(TAIL_BYTES),
        )
        .unwrap_or_default();
        // A job that ended by itself wrote its status; one that was killed did not.
        let deadline = Instant::now()
            + if matches!(state, Some("COMPLETED" | "FAILED")) {
                STATUS_WAIT
            } else {
                Duration::ZERO
            };
        let mut status = read_status(status_path);
        while status.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            status = read_status(status_path);
        }
        let _ = std::fs::remove_file(status_path);
        let (mut code, mut signal) = (None, None);
        let mut not_started = None;
        match status {
            Some(Status::Exit(c)) => code = Some(c),
            Some(Status::Signal(s)) => signal = Some(s),
            Some(Status::NotStarted(why)) => not_started = Some(why),
            None => match scontrol_exit(self.id).or_else(|| sacct_exit(self.id)) {
                Some((_, s)) if s != 0 => signal = Some(s),
                Some((c, _)) if state != Some("CANCELLED") => code = Some(c),
                // Cancelled (by someone else) before it could say: SIGTERM, as Slurm sent.
                _ if state == Some("CANCELLED") => signal = Some(15),
                _ => {}
            },
        }
        let cause = match (self.cancel, not_started) {
            (Some(c), _) => c,
            (None, Some(why)) => EndCause::StartRefused(why),
            (None, None) if state == Some("TIMEOUT") => EndCause::TimedOut,
            (None, None) => EndCause::Exited,
        };
        ended(cause, code, signal, duration, tail)
    }
}

/// How long job `id` has been running, as Slurm counts it (whole seconds).
fn time_used(id: u64) -> Option<Duration> {
    let args: Vec<OsString> = ["-h", "-j", &id.to_string(), "-o", cmd::TIME_USED_FORMAT]
        .iter()
        .map(OsString::from)
        .collect();
    match cmd::run("squeue", &args, &[], None, cmd::COMMAND_TIMEOUT) {
        Ok(out) if out.success => cmd::parse_time_used(&out.stdout),
        Ok(out) => {
            tracing::warn!(id, stderr = %out.stderr.trim(), "cannot read the job's run time");
            None
        }
        Err(why) => {
            tracing::warn!(id, %why, "cannot read the job's run time");
            None
        }
    }
}

fn scontrol_exit(id: u64) -> Option<(i32, i32)> {
    let args: Vec<OsString> = vec![
        "show".into(),
        "job".into(),
        "-o".into(),
        id.to_string().into(),
    ];
    let out = cmd::run("scontrol", &args, &[], None, cmd::COMMAND_TIMEOUT).ok()?;
    cmd::parse_scontrol(&out.stdout).map(|(c, s, _)| (c, s))
}

/// The job's exit status from accounting, when the cluster keeps it (`slurmdbd`).
fn sacct_exit(id: u64) -> Option<(i32, i32)> {
    let args: Vec<OsString> = ["-n", "-P", "-X", "-o", "ExitCode,State", "-j"]
        .iter()
        .map(OsString::from)
        .chain([id.to_string().into()])
        .collect();
    let out = cmd::run("sacct", &args, &[], None, cmd::COMMAND_TIMEOUT).ok()?;
    if !out.success {
        return None;
    }
    cmd::parse_sacct(&out.stdout).map(|(c, s, _)| (c, s))
}

/// The file's bytes from offset `from` on.
fn read_from(path: &PathBuf, from: u64) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Cancels job `id` when it is still queued or running and is one of `spec`'s (its
/// job name says so): what a killed runner left, on `--fresh`. Whether it did.
pub fn cancel_left(id: u64, spec: &str) -> bool {
    match find_job(id) {
        Ok(Some(job))
            if !matches!(job.state, JobState::Ended(_)) && script::is_job_of(&job.name, spec) =>
        {
            scancel(&[], id)
        }
        _ => false,
    }
}

/// Whether job `id` is still known to the cluster as one of `spec`'s (its job name
/// says so): a killed runner's attempt that the next run can follow to its end.
pub fn reattachable(id: u64, spec: &str) -> bool {
    matches!(find_job(id), Ok(Some(job)) if script::is_job_of(&job.name, spec))
}
