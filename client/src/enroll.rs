//! Enrollment: from the hospital's one-time token to a certificate, a pinned broker CA and a
//! TOTP secret, with the private key made here and never sent.
//!
//! 1. Connect with ALPN `sekisho-enroll/1` and no client certificate. The broker sends its CA
//!    after its own certificate; the client goes on only if that CA's SHA-256 fingerprint is
//!    the one the hospital gave with the token, and the broker's certificate chains to it for
//!    [`proto::BROKER_SERVER_NAME`]. Otherwise the handshake is aborted (the broker records
//!    the aborted handshake).
//! 2. Send the token; the broker answers whom it enrolls.
//! 3. Make an ECDSA P-256 key pair, write the private key (0600) next to where it will live,
//!    and send a certificate request for exactly that identity, signed with the key.
//! 4. Receive the certificate, the CA and the `otpauth://` URI; check that the certificate is
//!    for our key and the CA is the pinned one; move the key into place and write the rest.
//!
//! Nothing of an earlier enrollment in the directory is replaced until step 4 succeeds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proto::{EnrollCsr, EnrollOffer, EnrollStart, Enrolled, Message};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tunnel::frames::{MessageReader, ReadFrameError, write_message};
use tunnel::link::{Link, LinkEnd, RecvHalf, StreamError};

use crate::error::ConnectError;
use crate::files::{self, BROKER_FILE, CA_FILE, CERTIFICATE_FILE, KEY_FILE};
use crate::transport::{Dial, TransportChoice, dial};

/// What the technician typed.
#[derive(Debug, Clone)]
pub struct EnrollArgs {
    /// `HOST:PORT` of the broker.
    pub broker: String,
    /// The hospital's other brokers (sharing one database), tried in order when `broker`
    /// cannot be reached; enrollment stores them all.
    pub further_brokers: Vec<String>,
    /// Which transport to enroll over.
    pub transport: TransportChoice,
    /// The HTTP proxy TLS over TCP goes through, if any.
    pub proxy: Option<crate::proxy::Proxy>,
    /// The one-time token.
    pub token: String,
    /// The broker CA's fingerprint as the hospital gave it (`sha256:…`).
    pub ca_fingerprint: String,
    /// Where the credentials go.
    pub dir: PathBuf,
    /// How long to wait for the broker.
    pub connect_timeout: std::time::Duration,
}

impl EnrollArgs {
    /// Every address the hospital gave, in its order.
    pub fn addresses(&self) -> Vec<&str> {
        std::iter::once(self.broker.as_str())
            .chain(self.further_brokers.iter().map(String::as_str))
            .collect()
    }
}

/// A finished enrollment.
#[derive(Debug)]
pub struct Enrollment {
    /// Whom the broker enrolled, and at which hospital.
    pub offer: EnrollOffer,
    /// The `otpauth://` URI with the TOTP secret: show it once, never store it.
    pub otpauth_uri: String,
    /// When the certificate expires, Unix seconds.
    pub not_after: u64,
    /// The configuration directory written.
    pub dir: PathBuf,
}

/// Why enrollment failed; each a sentence for the technician.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The fingerprint as typed is not one.
    #[error(
        "`{0}` is not a CA fingerprint; copy it exactly as the hospital gave it (sha256: and 64 hexadecimal digits)."
    )]
    BadFingerprint(String),
    /// The broker's CA is not the one the hospital named.
    #[error(
        "The server at {broker} is not the hospital's broker you were told to enroll with: its CA fingerprint is {seen}, not {expected}. Nothing was saved; do not continue, and tell the hospital's IT."
    )]
    FingerprintMismatch {
        /// As typed.
        broker: String,
        /// What the server showed.
        seen: String,
        /// What the hospital gave.
        expected: String,
    },
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The broker refused (token, request, account), with its sentence.
    #[error("{0}")]
    Refused(proto::ErrorMessage),
    /// The broker answered something the protocol does not allow here, or a certificate that
    /// is not for our key.
    #[error("The broker's answer cannot be used ({0}); nothing was saved. Tell the hospital's IT.")]
    Protocol(String),
    /// The key or certificate request could not be made.
    #[error("Cannot make a key pair on this computer ({0}).")]
    Key(String),
    /// The credentials could not be written.
    #[error("Cannot write your credentials to {path}: {reason}.")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
}

