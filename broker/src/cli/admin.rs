//! `lockdown on|off|status`.

use super::table::clean;
use super::{CliError, required_reason};
use crate::approval::Desk;

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

/// `lockdown off [--reason TEXT] --as ADMIN` (and the web's lift): `staff` is an admin,
/// checked by the caller ([`Duty::LockdownLift`](crate::staff::Duty::LockdownLift)). Where
/// `hospital.toml` says `lockdown_lift_admins = 2`, the first admin's lift is recorded as
/// pending and the lockdown stays on until a second, different admin lifts it too.
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
    if desk.policies().hospital().staff.lockdown_lift_admins >= 2 {
        if current.lift_pending_by.is_empty() {
            desk.ask_lockdown_lift(reason, staff).await?;
            return Ok(format!(
                "Your lift is recorded as pending: the lockdown stays on until a second, different admin lifts it too (hospital.toml asks for two admins), {} first.",
                clean(staff)
            ));
        }
        if current.lift_pending_by == staff {
            return Err(CliError::Input(format!(
                "You ({}) lifted this lockdown already; it stays on until a second, different admin lifts it too.",
                clean(staff)
            )));
        }
    }
    desk.set_lockdown(false, reason, staff).await?;
    Ok(if current.lift_pending_by.is_empty() {
        "Lockdown lifted: technicians may ask for sessions again.".to_owned()
    } else {
        format!(
            "Lockdown lifted, confirming {}'s lift: technicians may ask for sessions again.",
            clean(&current.lift_pending_by)
        )
    })
}

/// `lockdown status`.
pub async fn lockdown_status(desk: &Desk) -> Result<String, CliError> {
    let state = desk.lockdown().await?;
    let zone = desk.zone();
    Ok(if state.active && !state.lift_pending_by.is_empty() {
        format!(
            "Lockdown is ON since {} {}, set by {}: {}; {} lifted it at {} {}, pending a second, different admin's lift.",
            zone.format(state.since),
            zone.name(),
            clean(&state.by),
            clean(&state.reason),
            clean(&state.lift_pending_by),
            zone.format(state.lift_pending_at),
            zone.name(),
        )
    } else if state.active {
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
