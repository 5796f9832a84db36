//! Matrix fan-out: one spec, one instance per combination of values.

use serde_json::{Value, json};

use crate::harness::*;
use crate::procs::*;

const MATRIX: &str = r#"
[specs.test]
command = ["sh", "-c", "echo \"$1 on $SPEC_RUNNER_MATRIX_PY ($WHICH) in $(basename \"$PWD\")\" >> ../ran", "sh", "${matrix.file}"]
cwd = "in-${matrix.py}"
env = { WHICH = "py${matrix.py}" }
matrix = { file = ["a.py", "b.py"], py = ["3.11", "3.12"] }

[specs.report]
command = "cat ran > report"
depends_on = ["test"]

[specs.other]
command = "true"
"#;

const INSTANCES: [&str; 4] = [
    "test-a.py-3.11",
    "test-a.py-3.12",
    "test-b.py-3.11",
    "test-b.py-3.12",
];

fn matrix_test() -> Test {
    let t = Test::with_pipeline(MATRIX);
    t.write("in-3.11/.keep", "").write("in-3.12/.keep", "");
    t
}

fn names(v: &Value) -> Vec<String> {
    v["specs"]
        .as_array()
        .expect("specs")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_matrix_makes_one_instance_per_combination_and_plan_lists_them() {
    let t = matrix_test();
    let run = run_in(&t, &["plan", "--format", "json"]);
    run.code(0);
    let p = run.json();
    let mut expected: Vec<String> = INSTANCES.iter().map(|s| s.to_string()).collect();
    expected.extend(["other".to_string(), "report".to_string()]);
    expected.sort();
    assert_eq!(names(&p), expected);
    let spec = |name: &str| -> Value {
        p["specs"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let one = spec("test-b.py-3.12");
    assert_eq!(
        one["command"],
        json!([
            "sh",
            "-c",
            "echo \"$1 on $SPEC_RUNNER_MATRIX_PY ($WHICH) in $(basename \"$PWD\")\" >> ../ran",
            "sh",
            "b.py"
        ])
    );
    assert_eq!(one["cwd"], "in-3.12");
    assert_eq!(one["env"]["WHICH"], "py3.12");
    assert_eq!(one["env"]["SPEC_RUNNER_MATRIX_FILE"], "b.py");
    assert_eq!(one["env"]["SPEC_RUNNER_MATRIX_PY"], "3.12");
    // depends_on on the matrix name waits for every instance.
    assert_eq!(spec("report")["depends_on"], json!(INSTANCES));
    assert_eq!(p["order"][1], json!(["report"]));

    // `plan test` shows the instances, in text too.
    let run = run_in(&t, &["plan", "test"]);
    run.code(0)
        .stdout_has("; showing 4\n")
        .stdout_lacks("[report]");
    for name in INSTANCES {
        run.stdout_has(&format!("[{name}] "));
    }
}

#[test]
fn apply_of_the_matrix_name_runs_every_instance_and_dependents_wait_for_all() {
    let t = matrix_test();
    let run = run_in(&t, &["apply", "test", "--format", "json"]);
    run.code(0);
    let ev = events(&run.stdout);
    let mut ran: Vec<String> = of(&ev, "attempt_started", None)
        .iter()
        .map(|e| e["spec"].as_str().unwrap_or_default().to_string())
        .collect();
    ran.sort();
    assert_eq!(ran, INSTANCES);
    let mut lines: Vec<String> = t.read("ran").lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "a.py on 3.11 (py3.11) in in-3.11",
            "a.py on 3.12 (py3.12) in in-3.12",
            "b.py on 3.11 (py3.11) in in-3.11",
            "b.py on 3.12 (py3.12) in in-3.12",
        ]
    );

    // One instance's log by its name; the matrix name is not one spec.
    run_in(&t, &["logs", "test-a.py-3.12"]).code(0);
    run_in(&t, &["logs", "test"])
        .code(2)
        .stderr_has("`test` is a matrix of 4 instances: name one of them (test-a.py-3.11, ");

    // The whole pipeline: report starts only after every instance finished.
    let run = run_in(&t, &["apply", "--fresh", "--format", "json", "-j", "4"]);
    run.code(0);
    let ev = events(&run.stdout);
    let report_start = ev
        .iter()
        .position(|e| e["event"] == "attempt_started" && e["spec"] == "report")
        .expect("report ran");
    for name in INSTANCES {
        let done = ev
            .iter()
            .position(|e| e["event"] == "spec_finished" && e["spec"] == name)
            .unwrap_or_else(|| panic!("{name} finished"));
        assert!(done < report_start, "{name} finished after report started");
    }
    assert_eq!(t.read("report").lines().count(), 8);
}

#[test]
fn an_instance_can_be_overridden_by_its_own_variable_or_all_by_the_matrix_name() {
    let t = matrix_test();
    let p = |env: &[(&str, &str)]| {
        let mut cmd = t.command();
        cmd.args(["plan", "--format", "json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["specs"]
            .as_array()
            .expect("specs")
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_string(),
                    s["policy"]["retry_max_retries"].as_u64().unwrap_or(99),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let r = p(&[("SPEC_RUNNER_SPECS__TEST_A_PY_3_12__RETRY_MAX_RETRIES", "7")]);
    assert_eq!(r["test-a.py-3.12"], 7);
    assert_eq!(r["test-a.py-3.11"], 3);
    // The matrix name sets every instance; an instance's own variable still wins.
    let r = p(&[
        ("SPEC_RUNNER_SPECS__TEST__RETRY_MAX_RETRIES", "5"),
        ("SPEC_RUNNER_SPECS__TEST_B_PY_3_11__RETRY_MAX_RETRIES", "1"),
    ]);
    assert_eq!(r["test-a.py-3.11"], 5);
    assert_eq!(r["test-b.py-3.12"], 5);
    assert_eq!(r["test-b.py-3.11"], 1);
    assert_eq!(r["report"], 3);
}

#[test]
fn a_glob_gives_the_sorted_files_relative_to_the_pipeline_file() {
    let t = Test::new();
    t.write(
        "ci/spec-runner.toml",
        "[specs.lint]\ncommand = \"echo ${matrix.file} >> linted\"\nmatrix = { file = { glob = \"scripts/*.sh\" } }\n",
    );
    for f in [
        "ci/scripts/b.sh",
        "ci/scripts/a.sh",
        "ci/scripts/c.txt",
        "scripts/x.sh",
    ] {
        t.write(f, "");
    }
    let run = run_in(
        &t,
        &["-f", "ci/spec-runner.toml", "plan", "--format", "json"],
    );
    run.code(0);
    assert_eq!(names(&run.json()), ["lint-a.sh", "lint-b.sh"]);
    run_in(
        &t,
        &[
            "-f",
            "ci/spec-runner.toml",
            "apply",
            "-j",
            "1",
            "--progress",
            "none",
        ],
    )
    .code(0);
    let mut linted: Vec<String> = t.read("ci/linted").lines().map(String::from).collect();
    linted.sort();
    assert_eq!(linted, ["scripts/a.sh", "scripts/b.sh"]);
}

#[test]
fn matrix_mistakes_are_clear_errors_with_file_line_and_column() {
    let run = Test::with_pipeline(
        r#"[specs.a]
command = "run ${matrix.fiel} ${matrix.py}"
matrix = { file = ["x"], py = ["1"] }
[specs.b]
command = "true"
matrix = { py = [] }
[specs.c]
command = "true"
matrix = { file = { glob = "nothing/*.py" } }
[specs.d]
command = "true"
matrix = { v = ["x"] }
[specs.d-x]
command = "true"
[specs.e]
command = "echo ${matrix.v}"
[specs.f]
command = "true"
matrix = { "bad-key" = ["1"], n = [1.5] }
"#,
    )
    .args(&["validate"])
    .run();
    run.code(2)
        .problem(
            "spec-runner.toml:2:11",
            "specs.a.command",
            &[
                "`${matrix.fiel}` names no key of this spec's matrix",
                "did you mean `file`?",
            ],
        )
        .problem(
            "spec-runner.toml:6:17",
            "specs.b.matrix.py",
            &["empty list"],
        )
        .problem(
            "spec-runner.toml:9:28",
            "specs.c.matrix.file.glob",
            &["glob `nothing/*.py` matches nothing"],
        )
        .problem(
            "spec-runner.toml:12:1",
            "specs.d.matrix",
            &["instance `d-x` has the name of another spec"],
        )
        .problem(
            "spec-runner.toml:16:11",
            "specs.e.command",
            &["`${matrix.v}` in a spec without a matrix"],
        )
        .problem(
            "spec-runner.toml:19:12",
            "specs.f.matrix.bad-key",
            &["invalid matrix key `bad-key`"],
        )
        .problem(
            "spec-runner.toml:19:36",
            "specs.f.matrix.n[0]",
            &["1.5", "write it as a string"],
        );
    assert_eq!(run.problems().len(), 7, "{}", run.stderr);

    // A variable cannot set a matrix.
    Test::with_pipeline("[specs.a]\ncommand = \"true\"\n")
        .env("SPEC_RUNNER_SPECS__A__MATRIX", "{ x = [\"1\"] }")
        .args(&["validate"])
        .run()
        .code(2)
        .problem(
            "variable SPEC_RUNNER_SPECS__A__MATRIX",
            "specs.a.matrix",
            &["only be set in the pipeline file"],
        );
    // A problem of a matrix spec's other keys is reported once, at the spec.
    let run = Test::with_pipeline(
        "[specs.t]\ncommand = \"true\"\ntimeout_seconds = \"soon\"\nmatrix = { n = [\"1\", \"2\", \"3\"] }\n",
    )
    .args(&["validate"])
    .run();
    run.code(2).problem(
        "spec-runner.toml:3:19",
        "specs.t.timeout_seconds",
        &["soon"],
    );
    assert_eq!(run.problems().len(), 1, "{}", run.stderr);
}
