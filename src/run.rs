//! The command-line entry point: parse, load, dispatch, map errors to exit codes.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{
    ApplyArgs, ApplyFormat, Cli, Command, GlobalArgs, OutputArgs, OverrideArgs, PlanFormat,
    Progress,
};
use crate::config::load::PIPELINE_FILE;
use crate::config::schema;
use crate::config::{self, CliOverrides, LoadOptions, Pipeline};
use crate::exit;

/// Runs spec-runner with these arguments; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    // What a Slurm batch job runs (see `slurm::job`): not a user command, so not in
    // the help, the man page or the completions.
    if args
        .get(1)
        .is_some_and(|a| a == crate::slurm::JOB_SUBCOMMAND)
    {
        return ExitCode::from(crate::slurm::job_main(&args[2..]));
    }
    // clap prints help and usage errors while it parses, before `--color` is known:
    // tell it the choice first (it reads NO_COLOR and the terminal itself for `auto`).
    let color = color_flag(&args).unwrap_or_else(|| {
        std::env::var("SPEC_RUNNER_COLOR")
            .ok()
            .and_then(|v| clap::ValueEnum::from_str(&v, true).ok())
            .unwrap_or(crate::cli::ColorChoice::Auto)
    });
    let mut command = Cli::command().color(match color {
        crate::cli::ColorChoice::Auto => clap::ColorChoice::Auto,
        crate::cli::ColorChoice::Always => clap::ColorChoice::Always,
        crate::cli::ColorChoice::Never => clap::ColorChoice::Never,
    });
    let parsed = command
        .try_get_matches_from_mut(args)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed.map_err(|e| e.format(&mut command)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            });
        }
    };
    ExitCode::from(dispatch(cli))
}

/// The value of the last `--color WHEN` or `--color=WHEN` before a `--`, if it is one
/// clap would accept.
fn color_flag(args: &[OsString]) -> Option<crate::cli::ColorChoice> {
    let mut found = None;
    let mut rest = args.iter().skip(1).map(|a| a.to_str());
    while let Some(arg) = rest.next() {
        let value = match arg {
            Some("--") => break,
            Some("--color") => rest.next().flatten(),
            Some(a) => a.strip_prefix("--color="),
            None => None,
        };
        if let Some(v) = value.and_then(|v| clap::ValueEnum::from_str(v, false).ok()) {
            found = Some(v);
        }
    }
    found
}

