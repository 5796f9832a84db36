//! The state sink: the one writer of the state file during a run.
//!
//! The dispatcher feeds it events (cheap: an in-memory update under a lock); a writer
//! thread serializes and replaces the file, coalescing bursts so that 10,000 fast specs
//! do not mean 10,000 serial fsyncs, and writing at once when a retry is scheduled or
//! the run ends. The dispatcher waits for a retry's state to be on disk before starting
//! the retry, without blocking anything else.
//!
//! Its model is the run's one copy of the state: the live view a control socket serves
//! reads it through a `StateView` and follows it through an `Observer`, rather than
//! keeping a second copy.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use crossbeam_channel::{Receiver, Sender};

use super::model::{AttemptRecord, LogPath, RunningProcess, SpecState, StateFile};
use super::store;
use crate::events::EventSink;
use crate::events::{Event, EventKind, Status};

/// Shortest time between two writes of a burst. A runner killed meanwhile loses at
/// most this much of what is not urgent (attempts started and ended: the next run
/// finds their processes by run id, and redoes what it cannot see ended).
const COALESCE: Duration = Duration::from_millis(100);
/// The writer rests at least this many times as long as its last write took, so that
/// with a huge pipeline it costs a bounded share of a core (under a tenth; at 10,000
/// specs the file is 4 MB, and 4 as the factor cost 2 % of the run's CPU more).
const REST_FACTOR: u32 = 10;

/// Called under the model's lock right after each event is applied to it. The live
/// view sends the event to its subscribers there: a subscription, which takes its
/// snapshot under the same lock, then sees every event either in the snapshot or
/// after it, never both, never neither.
pub type Observer = Box<dyn FnMut(&Event) + Send>;

/// What the writer tells whoever waits for the disk (the dispatcher, through its
/// inbox: `state` does not know who that is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// This version is on disk, or writing it failed (then `is_durable` says so and
    /// nobody should wait any more).
    Version(u64),
    /// The writer has ended (closed, or died): nothing more will reach the disk.
    Gone,
}

/// Called on the writer's thread with each [`Written`].
pub type Notifier = Box<dyn Fn(Written) + Send>;

/// The state, and the specs that changed since the last write. A write serializes
/// those under the lock (O(changed specs)) and copies every other spec's entry from
/// the file it wrote last (`OnDisk`), outside the lock: no spec is kept serialized in
/// memory (that was ~500 bytes per spec, the largest part of a run's memory).
struct Model {
    file: StateFile,
    dirty: BTreeSet<String>,
    observer: Option<Observer>,
}

/// What the writer knows of the file it wrote last. Only the writer writes the file.
#[derive(Default)]
struct OnDisk {
    /// That file, open: a later rename over its name does not change what it reads.
    file: Option<File>,
    /// Per spec, in the file's (name) order: where its `"name":{…}` entry starts in it;
    /// one more at the end, 2 bytes past the last entry. Entries are separated by
    /// `,\n`, so entry `i` ends 2 bytes before `starts[i + 1]` (8 bytes a spec, where
    /// offset and length were 16: the writer holds two of these while it writes).
    starts: Vec<u64>,
}

/// What separates two entries of the file's `specs`.
const SEPARATOR: &[u8] = b",\n";

impl OnDisk {
    /// How many entries the file holds.
    fn entries(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Where entry `i` is: its offset and length.
    fn range(&self, i: usize) -> Option<(u64, u32)> {
        let (&from, &next) = (self.starts.get(i)?, self.starts.get(i + 1)?);
        let len = next.checked_sub(from + SEPARATOR.len() as u64)?;
        Some((from, u32::try_from(len).ok()?))
    }
}

/// A write's part done under the lock: the header and the entries serialized anew.
struct Changes {
    header: String,
    /// (index in name order, `"name":{…}`), in name order.
    fresh: Vec<(usize, Vec<u8>)>,
    /// How many specs the file holds.
    count: usize,
    /// The names taken from `Model::dirty`: marked again if the write fails.
    dirty: BTreeSet<String>,
}

struct Shared {
    dir: PathBuf,
    model: Mutex<Model>,
    /// Bumped on every change.
    version: AtomicU64,
    /// The last version on disk.
    written: AtomicU64,
    /// Set when a write failed: nobody should wait for durability any more.
    failed: AtomicBool,
    /// Set when a `Dirty` message is on its way: further changes need not wake the
    /// writer again (each wake-up is a context switch; a burst needs one).
    notified: AtomicBool,
    error: Mutex<Option<String>>,
}

enum Msg {
    Dirty,
    Urgent,
    Close,
}

/// What the dispatcher holds to wait for durability (the news that a version reached
/// the disk comes through the sink's `Notifier`).
#[derive(Clone)]
pub struct StateHandle {
    shared: Arc<Shared>,
}

impl StateHandle {
    /// The version that includes every event so far.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::SeqCst)
    }

