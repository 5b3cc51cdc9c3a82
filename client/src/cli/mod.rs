//! The command line's own parts: arguments, what each command does, and how it talks to the
//! technician. Everything that speaks to the broker is in the library; this module decides
//! what to print and when.
//!
//! # Layout
//!
//! - [`args`]: the commands and options, with `--for` durations.
//! - [`enroll`], [`request`], [`status`], [`connect`]: one module per command.
//! - [`console`]: standard error, with a status line rewritten in place on a terminal.
//! - [`when`]: Unix seconds as local `HH:MM`, "in 59m", "2m10s ago", "58:12".
//! - [`code`]: reading a one-time password (hidden on a terminal, a line from a pipe).
//! - [`interrupt`]: catching Ctrl-C.

pub(crate) mod args;
pub(crate) mod code;
pub(crate) mod connect;
pub(crate) mod console;
pub(crate) mod enroll;
pub(crate) mod interrupt;
pub(crate) mod request;
pub(crate) mod status;
pub(crate) mod when;

use std::fmt::Display;
use std::process::ExitCode;

/// Why a command stops before it has done its work.
#[derive(Debug)]
pub(crate) enum Stop {
    /// A failure, told as one sentence; `main` prints it as `sekisho: SENTENCE` and exits 1.
    Error(String),
    /// An outcome already told in its own words (a denial, the end of a session).
    Exit(ExitCode),
}

impl Stop {
    /// A failure whose `Display` is the sentence to show.
    pub(crate) fn error(error: impl Display) -> Stop {
        Stop::Error(error.to_string())
    }
}

/// What a command returns: the exit code when it ran to its end.
pub(crate) type Outcome = Result<ExitCode, Stop>;