fn dispatch(cli: Cli) -> u8 {
    let g = &cli.global;
    let color = crate::report::use_color(
        g.color,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    );
    crate::report::set_color(color);
    init_tracing(g.verbose, color);
    match &cli.command {
        Command::Validate(o) => match load(g, o).and_then(|p| backends_ready(&p).map(|()| p)) {
            Ok(p) => {
                let n = p.specs.len();
                println!(
                    "{}: {n} spec{}, valid",
                    p.file.display(),
                    if n == 1 { "" } else { "s" }
                );
                exit::SUCCESS
            }
            Err(code) => code,
        },
        Command::Plan(args) => match load(g, &args.overrides) {
            Ok(p) => plan(&p, args),
            Err(code) => code,
        },
        Command::Apply(args) => {
            match load(g, &args.overrides).and_then(|p| backends_ready(&p).map(|()| p)) {
                Ok(p) => apply(&p, args, color),
                Err(code) => code,
            }
        }
        Command::Restart {
            specs,
            with_deps,
            overrides,
            output,
        } => match load(g, overrides).and_then(|p| backends_ready(&p).map(|()| p)) {
            Ok(p) => restart(&p, specs, *with_deps, output, color),
            Err(code) => code,
        },
        Command::Status { format } => {
            let json = *format == PlanFormat::Json;
            match load(g, &OverrideArgs::default()) {
                Ok(p) => crate::control::status(&crate::control::StatusView::of(&p), json),
                // A pipeline file edited into an invalid state mid-run: show what the
                // default state folder next to it says.
                Err(code) => match default_state_dir(g) {
                    Some(dir) if dir.join(crate::state::store::STATE_FILE).exists() => {
                        eprintln!(
                            "note: the pipeline does not load; showing the state in `{}`",
                            dir.display()
                        );
                        let base = dir.parent().map(Path::to_path_buf).unwrap_or_default();
                        crate::control::status(
                            &crate::control::StatusView {
                                state_dir: dir,
                                base,
                                specs: None,
                            },
                            json,
                        )
                    }
                    _ => code,
                },
            }
        }
        Command::Stop { specs } => match load(g, &OverrideArgs::default()) {
            Ok(p) => {
                let mut names = Vec::new();
                for name in specs {
                    match p.resolve(name) {
                        Some(indices) => {
                            names.extend(indices.into_iter().map(|i| p.specs[i].name.to_string()))
                        }
                        None => {
                            eprintln!("error: {}", p.no_such_spec(name));
                            return exit::USAGE;
                        }
                    }
                }
                names.dedup();
                crate::control::stop(&p.run.state_dir, &p.file, &names)
            }
            // A pipeline file edited into an invalid state while it runs must not make
            // the run unstoppable: try the default state folder next to the file.
            Err(code) => {
                let file = pipeline_path(g);
                match default_state_dir(g) {
                    Some(dir) if dir.join(crate::state::store::LOCK_FILE).exists() => {
                        eprintln!(
                            "note: the pipeline does not load; stopping the runner of `{}`",
                            dir.display()
                        );
                        crate::control::stop(&dir, &file, specs)
                    }
                    _ => code,
                }
            }
        },
        Command::Logs {
            spec,
            attempt,
            hook,
            follow,
        } => match load(g, &OverrideArgs::default()) {
            Ok(p) if *follow => crate::control::logs_follow(&p, spec),
            Ok(p) => crate::control::logs(&p, spec, *attempt, *hook),
            Err(code) => code,
        },
        Command::Tui => match load(g, &OverrideArgs::default()) {
            Ok(p) => {
                let color = crate::report::use_color(
                    g.color,
                    std::io::IsTerminal::is_terminal(&std::io::stdout()),
                    std::env::var_os("NO_COLOR").as_deref(),
                    std::env::var_os("TERM").as_deref(),
                );
                crate::tui::run(&p, color, g.config.as_deref())
            }
            Err(code) => code,
        },
        Command::Schema { check, dir } => schema_cmd(g, *check, dir.as_deref()),
        Command::Init {
            force,
            spec_workflow: false,
            ..
        } => init(g, *force, crate::starter::STARTER_PIPELINE.to_string()),
        Command::Init {
            force,
            provider,
            model,
            ..
        } => init_spec_workflow(g, *force, *provider, model.as_deref()),
        Command::Completions { shell } => print_out(&crate::manual::completions(*shell)),
        Command::Man { dir } => man(dir.as_deref()),
        Command::SpecNames { words } => spec_names(g, words),
    }
}

/// `plan`: the whole pipeline, or the named specs only.
fn plan(p: &Pipeline, args: &crate::cli::PlanArgs) -> u8 {
    use crate::plan::{Explain, View};
    let only = if args.specs.is_empty() {
        None
    } else {
        let mut only = vec![false; p.specs.len()];
        for name in &args.specs {
            match p.resolve(name) {
                Some(indices) => indices.into_iter().for_each(|i| only[i] = true),
                None => {
                    eprintln!("error: {}", p.no_such_spec(name));
                    return exit::USAGE;
                }
            }
        }
        Some(only)
    };
    // What `apply` (or `apply --fresh`) would do, from the saved state; a state that
    // cannot be read is a warning here (apply moves a corrupt one aside).
    let previous = match crate::state::store::peek(&p.run.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: {e}; planning as if nothing had run");
            None
        }
    };
    let mode = if args.fresh {
        crate::state::resume::Mode::Fresh
    } else {
        crate::state::resume::Mode::Resume
    };
    let resume = crate::state::resume::plan(p, &vec![true; p.specs.len()], previous.as_ref(), mode);
    let view = View {
        why: Some(&resume.why),
        explain: match (args.explain, args.all) {
            (_, true) => Explain::All,
            (true, false) => Explain::Diff,
            (false, false) => Explain::No,
        },
        only: only.as_deref(),
    };
    match args.format {
        PlanFormat::Json => {
            // Streamed: a 100,000-spec plan is hundreds of MB as one string.
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let _ = serde_json::to_writer_pretty(&mut out, &crate::plan::plan_json(p, &view));
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            exit::SUCCESS
        }
        PlanFormat::Text => {
            // Streamed, like the JSON: the text of a large plan is not held whole.
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            crate::plan::write_plan_text(p, &view, &mut |part| {
                let _ = out.write_all(part.as_bytes());
            });
            let _ = out.flush();
            exit::SUCCESS
        }
    }
}

