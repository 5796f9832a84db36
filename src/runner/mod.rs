//! Running a pipeline: the dispatcher (owns run state), the worker pool, the backend
//! seam to `exec`, and signals. Events go out through `crate::events`.

pub mod backend;
pub mod dispatcher;
pub mod inbox;
pub mod pool;
pub mod signal;
pub mod work;

pub use dispatcher::RunOptions;

#[cfg(test)]
mod tests;
