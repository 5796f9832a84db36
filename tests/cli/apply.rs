//! `spec-runner apply` with real processes: retries, backoff, timeouts, hangs,
//! process-group kills, signals, dependencies and output.

use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

fn apply_json(t: &Test) -> (Run, Vec<Value>) {
    let run = run_in(t, &["apply", "--format", "json"]);
    let ev = events(&run.stdout);
    (run, ev)
}

#[test]
fn fails_twice_then_passes_with_exponential_backoff() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 3
retry_backoff_seconds = 0.2
retry_backoff_multiplier = 2
[specs.flaky]
command = ["{}", "counter", "2"]
"#,
        fixture("fail_then_pass.sh")
    ));
    let dir = t.path().to_path_buf();
    let (run, ev) = apply_json(&t);
    run.code(0);
    let delays: Vec<u64> = of(&ev, "retry_scheduled", Some("flaky"))
        .iter()
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, vec![200, 400]);
    let retries: Vec<(u64, u64)> = of(&ev, "retry_scheduled", None)
        .iter()
        .map(|e| {
            (
                e["retry"].as_u64().unwrap(),
                e["max_retries"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(retries, vec![(1, 3), (2, 3)]);
    let logs = dir.join(".spec-runner/logs/flaky");
    for n in 1..=3 {
        assert!(
            logs.join(format!("task_{n}.log")).is_file(),
            "task_{n}.log missing"
        );
    }
    assert!(!logs.join("task_4.log").exists());
    let log3 = std::fs::read_to_string(logs.join("task_3.log")).unwrap();
    assert!(log3.contains("attempt 3: passing"), "{log3}");
    let fin = of(&ev, "spec_finished", Some("flaky"));
    assert_eq!(fin[0]["status"], "succeeded");
    assert_eq!(fin[0]["attempts"], 3);
    // Every failed attempt records its reason.
    let reasons: Vec<&Value> = of(&ev, "attempt_finished", Some("flaky"))
        .iter()
        .map(|e| &e["reason"])
        .collect();
    assert_eq!(
        reasons,
        vec![&Value::from("exit 1"), &Value::from("exit 1"), &Value::Null]
    );
}

#[test]
fn each_attempt_sees_its_identity_in_the_environment() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.who]
command = 'echo "$SPEC_RUNNER_SPEC $SPEC_RUNNER_ATTEMPT/$SPEC_RUNNER_MAX_ATTEMPTS run=$SPEC_RUNNER_RUN_ID x=$X"; [ "$SPEC_RUNNER_ATTEMPT" = 2 ]'
env = { X = "from-env" }
"#,
    );
    let dir = t.path().to_path_buf();
    let (run, ev) = apply_json(&t);
    run.code(0);
    let run_id = ev[0]["run_id"].as_str().unwrap().to_string();
    let log1 = std::fs::read_to_string(dir.join(".spec-runner/logs/who/task_1.log")).unwrap();
    let log2 = std::fs::read_to_string(dir.join(".spec-runner/logs/who/task_2.log")).unwrap();
    assert_eq!(log1.trim(), format!("who 1/2 run={run_id} x=from-env"));
    assert_eq!(log2.trim(), format!("who 2/2 run={run_id} x=from-env"));
}

#[test]
fn output_is_logged_byte_for_byte_with_stderr_and_invalid_utf8() {
    let t = Test::with_pipeline(
        r#"
[specs.bytes]
command = "printf 'out\n'; printf 'err\n' >&2; printf '\\377\\376 raw\n'"
"#,
    );
    let dir = t.path().to_path_buf();
    apply_json(&t).0.code(0);
    let bytes = std::fs::read(dir.join(".spec-runner/logs/bytes/task_1.log")).unwrap();
    assert_eq!(bytes, b"out\nerr\n\xff\xfe raw\n");
}

/// `argv[0]` is the program as the spec wrote it, not the path found on `PATH`, as a
/// shell passes it (`$0` of `sh -c`, a multi-call binary choosing its applet, usage
/// lines): `sh`, not `/usr/bin/sh`.
#[test]
fn argv0_is_the_program_as_written() {
    let t = Test::with_pipeline(
        r#"
[specs.zero]
command = ["sh", "-c", "printf %s \"$0\""]
"#,
    );
    let dir = t.path().to_path_buf();
    apply_json(&t).0.code(0);
    let log = std::fs::read_to_string(dir.join(".spec-runner/logs/zero/task_1.log")).unwrap();
    assert_eq!(log, "sh");
}

