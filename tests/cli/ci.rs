//! The CI face of `apply`: the JUnit report, GitHub Actions annotations, plain and
//! coloured output, `--quiet`, `-v`, the `on_exhausted` hook, completions and man page.

use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

/// One flaky spec (passes on its third attempt), one that fails for good after two
/// retries, and one skipped because it depends on the failing one.
fn flaky_failed_skipped() -> Test {
    Test::with_pipeline(&format!(
        r#"
retry_max_retries = 2
retry_backoff_seconds = 0
jobs = 1
[specs.flaky]
command = ["{}", "counter", "2"]
[specs.broken]
command = 'echo "broken on attempt $SPEC_RUNNER_ATTEMPT"; echo "::set-output name=x::injected"; exit 3'
[specs.later]
command = "true"
depends_on = ["broken"]
"#,
        fixture("fail_then_pass.sh")
    ))
}

/// Where an element of a JUnit report may appear: its allowed and required attributes
/// and allowed child elements, space-separated; `ordered` when the children must come
/// in the listed order (an `xs:sequence`), each at most once.
struct Shape {
    attrs: &'static str,
    required: &'static str,
    children: &'static str,
    ordered: bool,
}

/// The rules of Jenkins xunit's `junit-10.xsd` (the schema its JUnit input is validated
/// against, and pytest's own output passes), element by element, restated here.
fn junit_shape(element: &str) -> Option<Shape> {
    let shape = |attrs, required, children| Shape {
        attrs,
        required,
        children,
        ordered: false,
    };
    Some(match element {
        "testsuites" => shape("name time tests failures errors", "", "testsuite"),
        "testsuite" => shape(
            "name tests failures errors group time skipped timestamp hostname id package \
             file log url",
            "name tests failures errors",
            "testsuite properties testcase system-out system-err",
        ),
        "properties" => shape("", "", "property"),
        "property" => shape("name value", "name value", ""),
        "testcase" => shape(
            "name time classname group",
            "name",
            "skipped error failure rerunFailure rerunError flakyFailure flakyError \
             system-out system-err",
        ),
        "failure" | "error" | "skipped" => shape("type message", "", ""),
        "rerunFailure" | "rerunError" | "flakyFailure" | "flakyError" => Shape {
            ordered: true,
            ..shape("message type", "type", "stackTrace system-out system-err")
        },
        "stackTrace" | "system-out" | "system-err" => shape("", "", ""),
        _ => return None,
    })
}

fn listed(list: &str, name: &str) -> bool {
    list.split_whitespace().any(|n| n == name)
}

/// Checks `xml` against [`junit_shape`]: every element in its place, only declared
/// attributes, required ones present, times in the XSD's `SUREFIRE_TIME` pattern, one
/// verdict per case, counts that add up. Returns the document for further checks.
fn check_junit_shape(xml: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not XML ({e}):\n{xml}"));
    let surefire_time =
        regex::Regex::new(r"^(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?$").unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    for node in root.descendants().filter(roxmltree::Node::is_element) {
        let name = node.tag_name().name();
        let shape = junit_shape(name).unwrap_or_else(|| panic!("unknown <{name}>:\n{xml}"));
        for a in node.attributes() {
            assert!(
                listed(shape.attrs, a.name()),
                "<{name} {}>:\n{xml}",
                a.name()
            );
            match a.name() {
                "tests" | "failures" | "errors" | "skipped" | "disabled" => {
                    assert!(a.value().parse::<u64>().is_ok(), "{name}@{}", a.name());
                }
                "time" => {
                    assert!(a.value().parse::<f64>().is_ok_and(|t| t >= 0.0));
                    assert!(
                        surefire_time.is_match(a.value()),
                        "{name}@time {}",
                        a.value()
                    );
                }
                "timestamp" => {
                    assert!(chrono::DateTime::parse_from_rfc3339(a.value()).is_ok());
                }
                _ => {}
            }
        }
        for r in shape.required.split_whitespace() {
            assert!(node.has_attribute(r), "<{name}> lacks {r}:\n{xml}");
        }
        let mut last = None;
        for child in node.children().filter(roxmltree::Node::is_element) {
            let c = child.tag_name().name();
            assert!(listed(shape.children, c), "<{c}> inside <{name}>:\n{xml}");
            if shape.ordered {
                let at = shape.children.split_whitespace().position(|n| n == c);
                assert!(at > last, "<{c}> out of order in <{name}>:\n{xml}");
                last = at;
            }
        }
        if name == "testcase" {
            let kinds: Vec<&str> = node.children().map(|c| c.tag_name().name()).collect();
            let verdicts: Vec<&str> = kinds
                .iter()
                .copied()
                .filter(|c| listed("failure error skipped", c))
                .collect();
            assert!(verdicts.len() <= 1, "{verdicts:?}:\n{xml}");
            if kinds.iter().any(|k| k.starts_with("flaky")) {
                assert!(verdicts.is_empty(), "flaky runs only in a pass:\n{xml}");
            }
            if kinds.iter().any(|k| k.starts_with("rerun")) {
                assert!(verdicts == ["failure"] || verdicts == ["error"], "{xml}");
            }
            assert!(node.has_attribute("time"), "every case has a time:\n{xml}");
        }
    }
    for suite in root.children().filter(|n| n.has_tag_name("testsuite")) {
        let cases: Vec<_> = suite
            .children()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        let tests = cases.len().to_string();
        assert_eq!(suite.attribute("tests"), Some(tests.as_str()));
        for (count, verdict) in [
            ("failures", "failure"),
            ("errors", "error"),
            ("skipped", "skipped"),
        ] {
            let n = cases
                .iter()
                .filter(|c| c.children().any(|n| n.has_tag_name(verdict)))
                .count()
                .to_string();
            assert_eq!(suite.attribute(count), Some(n.as_str()), "{count}:\n{xml}");
        }
    }
    doc
}

