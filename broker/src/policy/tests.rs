//! Loading whole policy directories: the repository's examples, and each kind of broken file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A temporary policy directory. Error messages are rendered with the temporary path
/// replaced by `policies`, so assertions read like what an administrator sees.
struct PolicyDir {
    dir: tempfile::TempDir,
}

const HOSPITAL: &str = r#"[hospital]
name = "Test Hospital"
timezone = "Asia/Tokyo"
"#;

/// The first three lines of every test vendor file; what a test appends starts on line 4.
fn vendor_header(id: &str) -> String {
    format!("[vendor]\nid = \"{id}\"\nname = \"Vendor {id}\"\n")
}

impl PolicyDir {
    /// A directory with a valid hospital.toml and no vendors.
    fn new() -> PolicyDir {
        let dir = PolicyDir::without_hospital();
        dir.write("hospital.toml", HOSPITAL);
        dir
    }

    fn without_hospital() -> PolicyDir {
        PolicyDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Writes `vendors/<id>.toml` as the standard header followed by `rest`.
    fn vendor(&self, id: &str, rest: &str) {
        self.write(
            &format!("vendors/{id}.toml"),
            &format!("{}{rest}", vendor_header(id)),
        );
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn load(&self) -> Result<PolicySet, PolicyErrors> {
        PolicySet::load(self.dir.path())
    }

    /// Each error's Display, with the directory shown as `policies`.
    fn errors(&self) -> Vec<String> {
        let errors = self
            .load()
            .expect_err("the policies should have been refused");
        let root = self.dir.path().display().to_string();
        errors
            .0
            .iter()
            .map(|error| error.to_string().replace(&root, "policies"))
            .collect()
    }

    /// The only error, as displayed.
    fn error(&self) -> String {
        let errors = self.errors();
        assert_eq!(errors.len(), 1, "expected exactly one error: {errors:#?}");
        errors.into_iter().next().unwrap()
    }
}

fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

#[test]
fn every_file_in_the_repository_policies_directory_loads() {
    let dir = repo_policies();
    let set = PolicySet::load(&dir).unwrap_or_else(|errors| panic!("{errors}"));

    let mut on_disk = vec![dir.join("hospital.toml")];
    for entry in std::fs::read_dir(dir.join("vendors")).unwrap() {
        on_disk.push(entry.unwrap().path());
    }
    on_disk.sort();
    let mut loaded = set.files().to_vec();
    loaded.sort();
    assert_eq!(
        loaded, on_disk,
        "every file in policies/ must be a loaded policy"
    );
    assert_eq!(set.files()[0], dir.join("hospital.toml"));

    let hospital = set.hospital();
    assert_eq!(hospital.name, "Demo General Hospital");
    assert_eq!(hospital.timezone, "Asia/Tokyo");
    assert_eq!(hospital.responsibility.len(), 6);
    assert_eq!(
        set.vendors().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        ["acme-ehr", "kanto-net", "nihon-pacs"]
    );
}

#[test]
fn the_demo_vendor_has_its_loopback_targets() {
    let set = PolicySet::load(&repo_policies()).unwrap();
    let acme = set.vendor("acme-ehr").unwrap();
    assert_eq!(acme.file, repo_policies().join("vendors/acme-ehr.toml"));
    let db = acme.target("ehr-db").unwrap();
    assert_eq!(db.address(), "127.0.0.1:5432");
    assert!(db.allow_loopback);
    assert_eq!(db.ip_literal(), Some(IpAddr::from([127, 0, 0, 1])));
    let web = acme.target("ehr-web").unwrap();
    assert_eq!(web.address(), "127.0.0.1:8080");
    assert!(web.allow_loopback);
    assert_eq!(acme.targets.len(), 2);
    assert!(acme.target("ehr-api").is_none());
    let hours = acme.access.hours.as_ref().unwrap();
    assert_eq!(hours.to_string(), "any 00:00-24:00");
    assert!(hours.contains(6, 1439));
    assert_eq!(acme.access.max_session, Duration::from_secs(7200));
    assert_eq!(acme.access.approvals, 1);
}

#[test]
fn the_network_contractor_needs_two_approvers_for_its_critical_targets() {
    let set = PolicySet::load(&repo_policies()).unwrap();
    let net = set.vendor("kanto-net").unwrap();
    assert!(net.target("core-switch").unwrap().critical);
    assert!(net.target("firewall").unwrap().critical);
    assert!(!net.target("wlan-controller").unwrap().critical);
    assert_eq!(net.approvals_for(&["wlan-controller"]), 1);
    assert_eq!(net.approvals_for(&["wlan-controller", "core-switch"]), 2);
    // The usual split: the line, the remote-maintenance software and its OTP, and the OS
    // and hardware under it are the hospital's, whatever the vendor.
    for vendor in set.vendors() {
        let matrix = vendor.responsibility_matrix(set.hospital());
        for item in [
            "Remote-maintenance software and its one-time passwords",
            "OS and hardware the remote-maintenance software runs on",
        ] {
            let row = matrix.iter().find(|row| row.item == item).unwrap();
            assert_eq!(row.owner, Owner::Hospital, "{} {item}", vendor.id);
        }
    }
    let acme = set
        .vendor("acme-ehr")
        .unwrap()
        .responsibility_matrix(set.hospital());
    assert!(
        acme.iter()
            .any(|row| row.item.starts_with("Cloud EHR service") && row.owner == Owner::Vendor)
    );
}

#[test]
fn the_imaging_vendor_is_limited_to_office_hours_two_approvals_and_its_network() {
    let set = PolicySet::load(&repo_policies()).unwrap();
    let pacs = set.vendor("nihon-pacs").unwrap();
    let dicom = pacs.target("pacs").unwrap();
    assert_eq!(
        (dicom.host.as_str(), dicom.port, dicom.allow_loopback),
        ("pacs.hospital.internal", 104, false)
    );
    assert_eq!(
        dicom.description.as_deref(),
        Some("PACS DICOM (C-ECHO, C-STORE, C-FIND)")
    );
    assert!(pacs.target("pacs-admin").unwrap().critical);
    assert_eq!(pacs.access.critical_approvals, 3);
    assert!(pacs.access.is_holiday(jiff::civil::date(2026, 12, 31)));
    assert_eq!(
        pacs.target("pacs-admin").unwrap().address(),
        "pacs.hospital.internal:22"
    );
    assert_eq!(pacs.target("pacs").unwrap().ip_literal(), None);
    let access = &pacs.access;
    assert_eq!(
        access.hours.as_ref().unwrap().to_string(),
        "Mon-Fri 08:00-20:00"
    );
    assert_eq!(access.approvals, 2);
    assert_eq!(
        access.source_networks,
        ["203.0.113.0/24".parse::<IpNetwork>().unwrap()]
    );
    assert!(set.vendor("nobody").is_none());
}

#[test]
fn a_minimal_vendor_gets_the_default_access() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"db\"\naddress = \"db.local:5432\"\n",
    );
    let set = dir.load().unwrap();
    let acme = set.vendor("acme").unwrap();
    assert_eq!(acme.access, Access::with_defaults(&Defaults::default()));
    assert_eq!(acme.access.max_session, Duration::from_secs(2 * 3600));
    assert_eq!(acme.access.approvals, 1);
    assert_eq!(acme.access.hours, None);
    assert!(acme.access.source_networks.is_empty());
    assert_eq!(acme.emergency_contact, None);
    assert_eq!(set.hospital().responsibility, []);
}

