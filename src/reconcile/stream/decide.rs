//! The decision of one stream: what was understood of the Component, its subjects, what NATS
//! said and did, each step a function that ends the decision with its [`Problem`].

use async_nats::jetstream;
use kube::ResourceExt as _;
use kube::runtime::events::EventType;

use crate::crd::{ConditionSpec, ConditionType};
use crate::dapr::Component;
use crate::failure::{Failure, Problem, Retry};
use crate::nats::bucket::{Bucket, Change, is_managed_by};
use crate::nats::cluster;
use crate::pubsub::resource::{
    DETAIL_CONDITIONS, JetStreamStream, JetStreamStreamSpec, StreamStatus, TopicStatus,
};
use crate::pubsub::stream::{
    self, BlockReason, Desired, OtherStream, StreamPlan, StreamSettings, blocked_message,
    desired_stream, settings_warnings, shown_config, status_of, stream_name,
};
use crate::pubsub::topics::{INVISIBLE_TOPICS, discover, subscribed_count, topic_statuses};
use crate::pubsub::{
    DiscoveredTopic, PubsubConfig, PubsubError, Subjects, Subscription, component, derive_subjects,
};
use crate::reconcile::context::Context;
use crate::reconcile::execute::client;
use crate::reconcile::status::{self, Note, Reason};
use crate::settings::DeletionPolicy;
use crate::validate::PubsubValidation;

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

/// Everything up to the status: validation's verdict, the subjects, and what NATS said and did.
pub(super) async fn decide(
    ctx: &Context,
    component: &Component,
    key: &str,
    previous: Option<&JetStreamStream>,
    validation: &PubsubValidation,
    subscriptions: Result<Vec<Subscription>, Problem>,
) -> StreamOutcome {
    let mut o = StreamOutcome::new(&component.name_any());
    let steps = Steps {
        ctx,
        component,
        key,
        previous,
    };
    match steps.run(validation, subscriptions, &mut o).await {
        Ok((reason, message)) => o.succeed(reason, message),
        Err(problem) => o.fail(problem),
    }
}

/// The steps of one stream's decision; each failing one ends it with its [`Problem`].
struct Steps<'a> {
    ctx: &'a Context,
    component: &'a Component,
    key: &'a str,
    previous: Option<&'a JetStreamStream>,
}

/// What the plan of one stream works on, once the server is known.
struct Round<'a> {
    ctx: &'a Context,
    target: Bucket<'a>,
    desired: Desired<'a>,
    others: Vec<OtherStream>,
    previously_managed: Option<bool>,
    clustered: bool,
    version: String,
    topics: &'a [DiscoveredTopic],
    subjects: &'a Subjects,
    prefix: Option<&'a str>,
}

