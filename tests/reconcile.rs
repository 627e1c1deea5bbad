//! The reconciler against a real API server and a real nats-server: what a user applying Dapr
//! Components sees on the KeyValueBucket, the Component and in NATS.

use crate::support;

use std::time::Duration;

use async_nats::jetstream::kv;
use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::dapr::Component;
use kube::Api;
use kube::api::DeleteParams;
use support::{
    RESYNC, TestNamespace, component_yaml as component, control_plane, nats, operator,
    stream_config_json as stream_config, unique_bucket, wait_condition, wait_kvb,
};

const READY: Duration = Duration::from_secs(60);

#[tokio::test]
async fn applied_component_gets_a_bucket_dapr_can_bind_to() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "ready").await;
    let bucket = unique_bucket("orders");
    control_plane().apply(&component(
        &ns.name,
        "statestore",
        &nats().url(),
        &bucket,
        "",
    ));
    wait_kvb(&ns.name, "statestore", "Ready", READY);

    // Dapr's check: stream KV_<bucket> exists with max_msgs_per_subject >= 1.
    let config = stream_config(&nats().url(), &bucket)
        .await
        .expect("the bucket exists");
    assert_eq!(config["name"], format!("KV_{bucket}"));
    assert_eq!(config["subjects"][0], format!("$KV.{bucket}.>"));
    assert_eq!(config["max_msgs_per_subject"], 1, "default history 1");
    assert_eq!(config["storage"], "file");
    assert_eq!(config["num_replicas"], 1);
    assert_eq!(
        config["metadata"]["jetstreamkv.io/component"],
        format!("{}/statestore", ns.name)
    );
    // And a Dapr-style client can use it as a KV store.
    let js = support::jetstream(&nats().url()).await;
    let store = js.get_key_value(&bucket).await.expect("bind as KV");
    store.put("k", "v".into()).await.expect("put");

    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    let kvb = kvbs.get("statestore").await.unwrap();
    assert_eq!(kvb.spec.bucket.as_deref(), Some(bucket.as_str()));
    assert_eq!(kvb.spec.auth.as_deref(), Some("none"));
    let status = kvb.status.clone().unwrap();
    let facts = status.bucket.expect("bucket facts in status");
    assert!(facts.managed);
    assert_eq!(facts.stream, format!("KV_{bucket}"));
    let ready = kvb.condition("Ready").unwrap();
    assert_eq!(ready.reason, "BucketManaged");
    assert_eq!(ready.observed_generation, kvb.metadata.generation);
    for detail in [
        "CredentialsResolved",
        "Connected",
        "BucketAvailable",
        "ConfigSynced",
    ] {
        assert_eq!(kvb.condition(detail).unwrap().status, "True", "{detail}");
    }
    // Owned by the Component, and summarised on it for tools that only see Components.
    let components: Api<Component> = Api::namespaced(client, &ns.name);
    let c = components.get("statestore").await.unwrap();
    let owner = &kvb.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(Some(owner.uid.clone()), c.metadata.uid);
    let annotations = c.metadata.annotations.unwrap();
    assert_eq!(annotations["jetstreamkv.io/ready"], "true");
    assert_eq!(annotations["jetstreamkv.io/reason"], "BucketManaged");
    // The printer columns a user sees.
    let table = control_plane()
        .kubectl(&["-n", &ns.name, "get", "kvb"], None)
        .unwrap();
    assert!(table.contains("BUCKET") && table.contains("READY") && table.contains("REASON"));
    assert!(table.contains(&bucket) && table.contains("True") && table.contains("BucketManaged"));
}

#[tokio::test]
async fn annotations_set_history_ttl_and_max_bytes() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "settings").await;
    let bucket = unique_bucket("tuned");
    control_plane().apply(&component(
        &ns.name,
        "tuned",
        &nats().url(),
        &bucket,
        r#""jetstreamkv.io/history": "5", "jetstreamkv.io/ttl": "1h", "jetstreamkv.io/max-bytes": "1Mi""#,
    ));
    wait_kvb(&ns.name, "tuned", "Ready", READY);
    let config = stream_config(&nats().url(), &bucket).await.unwrap();
    assert_eq!(config["max_msgs_per_subject"], 5);
    assert_eq!(config["max_age"], 3_600_000_000_000u64, "1h in nanoseconds");
    assert_eq!(config["max_bytes"], 1024 * 1024);
}

