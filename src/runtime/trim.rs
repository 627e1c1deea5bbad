//! What the caches keep of each object: only what reconciles read.
//!
//! The operator watches every Component in its scope, whatever its type, to notice a Component
//! that becomes (or stops being) a `state.jetstream` store. A cluster holds many more Components
//! of other types than of ours, and each arrives with its managed fields, a
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (a copy of the whole object),
//! labels and annotations of other tools. These functions run on every watch event before the
//! object is stored, and keep:
//!
//! - of every Component: its identity (name, namespace, uid, resourceVersion, generation,
//!   creation time: the order of admission under a namespace quota), its
//!   deletion state and finalizers, the `jetstreamkv.io/` annotations, and `spec.type`: what the
//!   predicate, the reconcile's routing (ours, not ours, being deleted) and `forget` read;
//! - of a `state.jetstream` Component, or one that carries our finalizer, also the whole spec,
//!   `auth` and `scopes`: what a reconcile reads to build its bucket. (A Component whose type
//!   changes arrives again, whole, and is routed on its new type: it is still cleaned up.)
//! - of a KeyValueBucket: its identity, spec and status (the previous status, other users of a
//!   bucket), not its labels, owner references or managed fields;
//! - of a Secret's metadata: its name and namespace, all the Secret watch maps from.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DeserializeGuard, PartialObjectMeta};

use crate::crd::KeyValueBucket;
use crate::dapr::{Component, ComponentSpec};
use crate::reconcile::status::FINALIZER;
use crate::settings::ANNOTATION_PREFIX;

/// Trims a Component (or one that does not parse) before it is cached.
pub fn component(guard: &mut DeserializeGuard<Component>) {
    match &mut guard.0 {
        Ok(c) => trim_component(c),
        // Not readable: only its identity is used (to log it and to release what it held).
        Err(invalid) => invalid.metadata = identity(std::mem::take(&mut invalid.metadata)),
    }
}

fn trim_component(c: &mut Component) {
    let whole = c.is_ours()
        || c.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    c.metadata = identity(std::mem::take(&mut c.metadata));
    if !whole {
        c.spec = ComponentSpec {
            type_: std::mem::take(&mut c.spec.type_),
            ..ComponentSpec::default()
        };
        c.auth = None;
        c.scopes = Vec::new();
    }
}

/// Trims a KeyValueBucket before it is cached.
pub fn key_value_bucket(kvb: &mut KeyValueBucket) {
    owned_object(kvb);
}

/// Nothing reads annotations of the objects the operator writes (a KeyValueBucket, a
/// JetStreamStream); their spec and status are what counts.
fn owned_object<K: kube::Resource>(object: &mut K) {
    let mut meta = identity(std::mem::take(object.meta_mut()));
    meta.annotations = None;
    *object.meta_mut() = meta;
}

/// Trims a JetStreamStream as a KeyValueBucket.
pub fn jet_stream_stream(jss: &mut crate::pubsub::JetStreamStream) {
    owned_object(jss);
}

/// Trims the metadata of a Secret: the Secret watch only maps its name to Components.
pub fn secret_meta<K>(secret: &mut PartialObjectMeta<K>) {
    let meta = std::mem::take(&mut secret.metadata);
    secret.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        ..ObjectMeta::default()
    };
}

