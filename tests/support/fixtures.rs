//! Fixtures: the objects, names and readings every test makes, in one place. A Component
//! manifest builder, Secrets, bucket names, a bucket's data and stream as NATS reports them, and
//! `/metrics` scraping.

use std::collections::BTreeMap;

use async_nats::jetstream::stream;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{jetstream, random_suffix};

/// A Dapr Component manifest, `state.jetstream` v1 unless told otherwise.
#[derive(Clone, Debug)]
pub struct ComponentManifest {
    namespace: String,
    name: String,
    type_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    items: Vec<Value>,
}

impl ComponentManifest {
    /// A Component with no metadata items.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            type_: "state.jetstream".to_owned(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            items: Vec::new(),
        }
    }

    /// A Component with inline `natsURL` and `bucket`.
    pub fn store(namespace: &str, name: &str, nats_url: &str, bucket: &str) -> Self {
        Self::new(namespace, name)
            .item("natsURL", nats_url)
            .item("bucket", bucket)
    }

    /// Another component type (`state.redis`...).
    pub fn type_(mut self, type_: &str) -> Self {
        self.type_ = type_.to_owned();
        self
    }

    /// A label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// An annotation (the whole key).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// `jetstreamkv.io/<setting>` annotations.
    pub fn settings(mut self, settings: &[(&str, &str)]) -> Self {
        for (k, v) in settings {
            self = self.annotation(&format!("jetstreamkv.io/{k}"), v);
        }
        self
    }

    /// Annotations written as the inside of a YAML flow map (`a: "1", b: "2"`).
    pub fn annotations_yaml(mut self, flow: &str) -> Self {
        let map: BTreeMap<String, Value> =
            serde_yaml::from_str(&format!("{{{flow}}}")).expect("annotations are a YAML flow map");
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.annotations.insert(k, v);
        }
        self
    }

    /// An inline metadata item.
    pub fn item(mut self, name: &str, value: &str) -> Self {
        self.items.push(item(name, value));
        self
    }

    /// A metadata item from a key of a Secret (`key` None: the item's name).
    pub fn item_from_secret(mut self, name: &str, secret: &str, key: Option<&str>) -> Self {
        self.items.push(secret_item(name, secret, key));
        self
    }

    /// Any metadata item, as JSON.
    pub fn raw_item(mut self, item: Value) -> Self {
        self.items.push(item);
        self
    }

    /// The manifest as JSON.
    pub fn json(&self) -> Value {
        let mut metadata = json!({"name": self.name, "namespace": self.namespace});
        if !self.labels.is_empty() {
            metadata["labels"] = json!(self.labels);
        }
        if !self.annotations.is_empty() {
            metadata["annotations"] = json!(self.annotations);
        }
        json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": metadata,
            "spec": {"type": self.type_, "version": "v1", "metadata": self.items},
        })
    }

    /// The Component, typed.
    pub fn component(&self) -> jetstream_kv_operator::dapr::Component {
        serde_json::from_value(self.json()).expect("a Component")
    }

    /// The manifest as YAML, for `kubectl apply -f -`.
    pub fn yaml(&self) -> String {
        serde_yaml::to_string(&self.json()).expect("a manifest is YAML")
    }
}

/// A Secret manifest with exactly these keys and raw values (base64 in `data`, so a trailing
/// line break is kept).
pub fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine as _;
    let data: BTreeMap<&str, String> = data
        .iter()
        .map(|(k, v)| (*k, base64::engine::general_purpose::STANDARD.encode(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    })
}