#[test]
fn an_access_table_with_only_some_keys_defaults_the_rest() {
    let dir = PolicyDir::new();
    dir.vendor("acme", "[access]\napprovals = 3\n");
    let set = dir.load().unwrap();
    let access = &set.vendor("acme").unwrap().access;
    assert_eq!(access.approvals, 3);
    assert_eq!(access.max_session, Duration::from_secs(7200));
    assert_eq!(access.hours, None);
}

#[test]
fn ipv6_targets_keep_their_brackets_in_address() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"db\"\naddress = \"[2001:db8::5]:5432\"\n",
    );
    let set = dir.load().unwrap();
    let db = set.vendor("acme").unwrap().target("db").unwrap();
    assert_eq!(db.host, "2001:db8::5");
    assert_eq!(db.address(), "[2001:db8::5]:5432");
    assert_eq!(db.ip_literal(), Some("2001:db8::5".parse().unwrap()));
}

#[test]
fn responsibility_items_resolve_with_owner_and_note() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        &format!(
            "{HOSPITAL}[[responsibility]]\nitem = \"Broker\"\nowner = \"hospital\"\n\n\
             [[responsibility]]\nitem = \"Line\"\nowner = \"shared\"\nnote = \"both ends\"\n"
        ),
    );
    dir.vendor(
        "acme",
        "[[responsibility]]\nitem = \"App\"\nowner = \"vendor\"\n",
    );
    let set = dir.load().unwrap();
    assert_eq!(
        set.hospital().responsibility,
        [
            Responsibility {
                item: "Broker".into(),
                owner: Owner::Hospital,
                note: None,
                required: false,
            },
            Responsibility {
                item: "Line".into(),
                owner: Owner::Shared,
                note: Some("both ends".into()),
                required: false,
            },
        ]
    );
    assert_eq!(
        set.vendor("acme").unwrap().responsibility[0].owner,
        Owner::Vendor
    );
    assert_eq!(Owner::Shared.to_string(), "shared");
}

#[test]
fn files_that_are_not_visible_toml_files_are_ignored() {
    let dir = PolicyDir::new();
    dir.vendor("acme", "");
    dir.write("vendors/README.md", "not a policy");
    dir.write("vendors/acme.toml.bak", "not = valid [");
    dir.write("vendors/.acme.toml.swp", "not = valid [");
    dir.write("vendors/old/legacy.toml", "not = valid [");
    let set = dir.load().unwrap();
    assert_eq!(
        set.files(),
        [dir.path("hospital.toml"), dir.path("vendors/acme.toml")]
    );
    assert_eq!(set.vendors().count(), 1);
}