#[test]
fn a_command_that_cannot_start_fails_at_once_unretried() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 5
retry_backoff_seconds = 30
[specs.missing]
command = ["/nonexistent/program-xyz"]
[specs.nocwd]
command = "true"
cwd = "no/such/folder"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert!(of(&ev, "retry_scheduled", None).is_empty(), "{ev:#?}");
    for spec in ["missing", "nocwd"] {
        let fin = of(&ev, "spec_finished", Some(spec));
        assert_eq!(fin[0]["status"], "failed");
        assert_eq!(fin[0]["attempts"], 1);
        let reason = fin[0]["reason"].as_str().unwrap();
        assert!(reason.contains("could not start"), "{reason}");
    }
    let nocwd = of(&ev, "spec_finished", Some("nocwd"))[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(nocwd.contains("no/such/folder"), "{nocwd}");
    let missing = of(&ev, "spec_finished", Some("missing"))[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(missing.contains("program-xyz"), "{missing}");
}

#[test]
fn timeout_kills_the_whole_group_even_when_it_ignores_sigterm() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 0
timeout_seconds = 1
terminate_grace_seconds = 1
[specs.stubborn]
command = ["{}", "pids"]
"#,
        fixture("ignore_term_with_grandchild.sh")
    ));
    let pidfile = t.path().join("pids");
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "attempt_started");
    let started = std::time::Instant::now();
    let fin = bg.wait_for(Duration::from_secs(30), |e| {
        e["event"] == "attempt_finished"
    });
    let took = started.elapsed();
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 2, "fixture wrote leader and grandchild pids");
    assert!(
        wait_gone(&pids, Duration::from_millis(500)).is_empty(),
        "a process of the group survived: {pids:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "took {took:?}: timeout 1 s + grace 1 s"
    );
    assert!(
        fin["reason"].as_str().unwrap().contains("timed out"),
        "{fin}"
    );
    assert_eq!(fin["signal"], "SIGKILL");
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(1));
}

#[test]
fn a_silent_spec_is_killed_as_hung_and_retried() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
activity_timeout_seconds = 0.5
terminate_grace_seconds = 1
[specs.silent]
command = 'echo started; if [ "$SPEC_RUNNER_ATTEMPT" = 1 ]; then exec sleep 1000; fi; echo second attempt ok'
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(0);
    let attempts = of(&ev, "attempt_finished", Some("silent"));
    assert_eq!(attempts.len(), 2);
    let reason = attempts[0]["reason"].as_str().unwrap();
    assert!(reason.contains("hung"), "{reason}");
    assert_eq!(
        of(&ev, "retry_scheduled", Some("silent"))[0]["reason"]
            .as_str()
            .unwrap(),
        reason
    );
}

#[test]
fn ctrl_c_during_a_long_backoff_exits_130_at_once() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 3
retry_backoff_seconds = 30
[specs.crashes]
command = 'echo $$ >> pids; exit 3'
"#,
    );
    let pidfile = t.path().join("pids");
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "retry_scheduled");
    bg.signal(Signal::INT);
    let (code, took) = bg.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let ev = bg.rest();
    let fin = of(&ev, "spec_finished", Some("crashes"));
    assert_eq!(fin[0]["status"], "stopped");
    assert_eq!(
        of(&ev, "attempt_started", None).len(),
        1,
        "no retry after Ctrl-C"
    );
    assert!(wait_gone(&read_pids(&pidfile), Duration::from_millis(500)).is_empty());
}

#[test]
fn sigterm_stops_running_specs_gracefully_and_marks_them_stopped() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
[specs.long]
command = 'trap "echo got TERM; exit 0" TERM; echo $$ > pid; while :; do sleep 0.1; done'
"#,
    );
    let dir = t.path().to_path_buf();
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "attempt_started");
    // The pid file is written by the spec itself: wait for it so the trap is set.
    wait_pid(&dir.join("pid"));
    bg.signal(Signal::TERM);
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    let ev = bg.rest();
    assert_eq!(
        of(&ev, "spec_finished", Some("long"))[0]["status"],
        "stopped"
    );
    assert!(of(&ev, "retry_scheduled", None).is_empty());
    let log = std::fs::read_to_string(dir.join(".spec-runner/logs/long/task_1.log")).unwrap();
    assert!(
        log.contains("got TERM"),
        "graceful: the spec saw SIGTERM first: {log}"
    );
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 60
[specs.deaf]
command = 'trap "" TERM; echo $$ > pid; while :; do sleep 0.1; done'
"#,
    );
    let dir = t.path().to_path_buf();
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "attempt_started");
    wait_pid(&dir.join("pid"));
    bg.signal(Signal::INT);
    std::thread::sleep(Duration::from_millis(200));
    bg.signal(Signal::INT);
    let (code, took) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    assert!(
        took < Duration::from_secs(20),
        "the 60 s grace was not cut short: {took:?}"
    );
    assert!(wait_gone(&read_pids(&dir.join("pid")), Duration::from_secs(1)).is_empty());
}