/// The names a completion script offers for SPEC: every spec and every matrix name,
/// sorted; nothing (and exit 0) when the pipeline does not load. A `-f/--file` among
/// the words being completed names the pipeline file.
fn spec_names(g: &GlobalArgs, words: &[String]) -> u8 {
    let mut file = g.file.clone();
    for (i, w) in words.iter().enumerate() {
        if let Some(f) = w.strip_prefix("--file=") {
            file = Some(PathBuf::from(f));
        } else if (w == "-f" || w == "--file")
            && let Some(f) = words.get(i + 1)
        {
            file = Some(PathBuf::from(f));
        }
    }
    let opts = LoadOptions {
        file,
        ..load_options(g, &OverrideArgs::default())
    };
    let Ok(p) = config::load(&opts) else {
        return exit::SUCCESS;
    };
    let mut names: Vec<&str> = p
        .specs
        .iter()
        .map(|s| s.name.as_ref())
        .chain(p.groups.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    let mut out = names.join("\n");
    out.push('\n');
    print_out(&out)
}

/// `-v`: what spec-runner decides; `-vv`: each step; `-vvv`: everything. On stderr.
fn init_tracing(verbose: u8, color: bool) {
    let level = match verbose {
        0 => return,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    // `try_init`: a second call in one process (tests driving `run`) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(color)
        .with_target(false)
        .try_init();
}

/// The man page on stdout, or it and one page per command written into `dir`.
fn man(dir: Option<&Path>) -> u8 {
    let Some(dir) = dir else {
        return print_out(&crate::manual::man_page());
    };
    let pages = crate::manual::man_pages();
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        pages
            .iter()
            .try_for_each(|(name, text)| std::fs::write(dir.join(name), text))
    });
    match written {
        Ok(()) => {
            eprintln!("wrote man pages to {}", dir.display());
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write man pages to `{}`: {e}", dir.display());
            exit::USAGE
        }
    }
}

fn print_out(text: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    exit::SUCCESS
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

fn load_options(g: &GlobalArgs, o: &OverrideArgs) -> LoadOptions {
    LoadOptions {
        file: g.file.clone(),
        config: g.config.clone(),
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        cli: CliOverrides {
            jobs: o.jobs,
            fail_fast: o.fail_fast.then_some(true),
        },
        cwd: cwd(),
    }
}

/// Loads the pipeline; prints warnings, or every problem and returns exit code 2.
fn load(g: &GlobalArgs, o: &OverrideArgs) -> Result<Pipeline, u8> {
    match config::load(&load_options(g, o)) {
        Ok(p) => {
            for w in &p.warnings {
                eprintln!("warning: {w}");
            }
            tracing::info!(file = %p.file.display(), specs = p.specs.len(), "loaded the pipeline");
            Ok(p)
        }
        Err(problems) => {
            eprintln!("{problems}");
            let n = problems.0.len();
            eprintln!(
                "{n} problem{} found; nothing was run",
                if n == 1 { "" } else { "s" }
            );
            Err(exit::USAGE)
        }
    }
}

/// A spec whose backend needs commands that are not on PATH: an error before anything
/// runs (exit 2), naming the spec and where its `backend` was set.
fn backends_ready(p: &Pipeline) -> Result<(), u8> {
    use crate::config::policy::BackendKind;
    let Some(spec) = p
        .specs
        .iter()
        .find(|s| s.policy.backend == BackendKind::Slurm)
    else {
        return Ok(());
    };
    let Some(tool) = crate::slurm::tools_missing(std::env::var_os("PATH").as_deref()) else {
        return Ok(());
    };
    let from = crate::plan::origin(p, spec, "backend");
    eprintln!(
        "error: spec `{}` has backend = \"slurm\" (from {from}) but `{tool}` is not on PATH: install Slurm's client commands (sbatch, squeue, scancel, scontrol) and make them reachable, or use backend = \"local\"",
        spec.name
    );
    eprintln!("1 problem found; nothing was run");
    Err(exit::USAGE)
}

/// `.spec-runner` next to the pipeline file: where the state is unless `state_dir`
/// says otherwise (used when the pipeline does not load).
fn default_state_dir(g: &GlobalArgs) -> Option<PathBuf> {
    pipeline_path(g)
        .parent()
        .map(|d| d.join(crate::config::validate::defaults::STATE_DIR))
}

fn pipeline_path(g: &GlobalArgs) -> PathBuf {
    let p = g
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(PIPELINE_FILE));
    if p.is_absolute() { p } else { cwd().join(p) }
}

