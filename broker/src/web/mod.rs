//! The web UI for hospital staff, and the same actions as a small JSON API.
//!
//! Served by the broker on its own TCP port, `127.0.0.1:8443` unless the admin names another
//! address (so it is never open to the LAN by accident), optionally only to some source
//! networks (`allow`): HTTPS (TLS 1.3 only) with a certificate the admin provides, or by
//! default one the broker's CA issues for the names the admin gives (see [`WebTls`]); plain
//! HTTP only on a loopback address and only when asked for (behind a reverse proxy that
//! terminates TLS). Pages are rendered on the server (maud, which escapes
//! every value), work on a phone and a desktop, and need JavaScript only for live updates;
//! the style sheet and script are compiled into the binary and every response carries a
//! Content-Security-Policy of `default-src 'self'` (no inline script or style).
//!
//! Staff log in with password and TOTP ([`crate::staff`]). Every action checks the member's
//! role on the server, every state-changing form carries the browser session's CSRF token,
//! and every action goes through the same library calls as the admin CLI
//! ([`crate::approval::Desk`], the store, [`crate::cli`]'s audit commands), so it lands in the
//! audit log with the staff member as actor.
//!
//! This module never talks to technicians' clients; a running broker's hub carries what the
//! pages change to live sessions.
//!
//! # Layout
//!
//! - this file: configuration, binding (TLS), serving, the shared state and security headers;
//! - `transport`: the connections: caps in all and per source, room for staff under a flood
//!   of idle connections, deadlines for the TLS handshake and each request's head, accept
//!   errors backed off;
//! - `allow`: the source networks allowed to connect (`--web-allow`);
//! - `path`: names put into URLs (every one percent-encoded);
//! - `auth`: cookies, the logged-in member on each request, roles, CSRF, login rate limits;
//! - `live`: watches the store for new requests and changes (server-sent events); the
//!   webhook that tells approvers elsewhere is [`crate::webhook`];
//! - `layout`, `i18n`: the page frame, the language switch, times in the hospital's zone;
//! - `pages`: login and one-time links, requests, sessions, lockdown, technicians, staff,
//!   audit;
//! - `api`: the JSON API.

mod allow;
mod api;
mod auth;
mod i18n;
mod layout;
mod live;
mod pages;
mod path;
pub(crate) mod transport;

pub use transport::WebLimits;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::approval::Desk;
use crate::pki::BrokerPki;
use crate::staff::StaffDirectory;

pub use auth::SESSION_COOKIE;

/// The TCP port the web UI listens on unless told otherwise.
pub const DEFAULT_WEB_PORT: u16 = 8443;
/// The address the web UI listens on unless told otherwise: this host only.
pub const DEFAULT_WEB_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), DEFAULT_WEB_PORT);
/// Live-update streams one browser session may have open at once (one per open page).
pub const MAX_STREAMS_PER_SESSION: usize = 4;

/// How the web UI serves its pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebTls {
    /// HTTPS with a certificate the broker's CA issues at each start for these DNS names or
    /// IP addresses (when empty: `localhost`, `127.0.0.1` and the listen address, or this
    /// host's name when listening on every address). Staff browsers trust it by importing the CA
    /// (`DATA_DIR/pki/ca.pem`).
    BrokerIssued {
        /// Names and addresses staff type in the browser.
        names: Vec<String>,
    },
    /// HTTPS with the admin's certificate chain and key (PEM files).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// Plain HTTP, refused unless the listen address is loopback.
    PlainHttpOnLoopback,
}

/// The web UI's settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The TCP address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// HTTPS certificate, or plain HTTP on loopback.
    pub tls: WebTls,
    /// A browser session unused this long is over.
    pub idle_timeout: Duration,
    /// A browser session this old is over, however much it is used.
    pub session_lifetime: Duration,
    /// The source networks allowed to connect; empty allows any.
    pub allow: Vec<crate::policy::IpNetwork>,
    /// The name staff type in the browser, for the printed first-admin link (default: the
    /// first broker-issued certificate name, else the listen address, else, on `0.0.0.0` or
    /// `::`, this host's name).
    pub link_name: Option<String>,
    /// The address staff use, for the printed first-admin link (default: from `link_name`
    /// and the port).
    pub public_url: Option<String>,
    /// `HOST:PORT` technicians reach the broker at, printed in their enrollment command.
    pub broker_address: Option<String>,
    /// Bounds on connections and how long they may take.
    pub limits: WebLimits,
    /// The broker's data directory, whose checkpoint file and keys the audit chain page and
    /// `GET /api/audit/verify` check the chain against (none: the database's checkpoints
    /// only, checked against no key, so none is trusted).
    pub checkpoint_dir: Option<PathBuf>,
}

impl WebConfig {
    /// HTTPS on `listen` with a broker-issued certificate for `localhost`, 15-minute idle
    /// sessions.
    pub fn new(listen: SocketAddr) -> WebConfig {
        WebConfig {
            listen,
            tls: WebTls::BrokerIssued { names: Vec::new() },
            idle_timeout: crate::staff::DEFAULT_IDLE_TIMEOUT,
            session_lifetime: crate::staff::DEFAULT_SESSION_LIFETIME,
            allow: Vec::new(),
            link_name: None,
            public_url: None,
            broker_address: None,
            limits: WebLimits::default(),
            checkpoint_dir: None,
        }
    }
}

