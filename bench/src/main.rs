//! `sekisho-bench`: sekisho against direct TCP and `ssh -L`, measured on this machine.
//!
//! `sekisho-bench all` sets everything up itself (a broker with its own data directory and
//! policies, technicians, approved sessions, a target, an `sshd` with generated keys, and a
//! network namespace behind an MTU-1500 veth pair when it runs as root), runs each path in
//! turn for several rounds, prints a table with medians, ranges and sekisho's ratio to each
//! baseline measured in the same run, checks the goals, and writes a JSON file.
//! `--smoke` runs every figure with tiny sizes in seconds, for CI: it proves the benchmark
//! works and asserts nothing about speed.
//!
//! # Layout
//!
//! - `roles`: the child processes (broker, client, target): this binary with a hidden
//!   subcommand, so each role's CPU and memory are a process's own.
//! - `procs`: starting children, reading their CPU and memory from `/proc`.
//! - `netns`: loopback, or a namespace behind a veth pair.
//! - `lab`: the hospital: policies, data directory, broker process, technicians, approvals.
//! - `paths`: direct, `ssh -L` (two ciphers), sekisho, on one network.
//! - `load`: the load generator (bulk transfers, 64-byte round trips).
//! - `transports`: QUIC and TLS over TCP alone, the floor under any relay built on each.
//! - `fleet`: figures 4–7 (connect time, forward opens, memory, session rate).
//! - `preauth`: figure 8 (a technician getting in while strangers attack before authenticating).
//! - `webload`: figure 9 (an approver's page while strangers abuse the web UI).
//! - `report`: medians, the table, goals, JSON.
//! - `wan`: `sekisho-bench wan`, the WAN lab: the same kinds of paths over emulated Internet,
//!   Wi-Fi and mobile links (its own link emulator, since the kernel has no netem).
//!
//! The benchmark never runs in the unit tests: figures depend on the machine, and goals are
//! read from its output.

mod fleet;
mod lab;
mod load;
mod netns;
mod paths;
mod preauth;
mod procs;
mod report;
mod roles;
mod transports;
mod wan;
mod webload;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::json;
use tunnel::udp::{Congestion, PacketSize};

use crate::fleet::FleetSize;
use crate::netns::Network;
use crate::paths::Setup;
use crate::procs::{cpu_seconds, cpu_snapshot, cpu_spent};
use crate::report::{Results, metric, percentile};

#[derive(Parser)]
#[command(
    name = "sekisho-bench",
    about = "Benchmarks sekisho against direct TCP and ssh -L on this machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every figure: paths on loopback and veth, connect time, forward opens, memory, session rate.
    All(AllArgs),
    /// The WAN lab: direct TCP (Cubic, BBR), ssh -L (over each) and sekisho (QUIC, TLS/TCP) over
    /// emulated links (fibre, internet, poor, lossy-fast, mobile). Needs root.
    Wan(WanArgs),
    #[command(hide = true)]
    WanLink {
        #[arg(long)]
        a: String,
        #[arg(long)]
        a_mac: pnet_datalink::MacAddr,
        #[arg(long)]
        b: String,
        #[arg(long)]
        b_mac: pnet_datalink::MacAddr,
        /// 0: no bottleneck.
        #[arg(long)]
        rate_bit_s: u64,
        #[arg(long)]
        queue_us: u64,
        #[arg(long)]
        delay_us: u64,
        #[arg(long)]
        jitter_us: u64,
        #[arg(long)]
        loss: f64,
        #[arg(long)]
        seed: u64,
    },
    #[command(hide = true)]
    Broker {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        policies: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = PacketSize::ETHERNET)]
        max_packet: PacketSize,
        #[arg(long, env = "SEKISHO_QUIC_CONGESTION", default_value_t = Congestion::default())]
        congestion: Congestion,
        /// Also serve the staff web UI (plain HTTP on loopback).
        #[arg(long)]
        web: bool,
    },
    #[command(hide = true)]
    Client {
        #[arg(long)]
        broker: String,
        #[arg(long)]
        ca: PathBuf,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        request: String,
        #[arg(long = "target")]
        targets: Vec<String>,
        #[arg(long, default_value_t = PacketSize::ETHERNET)]
        max_packet: PacketSize,
        #[arg(long, default_value = "quic")]
        transport: sekisho_client::transport::TransportChoice,
        #[arg(long, env = "SEKISHO_QUIC_CONGESTION", default_value_t = Congestion::default())]
        congestion: Congestion,
    },
    #[command(hide = true)]
    Target {
        #[arg(long)]
        ip: IpAddr,
    },
    #[command(hide = true)]
    TransportReceive {
        #[arg(long)]
        transport: transports::Transport,
        #[arg(long)]
        ip: IpAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    #[command(hide = true)]
    TransportSend {
        #[arg(long)]
        transport: transports::Transport,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        bytes: u64,
        #[arg(long)]
        ca: PathBuf,
    },
}

