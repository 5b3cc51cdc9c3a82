//! One message to the receiver: connect, TLS, POST, and the answer's status, tried again
//! after a wait when trying again can help.
//!
//! Each attempt is one new connection (`Connection: close`), bounded as a whole by the
//! policy's time limit. What is tried again: a connection that cannot be made or breaks, an
//! attempt over its time limit, 408, 429 and 5xx answers. What is not: any other answer
//! (a 4xx says the message itself is refused; a 3xx is not followed) and a TLS handshake the
//! broker refuses (an untrusted or mismatched certificate does not get better by asking again,
//! and the body is never sent to it).

use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::Full;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::message::{Message, signature};
use super::{Endpoint, RetryPolicy, Scheme, WebhookError};
use crate::clock::Clock;
use crate::secret::Secret;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A 2xx answer, at this attempt.
    Delivered {
        /// Attempts made, the last one answered.
        attempts: usize,
    },
    /// Given up on.
    Failed {
        /// Attempts made.
        attempts: usize,
        /// What went wrong the last time.
        error: String,
    },
    /// Left for the next sender: the broker stopped before trying again, or its lease on the
    /// webhook was lost (an attempt under way is then cut off).
    Abandoned {
        /// Attempts made.
        attempts: usize,
    },
}

/// Why one attempt failed, and whether another can help.
enum Failure {
    TryAgain(String),
    GiveUp(String),
}

/// Sends messages to the configured receiver.
pub(crate) struct Sender {
    endpoint: Endpoint,
    /// For `https://`: the client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The HMAC key made from the shared secret.
    key: Option<ring::hmac::Key>,
    retry: RetryPolicy,
    max_age: std::time::Duration,
    clock: Arc<dyn Clock>,
}

