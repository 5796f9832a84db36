//! The dispatcher's one input: everything that wakes it comes through one channel.
//!
//! Workers' results, the state writer's news, signals and control-socket commands are
//! one [`Wake`] each, in the order they were sent. The dispatcher blocks in a single
//! `recv_timeout` on it (its timers and the progress tick are the timeout), rather than
//! registering with and unregistering from five channels every time it waits (a
//! `select!`): at 10,000 specs that took the dispatcher thread's CPU time down by about
//! 40 %, its `futex` calls from 3.9 to 0.7 per attempt (docs/PERFORMANCE.md).
//!
//! Producers hold an [`InboxTx`] and send only their own kind of message; this module
//! knows no producer's internals. `state` does not import `runner`: its writer is given
//! a callback ([`InboxTx::state_notifier`]) that maps what it says into a `Wake`.

use crossbeam_channel::{Receiver, Sender};

use super::dispatcher::steer::SteerCommand;
use super::pool::JobResult;
use super::signal::SignalEvent;
use crate::state::sink::{Notifier, Written};

/// Something for the dispatcher.
pub enum Wake {
    /// A worker's news of a job: started, or ended.
    Job(JobResult),
    /// The state writer put a version on disk (or failed to: then nobody waits for it).
    Flushed,
    /// The state writer is gone: nothing will reach the disk any more.
    WriterGone,
    /// A termination signal, or a rule's abort.
    Signal(SignalEvent),
    /// A control-socket request.
    Steer(SteerCommand),
}

/// The dispatcher's inbox: the receiving end, and the sender its producers clone.
pub struct Inbox {
    pub(super) tx: InboxTx,
    pub(super) rx: Receiver<Wake>,
}

impl Inbox {
    pub fn new() -> Inbox {
        let (tx, rx) = crossbeam_channel::unbounded();
        Inbox {
            tx: InboxTx(tx),
            rx,
        }
    }

    /// A sender for one more producer.
    pub fn sender(&self) -> InboxTx {
        self.tx.clone()
    }
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox::new()
    }
}

/// A producer's end of the dispatcher's inbox. Every send fails only once the
/// dispatcher is gone (the run has ended).
#[derive(Clone)]
pub struct InboxTx(Sender<Wake>);

impl InboxTx {
    /// A worker's news of a job.
    pub(super) fn job(&self, result: JobResult) {
        // The dispatcher outlives the pool: the send cannot fail while it matters.
        let _ = self.0.send(Wake::Job(result));
    }

    /// A signal, or an abort; `false` when the run has ended.
    pub fn signal(&self, event: SignalEvent) -> bool {
        self.0.send(Wake::Signal(event)).is_ok()
    }

    /// A control-socket request; `false` when the run has ended.
    pub fn steer(&self, command: SteerCommand) -> bool {
        self.0.send(Wake::Steer(command)).is_ok()
    }

    /// What the state writer calls when a version reached the disk, and when it ends.
    pub fn state_notifier(&self) -> Notifier {
        let tx = self.0.clone();
        Box::new(move |news| {
            let _ = tx.send(match news {
                Written::Version(_) => Wake::Flushed,
                Written::Gone => Wake::WriterGone,
            });
        })
    }
}
