//! Bucket settings and policies from `jetstreamkv.io/*` annotations on a Component, and which
//! annotations apply to which kind of Component ([`refuse_inapplicable`]).
//!
//! Dapr ignores annotations, so they are where a Component says how its bucket should look. All
//! annotations are read before anything is decided: a bad one fails the whole set, never leaving a
//! half-applied configuration. Unknown `jetstreamkv.io/*` keys are errors, because a typo would
//! otherwise silently give a bucket with default settings; so are the keys of the other kind (a
//! bucket's `history` on a pub/sub), which would otherwise be silently ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::JsonSchema;

use crate::failure::{Failure, Retry};
use serde::{Deserialize, Serialize};

mod annotations;

pub use annotations::from_annotations;
pub(crate) use annotations::{boolean, max_value_size};

/// The prefix of every annotation this operator reads or writes.
pub const ANNOTATION_PREFIX: &str = "jetstreamkv.io/";

/// Status summary annotation written by the operator: `true` or `false`.
pub const READY_ANNOTATION: &str = "jetstreamkv.io/ready";
/// Status summary annotation written by the operator: the reason of the Ready condition.
pub const REASON_ANNOTATION: &str = "jetstreamkv.io/reason";
/// Status summary annotation written by the operator: the Component generation reported.
pub const OBSERVED_GENERATION_ANNOTATION: &str = "jetstreamkv.io/observed-generation";

/// Annotation for [`BucketSettings::on_existing`].
pub const ON_EXISTING_ANNOTATION: &str = "jetstreamkv.io/on-existing";
/// Annotation for [`BucketSettings::deletion_policy`].
pub const DELETION_POLICY_ANNOTATION: &str = "jetstreamkv.io/deletion-policy";
/// Annotation for [`BucketSettings::allow_data_loss`].
pub const ALLOW_DATA_LOSS_ANNOTATION: &str = "jetstreamkv.io/allow-data-loss";
/// Annotation for [`BucketSettings::credentials`].
pub const CREDENTIALS_ANNOTATION: &str = "jetstreamkv.io/credentials";

/// Annotation listing the topics or topic patterns a pub/sub's stream holds beyond those
/// discovered (comma- or whitespace-separated, e.g. `orders.>, audit`); the namespace prefix is
/// applied as daprd applies it.
pub const SUBJECTS_ANNOTATION: &str = "jetstreamkv.io/subjects";
/// Annotation naming a pub/sub's stream when the Component has no `streamName`.
pub const STREAM_ANNOTATION: &str = "jetstreamkv.io/stream";
/// A pub/sub stream's retention: `limits` (default) or `interest`; `workqueue` is refused.
pub const RETENTION_ANNOTATION: &str = "jetstreamkv.io/retention";
/// How long a pub/sub's stream keeps messages (Go duration; default forever).
pub const MAX_AGE_ANNOTATION: &str = "jetstreamkv.io/max-age";

/// A pub/sub stream's duplicate window (Go duration; default 2m, or the max age when shorter):
/// no longer than the max age.
pub const DUPLICATE_WINDOW_ANNOTATION: &str = "jetstreamkv.io/duplicate-window";
/// Most messages a pub/sub's stream keeps (default unlimited).
pub const MAX_MSGS_ANNOTATION: &str = "jetstreamkv.io/max-msgs";
/// Largest message a pub/sub's stream takes, in bytes (default unlimited).
pub const MAX_MSG_SIZE_ANNOTATION: &str = "jetstreamkv.io/max-msg-size";
/// Most messages a pub/sub's stream keeps per subject, that is per topic (default unlimited).
pub const MAX_MSGS_PER_SUBJECT_ANNOTATION: &str = "jetstreamkv.io/max-msgs-per-subject";
/// What a full pub/sub stream does: `old` (default: drops its oldest messages) or `new` (refuses
/// the publish).
pub const DISCARD_ANNOTATION: &str = "jetstreamkv.io/discard";
/// The longest a consumer of a pub/sub's stream may stay inactive before the server deletes it
/// (and the default for consumers that do not say): the stream's consumer limits.
pub const CONSUMER_INACTIVE_THRESHOLD_ANNOTATION: &str =
    "jetstreamkv.io/consumer-inactive-threshold";
