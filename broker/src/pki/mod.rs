//! The broker's own certificate authority.
//!
//! On first start the broker makes a CA and a server certificate under `DATA_DIR/pki/`; private
//! keys are written readable by the owner only. The CA signs the broker's server certificate
//! and the technicians' client certificates, and it is the only root either side trusts: the
//! broker accepts only client certificates it issued, and the client pins this CA.
//!
//! A technician's identity travels in the client certificate as a URI subject alternative
//! name, `urn:sekisho:technician:VENDOR:TECHNICIAN`; [`identity_from_certificate`] reads it
//! back. This module never checks whether that technician is still allowed in: that is the
//! registry's job on every connection ([`crate::identity::admit`]).
//!
//! Technicians' certificates are signed from a certificate request made on their laptop
//! ([`BrokerPki::sign_request`]); the broker never sees their private key.

pub(crate) mod files;
pub(crate) mod trust;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::store::CertificateRecord;

/// Validity of the broker's CA.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of the broker's server certificate; it is renewed at start when less than
/// [`SERVER_RENEW_BEFORE`] is left.
const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
const SERVER_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest a client certificate may be valid.
pub const MAX_CLIENT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates are dated this much in the past, so a laptop whose clock is a little behind
/// the broker's still accepts them.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

const IDENTITY_URI_PREFIX: &str = "urn:sekisho:technician:";

/// Why the PKI could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file under the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A file under the data directory does not hold what it should.
    #[error("{path}: {reason}; move it away to have the broker make a new one")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Making or signing a certificate failed.
    #[error("could not make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The identity to put in a certificate is not a valid name.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A client certificate may be valid for at most a year.
    #[error("a client certificate may be valid for at most 365 days")]
    ValidityTooLong,
}

/// Who a client certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TechnicianIdentity {
    vendor: String,
    technician: String,
}

/// Why a certificate names no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The name has characters or a length we do not use in identities.
    #[error(
        "`{0}` is not a valid name: use 1 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    InvalidName(String),
    /// The certificate could not be parsed.
    #[error("the certificate could not be parsed")]
    Unparsable,
    /// The certificate carries no sekisho technician identity.
    #[error("the certificate names no sekisho technician")]
    Missing,
}

impl TechnicianIdentity {
    /// An identity, if both names are valid.
    pub fn new(vendor: &str, technician: &str) -> Result<TechnicianIdentity, IdentityError> {
        for name in [vendor, technician] {
            if !is_valid_name(name) {
                return Err(IdentityError::InvalidName(name.to_owned()));
            }
        }
        Ok(TechnicianIdentity {
            vendor: vendor.to_owned(),
            technician: technician.to_owned(),
        })
    }

    /// The vendor's id, as its policy file names it.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    /// The technician's id within the vendor.
    pub fn technician(&self) -> &str {
        &self.technician
    }

    fn uri(&self) -> String {
        format!("{IDENTITY_URI_PREFIX}{}:{}", self.vendor, self.technician)
    }
}

impl std::fmt::Display for TechnicianIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.vendor, self.technician)
    }
}

/// Names used in identities: `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 63
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

/// Reads the technician identity from a DER client certificate issued by a sekisho broker.
pub fn identity_from_certificate(der: &[u8]) -> Result<TechnicianIdentity, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::Unparsable)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| IdentityError::Unparsable)?
        .ok_or(IdentityError::Missing)?;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name
            && let Some(rest) = uri.strip_prefix(IDENTITY_URI_PREFIX)
        {
            let (vendor, technician) = rest.split_once(':').ok_or(IdentityError::Missing)?;
            return TechnicianIdentity::new(vendor, technician);
        }
    }
    Err(IdentityError::Missing)
}

/// A client certificate and its private key, both PEM.
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The private key, PKCS#8 PEM. Write it readable by its owner only.
    pub private_key_pem: String,
}

