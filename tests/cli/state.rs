//! Durable state: the lock, resume, a runner killed mid-run, stop, restart, logs,
//! corrupt and newer state files.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rustix::process::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

fn state(t: &Test) -> Value {
    serde_json::from_str(&t.read(".spec-runner/state.json")).expect("state.json parses")
}

/// Waits (generously) until the state file on disk satisfies `ready`: what the test
/// checks next must already be durable when, say, the runner is killed.
fn wait_for_state(t: &Test, what: &str, ready: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready(&state(t)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the state never showed {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LONG: &str = r#"
terminate_grace_seconds = 5
[specs.long]
command = 'trap "exit 0" TERM; echo $$ > pid; while :; do sleep 0.1; done'
"#;

#[test]
fn a_second_apply_is_refused_naming_the_holder_and_stop_ends_the_first() {
    let t = Test::with_pipeline(LONG);
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "attempt_started");
    wait_pid(&t.path().join("pid"));

    let second = run_in(&t, &["apply"]);
    second.code(2).stderr_has(&format!("pid {}", bg.child.id()));

    let stop = run_in(&t, &["stop"]);
    stop.code(0);
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    let ev = bg.rest();
    assert_eq!(
        of(&ev, "spec_finished", Some("long"))[0]["status"],
        "stopped"
    );
    assert!(
        of(&ev, "retry_scheduled", None).is_empty(),
        "a stopped spec is never retried"
    );
    assert_eq!(state(&t)["specs"]["long"]["status"], "stopped");
    run_in(&t, &["stop"])
        .code(0)
        .stderr_has("no apply is running");
}

#[test]
fn the_lock_dies_with_a_killed_runner_and_its_group_is_ended_on_resume() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 2
[specs.sleeper]
command = 'if [ -f done-once ]; then echo second run; exit 0; fi; touch done-once; echo $$ > pid; exec sleep 1000'
"#,
    );
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "attempt_started");
    let pid = wait_pid(&t.path().join("pid"));
    // The state must record the group before we kill the runner.
    wait_for_state(&t, "the running process", |s| {
        !s["specs"]["sleeper"]["running"].is_null()
    });
    assert_eq!(state(&t)["specs"]["sleeper"]["running"]["pid"], pid);
    bg.signal(Signal::KILL);
    bg.wait_exit(Duration::from_secs(10));
    assert!(
        alive(pid),
        "the spec outlives a kill -9 of the runner (its own group)"
    );
    // `status` does not pretend the spec still runs under a runner.
    let status = run_in(&t, &["status"]);
    status
        .code(0)
        .stdout_has("was interrupted: its runner")
        .stdout_has("is gone");
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with("sleeper "))
        .expect("a row for sleeper");
    assert!(
        row.contains("interrupted") && !row.contains("running"),
        "{row}"
    );
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    assert_eq!(json["specs"]["sleeper"]["status"], "interrupted");
    assert_eq!(json["interrupted"], true);

    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(0).stderr_has("left running");
    assert!(
        wait_gone(&[pid], Duration::from_secs(5)).is_empty(),
        "abandoned group ended"
    );
    let st = state(&t);
    let attempts = st["specs"]["sleeper"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not counted"),
        "{}",
        attempts[0]
    );
    assert_eq!(
        st["specs"]["sleeper"]["retry_count"], 0,
        "the cut-short attempt is not a retry"
    );
    // Logs are never overwritten: the second run wrote task_2.log.
    assert!(
        t.read(".spec-runner/logs/sleeper/task_2.log")
            .contains("second run")
    );
}

