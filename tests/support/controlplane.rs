//! The local Kubernetes control plane built by `test-env/setup.sh`: etcd, kube-apiserver and the
//! garbage-collector and namespace controllers, on random ports; with [`ControlPlane::start_node`]
//! also a node (containerd, kubelet, kube-scheduler, a CNI bridge) that runs pods.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use serde::Deserialize as _;

use super::process::{signal, spawn_tied, tail};

/// A running control plane. Dropping it (or the test binary exiting) stops every process of it.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub version: String,
    /// The node, when started with [`ControlPlane::start_node`].
    pub node: Option<NodeInfo>,
    /// The `controlplane` process: this process's child, or one that test-env/run-tests.py
    /// started ahead of this module (see [`ControlPlane::claim_prestarted`]).
    process: Process,
    /// What [`ControlPlane::apply`] learnt of each kind it applied: its resource and scope.
    kinds: Mutex<HashMap<GroupVersionKind, (ApiResource, Scope)>>,
    /// The resources `kubectl get` may name (plural, singular, short names, kind), as the API
    /// server's discovery listed them when [`ControlPlane::kubectl`] last looked.
    served: Mutex<HashMap<String, Served>>,
}

/// A resource the API server serves, for `kubectl get` answered in this process.
#[derive(Clone)]
struct Served {
    /// `/api/v1` or `/apis/<group>/<version>`.
    prefix: String,
    api_version: String,
    plural: String,
    kind: String,
    namespaced: bool,
}

enum Process {
    Child(Mutex<Child>),
    /// Started by the test runner, which reaps it: gone from /proc once it has exited.
    Prestarted(u32),
}

impl Process {
    fn signal(&self, sig: i32) {
        match self {
            Process::Child(child) => signal(&child.lock().expect("child lock"), sig),
            // SAFETY: kill(2) on the pid of the control plane this module claimed.
            Process::Prestarted(pid) => unsafe {
                libc::kill(*pid as i32, sig);
            },
        }
    }
}

/// The node of a control plane started with `--node`, as its ready.json describes it.
#[derive(serde::Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The Node's name (the host's name).
    pub name: String,
    /// The pods' bridge, also the name of the node's cgroup root, /run folder and iptables rule.
    pub bridge: String,
    /// The bridge's address: where pods reach servers of the host (a nats-server listening there).
    pub gateway: String,
    pub subnet: String,
    pub containerd_socket: String,
    pub kubelet_root_dir: String,
    pub cgroup_root: String,
    pub containerd_pid: u32,
    pub kubelet_pid: u32,
    /// From the start of the node to Ready, as Go prints a duration.
    pub ready_after_start: String,
}

#[derive(serde::Deserialize)]
struct Ready {
    server: String,
    version: String,
    #[serde(rename = "apiserverPid")]
    apiserver_pid: u32,
    node: Option<NodeInfo>,
}

fn read_ready(dir: &std::path::Path) -> Option<Ready> {
    let text = std::fs::read_to_string(dir.join("ready.json")).ok()?;
    serde_json::from_str(&text).ok()
}

impl ControlPlane {
    /// Starts a control plane in a new directory and waits until it serves: the one
    /// test-env/run-tests.py started ahead of this module, when there is one to claim.
    pub fn start() -> Self {
        Self::claim_prestarted().unwrap_or_else(|| Self::start_with(&[], Duration::from_secs(180)))
    }

