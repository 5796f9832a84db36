//! The persisted state of a pipeline: what each spec did, across runs.
//!
//! Plain data with serde; `store` reads and writes it, `sink` keeps it current during a
//! run. The format is versioned: a newer file is refused, never misread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::policy::{CommandLine, Pipeline, Spec};
use crate::events::Status;

/// Attempts kept per spec in the state file (the oldest go first; their logs stay).
pub const MAX_ATTEMPT_HISTORY: usize = 100;

/// The version this build writes and reads.
pub const STATE_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateFile {
    pub version: u32,
    /// The run that last wrote this file.
    pub run_id: String,
    /// The pid of the runner that last wrote this file.
    pub runner_pid: u32,
    pub updated_at: DateTime<Utc>,
    /// When the run ended; `None` while it runs, or forever if the runner was killed.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// By name; a run shares the names with its pipeline's specs.
    pub specs: BTreeMap<std::sync::Arc<str>, SpecState>,
    /// The log folders (`retry_log_dir`) of this run's attempts, each once: see
    /// `LogPath::Made`. Not in the file.
    #[serde(skip)]
    pub log_roots: Vec<std::sync::Arc<std::path::Path>>,
}

impl StateFile {
    pub fn new(run_id: &str) -> StateFile {
        StateFile {
            version: STATE_VERSION,
            run_id: run_id.to_string(),
            runner_pid: std::process::id(),
            updated_at: Utc::now(),
            finished_at: None,
            specs: BTreeMap::new(),
            log_roots: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(from = "SpecStateOnDisk")]
pub struct SpecState {
    pub status: Status,
    /// The latest attempts (at most `MAX_ATTEMPT_HISTORY`), oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Retries in the current cycle (a manual restart or a changed definition resets it).
    pub retry_count: u32,
    pub max_retries: u32,
    /// Hash of command, cwd, env and dependencies: a change means "run again".
    pub definition_hash: DefinitionHash,
    /// The last retry, the reason, the live process and the loop (see the accessors),
    /// boxed together: most specs have none of them most of the time, and a run holds
    /// one `SpecState` per spec (112 → 64 bytes).
    more: Option<Box<SpecMore>>,
}

/// See `SpecState::more`.
#[derive(Clone, Debug, Default, PartialEq)]
struct SpecMore {
    last_retry_at: Option<DateTime<Utc>>,
    last_delay_ms: Option<u64>,
    reason: Option<Box<str>>,
    running: Option<RunningProcess>,
    iteration: Option<Box<IterationState>>,
}

impl SpecMore {
    fn is_empty(&self) -> bool {
        self.last_retry_at.is_none()
            && self.last_delay_ms.is_none()
            && self.reason.is_none()
            && self.running.is_none()
            && self.iteration.is_none()
    }
}

/// A spec's state as the state file holds it (read; named as the state in errors).
#[derive(Deserialize)]
#[serde(rename = "SpecState")]
struct SpecStateOnDisk {
    status: Status,
    #[serde(default)]
    attempts: Vec<AttemptRecord>,
    retry_count: u32,
    max_retries: u32,
    last_retry_at: Option<DateTime<Utc>>,
    #[serde(default)]
    last_delay_ms: Option<u64>,
    #[serde(default)]
    reason: Option<Box<str>>,
    definition_hash: DefinitionHash,
    #[serde(default)]
    running: Option<RunningProcess>,
    #[serde(default)]
    iteration: Option<Box<IterationState>>,
}

impl From<SpecStateOnDisk> for SpecState {
    fn from(s: SpecStateOnDisk) -> SpecState {
        let more = SpecMore {
            last_retry_at: s.last_retry_at,
            last_delay_ms: s.last_delay_ms,
            reason: s.reason,
            running: s.running,
            iteration: s.iteration,
        };
        SpecState {
            status: s.status,
            attempts: s.attempts,
            retry_count: s.retry_count,
            max_retries: s.max_retries,
            definition_hash: s.definition_hash,
            more: (!more.is_empty()).then(|| Box::new(more)),
        }
    }
}

/// A spec's state as the state file holds it (written): the fields in this order.
#[derive(Serialize)]
#[serde(rename = "SpecState")]
struct SpecStateToDisk<'a> {
    status: &'a Status,
    attempts: &'a [AttemptRecord],
    retry_count: u32,
    max_retries: u32,
    last_retry_at: Option<DateTime<Utc>>,
    last_delay_ms: Option<u64>,
    reason: Option<&'a str>,
    definition_hash: &'a DefinitionHash,
    running: Option<&'a RunningProcess>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iteration: Option<&'a IterationState>,
}

impl Serialize for SpecState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SpecStateToDisk {
            status: &self.status,
            attempts: &self.attempts,
            retry_count: self.retry_count,
            max_retries: self.max_retries,
            last_retry_at: self.last_retry_at(),
            last_delay_ms: self.last_delay_ms(),
            reason: self.reason(),
            definition_hash: &self.definition_hash,
            running: self.running(),
            iteration: self.iteration(),
        }
        .serialize(s)
    }
}

