//! Turns SIGINT, SIGTERM and SIGHUP into messages for the dispatcher.
//!
//! Children run in their own process groups, so the terminal's Ctrl-C reaches only the
//! runner: the dispatcher forwards termination to every group itself.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGXFSZ};
use signal_hook::iterator::{Handle, Signals};

use super::inbox::InboxTx;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalEvent {
    /// A termination signal arrived (its number).
    Interrupt(i32),
    /// A retry rule asked to stop the whole run.
    Abort,
}

/// Makes a write past the file size limit (`ulimit -f`) fail with `EFBIG` instead of
/// killing the runner: the kernel raises SIGXFSZ, whose default action ends the
/// process, before it returns the error. The log write then fails like on a full disk
/// — the attempt ends with that reason and the run goes on — and a state write fails
/// with a message.
///
/// A handler that does nothing, not SIG_IGN: a caught signal is reset to its default
/// when a spec's command is executed, an ignored one would stay ignored in it.
pub fn survive_file_size_limit() -> std::io::Result<()> {
    signal_hook::flag::register(SIGXFSZ, Arc::new(AtomicBool::new(false)))?;
    Ok(())
}

/// Listens for termination signals until dropped; sends each to the dispatcher's
/// inbox (a signal that arrives before the run starts waits there for it).
pub struct SignalListener {
    handle: Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalListener {
    pub fn start(to: InboxTx) -> std::io::Result<SignalListener> {
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if !to.signal(SignalEvent::Interrupt(sig)) {
                        break;
                    }
                }
            })?;
        Ok(SignalListener {
            handle,
            thread: Some(thread),
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
