//! Test support shared by the integration tests: a real Kubernetes control plane and a real
//! nats-server, started once per process (one module of tests, see `tests/main.rs`), plus helpers
//! to act on them as a user would.
//!
//! Processes are started from one long-lived thread with a parent-death signal, so they die with
//! the test binary even when it panics or is killed; the control plane also exits when its stdin
//! (a pipe held by the test binary) closes.
#![allow(dead_code)] // shared with the benchmark (benches/operator/), which uses other parts

pub mod advisories;
pub mod cluster;
pub mod controlplane;
pub mod daprd;
pub mod fixtures;
pub mod forwarder;
pub mod helm_release;
pub mod nats;
pub mod needles;
pub mod operator;
pub mod process;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub use controlplane::ControlPlane;
#[allow(unused_imports)] // the benchmark uses none of these
pub use fixtures::{
    ComponentManifest, history, per_key_ttl_behaves_as_documented, revisions, seed, store_yaml,
    stream_info, unique_bucket,
};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static CP: OnceLock<ControlPlane> = OnceLock::new();

/// The servers below are started once per process and belong to one module of tests, some of
/// which stop or restart them: a process asked to run the tests of several modules (plain `cargo
/// test`) would share them between modules that each expect their own. Refused, with what to run.
fn one_module_per_process() {
    static MODULE: OnceLock<Result<String, String>> = OnceLock::new();
    let module = MODULE.get_or_init(|| module_of_filters(std::env::args().skip(1)));
    if let Err(why) = module {
        panic!(
            "{why}: the integration tests run one module per process (each module starts, stops \
             and restarts its own servers). Run test-env/run-tests.py (what test-env/test.sh \
             runs), or name one module: cargo test --test integration reconcile::"
        );
    }
}

/// The one module that the test filters among `args` (libtest's arguments) name.
fn module_of_filters(args: impl Iterator<Item = String>) -> Result<String, String> {
    // libtest's options that take their value as the next argument.
    const WITH_VALUE: [&str; 7] = [
        "--test-threads",
        "--skip",
        "--logfile",
        "--format",
        "--color",
        "--shuffle-seed",
        "-Z",
    ];
    let mut modules: Vec<String> = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        let Some((module, _)) = arg.split_once("::") else {
            return Err(format!(
                "the filter `{arg}` does not name a module (`<module>::`)"
            ));
        };
        if !modules.iter().any(|m| m == module) {
            modules.push(module.to_string());
        }
    }
    match modules.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("no module named".to_string()),
        several => Err(format!("several modules named ({})", several.join(", "))),
    }
}

/// The control plane shared by every test of this module, with the project's CRDs installed (in a
/// module that calls [`node_cluster`], the same cluster, with its node).
pub fn control_plane() -> &'static ControlPlane {
    CP.get_or_init(|| {
        one_module_per_process();
        let cp = ControlPlane::start();
        cp.install_crds();
        cp
    })
}

/// The one-node cluster shared by every test of this module (started on first use; tests of a
/// module that uses it must call this before anything that calls [`control_plane`]).
pub fn node_cluster() -> &'static ControlPlane {
    // A node that failed to start fails every later test of the module at once, instead of each
    // test waiting for a start of its own to time out.
    static FAILED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let cp = CP.get_or_init(|| {
        one_module_per_process();
        if let Some(failure) = FAILED.lock().ok().and_then(|f| f.clone()) {
            panic!("the node did not start (see the first failed test): {failure}");
        }
        let cp = match std::panic::catch_unwind(ControlPlane::start_node) {
            Ok(cp) => cp,
            Err(panic) => {
                let failure = panic
                    .downcast_ref::<String>()
                    .map(|s| s.lines().next().unwrap_or_default().to_string())
                    .unwrap_or_default();
                if let Ok(mut f) = FAILED.lock() {
                    *f = Some(failure);
                }
                std::panic::resume_unwind(panic);
            }
        };
        // The static is never dropped: when the tests are done, the binary stops the control
        // plane and waits for its node's teardown before it exits, so that nothing of the node
        // outlives the test binary (the parent-death signal alone would not wait).
        extern "C" fn stop_at_exit() {
            if let Some(cp) = CP.get() {
                cp.stop();
            }
        }
        // SAFETY: registers a plain function without arguments, run once by exit().
        unsafe { libc::atexit(stop_at_exit) };
        cp.install_crds();
        cp
    });
    assert!(
        cp.node.is_some(),
        "this process started a control plane without a node before calling node_cluster()"
    );
    cp
}

