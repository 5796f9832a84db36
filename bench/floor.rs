//! The floor: the least a runner can do on this machine. Reads one command per line
//! (arguments separated by tabs), runs them on N threads with stdin from /dev/null and
//! output discarded, waits for each, and exits 1 if any failed. No logs, no state.
//!
//!     floor JOBS FILE          run the commands in FILE
//!     floor stamp PATH         write the current time (ns since the epoch) to PATH, exit 0
//!
//! Built by bench/run.sh with plain rustc (no dependencies).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("stamp") {
        let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        std::fs::write(&args[2], ns.to_string()).expect("write stamp");
        return;
    }
    let jobs: usize = args[1].parse().expect("JOBS");
    let text = std::fs::read_to_string(&args[2]).expect("FILE");
    let commands: Vec<Vec<&str>> = text.lines().filter(|l| !l.is_empty()).map(|l| l.split('\t').collect()).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(argv) = commands.get(i) else { break };
                    let ok = Command::new(argv[0])
                        .args(&argv[1..])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if !ok {
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    std::process::exit(i32::from(failed.load(Ordering::Relaxed)));
}
