//! Fault fixtures, one test each: what a misbehaving command does to a run. Every test
//! asserts the outcome, the reason, the attempts, the state file, and that no process
//! of the spec outlives the run. Then resource faults (log folder, file size limit,
//! state folder) and security edges (private logs, commands only from the pipeline).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

/// Generous: these bound outcomes on a loaded 2-core machine, they do not time things.
const BOUND: Duration = Duration::from_secs(30);

fn apply_json(t: &Test) -> (Run, Vec<Value>) {
    let run = run_in(t, &["apply", "--format", "json"]);
    let ev = events(&run.stdout);
    (run, ev)
}

fn state(t: &Test) -> Value {
    serde_json::from_str(&t.read(".spec-runner/state.json")).expect("state.json parses")
}

/// The pids of every attempt leader, from the `attempt_started` events.
fn leader_pids(ev: &[Value]) -> Vec<u32> {
    of(ev, "attempt_started", None)
        .iter()
        .filter_map(|e| e["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

#[track_caller]
fn assert_all_gone(pids: &[u32]) {
    assert!(!pids.is_empty(), "no pids to check");
    let left = wait_gone(pids, Duration::from_secs(5));
    assert!(left.is_empty(), "processes outlived the run: {left:?}");
}

/// Every event of one spec, as `(event, attempt)` pairs in order.
fn sequence(ev: &[Value], spec: &str) -> Vec<(String, u64)> {
    ev.iter()
        .filter(|e| e["spec"] == spec)
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["attempt"]
                    .as_u64()
                    .or_else(|| e["retry"].as_u64())
                    .unwrap_or(0),
            )
        })
        .collect()
}

fn reason(e: &Value) -> &str {
    e["reason"].as_str().unwrap_or_default()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------------------------
// Fault fixtures

#[test]
fn exit_code_n_is_retried_to_the_limit_and_recorded_per_attempt() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 2
retry_backoff_seconds = 0
[specs.seven]
command = ["{}", "7"]
"#,
        fixture("exit_with.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert_eq!(
        sequence(&ev, "seven"),
        [
            ("attempt_started".into(), 1),
            ("attempt_finished".into(), 1),
            ("retry_scheduled".into(), 1),
            ("attempt_started".into(), 2),
            ("attempt_finished".into(), 2),
            ("retry_scheduled".into(), 2),
            ("attempt_started".into(), 3),
            ("attempt_finished".into(), 3),
            ("spec_finished".into(), 0),
        ]
    );
    for e in of(&ev, "attempt_finished", Some("seven")) {
        assert_eq!(e["exit_code"], 7);
        assert_eq!(reason(e), "exit 7");
    }
    let fin = of(&ev, "spec_finished", Some("seven"))[0];
    assert_eq!(fin["status"], "failed");
    assert_eq!(fin["attempts"], 3);
    assert!(reason(fin).starts_with("exit 7"), "{fin}");
    let st = &state(&t)["specs"]["seven"];
    assert_eq!(st["status"], "failed");
    assert_eq!(st["retry_count"], 2);
    let codes: Vec<&Value> = st["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["exit_code"])
        .collect();
    assert_eq!(codes, [7, 7, 7]);
    assert!(st["running"].is_null());
    assert_eq!(
        t.read(".spec-runner/logs/seven/task_3.log"),
        "exiting with 7\n"
    );
    assert_all_gone(&leader_pids(&ev));
}

#[test]
fn a_crash_by_sigsegv_or_sigkill_is_recorded_with_the_signal_name() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.segv]
command = ["{0}", "SEGV"]
[specs.killed]
command = ["{0}", "KILL"]
"#,
        fixture("crash_signal.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    let st = state(&t);
    for (spec, sig) in [("segv", "SIGSEGV"), ("killed", "SIGKILL")] {
        let attempts = of(&ev, "attempt_finished", Some(spec));
        assert_eq!(attempts.len(), 2, "a crash is retried: {ev:#?}");
        for e in &attempts {
            assert_eq!(e["signal"], sig);
            assert!(e["exit_code"].is_null());
            assert_eq!(reason(e), format!("killed by {sig}"));
        }
        let s = &st["specs"][spec];
        assert_eq!(s["status"], "failed");
        assert_eq!(s["attempts"][1]["signal"], sig);
        assert!(s["attempts"][1]["exit_code"].is_null());
    }
    assert_all_gone(&leader_pids(&ev));
}