/// Where an iterating spec's loop is: enough to resume it in the same iteration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IterationState {
    /// The iteration started last (1 for the first).
    pub iteration: u32,
    pub max_iterations: u32,
    /// Iterations in a row without progress (no new commit, no more tasks checked).
    pub no_progress_streak: u32,
    /// The latest task counts (`None` without a tasks file).
    #[serde(default)]
    pub tasks: Option<crate::tasks::TaskCounts>,
    /// The git HEAD when the iteration started: its progress is measured from here.
    #[serde(default)]
    pub start_head: Option<String>,
    /// Tasks done when the iteration started.
    #[serde(default)]
    pub start_tasks_done: Option<u32>,
}

impl SpecState {
    pub fn new(definition_hash: DefinitionHash, max_retries: u32) -> SpecState {
        SpecState {
            status: Status::Pending,
            attempts: Vec::new(),
            retry_count: 0,
            max_retries,
            definition_hash,
            more: None,
        }
    }

    /// Changes what `more` holds; no box is kept (none allocated) when it holds nothing.
    fn change(&mut self, f: impl FnOnce(&mut SpecMore)) {
        match self.more.as_deref_mut() {
            Some(more) => {
                f(more);
                if more.is_empty() {
                    self.more = None;
                }
            }
            None => {
                let mut more = SpecMore::default();
                f(&mut more);
                if !more.is_empty() {
                    self.more = Some(Box::new(more));
                }
            }
        }
    }

    /// When the last retry was scheduled.
    pub fn last_retry_at(&self) -> Option<DateTime<Utc>> {
        self.more.as_ref().and_then(|m| m.last_retry_at)
    }

    /// The delay before the last scheduled retry, for decorrelated jitter on resume.
    pub fn last_delay_ms(&self) -> Option<u64> {
        self.more.as_ref().and_then(|m| m.last_delay_ms)
    }

    /// Sets both.
    pub fn set_last_retry(&mut self, at: Option<DateTime<Utc>>, delay_ms: Option<u64>) {
        self.change(|m| {
            m.last_retry_at = at;
            m.last_delay_ms = delay_ms;
        });
    }

    /// Why the spec ended as it did (failed, skipped, stopped).
    pub fn reason(&self) -> Option<&str> {
        self.more.as_ref().and_then(|m| m.reason.as_deref())
    }

    pub fn set_reason(&mut self, reason: Option<&str>) {
        self.change(|m| m.reason = reason.map(Box::from));
    }

    /// The live attempt's process, while one runs.
    pub fn running(&self) -> Option<&RunningProcess> {
        self.more.as_ref().and_then(|m| m.running.as_ref())
    }

    pub fn set_running(&mut self, running: Option<RunningProcess>) {
        self.change(|m| m.running = running);
    }

    /// For an iterating spec: where its loop is.
    pub fn iteration(&self) -> Option<&IterationState> {
        self.more.as_ref().and_then(|m| m.iteration.as_deref())
    }

    pub fn iteration_mut(&mut self) -> Option<&mut IterationState> {
        self.more.as_mut().and_then(|m| m.iteration.as_deref_mut())
    }

