//! The dispatcher: one thread that owns all run state.
//!
//! It waits on its inbox (worker results, the state writer's news, signals, control
//! requests: `inbox.rs`) and its own timers (backoff waits, the progress tick), decides
//! what runs next, and emits events to the reporter and the state sink. Workers and the
//! signal thread only send it messages; nothing else mutates run state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::inbox::{Inbox, Wake};
use super::pool::{self, Job, JobKind, JobResult, Pool};
use super::signal::SignalEvent;
use crate::config::policy::Pipeline;
use crate::events::{Event, EventKind, EventSink, Status, Tail};
use crate::exec::{Control, ControlRx, ControlTx, EndCause, control_channel};
use crate::exit;
use crate::iterate::{self, Snapshot, Verdict};
use crate::retry::{self, Decision, FailureFacts, RetryContext, TimeoutKind};
use crate::state::model::IterationState;
use crate::state::sink::StateHandle;
use crate::tasks::TaskCounts;

pub(crate) mod steer;

/// What a run needs besides the pipeline.
pub struct RunOptions {
    pub run_id: String,
    /// Indices of the specs to run (with their dependencies already added).
    pub selected: Vec<bool>,
    /// Where each spec's retry count starts (carried over from saved state).
    pub initial_retries: Vec<u32>,
    /// How long ago a continued cycle's first attempt started (from saved state).
    pub cycle_age: Vec<Option<Duration>>,
    /// The delay before a continued cycle's last retry (from saved state).
    pub previous_delay: Vec<Option<Duration>>,
    /// The next log number of each spec (1 for a spec never run).
    pub next_log: Vec<u32>,
    /// Requested specs not run because they already succeeded unchanged.
    pub up_to_date: usize,
    /// The state sink's handle: a retry starts only once its state is on disk.
    pub state: Option<StateHandle>,
    /// What runs the attempts.
    pub backend: std::sync::Arc<dyn super::backend::Backend>,
    /// Requests from the control socket (stop or restart a spec, stop the run).
    pub steering: Option<steer::Steering>,
    /// Per spec: a job a killed runner left running, which its next attempt follows
    /// instead of starting anew (empty: none).
    pub reattach: Vec<Option<super::pool::Reattach>>,
    /// For iterating specs that continue an interrupted loop: where it was.
    pub loops: Vec<Option<Box<IterationState>>>,
}

#[derive(Debug)]
struct SpecRun {
    status: Status,
    /// Attempts started in this run.
    attempts: u32,
    /// Attempts of this retry cycle made by earlier runs (a resumed cycle).
    carried: u32,
    retry_count: u32,
    /// Dependencies in the run that have not succeeded yet.
    deps_left: u32,
    first_start: Option<Instant>,
    /// Boxed: set only while an attempt or hook runs (112 → 96 bytes a spec).
    control: Option<Box<ControlTx>>,
    next_log: u32,
    /// The `n` of the latest ended attempt's `task_<n>.log` (its path is made when
    /// needed: a path per spec is ~70 bytes at 10,000 specs).
    last_log: Option<u32>,
    /// Whether a failed attempt preceded success (a flaky spec).
    had_failure: bool,
    /// A retry is scheduled (counted in `retry_count`) but has not started yet.
    retry_pending: bool,
    /// A due retry found every slot taken: `retry_max_total_seconds` is checked
    /// again when it really starts.
    waited_for_slot: bool,
    /// The retry cycle's memory (the last delay, the last failure). Boxed: set only
    /// once an attempt failed or a resumed cycle carries a delay (96 → 80 bytes a spec).
    retrying: Option<Box<Retrying>>,
    /// The loop of an iterating spec (`tasks` or `until`). Boxed: most specs do not
    /// iterate, and a run holds one `SpecRun` per spec (304 → 160 bytes).
    looping: Option<Box<LoopRun>>,
}

/// See `SpecRun::retrying`.
#[derive(Debug, Default)]
struct Retrying {
    /// The delay before the cycle's last retry: the next backoff starts from it.
    previous_delay: Option<Duration>,
    /// Why the last attempt failed, and its output's end: a retry cancelled before
    /// it starts ends the spec with them.
    last_failure: Option<(String, Tail)>,
}

impl Retrying {
    fn is_empty(&self) -> bool {
        self.previous_delay.is_none() && self.last_failure.is_none()
    }
}

impl SpecRun {
    fn previous_delay(&self) -> Option<Duration> {
        self.retrying.as_ref().and_then(|r| r.previous_delay)
    }

    fn last_failure(&self) -> Option<&(String, Tail)> {
        self.retrying.as_ref().and_then(|r| r.last_failure.as_ref())
    }

    fn set_previous_delay(&mut self, delay: Option<Duration>) {
        self.change_retrying(|r| r.previous_delay = delay);
    }

    fn set_last_failure(&mut self, failure: Option<(String, Tail)>) {
        self.change_retrying(|r| r.last_failure = failure);
    }

    /// Changes what `retrying` holds; no box is kept (none allocated) when it holds
    /// nothing, as `SpecState::change` does with a spec state's rare fields.
    fn change_retrying(&mut self, f: impl FnOnce(&mut Retrying)) {
        match self.retrying.as_deref_mut() {
            Some(r) => {
                f(r);
                if r.is_empty() {
                    self.retrying = None;
                }
            }
            None => {
                let mut r = Retrying::default();
                f(&mut r);
                if !r.is_empty() {
                    self.retrying = Some(Box::new(r));
                }
            }
        }
    }

    /// The attempt numbered `next_log - 1` ended: its log is the latest.
    fn ended_log(&mut self) {
        self.last_log = Some(self.next_log.saturating_sub(1));
    }

    /// An iterating spec that has run iterations (in this run or a killed one it
    /// resumes) and waits for its next step: it is under way, not "not started".
    fn between_iterations(&self) -> bool {
        self.looping
            .as_ref()
            .is_some_and(|lr| lr.iteration > 1 || self.last_log.is_some())
    }

    /// Starts an iterating spec's loop afresh (a manual restart): iteration 1 next,
    /// after a look at the work.
    fn reset_loop(&mut self) {
        if let Some(lr) = self.looping.as_mut() {
            **lr = LoopRun {
                iteration: 0,
                streak: 0,
                before: Snapshot::default(),
                tasks: None,
                next: LoopStep::Look,
                checking: None,
            };
        }
    }
}

/// An iterating spec's loop, as this run sees it. The rules are `iterate`'s; this is
/// where the loop is.
#[derive(Debug)]
struct LoopRun {
    /// The iteration under way (0 before the first).
    iteration: u32,
    /// Iterations in a row without progress.
    streak: u32,
    /// The work when the iteration started: its progress is measured from here.
    before: Snapshot,
    /// The latest task counts, for the commands' environment.
    tasks: Option<TaskCounts>,
    /// What happens when the spec next leaves the ready queue.
    next: LoopStep,
    /// What the `until` command now running decides.
    checking: Option<Check>,
}

#[derive(Debug)]
enum LoopStep {
    /// Look at the work before anything runs in this run: it may be done already.
    Look,
    /// Run `until` (after an iteration, with the work as the iteration left it).
    Until(Snapshot),
    /// Run an attempt of the current iteration.
    Attempt,
}

