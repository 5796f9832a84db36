//! The Slurm backend against a real cluster (`.ci/slurm-up.sh` starts a one-node one).
//!
//! These tests run when `sinfo` answers. Under `CI=true` a missing cluster fails them
//! (CI must test the backend, never skip it); elsewhere they say loudly that they
//! skipped.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

/// Whether a cluster is reachable; panics under CI when it is not.
fn cluster() -> bool {
    // Asked once: without a controller, `sinfo` takes ~10 s to give up.
    static UP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let up = *UP.get_or_init(|| {
        Command::new("sinfo")
            .args(["-h", "-o", "%T"])
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    });
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no Slurm cluster answers `sinfo`: .ci/run starts one with .ci/slurm-up.sh; the Slurm tests must not skip in CI"
        );
        // Straight to the terminal: the test harness would swallow `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED a Slurm backend test: no cluster answers `sinfo` (start one with .ci/slurm-up.sh) ***\n"
        );
    }
    up
}

/// The state of job `id` as squeue says it (`-t all`: finished jobs too).
fn job_state(id: u64) -> String {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-j", &id.to_string(), "-o", "%T"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until job `id` has left the queue (ended, or purged).
fn wait_job_ended(id: u64) -> String {
    wait_to_see(
        Duration::from_secs(60),
        &format!("job {id} never ended"),
        || job_state(id),
        |s| {
            !matches!(
                s.as_str(),
                "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING"
            )
        },
    )
}

fn job_ids(ev: &[Value], spec: &str) -> Vec<u64> {
    of(ev, "attempt_started", Some(spec))
        .iter()
        .map(|e| e["job_id"].as_u64().expect("attempt_started has a job_id"))
        .collect()
}

/// The job of the first attempt the run starts.
fn first_job(bg: &mut Background) -> u64 {
    let started = bg.wait_for(Duration::from_secs(60), |e| e["event"] == "attempt_started");
    started["job_id"].as_u64().expect("job_id")
}

/// Kills the runner (-9) once the state holds job `id` as the running attempt of the
/// spec `keeper` and `also` holds: the job must be on disk before the runner dies.
fn kill_once_recorded(t: &Test, bg: &mut Background, id: u64, also: impl Fn() -> bool) {
    wait_until(
        Duration::from_secs(30),
        &format!("the state never recorded job {id}"),
        || (t.state()["specs"]["keeper"]["running"]["job_id"] == id && also()).then_some(()),
    );
    bg.signal(Signal::KILL);
    bg.wait_exit(Duration::from_secs(10));
}

/// Every test's pipeline starts with this: quick polls, quick retries.
const HEAD: &str = r#"
backend = "slurm"
retry_backoff_seconds = 0.1
terminate_grace_seconds = 2
slurm = { poll_interval_seconds = 0.2 }
"#;

#[test]
fn slurm_retries_with_exact_logs_and_job_ids_in_events_and_state() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
[specs.flaky]
command = 'printf "try %s\n\001\377\r" "$SPEC_RUNNER_ATTEMPT"; printf "no newline"; [ "$SPEC_RUNNER_ATTEMPT" -ge 3 ]'
"#
    ));
    let ev = apply_events(&t, &[], 0);
    let ids = job_ids(&ev, "flaky");
    assert_eq!(ids.len(), 3, "one job per attempt");
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    for n in 1..=3 {
        let log = std::fs::read(
            t.path()
                .join(format!(".spec-runner/logs/flaky/task_{n}.log")),
        )
        .unwrap();
        let mut expected = format!("try {n}\n").into_bytes();
        expected.extend_from_slice(b"\x01\xff\rno newline");
        assert_eq!(
            log, expected,
            "task_{n}.log holds exactly what attempt {n} printed"
        );
    }
    let failed = of(&ev, "attempt_finished", Some("flaky"));
    assert_eq!(failed[0]["exit_code"], 1);
    assert_eq!(failed[2]["exit_code"], 0);
    let st = t.state();
    let attempts = st["specs"]["flaky"]["attempts"].as_array().unwrap();
    let recorded: Vec<u64> = attempts
        .iter()
        .map(|a| a["job_id"].as_u64().unwrap())
        .collect();
    assert_eq!(recorded, ids, "the state records each attempt's job");
    assert!(st["specs"]["flaky"]["running"].is_null());
    for id in ids {
        assert_eq!(
            wait_job_ended(id),
            if id == recorded[2] {
                "COMPLETED"
            } else {
                "FAILED"
            }
        );
    }
}

