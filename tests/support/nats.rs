//! A real `nats-server` with JetStream for integration tests: one per test, on its own free
//! ports and its own store directory, so tests run in parallel.
//!
//! The binary comes from `JKO_NATS_SERVER_BIN`, else `nats-server` on `PATH`
//! (`eval "$(test-env/setup.sh)"` sets both up).
//!
//! Setup and the monitoring calls are blocking (std I/O): they are quick, talk to another process,
//! and keep this module free of async plumbing. Calling them from a `#[tokio::test]` is fine.
//!
//! ```ignore
//! let server = NatsServer::start();
//! let client = async_nats::connect(server.url()).await?;
//!
//! let (server, accounts) = NatsServer::start_operator_mode();
//! let (jwt, seed) = accounts.new_user("orders", None);
//! let client = user_connect_options(&jwt, &seed).connect(server.url()).await?;
//! ```

// Included by several test binaries, each using a part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jetstream_kv_operator::credentials::jwt;

use super::process::{free_port, spawn_tied};
use nkeys::KeyPair;

/// The environment variable naming the nats-server binary.
pub const NATS_SERVER_BIN_ENV: &str = "JKO_NATS_SERVER_BIN";

/// How long a start may take before the test fails (JetStream recovers its store on restart).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running (or stopped) nats-server, killed on drop.
pub struct NatsServer {
    /// Holds the config, the logs and the JetStream store; removed on drop.
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The address clients connect to: 127.0.0.1, or the node's bridge gateway for pods.
    host: String,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a JetStream server without authentication on free 127.0.0.1 ports.
    pub fn start() -> NatsServer {
        Self::start_with("")
    }

    /// Starts a JetStream server without authentication that listens on `host` (a free port):
    /// the node's bridge gateway address, where pods and the host both reach it.
    pub fn start_on(host: &str) -> NatsServer {
        Self::start_with_host(host, "")
    }

    /// [`NatsServer::start_operator_mode`], listening on `host`.
    pub fn start_operator_mode_on(host: &str) -> (NatsServer, NatsAccounts) {
        let accounts = NatsAccounts::new();
        let server = Self::start_with_host(host, &accounts.server_config());
        (server, accounts)
    }

    /// Starts a JetStream server in operator mode (decentralized JWT auth) with a system account,
    /// an application account with JetStream, and an account without JetStream.
    pub fn start_operator_mode() -> (NatsServer, NatsAccounts) {
        let accounts = NatsAccounts::new();
        let server = Self::start_with(&accounts.server_config());
        (server, accounts)
    }

    /// Starts a JetStream server that accepts only `user` with `password` (no accounts).
    pub fn start_with_password(user: &str, password: &str) -> NatsServer {
        Self::start_with(&format!(
            "authorization {{\n  user: {user:?}\n  password: {password:?}\n}}\n"
        ))
    }

    /// Starts a JetStream server that requires TLS of its clients (`tls {}`: the server's `INFO`
    /// says `tls_required`), with the certificate and key PEM files given.
    pub fn start_with_tls(cert_file: &Path, key_file: &Path) -> NatsServer {
        Self::start_with(&format!(
            "tls {{\n  cert_file: {cert_file:?}\n  key_file: {key_file:?}\n}}\n"
        ))
    }

    /// Starts a JetStream server on free 127.0.0.1 ports with `extra` appended to its config
    /// (accounts, a resolver): for tests that mint their own keys.
    pub fn start_with_config(extra: &str) -> NatsServer {
        Self::start_with(extra)
    }

    /// Writes a config ending with `extra` and starts the server, retrying on other ports if one
    /// was taken between choosing it and the server binding it.
    fn start_with(extra: &str) -> NatsServer {
        Self::start_with_host("127.0.0.1", extra)
    }

