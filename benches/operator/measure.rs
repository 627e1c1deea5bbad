//! What the benchmark reads: the API server's, the operator's and nats-server's counters, and
//! the CPU and memory of their processes; the difference of two readings as the results show it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Client;
use serde_json::{Value, json};

use crate::support::{self, ControlPlane, operator::Operator};
use crate::{Env, Nats};

/// A point-in-time reading of every counter the benchmark compares.
pub struct Snapshot {
    pub at: Instant,
    pub apiserver: BTreeMap<String, f64>,
    pub operator: BTreeMap<String, f64>,
    pub jsz_api_total: f64,
    pub jsz_api_errors: f64,
    pub streams: f64,
    pub operator_proc: Proc,
    pub apiserver_proc: Proc,
    pub nats_proc: Proc,
    /// The control plane's own process: etcd runs embedded in it.
    pub etcd_proc: Proc,
}

#[derive(Clone, Copy, Default)]
pub struct Proc {
    pub cpu_seconds: f64,
    pub rss_mib: f64,
    pub hwm_mib: f64,
}

pub fn proc_stats(pid: Option<u32>) -> Proc {
    let Some(pid) = pid else {
        return Proc::default();
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_seconds = stat
        .rfind(')')
        .map(|i| stat[i + 1..].split_whitespace().collect::<Vec<_>>())
        .and_then(|f| {
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_default()
    };
    Proc {
        cpu_seconds,
        rss_mib: kib("VmRSS:") / 1024.0,
        hwm_mib: kib("VmHWM:") / 1024.0,
    }
}

pub fn label<'a>(series: &'a str, name: &str) -> &'a str {
    let needle = format!("{name}=\"");
    series
        .find(&needle)
        .map(|i| &series[i + needle.len()..])
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

pub async fn snapshot(env: &Env) -> Snapshot {
    snapshot_of(&env.cp, &env.client, Some(&env.operator), Some(&env.nats)).await
}

/// The process that runs etcd (embedded) and started kube-apiserver: its parent.
pub fn etcd_pid(cp: &ControlPlane) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", cp.apiserver_pid()?)).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub async fn snapshot_of(
    cp: &ControlPlane,
    client: &Client,
    operator: Option<&Operator>,
    nats: Option<&Nats>,
) -> Snapshot {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(request).await.unwrap_or_default();
    // Only the request counter is kept: the API server exposes thousands of series.
    let apiserver = support::fixtures::samples(&text)
        .into_iter()
        .filter(|(k, _)| k.starts_with("apiserver_request_total{"))
        .map(|(k, v)| {
            let key = format!(
                "{} {}{}{}",
                label(&k, "verb"),
                label(&k, "resource"),
                if label(&k, "subresource").is_empty() {
                    ""
                } else {
                    "/"
                },
                label(&k, "subresource")
            );
            (key, v)
        })
        .fold(BTreeMap::new(), |mut m, (k, v)| {
            *m.entry(k).or_insert(0.0) += v;
            m
        });
    let operator_metrics = operator
        .and_then(|o| o.http_get("/metrics"))
        .map(|(_, body)| support::fixtures::samples(&body))
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("jetstream_kv_"))
        .collect();
    let jsz = nats.map(Nats::jsz).unwrap_or_default();
    Snapshot {
        at: Instant::now(),
        apiserver,
        operator: operator_metrics,
        jsz_api_total: jsz["api"]["total"].as_f64().unwrap_or_default(),
        jsz_api_errors: jsz["api"]["errors"].as_f64().unwrap_or_default(),
        streams: jsz["streams"].as_f64().unwrap_or_default(),
        operator_proc: proc_stats(operator.and_then(Operator::pid)),
        apiserver_proc: proc_stats(cp.apiserver_pid()),
        nats_proc: proc_stats(nats.and_then(Nats::pid)),
        etcd_proc: proc_stats(etcd_pid(cp)),
    }
}

pub const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];
pub const MUTATING_NATS: [&str; 3] = ["create", "update", "delete"];

