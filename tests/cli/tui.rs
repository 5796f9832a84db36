//! The TUI in a real pseudo-terminal (80×24), its screen read with a `vt100` parser:
//! it starts a run when none is live, shows the backoff with its retry count, `/name`
//! Enter then `r` restarts that spec, `q` leaves the run going and the terminal as it
//! was; `l`/Enter show the log full screen and `f` holds it still or follows it; `x`
//! stops the selected spec's process group while the others go on, `s` starts it
//! again; `X` `n` leaves the run going, `X` `y` stops it, and the TUI stays open on the
//! final table until `q`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::termios::{LocalModes, tcgetattr};
use serde_json::Value;

use crate::harness::*;
use crate::procs::*;

struct Pty {
    master: std::fs::File,
    slave: std::fs::File,
    screen: Arc<Mutex<vt100::Parser>>,
    /// Every byte the program wrote to the terminal.
    raw: Drain,
    child: std::process::Child,
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pty {
    /// Runs `spec-runner ARGS` on a new 80×24 terminal, in a session of its own with
    /// that terminal as its controlling one (as in a terminal emulator).
    fn spawn(t: &Test, args: &[&str], env: &[(&str, &str)]) -> Pty {
        let (master, slave) = terminal(Some((24, 80)));
        let mut cmd = in_own_session(t);
        cmd.args(args)
            .env("TERM", "xterm-256color")
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave.try_clone().unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start spec-runner tui");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(24, 80, 0)));
        let parser = screen.clone();
        let raw = Drain::start_with(master.try_clone().unwrap(), move |bytes| {
            parser.lock().unwrap().process(bytes);
        });
        Pty {
            master,
            slave,
            screen,
            raw,
            child,
        }
    }

    fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits (generously) until the screen shows what `ready` wants.
    #[track_caller]
    fn wait(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        wait_to_see(
            Duration::from_secs(60),
            &format!("the screen never showed {what}"),
            || self.text(),
            |s| ready(s),
        )
    }

    fn keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Presses `q` and waits (generously) for the TUI to exit; its exit code.
    fn quit(&mut self) -> Option<i32> {
        self.keys("q");
        let child = &mut self.child;
        wait_until(Duration::from_secs(30), "the TUI did not quit", || {
            child.try_wait().unwrap().map(|st| st.code())
        })
    }
}

/// Stops the run the TUI started, whatever happens to the test.
struct StopOnDrop<'a>(&'a Test);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = run_in(self.0, &["stop"]);
    }
}

fn status(t: &Test) -> Value {
    run_in(t, &["status", "--format", "json"]).code(0).json()
}

/// Waits (generously) until `status --format json` shows what `ready` wants.
#[track_caller]
fn wait_status(t: &Test, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_to_see(
        Duration::from_secs(60),
        &format!("status never showed {what}"),
        || status(t),
        ready,
    )
}

