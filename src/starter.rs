//! The pipeline `spec-runner init` writes.

/// A commented starter pipeline; a test checks that it validates.
pub const STARTER_PIPELINE: &str = r#"#:schema ./schema/spec-runner.schema.json
# spec-runner pipeline: each [specs.NAME] is a command that spec-runner runs,
# retries and logs.
# Policy keys below are defaults for every spec; a spec may override any of them
# (except the run-wide jobs, fail_fast, retry_budget, state_dir, junit_path).
# config.json next to this file and SPEC_RUNNER_* variables can override them:
#   SPEC_RUNNER_RETRY_MAX_RETRIES=5 spec-runner apply
#   SPEC_RUNNER_SPECS__BUILD__TIMEOUT_SECONDS=600 spec-runner apply

# jobs = 4                          # specs at once (default: number of CPUs)
# fail_fast = false                 # stop starting specs after a final failure
retry_max_retries = 3               # retries after the first attempt
retry_backoff_seconds = 5           # first delay; then × multiplier per retry
retry_backoff_multiplier = 2.0
retry_max_backoff_seconds = "5m"    # cap on one delay
# retry_jitter = "full"             # none | full | equal | decorrelated
# retry_max_total_seconds = "1h"    # no retry starting later than this
# retry_budget = 20                 # run-wide cap on retries
# timeout_seconds = "2h"            # wall-clock limit of one attempt
# activity_timeout_seconds = "10m"  # no output for this long = a hang
terminate_grace_seconds = 10        # SIGTERM, then SIGKILL after this long

# Selective retry: first matching rule wins.
# [[retry_rules]]
# output = '(?i)rate limit|429 Too Many Requests'
# action = "retry"
# backoff_seconds = 60
# [[retry_rules]]
# exit_codes = [2]
# action = "fail"

[specs.hello]
command = "echo hello from spec-runner"

[specs.after-hello]
command = ["sh", "-c", "echo I run once hello has succeeded"]
depends_on = ["hello"]
# cwd = "some/folder"
# env = { RUST_LOG = "info" }
# retry_max_retries = 5
"#;
