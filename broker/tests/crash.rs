//! A broker killed with SIGKILL right after it acknowledged an enrollment, a request, an
//! approval, an opening and a forward loses nothing: every acknowledged step and its audit event are in the database,
//! and the chain verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use proto::RequestAccess;
use sekisho_broker::audit::{self, EventKind, Verdict};
use sekisho_broker::store::{AuditFilter, Store, StoreLocation};
use sekisho_client::enroll::{self, EnrollArgs};
use sekisho_client::{ClientConfig, Session};
use tokio::io::AsyncReadExt;

fn broker() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sekisho-broker"));
    command
        .env("SEKISHO_LOG", "warn")
        .env_remove("SEKISHO_DATABASE");
    command
}

fn write_policies(dir: &Path, target: std::net::SocketAddr) {
    std::fs::create_dir_all(dir.join("vendors")).unwrap();
    std::fs::write(
        dir.join("hospital.toml"),
        "[hospital]\nname = \"Crash Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vendors/acme-ehr.toml"),
        format!("[vendor]\nid = \"acme-ehr\"\nname = \"Acme\"\n\n[[target]]\nname = \"web\"\naddress = \"{target}\"\nallow_loopback = true\n"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_acknowledged_just_before_sigkill_are_on_disk_with_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let (data, policies, creds) = (
        dir.path().join("data"),
        dir.path().join("policies"),
        dir.path().join("creds"),
    );
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    write_policies(&policies, echo.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    let mut serving = broker()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--web-listen",
            "127.0.0.1:0",
        ])
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

    // The admin adds the technician, who enrolls (a key made here, a certificate request).
    let database = data.join("sekisho.db");
    let suzuki = support::staff_account(
        &sekisho_broker::BrokerConfig::new(data.clone(), policies.clone()),
        "suzuki",
        &[
            sekisho_broker::staff::Role::Approver,
            sekisho_broker::staff::Role::Admin,
        ],
    )
    .await;
    let admin = |args: &[&str], code: String| {
        let output = support::run_with_code(
            broker()
                .args(args)
                .args(["--as", "suzuki"])
                .arg("--data-dir")
                .arg(&data)
                .arg("--policies")
                .arg(&policies),
            &code,
        );
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    admin(
        &["vendor", "add", "acme-ehr"],
        support::fresh_code_now(&database, "suzuki", &suzuki).await,
    );
    let added = admin(
        &[
            "technician",
            "add",
            "acme-ehr",
            "tanaka",
            "--name",
            "Tanaka",
            "--broker-address",
            &address,
        ],
        support::fresh_code_now(&database, "suzuki", &suzuki).await,
    );
    let command: Vec<&str> = added
        .lines()
        .find(|line| line.trim_start().starts_with("sekisho enroll"))
        .unwrap()
        .split_whitespace()
        .collect();
    let after = |flag: &str| command[command.iter().position(|w| *w == flag).unwrap() + 1];
    let enrollment = enroll::enroll(&EnrollArgs {
        broker: after("--broker").to_owned(),
        further_brokers: Vec::new(),
        transport: sekisho_client::transport::TransportChoice::default(),
        proxy: None,
        token: after("--token").to_owned(),
        ca_fingerprint: after("--ca-fingerprint").to_owned(),
        dir: creds.clone(),
        connect_timeout: std::time::Duration::from_secs(10),
    })
    .await
    .unwrap();
    let config = ClientConfig::from_dir(&creds).unwrap().unwrap();
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
    // An approval, by another process, as an approver's CLI would.
    let code = support::fresh_code_now(&database, "suzuki", &suzuki).await;
    let approved = support::run_with_code(
        broker()
            .args([
                "request", "approve", &view.id, "--for", "30m", "--as", "suzuki",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--policies")
            .arg(&policies),
        &code,
    );
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    // The technician opens it with the code of the moment, and carries bytes.
    let secret = sekisho_broker::otp::secret_from_uri(&enrollment.otpauth_uri).unwrap();
    let code = sekisho_broker::otp::code_at(&secret, std::time::SystemTime::now()).unwrap();
    session.open(&view.id, &code).await.unwrap();
    let (mut send, mut recv) = session.open_forward("web").await.unwrap();
    send.write_all(b"acknowledged").await.unwrap();
    let mut back = [0u8; 12];
    recv.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"acknowledged");

    // Every step above was acknowledged. Kill the broker without any chance to flush.
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
    assert_eq!(
        record.stage,
        sekisho_broker::session::Stage::Active,
        "opened, and never ended: the broker died"
    );
    let kinds: Vec<EventKind> = store
        .audit_events(&AuditFilter {
            request: Some(view.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event.kind)
        .collect();
    assert_eq!(
        kinds[..4],
        [
            EventKind::RequestMade,
            EventKind::RequestApproved,
            EventKind::SessionOpened,
            EventKind::ForwardOpened
        ]
    );
    let enrolled = store
        .audit_events(&AuditFilter {
            kinds: vec![EventKind::TechnicianEnrolled],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(enrolled.len(), 1, "the enrollment is on disk too");
    let (count, head) = store.audit_head().await.unwrap();
    assert_eq!(
        audit::verify(store.all_audit_events().await.unwrap()),
        Verdict::Intact { count, head }
    );
}
