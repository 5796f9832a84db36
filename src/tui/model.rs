//! The TUI's state and its one way to change: `update(&mut Model, Msg) -> Option<Command>`.
//! Pure: no terminal, no socket, no clock (time comes in as `Msg::Tick`).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A key, as the TUI understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    PageUp,
    PageDown,
    Enter,
    Esc,
    Backspace,
    CtrlC,
    Char(char),
}

/// Everything that can happen to the TUI.
#[derive(Clone, Debug)]
pub enum Msg {
    Key(Key),
    Resize(u16, u16),
    Tick(DateTime<Utc>),
    /// The run's state (a subscription's first reply).
    Snapshot(Value),
    /// One run event.
    Event(Value),
    /// The end of the selected spec's log, as lines.
    Log(PathBuf, Vec<String>),
    /// A request's answer.
    Reply(Result<String, String>),
    /// The run's stream ended (the run is over, or the connection broke).
    Disconnected,
}

/// What `update` asks the outside world to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Restart(String),
    Stop(String),
    StopRun,
    Quit,
}

/// One attempt, for the detail panel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttemptView {
    pub number: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub exit: Option<String>,
    pub reason: Option<String>,
}

/// One spec as the socket reported it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecRow {
    pub name: String,
    pub status: String,
    pub retry: u64,
    pub max_retries: u64,
    /// Attempts of the current retry cycle, as `status` counts them (the history
    /// below may hold earlier cycles too).
    pub attempt: u64,
    pub pid: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub last_retry_at: Option<DateTime<Utc>>,
    pub last_exit: Option<String>,
    pub reason: Option<String>,
    pub log: Option<PathBuf>,
    pub attempts: Vec<AttemptView>,
}

/// What the keys do now: no bag of booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Table,
    /// Typing a filter after `/`.
    Filter,
    /// The log full screen.
    Log,
    Help,
    /// `X` asked: stop the whole run? (y/n)
    ConfirmStopRun,
}

#[derive(Debug)]
pub struct Model {
    pub specs: Vec<SpecRow>,
    pub run_id: String,
    pub runner_pid: Option<u64>,
    /// Index into `visible()`.
    pub selected: usize,
    pub filter: String,
    pub mode: Mode,
    pub follow: bool,
    /// Lines scrolled up from the end of the log.
    pub scroll: usize,
    pub log: Vec<String>,
    pub log_path: Option<PathBuf>,
    /// The run's exit code once it is over.
    pub finished: Option<i64>,
    pub disconnected: bool,
    pub message: Option<String>,
    pub now: DateTime<Utc>,
    pub color: bool,
    pub size: (u16, u16),
    /// Paths are shown relative to this folder (the current one).
    pub base: Option<PathBuf>,
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| s.parse().ok())
}

fn exit_text(code: &Value, signal: &Value) -> Option<String> {
    code.as_i64()
        .map(|c| c.to_string())
        .or_else(|| signal.as_str().map(str::to_string))
}

