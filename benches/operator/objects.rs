//! The Components a run creates: ours (`state.jetstream`, each its own bucket) and the others,
//! interleaved round-robin over the namespaces, and the create that retries.

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

pub fn noise_component(ns: &str, name: &str, i: usize) -> Component {
    let type_ = NOISE_TYPES[i % NOISE_TYPES.len()];
    support::ComponentManifest::new(ns, name)
        .type_(type_)
        .item("host", &format!("{name}.example:6379"))
        .raw_item(json!({"name": "enableTLS", "value": false}))
        .item_from_secret("password", "redis", Some("password"))
        .component()
}

/// The Components of one size: `size` of ours, each its own bucket, and `noise_per_component`
/// others per one of ours, interleaved as a real cluster's come, round-robin over the namespaces.
pub fn components(
    options: &Options,
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
            let name = format!("kv-{j:06}");
            objects.push((
                true,
                jetstream_component(ns, &name, url, &format!("b{run}_{j}"), settings),
            ));
            j += 1;
        }
        for _ in 0..options.noise_per_component {
            if n < noise {
                let ns = &namespaces[n % namespaces.len()];
                objects.push((false, noise_component(ns, &format!("other-{n:06}"), n)));
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