#[derive(clap::Args)]
struct AllArgs {
    /// Tiny sizes and one round: seconds, for CI. Figures are not meaningful.
    #[arg(long)]
    smoke: bool,
    /// Rounds; each runs every path once, in turn.
    #[arg(long)]
    rounds: Option<usize>,
    /// MiB per bulk transfer.
    #[arg(long)]
    mib: Option<u64>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/sekisho-bench.json")]
    json: PathBuf,
    /// Skip the veth namespace even when it could be made.
    #[arg(long)]
    no_veth: bool,
    /// Idle sessions for figures 6 and 7.
    #[arg(long)]
    sessions: Option<usize>,
    /// Only figures 1–3 (the paths side by side): for tuning the data path quickly.
    #[arg(long)]
    paths_only: bool,
    /// Only figure 8 (a technician getting in under pre-authentication load).
    #[arg(long, conflicts_with = "paths_only")]
    preauth_only: bool,
    /// Only figure 9 (an approver's page while the web UI is abused).
    #[arg(long, conflicts_with_all = ["paths_only", "preauth_only"])]
    web_only: bool,
    /// Measure only these paths (by their name in the table; repeatable). Ratios need their
    /// baselines in the same run.
    #[arg(long = "only", value_name = "PATH")]
    only: Vec<String>,
}

#[derive(clap::Args)]
struct WanArgs {
    /// Tiny durations, one round, the `internet` profile only: seconds, for CI. Figures are
    /// not meaningful.
    #[arg(long)]
    smoke: bool,
    /// Rounds; each runs every profile and path once, in turn.
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds each bulk transfer sends for.
    #[arg(long)]
    seconds: Option<u64>,
    /// Measure only these profiles (repeatable): fibre, internet, poor, lossy-fast, mobile.
    #[arg(long = "profile", value_name = "PROFILE")]
    profiles: Vec<String>,
    /// Measure only these paths (by their name in the table; repeatable).
    #[arg(long = "only", value_name = "PATH")]
    only: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/sekisho-bench-wan.json")]
    json: PathBuf,
}

/// Sizes of one run.
struct Plan {
    rounds: usize,
    bulk_bytes: u64,
    round_trips: usize,
    fleet: FleetSize,
    preauth: preauth::PreauthSize,
    webload: webload::WebLoadSize,
}

impl Plan {
    fn from(args: &AllArgs) -> Plan {
        let (rounds, mib, round_trips, fleet) = if args.smoke {
            (
                1,
                16,
                100,
                FleetSize {
                    connect_samples: 2,
                    forward_opens_for: Duration::from_secs(1),
                    idle_sessions: 10,
                    busy_sessions: 2,
                    busy_for: Duration::from_secs(1),
                },
            )
        } else {
            (
                5,
                1024,
                2000,
                FleetSize {
                    connect_samples: 20,
                    forward_opens_for: Duration::from_secs(5),
                    idle_sessions: 1000,
                    busy_sessions: 200,
                    busy_for: Duration::from_secs(5),
                },
            )
        };
        let mut fleet = fleet;
        if let Some(sessions) = args.sessions {
            fleet.idle_sessions = sessions;
            fleet.busy_sessions = fleet.busy_sessions.min(sessions);
        }
        Plan {
            webload: if args.smoke {
                webload::WebLoadSize::SMOKE
            } else {
                webload::WebLoadSize::FULL
            },
            preauth: if args.smoke {
                preauth::PreauthSize::SMOKE
            } else {
                preauth::PreauthSize::FULL
            },
            rounds: args.rounds.unwrap_or(rounds),
            bulk_bytes: args.mib.unwrap_or(mib) * 1024 * 1024,
            round_trips,
            fleet,
        }
    }
}

