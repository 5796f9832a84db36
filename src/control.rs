//! The commands that look at or steer a pipeline's state: `status`, `stop`, `logs`.
//! They ask the live run over its control socket when one serves it, and otherwise
//! read the state file (always whole: it is replaced atomically); they never write it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Pipeline;
use crate::events::Status;
use crate::exit;
use crate::live::client::{Client, ClientError};
use crate::live::protocol;
use crate::plan::show_path;
use crate::state::model::StateFile;
use crate::state::store::{self, STATE_FILE, StateError};

/// Why `status`, `stop`, `logs` or `restart` could not do what was asked. Each is
/// shown as `error: …` and ends the command with [`exit::USAGE`].
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot read the state file `{}`: {source}", path.display())]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the state file `{}`: {source}", path.display())]
    ParseState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The state folder's lock could not be looked at or waited for.
    #[error(transparent)]
    State(#[from] StateError),
    /// The live run's socket failed or refused the request.
    #[error(transparent)]
    Live(#[from] ClientError),
    #[error("cannot signal the runner (pid {pid}): {source}")]
    Signal {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    /// The pipeline has no spec of that name (the text says which names it has).
    #[error("{0}")]
    NoSuchSpec(String),
    #[error(
        "spec `{spec}` has no attempt {attempt} (attempts with logs: {})",
        listed(have)
    )]
    NoAttempt {
        spec: String,
        attempt: u32,
        have: Vec<u32>,
    },
    #[error(
        "spec `{spec}` has no hook: no `on_exhausted` command is set for it, so there is no hook log"
    )]
    NoHook { spec: String },
    #[error("spec `{spec}` has no {} yet (looked in `{}`)", if *hook { "hook logs" } else { "logs" }, dir.display())]
    NoLogs {
        spec: String,
        hook: bool,
        dir: PathBuf,
    },
    /// The attempt's log is empty because it never started; `reason` says why.
    #[error("attempt {attempt} of spec `{spec}` has no output: it {reason}")]
    NotStarted {
        spec: String,
        attempt: u32,
        reason: String,
    },
    #[error("cannot read `{}`: {source}", path.display())]
    ReadLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `1, 2, 3`, or `none`.
fn listed(nums: &[u32]) -> String {
    if nums.is_empty() {
        return "none".into();
    }
    nums.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The exit code of a command's outcome; an error is shown first.
fn finish(outcome: Result<u8, ControlError>) -> u8 {
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        exit::USAGE
    })
}

fn read_state(state_dir: &Path) -> Result<Option<StateFile>, ControlError> {
    let path = state_dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ControlError::ParseState { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ControlError::ReadState { path, source }),
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
                    .map(|s| (s.name.to_string(), s.policy.retry.max_retries))
                    .collect(),
            ),
        }
    }
}

/// What `status` shows: from the live run when one serves its socket (fresh to the
/// millisecond), from the state file otherwise.
struct Seen {
    state: Option<StateFile>,
    /// The state as JSON with each spec's live fields.
    json: serde_json::Value,
    /// The pid of the live runner.
    holder: Option<u32>,
}

