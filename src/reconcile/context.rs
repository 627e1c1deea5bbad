//! What every reconcile shares: the clients, the caches, the index of per-object state, and the
//! timing of retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use rand::Rng;

use super::index::{Index, Owned, Written};
use crate::crd::KeyValueBucket;
use crate::dapr::Component;
use crate::metrics::Metrics;
use crate::nats::pool::ConnectionPool;
use crate::pubsub::JetStreamStream;

/// Shared by every reconcile of one watched scope.
pub struct Context {
    pub client: Client,
    /// The scope's KeyValueBuckets (the previous status; whether ours still exists).
    pub kvbs: Store<KeyValueBucket>,
    /// The scope's JetStreamStreams (the previous status; whether ours still exists).
    pub streams: Store<JetStreamStream>,
    pub pool: Arc<ConnectionPool>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Per-Component state, shared by every scope.
    pub index: Arc<Index>,
    /// Period of the drift check after success (±10% jitter).
    pub resync: Duration,
    /// Cap of the per-object exponential back-off after transient errors.
    pub max_backoff: Duration,
    /// Both caches have been listed: reconciles wait for it.
    pub synced: Arc<AtomicBool>,
    /// The scope's Components, as cached (a namespace's quota usage is counted from them).
    pub components: Store<kube::core::DeserializeGuard<Component>>,
    /// The admin's NatsServerPolicies, when enforced.
    pub policy: Option<crate::policy::Enforcer>,
    /// Workers held per namespace (fair share).
    pub share: Arc<crate::fair_share::NamespaceShare>,
    /// Enforce, or audit: plans shown, never carried out.
    pub mode: super::audit::Mode,
    /// Which kinds the installed CRDs let the operator act on.
    pub schema: Arc<crate::schema::SchemaGate>,
    /// The operator's own namespace: where the Secrets of provisioning identities are.
    pub operator_namespace: String,
    /// Per Component, the credentials and bucket whose rights were last checked and found
    /// enough (see [`super::identity::app_rights`]): checked again only when they change.
    pub rights_checked: Arc<std::sync::Mutex<std::collections::HashMap<String, RightsChecked>>>,
    /// With `--heal`: restarts the workloads that load a Component when it turns Ready.
    pub heal: Option<Arc<crate::heal::Healer>>,
}

/// What a check of an app's rights was made for: its connection's identity and the bucket.
pub type RightsChecked = (crate::nats::pool::ConnectionKey, String);

impl Context {
    /// Whether the scope's caches have been listed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// What the execute steps use of this context: the connections and the metrics.
    pub fn nats(&self) -> super::execute::Nats<'_> {
        super::execute::Nats {
            pool: &self.pool,
            metrics: &self.metrics,
            mode: self.mode,
            provisioning: Some(self),
        }
    }

    /// The next back-off of `key`: 0.5s doubling with each failure in a row, capped, ±20%.
    pub fn backoff(&self, key: &str) -> Duration {
        let n = self.index.failed(key);
        let base = Duration::from_millis(500).saturating_mul(1u32 << (n - 1).min(16));
        jitter(base.min(self.max_backoff), 0.2)
    }

    /// The next drift check: the resync period ±10%.
    pub fn resync(&self) -> Duration {
        jitter(self.resync, 0.1)
    }

    /// The Component's object of kind `K` (KeyValueBucket, JetStreamStream) as last written by
    /// us or seen by the watch, whichever is newer.
    pub fn previous<K: Owned>(
        &self,
        key: &str,
        component: &Component,
    ) -> Option<Written<K::Spec, K::Status>> {
        if let Some(w) = self.index.written::<K>(key) {
            return Some(w);
        }
        Some(self.cached::<K>(component)?.as_written())
    }

    /// The Component `key` is gone or not ours: its rights check is history.
    pub fn forget_rights(&self, key: &str) {
        self.rights_checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The quota demands of the Components of `namespace` in the cache (see
    /// [`crate::quota::admit`]): `(namespace/name, creation time in seconds, demand)`.
    pub fn namespace_demands(&self, namespace: &str) -> Vec<(String, i64, crate::quota::Demand)> {
        self.components
            .state()
            .iter()
            .filter_map(|guard| guard.0.as_ref().ok())
            .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|c| {
                let demand = crate::quota::Demand::of(c)?;
                let created = c
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_second());
                Some((super::object_key(c), created, demand))
            })
            .collect()
    }

    /// The Component's object of kind `K` in the cache.
    pub fn cached<K: Owned>(&self, component: &Component) -> Option<Arc<K>> {
        K::cache(self).get(&same_name(component))
    }
}

/// The object of the Component's name and namespace.
fn same_name<K>(component: &Component) -> ObjectRef<K>
where
    K: kube::Resource<DynamicType = ()>,
{
    use kube::ResourceExt as _;
    ObjectRef::new(&component.name_any()).within(&component.namespace().unwrap_or_default())
}

/// `d` ±`fraction`.
pub fn jitter(d: Duration, fraction: f64) -> Duration {
    let f = rand::rng().random_range((1.0 - fraction)..(1.0 + fraction));
    d.mul_f64(f)
}

/// Why a Secret a `NatsServerPolicy` names in the operator's namespace could not be read.
#[derive(Debug)]
pub enum AdminSecretError {
    /// What the cluster admin must fix (the Secret is missing, or the operator may not read it).
    Unusable(String),
    /// The API server could not answer now: retried.
    Unavailable(kube::Error),
}

/// Reads the Secret `name` of the operator's namespace that a `NatsServerPolicy` names (the
/// provisioning identity, a signing key), its data as bytes.
pub async fn admin_secret(
    ctx: &Context,
    name: &str,
) -> Result<std::collections::BTreeMap<String, Vec<u8>>, AdminSecretError> {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    match secrets.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) => Err(AdminSecretError::Unusable(
            "their Secret is not in the operator's namespace".into(),
        )),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(AdminSecretError::Unusable(
            "the operator may not read their Secret (grant it get on that Secret in its namespace)"
                .into(),
        )),
        Err(e) => Err(AdminSecretError::Unavailable(e)),
    }
}
