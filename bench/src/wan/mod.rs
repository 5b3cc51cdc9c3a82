//! The WAN lab: sekisho, `ssh -L` and direct TCP side by side over emulated Internet, Wi-Fi
//! and mobile links (`sekisho-bench wan`).
//!
//! # The lab
//!
//! Three network namespaces in a line: the benchmark's own (the technician's side: the load
//! generator, `ssh`, the sekisho client), a link namespace where [`emulator`] bridges two veth
//! pairs in user space and shapes both directions, and a server namespace (the hospital's side:
//! the target, `sshd`, the broker). The kernel here has no `sch_netem`, hence the emulator.
//!
//! Each side has two addresses, and the route between each pair names its TCP congestion
//! control (`ip route … congctl`): 10.78.0.1 ↔ 10.78.0.11 is Cubic, 10.78.0.2 ↔ 10.78.0.12 is
//! BBR, whatever the namespaces' defaults. So direct TCP and `ssh -L` are measured over both,
//! in one run; the brokers listen on the BBR address (their TLS-over-TCP transport then uses
//! the host's best TCP). QUIC brings its own congestion control, chosen per endpoint: two
//! brokers run, one sending with Cubic and one with BBR, each with a client that does the same.
//!
//! The paths are set up once; each profile restarts only the emulator, with the profile's
//! shape. Rounds are interleaved: every profile and path once per round, so a slow moment of
//! the machine spreads over all of them.
//!
//! # What is measured, per profile and path
//!
//! 1 forward bulk down (the target sends) and up, each for a fixed time; 4 forwards up at
//! once; 64-byte ping-pong p50/p99 idle and while a bulk transfer runs on another forward of
//! the same session; a new forward to its first echoed byte; a client's start (request
//! approved, code given) to its first echoed byte; relay CPU per GB on the fibre profile. See
//! [`report`] for the goals.

mod emulator;
mod report;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::Command;

pub(crate) use emulator::{Shape, run as run_link};

use crate::lab::Lab;
use crate::load;
use crate::netns::{Network, in_namespace, ip, remove_namespace};
use crate::paths::{client_port, spawn_client, start_ssh_forwards, start_sshd};
use crate::procs::{Child, cpu_snapshot, cpu_spent};
use crate::progress;
use report::{WanResults, metric};
use tunnel::udp::{Congestion, PacketSize};

const LINK_NAMESPACE: &str = "sekisho-wan-link";
const SERVER_NAMESPACE: &str = "sekisho-wan-server";
/// The technician's side's interface (in the benchmark's namespace) and its peer in the link
/// namespace.
const CLIENT_LINK: &str = "skwan-c";
const CLIENT_LINK_PEER: &str = "skwan-cl";
/// The hospital's side's interface (in the server namespace) and its peer in the link
/// namespace.
const SERVER_LINK: &str = "skwan-s";
const SERVER_LINK_PEER: &str = "skwan-sl";
const CLIENT_MAC: &str = "02:5e:00:00:00:01";
const SERVER_MAC: &str = "02:5e:00:00:00:02";
const CLIENT_CUBIC: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const CLIENT_BBR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const SERVER_CUBIC: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 11);
const SERVER_BBR: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 12);

/// A link as a technician meets it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Profile {
    pub(crate) name: &'static str,
    /// The bottleneck's rate, each direction; `None`: none.
    pub(crate) rate_mbit_s: Option<u64>,
    /// The round-trip time the link adds (half each way).
    pub(crate) rtt: Duration,
    /// Random loss, each direction, in percent.
    pub(crate) loss_percent: f64,
    /// Up to this much extra one-way delay per packet (never reordering).
    pub(crate) jitter: Duration,
}

/// The profiles, in the order they are measured.
pub(crate) const PROFILES: [Profile; 5] = [
    Profile {
        name: "fibre",
        rate_mbit_s: Some(1000),
        rtt: Duration::from_millis(10),
        loss_percent: 0.0,
        jitter: Duration::ZERO,
    },
    Profile {
        name: "internet",
        rate_mbit_s: Some(200),
        rtt: Duration::from_millis(40),
        loss_percent: 0.2,
        jitter: Duration::ZERO,
    },
    Profile {
        name: "poor",
        rate_mbit_s: Some(20),
        rtt: Duration::from_millis(100),
        loss_percent: 1.0,
        jitter: Duration::ZERO,
    },
    Profile {
        name: "lossy-fast",
        rate_mbit_s: Some(1000),
        rtt: Duration::from_millis(40),
        loss_percent: 1.0,
        jitter: Duration::ZERO,
    },
    Profile {
        name: "mobile",
        rate_mbit_s: Some(30),
        rtt: Duration::from_millis(60),
        loss_percent: 0.5,
        jitter: Duration::from_millis(10),
    },
];

