//! A live run you can watch and steer: the control socket, `status`, `stop SPEC`,
//! `restart SPEC`, `logs --follow` against a running `apply`, with real processes.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::procs::*;

/// A background run (killed with it if the test fails half-way).
fn apply(t: &Test) -> Background {
    Background::apply(t)
}

/// A command that holds its spec until the test writes the file `go`.
const GATE: &str = "while [ ! -f go ]; do sleep 0.05; done";

/// A pipeline of `head`, the spec `gate` ([`GATE`]) and `specs` (name, command) that
/// all wait for it.
fn behind_gate(head: &str, specs: impl IntoIterator<Item = (String, &'static str)>) -> String {
    let mut toml = format!("{head}[specs.gate]\ncommand = '{GATE}'\n");
    for (name, cmd) in specs {
        toml.push_str(&format!(
            "[specs.{name}]\ncommand = '{cmd}'\ndepends_on = [\"gate\"]\n"
        ));
    }
    toml
}

/// The whole JSON lines of a stream (a dropped client's last line may be cut).
fn json_lines(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// Waits (generously) for the run's socket to accept.
fn connect(t: &Test) -> Client {
    let path = t.path().join(".spec-runner/control.sock");
    let s = wait_until(Duration::from_secs(60), "the socket never served", || {
        UnixStream::connect(&path).ok()
    });
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    Client {
        r: BufReader::new(s.try_clone().unwrap()),
        w: s,
    }
}

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }
    fn line(&mut self) -> Option<Value> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"))),
        }
    }
    /// Sends a request and returns its reply (events before it are kept in `seen`).
    fn ask(&mut self, req: Value, seen: &mut Vec<Value>) -> Value {
        let id = req["id"].clone();
        let mut line = req.to_string();
        line.push('\n');
        self.send_raw(line.as_bytes());
        loop {
            let v = self.line().expect("a reply");
            if v.get("event").is_some() {
                seen.push(v);
            } else if v["id"] == id {
                return v;
            }
        }
    }
    fn req(&mut self, req: Value) -> Value {
        self.ask(req, &mut Vec::new())
    }
    /// Whole lines until the stream ends (a dropped client's last line may be cut).
    fn rest(&mut self) -> Vec<Value> {
        let mut all = Vec::new();
        let _ = self.r.read_to_end(&mut all);
        json_lines(&all)
    }
}

#[test]
fn status_is_live_with_the_pid_of_a_running_spec_and_the_next_retry_of_one_in_backoff() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
[specs.long]
command = 'echo $$ > pid; exec sleep 300'
[specs.flaky]
command = 'exit 1'
retry_max_retries = 3
retry_backoff_seconds = 600
retry_max_backoff_seconds = 600
"#,
    );
    let mut bg = apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "retry_scheduled");
    let pid = wait_pid(&t.path().join("pid"));
    // The shell may write its pid file before the run has taken in that the attempt
    // started (a loaded machine): ask until the run says so, as a user would.
    let json = wait_to_see(
        Duration::from_secs(60),
        "status never showed `long` running",
        || run_in(&t, &["status", "--format", "json"]).code(0).json(),
        |json| json["specs"]["long"]["status"] == "running",
    );
    let long = &json["specs"]["long"];
    assert_eq!(long["status"], "running");
    assert_eq!(long["pid"], pid);
    assert!(long["elapsed_ms"].as_u64().is_some(), "{long}");
    let flaky = &json["specs"]["flaky"];
    assert_eq!(flaky["status"], "backoff");
    assert_eq!(flaky["retry_count"], 1);
    assert_eq!(flaky["max_retries"], 3);
    let next: chrono::DateTime<chrono::Utc> = flaky["next_retry_at"]
        .as_str()
        .expect("a next retry time")
        .parse()
        .unwrap();
    let left = next - chrono::Utc::now();
    assert!(
        left > chrono::Duration::seconds(500) && left <= chrono::Duration::seconds(600),
        "{left}"
    );
    assert_eq!(json["running_pid"], bg.child.id());

    let text = run_in(&t, &["status"]).code(0).stdout.clone();
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .to_string()
    };
    assert!(row("long").contains(&format!("pid {pid}")), "{text}");
    assert!(row("flaky").contains("retry 1/3 in"), "{text}");

    run_in(&t, &["stop"]).code(0);
    assert_eq!(bg.wait_exit(Duration::from_secs(60)).0, Some(130));
}

