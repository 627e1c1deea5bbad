//! Bucket lifecycle against the real servers: updates of managed buckets, the data-loss guard,
//! fields NATS cannot change, adoption, drift, deletion policy and conflicting Components.

use crate::support;

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::dapr::Component;
use kube::Api;
use kube::api::DeleteParams;
use support::{
    RESYNC, TestNamespace, control_plane, nats, operator, store_yaml, unique_bucket,
    wait_condition, wait_event, wait_kvb,
};

const READY: Duration = Duration::from_secs(60);

async fn js() -> jetstream::Context {
    support::jetstream(&nats().url()).await
}

async fn stream_config(bucket: &str) -> Option<jetstream::stream::Config> {
    let mut stream = js().await.get_stream(format!("KV_{bucket}")).await.ok()?;
    Some(stream.info().await.ok()?.config.clone())
}

/// Every revision of every key, oldest first, as (key, value) pairs.
async fn history(bucket: &str) -> Vec<(String, String)> {
    support::history(&nats().url(), bucket).await
}

/// Waits until a Component is gone (its deletion finished).
async fn wait_gone(components: &Api<Component>, name: &str, what: &str) {
    support::eventually(
        READY,
        what,
        || async { components.get_opt(name).await.ok()?.is_none().then_some(()) },
        async || format!("{:?}", components.get_opt(name).await),
    )
    .await;
}

/// Waits until the operator has put its finalizer on a Component.
async fn wait_finalizer(components: &Api<Component>, name: &str) {
    support::eventually(
        READY,
        &format!("the operator's finalizer on component/{name}"),
        || async {
            let finalizers = components.get(name).await.ok()?.metadata.finalizers?;
            finalizers
                .iter()
                .any(|f| f == "jetstreamkv.io/bucket")
                .then_some(())
        },
        async || format!("{:?}", components.get_opt(name).await),
    )
    .await;
}

#[tokio::test]
async fn managed_buckets_follow_annotation_changes_with_an_event() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "update").await;
    let bucket = unique_bucket("grow");
    let url = nats().url();
    // TTL and size limits only grow here: lowering them (or adding one) would discard data.
    control_plane().apply(&store_yaml(
        &ns.name,
        "grow",
        &url,
        &bucket,
        &[("ttl", "1h"), ("max-bytes", "5Mi")],
    ));
    wait_kvb(&ns.name, "grow", "Ready", READY);
    control_plane().apply(&store_yaml(
        &ns.name,
        "grow",
        &url,
        &bucket,
        &[
            ("history", "5"),
            ("ttl", "2h"),
            ("max-bytes", "10Mi"),
            ("compression", "true"),
            ("description", "orders state"),
        ],
    ));
    let message = wait_event(&ns.name, "grow", "BucketUpdated").await;
    assert!(message.contains("history 1 -> 5"), "{message}");
    let config = stream_config(&bucket).await.unwrap();
    assert_eq!(config.max_messages_per_subject, 5);
    assert_eq!(config.max_age, Duration::from_secs(7200));
    assert_eq!(config.max_bytes, 10 * 1024 * 1024);
    assert_eq!(config.compression, Some(jetstream::stream::Compression::S2));
    assert_eq!(config.description.as_deref(), Some("orders state"));
    wait_kvb(&ns.name, "grow", "Ready", READY);
    let kvb = Api::<KeyValueBucket>::namespaced(client, &ns.name)
        .get("grow")
        .await
        .unwrap();
    let live = kvb.status.unwrap().bucket.unwrap().config;
    assert_eq!(
        Some(live),
        kvb.spec.config,
        "live settings shown next to the desired ones"
    );
}

