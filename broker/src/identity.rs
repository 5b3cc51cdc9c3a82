//! Who may connect: vendors and technicians as records the hospital controls, one-time
//! enrollment tokens, enrollment itself, and the certificate registry every connection is
//! checked against (DESIGN.md §7).
//!
//! - An admin takes on a vendor that has a policy file ([`add_vendor`]) and adds its
//!   technicians ([`add_technician`]); each addition yields an [`EnrollmentToken`]: 160 random
//!   bits, shown once, stored only as its SHA-256, single use, valid 24 hours by default.
//! - The technician's client presents the token ([`begin_enrollment`]), learns whom it
//!   enrolls, makes a key pair on the laptop and sends a certificate request for exactly that
//!   identity ([`complete_enrollment`]). The broker signs a client certificate for the
//!   request's public key (its own extensions, not the request's), makes a fresh TOTP secret,
//!   and stores both with the spent token in one transaction.
//! - Every connection's certificate must be in the registry, unrevoked, unexpired, with its
//!   technician and vendor enabled ([`admit`]).
//! - [`reset_technician`] revokes a technician's certificates and TOTP secret and issues a
//!   new token; disabling ([`set_technician_enabled`], [`set_vendor_enabled`]) refuses the
//!   next handshake and ends live sessions through the store (the hub sees it within a second).
//!
//! This module never does network I/O (the QUIC endpoint calls it) and never prints a token
//! or a secret: callers show them once to the person they are for.

use std::time::{Duration, SystemTime};

use proto::{EnrollOffer, Enrolled, ErrorCode, ErrorMessage};

use crate::audit::{self, Actor, AuditEvent, EventKind};
use crate::clock::to_unix_secs;
use crate::encoding::{base32_decode, base32_encode, hex};
use crate::otp;
use crate::pki::{self, BrokerPki, TechnicianIdentity};
use crate::policy::PolicySet;
use crate::secret::{SealingKey, Secret, random_bytes};
use crate::store::{
    CertificateRecord, CertificateStanding, EnrollmentRecord, NewTechnician, Store, StoreError,
    TechnicianRow, TokenRow, TokenToStore,
};

/// How long an enrollment token works unless the admin says otherwise.
pub const DEFAULT_TOKEN_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// The longest an enrollment token may work.
pub const MAX_TOKEN_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an enrolled technician's certificate is valid (the most [`pki`] allows).
pub const CLIENT_CERTIFICATE_VALIDITY: Duration = pki::MAX_CLIENT_VALIDITY;

/// Random bytes in a token: 160 bits.
pub const TOKEN_BYTES: usize = 20;

/// A new enrollment token: the text to hand to the technician once, and when it expires.
#[derive(Debug)]
pub struct EnrollmentToken {
    /// `XXXX-XXXX-…`, 32 base32 letters in groups of four.
    pub text: Secret<String>,
    /// When it stops working.
    pub expires_at: SystemTime,
}

impl EnrollmentToken {
    fn generate(
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<(EnrollmentToken, String), IdentityError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        random_bytes(&mut bytes).map_err(|e| IdentityError::Internal(e.to_string()))?;
        let encoded = base32_encode(&bytes);
        let text = encoded
            .as_bytes()
            .chunks(4)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        Ok((
            EnrollmentToken {
                text: Secret::new(text),
                expires_at: now + valid_for,
            },
            token_hash(&bytes),
        ))
    }
}

