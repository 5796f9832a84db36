use std::process::ExitCode;

fn main() -> ExitCode {
    spec_runner::run(std::env::args_os())
}