#[tokio::test]
async fn existing_bucket_is_verified_and_never_touched() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "verify").await;
    let bucket = unique_bucket("theirs");
    let js = support::jetstream(&nats().url()).await;
    js.create_key_value(kv::Config {
        bucket: bucket.clone(),
        history: 3,
        ..Default::default()
    })
    .await
    .expect("create the bucket outside the operator");
    let before = stream_config(&nats().url(), &bucket).await.unwrap();

    control_plane().apply(&component(&ns.name, "theirs", &nats().url(), &bucket, ""));
    wait_kvb(&ns.name, "theirs", "Ready", READY);
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    let kvb = kvbs.get("theirs").await.unwrap();
    assert_eq!(kvb.condition("Ready").unwrap().reason, "BucketVerified");
    assert!(!kvb.status.unwrap().bucket.unwrap().managed);
    assert_eq!(stream_config(&nats().url(), &bucket).await.unwrap(), before);

    // An explicit setting that differs is reported, and the bucket is still untouched.
    control_plane().apply(&component(
        &ns.name,
        "theirs",
        &nats().url(),
        &bucket,
        r#""jetstreamkv.io/history": "7""#,
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "theirs",
        "ConfigSynced",
        "False",
        "ConfigMismatch",
    )
    .await;
    let message = &kvb.condition("ConfigSynced").unwrap().message;
    assert!(message.contains("history 3 -> 7"), "{message}");
    assert_eq!(kvb.condition("Ready").unwrap().status, "False");
    tokio::time::sleep(RESYNC).await;
    assert_eq!(stream_config(&nats().url(), &bucket).await.unwrap(), before);
}

#[tokio::test]
async fn bad_manifests_get_their_own_reason_and_no_bucket() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "bad").await;
    let url = nats().url();
    let item = |name: &str, value: &str| format!("  - name: {name}\n    value: {value:?}\n");
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "no-url",
            String::new(),
            item("bucket", "b_nourl"),
            "MissingNatsURL",
        ),
        (
            "no-bucket",
            String::new(),
            item("natsURL", &url),
            "MissingBucket",
        ),
        (
            "bad-name",
            String::new(),
            item("natsURL", &url) + &item("bucket", "has.dot"),
            "InvalidBucketName",
        ),
        (
            "jwt-only",
            String::new(),
            item("natsURL", &url) + &item("bucket", "b_jwt") + &item("jwt", "eyJ"),
            "JwtWithoutSeed",
        ),
        (
            "dup",
            String::new(),
            item("natsURL", &url) + &item("natsurl", &url) + &item("bucket", "b_dup"),
            "DuplicateMetadata",
        ),
        (
            "template",
            String::new(),
            item("natsURL", &url) + &item("bucket", "b_{uuid}"),
            "UnresolvableTemplate",
        ),
        (
            "bad-annotation",
            r#""jetstreamkv.io/history": "many""#.into(),
            item("natsURL", &url) + &item("bucket", "b_annot"),
            "InvalidAnnotation",
        ),
    ];
    let mut manifest = String::new();
    for (name, annotations, metadata, _) in &cases {
        manifest += &format!(
            "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{{annotations}}}\nspec:\n  type: state.jetstream\n  version: v1\n  metadata:\n{metadata}",
            ns = ns.name
        );
    }
    manifest += &format!(
        "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: v2\n  namespace: {ns}\nspec:\n  type: state.jetstream\n  version: v2\n  metadata:\n{m}",
        ns = ns.name,
        m = item("natsURL", &url) + &item("bucket", "b_v2")
    );
    // A valid Component applied at the same time is not held back by the bad ones.
    let good = unique_bucket("good");
    manifest += "---\n";
    manifest += &component(&ns.name, "good", &url, &good, "");
    control_plane().apply(&manifest);

    let mut all = cases
        .iter()
        .map(|(n, _, _, r)| (*n, *r))
        .collect::<Vec<_>>();
    all.push(("v2", "UnsupportedVersion"));
    for (name, reason) in &all {
        let kvb = wait_condition(&client, &ns.name, name, "Ready", "False", reason).await;
        let ready = kvb.condition("Ready").unwrap();
        assert!(
            ready.message.len() > 20,
            "{name}: the message says what to fix: {}",
            ready.message
        );
        assert!(
            kvb.condition("Stalled").is_some_and(|c| c.status == "True"),
            "{name}: Stalled"
        );
    }
    wait_kvb(&ns.name, "good", "Ready", READY);
    let js = support::jetstream(&url).await;
    for bucket in ["b_nourl", "b_jwt", "b_dup", "b_annot", "b_v2"] {
        assert!(
            js.get_stream(format!("KV_{bucket}")).await.is_err(),
            "{bucket} was created"
        );
    }
    assert!(
        !operator().logs().contains("panicked"),
        "the operator panicked"
    );
}

