//! The commands that look at or steer a pipeline's state: `status`, `stop`, `logs`.
//! They read the state file (always whole: it is replaced atomically) and never write it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::exit;
use crate::plan::show_path;
use crate::state::model::StateFile;
use crate::state::store::{self, STATE_FILE};

fn read_state(state_dir: &Path) -> Result<Option<StateFile>, String> {
    let path = state_dir.join(STATE_FILE);
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

/// What `status` shows: the state folder, the folder paths are shown relative to, and
/// the specs with their retry limits (from the pipeline; or, when it does not load,
/// from the state itself).
pub struct StatusView {
    pub state_dir: PathBuf,
    pub base: PathBuf,
    pub specs: Option<Vec<(String, u32)>>,
}

impl StatusView {
    pub fn of(p: &Pipeline) -> StatusView {
        StatusView {
            state_dir: p.run.state_dir.clone(),
            base: p.dir.clone(),
            specs: Some(
                p.specs
                    .iter()
                    .map(|s| (s.name.clone(), s.policy.retry.max_retries))
                    .collect(),
            ),
        }
    }
}

/// `status`: a table, or the state as JSON.
pub fn status(view: &StatusView, json: bool) -> u8 {
    let state = match read_state(&view.state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let holder = store::holder(&view.state_dir).ok().flatten();
    if json {
        // No run yet: an empty state, so that readers always get the same shape.
        let mut v = match &state {
            Some(s) => serde_json::to_value(s).unwrap_or_default(),
            None => {
                serde_json::json!({ "version": crate::state::model::STATE_VERSION, "specs": {} })
            }
        };
        if let Some(obj) = v.as_object_mut() {
            obj.insert("running_pid".into(), serde_json::json!(holder));
        }
        let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
        text.push('\n');
        // `| head` closing the pipe is not an error.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return exit::SUCCESS;
    }
    let mut out = String::new();
    match (&state, holder) {
        (None, _) => out.push_str("no run yet: every spec is pending\n"),
        (Some(s), Some(pid)) => {
            out.push_str(&format!("run {} in progress (pid {pid})\n", s.run_id))
        }
        (Some(s), None) => out.push_str(&format!(
            "last run {} (updated {})\n",
            s.run_id,
            s.updated_at.format("%Y-%m-%d %H:%M:%SZ")
        )),
    }
    let mut rows = vec![
        [
            "SPEC",
            "STATUS",
            "ATTEMPTS",
            "RETRY",
            "LAST RETRY",
            "LAST EXIT",
            "LOG",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let specs: Vec<(String, u32)> = match &view.specs {
        Some(list) => list.clone(),
        None => state
            .iter()
            .flat_map(|st| st.specs.iter().map(|(n, s)| (n.clone(), s.max_retries)))
            .collect(),
    };
    for (name, max_retries) in &specs {
        let s = state.as_ref().and_then(|st| st.specs.get(name));
        let row = match s {
            None => vec![
                name.clone(),
                "pending".into(),
                "0".into(),
                format!("0/{max_retries}"),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
            Some(s) => {
                let last = s.attempts.last();
                let exit = last.map_or("-".into(), |a| {
                    match (a.exit_code, &a.signal, &a.ended_at) {
                        (Some(c), _, _) => c.to_string(),
                        (None, Some(sig), _) => sig.clone(),
                        (None, None, None) => match a.job_id {
                            // A batch job: its id finds it in the cluster's own tools.
                            Some(id) => format!("running (job {id})"),
                            None => "running".into(),
                        },
                        (None, None, Some(_)) => "-".into(),
                    }
                });
                vec![
                    name.clone(),
                    s.status.as_str().into(),
                    s.attempts.len().to_string(),
                    format!("{}/{}", s.retry_count, s.max_retries),
                    s.last_retry_at
                        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()),
                    exit,
                    last.map_or("-".into(), |a| show_path(&view.base, &a.log)),
                ]
            }
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    exit::SUCCESS
}

/// `stop`: SIGTERM to the runner holding the lock, then wait until it has let go.
pub fn stop(dir: &std::path::Path, pipeline_file: &std::path::Path) -> u8 {
    let pid = match store::holder(dir) {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            eprintln!("no apply is running for {}", pipeline_file.display());
            return exit::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if let Err(e) = crate::exec::request_stop(pid) {
        eprintln!("error: cannot signal the runner (pid {pid}): {e}");
        return exit::USAGE;
    }
    eprintln!("asked the runner (pid {pid}) to stop; waiting for its specs to end");
    match store::wait_unlocked(dir) {
        Ok(()) => {
            eprintln!("stopped");
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::USAGE
        }
    }
}

/// The numbers of a spec's logs named `<prefix><n>.log`, ascending.
fn log_numbers(dir: &PathBuf, prefix: &str) -> Vec<u32> {
    let mut nums: Vec<u32> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix(prefix)?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()
            })
            .collect()
        })
        .unwrap_or_default();
    nums.sort_unstable();
    nums
}

/// `logs SPEC [--attempt N] [--hook]`: the log's bytes, as written. With `hook`, the
/// logs of the spec's `on_exhausted` command instead of its attempts.
pub fn logs(p: &Pipeline, name: &str, attempt: Option<u32>, hook: bool) -> u8 {
    let prefix = if hook { "on_exhausted_" } else { "task_" };
    let Some(i) = p.index_of(name) else {
        eprintln!("error: {}", p.no_such_spec(name));
        return exit::USAGE;
    };
    let dir = p.specs[i].policy.retry_log_dir.join(name);
    let nums = log_numbers(&dir, prefix);
    let n = match (attempt, nums.last()) {
        (Some(n), _) if nums.contains(&n) => n,
        (Some(n), _) => {
            let have = if nums.is_empty() {
                "none".to_string()
            } else {
                nums.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            eprintln!("error: spec `{name}` has no attempt {n} (attempts with logs: {have})");
            return exit::USAGE;
        }
        (None, Some(&n)) => n,
        (None, None) => {
            eprintln!(
                "error: spec `{name}` has no logs yet (looked in `{}`)",
                dir.display()
            );
            return exit::USAGE;
        }
    };
    let path = dir.join(format!("{prefix}{n}.log"));
    match std::fs::File::open(&path) {
        Ok(mut f) => {
            let mut out = std::io::stdout().lock();
            let _ = std::io::copy(&mut f, &mut out);
            let _ = out.flush();
            exit::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", path.display());
            exit::USAGE
        }
    }
}
