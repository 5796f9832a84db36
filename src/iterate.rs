//! The rules of the spec-workflow loop: is the spec done, did an iteration make
//! progress, does the loop go on.
//!
//! Pure, like `retry`: the dispatcher gathers the facts (task counts, the git HEAD,
//! whether `until` passed) and asks; this module answers. (`loop` is a Rust keyword,
//! hence the name.)

use crate::tasks::TaskCounts;

/// The loop limits of one spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopPolicy {
    /// `max_iterations`: give up when the work is not done after this many iterations.
    pub max_iterations: u32,
    /// `no_progress_limit`: give up after this many iterations in a row without progress.
    pub no_progress_limit: u32,
}

/// What the dispatcher saw of a spec's work at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit HEAD names in the git repository holding the spec's `cwd`; `None`
    /// outside a repository (or before its first commit).
    pub head: Option<String>,
    /// The counts of the spec's `tasks` file, when it has one.
    pub tasks: Option<TaskCounts>,
}

/// Whether the work is done: no open task left (when there is a tasks file) and the
/// `until` command passed (when there is one; `None` when it was not run).
pub fn is_done(tasks: Option<TaskCounts>, until_passed: Option<bool>) -> bool {
    tasks.is_none_or(|t| t.open() == 0) && until_passed.unwrap_or(true)
}

/// Whether `until` needs to run: only when the tasks (if any) are all done, since both
/// must hold.
pub fn needs_until(tasks: Option<TaskCounts>) -> bool {
    tasks.is_none_or(|t| t.open() == 0)
}

/// Progress between two snapshots: a new commit (HEAD moved), or more tasks done.
/// Outside a git repository (no HEAD either time) only tasks count.
pub fn progressed(before: &Snapshot, after: &Snapshot) -> bool {
    let moved = after.head.is_some() && after.head != before.head;
    let more_done = match (before.tasks, after.tasks) {
        (Some(b), Some(a)) => a.done > b.done,
        (None, Some(a)) => a.done > 0,
        _ => false,
    };
    moved || more_done
}

/// What follows an iteration that ended in success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The work is done: the spec succeeded.
    Done,
    /// Run the next iteration.
    Next,
    /// Fail the spec, for this reason.
    GiveUp(String),
}

/// The no-progress streak after an iteration.
pub fn streak_after(streak: u32, progress: bool) -> u32 {
    if progress {
        0
    } else {
        streak.saturating_add(1)
    }
}

/// Decides after iteration `iteration` (1 for the first), given whether the work is
/// done and the no-progress streak counting this iteration.
pub fn decide(policy: LoopPolicy, iteration: u32, done: bool, streak: u32) -> Verdict {
    if done {
        return Verdict::Done;
    }
    if streak >= policy.no_progress_limit {
        let n = policy.no_progress_limit;
        return Verdict::GiveUp(format!(
            "no progress in {n} iteration{} in a row: no new commit, no more tasks checked (no_progress_limit = {n})",
            if n == 1 { "" } else { "s" }
        ));
    }
    if iteration >= policy.max_iterations {
        let n = policy.max_iterations;
        return Verdict::GiveUp(format!(
            "not done after {n} iteration{} (max_iterations = {n})",
            if n == 1 { "" } else { "s" }
        ));
    }
    Verdict::Next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(done: u32, pending: u32, in_progress: u32) -> Option<TaskCounts> {
        Some(TaskCounts {
            done,
            pending,
            in_progress,
        })
    }

    fn snap(head: Option<&str>, t: Option<TaskCounts>) -> Snapshot {
        Snapshot {
            head: head.map(str::to_string),
            tasks: t,
        }
    }

    const POLICY: LoopPolicy = LoopPolicy {
        max_iterations: 5,
        no_progress_limit: 3,
    };

    #[test]
    fn done_needs_every_condition() {
        assert!(is_done(tasks(3, 0, 0), None));
        assert!(!is_done(tasks(3, 1, 0), None));
        // In progress is open.
        assert!(!is_done(tasks(3, 0, 1), None));
        assert!(is_done(None, Some(true)));
        assert!(!is_done(None, Some(false)));
        assert!(!is_done(tasks(3, 0, 0), Some(false)));
        assert!(is_done(tasks(3, 0, 0), Some(true)));
        assert!(needs_until(tasks(1, 0, 0)));
        assert!(!needs_until(tasks(1, 0, 1)));
        assert!(needs_until(None));
    }

    #[test]
    fn progress_is_a_commit_or_a_checked_task() {
        let t = tasks(1, 2, 0);
        assert!(progressed(&snap(Some("a"), t), &snap(Some("b"), t)));
        assert!(!progressed(&snap(Some("a"), t), &snap(Some("a"), t)));
        assert!(progressed(
            &snap(Some("a"), t),
            &snap(Some("a"), tasks(2, 1, 0))
        ));
        // Starting work on a task is not progress; unchecking one is not either.
        assert!(!progressed(
            &snap(Some("a"), t),
            &snap(Some("a"), tasks(1, 1, 1))
        ));
        assert!(!progressed(
            &snap(Some("a"), t),
            &snap(Some("a"), tasks(0, 3, 0))
        ));
        // Outside git only tasks count; the first commit of a new repository counts.
        assert!(!progressed(&snap(None, t), &snap(None, t)));
        assert!(progressed(&snap(None, t), &snap(None, tasks(2, 1, 0))));
        assert!(progressed(&snap(None, t), &snap(Some("a"), t)));
        // `until` alone, in git: commits are the only measure.
        assert!(progressed(&snap(Some("a"), None), &snap(Some("b"), None)));
        assert!(!progressed(&snap(Some("a"), None), &snap(Some("a"), None)));
    }

    #[test]
    fn the_breaker_and_the_cap() {
        assert_eq!(decide(POLICY, 1, true, 0), Verdict::Done);
        // Done wins over both limits.
        assert_eq!(decide(POLICY, 5, true, 3), Verdict::Done);
        assert_eq!(decide(POLICY, 1, false, 0), Verdict::Next);
        assert_eq!(decide(POLICY, 2, false, 2), Verdict::Next);
        let Verdict::GiveUp(why) = decide(POLICY, 3, false, 3) else {
            panic!("the breaker should trip");
        };
        assert!(why.contains("no_progress_limit = 3"), "{why}");
        assert!(why.contains("3 iterations in a row"), "{why}");
        let Verdict::GiveUp(why) = decide(POLICY, 5, false, 0) else {
            panic!("the cap should stop the loop");
        };
        assert_eq!(why, "not done after 5 iterations (max_iterations = 5)");
        let one = LoopPolicy {
            max_iterations: 1,
            no_progress_limit: 1,
        };
        assert!(
            matches!(decide(one, 1, false, 1), Verdict::GiveUp(w) if w.contains("1 iteration in a row"))
        );
        assert!(
            matches!(decide(one, 1, false, 0), Verdict::GiveUp(w) if w.contains("after 1 iteration "))
        );
    }

    #[test]
    fn the_streak() {
        assert_eq!(streak_after(0, false), 1);
        assert_eq!(streak_after(2, false), 3);
        assert_eq!(streak_after(2, true), 0);
        assert_eq!(streak_after(u32::MAX, false), u32::MAX);
    }
}
