//! A small builder that runs the real binary in a temporary folder holding a pipeline,
//! with a controlled environment, and returns what it printed and how it exited.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_spec-runner");

/// The repository root (examples, fixtures, schema).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture script under tests/fixtures.
pub fn fixture(name: &str) -> String {
    repo()
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

pub struct Test {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::tempdir().expect("tempdir"),
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    /// A test whose folder holds `spec-runner.toml` with this text.
    pub fn with_pipeline(toml: &str) -> Test {
        let t = Test::new();
        t.write("spec-runner.toml", toml);
        t
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) -> &Test {
        let p = self.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
        self
    }

    /// Writes an executable script `name` (mode 0755); its path.
    pub fn write_exe(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        self.write(name, text);
        let path = self.path().join(name);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// The state file, parsed.
    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(&self.read(".spec-runner/state.json")).expect("state.json parses")
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name))
            .unwrap_or_else(|e| panic!("read {name}: {e}"))
    }

    pub fn env(mut self, k: &str, v: &str) -> Test {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Several variables at once.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Test {
        for (k, v) in vars {
            self.env.push(((*k).into(), (*v).into()));
        }
        self
    }

    pub fn args(mut self, args: &[&str]) -> Test {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The command, not yet started: only our own variables, none of the caller's
    /// `SPEC_RUNNER_*`, so a developer's shell cannot change a test's outcome.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path())
            .args(&self.args)
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("SPEC_RUNNER_") || k == "GITHUB_ACTIONS" || k == "NO_COLOR" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self) -> Run {
        self.command().output().expect("run spec-runner").into()
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(expected),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    #[track_caller]
    pub fn stderr_lacks(&self, needle: &str) -> &Run {
        assert!(
            !self.stderr.contains(needle),
            "stderr has {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_lacks(&self, needle: &str) -> &Run {
        assert!(
            !self.stdout.contains(needle),
            "stdout has {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    /// The `error: SOURCE: `KEY`: MESSAGE` lines of a failed load, one per problem.
    pub fn problems(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }

    /// Asserts that one problem line names `source` (`spec-runner.toml:3:5`,
    /// `config.json`, `variable SPEC_RUNNER_JOBS`, `flag --jobs`) and the key path `key`,
    /// and that its message holds every fragment of `says`.
    #[track_caller]
    pub fn problem(&self, source: &str, key: &str, says: &[&str]) -> &Run {
        let head = if key.is_empty() {
            format!("error: {source}: ")
        } else {
            format!("error: {source}: `{key}`: ")
        };
        let found = self
            .problems()
            .into_iter()
            .any(|l| l.starts_with(&head) && says.iter().all(|s| l.contains(s)));
        assert!(
            found,
            "no problem line starts with {head:?} and holds {says:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}
