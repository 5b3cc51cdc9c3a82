//! Hospital staff accounts for the web UI: roles, passwords, one-time passwords, logins.
//!
//! Each person has their own account (no defaults, no shared ones) with one or more roles:
//! approver, admin, auditor. An account is made, or reset, only through a one-time link: an
//! admin makes the link (the very first admin's link is printed by the broker at its first
//! start), and the person opens it, chooses a password of at least
//! [`MIN_PASSWORD_CHARS`] characters (stored as an argon2id hash) and gets a TOTP secret of
//! their own (sealed at rest with [`SealingKey`]).
//!
//! The setup counts only once the person typed a current code from the new authenticator
//! ([`StaffDirectory::begin_enrollment`], then [`StaffDirectory::confirm_enrollment`]): a
//! mis-scanned QR code must not lock them out at their first login, and a reset must not take
//! the old password and secret away before the new ones are known to work. Until then the
//! password hash and the sealed secret wait on the link, the account (if any) is untouched,
//! and the link's expiry still applies. The confirming code's step is spent like a login's,
//! so it never logs in. After [`SETUP_CODE_ATTEMPTS`] wrong codes the link stops working and
//! an admin makes a new one.
//!
//! A login needs the password and a fresh code. Failures are made expensive to repeat
//! without making the lockout a lever for outsiders:
//!
//! - each failed login for a name makes the next attempt for that name wait, doubling from
//!   [`FIRST_LOGIN_DELAY`] up to [`MAX_LOGIN_DELAY`] ([`StaffError::TooSoon`] says how long;
//!   nothing is hashed, counted or recorded for an attempt that comes too soon). The delay is
//!   kept per name, known or not, so it tells nobody which names exist, and measured on the
//!   broker's [`Clock`]; no task waits it out;
//! - after [`LOGIN_LOCKOUT_THRESHOLD`] consecutive failures the account is locked for the
//!   hospital's `staff_lockout` ([`StaffLockout`], 15 minutes unless `hospital.toml` says
//!   otherwise, or until an admin resets it), and the lock is recorded as `staff-locked`,
//!   which the approvers' webhook also sends;
//! - a lock refuses logins only: browsers already logged in stay logged in, so that typing
//!   wrong passwords under an approver's name does not throw the approver out mid-incident.
//!
//! A login makes a new random browser session id (only its hash is stored) with its own CSRF
//! token; a session unused for the idle limit, or older than the absolute lifetime
//! ([`DEFAULT_SESSION_LIFETIME`] unless configured), is over, whatever its use.
//!
//! This module checks credentials and keeps accounts; it never decides what a role may do
//! (that is the web layer's, checked on every action) and never sees HTTP.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub mod hashing;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::Clock;
pub use crate::policy::{StaffLockout, StaffRules};
use crate::secret::{SealError, SealingKey, Secret, random_bytes};
use crate::store::{
    Activation, ActivationOutcome, InviteRow, PendingSetup, StaffRow, Store, StoreError,
};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 13;
/// Consecutive failed logins that lock an account.
pub const LOGIN_LOCKOUT_THRESHOLD: i64 = 5;
/// Wrong confirming codes a one-time link takes before it stops working (as many as a login
/// gets before the account locks).
pub const SETUP_CODE_ATTEMPTS: i64 = LOGIN_LOCKOUT_THRESHOLD;
/// How long a one-time link works.
pub const INVITE_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// How long a browser session lasts without use, unless configured otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long a browser session lasts at most, in use or not, unless configured otherwise.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The wait after a name's first failed login; each further failure doubles it.
pub const FIRST_LOGIN_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two login attempts for one name.
pub const MAX_LOGIN_DELAY: Duration = Duration::from_secs(60);
/// Names whose failed logins are remembered at once; past it the oldest are forgotten (an
/// outsider trying many names cannot grow the broker's memory).
const THROTTLED_NAMES: usize = 10_000;

/// What a staff member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Approves and denies requests, watches, revokes and extends sessions, sets lockdown.
    Approver,
    /// Manages staff accounts and technicians; may set lockdown.
    Admin,
    /// Reads the audit log, reviews sessions, exports.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Approver, Role::Admin, Role::Auditor];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// The role for a stored word.
    pub fn parse(word: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == word.trim())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(Vec<Role>);

impl Roles {
    /// The given roles, each once, in a fixed order.
    pub fn new(roles: impl IntoIterator<Item = Role>) -> Roles {
        let mut roles: Vec<Role> = roles.into_iter().collect();
        roles.sort();
        roles.dedup();
        Roles(roles)
    }

    /// Reads the stored comma-separated form; unknown words are ignored (they grant nothing).
    pub fn decode(text: &str) -> Roles {
        Roles::new(text.split(',').filter_map(Role::parse))
    }

    /// The stored comma-separated form.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|role| role.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `role` is among them.
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The roles, in order.
    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

/// A logged-in staff member, as the web layer sees them on each request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffMember {
    /// Their name (what actions are recorded under).
    pub name: String,
    /// Their roles.
    pub roles: Roles,
    /// The CSRF token of this browser session.
    pub csrf: Secret<String>,
}

/// A new browser session, made at login.
#[derive(Debug)]
pub struct LoginSession {
    /// The random session id for the cookie (only its hash is stored).
    pub cookie: Secret<String>,
    /// Who logged in.
    pub member: StaffMember,
}

/// The new authenticator a person sets up through a one-time link: shown to them until they
/// confirm it with a code, and never after.
#[derive(Debug)]
pub struct NewAuthenticator {
    /// The account's name.
    pub name: String,
    /// The TOTP secret.
    pub secret: Secret<Vec<u8>>,
    /// The `otpauth://` URI for an authenticator app.
    pub otpauth_uri: Secret<String>,
}

