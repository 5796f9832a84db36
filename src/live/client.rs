//! The client side of the control socket, for `status`, `stop`, `restart`,
//! `logs --follow`, `apply --detach` and the TUI.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::addr;

/// A connection to a live run.
pub struct Client {
    reader: BufReader<UnixStream>,
    stream: UnixStream,
    next_id: u64,
    /// Events read while waiting for a reply.
    pending: VecDeque<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("lost the connection to the run: {0}")]
    Io(#[from] std::io::Error),
    #[error("the run closed the connection")]
    Closed,
    #[error("{0}")]
    Refused(String),
}

impl Client {
    /// Connects to the run serving this state folder; `None` when none does (no run,
    /// or a runner that died and left its socket file).
    pub fn connect(state_dir: &Path) -> Option<Client> {
        let stream = UnixStream::connect(addr::socket_of(state_dir)).ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        Some(Client {
            reader,
            stream,
            next_id: 1,
            pending: VecDeque::new(),
        })
    }

    /// How long a read may wait (`None`: for ever).
    pub fn set_timeout(&self, t: Option<Duration>) {
        let _ = self.stream.set_read_timeout(t);
    }

    fn read_line(&mut self) -> Result<Value, ClientError> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(ClientError::Closed);
            }
            if let Ok(v) = serde_json::from_str(&line) {
                return Ok(v);
            }
        }
    }

    /// Sends `{"op": op, …fields}` and waits for its reply: the reply object when
    /// `ok`, its `error` otherwise.
    pub fn request(&mut self, op: &str, specs: &[String]) -> Result<Value, ClientError> {
        let mut req = json!({ "op": op });
        if !specs.is_empty() {
            req["specs"] = json!(specs);
        }
        self.send(req)
    }

    /// Sends a request object (its `v` and `id` are set here) and waits for its reply.
    pub fn send(&mut self, mut req: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        req["v"] = json!(super::protocol::VERSION);
        req["id"] = json!(id);
        let mut line = req.to_string();
        line.push('\n');
        self.stream.write_all(line.as_bytes())?;
        loop {
            let v = self.read_line()?;
            if v.get("id") == Some(&json!(id)) {
                return if v["ok"] == true {
                    Ok(v)
                } else {
                    Err(ClientError::Refused(
                        v["error"].as_str().unwrap_or("refused").to_string(),
                    ))
                };
            }
            if v.get("event").is_some() {
                self.pending.push_back(v);
            }
        }
    }

    /// The next event of a subscription.
    pub fn next_event(&mut self) -> Result<Value, ClientError> {
        if let Some(v) = self.pending.pop_front() {
            return Ok(v);
        }
        loop {
            let v = self.read_line()?;
            if v.get("event").is_some() {
                return Ok(v);
            }
        }
    }

    /// Reads events on a thread of their own, into a channel (for select loops).
    pub fn into_events(mut self) -> crossbeam_channel::Receiver<Value> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.set_timeout(None);
        let _ = std::thread::Builder::new()
            .name("control-events".into())
            .spawn(move || {
                while let Ok(v) = self.next_event() {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            });
        rx
    }
}
