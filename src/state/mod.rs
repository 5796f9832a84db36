//! Durable run state: the model, the atomic store and its lock, the sink that keeps it
//! current during a run, and resume planning. Only the sink writes the state file.

pub mod model;
pub mod resume;
pub mod sink;
pub mod store;
