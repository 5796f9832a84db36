//! The command-line entry point: parse, load, dispatch, map errors to exit codes.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

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
    let cli = match Cli::try_parse_from(args) {
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

fn dispatch(cli: Cli) -> u8 {
    let g = &cli.global;
    match &cli.command {
        Command::Validate(o) => match load(g, o) {
            Ok(p) => {
                println!("{}: {} specs, valid", p.file.display(), p.specs.len());
                exit::SUCCESS
            }
            Err(code) => code,
        },
        Command::Plan {
            explain,
            format,
            overrides,
        } => match load(g, overrides) {
            Ok(p) => {
                let text = match format {
                    PlanFormat::Json => {
                        let mut s = serde_json::to_string_pretty(&crate::plan::plan_json(&p))
                            .unwrap_or_default();
                        s.push('\n');
                        s
                    }
                    PlanFormat::Text => crate::plan::plan_text(&p, *explain),
                };
                print_out(&text)
            }
            Err(code) => code,
        },
        Command::Apply(args) => match load(g, &args.overrides) {
            Ok(p) => apply(&p, args),
            Err(code) => code,
        },
        Command::Restart {
            specs,
            overrides,
            output,
        } => match load(g, overrides) {
            Ok(p) => restart(&p, specs, output),
            Err(code) => code,
        },
        Command::Status { format } => match load(g, &OverrideArgs::default()) {
            Ok(p) => crate::control::status(&p, *format == PlanFormat::Json),
            Err(code) => code,
        },
        Command::Stop => match load(g, &OverrideArgs::default()) {
            Ok(p) => crate::control::stop(&p),
            Err(code) => code,
        },
        Command::Logs { spec, attempt } => match load(g, &OverrideArgs::default()) {
            Ok(p) => crate::control::logs(&p, spec, *attempt),
            Err(code) => code,
        },
        Command::Schema { check, dir } => schema_cmd(g, *check, dir.as_deref()),
        Command::Init { force } => init(g, *force),
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

fn init(g: &GlobalArgs, force: bool) -> u8 {
    let path = pipeline_path(g);
    if path.exists() && !force {
        eprintln!(
            "error: `{}` already exists (use --force to overwrite it)",
            path.display()
        );
        return exit::USAGE;
    }
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&path, crate::starter::STARTER_PIPELINE) {
        Ok(()) => {
            eprintln!(
                "wrote {}; run `spec-runner plan` to see what it does",
                path.display()
            );
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            exit::USAGE
        }
    }
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
        match p.index_of(name) {
            Some(i) => stack.push(i),
            None => {
                let hint =
                    config::diag::did_you_mean(name, p.specs.iter().map(|s| s.name.as_str()))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                return Err(format!(
                    "no spec named `{name}` in {}{hint}",
                    p.file.display()
                ));
            }
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
}

fn apply(p: &Pipeline, args: &ApplyArgs) -> u8 {
    let requested = match select(p, &args.specs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let mode = if args.fresh {
        crate::state::resume::Mode::Fresh
    } else {
        crate::state::resume::Mode::Resume
    };
    execute(p, RunRequest { requested, mode }, &args.output)
}

fn restart(p: &Pipeline, names: &[String], out: &OutputArgs) -> u8 {
    let mut requested = vec![false; p.specs.len()];
    for name in names {
        match p.index_of(name) {
            Some(i) => requested[i] = true,
            None => {
                let hint =
                    config::diag::did_you_mean(name, p.specs.iter().map(|s| s.name.as_str()))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                eprintln!(
                    "error: no spec named `{name}` in {}{hint}",
                    p.file.display()
                );
                return exit::USAGE;
            }
        }
    }
    // Only these specs: what they depend on is taken as done.
    execute(
        p,
        RunRequest {
            requested,
            mode: crate::state::resume::Mode::Fresh,
        },
        out,
    )
}

fn execute(p: &Pipeline, req: RunRequest, out: &OutputArgs) -> u8 {
    use crate::state::{resume, sink, store};
    use std::io::IsTerminal;

    // Before the first write: a file size limit must fail writes, not kill us.
    if let Err(e) = crate::runner::signal::survive_file_size_limit() {
        eprintln!("warning: cannot handle SIGXFSZ: {e}");
    }
    // Orphans of our attempts (a `setsid` escapee whose parent died) come to us, not
    // to init, so that we can end them with their attempt. Not on every platform.
    let _ = crate::exec::become_child_subreaper();
    let dir = &p.run.state_dir;
    let prepared = store::prepare_dir(dir).and_then(|()| store::lock(dir));
    let _lock = match prepared {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
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
    let plan = resume::plan(p, &req.requested, loaded.state.as_ref(), req.mode);
    end_abandoned(p, &plan, loaded.state.as_ref());

    let run_id = new_run_id();
    let initial = sink::initial_state(p, loaded.state.as_ref(), &plan, &run_id);
    let mut state_sink = match sink::StateSink::start(dir.clone(), initial) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot write the state file in `{}`: {e}",
                dir.display()
            );
            return exit::USAGE;
        }
    };
    let signals = match crate::runner::signal::SignalListener::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen for signals: {e}");
            return exit::USAGE;
        }
    };

    let handle = state_sink.handle();
    let mut json;
    let mut bars;
    let mut plain;
    let mut sinks: Vec<&mut dyn crate::runner::EventSink> = vec![&mut state_sink];
    match out.format {
        ApplyFormat::Json => {
            json = crate::report::json::JsonReporter::new(std::io::stdout());
            sinks.push(&mut json);
        }
        ApplyFormat::Human => {
            let use_bars = match out.progress {
                Progress::Auto => std::io::stderr().is_terminal(),
                Progress::Bar => true,
                Progress::Plain | Progress::None => false,
            };
            if use_bars {
                bars = crate::report::progress::ProgressReporter::new(out.quiet);
                sinks.push(&mut bars);
            } else if out.progress != Progress::None {
                plain = crate::report::plain::PlainReporter::new(std::io::stderr(), out.quiet);
                sinks.push(&mut plain);
            }
        }
    }
    let opts = crate::runner::RunOptions {
        run_id: run_id.clone(),
        selected: plan.to_run.clone(),
        initial_retries: plan.initial_retries.clone(),
        next_log: plan.next_log.clone(),
        up_to_date: plan.up_to_date.iter().filter(|u| **u).count(),
        state: Some(handle),
    };
    let code = {
        let mut fan = crate::report::Fanout(sinks);
        crate::runner::dispatcher::run(p, opts, &mut fan, &signals.events)
    };
    end_leftovers(p, &run_id);
    if let Some(e) = state_sink.close() {
        eprintln!("warning: {e}");
    }
    code
}