impl Sender {
    pub(super) fn new(
        endpoint: Endpoint,
        roots: rustls::RootCertStore,
        secret: Option<Secret<Vec<u8>>>,
        retry: RetryPolicy,
        max_age: std::time::Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Sender, WebhookError> {
        let tls = match endpoint.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let mut config =
                    rustls::ClientConfig::builder_with_provider(tunnel::crypto_provider())
                        .with_safe_default_protocol_versions()
                        .map_err(|e| WebhookError::Tls(e.to_string()))?
                        .with_root_certificates(roots)
                        .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| {
                    WebhookError::Tls(format!("{:?} cannot be verified ({e})", endpoint.host))
                })?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        let key = secret
            .map(|secret| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose_secret()));
        Ok(Sender {
            endpoint,
            tls,
            key,
            retry,
            max_age,
            clock,
        })
    }

    /// `https://host:port`, for logs and the audit log.
    pub(crate) fn origin(&self) -> String {
        self.endpoint.origin()
    }

    /// The lease's key: the origin, and a hash of the path that tells two URLs of one relay
    /// apart without storing the path (it may carry a token).
    pub(crate) fn lease_key(&self) -> String {
        self.endpoint.lease_key()
    }

    /// How old an event may be and still be sent.
    pub(crate) fn max_age(&self) -> std::time::Duration {
        self.max_age
    }

    /// `https://host:port, signed`: what the broker says at start.
    pub(crate) fn describe(&self) -> String {
        match self.key {
            Some(_) => format!("{}, signed", self.origin()),
            None => format!("{}, unsigned", self.origin()),
        }
    }

    /// The broker's time.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Tries `message` until it is answered with a 2xx, a failure that another attempt cannot
    /// help, or the last attempt. After `shutdown`, an attempt under way finishes but no new
    /// one starts; once `lost` (this broker may no longer send), an attempt under way is cut
    /// off too.
    pub(crate) async fn deliver(
        &self,
        message: &Message,
        shutdown: &CancellationToken,
        lost: &CancellationToken,
    ) -> Outcome {
        let mut waits = self.retry.backoff.iter();
        let mut attempts = 0;
        loop {
            if lost.is_cancelled() {
                return Outcome::Abandoned { attempts };
            }
            attempts += 1;
            let attempt = tokio::select! {
                attempt = tokio::time::timeout(self.retry.attempt_timeout, self.attempt(message)) => attempt,
                () = lost.cancelled() => return Outcome::Abandoned { attempts },
            };
            let failure = match attempt {
                Ok(Ok(())) => return Outcome::Delivered { attempts },
                Ok(Err(failure)) => failure,
                Err(_) => {
                    Failure::TryAgain(format!("no answer within {:?}", self.retry.attempt_timeout))
                }
            };
            let error = match failure {
                Failure::GiveUp(error) => return Outcome::Failed { attempts, error },
                Failure::TryAgain(error) => error,
            };
            let Some(wait) = waits.next() else {
                return Outcome::Failed { attempts, error };
            };
            tracing::warn!(event = message.event(), request = message.request(), url = %self.origin(), attempts, %error, ?wait, "webhook attempt failed; trying again");
            tokio::select! {
                () = tokio::time::sleep(*wait) => {}
                () = shutdown.cancelled() => return Outcome::Abandoned { attempts },
                () = lost.cancelled() => return Outcome::Abandoned { attempts },
            }
        }
    }

    /// One POST on a new connection.
    async fn attempt(&self, message: &Message) -> Result<(), Failure> {
        let sent_at = self.clock.now();
        let body = message.body(sent_at);
        let mut request = hyper::Request::post(self.endpoint.path_and_query.as_str())
            .header(HOST, self.endpoint.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("sekisho-broker/", env!("CARGO_PKG_VERSION")),
            )
            .header(CONNECTION, "close")
            .header("x-sekisho-event", message.event())
            .header("x-sekisho-delivery", message.delivery())
            .header(
                "x-sekisho-timestamp",
                crate::clock::to_unix_secs(sent_at).to_string(),
            );
        if let Some(key) = &self.key {
            request = request.header("x-sekisho-signature", signature(key, body.as_bytes()));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::GiveUp(format!("the request could not be made ({e})")))?;
        let tcp = self.connect().await?;
        let status = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(tls_failure)?;
                exchange(tls, request).await?
            }
            None => exchange(tcp, request).await?,
        };
        judge(status)
    }

    /// A TCP connection to the first address of the host that takes it; for `http://`, only
    /// to loopback addresses, whatever the name resolves to.
    async fn connect(&self) -> Result<TcpStream, Failure> {
        let (host, port) = (self.endpoint.host.as_str(), self.endpoint.port);
        let addresses = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Failure::TryAgain(format!("cannot resolve {host} ({e})")))?;
        let mut last = None;
        for address in addresses {
            if self.endpoint.scheme == Scheme::Http && !address.ip().is_loopback() {
                last = Some(format!(
                    "{host} resolves to {address}, which is not this host (http:// goes to this host only)"
                ));
                continue;
            }
            match TcpStream::connect(address).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(format!("cannot connect to {address} ({e})")),
            }
        }
        Err(Failure::TryAgain(last.unwrap_or_else(|| {
            format!("{host} resolves to no address")
        })))
    }
}

/// Sends `request` over `io` and reads the answer's status.
async fn exchange<T>(io: T, request: hyper::Request<Full<Bytes>>) -> Result<StatusCode, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Failure::TryAgain(format!("HTTP failed ({e})")))?;
    let mut connection = Box::pin(connection);
    let mut answer = Box::pin(sender.send_request(request));
    let status = |answered: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>| {
        answered
            .map(|response| response.status())
            .map_err(|e| Failure::TryAgain(format!("no answer ({e})")))
    };
    tokio::select! {
        biased;
        answered = &mut answer => return status(answered),
        _ = &mut connection => {}
    }
    // The connection ended. An answer that came just before it is waiting; dropping the
    // connection settles the request either way.
    drop(connection);
    drop(sender);
    status(answer.await)
}

/// Whether a status is a delivery, worth another attempt, or final.
fn judge(status: StatusCode) -> Result<(), Failure> {
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure::TryAgain(format!("the receiver answered {status}"))),
        300..=399 => Err(Failure::GiveUp(format!(
            "the receiver answered {status}; redirects are not followed, give the URL it points to"
        ))),
        _ => Err(Failure::GiveUp(format!("the receiver answered {status}"))),
    }
}

/// A handshake rustls refused (an untrusted or mismatched certificate, no common protocol)
/// is final; a connection that broke during it is worth another attempt.
fn tls_failure(error: std::io::Error) -> Failure {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(refused) => Failure::GiveUp(format!("the TLS handshake failed: {refused}")),
        None => Failure::TryAgain(format!("the TLS handshake broke off ({error})")),
    }
}
