//! The watches of one scope (all namespaces, or one): Components (what triggers a reconcile,
//! filtered by [`component_predicate`]), Secrets (metadata only, mapped to the Components that
//! name them, through [`SecretUsers`]) and the operator's KeyValueBuckets (cached, feeding the index, triggering nothing).

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource as _, ResourceExt as _};

use super::secret_users::SecretUsers;
use super::sweeper::{self, Held};
use super::{Config, Shared, trim};
use crate::crd::KeyValueBucket;
use crate::dapr::Component;
use crate::reconcile::index::{Index, Owned};
use crate::reconcile::{Context, object_key};
use crate::settings::STATUS_ANNOTATIONS;

/// One scope's controller, its context, and its Component cache.
pub struct Built {
    pub controller: Controller<DeserializeGuard<Component>>,
    pub context: Arc<Context>,
    pub components: Store<DeserializeGuard<Component>>,
}

fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The controller of one scope: its watches and its context.
pub fn build(scope: Option<String>, config: &Config, shared: Shared) -> Built {
    let Shared {
        client,
        pool,
        recorder,
        metrics,
        index,
        policy,
        share,
        schema,
        heal,
    } = shared;
    let (components, components_writer) = reflector::store();
    let secret_users = Arc::new(SecretUsers::default());
    let users = secret_users.clone();
    let held = Held {
        pool: pool.clone(),
        index: index.clone(),
        metrics: metrics.clone(),
    };
    let kvbs = bucket_cache(&client, &scope, &index);
    let streams = stream_cache(&client, &scope, &index);
    // A Component deleted frees its place in its namespace's quota: the Components waiting for
    // one are looked at again at once.
    let (freed, freed_places) = futures::channel::mpsc::unbounded();
    let waiting = (kvbs.clone(), streams.clone());
    // Listed page by page (500 a page, from the most recent state): a list "from any version"
    // is served from the API server's cache in one piece, which at 100,000 Components is one
    // response of every object whole. Each object is trimmed (`trim`) before it is cached.
    let component_stream = watcher(
        api::<DeserializeGuard<Component>>(&client, &scope),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|event| event.modify(trim::component))
    .reflect(components_writer)
    // A deleted Component gets no reconcile: let go of what we hold for it here.
    .inspect(move |event| {
        if let Ok(event) = event {
            users.event(event);
        }
        if let Ok(watcher::Event::Delete(c)) = event {
            sweeper::forget_deleted(&object_key(c), &held);
            for waiting in waiting_for_quota(&waiting.0, &waiting.1, c.namespace().as_deref()) {
                let _ = freed.unbounded_send(waiting);
            }
        }
    })
    .applied_objects()
    .predicate_filter(component_predicate, Default::default());

    let secret_stream = secret_stream(&client, &scope, config.watch_secrets);

    let subscription_stream = subscription_stream(&client, &scope, config.watch_subscriptions);

    let controller = Controller::for_stream(component_stream, components.clone())
        .watches_stream(secret_stream, move |secret| {
            secret_users.users(&secret.namespace().unwrap_or_default(), &secret.name_any())
        })
        .watches_stream(subscription_stream, |subscription| {
            component_of_subscription(&subscription)
        })
        .reconcile_on(freed_places)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency));

    let context = Arc::new(Context {
        client,
        kvbs,
        streams,
        pool,
        recorder,
        metrics,
        index,
        resync: config.resync,
        max_backoff: config.max_backoff,
        synced: Arc::default(),
        components: components.clone(),
        policy,
        share,
        mode: config.mode,
        schema,
        operator_namespace: config.operator_namespace.clone(),
        rights_checked: Arc::default(),
        heal,
    });
    Built {
        controller,
        context,
        components,
    }
}

/// The Components of `namespace` whose KeyValueBucket or JetStreamStream says they wait for a
/// place in the namespace's quota.
fn waiting_for_quota(
    kvbs: &Store<KeyValueBucket>,
    streams: &Store<crate::pubsub::JetStreamStream>,
    namespace: Option<&str>,
) -> Vec<ObjectRef<DeserializeGuard<Component>>> {
    let Some(namespace) = namespace else {
        return Vec::new();
    };
    let waits = |meta: &kube::core::ObjectMeta, ready: Option<&str>| {
        (meta.namespace.as_deref() == Some(namespace) && ready == Some(QUOTA_EXCEEDED))
            .then(|| ObjectRef::new(meta.name.as_deref().unwrap_or_default()).within(namespace))
    };
    let ready = crate::crd::ConditionType::Ready;
    let buckets = kvbs.state().into_iter().filter_map(|kvb| {
        waits(
            kvb.meta(),
            kvb.condition(ready.as_str()).map(|c| c.reason.as_str()),
        )
    });
    let streams = streams
        .state()
        .into_iter()
        .filter_map(|jss| waits(jss.meta(), jss.condition(ready).map(|c| c.reason.as_str())));
    buckets.chain(streams).collect()
}

/// The reason of a Component waiting for a place in its namespace's quota.
const QUOTA_EXCEEDED: &str = "QuotaExceeded";