/// The fingerprint as 32 bytes, from `sha256:` and 64 hex digits (case, colons and the
/// prefix are forgiven).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], EnrollError> {
    let bad = || EnrollError::BadFingerprint(text.to_owned());
    let trimmed = text.trim();
    let hex_part = trimmed
        .strip_prefix("sha256:")
        .or_else(|| trimmed.strip_prefix("SHA256:"))
        .unwrap_or(trimmed);
    let digits: Vec<u8> = hex_part.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (index, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[index] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `sha256:` and lowercase hex, as the broker prints it.
pub fn format_fingerprint(bytes: &[u8; 32]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Enrolls with the broker and writes the credentials into `args.dir`. The hospital's
/// addresses are tried in order: one that cannot be reached passes to the next.
pub async fn enroll(args: &EnrollArgs) -> Result<Enrollment, EnrollError> {
    let mut unreachable = Vec::new();
    for broker in args.addresses() {
        match enroll_at(args, broker).await {
            Err(EnrollError::Connect(e)) if e.is_unreachable() => {
                unreachable.push(e);
            }
            other => return other,
        }
    }
    Err(ConnectError::none_reachable(unreachable).into())
}

/// Enrolls through the broker at `broker`.
async fn enroll_at(args: &EnrollArgs, broker: &str) -> Result<Enrollment, EnrollError> {
    let expected = parse_fingerprint(&args.ca_fingerprint)?;
    let mismatch = Arc::new(Mutex::new(None));
    let verifier = Arc::new(PinnedCaVerifier {
        expected,
        provider: tunnel::crypto_provider(),
        mismatch: mismatch.clone(),
    });
    let tls = enroll_tls_config(verifier)?;
    // Enrollment moves a few kilobytes: Ethernet-sized packets, whatever the path.
    let packets = tunnel::udp::PacketSize::ETHERNET;
    let spec = Dial {
        quic: crate::config::quic_client_config(
            tls.clone(),
            packets,
            tunnel::udp::Congestion::default(),
        )?,
        tls,
        max_packet: packets,
        transport: args.transport,
        remember_in: None,
        proxy: args.proxy.as_ref(),
    };
    let broker_address = crate::session::resolve(broker).await?;
    let conversation = async {
        let dialed = match dial(&spec, broker, broker_address).await {
            Ok(dialed) => dialed,
            Err(e) => {
                let seen = mismatch.lock().ok().and_then(|mut seen| seen.take());
                return Err(match seen {
                    Some(seen) => EnrollError::FingerprintMismatch {
                        broker: broker.to_owned(),
                        seen,
                        expected: format_fingerprint(&expected),
                    },
                    None => e.into(),
                });
            }
        };
        let result = converse(&dialed.link, args, broker, &expected).await;
        dialed.link.close(0, b"enrollment over");
        if let Some(endpoint) = &dialed.endpoint {
            endpoint.close(0u32.into(), b"enrollment over");
        }
        result
    };
    match tokio::time::timeout(args.connect_timeout * 3, conversation).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Unreachable {
            broker: broker.to_owned(),
            reason: format!(
                "no answer within {} s",
                (args.connect_timeout * 3).as_secs()
            ),
        }
        .into()),
    }
}

