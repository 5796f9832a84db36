//! Unix process-group plumbing: signalling and probing groups, reaping our zombies,
//! identifying a pid across restarts, and cleaning up after an abandoned run.
//!
//! Every OS-specific call of `exec` lives here, and with it every `unsafe`: the one
//! call rustix does not wrap, `posix_spawn` (see [`spawn_in_new_group`]). Nothing here
//! prints.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};

/// How often to look again while waiting for a group's members to vanish: they are
/// not our children, so no exit event reaches us.
pub(crate) const GROUP_POLL: Duration = Duration::from_millis(20);

/// How long to wait for a group to disappear after SIGKILL before giving up. A killed
/// process stops at once unless it is stuck in the kernel (D state); its zombie does
/// not count (see [`group_alive`]).
pub(crate) const AFTER_KILL_WAIT: Duration = Duration::from_secs(2);

/// A pid or pgid as rustix wants it; `None` for 0, negative or out-of-range values,
/// which must never reach `kill` (0 and -1 mean "my group" and "everyone").
fn to_pid(raw: u32) -> Option<Pid> {
    i32::try_from(raw).ok().and_then(Pid::from_raw)
}

/// Sends `sig` to every process of group `pgid`.
///
/// Returns `Ok(false)` if the group no longer exists (ESRCH), which is not an error
/// when ending a group: it may have vanished on its own.
pub(crate) fn signal_group(pgid: u32, sig: Signal) -> io::Result<bool> {
    let Some(pgid) = to_pid(pgid) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid process group id",
        ));
    };
    match rustix::process::kill_process_group(pgid, sig) {
        Ok(()) => {
            // A stopped process (SIGTTIN from reading the terminal in the background)
            // keeps SIGTERM pending: wake it so that it can end gracefully.
            if sig == Signal::TERM {
                let _ = rustix::process::kill_process_group(pgid, Signal::CONT);
            }
            Ok(true)
        }
        Err(Errno::SRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether group `pgid` still has a live member.
///
/// `kill(-pgid, 0)` answers first; it counts zombies, though, and an orphan's zombie
/// lingers until init reaps it — seconds on some machines. A zombie holds no files
/// (the output pipe included) and runs no code, so when `kill` says "alive" and
/// `/proc` is readable, the group counts as alive only if a member is not a zombie.
/// Callers reap the leader (and [`reap_group_zombies`]) first, which keeps zombies
/// of our own children from piling up. EPERM means a member we may not signal
/// exists — alive.
pub(crate) fn group_alive(pgid: u32) -> bool {
    group_exists(pgid) && group_has_running_member(pgid).unwrap_or(true)
}

/// Whether group `pgid` has any member, zombies included: one `kill(-pgid, 0)`.
pub(crate) fn group_exists(pgid: u32) -> bool {
    to_pid(pgid).is_some_and(|pid| {
        !matches!(
            rustix::process::test_kill_process_group(pid),
            Err(Errno::SRCH)
        )
    })
}

/// Scans `/proc` for a member of group `pgid` that is not a zombie; `None` if `/proc`
/// cannot be listed. Processes that vanish during the scan are skipped.
fn group_has_running_member(pgid: u32) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(fields) = stat_of(pid)
            && fields.pgrp == pgid
            && fields.running()
        {
            return Some(true);
        }
    }
    Some(false)
}

/// Reaps, without blocking, every zombie of group `pgid` that is our child.
///
/// Group members become our children only when the runner is a child subreaper
/// ([`become_child_subreaper`]) and their parent died; their zombies would otherwise
/// keep the group "alive" for [`group_alive`] forever. Call this only after the
/// group's leader has been reaped by its own waiter: reaping the leader here would
/// steal its exit status.
pub(crate) fn reap_group_zombies(pgid: u32) {
    let Some(pgid) = to_pid(pgid) else {
        return;
    };
    // ECHILD (none of our children in the group) or `None` (children left, none
    // exited) both end the loop.
    while let Ok(Some(_)) = rustix::process::waitpgid(pgid, WaitOptions::NOHANG) {}
}