impl IssuedCertificate {
    /// Writes `ca.pem` (the broker CA to pin), `client.pem` and `client.key` (0600) into
    /// `dir`, creating it readable by its owner only. Returns the paths in that order.
    pub fn write_to(&self, dir: &Path, ca_pem: &str) -> Result<[PathBuf; 3], PkiError> {
        files::create_private_dir(dir)?;
        let paths = [
            dir.join("ca.pem"),
            dir.join("client.pem"),
            dir.join("client.key"),
        ];
        files::write_public(&paths[0], ca_pem.as_bytes())?;
        files::write_public(&paths[1], self.certificate_pem.as_bytes())?;
        files::write_private(&paths[2], self.private_key_pem.as_bytes())?;
        Ok(paths)
    }
}

/// The broker's CA and server certificate, loaded from (or made in) the data directory.
pub struct BrokerPki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_issuer: Issuer<'static, KeyPair>,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl BrokerPki {
    /// Loads the CA and server certificate from `DATA_DIR/pki/`, making whichever is missing
    /// (and renewing a server certificate close to its end).
    pub fn load_or_create(data_dir: &Path) -> Result<BrokerPki, PkiError> {
        let dir = data_dir.join("pki");
        files::create_private_dir(&dir)?;
        let ca_cert_path = dir.join("ca.pem");
        let ca_key_path = dir.join("ca.key");
        let server_cert_path = dir.join("broker.pem");
        let server_key_path = dir.join("broker.key");

        let (ca_pem, ca_key) = if ca_cert_path.exists() {
            let key_pem = files::read_to_string(&ca_key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Corrupt {
                path: ca_key_path.clone(),
                reason: format!("not a private key ({e})"),
            })?;
            (files::read_to_string(&ca_cert_path)?, key)
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params(&key)?.self_signed(&key)?;
            files::write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
            files::write_private(&ca_cert_path, cert.pem().as_bytes())?;
            tracing::info!(path = %ca_cert_path.display(), "created the broker's certificate authority");
            (cert.pem(), key)
        };
        let ca_der = pem_certificate_der(&ca_pem).ok_or_else(|| PkiError::Corrupt {
            path: ca_cert_path.clone(),
            reason: "no PEM certificate in it".into(),
        })?;
        let ca_issuer =
            Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(|e| PkiError::Corrupt {
                path: ca_cert_path.clone(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;

        let existing_server = if server_cert_path.exists() && server_key_path.exists() {
            let cert_pem = files::read_to_string(&server_cert_path)?;
            let key_pem = files::read_to_string(&server_key_path)?;
            pem_certificate_der(&cert_pem)
                .filter(|der| still_valid_for(der, SERVER_RENEW_BEFORE))
                .zip(KeyPair::from_pem(&key_pem).ok())
        } else {
            None
        };
        let (server_der, server_key) = match existing_server {
            Some(pair) => pair,
            None => {
                let key = KeyPair::generate()?;
                let cert = server_params()?.signed_by(&key, &ca_issuer)?;
                files::write_private(&server_key_path, key.serialize_pem().as_bytes())?;
                files::write_private(&server_cert_path, cert.pem().as_bytes())?;
                tracing::info!(path = %server_cert_path.display(), "issued the broker's server certificate");
                (cert.der().clone(), key)
            }
        };

        Ok(BrokerPki {
            ca_pem,
            ca_der,
            ca_issuer,
            server_der,
            server_key_der: server_key.serialize_der(),
        })
    }

    /// The CA certificate, PEM: what a client pins.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// The CA's fingerprint, `sha256:` and 64 hex digits: what a technician checks at
    /// enrollment (the hospital hands it over with the token).
    pub fn ca_fingerprint(&self) -> String {
        format!("sha256:{}", fingerprint(&self.ca_der))
    }

    /// The server certificate chain presented to clients: the broker's certificate, then the
    /// CA, so that a client enrolling for the first time can compare the CA with the
    /// fingerprint it was given (enrolled clients pin the CA and ignore the copy).
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.server_der.clone(), self.ca_der.clone()]
    }

    /// The server certificate's private key.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()))
    }

    /// Issues a client certificate for `identity`, valid from now for `validity`, with a key
    /// made here rather than on the technician's laptop. Technicians enroll instead
    /// ([`crate::identity`]); this is for tools that provision many test identities at once
    /// (the benchmark) and for tests. A certificate made here is refused at the handshake
    /// until it is registered ([`crate::store::Store::register_certificate`]).
    pub fn issue_client_certificate(
        &self,
        identity: &TechnicianIdentity,
        validity: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        if validity > MAX_CLIENT_VALIDITY {
            return Err(PkiError::ValidityTooLong);
        }
        let key = KeyPair::generate()?;
        let mut params = client_params(identity)?;
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.ca_issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }
}

