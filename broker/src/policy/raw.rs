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
    pub(super) defaults: Option<RawDefaults>,
    pub(super) staff: Option<RawStaff>,
    #[serde(default)]
    pub(super) responsibility: Vec<RawResponsibility>,
}

/// `[staff]` of `hospital.toml`: how the hospital's own people share their duties.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStaff {
    pub(super) lockdown_lift_admins: Option<Spanned<i64>>,
    pub(super) allow_combined_roles: Option<Spanned<bool>>,
    pub(super) combined_roles_reason: Option<Spanned<String>>,
}

/// `[defaults]` of `hospital.toml`: the limits every vendor gets unless its file says more.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) max_session: Option<Spanned<String>>,
    pub(super) answer_within: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) warnings: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) review_within: Option<Spanned<String>>,
    pub(super) otp_lockout_after: Option<Spanned<i64>>,
    pub(super) staff_lockout: Option<Spanned<String>>,
    pub(super) require_approval_comment: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHospital {
    pub(super) name: Spanned<String>,
    pub(super) timezone: Spanned<String>,
    pub(super) emergency_contact: Option<Spanned<String>>,
    /// Moved to `[defaults]`; kept here only to say so.
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
    pub(super) contract: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) subcontractors: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) allow_loopback: bool,
    #[serde(default)]
    pub(super) allow_file_share: bool,
    pub(super) allow_broker_port: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) critical: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    pub(super) hours: Option<Spanned<String>>,
    pub(super) max_session: Option<Spanned<String>>,
    pub(super) approvals: Option<Spanned<i64>>,
    pub(super) critical_approvals: Option<Spanned<i64>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) resume: Option<bool>,
    pub(super) resume_without_code_within: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) holidays: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) source_networks: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponsibility {
    pub(super) item: Spanned<String>,
    pub(super) owner: Spanned<String>,
    pub(super) note: Option<String>,
    /// Hospital file only: every vendor file must state this item itself.
    pub(super) required: Option<Spanned<bool>>,
}