/// Why the web UI could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Plain HTTP was asked for on an address other people can reach.
    #[error(
        "plain HTTP is served only on a loopback address (127.0.0.1 or ::1), not {0}; drop --web-plain-http to serve HTTPS"
    )]
    PlainHttpNotLoopback(SocketAddr),
    /// A certificate or key file could not be used.
    #[error("{path}: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The broker's CA could not issue the web certificate.
    #[error("the web UI's certificate could not be issued: {0}")]
    Issue(String),
    /// The TCP port could not be bound.
    #[error("could not listen on TCP {addr} for the web UI: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// The first admin's link could not be made.
    #[error("the first admin's one-time link could not be made: {0}")]
    FirstAdmin(String),
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) desk: Desk,
    pub(crate) staff: StaffDirectory,
    /// Where the chain's signed checkpoints and trusted keys are found.
    pub(crate) checkpoints: crate::cli::CheckpointSources,
    pub(crate) live: tokio::sync::watch::Receiver<live::Live>,
    /// Login attempts per client address in the current minute.
    pub(crate) login_attempts: Mutex<HashMap<IpAddr, (std::time::Instant, u32)>>,
    /// Who may connect.
    pub(crate) allow: allow::SourceAllowList,
    /// Live-update streams open per browser session (its id's hash).
    pub(crate) streams: live::StreamCounts,
    /// Bumped whenever this server ends or changes a browser session (logout, an account
    /// disabled, reset or given other roles), so live-update streams look again at once.
    pub(crate) sessions_changed: tokio::sync::watch::Sender<u64>,
    pub(crate) review_within: Duration,
    pub(crate) https: bool,
    /// What a technician's enrollment command says about this broker.
    pub(crate) enrollment: crate::cli::EnrollmentHints,
}

/// The web UI bound to its port, ready to serve.
pub struct WebServer {
    listener: TcpListener,
    limits: WebLimits,
    acceptor: Option<TlsAcceptor>,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    live: live::Watcher,
    first_admin_url: Option<String>,
}

impl WebServer {
    /// Binds the port and prepares TLS; makes the first admin's one-time link when there is
    /// no admin yet (see [`first_admin_url`](WebServer::first_admin_url)).
    pub async fn bind(
        config: &WebConfig,
        pki: &BrokerPki,
        desk: Desk,
        staff: StaffDirectory,
    ) -> Result<WebServer, WebError> {
        let acceptor = match &config.tls {
            WebTls::PlainHttpOnLoopback if !config.listen.ip().is_loopback() => {
                return Err(WebError::PlainHttpNotLoopback(config.listen));
            }
            WebTls::PlainHttpOnLoopback => None,
            WebTls::BrokerIssued { names } => {
                let names = if names.is_empty() {
                    default_certificate_names(config.listen.ip())
                } else {
                    names.clone()
                };
                let (chain, key) = pki
                    .issue_web_certificate(&names)
                    .map_err(|e| WebError::Issue(e.to_string()))?;
                Some(acceptor(chain, key, &PathBuf::from("(issued)"))?)
            }
            WebTls::Files { cert, key } => {
                let (chain, key) = read_pem_pair(cert, key)?;
                Some(acceptor(chain, key, cert)?)
            }
        };
        let listener = transport::listen(config.listen).map_err(|source| WebError::Listen {
            addr: config.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| WebError::Listen {
            addr: config.listen,
            source,
        })?;
        let first_admin = staff
            .first_admin_invite()
            .await
            .map_err(|e| WebError::FirstAdmin(e.to_string()))?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let base = config.public_url.clone().unwrap_or_else(|| {
            let host = link_host(config, local_addr.ip());
            format!("{scheme}://{}", url_authority(&host, local_addr.port()))
        });
        let first_admin_url = first_admin.map(|token| {
            format!(
                "{}/setup/{}",
                base.trim_end_matches('/'),
                token.expose_secret()
            )
        });
        let (live, receiver) = live::Watcher::new(desk.store().clone());
        let review_within = desk.policies().hospital().review_within;
        let state = Arc::new(AppState {
            desk,
            staff,
            checkpoints: crate::cli::CheckpointSources {
                data_dir: config.checkpoint_dir.clone(),
                ..crate::cli::CheckpointSources::default()
            },
            live: receiver,
            login_attempts: Mutex::new(HashMap::new()),
            allow: allow::SourceAllowList::new(config.allow.clone()),
            streams: live::StreamCounts::default(),
            sessions_changed: tokio::sync::watch::Sender::new(0),
            review_within,
            https: acceptor.is_some(),
            enrollment: crate::cli::EnrollmentHints {
                broker_address: config.broker_address.clone(),
                ca_fingerprint: pki.ca_fingerprint(),
            },
        });
        Ok(WebServer {
            listener,
            limits: config.limits,
            acceptor,
            local_addr,
            state,
            live,
            first_admin_url,
        })
    }

    /// The TCP address the web UI listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The first admin's one-time link, made at this start because no admin exists yet. It
    /// is shown once (the broker prints it); only its hash is stored.
    pub fn first_admin_url(&self) -> Option<&str> {
        self.first_admin_url.as_deref()
    }

    /// The pages and the API, for serving (or for tests that call it directly).
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let app = router(self.state.clone());
        let watcher = tokio::spawn(self.live.run(shutdown.clone()));
        let connections = transport::Connections::new(self.limits);
        let mut accept_errors = transport::AcceptErrors::default();
        let mut refused = transport::RefusedLog::default();
        loop {
            // A place first; until there is one, connections wait in the listen queue.
            tokio::select! {
                () = connections.room() => {}
                () = shutdown.cancelled() => break,
            }
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => {
                        accept_errors.succeeded();
                        accepted
                    }
                    Err(e) => {
                        // Out of file descriptors or memory: wait before trying again, so
                        // the loop neither spins a core nor floods the log.
                        let wait = accept_errors.failed(&e);
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = shutdown.cancelled() => break,
                        }
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            // Outside --web-allow: closed before any handshake (counted, logged sparingly).
            if !self.state.allow.admits(peer.ip()) {
                continue;
            }
            let place = match connections.admit(peer.ip()) {
                Ok(place) => place,
                Err(why) => {
                    refused.note(peer, why);
                    continue;
                }
            };
            let app = app.clone().layer(axum::Extension(auth::Peer(peer)));
            let acceptor = self.acceptor.clone();
            let shutdown = shutdown.clone();
            let limits = self.limits;
            tokio::spawn(async move {
                place.started();
                let place = Arc::new(place);
                let evicted = place.evicted().clone();
                let served = place.clone();
                // The first complete request makes the connection one that is never evicted.
                let app = tower::ServiceExt::map_request(app, move |request| {
                    served.served();
                    request
                });
                let service = TowerToHyperService::new(app);
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.request_head);
                let serve = async {
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(Ok(tls)) =
                                tokio::time::timeout(limits.tls_handshake, acceptor.accept(tcp))
                                    .await
                            else {
                                return;
                            };
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                };
                tokio::select! {
                    () = serve => {}
                    () = evicted.cancelled() => {}
                    () = shutdown.cancelled() => {}
                }
                drop(place);
            });
        }
        let _ = watcher.await;
    }
}

