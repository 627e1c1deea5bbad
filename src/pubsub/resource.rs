//! The `JetStreamStream` resource: what the operator understood of a `pubsub.jetstream`
//! Component, and the state of its stream. One per Component, same name and namespace, owned by
//! it; the same conditions (kstatus) as a `KeyValueBucket`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{ConditionType, ReconcileStatus};

/// Spec of a JetStreamStream. Written by the operator only: it shows what the operator understood
/// of the Component. It never holds a secret value.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jetstreamkv.io",
    version = "v1beta1",
    kind = "JetStreamStream",
    namespaced,
    shortname = "jss",
    status = "JetStreamStreamStatus",
    doc = "The NATS JetStream stream of a Dapr pubsub.jetstream Component, as the operator sees it. Written by jetstream-kv-operator; edit the Component (or its Subscriptions) instead.",
    printcolumn = r#"{"name":"Stream","type":"string","jsonPath":".spec.stream"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Managed","type":"boolean","priority":1,"jsonPath":".status.stream.managed"}"#,
    printcolumn = r#"{"name":"Subjects","type":"string","priority":1,"jsonPath":".spec.subjects"}"#,
    printcolumn = r#"{"name":"DeadLetters","type":"string","priority":1,"jsonPath":".spec.deadLetterStream"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamStreamSpec {
    /// Name of the Dapr Component this stream belongs to (same namespace).
    pub component: String,
    /// The stream name (`streamName` of the Component, the `jetstreamkv.io/stream` annotation, or
    /// `<namespace>_<component>`); absent when the Component does not give a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The NATS servers, with any credentials in the URLs redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// How the operator authenticates: `none`, `userinfo`, `token` or `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The prefix daprd puts before every topic (the namespace), when a metadata value of the
    /// Component contains `{namespace}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// The subjects the stream must hold: the `jetstreamkv.io/subjects` annotation and the
    /// discovered topics, prefix applied; dead-letter topics are in `deadLetterSubjects`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// The stream of the dead-letter topics (`<stream>_deadletter`). They have one of their own:
    /// daprd publishes a dead letter with the failed message's id as `Nats-Msg-Id`, which the
    /// topics' stream would drop as a duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_stream: Option<String>,
    /// The subjects the dead-letter stream must hold: the `deadLetterTopic`s of the
    /// Subscriptions, prefix applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_letter_subjects: Vec<String>,
    /// The stream configuration the Component asks for (defaults filled in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<StreamConfig>,
    /// What happens to the stream when the Component is deleted: `retain` or `delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
}

/// Stream settings, as asked for (spec) or as found on the server (status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamConfig {
    /// `limits` or `interest` (`workqueue` only as found on a server).
    pub retention: String,
    /// `file` or `memory`.
    pub storage: String,
    /// Number of replicas.
    pub replicas: i64,
    /// How long messages are kept (Go duration); absent means forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Size limit of the stream in bytes; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    /// The window in which a repeated `Nats-Msg-Id` (daprd's CloudEvent id) is dropped.
    pub duplicate_window: String,
    /// Most messages kept; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msgs: Option<i64>,
    /// Largest message in bytes; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msg_size: Option<i64>,
    /// Most messages kept per subject (per topic); absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_msgs_per_subject: Option<i64>,
    /// What a full stream does: `old` (drops its oldest messages) or `new` (refuses publishes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<String>,
    /// Whether the stream is S2-compressed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compression: bool,
    /// The stream's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JetStream cluster the stream is placed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_cluster: Option<String>,
    /// The server tags the stream's placement requires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement_tags: Vec<String>,
    /// The user's stream metadata (not the server's `_nats.*` keys, not the operator's marks).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The longest a consumer may stay inactive before the server deletes it (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_inactive_threshold: Option<String>,
    /// The most unacknowledged messages a consumer may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_max_ack_pending: Option<i64>,
    /// Whether publishers may give a message a TTL of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_msg_ttl: bool,
}