    /// The control plane the test runner started for this module while the one before ran
    /// (`JKO_PRESTARTED_CONTROLPLANE`, its folder, and `…_PID`): claimed once per process by
    /// creating `claimed` in its folder, which tells the runner to stop it after this module.
    /// `None` (and a control plane of this process's own) when there is none, another test of
    /// this module claimed it, or it did not get ready.
    fn claim_prestarted() -> Option<Self> {
        let dir = PathBuf::from(std::env::var_os("JKO_PRESTARTED_CONTROLPLANE")?);
        let pid: u32 = std::env::var("JKO_PRESTARTED_CONTROLPLANE_PID")
            .ok()?
            .parse()
            .ok()?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join("claimed"))
            .ok()?;
        let started = Instant::now();
        let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
        let ready = loop {
            if let Some(ready) = read_ready(&dir) {
                break ready;
            }
            if !alive() || started.elapsed() > Duration::from_secs(180) {
                eprintln!(
                    "the prestarted control plane in {} did not get ready: starting one; its log:\n{}",
                    dir.display(),
                    tail(&dir.join("controlplane.log"), 20)
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!(
            "control plane {} ready at {} (started by the test runner; waited {:.1?})",
            ready.version,
            ready.server,
            started.elapsed()
        );
        Some(Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            server: ready.server,
            version: ready.version,
            node: None,
            process: Process::Prestarted(pid),
            kinds: Mutex::default(),
            served: Mutex::default(),
        })
    }

    /// Starts a control plane with a node that runs pods (needs root), with the images the tests
    /// run imported into its containerd: the pause image (`JKO_PAUSE_IMAGE_ARCHIVE`, from
    /// `test-env/setup.sh`), the operator's (`JKO_OPERATOR_IMAGE_ARCHIVE`) and the one of the
    /// release tests/upgrade.rs upgrades from (`JKO_RELEASE_IMAGE_ARCHIVE`), both from
    /// `test-env/operator-image.sh`, and daprd's (`JKO_DAPRD_IMAGE_ARCHIVE`, from
    /// `test-env/setup.sh`). The node is torn down, leaving nothing on the host, when the
    /// control plane stops (its stdin closes with the test binary).
    pub fn start_node() -> Self {
        let archive = |var: &str, hint: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| {
                    panic!("{var} is not set: run the tests with test-env/test.sh, or {hint} first")
                })
        };
        let pause = archive("JKO_PAUSE_IMAGE_ARCHIVE", "`eval \"$(test-env/setup.sh)\"`");
        let operator = archive(
            "JKO_OPERATOR_IMAGE_ARCHIVE",
            "`eval \"$(test-env/operator-image.sh)\"`",
        );
        let release = archive(
            "JKO_RELEASE_IMAGE_ARCHIVE",
            "`eval \"$(test-env/operator-image.sh)\"`",
        );
        let daprd = archive("JKO_DAPRD_IMAGE_ARCHIVE", "`eval \"$(test-env/setup.sh)\"`");
        Self::start_with(
            &[
                "--node",
                "--pause-image",
                &pause,
                "--image",
                &operator,
                "--image",
                &release,
                "--image",
                &daprd,
            ],
            Duration::from_secs(300),
        )
    }

    fn start_with(extra: &[&str], timeout: Duration) -> Self {
        let bin = std::env::var("JKO_CONTROLPLANE_BIN").unwrap_or_else(|_| {
            panic!("JKO_CONTROLPLANE_BIN is not set: run the tests with test-env/test.sh, or `eval \"$(test-env/setup.sh)\"` first")
        });
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("controlplanes")
            .join(format!("{}-{}", std::process::id(), super::random_suffix()));
        std::fs::create_dir_all(&dir).expect("control plane directory");
        let log = std::fs::File::create(dir.join("controlplane.log")).expect("log file");
        let mut cmd = Command::new(&bin);
        cmd.arg("--dir")
            .arg(&dir)
            .arg("--exit-on-stdin-eof")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let started = Instant::now();
        let mut child = spawn_tied(cmd, libc::SIGTERM)
            .unwrap_or_else(|e| panic!("start the control plane {bin}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("READY ") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(timeout).is_err() {
            // SIGTERM, so that a half-started node is torn down.
            signal(&child, libc::SIGTERM);
            let _ = child.wait();
            panic!(
                "the control plane did not become ready in {timeout:?}; its log:\n{}\nkube-apiserver log:\n{}\nkubelet log:\n{}",
                tail(&dir.join("controlplane.log"), 40),
                tail(&dir.join("kube-apiserver.log"), 40),
                tail(&dir.join("node").join("kubelet.log"), 40),
            );
        }
        let ready = read_ready(&dir).expect("ready.json written before READY");
        eprintln!(
            "control plane {} ready at {} in {:.1?}{}",
            ready.version,
            ready.server,
            started.elapsed(),
            ready
                .node
                .as_ref()
                .map(|n| format!(
                    "; node {} ready {} after the API server (pods on {} {})",
                    n.name, n.ready_after_start, n.bridge, n.subnet
                ))
                .unwrap_or_default()
        );
        Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            server: ready.server,
            version: ready.version,
            node: ready.node,
            process: Process::Child(Mutex::new(child)),
            kinds: Mutex::default(),
            served: Mutex::default(),
        }
    }

    /// Runs kubectl against this control plane; `Ok(stdout)` or `Err(stderr and stdout)`.
    ///
    /// `kubectl [-n NS] get RESOURCE [NAME] -o json`, what the tests poll for, is answered in
    /// this process with the same JSON and the same `Error from server (Reason): message`: a
    /// kubectl process costs about 0.4 CPU-seconds, and a poll every 200 ms kept most of a core
    /// busy while a test waited.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        if stdin.is_none()
            && let Some((resource, namespace, name)) = plain_get(args)
        {
            return on_own_runtime(self.get_json(resource, namespace, name));
        }
        let mut cmd = Command::new("kubectl");
        super::kube_tool_env(&mut cmd, &self.kubeconfig);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("run kubectl: {e}"))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes())
                .map_err(|e| format!("write kubectl stdin: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait for kubectl: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "kubectl {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                stdout
            ))
        }
    }

    /// `kubectl get` of one object, or a list, as kubectl prints it with `-o json`.
    async fn get_json(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<String, String> {
        let client = super::client_for(&self.kubeconfig).await;
        match self.get_with(&client, resource, namespace, name).await {
            // A path the server does not serve (a plain-text 404, not a Status): the kind's
            // served version changed since discovery (tests/upgrade.rs swaps the CRDs for the
            // release's). Looked up again, once.
            Err(e) if e.contains("404 page not found") => {
                self.served.lock().expect("served lock").clear();
                self.get_with(&client, resource, namespace, name).await
            }
            other => other,
        }
    }

    async fn get_with(
        &self,
        client: &kube::Client,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<String, String> {
        let known = self
            .served
            .lock()
            .expect("served lock")
            .get(resource)
            .cloned();
        let served = match known {
            Some(served) => served,
            None => {
                // Looked up again when a name is not known: a CRD may have come since.
                let found = discover(client).await?;
                let served = found.get(resource).cloned();
                *self.served.lock().expect("served lock") = found;
                served.ok_or_else(|| {
                    format!("error: the server doesn't have a resource type \"{resource}\"")
                })?
            }
        };
        let mut path = served.prefix.clone();
        if served.namespaced {
            path += &format!("/namespaces/{}", namespace.unwrap_or("default"));
        }
        path += &format!("/{}", served.plural);
        if let Some(name) = name {
            path += &format!("/{name}");
        }
        let request = http::Request::get(&path)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let mut value: serde_json::Value = client.request(request).await.map_err(|e| match e {
            kube::Error::Api(status) => {
                format!("Error from server ({}): {}", status.reason, status.message)
            }
            other => format!("kubectl get {path}: {other}"),
        })?;
        if name.is_none() {
            // kubectl prints a list as a List whose items say what they are.
            let mut items = value["items"].take();
            for item in items.as_array_mut().into_iter().flatten() {
                item["apiVersion"] = served.api_version.clone().into();
                item["kind"] = served.kind.clone().into();
            }
            value = serde_json::json!({
                "apiVersion": "v1",
                "items": items,
                "kind": "List",
                "metadata": {"resourceVersion": ""},
            });
        }
        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
    }

    /// Applies a manifest (YAML documents) as `kubectl apply -f -` does, each object in turn,
    /// with server-side apply from this process: a kubectl process cost about 0.4 CPU-seconds a
    /// call, 74 s of a run's CPU. Returns a line per object (`Kind/name applied`); panics with the
    /// API server's message when an object is refused.
    ///
    /// Callable from any test, async or not: the requests run on a thread of their own.
    pub fn apply(&self, manifest: &str) -> String {
        let objects: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(manifest)
            .map(|document| {
                serde_json::Value::deserialize(document).unwrap_or_else(|e| {
                    panic!("a document of the manifest is not YAML: {e}\n{manifest}")
                })
            })
            // A `kind: List` stands for its items, as with kubectl.
            .flat_map(|object| match object["items"].as_array() {
                Some(items) if object["kind"].as_str().is_some_and(|k| k.ends_with("List")) => {
                    items.clone()
                }
                _ => vec![object],
            })
            .filter(|object| !object.is_null())
            .collect();
        on_own_runtime(self.apply_objects(&objects)).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn apply_objects(&self, objects: &[serde_json::Value]) -> Result<String, String> {
        let client = super::client_for(&self.kubeconfig).await;
        let mut applied = String::new();
        for object in objects {
            let field = |path: &str| {
                object
                    .pointer(path)
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(|| format!("an object without {path}"))
            };
            let (api_version, kind, name) = (
                field("/apiVersion")?,
                field("/kind")?,
                field("/metadata/name")?,
            );
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let known = self.kinds.lock().expect("kinds lock").get(&gvk).cloned();
            let (resource, scope) = match known {
                Some(known) => known,
                None => {
                    let (resource, capabilities) =
                        pinned_kind(&client, &gvk).await.map_err(|e| {
                            format!("apply {kind}/{name}: {api_version} {kind} is not served: {e}")
                        })?;
                    let found = (resource, capabilities.scope);
                    self.kinds
                        .lock()
                        .expect("kinds lock")
                        .insert(gvk, found.clone());
                    found
                }
            };
            let api: Api<DynamicObject> = match scope {
                Scope::Namespaced => Api::namespaced_with(
                    client.clone(),
                    field("/metadata/namespace").unwrap_or("default"),
                    &resource,
                ),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            api.patch(
                name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(object),
            )
            .await
            .map_err(|e| format!("apply {kind}/{name}: {e}"))?;
            applied += &format!("{kind}/{name} applied\n");
        }
        Ok(applied)
    }

    /// The current kube-apiserver process id (it changes with [`ControlPlane::restart_apiserver`]).
    pub fn apiserver_pid(&self) -> Option<u32> {
        read_ready(&self.dir).map(|r| r.apiserver_pid)
    }

    /// Installs the project's CRDs (crds/) and waits until they are established.
    pub fn install_crds(&self) {
        let crds = super::repo_root().join("crds");
        self.kubectl(
            &["apply", "--server-side", "-f", super::path_str(&crds)],
            None,
        )
        .expect("install the CRDs in crds/");
        // Polled, not `kubectl wait --for=condition=Established crd --all`: that fails at once
        // ("accessor error: <nil>") on a CRD whose status has no conditions yet (fresh31,
        // under load).
        let established = |list: &serde_json::Value| {
            list["items"].as_array().is_some_and(|crds| {
                !crds.is_empty()
                    && crds.iter().all(|crd| {
                        crd["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = self
                .kubectl(&["get", "crd", "-o", "json"], None)
                .map(|text| serde_json::from_str(&text).unwrap_or_default());
            match list {
                Ok(list) if established(&list) => return,
                _ if Instant::now() > deadline => {
                    panic!("the CRDs in crds/ not established after 60 s: {list:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Restarts kube-apiserver on the same port and etcd data, and waits until it serves again.
    pub fn restart_apiserver(&self) {
        let before = read_ready(&self.dir).map(|r| r.apiserver_pid);
        self.process.signal(libc::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if read_ready(&self.dir).is_some_and(|r| Some(r.apiserver_pid) != before) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "kube-apiserver did not restart; log:\n{}",
            tail(&self.dir.join("controlplane.log"), 40)
        );
    }
}

/// Runs `work` to its end on a thread and runtime of its own, so that sync code, and async
/// tests of either runtime flavour, can call the API server with a kube client.
fn on_own_runtime<T: Send>(work: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the API requests")
                    .block_on(work)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `[-n NS] get RESOURCE [NAME] -o json` and nothing else: (resource, namespace, name).
fn plain_get<'a>(args: &[&'a str]) -> Option<(&'a str, Option<&'a str>, Option<&'a str>)> {
    let mut namespace = None;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "-n" | "--namespace" => namespace = Some(*args.next()?),
            other => rest.push(other),
        }
    }
    let (resource, name) = match rest.as_slice() {
        ["get", resource, "-o", "json"] => (*resource, None),
        ["get", resource, name, "-o", "json"] if !name.starts_with('-') => (*resource, Some(*name)),
        _ => return None,
    };
    // `kind/name`, `kind.group` and lists of kinds are left to kubectl.
    (!resource.contains(['/', '.', ','])).then_some((resource, namespace, name))
}

/// Every resource the API server serves, by each name `kubectl get` accepts for it: core
/// first, then each group in the server's order, its preferred version first (kubectl's
/// priority), the first claim of a name winning.
async fn discover(client: &kube::Client) -> Result<HashMap<String, Served>, String> {
    let mut lists = vec![(
        "/api/v1".to_string(),
        client
            .list_core_api_resources("v1")
            .await
            .map_err(|e| format!("discovery of /api/v1: {e}"))?,
    )];
    let groups = client
        .list_api_groups()
        .await
        .map_err(|e| format!("discovery of /apis: {e}"))?;
    for group in groups.groups {
        // Every version, the preferred one first: a group's kinds need not all be in one
        // (dapr.io serves Component in v1alpha1, Subscription in v2alpha1).
        let preferred = group.preferred_version.map(|v| v.group_version);
        let mut versions: Vec<String> = group
            .versions
            .into_iter()
            .map(|v| v.group_version)
            .collect();
        versions.sort_by_key(|v| Some(v) != preferred.as_ref());
        for group_version in versions {
            let list = client
                .list_api_group_resources(&group_version)
                .await
                .map_err(|e| format!("discovery of {group_version}: {e}"))?;
            lists.push((format!("/apis/{group_version}"), list));
        }
    }
    let mut served = HashMap::new();
    for (prefix, list) in lists {
        for resource in list.resources {
            if resource.name.contains('/') {
                continue;
            }
            let entry = Served {
                prefix: prefix.clone(),
                api_version: list.group_version.clone(),
                plural: resource.name.clone(),
                kind: resource.kind.clone(),
                namespaced: resource.namespaced,
            };
            let names = [
                resource.name,
                resource.singular_name,
                resource.kind.to_lowercase(),
            ]
            .into_iter()
            .chain(resource.short_names.into_iter().flatten());
            for name in names.filter(|n| !n.is_empty()) {
                served.entry(name).or_insert_with(|| entry.clone());
            }
        }
    }
    Ok(served)
}

impl ControlPlane {
    /// Stops the control plane and waits until it has exited: with a node, after the node is torn
    /// down (pods, containerd, mounts, bridge, iptables rule, cgroups).
    pub fn stop(&self) {
        match &self.process {
            Process::Child(child) => {
                if let Ok(mut child) = child.lock()
                    && matches!(child.try_wait(), Ok(None))
                {
                    signal(&child, libc::SIGTERM);
                    let _ = child.wait();
                }
            }
            Process::Prestarted(pid) => {
                self.process.signal(libc::SIGTERM);
                let gone = Instant::now() + Duration::from_secs(60);
                while std::path::Path::new(&format!("/proc/{pid}")).exists()
                    && Instant::now() < gone
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