/// Why an admin's identity command could not be done; each a sentence that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No policy file names the vendor.
    #[error(
        "no policy file names vendor `{0}`; add policies/vendors/{0}.toml (the agreement with the vendor) first"
    )]
    NoPolicy(String),
    /// The vendor was never added.
    #[error("vendor `{0}` has not been added; run `sekisho-broker vendor add {0}` first")]
    VendorNotAdded(String),
    /// The vendor was added before.
    #[error("vendor `{0}` has already been added")]
    VendorExists(String),
    /// The vendor is disabled.
    #[error("vendor `{0}` is disabled; enable it first with `sekisho-broker vendor enable {0}`")]
    VendorDisabled(String),
    /// The technician exists already.
    #[error(
        "technician {0} already exists; to give them a new enrollment token, use `sekisho-broker technician reset`"
    )]
    TechnicianExists(String),
    /// No such technician.
    #[error("there is no technician {0}; see `sekisho-broker technician list`")]
    UnknownTechnician(String),
    /// Nothing to change.
    #[error("{0} is already {1}")]
    AlreadyInState(String, &'static str),
    /// A name outside the identity alphabet.
    #[error(transparent)]
    InvalidName(#[from] pki::IdentityError),
    /// A token validity outside what is allowed.
    #[error("an enrollment token may be valid for at most 7 days (and more than zero)")]
    InvalidValidity,
    /// The database refused.
    #[error("cannot record it: {0}; nothing was changed")]
    Store(StoreError),
    /// Randomness or sealing failed.
    #[error("{0}")]
    Internal(String),
}

/// Takes on a vendor. It must have a policy file.
pub async fn add_vendor(
    store: &Store,
    policies: &PolicySet,
    vendor: &str,
    by: &str,
    now: SystemTime,
) -> Result<(), IdentityError> {
    if policies.vendor(vendor).is_none() {
        return Err(IdentityError::NoPolicy(vendor.to_owned()));
    }
    match store.add_vendor(vendor, by, now).await {
        Ok(()) => Ok(()),
        Err(StoreError::Stale) => Err(IdentityError::VendorExists(vendor.to_owned())),
        Err(e) => Err(IdentityError::Store(e)),
    }
}

/// Enables or disables a vendor; returns how many open requests and sessions were ended.
pub async fn set_vendor_enabled(
    store: &Store,
    vendor: &str,
    enabled: bool,
    reason: &str,
    by: &str,
    now: SystemTime,
) -> Result<u64, IdentityError> {
    match store
        .set_vendor_enabled(vendor, enabled, reason, by, now)
        .await
    {
        Ok(ended) => Ok(ended),
        Err(StoreError::NotFound) => Err(IdentityError::VendorNotAdded(vendor.to_owned())),
        Err(StoreError::Stale) => Err(IdentityError::AlreadyInState(
            format!("vendor `{vendor}`"),
            state_word(enabled),
        )),
        Err(e) => Err(IdentityError::Store(e)),
    }
}

/// Adds a technician of an added, enabled vendor and returns their first enrollment token.
pub async fn add_technician(
    store: &Store,
    policies: &PolicySet,
    new: &NewTechnician<'_>,
    valid_for: Duration,
    by: &str,
    now: SystemTime,
) -> Result<EnrollmentToken, IdentityError> {
    let identity = TechnicianIdentity::new(new.vendor, new.technician)?;
    check_validity(valid_for)?;
    if policies.vendor(new.vendor).is_none() {
        return Err(IdentityError::NoPolicy(new.vendor.to_owned()));
    }
    let (token, hash) = EnrollmentToken::generate(now, valid_for)?;
    let stored = TokenToStore {
        hash: &hash,
        expires_at: token.expires_at,
    };
    match store.add_technician(new, stored, by, now).await {
        Ok(()) => Ok(token),
        Err(StoreError::NotFound) => Err(IdentityError::VendorNotAdded(new.vendor.to_owned())),
        Err(StoreError::Stale) => match store.vendor_row(new.vendor).await {
            Ok(Some(vendor)) if !vendor.enabled => {
                Err(IdentityError::VendorDisabled(new.vendor.to_owned()))
            }
            _ => Err(IdentityError::TechnicianExists(identity.to_string())),
        },
        Err(e) => Err(IdentityError::Store(e)),
    }
}

/// Revokes a technician's certificates and TOTP secret, ends their sessions, and returns a
/// new enrollment token and how many requests were ended.
pub async fn reset_technician(
    store: &Store,
    identity: &TechnicianIdentity,
    valid_for: Duration,
    by: &str,
    now: SystemTime,
) -> Result<(EnrollmentToken, u64), IdentityError> {
    check_validity(valid_for)?;
    let (token, hash) = EnrollmentToken::generate(now, valid_for)?;
    let stored = TokenToStore {
        hash: &hash,
        expires_at: token.expires_at,
    };
    match store
        .reset_technician(identity.vendor(), identity.technician(), stored, by, now)
        .await
    {
        Ok(ended) => Ok((token, ended)),
        Err(StoreError::NotFound) => Err(IdentityError::UnknownTechnician(identity.to_string())),
        Err(e) => Err(IdentityError::Store(e)),
    }
}

/// Enables or disables a technician; returns how many open requests and sessions were ended.
pub async fn set_technician_enabled(
    store: &Store,
    identity: &TechnicianIdentity,
    enabled: bool,
    reason: &str,
    by: &str,
    now: SystemTime,
) -> Result<u64, IdentityError> {
    match store
        .set_technician_enabled(
            identity.vendor(),
            identity.technician(),
            enabled,
            reason,
            by,
            now,
        )
        .await
    {
        Ok(ended) => Ok(ended),
        Err(StoreError::NotFound) => Err(IdentityError::UnknownTechnician(identity.to_string())),
        Err(StoreError::Stale) => Err(IdentityError::AlreadyInState(
            format!("technician {identity}"),
            state_word(enabled),
        )),
        Err(e) => Err(IdentityError::Store(e)),
    }
}

fn state_word(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

fn check_validity(valid_for: Duration) -> Result<(), IdentityError> {
    if valid_for.is_zero() || valid_for > MAX_TOKEN_VALIDITY {
        Err(IdentityError::InvalidValidity)
    } else {
        Ok(())
    }
}

/// An enrollment or a connection refused: the code and sentence for the client, and whom it
/// concerned (when the broker could tell) for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the client is told.
    pub error: ErrorMessage,
    /// The technician it concerned, if known.
    pub identity: Option<TechnicianIdentity>,
}

impl Refusal {
    fn new(
        code: ErrorCode,
        message: impl Into<String>,
        identity: Option<TechnicianIdentity>,
    ) -> Refusal {
        Refusal {
            error: ErrorMessage::new(code, message),
            identity,
        }
    }

    fn store(error: &StoreError) -> Refusal {
        tracing::error!(%error, "the registry cannot be read or written");
        Refusal::new(
            ErrorCode::StoreUnavailable,
            "The broker cannot use its database right now, so it lets nobody in; try again in a few minutes, and tell the hospital's IT if it persists.",
            None,
        )
    }
}

/// A token the broker accepted at the first step of enrollment.
#[derive(Debug, Clone)]
pub struct AcceptedToken {
    hash: String,
    identity: TechnicianIdentity,
    technician: TechnicianRow,
}

impl AcceptedToken {
    /// Whom the token enrolls.
    pub fn identity(&self) -> &TechnicianIdentity {
        &self.identity
    }

    /// What the client is told at the first step.
    pub fn offer(&self, hospital: &str) -> EnrollOffer {
        EnrollOffer {
            vendor: self.identity.vendor().to_owned(),
            technician: self.identity.technician().to_owned(),
            display_name: self.technician.display_name.clone(),
            hospital: hospital.to_owned(),
        }
    }
}

/// Checks an enrollment token without spending it.
pub async fn begin_enrollment(
    store: &Store,
    token_text: &str,
    now: SystemTime,
) -> Result<AcceptedToken, Refusal> {
    let unknown = || {
        Refusal::new(
            ErrorCode::EnrollmentTokenRefused,
            "This enrollment token is not one the broker issued (check it for typos; a token looks like ABCD-EFGH-…); ask the hospital's IT for a new one if it still fails.",
            None,
        )
    };
    let bytes = parse_enrollment_token(token_text).ok_or_else(unknown)?;
    let hash = token_hash(&bytes);
    let token: TokenRow = match store.enrollment_token(&hash).await {
        Ok(Some(token)) => token,
        Ok(None) => return Err(unknown()),
        Err(e) => return Err(Refusal::store(&e)),
    };
    let identity = TechnicianIdentity::new(&token.vendor, &token.technician)
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string(), None))?;
    let refuse = |message: String| {
        Err(Refusal::new(
            ErrorCode::EnrollmentTokenRefused,
            message,
            Some(identity.clone()),
        ))
    };
    if let Some(used_at) = token.used_at {
        return refuse(format!(
            "This enrollment token was already used at {}; each token works once. If that was not you, tell the hospital's IT now.",
            audit::timestamp(used_at)
        ));
    }
    if token.void_at.is_some() {
        return refuse(
            "This enrollment token is no longer valid: the hospital issued a newer one or disabled the account; use the newest token the hospital gave you.".to_owned(),
        );
    }
    if token.expires_at <= now {
        return refuse(format!(
            "This enrollment token expired at {}; ask the hospital's IT for a new one.",
            audit::timestamp(token.expires_at)
        ));
    }
    let technician = match store.technician(&token.vendor, &token.technician).await {
        Ok(Some(row)) => row,
        Ok(None) => return Err(unknown()),
        Err(e) => return Err(Refusal::store(&e)),
    };
    let vendor_enabled = match store.vendor_row(&token.vendor).await {
        Ok(row) => row.is_some_and(|row| row.enabled),
        Err(e) => return Err(Refusal::store(&e)),
    };
    if !technician.enabled || !vendor_enabled {
        return Err(Refusal::new(
            ErrorCode::IdentityDisabled,
            "The hospital has disabled this account; contact the hospital's IT.",
            Some(identity),
        ));
    }
    Ok(AcceptedToken {
        hash,
        identity,
        technician,
    })
}

