//! The job side: what a batch job runs (`spec-runner __slurm-job --status FILE --cwd
//! DIR --run-id ID -- COMMAND…`). It enters the spec's folder (a missing one fails the
//! attempt: Slurm itself would run the job in /tmp), runs the command with its output
//! in the job's (the attempt's log), and writes how it ended to FILE, which tells
//! a signal from an exit code exactly, where Slurm's own accounting cannot.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Why the job side could not start the command (or lost it): written to the status
/// file as a [`Status::NotStarted`] sentence, which the runner shows as the reason.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("working directory `{}` is not a directory", cwd.display())]
    CwdNotDir { cwd: PathBuf },
    #[error("working directory `{}` does not exist", cwd.display())]
    CwdMissing { cwd: PathBuf },
    #[error("working directory `{}` is not accessible: {source}", cwd.display())]
    CwdInaccessible {
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter the working directory `{}`: {source}", cwd.display())]
    EnterCwd {
        cwd: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A program named by a path that is not there (or whose `#!` interpreter is not).
    #[error("failed to start `{program}`: no such file (or its `#!` interpreter is missing)")]
    NoSuchFile { program: String },
    #[error("failed to start `{program}`: command not found on PATH")]
    NotOnPath { program: String },
    #[error("failed to start `{program}`: permission denied (is it executable?)")]
    NotExecutable { program: String },
    #[error("failed to start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the command: {0}")]
    Wait(#[source] std::io::Error),
}

/// How an attempt ended, as the job writes it and the runner reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Exit(i32),
    Signal(i32),
    /// The command could not be started (missing cwd, program not found).
    NotStarted(String),
}

impl Status {
    pub fn to_line(&self) -> String {
        match self {
            Status::Exit(c) => format!("exit {c}\n"),
            Status::Signal(s) => format!("signal {s}\n"),
            Status::NotStarted(why) => format!("not-started {}\n", why.replace('\n', " ")),
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        let line = text.lines().next()?;
        let (kind, rest) = line.split_once(' ')?;
        match kind {
            "exit" => rest.parse().ok().map(Status::Exit),
            "signal" => rest.parse().ok().map(Status::Signal),
            "not-started" => Some(Status::NotStarted(rest.to_string())),
            _ => None,
        }
    }
}

/// The hidden subcommand's entry point; returns the job's exit code.
pub fn job_main(args: &[OsString]) -> u8 {
    let mut status = None;
    let mut cwd = None;
    let mut run_id = None;
    let mut it = args.iter();
    let mut argv = Vec::new();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--status") => status = it.next().map(PathBuf::from),
            Some("--cwd") => cwd = it.next().map(PathBuf::from),
            Some("--run-id") => run_id = it.next().cloned(),
            Some("--") => {
                argv.extend(it.by_ref().cloned());
                break;
            }
            _ => {
                eprintln!(
                    "spec-runner: {}: unexpected argument {a:?}",
                    super::JOB_SUBCOMMAND
                );
                return 2;
            }
        }
    }
    let (Some(status_path), Some(cwd), Some(run_id), Some((program, rest))) =
        (status, cwd, run_id, argv.split_first())
    else {
        eprintln!(
            "spec-runner: {} needs --status, --cwd, --run-id and a command",
            super::JOB_SUBCOMMAND
        );
        return 2;
    };
    // Slurm's TERM (`scancel --signal=TERM --full`) reaches the whole process group:
    // this process lives on to record how the command ended. A handler, not "ignore":
    // the command gets the default disposition back when it starts.
    let noticed = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        let _ = signal_hook::flag::register(sig, noticed.clone());
    }
    let ended =
        run(&cwd, &run_id, program, rest).unwrap_or_else(|e| Status::NotStarted(e.to_string()));
    if let Status::NotStarted(why) = &ended {
        // In the log, like a local attempt's reason.
        println!("spec-runner: could not start: {why}");
    }
    let _ = std::io::stdout().flush();
    if let Err(e) = write_status(&status_path, &ended) {
        eprintln!(
            "spec-runner: cannot write the status file `{}`: {e}",
            status_path.display()
        );
    }
    match ended {
        Status::Exit(c) => u8::try_from(c & 0xff).unwrap_or(1),
        Status::Signal(s) => u8::try_from((128 + s) & 0xff).unwrap_or(1),
        Status::NotStarted(_) => 1,
    }
}

