//! Real third-party programs for tests: a Python HTTP server, an `sshd` started per
//! connection, and a way to run clients (curl, psql, ssh, scp) with every wait bounded.
//!
//! Every child is spawned with `kill_on_drop`, so a failing test leaves nothing running.
//! A program that is missing fails the test with the Debian package to install; CI installs
//! them all.

use std::fs::Permissions;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::{JoinHandle, JoinSet};

/// How long any one wait on a third-party program may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if `what` takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {} s", WAIT.as_secs()))
}

/// The path of `program` (a name looked up on `PATH`, or a path), failing the test with the
/// package to install if it is not there.
pub fn require(program: &str, package: &str) -> PathBuf {
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|path| path.is_file())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
    };
    found.unwrap_or_else(|| {
        panic!(
            "`{program}` is not installed; install the Debian package {package} \
             (`apt-get install {package}`, as .ci/run does)"
        )
    })
}

/// Runs `command` to completion with stdin closed and returns its output. The test fails if
/// it cannot start or takes longer than [`WAIT`]; it is killed if the test ends first.
pub async fn run(mut command: Command) -> Output {
    let shown = format!("{:?}", command.as_std());
    command.stdin(Stdio::null()).kill_on_drop(true);
    within(&shown, command.output())
        .await
        .unwrap_or_else(|e| panic!("could not run {shown}: {e}"))
}

/// Runs `command` and returns its stdout, failing the test (with its stderr) unless it
/// exits with status 0.
pub async fn run_ok(command: Command) -> Vec<u8> {
    let shown = format!("{:?}", command.as_std());
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{shown} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `python3 -m http.server` serving a directory on `127.0.0.1:0`, killed when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    _child: Child,
}

impl HttpServer {
    /// Starts the server on `root` and waits until it says which port it listens on.
    pub async fn start(root: &Path) -> HttpServer {
        let python = require("python3", "python3");
        let mut child = Command::new(python)
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();

        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = within("python3 -m http.server saying its port", async {
            let mut line = String::new();
            loop {
                line.clear();
                if stdout.read_line(&mut line).await.unwrap() == 0 {
                    return None;
                }
                let port = line
                    .strip_prefix("Serving HTTP on 127.0.0.1 port ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|port| port.parse::<u16>().ok());
                if port.is_some() {
                    return port;
                }
            }
        })
        .await;
        let Some(port) = port else {
            let mut error = String::new();
            let _ = within("python3 exiting", stderr.read_to_string(&mut error)).await;
            panic!("python3 -m http.server exited without saying its port: {error}");
        };

        // It logs every request to stderr; keep both pipes drained so it never blocks.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
        });
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        });
        HttpServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The OpenSSH server, run in inetd mode (`sshd -i`) once per connection accepted on
/// `127.0.0.1:0`, so no port is guessed. It lets [`Sshd::user`] log in with
/// [`Sshd::client_key`] only. The listener and every `sshd` stop when this is dropped.
pub struct Sshd {
    addr: SocketAddr,
    user: String,
    dir: TempDir,
    accept: JoinHandle<()>,
}

