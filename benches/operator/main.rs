//! The operator at scale: waves of Dapr Components applied as fast as the API server takes them,
//! an idle period, and an operator restart, against a real control plane, a real nats-server and
//! the release operator binary as a separate process. Run it with `test-env/bench.sh` (see
//! `bench/README.md`); results go to `bench/results/`.
//!
//! ```text
//! cargo bench --bench operator -- [--sizes 100,1000]
//!     [--scenarios floor,wave,idle,restart,pubsub-wave]
//!     [--resync 30s] [--noise-per-component 2] [--namespaces 20] [--in-flight 64]
//!     [--floor-in-flight 16] [--cluster] [--out bench/results]
//!     [--operator-args "--concurrency 32"] [--repeat 1] [--pin] [--readme-only]
//! ```
//!
//! Each size gets a fresh control plane, nats-server and operator, so sizes do not influence
//! each other. The floor runs first, on a control plane of its own and without an operator: the
//! same creates, plus the operator's writes made by the benchmark itself. The other scenarios run
//! in order on the same objects: `idle` and `restart` need `wave`. `pubsub-wave` (not in the
//! default list) runs last, a wave of `pubsub.jetstream` Components each with a stream of its
//! own, on the same servers (after `wave`, the account also holds its buckets' streams).
//!
//! The modules: [`objects`] (the Components created), [`floor`], [`wave`], [`after`] (idle and
//! restart), [`measure`] (counters, CPU and memory of each process) and [`report`] (the machine,
//! and `bench/results/README.md`).

#[path = "../../tests/support/mod.rs"]
mod support;

mod after;
mod floor;
mod measure;
mod objects;
mod report;
mod wave;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

use after::{idle, restart};
use floor::floor;
use measure::round;
use objects::WaveKind;
use report::{machine, write_readme};
use support::ControlPlane;
use support::cluster::NatsCluster;
use support::nats::NatsServer;
use support::operator::Operator;
use wave::wave;

struct Options {
    sizes: Vec<usize>,
    scenarios: Vec<String>,
    resync: Duration,
    noise_per_component: usize,
    namespaces: usize,
    in_flight: usize,
    floor_in_flight: usize,
    out: PathBuf,
    operator_args: Vec<String>,
    /// A three-node JetStream cluster and R3 buckets instead of one nats-server.
    cluster: bool,
    /// The control plane on CPU 0, the rest on CPU 1 (see [`measure::pin`]).
    pin: bool,
    /// Only regenerate `README.md` from the result files in `out`.
    readme_only: bool,
    /// Runs of each size, one after the other (the ratio to the floor varies from run to run).
    repeat: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        sizes: vec![100, 1000],
        scenarios: vec![
            "floor".into(),
            "wave".into(),
            "idle".into(),
            "restart".into(),
        ],
        resync: Duration::from_secs(30),
        noise_per_component: 2,
        namespaces: 20,
        in_flight: 64,
        // The operator's default --concurrency: its reconciles, so its writes, in flight.
        floor_in_flight: 16,
        out: support::repo_root().join("bench/results"),
        operator_args: Vec::new(),
        cluster: false,
        repeat: 1,
        pin: false,
        readme_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // `cargo bench` passes --bench to harness = false targets.
        if arg == "--bench" {
            continue;
        }
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--sizes" => {
                o.sizes = value()?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|_| format!("bad size {s:?}")))
                    .collect::<Result<_, _>>()?
            }
            "--scenarios" => o.scenarios = value()?.split(',').map(str::to_string).collect(),
            "--resync" => o.resync = jetstream_kv_operator::cli::parse_duration(&value()?)?,
            "--noise-per-component" => {
                o.noise_per_component = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--namespaces" => {
                o.namespaces = value()?.parse().map_err(|e| format!("{e}"))?;
                if o.namespaces == 0 {
                    return Err("--namespaces must be at least 1".into());
                }
            }
            // A platform team's cluster: 10% of the Components are ours, over 100 namespaces.
            "--platform" => {
                o.noise_per_component = 9;
                o.namespaces = 100;
            }
            "--in-flight" => o.in_flight = value()?.parse().map_err(|e| format!("{e}"))?,
            "--floor-in-flight" => {
                o.floor_in_flight = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--out" => o.out = PathBuf::from(value()?),
            "--cluster" => o.cluster = true,
            "--pin" => o.pin = true,
            // Regenerates `README.md` from the result files in --out, and runs nothing.
            "--readme-only" => o.readme_only = true,
            "--repeat" => {
                o.repeat = value()?.parse().map_err(|e| format!("{e}"))?;
                if o.repeat == 0 {
                    return Err("--repeat must be at least 1".into());
                }
            }
            "--operator-args" => {
                o.operator_args = value()?.split_whitespace().map(str::to_string).collect()
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    for s in &o.scenarios {
        if !["floor", "wave", "idle", "restart", "pubsub-wave"].contains(&s.as_str()) {
            return Err(format!(
                "unknown scenario {s:?}: use floor, wave, idle, restart, pubsub-wave"
            ));
        }
        if ["idle", "restart"].contains(&s.as_str()) && !o.scenarios.iter().any(|x| x == "wave") {
            return Err(format!("scenario {s} needs wave"));
        }
    }
    Ok(o)
}

fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    std::fs::create_dir_all(&options.out).expect("results directory");
    let sizes: &[usize] = if options.readme_only {
        &[]
    } else {
        &options.sizes
    };
    for &size in sizes {
        let ratios: Vec<f64> = (0..options.repeat)
            .filter_map(|_| runtime.block_on(run_size(&options, size)))
            .collect();
        if ratios.len() > 1 {
            progress(&ratio_summary(size, ratios));
        }
    }
    write_readme(&options.out);
    progress(&format!(
        "results in {} (README.md regenerated)",
        options.out.display()
    ));
}