/// Why a staff operation did not happen; `Display` is one sentence for the person.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    /// What was typed cannot be used.
    #[error("{0}")]
    Input(String),
    /// A login failed. Deliberately the same sentence for every cause.
    #[error(
        "The name, password or one-time code is wrong, or the account is locked or disabled; after {LOGIN_LOCKOUT_THRESHOLD} failures in a row an account is locked {}, and admins are alerted.",
        lock_length(.lockout)
    )]
    LoginFailed {
        /// How long a lock lasts (the hospital's `staff_lockout`).
        lockout: StaffLockout,
    },
    /// A login for this name came before the wait its last failure set; nothing was checked.
    #[error(
        "Too many failed logins for this name; wait {} and try again.",
        seconds(.wait)
    )]
    TooSoon {
        /// How long to wait.
        wait: Duration,
    },
    /// The one-time link is unknown, used or expired.
    #[error(
        "This link is not valid any more (used, expired or mistyped); ask an admin for a new one."
    )]
    InviteInvalid,
    /// A confirming code was typed on a link whose password form was not sent yet.
    #[error("Choose your password on this link's page first; then the code is asked for.")]
    SetupNotBegun,
    /// The confirming code does not match the new secret; nothing changed.
    #[error(
        "That code does not match the new authenticator; check the app's clock and type the current 6-digit code."
    )]
    CodeMismatch {
        /// Wrong codes the link still takes before it stops working.
        attempts_left: i64,
    },
    /// The last wrong confirming code the link takes; nothing changed and the link is spent.
    #[error(
        "That code does not match the new authenticator either, and after {SETUP_CODE_ATTEMPTS} wrong codes this link does not work any more; nothing was changed, ask an admin for a new link."
    )]
    SetupVoided,
    /// No such account.
    #[error("There is no staff account {0}.")]
    NoSuchStaff(String),
    /// The command line named an account that does not exist; recorded.
    #[error(
        "There is no staff account {0}; give your own account's name with --as (`sekisho-broker staff list` shows them)."
    )]
    UnknownOperator(String),
    /// The command line named a disabled account; recorded and counted.
    #[error("The staff account {0} is disabled; an admin enables it again before it can act.")]
    OperatorDisabled(String),
    /// The command line named a locked account; recorded and counted.
    #[error(
        "The staff account {name} is locked after too many failed logins; wait {}, or ask an admin to reset it.",
        lock_length(.lockout)
    )]
    OperatorLocked {
        /// The account.
        name: String,
        /// How long a lock lasts.
        lockout: StaffLockout,
    },
    /// A wrong or reused one-time code at the command line; recorded and counted as a failed
    /// login.
    #[error(
        "That one-time code is wrong or was already used for {0}; type the current code from {0}'s own authenticator (after {LOGIN_LOCKOUT_THRESHOLD} failures in a row the account is locked)."
    )]
    WrongCode(String),
    /// The account's roles do not allow the duty; recorded.
    #[error("{name} may not {} (it takes the {} role); ask someone who holds it.", .duty.what(), .duty.role_words())]
    NotAllowed {
        /// The account.
        name: String,
        /// What was asked.
        duty: Duty,
    },
    /// Too many passwords are being checked at once (a flood of logins); nothing was checked.
    #[error("Too many logins are being checked at once; try again in a few seconds.")]
    Busy,
    /// Hashing, random numbers or sealing failed.
    #[error("the credentials could not be processed ({0})")]
    Crypto(String),
    /// The database could not be used; nothing was changed.
    #[error("Nothing was changed: {0}. Check the broker's database and try again.")]
    Store(StoreError),
}

impl From<StoreError> for StaffError {
    fn from(error: StoreError) -> StaffError {
        StaffError::Store(error)
    }
}

impl From<SealError> for StaffError {
    fn from(error: SealError) -> StaffError {
        StaffError::Crypto(error.to_string())
    }
}

/// Staff accounts over the store.
#[derive(Clone)]
pub struct StaffDirectory {
    store: Store,
    sealing_key: Arc<SealingKey>,
    clock: Arc<dyn Clock>,
    hospital: String,
    idle_timeout: Duration,
    session_lifetime: Duration,
    lockout: Arc<dyn Fn() -> StaffLockout + Send + Sync>,
    rules: Arc<dyn Fn() -> StaffRules + Send + Sync>,
    throttle: Arc<LoginThrottle>,
}

/// How long a lock lasts, as the refusal says it.
fn lock_length(lockout: &StaffLockout) -> String {
    match *lockout {
        StaffLockout::For(length) => format!("for {}", proto::duration::format_duration(length)),
        StaffLockout::UntilReset => "until an admin resets it".to_owned(),
    }
}

/// A wait in whole seconds, rounded up: what `Retry-After` says too.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn seconds(wait: &Duration) -> String {
    match whole_seconds(*wait) {
        1 => "1 second".to_owned(),
        n => format!("{n} seconds"),
    }
}

/// Failed logins per name, for the growing wait between attempts. Kept in memory: a
/// restart forgets it, and each broker sharing a database keeps its own (the lockout, in the
/// database, is shared).
#[derive(Default)]
struct LoginThrottle {
    names: std::sync::Mutex<std::collections::HashMap<String, Throttled>>,
}

#[derive(Debug, Clone, Copy)]
struct Throttled {
    failures: u32,
    not_before: std::time::Instant,
}

