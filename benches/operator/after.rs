//! Scenarios 2 and 3, on the wave's objects: three idle resync periods, and a restart of the
//! operator.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::measure::{Proc, Snapshot};
use crate::measure::{delta, loadavg, round, snapshot};
use crate::support;
use crate::wave::settle;
use crate::{Env, Options, progress, wait_operator_ready};

pub async fn idle(env: &Env, options: &Options, size: usize) -> Value {
    let period = options.resync * 3;
    progress(&format!(
        "idle: {size} Ready KeyValueBuckets for three resync periods ({period:?})"
    ));
    let load_before = loadavg();
    let before = snapshot(env).await;
    tokio::time::sleep(period).await;
    let after = snapshot(env).await;
    let d = delta(&before, &after, 0.0);
    progress(&format!(
        "idle: {} API writes (operator metrics), {} (API server), {} mutating NATS requests, {} NATS reads; CPU {}s, RSS {} MiB",
        d["operator_metrics"]["api_writes"],
        d["apiserver"]["operator_writes"],
        d["operator_metrics"]["nats_mutating_requests"],
        d["nats_server"]["jetstream_api_requests"],
        d["operator_process"]["cpu_seconds"],
        d["operator_process"]["rss_mib"],
    ));
    json!({
        "load_before": load_before,
        "load_after": loadavg(),
        "resync_seconds": options.resync.as_secs(),
        "idle_seconds": period.as_secs(),
        "idle": d,
    })
}

// Scenario 3: restart.

pub async fn restart(env: &mut Env, size: usize) -> Value {
    progress(&format!(
        "restart: SIGTERM the operator and start it again with {size} Ready KeyValueBuckets"
    ));
    let load_before = loadavg();
    let before = snapshot(env).await;
    let (stop_took, status) = env.operator.terminate();
    let started = Instant::now();
    env.operator = Env::start_operator(&env.cp.kubeconfig, &env.operator_args);
    env.pin();
    let ready_after = wait_operator_ready(&env.operator, Duration::from_secs(120)).await;
    // Every state.jetstream Component has been reconciled by the new process and found Ready
    // when the new process's bucket gauge counts all of them.
    let deadline = Duration::from_secs(120) + Duration::from_millis(50 * size as u64);
    // nats-server's JetStream API counter, sampled while the buckets are re-verified: the read
    // rate the restart puts on NATS.
    let jsz_total = |env: &Env| env.nats.jsz()["api"]["total"].as_f64().unwrap_or_default();
    let mut samples: Vec<(f64, f64)> = vec![(0.0, before.jsz_api_total)];
    let mut last_sample = Instant::now();
    let verified = loop {
        if last_sample.elapsed() >= Duration::from_millis(250) {
            samples.push((started.elapsed().as_secs_f64(), jsz_total(&*env)));
            last_sample = Instant::now();
        }
        let ready = env
            .operator
            .http_get("/metrics")
            .and_then(|(_, body)| {
                support::fixtures::samples(&body)
                    .get("jetstream_kv_buckets{ready=\"true\"}")
                    .copied()
            })
            .unwrap_or_default();
        if ready as usize >= size {
            break Some(started.elapsed());
        }
        if started.elapsed() > deadline {
            progress(&format!("restart: only {ready}/{size} re-verified"));
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    samples.push((started.elapsed().as_secs_f64(), jsz_total(&*env)));
    // The highest rate over any window of at least one second, and the mean over the re-verify.
    let peak_rate = samples
        .iter()
        .enumerate()
        .filter_map(|(i, &(t0, n0))| {
            let &(t1, n1) = samples[i..].iter().find(|(t, _)| t - t0 >= 1.0)?;
            Some((n1 - n0) / (t1 - t0))
        })
        .fold(0.0, f64::max);
    let reads_until_verified =
        samples.last().map(|s| s.1).unwrap_or_default() - before.jsz_api_total;
    let mean_rate = verified
        .map(|v| v.saturating_sub(ready_after).as_secs_f64().max(0.001))
        .map(|window| reads_until_verified / window);
    let settled = settle(env).await;
    // The new process's counters start at zero: compare its totals, and the servers' deltas.
    let after = snapshot(env).await;
    let zero = Snapshot {
        at: started,
        apiserver: before.apiserver.clone(),
        operator: BTreeMap::new(),
        jsz_api_total: before.jsz_api_total,
        jsz_api_errors: before.jsz_api_errors,
        streams: before.streams,
        operator_proc: Proc::default(),
        apiserver_proc: before.apiserver_proc,
        nats_proc: before.nats_proc,
        etcd_proc: before.etcd_proc,
    };
    let d = delta(&zero, &after, 0.0);
    progress(&format!(
        "restart: ready (caches synced) after {:.2}s, every bucket re-verified after {}; {} API writes (operator metrics), {} (API server), {} mutating NATS requests",
        ready_after.as_secs_f64(),
        verified
            .map(|v| format!("{:.2}s", v.as_secs_f64()))
            .unwrap_or("never".into()),
        d["operator_metrics"]["api_writes"],
        d["apiserver"]["operator_writes"],
        d["operator_metrics"]["nats_mutating_requests"],
    ));
    json!({
        "load_before": load_before,
        "load_after": loadavg(),
        "graceful_stop_seconds": round(stop_took.as_secs_f64(), 2),
        "exit_status": status.map(|s| s.to_string()),
        "caches_synced_seconds": round(ready_after.as_secs_f64(), 2),
        "all_reverified_seconds": verified.map(|v| round(v.as_secs_f64(), 2)),
        "reverified_note": "from spawning the new process until its jetstream_kv_buckets{ready=\"true\"} gauge counts every state.jetstream Component (each one reconciled by the new process and found Ready)",
        "nats_reads_until_reverified": reads_until_verified,
        "nats_read_rate_mean_per_second": mean_rate.map(|r| round(r, 0)),
        "nats_read_rate_peak_per_second": round(peak_rate, 0),
        "nats_read_rate_note": "nats-server's /jsz api.total sampled every 250 ms from the restart until every bucket was re-verified; mean over the window from caches synced to all re-verified, peak over any window of at least 1 s",
        "settle_seconds": round(settled.as_secs_f64(), 1),
        "after_restart": d,
    })
}
