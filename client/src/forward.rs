//! Local forwards: a TCP listener on the technician's machine whose every connection is
//! carried to one named target.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::splice::{SpliceOutcome, splice};

use crate::error::ForwardError;
use crate::session::Forwarder;

/// `-L [BIND:]LOCAL_PORT:TARGET`: listen on `bind`, carry each connection to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalForward {
    /// Where to listen; 127.0.0.1 unless the technician says otherwise.
    pub bind: SocketAddr,
    /// The target's name in the vendor's policy.
    pub target: String,
}

impl FromStr for LocalForward {
    type Err = String;

    fn from_str(spec: &str) -> Result<LocalForward, String> {
        let usage = || {
            format!(
                "`{spec}` is not a forward; write LOCAL_PORT:TARGET (e.g. 15432:ehr-db) or BIND:LOCAL_PORT:TARGET"
            )
        };
        let (address, target) = spec.rsplit_once(':').ok_or_else(usage)?;
        if target.is_empty() {
            return Err(usage());
        }
        let (ip, port) = match address.rsplit_once(':') {
            None => (IpAddr::V4(Ipv4Addr::LOCALHOST), address),
            Some((ip, port)) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip = IpAddr::from_str(ip)
                    .map_err(|_| format!("`{ip}` in `{spec}` is not an IP address to listen on"))?;
                (ip, port)
            }
        };
        let port = u16::from_str(port)
            .map_err(|_| format!("`{port}` in `{spec}` is not a port number (0-65535)"))?;
        Ok(LocalForward {
            bind: SocketAddr::new(ip, port),
            target: target.to_owned(),
        })
    }
}

/// What happened on a local forward, for the command line (or a test) to show.
#[derive(Debug, Clone)]
pub enum ForwardEvent {
    /// A local connection was carried to the target.
    Opened {
        /// The target.
        target: String,
        /// The local program's address.
        peer: SocketAddr,
    },
    /// The broker refused, or the session could not open the forward.
    Failed {
        /// The target.
        target: String,
        /// One sentence.
        error: String,
    },
    /// A carried connection ended.
    Closed {
        /// The target.
        target: String,
        /// Bytes and how it ended.
        outcome: SpliceOutcome,
    },
}

/// Where forward events go.
pub type EventSink = Arc<dyn Fn(ForwardEvent) + Send + Sync>;

/// Accepts local connections on `listener` until `shutdown`, carrying each to `target`.
///
/// A connection the broker refuses is closed at once (the local program sees the connection
/// drop) and the refusal is reported to `events`.
pub async fn serve_local_forward(
    session: Forwarder,
    listener: TcpListener,
    target: String,
    events: EventSink,
    shutdown: CancellationToken,
) {
    let forwards = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Running out of file descriptors and the like pass; keep serving.
                events(ForwardEvent::Failed {
                    target: target.clone(),
                    error: format!("could not accept a local connection: {e}"),
                });
                continue;
            }
        };
        let session = session.clone();
        let target = target.clone();
        let events = events.clone();
        let shutdown = shutdown.clone();
        forwards.spawn(async move {
            tokio::select! {
                () = carry(&session, tcp, peer, target, events) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
    forwards.close();
    forwards.wait().await;
}

async fn carry(
    session: &Forwarder,
    tcp: TcpStream,
    peer: SocketAddr,
    target: String,
    events: EventSink,
) {
    let _ = tcp.set_nodelay(true);
    match session.open_forward(&target).await {
        Ok((send, recv)) => {
            events(ForwardEvent::Opened {
                target: target.clone(),
                peer,
            });
            let outcome = splice(tcp, send, recv).await;
            events(ForwardEvent::Closed { target, outcome });
        }
        Err(error) => {
            let error = match error {
                ForwardError::Refused(refusal) => refusal.message,
                other => other.to_string(),
            };
            // Reset rather than close, so the local program sees a failure, not an empty answer.
            let _ = tcp.set_zero_linger();
            events(ForwardEvent::Failed { target, error });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_binds_loopback_unless_told_otherwise() {
        assert_eq!(
            "15432:ehr-db".parse(),
            Ok(LocalForward {
                bind: "127.0.0.1:15432".parse().unwrap(),
                target: "ehr-db".into()
            })
        );
        assert_eq!(
            "0.0.0.0:8080:ehr-web".parse(),
            Ok(LocalForward {
                bind: "0.0.0.0:8080".parse().unwrap(),
                target: "ehr-web".into()
            })
        );
        assert_eq!(
            "[::1]:8080:ehr-web".parse(),
            Ok(LocalForward {
                bind: "[::1]:8080".parse().unwrap(),
                target: "ehr-web".into()
            })
        );
    }

    #[test]
    fn malformed_forwards_say_what_is_expected() {
        for bad in [
            "ehr-db",
            "15432:",
            "x:ehr-db",
            "999999:ehr-db",
            "nothost:1:ehr-db",
        ] {
            let err = bad.parse::<LocalForward>().unwrap_err();
            assert!(err.contains(bad) || err.contains("not"), "{bad}: {err}");
        }
    }
}
