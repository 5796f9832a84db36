//! `spec-runner init --spec-workflow`: a pipeline written from a spec-workflow tree
//! (`.spec-workflow/specs/*/tasks.md`), one iterating spec per spec with open tasks.
//!
//! It reads the tree and `config.json`'s folder names and prompt, and renders TOML
//! text; writing the file is `run`'s.

use std::fmt::Write as _;
use std::path::Path;

use crate::cli::Provider;
use crate::config::validate::valid_spec_name;
use crate::tasks::TaskCounts;

/// What the original tool's `config.json` says about the tree (its defaults otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub dir_name: String,
    pub specs_subdir: String,
    pub tasks_filename: String,
    /// `prompt_template`, with `{spec_name}` and `{progress_summary}`.
    pub prompt_template: Option<String>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            dir_name: ".spec-workflow".into(),
            specs_subdir: "specs".into(),
            tasks_filename: "tasks.md".into(),
            prompt_template: None,
        }
    }
}

impl Layout {
    /// The layout `config.json`'s text names; `Err` when it is not a JSON object or a
    /// key is not a string.
    pub fn from_config_json(text: &str, shown: &str) -> Result<Layout, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{shown}: invalid JSON: {e}"))?;
        let obj = value
            .as_object()
            .ok_or_else(|| format!("{shown}: expected a JSON object"))?;
        let mut layout = Layout::default();
        let get = |key: &str| -> Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(format!(
                    "{shown}: `{key}`: expected a non-empty string, found {other}"
                )),
            }
        };
        if let Some(v) = get("spec_workflow_dir_name")? {
            layout.dir_name = v;
        }
        if let Some(v) = get("specs_subdir")? {
            layout.specs_subdir = v;
        }
        if let Some(v) = get("tasks_filename")? {
            layout.tasks_filename = v;
        }
        layout.prompt_template = get("prompt_template")?;
        Ok(layout)
    }

    /// `.spec-workflow/specs`, relative to the pipeline's folder.
    pub fn specs_dir(&self) -> String {
        format!("{}/{}", self.dir_name, self.specs_subdir)
    }
}

/// One spec of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The spec's folder name.
    pub folder: String,
    /// Its tasks file, relative to the pipeline's folder.
    pub tasks: String,
    pub counts: TaskCounts,
}

/// The specs under `root`'s spec folder that have a tasks file, sorted by folder; and
/// notes on those left out (unreadable, no task).
pub fn find(root: &Path, layout: &Layout) -> Result<(Vec<Found>, Vec<String>), String> {
    let specs_dir = layout.specs_dir();
    let entries = std::fs::read_dir(root.join(&specs_dir)).map_err(|e| {
        format!("no spec-workflow tree here: cannot read `{specs_dir}`: {e} (folder names come from config.json's spec_workflow_dir_name and specs_subdir)")
    })?;
    let mut folders: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    folders.sort();
    let mut found = Vec::new();
    let mut notes = Vec::new();
    for folder in folders {
        let tasks = format!("{specs_dir}/{folder}/{}", layout.tasks_filename);
        let path = root.join(&tasks);
        if !path.exists() {
            continue;
        }
        match crate::runner::work::read_tasks(&path, &|_| tasks.clone()) {
            Ok(counts) => found.push(Found {
                folder,
                tasks,
                counts,
            }),
            Err(why) => notes.push(format!("left out `{folder}`: {why}")),
        }
    }
    Ok((found, notes))
}

/// A spec name for a folder: the folder's own name when it is a valid one, else its
/// letters and digits with `-` for the rest.
pub fn spec_name(folder: &str) -> String {
    if valid_spec_name(folder) {
        return folder.to_string();
    }
    let mut name: String = folder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-').to_string();
    if name.is_empty() { "spec".into() } else { name }
}

/// The default prompt: the spec, where its documents are, the progress, one task.
const DEFAULT_PROMPT: &str = "You are implementing the spec `{spec_name}` ({specs_dir}/{spec_name}: requirements.md, design.md, tasks.md). Progress: {progress_summary}. Take the next open task in tasks.md, mark it in progress (- [-]), implement it with tests, check it off (- [x]) and commit your work with git. Do one task, then stop.";