/// The elements inside the testcase `spec`, with their `message` (or text).
fn case_children(doc: &roxmltree::Document, spec: &str) -> Vec<(String, String)> {
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(spec))
        .unwrap_or_else(|| panic!("no testcase `{spec}`"));
    case.children()
        .filter(roxmltree::Node::is_element)
        .map(|n| {
            let text = if n.tag_name().name() == "system-out" {
                n.text().unwrap_or_default()
            } else {
                n.attribute("message").unwrap_or_default()
            };
            (n.tag_name().name().to_string(), text.to_string())
        })
        .collect()
}

/// The `system-out` of each element of `kind` in testcase `spec`.
fn outputs_of(doc: &roxmltree::Document, spec: &str, kind: &str) -> Vec<String> {
    doc.descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(spec))
        .unwrap()
        .children()
        .filter(|n| n.has_tag_name(kind))
        .map(|n| {
            n.children()
                .find(|c| c.has_tag_name("system-out"))
                .and_then(|c| c.text())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn names(list: &[(String, String)]) -> Vec<&str> {
    list.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn junit_records_a_flaky_a_failed_and_a_skipped_spec_with_every_attempt() {
    let t = flaky_failed_skipped();
    let run = run_in(&t, &["apply", "--junit", "reports/junit.xml"]);
    run.code(1);
    let xml = t.read("reports/junit.xml");
    let doc = check_junit_shape(&xml);
    let suites = doc.root_element();
    assert_eq!(
        ["tests", "failures", "errors"].map(|a| suites.attribute(a)),
        [Some("3"), Some("1"), Some("0")]
    );
    let suite = suites.first_element_child().unwrap();
    assert_eq!(suite.attribute("skipped"), Some("1"));

    let flaky = case_children(&doc, "flaky");
    assert_eq!(
        names(&flaky),
        ["flakyFailure", "flakyFailure", "system-out"],
        "{xml}"
    );
    assert_eq!(flaky[0].1, "exit 1");
    assert_eq!(
        outputs_of(&doc, "flaky", "flakyFailure"),
        ["attempt 1: failing\n", "attempt 2: failing\n"]
    );
    assert_eq!(flaky[2].1, "attempt 3: passing\n");

    let broken = case_children(&doc, "broken");
    assert_eq!(
        names(&broken),
        ["failure", "rerunFailure", "rerunFailure", "system-out"],
        "{xml}"
    );
    assert!(broken[0].1.starts_with("exit 3"), "{}", broken[0].1);
    assert_eq!(broken[1].1, "exit 3");
    let reruns = outputs_of(&doc, "broken", "rerunFailure");
    assert!(reruns[0].starts_with("broken on attempt 1"), "{reruns:?}");
    assert!(reruns[1].starts_with("broken on attempt 2"), "{reruns:?}");
    assert!(broken[3].1.starts_with("broken on attempt 3"), "{xml}");

    let later = case_children(&doc, "later");
    assert_eq!(names(&later), ["skipped"]);
    assert!(later[0].1.contains("broken"), "{}", later[0].1);

    let left: Vec<_> = std::fs::read_dir(t.path().join("reports"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["junit.xml"], "no temporary file is left behind");
}

#[test]
fn junit_stays_readable_after_output_xml_cannot_hold_and_shows_why_a_spec_failed() {
    // U+FFFE, U+FFFF (as UTF-8), a NUL, an escape and a vertical tab: none is an XML
    // character.
    let t = Test::with_pipeline(
        r#"
retry_max_retries = 0
[specs.noisy]
command = 'printf "before \357\277\276 \357\277\277 \000 \033[1m \013 after\n"; echo the real error; exit 5'
[specs.skipped]
command = "true"
depends_on = ["noisy"]
"#,
    );
    run_in(&t, &["apply", "--junit", "junit.xml"]).code(1);
    let xml = t.read("junit.xml");
    let doc = check_junit_shape(&xml);
    let case = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(name))
            .unwrap()
    };
    // GitLab shows the failure's text and nothing else of a failed case: the reason,
    // the end of the log and where the log is.
    let failure = case("noisy")
        .children()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    let text = failure.text().unwrap();
    assert!(text.starts_with("exit 5"), "{text}");
    assert!(text.contains("before \u{FFFD} \u{FFFD}"), "{text:?}");
    assert!(text.contains("the real error\n"), "{text}");
    assert!(
        text.contains("log: .spec-runner/logs/noisy/task_1.log"),
        "{text}"
    );
    assert_eq!(case("skipped").attribute("time"), Some("0.000"));
}

#[test]
fn junit_path_from_the_pipeline_is_written_even_when_the_run_is_interrupted() {
    let t = Test::with_pipeline(
        r#"
junit_path = "out/report.xml"
retry_max_retries = 3
retry_backoff_seconds = 30
[specs.waits]
command = 'echo crashing; exit 1'
"#,
    );
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "retry_scheduled");
    bg.signal(Signal::INT);
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    let xml = t.read("out/report.xml");
    let doc = check_junit_shape(&xml);
    let waits = case_children(&doc, "waits");
    assert_eq!(names(&waits), ["error", "rerunFailure"], "{xml}");
    assert!(waits[0].1.contains("stopped"), "{xml}");
}

#[test]
fn a_junit_file_that_cannot_be_written_is_an_error() {
    let t = Test::with_pipeline("[specs.ok]\ncommand = \"true\"\n");
    t.write("blocker", "a file, not a folder");
    let run = run_in(&t, &["apply", "--junit", "blocker/junit.xml"]);
    run.code(2).stderr_has("cannot write the JUnit report");
}

#[test]
fn github_actions_gets_an_error_with_the_log_in_a_group_and_a_flaky_warning() {
    let t = flaky_failed_skipped().env("GITHUB_ACTIONS", "true");
    let run = run_in(&t, &["apply"]);
    run.code(1);
    let err = &run.stderr;
    run.stderr_has("::error title=spec `broken` failed::exit 3")
        .stderr_has("::warning title=spec `flaky` is flaky::passed on attempt 3 after 2 failed: exit 1; exit 1");
    // The log's tail sits in a group, inside a section where workflow commands are
    // off: the spec's own `::set-output` is shown, not obeyed.
    let group = err.find("::group::broken").expect("a group");
    let end = err[group..].find("::endgroup::").expect("an endgroup") + group;
    let inside = &err[group..end];
    assert!(inside.contains("broken on attempt 3"), "{inside}");
    let stop = inside
        .lines()
        .find_map(|l| l.strip_prefix("::stop-commands::"))
        .expect("stop-commands");
    let injected = inside.find("::set-output").expect("the output line");
    assert!(inside.find("::stop-commands::").unwrap() < injected);
    assert!(inside.find(&format!("::{stop}::")).unwrap() > injected);
    assert_eq!(err.matches("::error").count(), 1, "{err}");
    // The log's end is shown once: in the group, not again under the FAILED line
    // (which still names the log).
    assert_eq!(err.matches("broken on attempt 3").count(), 1, "{err}");
    run.stderr_has("log: .spec-runner/logs/broken/task_3.log");

    let plain = run_in(&flaky_failed_skipped(), &["apply"]);
    assert_eq!(plain.stderr.matches("broken on attempt 3").count(), 1);
    assert!(
        !plain.stderr.contains("::error") && !plain.stderr.contains("::warning"),
        "annotations only in GitHub Actions:\n{}",
        plain.stderr
    );
}

#[test]
fn a_reason_with_line_breaks_cannot_issue_workflow_commands() {
    // A program name from the pipeline file with a line break and a command after it:
    // the reason that names it must stay on its event's line.
    // A log folder with one too: it shows in every RUNNING line.
    let t = Test::with_pipeline(
        "retry_log_dir = \"logs\\n::error::from the folder\"\n\
         [specs.odd]\ncommand = [\"no-such\\r\\n::error::injected\"]\n",
    )
    .env("GITHUB_ACTIONS", "true");
    let run = run_in(&t, &["apply"]);
    run.code(1);
    let mut inside = None;
    for l in run.stderr.lines() {
        if let Some(token) = l.strip_prefix("::stop-commands::") {
            inside = Some(format!("::{token}::"));
            continue;
        }
        if inside.as_deref() == Some(l) {
            inside = None;
            continue;
        }
        if inside.is_none() {
            assert!(!l.starts_with("::error::"), "{l:?} in\n{}", run.stderr);
            assert!(!l.contains('\r'), "{l:?}");
        }
    }
    assert!(
        run.stderr
            .contains("log logs·::error::from the folder/odd/task_1.log"),
        "{}",
        run.stderr
    );
    let annotations = run.stderr.lines().filter(|l| l.starts_with("::error"));
    assert_eq!(annotations.count(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("odd: FAILED: ") && l.contains("no-such··::error::injected")),
        "{}",
        run.stderr
    );
}

/// Whether `s` holds an SGR (colour) escape sequence.
fn has_colour(s: &str) -> bool {
    regex::Regex::new("\x1b\\[[0-9;]*m").unwrap().is_match(s)
}

/// Runs `args` in `t` with stderr on a pseudo-terminal; returns what it showed there.
fn on_terminal(t: &Test, args: &[&str], extra_env: &[(&str, &str)]) -> (Option<i32>, String) {
    let (master, slave) = terminal(None);
    let mut cmd = t.command();
    cmd.args(args)
        .env("TERM", "xterm-256color")
        .stdout(std::process::Stdio::null())
        .stderr(slave);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start spec-runner");
    // The child holds the only other end now: reading ends (EIO) once it exits.
    drop(cmd);
    let shown = Drain::start(master);
    let status = child.wait().expect("wait");
    (status.code(), shown.all(Duration::from_secs(60)))
}

#[test]
fn colour_on_a_terminal_unless_no_color_or_never_and_never_off_a_terminal() {
    let pipeline = "[specs.bad]\ncommand = \"exit 4\"\nretry_max_retries = 0\n";
    let t = Test::with_pipeline(pipeline);
    let plain = ["apply", "--fresh", "--progress", "plain"];

    let (code, shown) = on_terminal(&t, &plain, &[]);
    assert_eq!(code, Some(1));
    assert!(has_colour(&shown), "colour on a terminal:\n{shown:?}");
    assert!(shown.contains("FAILED"), "{shown:?}");

    let (_, shown) = on_terminal(&t, &plain, &[("NO_COLOR", "1")]);
    assert!(!has_colour(&shown), "NO_COLOR:\n{shown:?}");
    assert!(shown.contains("FAILED"), "{shown:?}");

    let (_, shown) = on_terminal(&t, &[&plain[..], &["--color", "never"]].concat(), &[]);
    assert!(!has_colour(&shown), "--color never:\n{shown:?}");

    // Bars on a terminal, but NO_COLOR still means no colour in them.
    let (_, shown) = on_terminal(&t, &["apply", "--fresh"], &[("NO_COLOR", "1")]);
    assert!(!has_colour(&shown), "bars with NO_COLOR:\n{shown:?}");

    // Off a terminal: plain lines, no escape codes at all, unless forced.
    let run = run_in(&t, &["apply", "--fresh"]);
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.contains("bad: FAILED")),
        "{}",
        run.stderr
    );
    let run = run_in(&t, &["apply", "--fresh", "--color", "always"]);
    assert!(has_colour(&run.stderr), "{:?}", run.stderr);
    let run = t
        .command()
        .args(["apply", "--fresh"])
        .env("SPEC_RUNNER_COLOR", "always")
        .output()
        .unwrap();
    assert!(has_colour(&String::from_utf8_lossy(&run.stderr)));
}