/// The most unacknowledged messages a consumer of a pub/sub's stream may have (and the default):
/// the stream's consumer limits.
pub const CONSUMER_MAX_ACK_PENDING_ANNOTATION: &str = "jetstreamkv.io/consumer-max-ack-pending";
/// `true`: a pub/sub's stream lets publishers give messages a TTL of their own (`Nats-TTL`);
/// NATS cannot turn it off again.
pub const ALLOW_MSG_TTL_ANNOTATION: &str = "jetstreamkv.io/allow-msg-ttl";
/// `true`: a durable consumer of a pub/sub's topics' stream that differs from what daprd will ask
/// for, and has no subscriber, is deleted so that daprd makes it anew (never one bound by a
/// subscriber, never one on a stream the operator did not make for this Component).
pub const RECREATE_CONSUMERS_ANNOTATION: &str = "jetstreamkv.io/recreate-consumers";

/// The annotations of a pub/sub's streams only.
pub const STREAM_ONLY_ANNOTATIONS: [&str; 13] = [
    SUBJECTS_ANNOTATION,
    STREAM_ANNOTATION,
    RETENTION_ANNOTATION,
    MAX_AGE_ANNOTATION,
    DUPLICATE_WINDOW_ANNOTATION,
    MAX_MSGS_ANNOTATION,
    MAX_MSG_SIZE_ANNOTATION,
    MAX_MSGS_PER_SUBJECT_ANNOTATION,
    DISCARD_ANNOTATION,
    CONSUMER_INACTIVE_THRESHOLD_ANNOTATION,
    CONSUMER_MAX_ACK_PENDING_ANNOTATION,
    ALLOW_MSG_TTL_ANNOTATION,
    RECREATE_CONSUMERS_ANNOTATION,
];

/// The bucket settings a pub/sub's streams read too, with the same values and messages; every
/// other [`Setting`], and `on-existing`, is a bucket's only.
const SHARED_SETTINGS: [Setting; 8] = [
    Setting::Storage,
    Setting::Replicas,
    Setting::MaxBytes,
    Setting::Compression,
    Setting::Description,
    Setting::PlacementCluster,
    Setting::PlacementTags,
    Setting::Metadata,
];

/// The kinds of Component the operator provisions for, as far as their annotations go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentKind {
    /// `state.jetstream`: a KV bucket.
    StateStore,
    /// `pubsub.jetstream`: streams.
    PubSub,
}

impl ComponentKind {
    /// The Component `spec.type`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::StateStore => crate::dapr::JETSTREAM_STATE_TYPE,
            Self::PubSub => crate::dapr::JETSTREAM_PUBSUB_TYPE,
        }
    }

    /// Whether the annotation `key` (a `jetstreamkv.io/` one) is the other kind's only.
    fn refuses(self, key: &str) -> bool {
        let stream_only = STREAM_ONLY_ANNOTATIONS.contains(&key);
        let bucket_only = key == ON_EXISTING_ANNOTATION
            || Setting::from_annotation(key).is_some_and(|s| !SHARED_SETTINGS.contains(&s));
        match self {
            Self::StateStore => stream_only,
            Self::PubSub => bucket_only,
        }
    }
}

/// Refuses, by name, every annotation that applies only to the other kind of Component: one
/// error that lists them all (in key order), so one change fixes them.
pub fn refuse_inapplicable(
    annotations: &BTreeMap<String, String>,
    kind: ComponentKind,
) -> Result<(), SettingsError> {
    let refused: Vec<&str> = annotations
        .keys()
        .map(String::as_str)
        .filter(|k| kind.refuses(k))
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    let other = match kind {
        ComponentKind::StateStore => ComponentKind::PubSub,
        ComponentKind::PubSub => ComponentKind::StateStore,
    };
    Err(SettingsError::InapplicableAnnotation {
        annotations: refused.join(", "),
        component_type: kind.type_name(),
        other_type: other.type_name(),
    })
}

/// The operator's own status annotations: never settings, so skipped when reading them.
pub const STATUS_ANNOTATIONS: [&str; 3] = [
    READY_ANNOTATION,
    REASON_ANNOTATION,
    OBSERVED_GENERATION_ANNOTATION,
];

/// The policy annotations (how the operator behaves, not how the bucket looks).
const POLICY_ANNOTATIONS: [&str; 4] = [
    ON_EXISTING_ANNOTATION,
    DELETION_POLICY_ANNOTATION,
    ALLOW_DATA_LOSS_ANNOTATION,
    CREDENTIALS_ANNOTATION,
];

