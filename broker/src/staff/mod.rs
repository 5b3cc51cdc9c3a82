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
//! A login needs the password and a fresh code; after [`LOGIN_LOCKOUT_THRESHOLD`]
//! consecutive failures the account is locked until an admin resets it. A login makes a new
//! random browser session id (only its hash is stored) with its own CSRF token; a session
//! unused for the idle limit is over.
//!
//! This module checks credentials and keeps accounts; it never decides what a role may do
//! (that is the web layer's, checked on every action) and never sees HTTP.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::audit::{Actor, AuditEvent, EventKind};
use crate::clock::Clock;
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
        "The name, password or one-time code is wrong, or the account is locked or disabled; after {LOGIN_LOCKOUT_THRESHOLD} failures in a row an account is locked until an admin resets it."
    )]
    LoginFailed,
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
}

/// A staff name: one person, as in the CLI's `--as` (no spaces, no `/`, not `root`).
pub fn check_name(name: &str) -> Result<String, StaffError> {
    let name = name.trim();
    let valid = !name.is_empty()
        && name != "root"
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/' && c != ',');
    if valid {
        Ok(name.to_owned())
    } else {
        Err(StaffError::Input(
            "A staff name is one person's name of up to 64 characters, without spaces, '/' or ','; `root` is not a person.".to_owned(),
        ))
    }
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

/// The argon2id hash of `password`, PHC string.
pub fn hash_password(password: &str) -> Result<String, StaffError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| StaffError::Crypto(e.to_string()))?;
    Ok(argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| StaffError::Crypto(e.to_string()))?
        .to_string())
}

/// Whether `password` matches `hash` (constant-time inside argon2).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2().is_ok_and(|argon| argon.verify_password(password.as_bytes(), &parsed).is_ok())
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
        }
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
        let name = check_name(name)?;
        if roles.is_empty() {
            return Err(StaffError::Input(
                "Give the account at least one role: approver, admin or auditor.".to_owned(),
            ));
        }
        let now = self.clock.now();
        let existing = self.store.staff_member(&name).await?;
        let token = random_token()?;
        let invite = InviteRow {
            name: name.clone(),
            roles: roles.encode(),
            created_by: by.to_owned(),
            expires_at: now + INVITE_VALIDITY,
            pending: None,
            code_failures: 0,
        };
        let event = AuditEvent::new(now, Actor::Staff(by.to_owned()), EventKind::StaffInvited)
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
            .filter(|pending| verify_password(&pending.password_hash, password))
        {
            return self.shown(pending);
        }
        let secret = crate::otp::new_secret()?;
        let pending = PendingSetup {
            sealed_totp_secret: self
                .sealing_key
                .seal(&binding(&name), secret.expose_secret())?,
            password_hash: hash_password(password)?,
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
    /// is recorded and counted against the account, and gives the same answer.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        code: &str,
        from: &str,
    ) -> Result<LoginSession, StaffError> {
        let now = self.clock.now();
        let name = name.trim();
        let account = match check_name(name) {
            Ok(name) => self.store.staff_member(&name).await?,
            Err(_) => None,
        };
        // An unknown name costs the same hashing as a known one, so timing does not tell
        // which names exist.
        let password_ok = match &account {
            Some(account) => verify_password(&account.password_hash, password),
            None => {
                let _ = verify_password(dummy_hash(), password);
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
        let shown_name: String = name.chars().take(64).collect();
        let failed = AuditEvent::new(
            now,
            Actor::Staff(shown_name.clone()),
            EventKind::StaffLoginFailed,
        )
        .detail("why", why)
        .detail("from", from);
        let locked = AuditEvent::new(
            now,
            Actor::Staff(shown_name.clone()),
            EventKind::StaffLocked,
        )
        .detail("consecutive_failures", LOGIN_LOCKOUT_THRESHOLD);
        // A known account counts the failure; an unknown name only leaves the record.
        let counted_name = if account.is_some() {
            shown_name.as_str()
        } else {
            ""
        };
        self.store
            .record_staff_login_failure(counted_name, LOGIN_LOCKOUT_THRESHOLD, &failed, &locked)
            .await?;
        Err(StaffError::LoginFailed)
    }

    fn code_step(&self, account: &StaffRow, code: &str, now: SystemTime) -> Option<i64> {
        let secret = self
            .sealing_key
            .open(&binding(&account.name), &account.sealed_totp_secret)
            .ok()?;
        crate::otp::matching_step(&secret, code, now).ok().flatten()
    }

    /// The staff member behind a browser session cookie, if the session exists, was used
    /// within the idle limit, and the account is enabled and unlocked. Marks it used.
    pub async fn session(&self, cookie: &str) -> Result<Option<StaffMember>, StaffError> {
        let hash = token_hash(cookie);
        let Some((name, csrf, last_seen)) = self.store.staff_session(&hash).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let idle = now.duration_since(last_seen).unwrap_or_default();
        if idle > self.idle_timeout {
            self.store.end_staff_session(&hash, None).await?;
            return Ok(None);
        }
        let Some(account) = self.store.staff_member(&name).await? else {
            return Ok(None);
        };
        if account.disabled || account.locked {
            return Ok(None);
        }
        self.store.touch_staff_session(&hash, now).await?;
        Ok(Some(StaffMember {
            name,
            roles: Roles::decode(&account.roles),
            csrf: Secret::new(csrf),
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
        if name == by && disabled {
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
        let event = AuditEvent::new(now, Actor::Staff(by.to_owned()), kind).detail("staff", name);
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
    fn staff_names_name_one_person() {
        assert!(check_name("suzuki").is_ok());
        for bad in ["", "root", "a b", "a/b", "a,b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