    pub fn set_iteration(&mut self, iteration: Option<Box<IterationState>>) {
        self.change(|m| m.iteration = iteration);
    }

    /// The highest log number used so far.
    pub fn last_log_number(&self) -> u32 {
        self.attempts.iter().map(|a| a.number).max().unwrap_or(0)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(from = "AttemptOnDisk")]
pub struct AttemptRecord {
    /// The log number: `task_<number>.log`. Counts every attempt ever made.
    pub number: u32,
    /// `SPEC_RUNNER_ATTEMPT` of that attempt: 1 + retries before it in its cycle.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub log: LogPath,
    /// The signal, the reason and the batch job, boxed together: most attempts have
    /// none of them, and a run holds an attempt record per spec (40 bytes less each).
    more: Option<Box<AttemptMore>>,
}

/// What few attempts have: see `AttemptRecord::more`.
#[derive(Clone, Debug, PartialEq)]
struct AttemptMore {
    signal: Option<Box<str>>,
    reason: Option<Box<str>>,
    job_id: Option<u64>,
}

impl AttemptRecord {
    /// An attempt that started at `started_at` and has not ended.
    pub fn started(
        number: u32,
        attempt: u32,
        started_at: DateTime<Utc>,
        log: LogPath,
        job_id: Option<u64>,
    ) -> AttemptRecord {
        AttemptRecord {
            number,
            attempt,
            started_at,
            ended_at: None,
            exit_code: None,
            log,
            more: AttemptMore::boxed(None, None, job_id),
        }
    }

    /// The signal that ended it (its name, e.g. `SIGKILL`).
    pub fn signal(&self) -> Option<&str> {
        self.more.as_ref().and_then(|m| m.signal.as_deref())
    }

    /// Why it failed or was cut short.
    pub fn reason(&self) -> Option<&str> {
        self.more.as_ref().and_then(|m| m.reason.as_deref())
    }

    /// The batch job that ran it (a backend that submits jobs).
    pub fn job_id(&self) -> Option<u64> {
        self.more.as_ref().and_then(|m| m.job_id)
    }

    /// Sets how it ended: the signal and the reason (the batch job stays).
    pub fn set_end(&mut self, signal: Option<&str>, reason: Option<&str>) {
        self.more = AttemptMore::boxed(signal.map(Box::from), reason.map(Box::from), self.job_id());
    }

    /// Sets the reason (the signal and the batch job stay).
    pub fn set_reason(&mut self, reason: &str) {
        let (signal, job_id) = match self.more.take() {
            Some(m) => (m.signal, m.job_id),
            None => (None, None),
        };
        self.more = AttemptMore::boxed(signal, Some(reason.into()), job_id);
    }
}

impl AttemptMore {
    /// `None` when there is nothing: no allocation.
    fn boxed(
        signal: Option<Box<str>>,
        reason: Option<Box<str>>,
        job_id: Option<u64>,
    ) -> Option<Box<AttemptMore>> {
        (signal.is_some() || reason.is_some() || job_id.is_some()).then(|| {
            Box::new(AttemptMore {
                signal,
                reason,
                job_id,
            })
        })
    }
}

/// An attempt record as the state file holds it (read; named as the record in errors).
#[derive(Deserialize)]
#[serde(rename = "AttemptRecord")]
struct AttemptOnDisk {
    number: u32,
    attempt: u32,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    signal: Option<Box<str>>,
    reason: Option<Box<str>>,
    log: LogPath,
    #[serde(default)]
    job_id: Option<u64>,
}

impl From<AttemptOnDisk> for AttemptRecord {
    fn from(a: AttemptOnDisk) -> AttemptRecord {
        AttemptRecord {
            number: a.number,
            attempt: a.attempt,
            started_at: a.started_at,
            ended_at: a.ended_at,
            exit_code: a.exit_code,
            log: a.log,
            more: AttemptMore::boxed(a.signal, a.reason, a.job_id),
        }
    }
}

/// An attempt record as the state file holds it (written): the fields in this order.
#[derive(Serialize)]
#[serde(rename = "AttemptRecord")]
struct AttemptToDisk<'a> {
    number: u32,
    attempt: u32,
    started_at: &'a DateTime<Utc>,
    ended_at: &'a Option<DateTime<Utc>>,
    exit_code: Option<i32>,
    signal: Option<&'a str>,
    reason: Option<&'a str>,
    log: &'a LogPath,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<u64>,
}

