//! The upgrade users run, on the real node: the last release (`UPGRADE_FROM_VERSION` of
//! test-env/releases.env, built from its commit by test-env/release-image.sh) installed with its
//! own chart and image, a state store and a pub/sub Ready; then the procedure of docs/upgrade.md,
//! its commands read from the doc and run as a user runs them (CRDs first, then `helm upgrade` to
//! this checkout's chart and image); then the doc's rollback. Through both, judged by the servers:
//! - every bucket and stream as nats-server has it (`/jsz`: creation time, configuration, state
//!   with every sequence; a key's revision) is as it was;
//! - nats-server audits no request that changes a stream (its API audit advisories), and does
//!   audit the new operator's reads (the instrument sees it);
//! - no Component, KeyValueBucket or JetStreamStream is written (resourceVersions), and a watch
//!   of the last two never sees Ready other than True.
//!
//! A module of its own: it installs the release's CRDs (cluster-wide) where other node tests run
//! this checkout's. Needs root and the images: test-env/test.sh, or `eval "$(test-env/setup.sh)";
//! eval "$(test-env/operator-image.sh)"` first.

use crate::support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use support::advisories::Advisories;
use support::helm_release::{Chart, HelmRelease, kubectl, nats, wait_for};
use support::{ComponentManifest, node_cluster};

/// The release name and namespace docs/upgrade.md's commands use.
const RELEASE: &str = "jetstream-kv-operator";
/// The resync interval this test installs the release with (the doc's upgrade keeps it): the
/// steady-state checks wait for resyncs, so the shorter, the quicker.
const RESYNC: Duration = Duration::from_secs(4);
/// The CRDs of the operator's own kinds.
const CRDS: [&str; 3] = [
    "keyvaluebuckets.jetstreamkv.io",
    "jetstreamstreams.jetstreamkv.io",
    "natsserverpolicies.jetstreamkv.io",
];

