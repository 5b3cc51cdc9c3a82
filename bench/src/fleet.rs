//! Figures 4–7, on loopback: time from connect to the first forwarded byte, audited forward
//! opens per second on one session, the broker's memory with many idle and busy sessions,
//! and how many new sessions per second the broker accepts.
//!
//! Clients here run inside the benchmark (the library, one QUIC endpoint per session, as
//! each technician's `sekisho` would have), except for figure 4, which starts a client
//! process per sample. The broker is always a process of its own, measured from `/proc`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sekisho_client::Session;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::lab::{Lab, Technician};
use crate::paths::{client_port, spawn_client};
use crate::procs::memory;
use crate::report::{Results, percentile};
use crate::{load, progress};
use tunnel::udp::PacketSize;

pub(crate) const CONNECT_P50: &str = "4. connect to first byte, p50";
pub(crate) const CONNECT_P99: &str = "4. connect to first byte, p99";
pub(crate) const FORWARD_OPENS: &str = "5. audited forward opens per second, one session";
pub(crate) const PATH_MTU: &str = "5. QUIC packet size reached on loopback (MTU probing)";
pub(crate) const BASE_MEMORY: &str = "6. broker VmRSS, no session";
pub(crate) const IDLE_MEMORY: &str = "6. broker VmRSS, idle sessions";
pub(crate) const BUSY_MEMORY: &str = "6. broker peak VmRSS, sessions × 5 busy forwards";
pub(crate) const BUSY_THROUGHPUT: &str = "6. throughput of the busy forwards, all together";
pub(crate) const SESSION_RATE: &str = "7. new sessions per second (handshake + OTP + open)";

/// Sizes of figures 4–7.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetSize {
    pub(crate) connect_samples: usize,
    pub(crate) forward_opens_for: Duration,
    pub(crate) idle_sessions: usize,
    pub(crate) busy_sessions: usize,
    pub(crate) busy_for: Duration,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Figure 4: from the one-time password given to a client process (session approved) to the