/// An inline metadata item.
pub fn item(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// A metadata item from a key of a Secret (`key` None leaves the key out of the manifest).
pub fn secret_item(name: &str, secret: &str, key: Option<&str>) -> Value {
    match key {
        Some(key) => json!({"name": name, "secretKeyRef": {"name": secret, "key": key}}),
        None => json!({"name": name, "secretKeyRef": {"name": secret}}),
    }
}

/// The YAML of a `state.jetstream` Component with bucket settings (`("history", "5")` is the
/// annotation `jetstreamkv.io/history: "5"`).
pub fn store_yaml(
    namespace: &str,
    name: &str,
    nats_url: &str,
    bucket: &str,
    settings: &[(&str, &str)],
) -> String {
    ComponentManifest::store(namespace, name, nats_url, bucket)
        .settings(settings)
        .yaml()
}

/// A bucket name no other test uses.
pub fn unique_bucket(prefix: &str) -> String {
    format!("{prefix}_{}", random_suffix())
}

/// Every sample of a Prometheus text page: `name{labels}` (as printed) → value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the first sample whose series starts with `series` (0 when there is none).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// The bucket's stream info, as the server (in a cluster, the stream's leader) reports it.
pub async fn stream_info(url: &str, bucket: &str) -> stream::Info {
    let mut s = jetstream(url)
        .await
        .get_stream(format!("KV_{bucket}"))
        .await
        .unwrap_or_else(|e| panic!("stream KV_{bucket}: {e}"));
    s.info().await.expect("stream info").clone()
}

/// Writes `revisions` values to each of `keys` keys (`key0`...) of a bucket; returns every
/// (key, value) written, in order.
pub async fn seed(url: &str, bucket: &str, keys: usize, revisions: usize) -> Vec<(String, String)> {
    let store = jetstream(url)
        .await
        .get_key_value(bucket)
        .await
        .expect("bucket");
    let mut out = Vec::new();
    for k in 0..keys {
        for r in 0..revisions {
            let key = format!("key{k}");
            let value = format!("{bucket}/{key}/rev{r}");
            store.put(&key, value.clone().into()).await.expect("put");
            out.push((key, value));
        }
    }
    out
}

/// Every revision of every key (key, revision, value): keys in order, each oldest first.
pub async fn revisions(url: &str, bucket: &str) -> Vec<(String, u64, Vec<u8>)> {
    let store = jetstream(url)
        .await
        .get_key_value(bucket)
        .await
        .expect("bucket");
    let mut keys: Vec<String> = store
        .keys()
        .await
        .expect("keys")
        .map(|k| k.expect("key"))
        .collect()
        .await;
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let mut entries = store.history(&key).await.expect("history");
        while let Some(entry) = entries.next().await {
            let entry = entry.expect("entry");
            out.push((key.clone(), entry.revision, entry.value.to_vec()));
        }
    }
    out
}

/// Every value of every key as (key, value): keys in order, each oldest first.
pub async fn history(url: &str, bucket: &str) -> Vec<(String, String)> {
    revisions(url, bucket)
        .await
        .into_iter()
        .map(|(key, _, value)| (key, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

/// Writes a key with a TTL of its own and one without, and checks what a KV reader sees: the
/// key with a TTL is replaced by a delete marker when it expires (seen by a watcher as a purge),
/// the marker itself goes after the bucket's `limit-marker-ttl`, and the other key stays.
pub async fn per_key_ttl_behaves_as_documented(url: &str, bucket: &str) {
    use async_nats::jetstream::kv::Operation;
    const WAIT: std::time::Duration = std::time::Duration::from_secs(60);
    let store = jetstream(url)
        .await
        .get_key_value(bucket)
        .await
        .expect("bucket");
    let mut watch = store.watch("session").await.expect("watch");
    store
        .create_with_ttl("session", "token".into(), std::time::Duration::from_secs(1))
        .await
        .expect("a value with a TTL of its own");
    store.put("kept", "forever".into()).await.expect("put");
    let next = async |watch: &mut async_nats::jetstream::kv::Watch| {
        tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("the watcher hears of the key")
            .expect("watch open")
            .expect("entry")
    };
    let put = next(&mut watch).await;
    assert_eq!(
        (put.operation, &put.value[..]),
        (Operation::Put, &b"token"[..])
    );
    // The delete marker the server leaves when the key's own TTL runs out.
    let marker = next(&mut watch).await;
    assert_eq!(marker.operation, Operation::Purge, "{marker:?}");
    // A get may be answered by a replica of an R3 bucket that has not applied the marker yet
    // (direct get; seen once in fresh27: "token" just after the watcher's Purge): it reads the
    // key gone within seconds.
    super::eventually(
        WAIT,
        "a get to find the key gone",
        || async {
            store
                .get("session")
                .await
                .expect("get")
                .is_none()
                .then_some(())
        },
        async || format!("{:?}", store.get("session").await),
    )
    .await;
    // The marker is kept for the limit-marker TTL, then removed too.
    super::eventually(
        WAIT,
        "the delete marker expires",
        || async {
            store
                .entry("session")
                .await
                .expect("entry")
                .is_none()
                .then_some(())
        },
        async || format!("{:?}", store.entry("session").await),
    )
    .await;
    assert_eq!(
        store.get("kept").await.expect("get").as_deref(),
        Some(&b"forever"[..])
    );
}
