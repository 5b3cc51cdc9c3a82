//! `sekisho-broker`: the hospital's command line. Parses arguments and calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sekisho_broker::pki::{BrokerPki, TechnicianIdentity};
use sekisho_broker::policy::PolicySet;
use sekisho_broker::{Broker, BrokerConfig, DEFAULT_PORT};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sekisho-broker",
    version,
    about = "The hospital's remote-maintenance access broker"
)]
struct Cli {
    /// Where the broker keeps its CA, keys and state.
    #[arg(
        long,
        global = true,
        default_value = "sekisho-data",
        env = "SEKISHO_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// The directory with hospital.toml and vendors/*.toml.
    #[arg(
        long,
        global = true,
        default_value = "policies",
        env = "SEKISHO_POLICIES"
    )]
    policies: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (creates the data directory and CA on first start).
    Serve {
        /// The UDP address technicians connect to.
        #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
        listen: SocketAddr,
    },
    /// Check or show policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Development only, until enrollment exists: write a client certificate and key for a
    /// technician, with the broker CA to pin, into a directory.
    DevIssue {
        /// The vendor id (a file in policies/vendors/).
        #[arg(long)]
        vendor: String,
        /// The technician id.
        #[arg(long)]
        technician: String,
        /// The directory to write ca.pem, client.pem and client.key into.
        #[arg(long)]
        out: PathBuf,
        /// How many days the certificate is valid (at most 365).
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check every policy file without starting the broker; prints each problem as file:line: reason.
    Check {
        /// The policies directory (defaults to --policies).
        dir: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekisho-broker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { listen } => {
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(serve(BrokerConfig {
                listen,
                ..BrokerConfig::new(cli.data_dir, cli.policies)
            }))
        }
        Command::Policy {
            command: PolicyCommand::Check { dir },
        } => {
            let dir = dir.unwrap_or(cli.policies);
            match PolicySet::load(&dir) {
                Ok(policies) => {
                    println!(
                        "{}: {} vendor(s), {} file(s), all good.",
                        dir.display(),
                        policies.vendors().count(),
                        policies.files().len()
                    );
                    Ok(())
                }
                Err(errors) => {
                    println!("{errors}");
                    bail!("{} problem(s) in {}", errors.0.len(), dir.display())
                }
            }
        }
        Command::DevIssue {
            vendor,
            technician,
            out,
            days,
        } => {
            let policies = PolicySet::load(&cli.policies)
                .map_err(|errors| anyhow::anyhow!("the policies have problems:\n{errors}"))?;
            if policies.vendor(&vendor).is_none() {
                bail!(
                    "no vendor `{vendor}` in {}; add policies/vendors/{vendor}.toml first",
                    cli.policies.display()
                );
            }
            let identity = TechnicianIdentity::new(&vendor, &technician)?;
            let pki = BrokerPki::load_or_create(&cli.data_dir)?;
            let issued =
                pki.issue_client_certificate(&identity, Duration::from_secs(days * 24 * 3600))?;
            let [ca, cert, key] = issued.write_to(&out, pki.ca_pem())?;
            println!("Issued a development certificate for {identity}, valid {days} days:");
            println!("  broker CA:   {}", ca.display());
            println!("  certificate: {}", cert.display());
            println!("  key:         {}", key.display());
            println!(
                "Connect with: sekisho connect --broker HOST:{DEFAULT_PORT} --ca {} --cert {} --key {} -L LOCAL_PORT:TARGET",
                ca.display(),
                cert.display(),
                key.display()
            );
            Ok(())
        }
    }
}

async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let broker = Broker::bind(config).await?;
    eprintln!(
        "sekisho-broker for {} listening on UDP {}",
        broker.policies().hospital().name,
        broker.local_addr()
    );
    eprintln!(
        "Technicians pin this CA: {}",
        data_dir.join("pki").join("ca.pem").display()
    );
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        eprintln!("Stopping: closing every session.");
        signal.cancel();
    });
    broker.run(shutdown).await;
    Ok(())
}

/// Ctrl-C or SIGTERM (what systemd sends).
async fn wait_for_stop_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
