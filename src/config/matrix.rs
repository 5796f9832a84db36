//! Matrix fan-out: a spec with `matrix = { KEY = [values…] }` becomes one spec per
//! combination of values, before anything else looks at the specs.
//!
//! Works on the pipeline file's values as read (figment values), so that variables,
//! validation, origins and the runner see plain specs. Reads the file system only to
//! expand `{ glob = "…" }`; reports problems as key paths, never prints.

use std::collections::BTreeMap;
use std::path::Path;

use figment::value::{Dict, Value};

use super::diag::{PathSeg, did_you_mean, path, show_value};
use super::load::Target;

/// The most instances one matrix may make: beyond, a typo (a glob over a whole tree)
/// is likelier than intent.
pub const MAX_INSTANCES: usize = 10_000;

/// Prefix of the variables that give an instance its matrix values.
pub const ENV_PREFIX: &str = "SPEC_RUNNER_MATRIX_";

/// One matrix key and its values.
#[derive(Debug, Clone)]
struct Axis {
    key: String,
    values: Vec<String>,
    /// For a glob: its folder part (`tests/` of `tests/test_*.py`), left out of
    /// instance names, where it would only repeat.
    name_prefix: String,
}

/// A problem with a matrix, at a key path of the pipeline file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixProblem {
    pub path: Vec<PathSeg>,
    pub target: Target,
    pub message: String,
}

/// What expanding the matrices of a `specs` table found.
#[derive(Debug, Default)]
pub struct Expansion {
    /// Matrix spec name → its instances' names, sorted.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Instance name → the matrix spec it came from.
    pub instance_of: BTreeMap<String, String>,
    pub problems: Vec<MatrixProblem>,
}

