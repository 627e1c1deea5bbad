//! The operator started against CRDs older than the binary (a field pruned), on the real API
//! server and nats-server: the kind whose CRD is outdated is not acted on (no bucket in NATS, no
//! KeyValueBucket), readiness fails, a log line and an Event name the missing field and the
//! fix; the other kind still works; applying the CRDs heals it without a restart (the positive
//! control). A NatsServerPolicy whose `requireTLS` was pruned never lets through a Component
//! the policy would refuse. One test: CRDs are cluster-wide.

use crate::support;

use std::time::Duration;

use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::policy::NatsServerPolicy;
use jetstream_kv_operator::schema::Crd;
use kube::Api;
use support::operator::Operator;
use support::{ComponentManifest, TestNamespace, control_plane, eventually, nats};

/// Applies `crd` as kubectl does for `crds/` (server-side, the same field manager), without the
/// field at `path` (under the first version's schema): an older CRD.
fn apply_pruned(mut crd: serde_json::Value, path: &[&str]) {
    for version in crd["spec"]["versions"].as_array_mut().unwrap() {
        let mut at = &mut version["schema"]["openAPIV3Schema"];
        let (last, parents) = path.split_last().unwrap();
        for p in parents {
            at = &mut at["properties"][*p];
        }
        at["properties"]
            .as_object_mut()
            .unwrap()
            .remove(*last)
            .expect("the field to prune");
    }
    control_plane()
        .kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&crd.to_string()),
        )
        .unwrap();
}

fn start(args: &[&str]) -> Operator {
    let mut all = vec!["--schema-check-interval", "1s", "--resync-interval", "4s"];
    all.extend_from_slice(args);
    Operator::start(&control_plane().kubeconfig, &all)
}

/// Waits for the operator's log to contain every one of `words` on one line.
async fn logged(operator: &Operator, words: &[&str]) -> String {
    eventually(
        Duration::from_secs(60),
        &format!("a log line with {words:?}"),
        || async {
            operator
                .logs()
                .lines()
                .find(|l| words.iter().all(|w| l.contains(w)))
                .map(str::to_owned)
        },
        async || operator.log_tail(),
    )
    .await
}

fn ready(operator: &Operator) -> bool {
    operator
        .http_get("/readyz")
        .is_some_and(|(status, _)| status == 200)
}

async fn stream_exists(url: &str, stream: &str) -> bool {
    support::jetstream(url)
        .await
        .get_stream(stream)
        .await
        .is_ok()
}