/// What the broker needs to finish an enrollment.
pub struct EnrollmentContext<'a> {
    /// The database.
    pub store: &'a Store,
    /// Signs the certificate.
    pub pki: &'a BrokerPki,
    /// Seals the new TOTP secret.
    pub sealing_key: &'a SealingKey,
    /// Printed in the authenticator app.
    pub hospital: &'a str,
    /// Who did it, for the audit log (the broker).
    pub actor: Actor,
}

/// Signs the certificate request for the accepted token's technician, makes their TOTP
/// secret, and stores both with the spent token. Nothing is stored if anything fails.
pub async fn complete_enrollment(
    context: &EnrollmentContext<'_>,
    accepted: &AcceptedToken,
    csr_pem: &str,
    now: SystemTime,
) -> Result<Enrolled, Refusal> {
    let identity = &accepted.identity;
    let signed = context
        .pki
        .sign_request(identity, csr_pem, CLIENT_CERTIFICATE_VALIDITY)
        .map_err(|refusal| {
            Refusal::new(
                ErrorCode::CertificateRequestRefused,
                refusal.to_string(),
                Some(identity.clone()),
            )
        })?;
    let internal = |what: &str| {
        Refusal::new(
            ErrorCode::Internal,
            format!(
                "The broker could not {what}; nothing was stored and the token still works. Tell the hospital's IT."
            ),
            Some(identity.clone()),
        )
    };
    let totp_secret = otp::new_secret().map_err(|_| internal("make a one-time-password secret"))?;
    let sealed = context
        .sealing_key
        .seal(&identity.to_string(), totp_secret.expose_secret())
        .map_err(|_| internal("seal the one-time-password secret"))?;
    let otpauth_uri = otp::otpauth_uri(&totp_secret, context.hospital, &identity.to_string())
        .map_err(|_| internal("encode the one-time-password secret"))?;
    let events = [
        AuditEvent::new(now, context.actor.clone(), EventKind::CertificateIssued)
            .technician(identity.vendor(), identity.technician())
            .detail("fingerprint", &signed.record.fingerprint)
            .detail("serial", &signed.record.serial)
            .detail("not_after", audit::timestamp(signed.record.not_after)),
        AuditEvent::new(now, context.actor.clone(), EventKind::TechnicianEnrolled)
            .technician(identity.vendor(), identity.technician())
            .detail("certificate", &signed.record.fingerprint),
    ];
    let record = EnrollmentRecord {
        token_hash: &accepted.hash,
        vendor: identity.vendor(),
        technician: identity.technician(),
        sealed_totp_secret: &sealed,
        certificate: &signed.record,
    };
    match context
        .store
        .complete_enrollment(&record, now, &events)
        .await
    {
        Ok(()) => {}
        Err(StoreError::Stale) => {
            return Err(Refusal::new(
                ErrorCode::EnrollmentTokenRefused,
                "This enrollment token was used, replaced or disabled a moment ago; ask the hospital's IT for a new one.",
                Some(identity.clone()),
            ));
        }
        Err(e) => return Err(Refusal::store(&e)),
    }
    Ok(Enrolled {
        certificate_pem: signed.certificate_pem,
        ca_pem: context.pki.ca_pem().to_owned(),
        otpauth_uri,
        not_after: to_unix_secs(signed.record.not_after),
    })
}