async fn converse(
    connection: &Link,
    args: &EnrollArgs,
    broker: &str,
    expected_ca: &[u8; 32],
) -> Result<Enrollment, EnrollError> {
    let lost = |end: LinkEnd| {
        EnrollError::from(crate::session::gone_while_greeting(connection, broker, end))
    };
    let (mut send, mut recv) = connection.open_bi().await.map_err(lost)?;
    let mut reader = MessageReader::new();
    let start = Message::EnrollStart(EnrollStart {
        version: proto::PROTOCOL_VERSION,
        token: args.token.trim().to_owned(),
    });
    write_message(&mut send, &start)
        .await
        .map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let offer = match read(&mut reader, &mut recv, connection, broker).await? {
        Message::EnrollOffer(offer) => offer,
        other => {
            return Err(EnrollError::Protocol(format!(
                "expected EnrollOffer, got {}",
                other.name()
            )));
        }
    };

    // The key is made here and written (0600) beside its final name before the request goes
    // out; only the request, signed with it, leaves this machine.
    let key = rcgen::KeyPair::generate().map_err(|e| EnrollError::Key(e.to_string()))?;
    let csr_pem = certificate_request(&offer, &key)?;
    files::create_private_dir(&args.dir).map_err(|e| write_error(&args.dir, &e))?;
    let staged_key = args.dir.join(format!(".{KEY_FILE}.enrolling"));
    files::write_atomically(&staged_key, key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| write_error(&staged_key, &e))?;
    let outcome = async {
        write_message(&mut send, &Message::EnrollCsr(EnrollCsr { csr_pem }))
            .await
            .map_err(|e| EnrollError::Protocol(e.to_string()))?;
        let enrolled = match read(&mut reader, &mut recv, connection, broker).await? {
            Message::Enrolled(enrolled) => enrolled,
            other => {
                return Err(EnrollError::Protocol(format!(
                    "expected Enrolled, got {}",
                    other.name()
                )));
            }
        };
        check_enrolled(&enrolled, &key, expected_ca)?;
        Ok(enrolled)
    }
    .await;
    let enrolled = match outcome {
        Ok(enrolled) => enrolled,
        Err(e) => {
            let _ = std::fs::remove_file(&staged_key);
            return Err(e);
        }
    };
    let _ = send.finish();
    save(
        &args.dir,
        &staged_key,
        &args.addresses().join("\n"),
        &enrolled,
    )?;
    Ok(Enrollment {
        offer,
        otpauth_uri: enrolled.otpauth_uri,
        not_after: enrolled.not_after,
        dir: args.dir.clone(),
    })
}

async fn read(
    reader: &mut MessageReader,
    recv: &mut RecvHalf,
    connection: &Link,
    broker: &str,
) -> Result<Message, EnrollError> {
    match reader.expect(recv).await {
        Ok(Message::Error(refusal)) => Err(EnrollError::Refused(refusal)),
        Ok(message) => Ok(message),
        Err(ReadFrameError::Read(StreamError::Lost(end))) => {
            Err(crate::session::gone_while_greeting(connection, broker, end).into())
        }
        Err(e) => Err(EnrollError::Protocol(e.to_string())),
    }
}

/// The PKCS#10 request for the offered identity: the identity URI the broker reads, and the
/// technician's id as the common name; nothing else.
fn certificate_request(offer: &EnrollOffer, key: &rcgen::KeyPair) -> Result<String, EnrollError> {
    let valid = |name: &str| {
        !name.is_empty()
            && name.len() <= 63
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    };
    if !valid(&offer.vendor) || !valid(&offer.technician) {
        return Err(EnrollError::Protocol(
            "the broker offered an identity with unexpected characters".into(),
        ));
    }
    let uri = format!(
        "urn:sekisho:technician:{}:{}",
        offer.vendor, offer.technician
    );
    let mut params = rcgen::CertificateParams::default();
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, offer.technician.as_str());
    params.distinguished_name = name;
    let uri = uri
        .try_into()
        .map_err(|e: rcgen::Error| EnrollError::Key(e.to_string()))?;
    params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
    params
        .serialize_request(key)
        .and_then(|request| request.pem())
        .map_err(|e| EnrollError::Key(e.to_string()))
}