#[test]
fn resume_skips_unchanged_successes_and_reruns_changed_and_failed_specs() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 0
[specs.a]
command = "echo a"
[specs.b]
command = "echo b"
[specs.c]
command = "test -f ok"
"#,
    );
    let ev = events(&run_in(&t, &["apply", "--format", "json"]).code(1).stdout);
    assert_eq!(of(&ev, "attempt_started", None).len(), 3);

    // Nothing changed: only the failed spec runs again.
    t.write("ok", "");
    let ev = events(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout);
    let ran: Vec<&str> = of(&ev, "attempt_started", None)
        .iter()
        .map(|e| e["spec"].as_str().unwrap())
        .collect();
    assert_eq!(ran, vec!["c"]);
    assert_eq!(ev[0]["up_to_date"], 2);

    // A changed definition (here: env) runs again.
    t.write(
        "spec-runner.toml",
        "retry_max_retries = 0\n[specs.a]\ncommand = \"echo a\"\nenv = { X = \"1\" }\n[specs.b]\ncommand = \"echo b\"\n[specs.c]\ncommand = \"test -f ok\"\n",
    );
    let ev = events(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout);
    let ran: Vec<&str> = of(&ev, "attempt_started", None)
        .iter()
        .map(|e| e["spec"].as_str().unwrap())
        .collect();
    assert_eq!(ran, vec!["a"]);

    // --fresh runs everything.
    let ev = events(
        &run_in(&t, &["apply", "--fresh", "--format", "json"])
            .code(0)
            .stdout,
    );
    assert_eq!(of(&ev, "attempt_started", None).len(), 3);
    assert_eq!(t.read(".spec-runner/logs/a/task_3.log"), "a\n");
}

/// Names of the specs that started an attempt, in order.
fn started(stdout: &str) -> Vec<String> {
    of(&events(stdout), "attempt_started", None)
        .iter()
        .map(|e| e["spec"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `plan --format json`: spec name → (will_run, why_kind, why).
fn plan_why(t: &Test) -> std::collections::BTreeMap<String, (bool, String, String)> {
    let run = run_in(t, &["plan", "--format", "json"]);
    run.code(0);
    run.json()["specs"]
        .as_array()
        .expect("specs")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                (
                    s["will_run"].as_bool().expect("will_run"),
                    s["why_kind"].as_str().unwrap_or_default().to_string(),
                    s["why"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn a_dependent_runs_again_after_its_dependency_ran_again_and_plan_says_why() {
    let t = Test::with_pipeline(
        r#"
[specs.build]
command = "date +%s%N > artifact"
[specs.deploy]
command = "cp artifact deployed"
depends_on = ["build"]
[specs.docs]
command = "true"
"#,
    );
    let why = plan_why(&t);
    assert_eq!(why["build"].1, "new", "{why:?}");
    assert!(why["deploy"].0);
    run_in(&t, &["plan"])
        .code(0)
        .stdout_has("  runs: new (it has not run here yet)\n");

    assert_eq!(
        started(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout).len(),
        3
    );
    let why = plan_why(&t);
    assert!(
        why.values()
            .all(|(runs, kind, _)| !runs && kind == "up_to_date"),
        "{why:?}"
    );
    assert_eq!(
        started(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout).len(),
        0
    );

    // A new build: deploy used the old artifact, so it is no longer up to date.
    run_in(&t, &["restart", "build", "--format", "json"]).code(0);
    assert_ne!(t.read("artifact"), t.read("deployed"));
    let why = plan_why(&t);
    assert_eq!(
        why["deploy"],
        (
            true,
            "dependency_ran".to_string(),
            "dependency `build` succeeded again after it started".to_string()
        )
    );
    assert!(!why["build"].0 && !why["docs"].0, "{why:?}");
    run_in(&t, &["plan", "deploy"])
        .code(0)
        .stdout_has("  runs: dependency `build` succeeded again after it started\n");
    run_in(&t, &["plan", "--fresh", "--format", "json"])
        .code(0)
        .stdout_has("\"why_kind\": \"fresh\"");

    let ran = started(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout);
    assert_eq!(ran, ["deploy"]);
    assert_eq!(t.read("artifact"), t.read("deployed"));
    // And then all is up to date again.
    assert_eq!(
        started(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout).len(),
        0
    );

    // A dependency that runs again now (changed) takes its dependents along.
    let toml = t.read("spec-runner.toml").replace("%s%N", "%s%N ");
    t.write("spec-runner.toml", &toml);
    let why = plan_why(&t);
    assert_eq!(why["build"].1, "changed");
    assert_eq!(why["deploy"].1, "dependency_runs");
    let ran = started(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout);
    assert_eq!(ran, ["build", "deploy"]);
}

#[test]
fn a_killed_runner_carries_the_retry_count_over() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 3
retry_backoff_seconds = 60
[specs.flaky]
command = 'echo "attempt $SPEC_RUNNER_ATTEMPT"; [ "$SPEC_RUNNER_ATTEMPT" -ge 2 ]'
"#,
    );
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "retry_scheduled");
    // The retry's state is written before the retry may start; wait for it on disk.
    wait_for_state(&t, "retry 1", |s| s["specs"]["flaky"]["retry_count"] == 1);
    bg.signal(Signal::KILL);
    bg.wait_exit(Duration::from_secs(10));
    assert_eq!(state(&t)["specs"]["flaky"]["status"], "backoff");
    assert!(!state(&t)["specs"]["flaky"]["last_retry_at"].is_null());
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    assert_eq!(json["specs"]["flaky"]["status"], "interrupted");

    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(0);
    let ev = events(&run.stdout);
    assert_eq!(
        of(&ev, "attempt_started", None)[0]["attempt"],
        2,
        "continues at attempt 2"
    );
    assert_eq!(
        of(&ev, "spec_finished", Some("flaky"))[0]["attempts"],
        2,
        "attempts of the whole cycle"
    );
    assert_eq!(t.read(".spec-runner/logs/flaky/task_2.log"), "attempt 2\n");
}

#[test]
fn restart_runs_a_spec_again_with_a_fresh_retry_count() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.dep]
command = "true"
[specs.s]
command = 'echo "attempt $SPEC_RUNNER_ATTEMPT"; test -f fixed'
depends_on = ["dep"]
"#,
    );
    run_in(&t, &["apply"]).code(1);
    assert_eq!(state(&t)["specs"]["s"]["retry_count"], 1);
    t.write("fixed", "");
    let run = run_in(&t, &["restart", "s", "--format", "json"]);
    run.code(0);
    let ev = events(&run.stdout);
    let started = of(&ev, "attempt_started", None);
    assert_eq!(started.len(), 1, "only the named spec runs: {ev:#?}");
    assert_eq!(started[0]["spec"], "s");
    assert_eq!(started[0]["attempt"], 1);
    assert_eq!(state(&t)["specs"]["s"]["retry_count"], 0);
    assert_eq!(t.read(".spec-runner/logs/s/task_3.log"), "attempt 1\n");
    run_in(&t, &["restart", "nope"])
        .code(2)
        .stderr_has("`nope`");
}