/// Status of a JetStreamStream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamStreamStatus {
    /// The generations reflected and the conditions: CredentialsResolved, Connected,
    /// StreamAvailable, SubjectsCovered, ConfigSynced.
    #[serde(flatten)]
    pub reconcile: ReconcileStatus,
    /// The topics the operator found (declarative Subscriptions, their dead-letter topics, the
    /// Component's allowedTopics and scopes) and whether the stream covers each. Programmatic
    /// and streaming subscriptions are invisible to the operator and never listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,
    /// What the server reports about the stream, when it was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStatus>,
    /// What the server reports about the dead-letter stream, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_stream: Option<StreamStatus>,
    /// Audit mode only: what enforce mode would do to each stream (create, update with the
    /// settings that differ, delete, nothing, or refuse and why). Nothing was done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<crate::nats::stream::planned::Planned>,
}

/// One discovered topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The topic as written.
    pub topic: String,
    /// The subject daprd uses for it (namespace prefix applied).
    pub subject: String,
    /// Where it was found, e.g. `Subscription orders`.
    pub source: String,
    /// The stream that holds (or is to hold) its subject: the dead-letter stream for a
    /// dead-letter topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Whether the stream covers it.
    pub covered: bool,
    /// Why it is not covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The most live subjects a JetStreamStream shows of one stream: a stream the operator makes has
/// at most [`MAX_SUBJECTS`](crate::pubsub::subjects::MAX_SUBJECTS); one made elsewhere may have
/// many more, and a status must stay well under the API server's object size.
pub const MAX_SHOWN_SUBJECTS: usize = crate::pubsub::subjects::MAX_SUBJECTS;

/// Facts about the stream as NATS reports them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// The stream name.
    pub name: String,
    /// True when the operator created the stream and keeps it in sync; false when it only
    /// verifies a stream someone else manages.
    pub managed: bool,
    /// Version of the NATS server that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Which stream this is, as the server identifies it: a digest of the JetStream domain, the
    /// cluster, the stream name and the stream's creation time. Two JetStreamStreams with the
    /// same identity use the same stream, however their natsURLs are spelled: a stream another
    /// Component uses is kept when its maker is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The live subjects of the stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// The live settings of the stream.
    pub config: StreamConfig,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Consumers (Dapr creates one per subscribed topic and app).
    pub consumers: u64,
}

impl StreamStatus {
    /// The facts as a status shows them: the server's text (names, subjects, version) made fit
    /// to show by [`remote_text`](crate::nats::remote_text), at most [`MAX_SHOWN_SUBJECTS`]
    /// subjects. Showing twice changes nothing.
    pub fn shown(&self) -> Self {
        use crate::nats::remote_text;
        Self {
            name: remote_text(&self.name),
            server_version: self.server_version.as_deref().map(remote_text),
            subjects: self
                .subjects
                .iter()
                .take(MAX_SHOWN_SUBJECTS)
                .map(|s| remote_text(s))
                .collect(),
            ..self.clone()
        }
    }
}

impl JetStreamStream {
    /// The condition of a type, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.status.as_ref()?.reconcile.condition(type_.as_str())
    }
}

/// The detail conditions of a JetStreamStream, one per step, in the pipeline's order.
pub const DETAIL_CONDITIONS: [ConditionType; 5] = [
    ConditionType::CredentialsResolved,
    ConditionType::Connected,
    ConditionType::StreamAvailable,
    ConditionType::SubjectsCovered,
    ConditionType::ConfigSynced,
];

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_has_printer_columns_short_name_and_status_subresource() {
        let crd = serde_json::to_value(JetStreamStream::crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "jss");
        assert_eq!(crd["spec"]["names"]["plural"], "jetstreamstreams");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "Stream",
                "Ready",
                "Reason",
                "Managed",
                "Subjects",
                "DeadLetters",
                "Age"
            ]
        );
        let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
    }

    #[test]
    fn condition_lookup_by_type() {
        let mut s = JetStreamStream::new("events", JetStreamStreamSpec::default());
        assert!(s.condition(ConditionType::Ready).is_none());
        s.status = Some(JetStreamStreamStatus {
            reconcile: ReconcileStatus {
                conditions: vec![Condition {
                    type_: "SubjectsCovered".into(),
                    status: "False".into(),
                    reason: "SubjectOverlap".into(),
                    message: "m".into(),
                    observed_generation: Some(1),
                    last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        jiff::Timestamp::UNIX_EPOCH,
                    ),
                }],
                ..Default::default()
            },
            ..Default::default()
        });
        let c = s.condition(ConditionType::SubjectsCovered).unwrap();
        assert_eq!(c.reason, "SubjectOverlap");
    }
}