impl SpecRow {
    fn from_snapshot(name: &str, v: &Value) -> SpecRow {
        let attempts = v["attempts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| {
                        let started = time(&a["started_at"]);
                        let ended = time(&a["ended_at"]);
                        AttemptView {
                            number: a["number"].as_u64().unwrap_or(0) as u32,
                            started_at: started,
                            duration_ms: started
                                .zip(ended)
                                .map(|(s, e)| (e - s).num_milliseconds().max(0) as u64),
                            exit: exit_text(&a["exit_code"], &a["signal"]),
                            reason: a["reason"].as_str().map(str::to_string),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        SpecRow {
            name: name.to_string(),
            status: v["status"].as_str().unwrap_or("pending").to_string(),
            retry: v["retry_count"].as_u64().unwrap_or(0),
            max_retries: v["max_retries"].as_u64().unwrap_or(0),
            attempt: v["attempt"].as_u64().unwrap_or(0),
            pid: v["pid"].as_u64(),
            started_at: time(&v["started_at"]),
            next_retry_at: time(&v["next_retry_at"]),
            last_retry_at: time(&v["last_retry_at"]),
            last_exit: exit_text(&v["last_exit_code"], &v["last_signal"]),
            reason: v["reason"]
                .as_str()
                .or(v["last_reason"].as_str())
                .map(str::to_string),
            log: v["log"].as_str().map(PathBuf::from),
            attempts,
        }
    }

    /// `RUNNING (retry 1/3)`, `BACKOFF 8s (retry 2/3, exit 1)`, `FAILED: exit 3`, …
    pub fn status_text(&self, now: DateTime<Utc>) -> String {
        let retry = format!("retry {}/{}", self.retry, self.max_retries);
        match self.status.as_str() {
            "running" if self.retry > 0 => format!("RUNNING ({retry})"),
            "running" => "RUNNING".into(),
            "backoff" => {
                let left = self
                    .next_retry_at
                    .map(|t| human_ms((t - now).num_milliseconds().max(0) as u64))
                    .unwrap_or_default();
                let exit = self
                    .last_exit
                    .as_ref()
                    .map(|e| format!(", exit {e}"))
                    .unwrap_or_default();
                format!("BACKOFF {left} ({retry}{exit})")
            }
            "failed" => match &self.last_exit {
                Some(e) => format!("FAILED: exit {e}"),
                None => format!("FAILED: {}", self.reason.as_deref().unwrap_or("?")),
            },
            other => other.to_uppercase(),
        }
    }

    pub fn elapsed(&self, now: DateTime<Utc>) -> Option<u64> {
        (self.status == "running")
            .then_some(self.started_at)
            .flatten()
            .map(|t| (now - t).num_milliseconds().max(0) as u64)
    }
}

/// `8s`, `1m02s`, `1h05m`.
pub fn human_ms(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl Model {
    pub fn new(color: bool, now: DateTime<Utc>) -> Model {
        Model {
            specs: Vec::new(),
            run_id: String::new(),
            runner_pid: None,
            selected: 0,
            filter: String::new(),
            mode: Mode::Table,
            follow: true,
            scroll: 0,
            log: Vec::new(),
            log_path: None,
            finished: None,
            disconnected: false,
            message: None,
            now,
            color,
            size: (80, 24),
            base: None,
        }
    }

    /// Indices of the specs the filter lets through.
    pub fn visible(&self) -> Vec<usize> {
        let f = self.filter.to_lowercase();
        (0..self.specs.len())
            .filter(|&i| f.is_empty() || self.specs[i].name.to_lowercase().contains(&f))
            .collect()
    }

    pub fn selected_spec(&self) -> Option<&SpecRow> {
        self.visible().get(self.selected).map(|&i| &self.specs[i])
    }

    fn spec_mut(&mut self, name: &str) -> Option<&mut SpecRow> {
        self.specs.iter_mut().find(|s| s.name == name)
    }

    fn clamp(&mut self) {
        let n = self.visible().len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    fn apply_event(&mut self, ev: &Value) {
        let ts = time(&ev["ts"]).unwrap_or(self.now);
        let kind = ev["event"].as_str().unwrap_or_default();
        if kind == "run_finished" {
            self.finished = ev["exit_code"].as_i64();
            return;
        }
        if kind == "run_started" {
            if let Some(id) = ev["run_id"].as_str() {
                self.run_id = id.to_string();
            }
            return;
        }
        let Some(name) = ev["spec"].as_str() else {
            return;
        };
        if self.spec_mut(name).is_none() {
            self.specs.push(SpecRow {
                name: name.to_string(),
                status: "pending".into(),
                ..SpecRow::default()
            });
            self.specs.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let Some(s) = self.spec_mut(name) else { return };
        match kind {
            "attempt_started" => {
                s.status = "running".into();
                s.retry = ev["retry"].as_u64().unwrap_or(0);
                s.max_retries = ev["max_retries"].as_u64().unwrap_or(s.max_retries);
                s.pid = ev["pid"].as_u64();
                s.attempt = ev["attempt"].as_u64().unwrap_or(s.attempt + 1);
                s.started_at = Some(ts);
                s.next_retry_at = None;
                s.log = ev["log"].as_str().map(PathBuf::from);
                let number = s.attempts.last().map_or(1, |a| a.number + 1);
                s.attempts.push(AttemptView {
                    number,
                    started_at: Some(ts),
                    ..AttemptView::default()
                });
            }
            "attempt_finished" => {
                s.pid = None;
                s.last_exit = exit_text(&ev["exit_code"], &ev["signal"]);
                if let Some(a) = s.attempts.last_mut() {
                    a.duration_ms = ev["duration_ms"].as_u64();
                    a.exit = s.last_exit.clone();
                    a.reason = ev["reason"].as_str().map(str::to_string);
                }
            }
            "retry_scheduled" => {
                s.status = "backoff".into();
                s.retry = ev["retry"].as_u64().unwrap_or(s.retry);
                s.last_retry_at = Some(ts);
                s.next_retry_at =
                    Some(ts + chrono::Duration::milliseconds(ev["delay_ms"].as_i64().unwrap_or(0)));
            }
            "spec_finished" => {
                s.status = ev["status"].as_str().unwrap_or("failed").to_string();
                s.reason = ev["reason"].as_str().map(str::to_string);
                s.pid = None;
                s.next_retry_at = None;
            }
            "spec_restarted" => {
                s.status = "pending".into();
                s.retry = 0;
                s.attempt = 0;
                s.next_retry_at = None;
                s.reason = None;
            }
            _ => {}
        }
    }
}

/// The one place the model changes.
pub fn update(m: &mut Model, msg: Msg) -> Option<Command> {
    match msg {
        Msg::Tick(now) => m.now = now,
        Msg::Resize(w, h) => m.size = (w, h),
        Msg::Snapshot(v) => {
            m.run_id = v["run_id"].as_str().unwrap_or_default().to_string();
            m.runner_pid = v["runner_pid"].as_u64();
            if let Some(specs) = v["specs"].as_object() {
                m.specs = specs
                    .iter()
                    .map(|(name, s)| SpecRow::from_snapshot(name, s))
                    .collect();
            }
            if let Some(t) = time(&v["now"]) {
                m.now = t;
            }
            m.clamp();
        }
        Msg::Event(ev) => m.apply_event(&ev),
        Msg::Log(path, lines) => {
            if m.selected_spec().and_then(|s| s.log.as_ref()) == Some(&path) {
                m.log_path = Some(path);
                m.log = lines;
            }
        }
        Msg::Reply(r) => {
            m.message = Some(match r {
                Ok(s) => s,
                Err(e) => format!("refused: {e}"),
            });
        }
        Msg::Disconnected => {
            m.disconnected = true;
            if m.finished.is_none() {
                m.message = Some("the run's stream ended".into());
            }
        }
        Msg::Key(k) => return key(m, k),
    }
    None
}

fn select_by(m: &mut Model, delta: isize) {
    let n = m.visible().len();
    if n == 0 {
        return;
    }
    let next = (m.selected as isize + delta).clamp(0, n as isize - 1) as usize;
    if next != m.selected {
        m.selected = next;
        m.log.clear();
        m.scroll = 0;
    }
}

fn key(m: &mut Model, k: Key) -> Option<Command> {
    if k == Key::CtrlC {
        return Some(Command::Quit);
    }
    match m.mode {
        Mode::Help => {
            m.mode = Mode::Table;
            None
        }
        Mode::ConfirmStopRun => {
            m.mode = Mode::Table;
            if matches!(k, Key::Char('y' | 'Y')) {
                m.message = Some("stopping the run".into());
                Some(Command::StopRun)
            } else {
                m.message = Some("the run goes on".into());
                None
            }
        }
        Mode::Filter => {
            match k {
                Key::Enter => {
                    m.mode = Mode::Table;
                    m.selected = 0;
                }
                Key::Esc => {
                    m.filter.clear();
                    m.mode = Mode::Table;
                }
                Key::Backspace => {
                    m.filter.pop();
                }
                Key::Char(c) => m.filter.push(c),
                _ => {}
            }
            m.clamp();
            None
        }
        Mode::Log => {
            match k {
                Key::Esc | Key::Enter | Key::Char('l' | 'q') => m.mode = Mode::Table,
                Key::Char('f') => m.follow = !m.follow,
                Key::Up | Key::Char('k') => m.scroll += 1,
                Key::Down | Key::Char('j') => m.scroll = m.scroll.saturating_sub(1),
                Key::PageUp => m.scroll += 20,
                Key::PageDown => m.scroll = m.scroll.saturating_sub(20),
                _ => {}
            }
            None
        }
        Mode::Table => table_key(m, k),
    }
}

fn table_key(m: &mut Model, k: Key) -> Option<Command> {
    let name = m.selected_spec().map(|s| s.name.clone());
    match k {
        Key::Char('q') => return Some(Command::Quit),
        Key::Up | Key::Char('k') => select_by(m, -1),
        Key::Down | Key::Char('j') => select_by(m, 1),
        Key::PageUp => m.scroll += 10,
        Key::PageDown => m.scroll = m.scroll.saturating_sub(10),
        Key::Char('?') => m.mode = Mode::Help,
        Key::Char('/') => m.mode = Mode::Filter,
        Key::Esc => {
            m.filter.clear();
            m.clamp();
        }
        Key::Char('l') | Key::Enter => m.mode = Mode::Log,
        Key::Char('f') => {
            m.follow = !m.follow;
            m.scroll = 0;
        }
        Key::Char('X') if m.finished.is_none() => m.mode = Mode::ConfirmStopRun,
        Key::Char('r' | 's' | 'x') if m.finished.is_some() || m.disconnected => {
            m.message = Some("the run is over: start a new one with `spec-runner apply`".into());
        }
        Key::Char('r') => return name.map(Command::Restart),
        Key::Char('s') => {
            let running = m.selected_spec().is_some_and(|s| s.status == "running");
            if running {
                m.message = Some("it is running; `r` restarts it".into());
            } else {
                return name.map(Command::Restart);
            }
        }
        Key::Char('x') => return name.map(Command::Stop),
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    pub fn sample() -> Model {
        let mut m = Model::new(false, t("2026-01-01T00:00:10Z"));
        update(
            &mut m,
            Msg::Snapshot(json!({
                "run_id": "r1", "runner_pid": 7, "now": "2026-01-01T00:00:10Z",
                "specs": {
                    "auth": {"status": "running", "retry_count": 1, "max_retries": 3, "pid": 42,
                             "started_at": "2026-01-01T00:00:05Z", "log": "/l/auth/task_2.log",
                             "attempts": [{"number": 1, "started_at": "2026-01-01T00:00:00Z",
                                           "ended_at": "2026-01-01T00:00:02Z", "exit_code": 1,
                                           "reason": "exit 1"}]},
                    "build": {"status": "backoff", "retry_count": 2, "max_retries": 3, "attempt": 3,
                              "next_retry_at": "2026-01-01T00:00:18Z", "last_exit_code": 1},
                    "deploy": {"status": "failed", "retry_count": 3, "max_retries": 3,
                               "last_exit_code": 3}
                }
            })),
        );
        m
    }

    #[test]
    fn statuses_read_as_the_issue_writes_them() {
        let m = sample();
        let text: Vec<String> = m.specs.iter().map(|s| s.status_text(m.now)).collect();
        assert_eq!(
            text,
            [
                "RUNNING (retry 1/3)",
                "BACKOFF 8s (retry 2/3, exit 1)",
                "FAILED: exit 3"
            ]
        );
        assert_eq!(m.specs[0].elapsed(m.now), Some(5000));
    }

    #[test]
    fn keys_select_filter_and_ask_for_commands() {
        let mut m = sample();
        assert_eq!(update(&mut m, Msg::Key(Key::Char('j'))), None);
        assert_eq!(m.selected_spec().unwrap().name, "build");
        assert_eq!(
            update(&mut m, Msg::Key(Key::Char('r'))),
            Some(Command::Restart("build".into()))
        );
        // `/dep` Enter keeps the filter and selects the first match.
        for k in [
            Key::Char('/'),
            Key::Char('d'),
            Key::Char('e'),
            Key::Char('p'),
            Key::Enter,
        ] {
            update(&mut m, Msg::Key(k));
        }
        assert_eq!(m.mode, Mode::Table);
        assert_eq!(m.visible().len(), 1);
        assert_eq!(m.selected_spec().unwrap().name, "deploy");
        assert_eq!(
            update(&mut m, Msg::Key(Key::Char('x'))),
            Some(Command::Stop("deploy".into()))
        );
        // Esc clears the filter.
        update(&mut m, Msg::Key(Key::Esc));
        assert_eq!(m.visible().len(), 3);
        // `s` on a running spec says so instead.
        update(&mut m, Msg::Key(Key::Char('k')));
        update(&mut m, Msg::Key(Key::Char('k')));
        assert_eq!(update(&mut m, Msg::Key(Key::Char('s'))), None);
        // X asks first; only y stops the run.
        update(&mut m, Msg::Key(Key::Char('X')));
        assert_eq!(m.mode, Mode::ConfirmStopRun);
        assert_eq!(update(&mut m, Msg::Key(Key::Char('n'))), None);
        update(&mut m, Msg::Key(Key::Char('X')));
        assert_eq!(
            update(&mut m, Msg::Key(Key::Char('y'))),
            Some(Command::StopRun)
        );
        assert_eq!(
            update(&mut m, Msg::Key(Key::Char('q'))),
            Some(Command::Quit)
        );
    }

    #[test]
    fn events_move_the_table() {
        let mut m = sample();
        assert_eq!(m.specs[1].attempt, 3);
        update(
            &mut m,
            Msg::Event(
                json!({"event": "spec_restarted", "spec": "build", "ts": "2026-01-01T00:00:11Z"}),
            ),
        );
        update(
            &mut m,
            Msg::Event(
                json!({"event": "attempt_started", "spec": "build", "attempt": 1, "retry": 0, "max_retries": 3,
                               "pid": 9, "log": "/l/build/task_3.log", "ts": "2026-01-01T00:00:11Z"}),
            ),
        );
        assert_eq!(m.specs[1].status_text(m.now), "RUNNING");
        // A restart starts a new cycle: the table counts its attempts, as `status` does.
        assert_eq!(m.specs[1].attempt, 1);
        update(
            &mut m,
            Msg::Event(
                json!({"event": "attempt_finished", "spec": "build", "exit_code": 2,
                               "reason": "exit 2", "duration_ms": 500, "ts": "2026-01-01T00:00:12Z"}),
            ),
        );
        update(
            &mut m,
            Msg::Event(
                json!({"event": "retry_scheduled", "spec": "build", "retry": 1, "max_retries": 3,
                               "delay_ms": 4000, "ts": "2026-01-01T00:00:12Z"}),
            ),
        );
        m.now = t("2026-01-01T00:00:13Z");
        assert_eq!(
            m.specs[1].status_text(m.now),
            "BACKOFF 3s (retry 1/3, exit 2)"
        );
        update(
            &mut m,
            Msg::Event(json!({"event": "run_finished", "exit_code": 1})),
        );
        assert_eq!(m.finished, Some(1));
        assert_eq!(update(&mut m, Msg::Key(Key::Char('r'))), None);
        assert!(m.message.as_deref().unwrap().contains("over"));
    }
}