fn seen(state_dir: &Path) -> Result<Seen, ControlError> {
    let live = Client::connect(state_dir).and_then(|mut c| {
        c.set_timeout(Some(std::time::Duration::from_secs(10)));
        c.request("snapshot", &[]).ok()
    });
    if let Some(mut reply) = live {
        let snap = reply["snapshot"].take();
        return Ok(Seen {
            state: serde_json::from_value(snap.clone()).ok(),
            holder: snap["runner_pid"]
                .as_u64()
                .and_then(|p| u32::try_from(p).ok()),
            json: snap,
        });
    }
    let state = read_state(state_dir)?;
    let holder = store::holder(state_dir).ok().flatten();
    let json = match &state {
        Some(s) => {
            let mut v = protocol::snapshot(s, chrono::Utc::now());
            if holder.is_none() {
                // No runner: nothing is running, whatever a killed one left written.
                for spec in v["specs"]
                    .as_object_mut()
                    .into_iter()
                    .flat_map(|m| m.values_mut())
                {
                    for key in ["pid", "started_at", "elapsed_ms", "next_retry_at"] {
                        spec[key] = serde_json::Value::Null;
                    }
                    if interrupted(s)
                        && matches!(spec["status"].as_str(), Some("running" | "backoff"))
                    {
                        spec["status"] = "interrupted".into();
                    }
                }
                if let Some(o) = v.as_object_mut() {
                    o.insert("interrupted".into(), interrupted(s).into());
                }
            }
            v
        }
        // No run yet: an empty state, so that readers always get the same shape.
        None => serde_json::json!({ "version": crate::state::model::STATE_VERSION, "specs": {} }),
    };
    Ok(Seen {
        state,
        json,
        holder,
    })
}

/// Whether the run that wrote `s` never recorded its end: its runner was killed (the
/// caller knows that no runner holds the lock any more).
fn interrupted(s: &StateFile) -> bool {
    s.finished_at.is_none()
}

/// `status`: a table, or the state as JSON (each spec with its live fields).
///
/// ATTEMPTS is the attempts of each spec's latest retry cycle (its first attempt and
/// the retries after it, earlier runs' included when a killed runner's cycle was
/// resumed): the number `spec_finished` reports as `attempts`. The log numbers count
/// every attempt ever.
pub fn status(view: &StatusView, json: bool) -> u8 {
    match seen(&view.state_dir) {
        Ok(seen) => show_status(view, seen, json),
        Err(e) => finish(Err(e)),
    }
}