#[test]
fn a_dumb_terminal_gets_plain_lines_with_the_failure() {
    // indicatif draws nothing where `TERM` is `dumb` or unset: bars there would hide
    // the FAILED line, the log tail and the log's path.
    let t = Test::with_pipeline(
        "[specs.bad]\ncommand = 'echo the cause; exit 4'\nretry_max_retries = 0\n",
    );
    for progress in ["auto", "bar"] {
        let args = ["apply", "--fresh", "--progress", progress];
        let (code, shown) = on_terminal(&t, &args, &[("TERM", "dumb")]);
        assert_eq!(code, Some(1));
        assert!(
            shown.contains("bad: FAILED: exit 4"),
            "{progress}: {shown:?}"
        );
        assert!(shown.contains("| the cause"), "{progress}: {shown:?}");
        assert!(
            shown.contains("log: .spec-runner/logs/bad/task_"),
            "{shown:?}"
        );
        assert!(
            !has_colour(&shown),
            "no colour on a dumb terminal: {shown:?}"
        );
    }
}

#[test]
fn the_colour_choice_reaches_clap_s_own_help_and_usage_errors() {
    let t = Test::new();
    // Usage errors go to stderr, here a terminal: coloured unless told otherwise.
    let (code, shown) = on_terminal(&t, &["apply", "--bogus"], &[]);
    assert_eq!(code, Some(2));
    assert!(has_colour(&shown), "a terminal gets colour: {shown:?}");
    for args in [
        &["--color", "never", "apply", "--bogus"][..],
        &["apply", "--bogus", "--color=never"][..],
    ] {
        let (code, shown) = on_terminal(&t, args, &[]);
        assert_eq!(code, Some(2));
        assert!(shown.contains("--bogus"), "{shown:?}");
        assert!(!has_colour(&shown), "{args:?}: {shown:?}");
    }
    let (_, shown) = on_terminal(&t, &["apply", "--bogus"], &[("SPEC_RUNNER_COLOR", "never")]);
    assert!(!has_colour(&shown), "SPEC_RUNNER_COLOR=never: {shown:?}");
    // Help goes to stdout, here a pipe: plain, unless forced.
    let run = run_in(&t, &["--help"]);
    assert!(!has_colour(&run.stdout), "{}", run.stdout);
    let run = run_in(&t, &["apply", "--help", "--color", "always"]);
    run.code(0);
    assert!(has_colour(&run.stdout), "{}", run.stdout);
    let run = run_in(&t, &["--color", "always", "apply", "--bogus"]);
    assert!(has_colour(&run.stderr), "{}", run.stderr);
}

