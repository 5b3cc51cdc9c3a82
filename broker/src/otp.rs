//! One-time passwords (RFC 6238 TOTP: SHA-1, 6 digits, 30-second steps, ±1 step of skew).
//!
//! This module only computes: which step a code matches at a given time. Remembering used
//! steps (a code is accepted once, and no earlier step after it) and counting failures are
//! the store's conditional updates; see [`crate::store::Store::open_with_code`].

use std::time::{SystemTime, UNIX_EPOCH};

use totp_rs::{Builder, Totp};

use crate::secret::{SealError, Secret, random_bytes};

/// Bytes of a technician's TOTP secret (160 bits, as RFC 4226 recommends).
pub const SECRET_LEN: usize = 20;

/// Why a TOTP could not be set up from a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the TOTP secret is not usable ({0})")]
pub struct OtpError(String);

/// A new random secret.
pub fn new_secret() -> Result<Secret<Vec<u8>>, SealError> {
    let mut secret = vec![0u8; SECRET_LEN];
    random_bytes(&mut secret)?;
    Ok(Secret::new(secret))
}

fn totp(secret: &Secret<Vec<u8>>, issuer: Option<&str>, account: &str) -> Result<Totp, OtpError> {
    Builder::new()
        .with_secret(secret.expose_secret().clone())
        .with_skew(1)
        .with_step_duration(30)
        .with_digits(6)
        .with_account_name(account.replace(':', "-"))
        .with_issuer(issuer.map(|issuer| issuer.replace(':', "-")))
        .build()
        .map_err(|e| OtpError(e.to_string()))
}

/// The step a code matches at `now` (±1 step), compared in constant time, or `None`.
pub fn matching_step(
    secret: &Secret<Vec<u8>>,
    code: &str,
    now: SystemTime,
) -> Result<Option<i64>, OtpError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let seconds = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(totp(secret, None, "sekisho")?
        .check(&code, seconds)
        .map(|step| i64::try_from(step).unwrap_or(i64::MAX)))
}

/// The code for `time` (for the technician's side in tests and tools).
pub fn code_at(secret: &Secret<Vec<u8>>, time: SystemTime) -> Result<String, OtpError> {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(totp(secret, None, "sekisho")?.generate(seconds).to_string())
}

/// The `otpauth://` URI an authenticator app imports.
pub fn otpauth_uri(
    secret: &Secret<Vec<u8>>,
    hospital: &str,
    account: &str,
) -> Result<String, OtpError> {
    totp(secret, Some(&format!("sekisho {hospital}")), account)?
        .to_url()
        .map_err(|e| OtpError(e.to_string()))
}

/// The secret in an `otpauth://totp/…?secret=BASE32&…` URI, as an authenticator app reads
/// it (for tools and tests that play the technician's phone).
pub fn secret_from_uri(uri: &str) -> Option<Secret<Vec<u8>>> {
    let query = uri.strip_prefix("otpauth://totp/")?.split_once('?')?.1;
    let encoded = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))?;
    let letters: Vec<u8> = encoded
        .bytes()
        .filter(|b| *b != b'=')
        .map(|b| b.to_ascii_uppercase())
        .collect();
    crate::encoding::base32_decode(&letters).map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn the_rfc_6238_sha1_vector_matches() {
        // RFC 6238 appendix B: secret "12345678901234567890", T = 59 s -> 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = Secret::new(b"12345678901234567890".to_vec());
        assert_eq!(code_at(&secret, at(59)).unwrap(), "287082");
        assert_eq!(matching_step(&secret, "287082", at(59)).unwrap(), Some(1));
    }

    #[test]
    fn one_step_of_skew_is_accepted_and_two_are_not() {
        let secret = new_secret().unwrap();
        let now = at(1_800_000_000);
        let step = 1_800_000_000 / 30;
        let code = code_at(&secret, now).unwrap();
        assert_eq!(
            matching_step(&secret, &code, now + Duration::from_secs(30)).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, now - Duration::from_secs(30)).unwrap(),
            Some(step)
        );
        assert_eq!(
            matching_step(&secret, &code, now + Duration::from_secs(60)).unwrap(),
            None
        );
        assert_eq!(matching_step(&secret, "000000x", now).unwrap(), None);
    }

    #[test]
    fn the_uri_names_the_hospital_and_the_technician() {
        let secret = new_secret().unwrap();
        let uri = otpauth_uri(&secret, "Demo General Hospital", "acme-ehr/tanaka").unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains("tanaka"), "{uri}");
        assert!(uri.contains("secret="), "{uri}");
        let read_back = secret_from_uri(&uri).unwrap();
        assert_eq!(read_back.expose_secret(), secret.expose_secret());
    }
}
