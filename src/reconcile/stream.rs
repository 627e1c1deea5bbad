//! The pipeline of a `pubsub.jetstream` Component: the same steps as a state store's, on a
//! stream. **read** (the Secrets it names, the Subscriptions of its namespace, its
//! `JetStreamStream`) → **validate** ([`crate::validate::validate_pubsub`], the server policy) →
//! **subjects** (discovered topics, the namespace prefix as daprd applies it) → **plan**
//! ([`crate::pubsub::stream::plan`], pure) and **execute** (NATS: create, or add subjects, never
//! remove them; Dapr's consumers are never touched) → **status** (the conditions closed by
//! [`super::status::close`]) → **report** (the `JetStreamStream`, the Component's summary
//! annotations and finalizer, Events).

use std::time::Instant;

use async_nats::jetstream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::context::Context;
use super::execute::client;
use super::read;
use super::report::{self, ReportError};
use super::status::{self, Note, Reason};
use crate::crd::{ConditionSpec, ConditionType, merge_conditions};
use crate::dapr::Component;
use crate::failure::{Failure, Problem, Retry};
use crate::nats::bucket::{Bucket, is_managed_by};
use crate::nats::cluster;
use crate::pubsub::resource::{
    DETAIL_CONDITIONS, JetStreamStream, JetStreamStreamSpec, JetStreamStreamStatus, StreamStatus,
    TopicStatus,
};
use crate::pubsub::stream::{
    self, BlockReason, Desired, OtherStream, StreamPlan, StreamSettings, blocked_message,
    desired_stream, settings_warnings, shown_config, status_of, stream_name,
};
use crate::pubsub::topics::{INVISIBLE_TOPICS, discover, subscribed_count, topic_statuses};
use crate::pubsub::{PubsubConfig, PubsubError, Subscription, component, derive_subjects};
use crate::settings::DeletionPolicy;
use crate::validate::{PubsubValidation, Values, check_pubsub_server_policy, validate_pubsub};

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
    Ok(match outcome.retry() {
        Retry::Resync => {
            ctx.index.succeeded(key);
            Action::requeue(ctx.resync())
        }
        Retry::Backoff => Action::requeue(ctx.backoff(key)),
        Retry::AwaitChange => {
            ctx.index.succeeded(key);
            Action::await_change()
        }
    })
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

