//! `apply --detach`: the same `apply` in the background, in its own session, its output
//! in a file of the state folder. Returns once the run serves its control socket.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Pipeline;
use crate::exit;
use crate::live::client::Client;

/// The background run's output (stdout and stderr), in the state folder.
pub const OUTPUT_FILE: &str = "detached.log";

/// How long the background run may take to serve before we give up waiting.
const PATIENCE: Duration = Duration::from_secs(120);

/// The arguments of this process, `--detach` traded for the hidden flag that tells
/// the background process what it is.
pub fn child_args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    args.push("--detached-child".into());
    args
}

/// What became of a background run.
pub enum Launched {
    /// It serves its socket.
    Serving { pid: u32, run_id: String },
    /// It ended before it was seen serving (a very short run), with this exit code.
    Ended { pid: u32, code: u8 },
}

/// `apply --detach`: starts the run, prints its id, pid and how to attach.
pub fn start(p: &Pipeline) -> u8 {
    let shown = shown(p);
    match launch(p, child_args()) {
        Ok(Launched::Serving { pid, run_id }) => {
            println!("run {run_id} started in the background, pid {pid}");
            println!("output: {shown}");
            println!(
                "watch:  spec-runner tui | spec-runner status | spec-runner logs SPEC --follow"
            );
            println!("stop:   spec-runner stop [SPEC…]");
            exit::SUCCESS
        }
        Ok(Launched::Ended { pid, code }) => {
            print_output(&p.run.state_dir.join(OUTPUT_FILE));
            eprintln!(
                "the background run (pid {pid}) ended with exit code {code}; its output is in {shown}"
            );
            code
        }
        Err(code) => code,
    }
}

fn shown(p: &Pipeline) -> String {
    crate::plan::show_path(
        &std::env::current_dir().unwrap_or_default(),
        &p.run.state_dir.join(OUTPUT_FILE),
    )
}

/// Starts the background run and waits until it serves (or ends). Errors are printed;
/// `Err` holds the exit code.
pub fn launch(p: &Pipeline, args: Vec<std::ffi::OsString>) -> Result<Launched, u8> {
    let dir = &p.run.state_dir;
    if let Err(e) = crate::state::store::prepare_dir(dir) {
        eprintln!("error: {e}");
        return Err(exit::USAGE);
    }
    // Refused before its output file is touched: that file is the live run's.
    if let Ok(Some(pid)) = crate::state::store::holder(dir) {
        eprintln!(
            "error: another spec-runner (pid {pid}) is running this pipeline; watch it with `spec-runner tui`, or stop it with `spec-runner stop`"
        );
        return Err(exit::USAGE);
    }
    let out_path = dir.join(OUTPUT_FILE);
    let opened = std::fs::File::create(&out_path).and_then(|f| Ok((f.try_clone()?, f)));
    let (out, err) = match opened {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot write `{}`: {e}", out_path.display());
            return Err(exit::USAGE);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this program to start it in the background: {e}");
            return Err(exit::USAGE);
        }
    };
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot start the background run: {e}");
            return Err(exit::USAGE);
        }
    };
    let pid = child.id();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let code = status.code().and_then(|c| u8::try_from(c).ok());
            return Ok(Launched::Ended {
                pid,
                code: code.unwrap_or(exit::FAILURE),
            });
        }
        if let Some(run_id) = serving(dir, pid) {
            return Ok(Launched::Serving { pid, run_id });
        }
        if Instant::now() > deadline {
            eprintln!(
                "error: the background run (pid {pid}) is not serving its control socket after {}s; see {}",
                PATIENCE.as_secs(),
                out_path.display()
            );
            return Err(exit::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The run id, once the run with this pid serves the state folder's socket.
fn serving(dir: &Path, pid: u32) -> Option<String> {
    let mut c = Client::connect(dir)?;
    c.set_timeout(Some(Duration::from_secs(10)));
    let snap = c.request("snapshot", &[]).ok()?;
    let s = &snap["snapshot"];
    (s["runner_pid"].as_u64() == Some(u64::from(pid)))
        .then(|| s["run_id"].as_str().unwrap_or_default().to_string())
}

fn print_output(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        eprint!("{text}");
    }
}