/// Why a registered certificate no longer lets its holder in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandingProblem {
    /// Revoked at this time (a reset or an offboarding).
    Revoked(SystemTime),
    /// Expired at this time.
    Expired(SystemTime),
    /// The vendor (named) is disabled, for this reason.
    VendorDisabled(String, String),
    /// The technician is disabled, for this reason.
    TechnicianDisabled(String),
    /// The certificate is not in the registry (any more).
    Unregistered,
}

impl StandingProblem {
    /// What the technician is told.
    pub fn sentence(&self) -> String {
        match self {
            StandingProblem::Revoked(at) => format!(
                "Your certificate was revoked by the hospital at {}; enroll again with the new token the hospital's IT gives you.",
                audit::timestamp(*at)
            ),
            StandingProblem::Expired(at) => format!(
                "Your certificate expired at {}; ask the hospital's IT to reset your enrollment.",
                audit::timestamp(*at)
            ),
            StandingProblem::VendorDisabled(vendor, _) => format!(
                "The hospital has disabled access for vendor `{vendor}`; contact the hospital's IT."
            ),
            StandingProblem::TechnicianDisabled(_) => {
                "The hospital has disabled your access; contact the hospital's IT.".to_owned()
            }
            StandingProblem::Unregistered => "This certificate is not one this broker issued to a technician (or it was made before enrollment); enroll with the token the hospital's IT gives you.".to_owned(),
        }
    }
}

