//! The command line: `run` the controller, print the `crd`, `check` manifests in CI.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::runtime;
use crate::runtime::leader::{Election, LeaseConfig};

/// Provisions the NATS JetStream KV buckets of Dapr state.jetstream Components.
#[derive(Parser, Debug)]
#[command(name = "jetstream-kv-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Print a CustomResourceDefinition of the operator as YAML: the KeyValueBucket one (the
    /// default), `crd jetstreamstream` or `crd natsserverpolicy` (the cluster admin's policy).
    Crd {
        /// Which CRD: `keyvaluebucket` (the default), `jetstreamstream` or `natsserverpolicy`.
        #[arg(value_enum, default_value_t = CrdKind::Keyvaluebucket)]
        kind: CrdKind,
    },
    /// Check Dapr state.jetstream and pubsub.jetstream Components in YAML manifests as the operator would, offline.
    ///
    /// Reads multi-document YAML from files, directories (every *.yaml and *.yml under them) or
    /// stdin (`-`), e.g. `kustomize build . | jetstream-kv-operator check -`, and reports every
    /// problem the operator would report, with the operator's reasons. Other kinds pass through.
    /// Exit status 0 when there is no problem, 1 otherwise.
    Check(CheckArgs),
    /// Provision the buckets and streams of Dapr Component files, once, for self-hosted Dapr.
    ///
    /// Reads Components (and the Subscriptions and local secret stores beside them) from files,
    /// directories or stdin (`-`), as daprd reads its resources folder, and runs the operator's
    /// pipeline once on each state.jetstream and pubsub.jetstream Component: validation, the
    /// create-or-verify plan, NATS. `secretKeyRef`s are read from the secretstores.local.file or
    /// secretstores.local.env Component that `auth.secretStore` names. Prints what was done per
    /// Component. Exit status 0 when every Component is ready, 1 otherwise.
    Apply(ApplyArgs),
}

/// The CRDs `crd` prints.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrdKind {
    /// `keyvaluebuckets.jetstreamkv.io`.
    Keyvaluebucket,
    /// `jetstreamstreams.jetstreamkv.io`.
    Jetstreamstream,
    /// `natsserverpolicies.jetstreamkv.io`, the cluster admin's policy.
    Natsserverpolicy,
}

/// Options of `check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Files, directories, or `-` for stdin.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    pub paths: Vec<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: crate::check::OutputFormat,
}

/// Options of `apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Files, directories, or `-` for stdin.
    #[arg(required = true, value_name = "FILE|DIR|-")]
    pub paths: Vec<std::path::PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: crate::check::OutputFormat,
    /// Print the plans and send nothing that changes a bucket or stream; exit status 0 when
    /// every Component is ready or would be made ready.
    #[arg(long)]
    pub dry_run: bool,
    /// The namespace of Components and Subscriptions whose files have none: daprd's own
    /// (`NAMESPACE`, `default` when unset). Owner marks and daprd's `{namespace}` topic prefix
    /// use it.
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Timeout of a NATS connect.
    #[arg(long, env = "NATS_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_connect_timeout: Duration,
    /// Timeout of each NATS request.
    #[arg(long, env = "NATS_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_request_timeout: Duration,
    /// Log filter of what goes to stderr (why a connect failed is logged at warn).
    #[arg(long, env = "LOG_LEVEL", default_value = "warn")]
    pub log_level: String,
}

