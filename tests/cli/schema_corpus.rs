//! The JSON schemas against the loader, on a corpus of pipeline files and `config.json`
//! files: the schema never rejects what the loader accepts (an editor must not flag a
//! file that works), and it rejects every bad case that JSON Schema can express.

use serde_json::Value;

use crate::harness::repo;

/// What the loader does with a case, and whether the schema can see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The loader accepts it: so must the schema.
    Ok,
    /// The loader rejects it, and so must the schema.
    Bad,
    /// The loader rejects it for a reason beyond JSON Schema (another spec's name, a
    /// regular expression's syntax, a signal's name, a duration's size in a string).
    LoaderOnly,
}
use Verdict::{Bad, LoaderOnly, Ok};

/// Values of each policy key, as TOML: set globally, per spec and in config.json.
const POLICY_VALUES: &[(&str, &str, Verdict)] = &[
    ("retry_max_retries", "0", Ok),
    ("retry_max_retries", "3", Ok),
    ("retry_max_retries", "4294967295", Ok),
    ("retry_max_retries", "4294967296", Bad),
    ("retry_max_retries", "-1", Bad),
    ("retry_max_retries", "2.5", Bad),
    ("retry_max_retries", "\"3\"", Bad),
    ("retry_max_retries", "true", Bad),
    ("retry_max_retries", "nan", Bad),
    ("retry_backoff_seconds", "0", Ok),
    ("retry_backoff_seconds", "1.5", Ok),
    ("retry_backoff_seconds", "\"90s\"", Ok),
    ("retry_backoff_seconds", "\" 2 min \"", Ok),
    ("retry_backoff_seconds", "\"250ms\"", Ok),
    ("retry_backoff_seconds", "\".5s\"", Ok),
    ("retry_backoff_seconds", "\"1h 30m\"", Ok),
    ("retry_backoff_seconds", "\"2m30s\"", Ok),
    ("retry_backoff_seconds", "-1", Bad),
    ("retry_backoff_seconds", "\"soon\"", Bad),
    ("retry_backoff_seconds", "\"-5s\"", Bad),
    ("retry_backoff_seconds", "\"5 parsecs\"", Bad),
    ("retry_backoff_seconds", "true", Bad),
    ("retry_backoff_seconds", "1e10", Bad),
    ("retry_backoff_seconds", "inf", Bad),
    ("retry_backoff_seconds", "\"20000d\"", LoaderOnly),
    ("retry_backoff_multiplier", "1", Ok),
    ("retry_backoff_multiplier", "2.5", Ok),
    ("retry_backoff_multiplier", "0.5", Bad),
    ("retry_backoff_multiplier", "\"2\"", Bad),
    ("retry_backoff_multiplier", "nan", Bad),
    ("retry_max_backoff_seconds", "\"1h\"", Ok),
    ("retry_max_backoff_seconds", "[]", Bad),
    ("retry_jitter", "\"none\"", Ok),
    ("retry_jitter", "\"full\"", Ok),
    ("retry_jitter", "\"equal\"", Ok),
    ("retry_jitter", "\"decorrelated\"", Ok),
    ("retry_jitter", "\"sometimes\"", Bad),
    ("retry_jitter", "\"Full\"", Bad),
    ("retry_jitter", "1", Bad),
    ("retry_on_crash", "false", Ok),
    ("retry_on_crash", "\"yes\"", Bad),
    ("retry_on_crash", "1", Bad),
    ("retry_max_total_seconds", "\"2h\"", Ok),
    ("retry_max_total_seconds", "0", Ok),
    ("retry_max_total_seconds", "{}", Bad),
    ("retry_log_dir", "\"logs\"", Ok),
    ("retry_log_dir", "5", Bad),
    (
        "retry_rules",
        "[{ exit_codes = [1, 255], action = \"fail\" }]",
        Ok,
    ),
    (
        "retry_rules",
        "[{ exit_codes = [0], action = \"retry\" }]",
        Ok,
    ),
    ("retry_rules", "[{ action = \"retry\" }]", Ok),
    (
        "retry_rules",
        "[{ signals = [\"SIGSEGV\", \"kill\"], action = \"retry\" }]",
        Ok,
    ),
    (
        "retry_rules",
        "[{ timeout = \"activity\", action = \"abort\" }]",
        Ok,
    ),
    (
        "retry_rules",
        "[{ output = '(?i)rate limit', action = \"retry\", backoff_seconds = 60 }]",
        Ok,
    ),
    (
        "retry_rules",
        "[{ action = \"retry\", backoff_seconds = \"1m\" }]",
        Ok,
    ),
    ("retry_rules", "[]", Ok),
    (
        "retry_rules",
        "[{ exit_codes = [256], action = \"fail\" }]",
        Bad,
    ),
    (
        "retry_rules",
        "[{ exit_codes = [-1], action = \"fail\" }]",
        Bad,
    ),
    (
        "retry_rules",
        "[{ exit_codes = [], action = \"fail\" }]",
        Bad,
    ),
    (
        "retry_rules",
        "[{ exit_codes = [1.5], action = \"fail\" }]",
        Bad,
    ),
    ("retry_rules", "[{ signals = [], action = \"fail\" }]", Bad),
    (
        "retry_rules",
        "[{ signals = [\"SIGNOPE\"], action = \"fail\" }]",
        LoaderOnly,
    ),
    (
        "retry_rules",
        "[{ timeout = \"sometimes\", action = \"fail\" }]",
        Bad,
    ),
    (
        "retry_rules",
        "[{ output = \"(\", action = \"retry\" }]",
        LoaderOnly,
    ),
    ("retry_rules", "[{ action = \"explode\" }]", Bad),
    ("retry_rules", "[{ exit_codes = [1] }]", Bad),
    (
        "retry_rules",
        "[{ exit_code = [1], action = \"fail\" }]",
        Bad,
    ),
    (
        "retry_rules",
        "[{ action = \"retry\", backoff_seconds = -1 }]",
        Bad,
    ),
    ("retry_rules", "{ action = \"retry\" }", Bad),
    ("timeout_seconds", "0.5", Ok),
    ("timeout_seconds", "\"10m\"", Ok),
    ("timeout_seconds", "\"0.1s\"", Ok),
    ("timeout_seconds", "\"10\"", Ok),
    ("timeout_seconds", "\"1h30m\"", Ok),
    ("timeout_seconds", "\"0h0m\"", Bad),
    ("timeout_seconds", "0", Bad),
    ("timeout_seconds", "0.0", Bad),
    ("timeout_seconds", "\"0s\"", Bad),
    ("timeout_seconds", "\"0.000ms\"", Bad),
    ("timeout_seconds", "-3", Bad),
    ("activity_timeout_seconds", "600", Ok),
    ("activity_timeout_seconds", "\"5m\"", Ok),
    ("activity_timeout_seconds", "0", Bad),
    ("activity_timeout_seconds", "\"0ms\"", Bad),
    ("activity_timeout_seconds", "nan", Bad),
    ("terminate_grace_seconds", "0", Ok),
    ("terminate_grace_seconds", "\"30s\"", Ok),
    ("terminate_grace_seconds", "\"long\"", Bad),
    ("backend", "\"local\"", Ok),
    ("backend", "\"k8s\"", Bad),
    ("backend", "true", Bad),
];