/// What identifies an object and tells its state to the operator; everything else dropped.
fn identity(meta: ObjectMeta) -> ObjectMeta {
    let annotations: BTreeMap<String, String> = meta
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        // The order in which a namespace's Components are admitted under its quota.
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        finalizers: meta.finalizers.filter(|f| !f.is_empty()),
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use serde_json::json;

    fn guard(value: serde_json::Value) -> DeserializeGuard<Component> {
        serde_json::from_value(value).expect("a DeserializeGuard always deserializes")
    }

    fn component_json(type_: &str, finalizers: &[&str]) -> serde_json::Value {
        json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {
                "name": "store", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "shop"},
                "finalizers": finalizers,
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"a whole\":\"copy\"}",
                    "argocd.argoproj.io/tracking-id": "shop:dapr.io/Component:shop/store",
                    "jetstreamkv.io/deletion-policy": "delete",
                    "jetstreamkv.io/ready": "true",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u-2"}],
            },
            "spec": {"type": type_, "version": "v1", "initTimeout": "5s", "metadata": [
                {"name": "natsURL", "value": "nats://nats:4222"},
                {"name": "bucket", "value": "orders"},
                {"name": "password", "secretKeyRef": {"name": "redis", "key": "password"}},
            ]},
            "auth": {"secretStore": "kubernetes"},
            "scopes": ["app-1"],
        })
    }

    fn trimmed(value: serde_json::Value) -> Component {
        let mut g = guard(value);
        component(&mut g);
        g.0.expect("parses")
    }

    #[test]
    fn other_types_keep_identity_type_and_our_annotations_only() {
        let c = trimmed(component_json("state.redis", &[]));
        let m = &c.metadata;
        assert_eq!(m.name.as_deref(), Some("store"));
        assert_eq!(m.namespace.as_deref(), Some("shop"));
        assert_eq!(m.uid.as_deref(), Some("u-1"));
        assert_eq!(m.resource_version.as_deref(), Some("42"));
        assert_eq!(m.generation, Some(3));
        assert_eq!(
            m.annotations
                .as_ref()
                .map(|a| a.keys().cloned().collect::<Vec<_>>()),
            Some(vec![
                "jetstreamkv.io/deletion-policy".to_string(),
                "jetstreamkv.io/ready".to_string()
            ])
        );
        assert!(m.managed_fields.is_none());
        assert!(m.labels.is_none());
        assert!(m.owner_references.is_none());
        // Kept: a namespace's Components are admitted under its quota in creation order.
        assert_eq!(
            m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
            Some(1_767_225_600)
        );
        assert!(m.finalizers.is_none());
        assert_eq!(c.spec.type_, "state.redis");
        assert!(c.spec.metadata.is_empty());
        assert!(c.spec.version.is_empty());
        assert!(c.auth.is_none());
        assert!(c.scopes.is_empty());
        assert!(!c.is_jetstream_state_store());
    }

    #[test]
    fn ours_keep_the_whole_spec() {
        let original = guard(component_json("state.jetstream", &[]))
            .0
            .expect("parses");
        let c = trimmed(component_json("state.jetstream", &[]));
        assert_eq!(c.spec, original.spec);
        assert_eq!(c.auth, original.auth);
        assert_eq!(c.scopes, original.scopes);
        assert!(c.metadata.managed_fields.is_none());
        assert!(
            !c.annotations()
                .contains_key("kubectl.kubernetes.io/last-applied-configuration")
        );
        // What reconciles read is unchanged: the bucket settings and our status annotations.
        assert_eq!(
            crate::settings::from_annotations(c.annotations()),
            crate::settings::from_annotations(original.annotations())
        );
    }

    #[test]
    fn a_component_with_our_finalizer_keeps_its_spec_whatever_its_type() {
        // Its type changed while it held our finalizer: deleting it may still delete the bucket.
        let c = trimmed(component_json(
            "state.redis",
            &["other/finalizer", FINALIZER],
        ));
        assert_eq!(c.spec.metadata.len(), 3);
        assert_eq!(
            c.metadata.finalizers,
            Some(vec!["other/finalizer".to_string(), FINALIZER.to_string()])
        );
    }

    #[test]
    fn the_routing_of_a_trimmed_component_is_unchanged() {
        for type_ in ["state.jetstream", "State.JetStream", "state.redis", ""] {
            for finalizers in [&[][..], &[FINALIZER][..]] {
                let original = guard(component_json(type_, finalizers)).0.expect("parses");
                let c = trimmed(component_json(type_, finalizers));
                assert_eq!(
                    c.is_jetstream_state_store(),
                    original.is_jetstream_state_store()
                );
                assert_eq!(c.finalizers(), original.finalizers());
                assert_eq!(
                    c.metadata.deletion_timestamp,
                    original.metadata.deletion_timestamp
                );
                assert_eq!(c.metadata.generation, original.metadata.generation);
            }
        }
    }

    #[test]
    fn a_component_that_does_not_parse_keeps_its_identity() {
        let mut value = component_json("state.redis", &[]);
        value["spec"]["metadata"] = json!("not a list");
        let mut g = guard(value);
        component(&mut g);
        let invalid = g.0.expect_err("does not parse");
        assert_eq!(invalid.metadata.name.as_deref(), Some("store"));
        assert!(invalid.metadata.managed_fields.is_none());
        assert!(invalid.metadata.labels.is_none());
    }

    #[test]
    fn key_value_buckets_keep_spec_status_and_identity() {
        let mut kvb: KeyValueBucket = serde_json::from_value(json!({
            "apiVersion": "jetstreamkv.io/v1beta1",
            "kind": "KeyValueBucket",
            "metadata": {
                "name": "store", "namespace": "shop", "uid": "u-3", "resourceVersion": "7",
                "generation": 2, "labels": {"app.kubernetes.io/managed-by": "jetstream-kv-operator"},
                "managedFields": [{"manager": "jetstream-kv-operator", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
                                     "name": "store", "uid": "u-1"}],
            },
            "spec": {"component": "store", "bucket": "orders", "servers": ["nats://nats:4222"]},
            "status": {"observedGeneration": 2, "conditions": []},
        }))
        .expect("KeyValueBucket");
        let (spec, status) = (kvb.spec.clone(), kvb.status.clone());
        key_value_bucket(&mut kvb);
        assert_eq!(kvb.spec, spec);
        assert_eq!(kvb.status, status);
        assert_eq!(kvb.metadata.name.as_deref(), Some("store"));
        assert_eq!(kvb.metadata.generation, Some(2));
        assert!(kvb.metadata.managed_fields.is_none());
        assert!(kvb.metadata.labels.is_none());
        assert!(kvb.metadata.owner_references.is_none());
    }
}