/// Why `until` runs.
#[derive(Debug)]
enum Check {
    /// Before the first iteration of this run: done already? (The work as it was.)
    Before(Snapshot),
    /// After an iteration (the work as it left it).
    After(Snapshot),
}

/// Who depends on each spec: every list in one vector, found by offsets (a `Vec` per
/// spec cost 24 bytes each, with or without dependents).
#[derive(Debug, Default)]
struct Dependents {
    /// `starts[i]..starts[i + 1]`: where spec `i`'s dependents are in `all`.
    starts: Vec<usize>,
    all: Vec<usize>,
}

impl Dependents {
    fn new(p: &Pipeline) -> Dependents {
        let n = p.specs.len();
        let mut count = vec![0usize; n + 1];
        for s in &p.specs {
            for &dep in &s.depends_on {
                count[dep + 1] += 1;
            }
        }
        for i in 0..n {
            count[i + 1] += count[i];
        }
        let mut next = count.clone();
        let mut all = vec![0; count[n]];
        // Each list in pipeline order, as pushing one at a time gave.
        for (i, s) in p.specs.iter().enumerate() {
            for &dep in &s.depends_on {
                all[next[dep]] = i;
                next[dep] += 1;
            }
        }
        Dependents { starts: count, all }
    }
}

impl std::ops::Index<usize> for Dependents {
    type Output = [usize];
    fn index(&self, i: usize) -> &[usize] {
        &self.all[self.starts[i]..self.starts[i + 1]]
    }
}

/// Runs the pipeline to the end; returns the exit code. Everything that wakes the
/// dispatcher comes through `inbox`: its producers (the signal listener, the state
/// writer, the control socket) hold senders of it, and the pool gets one.
pub fn run(pipeline: &Pipeline, opts: RunOptions, sink: &mut dyn EventSink, inbox: Inbox) -> u8 {
    let mut d = Dispatcher::new(pipeline, opts);
    d.run(sink, inbox)
}

struct Dispatcher<'p> {
    p: &'p Pipeline,
    run_id: String,
    specs: Vec<SpecRun>,
    selected: Vec<bool>,
    dependents: Dependents,
    /// Specs whose dependencies are done and that have not started in this run.
    ready: VecDeque<usize>,
    /// Retries whose backoff is over (and whose state is on disk): they take the next
    /// free slot before anything in `ready`, in the order they became due.
    due: VecDeque<usize>,
    /// Backoff timers: (when, spec).
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    running: usize,
    stopping: bool,
    aborted: bool,
    fail_fast_tripped: bool,
    retries_used: u32,
    rng: StdRng,
    state: Option<StateHandle>,
    up_to_date: usize,
    /// Whether a reporter draws live output lines (only bars do).
    live_output: bool,
    backend: std::sync::Arc<dyn super::backend::Backend>,
    /// See `RunOptions::reattach`; taken by the spec's first attempt.
    reattach: Vec<Option<super::pool::Reattach>>,
    /// Per spec: the state version its scheduled retry must see on disk first.
    needs_version: Vec<u64>,
    /// Retries whose backoff is over, waiting for their state to reach the disk.
    awaiting_flush: Vec<usize>,
    /// Specs that failed for good whose `on_exhausted` must start, with their reason.
    hooks_due: Vec<(usize, String)>,
    /// Running hooks: (spec, control).
    hooks: Vec<(usize, ControlTx)>,
    /// Ctrl-C (or SIGTERM, SIGHUP) arrived: no hook starts any more.
    interrupted: bool,
    /// Requests from the control socket, and what they are waiting for.
    steer: steer::SteerState,
    /// `conclude`'s work list, empty between calls (kept for its allocation).
    conclude_work: Vec<(usize, Status, Option<String>, Tail)>,
    /// Attempts handed to the pool that no worker may have started yet, oldest first.
    queued: Vec<Queued>,
}

/// An attempt handed to the pool ahead of a free worker (see [`Dispatcher::dispatch`]):
/// always a spec's first, from `ready`, and what its dispatch changed, to undo if it is
/// withdrawn before it starts.
struct Queued {
    spec: usize,
    claim: pool::Claim,
    // What the dispatch changed, as it was before.
    retry_pending: bool,
    status: Status,
    first_start: Option<Instant>,
    reattach: Option<super::pool::Reattach>,
}

impl<'p> Dispatcher<'p> {
    fn new(p: &'p Pipeline, opts: RunOptions) -> Dispatcher<'p> {
        let n = p.specs.len();
        let dependents = Dependents::new(p);
        let mut specs = Vec::with_capacity(n);
        for (i, s) in p.specs.iter().enumerate() {
            specs.push(SpecRun {
                status: Status::Pending,
                attempts: 0,
                carried: opts.initial_retries.get(i).copied().unwrap_or(0),
                retry_count: opts.initial_retries.get(i).copied().unwrap_or(0),
                deps_left: count(s.depends_on.iter().filter(|&&d| opts.selected[d])),
                first_start: opts
                    .cycle_age
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|age| Instant::now().checked_sub(age).unwrap_or_else(Instant::now)),
                retrying: None,
                control: None,
                next_log: opts.next_log.get(i).copied().unwrap_or(1).max(1),
                last_log: None,
                had_failure: false,
                retry_pending: false,
                waited_for_slot: false,
                looping: s.iterates().then(|| {
                    let resumed = opts
                        .loops
                        .get(i)
                        .cloned()
                        .flatten()
                        .map(|b| *b)
                        .unwrap_or_default();
                    Box::new(LoopRun {
                        iteration: resumed.iteration,
                        streak: resumed.no_progress_streak,
                        before: Snapshot {
                            head: resumed.start_head,
                            tasks: resumed.start_tasks_done.map(|done| TaskCounts {
                                done,
                                ..TaskCounts::default()
                            }),
                        },
                        tasks: resumed.tasks,
                        next: LoopStep::Look,
                        checking: None,
                    })
                }),
            });
            // A resumed cycle's backoff goes on from its last delay.
            specs[i].set_previous_delay(opts.previous_delay.get(i).copied().flatten());
        }
        // A retry carried over from a killed runner is a due retry: it goes before specs
        // that have not started, as it would have in the run that scheduled it.
        let (mut due, mut ready) = (VecDeque::new(), VecDeque::new());
        for i in (0..n).filter(|&i| opts.selected[i] && specs[i].deps_left == 0) {
            if specs[i].carried > 0 {
                due.push_back(i);
            } else {
                ready.push_back(i);
            }
        }
        Dispatcher {
            p,
            run_id: opts.run_id,
            specs,
            selected: opts.selected,
            dependents,
            ready,
            due,
            timers: BinaryHeap::new(),
            running: 0,
            stopping: false,
            aborted: false,
            fail_fast_tripped: false,
            retries_used: 0,
            rng: StdRng::from_os_rng(),
            state: opts.state,
            up_to_date: opts.up_to_date,
            live_output: false,
            backend: opts.backend,
            reattach: opts.reattach,
            needs_version: vec![0; n],
            awaiting_flush: Vec::new(),
            hooks_due: Vec::new(),
            hooks: Vec::new(),
            interrupted: false,
            steer: steer::SteerState::new(opts.steering, n),
            conclude_work: Vec::new(),
            queued: Vec::new(),
        }
    }