impl Steps<'_> {
    /// understood → subjects → connect → streams listed → plan and apply → covered → ready.
    async fn run(
        &self,
        validation: &PubsubValidation,
        subscriptions: Result<Vec<Subscription>, Problem>,
        o: &mut StreamOutcome,
    ) -> Result<(&'static str, String), Problem> {
        let namespace = self.component.namespace().unwrap_or_default();
        let name = self.component.name_any();
        let (config, settings) = validation
            .valid()
            .ok_or_else(|| not_validated(validation))?;
        o.wants_finalizer = Some(settings.deletion_policy == DeletionPolicy::Delete);
        let stream = stream_name(config.stream_name.as_deref(), settings, &namespace, &name);
        let prefix = config.namespace_scoped.then_some(namespace.as_str());
        understood(&mut o.spec, config, settings, &stream, prefix);
        o.pass(
            ConditionType::CredentialsResolved,
            Reason::Resolved.as_str(),
            format!(
                "metadata and credentials resolved (auth: {})",
                config.auth.kind()
            ),
        );
        let topics = discover(&namespace, &name, config, &subscriptions?);
        let subjects = derive_subjects(&settings.subjects, &topics, prefix)
            .map_err(|e| Problem::of(ConditionType::SubjectsCovered, &PubsubError::from(e)))?;
        o.spec.subjects = subjects.subjects.clone();
        o.topics = topic_statuses(&topics, &subjects, prefix, None);

        let (client, version, clustered) = self.connect(config, &stream, o).await?;
        // The warnings of the Component alone, published when what was understood changes.
        if self.previous.is_none_or(|p| p.spec != o.spec) {
            o.warnings = warnings(config, settings, &topics, clustered);
        }

        let js = jetstream::new(client);
        let target = Bucket::stream(&js, &stream);
        let (live, others) = listed(self.ctx, &target, &stream).await?;
        if live.is_none() && subjects.subjects.is_empty() {
            return Err(no_subjects(&stream));
        }
        let round = Round {
            ctx: self.ctx,
            target,
            desired: Desired {
                stream: &stream,
                subjects: &subjects.subjects,
                owner: self.key,
                settings,
            },
            others,
            previously_managed: self.previously_managed(&stream),
            clustered,
            version,
            topics: &topics,
            subjects: &subjects,
            prefix,
        };
        let (info, managed) = round.apply(live, o).await?;
        round.found(&info, managed, o);
        covered(&stream, &subjects)?;
        o.pass(
            ConditionType::SubjectsCovered,
            "Covered",
            format!(
                "stream {stream} holds every subject daprd will use for the {} topic(s) found; {INVISIBLE_TOPICS}",
                o.topics.len()
            ),
        );
        o.pass(
            ConditionType::ConfigSynced,
            Reason::InSync.as_str(),
            "stream settings match the Component",
        );
        Ok(ready(&stream, managed))
    }

    /// Connects to the Component's servers; returns the client, the server's version and
    /// whether it runs in a cluster.
    async fn connect(
        &self,
        config: &PubsubConfig,
        stream: &str,
        o: &mut StreamOutcome,
    ) -> Result<(async_nats::Client, String, bool), Problem> {
        let client = client(self.ctx, self.key, &config.connection(stream))
            .await
            .map_err(|e| Problem::of(ConditionType::Connected, &e))?;
        let server = client.server_info();
        let version = crate::nats::remote_text(&server.version);
        let clustered = server.cluster.is_some();
        o.pass(
            ConditionType::Connected,
            Reason::Connected.as_str(),
            format!(
                "connected to NATS {version} at {} with JetStream",
                config.redacted_servers.join(",")
            ),
        );
        Ok((client, version, clustered))
    }

    /// What the last status said of this stream: whether the operator managed it.
    fn previously_managed(&self, stream: &str) -> Option<bool> {
        self.previous
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.stream.as_ref())
            .filter(|s| s.name == stream)
            .map(|s| s.managed)
    }
}

/// The failure of a Component that was not validated: its first problem.
fn not_validated(validation: &PubsubValidation) -> Problem {
    validation
        .findings
        .problems
        .first()
        .cloned()
        .unwrap_or_else(|| {
            Problem::new(
                ConditionType::CredentialsResolved,
                Reason::NotChecked.as_str(),
                "the Component was not validated",
                Retry::Backoff,
            )
        })
}

/// The warnings of the Component alone, as Events.
fn warnings(
    config: &PubsubConfig,
    settings: &StreamSettings,
    topics: &[DiscoveredTopic],
    clustered: bool,
) -> Vec<Note> {
    component::warnings(config, subscribed_count(topics), Some(clustered))
        .into_iter()
        .chain(settings_warnings(settings))
        .map(|w| Note {
            type_: EventType::Warning,
            reason: w.reason.to_owned(),
            note: w.message,
        })
        .collect()
}

