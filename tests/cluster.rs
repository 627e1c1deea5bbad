//! NATS as production runs it: a three-node JetStream cluster (tags `az:1..3` with `az:` as the
//! unique tag, `disk:ssd` on two nodes), R3 buckets, placement, and faults.
//!
//! Tests that only read share one cluster; tests that kill nodes start their own, so nothing
//! they do disturbs another test. All share this binary's control plane and operator.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_nats::jetstream::{kv, stream};
use futures::StreamExt;
use jetstream_kv_operator::crd::{KeyValueBucket, ReplicaState};
use jetstream_kv_operator::dapr::Component;
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::cluster::NatsCluster;
use support::{
    TestNamespace, control_plane, history, operator, seed, store_yaml, stream_info, wait_condition,
    wait_kvb,
};

const READY: Duration = Duration::from_secs(60);

/// The cluster of the tests that kill nothing.
fn shared_cluster() -> &'static NatsCluster {
    static CLUSTER: OnceLock<NatsCluster> = OnceLock::new();
    CLUSTER.get_or_init(NatsCluster::start)
}

/// Starts a cluster of its own off the async workers.
async fn own_cluster() -> NatsCluster {
    tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .expect("start a NATS cluster")
}

/// The servers that hold the stream: its leader first, then the other replicas.
fn peers(info: &stream::Info) -> (String, BTreeSet<String>) {
    let cluster = info.cluster.as_ref().expect("cluster info");
    let leader = cluster.leader.clone().expect("a leader");
    let others = cluster.replicas.iter().map(|p| p.name.clone()).collect();
    (leader, others)
}

/// Waits until `check` accepts the KeyValueBucket; returns it.
async fn wait_kvb_where(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&KeyValueBucket) -> bool,
) -> KeyValueBucket {
    let api: Api<KeyValueBucket> = Api::namespaced(client.clone(), ns);
    support::eventually(
        READY,
        &format!("kvb/{name}: {what}"),
        || async {
            let kvb = api.get_opt(name).await.ok().flatten()?;
            check(&kvb).then_some(kvb)
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                support::describe(ns, "kvb", name),
                operator().log_tail()
            )
        },
    )
    .await
}