    fn run(&mut self, sink: &mut dyn EventSink, inbox: Inbox) -> u8 {
        let started = Instant::now();
        let jobs = self.p.run.jobs.max(1);
        let selected_count = self.selected.iter().filter(|s| **s).count();
        sink.event(&Event::now(EventKind::RunStarted {
            run_id: self.run_id.clone(),
            specs: selected_count,
            up_to_date: self.up_to_date,
            jobs,
        }));
        let tick = sink.tick_interval();
        self.live_output = tick.is_some();
        // The pool takes the dispatcher's own sender: once the pool and every other
        // producer are gone, the inbox says so and the loop ends.
        let Inbox { tx, rx } = inbox;
        let pool = Pool::start(jobs.min(selected_count.max(1)), self.backend.clone(), tx);
        loop {
            self.fire_timers(sink);
            self.dispatch(&pool, sink);
            if self.running == 0
                && self.hooks.is_empty()
                && (self.stopping
                    || (self.ready.is_empty()
                        && self.due.is_empty()
                        && self.timers.is_empty()
                        && self.awaiting_flush.is_empty()))
            {
                break;
            }
            let mut timeout = self
                .timers
                .peek()
                .map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()));
            if let Some(tick) = tick {
                timeout = Some(timeout.map_or(tick, |t| t.min(tick)));
            }
            let timeout = timeout.unwrap_or(Duration::from_secs(3600));
            match rx.recv_timeout(timeout) {
                Ok(Wake::Job(result)) => self.on_result(result, sink),
                Ok(Wake::Flushed) => self.release_flushed(),
                Ok(Wake::WriterGone) => {
                    // The state writer is gone (it cannot have ended normally while
                    // the run lives): stop waiting for the disk.
                    self.state = None;
                    self.due.extend(self.awaiting_flush.drain(..));
                }
                Ok(Wake::Signal(sig)) => self.on_signal(sig, sink),
                Ok(Wake::Steer(cmd)) => self.on_command(cmd, sink),
                Err(RecvTimeoutError::Timeout) => sink.tick(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        drop(pool);
        self.finish(started, sink)
    }

    /// A worker's news of a job.
    fn on_result(&mut self, result: JobResult, sink: &mut dyn EventSink) {
        if let JobResult::Started { .. } = result {
            self.prune_taken();
        }
        match result {
            JobResult::Started {
                spec,
                attempt,
                log,
                log_number,
                started,
                live,
                reattached: true,
            } => {
                let s = &self.specs[spec];
                sink.event(&Event::now(EventKind::AttemptReattached {
                    spec: self.p.specs[spec].name.to_string(),
                    attempt,
                    retry: s.retry_count,
                    max_retries: self.p.specs[spec].policy.retry.max_retries,
                    log,
                    job_id: started.and_then(|s| s.job).map_or(0, |j| j.id),
                    live,
                    log_number,
                }));
            }
            JobResult::Started {
                spec,
                attempt,
                log,
                log_number,
                started,
                live,
                reattached: false,
            } => {
                let s = &self.specs[spec];
                sink.event(&Event::now(EventKind::AttemptStarted {
                    spec: self.p.specs[spec].name.to_string(),
                    attempt,
                    retry: s.retry_count,
                    max_retries: self.p.specs[spec].policy.retry.max_retries,
                    log,
                    pid: started.filter(|s| s.job.is_none()).map(|s| s.pid),
                    job_id: started.and_then(|s| s.job).map(|j| j.id),
                    live,
                    log_number,
                    started,
                }));
            }
            JobResult::Finished {
                spec,
                attempt,
                log,
                log_number,
                end,
            } => {
                self.running -= 1;
                self.specs[spec].control = None;
                self.specs[spec].next_log = log_number + 1;
                if let Some((log, end)) = self.steer_finished(spec, attempt, log, end, sink) {
                    self.finished(spec, attempt, log, end, sink);
                }
            }
            JobResult::HookFinished {
                spec,
                kind: JobKind::Until,
                log,
                end,
            } => {
                self.until_finished(spec, &log, &end, sink);
            }
            JobResult::HookFinished {
                spec,
                kind,
                log,
                end,
            } => {
                self.hooks.retain(|(i, _)| *i != spec);
                self.hook_finished(spec, kind, log, &end, sink);
            }
        }
    }

    fn on_signal(&mut self, sig: SignalEvent, sink: &mut dyn EventSink) {
        if let SignalEvent::Interrupt(_) = sig {
            // Hooks end like attempts (graceful first, then at once), but only on a
            // person's request: an `abort` rule lets them finish. None starts any more.
            let request = if self.interrupted {
                Control::Kill
            } else {
                Control::Terminate
            };
            self.interrupted = true;
            self.hooks_due.clear();
            for (_, c) in &self.hooks {
                let _ = c.send(request);
            }
        }
        if self.stopping {
            // A second request: no more grace.
            for s in &self.specs {
                if let Some(c) = &s.control {
                    let _ = c.send(Control::Kill);
                }
            }
            return;
        }
        // What was handed out ahead and has not started does not start now.
        self.withdraw(|_| true);
        self.stopping = true;
        for s in &self.specs {
            if let Some(c) = &s.control {
                let _ = c.send(Control::Terminate);
            }
        }
        // A backoff wait ends at once: the spec is stopped, not retried.
        let mut waiting: Vec<usize> = self.timers.drain().map(|Reverse((_, i))| i).collect();
        waiting.append(&mut self.awaiting_flush);
        for i in waiting {
            self.conclude(
                i,
                Status::Stopped,
                Some("stopped during backoff".into()),
                Tail::default(),
                sink,
            );
        }
        // A retry that was due but waiting for a free slot is stopped too; a spec that
        // never started stays pending (it runs next time).
        for i in std::mem::take(&mut self.due) {
            self.conclude(
                i,
                Status::Stopped,
                Some("stopped before its retry".into()),
                Tail::default(),
                sink,
            );
        }
        self.ready.clear();
    }

    fn fire_timers(&mut self, sink: &mut dyn EventSink) {
        let now = Instant::now();
        while let Some(Reverse((when, i))) = self.timers.peek().copied() {
            if when > now {
                break;
            }
            self.timers.pop();
            if self.stopping {
                self.conclude(
                    i,
                    Status::Stopped,
                    Some("stopped during backoff".into()),
                    Tail::default(),
                    sink,
                );
                continue;
            }
            if self.fail_fast_tripped {
                self.uncount_retry(i);
                self.conclude(
                    i,
                    Status::Failed,
                    Some("not retried: fail_fast".into()),
                    Tail::default(),
                    sink,
                );
                continue;
            }
            self.specs[i].status = Status::Pending;
            if self
                .state
                .as_ref()
                .is_some_and(|st| !st.is_durable(self.needs_version[i]))
            {
                self.awaiting_flush.push(i);
            } else {
                self.due.push_back(i);
            }
        }
    }

    /// A scheduled retry that will never run: it is not counted (a resume must not
    /// lose it, the summary must not show it).
    fn uncount_retry(&mut self, i: usize) {
        let s = &mut self.specs[i];
        if s.retry_pending {
            s.retry_pending = false;
            s.retry_count = s.retry_count.saturating_sub(1);
            self.retries_used = self.retries_used.saturating_sub(1);
        }
    }

    /// Whether due retry `i`, which waited for a free slot, would now start past
    /// `retry_max_total_seconds`: then the spec gives up instead (with the reason of
    /// its last failure, like a retry refused when it was scheduled).
    fn past_max_total(&mut self, i: usize, sink: &mut dyn EventSink) -> bool {
        let s = &self.specs[i];
        let Some(max_total) = self.p.specs[i].policy.retry.max_total else {
            return false;
        };
        let elapsed = s.first_start.map_or(Duration::ZERO, |t| t.elapsed());
        if !s.waited_for_slot || elapsed <= max_total {
            return false;
        }
        let (last, tail) = s.last_failure().cloned().unwrap_or_default();
        self.uncount_retry(i);
        self.conclude(
            i,
            Status::Failed,
            Some(format!(
                "{last}; next retry would start past retry_max_total_seconds ({}s): it waited {} for a free slot",
                max_total.as_secs_f64(),
                crate::report::human_duration(elapsed),
            )),
            tail,
            sink,
        );
        true
    }

    /// Retries whose state reached the disk may start.
    fn release_flushed(&mut self) {
        let Some(st) = &self.state else { return };
        let (go, wait): (Vec<usize>, Vec<usize>) = self
            .awaiting_flush
            .drain(..)
            .partition(|&i| st.is_durable(self.needs_version[i]));
        self.awaiting_flush = wait;
        self.due.extend(go);
    }

    fn dispatch(&mut self, pool: &Pool, sink: &mut dyn EventSink) {
        for (i, reason) in std::mem::take(&mut self.hooks_due) {
            if let Some((job, control)) = self.hook_job(i, reason) {
                tracing::debug!(spec = %job.name, log_dir = %job.log_dir.display(), "starting on_exhausted");
                pool.submit(job);
                self.hooks.push((i, control));
            }
        }
        // Hooks take worker threads too: attempts never queue behind them. Up to one
        // attempt per worker is handed out ahead, so that a worker that ends one starts
        // the next at once, without waiting for this thread to wake (which left a CPU
        // idle ~15 % of a run of short attempts: docs/PERFORMANCE.md). Such an attempt
        // is nobody's until a worker takes it: a stop or `fail_fast` withdraws it.
        let jobs = self.p.run.jobs;
        self.prune_taken();
        // What was handed out ahead and has not started goes back when a worker is free
        // (after a failure, a worker takes nothing ahead: it waits for a job from here)
        // and while a retry is scheduled: nothing goes ahead then, since a worker does
        // not ask before it takes what was handed out ahead, and the retry, once due,
        // goes first.
        let may_go_ahead =
            self.timers.is_empty() && self.awaiting_flush.is_empty() && self.due.is_empty();
        let free = self.running - self.queued.len() + self.hooks.len() < jobs;
        if !self.queued.is_empty() && (free || !may_go_ahead) {
            self.withdraw(|_| true);
        }
        while self.running + self.hooks.len() < 2 * jobs
            && !self.stopping
            && !self.fail_fast_tripped
        {
            let ahead = self.running + self.hooks.len() >= jobs;
            // Due retries first: a flaky spec must not wait behind every spec that has
            // not started yet.
            let (i, from_due) = match (self.due.front(), self.ready.front()) {
                (Some(&i), _) => (i, true),
                (None, Some(&i)) => (i, false),
                (None, None) => break,
            };
            // Only a spec's first attempt goes ahead: a retry's `max_total` is checked
            // when it really starts, and an iterating spec's dispatch may start a
            // check instead.
            if ahead && (!may_go_ahead || from_due || self.specs[i].looping.is_some()) {
                break;
            }
            if from_due {
                self.due.pop_front();
                if self.past_max_total(i, sink) {
                    continue;
                }
            } else {
                self.ready.pop_front();
            }
            if !self.loop_step(i, pool, sink) {
                continue;
            }
            let spec = &self.p.specs[i];
            let s = &mut self.specs[i];
            let mut queued = ahead.then(|| Queued {
                spec: i,
                claim: pool::new_claim(),
                retry_pending: s.retry_pending,
                status: s.status,
                first_start: s.first_start,
                reattach: None,
            });
            s.retry_pending = false;
            s.attempts += 1;
            s.status = Status::Running;
            s.first_start.get_or_insert_with(Instant::now);
            let (tx, rx) = control_channel();
            s.control = Some(Box::new(tx));
            let max = spec.policy.retry.max_retries;
            // One vector, sized once: the spec's own variables, then the runner's.
            let mut env = Vec::with_capacity(spec.env.len() + 4);
            env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
            env.extend([
                ("SPEC_RUNNER_SPEC".into(), spec.name.to_string().into()),
                (
                    "SPEC_RUNNER_ATTEMPT".into(),
                    (s.retry_count + 1).to_string().into(),
                ),
                (
                    "SPEC_RUNNER_MAX_ATTEMPTS".into(),
                    (u64::from(max) + 1).to_string().into(),
                ),
                ("SPEC_RUNNER_RUN_ID".into(), self.run_id.clone().into()),
            ]);
            if let Some(lr) = &s.looping {
                env.extend(loop_env(lr));
            }
            self.running += 1;
            tracing::debug!(spec = %spec.name, attempt = s.retry_count + 1, "starting attempt");
            let reattach = self.reattach.get_mut(i).and_then(Option::take);
            let claim = queued.as_mut().map(|q| {
                q.reattach = reattach;
                q.claim.clone()
            });
            let ahead_job = queued.is_some();
            self.queued.extend(queued);
            let job = Job {
                live: self.live_output,
                kind: JobKind::Attempt,
                spec: i,
                attempt: s.retry_count + 1,
                name: spec.name.to_string(),
                command: (*spec.command).clone(),
                cwd: spec.cwd.to_path_buf(),
                env,
                log_dir: log_path(spec, None),
                first_log_number: s.next_log,
                timeout: spec.policy.timeout,
                activity_timeout: spec.policy.activity_timeout,
                terminate_grace: spec.policy.terminate_grace,
                control: rx,
                backend: spec.policy.backend,
                reattach,
                claim,
            };
            if ahead_job {
                pool.submit_ahead(job);
            } else {
                pool.submit(job);
            }
        }
        for &i in &self.due {
            self.specs[i].waited_for_slot = true;
        }
    }

    /// Forgets the attempts handed out ahead that a worker took: they run, and cannot
    /// be withdrawn any more. Their spec's first start is then, not when it was handed
    /// out.
    fn prune_taken(&mut self) {
        let specs = &mut self.specs;
        self.queued.retain(|q| {
            // Only a worker settles a claim still in `queued` (withdrawal removes it).
            let taken = pool::is_settled(&q.claim);
            if taken && q.first_start.is_none() {
                specs[q.spec].first_start = Some(Instant::now());
            }
            !taken
        });
    }

    /// Takes back the attempts handed out ahead that no worker has started, of the
    /// specs `which` selects: each is undone as if never dispatched, back at the
    /// front of `ready`, in its place. Started ones are left to run.
    fn withdraw(&mut self, which: impl Fn(usize) -> bool) {
        let mut i = self.queued.len();
        while i > 0 {
            i -= 1;
            let q = &self.queued[i];
            if !which(q.spec) {
                continue;
            }
            if !pool::withdraw(&q.claim) {
                continue;
            }
            let q = self.queued.remove(i);
            let s = &mut self.specs[q.spec];
            s.attempts -= 1;
            s.status = q.status;
            s.retry_pending = q.retry_pending;
            s.first_start = q.first_start;
            s.control = None;
            self.running -= 1;
            if let Some(r) = q.reattach
                && let Some(slot) = self.reattach.get_mut(q.spec)
            {
                *slot = Some(r);
            }
            self.ready.push_front(q.spec);
        }
    }

    /// The `on_exhausted` job of spec `i`, when it has one.
    /// The latest ended attempt's log, as the pool named it.
    fn last_log(&self, i: usize) -> Option<PathBuf> {
        let spec = &self.p.specs[i];
        self.specs[i]
            .last_log
            .map(|n| log_path(spec, Some(&JobKind::Attempt.log_name(n))))
    }

    fn hook_job(&self, i: usize, reason: String) -> Option<(Job, ControlTx)> {
        let spec = &self.p.specs[i];
        let command = spec.policy.on_exhausted.clone()?;
        let s = &self.specs[i];
        let (tx, rx) = control_channel();
        let attempts = s.retry_count + 1;
        let log = self.last_log(i).unwrap_or_default();
        let env = vec![
            ("SPEC_RUNNER_SPEC".into(), spec.name.to_string().into()),
            ("SPEC_RUNNER_REASON".into(), reason.into()),
            ("SPEC_RUNNER_LOG".into(), log.into_os_string()),
            ("SPEC_RUNNER_ATTEMPTS".into(), attempts.to_string().into()),
            ("SPEC_RUNNER_RUN_ID".into(), self.run_id.clone().into()),
        ];
        // The pipeline's folder, not the spec's `cwd`: that may be why it failed.
        let job = self.helper_job(
            i,
            JobKind::OnExhausted,
            attempts,
            command,
            &self.p.dir,
            env,
            rx,
        );
        Some((job, tx))
    }

    /// A job the runner runs for spec `i` beside its attempts (`on_exhausted`, `until`):
    /// always here, whatever backend runs the attempts (a notification, or a check the
    /// runner reads the work with), its own log numbering, no hang detection (it may
    /// well print nothing).
    #[allow(clippy::too_many_arguments)]
    fn helper_job(
        &self,
        i: usize,
        kind: JobKind,
        attempt: u32,
        command: crate::config::policy::CommandLine,
        cwd: &std::path::Path,
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
        control: ControlRx,
    ) -> Job {
        let spec = &self.p.specs[i];
        Job {
            live: false,
            kind,
            spec: i,
            attempt,
            name: spec.name.to_string(),
            command,
            cwd: cwd.to_path_buf(),
            env,
            log_dir: log_path(spec, None),
            first_log_number: 1,
            timeout: spec.policy.timeout,
            activity_timeout: None,
            terminate_grace: spec.policy.terminate_grace,
            control,
            backend: crate::config::policy::BackendKind::Local,
            reattach: None,
            claim: None,
        }
    }

    fn hook_finished(
        &self,
        i: usize,
        kind: JobKind,
        log: PathBuf,
        end: &crate::exec::AttemptEnd,
        sink: &mut dyn EventSink,
    ) {
        let spec = &self.p.specs[i];
        let success = end.cause == EndCause::Exited && end.exit_code == Some(0);
        sink.event(&Event::now(EventKind::HookFinished {
            spec: spec.name.to_string(),
            hook: kind.key(),
            exit_code: end.exit_code,
            signal: end.signal.map(signal_text),
            reason: (!success).then(|| describe(end, spec.policy.timeout, None)),
            duration: end.duration,
            log,
        }));
    }

    fn finished(
        &mut self,
        i: usize,
        attempt: u32,
        log: PathBuf,
        end: crate::exec::AttemptEnd,
        sink: &mut dyn EventSink,
    ) {
        let spec = &self.p.specs[i];
        let success = end.cause == EndCause::Exited && end.exit_code == Some(0);
        // An empty tail (a quiet command) is the shared empty one: no allocation.
        let tail: Tail = if end.tail.is_empty() {
            Tail::default()
        } else {
            end.tail.as_slice().into()
        };
        // `sh -c` reports a child killed by signal N as exit 128 + N: for rules and
        // reasons, that is a signal (in the shell).
        let shell_signal = match *spec.command {
            crate::config::policy::CommandLine::Shell(_) if end.cause == EndCause::Exited => {
                retry::signal_in_shell(end.exit_code)
            }
            _ => None,
        };
        let reason = if success {
            None
        } else {
            let why = describe(&end, spec.policy.timeout, spec.policy.activity_timeout);
            Some(match shell_signal {
                Some(sig) => format!("{why} (killed by {} in the shell)", signal_text(sig)),
                None => why,
            })
        };
        self.specs[i].ended_log();
        sink.event(&Event::now(EventKind::AttemptFinished {
            spec: spec.name.to_string(),
            attempt,
            exit_code: end.exit_code,
            signal: end.signal.map(signal_text),
            reason: reason.clone(),
            duration: end.duration,
            log,
            tail: tail.clone(),
        }));
        if success {
            if self.specs[i].looping.is_some() {
                self.iteration_succeeded(i, tail, sink);
            } else {
                self.conclude(i, Status::Succeeded, None, tail, sink);
            }
            return;
        }
        let reason = reason.unwrap_or_default();
        self.specs[i].had_failure = true;
        self.specs[i].waited_for_slot = false;
        self.specs[i].set_last_failure(Some((reason.clone(), tail.clone())));
        match &end.cause {
            EndCause::Stopped => {
                self.conclude(i, Status::Stopped, Some(reason), tail, sink);
                return;
            }
            // It will not start next time either (`StartRefused` may: the policy decides).
            EndCause::SpawnFailed(_) => {
                self.conclude(i, Status::Failed, Some(reason), tail, sink);
                return;
            }
            EndCause::LogFailed(_) => {
                self.conclude(i, Status::Failed, Some(reason), tail, sink);
                return;
            }
            _ => {}
        }
        if self.stopping || self.fail_fast_tripped {
            self.conclude(i, Status::Failed, Some(reason), tail, sink);
            return;
        }
        let facts = FailureFacts {
            exit_code: end.exit_code,
            signal: end.signal.or(shell_signal),
            timeout: match end.cause {
                EndCause::TimedOut => Some(TimeoutKind::Total),
                EndCause::Hung => Some(TimeoutKind::Activity),
                _ => None,
            },
            output_tail: &tail,
        };
        let s = &self.specs[i];
        let ctx = RetryContext {
            retry: s.retry_count + 1,
            elapsed_since_first_start: s.first_start.map_or(Duration::ZERO, |t| t.elapsed()),
            budget_left: self
                .p
                .run
                .retry_budget
                .map(|b| b.saturating_sub(self.retries_used)),
            previous_delay: s.previous_delay(),
        };
        let decision = retry::decide(&spec.policy.retry, &facts, &ctx, &mut self.rng);
        tracing::info!(spec = %spec.name, attempt, ?decision, "decided after a failed attempt");
        match decision {
            Decision::Retry { delay, .. } => {
                let s = &mut self.specs[i];
                s.retry_count += 1;
                s.retry_pending = true;
                s.set_previous_delay(Some(delay));
                s.status = Status::Backoff;
                self.retries_used += 1;
                sink.event(&Event::now(EventKind::RetryScheduled {
                    spec: spec.name.to_string(),
                    retry: s.retry_count,
                    max_retries: spec.policy.retry.max_retries,
                    delay,
                    reason,
                }));
                self.needs_version[i] = self.state.as_ref().map_or(0, StateHandle::version);
                self.timers.push(Reverse((Instant::now() + delay, i)));
            }
            Decision::GiveUp { reason: why } => {
                self.conclude(
                    i,
                    Status::Failed,
                    Some(format!("{reason}; {why}")),
                    tail,
                    sink,
                );
            }
            Decision::Abort { reason: why } => {
                self.conclude(
                    i,
                    Status::Failed,
                    Some(format!("{reason}; {why}")),
                    tail,
                    sink,
                );
                self.abort(sink);
            }
        }
    }

    /// The work of spec `i` as it is now (task counts, git HEAD).
    fn look(&self, i: usize) -> Result<Snapshot, super::work::WorkError> {
        let dir = &self.p.dir;
        super::work::snapshot(&self.p.specs[i], &|p| crate::plan::show_path(dir, p))
    }

    /// An iterating spec left the ready queue: look at its work (done already?), run
    /// its `until`, or go on to an attempt (`true`).
    fn loop_step(&mut self, i: usize, pool: &Pool, sink: &mut dyn EventSink) -> bool {
        let Some(lr) = self.specs[i].looping.as_mut() else {
            return true;
        };
        match std::mem::replace(&mut lr.next, LoopStep::Attempt) {
            LoopStep::Attempt => true,
            LoopStep::Until(after) => {
                self.start_until(i, Check::After(after), pool);
                false
            }
            LoopStep::Look => {
                let now = match self.look(i) {
                    Ok(now) => now,
                    Err(why) => {
                        let why = why.to_string();
                        self.conclude(i, Status::Failed, Some(why), Tail::default(), sink);
                        return false;
                    }
                };
                if let Some(lr) = self.specs[i].looping.as_mut() {
                    lr.tasks = now.tasks;
                }
                if self.p.specs[i].until().is_some() && iterate::needs_until(now.tasks) {
                    self.start_until(i, Check::Before(now), pool);
                    return false;
                }
                if iterate::is_done(now.tasks, None) {
                    self.already_done(i, now.tasks, sink);
                    return false;
                }
                self.begin_iteration(i, now, sink);
                true
            }
        }
    }

    /// Succeeds a spec whose work was done before this run ran anything of it.
    fn already_done(&mut self, i: usize, tasks: Option<TaskCounts>, sink: &mut dyn EventSink) {
        let why = match tasks {
            Some(t) => format!("already done: {}", t.summary()),
            None => "already done: `until` passed".to_string(),
        };
        tracing::info!(spec = %self.p.specs[i].name, %why, "not run");
        self.conclude(i, Status::Succeeded, Some(why), Tail::default(), sink);
    }

    /// Starts the first iteration of this run: iteration 1, or the one a killed runner
    /// cut short (its number, streak and starting point carried over).
    fn begin_iteration(&mut self, i: usize, now: Snapshot, sink: &mut dyn EventSink) {
        let Some(lr) = self.specs[i].looping.as_mut() else {
            return;
        };
        lr.tasks = now.tasks;
        if lr.iteration == 0 {
            lr.iteration = 1;
            lr.streak = 0;
            lr.before = now;
        }
        self.iteration_started(i, sink);
    }

    fn iteration_started(&self, i: usize, sink: &mut dyn EventSink) {
        let spec = &self.p.specs[i];
        let Some(lr) = &self.specs[i].looping else {
            return;
        };
        sink.event(&Event::now(EventKind::IterationStarted {
            spec: spec.name.to_string(),
            iteration: lr.iteration,
            max_iterations: spec.policy.iterate.max_iterations,
            tasks_done: lr.tasks.map(|t| t.done),
            tasks_total: lr.tasks.map(TaskCounts::total),
            tasks_pending: lr.tasks.map(|t| t.pending),
            tasks_in_progress: lr.tasks.map(|t| t.in_progress),
            no_progress_streak: lr.streak,
            head: lr.before.head.clone(),
            start_tasks_done: lr.before.tasks.map(|t| t.done),
        }));
    }

    /// Runs spec `i`'s `until` command on the pool (it takes a slot like an attempt).
    fn start_until(&mut self, i: usize, check: Check, pool: &Pool) {
        let spec = &self.p.specs[i];
        let Some(command) = spec.until().cloned() else {
            return;
        };
        let s = &mut self.specs[i];
        let (tx, rx) = control_channel();
        s.control = Some(Box::new(tx));
        let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
            ("SPEC_RUNNER_SPEC".into(), spec.name.to_string().into()),
            ("SPEC_RUNNER_RUN_ID".into(), self.run_id.clone().into()),
        ];
        if let Some(lr) = s.looping.as_mut() {
            env.extend(loop_env(lr));
            lr.checking = Some(check);
        }
        let attempt = s.retry_count + 1;
        self.running += 1;
        tracing::debug!(spec = %spec.name, "running `until`");
        let env = spec
            .env
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .chain(env)
            .collect();
        pool.submit(self.helper_job(i, JobKind::Until, attempt, command, &spec.cwd, env, rx));
    }

