//! `atrium-bench`: the operator's benchmarks against a running control plane (`make bench`
//! starts one and calls this). Scenarios, in each trial:
//!
//! 1. bursts: N ModelDeployments (and, separately, N ComputeClusters with a standby instance)
//!    created at once; the time until all are Ready, and per object;
//! 2. the oracle: the same children created directly by a minimal client at the operator's
//!    concurrency; the ratio of the two times;
//! 3. API cost: the operator's writes per object (from the audit log), and 409 conflicts;
//! 4. steady state: the largest burst left alone; the operator's writes and CPU;
//! 5. restart with those objects: time until ready and caught up, and the writes it makes;
//! 6. memory: resident memory idle, during and after the largest burst, and (once, after the
//!    trials) with a larger number of objects.
//!
//! The operator runs from its release binary under a ServiceAccount (the chart's ClusterRole), so
//! API priority and fairness treats it as it would in a cluster; the oracle has a ServiceAccount
//! of its own with the same role.

mod audit;
mod burst;
mod operator;
mod report;
mod stats;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use atrium::api::{InstanceType, ModelDeployment, READY, instance_type::DEFAULT_INSTANCE_TYPE};
use audit::{AuditLog, Writes};
use burst::{Kind, Spec, Templates};
use clap::Parser;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::{
    Api, Client, Config,
    api::{ListParams, PostParams},
    config::KubeConfigOptions,
};
use operator::{Launch, Operator};
use report::{BurstTrial, LargeMemory, RestartTrial, Results, SteadyTrial, Trial};
use tracing::info;

#[derive(Parser, Debug)]
#[command(about = "Atrium operator benchmarks against a running control plane")]
struct Args {
    /// The operator's release binary.
    #[arg(long)]
    operator: PathBuf,
    /// Kubeconfig of the operator's ServiceAccount.
    #[arg(long)]
    operator_kubeconfig: PathBuf,
    /// The operator's user name, as the audit log records it.
    #[arg(long, default_value = "system:serviceaccount:atrium-system:atrium-operator")]
    operator_user: String,
    /// Kubeconfig of the oracle's ServiceAccount.
    #[arg(long)]
    oracle_kubeconfig: PathBuf,
    /// The API server's audit log.
    #[arg(long)]
    audit_log: PathBuf,
    /// A command that replaces the cluster with a fresh one (same kubeconfig and audit log paths),
    /// run before every burst: much faster than deleting what a burst made.
    #[arg(long)]
    reset: PathBuf,
    /// Where results, the report and operator logs go.
    #[arg(long, default_value = "target/bench/operator")]
    out: PathBuf,
    /// Burst sizes.
    #[arg(long, value_delimiter = ',', default_value = "100,300,1000")]
    sizes: Vec<usize>,
    /// What bursts are made of: md (ModelDeployments), cc (ComputeClusters).
    #[arg(long, value_delimiter = ',', default_value = "md,cc")]
    kinds: Vec<String>,
    /// Trials; the report gives the median of each figure.
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Length of the steady-state window.
    #[arg(long, default_value_t = 600)]
    steady_seconds: u64,
    /// Objects (ModelDeployments) for the large memory measurement after the trials; 0 skips it.
    #[arg(long, default_value_t = 5000)]
    memory_objects: usize,
    /// Reconciles per controller at once; the oracle creates this many objects' children at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u16,
    /// Create requests in flight when a burst is made.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// The longest one burst may take.
    #[arg(long, default_value_t = 3600)]
    timeout_seconds: u64,
    /// Skip the oracle (for a quick look at the operator alone; the report then has no ratios).
    #[arg(long)]
    no_oracle: bool,
    /// A line on the machine, for the report.
    #[arg(long, default_value = "")]
    machine: String,
    /// Versions (control plane, Rust), for the report.
    #[arg(long, default_value = "")]
    versions: String,
}

async fn client_from(path: &PathBuf) -> anyhow::Result<Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static("atrium-bench")));
    Ok(Client::try_from(config)?)
}

