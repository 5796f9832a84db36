//! `spec-runner tui`: a full-screen client of a live run's control socket, in the Elm
//! shape: `model` (Model, Msg, a pure `update`), `view` (draws only), `app` (the
//! terminal, the socket and the log files: the only I/O).

pub mod app;
pub mod model;
pub mod view;

pub use app::run;
