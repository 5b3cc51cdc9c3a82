//! Reading a policy directory and resolving raw files into checked policies.
//!
//! Every step keeps going after a problem so that one run reports all of them: a file that
//! parses is resolved field by field, each failed field adding an error and leaving the
//! resolved value out; the result is used only if the whole directory had no errors.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::address::{check_dial_address, parse_host_port};
use super::duration::{MAX_SESSION_LIMIT, parse_duration};
use super::error::{FileErrors, PolicyError, PolicyErrors, quoted};
use super::raw::{
    RawAccess, RawDefaults, RawHospitalFile, RawResponsibility, RawStaff, RawTarget, RawVendor,
    RawVendorFile,
};
use super::{
    Access, Defaults, FILE_SHARE_PORTS, HospitalPolicy, IpNetwork, Owner, PolicySet,
    Responsibility, Resume, StaffLockout, StaffRules, Target, VendorPolicy, WeeklyHours,
};

const MAX_APPROVALS: i64 = 5;

pub(super) fn load(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    let not_a_directory = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some("the policy directory is not a directory".to_owned()),
        Err(error) => Some(format!("the policy directory cannot be opened ({error})")),
    };
    if let Some(reason) = not_a_directory {
        return Err(PolicyErrors(vec![PolicyError {
            path: dir.to_path_buf(),
            line: None,
            reason,
        }]));
    }

    let mut errors = Vec::new();
    let hospital_path = dir.join("hospital.toml");
    let hospital_text = read(&hospital_path, HOSPITAL_MISSING, &mut errors);
    let vendor_texts: Vec<(PathBuf, Option<String>)> =
        vendor_files(&dir.join("vendors"), &mut errors)
            .into_iter()
            .map(|path| {
                let text = read(&path, VENDOR_MISSING, &mut errors);
                (path, text)
            })
            .collect();
    let hospital = PolicyText {
        path: hospital_path,
        text: hospital_text.as_deref(),
    };
    let vendors = vendor_texts
        .iter()
        .map(|(path, text)| PolicyText {
            path: path.clone(),
            text: text.as_deref(),
        })
        .collect();
    resolve_all(hospital, vendors, errors)
}

/// [`load`] without the file system: `hospital.toml`'s text, and each vendor file's name in
/// `vendors/` and its text. Errors name `hospital.toml` and `vendors/NAME`. A name that
/// [`vendor_files`] would not have listed (not a visible `*.toml` file name, or given twice)
/// is an error, so a set from texts could also be a directory. Vendors load in name order,
/// as from a directory.
pub(super) fn from_texts(
    hospital: &str,
    vendors: &[(&str, &str)],
) -> Result<PolicySet, PolicyErrors> {
    let mut errors = Vec::new();
    let hospital = PolicyText {
        path: PathBuf::from("hospital.toml"),
        text: Some(hospital),
    };
    let mut sorted = vendors.to_vec();
    sorted.sort_by_key(|&(name, _)| name);
    let mut seen = HashSet::new();
    let vendors = sorted
        .into_iter()
        .map(|(name, text)| {
            let path = Path::new("vendors").join(name);
            let file_name = !name.starts_with('.')
                && name.ends_with(".toml")
                && Path::new(name).file_name() == Some(name.as_ref());
            let reason = if !file_name {
                Some("this is not a vendor policy file name; give a visible NAME.toml, without a directory")
            } else if !seen.insert(name) {
                Some("this file name is given twice; each vendor file needs a name of its own")
            } else {
                None
            };
            if let Some(reason) = reason {
                errors.push(PolicyError {
                    path: path.clone(),
                    line: None,
                    reason: reason.to_owned(),
                });
            }
            PolicyText {
                path,
                text: reason.is_none().then_some(text),
            }
        })
        .collect();
    resolve_all(hospital, vendors, errors)
}

/// One policy file: where it is and its text, `None` when it could not be read (already
/// among the errors).
struct PolicyText<'a> {
    path: PathBuf,
    text: Option<&'a str>,
}

