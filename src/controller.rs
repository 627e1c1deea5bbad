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
use kube::runtime::{WatchStreamExt, predicates, watcher};
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
use crate::settings::BucketSettings;

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
    /// Both caches have been listed: reconciles wait for it.
    synced: Arc<AtomicBool>,
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
    let written = Arc::new(Mutex::new(HashMap::new()));
    let mut controllers = Vec::new();
    let mut stores = Vec::new();
    for scope in scopes {
        let (controller, ctx) = build(
            client.clone(),
            scope,
            &config,
            pool.clone(),
            recorder.clone(),
            metrics.clone(),
            written.clone(),
        );
        stores.push((ctx.components.clone(), ctx.kvbs.clone(), ctx.synced.clone()));
        let shutdown = shutdown.clone();
        controllers.push(
            controller
                .graceful_shutdown_on(shutdown)
                .run(reconcile, error_policy, ctx)
                .for_each(|_| future::ready(())),
        );
    }
    let ready = async move {
        for (components, kvbs, synced) in stores {
            let _ = components.wait_until_ready().await;
            let _ = kvbs.wait_until_ready().await;
            synced.store(true, Ordering::Release);
        }
        health.set_ready(true);
        tracing::info!("caches synced; ready");
    };
    let sweeper = sweep_connections(pool.clone(), written.clone());
    tokio::select! {
        _ = future::join(future::join_all(controllers), ready) => {}
        _ = sweeper => {}
    }
}

