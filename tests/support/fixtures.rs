//! Fixtures: the objects, names and readings every test makes, in one place. A Component
//! manifest builder, Secrets, bucket names, and `/metrics` scraping.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::random_suffix;

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