    /// Spec `i`'s `until` command ended: 0 means the work is done (as far as `until`
    /// can tell; open tasks still count).
    fn until_finished(
        &mut self,
        i: usize,
        log: &std::path::Path,
        end: &crate::exec::AttemptEnd,
        sink: &mut dyn EventSink,
    ) {
        self.running -= 1;
        self.specs[i].control = None;
        if self.steer_until_finished(i, sink) {
            return;
        }
        let spec = &self.p.specs[i];
        let passed = end.cause == EndCause::Exited && end.exit_code == Some(0);
        tracing::info!(spec = %spec.name, passed, log = %log.display(), "`until` ended");
        let check = self.specs[i]
            .looping
            .as_mut()
            .and_then(|lr| lr.checking.take());
        match &end.cause {
            EndCause::Stopped => {
                let why = "stopped while `until` ran".to_string();
                self.conclude(i, Status::Stopped, Some(why), Tail::default(), sink);
                return;
            }
            EndCause::SpawnFailed(_) | EndCause::StartRefused(_) | EndCause::LogFailed(_) => {
                let why = format!("`until` {}", describe(end, spec.policy.timeout, None));
                self.conclude(i, Status::Failed, Some(why), Tail::default(), sink);
                return;
            }
            _ => {}
        }
        match check {
            Some(Check::Before(now)) => {
                if iterate::is_done(now.tasks, Some(passed)) {
                    self.already_done(i, now.tasks, sink);
                } else if self.stopping || self.fail_fast_tripped {
                    // Nothing of it ran: it stays pending for the next run.
                } else {
                    self.begin_iteration(i, now, sink);
                    self.ready.push_front(i);
                }
            }
            Some(Check::After(after)) => {
                self.after_iteration(i, after, Some(passed), Tail::default(), sink);
            }
            None => {}
        }
    }

