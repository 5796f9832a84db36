//! Draws the model; changes nothing. Works from 80×24 up; colours only when the model
//! says so (`NO_COLOR`, `--color`).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

use super::model::{Mode, Model, SpecRow, human_ms};

/// The keys, as `?` lists them.
pub const HELP: &[(&str, &str)] = &[
    ("↑/↓ j/k", "select a spec"),
    ("s", "start the selected spec (when it is not running)"),
    ("r", "restart the selected spec (retry count 0)"),
    ("x", "stop the selected spec"),
    ("X", "stop the whole run (asks y/n)"),
    ("/", "filter by name: Enter keeps it, Esc clears"),
    ("l, Enter", "the log full screen"),
    ("f", "follow the log on/off"),
    ("PgUp/PgDn", "scroll the log"),
    ("?", "this help"),
    ("q", "quit (the run goes on)"),
];

fn style(m: &Model, fg: Color) -> Style {
    if m.color {
        Style::default().fg(fg)
    } else {
        Style::default()
    }
}

fn status_style(m: &Model, s: &SpecRow) -> Style {
    let c = match s.status.as_str() {
        "running" => Color::Cyan,
        "backoff" => Color::Yellow,
        "succeeded" => Color::Green,
        "failed" => Color::Red,
        _ => Color::Gray,
    };
    style(m, c)
}

fn selected_style(m: &Model) -> Style {
    if m.color {
        Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    } else {
        Style::default().add_modifier(Modifier::REVERSED)
    }
}

pub fn view(m: &Model, f: &mut Frame) {
    let area = f.area();
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header(m)), head);
    f.render_widget(Paragraph::new(footer(m)), foot);
    if m.mode == Mode::Log {
        log_pane(m, f, body, true);
    } else {
        let [table_area, lower] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
        table(m, f, table_area);
        let [detail_area, log_area] = Layout::horizontal([
            Constraint::Length(34.min(area.width / 2)),
            Constraint::Min(20),
        ])
        .areas(lower);
        detail(m, f, detail_area);
        log_pane(m, f, log_area, false);
    }
    match m.mode {
        Mode::Help => help(m, f, area),
        Mode::ConfirmStopRun => confirm(m, f, area),
        _ => {}
    }
}

fn header(m: &Model) -> Line<'static> {
    let count = |st: &str| m.specs.iter().filter(|s| s.status == st).count();
    let state = match (m.finished, m.disconnected) {
        (Some(code), _) => format!("finished (exit {code})"),
        (None, true) => "disconnected".to_string(),
        (None, false) => format!("pid {}", m.runner_pid.unwrap_or(0)),
    };
    Line::from(vec![
        Span::styled(
            format!("run {} ", m.run_id),
            style(m, Color::White).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "· {state} · {} running, {} backoff, {} ok, {} failed",
            count("running"),
            count("backoff"),
            count("succeeded"),
            count("failed")
        )),
    ])
}

fn footer(m: &Model) -> Line<'static> {
    match m.mode {
        Mode::Filter => Line::from(format!("/{}▏  Enter keep · Esc clear", m.filter)),
        Mode::ConfirmStopRun => Line::from("stop the whole run? y/n"),
        _ => {
            let filter = if m.filter.is_empty() {
                String::new()
            } else {
                format!("[filter: {}] ", m.filter)
            };
            let text = match &m.message {
                Some(msg) => format!("{filter}{msg}"),
                None if m.finished.is_some() => format!("{filter}the run is over · q quit"),
                None => format!(
                    "{filter}r restart · x stop · X stop run · / filter · l log · f follow · ? · q quit"
                ),
            };
            Line::from(Span::styled(text, style(m, Color::Gray)))
        }
    }
}