#[test]
fn failing_k_times_then_passing_needs_k_retries() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_backoff_seconds = 0.05
[specs.enough]
command = ["{0}", "enough-counter", "3"]
retry_max_retries = 3
[specs.too-few]
command = ["{0}", "too-few-counter", "3"]
retry_max_retries = 2
"#,
        fixture("fail_then_pass.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    let st = state(&t);

    let fin = of(&ev, "spec_finished", Some("enough"))[0];
    assert_eq!(fin["status"], "succeeded");
    assert_eq!(fin["attempts"], 4);
    let codes: Vec<&Value> = st["specs"]["enough"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["exit_code"])
        .collect();
    assert_eq!(codes, [1, 1, 1, 0]);
    assert_eq!(st["specs"]["enough"]["retry_count"], 3);
    assert!(
        t.read(".spec-runner/logs/enough/task_4.log")
            .contains("attempt 4: passing")
    );

    let fin = of(&ev, "spec_finished", Some("too-few"))[0];
    assert_eq!(fin["status"], "failed");
    assert_eq!(fin["attempts"], 3);
    assert_eq!(st["specs"]["too-few"]["status"], "failed");
    assert_eq!(t.read("too-few-counter").trim(), "3", "never a 4th attempt");
    let finished = of(&ev, "run_finished", None)[0];
    assert_eq!(finished["flaky"], serde_json::json!(["enough"]));
    assert_all_gone(&leader_pids(&ev));
}

#[test]
fn a_silent_hang_is_ended_as_hung_on_every_attempt() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 1
retry_backoff_seconds = 0
activity_timeout_seconds = 0.5
terminate_grace_seconds = 1
[specs.silent]
command = ["{}"]
"#,
        fixture("hang_silent.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    let attempts = of(&ev, "attempt_finished", Some("silent"));
    assert_eq!(attempts.len(), 2);
    for e in &attempts {
        assert!(reason(e).starts_with("hung: no output after 0.5s"), "{e}");
        assert_eq!(e["signal"], "SIGTERM");
        assert!(e["duration_ms"].as_u64().unwrap() >= 500);
    }
    let s = &state(&t)["specs"]["silent"];
    assert_eq!(s["status"], "failed");
    assert!(s["reason"].as_str().unwrap().contains("hung"));
    assert_eq!(t.read(".spec-runner/logs/silent/task_2.log"), "");
    assert_all_gone(&leader_pids(&ev));
}

#[test]
fn print_then_hang_keeps_the_output_and_is_ended_as_hung() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 0
activity_timeout_seconds = 0.5
terminate_grace_seconds = 1
[specs.stalls]
command = ["{}"]
"#,
        fixture("print_then_hang.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    let fin = of(&ev, "attempt_finished", Some("stalls"))[0];
    assert!(reason(fin).starts_with("hung"), "{fin}");
    assert_eq!(
        t.read(".spec-runner/logs/stalls/task_1.log"),
        "started, now hanging\n"
    );
    let s = &state(&t)["specs"]["stalls"];
    assert_eq!(s["status"], "failed");
    assert_eq!(s["attempts"].as_array().unwrap().len(), 1);
    assert_all_gone(&leader_pids(&ev));
}

#[test]
fn ignoring_sigterm_buys_only_the_grace_period() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 0
timeout_seconds = 0.5
terminate_grace_seconds = 1
[specs.stubborn]
command = ["{}"]
"#,
        fixture("ignore_term.sh")
    ));
    let begin = Instant::now();
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert!(begin.elapsed() < BOUND);
    let fin = of(&ev, "attempt_finished", Some("stubborn"))[0];
    assert_eq!(fin["signal"], "SIGKILL", "{fin}");
    assert!(reason(fin).starts_with("timed out after 0.5s"), "{fin}");
    // Timeout, then the whole grace period (SIGTERM was ignored), then SIGKILL.
    assert!(fin["duration_ms"].as_u64().unwrap() >= 1500, "{fin}");
    let s = &state(&t)["specs"]["stubborn"];
    assert_eq!(s["status"], "failed");
    assert_eq!(s["attempts"][0]["signal"], "SIGKILL");
    // The fixture prints its own pid (the leader's) once its trap is set.
    let logged: u32 = t
        .read(".spec-runner/logs/stubborn/task_1.log")
        .trim()
        .parse()
        .expect("pid in log");
    assert_eq!(leader_pids(&ev), [logged]);
    assert_all_gone(&[logged]);
}

