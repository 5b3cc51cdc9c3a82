use std::path::Path;

use sekisho_client::ForwardEvent;
use sekisho_e2e::pattern::Pattern;
use sekisho_e2e::third_party::{HttpServer, Sshd, StoreScp, require, run, run_ok, within};
use sekisho_e2e::{LocalForward, TestBroker, Vendor};
use tokio::process::Command;

const MIB: usize = 1024 * 1024;

/// `len` bytes of the pattern from `seed`.
fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    Pattern::new(seed).fill(&mut bytes);
    bytes
}

/// Asserts that `actual` is `expected` without printing megabytes when it is not.
fn assert_same_bytes(what: &str, actual: &[u8], expected: &[u8]) {
    if let Some(offset) = actual.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: byte {offset} differs");
    }
    assert_eq!(actual.len(), expected.len(), "{what}: length");
}

/// Waits until a connection through `forward` has ended having carried at least `bytes`
/// towards the local program (`download`) or from it.
async fn wait_for_carried(forward: &LocalForward, what: &str, download: bool, bytes: usize) {
    let carried = forward.wait_for(|event| match event {
        ForwardEvent::Closed { outcome, .. } => {
            let moved = if download {
                outcome.quic_to_tcp
            } else {
                outcome.tcp_to_quic
            };
            (moved >= bytes as u64).then_some(())
        }
        _ => None,
    });
    within(what, carried).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_pages_through_a_forward_and_fails_on_a_target_the_vendor_lacks() {
    let curl = require("curl", "curl");
    let root = tempfile::tempdir().unwrap();
    let index =
        b"<!doctype html>\n<title>sekisho</title>\n<p>Served by python3 -m http.server.</p>\n";
    std::fs::write(root.path().join("index.html"), index).unwrap();
    let big = pattern_bytes(5 * MIB, 11);
    std::fs::write(root.path().join("big.bin"), &big).unwrap();
    let http = HttpServer::start(root.path()).await;
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("web", http.addr())]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["web"]).await;
    let web = LocalForward::start(session.forwarder(), "web").await;

    let mut command = Command::new(&curl);
    command
        .args(["-sS", "--fail"])
        .arg(format!("http://{}/index.html", web.addr()));
    assert_same_bytes("index.html", &run_ok(command).await, index);

    let downloads = tempfile::tempdir().unwrap();
    let fetched = downloads.path().join("big.bin");
    let mut command = Command::new(&curl);
    command
        .args(["-sS", "--fail", "-o"])
        .arg(&fetched)
        .arg(format!("http://{}/big.bin", web.addr()));
    run_ok(command).await;
    assert_same_bytes("big.bin", &std::fs::read(&fetched).unwrap(), &big);
    wait_for_carried(&web, "the forward reporting the download", true, 5 * MIB).await;

    // `db` is not in acme-ehr's policy: the broker refuses, the client resets the connection.
    let db = LocalForward::start(session.forwarder(), "db").await;
    let mut command = Command::new(&curl);
    command
        .args(["-sS", "--fail"])
        .arg(format!("http://{}/index.html", db.addr()));
    let output = run(command).await;
    assert!(
        !output.status.success(),
        "curl through a forward to a target the vendor lacks must fail, but it printed {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    let refusal = db.wait_for(|event| match event {
        ForwardEvent::Failed { error, .. } => Some(error.clone()),
        _ => None,
    });
    let refusal = within("the forward reporting the refusal", refusal).await;
    assert!(
        refusal.contains("`db` is not a target you may reach"),
        "{refusal}"
    );
}

