//! spec-runner: run a declarative pipeline of long, crash-prone commands reliably.

pub mod config;
pub mod exec;
pub mod retry;