#[test]
fn a_directory_without_vendors_loads_with_no_vendors() {
    let dir = PolicyDir::new();
    let set = dir.load().unwrap();
    assert_eq!(set.vendors().count(), 0);
    assert_eq!(set.hospital().name, "Test Hospital");
    assert_eq!(set.files(), [dir.path("hospital.toml")]);
}

// --- Broken files: each gives its message with the right file and line. ---

#[test]
fn a_toml_syntax_error_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.vendor("acme", "\n[[target]\nname = \"db\"\n");
    assert_eq!(
        dir.error(),
        "policies/vendors/acme.toml:5: unclosed array table, expected `]`"
    );
}

#[test]
fn an_unterminated_string_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        "[hospital]\nname = \"Test Hospital\ntimezone = \"UTC\"\n",
    );
    let error = dir.error();
    assert!(error.starts_with("policies/hospital.toml:2: "), "{error}");
}

#[test]
fn an_unknown_field_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"db\"\nadress = \"db.local:5432\"\n",
    );
    assert_eq!(
        dir.error(),
        "policies/vendors/acme.toml:6: unknown field `adress`, expected one of `name`, `address`, `description`, `allow_loopback`, `allow_file_share`, `allow_broker_port`, `critical`"
    );
}

#[test]
fn an_unknown_field_in_hospital_toml_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        &format!("{HOSPITAL}timezone_name = \"x\"\n"),
    );
    let error = dir.error();
    assert!(
        error.starts_with("policies/hospital.toml:4: unknown field `timezone_name`"),
        "{error}"
    );
}

#[test]
fn a_missing_hospital_toml_is_reported() {
    let dir = PolicyDir::without_hospital();
    assert_eq!(
        dir.error(),
        "policies/hospital.toml: the hospital policy file is missing; every policy directory needs a hospital.toml"
    );
}

#[test]
fn a_missing_policy_directory_is_reported() {
    let dir = PolicyDir::new();
    let missing = dir.path("nope");
    let errors = PolicySet::load(&missing).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].path, missing);
    assert_eq!(errors.0[0].line, None);
    assert!(
        errors.0[0]
            .reason
            .starts_with("the policy directory cannot be opened"),
        "{errors}"
    );
}

#[test]
fn a_duplicate_target_name_is_reported_at_the_second_definition() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme-ehr",
        "\n[[target]]\nname = \"ehr-db\"\naddress = \"db1.local:5432\"\n\n\
         [[target]]\nname = \"ehr-db\"\naddress = \"db2.local:5432\"\n",
    );
    assert_eq!(
        dir.error(),
        "policies/vendors/acme-ehr.toml:10: target `ehr-db` is defined twice"
    );
}

#[test]
fn bad_target_addresses_are_reported_at_their_lines() {
    let dir = PolicyDir::new();
    let cases = [
        ("no-port", "db.local"),
        ("port-zero", "db.local:0"),
        ("port-too-big", "db.local:70000"),
        ("empty-host", ":5432"),
    ];
    let mut text = String::new();
    for (name, address) in cases {
        text.push_str(&format!(
            "[[target]]\nname = \"{name}\"\naddress = \"{address}\"\n"
        ));
    }
    dir.vendor("acme", &text);
    let expected = "expected host:port like \"ehr-db.hospital.internal:5432\"";
    assert_eq!(
        dir.errors(),
        [
            format!(
                "policies/vendors/acme.toml:6: target `no-port` address \"db.local\" has no port; {expected}"
            ),
            "policies/vendors/acme.toml:9: target `port-zero` address \"db.local:0\" has port `0`; a port is a number from 1 to 65535".to_owned(),
            "policies/vendors/acme.toml:12: target `port-too-big` address \"db.local:70000\" has port `70000`; a port is a number from 1 to 65535".to_owned(),
            format!(
                "policies/vendors/acme.toml:15: target `empty-host` address \":5432\" has an empty host; {expected}"
            ),
        ]
    );
}

#[test]
fn a_bad_target_name_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"EHR DB\"\naddress = \"db.local:5432\"\n",
    );
    assert_eq!(
        dir.error(),
        "policies/vendors/acme.toml:5: target name \"EHR DB\" must be 1 to 63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    );
}

#[test]
fn a_bad_duration_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.vendor("acme", "\n[access]\nmax_session = \"two hours\"\n");
    assert_eq!(
        dir.error(),
        "policies/vendors/acme.toml:6: `max_session` must be a duration like \"90m\" or \"2h\", not \"two hours\""
    );
}

#[test]
fn zero_and_over_a_day_durations_are_refused() {
    let dir = PolicyDir::new();
    dir.vendor("zero", "[access]\nmax_session = \"0m\"\n");
    dir.vendor("long", "[access]\nmax_session = \"24h1s\"\n");
    dir.vendor("day", "[access]\nmax_session = \"24h\"\n");
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/long.toml:5: `max_session` must be at most \"24h\", not \"24h1s\"",
            "policies/vendors/zero.toml:5: `max_session` must be longer than zero, not \"0m\"",
        ]
    );
}

