//! What an iterating spec's loop needs to know of its work: the counts of its tasks
//! file and the git HEAD of the repository holding its `cwd`.
//!
//! The reading only; `tasks` counts and `iterate` judges. Both reads are quick (a small
//! file, one `git rev-parse`), so the dispatcher makes them itself between attempts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::policy::Spec;
use crate::iterate::Snapshot;
use crate::tasks::{self, TaskCounts};

/// Why a spec's tasks file cannot be used. `shown` is its path as the user wrote it
/// (relative to the pipeline's folder).
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("cannot read the tasks file `{shown}`: {source}")]
    Read {
        path: PathBuf,
        shown: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no tasks in `{shown}`: expected top-level items such as `- [ ] 1. Title` (under a `## Tasks` heading when there is one)"
    )]
    NoTasks { path: PathBuf, shown: String },
}

/// The spec's work as it is now; `Err` names the tasks file that cannot be used.
pub fn snapshot(spec: &Spec, shown: &dyn Fn(&Path) -> String) -> Result<Snapshot, WorkError> {
    let tasks = match spec.tasks() {
        Some(path) => Some(read_tasks(path, shown)?),
        None => None,
    };
    Ok(Snapshot {
        head: git_head(&spec.cwd),
        tasks,
    })
}

/// The counts of a tasks file; a missing or unreadable file, or one without a single
/// task, is an error (never "done").
pub fn read_tasks(path: &Path, shown: &dyn Fn(&Path) -> String) -> Result<TaskCounts, WorkError> {
    let text = std::fs::read(path).map_err(|source| WorkError::Read {
        path: path.to_path_buf(),
        shown: shown(path),
        source,
    })?;
    let counts = tasks::count(&String::from_utf8_lossy(&text));
    if counts.total() == 0 {
        return Err(WorkError::NoTasks {
            path: path.to_path_buf(),
            shown: shown(path),
        });
    }
    Ok(counts)
}

/// The commit HEAD names in the git repository holding `cwd`; `None` outside one,
/// before its first commit, or without git.
pub fn git_head(cwd: &Path) -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .current_dir(cwd)
        // The repository that holds `cwd`, whatever the runner's own environment says.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let head = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!head.is_empty()).then_some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("git")
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn head_moves_with_a_commit_and_is_none_outside_git() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert_eq!(git_head(d), None);
        git(d, &["init", "-q"]);
        // A repository without commits has no HEAD yet.
        assert_eq!(git_head(d), None);
        git(d, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let one = git_head(d).expect("a head");
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        assert_eq!(git_head(&d.join("sub")).as_deref(), Some(one.as_str()));
        git(d, &["commit", "-q", "--allow-empty", "-m", "two"]);
        assert_ne!(git_head(d).expect("a head"), one);
    }

    #[test]
    fn tasks_file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shown = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        let missing = read_tasks(&dir.path().join("tasks.md"), &shown).unwrap_err();
        assert!(
            matches!(&missing, WorkError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{missing:?}"
        );
        let text = missing.to_string();
        assert!(
            text.starts_with("cannot read the tasks file `tasks.md`: "),
            "{text}"
        );
        std::fs::write(dir.path().join("notes.md"), "# nothing\n").expect("write");
        let empty = read_tasks(&dir.path().join("notes.md"), &shown).unwrap_err();
        assert!(matches!(empty, WorkError::NoTasks { .. }), "{empty:?}");
        assert!(
            empty.to_string().starts_with("no tasks in `notes.md`"),
            "{empty}"
        );
        std::fs::write(dir.path().join("t.md"), "- [x] a\n- [ ] b\n").expect("write");
        assert_eq!(
            read_tasks(&dir.path().join("t.md"), &shown).expect("counts"),
            TaskCounts {
                done: 1,
                pending: 1,
                in_progress: 0
            }
        );
    }
}