impl LoginThrottle {
    fn names(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Throttled>> {
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long an attempt for `name` at `now` must still wait, if at all.
    fn wait(&self, name: &str, now: std::time::Instant) -> Option<Duration> {
        let names = self.names();
        let wait = names.get(name)?.not_before.checked_duration_since(now)?;
        (!wait.is_zero()).then_some(wait)
    }

    /// Counts a failure for `name` at `now`: the next attempt waits twice as long as the last.
    fn failed(&self, name: &str, now: std::time::Instant) {
        let mut names = self.names();
        if names.len() >= THROTTLED_NAMES && !names.contains_key(name) {
            // Forget the names whose wait is long over first, then the oldest.
            names.retain(|_, throttled| {
                throttled
                    .not_before
                    .checked_add(MAX_LOGIN_DELAY)
                    .is_some_and(|forget| forget > now)
            });
            if names.len() >= THROTTLED_NAMES
                && let Some(oldest) = names
                    .iter()
                    .min_by_key(|(_, throttled)| throttled.not_before)
                    .map(|(name, _)| name.clone())
            {
                names.remove(&oldest);
            }
        }
        let entry = names.entry(name.to_owned()).or_insert(Throttled {
            failures: 0,
            not_before: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let delay = login_delay(entry.failures);
        entry.not_before = now.checked_add(delay).unwrap_or(now);
    }

    fn succeeded(&self, name: &str) {
        self.names().remove(name);
    }
}

/// The wait after `failures` failed logins in a row: 1 s, 2 s, 4 s, … up to
/// [`MAX_LOGIN_DELAY`].
pub fn login_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_LOGIN_DELAY
        .checked_mul(1 << doublings)
        .map_or(MAX_LOGIN_DELAY, |delay| delay.min(MAX_LOGIN_DELAY))
}

/// A staff name: one person, as in the CLI's `--as` (no spaces, no `/`, not `root`), in its
/// canonical form: Unicode NFKC (full-width `Ｓｕｚｕｋｉ` is `Suzuki`) and lowercase, so
/// `Suzuki`, `SUZUKI` and `suzuki` are one account and one person can never count twice for a
/// vendor's `approvals = 2`. The web UI's login, its Staff page and the admin command line
/// all go through here, so they agree on who a name is.
pub fn check_name(name: &str) -> Result<String, StaffError> {
    use unicode_normalization::UnicodeNormalization;
    let name: String = name.trim().nfkc().collect::<String>().to_lowercase();
    let name = name.trim();
    let valid = !name.is_empty()
        && name != "root"
        // Dot segments: a browser resolves them out of any URL, encoded or not.
        && name != "."
        && name != ".."
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/' && c != ',' && c != ':');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(StaffError::Input(
            "A staff name is one person's name of up to 64 characters, without spaces, '/', ',' or ':' and other than `.` or `..`; `root` is not a person.".to_owned(),
        ))
    }
}

/// What a staff member does, and which roles may do it: the one table that both the web UI
/// (on every page and API call that acts) and the admin command line check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Approve, deny, revoke or extend (the desk).
    Decide,
    /// Stop all remote access.
    LockdownOn,
    /// Lift a lockdown: an admin's act (two different admins where `hospital.toml` says so).
    LockdownLift,
    /// Take on, disable and enable vendors; add, disable, enable, unlock and reset technicians.
    Identities,
    /// Invite, reset, disable and enable staff accounts.
    Staff,
    /// Have every broker reload its policies.
    Policy,
    /// Mark sessions reviewed and export the audit log.
    Audit,
}

impl Duty {
    /// The roles that may do it (any one of them suffices).
    pub fn roles(self) -> &'static [Role] {
        match self {
            Duty::Decide => &[Role::Approver],
            Duty::LockdownOn => &[Role::Approver, Role::Admin],
            Duty::LockdownLift | Duty::Identities | Duty::Staff | Duty::Policy => &[Role::Admin],
            Duty::Audit => &[Role::Auditor],
        }
    }

    /// Whether `roles` allow it.
    pub fn allowed(self, roles: &Roles) -> bool {
        self.roles().iter().any(|role| roles.has(*role))
    }

    /// What it is, for a refusal ("… may not {what}").
    pub fn what(self) -> &'static str {
        match self {
            Duty::Decide => "approve, deny, revoke or extend sessions",
            Duty::LockdownOn => "set a lockdown",
            Duty::LockdownLift => "lift a lockdown",
            Duty::Identities => "manage vendors and technicians",
            Duty::Staff => "manage staff accounts",
            Duty::Policy => "reload the policies",
            Duty::Audit => "review sessions or export the audit log",
        }
    }

    /// The roles that may do it, as words ("approver or admin").
    pub fn role_words(self) -> String {
        self.roles()
            .iter()
            .map(|role| role.as_str())
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// The role held together with auditor that separation of duties refuses by default
/// (approver or admin), if any.
pub fn combined_roles(roles: &Roles) -> Option<Role> {
    if !roles.has(Role::Auditor) {
        return None;
    }
    [Role::Approver, Role::Admin]
        .into_iter()
        .find(|role| roles.has(*role))
}

/// A staff member who proved at the command line, with a fresh code from their own
/// authenticator, that they are the named account, and whose roles allow the duty asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The account's canonical name (what the action is recorded under).
    pub name: String,
    /// The account's roles.
    pub roles: Roles,
}

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, typed the same twice.
pub fn check_password(password: &str, repeated: &str) -> Result<(), StaffError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(StaffError::Input(format!(
            "A password has at least {MIN_PASSWORD_CHARS} characters; a few words make a good one."
        )));
    }
    if password.chars().count() > 1024 {
        return Err(StaffError::Input(
            "A password has at most 1024 characters.".to_owned(),
        ));
    }
    if password != repeated {
        return Err(StaffError::Input(
            "The two passwords differ; type the same one twice.".to_owned(),
        ));
    }
    Ok(())
}

fn argon2() -> Result<Argon2<'static>, StaffError> {
    // argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's minimum).
    let params = Params::new(
        Params::DEFAULT_M_COST,
        Params::DEFAULT_T_COST,
        Params::DEFAULT_P_COST,
        None,
    )
    .map_err(|e| StaffError::Crypto(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The argon2id hash of `password`, PHC string. Computed in this thread's work area (see
/// `with_work_area`); the login path runs it on [`hashing`]'s threads.
pub fn hash_password(password: &str) -> Result<String, StaffError> {
    let crypto = |e: &dyn std::fmt::Display| StaffError::Crypto(e.to_string());
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let argon = argon2()?;
    let params = argon.params().clone();
    let mut output = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    with_work_area(params.block_count(), |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut output, blocks)
    })
    .ok_or_else(|| StaffError::Crypto("the password hashing parameters are too large".into()))?
    .map_err(|e| crypto(&e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| crypto(&e))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(&params).map_err(|e| crypto(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&output).map_err(|e| crypto(&e))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches `hash` (a PHC string with its own parameters), computed in
/// this thread's work area and compared in constant time.
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut output = vec![0u8; expected.len()];
    let computed = with_work_area(params.block_count(), |blocks| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut output, blocks)
    });
    matches!(computed, Some(Ok(())))
        && argon2::password_hash::Output::new(&output).is_ok_and(|output| output == expected)
}

