//! Exit codes (DESIGN §5).

/// Everything succeeded.
pub const SUCCESS: u8 = 0;
/// A spec failed (or a checked file is stale).
pub const FAILURE: u8 = 1;
/// Bad configuration or usage.
pub const USAGE: u8 = 2;
/// Interrupted by Ctrl-C, SIGTERM or SIGHUP.
pub const INTERRUPTED: u8 = 130;
