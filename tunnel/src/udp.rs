//! The UDP socket and QUIC transport settings both ends of a tunnel use, tuned for bulk
//! transfers (every setting here was kept because `sekisho-bench` showed it helps).
//!
//! - Socket buffers: quinn binds its socket with the system's default buffers (about 208 KiB
//!   on Linux). A bulk transfer fills that in well under a millisecond, and every datagram the
//!   kernel drops on a full receive buffer costs a retransmission and halves the congestion
//!   window. Both ends ask for [`SOCKET_BUFFER_LEN`]; the kernel may grant less (it caps the
//!   request at `net.core.rmem_max`/`wmem_max`), which only costs speed.
//!
//! - Packet size: by default quinn's (path MTU probed up to [`PacketSize::ETHERNET`], 1,452
//!   bytes), which fits any Ethernet path. Where both ends know the path carries more
//!   (jumbo frames, or loopback), [`PacketSize`] raises the probe's upper bound, and with it
//!   what the endpoint accepts, and keeps each GSO send under 64 KiB (quinn puts up to 10
//!   packets in one, whatever their size, and the kernel refuses larger sends). With
//!   8,952-byte packets `sekisho-bench` measured 1.7 × the throughput on loopback at 55% of
//!   the CPU per GB, since most of the relays' user-space work is per packet. Probing to
//!   64 KB on every connection was tried first: it cut new sessions per second by two thirds,
//!   which is why the bound is a setting and stays at Ethernet's by default.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Bytes asked for each of the socket's send and receive buffers.
pub const SOCKET_BUFFER_LEN: usize = 4 * 1024 * 1024;

/// Bytes one GSO send may carry: a UDP datagram's limit, less IPv6 and UDP headers, rounded
/// down.
const GSO_SEND_LIMIT: usize = 65_000;

/// The congestion controller a QUIC endpoint sends with: the broker's governs what flows to
/// technicians (downloads), the client's what flows to targets (uploads).
///
/// TCP's choice is the host's (BBR where the kernel default is BBR); QUIC's is in the
/// endpoint. quinn offers Cubic (its own default), BBR (a port of the first version of
/// Google's BBR from quiche, which quinn marks experimental) and NewReno. Loss-based
/// controllers cut their rate at each loss, so the random loss of Wi-Fi and mobile links holds
/// them far below the link's rate; BBR paces to the bandwidth it measures. sekisho's default is
/// BBR: in the WAN lab (`sekisho-bench wan`, docs/performance.md) it carried 6–25 × Cubic's
/// throughput at 0.5–1 % loss (17 against 1.6 Mbit/s on a 20 Mbit/s, 100 ms, 1 % link) and
/// 3–4 × at 0.2 %, though still well below the kernel's BBR on fast lossy links. Cubic and NewReno stay available (`--quic-congestion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    Cubic,
    #[default]
    Bbr,
    NewReno,
}

impl Congestion {
    /// Every controller, as [`Congestion::name`] spells it.
    pub const ALL: [Congestion; 3] = [Congestion::Cubic, Congestion::Bbr, Congestion::NewReno];

    /// `cubic`, `bbr` or `newreno`.
    pub fn name(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
            Congestion::NewReno => "newreno",
        }
    }
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Congestion {
    type Err = String;

    fn from_str(text: &str) -> Result<Congestion, String> {
        Congestion::ALL
            .into_iter()
            .find(|congestion| congestion.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                format!("`{text}` is not a congestion controller; use cubic, bbr or newreno")
            })
    }
}

/// The largest QUIC packet (UDP payload) an endpoint probes for, accepts and sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSize(u16);

impl PacketSize {
    /// What fits a 1,500-byte Ethernet frame behind IPv6 and UDP headers: quinn's default,
    /// and ours.
    pub const ETHERNET: PacketSize = PacketSize(1452);
    /// What fits a 9,000-byte jumbo frame behind IPv6 and UDP headers.
    pub const JUMBO: PacketSize = PacketSize(8952);
    /// QUIC's smallest allowed packet size.
    pub const MIN: u16 = 1200;
    /// The largest that still lets one GSO send carry a packet.
    pub const MAX: u16 = GSO_SEND_LIMIT as u16;

