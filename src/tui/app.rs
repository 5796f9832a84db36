//! The TUI's I/O: the terminal (raw mode, alternate screen, restored on every exit,
//! a panic included), the control socket (a subscription feeding `Msg`s, one short
//! connection per request), the selected spec's log file, and the clock.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use super::model::{Command, Key, Model, Msg, update};
use super::view::view;
use crate::config::Pipeline;
use crate::exit;
use crate::live::client::Client;

/// How often the clock (elapsed times, backoff countdowns) and the log pane refresh.
const TICK: Duration = Duration::from_millis(250);
/// How much of a log the pane reads: its end.
const LOG_TAIL_BYTES: u64 = 256 * 1024;
const LOG_LINES: usize = 5000;

/// `spec-runner tui`: attaches to the live run, or starts one in the background and
/// attaches. `q` leaves the run going.
pub fn run(p: &Pipeline, color: bool, config: Option<&Path>) -> u8 {
    let dir = p.run.state_dir.clone();
    let (tx, rx) = crossbeam_channel::unbounded::<Msg>();
    let mut client = Client::connect(&dir);
    if client.is_none() {
        // Like `apply --detach` of this pipeline (the same file and policy file).
        let mut args: Vec<std::ffi::OsString> = vec!["--file".into(), p.file.clone().into()];
        if let Some(c) = config {
            args.extend(["--config".into(), c.as_os_str().to_owned()]);
        }
        args.extend(["apply".into(), "--detached-child".into()]);
        match crate::detach::launch(p, args) {
            Ok(_) => client = Client::connect(&dir),
            Err(code) => return code,
        }
    }
    match client {
        Some(mut c) => {
            c.set_timeout(Some(Duration::from_secs(30)));
            match c.request("subscribe", &[]) {
                Ok(mut r) => {
                    let _ = tx.send(Msg::Snapshot(r["snapshot"].take()));
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::USAGE;
                }
            }
            let events = c.into_events();
            let fwd = tx.clone();
            let _ = std::thread::Builder::new()
                .name("tui-events".into())
                .spawn(move || {
                    for ev in events.iter() {
                        if fwd.send(Msg::Event(ev)).is_err() {
                            return;
                        }
                    }
                    let _ = fwd.send(Msg::Disconnected);
                });
        }
        None => {
            // The run ended before we could attach (a very short one): its final state.
            match crate::state::store::load(&dir) {
                Ok(loaded) => {
                    if let Some(s) = loaded.state {
                        let _ = tx.send(Msg::Snapshot(crate::live::protocol::snapshot(
                            &s,
                            chrono::Utc::now(),
                        )));
                    }
                    let _ = tx.send(Msg::Disconnected);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::USAGE;
                }
            }
        }
    }
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot use the terminal: {e}");
            return exit::USAGE;
        }
    };
    input_thread(tx.clone());
    signal_thread(tx.clone());
    let code = main_loop(&mut terminal, &dir, color, &tx, &rx);
    ratatui::restore();
    code
}

fn main_loop(
    terminal: &mut ratatui::DefaultTerminal,
    dir: &Path,
    color: bool,
    tx: &Sender<Msg>,
    rx: &Receiver<Msg>,
) -> u8 {
    let mut m = Model::new(color, chrono::Utc::now());
    m.base = std::env::current_dir().ok();
    if let Ok(size) = terminal.size() {
        m.size = (size.width, size.height);
    }
    let mut log = LogTail::default();
    loop {
        if terminal.draw(|f| view(&m, f)).is_err() {
            return exit::FAILURE;
        }
        let first = select! {
            recv(rx) -> msg => msg.ok(),
            default(TICK) => None,
        };
        // Everything that is waiting, then one redraw: a burst of events is one frame.
        let msgs = first.into_iter().chain(rx.try_iter()).collect::<Vec<_>>();
        for msg in msgs.into_iter().chain([Msg::Tick(chrono::Utc::now())]) {
            match update(&mut m, msg) {
                Some(Command::Quit) => return exit::SUCCESS,
                Some(cmd) => send(dir, cmd, tx),
                None => {}
            }
        }
        let wanted = m.selected_spec().and_then(|s| s.log.clone());
        if let Some(lines) = log.refresh(wanted.as_deref(), m.follow || m.log.is_empty())
            && let Some(path) = wanted
        {
            update(&mut m, Msg::Log(path, lines));
        }
    }
}

/// One short connection per request, on a thread: the UI never waits for the run.
fn send(dir: &Path, cmd: Command, tx: &Sender<Msg>) {
    let dir = dir.to_path_buf();
    let tx = tx.clone();
    let _ = std::thread::Builder::new()
        .name("tui-request".into())
        .spawn(move || {
            let (op, specs) = match cmd {
                Command::Restart(s) => ("restart", vec![s]),
                Command::Stop(s) => ("stop", vec![s]),
                Command::StopRun => ("stop_run", vec![]),
                Command::Quit => return,
            };
            let reply = match Client::connect(&dir) {
                Some(mut c) => {
                    c.set_timeout(Some(Duration::from_secs(30)));
                    c.request(op, &specs)
                        .map(|r| r["message"].as_str().unwrap_or("done").to_string())
                        .map_err(|e| e.to_string())
                }
                None => Err("the run is not serving any more".into()),
            };
            let _ = tx.send(Msg::Reply(reply));
        });
}

fn input_thread(tx: Sender<Msg>) {
    let _ = std::thread::Builder::new()
        .name("tui-input".into())
        .spawn(move || {
            loop {
                let msg = match event::read() {
                    Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => {
                        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
                        match k.code {
                            KeyCode::Char('c') if ctrl => Key::CtrlC,
                            KeyCode::Char(c) => Key::Char(c),
                            KeyCode::Up => Key::Up,
                            KeyCode::Down => Key::Down,
                            KeyCode::PageUp => Key::PageUp,
                            KeyCode::PageDown => Key::PageDown,
                            KeyCode::Enter => Key::Enter,
                            KeyCode::Esc => Key::Esc,
                            KeyCode::Backspace => Key::Backspace,
                            _ => continue,
                        }
                    }
                    Ok(Event::Resize(w, h)) => {
                        if tx.send(Msg::Resize(w, h)).is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.send(Msg::Key(msg)).is_err() {
                    return;
                }
            }
        });
}

/// SIGTERM, SIGHUP (the terminal closed) and SIGINT quit like `q`: the terminal is
/// restored and the run goes on.
fn signal_thread(tx: Sender<Msg>) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("tui-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = tx.send(Msg::Key(Key::CtrlC));
            }
        });
}

/// Reads the end of the selected spec's log when it changed or grew.
#[derive(Default)]
struct LogTail {
    path: Option<PathBuf>,
    len: u64,
}

impl LogTail {
    fn refresh(&mut self, path: Option<&Path>, live: bool) -> Option<Vec<String>> {
        let path = path?;
        let same = self.path.as_deref() == Some(path);
        if same && !live {
            return None;
        }
        let mut f = std::fs::File::open(path).ok()?;
        let len = f.metadata().ok()?.len();
        if same && len == self.len {
            return None;
        }
        self.path = Some(path.to_path_buf());
        self.len = len;
        let from = len.saturating_sub(LOG_TAIL_BYTES);
        f.seek(SeekFrom::Start(from)).ok()?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).ok()?;
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<String> = text
            .lines()
            .skip(usize::from(from > 0))
            .map(|l| {
                l.replace('\t', "    ")
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect()
            })
            .collect();
        if lines.len() > LOG_LINES {
            lines.drain(..lines.len() - LOG_LINES);
        }
        Some(lines)
    }
}
