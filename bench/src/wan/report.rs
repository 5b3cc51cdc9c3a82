//! The WAN lab's tables, goals and JSON.
//!
//! # Goals (issue #19), each judged on medians of one run
//!
//! - On every profile, each sekisho path is at least as good as `ssh -L` aes128-gcm over the
//!   same TCP congestion control on every figure (QUIC and TLS over TCP are both held to
//!   `ssh -L` over BBR, the host's best).
//! - One forward's bulk, both directions, ≥ 0.9 × direct TCP with BBR on every lossy profile,
//!   and ≥ 0.9 × the better direct TCP on fibre.
//! - Ping-pong p99 while bulk runs on another forward ≤ 2 × its idle p99.
//! - 4 forwards together ≥ one direct TCP flow (BBR) up.
//!
//! Also printed, as a check of the emulator rather than of sekisho: direct TCP Cubic on each
//! lossy profile against the Mathis bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Profile, path};
use crate::report::{Goal, Series};

/// Figures, their units, and whether less is better.
pub(crate) mod metric {
    pub(crate) const BULK_DOWN: &str = "1 forward down";
    pub(crate) const BULK_UP: &str = "1 forward up";
    pub(crate) const BULK_4: &str = "4 forwards up";
    pub(crate) const PING_IDLE_P50: &str = "ping p50 idle";
    pub(crate) const PING_IDLE_P99: &str = "ping p99 idle";
    pub(crate) const PING_BULK_P50: &str = "ping p50 under bulk";
    pub(crate) const PING_BULK_P99: &str = "ping p99 under bulk";
    pub(crate) const NEW_FORWARD_P50: &str = "new forward to first byte p50";
    pub(crate) const START: &str = "client start to first byte";
    pub(crate) const CPU_RELAY: &str = "relay CPU per GB";

    /// Every figure in table order: name, unit, whether lower is better.
    pub(crate) const ALL: [(&str, &str, bool); 10] = [
        (BULK_DOWN, "Mbit/s", false),
        (BULK_UP, "Mbit/s", false),
        (BULK_4, "Mbit/s", false),
        (PING_IDLE_P50, "ms", true),
        (PING_IDLE_P99, "ms", true),
        (PING_BULK_P50, "ms", true),
        (PING_BULK_P99, "ms", true),
        (NEW_FORWARD_P50, "ms", true),
        (START, "ms", true),
        (CPU_RELAY, "CPU-s/GB", true),
    ];
}

/// Every sample: (profile, path, figure) → samples.
#[derive(Default)]
pub(crate) struct WanResults {
    series: BTreeMap<(String, String, String), Series>,
}

impl WanResults {
    pub(crate) fn add(&mut self, profile: &str, path: &str, metric: &str, value: f64) {
        let unit = metric::ALL
            .iter()
            .find(|(name, _, _)| *name == metric)
            .map_or("", |(_, unit, _)| *unit);
        let series = self
            .series
            .entry((profile.to_owned(), path.to_owned(), metric.to_owned()))
            .or_default();
        series.unit = unit;
        series.samples.push(value);
    }

    fn median(&self, profile: &str, path: &str, metric: &str) -> Option<f64> {
        self.series
            .get(&(profile.to_owned(), path.to_owned(), metric.to_owned()))
            .and_then(Series::median)
    }

    /// One table per profile: a row per figure, a column per path, medians (min–max).
    pub(crate) fn table(&self, profiles: &[Profile]) -> String {
        let mut out = String::new();
        for profile in profiles {
            let rate = profile
                .rate_mbit_s
                .map_or_else(|| "no rate limit".to_owned(), |r| format!("{r} Mbit/s"));
            let _ = writeln!(
                out,
                "\n### {}: {rate}, RTT {} ms, loss {} %{}\n",
                profile.name,
                profile.rtt.as_millis(),
                profile.loss_percent,
                if profile.jitter.is_zero() {
                    String::new()
                } else {
                    format!(", jitter up to {} ms", profile.jitter.as_millis())
                }
            );
            let paths: Vec<&str> = path::ALL
                .into_iter()
                .filter(|path| {
                    self.series
                        .keys()
                        .any(|(p, q, _)| p == profile.name && q == path)
                })
                .collect();
            let _ = writeln!(out, "| figure | {} |", paths.join(" | "));
            let _ = writeln!(out, "|---|{}", "---|".repeat(paths.len()));
            for (metric, unit, _) in metric::ALL {
                let cells: Vec<String> = paths
                    .iter()
                    .map(|path| {
                        self.series
                            .get(&(
                                profile.name.to_owned(),
                                (*path).to_owned(),
                                metric.to_owned(),
                            ))
                            .map_or_else(
                                || "—".to_owned(),
                                |s| s.show(if unit == "ms" { 0 } else { 1 }),
                            )
                    })
                    .collect();
                if cells.iter().all(|cell| cell == "—") {
                    continue;
                }
                let _ = writeln!(out, "| {metric}, {unit} | {} |", cells.join(" | "));
            }
            if let (Some(bound), Some(cubic)) = (
                profile.mathis_mbit_s(),
                self.median(profile.name, path::DIRECT_CUBIC, metric::BULK_DOWN),
            ) {
                let _ = writeln!(
                    out,
                    "\nEmulator check: direct TCP Cubic down {cubic:.1} Mbit/s against the Mathis bound {bound:.1} Mbit/s ({:.2}×).",
                    cubic / bound
                );
            }
        }
        out
    }

