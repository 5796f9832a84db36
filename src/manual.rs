//! Shell completion scripts and the manual page, both generated from the command-line
//! definition in `cli.rs`. Pure text out; `run` prints or writes it.

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::cli::{Cli, ColorChoice};

/// The completion script for `shell`, with clap_complete's known gaps mended.
pub fn completions(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "spec-runner", &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => mend_bash(&script),
        Shell::Fish => mend_fish(script),
        Shell::Zsh => mend_zsh(&script),
        _ => script,
    }
}

/// clap_complete names the bash `case` arms of subcommands `spec__subcmd__runner__…`
/// for a hyphenated binary but sets `cmd` to `spec__runner__…` (clap#6421): no arm
/// matches, so `apply --pro<TAB>` completes nothing and `--progress <TAB>` offers file
/// names. Both sides are made the latter.
///
/// And spec names: where a command takes SPEC, its options are joined by the names
/// `spec-runner __spec-names` prints for the line being completed (so a `-f` on it is
/// heeded), asked when TAB is pressed.
fn mend_bash(script: &str) -> String {
    let mut script = script.replace("spec__subcmd__runner", "spec__runner");
    for cmd in SPEC_COMMANDS {
        let arm = format!("        spec__runner__subcmd__{cmd})\n            opts=\"");
        if let Some(start) = script.find(&arm) {
            let from = start + arm.len();
            if let Some(len) = script[from..].find('"') {
                script.insert_str(
                    from + len,
                    " $(spec-runner __spec-names \"${COMP_WORDS[@]}\" 2>/dev/null)",
                );
            }
        }
    }
    script
}

