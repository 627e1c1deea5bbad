//! The operator under faults, each test with its own control plane, nats-server and operator
//! process (they kill or restart them), so they never disturb the other tests:
//!
//! - nats-server killed in the middle of a wave of 200 Components and started again 10 s later;
//! - kube-apiserver restarted (same etcd data) in the middle of a wave;
//! - the operator killed with SIGKILL in the middle of a wave and started again.
//!
//! Every test checks what a user would: every Component Ready without restarting anything else,
//! exactly one bucket per Component and none created twice (`BucketCreated` Events and the
//! streams nats-server reports), no burst of repeated Events, and data safety: 50 buckets with
//! keys and history, created before the operator sees them (and referenced by 50 of the 200
//! Components, which only verify them), still hold every key and every history entry at the end.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::dapr::Component;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use support::ControlPlane;
use support::nats::NatsServer;
use support::operator::Operator;

const WAVE: usize = 200;
const PREEXISTING: usize = 50;
const NAMESPACES: usize = 4;
const KEYS: usize = 3;
const REVISIONS: usize = 3;
/// Short resync and back-off, so recovery and the steady-state check take seconds.
const RESYNC: Duration = Duration::from_secs(5);
const OPERATOR_ARGS: [&str; 6] = [
    "--resync-interval",
    "5s",
    "--max-backoff",
    "5s",
    "--log-level",
    "info,jetstream_kv_operator=debug",
];
const ALL_READY: Duration = Duration::from_secs(180);

/// One test's own servers and operator.
struct Rig {
    cp: ControlPlane,
    nats: NatsServer,
    operator: Operator,
    client: Client,
    namespaces: Vec<String>,
}