fn build(
    client: Client,
    scope: Option<String>,
    config: &Config,
    pool: Arc<ConnectionPool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    written: Arc<Mutex<HashMap<String, Written>>>,
) -> (Controller<DeserializeGuard<Component>>, Arc<Context>) {
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
    let component_stream = watcher(components_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(components_writer)
        .applied_objects()
        .predicate_filter(component_predicate, Default::default());

    let (kvbs, kvbs_writer) = reflector::store();
    // Only spec changes (and re-creations) of our KeyValueBuckets matter: status writes are ours.
    let kvb_stream = watcher(kvbs_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(kvbs_writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());

    // Secrets: metadata only; the data is read when a Component that uses the Secret reconciles.
    let secret_stream = watcher(secrets_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .touched_objects();
    let by_secret = components.clone();

    let controller = Controller::for_stream(component_stream, components.clone())
        .owns_stream(kvb_stream)
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
        synced: Arc::default(),
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

/// Closes connections of Components that no longer exist (deleted Components get no reconcile).
async fn sweep_connections(
    pool: Arc<ConnectionPool>,
    written: Arc<Mutex<HashMap<String, Written>>>,
) {
    let _ = (pool, written);
    future::pending::<()>().await
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
        .any(|k| k == annotation::READY || k == annotation::REASON);
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
    failed: Option<(&'static str, String)>,
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
            failed: None,
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
        let message = message.into();
        self.conditions.push(ConditionSpec {
            type_,
            status: Some(false),
            reason: reason.into(),
            message: message.clone(),
        });
        if self.failed.is_none() {
            self.failed = Some((type_, message));
        }
    }

    /// The final list: every detail condition (Unknown where not reached), then Ready and the
    /// kstatus conditions.
    fn finish(
        mut self,
        ready_reason: &str,
        ready_message: String,
        retry: Retry,
    ) -> Vec<ConditionSpec> {
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
            let type_ = if retry == Retry::Backoff {
                condition::RECONCILING
            } else {
                condition::STALLED
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

/// Read, decide and act for one `state.jetstream` Component.
async fn observe(
    component: &Component,
    key: &str,
    ctx: &Context,
    previous: Option<&Written>,
) -> Outcome {
    let namespace = component.namespace().unwrap_or_default();
    let mut steps = Steps::new();
    let mut spec = KeyValueBucketSpec {
        component: component.name_any(),
        ..Default::default()
    };
    let previous_bucket = previous.and_then(|p| p.status.bucket.clone());
    let fail = |mut steps: Steps,
                spec: KeyValueBucketSpec,
                type_: &'static str,
                reason: &str,
                message: String,
                retry: Retry,
                bucket: Option<BucketStatus>| {
        steps.fail(type_, reason, message);
        Outcome {
            conditions: steps.finish("", String::new(), retry),
            spec,
            bucket,
            events: Vec::new(),
            retry,
        }
    };

    // Read and decide: Dapr's metadata rules, the annotations, the Secrets, the credentials.
    let entries = match crate::dapr::metadata::parse_metadata(component) {
        Ok(e) => e,
        Err(e) => {
            return fail(
                steps,
                spec,
                condition::CREDENTIALS_RESOLVED,
                e.reason(),
                e.to_string(),
                Retry::AwaitChange,
                previous_bucket,
            );
        }
    };
    let settings = match crate::settings::from_annotations(&component.annotations().clone()) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                steps,
                spec,
                condition::CONFIG_SYNCED,
                e.reason(),
                e.to_string(),
                Retry::AwaitChange,
                previous_bucket,
            );
        }
    };
    spec.config = Some(bucket::desired_config(&settings));
    spec.on_existing = Some(enum_name(&settings.on_existing));
    spec.deletion_policy = Some(enum_name(&settings.deletion_policy));
    let values = match crate::secrets::resolve(&ctx.client, &namespace, &entries).await {
        Ok(v) => v,
        Err(e) => {
            let retry = if e.is_permanent() {
                Retry::AwaitChange
            } else {
                Retry::Backoff
            };
            return fail(
                steps,
                spec,
                condition::CREDENTIALS_RESOLVED,
                e.reason(),
                e.to_string(),
                retry,
                previous_bucket,
            );
        }
    };
    let store = match crate::dapr::store::store_config(&values) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                steps,
                spec,
                condition::CREDENTIALS_RESOLVED,
                e.reason(),
                e.to_string(),
                Retry::AwaitChange,
                previous_bucket,
            );
        }
    };
    spec.bucket = Some(store.bucket.clone());
    spec.servers = store.redacted_servers.clone();
    spec.auth = Some(store.auth.kind().to_string());
    if let NatsAuth::Jwt { jwt, seed } = &store.auth {
        let now = jiff::Timestamp::now().as_second();
        if let Err(e) = crate::credentials::check_user_credentials(jwt, seed, now) {
            return fail(
                steps,
                spec,
                condition::CREDENTIALS_RESOLVED,
                e.reason(),
                e.to_string(),
                Retry::AwaitChange,
                previous_bucket,
            );
        }
    }
    steps.pass(
        condition::CREDENTIALS_RESOLVED,
        "Resolved",
        format!(
            "metadata and credentials resolved (auth: {})",
            store.auth.kind()
        ),
    );

    // Act: connect, look at the bucket, create or verify it.
    let previous_bucket =
        previous_bucket.filter(|b| b.stream == bucket::stream_name(&store.bucket));
    let client = match ctx.pool.connect(key, &store).await {
        Ok(c) => c,
        Err(e) => {
            let retry = Retry::Backoff;
            return fail(
                steps,
                spec,
                condition::CONNECTED,
                e.reason(),
                e.to_string(),
                retry,
                previous_bucket,
            );
        }
    };
    let servers = store.redacted_servers.join(",");
    if client.connection_state() != async_nats::connection::State::Connected {
        let e = crate::nats::NatsError::Unreachable {
            servers,
            detail: "the connection is down and reconnecting".into(),
        };
        return fail(
            steps,
            spec,
            condition::CONNECTED,
            e.reason(),
            e.to_string(),
            Retry::Backoff,
            previous_bucket,
        );
    }
    let server = client.server_info();
    let js = async_nats::jetstream::new(client.clone());
    let nats_bucket = Bucket::new(&js, &store.bucket);
    ctx.metrics.nats_request("info");
    let live = match nats_bucket.fetch().await {
        Ok(live) => live,
        Err(e) => {
            return fail(
                steps,
                spec,
                condition::CONNECTED,
                e.reason(),
                e.to_string(),
                Retry::Backoff,
                previous_bucket,
            );
        }
    };
    steps.pass(
        condition::CONNECTED,
        "Connected",
        format!(
            "connected to NATS {} at {servers} with JetStream",
            server.version
        ),
    );
    act(
        ctx,
        steps,
        spec,
        &store,
        &settings,
        key,
        &nats_bucket,
        live,
        previous_bucket,
        server.version.clone(),
        server.cluster.is_some(),
    )
    .await
}

fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
async fn act(
    ctx: &Context,
    mut steps: Steps,
    spec: KeyValueBucketSpec,
    store: &StoreConfig,
    settings: &BucketSettings,
    key: &str,
    nats_bucket: &Bucket<'_>,
    mut live: Option<async_nats::jetstream::stream::Info>,
    previous_bucket: Option<BucketStatus>,
    server_version: String,
    clustered: bool,
) -> Outcome {
    let desired = Desired {
        bucket: &store.bucket,
        owner: key,
        settings,
    };
    let name = &store.bucket;
    let stream = bucket::stream_name(name);
    let mut events = Vec::new();
    let previously_managed = previous_bucket.as_ref().map(|b| b.managed);
    // At most two rounds: a create that races with another creator plans again against the
    // bucket that won.
    for _ in 0..2 {
        let plan = bucket::plan(
            &desired,
            live.as_ref().map(|i| &i.config),
            previously_managed,
            clustered,
        );
        let facts = |info: &async_nats::jetstream::stream::Info, managed: bool| {
            Some(bucket::status_of(
                info,
                managed,
                Some(server_version.clone()),
            ))
        };
        let (retry, bucket_status) = match plan {
            Plan::Create(config) | Plan::Recreate(config) => {
                let recreate = previously_managed == Some(true);
                ctx.metrics.nats_request("create");
                match nats_bucket.create(*config).await {
                    Ok(info) if bucket::is_managed_by(&info.config, key) => {
                        if recreate {
                            events.push((EventType::Warning, "BucketRecreated".into(), format!("bucket {name} was deleted outside the operator; created it again (its data was lost)")));
                        } else {
                            events.push((
                                EventType::Normal,
                                "BucketCreated".into(),
                                format!("created bucket {name} (stream {stream})"),
                            ));
                        }
                        // Worded as the next reconcile will find it, so that it does not write
                        // the status a second time; the BucketCreated Event tells the creation.
                        steps.pass(
                            condition::BUCKET_AVAILABLE,
                            "BucketFound",
                            format!(
                                "bucket {name} exists (stream {stream}); managed by the operator"
                            ),
                        );
                        steps.pass(
                            condition::CONFIG_SYNCED,
                            "InSync",
                            "bucket settings match the Component",
                        );
                        (Retry::Resync, facts(&info, true))
                    }
                    Ok(info) => {
                        // Someone else created it first: verify what they made.
                        live = Some(info);
                        continue;
                    }
                    Err(e) => {
                        steps.fail(condition::BUCKET_AVAILABLE, e.reason(), e.to_string());
                        (Retry::Backoff, None)
                    }
                }
            }
            Plan::Missing => {
                steps.fail(condition::BUCKET_AVAILABLE, "BucketMissing", format!("bucket {name} (stream {stream}) no longer exists; the operator only verified it and does not create it again: recreate it, or set jetstreamkv.io/on-existing: adopt and recreate the Component"));
                (Retry::Backoff, None)
            }
            Plan::NotKeyValue(problem) => {
                steps.fail(condition::BUCKET_AVAILABLE, "NotAKeyValueBucket", problem);
                (Retry::Resync, None)
            }
            Plan::InSync { managed } => {
                let how = if managed {
                    "managed by the operator"
                } else {
                    "verified; not managed by the operator"
                };
                steps.pass(
                    condition::BUCKET_AVAILABLE,
                    "BucketFound",
                    format!("bucket {name} exists (stream {stream}); {how}"),
                );
                steps.pass(
                    condition::CONFIG_SYNCED,
                    "InSync",
                    "bucket settings match the Component",
                );
                let info = live.as_ref();
                (Retry::Resync, info.and_then(|i| facts(i, managed)))
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
                match nats_bucket.update(*config).await {
                    Ok(info) => {
                        let verb = if adopt {
                            "adopted and updated"
                        } else {
                            "updated"
                        };
                        events.push((
                            EventType::Normal,
                            "BucketUpdated".into(),
                            format!("{verb} bucket {name}: {what}"),
                        ));
                        steps.pass(
                            condition::BUCKET_AVAILABLE,
                            "BucketFound",
                            format!(
                                "bucket {name} exists (stream {stream}); managed by the operator"
                            ),
                        );
                        steps.pass(
                            condition::CONFIG_SYNCED,
                            "ConfigUpdated",
                            format!("{verb}: {what}"),
                        );
                        (Retry::Resync, facts(&info, true))
                    }
                    Err(e) => {
                        steps.pass(
                            condition::BUCKET_AVAILABLE,
                            "BucketFound",
                            format!("bucket {name} exists (stream {stream})"),
                        );
                        steps.fail(
                            condition::CONFIG_SYNCED,
                            e.reason(),
                            format!("updating {what} failed: {e}"),
                        );
                        (Retry::Backoff, live.as_ref().and_then(|i| facts(i, true)))
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
                        "cannot change {what} of bucket {name}: NATS cannot change it on an existing bucket; revert the annotation or migrate the data to a new bucket"
                    ),
                    bucket::BlockReason::UnsupportedByServer => format!(
                        "cannot apply {what} to bucket {name}: the server is not clustered; use replicas 1"
                    ),
                };
                steps.pass(
                    condition::BUCKET_AVAILABLE,
                    "BucketFound",
                    format!("bucket {name} exists (stream {stream})"),
                );
                steps.fail(condition::CONFIG_SYNCED, reason.reason(), message);
                (Retry::Resync, live.as_ref().and_then(|i| facts(i, managed)))
            }
        };
        let managed = bucket_status.as_ref().map(|b| b.managed).unwrap_or(false);
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
        let conditions = steps.finish(ready_reason, ready_message, retry);
        return Outcome {
            spec,
            conditions,
            bucket: bucket_status.or(previous_bucket),
            events,
            retry,
        };
    }
    steps.fail(
        condition::BUCKET_AVAILABLE,
        "BucketCreateConflict",
        format!("bucket {name} kept changing while it was being created; retrying"),
    );
    Outcome {
        conditions: steps.finish("", String::new(), Retry::Backoff),
        spec,
        bucket: None,
        events,
        retry: Retry::Backoff,
    }
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
    if previous.is_none_or(|p| p.spec != outcome.spec) {
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
    if status != previous_status {
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
        .map_err(|source| ReportError {
            what: "KeyValueBucket status",
            source,
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
    let current = component.annotations();
    if wanted.iter().any(|(k, v)| current.get(*k) != Some(v)) {
        let patch = json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name, "namespace": namespace, "annotations": wanted},
        });
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
        let event = Event {
            type_,
            reason,
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = component.object_ref(&());
        match ctx.recorder.publish(&event, &reference).await {
            Ok(()) => ctx.metrics.api_write("event"),
            Err(e) => tracing::warn!(component = %key, error = %e, "could not publish an Event"),
        }
    }
    Ok(())
}

/// The Event reason for a Ready transition: the Ready reason itself, grouped where several
/// reasons mean the same thing to someone reading `kubectl describe`.
fn event_reason(reason: &str) -> String {
    match reason {
        "BucketManaged" => "BucketReady",
        "NatsUnavailable" | "NatsTimeout" => "NatsUnavailable",
        "ConfigMismatch" | "DataLossRefused" | "ImmutableFieldChanged" | "UnsupportedByServer" => {
            "ConfigDrift"
        }
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
