//! The `KeyValueBucket` resource: what the operator understood of a Component, and the state of its
//! bucket. One per `state.jetstream` Component, same name and namespace, owned by it. Also the
//! condition types and their merging, shared with the `JetStreamStream` of a `pubsub.jetstream`
//! Component ([`crate::pubsub::resource`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "jetstream-kv-operator";

/// The version the operator's resources are stored at (and the one it reads and writes).
pub const STORAGE_VERSION: &str = "v1beta1";
/// Older versions still served, with the same schema (so no conversion webhook: the API server
/// converts by changing `apiVersion`), deprecated.
pub const OLDER_VERSIONS: [&str; 1] = ["v1alpha1"];

/// A CRD as installed: the derived one (its storage version, [`STORAGE_VERSION`]) also serving
/// [`OLDER_VERSIONS`] with the same schema, deprecated.
pub fn served(
    mut crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let Some(storage) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    for old in OLDER_VERSIONS {
        let mut version = storage.clone();
        version.name = old.to_owned();
        version.storage = false;
        version.deprecated = Some(true);
        version.deprecation_warning = Some(format!(
            "{group}/{old} {kind} is deprecated; use {group}/{STORAGE_VERSION}",
            group = crd.spec.group,
            kind = crd.spec.names.kind,
        ));
        crd.spec.versions.push(version);
    }
    crd
}

/// Condition types, in the order the pipeline evaluates them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// The summary: the bucket exists, is a valid KV bucket, and matches what was asked.
    Ready,
    /// Metadata parsed, secrets read, credentials valid.
    CredentialsResolved,
    /// A NATS connection with JetStream is open.
    Connected,
    /// The bucket exists (created or found) and is a valid KV bucket.
    BucketAvailable,
    /// The bucket's (or stream's) settings match the Component's.
    ConfigSynced,
    /// The stream of a `pubsub.jetstream` Component exists (created or found) and Dapr can use it.
    StreamAvailable,
    /// The stream holds every subject the Component needs (discovered topics included).
    SubjectsCovered,
    /// kstatus: work is under way (set only while true).
    Reconciling,
    /// kstatus: no progress without a change to the Component (set only while true).
    Stalled,
}

impl ConditionType {
    /// The detail conditions, one per step of the pipeline, in its order.
    pub const DETAIL: [ConditionType; 4] = [
        Self::CredentialsResolved,
        Self::Connected,
        Self::BucketAvailable,
        Self::ConfigSynced,
    ];

    /// The type as written in `status.conditions`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::CredentialsResolved => "CredentialsResolved",
            Self::Connected => "Connected",
            Self::BucketAvailable => "BucketAvailable",
            Self::ConfigSynced => "ConfigSynced",
            Self::StreamAvailable => "StreamAvailable",
            Self::SubjectsCovered => "SubjectsCovered",
            Self::Reconciling => "Reconciling",
            Self::Stalled => "Stalled",
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Spec of a KeyValueBucket. Written by the operator only: it shows what the operator understood
/// of the Component. It never holds a secret value.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jetstreamkv.io",
    version = "v1beta1",
    kind = "KeyValueBucket",
    namespaced,
    shortname = "kvb",
    status = "KeyValueBucketStatus",
    doc = "The NATS JetStream KV bucket of a Dapr state.jetstream Component, as the operator sees it. Written by jetstream-kv-operator; edit the Component instead.",
    printcolumn = r#"{"name":"Bucket","type":"string","jsonPath":".spec.bucket"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Managed","type":"boolean","priority":1,"jsonPath":".status.bucket.managed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueBucketSpec {
    /// Name of the Dapr Component this bucket belongs to (same namespace).
    pub component: String,
    /// The KV bucket name (the stream is `KV_<bucket>`); absent when the Component does not name
    /// a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The NATS servers, with any credentials in the URLs redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// How the operator authenticates: `none`, `userinfo` or `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The bucket configuration the Component asks for (defaults filled in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BucketConfig>,
    /// What happens to a bucket the operator did not create: `verify` or `adopt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_existing: Option<String>,
    /// What happens to the bucket when the Component is deleted: `retain` or `delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
}

/// Bucket settings, as asked for (spec) or as found on the server (status).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketConfig {
    /// Values kept per key.
    pub history: i64,
    /// How long values live (Go duration); absent means forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Size limit of the bucket in bytes; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    /// Size limit of one value in bytes; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value_size: Option<i64>,
    /// `file` or `memory`.
    pub storage: String,
    /// Number of replicas.
    pub replicas: i64,
    /// Whether the stream is S2-compressed.
    #[serde(default)]
    pub compression: bool,
    /// Description of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Per-key TTL is on, and the marker of an expired key is kept this long (Go duration);
    /// absent when per-key TTL is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_marker_ttl: Option<String>,
    /// The user's stream metadata (not the server's `_nats.*` keys, not the operator's own
    /// marks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Where stored values are republished; absent when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republish: Option<RepublishConfig>,
}

/// A bucket's republish: every value stored under `source` is published again to `destination`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepublishConfig {
    /// The subjects republished; absent for every key of the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The subject values are republished to.
    pub destination: String,
    /// Whether only the headers are republished, not the values.
    #[serde(default)]
    pub headers_only: bool,
}