#[test]
fn quiet_prints_only_failures_and_the_summary() {
    let t = flaky_failed_skipped();
    let run = run_in(&t, &["apply", "--quiet"]);
    run.code(1);
    // Each line without its timestamp; the log tail under a failure is indented.
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.starts_with("    "))
        .map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest))
        .collect();
    assert_eq!(lines.len(), 3, "{}", run.stderr);
    assert_eq!(lines[0], "broken: FAILED: exit 3; retries exhausted (2/2)");
    assert_eq!(lines[1], "later: SKIPPED: dependency `broken` failed");
    assert!(
        lines[2].starts_with(
            "1 succeeded (1 flaky: flaky), 1 failed (broken), 1 skipped (later), 0 stopped; 4 retries; "
        ),
        "{}",
        lines[2]
    );
    run.stderr_has("    | broken on attempt 3");
}

#[test]
fn verbose_turns_on_diagnostics_on_stderr() {
    let t = Test::with_pipeline(
        "retry_backoff_seconds = 0\nretry_max_retries = 1\n[specs.once]\ncommand = \"exit 1\"\n",
    );
    let quiet = run_in(&t, &["apply"]);
    assert!(
        !quiet.stderr.contains("loaded the pipeline"),
        "{}",
        quiet.stderr
    );
    let v = run_in(&t, &["-v", "apply", "--fresh"]);
    v.code(1)
        .stderr_has("INFO")
        .stderr_has("loaded the pipeline")
        .stderr_has("decided after a failed attempt");
    assert!(!v.stderr.contains("starting attempt"), "-v is not -vv");
    run_in(&t, &["apply", "--fresh", "-vv"])
        .code(1)
        .stderr_has("DEBUG")
        .stderr_has("starting attempt");
}

