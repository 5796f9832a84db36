//! The dispatcher's state machine, driven by a scripted backend: no processes, so every
//! scenario is exact and fast. (Real processes are tested in tests/cli.)

use std::sync::Arc;
use std::time::Duration;

use super::backend::Backend;
use super::dispatcher::{self, RunOptions};
use super::inbox::{Inbox, InboxTx};
use super::signal::SignalEvent;
use crate::config::{self, LoadOptions, Pipeline};
use crate::events::{Event, EventKind, EventSink, Status};
use crate::exec::{AttemptEnd, AttemptSpec, ControlRx, EndCause, SharedLive, Started};

/// Commands are a tiny script: `ok`, `fail` (exit 1), `fail-first` (exit 1 on attempt
/// 1), `code:N`, `block` (until told to stop), `sleep:MS`.
struct Scripted;

impl Backend for Scripted {
    fn run_attempt(
        &self,
        spec: &AttemptSpec,
        control: &ControlRx,
        _live: Option<&SharedLive>,
        on_start: &mut dyn FnMut(Started),
    ) -> AttemptEnd {
        on_start(Started {
            pid: 1,
            pgid: 1,
            start_time: None,
            job: None,
        });
        let script = match &spec.command {
            config::policy::CommandLine::Shell(s) => s.clone(),
            config::policy::CommandLine::Argv(v) => v.join(" "),
        };
        let attempt = spec
            .env
            .iter()
            .find(|(k, _)| k == "SPEC_RUNNER_ATTEMPT")
            .and_then(|(_, v)| v.to_str()?.parse::<u32>().ok())
            .unwrap_or(1);
        let exited = |code| AttemptEnd {
            cause: EndCause::Exited,
            exit_code: Some(code),
            signal: None,
            duration: Duration::ZERO,
            tail: Vec::new(),
        };
        let stopped = AttemptEnd {
            cause: EndCause::Stopped,
            exit_code: None,
            signal: Some(15),
            duration: Duration::ZERO,
            tail: Vec::new(),
        };
        match script.as_str() {
            "ok" => exited(0),
            "fail" => exited(1),
            "fail-first" => exited(i32::from(attempt == 1)),
            "block" => {
                let _ = control.recv();
                stopped
            }
            s if s.starts_with("code:") => exited(s[5..].parse().unwrap_or(1)),
            s if s.starts_with("sleep:") => {
                let ms = s[6..].parse().unwrap_or(0);
                match control.recv_timeout(Duration::from_millis(ms)) {
                    Ok(_) => stopped,
                    Err(_) => exited(0),
                }
            }
            other => panic!("unknown script {other:?}"),
        }
    }
}

/// When to send an interrupt, as a test's condition on an event.
type Trigger = Box<dyn Fn(&Event) -> bool + Send>;

/// Records events; may send a signal when it sees a chosen event.
struct Recorder {
    events: Vec<Event>,
    interrupt_on: Option<(Trigger, InboxTx)>,
    /// How long after the trigger the interrupt comes.
    delay: Duration,
}

impl EventSink for Recorder {
    fn event(&mut self, event: &Event) {
        if let Some((when, tx)) = &self.interrupt_on
            && when(event)
        {
            if self.delay.is_zero() {
                tx.signal(SignalEvent::Interrupt(2));
            } else {
                let (tx, delay) = (tx.clone(), self.delay);
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    tx.signal(SignalEvent::Interrupt(2));
                });
            }
        }
        self.events.push(event.clone());
    }
}

struct Outcome {
    code: u8,
    events: Vec<Event>,
    _dir: tempfile::TempDir,
}

impl Outcome {
    fn status(&self, spec: &str) -> Option<(Status, Option<String>)> {
        self.events.iter().find_map(|e| match &e.kind {
            EventKind::SpecFinished {
                spec: s,
                status,
                reason,
                ..
            } if s == spec => Some((*status, reason.clone())),
            _ => None,
        })
    }
    fn started(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::AttemptStarted { spec, attempt, .. } => {
                    Some(format!("{spec}#{attempt}"))
                }
                _ => None,
            })
            .collect()
    }
    fn finished_count(&self, spec: &str) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::SpecFinished { spec: s, .. } if s == spec))
            .count()
    }
}

fn load(toml: &str) -> (Pipeline, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("spec-runner.toml"), toml).expect("write");
    let opts = LoadOptions {
        cwd: dir.path().to_path_buf(),
        ..LoadOptions::default()
    };
    (config::load(&opts).expect("valid pipeline"), dir)
}

