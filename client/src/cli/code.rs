//! Reading a one-time password: hidden from the terminal when standard input is one (typed
//! by a person), otherwise one line of standard input (piped by a script or a test).
//!
//! Reading blocks, so it runs on a thread of its own and answers through a channel; the
//! runtime keeps serving the connection (keep-alives) while the technician types. The thread
//! is not a `spawn_blocking` task because dropping the runtime would wait for those, and a
//! read from a terminal may never return.

use std::io::{BufRead, ErrorKind, IsTerminal};

use tokio::sync::oneshot;

/// What one read gave.
#[derive(Debug)]
pub(crate) enum Read {
    /// A line (trimmed).
    Code(String),
    /// Standard input ended (or Ctrl-D at the prompt).
    End,
    /// Ctrl-C at the prompt.
    Interrupted,
    /// Standard input cannot be read.
    Failed(String),
}

/// Where codes come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodeSource {
    terminal: bool,
}

impl CodeSource {
    /// Standard input, hidden when it is a terminal.
    pub(crate) fn stdin() -> CodeSource {
        CodeSource {
            terminal: std::io::stdin().is_terminal(),
        }
    }

    /// Whether a person types at a terminal (the prompt hides what they type).
    pub(crate) fn is_terminal(self) -> bool {
        self.terminal
    }

    /// Starts reading one code. On a terminal `prompt` is shown by the reader; otherwise the
    /// caller shows it.
    pub(crate) fn read(self, prompt: String) -> oneshot::Receiver<Read> {
        let (answer, read) = oneshot::channel();
        let terminal = self.terminal;
        let spawned = std::thread::Builder::new()
            .name("one-time-password".into())
            .spawn(move || {
                let _ = answer.send(if terminal {
                    read_hidden(&prompt)
                } else {
                    read_line()
                });
            });
        if let Err(e) = spawned {
            let (answer, read) = oneshot::channel();
            let _ = answer.send(Read::Failed(format!("cannot start reading ({e})")));
            return read;
        }
        read
    }
}

impl CodeSource {
    /// Reads one secret now, blocking (before anything else runs): hidden at a terminal,
    /// else one line of standard input, whose prompt the caller shows.
    pub(crate) fn read_now(self, prompt: &str) -> Read {
        if self.terminal {
            read_hidden(prompt)
        } else {
            read_line()
        }
    }
}

fn read_hidden(prompt: &str) -> Read {
    match rpassword::prompt_password(prompt) {
        Ok(code) => Read::Code(code.trim().to_owned()),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Read::End,
        Err(e) if e.kind() == ErrorKind::Interrupted => Read::Interrupted,
        Err(e) => Read::Failed(e.to_string()),
    }
}

fn read_line() -> Read {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) => Read::End,
        Ok(_) => Read::Code(line.trim().to_owned()),
        Err(e) => Read::Failed(e.to_string()),
    }
}
