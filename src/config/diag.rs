//! Problems found while loading: where (file and line, variable, flag), which key, what.

use std::fmt;

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

impl PathSeg {
    /// `specs.auth.retry_rules[1].action`
    pub fn join(path: &[PathSeg]) -> String {
        let mut out = String::new();
        for seg in path {
            match seg {
                PathSeg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    // Quoted as TOML quotes a key when it could not be read otherwise:
                    // `env."A=B"`, `env.""`. (A `.` in a spec name stays bare: spec
                    // names are paths' single segments wherever they are shown.)
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                    if bare {
                        out.push_str(k);
                    } else {
                        out.push_str(&format!("{k:?}"));
                    }
                }
                PathSeg::Index(i) => {
                    out.push_str(&format!("[{i}]"));
                }
            }
        }
        out
    }
}

/// Builds a key path from string keys.
pub fn path(keys: &[&str]) -> Vec<PathSeg> {
    keys.iter()
        .map(|k| PathSeg::Key((*k).to_string()))
        .collect()
}

/// Where a problem was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File {
        path: String,
        /// 1-based line and column, for TOML.
        location: Option<(usize, usize)>,
    },
    Variable(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File {
                path,
                location: Some((l, c)),
            } => write!(f, "{path}:{l}:{c}"),
            Source::File {
                path,
                location: None,
            } => write!(f, "{path}"),
            Source::Variable(v) => write!(f, "variable {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// One problem: printed as `source: key: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub source: Source,
    /// The key path, empty when the problem is the whole file or variable.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(source: Source, key: &str, message: String) -> Problem {
        Problem {
            source,
            key: key.to_string(),
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.source, self.key, self.message)
        }
    }
}

/// Every problem found, in the order found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// `problems` in reading order: the pipeline file's by line and column, then
    /// config.json's, then variables and flags by name; otherwise in the order found.
    pub fn in_reading_order(mut problems: Vec<Problem>) -> Problems {
        let rank = |p: &Problem| match &p.source {
            Source::File {
                location: Some(_), ..
            } => 1,
            // A whole pipeline file (missing, unreadable) first; config.json after
            // the pipeline file's lines.
            Source::File { path, .. } if p.key.is_empty() && path.ends_with(".toml") => 0,
            Source::File { .. } => 2,
            Source::Variable(_) => 3,
            Source::Flag(_) => 4,
        };
        let detail = |p: &Problem| match &p.source {
            Source::File { location, .. } => (location.unwrap_or((0, 0)), String::new()),
            Source::Variable(v) | Source::Flag(v) => ((0, 0), v.clone()),
        };
        problems.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| detail(a).cmp(&detail(b)))
        });
        Problems(problems)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The closest candidate to `input`, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Renders a value the way a user wrote it, shortened.
pub fn show_value(v: &figment::value::Value) -> String {
    let s = match serde_json::to_string(v) {
        Ok(s) => s,
        Err(_) => format!("{v:?}"),
    };
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}
