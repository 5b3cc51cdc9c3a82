//! Stable refusal codes.
//!
//! A code never changes meaning once released; new codes get new numbers. A peer that
//! receives a code it does not know keeps it as [`ErrorCode::Unknown`] and still shows the
//! sentence that came with it.

/// Why the broker (or the client) refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The peer speaks a protocol version this side does not.
    UnsupportedVersion,
    /// The peer sent something the protocol does not allow at this point.
    ProtocolViolation,
    /// The client certificate is valid but names no technician this broker knows.
    UnknownIdentity,
    /// The vendor's policy does not allow connections from the client's network address.
    SourceNotAllowed,
    /// The client certificate was revoked (by a reset or an offboarding) or has expired.
    CertificateRevoked,
    /// The technician or their vendor is disabled by the hospital.
    IdentityDisabled,
    /// The connection carries no client certificate: enroll first.
    CertificateMissing,
    /// The target does not exist or this technician may not reach it (deliberately the same).
    TargetRefused,
    /// The target's address is of a kind that is never dialled (loopback, link-local, …).
    TargetAddressForbidden,
    /// The target is allowed, but the broker could not reach it.
    TargetUnreachable,
    /// Too many forwards are open on this session.
    TooManyForwards,
    /// A forward or an `Open` came at the wrong time: no session is open on this connection,
    /// or one already is.
    NoSession,
    /// No such request for this technician (another technician's request is not found either).
    RequestNotFound,
    /// The request is not approved (still pending, denied, expired or over).
    RequestNotOpenable,
    /// The one-time password is wrong, or was already used.
    OtpRejected,
    /// Too many wrong one-time passwords: the technician is locked until an admin unlocks them.
    TechnicianLocked,
    /// Resuming a session after a lost connection needs a new one-time password (the client
    /// asked without one); no attempt was counted.
    OtpRequired,
    /// The hospital has stopped all remote access.
    Lockdown,
    /// The vendor's policy does not allow this (hours, duration, targets).
    PolicyRefused,
    /// The request is malformed (no targets, no purpose, a zero duration …).
    InvalidRequest,
    /// Too many at once: connections of one technician, or requests in a minute.
    RateLimited,
    /// The enrollment token is unknown, used, expired or replaced.
    EnrollmentTokenRefused,
    /// The certificate request is malformed, badly signed, or names someone else.
    CertificateRequestRefused,
    /// The broker failed in a way that is not the peer's fault.
    Internal,
    /// The broker cannot record what would happen, so it does not let it happen.
    StoreUnavailable,
    /// A code this side does not know (from a newer peer).
    Unknown(u16),
}

impl ErrorCode {
    /// The number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::UnsupportedVersion => 1,
            ErrorCode::ProtocolViolation => 2,
            ErrorCode::UnknownIdentity => 3,
            ErrorCode::SourceNotAllowed => 4,
            ErrorCode::CertificateRevoked => 5,
            ErrorCode::IdentityDisabled => 6,
            ErrorCode::CertificateMissing => 7,
            ErrorCode::TargetRefused => 10,
            ErrorCode::TargetAddressForbidden => 11,
            ErrorCode::TargetUnreachable => 12,
            ErrorCode::TooManyForwards => 13,
            ErrorCode::NoSession => 14,
            ErrorCode::RequestNotFound => 20,
            ErrorCode::RequestNotOpenable => 21,
            ErrorCode::OtpRejected => 22,
            ErrorCode::TechnicianLocked => 23,
            ErrorCode::Lockdown => 24,
            ErrorCode::PolicyRefused => 25,
            ErrorCode::InvalidRequest => 26,
            ErrorCode::RateLimited => 27,
            ErrorCode::OtpRequired => 28,
            ErrorCode::EnrollmentTokenRefused => 30,
            ErrorCode::CertificateRequestRefused => 31,
            ErrorCode::StoreUnavailable => 51,
            ErrorCode::Internal => 50,
            ErrorCode::Unknown(code) => code,
        }
    }

    /// The code for a number read from the wire.
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            1 => ErrorCode::UnsupportedVersion,
            2 => ErrorCode::ProtocolViolation,
            3 => ErrorCode::UnknownIdentity,
            4 => ErrorCode::SourceNotAllowed,
            5 => ErrorCode::CertificateRevoked,
            6 => ErrorCode::IdentityDisabled,
            7 => ErrorCode::CertificateMissing,
            10 => ErrorCode::TargetRefused,
            11 => ErrorCode::TargetAddressForbidden,
            12 => ErrorCode::TargetUnreachable,
            13 => ErrorCode::TooManyForwards,
            14 => ErrorCode::NoSession,
            20 => ErrorCode::RequestNotFound,
            21 => ErrorCode::RequestNotOpenable,
            22 => ErrorCode::OtpRejected,
            23 => ErrorCode::TechnicianLocked,
            24 => ErrorCode::Lockdown,
            25 => ErrorCode::PolicyRefused,
            26 => ErrorCode::InvalidRequest,
            27 => ErrorCode::RateLimited,
            28 => ErrorCode::OtpRequired,
            30 => ErrorCode::EnrollmentTokenRefused,
            31 => ErrorCode::CertificateRequestRefused,
            50 => ErrorCode::Internal,
            51 => ErrorCode::StoreUnavailable,
            other => ErrorCode::Unknown(other),
        }
    }

    /// A short stable name for logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported-version",
            ErrorCode::ProtocolViolation => "protocol-violation",
            ErrorCode::UnknownIdentity => "unknown-identity",
            ErrorCode::SourceNotAllowed => "source-not-allowed",
            ErrorCode::CertificateRevoked => "certificate-revoked",
            ErrorCode::IdentityDisabled => "identity-disabled",
            ErrorCode::CertificateMissing => "certificate-missing",
            ErrorCode::TargetRefused => "target-refused",
            ErrorCode::TargetAddressForbidden => "target-address-forbidden",
            ErrorCode::TargetUnreachable => "target-unreachable",
            ErrorCode::TooManyForwards => "too-many-forwards",
            ErrorCode::NoSession => "no-session",
            ErrorCode::RequestNotFound => "request-not-found",
            ErrorCode::RequestNotOpenable => "request-not-openable",
            ErrorCode::OtpRejected => "otp-rejected",
            ErrorCode::TechnicianLocked => "technician-locked",
            ErrorCode::OtpRequired => "otp-required",
            ErrorCode::Lockdown => "lockdown",
            ErrorCode::PolicyRefused => "policy-refused",
            ErrorCode::InvalidRequest => "invalid-request",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::EnrollmentTokenRefused => "enrollment-token-refused",
            ErrorCode::CertificateRequestRefused => "certificate-request-refused",
            ErrorCode::StoreUnavailable => "store-unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown(_) => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_survives_a_round_trip_through_its_number() {
        for number in 0..=u16::MAX {
            assert_eq!(ErrorCode::from_u16(number).to_u16(), number);
        }
    }
}
