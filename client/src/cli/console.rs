//! Standard error as the technician sees it.
//!
//! On a terminal, one status line ("Waiting for approval …", "Time left 58:12") sits at the
//! bottom and is rewritten in place; every other message is printed above it. Anywhere else (a
//! pipe, a log file) there is no in-place rewriting: a status is printed as a line of its own,
//! and callers show one only when something changed.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Moves to the start of the line and erases it.
const ERASE_LINE: &str = "\r\x1b[K";

/// Standard error, shared by the command's tasks (forward events come from other tasks).
#[derive(Debug)]
pub(crate) struct Console {
    live: bool,
    /// The status line now shown on the terminal, if any.
    status: Mutex<Option<String>>,
}

impl Console {
    /// Standard error, live when it is a terminal.
    pub(crate) fn stderr() -> Console {
        Console {
            live: std::io::stderr().is_terminal(),
            status: Mutex::new(None),
        }
    }

    /// Whether a status line is rewritten in place (standard error is a terminal).
    pub(crate) fn is_live(&self) -> bool {
        self.live
    }

    /// Prints `line` on a line of its own, above the status line.
    pub(crate) fn say(&self, line: impl Display) {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut stderr = std::io::stderr().lock();
        // Nothing useful can be done when standard error is gone.
        let _ = match (&*status, self.live) {
            (Some(status), true) => write!(stderr, "{ERASE_LINE}{line}\n{status}"),
            _ => writeln!(stderr, "{line}"),
        };
        let _ = stderr.flush();
    }

    /// Shows `status`: in place on a terminal, as a line of its own elsewhere.
    pub(crate) fn status(&self, status: String) {
        if !self.live {
            self.say(status);
            return;
        }
        let mut shown = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{ERASE_LINE}{status}");
        let _ = stderr.flush();
        *shown = Some(status);
    }

    /// Removes the status line (before a prompt, or at the end).
    pub(crate) fn clear_status(&self) {
        let mut shown = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if shown.take().is_some() && self.live {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "{ERASE_LINE}");
            let _ = stderr.flush();
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        // Whatever `main` prints next starts on a clean line.
        self.clear_status();
    }
}
