//! GitHub Actions annotations (when `GITHUB_ACTIONS=true`): a spec that failed for good
//! becomes an `::error`, with the end of its log folded in a `::group::`; a spec that
//! passed after failed attempts, and a hook that failed, become a `::warning`.
//!
//! The log lines are the spec's own output, so they are wrapped in
//! `::stop-commands::` — a spec cannot issue workflow commands (masks, outputs,
//! annotations) through spec-runner.

use std::collections::HashMap;
use std::io::Write;

use crate::events::EventSink;
use crate::events::{Event, EventKind, Status};
use crate::report::tail_lines;

/// How many lines of a failed spec's log go in its group.
pub const GROUP_LINES: usize = 200;

pub struct GithubReporter<W: Write> {
    out: W,
    /// Ends a `::stop-commands::` section; random, so output cannot guess it.
    token: String,
    /// Reasons of each spec's failed attempts, for the flaky warning.
    failures: HashMap<String, Vec<String>>,
}

impl<W: Write> GithubReporter<W> {
    pub fn new(out: W) -> Self {
        GithubReporter {
            out,
            token: format!("spec-runner-{:032x}", rand::random::<u128>()),
            failures: HashMap::new(),
        }
    }
}

/// Escapes a command's message (`%`, CR, LF), as the runner's toolkit does.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a property value: also `:` and `,`, which end it.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The workflow commands for one event (with a final newline), or `None`.
pub fn commands(
    event: &Event,
    failures: &mut HashMap<String, Vec<String>>,
    token: &str,
) -> Option<String> {
    match &event.kind {
        EventKind::AttemptFinished {
            spec,
            reason: Some(r),
            ..
        } => {
            failures.entry(spec.clone()).or_default().push(r.clone());
            None
        }
        EventKind::SpecFinished {
            spec,
            status,
            attempts,
            reason,
            log,
            tail,
            ..
        } => {
            let failed = failures.remove(spec).unwrap_or_default();
            match status {
                Status::Failed => {
                    let reason = reason.as_deref().unwrap_or("failed");
                    let mut s = format!(
                        "::error title={}::{}\n",
                        escape_property(&format!("spec `{spec}` failed")),
                        escape_data(&format!(
                            "{reason} ({attempts} attempt{})",
                            if *attempts == 1 { "" } else { "s" }
                        ))
                    );
                    let from = log
                        .as_ref()
                        .map(|l| format!(", {}", crate::report::shown(l)))
                        .unwrap_or_default();
                    s.push_str(&format!(
                        "::group::{}\n::stop-commands::{token}\n",
                        escape_data(&format!("{spec}: last lines of its log{from}"))
                    ));
                    for l in tail_lines(tail, GROUP_LINES) {
                        s.push_str(&l);
                        s.push('\n');
                    }
                    s.push_str(&format!("::{token}::\n::endgroup::\n"));
                    Some(s)
                }
                Status::Succeeded if !failed.is_empty() => Some(format!(
                    "::warning title={}::{}\n",
                    escape_property(&format!("spec `{spec}` is flaky")),
                    escape_data(&format!(
                        "passed on attempt {attempts} after {} failed: {}",
                        failed.len(),
                        failed.join("; ")
                    ))
                )),
                _ => None,
            }
        }
        EventKind::HookFinished {
            spec,
            hook,
            reason: Some(r),
            log,
            ..
        } => Some(format!(
            "::warning title={}::{}\n",
            escape_property(&format!("{hook} of spec `{spec}` failed")),
            escape_data(&format!("{r}; log {}", crate::report::shown(log)))
        )),
        _ => None,
    }
}

impl<W: Write> EventSink for GithubReporter<W> {
    fn event(&mut self, event: &Event) {
        if let Some(text) = commands(event, &mut self.failures, &self.token) {
            let _ = self.out.write_all(text.as_bytes());
            let _ = self.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Tail;
    use std::path::PathBuf;
    use std::time::Duration;

    fn attempt(spec: &str, reason: Option<&str>) -> Event {
        Event::now(EventKind::AttemptFinished {
            spec: spec.into(),
            attempt: 1,
            exit_code: Some(1),
            signal: None,
            reason: reason.map(str::to_string),
            duration: Duration::from_secs(1),
            log: PathBuf::from("l"),
            tail: Tail::default(),
        })
    }

    fn spec_finished(spec: &str, status: Status, attempts: u32, tail: &[u8]) -> Event {
        Event::now(EventKind::SpecFinished {
            spec: spec.into(),
            status,
            attempts,
            retries: attempts - 1,
            reason: (status != Status::Succeeded).then(|| "exit 2: bad, really\n".to_string()),
            log: Some(PathBuf::from("logs/a/task_2.log")),
            iterations: None,
            tail: Tail::from(tail),
        })
    }

    fn all(events: &[Event]) -> String {
        let mut failures = HashMap::new();
        events
            .iter()
            .filter_map(|e| commands(e, &mut failures, "TOKEN"))
            .collect()
    }

    #[test]
    fn a_failure_is_an_error_with_its_log_in_a_group_that_cannot_run_commands() {
        let out = all(&[
            attempt("a", Some("exit 2")),
            spec_finished(
                "a",
                Status::Failed,
                2,
                b"step 1\n::add-mask::oops\n100% done\n",
            ),
        ]);
        assert_eq!(
            out,
            "::error title=spec `a` failed::exit 2: bad, really%0A (2 attempts)\n\
             ::group::a: last lines of its log, logs/a/task_2.log\n\
             ::stop-commands::TOKEN\n\
             step 1\n::add-mask::oops\n100% done\n\
             ::TOKEN::\n::endgroup::\n"
        );
    }

    #[test]
    fn a_pass_after_failures_is_a_warning_naming_them_and_a_clean_pass_is_silent() {
        let out = all(&[
            attempt("f", Some("exit 1")),
            attempt("f", Some("hung: no output")),
            attempt("f", None),
            spec_finished("f", Status::Succeeded, 3, b""),
            attempt("ok", None),
            spec_finished("ok", Status::Succeeded, 1, b""),
        ]);
        assert_eq!(
            out,
            "::warning title=spec `f` is flaky::passed on attempt 3 after 2 failed: exit 1; hung: no output\n"
        );
    }

    #[test]
    fn property_values_escape_what_would_end_them() {
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
        assert_eq!(escape_data("a:b,c"), "a:b,c");
    }

    #[test]
    fn a_failed_hook_is_a_warning() {
        let e = Event::now(EventKind::HookFinished {
            spec: "a".into(),
            hook: "on_exhausted",
            exit_code: Some(3),
            signal: None,
            reason: Some("exit 3".into()),
            duration: Duration::ZERO,
            log: PathBuf::from("logs/a/on_exhausted_1.log"),
        });
        assert_eq!(
            all(&[e]),
            "::warning title=on_exhausted of spec `a` failed::exit 3; log logs/a/on_exhausted_1.log\n"
        );
    }
}
