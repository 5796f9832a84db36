//! One watcher thread per run: one `squeue` call per poll interval for all of the
//! run's jobs, each job's state sent to the worker that waits for it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::cmd::{self, JobState};

/// What one poll saw of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Listed, with its job name.
    Listed(JobState, String),
    /// Not listed any more (purged after `MinJobAge`, or never known).
    Gone,
    /// `squeue` itself failed; the next poll tries again.
    Failed(String),
}

pub struct Watcher {
    shared: Arc<Shared>,
}

struct Shared {
    interval: Duration,
    jobs: Mutex<HashMap<u64, Sender<Seen>>>,
    started: Mutex<bool>,
}

impl Watcher {
    pub fn new(interval: Duration) -> Watcher {
        Watcher {
            shared: Arc::new(Shared {
                interval,
                jobs: Mutex::new(HashMap::new()),
                started: Mutex::new(false),
            }),
        }
    }

    /// Follows job `id` from the next poll on; its states arrive on the receiver.
    pub fn watch(&self, id: u64) -> Receiver<Seen> {
        let (tx, rx) = crossbeam_channel::unbounded();
        lock(&self.shared.jobs).insert(id, tx);
        let mut started = lock(&self.shared.started);
        if !*started {
            let weak = Arc::downgrade(&self.shared);
            if std::thread::Builder::new()
                .name("slurm-watch".into())
                .spawn(move || poll_loop(&weak))
                .is_ok()
            {
                *started = true;
            }
        }
        rx
    }

    pub fn forget(&self, id: u64) {
        lock(&self.shared.jobs).remove(&id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Polls while the watcher lives; ends with it.
fn poll_loop(shared: &Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let ids: Vec<u64> = lock(&s.jobs).keys().copied().collect();
        let interval = s.interval;
        if !ids.is_empty() {
            let seen = poll(&ids);
            let jobs = lock(&s.jobs);
            for (id, what) in seen {
                if let Some(tx) = jobs.get(&id) {
                    let _ = tx.send(what);
                }
            }
        }
        drop(s);
        std::thread::sleep(interval);
    }
}

/// One `squeue` call for `ids`: what it says of each.
pub fn poll(ids: &[u64]) -> Vec<(u64, Seen)> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let args: Vec<OsString> = ["-h", "-t", "all", "-j", &list, "-o", cmd::SQUEUE_FORMAT]
        .iter()
        .map(OsString::from)
        .collect();
    let listed = match cmd::run("squeue", &args, &[], None, cmd::COMMAND_TIMEOUT) {
        Ok(out) if out.success => cmd::parse_squeue(&out.stdout),
        Ok(out) if cmd::squeue_knows_none(&out.stderr) => Vec::new(),
        Ok(out) => {
            let why = format!("squeue failed: {}", out.stderr.trim());
            return ids
                .iter()
                .map(|&id| (id, Seen::Failed(why.clone())))
                .collect();
        }
        Err(why) => {
            return ids
                .iter()
                .map(|&id| (id, Seen::Failed(why.clone())))
                .collect();
        }
    };
    let mut by_id: HashMap<u64, (JobState, String)> = listed
        .into_iter()
        .map(|l| (l.id, (l.state, l.name)))
        .collect();
    ids.iter()
        .map(|&id| {
            let seen = by_id
                .remove(&id)
                .map_or(Seen::Gone, |(state, name)| Seen::Listed(state, name));
            (id, seen)
        })
        .collect()
}
