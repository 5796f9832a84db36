//! Release builds for x86_64 Linux lay out the code a run executes in one stretch.
//!
//! The kernel maps a program's code into its memory 64 KiB around each page that is
//! touched ("fault-around"), so a run that touches scattered functions across the
//! 4 MB of code has most of it in its resident set (3.3 MiB of the ~11.5 MiB peak of
//! `apply` at 10,000 specs). `build/link-order.txt` lists the functions a run
//! executes (made by `bench/link-order.sh` from a profile and a page trace); the
//! linker places them first, together, and the same run then maps ~2 MiB of code
//! (docs/PERFORMANCE.md, "Memory: the code a run maps").
//!
//! The list is a hint: a name not found (renamed code, another compiler version) only
//! loses its place, never fails the build. It is given only to a linker known to take
//! `--symbol-ordering-file`: rust-lld, Rust's default linker for this target since
//! 1.90, and only when no other linker is set. `SPEC_RUNNER_LINK_ORDER=0` turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build/link-order.txt");
    println!("cargo:rerun-if-env-changed=SPEC_RUNNER_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("build")
        .join("link-order.txt");
    if env::var("PROFILE").as_deref() == Ok("release")
        && env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu")
        && env::var("SPEC_RUNNER_LINK_ORDER").as_deref() != Ok("0")
        && env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_none()
        && !sets_linker(&env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default())
        && links_with_rust_lld()
        && order.is_file()
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the flags choose a linker or linker flavour of their own.
fn sets_linker(encoded_rustflags: &str) -> bool {
    encoded_rustflags
        .split('\x1f')
        .any(|flag| flag.contains("linker") || flag.contains("link-self-contained"))
}

/// Whether this rustc links this target with rust-lld by default (1.90 and later).
fn links_with_rust_lld() -> bool {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