fn schema_cmd(g: &GlobalArgs, check: bool, dir: Option<&Path>) -> u8 {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => pipeline_path(g)
            .parent()
            .map(|p| p.join("schema"))
            .unwrap_or_else(|| PathBuf::from("schema")),
    };
    let mut stale = Vec::new();
    for (name, text) in schema::rendered() {
        let path = dir.join(name);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(text.as_str()) {
            continue;
        }
        if check {
            stale.push(path);
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &text)) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return exit::USAGE;
        }
        eprintln!("wrote {}", path.display());
    }
    if stale.is_empty() {
        if check {
            eprintln!("schema files in {} are up to date", dir.display());
        }
        return exit::SUCCESS;
    }
    for p in &stale {
        eprintln!(
            "stale or missing: {} (run `spec-runner schema` to regenerate)",
            p.display()
        );
    }
    exit::FAILURE
}

/// `init`: the starter pipeline, and the schemas its `#:schema ./schema/…` line names.
/// Without `--force` it overwrites nothing: when any file it would write exists (a
/// schema that already holds exactly this text is left as it is), it names them all
/// and writes none.
/// `init --spec-workflow`: a pipeline with one iterating spec per spec of the
/// spec-workflow tree next to it that has open tasks.
fn init_spec_workflow(
    g: &GlobalArgs,
    force: bool,
    provider: crate::cli::Provider,
    model: Option<&str>,
) -> u8 {
    use crate::workflow::{Layout, find, render};
    let path = pipeline_path(g);
    let root = path.parent().map(Path::to_path_buf).unwrap_or_else(cwd);
    // The original tool's config.json names the folders and the prompt.
    let (config, shown_config) = match &g.config {
        Some(c) => (
            if c.is_absolute() {
                c.clone()
            } else {
                cwd().join(c)
            },
            c.display().to_string(),
        ),
        None => (
            root.join(crate::config::load::CONFIG_FILE),
            crate::plan::show_path(&cwd(), &root.join(crate::config::load::CONFIG_FILE)),
        ),
    };
    let layout = match std::fs::read_to_string(&config) {
        Ok(text) => match Layout::from_config_json(&text, &shown_config) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && g.config.is_none() => {
            Layout::default()
        }
        Err(e) => {
            eprintln!("error: cannot read `{shown_config}`: {e}");
            return exit::USAGE;
        }
    };
    let (found, notes) = match find(&root, &layout) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    for note in &notes {
        eprintln!("warning: {note}");
    }
    let (open, done): (Vec<_>, Vec<_>) = found.into_iter().partition(|f| f.counts.open() > 0);
    for f in &done {
        eprintln!(
            "note: `{}` is done ({}): not in the pipeline",
            f.folder,
            f.counts.summary()
        );
    }
    if open.is_empty() {
        eprintln!(
            "error: no spec with open tasks under `{}/*/{}`: nothing to run",
            layout.specs_dir(),
            layout.tasks_filename
        );
        return exit::USAGE;
    }
    for f in &open {
        eprintln!("found `{}`: {}", f.folder, f.counts.summary());
    }
    init(g, force, render(&open, &layout, provider, model))
}

