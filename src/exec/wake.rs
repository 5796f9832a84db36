//! The runner's requests to a live attempt ([`Control`]), and how they wake the thread
//! that supervises it.
//!
//! A local attempt is supervised by one thread sleeping in `poll` on the child's pidfd
//! and its output pipe. A channel message alone cannot wake `poll`, so a request also
//! rings a bell: an eventfd the supervising thread listens on while the attempt runs.
//! Each thread makes its bell once and keeps it, so an attempt costs no file
//! descriptors for it. Other backends (Slurm) just receive from the channel.

use std::cell::OnceCell;
use std::ops::Deref;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, SendError, Sender};
use rustix::event::{EventfdFlags, eventfd};

use super::Control;

/// Where a request rings, while someone listens.
#[derive(Debug, Default)]
struct Bell {
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// It rang since someone began to listen: the listener must hush it at the end
    /// (an attempt nobody steered costs no `read` for that).
    rang: AtomicBool,
}

impl Bell {
    fn ring(&self) {
        let fd = self.fd.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fd) = fd.as_deref() {
            // Cannot block (non-blocking) and cannot meaningfully fail: the counter
            // saturates only after 2^64 - 2 rings nobody read.
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
            self.rang.store(true, Ordering::Relaxed);
        }
    }

    fn listen(&self, fd: Option<Arc<OwnedFd>>) {
        *self.fd.lock().unwrap_or_else(PoisonError::into_inner) = fd;
    }
}

/// A channel for the runner's requests to one attempt.
pub fn control_channel() -> (ControlTx, ControlRx) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let bell = Arc::new(Bell::default());
    (
        ControlTx {
            tx,
            bell: Arc::clone(&bell),
        },
        ControlRx { rx, bell },
    )
}

/// The runner's end: sends a request and wakes the attempt's supervisor.
#[derive(Clone, Debug)]
pub struct ControlTx {
    tx: Sender<Control>,
    bell: Arc<Bell>,
}

impl ControlTx {
    /// Fails only when the attempt is over (its receiver is gone).
    pub fn send(&self, request: Control) -> Result<(), SendError<Control>> {
        self.tx.send(request)?;
        self.bell.ring();
        Ok(())
    }
}

/// The attempt's end: a plain channel receiver (it derefs to one), plus the bell.
#[derive(Debug)]
pub struct ControlRx {
    rx: Receiver<Control>,
    bell: Arc<Bell>,
}

impl Deref for ControlRx {
    type Target = Receiver<Control>;

    fn deref(&self) -> &Receiver<Control> {
        &self.rx
    }
}

impl ControlRx {
    /// Rings this thread's bell on every request until the guard drops. `None` when
    /// the thread has no bell (the system refused an eventfd): the caller must then
    /// look at the channel now and then instead.
    pub(crate) fn listen(&self) -> Listening<'_> {
        let fd = thread_bell();
        self.bell.listen(fd.clone());
        Listening { rx: self, fd }
    }
}

/// A supervisor listening to its attempt's requests.
pub(crate) struct Listening<'a> {
    rx: &'a ControlRx,
    fd: Option<Arc<OwnedFd>>,
}

impl Listening<'_> {
    /// The bell to `poll` for readability, if there is one.
    pub(crate) fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_deref()
    }

    /// Silences the bell after it rang (the requests are in the channel).
    pub(crate) fn hush(&self) {
        if let Some(fd) = self.fd.as_deref() {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(fd, &mut count);
        }
    }
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.rx.bell.listen(None);
        // A ring that came after the last look must not wake the next attempt. No
        // ring can come after `listen(None)`: it rings under the same lock.
        if self.rx.bell.rang.load(Ordering::Relaxed) {
            self.hush();
        }
    }
}

/// This thread's bell, made on first use.
fn thread_bell() -> Option<Arc<OwnedFd>> {
    thread_local! {
        static BELL: OnceCell<Arc<OwnedFd>> = const { OnceCell::new() };
    }
    BELL.with(|cell| {
        if let Some(fd) = cell.get() {
            return Some(Arc::clone(fd));
        }
        // A refusal (too many open files, say) may pass: only a bell made is kept,
        // and the next attempt asks again.
        let fd = Arc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).ok()?);
        Some(Arc::clone(cell.get_or_init(|| fd)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{PollFd, PollFlags, poll};

    fn rung(fd: &OwnedFd) -> bool {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).unwrap() == 1
    }

    #[test]
    fn a_request_rings_the_listening_thread_and_reaches_the_channel() {
        let (tx, rx) = control_channel();
        // Sent before anyone listens: only the channel has it.
        tx.send(Control::Terminate).unwrap();
        let listening = rx.listen();
        let fd = listening
            .fd()
            .expect("eventfd available")
            .try_clone()
            .unwrap();
        assert!(!rung(&fd));
        assert_eq!(rx.try_recv(), Ok(Control::Terminate));
        tx.send(Control::Kill).unwrap();
        assert!(rung(&fd));
        listening.hush();
        assert!(!rung(&fd));
        assert_eq!(rx.try_recv(), Ok(Control::Kill));
        drop(listening);
        // Nobody listens any more: the request waits in the channel, the bell is quiet.
        tx.send(Control::Terminate).unwrap();
        assert!(!rung(&fd));
    }

    #[test]
    fn sending_to_a_finished_attempt_fails() {
        let (tx, rx) = control_channel();
        drop(rx);
        assert!(tx.send(Control::Kill).is_err());
    }
}
