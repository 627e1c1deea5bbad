//! The bucket settings NACK and Terraform users have, against a real nats-server: per-key TTL
//! (`limit-marker-ttl`), stream `metadata` and `republish`. Each is created, verified, changed or
//! refused with its reason before anything is sent, and drift is shown. The same settings on a
//! three-node cluster: `tests/cluster.rs`.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use jetstream_kv_operator::crd::RepublishConfig;
use support::{
    RESYNC, TestNamespace, control_plane, nats, operator, store_yaml, stream_info, unique_bucket,
    wait_condition, wait_event_mentioning, wait_kvb,
};

const READY: Duration = Duration::from_secs(60);

/// Waits until the bucket's stream config satisfies `check`.
async fn wait_stream(
    url: &str,
    bucket: &str,
    what: &str,
    check: impl Fn(&async_nats::jetstream::stream::Config) -> bool,
) {
    support::eventually(
        READY,
        &format!("stream KV_{bucket}: {what}"),
        || async { check(&stream_info(url, bucket).await.config).then_some(()) },
        async || format!("{:?}", stream_info(url, bucket).await.config),
    )
    .await
}

/// Changes the live stream behind the operator's back, as `nats stream edit` would.
async fn edit_stream(
    url: &str,
    bucket: &str,
    edit: impl FnOnce(&mut async_nats::jetstream::stream::Config),
) {
    let mut config = stream_info(url, bucket).await.config;
    edit(&mut config);
    support::jetstream(url)
        .await
        .update_stream(config)
        .await
        .expect("edit the stream by hand");
}

#[tokio::test]
async fn per_key_ttl_is_created_changed_drift_restored_and_never_turned_off() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "markers").await;
    // A server of its own: its JetStream API counters then count this test's requests only.
    let server = support::nats::NatsServer::start();
    let url = server.url();
    let bucket = unique_bucket("sessions");
    let apply = |ttl: &str| {
        control_plane().apply(&store_yaml(
            &ns.name,
            "sessions",
            &url,
            &bucket,
            &[("limit-marker-ttl", ttl)],
        ))
    };
    apply("2s");
    wait_kvb(&ns.name, "sessions", "Ready", READY);
    let config = stream_info(&url, &bucket).await.config;
    assert!(config.allow_message_ttl);
    assert_eq!(
        config.subject_delete_marker_ttl,
        Some(Duration::from_secs(2))
    );
    let shown = support::kvb(&client, &ns.name, "sessions").await;
    assert_eq!(
        shown
            .spec
            .config
            .as_ref()
            .unwrap()
            .limit_marker_ttl
            .as_deref(),
        Some("2s")
    );
    assert_eq!(
        Some(shown.status.unwrap().bucket.unwrap().config),
        shown.spec.config,
        "live settings shown next to the desired ones"
    );
    support::per_key_ttl_behaves_as_documented(&url, &bucket).await;

    // Changed in place.
    apply("1h");
    wait_event_mentioning(
        &ns.name,
        "sessions",
        "BucketUpdated",
        "limitMarkerTtl 2s -> 1h",
    )
    .await;
    let config = stream_info(&url, &bucket).await.config;
    assert_eq!(
        config.subject_delete_marker_ttl,
        Some(Duration::from_secs(3600))
    );
    wait_kvb(&ns.name, "sessions", "Ready", READY);

    // Drift: changed by hand, restored with a Warning.
    edit_stream(&url, &bucket, |c| {
        c.subject_delete_marker_ttl = Some(Duration::from_secs(10))
    })
    .await;
    wait_event_mentioning(
        &ns.name,
        "sessions",
        "ConfigDrift",
        "limitMarkerTtl 10s -> 1h",
    )
    .await;
    assert_eq!(
        stream_info(&url, &bucket)
            .await
            .config
            .subject_delete_marker_ttl,
        Some(Duration::from_secs(3600))
    );

    // Off once on: nats-server cannot turn message TTLs off, so it is refused before sending.
    let api_errors = || server.jsz()["api"]["errors"].as_u64().unwrap_or_default();
    let before = api_errors();
    apply("0");
    let refused = wait_condition(
        &client,
        &ns.name,
        "sessions",
        "ConfigSynced",
        "False",
        "ImmutableFieldChanged",
    )
    .await;
    let message = &refused.condition("ConfigSynced").unwrap().message;
    assert!(
        message.contains("limitMarkerTtl 1h -> none") && message.contains("per-key TTL"),
        "{message}"
    );
    assert_eq!(refused.condition("Stalled").unwrap().status, "True");
    tokio::time::sleep(RESYNC).await;
    assert_eq!(api_errors(), before, "the refused change was sent to NATS");
    let config = stream_info(&url, &bucket).await.config;
    assert!(config.allow_message_ttl);
    assert_eq!(
        config.subject_delete_marker_ttl,
        Some(Duration::from_secs(3600))
    );
    // A bad value never reaches NATS either.
    apply("500ms");
    let bad = wait_condition(
        &client,
        &ns.name,
        "sessions",
        "ConfigSynced",
        "False",
        "InvalidAnnotation",
    )
    .await;
    assert!(
        bad.condition("ConfigSynced")
            .unwrap()
            .message
            .contains("at least 1s")
    );
}