/// zsh: spec names where a command takes them (`*::specs` and `:spec` arguments), from
/// `spec-runner __spec-names` with the whole line being completed (so a `-f` on it is
/// heeded).
fn mend_zsh(script: &str) -> String {
    let mut out = String::with_capacity(script.len() + 512);
    for line in script.split_inclusive('\n') {
        let is_spec = line.starts_with("'*::specs -- ") || line.starts_with("':spec:");
        match line.rfind(":_default'") {
            Some(at) if is_spec => {
                out.push_str(&line[..at]);
                out.push_str(":_spec_runner_spec_names'");
                out.push_str(&line[at + ":_default'".len()..]);
            }
            _ => out.push_str(line),
        }
    }
    let function = "\
(( $+functions[_spec_runner_spec_names] )) ||
_spec_runner_spec_names() {
    local -a names
    names=(${(f)\"$(spec-runner __spec-names ${(z)BUFFER} 2>/dev/null)\"})
    compadd -a names
}

";
    match out.rfind("if [ \"$funcstack[1]\" = \"_spec-runner\" ]; then") {
        Some(at) => out.insert_str(at, function),
        None => out.push_str(function),
    }
    out
}

/// The commands that take spec names.
const SPEC_COMMANDS: [&str; 5] = ["apply", "restart", "plan", "logs", "stop"];

/// Two holes in clap_complete's fish script. Before a subcommand its condition parses
/// the line with `argparse`, which fails on a trailing `--color` still waiting for its
/// value, so the colour values are not offered and fish lists file names. And the
/// positional shell of `completions` has no rule at all, so fish lists file names
/// there too.
fn mend_fish(mut script: String) -> String {
    let words = |names: Vec<String>| names.join(" ");
    let colors = words(
        ColorChoice::value_variants()
            .iter()
            .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
            .collect(),
    );
    let shells = words(
        Shell::value_variants()
            .iter()
            .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
            .collect(),
    );

    script.push_str(&format!(
        "\n# Added by spec-runner: the values of a global --color wherever it stands, and\n\
         # the shell names after `completions` (never file names there).\n\
         complete -c spec-runner -n \"__fish_prev_arg_in --color\" -f -a \"{colors}\"\n\
         complete -c spec-runner -n \"__fish_spec_runner_using_subcommand completions\" -f\n\
         complete -c spec-runner -n \"__fish_spec_runner_using_subcommand completions; \
         and not __fish_prev_arg_in --color -f --file --config; \
         and not __fish_seen_subcommand_from {shells}\" -f -a \"{shells}\"\n"
    ));
    script.push_str(
        "# Added by spec-runner: spec names where a command takes them, from the pipeline\n\
         # file of the line being completed.\n",
    );
    for cmd in SPEC_COMMANDS {
        script.push_str(&format!(
            "complete -c spec-runner -n \"__fish_spec_runner_using_subcommand {cmd}\" -f \
             -a \"(spec-runner __spec-names (commandline -opc) 2>/dev/null)\"\n"
        ));
    }
    script
}

/// The manual page of spec-runner, complete on its own (`spec-runner man | man -l -`
/// installs nothing else): every command with its options and examples, the
/// environment, the exit status and the files.
pub fn man_page() -> String {
    let mut root = Cli::command();
    root.build();
    let mut page = Page::default();
    page.title("SPEC-RUNNER");
    page.section("NAME");
    page.text(&format!(
        "spec-runner - {}",
        root.get_about().map(|a| a.to_string()).unwrap_or_default()
    ));
    page.section("SYNOPSIS");
    page.raw("\\fBspec\\-runner\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...\n");
    page.section("DESCRIPTION");
    page.text(
        "spec-runner runs the specs of a pipeline file (spec-runner.toml) on a pool of \
         worker threads in dependency order. Each attempt runs in its own process group, \
         its output in a log of its own; a failed attempt is retried with exponential \
         backoff, a hang is caught by an activity timeout, and the state is saved so that \
         a later apply resumes where a killed one stopped.",
    );
    page.section("OPTIONS");
    page.paragraph("These options are accepted by every command.");
    for arg in root.get_arguments().filter(|a| !is_builtin(a)) {
        page.argument(arg);
    }
    page.section("COMMANDS");
    let globals: Vec<String> = root
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    for sub in root.get_subcommands_mut() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let usage = sub.render_usage().to_string();
        let usage = usage.trim().trim_start_matches("Usage:").trim().to_string();
        page.subsection(&usage);
        if let Some(about) = sub.get_about() {
            page.text(&about.to_string());
        }
        for arg in sub.get_arguments().filter(|a| {
            !is_builtin(a) && !a.is_hide_set() && !globals.contains(&a.get_id().to_string())
        }) {
            page.argument(arg);
        }
        if let Some(after) = sub.get_after_help() {
            page.after_help(&after.to_string());
        }
    }
    page.section("ENVIRONMENT");
    for (name, what) in ENVIRONMENT {
        page.item(&format!("\\fB{}\\fR", escape(name)), what);
    }
    page.section("EXIT STATUS");
    for (code, what) in [
        (
            crate::exit::SUCCESS,
            "Success: every spec succeeded (or there was nothing to do).",
        ),
        (
            crate::exit::FAILURE,
            "A spec failed, or `schema --check` found a stale file.",
        ),
        (
            crate::exit::USAGE,
            "Bad configuration or usage: every problem is printed, nothing is run.",
        ),
        (
            crate::exit::INTERRUPTED,
            "Interrupted by Ctrl-C, SIGTERM or SIGHUP; running specs were stopped.",
        ),
    ] {
        page.item(&format!("\\fB{code}\\fR"), what);
    }
    page.section("FILES");
    for (name, what) in FILES {
        page.item(&format!("\\fI{}\\fR", escape(name)), what);
    }
    page.section("EXAMPLES");
    if let Some(after) = root.get_after_help() {
        page.after_help(&after.to_string());
    }
    page.out
}

/// `--help` and `--version` (clap's own, described by the page's text), and hidden
/// arguments.
fn is_builtin(arg: &clap::Arg) -> bool {
    matches!(arg.get_id().as_str(), "help" | "version") || arg.is_hide_set()
}

/// Variables spec-runner reads, and those it sets for the commands it runs.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("SPEC_RUNNER_FILE", "The pipeline file, as -f/--file."),
    ("SPEC_RUNNER_CONFIG", "The policy file, as --config."),
    ("SPEC_RUNNER_COLOR", "auto, always or never, as --color."),
    (
        "SPEC_RUNNER_PROGRESS",
        "auto, bar, plain or none, as --progress.",
    ),
    (
        "SPEC_RUNNER_<KEY>",
        "A policy key for every spec, e.g. SPEC_RUNNER_RETRY_MAX_RETRIES=5. It overrides config.json and the pipeline file's global value, not a spec's own.",
    ),
    (
        "SPEC_RUNNER_SPECS__<SPEC>__<KEY>",
        "A policy key for one spec: the spec's name upper-cased, with - and . written as _.",
    ),
    (
        "NO_COLOR",
        "When set and not empty, no colour unless --color always.",
    ),
    (
        "TERM",
        "When dumb or unset, plain lines instead of progress bars.",
    ),
    (
        "GITHUB_ACTIONS",
        "When true, failures and flaky specs are also GitHub Actions annotations.",
    ),
    (
        "SPEC_RUNNER_SPEC, SPEC_RUNNER_ATTEMPT, SPEC_RUNNER_MAX_ATTEMPTS, SPEC_RUNNER_RUN_ID",
        "Set for each attempt: the spec, the attempt's number from 1, the most attempts it may get, and the run's id.",
    ),
    (
        "SPEC_RUNNER_REASON, SPEC_RUNNER_LOG, SPEC_RUNNER_ATTEMPTS",
        "Also set for the on_exhausted command: why the spec failed, its last attempt's log and number.",
    ),
];

