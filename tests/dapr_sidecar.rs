//! Dapr's own sidecar, `daprd` (built by test-env/setup.sh from Dapr's Go modules, with the NATS
//! JetStream state store), loading a Component file equal to the Component the operator
//! reconciled: before the bucket exists it refuses to start (Dapr's fatal component init error,
//! the failure the operator exists to prevent); once the KeyValueBucket is Ready it starts, and
//! state saved through its HTTP API lands in the operator's bucket and reads back. Also with
//! `jwt`/`seedKey` credentials against a nats-server in operator mode.

mod support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::nats::NatsServer;
use support::process::free_port;
use support::{ComponentManifest, TestNamespace, client, control_plane, operator, wait_kvb};

fn daprd_bin() -> PathBuf {
    std::env::var_os("JKO_DAPRD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("JKO_DAPRD_BIN is not set: eval \"$(test-env/setup.sh)\" first"))
}

/// A daprd process in self-hosted mode, with its own resources folder and ports; killed on drop.
struct Daprd {
    child: Child,
    http_port: u16,
    log: PathBuf,
    app_id: String,
    _dir: tempfile::TempDir,
}

impl Daprd {
    /// Starts daprd with one Component file (`component`, a Component object as JSON).
    fn start(app_id: &str, component: &serde_json::Value) -> Daprd {
        let dir = tempfile::tempdir().expect("temp dir");
        let resources = dir.path().join("resources");
        std::fs::create_dir_all(&resources).expect("resources dir");
        // JSON is YAML: the file is the object as the API server returned it.
        std::fs::write(
            resources.join("statestore.yaml"),
            serde_json::to_string_pretty(component).expect("JSON"),
        )
        .expect("write the Component file");
        let log = dir.path().join("daprd.log");
        let out = std::fs::File::create(&log).expect("log file");
        let http_port = free_port();
        let mut cmd = Command::new(daprd_bin());
        cmd.args([
            "--app-id",
            app_id,
            "--mode",
            "standalone",
            "--log-level",
            "info",
        ])
        .arg("--resources-path")
        .arg(&resources)
        .args(["--dapr-http-port", &http_port.to_string()])
        .args(["--dapr-grpc-port", &free_port().to_string()])
        .args(["--dapr-internal-grpc-port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out);
        let child = support::process::spawn_tied(cmd, libc::SIGKILL).expect("start daprd");
        Daprd {
            child,
            http_port,
            log,
            app_id: app_id.to_string(),
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; its status.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Waits until daprd's health endpoint answers 204 (every component initialized).
    fn wait_healthy(&mut self) -> Duration {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("daprd exited ({status}):\n{}", self.log());
            }
            if let Some((204, _)) = self.http("GET", "/v1.0/healthz", None) {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daprd not healthy after 30 s:\n{}", self.log());
    }

    /// One HTTP/1.0 request to daprd's API: (status, body).
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())?;
        Some((status, body))
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Component as daprd reads it from a file: kind, apiVersion, name and the spec, exactly as
/// the API server holds it.
fn component_file(object: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "metadata": {"name": object["metadata"]["name"]},
        "spec": object["spec"],
    })
}

fn manifest_object(manifest: &str) -> serde_json::Value {
    serde_yaml::from_str(manifest).expect("the manifest is YAML")
}

/// The Component as the operator reconciled it, from the API server.
fn reconciled(ns: &str, name: &str) -> serde_json::Value {
    let json = control_plane()
        .kubectl(&["-n", ns, "get", "component", name, "-o", "json"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&json).expect("Component JSON")
}

/// The whole story against one nats-server: daprd refuses the Component before its bucket
/// exists, the operator creates the bucket, daprd then saves and reads state in it.
async fn daprd_round_trip(
    test: &str,
    manifest_for: impl Fn(&str, &str) -> String,
    nats_url: &str,
    connect: async_nats::ConnectOptions,
) {
    let client = client().await;
    let ns = TestNamespace::new(&client, test).await;
    let bucket = support::unique_bucket("dapr");
    let manifest = manifest_for(&ns.name, &bucket);
    let app_id = format!("app{}", support::random_suffix());

    // Before the operator has made the bucket: Dapr's fatal init error, within seconds.
    let mut early = Daprd::start(&app_id, &component_file(&manifest_object(&manifest)));
    let status = early
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("daprd kept running without its bucket:\n{}", early.log()));
    let log = early.log();
    assert!(!status.success(), "daprd exited successfully:\n{log}");
    assert!(
        log.contains("level=fatal") && log.contains("bucket not found"),
        "daprd did not fail with the missing bucket:\n{log}"
    );

    // The operator reconciles the Component; then daprd starts with the same Component.
    operator();
    control_plane().apply(&manifest);
    wait_kvb(&ns.name, "statestore", "Ready", Duration::from_secs(60));
    let object = reconciled(&ns.name, "statestore");
    assert_eq!(
        object["spec"],
        manifest_object(&manifest)["spec"],
        "the Component daprd loads is the one that was applied"
    );
    let mut daprd = Daprd::start(&app_id, &component_file(&object));
    let healthy_after = daprd.wait_healthy();
    eprintln!(
        "figures: daprd healthy {healthy_after:.1?} after start with the reconciled Component"
    );

    let saved = daprd.http(
        "POST",
        "/v1.0/state/statestore",
        Some(r#"[{"key":"order-1","value":{"item":"coffee","qty":2}}]"#),
    );
    assert_eq!(
        saved.as_ref().map(|s| s.0),
        Some(204),
        "save: {saved:?}\n{}",
        daprd.log()
    );
    let read = daprd
        .http("GET", "/v1.0/state/statestore/order-1", None)
        .unwrap_or_else(|| panic!("read failed:\n{}", daprd.log()));
    assert_eq!(read.0, 200, "read: {read:?}");
    let value: serde_json::Value = serde_json::from_str(&read.1).expect("JSON value");
    assert_eq!(value, serde_json::json!({"item": "coffee", "qty": 2}));

    // The state is in the operator's bucket, under daprd's key for this app.
    let nats = connect.connect(nats_url).await.expect("connect to NATS");
    let kv = async_nats::jetstream::new(nats)
        .get_key_value(&bucket)
        .await
        .expect("the operator's bucket");
    let mut keys = kv.keys().await.expect("keys");
    let mut found = Vec::new();
    use futures::StreamExt;
    while let Some(k) = keys.next().await {
        found.push(k.expect("key"));
    }
    assert!(
        found
            .iter()
            .any(|k| k.contains(&daprd.app_id) && k.ends_with("order-1")),
        "keys in {bucket}: {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn daprd_refuses_the_component_before_its_bucket_exists_then_stores_state_in_it() {
    let server = support::nats();
    let url = server.url();
    daprd_round_trip(
        "daprd",
        |ns, bucket| ComponentManifest::store(ns, "statestore", &url, bucket).yaml(),
        &server.url(),
        async_nats::ConnectOptions::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn daprd_with_jwt_and_seed_against_an_operator_mode_server() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let (jwt, seed) = accounts.new_user("dapr", None);
    let url = server.url();
    let manifest = |ns: &str, bucket: &str| {
        ComponentManifest::store(ns, "statestore", &url, bucket)
            .item("jwt", &jwt)
            .item("seedKey", &seed)
            .yaml()
    };
    daprd_round_trip(
        "daprd-jwt",
        manifest,
        &server.url(),
        support::nats::user_connect_options(&jwt, &seed),
    )
    .await;
}