#[test]
fn with_one_job_other_specs_run_while_one_waits_to_retry() {
    let t = Test::with_pipeline(
        r#"
jobs = 1
[specs.a-flaky]
command = '[ "$SPEC_RUNNER_ATTEMPT" = 2 ]'
retry_backoff_seconds = 1.5
[specs.b-steady]
command = "true"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(0);
    let order: Vec<String> = ev
        .iter()
        .filter(|e| e["event"] == "attempt_started" || e["event"] == "retry_scheduled")
        .map(|e| {
            format!(
                "{} {} {}",
                e["event"].as_str().unwrap(),
                e["spec"].as_str().unwrap(),
                e["attempt"]
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            "attempt_started a-flaky 1",
            "retry_scheduled a-flaky null",
            "attempt_started b-steady 1",
            "attempt_started a-flaky 2"
        ]
    );
}

#[test]
fn a_failed_dependency_skips_its_dependents_and_the_run_fails() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 0
[specs.base]
command = "exit 4"
[specs.mid]
command = "true"
depends_on = ["base"]
[specs.top]
command = "true"
depends_on = ["mid"]
[specs.other]
command = "true"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    let status = |s: &str| {
        of(&ev, "spec_finished", Some(s))[0]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("base"), "failed");
    assert_eq!(status("mid"), "skipped");
    assert_eq!(status("top"), "skipped");
    assert_eq!(status("other"), "succeeded");
    let why = of(&ev, "spec_finished", Some("mid"))[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("base"), "{why}");
    assert!(of(&ev, "attempt_started", Some("mid")).is_empty());
}

#[test]
fn naming_specs_runs_them_and_what_they_depend_on() {
    let t = Test::with_pipeline(
        r#"
[specs.a]
command = "true"
[specs.b]
command = "true"
depends_on = ["a"]
[specs.c]
command = "true"
"#,
    );
    let run = run_in(&t, &["apply", "b", "--format", "json"]);
    run.code(0);
    let ev = events(&run.stdout);
    let ran: Vec<&str> = of(&ev, "attempt_started", None)
        .iter()
        .map(|e| e["spec"].as_str().unwrap())
        .collect();
    assert_eq!(ran, vec!["a", "b"]);
    Test::with_pipeline("[specs.a]\ncommand = \"true\"\n")
        .args(&["apply", "nope"])
        .run()
        .code(2)
        .stderr_has("`nope`");
}

#[test]
fn rules_decide_fail_retry_and_abort() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 3
retry_backoff_seconds = 0
jobs = 1
[[retry_rules]]
exit_codes = [64]
action = "fail"
[[retry_rules]]
output = 'rate limit'
action = "retry"
backoff_seconds = 0.3
[specs.usage]
command = "exit 64"
[specs.limited]
command = 'if [ "$SPEC_RUNNER_ATTEMPT" = 1 ]; then echo "429: rate limit hit"; exit 1; fi'
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    let usage = of(&ev, "spec_finished", Some("usage"));
    assert_eq!(usage[0]["status"], "failed");
    assert_eq!(usage[0]["attempts"], 1);
    assert!(
        usage[0]["reason"].as_str().unwrap().contains("says fail"),
        "{}",
        usage[0]
    );
    let retry = of(&ev, "retry_scheduled", Some("limited"));
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0]["delay_ms"], 300, "the rule's own backoff");
    assert_eq!(
        of(&ev, "spec_finished", Some("limited"))[0]["status"],
        "succeeded"
    );

    let t = Test::with_pipeline(
        r#"
jobs = 1
retry_backoff_seconds = 0
[[retry_rules]]
exit_codes = [9]
action = "abort"
[specs.a-boom]
command = "exit 9"
[specs.b-never]
command = "true"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert!(
        of(&ev, "attempt_started", Some("b-never")).is_empty(),
        "abort stops the run"
    );
}