#[tokio::test]
async fn an_outdated_crd_stops_its_kind_and_a_pruned_policy_field_fails_closed() {
    let client = support::client().await;
    let url = nats().url();
    let ns = TestNamespace::new(&client, "schema").await;

    // 1. The KeyValueBucket CRD lacks status.plan.
    apply_pruned(
        serde_json::to_value(Crd::KeyValueBucket.needed()).unwrap(),
        &["status", "plan"],
    );
    let operator = start(&[]);
    let bucket = support::unique_bucket("schema");
    control_plane().apply(&support::component_yaml(
        &ns.name, "store", &url, &bucket, "",
    ));
    control_plane().apply(
        &ComponentManifest::new(&ns.name, "events")
            .type_("pubsub.jetstream")
            .item("natsURL", &url)
            .item("allowedTopics", "orders")
            .yaml(),
    );
    let line = logged(
        &operator,
        &[
            "keyvaluebuckets.jetstreamkv.io",
            "status.plan",
            "apply the operator's CRDs first",
        ],
    )
    .await;
    assert!(line.contains("ERROR"), "{line}");
    // The other kind is acted on.
    support::wait_jss(&ns.name, "events", "Ready=True", |s, _| s == "True").await;
    assert!(!ready(&operator), "ready with an outdated CRD");
    // Waited for, not read once: the Event may be written after what the test saw above.
    eventually(
        Duration::from_secs(30),
        "a CrdOutdated Event naming the field",
        || async {
            let events = control_plane()
                .kubectl(&["get", "events", "-A", "-o", "json"], None)
                .ok()?;
            (events.contains("CrdOutdated") && events.contains("lacks the field(s) status.plan"))
                .then_some(())
        },
        async || {
            control_plane()
                .kubectl(&["get", "events", "-A"], None)
                .unwrap_or_else(|e| e)
        },
    )
    .await;
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        kvbs.get_opt("store").await.unwrap().is_none(),
        "a KeyValueBucket was written"
    );
    assert!(
        !stream_exists(&url, &format!("KV_{bucket}")).await,
        "the bucket was created"
    );
    // The positive control: the CRDs applied, the same operator acts on the Component.
    control_plane().install_crds();
    support::wait_kvb_of(
        &operator,
        &ns.name,
        "store",
        "Ready",
        Duration::from_secs(60),
    );
    assert!(stream_exists(&url, &format!("KV_{bucket}")).await);
    eventually(
        Duration::from_secs(30),
        "readiness once the CRDs are current",
        || async { ready(&operator).then_some(()) },
        async || operator.log_tail(),
    )
    .await;
    operator.terminate();

    // 2. The NatsServerPolicy CRD lacks requireTLS: a policy asking for TLS loses the field.
    apply_pruned(
        serde_json::to_value(Crd::NatsServerPolicy.needed()).unwrap(),
        &["spec", "requireTLS"],
    );
    let host = url
        .trim_start_matches("nats://")
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let policy = format!(
        "apiVersion: jetstreamkv.io/v1beta1\nkind: NatsServerPolicy\nmetadata:\n  name: schema-{ns}\nspec:\n  conditions:\n  - namespaces: [{ns}]\n  servers: [{{host: \"{host}\"}}]\n  requireTLS: true\n",
        ns = ns.name
    );
    // As a tool that does not validate strictly applies it (Helm, kubectl --validate=warn).
    control_plane()
        .kubectl(&["apply", "--validate=warn", "-f", "-"], Some(&policy))
        .unwrap();
    let policies: Api<NatsServerPolicy> = Api::all(client.clone());
    let stored = policies.get(&format!("schema-{}", ns.name)).await.unwrap();
    assert!(!stored.spec.require_tls, "the API server pruned requireTLS");
    let operator = start(&["--server-policy", "enforce"]);
    let plain = support::unique_bucket("plain");
    control_plane().apply(&support::component_yaml(
        &ns.name, "plain", &url, &plain, "",
    ));
    logged(
        &operator,
        &[
            "natsserverpolicies.jetstreamkv.io",
            "spec.requireTLS",
            "apply the operator's CRDs first",
        ],
    )
    .await;
    // Several requeues of the Component pass; the policy as stored would allow it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!ready(&operator));
    assert!(
        !stream_exists(&url, &format!("KV_{plain}")).await,
        "a Component the policy refuses got its bucket"
    );
    assert!(kvbs.get_opt("plain").await.unwrap().is_none());
    // The upgrade done in order (docs/upgrade.md): the operator stopped, the CRDs applied, the
    // policy applied again (what was pruned from it is gone from the stored object), the
    // operator started: the policy's own refusal.
    operator.terminate();
    control_plane().install_crds();
    control_plane().apply(&policy);
    let stored = policies.get(&format!("schema-{}", ns.name)).await.unwrap();
    assert!(stored.spec.require_tls);
    let operator = start(&["--server-policy", "enforce"]);
    eventually(
        Duration::from_secs(60),
        "kvb/plain refused by the policy",
        || async {
            let kvb = kvbs.get_opt("plain").await.ok().flatten()?;
            let c = kvb.condition("Ready")?;
            (c.reason == "ServerNotAllowed").then_some(())
        },
        async || operator.log_tail(),
    )
    .await;
    assert!(!stream_exists(&url, &format!("KV_{plain}")).await);
    control_plane()
        .kubectl(
            &["delete", "natsserverpolicy", &format!("schema-{}", ns.name)],
            None,
        )
        .unwrap();
    operator.terminate();

    // 3. --apply-crds: the operator brings its outdated CRD up to date itself.
    apply_pruned(
        serde_json::to_value(Crd::KeyValueBucket.needed()).unwrap(),
        &["status", "plan"],
    );
    let operator = start(&["--apply-crds"]);
    let third = support::unique_bucket("applied");
    control_plane().apply(&support::component_yaml(
        &ns.name, "applied", &url, &third, "",
    ));
    support::wait_kvb_of(
        &operator,
        &ns.name,
        "applied",
        "Ready",
        Duration::from_secs(60),
    );
    let crd = control_plane()
        .kubectl(
            &["get", "crd", "keyvaluebuckets.jetstreamkv.io", "-o", "json"],
            None,
        )
        .unwrap();
    assert!(crd.contains("\"plan\""), "the CRD has status.plan again");
    assert!(
        !operator.logs().contains("older than this operator"),
        "{}",
        operator.log_tail()
    );
    // Back to the CRDs as crds/ has them, under kubectl's manager.
    control_plane().install_crds();
}