/// Whether the admin's NatsServerPolicies are enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServerPolicy {
    /// Only servers a NatsServerPolicy allows (none without a policy).
    Enforce,
    /// Any server.
    Off,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Options of `run`; every one can also be set from the environment.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Namespaces to watch, comma-separated; empty watches all namespaces.
    #[arg(
        long,
        env = "WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,
    /// Period of the drift check of Ready buckets (jittered by 10%), e.g. 5m, 90s, 1h30m.
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Cap of the exponential back-off after transient errors.
    #[arg(long, env = "MAX_BACKOFF", default_value = "2m", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// Timeout of a NATS connect.
    #[arg(long, env = "NATS_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_connect_timeout: Duration,
    /// Timeout of each NATS request.
    #[arg(long, env = "NATS_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub nats_request_timeout: Duration,
    /// Reconciles run at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Reconciles of one namespace at once (its fair share of --concurrency); 0: half of
    /// --concurrency.
    #[arg(long, env = "NAMESPACE_CONCURRENCY", default_value_t = 0)]
    pub namespace_concurrency: u16,
    /// Which NATS servers Components may use: `enforce` (only those a NatsServerPolicy allows;
    /// none without a policy) or `off` (any). The chart sets `enforce`.
    #[arg(long, env = "SERVER_POLICY", value_enum, default_value = "off")]
    pub server_policy: ServerPolicy,
    /// `enforce`: create, update and delete buckets and streams as planned. `audit`: never send
    /// a request that changes a stream nor write to a Component; each KeyValueBucket and
    /// JetStreamStream shows in status.plan what enforce would do.
    #[arg(long, env = "MODE", value_enum, default_value = "enforce")]
    pub mode: crate::reconcile::audit::Mode,
    /// How often the installed CRDs are compared with the ones this binary needs (a kind whose
    /// CRD lacks a field is not acted on until its CRD is applied).
    #[arg(long, env = "SCHEMA_CHECK_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub schema_check_interval: Duration,
    /// Apply this binary's CRDs (KeyValueBucket, JetStreamStream, NatsServerPolicy) by
    /// server-side apply at start (needs patch on them; they must exist). Off: apply them before
    /// upgrading (docs/upgrade.md).
    #[arg(long, env = "APPLY_CRDS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub apply_crds: bool,
    /// Watch Secret metadata (needs list and watch on Secrets), so a rotated Secret is seen at
    /// once. False: Secrets are only read by name (get), and a rotation is seen at the next
    /// resync.
    #[arg(long, env = "WATCH_SECRETS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_secrets: bool,
    /// Watch Dapr's declarative Subscriptions (subscriptions.dapr.io; needs list and watch), so
    /// that a new topic reaches the stream of its pubsub.jetstream Component at once. False
    /// (e.g. without Dapr's Subscription CRD): they are read when a Component reconciles, and a
    /// new one is seen at the next resync.
    #[arg(long, env = "WATCH_SUBSCRIPTIONS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_subscriptions: bool,
    /// Distinct NATS connections (server lists and credentials) the Components of one
    /// namespace may use; past it a Component gets NatsConnectionLimit. 0: no limit.
    #[arg(long, env = "MAX_NATS_CONNECTIONS_PER_NAMESPACE", default_value_t = crate::nats::pool::DEFAULT_NAMESPACE_CONNECTIONS)]
    pub max_nats_connections_per_namespace: usize,
    /// The container's memory limit (bytes, or a quantity such as `256Mi`), exposed as
    /// `jetstream_kv_memory_limit_bytes` for the memory alert; the chart passes the pod's
    /// `limits.memory`. Unset: not exposed.
    #[arg(long, env = "MEMORY_LIMIT", value_parser = memory_limit)]
    pub memory_limit: Option<u64>,
    /// Expose how full each Component's bucket or streams are (`jetstream_kv_stream_bytes` and
    /// `jetstream_kv_stream_max_bytes`, one series per stream), for at most this many
    /// Components, for the near-max-bytes alert and the dashboard's usage panel. 0: off.
    #[arg(long, env = "USAGE_METRICS_MAX_COMPONENTS", default_value_t = 0)]
    pub usage_metrics_max_components: usize,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing syntax), e.g. info or info,jetstream_kv_operator=debug.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// The operator's own namespace (the chart sets it): the Secrets that NatsServerPolicies
    /// name as provisioning credentials are read there, and nowhere else.
    #[arg(long, env = "OPERATOR_NAMESPACE", default_value = "default")]
    pub operator_namespace: String,
    /// Name of this instance (Events, leader election); the pod name in a cluster. Defaults to
    /// the host name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Elect a leader with a Lease: only the holder reconciles. Needed with several replicas.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "jetstream-kv-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace in a cluster).
    #[arg(long, env = "LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long a leader keeps the Lease without renewing it; a standby takes over after that. A
    /// leader that has not read its Lease renewed by then (the API server out of reach), or reads
    /// another holder, stops reconciling and exits, before a standby can take over.
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Heal: when a KeyValueBucket or JetStreamStream turns Ready after not being Ready, roll
    /// out (as `kubectl rollout restart` does) the Deployments and StatefulSets of its namespace
    /// that load the Component (`dapr.io/enabled`, and in its scopes) and whose pods are
    /// crash-looping or not Ready. Needs get, list and patch on deployments and statefulsets and
    /// list on pods (the chart's heal.enabled). See docs/heal.md.
    #[arg(long, env = "HEAL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub heal: bool,
    /// Heal: workload restarts per minute, over every Component; past it the kubelet's back-off
    /// restarts them (a Warning Event names them).
    #[arg(long, env = "HEAL_MAX_PER_MINUTE", default_value_t = 30)]
    pub heal_max_per_minute: u32,
    /// Heal: a workload the operator restarted is not restarted again before this has passed
    /// (another Component's transition, a Component flapping).
    #[arg(long, env = "HEAL_COOLDOWN", default_value = "5m", value_parser = parse_duration)]
    pub heal_cooldown: Duration,
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// Options of the validating admission webhook (off unless `--webhook-addr` is set). It runs in
/// every replica, leader or not.
#[derive(Args, Debug, Default)]
pub struct WebhookArgs {
    /// Address of the HTTPS admission webhook (POST /validate), e.g. 0.0.0.0:9443. Unset: no
    /// webhook.
    #[arg(long, env = "WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// Directory holding tls.crt and tls.key (a mounted kubernetes.io/tls Secret, e.g.
    /// cert-manager's); re-read every minute, so renewals need no restart.
    #[arg(long, env = "WEBHOOK_CERT_DIR", conflicts_with = "webhook_self_signed")]
    pub webhook_cert_dir: Option<std::path::PathBuf>,
    /// Generate a CA and a serving certificate in memory at start-up instead.
    #[arg(long, env = "WEBHOOK_SELF_SIGNED", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub webhook_self_signed: bool,
    /// Self-signed mode: the webhook's Service; the certificate names
    /// <service>.<namespace>.svc (and its shorter and longer forms).
    #[arg(long, env = "WEBHOOK_SERVICE_NAME")]
    pub webhook_service_name: Option<String>,
    /// Self-signed mode: the Service's namespace (the operator's own).
    #[arg(long, env = "WEBHOOK_SERVICE_NAMESPACE", default_value = "default")]
    pub webhook_service_namespace: String,
    /// Self-signed mode: more names (DNS names or IP addresses) the certificate is valid for,
    /// comma-separated, e.g. 127.0.0.1 for a webhook reached by URL.
    #[arg(long = "webhook-host", env = "WEBHOOK_HOSTS", value_delimiter = ',')]
    pub webhook_hosts: Vec<String>,
    /// Self-signed mode: the ValidatingWebhookConfiguration whose caBundle gets the generated
    /// CA (needs get and patch on it). Unset: the caBundle is left alone.
    #[arg(long, env = "WEBHOOK_CONFIG_NAME")]
    pub webhook_config_name: Option<String>,
    /// Self-signed mode: also write the generated CA certificate (PEM) to this file.
    #[arg(long, env = "WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<std::path::PathBuf>,
}