fn init(g: &GlobalArgs, force: bool, pipeline: String) -> u8 {
    let path = pipeline_path(g);
    let schema_dir = path
        .parent()
        .map_or_else(|| PathBuf::from("schema"), |d| d.join("schema"));
    let mut files = vec![(path.clone(), pipeline)];
    for (name, text) in schema::rendered() {
        let file = schema_dir.join(name);
        if std::fs::read_to_string(&file).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        files.push((file, text));
    }
    let shown = |p: &Path| crate::plan::show_path(&cwd(), p);
    let existing: Vec<String> = files
        .iter()
        .filter(|(f, _)| f.symlink_metadata().is_ok())
        .map(|(f, _)| format!("`{}`", shown(f)))
        .collect();
    if !existing.is_empty() && !force {
        let (one, it) = if existing.len() == 1 {
            ("exists", "it")
        } else {
            ("exist", "them")
        };
        eprintln!(
            "error: {} already {one}; nothing was written (use --force to overwrite {it})",
            existing.join(", ")
        );
        return exit::USAGE;
    }
    for (file, text) in &files {
        let written = match file.parent() {
            Some(parent) => std::fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| std::fs::write(file, text));
        if let Err(e) = written {
            eprintln!("error: cannot write `{}`: {e}", shown(file));
            return exit::USAGE;
        }
        eprintln!("wrote {}", shown(file));
    }
    eprintln!("run `spec-runner plan` to see what it does, `spec-runner apply` to run it");
    exit::SUCCESS
}

/// A run id: sortable time plus a random suffix.
fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// The named specs and everything they depend on; all specs when none are named.
fn select(p: &Pipeline, names: &[String]) -> Result<Vec<bool>, String> {
    if names.is_empty() {
        return Ok(vec![true; p.specs.len()]);
    }
    let mut selected = vec![false; p.specs.len()];
    let mut stack = Vec::new();
    for name in names {
        match p.resolve(name) {
            Some(indices) => stack.extend(indices),
            None => return Err(p.no_such_spec(name)),
        }
    }
    while let Some(i) = stack.pop() {
        if !selected[i] {
            selected[i] = true;
            stack.extend(p.specs[i].depends_on.iter().copied());
        }
    }
    Ok(selected)
}

/// What to run: the requested specs, resumed or fresh.
struct RunRequest {
    requested: Vec<bool>,
    mode: crate::state::resume::Mode,
    /// A `restart`: its specs' dependencies must have succeeded (checked against the
    /// state, under the lock), or with `--with-deps` run first (`Some(true)`).
    restart_with_deps: Option<bool>,
}