impl BrokerPki {
    /// Issues a certificate for the web UI, for `names` (DNS names or IP addresses), with a
    /// key made here and kept in memory only; a new one is issued at each start.
    #[allow(
        clippy::type_complexity,
        reason = "a chain and its key, as rustls takes them"
    )]
    pub fn issue_web_certificate(
        &self,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "sekisho web UI");
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, SERVER_VALIDITY);
        let cert = params.signed_by(&key, &self.ca_issuer)?;
        Ok((
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }

    /// Signs a client certificate for the public key of `csr_pem` (PKCS#10, PEM), which must
    /// be correctly signed with that key and name exactly `identity` ([`check_request_pem`]).
    /// The certificate carries our extensions (client authentication, the identity), never the
    /// request's.
    pub fn sign_request(
        &self,
        identity: &TechnicianIdentity,
        csr_pem: &str,
        validity: Duration,
    ) -> Result<SignedCertificate, RequestRefusal> {
        if validity > MAX_CLIENT_VALIDITY {
            return Err(RequestRefusal::Internal(
                PkiError::ValidityTooLong.to_string(),
            ));
        }
        let request = check_request_pem(identity, csr_pem)?;
        let mut params = client_params(identity)?;
        set_validity(&mut params, validity);
        let cert = params
            .signed_by(&request.public_key, &self.ca_issuer)
            .map_err(|e| RequestRefusal::Internal(e.to_string()))?;
        let certificate_pem = cert.pem();
        let record = certificate_record(cert.der())
            .ok_or_else(|| RequestRefusal::Internal("the new certificate does not parse".into()))?;
        Ok(SignedCertificate {
            certificate_pem,
            record,
        })
    }
}

/// A certificate request that was read, whose signature verifies with the key it carries, and
/// that names exactly the identity it was checked for: all that
/// [`BrokerPki::sign_request`] takes from it.
#[derive(Debug)]
pub struct CheckedRequest {
    public_key: rcgen::PublicKey,
}

impl CheckedRequest {
    /// The requester's public key (SubjectPublicKeyInfo's key bits), what the certificate
    /// will certify.
    pub fn public_key_bits(&self) -> &[u8] {
        use rcgen::PublicKeyData;
        self.public_key.der_bytes()
    }
}

/// Checks a technician's certificate request (PKCS#10, PEM), as it arrives in
/// [`proto::EnrollCsr`] from a peer that has shown only an enrollment token: see
/// [`check_request_der`]. Never panics, whatever the text.
pub fn check_request_pem(
    identity: &TechnicianIdentity,
    csr_pem: &str,
) -> Result<CheckedRequest, RequestRefusal> {
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| RequestRefusal::Malformed)?;
    check_request_der(identity, &der)
}

