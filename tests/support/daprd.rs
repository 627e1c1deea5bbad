//! Dapr's own sidecar, `daprd` (built by test-env/setup.sh from Dapr's Go modules with the NATS
//! JetStream state store and pub/sub), in self-hosted mode: its own resources folder (Component
//! and Subscription files), ports and log; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::free_port;

fn daprd_bin() -> PathBuf {
    std::env::var_os("JKO_DAPRD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("JKO_DAPRD_BIN is not set: eval \"$(test-env/setup.sh)\" first"))
}

/// A resource file as daprd reads it from its resources folder: kind, apiVersion, name and the
/// spec (and `scopes` and `auth`), exactly as the API server holds them, without the namespace.
pub fn resource_file(object: &serde_json::Value) -> serde_json::Value {
    let mut file = serde_json::json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "metadata": {"name": object["metadata"]["name"]},
        "spec": object["spec"],
    });
    for field in ["scopes", "auth"] {
        if let Some(value) = object.get(field) {
            file[field] = value.clone();
        }
    }
    file
}

/// A `secretstores.local.file` Component named `name` serving `secrets` (Secret name -> key ->
/// value) the way Dapr serves Kubernetes Secrets to a `secretKeyRef` (`multiValued`: a name
/// gives every key of that Secret, and `key` picks one), from a file in `dir`.
pub fn secret_store_file(
    dir: &std::path::Path,
    name: &str,
    secrets: &serde_json::Value,
) -> serde_json::Value {
    let path = dir.join(format!("{name}-secrets.json"));
    std::fs::write(&path, secrets.to_string()).expect("write the secrets file");
    serde_json::json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": "secretstores.local.file",
            "version": "v1",
            "metadata": [
                {"name": "secretsFile", "value": path.display().to_string()},
                {"name": "multiValued", "value": "true"},
            ],
        },
    })
}

/// A daprd process in self-hosted mode, with its own resources folder and ports; killed on drop.
pub struct Daprd {
    child: Child,
    pub http_port: u16,
    log: PathBuf,
    pub app_id: String,
    _dir: tempfile::TempDir,
}

impl Daprd {
    /// Starts daprd with one Component file (`component`, a Component object as JSON).
    pub fn start(app_id: &str, component: &serde_json::Value) -> Daprd {
        Daprd::start_with(app_id, std::slice::from_ref(component), None)
    }

    /// Starts daprd with these resource files (Components, Subscriptions... as JSON objects)
    /// and, with `app_port`, the app listening on that loopback port.
    pub fn start_with(
        app_id: &str,
        resources: &[serde_json::Value],
        app_port: Option<u16>,
    ) -> Daprd {
        let dir = tempfile::tempdir().expect("temp dir");
        let folder = dir.path().join("resources");
        std::fs::create_dir_all(&folder).expect("resources dir");
        for (i, resource) in resources.iter().enumerate() {
            // JSON is YAML: the file is the object as the API server returned it.
            std::fs::write(
                folder.join(format!("resource-{i}.yaml")),
                serde_json::to_string_pretty(resource).expect("JSON"),
            )
            .expect("write the resource file");
        }
        Daprd::start_on(app_id, dir, &folder, app_port, &[])
    }

    /// Starts daprd on a resources folder of the caller's (Component, Subscription and secret
    /// store files as a user writes them), with `env` added to its environment.
    pub fn start_in(
        app_id: &str,
        folder: &std::path::Path,
        app_port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Daprd {
        let dir = tempfile::tempdir().expect("temp dir");
        Daprd::start_on(app_id, dir, folder, app_port, env)
    }

    fn start_on(
        app_id: &str,
        dir: tempfile::TempDir,
        folder: &std::path::Path,
        app_port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Daprd {
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
        .arg(folder)
        .args(["--dapr-http-port", &http_port.to_string()])
        .args(["--dapr-grpc-port", &free_port().to_string()])
        .args(["--dapr-internal-grpc-port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()]);
        if let Some(port) = app_port {
            cmd.args(["--app-port", &port.to_string()]);
        }
        cmd.envs(env.iter().copied());
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        let child = super::process::spawn_tied(cmd, libc::SIGKILL).expect("start daprd");
        Daprd {
            child,
            http_port,
            log,
            app_id: app_id.to_string(),
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
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
    pub fn wait_healthy(&mut self) -> Duration {
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
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
        let addr = format!("127.0.0.1:{}", self.http_port);
        super::http_request(&addr, method, path, body, Duration::from_secs(10))
    }
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// daprd's image on the node (`JKO_DAPRD_IMAGE`, from test-env/setup.sh).
pub fn image() -> String {
    std::env::var("JKO_DAPRD_IMAGE").unwrap_or_else(|_| {
        panic!("JKO_DAPRD_IMAGE is not set: eval \"$(test-env/setup.sh)\" first")
    })
}

/// A Deployment of one pod whose container is daprd, as Dapr's injector would add it: loading
/// the resource files of ConfigMap `config_map` (a Component file from [`resource_file`]), its
/// HTTP API on 3500 as the readiness probe (healthy once every Component is initialised: a
/// missing bucket makes daprd exit, so the pod crash-loops). With `dapr_enabled`, the pod
/// template carries Dapr's annotations (`dapr.io/enabled`, `dapr.io/app-id`), as an app's
/// manifest does.
pub fn sidecar_deployment(
    ns: &str,
    name: &str,
    app_id: &str,
    dapr_enabled: bool,
    config_map: &str,
) -> serde_json::Value {
    let annotations = if dapr_enabled {
        serde_json::json!({"dapr.io/enabled": "true", "dapr.io/app-id": app_id})
    } else {
        serde_json::json!({})
    };
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "daprd",
                        "image": image(),
                        "imagePullPolicy": "Never",
                        "args": [
                            "--app-id", app_id, "--mode", "standalone", "--log-level", "info",
                            "--resources-path", "/resources", "--dapr-http-port", "3500",
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/v1.0/healthz", "port": 3500},
                            "periodSeconds": 1,
                            "failureThreshold": 1,
                        },
                        "volumeMounts": [{"name": "resources", "mountPath": "/resources"}],
                    }],
                    "volumes": [{"name": "resources", "configMap": {"name": config_map}}],
                },
            },
        },
    })
}

/// A ConfigMap holding resource files for daprd (`component.yaml`: `resource`, as JSON).
pub fn resources_config_map(
    ns: &str,
    name: &str,
    resource: &serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": {"component.yaml": serde_json::to_string_pretty(resource).expect("JSON")},
    })
}
