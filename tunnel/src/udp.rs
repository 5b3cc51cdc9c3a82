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
) -> io::Result<quinn::Endpoint> {
    endpoint_on(bind(addr)?, server)
}

/// A quinn endpoint on `socket` (from [`bind`] or [`bind_group`]). Its driver, and every
/// connection it accepts or opens, runs on the tokio runtime this is called from.
pub fn endpoint_on(
    socket: UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::time::{Duration, Instant};

    use super::*;

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
