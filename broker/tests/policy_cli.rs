//! `sekisho-broker policy check|render|reload` as an admin runs them, and SIGHUP, against
//! a real `serve` process and its SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};

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

fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A copy of the example policies the test may edit.
fn copy_policies(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(policies.join("vendors")).unwrap();
    std::fs::copy(
        repo_policies().join("hospital.toml"),
        policies.join("hospital.toml"),
    )
    .unwrap();
    for entry in std::fs::read_dir(repo_policies().join("vendors")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            policies.join("vendors").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    policies
}

#[test]
fn render_prints_the_snapshot_document_for_one_vendor() {
    let (output, stdout, stderr) = run(broker(&[
        "policy",
        "render",
        "--vendor",
        "kanto-net",
        "--format",
        "md",
    ])
    .arg(repo_policies()));
    assert!(output.status.success(), "{stderr}");
    let expected = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/kanto-net.md"),
    )
    .unwrap();
    assert_eq!(stdout, expected);
}

#[test]
fn render_html_is_one_printable_page_with_a_section_per_vendor() {
    let (output, stdout, stderr) =
        run(broker(&["policy", "render", "--format", "html"]).arg(repo_policies()));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.starts_with("<!DOCTYPE html>"), "{stdout}");
    assert!(stdout.contains("@media print"));
    assert_eq!(stdout.matches("<section class=\"vendor\">").count(), 3);
    assert!(stdout.contains("責任分界 / Responsibility matrix"));
    assert!(stdout.trim_end().ends_with("</html>"));
}

#[test]
fn render_of_an_unknown_vendor_names_the_vendors_there_are() {
    let (output, _, stderr) =
        run(broker(&["policy", "render", "--vendor", "nobody"]).arg(repo_policies()));
    assert!(!output.status.success());
    assert!(
        stderr.contains("There is no vendor `nobody`")
            && stderr.contains("acme-ehr, kanto-net, nihon-pacs"),
        "{stderr}"
    );
}

#[test]
fn check_prints_each_problem_of_each_kind_as_file_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let policies = copy_policies(dir.path());
    let kanto = policies.join("vendors/kanto-net.toml");
    let text = std::fs::read_to_string(&kanto)
        .unwrap()
        .replace("address = \"10.0.0.2:22\"", "address = \"10.0.0.2:445\"")
        .replace("critical_approvals = 2", "critical_approvals = 0")
        .replace(
            "\"2026-12-31\", \"2027-01-01\"",
            "\"2026-12-31\", \"new year\"",
        );
    std::fs::write(&kanto, text).unwrap();
    let (output, stdout, stderr) = run(broker(&["policy", "check"]).arg(&policies));
    assert!(!output.status.success());
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in &lines {
        assert!(line.starts_with(&format!("{}:", kanto.display())), "{line}");
    }
    assert!(
        lines[0].contains("is a file-sharing port (SMB/NFS)"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("`holidays` entry \"new year\""),
        "{stdout}"
    );
    assert!(
        lines[2].contains("`critical_approvals` must be from 1 to 5, not 0"),
        "{stdout}"
    );
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
}

// See: issue 15, point 5: both passed `policy check` before.
#[test]
fn check_reports_numeric_host_spellings_and_ipv6_carrying_loopback_as_file_line_reason() {
    let dir = tempfile::tempdir().unwrap();
    let policies = copy_policies(dir.path());
    let kanto = policies.join("vendors/kanto-net.toml");
    let text = std::fs::read_to_string(&kanto)
        .unwrap()
        .replace("address = \"10.0.0.2:22\"", "address = \"0x7f000001:22\"")
        .replace(
            "address = \"10.0.0.1:443\"",
            "address = \"[64:ff9b::7f00:1]:443\"",
        );
    std::fs::write(&kanto, text).unwrap();
    let (output, stdout, stderr) = run(broker(&["policy", "check"]).arg(&policies));
    assert!(!output.status.success());
    let file = kanto.display();
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!(
                "{file}:16: target `core-switch` address \"0x7f000001:22\" has `0x7f000001`, a numeric spelling of 127.0.0.1; write the address as 127.0.0.1"
            ),
            format!(
                "{file}:22: target `firewall` address \"[64:ff9b::7f00:1]:443\" is a NAT64 IPv6 address embedding the loopback address 127.0.0.1; set `allow_loopback = true` only for demos and tests"
            ),
        ],
        "{stdout}"
    );
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
}