/// Most values a KV key keeps (a NATS limit).
const MAX_HISTORY: i64 = 64;
/// Most replicas of a JetStream stream (a NATS limit).
const MAX_REPLICAS: usize = 5;
/// Shortest non-zero TTL NATS accepts (`max age needs to be >= 100ms`).
const MIN_TTL: Duration = Duration::from_millis(100);
/// Annotation values longer than this are cut in error messages.
const MAX_SHOWN_VALUE: usize = 80;
/// Shortest delete-marker TTL nats-server accepts (`subject delete marker TTL must be at least 1
/// second`).
const MIN_LIMIT_MARKER_TTL: Duration = Duration::from_secs(1);
/// Longest `jetstreamkv.io/metadata` text: checked before it is parsed, so one annotation costs
/// linear time and bounded memory (nats-server itself allows 128 KiB of stream metadata).
pub const MAX_METADATA_TEXT: usize = 16 * 1024;
/// Most stream metadata items one Component may set.
pub const MAX_METADATA_ITEMS: usize = 32;
/// Longest stream metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 256;
/// Longest stream metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 1024;
/// Stream metadata keys under these prefixes (compared case-insensitively) are not the user's:
/// the operator's own marks (who owns the bucket: ownership is law) and the server's.
pub const RESERVED_METADATA_PREFIXES: [&str; 2] = [ANNOTATION_PREFIX, "_nats."];

/// Whether a stream metadata key is reserved (see [`RESERVED_METADATA_PREFIXES`]).
pub fn is_reserved_metadata_key(key: &str) -> bool {
    RESERVED_METADATA_PREFIXES.iter().any(|p| {
        key.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// A bucket setting that can be set by annotation.
///
/// Recorded in [`BucketSettings::explicit`] when set, because a bucket the operator did not
/// create is only compared on the settings the Component asks for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Setting {
    /// `jetstreamkv.io/history`
    History,
    /// `jetstreamkv.io/ttl`
    Ttl,
    /// `jetstreamkv.io/max-bytes`
    MaxBytes,
    /// `jetstreamkv.io/max-value-size`
    MaxValueSize,
    /// `jetstreamkv.io/storage`
    Storage,
    /// `jetstreamkv.io/replicas`
    Replicas,
    /// `jetstreamkv.io/compression`
    Compression,
    /// `jetstreamkv.io/description`
    Description,
    /// `jetstreamkv.io/placement-cluster`
    PlacementCluster,
    /// `jetstreamkv.io/placement-tags`
    PlacementTags,
    /// `jetstreamkv.io/limit-marker-ttl`
    LimitMarkerTtl,
    /// `jetstreamkv.io/metadata`
    Metadata,
    /// `jetstreamkv.io/republish-source`
    RepublishSource,
    /// `jetstreamkv.io/republish-destination`
    RepublishDestination,
    /// `jetstreamkv.io/republish-headers-only`
    RepublishHeadersOnly,
}

impl Setting {
    /// Every setting, in annotation order.
    pub const ALL: [Setting; 15] = [
        Setting::History,
        Setting::Ttl,
        Setting::MaxBytes,
        Setting::MaxValueSize,
        Setting::Storage,
        Setting::Replicas,
        Setting::Compression,
        Setting::Description,
        Setting::PlacementCluster,
        Setting::PlacementTags,
        Setting::LimitMarkerTtl,
        Setting::Metadata,
        Setting::RepublishSource,
        Setting::RepublishDestination,
        Setting::RepublishHeadersOnly,
    ];

    /// The full annotation key, e.g. `jetstreamkv.io/max-bytes`.
    pub fn annotation(self) -> &'static str {
        match self {
            Setting::History => "jetstreamkv.io/history",
            Setting::Ttl => "jetstreamkv.io/ttl",
            Setting::MaxBytes => "jetstreamkv.io/max-bytes",
            Setting::MaxValueSize => "jetstreamkv.io/max-value-size",
            Setting::Storage => "jetstreamkv.io/storage",
            Setting::Replicas => "jetstreamkv.io/replicas",
            Setting::Compression => "jetstreamkv.io/compression",
            Setting::Description => "jetstreamkv.io/description",
            Setting::PlacementCluster => "jetstreamkv.io/placement-cluster",
            Setting::PlacementTags => "jetstreamkv.io/placement-tags",
            Setting::LimitMarkerTtl => "jetstreamkv.io/limit-marker-ttl",
            Setting::Metadata => "jetstreamkv.io/metadata",
            Setting::RepublishSource => "jetstreamkv.io/republish-source",
            Setting::RepublishDestination => "jetstreamkv.io/republish-destination",
            Setting::RepublishHeadersOnly => "jetstreamkv.io/republish-headers-only",
        }
    }

    fn from_annotation(key: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.annotation() == key)
    }
}

