//! The runtime around the reconciler: the watches of every scope and their predicate
//! ([`watches`]), what their caches keep of each object ([`trim`]), the sweeper of deleted Components ([`sweeper`]), leader election ([`leader`]),
//! and readiness once the caches are listed.

mod connections;
pub mod leader;
mod secret_users;
mod sweeper;
pub mod trim;
mod watches;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, future};
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::crd::MANAGER;
use crate::http::Health;
use crate::metrics::Metrics;
use crate::nats::pool::ConnectionPool;
use crate::reconcile::index::Index;
use crate::reconcile::{error_policy, reconcile};

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Period of the drift check after success (±10% jitter).
    pub resync: Duration,
    /// Cap of the per-object exponential back-off after transient errors.
    pub max_backoff: Duration,
    /// Timeout of a NATS connect.
    pub connect_timeout: Duration,
    /// Timeout of each NATS request.
    pub request_timeout: Duration,
    /// Reconciles run at once.
    pub concurrency: u16,
    /// Reconciles of one namespace at once (its fair share of `concurrency`).
    pub namespace_concurrency: usize,
    /// Only servers a NatsServerPolicy allows may be used.
    pub enforce_server_policy: bool,
    /// Distinct NATS connections one namespace may use (0: no limit).
    pub namespace_connections: usize,
    /// Watch Secret metadata (list/watch) to see rotations at once; false: get only.
    pub watch_secrets: bool,
    /// Watch Dapr's declarative Subscriptions, so a new topic reaches its stream at once.
    pub watch_subscriptions: bool,
    /// Name of this instance in Events.
    pub instance: String,
    /// Enforce, or audit: plans shown, never carried out.
    pub mode: crate::reconcile::audit::Mode,
    /// How often the installed CRDs are compared with the ones the binary needs.
    pub schema_check_interval: Duration,
    /// Apply the binary's own CRDs (server-side apply) before checking them.
    pub apply_crds: bool,
    /// The operator's own namespace: where the Secrets of provisioning identities are.
    pub operator_namespace: String,
    /// Heal (`--heal`): restart the workloads that load a Component when it turns Ready.
    pub heal: Option<crate::heal::Settings>,
}

/// What every scope's controller shares.
#[derive(Clone)]
struct Shared {
    client: Client,
    pool: Arc<ConnectionPool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    index: Arc<Index>,
    policy: Option<crate::policy::Enforcer>,
    share: Arc<crate::fair_share::NamespaceShare>,
    schema: Arc<crate::schema::SchemaGate>,
    heal: Option<Arc<crate::heal::Healer>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: Config,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let policy = config
        .enforce_server_policy
        .then(|| crate::policy::Enforcer::start(&client));
    let pool = Arc::new(
        ConnectionPool::new(
            config.connect_timeout,
            config.request_timeout,
            Some(metrics.clone()),
        )
        .with_namespace_limit(config.namespace_connections)
        .with_policy(policy.clone()),
    );
    // The NATS links are read at each scrape: a link that went down shows at the next one.
    let links = Arc::downgrade(&pool);
    metrics.on_scrape(move |m| {
        if let Some(pool) = links.upgrade() {
            m.set_nats_connections_down(pool.connections_down());
        }
    });
    metrics.set_leader(true);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: Some(config.instance.clone()),
        },
    );
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let shutdown = future::Shared::clone(&futures::FutureExt::shared(Box::pin(shutdown)));
    if config.apply_crds {
        crate::schema::apply_crds(client.clone()).await;
    }
    let schema = Arc::new(crate::schema::SchemaGate::new(config.enforce_server_policy));
    tokio::spawn(crate::schema::keep_checking(
        client.clone(),
        schema.clone(),
        health.clone(),
        recorder.clone(),
        config.schema_check_interval,
    ));
    let shared = Shared {
        client,
        pool: pool.clone(),
        recorder,
        metrics: metrics.clone(),
        index: Arc::default(),
        policy,
        share: Arc::new(crate::fair_share::NamespaceShare::new(
            config.namespace_concurrency,
        )),
        schema,
        heal: config.heal.map(|s| Arc::new(crate::heal::Healer::new(s))),
    };
    let mut controllers = Vec::new();
    let mut triggers = Vec::new();
    let mut scopes_built = Vec::new();
    for scope in scopes {
        let built = watches::build(scope.clone(), &config, shared.clone());
        // Connection events reconcile the Components of a connection at once.
        let (trigger, triggered) = futures::channel::mpsc::unbounded();
        triggers.push((scope, trigger));
        let shutdown = shutdown.clone();
        controllers.push(
            built
                .controller
                .reconcile_on(triggered)
                .graceful_shutdown_on(shutdown)
                .run(reconcile, error_policy, built.context.clone())
                .for_each(|_| future::ready(())),
        );
        scopes_built.push((built.components, built.context));
    }
    let components: Vec<_> = scopes_built.iter().map(|(c, _)| c.clone()).collect();
    let synced: Vec<_> = scopes_built
        .iter()
        .map(|(_, ctx)| ctx.synced.clone())
        .collect();
    let ready = async move {
        for (components, ctx) in scopes_built {
            let _ = components.wait_until_ready().await;
            let _ = ctx.kvbs.wait_until_ready().await;
            let _ = ctx.streams.wait_until_ready().await;
            ctx.synced.store(true, Ordering::Release);
        }
        health.set_ready(true);
        tracing::info!("caches synced; ready");
    };
    let sweeper = sweeper::sweep(
        sweeper::Held {
            pool,
            index: shared.index.clone(),
            metrics,
        },
        components,
        synced,
        config.resync.min(sweeper::SWEEP_INTERVAL),
    );
    let connection_events = connections::run(&shared.pool, triggers);
    tokio::select! {
        _ = future::join(future::join_all(controllers), ready) => {}
        _ = sweeper => {}
        _ = connection_events => {}
    }
    shared.metrics.set_leader(false);
}