/// Replaces every spec with a `matrix` in `specs` by its instances. A spec whose matrix
/// has a problem stays as one spec without its matrix (so that its other keys are
/// still checked) and the problem is reported. `dir` is the pipeline file's folder:
/// globs are relative to it.
pub fn expand(specs: &mut Dict, dir: &Path) -> Expansion {
    let mut out = Expansion::default();
    let names: Vec<String> = specs.keys().cloned().collect();
    let mut made: BTreeMap<String, String> = BTreeMap::new();
    for name in names {
        let Some(Value::Dict(_, table)) = specs.get_mut(&name) else {
            continue;
        };
        let Some(matrix) = table.remove("matrix") else {
            // `${matrix.KEY}` in a spec without a matrix would run literally.
            check_no_placeholders(&name, table, &mut out.problems);
            continue;
        };
        let base = table.clone();
        let at = path(&["specs", &name, "matrix"]);
        let Some(axes) = axes(&matrix, &at, dir, &mut out.problems) else {
            continue;
        };
        let mut instances = Vec::new();
        let mut ok = true;
        for combo in combinations(&axes) {
            let vars: BTreeMap<String, String> = axes
                .iter()
                .zip(&combo)
                .map(|(a, v)| (a.key.clone(), (*v).clone()))
                .collect();
            let instance = instance_name(&name, &axes, &combo);
            match instance_table(&name, &base, &vars, &mut out.problems) {
                Some(t) => instances.push((instance, t)),
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        // Names must be unique: among the instances, and against every other spec.
        let mut seen = std::collections::BTreeSet::new();
        for (instance, _) in &instances {
            let clash = if !seen.insert(instance.clone()) {
                Some(format!(
                    "two combinations make the same instance name `{instance}` (values differ only in characters a spec name cannot hold): make the values distinct"
                ))
            } else if instance != &name && specs.contains_key(instance) {
                Some(format!(
                    "instance `{instance}` has the name of another spec: rename one of them"
                ))
            } else {
                made.get(instance).map(|other| {
                    format!(
                        "instance `{instance}` is also an instance of the matrix of `{other}`: rename one of the specs"
                    )
                })
            };
            if let Some(message) = clash {
                out.problems.push(MatrixProblem {
                    path: at.clone(),
                    target: Target::Key,
                    message,
                });
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        specs.remove(&name);
        let mut group = Vec::with_capacity(instances.len());
        for (instance, t) in instances {
            made.insert(instance.clone(), name.clone());
            out.instance_of.insert(instance.clone(), name.clone());
            group.push(instance.clone());
            specs.insert(instance, Value::from(t));
        }
        group.sort();
        out.groups.insert(name, group);
    }
    out
}

/// The keys and their values, in key order; `None` after reporting a problem.
fn axes(
    matrix: &Value,
    at: &[PathSeg],
    dir: &Path,
    problems: &mut Vec<MatrixProblem>,
) -> Option<Vec<Axis>> {
    let problem = |problems: &mut Vec<MatrixProblem>, p: Vec<PathSeg>, t: Target, m: String| {
        problems.push(MatrixProblem {
            path: p,
            target: t,
            message: m,
        });
    };
    let Value::Dict(_, keys) = matrix else {
        problem(
            problems,
            at.to_vec(),
            Target::Value,
            format!(
                "expected a table of lists, e.g. {{ file = [\"a.py\", \"b.py\"] }}, found {}",
                show_value(matrix)
            ),
        );
        return None;
    };
    if keys.is_empty() {
        problem(
            problems,
            at.to_vec(),
            Target::Value,
            "empty matrix: expected at least one key with a list of values".into(),
        );
        return None;
    }
    let before = problems.len();
    let mut axes = Vec::with_capacity(keys.len());
    let mut count: usize = 1;
    for (key, value) in keys {
        let mut at_key = at.to_vec();
        at_key.push(PathSeg::Key(key.clone()));
        if !valid_key(key) {
            problem(
                problems,
                at_key.clone(),
                Target::Key,
                format!(
                    "invalid matrix key `{key}`: expected letters, digits and `_`, not starting with a digit (it is used in ${{matrix.{key}}} and SPEC_RUNNER_MATRIX_<KEY>)"
                ),
            );
            continue;
        }
        let mut name_prefix = String::new();
        let values = match value {
            Value::Array(_, items) => {
                let mut values = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let mut at_item = at_key.clone();
                    at_item.push(PathSeg::Index(i));
                    match scalar(item) {
                        Ok(v) => values.push(v),
                        Err(m) => problem(problems, at_item, Target::Value, m),
                    }
                }
                if items.is_empty() {
                    problem(
                        problems,
                        at_key.clone(),
                        Target::Value,
                        "empty list: a matrix key needs at least one value (an empty one would make no instance at all)".into(),
                    );
                }
                values
            }
            Value::Dict(_, d) => match (d.get("glob"), d.len()) {
                (Some(Value::String(_, pattern)), 1) => {
                    let mut at_glob = at_key.clone();
                    at_glob.push(PathSeg::Key("glob".into()));
                    name_prefix = literal_folder(pattern);
                    match glob_values(pattern, dir) {
                        Ok(v) => v,
                        Err(m) => {
                            problem(problems, at_glob, Target::Value, m);
                            Vec::new()
                        }
                    }
                }
                _ => {
                    problem(
                        problems,
                        at_key.clone(),
                        Target::Value,
                        format!(
                            "expected a list of values or {{ glob = \"pattern\" }}, found {}",
                            show_value(value)
                        ),
                    );
                    Vec::new()
                }
            },
            other => {
                problem(
                    problems,
                    at_key.clone(),
                    Target::Value,
                    format!(
                        "expected a list of values or {{ glob = \"pattern\" }}, found {}",
                        show_value(other)
                    ),
                );
                Vec::new()
            }
        };
        count = count.saturating_mul(values.len().max(1));
        axes.push(Axis {
            key: key.clone(),
            values,
            name_prefix,
        });
    }
    if problems.len() > before {
        return None;
    }
    if count > MAX_INSTANCES {
        problem(
            problems,
            at.to_vec(),
            Target::Value,
            format!("{count} combinations: expected at most {MAX_INSTANCES} instances per matrix"),
        );
        return None;
    }
    Some(axes)
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A matrix value as text: strings as they are, whole numbers and booleans as written.
fn scalar(v: &Value) -> Result<String, String> {
    use figment::value::Num;
    match v {
        Value::String(_, s) => Ok(s.clone()),
        Value::Bool(_, b) => Ok(b.to_string()),
        Value::Char(_, c) => Ok(c.to_string()),
        Value::Num(_, n) => match n {
            Num::F32(_) | Num::F64(_) => Err(format!(
                "{} is a fraction, which TOML may not keep as written (3.10 reads as 3.1): write it as a string, e.g. \"3.10\"",
                show_value(v)
            )),
            _ => Ok(show_value(v)),
        },
        other => Err(format!(
            "expected a string, a whole number or a boolean, found {}",
            show_value(other)
        )),
    }
}

/// The paths `pattern` matches under `dir`, relative to it, sorted.
fn glob_values(pattern: &str, dir: &Path) -> Result<Vec<String>, String> {
    if pattern.trim().is_empty() {
        return Err("empty glob: expected a pattern such as \"tests/test_*.py\"".into());
    }
    if Path::new(pattern).is_absolute() {
        return Err(format!(
            "`{pattern}` is absolute: expected a pattern relative to the pipeline file's folder"
        ));
    }
    let full = format!(
        "{}/{pattern}",
        glob::Pattern::escape(&dir.display().to_string())
    );
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(&full, options)
        .map_err(|e| format!("invalid glob `{pattern}`: {}", e.msg))?;
    let mut values: Vec<String> = paths
        .filter_map(Result::ok)
        .filter_map(|p| {
            p.strip_prefix(dir)
                .ok()
                .map(|r| r.to_string_lossy().into_owned())
        })
        .collect();
    values.sort();
    values.dedup();
    if values.is_empty() {
        return Err(format!(
            "glob `{pattern}` matches nothing (relative to {}): a matrix key needs at least one value",
            dir.display()
        ));
    }
    Ok(values)
}

/// The folders of `pattern` before its first component with a wildcard, with the
/// trailing `/`: `tests/unit/` of `tests/unit/test_*.py`.
fn literal_folder(pattern: &str) -> String {
    let mut out = String::new();
    let parts: Vec<&str> = pattern.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if part.contains(['*', '?', '[']) {
            break;
        }
        out.push_str(part);
        out.push('/');
    }
    out
}

/// Every combination of one value per key, the first key varying slowest.
fn combinations(axes: &[Axis]) -> Vec<Vec<&String>> {
    let mut out: Vec<Vec<&String>> = vec![Vec::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                axis.values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v);
                    next
                })
            })
            .collect();
    }
    out
}

