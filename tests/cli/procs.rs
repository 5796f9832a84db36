//! Helpers for tests that watch real processes: a runner started in the background
//! whose NDJSON events are read as they come, liveness checks by pid, output drained
//! on a thread, and pseudo-terminals.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::Value;

use crate::harness::Test;

/// Calls `probe` until it gives a value; panics with `what` after `within` (generous
/// bounds: a loaded machine is slow, never wrong).
#[track_caller]
pub fn wait_until<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Looks (`look`) until what it sees is `ready`; panics with `what` and the last look
/// after `within`.
#[track_caller]
pub fn wait_to_see<V: std::fmt::Display>(
    within: Duration,
    what: &str,
    mut look: impl FnMut() -> V,
    ready: impl Fn(&V) -> bool,
) -> V {
    let deadline = Instant::now() + within;
    loop {
        let seen = look();
        if ready(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what} (waited {within:?}); last seen:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything read from a pipe or a terminal, by a thread of its own as it comes, so
/// that the writer never blocks on a full pipe.
pub struct Drain {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// Disconnected once the reading reached its end (every writer closed its side;
    /// a terminal's master reads EIO then).
    done: Receiver<()>,
}

impl Drain {
    pub fn start(from: impl Read + Send + 'static) -> Drain {
        Drain::start_with(from, |_| {})
    }

    /// Also hands each chunk to `seen` as it comes (a screen parser).
    pub fn start_with(
        mut from: impl Read + Send + 'static,
        mut seen: impl FnMut(&[u8]) + Send + 'static,
    ) -> Drain {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (ended, done) = crossbeam_channel::bounded::<()>(0);
        let sink = bytes.clone();
        std::thread::spawn(move || {
            let _ended = ended;
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                seen(&buf[..n]);
                sink.lock()
                    .expect("drained bytes")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Drain { bytes, done }
    }

    /// What was read so far.
    pub fn so_far(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("drained bytes")).into_owned()
    }

    /// What was read, once `ready` likes it; panics with `what` after `within`.
    #[track_caller]
    pub fn wait_for(&self, within: Duration, what: &str, ready: impl Fn(&str) -> bool) -> String {
        wait_to_see(within, what, || self.so_far(), |s| ready(s))
    }

    /// All there was, once the reading reached its end; panics after `within`.
    #[track_caller]
    pub fn all(&self, within: Duration) -> String {
        match self.done.recv_timeout(within) {
            Err(RecvTimeoutError::Disconnected) => self.so_far(),
            _ => panic!(
                "still open after {within:?}; read so far:\n{}",
                self.so_far()
            ),
        }
    }
}

/// A new pseudo-terminal: its master side (what a terminal emulator holds) and its
/// slave (the terminal a program is given); `size` is its window, rows × columns.
pub fn terminal(size: Option<(u16, u16)>) -> (std::fs::File, std::fs::File) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    if let Some((rows, cols)) = size {
        set_window(&master, rows, cols);
    }
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().expect("a terminal's name is text"))
        .expect("open the terminal");
    (std::fs::File::from(master), slave)
}

/// Sets a terminal's window size (its master side), as a resized emulator does.
pub fn set_window(master: impl std::os::fd::AsFd, rows: u16, cols: u16) {
    rustix::termios::tcsetwinsize(
        master,
        rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("window size");
}

/// `t`'s command (its arguments, variables and folder) in a session of its own whose
/// controlling terminal is the one given as its stdin (`setsid --ctty`), as in a
/// terminal emulator: a typed Ctrl-C reaches it as from a keyboard.
pub fn in_own_session(t: &Test) -> Command {
    let base = t.command();
    let mut cmd = Command::new("setsid");
    cmd.arg("--ctty")
        .arg(base.get_program())
        .args(base.get_args())
        .current_dir(t.path());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Waits (generously) for every pid to be gone; returns those still alive.
pub fn wait_gone(pids: &[u32], within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (generously) until a fixture has written a pid to `path`; returns the first.
pub fn wait_pid(path: &std::path::Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(&pid) = read_pids(path).first() {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads whitespace-separated pids from a file the fixture wrote.
pub fn read_pids(path: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A runner running in the background with `--format json`.
pub struct Background {
    pub child: Child,
    events: Receiver<Value>,
    pub seen: Vec<Value>,
    /// The runner's stderr, read as it comes: a runner that logs a lot never blocks
    /// on a full pipe.
    stderr: Drain,
}

/// A runner a test left running (it failed half-way) is killed with it.
impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Background {
    pub fn from_command(mut cmd: std::process::Command) -> Background {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start spec-runner");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let stderr = Drain::start(child.stderr.take().expect("stderr"));
        Background {
            child,
            events,
            seen: Vec::new(),
            stderr,
        }
    }

    /// What the runner has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.so_far()
    }

    /// All the runner wrote to stderr, once the pipe reached its end (the runner and
    /// whatever inherited its stderr exited); panics after `within`.
    #[track_caller]
    pub fn stderr(&self, within: Duration) -> String {
        self.stderr.all(within)
    }

    /// Waits for the first event matching `pred`; panics after `within`.
    pub fn wait_for(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no matching event within {within:?}; saw {:#?}\n--- stderr\n{}",
                    self.seen,
                    self.stderr_so_far()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "runner ended first; saw {:#?}\n--- stderr\n{}",
                    self.seen,
                    self.stderr_so_far()
                ),
            }
        }
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("signal the runner");
    }

    /// Waits for the runner to exit; returns its code and how long that took.
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status.code(), start.elapsed());
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!("runner still running after {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every remaining event, after the runner exited.
    pub fn rest(&mut self) -> Vec<Value> {
        while let Ok(v) = self.events.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(v);
        }
        self.seen.clone()
    }
}

/// Parses NDJSON output.
pub fn events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The events of one kind (and spec, when given).
pub fn of<'a>(events: &'a [Value], kind: &str, spec: Option<&str>) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind && spec.is_none_or(|s| e["spec"] == s))
        .collect()
}