/// `psql` against `addr`, with no prompts and unaligned, tuples-only output.
fn psql(psql: &Path, addr: std::net::SocketAddr, sql: &str) -> Command {
    let mut command = Command::new(psql);
    command
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-U", "postgres", "-d", "postgres", "-AtX", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_queries_against_a_real_postgresql_through_a_forward() {
    let Some(postgres) = sekisho_e2e::env_postgres() else {
        eprintln!(
            "skipped psql_runs_queries_against_a_real_postgresql_through_a_forward: \
             SEKISHO_TEST_POSTGRES is not set (host:port of a PostgreSQL that trusts user \
             postgres; .ci/run sets it)"
        );
        return;
    };
    let psql_path = require("psql", "postgresql-client");
    let database = tokio::net::lookup_host(&postgres)
        .await
        .unwrap_or_else(|e| panic!("SEKISHO_TEST_POSTGRES={postgres}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("SEKISHO_TEST_POSTGRES={postgres} has no address"));
    let broker = TestBroker::start(&[Vendor::new("acme-ehr").target("ehr-db", database)]).await;
    let session = broker.open_session("acme-ehr", "tanaka", &["ehr-db"]).await;
    let forward = LocalForward::start(session.forwarder(), "ehr-db").await;

    let answer = run_ok(psql(
        &psql_path,
        forward.addr(),
        "select 6*7, current_database()",
    ))
    .await;
    assert_eq!(String::from_utf8_lossy(&answer), "42|postgres\n");

    // 20,000 md5 sums: 640,000 characters, many packets, compared with the direct answer.
    let big = "select string_agg(md5(i::text), '') from generate_series(1, 20000) i";
    let direct = run_ok(psql(&psql_path, database, big)).await;
    assert_eq!(direct.len(), 20_000 * 32 + 1, "the direct answer's length");
    let tunnelled = run_ok(psql(&psql_path, forward.addr(), big)).await;
    assert_same_bytes("the answer through the forward", &tunnelled, &direct);
    wait_for_carried(
        &forward,
        "the forward reporting the answer",
        true,
        20_000 * 32,
    )
    .await;
}

/// Runs an `ssh` or `scp` command, failing the test with its stderr and the sshd log unless
/// it succeeds; returns its stdout.
async fn run_ssh(sshd: &Sshd, command: Command) -> Vec<u8> {
    let shown = format!("{:?}", command.as_std());
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{shown} failed ({}): {}\nsshd log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        sshd.log()
    );
    output.stdout
}

/// The SHA-256 of a file, from `sha256sum`.
async fn sha256(path: &Path) -> String {
    let mut command = Command::new(require("sha256sum", "coreutils"));
    command.arg(path);
    let output = String::from_utf8(run_ok(command).await).unwrap();
    let digest = output
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(digest.len(), 64, "sha256sum said {output:?}");
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_runs_a_command_and_scp_copies_eight_mebibytes_both_ways_through_a_forward() {
    let ssh = require("ssh", "openssh-client");
    let scp = require("scp", "openssh-client");
    let sshd = Sshd::start().await;
    let broker =
        TestBroker::start(&[Vendor::new("acme-ehr").target("maint-ssh", sshd.addr())]).await;
    let session = broker
        .open_session("acme-ehr", "tanaka", &["maint-ssh"])
        .await;
    let forward = LocalForward::start(session.forwarder(), "maint-ssh").await;
    let port = forward.addr().port().to_string();
    let login = format!("{}@127.0.0.1", sshd.user());

    let mut command = Command::new(&ssh);
    command
        .arg("-p")
        .arg(&port)
        .args(sshd.client_options())
        .arg(&login)
        .args(["echo", "hello-through-sekisho"]);
    let said = run_ssh(&sshd, command).await;
    assert_eq!(String::from_utf8_lossy(&said), "hello-through-sekisho\n");

    let files = tempfile::tempdir().unwrap();
    let source = files.path().join("source.bin");
    let uploaded = files.path().join("uploaded.bin");
    let downloaded = files.path().join("downloaded.bin");
    std::fs::write(&source, pattern_bytes(8 * MIB, 8)).unwrap();
    let source_sha256 = sha256(&source).await;

    let mut command = Command::new(&scp);
    command
        .arg("-P")
        .arg(&port)
        .args(sshd.client_options())
        .arg(&source)
        .arg(format!("{login}:{}", uploaded.display()));
    run_ssh(&sshd, command).await;
    assert_eq!(std::fs::metadata(&uploaded).unwrap().len(), 8 * MIB as u64);
    assert_eq!(sha256(&uploaded).await, source_sha256, "the uploaded copy");
    wait_for_carried(&forward, "the forward reporting the upload", false, 8 * MIB).await;

    let mut command = Command::new(&scp);
    command
        .arg("-P")
        .arg(&port)
        .args(sshd.client_options())
        .arg(format!("{login}:{}", uploaded.display()))
        .arg(&downloaded);
    run_ssh(&sshd, command).await;
    assert_eq!(
        sha256(&downloaded).await,
        source_sha256,
        "the downloaded copy"
    );
    wait_for_carried(
        &forward,
        "the forward reporting the download",
        true,
        8 * MIB,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_and_storescu_reach_a_pacs_through_a_forward_and_the_image_arrives_whole() {
    let echoscu = require("echoscu", "dcmtk");
    let storescu = require("storescu", "dcmtk");
    let dump2dcm = require("dump2dcm", "dcmtk");
    let pacs = StoreScp::start().await;
    // The imaging vendor of the examples: a PACS on DICOM (port 104 in a hospital).
    let broker = TestBroker::start(&[Vendor::new("nihon-pacs").target("pacs", pacs.addr())]).await;
    let session = broker.open_session("nihon-pacs", "kato", &["pacs"]).await;
    let forward = LocalForward::start(session.forwarder(), "pacs").await;
    let port = forward.addr().port().to_string();

    // C-ECHO: the DICOM "ping".
    let mut command = Command::new(&echoscu);
    command.args(["-aec", StoreScp::AE_TITLE, "127.0.0.1", &port]);
    run_ok(command).await;

    // C-STORE of a 64×64 secondary-capture image whose pixels are a known pattern.
    let files = tempfile::tempdir().unwrap();
    let pixels = pattern_bytes(64 * 64, 104);
    std::fs::write(files.path().join("pixels.raw"), &pixels).unwrap();
    std::fs::write(
        files.path().join("image.dump"),
        "(0008,0016) UI =SecondaryCaptureImageStorage\n\
         (0008,0018) UI [1.2.826.0.1.3680043.8.498.104.1]\n\
         (0008,0060) CS [OT]\n\
         (0010,0010) PN [Test^Patient]\n\
         (0010,0020) LO [SEKISHO-1]\n\
         (0020,000d) UI [1.2.826.0.1.3680043.8.498.104.2]\n\
         (0020,000e) UI [1.2.826.0.1.3680043.8.498.104.3]\n\
         (0028,0002) US 1\n\
         (0028,0004) CS [MONOCHROME2]\n\
         (0028,0010) US 64\n\
         (0028,0011) US 64\n\
         (0028,0100) US 8\n\
         (0028,0101) US 8\n\
         (0028,0102) US 7\n\
         (0028,0103) US 0\n\
         (7fe0,0010) OW =pixels.raw\n",
    )
    .unwrap();
    let mut command = Command::new(&dump2dcm);
    command
        .current_dir(files.path())
        .args(["--write-xfer-little", "image.dump", "image.dcm"]);
    run_ok(command).await;
    let mut command = Command::new(&storescu);
    command
        .args(["-aec", StoreScp::AE_TITLE, "127.0.0.1", &port])
        .arg(files.path().join("image.dcm"));
    run_ok(command).await;

    let received = pacs.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let stored = std::fs::read(&received[0]).unwrap();
    assert!(
        stored.windows(pixels.len()).any(|window| window == pixels),
        "the stored image holds the pixels sent"
    );
    wait_for_carried(
        &forward,
        "the forward reporting the image",
        false,
        pixels.len(),
    )
    .await;
}