/// A hook that records its environment and working folder in `hooks.txt`, after a
/// pause: the run must wait for it.
const RECORDING_HOOK: &str = r#"on_exhausted = 'sleep 0.3; printf "%s|%s|%s|%s|%s\n" "$SPEC_RUNNER_SPEC" "$SPEC_RUNNER_REASON" "$SPEC_RUNNER_LOG" "$SPEC_RUNNER_ATTEMPTS" "$(pwd)" >> hooks.txt; echo notified'"#;

#[test]
fn on_exhausted_runs_once_per_spec_that_fails_for_good_with_its_variables() {
    let t = Test::with_pipeline(&format!(
        r#"
{RECORDING_HOOK}
retry_max_retries = 1
retry_backoff_seconds = 0
[specs.crashes]
command = "exit 3"
[specs.nocwd]
command = "true"
cwd = "no/such/folder"
[specs.flaky]
command = '[ "$SPEC_RUNNER_ATTEMPT" = 2 ]'
[specs.fine]
command = "true"
"#
    ));
    let dir = t.path().canonicalize().unwrap();
    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(1);
    let ev = events(&run.stdout);
    let mut lines: Vec<Vec<String>> = t
        .read("hooks.txt")
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect();
    lines.sort();
    assert_eq!(lines.len(), 2, "one run per failed spec: {lines:?}");
    let crashes = &lines[0];
    assert_eq!(crashes[0], "crashes");
    assert!(crashes[1].starts_with("exit 3"), "{crashes:?}");
    assert!(
        crashes[2].ends_with(".spec-runner/logs/crashes/task_2.log"),
        "{crashes:?}"
    );
    assert_eq!(crashes[3], "2");
    assert_eq!(Path::new(&crashes[4]), dir, "runs in the pipeline's folder");
    let nocwd = &lines[1];
    assert_eq!(nocwd[0], "nocwd");
    assert!(nocwd[1].contains("could not start"), "{nocwd:?}");
    assert_eq!(nocwd[3], "1");

    let hooks = of(&ev, "hook_finished", None);
    assert_eq!(hooks.len(), 2, "{ev:#?}");
    for h in &hooks {
        assert_eq!(h["hook"], "on_exhausted");
        assert_eq!(h["exit_code"], 0);
        assert_eq!(h["reason"], Value::Null);
        let log = h["log"].as_str().unwrap();
        assert!(log.ends_with("on_exhausted_1.log"), "{log}");
        assert_eq!(std::fs::read_to_string(log).unwrap(), "notified\n");
    }
    // Hooks end before the run does, and are not specs.
    assert_eq!(ev.last().unwrap()["event"], "run_finished");
    assert_eq!(ev.last().unwrap()["failed"], 2);
}