/// Runs the pipeline on the scripted backend; fails the test if the run hangs.
fn run(toml: &str, interrupt_on: Option<Trigger>) -> Outcome {
    run_with_delay(toml, interrupt_on, Duration::ZERO)
}

/// Like [`run`], the interrupt coming `delay` after its trigger.
fn run_with_delay(toml: &str, interrupt_on: Option<Trigger>, delay: Duration) -> Outcome {
    run_resumed(toml, interrupt_on, delay, &[])
}

/// Like [`run_with_delay`], some specs' retry counts carried over from a killed runner.
fn run_resumed(
    toml: &str,
    interrupt_on: Option<Trigger>,
    delay: Duration,
    carried: &[(&str, u32)],
) -> Outcome {
    let (p, dir) = load(toml);
    let mut initial_retries = vec![0; p.specs.len()];
    for (name, n) in carried {
        initial_retries[p.index_of(name).expect("a spec of the pipeline")] = *n;
    }
    let inbox = Inbox::new();
    let sig_tx = inbox.sender();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let n = p.specs.len();
        let mut rec = Recorder {
            events: Vec::new(),
            interrupt_on: interrupt_on.map(|f| (f, sig_tx)),
            delay,
        };
        let opts = RunOptions {
            run_id: "test".into(),
            selected: vec![true; n],
            initial_retries,
            cycle_age: vec![None; n],
            previous_delay: vec![None; n],
            next_log: vec![1; n],
            up_to_date: 0,
            state: None,
            backend: Arc::new(Scripted),
            steering: None,
            reattach: Vec::new(),
            loops: vec![None; n],
        };
        let code = dispatcher::run(&p, opts, &mut rec, inbox);
        let _ = done_tx.send((code, rec.events));
    });
    let (code, events) = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run ended (no hang)");
    Outcome {
        code,
        events,
        _dir: dir,
    }
}

#[test]
fn every_spec_is_concluded_once_and_the_exit_code_follows() {
    let o = run(
        "retry_max_retries = 0\n[specs.a]\ncommand = \"ok\"\n[specs.b]\ncommand = \"code:3\"\n[specs.c]\ncommand = \"ok\"\ndepends_on = [\"b\"]\n",
        None,
    );
    assert_eq!(o.code, 1);
    assert_eq!(o.status("a").unwrap().0, Status::Succeeded);
    assert_eq!(
        o.status("b").unwrap(),
        (
            Status::Failed,
            Some("exit 3; retries exhausted (0/0)".into())
        )
    );
    assert_eq!(
        o.status("c").unwrap(),
        (Status::Skipped, Some("dependency `b` failed".into()))
    );
    for s in ["a", "b", "c"] {
        assert_eq!(o.finished_count(s), 1, "{s}");
    }
}

#[test]
fn fail_fast_with_a_running_dependency_ends_the_run() {
    let o = run(
        "jobs = 2\nfail_fast = true\nretry_max_retries = 0\n[specs.a]\ncommand = \"fail\"\n[specs.b]\ncommand = \"sleep:200\"\n[specs.c]\ncommand = \"ok\"\ndepends_on = [\"b\"]\n",
        None,
    );
    assert_eq!(o.code, 1);
    assert_eq!(o.status("b").unwrap().0, Status::Succeeded);
    assert_eq!(o.status("c").unwrap().0, Status::Skipped);
    assert!(!o.started().iter().any(|s| s.starts_with("c#")));
}

#[test]
fn fail_fast_fails_specs_waiting_to_retry_at_once() {
    let o = run(
        "jobs = 2\nfail_fast = true\n[specs.a]\ncommand = \"sleep:100\"\n[specs.a2]\ncommand = \"fail\"\nretry_max_retries = 0\ndepends_on = [\"a\"]\n[specs.b]\ncommand = \"fail-first\"\nretry_max_retries = 1\nretry_backoff_seconds = 3600\n",
        None,
    );
    assert_eq!(o.code, 1);
    let (status, reason) = o.status("b").unwrap();
    assert_eq!(status, Status::Failed);
    assert!(reason.unwrap().contains("fail_fast"));
}

#[test]
fn with_one_job_the_next_spec_runs_during_a_backoff() {
    let o = run(
        "jobs = 1\nretry_backoff_seconds = 0.05\n[specs.a]\ncommand = \"fail-first\"\n[specs.b]\ncommand = \"ok\"\n",
        None,
    );
    assert_eq!(o.code, 0);
    assert_eq!(o.started(), vec!["a#1", "b#1", "a#2"]);
}

