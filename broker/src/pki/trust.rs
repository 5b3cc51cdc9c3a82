//! Trust for the TLS clients the broker runs towards the hospital's own services (the
//! approvers' webhook, the syslog collector): a CA file an admin gives, or the host's trust
//! store. Checking against these roots is rustls's job; this module only reads them.
//!
//! It never trusts anything on its own: callers add the broker's CA themselves, and decide
//! whether the system's roots apply.

use std::path::Path;

use rustls_pki_types::CertificateDer;

/// The certificates of a PEM CA file, as roots; what is wrong with the file, otherwise, as
/// the end of a sentence the caller starts with its option and path ("cannot read it (…)",
/// "holds no PEM certificate").
pub(crate) fn read_ca_file(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls_pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read it ({e})"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| format!("holds a certificate that is not usable as a CA ({e})"))?;
    }
    Ok(roots)
}

/// The host's trust store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or the distribution's bundle),
/// for `user` (named in warnings). Certificates that do not parse are skipped; an empty
/// store leaves only the broker's CA, which is said at start.
pub(crate) fn system_roots(user: &str, ca_option: &str) -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "{user}: a system trust store could not be read");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, skipped) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            skipped,
            "{user}: the system's trust store holds no usable root; only certificates from the broker's CA are trusted (give {ca_option} for the hospital's CA)"
        );
    }
    roots
}
