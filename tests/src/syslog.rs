//! A real syslog collector for the audit stream: `rsyslogd` in the foreground, with a
//! configuration of the test's own (TCP input on `127.0.0.1`, plain or TLS through the gtls
//! driver, octet-counted framing) writing every `sekisho` message it parses to a file, one
//! line each: `FACILITY|SEVERITY|APP-NAME|PROCID|MSGID|RAW MESSAGE`.
//!
//! rsyslog takes its port from its configuration, so [`free_port`] asks the OS for one
//! (bind `127.0.0.1:0`, release). rsyslog is ready when its port accepts a connection,
//! waited for with a bounded poll. Its own messages (TLS errors) go to `rsyslogd.log`.
//!
//! Where rsyslogd is: `SEKISHO_TEST_RSYSLOGD` (`.ci/run` sets it; a path that is not there
//! fails the test), else `rsyslogd` on `PATH` or in `/usr/sbin`. Without one, [`program`]
//! says the test is skipped and why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// How long any wait on rsyslog may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// How often a bounded wait looks again (files growing, a port accepting).
const POLL: Duration = Duration::from_millis(20);

/// rsyslogd's path, or `None` after printing that `test` is skipped.
pub fn program(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SEKISHO_TEST_RSYSLOGD") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SEKISHO_TEST_RSYSLOGD={} is not a file; install rsyslog and rsyslog-gnutls (as .ci/run does)",
            path.display()
        );
        return Some(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let found = on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("rsyslogd"))
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        eprintln!(
            "skipped {test}: rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls; .ci/run installs it and sets SEKISHO_TEST_RSYSLOGD)"
        );
    }
    found
}

/// A port on 127.0.0.1 that was free a moment ago, for a server that must be told its port.
pub async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// The files a TLS collector needs: its certificate, key and (for rsyslog's driver) a CA.
pub struct CollectorTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// One message rsyslog received and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub facility: String,
    pub severity: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    /// The message as sent (without its octet count).
    pub raw: String,
}

impl Received {
    /// The raw message's MSG: what follows `<PRI>1 TIMESTAMP HOST APP PROCID MSGID - `.
    pub fn msg(&self) -> &str {
        self.raw.splitn(8, ' ').nth(7).unwrap_or("")
    }

    /// The raw message's TIMESTAMP.
    pub fn timestamp(&self) -> &str {
        self.raw.split(' ').nth(1).unwrap_or("")
    }

    /// The raw message's `<PRI>`.
    pub fn pri(&self) -> &str {
        self.raw.split(' ').next().unwrap_or("")
    }

    /// The event's number, read from the JSON.
    pub fn seq(&self) -> i64 {
        let json: serde_json::Value = serde_json::from_str(self.msg())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.raw));
        json["seq"].as_i64().unwrap()
    }
}

/// rsyslogd running in the foreground, killed when dropped.
pub struct Rsyslog {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Rsyslog {
    /// Starts rsyslogd with its files in `dir` (made if missing), listening on
    /// `127.0.0.1:port`, with TLS when `tls` is given; returns once the port accepts.
    pub async fn start(
        program: &Path,
        dir: &Path,
        port: u16,
        tls: Option<&CollectorTls>,
    ) -> Rsyslog {
        std::fs::create_dir_all(dir).unwrap();
        let file = |name: &str| dir.join(name).display().to_string();
        let (global_tls, module_tls) = match tls {
            Some(tls) => {
                std::fs::write(dir.join("ca.pem"), &tls.ca_pem).unwrap();
                std::fs::write(dir.join("cert.pem"), &tls.cert_pem).unwrap();
                std::fs::write(dir.join("key.pem"), &tls.key_pem).unwrap();
                (
                    format!(
                        r#" DefaultNetstreamDriverCAFile="{}" DefaultNetstreamDriverCertFile="{}" DefaultNetstreamDriverKeyFile="{}""#,
                        file("ca.pem"),
                        file("cert.pem"),
                        file("key.pem")
                    ),
                    r#" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon""#,
                )
            }
            None => (String::new(), ""),
        };
        let config = format!(
            r#"global(workDirectory="{dir}" maxMessageSize="64k"{global_tls})
module(load="imtcp"{module_tls})
template(name="fields" type="string" string="%syslogfacility-text%|%syslogseverity-text%|%app-name%|%procid%|%msgid%|%rawmsg%\n")
input(type="imtcp" address="127.0.0.1" port="{port}")
if $app-name == "sekisho" then {{
  action(type="omfile" file="{out}" template="fields")
}}
"#,
            dir = dir.display(),
            out = file("received.log"),
        );
        std::fs::write(dir.join("rsyslog.conf"), config).unwrap();
        let log = std::fs::File::create(dir.join("rsyslogd.log")).unwrap();
        let child = Command::new(program)
            .arg("-n")
            .arg("-f")
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut rsyslog = Rsyslog {
            port,
            dir: dir.to_owned(),
            child,
        };
        rsyslog.wait_until_listening().await;
        rsyslog
    }

    async fn wait_until_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "rsyslogd exited ({status}) before listening: {}",
                    self.own_log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rsyslogd did not listen on {addr} within {} s: {}",
                WAIT.as_secs(),
                self.own_log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What rsyslogd said about itself (errors, TLS handshakes it refused).
    pub fn own_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }

    /// Every audit event's message written so far (whole lines only), leaving out signed
    /// checkpoints (MSGID `audit-checkpoint`, see [`Rsyslog::checkpoints`]).
    pub fn received(&self) -> Vec<Received> {
        self.everything()
            .into_iter()
            .filter(|received| received.msgid != "audit-checkpoint")
            .collect()
    }

    /// The messages carrying signed checkpoints of the chain.
    pub fn checkpoints(&self) -> Vec<Received> {
        self.everything()
            .into_iter()
            .filter(|received| received.msgid == "audit-checkpoint")
            .collect()
    }

    fn everything(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| {
                let fields: Vec<&str> = line.trim_end_matches('\n').splitn(6, '|').collect();
                assert_eq!(fields.len(), 6, "a line rsyslog wrote: {line}");
                Received {
                    facility: fields[0].into(),
                    severity: fields[1].into(),
                    app_name: fields[2].into(),
                    procid: fields[3].into(),
                    msgid: fields[4].into(),
                    raw: fields[5].into(),
                }
            })
            .collect()
    }

    /// Waits (bounded) until a received message satisfies `wanted`; returns all received.
    pub async fn wait_for(&self, what: &str, wanted: impl Fn(&Received) -> bool) -> Vec<Received> {
        self.wait_until(what, || {
            let received = self.received();
            received.iter().any(&wanted).then_some(received)
        })
        .await
    }

    /// Waits (bounded) until `check` returns something.
    pub async fn wait_until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rsyslog: {what} did not happen within {} s; it said: {}",
                WAIT.as_secs(),
                self.own_log()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