    /// Whether `version` is on disk (or writes are failing, so waiting is pointless).
    pub fn is_durable(&self, version: u64) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
            || self.shared.written.load(Ordering::SeqCst) >= version
    }
}

/// A read-only look at the run's state, as the events so far left it (the live
/// view's source). Clones share it.
#[derive(Clone)]
pub struct StateView {
    shared: Arc<Shared>,
}

impl StateView {
    /// Runs `f` on the state, under the lock events are applied under: keep it short,
    /// the dispatcher waits meanwhile.
    pub fn read<R>(&self, f: impl FnOnce(&StateFile) -> R) -> R {
        f(&lock(&self.shared.model).file)
    }
}

pub struct StateSink {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    writer: Option<JoinHandle<()>>,
    handle: StateHandle,
}

fn lock(m: &Mutex<Model>) -> MutexGuard<'_, Model> {
    // A panic elsewhere must not stop the state from being saved.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StateSink {
    /// Writes `initial` synchronously (so an unwritable folder fails before any spec
    /// starts), then keeps it current from events. `notify` hears of each write, and
    /// of the writer's end.
    pub fn start(dir: PathBuf, initial: StateFile, notify: Notifier) -> std::io::Result<StateSink> {
        let model = Model {
            file: initial,
            dirty: BTreeSet::new(),
            observer: None,
        };
        // Every entry serialized as it is written, none held as text: the state is
        // nobody else's yet (~2 MB less at 10,000 specs, the run's peak before).
        let changes = model.header();
        let mut disk = write_file(&dir, &changes, &OnDisk::default(), Some(&model.file))?;
        drop(changes);
        let shared = Arc::new(Shared {
            dir,
            model: Mutex::new(model),
            version: AtomicU64::new(1),
            written: AtomicU64::new(1),
            failed: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            error: Mutex::new(None),
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                // Told however the thread ends, a panic included: whoever waits for
                // the disk must stop waiting rather than wait forever.
                let notify = GoneOnDrop(notify);
                writer_loop(&writer_shared, &rx, &notify.0, &mut disk);
            })?;
        Ok(StateSink {
            handle: StateHandle {
                shared: shared.clone(),
            },
            shared,
            tx,
            writer: Some(writer),
        })
    }

    pub fn handle(&self) -> StateHandle {
        self.handle.clone()
    }

    /// A look at the state this sink keeps.
    pub fn view(&self) -> StateView {
        StateView {
            shared: self.shared.clone(),
        }
    }

    /// Calls `observer` after each event from now on, under the lock the event was
    /// applied under (see `Observer`).
    pub fn observe(&self, observer: Observer) {
        lock(&self.shared.model).observer = Some(observer);
    }

    /// Writes the final state and stops the writer; returns the first write error.
    pub fn close(&mut self) -> Option<String> {
        if let Some(w) = self.writer.take() {
            let _ = self.tx.send(Msg::Close);
            let _ = w.join();
        }
        self.shared.error.lock().ok().and_then(|e| e.clone())
    }

    fn apply(&self, event: &Event) -> bool {
        let mut guard = lock(&self.shared.model);
        let model = &mut *guard;
        if let Some(spec) = event_spec(event)
            && !model.dirty.contains(spec)
        {
            model.dirty.insert(spec.to_string());
        }
        let urgent = StateSink::update(&mut model.file, event);
        if let Some(observer) = model.observer.as_mut() {
            observer(event);
        }
        urgent
    }

    /// Applies one event to a state: what the file says after it. Returns whether it
    /// must reach the disk at once.
    pub fn update(m: &mut StateFile, event: &Event) -> bool {
        let mut urgent = false;
        match &event.kind {
            EventKind::RunStarted { run_id, .. } => {
                m.run_id = run_id.clone();
                m.runner_pid = std::process::id();
            }
            EventKind::AttemptStarted {
                spec,
                attempt,
                retry,
                log,
                log_number,
                started,
                ..
            } => {
                let made = m
                    .specs
                    .get_key_value(spec.as_str())
                    .map(|(key, _)| LogPath::new(log, key, *log_number, &mut m.log_roots));
                if let (Some(s), Some(made)) = (m.specs.get_mut(spec.as_str()), made) {
                    s.status = Status::Running;
                    // A manual restart starts a new cycle: its count shows at once.
                    s.retry_count = *retry;
                    s.set_running(started.map(|st| RunningProcess {
                        pid: st.pid,
                        pgid: st.pgid,
                        start_time: st.start_time,
                        job_id: st.job.map(|j| j.id),
                    }));
                    // Bounded history: a spec retried every night for months must not
                    // make every state write carry all of it.
                    if s.attempts.len() >= super::model::MAX_ATTEMPT_HISTORY {
                        let excess = s.attempts.len() + 1 - super::model::MAX_ATTEMPT_HISTORY;
                        s.attempts.drain(..excess);
                    }
                    // Most specs make one attempt or a few: grow one at a time up to
                    // four (a first `push` would reserve four, ~1 KB per spec, twice:
                    // here and in the live hub's copy), doubling after.
                    if s.attempts.len() == s.attempts.capacity() && s.attempts.len() < 4 {
                        s.attempts.reserve_exact(1);
                    }
                    s.attempts.push(AttemptRecord::started(
                        *log_number,
                        *attempt,
                        event.ts,
                        made,
                        started.and_then(|st| st.job).map(|j| j.id),
                    ));
                }
                // Not urgent: a runner killed before this reaches the disk leaves a
                // process the next run finds by its run id (`end_processes_of_run`).
            }
            EventKind::AttemptReattached {
                spec,
                attempt,
                log,
                log_number,
                job_id,
                ..
            } => {
                let made = m
                    .specs
                    .get_key_value(spec.as_str())
                    .map(|(key, _)| LogPath::new(log, key, *log_number, &mut m.log_roots));
                if let (Some(s), Some(made)) = (m.specs.get_mut(spec.as_str()), made) {
                    s.status = Status::Running;
                    s.set_running(Some(RunningProcess {
                        pid: 0,
                        pgid: 0,
                        start_time: None,
                        job_id: Some(*job_id),
                    }));
                    // The killed run recorded this attempt: it goes on, it is not new.
                    if !s.attempts.iter().any(|a| a.number == *log_number) {
                        s.attempts.push(AttemptRecord::started(
                            *log_number,
                            *attempt,
                            event.ts,
                            made,
                            Some(*job_id),
                        ));
                    }
                }
            }
            EventKind::AttemptFinished {
                spec,
                exit_code,
                signal,
                reason,
                log,
                ..
            } => {
                if let Some(s) = m.specs.get_mut(spec.as_str()) {
                    s.set_running(None);
                    if let Some(a) = s.attempts.iter_mut().rev().find(|a| a.log.path() == *log) {
                        a.ended_at = Some(event.ts);
                        a.exit_code = *exit_code;
                        a.set_end(signal.as_deref(), reason.as_deref());
                    }
                }
            }
            EventKind::RetryScheduled {
                spec, retry, delay, ..
            } => {
                if let Some(s) = m.specs.get_mut(spec.as_str()) {
                    s.status = Status::Backoff;
                    s.retry_count = *retry;
                    s.set_last_retry(
                        Some(event.ts),
                        Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                    );
                }
                urgent = true;
            }
            EventKind::SpecFinished {
                spec,
                status,
                reason,
                retries,
                ..
            } => {
                if let Some(s) = m.specs.get_mut(spec.as_str()) {
                    s.status = *status;
                    if *retries < s.retry_count {
                        // A scheduled retry cancelled before it ran (`fail_fast`) is
                        // not counted: the last retry is the one that last ran.
                        let at = s
                            .attempts
                            .iter()
                            .rev()
                            .find(|a| *retries > 0 && a.attempt == retries + 1)
                            .map(|a| a.started_at);
                        s.set_last_retry(at, s.last_delay_ms());
                    }
                    s.retry_count = *retries;
                    s.set_reason(reason.as_deref());
                    s.set_running(None);
                }
            }
            EventKind::SpecRestarted { spec, .. } => {
                if let Some(s) = m.specs.get_mut(spec.as_str()) {
                    s.status = Status::Pending;
                    s.retry_count = 0;
                    s.set_last_retry(s.last_retry_at(), None);
                    s.set_reason(None);
                }
                urgent = true;
            }
            EventKind::IterationStarted {
                spec,
                iteration,
                max_iterations,
                tasks_done,
                tasks_total,
                tasks_pending,
                tasks_in_progress,
                no_progress_streak,
                head,
                start_tasks_done,
            } => {
                if let Some(s) = m.specs.get_mut(spec.as_str()) {
                    s.set_iteration(Some(Box::new(super::model::IterationState {
                        iteration: *iteration,
                        max_iterations: *max_iterations,
                        no_progress_streak: *no_progress_streak,
                        tasks: counts(
                            *tasks_done,
                            *tasks_total,
                            *tasks_pending,
                            *tasks_in_progress,
                        ),
                        start_head: head.clone(),
                        start_tasks_done: *start_tasks_done,
                    })));
                    // A new iteration is a new retry cycle.
                    s.retry_count = 0;
                    s.set_last_retry(s.last_retry_at(), None);
                }
                // Urgent: a runner killed now must resume this iteration, not redo
                // the one before.
                urgent = true;
            }
            EventKind::IterationFinished {
                spec,
                tasks_done,
                tasks_total,
                tasks_pending,
                tasks_in_progress,
                no_progress_streak,
                ..
            } => {
                if let Some(s) = m.specs.get_mut(spec.as_str())
                    && let Some(it) = s.iteration_mut()
                {
                    it.no_progress_streak = *no_progress_streak;
                    it.tasks = counts(
                        *tasks_done,
                        *tasks_total,
                        *tasks_pending,
                        *tasks_in_progress,
                    );
                }
            }
            // A hook changes no spec's state.
            EventKind::HookFinished { .. } => {}
            EventKind::RunFinished { .. } => {
                m.finished_at = Some(event.ts);
                urgent = true;
            }
        }
        m.updated_at = Utc::now();
        urgent
    }
}