/// Run-wide keys: at the top of the pipeline file and in config.json; never per spec.
const RUN_VALUES: &[(&str, &str, Verdict)] = &[
    ("jobs", "1", Ok),
    ("jobs", "1024", Ok),
    ("jobs", "0", Bad),
    ("jobs", "1025", Bad),
    ("jobs", "-1", Bad),
    ("jobs", "\"2\"", Bad),
    ("jobs", "nan", Bad),
    ("fail_fast", "true", Ok),
    ("fail_fast", "\"no\"", Bad),
    ("retry_budget", "0", Ok),
    ("retry_budget", "10", Ok),
    ("retry_budget", "-1", Bad),
    ("retry_budget", "4294967296", Bad),
    ("state_dir", "\"state\"", Ok),
    ("state_dir", "5", Bad),
    ("junit_path", "\"reports/junit.xml\"", Ok),
    ("junit_path", "[]", Bad),
    (
        "slurm",
        "{ partition = \"gpu\", account = \"a\", qos = \"q\" }",
        Ok,
    ),
    ("slurm", "{ sbatch_args = [\"--mem=4G\", \"-c2\"] }", Ok),
    (
        "slurm",
        "{ poll_interval_seconds = 2, time_limit_margin_seconds = \"10m\" }",
        Ok,
    ),
    ("slurm", "{ sbatch_args = [\"job.sh\"] }", Bad),
    ("slurm", "{ sbatch_args = [\"--output=x\"] }", LoaderOnly),
    ("slurm", "{ partition = \" \" }", Bad),
    ("slurm", "{ partition = 5 }", Bad),
    ("slurm", "{ nodes = 2 }", Bad),
    ("slurm", "{ poll_interval_seconds = 0.001 }", LoaderOnly),
];

