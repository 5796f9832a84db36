//! Running Slurm's commands with a timeout, and parsing what they print
//! (`--parsable`, `-o` formats and `scontrol -o`; never `--json`, whose schema changes
//! between releases).

use std::ffi::OsString;
use std::time::Duration;

/// How long one Slurm command may take before it counts as failed: a controller that
/// does not answer must not freeze the run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a Slurm command gave no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(
        "`{program}` is not on PATH (Slurm's client commands are needed for backend = \"slurm\")"
    )]
    NotOnPath {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{program}`: {source}")]
    Run {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` did not answer within {}s", timeout.as_secs())]
    Timeout { program: String, timeout: Duration },
    #[error("sbatch printed no job id: {stdout:?}")]
    NoJobId { stdout: String },
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args…` with `env` added to ours and `stdin` as its input; fails with
/// [`CmdError`] when it cannot start or does not finish within `timeout`.
pub fn run(
    program: &str,
    args: &[OsString],
    env: &[(OsString, OsString)],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, CmdError> {
    let mut expr = duct::cmd(program, args)
        .stdout_capture()
        .stderr_capture()
        .unchecked();
    expr = match stdin {
        Some(bytes) => expr.stdin_bytes(bytes.to_vec()),
        None => expr.stdin_null(),
    };
    for (k, v) in env {
        expr = expr.env(k, v);
    }
    let program_of = || program.to_string();
    let handle = expr.start().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CmdError::NotOnPath {
                program: program_of(),
                source,
            }
        } else {
            CmdError::Run {
                program: program_of(),
                source,
            }
        }
    })?;
    match handle.wait_timeout(timeout) {
        Ok(Some(out)) => Ok(Output {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Ok(None) => {
            let _ = handle.kill();
            Err(CmdError::Timeout {
                program: program_of(),
                timeout,
            })
        }
        Err(source) => Err(CmdError::Run {
            program: program_of(),
            source,
        }),
    }
}

/// The first of Slurm's client commands the backend needs that is not on `path`.
pub fn tools_missing(path: Option<&std::ffi::OsStr>) -> Option<&'static str> {
    let search = path.map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    ["sbatch", "squeue", "scancel", "scontrol"]
        .into_iter()
        .find(|tool| {
            !std::env::split_paths(&search).any(|dir| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(dir.join(tool))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
}

/// A job's state as `squeue %T` names it, in the three kinds the backend acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources (or held): not running yet.
    Pending(String),
    /// Its batch script runs (or is suspended: its clock runs on).
    Running(String),
    /// Its batch script has ended (COMPLETING included: only clean-up is left).
    Ended(String),
}

impl JobState {
    pub fn parse(word: &str) -> JobState {
        let word = word.trim();
        // `CANCELLED by 0` in some outputs: the first word is the state.
        let state = word.split_whitespace().next().unwrap_or("").to_string();
        match state.as_str() {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESV_DEL_HOLD" => JobState::Pending(state),
            "RUNNING" | "SUSPENDED" | "STOPPED" | "SIGNALING" | "RESIZING" | "STAGE_OUT" => {
                JobState::Running(state)
            }
            _ => JobState::Ended(state),
        }
    }

    pub fn word(&self) -> &str {
        match self {
            JobState::Pending(s) | JobState::Running(s) | JobState::Ended(s) => s,
        }
    }
}

/// The job id printed by `sbatch --parsable`: `id` or `id;cluster`.
pub fn parse_sbatch(stdout: &str) -> Result<u64, CmdError> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty());
    line.and_then(|l| l.split(';').next())
        .and_then(|id| id.trim().parse().ok())
        .ok_or_else(|| CmdError::NoJobId {
            stdout: stdout.trim().to_string(),
        })
}

/// Words of a refusal that a later try may not get (Slurm 22.05's own messages, as
/// libslurm spells them, lower-cased): the controller is down, busy, restarting or
/// slow, or its queue is full. Any other refusal (an invalid partition, account or
/// QOS, a bad option, a limit) stands.
const TRANSIENT: &[&str] = &[
    "temporarily unable to accept job",
    "unable to contact slurm controller",
    "socket timed out on send/recv operation",
    "communication connection failure",
    "zero bytes were transmitted or received",
    "connection refused",
    "connection reset by peer",
    "connection timed out",
    "standby mode",
    "job queue full",
    "job creation temporarily disabled",
    "unable to create job record, try again",
    "resource temporarily unavailable",
];

/// Whether sbatch's standard error says the controller could not take the job now,
/// rather than that it never will.
pub fn transient_refusal(stderr: &str) -> bool {
    let text = stderr.to_lowercase();
    TRANSIENT.iter().any(|words| text.contains(words))
}

/// What sbatch printed on standard error, as one line: its lines joined by `; `,
/// without the `sbatch: error: ` each starts with.
pub fn one_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(|l| {
            let l = l.trim();
            l.strip_prefix("sbatch: error: ")
                .or_else(|| l.strip_prefix("sbatch: "))
                .unwrap_or(l)
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The format string that [`parse_submitted`] reads: id and comment.
pub const SUBMITTED_FORMAT: &str = "%i|%k";

/// The id of the job whose comment is `comment`, in lines of
/// `squeue -h -o SUBMITTED_FORMAT`.
pub fn parse_submitted(stdout: &str, comment: &str) -> Option<u64> {
    stdout.lines().find_map(|line| {
        let (id, rest) = line.split_once('|')?;
        (rest.trim_end_matches(['\r', '\n']) == comment)
            .then(|| id.trim().parse().ok())
            .flatten()
    })
}

/// The format string that [`parse_time_used`] reads: how long the job has run.
pub const TIME_USED_FORMAT: &str = "%M";

/// squeue's `%M`, `[days-][hours:]minutes:seconds` (`0:00`, `5:03`, `1:05:03`,
/// `2-01:05:03`), as a duration.
pub fn parse_time_used(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
        None => (0, text),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (h, m, s) = match parts[..] {
        [m, s] => (0, m, s),
        [h, m, s] => (h, m, s),
        _ => return None,
    };
    Some(std::time::Duration::from_secs(
        ((days * 24 + h) * 60 + m) * 60 + s,
    ))
}

/// One job as `squeue -h -o '%i|%T|%j'` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub id: u64,
    pub state: JobState,
    pub name: String,
}

/// The format string that [`parse_squeue`] reads.
pub const SQUEUE_FORMAT: &str = "%i|%T|%j";

/// Lines of `squeue -h -o SQUEUE_FORMAT`; lines that do not parse are skipped.
pub fn parse_squeue(stdout: &str) -> Vec<Listed> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let id = parts.next()?.trim().parse().ok()?;
            let state = JobState::parse(parts.next()?);
            let name = parts.next().unwrap_or("").to_string();
            Some(Listed { id, state, name })
        })
        .collect()
}

/// Whether squeue failed only because none of the ids it was asked about exists any
/// more (it lists nothing then, and exits 1).
pub fn squeue_knows_none(stderr: &str) -> bool {
    stderr.contains("Invalid job id")
}

/// `ExitCode=code:signal` and `JobState=…` of `scontrol show job -o ID`.
pub fn parse_scontrol(stdout: &str) -> Option<(i32, i32, JobState)> {
    let mut exit = None;
    let mut state = None;
    for token in stdout.split_whitespace() {
        if let Some(v) = token.strip_prefix("ExitCode=") {
            let (code, sig) = v.split_once(':')?;
            exit = Some((code.parse().ok()?, sig.parse().ok()?));
        } else if let Some(v) = token.strip_prefix("JobState=") {
            state = Some(JobState::parse(v));
        }
    }
    let (code, sig) = exit?;
    Some((code, sig, state?))
}

/// `ExitCode|State` of `sacct -n -P -X -o ExitCode,State -j ID`: the job's record in
/// the accounting database, which outlives `MinJobAge` (when the cluster keeps one).
pub fn parse_sacct(stdout: &str) -> Option<(i32, i32, JobState)> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (exit, state) = line.split_once('|')?;
    let (code, sig) = exit.split_once(':')?;
    Some((
        code.trim().parse().ok()?,
        sig.trim().parse().ok()?,
        JobState::parse(state),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Outputs recorded on Slurm 22.05.8 (Debian 12), one-node cluster.

    #[test]
    fn sbatch_ids() {
        assert_eq!(parse_sbatch("123\n").unwrap(), 123);
        assert_eq!(parse_sbatch("77;cluster-a\n").unwrap(), 77);
        assert!(parse_sbatch("").is_err());
        let err = parse_sbatch("sbatch: error: Batch job submission failed\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sbatch printed no job id: \"sbatch: error: Batch job submission failed\""
        );
    }

    #[test]
    fn refusals_that_may_pass_and_ones_that_stand() {
        for passing in [
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
            "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\nsbatch: error: Batch job submission failed: Resource temporarily unavailable",
            "sbatch: error: Batch job submission failed: Slurm backup controller in standby mode",
            "sbatch: error: Slurm job queue full, sleeping and retrying",
        ] {
            assert!(transient_refusal(passing), "{passing}");
        }
        for standing in [
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
            "sbatch: error: Batch job submission failed: Invalid qos specification",
            "sbatch: unrecognized option '--bogus'\nTry \"sbatch --help\" for more information",
            "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
            "",
        ] {
            assert!(!transient_refusal(standing), "{standing}");
        }
    }

    #[test]
    fn time_used() {
        let secs = |t: &str| parse_time_used(t).map(|d| d.as_secs());
        assert_eq!(secs("0:00\n"), Some(0));
        assert_eq!(secs("5:03"), Some(303));
        assert_eq!(secs("1:05:03"), Some(3903));
        assert_eq!(secs("2-01:05:03"), Some(2 * 86400 + 3903));
        assert_eq!(secs("INVALID"), None);
        assert_eq!(secs(""), None);
        assert_eq!(secs("1:2:3:4"), None);
    }

    #[test]
    fn sbatch_s_complaints_in_one_line() {
        assert_eq!(
            one_line(
                "sbatch: error: invalid partition specified: x\nsbatch: error: Batch job submission failed: Invalid partition name specified\n"
            ),
            "invalid partition specified: x; Batch job submission failed: Invalid partition name specified"
        );
        assert_eq!(
            one_line("sbatch: unrecognized option '--bogus'\r\n\nTry \"sbatch --help\"\n"),
            "unrecognized option '--bogus'; Try \"sbatch --help\""
        );
    }

    #[test]
    fn a_submitted_job_is_found_by_its_comment() {
        let out = "12|spec-runner run r1 spec a attempt 1 log task_1.log\n\
                   13|spec-runner run r1 spec a attempt 2 log task_2.log\n";
        assert_eq!(
            parse_submitted(out, "spec-runner run r1 spec a attempt 2 log task_2.log"),
            Some(13)
        );
        assert_eq!(
            parse_submitted(out, "spec-runner run r1 spec a attempt 2 log task_2"),
            None
        );
        assert_eq!(parse_submitted("", "x"), None);
    }

    #[test]
    fn squeue_lines() {
        let out = "1|FAILED|spec-runner.r1.a\n2|RUNNING|wrap\n3|PENDING|x|y\n\ngarbage\n";
        let listed = parse_squeue(out);
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].id, 1);
        assert_eq!(listed[0].state, JobState::Ended("FAILED".into()));
        assert_eq!(listed[0].name, "spec-runner.r1.a");
        assert_eq!(listed[1].state, JobState::Running("RUNNING".into()));
        assert_eq!(listed[2].state, JobState::Pending("PENDING".into()));
        assert_eq!(listed[2].name, "x|y");
        assert!(squeue_knows_none(
            "slurm_load_jobs error: Invalid job id specified\n"
        ));
    }

    #[test]
    fn states() {
        for s in [
            "COMPLETED",
            "CANCELLED",
            "TIMEOUT",
            "COMPLETING",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ] {
            assert!(matches!(JobState::parse(s), JobState::Ended(_)), "{s}");
        }
        assert_eq!(
            JobState::parse("CANCELLED by 0"),
            JobState::Ended("CANCELLED".into())
        );
        assert!(matches!(
            JobState::parse("CONFIGURING"),
            JobState::Pending(_)
        ));
        assert!(matches!(JobState::parse("SUSPENDED"), JobState::Running(_)));
    }

    #[test]
    fn scontrol_exit_codes() {
        let failed = "JobId=1 JobName=wrap UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 Account=(null) QOS=(null) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 RunTime=00:00:00 TimeLimit=UNLIMITED";
        assert_eq!(
            parse_scontrol(failed),
            Some((3, 0, JobState::Ended("FAILED".into())))
        );
        let killed = "JobId=9 JobState=CANCELLED Reason=None ExitCode=0:9 RunTime=00:00:03";
        assert_eq!(
            parse_scontrol(killed),
            Some((0, 9, JobState::Ended("CANCELLED".into())))
        );
        assert_eq!(
            parse_scontrol("slurm_load_jobs error: Invalid job id specified"),
            None
        );
    }

    #[test]
    fn sacct_records() {
        assert_eq!(
            parse_sacct("3:0|FAILED\n"),
            Some((3, 0, JobState::Ended("FAILED".into())))
        );
        assert_eq!(
            parse_sacct("0:15|CANCELLED by 0\n"),
            Some((0, 15, JobState::Ended("CANCELLED".into())))
        );
        assert_eq!(parse_sacct(""), None);
        // Without slurmdbd sacct prints only an error (on stderr): nothing to parse.
        assert_eq!(parse_sacct("Slurm accounting storage is disabled"), None);
    }

    #[test]
    fn commands_time_out_and_report_missing_programs() {
        let err = run(
            "sleep",
            &["5".into()],
            &[],
            None,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(matches!(err, CmdError::Timeout { .. }), "{err:?}");
        assert_eq!(err.to_string(), "`sleep` did not answer within 0s");
        let err = run("no-such-slurm-tool", &[], &[], None, COMMAND_TIMEOUT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`no-such-slurm-tool` is not on PATH (Slurm's client commands are needed for backend = \"slurm\")"
        );
        let out = run("cat", &[], &[], Some(b"script"), COMMAND_TIMEOUT).unwrap();
        assert!(out.success);
        assert_eq!(out.stdout, "script");
    }

    #[test]
    fn missing_tools() {
        assert_eq!(tools_missing(Some("/nonexistent".as_ref())), Some("sbatch"));
    }
}