#[test]
fn slurm_exit_codes_and_signals_meet_the_rules() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
retry_max_retries = 3
[[retry_rules]]
exit_codes = [7]
action = "fail"
[[retry_rules]]
signals = ["SIGSEGV"]
action = "fail"
[specs.seven]
command = "exit 7"
[specs.segv]
command = "kill -SEGV $$"
[specs.argv]
command = ["sh", "-c", "echo argv $0 \"$1\"; exit 0", "zero", "one, two"]
"#
    ));
    let ev = apply_events(&t, &[], 1);
    let seven = of(&ev, "attempt_finished", Some("seven"));
    assert_eq!(seven.len(), 1, "a fail rule: no retry");
    assert_eq!(seven[0]["exit_code"], 7);
    assert!(seven[0]["signal"].is_null());
    let segv = of(&ev, "attempt_finished", Some("segv"));
    assert_eq!(segv.len(), 1);
    assert_eq!(segv[0]["signal"], "SIGSEGV");
    assert!(segv[0]["exit_code"].is_null());
    assert_eq!(
        of(&ev, "spec_finished", Some("argv"))[0]["status"],
        "succeeded"
    );
    assert_eq!(
        t.read(".spec-runner/logs/argv/task_1.log"),
        "argv zero one, two\n"
    );
}

#[test]
fn slurm_passes_env_values_whole_and_fails_a_missing_cwd() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
[specs.env]
command = 'printf "%s|%s|%s|%s|%s" "$X" "$SPEC_RUNNER_SPEC" "$SPEC_RUNNER_ATTEMPT" "$SPEC_RUNNER_MAX_ATTEMPTS" "$(pwd)"; [ -n "$SPEC_RUNNER_RUN_ID" ]'
cwd = "sub dir"
env = {{ X = "a,b 'single' \"double\" $HOME\nsecond line=x" }}
[specs.nowhere]
command = "echo should not run"
cwd = "missing"
retry_max_retries = 1
"#
    ));
    std::fs::create_dir(t.path().join("sub dir")).unwrap();
    let run = run_in(&t, &["apply", "--progress", "plain"]);
    run.code(1)
        .stderr_has("PENDING (slurm job ")
        .stderr_has("could not start: working directory");
    let cwd = t.path().join("sub dir").canonicalize().unwrap();
    assert_eq!(
        t.read(".spec-runner/logs/env/task_1.log"),
        format!(
            "a,b 'single' \"double\" $HOME\nsecond line=x|env|1|4|{}",
            cwd.display()
        )
    );
    let st = t.state();
    let nowhere = &st["specs"]["nowhere"];
    assert_eq!(nowhere["status"], "failed");
    // On a cluster the folder may be missing on one node only: retried by the policy.
    assert_eq!(
        nowhere["attempts"].as_array().unwrap().len(),
        2,
        "a missing cwd fails the attempt, which the policy retries"
    );
    assert!(
        t.read(".spec-runner/logs/nowhere/task_1.log")
            .contains("does not exist"),
        "the job says why in its log"
    );
    assert!(
        !t.read(".spec-runner/logs/nowhere/task_1.log")
            .contains("should not run")
    );
}