    /// `bytes` if it is within [`MIN`](PacketSize::MIN)..=[`MAX`](PacketSize::MAX); a
    /// sentence saying so if not.
    pub fn new(bytes: u16) -> Result<PacketSize, String> {
        if (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(PacketSize(bytes))
        } else {
            Err(Self::out_of_range(bytes))
        }
    }

    fn out_of_range(bytes: impl std::fmt::Display) -> String {
        format!(
            "a packet size must be {} to {} bytes ({} fits Ethernet, {} jumbo frames), not {bytes}",
            Self::MIN,
            Self::MAX,
            Self::ETHERNET.0,
            Self::JUMBO.0
        )
    }

    /// The size in bytes.
    pub fn bytes(self) -> u16 {
        self.0
    }

    /// Whether this raises anything above quinn's defaults.
    fn above_ethernet(self) -> bool {
        self.0 > Self::ETHERNET.0
    }
}

impl Default for PacketSize {
    fn default() -> PacketSize {
        PacketSize::ETHERNET
    }
}

impl std::str::FromStr for PacketSize {
    type Err = String;

    fn from_str(text: &str) -> Result<PacketSize, String> {
        let bytes: u64 = text.trim().parse().map_err(|_| {
            format!(
                "a packet size is a number of bytes ({} fits Ethernet), not {text:?}",
                Self::ETHERNET.0
            )
        })?;
        u16::try_from(bytes)
            .map_err(|_| Self::out_of_range(bytes))
            .and_then(PacketSize::new)
    }
}

impl std::fmt::Display for PacketSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A UDP socket bound to `addr` with buffers of up to [`SOCKET_BUFFER_LEN`].
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = new_socket(addr)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// `count` UDP sockets sharing one port (the port of `addr`, or one the system picks for port
/// 0), each with buffers of up to [`SOCKET_BUFFER_LEN`]; one socket (no `SO_REUSEPORT`) when
/// `count` is 1.
///
/// With several, the kernel hands each datagram to one of them by a hash of its source and
/// destination addresses, so all of one connection's packets reach the same socket for as long
/// as the peer keeps its address (the broker refuses migration anyway). That lets each socket
/// have an endpoint and a thread of its own.
///
/// A port in use is refused as with one socket: the group binds only after a socket without
/// `SO_REUSEPORT` could take the port, so a second broker started on the same port by mistake
/// fails with "address in use" instead of silently sharing the first one's traffic.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let count = count.max(1);
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(count);
    let mut bound_to = addr;
    if count > 1 {
        let probe: UdpSocket = bind(addr)?;
        bound_to = probe.local_addr()?;
    }
    for _ in 0..count {
        let socket = new_socket(addr)?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&bound_to.into())?;
        let socket: UdpSocket = socket.into();
        // The port is fixed now (the system's choice for port 0); the rest join it.
        bound_to = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

fn new_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        // Like quinn's own binding: an IPv6 socket takes IPv4 too where the system allows.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer than asked for is slower, never wrong.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_LEN);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_LEN);
    Ok(socket)
}

/// A quinn endpoint on a socket from [`bind`]: a server when `server` is given, else a client.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    packets: PacketSize,
) -> io::Result<quinn::Endpoint> {
    endpoint_on(bind(addr)?, server, packets)
}