/// Whole spec tables (after `[specs.NAME]`), and what the loader makes of them.
const SPECS: &[(&str, Verdict)] = &[
    ("[specs.a]\ncommand = \"make\"\n", Ok),
    ("[specs.a]\ncommand = [\"ls\", \"-l\"]\n", Ok),
    ("[specs.a]\ncommand = [\"ls\", \"\"]\n", Ok),
    ("[specs.a]\ncommand = \" x \"\n", Ok),
    ("[specs.a]\ncommand = \"\"\n", Bad),
    ("[specs.a]\ncommand = \"  \\t \"\n", Bad),
    ("[specs.a]\ncommand = []\n", Bad),
    ("[specs.a]\ncommand = [\"\"]\n", Bad),
    ("[specs.a]\ncommand = [\" \", \"x\"]\n", Bad),
    ("[specs.a]\ncommand = 5\n", Bad),
    ("[specs.a]\ncommand = [\"ls\", 7]\n", Bad),
    ("[specs.a]\ncwd = \"sub\"\n", Bad),
    ("[specs.a]\ncommand = \"x\"\ncwd = \"sub\"\n", Ok),
    ("[specs.a]\ncommand = \"x\"\ncwd = 5\n", Bad),
    (
        "[specs.a]\ncommand = \"x\"\nenv = { RUST_LOG = \"info\", EMPTY = \"\" }\n",
        Ok,
    ),
    (
        "[specs.a]\ncommand = \"x\"\nenv = { \"A=B\" = \"x\" }\n",
        Bad,
    ),
    ("[specs.a]\ncommand = \"x\"\nenv = { \"\" = \"x\" }\n", Bad),
    ("[specs.a]\ncommand = \"x\"\nenv = { A = 1 }\n", Bad),
    ("[specs.a]\ncommand = \"x\"\nenv = [\"A=1\"]\n", Bad),
    (
        "[specs.a]\ncommand = \"x\"\ndepends_on = [\"b\"]\n[specs.b]\ncommand = \"y\"\n",
        Ok,
    ),
    (
        "[specs.a]\ncommand = \"x\"\ndepends_on = [\"ghost\"]\n",
        LoaderOnly,
    ),
    (
        "[specs.a]\ncommand = \"x\"\ndepends_on = [\"a\"]\n",
        LoaderOnly,
    ),
    ("[specs.a]\ncommand = \"x\"\ndepends_on = [\"../x\"]\n", Bad),
    ("[specs.a]\ncommand = \"x\"\ndepends_on = \"b\"\n", Bad),
    ("[specs.\"v1.2\"]\ncommand = \"x\"\n", Ok),
    ("[specs.\"a/b\"]\ncommand = \"x\"\n", Bad),
    ("[specs.\"a..b\"]\ncommand = \"x\"\n", Bad),
    ("[specs.\"\"]\ncommand = \"x\"\n", Bad),
    ("[specs.a]\ncommand = \"x\"\ncomand = \"y\"\n", Bad),
    ("[specs.a]\ncommand = \"x\"\njobs = 2\n", Bad),
    ("[specs.a]\ncommand = \"x\"\njunit_path = \"j.xml\"\n", Bad),
    (
        "[specs.a]\ncommand = \"x\"\non_exhausted = \"notify-send failed\"\n",
        Ok,
    ),
    (
        "[specs.a]\ncommand = \"x\"\non_exhausted = [\"notify-send\", \"failed\"]\n",
        Ok,
    ),
    ("[specs.a]\ncommand = \"x\"\non_exhausted = \"\"\n", Bad),
    ("[specs.a]\ncommand = \"x\"\non_exhausted = [\"\"]\n", Bad),
    ("[specs.a]\ncommand = \"x\"\non_exhausted = 5\n", Bad),
    ("specs = 5\n", Bad),
    ("[specs]\n", Ok),
    ("retyr_max_retries = 2\n[specs.a]\ncommand = \"x\"\n", Bad),
    ("repos_root = \"~\"\n[specs.a]\ncommand = \"x\"\n", Bad),
];

