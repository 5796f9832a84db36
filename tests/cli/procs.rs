//! Helpers for tests that watch real processes: a runner started in the background
//! whose NDJSON events are read as they come, and liveness checks by pid.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::Value;

use crate::harness::Test;

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
        Background {
            child,
            events,
            seen: Vec::new(),
        }
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
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no matching event within {within:?}; saw {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("runner ended first; saw {:#?}", self.seen)
                }
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

/// Runs the binary in `t`'s folder with these arguments (the folder stays alive).
pub fn run_in(t: &Test, args: &[&str]) -> crate::harness::Run {
    let out = t.command().args(args).output().expect("run spec-runner");
    crate::harness::Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
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