/// The certificate must be for our key, and the CA the pinned one.
fn check_enrolled(
    enrolled: &Enrolled,
    key: &rcgen::KeyPair,
    expected_ca: &[u8; 32],
) -> Result<(), EnrollError> {
    use rustls_pki_types::pem::PemObject;
    let certificate = CertificateDer::from_pem_slice(enrolled.certificate_pem.as_bytes())
        .map_err(|_| EnrollError::Protocol("the certificate is not PEM".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&certificate)
        .map_err(|_| EnrollError::Protocol("the certificate does not parse".into()))?;
    if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(key).as_slice() {
        return Err(EnrollError::Protocol(
            "the certificate is not for the key made here".into(),
        ));
    }
    let ca = CertificateDer::from_pem_slice(enrolled.ca_pem.as_bytes())
        .map_err(|_| EnrollError::Protocol("the CA is not PEM".into()))?;
    if &sha256(&ca) != expected_ca {
        return Err(EnrollError::Protocol(
            "the CA sent is not the one whose fingerprint you were given".into(),
        ));
    }
    Ok(())
}

/// Moves the staged key into place and writes the certificate, CA and broker address.
fn save(
    dir: &Path,
    staged_key: &Path,
    broker: &str,
    enrolled: &Enrolled,
) -> Result<(), EnrollError> {
    let files = [
        (CA_FILE, enrolled.ca_pem.as_bytes(), 0o644),
        (CERTIFICATE_FILE, enrolled.certificate_pem.as_bytes(), 0o644),
        (BROKER_FILE, broker.as_bytes(), 0o644),
    ];
    for (name, contents, mode) in files {
        let path = dir.join(name);
        files::write_atomically(&path, contents, mode).map_err(|e| write_error(&path, &e))?;
    }
    let key_path = dir.join(KEY_FILE);
    std::fs::rename(staged_key, &key_path).map_err(|e| write_error(&key_path, &e))?;
    Ok(())
}

fn write_error(path: &Path, error: &std::io::Error) -> EnrollError {
    EnrollError::Write {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

fn enroll_tls_config(verifier: Arc<PinnedCaVerifier>) -> Result<rustls::ClientConfig, EnrollError> {
    let provider = tunnel::crypto_provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConnectError::Credentials(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![proto::ENROLL_ALPN.to_vec()];
    tls.resumption = Resumption::disabled();
    tls.enable_early_data = false;
    Ok(tls)
}

/// Trusts the broker only if it sends the CA with the expected fingerprint and its own
/// certificate chains to that CA for the broker name: certificate pinning by fingerprint,
/// then ordinary WebPKI checks against that one root.
#[derive(Debug)]
struct PinnedCaVerifier {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// What the server showed instead, for the error message.
    mismatch: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|certificate| sha256(certificate) == self.expected);
        let Some(ca) = pinned else {
            let seen = intermediates
                .last()
                .map(|certificate| format_fingerprint(&sha256(certificate)))
                .unwrap_or_else(|| "(no CA sent)".to_owned());
            if let Ok(mut slot) = self.mismatch.lock() {
                *slot = Some(seen);
            }
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_as_printed_and_forgive_case_and_colons() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let printed = format_fingerprint(&bytes);
        assert_eq!(parse_fingerprint(&printed).unwrap(), bytes);
        let shouting = printed.to_ascii_uppercase();
        assert_eq!(parse_fingerprint(&shouting).unwrap(), bytes);
        let hex = printed.trim_start_matches("sha256:");
        let colons: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), bytes);
        for bad in [
            "",
            "sha256:",
            "sha256:abc",
            &format!("{printed}00"),
            &printed.replace('0', "g"),
        ] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_carries_the_public_key_and_the_identity_but_not_the_private_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let offer = EnrollOffer {
            vendor: "acme-ehr".into(),
            technician: "tanaka".into(),
            display_name: "Tanaka Hanako".into(),
            hospital: "Demo".into(),
        };
        let pem = certificate_request(&offer, &key).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_der(&der).unwrap();
        assert_eq!(
            parsed.params.subject_alt_names,
            vec![rcgen::SanType::URI(
                "urn:sekisho:technician:acme-ehr:tanaka".try_into().unwrap()
            )]
        );
        let private = key.serialize_der();
        // In the PKCS#8 document the private scalar follows `version 1, OCTET STRING (32)`.
        let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
        let at = private
            .windows(marker.len())
            .position(|window| window == marker)
            .unwrap()
            + marker.len();
        let scalar = &private[at..at + 32];
        assert!(!der.windows(32).any(|window| window == scalar));
        assert!(!pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn an_offer_with_odd_names_is_not_signed_for() {
        let key = rcgen::KeyPair::generate().unwrap();
        let offer = EnrollOffer {
            vendor: "acme:evil".into(),
            technician: "tanaka".into(),
            display_name: String::new(),
            hospital: String::new(),
        };
        assert!(matches!(
            certificate_request(&offer, &key),
            Err(EnrollError::Protocol(_))
        ));
    }
}