/// Checks a certificate request (PKCS#10, DER): it must parse, ask for no extension the broker
/// does not understand, be signed with the key it carries, and name exactly one technician,
/// `identity`. Never panics, whatever the bytes.
///
/// Split from [`BrokerPki::sign_request`] so that the `enroll_input` fuzz target can reach
/// every check without a CA.
pub fn check_request_der(
    identity: &TechnicianIdentity,
    csr_der: &[u8],
) -> Result<CheckedRequest, RequestRefusal> {
    let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der);
    let request = rcgen::CertificateSigningRequestParams::from_der(&der).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => RequestRefusal::BadSignature,
        _ => RequestRefusal::Malformed,
    })?;
    let requested: Vec<TechnicianIdentity> = request
        .params
        .subject_alt_names
        .iter()
        .filter_map(|name| match name {
            SanType::URI(uri) => uri
                .as_str()
                .strip_prefix(IDENTITY_URI_PREFIX)
                .and_then(|rest| rest.split_once(':'))
                .and_then(|(vendor, technician)| TechnicianIdentity::new(vendor, technician).ok()),
            _ => None,
        })
        .collect();
    match requested.as_slice() {
        [one] if one == identity => Ok(CheckedRequest {
            public_key: request.public_key,
        }),
        [one] => Err(RequestRefusal::OtherIdentity {
            requested: one.to_string(),
            token_for: identity.to_string(),
        }),
        _ => Err(RequestRefusal::NoIdentity(identity.to_string())),
    }
}

/// A certificate signed from a request, with what the registry keeps of it.
#[derive(Debug, Clone)]
pub struct SignedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Fingerprint, serial and expiry.
    pub record: CertificateRecord,
}

/// Why a certificate request was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    /// Not a PKCS#10 request we can read.
    #[error(
        "The certificate request could not be read (not a PKCS#10 request in PEM, or it asks for extensions the broker does not sign); use the sekisho client to enroll."
    )]
    Malformed,
    /// The request's signature does not verify with its own key.
    #[error(
        "The certificate request is not signed by the key it carries; use the sekisho client to enroll."
    )]
    BadSignature,
    /// The request names someone else.
    #[error(
        "The certificate request is for {requested}, but this token enrolls {token_for}; use the token made for you."
    )]
    OtherIdentity {
        /// Whom the request names.
        requested: String,
        /// Whom the token enrolls.
        token_for: String,
    },
    /// The request names no technician, or several.
    #[error(
        "The certificate request must name exactly one technician, {0}; use the sekisho client to enroll."
    )]
    NoIdentity(String),
    /// Signing failed on our side.
    #[error("The broker could not sign the certificate ({0}); tell the hospital's IT.")]
    Internal(String),
}

impl From<rcgen::Error> for RequestRefusal {
    fn from(error: rcgen::Error) -> RequestRefusal {
        RequestRefusal::Internal(error.to_string())
    }
}

/// SHA-256 of a DER certificate, lowercase hex: the registry's key.
pub fn fingerprint(der: &[u8]) -> String {
    crate::encoding::hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// What the registry keeps of a DER certificate: fingerprint, serial, expiry.
pub fn certificate_record(der: &[u8]) -> Option<CertificateRecord> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    Some(CertificateRecord {
        fingerprint: fingerprint(der),
        serial: cert.raw_serial_as_string().replace(':', ""),
        not_after: std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_after).ok()?),
    })
}

/// [`certificate_record`] of the first certificate in a PEM text.
pub fn certificate_record_from_pem(pem: &str) -> Option<CertificateRecord> {
    certificate_record(&pem_certificate_der(pem)?)
}

/// A client certificate's parameters for `identity`, without validity.
fn client_params(identity: &TechnicianIdentity) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, identity.technician());
    name.push(DnType::OrganizationName, identity.vendor());
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    crate::secret::random_bytes(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
    // A positive serial: the top bit clear.
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

/// The certificate request a technician's client makes for `identity` with `key`: only the
/// identity, no extensions the broker would not sign anyway. (Used by tests here; the client
/// builds the same request on the laptop.)
pub fn certificate_request(
    identity: &TechnicianIdentity,
    key: &KeyPair,
) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, identity.technician());
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    params.serialize_request(key)?.pem()
}

fn ca_params(key: &KeyPair) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    // Each broker's CA gets a name of its own (from its key), so a certificate from another
    // broker's CA is reported as "unknown CA" rather than matched by name and failing on
    // its signature.
    let key_id: String = key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(6)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    name.push(DnType::CommonName, format!("sekisho broker CA {key_id}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    Ok(params)
}

fn server_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![proto::BROKER_SERVER_NAME.to_owned()])?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "sekisho broker");
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, SERVER_VALIDITY);
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

