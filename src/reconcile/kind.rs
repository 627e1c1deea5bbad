//! The two kinds the reconciler provisions for, behind one narrow trait with static dispatch:
//! a state store's KV bucket ([`Bucket`]) and a pub/sub's streams ([`Streams`]). A kind supplies
//! only what differs: its validation, what NATS does for it (execute, returning a value), what
//! status says about that (decide, pure) and how its object is written; [`super::run`] does the
//! rest, once for both.

use std::future::Future;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt as _;

use super::context::Context;
use super::delete::{self, Deletion};
use super::execute::{self, BucketStep, Nats, Progress};
use super::index::{Owned, Written};
use super::report::{self, ReportError};
use super::status::{self, Note, Outcome, Reason};
use super::stream::execute::StreamStep;
use super::stream::topics::{self, Prepared};
use super::stream::{self as streams, StreamOutcome};
use crate::crd::{ConditionType, KeyValueBucket};
use crate::dapr::{Component, StoreConfig};
use crate::failure::{Problem, Retry};
use crate::metrics::StreamUsage;
use crate::nats::app_rights::Denied;
use crate::nats::stream::planned::Planned;
use crate::pubsub::{JetStreamStream, PubsubConfig, StreamSettings, Subscription};
use crate::settings::{BucketSettings, DeletionPolicy};
use crate::validate::{Servers, Validation, Values};

/// What a kind's validation, execute and decide steps work on.
pub type ValidationOf<K> = Validation<<K as Kind>::Config, <K as Kind>::Settings>;
/// What the operator last wrote of a kind's object.
pub type WrittenOf<K> =
    Written<<<K as Kind>::Object as Owned>::Spec, <<K as Kind>::Object as Owned>::Status>;

/// What differs between a state store's bucket and a pub/sub's streams.
pub trait Kind {
    /// The object that reports it: KeyValueBucket or JetStreamStream.
    type Object: Owned;
    /// The condition that says whether what it provisions exists.
    const AVAILABLE: ConditionType;
    /// The connection config validation gives.
    type Config: Servers;
    /// The settings from the annotations.
    type Settings;
    /// What the execute step found and did (NATS only), as a value.
    type Progress;
    /// What decide made of it, before anything is written.
    type Outcome;

    /// The kind's validation (pure; shared with `check` and the webhook).
    fn validate(component: &Component, values: Values<'_>, now: i64) -> ValidationOf<Self>;

    /// What NATS does for a valid Component (and, for a pub/sub, the Subscriptions it reads).
    fn execute<'a>(
        ctx: &'a Context,
        component: &'a Component,
        key: &'a str,
        validation: &'a ValidationOf<Self>,
        previous: Option<&'a WrittenOf<Self>>,
    ) -> impl Future<Output = Self::Progress> + Send + 'a;

    /// What status says about it (pure).
    fn decide(
        key: &str,
        previous: Option<&WrittenOf<Self>>,
        validation: &ValidationOf<Self>,
        progress: &Self::Progress,
    ) -> Self::Outcome;

    /// Writes what changed; returns the conditions written.
    fn report<'a>(
        ctx: &'a Context,
        component: &'a Component,
        key: &'a str,
        previous: Option<&'a WrittenOf<Self>>,
        outcome: &'a Self::Outcome,
    ) -> impl Future<Output = Result<Vec<Condition>, ReportError>> + Send + 'a;

    /// Whether the credentials were resolved (else the connection made with older ones is not
    /// this Component's any more).
    fn credentials_resolved(outcome: &Self::Outcome) -> bool;

    /// When to look again.
    fn retry(outcome: &Self::Outcome) -> Retry;

    /// How full the bucket or streams are, as the server reported them (empty when it was not
    /// reached), for the opt-in usage metrics.
    fn usage(outcome: &Self::Outcome) -> Vec<StreamUsage>;

    /// Whether the Component's annotations ask for its bucket or streams to be deleted with it.
    fn deletes(component: &Component) -> bool;

    /// Deletes what was provisioned for a Component being deleted, when that is safe: what the
    /// operator made for it and no other Component uses. The Event to publish, or why the
    /// deletion waits.
    fn delete_provisioned<'a>(
        ctx: &'a Context,
        component: &'a Component,
        key: &'a str,
    ) -> impl Future<Output = Result<Deletion, Problem>> + Send + 'a;

    /// Audit mode: the plans a status shows (what enforce mode would do).
    fn show_plan(outcome: &mut Self::Outcome, plan: Vec<Planned>);

    /// What status says while a deletion waits (pure): the finalizer kept, `DeletionPending`.
    fn deletion_pending(
        key: &str,
        previous: Option<&WrittenOf<Self>>,
        failure: &Problem,
    ) -> Self::Outcome;

    /// The Event of a Component deleted with deletion-policy retain.
    fn retained() -> Note;
}

/// A `state.jetstream` Component's KV bucket.
pub enum Bucket {}