/// The most memory one hash may use (the default is 19 MiB): a stored hash asking for more is
/// not computed.
const MAX_WORK_AREA_BLOCKS: usize = 256 * 1024;

thread_local! {
    /// argon2's memory, kept for the thread's life: allocating and freeing 19 MiB per hash
    /// made the C allocator keep a growing heap (measured: +235 MiB after twenty hashes on
    /// two threads); one area per thread keeps it at 19 MiB each.
    static WORK_AREA: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `work` on this thread's argon2 work area of `blocks` blocks; `None` when that is
/// more than [`MAX_WORK_AREA_BLOCKS`].
fn with_work_area<T>(blocks: usize, work: impl FnOnce(&mut [argon2::Block]) -> T) -> Option<T> {
    if blocks > MAX_WORK_AREA_BLOCKS {
        return None;
    }
    WORK_AREA.with(|area| {
        let mut area = area.borrow_mut();
        if area.len() < blocks {
            area.resize(blocks, argon2::Block::default());
        }
        Some(work(&mut area[..blocks]))
    })
}

/// A random token: 32 bytes as lowercase hex.
pub fn random_token() -> Result<Secret<String>, StaffError> {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    Ok(Secret::new(crate::encoding::hex(&bytes)))
}

/// SHA-256 of a token, hex: what the store keeps instead of the token.
pub fn token_hash(token: &str) -> String {
    crate::encoding::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// RFC 4648 base32 without padding, as authenticator apps take a secret typed by hand.
pub use crate::encoding::base32_encode as base32;

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl StaffDirectory {
    /// Staff accounts over `store`; TOTP secrets sealed with `sealing_key`; browser sessions
    /// end after `idle_timeout` without use.
    pub fn new(
        store: Store,
        sealing_key: Arc<SealingKey>,
        clock: Arc<dyn Clock>,
        hospital: &str,
        idle_timeout: Duration,
    ) -> StaffDirectory {
        StaffDirectory {
            store,
            sealing_key,
            clock,
            hospital: hospital.to_owned(),
            idle_timeout,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            lockout: Arc::new(|| StaffLockout::DEFAULT),
            rules: Arc::new(StaffRules::default),
            throttle: Arc::new(LoginThrottle::default()),
        }
    }

    /// The same, with browser sessions over `lifetime` after their login, in use or not.
    pub fn with_session_lifetime(mut self, lifetime: Duration) -> StaffDirectory {
        self.session_lifetime = lifetime;
        self
    }

    /// The same, with locks lasting what `lockout` says at the time (the hospital's
    /// `staff_lockout` of the policies in force).
    pub fn with_lockout(
        mut self,
        lockout: impl Fn() -> StaffLockout + Send + Sync + 'static,
    ) -> StaffDirectory {
        self.lockout = Arc::new(lockout);
        self
    }

    /// The same, with the hospital's `[staff]` rules of the policies in force at the time
    /// (which roles one account may hold together).
    pub fn with_rules(
        mut self,
        rules: impl Fn() -> StaffRules + Send + Sync + 'static,
    ) -> StaffDirectory {
        self.rules = Arc::new(rules);
        self
    }

    /// The hospital's `[staff]` rules now.
    pub fn rules(&self) -> StaffRules {
        (self.rules)()
    }

    /// How long a lock lasts now.
    pub fn lockout(&self) -> StaffLockout {
        (self.lockout)()
    }

    /// The clock sessions and locks are measured on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How long a browser session lasts without use.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Makes the first admin's one-time link when there is no admin and no unused admin link
    /// yet; returns its token (to print once), or `None`.
    pub async fn first_admin_invite(&self) -> Result<Option<Secret<String>>, StaffError> {
        let now = self.clock.now();
        if self.store.has_staff_admin_or_invite(now).await? {
            return Ok(None);
        }
        let token = random_token()?;
        let invite = InviteRow {
            name: String::new(),
            roles: Roles::new([Role::Admin]).encode(),
            created_by: "broker".to_owned(),
            expires_at: now + INVITE_VALIDITY,
            pending: None,
            code_failures: 0,
        };
        let event = AuditEvent::new(
            now,
            Actor::Broker("first-start".to_owned()),
            EventKind::StaffInvited,
        )
        .detail("roles", &invite.roles)
        .detail("for", "the first admin");
        self.store
            .put_staff_invite(&token_hash(token.expose_secret()), &invite, now, &event)
            .await?;
        Ok(Some(token))
    }

    /// `by` makes a one-time link that creates account `name` with `roles`, or resets it if
    /// it exists (new password and TOTP secret, once confirmed with a code from it). Returns
    /// the token, to be shown once.
    pub async fn invite(
        &self,
        name: &str,
        roles: &Roles,
        by: &str,
    ) -> Result<Secret<String>, StaffError> {
        self.invite_as(name, roles, &Actor::Staff(by.to_owned()))
            .await
    }

    /// [`invite`](StaffDirectory::invite) by any actor: a staff member, or the host's
    /// administrator on the recovery path ([`Actor::Host`]).
    pub async fn invite_as(
        &self,
        name: &str,
        roles: &Roles,
        by: &Actor,
    ) -> Result<Secret<String>, StaffError> {
        let name = check_name(name)?;
        if roles.is_empty() {
            return Err(StaffError::Input(
                "Give the account at least one role: approver, admin or auditor.".to_owned(),
            ));
        }
        let now = self.clock.now();
        if let Some(other) = combined_roles(roles)
            && self.rules().combined_roles.is_none()
        {
            let refused = AuditEvent::new(now, by.clone(), EventKind::StaffRefused)
                .detail(
                    "why",
                    format!("separation of duties: auditor with {}", other.as_str()),
                )
                .detail("staff", &name)
                .detail("roles", roles.encode());
            self.store.record(&refused).await?;
            return Err(StaffError::Input(format!(
                "One account may not be both auditor and {} (whoever approves or administers must not audit it); give {name} one of them, or allow combined roles with a reason in hospital.toml's [staff].",
                other.as_str()
            )));
        }
        let existing = self.store.staff_member(&name).await?;
        let token = random_token()?;
        let created_by = match by {
            Actor::Staff(name) => name.clone(),
            other => other.encode(),
        };
        let invite = InviteRow {
            name: name.clone(),
            roles: roles.encode(),
            created_by,
            expires_at: now + INVITE_VALIDITY,
            pending: None,
            code_failures: 0,
        };
        let event = AuditEvent::new(now, by.clone(), EventKind::StaffInvited)
            .detail("staff", &name)
            .detail("roles", &invite.roles)
            .detail(
                "for",
                if existing.is_some() {
                    "a reset"
                } else {
                    "a new account"
                },
            );
        self.store
            .put_staff_invite(&token_hash(token.expose_secret()), &invite, now, &event)
            .await?;
        Ok(token)
    }

    /// The link behind `token`, if it still works.
    pub async fn invite_for(&self, token: &str) -> Result<InviteRow, StaffError> {
        self.store
            .staff_invite(&token_hash(token), self.clock.now())
            .await?
            .ok_or(StaffError::InviteInvalid)
    }

    /// Uses a one-time link, first step: checks the password (and the name, for the first
    /// admin's link) and makes a new TOTP secret, returned to be shown. Both wait on the link
    /// until [`confirm_enrollment`](StaffDirectory::confirm_enrollment); no account is made or
    /// changed here. Sending the same name and password again shows the same secret (a
    /// reloaded page must not invalidate a QR code already scanned); anything else replaces
    /// the pending setup with a new secret.
    pub async fn begin_enrollment(
        &self,
        token: &str,
        chosen_name: &str,
        password: &str,
        repeated: &str,
    ) -> Result<NewAuthenticator, StaffError> {
        let invite = self.invite_for(token).await?;
        let name = if invite.name.is_empty() {
            let name = check_name(chosen_name)?;
            if self.store.staff_member(&name).await?.is_some() {
                return Err(name_taken(&name));
            }
            name
        } else {
            invite.name.clone()
        };
        check_password(password, repeated)?;
        if let Some(pending) = invite
            .pending
            .as_ref()
            .filter(|pending| pending.name == name)
            && hashing::verify(&pending.password_hash, password).await?
        {
            return self.shown(pending);
        }
        let secret = crate::otp::new_secret()?;
        let pending = PendingSetup {
            sealed_totp_secret: self
                .sealing_key
                .seal(&binding(&name), secret.expose_secret())?,
            password_hash: hashing::hash(password).await?,
            name,
        };
        self.store
            .put_staff_setup_pending(&token_hash(token), &pending, self.clock.now())
            .await
            .map_err(|e| match e {
                StoreError::Stale => StaffError::InviteInvalid,
                other => StaffError::Store(other),
            })?;
        self.authenticator(pending.name, secret)
    }

    /// The new authenticator waiting on a one-time link for its confirming code, to show it
    /// again (after a wrong code).
    pub async fn pending_enrollment(&self, token: &str) -> Result<NewAuthenticator, StaffError> {
        let invite = self.invite_for(token).await?;
        let pending = invite.pending.as_ref().ok_or(StaffError::SetupNotBegun)?;
        self.shown(pending)
    }

    /// Uses a one-time link, second step: when `code` is a current code of the pending
    /// secret, spends the link and makes the account usable with the pending password and
    /// secret, in one transaction (recorded as [`EventKind::StaffEnrolled`]); the code's step
    /// is spent, so it never logs in. A wrong code changes nothing but the link's count of
    /// wrong codes (recorded as [`EventKind::StaffConfirmFailed`]); at
    /// [`SETUP_CODE_ATTEMPTS`] the link stops working. `from` is the client's address, for
    /// the record. Returns the account's name.
    pub async fn confirm_enrollment(
        &self,
        token: &str,
        code: &str,
        from: &str,
    ) -> Result<String, StaffError> {
        let now = self.clock.now();
        let hash = token_hash(token);
        let invite = self.invite_for(token).await?;
        let pending = invite.pending.as_ref().ok_or(StaffError::SetupNotBegun)?;
        let secret = self
            .sealing_key
            .open(&binding(&pending.name), &pending.sealed_totp_secret)?;
        let step = crate::otp::matching_step(&secret, code, now)
            .map_err(|e| StaffError::Crypto(e.to_string()))?;
        let Some(step) = step else {
            let (failures, void) = self
                .store
                .record_staff_setup_failure(&hash, SETUP_CODE_ATTEMPTS, now, |failures, void| {
                    let event = AuditEvent::new(
                        now,
                        Actor::Staff(pending.name.clone()),
                        EventKind::StaffConfirmFailed,
                    )
                    .detail("staff", &pending.name)
                    .detail("wrong_codes", failures)
                    .detail("from", from);
                    if void {
                        event.detail("link", "void")
                    } else {
                        event
                    }
                })
                .await
                .map_err(|e| match e {
                    StoreError::Stale => StaffError::InviteInvalid,
                    other => StaffError::Store(other),
                })?;
            return Err(if void {
                StaffError::SetupVoided
            } else {
                StaffError::CodeMismatch {
                    attempts_left: SETUP_CODE_ATTEMPTS - failures,
                }
            });
        };
        let event = AuditEvent::new(
            now,
            Actor::Staff(pending.name.clone()),
            EventKind::StaffEnrolled,
        )
        .detail("staff", &pending.name)
        .detail("roles", &invite.roles)
        .detail("link_by", &invite.created_by)
        .detail("from", from);
        let outcome = self
            .store
            .activate_staff_setup(
                &Activation {
                    token_hash: &hash,
                    roles: &invite.roles,
                    pending,
                    step,
                    may_reset: !invite.name.is_empty(),
                },
                now,
                &event,
            )
            .await
            .map_err(|e| match e {
                StoreError::Stale => StaffError::InviteInvalid,
                other => StaffError::Store(other),
            })?;
        match outcome {
            ActivationOutcome::Activated => Ok(pending.name.clone()),
            ActivationOutcome::NameTaken => Err(name_taken(&pending.name)),
        }
    }

    /// A pending setup's secret, opened to be shown again.
    fn shown(&self, pending: &PendingSetup) -> Result<NewAuthenticator, StaffError> {
        let secret = self
            .sealing_key
            .open(&binding(&pending.name), &pending.sealed_totp_secret)?;
        self.authenticator(pending.name.clone(), secret)
    }

    fn authenticator(
        &self,
        name: String,
        secret: Secret<Vec<u8>>,
    ) -> Result<NewAuthenticator, StaffError> {
        let uri = crate::otp::otpauth_uri(&secret, &self.hospital, &format!("staff {name}"))
            .map_err(|e| StaffError::Crypto(e.to_string()))?;
        Ok(NewAuthenticator {
            name,
            secret,
            otpauth_uri: Secret::new(uri),
        })
    }

    /// Checks name, password and code; on success opens a new browser session. Every failure
    /// is recorded and counted against the account, gives the same answer, and makes the next
    /// attempt for the name wait longer ([`StaffError::TooSoon`] until then).
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        code: &str,
        from: &str,
    ) -> Result<LoginSession, StaffError> {
        let now = self.clock.now();
        let instant = self.clock.instant();
        let name = name.trim();
        let shown_name: String = name.chars().take(64).collect();
        if let Some(wait) = self.throttle.wait(&shown_name, instant) {
            return Err(StaffError::TooSoon { wait });
        }
        let lockout = self.lockout();
        let mut account = match check_name(name) {
            Ok(name) => self.store.staff_member(&name).await?,
            Err(_) => None,
        };
        // A lock that has run its time is lifted before anything is checked, so the count of
        // failures starts again.
        if let Some(row) = account.as_mut()
            && row.locked
            && row.locked_until(lockout, now).is_none()
        {
            self.store.end_staff_lock(&row.name, row.locked_at).await?;
            row.locked = false;
            row.login_failures = 0;
        }
        // An unknown name costs the same hashing as a known one, so timing does not tell
        // which names exist. Hashing takes its turn (see `hashing`): a flood is refused
        // before it costs memory.
        let password_ok = match &account {
            Some(account) => hashing::verify(&account.password_hash, password).await?,
            None => {
                hashing::verify_unknown(password).await?;
                false
            }
        };
        let step = match (&account, password_ok) {
            (Some(account), true) => self.code_step(account, code, now),
            _ => None,
        };
        let why = match (&account, password_ok, step) {
            (None, _, _) => "unknown name",
            (Some(account), _, _) if account.disabled => "account disabled",
            (Some(account), _, _) if account.locked => "account locked",
            (Some(_), false, _) => "wrong password",
            (Some(account), true, Some(step)) if step <= account.totp_last_step => {
                "one-time code already used"
            }
            (Some(_), true, None) => "wrong one-time code",
            (Some(account), true, Some(step)) => {
                let cookie = random_token()?;
                let csrf = random_token()?;
                let event = AuditEvent::new(
                    now,
                    Actor::Staff(account.name.clone()),
                    EventKind::StaffLogin,
                )
                .detail("from", from)
                .detail("roles", &account.roles);
                match self
                    .store
                    .accept_staff_login(
                        &account.name,
                        step,
                        &token_hash(cookie.expose_secret()),
                        csrf.expose_secret(),
                        now,
                        &event,
                    )
                    .await
                {
                    Ok(()) => {
                        self.throttle.succeeded(&shown_name);
                        return Ok(LoginSession {
                            cookie,
                            member: StaffMember {
                                name: account.name.clone(),
                                roles: Roles::decode(&account.roles),
                                csrf,
                            },
                        });
                    }
                    Err(StoreError::Stale) => "one-time code already used, or account locked",
                    Err(other) => return Err(StaffError::Store(other)),
                }
            }
        };
        self.throttle.failed(&shown_name, instant);
        let failed = AuditEvent::new(
            now,
            Actor::Staff(shown_name.clone()),
            EventKind::StaffLoginFailed,
        )
        .detail("why", why)
        .detail("from", from);
        let until = match lockout {
            StaffLockout::For(length) => now
                .checked_add(length)
                .map_or_else(|| "reset".to_owned(), crate::audit::timestamp),
            StaffLockout::UntilReset => "reset".to_owned(),
        };
        // The approvers' webhook sends this event: admins learn of every lock.
        let locked = AuditEvent::new(
            now,
            Actor::Staff(shown_name.clone()),
            EventKind::StaffLocked,
        )
        .detail("staff", &shown_name)
        .detail("consecutive_failures", LOGIN_LOCKOUT_THRESHOLD)
        .detail("until", until)
        .detail("from", from);
        // A known account counts the failure; an unknown name only leaves the record.
        let counted_name = if account.is_some() {
            shown_name.as_str()
        } else {
            ""
        };
        self.store
            .record_staff_login_failure(
                counted_name,
                LOGIN_LOCKOUT_THRESHOLD,
                now,
                &failed,
                &locked,
            )
            .await?;
        Err(StaffError::LoginFailed { lockout })
    }

    /// Authenticates the staff member named at the command line for `duty`: the account
    /// must exist, be enabled and unlocked, and `code` must be a current code of its own
    /// authenticator not used before (web logins and commands spend the same steps, so a
    /// code works once, wherever it is typed); then its roles must allow `duty`, by the same
    /// table as the web ([`Duty::roles`]). `from` says where, for the record (`command line,
    /// uid 1000`).
    ///
    /// A success is recorded as `staff-login` (with the duty). An unknown, disabled or
    /// locked name and a wrong or reused code are recorded as `staff-login-failed` and,
    /// for an existing account, counted exactly like a failed web login (the lock after
    /// [`LOGIN_LOCKOUT_THRESHOLD`], alerted); a name whose last failure is too recent waits
    /// as on the web, by the count kept in the database ([`StaffError::TooSoon`]). A duty
    /// the roles do not allow is recorded as `staff-refused` by the authenticated account.
    pub async fn authenticate_operator(
        &self,
        name: &str,
        code: &str,
        duty: Duty,
        from: &str,
    ) -> Result<Operator, StaffError> {
        let now = self.clock.now();
        let lockout = self.lockout();
        let name = check_name(name)?;
        let mut account = self.store.staff_member(&name).await?;
        if let Some(row) = account.as_mut()
            && row.locked
            && row.locked_until(lockout, now).is_none()
        {
            self.store.end_staff_lock(&row.name, row.locked_at).await?;
            row.locked = false;
            row.login_failures = 0;
        }
        // The command line is a new process each time, so the growing wait is measured from
        // the last failure the database recorded (web or command line).
        if let Some(row) = &account
            && row.login_failures > 0
            && !row.locked
            && !row.disabled
            && let Some(wait) = row
                .login_failed_at
                .checked_add(login_delay(
                    u32::try_from(row.login_failures).unwrap_or(u32::MAX),
                ))
                .and_then(|not_before| not_before.duration_since(now).ok())
                .filter(|wait| !wait.is_zero())
        {
            return Err(StaffError::TooSoon { wait });
        }
        let step = match &account {
            Some(row) if !row.disabled && !row.locked => self.code_step(row, code, now),
            _ => None,
        };
        let (why, error) = match (&account, step) {
            (None, _) => ("unknown name", StaffError::UnknownOperator(name.clone())),
            (Some(row), _) if row.disabled => (
                "account disabled",
                StaffError::OperatorDisabled(name.clone()),
            ),
            (Some(row), _) if row.locked => (
                "account locked",
                StaffError::OperatorLocked {
                    name: name.clone(),
                    lockout,
                },
            ),
            (Some(row), Some(step)) if step <= row.totp_last_step => (
                "one-time code already used",
                StaffError::WrongCode(name.clone()),
            ),
            (Some(_), None) => ("wrong one-time code", StaffError::WrongCode(name.clone())),
            (Some(row), Some(step)) => {
                let event =
                    AuditEvent::new(now, Actor::Staff(row.name.clone()), EventKind::StaffLogin)
                        .detail("from", from)
                        .detail("roles", &row.roles)
                        .detail("for", duty.what());
                match self.store.accept_staff_code(&row.name, step, &event).await {
                    Ok(()) => {
                        let operator = Operator {
                            name: row.name.clone(),
                            roles: Roles::decode(&row.roles),
                        };
                        if duty.allowed(&operator.roles) {
                            return Ok(operator);
                        }
                        let refused = AuditEvent::new(
                            now,
                            Actor::Staff(row.name.clone()),
                            EventKind::StaffRefused,
                        )
                        .detail("why", format!("role: needs {}", duty.role_words()))
                        .detail("for", duty.what())
                        .detail("from", from);
                        self.store.record(&refused).await?;
                        return Err(StaffError::NotAllowed {
                            name: row.name.clone(),
                            duty,
                        });
                    }
                    Err(StoreError::Stale) => (
                        "one-time code already used, or account locked",
                        StaffError::WrongCode(name.clone()),
                    ),
                    Err(other) => return Err(StaffError::Store(other)),
                }
            }
        };
        let failed = AuditEvent::new(now, Actor::Staff(name.clone()), EventKind::StaffLoginFailed)
            .detail("why", why)
            .detail("from", from);
        let until = match lockout {
            StaffLockout::For(length) => now
                .checked_add(length)
                .map_or_else(|| "reset".to_owned(), crate::audit::timestamp),
            StaffLockout::UntilReset => "reset".to_owned(),
        };
        let locked = AuditEvent::new(now, Actor::Staff(name.clone()), EventKind::StaffLocked)
            .detail("staff", &name)
            .detail("consecutive_failures", LOGIN_LOCKOUT_THRESHOLD)
            .detail("until", until)
            .detail("from", from);
        let counted = if account.is_some() { name.as_str() } else { "" };
        self.store
            .record_staff_login_failure(counted, LOGIN_LOCKOUT_THRESHOLD, now, &failed, &locked)
            .await?;
        Err(error)
    }

    fn code_step(&self, account: &StaffRow, code: &str, now: SystemTime) -> Option<i64> {
        let secret = self
            .sealing_key
            .open(&binding(&account.name), &account.sealed_totp_secret)
            .ok()?;
        crate::otp::matching_step(&secret, code, now).ok().flatten()
    }

    /// The staff member behind a browser session cookie, if the session exists, was used
    /// within the idle limit, is younger than the absolute lifetime, and the account is
    /// enabled (a lock refuses logins, not sessions already open). Marks it used.
    pub async fn session(&self, cookie: &str) -> Result<Option<StaffMember>, StaffError> {
        self.check_session(cookie, true).await
    }

    /// The same as [`session`](StaffDirectory::session) without marking it used: for what
    /// follows a session without being its person's activity (a live-update stream).
    pub async fn peek_session(&self, cookie: &str) -> Result<Option<StaffMember>, StaffError> {
        self.check_session(cookie, false).await
    }

    /// When the session behind `cookie` ends at the latest if nobody uses it (the earlier of
    /// its idle limit and its absolute lifetime), on the wall clock; `None` if it is over.
    pub async fn session_deadline(&self, cookie: &str) -> Result<Option<SystemTime>, StaffError> {
        let Some(row) = self.store.staff_session(&token_hash(cookie)).await? else {
            return Ok(None);
        };
        Ok(row
            .last_seen
            .checked_add(self.idle_timeout)
            .zip(row.created_at.checked_add(self.session_lifetime))
            .map(|(idle, lifetime)| idle.min(lifetime)))
    }

    async fn check_session(
        &self,
        cookie: &str,
        touch: bool,
    ) -> Result<Option<StaffMember>, StaffError> {
        let hash = token_hash(cookie);
        let Some(row) = self.store.staff_session(&hash).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let idle = now.duration_since(row.last_seen).unwrap_or_default();
        let age = now.duration_since(row.created_at).unwrap_or_default();
        if idle > self.idle_timeout || age > self.session_lifetime {
            self.store.end_staff_session(&hash, None).await?;
            return Ok(None);
        }
        let Some(account) = self.store.staff_member(&row.staff).await? else {
            return Ok(None);
        };
        if account.disabled {
            return Ok(None);
        }
        if touch {
            self.store.touch_staff_session(&hash, now).await?;
        }
        Ok(Some(StaffMember {
            name: row.staff,
            roles: Roles::decode(&account.roles),
            csrf: Secret::new(row.csrf),
        }))
    }

    /// Ends the browser session behind `cookie`, recording the logout of `name`.
    pub async fn logout(&self, cookie: &str, name: &str) -> Result<(), StaffError> {
        let event = AuditEvent::new(
            self.clock.now(),
            Actor::Staff(name.to_owned()),
            EventKind::StaffLogout,
        );
        self.store
            .end_staff_session(&token_hash(cookie), Some(&event))
            .await?;
        Ok(())
    }

    /// `by` disables account `name` (ending its browser sessions) or enables it again.
    pub async fn set_disabled(
        &self,
        name: &str,
        disabled: bool,
        by: &str,
    ) -> Result<(), StaffError> {
        self.set_disabled_as(name, disabled, &Actor::Staff(by.to_owned()))
            .await
    }

    /// [`set_disabled`](StaffDirectory::set_disabled) by any actor: a staff member, or the
    /// host's administrator on the recovery path ([`Actor::Host`]).
    pub async fn set_disabled_as(
        &self,
        name: &str,
        disabled: bool,
        by: &Actor,
    ) -> Result<(), StaffError> {
        let name = &check_name(name)?;
        if matches!(by, Actor::Staff(by) if by == name) && disabled {
            return Err(StaffError::Input(
                "You cannot disable your own account; ask another admin.".to_owned(),
            ));
        }
        let now = self.clock.now();
        let kind = if disabled {
            EventKind::StaffDisabled
        } else {
            EventKind::StaffEnabled
        };
        let event = AuditEvent::new(now, by.clone(), kind).detail("staff", name);
        self.store
            .set_staff_disabled(name, disabled, now, &event)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => StaffError::NoSuchStaff(name.to_owned()),
                other => StaffError::Store(other),
            })
    }

    /// Every account.
    pub async fn members(&self) -> Result<Vec<StaffRow>, StaffError> {
        Ok(self.store.staff_members().await?)
    }
}