#[test]
fn a_grandchild_holding_stdout_is_ended_when_the_leader_exits() {
    let t = Test::with_pipeline(&format!(
        r#"
terminate_grace_seconds = 30
[specs.leaves-child]
command = ["{}", "grandchild"]
"#,
        fixture("grandchild_holds_pipe.sh")
    ));
    let begin = Instant::now();
    let (run, ev) = apply_json(&t);
    run.code(0);
    // Neither the grace period nor the drain bound (30 s): SIGTERM ends the
    // grandchild at once.
    assert!(
        begin.elapsed() < Duration::from_secs(15),
        "{:?}",
        begin.elapsed()
    );
    let fin = of(&ev, "attempt_finished", Some("leaves-child"))[0];
    assert_eq!(fin["exit_code"], 0);
    assert_eq!(state(&t)["specs"]["leaves-child"]["status"], "succeeded");
    assert!(
        t.read(".spec-runner/logs/leaves-child/task_1.log")
            .contains("leader exiting")
    );
    let mut pids = read_pids(&t.path().join("grandchild"));
    assert_eq!(pids.len(), 1);
    pids.extend(leader_pids(&ev));
    assert_all_gone(&pids);
}

/// A descendant that calls setsid() leaves the attempt's process group: a group kill
/// cannot reach it. The runner is a child subreaper, so it inherits the escapee when
/// its parent dies, and ends it right after the attempt — before `attempt_finished`,
/// without the end-of-run sweep (which would warn).
#[test]
fn a_setsid_escapee_is_ended_with_its_attempt() {
    let t = Test::with_pipeline(&format!(
        r#"
terminate_grace_seconds = 1
[specs.holds-stdout]
command = ["{0}", "hold.pid", "hold"]
[specs.daemon]
command = ["{0}", "detach.pid", "detach"]
[specs.ignores-term]
command = ["{0}", "stubborn.pid", "stubborn"]
"#,
        fixture("escape_setsid.sh")
    ));
    let mut bg = Background::apply(&t);
    for _ in 0..3 {
        let fin = bg.wait_for(BOUND, |e| e["event"] == "attempt_finished");
        let spec = fin["spec"].as_str().unwrap();
        let pidfile = match spec {
            "holds-stdout" => "hold.pid",
            "daemon" => "detach.pid",
            _ => "stubborn.pid",
        };
        let escapee = wait_pid(&t.path().join(pidfile));
        // Gone by the time its attempt is reported (a short allowance for the kernel
        // to finish the kill); the end-of-run sweep must not be what ended it (below).
        assert!(
            wait_gone(&[escapee], Duration::from_secs(2)).is_empty(),
            "escapee {escapee} of `{spec}` outlived its attempt"
        );
        assert_eq!(fin["exit_code"], 0, "{fin}");
    }
    let (code, _) = bg.wait_exit(BOUND);
    assert_eq!(code, Some(0));
    let stderr = bg.stderr(BOUND);
    assert!(
        !stderr.contains("left running"),
        "the per-attempt cleanup, not the end-of-run sweep, ended them:\n{stderr}"
    );
    let st = state(&t);
    for spec in ["holds-stdout", "daemon", "ignores-term"] {
        assert_eq!(st["specs"][spec]["status"], "succeeded");
    }
    let hold_log = t.read(".spec-runner/logs/holds-stdout/task_1.log");
    assert!(hold_log.contains("holds stdout"), "{hold_log}");
    assert!(hold_log.contains("leader exiting"), "{hold_log}");
}

