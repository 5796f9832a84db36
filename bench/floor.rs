//! The floors: the least a runner can do on this machine. Reads one command per line
//! (arguments separated by tabs), runs them on N threads with stdin from /dev/null,
//! waits for each, and exits 1 if any failed. No state.
//!
//!     floor JOBS FILE              bare floor: output discarded, no files
//!     floor log JOBS FILE DIR      logging floor: per job i, creates DIR/s<i>/ (0700)
//!                                  and DIR/s<i>/task_1.log (0600, new), and spawns the
//!                                  command with stdout and stderr on that file
//!     floor stamp PATH             write the current time (ns since the epoch) to PATH
//!
//! std's `Command` uses `posix_spawn` here (no pre-exec hook, no env change); each
//! program is looked up on PATH once, up front, as spec-runner does.
//! Built by bench/run.sh with plain rustc (no dependencies).

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
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
    let (log_dir, args) = if args.get(1).map(String::as_str) == Some("log") {
        (Some(PathBuf::from(&args[4])), &args[1..4])
    } else {
        (None, &args[..])
    };
    let jobs: usize = args[1].parse().expect("JOBS");
    let text = std::fs::read_to_string(&args[2]).expect("FILE");
    let lines: Vec<Vec<&str>> = text.lines().filter(|l| !l.is_empty()).map(|l| l.split('\t').collect()).collect();
    // The program is looked up on PATH once per distinct name, as spec-runner does,
    // so that no spawn searches PATH in the child (posix_spawnp tries every entry).
    let mut found: std::collections::HashMap<&str, String> = std::collections::HashMap::new();
    let commands: Vec<Vec<String>> = lines
        .iter()
        .map(|argv| {
            let exe = found.entry(argv[0]).or_insert_with(|| on_path(argv[0])).clone();
            std::iter::once(exe).chain(argv[1..].iter().map(|a| (*a).to_owned())).collect()
        })
        .collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(argv) = commands.get(i) else { break };
                    let mut cmd = Command::new(&argv[0]);
                    cmd.args(&argv[1..]).stdin(Stdio::null());
                    if let Some(root) = &log_dir {
                        let dir = root.join(format!("s{i:06}"));
                        DirBuilder::new().mode(0o700).create(&dir).expect("log folder");
                        let log = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(dir.join("task_1.log"))
                            .expect("log file");
                        let err = log.try_clone().expect("dup");
                        cmd.stdout(log).stderr(err);
                    } else {
                        cmd.stdout(Stdio::null()).stderr(Stdio::null());
                    }
                    let ok = cmd.status().is_ok_and(|s| s.success());
                    if !ok {
                        failed.store(true, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    std::process::exit(i32::from(failed.load(Ordering::Relaxed)));
}

/// `program` itself when it holds a `/`, else its first executable match on `PATH`.
fn on_path(program: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return program.to_owned();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .map_or_else(|| program.to_owned(), |p| p.to_string_lossy().into_owned())
}