/// Waits until group `pgid` has no members or `deadline` passes; returns whether it
/// is gone. Polls, since the members are not (necessarily) our children.
pub(crate) fn wait_group_gone(pgid: u32, deadline: Instant) -> bool {
    loop {
        reap_group_zombies(pgid);
        if !group_alive(pgid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        thread::sleep(GROUP_POLL.min(deadline - now));
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` if the process does not exist or `/proc` is not
/// available.
///
/// Together with the pid it identifies a process across a restart of the runner: a
/// reused pid has a later start time.
pub fn process_start_time(pid: u32) -> Option<u64> {
    stat_of(pid).map(|fields| fields.start_time)
}

/// The boot-time clock in the unit of a process's start time (clock ticks since boot,
/// as `/proc/<pid>/stat` gives it: the kernel takes it from this clock at fork and
/// rounds it down). Read from the vDSO: no system call.
pub(crate) fn boot_ticks() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let nanos = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0);
    nanos / (1_000_000_000 / rustix::param::clock_ticks_per_second().max(1))
}

/// The fields of `/proc/<pid>/stat`; `None` if there is no such process (or no `/proc`).
fn stat_of(pid: u32) -> Option<StatFields> {
    StatFields::parse(&read_proc(&format!("/proc/{pid}/stat"))?)
}

/// Reads a `/proc` list to its end: such a file (`children`) comes a page at a time,
/// each read stopping at the last whole record that fits, so a short read does not
/// mean the end. Empty, as it nearly always is, it costs one `read`.
fn read_proc_list(file: &std::fs::File) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    // Plain reads at explicit offsets until the end: `read_to_end` first asks for the
    // size and position (`statx`, `lseek`), which a `/proc` file does not know, and
    // offsets let one open file be read again from its start, by any thread.
    let mut text = vec![0; 4096];
    let mut len = 0;
    loop {
        if len == text.len() {
            text.resize(len * 2, 0);
        }
        match file.read_at(&mut text[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    text.truncate(len);
    Some(text)
}

/// Reads a small `/proc` record (`stat`): one `read` into a buffer that holds it whole
/// (the kernel renders one record in one go), not `fs::read`'s size probe and doubling
/// reads — this runs once or twice per attempt.
fn read_proc(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    const ONE_READ: usize = 4096;
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = vec![0; ONE_READ];
    let n = loop {
        match file.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    };
    buf.truncate(n);
    if n == ONE_READ {
        file.read_to_end(&mut buf).ok()?;
    }
    Some(buf)
}

/// The fields of `/proc/<pid>/stat` that `exec` uses.
struct StatFields {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), …
    state: char,
    /// Field 5: the process group id.
    pgrp: u32,
    /// Field 22: start time in clock ticks since boot.
    start_time: u64,
}

impl StatFields {
    /// Not a zombie (nor dead): it runs code and may hold files.
    fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }

    /// Field 2 is the command name in parentheses and may itself contain spaces and
    /// parentheses, so fields are counted from the last `)`: what follows it starts
    /// with field 3.
    fn parse(stat: &[u8]) -> Option<StatFields> {
        let close = stat.iter().rposition(|&b| b == b')')?;
        let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let pgrp = fields.nth(1)?.parse().ok()?;
        // Fields 3 to 5 are taken, so field 22 is the 17th of the rest.
        let start_time = fields.nth(16)?.parse().ok()?;
        Some(StatFields {
            state,
            pgrp,
            start_time,
        })
    }
}

/// Ends a process group left running by an earlier runner that was killed itself.
///
/// Only acts if process `pid` still exists with the recorded `start_time` — a pid
/// reused by an unrelated process, or an unknown start time, is never signalled.
/// Then SIGTERMs group `pgid`, waits up to `grace` for it to vanish (polling every
/// 20 ms: these are not our children, so no exit event reaches us), SIGKILLs what is
/// left and waits briefly for that to take effect.
///
/// Returns whether it signalled anything. Limitation: if the leader `pid` has already
/// exited, the surviving members of its group cannot be told apart from a group that
/// reuses the number, so they are left alone.
pub fn end_abandoned_group(pid: u32, pgid: u32, start_time: Option<u64>, grace: Duration) -> bool {
    let Some(expected) = start_time else {
        return false;
    };
    if process_start_time(pid) != Some(expected) {
        return false;
    }
    // The leader normally is its group's id; if it moved to another group since, it
    // is still the process we started, but we only ever promised to end `pgid`.
    if to_pid(pgid).is_none() || !matches!(signal_group(pgid, Signal::TERM), Ok(true)) {
        return false;
    }
    let deadline = Instant::now() + grace;
    if !wait_group_gone(pgid, deadline) {
        let _ = signal_group(pgid, Signal::KILL);
        wait_group_gone(pgid, Instant::now() + AFTER_KILL_WAIT);
    }
    true
}

/// Asks the kernel for a pipe buffer of `size` bytes (Linux `F_SETPIPE_SZ`), so that a
/// command flooding its output blocks less often. Best effort: a refusal (over
/// `/proc/sys/fs/pipe-max-size`) changes nothing.
pub(crate) fn enlarge_pipe(pipe: &impl std::os::fd::AsFd, size: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = rustix::pipe::fcntl_setpipe_size(pipe, size);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (pipe, size);
}

/// Moves up to `len` bytes from `pipe` into `file` at its offset without copying them
/// through user space (`splice`). Blocks like a read when the pipe is empty; `Ok(0)`
/// once every writer closed it.
pub(crate) fn splice_to_file(
    pipe: &impl AsFd,
    file: &std::fs::File,
    len: usize,
) -> io::Result<usize> {
    loop {
        match rustix::pipe::splice(pipe, None, file, None, len, rustix::pipe::SpliceFlags::MOVE) {
            Err(Errno::INTR) => {}
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Asks the runner `pid` to stop, as Ctrl-C would (SIGTERM).
pub fn request_stop(pid: u32) -> io::Result<()> {
    let Some(p) = to_pid(pid) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"));
    };
    rustix::process::kill_process(p, Signal::TERM)?;
    Ok(())
}

/// Whether `/proc/<pid>/environ` holds exactly `entry` (`NAME=value`).
fn environ_has(pid: u32, entry: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry))
}

/// Whether the environment of `pid` has an entry starting with `prefix` (`NAME=`).
fn environ_names(pid: u32, prefix: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e.starts_with(prefix)))
}

/// Ends every process that carries `SPEC_RUNNER_RUN_ID=<run_id>` in its environment:
/// what a killed runner's attempts left behind, including processes that escaped
/// their group (`setsid`) or started after the state file last recorded a group.
/// SIGTERM to each process and its group, `grace`, then SIGKILL. Returns how many
/// processes it found. The environment is inherited, so descendants are found too;
/// a process that cleared its environment is not.
pub fn end_processes_of_run(run_id: &str, grace: Duration) -> usize {
    let entry = format!("SPEC_RUNNER_RUN_ID={run_id}").into_bytes();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let found: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // A process of a batch job (`SPEC_RUNNER_JOB_ID`) belongs to its job: the
        // backend ends or re-attaches to it, never this sweep.
        .filter(|&pid| {
            pid != me && environ_has(pid, &entry) && !environ_names(pid, b"SPEC_RUNNER_JOB_ID=")
        })
        .filter_map(|pid| {
            let f = stat_of(pid)?;
            f.running().then_some((pid, f.pgrp))
        })
        .collect();
    if found.is_empty() {
        return 0;
    }
    let send = |sig: Signal| {
        for &(pid, pgid) in &found {
            let _ = signal_group(pgid, sig);
            if let Some(p) = to_pid(pid) {
                let _ = rustix::process::kill_process(p, sig);
            }
        }
    };
    send(Signal::TERM);
    let deadline = Instant::now() + grace;
    let gone = |pids: &[(u32, u32)]| pids.iter().all(|&(pid, _)| !pid_running(pid));
    while !gone(&found) && Instant::now() < deadline {
        thread::sleep(GROUP_POLL);
    }
    if !gone(&found) {
        send(Signal::KILL);
        let deadline = Instant::now() + AFTER_KILL_WAIT;
        while !gone(&found) && Instant::now() < deadline {
            thread::sleep(GROUP_POLL);
        }
    }
    found.len()
}

/// Makes the runner a child subreaper (`PR_SET_CHILD_SUBREAPER`, Linux only).
///
/// Orphaned descendants of our attempts (a grandchild whose parent exited) are then
/// re-parented to the runner instead of init, so they stay below it in the process
/// tree; `exec` reaps the zombies of an attempt's group while ending it.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn become_child_subreaper() -> io::Result<()> {
    // The kernel reads the argument as a flag; any non-zero value turns it on.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    SUBREAPER.store(true, Ordering::Relaxed);
    Ok(())
}

/// Makes the runner a child subreaper: not available on this platform.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn become_child_subreaper() -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "child subreaper is only available on Linux",
    ))
}

/// At most two malloc arenas (glibc; nothing elsewhere): the threads of a run share
/// them instead of each taking its own (up to 8 per CPU), each arena keeping what its
/// thread freed. Before the run's threads start. Peak RSS at 10,000 specs: ~0.4 MiB
/// less, the runner's CPU time the same within the noise.
#[allow(unsafe_code)]
pub fn share_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` sets a tunable of the allocator; it takes no pointer, and an
    // arena already made stays valid.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Set once [`become_child_subreaper`] succeeded: only then can the runner inherit
/// the orphans of its attempts, and only then is it worth looking for them.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// The children of the runner's main thread: the processes it inherited as child
/// subreaper. An orphan goes to the first live thread of the reaper, which is the main
/// thread; attempts are spawned by worker threads, so their leaders are not listed.
/// Zombies are. `None` without subreaper, or if the kernel has no `children` file.
fn inherited_children() -> Option<Vec<u32>> {
    // Opened once and read from its start each time (`pread` at 0 renders the list
    // afresh): one system call per attempt's end instead of open, read and close.
    static CHILDREN: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    if !SUBREAPER.load(Ordering::Relaxed) {
        return None;
    }
    let file = CHILDREN
        .get_or_init(|| {
            let me = std::process::id();
            std::fs::File::open(format!("/proc/{me}/task/{me}/children")).ok()
        })
        .as_ref()?;
    let text = read_proc_list(file)?;
    Some(
        text.split(u8::is_ascii_whitespace)
            .filter_map(|p| std::str::from_utf8(p).ok()?.parse().ok())
            .collect(),
    )
}

/// Whether process `pid` exists and is not a zombie.
fn pid_running(pid: u32) -> bool {
    stat_of(pid).is_some_and(|f| f.running())
}

/// Whether `/proc/<pid>/environ` holds every one of `entries` (`NAME=value`).
fn environ_has_all(pid: u32, entries: &[Vec<u8>]) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    entries
        .iter()
        .all(|entry| env.split(|&b| b == 0).any(|e| e == entry.as_slice()))
}

/// The `SPEC_RUNNER_*=value` entries of an attempt's environment (run id, spec,
/// attempt): together they name one attempt, and every descendant inherits them. The
/// last value of a name wins, as in the environment the process gets.
fn attempt_identity(env: &[(OsString, OsString)]) -> Vec<Vec<u8>> {
    let mut seen: Vec<&OsString> = Vec::new();
    let mut entries = Vec::new();
    for (name, value) in env.iter().rev() {
        if name.as_encoded_bytes().starts_with(b"SPEC_RUNNER_") && !seen.contains(&name) {
            seen.push(name);
            entries.push([name.as_encoded_bytes(), b"=", value.as_encoded_bytes()].concat());
        }
    }
    entries
}

/// Ends the processes the runner inherited from one attempt: descendants that left the
/// attempt's process group (`setsid`) and were re-parented to the runner when their
/// parent died. They are told apart from other attempts' orphans by the attempt's
/// `SPEC_RUNNER_*` entries in `env` (see [`attempt_identity`]); without any, nothing
/// is done.
///
/// Cheap when there is nothing to do — one read of a small `/proc` file — so it can
/// run after every attempt. Each found process and the group it leads get SIGTERM,
/// then up to `grace`, then SIGKILL; its own orphans are inherited in turn and looked
/// for again. Every process found is reaped here, by pid: they are the runner's
/// children now, and nobody else waits for them.
///
/// `wait` sleeps up to the given time and returns true when the runner asks to kill at
/// once (a second Ctrl-C), which cuts the grace period short. Returns how many
/// processes it ended.
pub(crate) fn end_inherited_orphans(
    env: &[(OsString, OsString)],
    grace: Duration,
    mut wait: impl FnMut(Duration) -> bool,
) -> usize {
    let mut identity = None;
    let mut ended = 0;
    // Each round ends one generation; a process tree of escapees is a few deep at most.
    for _ in 0..8 {
        let Some(children) = inherited_children().filter(|c| !c.is_empty()) else {
            return ended;
        };
        let identity = identity.get_or_insert_with(|| attempt_identity(env));
        if identity.is_empty() {
            return ended;
        }
        let found: Vec<(u32, u32)> = children
            .into_iter()
            .filter(|&pid| environ_has_all(pid, identity))
            .filter_map(|pid| Some((pid, stat_of(pid)?.pgrp)))
            .collect();
        if found.is_empty() {
            return ended;
        }
        ended += found.len();
        let send = |sig: Signal| {
            for &(pid, pgrp) in &found {
                // Its group too, when it leads one: that reaches what it started since.
                if pid == pgrp {
                    let _ = signal_group(pgrp, sig);
                }
                if let Some(p) = to_pid(pid) {
                    let _ = rustix::process::kill_process(p, sig);
                }
            }
        };
        let mut left: Vec<u32> = found.iter().map(|&(pid, _)| pid).collect();
        let reap = |left: &mut Vec<u32>| {
            for &(pid, pgrp) in &found {
                // Members of a group it led died with it and are inherited as zombies.
                if pid == pgrp {
                    reap_group_zombies(pgrp);
                }
            }
            left.retain(|&pid| match to_pid(pid) {
                Some(p) => match rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
                    Ok(None) => true,
                    Ok(Some(_)) => false,
                    // Not (or no longer) our child: not ours to reap, only to watch.
                    Err(_) => pid_running(pid),
                },
                None => false,
            });
            left.is_empty()
        };
        send(Signal::TERM);
        let deadline = Instant::now() + grace;
        let mut kill_now = false;
        while !reap(&mut left) && !kill_now {
            let now = Instant::now();
            if now >= deadline {
                kill_now = true;
                break;
            }
            kill_now = wait(GROUP_POLL.min(deadline - now));
        }
        if kill_now {
            send(Signal::KILL);
            let deadline = Instant::now() + AFTER_KILL_WAIT;
            while !reap(&mut left) && Instant::now() < deadline {
                thread::sleep(GROUP_POLL);
            }
        }
    }
    ended
}