/// Every attempt ended with its group and what it left that we inherited; one scan of
/// `/proc` by run id at the end catches anything else of this run still alive (a
/// process that escaped its group without being re-parented to us, or a platform
/// without child subreaper).
fn end_leftovers(p: &Pipeline, run_id: &str) {
    let grace = p
        .specs
        .iter()
        .map(|s| s.policy.terminate_grace)
        .max()
        .unwrap_or_default();
    let n = crate::exec::end_processes_of_run(run_id, grace);
    if n > 0 {
        eprintln!("warning: ended {n} process(es) of this run left running after their attempts");
    }
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
    // A runner killed between starting an attempt and recording it, or an attempt's
    // process that left its group, is found by the run id in its environment.
    let Some(prev) = previous else { return };
    let interrupted = prev.specs.values().any(|s| {
        matches!(
            s.status,
            crate::runner::Status::Running
                | crate::runner::Status::Backoff
                | crate::runner::Status::Pending
        )
    });
    if interrupted {
        let grace = p
            .specs
            .iter()
            .map(|s| s.policy.terminate_grace)
            .max()
            .unwrap_or_default();
        let n = crate::exec::end_processes_of_run(&prev.run_id, grace);
        if n > 0 {
            eprintln!(
                "warning: ended {n} process(es) left running by run {} of a runner that was killed",
                prev.run_id
            );
        }
    }
}