#[test]
fn restart_during_a_long_backoff_runs_the_spec_now_from_retry_0_and_leaves_the_others_alone() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
[specs.long]
command = 'echo $$ > pid; exec sleep 300'
[specs.flaky]
command = 'echo "attempt $SPEC_RUNNER_ATTEMPT"; test -f fixed'
retry_max_retries = 3
retry_backoff_seconds = 600
"#,
    );
    let mut bg = apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "retry_scheduled");
    let pid = wait_pid(&t.path().join("pid"));
    t.write("fixed", "");
    let asked = Instant::now();
    run_in(&t, &["restart", "flaky"])
        .code(0)
        .stderr_has("restarted `flaky`")
        .stderr_has("logs flaky --follow");
    let started = bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "attempt_started" && e["spec"] == "flaky"
    });
    // The backoff had ten minutes left: the restart did not wait for it.
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(started["attempt"], 1);
    assert_eq!(started["retry"], 0);
    let fin = bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "spec_finished" && e["spec"] == "flaky"
    });
    assert_eq!(fin["status"], "succeeded");
    assert!(
        of(&bg.seen, "spec_restarted", Some("flaky")).len() == 1,
        "{:#?}",
        bg.seen
    );
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    assert_eq!(json["specs"]["flaky"]["retry_count"], 0);
    assert_eq!(json["specs"]["flaky"]["status"], "succeeded");
    // The other spec never noticed.
    assert!(alive(pid));
    assert!(of(&bg.seen, "attempt_finished", Some("long")).is_empty());
    assert_eq!(json["specs"]["long"]["status"], "running");

    run_in(&t, &["stop"]).code(0);
    bg.wait_exit(Duration::from_secs(60));
}

#[test]
fn restart_of_a_running_spec_ends_its_attempt_without_counting_it_and_refuses_unmet_dependencies() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
retry_max_retries = 2
[specs.gate]
command = 'echo $$ >> pids; exec sleep 300'
[specs.after]
command = 'true'
depends_on = ["gate"]
"#,
    );
    let mut bg = apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "attempt_started");
    let first = wait_pid(&t.path().join("pids"));
    run_in(&t, &["restart", "after"])
        .code(2)
        .stderr_has("cannot restart `after`")
        .stderr_has("`gate` (running)");
    run_in(&t, &["restart", "gate"]).code(0);
    let again = bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "attempt_started"
            && e["attempt"] == 1
            && e["log"].as_str().unwrap().ends_with("task_2.log")
    });
    assert_eq!(again["retry"], 0);
    assert!(wait_gone(&[first], Duration::from_secs(30)).is_empty());
    let ended = of(&bg.seen, "attempt_finished", Some("gate"));
    assert_eq!(ended.len(), 1);
    assert!(
        ended[0]["reason"].as_str().unwrap().contains("restart"),
        "{ended:?}"
    );
    assert!(
        of(&bg.seen, "retry_scheduled", None).is_empty(),
        "not a retry"
    );
    run_in(&t, &["stop"]).code(0);
    bg.wait_exit(Duration::from_secs(60));
}

#[test]
fn stop_spec_ends_its_process_group_skips_its_dependents_and_the_run_goes_on() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
retry_max_retries = 3
retry_backoff_seconds = 0
[specs.doomed]
command = 'sleep 300 & echo $! > pids; echo $$ >> pids; wait'
[specs.after]
command = 'true'
depends_on = ["doomed"]
[specs.other]
command = 'while [ ! -f go ]; do sleep 0.05; done'
"#,
    );
    let mut bg = apply(&t);
    let pids = wait_until(Duration::from_secs(60), "no pids", || {
        Some(read_pids(&t.path().join("pids"))).filter(|p| p.len() == 2)
    });
    run_in(&t, &["stop", "doomed"])
        .code(0)
        .stderr_has("doomed: stopped");
    assert!(
        wait_gone(&pids, Duration::from_secs(30)).is_empty(),
        "the whole group ends"
    );
    run_in(&t, &["stop", "nope"]).code(2).stderr_has("`nope`");
    // The others go on.
    t.write("go", "");
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    let ev = bg.rest();
    assert_eq!(
        code,
        Some(1),
        "a stopped spec and a skipped one: not a success"
    );
    assert_eq!(
        of(&ev, "spec_finished", Some("doomed"))[0]["status"],
        "stopped"
    );
    assert!(of(&ev, "retry_scheduled", None).is_empty(), "never retried");
    let after = of(&ev, "spec_finished", Some("after"));
    assert_eq!(after[0]["status"], "skipped");
    assert!(after[0]["reason"].as_str().unwrap().contains("doomed"));
    assert_eq!(
        of(&ev, "spec_finished", Some("other"))[0]["status"],
        "succeeded"
    );
}

