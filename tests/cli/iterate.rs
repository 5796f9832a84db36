//! Iterating specs: fake agents (scripts that check a box and commit, do nothing,
//! crash once, hang) looped over a tasks.md in real temporary git repositories.

use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

/// Git must work on a fresh machine: an identity from the environment, no user or
/// system configuration.
const GIT_ENV: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "spec-runner tests"),
    ("GIT_AUTHOR_EMAIL", "tests@example.com"),
    ("GIT_COMMITTER_NAME", "spec-runner tests"),
    ("GIT_COMMITTER_EMAIL", "tests@example.com"),
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
];

fn git(t: &Test, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(t.path())
        .envs(GIT_ENV.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test folder that is a git repository holding the pipeline and `tasks.md` with
/// `open` open tasks and `done` done ones, all committed.
fn repo(pipeline: &str, done: usize, open: usize) -> Test {
    let t = Test::with_pipeline(pipeline).envs(GIT_ENV);
    let mut tasks = String::from("# Tasks\n\n## Tasks\n\n");
    for n in 1..=done + open {
        let mark = if n <= done { "x" } else { " " };
        tasks.push_str(&format!(
            "- [{mark}] {n}. Task {n}\n  - _Requirements: {n}.1_\n"
        ));
    }
    t.write("tasks.md", &tasks);
    t.write(".gitignore", ".spec-runner/\n");
    git(&t, &["init", "-q"]);
    git(&t, &["add", "-A"]);
    git(&t, &["commit", "-q", "-m", "initial"]);
    t
}

fn commits(t: &Test) -> usize {
    git(t, &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .expect("a count")
}

/// A repository (as [`repo`]) whose pipeline holds `settings` and one spec, `work`,
/// looping over `tasks.md` with `command` (`AGENT` in it stands for the fake agent).
fn work_repo(settings: &str, command: &str, done: usize, open: usize) -> Test {
    let command = command.replace("AGENT", &agent());
    repo(
        &format!("{settings}\n[specs.work]\ncommand = '{command}'\ntasks = \"tasks.md\"\n"),
        done,
        open,
    )
}

fn agent() -> String {
    fixture("agent_check_one.sh")
}

fn iterations(ev: &[Value]) -> Vec<(u64, bool, bool)> {
    of(ev, "iteration_finished", None)
        .iter()
        .map(|e| {
            (
                e["iteration"].as_u64().unwrap(),
                e["progress"].as_bool().unwrap(),
                e["done"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_agent_that_checks_a_task_per_iteration_runs_until_done() {
    let t = work_repo("", "AGENT", 1, 3);
    let ev = apply_events(&t, &[], 0);
    assert_eq!(
        iterations(&ev),
        vec![(1, true, false), (2, true, false), (3, true, true)]
    );
    let last = of(&ev, "iteration_finished", None)[2];
    assert_eq!(last["tasks_done"], 4);
    assert_eq!(last["tasks_total"], 4);
    let fin = of(&ev, "spec_finished", Some("work"))[0];
    assert_eq!(fin["status"], "succeeded");
    assert_eq!(fin["iterations"], 3);
    assert_eq!(fin["attempts"], 3);
    assert_eq!(commits(&t), 4);
    // What the agent saw: its iteration, a fresh attempt count, the progress summary.
    assert_eq!(
        t.read("agent.log"),
        "iteration=1 attempt=1 summary=1/4 tasks complete (3 pending, 0 in progress)\n\
         iteration=2 attempt=1 summary=2/4 tasks complete (2 pending, 0 in progress)\n\
         iteration=3 attempt=1 summary=3/4 tasks complete (1 pending, 0 in progress)\n"
    );
    // One log per attempt, numbered across iterations.
    for n in 1..=3 {
        assert_eq!(
            t.read(&format!(".spec-runner/logs/work/task_{n}.log")),
            "checked a task\n"
        );
    }
    let st = t.state();
    let it = &st["specs"]["work"]["iteration"];
    assert_eq!(it["iteration"], 3);
    assert_eq!(it["no_progress_streak"], 0);
    assert_eq!(it["tasks"]["done"], 4);
}

#[test]
fn an_agent_that_does_nothing_trips_the_breaker() {
    let t = repo(
        r#"
no_progress_limit = 2
[specs.idle]
command = "echo thinking"
tasks = "tasks.md"
"#,
        0,
        2,
    );
    let ev = apply_events(&t, &[], 1);
    assert_eq!(iterations(&ev), vec![(1, false, false), (2, false, false)]);
    let fin = of(&ev, "spec_finished", Some("idle"))[0];
    assert_eq!(fin["status"], "failed");
    let reason = fin["reason"].as_str().unwrap();
    assert!(reason.contains("no_progress_limit = 2"), "{reason}");
    assert_eq!(of(&ev, "attempt_started", None).len(), 2);
}

#[test]
fn progress_by_commit_alone_keeps_the_loop_going_and_the_cap_stops_it() {
    // Commits without checking a task are progress; the cap still ends it.
    let t = repo(
        r#"
max_iterations = 3
[specs.busy]
command = 'echo $SPEC_RUNNER_ITERATION >> notes && git add notes && git commit -q -m note'
tasks = "tasks.md"
"#,
        0,
        1,
    );
    let ev = apply_events(&t, &[], 1);
    assert_eq!(
        iterations(&ev),
        vec![(1, true, false), (2, true, false), (3, true, false)]
    );
    let reason = of(&ev, "spec_finished", Some("busy"))[0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(reason, "not done after 3 iterations (max_iterations = 3)");
}

#[test]
fn a_variable_raises_the_cap() {
    let t = work_repo("max_iterations = 2", "AGENT", 0, 3);
    assert_eq!(iterations(&apply_events(&t, &[], 1)).len(), 2);
    let ev = apply_events(&t, &[("SPEC_RUNNER_MAX_ITERATIONS", "5")], 0);
    // The failed loop starts afresh: one more iteration finds the last task.
    assert_eq!(iterations(&ev), vec![(1, true, true)]);
    assert_eq!(commits(&t), 4);
}

#[test]
fn a_crash_inside_an_iteration_is_retried_and_the_next_iteration_starts_at_attempt_one() {
    let t = work_repo(
        "retry_backoff_seconds = 0",
        r#"if [ "$SPEC_RUNNER_ITERATION" = 2 ] && [ ! -e crashed ]; then touch crashed; echo boom; exit 3; fi; AGENT"#,
        0,
        3,
    );
    let ev = apply_events(&t, &[], 0);
    assert_eq!(
        iterations(&ev),
        vec![(1, true, false), (2, true, false), (3, true, true)]
    );
    let retries = of(&ev, "retry_scheduled", None);
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0]["retry"], 1);
    let attempts: Vec<u64> = of(&ev, "attempt_started", None)
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 1, 2, 1]);
    assert_eq!(t.read(".spec-runner/logs/work/task_2.log"), "boom\n");
    assert!(t.read("agent.log").contains("iteration=2 attempt=2 "));
}

#[test]
fn until_must_pass_too_and_runs_before_the_first_iteration() {
    let t = repo(
        &format!(
            r#"
[specs.work]
command = "{}"
tasks = "tasks.md"
until = 'echo ran >> until.log; echo "checking the tests"; test -e tests-pass'
"#,
            agent()
        ),
        1,
        1,
    );
    // The last task gets checked in iteration 1, but `until` fails: the loop goes on
    // (the agent still commits) until the cap.
    let ev = apply_events(&t, &[("SPEC_RUNNER_MAX_ITERATIONS", "2")], 1);
    assert_eq!(iterations(&ev), vec![(1, true, false), (2, true, false)]);
    assert_eq!(of(&ev, "iteration_finished", None)[0]["tasks_done"], 2);
    // `until` ran after each iteration, not before the first (a task was open then).
    assert_eq!(t.read("until.log").lines().count(), 2);
    assert_eq!(
        t.read(".spec-runner/logs/work/until_1.log"),
        "checking the tests\n"
    );

    // Once `until` passes, the spec is done without running anything: `until` runs
    // before the first iteration when no task is open.
    t.write("tests-pass", "");
    let ev = apply_events(&t, &[], 0);
    assert!(of(&ev, "attempt_started", None).is_empty());
    let fin = of(&ev, "spec_finished", Some("work"))[0];
    assert_eq!(fin["status"], "succeeded");
    assert!(fin["reason"].as_str().unwrap().starts_with("already done"));
    assert_eq!(t.read("until.log").lines().count(), 3);
}

#[test]
fn until_alone_loops_until_it_passes() {
    let t = repo(
        r#"
[specs.build]
command = 'echo $SPEC_RUNNER_ITERATION >> count; git add count; git commit -q -m step'
until = '[ "$(wc -l < count 2>/dev/null || echo 0)" -ge 3 ]'
"#,
        0,
        0,
    );
    let ev = apply_events(&t, &[], 0);
    assert_eq!(
        iterations(&ev),
        vec![(1, true, false), (2, true, false), (3, true, true)]
    );
    let first = of(&ev, "iteration_finished", None)[0];
    assert!(first["tasks_done"].is_null() && first["tasks_total"].is_null());
}

#[test]
fn a_spec_already_done_succeeds_without_running() {
    let t = repo(
        r#"
[specs.work]
command = "echo should not run; exit 1"
tasks = "tasks.md"
"#,
        3,
        0,
    );
    let ev = apply_events(&t, &[], 0);
    assert!(of(&ev, "attempt_started", None).is_empty());
    let fin = of(&ev, "spec_finished", Some("work"))[0];
    assert_eq!(fin["status"], "succeeded");
    assert_eq!(
        fin["reason"],
        "already done: 3/3 tasks complete (0 pending, 0 in progress)"
    );
}

#[test]
fn a_missing_tasks_file_fails_the_spec_with_its_name() {
    let t = Test::with_pipeline(
        r#"
[specs.work]
command = "true"
tasks = "specs/x/tasks.md"
"#,
    );
    let ev = apply_events(&t, &[], 1);
    let fin = of(&ev, "spec_finished", Some("work"))[0];
    assert_eq!(fin["status"], "failed");
    let reason = fin["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cannot read the tasks file `specs/x/tasks.md`"),
        "{reason}"
    );
}

#[test]
fn outside_git_only_checked_tasks_count_as_progress() {
    let t = Test::with_pipeline(
        r#"
no_progress_limit = 1
[specs.work]
command = "sed -i.bak '0,/- \\[ \\]/s//- [x]/' tasks.md"
tasks = "tasks.md"
"#,
    );
    t.write("tasks.md", "- [ ] a\n- [ ] b\n");
    assert_eq!(
        iterations(&apply_events(&t, &[], 0)),
        vec![(1, true, false), (2, true, true)]
    );
}

#[test]
fn a_runner_killed_mid_loop_resumes_the_same_iteration() {
    // Iteration 3's first attempt hangs; the runner is killed -9 while it runs.
    let t = work_repo(
        "terminate_grace_seconds = 2",
        r#"if [ "$SPEC_RUNNER_ITERATION" = 3 ] && [ ! -e hung ]; then touch hung; exec sleep 1000; fi; AGENT"#,
        0,
        5,
    );
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(60), |e| {
        e["event"] == "iteration_started" && e["iteration"] == 3
    });
    bg.wait_for(Duration::from_secs(60), |e| e["event"] == "attempt_started");
    wait_until(Duration::from_secs(30), "the agent never hung", || {
        t.path().join("hung").exists().then_some(())
    });
    wait_until(
        Duration::from_secs(30),
        "iteration 3 never reached the disk",
        || (t.state()["specs"]["work"]["iteration"]["iteration"] == 3).then_some(()),
    );
    bg.signal(Signal::KILL);
    bg.wait_exit(Duration::from_secs(10));
    assert_eq!(commits(&t), 3, "two iterations committed before the kill");

    let ev = apply_events(&t, &[], 0);
    let started: Vec<u64> = of(&ev, "iteration_started", None)
        .iter()
        .map(|e| e["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(
        started,
        vec![3, 4, 5],
        "resumes iteration 3, redoes nothing before it"
    );
    assert_eq!(
        iterations(&ev),
        vec![(3, true, false), (4, true, false), (5, true, true)]
    );
    // Every iteration's agent ran once (iteration 3's hung attempt wrote nothing).
    let log = t.read("agent.log");
    for n in 1..=5 {
        assert_eq!(
            log.matches(&format!("iteration={n} ")).count(),
            1,
            "iteration {n}:\n{log}"
        );
    }
    assert_eq!(commits(&t), 6);
}

#[test]
fn a_hang_inside_an_iteration_is_ended_and_retried() {
    let t = work_repo(
        "retry_backoff_seconds = 0\nactivity_timeout_seconds = 1\nterminate_grace_seconds = 1",
        r#"if [ "$SPEC_RUNNER_ITERATION" = 1 ] && [ ! -e hung ]; then touch hung; exec sleep 1000; fi; AGENT"#,
        0,
        2,
    );
    let ev = apply_events(&t, &[], 0);
    assert_eq!(iterations(&ev), vec![(1, true, false), (2, true, true)]);
    let finished = of(&ev, "attempt_finished", None);
    assert!(
        finished[0]["reason"]
            .as_str()
            .unwrap()
            .contains("activity_timeout_seconds"),
        "{}",
        finished[0]
    );
    assert_eq!(of(&ev, "retry_scheduled", None).len(), 1);
    assert_eq!(commits(&t), 3);
}

#[test]
fn the_loop_shows_in_plain_lines_status_and_junit() {
    let t = work_repo(
        "retry_backoff_seconds = 0",
        r#"if [ "$SPEC_RUNNER_ITERATION" = 2 ] && [ ! -e crashed ]; then touch crashed; exit 3; fi; AGENT"#,
        0,
        3,
    );
    let run = run_in(
        &t,
        &["apply", "--progress", "plain", "--junit", "report.xml"],
    );
    run.code(0)
        .stderr_has("work: iteration 1/50 · tasks 0/3\n")
        .stderr_has("work: iteration 1/50 · tasks 1/3 ended: progress, not done yet")
        .stderr_has("work: iteration 3/50 · tasks 3/3 ended: done")
        .stderr_has("work: SUCCEEDED after 3 iterations (4 attempts) (flaky)");

    let status = run_in(&t, &["status"]);
    status
        .code(0)
        .stdout_has("iterating specs:\n")
        .stdout_has("iteration 3/50 · tasks 3/3 (0 pending, 0 in progress)");
    let json: Value = serde_json::from_str(&run_in(&t, &["status", "--format", "json"]).stdout)
        .expect("status json");
    let it = &json["specs"]["work"]["iteration"];
    assert_eq!(it["iteration"], 3);
    assert_eq!(it["max_iterations"], 50);
    assert_eq!(it["no_progress_streak"], 0);
    assert_eq!(it["tasks"]["done"], 3);

    // One test case for the spec; its output lists the iterations; the crash inside
    // iteration 2 is its only rerun (passing iterations are not failures).
    let xml = t.read("report.xml");
    let doc = roxmltree::Document::parse(&xml).expect("xml");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 1);
    let flaky = cases[0]
        .children()
        .filter(|n| n.has_tag_name("flakyFailure"))
        .count();
    assert_eq!(flaky, 1, "{xml}");
    let out = cases[0]
        .children()
        .find(|n| n.has_tag_name("system-out"))
        .and_then(|n| n.text())
        .unwrap_or_default();
    assert!(
        out.starts_with(
            "iteration 1/50 · tasks 1/3: progress\n\
             iteration 2/50 · tasks 2/3: progress\n\
             iteration 3/50 · tasks 3/3: done\n"
        ),
        "{out}"
    );
}

/// A spec-workflow tree: specs with tasks files under `specs_dir`, in a git repository.
fn workflow_tree(specs_dir: &str, tasks_file: &str, specs: &[(&str, usize, usize)]) -> Test {
    let t = Test::new().envs(GIT_ENV);
    for &(name, done, open) in specs {
        let mut text = String::from("# Tasks Document\n\n");
        for n in 1..=done + open {
            let mark = if n <= done { "x" } else { " " };
            text.push_str(&format!("- [{mark}] {n}. Task {n}\n  - File: src/{n}.rs\n"));
        }
        t.write(&format!("{specs_dir}/{name}/{tasks_file}"), &text);
        t.write(
            &format!("{specs_dir}/{name}/requirements.md"),
            "# Requirements\n",
        );
    }
    t.write(".gitignore", ".spec-runner/\n");
    git(&t, &["init", "-q"]);
    git(&t, &["add", "-A"]);
    git(&t, &["commit", "-q", "-m", "initial"]);
    t
}

/// A fake `claude` on PATH: notes its arguments, then does one task of its spec.
fn fake_claude(t: &Test, tasks_path: &str) -> String {
    fake_on_path(
        t,
        "claude",
        &format!(
            "#!/bin/sh\nfor last; do :; done\nprintf '%s\\n' \"$*\" >> \"$(dirname \"$0\")/../claude.args\"\nexec {} \"{tasks_path}\"\n",
            agent()
        ),
    )
}

/// Writes the script `bin/NAME` in `t`; a `PATH` with `bin` first.
fn fake_on_path(t: &Test, name: &str, script: &str) -> String {
    t.write_exe(&format!("bin/{name}"), script);
    format!(
        "{}:{}",
        t.path().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn init_spec_workflow_then_apply_runs_every_loop_to_the_end() {
    let t = workflow_tree(
        ".spec-workflow/specs",
        "tasks.md",
        &[("auth", 1, 2), ("billing", 0, 1), ("finished", 2, 0)],
    );
    let init = run_in(&t, &["init", "--spec-workflow", "--model", "sonnet"]);
    init.code(0)
        .stderr_has("found `auth`: 1/3 tasks complete (2 pending, 0 in progress)")
        .stderr_has("`finished` is done");
    let toml = t.read("spec-runner.toml");
    assert!(
        toml.contains("[specs.auth]") && toml.contains("[specs.billing]"),
        "{toml}"
    );
    assert!(!toml.contains("[specs.finished]"), "{toml}");
    assert!(
        toml.contains("tasks = \".spec-workflow/specs/auth/tasks.md\""),
        "{toml}"
    );
    run_in(&t, &["validate"]).code(0);
    run_in(&t, &["plan", "--explain"])
        .code(0)
        .stdout_has("iterates: at most 50 iterations");
    // It refuses to overwrite the pipeline.
    run_in(&t, &["init", "--spec-workflow"])
        .code(2)
        .stderr_has("already exists");

    let path = fake_claude(&t, ".spec-workflow/specs/$SPEC_RUNNER_SPEC/tasks.md");
    let ev = apply_events(&t, &[("PATH", &path)], 0);
    assert_eq!(
        iterations(
            &ev.iter()
                .filter(|e| e["spec"] == "auth")
                .cloned()
                .collect::<Vec<_>>()
        ),
        vec![(1, true, false), (2, true, true)]
    );
    assert_eq!(
        of(&ev, "spec_finished", Some("billing"))[0]["status"],
        "succeeded"
    );
    for spec in ["auth", "billing"] {
        let tasks = t.read(&format!(".spec-workflow/specs/{spec}/tasks.md"));
        assert!(!tasks.contains("- [ ]"), "{spec}:\n{tasks}");
    }
    // The agent ran non-interactively with the model, and its prompt named the spec
    // and the progress as it was when each attempt started.
    let args = t.read("claude.args");
    assert_eq!(args.lines().count(), 3, "{args}");
    assert!(
        args.starts_with("--print --dangerously-skip-permissions --model sonnet You are implementing the spec `auth`"),
        "{args}"
    );
    assert!(
        args.contains("Progress: 1/3 tasks complete (2 pending, 0 in progress)."),
        "{args}"
    );
    assert!(
        args.contains("Progress: 2/3 tasks complete (1 pending, 0 in progress)."),
        "{args}"
    );
}

#[test]
fn init_spec_workflow_follows_config_json_folders_and_prompt() {
    let t = workflow_tree(".sw/s", "todo.md", &[("alpha", 0, 1)]);
    t.write(
        "config.json",
        r#"{
  "spec_workflow_dir_name": ".sw",
  "specs_subdir": "s",
  "tasks_filename": "todo.md",
  "prompt_template": "Implement the next task of {spec_name} ({progress_summary}); it costs $0",
  "no_commit_limit": 2
}"#,
    );
    run_in(&t, &["init", "--spec-workflow", "--provider", "codex"]).code(0);
    let toml = t.read("spec-runner.toml");
    assert!(toml.contains("tasks = \".sw/s/alpha/todo.md\""), "{toml}");
    assert!(toml.contains("codex exec --full-auto"), "{toml}");
    // The written pipeline loads with the config.json (its breaker from no_commit_limit
    // is overridden by the file's own no_progress_limit).
    run_in(&t, &["validate"]).code(0);

    // With codex faked: the prompt from the template, `$0` kept literally.
    let path = fake_on_path(
        &t,
        "codex",
        &format!(
            "#!/bin/sh\nfor last; do :; done\nprintf '%s\\n' \"$last\" >> prompt.log\nexec {} .sw/s/alpha/todo.md\n",
            agent()
        ),
    );
    apply_with(&t, &[("PATH", &path)]).code(0);
    assert_eq!(
        t.read("prompt.log"),
        "Implement the next task of alpha (0/1 tasks complete (1 pending, 0 in progress)); it costs $0\n"
    );
}

#[test]
fn init_spec_workflow_without_a_tree_or_open_tasks_writes_nothing() {
    let t = Test::new();
    run_in(&t, &["init", "--spec-workflow"])
        .code(2)
        .stderr_has("no spec-workflow tree here");
    t.write(".spec-workflow/specs/x/tasks.md", "- [x] 1. done\n");
    run_in(&t, &["init", "--spec-workflow"])
        .code(2)
        .stderr_has("no spec with open tasks");
    assert!(!t.path().join("spec-runner.toml").exists());
    run_in(&t, &["init", "--model", "x"]).code(2);
}

#[test]
fn fail_fast_stops_a_loop_between_iterations_rather_than_calling_it_not_started() {
    // One slot: `work` runs its first iteration, then `xfail` takes the slot (specs start in name order) while the
    // next iteration waits for it, and fails.
    let t = repo(
        &format!(
            "jobs = 1\nfail_fast = true\nretry_max_retries = 0\n\
             [specs.work]\ncommand = '{}'\ntasks = \"tasks.md\"\n\
             [specs.xfail]\ncommand = 'exit 1'\n\
             [specs.yafter]\ncommand = 'true'\ndepends_on = [\"xfail\"]\n",
            agent()
        ),
        1,
        3,
    );
    let ev = apply_events(&t, &[], 1);
    assert_eq!(iterations(&ev), vec![(1, true, false)]);
    let work = of(&ev, "spec_finished", Some("work"))[0];
    assert_eq!(work["status"], "stopped", "{work}");
    assert_eq!(
        work["reason"], "not continued: fail_fast after `xfail` failed",
        "{work}"
    );
    // Iteration 2 was under way (announced; a resumed run continues it), none of its
    // attempts ran.
    assert_eq!(work["iterations"], 2, "{work}");
    assert_eq!(work["attempts"], 1, "{work}");
    // What never started is still called so.
    let later = of(&ev, "spec_finished", Some("yafter"))[0];
    assert_eq!(later["status"], "skipped", "{later}");
    let st = t.state();
    assert_eq!(st["specs"]["work"]["status"], "stopped");
    assert_eq!(st["specs"]["work"]["iteration"]["tasks"]["done"], 2);
}