/// Whole config.json files.
const CONFIG_JSON: &[(&str, Verdict)] = &[
    (r#"{}"#, Ok),
    (
        r#"{"retry_max_retries": 2, "repos_root": "~/code", "codex_command": ["codex"]}"#,
        Ok,
    ),
    (r#"{"retry_max_retries": null, "jobs": null}"#, Ok),
    (r#"{"on_exhausted": "notify"}"#, Bad),
    (r#"{"specs": {}}"#, Bad),
    (r#"{"retry_backof_seconds": 1}"#, Bad),
    (r#"{"jobs": "2"}"#, Bad),
    (
        r#"{"retry_rules": [{"action": "retry", "exit_codes": [1]}]}"#,
        Ok,
    ),
    (
        r#"{"retry_rules": [{"action": "retry", "exit_codes": null}]}"#,
        Bad,
    ),
];

/// One case: the pipeline file and config.json to load.
struct Case {
    what: String,
    pipeline: String,
    config: Option<String>,
    verdict: Verdict,
}

fn corpus() -> Vec<Case> {
    let spec = "[specs.a]\ncommand = \"true\"\n";
    let mut cases = Vec::new();
    for &(key, value, verdict) in POLICY_VALUES {
        cases.push(Case {
            what: format!("global {key} = {value}"),
            pipeline: format!("{key} = {value}\n{spec}"),
            config: None,
            verdict,
        });
        cases.push(Case {
            what: format!("per-spec {key} = {value}"),
            pipeline: format!("{spec}{key} = {value}\n"),
            config: None,
            verdict,
        });
        if let Some(json) = as_json(key, value) {
            // The loader refuses commands in config.json, whatever their value.
            let verdict = if key == "on_exhausted" { Bad } else { verdict };
            cases.push(Case {
                what: format!("config.json {key} = {value}"),
                pipeline: spec.into(),
                config: Some(json),
                verdict,
            });
        }
    }
    for &(key, value, verdict) in RUN_VALUES {
        cases.push(Case {
            what: format!("global {key} = {value}"),
            pipeline: format!("{key} = {value}\n{spec}"),
            config: None,
            verdict,
        });
        if let Some(json) = as_json(key, value) {
            cases.push(Case {
                what: format!("config.json {key} = {value}"),
                pipeline: spec.into(),
                config: Some(json),
                verdict,
            });
        }
    }
    for &(text, verdict) in SPECS {
        cases.push(Case {
            what: format!("pipeline {text:?}"),
            pipeline: text.into(),
            config: None,
            verdict,
        });
    }
    for &(text, verdict) in CONFIG_JSON {
        cases.push(Case {
            what: format!("config.json {text}"),
            pipeline: spec.into(),
            config: Some(text.into()),
            verdict,
        });
    }
    cases
}

/// `{key: value}` as config.json's text, or `None` where JSON cannot hold the value
/// (`nan`, `inf`).
fn as_json(key: &str, value: &str) -> Option<String> {
    let doc: toml::Table = toml::from_str(&format!("{key} = {value}")).expect("TOML");
    let v = serde_json::to_value(&doc).ok()?;
    let text = serde_json::to_string(&v).ok()?;
    (!text.contains("null")).then_some(text)
}

/// The document an editor validates: TOML read as taplo reads it (`nan` and `inf`,
/// which JSON lacks, become `null`).
fn toml_as_json(text: &str) -> Value {
    let doc: toml::Table = toml::from_str(text).expect("TOML");
    fn convert(v: &toml::Value) -> Value {
        match v {
            toml::Value::Float(f) if !f.is_finite() => Value::Null,
            toml::Value::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            toml::Value::Integer(i) => Value::from(*i),
            toml::Value::String(s) => Value::from(s.as_str()),
            toml::Value::Boolean(b) => Value::from(*b),
            toml::Value::Datetime(d) => Value::from(d.to_string()),
            toml::Value::Array(a) => Value::Array(a.iter().map(convert).collect()),
            toml::Value::Table(t) => {
                Value::Object(t.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
            }
        }
    }
    Value::Object(doc.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
}

fn validator(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("schema").join(name)).expect("schema");
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema/{name}: {e}"))
}

/// The loader's verdict: `Ok(())` or its problem lines.
fn load(dir: &std::path::Path, case: &Case) -> Result<(), Vec<String>> {
    std::fs::write(dir.join("spec-runner.toml"), &case.pipeline).expect("write");
    let config = dir.join("config.json");
    match &case.config {
        Some(c) => std::fs::write(&config, c).expect("write"),
        None => {
            let _ = std::fs::remove_file(&config);
        }
    }
    spec_runner::config::load(&spec_runner::config::LoadOptions {
        cwd: dir.to_path_buf(),
        ..Default::default()
    })
    .map(|_| ())
    .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

#[test]
fn the_schemas_accept_what_the_loader_accepts_and_reject_what_they_can_express() {
    let pipeline_schema = validator("spec-runner.schema.json");
    let config_schema = validator("config.schema.json");
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = corpus();
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let loader = load(dir.path(), case);
        let mut schema_errors: Vec<String> = pipeline_schema
            .iter_errors(&toml_as_json(&case.pipeline))
            .map(|e| format!("spec-runner.toml {}: {e}", e.instance_path))
            .collect();
        if let Some(c) = &case.config {
            let doc: Value = serde_json::from_str(c).expect("JSON");
            schema_errors.extend(
                config_schema
                    .iter_errors(&doc)
                    .map(|e| format!("config.json {}: {e}", e.instance_path)),
            );
        }
        let problem = match (case.verdict, &loader, schema_errors.is_empty()) {
            (Ok, Result::Ok(()), true) | (Bad, Err(_), false) | (LoaderOnly, Err(_), _) => None,
            (Ok | LoaderOnly, Result::Ok(()), false) | (Bad, Result::Ok(()), false) => Some(
                format!("the schema rejects what the loader accepts: {schema_errors:?}"),
            ),
            (Ok, Err(p), _) => Some(format!("the loader rejects it: {p:?}")),
            (Bad | LoaderOnly, Result::Ok(()), true) => Some("the loader accepts it".into()),
            (Bad, Err(p), true) => Some(format!("the schema accepts it; the loader says {p:?}")),
        };
        if let Some(p) = problem {
            wrong.push(format!("{} ({:?}): {p}", case.what, case.verdict));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// Every `format` in the schemas is one of JSON Schema's own: ajv, in its default
/// strict mode, refuses a schema with any other (`uint32`, `double`).
#[test]
fn the_schemas_use_only_standard_formats_and_no_null() {
    fn walk(v: &Value, at: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(f) = map.get("format") {
                    let standard = [
                        "date-time",
                        "date",
                        "time",
                        "duration",
                        "email",
                        "hostname",
                        "ipv4",
                        "ipv6",
                        "uri",
                        "uri-reference",
                        "uuid",
                        "regex",
                    ];
                    if !f.as_str().is_some_and(|f| standard.contains(&f)) {
                        found.push(format!("{at}: format {f}"));
                    }
                }
                if let Some(Value::Array(branches)) = map.get("oneOf")
                    && branches.iter().all(|b| b.get("const").is_some())
                {
                    found.push(format!("{at}: oneOf of consts instead of enum"));
                }
                for (k, child) in map {
                    walk(child, &format!("{at}/{k}"), found);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{at}/{i}"), found);
                }
            }
            Value::String(s) if s == "null" && (at.ends_with("/type") || at.contains("/type/")) => {
                found.push(format!("{at}: null"));
            }
            _ => {}
        }
    }
    let text = std::fs::read_to_string(repo().join("schema/spec-runner.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut found = Vec::new();
    walk(&schema, "", &mut found);
    assert!(found.is_empty(), "{found:#?}");
    let text = std::fs::read_to_string(repo().join("schema/config.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    assert!(schema["properties"].get("on_exhausted").is_none());
    assert!(
        schema["description"]
            .as_str()
            .is_some_and(|d| d.contains("config.json")),
        "{}",
        schema["description"]
    );
}

/// An editor's message for a wrong enum value names the values that would do, rather
/// than "not valid under any of the schemas listed in the 'anyOf' keyword".
#[test]
fn a_wrong_enum_value_is_told_with_the_values_that_would_do() {
    let schema = validator("spec-runner.schema.json");
    for (doc, values) in [
        (
            serde_json::json!({"retry_jitter": "sometimes"}),
            ["none", "full", "equal", "decorrelated"].as_slice(),
        ),
        (
            serde_json::json!({"retry_rules": [{"action": "explode"}]}),
            ["retry", "fail", "abort"].as_slice(),
        ),
    ] {
        let errors: Vec<String> = schema.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        // (This validator names the first two and counts the rest.)
        assert!(errors[0].contains("is not one of"), "{errors:?}");
        assert!(
            errors[0].contains(&format!("\"{}\"", values[0])),
            "{errors:?}"
        );
        assert!(!errors[0].contains("anyOf"), "{errors:?}");
    }
}