#[tokio::test]
async fn changes_that_would_lose_data_are_refused_unless_allowed() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "dataloss").await;
    let bucket = unique_bucket("precious");
    let url = nats().url();
    control_plane().apply(&store_yaml(
        &ns.name,
        "precious",
        &url,
        &bucket,
        &[("history", "5")],
    ));
    wait_kvb(&ns.name, "precious", "Ready", READY);
    let store = js().await.get_key_value(&bucket).await.unwrap();
    for i in 0..4 {
        store.put("order", format!("v{i}").into()).await.unwrap();
    }
    store.put("other", "x".into()).await.unwrap();
    let before = history(&bucket).await;
    assert_eq!(before.len(), 5);

    control_plane().apply(&store_yaml(
        &ns.name,
        "precious",
        &url,
        &bucket,
        &[("history", "1")],
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "precious",
        "ConfigSynced",
        "False",
        "DataLossRefused",
    )
    .await;
    let message = &kvb.condition("ConfigSynced").unwrap().message;
    assert!(
        message.contains("history 5 -> 1") && message.contains("allow-data-loss"),
        "{message}"
    );
    tokio::time::sleep(RESYNC).await;
    assert_eq!(
        history(&bucket).await,
        before,
        "every key and history entry is still there"
    );
    assert_eq!(
        stream_config(&bucket)
            .await
            .unwrap()
            .max_messages_per_subject,
        5
    );

    control_plane().apply(&store_yaml(
        &ns.name,
        "precious",
        &url,
        &bucket,
        &[("history", "1"), ("allow-data-loss", "true")],
    ));
    wait_kvb(&ns.name, "precious", "Ready", READY);
    assert_eq!(
        stream_config(&bucket)
            .await
            .unwrap()
            .max_messages_per_subject,
        1
    );
}

#[tokio::test]
async fn fields_nats_cannot_change_are_reported_not_sent() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "immutable").await;
    // A server of its own: its JetStream API counters then count this test's requests only.
    let server = support::nats::NatsServer::start();
    let url = server.url();
    let bucket = unique_bucket("fixed");
    control_plane().apply(&store_yaml(&ns.name, "fixed", &url, &bucket, &[]));
    wait_kvb(&ns.name, "fixed", "Ready", READY);
    let api_errors = || server.jsz()["api"]["errors"].as_u64().unwrap_or_default();
    let before = api_errors();

    control_plane().apply(&store_yaml(
        &ns.name,
        "fixed",
        &url,
        &bucket,
        &[("storage", "memory")],
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "fixed",
        "ConfigSynced",
        "False",
        "ImmutableFieldChanged",
    )
    .await;
    assert!(
        kvb.condition("ConfigSynced")
            .unwrap()
            .message
            .contains("storage file -> memory")
    );
    control_plane().apply(&store_yaml(
        &ns.name,
        "fixed",
        &url,
        &bucket,
        &[("replicas", "3")],
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "fixed",
        "ConfigSynced",
        "False",
        "UnsupportedByServer",
    )
    .await;
    assert!(
        kvb.condition("ConfigSynced")
            .unwrap()
            .message
            .contains("replicas 1 -> 3")
    );
    tokio::time::sleep(RESYNC).await;
    // Sent to NATS, either change would have failed there and counted as an API error.
    assert_eq!(api_errors(), before, "a refused change was sent to NATS");
    let js = support::jetstream(&url).await;
    let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.storage, jetstream::stream::StorageType::File);
    assert_eq!(config.num_replicas, 1);
}

