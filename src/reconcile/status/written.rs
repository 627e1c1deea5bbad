//! What a status decision writes: the KeyValueBucket status, the Component's summary
//! annotations and finalizer, and the Events.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt as _;
use kube::runtime::events::EventType;
use serde_json::json;

use super::{FINALIZER, Note, Outcome};
use crate::crd::{ConditionType, KeyValueBucketStatus, ReconcileStatus};
use crate::dapr::{Component, ComponentError};
use crate::settings::{OBSERVED_GENERATION_ANNOTATION, READY_ANNOTATION, REASON_ANNOTATION};

/// The KeyValueBucket status to write: the outcome's conditions stamped, keeping each one's
/// `lastTransitionTime` when it did not flip.
pub fn bucket_status(
    previous: &KeyValueBucketStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    component_generation: Option<i64>,
    now: Time,
) -> KeyValueBucketStatus {
    KeyValueBucketStatus {
        reconcile: ReconcileStatus::merged(
            &previous.reconcile,
            &outcome.conditions,
            generation,
            component_generation,
            now,
        ),
        bucket: outcome.bucket.clone(),
        plan: outcome.plan.clone(),
    }
}

/// The apply of the Component's summary annotations and our finalizer, when they differ from
/// what it carries; None when there is nothing to write.
pub fn component_patch(
    component: &Component,
    conditions: &[Condition],
    wants_finalizer: Option<bool>,
) -> Option<serde_json::Value> {
    use k8s_openapi::Resource as _;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str());
    let wanted: BTreeMap<&str, String> = BTreeMap::from([
        (
            READY_ANNOTATION,
            ready.map(|c| c.status.to_lowercase()).unwrap_or_default(),
        ),
        (
            REASON_ANNOTATION,
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
        ),
        (
            OBSERVED_GENERATION_ANNOTATION,
            component
                .metadata
                .generation
                .unwrap_or_default()
                .to_string(),
        ),
    ]);
    let current = component.annotations();
    // A Component refused for its size is written only to take back a "true": each write makes
    // the API server decode, diff and store the whole object again and send it to every
    // watcher, seconds of its CPU for 80,000 items, shared with every tenant and with the
    // leader's Lease. Its reason is on the KeyValueBucket or JetStreamStream and in an Event.
    let oversized = ready.is_some_and(|c| c.reason == ComponentError::TOO_MUCH_METADATA);
    if oversized && current.get(READY_ANNOTATION).map(String::as_str) != Some("true") {
        return None;
    }
    let has_finalizer = component.finalizers().iter().any(|f| f == FINALIZER);
    let wants_finalizer = wants_finalizer.unwrap_or(has_finalizer);
    if wanted.iter().all(|(k, v)| current.get(*k) == Some(v)) && wants_finalizer == has_finalizer {
        return None;
    }
    let mut patch = json!({
        "apiVersion": Component::API_VERSION,
        "kind": Component::KIND,
        "metadata": {
            "name": component.name_any(),
            "namespace": component.namespace().unwrap_or_default(),
            "annotations": wanted,
        },
    });
    // Only when wanted: leaving it out of the apply removes the one we own. An empty list made
    // every later apply of a GitOps tool's field manager write the Component again (one write
    // per sync, seen as drift; tests/gitops.rs).
    if wants_finalizer {
        patch["metadata"]["finalizers"] = json!([FINALIZER]);
    }
    Some(patch)
}

/// The Events to publish: what was done, or else a Ready transition.
pub fn events(previous: &[Condition], status: &[Condition], done: &[Note]) -> Vec<Note> {
    let ready = |s: &[Condition]| {
        s.iter()
            .find(|c| c.type_ == ConditionType::Ready.as_str())
            .cloned()
    };
    let (before, after) = (ready(previous), ready(status));
    let key = |c: &Option<Condition>| c.as_ref().map(|c| (c.status.clone(), c.reason.clone()));
    if !done.is_empty() || key(&before) == key(&after) {
        return done.to_vec();
    }
    after
        .map(|c| Note {
            type_: if c.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: event_reason(&c.reason),
            note: c.message,
        })
        .into_iter()
        .collect()
}

/// The Event reason for a Ready transition: the Ready reason itself, grouped where several
/// reasons mean the same thing to someone reading `kubectl describe`.
fn event_reason(reason: &str) -> String {
    match reason {
        "BucketManaged" => "BucketReady",
        "NatsUnavailable" | "NatsTimeout" => "NatsUnavailable",
        r if r.starts_with("Jwt") || r.starts_with("Seed") => "CredentialsInvalid",
        other => other,
    }
    .to_string()
}