/// With one slot, the next spec is handed to the workers ahead of the running one's
/// end; `stop` of that spec from a second process takes it back: it never starts (no
/// process, no log), it ends stopped as a spec that had not started, and the run goes on.
#[test]
fn stop_of_the_spec_next_in_line_keeps_it_from_starting() {
    let t = Test::with_pipeline(
        r#"
jobs = 1
[specs.first]
command = 'touch started; while [ ! -f go ]; do sleep 0.05; done'
[specs.second]
command = 'touch ran'
"#,
    );
    let mut bg = apply(&t);
    wait_until(Duration::from_secs(60), "first never started", || {
        t.path().join("started").exists().then_some(())
    });
    run_in(&t, &["stop", "second"])
        .code(0)
        .stderr_has("stopped `second`");
    t.write("go", "");
    bg.wait_exit(Duration::from_secs(60));
    let ev = bg.rest();
    assert!(!t.path().join("ran").exists(), "second never ran");
    assert!(of(&ev, "attempt_started", Some("second")).is_empty());
    assert_eq!(
        of(&ev, "spec_finished", Some("second"))[0]["status"],
        "stopped"
    );
    assert_eq!(
        of(&ev, "spec_finished", Some("first"))[0]["status"],
        "succeeded"
    );
}

#[test]
fn two_subscribers_each_see_every_event_once_after_their_snapshot() {
    let toml = behind_gate(
        "retry_max_retries = 1\nretry_backoff_seconds = 0\njobs = 3\n",
        (0..20).map(|i| (format!("s{i}"), if i % 5 == 0 { "exit 1" } else { "true" })),
    );
    let t = Test::with_pipeline(&toml);
    let mut bg = apply(&t);
    let mut a = connect(&t);
    let mut b = connect(&t);
    let sa = a.req(json!({"v": 1, "id": 1, "op": "subscribe"}));
    let sb = b.req(json!({"v": 1, "id": "b", "op": "subscribe"}));
    assert_eq!(sa["ok"], true);
    assert_eq!(sb["id"], "b");
    assert_eq!(sa["snapshot"]["specs"]["s3"]["status"], "pending");
    t.write("go", "");
    bg.wait_exit(Duration::from_secs(120));
    let all = bg.rest();
    let key = |e: &Value| {
        (
            e["ts"].clone(),
            e["event"].clone(),
            e["spec"].clone(),
            e["attempt"].clone(),
        )
    };
    let all: Vec<_> = all.iter().map(key).collect();
    for (name, mut c) in [("a", a), ("b", b)] {
        let got: Vec<_> = c.rest().iter().map(key).collect();
        assert!(got.len() > 40, "{name}: {got:?}");
        assert_eq!(got.last().unwrap().1, "run_finished");
        // Exactly the events after the snapshot: no gap, no duplicate.
        assert_eq!(got[..], all[all.len() - got.len()..], "{name}");
        assert!(
            got.iter().any(|k| k.1 == "attempt_started" && k.2 == "s0"),
            "{name}"
        );
    }
}

#[test]
fn bad_requests_get_errors_and_never_disturb_the_run() {
    let t = Test::with_pipeline(&behind_gate("", [("after".to_string(), "true")]));
    let mut bg = apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "attempt_started");
    // One that connects, subscribes and never reads; one that never says anything.
    let mut lazy = connect(&t);
    lazy.send_raw(b"{\"op\":\"subscribe\"}\n");
    let _silent = connect(&t);

    let mut c = connect(&t);
    let err = |v: &Value| v["error"].as_str().unwrap_or_default().to_string();
    c.send_raw(b"this is not json\n");
    let r = c.line().unwrap();
    assert_eq!(r["ok"], false);
    assert!(err(&r).contains("not JSON"), "{r}");
    c.send_raw(b"{\"id\":1,\"op\":\"\xff\xfe\"}\n");
    assert!(err(&c.line().unwrap()).contains("UTF-8"));
    let r = c.req(json!({"v": 1, "id": 2, "op": "dance"}));
    assert!(err(&r).contains("unknown op `dance`"), "{r}");
    let r = c.req(json!({"v": 1, "id": 3, "op": "stop", "specs": ["nope"]}));
    assert_eq!(r["id"], 3);
    assert!(err(&r).contains("`nope`"), "{r}");
    let r = c.req(json!({"v": 1, "id": 4, "op": "restart"}));
    assert!(err(&r).contains("specs"), "{r}");
    let r = c.req(json!({"v": 99, "id": 5, "op": "snapshot"}));
    assert!(err(&r).contains("version"), "{r}");
    // The connection still works after all that.
    // The run may not have taken in `gate`'s start yet when its event is printed
    // (a loaded machine): ask until it has.
    let r = wait_to_see(
        Duration::from_secs(60),
        "the snapshot never showed `gate` running",
        || {
            let r = c.req(json!({"v": 1, "id": 6, "op": "snapshot", "extra": [1, 2]}));
            assert_eq!(r["ok"], true);
            r
        },
        |r| r["snapshot"]["specs"]["gate"]["status"] == "running",
    );
    assert_eq!(r["snapshot"]["specs"]["gate"]["status"], "running");

    // A 100 KB line: an error, then the connection is closed.
    let mut big = connect(&t);
    let mut line = vec![b'x'; 100 * 1024];
    line.push(b'\n');
    let _ = big.w.write_all(&line);
    let r = big.line().expect("an error reply");
    assert!(err(&r).contains("longer than"), "{r}");
    let mut rest = Vec::new();
    let _ = big.r.read_to_end(&mut rest);

    t.write("go", "");
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let ev = bg.rest();
    assert_eq!(
        of(&ev, "spec_finished", Some("after"))[0]["status"],
        "succeeded"
    );
    assert!(
        !t.path().join(".spec-runner/control.sock").exists(),
        "the socket is removed"
    );
}

