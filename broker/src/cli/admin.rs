//! `lockdown on|off|status`, `technician list|unlock` and `dev-issue`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::table::{Table, clean};
use super::{CliError, required_reason};
use crate::approval::Desk;
use crate::audit::{Actor, AuditEvent, EventKind};
use crate::pki::{BrokerPki, MAX_CLIENT_VALIDITY, TechnicianIdentity};
use crate::policy::PolicySet;
use crate::secret::Secret;
use crate::store::StoreError;
use crate::{BrokerConfig, DEFAULT_PORT, Hospital};

fn sessions(count: u64) -> String {
    match count {
        0 => "no session was live".to_owned(),
        1 => "1 live session was cut".to_owned(),
        n => format!("{n} live sessions were cut"),
    }
}

/// `lockdown on --reason TEXT --as STAFF`: stops all remote access and cuts every live
/// session. Already on: says so and changes nothing (the first reason and time stand).
pub async fn lockdown_on(desk: &Desk, reason: &str, staff: &str) -> Result<String, CliError> {
    let reason = required_reason(reason, "recorded and shown to technicians")?;
    let current = desk.lockdown().await?;
    if current.active {
        return Ok(format!(
            "Lockdown is already on, since {} {}, set by {}: {}",
            desk.zone().format(current.since),
            desk.zone().name(),
            clean(&current.by),
            clean(&current.reason)
        ));
    }
    let cut = desk.set_lockdown(true, &reason, staff).await?;
    Ok(format!(
        "Lockdown is on: all remote access is stopped and no new session can start until `sekisho-broker lockdown off`; {}.",
        sessions(cut)
    ))
}

/// `lockdown off [--reason TEXT] --as STAFF`.
pub async fn lockdown_off(desk: &Desk, reason: &str, staff: &str) -> Result<String, CliError> {
    let current = desk.lockdown().await?;
    if !current.active {
        return Ok("Lockdown is not on; nothing changed.".to_owned());
    }
    let reason = reason.trim();
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(CliError::Input(
            "A reason is one line of at most 500 characters.".to_owned(),
        ));
    }
    desk.set_lockdown(false, reason, staff).await?;
    Ok("Lockdown lifted: technicians may ask for sessions again.".to_owned())
}

/// `lockdown status`.
pub async fn lockdown_status(desk: &Desk) -> Result<String, CliError> {
    let state = desk.lockdown().await?;
    let zone = desk.zone();
    Ok(if state.active {
        format!(
            "Lockdown is ON since {} {}, set by {}: {}",
            zone.format(state.since),
            zone.name(),
            clean(&state.by),
            clean(&state.reason)
        )
    } else if state.by.is_empty() {
        "Lockdown is off.".to_owned()
    } else {
        format!(
            "Lockdown is off (lifted {} {} by {}).",
            zone.format(state.since),
            zone.name(),
            clean(&state.by)
        )
    })
}

/// `technician list`.
pub async fn technician_list(desk: &Desk) -> Result<String, CliError> {
    let technicians = desk.store().technicians().await.map_err(CliError::Store)?;
    if technicians.is_empty() {
        return Ok("No technicians yet.".to_owned());
    }
    let mut table = Table::new(&["VENDOR", "TECHNICIAN", "LOCKED", "FAILURES"]);
    let mut any_locked = false;
    for technician in &technicians {
        any_locked |= technician.locked;
        table.row(vec![
            clean(&technician.vendor),
            clean(&technician.technician),
            if technician.locked { "yes" } else { "no" }.to_owned(),
            technician.otp_failures.to_string(),
        ]);
    }
    let mut out = table.render();
    if any_locked {
        out.push_str(
            "\nA locked technician cannot open sessions until `sekisho-broker technician unlock VENDOR TECHNICIAN`.",
        );
    }
    Ok(out)
}

/// `technician unlock VENDOR TECHNICIAN`: after too many wrong one-time passwords.
pub async fn technician_unlock(
    desk: &Desk,
    vendor: &str,
    technician: &str,
    by: &str,
) -> Result<String, CliError> {
    match desk
        .store()
        .unlock_technician(vendor, technician, by, desk.now())
        .await
    {
        Ok(()) => Ok(format!(
            "Unlocked {}/{}; their count of wrong one-time passwords is back to zero.",
            clean(vendor),
            clean(technician)
        )),
        Err(StoreError::NotFound) => Err(CliError::NoSuchTechnician {
            vendor: clean(vendor),
            technician: clean(technician),
        }),
        Err(other) => Err(CliError::Store(other)),
    }
}

