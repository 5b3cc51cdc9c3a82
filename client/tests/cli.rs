//! The `sekisho` binary as a technician runs it, against a real broker started in-process.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use sekisho_broker::pki::TechnicianIdentity;
use sekisho_broker::{Broker, BrokerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStderr, Command};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    dir: tempfile::TempDir,
    broker: SocketAddr,
    credentials: [PathBuf; 3],
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A broker whose vendor `acme-ehr` may reach `echo` (a TCP echo server), and credentials
/// for `acme-ehr/tanaka` on disk.
async fn start_broker() -> Fixture {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("vendors")).unwrap();
    std::fs::write(
        policies.join("hospital.toml"),
        "[hospital]\nname = \"CLI Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("vendors/acme-ehr.toml"),
        format!(
            "[vendor]\nid = \"acme-ehr\"\nname = \"Acme\"\n\n[[target]]\nname = \"echo\"\naddress = \"{echo_addr}\"\nallow_loopback = true\n"
        ),
    )
    .unwrap();
    let mut config = BrokerConfig::new(dir.path().join("data"), policies);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let broker = Broker::bind(config).await.unwrap();
    let addr = broker.local_addr();
    let credentials = issue(&broker, dir.path(), "tanaka");
    let shutdown = CancellationToken::new();
    tokio::spawn(broker.run(shutdown.clone()));
    Fixture {
        dir,
        broker: addr,
        credentials,
        shutdown,
    }
}

fn issue(broker: &Broker, dir: &Path, technician: &str) -> [PathBuf; 3] {
    let identity = TechnicianIdentity::new("acme-ehr", technician).unwrap();
    broker
        .pki()
        .issue_client_certificate(&identity, Duration::from_secs(3600))
        .unwrap()
        .write_to(&dir.join(technician), broker.pki().ca_pem())
        .unwrap()
}

fn sekisho(broker: &str, [ca, cert, key]: &[PathBuf; 3], extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sekisho"));
    command
        .arg("connect")
        .args(["--broker", broker])
        .arg("--ca")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Reads stderr lines until one contains `marker`; returns every line read.
async fn read_until(stderr: &mut BufReader<ChildStderr>, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut line = String::new();
        loop {
            line.clear();
            let read = stderr.read_line(&mut line).await.unwrap();
            assert!(read > 0, "stderr ended before `{marker}`: {seen:#?}");
            seen.push(line.trim_end().to_owned());
            if line.contains(marker) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no `{marker}` within {WAIT:?}; saw {seen:#?}"));
    seen
}

async fn exit_and_stderr(mut child: Child) -> (ExitStatus, String) {
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    (status, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_forwards_a_local_port_and_ctrl_c_closes_cleanly() {
    let fixture = start_broker().await;
    let mut child = sekisho(
        &fixture.broker.to_string(),
        &fixture.credentials,
        &["-L", "0:echo", "-L", "0:nope"],
    )
    .spawn()
    .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let lines = read_until(&mut stderr, "Press Ctrl-C").await;
    assert!(
        lines.contains(&"Connected to CLI Test Hospital as acme-ehr/tanaka.".to_owned()),
        "{lines:#?}"
    );
    let port_of = |target: &str| -> SocketAddr {
        let line = lines
            .iter()
            .find(|line| line.ends_with(&format!("-> {target}")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };

    let mut tcp = TcpStream::connect(port_of("echo")).await.unwrap();
    tcp.write_all(b"ping through sekisho").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"ping through sekisho");

    // A refused target prints the broker's sentence and the session carries on.
    let mut refused = TcpStream::connect(port_of("nope")).await.unwrap();
    let mut buf = [0u8; 1];
    assert!(!matches!(refused.read(&mut buf).await, Ok(n) if n > 0));
    read_until(&mut stderr, "`nope` is not a target you may reach").await;

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    child.stderr = Some(stderr.into_inner());
    let (status, rest) = exit_and_stderr(child).await;
    assert!(
        status.success(),
        "Ctrl-C must end the session cleanly: {status}, {rest}"
    );
    assert!(rest.contains("Session closed."), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_one_sentence_and_a_failure_exit() {
    let fixture = start_broker().await;
    // A UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let child = sekisho(
        &silent.local_addr().unwrap().to_string(),
        &fixture.credentials,
        &["-L", "0:echo", "--connect-timeout", "1"],
    )
    .spawn()
    .unwrap();
    let (status, stderr) = exit_and_stderr(child).await;
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_certificate_is_one_sentence_and_a_failure_exit() {
    let fixture = start_broker().await;
    let other = start_broker().await;
    // The right CA, a certificate from another broker's CA.
    let mixed = [
        fixture.credentials[0].clone(),
        other.credentials[1].clone(),
        other.credentials[2].clone(),
    ];
    let child = sekisho(&fixture.broker.to_string(), &mixed, &["-L", "0:echo"])
        .spawn()
        .unwrap();
    let (status, stderr) = exit_and_stderr(child).await;
    assert!(!status.success());
    assert!(
        stderr.contains(
            "The broker rejected your client certificate (unknown certificate authority)"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_broker_is_refused_by_the_client() {
    let fixture = start_broker().await;
    let impostor = start_broker().await;
    let child = sekisho(
        &impostor.broker.to_string(),
        &fixture.credentials,
        &["-L", "0:echo"],
    )
    .spawn()
    .unwrap();
    let (status, stderr) = exit_and_stderr(child).await;
    assert!(!status.success());
    assert!(stderr.contains("is not the hospital's broker"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_file_says_which_file() {
    let fixture = start_broker().await;
    let missing = fixture.dir.path().join("no-such.key");
    let credentials = [
        fixture.credentials[0].clone(),
        fixture.credentials[1].clone(),
        missing.clone(),
    ];
    let child = sekisho(&fixture.broker.to_string(), &credentials, &["-L", "0:echo"])
        .spawn()
        .unwrap();
    let (status, stderr) = exit_and_stderr(child).await;
    assert!(!status.success());
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_forward_says_what_is_expected() {
    let fixture = start_broker().await;
    let child = sekisho(
        &fixture.broker.to_string(),
        &fixture.credentials,
        &["-L", "echo"],
    )
    .spawn()
    .unwrap();
    let (status, stderr) = exit_and_stderr(child).await;
    assert!(!status.success());
    assert!(stderr.contains("write LOCAL_PORT:TARGET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_port_in_use_fails_before_connecting() {
    let fixture = start_broker().await;
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spec = format!("{}:echo", taken.local_addr().unwrap().port());
    let child = sekisho(
        &fixture.broker.to_string(),
        &fixture.credentials,
        &["-L", &spec],
    )
    .spawn()
    .unwrap();
    let (status, stderr) = exit_and_stderr(child).await;
    assert!(!status.success());
    assert!(stderr.contains("choose another local port"), "{stderr}");
}
