//! The subjects step of a `pubsub.jetstream` Component (pure): its streams' names, the topics
//! the operator can see, and the subjects the streams must hold, with the namespace prefix as
//! daprd applies it. Decided before any connection: what NATS is asked for comes from here.

use crate::crd::ConditionType;
use crate::failure::{Problem, Retry};
use crate::pubsub::stream::{StreamSettings, dead_letter_stream_name, stream_name};
use crate::pubsub::topics::discover;
use crate::pubsub::{
    DiscoveredTopic, PubsubConfig, PubsubError, Subjects, Subscription, TopicSource,
    derive_subjects,
};
use crate::reconcile::status::Reason;

/// What a valid `pubsub.jetstream` Component asks of NATS.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The topics' stream.
    pub stream: String,
    /// The dead-letter stream (made when there are dead-letter topics).
    pub dead_letters: String,
    /// The namespace prefix daprd puts before each topic, when it does.
    pub prefix: Option<String>,
    /// The topics found and the subjects they need, or why they are not known.
    pub subjects: Result<Found, Problem>,
}

impl Prepared {
    /// The subjects daprd subscribes to among `found`'s topics (prefix applied): each
    /// subscription's consumer filters on one.
    pub fn subscribed_subjects(&self, found: &Found) -> Vec<String> {
        let prefix = self.prefix.as_deref().unwrap_or_default();
        found
            .topics
            .iter()
            .filter(|t| t.is_subscribed())
            .map(|t| format!("{prefix}{}", t.topic))
            .collect()
    }
}

/// The topics found and the subjects the streams must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub topics: Vec<DiscoveredTopic>,
    pub subjects: Subjects,
    /// With `streamName`, a dead-letter subscription that cannot receive: a Warning and, once
    /// the streams are as wanted, the end of the reconcile.
    pub unreachable: Option<Problem>,
}

/// The streams of the Component `namespace/name` and their subjects, from its config, settings
/// and the declarative Subscriptions of its namespace (Err: they could not be read).
pub fn prepare(
    namespace: &str,
    name: &str,
    config: &PubsubConfig,
    settings: &StreamSettings,
    subscriptions: Result<&[Subscription], &Problem>,
) -> Prepared {
    let stream = stream_name(config.stream_name.as_deref(), settings, namespace, name);
    let dead_letters = dead_letter_stream_name(&stream);
    let prefix = config.namespace_scoped.then(|| namespace.to_owned());
    let subjects = subscriptions
        .map_err(Clone::clone)
        .and_then(|subscriptions| {
            let topics = discover(namespace, name, config, subscriptions);
            let subjects = derive_subjects(&settings.subjects, &topics, prefix.as_deref())
                .map_err(|e| Problem::of(ConditionType::SubjectsCovered, &PubsubError::from(e)))?;
            let unreachable = config
                .stream_name
                .as_ref()
                .and_then(|_| unreachable_dead_letters(&stream, &dead_letters, &topics, &subjects));
            Ok(Found {
                topics,
                subjects,
                unreachable,
            })
        });
    Prepared {
        stream,
        dead_letters,
        prefix,
        subjects,
    }
}

/// The problem of Subscriptions that could not be read (`error` as the API server said it).
pub fn subscriptions_unreadable(namespace: &str, error: &str) -> Problem {
    Problem::new(
        ConditionType::SubjectsCovered,
        Reason::SubscriptionsUnreadable.as_str(),
        format!(
            "the declarative Subscriptions of namespace {namespace} could not be read ({}); the \
             stream is left as it is until they can: check the operator's RBAC (get, list, watch \
             on subscriptions.dapr.io)",
            crate::nats::remote_text(error)
        ),
        Retry::Backoff,
    )
}

/// With `streamName`, daprd binds every subscription of the Component to that stream: a
/// subscription to a dead-letter topic would wait there for messages that are stored in the
/// dead-letter stream. Said plainly (the dead letters are kept all the same).
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
        Reason::DeadLetterSubscriptionUnreachable.as_str(),
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
