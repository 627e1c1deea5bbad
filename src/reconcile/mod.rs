//! The reconciler: Dapr `Component` → NATS KV bucket → `KeyValueBucket` status, or, for a
//! `pubsub.jetstream` Component, → streams → `JetStreamStream` status. One driver, [`run`], runs
//! both kinds ([`kind::Kind`]: [`kind::Bucket`], [`kind::Streams`], whose steps are in
//! [`stream`]). A Component that changes type loses the other kind's object at once; the index,
//! the context and the report are generic over the object ([`index::Owned`]).
//!
//! One reconcile is a pipeline, one module per step (for a bucket; a pub/sub's are in [`stream`]):
//! **mint** ([`mint`]: the user a Component asks the operator to mint, written to its Secret) →
//! **read** ([`read`]: the Secrets it names, what was written before) → **validate**
//! ([`crate::validate`], pure) → **plan** ([`crate::nats::bucket::plan`], pure) and **execute**
//! ([`execute`]: NATS only) → **status** ([`status`], pure: conditions, Ready's reason, Stalled or
//! Reconciling, Events, annotations and finalizer) → **report** ([`report`]: Kubernetes writes
//! only, of what changed). Per-object state lives in the [`index`]; Components being deleted or
//! no longer ours go through [`delete`].

pub mod audit;
pub mod context;
mod delete;
pub mod execute;
pub(crate) mod identity;
pub mod index;
pub mod kind;
pub mod mint;
mod read;
pub mod report;
pub mod status;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;

pub use context::Context;
pub use report::ReportError;
pub use status::FINALIZER;

use kind::Kind;

use crate::dapr::Component;
use crate::failure::Retry;
use crate::metrics::ObjectState;
use crate::validate::{
    NamesOnServer, Servers, Validation, Values, check_quota, check_server_policy,
};

