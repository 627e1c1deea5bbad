//! NATS subjects for a `pubsub.jetstream` stream: syntax, matching, overlap, and the subjects a
//! Component needs (pure).
//!
//! Dapr publishes to the topic name as the NATS subject and filters its consumers on it. When any
//! metadata value of the Component contains `{namespace}`, daprd prepends the app's namespace to
//! every topic with no separator (`prod` + `orders` is the subject `prodorders`), for publishing,
//! subscribing and dead-letter publishing alike. [`derive_subjects`] applies the same rule.

use std::collections::BTreeSet;

pub use crate::nats::stream::subject::{collide, covers};

/// Subjects under these first tokens belong to NATS itself or to every client of the account:
/// the JetStream API, KV buckets, object stores, the system account, Raft groups, the replies of
/// every request (`_INBOX`), services and MQTT sessions. A Dapr stream must never claim them: on a
/// shared account a stream on `_INBOX.>` would store every reply, other tenants' KV reads
/// included.
const RESERVED_TOKENS: [&str; 9] = [
    "$JS", "$KV", "$O", "$SYS", "$JSC", "$NRG", "_INBOX", "$SRV", "$MQTT",
];

/// Longest subject accepted (NATS has no hard limit; this bounds what one annotation can cost).
pub const MAX_SUBJECT_LEN: usize = 255;

/// At most this many subjects in one stream (user and discovered together).
pub const MAX_SUBJECTS: usize = 1000;

/// Why a text is not a subject a Dapr stream can hold.
pub fn subject_problem(subject: &str) -> Option<String> {
    if subject.is_empty() {
        return Some("it is empty".into());
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Some(format!("it is longer than {MAX_SUBJECT_LEN} bytes"));
    }
    if subject.chars().any(char::is_whitespace) {
        return Some("it contains whitespace".into());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Some("it has an empty token (a leading, trailing or double '.')".into());
        }
        if token.len() > 1 && token.contains(['*', '>']) {
            return Some(format!(
                "the wildcard in {token:?} is not a whole token ('*' and '>' stand alone between dots)"
            ));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Some("'>' is not the last token".into());
        }
    }
    // A wildcard first token matches the first token of every reserved subject below.
    if tokens.first().is_some_and(|t| *t == "*" || *t == ">") {
        return Some(
            "a wildcard as its first token matches every subject of the account, the JetStream \
             API ($JS.) and every reply (_INBOX.) included; start it with a literal token, such \
             as orders.>"
                .into(),
        );
    }
    if let Some(reserved) = tokens
        .first()
        .and_then(|t| RESERVED_TOKENS.iter().find(|r| *r == t))
    {
        return Some(format!(
            "subjects under {reserved}. belong to NATS itself or to every client of the account \
             (the JetStream API, KV buckets, object stores, request replies, services, MQTT)"
        ));
    }
    None
}

/// Where a topic the operator found comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TopicSource {
    /// `spec.topic` of a declarative Subscription (its name).
    Subscription(String),
    /// `spec.deadLetterTopic` of a declarative Subscription (its name).
    DeadLetter(String),
    /// The Component's `allowedTopics`.
    AllowedTopics,
    /// The Component's `publishingScopes`.
    PublishingScopes,
    /// The Component's `subscriptionScopes`.
    SubscriptionScopes,
}

impl std::fmt::Display for TopicSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subscription(name) => write!(f, "Subscription {name}"),
            Self::DeadLetter(name) => write!(f, "dead-letter topic of Subscription {name}"),
            Self::AllowedTopics => f.write_str("allowedTopics"),
            Self::PublishingScopes => f.write_str("publishingScopes"),
            Self::SubscriptionScopes => f.write_str("subscriptionScopes"),
        }
    }
}

/// A topic daprd will publish to or subscribe to, as found in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiscoveredTopic {
    /// The topic as written (without the namespace prefix).
    pub topic: String,
    /// Where it was found.
    pub source: TopicSource,
}

impl DiscoveredTopic {
    /// Whether daprd creates a consumer for it (a subscription), rather than only publishing.
    pub fn is_subscribed(&self) -> bool {
        matches!(
            self.source,
            TopicSource::Subscription(_) | TopicSource::SubscriptionScopes
        )
    }
}