fn ready_reason(kvb: &KeyValueBucket) -> Option<(String, String)> {
    kvb.condition("Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Waits until the KeyValueBucket shows `replicas` live and is Ready (managed): a scale step
/// done.
async fn wait_replicas_ready(client: &kube::Client, ns: &str, name: &str, replicas: usize) {
    wait_kvb_where(
        client,
        ns,
        name,
        &format!("replicas {replicas} and Ready"),
        |k| {
            k.status
                .as_ref()
                .and_then(|s| s.bucket.as_ref())
                .is_some_and(|b| b.config.replicas == replicas as i64)
                && ready_reason(k) == Some(("True".into(), "BucketManaged".into()))
        },
    )
    .await;
}

#[tokio::test]
async fn r3_bucket_is_created_on_three_zones_and_its_cluster_shown_in_status() {
    operator();
    let cluster = shared_cluster();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "r3").await;
    let bucket = support::unique_bucket("r3");
    control_plane().apply(&store_yaml(
        &ns.name,
        "r3",
        &cluster.url(),
        &bucket,
        &[("replicas", "3"), ("history", "3")],
    ));
    wait_kvb(&ns.name, "r3", "Ready", READY);

    let info = stream_info(&cluster.url(), &bucket).await;
    assert_eq!(info.config.num_replicas, 3);
    let (leader, others) = peers(&info);
    let mut all = others.clone();
    all.insert(leader.clone());
    let nodes: BTreeSet<String> = (0..3).map(|i| cluster.node_name(i).to_string()).collect();
    assert_eq!(all, nodes, "one replica per zone (unique tag az:)");

    // Status: the replicas, the cluster, the leader and the two other replicas.
    let kvb = wait_kvb_where(&client, &ns.name, "r3", "every replica current", |k| {
        k.status
            .as_ref()
            .and_then(|s| s.bucket.as_ref())
            .and_then(|b| b.cluster.as_ref())
            .is_some_and(|c| {
                c.replicas.len() == 2 && c.replicas.iter().all(|r| r.state == ReplicaState::Current)
            })
    })
    .await;
    let facts = kvb.status.unwrap().bucket.unwrap();
    assert_eq!(facts.config.replicas, 3);
    let shown = facts.cluster.unwrap();
    assert_eq!(shown.name.as_deref(), Some(cluster.name()));
    let shown_leader = shown.leader.expect("leader in status");
    let shown_all: BTreeSet<String> = shown
        .replicas
        .iter()
        .map(|r| r.server.clone())
        .chain([shown_leader.clone()])
        .collect();
    assert_eq!(shown_all, nodes);
    assert!(!shown.replicas.iter().any(|r| r.server == shown_leader));

    // Buckets made outside the operator, R3: verified; asking for R1 of one is a mismatch.
    let (foreign, other) = (
        support::unique_bucket("r3foreign"),
        support::unique_bucket("r3other"),
    );
    for bucket in [&foreign, &other] {
        support::jetstream(&cluster.url())
            .await
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .expect("create an R3 bucket outside the operator");
    }
    control_plane().apply(&store_yaml(
        &ns.name,
        "verify",
        &cluster.url(),
        &foreign,
        &[("replicas", "3")],
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "verify",
        "Ready",
        "True",
        "BucketVerified",
    )
    .await;
    assert_eq!(kvb.status.unwrap().bucket.unwrap().config.replicas, 3);
    control_plane().apply(&store_yaml(
        &ns.name,
        "mismatch",
        &cluster.url(),
        &other,
        &[("replicas", "1")],
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "mismatch",
        "Ready",
        "False",
        "ConfigMismatch",
    )
    .await;
    let message = &kvb.condition("Ready").unwrap().message;
    assert!(message.contains("replicas 3 -> 1"), "{message}");
    assert_eq!(
        stream_info(&cluster.url(), &other)
            .await
            .config
            .num_replicas,
        3,
        "a verified bucket is never changed"
    );
}

#[tokio::test]
async fn r3_buckets_take_per_key_ttl_metadata_and_republish() {
    operator();
    let cluster = shared_cluster();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "r3settings").await;
    let bucket = support::unique_bucket("r3settings");
    let url = cluster.url();
    let destination = format!("changes.{bucket}.>");
    let apply = |marker_ttl: &str, metadata: &str| {
        control_plane().apply(&store_yaml(
            &ns.name,
            "r3settings",
            &url,
            &bucket,
            &[
                ("replicas", "3"),
                ("limit-marker-ttl", marker_ttl),
                ("metadata", metadata),
                ("republish-destination", &destination),
            ],
        ))
    };
    apply("2s", r#"{"team": "shop"}"#);
    wait_kvb(&ns.name, "r3settings", "Ready", READY);
    let config = stream_info(&url, &bucket).await.config;
    assert_eq!(config.num_replicas, 3);
    assert!(config.allow_message_ttl);
    assert_eq!(
        config.subject_delete_marker_ttl,
        Some(Duration::from_secs(2))
    );
    assert_eq!(config.metadata["team"], "shop");
    assert_eq!(
        config.metadata["jetstreamkv.io/component"],
        format!("{}/r3settings", ns.name)
    );
    assert_eq!(
        config.republish.expect("republish").destination,
        destination
    );
    let shown = support::kvb(&client, &ns.name, "r3settings").await;
    assert_eq!(
        Some(shown.status.unwrap().bucket.unwrap().config),
        shown.spec.config,
        "live settings shown next to the desired ones"
    );
    // Values republished by the stream's leader, and a key's own TTL, as on one server.
    let nc = async_nats::ConnectOptions::new()
        .connect(url.split(',').collect::<Vec<_>>())
        .await
        .expect("connect");
    let mut feed = nc.subscribe(destination.clone()).await.expect("subscribe");
    nc.flush().await.expect("flush");
    support::per_key_ttl_behaves_as_documented(&url, &bucket).await;
    let first = tokio::time::timeout(READY, feed.next())
        .await
        .expect("a republished value")
        .expect("subscription open");
    assert_eq!(first.subject.as_str(), format!("changes.{bucket}.session"));

    // Changed in place on all three replicas.
    apply("1h", r#"{"team": "billing"}"#);
    wait_kvb_where(
        &client,
        &ns.name,
        "r3settings",
        "the new settings live",
        |k| {
            k.status
                .as_ref()
                .and_then(|s| s.bucket.as_ref())
                .is_some_and(|b| {
                    b.config.limit_marker_ttl.as_deref() == Some("1h")
                        && b.config.metadata.get("team").map(String::as_str) == Some("billing")
                })
                && ready_reason(k) == Some(("True".into(), "BucketManaged".into()))
        },
    )
    .await;
    let config = stream_info(&url, &bucket).await.config;
    assert_eq!(
        config.subject_delete_marker_ttl,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(config.num_replicas, 3);

    // Off once on is refused before sending, as on one server.
    apply("0", r#"{"team": "billing"}"#);
    let refused = wait_condition(
        &client,
        &ns.name,
        "r3settings",
        "ConfigSynced",
        "False",
        "ImmutableFieldChanged",
    )
    .await;
    let message = &refused.condition("ConfigSynced").unwrap().message;
    assert!(message.contains("limitMarkerTtl 1h -> none"), "{message}");
    assert!(stream_info(&url, &bucket).await.config.allow_message_ttl);
}

#[tokio::test]
async fn placement_tags_are_honoured() {
    operator();
    let cluster = shared_cluster();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "placement").await;
    let (zone2, ssd) = (
        support::unique_bucket("zone2"),
        support::unique_bucket("ssd"),
    );
    control_plane().apply(&store_yaml(
        &ns.name,
        "zone2",
        &cluster.url(),
        &zone2,
        &[("placement-tags", "az:2")],
    ));
    control_plane().apply(&store_yaml(
        &ns.name,
        "ssd",
        &cluster.url(),
        &ssd,
        &[("placement-tags", "disk:ssd"), ("replicas", "2")],
    ));
    wait_kvb(&ns.name, "zone2", "Ready", READY);
    wait_kvb(&ns.name, "ssd", "Ready", READY);

    let (leader, others) = peers(&stream_info(&cluster.url(), &zone2).await);
    assert_eq!(leader, cluster.node_name(1), "az:2 is node 2");
    assert!(others.is_empty());
    let (leader, others) = peers(&stream_info(&cluster.url(), &ssd).await);
    let on: BTreeSet<String> = others.into_iter().chain([leader]).collect();
    let ssd_nodes: BTreeSet<String> = [cluster.node_name(0), cluster.node_name(1)]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(on, ssd_nodes, "disk:ssd is nodes 1 and 2");
    let kvb = support::kvb(&client, &ns.name, "zone2").await;
    let shown = kvb.status.unwrap().bucket.unwrap().cluster.unwrap();
    assert_eq!(shown.leader.as_deref(), Some(cluster.node_name(1)));
}

#[tokio::test]
async fn a_placement_no_server_can_satisfy_is_no_suitable_placement_naming_the_tags() {
    operator();
    let cluster = shared_cluster();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "noplace").await;
    // No server has the tag; and only two servers have disk:ssd, one zone each, for three
    // replicas that need three zones.
    control_plane().apply(&store_yaml(
        &ns.name,
        "gpu",
        &cluster.url(),
        &support::unique_bucket("gpu"),
        &[("placement-tags", "gpu, az:1")],
    ));
    control_plane().apply(&store_yaml(
        &ns.name,
        "three-ssd",
        &cluster.url(),
        &support::unique_bucket("threessd"),
        &[("placement-tags", "disk:ssd"), ("replicas", "3")],
    ));
    for (name, asked) in [
        ("gpu", "tags gpu, az:1"),
        ("three-ssd", "replicas 3, tags disk:ssd"),
    ] {
        let kvb = wait_condition(
            &client,
            &ns.name,
            name,
            "Ready",
            "False",
            "NoSuitablePlacement",
        )
        .await;
        let message = &kvb.condition("Ready").unwrap().message;
        assert!(message.contains(asked), "{name}: {message}");
        assert_eq!(
            kvb.condition("Stalled").map(|c| c.status.as_str()),
            Some("True"),
            "{name}: someone must change the placement or the servers"
        );
    }
}

#[tokio::test]
async fn replicas_grow_from_1_to_3_and_shrink_back_keeping_every_value() {
    operator();
    let cluster = shared_cluster();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "scale").await;
    let bucket = support::unique_bucket("scale");
    let url = cluster.url();
    control_plane().apply(&store_yaml(
        &ns.name,
        "scale",
        &url,
        &bucket,
        &[("history", "5")],
    ));
    wait_kvb(&ns.name, "scale", "Ready", READY);
    let written = seed(&url, &bucket, 3, 3).await;
    for replicas in [3, 1] {
        control_plane().apply(&store_yaml(
            &ns.name,
            "scale",
            &url,
            &bucket,
            &[("history", "5"), ("replicas", &replicas.to_string())],
        ));
        wait_replicas_ready(&client, &ns.name, "scale", replicas).await;
        assert_eq!(
            stream_info(&url, &bucket).await.config.num_replicas,
            replicas
        );
        assert_eq!(history(&url, &bucket).await, written, "no value lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_killed_status_shows_the_new_leader_and_a_scale_down_waits() {
    operator();
    let mut cluster = own_cluster().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "leader").await;
    let bucket = support::unique_bucket("leader");
    let url = cluster.url();
    let annotations = [("replicas", "3"), ("history", "5")];
    control_plane().apply(&store_yaml(&ns.name, "leader", &url, &bucket, &annotations));
    wait_kvb(&ns.name, "leader", "Ready", READY);
    let written = seed(&url, &bucket, 3, 4).await;
    let (old_leader, _) = peers(&stream_info(&url, &bucket).await);
    let victim = cluster.index_of(&old_leader);
    tokio::task::block_in_place(|| cluster.stop(victim));

    let kvb = wait_kvb_where(&client, &ns.name, "leader", "a new leader in status", |k| {
        k.status
            .as_ref()
            .and_then(|s| s.bucket.as_ref())
            .and_then(|b| b.cluster.as_ref())
            .and_then(|c| c.leader.as_deref())
            .is_some_and(|l| l != old_leader)
            && ready_reason(k) == Some(("True".into(), "BucketManaged".into()))
    })
    .await;
    let shown = kvb.status.unwrap().bucket.unwrap().cluster.unwrap();
    let (new_leader, _) = peers(&stream_info(&url, &bucket).await);
    assert_eq!(shown.leader.as_deref(), Some(new_leader.as_str()));
    assert_eq!(history(&url, &bucket).await, written, "data intact");

    // With the old leader down, a scale-down waits: NATS would keep one copy, and one replica
    // is not current.
    control_plane().apply(&store_yaml(
        &ns.name,
        "leader",
        &url,
        &bucket,
        &[("replicas", "1"), ("history", "5")],
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "leader",
        "ConfigSynced",
        "False",
        "ReplicasNotCurrent",
    )
    .await;
    let message = &kvb.condition("ConfigSynced").unwrap().message;
    assert!(message.contains(&old_leader), "{message}");
    assert_eq!(stream_info(&url, &bucket).await.config.num_replicas, 3);

    tokio::task::block_in_place(|| cluster.start_again(victim));
    wait_replicas_ready(&client, &ns.name, "leader", 1).await;
    assert_eq!(history(&url, &bucket).await, written, "data intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_lost_is_reconciling_and_recovers_with_every_key_and_its_history() {
    operator();
    let mut cluster = own_cluster().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "quorum").await;
    let bucket = support::unique_bucket("quorum");
    let url = cluster.url();
    control_plane().apply(&store_yaml(
        &ns.name,
        "quorum",
        &url,
        &bucket,
        &[("replicas", "3"), ("history", "5")],
    ));
    wait_kvb(&ns.name, "quorum", "Ready", READY);
    let written = seed(&url, &bucket, 4, 5).await;

    tokio::task::block_in_place(|| {
        cluster.stop(1);
        cluster.stop(2);
    });
    let kvb = wait_kvb_where(
        &client,
        &ns.name,
        "quorum",
        "Ready False, QuorumLost",
        |k| ready_reason(k) == Some(("False".into(), "QuorumLost".into())),
    )
    .await;
    let ready = kvb.condition("Ready").unwrap();
    assert!(
        ready.message.contains("quorum lost")
            && ready.message.contains(cluster.node_name(1))
            && ready.message.contains(cluster.node_name(2)),
        "{}",
        ready.message
    );
    let reconciling = kvb.condition("Reconciling").expect("Reconciling");
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("True", "QuorumLost")
    );
    assert!(
        kvb.condition("Stalled").is_none_or(|c| c.status != "True"),
        "quorum loss heals by itself: Reconciling, not Stalled"
    );

    tokio::task::block_in_place(|| {
        cluster.start_again(1);
        cluster.start_again(2);
    });
    wait_kvb_where(&client, &ns.name, "quorum", "Ready again", |k| {
        ready_reason(k) == Some(("True".into(), "BucketManaged".into()))
    })
    .await;
    assert_eq!(
        history(&url, &bucket).await,
        written,
        "every key and its history"
    );
}

const WAVE: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_in_the_middle_of_a_wave_of_200_r3_buckets() {
    operator();
    let mut cluster = own_cluster().await;
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "wave").await;
    let url = cluster.url();
    let suffix = support::random_suffix();
    let wave: Vec<Component> = (0..WAVE)
        .map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "metadata": {"name": format!("c-{i:03}"), "namespace": ns.name,
                             "annotations": {"jetstreamkv.io/replicas": "3"}},
                "spec": {"type": "state.jetstream", "version": "v1", "metadata": [
                    {"name": "natsURL", "value": url},
                    {"name": "bucket", "value": format!("wave_{suffix}_{i}")},
                ]},
            }))
            .expect("component")
        })
        .collect();
    let api: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    let ready_count = async || {
        kvbs.list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|k| ready_reason(k).is_some_and(|(s, _)| s == "True"))
                    .count()
            })
            .unwrap_or(0)
    };
    let create = |c: Component| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &c)
                .await
                .unwrap_or_else(|e| panic!("create {}: {e}", c.name_any()));
        }
    };
    let mut first = wave;
    let second = first.split_off(WAVE / 2);
    futures::stream::iter(first)
        .map(create)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    // Kill a node while the first half is being worked on, then send the second half.
    let deadline = Instant::now() + READY;
    while ready_count().await < 20 {
        assert!(Instant::now() < deadline, "20 Ready before the kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| cluster.stop(0));
    futures::stream::iter(second)
        .map(create)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let n = ready_count().await;
        if n == WAVE {
            break;
        }
        if Instant::now() > deadline {
            let list = kvbs.list(&ListParams::default()).await.unwrap();
            let not_ready: Vec<_> = list
                .items
                .iter()
                .filter(|k| ready_reason(k).is_none_or(|(s, _)| s != "True"))
                .take(10)
                .map(|k| {
                    (
                        k.name_any(),
                        k.condition("Ready").map(|c| c.message.clone()),
                    )
                })
                .collect();
            panic!(
                "{n}/{WAVE} Ready with node 1 down; not Ready: {not_ready:#?}\n--- operator log:\n{}",
                operator().log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::task::block_in_place(|| cluster.start_again(0));

    // Exactly one R3 stream per Component, none created twice.
    let js = support::jetstream(&url).await;
    let mut names = js.stream_names();
    let mut streams = BTreeSet::new();
    while let Some(name) = names.next().await {
        let name = name.expect("stream name");
        if name.starts_with(&format!("KV_wave_{suffix}_")) {
            streams.insert(name);
        }
    }
    assert_eq!(streams.len(), WAVE);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let mut created: BTreeMap<String, u32> = BTreeMap::new();
    for e in events.list(&ListParams::default()).await.unwrap().items {
        let reason = e.reason.clone().unwrap_or_default();
        let name = e.involved_object.name.clone().unwrap_or_default();
        assert_ne!(reason, "BucketRecreated", "{name}: a bucket was recreated");
        if reason == "BucketCreated" {
            *created.entry(name).or_default() += e.count.unwrap_or(1).max(1) as u32;
        }
    }
    for (name, n) in &created {
        assert_eq!(*n, 1, "{name}: BucketCreated {n} times");
    }
    for name in streams.iter().take(20) {
        let info = js
            .get_stream(name)
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
    }
}
