//! The topics of one `pubsub.jetstream` Component that the operator can see, and whether the
//! stream covers each (pure): what the JetStreamStream status lists.
//!
//! Seen: declarative Subscriptions of the Component's namespace naming it in `spec.pubsubname`
//! (topic and dead-letter topic), and the Component's `allowedTopics`, `publishingScopes` and
//! `subscriptionScopes`. Not seen: programmatic (`/dapr/subscribe`) and streaming subscriptions,
//! and topics apps only publish to; those are declared with the `jetstreamkv.io/subjects`
//! annotation.

use std::collections::BTreeSet;

use super::component::PubsubConfig;
use super::resource::TopicStatus;
use super::subjects::{DiscoveredTopic, MAX_SUBJECTS, Subjects, covers};
use super::subscription::Subscription;

/// What the status says about the topics it cannot see.
pub const INVISIBLE_TOPICS: &str = "programmatic (/dapr/subscribe) and streaming subscriptions, \
    and topics apps only publish to, are invisible to the operator: list them in the \
    jetstreamkv.io/subjects annotation";

/// Every topic of the Component `namespace/component` the operator can see, sorted, duplicates
/// (same topic, same source) removed.
pub fn discover(
    namespace: &str,
    component: &str,
    config: &PubsubConfig,
    subscriptions: &[Subscription],
) -> Vec<DiscoveredTopic> {
    let mut out: Vec<DiscoveredTopic> = subscriptions
        .iter()
        .filter(|s| s.uses(namespace, component))
        .flat_map(Subscription::topics)
        .chain(config.topics())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How many distinct topics daprd will create consumers for.
pub fn subscribed_count(topics: &[DiscoveredTopic]) -> usize {
    topics
        .iter()
        .filter(|t| t.is_subscribed())
        .map(|t| t.topic.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

/// A stream of the Component and, once it was read, its live subjects.
#[derive(Clone, Copy, Debug)]
pub struct Held<'a> {
    /// The stream's name.
    pub stream: &'a str,
    /// Its live subjects; None before it was read (or when it does not exist yet).
    pub live: Option<&'a [String]>,
}

/// One status entry per discovered topic (at most [`MAX_SUBJECTS`]): the stream meant to hold
/// it (`topics`, or `dead_letters` for a dead-letter subject), and whether it is covered: when
/// that stream will hold its subject and, once its live subjects are known, when they do.
pub fn topic_statuses(
    topics: &[DiscoveredTopic],
    subjects: &Subjects,
    prefix: Option<&str>,
    streams: Held<'_>,
    dead_letters: Held<'_>,
) -> Vec<TopicStatus> {
    let prefix = prefix.unwrap_or_default();
    topics
        .iter()
        .take(MAX_SUBJECTS)
        .map(|t| {
            let subject = format!("{prefix}{}", t.topic);
            let uncovered = subjects.uncovered.iter().find(|u| &u.topic == t);
            let held = if subjects.is_dead_letter(&subject) {
                dead_letters
            } else {
                streams
            };
            let problem = uncovered.map(|u| u.problem.clone()).or_else(|| {
                held.live
                    .filter(|live| !live.iter().any(|l| covers(l, &subject)))
                    .map(|_| format!("stream {} does not hold this subject", held.stream))
            });
            TopicStatus {
                topic: t.topic.clone(),
                subject,
                source: t.source.to_string(),
                stream: uncovered.is_none().then(|| held.stream.to_owned()),
                covered: problem.is_none(),
                problem,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::component::pubsub_config;
    use crate::pubsub::subjects::{TopicSource, derive_subjects};
    use crate::secret_value::SecretValue;

    fn config(items: &[(&str, &str)]) -> PubsubConfig {
        let values: Vec<(String, SecretValue)> = items
            .iter()
            .map(|(n, v)| (n.to_string(), SecretValue::new(*v)))
            .collect();
        pubsub_config(&values).unwrap()
    }

    fn subscriptions() -> Vec<Subscription> {
        let mut payments = Subscription::new("shop", "payments", "events", "payments");
        payments.spec.dead_letter_topic = "poison".into();
        vec![
            Subscription::new("shop", "orders", "events", "orders"),
            payments,
            // Another Component, another namespace: not ours.
            Subscription::new("shop", "audit", "other", "audit"),
            Subscription::new("elsewhere", "orders", "events", "refunds"),
        ]
    }

    #[test]
    fn discovery_takes_only_the_components_own_subscriptions_and_metadata() {
        let c = config(&[
            ("natsURL", "nats://n:4222"),
            ("subscriptionScopes", "app1=orders,invoices"),
        ]);
        let topics = discover("shop", "events", &c, &subscriptions());
        let seen: Vec<(&str, String)> = topics
            .iter()
            .map(|t| (t.topic.as_str(), t.source.to_string()))
            .collect();
        assert_eq!(
            seen,
            [
                ("invoices", "subscriptionScopes".to_string()),
                ("orders", "Subscription orders".to_string()),
                ("orders", "subscriptionScopes".to_string()),
                ("payments", "Subscription payments".to_string()),
                (
                    "poison",
                    "dead-letter topic of Subscription payments".to_string()
                ),
            ]
        );
        // orders, payments, invoices: the dead-letter topic is only published to.
        assert_eq!(subscribed_count(&topics), 3);
    }

    #[test]
    fn statuses_say_which_topics_are_covered_and_why_not() {
        let c = config(&[("natsURL", "nats://n:4222")]);
        let mut subs = subscriptions();
        subs.push(Subscription::new("shop", "bad", "events", "my topic"));
        let topics = discover("shop", "events", &c, &subs);
        let subjects = derive_subjects(&[], &topics, Some("shop")).unwrap();

        // Before the stream is read: what the plan will hold.
        let unread = |stream| Held { stream, live: None };
        let planned = topic_statuses(
            &topics,
            &subjects,
            Some("shop"),
            unread("S"),
            unread("S_deadletter"),
        );
        let covered: Vec<(&str, bool)> = planned
            .iter()
            .map(|t| (t.subject.as_str(), t.covered))
            .collect();
        assert_eq!(
            covered,
            [
                ("shopmy topic", false),
                ("shoporders", true),
                ("shoppayments", true),
                ("shoppoison", true)
            ]
        );
        assert!(
            planned[0]
                .problem
                .as_deref()
                .unwrap()
                .contains("whitespace")
        );

        let streams: Vec<Option<&str>> = planned.iter().map(|t| t.stream.as_deref()).collect();
        assert_eq!(
            streams,
            [None, Some("S"), Some("S"), Some("S_deadletter")],
            "a dead-letter topic is held by the dead-letter stream"
        );

        // Against a live stream that lacks one subject, and a dead-letter stream not read yet.
        let live = vec!["shoporders".to_string(), "shopaudit".to_string()];
        let read = Held {
            stream: "S",
            live: Some(&live),
        };
        let statuses = topic_statuses(
            &topics,
            &subjects,
            Some("shop"),
            read,
            unread("S_deadletter"),
        );
        let missing: Vec<&str> = statuses
            .iter()
            .filter(|t| !t.covered)
            .map(|t| t.topic.as_str())
            .collect();
        assert_eq!(missing, ["my topic", "payments"]);
        assert_eq!(
            statuses[2].problem.as_deref(),
            Some("stream S does not hold this subject")
        );
        // Once the dead-letter stream is read: it holds the dead-letter subject, not S.
        let dead = vec!["shoppoison".to_string()];
        let both = Held {
            stream: "S_deadletter",
            live: Some(&dead),
        };
        let statuses = topic_statuses(&topics, &subjects, Some("shop"), read, both);
        assert!(statuses[3].covered, "{:?}", statuses[3]);
        let everything: Vec<String> = ["shoporders", "shoppayments", "shoppoison"]
            .map(String::from)
            .to_vec();
        let holds_all = Held {
            stream: "S",
            live: Some(&everything),
        };
        let lacking = Held {
            stream: "S_deadletter",
            live: Some(&[]),
        };
        let statuses = topic_statuses(&topics, &subjects, Some("shop"), holds_all, lacking);
        assert_eq!(
            statuses[3].problem.as_deref(),
            Some("stream S_deadletter does not hold this subject"),
            "the topics' stream holding it would not do"
        );
        assert_eq!(statuses[2].source, "Subscription payments");
        assert!(matches!(topics[0].source, TopicSource::Subscription(_)));
    }
}
