//! Figure 9, on loopback: an approver's page while strangers abuse the staff web UI, against
//! the same page with nobody abusing it, in the same run.
//!
//! The broker is a process of its own serving its web UI (plain HTTP on loopback: the figure
//! is about connections and logins, not TLS), with the open-files limit at 1,024 as systemd
//! sets it by default. An approver logs in once; each sample is a fresh connection that loads
//! the pending-requests page with the approver's session (the worst case: no kept-alive
//! connection to reuse).
//!
//! - **Slow connections**: 1,000 connections from 1,000 loopback addresses, each sending the
//!   first line of a request and then nothing, each replaced as the broker closes it;
//!   measured once all 1,000 have connected.
//! - **A login flood**: 1,000 login attempts at once from 1,000 addresses, each with a name of
//!   its own (so no per-name wait spares the broker the password check) and a wrong password;
//!   the broker's memory (VmRSS) is sampled meanwhile.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use sekisho_broker::clock::SystemClock;
use sekisho_broker::staff::{DEFAULT_IDLE_TIMEOUT, Role, Roles, StaffDirectory};
use sekisho_e2e::web::WebClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

use crate::lab::Lab;
use crate::netns::Network;
use crate::procs::memory;
use crate::progress;
use crate::report::{Results, percentile};

pub(crate) const QUIET_P99: &str = "9. approver's page, nobody abusing the web UI, p99";
pub(crate) const SLOW_P99: &str = "9. approver's page, 1,000 slow connections held, p99";
pub(crate) const LOGIN_P99: &str =
    "9. approver's page during 1,000 logins from 1,000 addresses, p99";
pub(crate) const LOGIN_RSS: &str = "9. broker peak VmRSS during the login flood";
pub(crate) const BEFORE_RSS: &str = "9. broker VmRSS before the login flood";
pub(crate) const LOGIN_REFUSED: &str = "9. flood logins refused before hashing (busy or waiting)";

const MIB: f64 = 1024.0 * 1024.0;

/// Sizes of figure 9.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WebLoadSize {
    pub(crate) slow_connections: u32,
    pub(crate) logins: u32,
    pub(crate) samples: usize,
}

impl WebLoadSize {
    pub(crate) const FULL: WebLoadSize = WebLoadSize {
        slow_connections: 1000,
        logins: 1000,
        samples: 200,
    };
    pub(crate) const SMOKE: WebLoadSize = WebLoadSize {
        slow_connections: 20,
        logins: 20,
        samples: 5,
    };
}

/// The `n`th abuser's address: 127.0.8.0 upwards (apart from the technicians' and the
/// pre-authentication attackers').
fn abuser(n: u32) -> IpAddr {
    let [_, b, c, d] = (0x7f00_0800u32 + n).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(127, b, c, d))
}

/// Figure 9.
pub(crate) async fn web_under_abuse(
    targets: &[(&str, SocketAddr)],
    size: WebLoadSize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (lab, web) = Lab::start_with_web(&Network::loopback(), targets, 1024).await?;
    let approver = Approver::create(&lab, web).await?;

    progress("figure 9: the approver's page, nobody abusing the web UI");
    let quiet = page_loads(&approver, size.samples).await?;
    results.add_figure(QUIET_P99, "ms", percentile(&quiet, 99.0));

    progress("figure 9: the approver's page while slow connections are held");
    let holding = Arc::new(AtomicBool::new(true));
    let mut slow = JoinSet::new();
    let (placed, mut places) = tokio::sync::mpsc::channel(size.slow_connections as usize);
    for n in 0..size.slow_connections {
        slow.spawn(hold_slow_connection(
            abuser(n),
            web,
            holding.clone(),
            placed.clone(),
        ));
    }
    drop(placed);
    // Measured once every one of them has connected and sent its first line.
    for _ in 0..size.slow_connections {
        tokio::time::timeout(Duration::from_secs(60), places.recv())
            .await
            .context("the slow connections did not all connect within 60 s")?
            .ok_or_else(|| anyhow!("a slow connection could not be made"))?;
    }
    let under_slow = page_loads(&approver, size.samples).await?;
    holding.store(false, Ordering::Relaxed);
    slow.abort_all();
    results.add_figure(SLOW_P99, "ms", percentile(&under_slow, 99.0));

    progress("figure 9: the approver's page during a login flood");
    let broker_pid = lab.broker_pid();
    let (before_bytes, _) = memory(broker_pid)?;
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while flooding.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok((rss, _)) = memory(broker_pid) {
                    peak = peak.max(rss);
                }
            }
            peak
        })
    };
    let mut logins = JoinSet::new();
    for n in 0..size.logins {
        logins.spawn(failed_login(abuser(n), web, n));
    }
    let during = page_loads(&approver, size.samples).await?;
    let mut refused = 0u32;
    while let Some(answer) = logins.join_next().await {
        if matches!(answer, Ok(Ok(429 | 503))) {
            refused += 1;
        }
    }
    flooding.store(false, Ordering::Relaxed);
    let peak_bytes = sampler.await?;
    results.add_figure(LOGIN_P99, "ms", percentile(&during, 99.0));
    results.add_figure(LOGIN_RSS, "MiB", peak_bytes as f64 / MIB);
    results.add_figure(BEFORE_RSS, "MiB", before_bytes as f64 / MIB);
    results.add_figure(LOGIN_REFUSED, "", f64::from(refused));
    Ok(())
}

