//! The JUnit XML report (`--junit PATH` or `junit_path`): collected from events during
//! the run, written once after it (also after an interrupted run), atomically.
//!
//! One `testcase` per requested spec. The case itself describes the spec's last
//! attempt — its status, its duration, the end of its log as `system-out` — and each
//! earlier attempt is one more element with its own reason, time and output: a spec
//! that passed after retries is `flakyFailure`s in a passing case, one that failed for
//! good is a `failure` with `rerunFailure`s, the shape Maven Surefire introduced and
//! Jenkins, GitLab and nextest read. An attempt that never reached an exit status
//! (could not start) is an `error` rather than a `failure`. Skipped specs, and
//! requested specs not run (up to date, or the run was interrupted first), are
//! `skipped`; a stopped spec is an `error`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};

use crate::events::EventSink;
use crate::events::{Event, EventKind, Status, Tail};

/// How much of an earlier attempt's output is kept (its last bytes).
const EARLIER_OUTPUT_BYTES: usize = 8 * 1024;
/// How much of the final attempt's output a finished spec keeps for the report: the
/// report is written at the end of the run, so this bounds memory for many chatty
/// specs (a passing spec's output matters less than a failing one's).
const FINAL_OUTPUT_BYTES_PASSED: usize = 4 * 1024;
const FINAL_OUTPUT_BYTES_FAILED: usize = 32 * 1024;

/// Why a requested spec is in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Planned {
    /// This run starts it.
    Run,
    /// It succeeded in an earlier run and is unchanged.
    UpToDate,
}

struct Attempt {
    number: u32,
    log: std::path::PathBuf,
    started: Option<DateTime<Utc>>,
    duration: Duration,
    exit_code: Option<i32>,
    signal: Option<String>,
    reason: Option<String>,
    output: Tail,
}

struct Case {
    name: String,
    planned: Planned,
    attempts: Vec<Attempt>,
    /// When the attempt now running started.
    running_since: Option<DateTime<Utc>>,
    /// A retry was scheduled after the last attempt: if the spec ends now (stopped
    /// during its backoff), no attempt ended it.
    retry_pending: bool,
    /// Final status and reason, once the spec finished.
    end: Option<(Status, Option<String>)>,
    /// An iterating spec: one line per finished iteration, for its output.
    iterations: Vec<String>,
}

/// Collects what the report needs; [`JunitReport::write`] writes it.
pub struct JunitReport {
    suite: String,
    cases: Vec<Case>,
    index: HashMap<String, usize>,
    run_id: Option<String>,
    started: Option<DateTime<Utc>>,
    duration: Option<Duration>,
}

impl JunitReport {
    /// A report for these specs, in this order; `suite` names the test suite (the
    /// pipeline file).
    pub fn new(
        suite: impl Into<String>,
        specs: impl IntoIterator<Item = (String, Planned)>,
    ) -> Self {
        let cases: Vec<Case> = specs
            .into_iter()
            .map(|(name, planned)| Case {
                name,
                planned,
                attempts: Vec::new(),
                running_since: None,
                retry_pending: false,
                end: None,
                iterations: Vec::new(),
            })
            .collect();
        let index = cases
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        JunitReport {
            suite: suite.into(),
            cases,
            index,
            run_id: None,
            started: None,
            duration: None,
        }
    }

    fn case(&mut self, spec: &str) -> Option<&mut Case> {
        self.index.get(spec).map(|&i| &mut self.cases[i])
    }

    /// The report as data.
    pub fn render(&self) -> Report {
        let mut suite = TestSuite::new(self.suite.as_str());
        if let Some(t) = self.started {
            suite.set_timestamp(t);
        }
        if let Some(d) = self.duration {
            suite.set_time(d);
        }
        if let Some(id) = &self.run_id {
            suite.add_property(Property::new("run_id", id));
        }
        suite.add_test_cases(self.cases.iter().map(|c| self.test_case(c)));
        // No `timestamp` on `testsuites`: junit-10.xsd does not declare one there.
        let mut report = Report::new("spec-runner");
        if let Some(d) = self.duration {
            report.set_time(d);
        }
        report.add_test_suite(suite);
        report
    }