/// Resolves the hospital file and the vendor files (in load order), adding to `errors` (what
/// reading them found).
fn resolve_all(
    hospital: PolicyText<'_>,
    vendor_texts: Vec<PolicyText<'_>>,
    mut errors: Vec<PolicyError>,
) -> Result<PolicySet, PolicyErrors> {
    let mut files = vec![hospital.path.clone()];
    let hospital = hospital
        .text
        .and_then(|text| resolve_file(&hospital.path, text, &mut errors, resolve_hospital));

    let mut vendors = Vec::new();
    let mut declared_ids = Vec::new();
    let defaults = hospital
        .as_ref()
        .map(|hospital| hospital.defaults.clone())
        .unwrap_or_default();
    for PolicyText { path, text } in vendor_texts {
        files.push(path.clone());
        let Some(text) = text else {
            continue;
        };
        let resolve = |raw: RawVendorFile, file: &mut FileErrors<'_>| {
            declared_ids.push(DeclaredId {
                id: raw.vendor.id.get_ref().clone(),
                file: path.clone(),
                line: file.line_of(raw.vendor.id.span().start),
            });
            resolve_vendor(raw, file, &defaults)
        };
        if let Some(vendor) = resolve_file(&path, text, &mut errors, resolve) {
            vendors.push(vendor);
        }
    }
    errors.extend(duplicate_ids(&declared_ids));
    if let Some(hospital) = &hospital {
        errors.extend(missing_required_items(hospital, &vendors, &declared_ids));
    }

    match hospital {
        Some(hospital) if errors.is_empty() => Ok(PolicySet {
            hospital,
            vendors,
            files,
        }),
        _ => {
            // Load order first, then line order; a stable sort keeps the order of errors
            // found on the same line.
            let rank = |path: &Path| files.iter().position(|file| file == path);
            errors.sort_by_key(|error| (rank(&error.path), error.line));
            Err(PolicyErrors(errors))
        }
    }
}

/// The `id` a vendor file declares, whether or not the rest of the file is valid.
struct DeclaredId {
    id: String,
    file: PathBuf,
    line: usize,
}

/// The same id declared in several files. The file named after the id owns it (or, when
/// none is, the first in load order); every other file declaring it is at fault. Files
/// have unique names, so this only happens together with an id ≠ file-name error, but it
/// points the administrator at the file that was copied.
fn duplicate_ids(declared: &[DeclaredId]) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&DeclaredId>> = BTreeMap::new();
    for declared in declared {
        groups.entry(&declared.id).or_default().push(declared);
    }
    for (id, group) in groups {
        if group.len() < 2 {
            continue;
        }
        let owner = group
            .iter()
            .find(|declared| declared.file.file_stem().is_some_and(|stem| stem == id))
            .unwrap_or(&group[0]);
        for declared in &group {
            if declared.file != owner.file {
                errors.push(PolicyError {
                    path: declared.file.clone(),
                    line: Some(declared.line),
                    reason: format!(
                        "vendor id `{id}` is already used by {}; each vendor id must be unique",
                        owner.file.display()
                    ),
                });
            }
        }
    }
    errors
}

/// Every item `hospital.toml` marks `required = true` must be stated by each vendor file
/// itself: the split of that item is then agreed with the vendor, not assumed.
fn missing_required_items(
    hospital: &HospitalPolicy,
    vendors: &[VendorPolicy],
    declared: &[DeclaredId],
) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    for vendor in vendors {
        let line = declared
            .iter()
            .find(|declared| declared.file == vendor.file)
            .map(|declared| declared.line);
        for required in hospital.responsibility.iter().filter(|item| item.required) {
            if !vendor
                .responsibility
                .iter()
                .any(|own| own.item == required.item)
            {
                errors.push(PolicyError {
                    path: vendor.file.clone(),
                    line,
                    reason: format!(
                        "the responsibility item {} is required by hospital.toml, but this file does not state it; add a [[responsibility]] with that item and its owner",
                        quoted(&required.item)
                    ),
                });
            }
        }
    }
    errors
}