impl Profile {
    /// How the emulator shapes each direction: half the RTT each way, and a bottleneck queue
    /// of one RTT at the rate (the bandwidth-delay product, a common router buffer).
    pub(crate) fn shape(&self) -> Shape {
        Shape {
            rate_bit_s: self.rate_mbit_s.map(|mbit| mbit * 1_000_000),
            queue: self.rtt,
            delay: self.rtt / 2,
            jitter: self.jitter,
            loss: self.loss_percent / 100.0,
        }
    }

    /// The Mathis et al. bound on a loss-driven TCP flow's rate, in Mbit/s
    /// (MSS/RTT × √(3/2) / √p, MSS 1448 bytes), capped by the link's rate; `None` without loss.
    pub(crate) fn mathis_mbit_s(&self) -> Option<f64> {
        if self.loss_percent <= 0.0 {
            return None;
        }
        let p = self.loss_percent / 100.0;
        let bound = 1448.0 * 8.0 / self.rtt.as_secs_f64() * 1.5f64.sqrt() / p.sqrt() / 1e6;
        Some(match self.rate_mbit_s {
            Some(rate) => bound.min(rate as f64),
            None => bound,
        })
    }
}

/// How long each figure runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WanPlan {
    pub(crate) rounds: usize,
    /// Each bulk transfer sends for this long.
    pub(crate) bulk: Duration,
    /// Ping-pong (idle, and under bulk) lasts this long, and at least `min_trips` trips.
    pub(crate) pings: Duration,
    pub(crate) min_trips: usize,
    /// How long a bulk transfer runs before the ping-pong beside it starts.
    pub(crate) ramp_up: Duration,
    /// New forwards timed per round and path.
    pub(crate) new_forwards: usize,
}

impl WanPlan {
    pub(crate) const FULL: WanPlan = WanPlan {
        rounds: 3,
        bulk: Duration::from_secs(4),
        pings: Duration::from_secs(3),
        min_trips: 20,
        ramp_up: Duration::from_secs(1),
        new_forwards: 5,
    };
    pub(crate) const SMOKE: WanPlan = WanPlan {
        rounds: 1,
        bulk: Duration::from_millis(500),
        pings: Duration::from_millis(300),
        min_trips: 3,
        ramp_up: Duration::from_millis(200),
        new_forwards: 2,
    };
}