/// Runs helm (`JKO_HELM_BIN`, from `test-env/setup.sh`) against the cluster of `kubeconfig`, from
/// the repository's root: `Ok(output)`, or `Err` with the command and its output.
pub fn helm(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let bin = std::env::var("JKO_HELM_BIN").unwrap_or_else(|_| "helm".into());
    run_tool(&bin, kubeconfig, args)
}

/// Points a command-line client (`kubectl`, `helm`) at the cluster of `kubeconfig`, with its cache
/// (discovery and OpenAPI documents, about 2 MB per API server) beside the kubeconfig, where the
/// control plane's folder takes it away: in `$HOME/.kube/cache` every control plane of every run
/// left a copy of its own (2.1 GB after ten sessions).
pub fn kube_tool_env(command: &mut std::process::Command, kubeconfig: &Path) {
    command.env("KUBECONFIG", kubeconfig);
    if let Some(dir) = kubeconfig.parent() {
        command.env("KUBECACHEDIR", dir.join("kube-cache"));
    }
}

/// Runs a command-line client (`kubectl`, `helm`) against the cluster of `kubeconfig`, from the
/// repository's root: `Ok(output)`, or `Err` with the command and its output.
pub fn run_tool(bin: &str, kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    run_command(bin, Some(kubeconfig), args)
}

/// Runs a command (with `KUBECONFIG` when `kubeconfig` is given) from the repository's root:
/// `Ok(output)` (stdout, then stderr), or `Err` with the command and its output.
pub fn run_command(bin: &str, kubeconfig: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = std::process::Command::new(bin);
    command.args(args).current_dir(repo_root());
    if let Some(kubeconfig) = kubeconfig {
        kube_tool_env(&mut command, kubeconfig);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {bin} (eval \"$(test-env/setup.sh)\" first): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{bin} {} failed:\n{text}", args.join(" ")))
    }
}