/// A discovered topic the stream will not cover, and why. daprd will fail on it at runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uncovered {
    /// The topic and where it was found.
    pub topic: DiscoveredTopic,
    /// The subject daprd will use (prefix applied).
    pub subject: String,
    /// Why the stream cannot hold it.
    pub problem: String,
}

/// The subjects a Component's streams must hold.
///
/// Dead-letter topics get a stream of their own: daprd publishes a dead letter with the failed
/// message's CloudEvent id as `Nats-Msg-Id`, so in the topic's stream the duplicate window would
/// acknowledge it as a duplicate and drop it. A topic that is both a dead-letter topic and a
/// normal topic (subscribed to, allowed) is a dead-letter subject only: a subject belongs to one
/// stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subjects {
    /// The topics' stream: sorted, without duplicates and without a subject another one covers.
    pub subjects: Vec<String>,
    /// The dead-letter stream's, the same way.
    pub dead_letters: Vec<String>,
    /// Discovered topics left out, each with its reason.
    pub uncovered: Vec<Uncovered>,
}

impl Subjects {
    /// Whether `subject` (prefix applied) belongs to the dead-letter stream.
    pub fn is_dead_letter(&self, subject: &str) -> bool {
        self.dead_letters.iter().any(|d| covers(d, subject))
    }
}

/// A subject from the user that cannot be used: the Component must change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Not a valid stream subject.
    #[error(
        "subject {subject:?} in the jetstreamkv.io/subjects annotation is not usable: {problem}; \
         use topic names or patterns such as orders or orders.>, separated by commas{prefix_hint}"
    )]
    Invalid {
        /// The subject, prefix applied.
        subject: String,
        /// What is wrong.
        problem: String,
        /// A hint when the namespace prefix made it invalid.
        prefix_hint: String,
    },
    /// Two user subjects overlap without one covering the other: nats-server refuses that.
    #[error(
        "subjects {a:?} and {b:?} in the jetstreamkv.io/subjects annotation overlap (some subject \
         matches both) without one covering the other; keep the wider one or make them disjoint"
    )]
    Overlapping {
        /// One subject.
        a: String,
        /// The other.
        b: String,
    },
    /// More subjects than one stream may hold here.
    #[error(
        "the stream would hold {count} subjects, more than {MAX_SUBJECTS}; use patterns such as \
         orders.> in the jetstreamkv.io/subjects annotation"
    )]
    TooMany {
        /// How many.
        count: usize,
    },
}

