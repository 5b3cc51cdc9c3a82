//! The UDP socket and QUIC transport settings both ends of a tunnel use, tuned for bulk
//! transfers (every setting here was kept because `sekisho-bench` showed it helps).
//!
//! - Socket buffers: quinn binds its socket with the system's default buffers (about 208 KiB
//!   on Linux). A bulk transfer fills that in well under a millisecond, and every datagram the
//!   kernel drops on a full receive buffer costs a retransmission and halves the congestion
//!   window. Both ends ask for [`SOCKET_BUFFER_LEN`]; the kernel may grant less (it caps the
//!   request at `net.core.rmem_max`/`wmem_max`), which only costs speed.
//! - Packet size: quinn probes the path MTU but stops at 1452 bytes by default. Where the path
//!   carries more (loopback, jumbo frames) larger packets mean fewer packets, and so fewer
//!   system calls, encryptions and acknowledgements per byte; on an Ethernet path the probes
//!   above 1500 bytes are simply lost and nothing changes.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

/// Bytes asked for each of the socket's send and receive buffers.
pub const SOCKET_BUFFER_LEN: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `addr` with buffers of up to [`SOCKET_BUFFER_LEN`].
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
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
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The largest UDP payload either end announces and probes for (IPv4's largest datagram
/// payload).
pub const MAX_UDP_PAYLOAD: u16 = 65_507;

/// A quinn endpoint on a socket from [`bind`]: a server when `server` is given, else a client.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    // Only fails for values below QUIC's minimum of 1200.
    let _ = config.max_udp_payload_size(MAX_UDP_PAYLOAD);
    quinn::Endpoint::new(config, server, bind(addr)?, Arc::new(quinn::TokioRuntime))
}

/// Applies the data-path settings shared by both ends to `transport`.
pub fn tune_transport(transport: &mut quinn::TransportConfig) {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    transport.mtu_discovery_config(Some(mtu));
}