#[test]
fn a_failing_hook_is_reported_but_does_not_fail_the_run_again() {
    let t = Test::with_pipeline(
        r#"
on_exhausted = "echo cannot notify; exit 5"
retry_max_retries = 0
[specs.fails]
command = "exit 1"
[specs.passes]
command = "true"
"#,
    );
    let run = run_in(&t, &["apply"]);
    run.code(1)
        .stderr_has("fails: on_exhausted FAILED: exit 5")
        .stderr_has("1 succeeded, 1 failed");
    let again = run_in(&t, &["apply", "passes", "--fresh", "--format", "json"]);
    again.code(0);
    assert!(of(&events(&again.stdout), "hook_finished", None).is_empty());
    // A second failure of the same spec logs its hook under the next number.
    let run = run_in(&t, &["apply", "fails", "--format", "json"]);
    run.code(1);
    let ev = events(&run.stdout);
    let hook = of(&ev, "hook_finished", Some("fails"));
    assert_eq!(hook[0]["exit_code"], 5);
    assert_eq!(hook[0]["reason"], "exit 5");
    assert!(
        hook[0]["log"]
            .as_str()
            .unwrap()
            .ends_with("on_exhausted_2.log"),
        "{}",
        hook[0]
    );
}

#[test]
fn ctrl_c_ends_a_running_hook_like_an_attempt() {
    let t = Test::with_pipeline(
        r#"
on_exhausted = 'echo $$ > hookpid; exec sleep 1000'
retry_max_retries = 0
terminate_grace_seconds = 1
[specs.fails]
command = "exit 1"
"#,
    );
    let pidfile = t.path().join("hookpid");
    let mut bg = Background::apply(&t);
    bg.wait_for(Duration::from_secs(30), |e| e["event"] == "spec_finished");
    wait_pid(&pidfile);
    let pids = read_pids(&pidfile);
    assert_eq!(pids.len(), 1, "the hook started");
    bg.signal(Signal::INT);
    let (code, _) = bg.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(130));
    assert!(
        wait_gone(&pids, Duration::from_secs(2)).is_empty(),
        "hook outlived Ctrl-C"
    );
    let ev = bg.rest();
    let hook = of(&ev, "hook_finished", Some("fails"));
    assert_eq!(hook[0]["reason"], "stopped", "{ev:#?}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definition() {
    let t = Test::new();
    for (shell, marker) in [
        ("bash", "complete -F _spec__runner"),
        ("zsh", "#compdef spec-runner"),
        ("fish", "complete -c spec-runner"),
    ] {
        let run = run_in(&t, &["completions", shell]);
        run.code(0).stdout_has(marker).stdout_has("apply");
    }
    run_in(&t, &["completions", "tcsh"]).code(2);
    run_in(&t, &["man", "--dir", "man1"]).code(0);
    for page in ["spec-runner.1", "spec-runner-apply.1", "spec-runner-man.1"] {
        assert!(t.path().join("man1").join(page).is_file(), "{page}");
    }
    assert!(
        t.read("man1/spec-runner.1")
            .contains("spec\\-runner\\-apply(1)")
    );
}

#[test]
fn the_man_page_is_complete_on_its_own_and_keeps_examples_as_written() {
    let t = Test::new();
    let run = run_in(&t, &["man"]);
    run.code(0);
    let page = &run.stdout;
    // `.TH title section date source manual`: a date in the date field, the version
    // in the source field.
    let th = page.lines().find(|l| l.starts_with(".TH ")).expect(".TH");
    let re = regex::Regex::new(
        r#"^\.TH SPEC-RUNNER 1 (\d{4}-\d{2}-\d{2}) "spec\\-runner (\S+)" "User Commands"$"#,
    )
    .unwrap();
    let caps = re.captures(th).unwrap_or_else(|| panic!("{th}"));
    assert!(
        chrono::NaiveDate::parse_from_str(&caps[1], "%Y-%m-%d").is_ok(),
        "{th}"
    );
    assert_eq!(&caps[2], env!("CARGO_PKG_VERSION"));
    let sections: Vec<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix(".SH "))
        .collect();
    assert_eq!(
        sections,
        [
            "\"NAME\"",
            "\"SYNOPSIS\"",
            "\"DESCRIPTION\"",
            "\"OPTIONS\"",
            "\"COMMANDS\"",
            "\"ENVIRONMENT\"",
            "\"EXIT STATUS\"",
            "\"FILES\"",
            "\"EXAMPLES\"",
        ]
    );
    assert!(
        page.contains(".SS \"spec\\-runner apply [OPTIONS] [SPEC]...\""),
        "{page}"
    );
    for name in [
        "SPEC_RUNNER_FILE",
        "SPEC_RUNNER_PROGRESS",
        "NO_COLOR",
        "SPEC_RUNNER_ATTEMPT",
    ] {
        assert!(page.contains(name), "ENVIRONMENT lacks {name}");
    }
    for code in ["\\fB0\\fR", "\\fB1\\fR", "\\fB2\\fR", "\\fB130\\fR"] {
        assert!(page.contains(code), "EXIT STATUS lacks {code}");
    }
    // Nothing points to a page `spec-runner man | man -l -` does not install.
    assert!(!page.contains("(1)"), "{page}");
    // Examples are no-fill blocks: rendered, each line stays as written.
    let examples = &page[page.find(".SH \"EXAMPLES\"").unwrap()..];
    let block =
        &examples[examples.find(".nf\n").expect(".nf")..examples.find(".fi\n").expect(".fi")];
    assert!(
        block.contains("spec\\-runner apply \\-\\-junit target/spec\\-runner.xml   # in CI"),
        "{block}"
    );

    // Where mandoc is installed: no warnings, and the rendered examples read as typed.
    t.write("spec-runner.1", page);
    let Ok(lint) = std::process::Command::new("mandoc")
        .args(["-Tlint", "-Wwarning", "spec-runner.1"])
        .current_dir(t.path())
        .output()
    else {
        eprintln!("mandoc is not installed: the page was not linted");
        return;
    };
    let lint =
        String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.trim().is_empty(), "{lint}");
    let text = std::process::Command::new("mandoc")
        .args(["-Tascii", "-Owidth=200", "spec-runner.1"])
        .current_dir(t.path())
        .output()
        .expect("mandoc");
    let text = String::from_utf8_lossy(&text.stdout);
    // Overstrike (bold, underline) removed, as `col -b` does.
    let text = regex::Regex::new(".\x08").unwrap().replace_all(&text, "");
    assert!(
        text.lines()
            .any(|l| l.trim() == "spec-runner apply --junit target/spec-runner.xml   # in CI"),
        "{text}"
    );
}

