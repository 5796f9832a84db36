//! The one thing the runner asks of whatever runs an attempt: start it, stream its
//! output to its log, say how it ended, terminate it on request. Local process groups
//! today (`exec`); a Slurm backend (DESIGN §8) slots in beside it; tests use a scripted
//! one to drive the dispatcher without processes.

use crossbeam_channel::Receiver;

use crate::exec::{self, AttemptEnd, AttemptSpec, Control, SharedLive, Started};

pub trait Backend: Send + Sync {
    /// Runs one attempt to its end; calls `on_start` once it is running. Blocks the
    /// calling worker thread; `control` asks it to stop.
    fn run_attempt(
        &self,
        spec: &AttemptSpec,
        control: &Receiver<Control>,
        live: Option<&SharedLive>,
        on_start: &mut dyn FnMut(Started),
    ) -> AttemptEnd;
}

/// Each attempt as a local process group.
pub struct Local;

impl Backend for Local {
    fn run_attempt(
        &self,
        spec: &AttemptSpec,
        control: &Receiver<Control>,
        live: Option<&SharedLive>,
        on_start: &mut dyn FnMut(Started),
    ) -> AttemptEnd {
        exec::run_attempt(spec, control, live, on_start)
    }
}
