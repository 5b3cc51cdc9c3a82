//! `sekisho`: the technician's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sekisho_client::forward::{EventSink, serve_local_forward};
use sekisho_client::{ClientConfig, ForwardEvent, LocalForward, Session};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tunnel::splice::SpliceEnd;

#[derive(Parser)]
#[command(
    name = "sekisho",
    version,
    about = "Remote maintenance through a hospital's sekisho broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open a session and forward local ports to the hospital's targets.
    Connect {
        /// The broker, as HOST:PORT.
        #[arg(long)]
        broker: String,
        /// The broker's CA certificate (PEM), the only one this client will trust.
        #[arg(long)]
        ca: PathBuf,
        /// Your client certificate (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Your private key (PEM).
        #[arg(long)]
        key: PathBuf,
        #[arg(
            help = "A local forward, [BIND:]LOCAL_PORT:TARGET (repeatable). Binds 127.0.0.1 unless BIND is given.",
            short = 'L',
            long = "forward",
            value_name = "[BIND:]PORT:TARGET",
            required = true
        )]
        forwards: Vec<LocalForward>,
        /// Seconds to wait for the broker before saying it is unreachable.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        connect_timeout: u64,
    },
}

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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sekisho: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("sekisho: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Connect {
            broker,
            ca,
            cert,
            key,
            forwards,
            connect_timeout,
        } => {
            let mut config =
                ClientConfig::from_files(&broker, &ca, &cert, &key).map_err(|e| e.to_string())?;
            config.connect_timeout = std::time::Duration::from_secs(connect_timeout);
            connect(config, forwards).await
        }
    }
}

async fn connect(config: ClientConfig, forwards: Vec<LocalForward>) -> Result<ExitCode, String> {
    // Bind every local port before connecting, so a port in use fails fast.
    let mut listeners = Vec::new();
    for forward in forwards {
        let listener = TcpListener::bind(forward.bind).await.map_err(|e| {
            format!(
                "Cannot listen on {} ({e}); choose another local port.",
                forward.bind
            )
        })?;
        listeners.push((listener, forward));
    }
    let session = Arc::new(Session::connect(&config).await.map_err(|e| e.to_string())?);
    let welcome = session.welcome();
    eprintln!(
        "Connected to {} as {}/{}.",
        welcome.broker_name, welcome.vendor, welcome.technician
    );

    let shutdown = CancellationToken::new();
    let events: EventSink = Arc::new(print_event);
    let mut serving = tokio::task::JoinSet::new();
    for (listener, forward) in listeners {
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        eprintln!("Forwarding {local} -> {}", forward.target);
        serving.spawn(serve_local_forward(
            session.clone(),
            listener,
            forward.target,
            events.clone(),
            shutdown.clone(),
        ));
    }
    eprintln!("Press Ctrl-C to end the session.");

    let code = tokio::select! {
        interrupted = tokio::signal::ctrl_c() => {
            if let Err(e) = interrupted {
                eprintln!("sekisho: cannot watch for Ctrl-C ({e}); ending the session.");
            }
            ExitCode::SUCCESS
        }
        end = session.ended() => {
            eprintln!("{}", end.reason);
            if end.by_technician { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    };
    shutdown.cancel();
    while serving.join_next().await.is_some() {}
    if let Ok(session) = Arc::try_unwrap(session) {
        session.close().await;
        eprintln!("Session closed.");
    }
    Ok(code)
}

fn print_event(event: ForwardEvent) {
    match event {
        ForwardEvent::Opened { .. } => {}
        ForwardEvent::Failed { target, error } => eprintln!("{target}: {error}"),
        ForwardEvent::Closed { target, outcome } => {
            if let SpliceEnd::TcpFailed(reason) | SpliceEnd::QuicFailed(reason) = outcome.end {
                eprintln!("{target}: a forwarded connection was cut ({reason}).");
            }
        }
    }
}