/// While alive, the terminal on stderr does not echo control characters (`^C`).
///
/// Live bars keep the cursor at the end of their last row; an echoed `^C` there wraps
/// to a new row, the bars lose track of where they are, and a stale copy of the top
/// bar stays on the screen after the run. Restored on drop.
pub struct ControlEchoOff {
    saved: rustix::termios::Termios,
}

/// Turns off `ECHOCTL` on stderr's terminal; `None` when stderr is no terminal or it
/// was off already.
pub fn hide_control_echo() -> Option<ControlEchoOff> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let fd = rustix::stdio::stderr();
    let saved = tcgetattr(fd).ok()?;
    if !saved.local_modes.contains(LocalModes::ECHOCTL) {
        return None;
    }
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHOCTL);
    tcsetattr(fd, OptionalActions::Now, &quiet).ok()?;
    Some(ControlEchoOff { saved })
}

impl Drop for ControlEchoOff {
    fn drop(&mut self) {
        let fd = rustix::stdio::stderr();
        let _ = rustix::termios::tcsetattr(fd, rustix::termios::OptionalActions::Now, &self.saved);
    }
}

/// What [`spawn_in_new_group`] starts: a program by path (never searched on `PATH`),
/// its whole argument vector and whole environment, a directory to run in, and the
/// descriptors for its stdin and for its stdout and stderr together.
pub(crate) struct SpawnRequest<'a> {
    pub exe: &'a CStr,
    /// `argv[0]` first.
    pub argv: &'a [CString],
    /// `NAME=value` entries, each name once.
    pub env: &'a [&'a CStr],
    pub cwd: &'a CStr,
    pub stdin: BorrowedFd<'a>,
    pub output: BorrowedFd<'a>,
}

