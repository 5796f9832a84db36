//! Reused helper threads for attempts (output pump, leader waiter).
//!
//! Spawning and joining two threads per attempt costs about 110 µs on this kind of
//! machine, a third of the runner's own cost per attempt when commands are short; a
//! handoff to an idle thread costs well under a microsecond. Every task gets a thread
//! at once — an idle one, or a new one — so a task never waits behind another (a pump
//! queued behind a pump that never ends would stall its attempt).

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};

type Task = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    tx: Sender<Task>,
    rx: Receiver<Task>,
    /// Threads waiting for a task, minus tasks sent to them and not yet taken.
    idle: AtomicUsize,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::unbounded();
        Pool {
            tx,
            rx,
            idle: AtomicUsize::new(0),
        }
    })
}

/// Completion of a task started with [`spawn`].
pub(crate) struct Done(Receiver<()>);

impl Done {
    /// Waits for the task to finish (or to have panicked).
    pub(crate) fn join(self) {
        let _ = self.0.recv();
    }
}

/// Runs `task` on a helper thread now.
pub(crate) fn spawn(name: &str, task: impl FnOnce() + Send + 'static) -> std::io::Result<Done> {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let task: Task = Box::new(move || {
        // A panic is reported as completion; the thread lives on for the next task.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(task));
        let _ = done_tx.send(());
    });
    let p = pool();
    // Reserve an idle thread if there is one; otherwise start a new thread for it.
    let reserved = p
        .idle
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok();
    if reserved {
        // Cannot fail: the pool holds a receiver for as long as the process lives.
        let _ = p.tx.send(task);
    } else {
        std::thread::Builder::new()
            .name(format!("exec-{name}"))
            .spawn(move || {
                task();
                loop {
                    p.idle.fetch_add(1, Ordering::AcqRel);
                    match p.rx.recv() {
                        Ok(next) => next(),
                        Err(_) => return,
                    }
                }
            })?;
    }
    Ok(Done(done_rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tasks_never_wait_behind_a_blocked_task() {
        // A task that blocks until told, then one that must run meanwhile.
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let blocked = spawn("t", move || {
            let _ = release_rx.recv();
        })
        .unwrap();
        let (ran_tx, ran_rx) = crossbeam_channel::bounded(1);
        let second = spawn("t", move || {
            let _ = ran_tx.send(());
        })
        .unwrap();
        assert!(
            ran_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "second task waited"
        );
        second.join();
        release_tx.send(()).unwrap();
        blocked.join();
        // Threads are reused: many sequential tasks all complete.
        for _ in 0..100 {
            spawn("t", || {}).unwrap().join();
        }
    }

    #[test]
    fn a_panicking_task_still_completes() {
        spawn("t", || panic!("boom")).unwrap().join();
        spawn("t", || {}).unwrap().join();
    }
}