/// Whether a registered certificate still lets its holder in at `now`: not revoked, not
/// expired, technician and vendor enabled. Checked when a connection is admitted and, for
/// connections already in, every hub round (see [`crate::quic`]'s registry).
pub fn standing_problem(
    standing: &CertificateStanding,
    now: SystemTime,
) -> Option<StandingProblem> {
    if let Some(revoked_at) = standing.revoked_at {
        Some(StandingProblem::Revoked(revoked_at))
    } else if standing.not_after <= now {
        Some(StandingProblem::Expired(standing.not_after))
    } else if !standing.vendor_enabled {
        Some(StandingProblem::VendorDisabled(
            standing.vendor.clone(),
            standing.vendor_disabled_reason.clone(),
        ))
    } else if !standing.technician_enabled {
        Some(StandingProblem::TechnicianDisabled(
            standing.technician_disabled_reason.clone(),
        ))
    } else {
        None
    }
}

/// Lets a connection in only if its certificate is in the registry, unrevoked and
/// unexpired at `now`, and its technician and vendor are enabled; returns whom it names.
pub async fn admit(
    store: &Store,
    certificate_der: &[u8],
    now: SystemTime,
) -> Result<TechnicianIdentity, Refusal> {
    let named = pki::identity_from_certificate(certificate_der).ok();
    let fingerprint = pki::fingerprint(certificate_der);
    let standing = match store.certificate_standing(&fingerprint).await {
        Ok(Some(standing)) => standing,
        Ok(None) => {
            return Err(Refusal::new(
                ErrorCode::UnknownIdentity,
                "This certificate is not one this broker issued to a technician (or it was made before enrollment); enroll with the token the hospital's IT gives you.",
                named,
            ));
        }
        Err(e) => return Err(Refusal::store(&e)),
    };
    let identity = TechnicianIdentity::new(&standing.vendor, &standing.technician)
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string(), None))?;
    if named.as_ref() != Some(&identity) {
        // The registry and the certificate disagree: the certificate was not ours as stored.
        return Err(Refusal::new(
            ErrorCode::UnknownIdentity,
            "This certificate does not match the broker's records; enroll again with a token from the hospital's IT.",
            named,
        ));
    }
    match standing_problem(&standing, now) {
        None => {}
        Some(problem @ (StandingProblem::Revoked(_) | StandingProblem::Expired(_))) => {
            return Err(Refusal::new(
                ErrorCode::CertificateRevoked,
                problem.sentence(),
                Some(identity),
            ));
        }
        Some(problem) => {
            return Err(Refusal::new(
                ErrorCode::IdentityDisabled,
                problem.sentence(),
                Some(identity),
            ));
        }
    }
    Ok(identity)
}