#[test]
fn bad_hours_are_reported_at_their_line() {
    let dir = PolicyDir::new();
    dir.vendor("acme", "[access]\nhours = \"Mun-Fri 08:00-20:00\"\n");
    dir.vendor("night", "[access]\nhours = \"Mon 22:00-02:00\"\n");
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:5: `hours` \"Mun-Fri 08:00-20:00\" has `Mun`, which is not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun or any",
            "policies/vendors/night.toml:5: `hours` \"Mon 22:00-02:00\" has `22:00-02:00`, which crosses midnight; split it like \"Mon 22:00-24:00; Tue 00:00-02:00\"",
        ]
    );
}

#[test]
fn a_bad_cidr_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[access]\nsource_networks = [\n  \"203.0.113.0/24\",\n  \"203.0.113.0/33\",\n  \"office\",\n]\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:7: `source_networks` entry \"203.0.113.0/33\" has prefix length /33, but an IPv4 prefix is at most /32",
            "policies/vendors/acme.toml:8: `source_networks` entry \"office\" is not an IP network like \"203.0.113.0/24\" or \"2001:db8::/32\"",
        ]
    );
}

#[test]
fn approvals_outside_one_to_five_are_refused_at_their_line() {
    let dir = PolicyDir::new();
    dir.vendor("none", "[access]\napprovals = 0\n");
    dir.vendor("many", "[access]\napprovals = 6\n");
    dir.vendor("negative", "[access]\napprovals = -1\n");
    dir.vendor("five", "[access]\napprovals = 5\n");
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/many.toml:5: `approvals` must be from 1 to 5, not 6",
            "policies/vendors/negative.toml:5: `approvals` must be from 1 to 5, not -1",
            "policies/vendors/none.toml:5: `approvals` must be from 1 to 5, not 0",
        ]
    );
}

#[test]
fn a_vendor_id_that_differs_from_the_file_name_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.write(
        "vendors/acme-ehr.toml",
        "# Acme\n[vendor]\nid = \"acme\"\nname = \"Acme\"\n",
    );
    assert_eq!(
        dir.error(),
        "policies/vendors/acme-ehr.toml:3: vendor id `acme` does not match the file name acme-ehr.toml; this file must have id = \"acme-ehr\""
    );
}

#[test]
fn a_vendor_id_used_by_two_files_is_reported_against_the_copy() {
    let dir = PolicyDir::new();
    dir.vendor("acme", "");
    // Sorts (and so loads) before acme.toml; the blame must still go to the copy.
    dir.write("vendors/acme-copy.toml", &vendor_header("acme"));
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme-copy.toml:2: vendor id `acme` does not match the file name acme-copy.toml; this file must have id = \"acme-copy\"",
            "policies/vendors/acme-copy.toml:2: vendor id `acme` is already used by policies/vendors/acme.toml; each vendor id must be unique",
        ]
    );
}

#[test]
fn a_vendor_id_declared_by_two_misnamed_files_is_blamed_on_the_later_one() {
    let dir = PolicyDir::new();
    dir.write("vendors/a.toml", &vendor_header("acme"));
    dir.write("vendors/b.toml", &vendor_header("acme"));
    let errors = dir.errors();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(
        errors[2],
        "policies/vendors/b.toml:2: vendor id `acme` is already used by policies/vendors/a.toml; each vendor id must be unique"
    );
}

#[test]
fn a_loopback_ip_literal_without_allow_loopback_is_refused_at_load() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"db\"\naddress = \"127.0.0.1:5432\"\n\n\
         [[target]]\nname = \"meta\"\naddress = \"169.254.169.254:80\"\n\n\
         [[target]]\nname = \"v6\"\naddress = \"[::ffff:127.0.0.1]:22\"\n\n\
         [[target]]\nname = \"allowed\"\naddress = \"127.0.0.1:8080\"\nallow_loopback = true\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:6: target `db` address \"127.0.0.1:5432\" is a loopback address; set `allow_loopback = true` only for demos and tests",
            "policies/vendors/acme.toml:10: target `meta` address \"169.254.169.254:80\" is a link-local address; set `allow_loopback = true` only for demos and tests",
            "policies/vendors/acme.toml:14: target `v6` address \"[::ffff:127.0.0.1]:22\" is an IPv4-mapped IPv6 address embedding the loopback address 127.0.0.1; set `allow_loopback = true` only for demos and tests",
        ]
    );
}

// See: issue 15, point 5 (these passed the check and approval).
#[test]
fn ipv6_literals_carrying_a_forbidden_ipv4_address_are_refused_at_load() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"compatible\"\naddress = \"[::127.0.0.1]:22\"\n\n\
         [[target]]\nname = \"translated\"\naddress = \"[::ffff:0:127.0.0.1]:22\"\n\n\
         [[target]]\nname = \"nat64\"\naddress = \"[64:ff9b::7f00:1]:22\"\n\n\
         [[target]]\nname = \"allowed\"\naddress = \"[64:ff9b::7f00:1]:8080\"\nallow_loopback = true\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:6: target `compatible` address \"[::127.0.0.1]:22\" is an IPv4-compatible IPv6 address embedding the loopback address 127.0.0.1; set `allow_loopback = true` only for demos and tests",
            "policies/vendors/acme.toml:10: target `translated` address \"[::ffff:0:127.0.0.1]:22\" is an IPv4-translated IPv6 address embedding the loopback address 127.0.0.1; set `allow_loopback = true` only for demos and tests",
            "policies/vendors/acme.toml:14: target `nat64` address \"[64:ff9b::7f00:1]:22\" is a NAT64 IPv6 address embedding the loopback address 127.0.0.1; set `allow_loopback = true` only for demos and tests",
        ]
    );
}