/// A signal that comes before the dispatcher first waits (here: while it announces the
/// run) waits in its inbox: the run stops as soon as it starts, nothing new starts
/// after it, and the run exits 130.
#[test]
fn an_interrupt_before_the_first_wait_is_not_lost() {
    let o = run(
        "jobs = 1\n[specs.a]\ncommand = \"block\"\n[specs.b]\ncommand = \"ok\"\n",
        Some(Box::new(|e| matches!(e.kind, EventKind::RunStarted { .. }))),
    );
    assert_eq!(o.code, 130);
    assert_eq!(o.status("a").unwrap().0, Status::Stopped);
    assert_eq!(o.status("b"), None, "b never started: it stays pending");
    assert_eq!(o.started(), vec!["a#1"]);
}

#[test]
fn an_interrupt_during_a_backoff_stops_the_spec_and_exits_130() {
    let o = run(
        "retry_backoff_seconds = 3600\n[specs.a]\ncommand = \"fail\"\n",
        Some(Box::new(|e| {
            matches!(e.kind, EventKind::RetryScheduled { .. })
        })),
    );
    assert_eq!(o.code, 130);
    assert_eq!(
        o.status("a").unwrap(),
        (Status::Stopped, Some("stopped during backoff".into()))
    );
    assert_eq!(o.started(), vec!["a#1"]);
}

#[test]
fn an_interrupt_concludes_a_retry_waiting_for_a_slot() {
    // `b` takes the slot during `a`'s short backoff; the interrupt comes long after
    // `a`'s retry is due.
    let o = run_with_delay(
        "jobs = 1\nretry_backoff_seconds = 0.01\n[specs.a]\ncommand = \"fail\"\n[specs.b]\ncommand = \"block\"\n",
        Some(Box::new(
            |e| matches!(&e.kind, EventKind::AttemptStarted { spec, .. } if spec == "b"),
        )),
        Duration::from_secs(1),
    );
    assert_eq!(o.code, 130);
    assert_eq!(
        o.status("a").unwrap(),
        (Status::Stopped, Some("stopped before its retry".into()))
    );
    assert_eq!(o.status("b").unwrap().0, Status::Stopped);
}

#[test]
fn an_abort_rule_stops_the_run_as_a_failure() {
    let o = run(
        "jobs = 1\n[[retry_rules]]\nexit_codes = [9]\naction = \"abort\"\n[specs.a]\ncommand = \"code:9\"\n[specs.b]\ncommand = \"ok\"\n",
        None,
    );
    assert_eq!(o.code, 1);
    assert_eq!(o.status("a").unwrap().0, Status::Failed);
    assert_eq!(o.started(), vec!["a#1"], "nothing starts after an abort");
}

#[test]
fn the_retry_budget_is_shared_by_the_whole_run() {
    let o = run(
        "jobs = 1\nretry_budget = 3\nretry_max_retries = 10\nretry_backoff_seconds = 0\n[specs.a]\ncommand = \"fail\"\n[specs.b]\ncommand = \"fail\"\n",
        None,
    );
    assert_eq!(o.code, 1);
    let retries = o
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RetryScheduled { .. }))
        .count();
    assert_eq!(retries, 3);
}

#[test]
fn a_long_chain_of_dependents_is_skipped_iteratively() {
    use std::fmt::Write;
    let mut toml = String::from("retry_max_retries = 0\n[specs.s00000]\ncommand = \"fail\"\n");
    for i in 1..30_000 {
        let _ = write!(
            toml,
            "[specs.s{i:05}]\ncommand = \"ok\"\ndepends_on = [\"s{:05}\"]\n",
            i - 1
        );
    }
    let o = run(&toml, None);
    assert_eq!(o.code, 1);
    let skipped = o
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::SpecFinished {
                    status: Status::Skipped,
                    ..
                }
            )
        })
        .count();
    assert_eq!(skipped, 29_999);
}

impl Outcome {
    fn retries_of(&self, spec: &str) -> Option<u32> {
        self.events.iter().find_map(|e| match &e.kind {
            EventKind::SpecFinished {
                spec: s, retries, ..
            } if s == spec => Some(*retries),
            _ => None,
        })
    }
    fn run_retries(&self) -> Option<u32> {
        self.events.iter().find_map(|e| match &e.kind {
            EventKind::RunFinished { retries, .. } => Some(*retries),
            _ => None,
        })
    }
}