impl EventSink for StateSink {
    fn event(&mut self, event: &Event) {
        let urgent = self.apply(event);
        self.shared.version.fetch_add(1, Ordering::SeqCst);
        if urgent {
            let _ = self.tx.send(Msg::Urgent);
        } else if !self.shared.notified.swap(true, Ordering::SeqCst) {
            let _ = self.tx.send(Msg::Dirty);
        }
    }
}

impl Drop for StateSink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Task counts from an event's fields.
fn counts(
    done: Option<u32>,
    total: Option<u32>,
    pending: Option<u32>,
    in_progress: Option<u32>,
) -> Option<crate::tasks::TaskCounts> {
    let done = done?;
    let in_progress = in_progress.unwrap_or(0);
    let pending =
        pending.unwrap_or_else(|| total.unwrap_or(done).saturating_sub(done + in_progress));
    Some(crate::tasks::TaskCounts {
        done,
        pending,
        in_progress,
    })
}

fn event_spec(event: &Event) -> Option<&str> {
    match &event.kind {
        EventKind::AttemptStarted { spec, .. }
        | EventKind::AttemptReattached { spec, .. }
        | EventKind::AttemptFinished { spec, .. }
        | EventKind::RetryScheduled { spec, .. }
        | EventKind::IterationStarted { spec, .. }
        | EventKind::IterationFinished { spec, .. }
        | EventKind::SpecFinished { spec, .. }
        | EventKind::SpecRestarted { spec, .. } => Some(spec),
        EventKind::RunStarted { .. }
        | EventKind::RunFinished { .. }
        | EventKind::HookFinished { .. } => None,
    }
}

