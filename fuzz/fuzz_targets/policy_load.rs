//! The policy loader on arbitrary text, through `PolicySet::from_texts` (the loader without
//! the file system).
//!
//! The input is NUL-separated: the text of `hospital.toml`, then for each vendor file its name
//! in `vendors/` and its text (`hospital NUL acme-ehr.toml NUL vendor-text …`). Bytes that
//! are not UTF-8 become U+FFFD, as a lossy reader would make them.
//!
//! Checked, beyond "never panics": a set that loads holds every vendor file, each with the id
//! its file name gives, limits within their documented bounds and target addresses that read
//! back as themselves, and renders as Markdown and HTML without letting a `<script>` through;
//! a refusal names only the given files, at lines they have.

#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sekisho_broker::policy::render::{Format, render};
use sekisho_broker::policy::{PolicySet, parse_target_address};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let hospital = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let vendors: Vec<(&str, &str)> = rest
        .chunks(2)
        .map(|pair| (pair[0], pair.get(1).copied().unwrap_or_default()))
        .collect();

    match PolicySet::from_texts(hospital, &vendors) {
        Ok(set) => check_loaded(&set, &vendors),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a reason");
            for error in &errors.0 {
                let text = file_text(&error.path, hospital, &vendors)
                    .unwrap_or_else(|| panic!("an error names a file not given: {error}"));
                if let Some(line) = error.line {
                    let lines = text.split('\n').count();
                    assert!(
                        (1..=lines).contains(&line),
                        "{error} (the file has {lines} lines)"
                    );
                }
                assert!(!error.reason.is_empty());
            }
        }
    }
});

fn check_loaded(set: &PolicySet, vendors: &[(&str, &str)]) {
    assert_eq!(
        set.vendors().count(),
        vendors.len(),
        "a vendor file went missing"
    );
    assert_eq!(set.files().len(), vendors.len() + 1);
    let defaults = &set.hospital().defaults;
    assert!(!defaults.warnings.is_empty());
    assert!(defaults.warnings.windows(2).all(|pair| pair[0] > pair[1]));
    for vendor in set.vendors() {
        let stem = vendor.file.file_stem().and_then(|stem| stem.to_str());
        assert_eq!(stem, Some(vendor.id.as_str()));
        let access = &vendor.access;
        assert!((1..=5).contains(&access.approvals));
        assert!((access.approvals..=5).contains(&access.critical_approvals));
        assert!(!access.max_session.is_zero() && access.max_session <= Duration::from_secs(86_400));
        for target in &vendor.targets {
            assert_ne!(target.port, 0);
            assert_eq!(
                parse_target_address(&target.address()),
                Ok((target.host.clone(), target.port, target.ip_literal())),
                "target {} does not read back as itself",
                target.name
            );
        }
    }
    let markdown = render(set, &[], Format::Markdown);
    // One document per vendor; no vendors, no document.
    assert_eq!(markdown.is_empty(), vendors.is_empty());
    let html = render(set, &[], Format::Html);
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "a policy text reached the HTML unescaped"
    );
}

/// The text of the given file an error names.
fn file_text<'a>(path: &Path, hospital: &'a str, vendors: &[(&str, &'a str)]) -> Option<&'a str> {
    if path == Path::new("hospital.toml") {
        return Some(hospital);
    }
    vendors
        .iter()
        .find(|(name, _)| path == Path::new("vendors").join(name))
        .map(|&(_, text)| text)
}
