//! The `sekisho-broker` binary as an admin runs it: policy check, serve, vendors and
//! technicians, the desk commands (request, session, lockdown) and the audit commands against
//! a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

mod support;

use sekisho_broker::audit::{Actor, AuditEvent, EventKind, StoredEvent};
use sekisho_broker::otp;
use sekisho_broker::secret::Secret;
use sekisho_broker::session::{EndReason, HospitalZone, RequestId, RequestRecord, Stage};
use sekisho_broker::staff::{Role, StaffDirectory, check_name};
use sekisho_broker::store::{Store, StoreLocation};
use support::{make_staff, run_with_code, sql_on};

fn broker(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sekisho-broker"));
    command
        .args(args)
        .env("SEKISHO_LOG", "warn")
        .env_remove("USER")
        .env_remove("SEKISHO_DATABASE")
        .env_remove("SEKISHO_DATA_DIR")
        .env_remove("SEKISHO_POLICIES");
    command
}

fn run(command: &mut Command) -> (Output, String) {
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn broken_policies(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(policies.join("vendors")).unwrap();
    std::fs::write(
        policies.join("hospital.toml"),
        "[hospital]\nname = \"H\"\ntimezone = \"Asia/Tokyo\"\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("vendors/acme-ehr.toml"),
        "[vendor]\nid = \"acme-ehr\"\nname = \"Acme\"\n\n[[target]]\nname = \"db\"\naddress = \"db.internal\"\n",
    )
    .unwrap();
    policies
}

#[test]
fn policy_check_accepts_the_example_policies() {
    let policies = repo_policies();
    let (output, text) = run(broker(&["policy", "check"]).arg(&policies));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("all good"), "{text}");
}

#[test]
fn policy_check_prints_file_line_and_reason_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let policies = broken_policies(dir.path());
    let (output, text) = run(broker(&["policy", "check"]).arg(&policies));
    assert!(!output.status.success());
    let file = policies.join("vendors/acme-ehr.toml");
    assert!(
        text.contains(&format!("{}:7: ", file.display())),
        "expected the file and line 7 in: {text}"
    );
    assert!(
        text.contains("port"),
        "the reason names the missing port: {text}"
    );
}

#[test]
fn serve_refuses_to_start_on_a_broken_policy_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policies = broken_policies(dir.path());
    let data = dir.path().join("data");
    let (output, text) = run(broker(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--web-listen",
        "127.0.0.1:0",
    ])
    .arg("--policies")
    .arg(&policies)
    .arg("--data-dir")
    .arg(&data));
    assert!(!output.status.success());
    assert!(text.contains("does not start half-configured"), "{text}");
    assert!(text.contains("acme-ehr.toml:7:"), "{text}");
    assert!(
        !data.exists(),
        "a refused start must not create the data directory"
    );
}

#[test]
fn serve_refuses_a_webhook_it_cannot_use_in_one_sentence_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing_ca = dir.path().join("hospital-ca.pem");
    let missing_ca = missing_ca.to_str().unwrap();
    for (webhook, expected) in [
        (
            &["--web-webhook", "relay.hospital.local/sekisho"][..],
            "is not a URL (it does not start with https://); give one like https://",
        ),
        (
            &["--web-webhook", "ftp://relay.hospital.local/sekisho"][..],
            "--web-webhook must start with https:// (or http:// for a relay on this host), not ftp://.",
        ),
        (
            &["--web-webhook", "http://relay.hospital.local/sekisho"][..],
            "would send request details unencrypted across the network; use https://",
        ),
        (
            &[
                "--web-webhook",
                "https://relay.hospital.local/sekisho",
                "--web-webhook-ca",
                missing_ca,
            ][..],
            "--web-webhook-ca ",
        ),
    ] {
        refused_at_start_in_one_sentence(
            &["--web-listen", "127.0.0.1:0"],
            webhook,
            expected,
            &data,
        );
    }
    let (_, text) = run(broker(&[
        "serve",
        "--web-webhook",
        "https://relay.hospital.local/",
        "--web-webhook-ca",
        missing_ca,
    ])
    .arg("--policies")
    .arg(repo_policies())
    .arg("--data-dir")
    .arg(&data));
    assert!(
        text.contains(&format!("--web-webhook-ca {missing_ca}: cannot read it (")),
        "{text}"
    );
    assert!(
        text.contains("; give the PEM file of the CA that issued the receiver's certificate."),
        "{text}"
    );
}

#[test]
fn serve_refuses_an_audit_syslog_it_cannot_use_in_one_sentence_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing_ca = dir.path().join("siem-ca.pem");
    let missing_ca = missing_ca.to_str().unwrap();
    for (syslog, expected) in [
        (
            &["--audit-syslog", "udp://siem.hospital.local:514"][..],
            "--audit-syslog udp:// is refused because UDP loses messages without anyone knowing",
        ),
        (
            &["--audit-syslog", "ftp://siem.hospital.local"][..],
            "--audit-syslog must start with tls:// (RFC 5425) or tcp:// (plain, for a collector on this host or a trusted management network), not ftp://.",
        ),
        (
            &["--audit-syslog", "siem.hospital.local:514"][..],
            "is not a URL (it does not start with tls:// or tcp://); give one like tls://",
        ),
        (
            &[
                "--audit-syslog",
                "tls://siem.hospital.local",
                "--audit-syslog-ca",
                missing_ca,
            ][..],
            &*format!("--audit-syslog-ca {missing_ca}: cannot read it ("),
        ),
    ] {
        refused_at_start_in_one_sentence(&["--no-web"], syslog, expected, &data);
    }
}

/// `serve` with `web` and `options` (on the example policies, data in `data`) exits 1 with
/// one sentence on one line that contains `expected`, and creates no data directory.
fn refused_at_start_in_one_sentence(web: &[&str], options: &[&str], expected: &str, data: &Path) {
    let (output, text) = run(broker(&["serve", "--listen", "127.0.0.1:0"])
        .args(web)
        .args(options)
        .arg("--policies")
        .arg(repo_policies())
        .arg("--data-dir")
        .arg(data));
    assert_eq!(output.status.code(), Some(1), "{options:?}: {text}");
    assert!(text.contains(expected), "{options:?}: {text}");
    let line = text.trim_end();
    assert!(
        line.starts_with("sekisho-broker: ") && !line.contains('\n') && line.ends_with('.'),
        "{options:?}: one sentence on one line: {text}"
    );
    assert!(
        !data.exists(),
        "{options:?}: a refused start must not create the data directory"
    );
}

#[test]
fn serve_starts_on_the_example_policies_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = broker(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--web-listen",
        "127.0.0.1:0",
    ])
    .arg("--policies")
    .arg(repo_policies())
    .arg("--data-dir")
    .arg(&data)
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the broker exited early"
        );
        if line.contains("listening on UDP 127.0.0.1:") {
            break;
        }
    }
    assert!(line.contains("Demo General Hospital"), "{line}");
    // Then the CA's fingerprint and file, the web UI's address and, with no admin yet, the
    // first admin's link.
    let mut rest = String::new();
    while !rest.contains("/setup/") {
        assert!(
            stderr.read_line(&mut rest).unwrap() > 0,
            "the broker exited early: {rest}"
        );
    }
    assert!(rest.contains("Broker CA fingerprint"), "{rest}");
    assert!(
        rest.contains("Web UI for staff on TCP 127.0.0.1:"),
        "{rest}"
    );
    // On loopback, one line says how to open the web UI to the LAN.
    assert_eq!(
        rest.lines()
            .filter(|line| line.starts_with(
                "The web UI answers on this host only; to open it to the hospital's LAN, start with --web-listen 0.0.0.0:"
            ))
            .count(),
        1,
        "{rest}"
    );
    assert!(
        rest.contains("https://127.0.0.1:") && rest.contains("/setup/"),
        "{rest}"
    );
    for key in ["ca.key", "broker.key"] {
        let mode = std::fs::metadata(data.join("pki").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} must be readable by its owner only");
    }
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the data directory must be private");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM must stop the broker cleanly: {status}"
    );
}

// ---------------------------------------------------------------------------------------
// The desk commands. Requests are made by technicians over QUIC, which these tests do not
// run: they put requests into the database through the library, then drive the binary.

/// A hospital: the example policies and a data directory whose SQLite database the test
/// holds open too.
struct Hospital {
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    store: Store,
    /// The policies directory.
    policies: PathBuf,
    /// The TOTP secrets of the staff accounts made so far, by canonical name.
    secrets: std::cell::RefCell<std::collections::HashMap<String, Secret<Vec<u8>>>>,
}

/// The roles a staff account gets when a test first acts under its name: `auditor` and
/// `ito` audit; everyone else approves and administers.
fn default_roles(name: &str) -> Vec<Role> {
    match name {
        "auditor" | "ito" => vec![Role::Auditor],
        _ => vec![Role::Approver, Role::Admin],
    }
}

impl Hospital {
    fn new() -> Hospital {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let location = StoreLocation::default_in(&dir.path().join("data"));
        let store = runtime.block_on(Store::open(&location)).unwrap();
        Hospital {
            dir,
            runtime,
            store,
            policies: repo_policies(),
            secrets: Default::default(),
        }
    }