/// What changed between two snapshots. `own_creates` are the benchmark's Component POSTs, taken
/// out of the API server's write count.
pub fn delta(before: &Snapshot, after: &Snapshot, own_creates: f64) -> Value {
    let diff = |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        b.iter()
            .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or_default()))
            .filter(|(_, v)| *v != 0.0)
            .collect()
    };
    let api = diff(&before.apiserver, &after.apiserver);
    let writes: BTreeMap<String, f64> = api
        .iter()
        .filter(|(k, _)| WRITE_VERBS.iter().any(|v| k.starts_with(&format!("{v} "))))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    // Writes the operator makes: its resources, Component metadata (not the benchmark's creates)
    // and Events. Everything else (the API server's own leases, ...) is listed apart.
    let operator_resource = |k: &str| {
        let resource = k.split(' ').nth(1).unwrap_or("");
        resource.starts_with("keyvaluebuckets")
            || resource.starts_with("events")
            || (resource.starts_with("components") && !k.starts_with("POST "))
    };
    let operator_writes: f64 = writes
        .iter()
        .filter(|(k, _)| operator_resource(k))
        .map(|(_, v)| v)
        .sum();
    let other_writes: f64 = writes
        .iter()
        .filter(|(k, _)| !operator_resource(k))
        .map(|(_, v)| v)
        .sum::<f64>()
        - own_creates;
    let op = diff(&before.operator, &after.operator);
    let sum_prefix = |m: &BTreeMap<String, f64>, prefix: &str| -> f64 {
        m.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    let op_writes = sum_prefix(&op, "jetstream_kv_api_writes_total");
    let op_nats = sum_prefix(&op, "jetstream_kv_nats_requests_total");
    let op_nats_mutating: f64 = MUTATING_NATS
        .iter()
        .map(|k| {
            op.get(&format!("jetstream_kv_nats_requests_total{{kind=\"{k}\"}}"))
                .copied()
                .unwrap_or_default()
        })
        .sum();
    let proc = |a: Proc, b: Proc| {
        json!({
            "cpu_seconds": round(b.cpu_seconds - a.cpu_seconds, 2),
            "rss_mib": round(b.rss_mib, 1),
            "peak_rss_mib": round(b.hwm_mib, 1),
        })
    };
    json!({
        "seconds": round((after.at - before.at).as_secs_f64(), 2),
        "apiserver": {
            "operator_writes": round(operator_writes, 2),
            "other_writes": round(other_writes, 2),
            "writes_by_verb_and_resource": writes,
            "reads_by_verb_and_resource": api.iter()
                .filter(|(k, _)| !WRITE_VERBS.iter().any(|v| k.starts_with(&format!("{v} "))))
                .map(|(k, v)| (k.clone(), *v)).collect::<BTreeMap<_, _>>(),
        },
        "operator_metrics": {
            "api_writes": round(op_writes, 2),
            "nats_requests": round(op_nats, 2),
            "nats_mutating_requests": round(op_nats_mutating, 2),
            "reconciles": round(sum_prefix(&op, "jetstream_kv_reconciles_total"), 2),
            "by_series": op,
        },
        "nats_server": {
            "jetstream_api_requests": round(after.jsz_api_total - before.jsz_api_total, 2),
            "jetstream_api_errors": round(after.jsz_api_errors - before.jsz_api_errors, 2),
            "streams": after.streams,
        },
        "operator_process": proc(before.operator_proc, after.operator_proc),
        "apiserver_process": proc(before.apiserver_proc, after.apiserver_proc),
        "nats_server_process": proc(before.nats_proc, after.nats_proc),
        "etcd_process": proc(before.etcd_proc, after.etcd_proc),
    })
}

pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    // `+ 0.0` turns -0.0 into 0.0.
    (v * f).round() / f + 0.0
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The control plane's processes: the one that runs etcd and its children (kube-apiserver and
/// kube-controller-manager).
pub fn control_plane_pids(cp: &ControlPlane) -> Vec<Option<u32>> {
    let Some(parent) = etcd_pid(cp) else {
        return vec![cp.apiserver_pid()];
    };
    let children = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .map(Some);
    std::iter::once(Some(parent)).chain(children).collect()
}

/// Waits until `pids` are idle together (under a tenth of a core for three seconds in a row), at
/// most a minute, and returns how long that took. A control plane just started still builds its
/// OpenAPI documents and runs its controllers' first syncs; a scenario started on top of that
/// would time them too, and the floor and the wave start at different points of it.
pub async fn wait_until_quiet(pids: &[Option<u32>]) -> f64 {
    let started = Instant::now();
    let cpu = || pids.iter().map(|p| proc_stats(*p).cpu_seconds).sum::<f64>();
    let mut last = cpu();
    let mut quiet_seconds = 0;
    while quiet_seconds < 3 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu();
        quiet_seconds = if now - last < 0.1 {
            quiet_seconds + 1
        } else {
            0
        };
        last = now;
    }
    round(started.elapsed().as_secs_f64(), 1)
}

/// `--pin`: the control plane's processes on CPU 0, and everything else of the run (nats-server,
/// the operator, the benchmark itself) on CPU 1, as in a cluster whose API server has machines
/// of its own. Every thread of each process is moved (`taskset -a`); threads started later
/// inherit it.
pub fn pin(cp: &ControlPlane, others: &[Option<u32>]) {
    let move_to = |cpu: &str, pid: u32| {
        let done = std::process::Command::new("taskset")
            .args(["-a", "-c", "-p", cpu, &pid.to_string()])
            .output();
        match done {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "taskset -a -c -p {cpu} {pid}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("taskset (util-linux): {e}"),
        }
    };
    for pid in control_plane_pids(cp).into_iter().flatten() {
        move_to("0", pid);
    }
    for pid in others.iter().flatten().copied().chain([std::process::id()]) {
        move_to("1", pid);
    }
}

/// What `--pin` did, for the results.
pub fn pinning(pinned: bool) -> Value {
    if pinned {
        json!(
            "control plane (etcd, kube-apiserver, kube-controller-manager) on CPU 0; nats-server, operator and benchmark on CPU 1"
        )
    } else {
        json!("none: every process on every CPU")
    }
}
