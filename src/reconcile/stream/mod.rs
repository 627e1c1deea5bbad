//! The steps of a `pubsub.jetstream` Component, run by [`super::run`] through
//! [`super::kind::Streams`]: **read** (the Secrets it names, the Subscriptions of its namespace,
//! its `JetStreamStream`) → **validate** ([`crate::validate::validate_pubsub`], the server
//! policy) → **subjects** ([`topics`], pure: the streams' names, discovered topics, the
//! namespace prefix as daprd applies it) → **execute** ([`execute`], NATS only: the plan of
//! [`crate::pubsub::stream::plan`] carried out; create, or add subjects, never remove them;
//! Dapr's consumers are never touched) → **status** ([`status`], pure) → **report** ([`write`]:
//! the `JetStreamStream`, the Component's summary annotations and finalizer, Events).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};

use super::context::Context;
use super::index::WrittenStream;
use super::report::{self, ReportError};
use crate::crd::ReconcileStatus;
use crate::dapr::Component;
use crate::failure::Problem;
use crate::pubsub::Subscription;
use crate::pubsub::resource::{JetStreamStream, JetStreamStreamStatus, StreamStatus};

pub mod execute;
pub mod status;
pub mod topics;

pub use status::StreamOutcome;

/// The declarative Subscriptions of the namespace; none when Dapr's Subscription CRD is not
/// installed. Err: they could not be read (the stream is not changed without them).
pub(super) async fn subscriptions(
    ctx: &Context,
    namespace: &str,
) -> Result<Vec<Subscription>, Problem> {
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
pub(crate) async fn write(
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
        stream: outcome.stream.as_ref().map(StreamStatus::shown),
        dead_letter_stream: outcome.dead_letter_stream.as_ref().map(StreamStatus::shown),
        plan: outcome.plan.clone(),
    };
    let written =
        report::write_owned::<JetStreamStream>(component, &key, ctx, previous, decided, status)
            .await?;
    Ok(written.reconcile.conditions)
}