/// The user's subjects (topics or topic patterns, comma- or whitespace-separated) from the
/// annotation text, without the namespace prefix.
pub fn parse_user_subjects(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The subjects the streams must hold: the user's patterns and every discovered topic, each with
/// `prefix` (the namespace, when daprd prepends it) in front; dead-letter topics apart (see
/// [`Subjects`]). A discovered topic that is not a valid subject, or that partly overlaps a user
/// pattern, is reported in `uncovered` instead; so is a dead-letter topic that any user pattern
/// matches (its dead letters would land in the topics' stream and be dropped as duplicates), and
/// a topic that partly overlaps a dead-letter topic.
pub fn derive_subjects(
    user: &[String],
    discovered: &[DiscoveredTopic],
    prefix: Option<&str>,
) -> Result<Subjects, SubjectError> {
    // The pairwise checks below are quadratic: bound the input first.
    let input = user.len() + discovered.len();
    if input > 4 * MAX_SUBJECTS {
        return Err(SubjectError::TooMany { count: input });
    }
    let prefix = prefix.unwrap_or_default();
    let mut wanted = user_subjects(user, prefix)?;
    let user_set: Vec<String> = wanted.iter().cloned().collect();
    let (dead, normal) = split_dead_letters(discovered);
    let mut dead_set = BTreeSet::new();
    let mut uncovered = add_discovered(
        &mut dead_set,
        &user_set,
        StreamOf::DeadLetters,
        &dead,
        prefix,
    );
    let dead_set: Vec<String> = dead_set.into_iter().collect();
    uncovered.extend(add_discovered(
        &mut wanted,
        &user_set,
        StreamOf::Topics(&dead_set),
        &normal,
        prefix,
    ));
    uncovered.sort_by(|a, b| a.topic.cmp(&b.topic));
    let subjects = without_covered(wanted);
    let dead_letters = without_covered(dead_set.into_iter().collect());
    let count = subjects.len() + dead_letters.len();
    if count > MAX_SUBJECTS {
        return Err(SubjectError::TooMany { count });
    }
    Ok(Subjects {
        subjects,
        dead_letters,
        uncovered,
    })
}

/// The dead-letter topics (with every other source of the same topic), and the rest.
fn split_dead_letters(
    discovered: &[DiscoveredTopic],
) -> (Vec<&DiscoveredTopic>, Vec<&DiscoveredTopic>) {
    let dead: BTreeSet<&str> = discovered
        .iter()
        .filter(|t| matches!(t.source, TopicSource::DeadLetter(_)))
        .map(|t| t.topic.as_str())
        .collect();
    discovered
        .iter()
        .partition(|t| dead.contains(t.topic.as_str()))
}

/// The user's patterns, prefixed: each a valid subject, no two partly overlapping.
fn user_subjects(user: &[String], prefix: &str) -> Result<BTreeSet<String>, SubjectError> {
    let prefix_hint = |subject: &str| {
        if prefix.is_empty() {
            String::new()
        } else {
            format!(
                " (a metadata value of the Component contains {{namespace}}, so daprd prepends \
                 the namespace {prefix:?} to every topic with no separator: {subject:?})"
            )
        }
    };
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for topic in user {
        let subject = format!("{prefix}{topic}");
        if let Some(problem) = subject_problem(&subject) {
            return Err(SubjectError::Invalid {
                prefix_hint: prefix_hint(&subject),
                subject,
                problem,
            });
        }
        wanted.insert(subject);
    }
    let user_set: Vec<&String> = wanted.iter().collect();
    for (i, a) in user_set.iter().enumerate() {
        for b in &user_set[i + 1..] {
            if collide(a, b) && !covers(a, b) && !covers(b, a) {
                return Err(SubjectError::Overlapping {
                    a: (*a).clone(),
                    b: (*b).clone(),
                });
            }
        }
    }
    Ok(wanted)
}

/// Adds each discovered topic's subject to `wanted`; returns those that cannot be added, with
/// why. `of` says which stream they are for.
fn add_discovered(
    wanted: &mut BTreeSet<String>,
    user_set: &[String],
    of: StreamOf<'_>,
    discovered: &[&DiscoveredTopic],
    prefix: &str,
) -> Vec<Uncovered> {
    let mut uncovered = Vec::new();
    let mut topics: Vec<&DiscoveredTopic> = discovered.to_vec();
    topics.sort();
    topics.dedup();
    for topic in topics {
        let subject = format!("{prefix}{}", topic.topic);
        let problem = subject_problem(&subject)
            .map(|p| format!("{p}{}", prefix_note(prefix)))
            .or_else(|| overlap_problem(&subject, user_set, of));
        match problem {
            Some(problem) => uncovered.push(Uncovered {
                topic: topic.clone(),
                subject,
                problem,
            }),
            None => {
                wanted.insert(subject);
            }
        }
    }
    uncovered
}

fn prefix_note(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!(" (namespace prefix {prefix:?} applied)")
    }
}

/// Which stream discovered topics are for.
#[derive(Clone, Copy)]
enum StreamOf<'a> {
    /// The dead-letter stream: no user pattern may match them.
    DeadLetters,
    /// The topics' stream: they may not overlap these dead-letter subjects.
    Topics(&'a [String]),
}

/// Why a discovered subject cannot be in its stream because of another subject, if it cannot.
fn overlap_problem(subject: &str, user_set: &[String], of: StreamOf<'_>) -> Option<String> {
    let dead_letters = match of {
        StreamOf::Topics(dead_letters) => dead_letters,
        StreamOf::DeadLetters => return user_set.iter().find(|u| collide(u, subject)).map(|u| {
            format!(
                "it is a dead-letter topic and the subject {u:?} of the jetstreamkv.io/subjects \
                 annotation matches it: its dead letters would be stored in the topics' stream \
                 and dropped there as duplicates (daprd reuses the failed message's id); choose \
                 a dead-letter topic outside that pattern"
            )
        }),
    };
    if let Some(u) = user_set
        .iter()
        .find(|u| collide(u, subject) && !covers(u, subject) && !covers(subject, u))
    {
        return Some(format!(
            "it overlaps the subject {u:?} of the jetstreamkv.io/subjects annotation without \
             being covered by it"
        ));
    }
    dead_letters.iter().find(|d| collide(d, subject)).map(|d| {
        format!(
            "it overlaps the dead-letter topic {d:?}, which has a stream of its own; a \
                 subject can be in one stream only: rename one of them"
        )
    })
}

