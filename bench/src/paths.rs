//! The paths compared, each set up on one [`Network`]: direct TCP to the target, `ssh -L`
//! through a real `sshd` (AES-128-GCM, and ChaCha20-Poly1305, OpenSSH's default), and sekisho
//! (client process → QUIC, or TLS over TCP → broker process → TCP).
//!
//! The target (sink + echo), `sshd` and the broker run on the server side; the load
//! generator, `ssh` and the sekisho client on the client side.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, anyhow};
use tempfile::TempDir;
use tokio::process::Command;

use crate::lab::Lab;
use crate::load;
use crate::netns::Network;
use crate::procs::Child;
use crate::report::{SEKISHO, SEKISHO_JUMBO, SEKISHO_TCP};
use tunnel::udp::PacketSize;

/// One path: where the load generator connects, and the processes that carry the bytes.
pub(crate) struct Route {
    pub(crate) name: &'static str,
    pub(crate) sink: SocketAddr,
    pub(crate) echo: SocketAddr,
    /// The relaying processes (their descendants count too); empty for direct TCP.
    pub(crate) relays: Vec<u32>,
}

/// The ciphers `ssh -L` is measured with, and their row names.
pub(crate) const SSH_CIPHERS: [(&str, &str); 2] = [
    ("ssh -L aes128-gcm", "aes128-gcm@openssh.com"),
    ("ssh -L chacha20 (default)", "chacha20-poly1305@openssh.com"),
];

/// Everything running for one network, kept alive (and stopped on drop) for all rounds.
pub(crate) struct Setup {
    pub(crate) network: Network,
    pub(crate) paths: Vec<Route>,
    pub(crate) target: Child,
    pub(crate) lab: Lab,
    _sshd: Child,
    _ssh: Vec<Child>,
    _clients: Vec<Child>,
    _ssh_dir: TempDir,
}

impl Setup {
    /// Starts the target, `sshd` and `ssh -L` for each cipher, the broker and a sekisho client
    /// with an open session forwarding to the sink and the echo server.
    pub(crate) async fn start(network: Network) -> anyhow::Result<Setup> {
        let exe = std::env::current_exe()?;
        let listen = network.listen_ip();
        let mut command = network.server_command(&exe);
        command.arg("target").arg("--ip").arg(listen.to_string());
        let mut target = Child::spawn(&format!("target ({})", network.name), command)?;
        let sink_port: u16 = target.expect_stdout("SINK").await?.parse()?;
        let echo_port: u16 = target.expect_stdout("ECHO").await?.parse()?;
        target.drain();
        let local = |port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let remote = |port| SocketAddr::new(network.server_ip, port);

        let mut paths = vec![Route {
            name: "direct",
            sink: remote(sink_port),
            echo: remote(echo_port),
            relays: Vec::new(),
        }];

        let ssh_dir = tempfile::tempdir()?;
        let (sshd, sshd_port) = start_sshd(&network, ssh_dir.path()).await?;
        let mut ssh = Vec::new();
        for (name, cipher) in SSH_CIPHERS {
            let (child, ports) = start_ssh_forwards(
                name,
                cipher,
                ssh_dir.path(),
                network.server_ip,
                sshd_port,
                &[sink_port, echo_port],
            )
            .await?;
            paths.push(Route {
                name,
                sink: local(ports[0]),
                echo: local(ports[1]),
                relays: vec![sshd.pid, child.pid],
            });
            ssh.push(child);
        }

        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // The broker accepts jumbo-sized packets, so that the second client can use them;
        // the first, at the defaults, never sends or is sent larger than Ethernet's.
        let lab = Lab::start(
            &network,
            &[
                ("sink", SocketAddr::new(loopback, sink_port)),
                ("echo", SocketAddr::new(loopback, echo_port)),
            ],
            PacketSize::JUMBO,
        )
        .await?;
        let mut clients = Vec::new();
        for (name, packets, transport) in [
            (SEKISHO, PacketSize::ETHERNET, "quic"),
            (SEKISHO_JUMBO, PacketSize::JUMBO, "quic"),
            (SEKISHO_TCP, PacketSize::ETHERNET, "tcp"),
        ] {
            let technician = lab.technician().await?;
            let request = lab.approved_request(&technician, &["sink", "echo"]).await?;
            let mut client = spawn_client(
                &lab,
                &technician,
                &request,
                &["sink", "echo"],
                packets,
                transport,
                None,
            )?;
            let sink = client_port(&mut client, "sink").await?;
            let echo = client_port(&mut client, "echo").await?;
            client.say(&lab.otp(&technician)?).await?;
            client.expect_stdout("OPEN").await?;
            client.drain();
            paths.push(Route {
                name,
                sink: local(sink),
                echo: local(echo),
                relays: vec![lab.broker_pid(), client.pid],
            });
            clients.push(client);
        }

        Ok(Setup {
            network,
            paths,
            target,
            lab,
            _sshd: sshd,
            _ssh: ssh,
            _clients: clients,
            _ssh_dir: ssh_dir,
        })
    }
}

