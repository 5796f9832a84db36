//! Reporters: turn run events into what a person or a program reads. They never spawn
//! and never touch run state.

pub mod github;
pub mod json;
pub mod junit;
pub mod plain;
pub mod progress;

use crate::events::Event;
use crate::events::EventSink;

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

/// Whether to colour output on stderr: `--color always|never` decide; `auto` colours a
/// terminal unless `NO_COLOR` is set to something (<https://no-color.org>: the flag
/// beats the variable) or `TERM` is `dumb`.
pub fn use_color(
    choice: crate::cli::ColorChoice,
    terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    match choice {
        crate::cli::ColorChoice::Always => true,
        crate::cli::ColorChoice::Never => false,
        crate::cli::ColorChoice::Auto => {
            terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
        }
    }
}

/// Turns colour on or off for everything drawn through `console` (the bars too).
pub fn set_color(on: bool) {
    console::set_colors_enabled(on);
    console::set_colors_enabled_stderr(on);
}

/// Whether this process runs as a GitHub Actions step.
pub fn in_github_actions(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v == "true")
}

/// The last `n` lines of an attempt's output, lossily decoded.
///
/// Made safe to print: control characters (NULs of a binary flood, escape sequences
/// that would move a terminal's cursor) become `·`, and a line longer than
/// [`TAIL_LINE_CHARS`] keeps its end, where the error usually is.
pub fn tail_lines(tail: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(tail);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| printable(l.trim_end()))
        .collect()
}

/// `text` made one line that is safe to print, as [`tail_lines`] makes output: every
/// control character (CR, LF, escape) becomes `·`. Reasons can hold text from the
/// pipeline file (a program name) or the system, and a line break in one would split
/// an event's line — and let what follows pose as a line of its own (a GitHub
/// `::error::` command outside the `::stop-commands::` section).
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '·' } else { c })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}

/// The longest log line shown in a failure report.
pub const TAIL_LINE_CHARS: usize = 300;

fn printable(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let skip = chars.len().saturating_sub(TAIL_LINE_CHARS);
    let mut out = String::with_capacity(line.len().min(TAIL_LINE_CHARS * 4) + 3);
    if skip > 0 {
        out.push('…');
    }
    for &c in &chars[skip..] {
        out.push(if c.is_control() && c != '\t' { '·' } else { c });
    }
    out
}

/// A path as a person at this shell would type it: relative to the current directory
/// when inside it (`.spec-runner/logs/a/task_1.log`), absolute otherwise; on one line
/// (a folder named in the pipeline file may hold a line break).
pub fn shown(path: &std::path::Path) -> String {
    // Read once: the runner never changes directory, and this runs per event line.
    static CWD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    CWD.get_or_init(|| std::env::current_dir().ok())
        .as_deref()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .filter(|s| !s.is_empty())
        .map_or_else(
            || one_line(&path.display().to_string()).into_owned(),
            |s| one_line(&s).into_owned(),
        )
}

/// Where an iterating spec's loop is: `iteration 3/50 · tasks 4/10` (without the
/// tasks when it has no tasks file).
pub fn iteration_text(
    iteration: u32,
    max_iterations: u32,
    tasks_done: Option<u32>,
    tasks_total: Option<u32>,
) -> String {
    match (tasks_done, tasks_total) {
        (Some(done), Some(total)) => {
            format!("iteration {iteration}/{max_iterations} · tasks {done}/{total}")
        }
        _ => format!("iteration {iteration}/{max_iterations}"),
    }
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

/// How many spec names a summary lists before it says "and N more".
const SUMMARY_NAMES: usize = 10;

/// `a, b, c`, or the first [`SUMMARY_NAMES`] and `and N more`.
fn names(list: &[String]) -> String {
    if list.len() <= SUMMARY_NAMES {
        return list.join(", ");
    }
    format!(
        "{}, and {} more",
        list[..SUMMARY_NAMES].join(", "),
        list.len() - SUMMARY_NAMES
    )
}

/// The one-line summary of a run.
pub fn summary(event: &Event) -> Option<String> {
    let crate::events::EventKind::RunFinished {
        succeeded,
        failed,
        skipped,
        stopped,
        not_run,
        retries,
        flaky,
        failed_specs,
        skipped_specs,
        stopped_specs,
        duration,
        up_to_date,
        ..
    } = &event.kind
    else {
        return None;
    };
    let mut s = format!("{succeeded} succeeded");
    if !flaky.is_empty() {
        s.push_str(&format!(" ({} flaky: {})", flaky.len(), names(flaky)));
    }
    for (n, word, list) in [
        (failed, "failed", failed_specs),
        (skipped, "skipped", skipped_specs),
        (stopped, "stopped", stopped_specs),
    ] {
        s.push_str(&format!(", {n} {word}"));
        if !list.is_empty() {
            s.push_str(&format!(" ({})", names(list)));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ColorChoice;
    use std::ffi::OsStr;

    #[test]
    fn tail_lines_are_safe_to_print_and_bounded() {
        let mut flood = vec![0u8; 70_000];
        flood.extend_from_slice(b"\x1b[2Jthe error\n");
        let lines = tail_lines(&flood, 5);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].chars().count() <= TAIL_LINE_CHARS + 1,
            "{}",
            lines[0].len()
        );
        assert!(lines[0].starts_with('…'));
        assert!(lines[0].ends_with("·[2Jthe error"), "{}", lines[0]);
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), vec!["b", "c"]);
    }

    #[test]
    fn one_line_keeps_a_reason_on_one_printable_line() {
        assert_eq!(one_line("exit 1"), "exit 1");
        assert_eq!(
            one_line("not found: `a\r\n::error::x\x1b[2J`"),
            "not found: `a··::error::x·[2J`"
        );
    }

    #[test]
    fn colour_follows_the_flag_then_no_color_then_the_terminal() {
        let some = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        let dumb = Some(OsStr::new("dumb"));
        let xterm = Some(OsStr::new("xterm-256color"));
        let table = [
            (ColorChoice::Auto, true, None, xterm, true),
            (ColorChoice::Auto, false, None, xterm, false),
            (ColorChoice::Auto, true, some, xterm, false),
            // NO_COLOR set but empty does not count.
            (ColorChoice::Auto, true, empty, xterm, true),
            (ColorChoice::Auto, true, None, dumb, false),
            (ColorChoice::Always, false, some, dumb, true),
            (ColorChoice::Never, true, None, xterm, false),
        ];
        for (choice, tty, no_color, term, expected) in table {
            assert_eq!(
                use_color(choice, tty, no_color, term),
                expected,
                "{choice:?} tty={tty} NO_COLOR={no_color:?} TERM={term:?}"
            );
        }
    }

    #[test]
    fn a_long_list_of_names_is_cut_with_a_count() {
        let list: Vec<String> = (1..=12).map(|i| format!("s{i}")).collect();
        assert_eq!(names(&list[..2]), "s1, s2");
        assert_eq!(
            names(&list),
            "s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, and 2 more"
        );
    }

    #[test]
    fn only_the_value_true_means_github_actions() {
        assert!(in_github_actions(Some(OsStr::new("true"))));
        assert!(!in_github_actions(Some(OsStr::new("false"))));
        assert!(!in_github_actions(Some(OsStr::new(""))));
        assert!(!in_github_actions(None));
    }
}
