//! Steering a live run: stop one spec, restart one spec, stop the run.
//!
//! The control socket turns requests into [`SteerCommand`] messages in the dispatcher's
//! inbox; the dispatcher takes them the way it takes signals and handles them here, on
//! its own thread, so it stays the one owner of run state. Nothing here blocks.

use std::cmp::Reverse;
use std::path::PathBuf;

use crossbeam_channel::Sender;

use super::Dispatcher;
use crate::events::{Event, EventKind, EventSink, Status, Tail};
use crate::exec::{AttemptEnd, Control, EndCause};
use crate::runner::signal::SignalEvent;

/// What a client asks of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SteerRequest {
    /// End these specs: `stopped`, never retried, their dependents skipped.
    Stop(Vec<String>),
    /// Run these specs again now, from a retry count of 0. With `with_deps`, first
    /// every dependency (transitively) that failed, was stopped or skipped, or is not
    /// part of the run and never succeeded; the specs wait for them.
    Restart { specs: Vec<String>, with_deps: bool },
    /// Stop the whole run (like Ctrl-C).
    StopRun,
}

/// A request and where its answer goes: `Ok(what was done)` or `Err(why not)`.
pub struct SteerCommand {
    pub request: SteerRequest,
    pub reply: Sender<Result<String, String>>,
}

/// What the dispatcher needs to take commands (which come through its inbox).
pub struct Steering {
    /// Per spec: whether it succeeded before this run. A spec this run does not run
    /// counts as a met dependency only then.
    pub succeeded_before: Vec<bool>,
}

/// The dispatcher's steering state.
pub(super) struct SteerState {
    succeeded_before: Vec<bool>,
    /// Specs whose running attempt is being ended for a restart.
    restarting: Vec<bool>,
    /// Specs whose running attempt is being ended by request.
    stop_requested: Vec<bool>,
}

impl SteerState {
    pub(super) fn new(steering: Option<Steering>, n: usize) -> SteerState {
        let succeeded_before = steering.map(|s| s.succeeded_before).unwrap_or_default();
        SteerState {
            succeeded_before,
            restarting: vec![false; n],
            stop_requested: vec![false; n],
        }
    }
}

const BY_REQUEST: &str = "stopped by request";