/// The one line the broker prints when the web UI answers on this host only.
pub fn lan_hint(local_addr: SocketAddr) -> Option<String> {
    local_addr.ip().is_loopback().then(|| {
        format!(
            "The web UI answers on this host only; to open it to the hospital's LAN, start with --web-listen 0.0.0.0:{} --web-name THIS-HOST'S-NAME (and --web-allow CIDR for the staff networks).",
            local_addr.port()
        )
    })
}

/// The names a broker-issued certificate carries when the admin gave none: `localhost`,
/// `127.0.0.1`, and the address staff reach the UI at (this host's name on `0.0.0.0` or
/// `::`, else the listen address).
fn default_certificate_names(listen: IpAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if listen.is_unspecified() {
        names.extend(host_name());
    } else if !listen.is_loopback() {
        names.push(listen.to_string());
    }
    names
}

/// The host in the printed first-admin link: never `0.0.0.0` or `::`, which no browser
/// reaches.
fn link_host(config: &WebConfig, listen: IpAddr) -> String {
    if let Some(name) = &config.link_name {
        return name.clone();
    }
    if let WebTls::BrokerIssued { names } = &config.tls
        && let Some(first) = names.first()
    {
        return first.clone();
    }
    if listen.is_unspecified() {
        return host_name().unwrap_or_else(|| "localhost".to_owned());
    }
    listen.to_string()
}

/// `host:port`, with an IPv6 address in brackets.
fn url_authority(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

/// This host's name, as the kernel has it.
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|name| !name.is_empty() && name.parse::<IpAddr>().is_err())
}

fn acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    path: &std::path::Path,
) -> Result<TlsAcceptor, WebError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // TLS 1.3 only, as the broker's QUIC and TCP ports (DESIGN §13).
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| WebError::Certificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_pem_pair(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), WebError> {
    use rustls_pki_types::pem::PemObject;
    let problem = |path: &std::path::Path, reason: String| WebError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| problem(cert, format!("cannot read it ({e})")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(cert, format!("not PEM certificates ({e})")))?;
    if chain.is_empty() {
        return Err(problem(cert, "holds no PEM certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| problem(key, format!("not a PEM private key ({e})")))?;
    Ok((chain, key))
}

fn router(state: Arc<AppState>) -> Router {
    let https = state.https;
    Router::new()
        .merge(pages::routes())
        .nest("/api", api::routes())
        .with_state(state)
        .layer(axum::middleware::map_response(
            move |response: Response| async move { secure_headers(response, https) },
        ))
}

/// Headers on every response: a strict CSP, no framing, no sniffing, no caching of pages
/// that hold patient-adjacent data, HSTS over HTTPS.
fn secure_headers(mut response: Response, https: bool) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}
