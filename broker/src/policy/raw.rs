//! The serde shapes of the policy files, before any checking.
//!
//! Every field whose value is checked after parsing is a [`Spanned`], so that the check can
//! name the line. Values are taken as the loosest TOML type that still makes sense (strings,
//! `i64` for `approvals`) so that a bad value gets our message rather than serde's.

use serde::Deserialize;
use toml::Spanned;

/// `hospital.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHospitalFile {
    pub(super) hospital: RawHospital,
    #[serde(default)]
    pub(super) responsibility: Vec<RawResponsibility>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHospital {
    pub(super) name: Spanned<String>,
    pub(super) timezone: Spanned<String>,
    pub(super) emergency_contact: Option<Spanned<String>>,
    pub(super) review_within: Option<Spanned<String>>,
}

/// `vendors/<id>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVendorFile {
    pub(super) vendor: RawVendor,
    #[serde(default)]
    pub(super) target: Vec<RawTarget>,
    pub(super) access: Option<RawAccess>,
    #[serde(default)]
    pub(super) responsibility: Vec<RawResponsibility>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVendor {
    pub(super) id: Spanned<String>,
    pub(super) name: Spanned<String>,
    pub(super) emergency_contact: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) allow_loopback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    pub(super) hours: Option<Spanned<String>>,
    pub(super) max_session: Option<Spanned<String>>,
    pub(super) approvals: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) source_networks: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponsibility {
    pub(super) item: Spanned<String>,
    pub(super) owner: Spanned<String>,
    pub(super) note: Option<String>,
}