/// Whether the certificate is still valid `margin` from now.
fn still_valid_for(der: &CertificateDer<'_>, margin: Duration) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return false;
    };
    let deadline = OffsetDateTime::now_utc() + margin;
    cert.validity().not_after.to_datetime() > deadline
}

/// The DER of the first certificate in a PEM text.
fn pem_certificate_der(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateSigningRequestDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn first_start_creates_keys_readable_by_the_owner_only_and_second_start_reuses_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = BrokerPki::load_or_create(dir.path()).unwrap();
        for key in ["ca.key", "broker.key"] {
            let mode = std::fs::metadata(dir.path().join("pki").join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let second = BrokerPki::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_pem(), second.ca_pem());
        assert_eq!(first.server_chain(), second.server_chain());
    }

    #[test]
    fn an_issued_client_certificate_carries_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = BrokerPki::load_or_create(dir.path()).unwrap();
        let identity = TechnicianIdentity::new("acme-ehr", "tanaka").unwrap();
        let issued = pki
            .issue_client_certificate(&identity, Duration::from_secs(3600))
            .unwrap();
        let der = pem_certificate_der(&issued.certificate_pem).unwrap();
        assert_eq!(identity_from_certificate(&der), Ok(identity));
    }

    #[test]
    fn the_server_certificate_names_no_technician() {
        let dir = tempfile::tempdir().unwrap();
        let pki = BrokerPki::load_or_create(dir.path()).unwrap();
        assert_eq!(
            identity_from_certificate(&pki.server_chain()[0]),
            Err(IdentityError::Missing)
        );
    }

    #[test]
    fn names_outside_the_identity_alphabet_are_refused() {
        for bad in ["", "Tanaka", "a:b", "-x", "a b", &"x".repeat(64)] {
            assert_eq!(
                TechnicianIdentity::new("acme-ehr", bad),
                Err(IdentityError::InvalidName(bad.to_owned()))
            );
        }
        assert!(TechnicianIdentity::new("acme-ehr", "tanaka.h_2").is_ok());
    }

    #[test]
    fn a_request_is_checked_without_a_ca() {
        let tanaka = TechnicianIdentity::new("acme-ehr", "tanaka").unwrap();
        let sato = TechnicianIdentity::new("acme-ehr", "sato").unwrap();
        let key = KeyPair::generate().unwrap();
        let pem = certificate_request(&tanaka, &key).unwrap();
        let checked = check_request_pem(&tanaka, &pem).unwrap();
        assert_eq!(checked.public_key_bits(), key.public_key_raw());
        assert!(matches!(
            check_request_pem(&sato, &pem),
            Err(RequestRefusal::OtherIdentity { .. })
        ));
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        assert!(check_request_der(&tanaka, &der).is_ok());
        // The signature is the last field: changing its last byte breaks only the signature.
        *der.last_mut().unwrap() ^= 1;
        assert_eq!(
            check_request_der(&tanaka, &der).err(),
            Some(RequestRefusal::BadSignature)
        );
        assert_eq!(
            check_request_der(&tanaka, b"not DER").err(),
            Some(RequestRefusal::Malformed)
        );
        assert_eq!(
            check_request_pem(&tanaka, "not PEM").err(),
            Some(RequestRefusal::Malformed)
        );
    }

    #[test]
    fn a_client_certificate_longer_than_a_year_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = BrokerPki::load_or_create(dir.path()).unwrap();
        let identity = TechnicianIdentity::new("acme-ehr", "tanaka").unwrap();
        assert!(matches!(
            pki.issue_client_certificate(&identity, MAX_CLIENT_VALIDITY * 2),
            Err(PkiError::ValidityTooLong)
        ));
    }

    #[test]
    fn a_corrupt_ca_key_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        BrokerPki::load_or_create(dir.path()).unwrap();
        std::fs::write(dir.path().join("pki/ca.key"), "not a key").unwrap();
        let err = BrokerPki::load_or_create(dir.path()).err().unwrap();
        assert!(err.to_string().contains("ca.key"), "{err}");
    }
}