/// A client that subscribes and then never reads lags behind by more than its bounded
/// queue in a run of 1,000 quick specs: it is dropped (its stream ends before
/// `run_finished`) and the run goes on to succeed — the dispatcher never waits for a
/// client. What such a client costs the run is measured by `bench/live.sh` (see
/// docs/PERFORMANCE.md), not timed here; the 600 s wait only guards against a hang.
#[test]
fn a_client_that_never_reads_is_dropped_and_a_thousand_spec_run_goes_on_to_succeed() {
    // A gate holds the 1,000 specs back until the client has subscribed, so all their
    // events come after the subscription (no race with a quick run).
    let toml = behind_gate(
        "jobs = 4\n",
        (0..1000).map(|i| (format!("s{i:04}"), "true")),
    );
    let t = Test::with_pipeline(&toml);
    let mut bg = Background::spawn(&t, &["apply", "--format", "json", "--fresh"]);
    let mut lazy = connect(&t);
    lazy.send_raw(b"{\"v\":1,\"id\":1,\"op\":\"subscribe\"}\n");
    // Its reply (the snapshot) says the subscription is in; from here on the client
    // reads nothing while the run goes on.
    let reply = lazy.line().expect("the subscription's reply");
    assert_eq!(reply["ok"], true, "{reply}");
    t.write("go", "");
    let (code, _) = bg.wait_exit(Duration::from_secs(600));
    assert_eq!(code, Some(0), "the run succeeded");
    let ev = bg.rest();
    let finished = of(&ev, "spec_finished", None);
    assert_eq!(finished.len(), 1001);
    assert!(finished.iter().all(|e| e["status"] == "succeeded"));
    assert_eq!(of(&ev, "run_finished", None).len(), 1);

    // Only now does the client read: its stream has ended, before `run_finished`.
    let mut all = Vec::new();
    lazy.r
        .read_to_end(&mut all)
        .expect("the stream ends (not a read timeout)");
    let lines = json_lines(&all);
    assert!(
        !lines.iter().any(|e| e["event"] == "run_finished"),
        "the lagging client was dropped before the end ({} lines)",
        lines.len()
    );
}

#[test]
fn logs_follow_moves_on_to_the_next_attempt_and_ends_with_the_spec() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.s]
command = 'echo "start $SPEC_RUNNER_ATTEMPT"; while [ ! -f go$SPEC_RUNNER_ATTEMPT ]; do sleep 0.05; done; echo "end $SPEC_RUNNER_ATTEMPT"; [ "$SPEC_RUNNER_ATTEMPT" = 2 ]'
"#,
    );
    let mut bg = apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "attempt_started");
    connect(&t);
    let mut follow = t
        .command()
        .args(["logs", "s", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follow.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut next = |lines: &mut Vec<String>| {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        lines.push(l);
    };
    // Each step waits for what the follower printed: no racing sleeps.
    next(&mut lines);
    t.write("go1", "");
    next(&mut lines);
    next(&mut lines);
    t.write("go2", "");
    next(&mut lines);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(follow.wait().unwrap().code(), Some(0));
    assert_eq!(lines.concat() + &rest, "start 1\nend 1\nstart 2\nend 2\n");
    assert_eq!(bg.wait_exit(Duration::from_secs(60)).0, Some(0));
}

#[test]
fn apply_detach_returns_once_the_run_serves_and_stop_ends_it() {
    let t = Test::with_pipeline(
        "terminate_grace_seconds = 5\n[specs.long]\ncommand = 'echo $$ > pid; exec sleep 300'\n",
    );
    let r = run_in(&t, &["apply", "--detach"]);
    r.code(0)
        .stdout_has("started in the background")
        .stdout_has("spec-runner tui")
        .stdout_has(".spec-runner/detached.log");
    let pid: u32 = r
        .stdout
        .split("pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", r.stdout));
    assert!(alive(pid));
    // It returned once the run was serving: status is live at once.
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    assert_eq!(json["running_pid"], pid);
    let spec_pid = wait_pid(&t.path().join("pid"));
    // Everything else as `apply`: a second run is refused, with the first's output shown.
    run_in(&t, &["apply", "--detach"])
        .code(2)
        .stderr_has(&format!("pid {pid}"));
    run_in(&t, &["stop"]).code(0);
    assert!(wait_gone(&[pid, spec_pid], Duration::from_secs(30)).is_empty());
    assert!(t.read(".spec-runner/detached.log").contains("STOPPED"));
}

