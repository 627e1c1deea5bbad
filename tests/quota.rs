//! Quotas per namespace in the admin's NatsServerPolicy (issue 28): a Component over its
//! namespace's quota is refused (`QuotaExceeded`, naming the limit and the usage) before any NATS
//! call, another namespace is unaffected, and a deletion in the namespace lets the waiting
//! Component through at once. What reaches NATS is measured by nats-server's own API audit
//! advisories, not by anything the operator reports.

use crate::support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::pubsub::JetStreamStream;
use kube::Api;
use support::advisories::Advisories;
use support::operator::Operator;
use support::{TestNamespace, control_plane, nats};

const READY: Duration = Duration::from_secs(90);
/// Long, so that what lets a waiting Component through is the deletion, not the drift check.
const RESYNC: &str = "120s";

fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        Operator::start(
            &control_plane().kubeconfig,
            &[
                "--server-policy",
                "enforce",
                "--resync-interval",
                RESYNC,
                "--max-backoff",
                "2s",
            ],
        )
    })
}

/// A policy that lets `namespace` use the test nats-server, with `quota` (YAML flow map).
fn policy(namespace: &str, quota: &str) -> String {
    format!(
        "apiVersion: jetstreamkv.io/v1alpha1\nkind: NatsServerPolicy\nmetadata:\n  name: {namespace}\nspec:\n  conditions:\n  - namespaces: [{namespace}]\n  servers: [{{host: 127.0.0.1, ports: [{}]}}]\n  quota: {quota}\n",
        nats().port()
    )
}

async fn ready(api: &Api<KeyValueBucket>, name: &str) -> Option<(String, String, String)> {
    let kvb = api.get_opt(name).await.ok().flatten()?;
    let c = kvb.condition("Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_reason(api: &Api<KeyValueBucket>, name: &str, reason: &str) -> String {
    support::eventually(
        READY,
        &format!("kvb/{name} Ready reason {reason}"),
        || async {
            ready(api, name)
                .await
                .filter(|(_, r, _)| r == reason)
                .map(|(_, _, m)| m)
        },
        async || {
            format!(
                "{:?}\n--- operator log:\n{}",
                ready(api, name).await,
                operator().log_tail()
            )
        },
    )
    .await
}

fn component(ns: &str, name: &str, bucket: &str, annotations: &str) -> String {
    support::component_yaml(ns, name, &nats().url(), bucket, annotations)
}

/// Two namespaces with quotas: in the first, the Component past its bucket count is refused and
/// nats-server audits no request for its bucket (while it audits the create of each admitted
/// one: the instrument sees creates); the second, with its own quota, is unaffected, and refuses
/// a storage type it does not allow. Deleting an admitted Component lets the refused one through
/// at once (the drift check is two minutes away).
#[tokio::test]
async fn a_component_over_its_namespace_quota_is_refused_with_nothing_sent() {
    operator();
    let client = support::client().await;
    let team_a = TestNamespace::new(&client, "quota-a").await;
    let team_b = TestNamespace::new(&client, "quota-b").await;
    control_plane().apply(&policy(
        &team_a.name,
        "{maxBuckets: 2, maxBytes: 3000, requireMaxBytes: true}",
    ));
    control_plane().apply(&policy(&team_b.name, "{maxBuckets: 2, storage: [file]}"));
    let (audit, _watcher) = Advisories::start(&nats().url()).await;
    let a: Api<KeyValueBucket> = Api::namespaced(client.clone(), &team_a.name);
    let b: Api<KeyValueBucket> = Api::namespaced(client.clone(), &team_b.name);
    let bytes = "jetstreamkv.io/max-bytes: \"1000\"";

    let buckets: Vec<String> = (1..=3)
        .map(|i| support::unique_bucket(&format!("quota{i}")))
        .collect();
    control_plane().apply(&component(&team_a.name, "a1", &buckets[0], bytes));
    wait_reason(&a, "a1", "BucketManaged").await;
    control_plane().apply(&component(&team_a.name, "a2", &buckets[1], bytes));
    wait_reason(&a, "a2", "BucketManaged").await;
    control_plane().apply(&component(&team_a.name, "a3", &buckets[2], bytes));
    let message = wait_reason(&a, "a3", "QuotaExceeded").await;
    assert!(
        message.contains("allows 2 buckets, and 2 are used"),
        "{message}"
    );
    // Without a size limit: refused for that, whatever the count.
    let unbounded = support::unique_bucket("unbounded");
    control_plane().apply(&component(&team_a.name, "a-unbounded", &unbounded, ""));
    let message = wait_reason(&a, "a-unbounded", "QuotaExceeded").await;
    assert!(message.contains("requires a size limit"), "{message}");

    // The other namespace has a quota of its own.
    let b1 = support::unique_bucket("quotab");
    control_plane().apply(&component(&team_b.name, "b1", &b1, ""));
    wait_reason(&b, "b1", "BucketManaged").await;
    let memory = support::unique_bucket("quotamem");
    control_plane().apply(&component(
        &team_b.name,
        "b-memory",
        &memory,
        "jetstreamkv.io/storage: memory",
    ));
    let message = wait_reason(&b, "b-memory", "QuotaExceeded").await;
    assert!(
        message.contains("allows file storage only, and this bucket asks for memory"),
        "{message}"
    );

    // A moment for any request to be audited, then: the admitted were created (the instrument
    // sees creates), the refused had no request at all.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kv = |bucket: &str| format!("KV_{bucket}");
    for admitted in [&buckets[0], &buckets[1], &b1] {
        audit.wait_for("CREATE", &kv(admitted), 1).await;
    }
    for refused in [&buckets[2], &unbounded, &memory] {
        assert_eq!(
            audit.naming(&kv(refused)),
            Vec::<String>::new(),
            "requests for the refused bucket {refused}"
        );
    }

    // Freeing a place: a1 deleted, a3 goes through at once (the drift check is minutes away).
    let deleted = Instant::now();
    control_plane()
        .kubectl(
            &[
                "-n",
                &team_a.name,
                "delete",
                "component",
                "a1",
                "--wait=false",
            ],
            None,
        )
        .unwrap();
    wait_reason(&a, "a3", "BucketManaged").await;
    let took = deleted.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "a3 waited {took:?} after a place was freed"
    );
    audit.wait_for("CREATE", &kv(&buckets[2]), 1).await;
    // Still refused: a-unbounded (its own fault), b-memory (another namespace's quota).
    assert_eq!(
        ready(&a, "a-unbounded").await.map(|r| r.1).as_deref(),
        Some("QuotaExceeded")
    );
    for name in [&team_a.name, &team_b.name] {
        let _ = control_plane().kubectl(&["delete", "natsserverpolicy", name], None);
    }
}