/// One line on stderr about what runs now.
pub(crate) fn progress(what: &str) {
    eprintln!("[sekisho-bench] {what}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The link emulator is plain threads on blocking packet sockets: no runtime.
    if let Command::WanLink {
        a,
        a_mac,
        b,
        b_mac,
        rate_bit_s,
        queue_us,
        delay_us,
        jitter_us,
        loss,
        seed,
    } = &cli.command
    {
        let shape = wan::Shape {
            rate_bit_s: (*rate_bit_s > 0).then_some(*rate_bit_s),
            queue: Duration::from_micros(*queue_us),
            delay: Duration::from_micros(*delay_us),
            jitter: Duration::from_micros(*jitter_us),
            loss: *loss,
        };
        return match wan::run_link(a, *a_mac, b, *b_mac, shape, *seed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sekisho-bench wan-link: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEKISHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The client role runs as `sekisho` does: one thread, and so do both ends of a transport
    // alone (as a broker data thread does); the others on a multi-threaded runtime.
    let runtime = match &cli.command {
        Command::Client { .. }
        | Command::TransportReceive { .. }
        | Command::TransportSend { .. } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sekisho-bench: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::All(args) => all(args).await,
            Command::Wan(args) => wan_lab(args).await,
            // Handled before the runtime starts.
            Command::WanLink { .. } => Ok(()),
            Command::Broker {
                data_dir,
                policies,
                listen,
                max_packet,
                congestion,
                web,
            } => roles::broker(data_dir, policies, listen, max_packet, congestion, web).await,
            Command::Client {
                broker,
                ca,
                cert,
                key,
                request,
                targets,
                max_packet,
                transport,
                congestion,
            } => {
                let mut config =
                    sekisho_client::ClientConfig::from_files(&broker, &ca, &cert, &key)?;
                config.max_packet = max_packet;
                config.transport = transport;
                config.congestion = congestion;
                roles::client(config, request, targets).await
            }
            Command::Target { ip } => roles::target(ip).await,
            Command::TransportReceive {
                transport,
                ip,
                cert,
                key,
            } => transports::receive(transport, ip, &cert, &key).await,
            Command::TransportSend {
                transport,
                to,
                bytes,
                ca,
            } => transports::send(transport, to, bytes, &ca).await,
        }
    });
    // Children and tasks still running are dropped with the runtime (children are killed).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sekisho-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn all(args: AllArgs) -> anyhow::Result<()> {
    let plan = Plan::from(&args);
    let mut results = Results::default();
    if args.web_only {
        let unused = SocketAddr::from(([127, 0, 0, 1], 9));
        webload::web_under_abuse(&[("sink", unused)], plan.webload, &mut results).await?;
        results.skipped.push("figures 1–8: --web-only".into());
        return report(&args, &plan, &results);
    }
    if args.preauth_only {
        // Figure 8 opens no forward; the policy names a target only because one must.
        let unused = SocketAddr::from(([127, 0, 0, 1], 9));
        let lab = lab::Lab::start(
            &Network::loopback(),
            &[("sink", unused)],
            PacketSize::ETHERNET,
        )
        .await?;
        preauth::preauth_load(&lab, plan.preauth, &mut results).await?;
        results.skipped.push("figures 1–7: --preauth-only".into());
        return report(&args, &plan, &results);
    }
    for (program, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh", "openssh-client"),
    ] {
        anyhow::ensure!(
            std::path::Path::new(program).is_file(),
            "{program} is missing; install {package} (the `ssh -L` baseline needs it)"
        );
    }

    let mut networks = vec![Network::loopback()];
    if args.no_veth {
        results.skipped.push("veth: --no-veth".into());
    } else {
        match Network::veth() {
            Ok(veth) => networks.push(veth),
            Err(e) => {
                let why = format!(
                    "veth rows: the namespace cannot be made ({e:#}); run as root to measure them"
                );
                progress(&why);
                results.skipped.push(why);
            }
        }
    }
    let mut setups = Vec::new();
    for network in networks {
        progress(&format!(
            "starting target, sshd, ssh -L and sekisho on {}",
            network.name
        ));
        setups.push(Setup::start(network).await?);
    }

    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let credentials = transports::Credentials::generate()?;
    for round in 1..=plan.rounds {
        for setup in &setups {
            for route in setup.paths.iter().filter(|route| wanted(route.name)) {
                progress(&format!(
                    "round {round}/{}: {} on {}",
                    plan.rounds, route.name, setup.network.name
                ));
                measure_route(setup, route, &plan, &mut results).await?;
            }
            for transport in transports::Transport::ALL
                .into_iter()
                .filter(|transport| wanted(transport.name()))
            {
                progress(&format!(
                    "round {round}/{}: {} on {}",
                    plan.rounds,
                    transport.name(),
                    setup.network.name
                ));
                transports::measure(
                    &setup.network,
                    transport,
                    plan.bulk_bytes,
                    &credentials,
                    &mut results,
                )
                .await?;
            }
        }
    }

    let Some(loopback) = setups.first() else {
        anyhow::bail!("no network to measure on");
    };
    if args.paths_only {
        results.skipped.push("figures 4–7: --paths-only".into());
    } else {
        fleet_figures(loopback, &plan, &mut results).await?;
    }
    report(&args, &plan, &results)
}

async fn wan_lab(args: WanArgs) -> anyhow::Result<()> {
    let mut plan = if args.smoke {
        wan::WanPlan::SMOKE
    } else {
        wan::WanPlan::FULL
    };
    if let Some(rounds) = args.rounds {
        plan.rounds = rounds;
    }
    if let Some(seconds) = args.seconds {
        plan.bulk = Duration::from_secs(seconds);
    }
    let wanted: Vec<String> = if args.profiles.is_empty() && args.smoke {
        vec!["internet".to_owned()]
    } else {
        args.profiles.clone()
    };
    let mut profiles = Vec::new();
    for profile in wan::PROFILES {
        if wanted.is_empty() || wanted.iter().any(|w| w == profile.name) {
            profiles.push(profile);
        }
    }
    for name in &wanted {
        anyhow::ensure!(
            wan::PROFILES.iter().any(|p| p.name == name),
            "no profile {name}; there are {}",
            wan::PROFILES.map(|p| p.name).join(", ")
        );
    }
    wan::run(profiles, &args.only, plan, args.smoke, args.json).await
}

/// Figures 4–9, on loopback.
async fn fleet_figures(loopback: &Setup, plan: &Plan, results: &mut Results) -> anyhow::Result<()> {
    progress("figure 4: connect to first byte");
    fleet::connect_to_first_byte(&loopback.lab, plan.fleet.connect_samples, results).await?;
    progress("figure 5: audited forward opens");
    fleet::forward_opens(&loopback.lab, plan.fleet.forward_opens_for, results).await?;
    let fleet_lab = lab::Lab::start(
        &Network::loopback(),
        &[("sink", loopback.paths[0].sink)],
        PacketSize::ETHERNET,
    )
    .await?;
    fleet::sessions(Arc::new(fleet_lab), plan.fleet, results).await?;
    // A broker of its own: the attack must not leave state behind for other figures.
    let attacked = lab::Lab::start(
        &Network::loopback(),
        &[("sink", loopback.paths[0].sink)],
        PacketSize::ETHERNET,
    )
    .await?;
    preauth::preauth_load(&attacked, plan.preauth, results).await?;
    webload::web_under_abuse(&[("sink", loopback.paths[0].sink)], plan.webload, results).await
}

/// Prints the table and the goals, and writes the JSON file.
fn report(args: &AllArgs, plan: &Plan, results: &Results) -> anyhow::Result<()> {
    let table = results.table();
    println!("{table}");
    if args.smoke {
        println!("Goals (smoke mode: the sizes are too small for these to say anything):");
    } else if plan.fleet.idle_sessions != 1000 || plan.rounds < 3 {
        println!(
            "Goals ({} rounds, {} sessions: the goals are stated for the default run):",
            plan.rounds, plan.fleet.idle_sessions
        );
    } else {
        println!("Goals:");
    }
    for goal in results.goals() {
        println!("{}", goal.line());
    }
    let settings = json!({
        "rounds": plan.rounds,
        "bulk_bytes": plan.bulk_bytes,
        "round_trips_per_round": plan.round_trips,
        "connect_samples": plan.fleet.connect_samples,
        "forward_opens_seconds": plan.fleet.forward_opens_for.as_secs_f64(),
        "idle_sessions": plan.fleet.idle_sessions,
        "busy_sessions": plan.fleet.busy_sessions,
        "busy_forwards_per_session": 5,
        "preauth_stalled_handshakes": plan.preauth.stalled_sources * plan.preauth.stalled_per_source,
        "preauth_silent_enrollments": plan.preauth.silent,
        "preauth_flood_per_second": plan.preauth.flood_per_second,
        "preauth_seconds": plan.preauth.duration.as_secs_f64(),
        "smoke": args.smoke,
    });
    let document = results.json(&machine(), &settings);
    if let Some(parent) = args.json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&document)?)?;
    println!("\nJSON: {}", args.json.display());
    Ok(())
}

