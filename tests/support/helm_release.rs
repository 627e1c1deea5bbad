//! The operator installed with its Helm chart on the one-node cluster ([`super::node_cluster`]),
//! as users run it: a chart folder and an image imported into the node's containerd
//! (`image.pullPolicy=Never`), a nats-server on the node's bridge that pods and tests both reach,
//! and what a user looks at when something does not happen. Used by tests/node.rs (this
//! checkout's chart and image) and tests/upgrade.rs (a past release's, then this checkout's).

use std::time::{Duration, Instant};

use super::nats::NatsServer;
use super::{ControlPlane, node_cluster, random_suffix};

/// This checkout's chart, from the repository's root.
pub const CHART: &str = "charts/jetstream-kv-operator";
/// The chart's name: the suffix of every object a release makes.
pub const CHART_NAME: &str = "jetstream-kv-operator";

/// The nats-server of this process, on the node's bridge gateway: reachable from pods and from
/// the tests.
pub fn nats() -> &'static NatsServer {
    static NATS: std::sync::OnceLock<NatsServer> = std::sync::OnceLock::new();
    NATS.get_or_init(|| {
        let node = node_cluster().node.as_ref().expect("a node");
        NatsServer::start_on(&node.gateway)
    })
}

/// What a release installs: a chart folder and the image its pods run.
#[derive(Clone, Debug)]
pub struct Chart {
    /// The chart's folder (relative to the repository's root, or absolute).
    pub dir: String,
    pub repository: String,
    pub tag: String,
}

impl Chart {
    /// This checkout's chart, with its image (`JKO_OPERATOR_IMAGE`).
    pub fn current() -> Chart {
        Self::with_image(
            CHART,
            "JKO_OPERATOR_IMAGE",
            "eval \"$(test-env/operator-image.sh)\"",
        )
    }

    /// The chart and image of the release tests/upgrade.rs upgrades from (`JKO_RELEASE_CHART`,
    /// `JKO_RELEASE_IMAGE`: test-env/release-image.sh, which test-env/operator-image.sh runs).
    pub fn release() -> Chart {
        let dir = std::env::var("JKO_RELEASE_CHART").unwrap_or_else(|_| {
            panic!("JKO_RELEASE_CHART is not set: eval \"$(test-env/operator-image.sh)\" first")
        });
        Self::with_image(
            &dir,
            "JKO_RELEASE_IMAGE",
            "eval \"$(test-env/operator-image.sh)\"",
        )
    }

    fn with_image(dir: &str, var: &str, hint: &str) -> Chart {
        let image = std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: {hint} first"));
        let (repository, tag) = image.rsplit_once(':').expect("image is name:tag");
        Chart {
            dir: dir.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
        }
    }

