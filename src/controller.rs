//! The reconciler: Dapr `Component` → NATS KV bucket → `KeyValueBucket` status.
//!
//! Each reconcile is a pipeline: **read** (the Component, its Secrets) → **decide** (parse,
//! validate, plan: pure) → **act** (NATS) → **report** (KeyValueBucket spec and status, Component
//! annotations, Events), writing only what changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use serde_json::json;

use crate::crd::{
    BucketStatus, ConditionSpec, KeyValueBucket, KeyValueBucketSpec, KeyValueBucketStatus, MANAGER,
    condition, merge_conditions,
};
use crate::dapr::Component;
use crate::dapr::store::{NatsAuth, StoreConfig};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::nats::bucket::{self, Bucket, Desired, Plan};
use crate::nats::pool::ConnectionPool;
use crate::settings::{BucketSettings, DeletionPolicy};

/// The finalizer that holds a Component with `deletion-policy: delete` until its bucket is
/// deleted.
pub const FINALIZER: &str = "jetstreamkv.io/bucket";

/// Annotations the operator writes on Components, for tools that only see the Component.
pub mod annotation {
    pub const READY: &str = "jetstreamkv.io/ready";
    pub const REASON: &str = "jetstreamkv.io/reason";
    pub const OBSERVED_GENERATION: &str = "jetstreamkv.io/observed-generation";
}

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
    /// Watch Secret metadata (list/watch) to see rotations at once; false: get only.
    pub watch_secrets: bool,
    /// Name of this instance in Events.
    pub instance: String,
}

/// An API write failed; the object is retried with back-off.
#[derive(Debug, thiserror::Error)]
#[error("writing {what} failed: {source}")]
pub struct ReportError {
    what: &'static str,
    #[source]
    source: kube::Error,
}

/// What the operator last wrote for an object, so that a reconcile started before the watch
/// caught up with our own writes neither writes again nor repeats an Event.
#[derive(Clone, Debug)]
struct Written {
    spec: KeyValueBucketSpec,
    generation: Option<i64>,
    status: KeyValueBucketStatus,
}

/// Shared by every reconcile.
pub struct Context {
    client: Client,
    kvbs: Store<KeyValueBucket>,
    components: Store<DeserializeGuard<Component>>,
    pool: Arc<ConnectionPool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    config: Config,
    failures: Mutex<HashMap<String, u32>>,
    written: Arc<Mutex<HashMap<String, Written>>>,
    /// The KeyValueBucket caches of every watched scope, to find other Components that use the
    /// same bucket (set once all scopes are built).
    peers: Arc<std::sync::OnceLock<Vec<Store<KeyValueBucket>>>>,
    /// Both caches have been listed: reconciles wait for it.
    synced: Arc<AtomicBool>,
    /// The admin's NatsServerPolicies, when enforced.
    policy: Option<crate::policy::Enforcer>,
    /// Workers held per namespace.
    share: Arc<crate::fair_share::NamespaceShare>,
}

/// When to look at an object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// All good, or blocked on server state: the periodic drift check.
    Resync,
    /// A transient failure: exponential back-off.
    Backoff,
    /// Needs a change of the Component or a Secret, which the watches deliver.
    AwaitChange,
}

/// What a reconcile found and did, before it is written anywhere.
struct Outcome {
    spec: KeyValueBucketSpec,
    conditions: Vec<ConditionSpec>,
    bucket: Option<BucketStatus>,
    events: Vec<(EventType, String, String)>,
    retry: Retry,
    /// Whether the Component should carry our finalizer; None when unknown (bad annotations).
    wants_finalizer: Option<bool>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: Config,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let pool = Arc::new(ConnectionPool::new(
        config.connect_timeout,
        config.request_timeout,
        Some(metrics.clone()),
    ));
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
    let policy = config
        .enforce_server_policy
        .then(|| crate::policy::Enforcer::start(&client));
    let shared = Shared {
        client,
        pool: pool.clone(),
        recorder,
        metrics,
        written: Arc::new(Mutex::new(HashMap::new())),
        peers: Arc::new(std::sync::OnceLock::new()),
        policy,
        share: Arc::new(crate::fair_share::NamespaceShare::new(
            config.namespace_concurrency,
        )),
    };
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes {
        let (controller, ctx) = build(scope, &config, shared.clone());
        stores.push((ctx.components.clone(), ctx.kvbs.clone(), ctx.synced.clone()));
        let shutdown = shutdown.clone();
        controllers.push(
            controller
                .graceful_shutdown_on(shutdown)
                .run(reconcile, error_policy, ctx)
                .for_each(|_| future::ready(())),
        );
    }
    let _ = shared
        .peers
        .set(stores.iter().map(|(_, kvbs, _)| kvbs.clone()).collect());
    let components: Vec<_> = stores.iter().map(|(c, _, _)| c.clone()).collect();
    let synced: Vec<_> = stores.iter().map(|(_, _, s)| s.clone()).collect();
    let ready = async move {
        for (components, kvbs, synced) in stores {
            let _ = components.wait_until_ready().await;
            let _ = kvbs.wait_until_ready().await;
            synced.store(true, Ordering::Release);
        }
        health.set_ready(true);
        tracing::info!("caches synced; ready");
    };
    let sweeper = sweep_connections(
        pool.clone(),
        shared.written.clone(),
        shared.metrics.clone(),
        components,
        synced,
        config.resync.min(SWEEP_INTERVAL),
    );
    tokio::select! {
        _ = future::join(future::join_all(controllers), ready) => {}
        _ = sweeper => {}
    }
}

/// What every scope's controller shares.
#[derive(Clone)]
struct Shared {
    client: Client,
    pool: Arc<ConnectionPool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    written: Arc<Mutex<HashMap<String, Written>>>,
    peers: Arc<std::sync::OnceLock<Vec<Store<KeyValueBucket>>>>,
    policy: Option<crate::policy::Enforcer>,
    share: Arc<crate::fair_share::NamespaceShare>,
}