/// Escapees are told apart by their attempt's environment: the end of one attempt
/// does not end what another, still running attempt left behind.
#[test]
fn an_escapee_of_a_running_attempt_lives_until_that_attempt_ends() {
    let t = Test::with_pipeline(&format!(
        r#"
jobs = 2
terminate_grace_seconds = 1
[specs.long]
command = '"{0}" long.pid detach; while [ ! -f go ]; do sleep 0.05; done'
timeout_seconds = 120  # should the test fail before it says "go"
[specs.short]
command = 'while [ ! -f long.pid ]; do sleep 0.02; done; exec "{0}" short.pid detach'
"#,
        fixture("escape_setsid.sh")
    ));
    let mut bg = Background::apply(&t);
    bg.wait_for(BOUND, |e| {
        e["event"] == "spec_finished" && e["spec"] == "short"
    });
    let short = wait_pid(&t.path().join("short.pid"));
    let long = wait_pid(&t.path().join("long.pid"));
    let (short_alive, long_alive) = (alive(short), alive(long));
    t.write("go", "");
    assert!(!short_alive, "short's escapee outlived its attempt");
    assert!(
        long_alive,
        "long's escapee was ended while `long` still runs"
    );
    let (code, _) = bg.wait_exit(BOUND);
    assert_eq!(code, Some(0));
    assert!(!alive(long), "long's escapee outlived its attempt");
    let ev = bg.rest();
    assert_all_gone(&leader_pids(&ev));
}

#[test]
fn a_100_mb_flood_without_a_newline_is_logged_whole_in_bounded_memory() {
    const BYTES: u64 = 100 * 1024 * 1024;
    let t = Test::with_pipeline(&format!(
        r#"
[specs.flood]
command = ["{}", "{BYTES}"]
[specs.after]
command = 'while [ ! -f release ]; do sleep 0.05; done'
depends_on = ["flood"]
timeout_seconds = 300  # should the test fail before the release
"#,
        fixture("flood.sh")
    ));
    let mut bg = Background::apply(&t);
    let fin = bg.wait_for(Duration::from_secs(120), |e| {
        e["event"] == "attempt_finished" && e["spec"] == "flood"
    });
    assert_eq!(fin["exit_code"], 0, "{fin}");
    // The runner is still alive (`after` waits for us): its peak memory so far.
    bg.wait_for(BOUND, |e| {
        e["event"] == "attempt_started" && e["spec"] == "after"
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", bg.child.id())).unwrap();
    t.write("release", "");
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    let (code, _) = bg.wait_exit(BOUND);
    assert_eq!(code, Some(0));
    assert!(
        peak_kb < 64 * 1024,
        "the runner peaked at {peak_kb} kB while copying {BYTES} bytes"
    );
    let log = t.path().join(".spec-runner/logs/flood/task_1.log");
    assert_eq!(std::fs::metadata(&log).unwrap().len(), BYTES);
    assert_eq!(state(&t)["specs"]["flood"]["status"], "succeeded");
    assert_all_gone(&leader_pids(&bg.rest()));
}

#[test]
fn invalid_utf8_is_logged_raw_and_every_report_stays_valid() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 0
[specs.bytes]
command = '"{}"; exit 3'
"#,
        fixture("invalid_utf8.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    // Every line of stdout is an event that parses.
    assert_eq!(ev.len(), run.stdout.lines().count(), "{}", run.stdout);
    assert_eq!(
        std::fs::read(t.path().join(".spec-runner/logs/bytes/task_1.log")).unwrap(),
        b"\xff\xfe bytes\n"
    );
    assert_eq!(state(&t)["specs"]["bytes"]["status"], "failed");
    // The plain reporter shows the failing log's end, replacing what is not UTF-8.
    let plain = run_in(&t, &["apply", "--progress", "plain"]);
    plain.code(1).stderr_has("\u{fffd}\u{fffd} bytes");
    assert_all_gone(&leader_pids(&ev));
}

#[test]
fn a_missing_binary_or_cwd_fails_once_with_the_reason_in_the_state() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 3
retry_backoff_seconds = 0
[specs.no-binary]
command = ["spec-runner-test-no-such-program"]
[specs.no-script]
command = ["./missing.sh"]
[specs.no-cwd]
command = "true"
cwd = "no/such/folder"
[specs.after]
command = "true"
depends_on = ["no-binary"]
"#,
    );
    let (run, ev) = apply_json(&t);
    run.code(1);
    assert!(of(&ev, "retry_scheduled", None).is_empty(), "{ev:#?}");
    assert!(leader_pids(&ev).is_empty(), "nothing was started: {ev:#?}");
    let st = state(&t);
    for (spec, needle) in [
        (
            "no-binary",
            "`spec-runner-test-no-such-program`: command not found on PATH",
        ),
        ("no-script", "missing.sh"),
        ("no-cwd", "working directory"),
    ] {
        let fin = of(&ev, "spec_finished", Some(spec))[0];
        assert_eq!(fin["status"], "failed");
        assert_eq!(fin["attempts"], 1);
        assert!(reason(fin).starts_with("could not start"), "{fin}");
        assert!(reason(fin).contains(needle), "{fin}");
        let s = &st["specs"][spec];
        assert_eq!(s["status"], "failed");
        assert_eq!(s["attempts"].as_array().unwrap().len(), 1);
        assert!(s["reason"].as_str().unwrap().contains(needle));
        assert!(s["running"].is_null());
    }
    assert_eq!(st["specs"]["after"]["status"], "skipped");
    assert_eq!(
        st["specs"]["after"]["reason"],
        "dependency `no-binary` failed"
    );
}