/// Parses a duration flag: a Go duration above zero (`90s`, `1.5m`, `1h30m`, `250ms`); see
/// [`crate::duration::parse_flag`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse_flag(s)
}

fn init_logging(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("LOG_LEVEL {filter:?} is not a valid filter: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// Runs the command line; the process exit code is 0 on success.
pub async fn main() -> Result<(), String> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { kind } => {
            let crd = match kind {
                CrdKind::Keyvaluebucket => crate::schema::Crd::KeyValueBucket.needed(),
                CrdKind::Jetstreamstream => crate::schema::Crd::JetStreamStream.needed(),
                CrdKind::Natsserverpolicy => crate::schema::Crd::NatsServerPolicy.needed(),
            };
            let yaml =
                serde_yaml::to_string(&crd).map_err(|e| format!("cannot render the CRD: {e}"))?;
            // A document of its own wherever it is concatenated: `helm show crds` prints the
            // chart's crds/ files one after the other, and without the separator kubectl read
            // the three as one document and applied only the last.
            print!("---\n{yaml}");
            Ok(())
        }
        Command::Run(args) => run(*args).await,
        Command::Check(args) => crate::check::run(&args.paths, args.output),
        Command::Apply(args) => {
            init_logging(LogFormat::Text, &args.log_level)?;
            crate::apply::run(crate::apply::Options {
                paths: args.paths,
                output: args.output,
                dry_run: args.dry_run,
                namespace: args.namespace,
                connect_timeout: args.nats_connect_timeout,
                request_timeout: args.nats_request_timeout,
            })
            .await
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    init_logging(args.log_format, &args.log_level)?;
    raise_descriptor_limit();
    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes API (kubeconfig or in-cluster config): {e}")
    })?;
    let mut metrics = Metrics::new();
    if let Some(bytes) = args.memory_limit {
        metrics.set_memory_limit(bytes);
    }
    metrics.enable_usage(args.usage_metrics_max_components);
    let metrics = Arc::new(metrics);
    let health = Arc::new(Health::default());
    let server = http::serve(args.http_addr, health.clone(), metrics.clone())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.http_addr))?;
    tokio::spawn(server);
    start_webhook(&args.webhook, &client, &metrics).await?;
    let identity = args.identity.clone().unwrap_or_else(hostname);
    let config = runtime::Config {
        namespaces: args
            .namespaces
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect(),
        resync: args.resync_interval,
        max_backoff: args.max_backoff,
        connect_timeout: args.nats_connect_timeout,
        request_timeout: args.nats_request_timeout,
        concurrency: args.concurrency,
        namespace_concurrency: match args.namespace_concurrency {
            0 => crate::fair_share::NamespaceShare::default_limit(usize::from(args.concurrency)),
            n => usize::from(n),
        },
        enforce_server_policy: args.server_policy == ServerPolicy::Enforce,
        namespace_connections: args.max_nats_connections_per_namespace,
        watch_secrets: args.watch_secrets,
        watch_subscriptions: args.watch_subscriptions,
        instance: identity.clone(),
        mode: args.mode,
        schema_check_interval: args.schema_check_interval,
        apply_crds: args.apply_crds,
        operator_namespace: args.operator_namespace.clone(),
        heal: args.heal.then_some(crate::heal::Settings {
            max_per_minute: args.heal_max_per_minute,
            cooldown: args.heal_cooldown,
        }),
    };
    tracing::info!(
        namespaces = ?config.namespaces,
        resync = ?config.resync,
        server_policy = ?args.server_policy,
        mode = ?args.mode,
        watch_secrets = config.watch_secrets,
        watch_subscriptions = config.watch_subscriptions,
        identity = %identity,
        leader_election = args.leader_election,
        heal = args.heal,
        "starting jetstream-kv-operator {}",
        env!("CARGO_PKG_VERSION")
    );
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    if !args.leader_election {
        runtime::run(client, config, health, metrics, shutdown).await;
        tracing::info!("stopped");
        return Ok(());
    }

    let lease = LeaseConfig {
        name: args.lease_name,
        namespace: args.lease_namespace,
        identity,
        duration: args.lease_duration,
    };
    let mut election = Election::join(client.clone(), &lease).await.map_err(|e| {
        format!(
            "cannot join the leader election on Lease {}/{}: {e}",
            lease.namespace, lease.name
        )
    })?;
    // A standby is healthy and ready: it serves, and takes over when the leader goes.
    health.set_ready(true);
    tracing::info!(lease = %lease.name, "waiting to become the leader");
    tokio::select! {
        _ = election.acquired() => {}
        _ = shutdown.clone() => {
            election.release(Duration::from_secs(5)).await;
            tracing::info!("stopped");
            return Ok(());
        }
    }
    tracing::info!(lease = %lease.name, "became the leader");
    health.set_ready(false);
    tokio::select! {
        // SIGTERM: in-flight reconciles finish, then the Lease is released.
        _ = runtime::run(client, config, health, metrics, shutdown) => {}
        // Another instance may be writing now: drop every reconcile where it stands (no graceful
        // end: one waiting on the API server could write to NATS later), and exit so that the
        // restart rejoins the election.
        _ = election.lost() => {
            return Err(
                "lost the leader Lease; exiting so that a fresh start rejoins the election".into(),
            );
        }
    }
    election.release(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts the admission webhook when `--webhook-addr` is set: its certificate first, then the
/// server, then (self-signed mode) the caBundle upkeep. A webhook asked for but impossible to
/// serve stops the operator, rather than leaving it silently off.
/// `--memory-limit`: bytes, or a Kubernetes quantity.
fn memory_limit(text: &str) -> Result<u64, String> {
    crate::metrics::parse_memory(text)
        .ok_or_else(|| format!("not a memory quantity: {text:?} (bytes, or e.g. 256Mi)"))
}

async fn start_webhook(
    args: &WebhookArgs,
    client: &kube::Client,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    use crate::webhook;
    let Some(addr) = args.webhook_addr else {
        return Ok(());
    };
    let mut ca_to_inject = None;
    let certificates = match (&args.webhook_cert_dir, args.webhook_self_signed) {
        (Some(dir), _) => {
            let key = webhook::load_cert_dir(dir).map_err(|e| e.to_string())?;
            let certificates = webhook::Certificates::new(Arc::new(key));
            tokio::spawn(certificates.clone().watch_dir(dir.clone()));
            certificates
        }
        (None, true) => {
            let mut names = args
                .webhook_service_name
                .as_deref()
                .map(|service| webhook::service_names(service, &args.webhook_service_namespace))
                .unwrap_or_default();
            names.extend(args.webhook_hosts.iter().filter(|h| !h.is_empty()).cloned());
            if names.is_empty() {
                return Err("--webhook-self-signed needs --webhook-service-name or \
                            --webhook-host: the names the certificate is for"
                    .into());
            }
            let generated = webhook::self_signed(&names).map_err(|e| e.to_string())?;
            if let Some(file) = &args.webhook_ca_file {
                std::fs::write(file, &generated.ca_pem).map_err(|e| {
                    format!("cannot write the webhook CA to {}: {e}", file.display())
                })?;
            }
            if let Some(config) = &args.webhook_config_name {
                ca_to_inject = Some((config.clone(), generated.ca_pem.clone()));
            }
            tracing::info!(?names, "generated the webhook's CA and serving certificate");
            webhook::Certificates::new(generated.serving)
        }
        (None, false) => {
            return Err(
                "--webhook-addr needs a certificate: --webhook-cert-dir DIR (tls.crt, \
                        tls.key) or --webhook-self-signed"
                    .into(),
            );
        }
    };
    let server = webhook::serve(addr, certificates, metrics.clone())
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(server);
    if let Some((config, ca_pem)) = ca_to_inject {
        // The first attempt is awaited, so that a missing configuration or permission shows at
        // start-up; the upkeep after it only logs.
        match webhook::inject_ca_bundle(client.clone(), &config, &ca_pem).await {
            Ok(_) => tracing::info!(configuration = %config, "webhook CA is in the caBundle"),
            Err(e) => tracing::warn!("{e}; retrying every minute"),
        }
        tokio::spawn(webhook::keep_ca_bundle(client.clone(), config, ca_pem));
    }
    Ok(())
}

/// Raises the soft limit of open file descriptors to the hard limit. Containers often start
/// with a soft limit of 1,024, and every NATS connection holds a relay listener per server and
/// two sockets per live link: the hard limit (often 1,048,576) is what the pod may use.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed, which lives here.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if got != 0 {
        tracing::warn!(
            "cannot read the open file limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let soft = limit.rlim_cur;
    if soft >= limit.rlim_max {
        tracing::info!(open_files = soft, "open file limit");
        return;
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::info!(
            from = soft,
            to = limit.rlim_max,
            "raised the open file limit"
        );
    } else {
        tracing::warn!(
            open_files = soft,
            "cannot raise the open file limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| crate::crd::MANAGER.to_string())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        for bad in ["", "0", "5", "m", "5x", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
