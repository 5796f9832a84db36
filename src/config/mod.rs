//! Configuration: files and variables in, a validated pipeline out.
//!
//! `raw` mirrors the files, `load` reads and merges the layers with figment, `validate`
//! judges the merged values into the immutable `policy` types. Nothing here runs a
//! command or writes a file.

pub mod diag;
pub mod load;
pub mod policy;
pub mod raw;
pub mod schema;
pub mod validate;

pub use diag::{Problem, Problems};
pub use load::{CliOverrides, LoadOptions};
pub use policy::Pipeline;

/// Loads, merges and validates a pipeline.
pub fn load(opts: &LoadOptions) -> Result<Pipeline, Problems> {
    let layers = load::read_layers(opts).map_err(sorted)?;
    validate::validate(&layers).map_err(sorted)
}

/// Problems in reading order: the pipeline file's by line, then config.json's, then
/// variables and flags by name; otherwise in the order found.
fn sorted(mut problems: Vec<Problem>) -> Problems {
    use diag::Source;
    problems.sort_by(|a, b| {
        let rank = |p: &Problem| match &p.source {
            Source::File {
                location: Some(_), ..
            } => 1,
            // A whole file (missing, unreadable) first, config.json after the
            // pipeline file's lines.
            Source::File { path, .. } if p.key.is_empty() && path.ends_with(".toml") => 0,
            Source::File { .. } => 2,
            Source::Variable(_) => 3,
            Source::Flag(_) => 4,
        };
        let detail = |p: &Problem| match &p.source {
            Source::File { location, .. } => (location.unwrap_or((0, 0)), String::new()),
            Source::Variable(v) | Source::Flag(v) => ((0, 0), v.clone()),
        };
        rank(a)
            .cmp(&rank(b))
            .then_with(|| detail(a).cmp(&detail(b)))
    });
    Problems(problems)
}
