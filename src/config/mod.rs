//! Configuration: files and variables in, a validated pipeline out.

pub mod policy;