/// first 64-byte answer through its forward, `samples` times, each with a new technician (a
/// code is accepted once per technician per 30-second step).
pub(crate) async fn connect_to_first_byte(
    lab: &Lab,
    samples: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..samples {
        let technician = lab.technician().await?;
        let request = lab.approved_request(&technician, &["echo"]).await?;
        let mut client = spawn_client(
            lab,
            &technician,
            &request,
            &["echo"],
            PacketSize::ETHERNET,
            "quic",
            None,
        )?;
        let port = client_port(&mut client, "echo").await?;
        let code = lab.otp(&technician)?;
        let started = Instant::now();
        client.say(&code).await?;
        let answered = load::first_echo(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .await
            .with_context(|| format!("the first forward of {} failed", technician.name))?;
        times.push(answered.duration_since(started).as_secs_f64() * 1000.0);
        client.stop().await;
    }
    results.add_figure(CONNECT_P50, "ms", percentile(&times, 50.0));
    results.add_figure(CONNECT_P99, "ms", percentile(&times, 99.0));
    Ok(())
}

/// Figure 5: forwards opened (each on the record before the broker answers) and closed, as
/// fast as 64 workers on one session can, for `duration`; checks that every one is on the
/// record.
pub(crate) async fn forward_opens(
    lab: &Lab,
    duration: Duration,
    results: &mut Results,
) -> anyhow::Result<()> {
    let technician = lab.technician().await?;
    let request = lab.approved_request(&technician, &["sink"]).await?;
    let mut session = Session::connect(&technician.config).await?;
    session.open(&request, &lab.otp(&technician)?).await?;
    let forwarder = session.forwarder();
    let opened = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for _ in 0..64 {
        let forwarder = forwarder.clone();
        let opened = opened.clone();
        workers.spawn(async move {
            while Instant::now() < deadline {
                let (mut send, mut recv) = forwarder.open_forward("sink").await?;
                opened.fetch_add(1, Ordering::Relaxed);
                send.finish()?;
                recv.read_to_end(64).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let elapsed = started.elapsed();
    let opened = opened.load(Ordering::Relaxed);
    results.add_figure(
        PATH_MTU,
        "bytes",
        f64::from(
            session
                .quic()
                .map_or(0, |quic| quic.stats().path.current_mtu),
        ),
    );
    let on_record = lab.forwards_on_record(&request).await?;
    if (on_record as u64) < opened {
        bail!("{opened} forwards were opened but only {on_record} are on the record");
    }
    session.close().await;
    results.add_figure(FORWARD_OPENS, "/s", opened as f64 / elapsed.as_secs_f64());
    Ok(())
}

/// Figures 6 and 7: opens `size.idle_sessions` sessions at once (32 at a time) and reports
/// the rate; the broker's memory with them idle; then 5 forwards on each of the first
/// `size.busy_sessions` sending to the sink for `size.busy_for`, and the broker's peak memory.
pub(crate) async fn sessions(
    lab: Arc<Lab>,
    size: FleetSize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (base, _) = memory(lab.broker_pid())?;
    results.add_figure(BASE_MEMORY, "MiB", base as f64 / MIB);

    progress(&format!(
        "making {} technicians with approved requests",
        size.idle_sessions
    ));
    let mut ready = Vec::new();
    let slots = Arc::new(Semaphore::new(16));
    let mut asking = JoinSet::new();
    for _ in 0..size.idle_sessions {
        let technician = lab.technician().await?;
        let (lab, slots) = (lab.clone(), slots.clone());
        asking.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            let request = lab.approved_request(&technician, &["sink"]).await?;
            Ok::<_, anyhow::Error>((technician, request))
        });
    }
    while let Some(done) = asking.join_next().await {
        ready.push(done??);
    }

    progress(&format!("opening {} sessions", ready.len()));
    let slots = Arc::new(Semaphore::new(32));
    let mut opening = JoinSet::new();
    let started = Instant::now();
    for (technician, request) in ready {
        let (lab, slots) = (lab.clone(), slots.clone());
        opening.spawn(async move {
            let _slot = slots.acquire_owned().await?;
            open_session(&lab, &technician, &request).await
        });
    }
    let mut sessions = Vec::new();
    while let Some(done) = opening.join_next().await {
        sessions.push(done??);
    }
    let rate = sessions.len() as f64 / started.elapsed().as_secs_f64();
    results.add_figure(SESSION_RATE, "/s", rate);

    // Let the handshakes' transient buffers go before reading the idle figure.
    // sync-ok: a measurement's settling time, not a wait for an event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, _) = memory(lab.broker_pid())?;
    results.add_figure(IDLE_MEMORY, "MiB", idle as f64 / MIB);

    progress(&format!(
        "{} sessions × 5 busy forwards",
        size.busy_sessions
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut busy = JoinSet::new();
    for session in sessions.iter().take(size.busy_sessions) {
        for _ in 0..5 {
            let (forwarder, stop, sent) = (session.forwarder(), stop.clone(), sent.clone());
            busy.spawn(async move {
                let (mut send, mut recv) = forwarder.open_forward("sink").await?;
                let chunk = vec![0x42u8; 64 * 1024];
                let mut total = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    send.write_all(&chunk).await?;
                    total += chunk.len() as u64;
                }
                send.finish()?;
                let count = recv.read_to_end(64).await?;
                if count.len() != 8 || u64::from_be_bytes(count[..8].try_into()?) != total {
                    bail!("the sink did not confirm {total} bytes");
                }
                sent.fetch_add(total, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(())
            });
        }
    }
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < size.busy_for {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(memory(lab.broker_pid())?.0);
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = busy.join_next().await {
        done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    results.add_figure(BUSY_MEMORY, "MiB", peak as f64 / MIB);
    results.add_figure(
        BUSY_THROUGHPUT,
        "Gbit/s",
        sent.load(Ordering::Relaxed) as f64 * 8.0 / elapsed / 1e9,
    );
    let mut closing = JoinSet::new();
    for session in sessions {
        closing.spawn(session.close());
    }
    while closing.join_next().await.is_some() {}
    Ok(())
}

async fn open_session(
    lab: &Lab,
    technician: &Technician,
    request: &str,
) -> anyhow::Result<Session> {
    let mut session = Session::connect(&technician.config).await?;
    session.open(request, &lab.otp(technician)?).await?;
    Ok(session)
}
