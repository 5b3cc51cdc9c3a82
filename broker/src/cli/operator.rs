//! Who acts at the command line: a staff member proven by their own one-time code, or, on
//! the recovery path of `staff invite|enable|disable`, the host's administrator.
//!
//! `--as NAME` names a staff account of the web UI; the command asks for a current code from
//! that account's authenticator (without echo on a terminal, or one line on standard input
//! with `--code-stdin`) and [`StaffDirectory::authenticate_operator`] checks it exactly as a
//! web login checks the code: the same account, the same spent steps (a code works once,
//! wherever it is typed), the same count of failures and lock. Then the account's roles must
//! allow the command's [`Duty`], by the table the web checks too. Nothing is taken from the
//! environment (`$USER` names an OS account, not a person who proved anything).
//!
//! `--host-admin` is for when no admin can log in (the only admin locked out, the first
//! admin's link lost): it is recorded as [`Actor::Host`] with the OS account that ran the
//! command, never under a staff name.

use std::io::{BufRead, IsTerminal, Read};

use super::CliError;
use super::table::clean;
use crate::audit::Actor;
use crate::secret::Secret;
use crate::staff::{Duty, StaffDirectory, StaffError};

/// The longest line taken from standard input as a code.
const CODE_LINE_LIMIT: u64 = 128;

/// The named staff member, authenticated with their own one-time code for `duty`; returns
/// their canonical name, which the action is recorded under.
pub async fn authenticate(
    staff: &StaffDirectory,
    name: Option<&str>,
    code_stdin: bool,
    duty: Duty,
) -> Result<String, CliError> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(CliError::Input(format!(
            "Say who you are with --as NAME (your staff account, which may {}); every action is recorded under the person who took it, after a one-time code from their own authenticator.",
            duty.what()
        )));
    }
    // A name that cannot be an account is refused before anyone is asked for a code.
    crate::staff::check_name(name).map_err(|e| CliError::Input(e.to_string()))?;
    let code = read_code(name, code_stdin)?;
    let from = format!("command line, {}", host_user());
    staff
        .authenticate_operator(name, code.expose_secret(), duty, &from)
        .await
        .map(|operator| operator.name)
        .map_err(|error| match error {
            StaffError::Store(e) => CliError::Store(e),
            other => CliError::Input(other.to_string()),
        })
}

/// One line with the code: from standard input with `--code-stdin`, else asked on the
/// terminal without echo.
fn read_code(name: &str, code_stdin: bool) -> Result<Secret<String>, CliError> {
    if code_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(CODE_LINE_LIMIT)
            .read_line(&mut line)
            .map_err(|e| {
                CliError::Input(format!(
                    "The one-time code could not be read from standard input ({e}); write it there as one line."
                ))
            })?;
        return Ok(Secret::new(line.trim().to_owned()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Input(
            "There is no terminal to ask for the one-time code on; pass --code-stdin and write the code to standard input.".to_owned(),
        ));
    }
    rpassword::prompt_password(format!(
        "One-time code from {}'s authenticator: ",
        clean(name)
    ))
    .map(|code| Secret::new(code.trim().to_owned()))
    .map_err(|e| {
        CliError::Input(format!(
            "The one-time code could not be read from the terminal ({e}); try again, or pass --code-stdin."
        ))
    })
}

/// The host's administrator, as recorded on the recovery path: the OS account running the
/// command.
pub fn host_admin() -> Actor {
    Actor::Host(host_user())
}

/// The OS account this process runs as: its name from `/etc/passwd`, else `uid-N`. Read from
/// the process's own `/proc` entry, not from `$USER` (which anyone can set).
fn host_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|meta| meta.uid()) else {
        return "unknown-uid".to_owned();
    };
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let listed: u32 = fields.nth(1)?.parse().ok()?;
                (listed == uid && !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()))
                    .then(|| name.to_owned())
            })
        });
    name.unwrap_or_else(|| format!("uid-{uid}"))
}
