//! The live bars on a real pseudo-terminal (80 columns): what a person sees.

use std::time::Duration;

use crate::harness::*;
use crate::procs::*;

/// Runs `args` in `t` with stderr on an 80×24 pseudo-terminal; types `input` (a Ctrl-C
/// is `\x03`) once the screen shows `when`; returns what was shown.
fn on_terminal(t: &Test, args: &[&str], input: Option<(&str, &[u8])>) -> (Option<i32>, String) {
    let (master, slave) = terminal(Some((24, 80)));
    // With the terminal as its controlling one: a typed Ctrl-C reaches it as from a
    // keyboard.
    let mut cmd = in_own_session(t);
    cmd.args(args)
        .env("TERM", "xterm-256color")
        .stdin(slave.try_clone().expect("dup"))
        .stdout(std::process::Stdio::null())
        .stderr(slave);
    let mut child = cmd.spawn().expect("start spec-runner");
    // The child holds the only other end now: reading ends (EIO) once it exits.
    drop(cmd);
    let writer = master.try_clone().expect("dup");
    let shown = Drain::start(master);
    if let Some((when, bytes)) = input {
        shown.wait_for(
            Duration::from_secs(60),
            &format!("the screen never showed {when:?}"),
            |s| s.contains(when),
        );
        rustix::io::write(&writer, bytes).expect("type");
    }
    let status = child.wait().expect("wait");
    drop(writer);
    (status.code(), shown.all(Duration::from_secs(60)))
}

#[test]
fn the_clock_ticks_a_long_line_fits_one_row_and_a_redrawn_line_shows() {
    let t = Test::with_pipeline(
        r#"
jobs = 2
[specs.long]
command = 'printf "%0300d\n" 7; sleep 3'
[specs.redraw]
command = 'for i in 1 2 3 4 5; do printf "\r fetching %d0%%" $i; sleep 0.2; done; sleep 2'
"#,
    );
    let (code, shown) = on_terminal(&t, &["apply", "--progress", "bar"], None);
    assert_eq!(code, Some(0), "{shown}");
    // No event comes between the starts and the ends (3 s): the clock moves anyway.
    assert!(shown.contains("00:00:02"), "{shown:?}");
    // The 300-column line is cut to the 80-column row, never wrapped over several.
    let zeros = shown
        .split(|c: char| c != '0')
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert!(
        (20..80).contains(&zeros),
        "{zeros} zeros in a row: {shown:?}"
    );
    // The progress that only ever redraws its line with `\r` shows.
    assert!(shown.contains("fetching 50%"), "{shown:?}");
    assert!(shown.contains("2 succeeded"), "{shown:?}");
}

#[test]
fn ctrl_c_leaves_no_echo_to_break_the_bars() {
    // The bars keep the cursor at the end of their last row: an echoed `^C` there
    // would wrap, and a stale copy of the overall bar would stay above the summary.
    let t = Test::with_pipeline(
        "terminate_grace_seconds = 5\n[specs.a]\ncommand = 'sleep 60'\n[specs.b]\ncommand = 'sleep 60'\n",
    );
    let (code, shown) = on_terminal(
        &t,
        &["apply", "--progress", "bar"],
        Some(("RUNNING", b"\x03")),
    );
    assert_eq!(code, Some(130), "{shown:?}");
    assert!(!shown.contains("^C"), "{shown:?}");
    assert!(shown.contains("2 stopped (a, b)"), "{shown:?}");
}