/// Figures 1–3 for one path: bulk with 1 and 8 forwards (CPU measured on the first), then
/// 64-byte round trips.
async fn measure_route(
    setup: &Setup,
    route: &paths::Route,
    plan: &Plan,
    results: &mut Results,
) -> anyhow::Result<()> {
    let network = setup.network.name;
    let mut everyone = route.relays.clone();
    everyone.push(setup.target.pid);
    everyone.push(std::process::id());
    let (relays_before, all_before) = (cpu_snapshot(&route.relays), cpu_snapshot(&everyone));
    let took = load::bulk(route.sink, plan.bulk_bytes, 1).await?;
    let (relays_after, all_after) = (cpu_snapshot(&route.relays), cpu_snapshot(&everyone));
    let gigabytes = plan.bulk_bytes as f64 / 1e9;
    results.add(
        network,
        route.name,
        metric::BULK_1,
        "Gbit/s",
        gigabytes * 8.0 / took.as_secs_f64(),
    );
    let relays = cpu_spent(&relays_before, &relays_after);
    results.add(
        network,
        route.name,
        metric::CPU_RELAY,
        "CPU-s/GB",
        relays.total() / gigabytes,
    );
    results.add(
        network,
        route.name,
        metric::CPU_RELAY_USER,
        "CPU-s/GB",
        relays.user / gigabytes,
    );
    results.add(
        network,
        route.name,
        metric::CPU_RELAY_KERNEL,
        "CPU-s/GB",
        relays.kernel / gigabytes,
    );
    results.add(
        network,
        route.name,
        metric::CPU_ALL,
        "CPU-s/GB",
        cpu_seconds(&all_before, &all_after) / gigabytes,
    );

    let took = load::bulk(route.sink, plan.bulk_bytes, 8).await?;
    results.add(
        network,
        route.name,
        metric::BULK_8,
        "Gbit/s",
        gigabytes * 8.0 / took.as_secs_f64(),
    );

    let times: Vec<f64> = load::round_trips(route.echo, plan.round_trips)
        .await?
        .iter()
        .map(|t| t.as_secs_f64() * 1e6)
        .collect();
    results.add(
        network,
        route.name,
        metric::RTT_P50,
        "µs",
        percentile(&times, 50.0),
    );
    results.add(
        network,
        route.name,
        metric::RTT_P99,
        "µs",
        percentile(&times, 99.0),
    );
    Ok(())
}

/// What the run ran on.
fn machine() -> serde_json::Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let memory_kib = read("/proc/meminfo")
        .lines()
        .find_map(|line| {
            line.strip_prefix("MemTotal:")
                .map(|rest| rest.trim().trim_end_matches("kB").trim().to_owned())
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "memory_kib": memory_kib,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}
