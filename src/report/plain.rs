//! Plain lines, one per event, with a timestamp: for CI logs and pipes. Colour only
//! when asked for (see [`crate::report::use_color`]); never cursor movement.

use std::io::Write;

use console::Style;

use crate::events::EventSink;
use crate::events::{Event, EventKind, Status};
use crate::report::{human_duration, iteration_text, one_line, summary, tail_lines};

/// How many lines of a failed spec's log to show.
pub const TAIL_LINES: usize = 15;

/// How lines look.
#[derive(Clone, Copy, Debug, Default)]
pub struct Look {
    /// Only failures and the summary.
    pub quiet: bool,
    /// ANSI colours.
    pub color: bool,
    /// Leave out the end of a failed spec's log (another reporter shows it).
    pub no_tail: bool,
}

pub struct PlainReporter<W: Write> {
    out: W,
    look: Look,
}

impl<W: Write> PlainReporter<W> {
    pub fn new(out: W, look: Look) -> Self {
        PlainReporter { out, look }
    }
}

#[derive(Clone, Copy)]
enum Tone {
    Good,
    Bad,
    Warn,
    Busy,
    Dim,
}

/// `text` in `tone` when colour is on.
fn paint(look: Look, tone: Tone, text: &str) -> String {
    if !look.color {
        return text.to_string();
    }
    let style = match tone {
        Tone::Good => Style::new().green(),
        Tone::Bad => Style::new().red().bold(),
        Tone::Warn => Style::new().yellow(),
        Tone::Busy => Style::new().cyan(),
        Tone::Dim => Style::new().dim(),
    };
    style.force_styling(true).apply_to(text).to_string()
}

fn status_tone(status: Status) -> Tone {
    match status {
        Status::Succeeded => Tone::Good,
        Status::Failed => Tone::Bad,
        Status::Running => Tone::Busy,
        _ => Tone::Warn,
    }
}