/// `NAME-VALUE1-VALUE2…` in key order. A glob's values leave out its folder part
/// (`tests/test_a.py` of `tests/test_*.py` → `test_a.py`); in each value, every
/// character a spec name cannot hold becomes `_` (`a/b c` → `a_b_c`), and `..` becomes
/// `._`.
fn instance_name(name: &str, axes: &[Axis], combo: &[&String]) -> String {
    let mut out = name.to_string();
    for (axis, value) in axes.iter().zip(combo) {
        out.push('-');
        let shown = value.strip_prefix(&axis.name_prefix).unwrap_or(value);
        out.push_str(&name_part(shown));
    }
    out
}

fn name_part(value: &str) -> String {
    let mut part: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while part.contains("..") {
        part = part.replace("..", "._");
    }
    if part.is_empty() {
        part.push('_');
    }
    part
}

/// One instance's table: `${matrix.KEY}` replaced in `command`, `cwd`, `env` values,
/// `tasks` and `until`, and `SPEC_RUNNER_MATRIX_<KEY>` added to `env`. `None` after reporting a
/// placeholder that names no key.
fn instance_table(
    name: &str,
    base: &Dict,
    vars: &BTreeMap<String, String>,
    problems: &mut Vec<MatrixProblem>,
) -> Option<Dict> {
    let mut table = base.clone();
    let before = problems.len();
    substitute_in(name, &mut table, Some(vars), problems);
    if problems.len() > before {
        return None;
    }
    let env = table
        .entry("env".to_string())
        .or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, env) = env {
        for (k, v) in vars {
            env.insert(
                format!("{ENV_PREFIX}{}", k.to_ascii_uppercase()),
                Value::from(v.clone()),
            );
        }
    }
    Some(table)
}

/// Reports `${matrix.KEY}` in a spec without a matrix. Copies nothing unless there is
/// one: most specs of a large pipeline have none.
fn check_no_placeholders(name: &str, table: &Dict, problems: &mut Vec<MatrixProblem>) {
    let has = |v: Option<&Value>| match v {
        Some(Value::String(_, s)) => s.contains(OPEN),
        Some(Value::Array(_, items)) => items
            .iter()
            .any(|i| matches!(i, Value::String(_, s) if s.contains(OPEN))),
        Some(Value::Dict(_, d)) => d
            .values()
            .any(|i| matches!(i, Value::String(_, s) if s.contains(OPEN))),
        _ => false,
    };
    if ["command", "cwd", "env", "tasks", "until"]
        .iter()
        .any(|k| has(table.get(*k)))
    {
        let mut table = table.clone();
        substitute_in(name, &mut table, None, problems);
    }
}

