//! The operator as users run it: its image (built here from the repository, test-env/image.sh)
//! installed with the Helm chart on a real one-node cluster (containerd, kubelet, kube-scheduler,
//! a CNI bridge), `image.pullPolicy=Never`. The pod becomes Ready through its own probes, talks to
//! the API server with the chart's ServiceAccount token through the `kubernetes` Service address,
//! reconciles Components against a nats-server on the node's bridge, rolls on `helm upgrade`,
//! hands its Lease over, and leaves the buckets behind on `helm uninstall`.
//!
//! Needs root (the node) and the images: run through test-env/test.sh, or
//! `eval "$(test-env/setup.sh)"; eval "$(test-env/operator-image.sh)"` first.

use crate::support;

use std::time::{Duration, Instant};

use support::helm_release::{CHART, Chart, HelmRelease, helm, kubectl, nats, wait_for};
use support::node_cluster;

/// The resident memory of a pod's container process, read from /proc on the node: the process
/// whose cgroup path names the container's id.
fn container_rss_kib(ns: &str, pod: &str) -> Option<u64> {
    let id = kubectl(&[
        "-n",
        ns,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    let id = id.trim().strip_prefix("containerd://")?.to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = entry.path();
        let Ok(cgroup) = std::fs::read_to_string(path.join("cgroup")) else {
            continue;
        };
        if !cgroup.contains(&id) {
            continue;
        }
        let status = std::fs::read_to_string(path.join("status")).ok()?;
        return status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok());
    }
    None
}

