//! A broker killed with SIGKILL right after it acknowledged a technician's request loses
//! nothing: the request and its audit event are in the database, and the chain verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use proto::RequestAccess;
use sekisho_broker::audit::{self, EventKind, Verdict};
use sekisho_broker::store::{AuditFilter, Store, StoreLocation};
use sekisho_client::{ClientConfig, Session};

fn broker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sekisho-broker"));
    command
        .env("SEKISHO_LOG", "warn")
        .env_remove("SEKISHO_DATABASE");
    command
}

fn write_policies(dir: &Path) {
    std::fs::create_dir_all(dir.join("vendors")).unwrap();
    std::fs::write(
        dir.join("hospital.toml"),
        "[hospital]\nname = \"Crash Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vendors/acme-ehr.toml"),
        "[vendor]\nid = \"acme-ehr\"\nname = \"Acme\"\n\n[[target]]\nname = \"web\"\naddress = \"10.0.0.5:443\"\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_acknowledged_just_before_sigkill_is_on_disk_with_its_event() {
    let dir = tempfile::tempdir().unwrap();
    let (data, policies, creds) = (
        dir.path().join("data"),
        dir.path().join("policies"),
        dir.path().join("creds"),
    );
    write_policies(&policies);
    let issued = broker()
        .args([
            "dev-issue",
            "--vendor",
            "acme-ehr",
            "--technician",
            "tanaka",
            "--as",
            "suzuki",
        ])
        .arg("--out")
        .arg(&creds)
        .arg("--data-dir")
        .arg(&data)
        .arg("--policies")
        .arg(&policies)
        .output()
        .unwrap();
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );

    let mut serving = broker()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .arg("--policies")
        .arg(&policies)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(serving.stderr.take().unwrap());
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the broker exited early"
        );
        if let Some(rest) = line.trim().split("listening on UDP ").nth(1) {
            break rest.to_owned();
        }
    };

    let config = ClientConfig::from_files(
        &address,
        &creds.join("ca.pem"),
        &creds.join("client.pem"),
        &creds.join("client.key"),
    )
    .unwrap();
    let mut session = Session::connect(&config).await.unwrap();
    let view = session
        .request(RequestAccess {
            targets: vec!["web".into()],
            purpose: "patch before the crash".into(),
            ticket: "INC-9".into(),
            duration_secs: 1800,
        })
        .await
        .unwrap();
    // The broker has acknowledged the request. Kill it without any chance to flush.
    serving.kill().unwrap();
    let status = serving.wait().unwrap();
    assert!(!status.success(), "killed, not exited: {status}");
    drop(session);

    let store = Store::open(&StoreLocation::default_in(&data))
        .await
        .unwrap();
    let id = sekisho_broker::session::RequestId::parse(&view.id).unwrap();
    let record = store.request(&id).await.unwrap();
    assert_eq!(record.purpose, "patch before the crash");
    let events = store
        .audit_events(&AuditFilter {
            request: Some(view.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event.kind, EventKind::RequestMade);
    let (count, head) = store.audit_head().await.unwrap();
    assert_eq!(
        audit::verify(store.all_audit_events().await.unwrap()),
        Verdict::Intact { count, head }
    );
}