/// The streams of the account (overlaps are decided before sending), then ours when it is
/// listed: an absent stream costs no failed request. Returns ours and the others.
async fn listed(
    ctx: &Context,
    target: &Bucket<'_>,
    stream: &str,
) -> Result<(Option<jetstream::stream::Info>, Vec<OtherStream>), Problem> {
    use ConditionType::StreamAvailable;
    ctx.metrics.nats_request("list");
    let all = target
        .all_streams()
        .await
        .map_err(|e| Problem::of(StreamAvailable, &e))?;
    let listed = all.iter().any(|(n, _)| *n == stream);
    let others: Vec<OtherStream> = all
        .into_iter()
        .filter(|(n, _)| *n != stream)
        .map(|(name, subjects)| OtherStream { name, subjects })
        .collect();
    let mut live = None;
    if listed {
        ctx.metrics.nats_request("info");
        live = target
            .fetch()
            .await
            .map_err(|e| Problem::of(StreamAvailable, &e))?;
    }
    if let Some(info) = &live
        && let Some(error) = cluster::availability_problem(info)
    {
        return Err(Problem::of(StreamAvailable, &error));
    }
    Ok((live, others))
}

fn no_subjects(stream: &str) -> Problem {
    Problem::new(
        ConditionType::SubjectsCovered,
        "NoSubjects",
        format!(
            "stream {stream} is not created: no subject is known for it; add a declarative \
             Subscription naming this Component, allowedTopics, or the \
             jetstreamkv.io/subjects annotation ({INVISIBLE_TOPICS})"
        ),
        Retry::AwaitChange,
    )
}

impl Round<'_> {
    /// Plans and applies; at most two rounds: a create that races with another creator plans
    /// again. Returns the stream and whether the operator manages it.
    async fn apply(
        &self,
        mut live: Option<jetstream::stream::Info>,
        o: &mut StreamOutcome,
    ) -> Result<(jetstream::stream::Info, bool), Problem> {
        let stream = self.desired.stream;
        for _ in 0..2 {
            let plan = stream::plan(
                &self.desired,
                live.as_ref().map(|i| &i.config),
                &self.others,
                self.previously_managed,
                self.clustered,
            );
            match plan {
                StreamPlan::Create(config) | StreamPlan::Recreate(config) => {
                    let info = self.create(*config).await?;
                    if is_managed_by(&info.config, self.desired.owner) {
                        o.events.push(self.created(&info));
                        return Ok((info, true));
                    }
                    live = Some(info);
                }
                StreamPlan::Missing => return Err(missing(stream)),
                StreamPlan::NotUsable(problem) => {
                    return Err(Problem::new(
                        ConditionType::StreamAvailable,
                        "StreamNotUsable",
                        problem,
                        Retry::Resync,
                    ));
                }
                StreamPlan::InSync { managed } => {
                    return live.map(|i| (i, managed)).ok_or_else(|| conflict(stream));
                }
                StreamPlan::Update {
                    config,
                    added,
                    changes,
                } => return Ok((self.update(*config, &added, &changes, o).await?, true)),
                StreamPlan::Blocked {
                    managed,
                    reason,
                    missing,
                    overlaps,
                    changes,
                } => {
                    if let Some(info) = &live {
                        self.found(info, managed, o);
                    }
                    let condition = match reason {
                        BlockReason::SubjectOverlap | BlockReason::SubjectsNotCovered => {
                            ConditionType::SubjectsCovered
                        }
                        _ if live.is_none() => ConditionType::StreamAvailable,
                        _ => ConditionType::ConfigSynced,
                    };
                    return Err(Problem::new(
                        condition,
                        reason.reason(),
                        blocked_message(stream, reason, &missing, &overlaps, &changes),
                        reason.retry(),
                    ));
                }
            }
        }
        Err(conflict(stream))
    }

    async fn create(
        &self,
        config: jetstream::stream::Config,
    ) -> Result<jetstream::stream::Info, Problem> {
        self.ctx.metrics.nats_request("create");
        self.target
            .create(config)
            .await
            .map_err(|e| Problem::of(ConditionType::StreamAvailable, &e))
    }

    /// The Event of a stream the operator created: again, when it had managed it before.
    fn created(&self, info: &jetstream::stream::Info) -> Note {
        let stream = self.desired.stream;
        if self.previously_managed == Some(true) {
            Note {
                type_: EventType::Warning,
                reason: "StreamRecreated".into(),
                note: format!(
                    "stream {stream} was deleted outside the operator; created it again (its messages were lost)"
                ),
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
        }
    }

    async fn update(
        &self,
        config: jetstream::stream::Config,
        added: &[String],
        changes: &[Change],
        o: &mut StreamOutcome,
    ) -> Result<jetstream::stream::Info, Problem> {
        let stream = self.desired.stream;
        self.ctx.metrics.nats_request("update");
        let mut what: Vec<String> = Vec::new();
        if !added.is_empty() {
            what.push(format!("added subjects {}", added.join(", ")));
        }
        what.extend(changes.iter().map(ToString::to_string));
        match self.target.update(config).await {
            Ok(info) => {
                o.events.push(Note {
                    type_: EventType::Normal,
                    reason: "StreamUpdated".into(),
                    note: format!("updated stream {stream}: {}", what.join("; ")),
                });
                Ok(info)
            }
            Err(e) => {
                o.pass(
                    ConditionType::StreamAvailable,
                    "StreamFound",
                    found_message(stream, true),
                );
                Err(Problem::new(
                    ConditionType::ConfigSynced,
                    e.reason(),
                    format!("updating stream {stream} ({}) failed: {e}", what.join("; ")),
                    Retry::Backoff,
                ))
            }
        }
    }

    /// The stream is there: its status, and the topics it holds.
    fn found(&self, info: &jetstream::stream::Info, managed: bool, o: &mut StreamOutcome) {
        o.pass(
            ConditionType::StreamAvailable,
            "StreamFound",
            found_message(self.desired.stream, managed),
        );
        o.stream = Some(status_of(info, managed, &self.version));
        o.topics = topic_statuses(
            self.topics,
            self.subjects,
            self.prefix,
            Some(&info.config.subjects),
        );
    }
}

