//! Ctrl-C, registered when created rather than on first poll.
//!
//! `tokio::signal::ctrl_c()` installs its handler only when first polled, so a Ctrl-C that
//! comes between "Press Ctrl-C to end the session." and the first poll would kill the process
//! with the session still open. The platform streams below install theirs at once; from then
//! on Ctrl-C is ours for the life of the process.

use std::io;

/// Ctrl-C presses (SIGINT on Unix).
pub(crate) struct Interrupts {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
    #[cfg(windows)]
    signal: tokio::signal::windows::CtrlC,
}

impl Interrupts {
    /// Starts catching Ctrl-C.
    pub(crate) fn catch() -> io::Result<Interrupts> {
        #[cfg(unix)]
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        #[cfg(windows)]
        let signal = tokio::signal::windows::ctrl_c()?;
        Ok(Interrupts { signal })
    }

    /// Waits for the next Ctrl-C. Cancel-safe.
    pub(crate) async fn next(&mut self) {
        if self.signal.recv().await.is_none() {
            // The signal driver is gone with the runtime; nothing more will arrive.
            std::future::pending::<()>().await;
        }
    }
}
