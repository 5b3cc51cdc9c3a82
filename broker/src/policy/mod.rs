//! Policy files: the agreed boundary between the hospital and each vendor, parsed, checked
//! and evaluated (DESIGN.md §8).
//!
//! [`PolicySet::load`] reads `DIR/hospital.toml` and every `DIR/vendors/*.toml`, parses each
//! file into raw serde shapes (`raw`, all `deny_unknown_fields`, semantic fields wrapped in
//! [`toml::Spanned`]) and then resolves them into the checked types below. A type such as
//! [`Target`] or [`Access`] only exists once everything in it has been checked, so the rest of
//! the broker never re-validates. Every problem in every file is reported at once as a
//! [`PolicyErrors`], each located by file and line, and a [`PolicySet`] exists only when
//! there are none: the broker never starts half-configured.
//!
//! The evaluation helpers ([`WeeklyHours::contains`], [`IpNetwork::contains`],
//! [`check_dial_address`]) are pure functions of their arguments.
//!
//! # What this module never does
//!
//! - No I/O beyond reading the policy files inside [`PolicySet::load`]. Nothing is written,
//!   watched or reloaded here.
//! - No DNS. Target hosts that are names stay names; the caller resolves them when a request
//!   is approved and passes each address it would dial to [`check_dial_address`]. Only IP
//!   literals are judged at load time.
//! - No clock. Callers pass the weekday and minute of day, already converted to the hospital
//!   timezone; this module only checks that the timezone name looks like one.
//!
//! # Layout
//!
//! - `raw`: the serde shapes of the two file kinds.
//! - `load`: the directory walk and the raw → resolved step, collecting every error.
//! - `error`: [`PolicyError`] / [`PolicyErrors`] and byte-offset → line conversion.
//! - `address`: `host:port` parsing and [`check_dial_address`].
//! - `hours`: [`WeeklyHours`].
//! - `network`: [`IpNetwork`] (CIDR).
//! - `duration`: `"1h30m"`-style durations.

mod address;
mod duration;
mod error;
mod hours;
mod load;
mod network;
mod raw;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use address::{AddressRefusal, check_dial_address};
pub use error::{PolicyError, PolicyErrors};
pub use hours::{ParseHoursError, WeeklyHours};
pub use network::{IpNetwork, ParseIpNetworkError};

/// Every policy file of one directory, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySet {
    hospital: HospitalPolicy,
    /// In load order (file name order), ids unique.
    vendors: Vec<VendorPolicy>,
    files: Vec<PathBuf>,
}

impl PolicySet {
    /// Loads and checks `dir/hospital.toml` and every `dir/vendors/*.toml`; returns ALL
    /// problems found, not just the first.
    ///
    /// Files in `vendors/` whose name does not end in `.toml`, hidden files and
    /// subdirectories are skipped with a warning (editor backups and READMEs live there).
    pub fn load(dir: &Path) -> Result<PolicySet, PolicyErrors> {
        load::load(dir)
    }

    pub fn hospital(&self) -> &HospitalPolicy {
        &self.hospital
    }

    pub fn vendor(&self, id: &str) -> Option<&VendorPolicy> {
        self.vendors.iter().find(|vendor| vendor.id == id)
    }

    /// Vendors in load order (their file names, sorted).
    pub fn vendors(&self) -> impl Iterator<Item = &VendorPolicy> {
        self.vendors.iter()
    }

    /// The files that were loaded, in load order (for logs).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// `hospital.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HospitalPolicy {
    pub name: String,
    /// An IANA name such as `Asia/Tokyo`; only its shape is checked here.
    pub timezone: String,
    pub emergency_contact: Option<String>,
    /// How long after its end a session may wait for an auditor's review before it is
    /// overdue (`review_within`, default 3 days).
    pub review_within: Duration,
    /// The default responsibility items, shared by every vendor.
    pub responsibility: Vec<Responsibility>,
}

/// One `vendors/<id>.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPolicy {
    /// Equal to the file stem.
    pub id: String,
    pub name: String,
    pub emergency_contact: Option<String>,
    /// Names unique within the vendor.
    pub targets: Vec<Target>,
    pub access: Access,
    /// Items specific to this vendor, in addition to the hospital's.
    pub responsibility: Vec<Responsibility>,
    /// The file this policy was loaded from.
    pub file: PathBuf,
}

impl VendorPolicy {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|target| target.name == name)
    }
}

/// A host and port a vendor may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// A DNS name, or an IP literal (IPv6 without brackets).
    pub host: String,
    /// Never 0.
    pub port: u16,
    pub description: Option<String>,
    /// Permits loopback, link-local, unspecified, multicast and broadcast addresses (demos and
    /// tests). See [`check_dial_address`].
    pub allow_loopback: bool,
}

impl Target {
    /// `host:port`, with an IPv6 host in brackets.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The host as an IP address when the policy gives a literal rather than a name
    /// (no DNS lookup is needed for those).
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// When, for how long and from where a vendor may connect, and how many approvals it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `None` means any time.
    pub hours: Option<WeeklyHours>,
    /// More than zero and at most 24 hours.
    pub max_session: Duration,
    /// From 1 to 5.
    pub approvals: u8,
    /// Empty means any source address.
    pub source_networks: Vec<IpNetwork>,
}

impl Default for Access {
    /// What a vendor file without an `[access]` table gets.
    fn default() -> Self {
        Access {
            hours: None,
            max_session: duration::DEFAULT_MAX_SESSION,
            approvals: 1,
            source_networks: Vec::new(),
        }
    }
}

/// One row of the responsibility matrix: who looks after `item`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responsibility {
    pub item: String,
    pub owner: Owner,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Hospital,
    Vendor,
    Shared,
}

impl fmt::Display for Owner {
    /// The policy-file spelling: `hospital`, `vendor` or `shared`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Owner::Hospital => "hospital",
            Owner::Vendor => "vendor",
            Owner::Shared => "shared",
        })
    }
}