/// What `posix_spawn` is asked to do besides exec: make the child its own group's
/// leader, empty its signal mask, reset `SIGPIPE` to its default. The flags are `int`
/// constants and the attribute takes a `short`: checked here, when compiling.
const SPAWN_FLAGS: libc::c_short = {
    let flags =
        libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
    assert!(flags >= 0 && flags <= libc::c_short::MAX as libc::c_int);
    flags as libc::c_short
};

/// A glibc error number (what the `posix_spawn*` functions return) as a result.
fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

/// A glibc spawn object (`posix_spawnattr_t`, `posix_spawn_file_actions_t`)
/// initialized in its place and destroyed on drop (which frees what glibc allocated
/// for it). It borrows that place: POSIX does not promise that the object may move.
struct SpawnObject<'a, T> {
    place: &'a mut std::mem::MaybeUninit<T>,
    destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
}

impl<'a, T> SpawnObject<'a, T> {
    #[allow(unsafe_code)]
    fn init(
        place: &'a mut std::mem::MaybeUninit<T>,
        init: unsafe extern "C" fn(*mut T) -> libc::c_int,
        destroy: unsafe extern "C" fn(*mut T) -> libc::c_int,
    ) -> io::Result<Self> {
        // SAFETY: `init` (glibc's, for this type) writes a valid object into the
        // place; it is only used (and destroyed) once that succeeded.
        check(unsafe { init(place.as_mut_ptr()) })?;
        Ok(SpawnObject { place, destroy })
    }

