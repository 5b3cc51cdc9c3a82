//! `staff list|invite|disable|enable`: the web UI's staff accounts from the broker host.
//!
//! The web UI's Staff page does the same for a logged-in admin; this is for the host's
//! administrator when no admin can log in (the only admin locked out, or lost their phone):
//! `staff invite NAME --role admin` prints a one-time link that resets the account (a new
//! password and TOTP secret, taking effect once the person confirms the new authenticator
//! with a code on the link's page). Links are shown once; only their hash is stored.

use super::CliError;
use super::table::{Table, clean};
use crate::staff::{Role, Roles, StaffDirectory, StaffError};

fn staff_error(error: StaffError) -> CliError {
    match error {
        StaffError::Store(e) => CliError::Store(e),
        other => CliError::Input(other.to_string()),
    }
}

/// `staff list`.
pub async fn staff_list(staff: &StaffDirectory) -> Result<String, CliError> {
    let members = staff.members().await.map_err(staff_error)?;
    if members.is_empty() {
        return Ok(
            "No staff accounts yet; `sekisho-broker staff invite NAME --role admin` makes a one-time link for the first admin (the broker also prints one at its start)."
                .to_owned(),
        );
    }
    let (lockout, now) = (staff.lockout(), staff.clock().now());
    let mut table = Table::new(&["NAME", "ROLES", "STATE", "FAILED LOGINS"]);
    for member in &members {
        let state = if member.disabled {
            "disabled".to_owned()
        } else {
            match member.locked_until(lockout, now) {
                None => "active".to_owned(),
                Some(None) => "locked until reset".to_owned(),
                Some(Some(end)) => format!("locked until {}", crate::audit::timestamp(end)),
            }
        };
        table.row(vec![
            clean(&member.name),
            clean(&member.roles),
            state,
            member.login_failures.to_string(),
        ]);
    }
    Ok(table.render())
}

/// `staff invite NAME --role ROLE [--role ROLE] [--web-url URL]`: a one-time link that
/// creates the account, or resets it (new password and TOTP secret, lockout lifted).
pub async fn staff_invite(
    staff: &StaffDirectory,
    name: &str,
    roles: &[String],
    web_url: Option<&str>,
    by: &crate::audit::Actor,
) -> Result<String, CliError> {
    let mut parsed = Vec::new();
    for role in roles.iter().flat_map(|role| role.split(',')) {
        let role = role.trim();
        parsed.push(Role::parse(role).ok_or_else(|| {
            CliError::Input(format!(
                "`{}` is not a role; use approver, admin or auditor.",
                clean(role)
            ))
        })?);
    }
    let canonical = crate::staff::check_name(name).map_err(staff_error)?;
    let existed = staff
        .store()
        .staff_member(&canonical)
        .await
        .map_err(CliError::Store)?
        .is_some();
    let token = staff
        .invite_as(&canonical, &Roles::new(parsed), by)
        .await
        .map_err(staff_error)?;
    let base = web_url
        .map(|url| url.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("https://BROKER-HOST:{}", crate::web::DEFAULT_WEB_PORT));
    let mut out = format!(
        "{} {}: give them this one-time link (valid 24 hours, works once, shown only now):\n\n  {base}/setup/{}\n",
        if existed {
            "Reset link for"
        } else {
            "Link to create the account"
        },
        clean(&canonical),
        token.expose_secret()
    );
    if web_url.is_none() {
        out.push_str(
            "\nReplace BROKER-HOST with the address staff reach the web UI at (or pass --web-url next time).",
        );
    }
    Ok(out.trim_end().to_owned())
}

/// `staff disable NAME` and `staff enable NAME`.
pub async fn staff_set_disabled(
    staff: &StaffDirectory,
    name: &str,
    disabled: bool,
    by: &crate::audit::Actor,
) -> Result<String, CliError> {
    staff
        .set_disabled_as(name, disabled, by)
        .await
        .map_err(staff_error)?;
    Ok(if disabled {
        format!(
            "{} is disabled; their browser sessions are over.",
            clean(name)
        )
    } else {
        format!("{} is enabled.", clean(name))
    })
}