#[test]
fn the_tui_starts_a_run_shows_the_backoff_restarts_a_filtered_spec_and_quits_leaving_it_going() {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
[specs.long]
command = 'echo "working on it"; exec sleep 300'
[specs.flaky]
command = 'echo "attempt $SPEC_RUNNER_ATTEMPT"; exit 1'
retry_max_retries = 3
retry_backoff_seconds = 600
retry_max_backoff_seconds = 600
"#,
    );
    let _stop = StopOnDrop(&t);
    let mut tui = Pty::spawn(&t, &["tui"], &[("NO_COLOR", "1")]);
    // No run was live: the TUI started one in the background and attached.
    let s = tui.wait("the backoff with its retry count", |s| {
        s.contains("BACKOFF") && s.contains("(retry 1/3, exit 1)") && s.contains("RUNNING")
    });
    assert!(s.contains("long") && s.contains("flaky"), "{s}");
    let runner = status(&t)["running_pid"].as_u64().expect("a live run");

    // `?` lists the keys; any key closes it.
    tui.keys("?");
    tui.wait("the help", |s| s.contains("stop the whole run"));
    tui.keys(" ");
    tui.wait("the table again", |s| !s.contains("stop the whole run"));

    // `/flaky` Enter keeps the filter and selects it; `r` restarts it.
    tui.keys("/flaky\r");
    tui.wait("the filter", |s| {
        s.contains("[filter: flaky]") && !s.contains("RUNNING")
    });
    tui.keys("r");
    tui.wait("the restart's answer", |s| s.contains("restarted `flaky`"));
    let flaky = wait_status(&t, "flaky running again", |st| {
        st["specs"]["flaky"]["attempts"]
            .as_array()
            .map_or(0, Vec::len)
            >= 2
    })["specs"]["flaky"]
        .clone();
    // Started again from a retry count of 0, long before its ten-minute backoff.
    assert_eq!(flaky["attempts"][1]["attempt"], 1, "{flaky}");

    // A bigger window: it redraws to fit.
    let wide = |s: &str| {
        s.lines()
            .any(|l| l.starts_with("┌ specs") && l.chars().count() > 100)
    };
    assert!(!wide(&tui.text()));
    // The screen parser first: what the TUI draws once it hears of the new size must
    // not meet a parser still at 80 columns.
    tui.screen.lock().unwrap().set_size(30, 120);
    set_window(&tui.master, 30, 120);
    tui.wait("a redraw at 120 columns", wide);

    // `q` quits; the run goes on; the terminal is as it was.
    assert_eq!(tui.quit(), Some(0));
    // What it wrote last may still be on its way through the terminal.
    let raw = tui.raw.wait_for(
        Duration::from_secs(30),
        "left the alternate screen",
        |raw| raw.contains("\x1b[?1049l"),
    );
    assert!(raw.contains("\x1b[?1049l"), "left the alternate screen");
    assert!(raw.contains("\x1b[?25h"), "showed the cursor again");
    let modes = tcgetattr(&tui.slave).expect("tcgetattr").local_modes;
    assert!(
        modes.contains(LocalModes::ICANON | LocalModes::ECHO),
        "raw mode is off again: {modes:?}"
    );
    assert!(!has_colour(&raw), "NO_COLOR: no colours");
    assert!(alive(runner as u32), "the run goes on");
    assert_eq!(status(&t)["specs"]["long"]["status"], "running");
    run_in(&t, &["stop"]).code(0);
    assert!(wait_gone(&[runner as u32], Duration::from_secs(30)).is_empty());
}