/// Replaces placeholders in the values of `command`, `cwd`, `env`, `tasks` and `until`
/// of `table`.
fn substitute_in(
    name: &str,
    table: &mut Dict,
    vars: Option<&BTreeMap<String, String>>,
    problems: &mut Vec<MatrixProblem>,
) {
    let mut one = |s: &mut String, at: Vec<PathSeg>| {
        if let Err(message) = substitute(s, vars) {
            problems.push(MatrixProblem {
                path: at,
                target: Target::Value,
                message,
            });
        }
    };
    for key in ["command", "cwd", "tasks", "until"] {
        match table.get_mut(key) {
            Some(Value::String(_, s)) => one(s, path(&["specs", name, key])),
            Some(Value::Array(_, items)) if key == "command" || key == "until" => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::String(_, s) = item {
                        let mut at = path(&["specs", name, key]);
                        at.push(PathSeg::Index(i));
                        one(s, at);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(Value::Dict(_, env)) = table.get_mut("env") {
        for (k, v) in env.iter_mut() {
            if let Value::String(_, s) = v {
                one(s, path(&["specs", name, "env", k]));
            }
        }
    }
}

const OPEN: &str = "${matrix.";

/// Replaces each `${matrix.KEY}` in `text` with its value. With `vars` `None` (a spec
/// without a matrix), any placeholder is an error.
fn substitute(text: &mut String, vars: Option<&BTreeMap<String, String>>) -> Result<(), String> {
    if !text.contains(OPEN) {
        return Ok(());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `{OPEN}`: expected `${{matrix.KEY}}`"));
        };
        let key = &after[..end];
        let Some(vars) = vars else {
            return Err(format!(
                "`${{matrix.{key}}}` in a spec without a matrix: add `matrix = {{ {key} = [ … ] }}` to the spec"
            ));
        };
        match vars.get(key) {
            Some(v) => out.push_str(v),
            None => {
                let hint = did_you_mean(key, vars.keys().map(String::as_str))
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                let keys: Vec<&str> = vars.keys().map(String::as_str).collect();
                return Err(format!(
                    "`${{matrix.{key}}}` names no key of this spec's matrix (its keys: {}){hint}",
                    keys.join(", ")
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    *text = out;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_named() {
        let v = vars(&[("file", "a.py"), ("py", "3.11")]);
        let mut s = "python${matrix.py} -m pytest ${matrix.file} # ${matrix.file}".to_string();
        substitute(&mut s, Some(&v)).unwrap();
        assert_eq!(s, "python3.11 -m pytest a.py # a.py");
        let mut s = "${matrix.fiel}".to_string();
        let e = substitute(&mut s, Some(&v)).unwrap_err();
        assert!(
            e.contains("`${matrix.fiel}`") && e.contains("did you mean `file`?"),
            "{e}"
        );
        let mut s = "echo ${matrix.x}".to_string();
        assert!(
            substitute(&mut s, None)
                .unwrap_err()
                .contains("without a matrix")
        );
        // Other `${…}` are the shell's.
        let mut s = "echo ${HOME} $matrix".to_string();
        substitute(&mut s, None).unwrap();
        assert_eq!(s, "echo ${HOME} $matrix");
    }

    #[test]
    fn instance_names_are_valid_spec_names() {
        let axis = |key: &str, values: &[&str], name_prefix: &str| Axis {
            key: key.into(),
            values: values.iter().map(|v| (*v).to_string()).collect(),
            name_prefix: name_prefix.into(),
        };
        let axes = vec![
            axis("file", &["tests/test_a.py", ".."], ""),
            axis("py", &["3.11", "", "a b"], ""),
        ];
        let names: Vec<String> = combinations(&axes)
            .iter()
            .map(|c| instance_name("test", &axes, c))
            .collect();
        assert_eq!(
            names,
            [
                "test-tests_test_a.py-3.11",
                "test-tests_test_a.py-_",
                "test-tests_test_a.py-a_b",
                "test-._-3.11",
                "test-._-_",
                "test-._-a_b",
            ]
        );
        for n in &names {
            assert!(crate::config::validate::valid_spec_name(n), "{n}");
        }
        // A glob's folder is left out of the names.
        let axes = vec![axis(
            "file",
            &["tests/unit/test_a.py", "tests/unit/sub/test_b.py"],
            "tests/unit/",
        )];
        let names: Vec<String> = combinations(&axes)
            .iter()
            .map(|c| instance_name("t", &axes, c))
            .collect();
        assert_eq!(names, ["t-test_a.py", "t-sub_test_b.py"]);
        assert_eq!(literal_folder("tests/unit/test_*.py"), "tests/unit/");
        assert_eq!(literal_folder("tests/*/test_*.py"), "tests/");
        assert_eq!(literal_folder("*.py"), "");
    }

    #[test]
    fn globs_are_relative_sorted_and_must_match() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "tests/test_b.py",
            "tests/test_a.py",
            "tests/other.py",
            "tests/.test_hidden.py",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        assert_eq!(
            glob_values("tests/test_*.py", dir.path()).unwrap(),
            ["tests/test_a.py", "tests/test_b.py"]
        );
        assert!(
            glob_values("nothing/*.py", dir.path())
                .unwrap_err()
                .contains("matches nothing")
        );
        assert!(
            glob_values("[", dir.path())
                .unwrap_err()
                .contains("invalid glob")
        );
        assert!(
            glob_values("/etc/*", dir.path())
                .unwrap_err()
                .contains("absolute")
        );
    }
}