fn apply(p: &Pipeline, args: &ApplyArgs, color: bool) -> u8 {
    let requested = match select(p, &args.specs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if args.detach && !args.detached_child {
        return crate::detach::start(p);
    }
    if args.detached_child {
        // Our own session: closing the terminal that started us does not end us.
        let _ = rustix::process::setsid();
    }
    let mode = if args.fresh {
        crate::state::resume::Mode::Fresh
    } else {
        crate::state::resume::Mode::Resume
    };
    execute(
        p,
        RunRequest {
            requested,
            mode,
            restart_with_deps: None,
        },
        &args.output,
        color,
    )
}

fn restart(p: &Pipeline, names: &[String], with_deps: bool, out: &OutputArgs, color: bool) -> u8 {
    let mut requested = vec![false; p.specs.len()];
    for name in names {
        match p.resolve(name) {
            Some(indices) => indices.into_iter().for_each(|i| requested[i] = true),
            None => {
                eprintln!("error: {}", p.no_such_spec(name));
                return exit::USAGE;
            }
        }
    }
    // A live run restarts them itself, the rest of it undisturbed.
    let resolved: Vec<String> = (0..p.specs.len())
        .filter(|&i| requested[i])
        .map(|i| p.specs[i].name.to_string())
        .collect();
    if let Some(code) = crate::control::restart_live(p, &resolved, with_deps) {
        return code;
    }
    // Only these specs: what they depend on must have succeeded (or, with
    // `--with-deps`, runs first).
    execute(
        p,
        RunRequest {
            requested,
            mode: crate::state::resume::Mode::Fresh,
            restart_with_deps: Some(with_deps),
        },
        out,
        color,
    )
}

/// An all-`None` per-spec vector made empty (its readers use `get`).
fn sparse<T>(v: &mut Vec<Option<T>>) {
    if v.iter().all(Option::is_none) {
        *v = Vec::new();
    }
}

fn execute(p: &Pipeline, req: RunRequest, out: &OutputArgs, color: bool) -> u8 {
    use crate::state::{resume, sink, store};

    // Before the first write: a file size limit must fail writes, not kill us.
    if let Err(e) = crate::runner::signal::survive_file_size_limit() {
        eprintln!("warning: cannot handle SIGXFSZ: {e}");
    }
    // Orphans of our attempts (a `setsid` escapee whose parent died) come to us, not
    // to init, so that we can end them with their attempt. Not on every platform.
    let _ = crate::exec::become_child_subreaper();
    crate::exec::share_malloc_arenas();
    let dir = &p.run.state_dir;
    let prepared = store::prepare_dir(dir).and_then(|()| store::lock(dir));
    let _lock = match prepared {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    store::remove_stale_temp_files(dir);
    let loaded = match store::load(dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if let Some(w) = &loaded.warning {
        eprintln!("warning: {w}");
    }
    let mut req = req;
    if let Some(with_deps) = req.restart_with_deps {
        match resume::restart_selection(p, &req.requested, loaded.state.as_ref(), with_deps) {
            Ok(selected) => req.requested = selected,
            Err(e) => {
                for line in e.lines() {
                    eprintln!("error: {line}");
                }
                eprintln!("nothing was run");
                return exit::USAGE;
            }
        }
    }
    let mut plan = resume::plan(p, &req.requested, loaded.state.as_ref(), req.mode);
    // Batch jobs a killed runner left: a resumed run follows each one still known to
    // the cluster to its end rather than submitting its attempt again; the others
    // (and all of them with --fresh) are cancelled by `end_abandoned`.
    if req.mode == resume::Mode::Resume {
        for &(i, id, log_number) in &plan.jobs_left {
            let spec = &p.specs[i];
            if plan.to_run[i]
                && spec.policy.backend == crate::config::policy::BackendKind::Slurm
                && crate::slurm::reattachable(id, &spec.name)
            {
                plan.reattach[i] = Some((id, log_number));
            }
        }
    }
    // Per-spec vectors that hold nothing (a fresh run, one without interrupted
    // cycles) are empty from here on: everything after reads them with `get`.
    // (~640 KB at 10,000 specs, held through the state file's first write.)
    sparse(&mut plan.cycle_age);
    sparse(&mut plan.previous_delay);
    sparse(&mut plan.loops);
    sparse(&mut plan.reattach);
    // Listen before the clean-up below: a Ctrl-C during it must not kill the runner
    // outright; the run then stops as soon as it starts.
    // Everything that wakes the dispatcher (signals, the state writer, the control
    // socket, the workers) goes through this one inbox.
    let inbox = crate::runner::inbox::Inbox::new();
    let _signals = match crate::runner::signal::SignalListener::start(inbox.sender()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
            return exit::USAGE;
        }
    };
    end_abandoned(p, &plan, loaded.state.as_ref());

    let run_id = new_run_id();
    let initial = sink::initial_state(p, loaded.state.as_ref(), &plan, &run_id);
    // The state holds each spec's definition hash from here on, and why each spec
    // runs is `plan`'s to show, not the run's.
    plan.hashes = Vec::new();
    plan.why = Vec::new();
    // The state file may keep specs of another pipeline in the same folder: the live
    // view, like `status`, shows this pipeline's specs only.
    let hidden = initial
        .specs
        .keys()
        .filter(|name| p.index_of(name).is_none())
        .map(|name| name.to_string())
        .collect();
    let mut state_sink =
        match sink::StateSink::start(dir.clone(), initial, inbox.sender().state_notifier()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "error: cannot write the state file in `{}`: {e}",
                    dir.display()
                );
                return exit::USAGE;
            }
        };

    tracing::info!(
        run_id,
        to_run = plan.to_run.iter().filter(|r| **r).count(),
        up_to_date = plan.up_to_date.iter().filter(|u| **u).count(),
        state_dir = %dir.display(),
        "starting the run"
    );
    let handle = state_sink.handle();
    // The live view reads the sink's state; it keeps no copy of its own.
    let hub = crate::live::hub::Hub::attach(&state_sink, hidden);
    // The control socket: a run that cannot serve one still runs (status and stop fall
    // back to the state file and a signal).
    let mut server = match crate::live::server::Server::start(dir, hub.clone(), inbox.sender()) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "warning: cannot serve the control socket in `{}`: {e}; `status` reads the state file, `stop` signals the runner, `stop SPEC` and `restart` in this run are not available",
                dir.display()
            );
            None
        }
    };
    let succeeded_before = p
        .specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            plan.up_to_date[i]
                || loaded
                    .state
                    .as_ref()
                    .and_then(|st| st.specs.get(&s.name))
                    .is_some_and(|st| st.status == crate::events::Status::Succeeded)
        })
        .collect();
    let github_actions =
        crate::report::in_github_actions(std::env::var_os("GITHUB_ACTIONS").as_deref());
    let look = crate::report::plain::Look {
        quiet: out.quiet,
        color,
        // Under GitHub Actions the failing log's end is in the annotation's group:
        // printed once, not twice.
        no_tail: github_actions,
    };
    let mut json;
    // Lives as long as the bars (declared before them: dropped after them).
    let _echo_off: Option<crate::exec::ControlEchoOff>;
    let mut bars;
    let mut plain;
    let mut github;
    let junit_path = out.junit.clone().or_else(|| p.run.junit_path.clone());
    let mut junit = junit_path.as_ref().map(|_| junit_report(p, &plan));
    let mut sinks: Vec<&mut dyn crate::events::EventSink> = vec![&mut state_sink];
    match out.format {
        ApplyFormat::Json => {
            json = crate::report::json::JsonReporter::new(std::io::stdout());
            sinks.push(&mut json);
        }
        ApplyFormat::Human => {
            // Bars cannot be drawn off a terminal, nor on one whose `TERM` is unset or
            // `dumb` (indicatif hides them, and with them the failure reports): plain
            // lines say the same there.
            let drawn = crate::report::progress::bars_drawn();
            let use_bars = match out.progress {
                // Quiet means lines: only failures and the summary.
                Progress::Auto => !out.quiet && drawn,
                Progress::Bar => drawn,
                Progress::Plain | Progress::None => false,
            };
            if use_bars {
                _echo_off = crate::exec::hide_control_echo();
                bars = crate::report::progress::ProgressReporter::new(look);
                sinks.push(&mut bars);
            } else if out.progress != Progress::None {
                plain = crate::report::plain::PlainReporter::new(std::io::stderr(), look);
                sinks.push(&mut plain);
            }
        }
    }
    if github_actions {
        github = crate::report::github::GithubReporter::new(std::io::stderr());
        sinks.push(&mut github);
    }
    if let Some(j) = junit.as_mut() {
        sinks.push(j);
    }
    let opts = crate::runner::RunOptions {
        run_id: run_id.clone(),
        // The plan's per-spec vectors are the run's from here on: moved, not copied.
        selected: std::mem::take(&mut plan.to_run),
        initial_retries: std::mem::take(&mut plan.initial_retries),
        cycle_age: std::mem::take(&mut plan.cycle_age),
        previous_delay: std::mem::take(&mut plan.previous_delay),
        next_log: std::mem::take(&mut plan.next_log),
        up_to_date: plan.up_to_date.iter().filter(|u| **u).count(),
        state: Some(handle),
        backend: std::sync::Arc::new(crate::runner::backend::PerSpec {
            local: crate::runner::backend::Local,
            slurm: p
                .specs
                .iter()
                .any(|s| s.policy.backend == crate::config::policy::BackendKind::Slurm)
                .then(|| crate::slurm::Cluster::new(p.run.slurm.clone(), run_id.clone())),
        }),
        // Empty when no job is followed again (the usual case): 24 bytes a spec less.
        reattach: if plan.reattach.iter().any(Option::is_some) {
            plan.reattach
                .iter()
                .map(|r| {
                    r.map(|(job_id, log_number)| crate::runner::pool::Reattach {
                        job_id,
                        log_number,
                    })
                })
                .collect()
        } else {
            Vec::new()
        },
        steering: Some(crate::runner::dispatcher::steer::Steering { succeeded_before }),
        loops: std::mem::take(&mut plan.loops),
    };
    // What is left of the plan is not needed while the run goes on.
    drop(plan);
    let code = {
        let mut fan = crate::report::Fanout(sinks);
        crate::runner::dispatcher::run(p, opts, &mut fan, inbox)
    };
    if let Some(s) = server.as_mut() {
        s.close();
    }
    end_leftovers(p, &run_id);
    if let Some(e) = state_sink.close() {
        eprintln!("warning: {e}");
    }
    match (junit, junit_path) {
        (Some(report), Some(path)) => write_junit(&report, &path, code),
        _ => code,
    }
}