/// The controller of one scope (all namespaces, or one): its watches and its context.
fn build(
    scope: Option<String>,
    config: &Config,
    shared: Shared,
) -> (Controller<DeserializeGuard<Component>>, Arc<Context>) {
    let Shared {
        client,
        pool,
        recorder,
        metrics,
        written,
        peers,
        policy,
        share,
    } = shared;
    let api = |c: &Client| -> (
        Api<DeserializeGuard<Component>>,
        Api<KeyValueBucket>,
        Api<PartialObjectMeta<Secret>>,
    ) {
        match &scope {
            Some(ns) => (
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
                Api::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        }
    };
    let (components_api, kvbs_api, secrets_api) = api(&client);

    let (components, components_writer) = reflector::store();
    let (on_delete, written_on_delete, metrics_on_delete) =
        (pool.clone(), written.clone(), metrics.clone());
    let component_stream = watcher(components_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(components_writer)
        // A deleted Component gets no reconcile: let go of its connection here.
        .inspect(move |event| {
            if let Ok(watcher::Event::Delete(c)) = event {
                forget_deleted(
                    &object_key(c),
                    &on_delete,
                    &written_on_delete,
                    &metrics_on_delete,
                );
            }
        })
        .applied_objects()
        .predicate_filter(component_predicate, Default::default());

    // Our KeyValueBuckets are cached (previous status, other users of a bucket) but trigger
    // nothing: every write to them is ours, and one deleted by hand is re-created at the next
    // resync. Triggering on them would cost a second reconcile for every new Component.
    let (kvbs, kvbs_writer) = reflector::store();
    let kvb_cache = watcher(kvbs_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(kvbs_writer)
        .for_each(|_| future::ready(()));
    tokio::spawn(kvb_cache);

    // Secrets: metadata only; the data is read when a Component that uses the Secret reconciles.
    // Without list/watch rights (--watch-secrets=false) a rotation is seen at the next resync.
    let secret_stream = if config.watch_secrets {
        watcher(secrets_api, watcher::Config::default().any_semantic())
            .default_backoff()
            .touched_objects()
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let by_secret = components.clone();

    let controller = Controller::for_stream(component_stream, components.clone())
        .watches_stream(secret_stream, move |secret| {
            let namespace = secret.namespace();
            let name = secret.name_any();
            by_secret
                .state()
                .into_iter()
                .filter(|c| c.namespace() == namespace)
                .filter(|c| match &c.0 {
                    Ok(component) => {
                        component.is_jetstream_state_store()
                            && crate::dapr::metadata::secret_names(component).contains(&name)
                    }
                    Err(_) => false,
                })
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));

    let ctx = Arc::new(Context {
        client,
        kvbs,
        components,
        pool,
        recorder,
        metrics,
        config: config.clone(),
        failures: Mutex::default(),
        written,
        peers,
        synced: Arc::default(),
        policy,
        share,
    });
    (controller, ctx)
}

/// A Component needs a reconcile when its generation, its user annotations or its deletion state
/// change, not when the operator's own status annotations do.
fn component_predicate(obj: &DeserializeGuard<Component>) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let meta = obj.meta();
    let mut h = DefaultHasher::new();
    meta.generation.hash(&mut h);
    meta.deletion_timestamp.is_some().hash(&mut h);
    meta.finalizers.hash(&mut h);
    if let Some(annotations) = &meta.annotations {
        for (k, v) in annotations {
            if k.starts_with("jetstreamkv.io/")
                && ![
                    annotation::READY,
                    annotation::REASON,
                    annotation::OBSERVED_GENERATION,
                ]
                .contains(&k.as_str())
            {
                (k, v).hash(&mut h);
            }
        }
    }
    Some(h.finish())
}

/// Longest time between two sweeps of deleted Components.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Closes connections of Components that no longer exist (deleted Components get no reconcile).
/// Deletions are handled as the watch sees them; this catches the ones it missed (a deletion
/// while the watch re-listed, a reconcile that finished after the deletion).
async fn sweep_connections(
    pool: Arc<ConnectionPool>,
    written: Arc<Mutex<HashMap<String, Written>>>,
    metrics: Arc<Metrics>,
    components: Vec<Store<DeserializeGuard<Component>>>,
    synced: Vec<Arc<AtomicBool>>,
    every: Duration,
) {
    // An empty store before the first list says nothing about what exists. (Polled, not
    // `Store::wait_until_ready`: that wakes only one of several waiters.)
    while !synced.iter().all(|s| s.load(Ordering::Acquire)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let exists = |key: &str| {
            let (namespace, name) = key.split_once('/').unwrap_or_default();
            let reference = ObjectRef::new(name).within(namespace);
            components.iter().any(|s| s.get(&reference).is_some())
        };
        let known: Vec<String> = {
            let written = written.lock().unwrap_or_else(|e| e.into_inner());
            pool.users()
                .into_iter()
                .chain(written.keys().cloned())
                .collect()
        };
        for key in known.iter().filter(|k| !exists(k)) {
            forget_deleted(key, &pool, &written, &metrics);
        }
    }
}

/// Lets go of what the operator holds for a deleted Component: its connection (closed when no
/// other Component uses it), what it last wrote, its metrics.
fn forget_deleted(
    key: &str,
    pool: &ConnectionPool,
    written: &Mutex<HashMap<String, Written>>,
    metrics: &Metrics,
) {
    pool.release(key);
    metrics.set_ready(key, None);
    written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key);
}

fn error_policy(
    obj: Arc<DeserializeGuard<Component>>,
    error: &ReportError,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(obj.as_ref());
    tracing::warn!(component = %key, error = %error, "reconcile failed; retrying");
    Action::requeue(ctx.backoff(&key))
}

fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

impl Context {
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_default();
        *n = n.saturating_add(1);
        let base = Duration::from_millis(500).saturating_mul(1u32 << (*n - 1).min(16));
        let capped = base.min(self.config.max_backoff);
        jitter(capped, 0.2)
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    fn last_written(&self, key: &str) -> Option<Written> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }
}

fn jitter(d: Duration, fraction: f64) -> Duration {
    let f = rand::rng().random_range((1.0 - fraction)..(1.0 + fraction));
    d.mul_f64(f)
}

async fn reconcile(
    obj: Arc<DeserializeGuard<Component>>,
    ctx: Arc<Context>,
) -> Result<Action, ReportError> {
    // Right after a start the Component watch can deliver before the KeyValueBuckets are listed:
    // without them every status would look new and be written again, with an Event. (Not
    // `Store::wait_until_ready` here: its DelayedInit wakes only the last of several waiters.)
    if !ctx.synced.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if ctx.policy.as_ref().is_some_and(|p| !p.is_synced()) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    // Fair share: a namespace whose share of the workers is taken waits outside the workers.
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    let Some(_slot) = ctx.share.try_acquire(&namespace) else {
        ctx.metrics.fair_share_deferred();
        return Ok(Action::requeue(jitter(Duration::from_millis(300), 0.5)));
    };
    let key = object_key(obj.as_ref());
    let component = match &obj.0 {
        Ok(c) => c,
        Err(invalid) => {
            // Not a Dapr Component we can read: nothing to do until it changes. We cannot tell
            // its type, so no KeyValueBucket is touched.
            tracing::warn!(component = %key, error = %invalid.error, "ignoring a Component that does not parse");
            return Ok(Action::await_change());
        }
    };
    if component.metadata.deletion_timestamp.is_some() {
        return finalize(component, &key, &ctx).await;
    }
    if !component.is_jetstream_state_store() {
        return forget(component, &key, &ctx).await;
    }
    let started = Instant::now();
    let previous = previous_state(&ctx, component);
    let outcome = observe(component, &key, &ctx, previous.as_ref()).await;
    let ready = outcome
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
        .cloned();
    if !outcome
        .conditions
        .iter()
        .any(|c| c.type_ == condition::CREDENTIALS_RESOLVED && c.status == Some(true))
    {
        // No usable credentials (a Secret gone, rotated to something invalid, an expired JWT):
        // the connection made with the old ones is not this Component's any more.
        ctx.pool.release(&key);
    }
    report(component, &key, &ctx, previous.as_ref(), &outcome).await?;
    let failed_reason = ready
        .as_ref()
        .filter(|c| c.status != Some(true))
        .map(|c| c.reason.clone());
    ctx.metrics
        .reconciled(started.elapsed(), failed_reason.as_deref());
    ctx.metrics
        .set_ready(&key, ready.as_ref().map(|c| c.status == Some(true)));
    tracing::debug!(component = %key, ready = ?ready.map(|c| (c.status, c.reason)), elapsed = ?started.elapsed(), "reconciled");
    Ok(match outcome.retry {
        Retry::Resync => {
            ctx.succeeded(&key);
            Action::requeue(jitter(ctx.config.resync, 0.1))
        }
        Retry::Backoff => Action::requeue(ctx.backoff(&key)),
        Retry::AwaitChange => {
            ctx.succeeded(&key);
            Action::await_change()
        }
    })
}

/// The KeyValueBucket as last written by us or seen by the watch, whichever is newer.
fn previous_state(ctx: &Context, component: &Component) -> Option<Written> {
    let key = object_key(component);
    if let Some(w) = ctx.last_written(&key) {
        return Some(w);
    }
    let kvb = ctx.kvbs.get(
        &ObjectRef::new(&component.name_any()).within(&component.namespace().unwrap_or_default()),
    )?;
    Some(Written {
        spec: kvb.spec.clone(),
        generation: kvb.metadata.generation,
        status: kvb.status.clone().unwrap_or_default(),
    })
}

/// A Component that is not (or no longer) of type `state.jetstream`: remove what we made for it.
async fn forget(component: &Component, key: &str, ctx: &Context) -> Result<Action, ReportError> {
    ctx.pool.release(key);
    ctx.metrics.set_ready(key, None);
    let namespace = component.namespace().unwrap_or_default();
    let name = component.name_any();
    let had_kvb = ctx
        .written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key)
        .is_some()
        || ctx
            .kvbs
            .get(&ObjectRef::new(&name).within(&namespace))
            .is_some();
    if had_kvb {
        let api: Api<KeyValueBucket> = Api::namespaced(ctx.client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => ctx.metrics.api_write("delete-keyvaluebucket"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(ReportError {
                    what: "KeyValueBucket deletion",
                    source,
                });
            }
        }
        tracing::info!(component = %key, "Component is no longer of type state.jetstream; removed its KeyValueBucket");
    }
    let ours = component
        .annotations()
        .keys()
        .any(|k| k == annotation::READY || k == annotation::REASON)
        || component.finalizers().iter().any(|f| f == FINALIZER);
    if ours {
        // Applying no annotations under our field manager removes the ones we own.
        let patch = json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name, "namespace": namespace},
        });
        apply_component(ctx, &namespace, &name, patch).await?;
    }
    Ok(Action::await_change())
}

