//! The live view a run serves: its state as the events left it, and the subscribers
//! that receive each event. An `EventSink` on the dispatcher thread.
//!
//! A subscription takes the snapshot and joins the subscribers under one lock, the
//! one each event is applied and sent under: every event is either in the snapshot or
//! sent after it, never both, never neither. Each subscriber has a bounded queue; one
//! that is full is dropped (its connection closed), so a client that does not read
//! never slows the run.

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::Value;

use super::protocol;
use crate::events::{Event, EventSink};
use crate::state::model::StateFile;
use crate::state::sink::StateSink;

/// Events a subscriber may lag behind before it is dropped.
pub const QUEUE: usize = 1024;

struct Subscriber {
    tx: Sender<Arc<str>>,
    /// Closed when the subscriber is dropped for lagging.
    stream: UnixStream,
}

struct Inner {
    model: StateFile,
    subscribers: Vec<Subscriber>,
    closed: bool,
}

/// A handle on the live view; clones share it.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// A view that starts from the run's initial state.
    pub fn new(initial: StateFile) -> Hub {
        Hub {
            inner: Arc::new(Mutex::new(Inner {
                model: initial,
                subscribers: Vec::new(),
                closed: false,
            })),
        }
    }

    /// The state now, with live fields.
    pub fn snapshot(&self) -> Value {
        let model = lock(&self.inner).model.clone();
        protocol::snapshot(&model, chrono::Utc::now())
    }

    /// Joins the subscribers: returns the snapshot to send first and the queue of the
    /// events that follow it, or `None` once the run has ended.
    pub fn subscribe(&self, stream: UnixStream) -> Option<(Value, Receiver<Arc<str>>)> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let model = {
            let mut inner = lock(&self.inner);
            if inner.closed {
                return None;
            }
            inner.subscribers.push(Subscriber { tx, stream });
            inner.model.clone()
        };
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
}

impl EventSink for Hub {
    fn event(&mut self, event: &Event) {
        let mut inner = lock(&self.inner);
        StateSink::update(&mut inner.model, event);
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
}
