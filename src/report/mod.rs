//! Reporters: turn run events into what a person or a program reads. They never spawn
//! and never touch run state.

pub mod json;
pub mod junit;
pub mod plain;
pub mod progress;

use crate::runner::EventSink;
use crate::runner::events::Event;

/// Several sinks, fed in order.
pub struct Fanout<'a>(pub Vec<&'a mut dyn EventSink>);

impl EventSink for Fanout<'_> {
    fn event(&mut self, event: &Event) {
        for s in self.0.iter_mut() {
            s.event(event);
        }
    }
    fn tick_interval(&self) -> Option<std::time::Duration> {
        self.0.iter().filter_map(|s| s.tick_interval()).min()
    }
    fn tick(&mut self) {
        for s in self.0.iter_mut() {
            s.tick();
        }
    }
}

/// The last `n` lines of an attempt's output, lossily decoded.
pub fn tail_lines(tail: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// `1.5s`, `2m03s`, `1h02m`.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        let rounded = (s * 10.0).round() / 10.0;
        format!("{rounded}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

/// The one-line summary of a run.
pub fn summary(event: &Event) -> Option<String> {
    let crate::runner::EventKind::RunFinished {
        succeeded,
        failed,
        skipped,
        stopped,
        not_run,
        retries,
        flaky,
        duration,
        up_to_date,
        ..
    } = &event.kind
    else {
        return None;
    };
    let mut s = format!("{succeeded} succeeded");
    if !flaky.is_empty() {
        s.push_str(&format!(" ({} flaky: {})", flaky.len(), flaky.join(", ")));
    }
    s.push_str(&format!(
        ", {failed} failed, {skipped} skipped, {stopped} stopped"
    ));
    if *up_to_date > 0 {
        s.push_str(&format!(", {up_to_date} up to date"));
    }
    if *not_run > 0 {
        s.push_str(&format!(", {not_run} not run"));
    }
    s.push_str(&format!(
        "; {retries} {}; {}",
        if *retries == 1 { "retry" } else { "retries" },
        human_duration(*duration)
    ));
    Some(s)
}