fn kind(name: &str) -> anyhow::Result<Kind> {
    match name {
        "md" => Ok(Kind::ModelDeployment),
        "cc" => Ok(Kind::ComputeCluster),
        other => anyhow::bail!("unknown kind {other:?}: md or cc"),
    }
}

/// Children the operator makes per object: what the oracle creates.
fn children(templates: &[(Kind, Templates)], k: Kind) -> usize {
    templates.iter().find(|(t, _)| *t == k).map_or(0, |(_, t)| t.children.len())
}

struct Bench {
    args: Args,
    admin: Client,
    oracle: Client,
    audit: AuditLog,
    launch: Launch,
    timeout: Duration,
}

impl Bench {
    /// A fresh cluster, and new clients for it.
    async fn reset(&mut self) -> anyhow::Result<()> {
        let status = tokio::process::Command::new(&self.args.reset).arg("up").status().await?;
        anyhow::ensure!(status.success(), "{} up failed ({status})", self.args.reset.display());
        self.admin = Client::try_default().await?;
        self.oracle = client_from(&self.args.oracle_kubeconfig).await?;
        self.audit = AuditLog::open(&self.args.audit_log)?;
        Ok(())
    }

    /// Waits until the operator has made no write (Lease renewals aside) for 10 s, at most 3
    /// minutes, then returns its writes since the audit mark.
    async fn quiet_writes(&self) -> anyhow::Result<Writes> {
        let start = Instant::now();
        let mut last = self.audit.since_mark(&self.args.operator_user)?;
        let mut still_since = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while still_since.elapsed() < Duration::from_secs(10) && start.elapsed() < Duration::from_secs(180) {
            tick.tick().await;
            let now = self.audit.since_mark(&self.args.operator_user)?;
            if now.total != last.total {
                still_since = Instant::now();
            }
            last = now;
        }
        Ok(last)
    }

    async fn start_operator(&self, name: &str) -> anyhow::Result<(Operator, Duration)> {
        let mut op = Operator::start(&self.launch, name)?;
        let ready = op.wait_ready(Duration::from_secs(300)).await?;
        Ok((op, ready))
    }

    /// Waits until the instance type the operator installs at start is Ready: on a cluster that
    /// is not brand new it has been for long, and objects created before would be measured
    /// waiting for it.
    async fn instance_type_ready(&self) -> anyhow::Result<()> {
        let api = Api::<InstanceType>::all(self.admin.clone());
        burst::wait(Duration::from_secs(60), "the default InstanceType to be Ready", || async {
            Ok(api.get_opt(DEFAULT_INSTANCE_TYPE).await?.is_some_and(|it| {
                it.status.as_ref().is_some_and(|s| atrium::runtime::conditions::is_true(&s.conditions, READY))
            }))
        })
        .await
    }

    async fn templates(&mut self, kinds: &[Kind]) -> anyhow::Result<Vec<(Kind, Templates)>> {
        self.reset().await?;
        let (op, _) = self.start_operator("capture").await?;
        let mut out = Vec::new();
        for &k in kinds {
            let ns = format!("bench-template-{}", k.label());
            burst::namespace(&self.admin, &ns).await?;
            out.push((k, burst::capture(&self.admin, k, &ns, Duration::from_secs(300)).await?));
        }
        op.stop().await?;
        Ok(out)
    }

