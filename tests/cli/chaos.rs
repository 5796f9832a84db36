//! Chaos: `kill -9` the runner at 50 random moments of a pipeline with retries and
//! backoffs (jitter, per-spec overrides), dependencies, hangs, specs cut short in the
//! middle of their output, and a spec whose descendant escapes its process group.
//!
//! After each kill the state file parses and no log of an earlier attempt has changed;
//! at the end a resumed run succeeds with every spec and no process any spec started,
//! in any round, is left. The randomness is seeded; the seed is printed, and
//! `CHAOS_SEED=<n>` replays a run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rustix::process::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

const ROUNDS: usize = 50;

/// Every command records its leader's pid in `$PIDS/<spec>` first.
fn pipeline() -> String {
    let record = r#"echo $$ >> "$PIDS/$SPEC_RUNNER_SPEC"; "#;
    let chatty = fixture("chatty.sh");
    let hang = fixture("print_then_hang.sh");
    let escape = fixture("escape_setsid.sh");
    let specs = [
        // Long output, cut short by most kills.
        ("chat-a", format!(r#""{chatty}" 60"#), None, ""),
        ("chat-b", format!(r#""{chatty}" 40"#), None, ""),
        // Fail twice, with this spec's own backoff and full jitter.
        (
            "flaky-jitter",
            r#"[ "$SPEC_RUNNER_ATTEMPT" -ge 3 ] || exit 1; echo ok"#.into(),
            None,
            "retry_backoff_seconds = 0.2\nretry_jitter = \"full\"\n",
        ),
        // Fail once in the middle of its output.
        (
            "flaky-mid-output",
            format!(r#""{chatty}" 20; [ "$SPEC_RUNNER_ATTEMPT" -ge 2 ]"#),
            None,
            "",
        ),
        // Hang (print, then silence) on the first attempt: ended as hung, retried.
        (
            "hangs-once",
            format!(r#"[ "$SPEC_RUNNER_ATTEMPT" -ge 2 ] || exec "{hang}"; echo ok"#),
            None,
            "activity_timeout_seconds = 0.3\n",
        ),
        // A descendant that leaves the group with setsid() and outlives the leader.
        (
            "escapes",
            format!(r#""{escape}" "$PIDS/escapee.$$" detach"#),
            None,
            "",
        ),
        ("slow", "sleep 0.6; echo slow".into(), None, ""),
        // A chain of dependencies over all of the above.
        (
            "build",
            format!(r#""{chatty}" 10"#),
            Some(r#"["chat-a"]"#),
            "",
        ),
        (
            "test",
            r#"[ "$SPEC_RUNNER_ATTEMPT" -ge 2 ] || exit 3; echo tested"#.into(),
            Some(r#"["build", "flaky-jitter"]"#),
            "",
        ),
        (
            "package",
            format!(r#""{chatty}" 15"#),
            Some(r#"["test", "hangs-once", "escapes"]"#),
            "",
        ),
        (
            "deploy",
            "echo deployed".into(),
            Some(r#"["package", "slow", "flaky-mid-output", "chat-b"]"#),
            "",
        ),
    ];
    let mut toml = String::from(
        "jobs = 3\n\
         retry_max_retries = 3\n\
         retry_backoff_seconds = 0.1\n\
         retry_backoff_multiplier = 2\n\
         retry_max_backoff_seconds = 0.4\n\
         terminate_grace_seconds = 1\n",
    );
    for (name, command, deps, extra) in specs {
        toml.push_str(&format!(
            "[specs.{name}]\ncommand = '{record}{command}'\n{extra}"
        ));
        if let Some(deps) = deps {
            toml.push_str(&format!("depends_on = {deps}\n"));
        }
    }
    toml
}

/// Whether `pid` is alive and one of this test's processes (its environment names our
/// pid folder): pids are reused, and this test runs long enough to see it happen.
fn ours_alive(pid: u32, marker: &[u8]) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == marker))
}

/// Every log file under `dir`, with its bytes.
fn logs(dir: &Path) -> HashMap<PathBuf, Vec<u8>> {
    let mut out = HashMap::new();
    let Ok(specs) = std::fs::read_dir(dir) else {
        return out;
    };
    for spec in specs.flatten() {
        for log in std::fs::read_dir(spec.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(bytes) = std::fs::read(log.path()) {
                out.insert(log.path(), bytes);
            }
        }
    }
    out
}

const STATUSES: [&str; 7] = [
    "pending",
    "running",
    "backoff",
    "succeeded",
    "failed",
    "skipped",
    "stopped",
];

#[test]
fn chaos_50_kills_with_retries_backoffs_dependencies_and_cut_output() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos seed: {seed} (CHAOS_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let t = Test::with_pipeline(&pipeline());
    let pids_dir = t.path().join("pids");
    std::fs::create_dir_all(&pids_dir).unwrap();
    let marker = format!("PIDS={}", pids_dir.display()).into_bytes();
    let t = t.env("PIDS", &pids_dir.display().to_string());
    let state_path = t.path().join(".spec-runner/state.json");
    let logs_dir = t.path().join(".spec-runner/logs");
    let spec_count = pipeline().matches("[specs.").count();

    let began = Instant::now();
    let mut seen_logs: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let mut finished_before_kill = 0;
    let mut last_finished = false;
    for round in 0..ROUNDS {
        // Start over after a run that finished before its kill, and now and then
        // anyway, so that kills keep landing in every phase of the pipeline.
        let fresh = round > 0 && (last_finished || rng.random_ratio(1, 8));
        let args: &[&str] = if fresh {
            &["apply", "--fresh", "--format", "json"]
        } else {
            &["apply", "--format", "json"]
        };
        // Mostly mid-run; sometimes right at start-up (lock, state, cleanup).
        let delay = if rng.random_ratio(1, 5) {
            rng.random_range(0..40)
        } else {
            rng.random_range(40..900)
        };
        let ctx = format!("seed {seed}, round {round}, kill after {delay} ms, fresh {fresh}");
        let mut bg = Background::spawn(&t, args);
        std::thread::sleep(Duration::from_millis(delay));
        bg.signal(Signal::KILL);
        let (code, _) = bg.wait_exit(Duration::from_secs(30));
        last_finished = code.is_some();
        if last_finished {
            finished_before_kill += 1;
        }

        if let Ok(text) = std::fs::read_to_string(&state_path) {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{ctx}: torn state ({e}):\n{text}"));
            assert_eq!(v["version"], 1, "{ctx}");
            let specs = v["specs"].as_object().expect("specs");
            assert_eq!(specs.len(), spec_count, "{ctx}");
            for (name, s) in specs {
                let status = s["status"].as_str().unwrap_or_default();
                assert!(STATUSES.contains(&status), "{ctx}: {name}: {s}");
                assert!(
                    s["retry_count"].as_u64().unwrap() <= 3,
                    "{ctx}: {name}: {s}"
                );
            }
        }
        // A log, once written, is never touched again: not by a later attempt, not by
        // a later run.
        let now = logs(&logs_dir);
        for (path, bytes) in &seen_logs {
            assert_eq!(
                now.get(path),
                Some(bytes),
                "{ctx}: {} changed or vanished",
                path.display()
            );
        }
        seen_logs = now;
    }
    eprintln!(
        "{ROUNDS} kills in {:?} ({finished_before_kill} runs had finished first); {} logs",
        began.elapsed(),
        seen_logs.len()
    );
    assert!(
        finished_before_kill <= ROUNDS / 2,
        "seed {seed}: most kills must land mid-run"
    );

    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(0);
    let st: Value = serde_json::from_str(&t.read(".spec-runner/state.json")).unwrap();
    for (name, s) in st["specs"].as_object().unwrap() {
        assert_eq!(s["status"], "succeeded", "seed {seed}: {name}: {s}");
        assert!(s["running"].is_null(), "seed {seed}: {name}: {s}");
    }
    for (path, bytes) in &seen_logs {
        assert_eq!(
            std::fs::read(path).ok().as_ref(),
            Some(bytes),
            "seed {seed}: the final run changed {}",
            path.display()
        );
    }

    let mut pids = Vec::new();
    for e in std::fs::read_dir(&pids_dir).unwrap() {
        pids.extend(read_pids(&e.unwrap().path()));
    }
    assert!(pids.len() >= spec_count, "seed {seed}: {pids:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left: Vec<u32> = pids.clone();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|&p| ours_alive(p, &marker));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        left.is_empty(),
        "seed {seed}: processes of killed runs left alive: {left:?}"
    );
}