#[test]
fn restarting_the_dependency_in_a_live_run_runs_the_spec_it_made_skip() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
retry_max_retries = 0
[specs.gate]
command = 'while [ ! -f go ]; do sleep 0.05; done'
[specs.build]
command = 'test -f fixed'
[specs.deploy]
command = 'true'
depends_on = ["build"]
"#,
    );
    let mut bg = apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "spec_finished" && e["spec"] == "deploy"
    });
    connect(&t);
    run_in(&t, &["restart", "deploy"])
        .code(2)
        .stderr_has("`build` (failed)")
        .stderr_has("--with-deps");
    t.write("fixed", "");
    run_in(&t, &["restart", "build"]).code(0);
    let done = bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "spec_finished" && e["spec"] == "deploy"
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    t.write("go", "");
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0));
}

#[test]
fn restart_with_deps_in_a_live_run_restarts_the_failed_chain_first_then_the_spec() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
retry_max_retries = 0
[specs.gate]
command = 'while [ ! -f go ]; do sleep 0.05; done'
[specs.lint]
command = 'test -f fixed'
[specs.build]
command = 'true'
depends_on = ["lint"]
[specs.deploy]
command = 'true'
depends_on = ["build"]
"#,
    );
    let mut bg = apply(&t);
    let skipped = bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "spec_finished" && e["spec"] == "deploy"
    });
    assert_eq!(skipped["status"], "skipped", "{skipped}");
    connect(&t);
    t.write("fixed", "");
    run_in(&t, &["restart", "deploy", "--with-deps"])
        .code(0)
        .stderr_has("restarted dependencies `lint`");
    // The chain runs again in dependency order, each after the one it needs.
    let mut order = Vec::new();
    while order.len() < 3 {
        let e = bg.wait_for(Duration::from_secs(60), |e| {
            e["event"] == "spec_finished" && e["spec"] != "gate"
        });
        assert_eq!(e["status"], "succeeded", "{e}");
        order.push(e["spec"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(order, ["lint", "build", "deploy"]);
    // Nothing left to restart first: a plain restart of a met spec, and `--with-deps`
    // says there was nothing to add.
    run_in(&t, &["restart", "deploy", "--with-deps"])
        .code(0)
        .stderr_lacks("dependencies `");
    bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "spec_finished" && e["spec"] == "deploy"
    });
    t.write("go", "");
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    for spec in ["lint", "build", "deploy"] {
        assert_eq!(json["specs"][spec]["status"], "succeeded", "{json}");
    }
}

#[test]
fn the_live_view_shows_only_this_pipelines_specs_when_another_shares_the_state_folder() {
    let t = Test::with_pipeline(
        "terminate_grace_seconds = 5\n[specs.long]\ncommand = 'echo $$ > pid; exec sleep 300'\n",
    );
    t.write("other.toml", "[specs.elsewhere]\ncommand = 'true'\n");
    run_in(&t, &["-f", "other.toml", "apply"]).code(0);
    let mut bg = apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "attempt_started");
    let mut c = connect(&t);
    let snap = c.req(json!({"v": 1, "id": 1, "op": "snapshot"}));
    assert!(snap["snapshot"]["specs"]["long"].is_object(), "{snap}");
    assert!(snap["snapshot"]["specs"]["elsewhere"].is_null(), "{snap}");
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    assert!(json["specs"]["elsewhere"].is_null(), "{json}");
    run_in(&t, &["stop"]).code(0);
    assert_eq!(bg.wait_exit(Duration::from_secs(60)).0, Some(130));
}