    async fn trial(&mut self, t: usize, kinds: &[Kind], templates: &[(Kind, Templates)]) -> anyhow::Result<Trial> {
        let largest = *self.args.sizes.iter().max().context("no sizes")?;
        let mut trial = Trial::default();
        let sizes = self.args.sizes.clone();

        for &k in kinds {
            for &n in &sizes {
                self.reset().await?;
                let (op, ready) = self.start_operator(&format!("trial-{t}-{}-{n}", k.label())).await?;
                self.instance_type_ready().await?;
                info!(trial = t, kind = k.label(), n, ready_s = ready.as_secs_f64(), "operator ready");
                if trial.idle_kib == 0 {
                    // Idle: ready, no objects, start-up work (PriorityClasses, the default
                    // instance type) settled.
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    trial.idle_kib = op.rss_kib()?;
                }
                let ns = format!("bench-{}-{n}", k.label());
                burst::namespace(&self.admin, &ns).await?;
                self.audit.mark()?;
                let cpu0 = op.cpu_seconds()?;
                op.take_peak_kib();
                let spec =
                    Spec { kind: k, ns: &ns, n, concurrency: self.args.create_concurrency, timeout: self.timeout };
                let b = burst::operator_burst(&self.admin, &spec).await?;
                let writes = self.quiet_writes().await?;
                let cpu = op.cpu_seconds()? - cpu0;
                let peak = op.take_peak_kib();
                info!(kind = k.label(), n, total_s = b.total.as_secs_f64(), writes = writes.total, "operator burst");
                trial.bursts.push(BurstTrial::operator(k, n, &b, writes, cpu, peak, children(templates, k)));
                let op = if k == Kind::ModelDeployment && n == largest {
                    self.steady_and_restart(t, &mut trial, op, &ns, n).await?
                } else {
                    op
                };
                op.stop().await?;
            }
        }

        // The oracle, on a fresh cluster as the operator had.
        let oracle_kinds = if self.args.no_oracle { &[][..] } else { kinds };
        for &k in oracle_kinds {
            let Some((_, templates)) = templates.iter().find(|(tk, _)| *tk == k) else { continue };
            for &n in &sizes {
                self.reset().await?;
                self.install_priority_classes().await?;
                let ns = format!("bench-oracle-{}-{n}", k.label());
                burst::namespace(&self.admin, &ns).await?;
                let concurrency = usize::from(self.args.concurrency);
                let spec = Spec { kind: k, ns: &ns, n, concurrency, timeout: self.timeout };
                let b = burst::oracle_burst(&self.oracle, templates, &spec).await?;
                info!(kind = k.label(), n, total_s = b.total.as_secs_f64(), "oracle burst");
                if let Some(row) = trial.bursts.iter_mut().find(|r| r.kind == k.label() && r.n == n) {
                    row.set_oracle(&b);
                }
            }
        }
        Ok(trial)
    }

    /// What the operator installs at start and standby pods need, for the oracle (which runs
    /// without the operator).
    async fn install_priority_classes(&self) -> anyhow::Result<()> {
        let api = Api::<PriorityClass>::all(self.admin.clone());
        for pc in atrium::controller::compute_cluster::build::priority_classes() {
            api.create(&PostParams::default(), &pc).await.context("creating the PriorityClasses")?;
        }
        Ok(())
    }

    /// With `n` Ready ModelDeployments in `ns`: the steady window, then a restart.
    async fn steady_and_restart(
        &mut self,
        t: usize,
        trial: &mut Trial,
        op: Operator,
        ns: &str,
        n: usize,
    ) -> anyhow::Result<Operator> {
        self.audit.mark()?;
        let cpu0 = op.cpu_seconds()?;
        op.take_peak_kib();
        let window = Duration::from_secs(self.args.steady_seconds);
        tokio::time::sleep(window).await;
        let writes = self.audit.since_mark(&self.args.operator_user)?;
        let cpu = op.cpu_seconds()? - cpu0;
        trial.steady = Some(SteadyTrial {
            objects: n,
            seconds: window.as_secs(),
            writes,
            cpu_percent: 100.0 * cpu / window.as_secs_f64(),
            rss_kib: op.rss_kib()?,
            peak_kib: op.take_peak_kib(),
        });
        info!(trial = t, "steady state measured");

        op.stop().await?;
        self.audit.mark()?;
        let start = Instant::now();
        let (op, ready) = self.start_operator(&format!("trial-{t}-restart")).await?;
        let series = "atrium_reconciles_total{controller=\"modeldeployment\"";
        burst::wait(self.timeout, "the restarted operator to reconcile every ModelDeployment", || async {
            Ok(operator::metric_sum(&op.metrics().await?, series) >= n as f64)
        })
        .await?;
        let caught_up = start.elapsed();
        let writes = self.quiet_writes().await?;
        let listed = Api::<ModelDeployment>::namespaced(self.admin.clone(), ns).list(&ListParams::default()).await?;
        trial.restart = Some(RestartTrial {
            objects: listed.items.len(),
            ready_s: ready.as_secs_f64(),
            caught_up_s: caught_up.as_secs_f64(),
            writes,
            rss_kib: op.rss_kib()?,
        });
        info!(trial = t, "restart measured");
        Ok(op)
    }

