//! One attempt as a live process group: spawn it, pump its output into its log, watch
//! for exit, timeout, silence and runner requests, and end the whole group.
//!
//! Owns the child, its output pipe and its log file for the attempt's lifetime. Knows
//! nothing of retries, state or reporting; all OS-specific calls go through `unix`.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, never, select};
use rustix::process::Signal;

use super::helpers;
use super::unix;
use super::{AttemptEnd, AttemptSpec, Control, EndCause, SharedLive, Started};

/// Size of one read from the output pipe. Large, so a flooding child costs few
/// syscalls and log writes.
const CHUNK: usize = 64 * 1024;
/// The read size once a command floods its output (a read filled the whole buffer):
/// fewer, larger copies; the pipe is enlarged to match.
const FLOOD_CHUNK: usize = 1024 * 1024;

/// How much of the latest output `AttemptEnd::tail` keeps.
const TAIL_CAP: usize = 64 * 1024;

/// `LiveOutput::last_line` is cut to this many characters.
const LAST_LINE_CHARS: usize = 200;

/// At most this many bytes of a line are looked at to build `last_line`, so a huge
/// line without newlines costs no more than a short one.
const LAST_LINE_SCAN: usize = 1024;

/// Once the group is gone, the output still in the pipe is drained for at least this
/// long (or the grace period, if longer). Only a process that escaped the group
/// (`setsid`) can hold the pipe beyond that; we stop waiting for it.
const MIN_DRAIN: Duration = Duration::from_secs(2);

/// Runs one attempt and blocks until it is over and no process of its group remains.
///
/// Creates `spec.log_path` (it must not exist), spawns the command in a new process
/// group with stdin from `/dev/null` and stdout + stderr into one pipe copied verbatim
/// to the log, and calls `on_start` right after the spawn. A relative program path
/// with a `/` in an argv command is resolved against `spec.cwd`, like `sh -c` would.
///
/// The attempt ends when the leader exits ([`EndCause::Exited`]), at `spec.timeout`
/// ([`EndCause::TimedOut`]), after `spec.activity_timeout` without output
/// ([`EndCause::Hung`]), on a [`Control`] request ([`EndCause::Stopped`]) or when the
/// log cannot be written ([`EndCause::LogFailed`]). Ending means SIGTERM to the group,
/// up to `spec.terminate_grace` for it to go, then SIGKILL; a leader that exits on its
/// own gets the same treatment for what it leaves behind in its group.
///
/// Threads: the caller's, which supervises, plus one waiting for the leader's exit
/// and one pumping output. The pump is left behind (detached) only if a process that
/// left the group keeps the pipe open past the drain bound.
pub fn run_attempt(
    spec: &AttemptSpec,
    control: &Receiver<Control>,
    live: Option<&SharedLive>,
    on_start: impl FnOnce(Started),
) -> AttemptEnd {
    let entered = Instant::now();
    // Private: an agent's output may hold secrets.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&spec.log_path)
    {
        Ok(log) => run_with_log(spec, log, control, live, on_start, entered),
        Err(e) => not_started(
            EndCause::LogFailed(format!(
                "failed to create log file `{}`: {e}",
                spec.log_path.display()
            )),
            entered,
        ),
    }
}

fn not_started(cause: EndCause, entered: Instant) -> AttemptEnd {
    AttemptEnd {
        cause,
        exit_code: None,
        signal: None,
        duration: entered.elapsed(),
        tail: Vec::new(),
    }
}

/// [`run_attempt`] once the log is open; tests hand in a log that cannot be written.
fn run_with_log(
    spec: &AttemptSpec,
    log: File,
    control: &Receiver<Control>,
    live: Option<&SharedLive>,
    on_start: impl FnOnce(Started),
    entered: Instant,
) -> AttemptEnd {
    let not_started = |cause| not_started(cause, entered);
    let (reader, writer) = match io::pipe() {
        Ok(pair) => pair,
        Err(e) => {
            return not_started(EndCause::SpawnFailed(format!(
                "failed to create the output pipe: {e}"
            )));
        }
    };

    let epoch = Instant::now();
    let handle = match spawn(spec, writer) {
        Ok(handle) => handle,
        Err(reason) => return not_started(EndCause::SpawnFailed(reason)),
    };
    // duct starts a single command, so there is exactly one pid; it is also the
    // group id, since the child made itself a group leader before exec.
    let Some(pid) = handle.pids().first().copied() else {
        return not_started(EndCause::SpawnFailed(
            "the started command has no pid".into(),
        ));
    };
    // Read before anyone can reap the leader: even a zombie still has its stat file.
    let start_time = unix::process_start_time(pid);
    let handle = Arc::new(handle);

    let shared = Arc::new(PumpShared {
        epoch,
        last_output_nanos: AtomicU64::new(0),
        tail: Mutex::new(Ring::new(TAIL_CAP)),
        abandoned: AtomicBool::new(false),
    });
    let (pump_tx, pump_rx) = crossbeam_channel::unbounded();
    let pump = {
        let shared = Arc::clone(&shared);
        let live = live.cloned();
        helpers::spawn("pump", move || {
            pump_output(reader, log, &shared, live.as_deref(), &pump_tx);
        })
    };
    let (exit_tx, exit_rx) = crossbeam_channel::bounded(1);
    let waiter = {
        let handle = Arc::clone(&handle);
        helpers::spawn("wait", move || {
            let status = handle.wait().map(|output| output.status);
            // The supervisor may be gone only if it panicked; nothing to tell then.
            let _ = exit_tx.send(status);
        })
    };
    let (pump, waiter) = match (pump, waiter) {
        (Ok(pump), Ok(waiter)) => (pump, waiter),
        (pump, waiter) => {
            // Without both helpers the attempt cannot be supervised: end it at once.
            let err = [pump.err(), waiter.err()].into_iter().flatten().next();
            let _ = unix::signal_group(pid, Signal::KILL);
            let _ = handle.wait();
            unix::reap_group_zombies(pid);
            let reason = match err {
                Some(e) => format!("failed to start a supervising thread: {e}"),
                None => "failed to start a supervising thread".into(),
            };
            return not_started(EndCause::SpawnFailed(reason));
        }
    };

    on_start(Started {
        pid,
        pgid: pid,
        start_time,
        job: None,
    });

    let mut sup = Supervisor {
        spec,
        pgid: pid,
        epoch,
        shared,
        control: control.clone(),
        exit_rx,
        pump_rx,
        status: None,
        log_error: None,
        pump_done: false,
        kill_requested: false,
    };
    let cause = sup.run();
    sup.end_inherited();
    let pump_joinable = sup.drain();
    // The waiter has sent the status, so it is finishing; joining keeps no thread
    // behind. Neither thread panics, and if one did there is nothing to add.
    waiter.join();
    if pump_joinable {
        pump.join();
    }
    sup.finish(cause)
}

