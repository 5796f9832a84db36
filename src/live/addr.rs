//! Where a run's control socket lives: `control.sock` in the state folder, or, when
//! that path is too long for a Unix socket (108 bytes on Linux, with its NUL), a short
//! path named by a hash of the folder under `$XDG_RUNTIME_DIR` or `/tmp/spec-runner-<uid>`
//! (0700), recorded in the state folder's `control.addr` for clients.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const SOCKET_FILE: &str = "control.sock";
/// Holds the socket's path when it is not `control.sock` in the state folder.
pub const ADDR_FILE: &str = "control.addr";
/// `sun_path` holds 108 bytes, the terminating NUL included.
pub const MAX_SOCKET_PATH: usize = 107;

/// The socket a client should connect to for this state folder.
pub fn socket_of(state_dir: &Path) -> PathBuf {
    match std::fs::read_to_string(state_dir.join(ADDR_FILE)) {
        Ok(s) if !s.trim().is_empty() => PathBuf::from(s.trim_end_matches('\n')),
        _ => state_dir.join(SOCKET_FILE),
    }
}

fn fits(p: &Path) -> bool {
    p.as_os_str().len() <= MAX_SOCKET_PATH
}

/// Where a runner should bind for this state folder: `(path, recorded)`, `recorded`
/// when it is not the default and clients must be told through `control.addr`.
pub fn choose(state_dir: &Path, runtime_dir: Option<&Path>) -> std::io::Result<(PathBuf, bool)> {
    let direct = state_dir.join(SOCKET_FILE);
    if fits(&direct) {
        return Ok((direct, false));
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state_dir.hash(&mut h);
    let name = format!("spec-runner-{:016x}.sock", h.finish());
    if let Some(dir) = runtime_dir.filter(|d| d.is_absolute() && d.is_dir()) {
        let p = dir.join(&name);
        if fits(&p) {
            return Ok((p, true));
        }
    }
    let uid = rustix::process::getuid().as_raw();
    let dir = PathBuf::from(format!("/tmp/spec-runner-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Someone else's folder, or one others may enter, is not ours to use.
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("`{}` is not a private folder of this user", dir.display()),
        ));
    }
    Ok((dir.join(name), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_state_folder_holds_its_socket() {
        let (p, recorded) = choose(Path::new("/home/a/p/.spec-runner"), None).unwrap();
        assert_eq!(p, Path::new("/home/a/p/.spec-runner/control.sock"));
        assert!(!recorded);
    }

    #[test]
    fn a_long_one_gets_a_short_path_named_by_its_hash() {
        let long = PathBuf::from(format!("/{}/.spec-runner", "x".repeat(120)));
        let rt = tempfile::tempdir().unwrap();
        let (p, recorded) = choose(&long, Some(rt.path())).unwrap();
        assert!(recorded);
        assert!(p.starts_with(rt.path()));
        assert!(p.as_os_str().len() <= MAX_SOCKET_PATH);
        // The same folder, the same path; another folder, another path.
        assert_eq!(choose(&long, Some(rt.path())).unwrap().0, p);
        let other = PathBuf::from(format!("/{}/.spec-runner", "y".repeat(120)));
        assert_ne!(choose(&other, Some(rt.path())).unwrap().0, p);
        // Without a runtime folder: a private folder in /tmp.
        let (q, _) = choose(&long, None).unwrap();
        assert!(
            q.to_string_lossy().starts_with("/tmp/spec-runner-"),
            "{q:?}"
        );
        assert!(fits(&q));
    }
}
