//! The `sekisho-broker` binary as an admin runs it: policy check, serve, dev-issue.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn broker(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sekisho-broker"));
    command.args(args).env("SEKISHO_LOG", "warn");
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
    let (output, text) = run(broker(&["serve", "--listen", "127.0.0.1:0"])
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
fn serve_starts_on_the_example_policies_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = broker(&["serve", "--listen", "127.0.0.1:0"])
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

#[test]
fn dev_issue_writes_a_private_key_and_refuses_unknown_vendors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("creds");
    let (output, text) = run(broker(&[
        "dev-issue",
        "--vendor",
        "acme-ehr",
        "--technician",
        "tanaka",
    ])
    .arg("--out")
    .arg(&out)
    .arg("--policies")
    .arg(repo_policies())
    .arg("--data-dir")
    .arg(&data));
    assert!(output.status.success(), "{text}");
    for file in ["ca.pem", "client.pem", "client.key"] {
        assert!(out.join(file).exists(), "{file}");
    }
    let mode = std::fs::metadata(out.join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::read(out.join("ca.pem")).unwrap(),
        std::fs::read(data.join("pki/ca.pem")).unwrap(),
        "the client pins the broker's own CA"
    );

    let (output, text) =
        run(
            broker(&["dev-issue", "--vendor", "nobody", "--technician", "tanaka"])
                .arg("--out")
                .arg(dir.path().join("nobody"))
                .arg("--policies")
                .arg(repo_policies())
                .arg("--data-dir")
                .arg(&data),
        );
    assert!(!output.status.success());
    assert!(text.contains("no vendor `nobody`"), "{text}");
}