/// Tells what is wrong with the working directory, if anything. Asked only once a
/// spawn failed (the error for a missing cwd would name the program instead), so a
/// good attempt costs no `stat` for it.
fn check_cwd(cwd: &Path) -> Result<(), String> {
    match std::fs::metadata(cwd) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!(
            "working directory `{}` is not a directory",
            cwd.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!(
            "working directory `{}` does not exist",
            cwd.display()
        )),
        Err(e) => Err(format!(
            "working directory `{}` is not accessible: {e}",
            cwd.display()
        )),
    }
}

/// Starts the command in its own process group, output into `writer`.
fn spawn(spec: &AttemptSpec, writer: PipeWriter) -> Result<duct::Handle, String> {
    let argv = spec.command.argv();
    let Some((program, args)) = argv.split_first() else {
        return Err("the command is empty".into());
    };
    if program.is_empty() {
        return Err("the command's program name is empty".into());
    }
    let exe = resolve_program(program, &spec.cwd, &spec.env);
    let mut expr = duct::cmd(&exe, args)
        .dir(&spec.cwd)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_file(writer)
        .unchecked()
        .before_spawn(|cmd| {
            // A group of its own, so that ending the attempt reaches every process it
            // started, and a terminal's Ctrl-C does not reach it behind our back.
            cmd.process_group(0);
            Ok(())
        });
    for (name, value) in &spec.env {
        expr = expr.env(name, value);
    }
    let started = expr.start().map_err(|e| {
        // A program found earlier may be gone: the next attempt looks again.
        forget_program(program);
        check_cwd(&spec.cwd)
            .err()
            .unwrap_or_else(|| spawn_error(program, &exe, &e))
    });
    // The expression holds our copy of the pipe's write end; drop it now, or the
    // pump would never see end-of-file.
    drop(expr);
    started
}

/// A relative path with a separator (`./build.sh`, `bin/x`) means a file in the
/// attempt's cwd, as it would for `sh -c`; duct would resolve it against ours.
///
/// Returns an `OsString`, not a `Path`: duct prefixes a relative `Path` with `./`,
/// which would turn a bare name meant for the `PATH` lookup into a local file.
///
/// A bare name is looked up on `PATH` here, as `execvp` would (the attempt's own
/// `PATH` if its env sets one): with an absolute program std can spawn with
/// `posix_spawn` (vfork) instead of `fork`, which copies the runner's page tables —
/// the difference between 0.5 ms and several ms per attempt in a large pipeline.
fn resolve_program(program: &str, cwd: &Path, env: &[(OsString, OsString)]) -> OsString {
    let path = Path::new(program);
    if program.contains('/') {
        return if path.is_relative() {
            cwd.join(path).into_os_string()
        } else {
            OsString::from(program)
        };
    }
    let search = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    // Only a search with absolute entries gives the same answer in every cwd.
    let cacheable = std::env::split_paths(&search).all(|d| d.is_absolute());
    if cacheable && let Some(found) = found_programs().get(&(program.to_owned(), search.clone())) {
        return found.clone();
    }
    let found = search_path(program, &search, cwd);
    if cacheable && let Some(exe) = &found {
        found_programs().insert((program.to_owned(), search), exe.clone());
    }
    // Not found: spawning the bare name fails with NotFound, reported as such.
    found.unwrap_or_else(|| OsString::from(program))
}

/// Bare program names found on `PATH`, by name and the `PATH` searched: a pipeline
/// runs the same few programs thousands of times, and a lookup costs one `stat` per
/// `PATH` entry. Only finds are kept; a failed spawn forgets its program.
type FoundPrograms = std::collections::HashMap<(String, OsString), OsString>;

