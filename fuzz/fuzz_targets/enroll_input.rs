//! What an enrolling peer sends before it has any certificate: the enrollment token
//! (`EnrollStart`) and the certificate request (`EnrollCsr`), through the checks the broker
//! makes before it looks anything up or signs anything.
//!
//! Every input is tried three ways: as token text and as a PEM certificate request (when it is
//! UTF-8), and as a DER certificate request. The token enrolls `acme-ehr/tanaka`.
//!
//! A request whose bytes were mutated almost never carries a valid signature, so the checks
//! after the signature would rarely run. An input `sign:URI[\nURI…]` therefore has the harness
//! build and sign a request naming those URIs (with one key made at start), so the fuzzer
//! explores which names get through.
//!
//! Checked, beyond "never panics": a token read is exactly the base32 of its bytes (nothing
//! else in the text counted), and reads the same in its printed form; a signed request is
//! accepted only if it names the token's technician, and then for the key that signed it.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rcgen::{CertificateParams, KeyPair, SanType};
use sekisho_broker::encoding::base32_encode;
use sekisho_broker::identity::parse_enrollment_token;
use sekisho_broker::pki::{TechnicianIdentity, check_request_der, check_request_pem};

const IDENTITY_URI: &str = "urn:sekisho:technician:acme-ehr:tanaka";

fn identity() -> &'static TechnicianIdentity {
    static IDENTITY: OnceLock<TechnicianIdentity> = OnceLock::new();
    IDENTITY
        .get_or_init(|| TechnicianIdentity::new("acme-ehr", "tanaka").expect("a valid identity"))
}

/// One Ed25519 key for every request the harness signs: fast, and enough to reach the checks.
fn signing_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_token(text);
        if let Ok(checked) = check_request_pem(identity(), text) {
            assert!(!checked.public_key_bits().is_empty());
        }
    }
    if let Ok(checked) = check_request_der(identity(), data) {
        assert!(!checked.public_key_bits().is_empty());
    }
    if let Some(uris) = data.strip_prefix(b"sign:") {
        check_signed_request(uris);
    }
});

fn check_token(text: &str) {
    let Some(bytes) = parse_enrollment_token(text) else {
        return;
    };
    let letters: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\t' | '\n' | '\r'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let encoded = base32_encode(&bytes);
    assert_eq!(
        letters, encoded,
        "the token read is not what the text spells"
    );
    // The printed form, `XXXX-XXXX-…`, reads back to the same bytes.
    let printed = encoded
        .as_bytes()
        .chunks(4)
        .map(|chunk| std::str::from_utf8(chunk).expect("base32 is ASCII"))
        .collect::<Vec<_>>()
        .join("-");
    assert_eq!(parse_enrollment_token(&printed), Some(bytes));
}

fn check_signed_request(uris: &[u8]) {
    let Ok(uris) = std::str::from_utf8(uris) else {
        return;
    };
    let uris: Vec<&str> = uris.split('\n').collect();
    let mut params = CertificateParams::default();
    for uri in &uris {
        let Ok(uri) = (*uri).to_owned().try_into() else {
            return; // Not an IA5String: rcgen cannot put it in a request.
        };
        params.subject_alt_names.push(SanType::URI(uri));
    }
    let key = signing_key();
    let Ok(request) = params.serialize_request(key) else {
        return;
    };
    let result = check_request_der(identity(), request.der());
    if let Ok(checked) = &result {
        assert!(
            uris.contains(&IDENTITY_URI),
            "a request naming {uris:?} was accepted for {IDENTITY_URI}"
        );
        assert_eq!(checked.public_key_bits(), key.public_key_raw());
    }
    if uris == [IDENTITY_URI] {
        assert!(result.is_ok(), "the right request was refused: {result:?}");
    }
}