/// The refusal for a first admin's link whose chosen name is someone's account already.
fn name_taken(name: &str) -> StaffError {
    StaffError::Input(format!(
        "There is already an account {name}; choose another name."
    ))
}

/// What a staff member's sealed TOTP secret is bound to (distinct from any technician's).
pub(crate) fn binding(name: &str) -> String {
    format!("staff:{name}")
}

/// An argon2id hash of a random password nobody knows, verified against for unknown names
/// so that they take as long as known ones. Made once, on first use.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        random_token()
            .ok()
            .and_then(|token| hash_password(token.expose_secret()).ok())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert!(PasswordHash::new(dummy_hash()).is_ok());
    }

    #[test]
    fn short_or_mistyped_passwords_are_refused() {
        assert!(check_password("twelve chars", "twelve chars").is_err());
        assert!(check_password("thirteen char", "thirteen char").is_ok());
        assert!(check_password("thirteen char", "thirteen chaR").is_err());
    }

    #[test]
    fn roles_round_trip_and_ignore_unknown_words() {
        let roles = Roles::decode("auditor,approver,approver,superuser");
        assert_eq!(roles.encode(), "approver,auditor");
        assert!(roles.has(Role::Approver) && !roles.has(Role::Admin));
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }

    #[test]
    fn the_wait_between_failed_logins_doubles_from_one_second_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| login_delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(login_delay(u32::MAX), MAX_LOGIN_DELAY);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(4)), 4);
    }

    #[test]
    fn a_name_waits_after_each_failure_and_not_after_a_success() {
        let throttle = LoginThrottle::default();
        let start = std::time::Instant::now();
        assert_eq!(throttle.wait("sato", start), None);
        throttle.failed("sato", start);
        assert_eq!(throttle.wait("sato", start), Some(Duration::from_secs(1)));
        assert_eq!(throttle.wait("suzuki", start), None, "per name");
        let later = start + Duration::from_secs(1);
        assert_eq!(throttle.wait("sato", later), None);
        throttle.failed("sato", later);
        assert_eq!(throttle.wait("sato", later), Some(Duration::from_secs(2)));
        throttle.succeeded("sato");
        assert_eq!(throttle.wait("sato", later), None);
    }

    #[test]
    fn the_names_remembered_are_bounded() {
        let throttle = LoginThrottle::default();
        let now = std::time::Instant::now();
        for n in 0..THROTTLED_NAMES + 10 {
            throttle.failed(&format!("name{n}"), now);
        }
        assert_eq!(throttle.names().len(), THROTTLED_NAMES);
    }

    #[test]
    fn staff_names_name_one_person() {
        assert!(check_name("suzuki").is_ok());
        assert!(check_name("%73ato").is_ok(), "encoded wherever it appears");
        for bad in ["", "root", "a b", "a/b", "a,b", ".", ".."] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