/// A logged-in approver of the lab's hospital.
struct Approver {
    web: SocketAddr,
    cookies: std::collections::HashMap<String, String>,
}

impl Approver {
    /// Makes an approver account as an admin and the person would (a one-time link, a
    /// password, the authenticator's code) and logs in through the login form.
    async fn create(lab: &Lab, web: SocketAddr) -> anyhow::Result<Approver> {
        let hospital = lab.hospital();
        let staff = StaffDirectory::new(
            hospital.store.clone(),
            hospital.sealing_key.clone(),
            Arc::new(SystemClock),
            "Benchmark Hospital",
            DEFAULT_IDLE_TIMEOUT,
        );
        let name = "bench-approver";
        let password = "bench approver long password";
        let token = staff
            .invite(name, &Roles::new([Role::Approver]), "bench-admin")
            .await?;
        let shown = staff
            .begin_enrollment(token.expose_secret(), name, password, password)
            .await?;
        // The previous step's code confirms (±1 step is accepted), so the current one is
        // still unused for the login.
        let earlier = SystemTime::now() - Duration::from_secs(30);
        let confirm = sekisho_broker::otp::code_at(&shown.secret, earlier)?;
        staff
            .confirm_enrollment(token.expose_secret(), &confirm, "bench")
            .await?;
        let code = sekisho_broker::otp::code_at(&shown.secret, SystemTime::now())?;
        let mut client = WebClient::new(web);
        let answer = client.login_with(name, password, &code).await;
        anyhow::ensure!(
            answer.status == 303,
            "the approver could not log in: {} {}",
            answer.status,
            answer.body
        );
        Ok(Approver {
            web,
            cookies: client.cookies,
        })
    }
}

/// Loads the pending-requests page `samples` times, each over a new connection; the times
/// in ms.
async fn page_loads(approver: &Approver, samples: usize) -> anyhow::Result<Vec<f64>> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut client = WebClient::new(approver.web);
        client.cookies = approver.cookies.clone();
        let started = Instant::now();
        let page = client.get("/requests").await;
        anyhow::ensure!(
            page.status == 200,
            "the approver's page answered {}",
            page.status
        );
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}

/// A connection from `source` that sends a request's first line and then nothing, replaced
/// whenever the broker closes it, until `holding` turns false. Says on `placed` when the
/// first one has sent its line.
async fn hold_slow_connection(
    source: IpAddr,
    web: SocketAddr,
    holding: Arc<AtomicBool>,
    placed: tokio::sync::mpsc::Sender<()>,
) {
    let mut placed = Some(placed);
    while holding.load(Ordering::Relaxed) {
        let Ok(socket) = TcpSocket::new_v4() else {
            return;
        };
        if socket.bind(SocketAddr::new(source, 0)).is_err() {
            return;
        }
        let Ok(mut tcp) = socket.connect(web).await else {
            continue;
        };
        if tcp.write_all(b"GET /requests HTTP/1.1\r\n").await.is_err() {
            continue;
        }
        if let Some(placed) = placed.take() {
            let _ = placed.send(()).await;
        }
        let mut byte = [0u8; 1];
        // Held until the broker closes it.
        let _ = tcp.read(&mut byte).await;
    }
}

/// One login attempt from `source` with a name of its own and a wrong password; the status
/// the broker answered.
async fn failed_login(source: IpAddr, web: SocketAddr, n: u32) -> anyhow::Result<u16> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut tcp = socket.connect(web).await?;
    // The login form's CSRF check compares a cookie with a field: a stranger sets both.
    let body = format!("csrf=abc&name=stranger{n}&password=not+the+password&code=000000");
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nCookie: sekisho_login=abc\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut answer))
        .await
        .context("no answer to a login within 60 s")??;
    let status = std::str::from_utf8(answer.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer"))?;
    Ok(status)
}