/// Files spec-runner reads and writes.
const FILES: &[(&str, &str)] = &[
    (
        "spec-runner.toml",
        "The pipeline file, in the current folder unless -f names another.",
    ),
    (
        "config.json",
        "Policy defaults in the original spec-workflow-runner's format, next to the pipeline file.",
    ),
    (
        ".spec-runner/state.json",
        "The saved state of every spec (state_dir), next to the pipeline file.",
    ),
    (
        ".spec-runner/logs/SPEC/task_N.log",
        "The output of attempt N of a spec (retry_log_dir); never overwritten.",
    ),
];

/// A man(7) page under construction.
#[derive(Default)]
struct Page {
    out: String,
}

/// Text made safe for roff: backslashes and hyphens escaped, and a leading `.` or `'`
/// (a request) guarded.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

/// One roff text line: guarded when it would start with a control character.
fn guard(line: &str) -> String {
    if line.starts_with(['.', '\'']) {
        format!("\\&{line}")
    } else {
        line.to_string()
    }
}

impl Page {
    fn title(&mut self, name: &str) {
        // `.TH title section date source manual`: the date the page was made (or
        // SOURCE_DATE_EPOCH's, for reproducible builds), the version in "source".
        let date = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .unwrap_or_else(chrono::Utc::now)
            .format("%Y-%m-%d");
        self.out.push_str(&format!(
            ".TH {name} 1 {date} \"spec\\-runner {}\" \"User Commands\"\n",
            env!("CARGO_PKG_VERSION")
        ));
    }

    fn section(&mut self, name: &str) {
        self.out.push_str(&format!(".SH \"{name}\"\n"));
    }

    fn subsection(&mut self, name: &str) {
        self.out
            .push_str(&format!(".SS \"{}\"\n", escape(name).replace('"', "\\(dq")));
    }

    fn raw(&mut self, roff: &str) {
        self.out.push_str(roff);
    }

    /// A filled paragraph, its source lines wrapped short.
    fn text(&mut self, text: &str) {
        let mut line = String::new();
        for word in text.split_whitespace() {
            let word = escape(word);
            if !line.is_empty() && line.len() + 1 + word.len() > 72 {
                self.out.push_str(&guard(&line));
                self.out.push('\n');
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&word);
        }
        if !line.is_empty() {
            self.out.push_str(&guard(&line));
            self.out.push('\n');
        }
    }

    fn paragraph(&mut self, text: &str) {
        self.new_paragraph();
        self.text(text);
    }

    /// `.PP`, unless a heading just began one.
    fn new_paragraph(&mut self) {
        let last = self.out.trim_end().lines().last().unwrap_or_default();
        if !(last.starts_with(".SH") || last.starts_with(".SS")) {
            self.out.push_str(".PP\n");
        }
    }

    /// A tagged paragraph: `tag` (roff already) over `text`.
    fn item(&mut self, tag: &str, text: &str) {
        self.out.push_str(".TP\n");
        self.out.push_str(&guard(tag));
        self.out.push('\n');
        self.text(text);
    }

    /// Lines kept exactly as they are (no filling, no adjusting): commands to copy.
    fn verbatim(&mut self, lines: &[&str]) {
        self.new_paragraph();
        self.out.push_str(".RS 4\n.nf\n");
        for l in lines {
            self.out.push_str(&guard(&escape(l.trim_start())));
            self.out.push('\n');
        }
        self.out.push_str(".fi\n.RE\n");
    }

