//! Starting an attempt's command: finding its program, spawning it in a process group
//! of its own with its output on a pipe, and saying precisely why that failed.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io::{self, PipeWriter};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{AttemptSpec, unix};

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
/// stdout and stderr both into `writer`. Returns the leader's pid (its group's id).
pub(crate) fn spawn(spec: &AttemptSpec, writer: PipeWriter) -> Result<u32, SpawnError> {
    let argv = spec.command.argv();
    let Some((program, _)) = argv.split_first() else {
        return Err(SpawnError::EmptyCommand);
    };
    if program.is_empty() {
        return Err(SpawnError::EmptyProgram);
    }
    let exe = resolve_program(program, &spec.cwd, &spec.env);
    let started = start(spec, &argv, &exe, &writer).map_err(|e| {
        // A program found earlier may be gone: the next attempt looks again.
        forget_program(program);
        check_cwd(&spec.cwd)
            .err()
            .unwrap_or_else(|| spawn_error(program, &exe, e))
    });
    // Our copy of the pipe's write end goes now, or the output would never reach its
    // end.
    drop(writer);
    started
}

/// The spawn itself: C strings for the program, its arguments, the cwd and the
/// environment (the runner's, made once, with the attempt's variables over it).
fn start(spec: &AttemptSpec, argv: &[String], exe: &OsStr, writer: &PipeWriter) -> io::Result<u32> {
    // A bare name is one `PATH` did not have (`resolve_program` gives a path for
    // anything it found): `posix_spawn` would look for it in the cwd instead.
    if !exe.as_encoded_bytes().contains(&b'/') {
        return Err(io::ErrorKind::NotFound.into());
    }
    // The child enters its cwd before it runs the program: a relative path (from a
    // relative cwd) must name the program as seen from ours.
    let exe: std::borrow::Cow<'_, OsStr> = if Path::new(exe).is_relative() {
        std::path::absolute(exe)?.into_os_string().into()
    } else {
        exe.into()
    };
    let exe = c_string(exe.as_encoded_bytes())?;
    let argv = argv
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = c_string(spec.cwd.as_os_str().as_encoded_bytes())?;
    let own = attempt_env(&spec.env)?;
    let base = base_env();
    let env: Vec<&CStr> = base
        .iter()
        .filter(|(name, _)| !own.iter().any(|(n, _)| n == name))
        .chain(own.iter())
        .map(|(_, entry)| entry.as_c_str())
        .collect();
    let stdin = null_input()?;
    unix::spawn_in_new_group(&unix::SpawnRequest {
        exe: &exe,
        argv: &argv,
        env: &env,
        cwd: &cwd,
        stdin,
        output: writer.as_fd(),
    })
}

/// An environment entry: its name, and the whole `NAME=value` as a C string.
type EnvEntry = (Vec<u8>, CString);

fn env_entry(name: &OsStr, value: &OsStr) -> io::Result<EnvEntry> {
    let name = name.as_encoded_bytes();
    let mut entry = Vec::with_capacity(name.len() + 1 + value.len());
    entry.extend_from_slice(name);
    entry.push(b'=');
    entry.extend_from_slice(value.as_encoded_bytes());
    Ok((name.to_vec(), c_string(&entry)?))
}

/// The runner's own environment as entries, read once: nothing changes it during a
/// run (the runner never calls `set_var`). An entry that cannot be a C string cannot
/// be in it.
fn base_env() -> &'static [EnvEntry] {
    static BASE: std::sync::LazyLock<Vec<EnvEntry>> =
        std::sync::LazyLock::new(|| env_entries(std::env::vars_os()));
    &BASE
}

/// `vars` as entries, each name once. An environment may hold a name twice (`execve`
/// takes any list); the last value wins, as a shell importing it (or std's `Command`)
/// would have it — a child's `getenv` would otherwise find the first.
fn env_entries(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<EnvEntry> {
    let all: Vec<EnvEntry> = vars
        .into_iter()
        .filter_map(|(name, value)| env_entry(&name, &value).ok())
        .collect();
    let mut seen = std::collections::HashSet::with_capacity(all.len());
    let mut entries: Vec<EnvEntry> = all
        .into_iter()
        .rev()
        .filter(|(name, _)| seen.insert(name.clone()))
        .collect();
    entries.reverse();
    entries
}

/// The attempt's variables as entries; of a name given twice, the last value wins.
fn attempt_env(env: &[(OsString, OsString)]) -> io::Result<Vec<EnvEntry>> {
    let mut own: Vec<EnvEntry> = Vec::with_capacity(env.len());
    for (name, value) in env {
        if name.is_empty() || name.as_encoded_bytes().contains(&b'=') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid environment variable name `{}`", name.display()),
            ));
        }
        let entry = env_entry(name, value)?;
        own.retain(|(n, _)| *n != entry.0);
        own.push(entry);
    }
    Ok(own)
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// `/dev/null` for an attempt's stdin: one opened once per run and handed to every
/// child as it is (the child's `dup2` onto its stdin drops close-on-exec there), rather
/// than a duplicate made and closed on every spawn (two system calls per attempt).
fn null_input() -> io::Result<BorrowedFd<'static>> {
    static NULL: std::sync::OnceLock<io::Result<std::fs::File>> = std::sync::OnceLock::new();
    match NULL.get_or_init(|| std::fs::File::open("/dev/null")) {
        Ok(null) => Ok(null.as_fd()),
        Err(e) => Err(io::Error::new(e.kind(), format!("/dev/null: {e}"))),
    }
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

/// The path `posix_spawn` is given for `program` (which never searches `PATH`
/// itself); `argv[0]` stays `program` as the spec wrote it, as a shell would pass it.
///
/// A relative path with a separator (`./build.sh`, `bin/x`) means a file in the
/// attempt's cwd, as it would for `sh -c`. A bare name is looked up on `PATH` here, as
/// `execvp` would, in the attempt's own `PATH` if its env sets one (`posix_spawnp`
/// would search the runner's), and the find is kept for the run when the search
/// cannot depend on the cwd (see [`found_programs`]). A name not found comes back
/// bare, and the spawn reports it as not found on `PATH`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_given_twice_in_the_runners_environment_keeps_its_last_value() {
        let vars = [
            ("A", "first"),
            ("PATH", "/bin"),
            ("A", "second"),
            ("B", "b"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let entries = env_entries(vars);
        let texts: Vec<&[u8]> = entries.iter().map(|(_, e)| e.as_bytes()).collect();
        assert_eq!(texts, [&b"PATH=/bin"[..], b"A=second", b"B=b"]);
    }
}