#[test]
fn slurm_timeouts_cancel_the_job() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
retry_max_retries = 0
[specs.hung]
command = "echo started; exec sleep 600"
activity_timeout_seconds = 2
[specs.slow]
command = "while :; do echo tick; sleep 0.2; done"
timeout_seconds = 2
[specs.stubborn]
command = "trap '' TERM; echo deaf; sleep 600"
activity_timeout_seconds = 1
"#
    ));
    let started = Instant::now();
    let ev = apply_events(&t, &[], 1);
    assert!(started.elapsed() < Duration::from_secs(60));
    let hung = of(&ev, "attempt_finished", Some("hung"));
    assert!(
        hung[0]["reason"].as_str().unwrap().contains("hung"),
        "{}",
        hung[0]
    );
    let slow = of(&ev, "attempt_finished", Some("slow"));
    assert!(
        slow[0]["reason"].as_str().unwrap().contains("timed out"),
        "{}",
        slow[0]
    );
    assert!(
        slow[0]["duration_ms"].as_u64().unwrap() >= 2000,
        "counted from when the job ran: {}",
        slow[0]
    );
    let stubborn = of(&ev, "attempt_finished", Some("stubborn"));
    assert!(
        stubborn[0]["reason"].as_str().unwrap().contains("hung"),
        "TERM ignored: KILL after the grace period: {}",
        stubborn[0]
    );
    assert!(
        stubborn[0]["duration_ms"].as_u64().unwrap() >= 3000,
        "{}",
        stubborn[0]
    );
    for spec in ["hung", "slow", "stubborn"] {
        for id in job_ids(&ev, spec) {
            let s = wait_job_ended(id);
            assert!(
                matches!(s.as_str(), "CANCELLED" | "FAILED" | "COMPLETED" | ""),
                "job {id} of {spec}: {s}"
            );
        }
    }
    assert!(
        t.read(".spec-runner/logs/hung/task_1.log")
            .starts_with("started\n")
    );
}

#[test]
fn slurm_ctrl_c_cancels_every_job_of_the_run() {
    if !cluster() {
        return;
    }
    let mut specs = String::new();
    for i in 0..3 {
        specs.push_str(&format!("[specs.s{i}]\ncommand = \"echo up; sleep 600\"\n"));
    }
    let t = Test::with_pipeline(&format!("{HEAD}\njobs = 3\n{specs}"));
    let mut bg = Background::apply(&t);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let e = bg.wait_for(Duration::from_secs(60), |e| e["event"] == "attempt_started");
        ids.push(e["job_id"].as_u64().expect("job_id"));
    }
    bg.signal(Signal::INT);
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(130));
    for id in ids {
        let s = wait_job_ended(id);
        assert!(
            matches!(s.as_str(), "CANCELLED" | "FAILED" | "COMPLETED" | ""),
            "job {id}: {s}"
        );
    }
    let ev = bg.rest();
    assert_eq!(of(&ev, "spec_finished", None).len(), 3);
    for e in of(&ev, "spec_finished", None) {
        assert_eq!(e["status"], "stopped");
    }
}

#[test]
fn validate_names_a_missing_sbatch() {
    let t = Test::with_pipeline("[specs.a]\ncommand = \"true\"\nbackend = \"slurm\"\n")
        .env("PATH", "/nonexistent")
        .args(&["validate"]);
    t.run()
        .code(2)
        .stderr_has("spec `a` has backend = \"slurm\"")
        .stderr_has("`sbatch` is not on PATH");
    let t = Test::with_pipeline("backend = \"slurm\"\n[specs.a]\ncommand = \"true\"\n")
        .env("PATH", "/nonexistent")
        .args(&["apply"]);
    t.run().code(2).stderr_has("sbatch");
    assert!(!t.path().join(".spec-runner").exists(), "nothing ran");
}

