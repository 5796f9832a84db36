//! Command-line arguments (clap). Parsing only: `run` acts on them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run a pipeline of long, crash-prone commands reliably: retries with backoff, hang
/// detection, process-group kills, resumable state.
#[derive(Debug, Parser)]
#[command(
    name = "spec-runner",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "Examples:\n  spec-runner init && spec-runner plan --explain\n  spec-runner apply -j 4\n  spec-runner apply --junit target/spec-runner.xml   # in CI\n  spec-runner status\n\nEach command has its own --help; `spec-runner man` prints the manual."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The pipeline file [default: spec-runner.toml]
    #[arg(
        short = 'f',
        long = "file",
        env = "SPEC_RUNNER_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub file: Option<PathBuf>,
    /// Policy defaults in the original tool's format [default: config.json next to the pipeline file]
    #[arg(
        long = "config",
        env = "SPEC_RUNNER_CONFIG",
        global = true,
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,
    /// Colour: on a terminal unless NO_COLOR is set (auto), or forced on or off
    #[arg(
        long,
        value_enum,
        env = "SPEC_RUNNER_COLOR",
        global = true,
        default_value_t = ColorChoice::Auto,
        value_name = "WHEN"
    )]
    pub color: ColorChoice,
    /// Diagnostics on stderr: -v what spec-runner decides, -vv also each step
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline (or the named specs and what they depend on)
    #[command(
        after_help = "Examples:\n  spec-runner apply\n  spec-runner apply auth billing -j 2\n  SPEC_RUNNER_RETRY_MAX_RETRIES=5 spec-runner apply --format json > events.ndjson\n  spec-runner apply --junit target/spec-runner.xml   # in CI: plain lines, a JUnit report\n  spec-runner apply --detach && spec-runner tui\n\nExit codes: 0 all succeeded, 1 a spec failed, 2 bad config or usage, 130 interrupted."
    )]
    Apply(ApplyArgs),
    /// Show the saved state of every spec
    #[command(
        after_help = "Examples:\n  spec-runner status\n  spec-runner status --format json | jq '.specs'"
    )]
    Status {
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Run specs again now, from a retry count of 0 (a manual restart does not count)
    #[command(
        after_help = "Examples:\n  spec-runner restart auth\n  spec-runner restart auth billing --format json\n  spec-runner restart deploy --with-deps"
    )]
    Restart {
        /// The specs to run again
        #[arg(value_name = "SPEC", required = true)]
        specs: Vec<String>,
        /// Also run, first, every dependency that has not succeeded (without it, such a
        /// dependency makes restart refuse)
        #[arg(long)]
        with_deps: bool,
        #[command(flatten)]
        overrides: OverrideArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Ask the running `apply` of this pipeline to stop (or only the named specs)
    #[command(
        after_help = "Examples:\n  spec-runner stop\n  spec-runner stop auth        # that spec only; the run goes on\n  spec-runner stop -f pipelines/nightly.toml"
    )]
    Stop {
        /// Stop only these specs (they end `stopped`, are not retried, their dependents
        /// are skipped); the rest of the run goes on
        #[arg(value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// Print the log of a spec's attempt (default: the latest)
    #[command(
        after_help = "Examples:\n  spec-runner logs auth\n  spec-runner logs auth --attempt 2 | less\n  spec-runner logs auth --hook\n  spec-runner logs auth --follow"
    )]
    Logs {
        spec: String,
        /// The attempt: the N of task_N.log (with --hook: of on_exhausted_N.log)
        #[arg(long, value_name = "N")]
        attempt: Option<u32>,
        /// The log of the spec's on_exhausted command instead of its attempts
        #[arg(long)]
        hook: bool,
        /// Keep printing as the log grows, on to the next attempt's log, until the spec
        /// ends (needs a live run)
        #[arg(long, conflicts_with_all = ["attempt", "hook"])]
        follow: bool,
    },
    /// Watch and steer the live run full screen (starts one in the background if none)
    #[command(
        after_help = "Keys: ↑/↓ j/k select · s start · r restart · x stop spec · X stop run · / filter · l log · f follow · ? help · q quit (the run goes on)\n\nExamples:\n  spec-runner tui\n  spec-runner apply --detach && spec-runner tui"
    )]
    Tui,
    /// Load, merge and validate the pipeline; print every problem
    #[command(
        after_help = "Examples:\n  spec-runner validate\n  SPEC_RUNNER_RETRY_MAX_RETRIES=7 spec-runner validate -f ci/spec-runner.toml"
    )]
    Validate(OverrideArgs),
    /// Show the order, each spec's effective policy and backoff schedule
    #[command(
        after_help = "Examples:\n  spec-runner plan\n  spec-runner plan --explain          # run-wide values once, then what each spec changes\n  spec-runner plan auth --explain --all\n  SPEC_RUNNER_RETRY_MAX_RETRIES=7 spec-runner plan --format json"
    )]
    Plan(PlanArgs),
    /// Write (or check) schema/spec-runner.schema.json and schema/config.schema.json
    #[command(
        after_help = "Examples:\n  spec-runner schema\n  spec-runner schema --check   # exit 1 when a committed schema is stale"
    )]
    Schema {
        /// Exit 1 when a file differs from what this version generates; write nothing
        #[arg(long)]
        check: bool,
        /// Folder of the schema files [default: schema/ next to the pipeline file]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Write a commented starter spec-runner.toml
    #[command(
        after_help = "Examples:\n  spec-runner init\n  spec-runner init -f pipelines/nightly.toml\n  spec-runner init --spec-workflow --provider claude --model sonnet"
    )]
    Init {
        /// Overwrite an existing file
        #[arg(long)]
        force: bool,
        /// Write one iterating spec per spec of `.spec-workflow/specs/*/tasks.md` with open tasks
        #[arg(long)]
        spec_workflow: bool,
        /// The agent each spec runs (with --spec-workflow)
        #[arg(long, value_enum, requires = "spec_workflow", default_value = "claude")]
        provider: Provider,
        /// The model the agent uses (with --spec-workflow)
        #[arg(long, value_name = "MODEL", requires = "spec_workflow")]
        model: Option<String>,
    },
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  spec-runner completions bash > ~/.local/share/bash-completion/completions/spec-runner\n  spec-runner completions zsh > ~/.zfunc/_spec-runner\n  spec-runner completions fish > ~/.config/fish/completions/spec-runner.fish"
    )]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (or write one page per command into a folder)
    #[command(
        after_help = "Examples:\n  spec-runner man | man -l -\n  spec-runner man --dir /usr/local/share/man/man1"
    )]
    Man {
        /// Write spec-runner.1 and a page per subcommand into this folder
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the spec names of the pipeline, one a line (for the completion scripts)
    #[command(
        name = "__spec-names",
        hide = true,
        after_help = "Examples:\n  spec-runner __spec-names\n  spec-runner __spec-names spec-runner -f ci.toml apply   # the words typed so far"
    )]
    SpecNames {
        /// The words of the command line being completed: a `-f/--file` among them
        /// names the pipeline file
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

/// `plan`'s arguments.
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Show only these specs [default: all]
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// Show where each value came from: run-wide and global values once, then per spec
    /// what differs from them
    #[arg(long)]
    pub explain: bool,
    /// With --explain: every effective value of every spec
    #[arg(long, requires = "explain")]
    pub all: bool,
    /// Say what `apply --fresh` would run (every spec) rather than what `apply` would
    #[arg(long)]
    pub fresh: bool,
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// Flags that override policy (the highest layer).
#[derive(Debug, Args, Default, Clone)]
pub struct OverrideArgs {
    /// Specs running at once
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<u32>,
    /// Stop starting new specs after the first spec fails for good
    #[arg(long = "fail-fast")]
    pub fail_fast: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct ApplyArgs {
    /// Specs to run (with the specs they depend on) [default: all]
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Run every requested spec, even those that succeeded unchanged
    #[arg(long)]
    pub fresh: bool,
    /// Run in the background (own session, output to a file in the state folder);
    /// return once the run is live, printing its id, its pid and how to attach
    #[arg(long)]
    pub detach: bool,
    /// Set on the background process `--detach` starts
    #[arg(long, hide = true)]
    pub detached_child: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How a run reports.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Output: human lines or bars, or NDJSON events on stdout
    #[arg(long, value_enum, default_value_t = ApplyFormat::Human)]
    pub format: ApplyFormat,
    /// Bars on a terminal, plain lines otherwise (auto); or force one
    #[arg(long, value_enum, env = "SPEC_RUNNER_PROGRESS", default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Print only failures and the summary
    #[arg(short, long)]
    pub quiet: bool,
    /// Write a JUnit XML report there after the run (overrides the `junit_path` key)
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApplyFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    Auto,
    Bar,
    Plain,
    None,
}

/// The coding agent `init --spec-workflow` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// `claude --print --dangerously-skip-permissions`
    Claude,
    /// `codex exec --full-auto`
    Codex,
    /// `gemini --yolo -p`
    Gemini,
}