/// One HTTP/1.0 request to `addr` (`host:port`), reading the whole response within `timeout`:
/// (status, body). `None` when the server is not there or the response is not HTTP.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let head = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    match body {
        Some(body) => write!(
            stream,
            "{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        None => write!(stream, "{head}\r\n"),
    }
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A fake NATS server's side of the handshake: writes `info` (the whole `INFO {...}\r\n` line),
/// then reads until the client's first `PING`. `false` when the client went away first.
pub async fn nats_handshake(socket: &mut tokio::net::TcpStream, info: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if socket.write_all(info.as_bytes()).await.is_err() {
        return false;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(6).any(|w| w == b"PING\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// A kube client for the shared control plane. A new one per test: each tokio test has its own
/// runtime, and a client's connection pool lives on the runtime that made it.
pub async fn client() -> Client {
    client_for(&control_plane().kubeconfig).await
}

/// A kube client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("kube client")
}

/// A namespace of its own for one test, deleted (with everything in it) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates a namespace named after the test with a random suffix.
    pub async fn new(client: &Client, test: &str) -> Self {
        let name = format!("{}-{}", test.replace('_', "-"), random_suffix());
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"jetstreamkv.io/test": "true"}}
        }))
        .expect("namespace object");
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        Self { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Best effort and non-blocking: the namespace controller finishes the deletion.
        let _ = control_plane().kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// A short random suffix for names that must not collide between tests running in parallel.
pub fn random_suffix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:08x}", h.finish() as u32)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `describe()`'s text,
/// which should show the user what they would look at (the object, its events, logs).
pub async fn eventually<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
    describe: impl AsyncFnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            let details = describe().await;
            panic!("timed out after {timeout:?} waiting for {what}\n{details}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most a minute) until the JetStreamStream's Ready condition satisfies `ok(status,
/// reason)`; returns the object as JSON.
pub async fn wait_jss(
    namespace: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&str, &str) -> bool,
) -> serde_json::Value {
    eventually(
        Duration::from_secs(60),
        &format!("jss/{name} in {namespace}: {what}"),
        || async {
            let out = control_plane()
                .kubectl(&["-n", namespace, "get", "jss", name, "-o", "json"], None)
                .ok()?;
            let jss: serde_json::Value = serde_json::from_str(&out).ok()?;
            let ready = jss["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?;
            ok(ready["status"].as_str()?, ready["reason"].as_str()?).then_some(jss)
        },
        async || describe(namespace, "jss", name),
    )
    .await
}

/// What `kubectl describe` and recent events say about an object, for failure messages.
pub fn describe(namespace: &str, kind: &str, name: &str) -> String {
    let cp = control_plane();
    let obj = cp
        .kubectl(&["-n", namespace, "get", kind, name, "-o", "yaml"], None)
        .unwrap_or_else(|e| e);
    let events = cp
        .kubectl(
            &[
                "-n",
                namespace,
                "get",
                "events",
                "--sort-by=.metadata.creationTimestamp",
            ],
            None,
        )
        .unwrap_or_else(|e| e);
    format!("--- {kind}/{name} in {namespace}:\n{obj}\n--- events in {namespace}:\n{events}")
}

/// Deletes every object of a list, for tests that clean up across namespaces.
pub async fn delete_all<K>(api: &Api<K>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let _ = api
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The nats-server (JetStream) shared by the tests of this module.
pub fn nats() -> &'static nats::NatsServer {
    static NATS: OnceLock<nats::NatsServer> = OnceLock::new();
    NATS.get_or_init(|| {
        one_module_per_process();
        nats::NatsServer::start()
    })
}

/// Resync period of the shared operator: short, so drift and steady-state tests run quickly.
pub const RESYNC: Duration = Duration::from_secs(4);

/// The operator process shared by the tests of this module, watching every namespace.
pub fn operator() -> &'static operator::Operator {
    static OPERATOR: OnceLock<operator::Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        one_module_per_process();
        operator::Operator::start(
            &control_plane().kubeconfig,
            &["--resync-interval", "4s", "--max-backoff", "2s"],
        )
    })
}

/// `kubectl wait --for=condition=<condition> kvb/<name>`, as a user would; on timeout, panics
/// with the KeyValueBucket, the namespace's events and the operator's log.
pub fn wait_kvb(namespace: &str, name: &str, condition: &str, timeout: Duration) {
    wait_kvb_of(operator(), namespace, name, condition, timeout)
}

/// [`wait_kvb`] for a given operator process (whose log the failure shows).
pub fn wait_kvb_of(
    operator: &operator::Operator,
    namespace: &str,
    name: &str,
    condition: &str,
    timeout: Duration,
) {
    // `kubectl wait --for=condition` fails at once while the object does not exist yet.
    let _ = control_plane().kubectl(
        &[
            "-n",
            namespace,
            "wait",
            "--for=create",
            &format!("kvb/{name}"),
            &format!("--timeout={}s", timeout.as_secs()),
        ],
        None,
    );
    let result = control_plane().kubectl(
        &[
            "-n",
            namespace,
            "wait",
            &format!("--for=condition={condition}"),
            &format!("kvb/{name}"),
            &format!("--timeout={}s", timeout.as_secs()),
        ],
        None,
    );
    if let Err(e) = result {
        panic!(
            "{e}\n{}\n--- operator log:\n{}",
            describe(namespace, "kvb", name),
            operator.log_tail()
        );
    }
}

/// The KeyValueBucket `name` as it is now.
pub async fn kvb(
    client: &Client,
    namespace: &str,
    name: &str,
) -> jetstream_kv_operator::crd::KeyValueBucket {
    Api::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get kvb/{name}: {e}"))
}

/// A JetStream context on a NATS URL, for checking buckets as Dapr would see them.
/// `url` may list several servers (a cluster's), comma-separated: the client goes to whichever
/// is up.
pub async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url.split(',').collect::<Vec<_>>())
        .await
        .expect("connect to nats-server");
    async_nats::jetstream::new(client)
}

