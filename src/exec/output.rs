//! An attempt's output: copied verbatim from the pipe into the log, its latest bytes
//! kept for the failure report, its latest line shown live.
//!
//! [`Output`] does one read at a time when the supervisor's `poll` says the pipe is
//! readable, so output, the leader's exit and the runner's requests are all handled on
//! one thread, without handoffs.

use std::fs::File;
use std::io::{self, PipeReader, Read, Write};
use std::time::Instant;

use super::SharedLive;
use super::unix;

/// Size of one read from the output pipe. Large, so a flooding child costs few
/// syscalls and log writes.
const CHUNK: usize = 64 * 1024;
/// Reads go through a buffer on the stack of this size until one fills it: most
/// commands print little or nothing, and then an attempt allocates and zeroes no
/// `CHUNK` (64 KiB a worker's heap kept for good, and a memset per attempt).
const SMALL_CHUNK: usize = 4 * 1024;
/// The read size once a command floods its output (a read filled the whole buffer):
/// fewer, larger copies; the pipe is enlarged to match.
const FLOOD_CHUNK: usize = 1024 * 1024;

/// How much of the latest output `AttemptEnd::tail` keeps.
pub(crate) const TAIL_CAP: usize = 64 * 1024;

/// `LiveOutput::last_line` is cut to this many characters.
pub(crate) const LAST_LINE_CHARS: usize = 200;

/// At most this many bytes of a line are looked at to build `last_line`, so a huge
/// line without newlines costs no more than a short one.
const LAST_LINE_SCAN: usize = 1024;