#[test]
fn backend_and_the_slurm_table_come_from_every_layer_and_are_checked() {
    let t = Test::with_pipeline(
        r#"
[slurm]
partition = "debug"
sbatch_args = ["--mem=1G"]
[specs.a]
command = "true"
[specs.b]
command = "true"
"#,
    )
    .env("SPEC_RUNNER_SPECS__B__BACKEND", "slurm")
    .args(&["plan", "--format", "json"]);
    let run = t.run();
    run.code(0);
    let p = run.json();
    let specs = p["specs"].as_array().unwrap();
    assert_eq!(specs[0]["policy"]["backend"], "local");
    assert_eq!(specs[1]["policy"]["backend"], "slurm");
    assert_eq!(
        specs[1]["origins"]["backend"],
        "SPEC_RUNNER_SPECS__B__BACKEND"
    );
    assert_eq!(specs[1]["policy"]["slurm"]["partition"], "debug");
    assert_eq!(specs[1]["policy"]["slurm"]["sbatch_args"][0], "--mem=1G");
    assert_eq!(specs[1]["policy"]["slurm"]["poll_interval_seconds"], 1.0);

    let bad = Test::with_pipeline(
        r#"
backend = "cluster"
[slurm]
sbatch_args = ["--output=x.log", "script.sh"]
poll_interval_seconds = 0
[specs.a]
command = "true"
"#,
    )
    .args(&["validate"]);
    bad.run()
        .code(2)
        .stderr_has("`backend`")
        .stderr_has("`slurm.sbatch_args[0]`: `--output=x.log`: spec-runner sets `--output` itself")
        .stderr_has("`slurm.sbatch_args[1]`: `script.sh` is not an option")
        .stderr_has("`slurm.poll_interval_seconds`: 0 is out of range");
}

#[test]
fn slurm_a_killed_runner_s_job_is_reattached_not_submitted_again() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
[specs.keeper]
command = 'echo one; while [ ! -f release ]; do sleep 0.1; done; echo two'
"#
    ));
    let mut bg = Background::apply(&t);
    let id = first_job(&mut bg);
    kill_once_recorded(&t, &mut bg, id, || true);
    assert!(
        matches!(job_state(id).as_str(), "PENDING" | "RUNNING"),
        "the job outlives the runner"
    );

    let mut again = Background::apply(&t);
    let back = again.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "attempt_reattached" || e["event"] == "attempt_started"
    });
    assert_eq!(back["event"], "attempt_reattached", "{back}");
    assert_eq!(back["job_id"], id);
    t.write("release", "");
    let (code, _) = again.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0));
    let ev = again.rest();
    assert!(
        of(&ev, "attempt_started", None).is_empty(),
        "no second submission: {ev:#?}"
    );
    assert_eq!(
        of(&ev, "spec_finished", Some("keeper"))[0]["status"],
        "succeeded"
    );
    assert_eq!(t.read(".spec-runner/logs/keeper/task_1.log"), "one\ntwo\n");
    assert!(
        !t.path()
            .join(".spec-runner/logs/keeper/task_2.log")
            .exists()
    );
    let st = t.state();
    let attempts = st["specs"]["keeper"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["job_id"], id);
    assert_eq!(attempts[0]["exit_code"], 0);
    assert_eq!(wait_job_ended(id), "COMPLETED");
}

#[test]
fn slurm_fresh_cancels_a_killed_runner_s_job() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
[specs.keeper]
command = 'if [ -f second ]; then echo fresh; exit 0; fi; touch second; echo up; sleep 600'
"#
    ));
    let mut bg = Background::apply(&t);
    let id = first_job(&mut bg);
    kill_once_recorded(&t, &mut bg, id, || t.path().join("second").exists());
    let run = run_in(&t, &["apply", "--fresh", "--format", "json"]);
    run.code(0).stderr_has(&format!("cancelled slurm job {id}"));
    assert_eq!(wait_job_ended(id), "CANCELLED");
    assert_eq!(t.read(".spec-runner/logs/keeper/task_2.log"), "fresh\n");
}

#[test]
fn slurm_queue_time_is_not_run_time_and_ctrl_c_cancels_queued_jobs() {
    if !cluster() {
        return;
    }
    // `--begin` keeps the job queued for an hour.
    let t = Test::with_pipeline(
        r#"
backend = "slurm"
slurm = { poll_interval_seconds = 0.2, sbatch_args = ["--begin=now+3600"] }
[specs.queued]
command = "echo ran"
timeout_seconds = 1
"#,
    );
    let mut bg = Background::apply(&t);
    let id = first_job(&mut bg);
    // Three times its timeout in the queue: not timed out, still pending.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(job_state(id), "PENDING");
    assert!(
        bg.child.try_wait().unwrap().is_none(),
        "queue time does not count against timeout_seconds"
    );
    bg.signal(Signal::INT);
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(130));
    assert_eq!(wait_job_ended(id), "CANCELLED");
    let ev = bg.rest();
    assert!(
        of(&ev, "attempt_finished", Some("queued"))
            .iter()
            .all(|e| e["reason"] == "stopped"),
        "{ev:#?}"
    );
    assert_eq!(
        of(&ev, "spec_finished", Some("queued"))[0]["status"],
        "stopped"
    );
}

