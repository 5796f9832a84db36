//! Loading, layering and validation, through the real binary (and, for the property
//! tests, through the library in-process).

use crate::harness::*;

/// A pipeline with one spec, for tests about policy rather than specs.
const ONE_SPEC: &str = "[specs.a]\ncommand = \"true\"\n";

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
        what: "unknown key in a variable",
        env: &[("SPEC_RUNNER_RETRY_MAX_RETRYS", "3")],
        source: "variable SPEC_RUNNER_RETRY_MAX_RETRYS",
        key: "retry_max_retrys",
        says: &["unknown key", "did you mean `retry_max_retries`?"],
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
    Bad {
        what: "a variable that is not SPEC_RUNNER_<KEY> or SPEC_RUNNER_SPECS__<SPEC>__<KEY>",
        env: &[("SPEC_RUNNER_A__B", "1")],
        source: "variable SPEC_RUNNER_A__B",
        key: "",
        says: &["SPEC_RUNNER_SPECS__<SPEC>__<KEY>"],
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
        says: &["-1", "≥ 0"],
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
        key: "specs.a/b",
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
        key: "specs.../x",
        says: &["`../x`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "absolute spec name",
        pipeline: "[specs.\"/etc\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs./etc",
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
        key: "specs.a b",
        says: &["`a b`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "spec name with a backslash",
        pipeline: "[specs.'a\\b']\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.a\\b",
        says: &["invalid spec name"],
        ..BAD
    },
    Bad {
        what: "non-ASCII spec name",
        pipeline: "[specs.\"é\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.é",
        says: &["`é`", "invalid spec name"],
        ..BAD
    },
    Bad {
        what: "empty spec name",
        pipeline: "[specs.\"\"]\ncommand = \"true\"\n",
        source: "spec-runner.toml:1:8",
        key: "specs.",
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
        source: "spec-runner.toml:3:14",
        key: "specs.a.depends_on",
        says: &["dependency cycle", "a → c → b → a"],
        ..BAD
    },
    Bad {
        what: "a spec that depends on itself",
        pipeline: "[specs.a]\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
        source: "spec-runner.toml:3:14",
        key: "specs.a.depends_on",
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
            "specs.bad/name",
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
