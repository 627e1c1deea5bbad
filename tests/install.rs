//! Installing with Helm into the real API server, then running the operator binary with the
//! identity the chart gives it: the chart's RBAC is enough, and no more than enough. Also leader
//! election between two operator processes, health endpoints, metrics and graceful shutdown.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use support::operator::Operator;
use support::{TestNamespace, control_plane, nats};

const CHART: &str = "charts/jetstream-kv-operator";

fn helm(args: &[&str]) -> String {
    support::helm(&control_plane().kubeconfig, args).unwrap_or_else(|e| panic!("{e}"))
}

/// A kubeconfig that authenticates as a ServiceAccount with a token from `kubectl create token`,
/// as a pod of the Deployment would.
fn service_account_kubeconfig(namespace: &str, account: &str) -> PathBuf {
    let cp = control_plane();
    let token = cp
        .kubectl(
            &["-n", namespace, "create", "token", account, "--duration=1h"],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&cp.kubeconfig).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": cluster["server"].as_str().unwrap(),
            "certificate-authority-data": cluster["certificate-authority-data"].as_str().unwrap(),
        }}],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account, "namespace": namespace}}],
        "current-context": "c",
    });
    let path = cp.dir.join(format!("{namespace}-{account}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
    path
}

fn component(ns: &str, name: &str, bucket: &str) -> String {
    support::ComponentManifest::store(ns, name, &nats().url(), bucket).yaml()
}

fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    support::run_tool("kubectl", kubeconfig, args)
}

#[tokio::test]
async fn helm_install_gives_the_operator_enough_rbac_to_make_a_component_ready() {
    let client = support::client().await;
    let system = TestNamespace::new(&client, "jko-system").await;
    let apps = TestNamespace::new(&client, "apps").await;
    let release = format!("kvo{}", &support::random_suffix()[..4]);
    // The shared-cluster default: the server policy enforced, and the one-line common case
    // (one NATS server for everyone) allowing the test server.
    let allowed = format!("natsServerPolicy.servers={{127.0.0.1:{}}}", nats().port());
    let out = helm(&[
        "install",
        &release,
        CHART,
        "-n",
        &system.name,
        "--wait=false",
        "--set",
        &allowed,
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    let fullname = format!("{release}-jetstream-kv-operator");
    let metrics_service = format!("{fullname}-metrics");
    let lease_role = format!("{fullname}-leader-election");
    for (kind, name) in [
        ("deployment", fullname.as_str()),
        ("serviceaccount", fullname.as_str()),
        ("service", metrics_service.as_str()),
        ("role", lease_role.as_str()),
        ("rolebinding", lease_role.as_str()),
    ] {
        control_plane()
            .kubectl(&["-n", &system.name, "get", kind, name], None)
            .unwrap_or_else(|e| panic!("helm install did not create {kind}/{name}: {e}"));
    }
    control_plane()
        .kubectl(&["get", "clusterrole,clusterrolebinding", &fullname], None)
        .unwrap_or_else(|e| panic!("helm install did not create the cluster RBAC: {e}"));

    // The binary, outside the cluster, with the chart's ServiceAccount token and environment.
    let kubeconfig = service_account_kubeconfig(&system.name, &fullname);
    let operator = Operator::start_with_env(
        &kubeconfig,
        &[],
        &[
            ("LEADER_ELECTION", "true"),
            ("LEASE_NAME", &fullname),
            ("LEASE_NAMESPACE", &system.name),
            ("POD_NAME", "chart-identity"),
            ("SERVER_POLICY", "enforce"),
        ],
    );
    let bucket = format!("chart_{}", support::random_suffix());
    control_plane().apply(&component(&apps.name, "statestore", &bucket));
    wait_kvb_with(&apps.name, "statestore", &operator);
    // A refused request logs the API's `reason: "Forbidden"` (searching for "403" would match
    // timestamps and ids).
    assert!(
        !operator.logs().to_lowercase().contains("forbidden"),
        "a request was forbidden:\n{}",
        operator.logs()
    );
    operator.terminate();
    helm(&["uninstall", &release, "-n", &system.name]);
}

#[tokio::test]
async fn with_listed_namespaces_the_operator_cannot_read_secrets_elsewhere() {
    let client = support::client().await;
    let system = TestNamespace::new(&client, "jko-scoped").await;
    let watched = TestNamespace::new(&client, "watched").await;
    let other = TestNamespace::new(&client, "unwatched").await;
    let release = format!("kvs{}", &support::random_suffix()[..4]);
    helm(&[
        "install",
        &release,
        CHART,
        "-n",
        &system.name,
        "--set",
        &format!("watchNamespaces={{{}}}", watched.name),
    ]);
    let fullname = format!("{release}-jetstream-kv-operator");
    let subject = format!("system:serviceaccount:{}:{fullname}", system.name);
    // `kubectl auth can-i` prints yes or no, and exits 1 on no.
    let can = |ns: &str| {
        control_plane()
            .kubectl(
                &[
                    "auth", "can-i", "get", "secrets", "-n", ns, "--as", &subject,
                ],
                None,
            )
            .is_ok()
    };
    assert!(
        can(&watched.name),
        "cannot read Secrets in the watched namespace"
    );
    assert!(
        !can(&other.name),
        "can read Secrets in an unwatched namespace"
    );
    control_plane()
        .kubectl(
            &[
                "-n",
                &other.name,
                "create",
                "secret",
                "generic",
                "creds",
                "--from-literal=k=v",
            ],
            None,
        )
        .unwrap();
    let kubeconfig = service_account_kubeconfig(&system.name, &fullname);
    let refused = kubectl_as(&kubeconfig, &["-n", &other.name, "get", "secret", "creds"]);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("forbidden")),
        "reading a Secret in an unwatched namespace: {refused:?}"
    );

    // And the operator itself, scoped to the watched namespace, works with that identity.
    let operator = Operator::start_with_env(
        &kubeconfig,
        &[],
        &[
            ("WATCH_NAMESPACES", &watched.name),
            ("LEADER_ELECTION", "true"),
            ("LEASE_NAME", &fullname),
            ("LEASE_NAMESPACE", &system.name),
        ],
    );
    let bucket = format!("scoped_{}", support::random_suffix());
    control_plane().apply(&component(&watched.name, "statestore", &bucket));
    wait_kvb_with(&watched.name, "statestore", &operator);
    operator.terminate();
    helm(&["uninstall", &release, "-n", &system.name]);
}