#[test]
fn slurm_stop_cancels_the_job_and_on_exhausted_runs_here() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
retry_max_retries = 0
[specs.long]
command = "echo up; sleep 600"
[specs.broken]
command = "exit 4"
on_exhausted = 'printf "%s|%s" "$SPEC_RUNNER_SPEC" "${{SLURM_JOB_ID:-here}}"'
"#
    ));
    let mut bg = Background::apply(&t);
    let mut id = None;
    while id.is_none() {
        let e = bg.wait_for(Duration::from_secs(60), |e| {
            e["event"] == "attempt_started" || e["event"] == "hook_finished"
        });
        if e["spec"] == "long" && e["event"] == "attempt_started" {
            id = e["job_id"].as_u64();
        }
    }
    let id = id.unwrap();
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "hook_finished");
    run_in(&t, &["stop"]).code(0);
    let (code, _) = bg.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(130));
    // TERM ended the command and the job side exited: FAILED in Slurm's words.
    let s = wait_job_ended(id);
    assert!(
        matches!(s.as_str(), "FAILED" | "CANCELLED"),
        "job {id}: {s}"
    );
    let ev = bg.rest();
    assert_eq!(
        of(&ev, "spec_finished", Some("long"))[0]["status"],
        "stopped"
    );
    assert_eq!(
        t.read(".spec-runner/logs/broken/on_exhausted_1.log"),
        "broken|here",
        "the hook ran on this machine, not as a job"
    );
}

/// `tests/fixtures/fake_sbatch` first on PATH: it refuses the first `fails` calls as
/// an unreachable controller would, then hands over to the real sbatch. The
/// variables it needs, and the file where it counts its calls.
fn fake_sbatch(t: &Test, fails: u32) -> (Vec<(String, String)>, std::path::PathBuf) {
    let path = std::env::var("PATH").unwrap_or_default();
    let real = std::env::split_paths(&path)
        .map(|d| d.join("sbatch"))
        .find(|p| p.is_file())
        .expect("sbatch on PATH");
    let calls = t.path().join("sbatch-calls");
    let env = vec![
        (
            "PATH".to_string(),
            format!("{}:{path}", fixture("fake_sbatch")),
        ),
        ("REAL_SBATCH".to_string(), real.display().to_string()),
        ("FAKE_SBATCH_FAILS".to_string(), fails.to_string()),
        ("FAKE_SBATCH_CALLS".to_string(), calls.display().to_string()),
    ];
    (env, calls)
}

fn calls(file: &std::path::Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |s| s.lines().count())
}

#[test]
fn slurm_a_passing_refusal_is_tried_again_then_left_to_the_retry_policy() {
    if !cluster() {
        return;
    }
    // Two refusals: the submitter rides them out within the first attempt.
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
[specs.blip]
command = "echo ran"
"#
    ));
    let (env, file) = fake_sbatch(&t, 2);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ev = apply_events(&t, &env, 0);
    assert_eq!(calls(&file), 3, "two refusals, then the job");
    assert_eq!(job_ids(&ev, "blip").len(), 1, "one attempt: {ev:#?}");
    assert_eq!(
        t.read(".spec-runner/logs/blip/task_1.log"),
        "ran\n",
        "the refusals leave the log exact"
    );

    // Five refusals: the first attempt gives up after its four tries and fails with
    // sbatch's words; the policy retries it, and the second attempt's job runs.
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
retry_max_retries = 1
[specs.outage]
command = "echo ran"
"#
    ));
    let (env, file) = fake_sbatch(&t, 5);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ev = apply_events(&t, &env, 0);
    assert_eq!(calls(&file), 6, "four tries, then one refusal and the job");
    let finished = of(&ev, "attempt_finished", Some("outage"));
    assert_eq!(finished.len(), 2, "{ev:#?}");
    let reason = finished[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("sbatch could not submit the job (4 tries)")
            && reason.contains("Unable to contact slurm controller (connect failure)"),
        "{reason}"
    );
    assert!(finished[1]["reason"].is_null(), "{}", finished[1]);
    assert_eq!(
        of(&ev, "spec_finished", Some("outage"))[0]["status"],
        "succeeded"
    );
    assert!(
        t.read(".spec-runner/logs/outage/task_1.log")
            .contains("Unable to contact slurm controller"),
        "`logs` shows why the first attempt did not run"
    );
    assert_eq!(t.read(".spec-runner/logs/outage/task_2.log"), "ran\n");
}