#[test]
fn a_due_retry_takes_the_next_slot_before_specs_not_yet_started() {
    // `a` fails; `b` runs during its backoff; when `b` ends, `a`'s retry is long due
    // and goes before `c` and `d`, which have not started.
    let o = run(
        "jobs = 1\nretry_backoff_seconds = 0.05\n[specs.a]\ncommand = \"fail-first\"\n[specs.b]\ncommand = \"sleep:300\"\n[specs.c]\ncommand = \"ok\"\n[specs.d]\ncommand = \"ok\"\n",
        None,
    );
    assert_eq!(o.code, 0);
    assert_eq!(o.started(), vec!["a#1", "b#1", "a#2", "c#1", "d#1"]);
}

#[test]
fn a_retry_carried_over_from_a_killed_runner_runs_before_specs_not_yet_started() {
    let o = run_resumed(
        "jobs = 1\n[specs.a]\ncommand = \"ok\"\n[specs.b]\ncommand = \"ok\"\n[specs.c]\ncommand = \"ok\"\n",
        None,
        Duration::ZERO,
        &[("c", 1)],
    );
    assert_eq!(o.code, 0);
    let started = o.started();
    assert!(started[0].starts_with("c#"), "{started:?}");
    assert_eq!(&started[1..], ["a#1", "b#1"]);
}

#[test]
fn a_retry_due_at_once_runs_before_queued_specs() {
    let o = run(
        "jobs = 1\nretry_backoff_seconds = 0\n[specs.a]\ncommand = \"fail-first\"\n[specs.b]\ncommand = \"ok\"\n[specs.c]\ncommand = \"ok\"\n",
        None,
    );
    assert_eq!(o.started(), vec!["a#1", "a#2", "b#1", "c#1"]);
}

#[test]
fn max_total_is_checked_when_a_retry_that_waited_for_a_slot_really_starts() {
    // The retry was allowed when scheduled (0.05 s in, cap 0.5 s), but `b` holds the only
    // slot for 1.5 s: starting then would break the cap, so `a` gives up instead.
    let o = run(
        "jobs = 1\nretry_backoff_seconds = 0.05\nretry_max_total_seconds = 0.5\n[specs.a]\ncommand = \"fail-first\"\n[specs.b]\ncommand = \"sleep:1500\"\n",
        None,
    );
    assert_eq!(o.code, 1);
    assert_eq!(o.started(), vec!["a#1", "b#1"]);
    let (status, reason) = o.status("a").unwrap();
    assert_eq!(status, Status::Failed);
    let reason = reason.unwrap();
    assert!(
        reason.starts_with("exit 1; next retry would start past retry_max_total_seconds (0.5s)"),
        "{reason}"
    );
    assert!(reason.contains("waited"), "{reason}");
    // The refused retry never ran: it is not counted.
    assert_eq!(o.retries_of("a"), Some(0));
    assert_eq!(o.run_retries(), Some(0));
}

#[test]
fn fail_fast_does_not_count_a_retry_it_cancelled() {
    let o = run(
        "jobs = 2\nfail_fast = true\n[specs.a]\ncommand = \"sleep:100\"\n[specs.a2]\ncommand = \"fail\"\nretry_max_retries = 0\ndepends_on = [\"a\"]\n[specs.b]\ncommand = \"fail-first\"\nretry_max_retries = 2\nretry_backoff_seconds = 3600\n",
        None,
    );
    assert_eq!(o.code, 1);
    assert_eq!(o.status("b").unwrap().0, Status::Failed);
    assert_eq!(o.retries_of("b"), Some(0), "the cancelled retry never ran");
    assert_eq!(o.run_retries(), Some(0));
}

/// With one slot, the next spec is handed to the worker ahead while the first runs;
/// the first's failure trips `fail_fast`, which takes that spec back: it never starts,
/// and it ends skipped like any spec that had not started.
#[test]
fn fail_fast_takes_back_the_spec_handed_out_ahead() {
    let o = run(
        "jobs = 1\nfail_fast = true\nretry_max_retries = 0\n[specs.a]\ncommand = \"fail\"\n[specs.b]\ncommand = \"ok\"\n",
        None,
    );
    assert_eq!(o.code, 1);
    assert_eq!(o.status("a").unwrap().0, Status::Failed);
    assert_eq!(o.status("b").unwrap().0, Status::Skipped);
    assert!(!o.started().iter().any(|s| s.starts_with("b#")));
    assert_eq!(o.finished_count("b"), 1);
}