/// The line for one event, without timestamp; `None` for events not shown.
pub fn line(event: &Event, look: Look) -> Option<String> {
    let quiet = look.quiet;
    Some(match &event.kind {
        EventKind::RunStarted {
            run_id,
            specs,
            up_to_date,
            jobs,
        } if !quiet => {
            let skipped = if *up_to_date > 0 {
                format!(" ({up_to_date} up to date, not run again)")
            } else {
                String::new()
            };
            let noun = if *specs == 1 { "spec" } else { "specs" };
            format!("run {run_id}: {specs} {noun} to run{skipped}, {jobs} at once")
        }
        EventKind::AttemptStarted {
            spec,
            retry,
            max_retries,
            log,
            started,
            ..
        } if !quiet => {
            // A batch job waits in its queue first: its line says so.
            let word = match started.and_then(|s| s.job) {
                Some(job) => format!("PENDING ({} job {})", job.backend, job.id),
                None => "RUNNING".to_string(),
            };
            let state = if *retry == 0 {
                word
            } else {
                format!("{word} (retry {retry}/{max_retries})")
            };
            format!(
                "{spec}: {}, log {}",
                paint(look, Tone::Busy, &state),
                crate::report::shown(log)
            )
        }
        EventKind::AttemptReattached {
            spec, job_id, log, ..
        } if !quiet => format!(
            "{spec}: {} batch job {job_id} left by a runner that was killed, log {}",
            paint(look, Tone::Busy, "REATTACHED to"),
            crate::report::shown(log)
        ),
        EventKind::AttemptFinished {
            spec,
            attempt,
            reason,
            duration,
            ..
        } if !quiet => match reason {
            None => format!(
                "{spec}: attempt {attempt} {} in {}",
                paint(look, Tone::Good, "passed"),
                human_duration(*duration)
            ),
            Some(r) => format!(
                "{spec}: attempt {attempt} {} in {}: {}",
                paint(look, Tone::Bad, "failed"),
                human_duration(*duration),
                one_line(r)
            ),
        },
        EventKind::RetryScheduled {
            spec,
            retry,
            max_retries,
            delay,
            reason,
        } if !quiet => {
            let state = format!("BACKOFF {}", human_duration(*delay));
            format!(
                "{spec}: {} (retry {retry}/{max_retries}, {})",
                paint(look, Tone::Warn, &state),
                one_line(reason)
            )
        }
        EventKind::SpecFinished {
            spec,
            status,
            attempts,
            reason,
            log,
            tail,
            iterations,
            ..
        } => {
            let word = paint(look, status_tone(*status), &status.as_str().to_uppercase());
            let mut s = match status {
                Status::Succeeded if quiet => return None,
                // An iterating spec whose work was done before anything ran.
                Status::Succeeded if *attempts == 0 => {
                    let why = reason
                        .as_deref()
                        .map(|r| format!(": {}", one_line(r)))
                        .unwrap_or_default();
                    format!("{spec}: {word}{why}")
                }
                // An iterating spec: every iteration is an attempt that passed; only
                // attempts beyond one per iteration were retries.
                Status::Succeeded if iterations.is_some_and(|n| n > 0) => {
                    let n = iterations.unwrap_or(1);
                    let flaky = if *attempts > n { " (flaky)" } else { "" };
                    format!(
                        "{spec}: {word} after {n} iteration{} ({attempts} attempt{}){flaky}",
                        plural(n),
                        plural(*attempts)
                    )
                }
                Status::Succeeded => {
                    let flaky = if *attempts > 1 { " (flaky)" } else { "" };
                    format!(
                        "{spec}: {word} after {attempts} attempt{}{flaky}",
                        plural(*attempts)
                    )
                }
                _ => {
                    let why = reason
                        .as_deref()
                        .map(|r| format!(": {}", one_line(r)))
                        .unwrap_or_default();
                    format!("{spec}: {word}{why}")
                }
            };
            if *status == Status::Failed {
                let shown = if look.no_tail { 0 } else { TAIL_LINES };
                for l in tail_lines(tail, shown) {
                    s.push_str(&format!("\n    {} {l}", paint(look, Tone::Dim, "|")));
                }
                if let Some(log) = log {
                    s.push_str(&format!("\n    log: {}", crate::report::shown(log)));
                }
            }
            s
        }
        EventKind::IterationStarted {
            spec,
            iteration,
            max_iterations,
            tasks_done,
            tasks_total,
            ..
        } if !quiet => format!(
            "{spec}: {}",
            paint(
                look,
                Tone::Busy,
                &iteration_text(*iteration, *max_iterations, *tasks_done, *tasks_total)
            )
        ),
        EventKind::IterationFinished {
            spec,
            iteration,
            max_iterations,
            tasks_done,
            tasks_total,
            progress,
            done,
            no_progress_streak,
            ..
        } if !quiet => {
            let outcome = if *done {
                paint(look, Tone::Good, "done")
            } else if *progress {
                "progress, not done yet".to_string()
            } else {
                paint(
                    look,
                    Tone::Warn,
                    &format!("no progress ({no_progress_streak} in a row)"),
                )
            };
            format!(
                "{spec}: {} ended: {outcome}",
                iteration_text(*iteration, *max_iterations, *tasks_done, *tasks_total)
            )
        }
        EventKind::SpecRestarted { spec, reason, .. } if !quiet => {
            format!(
                "{spec}: {} ({reason})",
                paint(look, Tone::Busy, "RESTARTED")
            )
        }
        EventKind::HookFinished {
            spec,
            hook,
            reason,
            duration,
            log,
            ..
        } => match reason {
            None if quiet => return None,
            None => format!(
                "{spec}: {hook} ran in {}, log {}",
                human_duration(*duration),
                crate::report::shown(log)
            ),
            Some(r) => format!(
                "{spec}: {hook} {}: {}, log {}",
                paint(look, Tone::Bad, "FAILED"),
                one_line(r),
                crate::report::shown(log)
            ),
        },
        EventKind::RunFinished { exit_code, .. } => {
            let tone = if *exit_code == 0 {
                Tone::Good
            } else {
                Tone::Bad
            };
            paint(look, tone, &summary(event)?)
        }
        _ => return None,
    })
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl<W: Write> EventSink for PlainReporter<W> {
    fn event(&mut self, event: &Event) {
        if let Some(l) = line(event, self.look) {
            let ts = event.ts.format("%Y-%m-%dT%H:%M:%SZ").to_string();
            // One write per event: stderr is unbuffered, and `writeln!` would make one
            // system call per piece.
            let text = format!("{} {l}\n", paint(self.look, Tone::Dim, &ts));
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

    fn ev(kind: EventKind) -> Event {
        Event::now(kind)
    }

    fn finished(status: Status, attempts: u32, reason: Option<&str>) -> Event {
        ev(EventKind::SpecFinished {
            spec: "auth".into(),
            status,
            attempts,
            retries: attempts.saturating_sub(1),
            reason: reason.map(str::to_string),
            log: Some(PathBuf::from("logs/auth/task_2.log")),
            iterations: None,
            tail: Tail::from(&b"compiling\nerror: boom\n"[..]),
        })
    }

    fn started() -> Event {
        ev(EventKind::AttemptStarted {
            spec: "auth".into(),
            attempt: 2,
            retry: 1,
            max_retries: 3,
            log: PathBuf::from("logs/auth/task_2.log"),
            pid: None,
            job_id: None,
            live: None,
            log_number: 2,
            started: None,
        })
    }

    #[test]
    fn a_batch_job_is_pending_first_and_a_reattached_one_says_so() {
        let queued = ev(EventKind::AttemptStarted {
            spec: "auth".into(),
            attempt: 1,
            retry: 0,
            max_retries: 3,
            log: PathBuf::from("logs/auth/task_1.log"),
            pid: None,
            job_id: Some(123),
            live: None,
            log_number: 1,
            started: Some(crate::exec::Started {
                pid: 0,
                pgid: 0,
                start_time: None,
                job: Some(crate::exec::BackendJob {
                    backend: "slurm",
                    id: 123,
                }),
            }),
        });
        let text = line(&queued, PLAIN).unwrap();
        assert!(
            text.ends_with("auth: PENDING (slurm job 123), log logs/auth/task_1.log"),
            "{text}"
        );
        let back = ev(EventKind::AttemptReattached {
            spec: "auth".into(),
            attempt: 1,
            retry: 0,
            max_retries: 3,
            log: PathBuf::from("logs/auth/task_1.log"),
            job_id: 123,
            live: None,
            log_number: 1,
        });
        let text = line(&back, PLAIN).unwrap();
        assert!(text.contains("auth: REATTACHED to batch job 123"), "{text}");
    }

    fn run_finished(failed: usize) -> Event {
        ev(EventKind::RunFinished {
            succeeded: 2,
            failed,
            skipped: 1,
            stopped: 0,
            up_to_date: 0,
            not_run: 0,
            retries: 3,
            flaky: vec!["auth".into()],
            failed_specs: (0..failed).map(|i| format!("f{i}")).collect(),
            skipped_specs: vec!["deploy".into()],
            stopped_specs: Vec::new(),
            duration: Duration::from_millis(61_500),
            exit_code: u8::from(failed > 0),
        })
    }

    fn hook(reason: Option<&str>) -> Event {
        ev(EventKind::HookFinished {
            spec: "auth".into(),
            hook: "on_exhausted",
            exit_code: Some(if reason.is_some() { 3 } else { 0 }),
            signal: None,
            reason: reason.map(str::to_string),
            duration: Duration::from_millis(200),
            log: PathBuf::from("logs/auth/on_exhausted_1.log"),
        })
    }

    const PLAIN: Look = Look {
        quiet: false,
        color: false,
        no_tail: false,
    };
    const QUIET: Look = Look {
        quiet: true,
        color: false,
        no_tail: false,
    };
    const COLOR: Look = Look {
        quiet: false,
        color: true,
        no_tail: false,
    };

    #[test]
    fn a_failure_shows_its_reason_log_tail_and_path() {
        let l = line(&finished(Status::Failed, 2, Some("exit 1; gave up")), PLAIN).unwrap();
        assert_eq!(
            l,
            "auth: FAILED: exit 1; gave up\n    | compiling\n    | error: boom\n    log: logs/auth/task_2.log"
        );
    }

    #[test]
    fn without_the_tail_a_failure_still_names_its_log() {
        let look = Look {
            no_tail: true,
            ..PLAIN
        };
        let l = line(&finished(Status::Failed, 2, Some("exit 1")), look).unwrap();
        assert_eq!(l, "auth: FAILED: exit 1\n    log: logs/auth/task_2.log");
    }

    #[test]
    fn a_pass_after_retries_is_called_flaky() {
        let l = line(&finished(Status::Succeeded, 3, None), PLAIN).unwrap();
        assert_eq!(l, "auth: SUCCEEDED after 3 attempts (flaky)");
        let l = line(&finished(Status::Succeeded, 1, None), PLAIN).unwrap();
        assert_eq!(l, "auth: SUCCEEDED after 1 attempt");
    }

    #[test]
    fn quiet_keeps_only_failures_hook_failures_and_the_summary() {
        assert_eq!(line(&started(), QUIET), None);
        assert_eq!(line(&finished(Status::Succeeded, 3, None), QUIET), None);
        assert_eq!(line(&hook(None), QUIET), None);
        assert!(line(&finished(Status::Failed, 1, Some("exit 1")), QUIET).is_some());
        assert!(line(&finished(Status::Skipped, 0, Some("dependency")), QUIET).is_some());
        assert_eq!(
            line(&hook(Some("exit 3")), QUIET).unwrap(),
            "auth: on_exhausted FAILED: exit 3, log logs/auth/on_exhausted_1.log"
        );
        assert_eq!(
            line(&run_finished(1), QUIET).unwrap(),
            "2 succeeded (1 flaky: auth), 1 failed (f0), 1 skipped (deploy), 0 stopped; 3 retries; 1m01s"
        );
    }

    #[test]
    fn one_spec_is_not_specs() {
        let start = |specs| {
            ev(EventKind::RunStarted {
                run_id: "r".into(),
                specs,
                up_to_date: 0,
                jobs: 4,
            })
        };
        assert_eq!(
            line(&start(1), PLAIN).unwrap(),
            "run r: 1 spec to run, 4 at once"
        );
        assert_eq!(
            line(&start(2), PLAIN).unwrap(),
            "run r: 2 specs to run, 4 at once"
        );
    }

    #[test]
    fn a_hook_that_ran_says_so_with_its_log() {
        assert_eq!(
            line(&hook(None), PLAIN).unwrap(),
            "auth: on_exhausted ran in 0.2s, log logs/auth/on_exhausted_1.log"
        );
    }

    #[test]
    fn colour_only_when_asked_and_the_text_is_the_same() {
        for e in [
            started(),
            finished(Status::Failed, 2, Some("exit 1")),
            run_finished(1),
        ] {
            let plain = line(&e, PLAIN).unwrap();
            let colored = line(&e, COLOR).unwrap();
            assert!(!plain.contains('\x1b'), "{plain:?}");
            assert!(colored.contains("\x1b["), "{colored:?}");
            assert_eq!(console::strip_ansi_codes(&colored), plain);
        }
    }

    #[test]
    fn the_reporter_prefixes_a_timestamp() {
        let mut out = Vec::new();
        PlainReporter::new(&mut out, PLAIN).event(&started());
        let text = String::from_utf8(out).unwrap();
        let (ts, rest) = text.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(
            rest,
            "auth: RUNNING (retry 1/3), log logs/auth/task_2.log\n"
        );
    }

    #[test]
    fn a_reason_with_line_breaks_stays_on_its_event_line() {
        let bad = "could not start: `a\r\n::error::injected`";
        for e in [
            finished(Status::Failed, 1, Some(bad)),
            finished(Status::Skipped, 0, Some(bad)),
            hook(Some(bad)),
        ] {
            let l = line(&e, PLAIN).unwrap();
            let first = l.lines().next().unwrap();
            assert!(
                first.ends_with("a··::error::injected`")
                    || first.contains("a··::error::injected`, log"),
                "{l}"
            );
            assert!(
                !l.contains('\r') && !l.lines().any(|x| x.starts_with("::")),
                "{l}"
            );
        }
    }
}
