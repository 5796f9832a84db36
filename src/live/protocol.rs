//! The control protocol: one JSON object per line (NDJSON), each with `"v": 1`.
//!
//! Requests: `{"v":1,"id":7,"op":"snapshot"}`, `"subscribe"`, `"stop"` and `"restart"`
//! with `"specs":["name",…]`, `"stop_run"`. Replies echo `id` with `"ok":true` (and a
//! `snapshot` or a `message`) or `"ok":false,"error":"…"`. After a subscribe's reply
//! come events, `{"v":1,"event":…}` with the fields of `apply --format json`.
//! Unknown fields are ignored; an unknown op gets an error reply. Pure: no I/O.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::state::model::{SpecState, StateFile};

/// The protocol version this build speaks.
pub const VERSION: u64 = 1;
/// The longest request line read; a longer one closes the connection.
pub const MAX_LINE: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    Snapshot,
    Subscribe,
    Stop(Vec<String>),
    /// Restart these specs; with `with_deps`, first every dependency (transitively)
    /// that failed, was stopped or skipped, or is not part of the run and never
    /// succeeded.
    Restart {
        specs: Vec<String>,
        with_deps: bool,
    },
    StopRun,
}

/// Parses one request line: the request's id (`null` when absent or unreadable) and
/// the op, or the error to reply with.
pub fn parse(line: &[u8]) -> (Value, Result<Op, String>) {
    let Ok(text) = std::str::from_utf8(line) else {
        return (Value::Null, Err("the request is not valid UTF-8".into()));
    };
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return (
                Value::Null,
                Err(format!(
                    "the request is not JSON ({e}); send one JSON object per line"
                )),
            );
        }
    };
    let Some(obj) = v.as_object() else {
        return (Value::Null, Err("the request must be a JSON object".into()));
    };
    let id = obj.get("id").cloned().unwrap_or(Value::Null);
    (id, op_of(obj))
}

fn op_of(obj: &Map<String, Value>) -> Result<Op, String> {
    match obj.get("v") {
        None => {}
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "unsupported protocol version {v}: this runner speaks v {VERSION}"
            ));
        }
    }
    let op = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(format!("`op` must be a string, not {other}")),
        None => {
            return Err(
                "the request has no `op` (snapshot, subscribe, stop, restart, stop_run)".into(),
            );
        }
    };
    let specs = || -> Result<Vec<String>, String> {
        match obj.get("specs") {
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("`specs` must hold spec names (strings), not {s}"))
                })
                .collect(),
            _ => Err(format!(
                "`{op}` needs `specs`: a non-empty array of spec names"
            )),
        }
    };
    Ok(match op {
        "snapshot" => Op::Snapshot,
        "subscribe" => Op::Subscribe,
        "stop" => Op::Stop(specs()?),
        "restart" => Op::Restart {
            specs: specs()?,
            with_deps: match obj.get("with_deps") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(format!("`with_deps` must be true or false, not {other}"));
                }
            },
        },
        "stop_run" => Op::StopRun,
        other => {
            return Err(format!(
                "unknown op `{other}`; expected one of: snapshot, subscribe, stop, restart, stop_run"
            ));
        }
    })
}

/// A reply line (with its newline).
pub fn reply(id: &Value, result: Result<(&str, Value), &str>) -> String {
    let mut m = Map::new();
    m.insert("v".into(), json!(VERSION));
    m.insert("id".into(), id.clone());
    match result {
        Ok((key, value)) => {
            m.insert("ok".into(), json!(true));
            m.insert(key.into(), value);
        }
        Err(e) => {
            m.insert("ok".into(), json!(false));
            m.insert("error".into(), json!(e));
        }
    }
    let mut s = Value::Object(m).to_string();
    s.push('\n');
    s
}

