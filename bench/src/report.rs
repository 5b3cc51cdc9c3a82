//! Samples, their medians and ranges, the printed table with sekisho's ratios to each
//! baseline, the goals, and the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::netns::LOOPBACK;

/// Every sample of one figure, on one network, for one path.
#[derive(Debug, Default, Clone)]
pub(crate) struct Series {
    pub(crate) unit: &'static str,
    pub(crate) samples: Vec<f64>,
}

impl Series {
    pub(crate) fn median(&self) -> Option<f64> {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        }
    }

    pub(crate) fn min(&self) -> Option<f64> {
        self.samples.iter().copied().min_by(f64::total_cmp)
    }

    pub(crate) fn max(&self) -> Option<f64> {
        self.samples.iter().copied().max_by(f64::total_cmp)
    }

    /// `median (min–max)`, with `digits` decimals.
    pub(crate) fn show(&self, digits: usize) -> String {
        match (self.median(), self.min(), self.max()) {
            (Some(median), Some(min), Some(max)) if self.samples.len() > 1 => {
                format!("{median:.digits$} ({min:.digits$}–{max:.digits$})")
            }
            (Some(median), _, _) => format!("{median:.digits$}"),
            _ => "—".to_owned(),
        }
    }
}

/// The p-th percentile (0–100) of `values` (nearest rank).
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Metrics of the path comparison (figures 1–3).
pub(crate) mod metric {
    pub(crate) const BULK_1: &str = "bulk_1_forward_gbit_s";
    pub(crate) const BULK_8: &str = "bulk_8_forwards_gbit_s";
    pub(crate) const CPU_RELAY: &str = "cpu_s_per_gb_relays";
    /// The relays' CPU in user space: protocol and cipher work.
    pub(crate) const CPU_RELAY_USER: &str = "cpu_s_per_gb_relays_user";
    /// The relays' CPU in the kernel: sockets, and on loopback the peer's receive too.
    pub(crate) const CPU_RELAY_KERNEL: &str = "cpu_s_per_gb_relays_kernel";
    pub(crate) const CPU_ALL: &str = "cpu_s_per_gb_all";
    pub(crate) const RTT_P50: &str = "rtt_p50_us";
    pub(crate) const RTT_P99: &str = "rtt_p99_us";
}

/// sekisho's paths, as named in the table: the defaults, and packets for a jumbo-frame path.
pub(crate) const SEKISHO: &str = "sekisho";
pub(crate) const SEKISHO_JUMBO: &str = "sekisho, 8952-byte packets";
/// sekisho over its second transport, TLS 1.3 on TCP (HTTP/2 streams).
pub(crate) const SEKISHO_TCP: &str = "sekisho over TLS/TCP";
const OURS: [&str; 3] = [SEKISHO, SEKISHO_JUMBO, SEKISHO_TCP];

/// Everything measured in one run.
#[derive(Default)]
pub(crate) struct Results {
    /// (network, path, metric) → samples.
    pub(crate) paths: BTreeMap<(String, String, String), Series>,
    /// The transports alone (figures 1–2 of one stream): (network, transport, metric) →
    /// samples.
    pub(crate) transports: BTreeMap<(String, String, String), Series>,
    /// Figures 4–7: name → samples.
    pub(crate) figures: BTreeMap<String, Series>,
    /// Networks that were skipped, and why.
    pub(crate) skipped: Vec<String>,
}

impl Results {
    pub(crate) fn add(
        &mut self,
        network: &str,
        path: &str,
        metric: &str,
        unit: &'static str,
        value: f64,
    ) {
        let series = self
            .paths
            .entry((network.to_owned(), path.to_owned(), metric.to_owned()))
            .or_default();
        series.unit = unit;
        series.samples.push(value);
    }

    pub(crate) fn add_transport(
        &mut self,
        network: &str,
        transport: &str,
        metric: &str,
        unit: &'static str,
        value: f64,
    ) {
        let series = self
            .transports
            .entry((network.to_owned(), transport.to_owned(), metric.to_owned()))
            .or_default();
        series.unit = unit;
        series.samples.push(value);
    }

    pub(crate) fn add_figure(&mut self, name: &str, unit: &'static str, value: f64) {
        let series = self.figures.entry(name.to_owned()).or_default();
        series.unit = unit;
        series.samples.push(value);
    }

    fn median(&self, network: &str, path: &str, metric: &str) -> Option<f64> {
        self.paths
            .get(&(network.to_owned(), path.to_owned(), metric.to_owned()))
            .and_then(Series::median)
    }