#[tokio::test]
async fn foreign_buckets_are_verified_by_default_and_adopted_on_request() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "adopt").await;
    let bucket = unique_bucket("foreign");
    let url = nats().url();
    js().await
        .create_key_value(kv::Config {
            bucket: bucket.clone(),
            history: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    control_plane().apply(&store_yaml(
        &ns.name,
        "foreign",
        &url,
        &bucket,
        &[("history", "4")],
    ));
    wait_condition(
        &client,
        &ns.name,
        "foreign",
        "ConfigSynced",
        "False",
        "ConfigMismatch",
    )
    .await;
    assert_eq!(
        stream_config(&bucket)
            .await
            .unwrap()
            .max_messages_per_subject,
        2
    );

    control_plane().apply(&store_yaml(
        &ns.name,
        "foreign",
        &url,
        &bucket,
        &[("history", "4"), ("on-existing", "adopt")],
    ));
    wait_event(&ns.name, "foreign", "BucketAdopted").await;
    wait_kvb(&ns.name, "foreign", "Ready", READY);
    let config = stream_config(&bucket).await.unwrap();
    assert_eq!(config.max_messages_per_subject, 4);
    assert_eq!(
        config.metadata["jetstreamkv.io/component"],
        format!("{}/foreign", ns.name)
    );
    let kvb = Api::<KeyValueBucket>::namespaced(client, &ns.name)
        .get("foreign")
        .await
        .unwrap();
    assert_eq!(kvb.condition("Ready").unwrap().reason, "BucketManaged");
}

#[tokio::test]
async fn drift_is_restored_deleted_buckets_recreated_and_missing_foreign_ones_reported() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "drift").await;
    let url = nats().url();
    let bucket = unique_bucket("drifty");
    control_plane().apply(&store_yaml(
        &ns.name,
        "drifty",
        &url,
        &bucket,
        &[("history", "5")],
    ));
    wait_kvb(&ns.name, "drifty", "Ready", READY);

    // Someone lowers the history with the NATS API: restored at the next resync, with an Event.
    // (Raising it behind our back would be refused on the way back: that would discard data.)
    let mut config = stream_config(&bucket).await.unwrap();
    config.max_messages_per_subject = 2;
    js().await.update_stream(config).await.unwrap();
    let message = wait_event(&ns.name, "drifty", "ConfigDrift").await;
    assert!(message.contains("history 2 -> 5"), "{message}");
    assert_eq!(
        stream_config(&bucket)
            .await
            .unwrap()
            .max_messages_per_subject,
        5
    );

    // Someone deletes it: recreated, with a Warning.
    js().await
        .delete_stream(format!("KV_{bucket}"))
        .await
        .unwrap();
    wait_event(&ns.name, "drifty", "BucketRecreated").await;
    assert!(stream_config(&bucket).await.is_some());

    // A bucket the operator only verifies disappears: reported, not recreated.
    let foreign = unique_bucket("gone");
    js().await
        .create_key_value(kv::Config {
            bucket: foreign.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    control_plane().apply(&store_yaml(&ns.name, "gone", &url, &foreign, &[]));
    wait_kvb(&ns.name, "gone", "Ready", READY);
    js().await
        .delete_stream(format!("KV_{foreign}"))
        .await
        .unwrap();
    wait_condition(&client, &ns.name, "gone", "Ready", "False", "BucketMissing").await;
    assert!(stream_config(&foreign).await.is_none());
}

#[tokio::test]
async fn deletion_retains_by_default_and_deletes_only_what_is_safe() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "deletion").await;
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    let url = nats().url();

    // Default: retain, and every key survives.
    let kept = unique_bucket("kept");
    control_plane().apply(&store_yaml(&ns.name, "kept", &url, &kept, &[]));
    wait_kvb(&ns.name, "kept", "Ready", READY);
    js().await
        .get_key_value(&kept)
        .await
        .unwrap()
        .put("k", "v".into())
        .await
        .unwrap();
    components
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&components, "kept", "the Component to be gone").await;
    assert_eq!(history(&kept).await, [("k".to_string(), "v".to_string())]);

    // delete: a finalizer, and the bucket goes with the Component.
    let doomed = unique_bucket("doomed");
    control_plane().apply(&store_yaml(
        &ns.name,
        "doomed",
        &url,
        &doomed,
        &[("deletion-policy", "delete")],
    ));
    wait_kvb(&ns.name, "doomed", "Ready", READY);
    wait_finalizer(&components, "doomed").await;
    components
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&components, "doomed", "the Component to be gone").await;
    assert!(
        stream_config(&doomed).await.is_none(),
        "the bucket was not deleted"
    );

    // delete, but another Component (another namespace) uses the same bucket: kept, and said why.
    let other_ns = TestNamespace::new(&client, "deletion-other").await;
    let shared = unique_bucket("shared");
    control_plane().apply(&store_yaml(
        &ns.name,
        "owner",
        &url,
        &shared,
        &[("deletion-policy", "delete")],
    ));
    wait_kvb(&ns.name, "owner", "Ready", READY);
    control_plane().apply(&store_yaml(
        &other_ns.name,
        "user",
        &url,
        &shared,
        &[("deletion-policy", "delete")],
    ));
    wait_kvb(&other_ns.name, "user", "Ready", READY);
    components
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    let message = wait_event(&ns.name, "owner", "BucketRetained").await;
    // Counted, not named: the owner's Events do not name other namespaces' Components.
    assert!(
        message.contains("1 Component(s) in other namespaces") && !message.contains(&other_ns.name),
        "{message}"
    );
    assert!(stream_config(&shared).await.is_some());
}

