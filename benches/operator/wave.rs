//! Scenario 1, the wave: every Component created as fast as the API server takes them, timed
//! until the benchmark's own watch sees the last KeyValueBucket Ready; and the same for
//! `pubsub.jetstream` Components and their JetStreamStreams (`pubsub-wave`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Event;
use kube::api::DynamicObject;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::measure::{
    control_plane_pids, delta, loadavg, percentile, round, snapshot, wait_until_quiet,
};
use crate::objects::{WaveKind, components, create};
use crate::support;
use crate::{Env, Options, progress};

/// When each KeyValueBucket (or JetStreamStream) was first seen Ready by the benchmark's own
/// watch.
#[derive(Default)]
pub struct ReadySeen {
    pub at: HashMap<String, Instant>,
}

pub fn watch_ready(client: &Client, kind: WaveKind) -> Arc<Mutex<ReadySeen>> {
    let seen = Arc::new(Mutex::new(ReadySeen::default()));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = stream.next().await {
            let Ok(object) = event else { continue };
            let ready = object.data["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if ready {
                let key = format!(
                    "{}/{}",
                    object.namespace().unwrap_or_default(),
                    object.name_any()
                );
                let mut s = sink.lock().expect("lock");
                s.at.entry(key).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

pub async fn wave(
    env: &Env,
    options: &Options,
    kind: WaveKind,
    size: usize,
    namespaces: &[String],
) -> Value {
    let noise = size * options.noise_per_component;
    let (name, noun) = (kind.scenario(), kind.noun());
    let type_ = match kind {
        WaveKind::Buckets => "state.jetstream",
        WaveKind::Streams => "pubsub.jetstream",
    };
    progress(&format!(
        "{name}: {size} {type_} Components and {noise} others across {} namespaces, {} creates in flight",
        namespaces.len(),
        options.in_flight
    ));
    let mut servers = control_plane_pids(&env.cp);
    servers.extend([env.operator.pid(), env.nats.pid()]);
    let quiet_after = wait_until_quiet(&servers).await;
    let load_before = loadavg();
    let seen = watch_ready(&env.client, kind);
    let before = snapshot(env).await;
    let objects = components(
        options,
        kind,
        size,
        namespaces,
        &env.nats.url(),
        env.nats.settings(),
    );

    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let retries = Arc::new(AtomicU64::new(0));
    let total = objects.len();
    let first_apply = Instant::now();
    let mut done = 0usize;
    futures::stream::iter(objects)
        .map(|(ours, component)| {
            let client = env.client.clone();
            let created = created.clone();
            let retries = retries.clone();
            async move {
                let component = create(client, component, &retries).await;
                if ours {
                    let key = format!(
                        "{}/{}",
                        component.namespace().unwrap_or_default(),
                        component.name_any()
                    );
                    created.lock().expect("lock").insert(key, Instant::now());
                }
            }
        })
        .buffer_unordered(options.in_flight)
        .for_each(|()| {
            // At 100,000 Components the creates take minutes: show them going.
            done += 1;
            if done.is_multiple_of(10_000) && done < total {
                let seconds = first_apply.elapsed().as_secs_f64();
                progress(&format!(
                    "{name}: {done}/{total} Components applied in {seconds:.0}s ({:.0}/s); {} Ready",
                    done as f64 / seconds,
                    seen.lock().expect("lock").at.len()
                ));
            }
            future::ready(())
        })
        .await;
    let last_apply = Instant::now();
    let apply_seconds = (last_apply - first_apply).as_secs_f64();
    progress(&format!(
        "{name}: {} Components applied in {apply_seconds:.1}s ({:.0}/s); waiting for {size} {noun} Ready",
        size + noise,
        (size + noise) as f64 / apply_seconds
    ));

    let timeout = Duration::from_secs(120) + Duration::from_millis(100 * size as u64);
    let mut last_report = Instant::now();
    let all_ready = loop {
        let ready = seen.lock().expect("lock").at.len();
        if ready >= size {
            break true;
        }
        if last_apply.elapsed() > timeout {
            progress(&format!(
                "{name}: only {ready}/{size} Ready after {timeout:?}"
            ));
            break false;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!(
                "{name}: {ready}/{size} Ready, {:.0}s after the last apply",
                last_apply.elapsed().as_secs_f64()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at_ready = snapshot(env).await;
    let (ready_at, latencies) = {
        let seen = seen.lock().expect("lock");
        let created = created.lock().expect("lock");
        let last = seen.at.values().max().copied().unwrap_or(last_apply);
        let mut l: Vec<f64> = created
            .iter()
            .filter_map(|(k, c)| Some(seen.at.get(k)?.saturating_duration_since(*c).as_secs_f64()))
            .collect();
        l.sort_by(f64::total_cmp);
        (last, l)
    };
    // After a timeout, the last one seen Ready (the figures then hold for those only).
    progress(&format!(
        "{name}: {} {:.1}s after the first apply, {:.1}s after the last; settling",
        if all_ready {
            "all Ready"
        } else {
            "the last Ready"
        },
        (ready_at - first_apply).as_secs_f64(),
        ready_at.saturating_duration_since(last_apply).as_secs_f64()
    ));
    // The reconciles that Ready itself triggers (our own object appearing in the watch)
    // come after; wait until the operator is quiet so they are counted.
    let settled = settle(env).await;
    let settle_snapshot = snapshot(env).await;

    let events = count_events(&env.client, namespaces).await;
    let own_creates = (size + noise) as f64;
    let to_ready = delta(&before, &at_ready, own_creates);
    let to_settled = delta(&before, &settle_snapshot, own_creates);
    let per = |v: &Value| round(v.as_f64().unwrap_or_default() / size as f64, 2);
    progress(&format!(
        "{name}: per Component: {} API writes (operator metrics), {} (API server), {} NATS requests (operator), {} (nats-server); operator CPU {}s, peak RSS {} MiB",
        per(&to_settled["operator_metrics"]["api_writes"]),
        per(&to_settled["apiserver"]["operator_writes"]),
        per(&to_settled["operator_metrics"]["nats_requests"]),
        per(&to_settled["nats_server"]["jetstream_api_requests"]),
        to_settled["operator_process"]["cpu_seconds"],
        to_settled["operator_process"]["peak_rss_mib"],
    ));
    json!({
        "component_type": type_,
        "quiet_after_seconds": quiet_after,
        "load_before": load_before,
        "load_after": loadavg(),
        "noise_components": noise,
        "namespaces": namespaces.len(),
        "operator_rss_before_mib": round(before.operator_proc.rss_mib, 1),
        "creates_in_flight": options.in_flight,
        "create_retries": retries.load(Ordering::Relaxed),
        "all_ready": all_ready,
        "apply_seconds": round(apply_seconds, 2),
        "all_ready_after_first_apply_seconds": round((ready_at - first_apply).as_secs_f64(), 2),
        "all_ready_after_last_apply_seconds": round(ready_at.saturating_duration_since(last_apply).as_secs_f64(), 2),
        "latency_note": "per Component: from the create response to the first watch event showing Ready=True (benchmark clocks; creationTimestamp and lastTransitionTime only have second resolution)",
        "latency_seconds": {
            "count": latencies.len(),
            "p50": round(percentile(&latencies, 50.0), 3),
            "p95": round(percentile(&latencies, 95.0), 3),
            "p99": round(percentile(&latencies, 99.0), 3),
            "max": round(latencies.last().copied().unwrap_or(f64::NAN), 3),
        },
        "per_component": {
            "api_writes_operator_metrics": per(&to_settled["operator_metrics"]["api_writes"]),
            "api_writes_apiserver": per(&to_settled["apiserver"]["operator_writes"]),
            "nats_requests_operator_metrics": per(&to_settled["operator_metrics"]["nats_requests"]),
            "nats_requests_nats_server": per(&to_settled["nats_server"]["jetstream_api_requests"]),
            "nats_creates": per(&to_settled["operator_metrics"]["by_series"]["jetstream_kv_nats_requests_total{kind=\"create\"}"]),
            "reconciles": per(&to_settled["operator_metrics"]["reconciles"]),
            "api_writes_at_all_ready": per(&to_ready["operator_metrics"]["api_writes"]),
            "nats_requests_at_all_ready": per(&to_ready["operator_metrics"]["nats_requests"]),
        },
        "settle_seconds": round(settled.as_secs_f64(), 1),
        "events_by_reason": events,
        "until_all_ready": to_ready,
        "until_settled": to_settled,
    })
}

/// Waits until the operator's reconcile counter has not moved for 3 s (at most 60 s).
pub async fn settle(env: &Env) -> Duration {
    let started = Instant::now();
    let reconciles = || {
        env.operator
            .http_get("/metrics")
            .and_then(|(_, body)| {
                support::fixtures::samples(&body)
                    .get("jetstream_kv_reconciles_total")
                    .copied()
            })
            .unwrap_or_default()
    };
    let mut last = reconciles();
    let mut quiet_since = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = reconciles();
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    started.elapsed()
}

pub async fn count_events(client: &Client, namespaces: &[String]) -> BTreeMap<String, u64> {
    let mut by_reason = BTreeMap::new();
    for ns in namespaces {
        let api: Api<Event> = Api::namespaced(client.clone(), ns);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for e in list {
            *by_reason
                .entry(e.reason.unwrap_or_default())
                .or_insert(0u64) += e.count.unwrap_or(1).max(1) as u64;
        }
    }
    by_reason
}