/// The shell commands of the ```sh blocks in the section of docs/upgrade.md whose heading is
/// `heading` (comments and blank lines left out, continuation lines joined).
fn doc_commands(heading: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(support::repo_root().join("docs/upgrade.md"))
        .expect("docs/upgrade.md");
    let mut commands = Vec::new();
    let (mut in_section, mut in_block) = (false, false);
    let mut pending = String::new();
    for line in doc.lines() {
        if line.starts_with("## ") {
            in_section = line.trim_start_matches("## ").trim() == heading;
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = in_section && !in_block && trimmed == "```sh";
            continue;
        }
        if !in_block || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    assert!(
        !commands.is_empty(),
        "no ```sh commands under '## {heading}' in docs/upgrade.md"
    );
    commands
}

/// Runs a command of the doc with `sh -c` from the repository's root, against the node cluster,
/// with the helm the tests use first on `PATH`; panics with its output when it fails.
fn run_doc_command(command: &str, release: &HelmRelease) -> String {
    let helm = std::env::var("JKO_HELM_BIN").unwrap_or_else(|_| "helm".into());
    let helm_dir = std::path::Path::new(&helm)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let path = format!(
        "{helm_dir}:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let started = Instant::now();
    let mut sh = std::process::Command::new("sh");
    support::kube_tool_env(&mut sh, &node_cluster().kubeconfig);
    let out = sh
        .args(["-c", command])
        .env("PATH", path)
        .current_dir(support::repo_root())
        .output()
        .unwrap_or_else(|e| panic!("run sh -c {command:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "docs/upgrade.md's command failed ({}): {command}\n{text}\n{}",
        out.status,
        release.describe(node_cluster())
    );
    eprintln!("$ {command}   ({:.1?})\n{text}", started.elapsed());
    text
}

/// A bucket's or stream's record on nats-server (`/jsz`): when it was created, its
/// configuration and its state (messages, bytes, first and last sequence and time...).
fn streams_on_server(names: &[&str]) -> BTreeMap<String, Value> {
    let jsz = nats().jsz();
    let mut found = BTreeMap::new();
    for account in jsz["account_details"].as_array().into_iter().flatten() {
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            let name = stream["name"].as_str().unwrap_or_default();
            if names.contains(&name) {
                let record = serde_json::json!({
                    "created": stream["created"],
                    "config": stream["config"],
                    "state": stream["state"],
                });
                found.insert(name.to_string(), record);
            }
        }
    }
    assert_eq!(found.len(), names.len(), "streams {names:?} in /jsz: {jsz}");
    found
}

/// What the servers hold of this test's objects at one moment.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Stream name → nats-server's record of it.
    streams: BTreeMap<String, Value>,
    /// The revision of the key the test wrote in the bucket.
    revision: u64,
    /// `kind/name` → resourceVersion, of the Components and their KeyValueBucket and
    /// JetStreamStream.
    versions: BTreeMap<String, String>,
    /// `kind/name` → the Ready condition, whole (status, reason, message, times).
    ready: BTreeMap<String, Value>,
    /// `kind/name` → the spec the operator wrote.
    specs: BTreeMap<String, Value>,
}

/// The differences between two snapshots, one line each.
fn differences(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (name, was) in &before.streams {
        let now = &after.streams[name];
        for part in ["created", "config", "state"] {
            if was[part] != now[part] {
                out.push(format!(
                    "stream {name}: {part} was {} and is {}",
                    was[part], now[part]
                ));
            }
        }
    }
    if before.revision != after.revision {
        out.push(format!(
            "the key's revision was {} and is {}",
            before.revision, after.revision
        ));
    }
    for (object, was) in &before.versions {
        let now = &after.versions[object];
        if was != now {
            out.push(format!("{object} written: resourceVersion {was} -> {now}"));
        }
    }
    for (object, was) in &before.specs {
        let now = &after.specs[object];
        if was != now {
            out.push(format!("{object}: spec was {was} and is {now}"));
        }
    }
    for (object, was) in &before.ready {
        let now = &after.ready[object];
        if was != now {
            out.push(format!("{object}: Ready was {was} and is {now}"));
        }
    }
    out
}

/// The JetStreamStream, as [`Snapshot`] keys it.
const JSS: &str = "jetstreamstreams.jetstreamkv.io/pubsub";

/// `snapshot` without the one difference between 0.1.0 and 0.2.0 allowed: 0.2.0 shows the
/// stream's discard policy in a JetStreamStream's `spec.config` (`discard: old`, its default),
/// which 0.1.0 did not, so each version writes the spec once after the other (its generation
/// and so the conditions' observedGeneration move with it; nothing else may).
fn without_discard(snapshot: &Snapshot) -> Snapshot {
    let mut specs = snapshot.specs.clone();
    if let Some(config) = specs.get_mut(JSS).and_then(|s| s["config"].as_object_mut()) {
        config.remove("discard");
    }
    let mut ready = snapshot.ready.clone();
    if let Some(condition) = ready.get_mut(JSS).and_then(Value::as_object_mut) {
        condition.remove("observedGeneration");
    }
    let mut versions = snapshot.versions.clone();
    versions.remove(JSS);
    Snapshot {
        streams: snapshot.streams.clone(),
        revision: snapshot.revision,
        versions,
        ready,
        specs,
    }
}

/// The objects of the test, as `kind/name`, and how kubectl names their kind.
struct Objects {
    apps: String,
    bucket: String,
    stream: String,
}

impl Objects {
    const ALL: [(&'static str, &'static str); 4] = [
        ("components.dapr.io", "statestore"),
        ("components.dapr.io", "pubsub"),
        ("keyvaluebuckets.jetstreamkv.io", "statestore"),
        ("jetstreamstreams.jetstreamkv.io", "pubsub"),
    ];

    async fn snapshot(&self) -> Snapshot {
        let js = support::jetstream(&nats().url()).await;
        let kv = js.get_key_value(&self.bucket).await.expect("the bucket");
        let revision = kv
            .entry("app.key")
            .await
            .expect("read the key")
            .expect("the key is there")
            .revision;
        let mut versions = BTreeMap::new();
        let mut ready = BTreeMap::new();
        let mut specs = BTreeMap::new();
        for (kind, name) in Self::ALL {
            let object: Value = serde_json::from_str(&kubectl(&[
                "-n", &self.apps, "get", kind, name, "-o", "json",
            ]))
            .expect("an object");
            let key = format!("{kind}/{name}");
            versions.insert(
                key.clone(),
                object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            if !kind.starts_with("components") {
                ready.insert(key.clone(), ready_condition(&object));
                specs.insert(key, object["spec"].clone());
            }
        }
        Snapshot {
            streams: streams_on_server(&[&format!("KV_{}", self.bucket), &self.stream]),
            revision,
            versions,
            ready,
            specs,
        }
    }
}

/// The Ready condition of a KeyValueBucket or JetStreamStream (Null when it has none).
fn ready_condition(object: &Value) -> Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// What a watch of the KeyValueBuckets and JetStreamStreams of `ns` (at `v1alpha1`, served by
/// the release's CRDs and by this checkout's) saw: `(kind/name, resourceVersion, Ready status)`
/// for every object it was told of, the lists after a restart of the watch included.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String, String)>>>);

impl Seen {
    fn watch(client: &kube::Client, ns: &str) -> Seen {
        let seen = Seen::default();
        for (kind, plural) in [
            ("KeyValueBucket", "keyvaluebuckets"),
            ("JetStreamStream", "jetstreamstreams"),
        ] {
            let gvk = GroupVersionKind::gvk("jetstreamkv.io", "v1alpha1", kind);
            let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
            let record = seen.clone();
            tokio::spawn(async move {
                let mut events =
                    std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
                while let Some(event) = events.next().await {
                    let object = match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                        _ => continue,
                    };
                    let json = serde_json::to_value(&object).unwrap_or_default();
                    let status = ready_condition(&json)["status"]
                        .as_str()
                        .unwrap_or("none")
                        .to_string();
                    record.0.lock().unwrap().push((
                        format!("{kind}/{}", object.metadata.name.unwrap_or_default()),
                        object.metadata.resource_version.unwrap_or_default(),
                        status,
                    ));
                }
            });
        }
        seen
    }

    /// What was seen since the last call.
    fn take(&self) -> Vec<(String, String, String)> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

/// One phase of the test (the upgrade, the rollback): the doc's commands of `heading` run, the
/// new pods Ready and holding the Lease, then two resyncs of the operator they run; returns the
/// snapshot after it, having checked nothing changed from `before`.
async fn phase(
    what: &str,
    heading: &str,
    release: &HelmRelease,
    objects: &Objects,
    before: &Snapshot,
    extra_args: &str,
) -> Snapshot {
    let seen = Seen::watch(
        &support::client_for(&node_cluster().kubeconfig).await,
        &release.apps,
    );
    let (advisories, _watcher) = Advisories::start(&nats().url()).await;
    let api_before = nats().api_requests();
    let pods_before = release.ready_pods();
    let started = Instant::now();
    for command in doc_commands(heading) {
        let command = if command.starts_with("helm upgrade ") {
            // The one addition to the doc's commands: the image built here, whose tag is not the
            // chart's appVersion.
            format!("{command} {extra_args}")
        } else {
            command
        };
        run_doc_command(&command, release);
    }
    let pods = release.wait_available(1);
    assert_ne!(pods, pods_before, "{what}: the pod was not replaced");
    wait_for(
        Duration::from_secs(60),
        &format!("{what}: the new pod to hold the Lease"),
        || (release.lease_holder().as_deref() == Some(pods[0].as_str())).then_some(()),
        || release.describe(node_cluster()),
    );
    let done = started.elapsed();
    // The new leader asks nats-server about both streams (its first reconcile of each), then
    // resyncs twice.
    let streams = [format!("KV_{}", objects.bucket), objects.stream.clone()];
    let leading = advisories.count();
    wait_for(
        Duration::from_secs(60),
        &format!("{what}: nats-server to audit the new leader's requests for {streams:?}"),
        || {
            let since = advisories.all().split_off(leading);
            streams
                .iter()
                .all(|stream| since.iter().any(|(_, s)| s == stream))
                .then_some(())
        },
        || release.describe(node_cluster()),
    );
    tokio::time::sleep(RESYNC * 2 + Duration::from_secs(2)).await;

    let after = objects.snapshot().await;
    let requests = advisories.all();
    let api_requests = nats().api_requests() - api_before;
    let watched = seen.take();
    let writes = watched
        .iter()
        .map(|(object, rv, _)| (object.clone(), rv.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    eprintln!(
        "figures: {what}: the doc's commands to the new pod holding the Lease {done:.1?}; \
         nats-server served {api_requests} JetStream API requests meanwhile, audited {} stream \
         requests ({} changing a stream); the watch saw {} events, {writes} distinct \
         (object, resourceVersion)",
        requests.len(),
        advisories.mutating().len(),
        watched.len(),
    );
    // The instruments see the new operator (nats-server audited its requests for both streams,
    // above) and the objects (the watch listed both).
    assert!(
        watched
            .iter()
            .any(|(o, _, _)| o.starts_with("KeyValueBucket/"))
            && watched
                .iter()
                .any(|(o, _, _)| o.starts_with("JetStreamStream/")),
        "{what}: the watch saw neither object: {watched:?}"
    );
    assert_eq!(
        advisories.mutating(),
        Vec::<(String, String)>::new(),
        "{what}: requests that change a stream"
    );
    let not_ready: Vec<_> = watched.iter().filter(|(_, _, s)| s != "True").collect();
    assert!(
        not_ready.is_empty(),
        "{what}: Ready left True: {not_ready:?}"
    );
    let all = differences(before, &after);
    assert_eq!(
        differences(&without_discard(before), &without_discard(&after)),
        Vec::<String>::new(),
        "{what}: changed (all differences: {all:#?})\n{}",
        release.describe(node_cluster())
    );
    // The one change allowed, once at most: the JetStreamStream's spec (see without_discard),
    // which is two writes: the spec, then the status subresource (observedGeneration).
    let stream_writes = watched
        .iter()
        .filter(|(o, _, _)| o.starts_with("JetStreamStream/"))
        .map(|(_, rv, _)| rv.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .saturating_sub(1);
    assert!(
        stream_writes <= 2,
        "{what}: the JetStreamStream was written {stream_writes} times: {watched:?}"
    );
    eprintln!("figures: {what}: differences {all:?}");
    after
}

// Worker threads to spare: the waits on kubectl block one, while the watches and the advisories'
// subscriber run on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_release_upgrades_and_rolls_back_leaving_buckets_streams_and_statuses_untouched() {
    let started = Instant::now();
    let cp = node_cluster();
    let from = Chart::release();
    let to = Chart::current();
    let version = std::env::var("JKO_RELEASE_VERSION").unwrap_or_default();
    // The release installs its own CRDs (helm installs a chart's crds/ when they are missing):
    // the cluster starts without this checkout's.
    kubectl(&[
        "delete",
        "crd",
        "--ignore-not-found",
        "--wait=true",
        CRDS[0],
        CRDS[1],
        CRDS[2],
    ]);
    let apps = format!("apps-{}", support::random_suffix());
    let resync = format!("resyncInterval={}s", RESYNC.as_secs());
    let release = HelmRelease::install_chart(&from, RELEASE, RELEASE, &apps, &[&resync]);
    release.wait_available(1);
    let served = kubectl(&[
        "get",
        "crd",
        CRDS[0],
        "-o",
        "jsonpath={.spec.versions[*].name}",
    ]);
    assert_eq!(served, "v1alpha1", "the release's CRD");
    let installed = started.elapsed();

    // A state store and a pub/sub, Ready under the release, with data: a key in the bucket and
    // three messages in the stream.
    let bucket = support::unique_bucket("upgrade");
    release.component_ready("statestore", &bucket);
    let topic = format!("orders.{}", support::random_suffix());
    cp.apply(
        &ComponentManifest::new(&apps, "pubsub")
            .type_("pubsub.jetstream")
            .item("natsURL", &nats().url())
            .annotation("jetstreamkv.io/subjects", &topic)
            .yaml(),
    );
    release.wait_ready("jss", "pubsub");
    let jss: Value = serde_json::from_str(&kubectl(&[
        "-n", &apps, "get", "jss", "pubsub", "-o", "json",
    ]))
    .expect("jss");
    let stream = jss["spec"]["stream"]
        .as_str()
        .expect("the JetStreamStream names its stream")
        .to_string();
    let js = support::jetstream(&nats().url()).await;
    let kv = js.get_key_value(&bucket).await.expect("the bucket");
    kv.put("app.key", "kept".into()).await.expect("put a key");
    for i in 0..3 {
        js.publish(topic.clone(), format!("m{i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let objects = Objects {
        apps: apps.clone(),
        bucket,
        stream,
    };
    // The release's operator settles: a resync after Ready writes nothing (as 0.1.0 promised).
    tokio::time::sleep(RESYNC + Duration::from_secs(2)).await;
    let before = objects.snapshot().await;
    tokio::time::sleep(RESYNC).await;
    assert_eq!(
        differences(&before, &objects.snapshot().await),
        Vec::<String>::new(),
        "the release {version} was not in a steady state"
    );

    let to_image = to.image_args().join(" ");
    let upgraded = phase(
        &format!("upgrade from {version}"),
        "The procedure",
        &release,
        &objects,
        &before,
        &to_image,
    )
    .await;
    // Each of the three, not only the last of `helm show crds` (its files once ran together into
    // one YAML document, and kubectl applied the last CRD alone).
    for crd in CRDS {
        let served = kubectl(&["get", "crd", crd, "-o", "jsonpath={.spec.versions[*].name}"]);
        assert_eq!(served, "v1beta1 v1alpha1", "{crd} after the upgrade");
    }
    let pod = &release.ready_pods()[0];
    let image = kubectl(&[
        "-n",
        RELEASE,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ]);
    assert_eq!(image, to.image(), "the upgraded pod's image");

    let rolled_back = phase(
        &format!("rollback to {version}"),
        "Rollback",
        &release,
        &objects,
        &upgraded,
        "",
    )
    .await;
    let pod = &release.ready_pods()[0];
    let image = kubectl(&[
        "-n",
        RELEASE,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.spec.containers[0].image}",
    ]);
    assert_eq!(image, from.image(), "the rolled back pod's image");

    // The instruments catch a change: a key written and a Component annotated are differences,
    // and a stream created is a request that changes a stream.
    let kv = js.get_key_value(&objects.bucket).await.expect("the bucket");
    kv.put("app.key", "changed".into()).await.expect("put");
    kubectl(&[
        "-n",
        &apps,
        "annotate",
        "components.dapr.io",
        "pubsub",
        "example.com/touched=yes",
    ]);
    let changed = differences(&rolled_back, &objects.snapshot().await);
    let (advisories, _watcher) = Advisories::start(&nats().url()).await;
    let control = format!("control_{}", support::random_suffix());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: control.clone(),
        subjects: vec![format!("{control}.>")],
        ..Default::default()
    })
    .await
    .expect("create a stream");
    wait_for(
        Duration::from_secs(10),
        "nats-server to audit the creation of a stream",
        || {
            advisories
                .mutating()
                .contains(&("CREATE".to_string(), control.clone()))
                .then_some(())
        },
        || format!("{:?}", advisories.all()),
    );
    assert!(
        changed.iter().any(|d| d.contains("revision"))
            && changed
                .iter()
                .any(|d| d.contains("components.dapr.io/pubsub written")),
        "the snapshots missed a change: {changed:?}"
    );
    eprintln!(
        "figures: install of {version} and its Components to the end of the rollback {:.1?} \
         ({installed:.1?} to the release's pod available)",
        started.elapsed()
    );
}