/// A quinn endpoint on `socket` (from [`bind`] or [`bind_group`]) that accepts packets of up
/// to `packets`. Its driver, and every connection it accepts or opens, runs on the tokio
/// runtime this is called from.
pub fn endpoint_on(
    socket: UdpSocket,
    server: Option<quinn::ServerConfig>,
    packets: PacketSize,
) -> io::Result<quinn::Endpoint> {
    use quinn::Runtime as _;
    let runtime = Arc::new(quinn::TokioRuntime);
    if !packets.above_ethernet() {
        return quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime);
    }
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(packets.bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let socket = Arc::new(GsoWithin64KiB {
        socket: runtime.wrap_udp_socket(socket)?,
    });
    quinn::Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// quinn's socket, splitting a GSO send that would exceed [`GSO_SEND_LIMIT`] bytes into
/// sends that do not. quinn puts up to 10 packets into one send whatever their size; the
/// kernel refuses a send over 64 KiB (`EINVAL` on the broker's dual-stack socket), and
/// quinn's socket takes that as a sign the system cannot do GSO and stops batching for good,
/// for every connection on the endpoint (measured: no multi-packet send at all after the
/// first refusal). Ethernet-sized batches (10 × 1,452 bytes) pass as they are, so a path that
/// turns out to carry only those pays nothing for the setting.
#[derive(Debug)]
struct GsoWithin64KiB {
    socket: Arc<dyn quinn::AsyncUdpSocket>,
}

impl quinn::AsyncUdpSocket for GsoWithin64KiB {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.socket.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> io::Result<()> {
        let Some(segment) = transmit
            .segment_size
            .filter(|_| transmit.contents.len() > GSO_SEND_LIMIT)
        else {
            return self.socket.try_send(transmit);
        };
        let per_send = (GSO_SEND_LIMIT / segment).max(1) * segment;
        for (index, part) in transmit.contents.chunks(per_send).enumerate() {
            let sent = self.socket.try_send(&quinn::udp::Transmit {
                contents: part,
                segment_size: (part.len() > segment).then_some(segment),
                ..*transmit
            });
            match sent {
                Ok(()) => {}
                // Nothing sent yet: quinn keeps the whole transmit and tries again.
                Err(e) if index == 0 => return Err(e),
                // Part sent: the rest is lost as far as QUIC is concerned, and resent as any
                // lost packet is (retrying the whole would send the first part twice).
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.socket.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.socket.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.socket.may_fragment()
    }
}

/// Bytes one stream may have in flight towards its reader (quinn's default: 1.25 MB).
///
/// A lost packet holds back everything after it on its stream until the retransmission
/// arrives, and that held data counts against the window; at 1 % loss on a 40 ms path the
/// default window, not the congestion controller, was the limit. WAN lab, one forward, BBR,
/// down / up in Mbit/s: 200 Mbit/s, 40 ms, 0.2 % loss: 105 / 102 at 1.25 MB, 126 / 116 at
/// 2 MiB, 148 / 149 at 4 MiB, 154 / 150 at 8 MiB (direct TCP with BBR: 152 / 139); 1 Gbit/s,
/// 40 ms, 1 %: 88 / 105, 169 / 181, 321 / 321, 505 / 461 (direct TCP BBR: 177 / 207). Ping
/// times beside a bulk transfer rose with the window (p50 51, 55, 78, 81 ms on the 40 ms
/// path), so 4 MiB, not 8. These are single rounds: the final run of that session gave only
/// 41 / 61 and 73 / 108 with 4 MiB, as quinn's BBR on lossy paths varies by 2 × from run to
/// run; medians of several rounds should confirm the choice.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// Bytes all streams of a connection may have in flight towards one side, and what a sender
/// buffers unacknowledged: eight streams' windows. It bounds what one peer can make the other
/// hold (quinn's default receive window is unbounded).
const CONNECTION_WINDOW: u32 = 8 * STREAM_WINDOW;

/// Acknowledgement-eliciting packets the peer may receive before it must acknowledge (QUIC's
/// ACK frequency extension; the default, 1, acknowledges every other packet).
const ACK_ELICITING_THRESHOLD: u32 = 10;

/// Applies the data-path settings both ends share to `transport`, probing the path for
/// packets of up to `packets` and sending under `congestion`.
///
/// Fewer acknowledgements: during a bulk transfer every other packet the receiver gets makes
/// it send an ACK, which both ends must encrypt, send, receive and process. Asking the peer
/// to acknowledge every eleventh packet instead (one per GSO batch) saves that work; loss
/// detection is unchanged, since packets out of order still get an ACK at once.
pub fn tune_transport(
    transport: &mut quinn::TransportConfig,
    packets: PacketSize,
    congestion: Congestion,
) {
    match congestion {
        Congestion::Cubic => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default())),
        Congestion::Bbr => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
        Congestion::NewReno => transport
            .congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default())),
    };
    transport.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    transport.receive_window(quinn::VarInt::from_u32(CONNECTION_WINDOW));
    transport.send_window(u64::from(CONNECTION_WINDOW));
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    transport.ack_frequency_config(Some(ack));
    if packets.above_ethernet() {
        // The peer's own limit (its endpoint's) caps the probing too, so a peer left at
        // Ethernet's size is never sent anything larger.
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(packets.bytes());
        transport.mtu_discovery_config(Some(discovery));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn congestion_controllers_read_back_from_their_names() {
        for congestion in Congestion::ALL {
            assert_eq!(congestion.name().parse(), Ok(congestion));
            assert_eq!(
                congestion.to_string().to_uppercase().parse(),
                Ok(congestion)
            );
        }
        let refused = "vegas".parse::<Congestion>();
        assert_eq!(
            refused,
            Err("`vegas` is not a congestion controller; use cubic, bbr or newreno".to_owned())
        );
    }

    fn loopback_any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    /// Reads every datagram that reaches any of `group` until `expected` arrived (or a deadline
    /// passes), keyed by the sender's address: which sockets each sender's datagrams reached.
    fn receive_all(group: &[UdpSocket], expected: usize) -> HashMap<SocketAddr, HashSet<usize>> {
        let mut reached: HashMap<SocketAddr, HashSet<usize>> = HashMap::new();
        let mut received = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        for socket in group {
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
        }
        while received < expected && Instant::now() < deadline {
            for (index, socket) in group.iter().enumerate() {
                let mut buf = [0u8; 16];
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    reached.entry(from).or_default().insert(index);
                    received += 1;
                }
            }
        }
        assert_eq!(received, expected, "datagrams lost in the group");
        reached
    }

    #[test]
    fn a_group_shares_one_port_and_keeps_each_sender_on_one_socket() {
        let group = bind_group(loopback_any_port(), 3).unwrap();
        assert_eq!(group.len(), 3);
        let port = group[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(
            group
                .iter()
                .all(|socket| socket.local_addr().unwrap().port() == port)
        );

        let senders: Vec<UdpSocket> = (0..40)
            .map(|_| UdpSocket::bind(loopback_any_port()).unwrap())
            .collect();
        for _ in 0..3 {
            for sender in &senders {
                sender
                    .send_to(b"hello", group[0].local_addr().unwrap())
                    .unwrap();
            }
        }
        let reached = receive_all(&group, senders.len() * 3);
        assert_eq!(reached.len(), senders.len());
        // Every sender's datagrams all reached one socket, as a connection's packets must.
        assert!(reached.values().all(|sockets| sockets.len() == 1));
        // And the kernel spread the senders over the group (40 senders all hashing to one of
        // three sockets would be a 1-in-10^18 event).
        let used: HashSet<usize> = reached.values().flatten().copied().collect();
        assert!(used.len() > 1, "every sender went to one socket: {used:?}");
    }

    #[test]
    fn packet_sizes_are_checked_with_a_sentence_that_names_the_usual_ones() {
        assert_eq!("8952".parse::<PacketSize>().unwrap(), PacketSize::JUMBO);
        assert_eq!(
            " 1452 ".parse::<PacketSize>().unwrap(),
            PacketSize::ETHERNET
        );
        assert_eq!(PacketSize::default(), PacketSize::ETHERNET);
        for bad in ["1199", "65001", "0", "70000"] {
            let error = bad.parse::<PacketSize>().unwrap_err();
            assert!(
                error.contains("1200 to 65000") && error.contains("1452") && error.contains("8952"),
                "{bad}: {error}"
            );
        }
        let error = "9k".parse::<PacketSize>().unwrap_err();
        assert!(error.contains("number of bytes"), "{error}");
    }

    #[test]
    fn a_port_in_use_is_refused_with_or_without_a_group() {
        for first_count in [1, 3] {
            let first = bind_group(loopback_any_port(), first_count).unwrap();
            let taken = first[0].local_addr().unwrap();
            for second_count in [1, 2] {
                let error = bind_group(taken, second_count).unwrap_err();
                assert_eq!(
                    error.kind(),
                    io::ErrorKind::AddrInUse,
                    "{first_count} then {second_count} sockets on {taken}"
                );
            }
        }
    }
}