/// The subjects, without those another one covers.
fn without_covered(wanted: BTreeSet<String>) -> Vec<String> {
    let all: Vec<String> = wanted.into_iter().collect();
    all.iter()
        .filter(|s| !all.iter().any(|w| w != *s && covers(w, s)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_syntax() {
        for (subject, ok) in [
            ("orders", true),
            ("orders.new", true),
            ("orders.*", true),
            ("orders.>", true),
            ("*.created", false),
            ("*.>", false),
            ("*.API.>", false),
            ("_INBOX.>", false),
            ("_INBOX.abc", false),
            ("$SRV.>", false),
            ("$MQTT.sess.>", false),
            ("inbox._INBOX", true),
            ("prod-orders_v2", true),
            ("", false),
            (">", false),
            ("orders.", false),
            (".orders", false),
            ("orders..new", false),
            ("orders.>.new", false),
            ("orders*", false),
            ("ord>", false),
            ("my orders", false),
            ("$KV.cart.>", false),
            ("$JS.API.>", false),
            ("$SYS.x", false),
        ] {
            assert_eq!(subject_problem(subject).is_none(), ok, "{subject:?}");
        }
        assert!(subject_problem(&"a".repeat(MAX_SUBJECT_LEN + 1)).is_some());
    }

    #[test]
    fn covering() {
        for (pattern, subject, want) in [
            ("orders", "orders", true),
            ("orders.>", "orders.new", true),
            ("orders.>", "orders.new.eu", true),
            ("orders.>", "orders.*", true),
            ("orders.>", "orders.>", true),
            ("orders.>", "orders", false),
            ("orders.*", "orders.new", true),
            ("orders.*", "orders.*", true),
            ("orders.*", "orders.>", false),
            ("orders.*", "orders.new.eu", false),
            ("orders.new", "orders.*", false),
            ("*.new", "orders.new", true),
            ("orders", "payments", false),
        ] {
            assert_eq!(covers(pattern, subject), want, "{pattern} covers {subject}");
        }
    }

    #[test]
    fn collisions() {
        for (a, b, want) in [
            ("orders", "orders", true),
            ("orders", "payments", false),
            ("orders.>", "orders.new", true),
            ("orders.new", "orders.>", true),
            ("orders.*.eu", "orders.new.*", true),
            ("orders.*", "orders.new.eu", false),
            ("orders.>", "orders", false),
            ("*.new", "orders.*", true),
            ("$KV.cart.>", "$KV.cart.k1", true),
            ("$KV.cart.>", "orders", false),
            ("prodorders", "orders", false),
        ] {
            assert_eq!(collide(a, b), want, "{a} vs {b}");
            assert_eq!(collide(b, a), want, "{b} vs {a}");
        }
    }

    fn sub(topic: &str, name: &str) -> DiscoveredTopic {
        DiscoveredTopic {
            topic: topic.into(),
            source: TopicSource::Subscription(name.into()),
        }
    }

    fn dead(topic: &str, name: &str) -> DiscoveredTopic {
        DiscoveredTopic {
            topic: topic.into(),
            source: TopicSource::DeadLetter(name.into()),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn user_subjects_are_split_on_commas_and_whitespace() {
        assert_eq!(
            parse_user_subjects(" orders.>, payments\n audit ,,"),
            strings(&["orders.>", "payments", "audit"])
        );
        assert!(parse_user_subjects("  ").is_empty());
    }

    #[test]
    fn derivation() {
        struct Case {
            name: &'static str,
            user: &'static [&'static str],
            discovered: Vec<DiscoveredTopic>,
            prefix: Option<&'static str>,
            subjects: &'static [&'static str],
            dead_letters: &'static [&'static str],
            uncovered: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "two subscriptions, one dead-letter topic",
                user: &[],
                discovered: vec![
                    sub("orders", "a"),
                    sub("payments", "b"),
                    dead("poison", "b"),
                ],
                prefix: None,
                subjects: &["orders", "payments"],
                dead_letters: &["poison"],
                uncovered: &[],
            },
            Case {
                name: "a user pattern covers discovered topics",
                user: &["orders.>"],
                discovered: vec![sub("orders.new", "a"), sub("orders.paid", "b")],
                prefix: None,
                subjects: &["orders.>"],
                dead_letters: &[],
                uncovered: &[],
            },
            Case {
                name: "namespace prefix with no separator",
                user: &["audit.>"],
                discovered: vec![sub("orders", "a"), dead("poison", "a")],
                prefix: Some("prod"),
                subjects: &["prodaudit.>", "prodorders"],
                dead_letters: &["prodpoison"],
                uncovered: &[],
            },
            Case {
                name: "duplicates from several sources count once",
                user: &["orders"],
                discovered: vec![
                    sub("orders", "a"),
                    sub("orders", "b"),
                    DiscoveredTopic {
                        topic: "orders".into(),
                        source: TopicSource::AllowedTopics,
                    },
                ],
                prefix: None,
                subjects: &["orders"],
                dead_letters: &[],
                uncovered: &[],
            },
            Case {
                name: "invalid discovered topics are reported, not fatal",
                user: &[],
                discovered: vec![
                    sub("orders", "a"),
                    sub("my orders", "b"),
                    sub("$KV.cart.k", "c"),
                ],
                prefix: None,
                subjects: &["orders"],
                dead_letters: &[],
                uncovered: &["$KV.cart.k", "my orders"],
            },
            Case {
                name: "a discovered pattern that partly overlaps a user pattern",
                user: &["orders.*.eu"],
                discovered: vec![sub("orders.new.*", "a")],
                prefix: None,
                subjects: &["orders.*.eu"],
                dead_letters: &[],
                uncovered: &["orders.new.*"],
            },
            Case {
                name: "a subscribed dead-letter topic is in the dead-letter stream only",
                user: &[],
                discovered: vec![
                    sub("payments", "a"),
                    dead("poison", "a"),
                    sub("poison", "p"),
                    DiscoveredTopic {
                        topic: "poison".into(),
                        source: TopicSource::AllowedTopics,
                    },
                ],
                prefix: None,
                subjects: &["payments"],
                dead_letters: &["poison"],
                uncovered: &[],
            },
            Case {
                name: "a user pattern may not take a dead-letter topic",
                user: &["orders.>"],
                discovered: vec![sub("orders.new", "a"), dead("orders.dead", "a")],
                prefix: None,
                subjects: &["orders.>"],
                dead_letters: &[],
                uncovered: &["orders.dead"],
            },
            Case {
                name: "a topic pattern that overlaps a dead-letter topic",
                user: &[],
                discovered: vec![sub("audit.*", "a"), dead("audit.dead", "b")],
                prefix: None,
                subjects: &[],
                dead_letters: &["audit.dead"],
                uncovered: &["audit.*"],
            },
        ];
        for case in cases {
            let got = derive_subjects(&strings(case.user), &case.discovered, case.prefix)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(got.subjects, strings(case.subjects), "{}", case.name);
            assert_eq!(
                got.dead_letters,
                strings(case.dead_letters),
                "{}",
                case.name
            );
            let uncovered: Vec<&str> = got.uncovered.iter().map(|u| u.subject.as_str()).collect();
            assert_eq!(uncovered, case.uncovered, "{}", case.name);
        }
    }

    #[test]
    fn bad_user_subjects_are_errors_with_the_prefix_explained() {
        let err = derive_subjects(&strings(&["*.created"]), &[], Some("prod")).unwrap_err();
        assert!(matches!(err, SubjectError::Invalid { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("prod*.created"), "{msg}");
        assert!(msg.contains("{namespace}"), "{msg}");

        let err = derive_subjects(&strings(&[">"]), &[], None).unwrap_err();
        assert!(err.to_string().contains("every subject"), "{err}");

        let err = derive_subjects(&strings(&["a.*.c", "a.b.*"]), &[], None).unwrap_err();
        assert_eq!(
            err,
            SubjectError::Overlapping {
                a: "a.*.c".into(),
                b: "a.b.*".into()
            }
        );
    }

    #[test]
    fn too_many_subjects_is_an_error_not_a_slow_stream() {
        let discovered: Vec<DiscoveredTopic> = (0..=MAX_SUBJECTS)
            .map(|i| sub(&format!("t{i}"), "a"))
            .collect();
        let err = derive_subjects(&[], &discovered, None).unwrap_err();
        assert_eq!(
            err,
            SubjectError::TooMany {
                count: MAX_SUBJECTS + 1
            }
        );
    }
}