fn show_status(view: &StatusView, seen: Seen, json: bool) -> u8 {
    let (state, holder) = (&seen.state, seen.holder);
    if json {
        let mut v = seen.json;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("running_pid".into(), serde_json::json!(holder));
        }
        let mut text = serde_json::to_string_pretty(&v).unwrap_or_default();
        text.push('\n');
        // `| head` closing the pipe is not an error.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return exit::SUCCESS;
    }
    let now = chrono::Utc::now();
    let mut out = String::new();
    match (state, holder) {
        (None, _) => out.push_str("no run yet: every spec is pending\n"),
        (Some(s), Some(pid)) => {
            out.push_str(&format!("run {} in progress (pid {pid})\n", s.run_id))
        }
        (Some(s), None) if interrupted(s) => out.push_str(&format!(
            "last run {} was interrupted: its runner (pid {}) is gone, last seen {}; \
             `spec-runner apply` resumes it\n",
            s.run_id,
            s.runner_pid,
            s.updated_at.format("%Y-%m-%d %H:%M:%SZ")
        )),
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
            "NOW",
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
            .flat_map(|st| st.specs.iter().map(|(n, s)| (n.to_string(), s.max_retries)))
            .collect(),
    };
    for (name, max_retries) in &specs {
        let s = state.as_ref().and_then(|st| st.specs.get(name.as_str()));
        let row = match s {
            None => vec![
                name.clone(),
                "pending".into(),
                "-".into(),
                "0".into(),
                format!("0/{max_retries}"),
                "-".into(),
                "-".into(),
                "-".into(),
            ],
            Some(s) => {
                let last = s.attempts.last();
                // A killed runner's work: nothing runs or waits any more.
                let gone = holder.is_none()
                    && state.as_ref().is_some_and(interrupted)
                    && matches!(s.status, Status::Running | Status::Backoff);
                let exit = last.map_or("-".into(), |a| {
                    match (a.exit_code, a.signal(), &a.ended_at) {
                        (Some(c), _, _) => c.to_string(),
                        (None, Some(sig), _) => sig.to_string(),
                        (None, None, None) if gone => "interrupted".into(),
                        (None, None, None) => match a.job_id() {
                            // A batch job: its id finds it in the cluster's own tools.
                            Some(id) => format!("running (job {id})"),
                            None => "running".into(),
                        },
                        (None, None, Some(_)) => "-".into(),
                    }
                });
                let live = protocol::live(s, now);
                let now_cell = match (holder, live.pid, live.elapsed_ms, live.next_retry_at) {
                    (Some(_), Some(pid), Some(ms), _) => {
                        format!("pid {pid}, {}", human_ms(ms))
                    }
                    (Some(_), _, _, Some(at)) => format!(
                        "retry {}/{} in {} ({})",
                        s.retry_count,
                        s.max_retries,
                        human_ms((at - now).num_milliseconds().max(0) as u64),
                        at.format("%H:%M:%SZ")
                    ),
                    _ => "-".into(),
                };
                vec![
                    name.clone(),
                    if gone {
                        "interrupted"
                    } else {
                        s.status.as_str()
                    }
                    .into(),
                    now_cell,
                    last.map_or(0, |a| a.attempt).to_string(),
                    format!("{}/{}", s.retry_count, s.max_retries),
                    s.last_retry_at()
                        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string()),
                    exit,
                    last.map_or("-".into(), |a| show_path(&view.base, &a.log.path())),
                ]
            }
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
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
    // Iterating specs: where each loop is.
    let loops: Vec<(&String, &crate::state::model::IterationState)> = specs
        .iter()
        .filter_map(|(name, _)| {
            let it = state.as_ref()?.specs.get(name.as_str())?.iteration()?;
            Some((name, it))
        })
        .collect();
    if !loops.is_empty() {
        out.push_str("\niterating specs:\n");
        let width = loops
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        for (name, it) in loops {
            out.push_str(&format!("  {name:width$}  {}\n", loop_text(it)));
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    exit::SUCCESS
}

/// `iteration 3/50 · tasks 4/10 (5 pending, 1 in progress), no progress in the last 1`.
fn loop_text(it: &crate::state::model::IterationState) -> String {
    let mut text = crate::report::iteration_text(
        it.iteration,
        it.max_iterations,
        it.tasks.map(|t| t.done),
        it.tasks.map(crate::tasks::TaskCounts::total),
    );
    if let Some(t) = it.tasks {
        text.push_str(&format!(
            " ({} pending, {} in progress)",
            t.pending, t.in_progress
        ));
    }
    if it.no_progress_streak > 0 {
        text.push_str(&format!(
            ", no progress in the last {}",
            it.no_progress_streak
        ));
    }
    text
}

/// `1m02s`, `8s`, `1h05m`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `stop`: the whole run (over the socket, or SIGTERM to the runner holding the
/// lock), then wait until it has let go. `stop SPEC…`: those specs only.
pub fn stop(dir: &Path, pipeline_file: &Path, specs: &[String]) -> u8 {
    finish(if specs.is_empty() {
        stop_run(dir, pipeline_file)
    } else {
        stop_specs(dir, pipeline_file, specs)
    })
}

fn stop_run(dir: &Path, pipeline_file: &Path) -> Result<u8, ControlError> {
    let Some(pid) = store::holder(dir)? else {
        eprintln!("no apply is running for {}", pipeline_file.display());
        return Ok(exit::SUCCESS);
    };
    let asked = Client::connect(dir).is_some_and(|mut c| c.request("stop_run", &[]).is_ok());
    if !asked {
        crate::exec::request_stop(pid).map_err(|source| ControlError::Signal { pid, source })?;
    }
    eprintln!("asked the runner (pid {pid}) to stop; waiting for its specs to end");
    store::wait_unlocked(dir)?;
    eprintln!("stopped");
    Ok(exit::SUCCESS)
}

/// `stop SPEC…`: asks the live run, then waits until each named spec has ended.
fn stop_specs(dir: &Path, pipeline_file: &Path, specs: &[String]) -> Result<u8, ControlError> {
    let Some(mut c) = Client::connect(dir) else {
        eprintln!(
            "no apply is running for {}: nothing to stop",
            pipeline_file.display()
        );
        return Ok(exit::SUCCESS);
    };
    // Subscribed first: the ends we wait for cannot slip by.
    let snapshot = c.request("subscribe", &[])?["snapshot"].take();
    let r = c.request("stop", specs)?;
    eprintln!("{}", r["message"].as_str().unwrap_or("stopping"));
    let mut waiting: Vec<&String> = specs
        .iter()
        .filter(|n| {
            let st = snapshot["specs"][n.as_str()]["status"]
                .as_str()
                .unwrap_or("");
            matches!(st, "pending" | "running" | "backoff")
        })
        .collect();
    while !waiting.is_empty() {
        let Ok(ev) = c.next_event() else { break };
        match ev["event"].as_str() {
            Some("spec_finished") => {
                let spec = ev["spec"].as_str().unwrap_or_default();
                if let Some(k) = waiting.iter().position(|n| n.as_str() == spec) {
                    waiting.remove(k);
                    eprintln!("{spec}: {}", ev["status"].as_str().unwrap_or("ended"));
                }
            }
            Some("run_finished") => break,
            _ => {}
        }
    }
    Ok(exit::SUCCESS)
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
    finish(copy_log(p, name, attempt, hook))
}

fn copy_log(
    p: &Pipeline,
    name: &str,
    attempt: Option<u32>,
    hook: bool,
) -> Result<u8, ControlError> {
    let prefix = if hook { "on_exhausted_" } else { "task_" };
    let i = p
        .index_of(name)
        .ok_or_else(|| ControlError::NoSuchSpec(p.no_such_spec(name)))?;
    let spec = || name.to_string();
    let dir = p.specs[i].policy.retry_log_dir.join(name);
    let nums = log_numbers(&dir, prefix);
    let n = match (attempt, nums.last()) {
        (Some(n), _) if nums.contains(&n) => n,
        (Some(n), _) => {
            return Err(ControlError::NoAttempt {
                spec: spec(),
                attempt: n,
                have: nums,
            });
        }
        (None, Some(&n)) => n,
        (None, None) if hook && p.specs[i].policy.on_exhausted.is_none() => {
            return Err(ControlError::NoHook { spec: spec() });
        }
        (None, None) => {
            return Err(ControlError::NoLogs {
                spec: spec(),
                hook,
                dir,
            });
        }
    };
    let path = dir.join(format!("{prefix}{n}.log"));
    // An attempt that could not start has an empty log: its reason is what to show.
    if !hook && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
        let reason = read_state(&p.run.state_dir)
            .ok()
            .flatten()
            .and_then(|st| {
                let s = st.specs.get(name)?;
                let a = s.attempts.iter().rev().find(|a| a.number == n)?;
                a.reason().map(String::from)
            })
            .filter(|r| r.starts_with("could not start"));
        if let Some(reason) = reason {
            return Err(ControlError::NotStarted {
                spec: spec(),
                attempt: n,
                reason,
            });
        }
    }
    let mut f =
        std::fs::File::open(&path).map_err(|source| ControlError::ReadLog { path, source })?;
    let mut out = std::io::stdout().lock();
    let _ = std::io::copy(&mut f, &mut out);
    let _ = out.flush();
    Ok(exit::SUCCESS)
}

/// `restart SPEC…` while a run is live: the run restarts them (with `with_deps`, after
/// their dependencies that have not succeeded). `None` when no run serves this
/// pipeline (the caller runs them itself).
pub fn restart_live(p: &Pipeline, names: &[String], with_deps: bool) -> Option<u8> {
    let mut c = Client::connect(&p.run.state_dir)?;
    c.set_timeout(Some(std::time::Duration::from_secs(60)));
    let mut req = serde_json::json!({ "op": "restart", "specs": names });
    if with_deps {
        req["with_deps"] = true.into();
    }
    match c.send(req) {
        Ok(r) => {
            let pid = c
                .request("snapshot", &[])
                .ok()
                .and_then(|s| s["snapshot"]["runner_pid"].as_u64());
            eprintln!("{}", r["message"].as_str().unwrap_or("restarted"));
            let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            eprintln!(
                "the live run{who} runs them; watch with `spec-runner logs {} --follow`, `spec-runner status` or `spec-runner tui`",
                names.first().map_or("SPEC", String::as_str)
            );
            Some(exit::SUCCESS)
        }
        Err(e) => Some(finish(Err(e.into()))),
    }
}

/// `logs SPEC --follow`: the current attempt's log as it grows, then the next
/// attempt's (a retry or a restart), until the spec ends. Without a live run, the
/// latest log.
pub fn logs_follow(p: &Pipeline, name: &str) -> u8 {
    finish(follow_log(p, name))
}

fn follow_log(p: &Pipeline, name: &str) -> Result<u8, ControlError> {
    use std::io::Read;
    if p.index_of(name).is_none() {
        return Err(ControlError::NoSuchSpec(p.no_such_spec(name)));
    }
    let Some(mut c) = Client::connect(&p.run.state_dir) else {
        eprintln!("note: no run is live; printing the latest log");
        return copy_log(p, name, None, false);
    };
    let snap = c.request("subscribe", &[])?["snapshot"].take();
    let entry = &snap["specs"][name];
    let status = entry["status"].as_str().unwrap_or("pending");
    let mut file: Option<std::fs::File> = entry["log"]
        .as_str()
        .and_then(|l| std::fs::File::open(l).ok());
    let events = c.into_events();
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    // Copies what the log holds now; false when stdout is gone.
    let mut drain = |file: &mut Option<std::fs::File>, out: &mut std::io::StdoutLock| -> bool {
        let Some(f) = file.as_mut() else { return true };
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return out.flush().is_ok(),
                Ok(n) => {
                    if out.write_all(&buf[..n]).is_err() {
                        return false;
                    }
                }
            }
        }
    };
    let mut done = !matches!(status, "pending" | "running" | "backoff");
    while !done {
        if !drain(&mut file, &mut out) {
            return Ok(exit::SUCCESS);
        }
        match events.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(ev) if ev["spec"] == name || ev["event"] == "run_finished" => {
                match ev["event"].as_str() {
                    Some("attempt_started") => {
                        drain(&mut file, &mut out);
                        file = ev["log"].as_str().and_then(|l| std::fs::File::open(l).ok());
                    }
                    Some("spec_finished" | "run_finished") => done = true,
                    _ => {}
                }
            }
            Ok(_) | Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => done = true,
        }
    }
    drain(&mut file, &mut out);
    Ok(exit::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_say_what_there_is() {
        let no_attempt = |have: Vec<u32>| ControlError::NoAttempt {
            spec: "a".into(),
            attempt: 4,
            have,
        };
        assert_eq!(
            no_attempt(vec![1, 2]).to_string(),
            "spec `a` has no attempt 4 (attempts with logs: 1, 2)"
        );
        assert_eq!(
            no_attempt(Vec::new()).to_string(),
            "spec `a` has no attempt 4 (attempts with logs: none)"
        );
        let no_logs = |hook| ControlError::NoLogs {
            spec: "a".into(),
            hook,
            dir: PathBuf::from("/l/a"),
        };
        assert_eq!(
            no_logs(false).to_string(),
            "spec `a` has no logs yet (looked in `/l/a`)"
        );
        assert_eq!(
            no_logs(true).to_string(),
            "spec `a` has no hook logs yet (looked in `/l/a`)"
        );
    }

    #[test]
    fn a_state_file_that_does_not_parse_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            read_state(dir.path())
                .expect("no file is no state")
                .is_none()
        );
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, "{").expect("write");
        let err = read_state(dir.path()).unwrap_err();
        assert!(matches!(err, ControlError::ParseState { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot read the state file `{}`: ",
                path.display()
            )),
            "{text}"
        );
    }
}