impl Kind for Bucket {
    type Object = KeyValueBucket;
    const AVAILABLE: ConditionType = ConditionType::BucketAvailable;
    type Config = StoreConfig;
    type Settings = BucketSettings;
    /// What NATS did, and a right the Component's own user lacks (checked once the bucket is
    /// usable).
    type Progress = Option<(Progress<BucketStep>, Option<Denied>)>;
    type Outcome = Outcome;

    fn validate(component: &Component, values: Values<'_>, now: i64) -> ValidationOf<Self> {
        crate::validate::validate(component, values, now)
    }

    async fn execute<'a>(
        ctx: &'a Context,
        _component: &'a Component,
        key: &'a str,
        validation: &'a ValidationOf<Self>,
        previous: Option<&'a WrittenOf<Self>>,
    ) -> Self::Progress {
        let progress = bucket_progress(ctx.nats(), key, validation, previous).await?;
        let (store, _) = validation.valid()?;
        let usable = matches!(
            &progress,
            Progress::Connected { step, .. } if matches!(
                **step,
                BucketStep::Created { .. } | BucketStep::InSync { .. } | BucketStep::Updated { .. }
            )
        );
        let denied = match usable {
            true => {
                let probes = crate::nats::app_rights::state_store_probes(
                    &store.bucket,
                    &store.shown_bucket,
                    true,
                );
                super::identity::app_rights(ctx, key, store, &probes).await
            }
            false => None,
        };
        Some((progress, denied))
    }

    fn decide(
        key: &str,
        previous: Option<&WrittenOf<Self>>,
        validation: &ValidationOf<Self>,
        progress: &Self::Progress,
    ) -> Outcome {
        let (progress, denied) = match progress {
            Some((p, d)) => (Some(p), d.as_ref()),
            None => (None, None),
        };
        status::decide_with_app(name_of(key), previous, validation, progress, denied)
    }

    async fn report<'a>(
        ctx: &'a Context,
        component: &'a Component,
        key: &'a str,
        previous: Option<&'a WrittenOf<Self>>,
        outcome: &'a Outcome,
    ) -> Result<Vec<Condition>, ReportError> {
        report::report(component, key, ctx, previous, outcome).await
    }

    fn credentials_resolved(outcome: &Outcome) -> bool {
        outcome.credentials_resolved()
    }

    fn retry(outcome: &Outcome) -> Retry {
        outcome.retry
    }

    fn usage(outcome: &Outcome) -> Vec<StreamUsage> {
        outcome
            .bucket
            .iter()
            .map(|b| usage_of(&b.stream, b.bytes, b.config.max_bytes))
            .collect()
    }

    fn deletes(component: &Component) -> bool {
        crate::settings::from_annotations(component.annotations())
            .is_ok_and(|s| s.deletion_policy == DeletionPolicy::Delete)
    }

    async fn delete_provisioned<'a>(
        ctx: &'a Context,
        component: &'a Component,
        key: &'a str,
    ) -> Result<Deletion, Problem> {
        delete::delete_bucket(component, key, ctx).await
    }

    fn show_plan(outcome: &mut Outcome, plan: Vec<Planned>) {
        outcome.plan = plan;
    }

    fn deletion_pending(
        key: &str,
        previous: Option<&WrittenOf<Self>>,
        failure: &Problem,
    ) -> Outcome {
        status::deletion_pending(name_of(key), previous, failure)
    }

    fn retained() -> Note {
        Note::normal(
            Reason::BucketRetained,
            retained_message("bucket and its data are"),
        )
    }
}

/// A `pubsub.jetstream` Component's streams.
pub enum Streams {}

impl Kind for Streams {
    type Object = JetStreamStream;
    const AVAILABLE: ConditionType = ConditionType::StreamAvailable;
    type Config = PubsubConfig;
    type Settings = StreamSettings;
    /// The subjects step (when valid), then what NATS did (when the subjects are known), and a
    /// right the Component's own user lacks (checked once the streams are as needed).
    type Progress = (
        Option<Prepared>,
        Option<Progress<StreamStep>>,
        Option<Denied>,
    );
    type Outcome = StreamOutcome;

    fn validate(component: &Component, values: Values<'_>, now: i64) -> ValidationOf<Self> {
        crate::validate::validate_pubsub(component, values, now)
    }

