//! What a run measured (`results.json`) and the report made of it (`report.md`): the median over
//! trials of every figure, against the targets of the benchmark issue.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

use serde::Serialize;

use crate::{
    audit::Writes,
    burst::{Burst, Kind},
    stats::{median, percentile},
};

#[derive(Clone, Debug, Default, Serialize)]
pub struct BurstTrial {
    pub kind: &'static str,
    pub n: usize,
    pub operator_s: f64,
    pub operator_p50_ms: f64,
    pub operator_p99_ms: f64,
    pub oracle_s: Option<f64>,
    pub oracle_p50_ms: Option<f64>,
    pub oracle_p99_ms: Option<f64>,
    pub writes: Writes,
    pub operator_cpu_s: f64,
    pub operator_peak_kib: u64,
    pub children: usize,
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

impl BurstTrial {
    pub fn operator(k: Kind, n: usize, b: &Burst, writes: Writes, cpu_s: f64, peak_kib: u64, children: usize) -> Self {
        Self {
            kind: k.label(),
            n,
            operator_s: b.total.as_secs_f64(),
            operator_p50_ms: ms(percentile(&b.latencies, 50.0)),
            operator_p99_ms: ms(percentile(&b.latencies, 99.0)),
            writes,
            operator_cpu_s: cpu_s,
            operator_peak_kib: peak_kib,
            children,
            ..Default::default()
        }
    }