    /// A hospital whose hospital.toml ends with `staff_table` (a `[staff]` table).
    fn with_staff_rules(staff_table: &str) -> Hospital {
        let mut hospital = Hospital::new();
        let policies = hospital.dir.path().join("policies");
        std::fs::create_dir_all(policies.join("vendors")).unwrap();
        for entry in std::fs::read_dir(repo_policies().join("vendors")).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(
                &path,
                policies.join("vendors").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
        let toml = std::fs::read_to_string(repo_policies().join("hospital.toml")).unwrap();
        std::fs::write(
            policies.join("hospital.toml"),
            format!("{toml}\n{staff_table}\n"),
        )
        .unwrap();
        hospital.policies = policies;
        hospital
    }

    /// The staff directory over this hospital's database and keys, as the binary opens it.
    fn staff_directory(&self) -> (sekisho_broker::Hospital, StaffDirectory) {
        let config = sekisho_broker::BrokerConfig::new(self.data(), self.policies.clone());
        let hospital = self
            .runtime
            .block_on(sekisho_broker::Hospital::open(&config))
            .unwrap();
        let directory = StaffDirectory::new(
            hospital.store.clone(),
            hospital.sealing_key.clone(),
            std::sync::Arc::new(sekisho_broker::clock::SystemClock),
            "test hospital",
            sekisho_broker::staff::DEFAULT_IDLE_TIMEOUT,
        );
        (hospital, directory)
    }

    /// Makes staff account `name` with `roles` through a one-time link, as its person would
    /// (password, then a code from the new authenticator); returns its TOTP secret.
    fn staff_account(&self, name: &str, roles: &[Role]) -> Secret<Vec<u8>> {
        let config = sekisho_broker::BrokerConfig::new(self.data(), self.policies.clone());
        let secret = make_staff(&self.runtime, &config, name, roles);
        let name = check_name(name).unwrap();
        self.secrets.borrow_mut().insert(name, secret.clone());
        secret
    }

    /// A current code of `name`'s authenticator that the broker takes: the account is made
    /// on first use (with [`default_roles`]), and the step it last spent is forgotten so that
    /// one person can act several times within one 30-second step (as they could a minute
    /// apart). Tests of spent codes use [`Hospital::code`] instead.
    fn fresh_code(&self, name: &str) -> String {
        let canonical = check_name(name).unwrap();
        if !self.secrets.borrow().contains_key(&canonical) {
            self.staff_account(&canonical, &default_roles(&canonical));
        }
        self.sql(
            "UPDATE staff SET totp_last_step = 0, login_failures = 0, login_failed_at = 0 WHERE name = $1",
            &canonical,
        );
        self.code(&canonical)
    }

    /// The current code of account `name`'s authenticator, as its person reads it.
    fn code(&self, name: &str) -> String {
        let secrets = self.secrets.borrow();
        let secret = secrets
            .get(&check_name(name).unwrap())
            .unwrap_or_else(|| panic!("no staff account {name} in this test"));
        otp::code_at(secret, SystemTime::now()).unwrap()
    }

    /// Runs one statement with one text parameter on the database file directly.
    fn sql(&self, statement: &'static str, value: &str) {
        sql_on(
            &self.runtime,
            &self.data().join("sekisho.db"),
            statement,
            value,
        );
    }

    /// Runs the binary with `code` written to its standard input (`--code-stdin` added).
    fn with_code(&self, args: &[&str], code: &str) -> Output {
        run_with_code(&mut self.command(args), code)
    }

    /// Runs the binary as the test's staff member: with `--as NAME` in `args`, a fresh code
    /// of NAME's authenticator goes to standard input.
    fn output(&self, args: &[&str]) -> Output {
        let named = args
            .iter()
            .position(|arg| *arg == "--as" || *arg == "--by")
            .and_then(|at| args.get(at + 1))
            .filter(|name| check_name(name).is_ok());
        match named {
            Some(name) => {
                let code = self.fresh_code(name);
                self.with_code(args, &code)
            }
            None => self.command(args).output().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The binary with this hospital's data directory and policies.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = broker(args);
        command
            .arg("--data-dir")
            .arg(self.data())
            .arg("--policies")
            .arg(&self.policies);
        command
    }

    /// Runs the binary; asserts it succeeded and returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        succeeded(self.output(args))
    }

    /// Runs the binary; asserts it failed as the CLI fails, and returns the sentence.
    fn refused(&self, args: &[&str]) -> String {
        refused(self.output(args))
    }

    /// A request of acme-ehr's technician `technician` for ehr-web, waiting for `approvals`.
    fn request_needing(&self, technician: &str, approvals: u8) -> RequestId {
        let now = SystemTime::now();
        let record = new_request(technician, "apply patch 5.2.1", approvals, now);
        self.runtime
            .block_on(self.store.insert_request(&record, now, &test_event(now)))
            .unwrap();
        record.id
    }

    fn request(&self, technician: &str) -> RequestId {
        self.request_needing(technician, 1)
    }

    fn record(&self, id: &RequestId) -> RequestRecord {
        self.runtime.block_on(self.store.request(id)).unwrap()
    }

    /// An approved request, opened as a live session (as a broker would on the right OTP).
    fn live_session(&self, technician: &str) -> RequestId {
        let id = self.request(technician);
        self.ok(&[
            "request",
            "approve",
            id.as_str(),
            "--for",
            "1h",
            "--as",
            "suzuki",
        ]);
        let end_at = self.record(&id).end_at.unwrap();
        self.runtime
            .block_on(self.store.activate(
                &id,
                end_at,
                "test-broker",
                SystemTime::now(),
                &test_event(SystemTime::now()),
            ))
            .unwrap();
        id
    }
}

/// A request of acme-ehr's technician `technician` for ehr-web, made at `now`.
fn new_request(technician: &str, purpose: &str, approvals: u8, now: SystemTime) -> RequestRecord {
    let ask = sekisho_broker::session::NewRequest {
        targets: vec!["ehr-web".into()],
        purpose: purpose.into(),
        ticket: "INC-1234".into(),
        wanted: Duration::from_secs(3600),
    };
    RequestRecord::new(
        RequestId::generate().unwrap(),
        "acme-ehr",
        technician,
        ask,
        now,
        now + Duration::from_secs(30 * 60),
        approvals,
    )
}

fn succeeded(output: Output) -> String {
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "expected success: {}\n{stdout}{stderr}",
        output.status
    );
    stdout
}

/// Every failure is one sentence on standard error, prefixed, with exit code 1.
fn refused(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a refusal: {stdout}{stderr}"
    );
    assert!(
        stdout.is_empty(),
        "nothing on stdout when refused: {stdout}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let sentence = stderr
        .strip_prefix("sekisho-broker: ")
        .unwrap_or_else(|| panic!("prefixed: {stderr}"));
    assert!(
        sentence.trim_end().ends_with(['.', ')']),
        "a sentence: {stderr}"
    );
    sentence.trim_end().to_owned()
}

fn tokyo() -> HospitalZone {
    HospitalZone::resolve("Asia/Tokyo").unwrap()
}

/// `time` in the hospital zone as typed: `YYYY-MM-DD HH:MM` or `HH:MM`.
fn typed(time: SystemTime, format: &str) -> String {
    jiff::Timestamp::try_from(time)
        .unwrap()
        .to_zoned(tokyo().zone().clone())
        .strftime(format)
        .to_string()
}

fn between(value: SystemTime, low: SystemTime, high: SystemTime) -> bool {
    low <= value && value <= high
}

#[test]
fn request_list_shows_a_pending_request_with_who_what_and_how_long() {
    let hospital = Hospital::new();
    assert_eq!(hospital.ok(&["request", "list"]), "No pending requests.\n");
    let id = hospital.request("tanaka");

    let list = hospital.ok(&["request", "list"]);
    let mut lines = list.lines();
    assert_eq!(
        lines.next().unwrap(),
        "Requests waiting for an answer, approved or live (times in Asia/Tokyo):"
    );
    let header = lines.next().unwrap();
    for column in [
        "ID",
        "STATE",
        "TECHNICIAN",
        "TARGETS",
        "PURPOSE",
        "TICKET",
        "WANTS",
        "APPROVALS",
        "WHEN",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().unwrap();
    assert!(lines.next().is_none(), "one request, one row: {list}");
    for cell in [
        id.as_str(),
        "requested",
        "acme-ehr/tanaka",
        "ehr-web",
        "apply patch 5.2.1",
        "INC-1234",
        "1h",
        "0 of 1",
        "waiting <1m, ",
        "m left to answer",
    ] {
        assert!(row.contains(cell), "{cell:?} in {row}");
    }
    assert_eq!(
        row.find("requested"),
        header.find("STATE"),
        "cells line up under their headers:\n{list}"
    );
}

#[test]
fn approving_for_an_hour_approves_pins_and_the_list_shows_the_end_time() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let before = SystemTime::now();
    let out = hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "suzuki",
    ]);
    let after = SystemTime::now();

    let record = hospital.record(&id);
    assert_eq!(record.stage, Stage::Approved);
    let end = record.end_at.unwrap();
    let hour = Duration::from_secs(3600);
    assert!(
        between(end, before + hour, after + hour),
        "ends an hour later"
    );
    assert_eq!(record.approvals[0].approver, "suzuki");
    assert!(
        record.pinned.as_deref().unwrap().contains("127.0.0.1:8080"),
        "{:?}",
        record.pinned
    );
    assert_eq!(
        out,
        format!("Approved {id} until {} Asia/Tokyo.\n", tokyo().format(end))
    );

    let list = hospital.ok(&["request", "list"]);
    let row = list
        .lines()
        .find(|line| line.contains(id.as_str()))
        .unwrap();
    assert!(row.contains("approved"), "{row}");
    assert!(row.contains("1 of 1: suzuki"), "{row}");
    assert!(
        row.contains(&format!("until {}", tokyo().format(end))),
        "{row}"
    );
}

#[test]
fn approving_until_a_time_typed_in_the_hospital_zone_ends_then() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let wanted = SystemTime::now() + Duration::from_secs(90 * 60);
    let until = typed(wanted, "%Y-%m-%d %H:%M");
    let out = hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--until",
        &until,
        "--as",
        "suzuki",
    ]);
    let end = hospital.record(&id).end_at.unwrap();
    assert_eq!(typed(end, "%Y-%m-%d %H:%M:%S"), format!("{until}:00"));
    assert!(out.contains(&format!("until {until} (")), "{out}");
    assert!(out.trim_end().ends_with("Asia/Tokyo."), "{out}");
}

#[test]
fn an_end_time_that_has_already_passed_today_is_refused() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    // This minute, today, began at most a minute ago.
    let now = typed(SystemTime::now(), "%H:%M");
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--until",
        &now,
        "--as",
        "suzuki",
    ]);
    assert!(sentence.contains("has already passed"), "{sentence}");
    assert_eq!(hospital.record(&id).stage, Stage::Requested);

    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--until",
        "tomorrow",
        "--as",
        "suzuki",
    ]);
    assert!(sentence.contains("is not a time"), "{sentence}");
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "3 hours",
        "--as",
        "suzuki",
    ]);
    assert!(sentence.contains("is not a duration"), "{sentence}");
}

#[test]
fn a_technician_cannot_approve_their_own_request() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "tanaka",
    ]);
    assert_eq!(
        sentence,
        format!("tanaka made request {id} and cannot answer it; ask another approver.")
    );
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "acme-ehr/tanaka",
    ]);
    assert!(sentence.contains("is one person's name"), "{sentence}");
    assert!(hospital.record(&id).approvals.is_empty());
}

#[test]
fn approving_longer_than_the_vendors_longest_session_is_refused() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "3h",
        "--as",
        "suzuki",
    ]);
    assert_eq!(
        sentence,
        "Acme EHR Co., Ltd.'s agreement allows sessions of at most 2h; choose an earlier end time."
    );
    assert_eq!(hospital.record(&id).stage, Stage::Requested);
    hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "2h",
        "--as",
        "suzuki",
    ]);
}

#[test]
fn a_request_needing_two_approvers_is_approved_by_the_second_different_one() {
    let hospital = Hospital::new();
    let id = hospital.request_needing("tanaka", 2);
    let out = hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "suzuki",
    ]);
    assert_eq!(
        out,
        format!("Recorded suzuki's approval of {id} (1 of 2); it needs one more approver.\n")
    );
    let list = hospital.ok(&["request", "list"]);
    assert!(list.contains("1 of 2: suzuki"), "{list}");
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "suzuki",
    ]);
    assert!(sentence.contains("already approved"), "{sentence}");

    let out = hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "sato",
    ]);
    assert!(out.starts_with(&format!("Approved {id} until ")), "{out}");
    assert_eq!(hospital.record(&id).stage, Stage::Approved);
}

#[test]
fn an_action_without_a_name_is_refused_and_user_is_not_taken_for_one() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let sentence = hospital.refused(&["request", "approve", id.as_str(), "--for", "1h"]);
    assert!(sentence.contains("--as"), "{sentence}");
    // $USER names an OS account, not a person who proved anything.
    hospital.fresh_code("suzuki");
    let sentence = refused(
        hospital
            .command(&["request", "approve", id.as_str(), "--for", "1h"])
            .env("USER", "suzuki")
            .output()
            .unwrap(),
    );
    assert!(sentence.contains("--as"), "{sentence}");
    assert!(hospital.record(&id).approvals.is_empty());
}

#[test]
fn denying_takes_a_reason_ends_the_request_and_the_full_list_shows_why() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let sentence = hospital.refused(&[
        "request",
        "deny",
        id.as_str(),
        "--reason",
        " ",
        "--as",
        "suzuki",
    ]);
    assert!(sentence.contains("--reason"), "{sentence}");

    let out = hospital.ok(&[
        "request",
        "deny",
        id.as_str(),
        "--reason",
        "not during surgery hours",
        "--as",
        "suzuki",
    ]);
    assert_eq!(
        out,
        format!("Denied {id}; the technician is told: not during surgery hours\n")
    );
    let record = hospital.record(&id);
    assert_eq!(
        record.stage,
        Stage::Ended(sekisho_broker::session::EndReason::Denied)
    );
    assert_eq!(record.ended_by.as_deref(), Some("suzuki"));

    assert_eq!(hospital.ok(&["request", "list"]), "No pending requests.\n");
    let all = hospital.ok(&["request", "list", "--all"]);
    let row = all.lines().find(|line| line.contains(id.as_str())).unwrap();
    assert!(row.contains("ended"), "{row}");
    let ended = tokyo().format(record.ended_at.unwrap());
    assert!(
        row.ends_with(&format!(
            "denied {ended} by suzuki: not during surgery hours"
        )),
        "{row}"
    );
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "sato",
    ]);
    assert!(
        sentence.contains("only pending requests can be answered"),
        "{sentence}"
    );
}

