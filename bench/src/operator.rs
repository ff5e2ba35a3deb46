//! The operator under test: a process started from the release binary with the ServiceAccount's
//! kubeconfig, its readiness and metrics over HTTP, and its memory and CPU from `/proc`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
    task::JoinHandle,
};

/// How the operator is started.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
    pub concurrency: u16,
    pub log_dir: PathBuf,
}

pub struct Operator {
    child: Child,
    pid: u32,
    port: u16,
    /// Peak resident memory since the last `take_peak`, in KiB, sampled every 100 ms.
    peak_kib: Arc<AtomicU64>,
    sampler: JoinHandle<()>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident memory of `pid` in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// CPU time (user + system) of `pid` in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').context("malformed /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// `GET path` on 127.0.0.1:`port`: the status code and body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((code, body))
}

/// The sum of a metric's samples whose series starts with `series` (a name, or a name and the
/// start of its labels, as in `atrium_reconciles_total{controller="modeldeployment"`).
pub fn metric_sum(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{') || series.contains('{'))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

impl Operator {
    /// Starts the operator (leader election on, as deployed), logs to `<log_dir>/<name>.log`.
    pub fn start(launch: &Launch, name: &str) -> anyhow::Result<Self> {
        let port = free_port()?;
        std::fs::create_dir_all(&launch.log_dir)?;
        let log = std::fs::File::create(launch.log_dir.join(format!("{name}.log")))?;
        let child = Command::new(&launch.binary)
            .arg(format!("--http-addr=127.0.0.1:{port}"))
            .arg(format!("--concurrency={}", launch.concurrency))
            .arg("--install-workspace-roles=false")
            .arg("--lease-namespace=atrium-system")
            .env("KUBECONFIG", &launch.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", launch.binary.display()))?;
        let pid = child.id().context("the operator exited at once")?;
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_kib.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                match rss_kib(pid) {
                    Ok(kib) => {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Self { child, pid, port, peak_kib, sampler })
    }

    /// Waits until `/readyz` answers 200: CRDs present, caches synced, leader.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while start.elapsed() < timeout {
            tick.tick().await;
            if let Some(status) = self.child.try_wait()? {
                bail!("the operator exited ({status}) before it was ready; see its log");
            }
            if matches!(http_get(self.port, "/readyz").await, Ok((200, _))) {
                return Ok(start.elapsed());
            }
        }
        bail!("the operator was not ready after {timeout:?}")
    }

    /// The operator's Prometheus metrics, as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        match http_get(self.port, "/metrics").await? {
            (200, body) => Ok(body),
            (code, _) => bail!("/metrics answered {code}"),
        }
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid)
    }

    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid)
    }

    /// Peak resident memory since the last call (or the start), in KiB.
    pub fn take_peak_kib(&self) -> u64 {
        let now = self.rss_kib().unwrap_or(0);
        self.peak_kib.swap(now, Ordering::Relaxed).max(now)
    }

    /// SIGTERM, then waits for the process to end (it releases its Lease on the way out).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.sampler.abort();
        let status = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid);
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the operator did not stop within 30 s of SIGTERM")
            }
        }
    }
}

/// Where a run's operator logs go.
pub fn log_dir(out: &Path) -> PathBuf {
    out.join("logs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_its_series() {
        let text = "# HELP atrium_reconciles_total x\n\
            atrium_reconciles_total{controller=\"modeldeployment\"} 12\n\
            atrium_reconciles_total{controller=\"model\"} 3\n\
            atrium_reconciles_total_other 100\n";
        assert_eq!(metric_sum(text, "atrium_reconciles_total"), 15.0);
        assert_eq!(metric_sum(text, "atrium_reconciles_total{controller=\"modeldeployment\""), 12.0);
        assert_eq!(metric_sum(text, "missing"), 0.0);
    }

    #[test]
    fn reads_this_process_from_proc() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
    }
}
