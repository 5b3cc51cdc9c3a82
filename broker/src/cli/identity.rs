//! `vendor add|list|disable|enable` and `technician add|list|disable|enable|unlock|reset`.
//!
//! Adding a technician and resetting one print the enrollment token once, with the whole
//! command the technician runs (broker address, token, CA fingerprint). The token is never
//! stored or printed again.

use std::time::Duration;

use super::table::{Table, clean, cut};
use super::{CliError, required_reason};
use crate::approval::Desk;
use crate::identity::{self, EnrollmentToken, IdentityError};
use crate::pki::TechnicianIdentity;
use crate::store::{NewTechnician, StoreError};

/// What the enrollment command printed for a technician says about this broker.
#[derive(Debug, Clone)]
pub struct EnrollmentHints {
    /// `HOST:PORT` technicians reach the broker at, if the admin said.
    pub broker_address: Option<String>,
    /// The CA fingerprint (`sha256:…`).
    pub ca_fingerprint: String,
}

fn identity_error(error: IdentityError) -> CliError {
    match error {
        IdentityError::Store(e) => CliError::Store(e),
        other => CliError::Input(capitalised(&format!("{other}."))),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn ended(count: u64) -> String {
    match count {
        0 => "no request or session was open".to_owned(),
        1 => "1 open request or session was ended".to_owned(),
        n => format!("{n} open requests or sessions were ended"),
    }
}

/// `vendor add VENDOR`.
pub async fn vendor_add(desk: &Desk, vendor: &str, by: &str) -> Result<String, CliError> {
    identity::add_vendor(desk.store(), &desk.policies(), vendor, by, desk.now())
        .await
        .map_err(identity_error)?;
    Ok(format!(
        "Added vendor `{}`; add its technicians with `sekisho-broker technician add {} TECHNICIAN --name \"FULL NAME\" --email ADDRESS`.",
        clean(vendor),
        clean(vendor)
    ))
}

/// `vendor list`: every vendor with a policy file or a record, and its state.
pub async fn vendor_list(desk: &Desk) -> Result<String, CliError> {
    let rows = desk.store().vendors().await.map_err(CliError::Store)?;
    let technicians = desk.store().technicians().await.map_err(CliError::Store)?;
    let policies = desk.policies();
    let mut ids: Vec<String> = policies.vendors().map(|v| v.id.clone()).collect();
    for row in &rows {
        if !ids.contains(&row.vendor) {
            ids.push(row.vendor.clone());
        }
    }
    ids.sort();
    if ids.is_empty() {
        return Ok("No vendors: add a policy file to policies/vendors/ first.".to_owned());
    }
    let mut table = Table::new(&["VENDOR", "NAME", "STATE", "TECHNICIANS", "NOTE"]);
    for id in &ids {
        let policy = policies.vendor(id);
        let row = rows.iter().find(|row| &row.vendor == id);
        let state = match (row, policy) {
            (None, _) => "not added",
            (Some(_), None) => "no policy",
            (Some(row), Some(_)) if !row.enabled => "disabled",
            (Some(_), Some(_)) => "enabled",
        };
        let count = technicians.iter().filter(|t| &t.vendor == id).count();
        let note = match (row, policy) {
            (None, _) => format!("sekisho-broker vendor add {id}"),
            (Some(_), None) => "its policy file is gone: nobody can connect".to_owned(),
            (Some(row), _) => row.disabled_reason.clone(),
        };
        table.row(vec![
            clean(id),
            cut(policy.map(|p| p.name.as_str()).unwrap_or("-"), 40),
            state.to_owned(),
            count.to_string(),
            cut(&note, 60),
        ]);
    }
    Ok(table.render())
}

/// `vendor disable VENDOR --reason TEXT` and `vendor enable VENDOR`.
pub async fn vendor_set_enabled(
    desk: &Desk,
    vendor: &str,
    enabled: bool,
    reason: &str,
    by: &str,
) -> Result<String, CliError> {
    let reason = if enabled {
        reason.trim().to_owned()
    } else {
        required_reason(reason, "recorded and shown to the vendor's technicians")?
    };
    let count =
        identity::set_vendor_enabled(desk.store(), vendor, enabled, &reason, by, desk.now())
            .await
            .map_err(identity_error)?;
    Ok(if enabled {
        format!(
            "Vendor `{}` is enabled: its technicians may connect again.",
            clean(vendor)
        )
    } else {
        format!(
            "Vendor `{}` is disabled: its technicians are refused at their next connection and {}.",
            clean(vendor),
            ended(count)
        )
    })
}

/// What `technician add` is asked to make.
#[derive(Debug, Clone)]
pub struct TechnicianToAdd {
    /// The vendor.
    pub vendor: String,
    /// The technician's id.
    pub technician: String,
    /// Full name.
    pub display_name: String,
    /// Contact address.
    pub email: String,
    /// How long the token works.
    pub valid_for: Duration,
}

/// `technician add VENDOR TECHNICIAN --name TEXT --email ADDRESS [--valid-for 24h]`.
pub async fn technician_add(
    desk: &Desk,
    add: &TechnicianToAdd,
    hints: &EnrollmentHints,
    by: &str,
) -> Result<String, CliError> {
    let display_name = one_line(&add.display_name, "--name", "the technician's full name")?;
    let email = add.email.trim();
    if email.chars().any(char::is_control) || email.chars().count() > 200 {
        return Err(CliError::Input(
            "--email is one line of at most 200 characters.".to_owned(),
        ));
    }
    let new = NewTechnician {
        vendor: &add.vendor,
        technician: &add.technician,
        display_name: &display_name,
        email,
    };
    let token = identity::add_technician(
        desk.store(),
        &desk.policies(),
        &new,
        add.valid_for,
        by,
        desk.now(),
    )
    .await
    .map_err(identity_error)?;
    let identity = TechnicianIdentity::new(&add.vendor, &add.technician)
        .map_err(|e| CliError::Input(format!("{e}.")))?;
    Ok(format!(
        "Added technician {identity} ({}).\n{}",
        clean(&display_name),
        enrollment_instructions(desk, &identity, &token, hints)
    ))
}

/// `technician reset VENDOR TECHNICIAN`: revokes their certificates and one-time-password
/// secret, ends their sessions, and prints a new enrollment token.
pub async fn technician_reset(
    desk: &Desk,
    vendor: &str,
    technician: &str,
    valid_for: Duration,
    hints: &EnrollmentHints,
    by: &str,
) -> Result<String, CliError> {
    let identity = TechnicianIdentity::new(vendor, technician)
        .map_err(|e| CliError::Input(format!("{e}.")))?;
    let (token, count) =
        identity::reset_technician(desk.store(), &identity, valid_for, by, desk.now())
            .await
            .map_err(identity_error)?;
    Ok(format!(
        "Reset {identity}: their certificates and one-time-password secret are revoked and {}.\n{}",
        ended(count),
        enrollment_instructions(desk, &identity, &token, hints)
    ))
}

fn enrollment_instructions(
    desk: &Desk,
    identity: &TechnicianIdentity,
    token: &EnrollmentToken,
    hints: &EnrollmentHints,
) -> String {
    let broker = hints
        .broker_address
        .clone()
        .unwrap_or_else(|| format!("BROKER-HOST:{}", crate::DEFAULT_PORT));
    let mut out = format!(
        "Give {identity} this command by a channel you trust (it holds a one-time token that works once, until {} {}):\n\n  sekisho enroll --broker {broker} --token {} --ca-fingerprint {}\n\n",
        desk.zone().format(token.expires_at),
        desk.zone().name(),
        token.text.expose_secret(),
        hints.ca_fingerprint
    );
    if hints.broker_address.is_none() {
        out.push_str(
            "Replace BROKER-HOST with the address technicians reach this broker at (or pass --broker-address next time).\n",
        );
    }
    out.push_str(
        "The fingerprint lets their client check it reached this broker and no other; read it to them over the phone if the command travels by email. The token is shown only now: if it is lost, run `sekisho-broker technician reset` for a new one.",
    );
    out
}

fn one_line(text: &str, option: &str, what: &str) -> Result<String, CliError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(CliError::Input(format!("Give {what} with {option}.")));
    }
    if text.chars().count() > 200 || text.chars().any(char::is_control) {
        return Err(CliError::Input(format!(
            "{option} is one line of at most 200 characters."
        )));
    }
    Ok(text.to_owned())
}

