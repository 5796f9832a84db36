//! Loading, layering and validation, through the real binary.

use crate::harness::*;

#[test]
fn example_pipeline_validates() {
    Test::new()
        .args(&[
            "-f",
            &repo().join("spec-runner.toml").display().to_string(),
            "validate",
        ])
        .run()
        .code(0);
}
