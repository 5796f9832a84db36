//! The live bars on a real pseudo-terminal (80 columns): what a person sees.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Runs `args` in `t` with stderr on an 80×24 pseudo-terminal; types `input` (a Ctrl-C
/// is `\x03`) once the screen shows `when`; returns what was shown.
fn on_terminal(t: &Test, args: &[&str], input: Option<(&str, &[u8])>) -> (Option<i32>, String) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    rustix::termios::tcsetwinsize(
        &master,
        rustix::termios::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )
    .expect("window size");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .expect("open the terminal");
    // In a session of its own whose controlling terminal is this one (`setsid -c`, with
    // the terminal as stdin): a typed Ctrl-C reaches it as from a keyboard.
    let harness = t.command();
    let mut cmd = std::process::Command::new("setsid");
    cmd.arg("-c")
        .arg(harness.get_program())
        .args(harness.get_args());
    for (k, v) in harness.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.current_dir(t.path())
        .args(args)
        .env("TERM", "xterm-256color")
        .stdin(slave.try_clone().expect("dup"))
        .stdout(std::process::Stdio::null())
        .stderr(slave);
    let mut child = cmd.spawn().expect("start spec-runner");
    drop(cmd);
    let writer = master.try_clone().expect("dup");
    let mut master = std::fs::File::from(master);
    let (tx, chunks) = crossbeam_channel::unbounded::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    if let Some((when, bytes)) = input {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !String::from_utf8_lossy(&out).contains(when) {
            match chunks.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(c) => out.extend_from_slice(&c),
                Err(_) => panic!("the screen never showed {when:?}"),
            }
        }
        rustix::io::write(&writer, bytes).expect("type");
    }
    let status = child.wait().expect("wait");
    drop(writer);
    // The child held the only other end: reading ends (EIO) now that it exited.
    while let Ok(c) = chunks.recv_timeout(Duration::from_secs(10)) {
        out.extend_from_slice(&c);
    }
    (status.code(), String::from_utf8_lossy(&out).into_owned())
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