fn table(m: &Model, f: &mut Frame, area: Rect) {
    let rows: Vec<Row> = m
        .visible()
        .into_iter()
        .map(|i| {
            let s = &m.specs[i];
            Row::new(vec![
                Cell::from(s.name.clone()),
                Cell::from(Span::styled(s.status_text(m.now), status_style(m, s))),
                Cell::from(s.attempt.to_string()),
                Cell::from(s.elapsed(m.now).map_or("-".into(), human_ms)),
                Cell::from(s.last_exit.clone().unwrap_or_else(|| "-".into())),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(10),
        Constraint::Length(34),
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Length(5),
    ];
    let t = Table::new(rows, widths)
        .header(
            Row::new(["SPEC", "STATUS", "ATT", "ELAPSED", "EXIT"])
                .style(style(m, Color::Gray).add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(selected_style(m))
        .block(Block::bordered().title(" specs "));
    let mut state = TableState::default().with_selected(Some(m.selected));
    f.render_stateful_widget(t, area, &mut state);
}

fn detail(m: &Model, f: &mut Frame, area: Rect) {
    let mut lines = Vec::new();
    if let Some(s) = m.selected_spec() {
        lines.push(Line::from(Span::styled(
            s.name.clone(),
            style(m, Color::White).add_modifier(Modifier::BOLD),
        )));
        lines.push(Line::from(format!(
            "pid: {}",
            s.pid.map_or("-".into(), |p| p.to_string())
        )));
        lines.push(Line::from(format!("retry: {}/{}", s.retry, s.max_retries)));
        lines.push(Line::from(format!(
            "last retry: {}",
            s.last_retry_at
                .map_or("-".into(), |t| t.format("%H:%M:%S").to_string())
        )));
        lines.push(Line::from(format!(
            "log: {}",
            s.log.as_ref().map_or("-".into(), |l| match &m.base {
                Some(base) => crate::plan::show_path(base, l),
                None => l.display().to_string(),
            })
        )));
        if let Some(r) = &s.reason {
            lines.push(Line::from(format!("reason: {r}")));
        }
        lines.push(Line::from("attempts:"));
        for a in s.attempts.iter().rev() {
            let took = match a.duration_ms {
                None => "running".into(),
                Some(ms) if ms < 1000 => format!("{ms}ms"),
                Some(ms) => human_ms(ms),
            };
            let why = a.reason.clone().unwrap_or_else(|| {
                if a.duration_ms.is_some() {
                    "ok".into()
                } else {
                    String::new()
                }
            });
            lines.push(Line::from(format!(" #{} {took} {why}", a.number)));
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" detail ")),
        area,
    );
}

fn log_pane(m: &Model, f: &mut Frame, area: Rect, full: bool) {
    let inner_h = area.height.saturating_sub(2) as usize;
    let end = m.log.len().saturating_sub(m.scroll);
    let start = end.saturating_sub(inner_h);
    let lines: Vec<Line> = m.log[start..end]
        .iter()
        .map(|l| Line::from(l.clone()))
        .collect();
    let name = m
        .selected_spec()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let follow = if m.follow { "follow on" } else { "follow off" };
    let title = if full {
        format!(" log: {name} · {follow} · Esc back ")
    } else {
        format!(" log: {name} · {follow} ")
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn popup(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn help(m: &Model, f: &mut Frame, area: Rect) {
    let r = popup(area, 64, HELP.len() as u16 + 3);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>10}  "), style(m, Color::Cyan)),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from("any key closes"));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys ")),
        r,
    );
}

fn confirm(m: &Model, f: &mut Frame, area: Rect) {
    let r = popup(area, 44, 3);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(
            "stop the whole run? y/n",
            style(m, Color::Red),
        )))
        .block(Block::bordered()),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::model::{Key, Msg, update};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn screen(m: &Model, w: u16, h: u16) -> String {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| view(m, f)).unwrap();
        let buf = term.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn model() -> Model {
        let mut m = Model::new(false, "2026-01-01T00:00:10Z".parse().unwrap());
        update(
            &mut m,
            Msg::Snapshot(json!({
                "run_id": "r1", "runner_pid": 7,
                "specs": {
                    "auth": {"status": "running", "retry_count": 1, "max_retries": 3, "pid": 42,
                             "started_at": "2026-01-01T00:00:05Z", "log": "/l/auth/task_2.log"},
                    "build": {"status": "backoff", "retry_count": 2, "max_retries": 3,
                              "next_retry_at": "2026-01-01T00:00:18Z", "last_exit_code": 1}
                }
            })),
        );
        update(
            &mut m,
            Msg::Log(
                "/l/auth/task_2.log".into(),
                vec!["compiling".into(), "tests pass".into()],
            ),
        );
        m
    }

    #[test]
    fn the_table_detail_and_log_fit_80_by_24() {
        let s = screen(&model(), 80, 24);
        assert!(s.contains("RUNNING (retry 1/3)"), "{s}");
        assert!(s.contains("BACKOFF 8s (retry 2/3, exit 1)"), "{s}");
        assert!(s.contains("pid: 42"), "{s}");
        assert!(s.contains("tests pass"), "{s}");
        assert!(s.contains("pid 7 · 1 running, 1 backoff"), "{s}");
    }

    #[test]
    fn help_lists_every_key_and_the_filter_shows_in_the_footer() {
        let mut m = model();
        update(&mut m, Msg::Key(Key::Char('?')));
        let s = screen(&m, 80, 24);
        for (k, _) in HELP {
            assert!(s.contains(k), "{k} missing:\n{s}");
        }
        update(&mut m, Msg::Key(Key::Esc));
        update(&mut m, Msg::Key(Key::Char('/')));
        update(&mut m, Msg::Key(Key::Char('b')));
        let s = screen(&m, 80, 24);
        assert!(s.contains("/b"), "{s}");
        assert!(!s.contains("RUNNING"), "filtered out:\n{s}");
    }

    #[test]
    fn no_colour_means_no_colour() {
        let m = model();
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        term.draw(|f| view(&m, f)).unwrap();
        let buf = term.backend().buffer();
        assert!(buf.content().iter().all(|c| c.fg == Color::Reset));
    }
}