impl Model {
    /// Under the lock: the header, and the entries of the specs that changed since the
    /// file `disk` describes (all of them when there is none). O(changed specs) of
    /// serializing plus one walk over the names.
    fn changes(&mut self, disk: &OnDisk) -> Changes {
        let dirty = std::mem::take(&mut self.dirty);
        let all = disk.file.is_none() || disk.entries() != self.file.specs.len();
        let mut fresh = Vec::new();
        let mut scratch = Vec::new();
        // Both in name order: one walk over the two.
        let mut pending = dirty.iter().peekable();
        for (i, (name, s)) in self.file.specs.iter().enumerate() {
            while pending.next_if(|d| d.as_str() < &**name).is_some() {}
            if all || pending.peek().is_some_and(|d| d.as_str() == &**name) {
                entry_into(&mut scratch, name, s);
                // A copy of exactly its size.
                fresh.push((i, scratch.clone()));
            }
        }
        Changes {
            fresh,
            dirty,
            ..self.header()
        }
    }

    /// The header and the count, no entry.
    fn header(&self) -> Changes {
        let header = serde_json::json!({
            "version": self.file.version,
            "run_id": self.file.run_id,
            "runner_pid": self.file.runner_pid,
            "updated_at": self.file.updated_at,
            "finished_at": self.file.finished_at,
        })
        .to_string();
        Changes {
            header,
            fresh: Vec::new(),
            count: self.file.specs.len(),
            dirty: BTreeSet::new(),
        }
    }
}

