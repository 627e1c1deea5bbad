//! Installing with Helm into the real API server, then running the operator binary with the
//! identity the chart gives it: the chart's RBAC is enough, and no more than enough. Also leader
//! election between two operator processes, health endpoints, metrics and graceful shutdown.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use support::forwarder::Forwarder;
use support::nats::NatsServer;
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

/// The operator's reconciles so far; fails when /metrics does not answer (a standby that
/// cannot be asked must not count as one that did nothing).
fn reconciles(op: &Operator) -> f64 {
    match op.http_get("/metrics") {
        Some((200, body)) => support::fixtures::metric(&body, "jetstream_kv_reconciles_total"),
        other => panic!("/metrics did not answer: {other:?}\n{}", op.log_tail()),
    }
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

/// The leader election flags of these tests: a 6 s Lease, a resync every second (so that a live
/// leader keeps asking nats-server), one namespace.
fn election_args(ns: &str) -> Vec<&str> {
    let flags = ["--leader-election", "--lease-duration", "6s"];
    let resync = ["--resync-interval", "1s", "--namespaces"];
    flags.into_iter().chain(resync).chain([ns]).collect()
}

async fn wait_for_holder(client: &kube::Client, lease: &str, holder: &str, op: &Operator) {
    support::eventually(
        Duration::from_secs(30),
        &format!("{holder} to hold the Lease"),
        || async {
            (lease_holder(client, "default", lease).await.as_deref() == Some(holder)).then_some(())
        },
        async || op.log_tail(),
    )
    .await;
}

/// Waits (at most `timeout`) for the operator to exit; returns when it was seen gone (looked
/// for every 20 ms).
async fn wait_for_exit(op: &Operator, timeout: Duration) -> SystemTime {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if op.exited().is_some() {
            return SystemTime::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the operator still runs after {timeout:?}:\n{}",
        op.log_tail()
    );
}

/// When the Lease, as the API server has it, expires: its renewTime plus its duration.
async fn lease_expiry(client: &kube::Client, lease: &str) -> SystemTime {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let spec = leases.get(lease).await.unwrap().spec.unwrap();
    let renewed = SystemTime::from(spec.renew_time.unwrap().0);
    renewed + Duration::from_secs(spec.lease_duration_seconds.unwrap() as u64)
}

/// A network partition: the leader loses the API server for longer than its Lease but still
/// reaches nats-server. By the time the Lease expires (when a standby may take it) it has stopped
/// asking nats-server anything (counted by nats-server, not by the operator), and exited; a
/// standby then takes over.
#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_its_lease_expires() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "cutoff").await;
    // A nats-server of this test's own: every request it counts is this operator's.
    let server = NatsServer::start();
    let lease = format!("jko-cutoff-{}", support::random_suffix());
    let cp = control_plane();
    let api: std::net::SocketAddr = cp
        .server
        .trim_start_matches("https://")
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", cp.server));
    let forwarder = Forwarder::start(api);
    let kubeconfig = cp.dir.join(format!("{}-via-forwarder.kubeconfig", ns.name));
    let admin = std::fs::read_to_string(&cp.kubeconfig).unwrap();
    assert!(admin.contains(&cp.server), "{admin}");
    let via = admin.replace(&cp.server, &format!("https://{}", forwarder.addr));
    std::fs::write(&kubeconfig, via).unwrap();
    let args = election_args(&ns.name);
    let env = |id: &'static str| {
        [
            ("LEASE_NAME", lease.as_str()),
            ("LEASE_NAMESPACE", "default"),
            ("POD_NAME", id),
        ]
    };
    let first = Operator::start_with_env(&kubeconfig, &args, &env("first"));
    wait_for_holder(&client, &lease, "first", &first).await;
    let store = |name: &str| {
        let bucket = format!("cut_{}", support::random_suffix());
        support::ComponentManifest::store(&ns.name, name, &server.url(), &bucket).yaml()
    };
    cp.apply(&store("before"));
    wait_kvb_with(&ns.name, "before", &first);
    // The instrument sees a live leader: its resyncs ask nats-server every second.
    let live = server.api_requests();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        server.api_requests() > live,
        "nats-server counted no request from a live leader in 3 s"
    );

    forwarder.cut();
    let cut = SystemTime::now();
    let counted = async {
        // A renewal in flight when the cut came has landed by now, or never will.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let expiry = lease_expiry(&client, &lease).await;
        let wait = expiry.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait + Duration::from_millis(200)).await;
        let at_expiry = server.api_requests();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(
            server.api_requests(),
            at_expiry,
            "the leader cut off from the API server asked nats-server after its Lease expired\n{}",
            first.log_tail()
        );
        expiry
    };
    let (exited, expiry) = tokio::join!(wait_for_exit(&first, Duration::from_secs(30)), counted);
    assert!(
        exited <= expiry,
        "exited {:?} after the Lease expired",
        exited.duration_since(expiry).unwrap_or_default()
    );
    assert!(
        first.exited().is_some_and(|s| !s.success()),
        "exit status {:?}",
        first.exited()
    );
    assert!(
        first.logs().contains("lost the leader Lease"),
        "{}",
        first.log_tail()
    );
    eprintln!(
        "cut off: exited {:?} after the cut, the Lease expired {:?} after it",
        exited.duration_since(cut).unwrap_or_default(),
        expiry.duration_since(cut).unwrap_or_default()
    );

    // A standby (with the API server in reach) takes the expired Lease and reconciles.
    let second = Operator::start_with_env(&cp.kubeconfig, &args, &env("second"));
    wait_for_holder(&client, &lease, "second", &second).await;
    cp.apply(&store("after"));
    wait_kvb_with(&ns.name, "after", &second);
}