/// Our KeyValueBuckets are cached (previous status, other users of a bucket) but trigger
/// nothing: every write to them is ours, and one deleted by hand is re-created at the next
/// resync. Triggering on them would cost a second reconcile for every new Component. The watch
/// runs on its own task; the store is what it fills.
fn bucket_cache(
    client: &Client,
    scope: &Option<String>,
    index: &Arc<Index>,
) -> Store<KeyValueBucket> {
    let (kvbs, kvbs_writer) = reflector::store();
    let mut feed = UseFeed::new(index, scope);
    let kvb_cache = watcher(
        api::<KeyValueBucket>(client, scope),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|event| event.modify(trim::key_value_bucket))
    .reflect(kvbs_writer)
    .for_each(move |event| {
        if let Ok(event) = event {
            feed.event(&event);
        }
        future::ready(())
    });
    tokio::spawn(kvb_cache);
    kvbs
}

/// Our JetStreamStreams, cached as the KeyValueBuckets are (the previous status, read without a
/// request; other users of a stream); one deleted by hand is forgotten, so the next reconcile
/// writes it again.
fn stream_cache(
    client: &Client,
    scope: &Option<String>,
    index: &Arc<Index>,
) -> Store<crate::pubsub::JetStreamStream> {
    let (streams, writer) = reflector::store();
    let mut feed = UseFeed::new(index, scope);
    let cache = watcher(
        api::<crate::pubsub::JetStreamStream>(client, scope),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|event| event.modify(trim::jet_stream_stream))
    .reflect(writer)
    .for_each(move |event| {
        if let Ok(event) = event {
            if let watcher::Event::Delete(jss) = &event {
                feed.index
                    .forget_written::<crate::pubsub::JetStreamStream>(&object_key(jss));
            }
            feed.event(&event);
        }
        future::ready(())
    });
    tokio::spawn(cache);
    streams
}

/// Secrets: metadata only; the data is read when a Component that uses the Secret reconciles.
/// Without list/watch rights (--watch-secrets=false) a rotation is seen at the next resync.
fn secret_stream(
    client: &Client,
    scope: &Option<String>,
    watch: bool,
) -> BoxStream<'static, Result<PartialObjectMeta<Secret>, watcher::Error>> {
    if watch {
        watcher(
            api::<PartialObjectMeta<Secret>>(client, scope),
            watcher::Config::default(),
        )
        .default_backoff()
        .map_ok(|event| event.modify(trim::secret_meta))
        .touched_objects()
        .boxed()
    } else {
        futures::stream::pending().boxed()
    }
}

/// Dapr's declarative Subscriptions: each one re-reconciles the pub/sub Component it names
/// (same namespace), whose stream may need its topic. Nothing of them is cached: the
/// reconcile lists them when it runs.
fn subscription_stream(
    client: &Client,
    scope: &Option<String>,
    watch: bool,
) -> BoxStream<'static, Result<crate::pubsub::Subscription, watcher::Error>> {
    if watch {
        watcher(
            api::<crate::pubsub::Subscription>(client, scope),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects()
        .boxed()
    } else {
        futures::stream::pending().boxed()
    }
}

/// The pub/sub Component a Subscription names (`spec.pubsubname`, its own namespace).
fn component_of_subscription(
    subscription: &crate::pubsub::Subscription,
) -> Option<ObjectRef<DeserializeGuard<Component>>> {
    let pubsub = &subscription.spec.pubsubname;
    if pubsub.is_empty() {
        return None;
    }
    Some(ObjectRef::new(pubsub).within(&subscription.namespace().unwrap_or_default()))
}

/// Feeds the index with what the KeyValueBuckets or JetStreamStreams of one scope say about the
/// buckets or streams they reached.
struct UseFeed<O> {
    index: Arc<Index>,
    scope: Option<String>,
    /// During a re-list: the keys listed so far.
    relisted: Option<HashSet<String>>,
    object: std::marker::PhantomData<fn(&O)>,
}

impl<O: Owned> UseFeed<O> {
    fn new(index: &Arc<Index>, scope: &Option<String>) -> Self {
        Self {
            index: index.clone(),
            scope: scope.clone(),
            relisted: None,
            object: std::marker::PhantomData,
        }
    }

    fn event(&mut self, event: &watcher::Event<O>) {
        match event {
            watcher::Event::Apply(o) => self.index.seen(&object_key(o), o),
            watcher::Event::Delete(o) => self.index.gone::<O>(&object_key(o)),
            watcher::Event::Init => self.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(o) => {
                let key = object_key(o);
                self.index.seen(&key, o);
                self.relisted.get_or_insert_default().insert(key);
            }
            watcher::Event::InitDone => {
                let seen = self.relisted.take().unwrap_or_default();
                let prefix = self.scope.as_ref().map(|ns| format!("{ns}/"));
                self.index.relisted::<O>(
                    |key| prefix.as_ref().is_none_or(|p| key.starts_with(p.as_str())),
                    &seen,
                );
            }
        }
    }
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
            if k.starts_with("jetstreamkv.io/") && !STATUS_ANNOTATIONS.contains(&k.as_str()) {
                (k, v).hash(&mut h);
            }
        }
    }
    Some(h.finish())
}