#[test]
fn closing_stdout_early_does_not_end_the_attempt() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 0
terminate_grace_seconds = 1
[specs.works-on]
command = ["{0}", "1", "0"]
[specs.then-fails]
command = ["{0}", "0.2", "5"]
[specs.then-hangs]
command = ["{0}", "forever", "0", "hangs.pid"]
activity_timeout_seconds = 1
"#,
        fixture("close_stdout_then_run.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    let fin = |spec| of(&ev, "attempt_finished", Some(spec))[0].clone();
    // End of output is not the end of the process: the exit status decides.
    let works = fin("works-on");
    assert_eq!(works["exit_code"], 0, "{works}");
    assert!(works["duration_ms"].as_u64().unwrap() >= 1000, "{works}");
    assert_eq!(fin("then-fails")["exit_code"], 5);
    assert_eq!(reason(&fin("then-fails")), "exit 5");
    // Closed output is silence: the activity timeout still applies.
    assert!(
        reason(&fin("then-hangs")).starts_with("hung"),
        "{}",
        fin("then-hangs")
    );
    let st = state(&t);
    assert_eq!(st["specs"]["works-on"]["status"], "succeeded");
    assert_eq!(st["specs"]["then-fails"]["status"], "failed");
    assert_eq!(st["specs"]["then-hangs"]["status"], "failed");
    assert_eq!(
        t.read(".spec-runner/logs/works-on/task_1.log"),
        "closing stdout now\n"
    );
    let mut pids = leader_pids(&ev);
    pids.extend(read_pids(&t.path().join("hangs.pid")));
    assert_all_gone(&pids);
}

// ---------------------------------------------------------------------------------
// Resource faults

#[test]
fn a_file_in_place_of_a_log_folder_fails_that_spec_and_the_run_goes_on() {
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 2
retry_backoff_seconds = 0
[specs.blocked]
command = "echo never"
[specs.fine]
command = "echo fine"
[specs.after-fine]
command = "echo after"
depends_on = ["fine"]
"#,
    );
    t.write(".spec-runner/logs/blocked", "a file, not a folder");
    let (run, ev) = apply_json(&t);
    run.code(1);
    let fin = of(&ev, "spec_finished", Some("blocked"))[0];
    assert_eq!(fin["status"], "failed");
    assert_eq!(fin["attempts"], 1, "not retried: {fin}");
    assert!(
        reason(fin).starts_with("log write failed: cannot create the log folder"),
        "{fin}"
    );
    assert!(
        of(&ev, "attempt_started", Some("blocked"))
            .iter()
            .all(|e| e["pid"].is_null()),
        "nothing was started"
    );
    let st = state(&t);
    assert_eq!(st["specs"]["blocked"]["status"], "failed");
    assert_eq!(st["specs"]["fine"]["status"], "succeeded");
    assert_eq!(st["specs"]["after-fine"]["status"], "succeeded");
    assert_eq!(
        t.read(".spec-runner/logs/blocked"),
        "a file, not a folder",
        "left as it was"
    );
}

/// Runs `apply --format json` under `ulimit -f BLOCKS` (a file size limit, which
/// fails writes as a full disk would, and which root cannot bypass).
fn apply_with_file_size_limit(t: &Test, blocks: u32) -> Run {
    run_with_file_size_limit(t, blocks, &["apply", "--format", "json"])
}

