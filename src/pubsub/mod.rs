//! Streams for Dapr's `pubsub.jetstream` Components, without I/O.
//!
//! daprd never creates the stream its JetStream pub/sub needs: without one that covers a topic,
//! publishing fails (`nats: no response from stream`) and subscribing fails (`nats: no stream
//! matches subject`). The operator provisions it:
//! - [`component`]: the Component's metadata with Dapr's rules, and the warnings it alone gives;
//! - [`subscription`]: Dapr's declarative `Subscription`;
//! - [`topics`]: the topics of a Component the operator can see, and their coverage in status;
//! - [`subjects`]: subject syntax, matching and overlap, and the subjects a stream must hold
//!   (the namespace prefix applied as daprd applies it);
//! - [`stream`]: the stream's settings from annotations and the create-or-verify plan;
//! - [`resource`]: the `JetStreamStream` resource that reports a stream's state.
//!
//! What the operator cannot see: programmatic subscriptions (`/dapr/subscribe`), streaming
//! subscriptions, and topics an app only publishes to. Those are declared with the
//! `jetstreamkv.io/subjects` annotation.

pub mod component;
pub mod consumer;
pub mod resource;
pub mod stream;
pub mod subjects;
pub mod subscription;
pub mod topics;

pub use component::{PubsubConfig, pubsub_config, pubsub_config_with_origins};
pub use resource::JetStreamStream;
pub use stream::{StreamPlan, StreamSettings};
pub use subjects::{DiscoveredTopic, SubjectError, Subjects, TopicSource, derive_subjects};
pub use subscription::Subscription;

use crate::dapr::ComponentError;
use crate::failure::{Failure, Retry};

/// A `pubsub.jetstream` Component the operator cannot act on as written: the manifest must
/// change. Messages never hold a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubsubError {
    /// A rule shared with `state.jetstream` (metadata, templates, `natsURL`, `jwt`/`seedKey`).
    #[error(transparent)]
    Component(#[from] ComponentError),

    /// `tls_client_cert` without `tls_client_key` (Dapr refuses it too).
    #[error(
        "metadata item tls_client_cert is set but tls_client_key is missing or empty: set both \
         or neither"
    )]
    TlsCertWithoutKey,

    /// `tls_client_key` without `tls_client_cert` (Dapr refuses it too).
    #[error(
        "metadata item tls_client_key is set but tls_client_cert is missing or empty: set both \
         or neither"
    )]
    TlsKeyWithoutCert,

    /// A client certificate names files inside the sidecar, which the operator cannot read.
    #[error(
        "metadata items tls_client_cert and tls_client_key name files inside the Dapr sidecar, \
         which the operator cannot read; use jwt and seedKey, a token, or user and password in \
         natsURL for this Component, or create the stream yourself"
    )]
    TlsClientAuthUnsupported,

    /// `streamName` (or the `jetstreamkv.io/stream` annotation) is not a valid stream name.
    #[error("stream name {name:?} is not valid: {problem}; use letters, digits, '-' and '_'")]
    InvalidStreamName {
        /// The name as written.
        name: String,
        /// What is wrong.
        problem: String,
    },

    /// `durableName` or `queueGroupName` is not a name NATS takes for daprd's consumers.
    #[error(
        "metadata item {item} {name} is not a valid consumer name: {problem}; daprd's \
         subscriptions would fail: change it"
    )]
    InvalidConsumerName {
        /// The metadata item, as written.
        item: String,
        /// The name, quoted (or where it came from, when from a Secret).
        name: String,
        /// What is wrong.
        problem: String,
    },

    /// A subject of the `jetstreamkv.io/subjects` annotation cannot be used.
    #[error(transparent)]
    Subject(#[from] SubjectError),

    /// WorkQueue retention was asked for: it breaks Dapr's fan-out.
    #[error(
        "jetstreamkv.io/retention \"workqueue\" is refused: a WorkQueue stream allows one \
         consumer per subject, so a second Dapr app subscribing to a topic fails (NATS errors \
         10100/10101); use \"limits\" (the default) or \"interest\""
    )]
    WorkQueueRefused,

    /// An annotation a stream shares with a bucket (storage, replicas, max-bytes, policies) is
    /// not valid, or a `jetstreamkv.io/` annotation is not known.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),

    /// A stream annotation has a value that cannot be used.
    #[error("annotation {annotation} {value:?} is not valid: {expected}")]
    InvalidAnnotation {
        /// The annotation.
        annotation: &'static str,
        /// The value as written.
        value: String,
        /// What to write instead.
        expected: String,
    },
}

impl Failure for PubsubError {
    /// The CamelCase reason for conditions, events and metrics.
    fn reason(&self) -> &'static str {
        match self {
            Self::Component(e) => e.reason(),
            Self::TlsCertWithoutKey => "TlsCertWithoutKey",
            Self::TlsKeyWithoutCert => "TlsKeyWithoutCert",
            Self::TlsClientAuthUnsupported => "TlsClientAuthUnsupported",
            Self::InvalidStreamName { .. } => "InvalidStreamName",
            Self::InvalidConsumerName { .. } => "InvalidConsumerName",
            Self::Subject(SubjectError::Invalid { .. }) => "InvalidSubject",
            Self::Subject(SubjectError::Overlapping { .. }) => "OverlappingSubjects",
            Self::Subject(SubjectError::TooMany { .. }) => "TooManySubjects",
            Self::WorkQueueRefused => "WorkQueueRefused",
            Self::InvalidAnnotation { .. } => "InvalidAnnotation",
            Self::Settings(e) => e.reason(),
        }
    }

    /// Every variant is a property of the manifest: retrying without a change cannot help.
    fn retry(&self) -> Retry {
        Retry::AwaitChange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_camel_case_and_messages_say_what_to_do() {
        let errors = [
            PubsubError::Component(ComponentError::MissingNatsURL),
            PubsubError::TlsCertWithoutKey,
            PubsubError::TlsKeyWithoutCert,
            PubsubError::TlsClientAuthUnsupported,
            PubsubError::InvalidStreamName {
                name: "a.b".into(),
                problem: "dot".into(),
            },
            PubsubError::Subject(SubjectError::Invalid {
                subject: "a b".into(),
                problem: "space".into(),
                prefix_hint: String::new(),
            }),
            PubsubError::Subject(SubjectError::Overlapping {
                a: "a.*".into(),
                b: "*.b".into(),
            }),
            PubsubError::Subject(SubjectError::TooMany { count: 2000 }),
            PubsubError::WorkQueueRefused,
            PubsubError::InvalidAnnotation {
                annotation: "jetstreamkv.io/storage",
                value: "disk".into(),
                expected: "use file or memory".into(),
            },
        ];
        let reasons: std::collections::BTreeSet<_> = errors.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), errors.len());
        for e in &errors {
            assert!(e.reason().chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(e.is_permanent());
            let msg = e.to_string();
            assert!(
                ["set ", "use ", "keep ", "remove "]
                    .iter()
                    .any(|t| msg.contains(t)),
                "{msg}"
            );
        }
    }
}