/// Builds conditions step by step: each step passes or fails; after a failure the remaining
/// detail conditions are Unknown.
struct Steps {
    conditions: Vec<ConditionSpec>,
    /// kstatus for a failure: Stalled (true) or Reconciling (false).
    stalled: bool,
}

const DETAIL: [&str; 4] = [
    condition::CREDENTIALS_RESOLVED,
    condition::CONNECTED,
    condition::BUCKET_AVAILABLE,
    condition::CONFIG_SYNCED,
];

impl Steps {
    fn new() -> Self {
        Self {
            conditions: Vec::new(),
            stalled: false,
        }
    }

    fn pass(&mut self, type_: &'static str, reason: &str, message: impl Into<String>) {
        self.conditions.push(ConditionSpec {
            type_,
            status: Some(true),
            reason: reason.into(),
            message: message.into(),
        });
    }

    fn fail(&mut self, type_: &'static str, reason: &str, message: impl Into<String>) {
        self.conditions.push(ConditionSpec {
            type_,
            status: Some(false),
            reason: reason.into(),
            message: message.into(),
        });
    }

    /// The final list: every detail condition (Unknown where not reached), then Ready and the
    /// kstatus conditions.
    fn finish(mut self, ready_reason: &str, ready_message: String) -> Vec<ConditionSpec> {
        let blocker = self
            .conditions
            .iter()
            .find(|c| c.status == Some(false))
            .cloned();
        for type_ in DETAIL {
            if !self.conditions.iter().any(|c| c.type_ == type_) {
                let (reason, message) = match &blocker {
                    Some(b) => (
                        "NotChecked".to_string(),
                        format!("not checked while {} is False ({})", b.type_, b.reason),
                    ),
                    None => ("NotChecked".to_string(), "not checked".to_string()),
                };
                self.conditions.push(ConditionSpec {
                    type_,
                    status: None,
                    reason,
                    message,
                });
            }
        }
        self.conditions
            .sort_by_key(|c| DETAIL.iter().position(|t| *t == c.type_));
        let mut out = vec![ConditionSpec {
            type_: condition::READY,
            status: Some(blocker.is_none()),
            reason: blocker
                .as_ref()
                .map(|b| b.reason.clone())
                .unwrap_or_else(|| ready_reason.to_string()),
            message: blocker
                .as_ref()
                .map(|b| b.message.clone())
                .unwrap_or(ready_message),
        }];
        out.extend(self.conditions);
        if let Some(b) = &blocker {
            // kstatus: Stalled when only a change can help, Reconciling while retrying.
            let type_ = if self.stalled {
                condition::STALLED
            } else {
                condition::RECONCILING
            };
            out.push(ConditionSpec {
                type_,
                status: Some(true),
                reason: b.reason.clone(),
                message: b.message.clone(),
            });
        }
        out
    }
}

