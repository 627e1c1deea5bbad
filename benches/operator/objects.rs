//! The Components a run creates: ours (`state.jetstream`, each its own bucket, or
//! `pubsub.jetstream`, each its own stream) and the others, interleaved round-robin over the
//! namespaces, and the create that retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jetstream_kv_operator::dapr::Component;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::{Options, progress, support};

pub const NOISE_TYPES: [&str; 5] = [
    "state.redis",
    "pubsub.kafka",
    "bindings.cron",
    "secretstores.kubernetes",
    "state.postgresql",
];

pub fn jetstream_component(
    ns: &str,
    name: &str,
    url: &str,
    bucket: &str,
    settings: &[(&str, &str)],
) -> Component {
    support::ComponentManifest::store(ns, name, url, bucket)
        .settings(settings)
        .component()
}

/// What a wave provisions: a bucket per `state.jetstream` Component, or a stream per
/// `pubsub.jetstream` Component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveKind {
    Buckets,
    Streams,
}

impl WaveKind {
    /// The scenario's name in the results.
    pub fn scenario(self) -> &'static str {
        match self {
            Self::Buckets => "wave",
            Self::Streams => "pubsub-wave",
        }
    }

    /// The resource that says Ready, as the benchmark's watch names it.
    pub fn resource(self) -> kube::discovery::ApiResource {
        match self {
            Self::Buckets => kube::discovery::ApiResource::erase::<
                jetstream_kv_operator::crd::KeyValueBucket,
            >(&()),
            Self::Streams => kube::discovery::ApiResource::erase::<
                jetstream_kv_operator::pubsub::resource::JetStreamStream,
            >(&()),
        }
    }

    /// Plural words for progress lines.
    pub fn noun(self) -> &'static str {
        match self {
            Self::Buckets => "KeyValueBuckets",
            Self::Streams => "JetStreamStreams",
        }
    }
}

/// A `pubsub.jetstream` Component whose stream (`<namespace>_<name>`) holds `<prefix>.>`.
pub fn pubsub_component(ns: &str, name: &str, url: &str, prefix: &str) -> Component {
    support::ComponentManifest::new(ns, name)
        .type_("pubsub.jetstream")
        .item("natsURL", url)
        .annotation("jetstreamkv.io/subjects", &format!("{prefix}.>"))
        .component()
}

pub fn noise_component(ns: &str, name: &str, i: usize) -> Component {
    let type_ = NOISE_TYPES[i % NOISE_TYPES.len()];
    support::ComponentManifest::new(ns, name)
        .type_(type_)
        .item("host", &format!("{name}.example:6379"))
        .raw_item(json!({"name": "enableTLS", "value": false}))
        .item_from_secret("password", "redis", Some("password"))
        .component()
}

/// The Components of one size: `size` of ours, each its own bucket or stream, and
/// `noise_per_component` others per one of ours, interleaved as a real cluster's come,
/// round-robin over the namespaces.
pub fn components(
    options: &Options,
    kind: WaveKind,
    size: usize,
    namespaces: &[String],
    url: &str,
    settings: &[(&str, &str)],
) -> Vec<(bool, Component)> {
    let noise = size * options.noise_per_component;
    let run = support::random_suffix();
    let mut objects: Vec<(bool, Component)> = Vec::with_capacity(size + noise);
    let (mut j, mut n) = (0usize, 0usize);
    while j < size || n < noise {
        if j < size {
            let ns = &namespaces[j % namespaces.len()];
            let component = match kind {
                WaveKind::Buckets => jetstream_component(
                    ns,
                    &format!("kv-{j:06}"),
                    url,
                    &format!("b{run}_{j}"),
                    settings,
                ),
                WaveKind::Streams => {
                    pubsub_component(ns, &format!("ps-{j:06}"), url, &format!("t{run}-{j}"))
                }
            };
            objects.push((true, component));
            j += 1;
        }
        for _ in 0..options.noise_per_component {
            if n < noise {
                let ns = &namespaces[n % namespaces.len()];
                let name = match kind {
                    WaveKind::Buckets => format!("other-{n:06}"),
                    WaveKind::Streams => format!("other-ps-{n:06}"),
                };
                objects.push((false, noise_component(ns, &name, n)));
                n += 1;
            }
        }
    }
    objects
}

/// Creates a Component (retrying a few times), and returns it as created.
pub async fn create(client: Client, component: Component, retries: &AtomicU64) -> Component {
    let ns = component.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", component.name_any());
    let api: Api<Component> = Api::namespaced(client, &ns);
    let mut attempt = 0;
    loop {
        match api.create(&PostParams::default(), &component).await {
            Ok(created) => return created,
            Err(e) if attempt < 10 => {
                attempt += 1;
                retries.fetch_add(1, Ordering::Relaxed);
                if attempt == 1 {
                    progress(&format!("create {key} failed, retrying: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => panic!("create {key}: {e}"),
        }
    }
}
