//! The decision of one stream: what was understood of the Component, its subjects, what NATS
//! said and did, each step a function that ends the decision with its [`Problem`].

use async_nats::jetstream;
use kube::ResourceExt as _;
use kube::runtime::events::EventType;

use crate::crd::{ConditionSpec, ConditionType};
use crate::dapr::Component;
use crate::failure::{Problem, Retry};
use crate::nats::bucket::Bucket;
use crate::nats::cluster;
use crate::pubsub::resource::{DETAIL_CONDITIONS, JetStreamStreamSpec, StreamStatus, TopicStatus};
use crate::pubsub::stream::{
    Desired, OtherStream, Role, StreamSettings, dead_letter_stream_name, desired_stream,
    settings_warnings, shown_config, stream_name,
};
use crate::pubsub::topics::{Held, INVISIBLE_TOPICS, discover, subscribed_count, topic_statuses};
use crate::pubsub::{
    DiscoveredTopic, PubsubConfig, PubsubError, Subjects, Subscription, TopicSource, component,
    derive_subjects,
};
use crate::reconcile::context::Context;
use crate::reconcile::execute::client;
use crate::reconcile::index::WrittenStream;
use crate::reconcile::status::{self, Note, Reason};
use crate::settings::DeletionPolicy;
use crate::validate::PubsubValidation;

use super::round::Round;

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
    /// Facts about the dead-letter stream.
    pub dead_letter_stream: Option<StreamStatus>,
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
            dead_letter_stream: None,
            events: Vec::new(),
            warnings: Vec::new(),
            wants_finalizer: None,
        }
    }

    /// A step passed; a later pass of the same condition says more (both streams found).
    pub(super) fn pass(&mut self, type_: ConditionType, reason: &str, message: impl Into<String>) {
        self.passed.retain(|c| c.type_ != type_);
        self.passed.push(ConditionSpec {
            type_,
            status: Some(true),
            reason: reason.to_owned(),
            message: message.into(),
        });
    }

    /// The topics' statuses: each against the stream meant to hold it, once that was read.
    pub(super) fn show_topics(
        &mut self,
        topics: &[DiscoveredTopic],
        subjects: &Subjects,
        prefix: Option<&str>,
    ) {
        fn held<'a>(facts: &'a Option<StreamStatus>, name: &'a Option<String>) -> Held<'a> {
            Held {
                stream: facts
                    .as_ref()
                    .map(|s| s.name.as_str())
                    .or(name.as_deref())
                    .unwrap_or_default(),
                live: facts.as_ref().map(|s| s.subjects.as_slice()),
            }
        }
        self.topics = topic_statuses(
            topics,
            subjects,
            prefix,
            held(&self.stream, &self.spec.stream),
            held(&self.dead_letter_stream, &self.spec.dead_letter_stream),
        );
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
    previous: Option<&WrittenStream>,
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

/// The server the streams are on, and what their rounds share.
struct Server<'a> {
    js: &'a jetstream::Context,
    version: &'a str,
    clustered: bool,
    topics: &'a [DiscoveredTopic],
    subjects: &'a Subjects,
    prefix: Option<&'a str>,
}

/// The steps of one stream's decision; each failing one ends it with its [`Problem`].
struct Steps<'a> {
    ctx: &'a Context,
    component: &'a Component,
    key: &'a str,
    previous: Option<&'a WrittenStream>,
}