/// A pub/sub Component's stream counts against `maxStreams`; the refusal is the stream's own
/// (StreamAvailable), with nothing sent for it.
#[tokio::test]
async fn streams_count_against_the_stream_quota() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "quota-streams").await;
    control_plane().apply(&policy(&ns.name, "{maxStreams: 1, maxReplicas: 1}"));
    let (audit, _watcher) = Advisories::start(&nats().url()).await;
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    let pubsub = |name: &str| {
        support::fixtures::ComponentManifest::new(&ns.name, name)
            .type_("pubsub.jetstream")
            .item("natsURL", &nats().url())
            .annotation(
                "jetstreamkv.io/subjects",
                &format!("quota.{}.{name}", ns.name),
            )
            .yaml()
    };
    control_plane().apply(&pubsub("first"));
    support::wait_jss(&ns.name, "first", "StreamManaged", |s, r| {
        s == "True" && r == "StreamManaged"
    })
    .await;
    control_plane().apply(&pubsub("second"));
    let jss = support::wait_jss(&ns.name, "second", "QuotaExceeded", |_, r| {
        r == "QuotaExceeded"
    })
    .await;
    let conditions = jss["status"]["conditions"].as_array().unwrap();
    let available = conditions
        .iter()
        .find(|c| c["type"] == "StreamAvailable")
        .unwrap();
    assert_eq!(available["reason"], "QuotaExceeded", "{jss}");
    assert!(
        available["message"]
            .as_str()
            .unwrap()
            .contains("allows 1 streams, and 1 are used"),
        "{jss}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stream = |name: &str| format!("{}_{name}", ns.name);
    audit.wait_for("CREATE", &stream("first"), 1).await;
    assert_eq!(audit.naming(&stream("second")), Vec::<String>::new());
    assert!(api.get_opt("second").await.unwrap().is_some());
    let _ = control_plane().kubectl(&["delete", "natsserverpolicy", &ns.name], None);
}
