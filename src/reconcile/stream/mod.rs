//! The pipeline of a `pubsub.jetstream` Component: the same steps as a state store's, on a
//! stream. **read** (the Secrets it names, the Subscriptions of its namespace, its
//! `JetStreamStream`) → **validate** ([`crate::validate::validate_pubsub`], the server policy) →
//! **subjects** (discovered topics, the namespace prefix as daprd applies it) → **plan**
//! ([`crate::pubsub::stream::plan`], pure) and **execute** (NATS: create, or add subjects, never
//! remove them; Dapr's consumers are never touched) → **status** (the conditions closed by
//! [`super::status::close`]) → **report** (the `JetStreamStream`, the Component's summary
//! annotations and finalizer, Events).

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::context::Context;
use super::read;
use super::report::{self, ReportError};
use super::status::{self, Note};
use crate::crd::{ConditionSpec, ConditionType, merge_conditions};
use crate::dapr::Component;
use crate::failure::{Problem, Retry};
use crate::pubsub::resource::{
    DETAIL_CONDITIONS, JetStreamStream, JetStreamStreamSpec, JetStreamStreamStatus, StreamStatus,
    TopicStatus,
};
use crate::pubsub::stream::{Desired, StreamSettings, desired_stream, shown_config};
use crate::pubsub::{PubsubConfig, Subscription};
use crate::validate::{PubsubValidation, Values, check_pubsub_server_policy, validate_pubsub};

mod decide;

use decide::decide;

/// What one reconcile of a `pubsub.jetstream` Component decided, before anything is written.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamOutcome {
    /// What the operator understood of the Component (never a secret).
    pub spec: JetStreamStreamSpec,
    /// The detail conditions decided, in the pipeline's order.
    passed: Vec<ConditionSpec>,
    /// Ready True with a reason and message, or the problem that ended the reconcile.
    end: Result<(&'static str, String), Problem>,
    /// The discovered topics and their coverage.
    pub topics: Vec<TopicStatus>,
    /// Facts about the stream.
    pub stream: Option<StreamStatus>,
    /// Events for what was done.
    pub events: Vec<Note>,
    /// Warnings the Component alone gives (published when what the operator understood of it
    /// changes).
    pub warnings: Vec<Note>,
    /// Whether the Component should carry our finalizer; None when unknown.
    pub wants_finalizer: Option<bool>,
}

impl StreamOutcome {
    fn new(name: &str) -> Self {
        Self {
            spec: JetStreamStreamSpec {
                component: name.to_owned(),
                ..Default::default()
            },
            passed: Vec::new(),
            end: Ok(("", String::new())),
            topics: Vec::new(),
            stream: None,
            events: Vec::new(),
            warnings: Vec::new(),
            wants_finalizer: None,
        }
    }

    fn pass(&mut self, type_: ConditionType, reason: &str, message: impl Into<String>) {
        self.passed.push(ConditionSpec {
            type_,
            status: Some(true),
            reason: reason.to_owned(),
            message: message.into(),
        });
    }

    fn fail(mut self, problem: Problem) -> Self {
        self.end = Err(problem);
        self
    }

    fn succeed(mut self, reason: &'static str, message: String) -> Self {
        self.end = Ok((reason, message));
        self
    }

    /// The conditions to write: Ready, the detail conditions, Stalled or Reconciling.
    pub fn conditions(&self) -> Vec<ConditionSpec> {
        status::close(&self.passed, &DETAIL_CONDITIONS, self.end.clone())
    }

    /// When to look again.
    pub fn retry(&self) -> Retry {
        match &self.end {
            Ok(_) => Retry::Resync,
            Err(p) => p.retry,
        }
    }
}

/// Reconciles one `pubsub.jetstream` Component (`key` is `namespace/name`).
pub async fn reconcile(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError> {
    let started = Instant::now();
    let namespace = component.namespace().unwrap_or_default();
    let api: Api<JetStreamStream> = Api::namespaced(ctx.client.clone(), &namespace);
    // A Component that was a state store before: its KeyValueBucket goes.
    if ctx.index.forget_written(key) || ctx.cached(component).is_some() {
        report::delete_bucket_object(ctx, component).await?;
    }

    // Read.
    let previous = api
        .get_opt(&component.name_any())
        .await
        .map_err(|e| ReportError::new("JetStreamStream read", e))?;
    let validation = validated(ctx, component).await;
    let subscriptions = subscriptions(ctx, &namespace).await;
    // Plan, execute and decide.
    let outcome = decide(
        ctx,
        component,
        key,
        previous.as_ref(),
        &validation,
        subscriptions,
    )
    .await;
    if !outcome
        .conditions()
        .iter()
        .any(|c| c.type_ == ConditionType::CredentialsResolved && c.status == Some(true))
    {
        ctx.pool.release(key);
    }
    // Report.
    let conditions = write(ctx, component, &api, previous.as_ref(), &outcome).await?;

    let ready = conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready.as_str());
    let failed_reason = ready
        .filter(|c| c.status != "True")
        .map(|c| c.reason.as_str());
    ctx.metrics.reconciled(started.elapsed(), failed_reason);
    ctx.metrics
        .set_ready(key, ready.map(|c| c.status == "True"));
    tracing::debug!(component = %key, ready = ?ready.map(|c| (&c.status, &c.reason)), elapsed = ?started.elapsed(), "reconciled");
    Ok(super::requeue(ctx, key, outcome.retry()))
}

