//! Secrets: a wrapper that never prints, and sealing of secrets stored in the database.
//!
//! TOTP secrets are stored sealed (ChaCha20-Poly1305) with a key kept in its own file of the
//! data directory (`secret.key`, mode 0600), so a copy of the database alone does not reveal
//! them. Each sealed value is bound to the row it belongs to (the additional data names the
//! technician), so a sealed secret copied to another technician's row does not open.

use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::pki::PkiError;

/// A value that must not be logged. `Debug` prints `Secret(..)`; the value is reached only
/// through [`Secret::expose_secret`], which is easy to find in review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The secret value itself.
    pub fn expose_secret(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), SealError> {
    SystemRandom::new().fill(buf).map_err(|_| SealError::Random)
}

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The operating system gave no random bytes.
    #[error("the system's random number generator failed")]
    Random,
    /// The sealed value is not valid for this key and row (tampered, moved, or another key).
    #[error(
        "a sealed secret does not open with this broker's secret key (was the database copied from another broker, or secret.key replaced?)"
    )]
    Unsealable,
}

/// The key that seals secrets at rest.
pub struct SealingKey {
    key: LessSafeKey,
}

impl SealingKey {
    /// Loads `DATA_DIR/secret.key`, creating it (32 random bytes, mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<SealingKey, PkiError> {
        let path = data_dir.join("secret.key");
        let bytes = if path.exists() {
            std::fs::read(&path).map_err(|source| PkiError::Io {
                path: path.clone(),
                source,
            })?
        } else {
            crate::pki::files::create_private_dir(data_dir)?;
            let mut bytes = vec![0u8; 32];
            random_bytes(&mut bytes).map_err(|e| PkiError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            crate::pki::files::write_private(&path, &bytes)?;
            bytes
        };
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| PkiError::Corrupt {
                path: path.clone(),
                reason: "not a 32-byte key".into(),
            })?;
        Ok(SealingKey {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Seals `plaintext` for the row named by `binding`; returns hex text for the database.
    pub fn seal(&self, binding: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = crate::encoding::hex(&nonce);
        out.push_str(&crate::encoding::hex(&sealed));
        Ok(out)
    }

    /// Opens a value sealed by [`seal`](SealingKey::seal) for the same `binding`.
    pub fn open(&self, binding: &str, sealed_hex: &str) -> Result<Secret<Vec<u8>>, SealError> {
        let bytes = unhex(sealed_hex).ok_or(SealError::Unsealable)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Unsealable);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Unsealable)?;
        let mut sealed = sealed.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(binding.as_bytes()), &mut sealed)
            .map_err(|_| SealError::Unsealable)?;
        Ok(Secret::new(plaintext.to_vec()))
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_row_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealingKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal("acme-ehr/tanaka", b"secret bytes").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(
            key.open("acme-ehr/tanaka", &sealed)
                .unwrap()
                .expose_secret(),
            b"secret bytes"
        );
        assert_eq!(
            key.open("acme-ehr/sato", &sealed).err(),
            Some(SealError::Unsealable)
        );
        let other_dir = tempfile::tempdir().unwrap();
        let other = SealingKey::load_or_create(other_dir.path()).unwrap();
        assert_eq!(
            other.open("acme-ehr/tanaka", &sealed).err(),
            Some(SealError::Unsealable)
        );
        // The same key file is found again on the next start.
        let again = SealingKey::load_or_create(dir.path()).unwrap();
        assert!(again.open("acme-ehr/tanaka", &sealed).is_ok());
    }

    #[test]
    fn a_secret_never_prints() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(..)");
    }
}