    pub fn set_oracle(&mut self, b: &Burst) {
        self.oracle_s = Some(b.total.as_secs_f64());
        self.oracle_p50_ms = Some(ms(percentile(&b.latencies, 50.0)));
        self.oracle_p99_ms = Some(ms(percentile(&b.latencies, 99.0)));
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SteadyTrial {
    pub objects: usize,
    pub seconds: u64,
    pub writes: Writes,
    pub cpu_percent: f64,
    pub rss_kib: u64,
    pub peak_kib: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RestartTrial {
    pub objects: usize,
    pub ready_s: f64,
    pub caught_up_s: f64,
    pub writes: Writes,
    pub rss_kib: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct LargeMemory {
    pub objects: usize,
    pub ready_s: f64,
    pub rss_kib: u64,
    pub peak_kib: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Trial {
    pub idle_kib: u64,
    pub bursts: Vec<BurstTrial>,
    pub steady: Option<SteadyTrial>,
    pub restart: Option<RestartTrial>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Results {
    pub machine: String,
    pub versions: String,
    pub concurrency: u16,
    /// Children per object, by kind.
    pub children: BTreeMap<String, usize>,
    pub trials: Vec<Trial>,
    pub large_memory: Option<LargeMemory>,
    pub minutes: f64,
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// The median over trials of `f`, skipping trials without the figure.
fn med<T>(items: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    median(&items.iter().filter_map(f).filter(|v| v.is_finite()).collect::<Vec<_>>())
}

fn all<T>(items: &[T], f: impl Fn(&T) -> Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    items.iter().filter_map(f).map(fmt).collect::<Vec<_>>().join(", ")
}

impl Results {
    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        std::fs::write(out.join("results.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(out.join("report.md"), self.markdown())?;
        Ok(())
    }

    fn bursts(&self, kind: &str, n: usize) -> Vec<&BurstTrial> {
        self.trials.iter().flat_map(|t| &t.bursts).filter(|b| b.kind == kind && b.n == n).collect()
    }

    /// The report: one table per scenario, medians over trials, every trial's value listed.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let trials = self.trials.len();
        let _ = writeln!(s, "Machine: {}. {}.", self.machine, self.versions);
        let _ = writeln!(
            s,
            "{trials} trial{}; every figure is the median over trials (each trial's value in brackets). \
             Operator concurrency {} reconciles per controller; the oracle creates {} objects' children at once. \
             Whole run: {:.0} min.\n",
            if trials == 1 { "" } else { "s" },
            self.concurrency,
            self.concurrency,
            self.minutes
        );

        let mut sizes: Vec<(&str, usize)> = self.trials.iter().flat_map(|t| &t.bursts).map(|b| (b.kind, b.n)).collect();
        sizes.sort();
        sizes.dedup();
        let _ = writeln!(s, "#### Bursts: time until all are Ready, against the oracle\n");
        let _ = writeln!(
            s,
            "| Objects | Operator | Oracle | Ratio (target ≤ 1.25) | Per object p50 / p99 | Oracle per object p50 / p99 |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (kind, n) in &sizes {
            let rows = self.bursts(kind, *n);
            let op = med(&rows, |r| Some(r.operator_s));
            let oracle = med(&rows, |r| r.oracle_s);
            let ratio = med(&rows, |r| r.oracle_s.map(|o| r.operator_s / o));
            let label = if *kind == Kind::ModelDeployment.label() { "ModelDeployments" } else { "ComputeClusters" };
            let _ = writeln!(
                s,
                "| {n} {label} | {:.1} s [{}] | {} | {} | {:.0} / {:.0} ms | {} |",
                op.unwrap_or(f64::NAN),
                all(&rows, |r| Some(r.operator_s), |v| format!("{v:.1}")),
                oracle.map_or("–".into(), |o| format!(
                    "{o:.1} s [{}]",
                    all(&rows, |r| r.oracle_s, |v| format!("{v:.1}"))
                )),
                ratio.map_or("–".into(), |r| format!(
                    "{r:.2}× [{}] {}",
                    all(&rows, |r| r.oracle_s.map(|o| r.operator_s / o), |v| format!("{v:.2}")),
                    met(r <= 1.25)
                )),
                med(&rows, |r| Some(r.operator_p50_ms)).unwrap_or(f64::NAN),
                med(&rows, |r| Some(r.operator_p99_ms)).unwrap_or(f64::NAN),
                match (med(&rows, |r| r.oracle_p50_ms), med(&rows, |r| r.oracle_p99_ms)) {
                    (Some(a), Some(b)) => format!("{a:.0} / {b:.0} ms"),
                    _ => "–".into(),
                },
            );
        }

        let _ = writeln!(s, "\n#### API cost: the operator's writes to reach Ready\n");
        let _ = writeln!(
            s,
            "| Objects | Writes per object (target ≤ children + 2) | 409 conflicts | Operator CPU | Operator peak RSS | Writes by resource (median trial) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for (kind, n) in &sizes {
            let rows = self.bursts(kind, *n);
            let per = med(&rows, |r| Some(r.writes.total as f64 / r.n as f64)).unwrap_or(f64::NAN);
            let children = rows.first().map_or(0, |r| r.children);
            let target = (children + 2) as f64;
            let by_resource = rows
                .iter()
                .min_by(|a, b| {
                    let d = |r: &&BurstTrial| (r.writes.total as f64 / r.n as f64 - per).abs();
                    d(a).total_cmp(&d(b))
                })
                .map(|r| {
                    r.writes
                        .by_resource
                        .iter()
                        .filter(|(k, _)| k.as_str() != "leases")
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let label = if *kind == Kind::ModelDeployment.label() { "ModelDeployments" } else { "ComputeClusters" };
            let _ = writeln!(
                s,
                "| {n} {label} | {per:.2} [{}] (target {target:.0}: {children} children + 2) {} | {:.0} [{}] | {:.1} s | {} | {by_resource} |",
                all(&rows, |r| Some(r.writes.total as f64 / r.n as f64), |v| format!("{v:.2}")),
                met(per <= target),
                med(&rows, |r| Some(r.writes.conflicts as f64)).unwrap_or(f64::NAN),
                all(&rows, |r| Some(r.writes.conflicts as f64), |v| format!("{v:.0}")),
                med(&rows, |r| Some(r.operator_cpu_s)).unwrap_or(f64::NAN),
                mib(med(&rows, |r| Some(r.operator_peak_kib as f64)).unwrap_or(f64::NAN)),
            );
        }

        let steady: Vec<&SteadyTrial> = self.trials.iter().filter_map(|t| t.steady.as_ref()).collect();
        if let Some(first) = steady.first() {
            let writes = med(&steady, |t| Some(t.writes.total as f64)).unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "\n#### Steady state: {} ModelDeployments, nothing changing, {} s\n",
                first.objects, first.seconds
            );
            let _ = writeln!(s, "| Figure | Value | Target |");
            let _ = writeln!(s, "|---|---|---|");
            let _ = writeln!(
                s,
                "| Writes (Lease renewals aside) | {writes:.0} [{}] | 0: {} |",
                all(&steady, |t| Some(t.writes.total as f64), |v| format!("{v:.0}")),
                met(writes == 0.0)
            );
            let _ = writeln!(
                s,
                "| Leader Lease renewals | {:.0} [{}] | |",
                med(&steady, |t| Some(t.writes.lease as f64)).unwrap_or(f64::NAN),
                all(&steady, |t| Some(t.writes.lease as f64), |v| format!("{v:.0}"))
            );
            let _ = writeln!(
                s,
                "| Operator CPU (of one core) | {:.2}% [{}] | |",
                med(&steady, |t| Some(t.cpu_percent)).unwrap_or(f64::NAN),
                all(&steady, |t| Some(t.cpu_percent), |v| format!("{v:.2}"))
            );
        }

        let restart: Vec<&RestartTrial> = self.trials.iter().filter_map(|t| t.restart.as_ref()).collect();
        if let Some(first) = restart.first() {
            let _ = writeln!(s, "\n#### Restart with {} existing ModelDeployments\n", first.objects);
            let _ = writeln!(s, "| Figure | Value |");
            let _ = writeln!(s, "|---|---|");
            let _ = writeln!(
                s,
                "| Start to ready (`/readyz`: CRDs, caches synced, leader) | {:.2} s [{}] |",
                med(&restart, |t| Some(t.ready_s)).unwrap_or(f64::NAN),
                all(&restart, |t| Some(t.ready_s), |v| format!("{v:.2}"))
            );
            let _ = writeln!(
                s,
                "| Start to every ModelDeployment reconciled once | {:.1} s [{}] |",
                med(&restart, |t| Some(t.caught_up_s)).unwrap_or(f64::NAN),
                all(&restart, |t| Some(t.caught_up_s), |v| format!("{v:.1}"))
            );
            let _ = writeln!(
                s,
                "| Writes (Lease aside; target 0) | {:.0} [{}] {} |",
                med(&restart, |t| Some(t.writes.total as f64)).unwrap_or(f64::NAN),
                all(&restart, |t| Some(t.writes.total as f64), |v| format!("{v:.0}")),
                met(restart.iter().all(|t| t.writes.total == 0))
            );
        }

        let _ = writeln!(s, "\n#### Memory (resident set)\n");
        let _ = writeln!(s, "| When | RSS | Target |");
        let _ = writeln!(s, "|---|---|---|");
        let idle = med(&self.trials, |t| Some(t.idle_kib as f64));
        if let Some(idle) = idle {
            let _ = writeln!(s, "| Idle, no objects | {} | |", mib(idle));
        }
        if !steady.is_empty() {
            let largest = steady[0].objects;
            let peak = self
                .trials
                .iter()
                .filter_map(|t| t.bursts.iter().filter(|b| b.n == largest).map(|b| b.operator_peak_kib).max())
                .map(|k| k as f64)
                .collect::<Vec<_>>();
            let rss = med(&steady, |t| Some(t.rss_kib as f64)).unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "| {largest} ModelDeployments, steady | {} | ≤ 32 MiB: {} |",
                mib(rss),
                met(rss <= 32.0 * 1024.0)
            );
            if let Some(p) = median(&peak) {
                let _ = writeln!(s, "| {largest} objects, peak during the burst | {} | |", mib(p));
            }
        }
        if let Some(first) = restart.first() {
            let rss = med(&restart, |t| Some(t.rss_kib as f64)).unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "| {} ModelDeployments, after a restart (once quiet) | {} [{}] | |",
                first.objects,
                mib(rss),
                all(&restart, |t| Some(t.rss_kib as f64 / 1024.0), |v| format!("{v:.1}"))
            );
        }
        if let Some(m) = &self.large_memory {
            let _ = writeln!(s, "| {} ModelDeployments, steady (one run) | {} | |", m.objects, mib(m.rss_kib as f64));
            let _ = writeln!(
                s,
                "| {} ModelDeployments, peak while they became Ready ({:.0} s) | {} | |",
                m.objects,
                m.ready_s,
                mib(m.peak_kib as f64)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst(kind: &'static str, n: usize, op: f64, oracle: f64, writes: u64) -> BurstTrial {
        BurstTrial {
            kind,
            n,
            operator_s: op,
            oracle_s: Some(oracle),
            writes: Writes { total: writes, ..Default::default() },
            children: 6,
            ..Default::default()
        }
    }

    #[test]
    fn the_report_gives_medians_and_judges_targets() {
        let results = Results {
            trials: vec![
                Trial { idle_kib: 8192, bursts: vec![burst("md", 100, 12.0, 10.0, 700)], ..Default::default() },
                Trial { idle_kib: 9216, bursts: vec![burst("md", 100, 14.0, 10.0, 900)], ..Default::default() },
                Trial { idle_kib: 10240, bursts: vec![burst("md", 100, 30.0, 10.0, 800)], ..Default::default() },
            ],
            ..Default::default()
        };
        let md = results.markdown();
        assert!(md.contains("| 100 ModelDeployments | 14.0 s [12.0, 14.0, 30.0] | 10.0 s"), "{md}");
        assert!(md.contains("1.40× [1.20, 1.40, 3.00] **missed**"), "{md}");
        assert!(md.contains("8.00 [7.00, 9.00, 8.00] (target 8: 6 children + 2) **met**"), "{md}");
        assert!(md.contains("| Idle, no objects | 9.0 MiB |"), "{md}");
    }
}
