//! Heal on the real node (docs/heal.md): the operator installed with the chart and
//! `heal.enabled=true`; an app whose pod runs Dapr's own sidecar (daprd, in an image built here:
//! test-env/image.sh) against a `state.jetstream` Component whose bucket cannot be made while its
//! nats-server is stopped. daprd exits without its bucket, so the pod crash-loops; once NATS is
//! back and the KeyValueBucket Ready, the operator rolls the app out and its new pod is Ready
//! within seconds of the bucket, instead of at the end of the kubelet's back-off. A Deployment
//! outside the Component's scopes and one that is not Dapr-enabled crash-loop on the same
//! bucket and are never touched (their generation and annotations, as the API server has them).
//! The same story for a `pubsub.jetstream` Component (daprd exits when its NATS server cannot be
//! reached) and its JetStreamStream.
//!
//! `JKO_HEAL_COMPARE=<duration>` (e.g. `5m`) also runs the same story without heal, the app
//! crash-looping that long before NATS comes back, and prints how long the kubelet's back-off
//! took (minutes: not in the default suite; see bench/README.md).

use crate::support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::daprd::{resource_file, resources_config_map, sidecar_deployment};
use support::helm_release::{HelmRelease, kubectl, wait_for};
use support::nats::NatsServer;
use support::{ComponentManifest, node_cluster};

fn apply(object: &Value) {
    node_cluster().apply(&serde_json::to_string(object).expect("JSON"));
}

fn get(ns: &str, what: &str) -> Value {
    serde_json::from_str(&kubectl(&["-n", ns, "get", what, "-o", "json"])).expect("JSON")
}

/// RFC 3339 (second precision, as the API server writes conditions) to seconds.
fn seconds(ts: &str) -> i64 {
    ts.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("timestamp {ts}: {e}"))
        .as_second()
}

/// The pods of Deployment `app` (label `app=<app>`) that are not terminating.
fn pods_of(ns: &str, app: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(&kubectl(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &format!("app={app}"),
        "-o",
        "json",
    ]))
    .expect("JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// When the pod turned Ready (seconds), if it is.
fn ready_since(pod: &Value) -> Option<i64> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(seconds)
}

/// The pod's daprd has exited and been started again at least once, and is not Ready.
fn crash_looping(pod: &Value) -> bool {
    ready_since(pod).is_none()
        && pod["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|n| n >= 1)
}

/// The pod's daprd has been restarted `restarts` times and crashed again: it waits for the
/// kubelet's back-off (10 s doubled at each restart), not running.
fn backing_off(pod: &Value, restarts: u64) -> bool {
    let status = &pod["status"]["containerStatuses"][0];
    status["restartCount"]
        .as_u64()
        .is_some_and(|n| n >= restarts)
        && status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
}

/// What the operator could change on a Deployment, as the API server has it: its generation
/// (bumped by any change of its spec: a rollout), its annotations and its pod template's.
fn untouched_marks(ns: &str, name: &str) -> (Value, Value, Value) {
    let d = get(ns, &format!("deployment/{name}"));
    (
        d["metadata"]["generation"].clone(),
        d["metadata"]["annotations"].clone(),
        d["spec"]["template"]["metadata"]["annotations"].clone(),
    )
}

/// The operator's resync interval in these stories.
const RESYNC: Duration = Duration::from_secs(4);

/// What the Component is: a state store (its KeyValueBucket) or a pub/sub (its JetStreamStream).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    StateStore,
    PubSub,
}

impl Kind {
    /// The short name of the operator's object.
    fn object(self) -> &'static str {
        match self {
            Kind::StateStore => "kvb",
            Kind::PubSub => "jss",
        }
    }

    /// What the operator makes.
    fn what(self) -> &'static str {
        match self {
            Kind::StateStore => "bucket",
            Kind::PubSub => "stream",
        }
    }

    /// How many times `orders`' daprd has been restarted before NATS comes back: the back-off it
    /// then waits out must outlast NATS's start, the operator's next retry and the rollout. A
    /// state store's daprd fails until the bucket exists (the kubelet cannot win the race
    /// against heal by much), a pub/sub's recovers as soon as NATS answers: 40 s of back-off.
    fn restarts_before_fix(self) -> u64 {
        match self {
            Kind::StateStore => 1,
            Kind::PubSub => 3,
        }
    }

    /// The Deployments of the story: (app, Dapr-enabled). `orders` is in the Component's
    /// scopes, `billing` is Dapr-enabled but out of them, `plain` is not Dapr-enabled (the
    /// state store's story; the pub/sub's keeps the scope check, with one daprd fewer).
    fn apps(self) -> &'static [(&'static str, bool)] {
        match self {
            Kind::StateStore => &[("orders", true), ("billing", true), ("plain", false)],
            Kind::PubSub => &[("orders", true), ("billing", true)],
        }
    }
}

/// One app story: a release (heal on or off), its own nats-server on the node's bridge, stopped;
/// a Component scoped to app `orders`; Deployments running daprd on it ([`Kind::apps`]), all
/// crash-looping.
struct Story {
    kind: Kind,
    release: HelmRelease,
    nats: NatsServer,
    component: String,
}