// See: issue 15, point 5 (`0x7f000001` passed the check as a host name).
#[test]
fn numeric_host_spellings_are_reported_at_their_lines_with_the_address_they_mean() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"hex\"\naddress = \"0x7f000001:22\"\n\n\
         [[target]]\nname = \"short\"\naddress = \"127.1:22\"\n\n\
         [[target]]\nname = \"octal\"\naddress = \"010.0.0.1:22\"\n\n\
         [[target]]\nname = \"dotted\"\naddress = \"10.0.0.1:22\"\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:6: target `hex` address \"0x7f000001:22\" has `0x7f000001`, a numeric spelling of 127.0.0.1; write the address as 127.0.0.1",
            "policies/vendors/acme.toml:10: target `short` address \"127.1:22\" has `127.1`, a numeric spelling of 127.0.0.1; write the address as 127.0.0.1",
            "policies/vendors/acme.toml:14: target `octal` address \"010.0.0.1:22\" has `010.0.0.1`, a numeric spelling of 8.0.0.1; write the address as 8.0.0.1",
        ]
    );
}

#[test]
fn a_bad_owner_and_empty_fields_are_reported_at_their_lines() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        "[hospital]\nname = \"\"\ntimezone = \"JST\"\nemergency_contact = \" \"\n\n\
         [[responsibility]]\nitem = \"Broker\"\nowner = \"it\"\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/hospital.toml:2: `name` must not be empty",
            "policies/hospital.toml:3: `timezone` must be an IANA time zone name like \"Asia/Tokyo\" or \"UTC\", not \"JST\"",
            "policies/hospital.toml:4: `emergency_contact` must not be empty; leave it out if there is none",
            "policies/hospital.toml:8: `owner` must be \"hospital\", \"vendor\" or \"shared\", not \"it\"",
        ]
    );
}

#[test]
fn a_value_of_the_wrong_type_is_reported_at_its_line() {
    let dir = PolicyDir::new();
    dir.vendor("acme", "[access]\napprovals = \"2\"\n");
    let error = dir.error();
    assert!(
        error.starts_with("policies/vendors/acme.toml:5: invalid type"),
        "{error}"
    );
}

#[test]
fn problems_in_several_files_are_all_reported_in_load_order() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        "[hospital]\nname = \"Test Hospital\"\ntimezone = \"Tokyo\"\n",
    );
    dir.vendor(
        "acme",
        "[[target]]\nname = \"db\"\naddress = \"db.local\"\n\n[access]\napprovals = 9\nmax_session = \"1 hour\"\n",
    );
    dir.vendor("broken", "[[target\n");
    dir.vendor(
        "fine",
        "[[target]]\nname = \"db\"\naddress = \"db.local:1\"\n",
    );
    dir.write("vendors/wrong.toml", &vendor_header("right"));
    let errors = dir.errors();
    assert_eq!(errors.len(), 6, "{errors:#?}");
    let located: Vec<&str> = errors
        .iter()
        .map(|error| error.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        located,
        [
            "policies/hospital.toml:3",
            "policies/vendors/acme.toml:6",
            "policies/vendors/acme.toml:9",
            "policies/vendors/acme.toml:10",
            "policies/vendors/broken.toml:4",
            "policies/vendors/wrong.toml:2",
        ]
    );
}

#[test]
fn an_unreadable_vendor_file_is_reported_without_a_line() {
    let dir = PolicyDir::new();
    std::fs::create_dir_all(dir.path("vendors")).unwrap();
    std::fs::write(dir.path("vendors/acme.toml"), [0xff, 0xfe, 0x00]).unwrap();
    assert_eq!(
        dir.error(),
        "policies/vendors/acme.toml: the file is not UTF-8 text"
    );
}

#[test]
fn errors_display_with_and_without_a_line_one_per_line() {
    let located = PolicyError {
        path: PathBuf::from("policies/vendors/acme-ehr.toml"),
        line: Some(12),
        reason: "target `ehr-db` is defined twice".into(),
    };
    let unlocated = PolicyError {
        path: PathBuf::from("policies/hospital.toml"),
        line: None,
        reason: "the file cannot be read".into(),
    };
    assert_eq!(
        located.to_string(),
        "policies/vendors/acme-ehr.toml:12: target `ehr-db` is defined twice"
    );
    assert_eq!(
        unlocated.to_string(),
        "policies/hospital.toml: the file cannot be read"
    );
    assert_eq!(
        PolicyErrors(vec![located, unlocated]).to_string(),
        "policies/vendors/acme-ehr.toml:12: target `ehr-db` is defined twice\n\
         policies/hospital.toml: the file cannot be read"
    );
}