impl Steps<'_> {
    /// understood → subjects → connect → both streams.
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
        o.spec.dead_letter_subjects = subjects.dead_letters.clone();
        o.show_topics(&topics, &subjects, prefix);
        let dead_letters = dead_letter_stream_name(&stream);
        // With streamName, a subscription to a dead-letter topic cannot receive: said as a
        // Warning and, once the streams are as wanted, as the end of the reconcile.
        let unreachable = config
            .stream_name
            .as_ref()
            .and_then(|_| unreachable_dead_letters(&stream, &dead_letters, &topics, &subjects));

        let (client, version, clustered) = self.connect(config, &stream, o).await?;
        // The warnings of the Component alone, published when what was understood changes.
        if self.previous.is_none_or(|p| p.spec != o.spec) {
            o.warnings = warnings(config, settings, &topics, clustered);
            o.warnings.extend(unreachable.iter().map(|p| Note {
                type_: EventType::Warning,
                reason: p.reason.clone(),
                note: p.message.clone(),
            }));
        }

        let js = jetstream::new(client);
        let on = Server {
            js: &js,
            version: &version,
            clustered,
            topics: &topics,
            subjects: &subjects,
            prefix,
        };
        let desired = Desired {
            stream: &stream,
            subjects: &subjects.subjects,
            owner: self.key,
            settings,
            role: Role::Topics,
        };
        self.both_streams(&on, desired, &dead_letters, unreachable, o)
            .await
    }

    /// streams listed → the topics' stream, then the dead-letter stream, planned and applied →
    /// covered → ready.
    async fn both_streams(
        &self,
        on: &Server<'_>,
        desired: Desired<'_>,
        dead_letters: &str,
        unreachable: Option<Problem>,
        o: &mut StreamOutcome,
    ) -> Result<(&'static str, String), Problem> {
        let (stream, subjects) = (desired.stream, on.subjects);
        let mut all = listed(self.ctx, on.js).await?;
        let live = fetched(self.ctx, on.js, stream, &all).await?;
        if live.is_none() && subjects.subjects.is_empty() {
            return Err(no_subjects(stream));
        }
        let managed = self.provision(on, desired, live, &mut all, o).await?;
        // The dead-letter topics, in a stream of their own, the same way (kept once made).
        let live = fetched(self.ctx, on.js, dead_letters, &all).await?;
        let dead_letters_managed = if live.is_some() || !subjects.dead_letters.is_empty() {
            let desired = Desired {
                stream: dead_letters,
                subjects: &subjects.dead_letters,
                role: Role::DeadLetters,
                ..desired
            };
            Some(self.provision(on, desired, live, &mut all, o).await?)
        } else {
            None
        };
        covered(stream, subjects)?;
        if let Some(problem) = unreachable {
            return Err(problem);
        }
        let dead_letters = dead_letters_managed.map(|m| (dead_letters, m));
        o.pass(
            ConditionType::SubjectsCovered,
            "Covered",
            format!(
                "stream {stream} holds every subject daprd will use for the {} topic(s) found{}; \
                 {INVISIBLE_TOPICS}",
                o.topics.len(),
                dead_letters
                    .map(|(d, _)| format!(", dead-letter topics in stream {d}"))
                    .unwrap_or_default()
            ),
        );
        o.pass(
            ConditionType::ConfigSynced,
            Reason::InSync.as_str(),
            "stream settings match the Component",
        );
        Ok(ready(stream, managed, dead_letters))
    }

    /// One stream's round; `all` then holds its subjects as they are now (what the next round's
    /// overlaps are checked against). Returns whether the operator manages it.
    async fn provision(
        &self,
        on: &Server<'_>,
        desired: Desired<'_>,
        live: Option<jetstream::stream::Info>,
        all: &mut Vec<OtherStream>,
        o: &mut StreamOutcome,
    ) -> Result<bool, Problem> {
        let round = Round {
            ctx: self.ctx,
            target: Bucket::stream(on.js, desired.stream),
            desired,
            others: all
                .iter()
                .filter(|s| s.name != desired.stream)
                .cloned()
                .collect(),
            previously_managed: self.previously_managed(desired.stream, desired.role),
            clustered: on.clustered,
            version: on.version,
            topics: on.topics,
            subjects: on.subjects,
            prefix: on.prefix,
        };
        let (info, managed) = round.apply(live, o).await?;
        round.found(&info, managed, o);
        all.retain(|s| s.name != desired.stream);
        all.push(OtherStream {
            name: desired.stream.to_owned(),
            subjects: info.config.subjects.clone(),
        });
        Ok(managed)
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
    fn previously_managed(&self, stream: &str, role: Role) -> Option<bool> {
        self.previous
            .map(|p| &p.status)
            .and_then(|s| match role {
                Role::Topics => s.stream.as_ref(),
                Role::DeadLetters => s.dead_letter_stream.as_ref(),
            })
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

/// The streams of the account, with their subjects (overlaps are decided before sending).
async fn listed(ctx: &Context, js: &jetstream::Context) -> Result<Vec<OtherStream>, Problem> {
    ctx.metrics.nats_request("list");
    let all = Bucket::stream(js, "")
        .all_streams()
        .await
        .map_err(|e| Problem::of(ConditionType::StreamAvailable, &e))?;
    Ok(all
        .into_iter()
        .map(|(name, subjects)| OtherStream { name, subjects })
        .collect())
}

/// The stream `stream` when it is listed in `all` (an absent stream costs no failed request),
/// and available.
async fn fetched(
    ctx: &Context,
    js: &jetstream::Context,
    stream: &str,
    all: &[OtherStream],
) -> Result<Option<jetstream::stream::Info>, Problem> {
    use ConditionType::StreamAvailable;
    if !all.iter().any(|s| s.name == stream) {
        return Ok(None);
    }
    ctx.metrics.nats_request("info");
    let live = Bucket::stream(js, stream)
        .fetch()
        .await
        .map_err(|e| Problem::of(StreamAvailable, &e))?;
    if let Some(info) = &live
        && let Some(error) = cluster::availability_problem(info)
    {
        return Err(Problem::of(StreamAvailable, &error));
    }
    Ok(live)
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

/// Ready's reason and message; `dead_letters` is the dead-letter stream, when there is one, and
/// whether the operator manages it.
fn ready(
    stream: &str,
    managed: bool,
    dead_letters: Option<(&str, bool)>,
) -> (&'static str, String) {
    let dead_letters = match dead_letters {
        Some((d, true)) => format!("; dead letters go to stream {d}, managed by the operator"),
        Some((d, false)) => format!("; dead letters go to stream {d}, only verified"),
        None => String::new(),
    };
    if managed {
        (
            "StreamManaged",
            format!("stream {stream} is ready and managed by the operator{dead_letters}"),
        )
    } else {
        (
            "StreamVerified",
            format!(
                "stream {stream} is ready; it was created outside the operator and is only \
                 verified{dead_letters}"
            ),
        )
    }
}

/// With `streamName`, daprd binds every subscription of the Component to that stream: a
/// subscription to a dead-letter topic would wait there for messages that are stored in the
/// dead-letter stream. Said plainly (the dead letters are kept all the same). For a Component
/// with `streamName` only.
fn unreachable_dead_letters(
    stream: &str,
    dead_letters: &str,
    topics: &[DiscoveredTopic],
    subjects: &Subjects,
) -> Option<Problem> {
    let topic = topics.iter().find(|t| {
        t.is_subscribed()
            && !matches!(t.source, TopicSource::DeadLetter(_))
            && topics
                .iter()
                .any(|d| d.topic == t.topic && matches!(d.source, TopicSource::DeadLetter(_)))
            && subjects.uncovered.iter().all(|u| u.topic.topic != t.topic)
    })?;
    Some(Problem::new(
        ConditionType::SubjectsCovered,
        "DeadLetterSubscriptionUnreachable",
        format!(
            "topic {} is a dead-letter topic and is subscribed to ({}): its dead letters are kept \
             in stream {dead_letters}, but the Component sets streamName {stream}, so daprd \
             binds that subscription to stream {stream}, where they never arrive; remove \
             streamName from the Component (daprd then finds each topic's stream by subject), or \
             read the dead letters through a second Component without streamName",
            topic.topic, topic.source
        ),
        Retry::Resync,
    ))
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
    spec.dead_letter_stream = Some(dead_letter_stream_name(stream));
    spec.servers = config.redacted_servers.clone();
    spec.auth = Some(config.auth.kind().to_owned());
    spec.topic_prefix = prefix.map(str::to_owned);
    spec.deletion_policy = Some(settings.deletion_policy.as_str().to_owned());
    spec.config = Some(shown_config(&desired_stream(&Desired {
        stream,
        subjects: &[],
        owner: "",
        settings,
        role: Role::Topics,
    })));
}