impl Sshd {
    /// Generates keys and a configuration in a temporary directory and starts listening.
    pub async fn start() -> Sshd {
        let sshd = require("/usr/sbin/sshd", "openssh-server");
        let keygen = require("ssh-keygen", "openssh-client");
        // sshd refuses to start without its privilege-separation directory.
        let privsep = Path::new("/run/sshd");
        if !privsep.is_dir() {
            std::fs::create_dir_all(privsep).unwrap_or_else(|e| {
                panic!(
                    "sshd needs {}, which could not be made: {e}",
                    privsep.display()
                )
            });
            std::fs::set_permissions(privsep, Permissions::from_mode(0o755)).unwrap();
        }

        let dir = tempfile::tempdir().unwrap();
        for key in ["hostkey", "clientkey"] {
            let mut command = Command::new(&keygen);
            command
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "sekisho-test", "-f"])
                .arg(dir.path().join(key));
            run_ok(command).await;
        }
        std::fs::copy(
            dir.path().join("clientkey.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let mut id = Command::new("id");
        id.arg("-un");
        let user = String::from_utf8(run_ok(id).await)
            .unwrap()
            .trim()
            .to_owned();

        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "HostKey \"{host_key}\"\n\
                 AuthorizedKeysFile \"{authorized_keys}\"\n\
                 AllowUsers {user}\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PidFile none\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 LogLevel VERBOSE\n\
                 Subsystem sftp internal-sftp\n",
                host_key = dir.path().join("hostkey").display(),
                authorized_keys = dir.path().join("authorized_keys").display(),
            ),
        )
        .unwrap();
        // Check the configuration now, so a bad one fails here and says why.
        let mut check = Command::new(&sshd);
        check.arg("-t").arg("-f").arg(&config);
        run_ok(check).await;

        let log = dir.path().join("sshd.log");
        let (addr, accept) = serve_inetd(move || {
            let mut command = Command::new(&sshd);
            command.arg("-i").arg("-f").arg(&config).arg("-E").arg(&log);
            command
        })
        .await;
        Sshd {
            addr,
            user,
            dir,
            accept,
        }
    }

    /// Where `sshd` is reached: the target address for the broker's policy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The user that may log in (the one running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key that may log in.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("clientkey")
    }

    /// Options for `ssh` and `scp`: this key only, no configuration files, no host-key
    /// checks, no prompts.
    pub fn client_options(&self) -> Vec<String> {
        let mut options = vec![
            "-F".to_owned(),
            "none".to_owned(),
            "-i".to_owned(),
            self.client_key().display().to_string(),
        ];
        for option in [
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "BatchMode=yes",
            "LogLevel=ERROR",
            "ConnectTimeout=30",
        ] {
            options.push("-o".to_owned());
            options.push(option.to_owned());
        }
        options
    }

    /// What every `sshd` has logged so far, to explain a failure.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Listens on `127.0.0.1:0` and runs the command `make` gives once per connection, with the
/// connection as its stdin and stdout (how inetd starts a server), so no port is guessed.
/// Aborting the returned task drops the listener and kills every child.
async fn serve_inetd(make: impl Fn() -> Command + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        // Dropping this set (when the task is aborted) drops every child, killing it.
        let mut connections = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            while connections.try_join_next().is_some() {}
            let command = make();
            let shown = format!("{:?}", command.as_std());
            match spawn_on_socket(command, tcp) {
                Ok(mut child) => {
                    connections.spawn(async move {
                        let _ = child.wait().await;
                    });
                }
                Err(e) => eprintln!("could not start {shown}: {e}"),
            }
        }
    });
    (addr, accept)
}

/// Starts `command` with `tcp` as its stdin and stdout.
fn spawn_on_socket(mut command: Command, tcp: TcpStream) -> std::io::Result<Child> {
    let tcp = tcp.into_std()?;
    tcp.set_nonblocking(false)?;
    let stdout = tcp.try_clone()?;
    // The command holds our copies of the socket; it is dropped at the end of this function,
    // so only the child keeps the connection open and its exit closes it.
    command
        .stdin(Stdio::from(OwnedFd::from(tcp)))
        .stdout(Stdio::from(OwnedFd::from(stdout)))
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command.spawn()
}

/// A PACS: dcmtk's `storescp` (application entity title [`StoreScp::AE_TITLE`]), run in
/// inetd mode once per association accepted on `127.0.0.1:0`, storing what it receives in a
/// directory of its own.
pub struct StoreScp {
    addr: SocketAddr,
    dir: TempDir,
    accept: JoinHandle<()>,
}

impl StoreScp {
    /// The called application entity title.
    pub const AE_TITLE: &'static str = "PACS";

    /// Starts listening.
    pub async fn start() -> StoreScp {
        let storescp = require("storescp", "dcmtk");
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("received");
        std::fs::create_dir_all(&output).unwrap();
        let (addr, accept) = serve_inetd(move || {
            let mut command = Command::new(&storescp);
            command
                .args([
                    "--inetd",
                    "--aetitle",
                    StoreScp::AE_TITLE,
                    "--output-directory",
                ])
                .arg(&output);
            command
        })
        .await;
        StoreScp { addr, dir, accept }
    }

    /// Where the PACS is reached: the target address for the broker's policy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The files received so far.
    pub fn received(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path().join("received"))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
