//! Scenario 0, the floor: the wave's API writes made by the benchmark itself, without an
//! operator, on a control plane of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, future};
use jetstream_kv_operator::crd::{KeyValueBucket, MANAGER};
use jetstream_kv_operator::dapr::Component;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::measure::{
    self, control_plane_pids, delta, loadavg, round, snapshot_of, wait_until_quiet,
};
use crate::objects::{WaveKind, components, create};
use crate::report::machine;
use crate::support::{self, ControlPlane};
use crate::wave::watch_ready;
use crate::{Options, create_namespaces, progress};

/// The same creates as the wave, and for each of ours the four writes the operator makes to
/// reach Ready, made by the benchmark itself at the operator's concurrency, on a control plane
/// of its own with no operator: what the API server alone takes. The wave's time divided by
/// this one is the operator's overhead.
pub async fn floor(options: &Options, size: usize) -> (Value, Value) {
    let noise = size * options.noise_per_component;
    progress(&format!(
        "floor: size {size}: starting a control plane of its own (no operator, no NATS)"
    ));
    let cp = ControlPlane::start();
    cp.install_crds();
    let client = support::client_for(&cp.kubeconfig).await;
    if options.pin {
        measure::pin(&cp, &[]);
    }
    let mut machine = machine(&cp, None);
    machine["pinned"] = measure::pinning(options.pin);
    let namespaces = create_namespaces(&client, options.namespaces).await;
    progress(&format!(
        "floor: {size} state.jetstream Components and {noise} others across {} namespaces, {} creates in flight; for each of ours the operator's 4 writes, {} Components in flight",
        namespaces.len(),
        options.in_flight,
        options.floor_in_flight
    ));
    let quiet_after = wait_until_quiet(&control_plane_pids(&cp)).await;
    let load_before = loadavg();
    let seen = watch_ready(&client, WaveKind::Buckets);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: Some("bench-floor".into()),
        },
    );
    let before = snapshot_of(&cp, &client, None, None).await;
    let objects = components(
        options,
        WaveKind::Buckets,
        size,
        &namespaces,
        "nats://127.0.0.1:4222",
        &[],
    );
    let retries = Arc::new(AtomicU64::new(0));
    let (tx, rx) = futures::channel::mpsc::unbounded::<Component>();
    let first_create = Instant::now();
    let creates = {
        let client = client.clone();
        let retries = retries.clone();
        let in_flight = options.in_flight;
        async move {
            futures::stream::iter(objects)
                .map(|(ours, component)| {
                    let client = client.clone();
                    let retries = retries.clone();
                    async move { (ours, create(client, component, &retries).await) }
                })
                .buffer_unordered(in_flight)
                .for_each(|(ours, component)| {
                    if ours {
                        let _ = tx.unbounded_send(component);
                    }
                    future::ready(())
                })
                .await;
            Instant::now()
        }
    };
    let writes = rx
        .map(|component| operator_writes(&client, &recorder, component))
        .buffer_unordered(options.floor_in_flight)
        .collect::<Vec<()>>();
    let (last_create, _) = futures::join!(creates, writes);
    let writes_done = Instant::now();
    // Ready as the wave measures it: the benchmark's watch seeing the status written.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.lock().expect("lock").at.len() < size && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = snapshot_of(&cp, &client, None, None).await;
    let ready_at = seen
        .lock()
        .expect("lock")
        .at
        .values()
        .max()
        .copied()
        .unwrap_or(writes_done);
    let all_ready = seen.lock().expect("lock").at.len() >= size;
    let d = delta(&before, &after, (size + noise) as f64);
    let ready_seconds = (ready_at - first_create).as_secs_f64();
    progress(&format!(
        "floor: creates done after {:.1}s, all writes after {:.1}s, all Ready seen after {ready_seconds:.1}s; {} writes per Component (API server)",
        (last_create - first_create).as_secs_f64(),
        (writes_done - first_create).as_secs_f64(),
        round(
            d["apiserver"]["operator_writes"]
                .as_f64()
                .unwrap_or_default()
                / size as f64,
            2
        ),
    ));
    let value = json!({
        "quiet_after_seconds": quiet_after,
        "load_before": load_before,
        "load_after": loadavg(),
        "noise_components": noise,
        "namespaces": namespaces.len(),
        "creates_in_flight": options.in_flight,
        "writes_components_in_flight": options.floor_in_flight,
        "create_retries": retries.load(Ordering::Relaxed),
        "all_ready": all_ready,
        "apply_seconds": round((last_create - first_create).as_secs_f64(), 2),
        "all_writes_done_seconds": round((writes_done - first_create).as_secs_f64(), 2),
        "all_ready_after_first_create_seconds": round(ready_seconds, 2),
        "note": "no operator: the benchmark creates the same Components and, for each state.jetstream one once created, makes the operator's 4 writes in its order (KeyValueBucket apply, its status apply, the Component's annotations apply, one Event) with the given number of Components in flight; time from the first create to the benchmark's watch seeing the last KeyValueBucket Ready",
        "per_component": {
            "api_writes_apiserver": round(d["apiserver"]["operator_writes"].as_f64().unwrap_or_default() / size as f64, 2),
        },
        "floor": d,
    });
    progress(&format!(
        "floor: size {size}: done; stopping its control plane"
    ));
    (value, machine)
}