/// Everything up to the status: validation's verdict, the subjects, and what NATS said and did.
async fn decide(
    ctx: &Context,
    component: &Component,
    key: &str,
    previous: Option<&JetStreamStream>,
    validation: &PubsubValidation,
    subscriptions: Result<Vec<Subscription>, Problem>,
) -> StreamOutcome {
    use ConditionType::SubjectsCovered;
    use ConditionType::{ConfigSynced, Connected, CredentialsResolved, StreamAvailable};
    let namespace = component.namespace().unwrap_or_default();
    let name = component.name_any();
    let mut o = StreamOutcome::new(&name);
    let Some((config, settings)) = validation.valid() else {
        let problem = validation
            .findings
            .problems
            .first()
            .cloned()
            .unwrap_or_else(|| {
                Problem::new(
                    CredentialsResolved,
                    Reason::NotChecked.as_str(),
                    "the Component was not validated",
                    Retry::Backoff,
                )
            });
        return o.fail(problem);
    };
    o.wants_finalizer = Some(settings.deletion_policy == DeletionPolicy::Delete);
    let stream = stream_name(config.stream_name.as_deref(), settings, &namespace, &name);
    let prefix = config.namespace_scoped.then_some(namespace.as_str());
    understood(&mut o.spec, config, settings, &stream, prefix);
    o.pass(
        CredentialsResolved,
        Reason::Resolved.as_str(),
        format!(
            "metadata and credentials resolved (auth: {})",
            config.auth.kind()
        ),
    );
    let subscriptions = match subscriptions {
        Ok(s) => s,
        Err(problem) => return o.fail(problem),
    };
    let topics = discover(&namespace, &name, config, &subscriptions);
    let subjects = match derive_subjects(&settings.subjects, &topics, prefix) {
        Ok(s) => s,
        Err(e) => return o.fail(Problem::of(SubjectsCovered, &PubsubError::from(e))),
    };
    o.spec.subjects = subjects.subjects.clone();
    o.topics = topic_statuses(&topics, &subjects, prefix, None);

    // Connect.
    let client = match client(ctx, key, &config.connection(&stream)).await {
        Ok(c) => c,
        Err(e) => return o.fail(Problem::of(Connected, &e)),
    };
    let server = client.server_info();
    let version = crate::nats::remote_text(&server.version);
    let clustered = server.cluster.is_some();
    o.pass(
        Connected,
        Reason::Connected.as_str(),
        format!(
            "connected to NATS {version} at {} with JetStream",
            config.redacted_servers.join(",")
        ),
    );
    // The warnings of the Component alone, published when what was understood changes.
    if previous.is_none_or(|p| p.spec != o.spec) {
        o.warnings = component::warnings(config, subscribed_count(&topics), Some(clustered))
            .into_iter()
            .chain(settings_warnings(settings))
            .map(|w| Note {
                type_: EventType::Warning,
                reason: w.reason.to_owned(),
                note: w.message,
            })
            .collect();
    }

    // The streams of the account (overlaps are decided before sending), then ours when it is
    // listed: an absent stream costs no failed request.
    let js = jetstream::new(client);
    let target = Bucket::stream(&js, &stream);
    ctx.metrics.nats_request("list");
    let all = match target.all_streams().await {
        Ok(all) => all,
        Err(e) => return o.fail(Problem::of(StreamAvailable, &e)),
    };
    let listed = all.iter().any(|(n, _)| *n == stream);
    let others: Vec<OtherStream> = all
        .into_iter()
        .filter(|(n, _)| *n != stream)
        .map(|(name, subjects)| OtherStream { name, subjects })
        .collect();
    let mut live = None;
    if listed {
        ctx.metrics.nats_request("info");
        live = match target.fetch().await {
            Ok(l) => l,
            Err(e) => return o.fail(Problem::of(StreamAvailable, &e)),
        };
    }
    if let Some(info) = &live
        && let Some(error) = cluster::availability_problem(info)
    {
        return o.fail(Problem::of(StreamAvailable, &error));
    }
    let previously_managed = previous
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.stream.as_ref())
        .filter(|s| s.name == stream)
        .map(|s| s.managed);
    if live.is_none() && subjects.subjects.is_empty() {
        return o.fail(Problem::new(
            SubjectsCovered,
            "NoSubjects",
            format!(
                "stream {stream} is not created: no subject is known for it; add a declarative \
                 Subscription naming this Component, allowedTopics, or the \
                 jetstreamkv.io/subjects annotation ({INVISIBLE_TOPICS})"
            ),
            Retry::AwaitChange,
        ));
    }
    let desired = Desired {
        stream: &stream,
        subjects: &subjects.subjects,
        owner: key,
        settings,
    };
    let found = |managed: bool| {
        if managed {
            format!("stream {stream} exists; managed by the operator")
        } else {
            format!("stream {stream} exists; verified; not managed by the operator")
        }
    };
    // At most two rounds: a create that races with another creator plans again.
    let mut result = None;
    for _ in 0..2 {
        let plan = stream::plan(
            &desired,
            live.as_ref().map(|i| &i.config),
            &others,
            previously_managed,
            clustered,
        );
        match plan {
            StreamPlan::Create(config) | StreamPlan::Recreate(config) => {
                let recreated = previously_managed == Some(true);
                ctx.metrics.nats_request("create");
                match target.create(*config).await {
                    Ok(info) if is_managed_by(&info.config, key) => {
                        o.events.push(if recreated {
                            Note {
                                type_: EventType::Warning,
                                reason: "StreamRecreated".into(),
                                note: format!("stream {stream} was deleted outside the operator; created it again (its messages were lost)"),
                            }
                        } else {
                            Note {
                                type_: EventType::Normal,
                                reason: "StreamCreated".into(),
                                note: format!(
                                    "created stream {stream} with subjects {}",
                                    info.config.subjects.join(", ")
                                ),
                            }
                        });
                        result = Some((info, true));
                        break;
                    }
                    Ok(info) => {
                        live = Some(info);
                        continue;
                    }
                    Err(e) => return o.fail(Problem::of(StreamAvailable, &e)),
                }
            }
            StreamPlan::Missing => {
                return o.fail(Problem::new(
                    StreamAvailable,
                    "StreamMissing",
                    format!("stream {stream} no longer exists; the operator only verified it, so it does not create it: recreate it, or remove streamName to let the operator manage a stream"),
                    Retry::Backoff,
                ));
            }
            StreamPlan::NotUsable(problem) => {
                return o.fail(Problem::new(
                    StreamAvailable,
                    "StreamNotUsable",
                    problem,
                    Retry::Resync,
                ));
            }
            StreamPlan::InSync { managed } => {
                result = live.take().map(|i| (i, managed));
                break;
            }
            StreamPlan::Update {
                config,
                added,
                changes,
            } => {
                ctx.metrics.nats_request("update");
                let mut what: Vec<String> = Vec::new();
                if !added.is_empty() {
                    what.push(format!("added subjects {}", added.join(", ")));
                }
                what.extend(changes.iter().map(ToString::to_string));
                match target.update(*config).await {
                    Ok(info) => {
                        o.events.push(Note {
                            type_: EventType::Normal,
                            reason: "StreamUpdated".into(),
                            note: format!("updated stream {stream}: {}", what.join("; ")),
                        });
                        result = Some((info, true));
                        break;
                    }
                    Err(e) => {
                        o.pass(StreamAvailable, "StreamFound", found(true));
                        return o.fail(Problem::new(
                            ConfigSynced,
                            e.reason(),
                            format!("updating stream {stream} ({}) failed: {e}", what.join("; ")),
                            Retry::Backoff,
                        ));
                    }
                }
            }
            StreamPlan::Blocked {
                managed,
                reason,
                missing,
                overlaps,
                changes,
            } => {
                if let Some(info) = &live {
                    o.pass(StreamAvailable, "StreamFound", found(managed));
                    o.stream = Some(status_of(info, managed, &version));
                    o.topics =
                        topic_statuses(&topics, &subjects, prefix, Some(&info.config.subjects));
                }
                let condition = match reason {
                    BlockReason::SubjectOverlap | BlockReason::SubjectsNotCovered => {
                        SubjectsCovered
                    }
                    _ if live.is_none() => StreamAvailable,
                    _ => ConfigSynced,
                };
                return o.fail(Problem::new(
                    condition,
                    reason.reason(),
                    blocked_message(&stream, reason, &missing, &overlaps, &changes),
                    reason.retry(),
                ));
            }
        }
    }
    let Some((info, managed)) = result else {
        return o.fail(Problem::new(
            StreamAvailable,
            "StreamCreateConflict",
            format!("stream {stream} kept changing while it was being created; retrying"),
            Retry::Backoff,
        ));
    };
    o.pass(StreamAvailable, "StreamFound", found(managed));
    o.stream = Some(status_of(&info, managed, &version));
    o.topics = topic_statuses(&topics, &subjects, prefix, Some(&info.config.subjects));
    if !subjects.uncovered.is_empty() {
        let listed: Vec<String> = subjects
            .uncovered
            .iter()
            .take(5)
            .map(|u| format!("{} ({}): {}", u.subject, u.topic.source, u.problem))
            .collect();
        return o.fail(Problem::new(
            SubjectsCovered,
            "TopicsNotCovered",
            format!(
                "stream {stream} cannot cover {} discovered topic(s): {}; daprd will fail to \
                 publish or subscribe to them: rename the topics, or change the \
                 jetstreamkv.io/subjects annotation",
                subjects.uncovered.len(),
                listed.join("; ")
            ),
            Retry::Resync,
        ));
    }
    o.pass(
        SubjectsCovered,
        "Covered",
        format!(
            "stream {stream} holds every subject daprd will use for the {} topic(s) found; {INVISIBLE_TOPICS}",
            o.topics.len()
        ),
    );
    o.pass(
        ConfigSynced,
        Reason::InSync.as_str(),
        "stream settings match the Component",
    );
    if managed {
        let message = format!("stream {stream} is ready and managed by the operator");
        o.succeed("StreamManaged", message)
    } else {
        let message = format!(
            "stream {stream} is ready; it was created outside the operator and is only verified"
        );
        o.succeed("StreamVerified", message)
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