fn found_message(stream: &str, managed: bool) -> String {
    if managed {
        format!("stream {stream} exists; managed by the operator")
    } else {
        format!("stream {stream} exists; verified; not managed by the operator")
    }
}

fn missing(stream: &str) -> Problem {
    Problem::new(
        ConditionType::StreamAvailable,
        "StreamMissing",
        format!(
            "stream {stream} no longer exists; the operator only verified it, so it does not create it: recreate it, or remove streamName to let the operator manage a stream"
        ),
        Retry::Backoff,
    )
}

fn conflict(stream: &str) -> Problem {
    Problem::new(
        ConditionType::StreamAvailable,
        "StreamCreateConflict",
        format!("stream {stream} kept changing while it was being created; retrying"),
        Retry::Backoff,
    )
}

/// Every discovered topic must have a subject in the stream.
fn covered(stream: &str, subjects: &Subjects) -> Result<(), Problem> {
    if subjects.uncovered.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = subjects
        .uncovered
        .iter()
        .take(5)
        .map(|u| format!("{} ({}): {}", u.subject, u.topic.source, u.problem))
        .collect();
    Err(Problem::new(
        ConditionType::SubjectsCovered,
        "TopicsNotCovered",
        format!(
            "stream {stream} cannot cover {} discovered topic(s): {}; daprd will fail to \
             publish or subscribe to them: rename the topics, or change the \
             jetstreamkv.io/subjects annotation",
            subjects.uncovered.len(),
            listed.join("; ")
        ),
        Retry::Resync,
    ))
}

fn ready(stream: &str, managed: bool) -> (&'static str, String) {
    if managed {
        (
            "StreamManaged",
            format!("stream {stream} is ready and managed by the operator"),
        )
    } else {
        (
            "StreamVerified",
            format!(
                "stream {stream} is ready; it was created outside the operator and is only verified"
            ),
        )
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