/// What a spec is doing now, from its state: the live fields of a snapshot.
#[derive(Debug, Default, PartialEq)]
pub struct Live {
    pub pid: Option<u32>,
    /// When the running attempt started.
    pub started_at: Option<DateTime<Utc>>,
    pub elapsed_ms: Option<u64>,
    /// When the next retry starts (during a backoff).
    pub next_retry_at: Option<DateTime<Utc>>,
    pub attempt: Option<u32>,
    pub log: Option<std::path::PathBuf>,
    pub last_exit_code: Option<i32>,
    pub last_signal: Option<String>,
    pub last_reason: Option<String>,
}

pub fn live(s: &SpecState, now: DateTime<Utc>) -> Live {
    use crate::events::Status;
    let last = s.attempts.last();
    let running = s.status == Status::Running && last.is_some_and(|a| a.ended_at.is_none());
    let started_at = last.filter(|_| running).map(|a| a.started_at);
    let ended = s.attempts.iter().rev().find(|a| a.ended_at.is_some());
    Live {
        pid: s.running().map(|r| r.pid).filter(|_| running),
        started_at,
        elapsed_ms: started_at.map(|t| (now - t).num_milliseconds().max(0) as u64),
        next_retry_at: match (s.status, s.last_retry_at(), s.last_delay_ms()) {
            (Status::Backoff, Some(at), Some(ms)) => {
                Some(at + chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX / 2)))
            }
            _ => None,
        },
        attempt: last.map(|a| a.attempt),
        log: last.map(|a| a.log.path()),
        last_exit_code: ended.and_then(|a| a.exit_code),
        last_signal: ended.and_then(|a| a.signal().map(String::from)),
        last_reason: ended.and_then(|a| a.reason().map(String::from)),
    }
}