/// Another holder writes the Lease (here: the standby's name, as after a renewal the leader
/// missed): the leader stops within the Lease's duration, and the standby, finding itself the
/// holder, reconciles.
#[tokio::test]
async fn a_leader_whose_lease_another_holder_takes_exits_and_the_holder_reconciles() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "taken").await;
    let lease = format!("jko-taken-{}", support::random_suffix());
    let args = election_args(&ns.name);
    let env = |id: &'static str| {
        [
            ("LEASE_NAME", lease.as_str()),
            ("LEASE_NAMESPACE", "default"),
            ("POD_NAME", id),
        ]
    };
    let kubeconfig = &control_plane().kubeconfig;
    let first = Operator::start_with_env(kubeconfig, &args, &env("first"));
    wait_for_holder(&client, &lease, "first", &first).await;
    let second = Operator::start_with_env(kubeconfig, &args, &env("second"));
    control_plane().apply(&component(
        &ns.name,
        "before",
        &format!("tk_{}", support::random_suffix()),
    ));
    wait_kvb_with(&ns.name, "before", &first);
    assert_eq!(reconciles(&second), 0.0, "the standby reconciled");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
    // A taker writes its own duration: 15 s, so that the standby named as the new holder has
    // time to notice (it polls) and renew, on a loaded machine too (with the leader's 6 s, the
    // standby once found 1.5 s left and exited before its first renewal was read back).
    let taken = serde_json::json!({
        "spec": {"holderIdentity": "second", "renewTime": now, "leaseDurationSeconds": 15}
    });
    leases
        .patch(&lease, &PatchParams::default(), &Patch::Merge(&taken))
        .await
        .unwrap();
    let written = SystemTime::now();
    let exited = wait_for_exit(&first, Duration::from_secs(10)).await;
    let took = exited.duration_since(written).unwrap_or_default();
    assert!(
        took <= Duration::from_secs(6),
        "the leader went on for {took:?} after another holder took its 6 s Lease"
    );
    assert!(
        first.logs().contains("lost the leader Lease"),
        "{}",
        first.log_tail()
    );
    eprintln!("taken: the leader exited {took:?} after the Lease was written");
    let bucket = format!("tk_{}", support::random_suffix());
    control_plane().apply(&component(&ns.name, "after", &bucket));
    wait_kvb_with(&ns.name, "after", &second);
    assert_eq!(
        lease_holder(&client, "default", &lease).await.as_deref(),
        Some("second")
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