fn found_programs() -> std::sync::MutexGuard<'static, FoundPrograms> {
    static FOUND: std::sync::LazyLock<Mutex<FoundPrograms>> =
        std::sync::LazyLock::new(Default::default);
    FOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget_program(program: &str) {
    found_programs().retain(|(name, _), _| name != program);
}

/// The first executable `program` in the `PATH` entries of `search`, as `execvp`
/// would find it.
fn search_path(program: &str, search: &OsStr, cwd: &Path) -> Option<OsString> {
    for dir in std::env::split_paths(search) {
        // An empty entry means the current directory, which for the child is its cwd.
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return Some(candidate.into_os_string());
        }
    }
    None
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn spawn_error(program: &str, exe: &OsStr, err: &io::Error) -> String {
    let exe = Path::new(exe);
    let on_path = !program.contains('/');
    match err.kind() {
        io::ErrorKind::NotFound if on_path => {
            format!("failed to start `{program}`: command not found on PATH")
        }
        io::ErrorKind::NotFound => format!(
            "failed to start `{}`: no such file (or its `#!` interpreter is missing)",
            exe.display()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "failed to start `{}`: permission denied (is it executable?)",
            exe.display()
        ),
        _ => format!("failed to start `{}`: {err}", exe.display()),
    }
}

/// State the pump shares with the supervisor.
struct PumpShared {
    /// The spawn instant; activity is stored relative to it.
    epoch: Instant,
    /// Nanoseconds from `epoch` to the latest output (0: none yet).
    last_output_nanos: AtomicU64,
    tail: Mutex<Ring>,
    /// Set when the supervisor stops waiting: the pump must not touch the log again.
    abandoned: AtomicBool,
}

impl PumpShared {
    fn last_output(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_output_nanos.load(Ordering::Relaxed))
    }
}

enum PumpEvent {
    /// The log (or the pipe) failed; the pump keeps draining so the child never
    /// blocks on a full pipe.
    Failed(String),
    /// End of output: every writer closed the pipe, or the pump was abandoned. The
    /// log file is closed.
    Done,
}

/// Copies the pipe into the log until every writer has closed it.
fn pump_output(
    mut reader: PipeReader,
    mut log: File,
    shared: &PumpShared,
    live: Option<&super::LiveOutput>,
    events: &Sender<PumpEvent>,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut log_ok = true;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = events.send(PumpEvent::Failed(format!(
                    "failed to read the command's output: {e}"
                )));
                break;
            }
        };
        if shared.abandoned.load(Ordering::Relaxed) {
            break;
        }
        if n == buf.len() && buf.len() < FLOOD_CHUNK {
            buf.resize(FLOOD_CHUNK, 0);
            unix::enlarge_pipe(&reader, FLOOD_CHUNK);
        }
        let chunk = &buf[..n];
        let nanos = u64::try_from(shared.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.last_output_nanos.store(nanos, Ordering::Relaxed);
        if log_ok && let Err(e) = log.write_all(chunk) {
            log_ok = false;
            let _ = events.send(PumpEvent::Failed(format!("failed to write the log: {e}")));
        }
        if let Ok(mut tail) = shared.tail.lock() {
            tail.push(chunk);
        }
        if let Some(live) = live
            && let Some(line) = last_line(chunk)
            && let Ok(mut last) = live.last_line.lock()
        {
            *last = line;
        }
    }
    // Close the log before saying so: the runner may read it as soon as we return.
    drop(log);
    drop(reader);
    let _ = events.send(PumpEvent::Done);
}

/// The last complete, non-blank line of `chunk`, cleaned for display: lossy UTF-8,
/// the latest `\r`-rewrite of the line, no ANSI escapes or control characters,
/// trimmed and cut to [`LAST_LINE_CHARS`]. `None` if the chunk completes no such line.
pub fn last_line(chunk: &[u8]) -> Option<String> {
    // A line being redrawn with `\r` (curl, pip, tqdm) never ends while it runs: the
    // text after its latest `\r` is what it shows now.
    let open = chunk
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(chunk, |i| &chunk[i + 1..]);
    if open.contains(&b'\r') {
        for part in open.rsplit(|&b| b == b'\r') {
            let shown = clean_line(&part[..part.len().min(LAST_LINE_SCAN)]);
            if !shown.is_empty() {
                return Some(shown);
            }
        }
    }
    let end = chunk.iter().rposition(|&b| b == b'\n')?;
    for line in chunk[..end].rsplit(|&b| b == b'\n') {
        // Progress bars redraw a line with `\r`; the last non-blank redraw is current.
        for part in line.rsplit(|&b| b == b'\r') {
            let shown = clean_line(&part[..part.len().min(LAST_LINE_SCAN)]);
            if !shown.is_empty() {
                return Some(shown);
            }
        }
    }
    None
}

fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len().min(LAST_LINE_CHARS * 4));
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI sequences (colours, cursor moves) end with a byte in 0x40..=0x7e;
                // other escapes are two characters long.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    let trimmed = out.trim();
    match trimmed.char_indices().nth(LAST_LINE_CHARS) {
        Some((cut, _)) => trimmed[..cut].to_owned(),
        None => trimmed.to_owned(),
    }
}

