//! Shell completion scripts and the manual page, both generated from the command-line
//! definition in `cli.rs`. Pure text out; `run` prints or writes it.

use clap::{CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::cli::{Cli, ColorChoice};

/// The completion script for `shell`, with clap_complete's known gaps mended.
pub fn completions(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "spec-runner", &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => mend_bash(&script),
        Shell::Fish => mend_fish(script),
        _ => script,
    }
}

/// clap_complete names the bash `case` arms of subcommands `spec__subcmd__runner__…`
/// for a hyphenated binary but sets `cmd` to `spec__runner__…` (clap#6421): no arm
/// matches, so `apply --pro<TAB>` completes nothing and `--progress <TAB>` offers file
/// names. Both sides are made the latter.
fn mend_bash(script: &str) -> String {
    script.replace("spec__subcmd__runner", "spec__runner")
}

/// Two holes in clap_complete's fish script. Before a subcommand its condition parses
/// the line with `argparse`, which fails on a trailing `--color` still waiting for its
/// value, so the colour values are not offered and fish lists file names. And the
/// positional shell of `completions` has no rule at all, so fish lists file names
/// there too.
fn mend_fish(mut script: String) -> String {
    let words = |names: Vec<String>| names.join(" ");
    let colors = words(
        ColorChoice::value_variants()
            .iter()
            .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
            .collect(),
    );
    let shells = words(
        Shell::value_variants()
            .iter()
            .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
            .collect(),
    );

    script.push_str(&format!(
        "\n# Added by spec-runner: the values of a global --color wherever it stands, and\n\
         # the shell names after `completions` (never file names there).\n\
         complete -c spec-runner -n \"__fish_prev_arg_in --color\" -f -a \"{colors}\"\n\
         complete -c spec-runner -n \"__fish_spec_runner_using_subcommand completions\" -f\n\
         complete -c spec-runner -n \"__fish_spec_runner_using_subcommand completions; \
         and not __fish_prev_arg_in --color -f --file --config; \
         and not __fish_seen_subcommand_from {shells}\" -f -a \"{shells}\"\n"
    ));
    script
}