const HOSPITAL_MISSING: &str =
    "the hospital policy file is missing; every policy directory needs a hospital.toml";
/// A listed vendor file that then cannot be found: a dangling symlink, or removed meanwhile.
const VENDOR_MISSING: &str = "the file does not exist (is it a dangling link?)";

/// The file's text, or `None` after adding why it cannot be had.
fn read(path: &Path, missing: &str, errors: &mut Vec<PolicyError>) -> Option<String> {
    let error = match std::fs::read_to_string(path) {
        Ok(text) => return Some(text),
        Err(error) => error,
    };
    let reason = match error.kind() {
        io::ErrorKind::NotFound => missing.to_owned(),
        io::ErrorKind::InvalidData => "the file is not UTF-8 text".to_owned(),
        _ => format!("the file cannot be read ({error})"),
    };
    errors.push(PolicyError {
        path: path.to_path_buf(),
        line: None,
        reason,
    });
    None
}

/// The `*.toml` files in `vendors/`, sorted by name. A missing `vendors/` means no vendors.
fn vendor_files(dir: &Path, errors: &mut Vec<PolicyError>) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            errors.push(PolicyError {
                path: dir.to_path_buf(),
                line: None,
                reason: format!("the vendors directory cannot be read ({error})"),
            });
            return Vec::new();
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => paths.push(entry.path()),
            Err(error) => errors.push(PolicyError {
                path: dir.to_path_buf(),
                line: None,
                reason: format!("the vendors directory cannot be read ({error})"),
            }),
        }
    }
    paths.sort();
    paths.retain(|path| {
        let hidden = path
            .file_name()
            .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
        let toml = path.extension().is_some_and(|ext| ext == "toml");
        // Follows symlinks; a dangling one is kept so that reading it reports the problem.
        let directory = path.is_dir();
        let keep = toml && !hidden && !directory;
        if !keep {
            tracing::warn!(
                path = %path.display(),
                "ignoring a file in the policy vendors directory: only visible *.toml files are vendor policies"
            );
        }
        keep
    });
    paths
}

