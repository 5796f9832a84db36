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
        let mut report = Report::new("spec-runner");
        if let Some(t) = self.started {
            report.set_timestamp(t);
        }
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
            return named(c, &self.suite, status);
        };
        // The case is the attempt that ended the spec; every other attempt was
        // followed by a retry.
        let (last, earlier) = match c.attempts.split_last() {
            Some((last, earlier)) if !c.retry_pending => (Some(last), earlier),
            _ => (None, &c.attempts[..]),
        };
        let mut tc_status = match status {
            Status::Succeeded => TestCaseStatus::success(),
            Status::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(reason.as_deref().unwrap_or("skipped"));
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
        // Success keeps them as flakyFailure, non-success as rerunFailure (the
        // default kind), skipped drops them.
        tc_status.add_reruns(earlier.iter().map(Attempt::rerun));
        let mut tc = named(c, &self.suite, tc_status);
        if let Some(last) = last {
            if let Some(t) = last.started {
                tc.set_timestamp(t);
            }
            tc.set_time(last.duration);
            if !last.output.is_empty() {
                tc.set_system_out_lossy(&*last.output);
            }
        }
        tc
    }

    /// Writes the report to `path` atomically (a temporary file in the same folder,
    /// then a rename), creating the folder if needed.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let xml = self.render().to_string().map_err(std::io::Error::other)?;
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
        if let Some(t) = self.started {
            r.set_timestamp(t);
        }
        r.set_time(self.duration);
        r.set_message(self.reason.as_deref().unwrap_or("failed"));
        if let Some(ty) = self.ty() {
            r.set_type(ty);
        }
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
            EventKind::AttemptStarted { spec, .. } => {
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
                exit_code,
                signal,
                reason,
                duration,
                tail,
                ..
            } => {
                if let Some(c) = self.case(spec) {
                    // Only the last attempt keeps its whole tail: bounded memory
                    // however many attempts a long run makes.
                    if let Some(prev) = c.attempts.last_mut() {
                        prev.output = shorten(&prev.output, EARLIER_OUTPUT_BYTES);
                    }
                    let started = c.running_since.take();
                    c.attempts.push(Attempt {
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
            EventKind::HookFinished { .. }
            | EventKind::IterationStarted { .. }
            | EventKind::IterationFinished { .. } => {}
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
