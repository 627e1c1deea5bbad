//! Dapr's declarative `Subscription` (`subscriptions.dapr.io/v2alpha1`): the topics of a pub/sub
//! Component that the operator can see.
//!
//! Only what decides subjects is read: `spec.pubsubname`, `spec.topic`, `spec.deadLetterTopic`
//! and the root-level `scopes`. Reading is lenient (missing or `null` pieces take their
//! defaults), so that one odd Subscription never hides the others.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize};

use super::subjects::{DiscoveredTopic, TopicSource};

/// A Dapr declarative Subscription.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// `subscriptions.dapr.io/v2alpha1`, written on serialization.
    #[serde(default = "api_version", skip_deserializing)]
    api_version: String,
    /// `Subscription`, written on serialization.
    #[serde(default = "kind", skip_deserializing)]
    kind: String,
    /// Standard object metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: ObjectMeta,
    /// What is subscribed.
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: SubscriptionSpec,
    /// App IDs the subscription applies to; empty means every app.
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Vec<String>,
}

/// `spec` of a Subscription: the fields that decide subjects (the rest is kept by the API server
/// and not read here).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// The name of the pub/sub Component (same namespace).
    #[serde(default, deserialize_with = "null_as_default")]
    pub pubsubname: String,
    /// The topic subscribed to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub topic: String,
    /// Where daprd publishes messages the app failed to handle.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub dead_letter_topic: String,
    /// Routes, required by Dapr's schema (kept opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<serde_json::Value>,
}

fn api_version() -> String {
    <Subscription as k8s_openapi::Resource>::API_VERSION.to_owned()
}

fn kind() -> String {
    <Subscription as k8s_openapi::Resource>::KIND.to_owned()
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Subscription {
    /// A Subscription to `topic` of the pub/sub Component `pubsub`, with the default route `/`.
    pub fn new(namespace: &str, name: &str, pubsub: &str, topic: &str) -> Self {
        Self {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            spec: SubscriptionSpec {
                pubsubname: pubsub.to_owned(),
                topic: topic.to_owned(),
                dead_letter_topic: String::new(),
                routes: Some(serde_json::json!({ "default": "/" })),
            },
            scopes: Vec::new(),
        }
    }

    /// Whether it subscribes through the Component `component` in `namespace`: Dapr loads a
    /// Subscription only into apps of its own namespace, and matches `pubsubname` exactly.
    pub fn uses(&self, namespace: &str, component: &str) -> bool {
        self.metadata.namespace.as_deref() == Some(namespace) && self.spec.pubsubname == component
    }

    /// The topics it makes daprd use: the topic (subscribed) and the dead-letter topic
    /// (published to when the app fails a message). Empty topics are left out.
    pub fn topics(&self) -> Vec<DiscoveredTopic> {
        let name = self.metadata.name.clone().unwrap_or_default();
        let mut out = Vec::new();
        if !self.spec.topic.is_empty() {
            out.push(DiscoveredTopic {
                topic: self.spec.topic.clone(),
                source: TopicSource::Subscription(name.clone()),
            });
        }
        if !self.spec.dead_letter_topic.is_empty() {
            out.push(DiscoveredTopic {
                topic: self.spec.dead_letter_topic.clone(),
                source: TopicSource::DeadLetter(name),
            });
        }
        out
    }
}

impl k8s_openapi::Resource for Subscription {
    const API_VERSION: &'static str = "dapr.io/v2alpha1";
    const GROUP: &'static str = "dapr.io";
    const KIND: &'static str = "Subscription";
    const VERSION: &'static str = "v2alpha1";
    const URL_PATH_SEGMENT: &'static str = "subscriptions";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for Subscription {
    const LIST_KIND: &'static str = "SubscriptionList";
}

impl k8s_openapi::Metadata for Subscription {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_dapr_serves_and_tolerates_nulls() {
        let s: Subscription = serde_json::from_value(json!({
            "apiVersion": "dapr.io/v2alpha1",
            "kind": "Subscription",
            "metadata": {"name": "orders-sub", "namespace": "shop"},
            "spec": {
                "pubsubname": "events",
                "topic": "orders",
                "deadLetterTopic": "poison",
                "routes": {"default": "/orders"},
                "bulkSubscribe": {"enabled": false}
            },
            "scopes": ["checkout"]
        }))
        .unwrap();
        assert!(s.uses("shop", "events"));
        assert!(!s.uses("other", "events"));
        assert!(!s.uses("shop", "Events"));
        assert_eq!(
            s.topics(),
            vec![
                DiscoveredTopic {
                    topic: "orders".into(),
                    source: TopicSource::Subscription("orders-sub".into())
                },
                DiscoveredTopic {
                    topic: "poison".into(),
                    source: TopicSource::DeadLetter("orders-sub".into())
                },
            ]
        );

        let s: Subscription =
            serde_json::from_value(json!({"metadata": null, "spec": null, "scopes": null}))
                .unwrap();
        assert!(s.topics().is_empty());
    }

    #[test]
    fn serializes_with_api_version_and_kind() {
        let v = serde_json::to_value(Subscription::new("shop", "a", "events", "orders")).unwrap();
        assert_eq!(v["apiVersion"], "dapr.io/v2alpha1");
        assert_eq!(v["kind"], "Subscription");
        assert_eq!(v["spec"]["pubsubname"], "events");
        assert_eq!(v["spec"]["routes"]["default"], "/");
        assert!(v["spec"].get("deadLetterTopic").is_none());
    }
}
