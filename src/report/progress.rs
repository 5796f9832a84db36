//! Live progress on a terminal: an overall bar and one line per live spec; finished
//! specs and hooks print their plain line above the bars.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::events::EventSink;
use crate::events::SharedLive;
use crate::events::{Event, EventKind};
use crate::report::{human_duration, plain};

enum Phase {
    Running {
        since: Instant,
        live: Option<SharedLive>,
        retry: u32,
        max: u32,
    },
    Backoff {
        until: Instant,
        retry: u32,
        max: u32,
        why: String,
    },
}

struct Line {
    bar: ProgressBar,
    phase: Phase,
    /// An iterating spec's `iteration 3/50 · tasks 4/10`, shown before its state.
    iteration: Option<String>,
}

pub struct ProgressReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    lines: HashMap<String, Line>,
    /// Iterations announced before their spec has a line (its attempt not started).
    iterations: HashMap<String, String>,
    failed: usize,
    retries: u32,
    look: plain::Look,
}

/// Whether indicatif would draw bars on stderr: a terminal, and `TERM` neither unset
/// nor `dumb`. Asked of indicatif itself, so the two cannot disagree.
pub fn bars_drawn() -> bool {
    !ProgressDrawTarget::stderr().is_hidden()
}

impl ProgressReporter {
    pub fn new(look: plain::Look) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise:.dim} [{bar:30.cyan/blue}] {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        ProgressReporter {
            multi,
            overall,
            lines: HashMap::new(),
            iterations: HashMap::new(),
            failed: 0,
            retries: 0,
            look,
        }
    }

    fn overall_message(&self) {
        self.overall
            .set_message(format!("failed {}, retries {}", self.failed, self.retries));
    }

    fn line_for(&mut self, spec: &str) -> &mut Line {
        let multi = &self.multi;
        self.lines.entry(spec.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                // `wide_msg`: cut to the terminal's width, one row, never wrapped.
                ProgressStyle::with_template("  {spinner:.green} {prefix:.bold} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(spec.to_string());
            Line {
                bar,
                phase: Phase::Backoff {
                    until: Instant::now(),
                    retry: 0,
                    max: 0,
                    why: String::new(),
                },
                iteration: None,
            }
        })
    }

    fn render(line: &Line) {
        let state = message(&line.phase, Instant::now());
        line.bar.set_message(match &line.iteration {
            Some(it) => format!("{it} · {state}"),
            None => state,
        });
        line.bar.tick();
    }
}

/// What a spec's line says at `now`.
fn message(phase: &Phase, now: Instant) -> String {
    match phase {
        Phase::Running {
            since,
            live,
            retry,
            max,
        } => {
            // A batch job waiting in its queue says so instead of RUNNING.
            let waiting = live
                .as_ref()
                .and_then(|l| l.waiting.lock().ok().and_then(|w| w.clone()));
            let word = waiting.as_deref().unwrap_or("RUNNING");
            let state = if *retry == 0 {
                word.to_string()
            } else {
                format!("{word} (retry {retry}/{max})")
            };
            let last = live
                .as_ref()
                .and_then(|l| l.last_line.lock().ok().map(|s| s.clone()))
                .unwrap_or_default();
            let elapsed = human_duration(now.saturating_duration_since(*since));
            if last.is_empty() {
                format!("{state} {elapsed}")
            } else {
                format!("{state} {elapsed} │ {last}")
            }
        }
        Phase::Backoff {
            until,
            retry,
            max,
            why,
        } => {
            let left = until.saturating_duration_since(now);
            if left.is_zero() {
                // The delay is over but the retry has not started: every slot is
                // taken (it goes first when one frees).
                format!("WAITING FOR A SLOT (retry {retry}/{max}, {why})")
            } else {
                format!(
                    "BACKOFF {} (retry {retry}/{max}, {why})",
                    human_duration(Duration::from_secs(left.as_secs_f64().ceil() as u64))
                )
            }
        }
    }
}