    async fn execute<'a>(
        ctx: &'a Context,
        component: &'a Component,
        key: &'a str,
        validation: &'a ValidationOf<Self>,
        previous: Option<&'a WrittenOf<Self>>,
    ) -> Self::Progress {
        let Some((config, _)) = validation.valid() else {
            return (None, None, None);
        };
        let namespace = component.namespace().unwrap_or_default();
        let subscriptions = streams::subscriptions(ctx, &namespace).await;
        let read = subscriptions.as_deref();
        let (prepared, progress) =
            streams_progress(ctx.nats(), component, key, validation, previous, read).await;
        let denied = match (&progress, prepared.as_ref().map(|p| &p.subjects)) {
            (Some(Progress::Connected { step, .. }), Some(Ok(found)))
                if step
                    .rounds
                    .as_ref()
                    .is_ok_and(|rounds| rounds.iter().all(|r| r.end.is_done())) =>
            {
                let subject = found
                    .subjects
                    .subjects
                    .iter()
                    .find(|s| !s.split('.').any(|t| t == "*" || t == ">"));
                let probes = crate::nats::app_rights::pubsub_probes(
                    subject.map(String::as_str),
                    config.stream_name.is_none(),
                );
                match (probes.is_empty(), &prepared) {
                    (false, Some(prepared)) => {
                        let store = config.connection(&prepared.stream);
                        super::identity::app_rights(ctx, key, &store, &probes).await
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        (prepared, progress, denied)
    }

    fn decide(
        key: &str,
        previous: Option<&WrittenOf<Self>>,
        validation: &ValidationOf<Self>,
        (prepared, progress, denied): &Self::Progress,
    ) -> StreamOutcome {
        streams::status::decide_with_app(
            key,
            previous,
            validation,
            prepared.as_ref(),
            progress.as_ref(),
            denied.as_ref(),
        )
    }

    async fn report<'a>(
        ctx: &'a Context,
        component: &'a Component,
        _key: &'a str,
        previous: Option<&'a WrittenOf<Self>>,
        outcome: &'a StreamOutcome,
    ) -> Result<Vec<Condition>, ReportError> {
        streams::write(ctx, component, previous, outcome).await
    }

    fn credentials_resolved(outcome: &StreamOutcome) -> bool {
        outcome.credentials_resolved()
    }

    fn retry(outcome: &StreamOutcome) -> Retry {
        outcome.retry()
    }

    fn usage(outcome: &StreamOutcome) -> Vec<StreamUsage> {
        [&outcome.stream, &outcome.dead_letter_stream]
            .into_iter()
            .flatten()
            .map(|s| usage_of(&s.name, s.bytes, s.config.max_bytes))
            .collect()
    }

    fn deletes(component: &Component) -> bool {
        crate::pubsub::stream::stream_settings(component.annotations())
            .is_ok_and(|s| s.deletion_policy == DeletionPolicy::Delete)
    }

    async fn delete_provisioned<'a>(
        ctx: &'a Context,
        component: &'a Component,
        key: &'a str,
    ) -> Result<Deletion, Problem> {
        delete::delete_streams(component, key, ctx).await
    }

    fn show_plan(outcome: &mut StreamOutcome, plan: Vec<Planned>) {
        outcome.plan = plan;
    }

    fn deletion_pending(
        key: &str,
        previous: Option<&WrittenOf<Self>>,
        failure: &Problem,
    ) -> StreamOutcome {
        streams::status::deletion_pending(name_of(key), previous, failure)
    }

    fn retained() -> Note {
        Note::normal(
            Reason::StreamRetained,
            retained_message("streams and their messages are"),
        )
    }
}

/// The execute step of a state store, on the connections of `nats` (the reconciler's, or
/// `apply`'s): nothing when validation failed.
pub async fn bucket_progress(
    nats: Nats<'_>,
    key: &str,
    validation: &ValidationOf<Bucket>,
    previous: Option<&WrittenOf<Bucket>>,
) -> Option<Progress<BucketStep>> {
    let (store, settings) = validation.valid()?;
    let managed = status::previously_managed(previous, &store.shown_bucket);
    // Two Components asking different things of one bucket cannot fight over it: only the
    // Component the operator created it for changes it (ownership is law, see
    // `bucket::plan`), so no other Component can block its owner.
    Some(execute::execute(nats, key, store, settings, managed).await)
}

/// The subjects and execute steps of a pub/sub, on the connections of `nats`, with the
/// declarative Subscriptions of its namespace (`subscriptions`: Err when they could not be read).
pub async fn streams_progress(
    nats: Nats<'_>,
    component: &Component,
    key: &str,
    validation: &ValidationOf<Streams>,
    previous: Option<&WrittenOf<Streams>>,
    subscriptions: Result<&[Subscription], &Problem>,
) -> (Option<Prepared>, Option<Progress<StreamStep>>) {
    let Some((config, settings)) = validation.valid() else {
        return (None, None);
    };
    let namespace = component.namespace().unwrap_or_default();
    let name = component.name_any();
    let prepared = topics::prepare(&namespace, &name, config, settings, subscriptions);
    let progress = match &prepared.subjects {
        Ok(found) => Some(
            streams::execute::execute(nats, key, (config, settings), &prepared, found, previous)
                .await,
        ),
        Err(_) => None,
    };
    (Some(prepared), progress)
}

/// The Component's name in its key `namespace/name`.
fn name_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(_, n)| n)
}

fn retained_message(what: &str) -> String {
    format!("the Component is deleted and its deletion policy is retain: the {what} kept")
}

/// One stream's usage; a max-bytes of 0 or less (NATS writes -1) is no limit.
fn usage_of(stream: &str, bytes: u64, max_bytes: Option<i64>) -> StreamUsage {
    StreamUsage {
        stream: stream.to_string(),
        bytes,
        max_bytes: max_bytes
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| *m > 0),
    }
}