    fn test_case(&self, c: &Case) -> TestCase {
        let Some((status, reason)) = &c.end else {
            let why = match c.planned {
                Planned::UpToDate => "up to date: succeeded in an earlier run, unchanged since",
                Planned::Run => "not run: the run ended before it started",
            };
            let mut status = TestCaseStatus::skipped();
            status.set_message(why);
            status.set_description(why);
            let mut tc = named(c, &self.suite, status);
            tc.set_time(Duration::ZERO);
            return tc;
        };
        // The case is the attempt that ended the spec; every other attempt was
        // followed by a retry (or, for an iterating spec, passed and ended an
        // iteration: those are not reruns).
        let (last, earlier) = match c.attempts.split_last() {
            Some((last, earlier)) if !c.retry_pending => (Some(last), earlier),
            _ => (None, &c.attempts[..]),
        };
        let earlier: Vec<&Attempt> = earlier.iter().filter(|a| a.reason.is_some()).collect();
        let mut tc_status = match status {
            Status::Succeeded => TestCaseStatus::success(),
            Status::Skipped => {
                let mut s = TestCaseStatus::skipped();
                let why = reason.as_deref().unwrap_or("skipped");
                s.set_message(why);
                // GitLab shows the text, not the message.
                s.set_description(why);
                s
            }
            Status::Stopped => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(reason.as_deref().unwrap_or("stopped"));
                s.set_type("stopped");
                s
            }
            _ => {
                let kind = last.map_or(NonSuccessKind::Error, Attempt::kind);
                let mut s = TestCaseStatus::non_success(kind);
                s.set_message(reason.as_deref().unwrap_or("failed"));
                if let Some(ty) = last.and_then(Attempt::ty) {
                    s.set_type(ty);
                }
                s
            }
        };
        // GitLab shows only the verdict element's text (not its attributes, not
        // system-out, not the reruns): the reason and the end of the log go there.
        if let Status::Failed | Status::Stopped = status {
            tc_status.set_description(failure_text(
                reason.as_deref().unwrap_or(status.as_str()),
                // Stopped during a backoff: the attempt before it says why it failed.
                last.or(c.attempts.last()),
            ));
        }
        // Success keeps them as flakyFailure, non-success as rerunFailure (the
        // default kind), skipped drops them.
        tc_status.add_reruns(earlier.iter().map(|a| a.rerun()));
        let mut tc = named(c, &self.suite, tc_status);
        // Every case has a time, 0 when no attempt ended it (skipped, stopped during a
        // backoff), as pytest and Surefire write.
        tc.set_time(Duration::ZERO);
        if let Some(last) = last {
            // No `timestamp` on the case: junit-10.xsd does not declare one there (the
            // suite has the run's). An iterating spec's time is all of its iterations'.
            tc.set_time(if c.iterations.is_empty() {
                last.duration
            } else {
                c.attempts.iter().map(|a| a.duration).sum()
            });
        }
        // The iterations first, then the end of the last attempt's log.
        let mut out: Vec<u8> = Vec::new();
        for line in &c.iterations {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        if let Some(last) = last {
            out.extend_from_slice(&last.output);
        }
        if !out.is_empty() {
            tc.set_system_out_lossy(&out);
        }
        tc
    }

    /// The report as XML text, well-formed whatever the specs printed.
    pub fn to_xml(&self) -> std::io::Result<String> {
        let xml = self.render().to_string().map_err(std::io::Error::other)?;
        Ok(without_root_skipped(&xml_chars(&xml)))
    }

