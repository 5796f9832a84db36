//! Counting the tasks of a spec's `tasks.md`, as the original spec-workflow-runner does.
//!
//! Pure: text in, counts out. It owns the one definition of "a task" in the program;
//! reading the file and deciding what the counts mean (`iterate`) happen elsewhere.
//!
//! The rules: only the part under a `## Tasks` heading when there is one (up to the
//! next heading of level 1 or 2), else the whole file; top-level checkbox items only
//! (`- [ ]` pending, `- [-]` in progress, `- [x]` or `- [X]` done, an optional `N.`
//! number before the title); indented sub-items, other bullets and lines inside fenced
//! code blocks do not count. In progress counts as open.

use serde::{Deserialize, Serialize};

/// How many tasks a file holds, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    pub done: u32,
    pub pending: u32,
    pub in_progress: u32,
}

impl TaskCounts {
    pub fn total(self) -> u32 {
        self.done + self.pending + self.in_progress
    }

    /// Tasks not done yet: pending and in progress.
    pub fn open(self) -> u32 {
        self.pending + self.in_progress
    }

    /// The original's progress summary: `2/5 tasks complete (2 pending, 1 in progress)`.
    pub fn summary(self) -> String {
        format!(
            "{}/{} tasks complete ({} pending, {} in progress)",
            self.done,
            self.total(),
            self.pending,
            self.in_progress
        )
    }
}

/// Counts the tasks in a `tasks.md` text.
pub fn count(text: &str) -> TaskCounts {
    let mut counts = TaskCounts::default();
    for line in task_lines(text) {
        match checkbox(line) {
            Some(State::Done) => counts.done += 1,
            Some(State::Pending) => counts.pending += 1,
            Some(State::InProgress) => counts.in_progress += 1,
            None => {}
        }
    }
    counts
}

enum State {
    Done,
    Pending,
    InProgress,
}

/// The lines that may hold tasks: the `## Tasks` section when there is one, else all,
/// without the lines of fenced code blocks.
fn task_lines(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    let mut in_fence = false;
    let mut section: Option<(usize, usize)> = None;
    for (i, line) in lines.iter().enumerate() {
        if is_fence(line) {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        match section {
            None if is_tasks_heading(line) => section = Some((i + 1, lines.len())),
            Some((start, end))
                if end == lines.len() && heading_level(line).is_some_and(|l| l <= 2) =>
            {
                section = Some((start, i));
            }
            _ => {}
        }
    }
    let (start, end) = section.unwrap_or((0, lines.len()));
    let mut in_fence = false;
    lines[start..end]
        .iter()
        .filter(|line| {
            if is_fence(line) {
                in_fence = !in_fence;
                return false;
            }
            !in_fence
        })
        .copied()
        .collect()
}

fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    line.len() - t.len() < 4 && (t.starts_with("```") || t.starts_with("~~~"))
}

/// The level of an ATX heading (`## x` is 2).
fn heading_level(line: &str) -> Option<usize> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    let rest = &line[hashes..];
    ((1..=6).contains(&hashes) && (rest.is_empty() || rest.starts_with([' ', '\t'])))
        .then_some(hashes)
}

/// `## Tasks`, `## Tasks (phase 1)`, `## tasks`: a level-2 heading whose title starts
/// with the word "Tasks".
fn is_tasks_heading(line: &str) -> bool {
    if heading_level(line) != Some(2) {
        return false;
    }
    let title = line[2..].trim();
    let word: String = title.chars().take_while(|c| c.is_alphanumeric()).collect();
    word.eq_ignore_ascii_case("tasks")
}

