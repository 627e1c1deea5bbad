//! A shared cluster with the admin's NatsServerPolicy enforced (issue 13), and the fair share of
//! workers between namespaces. One operator for this binary, started as the chart starts it
//! (`--server-policy enforce`), with few workers so that sharing them shows.

use crate::support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jetstream_kv_operator::crd::KeyValueBucket;
use kube::Api;
use support::operator::Operator;
use support::{TestNamespace, control_plane, nats};

const READY: Duration = Duration::from_secs(60);
const CONCURRENCY: usize = 4;

fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            &control_plane().kubeconfig,
            &[
                "--server-policy",
                "enforce",
                "--concurrency",
                &CONCURRENCY.to_string(),
                "--nats-connect-timeout",
                "5s",
                "--resync-interval",
                "30s",
                "--max-backoff",
                "2s",
            ],
        )
    })
}

fn component(ns: &str, name: &str, url: &str, bucket: &str) -> String {
    support::component_yaml(ns, name, url, bucket, "")
}

/// A policy that lets exactly `namespace` use `servers` (each a ServerPattern as YAML flow).
fn policy(name: &str, namespace: &str, servers: &[String]) -> String {
    format!(
        "apiVersion: jetstreamkv.io/v1alpha1\nkind: NatsServerPolicy\nmetadata:\n  name: {name}\nspec:\n  conditions:\n  - namespaces: [{namespace}]\n  servers: [{}]\n",
        servers.join(", ")
    )
}

/// A listener that accepts and says nothing, counting connections.
async fn listener() -> (u16, std::sync::Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (port, accepted)
}