#[tokio::test]
async fn unreachable_nats_backs_off_then_becomes_ready_when_it_starts() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "outage").await;
    let mut server = support::nats::NatsServer::start();
    let url = server.url();
    server.stop();
    let bucket = unique_bucket("later");
    control_plane().apply(&component(&ns.name, "later", &url, &bucket, ""));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "later",
        "Ready",
        "False",
        "NatsUnavailable",
    )
    .await;
    assert_eq!(kvb.condition("Connected").unwrap().status, "False");
    assert!(
        kvb.condition("Reconciling")
            .is_some_and(|c| c.status == "True")
    );
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    let generation = components.get("later").await.unwrap().metadata.generation;

    server.start_again();
    wait_kvb(&ns.name, "later", "Ready", READY);
    assert!(stream_config(&url, &bucket).await.is_some());
    assert_eq!(
        components.get("later").await.unwrap().metadata.generation,
        generation
    );
}

#[tokio::test]
async fn other_types_are_ignored_and_type_changes_and_deletes_clean_up() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "types").await;
    let url = nats().url();
    control_plane().apply(&format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: redis\n  namespace: {}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: localhost:6379\n",
        ns.name
    ));
    let bucket = unique_bucket("kept");
    control_plane().apply(&component(&ns.name, "changing", &url, &bucket, ""));
    wait_kvb(&ns.name, "changing", "Ready", READY);
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        kvbs.get_opt("redis").await.unwrap().is_none(),
        "a redis Component got a KeyValueBucket"
    );

    // Type changes away from state.jetstream: the KeyValueBucket goes, the bucket stays.
    control_plane()
        .kubectl(
            &[
                "-n",
                &ns.name,
                "patch",
                "component",
                "changing",
                "--type=merge",
                "-p",
                r#"{"spec":{"type":"state.redis"}}"#,
            ],
            None,
        )
        .unwrap();
    support::eventually(
        READY,
        "the KeyValueBucket of a Component that is no longer state.jetstream to go",
        || async { kvbs.get_opt("changing").await.ok()?.is_none().then_some(()) },
        async || support::describe(&ns.name, "kvb", "changing"),
    )
    .await;
    assert!(stream_config(&url, &bucket).await.is_some());

    // Deleting a Component removes its KeyValueBucket and keeps the bucket and its data.
    let kept = unique_bucket("deleted");
    control_plane().apply(&component(&ns.name, "deleted", &url, &kept, ""));
    wait_kvb(&ns.name, "deleted", "Ready", READY);
    let js = support::jetstream(&url).await;
    js.get_key_value(&kept)
        .await
        .unwrap()
        .put("k", "v".into())
        .await
        .unwrap();
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    components
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(
        READY,
        "the KeyValueBucket of a deleted Component to be garbage-collected",
        || async { kvbs.get_opt("deleted").await.ok()?.is_none().then_some(()) },
        async || support::describe(&ns.name, "kvb", "deleted"),
    )
    .await;
    let value = js
        .get_key_value(&kept)
        .await
        .unwrap()
        .get("k")
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some(&b"v"[..]), "the data survived");
}

#[tokio::test]
async fn a_keyvaluebucket_deleted_by_hand_comes_back() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "kvb-deleted").await;
    let bucket = unique_bucket("back");
    control_plane().apply(&component(&ns.name, "back", &nats().url(), &bucket, ""));
    wait_kvb(&ns.name, "back", "Ready", READY);
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    let uid = kvbs.get("back").await.unwrap().metadata.uid;
    kvbs.delete("back", &DeleteParams::default()).await.unwrap();
    support::eventually(
        READY,
        "the KeyValueBucket to be re-created at a resync",
        || async {
            let kvb = kvbs.get_opt("back").await.ok()??;
            (kvb.metadata.uid != uid && kvb.condition("Ready").is_some_and(|c| c.status == "True"))
                .then_some(())
        },
        async || support::describe(&ns.name, "kvb", "back"),
    )
    .await;
}