/// `sekisho-bench wan`: every path on every profile in `profiles`, `plan.rounds` times; prints
/// the tables and goals and writes `json`.
pub(crate) async fn run(
    profiles: Vec<Profile>,
    only: &[String],
    plan: WanPlan,
    smoke: bool,
    json: PathBuf,
) -> anyhow::Result<()> {
    let mut lab = WanLab::create()
        .context("the WAN lab's namespaces cannot be made (it needs root, `ip` and `ethtool`)")?;
    // The link must pass packets before the paths can be set up over it.
    let first = profiles.first().copied().context("no profile to measure")?;
    lab.shape(&first).await?;
    progress("WAN lab: starting the target, sshd, ssh -L and sekisho across the link");
    let paths = WanPaths::start().await?;
    let mut results = WanResults::default();
    for round in 1..=plan.rounds {
        for profile in &profiles {
            lab.shape(profile).await?;
            for route in paths
                .routes
                .iter()
                .filter(|route| only.is_empty() || only.iter().any(|wanted| wanted == route.name))
            {
                progress(&format!(
                    "WAN round {round}/{}: {} on {}",
                    plan.rounds, route.name, profile.name
                ));
                measure(&paths, route, profile, &plan, &mut results)
                    .await
                    .with_context(|| format!("{} on {}", route.name, profile.name))?;
            }
        }
    }
    drop(paths);
    println!("{}", results.table(&profiles));
    if smoke {
        println!("Goals (smoke mode: the sizes are too small for these to say anything):");
    } else {
        println!("Goals:");
    }
    for goal in results.goals(&profiles) {
        println!("{}", goal.line());
    }
    if let Some(parent) = json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let settings = serde_json::json!({
        "rounds": plan.rounds,
        "bulk_seconds": plan.bulk.as_secs_f64(),
        "ping_seconds": plan.pings.as_secs_f64(),
        "smoke": smoke,
        "profiles": profiles.iter().map(|p| serde_json::json!({
            "name": p.name,
            "rate_mbit_s": p.rate_mbit_s,
            "rtt_ms": p.rtt.as_secs_f64() * 1e3,
            "loss_percent": p.loss_percent,
            "jitter_ms": p.jitter.as_secs_f64() * 1e3,
            "queue_ms": p.shape().queue.as_secs_f64() * 1e3,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&results.json(&settings, &profiles))?,
    )?;
    println!("\nJSON: {}", json.display());
    Ok(())
}

/// The namespaces, the veth pairs and the emulator between them; removed when dropped, also
/// when the benchmark fails half-way.
struct WanLab {
    link: Option<Child>,
    /// The profile the running emulator has.
    shaped: Option<&'static str>,
    seed: u64,
}

impl WanLab {
    fn create() -> anyhow::Result<WanLab> {
        // What a benchmark that was killed left behind goes first.
        remove_everything();
        ip(&["netns", "add", LINK_NAMESPACE])?;
        // From here on, dropping the value cleans up.
        let lab = WanLab {
            link: None,
            shaped: None,
            seed: 1,
        };
        ip(&["netns", "add", SERVER_NAMESPACE])?;
        let in_link = |args: &[&str]| in_namespace(LINK_NAMESPACE, args);
        let in_server = |args: &[&str]| in_namespace(SERVER_NAMESPACE, args);
        for (end, mac, peer) in [
            (CLIENT_LINK, CLIENT_MAC, CLIENT_LINK_PEER),
            (SERVER_LINK, SERVER_MAC, SERVER_LINK_PEER),
        ] {
            ip(&[
                "link", "add", end, "address", mac, "mtu", "1500", "type", "veth", "peer", "name",
                peer, "mtu", "1500",
            ])?;
            ip(&["link", "set", peer, "netns", LINK_NAMESPACE])?;
        }
        ip(&["link", "set", SERVER_LINK, "netns", SERVER_NAMESPACE])?;
        for address in [CLIENT_CUBIC, CLIENT_BBR] {
            ip(&["addr", "add", &format!("{address}/24"), "dev", CLIENT_LINK])?;
        }
        ip(&["link", "set", CLIENT_LINK, "up"])?;
        for address in [SERVER_CUBIC, SERVER_BBR] {
            in_server(&["addr", "add", &format!("{address}/24"), "dev", SERVER_LINK])?;
        }
        in_server(&["link", "set", SERVER_LINK, "up"])?;
        in_server(&["link", "set", "lo", "up"])?;
        in_link(&["link", "set", CLIENT_LINK_PEER, "up"])?;
        in_link(&["link", "set", SERVER_LINK_PEER, "up"])?;
        // Each pair of addresses has its own congestion control, on both sides.
        for (client, server, control) in [
            (CLIENT_CUBIC, SERVER_CUBIC, "cubic"),
            (CLIENT_BBR, SERVER_BBR, "bbr"),
        ] {
            let (client, server) = (client.to_string(), server.to_string());
            ip(&[
                "route",
                "add",
                &format!("{server}/32"),
                "dev",
                CLIENT_LINK,
                "src",
                &client,
                "congctl",
                control,
            ])?;
            in_server(&[
                "route",
                "add",
                &format!("{client}/32"),
                "dev",
                SERVER_LINK,
                "src",
                &server,
                "congctl",
                control,
            ])?;
        }
        // Segmentation and checksum offloads off everywhere, so every frame on the link is one
        // MTU-sized packet with its checksum (see the emulator's docs).
        ethtool(None, CLIENT_LINK)?;
        ethtool(Some(SERVER_NAMESPACE), SERVER_LINK)?;
        ethtool(Some(LINK_NAMESPACE), CLIENT_LINK_PEER)?;
        ethtool(Some(LINK_NAMESPACE), SERVER_LINK_PEER)?;
        Ok(lab)
    }

    /// (Re)starts the emulator with `profile`'s shape, and waits until it bridges; nothing to
    /// do if it already has that shape.
    async fn shape(&mut self, profile: &Profile) -> anyhow::Result<()> {
        if self.shaped == Some(profile.name) {
            return Ok(());
        }
        if let Some(old) = self.link.take() {
            old.stop().await;
        }
        let shape = profile.shape();
        self.seed += 1;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", LINK_NAMESPACE])
            .arg(std::env::current_exe()?)
            .arg("wan-link")
            .args(["--a", CLIENT_LINK_PEER, "--a-mac", CLIENT_MAC])
            .args(["--b", SERVER_LINK_PEER, "--b-mac", SERVER_MAC])
            .arg("--rate-bit-s")
            .arg(shape.rate_bit_s.unwrap_or(0).to_string())
            .arg("--queue-us")
            .arg(shape.queue.as_micros().to_string())
            .arg("--delay-us")
            .arg(shape.delay.as_micros().to_string())
            .arg("--jitter-us")
            .arg(shape.jitter.as_micros().to_string())
            .arg("--loss")
            .arg(shape.loss.to_string())
            .arg("--seed")
            .arg(self.seed.to_string());
        let mut link = Child::spawn(&format!("WAN link ({})", profile.name), command)?;
        link.expect_stdout("LINK UP").await?;
        link.drain();
        self.link = Some(link);
        self.shaped = Some(profile.name);
        Ok(())
    }
}

impl Drop for WanLab {
    fn drop(&mut self) {
        // The emulator is killed with its value; the namespaces and pairs go after it.
        self.link.take();
        remove_everything();
    }
}

fn remove_everything() {
    remove_namespace(SERVER_NAMESPACE);
    remove_namespace(LINK_NAMESPACE);
    let _ = ip(&["link", "del", CLIENT_LINK]);
}

/// Turns off segmentation, receive coalescing and checksum offloads on `link`, in
/// `namespace` or the benchmark's own.
fn ethtool(namespace: Option<&str>, link: &str) -> anyhow::Result<()> {
    let mut command = match namespace {
        Some(namespace) => {
            let mut command = std::process::Command::new("ip");
            command.args(["netns", "exec", namespace, "ethtool"]);
            command
        }
        None => std::process::Command::new("ethtool"),
    };
    let output = command
        .args([
            "-K", link, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
        ])
        .output()
        .context("cannot run `ethtool` (install ethtool)")?;
    anyhow::ensure!(
        output.status.success(),
        "`ethtool -K {link}` failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// How a path's client side starts, for the "start to first byte" figure.
#[derive(Clone, Copy)]
enum Starts {
    /// Nothing to start.
    Direct,
    /// `ssh -N -L` with this cipher, to this address of the server.
    Ssh(&'static str, Ipv4Addr),
    /// A sekisho client of this broker (index into the brokers) over this transport, its
    /// QUIC sending under this congestion controller.
    Sekisho(usize, &'static str, Congestion),
}

/// One path across the link.
pub(crate) struct WanRoute {
    pub(crate) name: &'static str,
    sink: SocketAddr,
    echo: SocketAddr,
    source: SocketAddr,
    /// The relaying processes (their descendants count too); empty for direct TCP.
    relays: Vec<u32>,
    starts: Starts,
}

/// Path names, as the tables show them.
pub(crate) mod path {
    pub(crate) const DIRECT_CUBIC: &str = "direct TCP, Cubic";
    pub(crate) const DIRECT_BBR: &str = "direct TCP, BBR";
    pub(crate) const SSH_CUBIC: &str = "ssh -L aes128-gcm, Cubic";
    pub(crate) const SSH_BBR: &str = "ssh -L aes128-gcm, BBR";
    pub(crate) const SEKISHO_QUIC_CUBIC: &str = "sekisho QUIC, Cubic";
    pub(crate) const SEKISHO_QUIC_BBR: &str = "sekisho QUIC, BBR";
    pub(crate) const SEKISHO_TCP: &str = "sekisho TLS/TCP, BBR";
    /// sekisho's paths, held to the goals.
    pub(crate) const OURS: [&str; 3] = [SEKISHO_QUIC_CUBIC, SEKISHO_QUIC_BBR, SEKISHO_TCP];
    /// In the order the tables list them.
    pub(crate) const ALL: [&str; 7] = [
        DIRECT_CUBIC,
        DIRECT_BBR,
        SSH_CUBIC,
        SSH_BBR,
        SEKISHO_QUIC_CUBIC,
        SEKISHO_QUIC_BBR,
        SEKISHO_TCP,
    ];
}

const SSH_CIPHER: &str = "aes128-gcm@openssh.com";

/// Everything running across the link, kept for all rounds and profiles.
struct WanPaths {
    routes: Vec<WanRoute>,
    /// One broker per QUIC congestion controller measured (the controller is an endpoint's).
    brokers: Vec<Lab>,
    ssh_dir: TempDir,
    sshd_port: u16,
    echo_port: u16,
    _target: Child,
    _sshd: Child,
    _forwarders: Vec<Child>,
}

impl WanPaths {
    async fn start() -> anyhow::Result<WanPaths> {
        let server = Network::inside("WAN", SERVER_NAMESPACE, IpAddr::V4(SERVER_BBR));
        let exe = std::env::current_exe()?;
        let mut command = server.server_command(&exe);
        command
            .arg("target")
            .arg("--ip")
            .arg(server.listen_ip().to_string());
        let mut target = Child::spawn("target (WAN)", command)?;
        let sink_port: u16 = target.expect_stdout("SINK").await?.parse()?;
        let echo_port: u16 = target.expect_stdout("ECHO").await?.parse()?;
        let source_port: u16 = target.expect_stdout("SOURCE").await?.parse()?;
        target.drain();
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));

        let mut routes = Vec::new();
        for (name, server_ip) in [
            (path::DIRECT_CUBIC, SERVER_CUBIC),
            (path::DIRECT_BBR, SERVER_BBR),
        ] {
            let remote = |port| SocketAddr::from((server_ip, port));
            routes.push(WanRoute {
                name,
                sink: remote(sink_port),
                echo: remote(echo_port),
                source: remote(source_port),
                relays: Vec::new(),
                starts: Starts::Direct,
            });
        }

        let ssh_dir = tempfile::tempdir()?;
        let (sshd, sshd_port) = start_sshd(&server, ssh_dir.path()).await?;
        let mut forwarders = Vec::new();
        for (name, server_ip) in [(path::SSH_CUBIC, SERVER_CUBIC), (path::SSH_BBR, SERVER_BBR)] {
            let (ssh, ports) = start_ssh_forwards(
                name,
                SSH_CIPHER,
                ssh_dir.path(),
                IpAddr::V4(server_ip),
                sshd_port,
                &[sink_port, echo_port, source_port],
            )
            .await?;
            routes.push(WanRoute {
                name,
                sink: local(ports[0]),
                echo: local(ports[1]),
                source: local(ports[2]),
                relays: vec![sshd.pid, ssh.pid],
                starts: Starts::Ssh(SSH_CIPHER, server_ip),
            });
            forwarders.push(ssh);
        }

        let loopback = Ipv4Addr::LOCALHOST;
        let targets = [
            ("sink", SocketAddr::from((loopback, sink_port))),
            ("echo", SocketAddr::from((loopback, echo_port))),
            ("source", SocketAddr::from((loopback, source_port))),
        ];
        let mut brokers = Vec::new();
        for congestion in [Congestion::Cubic, Congestion::Bbr] {
            brokers.push(Lab::start_sending_with(&server, &targets, congestion).await?);
        }
        for (name, broker, transport, congestion) in [
            (path::SEKISHO_QUIC_CUBIC, 0, "quic", Congestion::Cubic),
            (path::SEKISHO_QUIC_BBR, 1, "quic", Congestion::Bbr),
            (path::SEKISHO_TCP, 0, "tcp", Congestion::Cubic),
        ] {
            let lab = &brokers[broker];
            let targets = ["sink", "echo", "source"];
            let technician = lab.technician().await?;
            let request = lab.approved_request(&technician, &targets).await?;
            let mut client = spawn_client(
                lab,
                &technician,
                &request,
                &targets,
                PacketSize::ETHERNET,
                transport,
                Some(congestion),
            )?;
            let mut ports = Vec::new();
            for target in targets {
                ports.push(client_port(&mut client, target).await?);
            }
            client.say(&lab.otp(&technician)?).await?;
            client.expect_stdout("OPEN").await?;
            client.drain();
            routes.push(WanRoute {
                name,
                sink: local(ports[0]),
                echo: local(ports[1]),
                source: local(ports[2]),
                relays: vec![lab.broker_pid(), client.pid],
                starts: Starts::Sekisho(broker, transport, congestion),
            });
            forwarders.push(client);
        }
        Ok(WanPaths {
            routes,
            brokers,
            ssh_dir,
            sshd_port,
            echo_port,
            _target: target,
            _sshd: sshd,
            _forwarders: forwarders,
        })
    }

    /// Starts `route`'s client side afresh and times it to its first echoed byte; `None` for
    /// direct TCP, which has nothing to start.
    async fn start_to_first_byte(&self, route: &WanRoute) -> anyhow::Result<Option<Duration>> {
        match route.starts {
            Starts::Direct => Ok(None),
            Starts::Ssh(cipher, server_ip) => {
                let started = Instant::now();
                let (_ssh, ports) = start_ssh_forwards(
                    route.name,
                    cipher,
                    self.ssh_dir.path(),
                    IpAddr::V4(server_ip),
                    self.sshd_port,
                    &[self.echo_port],
                )
                .await?;
                let answered =
                    load::first_echo(SocketAddr::from((Ipv4Addr::LOCALHOST, ports[0]))).await?;
                Ok(Some(answered - started))
            }
            Starts::Sekisho(broker, transport, congestion) => {
                let lab = &self.brokers[broker];
                // A new technician with a request approved beforehand: the figure is the
                // client's own start, not the approver's.
                let technician = lab.technician().await?;
                let request = lab.approved_request(&technician, &["echo"]).await?;
                let code = lab.otp(&technician)?;
                let started = Instant::now();
                let mut client = spawn_client(
                    lab,
                    &technician,
                    &request,
                    &["echo"],
                    PacketSize::ETHERNET,
                    transport,
                    Some(congestion),
                )?;
                let port = client_port(&mut client, "echo").await?;
                client.say(&code).await?;
                let answered =
                    load::first_echo(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
                client.stop().await;
                Ok(Some(answered - started))
            }
        }
    }
}

/// Every figure of `route` on `profile`, once.
async fn measure(
    paths: &WanPaths,
    route: &WanRoute,
    profile: &Profile,
    plan: &WanPlan,
    results: &mut WanResults,
) -> anyhow::Result<()> {
    let mut add = |metric: &'static str, value: f64| {
        results.add(profile.name, route.name, metric, value);
    };
    let mbit_s = |(bytes, took): (u64, Duration)| bytes as f64 * 8.0 / took.as_secs_f64() / 1e6;

    add(
        metric::BULK_DOWN,
        mbit_s(load::download_for(route.source, plan.bulk).await?),
    );

    let before = cpu_snapshot(&route.relays);
    let (bytes, took) = load::upload_for(route.sink, plan.bulk, 1).await?;
    let relays = cpu_spent(&before, &cpu_snapshot(&route.relays));
    add(metric::BULK_UP, mbit_s((bytes, took)));
    if profile.loss_percent == 0.0 && !route.relays.is_empty() {
        add(metric::CPU_RELAY, relays.total() / (bytes as f64 / 1e9));
    }

    add(
        metric::BULK_4,
        mbit_s(load::upload_for(route.sink, plan.bulk, 4).await?),
    );

    let millis = |times: Vec<Duration>| -> Vec<f64> {
        times.iter().map(|t| t.as_secs_f64() * 1e3).collect()
    };
    let idle = millis(load::round_trips_for(route.echo, plan.pings, plan.min_trips).await?);
    add(
        metric::PING_IDLE_P50,
        crate::report::percentile(&idle, 50.0),
    );
    add(
        metric::PING_IDLE_P99,
        crate::report::percentile(&idle, 99.0),
    );

    // Bulk on one forward, ping-pong on another of the same session, once the bulk has had
    // time to fill whatever it fills.
    // It sends a little longer than the pings last, so they never run on an idle path.
    let bulk = tokio::spawn(load::upload_for(
        route.sink,
        plan.ramp_up + plan.pings + plan.ramp_up,
        1,
    ));
    tokio::time::sleep(plan.ramp_up).await;
    let busy = millis(load::round_trips_for(route.echo, plan.pings, plan.min_trips).await?);
    bulk.await??;
    add(
        metric::PING_BULK_P50,
        crate::report::percentile(&busy, 50.0),
    );
    add(
        metric::PING_BULK_P99,
        crate::report::percentile(&busy, 99.0),
    );

    let mut opens = Vec::new();
    for _ in 0..plan.new_forwards {
        let started = Instant::now();
        let answered = load::first_echo(route.echo).await?;
        opens.push((answered - started).as_secs_f64() * 1e3);
    }
    add(
        metric::NEW_FORWARD_P50,
        crate::report::percentile(&opens, 50.0),
    );

    if let Some(took) = paths.start_to_first_byte(route).await? {
        add(metric::START, took.as_secs_f64() * 1e3);
    }
    Ok(())
}