impl Serialize for AttemptRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AttemptToDisk {
            number: self.number,
            attempt: self.attempt,
            started_at: &self.started_at,
            ended_at: &self.ended_at,
            exit_code: self.exit_code,
            signal: self.signal(),
            reason: self.reason(),
            log: &self.log,
            job_id: self.job_id(),
        }
        .serialize(s)
    }
}

/// Where an attempt's log is: a path in the state file, whatever made it.
///
/// A run's own attempts keep theirs as its parts, `<root>/<spec>/task_<number>.log`,
/// the root shared by every spec with the same `retry_log_dir` (`StateFile::log_roots`)
/// and the name shared with the state's key: the path is made when it is written or
/// shown, rather than kept once per attempt (~64 bytes each, a tenth of a run's
/// memory per spec). A path read from a file, or not of that form, is kept as it is.
#[derive(Clone, Debug)]
pub enum LogPath {
    Path(Box<Path>),
    Made {
        root: Arc<Path>,
        spec: Arc<str>,
        number: u32,
    },
}

/// Distinct log roots past this many are not shared (each attempt keeps its path):
/// finding one is a walk over the list.
const MAX_LOG_ROOTS: usize = 16;

impl LogPath {
    /// The log of attempt `number` of `spec` at `log`, made from its parts when it is
    /// where the pool puts it (`root` then one of `roots`, added if new).
    pub fn new(log: &Path, spec: &Arc<str>, number: u32, roots: &mut Vec<Arc<Path>>) -> LogPath {
        let made = log
            .parent()
            .filter(|dir| dir.file_name() == Some(std::ffi::OsStr::new(&**spec)))
            .and_then(Path::parent)
            .filter(|_| log.file_name() == Some(std::ffi::OsStr::new(&task_log_name(number))));
        let root = made.and_then(|root| match roots.iter().find(|r| ***r == *root) {
            Some(r) => Some(r.clone()),
            None if roots.len() < MAX_LOG_ROOTS => {
                let r: Arc<Path> = Arc::from(root);
                roots.push(r.clone());
                Some(r)
            }
            None => None,
        });
        match root {
            // Only a path that its parts make again byte for byte (`Path`'s own
            // equality ignores doubled separators, the file's text would not).
            Some(root)
                if LogPath::made_path(&root, spec, number).as_os_str() == log.as_os_str() =>
            {
                LogPath::Made {
                    root,
                    spec: spec.clone(),
                    number,
                }
            }
            _ => LogPath::Path(log.into()),
        }
    }

    /// The path.
    pub fn path(&self) -> PathBuf {
        match self {
            LogPath::Path(p) => p.to_path_buf(),
            LogPath::Made { root, spec, number } => LogPath::made_path(root, spec, *number),
        }
    }

    fn made_path(root: &Path, spec: &str, number: u32) -> PathBuf {
        let name = task_log_name(number);
        let mut p = PathBuf::with_capacity(root.as_os_str().len() + spec.len() + name.len() + 2);
        p.push(root);
        p.push(spec);
        p.push(name);
        p
    }
}

fn task_log_name(number: u32) -> String {
    format!("task_{number}.log")
}

impl From<PathBuf> for LogPath {
    fn from(p: PathBuf) -> LogPath {
        LogPath::Path(p.into_boxed_path())
    }
}

impl From<&str> for LogPath {
    fn from(p: &str) -> LogPath {
        LogPath::Path(Path::new(p).into())
    }
}

impl PartialEq for LogPath {
    fn eq(&self, other: &LogPath) -> bool {
        match (self, other) {
            (LogPath::Path(a), LogPath::Path(b)) => a == b,
            _ => self.path() == other.path(),
        }
    }
}