#[test]
fn revoking_an_approved_request_ends_it_with_the_reason() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "suzuki",
    ]);
    let out = hospital.ok(&[
        "session",
        "revoke",
        id.as_str(),
        "--reason",
        "wrong target",
        "--as",
        "sato",
    ]);
    assert!(out.starts_with(&format!("Revoked {id};")), "{out}");
    let record = hospital.record(&id);
    assert_eq!(
        record.stage,
        Stage::Ended(sekisho_broker::session::EndReason::Revoked)
    );
    assert_eq!(record.ended_by.as_deref(), Some("sato"));
    assert_eq!(record.note.as_deref(), Some("wrong target"));

    let sentence = hospital.refused(&[
        "session",
        "revoke",
        id.as_str(),
        "--reason",
        "again",
        "--as",
        "sato",
    ]);
    assert!(
        sentence.contains("only approved or live sessions"),
        "{sentence}"
    );
}

#[test]
fn session_list_shows_live_sessions_and_extend_moves_the_end() {
    let hospital = Hospital::new();
    assert_eq!(hospital.ok(&["session", "list"]), "No live sessions.\n");
    let pending = hospital.request("sato");
    let id = hospital.live_session("tanaka");
    let record = hospital.record(&id);
    let (opened, end) = (record.opened_at.unwrap(), record.end_at.unwrap());

    let list = hospital.ok(&["session", "list"]);
    assert!(
        list.starts_with("Live sessions (times in Asia/Tokyo):\n"),
        "{list}"
    );
    assert!(
        !list.contains(pending.as_str()),
        "only live sessions: {list}"
    );
    let row = list
        .lines()
        .find(|line| line.contains(id.as_str()))
        .unwrap();
    for cell in [
        "acme-ehr/tanaka",
        "ehr-web",
        &tokyo().format(opened),
        &tokyo().format(end),
        "59m",
    ] {
        assert!(row.contains(cell), "{cell:?} in {row}");
    }

    let out = hospital.ok(&[
        "session",
        "extend",
        id.as_str(),
        "--for",
        "30m",
        "--as",
        "suzuki",
    ]);
    let new_end = hospital.record(&id).end_at.unwrap();
    assert_eq!(new_end, end + Duration::from_secs(30 * 60));
    assert!(
        out.starts_with(&format!(
            "{id} now ends at {} Asia/Tokyo (1h29m from now).",
            tokyo().format(new_end)
        )),
        "{out}"
    );
    let sentence = hospital.refused(&[
        "session",
        "extend",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "sato",
    ]);
    assert!(sentence.contains("at most 2h"), "{sentence}");
    let sentence = hospital.refused(&[
        "session",
        "extend",
        pending.as_str(),
        "--for",
        "10m",
        "--as",
        "sato",
    ]);
    assert!(sentence.contains("not a live session"), "{sentence}");

    hospital.ok(&[
        "session",
        "revoke",
        id.as_str(),
        "--reason",
        "done",
        "--as",
        "suzuki",
    ]);
    assert_eq!(hospital.ok(&["session", "list"]), "No live sessions.\n");
}

#[test]
fn lockdown_cuts_live_sessions_refuses_approvals_and_lifts() {
    let hospital = Hospital::new();
    assert_eq!(hospital.ok(&["lockdown", "status"]), "Lockdown is off.\n");
    let live = hospital.live_session("tanaka");
    let pending = hospital.request("kato");

    let sentence = hospital.refused(&["lockdown", "on", "--reason", "", "--as", "suzuki"]);
    assert!(sentence.contains("--reason"), "{sentence}");
    let out = hospital.ok(&[
        "lockdown",
        "on",
        "--reason",
        "ransomware suspected",
        "--as",
        "suzuki",
    ]);
    assert!(out.starts_with("Lockdown is on:"), "{out}");
    assert!(out.contains("1 live session was cut"), "{out}");
    assert_eq!(
        hospital.record(&live).stage,
        Stage::Ended(sekisho_broker::session::EndReason::Lockdown)
    );
    let status = hospital.ok(&["lockdown", "status"]);
    assert!(status.starts_with("Lockdown is ON since "), "{status}");
    assert!(
        status.contains("Asia/Tokyo, set by suzuki: ransomware suspected"),
        "{status}"
    );
    let sentence = hospital.refused(&[
        "request",
        "approve",
        pending.as_str(),
        "--for",
        "1h",
        "--as",
        "sato",
    ]);
    assert!(sentence.contains("lockdown"), "{sentence}");

    let out = hospital.ok(&["lockdown", "off", "--as", "suzuki"]);
    assert_eq!(
        out,
        "Lockdown lifted: technicians may ask for sessions again.\n"
    );
    let status = hospital.ok(&["lockdown", "status"]);
    assert!(status.starts_with("Lockdown is off (lifted "), "{status}");
    assert!(status.contains("by suzuki"), "{status}");
    assert_eq!(
        hospital.ok(&["lockdown", "off", "--as", "suzuki"]),
        "Lockdown is not on; nothing changed.\n"
    );
    hospital.ok(&[
        "request",
        "approve",
        pending.as_str(),
        "--for",
        "1h",
        "--as",
        "sato",
    ]);
}

#[test]
fn technicians_are_listed_and_unlocked_and_an_unknown_one_is_named() {
    let hospital = Hospital::new();
    assert!(
        hospital
            .ok(&["technician", "list"])
            .starts_with("No technicians yet;")
    );
    let sentence = hospital.refused(&[
        "technician",
        "unlock",
        "acme-ehr",
        "nobody",
        "--as",
        "suzuki",
    ]);
    assert_eq!(
        sentence,
        "There is no technician acme-ehr/nobody; list them with `sekisho-broker technician list`."
    );

    hospital.ok(&["vendor", "add", "acme-ehr", "--as", "yamada"]);
    hospital.ok(&[
        "technician",
        "add",
        "acme-ehr",
        "tanaka",
        "--name",
        "Tanaka",
        "--as",
        "yamada",
    ]);
    hospital
        .runtime
        .block_on(async {
            for _ in 0..5 {
                hospital
                    .store
                    .record_otp_failure(
                        "acme-ehr",
                        "tanaka",
                        "r-test",
                        "wrong",
                        5,
                        SystemTime::now(),
                    )
                    .await?;
            }
            Ok::<_, sekisho_broker::store::StoreError>(())
        })
        .unwrap();
    let list = hospital.ok(&["technician", "list"]);
    let row = list.lines().find(|line| line.contains("tanaka")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["acme-ehr", "tanaka", "Tanaka", "locked", "-", "5"],
        "{list}"
    );
    assert!(list.contains("technician unlock"), "{list}");

    let out = hospital.ok(&[
        "technician",
        "unlock",
        "acme-ehr",
        "tanaka",
        "--as",
        "suzuki",
    ]);
    assert!(out.starts_with("Unlocked acme-ehr/tanaka;"), "{out}");
    let list = hospital.ok(&["technician", "list"]);
    let row = list.lines().find(|line| line.contains("tanaka")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["acme-ehr", "tanaka", "Tanaka", "not", "enrolled", "-", "0"]
    );
}

#[test]
fn approving_an_unknown_request_says_there_is_no_such_request() {
    let hospital = Hospital::new();
    let sentence = hospital.refused(&[
        "request", "approve", "r-nope", "--for", "1h", "--as", "suzuki",
    ]);
    assert_eq!(
        sentence,
        "There is no request r-nope; list them with `sekisho-broker request list`."
    );
    let sentence = hospital.refused(&[
        "session", "revoke", "r-nope", "--reason", "x", "--as", "suzuki",
    ]);
    assert!(
        sentence.starts_with("There is no request r-nope"),
        "{sentence}"
    );
}

#[test]
fn desk_commands_refuse_a_data_directory_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("typo");
    let sentence = refused(
        broker(&["request", "list"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--policies")
            .arg(repo_policies())
            .output()
            .unwrap(),
    );
    assert!(
        sentence.starts_with(&format!(
            "There is no sekisho database at {}",
            data.join("sekisho.db").display()
        )),
        "{sentence}"
    );
    assert!(!data.exists(), "a mistyped data directory is not created");
}

#[test]
fn vendors_are_taken_on_only_with_a_policy_file_and_listed_with_their_state() {
    let hospital = Hospital::new();
    let list = hospital.ok(&["vendor", "list"]);
    let acme = list
        .lines()
        .find(|line| line.starts_with("acme-ehr"))
        .unwrap();
    assert!(acme.contains("not added"), "{list}");
    assert!(
        acme.contains("sekisho-broker vendor add acme-ehr"),
        "{list}"
    );

    let sentence = hospital.refused(&["vendor", "add", "nobody", "--as", "yamada"]);
    assert!(
        sentence.starts_with("No policy file names vendor `nobody`"),
        "{sentence}"
    );
    let sentence = hospital.refused(&[
        "technician",
        "add",
        "acme-ehr",
        "tanaka",
        "--name",
        "Tanaka Hanako",
        "--as",
        "yamada",
    ]);
    assert!(
        sentence.contains("`sekisho-broker vendor add acme-ehr` first"),
        "{sentence}"
    );

    hospital.ok(&["vendor", "add", "acme-ehr", "--as", "yamada"]);
    let sentence = hospital.refused(&["vendor", "add", "acme-ehr", "--as", "yamada"]);
    assert!(sentence.contains("already been added"), "{sentence}");
    let sentence = hospital.refused(&["vendor", "disable", "acme-ehr", "--as", "yamada"]);
    assert!(sentence.contains("reason"), "{sentence}");
    let out = hospital.ok(&[
        "vendor",
        "disable",
        "acme-ehr",
        "--reason",
        "contract ended",
        "--as",
        "yamada",
    ]);
    assert!(out.contains("is disabled"), "{out}");
    let list = hospital.ok(&["vendor", "list"]);
    let acme = list
        .lines()
        .find(|line| line.starts_with("acme-ehr"))
        .unwrap();
    assert!(
        acme.contains("disabled") && acme.contains("contract ended"),
        "{list}"
    );
    let sentence = hospital.refused(&[
        "technician",
        "add",
        "acme-ehr",
        "tanaka",
        "--name",
        "Tanaka Hanako",
        "--as",
        "yamada",
    ]);
    assert!(sentence.contains("is disabled"), "{sentence}");
    hospital.ok(&["vendor", "enable", "acme-ehr", "--as", "yamada"]);
    let list = hospital.ok(&["vendor", "list"]);
    let acme = list
        .lines()
        .find(|line| line.starts_with("acme-ehr"))
        .unwrap();
    assert!(acme.contains("enabled"), "{list}");
}

/// The `--token` and `--ca-fingerprint` of the enrollment command a `technician add` or
/// `technician reset` printed.
fn enrollment_command(out: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|line| line.trim_start().starts_with("sekisho enroll "))
        .unwrap_or_else(|| panic!("an enrollment command: {out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| {
        let at = words.iter().position(|word| *word == flag).unwrap();
        words[at + 1].to_owned()
    };
    (after("--token"), after("--ca-fingerprint"))
}

#[test]
fn technician_add_prints_a_one_time_token_stored_only_as_its_hash_with_the_ca_fingerprint() {
    let hospital = Hospital::new();
    hospital.ok(&["vendor", "add", "acme-ehr", "--as", "yamada"]);
    let out = hospital.ok(&[
        "technician",
        "add",
        "acme-ehr",
        "tanaka",
        "--name",
        "Tanaka Hanako",
        "--email",
        "tanaka@acme.example",
        "--broker-address",
        "broker.hospital.example:4433",
        "--as",
        "yamada",
    ]);
    assert!(
        out.starts_with("Added technician acme-ehr/tanaka (Tanaka Hanako)."),
        "{out}"
    );
    assert!(
        out.contains("sekisho enroll --broker broker.hospital.example:4433 --token "),
        "{out}"
    );
    assert!(out.contains("works once"), "{out}");
    let (token, fingerprint) = enrollment_command(&out);
    // 160 bits in base32 letters, grouped by four.
    let letters: String = token.chars().filter(|c| *c != '-').collect();
    assert_eq!(letters.len(), 32, "{token}");
    // The fingerprint is the CA's in the data directory.
    let ca = std::fs::read_to_string(hospital.data().join("pki/ca.pem")).unwrap();
    let der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()
    };
    assert_eq!(
        fingerprint,
        format!(
            "sha256:{}",
            sekisho_broker::encoding::hex(
                ring::digest::digest(&ring::digest::SHA256, &der).as_ref()
            )
        )
    );
    // Neither the token nor its letters are anywhere in the database files.
    for file in ["sekisho.db", "sekisho.db-wal"] {
        let path = hospital.data().join(file);
        if let Ok(bytes) = std::fs::read(&path) {
            for needle in [&token, &letters] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{file} holds the token"
                );
            }
        }
    }
    let sentence = hospital.refused(&[
        "technician",
        "add",
        "acme-ehr",
        "tanaka",
        "--name",
        "Tanaka Hanako",
        "--as",
        "yamada",
    ]);
    assert!(sentence.contains("already exists"), "{sentence}");
    let sentence = hospital.refused(&[
        "technician",
        "add",
        "acme-ehr",
        "Sato",
        "--name",
        "Sato",
        "--as",
        "yamada",
    ]);
    assert!(sentence.contains("is not a valid name"), "{sentence}");
    let sentence = hospital.refused(&[
        "technician",
        "add",
        "acme-ehr",
        "sato",
        "--name",
        "Sato",
        "--valid-for",
        "8d",
        "--as",
        "yamada",
    ]);
    assert!(sentence.contains("at most 7 days"), "{sentence}");
}