impl Story {
    fn crash_looping(test: &str, heal: bool, kind: Kind) -> Story {
        let cp = node_cluster();
        let gateway = cp.node.as_ref().expect("a node").gateway.clone();
        let mut nats = NatsServer::start_on(&gateway);
        let values = [
            format!("heal.enabled={heal}"),
            // Any port of the bridge's address: this story's own nats-server.
            format!("natsServerPolicy.servers={{{gateway}}}"),
            // The operator retries a stopped server soon (its default back-off reaches 2m).
            "extraEnv[0].name=MAX_BACKOFF".into(),
            "extraEnv[0].value=2s".into(),
            // Resyncs soon, so that the check of no second rollout sees some.
            format!("resyncInterval={}s", RESYNC.as_secs()),
        ];
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let release = HelmRelease::install(test, &values);
        release.wait_available(1);
        nats.stop();

        let ns = release.apps.clone();
        let (component, mut manifest) = match kind {
            Kind::StateStore => {
                let bucket = support::unique_bucket("heal");
                let m = ComponentManifest::store(&ns, "statestore", &nats.url(), &bucket);
                ("statestore".to_string(), m.json())
            }
            Kind::PubSub => {
                // The stream's subjects from the annotation: no Subscription is needed.
                let m = ComponentManifest::new(&ns, "pubsub")
                    .type_("pubsub.jetstream")
                    .item("natsURL", &nats.url())
                    .annotation("jetstreamkv.io/subjects", "orders.>");
                ("pubsub".to_string(), m.json())
            }
        };
        manifest["scopes"] = serde_json::json!(["orders"]);
        apply(&manifest);
        // daprd reads the Component from a file, as the API server holds it; `billing` and
        // `plain` get it without its scopes, so that they load it (and crash-loop) too: only
        // the operator's rule keeps them out.
        let object = get(&ns, &format!("component/{component}"));
        let scoped = resource_file(&object);
        let mut unscoped = scoped.clone();
        unscoped
            .as_object_mut()
            .expect("an object")
            .remove("scopes");
        apply(&resources_config_map(&ns, "scoped", &scoped));
        apply(&resources_config_map(&ns, "unscoped", &unscoped));
        for &(app, dapr) in kind.apps() {
            let files = if app == "orders" {
                "scoped"
            } else {
                "unscoped"
            };
            apply(&sidecar_deployment(&ns, app, app, dapr, files));
        }
        for (app, _) in kind.apps() {
            wait_for(
                Duration::from_secs(90),
                &format!("the pod of {app} to crash-loop without its {}", kind.what()),
                || pods_of(&ns, app).iter().any(crash_looping).then_some(()),
                || release.describe(cp),
            );
        }
        let object = get(&ns, &format!("{}/{component}", kind.object()));
        assert_ne!(
            ready_status(&object).0,
            "True",
            "the {} is Ready without NATS: {object}",
            kind.object()
        );
        Story {
            kind,
            release,
            nats,
            component,
        }
    }

    /// The KeyValueBucket or JetStreamStream, as the API server has it.
    fn object(&self) -> Value {
        get(
            &self.release.apps,
            &format!("{}/{}", self.kind.object(), self.component),
        )
    }

    /// Starts NATS again and waits for the KeyValueBucket or JetStreamStream to be Ready; when
    /// it turned Ready. NATS comes back while `orders`' daprd waits out the kubelet's back-off
    /// ([`Kind::restarts_before_fix`]): a daprd the kubelet starts before heal acts could reach
    /// NATS itself and, for a pub/sub (whose daprd needs its stream only to subscribe), turn
    /// Ready with no heal at all, which is the kubelet's recovery, not heal's.
    fn fix(&mut self) -> i64 {
        let restarts = self.kind.restarts_before_fix();
        wait_for(
            Duration::from_secs(120),
            "orders' daprd to wait out a back-off",
            || {
                pods_of(&self.release.apps, "orders")
                    .iter()
                    .all(|pod| backing_off(pod, restarts))
                    .then_some(())
            },
            || self.release.describe(node_cluster()),
        );
        self.nats.start_again();
        wait_for(
            Duration::from_secs(60),
            &format!("the {} to be Ready once NATS is back", self.kind.object()),
            || {
                let (status, since) = ready_status(&self.object());
                (status == "True").then(|| seconds(&since))
            },
            || self.release.describe(node_cluster()),
        )
    }

    /// Waits until app's Deployment has a Ready pod; when it turned Ready.
    fn app_ready(&self, app: &str, timeout: Duration) -> i64 {
        wait_for(
            timeout,
            &format!("a Ready pod of {app}"),
            || {
                pods_of(&self.release.apps, app)
                    .iter()
                    .find_map(ready_since)
            },
            || self.release.describe(node_cluster()),
        )
    }