/// Replaces `buf` with a spec's entry as the file holds it: `"name":{…}`.
fn entry_into(buf: &mut Vec<u8>, name: &str, s: &SpecState) {
    buf.clear();
    // Spec names are validated ([A-Za-z0-9._-]), but quote them properly anyway.
    let _ = serde_json::to_writer(&mut *buf, name);
    buf.push(b':');
    let value = buf.len();
    if serde_json::to_writer(&mut *buf, s).is_err() {
        buf.truncate(value);
        buf.extend_from_slice(b"null");
    }
}

/// Writes `{header fields…, "specs": {"name": {…}, …}}`, one spec per line: the
/// entries of `changes`, and every other one copied from the file `disk` describes.
/// Returns what the writer then knows of the new file. With `every`, each entry is
/// serialized from it as it is written instead (the first write).
fn write_file(
    dir: &Path,
    changes: &Changes,
    disk: &OnDisk,
    every: Option<&StateFile>,
) -> std::io::Result<OnDisk> {
    let mut starts = Vec::with_capacity(changes.count + 1);
    let file = store::write_atomic_with(dir, |out| {
        let head = changes.header.trim_end_matches('}');
        out.write_all(head.as_bytes())?;
        out.write_all(b",\"specs\":{")?;
        let mut at = (head.len() + 10) as u64;
        let mut old = disk.file.as_ref().map(OldFile::new).transpose()?;
        let mut fresh = changes.fresh.iter().peekable();
        let mut buf = Vec::new();
        let mut every = every.map(|f| f.specs.iter());
        for i in 0..changes.count {
            let sep: &[u8] = if i > 0 { SEPARATOR } else { b"\n" };
            out.write_all(sep)?;
            at += sep.len() as u64;
            let len = match (fresh.next_if(|(j, _)| *j == i), every.as_mut()) {
                (_, Some(specs)) => {
                    let Some((name, s)) = specs.next() else {
                        return Err(std::io::Error::other("the state changed while written"));
                    };
                    entry_into(&mut buf, name, s);
                    out.write_all(&buf)?;
                    buf.len()
                }
                (Some((_, entry)), None) => {
                    out.write_all(entry)?;
                    entry.len()
                }
                (None, None) => {
                    let (Some((from, len)), Some(old)) = (disk.range(i), old.as_mut()) else {
                        return Err(std::io::Error::other(
                            "the state file last written does not hold every spec",
                        ));
                    };
                    old.read(from, len, &mut buf)?;
                    out.write_all(&buf)?;
                    buf.len()
                }
            };
            // An entry's length must fit `range`'s u32.
            u32::try_from(len).map_err(std::io::Error::other)?;
            starts.push(at);
            at += len as u64;
        }
        if changes.count > 0 {
            starts.push(at + SEPARATOR.len() as u64);
        }
        out.write_all(b"\n}}\n")
    })?;
    Ok(OnDisk {
        file: Some(file),
        starts,
    })
}

/// The file last written, read front to back through a buffer.
struct OldFile<'a> {
    reader: BufReader<&'a File>,
    at: u64,
}