    /// An iteration's attempt cycle ended in success: look at the work, run `until`
    /// when it decides, then decide.
    fn iteration_succeeded(&mut self, i: usize, tail: Tail, sink: &mut dyn EventSink) {
        let after = match self.look(i) {
            Ok(after) => after,
            Err(why) => {
                self.conclude(i, Status::Failed, Some(why.to_string()), tail, sink);
                return;
            }
        };
        if self.p.specs[i].until().is_some() && iterate::needs_until(after.tasks) && !self.stopping
        {
            let s = &mut self.specs[i];
            s.status = Status::Pending;
            if let Some(lr) = s.looping.as_mut() {
                lr.tasks = after.tasks;
                lr.next = LoopStep::Until(after);
            }
            self.ready.push_front(i);
            return;
        }
        self.after_iteration(i, after, None, tail, sink);
    }

    /// Decides after an iteration: done, the next iteration, or give up.
    fn after_iteration(
        &mut self,
        i: usize,
        after: Snapshot,
        until: Option<bool>,
        tail: Tail,
        sink: &mut dyn EventSink,
    ) {
        let spec = &self.p.specs[i];
        let Some(lr) = self.specs[i].looping.as_mut() else {
            return;
        };
        let done = iterate::is_done(after.tasks, until);
        let progress = iterate::progressed(&lr.before, &after);
        lr.streak = iterate::streak_after(lr.streak, progress);
        lr.tasks = after.tasks;
        let policy = spec.policy.iterate;
        sink.event(&Event::now(EventKind::IterationFinished {
            spec: spec.name.to_string(),
            iteration: lr.iteration,
            max_iterations: policy.max_iterations,
            tasks_done: after.tasks.map(|t| t.done),
            tasks_total: after.tasks.map(TaskCounts::total),
            tasks_pending: after.tasks.map(|t| t.pending),
            tasks_in_progress: after.tasks.map(|t| t.in_progress),
            progress,
            done,
            no_progress_streak: lr.streak,
        }));
        let verdict = iterate::decide(policy, lr.iteration, done, lr.streak);
        tracing::info!(spec = %spec.name, iteration = lr.iteration, progress, done, ?verdict, "iteration ended");
        match verdict {
            Verdict::Done => self.conclude(i, Status::Succeeded, None, tail, sink),
            Verdict::GiveUp(why) => self.conclude(i, Status::Failed, Some(why), tail, sink),
            Verdict::Next if self.stopping || self.fail_fast_tripped => {
                let why = format!("stopped after iteration {}", lr.iteration);
                self.conclude(i, Status::Stopped, Some(why), tail, sink);
            }
            Verdict::Next => {
                lr.iteration += 1;
                lr.before = after;
                let s = &mut self.specs[i];
                // A new iteration is a new attempt cycle; the run's retry budget is not.
                s.retry_count = 0;
                s.first_start = None;
                s.set_previous_delay(None);
                s.status = Status::Pending;
                self.iteration_started(i, sink);
                // Like a retry, the next iteration starts once its state is on disk:
                // a runner killed now resumes it rather than redoing this one.
                self.needs_version[i] = self.state.as_ref().map_or(0, StateHandle::version);
                if self
                    .state
                    .as_ref()
                    .is_some_and(|st| !st.is_durable(self.needs_version[i]))
                {
                    self.awaiting_flush.push(i);
                } else {
                    self.ready.push_back(i);
                }
            }
        }
    }

