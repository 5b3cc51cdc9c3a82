//! A receiver for the approvers' webhook, as a hospital's relay runs one: a real HTTP/1.1
//! server (hyper) on `127.0.0.1:0`, plain or HTTPS, that answers with the statuses the test
//! scripts and hands over every request it got ([`WebhookRelay`]); and a CA of the
//! hospital's own, made with rcgen, to issue its certificate ([`HospitalCa`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One POST the relay received.
#[derive(Debug, Clone)]
pub struct Posted {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The raw body, as signed.
    pub body: Vec<u8>,
}

impl Posted {
    /// A header's value, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A port bound for the relay before the broker starts (its URL goes into the broker's
/// configuration), served once the test knows which certificate it needs.
pub struct RelaySocket {
    listener: TcpListener,
    addr: SocketAddr,
}

impl RelaySocket {
    pub async fn bind() -> RelaySocket {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        RelaySocket { listener, addr }
    }

    /// `scheme://127.0.0.1:PORT/sekisho`.
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/sekisho", self.addr)
    }

    /// Serves plain HTTP, answering the n-th POST with `answers[n]` (204 after the last).
    pub fn serve_http(self, answers: &[u16]) -> WebhookRelay {
        WebhookRelay::start(self, None, answers)
    }

    /// Serves HTTPS with `chain` and `key`, answering as [`serve_http`](Self::serve_http).
    pub fn serve_https(
        self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        answers: &[u16],
    ) -> WebhookRelay {
        let mut config = rustls::ServerConfig::builder_with_provider(tunnel::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        WebhookRelay::start(self, Some(TlsAcceptor::from(Arc::new(config))), answers)
    }
}

/// The relay, serving until dropped.
pub struct WebhookRelay {
    posted: mpsc::UnboundedReceiver<Posted>,
    tls_failures: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl WebhookRelay {
    fn start(socket: RelaySocket, tls: Option<TlsAcceptor>, answers: &[u16]) -> WebhookRelay {
        let (posted_tx, posted) = mpsc::unbounded_channel();
        let (failed_tx, tls_failures) = mpsc::unbounded_channel();
        let answers: Arc<Vec<u16>> = Arc::new(answers.to_vec());
        let count = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = socket.listener.accept().await {
                let (tls, posted_tx, failed_tx) =
                    (tls.clone(), posted_tx.clone(), failed_tx.clone());
                let (answers, count) = (answers.clone(), count.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (posted_tx, answers, count) =
                            (posted_tx.clone(), answers.clone(), count.clone());
                        async move {
                            let (head, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes().to_vec();
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            let status = answers.get(n).copied().unwrap_or(204);
                            let _ = posted_tx.send(Posted {
                                method: head.method.to_string(),
                                path: head.uri.to_string(),
                                headers: head.headers,
                                body,
                            });
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                            Err(e) => {
                                let _ = failed_tx.send(e.to_string());
                            }
                        },
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        WebhookRelay {
            posted,
            tls_failures,
            task,
        }
    }

    /// The next POST, waiting up to 10 s for it.
    pub async fn next(&mut self) -> Posted {
        tokio::time::timeout(Duration::from_secs(10), self.posted.recv())
            .await
            .expect("the webhook was called within 10 s")
            .unwrap()
    }

    /// The next POST of `event` (others, sent concurrently, are skipped), waiting up to 10 s.
    pub async fn next_of(&mut self, event: &str) -> Posted {
        loop {
            let posted = self.next().await;
            if posted.header("x-sekisho-event") == Some(event) {
                return posted;
            }
        }
    }

    /// The POSTs received and not yet taken, without waiting.
    pub fn received(&mut self) -> Vec<Posted> {
        let mut all = Vec::new();
        while let Ok(posted) = self.posted.try_recv() {
            all.push(posted);
        }
        all
    }

    /// The next TLS handshake that failed on the relay's side, waiting up to 10 s.
    pub async fn next_tls_failure(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.tls_failures.recv())
            .await
            .expect("a TLS handshake was tried within 10 s")
            .unwrap()
    }
}

impl Drop for WebhookRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A certificate authority of the hospital's own (not the broker's), made with rcgen.
pub struct HospitalCa {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl HospitalCa {
    pub fn new(name: &str) -> HospitalCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let certificate = params.self_signed(&key).unwrap();
        HospitalCa {
            pem: certificate.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate (PEM) into `dir`; returns its path.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("hospital-ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` and its key, both PEM (certificate, PKCS #8 key),
    /// for servers that read files (rsyslog).
    pub fn issue_server_pem(&self, names: &[&str]) -> (String, String) {
        let (certificate, key) = self.sign_server(names);
        (certificate.pem(), key.serialize_pem())
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key.
    pub fn issue_server(
        &self,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let (certificate, key) = self.sign_server(names);
        (
            vec![certificate.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    fn sign_server(&self, names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate, key)
    }
}