/// Why a reconcile stopped before the bucket was reached.
struct Failure {
    condition: &'static str,
    reason: String,
    message: String,
    retry: Retry,
    /// kstatus: Stalled (only a change can help) rather than Reconciling.
    stalled: bool,
}

impl Failure {
    fn new(condition: &'static str, reason: &str, message: String, retry: Retry) -> Self {
        Self {
            condition,
            reason: reason.to_string(),
            message,
            stalled: retry != Retry::Backoff,
            retry,
        }
    }

    /// NATS failures are all retried with back-off, since the fix is often on the server; the
    /// ones that need someone to act (credentials refused, JetStream off, limits) are Stalled.
    fn nats(condition: &'static str, e: &crate::nats::NatsError) -> Self {
        Self {
            stalled: e.needs_intervention(),
            ..Self::new(condition, e.reason(), e.to_string(), Retry::Backoff)
        }
    }
}

/// What one reconcile has found so far: each step adds to it, the first failure ends it.
struct Pass {
    steps: Steps,
    spec: KeyValueBucketSpec,
    bucket: Option<BucketStatus>,
    events: Vec<(EventType, String, String)>,
    wants_finalizer: Option<bool>,
}

impl Pass {
    fn new(component: &Component, previous: Option<&Written>) -> Self {
        Self {
            steps: Steps::new(),
            spec: KeyValueBucketSpec {
                component: component.name_any(),
                ..Default::default()
            },
            bucket: previous.and_then(|p| p.status.bucket.clone()),
            events: Vec::new(),
            wants_finalizer: None,
        }
    }

    fn fail(mut self, failure: Failure) -> Outcome {
        self.steps.stalled = failure.stalled;
        self.steps
            .fail(failure.condition, &failure.reason, failure.message);
        self.finish(failure.retry, "", String::new())
    }

    fn finish(self, retry: Retry, ready_reason: &str, ready_message: String) -> Outcome {
        Outcome {
            conditions: self.steps.finish(ready_reason, ready_message),
            spec: self.spec,
            bucket: self.bucket,
            events: self.events,
            retry,
            wants_finalizer: self.wants_finalizer,
        }
    }
}