#[test]
fn logs_prints_an_attempts_bytes_and_status_shows_the_table() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 2
retry_backoff_seconds = 0
[specs.s]
command = 'printf "try %s\n" "$SPEC_RUNNER_ATTEMPT"; [ "$SPEC_RUNNER_ATTEMPT" = 3 ]'
"#,
    );
    run_in(&t, &["apply"]).code(0);
    assert_eq!(run_in(&t, &["logs", "s"]).code(0).stdout, "try 3\n");
    assert_eq!(
        run_in(&t, &["logs", "s", "--attempt", "1"]).code(0).stdout,
        "try 1\n"
    );
    run_in(&t, &["logs", "s", "--attempt", "9"])
        .code(2)
        .stderr_has("1, 2, 3");
    run_in(&t, &["logs", "nope"]).code(2);

    let status = run_in(&t, &["status"]);
    status.code(0);
    let row = status
        .stdout
        .lines()
        .find(|l| l.starts_with("s "))
        .expect("a row for s");
    for cell in [
        "succeeded",
        "3",
        "2/2",
        "0",
        ".spec-runner/logs/s/task_3.log",
    ] {
        assert!(row.contains(cell), "{row}");
    }
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    assert_eq!(json["version"], 1);
    assert_eq!(json["specs"]["s"]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(json["specs"]["s"]["attempts"][0]["exit_code"], 1);
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_the_run_starts_fresh() {
    let t = Test::with_pipeline("[specs.a]\ncommand = \"true\"\n");
    t.write(
        ".spec-runner/state.json",
        "{\"version\": 1, \"specs\": {\"a\": {\"stat",
    );
    let run = run_in(&t, &["apply"]);
    run.code(0).stderr_has("moved it to");
    let aside: Vec<String> = std::fs::read_dir(t.path().join(".spec-runner"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        t.read(&format!(".spec-runner/{}", aside[0])),
        "{\"version\": 1, \"specs\": {\"a\": {\"stat"
    );
    assert_eq!(state(&t)["specs"]["a"]["status"], "succeeded");
}

#[test]
fn a_state_file_from_a_newer_version_is_refused() {
    let t = Test::with_pipeline("[specs.a]\ncommand = \"true\"\n");
    let newer = "{\"version\": 99, \"run_id\": \"x\", \"specs\": {}}";
    t.write(".spec-runner/state.json", newer);
    run_in(&t, &["apply"])
        .code(2)
        .stderr_has("newer")
        .stderr_has("state.json");
    assert_eq!(t.read(".spec-runner/state.json"), newer, "left untouched");
}

#[test]
fn state_and_lock_are_private_and_the_folder_ignores_itself() {
    use std::os::unix::fs::PermissionsExt;
    let t = Test::with_pipeline("[specs.a]\ncommand = \"true\"\n");
    run_in(&t, &["apply"]).code(0);
    let mode = |p: &str| {
        std::fs::metadata(t.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(".spec-runner"), 0o700);
    assert_eq!(mode(".spec-runner/state.json"), 0o600);
    assert_eq!(t.read(".spec-runner/.gitignore"), "*\n");
}

/// kill -9 the runner at random moments; the state must always parse, and a final
/// run must finish every spec with no process of any spec left alive.
#[test]
fn chaos_kill_the_runner_at_random_moments() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos seed: {seed} (set CHAOS_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut toml = String::from(
        "jobs = 4\nretry_max_retries = 2\nretry_backoff_seconds = 0.05\nterminate_grace_seconds = 2\n",
    );
    for i in 0..30 {
        // Some specs fail their first attempt; some sleep long enough to be cut short.
        let sleep = [0.02, 0.1, 0.3, 1.5][i % 4];
        let flaky = if i % 3 == 0 {
            r#"[ "$SPEC_RUNNER_ATTEMPT" -ge 2 ] || exit 1; "#
        } else {
            ""
        };
        toml.push_str(&format!(
            "[specs.s{i:02}]\ncommand = 'echo $$ >> \"$PIDS/$SPEC_RUNNER_SPEC\"; {flaky}sleep {sleep}; echo done'\n"
        ));
        if i >= 5 {
            toml.push_str(&format!("depends_on = [\"s{:02}\"]\n", i % 5));
        }
    }
    let t = Test::with_pipeline(&toml);
    let pids_dir = t.path().join("pids");
    std::fs::create_dir_all(&pids_dir).unwrap();
    let t = t.env("PIDS", &pids_dir.display().to_string());
    for round in 0..20 {
        let mut bg = Background::apply(&t);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        bg.signal(Signal::KILL);
        bg.wait_exit(Duration::from_secs(30));
        if let Ok(text) = std::fs::read_to_string(t.path().join(".spec-runner/state.json")) {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("round {round}: torn state ({e}):\n{text}"));
            assert_eq!(v["version"], 1);
        }
    }
    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(0);
    let st = state(&t);
    for (name, s) in st["specs"].as_object().unwrap() {
        assert_eq!(s["status"], "succeeded", "{name}");
    }
    let mut pids = Vec::new();
    for e in std::fs::read_dir(&pids_dir).unwrap() {
        pids.extend(read_pids(&e.unwrap().path()));
    }
    assert!(!pids.is_empty());
    let left = wait_gone(&pids, Duration::from_secs(10));
    assert!(left.is_empty(), "spec processes left alive: {left:?}");
}

/// `retry_max_total_seconds` counts from the cycle's first attempt, even when a killed
/// runner resumed in between (the window does not restart with the new run).
#[test]
fn the_total_retry_window_survives_a_killed_runner() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 5
retry_backoff_seconds = 1
retry_backoff_multiplier = 1
retry_max_total_seconds = 1.5
[specs.s]
command = "exit 1"
"#,
    );
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "retry_scheduled");
    wait_for_state(&t, "retry 1", |s| s["specs"]["s"]["retry_count"] == 1);
    bg.signal(Signal::KILL);
    bg.wait_exit(Duration::from_secs(10));
    // Let the window pass: the cycle started more than 1.5 s ago when it resumes.
    std::thread::sleep(Duration::from_secs(2));
    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(1);
    let ev = events(&run.stdout);
    assert!(of(&ev, "retry_scheduled", None).is_empty(), "{ev:#?}");
    let fin = of(&ev, "spec_finished", Some("s"));
    assert!(
        fin[0]["reason"]
            .as_str()
            .unwrap()
            .contains("retry_max_total_seconds"),
        "{}",
        fin[0]
    );
}