    fn as_ptr(&mut self) -> *mut T {
        self.place.as_mut_ptr()
    }
}

impl<T> Drop for SpawnObject<'_, T> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: initialized by `init`, destroyed once, here, by its own destroy.
        unsafe {
            (self.destroy)(self.place.as_mut_ptr());
        }
    }
}

/// Starts a process with `posix_spawn` in a process group of its own (its pid is the
/// group id), with an empty signal mask and `SIGPIPE` at its default (the runner
/// ignores it; a command must not inherit that), as std's `Command` would.
///
/// Why not std's `Command`: a command given even one variable of its own rebuilds the
/// whole environment on every spawn (the runner's variables read into a map, copied,
/// turned into C strings: ~25 µs of user time per spawn here, the largest user-space
/// cost of an attempt), while the runner's environment does not change during a run.
/// The caller builds the environment from one copy of the runner's, made once.
///
/// An exec failure (no such file, no permission) and a `chdir` failure come back as
/// the error, as glibc reports them from the child. The attribute and file-action
/// objects are destroyed by their wrappers' `Drop` on every return, early or not.
#[allow(unsafe_code)]
pub(crate) fn spawn_in_new_group(req: &SpawnRequest<'_>) -> io::Result<u32> {
    use std::mem::MaybeUninit;
    use std::ptr;
    let argv: Vec<*mut libc::c_char> = req
        .argv
        .iter()
        .map(|a| a.as_ptr().cast_mut())
        .chain([ptr::null_mut()])
        .collect();
    let envp: Vec<*mut libc::c_char> = req
        .env
        .iter()
        .map(|e| e.as_ptr().cast_mut())
        .chain([ptr::null_mut()])
        .collect();
    let mut attr_place = MaybeUninit::uninit();
    let mut attr = SpawnObject::init(
        &mut attr_place,
        libc::posix_spawnattr_init,
        libc::posix_spawnattr_destroy,
    )?;
    let mut actions_place = MaybeUninit::uninit();
    let mut actions = SpawnObject::init(
        &mut actions_place,
        libc::posix_spawn_file_actions_init,
        libc::posix_spawn_file_actions_destroy,
    )?;
    // SAFETY: `attr` and `actions` are initialized objects (their wrappers exist only
    // then); the signal sets are initialized by `sigemptyset` before use; every
    // pointer handed to glibc points into `req`, `argv` or `envp`, which outlive the
    // call, and both arrays end with a null pointer. `posix_spawn` runs nothing of
    // ours in the child.
    unsafe {
        let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(empty.as_mut_ptr());
        check(libc::posix_spawnattr_setsigmask(
            attr.as_ptr(),
            empty.as_ptr(),
        ))?;
        let mut default = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(default.as_mut_ptr());
        libc::sigaddset(default.as_mut_ptr(), libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(
            attr.as_ptr(),
            default.as_ptr(),
        ))?;
        check(libc::posix_spawnattr_setpgroup(attr.as_ptr(), 0))?;
        check(libc::posix_spawnattr_setflags(attr.as_ptr(), SPAWN_FLAGS))?;

        let stdin = req.stdin.as_raw_fd();
        let output = req.output.as_raw_fd();
        check(libc::posix_spawn_file_actions_adddup2(
            actions.as_ptr(),
            stdin,
            0,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            actions.as_ptr(),
            output,
            1,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            actions.as_ptr(),
            output,
            2,
        ))?;
        // The `_np` chdir action came with glibc 2.29 (the binary links against the
        // symbol version GLIBC_2.29): a runner does not build or start with an older
        // glibc (README, "Requirements"). musl has it too.
        check(libc::posix_spawn_file_actions_addchdir_np(
            actions.as_ptr(),
            req.cwd.as_ptr(),
        ))?;

        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &raw mut pid,
            req.exe.as_ptr(),
            actions.as_ptr(),
            attr.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
        ))?;
        u32::try_from(pid).map_err(|_| io::Error::other("posix_spawn gave a negative pid"))
    }
}