/// The read-and-decide part: Dapr's metadata rules, the annotations, the Secrets and the
/// credentials, into a connection config and bucket settings. Fills in what it understood in
/// `spec` as it goes (never a secret).
async fn resolve(
    component: &Component,
    ctx: &Context,
    spec: &mut KeyValueBucketSpec,
) -> Result<(StoreConfig, BucketSettings), Failure> {
    let credentials = |reason: &str, message: String, retry: Retry| {
        Failure::new(condition::CREDENTIALS_RESOLVED, reason, message, retry)
    };
    let entries = crate::dapr::metadata::parse_metadata(component)
        .map_err(|e| credentials(e.reason(), e.to_string(), Retry::AwaitChange))?;
    let settings = crate::settings::from_annotations(component.annotations()).map_err(|e| {
        Failure::new(
            condition::CONFIG_SYNCED,
            e.reason(),
            e.to_string(),
            Retry::AwaitChange,
        )
    })?;
    spec.config = Some(bucket::desired_config(&settings));
    spec.on_existing = Some(settings.on_existing.as_str().to_string());
    spec.deletion_policy = Some(settings.deletion_policy.as_str().to_string());
    let namespace = component.namespace().unwrap_or_default();
    let values = crate::secrets::resolve(&ctx.client, &namespace, &entries)
        .await
        .map_err(|e| {
            let retry = if e.is_permanent() {
                Retry::AwaitChange
            } else {
                Retry::Backoff
            };
            credentials(e.reason(), e.to_string(), retry)
        })?;
    // A natsURL or bucket read from a Secret is shown as where it came from, never as itself.
    let origin = |item: &str| {
        entries
            .iter()
            .find(|e| e.name == item)
            .and_then(|e| match &e.source {
                crate::dapr::ValueSource::Secret { name, key } => {
                    Some(crate::dapr::store::shown_origin(name, key))
                }
                crate::dapr::ValueSource::Inline(_) => None,
            })
    };
    let store = crate::dapr::store::store_config_with_origins(&values, origin)
        .map_err(|e| credentials(e.reason(), e.to_string(), Retry::AwaitChange))?;
    spec.bucket = Some(store.shown_bucket.clone());
    spec.servers = store.redacted_servers.clone();
    spec.auth = Some(store.auth.kind().to_string());
    if let Some(policy) = &ctx.policy {
        // Before any DNS lookup or connection.
        let has_credentials = store.auth != NatsAuth::None;
        if let crate::policy::Decision::NotAllowed(why) =
            policy.decide(&namespace, store.servers.expose(), has_credentials)
        {
            // The first natsURL item counts (Dapr's rule), whatever its case.
            let from_secret = entries
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case("natsURL"))
                .is_some_and(|e| matches!(e.source, crate::dapr::ValueSource::Secret { .. }));
            let message = if from_secret {
                // The refusal names the server, which came from a Secret.
                format!(
                    "the natsURL from {} names a NATS server that no NatsServerPolicy allows for namespace {namespace}; use an allowed server or ask the cluster admin to allow it",
                    store.redacted_servers.join(",")
                )
            } else {
                why
            };
            return Err(Failure::new(
                condition::CONNECTED,
                "ServerNotAllowed",
                message,
                Retry::Resync,
            ));
        }
    }
    if let NatsAuth::Jwt { jwt, seed } = &store.auth {
        let now = jiff::Timestamp::now().as_second();
        crate::credentials::check_user_credentials(jwt, seed, now).map_err(|e| {
            // A JWT that is not valid yet heals with time: retry it; the others need a change.
            let retry = if e.is_permanent() {
                Retry::AwaitChange
            } else {
                Retry::Backoff
            };
            credentials(e.reason(), e.to_string(), retry)
        })?;
    }
    Ok((store, settings))
}

/// Other Components (any namespace) whose KeyValueBucket last saw the bucket with this
/// identity (what the server reports about the stream, not the text of a URL), as
/// `namespace/name`.
fn other_users(ctx: &Context, key: &str, identity: &str) -> Vec<String> {
    let Some(stores) = ctx.peers.get() else {
        return Vec::new();
    };
    let mut users: Vec<String> = stores
        .iter()
        .flat_map(|store| store.state())
        .filter(|kvb| {
            kvb.status
                .as_ref()
                .and_then(|s| s.bucket.as_ref())
                .and_then(|b| b.identity.as_deref())
                == Some(identity)
        })
        .map(|kvb| object_key(kvb.as_ref()))
        .filter(|other| other != key)
        .collect();
    users.sort();
    users
}

/// The bucket side: connect and fetch the live bucket. One NATS read.
async fn connect(
    ctx: &Context,
    key: &str,
    store: &StoreConfig,
) -> Result<
    (
        async_nats::Client,
        Option<async_nats::jetstream::stream::Info>,
    ),
    Failure,
> {
    let client = ctx
        .pool
        .connect(key, store)
        .await
        .map_err(|e| Failure::nats(condition::CONNECTED, &e))?;
    if client.connection_state() != async_nats::connection::State::Connected {
        let e = crate::nats::NatsError::Unreachable {
            servers: store.redacted_servers.join(","),
            detail: "the connection is down and reconnecting".into(),
        };
        return Err(Failure::nats(condition::CONNECTED, &e));
    }
    let js = async_nats::jetstream::new(client.clone());
    ctx.metrics.nats_request("info");
    let live = Bucket::new(&js, &store.bucket)
        .fetch()
        .await
        .map_err(|e| Failure::nats(condition::CONNECTED, &e))?;
    Ok((client, live))
}