/// The Secrets the Component names, read, and the validation of it with their values and the
/// admin's server policy.
pub(super) async fn validated(ctx: &Context, component: &Component) -> PubsubValidation {
    let values = read::secret_values(ctx, component).await;
    let now = jiff::Timestamp::now().as_second();
    let mut validation = validate_pubsub(component, Values::Read(&values), now);
    if let Some(policy) = &ctx.policy {
        check_pubsub_server_policy(&mut validation, component, |ns, url, creds| {
            policy.decide(ns, url, creds)
        });
    }
    validation
}

/// The declarative Subscriptions of the namespace; none when Dapr's Subscription CRD is not
/// installed. Err: they could not be read (the stream is not changed without them).
async fn subscriptions(ctx: &Context, namespace: &str) -> Result<Vec<Subscription>, Problem> {
    let api: Api<Subscription> = Api::namespaced(ctx.client.clone(), namespace);
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
        Err(e) => Err(Problem::new(
            ConditionType::SubjectsCovered,
            "SubscriptionsUnreadable",
            format!(
                "the declarative Subscriptions of namespace {namespace} could not be read ({}); \
                 the stream is left as it is until they can: check the operator's RBAC (get, \
                 list, watch on subscriptions.dapr.io)",
                crate::nats::remote_text(&e.to_string())
            ),
            Retry::Backoff,
        )),
    }
}

/// The spec: what the operator understood of the Component.
fn understood(
    spec: &mut JetStreamStreamSpec,
    config: &PubsubConfig,
    settings: &StreamSettings,
    stream: &str,
    prefix: Option<&str>,
) {
    spec.stream = Some(stream.to_owned());
    spec.servers = config.redacted_servers.clone();
    spec.auth = Some(config.auth.kind().to_owned());
    spec.topic_prefix = prefix.map(str::to_owned);
    spec.deletion_policy = Some(settings.deletion_policy.as_str().to_owned());
    spec.config = Some(shown_config(&desired_stream(&Desired {
        stream,
        subjects: &[],
        owner: "",
        settings,
    })));
}

/// Writes what changed: the JetStreamStream (spec, then status), the Component's summary
/// annotations and finalizer, the Events. Returns the conditions written.
async fn write(
    ctx: &Context,
    component: &Component,
    api: &Api<JetStreamStream>,
    previous: Option<&JetStreamStream>,
    outcome: &StreamOutcome,
) -> Result<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>, ReportError> {
    let name = component.name_any();
    let key = super::object_key(component);
    let mut generation = previous.and_then(|p| p.metadata.generation);
    if previous.is_none_or(|p| p.spec != outcome.spec) {
        generation =
            report::apply_owned(ctx, api, component, json!(outcome.spec), "JetStreamStream")
                .await?;
        for note in &outcome.warnings {
            report::publish(ctx, component, &key, note.clone()).await;
        }
    }
    let previous_status = previous.and_then(|p| p.status.clone()).unwrap_or_default();
    let status = JetStreamStreamStatus {
        observed_generation: generation,
        component_generation: component.metadata.generation,
        conditions: merge_conditions(
            &previous_status.conditions,
            &outcome.conditions(),
            generation,
            Time(jiff::Timestamp::now()),
        ),
        topics: outcome.topics.clone(),
        stream: outcome.stream.clone(),
    };
    if previous.is_none() || status != previous_status {
        report::apply_status(ctx, api, &name, json!(status), "JetStreamStream status").await?;
    }
    if let Some(patch) =
        status::component_patch(component, &status.conditions, outcome.wants_finalizer)
    {
        report::apply_component(ctx, component, patch).await?;
    }
    for note in status::events(
        &previous_status.conditions,
        &status.conditions,
        &outcome.events,
    ) {
        report::publish(ctx, component, &key, note).await;
    }
    Ok(status.conditions)
}