#[test]
fn review_within_defaults_to_three_days_and_takes_days_or_hours() {
    let dir = PolicyDir::new();
    assert_eq!(
        dir.load().unwrap().hospital().review_within,
        Duration::from_secs(3 * 24 * 3600)
    );
    dir.write(
        "hospital.toml",
        &format!("{HOSPITAL}[defaults]\nreview_within = \"1d12h\"\n"),
    );
    assert_eq!(
        dir.load().unwrap().hospital().review_within,
        Duration::from_secs(36 * 3600)
    );
    dir.write(
        "hospital.toml",
        &format!("{HOSPITAL}[defaults]\nreview_within = \"0m\"\n"),
    );
    assert_eq!(
        dir.error(),
        "policies/hospital.toml:5: `review_within` must be a duration longer than zero like \"3d\" or \"72h\", not \"0m\""
    );
}

#[test]
fn review_within_in_the_hospital_table_is_pointed_to_defaults() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        &format!("{HOSPITAL}review_within = \"3d\"\n"),
    );
    assert_eq!(
        dir.error(),
        "policies/hospital.toml:4: `review_within` belongs in the [defaults] table now; move it there"
    );
}

#[test]
fn hospital_defaults_apply_to_vendors_that_do_not_override_them() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        &format!(
            "{HOSPITAL}[defaults]\nmax_session = \"1h\"\nanswer_within = \"10m\"\nidle_timeout = \"5m\"\nwarnings = [\"1m\", \"5m\"]\notp_lockout_after = 3\n"
        ),
    );
    dir.vendor("plain", "");
    dir.vendor(
        "own",
        "[access]\nmax_session = \"3h\"\nidle_timeout = \"1h\"\n",
    );
    let set = dir.load().unwrap();
    let defaults = &set.hospital().defaults;
    assert_eq!(defaults.answer_within, Duration::from_secs(600));
    assert_eq!(
        defaults.warnings,
        [Duration::from_secs(300), Duration::from_secs(60)],
        "furthest first"
    );
    assert_eq!(defaults.otp_lockout_after, 3);
    let plain = &set.vendor("plain").unwrap().access;
    assert_eq!(
        (plain.max_session, plain.idle_timeout),
        (Duration::from_secs(3600), Duration::from_secs(300))
    );
    let own = &set.vendor("own").unwrap().access;
    assert_eq!(
        (own.max_session, own.idle_timeout),
        (Duration::from_secs(3 * 3600), Duration::from_secs(3600))
    );
}

#[test]
fn a_staff_lockout_lasts_fifteen_minutes_unless_the_hospital_says_otherwise() {
    let dir = PolicyDir::new();
    dir.vendor("plain", "");
    let set = dir.load().unwrap();
    assert_eq!(
        set.hospital().defaults.staff_lockout,
        StaffLockout::For(Duration::from_secs(15 * 60))
    );
    for (text, expected) in [
        ("1h", StaffLockout::For(Duration::from_secs(3600))),
        ("until-reset", StaffLockout::UntilReset),
    ] {
        dir.write(
            "hospital.toml",
            &format!("{HOSPITAL}[defaults]\nstaff_lockout = \"{text}\"\n"),
        );
        assert_eq!(
            dir.load().unwrap().hospital().defaults.staff_lockout,
            expected
        );
    }
    for bad in ["0m", "30s", "2d", "forever"] {
        dir.write(
            "hospital.toml",
            &format!("{HOSPITAL}[defaults]\nstaff_lockout = \"{bad}\"\n"),
        );
        assert_eq!(
            dir.errors(),
            [format!(
                "policies/hospital.toml:5: `staff_lockout` must be a duration from \"1m\" to \"24h\" like \"15m\", or \"until-reset\", not \"{bad}\""
            )]
        );
    }
}

#[test]
fn bad_defaults_are_reported_at_their_lines() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        &format!(
            "{HOSPITAL}[defaults]\nidle_timeout = \"0m\"\nwarnings = []\notp_lockout_after = 1\nanswer_within = \"soon\"\n"
        ),
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/hospital.toml:5: `idle_timeout` must be a duration longer than zero and at most \"24h\" like \"30m\", not \"0m\"",
            "policies/hospital.toml:6: `warnings` must name at least one time before the end, like [\"10m\", \"2m\"]",
            "policies/hospital.toml:7: `otp_lockout_after` must be from 3 to 10 wrong codes, not 1",
            "policies/hospital.toml:8: `answer_within` must be a duration longer than zero and at most \"24h\" like \"30m\", not \"soon\"",
        ]
    );
}