#[test]
fn technician_disable_enable_and_reset_are_recorded_and_reset_prints_a_new_token() {
    let hospital = Hospital::new();
    hospital.ok(&["vendor", "add", "acme-ehr", "--as", "yamada"]);
    let first = hospital.ok(&[
        "technician",
        "add",
        "acme-ehr",
        "tanaka",
        "--name",
        "Tanaka",
        "--as",
        "yamada",
    ]);
    // Without --broker-address the command says to fill it in.
    assert!(first.contains("--broker BROKER-HOST:4433"), "{first}");
    assert!(first.contains("Replace BROKER-HOST"), "{first}");
    let sentence = hospital.refused(&[
        "technician",
        "disable",
        "acme-ehr",
        "tanaka",
        "--as",
        "yamada",
    ]);
    assert!(sentence.contains("reason"), "{sentence}");
    let out = hospital.ok(&[
        "technician",
        "disable",
        "acme-ehr",
        "tanaka",
        "--reason",
        "left the company",
        "--as",
        "yamada",
    ]);
    assert!(out.contains("acme-ehr/tanaka is disabled"), "{out}");
    let sentence = hospital.refused(&[
        "technician",
        "disable",
        "acme-ehr",
        "tanaka",
        "--reason",
        "again",
        "--as",
        "yamada",
    ]);
    assert!(sentence.contains("is already disabled"), "{sentence}");
    let list = hospital.ok(&["technician", "list"]);
    assert!(
        list.lines()
            .any(|line| line.contains("tanaka") && line.contains("disabled")),
        "{list}"
    );
    hospital.ok(&[
        "technician",
        "enable",
        "acme-ehr",
        "tanaka",
        "--as",
        "yamada",
    ]);
    let out = hospital.ok(&[
        "technician",
        "reset",
        "acme-ehr",
        "tanaka",
        "--as",
        "yamada",
    ]);
    assert!(out.starts_with("Reset acme-ehr/tanaka:"), "{out}");
    assert_ne!(enrollment_command(&first).0, enrollment_command(&out).0);
    let sentence = hospital.refused(&[
        "technician",
        "reset",
        "acme-ehr",
        "nobody",
        "--as",
        "yamada",
    ]);
    assert!(
        sentence.contains("there is no technician acme-ehr/nobody")
            || sentence.contains("There is no technician acme-ehr/nobody"),
        "{sentence}"
    );

    let kinds = hospital.ok(&[
        "audit",
        "list",
        "--kind",
        "vendor-added,technician-added,technician-disabled,technician-enabled,technician-reset",
    ]);
    for kind in [
        "vendor-added",
        "technician-added",
        "technician-disabled",
        "technician-enabled",
        "technician-reset",
    ] {
        assert!(kinds.contains(kind), "{kind}: {kinds}");
    }
    assert!(kinds.contains("yamada"), "{kinds}");
}

#[test]
fn the_database_option_and_its_environment_variable_point_every_command_at_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("elsewhere/shared.db");
    let data = dir.path().join("data");
    let with = |args: &[&str]| {
        let mut command = broker(args);
        command
            .arg("--data-dir")
            .arg(&data)
            .arg("--policies")
            .arg(repo_policies())
            .arg("--database")
            .arg(&database);
        command
    };
    // The database exists (a broker started on it once).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        Store::open(&StoreLocation::Sqlite(database.clone()))
            .await
            .unwrap()
            .close()
            .await
    });
    let config = sekisho_broker::BrokerConfig {
        database: Some(StoreLocation::Sqlite(database.clone())),
        ..sekisho_broker::BrokerConfig::new(data.clone(), repo_policies())
    };
    let yamada = make_staff(&runtime, &config, "yamada", &[Role::Admin]);
    let fresh_code = || {
        sql_on(
            &runtime,
            &database,
            "UPDATE staff SET totp_last_step = 0 WHERE name = $1",
            "yamada",
        );
        otp::code_at(&yamada, SystemTime::now()).unwrap()
    };
    succeeded(run_with_code(
        &mut with(&["vendor", "add", "acme-ehr", "--as", "yamada"]),
        &fresh_code(),
    ));
    succeeded(run_with_code(
        &mut with(&[
            "technician",
            "add",
            "acme-ehr",
            "tanaka",
            "--name",
            "Tanaka",
            "--as",
            "yamada",
        ]),
        &fresh_code(),
    ));
    assert!(
        database.exists(),
        "technician add made the technician in --database"
    );
    assert!(
        !data.join("sekisho.db").exists(),
        "and not in the data directory"
    );

    let list = succeeded(with(&["technician", "list"]).output().unwrap());
    assert!(list.contains("tanaka"), "{list}");
    let list = succeeded(
        broker(&["technician", "list"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--policies")
            .arg(repo_policies())
            .env("SEKISHO_DATABASE", &database)
            .output()
            .unwrap(),
    );
    assert!(list.contains("tanaka"), "SEKISHO_DATABASE: {list}");
}

#[test]
fn a_mistake_in_the_arguments_is_one_sentence_and_exit_code_1() {
    let hospital = Hospital::new();
    let sentence = hospital.refused(&[
        "request", "approve", "r-x", "--for", "1h", "--until", "10:00", "--as", "suzuki",
    ]);
    assert!(sentence.contains("cannot be used with"), "{sentence}");
    let sentence = hospital.refused(&["request", "approve", "r-x", "--as", "suzuki"]);
    assert!(sentence.contains("--for"), "{sentence}");
    let sentence = hospital.refused(&["lockdwon", "status"]);
    assert!(
        sentence.contains("lockdown"),
        "the tip names the command: {sentence}"
    );
    let help = succeeded(
        hospital
            .command(&["request", "approve", "--help"])
            .output()
            .unwrap(),
    );
    assert!(help.contains("--until <TIME>"), "{help}");
}

#[test]
fn the_web_ui_listens_on_this_host_unless_told_and_numbers_out_of_range_are_refused() {
    let help = succeeded(broker(&["serve", "--help"]).output().unwrap());
    assert!(help.contains("[default: 127.0.0.1:8443]"), "{help}");
    assert!(help.contains("--web-allow <CIDR>"), "{help}");
    for (args, expected) in [
        (
            &["serve", "--web-allow", "10.0.0.1/8"][..],
            "has bits set after the /8 prefix",
        ),
        (
            &["serve", "--web-allow", "staff"][..],
            "is not an IP network",
        ),
        (&["serve", "--web-idle-minutes", "0"][..], "0"),
        (
            &["serve", "--web-idle-minutes", "307445734561825861"][..],
            "307445734561825861",
        ),
        (&["serve", "--web-session-hours", "169"][..], "169"),
    ] {
        let sentence = refused(broker(args).output().unwrap());
        assert!(sentence.contains(expected), "{args:?}: {sentence}");
    }
    let hospital = Hospital::new();
    for absurd in ["99999999999h", "25h"] {
        let sentence = hospital.refused(&[
            "request", "approve", "r-x", "--for", absurd, "--as", "suzuki",
        ]);
        assert!(sentence.contains("at most 24h"), "{absurd}: {sentence}");
    }
}

/// What `audit verify` adds when no broker signed a checkpoint (these tests run no broker).
const NO_CHECKPOINT: &str = "No signed checkpoint from a trusted key was found: the chain holds together, but nothing outside it proves it was not rewritten, cut off or rolled back (give --checkpoints FILE, or run verify where the broker's data directory is).\n";

/// An audit event for rows the tests write directly.
#[test]
fn status_shows_the_queue_and_the_senders_and_fails_while_a_senders_lease_has_run_out() {
    let hospital = Hospital::new();
    let fresh = hospital.ok(&["status"]);
    assert!(fresh.starts_with("Lockdown is off.\n"), "{fresh}");
    assert!(
        fresh.contains(
            "Requests waiting for approval: 0; approved, not yet opened: 0; live sessions: 0."
        ),
        "{fresh}"
    );
    assert!(fresh.contains("Senders: none"), "{fresh}");
    assert!(fresh.ends_with("No problems.\n"), "{fresh}");

    hospital.live_session("tanaka");
    hospital.request("kato");
    let store = &hospital.store;
    let (events, _) = hospital.runtime.block_on(store.audit_head()).unwrap();
    let take = |feature: &str, destination: &str, holder: &str, ttl: Duration, after: i64| {
        let taken = hospital.runtime.block_on(store.acquire_lease(
            feature,
            destination,
            holder,
            ttl,
            after,
            |_, _| None,
        ));
        match taken.unwrap() {
            sekisho_broker::store::Acquired::Taken { term, .. } => term,
            held => panic!("not taken: {held:?}"),
        }
    };
    // One sender caught up and holding its lease; one whose lease has run out (a broker that
    // crashed), the whole log still to send.
    take(
        "webhook",
        "https://relay.hospital.local:8443",
        "b-one",
        Duration::from_secs(600),
        events,
    );
    let syslog = "tls://siem.hospital.local:6514";
    let term = take("audit-syslog", syslog, "b-two", Duration::ZERO, 0);

    let output = hospital.command(&["status"]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr, "sekisho-broker: 1 problem; see PROBLEM above\n");
    assert!(
        stdout.contains(
            "Requests waiting for approval: 1; approved, not yet opened: 0; live sessions: 1."
        ),
        "{stdout}"
    );
    let webhook = row(&stdout, "webhook");
    assert!(
        webhook.starts_with("webhook https://relay.hospital.local:8443 b-one held, ")
            && webhook.ends_with(" left 0 events"),
        "{webhook}"
    );
    assert!(
        row(&stdout, "audit-syslog").starts_with(&format!("audit-syslog {syslog} b-two ran out ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "PROBLEM: no broker is sending the audit-syslog to {syslog}, and {events} events wait: start a broker configured to send it"
        )),
        "{stdout}"
    );

    // Let go at a clean shutdown: nobody sends, on purpose.
    hospital
        .runtime
        .block_on(store.release_lease("audit-syslog", syslog, "b-two", term))
        .unwrap();
    let calm = hospital.ok(&["status"]);
    assert!(
        row(&calm, "audit-syslog").contains("b-two let go at its broker's shutdown; nobody sends "),
        "{calm}"
    );
    assert!(calm.ends_with("No problems.\n"), "{calm}");
}

#[test]
fn status_shows_each_brokers_clock_and_fails_while_a_running_one_is_unsynchronised_or_was_stepped()
{
    let hospital = Hospital::new();
    let now = SystemTime::now();
    let record = |event: AuditEvent| {
        hospital
            .runtime
            .block_on(hospital.store.record(&event))
            .unwrap();
    };
    let broker_event = |broker: &str, at: SystemTime, kind: EventKind| {
        AuditEvent::new(at, Actor::Broker(broker.into()), kind)
    };
    let hour = Duration::from_secs(3600);
    // b-one runs, its clock synchronised, and was set back an hour two hours ago.
    record(broker_event(
        "b-one",
        now - 3 * hour,
        EventKind::BrokerStarted,
    ));
    record(
        broker_event("b-one", now - 3 * hour, EventKind::ClockSync)
            .detail("state", "synchronised")
            .detail("source", "chronyc"),
    );
    record(
        broker_event("b-one", now - 2 * hour, EventKind::ClockJumped)
            .detail("expected", "2026-11-23T02:00:00Z")
            .detail("observed", "2026-11-23T01:00:00Z")
            .detail("step_ms", -3_600_000),
    );
    // b-two runs where nothing can tell whether its clock is synchronised.
    record(broker_event("b-two", now - hour, EventKind::BrokerStarted));
    record(
        broker_event("b-two", now - hour, EventKind::ClockSync)
            .detail("state", "unknown")
            .detail("source", "none")
            .detail("reason", "neither timedatectl nor chronyc could tell (timedatectl: not installed; chronyc: not installed)"),
    );
    let output = hospital.command(&["status"]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr, "sekisho-broker: 1 problem; see PROBLEM above\n");
    assert!(
        stdout.contains("\nClocks (brokers that recorded their clock in the last 7 days; times in Asia/Tokyo):\nBROKER"),
        "{stdout}"
    );
    let one = row(&stdout, "b-one");
    assert!(
        one.starts_with("b-one running synchronised (chronyc) since ")
            && one.contains(" back 60 min at "),
        "{one}"
    );
    assert!(
        row(&stdout, "b-two").starts_with("b-two running unknown since "),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nBroker b-two: whether its clock is synchronised is unknown: neither timedatectl nor chronyc could tell (timedatectl: not installed; chronyc: not installed). This is not counted as a problem"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nPROBLEM: broker b-one's wall clock was set back by 60 min at ")
            && stdout.contains(" (2 h ago; expected 2026-11-23T02:00:00Z, read 2026-11-23T01:00:00Z): check the host's time service;"),
        "{stdout}"
    );

    // b-two loses its time source: a second problem. Then b-one stops: its step no longer is.
    record(
        broker_event("b-two", now, EventKind::ClockSync)
            .detail("state", "unsynchronised")
            .detail("source", "timedatectl")
            .detail("was", "unknown"),
    );
    let output = hospital.command(&["status"]).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "sekisho-broker: 2 problems; see PROBLEM above\n",
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "\nPROBLEM: broker b-two's clock is not synchronised (timedatectl says so, since "
        ),
        "{stdout}"
    );
    record(broker_event("b-one", now, EventKind::BrokerStopped));
    record(broker_event("b-two", now, EventKind::BrokerStopped));
    let calm = hospital.ok(&["status"]);
    assert!(row(&calm, "b-one").starts_with("b-one stopped "), "{calm}");
    assert!(calm.ends_with("No problems.\n"), "{calm}");
}

