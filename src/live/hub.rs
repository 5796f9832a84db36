//! The live view a run serves: its state as the events left it (the state sink's
//! model, read under its lock: one copy of the run's state), and the subscribers that
//! receive each event (sent from the state sink, under that lock).
//!
//! A subscription takes the snapshot and joins the subscribers under one lock, the
//! one each event is applied and sent under: every event is either in the snapshot or
//! sent after it, never both, never neither. Each subscriber has a bounded queue; one
//! that is full is dropped (its connection closed), so a client that does not read
//! never slows the run.

use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::Value;

use super::protocol;
use crate::events::Event;
use crate::state::model::StateFile;
use crate::state::sink::{StateSink, StateView};

/// Events a subscriber may lag behind before it is dropped.
pub const QUEUE: usize = 1024;

struct Subscriber {
    tx: Sender<Arc<str>>,
    /// Closed when the subscriber is dropped for lagging.
    stream: UnixStream,
}

struct Inner {
    subscribers: Vec<Subscriber>,
    closed: bool,
}

/// A handle on the live view; clones share it.
#[derive(Clone)]
pub struct Hub {
    /// The run's state: the state sink's own, not a copy.
    state: StateView,
    /// Specs the state file keeps for another pipeline sharing the folder: the live
    /// view, like `status`, shows this pipeline's specs only.
    hidden: Arc<BTreeSet<String>>,
    inner: Arc<Mutex<Inner>>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// A view of the state `sink` keeps, without the specs named in `hidden`; from
    /// now on, each event the sink applies goes to the subscribers too.
    pub fn attach(sink: &StateSink, hidden: BTreeSet<String>) -> Hub {
        let inner = Arc::new(Mutex::new(Inner {
            subscribers: Vec::new(),
            closed: false,
        }));
        let sending = inner.clone();
        sink.observe(Box::new(move |event| send(&sending, event)));
        Hub {
            state: sink.view(),
            hidden: Arc::new(hidden),
            inner,
        }
    }

    /// The state now, with live fields.
    pub fn snapshot(&self) -> Value {
        let model = self.state.read(|file| self.visible(file));
        protocol::snapshot(&model, chrono::Utc::now())
    }

    /// Joins the subscribers: returns the snapshot to send first and the queue of the
    /// events that follow it, or `None` once the run has ended.
    pub fn subscribe(&self, stream: UnixStream) -> Option<(Value, Receiver<Arc<str>>)> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        // Under the state's lock, which each event is applied and sent under.
        let model = self.state.read(|file| {
            let mut inner = lock(&self.inner);
            if inner.closed {
                return None;
            }
            inner.subscribers.push(Subscriber { tx, stream });
            Some(self.visible(file))
        })?;
        Some((protocol::snapshot(&model, chrono::Utc::now()), rx))
    }

    /// The run has ended: subscribers get what is queued, then the end of their stream.
    pub fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.subscribers.clear();
    }

    /// How many clients are subscribed (for tests and logs).
    pub fn subscribers(&self) -> usize {
        lock(&self.inner).subscribers.len()
    }

    /// A copy of the state without the hidden specs (to serialize outside the lock).
    fn visible(&self, file: &StateFile) -> StateFile {
        StateFile {
            version: file.version,
            run_id: file.run_id.clone(),
            runner_pid: file.runner_pid,
            updated_at: file.updated_at,
            finished_at: file.finished_at,
            log_roots: file.log_roots.clone(),
            specs: file
                .specs
                .iter()
                .filter(|(name, _)| !self.hidden.contains(&***name))
                .map(|(name, s)| (name.clone(), s.clone()))
                .collect(),
        }
    }
}

/// Sends an event to every subscriber (under the state's lock: see `Observer`).
fn send(inner: &Mutex<Inner>, event: &Event) {
    let mut inner = lock(inner);
    if inner.subscribers.is_empty() {
        return;
    }
    let line: Arc<str> = protocol::event_line(event).into();
    inner
        .subscribers
        .retain(|s| match s.tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!("dropped a control client that does not read its events");
                let _ = s.stream.shutdown(std::net::Shutdown::Both);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventKind, EventSink, Status, Tail};
    use crate::state::model::SpecState;

    fn finished(spec: &str) -> Event {
        Event {
            ts: chrono::Utc::now(),
            kind: EventKind::SpecFinished {
                spec: spec.into(),
                status: Status::Succeeded,
                attempts: 1,
                retries: 0,
                reason: None,
                log: None,
                iterations: None,
                tail: Tail::default(),
            },
        }
    }

    fn status_of(snapshot: &Value, spec: &str) -> Option<String> {
        snapshot["specs"][spec]["status"].as_str().map(String::from)
    }

    /// The live view is the state sink's state: what an event changed shows in the
    /// next snapshot, the other pipeline's specs never show, and a subscriber gets
    /// exactly the events after its snapshot.
    #[test]
    fn the_view_follows_the_sink_and_a_subscriber_gets_what_follows_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut initial = StateFile::new("run-1");
        for name in ["a", "b", "other"] {
            initial
                .specs
                .insert(name.into(), SpecState::new("h".into(), 0));
        }
        let mut sink =
            StateSink::start(dir.path().to_path_buf(), initial, Box::new(|_| {})).unwrap();
        let hub = Hub::attach(&sink, BTreeSet::from(["other".to_string()]));

        sink.event(&finished("a"));
        let snap = hub.snapshot();
        assert_eq!(status_of(&snap, "a").as_deref(), Some("succeeded"));
        assert_eq!(status_of(&snap, "b").as_deref(), Some("pending"));
        assert_eq!(status_of(&snap, "other"), None, "{snap}");

        let (ours, theirs) = UnixStream::pair().unwrap();
        let (snap, events) = hub.subscribe(ours).unwrap();
        assert_eq!(hub.subscribers(), 1);
        assert_eq!(status_of(&snap, "a").as_deref(), Some("succeeded"));
        assert!(
            events.try_recv().is_err(),
            "an event before the snapshot was sent"
        );
        sink.event(&finished("b"));
        let line = events.try_recv().unwrap();
        assert!(
            line.contains("\"spec_finished\"") && line.contains("\"b\""),
            "{line}"
        );
        assert!(events.try_recv().is_err());

        hub.close();
        assert_eq!(hub.subscribers(), 0);
        let (again, _) = UnixStream::pair().unwrap();
        assert!(hub.subscribe(again).is_none(), "joined after the run ended");
        drop(theirs);
        sink.close();

        // The file on disk says what the view says.
        let text =
            std::fs::read_to_string(dir.path().join(crate::state::store::STATE_FILE)).unwrap();
        let file: StateFile = serde_json::from_str(&text).unwrap();
        assert_eq!(file.specs["b"].status, Status::Succeeded);
        assert_eq!(file.specs.len(), 3);
    }
}