/// Where the bucket's data is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Storage {
    /// On disk (the default: survives server restarts).
    #[default]
    File,
    /// In memory.
    Memory,
}

/// What to do with a bucket that exists but was not created by the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnExisting {
    /// Check it matches the explicit settings; never change it.
    #[default]
    Verify,
    /// Take it over: manage it as if the operator had created it.
    Adopt,
}

/// What happens to the bucket when its Component is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DeletionPolicy {
    /// Keep the bucket and its data.
    #[default]
    Retain,
    /// Delete the bucket, if the operator created it and no other Component uses it.
    Delete,
}

impl Storage {
    /// The annotation and serialized value.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        }
    }
}

impl OnExisting {
    /// The annotation and serialized value.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExisting::Verify => "verify",
            OnExisting::Adopt => "adopt",
        }
    }
}

/// Whose NATS user daprd connects with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CredentialsMode {
    /// The credentials the Component names (its Secrets), as written by its owner.
    #[default]
    Own,
    /// A user the operator mints for this Component with the signing key of the
    /// NatsServerPolicy that allows it, written to the Secret its `jwt` and `seedKey` name.
    Mint,
}

impl CredentialsMode {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialsMode::Own => "own",
            CredentialsMode::Mint => "mint",
        }
    }
}

impl DeletionPolicy {
    /// The annotation and serialized value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionPolicy::Retain => "retain",
            DeletionPolicy::Delete => "delete",
        }
    }
}

/// The desired bucket configuration and the operator's policies for one Component.
///
/// The default fits Dapr: one value per key, no TTL, no size limits, file storage, one replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketSettings {
    /// Values kept per key (1..=64).
    pub history: i64,
    /// How long a value lives; `None` for ever.
    pub ttl: Option<Duration>,
    /// Most bytes the bucket holds; `None` for unlimited.
    pub max_bytes: Option<i64>,
    /// Largest value in bytes; `None` for unlimited.
    pub max_value_size: Option<i32>,
    /// Where the data is kept.
    pub storage: Storage,
    /// Stream replicas (1..=5).
    pub replicas: usize,
    /// Whether the stream is compressed (S2).
    pub compression: bool,
    /// Bucket description.
    pub description: Option<String>,
    /// JetStream cluster to place the bucket in.
    pub placement_cluster: Option<String>,
    /// Server tags the bucket's placement requires.
    pub placement_tags: Vec<String>,
    /// Per-key TTL: how long the delete marker left when a key expires (by `ttl` or its own
    /// TTL) is kept; `None` when per-key TTL is off.
    pub limit_marker_ttl: Option<Duration>,
    /// The user's stream metadata (never a reserved key).
    pub metadata: BTreeMap<String, String>,
    /// The subjects to republish (a NATS subject within the bucket's `$KV.<bucket>.>`); `None`
    /// for every key of the bucket.
    pub republish_source: Option<String>,
    /// Where stored values are republished; `None`: no republish.
    pub republish_destination: Option<String>,
    /// Republish the headers only, not the values.
    pub republish_headers_only: bool,
    /// What to do with a bucket the operator did not create.
    pub on_existing: OnExisting,
    /// What to do with the bucket when the Component is deleted.
    pub deletion_policy: DeletionPolicy,
    /// Whether changes that discard data (lower history or limits, shorter TTL) may be applied.
    pub allow_data_loss: bool,
    /// Whose NATS user daprd connects with: the Component's own, or one minted for it.
    pub credentials: CredentialsMode,
    /// The settings the Component sets by annotation (even to their default value).
    pub explicit: BTreeSet<Setting>,
}

impl Default for BucketSettings {
    fn default() -> Self {
        Self {
            history: 1,
            ttl: None,
            max_bytes: None,
            max_value_size: None,
            storage: Storage::File,
            replicas: 1,
            compression: false,
            description: None,
            placement_cluster: None,
            placement_tags: Vec::new(),
            limit_marker_ttl: None,
            metadata: BTreeMap::new(),
            republish_source: None,
            republish_destination: None,
            republish_headers_only: false,
            on_existing: OnExisting::Verify,
            deletion_policy: DeletionPolicy::Retain,
            credentials: CredentialsMode::Own,
            allow_data_loss: false,
            explicit: BTreeSet::new(),
        }
    }
}

