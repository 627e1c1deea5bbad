//! The pipeline of a `pubsub.jetstream` Component: the same steps as a state store's, on its
//! streams. **read** (the Secrets it names, the Subscriptions of its namespace, its
//! `JetStreamStream`) → **validate** ([`crate::validate::validate_pubsub`], the server policy) →
//! **subjects** ([`topics`], pure: the streams' names, discovered topics, the namespace prefix as
//! daprd applies it) → **execute** ([`execute`], NATS only: the plan of
//! [`crate::pubsub::stream::plan`] carried out; create, or add subjects, never remove them;
//! Dapr's consumers are never touched) → **status** ([`status`], pure) → **report** (the
//! `JetStreamStream`, the Component's summary annotations and finalizer, Events).

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;

use super::context::Context;
use super::index::WrittenStream;
use super::report::{self, ReportError};
use crate::crd::{ConditionType, ReconcileStatus};
use crate::dapr::Component;
use crate::failure::Problem;
use crate::pubsub::Subscription;
use crate::pubsub::resource::{JetStreamStream, JetStreamStreamStatus};
use crate::validate::validate_pubsub;

pub mod execute;
pub mod status;
pub mod topics;

pub use status::StreamOutcome;

/// Reconciles one `pubsub.jetstream` Component (`key` is `namespace/name`).
pub async fn reconcile(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError> {
    let started = Instant::now();
    let namespace = component.namespace().unwrap_or_default();
    super::delete::other_kind_gone(component, key, ctx).await?;

    // Read (the JetStreamStream from what was written or the cache: no request).
    let previous = ctx.previous::<JetStreamStream>(key, component);
    // Validate.
    let validation = super::validated(ctx, component, validate_pubsub).await;
    // Subjects, when valid.
    let valid = validation.valid();
    let prepared = match valid {
        Some((config, settings)) => {
            let subscriptions = subscriptions(ctx, &namespace).await;
            let name = component.name_any();
            let read = subscriptions.as_deref();
            Some(topics::prepare(&namespace, &name, config, settings, read))
        }
        None => None,
    };
    // Execute, when the subjects are known.
    let progress = match (valid, &prepared) {
        (Some(valid), Some(p)) => match &p.subjects {
            Ok(found) => Some(execute::execute(ctx, key, valid, p, found, previous.as_ref()).await),
            Err(_) => None,
        },
        _ => None,
    };
    // Status.
    let outcome = status::decide(
        key,
        previous.as_ref(),
        &validation,
        prepared.as_ref(),
        progress.as_ref(),
    );
    if !outcome.credentials_resolved() {
        ctx.pool.release(key);
    }
    // Report.
    let conditions = write(ctx, component, previous.as_ref(), &outcome).await?;

    let ready = conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str());
    let failed_reason = ready
        .filter(|c| c.status != "True")
        .map(|c| c.reason.as_str());
    ctx.metrics.reconciled(started.elapsed(), failed_reason);
    ctx.metrics
        .set_ready(key, ready.map(|c| c.status == "True"));
    tracing::debug!(ready = ?ready.map(|c| (&c.status, &c.reason)), elapsed = ?started.elapsed(), "reconciled");
    Ok(super::requeue(ctx, key, outcome.retry()))
}

/// The declarative Subscriptions of the namespace; none when Dapr's Subscription CRD is not
/// installed. Err: they could not be read (the stream is not changed without them).
async fn subscriptions(ctx: &Context, namespace: &str) -> Result<Vec<Subscription>, Problem> {
    let api: Api<Subscription> = Api::namespaced(ctx.client.clone(), namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(topics::subscriptions_unreadable(namespace, &e.to_string())),
    }
}

/// Writes what changed ([`report::write_owned`]): the JetStreamStream (spec, then status), the
/// Component's summary annotations and finalizer, the Events, and the Component's warnings when
/// what was understood of it changed. Returns the conditions written.
pub(super) async fn write(
    ctx: &Context,
    component: &Component,
    previous: Option<&WrittenStream>,
    outcome: &StreamOutcome,
) -> Result<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>, ReportError> {
    let key = super::object_key(component);
    let decided = report::Decided {
        spec: &outcome.spec,
        wants_finalizer: outcome.wants_finalizer,
        done: &outcome.events,
        warnings: &outcome.warnings,
    };
    let status = |previous: &JetStreamStreamStatus, generation| JetStreamStreamStatus {
        reconcile: ReconcileStatus::merged(
            &previous.reconcile,
            &outcome.conditions(),
            generation,
            component.metadata.generation,
            Time(jiff::Timestamp::now()),
        ),
        topics: outcome.topics.clone(),
        stream: outcome.stream.clone(),
        dead_letter_stream: outcome.dead_letter_stream.clone(),
    };
    let written =
        report::write_owned::<JetStreamStream>(component, &key, ctx, previous, decided, status)
            .await?;
    Ok(written.reconcile.conditions)
}
