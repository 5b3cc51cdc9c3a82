//! `policy check|render|reload`: the policy files checked offline, written back as the
//! document the hospital and the vendor sign, and put in force on the running brokers.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::CliError;
use crate::BrokerConfig;
use crate::audit::EventKind;
use crate::policy::PolicySet;
use crate::policy::render::Format;
use crate::store::{AuditFilter, Store};

/// How long `policy reload` waits for a running broker to report.
const RELOAD_PATIENCE: Duration = Duration::from_secs(5);

fn load(dir: &Path) -> Result<PolicySet, CliError> {
    PolicySet::load(dir).map_err(|errors| CliError::Policy {
        dir: dir.to_path_buf(),
        errors,
    })
}

/// Checks every file in `dir`; the summary, or every problem as `file:line: reason`.
pub fn policy_check(dir: &Path) -> Result<String, CliError> {
    let policies = load(dir)?;
    Ok(format!(
        "{}: {} vendor(s), {} file(s), all good.",
        dir.display(),
        policies.vendors().count(),
        policies.files().len()
    ))
}

/// The responsibility document for `vendor` (every vendor when `None`).
pub fn policy_render(
    dir: &Path,
    vendor: Option<&str>,
    format: Format,
    checkpoint_key: Option<&str>,
) -> Result<String, CliError> {
    let policies = load(dir)?;
    let chosen = match vendor {
        None => Vec::new(),
        Some(id) => vec![policies.vendor(id).ok_or_else(|| {
            CliError::Input(format!(
                "There is no vendor `{id}` in {}; the vendors are: {}.",
                dir.display(),
                policies
                    .vendors()
                    .map(|vendor| vendor.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?],
    };
    Ok(crate::policy::render::render_with_checkpoint_key(
        &policies,
        &chosen,
        format,
        checkpoint_key,
    ))
}

/// Checks the policies here, then asks every broker on the database to reload its own
/// policy directory, and reports what the first broker to answer did.
pub async fn policy_reload(
    config: &BrokerConfig,
    by: &str,
    now: SystemTime,
) -> Result<String, CliError> {
    let policies = load(&config.policies_dir)?;
    super::expect_existing_database(config)?;
    let location = config.store_location();
    let store = Store::open(&location)
        .await
        .map_err(|source| CliError::Open(crate::BindError::Store { location, source }))?;
    let asked = crate::reload::request_reload(&store, by, now)
        .await
        .map_err(CliError::Store)?;
    let digest = crate::policy_digest(&policies);
    let filter = AuditFilter {
        kinds: vec![EventKind::PolicyLoaded, EventKind::PolicyReloadRefused],
        after_seq: asked,
        ..Default::default()
    };
    let answer = tokio::time::timeout(RELOAD_PATIENCE, async {
        loop {
            match store.audit_events(&filter).await {
                Ok(events) if !events.is_empty() => return Ok(events),
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    store.close().await;
    let events = match answer {
        Err(_) => {
            return Ok(format!(
                "Reload requested (policies here: sha256 {digest}). No running broker answered within {}s; a broker reads its policies when it starts.",
                RELOAD_PATIENCE.as_secs()
            ));
        }
        Ok(result) => result.map_err(CliError::Store)?,
    };
    let mut lines = Vec::new();
    let mut refused = false;
    for stored in events {
        let detail = |key: &str| {
            stored
                .event
                .detail_value(key)
                .unwrap_or_default()
                .to_owned()
        };
        match stored.event.kind {
            EventKind::PolicyReloadRefused => {
                refused = true;
                lines.push(format!(
                    "{} refused the reload and keeps the policies in force: {}",
                    stored.event.actor,
                    detail("problems")
                ));
            }
            _ => lines.push(format!(
                "{} applied the policies (sha256 {}).",
                stored.event.actor,
                detail("sha256")
            )),
        }
    }
    if refused {
        return Err(CliError::Input(lines.join("\n")));
    }
    Ok(lines.join("\n"))
}