/// What the status of each of the operator's resources holds (a KeyValueBucket's, a
/// JetStreamStream's): the generations it reflects and the conditions (kstatus). Flattened into
/// each status: the fields stand directly under `status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileStatus {
    /// The generation of this object the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Component generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_generation: Option<i64>,
    /// Ready, and the detail behind it: CredentialsResolved, Connected, then BucketAvailable
    /// (KeyValueBucket) or StreamAvailable and SubjectsCovered (JetStreamStream), and
    /// ConfigSynced; Reconciling and Stalled (kstatus) while true.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

impl ReconcileStatus {
    /// The status to write: `next` stamped with `generation`, each condition keeping its
    /// `lastTransitionTime` from `previous` when it did not flip.
    pub fn merged(
        previous: &Self,
        next: &[ConditionSpec],
        generation: Option<i64>,
        component_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self {
            observed_generation: generation,
            component_generation,
            conditions: merge_conditions(&previous.conditions, next, generation, now),
        }
    }

    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        find_condition(&self.conditions, type_)
    }
}

/// Status of a KeyValueBucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyValueBucketStatus {
    /// The generations reflected and the conditions.
    #[serde(flatten)]
    pub reconcile: ReconcileStatus,
    /// What the server reports about the bucket, when it was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<BucketStatus>,
    /// Audit mode only: what enforce mode would do to the bucket (create, update with the
    /// settings that differ, delete, nothing, or refuse and why). Nothing was done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<crate::nats::stream::planned::Planned>,
}

/// Facts about the bucket as NATS reports them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BucketStatus {
    /// The stream that holds the bucket: `KV_<bucket>`.
    pub stream: String,
    /// True when the operator created (or adopted) the bucket and keeps it in sync; false when
    /// it only verifies a bucket someone else manages.
    pub managed: bool,
    /// Version of the NATS server that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Which bucket this is, as the server identifies it: a digest of the JetStream domain,
    /// the cluster, the stream name and the stream's creation time. Two KeyValueBuckets with
    /// the same identity use the same bucket, however their natsURLs are spelled; buckets of
    /// the same name in different accounts or on different servers differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The live settings of the bucket.
    pub config: BucketConfig,
    /// Bytes stored.
    pub bytes: u64,
    /// Values stored (all revisions kept).
    pub values: u64,
    /// Where the stream runs, when the server is part of a JetStream cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<StreamCluster>,
}

/// The stream's place in a JetStream cluster, as its leader reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamCluster {
    /// The JetStream cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The server that leads the stream (takes its writes); absent while there is none: an
    /// election is under way, or too many replicas are down (quorum lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The other replicas, by server name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica of the stream besides the leader.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// The server that holds it.
    pub server: String,
    /// `Current` (has every write), `Lagging` (catching up) or `Offline` (not heard from).
    pub state: ReplicaState,
}

/// How far a replica is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReplicaState {
    Current,
    Lagging,
    Offline,
}

/// Conditions are a list map keyed by `type`, so server-side apply merges them per type.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

impl KeyValueBucket {
    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.as_ref()?.reconcile.condition(type_)
    }
}

/// The condition of a type in a status' conditions, if set.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A condition to set: the pipeline decides these; [`merge_conditions`] stamps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionSpec {
    pub type_: ConditionType,
    /// True, False, or None for Unknown (not evaluated because an earlier step failed).
    pub status: Option<bool>,
    pub reason: String,
    pub message: String,
}

/// Builds the conditions to write from the ones decided now and the ones already on the object:
/// `lastTransitionTime` is kept when the status did not flip, so it tells when it really changed.
pub fn merge_conditions(
    previous: &[Condition],
    next: &[ConditionSpec],
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    next.iter()
        .map(|spec| {
            let status = match spec.status {
                Some(true) => "True",
                Some(false) => "False",
                None => "Unknown",
            }
            .to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == spec.type_.as_str() && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: spec.type_.as_str().to_string(),
                status,
                reason: spec.reason.clone(),
                message: spec.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn spec(type_: ConditionType, status: bool, reason: &str) -> ConditionSpec {
        ConditionSpec {
            type_,
            status: Some(status),
            reason: reason.into(),
            message: format!("{reason} happened"),
        }
    }

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_changes_only_when_status_flips() {
        let first = merge_conditions(
            &[],
            &[spec(ConditionType::Ready, false, "NatsUnavailable")],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, at(100));

        // Same status, another reason: still the first transition.
        let second = merge_conditions(
            &first,
            &[spec(ConditionType::Ready, false, "AuthorizationFailed")],
            Some(2),
            at(200),
        );
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "AuthorizationFailed");
        assert_eq!(second[0].observed_generation, Some(2));

        // Flip to True: a new transition.
        let third = merge_conditions(
            &second,
            &[spec(ConditionType::Ready, true, "BucketCreated")],
            Some(2),
            at(300),
        );
        assert_eq!(third[0].last_transition_time, at(300));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn crd_has_printer_columns_short_name_and_status_subresource() {
        let crd = serde_json::to_value(KeyValueBucket::crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "kvb");
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Bucket", "Ready", "Reason", "Managed", "Age"]);
        let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
    }
}