    /// A rule said abort: stop the whole run like a Ctrl-C, but it is a failure.
    fn abort(&mut self, sink: &mut dyn EventSink) {
        self.aborted = true;
        if !self.stopping {
            self.on_signal(SignalEvent::Abort, sink);
        }
    }

    /// Records a spec's final status; skips its dependents when it did not succeed.
    /// Records a spec's final status, then what follows from it: dependents become
    /// ready, or are skipped; a failure under `fail_fast` ends everything not yet
    /// running. A worklist, not recursion: a long chain of dependents must not
    /// overflow the stack.
    fn conclude(
        &mut self,
        i: usize,
        status: Status,
        reason: Option<String>,
        tail: Tail,
        sink: &mut dyn EventSink,
    ) {
        // The list of a previous call, kept: most calls conclude one spec, and a fresh
        // vector each time was an allocation per spec.
        let mut work = std::mem::take(&mut self.conclude_work);
        work.push((i, status, reason, tail));
        while let Some((i, status, reason, tail)) = work.pop() {
            let last_log = self.last_log(i);
            let s = &mut self.specs[i];
            if s.status.is_final() {
                continue;
            }
            s.status = status;
            if status == Status::Failed
                && !self.interrupted
                && self.p.specs[i].policy.on_exhausted.is_some()
            {
                self.hooks_due
                    .push((i, reason.clone().unwrap_or_else(|| "failed".into())));
            }
            sink.event(&Event::now(EventKind::SpecFinished {
                spec: self.p.specs[i].name.to_string(),
                status,
                // Attempts of the cycle, earlier runs' included: "after 3 attempts"
                // means the same whether or not the runner was restarted.
                attempts: s.carried + s.attempts,
                retries: s.retry_count,
                reason,
                log: last_log,
                iterations: s.looping.as_ref().map(|lr| lr.iteration),
                tail,
            }));
            let name = &self.p.specs[i].name;
            if status == Status::Succeeded {
                for &j in &self.dependents[i] {
                    if !self.selected[j] {
                        continue;
                    }
                    let d = &mut self.specs[j];
                    // Saturating: a restarted spec that succeeds again finds dependents
                    // that already counted it.
                    d.deps_left = d.deps_left.saturating_sub(1);
                    if d.deps_left == 0 && d.status == Status::Pending && !self.stopping {
                        if self.fail_fast_tripped {
                            work.push((
                                j,
                                Status::Skipped,
                                Some("not started: fail_fast".into()),
                                Tail::default(),
                            ));
                        } else {
                            self.ready.push_back(j);
                        }
                    }
                }
                continue;
            }
            if status == Status::Failed && self.p.run.fail_fast && !self.fail_fast_tripped {
                self.fail_fast_tripped = true;
                // Nothing new starts, including what was handed out ahead.
                self.withdraw(|_| true);
                // Nothing new starts: queued specs are skipped, and specs waiting to
                // retry (in backoff, waiting for the disk, or for a free slot) fail
                // now rather than idling out their delay.
                // Their scheduled retry never runs, so it is not counted.
                let not_retried = || Some(format!("not retried: fail_fast after `{name}` failed"));
                let waiting: Vec<usize> = (self.timers.drain().map(|Reverse((_, j))| j))
                    .chain(self.awaiting_flush.drain(..))
                    .chain(self.due.drain(..))
                    .collect();
                // An iterating spec between two iterations did not fail: it stops
                // where it is, its finished iterations kept.
                let not_continued =
                    || Some(format!("not continued: fail_fast after `{name}` failed"));
                for j in waiting {
                    let s = &mut self.specs[j];
                    if s.retry_pending {
                        s.retry_pending = false;
                        s.retry_count = s.retry_count.saturating_sub(1);
                        self.retries_used = self.retries_used.saturating_sub(1);
                    } else if s.between_iterations() {
                        work.push((j, Status::Stopped, not_continued(), Tail::default()));
                        continue;
                    }
                    work.push((j, Status::Failed, not_retried(), Tail::default()));
                }
                for j in self.ready.drain(..) {
                    let (status, why) = if self.specs[j].between_iterations() {
                        (Status::Stopped, not_continued())
                    } else {
                        (
                            Status::Skipped,
                            Some(format!("not started: fail_fast after `{name}` failed")),
                        )
                    };
                    work.push((j, status, why, Tail::default()));
                }
            }
            if status == Status::Stopped && self.stopping {
                // Dependents of a stopped spec simply never start (they stay pending for
                // the next run), rather than being marked skipped.
                continue;
            }
            for &j in &self.dependents[i] {
                if self.selected[j]
                    && self.specs[j].status == Status::Pending
                    && self.specs[j].attempts == 0
                {
                    work.push((
                        j,
                        Status::Skipped,
                        Some(format!("dependency `{name}` {}", status.as_str())),
                        Tail::default(),
                    ));
                }
            }
        }
        self.conclude_work = work;
    }