#[tokio::test]
async fn deletion_waits_for_nats_and_the_annotation_can_release_it() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "deletion-wait").await;
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    let mut server = support::nats::NatsServer::start();
    let url = server.url();
    let bucket = unique_bucket("waiting");
    control_plane().apply(&store_yaml(
        &ns.name,
        "waiting",
        &url,
        &bucket,
        &[("deletion-policy", "delete")],
    ));
    wait_kvb(&ns.name, "waiting", "Ready", READY);
    wait_finalizer(&components, "waiting").await;

    server.stop();
    components
        .delete("waiting", &DeleteParams::default())
        .await
        .unwrap();
    let kvb = wait_condition(
        &client,
        &ns.name,
        "waiting",
        "Ready",
        "False",
        "DeletionPending",
    )
    .await;
    assert!(
        kvb.condition("Ready")
            .unwrap()
            .message
            .contains("Remove the deletion-policy annotation")
    );
    server.start_again();
    wait_gone(
        &components,
        "waiting",
        "the deletion to finish once NATS is back",
    )
    .await;
    let js = support::jetstream(&url).await;
    assert!(
        js.get_stream(format!("KV_{bucket}")).await.is_err(),
        "the bucket was not deleted"
    );

    // NATS down for good: removing the annotation lets the deletion finish, bucket untouched.
    let stuck = unique_bucket("stuck");
    control_plane().apply(&store_yaml(
        &ns.name,
        "stuck",
        &url,
        &stuck,
        &[("deletion-policy", "delete")],
    ));
    wait_kvb(&ns.name, "stuck", "Ready", READY);
    wait_finalizer(&components, "stuck").await;
    server.stop();
    components
        .delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    wait_condition(
        &client,
        &ns.name,
        "stuck",
        "Ready",
        "False",
        "DeletionPending",
    )
    .await;
    control_plane()
        .kubectl(
            &[
                "-n",
                &ns.name,
                "annotate",
                "component",
                "stuck",
                "jetstreamkv.io/deletion-policy-",
            ],
            None,
        )
        .unwrap();
    wait_gone(&components, "stuck", "the deletion to finish without NATS").await;
    server.start_again();
    let js = support::jetstream(&url).await;
    assert!(
        js.get_stream(format!("KV_{stuck}")).await.is_ok(),
        "the bucket was deleted"
    );
}