/// A fixed-size ring of the latest bytes.
struct Ring {
    /// Allocated on the first output: a silent attempt costs nothing.
    buf: Vec<u8>,
    cap: usize,
    /// Where the next byte goes.
    pos: usize,
    /// Whether `buf` has wrapped at least once.
    full: bool,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            buf: Vec::new(),
            cap,
            pos: 0,
            full: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let cap = self.cap;
        if cap == 0 || data.is_empty() {
            return;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; cap];
        }
        let data = &data[data.len().saturating_sub(cap)..];
        let first = data.len().min(cap - self.pos);
        self.buf[self.pos..self.pos + first].copy_from_slice(&data[..first]);
        let rest = &data[first..];
        self.buf[..rest.len()].copy_from_slice(rest);
        if self.pos + data.len() >= cap {
            self.full = true;
        }
        self.pos = (self.pos + data.len()) % cap;
    }

    fn to_vec(&self) -> Vec<u8> {
        if self.full {
            let mut out = Vec::with_capacity(self.buf.len());
            out.extend_from_slice(&self.buf[self.pos..]);
            out.extend_from_slice(&self.buf[..self.pos]);
            out
        } else {
            self.buf[..self.pos].to_vec()
        }
    }
}

/// What woke the supervisor.
enum Event {
    LeaderExited,
    Terminate,
    Kill,
    LogFailed,
    Deadline,
}

/// The caller's thread while the attempt runs: reacts to events, never polls for the
/// leader's exit.
struct Supervisor<'a> {
    spec: &'a AttemptSpec,
    pgid: u32,
    epoch: Instant,
    shared: Arc<PumpShared>,
    /// Replaced by `never()` if the runner drops its sender: nobody can stop us then,
    /// and a disconnected channel must not wake the loop forever.
    control: Receiver<Control>,
    exit_rx: Receiver<io::Result<ExitStatus>>,
    pump_rx: Receiver<PumpEvent>,
    /// The leader's status, once reaped.
    status: Option<io::Result<ExitStatus>>,
    /// The first failure of the log or the pipe.
    log_error: Option<String>,
    pump_done: bool,
    /// The runner asked for a kill: no more grace periods for anything.
    kill_requested: bool,
}