#[test]
fn a_file_share_port_needs_allow_file_share() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"smb\"\naddress = \"files.hospital.internal:445\"\n\n\
         [[target]]\nname = \"nfs\"\naddress = \"10.0.0.9:2049\"\n\n\
         [[target]]\nname = \"netbios\"\naddress = \"10.0.0.9:139\"\nallow_file_share = true\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:6: target `smb` address \"files.hospital.internal:445\" is a file-sharing port (SMB/NFS), the way ransomware spreads between networks; set `allow_file_share = true` only if the agreement really needs it",
            "policies/vendors/acme.toml:10: target `nfs` address \"10.0.0.9:2049\" is a file-sharing port (SMB/NFS), the way ransomware spreads between networks; set `allow_file_share = true` only if the agreement really needs it",
        ]
    );
    dir.vendor(
        "acme",
        "[[target]]\nname = \"smb\"\naddress = \"files.hospital.internal:445\"\nallow_file_share = true\n",
    );
    assert!(dir.load().unwrap().vendor("acme").unwrap().targets[0].allow_file_share);
}

#[test]
fn bad_holidays_and_critical_approvals_are_reported_at_their_lines() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[access]\napprovals = 2\ncritical_approvals = 1\nholidays = [\"2026-12-31\", \"31/12/2026\", \"2026-02-30\"]\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:6: `critical_approvals` must be from 2 to 5, not 1",
            "policies/vendors/acme.toml:7: `holidays` entry \"31/12/2026\" must be a date like \"2026-12-31\"",
            "policies/vendors/acme.toml:7: `holidays` entry \"2026-02-30\" must be a date like \"2026-12-31\"",
        ]
    );
}

#[test]
fn critical_targets_need_the_critical_approvals() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[target]]\nname = \"core\"\naddress = \"10.0.0.2:22\"\ncritical = true\n\n\
         [[target]]\nname = \"wifi\"\naddress = \"10.0.0.3:443\"\n\n\
         [access]\nholidays = [\"2027-01-01\", \"2026-12-31\"]\n",
    );
    let set = dir.load().unwrap();
    let acme = set.vendor("acme").unwrap();
    assert_eq!(acme.approvals_for(&["wifi"]), 1);
    assert_eq!(acme.approvals_for(&["wifi", "core"]), 2);
    assert_eq!(acme.access.critical_approvals, 2);
    assert!(acme.access.is_holiday(jiff::civil::date(2026, 12, 31)));
    assert!(!acme.access.is_holiday(jiff::civil::date(2026, 12, 30)));
}

#[test]
fn a_vendor_without_a_required_item_is_refused() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        &format!(
            "{HOSPITAL}[[responsibility]]\nitem = \"Line\"\nowner = \"hospital\"\nrequired = true\n\n\
             [[responsibility]]\nitem = \"Broker\"\nowner = \"hospital\"\n"
        ),
    );
    dir.vendor(
        "agreed",
        "[[responsibility]]\nitem = \"Line\"\nowner = \"shared\"\n",
    );
    dir.vendor("silent", "");
    assert_eq!(
        dir.error(),
        "policies/vendors/silent.toml:2: the responsibility item \"Line\" is required by hospital.toml, but this file does not state it; add a [[responsibility]] with that item and its owner"
    );
}

#[test]
fn required_in_a_vendor_file_and_a_repeated_item_are_refused() {
    let dir = PolicyDir::new();
    dir.vendor(
        "acme",
        "[[responsibility]]\nitem = \"App\"\nowner = \"vendor\"\nrequired = true\n\n\
         [[responsibility]]\nitem = \"App\"\nowner = \"vendor\"\n",
    );
    assert_eq!(
        dir.errors(),
        [
            "policies/vendors/acme.toml:7: `required` belongs in hospital.toml; a vendor file states the item itself",
            "policies/vendors/acme.toml:10: the responsibility item \"App\" is listed twice; keep one",
        ]
    );
}

#[test]
fn a_vendor_item_replaces_the_hospital_item_of_the_same_name_in_the_matrix() {
    let dir = PolicyDir::new();
    dir.write(
        "hospital.toml",
        &format!(
            "{HOSPITAL}[[responsibility]]\nitem = \"Line\"\nowner = \"hospital\"\n\n\
             [[responsibility]]\nitem = \"Broker\"\nowner = \"hospital\"\n"
        ),
    );
    dir.vendor(
        "acme",
        "[[responsibility]]\nitem = \"App\"\nowner = \"vendor\"\n\n\
         [[responsibility]]\nitem = \"Line\"\nowner = \"shared\"\nnote = \"both\"\n",
    );
    let set = dir.load().unwrap();
    let matrix = set
        .vendor("acme")
        .unwrap()
        .responsibility_matrix(set.hospital());
    let rows: Vec<(&str, Owner)> = matrix.iter().map(|r| (r.item.as_str(), r.owner)).collect();
    assert_eq!(
        rows,
        [
            ("Line", Owner::Shared),
            ("Broker", Owner::Hospital),
            ("App", Owner::Vendor)
        ]
    );
}

/// Where the expected documents of the examples live; `SEKISHO_UPDATE_SNAPSHOTS=1 cargo
/// test -p sekisho-broker --lib render` rewrites them after an intended change.
fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