#[test]
fn slurm_a_standing_refusal_fails_the_attempt_at_once_with_sbatch_s_words() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(
        r#"
backend = "slurm"
retry_backoff_seconds = 0.1
retry_max_retries = 1
slurm = { partition = "no-such-partition", poll_interval_seconds = 0.2 }
[specs.nowhere]
command = "echo should not run"
[specs.ruled]
command = "echo should not run"
[[specs.ruled.retry_rules]]
output = "Invalid partition"
action = "fail"
"#,
    );
    let (env, file) = fake_sbatch(&t, 0);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ev = apply_events(&t, &env, 1);
    assert_eq!(
        calls(&file),
        3,
        "one sbatch call per attempt: two for `nowhere` (the policy retries it), one for `ruled`"
    );
    let finished = of(&ev, "attempt_finished", Some("nowhere"));
    assert_eq!(finished.len(), 2, "{ev:#?}");
    for f in &finished {
        assert_eq!(
            f["reason"],
            "could not start: sbatch refused the job: invalid partition specified: no-such-partition; Batch job submission failed: Invalid partition name specified",
            "{f}"
        );
    }
    assert!(
        of(&ev, "attempt_started", None)
            .iter()
            .all(|e| e["job_id"].is_null()),
        "no job was made: {ev:#?}"
    );
    assert_eq!(
        of(&ev, "attempt_finished", Some("ruled")).len(),
        1,
        "a rule on sbatch's words stops the retries"
    );
    for spec in ["nowhere", "ruled"] {
        assert_eq!(of(&ev, "spec_finished", Some(spec))[0]["status"], "failed");
    }
    assert!(
        t.read(".spec-runner/logs/nowhere/task_2.log")
            .contains("Invalid partition name specified")
    );
}

#[test]
fn slurm_ctrl_c_ends_an_attempt_waiting_to_offer_its_job_again() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!(
        "{HEAD}\n[specs.waiting]\ncommand = \"echo ran\"\n"
    ));
    let (env, file) = fake_sbatch(&t, 100);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let t = t.envs(&env);
    let mut bg = Background::apply(&t);
    wait_until(Duration::from_secs(30), "sbatch was never called", || {
        (calls(&file) >= 1).then_some(())
    });
    bg.signal(Signal::INT);
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    assert!(calls(&file) <= 2, "no try after Ctrl-C: {}", calls(&file));
    let ev = bg.rest();
    assert_eq!(
        of(&ev, "attempt_finished", Some("waiting"))[0]["reason"],
        "stopped"
    );
    assert_eq!(
        of(&ev, "spec_finished", Some("waiting"))[0]["status"],
        "stopped"
    );
}