impl Serialize for LogPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LogPath::Path(p) => p.serialize(s),
            LogPath::Made { .. } => self.path().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for LogPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LogPath, D::Error> {
        PathBuf::deserialize(d).map(LogPath::from)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunningProcess {
    pub pid: u32,
    pub pgid: u32,
    /// Clock ticks since boot when it started: tells our process from a reused pid.
    pub start_time: Option<u64>,
    /// The batch job running it (pid and pgid are then 0): a later run re-attaches
    /// to it rather than ending a process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
}

/// A stable hash of what a spec runs: command, cwd, env, dependencies (by name).
pub fn definition_hash(p: &Pipeline, spec: &Spec) -> DefinitionHash {
    let mut h = Fnv::default();
    match &*spec.command {
        CommandLine::Shell(s) => {
            h.field(b"sh");
            h.field(s.as_bytes());
        }
        CommandLine::Argv(v) => {
            h.field(b"argv");
            for a in v {
                h.field(a.as_bytes());
            }
        }
    }
    h.field(b"cwd");
    h.field(spec.cwd.as_os_str().as_encoded_bytes());
    h.field(b"env");
    for (k, v) in spec.env.iter() {
        h.field(k.as_bytes());
        h.field(v.as_bytes());
    }
    h.field(b"deps");
    for &d in &spec.depends_on {
        h.field(p.specs[d].name.as_bytes());
    }
    // What makes a spec iterate is part of what it runs; only when present, so that
    // the hashes of other specs stay as earlier versions wrote them.
    if let Some(t) = spec.tasks() {
        h.field(b"tasks");
        h.field(t.as_os_str().as_encoded_bytes());
    }
    match spec.until() {
        Some(CommandLine::Shell(s)) => {
            h.field(b"until-sh");
            h.field(s.as_bytes());
        }
        Some(CommandLine::Argv(v)) => {
            h.field(b"until-argv");
            for a in v {
                h.field(a.as_bytes());
            }
        }
        None => {}
    }
    DefinitionHash::Fnv(h.0)
}

/// A spec's definition hash as the state file holds it: 16 lowercase hex digits (FNV-1a,
/// 64 bits), kept as the number; any other text (a hand-edited file, a test) is kept
/// as it is and compares unequal to every hash this version makes, so its spec runs
/// again. 16 bytes a spec in memory, where the text was 24 plus its allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefinitionHash {
    Fnv(u64),
    Text(Box<String>),
}

impl DefinitionHash {
    /// The text the state file holds.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            DefinitionHash::Fnv(h) => format!("{h:016x}").into(),
            DefinitionHash::Text(t) => t.as_str().into(),
        }
    }
}

impl From<&str> for DefinitionHash {
    fn from(s: &str) -> DefinitionHash {
        // Only the exact form `text` writes reads as a number, so every text reads
        // back as it was written.
        let canonical = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match u64::from_str_radix(s, 16) {
            Ok(h) if canonical => DefinitionHash::Fnv(h),
            _ => DefinitionHash::Text(Box::new(s.to_string())),
        }
    }
}

impl PartialEq<&str> for DefinitionHash {
    fn eq(&self, other: &&str) -> bool {
        self.text() == *other
    }
}