    /// Writes the report to `path` atomically (a temporary file in the same folder,
    /// then a rename), creating the folder if needed.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let xml = self.to_xml()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map_or_else(|| "junit".into(), |n| n.to_string_lossy().into_owned());
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            // An ordinary file (umask applies), not tempfile's private 0600.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)?;
        tmp.write_all(xml.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// `text` with every character outside XML 1.0's `Char` production replaced by
/// U+FFFD. quick-junit drops the C0 controls itself but lets U+FFFE and U+FFFF
/// through, and one of them makes the whole report unreadable for xmllint, lxml and
/// expat. (A Rust string holds no surrogates, so those two and the C0 controls are
/// all there is to catch.) The serialised document can hold them only inside text
/// and attribute values, so replacing them there is safe.
fn xml_chars(text: &str) -> String {
    text.chars()
        .map(|c| if is_xml_char(c) { c } else { '\u{FFFD}' })
        .collect()
}

/// XML 1.0, production 2: `#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] |
/// [#x10000-#x10FFFF]`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `xml` without the `skipped` attribute quick-junit always writes on `<testsuites>`:
/// junit-10.xsd does not declare it there (Jenkins' xunit plugin validates against it
/// and refuses the report), and the count stays on `<testsuite>`, where it does.
fn without_root_skipped(xml: &str) -> String {
    let Some(open) = xml.find("<testsuites ") else {
        return xml.to_string();
    };
    let end = xml[open..].find('>').map_or(xml.len(), |e| open + e);
    let tag = &xml[open..end];
    let Some(at) = tag.find(" skipped=\"") else {
        return xml.to_string();
    };
    let value_end = tag[at + 10..]
        .find('"')
        .map_or(tag.len(), |e| at + 10 + e + 1);
    format!("{}{}{}", &xml[..open + at], &tag[value_end..], &xml[end..])
}

/// How many lines of the log a `failure` or `error` text shows.
const FAILURE_TEXT_LINES: usize = 50;

/// The text of a `failure` or `error` element: the reason, then the end of the last
/// attempt's log and its path.
fn failure_text(reason: &str, last: Option<&Attempt>) -> String {
    let mut text = reason.to_string();
    if let Some(a) = last {
        let lines = crate::report::tail_lines(&a.output, FAILURE_TEXT_LINES);
        if !lines.is_empty() {
            text.push_str(&format!("\n\nlast lines of attempt {}:\n", a.number));
            for l in lines {
                text.push_str(&l);
                text.push('\n');
            }
        } else {
            text.push('\n');
        }
        text.push_str(&format!("log: {}\n", crate::report::shown(&a.log)));
    }
    text
}

fn named(c: &Case, suite: &str, status: TestCaseStatus) -> TestCase {
    let mut tc = TestCase::new(c.name.as_str(), status);
    tc.set_classname(suite);
    tc
}

impl Attempt {
    /// `failure` when the command ran to an exit status or a signal, `error` when it
    /// never did (it could not be started or logged).
    fn kind(&self) -> NonSuccessKind {
        if self.exit_code.is_none() && self.signal.is_none() {
            NonSuccessKind::Error
        } else {
            NonSuccessKind::Failure
        }
    }

    /// How it ended, in facts: `exit 1`, `SIGSEGV`.
    fn ty(&self) -> Option<String> {
        match (self.exit_code, &self.signal) {
            (Some(code), _) => Some(format!("exit {code}")),
            (None, Some(sig)) => Some(sig.clone()),
            (None, None) => None,
        }
    }

    fn rerun(&self) -> TestRerun {
        let mut r = TestRerun::new(self.kind());
        // junit-10.xsd declares only `message` and a required `type` on these
        // elements: the attempt's start and duration go into its text.
        let reason = self.reason.as_deref().unwrap_or("failed");
        r.set_message(reason);
        r.set_type(self.ty().unwrap_or_else(|| "not started".to_string()));
        let mut text = format!(
            "attempt {}: {reason}, after {:.3} s",
            self.number,
            self.duration.as_secs_f64()
        );
        if let Some(t) = self.started {
            text.push_str(&format!(
                ", started {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ));
        }
        text.push_str(&format!("; log: {}", crate::report::shown(&self.log)));
        r.set_description(text);
        if !self.output.is_empty() {
            r.set_system_out_lossy(&*self.output);
        }
        r
    }
}

/// The last `max` bytes of `tail`, from a line start when it was cut.
fn shorten(tail: &Tail, max: usize) -> Tail {
    if tail.len() <= max {
        return tail.clone();
    }
    let cut = &tail[tail.len() - max..];
    let from = cut.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
    Tail::from(&cut[from..])
}

impl EventSink for JunitReport {
    fn event(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { run_id, .. } => {
                self.run_id = Some(run_id.clone());
                self.started = Some(event.ts);
            }
            EventKind::AttemptStarted { spec, .. } | EventKind::AttemptReattached { spec, .. } => {
                if let Some(c) = self.case(spec) {
                    c.running_since = Some(event.ts);
                    c.retry_pending = false;
                }
            }
            EventKind::RetryScheduled { spec, .. } => {
                if let Some(c) = self.case(spec) {
                    c.retry_pending = true;
                }
            }
            EventKind::AttemptFinished {
                spec,
                attempt,
                exit_code,
                signal,
                reason,
                duration,
                log,
                tail,
            } => {
                if let Some(c) = self.case(spec) {
                    // Only the last attempt keeps its whole tail: bounded memory
                    // however many attempts a long run makes.
                    if let Some(prev) = c.attempts.last_mut() {
                        prev.output = shorten(&prev.output, EARLIER_OUTPUT_BYTES);
                    }
                    let started = c.running_since.take();
                    c.attempts.push(Attempt {
                        number: *attempt,
                        log: log.clone(),
                        started,
                        duration: *duration,
                        exit_code: *exit_code,
                        signal: signal.clone(),
                        reason: reason.clone(),
                        output: tail.clone(),
                    });
                }
            }
            EventKind::SpecFinished {
                spec,
                status,
                reason,
                ..
            } => {
                if let Some(c) = self.case(spec) {
                    c.end = Some((*status, reason.clone()));
                    let keep = if *status == Status::Succeeded {
                        FINAL_OUTPUT_BYTES_PASSED
                    } else {
                        FINAL_OUTPUT_BYTES_FAILED
                    };
                    if let Some(last) = c.attempts.last_mut() {
                        last.output = shorten(&last.output, keep);
                    }
                }
            }
            EventKind::RunFinished { duration, .. } => self.duration = Some(*duration),
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
            } => {
                if let Some(c) = self.case(spec) {
                    let outcome = if *done {
                        "done".to_string()
                    } else if *progress {
                        "progress".to_string()
                    } else {
                        format!("no progress ({no_progress_streak} in a row)")
                    };
                    c.iterations.push(format!(
                        "{}: {outcome}",
                        crate::report::iteration_text(
                            *iteration,
                            *max_iterations,
                            *tasks_done,
                            *tasks_total
                        )
                    ));
                    // The attempt that passed this iteration is no rerun; its output
                    // is the iteration's own, in its log.
                    if !*done && let Some(a) = c.attempts.last_mut() {
                        a.output = Tail::default();
                    }
                }
            }
            EventKind::HookFinished { .. } | EventKind::IterationStarted { .. } => {}
            // A new cycle: the case ends with what the restarted spec does next.
            EventKind::SpecRestarted { spec, .. } => {
                if let Some(c) = self.case(spec) {
                    c.end = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn feed(r: &mut JunitReport, kind: EventKind) {
        r.event(&Event::now(kind));
    }

    fn attempt(r: &mut JunitReport, spec: &str, n: u32, code: Option<i32>, out: &str) {
        feed(
            r,
            EventKind::AttemptStarted {
                spec: spec.into(),
                attempt: n,
                retry: n - 1,
                max_retries: 3,
                log: PathBuf::from(format!("{spec}/task_{n}.log")),
                pid: None,
                job_id: None,
                live: None,
                log_number: n,
                started: None,
            },
        );
        feed(
            r,
            EventKind::AttemptFinished {
                spec: spec.into(),
                attempt: n,
                exit_code: code,
                signal: None,
                reason: match code {
                    Some(0) => None,
                    Some(c) => Some(format!("exit {c}")),
                    None => Some("could not start: not found".into()),
                },
                duration: Duration::from_millis(1500),
                log: PathBuf::from(format!("{spec}/task_{n}.log")),
                tail: Tail::from(out.as_bytes()),
            },
        );
    }

    fn finish(r: &mut JunitReport, spec: &str, status: Status, reason: Option<&str>) {
        feed(
            r,
            EventKind::SpecFinished {
                spec: spec.into(),
                status,
                attempts: 0,
                retries: 0,
                reason: reason.map(str::to_string),
                log: None,
                iterations: None,
                tail: Tail::default(),
            },
        );
    }

    fn sample() -> JunitReport {
        let mut r = JunitReport::new(
            "spec-runner.toml",
            [
                ("flaky".to_string(), Planned::Run),
                ("broken".to_string(), Planned::Run),
                ("after".to_string(), Planned::Run),
                ("old".to_string(), Planned::UpToDate),
                ("never".to_string(), Planned::Run),
                ("missing".to_string(), Planned::Run),
            ],
        );
        feed(
            &mut r,
            EventKind::RunStarted {
                run_id: "RID".into(),
                specs: 4,
                up_to_date: 1,
                jobs: 2,
            },
        );
        attempt(&mut r, "flaky", 1, Some(1), "first \x1b[31mred\x1b[0m\n");
        attempt(&mut r, "flaky", 2, Some(0), "second ok\n");
        finish(&mut r, "flaky", Status::Succeeded, None);
        attempt(&mut r, "broken", 1, Some(2), "b1\n");
        attempt(&mut r, "broken", 2, Some(3), "b2\n");
        finish(
            &mut r,
            "broken",
            Status::Failed,
            Some("exit 3; no more retries"),
        );
        finish(
            &mut r,
            "after",
            Status::Skipped,
            Some("dependency `broken` failed"),
        );
        attempt(&mut r, "missing", 1, None, "");
        finish(
            &mut r,
            "missing",
            Status::Failed,
            Some("could not start: not found"),
        );
        r
    }

    /// `(element, message)` of each child of the `testcase` named `name`.
    fn children(xml: &str, name: &str) -> Vec<(String, String)> {
        let doc = roxmltree::Document::parse(xml).unwrap();
        let case = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap_or_else(|| panic!("no testcase {name}:\n{xml}"));
        assert_eq!(case.attribute("classname"), Some("spec-runner.toml"));
        case.children()
            .filter(roxmltree::Node::is_element)
            .map(|n| {
                let text = match n.tag_name().name() {
                    "system-out" => n.text().unwrap_or_default(),
                    _ => n.attribute("message").unwrap_or_default(),
                };
                (n.tag_name().name().to_string(), text.to_string())
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn the_report_records_every_attempt_in_the_surefire_shape() {
        let report = sample().render();
        assert_eq!(
            (report.tests, report.failures, report.errors, report.skipped),
            (6, 1, 1, 3)
        );
        let xml = report.to_string().unwrap();
        assert_eq!(
            children(&xml, "flaky"),
            pairs(&[("flakyFailure", "exit 1"), ("system-out", "second ok\n")])
        );
        assert_eq!(
            children(&xml, "broken"),
            pairs(&[
                ("failure", "exit 3; no more retries"),
                ("rerunFailure", "exit 2"),
                ("system-out", "b2\n"),
            ])
        );
        assert_eq!(
            children(&xml, "after"),
            pairs(&[("skipped", "dependency `broken` failed")])
        );
        assert_eq!(
            children(&xml, "old"),
            pairs(&[(
                "skipped",
                "up to date: succeeded in an earlier run, unchanged since"
            )])
        );
        assert_eq!(
            children(&xml, "never"),
            pairs(&[("skipped", "not run: the run ended before it started")])
        );
        assert_eq!(
            children(&xml, "missing"),
            pairs(&[("error", "could not start: not found")])
        );
        assert!(
            xml.contains(r#"<property name="run_id" value="RID"/>"#),
            "{xml}"
        );
        // The earlier attempt's own output, without the escape codes XML cannot hold.
        assert!(xml.contains("first red\n"), "{xml}");
        assert!(!xml.contains('\x1b'), "{xml}");
    }

    #[test]
    fn the_report_stays_well_formed_whatever_the_output_holds() {
        // U+FFFE and U+FFFF are not XML characters; neither are the C0 controls.
        let nasty = "a\u{FFFE}b\u{FFFF}c\u{0}d\u{1b}[31me\u{7}\u{b}\n";
        let mut r = JunitReport::new("spec\u{FFFF}.toml", [("s".to_string(), Planned::Run)]);
        attempt(&mut r, "s", 1, Some(1), nasty);
        attempt(&mut r, "s", 2, Some(1), nasty);
        finish(&mut r, "s", Status::Failed, Some("exit 1 \u{FFFE}"));
        let xml = r.to_xml().unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}:\n{xml}"));
        let out = doc
            .descendants()
            .find(|n| n.has_tag_name("system-out"))
            .and_then(|n| n.text())
            .unwrap();
        assert_eq!(out, "a\u{FFFD}b\u{FFFD}cdred\n".replace("red", "e"));
        assert!(!xml.contains(['\u{FFFE}', '\u{FFFF}']));
    }

    #[test]
    fn the_root_element_has_no_skipped_count() {
        let xml = sample().to_xml().unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("skipped"), None, "{xml}");
        assert_eq!(root.attribute("tests"), Some("6"), "{xml}");
        assert_eq!(root.attribute("failures"), Some("1"), "{xml}");
        let suite = root.first_element_child().unwrap();
        assert_eq!(suite.attribute("skipped"), Some("3"), "{xml}");
    }

    #[test]
    fn xml_chars_keeps_every_xml_character_and_only_those() {
        for c in [
            '\t',
            '\n',
            '\r',
            ' ',
            'é',
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{10000}',
            '\u{10FFFF}',
        ] {
            assert_eq!(xml_chars(&c.to_string()), c.to_string(), "{c:?}");
        }
        for c in ['\u{0}', '\u{8}', '\u{B}', '\u{1F}', '\u{FFFE}', '\u{FFFF}'] {
            assert_eq!(xml_chars(&c.to_string()), "\u{FFFD}", "{c:?}");
        }
    }

    /// The text of the verdict element of testcase `name`.
    fn verdict_text(xml: &str, name: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        doc.descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap()
            .children()
            .find(|n| ["failure", "error", "skipped"].contains(&n.tag_name().name()))
            .unwrap()
            .text()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn a_failure_carries_its_reason_and_log_tail_as_text_for_gitlab() {
        let xml = sample().to_xml().unwrap();
        assert_eq!(
            verdict_text(&xml, "broken"),
            "exit 3; no more retries\n\nlast lines of attempt 2:\nb2\nlog: broken/task_2.log\n"
        );
        assert_eq!(
            verdict_text(&xml, "missing"),
            "could not start: not found\nlog: missing/task_1.log\n"
        );
        // Skipped cases have a time of 0, like the ones that ran have theirs.
        let doc = roxmltree::Document::parse(&xml).unwrap();
        for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
            let skipped = case.children().any(|n| n.has_tag_name("skipped"));
            let time = case.attribute("time");
            if skipped {
                assert_eq!(time, Some("0.000"), "{xml}");
            } else {
                assert_eq!(time, Some("1.500"), "{xml}");
            }
        }
        // Reruns: a type always (the XSD requires one), start and time in the text.
        let rerun = doc
            .descendants()
            .find(|n| n.has_tag_name("rerunFailure"))
            .unwrap();
        assert_eq!(rerun.attribute("type"), Some("exit 2"));
        let text = rerun.text().unwrap().trim_end();
        assert!(
            text.starts_with("attempt 1: exit 2, after 1.500 s, started ")
                && text.ends_with("; log: broken/task_1.log"),
            "{text}"
        );
    }

    #[test]
    fn earlier_attempts_keep_only_their_last_lines() {
        let long: Tail = Tail::from(format!("{}\nlast line\n", "x".repeat(20_000)).as_bytes());
        assert_eq!(&*shorten(&long, 15), b"last line\n");
        let short: Tail = Tail::from(&b"ab\n"[..]);
        assert_eq!(&*shorten(&short, 15), b"ab\n");
    }

    #[test]
    fn write_replaces_the_file_and_creates_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports/junit.xml");
        let r = sample();
        r.write(&path).unwrap();
        r.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<?xml"), "{text}");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("junit.xml")]);
    }
}
