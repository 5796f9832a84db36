//! Turns SIGINT, SIGTERM and SIGHUP into messages for the dispatcher.
//!
//! Children run in their own process groups, so the terminal's Ctrl-C reaches only the
//! runner: the dispatcher forwards termination to every group itself.

use crossbeam_channel::Receiver;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    /// A termination signal arrived (its number).
    Interrupt(i32),
    /// A retry rule asked to stop the whole run.
    Abort,
}

/// Listens for termination signals until dropped.
pub struct SignalListener {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
    pub events: Receiver<SignalEvent>,
}

impl SignalListener {
    pub fn start() -> std::io::Result<SignalListener> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let (tx, events) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if tx.send(SignalEvent::Interrupt(sig)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SignalListener {
            handle,
            thread: Some(thread),
            events,
        })
    }
}

impl Drop for SignalListener {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
