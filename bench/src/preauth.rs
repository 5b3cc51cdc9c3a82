//! Figure 8, on loopback: how long a real, enrolled technician takes to get in (connect,
//! TLS with their certificate, `Hello`, `Welcome`) while strangers attack the broker before
//! showing any credential, against the same figure with nobody attacking, in the same run.
//!
//! The attack (the tests' own attackers, [`sekisho_e2e::preauth`], from many addresses of
//! `127.0.0.0/8`): handshakes that answer the broker's Retry and then stall, held at a number
//! (each replaced as the broker drops it at its handshake deadline); enrollment connections,
//! which need no credential, that never say a word; and a flood of connection attempts that
//! never answer a Retry, at a fixed rate. The technician connects from 127.0.0.1, one attempt
//! after another, for the attack's duration; an attempt that gets no answer within 10 s, or
//! a refusal, counts as a failure.

use std::time::{Duration, Instant};

use sekisho_client::Session;
use sekisho_e2e::preauth::Attack;

use crate::lab::Lab;
use crate::progress;
use crate::report::{Results, percentile};

pub(crate) const QUIET_P50: &str = "8. technician gets in, nobody attacking, p50";
pub(crate) const QUIET_P95: &str = "8. technician gets in, nobody attacking, p95";
pub(crate) const UNDER_P50: &str = "8. technician gets in under pre-auth load, p50";
pub(crate) const UNDER_P95: &str = "8. technician gets in under pre-auth load, p95";
pub(crate) const UNDER_FAILED: &str = "8. technician attempts failed under pre-auth load";
pub(crate) const ATTACK_RATE: &str = "8. attacker connection attempts per second";

/// Sizes of figure 8.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreauthSize {
    /// Sources of stalled handshakes, and how many each holds.
    pub(crate) stalled_sources: u32,
    pub(crate) stalled_per_source: u32,
    /// Silent enrollment connections, and from how many sources.
    pub(crate) silent: u32,
    pub(crate) silent_sources: u32,
    /// Flood attempts per second, and from how many sources.
    pub(crate) flood_per_second: u32,
    pub(crate) flood_sources: u32,
    /// How long the technician is measured, quiet and under attack.
    pub(crate) duration: Duration,
}

impl PreauthSize {
    /// What the issue states: 500 stalled, 100 silent, 2,000 attempts/s, 30 s.
    pub(crate) const FULL: PreauthSize = PreauthSize {
        stalled_sources: 50,
        stalled_per_source: 10,
        silent: 100,
        silent_sources: 10,
        flood_per_second: 2000,
        flood_sources: 50,
        duration: Duration::from_secs(30),
    };

    /// Seconds, for CI.
    pub(crate) const SMOKE: PreauthSize = PreauthSize {
        stalled_sources: 5,
        stalled_per_source: 4,
        silent: 10,
        silent_sources: 2,
        flood_per_second: 200,
        flood_sources: 5,
        duration: Duration::from_secs(2),
    };
}

/// Figure 8.
pub(crate) async fn preauth_load(
    lab: &Lab,
    size: PreauthSize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let technician = lab.technician().await?;
    progress("figure 8: the technician gets in, nobody attacking");
    let (quiet, quiet_failed) = get_in_repeatedly(&technician.config, size.duration).await;
    anyhow::ensure!(
        quiet_failed == 0 && !quiet.is_empty(),
        "with nobody attacking, {quiet_failed} attempts to get in failed"
    );
    results.add_figure(QUIET_P50, "ms", percentile(&quiet, 50.0));
    results.add_figure(QUIET_P95, "ms", percentile(&quiet, 95.0));

    progress("figure 8: strangers stall handshakes, enroll silently and flood");
    let (broker, ca) = (lab.broker_addr, lab.ca_pem());
    let stalled = Attack::stalled(broker, ca, 0, size.stalled_sources, size.stalled_per_source);
    let silent_first = size.stalled_sources;
    let silent =
        Attack::silent_enrollments(broker, ca, silent_first, size.silent_sources, size.silent);
    let held = u64::from(size.stalled_sources * size.stalled_per_source);
    let established = stalled.answered_within(held, Duration::from_secs(30)).await
        && silent
            .answered_within(u64::from(size.silent), Duration::from_secs(30))
            .await;
    anyhow::ensure!(
        established,
        "the attack did not get going: {} of {held} stalled handshakes and {} of {} silent enrollments taken on",
        stalled.answered(),
        silent.answered(),
        size.silent
    );
    let flood_first = silent_first + size.silent_sources;
    let flood = Attack::flood(
        broker,
        ca,
        flood_first,
        size.flood_sources,
        size.flood_per_second,
    );
    let attempts_before = stalled.attempts() + silent.attempts() + flood.attempts();
    let started = Instant::now();
    let (under, failed) = get_in_repeatedly(&technician.config, size.duration).await;
    let attempts = stalled.attempts() + silent.attempts() + flood.attempts() - attempts_before;
    let rate = attempts as f64 / started.elapsed().as_secs_f64();
    drop((stalled, silent, flood));
    results.add_figure(ATTACK_RATE, "/s", rate);
    results.add_figure(UNDER_FAILED, "", failed as f64);
    // A failed attempt counts as the longest wait it could have been.
    let mut with_failures = under;
    with_failures.extend(std::iter::repeat_n(GIVE_UP.as_secs_f64() * 1000.0, failed));
    results.add_figure(UNDER_P50, "ms", percentile(&with_failures, 50.0));
    results.add_figure(UNDER_P95, "ms", percentile(&with_failures, 95.0));
    Ok(())
}

/// How long one attempt may take before it counts as failed.
const GIVE_UP: Duration = Duration::from_secs(10);

/// Gets in (and out again) one attempt after another for `duration`: the times in ms of
/// those that got in, and how many failed.
async fn get_in_repeatedly(
    config: &sekisho_client::ClientConfig,
    duration: Duration,
) -> (Vec<f64>, usize) {
    let mut times = Vec::new();
    let mut failed = 0;
    let until = Instant::now() + duration;
    while Instant::now() < until || times.len() + failed < 3 {
        let started = Instant::now();
        match tokio::time::timeout(GIVE_UP, Session::connect(config)).await {
            Ok(Ok(session)) => {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                session.close().await;
            }
            Ok(Err(e)) => {
                progress(&format!("figure 8: an attempt failed: {e}"));
                failed += 1;
            }
            Err(_) => failed += 1,
        }
    }
    (times, failed)
}