/// The file size limit `ulimit -f BLOCKS` sets in `sh`, in bytes: dash counts blocks of
/// 512 bytes, bash of 1024.
fn file_size_limit_bytes(blocks: u32) -> u64 {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f {blocks} && exec cat /proc/self/limits"))
        .output()
        .expect("run sh");
    let limits = String::from_utf8_lossy(&out.stdout);
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .unwrap_or_else(|| panic!("no file size limit in:\n{limits}"));
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Runs spec-runner with `args` under `ulimit -f BLOCKS`.
fn run_with_file_size_limit(t: &Test, blocks: u32, args: &[&str]) -> Run {
    let direct = t.command();
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .current_dir(t.path())
        .stdin(std::process::Stdio::null());
    // The harness's environment: our variables only, none of the caller's.
    for (k, v) in direct.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let out = sh.output().expect("run spec-runner under sh");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A log write past the file size limit raises SIGXFSZ, which would kill the runner;
/// it handles the signal, so the write fails with EFBIG like on a full disk: that
/// attempt ends with the reason, the other specs run, the state stays whole.
#[test]
fn a_file_size_limit_fails_the_log_write_not_the_runner() {
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 2
retry_backoff_seconds = 0
terminate_grace_seconds = 1
[specs.flood]
command = ["{}", "20000000"]
[specs.small]
command = "echo small"
[specs.after-flood]
command = "echo after"
depends_on = ["small"]
"#,
        fixture("flood.sh")
    ));
    // 256 blocks: 128 KiB (dash counts 512-byte blocks) or 256 KiB (bash, 1 KiB).
    let run = apply_with_file_size_limit(&t, 256);
    assert_eq!(
        run.code,
        Some(1),
        "the runner must exit normally, not die of SIGXFSZ\n{}",
        run.stderr
    );
    let ev = events(&run.stdout);
    let fin = of(&ev, "spec_finished", Some("flood"))[0];
    assert_eq!(fin["status"], "failed");
    assert_eq!(fin["attempts"], 1, "a log failure is not retried: {fin}");
    assert!(
        reason(fin).starts_with("log write failed: failed to write the log: File too large"),
        "{fin}"
    );
    let log = t.path().join(".spec-runner/logs/flood/task_1.log");
    assert!(std::fs::metadata(&log).unwrap().len() <= 256 * 1024);
    let st = state(&t);
    assert_eq!(st["specs"]["flood"]["status"], "failed");
    assert!(
        st["specs"]["flood"]["reason"]
            .as_str()
            .unwrap()
            .contains("File too large")
    );
    assert_eq!(st["specs"]["small"]["status"], "succeeded");
    assert_eq!(st["specs"]["after-flood"]["status"], "succeeded");
    assert_all_gone(&leader_pids(&ev));
}