    /// The Events on the Component: (reason, note).
    fn events(&self) -> Vec<(String, String)> {
        let list: Value = serde_json::from_str(&kubectl(&[
            "-n",
            &self.release.apps,
            "get",
            "events",
            "--field-selector",
            &format!(
                "involvedObject.name={},involvedObject.kind=Component",
                self.component
            ),
            "-o",
            "json",
        ]))
        .expect("JSON");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_string(),
                    e["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// Ready's (status, lastTransitionTime) of a KeyValueBucket or JetStreamStream.
fn ready_status(object: &Value) -> (String, String) {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["lastTransitionTime"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_app_is_ready_within_seconds_of_its_bucket_and_no_other_is_touched() {
    heals("heal", Kind::StateStore);
    // The measurement without heal, asked for: minutes of the kubelet's back-off.
    if let Some(wait) = std::env::var("JKO_HEAL_COMPARE")
        .ok()
        .filter(|v| !v.is_empty())
    {
        let wait = jetstream_kv_operator::duration::parse_flag(&wait)
            .unwrap_or_else(|e| panic!("JKO_HEAL_COMPARE: {e}"));
        without_heal(wait);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_pubsub_app_is_ready_within_seconds_of_its_stream_and_no_other_is_touched()
{
    heals("heal-pubsub", Kind::PubSub);
}

/// The story with heal on: the app in scope is rolled out once and Ready within seconds of its
/// bucket or stream; the others are never touched.
fn heals(test: &str, kind: Kind) {
    let started = Instant::now();
    let mut story = Story::crash_looping(test, true, kind);
    let ns = story.release.apps.clone();
    let before: Vec<_> = kind
        .apps()
        .iter()
        .map(|(app, _)| (*app, untouched_marks(&ns, app)))
        .collect();
    let crash_looping_at = started.elapsed();

    let bucket_ready = story.fix();
    let seen_ready = Instant::now();
    let app_ready = story.app_ready("orders", Duration::from_secs(60));
    let waited = seen_ready.elapsed();

    // The operator rolled `orders` out, as kubectl rollout restart does, once, for this
    // transition.
    let orders = get(&ns, "deployment/orders");
    let (_, since) = ready_status(&story.object());
    assert!(
        orders["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "orders was not rolled out: {orders}\nEvents on the Component: {:?}\n{}",
        story.events(),
        story.release.describe(node_cluster())
    );
    let uid = get(&ns, &format!("component/{}", story.component))["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    assert_eq!(
        orders["metadata"]["annotations"]["jetstreamkv.io/healed-for"],
        format!("{uid}@{since}"),
        "the transition healed for is recorded on the workload"
    );
    assert_eq!(
        orders["metadata"]["generation"].as_i64(),
        before[0].1.0.as_i64().map(|g| g + 1),
        "one rollout of orders"
    );
    assert!(
        app_ready - bucket_ready <= 20,
        "orders' pod turned Ready {} s after the {}",
        app_ready - bucket_ready,
        kind.what()
    );
    // The Deployment outside the scopes and the one without Dapr, crash-looping on the same
    // bucket, are as they were: the API server's generation and annotations.
    let untouched = || {
        for (app, marks) in &before[1..] {
            assert_eq!(
                &untouched_marks(&ns, app),
                marks,
                "{app} was changed by the operator"
            );
        }
    };
    untouched();
    let events = story.events();
    let restarted: Vec<_> = events
        .iter()
        .filter(|(reason, _)| reason == "WorkloadsRestarted")
        .collect();
    assert_eq!(restarted.len(), 1, "one Event per transition: {events:?}");
    assert!(
        restarted[0].1.contains("Deployment/orders")
            && !restarted[0].1.contains("billing")
            && !restarted[0].1.contains("plain"),
        "the Event names what was restarted, and only that: {}",
        restarted[0].1
    );

    // Two resyncs later too.
    std::thread::sleep(RESYNC * 2 + Duration::from_secs(1));
    untouched();
    let orders_after = get(&ns, "deployment/orders");
    assert_eq!(
        orders_after["metadata"]["generation"], orders["metadata"]["generation"],
        "orders rolled out again for the same transition"
    );
    let what = kind.what();
    eprintln!(
        "figures: {kind:?}: with heal, orders' pod Ready {} s after the {what} turned Ready (the \
         API's second-precision times; {:.1?} from the test seeing the {what} Ready to seeing \
         the pod Ready); the apps crash-looping {:.1?} after the start",
        app_ready - bucket_ready,
        waited,
        crash_looping_at
    );
}

/// The same story without heal: the app crash-loops for `crash_for`, NATS comes back, and the
/// pod waits for the kubelet's back-off; nothing is rolled out.
fn without_heal(crash_for: Duration) {
    let mut story = Story::crash_looping("no-heal", false, Kind::StateStore);
    let ns = story.release.apps.clone();
    let before = untouched_marks(&ns, "orders");
    std::thread::sleep(crash_for);
    let restarts = pods_of(&ns, "orders")[0]["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or_default();
    let bucket_ready = story.fix();
    let app_ready = story.app_ready("orders", Duration::from_secs(600));
    assert_eq!(
        untouched_marks(&ns, "orders"),
        before,
        "heal off rolled orders out"
    );
    eprintln!(
        "figures: without heal, after {crash_for:?} of crash-looping ({restarts} restarts), \
         orders' pod Ready {} s after the bucket turned Ready (the kubelet's back-off)",
        app_ready - bucket_ready
    );
}