/// The JUnit collector of a run: every requested spec, in pipeline order.
fn junit_report(
    p: &Pipeline,
    plan: &crate::state::resume::ResumePlan,
) -> crate::report::junit::JunitReport {
    use crate::report::junit::{JunitReport, Planned};
    let specs = p.specs.iter().enumerate().filter_map(|(i, s)| {
        let planned = if plan.to_run[i] {
            Planned::Run
        } else if plan.up_to_date[i] {
            Planned::UpToDate
        } else {
            return None;
        };
        Some((s.name.to_string(), planned))
    });
    JunitReport::new(crate::plan::show_path(&cwd(), &p.file), specs)
}

/// Writes the report; a run that succeeded but could not write it exits 2 (a bad
/// `--junit`/`junit_path`), any other run keeps its exit code.
fn write_junit(report: &crate::report::junit::JunitReport, path: &Path, code: u8) -> u8 {
    match report.write(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "wrote the JUnit report");
            code
        }
        Err(e) => {
            eprintln!(
                "error: cannot write the JUnit report `{}`: {e}",
                path.display()
            );
            if code == exit::SUCCESS {
                exit::USAGE
            } else {
                code
            }
        }
    }
}

/// Every attempt ended with its group and what it left that we inherited; one scan of
/// `/proc` by run id at the end catches anything else of this run still alive (a
/// process that escaped its group without being re-parented to us, or a platform
/// without child subreaper).
fn end_leftovers(p: &Pipeline, run_id: &str) {
    let n = crate::exec::end_processes_of_run(run_id, longest_grace(p));
    if n > 0 {
        eprintln!("warning: ended {n} process(es) of this run left running after their attempts");
    }
}