/// A pipeline file edited into an invalid state (say, mid-run) must not hide the state
/// or make the run unstoppable.
#[test]
fn status_and_stop_work_when_the_pipeline_no_longer_loads() {
    let t = Test::with_pipeline("[specs.a]\ncommand = \"true\"\n");
    run_in(&t, &["apply"]).code(0);
    t.write("spec-runner.toml", "[specs.a\ncommand = \"true\"\n");
    let status = run_in(&t, &["status"]);
    status
        .code(0)
        .stderr_has("invalid TOML")
        .stderr_has("does not load");
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("a ") && l.contains("succeeded")),
        "{}",
        status.stdout
    );
    let json = run_in(&t, &["status", "--format", "json"]).code(0).json();
    assert_eq!(json["specs"]["a"]["status"], "succeeded");
    run_in(&t, &["stop"])
        .code(0)
        .stderr_has("no apply is running");
    run_in(&t, &["validate"]).code(2);
}

/// Two pipeline files in one folder share its state folder (one runs at a time): a
/// run of one keeps the other's history.
#[test]
fn another_pipeline_in_the_same_folder_keeps_its_state() {
    let t = Test::new();
    t.write("a.toml", "[specs.alpha]\ncommand = \"true\"\n");
    t.write("b.toml", "[specs.beta]\ncommand = \"true\"\n");
    run_in(&t, &["-f", "a.toml", "apply"]).code(0);
    run_in(&t, &["-f", "b.toml", "apply"]).code(0);
    let st = state(&t);
    assert_eq!(st["specs"]["alpha"]["status"], "succeeded");
    assert_eq!(st["specs"]["beta"]["status"], "succeeded");
    // And alpha is still up to date for its own pipeline.
    let ev = events(
        &run_in(&t, &["-f", "a.toml", "apply", "--format", "json"])
            .code(0)
            .stdout,
    );
    assert!(of(&ev, "attempt_started", None).is_empty());
}