/// A log write failure on the splice path (no live last line: output goes from the
/// pipe into the log by `splice`): the log holds exactly what the limit lets in, byte
/// for byte; the attempt fails, saying why; the failure report's tail goes on past the
/// log's end, with what was read from the pipe after the write failed.
#[test]
fn a_spliced_log_that_hits_the_file_size_limit_fails_the_attempt_and_keeps_the_tail() {
    // `just-past` writes 1,000 bytes more than the limit: its tail holds the log's end
    // read back and what was read from the pipe after the write failed, together.
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 2
retry_backoff_seconds = 0
[specs.big]
command = ["seq", "1", "100000"]
[specs.just-past]
command = ["seq", "1", "36151"]
"#,
    );
    let limit: u64 = 200 * 1024;
    let blocks = u32::try_from(limit / file_size_limit_bytes(1)).unwrap();
    assert_eq!(file_size_limit_bytes(blocks), limit);
    let seq_to = |n: u32| -> String { (1..=n).map(|i| format!("{i}\n")).collect() };
    let seq = seq_to(100_000);
    assert!(
        seq.len() as u64 > limit + 64 * 1024,
        "output goes on past the log"
    );
    let just_past = seq_to(36_151);
    assert_eq!(just_past.len() as u64, limit + 1000);

    let run = run_with_file_size_limit(
        &t,
        blocks,
        &["apply", "--format", "human", "--junit", "junit.xml"],
    );
    assert_eq!(
        run.code,
        Some(1),
        "the runner must exit normally, not die of SIGXFSZ\n{}",
        run.stderr
    );

    for (spec, output) in [("big", &seq), ("just-past", &just_past)] {
        let logs = t.path().join(".spec-runner/logs").join(spec);
        let log = std::fs::read(logs.join("task_1.log")).unwrap();
        assert_eq!(
            log.len() as u64,
            limit,
            "{spec}: the log holds what the limit lets in"
        );
        assert!(
            output.as_bytes().starts_with(&log),
            "{spec}: the log is the output's beginning, byte for byte"
        );
        assert!(
            !logs.join("task_2.log").exists(),
            "{spec}: a log failure is not retried"
        );
    }

    let failed = run
        .stderr
        .lines()
        .find(|l| l.contains("big: FAILED"))
        .unwrap_or_else(|| panic!("no FAILED line:\n{}", run.stderr));
    assert!(
        failed.contains("log write failed") && failed.contains("File too large"),
        "{failed}"
    );
    let st = state(&t);
    assert_eq!(st["specs"]["big"]["status"], "failed");
    assert!(reason(&st["specs"]["big"]).contains("File too large"));

    // The report's tail: the last lines of output, below the FAILED line, then the log.
    let report: Vec<&str> = run
        .stderr
        .lines()
        .skip_while(|l| !l.contains("big: FAILED"))
        .skip(1)
        .collect();
    let shown: Vec<&str> = report
        .iter()
        .map_while(|l| l.strip_prefix("    | "))
        .collect();
    assert!(!shown.is_empty(), "a tail is shown:\n{}", run.stderr);
    assert_eq!(
        report.get(shown.len()).map(|l| l.trim()),
        Some("log: .spec-runner/logs/big/task_1.log")
    );
    // The lines shown are the output as the command wrote it, in order; the last one
    // (perhaps cut: the command was ended mid-line) lies past the log's end, so the
    // report shows where the output really got to, not only what the log holds.
    let text = format!("\n{}", shown.join("\n"));
    let at = seq
        .find(&text)
        .unwrap_or_else(|| panic!("the tail is not the output's text: {shown:?}"));
    assert!(
        (at + text.len()) as u64 > limit,
        "the tail ends past the log's end ({} bytes): {shown:?}",
        limit
    );
    // `just-past`'s whole tail (JUnit's system-out): the log's end read back, then what
    // was read from the pipe once the log failed, no byte lost or repeated between them.
    let xml = t.read("junit.xml");
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let out = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("just-past"))
        .and_then(|n| n.children().find(|c| c.has_tag_name("system-out")))
        .and_then(|n| n.text())
        .unwrap_or_else(|| panic!("no system-out for just-past:\n{xml}"));
    let at = just_past
        .find(out)
        .unwrap_or_else(|| panic!("the tail is not the output's text:\n{out}"));
    assert!(
        (at as u64) < limit && (at + out.len()) as u64 > limit,
        "the tail ({at}..{}) spans the log's end ({limit})",
        at + out.len()
    );
}

#[test]
fn a_state_folder_that_cannot_be_written_exits_2_before_any_spec_starts() {
    let mut toml = String::new();
    for i in 0..20 {
        toml.push_str(&format!(
            "[specs.s{i:02}]\ncommand = \"touch ran-s{i:02}\"\n"
        ));
    }
    let ran = |t: &Test| {
        std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("ran-"))
            .count()
    };

    // A file stands where the folder should be.
    let t = Test::with_pipeline(&format!("state_dir = \"blocked\"\n{toml}"));
    t.write("blocked", "");
    let run = run_in(&t, &["apply"]);
    run.code(2)
        .stderr_has("cannot use the state folder")
        .stderr_has("blocked");
    assert_eq!(ran(&t), 0);

    // Every write fails (a file size limit of 0: root cannot bypass it).
    let t = Test::with_pipeline(&toml);
    let run = apply_with_file_size_limit(&t, 0);
    run.code(2).stderr_has("File too large");
    assert!(run.stdout.is_empty(), "no event, no spec: {}", run.stdout);
    assert_eq!(ran(&t), 0);
    // Once writes work again, so does the run, and the folder still ignores itself.
    run_in(&t, &["apply"]).code(0);
    assert_eq!(ran(&t), 20);
    assert_eq!(t.read(".spec-runner/.gitignore"), "*\n");

    // The lock can be written, the state file (over 1 KiB here) cannot.
    let t = Test::with_pipeline(&toml);
    let run = apply_with_file_size_limit(&t, 1);
    run.code(2)
        .stderr_has("cannot write the state file")
        .stderr_has("File too large");
    assert_eq!(ran(&t), 0);
}