impl EventSink for ProgressReporter {
    fn event(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { specs, .. } => {
                self.overall.set_length(*specs as u64);
                self.overall_message();
            }
            EventKind::AttemptStarted {
                spec,
                retry,
                max_retries,
                live,
                ..
            }
            | EventKind::AttemptReattached {
                spec,
                retry,
                max_retries,
                live,
                ..
            } => {
                let (retry, max, live) = (*retry, *max_retries, live.clone());
                let iteration = self.iterations.remove(spec);
                let line = self.line_for(spec);
                if iteration.is_some() {
                    line.iteration = iteration;
                }
                line.phase = Phase::Running {
                    since: Instant::now(),
                    live,
                    retry,
                    max,
                };
                Self::render(line);
            }
            EventKind::RetryScheduled {
                spec,
                retry,
                max_retries,
                delay,
                reason,
            } => {
                self.retries += 1;
                let phase = Phase::Backoff {
                    until: Instant::now() + *delay,
                    retry: *retry,
                    max: *max_retries,
                    why: crate::report::one_line(reason).into_owned(),
                };
                let line = self.line_for(spec);
                line.phase = phase;
                Self::render(line);
                self.overall_message();
            }
            EventKind::SpecFinished { spec, status, .. } => {
                self.iterations.remove(spec);
                if let Some(line) = self.lines.remove(spec) {
                    line.bar.finish_and_clear();
                    self.multi.remove(&line.bar);
                }
                if *status == crate::events::Status::Failed {
                    self.failed += 1;
                }
                self.overall.inc(1);
                self.overall_message();
                if let Some(text) = plain::line(event, self.look) {
                    let _ = self.multi.println(text);
                }
            }
            EventKind::IterationStarted {
                spec,
                iteration,
                max_iterations,
                tasks_done,
                tasks_total,
                ..
            } => {
                let text = crate::report::iteration_text(
                    *iteration,
                    *max_iterations,
                    *tasks_done,
                    *tasks_total,
                );
                match self.lines.get_mut(spec) {
                    Some(line) => line.iteration = Some(text),
                    None => {
                        self.iterations.insert(spec.clone(), text);
                    }
                }
            }
            EventKind::IterationFinished { .. } => {
                if let Some(text) = plain::line(event, self.look) {
                    let _ = self.multi.println(text);
                }
            }
            EventKind::HookFinished { .. } => {
                if let Some(text) = plain::line(event, self.look) {
                    let _ = self.multi.println(text);
                }
            }
            EventKind::RunFinished { .. } => {
                self.overall.finish_and_clear();
                let _ = self.multi.clear();
                if let Some(text) = plain::line(event, self.look) {
                    eprintln!("{text}");
                }
            }
            _ => {}
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(100))
    }

    fn tick(&mut self) {
        for line in self.lines.values() {
            Self::render(line);
        }
        // The overall clock keeps going between events.
        self.overall.tick();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iterating_spec_shows_its_iteration_before_its_state() {
        let mut r = ProgressReporter::new(plain::Look::default());
        r.event(&Event::now(EventKind::IterationStarted {
            spec: "work".into(),
            iteration: 3,
            max_iterations: 50,
            tasks_done: Some(4),
            tasks_total: Some(10),
            tasks_pending: Some(6),
            tasks_in_progress: Some(0),
            no_progress_streak: 0,
            head: None,
            start_tasks_done: Some(4),
        }));
        r.event(&Event::now(EventKind::AttemptStarted {
            spec: "work".into(),
            attempt: 1,
            retry: 0,
            max_retries: 3,
            log: "task_5.log".into(),
            pid: None,
            job_id: None,
            live: None,
            log_number: 5,
            started: None,
        }));
        let msg = r.lines["work"].bar.message();
        assert!(
            msg.starts_with("iteration 3/50 · tasks 4/10 · RUNNING"),
            "{msg}"
        );
    }

    #[test]
    fn a_queued_batch_job_shows_pending_until_it_runs() {
        let live: SharedLive = std::sync::Arc::new(crate::exec::LiveOutput::default());
        *live.waiting.lock().unwrap() = Some("PENDING (slurm job 7)".into());
        let phase = Phase::Running {
            since: Instant::now(),
            live: Some(live.clone()),
            retry: 1,
            max: 3,
        };
        let msg = message(&phase, Instant::now());
        assert!(
            msg.starts_with("PENDING (slurm job 7) (retry 1/3)"),
            "{msg}"
        );
        *live.waiting.lock().unwrap() = None;
        let msg = message(&phase, Instant::now());
        assert!(msg.starts_with("RUNNING (retry 1/3)"), "{msg}");
    }

    #[test]
    fn a_retry_whose_delay_is_over_is_waiting_for_a_slot() {
        let now = Instant::now();
        let backoff = |until| Phase::Backoff {
            until,
            retry: 1,
            max: 3,
            why: "exit 1".into(),
        };
        assert_eq!(
            message(&backoff(now + Duration::from_millis(7_300)), now),
            "BACKOFF 8s (retry 1/3, exit 1)"
        );
        assert_eq!(
            message(&backoff(now), now),
            "WAITING FOR A SLOT (retry 1/3, exit 1)"
        );
    }
}