/// Read, decide and act for one `state.jetstream` Component.
async fn observe(
    component: &Component,
    key: &str,
    ctx: &Context,
    previous: Option<&Written>,
) -> Outcome {
    let mut pass = Pass::new(component, previous);
    let (store, settings) = match resolve(component, ctx, &mut pass.spec).await {
        Ok(r) => r,
        Err(f) => return pass.fail(f),
    };
    pass.wants_finalizer = Some(settings.deletion_policy == DeletionPolicy::Delete);
    pass.steps.pass(
        condition::CREDENTIALS_RESOLVED,
        "Resolved",
        format!(
            "metadata and credentials resolved (auth: {})",
            store.auth.kind()
        ),
    );
    // Facts about another bucket (the Component was renamed to a new one) do not apply.
    let stream = bucket::stream_name(&store.shown_bucket);
    pass.bucket = pass.bucket.take().filter(|b| b.stream == stream);

    let (client, live) = match connect(ctx, key, &store).await {
        Ok(c) => c,
        Err(f) => return pass.fail(f),
    };
    let server = client.server_info();
    pass.steps.pass(
        condition::CONNECTED,
        "Connected",
        format!(
            "connected to NATS {} at {} with JetStream",
            crate::nats::remote_text(&server.version),
            store.redacted_servers.join(",")
        ),
    );

    // Two Components asking different things of one bucket cannot fight over it: only the
    // Component the operator created it for changes it (ownership is law, see `bucket::plan`);
    // the others verify it. So no other Component can block its owner.

    let js = async_nats::jetstream::new(client);
    let previous_config = previous.and_then(|p| p.spec.config.clone());
    act(
        ctx,
        pass,
        &store,
        &settings,
        key,
        &Bucket::new(&js, &store.bucket),
        live,
        previous_config,
        &server,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn act(
    ctx: &Context,
    mut pass: Pass,
    store: &StoreConfig,
    settings: &BucketSettings,
    key: &str,
    nats_bucket: &Bucket<'_>,
    mut live: Option<async_nats::jetstream::stream::Info>,
    previous_config: Option<crate::crd::BucketConfig>,
    server: &async_nats::ServerInfo,
) -> Outcome {
    let desired = Desired {
        bucket: &store.bucket,
        owner: key,
        settings,
    };
    let name = &store.shown_bucket;
    let stream = bucket::stream_name(name);
    let previously_managed = pass.bucket.as_ref().map(|b| b.managed);
    let clustered = server.cluster.is_some();
    let facts = |info: &async_nats::jetstream::stream::Info, managed: bool| {
        let mut facts = bucket::status_of(info, managed, Some(server));
        // The stream name holds the bucket name, which may have come from a Secret.
        facts.stream = stream.clone();
        Some(facts)
    };
    // At most two rounds: a create that races with another creator plans again against the
    // bucket that won.
    for _ in 0..2 {
        let plan = bucket::plan(
            &desired,
            live.as_ref().map(|i| &i.config),
            previously_managed,
            clustered,
        );
        let retry = match plan {
            Plan::Create(config) | Plan::Recreate(config) => {
                ctx.metrics.nats_request("create");
                match nats_bucket.create(*config).await {
                    Ok(info) if bucket::is_managed_by(&info.config, key) => {
                        pass.events.push(if previously_managed == Some(true) {
                            (
                                EventType::Warning,
                                "BucketRecreated".into(),
                                format!("bucket {name} was deleted outside the operator; created it again (its data was lost)"),
                            )
                        } else {
                            (
                                EventType::Normal,
                                "BucketCreated".into(),
                                format!("created bucket {name} (stream {stream})"),
                            )
                        });
                        pass.steps.pass(
                            condition::BUCKET_AVAILABLE,
                            "BucketFound",
                            format!(
                                "bucket {name} exists (stream {stream}); managed by the operator"
                            ),
                        );
                        pass.steps.pass(
                            condition::CONFIG_SYNCED,
                            "InSync",
                            "bucket settings match the Component",
                        );
                        pass.bucket = facts(&info, true);
                        Retry::Resync
                    }
                    Ok(info) => {
                        // Someone else created it first: verify what they made.
                        live = Some(info);
                        continue;
                    }
                    Err(e) => return pass.fail(Failure::nats(condition::BUCKET_AVAILABLE, &e)),
                }
            }
            Plan::Missing => {
                return pass.fail(Failure::new(
                    condition::BUCKET_AVAILABLE,
                    "BucketMissing",
                    format!("bucket {name} (stream {stream}) no longer exists; the operator only verified it, so it does not create it again: recreate it, or set jetstreamkv.io/on-existing: adopt and re-create the Component"),
                    Retry::Backoff,
                ));
            }
            Plan::NotKeyValue(problem) => {
                return pass.fail(Failure::new(
                    condition::BUCKET_AVAILABLE,
                    "NotAKeyValueBucket",
                    problem,
                    Retry::Resync,
                ));
            }
            Plan::InSync { managed } => {
                let how = if managed {
                    "managed by the operator"
                } else {
                    "verified; not managed by the operator"
                };
                pass.steps.pass(
                    condition::BUCKET_AVAILABLE,
                    "BucketFound",
                    format!("bucket {name} exists (stream {stream}); {how}"),
                );
                pass.steps.pass(
                    condition::CONFIG_SYNCED,
                    "InSync",
                    "bucket settings match the Component",
                );
                pass.bucket = live.as_ref().and_then(|i| facts(i, managed));
                Retry::Resync
            }
            Plan::Update {
                config,
                changes,
                adopt,
            } => {
                ctx.metrics.nats_request("update");
                let what = changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                // Same desired settings as last time, yet the bucket differs: someone changed
                // it behind the operator's back.
                let drift = !adopt && previous_config.as_ref() == pass.spec.config.as_ref();
                pass.steps.pass(
                    condition::BUCKET_AVAILABLE,
                    "BucketFound",
                    format!("bucket {name} exists (stream {stream}); managed by the operator"),
                );
                match nats_bucket.update(*config).await {
                    Ok(info) => {
                        let (type_, reason, note) = if drift {
                            (
                                EventType::Warning,
                                "ConfigDrift",
                                format!(
                                    "bucket {name} was changed outside the operator; restored {what}"
                                ),
                            )
                        } else if adopt {
                            (
                                EventType::Normal,
                                "BucketAdopted",
                                format!("adopted bucket {name} and applied {what}"),
                            )
                        } else {
                            (
                                EventType::Normal,
                                "BucketUpdated",
                                format!("updated bucket {name}: {what}"),
                            )
                        };
                        pass.events.push((type_, reason.into(), note));
                        // What changed is in the Event; the condition stays as it will read
                        // at the next resync, so that resync writes nothing.
                        pass.steps.pass(
                            condition::CONFIG_SYNCED,
                            "InSync",
                            "bucket settings match the Component",
                        );
                        pass.bucket = facts(&info, true);
                        Retry::Resync
                    }
                    Err(e) => {
                        pass.bucket = live.as_ref().and_then(|i| facts(i, true));
                        return pass.fail(Failure::new(
                            condition::CONFIG_SYNCED,
                            e.reason(),
                            format!("updating {what} failed: {e}"),
                            Retry::Backoff,
                        ));
                    }
                }
            }
            Plan::Blocked {
                managed,
                reason,
                changes,
            } => {
                let what = changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                let message = match reason {
                    bucket::BlockReason::ConfigMismatch => format!(
                        "bucket {name} was not created by the operator and differs from the Component: {what}; the operator only verifies it: change the annotations, fix the bucket, or set jetstreamkv.io/on-existing: adopt"
                    ),
                    bucket::BlockReason::DataLossRefused => format!(
                        "refused to apply {what} to bucket {name}: it would discard stored data; set jetstreamkv.io/allow-data-loss: \"true\" to apply it"
                    ),
                    bucket::BlockReason::ImmutableFieldChanged => format!(
                        "cannot change {what} of bucket {name}: NATS cannot change it on an existing bucket; revert the annotation, or move the data to a new bucket"
                    ),
                    bucket::BlockReason::UnsupportedByServer => format!(
                        "cannot apply {what} to bucket {name}: the server is not clustered; use replicas 1"
                    ),
                    bucket::BlockReason::OwnedElsewhere => format!(
                        "bucket {name} was created by the operator for another Component, so this one only verifies it: it is never adopted, changed, purged or deleted on this Component's behalf{}; use a bucket of this Component's own, or remove jetstreamkv.io/on-existing: adopt and the differing bucket annotations",
                        if what.is_empty() {
                            String::new()
                        } else {
                            format!(" (differs: {what})")
                        }
                    ),
                };
                pass.steps.pass(
                    condition::BUCKET_AVAILABLE,
                    "BucketFound",
                    format!("bucket {name} exists (stream {stream})"),
                );
                pass.bucket = live.as_ref().and_then(|i| facts(i, managed));
                return pass.fail(Failure::new(
                    condition::CONFIG_SYNCED,
                    reason.reason(),
                    message,
                    Retry::Resync,
                ));
            }
        };
        let managed = pass.bucket.as_ref().is_some_and(|b| b.managed);
        let (ready_reason, ready_message) = if managed {
            (
                "BucketManaged",
                format!("bucket {name} is ready and managed by the operator"),
            )
        } else {
            (
                "BucketVerified",
                format!(
                    "bucket {name} is ready; it was created outside the operator and is only verified"
                ),
            )
        };
        return pass.finish(retry, ready_reason, ready_message);
    }
    pass.fail(Failure::new(
        condition::BUCKET_AVAILABLE,
        "BucketCreateConflict",
        format!("bucket {name} kept changing while it was being created; retrying"),
        Retry::Backoff,
    ))
}

/// A Component being deleted that carries our finalizer (deletion-policy: delete): delete its
/// bucket if the operator created it and nobody else uses it, then let the deletion finish.
async fn finalize(component: &Component, key: &str, ctx: &Context) -> Result<Action, ReportError> {
    if !component.finalizers().iter().any(|f| f == FINALIZER) {
        ctx.pool.release(key);
        return Ok(Action::await_change());
    }
    let delete = crate::settings::from_annotations(component.annotations())
        .is_ok_and(|s| s.deletion_policy == DeletionPolicy::Delete);
    let (type_, reason, note) = if delete {
        match delete_bucket(component, key, ctx).await {
            Ok(event) => event,
            Err(failure) => {
                // Keep the finalizer and say why the deletion waits.
                let previous = previous_state(ctx, component);
                let mut pass = Pass::new(component, previous.as_ref());
                if let Some(p) = &previous {
                    pass.spec = p.spec.clone();
                }
                pass.wants_finalizer = Some(true);
                let outcome = pass.fail(Failure::new(
                    failure.condition,
                    "DeletionPending",
                    format!("the Component is being deleted with jetstreamkv.io/deletion-policy: delete, and its bucket cannot be deleted yet: {} ({}); it is retried. Remove the deletion-policy annotation to keep the bucket and let the deletion finish", failure.message, failure.reason),
                    Retry::Backoff,
                ));
                report(component, key, ctx, previous.as_ref(), &outcome).await?;
                return Ok(Action::requeue(ctx.backoff(key)));
            }
        }
    } else {
        (
            EventType::Normal,
            "BucketRetained",
            "the Component is deleted and its deletion policy is retain: the bucket and its data are kept".to_string(),
        )
    };
    publish(ctx, component, key, type_, reason.to_string(), note).await;
    // Applying nothing under our field manager drops our finalizer and annotations.
    let namespace = component.namespace().unwrap_or_default();
    let name = component.name_any();
    let patch = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": namespace},
    });
    apply_component(ctx, &namespace, &name, patch).await?;
    ctx.pool.release(key);
    ctx.metrics.set_ready(key, None);
    ctx.written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key);
    ctx.succeeded(key);
    Ok(Action::await_change())
}