impl Rig {
    async fn start() -> Rig {
        let (cp, nats) = tokio::task::spawn_blocking(|| {
            let cp = ControlPlane::start();
            cp.install_crds();
            (cp, NatsServer::start())
        })
        .await
        .expect("start the servers");
        let operator = Operator::start(&cp.kubeconfig, &OPERATOR_ARGS);
        let client = support::client_for(&cp.kubeconfig).await;
        let api: Api<Namespace> = Api::all(client.clone());
        let mut namespaces = Vec::new();
        for i in 0..NAMESPACES {
            let name = format!("faults-{i}-{}", support::random_suffix());
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))
                .expect("namespace object");
            api.create(&PostParams::default(), &ns)
                .await
                .expect("create namespace");
            namespaces.push(name);
        }
        Rig {
            cp,
            nats,
            operator,
            client,
            namespaces,
        }
    }

    /// The 200 Components of the wave: the first 50 name the buckets made beforehand.
    fn wave(&self) -> Vec<Component> {
        (0..WAVE)
            .map(|i| {
                let bucket = if i < PREEXISTING {
                    format!("pre_{i}")
                } else {
                    format!("new_{i}")
                };
                support::ComponentManifest::store(
                    &self.namespaces[i % NAMESPACES],
                    &format!("c-{i:03}"),
                    &self.nats.url(),
                    &bucket,
                )
                .component()
            })
            .collect()
    }

    /// Creates Components, 32 at a time, retrying while the API server is away.
    async fn apply(&self, components: Vec<Component>) {
        futures::stream::iter(components)
            .map(|c| {
                let api: Api<Component> =
                    Api::namespaced(self.client.clone(), &c.namespace().unwrap_or_default());
                async move {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        match api.create(&PostParams::default(), &c).await {
                            Ok(_) => return,
                            Err(kube::Error::Api(s)) if s.code == 409 => return,
                            Err(e) if Instant::now() < deadline => {
                                let _ = e;
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            Err(e) => panic!("create {}: {e}", c.name_any()),
                        }
                    }
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await;
    }

    /// KeyValueBuckets with Ready=True, by `namespace/name`, with their Ready reason.
    async fn ready(&self) -> BTreeMap<String, String> {
        let api: Api<KeyValueBucket> = Api::all(self.client.clone());
        let Ok(list) = api.list(&ListParams::default()).await else {
            return BTreeMap::new();
        };
        list.items
            .iter()
            .filter_map(|kvb| {
                let c = kvb.condition("Ready")?;
                (c.status == "True").then(|| {
                    (
                        format!("{}/{}", kvb.namespace().unwrap_or_default(), kvb.name_any()),
                        c.reason.clone(),
                    )
                })
            })
            .collect()
    }

    async fn wait_ready_count(&self, n: usize, timeout: Duration) -> BTreeMap<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = self.ready().await;
            if ready.len() >= n {
                return ready;
            }
            if Instant::now() > deadline {
                panic!(
                    "only {}/{n} KeyValueBuckets Ready after {timeout:?}\n--- not Ready:\n{}\n--- operator log:\n{}",
                    ready.len(),
                    self.not_ready_summary(&ready).await,
                    self.operator.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn not_ready_summary(&self, ready: &BTreeMap<String, String>) -> String {
        let api: Api<KeyValueBucket> = Api::all(self.client.clone());
        let list = api.list(&ListParams::default()).await.map(|l| l.items);
        let mut out = String::new();
        for kvb in list.unwrap_or_default().iter().take(400) {
            let key = format!("{}/{}", kvb.namespace().unwrap_or_default(), kvb.name_any());
            if !ready.contains_key(&key) {
                let c = kvb.condition("Ready");
                out += &format!(
                    "{key}: {:?} {:?}\n",
                    c.map(|c| &c.reason),
                    c.map(|c| &c.message)
                );
            }
        }
        out
    }

    /// Events per Component (`namespace/name`) and reason, counting repeats of a series.
    async fn events(&self) -> BTreeMap<(String, String), u32> {
        let mut out = BTreeMap::new();
        for ns in &self.namespaces {
            let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
            let list = api.list(&ListParams::default()).await.expect("list events");
            for e in list.items {
                if e.involved_object.kind.as_deref() != Some("Component") {
                    continue;
                }
                let n = e
                    .series
                    .as_ref()
                    .and_then(|s| s.count)
                    .unwrap_or(0)
                    .max(e.count.unwrap_or(0))
                    .max(1) as u32;
                let key = (
                    format!("{ns}/{}", e.involved_object.name.unwrap_or_default()),
                    e.reason.unwrap_or_default(),
                );
                *out.entry(key).or_insert(0) += n;
            }
        }
        out
    }

    /// The `KV_` streams nats-server holds.
    fn streams(&self) -> BTreeSet<String> {
        let jsz = self.nats.monitor("/jsz?accounts=1&streams=1");
        jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .filter(|n| n.starts_with("KV_"))
            .collect()
    }

    /// What every test checks at the end: all 200 Ready with the right reason, exactly 200
    /// buckets, none created twice, Events bounded, and no Event at all over two resyncs.
    async fn check_wave_outcome(&self, data: &SeededData) {
        let ready = self.wait_ready_count(WAVE, ALL_READY).await;
        for (key, reason) in &ready {
            let i: usize = key
                .rsplit("c-")
                .next()
                .unwrap_or("")
                .parse()
                .expect("index");
            let expected = if i < PREEXISTING {
                "BucketVerified"
            } else {
                "BucketManaged"
            };
            assert_eq!(reason, expected, "{key}");
        }
        let streams = self.nats_streams_blocking().await;
        assert_eq!(
            streams.len(),
            WAVE,
            "exactly one bucket per Component: {streams:?}"
        );

        let events = self.events().await;
        let mut per_component: BTreeMap<&str, u32> = BTreeMap::new();
        for ((component, reason), n) in &events {
            *per_component.entry(component).or_default() += n;
            if reason == "BucketCreated" {
                assert_eq!(*n, 1, "{component}: BucketCreated {n} times");
                let i: usize = component.rsplit("c-").next().unwrap_or("").parse().unwrap();
                assert!(
                    i >= PREEXISTING,
                    "{component}: a bucket made beforehand was reported created"
                );
            }
            assert!(
                reason != "BucketRecreated",
                "{component}: a bucket was recreated"
            );
        }
        for (component, n) in &per_component {
            assert!(*n <= 4, "{component}: {n} Events: {events:?}");
        }
        let mut by_reason: BTreeMap<&str, u32> = BTreeMap::new();
        for ((_, reason), n) in &events {
            *by_reason.entry(reason).or_default() += n;
        }
        eprintln!(
            "all {WAVE} Ready; {} streams; Events by reason: {by_reason:?}; most Events on one Component: {}",
            streams.len(),
            per_component.values().max().copied().unwrap_or(0)
        );
        // Steady state: two resync periods later, not one more Event.
        tokio::time::sleep(RESYNC * 2).await;
        assert_eq!(
            self.events().await,
            events,
            "Events were published while nothing changed"
        );
        data.check(&self.nats.url()).await;
        assert!(
            !self.operator.logs().contains("panicked"),
            "the operator panicked:\n{}",
            self.operator.log_tail()
        );
    }

    async fn nats_streams_blocking(&self) -> BTreeSet<String> {
        // monitor() is blocking std I/O: quick, but keep it off the async workers.
        tokio::task::block_in_place(|| self.streams())
    }
}

/// 50 KV buckets with history 5, each with 3 keys written 3 times, made before the operator
/// sees any Component for them.
struct SeededData {
    expected: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl SeededData {
    async fn create(url: &str) -> SeededData {
        let js = support::jetstream(url).await;
        let mut expected = BTreeMap::new();
        for b in 0..PREEXISTING {
            let bucket = format!("pre_{b}");
            let store = js
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    history: 5,
                    ..Default::default()
                })
                .await
                .expect("create a bucket beforehand");
            let mut keys = BTreeMap::new();
            for k in 0..KEYS {
                let key = format!("key{k}");
                let mut values = Vec::new();
                for r in 0..REVISIONS {
                    let value = format!("{bucket}/{key}/rev{r}");
                    store
                        .put(&key, value.clone().into())
                        .await
                        .expect("put a value");
                    values.push(value);
                }
                keys.insert(key, values);
            }
            expected.insert(bucket, keys);
        }
        SeededData { expected }
    }

    /// Every key and every history entry is still there, in order.
    async fn check(&self, url: &str) {
        let js = support::jetstream(url).await;
        for (bucket, keys) in &self.expected {
            let store = js
                .get_key_value(bucket)
                .await
                .unwrap_or_else(|e| panic!("bucket {bucket} is gone: {e}"));
            for (key, values) in keys {
                let mut history = store
                    .history(key)
                    .await
                    .unwrap_or_else(|e| panic!("history of {bucket}/{key}: {e}"));
                let mut found = Vec::new();
                while let Some(entry) = history.next().await {
                    let entry = entry.unwrap_or_else(|e| panic!("{bucket}/{key}: {e}"));
                    found.push(String::from_utf8_lossy(&entry.value).into_owned());
                }
                assert_eq!(&found, values, "history of {bucket}/{key}");
            }
        }
    }
}

fn pid_alive(pid: Option<u32>) -> bool {
    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_killed_mid_wave_and_back_10s_later() {
    let mut rig = Rig::start().await;
    let data = SeededData::create(&rig.nats.url()).await;
    let pid = rig.operator.pid();
    let mut wave = rig.wave();
    let second_half = wave.split_off(WAVE / 2);
    rig.apply(wave).await;
    // Kill it while the first half is being worked on.
    rig.wait_ready_count(20, ALL_READY).await;
    tokio::task::block_in_place(|| rig.nats.stop());
    let killed = Instant::now();
    rig.apply(second_half).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(killed.elapsed())).await;
    tokio::task::block_in_place(|| rig.nats.start_again());

    rig.check_wave_outcome(&data).await;
    assert_eq!(rig.operator.pid(), pid);
    assert!(pid_alive(pid), "the operator did not survive the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restarted_mid_wave() {
    let rig = Rig::start().await;
    let data = SeededData::create(&rig.nats.url()).await;
    let pid = rig.operator.pid();
    let mut wave = rig.wave();
    let second_half = wave.split_off(WAVE / 2);
    rig.apply(wave).await;
    rig.wait_ready_count(20, ALL_READY).await;
    tokio::task::block_in_place(|| rig.cp.restart_apiserver());
    // Components created after the restart only become Ready if the watches came back.
    rig.apply(second_half).await;

    rig.check_wave_outcome(&data).await;
    assert!(
        pid_alive(pid),
        "the operator exited when the API server restarted"
    );
    assert_eq!(rig.operator.pid(), pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sigkilled_mid_wave_and_started_again() {
    let mut rig = Rig::start().await;
    let data = SeededData::create(&rig.nats.url()).await;
    let wave = rig.wave();
    // Kill it as soon as some are Ready, while the rest are still being applied and worked on.
    let (_, before_kill) = futures::join!(rig.apply(wave), async {
        let ready = rig.wait_ready_count(40, ALL_READY).await.len();
        rig.operator.kill();
        ready
    });
    assert!(
        before_kill < WAVE,
        "the wave finished before the kill ({before_kill} Ready): the test proves nothing"
    );
    let events_at_kill = rig.events().await;
    rig.operator = Operator::start(&rig.cp.kubeconfig, &OPERATOR_ARGS);

    rig.check_wave_outcome(&data).await;
    // The new process does not repeat what the old one announced: a Component Ready before the
    // kill gets no Event from the new process.
    let events = rig.events().await;
    for ((component, reason), n) in &events {
        let before = events_at_kill
            .get(&(component.clone(), reason.clone()))
            .copied()
            .unwrap_or(0);
        assert!(
            *n <= before.max(1),
            "{component}: Event {reason} repeated after the restart ({before} -> {n})"
        );
    }
}