impl Supervisor<'_> {
    /// Waits for the next event that matters, until `deadline` (`None`: no deadline).
    fn next(&mut self, deadline: Option<Instant>) -> Event {
        loop {
            let timer = deadline.map_or_else(never, crossbeam_channel::at);
            select! {
                recv(self.exit_rx) -> msg => {
                    self.status = Some(msg.unwrap_or_else(|_| {
                        Err(io::Error::other("the exit waiter stopped without a status"))
                    }));
                    self.exit_rx = never();
                    return Event::LeaderExited;
                }
                recv(self.control) -> msg => match msg {
                    Ok(Control::Terminate) => return Event::Terminate,
                    Ok(Control::Kill) => {
                        self.kill_requested = true;
                        return Event::Kill;
                    }
                    Err(_) => self.control = never(),
                },
                recv(self.pump_rx) -> msg => match msg {
                    Ok(PumpEvent::Failed(reason)) => {
                        if self.log_error.is_none() {
                            self.log_error = Some(reason);
                            return Event::LogFailed;
                        }
                    }
                    Ok(PumpEvent::Done) | Err(_) => {
                        self.pump_done = true;
                        self.pump_rx = never();
                    }
                },
                recv(timer) -> _ => return Event::Deadline,
            }
        }
    }

    fn timeout_at(&self) -> Option<Instant> {
        self.spec.timeout.and_then(|t| self.epoch.checked_add(t))
    }

    fn silence_at(&self) -> Option<Instant> {
        let limit = self.spec.activity_timeout?;
        self.shared.last_output().checked_add(limit)
    }

    /// Runs until the attempt ends and its whole group is gone; says why it ended.
    fn run(&mut self) -> EndCause {
        let (cause, kill_now) = loop {
            let deadline = match (self.timeout_at(), self.silence_at()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match self.next(deadline) {
                Event::LeaderExited => break (EndCause::Exited, false),
                Event::Terminate => break (EndCause::Stopped, false),
                Event::Kill => break (EndCause::Stopped, true),
                Event::LogFailed => {
                    let reason = self.log_error.clone().unwrap_or_default();
                    break (EndCause::LogFailed(reason), false);
                }
                Event::Deadline => {
                    let now = Instant::now();
                    if self.timeout_at().is_some_and(|t| t <= now) {
                        break (EndCause::TimedOut, false);
                    }
                    // Output may have arrived since the deadline was computed: only
                    // a silence that is still over the limit counts.
                    if self.silence_at().is_some_and(|t| t <= now) {
                        break (EndCause::Hung, false);
                    }
                }
            }
        };
        self.end_group(kill_now);
        cause
    }

    /// Ends the group: SIGTERM, up to the grace period for every member to go, then
    /// SIGKILL; with `kill_now`, SIGKILL at once. Returns once the leader is reaped and
    /// the group is gone (or did not go even after SIGKILL, which only a process stuck
    /// in the kernel can do).
    fn end_group(&mut self, mut kill_now: bool) {
        if self.status.is_some() && !self.group_alive() {
            return;
        }
        if !kill_now {
            let _ = unix::signal_group(self.pgid, Signal::TERM);
            let deadline = Instant::now() + self.spec.terminate_grace;
            // The leader is our child: its exit arrives as an event.
            while self.status.is_none() && !kill_now {
                match self.next(Some(deadline)) {
                    Event::Kill | Event::Deadline => kill_now = true,
                    Event::LeaderExited | Event::Terminate | Event::LogFailed => {}
                }
            }
            if !kill_now {
                kill_now = !self.wait_group_gone(deadline);
            }
        }
        if kill_now {
            let _ = unix::signal_group(self.pgid, Signal::KILL);
            // SIGKILL cannot be caught or ignored: the exit event will come.
            while self.status.is_none() {
                self.next(None);
            }
            self.kill_rest();
        }
    }

    /// Whether any member besides already-reaped ones is left. Only valid once the
    /// leader is reaped (a zombie leader counts as a member).
    fn group_alive(&self) -> bool {
        unix::reap_group_zombies(self.pgid);
        unix::group_alive(self.pgid)
    }

    /// After the leader is reaped: waits until the rest of the group is gone (true),
    /// or `deadline` passes or the runner asks for a kill (false). The members are
    /// not our children, so this polls; a kill request still wakes it at once.
    fn wait_group_gone(&mut self, deadline: Instant) -> bool {
        loop {
            if !self.group_alive() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.next(Some((now + unix::GROUP_POLL).min(deadline))) {
                Event::Kill => return false,
                Event::Deadline | Event::Terminate | Event::LogFailed | Event::LeaderExited => {}
            }
        }
    }

    /// After SIGKILL and the leader's reaping: waits (bounded) for the members'
    /// zombies to be reaped by their parents, killing again anything forked in a race.
    fn kill_rest(&mut self) {
        let deadline = Instant::now() + unix::AFTER_KILL_WAIT;
        while self.group_alive() && Instant::now() < deadline {
            let _ = unix::signal_group(self.pgid, Signal::KILL);
            thread::sleep(unix::GROUP_POLL);
        }
    }

    /// Ends what the attempt left outside its group that the runner inherited as child
    /// subreaper (a `setsid` escapee), before draining: such a process may hold the
    /// pipe. A kill request cuts its grace period short.
    fn end_inherited(&mut self) {
        let grace = if self.kill_requested {
            Duration::ZERO
        } else {
            self.spec.terminate_grace
        };
        unix::end_inherited_orphans(&self.spec.env, grace, |wait| {
            matches!(self.next(Some(Instant::now() + wait)), Event::Kill)
        });
    }

    /// Reads the output still in the pipe. Returns whether the pump finished (and can
    /// be joined); if a process outside the group keeps the pipe open, gives up after
    /// the drain bound and tells the pump to stop writing the log.
    fn drain(&mut self) -> bool {
        let deadline = Instant::now() + self.spec.terminate_grace.max(MIN_DRAIN);
        while !self.pump_done {
            match self.pump_rx.recv_deadline(deadline) {
                Ok(PumpEvent::Failed(reason)) => {
                    self.log_error.get_or_insert(reason);
                }
                Ok(PumpEvent::Done) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    self.pump_done = true;
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    self.shared.abandoned.store(true, Ordering::Relaxed);
                    return false;
                }
            }
        }
        true
    }

    fn finish(self, cause: EndCause) -> AttemptEnd {
        // A leader that exited on its own left an incomplete log behind if writing
        // it failed: the runner must not take that attempt at face value.
        let cause = match (cause, self.log_error) {
            (EndCause::Exited, Some(reason)) => EndCause::LogFailed(reason),
            (cause, _) => cause,
        };
        let (exit_code, signal) = match &self.status {
            Some(Ok(status)) => (status.code(), status.signal()),
            _ => (None, None),
        };
        let tail = match self.shared.tail.lock() {
            Ok(ring) => ring.to_vec(),
            Err(poisoned) => poisoned.into_inner().to_vec(),
        };
        AttemptEnd {
            cause,
            exit_code,
            signal,
            duration: self.epoch.elapsed(),
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use crossbeam_channel::{Receiver, Sender};

    use super::*;
    use crate::config::policy::CommandLine;
    use crate::exec::{LiveOutput, end_abandoned_group, process_start_time};

    /// Generous: these bound outcomes, they do not measure speed.
    const BOUND: Duration = Duration::from_secs(8);

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn spec_in(dir: &Path, argv: &[&str]) -> AttemptSpec {
        AttemptSpec {
            command: CommandLine::Argv(argv.iter().map(|s| (*s).to_owned()).collect()),
            cwd: dir.to_owned(),
            env: Vec::new(),
            log_path: dir.join("task_1.log"),
            timeout: None,
            activity_timeout: None,
            terminate_grace: Duration::from_secs(1),
            backend: crate::config::policy::BackendKind::Local,
            reattach: None,
        }
    }

    struct Run {
        end: AttemptEnd,
        started: Option<Started>,
        elapsed: Duration,
    }

    /// Runs `spec`; `on_start` may send controls through the given sender.
    fn run_with(
        spec: &AttemptSpec,
        live: Option<&SharedLive>,
        on_start: impl FnOnce(Started, &Sender<Control>),
    ) -> Run {
        let (tx, rx): (Sender<Control>, Receiver<Control>) = crossbeam_channel::unbounded();
        let mut started = None;
        let begin = Instant::now();
        let end = run_attempt(spec, &rx, live, |s| {
            started = Some(s);
            on_start(s, &tx);
        });
        Run {
            end,
            started,
            elapsed: begin.elapsed(),
        }
    }

    fn run(spec: &AttemptSpec) -> Run {
        run_with(spec, None, |_, _| {})
    }

    fn log_of(spec: &AttemptSpec) -> Vec<u8> {
        std::fs::read(&spec.log_path).expect("log file exists")
    }

    /// Whether a process with this pid is running. A zombie is not: an orphan's
    /// zombie waits for init to reap it, which may take seconds on some machines.
    fn pid_running(pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X") | None)
    }

    /// Waits (bounded) until a fixture has written its pid file.
    fn read_pids(path: &Path) -> Vec<u32> {
        let until = Instant::now() + BOUND;
        loop {
            if let Ok(text) = std::fs::read_to_string(path)
                && text.ends_with('\n')
            {
                return text
                    .split_whitespace()
                    .map(|p| p.parse().expect("pid"))
                    .collect();
            }
            assert!(Instant::now() < until, "no pid file at {}", path.display());
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn exit_code_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &[&fixture("exit_with.sh"), "3"]);
        let r = run(&spec);
        assert_eq!(r.end.cause, EndCause::Exited);
        assert_eq!(r.end.exit_code, Some(3));
        assert_eq!(r.end.signal, None);
        assert_eq!(log_of(&spec), b"exiting with 3\n");
        assert_eq!(r.end.tail, b"exiting with 3\n");
        let started = r.started.expect("on_start called");
        assert_eq!(started.pid, started.pgid);
        assert!(started.start_time.is_some());
    }

    #[test]
    fn signal_death_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &[&fixture("crash_signal.sh"), "TERM"]);
        let r = run(&spec);
        assert_eq!(r.end.cause, EndCause::Exited);
        assert_eq!(r.end.exit_code, None);
        assert_eq!(r.end.signal, Some(rustix::process::Signal::TERM.as_raw()));
    }

    #[test]
    fn fail_then_pass_gets_a_new_log_per_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let counter = dir.path().join("counter");
        let counter = counter.to_str().unwrap();
        let mut codes = Vec::new();
        for attempt in 1..=3 {
            let mut spec = spec_in(dir.path(), &[&fixture("fail_then_pass.sh"), counter, "2"]);
            spec.log_path = dir.path().join(format!("task_{attempt}.log"));
            codes.push(run(&spec).end.exit_code);
            let log = String::from_utf8(log_of(&spec)).unwrap();
            assert!(log.starts_with(&format!("attempt {attempt}:")), "{log}");
        }
        assert_eq!(codes, [Some(1), Some(1), Some(0)]);
    }

    #[test]
    fn output_bytes_are_logged_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &[&fixture("invalid_utf8.sh")]);
        let live: SharedLive = Arc::new(LiveOutput::default());
        let r = run_with(&spec, Some(&live), |_, _| {});
        assert_eq!(r.end.cause, EndCause::Exited);
        assert_eq!(log_of(&spec), b"\xff\xfe bytes\n");
        assert_eq!(r.end.tail, b"\xff\xfe bytes\n");
        assert_eq!(*live.last_line.lock().unwrap(), "\u{fffd}\u{fffd} bytes");
    }

    #[test]
    fn flood_is_logged_whole_and_tail_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = 3 * 1024 * 1024 + 17;
        let spec = spec_in(dir.path(), &[&fixture("flood.sh"), &bytes.to_string()]);
        let r = run(&spec);
        assert_eq!(r.end.exit_code, Some(0));
        let log = log_of(&spec);
        assert_eq!(log.len(), bytes);
        assert!(log.iter().all(|&b| b == 0));
        assert_eq!(r.end.tail.len(), TAIL_CAP);
    }

    #[test]
    fn a_program_found_on_path_is_looked_up_again_once_it_is_gone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        let install = |at: &Path, word: &str| {
            let p = at.join("sr-cache-probe");
            std::fs::write(&p, format!("#!/bin/sh\nprintf {word}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let path =
            std::env::join_paths([&first, &second, Path::new("/usr/bin"), Path::new("/bin")])
                .unwrap();
        let attempt = |n: u32| {
            let mut spec = spec_in(dir.path(), &["sr-cache-probe"]);
            spec.env = vec![(OsString::from("PATH"), path.clone())];
            spec.log_path = dir.path().join(format!("task_{n}.log"));
            let r = run(&spec);
            (r.end, String::from_utf8(log_of(&spec)).unwrap())
        };
        install(&first, "one");
        let (end, out) = attempt(1);
        assert_eq!((end.exit_code, out.as_str()), (Some(0), "one"), "{end:?}");
        // Found once, kept: the same program runs while it is there.
        let (end, out) = attempt(2);
        assert_eq!((end.exit_code, out.as_str()), (Some(0), "one"), "{end:?}");
        // Gone: that attempt cannot start, and says so; the next one looks again.
        std::fs::remove_file(first.join("sr-cache-probe")).unwrap();
        install(&second, "two");
        let (end, _) = attempt(3);
        assert_eq!(
            end.cause,
            EndCause::SpawnFailed(
                "failed to start `sr-cache-probe`: command not found on PATH".into()
            )
        );
        let (end, out) = attempt(4);
        assert_eq!((end.exit_code, out.as_str()), (Some(0), "two"), "{end:?}");
    }

    #[test]
    fn env_and_cwd_reach_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[]);
        spec.command = CommandLine::Shell("printf '%s %s' \"$SR_TEST_VAR\" \"$(pwd)\"".into());
        spec.env = vec![(OsString::from("SR_TEST_VAR"), OsString::from("hello"))];
        let r = run(&spec);
        assert_eq!(r.end.exit_code, Some(0), "{:?}", r.end);
        let cwd = dir.path().canonicalize().unwrap();
        let expected = format!("hello {}", cwd.display());
        assert_eq!(String::from_utf8(log_of(&spec)).unwrap(), expected);
    }

    #[test]
    fn missing_program_fails_to_spawn() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &["spec-runner-no-such-program-x7"]);
        let r = run(&spec);
        let EndCause::SpawnFailed(reason) = &r.end.cause else {
            panic!("expected SpawnFailed, got {:?}", r.end.cause);
        };
        assert!(
            reason.contains("`spec-runner-no-such-program-x7`"),
            "{reason}"
        );
        assert!(reason.contains("not found"), "{reason}");
        assert_eq!(r.end.exit_code, None);
        assert!(r.started.is_none());

        let mut spec = spec_in(dir.path(), &["./missing.sh"]);
        spec.log_path = dir.path().join("task_2.log");
        let r = run(&spec);
        assert!(
            matches!(&r.end.cause, EndCause::SpawnFailed(m) if m.contains("missing.sh")),
            "{:?}",
            r.end.cause
        );
    }

    #[test]
    fn missing_cwd_fails_to_spawn() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[&fixture("exit_with.sh"), "0"]);
        spec.cwd = dir.path().join("nope");
        let r = run(&spec);
        let expected = format!("working directory `{}` does not exist", spec.cwd.display());
        assert_eq!(r.end.cause, EndCause::SpawnFailed(expected));
        assert!(r.started.is_none());
    }

    #[test]
    fn existing_log_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &[&fixture("exit_with.sh"), "0"]);
        std::fs::write(&spec.log_path, b"old").unwrap();
        let r = run(&spec);
        assert!(
            matches!(&r.end.cause, EndCause::LogFailed(m) if m.contains("task_1.log")),
            "{:?}",
            r.end.cause
        );
        assert!(r.started.is_none());
        assert_eq!(log_of(&spec), b"old");
    }

    #[test]
    fn timeout_kills_group_that_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pids");
        let mut spec = spec_in(
            dir.path(),
            &[
                &fixture("ignore_term_with_grandchild.sh"),
                pidfile.to_str().unwrap(),
            ],
        );
        spec.timeout = Some(Duration::from_secs(1));
        let r = run(&spec);
        assert_eq!(r.end.cause, EndCause::TimedOut);
        assert!(r.elapsed < BOUND, "took {:?}", r.elapsed);
        // Ignoring SIGTERM bought nothing beyond the grace period.
        assert_eq!(r.end.signal, Some(rustix::process::Signal::KILL.as_raw()));
        let pids = read_pids(&pidfile);
        assert_eq!(pids.len(), 2);
        for pid in pids {
            assert!(!pid_running(pid), "process {pid} outlived its attempt");
        }
    }

    #[test]
    fn silence_is_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[&fixture("hang_silent.sh")]);
        spec.activity_timeout = Some(Duration::from_secs(1));
        let r = run(&spec);
        assert_eq!(r.end.cause, EndCause::Hung);
        assert!(r.elapsed >= Duration::from_secs(1));
        assert!(r.elapsed < BOUND, "took {:?}", r.elapsed);
        assert!(!pid_running(r.started.unwrap().pid));
    }

    #[test]
    fn silence_after_output_is_a_hang_and_output_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[&fixture("print_then_hang.sh")]);
        spec.activity_timeout = Some(Duration::from_secs(1));
        let live: SharedLive = Arc::new(LiveOutput::default());
        let r = run_with(&spec, Some(&live), |_, _| {});
        assert_eq!(r.end.cause, EndCause::Hung);
        assert!(r.elapsed < BOUND, "took {:?}", r.elapsed);
        assert_eq!(log_of(&spec), b"started, now hanging\n");
        assert_eq!(*live.last_line.lock().unwrap(), "started, now hanging");
    }

    #[test]
    fn grandchild_holding_the_pipe_does_not_hang_the_runner() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let spec = spec_in(
            dir.path(),
            &[
                &fixture("grandchild_holds_pipe.sh"),
                pidfile.to_str().unwrap(),
            ],
        );
        let r = run(&spec);
        assert_eq!(r.end.cause, EndCause::Exited);
        assert_eq!(r.end.exit_code, Some(0));
        assert!(r.elapsed < BOUND, "took {:?}", r.elapsed);
        let grandchild = read_pids(&pidfile)[0];
        assert!(
            !pid_running(grandchild),
            "grandchild {grandchild} outlived its attempt"
        );
        let log = String::from_utf8(log_of(&spec)).unwrap();
        assert!(log.contains("leader exiting"), "{log}");
    }

    #[test]
    fn terminate_request_stops_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &[&fixture("hang_silent.sh")]);
        let r = run_with(&spec, None, |_, tx| tx.send(Control::Terminate).unwrap());
        assert_eq!(r.end.cause, EndCause::Stopped);
        assert_eq!(r.end.signal, Some(rustix::process::Signal::TERM.as_raw()));
        assert!(r.elapsed < BOUND, "took {:?}", r.elapsed);
    }

    #[test]
    fn kill_request_cuts_the_grace_period_short() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[&fixture("ignore_term.sh")]);
        // Far longer than the bound: only the kill request can end this in time.
        spec.terminate_grace = Duration::from_secs(60);
        let log_path = spec.log_path.clone();
        let r = run_with(&spec, None, |_, tx| {
            let tx = tx.clone();
            thread::spawn(move || {
                // The pid is printed once the TERM trap is set.
                let until = Instant::now() + BOUND;
                while std::fs::metadata(&log_path).map_or(0, |m| m.len()) == 0
                    && Instant::now() < until
                {
                    thread::sleep(Duration::from_millis(10));
                }
                tx.send(Control::Terminate).unwrap();
                thread::sleep(Duration::from_millis(200));
                tx.send(Control::Kill).unwrap();
            });
        });
        assert_eq!(r.end.cause, EndCause::Stopped);
        assert_eq!(r.end.signal, Some(rustix::process::Signal::KILL.as_raw()));
        assert!(r.elapsed < BOUND, "took {:?}", r.elapsed);
    }

    #[test]
    fn log_write_failure_ends_the_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_in(dir.path(), &[&fixture("print_then_hang.sh")]);
        // A log opened read-only fails on the first write, as a full disk would.
        std::fs::write(&spec.log_path, b"").unwrap();
        let log = File::open(&spec.log_path).unwrap();
        let (_tx, rx) = crossbeam_channel::unbounded();
        let begin = Instant::now();
        let end = run_with_log(&spec, log, &rx, None, |_| {}, begin);
        assert!(
            matches!(&end.cause, EndCause::LogFailed(m) if m.contains("failed to write the log")),
            "{:?}",
            end.cause
        );
        assert_eq!(end.signal, Some(rustix::process::Signal::TERM.as_raw()));
        assert!(begin.elapsed() < BOUND, "took {:?}", begin.elapsed());
        // The output still reaches the tail, for the runner's failure report.
        assert_eq!(end.tail, b"started, now hanging\n");
    }

    #[test]
    fn last_line_is_the_latest_complete_nonblank_line() {
        assert_eq!(last_line(b"a\nb\n  \npartial"), Some("b".into()));
        assert_eq!(last_line(b"no newline"), None);
        assert_eq!(last_line(b"10%\r50%\r\n"), Some("50%".into()));
        // A line still being redrawn shows its latest state.
        assert_eq!(
            last_line(b"\r 10% |#   |\r 40% |##  |"),
            Some("40% |##  |".into())
        );
        assert_eq!(
            last_line(b"done\nDownloading\r"),
            Some("Downloading".into())
        );
        assert_eq!(last_line(b"a\nb\n\r  \r"), Some("b".into()));
        assert_eq!(
            last_line(b"\x1b[31mred\x1b[0m text\n"),
            Some("red text".into())
        );
        let long = format!("{}\n", "é".repeat(5000));
        assert_eq!(
            last_line(long.as_bytes()).unwrap().chars().count(),
            LAST_LINE_CHARS
        );
    }

    #[test]
    fn ring_keeps_the_latest_bytes() {
        let mut ring = Ring::new(4);
        ring.push(b"ab");
        assert_eq!(ring.to_vec(), b"ab");
        ring.push(b"cde");
        assert_eq!(ring.to_vec(), b"bcde");
        ring.push(b"fghij");
        assert_eq!(ring.to_vec(), b"ghij");
        ring.push(b"k");
        assert_eq!(ring.to_vec(), b"hijk");
    }

    #[test]
    fn own_start_time_is_known() {
        assert!(process_start_time(std::process::id()).is_some());
        assert!(process_start_time(u32::MAX).is_none());
    }

    #[test]
    fn abandoned_group_is_only_ended_with_the_right_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("100000")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let start = process_start_time(pid).expect("child has a start time");
        let grace = Duration::from_secs(1);
        assert!(!end_abandoned_group(pid, pid, Some(start + 1), grace));
        assert!(!end_abandoned_group(pid, pid, None, grace));
        assert!(pid_running(pid), "a wrong start time must not signal");
        assert!(end_abandoned_group(pid, pid, Some(start), grace));
        // end_abandoned_group may have reaped our own child already.
        let _ = child.wait();
        assert!(!pid_running(pid));
    }
}