/// Why an attempt's output could not be kept. Its text is the reason the runner
/// records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    #[error("failed to create log file `{}`: {source}", .path.display())]
    CreateLog {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write the log: {0}")]
    WriteLog(#[source] io::Error),
    #[error("failed to read the command's output: {0}")]
    ReadPipe(#[source] io::Error),
}

/// What one read of the pipe brought.
pub(crate) enum Read1 {
    /// Output, copied to the log (or not, once the log failed: see `log_failed`).
    Data,
    /// Every writer closed the pipe: the output is complete.
    End,
    /// The first failure to write the log. Output goes on being read (so the command
    /// never blocks on a full pipe) and kept in the tail, but no longer logged.
    LogFailed(OutputError),
    /// The pipe itself failed: no more output can be read.
    ReadFailed(OutputError),
}

/// An attempt's log file, and whether it was opened for reading too (output is spliced
/// into it only then: the tail is read back from it).
pub(crate) struct Log {
    pub(crate) file: File,
    pub(crate) readable: bool,
}

/// The read end of the output pipe, the log it goes to, and what is kept of it.
pub(crate) struct Output {
    reader: PipeReader,
    /// `None` once writing it failed.
    log: Option<File>,
    buf: Vec<u8>,
    tail: Ring,
    live: Option<SharedLive>,
    /// The latest read that brought bytes.
    pub(crate) last_output: Option<Instant>,
    /// How output reaches the log.
    mode: Mode,
    /// Bytes moved into the log by `splice` (its first bytes: splicing comes first).
    spliced: u64,
    /// The next `splice` asks for this much.
    splice_len: usize,
}

/// How output reaches the log.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Straight from the pipe into the log (`splice`), never through our memory: when
    /// nothing needs the bytes as they come (no live last line) and the log can be
    /// read back for the tail at the end. Bytes are only counted (activity).
    Splice,
    /// Read into our buffer, then written to the log, the tail and the last line.
    Read,
}

impl Output {
    pub(crate) fn new(reader: PipeReader, log: Log, live: Option<&SharedLive>) -> Output {
        let splice = live.is_none() && log.readable;
        Output {
            reader,
            log: Some(log.file),
            // Made CHUNK long once a read fills `SMALL_CHUNK`: most commands print little.
            buf: Vec::new(),
            tail: Ring::new(TAIL_CAP),
            live: live.cloned(),
            last_output: None,
            mode: if splice { Mode::Splice } else { Mode::Read },
            spliced: 0,
            splice_len: CHUNK,
        }
    }

    pub(crate) fn pipe(&self) -> &PipeReader {
        &self.reader
    }

    /// Reads once; call it when the pipe is readable (or has hung up), as it blocks
    /// otherwise.
    pub(crate) fn read_once(&mut self) -> Read1 {
        if self.mode == Mode::Splice {
            match self.splice_once() {
                Some(result) => return result,
                // The log or the system refused `splice`: read from now on (a log
                // that cannot be written fails there, with its own error).
                None => self.leave_splice_mode(),
            }
        }
        let mut small = [0u8; SMALL_CHUNK];
        let on_heap = !self.buf.is_empty();
        let into: &mut [u8] = if on_heap { &mut self.buf } else { &mut small };
        let n = loop {
            match self.reader.read(into) {
                Ok(0) => return Read1::End,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Read1::ReadFailed(OutputError::ReadPipe(e));
                }
            }
        };
        let chunk: &[u8] = if on_heap {
            if n == self.buf.len() && self.buf.len() < FLOOD_CHUNK {
                // Only the buffer's length changes here: its first `n` bytes stay.
                self.buf.resize(FLOOD_CHUNK, 0);
                unix::enlarge_pipe(&self.reader, FLOOD_CHUNK);
            }
            &self.buf[..n]
        } else {
            if n == SMALL_CHUNK {
                self.buf.resize(CHUNK, 0);
            }
            &small[..n]
        };
        self.last_output = Some(Instant::now());
        let mut result = Read1::Data;
        if let Some(log) = &mut self.log
            && let Err(e) = log.write_all(chunk)
        {
            self.log = None;
            result = Read1::LogFailed(OutputError::WriteLog(e));
        }
        self.tail.push(chunk);
        if let Some(live) = &self.live
            && let Some(line) = last_line(chunk)
            && let Ok(mut last) = live.last_line.lock()
        {
            *last = line;
        }
        result
    }

    /// One `splice` into the log; `None` if it failed (nothing was moved then).
    fn splice_once(&mut self) -> Option<Read1> {
        let log = self.log.as_ref()?;
        let n = unix::splice_to_file(&self.reader, log, self.splice_len).ok()?;
        if n == 0 {
            // The supervisor sees the pipe's end without reading (hung up and empty),
            // so this is `splice` moving nothing while output waits — a filesystem
            // whose write took nothing. A read says what is true (and a write that
            // takes nothing fails there, as a failed log).
            return None;
        }
        if n >= CHUNK && self.splice_len < FLOOD_CHUNK {
            // A full pipe's worth at once: a flood. Bigger moves, a bigger pipe.
            self.splice_len = FLOOD_CHUNK;
            unix::enlarge_pipe(&self.reader, FLOOD_CHUNK);
        }
        self.spliced += n as u64;
        self.last_output = Some(Instant::now());
        Some(Read1::Data)
    }

    /// Leaves splice mode: what was spliced last is read back into the tail, which
    /// goes on from there.
    fn leave_splice_mode(&mut self) {
        self.mode = Mode::Read;
        self.absorb_spliced();
    }

    /// Puts the latest spliced bytes (up to the tail's size) into the tail.
    fn absorb_spliced(&mut self) {
        use std::os::unix::fs::FileExt;
        if self.spliced == 0 {
            return;
        }
        let keep = self.spliced.min(TAIL_CAP as u64);
        let mut bytes = vec![0; usize::try_from(keep).unwrap_or(TAIL_CAP)];
        if let Some(log) = &self.log {
            match log.read_exact_at(&mut bytes, self.spliced - keep) {
                Ok(()) => self.tail.push(&bytes),
                // The log changed under us (truncated by hand) or cannot be read: the
                // failure report goes without the output's end.
                Err(e) => {
                    tracing::warn!("could not read the end of the log back for the tail: {e}")
                }
            }
        }
        self.spliced = 0;
    }

    /// Closes the log (the runner may read it as soon as the attempt is over) and
    /// gives the pipe and the latest bytes back.
    pub(crate) fn finish(mut self) -> (PipeReader, Vec<u8>) {
        self.absorb_spliced();
        drop(self.log);
        (self.reader, self.tail.to_vec())
    }
}