/// A string in a POSIX shell's double quotes, where `$`, `` ` ``, `"` and `\` are special.
fn dquote_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '$' | '`' | '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The prompt as a double-quoted shell word: the spec's name filled in, the progress
/// summary from `SPEC_RUNNER_TASKS_SUMMARY` when the attempt starts.
pub fn prompt_word(template: &str, spec_name: &str, specs_dir: &str) -> String {
    let filled = template
        .replace("{spec_name}", spec_name)
        .replace("{specs_dir}", specs_dir);
    let parts: Vec<String> = filled
        .split("{progress_summary}")
        .map(dquote_text)
        .collect();
    format!("\"{}\"", parts.join("${SPEC_RUNNER_TASKS_SUMMARY}"))
}

/// A word safe in a shell command line: as it is when plain, else single-quoted.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The agent's command line for one spec, non-interactive.
pub fn command(provider: Provider, model: Option<&str>, prompt: &str) -> String {
    let model = model
        .map(|m| format!(" --model {}", shell_word(m)))
        .unwrap_or_default();
    match provider {
        Provider::Claude => {
            format!("claude --print --dangerously-skip-permissions{model} {prompt}")
        }
        Provider::Codex => format!("codex exec --full-auto{model} {prompt}"),
        Provider::Gemini => format!("gemini{model} --yolo -p {prompt}"),
    }
}

/// A TOML string (basic or literal, whichever reads better).
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A table key: bare when TOML allows it, quoted otherwise.
fn toml_key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        toml_string(s)
    }
}

/// The widest line a template writes (but for the specs' `command` and `tasks`,
/// whose values are what they are).
pub const TEMPLATE_COLUMNS: usize = 80;

/// `text` as `# ` comment lines of at most [`TEMPLATE_COLUMNS`] columns (a longer
/// word stays whole on its own line).
fn comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.chars().count() + 1 + word.chars().count() > TEMPLATE_COLUMNS {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    let _ = writeln!(out, "{line}");
}

