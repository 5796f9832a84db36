//! The integration tests: the real `spec-runner` binary on temporary pipelines.
//!
//! One test binary (`autotests = false`), as just and nextest do: modules below share
//! the `Test` builder.

mod apply;
mod bars;
mod chaos;
mod ci;
mod config;
mod faults;
mod harness;
mod iterate;
mod live;
mod matrix;
mod procs;
mod schema_corpus;
mod slurm;
mod state;
mod tui;
