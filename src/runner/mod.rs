//! Running a pipeline: the dispatcher (owns run state), the worker pool, signals, and
//! the events they produce.

pub mod backend;
pub mod dispatcher;
pub mod events;
pub mod pool;
pub mod signal;

pub use dispatcher::{EventSink, RunOptions};
pub use events::{Event, EventKind, Status};

#[cfg(test)]
mod tests;