    /// `repository:tag`.
    pub fn image(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// helm arguments that run this image from the node's containerd.
    pub fn image_args(&self) -> Vec<String> {
        vec![
            "--set".into(),
            format!("image.repository={}", self.repository),
            // A string whatever it looks like: a tag of digits only is a number to --set.
            "--set-string".into(),
            format!("image.tag={}", self.tag),
            "--set".into(),
            "image.pullPolicy=Never".into(),
        ]
    }
}

/// Runs helm against the node cluster; `Ok(output)` or `Err(output)`.
pub fn helm(args: &[&str]) -> Result<String, String> {
    super::helm(&node_cluster().kubeconfig, args)
}

/// kubectl against the node cluster; panics with its output when it fails.
pub fn kubectl(args: &[&str]) -> String {
    node_cluster()
        .kubectl(args, None)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `check` every 200 ms until it returns `Some`; on timeout panics with `what` and
/// `details()` (what a user would look at).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    details: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                details()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A release of the chart, watching only the namespace of its Components (`apps`); uninstalled
/// and its namespaces deleted on drop.
pub struct HelmRelease {
    /// The release's namespace.
    pub ns: String,
    pub name: String,
    /// The namespace the release watches, where tests put Components.
    pub apps: String,
}

impl HelmRelease {
    /// This checkout's chart and image in a namespace of its own, which it watches (the tests of
    /// a module run side by side), named after the test (the chart's cluster-scoped objects are
    /// named after the release).
    pub fn install(test: &str, values: &[&str]) -> HelmRelease {
        let name = test.replace('_', "-");
        let ns = format!("{name}-{}", random_suffix());
        Self::install_chart(&Chart::current(), &name, &ns, &ns, values)
    }

    /// `helm install` of `chart` as release `name` in namespace `ns` (created here), watching
    /// `apps` (created here when it is another), with a 10 s resync and a NatsServerPolicy that
    /// allows [`nats`]; `values` are more `--set`s.
    pub fn install_chart(
        chart: &Chart,
        name: &str,
        ns: &str,
        apps: &str,
        values: &[&str],
    ) -> HelmRelease {
        let cp = node_cluster();
        kubectl(&["create", "namespace", ns]);
        if apps != ns {
            kubectl(&["create", "namespace", apps]);
        }
        let mut args = vec![
            "install".to_string(),
            name.to_string(),
            chart.dir.clone(),
            "-n".into(),
            ns.to_string(),
        ];
        args.extend(chart.image_args());
        args.extend([
            "--set".into(),
            format!("watchNamespaces={{{apps}}}"),
            "--set".into(),
            "resyncInterval=10s".into(),
            // The chart enforces NatsServerPolicy: allow this process's nats-server, in the
            // chart's one-line form.
            "--set".into(),
            format!(
                "natsServerPolicy.servers={{{}}}",
                nats().url().trim_start_matches("nats://")
            ),
        ]);
        for v in values {
            args.push("--set".into());
            args.push(v.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let release = HelmRelease {
            ns: ns.to_string(),
            name: name.to_string(),
            apps: apps.to_string(),
        };
        if let Err(e) = helm(&args) {
            panic!("{e}\n{}", release.describe(cp));
        }
        release
    }

    /// The Deployment's name (the chart's full name).
    pub fn deployment(&self) -> String {
        if self.name.contains(CHART_NAME) {
            self.name.clone()
        } else {
            format!("{}-{CHART_NAME}", self.name)
        }
    }

    /// Waits until the Deployment is Available and `replicas` pods of the current template are
    /// Ready; returns their names.
    pub fn wait_available(&self, replicas: usize) -> Vec<String> {
        let cp = node_cluster();
        wait_for(
            Duration::from_secs(120),
            &format!(
                "deployment/{} available with {replicas} ready pods",
                self.deployment()
            ),
            || {
                let d: serde_json::Value = serde_json::from_str(&kubectl(&[
                    "-n",
                    &self.ns,
                    "get",
                    "deployment",
                    &self.deployment(),
                    "-o",
                    "json",
                ]))
                .ok()?;
                let status = &d["status"];
                let available = status["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Available" && c["status"] == "True");
                let generation = d["metadata"]["generation"].as_i64()?;
                let done = available
                    && status["observedGeneration"].as_i64() == Some(generation)
                    && status["updatedReplicas"].as_u64() == Some(replicas as u64)
                    && status["readyReplicas"].as_u64() == Some(replicas as u64)
                    && status["replicas"].as_u64() == Some(replicas as u64);
                if !done {
                    return None;
                }
                let pods = self.ready_pods();
                (pods.len() == replicas).then_some(pods)
            },
            || self.describe(cp),
        )
    }

    /// The names of the release's pods that are Ready (and not terminating).
    pub fn ready_pods(&self) -> Vec<String> {
        self.pods(true)
    }

    /// The names of the release's pods that are not terminating, Ready or not.
    pub fn live_pods(&self) -> Vec<String> {
        self.pods(false)
    }

    /// The names of the release's pods that are not terminating (and Ready, with `ready`).
    fn pods(&self, ready: bool) -> Vec<String> {
        let pods: serde_json::Value = serde_json::from_str(&kubectl(&[
            "-n",
            &self.ns,
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/instance={}", self.name),
            "-o",
            "json",
        ]))
        .expect("pod list");
        let is_ready = |p: &serde_json::Value| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        };
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| !ready || is_ready(p))
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    }

    /// Who holds the release's leader Lease.
    pub fn lease_holder(&self) -> Option<String> {
        let lease: serde_json::Value = serde_json::from_str(
            &node_cluster()
                .kubectl(
                    &[
                        "-n",
                        &self.ns,
                        "get",
                        "lease",
                        &self.deployment(),
                        "-o",
                        "json",
                    ],
                    None,
                )
                .ok()?,
        )
        .ok()?;
        lease["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
    }

    /// The release's objects, pods, events and logs, the watched namespace's Components and
    /// their resources, and the kubelet's log: what a user would look at.
    pub fn describe(&self, cp: &ControlPlane) -> String {
        let get = |args: &[&str]| cp.kubectl(args, None).unwrap_or_else(|e| e);
        let mut logs = String::new();
        for pod in get(&["-n", &self.ns, "get", "pods", "-o", "name"]).lines() {
            logs.push_str(&format!(
                "--- logs of {pod}:\n{}\n",
                get(&["-n", &self.ns, "logs", pod, "--tail=40"])
            ));
        }
        let mut namespaces = vec![self.ns.as_str()];
        if self.apps != self.ns {
            namespaces.push(&self.apps);
        }
        let mut objects = String::new();
        let mut events = String::new();
        for ns in namespaces {
            objects.push_str(&get(&[
                "-n",
                ns,
                "get",
                "all,lease,kvb,jss,components",
                "-o",
                "wide",
            ]));
            events.push_str(&get(&[
                "-n",
                ns,
                "get",
                "events",
                "--sort-by=.metadata.creationTimestamp",
            ]));
        }
        format!(
            "--- objects:\n{objects}\n--- pods:\n{}\n--- events:\n{events}\n{logs}--- kubelet log:\n{}",
            get(&["-n", &self.ns, "get", "pods", "-o", "yaml"]),
            super::process::tail(&cp.dir.join("node").join("kubelet.log"), 30)
        )
    }

    /// Applies a state.jetstream Component for `bucket` on [`nats`] in the watched namespace and
    /// waits until its KeyValueBucket is Ready.
    pub fn component_ready(&self, name: &str, bucket: &str) {
        node_cluster().apply(&super::component_yaml(
            &self.apps,
            name,
            &nats().url(),
            bucket,
            "",
        ));
        self.wait_ready("kvb", name);
    }

    /// `kubectl wait --for=create`, then `--for=condition=Ready`, of `kind/name` in the watched
    /// namespace (a minute each); panics with [`HelmRelease::describe`].
    pub fn wait_ready(&self, kind: &str, name: &str) {
        let cp = node_cluster();
        let object = format!("{kind}/{name}");
        let ok = cp
            .kubectl(
                &[
                    "-n",
                    &self.apps,
                    "wait",
                    "--for=create",
                    &object,
                    "--timeout=60s",
                ],
                None,
            )
            .and_then(|_| {
                cp.kubectl(
                    &[
                        "-n",
                        &self.apps,
                        "wait",
                        "--for=condition=Ready",
                        &object,
                        "--timeout=60s",
                    ],
                    None,
                )
            });
        if let Err(e) = ok {
            panic!("{e}\n{}", self.describe(cp));
        }
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            &self.name,
            "-n",
            &self.ns,
            "--wait",
            "--timeout=60s",
        ]);
        for ns in [&self.ns, &self.apps] {
            let _ = node_cluster().kubectl(&["delete", "namespace", ns, "--wait=false"], None);
        }
    }
}