    /// Memory with many objects: `memory_objects` ModelDeployments in namespaces of up to 1000,
    /// created at once; peak while they become Ready, and resident memory 30 s after.
    async fn large_memory(&mut self) -> anyhow::Result<LargeMemory> {
        let total = self.args.memory_objects;
        self.reset().await?;
        let (op, _) = self.start_operator("memory").await?;
        self.instance_type_ready().await?;
        op.take_peak_kib();
        let mut namespaces = Vec::new();
        let mut left = total;
        while left > 0 {
            let n = left.min(1000);
            let ns = format!("bench-memory-{}", namespaces.len());
            burst::namespace(&self.admin, &ns).await?;
            namespaces.push((ns, n));
            left -= n;
        }
        let start = Instant::now();
        let admin = &self.admin;
        let (concurrency, timeout) = (self.args.create_concurrency, self.timeout);
        let bursts = namespaces.iter().map(|(ns, n)| {
            let spec = Spec { kind: Kind::ModelDeployment, ns, n: *n, concurrency, timeout };
            async move { burst::operator_burst(admin, &spec).await }
        });
        futures::future::try_join_all(bursts).await?;
        let ready_s = start.elapsed().as_secs_f64();
        let peak_kib = op.take_peak_kib();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let result =
            LargeMemory { objects: total, ready_s, rss_kib: op.rss_kib()?, peak_kib: peak_kib.max(op.take_peak_kib()) };
        op.stop().await?;
        Ok(result)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    let kinds = args.kinds.iter().map(|k| kind(k)).collect::<anyhow::Result<Vec<_>>>()?;
    std::fs::create_dir_all(&args.out)?;
    let admin = Client::try_default().await.context("an admin client from KUBECONFIG")?;
    let oracle = client_from(&args.oracle_kubeconfig).await?;
    let audit = AuditLog::open(&args.audit_log)?;
    let launch = Launch {
        binary: args.operator.clone(),
        kubeconfig: args.operator_kubeconfig.clone(),
        concurrency: args.concurrency,
        log_dir: operator::log_dir(&args.out),
    };
    let timeout = Duration::from_secs(args.timeout_seconds);
    let mut bench = Bench { args, admin, oracle, audit, launch, timeout };

    let started = Instant::now();
    let templates = bench.templates(&kinds).await?;
    let mut results = Results {
        machine: bench.args.machine.clone(),
        versions: bench.args.versions.clone(),
        concurrency: bench.args.concurrency,
        children: templates.iter().map(|(k, t)| (k.label().to_owned(), t.children.len())).collect(),
        ..Default::default()
    };
    for t in 1..=bench.args.trials {
        let trial = bench.trial(t, &kinds, &templates).await.with_context(|| format!("trial {t}"))?;
        results.trials.push(trial);
        results.write(&bench.args.out)?;
    }
    if bench.args.memory_objects > 0 {
        results.large_memory = Some(bench.large_memory().await.context("the large memory measurement")?);
    }
    results.minutes = started.elapsed().as_secs_f64() / 60.0;
    results.write(&bench.args.out)?;
    println!("{}", results.markdown());
    Ok(())
}