async fn ready_reason(api: &Api<KeyValueBucket>, name: &str) -> Option<(String, String, String)> {
    let kvb = api.get_opt(name).await.ok().flatten()?;
    let c = kvb.condition("Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_reason(
    api: &Api<KeyValueBucket>,
    name: &str,
    status: &str,
    reason: &str,
) -> (String, String, String) {
    support::eventually(
        READY,
        &format!("kvb/{name} Ready={status} {reason}"),
        || async {
            ready_reason(api, name)
                .await
                .filter(|(s, r, _)| s == status && r == reason)
        },
        async || {
            format!(
                "{:?}\n--- operator log:\n{}",
                ready_reason(api, name).await,
                operator().log_tail()
            )
        },
    )
    .await
}

/// Finding 5: a Component naming a server outside the policy gets ServerNotAllowed, and the
/// server (a listening socket) sees no connection; the same server for a namespace the policy
/// names is used. With no policy for a namespace, nothing is allowed.
#[tokio::test]
async fn servers_outside_the_policy_are_never_dialled() {
    operator();
    let client = support::client().await;
    let allowed = TestNamespace::new(&client, "policy-allowed").await;
    let other = TestNamespace::new(&client, "policy-other").await;
    let (forbidden_port, accepted) = listener().await;
    control_plane().apply(&policy(
        &allowed.name,
        &allowed.name,
        &[format!("{{host: 127.0.0.1, ports: [{}]}}", nats().port())],
    ));

    let ok = support::unique_bucket("allowed");
    let ns_ok: Api<KeyValueBucket> = Api::namespaced(client.clone(), &allowed.name);
    control_plane().apply(&component(&allowed.name, "ok", &nats().url(), &ok));
    wait_reason(&ns_ok, "ok", "True", "BucketManaged").await;

    // Another port on an allowed host, a name, and the allowed server from another namespace.
    control_plane().apply(&component(
        &allowed.name,
        "port",
        &format!("nats://127.0.0.1:{forbidden_port}"),
        &ok,
    ));
    control_plane().apply(&component(
        &allowed.name,
        "name",
        &format!("nats://localhost:{}", nats().port()),
        &ok,
    ));
    let ns_other: Api<KeyValueBucket> = Api::namespaced(client.clone(), &other.name);
    control_plane().apply(&component(&other.name, "elsewhere", &nats().url(), &ok));
    let (_, _, message) = wait_reason(&ns_ok, "port", "False", "ServerNotAllowed").await;
    assert!(
        message.contains(&format!("127.0.0.1:{forbidden_port}")),
        "{message}"
    );
    wait_reason(&ns_ok, "name", "False", "ServerNotAllowed").await;
    let (_, _, message) = wait_reason(&ns_other, "elsewhere", "False", "ServerNotAllowed").await;
    // The refusal says nothing of what other namespaces may reach.
    assert!(!message.contains(&allowed.name), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the operator connected to a server no policy allows"
    );
    let _ = control_plane().kubectl(&["delete", "natsserverpolicy", &allowed.name], None);
}

/// Fair share: one namespace with many Components whose server never answers (each reconcile
/// holds a worker for the whole 5 s connect deadline) does not delay another namespace's
/// Component. Without the share all four workers were taken for at least 5 s.
#[tokio::test]
async fn one_namespace_cannot_take_every_worker() {
    operator();
    let client = support::client().await;
    let noisy = TestNamespace::new(&client, "fair-noisy").await;
    let quiet = TestNamespace::new(&client, "fair-quiet").await;
    // Each noisy Component has a silent server of its own (so none waits on another's connect).
    let mut servers = Vec::new();
    let mut accepted = Vec::new();
    let mut patterns = Vec::new();
    for _ in 0..12 {
        let (port, count) = listener().await;
        servers.push(port);
        accepted.push(count);
        patterns.push(format!("{{host: 127.0.0.1, ports: [{port}]}}"));
    }
    control_plane().apply(&policy(&noisy.name, &noisy.name, &patterns));
    control_plane().apply(&policy(
        &quiet.name,
        &quiet.name,
        &[format!("{{host: 127.0.0.1, ports: [{}]}}", nats().port())],
    ));
    // Let the policies reach the operator's cache before the Components arrive.
    let ns_quiet: Api<KeyValueBucket> = Api::namespaced(client.clone(), &quiet.name);
    let warm = support::unique_bucket("warm");
    control_plane().apply(&component(&quiet.name, "warm", &nats().url(), &warm));
    wait_reason(&ns_quiet, "warm", "True", "BucketManaged").await;

    let mut manifest = String::new();
    for (i, port) in servers.iter().enumerate() {
        manifest += "---\n";
        manifest += &component(
            &noisy.name,
            &format!("slow-{i}"),
            &format!("nats://127.0.0.1:{port}"),
            &format!("slow{i}"),
        );
    }
    control_plane().apply(&manifest);
    // The noisy ones hold workers: their silent servers count the dials (a noisy Component
    // refused before dialling, for another reason, would hold none and prove nothing). Their
    // namespace's share is half the workers.
    let share = CONCURRENCY / 2;
    support::eventually(
        Duration::from_secs(20),
        "the noisy namespace's servers to be dialled",
        || async {
            let dialled: usize = accepted.iter().map(|a| a.load(Ordering::SeqCst)).sum();
            (dialled >= share).then_some(())
        },
        async || operator().log_tail(),
    )
    .await;
    let started = Instant::now();
    let bucket = support::unique_bucket("quiet");
    control_plane().apply(&component(&quiet.name, "quiet", &nats().url(), &bucket));
    wait_reason(&ns_quiet, "quiet", "True", "BucketManaged").await;
    let waited = started.elapsed();
    eprintln!(
        "the quiet namespace's Component was Ready after {waited:?} while 12 slow Components of another namespace were reconciled by {CONCURRENCY} workers"
    );
    assert!(
        waited < Duration::from_secs(4),
        "the quiet namespace waited {waited:?} behind the noisy one"
    );
    for name in [&noisy.name, &quiet.name] {
        let _ = control_plane().kubectl(&["delete", "natsserverpolicy", name], None);
    }
}