#[tokio::test]
async fn stream_metadata_is_kept_exactly_and_never_overwrites_the_owner() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "metadata").await;
    let url = nats().url();
    let bucket = unique_bucket("labelled");
    let apply = |metadata: &str| {
        control_plane().apply(&store_yaml(
            &ns.name,
            "labelled",
            &url,
            &bucket,
            &[("metadata", metadata)],
        ))
    };
    let owner = format!("{}/labelled", ns.name);
    let user_items = |m: &std::collections::HashMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(k, _)| !k.starts_with("_nats.") && !k.starts_with("jetstreamkv.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    apply(r#"{"team": "shop"}"#);
    wait_kvb(&ns.name, "labelled", "Ready", READY);
    let live = stream_info(&url, &bucket).await.config.metadata;
    assert_eq!(
        user_items(&live),
        BTreeMap::from([("team".into(), "shop".into())])
    );
    assert_eq!(live["jetstreamkv.io/component"], owner);
    let shown = support::kvb(&client, &ns.name, "labelled").await;
    assert_eq!(
        shown.status.unwrap().bucket.unwrap().config.metadata,
        BTreeMap::from([("team".into(), "shop".into())])
    );

    apply(r#"{"team": "billing", "tier": "gold"}"#);
    let message = wait_event_mentioning(&ns.name, "labelled", "BucketUpdated", "metadata").await;
    assert!(
        message
            .contains(r#"{"team": "shop", "tier": (none)} -> {"team": "billing", "tier": "gold"}"#),
        "{message}"
    );
    let live = stream_info(&url, &bucket).await.config.metadata;
    assert_eq!(user_items(&live).len(), 2);
    assert_eq!(live["jetstreamkv.io/component"], owner);

    // The owner marks are the operator's: a Component cannot set them, whatever it writes.
    apply(r#"{"team": "billing", "jetstreamkv.io/component": "other/thief"}"#);
    let refused = wait_condition(
        &client,
        &ns.name,
        "labelled",
        "ConfigSynced",
        "False",
        "ReservedMetadataKey",
    )
    .await;
    let message = &refused.condition("ConfigSynced").unwrap().message;
    assert!(
        message.contains("jetstreamkv.io/component") && message.contains("use another key"),
        "{message}"
    );
    assert_eq!(refused.condition("Stalled").unwrap().status, "True");
    assert_eq!(
        refused.condition("Ready").unwrap().reason,
        "ReservedMetadataKey"
    );
    tokio::time::sleep(RESYNC).await;
    let live = stream_info(&url, &bucket).await.config.metadata;
    assert_eq!(live["jetstreamkv.io/component"], owner, "the owner mark");
    assert_eq!(live["tier"], "gold", "nothing was sent");

    // Drift: an item added by hand on a managed bucket is removed, with a Warning.
    apply(r#"{"team": "billing"}"#);
    wait_kvb(&ns.name, "labelled", "Ready", READY);
    edit_stream(&url, &bucket, |c| {
        c.metadata.insert("added-by-hand".into(), "x".into());
    })
    .await;
    wait_event_mentioning(&ns.name, "labelled", "ConfigDrift", "added-by-hand").await;
    let live = stream_info(&url, &bucket).await.config.metadata;
    assert_eq!(
        user_items(&live),
        BTreeMap::from([("team".into(), "billing".into())])
    );
    assert_eq!(live["jetstreamkv.io/managed-by"], "jetstream-kv-operator");

    // A bucket someone else made is only verified: the items asked for must be there.
    let foreign = unique_bucket("theirs");
    let js = support::jetstream(&url).await;
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: foreign.clone(),
        ..Default::default()
    })
    .await
    .expect("a bucket made by hand");
    edit_stream(&url, &foreign, |c| {
        c.metadata.insert("team".into(), "ops".into());
        c.metadata.insert("on-call".into(), "alice".into());
    })
    .await;
    let verify = |metadata: &str| {
        control_plane().apply(&store_yaml(
            &ns.name,
            "verifier",
            &url,
            &foreign,
            &[("metadata", metadata)],
        ))
    };
    verify(r#"{"team": "shop"}"#);
    let mismatch = wait_condition(
        &client,
        &ns.name,
        "verifier",
        "ConfigSynced",
        "False",
        "ConfigMismatch",
    )
    .await;
    let message = &mismatch.condition("ConfigSynced").unwrap().message;
    assert!(
        message.contains(r#"metadata {"team": "ops"} -> {"team": "shop"}"#),
        "{message}"
    );
    verify(r#"{"team": "ops"}"#);
    let verified = wait_condition(
        &client,
        &ns.name,
        "verifier",
        "Ready",
        "True",
        "BucketVerified",
    )
    .await;
    assert!(!verified.status.unwrap().bucket.unwrap().managed);
    let live = stream_info(&url, &foreign).await.config.metadata;
    assert_eq!(
        live["on-call"], "alice",
        "a verified bucket is never changed"
    );
}

#[tokio::test]
async fn republish_is_created_changed_checked_and_removed() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "republish").await;
    let url = nats().url();
    let bucket = unique_bucket("feed");
    let destination = format!("changes.{bucket}.>");
    let apply = |annotations: &[(&str, &str)]| {
        control_plane().apply(&store_yaml(&ns.name, "feed", &url, &bucket, annotations))
    };
    let nc = async_nats::connect(url.as_str()).await.expect("connect");
    let mut feed = nc
        .subscribe(destination.clone())
        .await
        .expect("subscribe to the feed");
    nc.flush().await.expect("flush");
    let store = async || {
        support::jetstream(&url)
            .await
            .get_key_value(&bucket)
            .await
            .expect("bucket")
    };
    let next = async |feed: &mut async_nats::Subscriber| {
        tokio::time::timeout(READY, feed.next())
            .await
            .expect("a republished message")
            .expect("subscription open")
    };

    apply(&[("republish-destination", &destination)]);
    wait_kvb(&ns.name, "feed", "Ready", READY);
    let config = stream_info(&url, &bucket).await.config;
    let republish = config.republish.expect("republish");
    assert_eq!(
        (republish.source.as_str(), republish.destination.as_str()),
        (format!("$KV.{bucket}.>").as_str(), destination.as_str())
    );
    let shown = support::kvb(&client, &ns.name, "feed").await;
    let want = RepublishConfig {
        source: None,
        destination: destination.clone(),
        headers_only: false,
    };
    assert_eq!(
        shown.status.unwrap().bucket.unwrap().config.republish,
        Some(want)
    );
    store()
        .await
        .put("order1", "hello".into())
        .await
        .expect("put");
    let message = next(&mut feed).await;
    assert_eq!(message.subject.as_str(), format!("changes.{bucket}.order1"));
    assert_eq!(&message.payload[..], b"hello");

    // Headers only, and a narrower source: changed in place.
    let source = format!("$KV.{bucket}.*");
    let narrow = format!("changes.{bucket}.$1");
    apply(&[
        ("republish-destination", &narrow),
        ("republish-source", &source),
        ("republish-headers-only", "true"),
    ]);
    wait_event_mentioning(&ns.name, "feed", "BucketUpdated", "(headers only)").await;
    wait_kvb(&ns.name, "feed", "Ready", READY);
    store()
        .await
        .put("order2", "world".into())
        .await
        .expect("put");
    let message = next(&mut feed).await;
    assert_eq!(message.subject.as_str(), format!("changes.{bucket}.order2"));
    assert!(message.payload.is_empty(), "headers only");
    let headers = message.headers.expect("headers");
    assert_eq!(headers.get("Nats-Msg-Size").map(|v| v.as_str()), Some("5"));

    // Into the bucket itself: a loop, refused before anything is sent.
    apply(&[("republish-destination", &format!("$KV.{bucket}.copy.>"))]);
    let refused = wait_condition(
        &client,
        &ns.name,
        "feed",
        "ConfigSynced",
        "False",
        "InvalidAnnotation",
    )
    .await;
    let message = &refused.condition("ConfigSynced").unwrap().message;
    assert!(
        message.contains("republish-destination") && message.contains("in a loop"),
        "{message}"
    );
    tokio::time::sleep(RESYNC).await;
    let config = stream_info(&url, &bucket).await.config;
    assert_eq!(config.republish.expect("unchanged").destination, narrow);

    // Drift: removed by hand, restored.
    apply(&[
        ("republish-destination", &narrow),
        ("republish-source", &source),
        ("republish-headers-only", "true"),
    ]);
    wait_kvb(&ns.name, "feed", "Ready", READY);
    edit_stream(&url, &bucket, |c| c.republish = None).await;
    wait_event_mentioning(&ns.name, "feed", "ConfigDrift", "republish none ->").await;
    assert!(stream_info(&url, &bucket).await.config.republish.is_some());

    // Removed from the Component: removed from the bucket. (A second BucketUpdated Event is
    // folded into the first one's series, so the stream itself is watched.)
    apply(&[]);
    wait_stream(&url, &bucket, "no republish", |c| c.republish.is_none()).await;
    wait_kvb(&ns.name, "feed", "Ready", READY);
}