/// What bash offers for the command line `words` (the last one being completed), asked
/// of the function the script registers with `complete`, the way bash itself calls it:
/// `COMP_WORDS`, `COMP_CWORD`, and the command, current and previous word as
/// arguments. bash-completion is loaded first where it is installed, as in a
/// person's shell.
fn bash_offers(t: &Test, script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect();
    let program = format!(
        r#"
bc=/usr/share/bash-completion/bash_completion
if [[ -r $bc ]]; then source "$bc"; [[ -n ${{BASH_COMPLETION_VERSINFO[*]}} ]] || exit 9; fi
source '{script}'
fn=$(complete -p spec-runner | sed -E 's/.*-F ([^ ]+).*/\1/')
COMP_WORDS=({words})
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
COMPREPLY=()
"$fn" spec-runner "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        script = script.display(),
        words = quoted.join(" "),
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .current_dir(t.path())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommand_options_and_their_values() {
    let t = Test::new();
    t.write("a-file.txt", "");
    let run = run_in(&t, &["completions", "bash"]);
    run.code(0);
    t.write("spec-runner.bash", &run.stdout);
    let script = t.path().join("spec-runner.bash");
    let offers = |words: &[&str]| bash_offers(&t, &script, words);
    assert_eq!(offers(&["spec-runner", "apply", "--pro"]), ["--progress"]);
    assert_eq!(
        offers(&["spec-runner", "apply", "--progress", ""]),
        ["auto", "bar", "plain", "none"]
    );
    assert_eq!(offers(&["spec-runner", "apply", "--format", "j"]), ["json"]);
    assert_eq!(offers(&["spec-runner", "ap"]), ["apply"]);
    assert_eq!(
        offers(&["spec-runner", "--color", ""]),
        ["auto", "always", "never"]
    );
    assert_eq!(offers(&["spec-runner", "plan", "--color", "ne"]), ["never"]);
    assert!(offers(&["spec-runner", "completions", ""]).contains(&"fish".to_string()));
    assert!(offers(&["spec-runner", "status", "--f"]).contains(&"--format".to_string()));
}

/// What fish offers for `line`, or `None` where fish is not installed.
fn fish_offers(t: &Test, script: &Path, line: &str) -> Option<Vec<String>> {
    let out = std::process::Command::new("fish")
        .args(["--no-config", "-c"])
        .arg(format!(
            "source '{}'; complete -C'{}'",
            script.display(),
            line.replace('\'', r"\'")
        ))
        .current_dir(t.path())
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_string())
            .collect(),
    )
}

#[test]
fn fish_offers_values_not_file_names_after_completions_and_a_global_color() {
    let t = Test::new();
    t.write("a-file.txt", "");
    let run = run_in(&t, &["completions", "fish"]);
    run.code(0);
    t.write("spec-runner.fish", &run.stdout);
    let script = t.path().join("spec-runner.fish");
    let Some(first) = fish_offers(&t, &script, "spec-runner --color ") else {
        eprintln!("fish is not installed: its completion was not tried");
        return;
    };
    assert_eq!(first, ["always", "auto", "never"]);
    let offers = |line: &str| fish_offers(&t, &script, line).unwrap();
    assert_eq!(
        offers("spec-runner completions "),
        ["bash", "elvish", "fish", "powershell", "zsh"]
    );
    assert!(offers("spec-runner completions fish ").is_empty());
    assert_eq!(offers("spec-runner -v --color n"), ["never"]);
    assert_eq!(
        offers("spec-runner apply --color "),
        ["always", "auto", "never"]
    );
    assert!(offers("spec-runner --color never ").contains(&"apply".to_string()));
    // Where a path is wanted, files are still offered.
    assert_eq!(offers("spec-runner -f a-"), ["a-file.txt"]);
}