/// A `serve` process on a copy of the example policies.
struct Served {
    child: Option<Child>,
    pid: u32,
    stderr: BufReader<ChildStderr>,
    policies: PathBuf,
    data: PathBuf,
    secrets: std::cell::RefCell<
        std::collections::HashMap<String, sekisho_broker::secret::Secret<Vec<u8>>>,
    >,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let policies = copy_policies(dir.path());
        let data = dir.path().join("data");
        let mut child = broker(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
        ])
        .arg("--policies")
        .arg(&policies)
        .arg("--data-dir")
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut served = Served {
            pid: child.id(),
            child: Some(child),
            stderr,
            policies,
            data,
            secrets: Default::default(),
            _dir: dir,
        };
        served.wait_for_line("listening on UDP 127.0.0.1:");
        served
    }

    /// Reads the broker's stderr until a line contains `text`; returns that line.
    fn wait_for_line(&mut self, text: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stderr.read_line(&mut line).unwrap() > 0,
                "the broker exited before saying {text:?}"
            );
            if line.contains(text) {
                return line;
            }
        }
    }

    fn admin(&self, args: &[&str]) -> (Output, String, String) {
        run(broker(args)
            .arg("--policies")
            .arg(&self.policies)
            .arg("--data-dir")
            .arg(&self.data))
    }

    /// Runs the binary as admin `name` (made on first use) with a current code of theirs.
    fn admin_as(&self, args: &[&str], name: &str) -> (Output, String, String) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = sekisho_broker::BrokerConfig::new(self.data.clone(), self.policies.clone());
        let database = self.data.join("sekisho.db");
        let known = self.secrets.borrow().get(name).cloned();
        let secret = match known {
            Some(secret) => secret,
            None => {
                let secret = support::make_staff(
                    &runtime,
                    &config,
                    name,
                    &[sekisho_broker::staff::Role::Admin],
                );
                self.secrets
                    .borrow_mut()
                    .insert(name.to_owned(), secret.clone());
                secret
            }
        };
        let code = support::fresh_code(&runtime, &database, name, &secret);
        let output = support::run_with_code(
            broker(args)
                .args(["--as", name])
                .arg("--policies")
                .arg(&self.policies)
                .arg("--data-dir")
                .arg(&self.data),
            &code,
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output, stdout, stderr)
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit, at most `limit`; how long it took, if it did.
    fn exited_within(&mut self, limit: std::time::Duration) -> Option<std::time::Duration> {
        let mut child = self.child.take()?;
        let started = std::time::Instant::now();
        let (exited, exit) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = exited.send(());
        });
        exit.recv_timeout(limit).ok().map(|()| started.elapsed())
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        } else if self.pid != 0 {
            // Waited for on a thread of its own; make sure it is gone.
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

#[test]
fn reload_applies_checked_policies_to_the_running_broker_and_refuses_broken_ones() {
    let mut served = Served::start();
    let kanto = served.policies.join("vendors/kanto-net.toml");
    let good = std::fs::read_to_string(&kanto).unwrap();
    std::fs::write(
        &kanto,
        good.replace("max_session = \"1h\"", "max_session = \"45m\""),
    )
    .unwrap();
    let (output, stdout, stderr) = served.admin_as(&["policy", "reload"], "yamada");
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("applied the policies (sha256 "), "{stdout}");

    // Broken: the command's own check refuses it, and nothing is asked of the broker.
    std::fs::write(&kanto, good.replace("approvals = 1", "approvals = 6")).unwrap();
    let (output, stdout, stderr) = served.admin_as(&["policy", "reload"], "yamada");
    assert!(!output.status.success());
    assert!(
        stdout.contains(&format!("{}:", kanto.display()))
            && stdout.contains("`approvals` must be from 1 to 5, not 6"),
        "{stdout}"
    );
    assert!(stderr.contains("1 problem(s)"), "{stderr}");

    // SIGHUP reads the same broken file and keeps the policies in force.
    served.signal("-HUP");
    let refused = served.wait_for_line("the policies were not applied");
    assert!(refused.contains("the ones in force stay"), "{refused}");
    std::fs::write(&kanto, good).unwrap();
    served.signal("-HUP");
    let applied = served.wait_for_line("Policies reloaded");
    assert!(applied.contains("sha256"), "{applied}");

    // Every applied set and the refusal are on the record.
    served.signal("-TERM");
    assert!(served.child.as_mut().unwrap().wait().unwrap().success());
    let (output, stdout, stderr) = served.admin(&["audit", "list", "--kind", "policy-loaded"]);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("policy-loaded"))
            .count(),
        3,
        "{stdout}"
    );
    let (_, stdout, _) = served.admin(&["audit", "list", "--kind", "policy-reload-refused"]);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("policy-reload-refused"))
            .count(),
        1,
        "{stdout}"
    );
}

#[test]
fn reload_without_a_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _, stderr) = run(broker(&["policy", "reload", "--as", "yamada"])
        .arg("--policies")
        .arg(repo_policies())
        .arg("--data-dir")
        .arg(dir.path().join("data")));
    assert!(!output.status.success());
    assert!(stderr.contains("There is no sekisho database"), "{stderr}");
}

#[test]
fn sigterm_stops_the_broker_within_ten_seconds_while_an_outside_writer_holds_the_database() {
    let mut served = Served::start();
    let pid = served.pid();
    // Another process takes the database's write lock and keeps it: every write the broker
    // tries from now on waits for its busy timeout.
    let database = served.data.join("sekisho.db");
    // The outside process holds the lock until its standard input closes (the test kills it
    // first); nothing waits on time.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\nsys.stdin.read()",
        ])
        .arg(&database)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (the README lists it among what the tests need)");
    let mut locked = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut locked)
        .unwrap();
    assert_eq!(locked.trim(), "locked");
    served.signal("-TERM");
    let took = served.exited_within(std::time::Duration::from_secs(15));
    let _ = holder.kill();
    let _ = holder.wait();
    let took = took.unwrap_or_else(|| panic!("broker {pid} did not stop within 15 s of SIGTERM"));
    assert!(
        took < std::time::Duration::from_secs(10),
        "the broker took {took:?} to stop"
    );
}