/// Reaps child `pid` if it exited; `None` while it runs (or is stopped).
pub(crate) fn try_wait(pid: u32) -> io::Result<Option<std::process::ExitStatus>> {
    use std::os::unix::process::ExitStatusExt;
    let pid = to_pid(pid).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
        Ok(Some((_, status))) => Ok(Some(std::process::ExitStatus::from_raw(status.as_raw()))),
        Ok(None) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_children_list_longer_than_a_page_is_read_whole() {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::CommandExt;
        // A shell with 2,000 children: its list (at least 8 KB of pids, even on a
        // fresh machine whose pids are short: 900 were 3,953 bytes there) comes a page
        // at a time, and the first read is short of 4096 bytes without being the end.
        let mut sh = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 2000 ]; do sleep 60 & i=$((i+1)); done; echo ready; wait",
            ])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(sh.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        let pid = sh.id();
        let file = std::fs::File::open(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        // Read twice from the one open file: the second read starts over.
        let lists = [read_proc_list(&file), read_proc_list(&file)];
        let _ = signal_group(pid, Signal::KILL);
        let _ = sh.wait();
        for list in lists {
            let list = list.expect("readable");
            assert!(list.len() > 4096, "{} bytes", list.len());
            assert_eq!(
                list.split(u8::is_ascii_whitespace)
                    .filter(|p| !p.is_empty())
                    .count(),
                2000
            );
        }
    }

    fn start_time_in(stat: &[u8]) -> Option<u64> {
        StatFields::parse(stat).map(|f| f.start_time)
    }

    #[test]
    fn parses_start_time_after_last_paren() {
        // A command name with spaces and a `)` inside must not shift the fields.
        let stat = b"1234 (we) ird (name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(start_time_in(stat), Some(987_654));
        let fields = StatFields::parse(stat).unwrap();
        assert_eq!((fields.state, fields.pgrp), ('S', 1234));
        assert_eq!(start_time_in(b"garbage"), None);
        assert_eq!(start_time_in(b"1 (x) S 1 2"), None);
    }

    #[test]
    fn own_start_time_is_known_and_stable() {
        let me = std::process::id();
        let first = process_start_time(me);
        assert!(first.is_some());
        assert_eq!(process_start_time(me), first);
    }

    #[test]
    fn attempt_identity_is_the_last_value_of_each_spec_runner_variable() {
        let env: Vec<(OsString, OsString)> = [
            ("SPEC_RUNNER_SPEC", "from-the-pipeline"),
            ("PATH", "/bin"),
            ("SPEC_RUNNER_SPEC", "a"),
            ("SPEC_RUNNER_ATTEMPT", "2"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let mut identity = attempt_identity(&env);
        identity.sort();
        assert_eq!(
            identity,
            [
                b"SPEC_RUNNER_ATTEMPT=2".to_vec(),
                b"SPEC_RUNNER_SPEC=a".to_vec()
            ]
        );
    }

    #[test]
    fn invalid_ids_are_never_signalled() {
        // 0 would mean "my own group": it must be refused, not sent.
        assert!(signal_group(0, Signal::TERM).is_err());
        assert!(!group_alive(0));
        assert!(signal_group(u32::MAX, Signal::TERM).is_err());
    }
}