/// `technician list`.
pub async fn technician_list(desk: &Desk) -> Result<String, CliError> {
    let technicians = desk.store().technicians().await.map_err(CliError::Store)?;
    if technicians.is_empty() {
        return Ok(
            "No technicians yet; add one with `sekisho-broker technician add VENDOR TECHNICIAN --name \"FULL NAME\" --email ADDRESS`."
                .to_owned(),
        );
    }
    let expiries = desk
        .store()
        .certificate_expiries()
        .await
        .map_err(CliError::Store)?;
    let zone = desk.zone();
    let mut table = Table::new(&[
        "VENDOR",
        "TECHNICIAN",
        "NAME",
        "STATE",
        "CERTIFICATE UNTIL",
        "FAILURES",
    ]);
    let mut any_locked = false;
    for technician in &technicians {
        any_locked |= technician.locked;
        let state = if !technician.enabled {
            "disabled"
        } else if technician.locked {
            "locked"
        } else if technician.is_enrolled() {
            "enrolled"
        } else {
            "not enrolled"
        };
        let until = expiries
            .iter()
            .find(|(vendor, name, _)| {
                vendor == &technician.vendor && name == &technician.technician
            })
            .filter(|_| technician.is_enrolled())
            .map(|(_, _, not_after)| zone.format(*not_after))
            .unwrap_or_else(|| "-".to_owned());
        table.row(vec![
            clean(&technician.vendor),
            clean(&technician.technician),
            cut(&technician.display_name, 30),
            state.to_owned(),
            until,
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

/// `technician disable VENDOR TECHNICIAN --reason TEXT` and `technician enable …`.
pub async fn technician_set_enabled(
    desk: &Desk,
    vendor: &str,
    technician: &str,
    enabled: bool,
    reason: &str,
    by: &str,
) -> Result<String, CliError> {
    let identity = TechnicianIdentity::new(vendor, technician)
        .map_err(|e| CliError::Input(format!("{e}.")))?;
    let reason = if enabled {
        reason.trim().to_owned()
    } else {
        required_reason(reason, "recorded and shown to the technician")?
    };
    let count =
        identity::set_technician_enabled(desk.store(), &identity, enabled, &reason, by, desk.now())
            .await
            .map_err(identity_error)?;
    Ok(if enabled {
        format!("{identity} is enabled: they may connect again.")
    } else {
        format!(
            "{identity} is disabled: refused at their next connection, and {}.",
            ended(count)
        )
    })
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
