//! Policy files: the agreed boundary between the hospital and each vendor, parsed, checked
//! and evaluated (DESIGN.md §8).
//!
//! [`PolicySet::load`] reads `DIR/hospital.toml` and every `DIR/vendors/*.toml`
//! ([`PolicySet::from_texts`] takes the same texts from memory), parses each file into raw
//! serde shapes (`raw`, all `deny_unknown_fields`, semantic fields wrapped in
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
//! - `address`: `host:port` parsing ([`parse_target_address`]) and [`check_dial_address`].
//! - `hours`: [`WeeklyHours`].
//! - `network`: [`IpNetwork`] (CIDR).
//! - `duration`: `"1h30m"`-style durations.
//! - `render`: the agreement written back as a bilingual document (Markdown, HTML).

mod address;
mod duration;
mod error;
mod hours;
mod load;
mod network;
mod raw;
pub mod render;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use address::{AddressRefusal, ForbiddenClass, Ipv4Embedding, check_dial_address};
pub use error::{PolicyError, PolicyErrors};
pub use hours::{ParseHoursError, WeeklyHours};
pub use network::{IpNetwork, ParseIpNetworkError};

/// Parses a target's `host:port` as a policy file's `address` is parsed: `name:port`,
/// `a.b.c.d:port` or `[v6]:port`. Gives the host (an IPv6 literal without brackets), the port
/// (never 0) and the host as an IP address when it is a literal; or why the text is not an
/// address, as a sentence fragment to follow `address "…"`.
///
/// The loader does this for every target; this entry point exists for the `target_address`
/// fuzz target and for tools that check an address before writing it into a file.
pub fn parse_target_address(text: &str) -> Result<(String, u16, Option<IpAddr>), String> {
    address::parse_host_port(text).map(|parsed| (parsed.host, parsed.port, parsed.ip))
}

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

    /// Checks policies held in memory exactly as [`load`](PolicySet::load) checks a
    /// directory: `hospital` is the text of `hospital.toml`, and each of `vendors` is a vendor
    /// file's name in `vendors/` (`acme-ehr.toml`; its stem must be the vendor's id) and its
    /// text. Errors and [`files`](PolicySet::files) name `hospital.toml` and `vendors/NAME`;
    /// a name that is not a visible `*.toml` file name, or is given twice, is an error.
    ///
    /// For tools that do not keep policies in a directory, and for the `policy_load` fuzz
    /// target, which feeds the loader arbitrary text without touching the disk.
    pub fn from_texts(hospital: &str, vendors: &[(&str, &str)]) -> Result<PolicySet, PolicyErrors> {
        load::from_texts(hospital, vendors)
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
    /// Who a vendor calls at the hospital when something goes wrong during maintenance.
    pub emergency_contact: Option<String>,
    /// How long after its end a session may wait for an auditor's review before it is
    /// overdue (`[defaults] review_within`, default 3 days).
    pub review_within: Duration,
    /// The limits every vendor gets unless its own file says otherwise (`[defaults]`).
    pub defaults: Defaults,
    /// The default responsibility items, shared by every vendor.
    pub responsibility: Vec<Responsibility>,
    /// How the hospital's staff share their duties (`[staff]`).
    pub staff: StaffRules,
}

/// `[staff]` of `hospital.toml`: separation of duties among the hospital's own people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffRules {
    /// How many different admins must lift a lockdown (`lockdown_lift_admins`, 1 or 2;
    /// default 1). With 2, the first admin's lift is pending until a second confirms it.
    pub lockdown_lift_admins: u8,
    /// Why one account may hold auditor together with approver or admin
    /// (`allow_combined_roles = true` with `combined_roles_reason`); `None`, the default,
    /// refuses such accounts: whoever approves or administers must not also audit it.
    pub combined_roles: Option<String>,
}