/// The writes the operator makes for a new `state.jetstream` Component, in its order and shape.
pub async fn operator_writes(client: &Client, recorder: &Recorder, component: Component) {
    let ns = component.namespace().unwrap_or_default();
    let name = component.name_any();
    let bucket = component
        .spec
        .metadata
        .iter()
        .find(|m| m.name == "bucket")
        .and_then(|m| m.value.as_ref())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns);
    let apply = PatchParams::apply(MANAGER).force();
    let config = json!({"history": 1, "storage": "file", "replicas": 1, "compression": false});
    let object = json!({
        "apiVersion": "jetstreamkv.io/v1beta1",
        "kind": "KeyValueBucket",
        "metadata": {
            "name": name,
            "namespace": ns,
            "ownerReferences": [{
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "name": name,
                "uid": component.uid().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
            "labels": {"app.kubernetes.io/managed-by": MANAGER},
        },
        "spec": {
            "component": name,
            "bucket": bucket,
            "servers": ["nats://127.0.0.1:4222"],
            "auth": "none",
            "config": config,
            "onExisting": "verify",
            "deletionPolicy": "retain",
        },
    });
    let annotations = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": ns, "annotations": {
            "jetstreamkv.io/ready": "true",
            "jetstreamkv.io/reason": "BucketManaged",
            "jetstreamkv.io/observed-generation": component.metadata.generation.unwrap_or_default().to_string(),
        }},
    });
    let event = kube::runtime::events::Event {
        type_: EventType::Normal,
        reason: "BucketCreated".into(),
        note: Some(format!("created bucket {bucket}")),
        action: "Reconcile".into(),
        secondary: None,
    };
    // As the operator does (src/reconcile/report.rs), one after the other: the KeyValueBucket,
    // its status, the Component's annotations, the Event.
    let applied = api
        .patch(&name, &apply, &Patch::Apply(object))
        .await
        .unwrap_or_else(|e| panic!("floor: apply KeyValueBucket {ns}/{name}: {e}"));
    let status = bucket_status(&component, &bucket, &config, applied.metadata.generation);
    api.patch_status(&name, &apply, &Patch::Apply(status))
        .await
        .unwrap_or_else(|e| panic!("floor: apply KeyValueBucket status {ns}/{name}: {e}"));
    Api::<Component>::namespaced(client.clone(), &ns)
        .patch_metadata(&name, &apply, &Patch::Apply(annotations))
        .await
        .unwrap_or_else(|e| panic!("floor: apply Component annotations {ns}/{name}: {e}"));
    recorder
        .publish(&event, &component.object_ref(&()))
        .await
        .unwrap_or_else(|e| panic!("floor: publish an Event for {ns}/{name}: {e}"));
}

/// The KeyValueBucket status the operator writes for a new bucket.
pub fn bucket_status(
    component: &Component,
    bucket: &str,
    config: &Value,
    generation: Option<i64>,
) -> Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let condition = |type_: &str, reason: &str, message: String| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "observedGeneration": generation, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "jetstreamkv.io/v1beta1",
        "kind": "KeyValueBucket",
        "status": {
            "observedGeneration": generation,
            "componentGeneration": component.metadata.generation,
            "conditions": [
                condition("Ready", "BucketManaged", format!("bucket {bucket} exists and matches the Component")),
                condition("CredentialsResolved", "CredentialsResolved", "no credentials needed".into()),
                condition("Connected", "Connected", "connected to nats://127.0.0.1:4222 (nats-server 2.15.1)".into()),
                condition("BucketAvailable", "BucketFound", format!("bucket {bucket} exists (stream KV_{bucket})")),
                condition("ConfigSynced", "ConfigSynced", "the bucket's settings match the Component".into()),
            ],
            "bucket": {"stream": format!("KV_{bucket}"), "managed": true, "serverVersion": "2.15.1",
                       "config": config, "bytes": 0, "values": 0},
        },
    })
}
