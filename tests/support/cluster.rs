//! A three-node JetStream cluster, as production runs NATS: unique server names, routes on
//! loopback, server tags and a `unique_tag`, so R3 streams get one replica per "zone". One per
//! test that needs it (each on its own free ports and store directories), so tests run in
//! parallel and may kill and restart nodes.
//!
//! Node `i` (0, 1, 2) is named `<cluster>-n<i+1>` and tagged `az:<i+1>` (the unique tag: no two
//! replicas of a stream in one zone) and `disk:ssd` (nodes 0 and 1) or `disk:hdd` (node 2).
//!
//! ```ignore
//! let mut cluster = NatsCluster::start();
//! let client = async_nats::connect(cluster.url()).await?; // all three servers
//! cluster.stop(1);          // kill one node (an outage), keeping its store
//! cluster.start_again(1);   // same ports, config and store
//! ```

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nats::{http_get, nats_server_bin};
use super::process::{free_port, spawn_tied};

/// How long a start may take: the nodes elect a meta leader before they report healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The tags of node `i`.
pub fn node_tags(i: usize) -> Vec<String> {
    let disk = if i < 2 { "disk:ssd" } else { "disk:hdd" };
    vec![format!("az:{}", i + 1), disk.to_string()]
}

/// One nats-server of the cluster.
struct Node {
    name: String,
    config: PathBuf,
    dir: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

/// Three nats-servers routed into one JetStream cluster; every node is killed on drop.
pub struct NatsCluster {
    /// Holds each node's config, log and store; removed on drop.
    dir: tempfile::TempDir,
    name: String,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts three nodes on free 127.0.0.1 ports and waits until each is healthy (JetStream up
    /// and in contact with a meta leader). Retries on other ports if one was taken meanwhile.
    pub fn start() -> NatsCluster {
        let mut last_failure = String::new();
        for _attempt in 0..5 {
            let mut cluster = Self::configure();
            for i in 0..3 {
                if let Err(e) = cluster.spawn(i) {
                    panic!("{e}");
                }
            }
            match cluster.wait_healthy(&[0, 1, 2]) {
                Ok(()) => return cluster,
                Err(failure) if failure.contains("address already in use") => {
                    last_failure = failure
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("the NATS cluster could not bind free ports in 5 attempts:\n{last_failure}");
    }

    fn configure() -> NatsCluster {
        let dir = tempfile::Builder::new()
            .prefix("jko-nats-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for the NATS cluster: {e}"));
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let name = format!("jko-{}", ports[0].0);
        let routes = ports
            .iter()
            .map(|(_, _, route)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, monitor_port, route_port))| {
                let node_dir = dir.path().join(format!("n{}", i + 1));
                fs::create_dir_all(&node_dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", node_dir.display()));
                let node_name = format!("{name}-n{}", i + 1);
                let tags = node_tags(i)
                    .iter()
                    .map(|t| format!("{t:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let config = node_dir.join("nats-server.conf");
                let text = format!(
                    "server_name: {node_name:?}\n\
                     listen: \"127.0.0.1:{port}\"\n\
                     http: \"127.0.0.1:{monitor_port}\"\n\
                     log_file: {log:?}\n\
                     server_tags: [{tags}]\n\
                     jetstream {{\n  store_dir: {store:?}\n  unique_tag: \"az:\"\n}}\n\
                     cluster {{\n  name: {name:?}\n  listen: \"127.0.0.1:{route_port}\"\n  routes: [{routes}]\n}}\n",
                    log = node_dir.join("nats-server.log"),
                    store = node_dir.join("jetstream"),
                );
                fs::write(&config, text)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
                Node {
                    name: node_name,
                    config,
                    dir: node_dir,
                    port,
                    monitor_port,
                    child: None,
                }
            })
            .collect();
        NatsCluster { dir, name, nodes }
    }

    /// The cluster's name (`cluster.name` of every node).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every node's URL, comma-separated, as a Dapr `natsURL` lists a cluster.
    pub fn url(&self) -> String {
        (0..3)
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `nats://127.0.0.1:<port>` of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The server name of node `i`.
    pub fn node_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node with server name `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name} in cluster {}", self.name))
    }

    /// Kills node `i` (an outage), keeping its ports and store for [`NatsCluster::start_again`].
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of node `i` while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// Whether node `i` runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts node `i` again after [`NatsCluster::stop`] (same ports, config and store) and waits
    /// until it is healthy, which needs a meta leader: a majority of the nodes running.
    pub fn start_again(&mut self, i: usize) {
        assert!(
            self.nodes[i].child.is_none(),
            "start_again: node {i} is running; stop() it first"
        );
        self.spawn(i).unwrap_or_else(|e| panic!("{e}"));
        if let Err(failure) = self.wait_healthy(&[i]) {
            panic!("{failure}");
        }
    }

    /// GETs a monitoring endpoint of node `i` (`path` with query) and parses its JSON.
    pub fn monitor(&self, i: usize, path: &str) -> serde_json::Value {
        let port = self.nodes[i].monitor_port;
        let (status, body) = http_get(port, path)
            .unwrap_or_else(|e| panic!("GET http://127.0.0.1:{port}{path}: {e}"));
        assert_eq!(status, 200, "GET :{port}{path}: status {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET :{port}{path}: {e}: {body}"))
    }

    /// JetStream API requests node `i` has served (`/jsz` `api.total`).
    pub fn api_requests(&self, i: usize) -> u64 {
        self.monitor(i, "/jsz")["api"]["total"]
            .as_u64()
            .unwrap_or_default()
    }

    /// The last `lines` lines of every node's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            for file in ["nats-server.log", "stderr.log"] {
                let text = fs::read_to_string(node.dir.join(file)).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                if !all.is_empty() {
                    out.push_str(&format!(
                        "--- {} {file} (last {lines} lines) ---\n",
                        node.name
                    ));
                    out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The cluster's directory (each node's config, log and store under `n1`, `n2`, `n3`).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let stderr = fs::File::create(node.dir.join("stderr.log"))
            .map_err(|e| format!("cannot create the nats-server stderr log: {e}"))?;
        let mut command = Command::new(nats_server_bin());
        command
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        node.child = Some(
            spawn_tied(command, libc::SIGKILL)
                .map_err(|e| format!("cannot run {}: {e}", nats_server_bin().display()))?,
        );
        Ok(())
    }

    /// Waits until each of `nodes` is healthy; on failure stops every node and says why.
    fn wait_healthy(&mut self, nodes: &[usize]) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pending: Vec<usize> = nodes.to_vec();
        while !pending.is_empty() {
            for &i in &pending {
                if let Some(Ok(Some(status))) = self.nodes[i].child.as_mut().map(Child::try_wait) {
                    self.nodes[i].child = None;
                    let failure = format!(
                        "nats-server {} exited during start ({status}):\n{}",
                        self.nodes[i].name,
                        self.log_tail(30)
                    );
                    for j in 0..3 {
                        self.stop(j);
                    }
                    return Err(failure);
                }
            }
            pending.retain(|&i| !self.is_ready(i));
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let failure = format!(
                    "NATS cluster nodes {pending:?} not healthy after {START_TIMEOUT:?}:\n{}",
                    self.log_tail(30)
                );
                for j in 0..3 {
                    self.stop(j);
                }
                return Err(failure);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Healthy (JetStream current with a meta leader) and really this node: a port picked as
    /// free may have gone to another test's server meanwhile.
    fn is_ready(&self, i: usize) -> bool {
        let node = &self.nodes[i];
        if !matches!(http_get(node.monitor_port, "/healthz"), Ok((200, _))) {
            return false;
        }
        let ours = http_get(node.monitor_port, "/varz")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .is_some_and(|varz| varz["server_name"] == node.name.as_str());
        ours && TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], node.port)),
            Duration::from_secs(1),
        )
        .is_ok()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}
