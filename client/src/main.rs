//! `sekisho`: the technician's command line.
//!
//! `enroll` turns the hospital's one-time token into credentials stored in the configuration
//! directory, `request` asks the hospital for a session, `connect` waits for the approval, asks for the
//! one-time password and forwards local ports while the session lasts, `status` lists the
//! technician's requests. The work is the library's ([`sekisho_client`]); this binary parses
//! the command line and decides what to print (see `cli`).
//!
//! Exit codes: 0 when the command did what was asked (a session that reached its end time, or
//! that the technician closed, counts), 1 on every failure or refusal (one sentence on
//! standard error, prefixed `sekisho: ` when it is an error), 2 for a malformed command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Command};
use cli::{Outcome, Stop};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread: a technician's client carries a handful of forwards, and keeping the QUIC
    // endpoint, the connection and the splices on one thread saves the cross-thread wake-ups
    // that cost a multi-threaded runtime about an eighth of its CPU per gigabyte
    // (`sekisho-bench`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sekisho: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) | Err(Stop::Exit(code)) => code,
        Err(Stop::Error(sentence)) => {
            eprintln!("sekisho: {sentence}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Outcome {
    let credentials = cli.credentials;
    match cli.command {
        Command::Enroll {
            token,
            ca_fingerprint,
        } => cli::enroll::run(&credentials, &token, &ca_fingerprint).await,
        Command::Request {
            targets,
            purpose,
            ticket,
            wanted,
        } => {
            let ask = cli::request::Ask {
                targets,
                purpose,
                ticket,
                wanted_secs: wanted,
            };
            cli::request::run(&credentials.config()?, ask).await
        }
        Command::Connect { request, forwards } => {
            cli::connect::run(&credentials.config()?, &request, forwards).await
        }
        Command::Status => cli::status::run(&credentials.config()?).await,
    }
}