#[test]
fn bash_and_fish_complete_spec_names_from_the_pipeline_file() {
    let t = Test::with_pipeline(
        "[specs.build]\ncommand = \"true\"\n[specs.test]\ncommand = \"true\"\nmatrix = { py = [\"3.11\", \"3.12\"] }\n",
    );
    t.write(
        "ci/other.toml",
        "[specs.nightly]\ncommand = \"true\"\n[specs.weekly]\ncommand = \"true\"\n",
    );
    let bin_dir = Path::new(BIN)
        .parent()
        .expect("bin dir")
        .display()
        .to_string();

    let run = run_in(&t, &["completions", "bash"]);
    run.code(0);
    t.write(
        "spec-runner.bash",
        &format!("PATH='{bin_dir}':$PATH\n{}", run.stdout),
    );
    let script = t.path().join("spec-runner.bash");
    let offers = |words: &[&str]| bash_offers(&t, &script, words);
    assert_eq!(
        offers(&["spec-runner", "apply", "te"]),
        ["test", "test-3.11", "test-3.12"]
    );
    assert_eq!(offers(&["spec-runner", "restart", "b"]), ["build"]);
    assert_eq!(
        offers(&["spec-runner", "plan", "--explain", "test-3.1"]),
        ["test-3.11", "test-3.12"]
    );
    assert_eq!(offers(&["spec-runner", "logs", "bu"]), ["build"]);
    assert_eq!(
        offers(&["spec-runner", "-f", "ci/other.toml", "apply", ""])
            .into_iter()
            .filter(|w| !w.starts_with('-'))
            .collect::<Vec<_>>(),
        ["nightly", "weekly"]
    );
    // Options are still offered.
    assert_eq!(offers(&["spec-runner", "apply", "--fre"]), ["--fresh"]);

    let run = run_in(&t, &["completions", "fish"]);
    run.code(0);
    t.write(
        "spec-runner.fish",
        &format!("set -x PATH '{bin_dir}' $PATH\n{}", run.stdout),
    );
    let script = t.path().join("spec-runner.fish");
    let Some(fish) = fish_offers(&t, &script, "spec-runner apply te") else {
        eprintln!("fish is not installed: its completion was not tried");
        return;
    };
    assert_eq!(fish, ["test", "test-3.11", "test-3.12"]);
    assert_eq!(
        fish_offers(&t, &script, "spec-runner -f ci/other.toml restart ").unwrap(),
        ["nightly", "weekly"]
    );
}

#[test]
fn zsh_completes_spec_names_from_the_pipeline_file() {
    let t = Test::with_pipeline("[specs.build]\ncommand = \"true\"\n");
    t.write("ci/other.toml", "[specs.nightly]\ncommand = \"true\"\n");
    let run = run_in(&t, &["completions", "zsh"]);
    run.code(0);
    // Every command that takes specs completes them with our function.
    let uses = run.stdout.matches(":_spec_runner_spec_names'").count();
    assert_eq!(uses, 5, "{}", run.stdout);
    t.write("_spec-runner", &run.stdout);
    let bin_dir = Path::new(BIN)
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    // The function, called as zsh's completion system would (`compadd` recorded).
    let program = format!(
        r#"
PATH='{bin_dir}':$PATH
compdef() {{ :; }}
source ./_spec-runner
compadd() {{ [[ $1 == -a ]] && print -l -- ${{(P)2}}; }}
BUFFER='spec-runner apply '
_spec_runner_spec_names
BUFFER='spec-runner -f ci/other.toml restart n'
_spec_runner_spec_names
"#
    );
    let out = match std::process::Command::new("zsh")
        .args(["-f", "-c", &program])
        .current_dir(t.path())
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!("zsh is not installed: its completion was not tried");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "build\nnightly\n");
}

#[test]
fn every_subcommand_help_has_examples() {
    use clap::CommandFactory;
    let t = Test::new();
    let cli = spec_runner::cli::Cli::command();
    let subcommands: Vec<String> = cli
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    assert!(subcommands.len() >= 11, "{subcommands:?}");
    for sub in subcommands {
        run_in(&t, &[&sub, "--help"])
            .code(0)
            .stdout_has("Examples:\n  spec-runner");
    }
    run_in(&t, &["--help"]).code(0).stdout_has("Examples:");
}

#[test]
fn an_abort_rule_still_runs_the_hook_of_the_spec_that_aborted() {
    let t = Test::with_pipeline(
        r#"
on_exhausted = "echo $SPEC_RUNNER_SPEC >> hooks.txt"
jobs = 1
[[retry_rules]]
exit_codes = [9]
action = "abort"
[specs.a-boom]
command = "exit 9"
[specs.b-never]
command = "true"
"#,
    );
    let run = run_in(&t, &["apply", "--format", "json"]);
    run.code(1);
    let ev = events(&run.stdout);
    assert_eq!(of(&ev, "hook_finished", Some("a-boom"))[0]["exit_code"], 0);
    assert_eq!(t.read("hooks.txt"), "a-boom\n");
}
