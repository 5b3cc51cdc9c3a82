//! The `sekisho` binary as a technician runs it, against a real broker started in-process:
//! `request`, `status`, and `connect` through approval, the one-time password, forwarding and
//! the end of the session; and every way connecting can fail, as one sentence.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use sekisho_broker::approval::{Desk, Until};
use sekisho_broker::clock::{Clock, ManualClock};
use sekisho_broker::identity;
use sekisho_broker::otp;
use sekisho_broker::secret::Secret;
use sekisho_broker::session::{RequestId, RequestRecord, Stage};
use sekisho_broker::store::NewTechnician;
use sekisho_broker::{Broker, BrokerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::process::{Child, ChildStderr, ChildStdin, Command};
use tokio_util::sync::CancellationToken;

/// The longest any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// How soon a revoked session must be over on the technician's side (the broker cuts live
/// sessions within a second of the hospital's decision).
const CUT_WITHIN: Duration = Duration::from_secs(10);
const APPROVER: &str = "suzuki";

/// A broker whose vendor `acme-ehr` may reach `echo` (a TCP echo server) and `closed` (a port
/// nobody listens on), the hospital's desk on it, and `acme-ehr/tanaka` with credentials on
/// disk and a TOTP secret. The broker's clock starts at the real time and moves only when a
/// test moves it (to reach end times); the client reads the real clock.
struct Fixture {
    dir: tempfile::TempDir,
    broker: SocketAddr,
    credentials: [PathBuf; 3],
    desk: Desk,
    secret: Secret<Vec<u8>>,
    clock: ManualClock,
    /// The broker CA's fingerprint, as the hospital gives it for enrollment.
    ca_fingerprint: String,
    /// Holds the `closed` target's port (bound, never listening) for the test's life.
    _closed: TcpSocket,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_broker() -> Fixture {
    start_broker_with_idle_timeout(None).await
}

/// A broker that closes a connection after `idle` without packets (its default otherwise):
/// short, so a lost connection is noticed within the test.
async fn start_broker_with_idle_timeout(idle: Option<Duration>) -> Fixture {
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
    let closed = TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed_addr = closed.local_addr().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("vendors")).unwrap();
    std::fs::write(
        policies.join("hospital.toml"),
        // The tests move the clock by an hour without traffic: no idle end in the way.
        "[hospital]\nname = \"CLI Test Hospital\"\ntimezone = \"Asia/Tokyo\"\n\n[defaults]\nidle_timeout = \"24h\"\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("vendors/acme-ehr.toml"),
        format!(
            "[vendor]\nid = \"acme-ehr\"\nname = \"Acme\"\n\n\
             [[target]]\nname = \"echo\"\naddress = \"{echo_addr}\"\nallow_loopback = true\n\n\
             [[target]]\nname = \"closed\"\naddress = \"{closed_addr}\"\nallow_loopback = true\n"
        ),
    )
    .unwrap();
    let mut config = BrokerConfig::new(dir.path().join("data"), policies);
    config.listen = "127.0.0.1:0".parse().unwrap();
    if let Some(idle) = idle {
        config.limits.idle_timeout = idle;
    }
    // TLS over TCP on the QUIC port's number: one address for either transport.
    config.listen_tcp = Some("127.0.0.1:0".parse().unwrap());
    let clock = ManualClock::new(SystemTime::now());
    config.clock = std::sync::Arc::new(clock.clone());
    // The kernel may choose a UDP port whose number a TCP socket here already holds, which
    // TLS over TCP then cannot have: choose again.
    let mut attempts = 0;
    let broker = loop {
        match Broker::bind(config.clone()).await {
            Ok(broker) => break broker,
            Err(sekisho_broker::BindError::Listen { .. }) if attempts < 10 => attempts += 1,
            Err(e) => panic!("the broker does not bind: {e}"),
        }
    };
    let addr = broker.local_addr();
    let desk = broker.desk();
    let ca_fingerprint = broker.pki().ca_fingerprint();
    let shutdown = CancellationToken::new();
    tokio::spawn(broker.run(shutdown.clone()));

    // The hospital adds tanaka; tanaka enrolls with the real `sekisho enroll`.
    let token = add_technician(&desk, "tanaka").await;
    let config_dir = dir.path().join("tanaka");
    let (status, stdout, stderr) = finish(
        enroll_command(&addr.to_string(), &token, &ca_fingerprint, &config_dir)
            .spawn()
            .unwrap(),
    )
    .await;
    assert!(status.success(), "{status}: {stderr}");
    let secret = secret_shown(&stdout);
    let credentials = [
        config_dir.join("ca.pem"),
        config_dir.join("client.pem"),
        config_dir.join("client.key"),
    ];
    Fixture {
        dir,
        broker: addr,
        credentials,
        desk,
        secret,
        clock,
        ca_fingerprint,
        _closed: closed,
        shutdown,
    }
}

impl Fixture {
    /// `sekisho ARGS` with this broker and tanaka's credentials; nothing from the
    /// environment, stdin closed, stdout and stderr captured.
    fn sekisho(&self, args: &[&str]) -> Command {
        sekisho_with(&self.broker.to_string(), &self.credentials, args)
    }

    /// Runs `sekisho request` for `targets` and returns the id it printed.
    async fn request(&self, targets: &[&str]) -> String {
        self.request_through(self.broker, targets).await
    }

    /// [`request`](Fixture::request) with the broker at `broker` (a relay in front of it).
    async fn request_through(&self, broker: SocketAddr, targets: &[&str]) -> String {
        let mut args = vec!["request", "--purpose", "apply patch 5.2.1", "--for", "1h"];
        for target in targets {
            args.extend(["--target", target]);
        }
        let mut command = sekisho_with(&broker.to_string(), &self.credentials, &args);
        let (status, stdout, stderr) = finish(command.spawn().unwrap()).await;
        assert!(status.success(), "{status}: {stderr}");
        stdout.trim().to_owned()
    }

    async fn approve(&self, id: &str) {
        self.desk
            .approve(
                &RequestId::parse(id).unwrap(),
                APPROVER,
                Until::For(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
    }

    /// The code tanaka's authenticator shows now (by the broker's clock).
    fn code(&self) -> String {
        otp::code_at(&self.secret, self.clock.now()).unwrap()
    }

    /// Six digits that no step near now would accept.
    fn wrong_code(&self) -> String {
        let now = self.clock.now();
        let near: Vec<String> = [-60i64, -30, 0, 30, 60]
            .iter()
            .map(|offset| {
                let at = if *offset < 0 {
                    now - Duration::from_secs(offset.unsigned_abs())
                } else {
                    now + Duration::from_secs(offset.unsigned_abs())
                };
                otp::code_at(&self.secret, at).unwrap()
            })
            .collect();
        (0..)
            .map(|n: u32| format!("{:06}", (123_456 + n * 7919) % 1_000_000))
            .find(|code| !near.contains(code))
            .unwrap()
    }

    /// Starts `sekisho connect ID -L 0:TARGET …` with stdin piped for the one-time password.
    fn connect(&self, id: &str, targets: &[&str]) -> Connect {
        self.connect_through(self.broker, id, targets)
    }

    /// [`connect`](Fixture::connect) with the broker at `broker` (a relay in front of it).
    fn connect_through(&self, broker: SocketAddr, id: &str, targets: &[&str]) -> Connect {
        let specs: Vec<String> = targets.iter().map(|t| format!("0:{t}")).collect();
        let mut args = vec!["connect", id];
        for spec in &specs {
            args.extend(["-L", spec]);
        }
        let mut child = sekisho_with(&broker.to_string(), &self.credentials, &args)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        Connect {
            stdin: child.stdin.take().unwrap(),
            stderr: BufReader::new(child.stderr.take().unwrap()),
            seen: Vec::new(),
            child,
        }
    }

    /// Request, approve, connect and type the right code: a session forwarding `targets`.
    async fn open_session(&self, targets: &[&str]) -> (String, Connect) {
        let id = self.request(targets).await;
        self.approve(&id).await;
        let mut connect = self.connect(&id, targets);
        connect.until("One-time password for acme-ehr/tanaka").await;
        connect.type_line(&self.code()).await;
        connect.until("Press Ctrl-C to end the session.").await;
        (id, connect)
    }
}

fn sekisho_with(broker: &str, [ca, cert, key]: &[PathBuf; 3], args: &[&str]) -> Command {
    let mut command = bare_sekisho();
    command
        .args(args)
        .args(["--broker", broker])
        .arg("--ca")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    command
}

/// `sekisho` with nothing from the environment's SEKISHO_* credentials, stdin closed, stdout
/// and stderr captured, killed if the test ends first.
fn bare_sekisho() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sekisho"));
    for variable in [
        "SEKISHO_BROKER",
        "SEKISHO_CA",
        "SEKISHO_CERT",
        "SEKISHO_KEY",
    ] {
        command.env_remove(variable);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Adds vendor `acme-ehr` (once) and `acme-ehr/TECHNICIAN` as the admin does; returns the
/// enrollment token.
async fn add_technician(desk: &Desk, technician: &str) -> String {
    let now = desk.now();
    match identity::add_vendor(
        desk.store(),
        &desk.policies(),
        "acme-ehr",
        "test-admin",
        now,
    )
    .await
    {
        Ok(()) | Err(identity::IdentityError::VendorExists(_)) => {}
        Err(e) => panic!("{e}"),
    }
    let new = NewTechnician {
        vendor: "acme-ehr",
        technician,
        display_name: "Tanaka Hanako",
        email: "tanaka@acme.example",
    };
    identity::add_technician(
        desk.store(),
        &desk.policies(),
        &new,
        identity::DEFAULT_TOKEN_VALIDITY,
        "test-admin",
        now,
    )
    .await
    .unwrap()
    .text
    .expose_secret()
    .clone()
}

/// `sekisho enroll` as the hospital's printed command says, into `config_dir`.
fn enroll_command(broker: &str, token: &str, fingerprint: &str, config_dir: &Path) -> Command {
    let mut command = bare_sekisho();
    command
        .args(["enroll", "--broker", broker, "--token", token])
        .args(["--ca-fingerprint", fingerprint])
        .arg("--config-dir")
        .arg(config_dir);
    command
}

/// The TOTP secret in the `otpauth://` line `sekisho enroll` printed, as an authenticator
/// app would read it.
fn secret_shown(stdout: &str) -> Secret<Vec<u8>> {
    let uri = stdout
        .lines()
        .find(|line| line.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth line in: {stdout}"));
    otp::secret_from_uri(uri).unwrap()
}

/// Waits (bounded) for the process to exit; returns its status, stdout and stderr.
async fn finish(mut child: Child) -> (ExitStatus, String, String) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    tokio::time::timeout(WAIT, async move {
        let (mut out, mut err) = (String::new(), String::new());
        let (read_out, read_err) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        read_out.unwrap();
        read_err.unwrap();
        (child.wait().await.unwrap(), out, err)
    })
    .await
    .unwrap_or_else(|_| panic!("sekisho did not exit within {WAIT:?}"))
}

/// Runs `command` to its end, which must be a failure told in one line; that line.
async fn one_sentence_failure(mut command: Command) -> String {
    let (status, _, stderr) = finish(command.spawn().unwrap()).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

/// A running `sekisho connect`.
struct Connect {
    child: Child,
    stdin: ChildStdin,
    stderr: BufReader<ChildStderr>,
    /// Every stderr line read so far.
    seen: Vec<String>,
}

impl Connect {
    /// Reads stderr until a line contains `marker` (bounded); returns that line.
    async fn until(&mut self, marker: &str) -> String {
        let Connect { stderr, seen, .. } = self;
        tokio::time::timeout(WAIT, async {
            let mut line = String::new();
            loop {
                line.clear();
                let read = stderr.read_line(&mut line).await.unwrap();
                assert!(read > 0, "stderr ended before `{marker}`: {seen:#?}");
                seen.push(line.trim_end().to_owned());
                if line.contains(marker) {
                    return line.trim_end().to_owned();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no `{marker}` within {WAIT:?}; saw {:#?}", self.seen))
    }

    async fn type_line(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The local address forwarding to `target`, from `… 127.0.0.1:PORT -> TARGET`.
    fn local_port_of(&self, target: &str) -> SocketAddr {
        let suffix = format!(" -> {target}");
        let line = self
            .seen
            .iter()
            .find(|line| line.ends_with(&suffix))
            .unwrap_or_else(|| panic!("no forward to {target} in {:#?}", self.seen));
        line.trim_end_matches(&suffix)
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn interrupt(&self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    /// Waits (within `limit`) for the exit; returns the status and the rest of stderr.
    async fn exit(mut self, limit: Duration) -> (ExitStatus, String) {
        drop(self.stdin);
        let mut rest = String::new();
        let status = tokio::time::timeout(limit, async {
            self.stderr.read_to_string(&mut rest).await.unwrap();
            self.child.wait().await.unwrap()
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "sekisho did not exit within {limit:?}; saw {:#?}",
                self.seen
            )
        });
        (status, rest)
    }
}

async fn assert_echoes(addr: SocketAddr) {
    tokio::time::timeout(WAIT, async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"ping through sekisho").await.unwrap();
        tcp.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"ping through sekisho");
    })
    .await
    .unwrap();
}

// --- request and status ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_prints_the_id_alone_on_stdout_and_status_lists_it_as_requested() {
    let fixture = start_broker().await;
    let (status, stdout, stderr) = finish(fixture.sekisho(&["status"]).spawn().unwrap()).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "You have no requests.\n");

    let child = fixture
        .sekisho(&[
            "request",
            "--target",
            "echo",
            "--purpose",
            "apply patch 5.2.1",
            "--ticket",
            "INC-1234",
            "--for",
            "1h30m",
        ])
        .spawn()
        .unwrap();
    let (status, stdout, stderr) = finish(child).await;
    assert!(status.success(), "{stderr}");
    let id = stdout.trim_end_matches('\n');
    assert!(
        id.starts_with("r-") && !id.contains(char::is_whitespace),
        "{stdout:?}"
    );
    assert!(
        stderr.contains(&format!(
            "Request {id} sent to CLI Test Hospital for echo (1h30m)."
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Next: sekisho connect {id} -L LOCAL_PORT:echo")),
        "{stderr}"
    );

    let (status, stdout, stderr) = finish(fixture.sekisho(&["status"]).spawn().unwrap()).await;
    assert!(status.success(), "{stderr}");
    let row = stdout
        .lines()
        .find(|line| line.starts_with(id))
        .unwrap_or_else(|| panic!("{id} not listed: {stdout}"));
    assert!(row.contains("requested (0 of 1)"), "{row}");
    assert!(row.contains("apply patch 5.2.1"), "{row}");
    assert!(row.contains("asked "), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_target_outside_the_policy_is_the_brokers_sentence_and_a_failure_exit() {
    let fixture = start_broker().await;
    let child = fixture
        .sekisho(&[
            "request",
            "--target",
            "nope",
            "--purpose",
            "look around",
            "--for",
            "30m",
        ])
        .spawn()
        .unwrap();
    let (status, stdout, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr.trim_end(),
        "sekisho: `nope` is not a target you may reach; check the name, or ask the hospital to add it to your vendor's agreement."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_duration_is_a_usage_error() {
    let fixture = start_broker().await;
    let child = fixture
        .sekisho(&[
            "request",
            "--target",
            "echo",
            "--purpose",
            "x",
            "--for",
            "an hour",
        ])
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("write it like 30m, 1h, 1h30m or 90s"),
        "{stderr}"
    );
}

// --- connect: the whole flow ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_approval_retries_a_wrong_code_forwards_and_ctrl_c_closes_cleanly() {
    let fixture = start_broker().await;
    let id = fixture.request(&["echo", "closed"]).await;
    let mut connect = fixture.connect(&id, &["echo", "closed"]);

    let waiting = connect.until("Waiting for approval of").await;
    assert_eq!(
        waiting.split(" (").next().unwrap(),
        format!("Waiting for approval of {id}")
    );
    assert!(waiting.contains("(0 of 1 approvals; asked "), "{waiting}");
    fixture.approve(&id).await;
    let approved = connect.until("Approved by").await;
    assert!(
        approved.starts_with(&format!("Approved by {APPROVER} until ")),
        "{approved}"
    );

    connect.until("One-time password for acme-ehr/tanaka").await;
    connect.type_line(&fixture.wrong_code()).await;
    let rejected = connect.until("That one-time password").await;
    assert!(rejected.contains("is not right"), "{rejected}");
    connect.until("One-time password for acme-ehr/tanaka").await;
    connect.type_line(&fixture.code()).await;

    let opened = connect.until("Session open until").await;
    assert!(
        opened.contains("(in 59m)") || opened.contains("(in 1h)"),
        "{opened}"
    );
    connect.until("Press Ctrl-C to end the session.").await;
    assert_echoes(connect.local_port_of("echo")).await;

    // A forward the broker cannot carry prints its sentence; the session carries on.
    // The local side is reset, perhaps before `connect` itself has returned.
    if let Ok(mut refused) = TcpStream::connect(connect.local_port_of("closed")).await {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(WAIT, refused.read(&mut buf))
            .await
            .unwrap();
        assert!(!matches!(read, Ok(n) if n > 0));
    }
    let sentence = connect.until("closed: ").await;
    assert!(
        sentence.contains("The hospital's `closed` did not accept the connection"),
        "{sentence}"
    );
    assert_echoes(connect.local_port_of("echo")).await;

    connect.interrupt();
    let (status, rest) = connect.exit(WAIT).await;
    assert!(
        status.success(),
        "Ctrl-C must end the session cleanly: {status}, {rest}"
    );
    assert!(rest.contains("Session closed."), "{rest}");

    let (_, stdout, _) = finish(fixture.sekisho(&["status"]).spawn().unwrap()).await;
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with(&id) && line.contains("ended (closed)")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_names_the_approver_and_the_reason_and_exits_1() {
    let fixture = start_broker().await;
    let id = fixture.request(&["echo"]).await;
    let mut connect = fixture.connect(&id, &["echo"]);
    connect.until("Waiting for approval of").await;
    fixture
        .desk
        .deny(
            &RequestId::parse(&id).unwrap(),
            APPROVER,
            "not during the night shift",
        )
        .await
        .unwrap();
    connect
        .until("Denied by suzuki: not during the night shift")
        .await;
    let (status, rest) = connect.exit(WAIT).await;
    assert_eq!(status.code(), Some(1), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_hospital_revokes_ends_with_its_sentence_and_exit_1() {
    let fixture = start_broker().await;
    let (id, mut connect) = fixture.open_session(&["echo"]).await;
    assert_echoes(connect.local_port_of("echo")).await;
    fixture
        .desk
        .revoke(
            &RequestId::parse(&id).unwrap(),
            APPROVER,
            "incident response",
        )
        .await
        .unwrap();
    let line = tokio::time::timeout(CUT_WITHIN, connect.until("The hospital ended the session"))
        .await
        .unwrap_or_else(|_| panic!("the session was not cut within {CUT_WITHIN:?}"));
    assert_eq!(
        line,
        "The hospital ended the session by suzuki: incident response."
    );
    let (status, rest) = connect.exit(CUT_WITHIN).await;
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(!rest.contains("Session closed."), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_reaches_its_end_time_warns_then_exits_0_with_the_brokers_sentence() {
    let fixture = start_broker().await;
    let (_, mut connect) = fixture.open_session(&["echo"]).await;
    const MIN: Duration = Duration::from_secs(60);
    // Approved for an hour: move the broker's clock to each warning, then past the end.
    fixture.clock.advance(50 * MIN + Duration::from_secs(1));
    connect.until("The session ends in 10 minutes.").await;
    fixture.clock.advance(8 * MIN);
    connect.until("The session ends in 2 minutes.").await;
    fixture.clock.advance(2 * MIN);
    connect
        .until("The session reached its end time and was closed by the broker")
        .await;
    let (status, rest) = connect.exit(WAIT).await;
    assert!(status.success(), "{status}: {rest}");
    assert!(!rest.contains("Session closed."), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_that_ends_at_the_prompt_is_one_sentence_and_a_failure_exit() {
    let fixture = start_broker().await;
    let id = fixture.request(&["echo"]).await;
    fixture.approve(&id).await;
    // Already approved: no waiting; stdin is closed, so no code comes.
    let child = fixture
        .sekisho(&["connect", &id, "-L", "0:echo"])
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("One-time password for acme-ehr/tanaka"),
        "{stderr}"
    );
    assert!(
        stderr.trim_end().ends_with(
            "sekisho: No one-time password was given (standard input ended); run the command again and type the code from your authenticator app."
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_to_a_target_the_request_does_not_cover_fails_before_waiting() {
    let fixture = start_broker().await;
    let id = fixture.request(&["echo"]).await;
    let child = fixture
        .sekisho(&["connect", &id, "-L", "0:echo", "-L", "0:closed"])
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("sekisho: {id} does not cover `closed`")),
        "{stderr}"
    );
    assert!(!stderr.contains("Waiting for approval"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_unknown_request_is_the_brokers_sentence() {
    let fixture = start_broker().await;
    let child = fixture
        .sekisho(&["connect", "r-nosuchthing", "-L", "0:echo"])
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "sekisho: You have no request r-nosuchthing; check the id with `sekisho status`."
        ),
        "{stderr}"
    );
}

// --- a lost connection ---

/// The broker's idle timeout in these tests: how soon a lost connection is noticed.
const LOST_AFTER: Duration = Duration::from_secs(2);

/// A UDP relay in front of the broker that can stop carrying datagrams both ways, as a Wi-Fi
/// drop or a closed laptop does. Each client address gets its own socket towards the broker.
struct Relay {
    addr: SocketAddr,
    carrying: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(broker: SocketAddr) -> Relay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = front.local_addr().unwrap();
        let carrying = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let carrying = carrying.clone();
            async move {
                let mut towards_broker: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                // Dropped (and so stopped) with this task.
                let mut answers = tokio::task::JoinSet::new();
                let mut datagram = vec![0u8; 65_535];
                while let Ok((len, client)) = front.recv_from(&mut datagram).await {
                    if !carrying.load(Ordering::SeqCst) {
                        continue;
                    }
                    let back = match towards_broker.get(&client) {
                        Some(back) => back.clone(),
                        None => {
                            let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                            back.connect(broker).await.unwrap();
                            answers.spawn(carry_answers(
                                back.clone(),
                                front.clone(),
                                client,
                                carrying.clone(),
                            ));
                            towards_broker.insert(client, back.clone());
                            back
                        }
                    };
                    let _ = back.send(&datagram[..len]).await;
                }
            }
        });
        Relay {
            addr,
            carrying,
            task,
        }
    }

    fn stop_carrying(&self) {
        self.carrying.store(false, Ordering::SeqCst);
    }

    fn carry_again(&self) {
        self.carrying.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The broker's datagrams back to `client`, while the relay carries.
async fn carry_answers(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    carrying: Arc<AtomicBool>,
) {
    let mut datagram = vec![0u8; 65_535];
    while let Ok(len) = back.recv(&mut datagram).await {
        if carrying.load(Ordering::SeqCst) {
            let _ = front.send_to(&datagram[..len], client).await;
        }
    }
}

impl Fixture {
    /// Waits (bounded) until the record of `id` satisfies `done`: the broker notices a lost
    /// connection when its idle timeout passes.
    async fn record_until(&self, id: &str, done: impl Fn(&RequestRecord) -> bool) -> RequestRecord {
        let id = RequestId::parse(id).unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                let record = self.desk.store().request(&id).await.unwrap();
                if done(&record) {
                    return record;
                }
                // sync-ok: the broker's own timing is under test; polled, bounded.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id} did not reach the expected state within {WAIT:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_taken_up_again_by_itself_with_a_new_code_on_the_same_local_port() {
    let fixture = start_broker_with_idle_timeout(Some(LOST_AFTER)).await;
    let relay = Relay::start(fixture.broker).await;
    let id = fixture.request(&["echo"]).await;
    fixture.approve(&id).await;
    let mut connect = fixture.connect_through(relay.addr, &id, &["echo"]);
    connect.until("One-time password for acme-ehr/tanaka").await;
    connect.type_line(&fixture.code()).await;
    connect.until("Press Ctrl-C to end the session.").await;
    let local = connect.local_port_of("echo");
    assert_echoes(local).await;
    let mut in_flight = TcpStream::connect(local).await.unwrap();
    in_flight.write_all(b"before").await.unwrap();
    let mut answer = [0u8; 6];
    in_flight.read_exact(&mut answer).await.unwrap();

    relay.stop_carrying();
    connect
        .until("Reconnecting; the local ports stay open")
        .await;
    // A local connection made while the session has no connection waits for it.
    let mut waiting = TcpStream::connect(local).await.unwrap();
    waiting.write_all(b"made while disconnected").await.unwrap();
    waiting.shutdown().await.unwrap();
    // The broker put the loss on the record; the session is still approved.
    let lost = fixture
        .record_until(&id, |record| record.detached_at.is_some())
        .await;
    assert_eq!(lost.stage, Stage::Active);

    relay.carry_again();
    // The next code (a code is good once).
    fixture.clock.advance(Duration::from_secs(30));
    connect.until("One-time password for acme-ehr/tanaka").await;
    connect.type_line(&fixture.code()).await;
    connect.until("Session taken up again until").await;

    // The connection in flight across the loss was cut; the one that waited is carried, on
    // the same local port, as is a new one.
    let mut rest = Vec::new();
    let cut = tokio::time::timeout(WAIT, in_flight.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(cut.is_err() || rest.is_empty(), "{cut:?} {rest:?}");
    // …and the technician was told.
    if !connect
        .seen
        .iter()
        .any(|line| line.contains("a forwarded connection was cut"))
    {
        connect.until("a forwarded connection was cut").await;
    }
    let mut carried = Vec::new();
    tokio::time::timeout(WAIT, waiting.read_to_end(&mut carried))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(carried, b"made while disconnected");
    assert_echoes(local).await;
    let taken = fixture
        .record_until(&id, |record| record.detached_at.is_none())
        .await;
    assert_eq!((taken.stage, taken.attachment), (Stage::Active, 2));

    connect.interrupt();
    let (status, rest) = connect.exit(WAIT).await;
    assert!(status.success(), "{status}: {rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_client_was_killed_is_taken_up_with_sekisho_connect_and_a_new_code() {
    let fixture = start_broker_with_idle_timeout(Some(LOST_AFTER)).await;
    let (id, mut connect) = fixture.open_session(&["echo"]).await;
    assert_echoes(connect.local_port_of("echo")).await;
    // SIGKILL: the client says nothing to the broker.
    connect.child.kill().await.unwrap();
    fixture
        .record_until(&id, |record| record.detached_at.is_some())
        .await;

    fixture.clock.advance(Duration::from_secs(30));
    let mut again = fixture.connect(&id, &["echo"]);
    again.until("is live but its connection was lost").await;
    again.until("One-time password for acme-ehr/tanaka").await;
    again.type_line(&fixture.code()).await;
    again.until("Press Ctrl-C to end the session.").await;
    assert_echoes(again.local_port_of("echo")).await;
    again.interrupt();
    let (status, rest) = again.exit(WAIT).await;
    assert!(status.success(), "{status}: {rest}");
}

// --- TLS over TCP ---

/// A port where UDP goes nowhere (a socket that never answers, as a firewall that drops it)
/// and TCP reaches the broker's TLS-over-TCP listener; its address.
async fn udp_dropped_tcp_passed(broker: SocketAddr) -> (SocketAddr, std::net::UdpSocket) {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let front = silent.local_addr().unwrap();
    let listener = TcpListener::bind(front).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut server = TcpStream::connect(broker).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (front, silent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_udp_does_not_pass_the_client_reaches_the_broker_over_tls_on_tcp() {
    let fixture = start_broker().await;
    let (front, _silent) = udp_dropped_tcp_passed(fixture.broker).await;
    let through = |args: &[&str]| sekisho_with(&front.to_string(), &fixture.credentials, args);

    // QUIC alone cannot get through; the default races TCP and gets through.
    let (status, _, stderr) = finish(
        through(&["status", "--transport", "quic", "--connect-timeout", "2"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("outgoing UDP to port"), "{stderr}");
    let (status, stdout, stderr) = finish(through(&["status"]).spawn().unwrap()).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, "You have no requests.\n");

    // Enrollment too goes over TCP, and the enrolled client remembers that TCP reached it.
    let token = add_technician(&fixture.desk, "sato").await;
    let config_dir = fixture.dir.path().join("sato");
    let mut enroll = enroll_command(
        &front.to_string(),
        &token,
        &fixture.ca_fingerprint,
        &config_dir,
    );
    let (status, _, stderr) = finish(enroll.spawn().unwrap()).await;
    assert!(status.success(), "{status}: {stderr}");
    let (status, _, stderr) = finish(sekisho_in(&config_dir, &["status"]).spawn().unwrap()).await;
    assert!(status.success(), "{status}: {stderr}");
    let remembered = std::fs::read_to_string(config_dir.join("transport")).unwrap();
    assert!(
        remembered.starts_with(&format!("{front} tcp ")),
        "{remembered}"
    );

    // The whole flow over TCP: a request, the approval, the code, a forward, the end.
    let id = fixture.request_through(front, &["echo"]).await;
    fixture.approve(&id).await;
    let mut connect = fixture.connect_through(front, &id, &["echo"]);
    connect.until("One-time password for acme-ehr/tanaka").await;
    connect.type_line(&fixture.code()).await;
    connect.until("Press Ctrl-C to end the session.").await;
    assert_echoes(connect.local_port_of("echo")).await;
    let opened = fixture
        .desk
        .store()
        .request(&RequestId::parse(&id).unwrap())
        .await
        .unwrap();
    assert_eq!(opened.stage, Stage::Active);
    let events = fixture
        .desk
        .store()
        .audit_events(&sekisho_broker::store::AuditFilter {
            kinds: vec![sekisho_broker::audit::EventKind::ForwardOpened],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    connect.interrupt();
    let (status, rest) = connect.exit(WAIT).await;
    assert!(status.success(), "{status}: {rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_that_passes_neither_is_one_sentence_naming_both_ports() {
    let fixture = start_broker().await;
    // Nothing listens there, on UDP or TCP.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr = one_sentence_failure(sekisho_with(
        &format!("127.0.0.1:{port}"),
        &fixture.credentials,
        &["status"],
    ))
    .await;
    assert!(
        stderr.contains("could not be reached over QUIC or over TLS on TCP")
            && stderr.contains(&format!("UDP to port {port}"))
            && stderr.contains(&format!("TCP to port {port}")),
        "{stderr}"
    );
    // A broker that offers only QUIC: asking for TCP says what is missing.
    let quic_only = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (status, _, stderr) = finish(
        sekisho_with(
            &quic_only.local_addr().unwrap().to_string(),
            &fixture.credentials,
            &["status", "--transport", "tcp"],
        )
        .spawn()
        .unwrap(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be reached over TCP"), "{stderr}");
    assert!(stderr.contains("offers TLS over TCP"), "{stderr}");
}

// --- through an HTTP proxy ---

/// A real tinyproxy on a free loopback port, allowing CONNECT to `broker`'s port, with Basic
/// credentials when given; `None` (the test is skipped) without `SEKISHO_TEST_TINYPROXY`.
async fn tinyproxy(
    dir: &Path,
    broker: SocketAddr,
    basic: Option<&str>,
) -> Option<(Child, SocketAddr)> {
    let Ok(binary) = std::env::var("SEKISHO_TEST_TINYPROXY") else {
        println!(
            "skipped: SEKISHO_TEST_TINYPROXY is not set (the path of tinyproxy; .ci/run sets it to /usr/bin/tinyproxy)"
        );
        return None;
    };
    // tinyproxy takes its port from its file: a port the kernel just gave out and took back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let auth = basic.map(|user_password| {
        let (user, password) = user_password.split_once(':').unwrap();
        format!("BasicAuth {user} {password}\n")
    });
    let conf = dir.join(format!("tinyproxy-{port}.conf"));
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nConnectPort {}\nMaxClients 20\nLogLevel Error\n{}",
            broker.port(),
            auth.unwrap_or_default()
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    // Ready once it accepts a connection.
    tokio::time::timeout(WAIT, async {
        while TcpStream::connect(address).await.is_err() {
            // sync-ok: tinyproxy gives no other sign that it listens; polled, bounded.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("tinyproxy listens");
    Some((child, address))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_is_reached_through_a_real_http_proxy_with_and_without_credentials() {
    let fixture = start_broker().await;
    let Some((_proxy, proxy)) = tinyproxy(fixture.dir.path(), fixture.broker, None).await else {
        return;
    };
    let status = |extra: &[&str], env: &[(&str, String)]| {
        let mut args = vec!["status", "--transport", "tcp"];
        args.extend_from_slice(extra);
        let mut command = fixture.sekisho(&args);
        for (name, value) in env {
            command.env(name, value);
        }
        command.spawn().unwrap()
    };
    // From --proxy, and from HTTPS_PROXY.
    for (extra, env) in [
        (
            vec!["--proxy".to_owned(), format!("http://{proxy}")],
            vec![],
        ),
        (vec![], vec![("HTTPS_PROXY", format!("http://{proxy}"))]),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = finish(status(&extra, &env)).await;
        assert!(code.success(), "{code}: {stderr}");
        assert_eq!(stdout, "You have no requests.\n");
    }
    // NO_PROXY names the broker: the proxy (here one that does not exist) is not used.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, stderr) = finish(status(
        &[],
        &[
            ("HTTPS_PROXY", format!("http://{dead}")),
            ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
        ],
    ))
    .await;
    assert!(code.success(), "{code}: {stderr}");

    // A proxy that wants Basic credentials: refused without, through with them.
    let Some((_auth_proxy, auth_proxy)) =
        tinyproxy(fixture.dir.path(), fixture.broker, Some("tanaka:s3cret")).await
    else {
        return;
    };
    let (code, _, stderr) =
        finish(status(&["--proxy", &format!("http://{auth_proxy}")], &[])).await;
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(stderr.contains("asks for credentials"), "{stderr}");
    let (code, _, stderr) = finish(status(
        &["--proxy", &format!("http://tanaka:wrong@{auth_proxy}")],
        &[],
    ))
    .await;
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not accept the credentials"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong"),
        "the password is never shown: {stderr}"
    );
    let (code, stdout, stderr) = finish(status(
        &["--proxy", &format!("http://tanaka:s3cret@{auth_proxy}")],
        &[],
    ))
    .await;
    assert!(code.success(), "{code}: {stderr}");
    assert_eq!(stdout, "You have no requests.\n");
    // The password asked for rather than written in the URL (a line of stdin off a terminal).
    let mut asked = fixture.sekisho(&[
        "status",
        "--transport",
        "tcp",
        "--proxy",
        &format!("http://{auth_proxy}"),
        "--proxy-user",
        "tanaka",
    ]);
    let mut child = asked.stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"s3cret\n").await.unwrap();
    drop(stdin);
    let (code, stdout, stderr) = finish(child).await;
    assert!(code.success(), "{code}: {stderr}");
    assert!(
        stderr.contains("Password for tanaka at the proxy"),
        "{stderr}"
    );
    assert_eq!(stdout, "You have no requests.\n");
}

/// A proxy that answers CONNECT and then shows its own certificate (TLS inspection) is
/// refused, with what the vendor's IT must change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_inspects_tls_is_refused_with_what_to_ask_for() {
    let fixture = start_broker().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let own =
        rcgen::generate_simple_self_signed(vec![proto::BROKER_SERVER_NAME.to_owned()]).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![own.cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(own.signing_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(byte) = tcp.read_u8().await else {
                        return;
                    };
                    head.push(byte);
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    let (code, _, stderr) = finish(
        fixture
            .sekisho(&[
                "status",
                "--transport",
                "tcp",
                "--proxy",
                &format!("http://{proxy}"),
            ])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert!(stderr.contains("inspects TLS"), "{stderr}");
    assert!(stderr.contains("without TLS inspection"), "{stderr}");
}

// --- failures before anything is asked ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_one_sentence_and_a_failure_exit() {
    let fixture = start_broker().await;
    // A UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let child = sekisho_with(
        &silent.local_addr().unwrap().to_string(),
        &fixture.credentials,
        &[
            "connect",
            "r-whatever",
            "-L",
            "0:echo",
            "--connect-timeout",
            "1",
        ],
    )
    .spawn()
    .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("sekisho: "), "{stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
    assert!(stderr.contains("outgoing UDP to port"), "{stderr}");
}

/// A port where nothing listens answers UDP with an ICMP "port unreachable": the client says
/// so at once, naming UDP and the port, rather than waiting out its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_the_network_refuses_is_said_at_once_with_the_port_it_needs() {
    let fixture = start_broker().await;
    let port = {
        let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        nobody.local_addr().unwrap().port()
    };
    let broker = format!("127.0.0.1:{port}");
    for args in [
        vec!["status", "--connect-timeout", "30"],
        vec![
            "connect",
            "r-whatever",
            "-L",
            "0:echo",
            "--connect-timeout",
            "30",
        ],
    ] {
        let (status, _, stderr) = finish(
            sekisho_with(&broker, &fixture.credentials, &args)
                .spawn()
                .unwrap(),
        )
        .await;
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("was refused"), "{stderr}");
        assert!(stderr.contains(&format!("UDP port {port}")), "{stderr}");
    }
    // Enrollment too.
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = finish(
        enroll_command(&broker, "token", &"00".repeat(32), dir.path())
            .arg("--connect-timeout")
            .arg("30")
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was refused"), "{stderr}");
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
    let child = sekisho_with(&fixture.broker.to_string(), &mixed, &["status"])
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
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
    let child = sekisho_with(
        &impostor.broker.to_string(),
        &fixture.credentials,
        &[
            "request",
            "--target",
            "echo",
            "--purpose",
            "patch",
            "--for",
            "1h",
        ],
    )
    .spawn()
    .unwrap();
    let (status, stdout, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
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
    let child = sekisho_with(&fixture.broker.to_string(), &credentials, &["status"])
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_name_every_option_and_variable() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sekisho"));
    for variable in [
        "SEKISHO_BROKER",
        "SEKISHO_CA",
        "SEKISHO_CERT",
        "SEKISHO_KEY",
    ] {
        command.env_remove(variable);
    }
    let fixture = start_broker().await;
    let child = command
        .args(["status", "--broker", &fixture.broker.to_string()])
        .env("SEKISHO_CA", &fixture.credentials[0])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .starts_with("sekisho: Missing --cert FILE (SEKISHO_CERT), --key FILE (SEKISHO_KEY);"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_can_come_from_the_environment() {
    let fixture = start_broker().await;
    let [ca, cert, key] = &fixture.credentials;
    let child = Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .arg("status")
        .env("SEKISHO_BROKER", fixture.broker.to_string())
        .env("SEKISHO_CA", ca)
        .env("SEKISHO_CERT", cert)
        .env("SEKISHO_KEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (status, stdout, stderr) = finish(child).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, "You have no requests.\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_forward_says_what_is_expected() {
    let fixture = start_broker().await;
    let child = fixture
        .sekisho(&["connect", "r-whatever", "-L", "echo"])
        .spawn()
        .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("write LOCAL_PORT:TARGET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_port_in_use_fails_before_connecting() {
    let fixture = start_broker().await;
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spec = format!("{}:echo", taken.local_addr().unwrap().port());
    // The broker address is a silent socket: the failure must come before any connection.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let child = sekisho_with(
        &silent.local_addr().unwrap().to_string(),
        &fixture.credentials,
        &["connect", "r-whatever", "-L", &spec],
    )
    .spawn()
    .unwrap();
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("choose another local port"), "{stderr}");
}

// --- enrollment ---

/// `sekisho ARGS --config-dir DIR`, with nothing from the environment.
fn sekisho_in(config_dir: &Path, args: &[&str]) -> Command {
    let mut command = bare_sekisho();
    command.args(args).arg("--config-dir").arg(config_dir);
    command
}

/// A hospital with several brokers gives every address; enrollment keeps them all, in order,
/// and every command passes over one that is down to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_keeps_every_broker_address_and_commands_pass_over_one_that_is_down() {
    let fixture = start_broker().await;
    // Nothing answers UDP there: the network refuses it at once.
    let down = {
        let nobody = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        nobody.local_addr().unwrap().to_string()
    };
    let up = fixture.broker.to_string();
    let token = add_technician(&fixture.desk, "sato").await;
    let config_dir = fixture.dir.path().join("sato");
    let mut enroll = enroll_command(&down, &token, &fixture.ca_fingerprint, &config_dir);
    enroll.args(["--broker", &up]);
    let (status, _, stderr) = finish(enroll.spawn().unwrap()).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(
        std::fs::read_to_string(config_dir.join("broker")).unwrap(),
        format!("{down}\n{up}")
    );

    let (status, stdout, stderr) =
        finish(sekisho_in(&config_dir, &["status"]).spawn().unwrap()).await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, "You have no requests.\n");

    // Both down: one sentence naming each.
    let stderr = one_sentence_failure(sekisho_with(
        &format!("{down},{down}"),
        &fixture.credentials,
        &["status"],
    ))
    .await;
    assert!(
        stderr.contains("None of the hospital's brokers could be reached")
            && stderr.matches("was refused").count() == 2,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_enrolling_no_credential_options_are_needed_and_the_key_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = start_broker().await;
    let config_dir = fixture.credentials[0].parent().unwrap();
    let mode = std::fs::metadata(&fixture.credentials[2])
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "client.key must be readable by its owner only"
    );
    let dir_mode = std::fs::metadata(config_dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // A whole session with nothing but the configuration directory: the enrolled
    // certificate, and a code computed from the secret `sekisho enroll` showed.
    let child = sekisho_in(
        config_dir,
        &[
            "request",
            "--target",
            "echo",
            "--purpose",
            "patch",
            "--for",
            "1h",
        ],
    )
    .spawn()
    .unwrap();
    let (status, stdout, stderr) = finish(child).await;
    assert!(status.success(), "{status}: {stderr}");
    let id = stdout.trim().to_owned();
    fixture.approve(&id).await;
    let mut child = sekisho_in(config_dir, &["connect", &id, "-L", "0:echo"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut connect = Connect {
        stdin: child.stdin.take().unwrap(),
        stderr: BufReader::new(child.stderr.take().unwrap()),
        seen: Vec::new(),
        child,
    };
    connect.until("One-time password for acme-ehr/tanaka").await;
    connect.type_line(&fixture.code()).await;
    connect.until("Press Ctrl-C to end the session.").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_once_and_a_wrong_fingerprint_saves_nothing() {
    let fixture = start_broker().await;
    let fingerprint = fixture_fingerprint(&fixture);
    let token = add_technician(&fixture.desk, "sato").await;

    // A fingerprint that is not the broker's: stopped at the handshake, nothing written, the
    // token still good.
    let mut wrong = fingerprint.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    let config_dir = fixture.dir.path().join("sato");
    let (status, stdout, stderr) = finish(
        enroll_command(&fixture.broker.to_string(), &token, &wrong, &config_dir)
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(&format!("its CA fingerprint is {fingerprint}, not {wrong}")),
        "{stderr}"
    );
    assert!(!config_dir.join("client.key").exists());
    assert!(!config_dir.join("client.pem").exists());

    // The right one enrolls; the same token again is refused in one sentence.
    let (status, stdout, stderr) = finish(
        enroll_command(
            &fixture.broker.to_string(),
            &token,
            &fingerprint,
            &config_dir,
        )
        .spawn()
        .unwrap(),
    )
    .await;
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("otpauth://totp/"), "{stdout}");
    assert!(
        stderr.contains("Enrolled Tanaka Hanako (acme-ehr/sato)"),
        "{stderr}"
    );
    let (status, stdout, stderr) = finish(
        enroll_command(
            &fixture.broker.to_string(),
            &token,
            &fingerprint,
            &fixture.dir.path().join("sato-again"),
        )
        .spawn()
        .unwrap(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("was already used"), "{stderr}");
    assert!(!fixture.dir.path().join("sato-again/client.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_enrollment_the_client_says_how_to_enroll() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = finish(sekisho_in(dir.path(), &["status"]).spawn().unwrap()).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("You are not enrolled yet"), "{stderr}");
    assert!(stderr.contains("sekisho enroll"), "{stderr}");

    let (status, _, stderr) = finish(
        sekisho_in(
            dir.path(),
            &[
                "enroll",
                "--broker",
                "127.0.0.1:9",
                "--token",
                "AAAA",
                "--ca-fingerprint",
                "sha256:1234",
            ],
        )
        .spawn()
        .unwrap(),
    )
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a CA fingerprint"), "{stderr}");
}

fn fixture_fingerprint(fixture: &Fixture) -> String {
    let ca = std::fs::read_to_string(&fixture.credentials[0]).unwrap();
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
