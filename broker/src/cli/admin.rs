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
