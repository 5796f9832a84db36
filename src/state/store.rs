//! The state folder on disk: the lock that keeps one runner per pipeline, and the
//! state file, always replaced atomically (temp file, fsync, rename, fsync folder) so a
//! reader never sees a torn file whatever moment the runner dies at.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::model::{STATE_VERSION, StateFile};

pub const STATE_FILE: &str = "state.json";
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("another spec-runner (pid {pid}) is running this pipeline (lock `{}`); wait for it, or stop it with `spec-runner stop`", path.display())]
    Locked { pid: String, path: PathBuf },
    #[error("cannot use the state folder `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` was written by a newer spec-runner (state version {found}, this one reads {STATE_VERSION}); upgrade spec-runner, or move the file away to start fresh", path.display())]
    Newer { path: PathBuf, found: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the state folder (0700) with a `.gitignore` of `*`.
pub fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let ignore = dir.join(".gitignore");
    // Empty: a write that failed half-way (a full disk) is done again.
    if std::fs::metadata(&ignore).map_or(true, |m| m.len() == 0) {
        std::fs::write(&ignore, "*\n").map_err(io_err(&ignore))?;
    }
    Ok(())
}

/// The lock of one pipeline's state folder, held while this value lives. The kernel
/// drops it with the process, `kill -9` included.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

fn open_lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))
}

/// Takes the lock, or names the process that holds it.
pub fn lock(dir: &Path) -> Result<Lock, StateError> {
    let path = dir.join(LOCK_FILE);
    let mut file = open_lock(dir)?;
    // `status` and `stop` take the lock for an instant to see whether it is held; a
    // runner starting at that moment waits that instant out instead of failing.
    let mut attempt = file.try_lock();
    let patience = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while matches!(attempt, Err(std::fs::TryLockError::WouldBlock))
        && std::time::Instant::now() < patience
    {
        std::thread::sleep(std::time::Duration::from_millis(25));
        attempt = file.try_lock();
    }
    match attempt {
        Ok(()) => {
            // Record who holds it, for `stop` and for the message a second runner prints.
            file.set_len(0).map_err(io_err(&path))?;
            file.rewind().map_err(io_err(&path))?;
            write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
            Ok(Lock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = if pid.trim().is_empty() {
                "unknown".into()
            } else {
                pid.trim().to_string()
            };
            Err(StateError::Locked { pid, path })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e)),
    }
}

/// The pid of the runner holding the lock, if one does.
pub fn holder(dir: &Path) -> Result<Option<u32>, StateError> {
    if !dir.join(LOCK_FILE).exists() {
        return Ok(None);
    }
    let mut file = open_lock(dir)?;
    match file.try_lock() {
        Ok(()) => Ok(None),
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Ok(pid.trim().parse().ok())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(&dir.join(LOCK_FILE))(e)),
    }
}

/// Blocks until no runner holds the lock.
pub fn wait_unlocked(dir: &Path) -> Result<(), StateError> {
    let file = open_lock(dir)?;
    file.lock().map_err(io_err(&dir.join(LOCK_FILE)))?;
    Ok(())
}

/// What `load` found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub state: Option<StateFile>,
    /// Set when a corrupt file was moved aside.
    pub warning: Option<String>,
}

/// Reads the state file without changing anything (for `plan`): `None` when there is
/// none, an error when it cannot be read or parsed.
pub fn peek(dir: &Path) -> Result<Option<StateFile>, String> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("cannot read the state file `{}`: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read the state file `{}`: {e}",
            path.display()
        )),
    }
}

/// Reads the state file. A corrupt or truncated one is moved aside (never deleted) and
/// the run starts fresh; one from a newer version is refused.
pub fn load(dir: &Path) -> Result<Loaded, StateError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let value: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
    if let Ok(v) = &value
        && let Some(found) = v.get("version").and_then(serde_json::Value::as_u64)
        && found > u64::from(STATE_VERSION)
    {
        return Err(StateError::Newer { path, found });
    }
    let parsed = value
        .map_err(|e| e.to_string())
        .and_then(|v| serde_json::from_value::<StateFile>(v).map_err(|e| e.to_string()));
    match parsed {
        Ok(state) => Ok(Loaded {
            state: Some(state),
            warning: None,
        }),
        Err(why) => {
            let aside = dir.join(format!(
                "{STATE_FILE}.corrupt-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
            ));
            std::fs::rename(&path, &aside).map_err(io_err(&path))?;
            Ok(Loaded {
                state: None,
                warning: Some(format!(
                    "state file `{}` is unreadable ({why}); moved it to `{}` and starting fresh",
                    path.display(),
                    aside.display()
                )),
            })
        }
    }
}

/// Removes temp files of writes cut short by a killed runner. Call with the lock held.
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".state-") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Replaces the state file atomically: a reader sees the old file or the new one.
pub fn write_atomic(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(dir, |w| w.write_all(bytes)).map(drop)
}

/// Like `write_atomic`, with the content written by `write` (through a buffer), so
/// that it need not be whole in memory first. Returns the new file, open (for
/// reading and writing).
pub fn write_atomic_with(
    dir: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<File> {
    // tempfile creates the file 0600 in the same folder, so the rename is atomic.
    let tmp = tempfile::Builder::new()
        .prefix(".state-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, tmp);
    write(&mut out)?;
    let tmp = out
        .into_inner()
        .map_err(std::io::IntoInnerError::into_error)?;
    tmp.as_file().sync_all()?;
    let file = tmp.persist(dir.join(STATE_FILE)).map_err(|e| e.error)?;
    // The rename itself must reach the disk too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}