/// The last complete, non-blank line of `chunk`, cleaned for display: lossy UTF-8,
/// the latest `\r`-rewrite of the line, no ANSI escapes or control characters,
/// trimmed and cut to [`LAST_LINE_CHARS`]. `None` if the chunk completes no such line.
pub fn last_line(chunk: &[u8]) -> Option<String> {
    // A line being redrawn with `\r` (curl, pip, tqdm) never ends while it runs: the
    // text after its latest `\r` is what it shows now.
    let open = chunk
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(chunk, |i| &chunk[i + 1..]);
    if open.contains(&b'\r') {
        for part in open.rsplit(|&b| b == b'\r') {
            let shown = clean_line(&part[..part.len().min(LAST_LINE_SCAN)]);
            if !shown.is_empty() {
                return Some(shown);
            }
        }
    }
    let end = chunk.iter().rposition(|&b| b == b'\n')?;
    for line in chunk[..end].rsplit(|&b| b == b'\n') {
        // Progress bars redraw a line with `\r`; the last non-blank redraw is current.
        for part in line.rsplit(|&b| b == b'\r') {
            let shown = clean_line(&part[..part.len().min(LAST_LINE_SCAN)]);
            if !shown.is_empty() {
                return Some(shown);
            }
        }
    }
    None
}

fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len().min(LAST_LINE_CHARS * 4));
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI sequences (colours, cursor moves) end with a byte in 0x40..=0x7e;
                // other escapes are two characters long.
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    let trimmed = out.trim();
    match trimmed.char_indices().nth(LAST_LINE_CHARS) {
        Some((cut, _)) => trimmed[..cut].to_owned(),
        None => trimmed.to_owned(),
    }
}

/// A fixed-size ring of the latest bytes.
struct Ring {
    /// Allocated on the first output: a silent attempt costs nothing.
    buf: Vec<u8>,
    cap: usize,
    /// Where the next byte goes.
    pos: usize,
    /// Whether `buf` has wrapped at least once.
    full: bool,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Ring {
            buf: Vec::new(),
            cap,
            pos: 0,
            full: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let cap = self.cap;
        if cap == 0 || data.is_empty() {
            return;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; cap];
        }
        let data = &data[data.len().saturating_sub(cap)..];
        let first = data.len().min(cap - self.pos);
        self.buf[self.pos..self.pos + first].copy_from_slice(&data[..first]);
        let rest = &data[first..];
        self.buf[..rest.len()].copy_from_slice(rest);
        if self.pos + data.len() >= cap {
            self.full = true;
        }
        self.pos = (self.pos + data.len()) % cap;
    }

    fn to_vec(&self) -> Vec<u8> {
        if self.full {
            let mut out = Vec::with_capacity(self.buf.len());
            out.extend_from_slice(&self.buf[self.pos..]);
            out.extend_from_slice(&self.buf[..self.pos]);
            out
        } else {
            self.buf[..self.pos].to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_line_is_the_latest_complete_nonblank_line() {
        assert_eq!(last_line(b"a\nb\n  \npartial"), Some("b".into()));
        assert_eq!(last_line(b"no newline"), None);
        assert_eq!(last_line(b"10%\r50%\r\n"), Some("50%".into()));
        // A line still being redrawn shows its latest state.
        assert_eq!(
            last_line(b"\r 10% |#   |\r 40% |##  |"),
            Some("40% |##  |".into())
        );
        assert_eq!(
            last_line(b"done\nDownloading\r"),
            Some("Downloading".into())
        );
        assert_eq!(last_line(b"a\nb\n\r  \r"), Some("b".into()));
        assert_eq!(
            last_line(b"\x1b[31mred\x1b[0m text\n"),
            Some("red text".into())
        );
        let long = format!("{}\n", "é".repeat(5000));
        assert_eq!(
            last_line(long.as_bytes()).unwrap().chars().count(),
            LAST_LINE_CHARS
        );
    }

    #[test]
    fn ring_keeps_the_latest_bytes() {
        let mut ring = Ring::new(4);
        ring.push(b"ab");
        assert_eq!(ring.to_vec(), b"ab");
        ring.push(b"cde");
        assert_eq!(ring.to_vec(), b"bcde");
        ring.push(b"fghij");
        assert_eq!(ring.to_vec(), b"ghij");
        ring.push(b"k");
        assert_eq!(ring.to_vec(), b"hijk");
    }
}
