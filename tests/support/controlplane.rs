//! The local Kubernetes control plane built by `test-env/setup.sh`: etcd, kube-apiserver and the
//! garbage-collector and namespace controllers, on random ports.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::process::{signal, spawn_tied, tail};

/// A running control plane. Dropping it (or the test binary exiting) stops every process of it.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub version: String,
    child: Mutex<Child>,
}

#[derive(serde::Deserialize)]
struct Ready {
    server: String,
    version: String,
    #[serde(rename = "apiserverPid")]
    apiserver_pid: u32,
}

fn read_ready(dir: &std::path::Path) -> Option<Ready> {
    let text = std::fs::read_to_string(dir.join("ready.json")).ok()?;
    serde_json::from_str(&text).ok()
}

impl ControlPlane {
    /// Starts a control plane in a new directory and waits until it serves.
    pub fn start() -> Self {
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
        if rx.recv_timeout(Duration::from_secs(180)).is_err() {
            let _ = child.kill();
            panic!(
                "the control plane did not become ready in 180 s; its log:\n{}\nkube-apiserver log:\n{}",
                tail(&dir.join("controlplane.log"), 40),
                tail(&dir.join("kube-apiserver.log"), 40)
            );
        }
        let ready = read_ready(&dir).expect("ready.json written before READY");
        eprintln!(
            "control plane {} ready at {} in {:.1?}",
            ready.version,
            ready.server,
            started.elapsed()
        );
        Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            server: ready.server,
            version: ready.version,
            child: Mutex::new(child),
        }
    }

    /// Runs kubectl against this control plane; `Ok(stdout)` or `Err(stderr and stdout)`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
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

    /// `kubectl apply -f -` of a manifest; panics with kubectl's message if it fails.
    pub fn apply(&self, manifest: &str) -> String {
        self.kubectl(&["apply", "-f", "-"], Some(manifest))
            .unwrap_or_else(|e| panic!("{e}"))
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
        self.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=60s",
            ],
            None,
        )
        .expect("CRDs established");
    }

    /// Restarts kube-apiserver on the same port and etcd data, and waits until it serves again.
    pub fn restart_apiserver(&self) {
        let before = read_ready(&self.dir).map(|r| r.apiserver_pid);
        signal(&self.child.lock().expect("child lock"), libc::SIGUSR1);
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

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            signal(&child, libc::SIGTERM);
            let _ = child.wait();
        }
    }
}
