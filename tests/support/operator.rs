//! The operator binary run as a separate process, as in a cluster, against the test servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::process::{free_port, signal, spawn_tied, tail};

/// A running operator process; killed on drop.
pub struct Operator {
    pub log: PathBuf,
    pub http_addr: String,
    child: Mutex<Option<Child>>,
}

impl Operator {
    /// Starts the operator with `KUBECONFIG=kubeconfig` and extra `run` arguments. Logs go to a
    /// file (text format, debug level for this crate) that tests read with [`Operator::logs`].
    pub fn start(kubeconfig: &Path, args: &[&str]) -> Self {
        Self::start_with_env(kubeconfig, args, &[])
    }

    /// Like [`Operator::start`], with extra environment variables (as a Deployment sets them).
    pub fn start_with_env(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(kubeconfig, &[], args, env)
    }

    /// Like [`Operator::start_with_env`], run through `wrapper` (a program and its arguments,
    /// which gets the operator binary and its arguments after them and must exec it, so that
    /// [`Operator::pid`] is the operator's).
    pub fn start_wrapped(
        kubeconfig: &Path,
        wrapper: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&dir).expect("operator log directory");
        let log = dir.join(format!(
            "{}-{}.log",
            std::process::id(),
            super::random_suffix()
        ));
        let http_addr = format!("127.0.0.1:{}", free_port());
        let out = std::fs::File::create(&log).expect("operator log file");
        let err = out.try_clone().expect("operator log file");
        // `JKO_OPERATOR_BIN` runs another build of the operator (a release build, or a copy kept
        // safe from other worktrees that share the target directory and overwrite its binary).
        let bin = std::env::var_os("JKO_OPERATOR_BIN")
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_jetstream-kv-operator")));
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("run")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HTTP_ADDR", &http_addr)
            .env("LOG_LEVEL", "info,jetstream_kv_operator=debug")
            .env("LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_tied(cmd, libc::SIGKILL).expect("start the operator");
        Self {
            log,
            http_addr,
            child: Mutex::new(Some(child)),
        }
    }

    /// The process id while it runs, for reading its CPU time and memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .expect("child lock")
            .as_ref()
            .map(Child::id)
    }

    /// The exit status once the process has exited by itself; None while it runs.
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.child.lock().expect("child lock");
        guard.as_mut()?.try_wait().ok().flatten()
    }

    /// Everything the operator has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log, 60)
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took and the exit status.
    pub fn terminate(&self) -> (Duration, Option<std::process::ExitStatus>) {
        let started = std::time::Instant::now();
        let mut guard = self.child.lock().expect("child lock");
        let Some(mut child) = guard.take() else {
            return (Duration::ZERO, None);
        };
        signal(&child, libc::SIGTERM);
        let status = child.wait().ok();
        (started.elapsed(), status)
    }

    /// Kills the process with SIGKILL, as a node failure would.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("child lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// GETs a path of the operator's HTTP endpoint: (status code, body).
    pub fn http_get(&self, path: &str) -> Option<(u16, String)> {
        super::http_request(&self.http_addr, "GET", path, None, Duration::from_secs(5))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
