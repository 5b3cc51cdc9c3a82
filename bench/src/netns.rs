//! Where the server side of each path runs: on loopback, or in a network namespace of its own
//! behind a veth pair with MTU 1500, which is closer to a real link than loopback's 64 KiB
//! segments.
//!
//! The namespace and the veth pair are made with `ip` and removed when the [`Network`] is
//! dropped, also when the benchmark fails half-way.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command as StdCommand;

use anyhow::{Context, bail};
use tokio::process::Command;

const NAMESPACE: &str = "sekisho-bench";
const HOST_LINK: &str = "skbench0";
const SERVER_LINK: &str = "skbench1";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// The name of the loopback network in the report.
pub(crate) const LOOPBACK: &str = "loopback";

/// The network between the load generator and the servers.
pub(crate) struct Network {
    /// `loopback` or `veth`.
    pub(crate) name: &'static str,
    /// The servers' address as seen from the load generator and the clients.
    pub(crate) server_ip: IpAddr,
    /// The namespace the servers run in; `None` on loopback.
    namespace: Option<&'static str>,
    /// Whether dropping this value removes the namespace (the veth network's own; the WAN lab
    /// removes its namespaces itself).
    owns_namespace: bool,
}

impl Network {
    /// Loopback: everything on 127.0.0.1.
    pub(crate) fn loopback() -> Network {
        Network {
            name: LOOPBACK,
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            namespace: None,
            owns_namespace: false,
        }
    }

    /// The servers in `namespace`, reached at `server_ip`; someone else made the namespace
    /// and removes it.
    pub(crate) fn inside(
        name: &'static str,
        namespace: &'static str,
        server_ip: IpAddr,
    ) -> Network {
        Network {
            name,
            server_ip,
            namespace: Some(namespace),
            owns_namespace: false,
        }
    }

    /// A namespace behind an MTU-1500 veth pair; `Err` says why it cannot be made (not root,
    /// no `ip`, no namespace support).
    pub(crate) fn veth() -> anyhow::Result<Network> {
        // A namespace left by a benchmark that was killed goes first.
        remove_namespace(NAMESPACE);
        let _ = ip(&["link", "del", HOST_LINK]);
        ip(&["netns", "add", NAMESPACE])?;
        // From here on, dropping the value cleans up.
        let network = Network {
            name: "veth",
            server_ip: IpAddr::V4(SERVER_IP),
            namespace: Some(NAMESPACE),
            owns_namespace: true,
        };
        let host = format!("{HOST_IP}/24");
        let server = format!("{SERVER_IP}/24");
        ip(&[
            "link",
            "add",
            HOST_LINK,
            "mtu",
            "1500",
            "type",
            "veth",
            "peer",
            "name",
            SERVER_LINK,
            "mtu",
            "1500",
        ])?;
        ip(&["link", "set", SERVER_LINK, "netns", NAMESPACE])?;
        ip(&["addr", "add", &host, "dev", HOST_LINK])?;
        ip(&["link", "set", HOST_LINK, "up"])?;
        for args in [
            vec!["addr", "add", &server, "dev", SERVER_LINK],
            vec!["link", "set", SERVER_LINK, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            in_namespace(NAMESPACE, &args)?;
        }
        Ok(network)
    }

    /// A command that runs `program` on the server side.
    pub(crate) fn server_command(&self, program: &std::path::Path) -> Command {
        match self.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// The address servers listen on: every address inside the namespace, else the servers'
    /// address.
    pub(crate) fn listen_ip(&self) -> IpAddr {
        if self.namespace.is_some() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            self.server_ip
        }
    }

    /// Whether the servers are in a namespace of their own (fresh, so every port is free).
    pub(crate) fn is_namespace(&self) -> bool {
        self.namespace.is_some()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if self.owns_namespace {
            remove_namespace(NAMESPACE);
            let _ = ip(&["link", "del", HOST_LINK]);
        }
    }
}

/// Removes `namespace` and every process still in it, and with it the veth ends inside.
///
/// The processes go first: `sshd` starts each session in a process of its own that outlives
/// the listener, and a namespace whose processes live on is only unnamed, not removed, so
/// the session would wait forever on a link that no longer leads anywhere, and the pair
/// would stay and block the next run.
pub(crate) fn remove_namespace(namespace: &str) {
    if let Ok(output) = StdCommand::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    {
        let pids = String::from_utf8_lossy(&output.stdout);
        for pid in pids.split_whitespace() {
            let _ = StdCommand::new("kill").args(["-KILL", pid]).output();
        }
    }
    // Deleting the namespace deletes its ends of the pairs, and with them their peers; callers
    // delete their host's end on its own too in case a pair was never moved.
    let _ = ip(&["netns", "del", namespace]);
}

/// `ip ARGS` inside `namespace`.
pub(crate) fn in_namespace(namespace: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut full = vec!["netns", "exec", namespace, "ip"];
    full.extend_from_slice(args);
    ip(&full)
}

pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = StdCommand::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