#[tokio::test]
async fn a_second_component_cannot_change_the_bucket_nor_block_its_owner() {
    operator();
    let client = support::client().await;
    let a = TestNamespace::new(&client, "conflict-a").await;
    let b = TestNamespace::new(&client, "conflict-b").await;
    let url = nats().url();
    let bucket = unique_bucket("contested");
    control_plane().apply(&store_yaml(
        &a.name,
        "first",
        &url,
        &bucket,
        &[("history", "2")],
    ));
    wait_kvb(&a.name, "first", "Ready", READY);
    control_plane().apply(&store_yaml(
        &b.name,
        "second",
        &url,
        &bucket,
        &[("history", "6")],
    ));
    // Ownership is law: the second Component only verifies the first one's bucket, and its
    // status does not name the owner (another namespace).
    let second = wait_condition(
        &client,
        &b.name,
        "second",
        "ConfigSynced",
        "False",
        "BucketOwnedElsewhere",
    )
    .await;
    let message = &second.condition("ConfigSynced").unwrap().message;
    assert!(!message.contains(&a.name), "{message}");
    // The owner is not blocked by it (it used to be: ConflictingComponents, for ever).
    let first: Api<KeyValueBucket> = Api::namespaced(client.clone(), &a.name);
    let first = first.get("first").await.unwrap();
    assert_eq!(
        first.condition("Ready").map(|c| c.status.as_str()),
        Some("True"),
        "{:?}",
        first.status
    );
    assert!(!format!("{:?}", first.status).contains(&b.name));

    let revision = |c: &jetstream::stream::Config| (c.max_messages_per_subject, c.metadata.clone());
    let before = revision(&stream_config(&bucket).await.unwrap());
    let mut info = js().await.get_stream(format!("KV_{bucket}")).await.unwrap();
    let created = info.info().await.unwrap().created;
    tokio::time::sleep(RESYNC * 3).await;
    let after = stream_config(&bucket).await.unwrap();
    assert_eq!(revision(&after), before, "the bucket was flipped");
    assert_eq!(after.max_messages_per_subject, 2);
    assert_eq!(info.info().await.unwrap().created, created);
}

/// The stream of a `pubsub.jetstream` Component has the buckets' data-loss guard: a max age
/// that would drop stored messages is refused (DataLossRefused) and the stream kept as it was
/// through a resync, until `allow-data-loss` is set.
#[tokio::test]
async fn a_stream_change_that_drops_messages_waits_for_allow_data_loss() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "stream-loss").await;
    let topic = format!("kept{}", support::random_suffix());
    let pubsub = |annotations: &[(&str, &str)]| {
        annotations
            .iter()
            .fold(
                support::ComponentManifest::new(&ns.name, "events")
                    .type_("pubsub.jetstream")
                    .item("natsURL", &nats().url())
                    .annotation("jetstreamkv.io/subjects", &topic),
                |c, &(k, v)| c.annotation(k, v),
            )
            .yaml()
    };
    control_plane().apply(&pubsub(&[]));
    let jss = support::wait_jss(&ns.name, "events", "Ready=True", |s, _| s == "True").await;
    let stream = jss["spec"]["stream"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}_events", ns.name));
    let js = support::jetstream(&nats().url()).await;
    for i in 0..3 {
        js.publish(topic.clone(), format!("m{i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let state = async || {
        let mut s = js.get_stream(&stream).await.unwrap();
        let info = s.info().await.unwrap();
        (info.config.max_age, info.state.messages)
    };
    assert_eq!(state().await, (Duration::ZERO, 3));

    control_plane().apply(&pubsub(&[("jetstreamkv.io/max-age", "1h")]));
    support::wait_jss(&ns.name, "events", "Ready=False DataLossRefused", |s, r| {
        s == "False" && r == "DataLossRefused"
    })
    .await;
    tokio::time::sleep(support::RESYNC * 2).await;
    assert_eq!(
        state().await,
        (Duration::ZERO, 3),
        "the stream was changed without allow-data-loss"
    );

    control_plane().apply(&pubsub(&[
        ("jetstreamkv.io/max-age", "1h"),
        ("jetstreamkv.io/allow-data-loss", "true"),
    ]));
    support::wait_jss(&ns.name, "events", "Ready=True", |s, _| s == "True").await;
    assert_eq!(state().await, (Duration::from_secs(3600), 3));
}