#[test]
fn logs_prints_the_on_exhausted_hook_log_with_hook() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 0
on_exhausted = 'echo "hook for $SPEC_RUNNER_SPEC"'
[specs.s]
command = "echo attempt output; exit 1"
"#,
    );
    run_in(&t, &["apply"]).code(1);
    assert_eq!(
        run_in(&t, &["logs", "s"]).code(0).stdout,
        "attempt output\n"
    );
    assert_eq!(
        run_in(&t, &["logs", "s", "--hook"]).code(0).stdout,
        "hook for s\n"
    );
    run_in(&t, &["logs", "s", "--hook", "--attempt", "2"]).code(2);
}

#[test]
fn restart_refuses_a_spec_whose_dependency_has_not_succeeded_and_with_deps_runs_it_first() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 0
[specs.build]
command = "test -f fixed && echo built > artifact"
[specs.deploy]
command = "cat artifact"
depends_on = ["build"]
"#,
    );
    run_in(&t, &["apply"]).code(1);
    assert_eq!(state(&t)["specs"]["deploy"]["status"], "skipped");

    let run = run_in(&t, &["restart", "deploy", "--format", "json"]);
    run.code(2)
        .stderr_has("cannot restart `deploy`: its dependency `build` (failed) has not succeeded")
        .stderr_has("--with-deps");
    assert!(
        events(&run.stdout).is_empty(),
        "nothing ran: {}",
        run.stdout
    );
    assert!(!t.path().join(".spec-runner/logs/deploy").exists());

    t.write("fixed", "");
    let run = run_in(
        &t,
        &["restart", "deploy", "--with-deps", "--format", "json"],
    );
    run.code(0);
    let ev = events(&run.stdout);
    let order: Vec<&str> = of(&ev, "attempt_started", None)
        .iter()
        .map(|e| e["spec"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["build", "deploy"]);
    assert_eq!(state(&t)["specs"]["deploy"]["status"], "succeeded");
    // Now that `build` succeeded, `deploy` restarts on its own.
    run_in(&t, &["restart", "deploy"]).code(0);
}