/// `apply --format json` in `t`'s folder, with these variables too.
pub fn apply_with(t: &Test, env: &[(&str, &str)]) -> crate::harness::Run {
    t.command()
        .args(["apply", "--format", "json"])
        .envs(env.iter().copied())
        .output()
        .expect("run spec-runner")
        .into()
}

/// [`apply_with`], which must exit with `code`; its events.
#[track_caller]
pub fn apply_events(t: &Test, env: &[(&str, &str)], code: i32) -> Vec<Value> {
    let run = apply_with(t, env);
    run.code(code);
    events(&run.stdout)
}

/// Runs the binary in `t`'s folder with these arguments (the folder stays alive).
pub fn run_in(t: &Test, args: &[&str]) -> crate::harness::Run {
    t.command()
        .args(args)
        .output()
        .expect("run spec-runner")
        .into()
}

impl Background {
    /// Starts `spec-runner apply --format json` in `t`'s folder.
    pub fn apply(t: &Test) -> Background {
        Background::spawn(t, &["apply", "--format", "json"])
    }

    pub fn spawn(t: &Test, args: &[&str]) -> Background {
        let mut cmd = t.command();
        cmd.args(args);
        Background::from_command(cmd)
    }
}

/// The harness itself: a background runner that logs more to stderr than a pipe holds
/// (64 KiB on Linux) runs to its end, and all it logged is there to read.
#[test]
fn a_background_runner_that_logs_a_lot_to_stderr_never_blocks_on_it() {
    let mut toml = String::from("jobs = 4\n");
    for i in 0..1500 {
        toml.push_str(&format!("[specs.s{i:04}]\ncommand = 'true'\n"));
    }
    let t = Test::with_pipeline(&toml);
    let mut bg = Background::spawn(&t, &["-vv", "apply", "--format", "json"]);
    let (code, _) = bg.wait_exit(Duration::from_secs(600));
    assert_eq!(code, Some(0));
    let stderr = bg.stderr(Duration::from_secs(60));
    assert!(stderr.len() > 64 * 1024, "{} bytes", stderr.len());
    assert!(
        stderr.contains("starting attempt spec=s1499 attempt=1"),
        "{stderr}"
    );
    assert_eq!(of(&bg.rest(), "spec_finished", None).len(), 1500);
}
