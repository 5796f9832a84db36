//! Feeds arbitrary bytes to the configuration loader through the library, as files in
//! a temporary folder: it must answer with a pipeline or a list of problems, never
//! panic, and whatever it accepts must render as a plan.
//!
//! The input is split at NUL bytes: the pipeline file (`spec-runner.toml`), then
//! `config.json` (absent when there is no second part), then `NAME=value` lines taken
//! as `SPEC_RUNNER_NAME` variables.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spec_runner::config::{self, CliOverrides, LoadOptions};
use spec_runner::plan::{Explain, View};

/// One folder for the whole fuzzing session: a new one per input would cost more than
/// the load itself.
fn folder() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let dir = folder();
    let mut parts = data.splitn(3, |&b| b == 0);
    let pipeline = parts.next().unwrap_or_default();
    let config_json = parts.next();
    let vars = parts.next().unwrap_or_default();

    std::fs::write(dir.join("spec-runner.toml"), pipeline).expect("write pipeline");
    let config_path = dir.join("config.json");
    match config_json {
        Some(bytes) => std::fs::write(&config_path, bytes).expect("write config.json"),
        None => {
            let _ = std::fs::remove_file(&config_path);
        }
    }
    let env = String::from_utf8_lossy(vars)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            let name = if name.starts_with("SPEC_RUNNER_") {
                name.to_string()
            } else {
                format!("SPEC_RUNNER_{name}")
            };
            Some((name, value.to_string()))
        })
        .collect();

    let opts = LoadOptions {
        file: None,
        config: None,
        env,
        cli: CliOverrides::default(),
        cwd: dir.clone(),
    };
    match config::load(&opts) {
        Ok(p) => {
            let _ = spec_runner::plan::plan_value(&p);
            for explain in [Explain::Diff, Explain::All] {
                let view = View { explain, only: None, why: None };
                let _ = spec_runner::plan::plan_text(&p, &view);
            }
        }
        Err(problems) => {
            // Every problem must render, and there is at least one.
            assert!(!problems.0.is_empty());
            let _ = problems.to_string();
        }
    }
});