#[test]
fn retry_on_crash_false_and_the_run_wide_budget_limit_retries() {
    let t = Test::with_pipeline(
        r#"
retry_on_crash = false
[specs.once]
command = "exit 1"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert_eq!(of(&ev, "attempt_started", None).len(), 1);

    let t = Test::with_pipeline(
        r#"
retry_max_retries = 5
retry_backoff_seconds = 0
retry_budget = 2
jobs = 1
[specs.a]
command = "exit 1"
[specs.b]
command = "exit 1"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert_eq!(
        of(&ev, "retry_scheduled", None).len(),
        2,
        "budget of 2 retries across the run"
    );
    let reasons: Vec<String> = of(&ev, "spec_finished", None)
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(reasons.iter().any(|r| r.contains("budget")), "{reasons:?}");
}

#[test]
fn fail_fast_stops_starting_new_specs() {
    let t = Test::with_pipeline(
        r#"
jobs = 1
fail_fast = true
retry_max_retries = 0
[specs.a]
command = "exit 1"
[specs.b]
command = "true"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert!(of(&ev, "attempt_started", Some("b")).is_empty());
    assert_eq!(of(&ev, "spec_finished", Some("b"))[0]["status"], "skipped");
}

#[test]
fn json_events_carry_the_documented_fields() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.s]
command = '[ "$SPEC_RUNNER_ATTEMPT" = 2 ] || kill -SEGV $$'
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(0);
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        vec![
            "run_started",
            "attempt_started",
            "attempt_finished",
            "retry_scheduled",
            "attempt_started",
            "attempt_finished",
            "spec_finished",
            "run_finished"
        ]
    );
    for e in &ev {
        let ts = e["ts"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
    let first = &ev[2];
    assert_eq!(first["signal"], "SIGSEGV");
    assert_eq!(first["exit_code"], Value::Null);
    assert!(first["duration_ms"].is_u64());
    assert!(first["log"].as_str().unwrap().ends_with("task_1.log"));
    assert_eq!(ev[3]["delay_ms"], 0);
    assert_eq!(ev[7]["exit_code"], 0);
}

#[test]
fn plain_output_says_retry_n_of_max_and_shows_the_failing_log() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.bad]
command = "echo first line; echo the real error >&2; exit 2"
"#,
    );
    let run = run_in(&t, &["apply"]);
    run.code(1);
    run.stderr_has("RUNNING (retry 1/1)")
        .stderr_has("the real error")
        .stderr_has("task_2.log");
    assert!(
        !run.stderr.contains('\x1b'),
        "no escape codes off a terminal:\n{}",
        run.stderr
    );
    run.stderr_has("0 succeeded, 1 failed");
}

#[test]
fn fail_fast_skips_what_a_running_spec_unblocks_and_the_run_ends() {
    let t = Test::with_pipeline(
        r#"
jobs = 2
fail_fast = true
retry_max_retries = 0
[specs.a]
command = "exit 1"
[specs.b]
command = "sleep 1"
[specs.c]
command = "true"
depends_on = ["b"]
"#,
    );
    let mut bg = Background::apply(&t);
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(1),
        "the run ends with a failure, it does not hang"
    );
    let ev = bg.rest();
    let status = |s: &str| {
        of(&ev, "spec_finished", Some(s))[0]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("a"), "failed");
    assert_eq!(status("b"), "succeeded", "a running spec finishes");
    assert_eq!(status("c"), "skipped");
    assert!(of(&ev, "attempt_started", Some("c")).is_empty());
}

#[test]
fn fail_fast_ends_pending_backoffs_at_once_as_failed() {
    let t = Test::with_pipeline(
        r#"
jobs = 2
fail_fast = true
[specs.a]
command = "sleep 0.5; exit 1"
retry_max_retries = 0
[specs.b]
command = '[ "$SPEC_RUNNER_ATTEMPT" = 2 ]'
retry_max_retries = 1
retry_backoff_seconds = 600
"#,
    );
    let mut bg = Background::apply(&t);
    let (code, took) = bg.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(1));
    assert!(
        took < Duration::from_secs(60),
        "did not wait out the 600 s backoff: {took:?}"
    );
    let ev = bg.rest();
    let b = of(&ev, "spec_finished", Some("b"));
    assert_eq!(b[0]["status"], "failed");
    assert!(
        b[0]["reason"].as_str().unwrap().contains("fail_fast"),
        "{}",
        b[0]
    );
    assert_eq!(of(&ev, "attempt_started", Some("b")).len(), 1);
    // The cancelled retry never ran: neither the event nor the state counts it.
    assert_eq!(b[0]["retries"], 0, "{}", b[0]);
    assert_eq!(ev.last().unwrap()["retries"], 0);
    let state: Value = serde_json::from_str(&t.read(".spec-runner/state.json")).unwrap();
    assert_eq!(state["specs"]["b"]["retry_count"], 0);
    assert!(state["specs"]["b"]["last_retry_at"].is_null());
}