    fn start_with_host(host: &str, extra: &str) -> NatsServer {
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("jko-nats-")
                .tempdir()
                .unwrap_or_else(|e| panic!("cannot create a temp dir for nats-server: {e}"));
            let (port, monitor_port) = (free_port(), free_port());
            let config = dir.path().join("nats-server.conf");
            let text = format!(
                "server_name: \"jko-test-{port}\"\n\
                 listen: \"{host}:{port}\"\n\
                 http: \"127.0.0.1:{monitor_port}\"\n\
                 log_file: {log:?}\n\
                 jetstream {{\n  store_dir: {store:?}\n}}\n\
                 {extra}",
                log = dir.path().join("nats-server.log"),
                store = dir.path().join("jetstream"),
            );
            fs::write(&config, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
            let mut server = NatsServer {
                dir,
                config,
                host: host.to_string(),
                port,
                monitor_port,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(failure) if failure.contains("address already in use") => {
                    last_failure = failure
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("nats-server could not bind free ports in 5 attempts:\n{last_failure}");
    }

    /// `nats://<host>:<port>`: `nats://127.0.0.1:<port>` unless started with a host.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<monitor port>`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The server's directory: config, `nats-server.log`, and the JetStream store.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server (an outage), keeping its port and store for [`NatsServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the server again after [`NatsServer::stop`]: same port, config and store, so streams
    /// written before survive (file storage).
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: the server is running; stop() it first"
        );
        if let Err(failure) = self.spawn_and_wait() {
            panic!("{failure}");
        }
    }

    /// `/connz?auth=1`: connections with their authorized user and account.
    pub fn connz(&self) -> serde_json::Value {
        self.monitor("/connz?auth=1")
    }

    /// `/jsz?streams=1&config=1`: JetStream usage with stream details. In operator mode add
    /// `&accounts=1` through [`NatsServer::monitor`] to see streams per account.
    pub fn jsz(&self) -> serde_json::Value {
        self.monitor("/jsz?streams=1&config=1")
    }

    /// JetStream API requests the server has served (`/jsz` `api.total`): counted by the server,
    /// whatever the client reports.
    pub fn api_requests(&self) -> u64 {
        let jsz = self.monitor("/jsz");
        jsz["api"]["total"]
            .as_u64()
            .unwrap_or_else(|| panic!("no api.total in /jsz: {jsz}"))
    }

    /// `/varz`: server information (version, config).
    pub fn varz(&self) -> serde_json::Value {
        self.monitor("/varz")
    }

    /// GETs a monitoring endpoint (`path` with query) and parses its JSON; panics on failure.
    pub fn monitor(&self, path: &str) -> serde_json::Value {
        let (status, body) = http_get(self.monitor_port, path)
            .unwrap_or_else(|e| panic!("GET {}{path}: {e}", self.monitor_url()));
        assert_eq!(
            status,
            200,
            "GET {}{path}: status {status}: {body}",
            self.monitor_url()
        );
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {}{path}: not JSON ({e}): {body}", self.monitor_url()))
    }

    /// The last `lines` lines of the server's log (and of its stderr, where config errors go).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in ["nats-server.log", "stderr.log"] {
            let text = fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            if !all.is_empty() {
                out.push_str(&format!("--- {name} (last {lines} lines) ---\n"));
                out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
                out.push('\n');
            }
        }
        out
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let stderr = fs::File::create(self.dir.path().join("stderr.log"))
            .map_err(|e| format!("cannot create the nats-server stderr log: {e}"))?;
        let mut command = Command::new(nats_server_bin());
        command
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        self.child = Some(
            spawn_tied(command, libc::SIGKILL)
                .map_err(|e| format!("cannot run {}: {e}", nats_server_bin().display()))?,
        );

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "nats-server exited during start ({status}); config {}:\n{}\n{}",
                    self.config.display(),
                    fs::read_to_string(&self.config).unwrap_or_default(),
                    self.log_tail(40)
                ));
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "nats-server not healthy after {START_TIMEOUT:?} on {}:\n{}",
                    self.url(),
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl NatsServer {
    /// Healthy, and really this server: a port picked as free may have gone to another test's
    /// server meanwhile, which would answer on "our" monitor port while ours fails to bind.
    fn is_ready(&self) -> bool {
        // /healthz answers 200 once JetStream is ready.
        if !matches!(http_get(self.monitor_port, "/healthz"), Ok((200, _))) {
            return false;
        }
        let ours = http_get(self.monitor_port, "/varz")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .is_some_and(|varz| varz["port"] == self.port);
        // On the address it listens on (127.0.0.1, or the node's bridge gateway).
        let accepts = self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| {
            TcpStream::connect_timeout(&SocketAddr::from((ip, self.port)), Duration::from_secs(1))
                .is_ok()
        });
        ours && accepts
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The keys and JWTs of a server in operator mode.
pub struct NatsAccounts {
    /// The operator that signs the accounts.
    pub operator: KeyPair,
    /// The system account (`system_account`).
    pub system_account: KeyPair,
    /// The application account, with JetStream enabled (unlimited).
    pub account: KeyPair,
    /// The application account's JWT, as preloaded in the server.
    pub account_jwt: String,
    /// An account the server knows, with JetStream disabled.
    pub account_without_jetstream: KeyPair,
    /// An account with JetStream limited to one stream.
    pub account_with_one_stream: KeyPair,
    account_with_one_stream_jwt: String,
    operator_jwt: String,
    system_account_jwt: String,
    account_without_jetstream_jwt: String,
}

impl NatsAccounts {
    fn new() -> Self {
        let operator = KeyPair::new_operator();
        let system_account = KeyPair::new_account();
        let account = KeyPair::new_account();
        let account_without_jetstream = KeyPair::new_account();
        let account_with_one_stream = KeyPair::new_account();
        let mint = |r: Result<String, jwt::JwtError>| r.unwrap_or_else(|e| panic!("minting: {e}"));
        NatsAccounts {
            operator_jwt: mint(jwt::operator_jwt(&operator, "jko-test-operator")),
            system_account_jwt: mint(jwt::account_jwt(
                &operator,
                &system_account.public_key(),
                "SYS",
                false,
            )),
            account_jwt: mint(jwt::account_jwt(
                &operator,
                &account.public_key(),
                "APP",
                true,
            )),
            account_without_jetstream_jwt: mint(jwt::account_jwt(
                &operator,
                &account_without_jetstream.public_key(),
                "NOJS",
                false,
            )),
            account_with_one_stream_jwt: one_stream_account_jwt(
                &operator,
                &account_with_one_stream.public_key(),
            ),
            operator,
            system_account,
            account,
            account_without_jetstream,
            account_with_one_stream,
        }
    }

    /// The application account's public key (`A...`).
    pub fn account_public_key(&self) -> String {
        self.account.public_key()
    }

    /// A new user of the application account: `(jwt, seed)`, expiring at `expires` (unix secs).
    pub fn new_user(&self, name: &str, expires: Option<i64>) -> (String, String) {
        mint_user(&self.account, name, expires)
    }

    /// A new user of the account without JetStream: `(jwt, seed)`.
    pub fn new_user_without_jetstream(&self, name: &str) -> (String, String) {
        mint_user(&self.account_without_jetstream, name, None)
    }

    /// A new user of the account limited to one JetStream stream: `(jwt, seed)`.
    pub fn new_user_with_one_stream(&self, name: &str) -> (String, String) {
        mint_user(&self.account_with_one_stream, name, None)
    }

    /// A well-formed user signed by an account the server does not know: `(jwt, seed)`.
    pub fn user_of_unknown_account(&self, name: &str) -> (String, String) {
        mint_user(&KeyPair::new_account(), name, None)
    }

    fn server_config(&self) -> String {
        format!(
            "operator: {op:?}\n\
             system_account: {sys:?}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {sys_jwt:?}\n  {app}: {app_jwt:?}\n  {nojs}: {nojs_jwt:?}\n  {one}: {one_jwt:?}\n}}\n",
            op = self.operator_jwt,
            sys = self.system_account.public_key(),
            sys_jwt = self.system_account_jwt,
            app = self.account.public_key(),
            app_jwt = self.account_jwt,
            nojs = self.account_without_jetstream.public_key(),
            nojs_jwt = self.account_without_jetstream_jwt,
            one = self.account_with_one_stream.public_key(),
            one_jwt = self.account_with_one_stream_jwt,
        )
    }
}

/// An account JWT like [`jwt::account_jwt`] with JetStream, but at most one stream.
fn one_stream_account_jwt(operator: &KeyPair, account_pub: &str) -> String {
    let token = jwt::account_jwt(operator, account_pub, "ONESTREAM", true)
        .unwrap_or_else(|e| panic!("minting: {e}"));
    let mut claims = jwt::decode(&token)
        .unwrap_or_else(|e| panic!("decoding a minted JWT: {e}"))
        .claims;
    claims.nats["limits"]["streams"] = serde_json::Value::from(1);
    jwt::encode(&claims, operator).unwrap_or_else(|e| panic!("minting: {e}"))
}

fn mint_user(account: &KeyPair, name: &str, expires: Option<i64>) -> (String, String) {
    let user = KeyPair::new_user();
    let token = jwt::user_jwt(account, &user.public_key(), name, expires)
        .unwrap_or_else(|e| panic!("minting a user JWT: {e}"));
    let seed = user
        .seed()
        .unwrap_or_else(|e| panic!("a new key pair has a seed: {e}"));
    (token, seed)
}

/// Connect options that authenticate with a user JWT and sign the server nonce with its seed.
pub fn user_connect_options(jwt: &str, seed: &str) -> async_nats::ConnectOptions {
    let key =
        std::sync::Arc::new(KeyPair::from_seed(seed).unwrap_or_else(|e| panic!("not a seed: {e}")));
    async_nats::ConnectOptions::with_jwt(jwt.to_owned(), move |nonce| {
        let key = key.clone();
        async move { key.sign(&nonce).map_err(async_nats::AuthError::new) }
    })
}

/// The nats-server binary: `$JKO_NATS_SERVER_BIN`, else `nats-server` on `PATH`.
pub fn nats_server_bin() -> PathBuf {
    const HINT: &str = "run `eval \"$(test-env/setup.sh)\"` from the repository root first";
    if let Some(bin) = std::env::var_os(NATS_SERVER_BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            is_executable(&bin),
            "{NATS_SERVER_BIN_ENV}={} is not an executable file; {HINT}",
            bin.display()
        );
        return bin;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!("no nats-server: {NATS_SERVER_BIN_ENV} is unset and none is on PATH; {HINT}")
        })
}

pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 (the server closes the connection after the response, so
/// reading to the end is the whole response): `(status, body)`.
pub(super) fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(5);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of HTTP headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    Ok((status, body.to_owned()))
}