/// Starts a sekisho client process for `request` with one local forward per target, its QUIC
/// sending under `congestion` (else `SEKISHO_QUIC_CONGESTION` or the default); the one-time
/// password is still to be written to its stdin.
pub(crate) fn spawn_client(
    lab: &Lab,
    technician: &crate::lab::Technician,
    request: &str,
    targets: &[&str],
    packets: PacketSize,
    transport: &str,
    congestion: Option<tunnel::udp::Congestion>,
) -> anyhow::Result<Child> {
    let [ca, cert, key] = lab.credential_files(technician)?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("client")
        .arg("--broker")
        .arg(lab.broker_addr.to_string())
        .arg("--ca")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--request")
        .arg(request)
        .arg("--max-packet")
        .arg(packets.to_string())
        .arg("--transport")
        .arg(transport);
    for target in targets {
        command.arg("--target").arg(target);
    }
    if let Some(congestion) = congestion {
        command.arg("--congestion").arg(congestion.name());
    }
    Child::spawn(&format!("sekisho client ({})", technician.name), command)
}

/// The local port `client` announced for `target`.
pub(crate) async fn client_port(client: &mut Child, target: &str) -> anyhow::Result<u16> {
    let line = client.expect_stdout("FORWARD").await?;
    let (name, port) = line
        .split_once(' ')
        .ok_or_else(|| anyhow!("the client printed `FORWARD {line}`"))?;
    if name != target {
        return Err(anyhow!(
            "the client announced {name} where {target} was expected"
        ));
    }
    Ok(port.parse()?)
}

/// Starts `ssh -N` with `cipher` to the `sshd` at `server_ip:sshd_port` (keys in `ssh_dir`,
/// from [`start_sshd`]), forwarding a local port to each of `remote_ports` on the server's
/// loopback; returns it once it forwards, with the local ports in the same order.
pub(crate) async fn start_ssh_forwards(
    name: &str,
    cipher: &str,
    ssh_dir: &Path,
    server_ip: IpAddr,
    sshd_port: u16,
    remote_ports: &[u16],
) -> anyhow::Result<(Child, Vec<u16>)> {
    let mut command = Command::new("ssh");
    command
        .args(["-N", "-F", "none", "-i"])
        .arg(ssh_dir.join("clientkey"))
        .args(["-p", &sshd_port.to_string()]);
    for option in [
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
        "ExitOnForwardFailure=yes",
        "Compression=no",
        &format!("Ciphers={cipher}"),
    ] {
        command.args(["-o", option]);
    }
    let mut local_ports = Vec::new();
    for remote in remote_ports {
        let local = free_port()?;
        command
            .arg("-L")
            .arg(format!("127.0.0.1:{local}:127.0.0.1:{remote}"));
        local_ports.push(local);
    }
    command.arg(format!("{}@{server_ip}", user()?));
    let mut child = Child::spawn(name, command)?;
    child.drain();
    // The listeners exist once ssh has logged in (connect retries until then).
    if let Some(first) = local_ports.first() {
        load::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, *first)))
            .await
            .with_context(|| format!("{name} does not forward"))?;
    }
    Ok((child, local_ports))
}

/// A port nobody listens on now (the system's choice, released at once).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn user() -> anyhow::Result<String> {
    let output = std::process::Command::new("id").arg("-un").output()?;
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// A real `sshd` with a generated host key that accepts one generated client key (both in
/// `dir`), on every address of a namespace or on loopback's address.
pub(crate) async fn start_sshd(network: &Network, dir: &Path) -> anyhow::Result<(Child, u16)> {
    let privsep = Path::new("/run/sshd");
    if !privsep.is_dir() {
        std::fs::create_dir_all(privsep).context("sshd needs /run/sshd")?;
    }
    for key in ["hostkey", "clientkey"] {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "sekisho-bench", "-f"])
            .arg(dir.join(key))
            .status()
            .await
            .context("cannot run ssh-keygen (install openssh-client)")?;
        anyhow::ensure!(status.success(), "ssh-keygen failed");
    }
    std::fs::copy(dir.join("clientkey.pub"), dir.join("authorized_keys"))?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "HostKey \"{}\"\nAuthorizedKeysFile \"{}\"\nAllowUsers {}\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPidFile none\nUseDNS no\nPrintMotd no\n\
             AllowTcpForwarding yes\nCiphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com\n",
            dir.join("hostkey").display(),
            dir.join("authorized_keys").display(),
            user()?,
        ),
    )?;
    // A fresh namespace has every port free; on loopback the system picks one.
    let port = if network.is_namespace() {
        2222
    } else {
        free_port()?
    };
    let mut command = network.server_command(Path::new("/usr/sbin/sshd"));
    command
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .args(["-p", &port.to_string()])
        .args(["-o", &format!("ListenAddress={}", network.listen_ip())]);
    let mut sshd = Child::spawn(&format!("sshd ({})", network.name), command)?;
    sshd.expect_stderr("Server listening").await?;
    Ok((sshd, port))
}