impl Serialize for DefinitionHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DefinitionHash::Fnv(h) => {
                // Without an allocation: this is written for every spec.
                let mut buf = [0u8; 16];
                let mut v = *h;
                for b in buf.iter_mut().rev() {
                    *b = b"0123456789abcdef"[(v & 0xf) as usize];
                    v >>= 4;
                }
                s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
            }
            DefinitionHash::Text(t) => s.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for DefinitionHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DefinitionHash, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DefinitionHash;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a definition hash (text)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DefinitionHash, E> {
                Ok(DefinitionHash::from(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &byte in b {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    /// A length-prefixed field, so that ("ab","c") and ("a","bc") differ.
    fn field(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_le_bytes());
        self.bytes(b);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::{AttemptRecord, DefinitionHash, LogPath, SpecState};

    #[test]
    fn a_spec_state_reads_and_writes_every_field_as_the_file_has_it() {
        let texts = [
            r#"{"status":"pending","attempts":[],"retry_count":0,"max_retries":3,"last_retry_at":null,"last_delay_ms":null,"reason":null,"definition_hash":"00000000000000ff","running":null}"#,
            r#"{"status":"backoff","attempts":[{"number":1,"attempt":1,"started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:00:01Z","exit_code":1,"signal":null,"reason":"exit code 1","log":"x.log"}],"retry_count":1,"max_retries":3,"last_retry_at":"2026-01-01T00:00:01Z","last_delay_ms":1500,"reason":null,"definition_hash":"h","running":null}"#,
            r#"{"status":"failed","attempts":[],"retry_count":2,"max_retries":2,"last_retry_at":"2026-01-01T00:00:01Z","last_delay_ms":null,"reason":"gave up","definition_hash":"h","running":{"pid":4,"pgid":4,"start_time":9},"iteration":{"iteration":2,"max_iterations":5,"no_progress_streak":0,"tasks":null,"start_head":null,"start_tasks_done":null}}"#,
            r#"{"status":"stopped","attempts":[],"retry_count":0,"max_retries":0,"last_retry_at":null,"last_delay_ms":700,"reason":null,"definition_hash":"h","running":null}"#,
        ];
        for text in texts {
            let s: SpecState = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&s).unwrap(), text);
        }
        // What an older file leaves out reads as nothing.
        let old: SpecState = serde_json::from_str(
            r#"{"status":"pending","retry_count":0,"max_retries":3,"last_retry_at":null,"definition_hash":"h"}"#,
        )
        .unwrap();
        assert_eq!((old.last_retry_at(), old.last_delay_ms()), (None, None));
        assert!(old.more.is_none() && old.attempts.is_empty());
        let mut s: SpecState = serde_json::from_str(texts[1]).unwrap();
        assert_eq!(s.last_delay_ms(), Some(1500));
        s.set_last_retry(s.last_retry_at(), None);
        assert!(s.last_retry_at().is_some() && s.last_delay_ms().is_none());
        s.set_reason(Some("why"));
        s.set_last_retry(None, None);
        assert_eq!(s.reason(), Some("why"));
        s.set_reason(None);
        assert!(s.more.is_none());
        let mut t: SpecState = serde_json::from_str(texts[2]).unwrap();
        assert_eq!(t.reason(), Some("gave up"));
        t.set_last_retry(None, Some(5));
        assert_eq!((t.reason(), t.last_delay_ms()), (Some("gave up"), Some(5)));
        // The process and the loop are kept with the rest, and each goes alone.
        assert_eq!(t.running().map(|r| r.pid), Some(4));
        assert_eq!(t.iteration().map(|i| i.iteration), Some(2));
        t.set_running(None);
        t.set_last_retry(None, None);
        t.set_reason(None);
        assert_eq!(t.iteration().map(|i| i.iteration), Some(2));
        t.iteration_mut().unwrap().iteration = 3;
        assert_eq!(t.iteration().map(|i| i.iteration), Some(3));
        t.set_iteration(None);
        assert!(t.more.is_none());
        assert!(std::mem::size_of::<SpecState>() <= 64);
    }

    #[test]
    fn an_attempt_record_reads_and_writes_every_field_as_the_file_has_it() {
        let texts = [
            r#"{"number":3,"attempt":2,"started_at":"2026-01-01T00:00:00Z","ended_at":null,"exit_code":null,"signal":null,"reason":null,"log":"l/a/task_3.log"}"#,
            r#"{"number":3,"attempt":2,"started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:01:00.500Z","exit_code":null,"signal":"SIGKILL","reason":"timed out","log":"l/a/task_3.log","job_id":77}"#,
            r#"{"number":1,"attempt":1,"started_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:00:01Z","exit_code":1,"signal":null,"reason":"exit code 1","log":"x.log"}"#,
            r#"{"number":1,"attempt":1,"started_at":"2026-01-01T00:00:00Z","ended_at":null,"exit_code":null,"signal":null,"reason":null,"log":"x.log","job_id":5}"#,
        ];
        for text in texts {
            let a: AttemptRecord = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&a).unwrap(), text);
        }
        // What is not there reads as nothing; an empty record holds no box.
        let a: AttemptRecord = serde_json::from_str(texts[0]).unwrap();
        assert_eq!((a.signal(), a.reason(), a.job_id()), (None, None, None));
        assert!(a.more.is_none());
        let mut b: AttemptRecord = serde_json::from_str(texts[1]).unwrap();
        assert_eq!(
            (b.signal(), b.reason(), b.job_id()),
            (Some("SIGKILL"), Some("timed out"), Some(77))
        );
        // Setting the end keeps the batch job; setting the reason keeps the rest.
        b.set_end(None, Some("gone"));
        assert_eq!(
            (b.signal(), b.reason(), b.job_id()),
            (None, Some("gone"), Some(77))
        );
        b.set_end(Some("SIGTERM"), None);
        b.set_reason("stopped");
        assert_eq!(
            (b.signal(), b.reason(), b.job_id()),
            (Some("SIGTERM"), Some("stopped"), Some(77))
        );
        let mut c: AttemptRecord = serde_json::from_str(texts[0]).unwrap();
        c.set_end(None, None);
        assert!(c.more.is_none());
        assert!(std::mem::size_of::<AttemptRecord>() <= 88);
    }

    #[test]
    fn a_log_where_the_pool_puts_it_is_kept_as_its_parts_and_written_as_the_path() {
        let mut roots = Vec::new();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let la = LogPath::new(
            Path::new("/w/.spec-runner/logs/a/task_3.log"),
            &a,
            3,
            &mut roots,
        );
        let lb = LogPath::new(
            Path::new("/w/.spec-runner/logs/b/task_1.log"),
            &b,
            1,
            &mut roots,
        );
        let (LogPath::Made { root: ra, .. }, LogPath::Made { root: rb, .. }) = (&la, &lb) else {
            panic!("not made from parts: {la:?} {lb:?}");
        };
        // One root for both specs.
        assert!(Arc::ptr_eq(ra, rb));
        assert_eq!(roots.len(), 1);
        assert_eq!(la.path(), Path::new("/w/.spec-runner/logs/a/task_3.log"));
        assert_eq!(
            serde_json::to_string(&la).unwrap(),
            "\"/w/.spec-runner/logs/a/task_3.log\""
        );
        assert_eq!(la, LogPath::from("/w/.spec-runner/logs/a/task_3.log"));
        // Read back, it is a path like any other.
        let read: LogPath = serde_json::from_str("\"/w/.spec-runner/logs/a/task_3.log\"").unwrap();
        assert_eq!(read, la);
        // Anything else is kept as it is.
        for (log, number) in [
            ("/w/logs/a/task_4.log", 3),
            ("/w/logs/other/task_3.log", 3),
            ("/w/logs/a/until_3.log", 3),
            ("task_3.log", 3),
            ("/w/logs//a/task_3.log", 3),
        ] {
            let kept = LogPath::new(Path::new(log), &a, number, &mut roots);
            assert!(matches!(kept, LogPath::Path(_)), "{log}");
            assert_eq!(kept.path(), Path::new(log));
        }
    }

    #[test]
    fn definition_hashes_read_and_write_back_as_they_were() {
        for text in [
            "00c0ffee12345678",
            "ffffffffffffffff",
            "0000000000000000",
            // Other forms (an older or hand-edited file) are kept as text.
            "00C0FFEE12345678",
            "c0ffee",
            "+0c0ffee12345678",
            "something else",
            "",
        ] {
            let json = serde_json::to_string(text).unwrap();
            let h: DefinitionHash = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&h).unwrap(), json, "{text}");
            assert_eq!(h, text);
        }
        let h: DefinitionHash = serde_json::from_str("\"00c0ffee12345678\"").unwrap();
        assert_eq!(h, DefinitionHash::Fnv(0x00c0_ffee_1234_5678));
        assert_ne!(DefinitionHash::from("00C0FFEE12345678"), h);
    }
}
