//! Plain lines, one per event, with a timestamp: for CI logs and pipes.

use std::io::Write;

use crate::report::{human_duration, summary, tail_lines};
use crate::runner::EventSink;
use crate::runner::events::{Event, EventKind, Status};

/// How many lines of a failed spec's log to show.
pub const TAIL_LINES: usize = 15;

pub struct PlainReporter<W: Write> {
    out: W,
    /// Only failures and the summary.
    quiet: bool,
}

impl<W: Write> PlainReporter<W> {
    pub fn new(out: W, quiet: bool) -> Self {
        PlainReporter { out, quiet }
    }
}

/// The line for one event, without timestamp; `None` for events not shown.
pub fn line(event: &Event, quiet: bool) -> Option<String> {
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
            format!("run {run_id}: {specs} specs to run{skipped}, {jobs} at once")
        }
        EventKind::AttemptStarted {
            spec,
            retry,
            max_retries,
            log,
            ..
        } if !quiet => {
            if *retry == 0 {
                format!("{spec}: RUNNING, log {}", log.display())
            } else {
                format!(
                    "{spec}: RUNNING (retry {retry}/{max_retries}), log {}",
                    log.display()
                )
            }
        }
        EventKind::AttemptFinished {
            spec,
            attempt,
            reason,
            duration,
            ..
        } if !quiet => match reason {
            None => format!(
                "{spec}: attempt {attempt} passed in {}",
                human_duration(*duration)
            ),
            Some(r) => format!(
                "{spec}: attempt {attempt} failed in {}: {r}",
                human_duration(*duration)
            ),
        },
        EventKind::RetryScheduled {
            spec,
            retry,
            max_retries,
            delay,
            reason,
        } if !quiet => {
            format!(
                "{spec}: BACKOFF {} (retry {retry}/{max_retries}, {reason})",
                human_duration(*delay)
            )
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
            let mut s = match status {
                Status::Succeeded if quiet => return None,
                Status::Succeeded => format!(
                    "{spec}: SUCCEEDED after {attempts} attempt{}",
                    plural(*attempts)
                ),
                other => {
                    let why = reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default();
                    format!("{spec}: {}{why}", other.as_str().to_uppercase())
                }
            };
            if *status == Status::Failed {
                for l in tail_lines(tail, TAIL_LINES) {
                    s.push_str(&format!("\n    | {l}"));
                }
                if let Some(log) = log {
                    s.push_str(&format!("\n    log: {}", log.display()));
                }
            }
            s
        }
        EventKind::RunFinished { .. } => summary(event)?,
        _ => return None,
    })
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl<W: Write> EventSink for PlainReporter<W> {
    fn event(&mut self, event: &Event) {
        if let Some(l) = line(event, self.quiet) {
            let ts = event.ts.format("%Y-%m-%dT%H:%M:%SZ");
            let _ = writeln!(self.out, "{ts} {l}");
            let _ = self.out.flush();
        }
    }
}