impl<'a> OldFile<'a> {
    fn new(file: &'a File) -> std::io::Result<OldFile<'a>> {
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        reader.seek(SeekFrom::Start(0))?;
        Ok(OldFile { reader, at: 0 })
    }

    /// Reads `len` bytes at `from` into `buf`.
    fn read(&mut self, from: u64, len: u32, buf: &mut Vec<u8>) -> std::io::Result<()> {
        if from != self.at {
            let ahead = i64::try_from(from).map_err(std::io::Error::other)?
                - i64::try_from(self.at).map_err(std::io::Error::other)?;
            self.reader.seek_relative(ahead)?;
        }
        buf.resize(len as usize, 0);
        self.reader.read_exact(buf)?;
        self.at = from + u64::from(len);
        Ok(())
    }
}

/// Says `Written::Gone` when dropped.
struct GoneOnDrop(Notifier);

impl Drop for GoneOnDrop {
    fn drop(&mut self) {
        (self.0)(Written::Gone);
    }
}

fn writer_loop(shared: &Shared, rx: &Receiver<Msg>, flushed: &Notifier, disk: &mut OnDisk) {
    let mut last_write: Option<Instant> = None;
    let mut rest = COALESCE;
    while let Ok(first) = rx.recv() {
        let urgent = !matches!(first, Msg::Dirty);
        let mut close = matches!(first, Msg::Close);
        // Coalesce a burst: wait out the interval unless something urgent arrives.
        if !urgent && let Some(t) = last_write {
            let deadline = t + rest;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(Msg::Dirty) => {}
                    Ok(Msg::Urgent) => break,
                    Ok(Msg::Close) => {
                        close = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        // Whatever else arrived is covered by this write; only a close matters now.
        close |= rx.try_iter().any(|msg| matches!(msg, Msg::Close));
        let began = Instant::now();
        write_now(shared, flushed, disk);
        last_write = Some(Instant::now());
        rest = COALESCE.max(began.elapsed() * REST_FACTOR);
        if close {
            break;
        }
    }
}

fn write_now(shared: &Shared, flushed: &Notifier, disk: &mut OnDisk) {
    let (version, changes) = {
        let mut m = lock(&shared.model);
        // Changes from here on must wake the writer again.
        shared.notified.store(false, Ordering::SeqCst);
        let version = shared.version.load(Ordering::SeqCst);
        if shared.written.load(Ordering::SeqCst) >= version {
            return;
        }
        (version, m.changes(disk))
    };
    match write_file(&shared.dir, &changes, disk, None) {
        Ok(written) => {
            *disk = written;
            shared.written.store(version, Ordering::SeqCst);
        }
        Err(e) => {
            // The file on disk is the one before: what changed since must be
            // serialized again next time.
            lock(&shared.model).dirty.extend(changes.dirty);
            shared.failed.store(true, Ordering::SeqCst);
            if let Ok(mut slot) = shared.error.lock()
                && slot.is_none()
            {
                *slot = Some(format!(
                    "cannot write the state file in `{}`: {e}",
                    shared.dir.display()
                ));
            }
        }
    }
    flushed(Written::Version(version));
}

/// The state a run starts from: the previous file's history, with each spec that will
/// run reset to pending.
pub fn initial_state(
    p: &crate::config::Pipeline,
    previous: Option<&StateFile>,
    plan: &super::resume::ResumePlan,
    run_id: &str,
) -> StateFile {
    let mut file = StateFile::new(run_id);
    // Gathered first and made into the map at once: a map built from sorted entries
    // has full nodes, where one built an insert at a time in name order has nodes
    // about half empty (~120 bytes per spec more, for the whole run).
    let mut specs: Vec<(std::sync::Arc<str>, SpecState)> = Vec::with_capacity(p.specs.len());
    for (i, spec) in p.specs.iter().enumerate() {
        let hash = plan.hashes[i].clone();
        let max = spec.policy.retry.max_retries;
        let mut s = previous
            .and_then(|prev| prev.specs.get(&spec.name).cloned())
            .unwrap_or_else(|| SpecState::new(hash.clone(), max));
        // An attempt cut short by the runner's death: close it, it does not count;
        // unless its batch job still runs and this run follows it again.
        let followed = plan
            .reattach
            .get(i)
            .copied()
            .flatten()
            .map(|(_, log_number)| log_number);
        for a in s
            .attempts
            .iter_mut()
            .filter(|a| a.ended_at.is_none() && Some(a.number) != followed)
        {
            a.ended_at = Some(Utc::now());
            a.set_reason("interrupted: the runner itself stopped (not counted as a retry)");
        }
        s.set_running(None);
        if plan.to_run[i] {
            s.status = Status::Pending;
            s.set_reason(None);
            s.definition_hash = hash;
            s.max_retries = max;
            s.retry_count = plan.initial_retries[i];
            if s.retry_count == 0 {
                // A new cycle: an earlier cycle's retries say nothing about this one.
                s.set_last_retry(None, None);
            }
            // A loop continues where it was, or starts afresh.
            s.set_iteration(plan.loops.get(i).cloned().flatten());
        } else if matches!(s.status, Status::Running | Status::Backoff) {
            s.status = Status::Stopped;
            s.set_reason(Some("interrupted: the runner itself stopped"));
        }
        specs.push((spec.name.clone(), s));
    }
    // Specs this pipeline does not name (another pipeline file sharing the folder, or
    // a spec removed for now) keep their history: nothing is dropped silently.
    if let Some(prev) = previous {
        for (name, s) in &prev.specs {
            if p.index_of(name).is_none() {
                let mut s = s.clone();
                if matches!(s.status, Status::Running | Status::Backoff) {
                    s.status = Status::Stopped;
                    s.set_reason(Some("interrupted: the runner itself stopped"));
                }
                s.set_running(None);
                specs.push((name.clone(), s));
            }
        }
    }
    file.specs = specs.into_iter().collect();
    file
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Tail;

    fn finished(spec: &str, status: Status, reason: &str) -> Event {
        Event {
            ts: Utc::now(),
            kind: EventKind::SpecFinished {
                spec: spec.into(),
                status,
                attempts: 1,
                retries: 0,
                reason: Some(reason.into()),
                log: None,
                iterations: None,
                tail: Tail::default(),
            },
        }
    }

    fn on_disk(dir: &Path) -> (String, StateFile) {
        let text = std::fs::read_to_string(dir.join(store::STATE_FILE)).unwrap();
        let file = serde_json::from_str(&text).unwrap();
        (text, file)
    }

    /// Each write serializes only the specs that changed and copies the others from
    /// the file written before: the file always says what the state says, byte for
    /// byte as if every spec had been serialized anew.
    #[test]
    fn a_write_copies_unchanged_specs_from_the_last_file_and_says_what_the_state_says() {
        let dir = tempfile::tempdir().unwrap();
        let mut initial = StateFile::new("run-1");
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let mut s = SpecState::new(format!("hash-{name}").as_str().into(), 2);
            s.set_reason(Some(&"é \"quoted\" \n line".repeat(i)));
            initial.specs.insert(name.into(), s);
        }
        let (flushed_tx, flushed) = crossbeam_channel::unbounded();
        let notify = Box::new(move |news| {
            let _ = flushed_tx.send(news);
        });
        let mut sink = StateSink::start(dir.path().to_path_buf(), initial, notify).unwrap();
        let handle = sink.handle();
        let (_, first) = on_disk(dir.path());
        assert_eq!(first.specs.len(), 4);
        assert_eq!(
            first.specs["c"].reason(),
            Some("é \"quoted\" \n line".repeat(2).as_str())
        );

        // One spec changes, then another (its entry longer than before), each write
        // on disk before the next.
        for (spec, reason) in [("b", "first"), ("c", &"longer ".repeat(50)[..]), ("a", "")] {
            sink.event(&finished(spec, Status::Failed, reason));
            let version = handle.version();
            while !handle.is_durable(version) {
                let _ = flushed.recv();
            }
            let (text, file) = on_disk(dir.path());
            assert_eq!(file.specs[spec].reason(), Some(reason), "{text}");
            assert_eq!(file.specs[spec].status, Status::Failed);
            // Byte for byte what serializing every spec anew gives.
            let model = sink.view().read(Clone::clone);
            let mut all = Model {
                file: model,
                dirty: BTreeSet::new(),
                observer: None,
            };
            let changes = all.changes(&OnDisk::default());
            let scratch = tempfile::tempdir().unwrap();
            write_file(scratch.path(), &changes, &OnDisk::default(), None).unwrap();
            let (expected, _) = on_disk(scratch.path());
            assert_eq!(text, expected);
            // And what a first write gives, serializing each entry as it writes it.
            let streamed = tempfile::tempdir().unwrap();
            write_file(
                streamed.path(),
                &all.header(),
                &OnDisk::default(),
                Some(&all.file),
            )
            .unwrap();
            assert_eq!(on_disk(streamed.path()).0, expected);
        }
        sink.close();
        // The last news of a writer is its end: whoever waits for the disk stops.
        assert_eq!(flushed.try_iter().last(), Some(Written::Gone));
        let (_, last) = on_disk(dir.path());
        assert_eq!(last.specs["d"].status, Status::Pending);
        assert_eq!(last.specs["d"].definition_hash, "hash-d");
        assert_eq!(last.specs["b"].reason(), Some("first"));
    }
}