    /// The goals of issue #19 on `profiles` (module docs).
    pub(crate) fn goals(&self, profiles: &[Profile]) -> Vec<Goal> {
        let mut goals = Vec::new();
        for profile in profiles {
            let name = profile.name;
            let median = |path: &str, metric: &str| self.median(name, path, metric);
            for ours in path::OURS {
                for (metric, unit, lower_is_better) in metric::ALL {
                    let (Some(mine), Some(theirs)) =
                        (median(ours, metric), median(path::SSH_BBR, metric))
                    else {
                        continue;
                    };
                    let what = format!("{name}: {ours} {metric} against {}", path::SSH_BBR);
                    goals.push(if lower_is_better {
                        Goal::at_most(what, mine, theirs, unit)
                    } else {
                        Goal::at_least(what, mine, theirs, unit)
                    });
                }
                let best_direct = |metric: &str| {
                    if profile.loss_percent > 0.0 {
                        median(path::DIRECT_BBR, metric).map(|bbr| (bbr, "direct TCP BBR"))
                    } else {
                        match (
                            median(path::DIRECT_BBR, metric),
                            median(path::DIRECT_CUBIC, metric),
                        ) {
                            (Some(bbr), Some(cubic)) if cubic > bbr => {
                                Some((cubic, "direct TCP Cubic"))
                            }
                            (Some(bbr), _) => Some((bbr, "direct TCP BBR")),
                            (None, cubic) => cubic.map(|c| (c, "direct TCP Cubic")),
                        }
                    }
                };
                for metric in [metric::BULK_DOWN, metric::BULK_UP] {
                    if let (Some(mine), Some((direct, which))) =
                        (median(ours, metric), best_direct(metric))
                    {
                        goals.push(Goal::at_least(
                            format!("{name}: {ours} {metric} ≥ 0.9 × {which}"),
                            mine,
                            0.9 * direct,
                            "Mbit/s",
                        ));
                    }
                }
                if let (Some(busy), Some(idle)) = (
                    median(ours, metric::PING_BULK_P99),
                    median(ours, metric::PING_IDLE_P99),
                ) {
                    goals.push(Goal::at_most(
                        format!("{name}: {ours} ping p99 under bulk ≤ 2 × idle p99"),
                        busy,
                        2.0 * idle,
                        "ms",
                    ));
                }
                if let (Some(four), Some(direct)) = (
                    median(ours, metric::BULK_4),
                    median(path::DIRECT_BBR, metric::BULK_UP),
                ) {
                    goals.push(Goal::at_least(
                        format!("{name}: {ours} 4 forwards ≥ one direct TCP BBR flow up"),
                        four,
                        direct,
                        "Mbit/s",
                    ));
                }
            }
        }
        goals
    }

    /// The JSON document: settings, every series with its samples and summary, the goals.
    pub(crate) fn json(&self, settings: &Value, profiles: &[Profile]) -> Value {
        let series: Vec<Value> = self
            .series
            .iter()
            .map(|((profile, path, metric), series)| {
                json!({
                    "profile": profile,
                    "path": path,
                    "metric": metric,
                    "unit": series.unit,
                    "samples": series.samples,
                    "median": series.median(),
                    "min": series.min(),
                    "max": series.max(),
                })
            })
            .collect();
        let goals: Vec<Value> = self
            .goals(profiles)
            .iter()
            .map(|goal| {
                json!({"goal": goal.what, "measured": goal.measured, "limit": goal.limit, "unit": goal.unit, "met": goal.met})
            })
            .collect();
        json!({ "settings": settings, "series": series, "goals": goals })
    }
}