// ---------------------------------------------------------------------------------
// Security edges

#[test]
fn logs_and_their_folders_are_private() {
    let t = Test::with_pipeline(
        r#"
[specs.default-dir]
command = "echo secret-ish"
[specs.own-dir]
command = "echo secret-ish"
retry_log_dir = "out/logs"
"#,
    );
    let (run, _) = apply_json(&t);
    run.code(0);
    let p = t.path();
    assert_eq!(mode(&p.join(".spec-runner")), 0o700);
    assert_eq!(mode(&p.join(".spec-runner/logs")), 0o700);
    assert_eq!(mode(&p.join(".spec-runner/logs/default-dir")), 0o700);
    assert_eq!(
        mode(&p.join(".spec-runner/logs/default-dir/task_1.log")),
        0o600
    );
    assert_eq!(mode(&p.join("out/logs")), 0o700);
    assert_eq!(mode(&p.join("out/logs/own-dir")), 0o700);
    assert_eq!(mode(&p.join("out/logs/own-dir/task_1.log")), 0o600);
    assert_eq!(mode(&p.join(".spec-runner/state.json")), 0o600);
}

/// Only the committed pipeline file says what runs: a variable cannot inject a
/// command, a working directory or an environment, and nothing runs when one tries.
#[test]
fn a_variable_cannot_make_a_spec_run_another_command() {
    for (var, value) in [
        ("SPEC_RUNNER_SPECS__VICTIM__COMMAND", "touch pwned"),
        ("SPEC_RUNNER_COMMAND", "touch pwned"),
        ("SPEC_RUNNER_SPECS__VICTIM__CWD", "/"),
        ("SPEC_RUNNER_SPECS__VICTIM__ENV", "{PATH=\"/nowhere\"}"),
    ] {
        let t = Test::with_pipeline("[specs.victim]\ncommand = \"touch ran\"\n").env(var, value);
        let run = run_in(&t, &["apply"]);
        run.code(2).stderr_has(var);
        assert!(!t.path().join("pwned").exists(), "{var} ran a command");
        assert!(!t.path().join("ran").exists(), "{var}: nothing may run");
        assert!(!t.path().join(".spec-runner/state.json").exists());
    }
}

#[test]
fn a_shell_exit_status_of_128_plus_n_counts_as_signal_n_for_rules_and_reasons() {
    // The shell runs the fixture as a child (it is not the last command, so no exec):
    // its SIGSEGV comes back as `exit 139`.
    let t = Test::with_pipeline(&format!(
        r#"
retry_max_retries = 3
retry_backoff_seconds = 0
[[retry_rules]]
signals = ["SIGSEGV"]
action = "fail"
[specs.crash]
command = '"{0}" SEGV; exit $?'
[specs.argv]
command = ["sh", "-c", "exit 139"]
"#,
        fixture("crash_signal.sh")
    ));
    let (run, ev) = apply_json(&t);
    run.code(1);
    let crash = of(&ev, "attempt_finished", Some("crash"));
    assert_eq!(
        crash.len(),
        1,
        "the SIGSEGV rule matched: no retry: {ev:#?}"
    );
    assert_eq!(crash[0]["exit_code"], 139);
    assert_eq!(
        reason(crash[0]),
        "exit 139 (killed by SIGSEGV in the shell)"
    );
    let fin = of(&ev, "spec_finished", Some("crash"));
    assert!(
        reason(fin[0]).contains("(killed by SIGSEGV in the shell)"),
        "{}",
        fin[0]
    );
    // An array command's status is what it is: no rule matches, it is retried.
    let argv = of(&ev, "attempt_finished", Some("argv"));
    assert_eq!(argv.len(), 4);
    assert_eq!(reason(argv[0]), "exit 139");
}