fn progress(message: &str) {
    eprintln!(
        "[bench {}] {message}",
        jiff::Timestamp::now().strftime("%H:%M:%S")
    );
}

/// Everything one size runs against.
struct Env {
    cp: ControlPlane,
    nats: Nats,
    operator: Operator,
    operator_args: Vec<String>,
    client: Client,
    /// `--pin`: the control plane on CPU 0, the rest on CPU 1.
    pinned: bool,
}

/// One nats-server, or a three-node cluster whose buckets get three replicas.
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    fn url(&self) -> String {
        match self {
            Nats::Single(s) => s.url(),
            Nats::Cluster(c) => c.url(),
        }
    }

    /// `/jsz`; on a cluster the API counters summed over the nodes, the streams of node 1 (which
    /// holds a replica of every R3 stream).
    fn jsz(&self) -> Value {
        match self {
            Nats::Single(s) => s.monitor("/jsz"),
            Nats::Cluster(c) => {
                let mut jsz = c.monitor(0, "/jsz");
                for field in ["total", "errors"] {
                    let sum: f64 = (0..3)
                        .map(|i| {
                            c.monitor(i, "/jsz")["api"][field]
                                .as_f64()
                                .unwrap_or_default()
                        })
                        .sum();
                    jsz["api"][field] = json!(sum);
                }
                jsz
            }
        }
    }

    fn varz(&self) -> Value {
        match self {
            Nats::Single(s) => s.varz(),
            Nats::Cluster(c) => c.monitor(0, "/varz"),
        }
    }

    /// The process whose CPU and memory are recorded (node 1 of a cluster).
    fn pid(&self) -> Option<u32> {
        match self {
            Nats::Single(s) => s.pid(),
            Nats::Cluster(c) => c.pid(0),
        }
    }

    /// Bucket settings of the wave's Components.
    fn settings(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Nats::Single(_) => &[],
            Nats::Cluster(_) => &[("replicas", "3")],
        }
    }
}

impl Env {
    /// With `--pin`: the control plane on CPU 0, nats-server, the operator and the benchmark on
    /// CPU 1.
    fn pin(&self) {
        if self.pinned {
            let mut others = vec![self.operator.pid()];
            match &self.nats {
                Nats::Single(s) => others.push(s.pid()),
                Nats::Cluster(c) => others.extend((0..3).map(|i| c.pid(i))),
            }
            measure::pin(&self.cp, &others);
        }
    }

    fn start_operator(kubeconfig: &Path, args: &[String]) -> Operator {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Operator::start(kubeconfig, &args)
    }
}