/// The pipeline's text for these specs.
pub fn render(specs: &[Found], layout: &Layout, provider: Provider, model: Option<&str>) -> String {
    let provider_name = match provider {
        Provider::Claude => "claude",
        Provider::Codex => "codex",
        Provider::Gemini => "gemini",
    };
    let template = layout.prompt_template.as_deref().unwrap_or(DEFAULT_PROMPT);
    let specs_dir = layout.specs_dir();
    let mut out = String::new();
    let _ = writeln!(out, "#:schema ./schema/spec-runner.schema.json");
    comment(
        &mut out,
        &format!(
            "Written by `spec-runner init --spec-workflow --provider {provider_name}`: \
             one iterating spec per spec of {specs_dir} with open tasks. Each runs the \
             agent again and again (one iteration = one attempt and its retries) until \
             no task of its tasks.md is open. `spec-runner plan --explain` shows every \
             value and where it came from."
        ),
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "# One agent at a time: they share the git repository.");
    let _ = writeln!(out, "jobs = 1");
    let _ = writeln!(
        out,
        "# Give up on a spec that is not done after this many iterations."
    );
    let _ = writeln!(out, "max_iterations = 50");
    let _ = writeln!(
        out,
        "# Fail after this many iterations without a commit or a checked task."
    );
    let _ = writeln!(out, "no_progress_limit = 3");
    let _ = writeln!(
        out,
        "# An agent silent this long is hung: it is ended and retried."
    );
    let _ = writeln!(out, "activity_timeout_seconds = \"20m\"");
    let _ = writeln!(out, "# One attempt at most.");
    let _ = writeln!(out, "timeout_seconds = \"2h\"");
    let _ = writeln!(out, "retry_max_retries = 3");
    let _ = writeln!(out, "retry_backoff_seconds = 30");
    let _ = writeln!(out, "retry_max_backoff_seconds = \"30m\"");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "# Rate and usage limits: wait longer before trying again."
    );
    // Two rules rather than one regex wider than the page.
    for pattern in [
        r"(?i)rate[ _-]?limit|usage limit|too many requests",
        r"(?i)\b429\b|quota exceeded|overloaded",
    ] {
        let _ = writeln!(out, "[[retry_rules]]");
        let _ = writeln!(out, "output = '{pattern}'");
        let _ = writeln!(out, "action = \"retry\"");
        let _ = writeln!(out, "backoff_seconds = 300");
    }
    let mut used = std::collections::BTreeSet::new();
    for found in specs {
        // Two folders that sanitize to one name: the second gets a number.
        let base = spec_name(&found.folder);
        let mut name = base.clone();
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let prompt = prompt_word(template, &found.folder, &specs_dir);
        let _ = writeln!(out);
        comment(&mut out, &found.counts.summary());
        let _ = writeln!(out, "[specs.{}]", toml_key(&name));
        let _ = writeln!(
            out,
            "command = {}",
            toml_string(&command(provider, model, &prompt))
        );
        let _ = writeln!(out, "tasks = {}", toml_string(&found.tasks));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_every_init_template_fits_in_80_columns() {
        let found = Found {
            folder: "user-authentication".into(),
            tasks: ".spec-workflow/specs/user-authentication/tasks.md".into(),
            counts: TaskCounts {
                done: 1234,
                in_progress: 1000,
                pending: 9999,
            },
        };
        let mut texts = vec![(
            "init".to_string(),
            crate::starter::STARTER_PIPELINE.to_string(),
        )];
        for provider in [Provider::Claude, Provider::Codex, Provider::Gemini] {
            for model in [None, Some("a-model-name")] {
                texts.push((
                    format!("init --spec-workflow --provider {provider:?} {model:?}"),
                    render(
                        std::slice::from_ref(&found),
                        &Layout::default(),
                        provider,
                        model,
                    ),
                ));
            }
        }
        for (which, text) in texts {
            // The agent's command and the tasks path are values, not layout.
            for line in text
                .lines()
                .filter(|l| !l.starts_with("command = ") && !l.starts_with("tasks = "))
            {
                assert!(
                    line.chars().count() <= TEMPLATE_COLUMNS,
                    "`{which}`: {} columns: {line}",
                    line.chars().count()
                );
            }
            assert!(text.lines().count() > 10, "{which}");
        }
    }

    #[test]
    fn long_comments_wrap_and_a_long_word_stays_whole() {
        let mut out = String::new();
        let word = "x".repeat(90);
        comment(&mut out, &format!("{} {word} end", "ab ".repeat(40)));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("#{}", " ab".repeat(26)));
        assert_eq!(lines[1], format!("#{}", " ab".repeat(14)));
        assert_eq!(lines[2], format!("# {word}"));
        assert_eq!(lines[3], "# end");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn the_prompt_fills_the_name_and_leaves_the_summary_to_the_shell() {
        assert_eq!(
            prompt_word(
                "Implement the next task of {spec_name} ({progress_summary}); cost: $5 \"now\"",
                "auth",
                ".spec-workflow/specs"
            ),
            r#""Implement the next task of auth (${SPEC_RUNNER_TASKS_SUMMARY}); cost: \$5 \"now\"""#
        );
    }

    #[test]
    fn commands_per_provider() {
        assert_eq!(
            command(Provider::Claude, None, "\"p\""),
            "claude --print --dangerously-skip-permissions \"p\""
        );
        assert_eq!(
            command(Provider::Codex, Some("o3"), "\"p\""),
            "codex exec --full-auto --model o3 \"p\""
        );
        assert_eq!(
            command(Provider::Gemini, Some("gemini 2.5"), "\"p\""),
            "gemini --model 'gemini 2.5' --yolo -p \"p\""
        );
    }

    #[test]
    fn spec_names_from_folders() {
        assert_eq!(spec_name("auth"), "auth");
        assert_eq!(spec_name("user-login_v2.1"), "user-login_v2.1");
        assert_eq!(spec_name("my spec (draft)"), "my-spec-draft");
        assert_eq!(spec_name(".hidden"), "hidden");
        assert_eq!(spec_name("日本"), "spec");
    }

    #[test]
    fn config_json_names_the_folders() {
        let l = Layout::from_config_json(
            r#"{"spec_workflow_dir_name": ".sw", "specs_subdir": "s", "tasks_filename": "todo.md", "prompt_template": "Do {spec_name}", "no_commit_limit": 3}"#,
            "config.json",
        )
        .expect("layout");
        assert_eq!(l.specs_dir(), ".sw/s");
        assert_eq!(l.tasks_filename, "todo.md");
        assert_eq!(l.prompt_template.as_deref(), Some("Do {spec_name}"));
        assert_eq!(
            Layout::from_config_json("{}", "c").expect("empty"),
            Layout::default()
        );
        let bad = Layout::from_config_json(r#"{"specs_subdir": 3}"#, "config.json").unwrap_err();
        assert!(
            bad.contains("`specs_subdir`: expected a non-empty string"),
            "{bad}"
        );
    }
}