/// The 20 token bytes from what a person typed: base32 letters, case and dashes and spaces
/// ignored; `None` if it cannot be a token.
///
/// This is the first thing the broker does with an [`proto::EnrollStart`] from an
/// unauthenticated peer, before any lookup ([`begin_enrollment`]); it is public for the
/// `enroll_input` fuzz target. The bytes are what the peer sent, not a secret of the broker's.
pub fn parse_enrollment_token(text: &str) -> Option<[u8; TOKEN_BYTES]> {
    let letters: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b'-' | b' ' | b'\t' | b'\n' | b'\r'))
        .map(|b| b.to_ascii_uppercase())
        .collect();
    let decoded = base32_decode(&letters)?;
    decoded.try_into().ok()
}

/// SHA-256 of the token's bytes, lowercase hex: what the database keeps.
fn token_hash(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The record of a certificate issued outside enrollment, for [`Store::register_certificate`].
pub fn certificate_record(certificate_pem: &str) -> Option<CertificateRecord> {
    pki::certificate_record_from_pem(certificate_pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_whatever_the_case_and_dashes() {
        let (token, hash) =
            EnrollmentToken::generate(SystemTime::UNIX_EPOCH, DEFAULT_TOKEN_VALIDITY).unwrap();
        let text = token.text.expose_secret().clone();
        assert_eq!(text.len(), 32 + 7, "{text}");
        let bytes = parse_enrollment_token(&text).unwrap();
        assert_eq!(token_hash(&bytes), hash);
        let typed = text.to_ascii_lowercase().replace('-', " ");
        assert_eq!(parse_enrollment_token(&typed), Some(bytes));
    }

    #[test]
    fn tokens_differ_and_carry_160_bits() {
        let (a, _) =
            EnrollmentToken::generate(SystemTime::UNIX_EPOCH, DEFAULT_TOKEN_VALIDITY).unwrap();
        let (b, _) =
            EnrollmentToken::generate(SystemTime::UNIX_EPOCH, DEFAULT_TOKEN_VALIDITY).unwrap();
        assert_ne!(a.text.expose_secret(), b.text.expose_secret());
        assert_eq!(
            parse_enrollment_token(a.text.expose_secret()).map(|b| b.len()),
            Some(20)
        );
    }

    #[test]
    fn a_changed_or_cut_token_is_not_a_token() {
        let (token, hash) =
            EnrollmentToken::generate(SystemTime::UNIX_EPOCH, DEFAULT_TOKEN_VALIDITY).unwrap();
        let text = token.text.expose_secret();
        assert_eq!(parse_enrollment_token(&text[..text.len() - 1]), None);
        assert_eq!(parse_enrollment_token(&format!("{text}A")), None);
        assert_eq!(parse_enrollment_token("0000-1111"), None);
        let mut flipped: Vec<char> = text.chars().collect();
        flipped[0] = if flipped[0] == 'A' { 'B' } else { 'A' };
        let flipped: String = flipped.into_iter().collect();
        let other = parse_enrollment_token(&flipped).map(|bytes| token_hash(&bytes));
        assert_ne!(other, Some(hash));
    }
}