    fn finish(&mut self, started: Instant, sink: &mut dyn EventSink) -> u8 {
        let mut counts = [0usize; 4];
        let mut not_run = 0;
        let mut flaky = Vec::new();
        let mut names: [Vec<String>; 3] = Default::default();
        for (i, s) in self.specs.iter().enumerate() {
            if !self.selected[i] {
                continue;
            }
            let name = || self.p.specs[i].name.to_string();
            match s.status {
                Status::Succeeded => {
                    counts[0] += 1;
                    if s.had_failure {
                        flaky.push(name());
                    }
                }
                Status::Failed => names[0].push(name()),
                Status::Skipped => names[1].push(name()),
                Status::Stopped => names[2].push(name()),
                _ => not_run += 1,
            }
        }
        for k in 0..3 {
            counts[k + 1] = names[k].len();
        }
        let [failed_specs, skipped_specs, stopped_specs] = names;
        let code = if self.stopping && !self.aborted {
            exit::INTERRUPTED
        } else if counts[1] + counts[2] > 0 || self.aborted {
            exit::FAILURE
        } else {
            exit::SUCCESS
        };
        sink.event(&Event::now(EventKind::RunFinished {
            succeeded: counts[0],
            failed: counts[1],
            skipped: counts[2],
            stopped: counts[3],
            up_to_date: self.up_to_date,
            not_run,
            retries: self.retries_used,
            flaky,
            failed_specs,
            skipped_specs,
            stopped_specs,
            duration: started.elapsed(),
            exit_code: code,
        }));
        code
    }
}