/// Deletes the bucket of a Component being deleted, when that is safe; returns the Event to
/// publish.
async fn delete_bucket(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<(EventType, &'static str, String), Failure> {
    let mut spec = KeyValueBucketSpec::default();
    let (store, _) = resolve(component, ctx, &mut spec).await?;
    let name = &store.shown_bucket;
    let (client, live) = connect(ctx, key, &store).await?;
    let Some(live) = live else {
        return Ok((
            EventType::Normal,
            "BucketRetained",
            format!("bucket {name} no longer exists; nothing to delete"),
        ));
    };
    if !bucket::is_managed_by(&live.config, key) {
        return Ok((
            EventType::Normal,
            "BucketRetained",
            format!(
                "bucket {name} was not created by the operator for this Component, so it is kept"
            ),
        ));
    }
    let domain = client.server_info().domain;
    let users = other_users(ctx, key, &bucket::identity(&live, domain.as_deref()));
    if !users.is_empty() {
        // Components of other namespaces are counted, never named.
        let namespace = format!("{}/", component.namespace().unwrap_or_default());
        let (here, elsewhere): (Vec<_>, Vec<_>) =
            users.iter().partition(|u| u.starts_with(&namespace));
        let mut who: Vec<String> = here.iter().map(|u| u.to_string()).collect();
        if !elsewhere.is_empty() {
            who.push(format!(
                "{} Component(s) in other namespaces",
                elsewhere.len()
            ));
        }
        return Ok((
            EventType::Normal,
            "BucketRetained",
            format!("bucket {name} is kept: {} still use(s) it", who.join(", ")),
        ));
    }
    let js = async_nats::jetstream::new(client);
    ctx.metrics.nats_request("delete");
    Bucket::new(&js, &store.bucket)
        .delete()
        .await
        .map_err(|e| Failure::nats(condition::BUCKET_AVAILABLE, &e))?;
    Ok((
        EventType::Normal,
        "BucketDeleted",
        format!("deleted bucket {name} and its data (jetstreamkv.io/deletion-policy: delete)"),
    ))
}

/// Writes what changed: the KeyValueBucket (spec, then status), the Component's annotations, and
/// Events for transitions.
async fn report(
    component: &Component,
    key: &str,
    ctx: &Context,
    previous: Option<&Written>,
    outcome: &Outcome,
) -> Result<(), ReportError> {
    let namespace = component.namespace().unwrap_or_default();
    let name = component.name_any();
    let api: Api<KeyValueBucket> = Api::namespaced(ctx.client.clone(), &namespace);

    // 1. The KeyValueBucket itself, owned by the Component (garbage-collected with it).
    let mut generation = previous.and_then(|p| p.generation);
    // Not in the cache: new, or deleted by hand (then our memory of it is stale). Write both
    // parts; an apply of identical content changes nothing on the server.
    let cached = ctx
        .kvbs
        .get(&ObjectRef::new(&name).within(&namespace))
        .is_some();
    if !cached || previous.is_none_or(|p| p.spec != outcome.spec) {
        let owner = OwnerReference {
            api_version: "dapr.io/v1alpha1".into(),
            kind: "Component".into(),
            name: name.clone(),
            uid: component.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let object = json!({
            "apiVersion": "jetstreamkv.io/v1alpha1",
            "kind": "KeyValueBucket",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "ownerReferences": [owner],
                "labels": {"app.kubernetes.io/managed-by": MANAGER},
            },
            "spec": outcome.spec,
        });
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map_err(|source| ReportError {
                what: "KeyValueBucket",
                source,
            })?;
        ctx.metrics.api_write("apply-keyvaluebucket");
        generation = applied.metadata.generation;
    }

    // 2. Its status, when anything in it changed.
    let previous_status = previous.map(|p| p.status.clone()).unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let status = KeyValueBucketStatus {
        observed_generation: generation,
        component_generation: component.metadata.generation,
        conditions: merge_conditions(
            &previous_status.conditions,
            &outcome.conditions,
            generation,
            now,
        ),
        bucket: outcome.bucket.clone(),
    };
    if !cached || status != previous_status {
        let patch = json!({
            "apiVersion": "jetstreamkv.io/v1alpha1",
            "kind": "KeyValueBucket",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(|source| {
            // Deleted by hand: forget what we wrote so the next attempt re-creates it.
            ctx.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            ReportError {
                what: "KeyValueBucket status",
                source,
            }
        })?;
        ctx.metrics.api_write("apply-keyvaluebucket-status");
    }
    ctx.written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key.to_string(),
            Written {
                spec: outcome.spec.clone(),
                generation,
                status: status.clone(),
            },
        );

    // 3. The summary annotations on the Component, for tools that only look at it.
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY);
    let wanted: BTreeMap<&str, String> = BTreeMap::from([
        (
            annotation::READY,
            ready.map(|c| c.status.to_lowercase()).unwrap_or_default(),
        ),
        (
            annotation::REASON,
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
        ),
        (
            annotation::OBSERVED_GENERATION,
            component
                .metadata
                .generation
                .unwrap_or_default()
                .to_string(),
        ),
    ]);
    // With them, our finalizer when the deletion policy asks for one (one apply for both).
    let current = component.annotations();
    let has_finalizer = component.finalizers().iter().any(|f| f == FINALIZER);
    let wants_finalizer = outcome.wants_finalizer.unwrap_or(has_finalizer);
    if wanted.iter().any(|(k, v)| current.get(*k) != Some(v)) || wants_finalizer != has_finalizer {
        let mut patch = json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": wanted,
            },
        });
        // Only when wanted: leaving it out of the apply removes the one we own. An empty list
        // made every later apply of a GitOps tool's field manager write the Component again
        // (one write per sync, seen as drift; tests/gitops.rs).
        if wants_finalizer {
            patch["metadata"]["finalizers"] = json!([FINALIZER]);
        }
        apply_component(ctx, &namespace, &name, patch).await?;
    }

    // 4. Events: what was done, and Ready transitions.
    let before = previous_status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    let after = ready.map(|c| (c.status.clone(), c.reason.clone()));
    let mut events = outcome.events.clone();
    if let Some(c) = ready.filter(|_| events.is_empty() && before != after) {
        {
            let type_ = if c.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            };
            events.push((type_, event_reason(&c.reason), c.message.clone()));
        }
    }
    for (type_, reason, note) in events {
        publish(ctx, component, key, type_, reason, note).await;
    }
    Ok(())
}

/// Publishes an Event on the Component; a failure is logged, never fatal.
async fn publish(
    ctx: &Context,
    component: &Component,
    key: &str,
    type_: EventType,
    reason: String,
    note: String,
) {
    let event = Event {
        type_,
        reason,
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx
        .recorder
        .publish(&event, &component.object_ref(&()))
        .await
    {
        Ok(()) => ctx.metrics.api_write("event"),
        Err(e) => tracing::warn!(component = %key, error = %e, "could not publish an Event"),
    }
}

/// The Event reason for a Ready transition: the Ready reason itself, grouped where several
/// reasons mean the same thing to someone reading `kubectl describe`.
fn event_reason(reason: &str) -> String {
    match reason {
        "BucketManaged" => "BucketReady",
        "NatsUnavailable" | "NatsTimeout" => "NatsUnavailable",
        r if r.starts_with("Jwt") || r.starts_with("Seed") => "CredentialsInvalid",
        other => other,
    }
    .to_string()
}

async fn apply_component(
    ctx: &Context,
    namespace: &str,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), ReportError> {
    let api: Api<Component> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch_metadata(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(|source| ReportError {
        what: "Component annotations",
        source,
    })?;
    ctx.metrics.api_write("apply-component-annotations");
    Ok(())
}