    fn argument(&mut self, arg: &clap::Arg) {
        let value = arg
            .get_value_names()
            .and_then(|v| v.first())
            .map(|v| v.to_string())
            .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
        let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values())
            && !matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
            );
        let repeats = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
            || matches!(arg.get_action(), clap::ArgAction::Append);
        let tag = if arg.is_positional() {
            let dots = if repeats { "..." } else { "" };
            if arg.is_required_set() {
                format!("\\fI{}\\fR{dots}", escape(&value))
            } else {
                format!("[\\fI{}\\fR]{dots}", escape(&value))
            }
        } else {
            let mut names = Vec::new();
            if let Some(s) = arg.get_short() {
                names.push(format!("\\fB\\-{s}\\fR"));
            }
            if let Some(l) = arg.get_long() {
                names.push(format!("\\fB\\-\\-{}\\fR", escape(l)));
            }
            let mut tag = names.join(", ");
            if takes_value {
                tag.push_str(&format!(" \\fI{}\\fR", escape(&value)));
            }
            tag
        };
        let mut text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        if !text.is_empty() && !text.ends_with('.') {
            text.push('.');
        }
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        if takes_value && !values.is_empty() {
            text.push_str(&format!(" One of: {}.", values.join(", ")));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if takes_value && !defaults.is_empty() {
            text.push_str(&format!(" Default: {}.", defaults.join(", ")));
        }
        if let Some(env) = arg.get_env() {
            text.push_str(&format!(" Also {}.", env.to_string_lossy()));
        }
        self.item(&tag, &text);
    }

    /// A command's `after_help`: "Examples:" and similar headings over indented lines
    /// become verbatim blocks; other paragraphs are text. Under an EXAMPLES section
    /// its own "Examples:" heading goes.
    fn after_help(&mut self, text: &str) {
        let in_examples = self.out.trim_end().ends_with(".SH \"EXAMPLES\"");
        for block in text.split("\n\n") {
            let lines: Vec<&str> = block.lines().collect();
            match lines.split_first() {
                Some((head, rest))
                    if head.ends_with(':')
                        && !rest.is_empty()
                        && rest.iter().all(|l| l.starts_with("  ")) =>
                {
                    if !(in_examples && *head == "Examples:") {
                        self.paragraph(head);
                    }
                    self.verbatim(rest);
                }
                Some(_) => self.paragraph(block),
                None => {}
            }
        }
    }
}

/// The pages `man --dir` writes, by file name: the complete page, which then names the
/// others under SEE ALSO, and one page per command.
pub fn man_pages() -> Vec<(String, String)> {
    let commands = command_pages();
    let mut top = man_page();
    let names: Vec<String> = commands
        .iter()
        .map(|(file, _)| format!("{}(1)", file.trim_end_matches(".1")))
        .collect();
    let mut see_also = Page::default();
    see_also.section("SEE ALSO");
    see_also.text(&names.join(", "));
    top.push_str(&see_also.out);
    let mut pages = vec![("spec-runner.1".to_string(), top)];
    pages.extend(commands);
    pages
}

/// The page of one command for `man --dir`: `spec-runner-NAME.1`.
fn command_pages() -> Vec<(String, String)> {
    let mut root = Cli::command();
    root.build();
    let globals: Vec<String> = root
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut pages = Vec::new();
    for sub in root.get_subcommands_mut() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let name = sub.get_name().to_string();
        let mut page = Page::default();
        page.title(&format!("SPEC-RUNNER-{}", name.to_uppercase()));
        page.section("NAME");
        page.text(&format!(
            "spec-runner-{name} - {}",
            sub.get_about().map(|a| a.to_string()).unwrap_or_default()
        ));
        page.section("SYNOPSIS");
        let usage = sub.render_usage().to_string();
        page.text(usage.trim().trim_start_matches("Usage:").trim());
        page.section("OPTIONS");
        for arg in sub.get_arguments().filter(|a| {
            !is_builtin(a) && !a.is_hide_set() && !globals.contains(&a.get_id().to_string())
        }) {
            page.argument(arg);
        }
        page.paragraph("And the options every command takes; see spec-runner(1).");
        if let Some(after) = sub.get_after_help() {
            page.section("EXAMPLES");
            page.after_help(&after.to_string());
        }
        page.section("SEE ALSO");
        page.text("spec-runner(1)");
        pages.push((format!("spec-runner-{name}.1"), page.out));
    }
    pages
}