#[test]
fn a_due_retry_runs_before_specs_that_have_not_started() {
    // One slot: `a-flaky` fails, `b-slow` takes the slot during its short backoff; when
    // `b-slow` ends, the retry (long due) goes before `c` and `d`.
    let t = Test::with_pipeline(&format!(
        r#"
jobs = 1
[specs.a-flaky]
command = ["{}", "counter", "1"]
retry_backoff_seconds = 0.1
[specs.b-slow]
command = "sleep 1"
[specs.c]
command = "true"
[specs.d]
command = "true"
"#,
        fixture("fail_then_pass.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(0);
    let order: Vec<String> = of(&ev, "attempt_started", None)
        .iter()
        .map(|e| format!("{}#{}", e["spec"].as_str().unwrap(), e["attempt"]))
        .collect();
    // (Specs not yet started go in the pipeline's order: by name.)
    assert_eq!(order, ["a-flaky#1", "b-slow#1", "a-flaky#2", "c#1", "d#1"]);
}

#[test]
fn ctrl_c_stops_a_retry_that_was_due_but_waiting_for_a_slot() {
    let t = Test::with_pipeline(
        r#"
jobs = 1
retry_max_retries = 2
terminate_grace_seconds = 2
[specs.a-flaky]
command = "exit 1"
retry_backoff_seconds = 0.2
[specs.b-long]
command = "sleep 60"
"#,
    );
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| {
        e["event"] == "attempt_started" && e["spec"] == "b-long"
    });
    // a-flaky's 0.2 s backoff ends while b-long holds the only slot.
    std::thread::sleep(Duration::from_millis(800));
    bg.signal(Signal::INT);
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    let ev = bg.rest();
    let a = of(&ev, "spec_finished", Some("a-flaky"));
    assert_eq!(a.len(), 1, "every spec that ran is concluded: {ev:#?}");
    assert_eq!(a[0]["status"], "stopped");
    assert_eq!(
        of(&ev, "spec_finished", Some("b-long"))[0]["status"],
        "stopped"
    );
    let state: Value = serde_json::from_str(&t.read(".spec-runner/state.json")).unwrap();
    assert_eq!(state["specs"]["a-flaky"]["status"], "stopped");
}

#[test]
fn a_long_chain_behind_a_failed_spec_is_skipped_without_deep_recursion() {
    use std::fmt::Write;
    let mut toml = String::from("retry_max_retries = 0\n[specs.s00000]\ncommand = \"exit 1\"\n");
    for i in 1..20_000 {
        let _ = write!(
            toml,
            "[specs.s{i:05}]\ncommand = \"true\"\ndepends_on = [\"s{:05}\"]\n",
            i - 1
        );
    }
    let t = Test::with_pipeline(&toml);
    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(1);
    let ev = events(&run.stdout);
    assert_eq!(of(&ev, "spec_finished", None).len(), 20_000);
    assert_eq!(ev.last().unwrap()["skipped"], 19_999);
}

#[test]
fn a_retry_that_waited_for_a_slot_past_max_total_gives_up_instead_of_starting_late() {
    // Allowed when scheduled (0.1 s in, cap 1 s); `b-slow` holds the only slot for 3 s.
    let t = Test::with_pipeline(
        r#"
jobs = 1
[specs.a-flaky]
command = "exit 1"
retry_backoff_seconds = 0.1
retry_max_total_seconds = 1
[specs.b-slow]
command = "sleep 3"
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert_eq!(of(&ev, "attempt_started", Some("a-flaky")).len(), 1);
    let fin = of(&ev, "spec_finished", Some("a-flaky"));
    let reason = fin[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("past retry_max_total_seconds (1s): it waited"),
        "{reason}"
    );
    assert_eq!(fin[0]["retries"], 0, "the refused retry is not counted");
    let state: Value = serde_json::from_str(&t.read(".spec-runner/state.json")).unwrap();
    assert_eq!(state["specs"]["a-flaky"]["retry_count"], 0);
    assert_eq!(
        of(&ev, "spec_finished", Some("b-slow"))[0]["status"],
        "succeeded"
    );
}
