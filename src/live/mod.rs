//! A live run you can watch and steer: the control socket every `apply` serves, and
//! the client side that `status`, `stop`, `restart`, `logs --follow` and the TUI use.

pub mod addr;
pub mod client;
pub mod hub;
pub mod protocol;
pub mod server;