impl Dispatcher<'_> {
    pub(super) fn on_command(&mut self, cmd: SteerCommand, sink: &mut dyn EventSink) {
        let answer = match cmd.request {
            SteerRequest::StopRun => {
                let already = self.stopping;
                self.on_signal(SignalEvent::Interrupt(libc_sigterm()), sink);
                Ok(if already {
                    "the run was already stopping: its attempts are killed now".into()
                } else {
                    "stopping the run".into()
                })
            }
            SteerRequest::Stop(names) => self
                .indices(&names)
                .map(|specs| self.stop_specs(&specs, sink)),
            SteerRequest::Restart { specs, with_deps } => self
                .indices(&specs)
                .and_then(|specs| self.restart_specs(&specs, with_deps, sink)),
        };
        tracing::info!(?answer, "answered a control request");
        let _ = cmd.reply.send(answer);
    }

    fn indices(&self, names: &[String]) -> Result<Vec<usize>, String> {
        if names.is_empty() {
            return Err("name at least one spec".into());
        }
        let mut out = Vec::new();
        for name in names {
            match self.p.index_of(name) {
                Some(i) if !out.contains(&i) => out.push(i),
                Some(_) => {}
                None => return Err(self.p.no_such_spec(name)),
            }
        }
        Ok(out)
    }

    /// Takes spec `i` out of every wait (backoff, the disk, the ready queue).
    fn unqueue(&mut self, i: usize) {
        self.timers.retain(|Reverse((_, j))| *j != i);
        self.awaiting_flush.retain(|&j| j != i);
        self.ready.retain(|&j| j != i);
        self.due.retain(|&j| j != i);
    }

    fn stop_specs(&mut self, specs: &[usize], sink: &mut dyn EventSink) -> String {
        // An attempt handed out ahead that has not started never starts: the spec is
        // stopped as one that had not started.
        self.withdraw(|i| specs.contains(&i));
        let mut said = Vec::new();
        for &i in specs {
            let name = self.p.specs[i].name.clone();
            let status = self.specs[i].status;
            if !self.selected[i] {
                said.push(format!("`{name}` is not part of this run"));
            } else if status.is_final() {
                said.push(format!("`{name}` had already ended ({})", status.as_str()));
            } else if let Some(c) = &self.specs[i].control {
                let _ = c.send(Control::Terminate);
                self.steer.stop_requested[i] = true;
                self.steer.restarting[i] = false;
                said.push(format!("stopping `{name}`"));
            } else {
                self.unqueue(i);
                // A scheduled retry that will never run is not counted.
                self.uncount_retry(i);
                self.conclude(
                    i,
                    Status::Stopped,
                    Some(BY_REQUEST.into()),
                    Tail::default(),
                    sink,
                );
                said.push(format!("stopped `{name}`"));
            }
        }
        said.join("; ")
    }

    /// Whether dependency `d` counts as met: it succeeded in this run, or it is not
    /// part of the run and succeeded before.
    fn met(&self, d: usize) -> bool {
        if self.selected[d] {
            self.specs[d].status == Status::Succeeded
        } else {
            self.steer.succeeded_before.get(d).copied().unwrap_or(false)
        }
    }

    /// The unmet dependencies of spec `i`, with their status, or an empty list.
    fn unmet(&self, i: usize) -> Vec<String> {
        self.p.specs[i]
            .depends_on
            .iter()
            .filter(|&&d| !self.met(d))
            .map(|&d| {
                let status = if self.selected[d] {
                    self.specs[d].status.as_str()
                } else {
                    "not run"
                };
                format!("`{}` ({status})", self.p.specs[d].name)
            })
            .collect()
    }

    /// Spec `i` is part of the run and waits to start its cycle (nothing of it ran).
    fn waits_to_start(&self, i: usize) -> bool {
        self.selected[i] && self.specs[i].status == Status::Pending && self.specs[i].attempts == 0
    }

    /// The dependencies of `roots`, transitively, that must start again for them to
    /// run: unmet and not on their way (failed, stopped, skipped, or not part of the
    /// run). Dependencies before their dependents; `roots` themselves left out.
    fn to_restart_first(&self, roots: &[usize]) -> Vec<usize> {
        fn visit(d: &Dispatcher<'_>, i: usize, seen: &mut [bool], out: &mut Vec<usize>) {
            for &dep in &d.p.specs[i].depends_on {
                if seen[dep] || d.met(dep) {
                    continue;
                }
                seen[dep] = true;
                let on_its_way = d.selected[dep] && !d.specs[dep].status.is_final();
                if !on_its_way {
                    visit(d, dep, seen, out);
                    out.push(dep);
                }
            }
        }
        let mut seen = vec![false; self.p.specs.len()];
        let mut out = Vec::new();
        for &i in roots {
            visit(self, i, &mut seen, &mut out);
        }
        out.retain(|d| !roots.contains(d));
        out
    }

    fn restart_specs(
        &mut self,
        specs: &[usize],
        with_deps: bool,
        sink: &mut dyn EventSink,
    ) -> Result<String, String> {
        if self.stopping {
            return Err("the run is stopping; start a new one with `spec-runner apply`".into());
        }
        if self.fail_fast_tripped {
            return Err(
                "fail_fast ended this run: nothing new starts in it; start a new one with `spec-runner restart`"
                    .into(),
            );
        }
        // One handed out ahead that has not started is simply not started yet.
        self.withdraw(|i| specs.contains(&i));
        let mut said = Vec::new();
        if with_deps {
            let first = self.to_restart_first(specs);
            for &d in &first {
                if self.waits_to_start(d) {
                    // An earlier dependency's restart re-opened it already.
                    continue;
                }
                let previous = if self.selected[d] {
                    self.specs[d].status
                } else {
                    self.selected[d] = true;
                    Status::Pending
                };
                self.unqueue(d);
                self.restart_now(d, previous, "restart requested (a dependency)".into(), sink);
            }
            if !first.is_empty() {
                let names: Vec<String> = first
                    .iter()
                    .map(|&d| format!("`{}`", self.p.specs[d].name))
                    .collect();
                said.push(format!("restarted dependencies {}", names.join(", ")));
            }
        }
        let refused: Vec<String> = specs
            .iter()
            .filter(|_| !with_deps)
            .filter_map(|&i| {
                let unmet = self.unmet(i);
                (!unmet.is_empty()).then(|| {
                    let name = &self.p.specs[i].name;
                    format!(
                        "cannot restart `{name}`: its dependencies have not succeeded: {}; \
                         `spec-runner restart {name} --with-deps` restarts them first",
                        unmet.join(", ")
                    )
                })
            })
            .collect();
        if !refused.is_empty() {
            return Err(refused.join("; "));
        }
        for &i in specs {
            let name = self.p.specs[i].name.clone();
            if let Some(c) = &self.specs[i].control {
                // The attempt ends first; `steer_finished` starts the spec again.
                let _ = c.send(Control::Terminate);
                self.steer.restarting[i] = true;
                self.steer.stop_requested[i] = false;
                said.push(format!("restarting `{name}`: ending its running attempt"));
                continue;
            }
            let previous = self.specs[i].status;
            if !self.selected[i] {
                self.selected[i] = true;
            } else if with_deps && self.waits_to_start(i) {
                // A dependency's restart re-opened it: it waits for them.
                said.push(format!("`{name}` runs after its dependencies"));
                continue;
            }
            self.unqueue(i);
            self.restart_now(i, previous, "restart requested".into(), sink);
            said.push(if self.specs[i].deps_left > 0 {
                format!("restarted `{name}`: it runs after its dependencies")
            } else {
                format!("restarted `{name}`")
            });
        }
        Ok(said.join("; "))
    }

    /// Starts a new cycle of spec `i`: now if its dependencies have succeeded, else as
    /// soon as they have; dependents it made skip, or that must wait for it again, wait
    /// for it again.
    fn restart_now(
        &mut self,
        i: usize,
        previous: Status,
        reason: String,
        sink: &mut dyn EventSink,
    ) {
        self.uncount_retry(i);
        let s = &mut self.specs[i];
        s.retry_pending = false;
        s.waited_for_slot = false;
        s.set_last_failure(None);
        s.retry_count = 0;
        s.carried = 0;
        s.attempts = 0;
        s.first_start = None;
        s.set_previous_delay(None);
        s.had_failure = false;
        s.status = Status::Pending;
        // An iterating spec's loop starts afresh too.
        s.reset_loop();
        // Dependencies restarted with it (`--with-deps`) are waited for; dependencies
        // outside the run met (a plain restart refuses otherwise) or will be selected.
        let waits = self.p.specs[i]
            .depends_on
            .iter()
            .filter(|&&d| self.selected[d] && !self.met(d));
        let waits = super::count(waits);
        self.specs[i].deps_left = waits;
        self.needs_version[i] = 0;
        sink.event(&Event::now(EventKind::SpecRestarted {
            spec: self.p.specs[i].name.to_string(),
            previous,
            reason,
        }));
        if waits == 0 {
            // Before specs not started yet, like a due retry.
            self.due.push_front(i);
        }
        self.reopen_dependents(i, previous, sink);
    }

    fn reopen_dependents(&mut self, root: usize, previous: Status, sink: &mut dyn EventSink) {
        let mut work = vec![(root, previous)];
        while let Some((i, was)) = work.pop() {
            let name = self.p.specs[i].name.clone();
            for j in self.dependents[i].iter().copied() {
                if !self.selected[j] {
                    continue;
                }
                match self.specs[j].status {
                    Status::Skipped => {
                        let waits = self.p.specs[j].depends_on.iter().filter(|&&d| {
                            self.selected[d] && self.specs[d].status != Status::Succeeded
                        });
                        let waits = super::count(waits);
                        let s = &mut self.specs[j];
                        s.status = Status::Pending;
                        s.attempts = 0;
                        s.retry_count = 0;
                        s.carried = 0;
                        s.first_start = None;
                        s.set_previous_delay(None);
                        s.deps_left = waits;
                        s.reset_loop();
                        sink.event(&Event::now(EventKind::SpecRestarted {
                            spec: self.p.specs[j].name.to_string(),
                            previous: Status::Skipped,
                            reason: format!("dependency `{name}` restarted"),
                        }));
                        work.push((j, Status::Skipped));
                    }
                    // It counted `i` as done: it waits for it again.
                    Status::Pending if was == Status::Succeeded && self.specs[j].attempts == 0 => {
                        self.specs[j].deps_left += 1;
                        self.ready.retain(|&k| k != j);
                    }
                    _ => {}
                }
            }
        }
    }

    /// An iterating spec's `until` command ended: when a request was ending it, the
    /// spec restarts (its loop afresh) or ends `stopped`; `true` when it did.
    pub(super) fn steer_until_finished(&mut self, i: usize, sink: &mut dyn EventSink) -> bool {
        let restart = std::mem::take(&mut self.steer.restarting[i]);
        let stop = std::mem::take(&mut self.steer.stop_requested[i]);
        if restart && !self.stopping && !self.fail_fast_tripped {
            self.restart_now(i, Status::Running, "restart requested".into(), sink);
            return true;
        }
        if restart || stop {
            self.conclude(
                i,
                Status::Stopped,
                Some(BY_REQUEST.into()),
                Tail::default(),
                sink,
            );
            return true;
        }
        false
    }

    /// An attempt ended that a request was ending: a restart starts the spec again (the
    /// attempt is neither a failure nor a retry), a stop ends it `stopped`. Gives the
    /// result back when no request was pending.
    pub(super) fn steer_finished(
        &mut self,
        i: usize,
        attempt: u32,
        log: PathBuf,
        end: AttemptEnd,
        sink: &mut dyn EventSink,
    ) -> Option<(PathBuf, AttemptEnd)> {
        let restart = std::mem::take(&mut self.steer.restarting[i]);
        let stop = std::mem::take(&mut self.steer.stop_requested[i]);
        let success = end.cause == EndCause::Exited && end.exit_code == Some(0);
        if !restart && (!stop || success) {
            return Some((log, end));
        }
        let reason = if restart {
            "ended for a manual restart (not counted)"
        } else {
            BY_REQUEST
        };
        let spec = &self.p.specs[i];
        self.specs[i].ended_log();
        let tail: Tail = end.tail.as_slice().into();
        sink.event(&Event::now(EventKind::AttemptFinished {
            spec: spec.name.to_string(),
            attempt,
            exit_code: end.exit_code,
            signal: end.signal.map(super::signal_text),
            reason: (!success).then(|| reason.to_string()),
            duration: end.duration,
            log,
            tail: tail.clone(),
        }));
        if restart && !self.stopping && !self.fail_fast_tripped {
            self.restart_now(i, Status::Running, "restart requested".into(), sink);
        } else {
            self.conclude(i, Status::Stopped, Some(reason.into()), tail, sink);
        }
        None
    }
}

/// SIGTERM's number, as the signal thread would report it.
fn libc_sigterm() -> i32 {
    signal_hook::consts::SIGTERM
}