async fn lease_holder(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn reconciles(op: &Operator) -> f64 {
    op.http_get("/metrics")
        .map(|(_, body)| support::fixtures::metric(&body, "jetstream_kv_reconciles_total"))
        .unwrap_or_default()
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_when_it_dies() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "election").await;
    let lease = "jko-election-test";
    let args = [
        "--leader-election",
        "--lease-duration",
        "6s",
        "--namespaces",
        ns.name.as_str(),
    ];
    let env = |id: &'static str| {
        [
            ("LEASE_NAME", lease),
            ("LEASE_NAMESPACE", "default"),
            ("POD_NAME", id),
        ]
    };
    let kubeconfig = &control_plane().kubeconfig;
    let first = Operator::start_with_env(kubeconfig, &args, &env("first"));
    support::eventually(
        Duration::from_secs(30),
        "the first operator to take the Lease",
        || async {
            (lease_holder(&client, "default", lease).await.as_deref() == Some("first"))
                .then_some(())
        },
        async || first.log_tail(),
    )
    .await;
    let second = Operator::start_with_env(kubeconfig, &args, &env("second"));
    // A standby is ready (so rollouts proceed) but does not reconcile.
    support::eventually(
        Duration::from_secs(30),
        "the standby to serve /readyz",
        || async {
            second
                .http_get("/readyz")
                .filter(|(code, _)| *code == 200)
                .map(|_| ())
        },
        async || second.log_tail(),
    )
    .await;
    let bucket = format!("lead_{}", support::random_suffix());
    control_plane().apply(&component(&ns.name, "before", &bucket));
    wait_kvb_with(&ns.name, "before", &first);
    assert!(reconciles(&first) > 0.0);
    assert_eq!(reconciles(&second), 0.0, "the standby reconciled");

    // The leader dies without releasing the Lease: the standby takes over after it expires.
    let killed = Instant::now();
    first.kill();
    support::eventually(
        Duration::from_secs(30),
        "the standby to take the Lease",
        || async {
            (lease_holder(&client, "default", lease).await.as_deref() == Some("second"))
                .then_some(())
        },
        async || second.log_tail(),
    )
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(6 + 4),
        "takeover took {takeover:?} with a 6 s lease"
    );
    let bucket = format!("after_{}", support::random_suffix());
    control_plane().apply(&component(&ns.name, "after", &bucket));
    wait_kvb_with(&ns.name, "after", &second);

    // SIGTERM: exits within 10 seconds and releases the Lease for the next one.
    let (took, status) = second.terminate();
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert_eq!(
        lease_holder(&client, "default", lease).await,
        None,
        "the Lease was not released"
    );
}

fn wait_kvb_with(ns: &str, name: &str, operator: &Operator) {
    support::wait_kvb_of(operator, ns, name, "Ready", Duration::from_secs(60));
}

#[tokio::test]
async fn readyz_waits_for_synced_caches_and_metrics_count_reconciles() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "health").await;
    // An identity with no permissions: the caches can never sync, so the operator is alive but
    // not ready.
    control_plane()
        .kubectl(
            &["-n", &ns.name, "create", "serviceaccount", "nobody"],
            None,
        )
        .unwrap();
    let nobody = service_account_kubeconfig(&ns.name, "nobody");
    let stuck = Operator::start(&nobody, &[]);
    support::eventually(
        Duration::from_secs(20),
        "/healthz to answer",
        || async {
            stuck
                .http_get("/healthz")
                .filter(|(c, _)| *c == 200)
                .map(|_| ())
        },
        async || stuck.log_tail(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = stuck.http_get("/readyz").expect("/readyz answers");
    assert_eq!(code, 503, "ready without synced caches: {body}");

    let operator = Operator::start(&control_plane().kubeconfig, &["--namespaces", &ns.name]);
    support::eventually(
        Duration::from_secs(30),
        "/readyz to pass once the caches are synced",
        || async {
            operator
                .http_get("/readyz")
                .filter(|(c, _)| *c == 200)
                .map(|_| ())
        },
        async || operator.log_tail(),
    )
    .await;
    let before = reconciles(&operator);
    let bucket = format!("metrics_{}", support::random_suffix());
    control_plane().apply(&component(&ns.name, "counted", &bucket));
    wait_kvb_with(&ns.name, "counted", &operator);
    let (_, metrics) = operator.http_get("/metrics").unwrap();
    assert!(reconciles(&operator) > before, "{metrics}");
    for family in [
        "jetstream_kv_reconcile_duration_seconds_bucket",
        "jetstream_kv_buckets{ready=\"true\"}",
        "jetstream_kv_nats_connections",
        "jetstream_kv_api_writes_total",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
    let (took, _) = operator.terminate();
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");
}
