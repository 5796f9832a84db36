//! The one thing the runner asks of whatever runs an attempt: start it, stream its
//! output to its log, say how it ended, terminate it on request. Local process groups
//! today (`exec`); a Slurm backend (DESIGN §8) slots in beside it; tests use a scripted
//! one to drive the dispatcher without processes.

use crate::config::policy::BackendKind;
use crate::exec::{self, AttemptEnd, AttemptSpec, ControlRx, SharedLive, Started};

pub trait Backend: Send + Sync {
    /// Runs one attempt to its end; calls `on_start` once it is running. Blocks the
    /// calling worker thread; `control` asks it to stop.
    fn run_attempt(
        &self,
        spec: &AttemptSpec,
        control: &ControlRx,
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
        control: &ControlRx,
        live: Option<&SharedLive>,
        on_start: &mut dyn FnMut(Started),
    ) -> AttemptEnd {
        exec::run_attempt(spec, control, live, on_start)
    }
}

/// Each spec's attempts where its `backend` says: here, or as batch jobs of a
/// cluster (`slurm`). Hooks always run here.
pub struct PerSpec {
    pub local: Local,
    /// Present when some spec of the run uses it.
    pub slurm: Option<crate::slurm::Cluster>,
}

impl Backend for PerSpec {
    fn run_attempt(
        &self,
        spec: &AttemptSpec,
        control: &ControlRx,
        live: Option<&SharedLive>,
        on_start: &mut dyn FnMut(Started),
    ) -> AttemptEnd {
        match (spec.backend, &self.slurm) {
            (BackendKind::Slurm, Some(cluster)) => {
                cluster.run_attempt(spec, control, live, on_start)
            }
            _ => self.local.run_attempt(spec, control, live, on_start),
        }
    }
}