    fn networks(&self) -> Vec<String> {
        let mut networks: Vec<String> = self
            .paths
            .keys()
            .chain(self.transports.keys())
            .map(|k| k.0.clone())
            .collect();
        // Loopback first, as measured.
        networks.sort_by(|a, b| (a != LOOPBACK, a).cmp(&(b != LOOPBACK, b)));
        networks.dedup();
        networks
    }

    fn path_names(&self, network: &str) -> Vec<String> {
        let mut names = Vec::new();
        for (net, path, _) in self.paths.keys() {
            if net == network && !names.contains(path) {
                names.push(path.clone());
            }
        }
        // The table reads best with the baselines first and sekisho last.
        names.sort_by_key(|name| match name.as_str() {
            "direct" => 0,
            SEKISHO => 9,
            SEKISHO_JUMBO => 10,
            SEKISHO_TCP => 11,
            _ => 1,
        });
        names
    }

    /// The printed report: one table per network, ratios, figures 4–7, goals.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        for network in self.networks() {
            let _ = writeln!(out, "\n### {network}\n");
            let _ = writeln!(
                out,
                "| path | 1 forward Gbit/s | 8 forwards Gbit/s | CPU-s/GB relays | relays user / kernel | CPU-s/GB all | RTT p50 µs | RTT p99 µs | added p50 µs |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
            let direct_p50 = self.median(&network, "direct", metric::RTT_P50);
            for path in self.path_names(&network) {
                let cell = |metric: &str, digits| {
                    self.paths
                        .get(&(network.clone(), path.clone(), metric.to_owned()))
                        .map(|s| s.show(digits))
                        .unwrap_or_else(|| "—".to_owned())
                };
                let added = match (self.median(&network, &path, metric::RTT_P50), direct_p50) {
                    (Some(p50), Some(direct)) if path != "direct" => {
                        format!("+{:.0}", p50 - direct)
                    }
                    _ => "—".to_owned(),
                };
                let (relay_cpu, relay_split) = if path == "direct" {
                    ("—".to_owned(), "—".to_owned())
                } else {
                    let median = |metric| {
                        self.median(&network, &path, metric)
                            .map_or_else(|| "—".to_owned(), |m| format!("{m:.2}"))
                    };
                    (
                        cell(metric::CPU_RELAY, 2),
                        format!(
                            "{} / {}",
                            median(metric::CPU_RELAY_USER),
                            median(metric::CPU_RELAY_KERNEL)
                        ),
                    )
                };
                let _ = writeln!(
                    out,
                    "| {path} | {} | {} | {relay_cpu} | {relay_split} | {} | {} | {} | {added} |",
                    cell(metric::BULK_1, 2),
                    cell(metric::BULK_8, 2),
                    cell(metric::CPU_ALL, 2),
                    cell(metric::RTT_P50, 0),
                    cell(metric::RTT_P99, 0),
                );
            }
            let _ = writeln!(out);
            let ours_and_theirs = OURS.iter().flat_map(|ours| {
                self.path_names(&network)
                    .into_iter()
                    .filter(|path| !OURS.contains(&path.as_str()))
                    .map(move |path| (*ours, path))
            });
            for (ours, path) in ours_and_theirs {
                if self.median(&network, ours, metric::BULK_1).is_none() {
                    continue;
                }
                let ratio = |metric: &str| match (
                    self.median(&network, ours, metric),
                    self.median(&network, &path, metric),
                ) {
                    (Some(ours), Some(theirs)) if theirs > 0.0 => format!("{:.2}×", ours / theirs),
                    _ => "—".to_owned(),
                };
                let relay_split = if path == "direct" {
                    String::new()
                } else {
                    format!(
                        " (relays in user space {}, in the kernel {})",
                        ratio(metric::CPU_RELAY_USER),
                        ratio(metric::CPU_RELAY_KERNEL)
                    )
                };
                let _ = writeln!(
                    out,
                    "- {ours} / {path}: throughput 1 forward {}, 8 forwards {}, CPU per GB (all) {}{relay_split}",
                    ratio(metric::BULK_1),
                    ratio(metric::BULK_8),
                    ratio(metric::CPU_ALL),
                );
            }
            self.transports_table(&network, &mut out);
        }
        if !self.figures.is_empty() {
            let _ = writeln!(out, "\n| figure | median (min–max) | unit |\n|---|---|---|");
            for (name, series) in &self.figures {
                let _ = writeln!(out, "| {name} | {} | {} |", series.show(1), series.unit);
            }
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "\nSkipped: {skipped}");
        }
        out
    }

    /// The transports alone on `network`, with their CPU per GB against the relays of
    /// `ssh -L` aes128-gcm and of sekisho in the same run.
    fn transports_table(&self, network: &str, out: &mut String) {
        let transports: Vec<&String> = {
            let mut names: Vec<&String> = self
                .transports
                .keys()
                .filter(|(net, _, _)| net == network)
                .map(|(_, transport, _)| transport)
                .collect();
            names.dedup();
            names
        };
        if transports.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nThe transports alone (one stream between two processes; no TCP legs, no relay):\n"
        );
        let _ = writeln!(
            out,
            "| transport | Gbit/s | CPU-s/GB both ends | user / kernel |\n|---|---|---|---|"
        );
        let series = |transport: &str, metric: &str| {
            self.transports
                .get(&(network.to_owned(), transport.to_owned(), metric.to_owned()))
        };
        let median =
            |transport: &str, metric: &str| series(transport, metric).and_then(Series::median);
        let show = |value: Option<f64>| value.map_or_else(|| "—".to_owned(), |v| format!("{v:.2}"));
        for transport in &transports {
            let cell = |metric: &str| {
                series(transport, metric).map_or_else(|| "—".to_owned(), |s| s.show(2))
            };
            let _ = writeln!(
                out,
                "| {transport} | {} | {} | {} / {} |",
                cell(metric::BULK_1),
                cell(metric::CPU_RELAY),
                show(median(transport, metric::CPU_RELAY_USER)),
                show(median(transport, metric::CPU_RELAY_KERNEL)),
            );
        }
        let _ = writeln!(out);
        for relays in ["ssh -L aes128-gcm", SEKISHO] {
            let Some(theirs) = self.median(network, relays, metric::CPU_RELAY) else {
                continue;
            };
            for transport in &transports {
                if let Some(alone) = median(transport, metric::CPU_RELAY) {
                    let _ = writeln!(
                        out,
                        "- {transport} / {relays}'s relays (with their TCP legs): CPU per GB {:.2}×",
                        alone / theirs
                    );
                }
            }
        }
    }

    /// The goals of issue #8, each with the measured value and whether it is met.
    pub(crate) fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for (network, path) in self
            .networks()
            .into_iter()
            .flat_map(|network| OURS.map(|path| (network.clone(), path)))
        {
            let ssh = "ssh -L aes128-gcm";
            // The defaults are what the goals are about; other settings are named.
            let label = if path == SEKISHO {
                network.clone()
            } else {
                format!("{network}, {path}")
            };
            let median = |path: &str, metric: &str| self.median(&network, path, metric);
            if let (Some(ours), Some(theirs)) =
                (median(path, metric::BULK_1), median(ssh, metric::BULK_1))
            {
                goals.push(Goal::at_least(
                    format!("{label}: 1-forward throughput ≥ 1.2 × ssh -L aes128-gcm"),
                    ours / theirs,
                    1.2,
                    "×",
                ));
            }
            if let (Some(ours), Some(theirs)) =
                (median(path, metric::CPU_ALL), median(ssh, metric::CPU_ALL))
            {
                goals.push(Goal::at_most(
                    format!("{label}: CPU per GB below ssh -L aes128-gcm ({theirs:.2} s)"),
                    ours,
                    theirs,
                    "s/GB",
                ));
            }
            if let (Some(ours), Some(theirs), Some(direct)) = (
                median(path, metric::RTT_P50),
                median(ssh, metric::RTT_P50),
                median("direct", metric::RTT_P50),
            ) {
                goals.push(Goal::at_most(
                    format!(
                        "{label}: added round trip p50 ≤ ssh -L aes128-gcm's (+{:.0} µs)",
                        theirs - direct
                    ),
                    ours - direct,
                    theirs - direct,
                    "µs",
                ));
            }
        }
        let figure = |name: &str| self.figures.get(name).and_then(Series::median);
        if let Some(p50) = figure(crate::fleet::CONNECT_P50) {
            goals.push(Goal::at_most(
                "connect to first byte p50 ≤ 20 ms".into(),
                p50,
                20.0,
                "ms",
            ));
        }
        if let Some(rate) = figure(crate::fleet::FORWARD_OPENS) {
            goals.push(Goal::at_least(
                "≥ 2,000 audited forward opens per second".into(),
                rate,
                2000.0,
                "/s",
            ));
        }
        if let Some(mib) = figure(crate::fleet::IDLE_MEMORY) {
            goals.push(Goal::at_most(
                "broker memory ≤ 256 MiB with 1,000 idle sessions".into(),
                mib,
                256.0,
                "MiB",
            ));
        }
        if let (Some(under), Some(quiet)) = (
            figure(crate::preauth::UNDER_P95),
            figure(crate::preauth::QUIET_P95),
        ) {
            goals.push(Goal::at_most(
                format!(
                    "technician gets in under pre-auth load, p95 ≤ 3 s (nobody attacking: {quiet:.0} ms)"
                ),
                under,
                3000.0,
                "ms",
            ));
        }
        if let Some(p99) = figure(crate::webload::SLOW_P99) {
            goals.push(Goal::at_most(
                "approver's page p99 < 1 s with 1,000 slow connections held (open files 1,024)"
                    .into(),
                p99,
                1000.0,
                "ms",
            ));
        }
        if let Some(p99) = figure(crate::webload::LOGIN_P99) {
            goals.push(Goal::at_most(
                "approver's page p99 < 200 ms during 1,000 logins from 1,000 addresses".into(),
                p99,
                200.0,
                "ms",
            ));
        }
        if let Some(mib) = figure(crate::webload::LOGIN_RSS) {
            goals.push(Goal::at_most(
                "broker under 300 MB during 1,000 logins from 1,000 addresses".into(),
                mib,
                300.0,
                "MiB",
            ));
        }
        if let Some(rate) = figure(crate::fleet::SESSION_RATE) {
            goals.push(Goal::at_least(
                "≥ 300 new sessions per second".into(),
                rate,
                300.0,
                "/s",
            ));
        }
        goals
    }

    /// The JSON document: the machine, every series with its samples and summary, the goals.
    pub(crate) fn json(&self, machine: &Value, settings: &Value) -> Value {
        let summary = |series: &Series| {
            json!({
                "unit": series.unit,
                "samples": series.samples,
                "median": series.median(),
                "min": series.min(),
                "max": series.max(),
            })
        };
        // Each series with its key: network, what was measured (`what_key`), metric.
        let listed = |map: &BTreeMap<(String, String, String), Series>, what_key: &str| {
            map.iter()
                .map(|((network, what, metric), series)| {
                    let mut value = summary(series);
                    value["network"] = json!(network);
                    value[what_key] = json!(what);
                    value["metric"] = json!(metric);
                    value
                })
                .collect::<Vec<Value>>()
        };
        let paths = listed(&self.paths, "path");
        let transports = listed(&self.transports, "transport");
        let figures: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .map(|(name, series)| (name.clone(), summary(series)))
            .collect();
        let goals: Vec<Value> = self
            .goals()
            .iter()
            .map(|goal| {
                json!({"goal": goal.what, "measured": goal.measured, "limit": goal.limit, "unit": goal.unit, "met": goal.met})
            })
            .collect();
        json!({
            "machine": machine,
            "settings": settings,
            "paths": paths,
            "transports": transports,
            "figures": figures,
            "goals": goals,
            "skipped": self.skipped,
        })
    }
}

/// One goal and how the run fared.
pub(crate) struct Goal {
    pub(crate) what: String,
    pub(crate) measured: f64,
    pub(crate) limit: f64,
    pub(crate) unit: &'static str,
    pub(crate) met: bool,
}

impl Goal {
    pub(crate) fn at_least(what: String, measured: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            what,
            measured,
            limit,
            unit,
            met: measured >= limit,
        }
    }

    pub(crate) fn at_most(what: String, measured: f64, limit: f64, unit: &'static str) -> Goal {
        Goal {
            what,
            measured,
            limit,
            unit,
            met: measured <= limit,
        }
    }

    /// `met` / `NOT met`, the value, and how far it is from the limit.
    pub(crate) fn line(&self) -> String {
        let verdict = if self.met { "met" } else { "NOT met" };
        let gap = if self.limit != 0.0 {
            format!(
                " ({:+.0}% of the limit)",
                (self.measured / self.limit - 1.0) * 100.0
            )
        } else {
            String::new()
        };
        format!(
            "- {verdict}: {}: {:.2} {} against {:.2}{gap}",
            self.what, self.measured, self.unit, self.limit
        )
    }
}