/// Parses `text` as `R` and resolves it, adding every problem to `errors`.
fn resolve_file<R: DeserializeOwned, T>(
    path: &Path,
    text: &str,
    errors: &mut Vec<PolicyError>,
    resolve: impl FnOnce(R, &mut FileErrors<'_>) -> Option<T>,
) -> Option<T> {
    let mut file = FileErrors::new(path, text);
    let resolved = match toml::from_str::<R>(text) {
        Ok(raw) => resolve(raw, &mut file),
        Err(error) => {
            let message = error.message().trim().replace('\n', " ");
            file.at_span(error.span(), message);
            None
        }
    };
    let ok = file.errors.is_empty();
    errors.append(&mut file.errors);
    resolved.filter(|_| ok)
}

fn resolve_hospital(raw: RawHospitalFile, file: &mut FileErrors<'_>) -> Option<HospitalPolicy> {
    let hospital = raw.hospital;
    let name = non_empty(file, "name", hospital.name);
    let timezone = timezone(file, hospital.timezone);
    let emergency_contact =
        optional_non_empty(file, "emergency_contact", hospital.emergency_contact);
    if let Some(moved) = &hospital.review_within {
        file.at(
            moved,
            "`review_within` belongs in the [defaults] table now; move it there",
        );
    }
    let (review_within, defaults) = match raw.defaults {
        None => (Some(DEFAULT_REVIEW_WITHIN), Some(Defaults::default())),
        Some(raw) => defaults_table(file, raw),
    };
    let responsibility = responsibilities(file, raw.responsibility, true);
    let staff = match raw.staff {
        None => Some(StaffRules::default()),
        Some(raw) => staff_table(file, raw),
    };
    let moved = hospital.review_within.is_some();
    let policy = HospitalPolicy {
        name: name?,
        timezone: timezone?,
        emergency_contact: emergency_contact?,
        review_within: review_within?,
        defaults: defaults?,
        responsibility: responsibility?,
        staff: staff?,
    };
    (!moved).then_some(policy)
}

/// `[staff]`: two admins to lift a lockdown, roles held together (with the reason why).
fn staff_table(file: &mut FileErrors<'_>, raw: RawStaff) -> Option<StaffRules> {
    let mut ok = true;
    let lockdown_lift_admins = match raw.lockdown_lift_admins {
        None => 1,
        Some(value) => match u8::try_from(*value.get_ref()) {
            Ok(n @ (1 | 2)) => n,
            _ => {
                file.at(
                    &value,
                    format!(
                        "`lockdown_lift_admins` must be 1 or 2, not {}",
                        value.get_ref()
                    ),
                );
                ok = false;
                1
            }
        },
    };
    let allow = raw
        .allow_combined_roles
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    let combined_roles = match (allow, raw.combined_roles_reason) {
        (false, None) => None,
        (true, Some(reason)) if !reason.get_ref().trim().is_empty() => {
            Some(reason.get_ref().trim().to_owned())
        }
        (true, other) => {
            let message = "`allow_combined_roles = true` needs `combined_roles_reason = \"…\"`: say why one person may both approve or administer and audit (it is recorded and printed in the policy document)";
            match (&other, &raw.allow_combined_roles) {
                (Some(reason), _) => file.at(reason, message),
                (None, Some(allow)) => file.at(allow, message),
                (None, None) => {}
            }
            ok = false;
            None
        }
        (false, Some(reason)) => {
            file.at(
                &reason,
                "`combined_roles_reason` is for `allow_combined_roles = true`; remove it or allow combined roles",
            );
            ok = false;
            None
        }
    };
    ok.then_some(StaffRules {
        lockdown_lift_admins,
        combined_roles,
    })
}

/// `[defaults]`: the review limit, and the limits every vendor starts from.
fn defaults_table(
    file: &mut FileErrors<'_>,
    raw: RawDefaults,
) -> (Option<std::time::Duration>, Option<Defaults>) {
    let builtin = Defaults::default();
    let review = match raw.review_within {
        None => Some(DEFAULT_REVIEW_WITHIN),
        Some(value) => review_within(file, value),
    };
    let max_session = match raw.max_session {
        None => Some(builtin.max_session),
        Some(value) => max_session(file, value),
    };
    let answer_within = match raw.answer_within {
        None => Some(builtin.answer_within),
        Some(value) => bounded_duration(file, "answer_within", value, "30m", DAY),
    };
    let idle_timeout = match raw.idle_timeout {
        None => Some(builtin.idle_timeout),
        Some(value) => bounded_duration(file, "idle_timeout", value, "30m", DAY),
    };
    let warnings = match raw.warnings {
        None => Some(builtin.warnings),
        Some(list) => warnings(file, list),
    };
    let otp_lockout_after = match raw.otp_lockout_after {
        None => Some(builtin.otp_lockout_after),
        Some(value) => match u32::try_from(*value.get_ref()) {
            Ok(n) if (3..=10).contains(&n) => Some(n),
            _ => {
                file.at(
                    &value,
                    format!(
                        "`otp_lockout_after` must be from 3 to 10 wrong codes, not {}",
                        value.get_ref()
                    ),
                );
                None
            }
        },
    };
    let staff_lockout = match raw.staff_lockout {
        None => Some(builtin.staff_lockout),
        Some(value) => staff_lockout(file, value),
    };
    let defaults = (|| {
        Some(Defaults {
            max_session: max_session?,
            answer_within: answer_within?,
            idle_timeout: idle_timeout?,
            warnings: warnings?,
            otp_lockout_after: otp_lockout_after?,
            staff_lockout: staff_lockout?,
            require_approval_comment: raw
                .require_approval_comment
                .unwrap_or(builtin.require_approval_comment),
        })
    })();
    (review, defaults)
}

const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `staff_lockout`: a duration from one minute to a day, or `"until-reset"`.
fn staff_lockout(file: &mut FileErrors<'_>, value: Spanned<String>) -> Option<StaffLockout> {
    let text = value.get_ref().trim();
    if text == "until-reset" {
        return Some(StaffLockout::UntilReset);
    }
    match parse_duration(text) {
        Some(duration) if duration >= std::time::Duration::from_secs(60) && duration <= DAY => {
            Some(StaffLockout::For(duration))
        }
        _ => {
            file.at(
                &value,
                format!(
                    "`staff_lockout` must be a duration from \"1m\" to \"24h\" like \"15m\", or \"until-reset\", not {}",
                    quoted(value.get_ref())
                ),
            );
            None
        }
    }
}

/// A duration longer than zero and at most `limit`, e.g. `idle_timeout`.
fn bounded_duration(
    file: &mut FileErrors<'_>,
    field: &str,
    value: Spanned<String>,
    example: &str,
    limit: std::time::Duration,
) -> Option<std::time::Duration> {
    let text = value.get_ref();
    match parse_duration(text) {
        Some(duration) if !duration.is_zero() && duration <= limit => Some(duration),
        _ => {
            file.at(
                &value,
                format!(
                    "`{field}` must be a duration longer than zero and at most {} like {}, not {}",
                    quoted(&proto::duration::format_duration(limit)),
                    quoted(example),
                    quoted(text)
                ),
            );
            None
        }
    }
}

/// `warnings = ["10m", "2m"]`: at least one, each longer than zero and under an hour,
/// kept furthest first.
fn warnings(
    file: &mut FileErrors<'_>,
    list: Spanned<Vec<Spanned<String>>>,
) -> Option<Vec<std::time::Duration>> {
    if list.get_ref().is_empty() {
        file.at(
            &list,
            "`warnings` must name at least one time before the end, like [\"10m\", \"2m\"]",
        );
        return None;
    }
    let mut ok = true;
    let mut warnings = Vec::new();
    for value in list.into_inner() {
        match bounded_duration(
            file,
            "warnings",
            value,
            "10m",
            std::time::Duration::from_secs(3600),
        ) {
            Some(duration) => warnings.push(duration),
            None => ok = false,
        }
    }
    warnings.sort_by(|a, b| b.cmp(a));
    warnings.dedup();
    ok.then_some(warnings)
}

fn resolve_vendor(
    raw: RawVendorFile,
    file: &mut FileErrors<'_>,
    defaults: &Defaults,
) -> Option<VendorPolicy> {
    let RawVendor {
        id,
        name,
        emergency_contact,
        contract,
        subcontractors,
    } = raw.vendor;
    let id = vendor_id(file, id);
    let name = non_empty(file, "name", name);
    let emergency_contact = optional_non_empty(file, "emergency_contact", emergency_contact);
    let contract = optional_non_empty(file, "contract", contract);
    let mut subcontractor_names = Some(Vec::new());
    for value in subcontractors {
        match (
            non_empty(file, "subcontractors", value),
            subcontractor_names.as_mut(),
        ) {
            (Some(name), Some(names)) => names.push(name),
            (Some(_), None) => {}
            (None, _) => subcontractor_names = None,
        }
    }
    let targets = targets(file, raw.target);
    let access = match raw.access {
        Some(access) => access_table(file, access, defaults),
        None => Some(Access::with_defaults(defaults)),
    };
    let responsibility = responsibilities(file, raw.responsibility, false);
    Some(VendorPolicy {
        id: id?,
        name: name?,
        emergency_contact: emergency_contact?,
        contract: contract?,
        subcontractors: subcontractor_names?,
        targets: targets?,
        access: access?,
        responsibility: responsibility?,
        file: file.path().to_path_buf(),
    })
}

fn non_empty(file: &mut FileErrors<'_>, field: &str, value: Spanned<String>) -> Option<String> {
    if value.get_ref().trim().is_empty() {
        file.at(&value, format!("`{field}` must not be empty"));
        return None;
    }
    Some(value.into_inner())
}

/// `Some(None)` when absent; `None` when present but empty (an error).
fn optional_non_empty(
    file: &mut FileErrors<'_>,
    field: &str,
    value: Option<Spanned<String>>,
) -> Option<Option<String>> {
    match value {
        None => Some(None),
        Some(value) if value.get_ref().trim().is_empty() => {
            file.at(
                &value,
                format!("`{field}` must not be empty; leave it out if there is none"),
            );
            None
        }
        Some(value) => Some(Some(value.into_inner())),
    }
}

/// Only the shape is checked: `UTC`, or `Area/City` segments of letters, digits, `_`, `-`,
/// `+` (as in `America/Argentina/Buenos_Aires` or `Etc/GMT-9`). Whether the zone exists is
/// for whoever converts the clock, since this module has no time zone database.
fn timezone(file: &mut FileErrors<'_>, value: Spanned<String>) -> Option<String> {
    let text = value.get_ref();
    let segment_ok = |segment: &str| {
        !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
    };
    let ok = text == "UTC" || (text.contains('/') && text.split('/').all(segment_ok));
    if !ok {
        file.at(
            &value,
            format!(
                "`timezone` must be an IANA time zone name like \"Asia/Tokyo\" or \"UTC\", not {}",
                quoted(text)
            ),
        );
        return None;
    }
    Some(value.into_inner())
}

/// `[a-z0-9][a-z0-9._-]{0,62}`: safe in file names, URLs and logs.
fn is_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && text.len() <= 63
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

const NAME_RULE: &str =
    "1 to 63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit";

fn vendor_id(file: &mut FileErrors<'_>, id: Spanned<String>) -> Option<String> {
    if !is_name(id.get_ref()) {
        file.at(
            &id,
            format!("vendor id {} must be {NAME_RULE}", quoted(id.get_ref())),
        );
        return None;
    }
    let stem = file.path().file_stem().and_then(|stem| stem.to_str());
    if stem != Some(id.get_ref().as_str()) {
        let file_name = file
            .path()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reason = match stem {
            Some(stem) => format!(
                "vendor id `{}` does not match the file name {file_name}; this file must have id = {}",
                id.get_ref(),
                quoted(stem)
            ),
            None => format!(
                "vendor id `{}` does not match the file name {file_name}; the file must be named {}.toml",
                id.get_ref(),
                id.get_ref()
            ),
        };
        file.at(&id, reason);
        return None;
    }
    Some(id.into_inner())
}

fn targets(file: &mut FileErrors<'_>, raw: Vec<RawTarget>) -> Option<Vec<Target>> {
    let mut seen = HashSet::new();
    let mut targets = Some(Vec::with_capacity(raw.len()));
    for raw in raw {
        if !seen.insert(raw.name.get_ref().clone()) {
            file.at(
                &raw.name,
                format!("target `{}` is defined twice", raw.name.get_ref()),
            );
            targets = None;
            continue;
        }
        match (target(file, raw), targets.as_mut()) {
            (Some(target), Some(targets)) => targets.push(target),
            (Some(_), None) => {}
            (None, _) => targets = None,
        }
    }
    targets
}

fn target(file: &mut FileErrors<'_>, raw: RawTarget) -> Option<Target> {
    let name_ok = is_name(raw.name.get_ref());
    if !name_ok {
        file.at(
            &raw.name,
            format!(
                "target name {} must be {NAME_RULE}",
                quoted(raw.name.get_ref())
            ),
        );
    }
    let label = raw.name.get_ref();
    let address = match parse_host_port(raw.address.get_ref()) {
        Ok(address) => Some(address),
        Err(reason) => {
            file.at(
                &raw.address,
                format!(
                    "target `{label}` address {} {reason}",
                    quoted(raw.address.get_ref())
                ),
            );
            None
        }
    };
    let address = address?;
    let allow_broker_port = match raw.allow_broker_port {
        None => None,
        Some(why) if why.get_ref().trim().is_empty() => {
            file.at(
                &why,
                format!(
                    "target `{label}` `allow_broker_port` must say why the broker may connect to one of its own ports, e.g. \"the EHR's console shares this host\""
                ),
            );
            return None;
        }
        Some(why) => Some(why.get_ref().trim().to_owned()),
    };
    let target = Target {
        name: raw.name.get_ref().clone(),
        host: address.host,
        port: address.port,
        description: raw.description,
        allow_loopback: raw.allow_loopback,
        allow_file_share: raw.allow_file_share,
        allow_broker_port,
        critical: raw.critical,
    };
    if FILE_SHARE_PORTS.contains(&target.port) && !target.allow_file_share {
        file.at(
            &raw.address,
            format!(
                "target `{label}` address {} is a file-sharing port (SMB/NFS), the way ransomware spreads between networks; set `allow_file_share = true` only if the agreement really needs it",
                quoted(raw.address.get_ref())
            ),
        );
        return None;
    }
    // Only literals can be judged now; names are judged when resolved (DESIGN.md §8).
    if let Some(Err(refusal)) = address.ip.map(|ip| check_dial_address(&target, ip)) {
        file.at(
            &raw.address,
            format!(
                "target `{label}` address {} is {refusal}; set `allow_loopback = true` only for demos and tests",
                quoted(raw.address.get_ref())
            ),
        );
        return None;
    }
    name_ok.then_some(target)
}

fn access_table(file: &mut FileErrors<'_>, raw: RawAccess, defaults: &Defaults) -> Option<Access> {
    let hours = match raw.hours {
        None => Some(None),
        Some(hours) => match hours.get_ref().parse::<WeeklyHours>() {
            Ok(parsed) => Some(Some(parsed)),
            Err(reason) => {
                file.at(
                    &hours,
                    format!("`hours` {} {reason}", quoted(hours.get_ref())),
                );
                None
            }
        },
    };
    let max_session = match raw.max_session {
        None => Some(defaults.max_session),
        Some(value) => max_session(file, value),
    };
    let idle_timeout = match raw.idle_timeout {
        None => Some(defaults.idle_timeout),
        Some(value) => bounded_duration(file, "idle_timeout", value, "30m", DAY),
    };
    let approvals = match raw.approvals {
        None => Some(1),
        Some(value) => approval_count(file, "approvals", &value, 1),
    };
    let critical_approvals = match (raw.critical_approvals, approvals) {
        (None, approvals) => approvals.map(|n| n.max(2)),
        (Some(value), approvals) => {
            approval_count(file, "critical_approvals", &value, approvals.unwrap_or(1))
        }
    };
    let mut holidays = Some(Vec::with_capacity(raw.holidays.len()));
    for value in raw.holidays {
        let text = value.get_ref();
        let parsed = (text.len() == 10)
            .then(|| text.parse::<jiff::civil::Date>().ok())
            .flatten();
        match (parsed, holidays.as_mut()) {
            (Some(date), Some(dates)) => dates.push(date),
            (Some(_), None) => {}
            (None, _) => {
                file.at(
                    &value,
                    format!(
                        "`holidays` entry {} must be a date like \"2026-12-31\"",
                        quoted(text)
                    ),
                );
                holidays = None;
            }
        }
    }
    if let Some(dates) = holidays.as_mut() {
        dates.sort();
        dates.dedup();
    }
    let mut source_networks = Some(Vec::with_capacity(raw.source_networks.len()));
    for value in raw.source_networks {
        match value.get_ref().parse::<IpNetwork>() {
            Ok(network) => {
                if let Some(networks) = source_networks.as_mut() {
                    networks.push(network);
                }
            }
            Err(reason) => {
                file.at(
                    &value,
                    format!(
                        "`source_networks` entry {} {reason}",
                        quoted(value.get_ref())
                    ),
                );
                source_networks = None;
            }
        }
    }
    let without_code_within = match raw.resume_without_code_within {
        None => Some(std::time::Duration::ZERO),
        Some(value) => match parse_duration(value.get_ref()) {
            Some(within) if within <= Resume::LONGEST_WITHOUT_CODE => Some(within),
            _ => {
                file.at(
                    &value,
                    format!(
                        "`resume_without_code_within` must be a duration from \"0s\" to {} like \"2m\", not {}",
                        quoted(&proto::duration::format_duration(Resume::LONGEST_WITHOUT_CODE)),
                        quoted(value.get_ref())
                    ),
                );
                None
            }
        },
    };
    Some(Access {
        hours: hours?,
        holidays: holidays?,
        max_session: max_session?,
        idle_timeout: idle_timeout?,
        approvals: approvals?,
        critical_approvals: critical_approvals?,
        source_networks: source_networks?,
        resume: Resume {
            allowed: raw.resume.unwrap_or(true),
            without_code_within: without_code_within?,
        },
    })
}

/// A count of approvers from `least` to [`MAX_APPROVALS`].
fn approval_count(
    file: &mut FileErrors<'_>,
    field: &str,
    value: &Spanned<i64>,
    least: u8,
) -> Option<u8> {
    match u8::try_from(*value.get_ref()) {
        Ok(n) if (i64::from(least)..=MAX_APPROVALS).contains(value.get_ref()) => Some(n),
        _ => {
            file.at(
                value,
                format!(
                    "`{field}` must be from {least} to {MAX_APPROVALS}, not {}",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// How long after a session ends it may wait for an auditor's review, unless the hospital
/// says otherwise.
const DEFAULT_REVIEW_WITHIN: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 3600);

fn review_within(file: &mut FileErrors<'_>, value: Spanned<String>) -> Option<std::time::Duration> {
    let text = value.get_ref();
    match parse_duration(text) {
        Some(duration) if !duration.is_zero() => return Some(duration),
        _ => {}
    }
    file.at(
        &value,
        format!(
            "`review_within` must be a duration longer than zero like \"3d\" or \"72h\", not {}",
            quoted(text)
        ),
    );
    None
}

fn max_session(file: &mut FileErrors<'_>, value: Spanned<String>) -> Option<std::time::Duration> {
    let text = value.get_ref();
    let reason = match parse_duration(text) {
        None => format!(
            "`max_session` must be a duration like \"90m\" or \"2h\", not {}",
            quoted(text)
        ),
        Some(duration) if duration.is_zero() => {
            format!(
                "`max_session` must be longer than zero, not {}",
                quoted(text)
            )
        }
        Some(duration) if duration > MAX_SESSION_LIMIT => format!(
            "`max_session` must be at most \"24h\", not {}",
            quoted(text)
        ),
        Some(duration) => return Some(duration),
    };
    file.at(&value, reason);
    None
}

/// The `[[responsibility]]` items of a file; `required` is allowed in `hospital.toml` only.
fn responsibilities(
    file: &mut FileErrors<'_>,
    raw: Vec<RawResponsibility>,
    in_hospital_file: bool,
) -> Option<Vec<Responsibility>> {
    let mut items = Some(Vec::with_capacity(raw.len()));
    let mut seen = HashSet::new();
    for raw in raw {
        let required = match &raw.required {
            Some(value) if !in_hospital_file => {
                file.at(
                    value,
                    "`required` belongs in hospital.toml; a vendor file states the item itself",
                );
                items = None;
                false
            }
            Some(value) => *value.get_ref(),
            None => false,
        };
        if !seen.insert(raw.item.get_ref().trim().to_owned()) {
            file.at(
                &raw.item,
                format!(
                    "the responsibility item {} is listed twice; keep one",
                    quoted(raw.item.get_ref())
                ),
            );
            items = None;
            continue;
        }
        let item = non_empty(file, "item", raw.item);
        let owner = match raw.owner.get_ref().as_str() {
            "hospital" => Some(Owner::Hospital),
            "vendor" => Some(Owner::Vendor),
            "shared" => Some(Owner::Shared),
            other => {
                file.at(
                    &raw.owner,
                    format!(
                        "`owner` must be \"hospital\", \"vendor\" or \"shared\", not {}",
                        quoted(other)
                    ),
                );
                None
            }
        };
        match (item, owner, items.as_mut()) {
            (Some(item), Some(owner), Some(items)) => items.push(Responsibility {
                item,
                owner,
                note: raw.note,
                required,
            }),
            (Some(_), Some(_), None) => {}
            _ => items = None,
        }
    }
    items
}