/// The state as JSON, each spec with its live fields added (`pid`, `started_at`,
/// `elapsed_ms`, `next_retry_at`, `attempt`, `log`, `last_exit_code`, `last_signal`,
/// `last_reason`): the shape of `status --format json` and of a snapshot.
pub fn snapshot(file: &StateFile, now: DateTime<Utc>) -> Value {
    let mut v = serde_json::to_value(file).unwrap_or_default();
    if let Some(specs) = v.get_mut("specs").and_then(Value::as_object_mut) {
        for (name, entry) in specs.iter_mut() {
            let (Some(s), Some(obj)) = (file.specs.get(name.as_str()), entry.as_object_mut())
            else {
                continue;
            };
            let l = live(s, now);
            obj.insert("pid".into(), json!(l.pid));
            obj.insert("started_at".into(), json!(l.started_at));
            obj.insert("elapsed_ms".into(), json!(l.elapsed_ms));
            obj.insert("next_retry_at".into(), json!(l.next_retry_at));
            obj.insert("attempt".into(), json!(l.attempt));
            obj.insert("log".into(), json!(l.log));
            obj.insert("last_exit_code".into(), json!(l.last_exit_code));
            obj.insert("last_signal".into(), json!(l.last_signal));
            obj.insert("last_reason".into(), json!(l.last_reason));
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.insert("now".into(), json!(now));
    }
    v
}

/// An event line: the event's `--format json` object with `"v"` first.
pub fn event_line(event: &crate::events::Event) -> String {
    let body = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    let mut s = String::with_capacity(body.len() + 8);
    s.push_str("{\"v\":1,");
    s.push_str(body.strip_prefix('{').unwrap_or("}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &[u8]) -> String {
        parse(line).1.expect_err("an error")
    }

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse(br#"{"v":1,"id":3,"op":"snapshot"}"#),
            (json!(3), Ok(Op::Snapshot))
        );
        assert_eq!(
            parse(br#"{"op":"restart","specs":["a","b"],"extra":true}"#).1,
            Ok(Op::Restart {
                specs: vec!["a".into(), "b".into()],
                with_deps: false
            })
        );
        assert_eq!(
            parse(br#"{"op":"restart","specs":["c"],"with_deps":true}"#).1,
            Ok(Op::Restart {
                specs: vec!["c".into()],
                with_deps: true
            })
        );
        assert!(
            err(br#"{"op":"restart","specs":["c"],"with_deps":"yes"}"#)
                .contains("`with_deps` must be true or false")
        );
        assert_eq!(
            parse(br#"{"id":"x","op":"stop_run"}"#),
            (json!("x"), Ok(Op::StopRun))
        );
        assert!(err(b"\xff\xfe").contains("UTF-8"));
        assert!(err(b"hello").contains("not JSON"));
        assert!(err(b"[1]").contains("object"));
        assert!(err(br#"{"op":"dance"}"#).contains("unknown op `dance`"));
        assert!(err(br#"{"op":"stop"}"#).contains("needs `specs`"));
        assert!(err(br#"{"op":"stop","specs":[1]}"#).contains("spec names"));
        assert!(err(br#"{"v":2,"op":"snapshot"}"#).contains("version 2"));
        assert!(err(br#"{"v":1}"#).contains("no `op`"));
        // The id is echoed even when the op is wrong.
        assert_eq!(parse(br#"{"id":9,"op":"x"}"#).0, json!(9));
    }

    #[test]
    fn replies_and_events_carry_the_version() {
        let ok: Value =
            serde_json::from_str(&reply(&json!(1), Ok(("message", json!("done"))))).unwrap();
        assert_eq!(ok, json!({"v":1,"id":1,"ok":true,"message":"done"}));
        let bad: Value = serde_json::from_str(&reply(&Value::Null, Err("no"))).unwrap();
        assert_eq!(bad, json!({"v":1,"id":null,"ok":false,"error":"no"}));
        let e = crate::events::Event::now(crate::events::EventKind::RetryScheduled {
            spec: "a".into(),
            retry: 1,
            max_retries: 3,
            delay: std::time::Duration::from_millis(1500),
            reason: "exit 1".into(),
        });
        let line = event_line(&e);
        assert!(line.ends_with('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["event"], "retry_scheduled");
        assert_eq!(v["delay_ms"], 1500);
    }

    #[test]
    fn live_fields_come_from_the_state() {
        use crate::events::Status;
        use crate::state::model::{AttemptRecord, RunningProcess};
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut s = SpecState::new("h".into(), 3);
        s.status = Status::Running;
        s.set_running(Some(RunningProcess {
            job_id: None,
            pid: 42,
            pgid: 42,
            start_time: None,
        }));
        s.attempts.push(AttemptRecord::started(
            1,
            1,
            t0,
            "l/task_1.log".into(),
            None,
        ));
        let l = live(&s, t0 + chrono::Duration::seconds(5));
        assert_eq!(l.pid, Some(42));
        assert_eq!(l.elapsed_ms, Some(5000));
        assert_eq!(l.next_retry_at, None);
        // Then it failed and waits 8 s for retry 1.
        s.attempts[0].ended_at = Some(t0 + chrono::Duration::seconds(6));
        s.attempts[0].exit_code = Some(1);
        s.status = Status::Backoff;
        s.set_running(None);
        s.retry_count = 1;
        s.set_last_retry(Some(t0 + chrono::Duration::seconds(6)), Some(8000));
        let l = live(&s, t0 + chrono::Duration::seconds(7));
        assert_eq!(l.pid, None);
        assert_eq!(l.elapsed_ms, None);
        assert_eq!(l.next_retry_at, Some(t0 + chrono::Duration::seconds(14)));
        assert_eq!(l.last_exit_code, Some(1));
        let mut file = StateFile::new("r");
        file.specs.insert("a".into(), s);
        let v = snapshot(&file, t0);
        assert_eq!(v["specs"]["a"]["retry_count"], 1);
        assert_eq!(
            v["specs"]["a"]["next_retry_at"],
            json!(t0 + chrono::Duration::seconds(14))
        );
    }
}