/// The line of `text` starting with `first`, its columns one space apart.
fn row(text: &str, first: &str) -> String {
    text.lines()
        .find(|line| line.starts_with(first))
        .unwrap_or_else(|| panic!("no {first} row: {text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn test_event(now: SystemTime) -> sekisho_broker::audit::AuditEvent {
    sekisho_broker::audit::AuditEvent::new(
        now,
        sekisho_broker::audit::Actor::Staff("test".into()),
        sekisho_broker::audit::EventKind::RequestMade,
    )
}

// ---------------------------------------------------------------------------------------
// The audit commands, over a history made as the broker makes it: the technician's request
// and session events through the library (they come over QUIC), the staff's steps through
// the binary.

fn technician_actor(technician: &str) -> Actor {
    Actor::Technician {
        vendor: "acme-ehr".into(),
        technician: technician.into(),
    }
}

/// The seven events of one story, after the request: approved (2), opened (3), a forward
/// opened and closed (4, 5), another (6, 7), ended (8).
const STORY_EVENTS: usize = 8;

impl Hospital {
    /// An event by technician acme-ehr/`technician` about session `id`, now.
    fn technician_event(&self, id: &RequestId, technician: &str, kind: EventKind) -> AuditEvent {
        AuditEvent::new(SystemTime::now(), technician_actor(technician), kind)
            .request(id)
            .technician("acme-ehr", technician)
    }

    /// A request as a broker stores it, with its request-made event.
    fn ask(&self, technician: &str, purpose: &str) -> RequestId {
        let now = SystemTime::now();
        let record = new_request(technician, purpose, 1, now);
        let made = self
            .technician_event(&record.id, technician, EventKind::RequestMade)
            .detail("targets", "ehr-web")
            .detail("purpose", purpose)
            .detail("ticket", "INC-1234")
            .detail("wanted", "1h");
        self.runtime
            .block_on(self.store.insert_request(&record, now, &made))
            .unwrap();
        record.id
    }

    /// Approves `id` through the binary, then opens it as a broker would, `ago` before now.
    /// (The approval goes through the library's desk, as the binary's does after the
    /// approver's code: the story's events are the session's own.)
    fn approve_and_open(&self, id: &RequestId, technician: &str, ago: Duration) {
        let (hospital, _) = self.staff_directory();
        let desk = hospital.desk(std::sync::Arc::new(sekisho_broker::clock::SystemClock));
        self.runtime
            .block_on(desk.approve(
                id,
                "suzuki",
                sekisho_broker::approval::Until::For(Duration::from_secs(3600)),
            ))
            .unwrap();
        self.runtime.block_on(hospital.store.close());
        let end_at = self.record(id).end_at.unwrap();
        let opened = SystemTime::now() - ago;
        let mut event = self
            .technician_event(id, technician, EventKind::SessionOpened)
            .detail("targets", "ehr-web")
            .detail("end_at", sekisho_broker::audit::timestamp(end_at))
            .detail("broker", "test-broker");
        event.at = opened;
        self.runtime
            .block_on(
                self.store
                    .activate(id, end_at, "test-broker", opened, &event),
            )
            .unwrap();
    }

    /// One forward to ehr-web, opened and closed, with the bytes each way.
    fn forward(&self, id: &RequestId, technician: &str, to_target: u64, from_target: u64) {
        let opened = self
            .technician_event(id, technician, EventKind::ForwardOpened)
            .target("ehr-web")
            .detail("address", "127.0.0.1:8080");
        let closed = self
            .technician_event(id, technician, EventKind::ForwardClosed)
            .target("ehr-web")
            .detail("address", "127.0.0.1:8080")
            .detail("bytes_to_target", to_target)
            .detail("bytes_from_target", from_target)
            .detail("duration_ms", 61_000)
            .detail("end", "finished");
        self.runtime.block_on(self.store.record(&opened)).unwrap();
        self.runtime.block_on(self.store.record(&closed)).unwrap();
    }

    /// A whole session: asked, approved by suzuki, opened, two forwards to ehr-web (1500 +
    /// 500 bytes to it, 4200 + 800 back), revoked by sato with the reason "done".
    fn story(&self, technician: &str, purpose: &str) -> RequestId {
        let id = self.ask(technician, purpose);
        self.approve_and_open(&id, technician, Duration::ZERO);
        self.forward(&id, technician, 1500, 4200);
        self.forward(&id, technician, 500, 800);
        let (hospital, _) = self.staff_directory();
        let desk = hospital.desk(std::sync::Arc::new(sekisho_broker::clock::SystemClock));
        self.runtime
            .block_on(desk.revoke(&id, "sato", "done"))
            .unwrap();
        self.runtime.block_on(hospital.store.close());
        id
    }

    fn events(&self) -> Vec<StoredEvent> {
        self.runtime
            .block_on(self.store.all_audit_events())
            .unwrap()
    }

    fn head(&self) -> (i64, String) {
        self.runtime.block_on(self.store.audit_head()).unwrap()
    }

    /// Runs SQL on the database file directly, as someone with access to the disk could.
    fn tamper(&self, statements: &[&'static str]) {
        use sqlx::Connection;
        self.runtime.block_on(async {
            let options =
                sqlx::sqlite::SqliteConnectOptions::new().filename(self.data().join("sekisho.db"));
            let mut connection = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            for statement in statements {
                sqlx::query(*statement)
                    .execute(&mut connection)
                    .await
                    .unwrap();
            }
            connection.close().await.unwrap();
        });
    }
}

/// The table rows (after the heading and header lines) of a list.
fn rows(list: &str) -> Vec<&str> {
    list.lines().skip(2).collect()
}

#[test]
fn audit_head_and_verify_agree_on_an_untouched_log() {
    let hospital = Hospital::new();
    hospital.story("tanaka", "apply patch 5.2.1");
    let (count, head) = hospital.head();
    assert_eq!(count, STORY_EVENTS as i64);
    assert_eq!(head.len(), 64);
    assert_eq!(head, hospital.events().last().unwrap().hash);

    assert_eq!(
        hospital.ok(&["audit", "head"]),
        format!("{count} events; head {head}\n")
    );
    assert_eq!(
        hospital.ok(&["audit", "verify"]),
        format!("Intact: {count} events, head {head}\n{NO_CHECKPOINT}")
    );
    assert_eq!(
        hospital.ok(&["audit", "verify", "--expect-head", &head]),
        format!(
            "Intact: {count} events, head {head}\nThe head you wrote down is the current head.\n{NO_CHECKPOINT}"
        )
    );
    let earlier = &hospital.events()[4].hash;
    let out = hospital.ok(&["audit", "verify", "--expect-head", earlier]);
    assert!(
        out.ends_with(&format!(
            "The head you wrote down is event 5; 3 events came after it.\n{NO_CHECKPOINT}"
        )),
        "{out}"
    );
    let sentence = hospital.refused(&["audit", "verify", "--expect-head", "9f86"]);
    assert!(sentence.contains("is not a head hash"), "{sentence}");
}

#[test]
fn verify_finds_an_edited_event_where_it_is() {
    let hospital = Hospital::new();
    hospital.story("tanaka", "apply patch 5.2.1");
    hospital
        .tamper(&["UPDATE audit_events SET details = '[[\"targets\",\"ehr-db\"]]' WHERE seq = 3"]);
    let sentence = hospital.refused(&["audit", "verify"]);
    assert!(
        sentence.starts_with("The audit log is broken at event 3: "),
        "{sentence}"
    );
    assert!(sentence.contains("edited"), "{sentence}");
}

#[test]
fn verify_finds_a_deleted_event_where_it_is() {
    let hospital = Hospital::new();
    hospital.story("tanaka", "apply patch 5.2.1");
    hospital.tamper(&["DELETE FROM audit_events WHERE seq = 2"]);
    let sentence = hospital.refused(&["audit", "verify"]);
    assert!(
        sentence.starts_with("The audit log is broken at event 2: "),
        "{sentence}"
    );
    assert!(sentence.contains("deleted"), "{sentence}");
}

#[test]
fn a_cut_tail_is_found_by_the_head_record_or_else_only_against_a_head_written_down() {
    let hospital = Hospital::new();
    hospital.story("tanaka", "apply patch 5.2.1");
    let (count, written_down) = hospital.head();
    let before_last = hospital.events()[STORY_EVENTS - 3].hash.clone();

    // Cut the last event but leave the head record: the head record gives it away.
    hospital.tamper(&["DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)"]);
    let sentence = hospital.refused(&["audit", "verify"]);
    assert!(
        sentence.starts_with(&format!("The audit log is broken at event {count}: ")),
        "{sentence}"
    );
    assert!(sentence.contains("cut off the end"), "{sentence}");

    // Set the head record back too: the chain alone looks whole…
    hospital.tamper(&[
        "UPDATE audit_head SET hash = (SELECT hash FROM audit_events WHERE seq = audit_head.seq - 1), seq = seq - 1 WHERE id = 1",
    ]);
    assert_eq!(
        hospital.ok(&["audit", "verify"]),
        format!(
            "Intact: {} events, head {}\n{NO_CHECKPOINT}",
            count - 1,
            hospital.events().last().unwrap().hash
        )
    );
    // …but not against the head written down before.
    let sentence = hospital.refused(&["audit", "verify", "--expect-head", &written_down]);
    assert!(
        sentence.contains("nothing matches the head you wrote down"),
        "{sentence}"
    );
    assert!(sentence.contains("cut off the end"), "{sentence}");
    // A head written down before the cut is still in the chain.
    let out = hospital.ok(&["audit", "verify", "--expect-head", &before_last]);
    assert!(out.contains("is event 6; 1 event came after it."), "{out}");
}

#[test]
fn verify_calls_a_log_it_cannot_read_broken() {
    let hospital = Hospital::new();
    hospital.story("tanaka", "apply patch 5.2.1");
    hospital.tamper(&["UPDATE audit_events SET kind = 'request-teleported' WHERE seq = 4"]);
    let sentence = hospital.refused(&["audit", "verify"]);
    assert!(
        sentence.starts_with("The audit log is broken: audit event 4: unknown kind"),
        "{sentence}"
    );
}

#[test]
fn audit_list_filters_by_session_and_kind() {
    let hospital = Hospital::new();
    let first = hospital.story("tanaka", "apply patch 5.2.1");
    let second = hospital.story("kato", "rotate logs");

    let list = hospital.ok(&["audit", "list", "--session", first.as_str()]);
    assert_eq!(
        list.lines().next().unwrap(),
        "Audit events, oldest first (times in Asia/Tokyo):"
    );
    let header = list.lines().nth(1).unwrap();
    for column in [
        "SEQ", "TIME", "ACTOR", "KIND", "SESSION", "WHO", "TARGET", "DETAILS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let first_rows = rows(&list);
    assert_eq!(first_rows.len(), STORY_EVENTS, "{list}");
    for (row, seq) in first_rows.iter().zip(1..) {
        assert!(row.starts_with(&format!("{seq} ")), "{row}");
        assert!(row.contains(first.as_str()), "{row}");
        assert!(!row.contains(second.as_str()), "{row}");
    }
    assert!(
        first_rows[0].contains("technician:acme-ehr/tanaka"),
        "{list}"
    );
    assert!(first_rows[0].contains("request-made"), "{list}");
    assert!(
        first_rows[0].contains("targets=ehr-web  purpose=apply patch 5.2.1  ticket=INC-1234"),
        "{list}"
    );
    assert!(first_rows[7].contains("staff:sato"), "{list}");
    assert!(first_rows[7].contains("reason=revoked"), "{list}");

    let list = hospital.ok(&["audit", "list", "--kind", "forward-closed"]);
    let closed = rows(&list);
    assert_eq!(closed.len(), 4, "{list}");
    for row in &closed {
        assert!(row.contains("forward-closed"), "{row}");
        assert!(row.contains("ehr-web"), "{row}");
    }
    assert!(
        closed[0].contains("bytes_to_target=1500  bytes_from_target=4200"),
        "{list}"
    );

    let list = hospital.ok(&[
        "audit",
        "list",
        "--kind",
        "forward-opened,forward-closed",
        "--technician",
        "acme-ehr/kato",
    ]);
    let kato = rows(&list);
    assert_eq!(kato.len(), 4, "{list}");
    assert!(
        kato.iter().all(|row| row.contains(second.as_str())),
        "{list}"
    );

    let list = hospital.ok(&["audit", "list", "--limit", "3"]);
    let newest = rows(&list);
    assert_eq!(newest.len(), 4, "three rows and a note: {list}");
    assert!(
        newest[2].starts_with(&format!("{} ", 2 * STORY_EVENTS)),
        "{list}"
    );
    assert_eq!(
        newest[3],
        format!(
            "Only the newest 3 of {} matching events are shown; raise --limit to see more.",
            2 * STORY_EVENTS
        )
    );

    let sentence = hospital.refused(&["audit", "list", "--kind", "session-open"]);
    assert!(
        sentence.starts_with("`session-open` is not an event kind; use one of: request-made,"),
        "{sentence}"
    );
    assert!(sentence.contains("session-opened"), "{sentence}");
    assert_eq!(
        hospital.ok(&["audit", "list", "--session", "r-nothing"]),
        "No audit events match.\n"
    );
}

#[test]
fn audit_list_reads_since_and_until_in_the_hospital_zone() {
    let hospital = Hospital::new();
    for (day, technician) in [(10, "first"), (11, "second"), (12, "third")] {
        // 09:00 in Tokyo on 2026-01-DAY.
        let at: jiff::Timestamp = format!("2026-01-{day}T00:00:00Z").parse().unwrap();
        let event = AuditEvent::new(
            at.into(),
            technician_actor(technician),
            EventKind::OtpFailed,
        )
        .technician("acme-ehr", technician)
        .detail("why", "wrong");
        hospital
            .runtime
            .block_on(hospital.store.record(&event))
            .unwrap();
    }
    let list = hospital.ok(&[
        "audit",
        "list",
        "--since",
        "2026-01-11",
        "--until",
        "2026-01-11",
    ]);
    let day = rows(&list);
    assert_eq!(day.len(), 1, "{list}");
    assert!(day[0].contains("2026-01-11 09:00:00"), "{list}");
    assert!(day[0].contains("acme-ehr/second"), "{list}");

    let list = hospital.ok(&["audit", "list", "--since", "2026-01-11 09:00"]);
    assert_eq!(rows(&list).len(), 2, "{list}");
    let list = hospital.ok(&["audit", "list", "--until", "2026-01-11T00:00:00Z"]);
    assert_eq!(rows(&list).len(), 1, "until is exclusive: {list}");
    let sentence = hospital.refused(&["audit", "list", "--since", "last tuesday"]);
    assert!(sentence.contains("is not a time"), "{sentence}");
}

#[test]
fn audit_show_tells_a_sessions_story_with_its_byte_totals() {
    let hospital = Hospital::new();
    let id = hospital.story("tanaka", "apply patch 5.2.1");
    hospital.story("kato", "rotate logs");
    let out = hospital.ok(&["audit", "show", id.as_str()]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!("Session {id} of acme-ehr/tanaka, to ehr-web (times in Asia/Tokyo):")
    );
    let header = lines.next().unwrap();
    assert!(header.starts_with("TIME"), "{out}");
    let timeline: Vec<&str> = lines.by_ref().take_while(|line| !line.is_empty()).collect();
    let expected = [
        (
            "technician:acme-ehr/tanaka",
            "asked for ehr-web for 1h: apply patch 5.2.1 (ticket INC-1234)",
        ),
        ("staff:suzuki", "approved until "),
        ("technician:acme-ehr/tanaka", "opened the session until "),
        (
            "technician:acme-ehr/tanaka",
            "opened a forward to ehr-web at 127.0.0.1:8080",
        ),
        (
            "technician:acme-ehr/tanaka",
            "closed the forward to ehr-web: 1500 bytes to it, 4200 bytes from it, after 1m1s (finished)",
        ),
        ("technician:acme-ehr/tanaka", "opened a forward to ehr-web"),
        (
            "technician:acme-ehr/tanaka",
            "closed the forward to ehr-web: 500 bytes to it, 800 bytes from it",
        ),
        ("staff:sato", "ended the session (revoked): done"),
    ];
    assert_eq!(timeline.len(), expected.len(), "{out}");
    for (line, (actor, what)) in timeline.iter().zip(expected) {
        assert!(
            line.contains(actor) && line.contains(what),
            "{actor} {what:?} in {line}"
        );
    }
    assert!(timeline[1].ends_with(", approval 1 of 1"), "{out}");
    assert_eq!(lines.next(), Some("Summary:"), "{out}");
    let summary: Vec<&str> = lines.collect();
    let field = |label: &str| {
        summary
            .iter()
            .find(|line| line.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("{label} in {out}"))
            .trim_start()[label.len()..]
            .trim()
            .to_owned()
    };
    assert!(field("asked by:").starts_with("acme-ehr/tanaka, "), "{out}");
    assert!(field("approved by:").starts_with("suzuki at "), "{out}");
    assert!(
        field("ended:").ends_with(", revoked by sato: done"),
        "{out}"
    );
    assert_eq!(field("targets:"), "ehr-web");
    assert_eq!(field("forwards:"), "2 opened, 2 closed");
    assert_eq!(
        field("bytes:"),
        "2000 to the targets, 5000 from the targets"
    );
    assert_eq!(field("reviewed:"), "not yet");

    let sentence = hospital.refused(&["audit", "show", "r-nope"]);
    assert!(
        sentence.starts_with("There is no session r-nope;"),
        "{sentence}"
    );
}

#[test]
fn a_jsonl_export_round_trips_through_verify_file_and_a_tampered_line_is_found() {
    let hospital = Hospital::new();
    hospital.story("tanaka", "apply patch 5.2.1");
    hospital.staff_account("auditor", &[Role::Auditor]);
    hospital.sql(
        "UPDATE staff SET totp_last_step = 0 WHERE name = $1",
        "auditor",
    );
    // The auditor's authentication (staff-login) comes before the export.
    let (count, _) = hospital.head();
    let count = count + 1;
    let file = hospital.dir.path().join("audit.jsonl");
    let out = hospital.ok(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--out",
        file.to_str().unwrap(),
        "--as",
        "auditor",
    ]);
    let head = hospital.events()[usize::try_from(count).unwrap() - 1]
        .hash
        .clone();
    assert_eq!(
        out,
        format!(
            "Exported {count} events as JSON Lines to {}; the export is recorded as event {}.\n",
            file.display(),
            count + 1
        )
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().count(),
        STORY_EVENTS + 3,
        "no header when unfiltered (the story, the auditor's account, their login)"
    );
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    assert_eq!(first["kind"], "request-made");
    assert_eq!(first["actor"], "technician:acme-ehr/tanaka");
    assert_eq!(
        first["details"][1],
        serde_json::json!(["purpose", "apply patch 5.2.1"])
    );
    assert!(first["at"].as_str().unwrap().ends_with('Z'), "{first}");

    // Checked on its own: no database where the binary looks.
    let nowhere = hospital.dir.path().join("nowhere");
    let check = |path: &Path, extra: &[&str]| {
        let mut command = broker(&["audit", "verify", "--file"]);
        command
            .arg(path)
            .args(extra)
            .arg("--data-dir")
            .arg(&nowhere)
            .arg("--policies")
            .arg(repo_policies());
        command.output().unwrap()
    };
    assert_eq!(
        succeeded(check(&file, &[])),
        format!("Intact export: {count} events, head {head}\n{NO_CHECKPOINT}")
    );
    assert!(
        succeeded(check(&file, &["--expect-head", &head])).ends_with(&format!(
            "The head you wrote down is the export's last event.\n{NO_CHECKPOINT}"
        ))
    );
    assert!(!nowhere.exists());

    // Bytes made smaller on line 5: that line's hash gives it away.
    let tampered = hospital.dir.path().join("tampered.jsonl");
    assert!(
        text.lines()
            .nth(4)
            .unwrap()
            .contains("[\"bytes_to_target\",\"1500\"]")
    );
    std::fs::write(
        &tampered,
        text.replacen(
            "[\"bytes_to_target\",\"1500\"]",
            "[\"bytes_to_target\",\"15\"]",
            1,
        ),
    )
    .unwrap();
    let sentence = refused(check(&tampered, &[]));
    assert!(
        sentence.starts_with(&format!(
            "The export {} is broken at line 5: ",
            tampered.display()
        )),
        "{sentence}"
    );
    assert!(sentence.contains("edited"), "{sentence}");

    // A line taken out of an unfiltered export is a gap.
    let lines: Vec<&str> = text.lines().collect();
    let without = [&lines[..3], &lines[4..]].concat().join("\n");
    std::fs::write(&tampered, without).unwrap();
    let sentence = refused(check(&tampered, &[]));
    assert!(
        sentence.contains("line 4: event 4 is missing"),
        "{sentence}"
    );

    // A filtered export says so on its first line, and its gaps are accepted.
    let filtered = hospital.dir.path().join("closed.jsonl");
    hospital.ok(&[
        "audit",
        "export",
        "--format",
        "jsonl",
        "--kind",
        "forward-closed",
        "--out",
        filtered.to_str().unwrap(),
        "--as",
        "auditor",
    ]);
    let text = std::fs::read_to_string(&filtered).unwrap();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["export"]["filtered"], true, "{header}");
    assert_eq!(
        header["export"]["kind"],
        serde_json::json!(["forward-closed"])
    );
    assert_eq!(header["export"]["by"], "auditor");
    assert_eq!(text.lines().count(), 3, "{text}");
    let out = succeeded(check(&filtered, &[]));
    assert!(
        out.starts_with("Intact filtered export: 2 events from event 5 to event 7"),
        "{out}"
    );
    assert!(out.contains("left events out in 1 place"), "{out}");
    // Without its first line, the same export no longer says it was filtered.
    std::fs::write(
        &tampered,
        text.lines().skip(1).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    let sentence = refused(check(&tampered, &[]));
    assert!(
        sentence.contains("does not say it was filtered"),
        "{sentence}"
    );
}

#[test]
fn a_csv_export_has_its_header_and_quotes_fields_that_need_it() {
    let hospital = Hospital::new();
    let id = hospital.story("tanaka", "apply \"patch\", 5.2.1");
    let csv = hospital.ok(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--session",
        id.as_str(),
        "--as",
        "auditor",
    ]);
    assert!(
        csv.starts_with(
            "seq,at,at_ms,actor,kind,session,vendor,technician,target,details,prev_hash,hash\r\n"
        ),
        "{csv}"
    );
    let records: Vec<&str> = csv.split_terminator("\r\n").collect();
    assert_eq!(records.len(), 1 + STORY_EVENTS, "{csv}");
    assert!(
        !csv.replace("\r\n", "").contains('\n'),
        "every record ends with CRLF"
    );
    let made = records[1];
    assert!(
        made.contains(&format!(
            ",technician:acme-ehr/tanaka,request-made,{id},acme-ehr,tanaka,,\"targets=ehr-web; purpose=apply \"\"patch\"\", 5.2.1; ticket=INC-1234; wanted=1h\",0000000000000000000000000000000000000000000000000000000000000000,"
        )),
        "{made}"
    );
    let events = hospital.events();
    assert!(made.ends_with(&events[0].hash), "{made}");
    assert!(records[5].contains(",forward-closed,"), "{csv}");
    assert!(
        records[5].contains(
            ",ehr-web,address=127.0.0.1:8080; bytes_to_target=1500; bytes_from_target=4200;"
        ),
        "{csv}"
    );
}

#[test]
fn every_export_is_recorded_after_the_events_it_holds() {
    let hospital = Hospital::new();
    hospital.story("tanaka", "apply patch 5.2.1");
    hospital.staff_account("auditor", &[Role::Auditor]);
    let (count, _) = hospital.head();
    let sentence = hospital.refused(&["audit", "export", "--format", "jsonl"]);
    assert!(sentence.starts_with("Say who you are"), "{sentence}");
    assert_eq!(hospital.head().0, count, "a refused export records nothing");
    hospital.sql(
        "UPDATE staff SET totp_last_step = 0 WHERE name = $1",
        "auditor",
    );
    // The auditor's authentication (staff-login) comes before the export.
    let count = count + 1;

    let export = hospital.ok(&["audit", "export", "--format", "jsonl", "--as", "auditor"]);
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(
        lines.len() as i64,
        count,
        "the export does not hold its own record"
    );
    let last: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(
        last["hash"],
        hospital.events()[usize::try_from(count).unwrap() - 1]
            .hash
            .as_str()
    );

    let events = hospital.events();
    assert_eq!(events.len() as i64, count + 1);
    let recorded = &events.last().unwrap().event;
    assert_eq!(recorded.kind, EventKind::AuditExported);
    assert_eq!(recorded.actor, Actor::Staff("auditor".into()));
    let details: Vec<(&str, &str)> = recorded
        .details
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let count_text = count.to_string();
    assert_eq!(
        details,
        [
            ("format", "jsonl"),
            ("filters", "none"),
            ("count", count_text.as_str()),
            ("to", "stdout")
        ]
    );

    let id = hospital.events()[0].event.request.clone().unwrap();
    hospital.ok(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--session",
        &id,
        "--kind",
        "session-opened",
        "--as",
        "auditor",
    ]);
    let recorded = hospital.events().pop().unwrap().event;
    assert_eq!(recorded.kind, EventKind::AuditExported);
    assert_eq!(
        recorded.details[1],
        (
            "filters".to_owned(),
            format!("session={id}  kind=session-opened")
        )
    );
    assert_eq!(recorded.details[2], ("count".to_owned(), "1".to_owned()));
    assert!(
        hospital
            .ok(&["audit", "verify"])
            .starts_with(&format!("Intact: {} events", count + 3)),
        "two exports, each after its auditor's login"
    );
}

#[test]
fn a_session_is_reviewed_after_it_ends_once_per_reviewer_and_leaves_the_queue() {
    let hospital = Hospital::new();
    assert_eq!(
        hospital.ok(&["audit", "unreviewed"]),
        "Every ended session has been reviewed.\n"
    );
    let id = hospital.ask("tanaka", "apply patch 5.2.1");
    hospital.approve_and_open(&id, "tanaka", Duration::ZERO);
    hospital.staff_account("yamada", &[Role::Auditor]);
    let review = |who: &str| {
        hospital.output(&[
            "audit",
            "review",
            id.as_str(),
            "--comment",
            "checked the patch log",
            // `--by` is the same as `--as`, and reads naturally for a review.
            "--by",
            who,
        ])
    };
    let sentence = refused(review("yamada"));
    assert_eq!(
        sentence,
        format!("{id} is still live (or was never opened); review it after it ends.")
    );
    let sentence = hospital.refused(&[
        "audit",
        "review",
        "r-nope",
        "--comment",
        "x",
        "--as",
        "yamada",
    ]);
    assert!(
        sentence.starts_with("There is no session r-nope;"),
        "{sentence}"
    );

    hospital.ok(&[
        "session",
        "revoke",
        id.as_str(),
        "--reason",
        "done",
        "--as",
        "sato",
    ]);
    let queue = hospital.ok(&["audit", "unreviewed"]);
    assert!(queue.contains(id.as_str()), "{queue}");
    let (count, _) = hospital.head();

    assert_eq!(
        succeeded(review("yamada")),
        format!("Marked {id} reviewed by yamada.\n")
    );
    let recorded = hospital.events().pop().unwrap();
    // After the reviewer's authentication (staff-login).
    assert_eq!(recorded.seq, count + 2);
    assert_eq!(recorded.event.kind, EventKind::ReviewMarked);
    assert_eq!(recorded.event.actor, Actor::Staff("yamada".into()));
    assert_eq!(recorded.event.request.as_deref(), Some(id.as_str()));
    assert_eq!(
        recorded.event.details,
        [("comment".to_owned(), "checked the patch log".to_owned())]
    );

    let sentence = refused(review("yamada"));
    assert!(
        sentence.starts_with(&format!("You (yamada) already reviewed {id} on ")),
        "{sentence}"
    );
    let show = hospital.ok(&["audit", "show", id.as_str()]);
    let reviewed = show
        .lines()
        .find(|line| line.trim_start().starts_with("reviewed:"))
        .unwrap();
    assert!(reviewed.contains("by yamada, "), "{show}");
    assert!(reviewed.ends_with(": checked the patch log"), "{show}");
    assert!(
        show.contains("staff:yamada")
            && show.contains("marked the session reviewed: checked the patch log"),
        "{show}"
    );
    assert_eq!(
        hospital.ok(&["audit", "unreviewed"]),
        "Every ended session has been reviewed.\n"
    );
}

#[test]
fn unreviewed_marks_a_session_ended_longer_ago_than_the_limit_overdue() {
    let hospital = Hospital::new();
    let days = |n: u64| Duration::from_secs(n * 24 * 3600);
    let old = hospital.ask("kato", "rotate logs");
    let long_ago = SystemTime::now() - days(5);
    hospital.approve_and_open(&old, "kato", days(5) + Duration::from_secs(3600));
    let mut ended = hospital
        .technician_event(&old, "kato", EventKind::SessionEnded)
        .detail("reason", "closed");
    ended.at = long_ago;
    hospital
        .runtime
        .block_on(hospital.store.end_request(
            &old,
            &[Stage::Active],
            EndReason::Closed,
            None,
            None,
            &ended,
        ))
        .unwrap();
    let recent = hospital.story("tanaka", "apply patch 5.2.1");

    let queue = hospital.ok(&["audit", "unreviewed"]);
    let mut lines = queue.lines();
    assert_eq!(
        lines.next().unwrap(),
        "Ended sessions not yet reviewed, oldest first (times in Asia/Tokyo; overdue 3d0h after the end):"
    );
    let header = lines.next().unwrap();
    for column in ["ID", "TECHNICIAN", "ENDED", "AGO", "REVIEW"] {
        assert!(header.contains(column), "{header}");
    }
    let (first, second) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(first.starts_with(old.as_str()), "oldest first: {queue}");
    assert!(first.contains("acme-ehr/kato"), "{first}");
    assert!(first.contains(&tokyo().format(long_ago)), "{first}");
    assert!(first.contains("5d0h ago"), "{first}");
    assert!(first.ends_with("OVERDUE"), "{first}");
    assert!(second.starts_with(recent.as_str()), "{queue}");
    assert!(second.contains("<1m ago"), "{second}");
    assert!(second.contains("due in 2d23h"), "{second}");
    assert!(!second.contains("OVERDUE"), "{second}");
    assert_eq!(
        lines.next(),
        Some("1 of 2 overdue; review each with `sekisho-broker audit review ID --comment TEXT`.")
    );

    let queue = hospital.ok(&["audit", "unreviewed", "--within", "6d"]);
    assert!(!queue.contains("OVERDUE"), "{queue}");
    assert!(queue.contains("due in 23h"), "{queue}");
    let queue = hospital.ok(&["audit", "unreviewed", "--within", "72h"]);
    assert!(queue.contains("OVERDUE"), "{queue}");
    let sentence = hospital.refused(&["audit", "unreviewed", "--within", "3 days"]);
    assert!(sentence.contains("is not a duration"), "{sentence}");
}

#[test]
fn staff_invite_prints_a_one_time_link_and_list_disable_name_the_account() {
    let hospital = Hospital::new();
    assert!(
        hospital
            .ok(&["staff", "list"])
            .starts_with("No staff accounts yet;")
    );
    let out = hospital.ok(&[
        "staff",
        "invite",
        "yamada",
        "--role",
        "admin",
        "--web-url",
        "https://broker.hospital.example:8443/",
        "--as",
        "it-oncall",
    ]);
    assert!(
        out.starts_with("Link to create the account yamada"),
        "{out}"
    );
    let link = out
        .split_whitespace()
        .find(|word| word.starts_with("https://broker.hospital.example:8443/setup/"))
        .unwrap_or_else(|| panic!("a link: {out}"));
    assert_eq!(link.rsplit('/').next().unwrap().len(), 64, "{link}");
    // Without --web-url it says what to fill in.
    let out = hospital.ok(&[
        "staff",
        "invite",
        "suzuki",
        "--role",
        "approver",
        "--as",
        "it-oncall",
    ]);
    assert!(out.contains("https://BROKER-HOST:8443/setup/"), "{out}");
    let sentence = hospital.refused(&[
        "staff",
        "invite",
        "kato",
        "--role",
        "boss",
        "--as",
        "it-oncall",
    ]);
    assert!(sentence.contains("`boss` is not a role"), "{sentence}");
    // The account exists once its link is used; before that there is nothing to disable.
    let sentence = hospital.refused(&["staff", "disable", "yamada", "--as", "it-oncall"]);
    assert!(
        sentence.contains("There is no staff account yamada"),
        "{sentence}"
    );
    let invited = hospital.ok(&["audit", "list", "--kind", "staff-invited"]);
    assert!(invited.contains("it-oncall"), "{invited}");
}

/// PostgreSQL answers every start's "create the migrations table if it does not exist" with
/// a notice; at the default log level an admin command must not print it (it reads like a
/// problem on every run). Runs where `SEKISHO_TEST_POSTGRES` is set (always in CI).
#[test]
fn postgres_notices_are_not_printed_at_the_default_log_level() {
    let Ok(host) = std::env::var("SEKISHO_TEST_POSTGRES") else {
        eprintln!("skipped: SEKISHO_TEST_POSTGRES is not set");
        return;
    };
    let name = format!("sekisho_t_{}_notices", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = |sql: String| {
        runtime.block_on(async {
            use sqlx::{Connection, Executor};
            let mut connection =
                sqlx::PgConnection::connect(&format!("postgres://postgres@{host}/postgres"))
                    .await
                    .unwrap();
            connection.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
        })
    };
    admin(format!("CREATE DATABASE {name}"));
    let dir = tempfile::tempdir().unwrap();
    let list = || {
        let mut command = broker(&["vendor", "list"]);
        command
            .env_remove("SEKISHO_LOG")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--policies")
            .arg(repo_policies())
            .arg("--database")
            .arg(format!("postgres://postgres@{host}/{name}"));
        command.output().unwrap()
    };
    // The first run makes the tables; the second finds them, which is what PostgreSQL
    // notices.
    let first = list();
    let second = list();
    admin(format!("DROP DATABASE {name} WITH (FORCE)"));
    succeeded(first);
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    succeeded(second);
    assert!(!stderr.contains("already exists"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Accountable operators: every name the command line records is a staff account that
// proved itself with its own one-time code (issue 17, parts 3, 4 and 7).

impl Hospital {
    /// The events of `kind`, oldest first.
    fn events_of(&self, kind: EventKind) -> Vec<AuditEvent> {
        self.events()
            .into_iter()
            .map(|stored| stored.event)
            .filter(|event| event.kind == kind)
            .collect()
    }

    /// The `why` of the last `staff-login-failed` event, and its actor.
    fn last_failure(&self) -> (String, String) {
        let event = self.events_of(EventKind::StaffLoginFailed).pop().unwrap();
        let why = event
            .details
            .iter()
            .find(|(key, _)| key == "why")
            .map(|(_, value)| value.clone())
            .unwrap();
        (event.actor.encode(), why)
    }
}

/// A code that is not the current one (nor, but for a one-in-a-million chance, a neighbour).
fn wrong(code: &str) -> String {
    format!(
        "{:06}",
        (code.parse::<u32>().unwrap() + 500_000) % 1_000_000
    )
}

#[test]
fn suzuki_in_capitals_or_full_width_is_the_same_approver_and_cannot_approve_twice() {
    let hospital = Hospital::new();
    let id = hospital.request_needing("tanaka", 2);
    hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "suzuki",
    ]);
    for alias in ["Suzuki", "SUZUKI", "Ｓｕｚｕｋｉ"] {
        let sentence = hospital.refused(&[
            "request",
            "approve",
            id.as_str(),
            "--for",
            "1h",
            "--as",
            alias,
        ]);
        assert!(sentence.contains("suzuki"), "{alias}: {sentence}");
        let record = hospital.record(&id);
        assert_eq!(record.stage, Stage::Requested, "{alias}");
        assert_eq!(record.approvals.len(), 1, "{alias}");
    }
    // A second, different person completes it.
    let out = hospital.ok(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "sato",
    ]);
    assert!(out.starts_with(&format!("Approved {id} until ")), "{out}");
    let approvers: Vec<String> = hospital
        .record(&id)
        .approvals
        .iter()
        .map(|approval| approval.approver.clone())
        .collect();
    assert_eq!(approvers, ["suzuki", "sato"]);
}

#[test]
fn an_auditor_only_account_cannot_approve_from_the_command_line_and_is_recorded() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let sentence = hospital.refused(&[
        "request",
        "approve",
        id.as_str(),
        "--for",
        "1h",
        "--as",
        "ito",
    ]);
    assert_eq!(
        sentence,
        "ito may not approve, deny, revoke or extend sessions (it takes the approver role); ask someone who holds it."
    );
    assert!(hospital.record(&id).approvals.is_empty());
    let refused = hospital.events_of(EventKind::StaffRefused).pop().unwrap();
    assert_eq!(refused.actor, Actor::Staff("ito".into()));
    // Nor lock down, nor lift, nor take on vendors.
    for args in [
        &["lockdown", "on", "--reason", "x", "--as", "ito"][..],
        &["vendor", "add", "acme-ehr", "--as", "ito"][..],
    ] {
        let sentence = hospital.refused(args);
        assert!(sentence.starts_with("ito may not "), "{sentence}");
    }
}

#[test]
fn unknown_disabled_and_locked_names_and_wrong_or_reused_codes_are_refused_and_recorded() {
    let hospital = Hospital::new();
    let id = hospital.request("tanaka");
    let approve = |name: &str, code: &str| {
        refused(hospital.with_code(
            &[
                "request",
                "approve",
                id.as_str(),
                "--for",
                "1h",
                "--as",
                name,
            ],
            code,
        ))
    };
    // Unknown.
    let sentence = approve("nobody", "123456");
    assert!(
        sentence.starts_with("There is no staff account nobody;"),
        "{sentence}"
    );
    assert_eq!(
        hospital.last_failure(),
        ("staff:nobody".into(), "unknown name".into())
    );

    // Disabled (by an admin, with their own code).
    hospital.staff_account("kato", &[Role::Approver]);
    hospital.ok(&["staff", "disable", "kato", "--as", "yamada"]);
    let sentence = approve("kato", &hospital.code("kato"));
    assert!(sentence.contains("kato is disabled"), "{sentence}");
    assert_eq!(
        hospital.last_failure(),
        ("staff:kato".into(), "account disabled".into())
    );

    // Locked (after failed logins, now).
    hospital.staff_account("abe", &[Role::Approver]);
    hospital.sql(
        "UPDATE staff SET locked = 1, login_failures = 5, locked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000 WHERE name = $1",
        "abe",
    );
    let sentence = approve("abe", &hospital.code("abe"));
    assert!(sentence.contains("abe is locked"), "{sentence}");
    assert_eq!(
        hospital.last_failure(),
        ("staff:abe".into(), "account locked".into())
    );

    // A wrong code counts as a failed login, and the next attempt must wait.
    let code = hospital.fresh_code("mori");
    let sentence = approve("mori", &wrong(&code));
    assert!(
        sentence.contains("wrong or was already used for mori"),
        "{sentence}"
    );
    assert_eq!(
        hospital.last_failure(),
        ("staff:mori".into(), "wrong one-time code".into())
    );
    let row = hospital
        .runtime
        .block_on(hospital.store.staff_member("mori"))
        .unwrap()
        .unwrap();
    assert_eq!(row.login_failures, 1);
    let sentence = approve("mori", &code);
    assert!(
        sentence.starts_with("Too many failed logins for this name; wait "),
        "{sentence}"
    );

    // A code works once.
    let code = hospital.fresh_code("ueda");
    let other = hospital.request("kato");
    succeeded(hospital.with_code(
        &[
            "request",
            "approve",
            other.as_str(),
            "--for",
            "1h",
            "--as",
            "ueda",
        ],
        &code,
    ));
    let sentence = approve("ueda", &code);
    assert!(
        sentence.contains("wrong or was already used for ueda"),
        "{sentence}"
    );
    assert_eq!(
        hospital.last_failure(),
        ("staff:ueda".into(), "one-time code already used".into())
    );
    assert!(hospital.record(&id).approvals.is_empty());
}

#[test]
fn the_host_administrators_recovery_path_is_recorded_as_the_host_never_as_a_staff_name() {
    let hospital = Hospital::new();
    let sentence = hospital.refused(&["staff", "invite", "kimura", "--role", "admin"]);
    assert!(sentence.contains("--as"), "{sentence}");
    let out = hospital.ok(&[
        "staff",
        "invite",
        "kimura",
        "--role",
        "admin",
        "--host-admin",
    ]);
    assert!(
        out.starts_with("Link to create the account kimura"),
        "{out}"
    );
    let invited = hospital.events_of(EventKind::StaffInvited).pop().unwrap();
    assert!(
        matches!(&invited.actor, Actor::Host(user) if !user.is_empty()),
        "{:?}",
        invited.actor
    );
    assert!(invited.actor.encode().starts_with("host:"));
    assert_eq!(
        Actor::decode(&invited.actor.encode()),
        Some(invited.actor.clone())
    );
    // Older records still read.
    assert_eq!(
        Actor::decode("staff:suzuki"),
        Some(Actor::Staff("suzuki".into()))
    );
    let sentence = hospital.refused(&[
        "staff",
        "invite",
        "kimura",
        "--role",
        "admin",
        "--host-admin",
        "--as",
        "suzuki",
    ]);
    assert!(sentence.contains("cannot be used with"), "{sentence}");
}

#[test]
fn auditor_with_approver_or_admin_is_refused_by_default_and_recorded() {
    let hospital = Hospital::new();
    for roles in ["auditor,approver", "admin,auditor"] {
        let sentence =
            hospital.refused(&["staff", "invite", "ono", "--role", roles, "--as", "yamada"]);
        assert!(
            sentence.starts_with("One account may not be both auditor and "),
            "{sentence}"
        );
        let refused = hospital.events_of(EventKind::StaffRefused).pop().unwrap();
        assert_eq!(refused.actor, Actor::Staff("yamada".into()));
    }
    assert!(
        hospital
            .events_of(EventKind::StaffInvited)
            .iter()
            .all(|event| event
                .details
                .iter()
                .all(|(key, value)| key != "staff" || value != "ono"))
    );
    hospital.ok(&[
        "staff", "invite", "ono", "--role", "auditor", "--as", "yamada",
    ]);
}

#[test]
fn a_small_clinic_may_combine_roles_with_a_reason_in_hospital_toml() {
    let hospital = Hospital::with_staff_rules(
        "[staff]\nallow_combined_roles = true\ncombined_roles_reason = \"two people in IT\"\n",
    );
    hospital.ok(&[
        "staff",
        "invite",
        "ono",
        "--role",
        "admin,auditor",
        "--as",
        "yamada",
    ]);
    let render = hospital.ok(&["policy", "render"]);
    assert!(render.contains("two people in IT"), "{render}");
}

#[test]
fn lifting_a_lockdown_is_an_admins_act_and_two_admins_where_the_policy_says() {
    let hospital = Hospital::with_staff_rules("[staff]\nlockdown_lift_admins = 2\n");
    hospital.staff_account("sato", &[Role::Approver]);
    hospital.ok(&[
        "lockdown",
        "on",
        "--reason",
        "ransomware suspected",
        "--as",
        "sato",
    ]);
    let sentence = hospital.refused(&["lockdown", "off", "--as", "sato"]);
    assert_eq!(
        sentence,
        "sato may not lift a lockdown (it takes the admin role); ask someone who holds it."
    );
    let out = hospital.ok(&["lockdown", "off", "--reason", "all clear", "--as", "suzuki"]);
    assert!(out.starts_with("Your lift is recorded as pending: the lockdown stays on until a second, different admin lifts it too"), "{out}");
    let status = hospital.ok(&["lockdown", "status"]);
    assert!(status.contains("suzuki lifted it at "), "{status}");
    assert!(
        status.contains("pending a second, different admin's lift"),
        "{status}"
    );
    assert_eq!(hospital.events_of(EventKind::LockdownLiftPending).len(), 1);
    let sentence = hospital.refused(&["lockdown", "off", "--as", "Suzuki"]);
    assert!(
        sentence.contains("lifted this lockdown already"),
        "{sentence}"
    );
    assert!(
        hospital
            .ok(&["lockdown", "status"])
            .starts_with("Lockdown is ON")
    );
    let out = hospital.ok(&["lockdown", "off", "--as", "yamada"]);
    assert!(
        out.starts_with("Lockdown lifted, confirming suzuki's lift"),
        "{out}"
    );
    let status = hospital.ok(&["lockdown", "status"]);
    assert!(status.contains("by yamada"), "{status}");
}

#[test]
fn one_admin_lifts_a_lockdown_by_default_and_an_approver_cannot() {
    let hospital = Hospital::new();
    hospital.staff_account("sato", &[Role::Approver]);
    hospital.ok(&["lockdown", "on", "--reason", "drill", "--as", "sato"]);
    let sentence = hospital.refused(&["lockdown", "off", "--as", "sato"]);
    assert!(
        sentence.starts_with("sato may not lift a lockdown"),
        "{sentence}"
    );
    let out = hospital.ok(&["lockdown", "off", "--as", "suzuki"]);
    assert_eq!(
        out,
        "Lockdown lifted: technicians may ask for sessions again.\n"
    );
}