/// A top-level checkbox item: `- [ ] …`, `- [-] …`, `- [x] …` at column 0.
fn checkbox(line: &str) -> Option<State> {
    let rest = line.strip_prefix('-')?;
    let rest = rest.trim_start_matches([' ', '\t']);
    if rest.len() == line.len() - 1 {
        // `-[ ]`: no space after the bullet, not a list item.
        return None;
    }
    let mut chars = rest.chars();
    if chars.next()? != '[' {
        return None;
    }
    let state = match chars.next()? {
        ' ' => State::Pending,
        '-' => State::InProgress,
        'x' | 'X' => State::Done,
        _ => return None,
    };
    if chars.next()? != ']' {
        return None;
    }
    // The title: `1. Title`, `4.1 Title` or `Title`, after a space; a bare box is no task.
    let after = chars.as_str();
    let title = after.strip_prefix([' ', '\t'])?.trim();
    (!title.is_empty()).then_some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(done: u32, pending: u32, in_progress: u32) -> TaskCounts {
        TaskCounts {
            done,
            pending,
            in_progress,
        }
    }

    /// A tasks.md as spec-workflow writes them: numbered top-level items, indented
    /// details and requirement bullets.
    const SPEC_WORKFLOW: &str = "\
# Tasks Document

- [x] 1. Create the user model in src/models/user.rs
  - File: src/models/user.rs
  - Define the User struct with validation
  - Purpose: establish the data layer
  - _Leverage: src/models/base.rs_
  - _Requirements: 1.1, 1.2_
  - _Prompt: Role: Rust developer | Task: ..._

- [-] 2. Add the login endpoint
  - File: src/api/login.rs
  - [ ] 2.1 an indented sub-task does not count
  - _Requirements: 2.1_

- [ ] 3. Write integration tests
  - File: tests/login.rs

- [ ] 4.1 Document the endpoint
- [X] 5. Wire up CI
";

    #[test]
    fn spec_workflow_file() {
        let c = count(SPEC_WORKFLOW);
        assert_eq!(c, counts(2, 2, 1));
        assert_eq!(c.total(), 5);
        assert_eq!(c.open(), 3);
        assert_eq!(c.summary(), "2/5 tasks complete (2 pending, 1 in progress)");
    }

    #[test]
    fn only_the_tasks_section_when_there_is_one() {
        let text = "\
# Feature: login

## Requirements

- [x] the acceptance checklist is not a task list
- [ ] neither is this

## Tasks

- [ ] 1. First
- [x] 2. Second

### Notes inside the section
- [-] 3. Third (a level-3 heading does not end the section)

## Out of scope

- [ ] not counted
";
        assert_eq!(count(text), counts(1, 1, 1));
    }

    #[test]
    fn a_tasks_heading_with_more_words() {
        let text = "## Tasks (phase 1)\n- [ ] a\n# Appendix\n- [ ] b\n";
        assert_eq!(count(text), counts(0, 1, 0));
        // `## Tasks` must be a heading of its own, not part of another word.
        let text = "## Taskshop\n- [ ] a\n- [x] b\n";
        assert_eq!(count(text), counts(1, 1, 0));
        // `### Tasks` is not the section heading.
        let text = "- [x] a\n### Tasks\n- [ ] b\n";
        assert_eq!(count(text), counts(1, 1, 0));
    }

    #[test]
    fn other_bullets_and_malformed_boxes_do_not_count() {
        let text = "\
* [ ] a star bullet
+ [ ] a plus bullet
1. [ ] an ordered item
-[ ] no space after the bullet
- [] an empty box
- [ ]
- [y] an unknown state
- [x]no space after the box
- plain bullet
   - [ ] indented by three spaces
\t- [ ] indented by a tab
- [ ] counted
";
        assert_eq!(count(text), counts(0, 1, 0));
    }

    #[test]
    fn fenced_code_blocks_are_not_tasks() {
        let text = "\
## Tasks

- [ ] 1. Real task

```markdown
- [ ] 2. An example in a code block
## Not a heading either
```

~~~
- [x] 3. Another example
~~~
- [x] 4. Real and done
";
        assert_eq!(count(text), counts(1, 1, 0));
    }

    #[test]
    fn crlf_line_ends_and_unicode_titles() {
        let text = "## Tasks\r\n- [x] 1. Ünïcødé title ✓\r\n- [ ] 2. 日本語のタスク\r\n";
        assert_eq!(count(text), counts(1, 1, 0));
    }

    #[test]
    fn a_file_without_tasks() {
        assert_eq!(count(""), counts(0, 0, 0));
        assert_eq!(count("# Just notes\n\nNothing to do.\n"), counts(0, 0, 0));
        // A `## Tasks` section that is empty counts nothing, even with tasks elsewhere.
        assert_eq!(
            count("- [ ] a\n## Tasks\n\n## Later\n- [ ] b\n"),
            counts(0, 0, 0)
        );
    }
}