/// RFC 3339 timestamps of the API (second precision) to a number of seconds.
fn seconds(ts: &str) -> i64 {
    let date: jiff::Timestamp = ts.parse().unwrap_or_else(|e| panic!("timestamp {ts}: {e}"));
    date.as_second()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_runs_the_image_until_ready_and_uninstall_leaves_the_buckets() {
    let started = Instant::now();
    let release = HelmRelease::install("runs", &[]);
    let pods = release.wait_available(1);
    let pod = &pods[0];
    let install_to_ready = started.elapsed();

    // The pod runs the image built here, as the chart's hardened, non-root container.
    let spec: serde_json::Value = serde_json::from_str(&kubectl(&[
        "-n",
        &release.ns,
        "get",
        "pod",
        pod,
        "-o",
        "json",
    ]))
    .expect("pod JSON");
    assert_eq!(
        spec["spec"]["containers"][0]["image"],
        Chart::current().image()
    );
    assert_eq!(spec["spec"]["containers"][0]["imagePullPolicy"], "Never");
    assert_eq!(spec["status"]["containerStatuses"][0]["restartCount"], 0);
    let ready_at = spec["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(seconds)
        .expect("Ready condition time");
    let created = seconds(
        spec["metadata"]["creationTimestamp"]
            .as_str()
            .expect("created"),
    );
    // The ServiceAccount token the chart mounts is what the operator talks to the API server with.
    assert!(
        spec["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .is_some_and(|m| m
                .iter()
                .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")),
        "no ServiceAccount token mounted: {spec}"
    );
    let rss = container_rss_kib(&release.ns, pod);

    // A Component becomes Ready: the operator in the pod reached the API server (10.0.0.1:443)
    // and the nats-server on the bridge.
    let bucket = support::unique_bucket("node");
    release.component_ready("statestore", &bucket);
    let logs = kubectl(&["-n", &release.ns, "logs", pod]);
    assert!(
        logs.contains("statestore"),
        "the pod's log does not mention the Component:\n{logs}"
    );

    eprintln!(
        "figures: helm install to Deployment available {:.1?}; pod created to Ready {} s; operator RSS {} KiB",
        install_to_ready,
        ready_at - created,
        rss.map(|r| r.to_string())
            .unwrap_or_else(|| "unknown".into()),
    );

    // Data written to the bucket survives `helm uninstall`: the buckets are the users'.
    let js = support::jetstream(&nats().url()).await;
    let kv = js.get_key_value(&bucket).await.expect("the bucket exists");
    kv.put("app.key", "kept".into()).await.expect("put a key");
    helm(&[
        "uninstall",
        &release.name,
        "-n",
        &release.ns,
        "--wait",
        "--timeout=60s",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for(
        Duration::from_secs(60),
        "the operator's pods to be gone after helm uninstall",
        || {
            kubectl(&["-n", &release.ns, "get", "pods", "-o", "name"])
                .trim()
                .is_empty()
                .then_some(())
        },
        || release.describe(node_cluster()),
    );
    let kv = js
        .get_key_value(&bucket)
        .await
        .expect("the bucket is still there after helm uninstall");
    let value = kv.get("app.key").await.expect("read the key");
    assert_eq!(value.as_deref(), Some(&b"kept"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_rolls_the_pod_and_the_new_one_takes_over() {
    let release = HelmRelease::install("upgrade", &[]);
    let before = release.wait_available(1);
    release.component_ready("first", &support::unique_bucket("upgrade"));
    let cp = node_cluster();
    wait_for(
        Duration::from_secs(30),
        "the first pod to hold the Lease",
        || (release.lease_holder().as_deref() == Some(before[0].as_str())).then_some(()),
        || release.describe(cp),
    );

    let chart = Chart::current();
    helm(&[
        "upgrade",
        &release.name,
        CHART,
        "-n",
        &release.ns,
        "--reuse-values",
        "--set",
        &format!("image.repository={}", chart.repository),
        "--set-string",
        &format!("image.tag={}", chart.tag),
        "--set",
        "logLevel=debug",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let after = release.wait_available(1);
    assert_ne!(
        before, after,
        "helm upgrade of a value did not replace the pod"
    );
    wait_for(
        Duration::from_secs(60),
        "the new pod to hold the Lease",
        || (release.lease_holder().as_deref() == Some(after[0].as_str())).then_some(()),
        || release.describe(cp),
    );
    let env = kubectl(&[
        "-n",
        &release.ns,
        "get",
        "pod",
        &after[0],
        "-o",
        "jsonpath={.spec.containers[0].env[?(@.name==\"LOG_LEVEL\")].value}",
    ]);
    assert_eq!(env.trim(), "debug");
    // The new pod reconciles.
    release.component_ready("second", &support::unique_bucket("upgrade"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_hand_the_lease_over_when_the_leader_pod_is_deleted() {
    let release = HelmRelease::install("leader", &["replicas=2"]);
    let pods = release.wait_available(2);
    let cp = node_cluster();
    let leader = wait_for(
        Duration::from_secs(60),
        "one of the two pods to hold the Lease",
        || release.lease_holder().filter(|h| pods.contains(h)),
        || release.describe(cp),
    );
    let standby = pods
        .iter()
        .find(|p| **p != leader)
        .expect("two pods")
        .clone();
    release.component_ready("before", &support::unique_bucket("leader"));

    // The kubelet sends SIGTERM; the leader gives the Lease up on its way out, and another pod
    // takes it: the standby, or the ReplicaSet's replacement if it asks first (both are fair).
    let deleted = Instant::now();
    kubectl(&["-n", &release.ns, "delete", "pod", &leader, "--wait=false"]);
    let new_leader = wait_for(
        Duration::from_secs(60),
        "another pod of the release to hold the Lease",
        || {
            release
                .lease_holder()
                .filter(|h| *h != leader && release.live_pods().contains(h))
        },
        || release.describe(cp),
    );
    eprintln!(
        "figures: Lease handed over to the {} {:.1?} after the leader pod was deleted",
        if new_leader == standby {
            "standby"
        } else {
            "replacement pod"
        },
        deleted.elapsed()
    );
    // The new leader reconciles.
    release.component_ready("after", &support::unique_bucket("leader"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_stopped_by_the_kubelet_releases_its_lease() {
    let release = HelmRelease::install("lease", &[]);
    let pods = release.wait_available(1);
    let cp = node_cluster();
    wait_for(
        Duration::from_secs(30),
        "the pod to hold the Lease",
        || (release.lease_holder().as_deref() == Some(pods[0].as_str())).then_some(()),
        || release.describe(cp),
    );
    // No other replica to take the Lease: once the pod is gone, a held Lease would still name it
    // until it expired; a released one names nobody.
    kubectl(&[
        "-n",
        &release.ns,
        "scale",
        "deployment",
        &release.deployment(),
        "--replicas=0",
    ]);
    wait_for(
        Duration::from_secs(60),
        "the pod to be gone",
        || release.ready_pods().is_empty().then_some(()),
        || release.describe(cp),
    );
    wait_for(
        Duration::from_secs(30),
        "the Lease to be released",
        || release.lease_holder().is_none().then_some(()),
        || release.describe(cp),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_behind_its_service_refuses_a_broken_component() {
    let release = HelmRelease::install(
        "webhook",
        &["webhook.enabled=true", "webhook.failurePolicy=Fail"],
    );
    release.wait_available(1);
    let cp = node_cluster();
    // The operator adds its CA to the webhook configuration at start-up; until then the API
    // server cannot call it.
    let broken =
        support::component_yaml(&release.ns, "broken", &nats().url(), "bad.bucket name", "");
    let refused = wait_for(
        Duration::from_secs(60),
        "the webhook to answer (a refusal of the broken Component)",
        || match cp.kubectl(&["apply", "-f", "-"], Some(&broken)) {
            Err(e) if e.contains("denied the request") => Some(e),
            Err(e) if e.contains("failed calling webhook") => None,
            Err(e) => panic!("kubectl apply failed otherwise: {e}"),
            Ok(out) => panic!(
                "the broken Component was admitted: {out}\n{}",
                release.describe(cp)
            ),
        },
        || release.describe(cp),
    );
    assert!(
        refused.contains("InvalidBucketName"),
        "the refusal does not explain itself: {refused}"
    );
    // A good Component passes the same webhook.
    release.component_ready("good", &support::unique_bucket("webhook"));
}
