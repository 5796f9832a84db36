//! One watcher thread per run: one `squeue` call per poll interval for all of the
//! run's jobs, each job's state sent to the worker that waits for it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::cmd::{self, CmdError, JobState, Listed};

/// Why one poll saw nothing of its jobs.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// `squeue` ran and refused (a controller that is down, a bad option).
    #[error("squeue failed: {stderr}")]
    Refused { stderr: String },
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

/// What one poll saw of a job.
#[derive(Clone, Debug)]
pub enum Seen {
    /// Listed, in this state.
    Listed(JobState),
    /// Not listed any more (purged after `MinJobAge`, or never known).
    Gone,
    /// `squeue` itself failed; the next poll tries again. Shared by every job of
    /// the poll.
    Failed(Arc<PollError>),
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
    let listed = match query(ids) {
        Ok(listed) => listed,
        Err(e) => {
            let why = Arc::new(e);
            return ids
                .iter()
                .map(|&id| (id, Seen::Failed(why.clone())))
                .collect();
        }
    };
    let mut by_id: HashMap<u64, JobState> = listed.into_iter().map(|l| (l.id, l.state)).collect();
    ids.iter()
        .map(|&id| {
            let seen = by_id.remove(&id).map_or(Seen::Gone, Seen::Listed);
            (id, seen)
        })
        .collect()
}

/// One `squeue` call for `ids`: the jobs it lists (none of them known is no error).
pub fn query(ids: &[u64]) -> Result<Vec<Listed>, PollError> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let args: Vec<OsString> = ["-h", "-t", "all", "-j", &list, "-o", cmd::SQUEUE_FORMAT]
        .iter()
        .map(OsString::from)
        .collect();
    let out = cmd::run("squeue", &args, &[], None, cmd::COMMAND_TIMEOUT)?;
    if out.success {
        Ok(cmd::parse_squeue(&out.stdout))
    } else if cmd::squeue_knows_none(&out.stderr) {
        Ok(Vec::new())
    } else {
        Err(PollError::Refused {
            stderr: out.stderr.trim().to_string(),
        })
    }
}
