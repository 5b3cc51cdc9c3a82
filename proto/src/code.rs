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
    /// The target does not exist or this technician may not reach it (deliberately the same).
    TargetRefused,
    /// The target's address is of a kind that is never dialled (loopback, link-local, …).
    TargetAddressForbidden,
    /// The target is allowed, but the broker could not reach it.
    TargetUnreachable,
    /// Too many forwards are open on this session.
    TooManyForwards,
    /// The broker failed in a way that is not the peer's fault.
    Internal,
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
            ErrorCode::TargetRefused => 10,
            ErrorCode::TargetAddressForbidden => 11,
            ErrorCode::TargetUnreachable => 12,
            ErrorCode::TooManyForwards => 13,
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
            10 => ErrorCode::TargetRefused,
            11 => ErrorCode::TargetAddressForbidden,
            12 => ErrorCode::TargetUnreachable,
            13 => ErrorCode::TooManyForwards,
            50 => ErrorCode::Internal,
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
            ErrorCode::TargetRefused => "target-refused",
            ErrorCode::TargetAddressForbidden => "target-address-forbidden",
            ErrorCode::TargetUnreachable => "target-unreachable",
            ErrorCode::TooManyForwards => "too-many-forwards",
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