/// What `dev-issue` is asked to make.
#[derive(Debug, Clone)]
pub struct DevIssue {
    /// The vendor id (a file in `policies/vendors/`).
    pub vendor: String,
    /// The technician id.
    pub technician: String,
    /// Where `ca.pem`, `client.pem` and `client.key` go.
    pub out: PathBuf,
    /// Days the certificate is valid.
    pub days: u64,
    /// Where to also write the raw TOTP secret (lowercase hex, 0600), for scripts and tests.
    pub totp_secret_out: Option<PathBuf>,
    /// Who issues it, for the audit log.
    pub by: String,
}

/// `dev-issue`: a client certificate and key for a technician, and a new TOTP secret, shown
/// once. Nothing is created for a vendor the policies do not name.
pub async fn dev_issue(
    config: &BrokerConfig,
    issue: &DevIssue,
    now: SystemTime,
) -> Result<String, CliError> {
    // Check what was typed before anything is created on disk.
    let policies = PolicySet::load(&config.policies_dir).map_err(|errors| {
        CliError::Open(crate::BindError::Policy {
            dir: config.policies_dir.clone(),
            errors,
        })
    })?;
    if policies.vendor(&issue.vendor).is_none() {
        return Err(CliError::Input(format!(
            "There is no vendor `{}` in {}; add policies/vendors/{}.toml first.",
            clean(&issue.vendor),
            config.policies_dir.display(),
            clean(&issue.vendor)
        )));
    }
    let identity = TechnicianIdentity::new(&issue.vendor, &issue.technician)
        .map_err(|e| CliError::Input(format!("{e}.")))?;
    let validity = Duration::from_secs(issue.days.saturating_mul(24 * 3600));
    if issue.days == 0 || validity > MAX_CLIENT_VALIDITY {
        return Err(CliError::Input(
            "--days must be between 1 and 365.".to_owned(),
        ));
    }

    let hospital = Hospital::open(config).await?;
    let pki = BrokerPki::load_or_create(&config.data_dir)?;
    let issued = pki.issue_client_certificate(&identity, validity)?;
    let [ca, cert, key] = issued.write_to(&issue.out, pki.ca_pem())?;
    let secret = hospital
        .set_technician_secret(&identity, now, &issue.by)
        .await?;
    let issued_event = AuditEvent::new(
        now,
        Actor::Staff(issue.by.clone()),
        EventKind::CertificateIssued,
    )
    .technician(identity.vendor(), identity.technician())
    .detail("valid_days", issue.days)
    .detail("kind", "development (dev-issue)");
    hospital.store.record(&issued_event).await.map_err(|e| {
        CliError::Input(format!(
            "The certificate was written but could not be recorded ({e}); remove {} and try again.",
            issue.out.display()
        ))
    })?;
    let uri = crate::otp::otpauth_uri(
        &secret,
        &hospital.policies.hospital().name,
        &identity.to_string(),
    )?;
    if let Some(path) = &issue.totp_secret_out {
        write_secret_hex(path, &secret)?;
    }
    hospital.store.close().await;

    let days = issue.days;
    let mut out = format!(
        "Issued a development certificate for {identity}, valid {days} days:\n  broker CA:   {}\n  certificate: {}\n  key:         {}\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    out.push_str(&format!(
        "One-time passwords for {identity}: this is shown once and replaces any earlier secret; add it to an authenticator app now:\n  {uri}\n"
    ));
    if let Some(path) = &issue.totp_secret_out {
        out.push_str(&format!(
            "  The raw secret (hex) is also in {}, readable by you only.\n",
            path.display()
        ));
    }
    out.push_str(&format!(
        "The technician sets, once:\n  export SEKISHO_BROKER=HOST:{DEFAULT_PORT} SEKISHO_CA={} SEKISHO_CERT={} SEKISHO_KEY={}\nthen asks for a session with: sekisho request --target TARGET --purpose TEXT --for 1h",
        ca.display(),
        cert.display(),
        key.display()
    ));
    Ok(out)
}

/// Writes `secret` as lowercase hex and a newline to `path`, readable by its owner only (a
/// new file replaces any old one atomically, so wider permissions never carry over).
fn write_secret_hex(path: &Path, secret: &Secret<Vec<u8>>) -> Result<(), CliError> {
    let mut hex: String = secret
        .expose_secret()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    hex.push('\n');
    Ok(crate::pki::files::write_private(path, hex.as_bytes())?)
}