/// Reconciles one Component.
pub async fn reconcile(
    obj: Arc<DeserializeGuard<Component>>,
    ctx: Arc<Context>,
) -> Result<Action, ReportError> {
    // Right after a start the Component watch can deliver before the KeyValueBuckets are listed:
    // without them every status would look new and be written again, with an Event. (Not
    // `Store::wait_until_ready` here: its DelayedInit wakes only the last of several waiters.)
    if !ctx.is_synced() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    if ctx.policy.as_ref().is_some_and(|p| !p.is_synced()) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    // Fair share: a namespace whose share of the workers is taken waits outside the workers.
    let namespace = kube::Resource::meta(obj.as_ref())
        .namespace
        .clone()
        .unwrap_or_default();
    let Some(_slot) = ctx.share.try_acquire(&namespace) else {
        ctx.metrics.fair_share_deferred();
        return Ok(Action::requeue(context::jitter(
            Duration::from_millis(300),
            0.5,
        )));
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
    reconcile_component(component, &key, &ctx).await
}

/// One reconcile, in one span that names the Component and its type: every log line of it
/// carries them.
#[tracing::instrument(name = "reconcile", skip_all, fields(component = %key, type_ = %component.spec.type_))]
async fn reconcile_component(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError> {
    // A kind whose CRD lacks a field this binary needs is not acted on (nor any kind, while a
    // policy CRD enforced is outdated): see `crate::schema`. Said once per CRD, not per object.
    let crd = if component.is_jetstream_pubsub() {
        Some(crate::schema::Crd::JetStreamStream)
    } else if component.is_jetstream_state_store() {
        Some(crate::schema::Crd::KeyValueBucket)
    } else {
        None
    };
    if let Some(why) = crd.and_then(|crd| ctx.schema.refuses(crd)) {
        tracing::debug!(%why, "not acted on while the CRD is outdated");
        return Ok(Action::requeue(context::jitter(
            Duration::from_secs(5),
            0.2,
        )));
    }
    if component.metadata.deletion_timestamp.is_some() {
        return delete::finalize(component, key, ctx).await;
    }
    if component.is_jetstream_pubsub() {
        return run::<kind::Streams>(component, key, ctx).await;
    }
    if !component.is_jetstream_state_store() {
        return delete::forget(component, key, ctx).await;
    }
    run::<kind::Bucket>(component, key, ctx).await
}

/// The pipeline of a Component of kind `K`, the same for both: read → validate → execute (NATS
/// only) → status (pure) → report (Kubernetes writes of what changed) → when to look again.
async fn run<K: Kind>(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError>
where
    kind::ValidationOf<K>: NamesOnServer,
{
    let started = Instant::now();
    // A Component that changed type: the other kind's object goes first.
    delete::other_kind_gone(component, key, ctx).await?;
    // Read (what was written, from memory or the cache: no request).
    let previous = ctx.previous::<K::Object>(key, component);
    // Mint the user the Component asks for, then validate (reading it like any Secret).
    let minting = mint::prepare(ctx, component, key).await;
    let mut validation = validated(ctx, component, K::validate).await;
    if let Some(problem) = minting {
        validation.findings.problems.insert(0, problem);
    }
    within_quota(ctx, component, &mut validation);
    // Execute.
    let progress = K::execute(ctx, component, key, &validation, previous.as_ref()).await;
    // Status.
    let outcome = K::decide(key, previous.as_ref(), &validation, &progress);
    if !K::credentials_resolved(&outcome) {
        // No usable credentials (a Secret gone, rotated to something invalid, an expired JWT):
        // the connection made with the old ones is not this Component's any more.
        ctx.pool.release(key);
    }
    // Report.
    let conditions = K::report(ctx, component, key, previous.as_ref(), &outcome).await?;

    let ready = conditions
        .iter()
        .find(|c| c.type_ == crate::crd::ConditionType::Ready.as_str());
    let failed_reason = ready
        .filter(|c| c.status != "True")
        .map(|c| c.reason.as_str());
    ctx.metrics.reconciled(started.elapsed(), failed_reason);
    let stalled = conditions
        .iter()
        .any(|c| c.type_ == crate::crd::ConditionType::Stalled.as_str() && c.status == "True");
    ctx.metrics.set_state(
        key,
        ready.map(|c| ObjectState {
            kind: <K::Object as kube::Resource>::kind(&()),
            ready: c.status == "True",
            reason: c.reason.clone(),
            stalled,
        }),
    );
    if ctx.metrics.usage_enabled() {
        let usage = K::usage(&outcome);
        let kind = <K::Object as kube::Resource>::kind(&());
        ctx.metrics
            .set_usage(key, (!usage.is_empty()).then_some((&*kind, &usage[..])));
    }
    tracing::debug!(ready = ?ready.map(|c| (&c.status, &c.reason)), elapsed = ?started.elapsed(), "reconciled");
    Ok(requeue(ctx, key, K::retry(&outcome)))
}

/// Reads the Secrets the Component names, validates it with their values (`validate`: its
/// kind's validation), then holds the servers to the admin's policy: before any DNS lookup or
/// connection. The same for every kind, in reconcile and in deletion.
pub(crate) async fn validated<C: Servers, S>(
    ctx: &Context,
    component: &Component,
    validate: fn(&Component, Values<'_>, i64) -> Validation<C, S>,
) -> Validation<C, S>
where
    Validation<C, S>: NamesOnServer,
{
    let values = read::secret_values(ctx, component).await;
    let now = jiff::Timestamp::now().as_second();
    let mut validation = validate(component, Values::Read(&values), now);
    if let Some(policy) = &ctx.policy {
        check_server_policy(&mut validation, component, |ns, url, creds, names| {
            policy.decide(ns, url, creds, names)
        });
    }
    validation
}

/// Holds the Component to its namespace's quota, before any NATS call (not on deletion: a
/// Component refused by its quota is still deleted).
fn within_quota<C, S>(ctx: &Context, component: &Component, validation: &mut Validation<C, S>) {
    let Some(policy) = &ctx.policy else {
        return;
    };
    let namespace = component.metadata.namespace.as_deref().unwrap_or_default();
    let quotas = policy.quotas(namespace);
    if !quotas.is_empty() {
        let demands = ctx.namespace_demands(namespace);
        check_quota(validation, component, &quotas, &demands);
    }
}

/// When to look again: a success or a wait for a change also clears the back-off.
fn requeue(ctx: &Context, key: &str, retry: Retry) -> Action {
    match retry {
        Retry::Resync => {
            ctx.index.succeeded(key);
            Action::requeue(ctx.resync())
        }
        Retry::Backoff => Action::requeue(ctx.backoff(key)),
        Retry::AwaitChange => {
            ctx.index.succeeded(key);
            Action::await_change()
        }
    }
}

/// After an API write failed: back off.
pub fn error_policy(
    obj: Arc<DeserializeGuard<Component>>,
    error: &ReportError,
    ctx: Arc<Context>,
) -> Action {
    let key = object_key(obj.as_ref());
    tracing::warn!(component = %key, error = %error, "reconcile failed; retrying");
    ctx.metrics.api_write_failed();
    Action::requeue(ctx.backoff(&key))
}

/// `namespace/name`: how the index, the pool and the metrics name an object.
pub fn object_key<K: kube::Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}
