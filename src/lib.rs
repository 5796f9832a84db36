//! spec-runner: run a declarative pipeline of long, crash-prone commands reliably.
//!
//! Data flows one way: files → `config` → `plan` → `runner` → `exec`; the runner
//! emits events to `report` and `state`. `run` is the command-line entry point.

pub mod cli;
pub mod config;
mod control;
mod detach;
pub mod events;
pub mod exec;
pub mod exit;
pub mod iterate;
pub mod live;
mod manual;
pub mod plan;
pub mod report;
pub mod retry;
mod run;
pub mod runner;
pub mod slurm;
mod starter;
pub mod state;
pub mod tasks;
pub mod tui;
mod workflow;

pub use run::run;