/// The highest `tick N` the screen shows (the ticker's log lines).
fn last_tick(screen: &str) -> u64 {
    regex::Regex::new(r"tick (\d+)")
        .unwrap()
        .captures_iter(screen)
        .filter_map(|c| c[1].parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn the_tui_shows_a_log_full_screen_stops_and_starts_a_spec_stops_the_run_and_stays_on_the_final_table()
 {
    let t = Test::with_pipeline(
        r#"
terminate_grace_seconds = 5
[specs.ticker]
command = 'sleep 300 & echo $! > ticker.child; i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'
[specs.worker]
command = 'echo "worker at work"; exec sleep 300'
"#,
    );
    let _stop = StopOnDrop(&t);
    let mut tui = Pty::spawn(&t, &["tui"], &[("NO_COLOR", "1")]);
    tui.wait("both specs running", |s| s.contains("2 running"));
    let runner = status(&t)["running_pid"].as_u64().expect("a live run") as u32;

    // `l`: the selected spec's (ticker's) log full screen, following it as it grows.
    tui.keys("l");
    let s = tui.wait("the log full screen", |s| {
        s.contains("log: ticker · follow on · Esc back") && last_tick(s) > 0
    });
    assert!(!s.contains("┌ specs"), "full screen, no table:\n{s}");
    let before = last_tick(&s);
    tui.wait("the log growing", |s| last_tick(s) > before);
    // `f`: follow off, the pane holds still while the log grows; `f` again follows.
    tui.keys("f");
    let held = tui.wait("follow off", |s| s.contains("follow off · Esc back"));
    let frozen = last_tick(&held);
    // The log itself grows meanwhile.
    let log = log_of(&t, "ticker");
    wait_until(
        Duration::from_secs(60),
        "the ticker stopped ticking",
        || {
            (last_tick(&std::fs::read_to_string(&log).unwrap_or_default()) > frozen + 3)
                .then_some(())
        },
    );
    assert_eq!(
        last_tick(&tui.text()),
        frozen,
        "not following:\n{}",
        tui.text()
    );
    tui.keys("f");
    tui.wait("follow on again, the log caught up", |s| {
        s.contains("follow on · Esc back") && last_tick(s) > frozen + 3
    });
    // Esc: back to the table; Enter: the log full screen again; `l` back.
    tui.keys("\x1b");
    tui.wait("the table", |s| s.contains("┌ specs"));
    tui.keys("\r");
    tui.wait("the log full screen", |s| {
        s.contains("log: ticker · follow on · Esc back") && !s.contains("┌ specs")
    });
    tui.keys("l");
    tui.wait("the table", |s| s.contains("┌ specs"));

    // `x` stops the selected spec, its whole process group; the other goes on.
    let st = status(&t);
    let pid = st["specs"]["ticker"]["pid"].as_u64().expect("ticker's pid") as u32;
    let child = wait_pid(&t.path().join("ticker.child"));
    let worker = st["specs"]["worker"]["pid"].as_u64().expect("worker's pid");
    tui.keys("x");
    tui.wait("ticker stopped", |s| {
        s.contains("STOPPED") && s.contains("1 running")
    });
    assert!(
        wait_gone(&[pid, child], Duration::from_secs(30)).is_empty(),
        "ticker's process group ended"
    );
    let st = status(&t);
    assert_eq!(st["specs"]["ticker"]["status"], "stopped", "{st}");
    assert_eq!(st["specs"]["worker"]["status"], "running", "{st}");
    assert_eq!(st["specs"]["worker"]["pid"], worker, "{st}");

    // `s` starts the stopped spec again; on a running one it says to use `r`.
    std::fs::remove_file(t.path().join("ticker.child")).unwrap();
    tui.keys("s");
    tui.wait("ticker running again", |s| {
        s.contains("2 running") && !s.contains("STOPPED")
    });
    let again = wait_status(&t, "ticker running again", |st| {
        st["specs"]["ticker"]["status"] == "running"
    });
    assert_eq!(
        again["specs"]["ticker"]["attempts"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{again}"
    );
    assert_ne!(again["specs"]["ticker"]["pid"], pid, "{again}");
    let child = wait_pid(&t.path().join("ticker.child"));
    tui.keys("j");
    tui.wait("worker selected", |s| s.contains("log: worker"));
    tui.keys("s");
    tui.wait("`s` refused on a running spec", |s| {
        s.contains("it is running; `r` restarts it")
    });
    assert_eq!(status(&t)["specs"]["worker"]["pid"], worker);

    // `X` asks; `n` leaves the run going.
    tui.keys("X");
    tui.wait("the question", |s| s.contains("stop the whole run? y/n"));
    tui.keys("n");
    tui.wait("the run goes on", |s| s.contains("the run goes on"));
    assert!(alive(runner), "the run goes on");
    let st = status(&t);
    assert_eq!(st["specs"]["ticker"]["status"], "running", "{st}");
    assert_eq!(st["specs"]["worker"]["status"], "running", "{st}");

    // `X` `y` stops it: every spec ends, the runner exits.
    tui.keys("X");
    tui.wait("the question", |s| s.contains("stop the whole run? y/n"));
    tui.keys("y");
    assert!(
        wait_gone(&[runner, child], Duration::from_secs(60)).is_empty(),
        "the run and its specs ended"
    );
    // The TUI stays open on the final table until `q`.
    let s = tui.wait("the final table", |s| {
        s.contains("finished (exit") && s.contains("0 running")
    });
    assert!(s.contains("ticker") && s.contains("worker"), "{s}");
    assert!(tui.child.try_wait().unwrap().is_none(), "still open:\n{s}");
    tui.keys("r");
    tui.wait("no restart after the end", |s| {
        s.contains("the run is over: start a new one")
    });
    assert!(tui.child.try_wait().unwrap().is_none(), "still open");
    assert_eq!(tui.quit(), Some(0));
}

/// The log of a spec's current attempt, as the live status gives it.
fn log_of(t: &Test, spec: &str) -> std::path::PathBuf {
    let st = status(t);
    let log = st["specs"][spec]["log"].as_str().expect("a log path");
    t.path().join(log)
}

/// Whether an SGR sequence sets a foreground or background colour (30–38, 40–48, 90–107).
fn has_colour(raw: &str) -> bool {
    regex::Regex::new("\x1b\\[([0-9;]*)m")
        .unwrap()
        .captures_iter(raw)
        .any(|c| {
            c[1].split(';').any(|p| {
                p.parse::<u32>()
                    .is_ok_and(|n| matches!(n, 30..=38 | 40..=48 | 90..=107))
            })
        })
}
