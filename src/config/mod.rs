//! Configuration: files and variables in, a validated pipeline out.
//!
//! `raw` mirrors the files, `load` reads and merges the layers with figment, `validate`
//! judges the merged values into the immutable `policy` types. Nothing here runs a
//! command or writes a file.

pub mod diag;
pub mod load;
pub mod matrix;
pub mod parse;
pub mod policy;
pub mod raw;
pub mod schema;
pub mod validate;

pub use diag::{Problem, Problems};
pub use load::{CliOverrides, LoadOptions};
pub use policy::Pipeline;

/// Loads, merges and validates a pipeline.
pub fn load(opts: &LoadOptions) -> Result<Pipeline, Problems> {
    let layers = load::read_layers(opts).map_err(Problems::in_reading_order)?;
    validate::validate(&layers).map_err(Problems::in_reading_order)
}