fn check_snapshot(name: &str, actual: &str) {
    let path = snapshot_dir().join(name);
    if std::env::var_os("SEKISHO_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with SEKISHO_UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendering at line {}:\n  expected: {:?}\n  actual:   {:?}\nrun with SEKISHO_UPDATE_SNAPSHOTS=1 if the change is intended",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

#[test]
fn render_of_the_examples_matches_the_snapshots() {
    use super::render::{Format, render};
    let set = PolicySet::load(&repo_policies()).unwrap();
    check_snapshot("policies.md", &render(&set, &[], Format::Markdown));
    check_snapshot("policies.html", &render(&set, &[], Format::Html));
    let one = render(&set, &[set.vendor("kanto-net").unwrap()], Format::Markdown);
    check_snapshot("kanto-net.md", &one);
}

#[test]
fn render_escapes_what_policy_files_say() {
    use super::render::{Format, render};
    let dir = PolicyDir::new();
    dir.write(
        "vendors/evil.toml",
        "[vendor]\nid = \"evil\"\nname = \"<script>alert(1)</script> | Co.\"\n\n\
         [[responsibility]]\nitem = \"<b>x</b>\"\nowner = \"vendor\"\nnote = \"a|b\"\n",
    );
    let set = dir.load().unwrap();
    let html = render(&set, &[], Format::Html);
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; | Co."));
    assert!(html.contains("<td>&lt;b&gt;x&lt;/b&gt;</td>"));
    let md = render(&set, &[], Format::Markdown);
    assert!(
        md.contains("| &lt;b>x&lt;/b> | 事業者 / vendor | a\\|b |"),
        "{md}"
    );
}

#[test]
fn policies_given_as_texts_load_as_the_directory_does() {
    let dir = repo_policies();
    let read = |relative: &str| std::fs::read_to_string(dir.join(relative)).unwrap();
    let hospital = read("hospital.toml");
    let vendors: Vec<(String, String)> = ["acme-ehr.toml", "kanto-net.toml", "nihon-pacs.toml"]
        .iter()
        .map(|name| (name.to_string(), read(&format!("vendors/{name}"))))
        .collect();
    let borrowed: Vec<(&str, &str)> = vendors
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    let from_texts = PolicySet::from_texts(&hospital, &borrowed).unwrap();
    let from_dir = PolicySet::load(&dir).unwrap();
    assert_eq!(from_texts.hospital(), from_dir.hospital());
    for (text, disk) in from_texts.vendors().zip(from_dir.vendors()) {
        assert_eq!(
            text.file,
            Path::new("vendors").join(format!("{}.toml", text.id))
        );
        assert_eq!(
            VendorPolicy {
                file: disk.file.clone(),
                ..text.clone()
            },
            *disk
        );
    }
    assert_eq!(from_texts.vendors().count(), 3);
}

#[test]
fn errors_in_policies_given_as_texts_name_the_file_and_line() {
    let vendor = format!("{}[access]\napprovals = 9\n", vendor_header("x"));
    let errors = PolicySet::from_texts(HOSPITAL, &[("y.toml", &vendor)]).unwrap_err();
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "vendors/y.toml:2: vendor id `x` does not match the file name y.toml; this file must have id = \"y\"",
            "vendors/y.toml:5: `approvals` must be from 1 to 5, not 9",
        ]
    );
}

#[test]
fn vendor_texts_need_names_a_directory_could_hold() {
    let vendor = vendor_header("x");
    let errors = PolicySet::from_texts(
        HOSPITAL,
        &[
            ("x.toml", &vendor),
            ("x.toml", &vendor),
            ("../x.toml", &vendor),
            (".x.toml", &vendor),
        ],
    )
    .unwrap_err();
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "vendors/../x.toml: this is not a vendor policy file name; give a visible NAME.toml, without a directory",
            "vendors/.x.toml: this is not a vendor policy file name; give a visible NAME.toml, without a directory",
            "vendors/x.toml: this file name is given twice; each vendor file needs a name of its own",
        ]
    );
}

#[test]
fn a_session_outlives_its_connection_with_a_new_code_unless_the_vendor_says_otherwise() {
    let dir = PolicyDir::new();
    dir.vendor("plain", "");
    dir.vendor("strict", "[access]\nresume = false\n");
    dir.vendor("lenient", "[access]\nresume_without_code_within = \"2m\"\n");
    let set = dir.load().unwrap();
    let resume = |vendor: &str| set.vendor(vendor).unwrap().access.resume;
    assert_eq!(
        resume("plain"),
        Resume {
            allowed: true,
            without_code_within: Duration::ZERO
        }
    );
    assert!(!resume("strict").allowed);
    assert_eq!(
        resume("lenient").without_code_within,
        Duration::from_secs(120)
    );
    for bad in ["11m", "1h", "soon"] {
        dir.vendor(
            "lenient",
            &format!("[access]\nresume_without_code_within = \"{bad}\"\n"),
        );
        let errors = dir.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].ends_with(&format!(
                "`resume_without_code_within` must be a duration from \"0s\" to \"10m\" like \"2m\", not \"{bad}\""
            )),
            "{errors:?}"
        );
    }
}
