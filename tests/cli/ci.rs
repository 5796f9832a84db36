//! `apply` in CI: the `on_exhausted` hook.

use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

/// A hook that records its environment and working folder in `hooks.txt`, after a
/// pause: the run must wait for it.
const RECORDING_HOOK: &str = r#"on_exhausted = 'sleep 0.3; printf "%s|%s|%s|%s|%s\n" "$SPEC_RUNNER_SPEC" "$SPEC_RUNNER_REASON" "$SPEC_RUNNER_LOG" "$SPEC_RUNNER_ATTEMPTS" "$(pwd)" >> hooks.txt; echo notified'"#;

#[test]
fn on_exhausted_runs_once_per_spec_that_fails_for_good_with_its_variables() {
    let t = Test::with_pipeline(&format!(
        r#"
{RECORDING_HOOK}
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.crashes]
command = "exit 3"
[specs.nocwd]
command = "true"
cwd = "no/such/folder"
[specs.flaky]
command = '[ "$SPEC_RUNNER_ATTEMPT" = 2 ]'
[specs.fine]
command = "true"
"#
    ));
    let dir = t.path().canonicalize().unwrap();
    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(1);
    let ev = events(&run.stdout);
    let mut lines: Vec<Vec<String>> = t
        .read("hooks.txt")
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "one run per failed spec: {lines:?}");
    let crashes = &lines[0];
    assert_eq!(crashes[0], "crashes");
    assert!(crashes[1].starts_with("exit 3"), "{crashes:?}");
    assert!(
        crashes[2].ends_with(".spec-runner/logs/crashes/task_2.log"),
        "{crashes:?}"
    );
    assert_eq!(crashes[3], "2");
    assert_eq!(Path::new(&crashes[4]), dir, "runs in the pipeline's folder");
    let nocwd = &lines[1];
    assert_eq!(nocwd[0], "nocwd");
    assert!(nocwd[1].contains("could not start"), "{nocwd:?}");
    assert_eq!(nocwd[3], "1");

    let hooks = of(&ev, "hook_finished", None);
    assert_eq!(hooks.len(), 2, "{ev:#?}");
    for h in &hooks {
        assert_eq!(h["hook"], "on_exhausted");
        assert_eq!(h["exit_code"], 0);
        assert_eq!(h["reason"], Value::Null);
        let log = h["log"].as_str().unwrap();
        assert!(log.ends_with("on_exhausted_1.log"), "{log}");
        assert_eq!(std::fs::read_to_string(log).unwrap(), "notified\n");
    }
    // Hooks end before the run does, and are not specs.
    assert_eq!(ev.last().unwrap()["event"], "run_finished");
    assert_eq!(ev.last().unwrap()["failed"], 2);
}

#[test]
fn ctrl_c_ends_a_running_hook_like_an_attempt() {
    let t = Test::with_pipeline(
        r#"
on_exhausted = 'echo $$ > hookpid; exec sleep 1000'
retry_max_retries = 0
terminate_grace_seconds = 1
[specs.fails]
command = "exit 1"
"#,
    );
    let pidfile = t.path().join("hookpid");
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "spec_finished");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read_pids(&pidfile).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 1, "the hook started");
    bg.signal(Signal::INT);
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    assert!(
        wait_gone(&pids, Duration::from_secs(2)).is_empty(),
        "hook outlived Ctrl-C"
    );
    let ev = bg.rest();
    let hook = of(&ev, "hook_finished", Some("fails"));
    assert_eq!(hook[0]["reason"], "stopped", "{ev:#?}");
}

#[test]
fn an_abort_rule_still_runs_the_hook_of_the_spec_that_aborted() {
    let t = Test::with_pipeline(
        r#"
on_exhausted = "echo $SPEC_RUNNER_SPEC >> hooks.txt"
jobs = 1
[[retry_rules]]
exit_codes = [9]
action = "abort"
[specs.a-boom]
command = "exit 9"
[specs.b-never]
command = "true"
"#,
    );
    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(1);
    let ev = events(&run.stdout);
    assert_eq!(of(&ev, "hook_finished", Some("a-boom"))[0]["exit_code"], 0);
    assert_eq!(t.read("hooks.txt"), "a-boom\n");
}
