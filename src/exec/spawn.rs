//! Starting an attempt's command: finding its program, spawning it in a process group
//! of its own with its output on a pipe, and saying precisely why that failed.

use std::ffi::{OsStr, OsString};
use std::io::{self, PipeWriter};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::AttemptSpec;

/// Why an attempt's command did not start. Its text is the reason the runner records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("the command is empty")]
    EmptyCommand,
    #[error("the command's program name is empty")]
    EmptyProgram,
    #[error("failed to create the output pipe: {0}")]
    Pipe(#[source] io::Error),
    #[error("working directory `{}` does not exist", .0.display())]
    NoCwd(PathBuf),
    #[error("working directory `{}` is not a directory", .0.display())]
    CwdNotADirectory(PathBuf),
    #[error("working directory `{}` is not accessible: {source}", .path.display())]
    CwdInaccessible {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to start `{0}`: command not found on PATH")]
    NotOnPath(String),
    #[error("failed to start `{}`: no such file (or its `#!` interpreter is missing)", .0.display())]
    NoSuchFile(PathBuf),
    #[error("failed to start `{}`: permission denied (is it executable?)", .0.display())]
    PermissionDenied(PathBuf),
    #[error("failed to start `{}`: {source}", .exe.display())]
    Other {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Starts the command in its own process group, with stdin from `/dev/null` and
/// stdout and stderr both into `writer`.
pub(crate) fn spawn(spec: &AttemptSpec, writer: PipeWriter) -> Result<Child, SpawnError> {
    let argv = spec.command.argv();
    let Some((program, args)) = argv.split_first() else {
        return Err(SpawnError::EmptyCommand);
    };
    if program.is_empty() {
        return Err(SpawnError::EmptyProgram);
    }
    let exe = resolve_program(program, &spec.cwd, &spec.env);
    let stderr = writer.try_clone().map_err(SpawnError::Pipe)?;
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .stdin(null_input())
        .stdout(writer)
        .stderr(stderr)
        // A group of its own, so that ending the attempt reaches every process it
        // started, and a terminal's Ctrl-C does not reach it behind our back.
        .process_group(0)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    let started = cmd.spawn().map_err(|e| {
        // A program found earlier may be gone: the next attempt looks again.
        forget_program(program);
        check_cwd(&spec.cwd)
            .err()
            .unwrap_or_else(|| spawn_error(program, &exe, e))
    });
    // The command holds our copies of the pipe's write end; drop them now, or the
    // output would never reach its end.
    drop(cmd);
    started
}

/// `/dev/null` for an attempt's stdin: a duplicate of one opened once per run (a
/// `dup` costs less than opening the path again on every spawn).
fn null_input() -> Stdio {
    static NULL: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok())
        .as_ref()
        .and_then(|null| null.try_clone().ok())
        .map_or_else(Stdio::null, Stdio::from)
}

/// Tells what is wrong with the working directory, if anything. Asked only once a
/// spawn failed (the error for a missing cwd would name the program instead), so a
/// good attempt costs no `stat` for it.
fn check_cwd(cwd: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(cwd) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(SpawnError::CwdNotADirectory(cwd.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SpawnError::NoCwd(cwd.to_owned())),
        Err(source) => Err(SpawnError::CwdInaccessible {
            path: cwd.to_owned(),
            source,
        }),
    }
}

/// A relative path with a separator (`./build.sh`, `bin/x`) means a file in the
/// attempt's cwd, as it would for `sh -c`; `Command` would resolve it against ours.
///
/// A bare name is looked up on `PATH` here, as `execvp` would (the attempt's own
/// `PATH` if its env sets one): with an absolute program std can spawn with
/// `posix_spawn` (vfork) instead of `fork`, which copies the runner's page tables —
/// the difference between 0.5 ms and several ms per attempt in a large pipeline.
fn resolve_program(program: &str, cwd: &Path, env: &[(OsString, OsString)]) -> OsString {
    let path = Path::new(program);
    if program.contains('/') {
        return if path.is_relative() {
            cwd.join(path).into_os_string()
        } else {
            OsString::from(program)
        };
    }
    let search = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    // Only a search with absolute entries gives the same answer in every cwd.
    let cacheable = std::env::split_paths(&search).all(|d| d.is_absolute());
    if cacheable && let Some(found) = found_programs().get(&(program.to_owned(), search.clone())) {
        return found.clone();
    }
    let found = search_path(program, &search, cwd);
    if cacheable && let Some(exe) = &found {
        found_programs().insert((program.to_owned(), search), exe.clone());
    }
    // Not found: spawning the bare name fails with NotFound, reported as such.
    found.unwrap_or_else(|| OsString::from(program))
}

/// Bare program names found on `PATH`, by name and the `PATH` searched: a pipeline
/// runs the same few programs thousands of times, and a lookup costs one `stat` per
/// `PATH` entry. Only finds are kept; a failed spawn forgets its program.
type FoundPrograms = std::collections::HashMap<(String, OsString), OsString>;

fn found_programs() -> std::sync::MutexGuard<'static, FoundPrograms> {
    static FOUND: std::sync::LazyLock<Mutex<FoundPrograms>> =
        std::sync::LazyLock::new(Default::default);
    FOUND
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget_program(program: &str) {
    found_programs().retain(|(name, _), _| name != program);
}

/// The first executable `program` in the `PATH` entries of `search`, as `execvp`
/// would find it.
fn search_path(program: &str, search: &OsStr, cwd: &Path) -> Option<OsString> {
    for dir in std::env::split_paths(search) {
        // An empty entry means the current directory, which for the child is its cwd.
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return Some(candidate.into_os_string());
        }
    }
    None
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn spawn_error(program: &str, exe: &OsStr, err: io::Error) -> SpawnError {
    let exe = PathBuf::from(exe);
    let on_path = !program.contains('/');
    match err.kind() {
        io::ErrorKind::NotFound if on_path => SpawnError::NotOnPath(program.to_owned()),
        io::ErrorKind::NotFound => SpawnError::NoSuchFile(exe),
        io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied(exe),
        _ => SpawnError::Other { exe, source: err },
    }
}