#[test]
fn slurm_a_reattached_job_s_clocks_run_from_its_real_start() {
    if !cluster() {
        return;
    }
    const LIMIT: i64 = 24;
    let t = Test::with_pipeline(&format!(
        r#"{HEAD}
retry_max_retries = 0
jobs = 2
[specs.keeper]
command = 'date +%s; exec sleep 600'
timeout_seconds = {LIMIT}
[specs.quiet]
command = 'date +%s; exec sleep 600'
activity_timeout_seconds = {LIMIT}
"#
    ));
    let mut bg = Background::apply(&t);
    // When each command started (and last printed), by the wall clock (whole
    // seconds, rounded down).
    let started = |spec: &str| -> Option<i64> {
        std::fs::read_to_string(
            t.path()
                .join(format!(".spec-runner/logs/{spec}/task_1.log")),
        )
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
    };
    let (keeper, quiet) = wait_until(Duration::from_secs(60), "the jobs never ran", || {
        Some((started("keeper")?, started("quiet")?))
    });
    let job = |spec: &str| t.state()["specs"][spec]["running"]["job_id"].as_u64();
    let ids = wait_until(
        Duration::from_secs(30),
        "the state never recorded both jobs",
        || Some((job("keeper")?, job("quiet")?)),
    );
    bg.signal(Signal::KILL);
    bg.wait_exit(Duration::from_secs(10));
    // Re-attach 14 s into the jobs' run: clocks started at the re-attachment would
    // end them 14 + 24 = 38 s in at the earliest.
    let now = || chrono::Utc::now().timestamp();
    while now() < keeper.max(quiet) + 14 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut again = Background::apply(&t);
    let (code, _) = again.wait_exit(Duration::from_secs(120));
    assert_eq!(code, Some(1));
    let ev = again.rest();
    assert!(of(&ev, "attempt_started", None).is_empty(), "{ev:#?}");
    assert_eq!(of(&ev, "attempt_reattached", None).len(), 2, "{ev:#?}");
    for (spec, since, id, why) in [
        ("keeper", keeper, ids.0, "timed out"),
        ("quiet", quiet, ids.1, "hung"),
    ] {
        let finished = of(&ev, "attempt_finished", Some(spec));
        assert_eq!(finished.len(), 1, "{ev:#?}");
        let f = finished[0];
        assert!(f["reason"].as_str().unwrap().contains(why), "{f}");
        let ended = chrono::DateTime::parse_from_rfc3339(f["ts"].as_str().unwrap())
            .unwrap()
            .timestamp();
        // Slack for a loaded machine: the job's start before its `date`, second
        // granularity, polls, TERM and the end's discovery.
        let ran = ended - since;
        assert!(
            (LIMIT - 4..=LIMIT + 9).contains(&ran),
            "{spec}: {why} {ran} s after the command started (limit {LIMIT} s, re-attached at 14 s): {f}"
        );
        assert!(
            f["duration_ms"].as_u64().unwrap() >= (LIMIT as u64 - 2) * 1000,
            "{spec}: the duration is the job's run time, not the re-attached runner's: {f}"
        );
        let s = wait_job_ended(id);
        assert!(
            matches!(s.as_str(), "CANCELLED" | "FAILED" | "COMPLETED" | ""),
            "job {id}: {s}"
        );
    }
}

#[test]
fn slurm_a_job_taken_but_unacknowledged_is_followed_not_submitted_twice() {
    if !cluster() {
        return;
    }
    let t = Test::with_pipeline(&format!("{HEAD}\n[specs.lost]\ncommand = \"echo ran\"\n"));
    let (mut env, file) = fake_sbatch(&t, 0);
    env.push(("FAKE_SBATCH_LOSE".into(), "1".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ev = apply_events(&t, &env, 0);
    assert_eq!(calls(&file), 1, "found again, not offered again");
    let ids = job_ids(&ev, "lost");
    assert_eq!(ids.len(), 1, "{ev:#?}");
    let run_id = t.state()["run_id"].as_str().unwrap().to_string();
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%k"])
        .output()
        .expect("squeue");
    let jobs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("run {run_id} spec lost ")))
        .map(str::to_string)
        .collect();
    assert_eq!(
        jobs,
        [format!(
            "{}|spec-runner run {run_id} spec lost attempt 1 log task_1.log",
            ids[0]
        )],
        "one job for the attempt"
    );
    assert_eq!(t.read(".spec-runner/logs/lost/task_1.log"), "ran\n");
    assert_eq!(
        of(&ev, "spec_finished", Some("lost"))[0]["status"],
        "succeeded"
    );
}