/// The longest `terminate_grace_seconds` of any spec: what a sweep of a whole run's
/// processes grants them.
fn longest_grace(p: &Pipeline) -> std::time::Duration {
    p.specs
        .iter()
        .map(|s| s.policy.terminate_grace)
        .max()
        .unwrap_or_default()
}

/// Ends the process groups a killed runner left running (matching pid and start time,
/// so a reused pid is never signalled).
fn end_abandoned(
    p: &Pipeline,
    plan: &crate::state::resume::ResumePlan,
    previous: Option<&crate::state::model::StateFile>,
) {
    for (name, proc) in &plan.abandoned {
        let grace = p
            .index_of(name)
            .map_or(std::time::Duration::from_secs(10), |i| {
                p.specs[i].policy.terminate_grace
            });
        if crate::exec::end_abandoned_group(proc.pid, proc.pgid, proc.start_time, grace) {
            eprintln!(
                "warning: ended process group {} of spec `{name}`, left running by a runner that was killed",
                proc.pgid
            );
        }
    }
    for &(i, id, _) in &plan.jobs_left {
        if plan.reattach.get(i).is_some_and(Option::is_some) {
            continue;
        }
        let name = &p.specs[i].name;
        if crate::slurm::cancel_left(id, name) {
            eprintln!(
                "warning: cancelled slurm job {id} of spec `{name}`, left running by a runner that was killed"
            );
        }
    }
    // A runner killed between starting an attempt and recording it, or an attempt's
    // process that left its group, is found by the run id in its environment.
    let Some(prev) = previous else { return };
    // A run that never recorded its end was cut short: its processes (attempts and
    // hooks alike) may still be running.
    let interrupted = prev.finished_at.is_none();
    if interrupted {
        let n = crate::exec::end_processes_of_run(&prev.run_id, longest_grace(p));
        if n > 0 {
            eprintln!(
                "warning: ended {n} process(es) left running by run {} of a runner that was killed",
                prev.run_id
            );
        }
    }
}