/// An annotation that cannot be used. Permanent: the Component must change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A known annotation with a value it does not accept.
    #[error("annotation {annotation} has the value {value:?}, which is not valid: use {expected}")]
    InvalidAnnotation {
        /// The annotation key.
        annotation: String,
        /// The value as written (shortened when long).
        value: String,
        /// What the annotation accepts.
        expected: String,
    },
    /// A `jetstreamkv.io/` annotation the operator does not know (likely a typo).
    #[error("annotation {annotation} is not known{hint}: the known annotations are {known}")]
    UnknownAnnotation {
        /// The annotation key.
        annotation: String,
        /// `, did you mean ...?` when a known key is close, else empty.
        hint: String,
        /// The known keys, comma separated.
        known: String,
    },
    /// Annotations of the other kind of Component (a bucket's `history` on a pub/sub).
    #[error(
        "annotation(s) {annotations} apply to {other_type} Components only, and this Component \
         is {component_type}: remove them (the operator would otherwise ignore them)"
    )]
    InapplicableAnnotation {
        /// The annotation keys, comma separated.
        annotations: String,
        /// This Component's type.
        component_type: &'static str,
        /// The type they apply to.
        other_type: &'static str,
    },
    /// `jetstreamkv.io/metadata` names a stream metadata key that is not the user's.
    #[error(
        "annotation {annotation} sets the stream metadata key {key:?}, which is reserved: keys \
         starting with jetstreamkv.io/ are the operator's own marks of which Component owns the \
         bucket, and keys starting with _nats. are the server's; use another key"
    )]
    ReservedMetadataKey {
        /// The annotation key.
        annotation: String,
        /// The metadata key (shortened when long).
        key: String,
    },
}

impl Failure for SettingsError {
    /// The CamelCase reason for conditions, events and metrics.
    fn reason(&self) -> &'static str {
        match self {
            SettingsError::InvalidAnnotation { .. } => "InvalidAnnotation",
            SettingsError::UnknownAnnotation { .. } => "UnknownAnnotation",
            SettingsError::InapplicableAnnotation { .. } => "InapplicableAnnotation",
            SettingsError::ReservedMetadataKey { .. } => "ReservedMetadataKey",
        }
    }

    /// Only a change to the Component can fix an annotation.
    fn retry(&self) -> Retry {
        Retry::AwaitChange
    }
}

/// A value for an error message: cut when long, since annotations can hold kilobytes.
pub(crate) fn shorten(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN_VALUE) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(keys: &[&str]) -> BTreeMap<String, String> {
        keys.iter()
            .map(|k| (k.to_string(), "1".to_owned()))
            .collect()
    }

    #[test]
    fn the_other_kinds_annotations_are_refused_by_name_all_at_once() {
        let both = annotations(&[
            "jetstreamkv.io/history",
            "jetstreamkv.io/on-existing",
            "jetstreamkv.io/retention",
            "jetstreamkv.io/max-age",
            "jetstreamkv.io/replicas",
            "jetstreamkv.io/deletion-policy",
            "other.io/history",
        ]);
        let e = refuse_inapplicable(&both, ComponentKind::PubSub).unwrap_err();
        assert_eq!(e.reason(), "InapplicableAnnotation");
        assert_eq!(
            e.to_string(),
            "annotation(s) jetstreamkv.io/history, jetstreamkv.io/on-existing apply to \
             state.jetstream Components only, and this Component is pubsub.jetstream: remove them \
             (the operator would otherwise ignore them)"
        );
        let e = refuse_inapplicable(&both, ComponentKind::StateStore).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "annotation(s) jetstreamkv.io/max-age, jetstreamkv.io/retention apply to \
                 pubsub.jetstream Components only"
            ),
            "{e}"
        );
        // What both read, and annotations of other prefixes, pass.
        let shared = annotations(&[
            "jetstreamkv.io/storage",
            "jetstreamkv.io/replicas",
            "jetstreamkv.io/max-bytes",
            "jetstreamkv.io/allow-data-loss",
            "jetstreamkv.io/deletion-policy",
            "other.io/retention",
        ]);
        for kind in [ComponentKind::StateStore, ComponentKind::PubSub] {
            assert_eq!(refuse_inapplicable(&shared, kind), Ok(()), "{kind:?}");
        }
        // The state store's parser refuses them too (check and the webhook run the same).
        let e = from_annotations(&annotations(&["jetstreamkv.io/subjects"])).unwrap_err();
        assert_eq!(e.reason(), "InapplicableAnnotation");
    }
}