/// The ratios of the wave to the floor over several runs of one size: each, and their median.
fn ratio_summary(size: usize, mut ratios: Vec<f64>) -> String {
    let each = ratios
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let median = (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0;
    let mean = ratios.iter().sum::<f64>() / n as f64;
    format!(
        "size {size}: wave / floor over {n} runs: {each}; median {}, mean {}",
        round(median, 2),
        round(mean, 2)
    )
}

/// One run of one size: its scenarios, each result saved. Returns the wave's ratio to the floor
/// when both ran.
async fn run_size(options: &Options, size: usize) -> Option<f64> {
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H%M%S")
        .to_string();
    let has = |s: &str| options.scenarios.iter().any(|x| x == s);
    let floor_result = if has("floor") {
        let (floor, machine) = floor(options, size).await;
        let seconds = floor["all_ready_after_first_create_seconds"].as_f64();
        save(options, &date, "floor", size, &machine, floor);
        seconds
    } else {
        None
    };
    if !has("wave") && !has("pubsub-wave") {
        return None;
    }
    progress(&format!(
        "size {size}: starting control plane, nats-server and operator"
    ));
    let cp = ControlPlane::start();
    cp.install_crds();
    let nats = if options.cluster {
        Nats::Cluster(NatsCluster::start())
    } else {
        Nats::Single(NatsServer::start())
    };
    let resync = format!("{}s", options.resync.as_secs());
    let mut operator_args: Vec<String> = ["--resync-interval", &resync, "--log-level", "info"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    operator_args.extend(options.operator_args.iter().cloned());
    let operator = Env::start_operator(&cp.kubeconfig, &operator_args);
    let client = support::client_for(&cp.kubeconfig).await;
    let mut env = Env {
        cp,
        nats,
        operator,
        operator_args,
        client,
        pinned: options.pin,
    };
    env.pin();
    wait_operator_ready(&env.operator, Duration::from_secs(60)).await;
    let mut machine = machine(&env.cp, Some(&env.nats));
    machine["pinned"] = measure::pinning(options.pin);
    machine["operator_args"] = json!(env.operator_args.join(" "));
    if options.cluster {
        machine["nats"] = json!("3-node JetStream cluster, R3 buckets");
    }
    let namespaces = create_namespaces(&env.client, options.namespaces).await;

    let mut ratio = None;
    if has("wave") {
        ratio = buckets_wave(
            &mut env,
            options,
            size,
            &namespaces,
            floor_result,
            &date,
            &machine,
        )
        .await;
    }
    if has("pubsub-wave") {
        let streams = wave(&env, options, WaveKind::Streams, size, &namespaces).await;
        save(options, &date, "pubsub-wave", size, &machine, streams);
    }
    progress(&format!("size {size}: done; stopping the servers"));
    ratio
}

/// The state-store wave, its ratio to the floor, then idle and restart on its objects.
async fn buckets_wave(
    env: &mut Env,
    options: &Options,
    size: usize,
    namespaces: &[String],
    floor_result: Option<f64>,
    date: &str,
    machine: &Value,
) -> Option<f64> {
    let has = |s: &str| options.scenarios.iter().any(|x| x == s);
    let mut wave = wave(env, options, WaveKind::Buckets, size, namespaces).await;
    let mut ratio = None;
    if let Some(floor) = floor_result {
        ratio = wave["all_ready_after_first_apply_seconds"]
            .as_f64()
            .map(|w| round(w / floor, 2));
        progress(&format!(
            "wave: {ratio:?} times the floor ({floor}s) measured in this run"
        ));
        wave["floor_seconds"] = json!(floor);
        wave["ratio_to_floor"] = json!(ratio);
    }
    save(options, date, "wave", size, machine, wave);

    if has("idle") {
        let idle = idle(env, options, size).await;
        save(options, date, "idle", size, machine, idle);
    }
    if has("restart") {
        let restart = restart(env, size).await;
        save(options, date, "restart", size, machine, restart);
    }
    ratio
}

async fn create_namespaces(client: &Client, n: usize) -> Vec<String> {
    let namespaces: Vec<String> = (0..n)
        .map(|i| format!("bench-{i:03}-{}", support::random_suffix()))
        .collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    for ns in &namespaces {
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        ns_api
            .create(&PostParams::default(), &object)
            .await
            .expect("create namespace");
    }
    namespaces
}

fn save(options: &Options, date: &str, scenario: &str, size: usize, machine: &Value, mut v: Value) {
    v["scenario"] = json!(scenario);
    v["components"] = json!(size);
    v["date"] = json!(date);
    v["machine"] = machine.clone();
    let path = options.out.join(format!("{date}-{scenario}-{size}.json"));
    let text = serde_json::to_string_pretty(&v).expect("JSON") + "\n";
    std::fs::write(&path, text).expect("write result");
    progress(&format!("wrote {}", path.display()));
}

async fn wait_operator_ready(operator: &Operator, timeout: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if matches!(operator.http_get("/readyz"), Some((200, _))) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the operator was not ready after {timeout:?}:\n{}",
        operator.log_tail()
    );
}
