//! `--format json`: one JSON object per event, one per line, on stdout.

use std::io::Write;

use crate::events::Event;
use crate::events::EventSink;

pub struct JsonReporter<W: Write> {
    out: W,
}

impl<W: Write> JsonReporter<W> {
    pub fn new(out: W) -> Self {
        JsonReporter { out }
    }
}

impl<W: Write> EventSink for JsonReporter<W> {
    fn event(&mut self, event: &Event) {
        // A reader that went away (closed pipe) must not stop the run.
        if serde_json::to_writer(&mut self.out, event).is_ok() {
            let _ = self.out.write_all(b"\n");
            let _ = self.out.flush();
        }
    }
}
