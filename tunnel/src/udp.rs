//! The UDP socket and QUIC transport settings both ends of a tunnel use, tuned for bulk
//! transfers (every setting here was kept because `sekisho-bench` showed it helps).
//!
//! - Socket buffers: quinn binds its socket with the system's default buffers (about 208 KiB
//!   on Linux). A bulk transfer fills that in well under a millisecond, and every datagram the
//!   kernel drops on a full receive buffer costs a retransmission and halves the congestion
//!   window. Both ends ask for [`SOCKET_BUFFER_LEN`]; the kernel may grant less (it caps the
//!   request at `net.core.rmem_max`/`wmem_max`), which only costs speed.
//!
//! Packet size stays at quinn's default (path MTU probed up to 1452 bytes). Probing up to
//! 64 KB on loopback was tried: it did not make bulk transfers measurably faster (GSO and GRO
//! already batch 1452-byte packets into one system call), and every new connection then
//! parsed tens of kilobytes of padding per probe, which cut new sessions per second by two
//! thirds.

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

/// A quinn endpoint on a socket from [`bind`]: a server when `server` is given, else a client.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        bind(addr)?,
        Arc::new(quinn::TokioRuntime),
    )
}

/// Acknowledgement-eliciting packets the peer may receive before it must acknowledge (QUIC's
/// ACK frequency extension; the default, 1, acknowledges every other packet).
const ACK_ELICITING_THRESHOLD: u32 = 10;

/// Applies the data-path settings both ends share to `transport`.
///
/// Fewer acknowledgements: during a bulk transfer every other packet the receiver gets makes
/// it send an ACK, which both ends must encrypt, send, receive and process. Asking the peer
/// to acknowledge every eleventh packet instead (one per GSO batch) saves that work; loss
/// detection is unchanged, since packets out of order still get an ACK at once.
pub fn tune_transport(transport: &mut quinn::TransportConfig) {
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    transport.ack_frequency_config(Some(ack));
}