/// The `[staff]` rules as the `policy-loaded` event records them: `refused` (auditor never
/// with approver or admin), or `allowed: REASON`; then the admins a lockdown lift takes.
pub fn staff_rules_record(rules: &StaffRules) -> String {
    let combined = match &rules.combined_roles {
        None => "refused".to_owned(),
        Some(reason) => format!("allowed: {reason}"),
    };
    format!(
        "{combined}; lockdown_lift_admins={}",
        rules.lockdown_lift_admins
    )
}

impl Default for StaffRules {
    fn default() -> StaffRules {
        StaffRules {
            lockdown_lift_admins: 1,
            combined_roles: None,
        }
    }
}

/// The hospital's `[defaults]`: limits that apply to every vendor unless its file overrides
/// them, and the broker's own settings that belong to the agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    /// A vendor's `max_session` when its file gives none.
    pub max_session: Duration,
    /// How long a request waits for an answer before it expires.
    pub answer_within: Duration,
    /// A session with no traffic for this long ends (reason `idle`), unless the vendor's
    /// file gives its own.
    pub idle_timeout: Duration,
    /// When the technician is warned before the end, furthest first, never empty.
    pub warnings: Vec<Duration>,
    /// Consecutive wrong one-time passwords that lock a technician out.
    pub otp_lockout_after: u32,
    /// How long a staff account stays locked after too many failed web UI logins
    /// (`staff_lockout`, default 15 minutes).
    pub staff_lockout: StaffLockout,
    /// Whether every approval and every extension must say why, in a comment on the record
    /// (`require_approval_comment`, default false: a comment is optional).
    pub require_approval_comment: bool,
}

/// How long a staff account stays locked after too many failed logins in a row.
///
/// A lock that lasts until an admin acts lets anyone who knows the approvers' names keep them
/// all out during an incident, so by default it ends by itself; a hospital whose rules ask
/// for an admin's action says `staff_lockout = "until-reset"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaffLockout {
    /// The lock ends by itself this long after it began (`"15m"`, `"1h"`).
    For(Duration),
    /// The lock lasts until an admin resets the account through a one-time link.
    UntilReset,
}

impl StaffLockout {
    /// What a `hospital.toml` without `staff_lockout` gets.
    pub const DEFAULT: StaffLockout = StaffLockout::For(Duration::from_secs(15 * 60));
}

impl Default for Defaults {
    /// What a `hospital.toml` without `[defaults]` gets.
    fn default() -> Self {
        Defaults {
            max_session: duration::DEFAULT_MAX_SESSION,
            answer_within: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(30 * 60),
            warnings: vec![Duration::from_secs(10 * 60), Duration::from_secs(2 * 60)],
            otp_lockout_after: 5,
            staff_lockout: StaffLockout::DEFAULT,
            require_approval_comment: false,
        }
    }
}

/// One `vendors/<id>.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPolicy {
    /// Equal to the file stem.
    pub id: String,
    pub name: String,
    pub emergency_contact: Option<String>,
    /// The maintenance contract this policy belongs to (its number or title).
    pub contract: Option<String>,
    /// Companies the vendor sub-contracts maintenance to, as written.
    pub subcontractors: Vec<String>,
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

    /// How many different approvers a request for `targets` needs: the vendor's
    /// `critical_approvals` when any of them is critical, its `approvals` otherwise.
    pub fn approvals_for<S: AsRef<str>>(&self, targets: &[S]) -> u8 {
        let critical = targets.iter().any(|name| {
            self.target(name.as_ref())
                .is_some_and(|target| target.critical)
        });
        if critical {
            self.access.critical_approvals
        } else {
            self.access.approvals
        }
    }

    /// The whole responsibility matrix for this vendor: the hospital's items in their
    /// order, each replaced by the vendor's item of the same name if it has one, then the
    /// vendor's own items.
    pub fn responsibility_matrix(&self, hospital: &HospitalPolicy) -> Vec<Responsibility> {
        let mut matrix: Vec<Responsibility> = hospital
            .responsibility
            .iter()
            .map(|item| {
                self.responsibility
                    .iter()
                    .find(|own| own.item == item.item)
                    .unwrap_or(item)
                    .clone()
            })
            .collect();
        matrix.extend(
            self.responsibility
                .iter()
                .filter(|own| !hospital.responsibility.iter().any(|h| h.item == own.item))
                .cloned(),
        );
        matrix
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
    /// Permits loopback, link-local, unspecified, multicast and broadcast addresses, and IPv6
    /// addresses that carry one (demos and tests). See [`check_dial_address`].
    pub allow_loopback: bool,
    /// Permits the file-sharing ports ([`FILE_SHARE_PORTS`]: SMB, NFS).
    pub allow_file_share: bool,
    /// Why this target may be a port the broker itself listens on (on one of its host's
    /// addresses): `None`, the default, never dials the broker's own sockets (see
    /// [`crate::targets`]).
    pub allow_broker_port: Option<String>,
    /// Requests that name this target need the vendor's `critical_approvals`.
    pub critical: bool,
}

