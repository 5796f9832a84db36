//! One attempt as a live process group: spawn it, copy its output into its log, watch
//! for exit, timeout, silence and runner requests, and end the whole group.
//!
//! Owns the child, its output pipe and its log file for the attempt's lifetime. Knows
//! nothing of retries, state or reporting; all OS-specific calls go through `unix`.
//!
//! One thread does it all: the caller's, asleep in `poll` on the leader's pidfd, the
//! output pipe and the thread's control bell (see `wake`). An attempt costs no other
//! thread and no handoff between threads.

use std::fs::OpenOptions;
use std::io::{self, PipeReader};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open};

use super::output::{Log, Output, OutputError, Read1};
use super::spawn::{SpawnError, spawn};
use super::unix;
use super::wake::Listening;
use super::{AttemptEnd, AttemptSpec, Control, ControlRx, EndCause, SharedLive, Started};

/// Once the group is gone, the output still in the pipe is drained for at least this
/// long (or the grace period, if longer). Only a process that escaped the group
/// (`setsid`) can hold the pipe beyond that; we stop waiting for it.
const MIN_DRAIN: Duration = Duration::from_secs(2);

/// How often the supervisor looks for what it cannot wait for: the leader's exit
/// when the system gives no pidfd, requests when it gives no eventfd. Both exist on
/// every Linux since 5.3; this is the fallback.
const TICK: Duration = Duration::from_millis(20);

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
/// Runs on the caller's thread. Only if a process that left the group keeps the pipe
/// open past the drain bound does a thread stay behind, reading (and dropping) what
/// that process writes until it closes the pipe.
pub fn run_attempt(
    spec: &AttemptSpec,
    control: &ControlRx,
    live: Option<&SharedLive>,
    on_start: impl FnOnce(Started),
) -> AttemptEnd {
    let entered = Instant::now();
    // Private: an agent's output may hold secrets.
    match OpenOptions::new()
        // Read too: output moved into it by `splice` is read back for the tail.
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&spec.log_path)
    {
        Ok(file) => {
            let log = Log {
                file,
                readable: true,
            };
            run_with_log(spec, log, control, live, on_start, entered, Wakers::ALL)
        }
        Err(source) => not_started(
            EndCause::LogFailed(
                OutputError::CreateLog {
                    path: spec.log_path.clone(),
                    source,
                }
                .to_string(),
            ),
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

/// What the supervisor may wait on. Both exist on every Linux since 5.3; tests take
/// them away to check the fallback (a look every [`TICK`]).
#[derive(Clone, Copy)]
struct Wakers {
    pidfd: bool,
    bell: bool,
}

impl Wakers {
    const ALL: Wakers = Wakers {
        pidfd: true,
        bell: true,
    };
}

/// [`run_attempt`] once the log is open; tests hand in a log that cannot be written.
fn run_with_log(
    spec: &AttemptSpec,
    log: Log,
    control: &ControlRx,
    live: Option<&SharedLive>,
    on_start: impl FnOnce(Started),
    entered: Instant,
    wakers: Wakers,
) -> AttemptEnd {
    let failed = |e: SpawnError| not_started(EndCause::SpawnFailed(e.to_string()), entered);
    let (reader, writer) = match io::pipe() {
        Ok(pair) => pair,
        Err(e) => return failed(SpawnError::Pipe(e)),
    };
    let epoch = Instant::now();
    // The leader's start time identifies it after a crash of the runner. The kernel
    // takes it from the boot-time clock during the spawn: when the clock shows the same
    // tick before and after, that is it (a spawn takes far less than a tick, 10 ms);
    // else it is read from /proc, before anyone can reap the leader (even a zombie
    // still has its stat file).
    let before = unix::boot_ticks();
    // The leader made itself a group leader before exec: its pid is the group id.
    let pid = match spawn(spec, writer) {
        Ok(pid) => pid,
        Err(e) => return failed(e),
    };
    let start_time = if unix::boot_ticks() == before {
        Some(before)
    } else {
        unix::process_start_time(pid)
    };
    // Not reaped yet, so the pid is still this child's: the pidfd cannot name another.
    let exit_fd = i32::try_from(pid)
        .ok()
        .filter(|_| wakers.pidfd)
        .and_then(Pid::from_raw)
        .and_then(|p| pidfd_open(p, PidfdFlags::empty()).ok());
    let listening = control.listen();

    on_start(Started {
        pid,
        pgid: pid,
        start_time,
        job: None,
    });

    let mut sup = Supervisor {
        spec,
        pid,
        epoch,
        exit_fd,
        output: Some(Output::new(reader, log, live)),
        pipe_closed: false,
        control,
        listening,
        control_open: true,
        use_bell: wakers.bell,
        status: None,
        log_error: None,
        kill_requested: false,
        abandoned_tail: None,
    };
    let cause = sup.run();
    sup.end_inherited();
    sup.drain();
    sup.finish(cause)
}

/// What woke the supervisor.
enum Event {
    LeaderExited,
    Terminate,
    Kill,
    LogFailed,
    /// Every writer closed the output pipe (or it failed): no more output.
    OutputClosed,
    Deadline,
}

/// The caller's thread while the attempt runs: reacts to events, never polls for the
/// leader's exit (unless the system gives no pidfd).
struct Supervisor<'a> {
    spec: &'a AttemptSpec,
    /// The leader's pid, which is also its group's id.
    pid: u32,
    epoch: Instant,
    /// Readable once the leader exited; `None` once it is reaped (or if the system
    /// gives no pidfd: then the leader is looked at every [`TICK`]).
    exit_fd: Option<OwnedFd>,
    /// `None` once the output is closed.
    output: Option<Output>,
    /// The pipe reached its end (every writer closed it), or failed.
    pipe_closed: bool,
    control: &'a ControlRx,
    listening: Listening<'a>,
    /// False once the runner dropped its sender: nobody can stop us then.
    control_open: bool,
    /// Whether to wait for the control bell (else: look at the channel every tick).
    use_bell: bool,
    /// The leader's status, once reaped.
    status: Option<io::Result<ExitStatus>>,
    /// The first failure of the log or the pipe.
    log_error: Option<OutputError>,
    /// The runner asked for a kill: no more grace periods for anything.
    kill_requested: bool,
    /// The latest output, kept when the pipe is given up on (see `drain`).
    abandoned_tail: Option<Vec<u8>>,
}

impl Supervisor<'_> {
    /// Waits for the next event that matters, until `deadline` (`None`: no deadline),
    /// copying output to the log meanwhile.
    fn next(&mut self, deadline: Option<Instant>) -> Event {
        loop {
            if self.control_open {
                match self.control.try_recv() {
                    Ok(Control::Terminate) => return Event::Terminate,
                    Ok(Control::Kill) => {
                        self.kill_requested = true;
                        return Event::Kill;
                    }
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.control_open = false;
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => {}
                }
            }
            if self.status.is_none() && self.exit_fd.is_none() && self.reap(false) {
                return Event::LeaderExited;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return Event::Deadline;
            }
            let mut wait = deadline.map(|d| d - now);
            let bell = (self.use_bell && self.control_open)
                .then(|| self.listening.fd())
                .flatten();
            let blind = (self.status.is_none() && self.exit_fd.is_none())
                || (self.control_open && bell.is_none());
            if blind {
                wait = Some(wait.map_or(TICK, |w| w.min(TICK)));
            }
            let (pipe_ready, exit_ready, bell_ready) = {
                let pipe = (!self.pipe_closed)
                    .then_some(self.output.as_ref())
                    .flatten()
                    .map(|o| o.pipe().as_fd());
                let exit = self.exit_fd.as_ref().map(AsFd::as_fd);
                let bell = bell.map(AsFd::as_fd);
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
                let slots = [pipe, exit, bell].map(|fd| {
                    fd.map(|fd| {
                        fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                        fds.len() - 1
                    })
                });
                // Rounded up, so that a deadline is never woken for too early.
                let timeout = wait.map(|w| {
                    let w = w + Duration::from_nanos(999);
                    Timespec {
                        tv_sec: i64::try_from(w.as_secs()).unwrap_or(i64::MAX),
                        tv_nsec: i64::from(w.subsec_nanos()),
                    }
                });
                match poll(&mut fds, timeout.as_ref()) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    // Nothing to do but look again; the deadline still holds.
                    Err(_) => thread::sleep(wait.unwrap_or(TICK).min(TICK)),
                }
                let revents =
                    |slot: Option<usize>| slot.map_or(PollFlags::empty(), |i| fds[i].revents());
                (
                    revents(slots[0]),
                    !revents(slots[1]).is_empty(),
                    !revents(slots[2]).is_empty(),
                )
            };
            if bell_ready {
                self.listening.hush();
            }
            // Hung up with nothing to read: every writer closed the pipe and it is
            // empty (a pipe is readable exactly when it holds bytes). That is the end,
            // known without a read.
            let pipe_ended =
                pipe_ready.contains(PollFlags::HUP) && !pipe_ready.contains(PollFlags::IN);
            if pipe_ended && !self.pipe_closed {
                self.pipe_closed = true;
                if exit_ready && self.reap(true) {
                    return Event::LeaderExited;
                }
                return Event::OutputClosed;
            }
            if !pipe_ready.is_empty()
                && let Some(event) = self.read_output()
            {
                // A leader that exits usually closes the pipe at the same moment: take
                // both from this one wake-up rather than polling again for the exit.
                // (Not a reap without the pidfd's word: its files close a moment before
                // its exit is announced, and a third of such tries came too early.)
                if matches!(event, Event::OutputClosed) && exit_ready && self.reap(true) {
                    return Event::LeaderExited;
                }
                return event;
            }
            if exit_ready && self.reap(true) {
                return Event::LeaderExited;
            }
        }
    }

    /// One read of the output; an event if it is one the caller must hear of.
    fn read_output(&mut self) -> Option<Event> {
        if self.pipe_closed {
            return None;
        }
        let output = self.output.as_mut()?;
        match output.read_once() {
            Read1::Data => None,
            Read1::LogFailed(reason) => {
                self.log_error.get_or_insert(reason);
                Some(Event::LogFailed)
            }
            Read1::End => {
                self.pipe_closed = true;
                Some(Event::OutputClosed)
            }
            Read1::ReadFailed(reason) => {
                self.pipe_closed = true;
                let first = self.log_error.is_none();
                self.log_error.get_or_insert(reason);
                Some(if first {
                    Event::LogFailed
                } else {
                    Event::OutputClosed
                })
            }
        }
    }

    /// Reaps the leader if it exited (`exited`: its pidfd said so). Returns whether
    /// it is reaped now.
    fn reap(&mut self, exited: bool) -> bool {
        match unix::try_wait(self.pid) {
            Ok(Some(status)) => self.status = Some(Ok(status)),
            Ok(None) if !exited => return false,
            // The pidfd says it exited, yet it cannot be reaped: a tracer (`strace -p`,
            // a debugger) sees the exit first. The pidfd stays readable until then, so
            // look every TICK instead.
            Ok(None) => {
                self.exit_fd = None;
                return false;
            }
            Err(e) => self.status = Some(Err(e)),
        }
        self.exit_fd = None;
        true
    }

    fn timeout_at(&self) -> Option<Instant> {
        self.spec.timeout.and_then(|t| self.epoch.checked_add(t))
    }

    fn silence_at(&self) -> Option<Instant> {
        let limit = self.spec.activity_timeout?;
        let last = self
            .output
            .as_ref()
            .and_then(|o| o.last_output)
            .unwrap_or(self.epoch);
        last.checked_add(limit)
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
                    let reason = self.log_error.as_ref().map(ToString::to_string);
                    break (EndCause::LogFailed(reason.unwrap_or_default()), false);
                }
                Event::OutputClosed => {}
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
            let _ = unix::signal_group(self.pid, Signal::TERM);
            let deadline = Instant::now() + self.spec.terminate_grace;
            // The leader is our child: its exit arrives as an event.
            while self.status.is_none() && !kill_now {
                match self.next(Some(deadline)) {
                    Event::Kill | Event::Deadline => kill_now = true,
                    Event::LeaderExited
                    | Event::Terminate
                    | Event::LogFailed
                    | Event::OutputClosed => {}
                }
            }
            if !kill_now {
                kill_now = !self.wait_group_gone(deadline);
            }
        }
        if kill_now {
            let _ = unix::signal_group(self.pid, Signal::KILL);
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
        // Most groups go with their leader: one `kill` says so, with nothing to reap.
        if !unix::group_exists(self.pid) {
            return false;
        }
        unix::reap_group_zombies(self.pid);
        unix::group_alive(self.pid)
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
            if let Event::Kill = self.next(Some((now + unix::GROUP_POLL).min(deadline))) {
                return false;
            }
        }
    }

    /// After SIGKILL and the leader's reaping: waits (bounded) for the members'
    /// zombies to be reaped by their parents, killing again anything forked in a race.
    /// Output goes on being copied meanwhile.
    fn kill_rest(&mut self) {
        let deadline = Instant::now() + unix::AFTER_KILL_WAIT;
        while self.group_alive() && Instant::now() < deadline {
            let _ = unix::signal_group(self.pid, Signal::KILL);
            let pause = Instant::now() + unix::GROUP_POLL;
            while Instant::now() < pause {
                self.next(Some(pause));
            }
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

    /// Copies the output still in the pipe. If a process outside the group keeps the
    /// pipe open, gives up after the drain bound: the log is closed, and a thread
    /// reads (and drops) what that process writes until it closes the pipe.
    fn drain(&mut self) {
        let deadline = Instant::now() + self.spec.terminate_grace.max(MIN_DRAIN);
        while !self.pipe_closed && Instant::now() < deadline {
            self.next(Some(deadline));
        }
        if !self.pipe_closed
            && let Some(output) = self.output.take()
        {
            let (pipe, tail) = output.finish();
            self.abandoned_tail = Some(tail);
            let _ = thread::Builder::new()
                .name("exec-drain".into())
                .spawn(move || drain_to_nowhere(pipe));
        }
    }

    fn finish(mut self, cause: EndCause) -> AttemptEnd {
        // A leader that exited on its own left an incomplete log behind if writing
        // it failed: the runner must not take that attempt at face value.
        let cause = match (cause, self.log_error.take()) {
            (EndCause::Exited, Some(reason)) => EndCause::LogFailed(reason.to_string()),
            (cause, _) => cause,
        };
        let (exit_code, signal) = match &self.status {
            Some(Ok(status)) => (status.code(), status.signal()),
            _ => (None, None),
        };
        let tail = match self.output.take() {
            Some(output) => output.finish().1,
            None => self.abandoned_tail.take().unwrap_or_default(),
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

/// Reads a pipe until every writer closed it, keeping nothing: a process that
/// escaped the attempt must not block on a full pipe, nor die of a closed one.
fn drain_to_nowhere(mut pipe: PipeReader) {
    let _ = io::copy(&mut pipe, &mut io::sink());
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::policy::CommandLine;
    use crate::exec::output::TAIL_CAP;
    use crate::exec::{
        ControlTx, LiveOutput, control_channel, end_abandoned_group, process_start_time,
    };

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
        on_start: impl FnOnce(Started, &ControlTx),
    ) -> Run {
        let (tx, rx) = control_channel();
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

    /// [`run_with`], waiting only on what `wakers` allows.
    fn run_waking(
        spec: &AttemptSpec,
        live: Option<&SharedLive>,
        wakers: Wakers,
        on_start: impl FnOnce(Started, &ControlTx),
    ) -> Run {
        let (tx, rx) = control_channel();
        let mut started = None;
        let begin = Instant::now();
        // As `run_attempt` opens it.
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&spec.log_path)
            .expect("a new log");
        let on_start = |s| {
            started = Some(s);
            on_start(s, &tx);
        };
        let log = Log {
            file: log,
            readable: true,
        };
        let end = run_with_log(spec, log, &rx, live, on_start, begin, wakers);
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
    fn without_pidfd_or_eventfd_exits_timeouts_and_requests_are_still_seen() {
        let blind = Wakers {
            pidfd: false,
            bell: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[&fixture("exit_with.sh"), "3"]);
        let r = run_waking(&spec, None, blind, |_, _| {});
        assert_eq!((r.end.cause, r.end.exit_code), (EndCause::Exited, Some(3)));
        assert_eq!(log_of(&spec), b"exiting with 3\n");

        spec.command = CommandLine::Argv(vec![fixture("hang_silent.sh")]);
        spec.log_path = dir.path().join("task_2.log");
        let r = run_waking(&spec, None, blind, |_, tx| {
            tx.send(Control::Terminate).unwrap()
        });
        assert_eq!(r.end.cause, EndCause::Stopped);
        assert_eq!(r.end.signal, Some(rustix::process::Signal::TERM.as_raw()));

        spec.log_path = dir.path().join("task_3.log");
        spec.timeout = Some(Duration::from_millis(300));
        let r = run_waking(&spec, None, blind, |_, _| {});
        assert_eq!(r.end.cause, EndCause::TimedOut);
        assert!(r.elapsed < BOUND, "took {:?}", r.elapsed);
    }

    #[test]
    fn attempts_leave_no_file_descriptor_behind() {
        let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
        let dir = tempfile::tempdir().unwrap();
        let attempt = |n: usize, how: usize| {
            let mut spec = spec_in(dir.path(), &["true"]);
            spec.log_path = dir.path().join(format!("task_{n}.log"));
            match how {
                // Stopped: the bell rings.
                0 => {
                    spec.command = CommandLine::Argv(vec!["sleep".into(), "30".into()]);
                    run_with(&spec, None, |_, tx| tx.send(Control::Kill).unwrap());
                }
                1 => {
                    let blind = Wakers {
                        pidfd: false,
                        bell: false,
                    };
                    run_waking(&spec, None, blind, |_, _| {});
                }
                _ => {
                    run(&spec);
                }
            }
        };
        // The thread's bell and the PATH cache are made once.
        attempt(0, 2);
        // Other tests open and close files meanwhile: compare the least seen.
        let before = fds();
        for n in 1..=150 {
            attempt(n, n % 3);
        }
        let after = (0..20)
            .map(|_| {
                thread::sleep(Duration::from_millis(5));
                fds()
            })
            .min()
            .unwrap();
        assert!(after <= before + 2, "{before} open before, {after} after");
    }

    #[test]
    fn a_traced_leader_keeps_its_exit_code() {
        // A tracer (`strace -p`, a debugger) sees the exit before the parent may reap:
        // the pidfd says "exited" while the leader cannot be waited for yet.
        if std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!(
                "note: strace is not installed; a_traced_leader_keeps_its_exit_code checks nothing"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for n in 1..=6 {
            let mut spec = spec_in(dir.path(), &[]);
            spec.command = CommandLine::Shell("sleep 0.3; exit 7".into());
            spec.log_path = dir.path().join(format!("task_{n}.log"));
            let tracer = std::sync::Mutex::new(None);
            let r = run_with(&spec, None, |s, _| {
                *tracer.lock().unwrap() = std::process::Command::new("strace")
                    .args(["-qq", "-o", "/dev/null", "-p", &s.pid.to_string()])
                    .spawn()
                    .ok();
            });
            if let Some(mut t) = tracer.into_inner().unwrap() {
                let _ = t.wait();
            }
            assert_eq!(
                (r.end.cause, r.end.exit_code),
                (EndCause::Exited, Some(7)),
                "attempt {n}"
            );
        }
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

    /// Output larger than the tail, taken each way it can reach the log: spliced
    /// (nothing needs the bytes as they come), read (a live last line is wanted), and
    /// read after `splice` was refused (a log in append mode refuses it). Each way, the
    /// log is byte-exact and the tail is the output's last `TAIL_CAP` bytes.
    #[test]
    fn output_reaches_log_and_tail_whole_whichever_way_it_is_copied() {
        let expected: Vec<u8> = (1..=40_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        assert!(expected.len() > 2 * TAIL_CAP);
        for way in ["splice", "read", "splice refused"] {
            let dir = tempfile::tempdir().unwrap();
            let mut spec = spec_in(dir.path(), &[]);
            spec.command = CommandLine::Shell("seq 1 40000".into());
            let log = OpenOptions::new()
                .read(true)
                .write(true)
                .append(way == "splice refused")
                .create_new(true)
                .open(&spec.log_path)
                .unwrap();
            let live: SharedLive = Arc::new(LiveOutput::default());
            let live = (way == "read").then_some(&live);
            let (_tx, rx) = control_channel();
            let log = Log {
                file: log,
                readable: true,
            };
            let end = run_with_log(&spec, log, &rx, live, |_| {}, Instant::now(), Wakers::ALL);
            assert_eq!(end.cause, EndCause::Exited, "{way}");
            assert!(log_of(&spec) == expected, "{way}: the log differs");
            assert!(
                end.tail == expected[expected.len() - TAIL_CAP..],
                "{way}: the tail is not the output's end"
            );
            if let Some(live) = live {
                assert_eq!(*live.last_line.lock().unwrap(), "40000");
            }
        }
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
    fn the_runners_environment_reaches_the_child_under_the_attempts_variables() {
        // The test process's own PATH is inherited; HOME is given over by the attempt,
        // and of a name given twice the last value wins.
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[]);
        spec.command =
            CommandLine::Shell("printf '%s|%s|%s' \"$PATH\" \"$HOME\" \"$SR_TWICE\"".into());
        spec.env = vec![
            (OsString::from("SR_TWICE"), OsString::from("first")),
            (OsString::from("HOME"), OsString::from("/attempt/home")),
            (OsString::from("SR_TWICE"), OsString::from("second")),
        ];
        let r = run(&spec);
        assert_eq!(r.end.exit_code, Some(0), "{:?}", r.end);
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            String::from_utf8(log_of(&spec)).unwrap(),
            format!("{path}|/attempt/home|second")
        );
    }

    #[test]
    fn the_child_starts_with_no_blocked_signals_and_sigpipe_at_its_default() {
        // The runner ignores SIGPIPE (Rust does at start-up): a command that inherited
        // that would see EPIPE instead of dying quietly at the end of `cmd | head`.
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_in(dir.path(), &[]);
        spec.command = CommandLine::Shell("grep -E '^Sig(Blk|Ign):' /proc/self/status".into());
        let r = run(&spec);
        assert_eq!(r.end.exit_code, Some(0), "{:?}", r.end);
        let text = String::from_utf8(log_of(&spec)).unwrap();
        let mask = |name: &str| {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        assert_eq!(
            mask("SigIgn:") & (1 << (13 - 1)),
            0,
            "SIGPIPE ignored: {text}"
        );
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
        let log = std::fs::File::open(&spec.log_path).unwrap();
        let (_tx, rx) = control_channel();
        let begin = Instant::now();
        let log = Log {
            file: log,
            readable: false,
        };
        let end = run_with_log(&spec, log, &rx, None, |_| {}, begin, Wakers::ALL);
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

    /// The start time an attempt reports (taken from the clock around the spawn, most
    /// of the time) is the one /proc gives for the leader: what a later run compares to
    /// recognize it.
    #[test]
    fn an_attempts_start_time_is_the_leaders_as_proc_gives_it() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            let mut spec = spec_in(dir.path(), &["true"]);
            spec.log_path = dir.path().join(format!("task_{i}.log"));
            let mut seen = None;
            let r = run_with(&spec, None, |started, _| {
                // Not reaped before the supervisor runs: its stat file is still there.
                seen = Some((started.start_time, process_start_time(started.pid)));
            });
            assert_eq!(r.end.exit_code, Some(0));
            let (reported, from_proc) = seen.unwrap();
            assert!(from_proc.is_some());
            assert_eq!(reported, from_proc, "attempt {i}");
        }
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