/// `<retry_log_dir>/<spec>`, or a file in it: `join`s, in one allocation (each `join`
/// copies the path, then grows it).
fn log_path(spec: &crate::config::policy::Spec, file: Option<&str>) -> PathBuf {
    let dir = &spec.policy.retry_log_dir;
    let len = dir.as_os_str().len() + spec.name.len() + file.map_or(0, |f| f.len() + 1) + 1;
    let mut path = PathBuf::with_capacity(len);
    path.push(dir);
    path.push(&*spec.name);
    if let Some(file) = file {
        path.push(file);
    }
    path
}

/// What an iterating spec's commands see: `SPEC_RUNNER_ITERATION` and, with a tasks
/// file, `SPEC_RUNNER_TASKS_*`.
fn loop_env(lr: &LoopRun) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env = vec![(
        "SPEC_RUNNER_ITERATION".into(),
        lr.iteration.to_string().into(),
    )];
    if let Some(t) = lr.tasks {
        for (name, value) in [
            ("SPEC_RUNNER_TASKS_DONE", t.done.to_string()),
            ("SPEC_RUNNER_TASKS_TOTAL", t.total().to_string()),
            ("SPEC_RUNNER_TASKS_PENDING", t.pending.to_string()),
            ("SPEC_RUNNER_TASKS_IN_PROGRESS", t.in_progress.to_string()),
            ("SPEC_RUNNER_TASKS_SUMMARY", t.summary()),
        ] {
            env.push((name.into(), value.into()));
        }
    }
    env
}

/// `SIGSEGV`, or the number when it has no name.
pub fn signal_text(sig: i32) -> String {
    retry::signal_name(sig).map_or_else(|| sig.to_string(), str::to_string)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(String::new, |d| {
        format!(" after {}s", (d.as_secs_f64() * 1000.0).round() / 1000.0)
    })
}

/// Why an attempt failed, in words.
pub fn describe(
    end: &crate::exec::AttemptEnd,
    timeout: Option<Duration>,
    activity: Option<Duration>,
) -> String {
    match &end.cause {
        EndCause::Exited => match (end.exit_code, end.signal) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("killed by {}", signal_text(sig)),
            (None, None) => "ended without a status".into(),
        },
        EndCause::TimedOut => format!("timed out{} (timeout_seconds)", secs(timeout)),
        EndCause::Hung => format!(
            "hung: no output{} (activity_timeout_seconds)",
            secs(activity)
        ),
        EndCause::Stopped => "stopped".into(),
        EndCause::SpawnFailed(why) | EndCause::StartRefused(why) => {
            format!("could not start: {why}")
        }
        EndCause::LogFailed(why) => format!("log write failed: {why}"),
    }
}

/// How many items `it` has, as a spec-count field holds it.
fn count<T>(it: impl Iterator<Item = T>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_run() -> SpecRun {
        SpecRun {
            status: Status::Pending,
            attempts: 0,
            carried: 0,
            retry_count: 0,
            deps_left: 0,
            first_start: None,
            control: None,
            next_log: 1,
            last_log: None,
            had_failure: false,
            retry_pending: false,
            waited_for_slot: false,
            retrying: None,
            looping: None,
        }
    }

    #[test]
    fn a_spec_keeps_its_last_delay_and_failure_apart_and_drops_the_box_once_both_are_gone() {
        let mut s = spec_run();
        s.set_previous_delay(None);
        s.set_last_failure(None);
        assert!(s.retrying.is_none());
        s.set_last_failure(Some(("exit code 1".into(), Tail::default())));
        s.set_previous_delay(Some(Duration::from_millis(1500)));
        assert_eq!(s.previous_delay(), Some(Duration::from_millis(1500)));
        assert_eq!(s.last_failure().map(|f| f.0.as_str()), Some("exit code 1"));
        s.set_last_failure(None);
        assert_eq!(s.previous_delay(), Some(Duration::from_millis(1500)));
        assert!(s.last_failure().is_none());
        s.set_previous_delay(None);
        assert!(s.retrying.is_none());
        // One per spec in a run: 10,000 specs hold 10,000 of these.
        assert!(std::mem::size_of::<SpecRun>() <= 80);
    }
}