#[test]
fn a_fresh_run_forgets_earlier_retries_and_attempts_are_those_of_the_latest_cycle() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 2
retry_backoff_seconds = 0
[specs.s]
command = 'test -f fixed || [ "$SPEC_RUNNER_ATTEMPT" = 2 ]'
"#,
    );
    let ev = events(&run_in(&t, &["apply", "--format", "json"]).code(0).stdout);
    assert_eq!(of(&ev, "spec_finished", Some("s"))[0]["attempts"], 2);
    assert!(!state(&t)["specs"]["s"]["last_retry_at"].is_null());
    let row = |t: &Test| {
        run_in(t, &["status"])
            .code(0)
            .stdout
            .lines()
            .find(|l| l.starts_with("s "))
            .expect("a row for s")
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // SPEC STATUS NOW ATTEMPTS RETRY LAST-RETRY(date time) …
    let r = row(&t);
    assert_eq!(
        (r[1].as_str(), r[3].as_str(), r[4].as_str()),
        ("succeeded", "2", "1/2"),
        "{r:?}"
    );

    t.write("fixed", "");
    let ev = events(
        &run_in(&t, &["apply", "--fresh", "--format", "json"])
            .code(0)
            .stdout,
    );
    assert_eq!(of(&ev, "spec_finished", Some("s"))[0]["attempts"], 1);
    let st = state(&t);
    assert!(
        st["specs"]["s"]["last_retry_at"].is_null(),
        "{}",
        st["specs"]["s"]
    );
    assert_eq!(st["specs"]["s"]["retry_count"], 0);
    let r = row(&t);
    // One attempt in this cycle (three logs in all), no retry, no last retry.
    assert_eq!(&r[1..6], ["succeeded", "-", "1", "0/2", "-"], "{r:?}");
}

#[test]
fn logs_of_a_spec_that_could_not_start_says_why_and_hook_logs_of_no_hook_say_so() {
    let t = Test::with_pipeline("[specs.x]\ncommand = [\"/no/such/program\"]\n");
    run_in(&t, &["apply"]).code(1);
    let run = run_in(&t, &["logs", "x"]);
    run.code(2)
        .stderr_has("attempt 1 of spec `x` has no output: it could not start")
        .stderr_has("/no/such/program");
    assert!(run.stdout.is_empty());
    run_in(&t, &["logs", "x", "--hook"])
        .code(2)
        .stderr_has("no `on_exhausted` command is set");
    // A spec that ran and printed nothing is not an error.
    let t = Test::with_pipeline("[specs.quiet]\ncommand = \"true\"\n");
    run_in(&t, &["apply"]).code(0);
    assert_eq!(run_in(&t, &["logs", "quiet"]).code(0).stdout, "");
}