/// Ports that carry file shares (NetBIOS session, SMB, NFS): the way ransomware spreads
/// between networks, so a target on one needs `allow_file_share = true`.
pub const FILE_SHARE_PORTS: [u16; 3] = [139, 445, 2049];

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
    /// Whole days (in the hospital's time zone) on which no session may run, whatever
    /// `hours` says. Sorted, no duplicates.
    pub holidays: Vec<jiff::civil::Date>,
    /// More than zero and at most 24 hours.
    pub max_session: Duration,
    /// A session with no traffic either way for this long ends (reason `idle`).
    pub idle_timeout: Duration,
    /// From 1 to 5.
    pub approvals: u8,
    /// For requests naming a critical target: from `approvals` to 5.
    pub critical_approvals: u8,
    /// Empty means any source address.
    pub source_networks: Vec<IpNetwork>,
    /// What happens to a live session whose connection is lost.
    pub resume: Resume,
}

/// Whether a live session survives a lost connection (`resume`, default true), and how soon
/// after the loss it may be taken up again without a new one-time password
/// (`resume_without_code_within`, default none: every resumption takes a new code).
///
/// A session that may resume stays approved, between connections, until its end time; every
/// end (the end time, a revocation, a lockdown, a disabling) applies to it there too. One that
/// may not ends when its connection is lost (reason `connection-lost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Whether the session survives the loss of its connection.
    pub allowed: bool,
    /// A resumption this soon after the loss needs no new code; zero means always one.
    pub without_code_within: Duration,
}

impl Resume {
    /// The longest `resume_without_code_within` a policy may give: a short window for a
    /// network that blinked, never a standing way in.
    pub const LONGEST_WITHOUT_CODE: Duration = Duration::from_secs(10 * 60);
}

impl Default for Resume {
    fn default() -> Resume {
        Resume {
            allowed: true,
            without_code_within: Duration::ZERO,
        }
    }
}

impl Access {
    /// What a vendor file without an `[access]` table gets under the hospital's defaults.
    pub fn with_defaults(defaults: &Defaults) -> Self {
        Access {
            hours: None,
            holidays: Vec::new(),
            max_session: defaults.max_session,
            idle_timeout: defaults.idle_timeout,
            approvals: 1,
            critical_approvals: 2,
            source_networks: Vec::new(),
            resume: Resume::default(),
        }
    }

    /// Whether `date` (in the hospital's time zone) is one of the vendor's holidays.
    pub fn is_holiday(&self, date: jiff::civil::Date) -> bool {
        self.holidays.binary_search(&date).is_ok()
    }
}

/// One row of the responsibility matrix: who looks after `item`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responsibility {
    pub item: String,
    pub owner: Owner,
    pub note: Option<String>,
    /// Hospital items only: every vendor file must state this item itself, so the split is
    /// agreed rather than assumed.
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Hospital,
    Vendor,
    Shared,
}

impl Owner {
    /// The owner in Japanese, as printed on the responsibility document.
    pub fn japanese(self) -> &'static str {
        match self {
            Owner::Hospital => "病院",
            Owner::Vendor => "事業者",
            Owner::Shared => "共同",
        }
    }
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
