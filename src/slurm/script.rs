//! What is handed to `sbatch`: the batch script, the output path and the names that
//! let a later runner find a run's jobs. Pure.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::time::Duration;

/// `'text'` for `sh`, a `'` written as `'\''`: safe for any bytes but NUL (which no
/// argument can hold).
pub fn sh_quote(text: &OsStr) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    out.push(b'\'');
    for &b in text.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// The batch script of one attempt: it runs `spec-runner __slurm-job`, which enters
/// the spec's folder itself (Slurm would run the job in /tmp if it were missing),
/// runs the command and writes its exit status to `status`.
pub fn job_script(exe: &Path, status: &Path, cwd: &Path, run_id: &str, argv: &[String]) -> Vec<u8> {
    let mut s = b"#!/bin/sh\n# spec-runner: one attempt (docs/SLURM.md)\nexec ".to_vec();
    let word = |w: &OsStr, s: &mut Vec<u8>| {
        s.extend_from_slice(&sh_quote(w));
        s.push(b' ');
    };
    word(exe.as_os_str(), &mut s);
    word(OsStr::new(super::JOB_SUBCOMMAND), &mut s);
    word(OsStr::new("--status"), &mut s);
    word(status.as_os_str(), &mut s);
    word(OsStr::new("--cwd"), &mut s);
    word(cwd.as_os_str(), &mut s);
    word(OsStr::new("--run-id"), &mut s);
    word(OsStr::new(run_id), &mut s);
    word(OsStr::new("--"), &mut s);
    for a in argv {
        word(OsStr::new(a), &mut s);
    }
    s.pop();
    s.push(b'\n');
    s
}

/// A path for `sbatch --output`: `%` starts a replacement (`%j`…) there, `%%` is a
/// `%`. A path with a backslash is taken literally by Slurm (no replacements).
pub fn output_path(path: &Path) -> OsString {
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&b'\\') {
        return path.as_os_str().to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b == b'%' {
            out.push(b'%');
        }
        out.push(b);
    }
    OsString::from_vec(out)
}

/// The job name of an attempt of `spec` in run `run_id`: `spec-runner.<run>.<spec>`.
pub fn job_name(run_id: &str, spec: &str) -> String {
    format!("spec-runner.{run_id}.{spec}")
}

/// Whether `name` is the job name of an attempt of `spec` (of any run).
pub fn is_job_of(name: &str, spec: &str) -> bool {
    name.strip_prefix("spec-runner.")
        .and_then(|rest| rest.strip_suffix(spec))
        .is_some_and(|run| run.ends_with('.') && run.len() > 1)
}

/// `sbatch --time` in whole minutes (Slurm's granularity), rounded up: the attempt's
/// own timeout plus a margin, a backstop for when the runner is gone.
pub fn time_limit_minutes(timeout: Duration, margin: Duration) -> u64 {
    (timeout + margin).as_secs().div_ceil(60).max(1)
}

/// Where the job writes its exit status: beside the log, hidden (`.task_1.log.status`).
pub fn status_path(log: &Path) -> std::path::PathBuf {
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    log.with_file_name(format!(".{name}.status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_any_text() {
        assert_eq!(sh_quote(OsStr::new("a b")), b"'a b'");
        assert_eq!(sh_quote(OsStr::new("it's")), b"'it'\\''s'");
        assert_eq!(sh_quote(OsStr::new("")), b"''");
        // Newlines, `$`, backquotes stay literal inside single quotes.
        assert_eq!(sh_quote(OsStr::new("x\n$y`z`")), b"'x\n$y`z`'");
    }

    #[test]
    fn the_script_runs_the_job_side() {
        let s = job_script(
            Path::new("/usr/bin/spec-runner"),
            Path::new("/l/.task_1.log.status"),
            Path::new("/w/it's"),
            "r1",
            &["sh".into(), "-c".into(), "echo 'hi'".into()],
        );
        assert_eq!(
            String::from_utf8(s).unwrap(),
            "#!/bin/sh\n# spec-runner: one attempt (docs/SLURM.md)\nexec '/usr/bin/spec-runner' '__slurm-job' '--status' '/l/.task_1.log.status' '--cwd' '/w/it'\\''s' '--run-id' 'r1' '--' 'sh' '-c' 'echo '\\''hi'\\'''\n"
        );
    }

    #[test]
    fn output_paths_escape_percent() {
        assert_eq!(
            output_path(Path::new("/l/100%/a%j.log")),
            "/l/100%%/a%%j.log"
        );
        assert_eq!(output_path(Path::new("/l/a\\b%j")), "/l/a\\b%j");
    }

    #[test]
    fn names_and_limits() {
        assert_eq!(job_name("r1", "a.b"), "spec-runner.r1.a.b");
        assert!(is_job_of("spec-runner.r1.a.b", "a.b"));
        assert!(is_job_of("spec-runner.20260101T000000Z-00ff.a", "a"));
        assert!(!is_job_of("spec-runner.r1.xa", "a"));
        assert!(!is_job_of("other.r1.a", "a"));
        assert!(!is_job_of("spec-runner.a", "a"));
        assert_eq!(
            time_limit_minutes(Duration::from_secs(10), Duration::ZERO),
            1
        );
        assert_eq!(
            time_limit_minutes(Duration::from_secs(60), Duration::from_secs(300)),
            6
        );
        assert_eq!(
            time_limit_minutes(Duration::from_secs(61), Duration::from_secs(300)),
            7
        );
        assert_eq!(
            status_path(Path::new("/l/a/task_3.log")),
            Path::new("/l/a/.task_3.log.status")
        );
    }
}