/// Runs the command in `cwd` to its end: an exit code or a signal.
fn run(
    cwd: &Path,
    run_id: &OsString,
    program: &OsString,
    args: &[OsString],
) -> Result<Status, StartError> {
    let at = || cwd.to_path_buf();
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(StartError::CwdNotDir { cwd: at() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StartError::CwdMissing { cwd: at() });
        }
        Err(source) => return Err(StartError::CwdInaccessible { cwd: at(), source }),
    }
    std::env::set_current_dir(cwd).map_err(|source| StartError::EnterCwd { cwd: at(), source })?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .env("SPEC_RUNNER_RUN_ID", run_id);
    // Marks the job's processes as a backend's: a later runner's sweep of a killed
    // run's local processes leaves them to their job (they are re-attached).
    if let Some(id) = std::env::var_os("SLURM_JOB_ID") {
        cmd.env("SPEC_RUNNER_JOB_ID", id);
    } else {
        cmd.env("SPEC_RUNNER_JOB_ID", "unknown");
    }
    let mut child = cmd.spawn().map_err(|source| {
        let program = program.to_string_lossy().into_owned();
        match source.kind() {
            std::io::ErrorKind::NotFound if program.contains('/') => {
                StartError::NoSuchFile { program }
            }
            std::io::ErrorKind::NotFound => StartError::NotOnPath { program },
            std::io::ErrorKind::PermissionDenied => StartError::NotExecutable { program },
            _ => StartError::Spawn { program, source },
        }
    })?;
    loop {
        match child.wait() {
            Ok(st) => {
                return Ok(match (st.code(), st.signal()) {
                    (Some(c), _) => Status::Exit(c),
                    (None, Some(s)) => Status::Signal(s),
                    (None, None) => Status::Exit(1),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StartError::Wait(e)),
        }
    }
}

/// Temp file + rename: the runner never reads half a status.
fn write_status(path: &Path, status: &Status) -> std::io::Result<()> {
    let tmp = path.with_extension("status.tmp");
    std::fs::write(&tmp, status.to_line())?;
    std::fs::rename(&tmp, path)
}

/// Reads the status a job wrote, if it did.
pub fn read_status(path: &Path) -> Option<Status> {
    Status::parse(&std::fs::read_to_string(path).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_round_trip() {
        for s in [
            Status::Exit(0),
            Status::Exit(3),
            Status::Signal(9),
            Status::NotStarted("working directory `/x\ny` does not exist".into()),
        ] {
            let back = Status::parse(&s.to_line()).unwrap();
            match (&s, &back) {
                (Status::NotStarted(_), Status::NotStarted(b)) => assert!(!b.contains('\n')),
                _ => assert_eq!(back, s),
            }
        }
        assert_eq!(Status::parse(""), None);
        assert_eq!(Status::parse("exit x"), None);
    }

    #[test]
    fn start_failures_name_the_folder_or_program() {
        let dir = tempfile::tempdir().expect("tempdir");
        let gone = dir.path().join("gone");
        let err = run(&gone, &"r".into(), &"true".into(), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("working directory `{}` does not exist", gone.display())
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "").expect("write");
        let err = run(&file, &"r".into(), &"true".into(), &[]).unwrap_err();
        assert!(matches!(err, StartError::CwdNotDir { .. }), "{err:?}");
        assert_eq!(
            StartError::NotOnPath {
                program: "nope".into()
            }
            .to_string(),
            "failed to start `nope`: command not found on PATH"
        );
    }
}