/// Waits until the KeyValueBucket's condition `type_` has `status` and `reason`; returns the
/// object. Panics with what a user would look at when it does not happen.
pub async fn wait_condition(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> jetstream_kv_operator::crd::KeyValueBucket {
    let api: Api<jetstream_kv_operator::crd::KeyValueBucket> =
        Api::namespaced(client.clone(), namespace);
    eventually(
        Duration::from_secs(60),
        &format!("kvb/{name} in {namespace} to have {type_}={status} reason {reason}"),
        || async {
            let kvb = api.get_opt(name).await.ok().flatten()?;
            let c = kvb.condition(type_)?;
            (c.status == status && c.reason == reason).then_some(kvb)
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                describe(namespace, "kvb", name),
                operator().log_tail()
            )
        },
    )
    .await
}

/// A `state.jetstream` Component manifest; `annotations` is the inside of a YAML flow map.
pub fn component_yaml(
    ns: &str,
    name: &str,
    nats_url: &str,
    bucket: &str,
    annotations: &str,
) -> String {
    ComponentManifest::store(ns, name, nats_url, bucket)
        .annotations_yaml(annotations)
        .yaml()
}

/// A bucket's stream configuration as NATS reports it, as JSON; None when it does not exist.
pub async fn stream_config_json(url: &str, bucket: &str) -> Option<serde_json::Value> {
    let js = jetstream(url).await;
    let mut stream = js.get_stream(format!("KV_{bucket}")).await.ok()?;
    let info = stream.info().await.ok()?;
    Some(serde_json::to_value(&info.config).expect("stream config as JSON"))
}

/// The (reason, message) of every Event about the objects named `name` in `ns`.
pub async fn events_of(ns: &str, name: &str) -> Vec<(String, String)> {
    let out = control_plane()
        .kubectl(
            &[
                "-n",
                ns,
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name}"),
                "-o",
                "json",
            ],
            None,
        )
        .unwrap();
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"]
                    .as_str()
                    .or(e["note"].as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Waits for an Event with `reason` on the object `name` (a Component, or its KeyValueBucket);
/// returns its message.
pub async fn wait_event(ns: &str, name: &str, reason: &str) -> String {
    wait_event_mentioning(ns, name, reason, "").await
}

/// [`wait_event`] for an Event whose message contains `mentions`.
pub async fn wait_event_mentioning(ns: &str, name: &str, reason: &str, mentions: &str) -> String {
    eventually(
        Duration::from_secs(60),
        &format!("a {reason} Event mentioning {mentions:?} on component/{name}"),
        || async {
            events_of(ns, name)
                .await
                .into_iter()
                .find(|(r, m)| r == reason && m.contains(mentions))
                .map(|(_, m)| m)
        },
        async || {
            format!(
                "{:?}\n{}\n{}\n--- operator log:\n{}",
                events_of(ns, name).await,
                describe(ns, "component", name),
                describe(ns, "kvb", name),
                operator().log_tail()
            )
        },
    )
    .await
}

/// A slowloris client on `stream` (plain or TLS): sends a request head one header line a second
/// and never the blank line that ends it. Returns how long the server held it before closing,
/// or None when it was still held after 40 s.
pub async fn slowloris<S>(mut stream: S) -> Option<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .is_err()
    {
        return Some(started.elapsed());
    }
    for i in 0..40 {
        if stream
            .write_all(format!("X-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            return Some(started.elapsed());
        }
        let _ = stream.flush().await;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            // A 408 before closing is fine too.
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

#[test]
fn a_process_runs_the_tests_of_one_module() {
    let module = |args: &[&str]| module_of_filters(args.iter().map(|a| a.to_string()));
    let one = [
        "--exact",
        "node::a",
        "node::b",
        "--test-threads",
        "8",
        "--skip",
        "x",
    ];
    assert_eq!(module(&one), Ok("node".to_string()));
    assert_eq!(module(&["reconcile::"]), Ok("reconcile".to_string()));
    assert!(module(&[]).is_err(), "plain cargo test names no module");
    assert!(module(&["node::a", "pubsub::b"]).is_err());
    assert!(
        module(&["reconcile"]).is_err(),
        "a bare word matches tests of any module"
    );
}
