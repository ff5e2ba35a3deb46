//! The operator process: waits for its CRDs, serves health and metrics, and elects one leader
//! among replicas.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::harness::{Operator, TestNamespace, eventually, http_get, install_crds, unique, wait_for};

#[tokio::test]
async fn exactly_one_replica_reconciles_and_another_takes_over_when_it_dies() {
    install_crds().await;
    let ns = TestNamespace::new("leader").await;
    // Only objects with this label: other tests' operators and objects are not involved.
    let shard = unique("shard");
    let selector = format!("atrium.dev/test-shard={shard}");
    let lease_args = [
        "--lease-namespace",
        ns.name.as_str(),
        "--lease-name",
        "atrium-test",
        "--lease-duration",
        "6",
        "--object-selector",
        selector.as_str(),
    ];
    let mut ops =
        [Operator::start(&format!("{shard}-a"), &lease_args), Operator::start(&format!("{shard}-b"), &lease_args)];

    let leaders = |ops: &[Operator; 2]| {
        let ports = [ops[0].http_port, ops[1].http_port];
        async move {
            let mut v = Vec::new();
            for p in ports {
                let (_, body) = http_get(p, "/metrics").await.unwrap_or_default();
                v.push(body.lines().any(|l| l == "atrium_leader 1"));
            }
            v
        }
    };
    let first = eventually("one leader", Duration::from_secs(60), || async {
        let l = leaders(&ops).await;
        (l.iter().filter(|x| **x).count() == 1).then(|| l.iter().position(|x| *x).unwrap())
    })
    .await;
    let standby = 1 - first;

    // Both are ready (a standby can take over), and only the leader reconciles a new object.
    for op in &ops {
        eventually("/readyz 200", Duration::from_secs(60), || async {
            (http_get(op.http_port, "/readyz").await?.0 == 200).then_some(())
        })
        .await;
    }
    let models: kube::Api<atrium::api::Model> = ns.api();
    let model = json!({
        "apiVersion": "atrium.dev/v1alpha1", "kind": "Model",
        "metadata": { "name": "iris-1", "labels": { "atrium.dev/test-shard": shard } },
        "spec": { "model": "iris", "version": 1, "source": { "storagePath": "runs/train/outputs" } }
    });
    models.patch("iris-1", &PatchParams::apply("atrium-tests"), &Patch::Apply(&model)).await.unwrap();
    let leader_reconciles = eventually("the leader to reconcile", Duration::from_secs(30), || async {
        ops[first].metric("atrium_reconciles_total").await.filter(|n| *n >= 1.0)
    })
    .await;
    assert!(leader_reconciles >= 1.0);
    assert_eq!(
        ops[standby].metric("atrium_reconciles_total").await.unwrap_or(0.0),
        0.0,
        "the standby does not reconcile"
    );

    // Kill the leader without a chance to release: the standby takes over once the lease expires.
    ops[first].kill();
    let killed = Instant::now();
    eventually("the standby to lead", Duration::from_secs(30), || async {
        ops[standby].metric("atrium_leader").await.filter(|v| *v == 1.0)
    })
    .await;
    let took = killed.elapsed();
    // Lease 6 s, plus at most one retry period (1.2 s) to notice expiry.
    assert!(took <= Duration::from_millis(7500), "takeover took {took:?}");
    let leases: kube::Api<Lease> = ns.api();
    let lease = wait_for(&leases, "atrium-test", Duration::from_secs(10), |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref()?.lease_transitions).is_some_and(|t| t >= 1)
    })
    .await
    .unwrap();
    assert!(lease.spec.unwrap().holder_identity.is_some());
}

#[tokio::test]
async fn serves_health_readiness_and_metrics() {
    // Without leader election and with a selector that matches nothing: this process only has
    // to come up, find the CRDs and sync its caches.
    let shard = unique("crdwait");
    let selector = format!("atrium.dev/test-shard={shard}");
    let op = Operator::start(&shard, &["--leader-elect=false", "--object-selector", selector.as_str()]);
    install_crds().await;
    eventually("/readyz 200 once the CRDs are installed", Duration::from_secs(60), || async {
        (http_get(op.http_port, "/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let (status, body) = http_get(op.http_port, "/healthz").await.unwrap();
    assert_eq!((status, body.trim()), (200, "ok"));
    let metrics = http_get(op.http_port, "/metrics").await.unwrap().1;
    assert!(metrics.lines().any(|l| l == "atrium_leader 1"), "without election this replica leads: {metrics}");
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text: {metrics}");
}
