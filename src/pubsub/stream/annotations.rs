//! The settings of a `pubsub.jetstream` Component's stream, read from its annotations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::duration;
use crate::nats::stream::Field;
use crate::pubsub::PubsubError;
use crate::pubsub::component::{Warning, stream_name_problem};
use crate::pubsub::subjects::parse_user_subjects;
use crate::settings::{self, DeletionPolicy, Setting, Storage};

pub use crate::settings::{
    ALLOW_MSG_TTL_ANNOTATION, CONSUMER_INACTIVE_THRESHOLD_ANNOTATION,
    CONSUMER_MAX_ACK_PENDING_ANNOTATION, DISCARD_ANNOTATION, DUPLICATE_WINDOW_ANNOTATION,
    MAX_AGE_ANNOTATION, MAX_MSG_SIZE_ANNOTATION, MAX_MSGS_ANNOTATION,
    MAX_MSGS_PER_SUBJECT_ANNOTATION, RECREATE_CONSUMERS_ANNOTATION, RETENTION_ANNOTATION,
    STREAM_ANNOTATION, SUBJECTS_ANNOTATION,
};
/// `file` (default) or `memory`: the bucket annotation, read the same way.
pub const STORAGE_ANNOTATION: &str = "jetstreamkv.io/storage";
/// Number of stream replicas (default 1): the bucket annotation, read the same way.
pub const REPLICAS_ANNOTATION: &str = "jetstreamkv.io/replicas";
/// Size limit of the stream in bytes (default unlimited): the bucket annotation.
pub const MAX_BYTES_ANNOTATION: &str = "jetstreamkv.io/max-bytes";
/// `true` to let a change discard stored messages (shorter max age, smaller max bytes).
pub use crate::settings::ALLOW_DATA_LOSS_ANNOTATION;

/// Stream retention the operator offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Messages kept up to the limits, whoever consumed them: Dapr's fan-out works.
    Limits,
    /// Messages kept while a consumer has not acknowledged them: messages published while no
    /// consumer exists are dropped.
    Interest,
}

/// What a full stream does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Discard {
    /// Drops its oldest messages (the default).
    #[default]
    Old,
    /// Refuses the publish.
    New,
}

/// The stream settings a Component asks for through its annotations, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// The stream name from the annotation (`streamName` metadata wins over it).
    pub name: Option<String>,
    /// The user's topics or patterns, without the namespace prefix.
    pub subjects: Vec<String>,
    /// Retention.
    pub retention: Retention,
    /// Storage.
    pub storage: Storage,
    /// Replicas.
    pub replicas: usize,
    /// Message age limit; None keeps messages forever.
    pub max_age: Option<Duration>,
    /// Size limit in bytes; None is unlimited.
    pub max_bytes: Option<i64>,
    /// The duplicate window; None: 2m, or the max age when shorter.
    pub duplicate_window: Option<Duration>,
    /// Most messages kept; None is unlimited.
    pub max_msgs: Option<i64>,
    /// Largest message in bytes; None is unlimited.
    pub max_msg_size: Option<i32>,
    /// Most messages kept per subject; None is unlimited.
    pub max_msgs_per_subject: Option<i64>,
    /// What a full stream does.
    pub discard: Discard,
    /// Whether the stream is S2-compressed.
    pub compression: bool,
    /// The stream's description; None: the operator's (which Component it serves).
    pub description: Option<String>,
    /// JetStream cluster to place the stream in.
    pub placement_cluster: Option<String>,
    /// Server tags the stream's placement requires.
    pub placement_tags: Vec<String>,
    /// The user's stream metadata (never a reserved key).
    pub metadata: BTreeMap<String, String>,
    /// The longest a consumer may stay inactive; None: no limit.
    pub consumer_inactive_threshold: Option<Duration>,
    /// The most unacknowledged messages a consumer may have; None: no limit.
    pub consumer_max_ack_pending: Option<i64>,
    /// Whether messages may carry a TTL of their own.
    pub allow_msg_ttl: bool,
    /// Whether changes that discard messages are allowed.
    pub allow_data_loss: bool,
    /// Whether a mismatching durable consumer with no subscriber is deleted for daprd to make
    /// anew (see [`RECREATE_CONSUMERS_ANNOTATION`]).
    pub recreate_consumers: bool,
    /// What happens to the stream when the Component is deleted (retain by default).
    pub deletion_policy: DeletionPolicy,
    /// Whose NATS user daprd connects with: the Component's own, or one minted for it.
    pub credentials: crate::settings::CredentialsMode,
    /// The annotations given explicitly (what a stream the operator only verifies is held to).
    pub explicit: BTreeSet<Field>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: None,
            subjects: Vec::new(),
            retention: Retention::Limits,
            storage: Storage::File,
            replicas: 1,
            max_age: None,
            max_bytes: None,
            duplicate_window: None,
            max_msgs: None,
            max_msg_size: None,
            max_msgs_per_subject: None,
            discard: Discard::Old,
            compression: false,
            description: None,
            placement_cluster: None,
            placement_tags: Vec::new(),
            metadata: BTreeMap::new(),
            consumer_inactive_threshold: None,
            consumer_max_ack_pending: None,
            allow_msg_ttl: false,
            allow_data_loss: false,
            recreate_consumers: false,
            deletion_policy: DeletionPolicy::Retain,
            credentials: crate::settings::CredentialsMode::Own,
            explicit: BTreeSet::new(),
        }
    }
}

/// Reads the stream settings from the Component's annotations. A bucket's own annotations
/// (`history`, `ttl`, `on-existing`, ...) are refused by name. The annotations a stream shares
/// with a bucket (`storage`, `replicas`, `max-bytes`, `allow-data-loss`, `deletion-policy`) are
/// read by [`crate::settings::from_annotations`], with the same values and messages (and a typo
/// of a `jetstreamkv.io/` annotation is refused the same way); the stream's own ones here.
pub fn stream_settings(
    annotations: &BTreeMap<String, String>,
) -> Result<StreamSettings, PubsubError> {
    settings::refuse_inapplicable(annotations, settings::ComponentKind::PubSub)?;
    let mut s = StreamSettings::default();
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let invalid = |annotation, value: &str, expected: &str| PubsubError::InvalidAnnotation {
        annotation,
        value: value.to_owned(),
        expected: expected.to_owned(),
    };
    if let Some(v) = get(SUBJECTS_ANNOTATION) {
        s.subjects = parse_user_subjects(v);
    }
    if let Some(v) = get(STREAM_ANNOTATION) {
        if let Some(problem) = stream_name_problem(v) {
            return Err(PubsubError::InvalidStreamName {
                name: v.to_owned(),
                problem,
            });
        }
        s.name = Some(v.to_owned());
    }
    if let Some(v) = get(RETENTION_ANNOTATION) {
        s.retention = match v.to_ascii_lowercase().as_str() {
            "limits" => Retention::Limits,
            "interest" => Retention::Interest,
            "workqueue" => return Err(PubsubError::WorkQueueRefused),
            _ => return Err(invalid(RETENTION_ANNOTATION, v, "use limits or interest")),
        };
        s.explicit.insert(Field::Retention);
    }
    if let Some(v) = get(MAX_AGE_ANNOTATION) {
        let d = duration::parse(v).ok_or_else(|| {
            invalid(
                MAX_AGE_ANNOTATION,
                v,
                "use a Go duration such as 24h or 7d as 168h",
            )
        })?;
        s.max_age = (!d.is_zero()).then_some(d);
        s.explicit.insert(Field::MaxAge);
    }
    stream_limits(annotations, &mut s)?;
    // The rest: what a stream shares with a bucket.
    let shared: BTreeMap<String, String> = annotations
        .iter()
        .filter(|(k, _)| !settings::STREAM_ONLY_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bucket = settings::from_annotations(&shared)?;
    s.storage = bucket.storage;
    s.replicas = bucket.replicas;
    s.max_bytes = bucket.max_bytes;
    s.compression = bucket.compression;
    s.description = bucket.description;
    s.placement_cluster = bucket.placement_cluster;
    s.placement_tags = bucket.placement_tags;
    s.metadata = bucket.metadata;
    s.allow_data_loss = bucket.allow_data_loss;
    s.deletion_policy = bucket.deletion_policy;
    s.credentials = bucket.credentials;
    for (setting, field) in [
        (Setting::Storage, Field::Storage),
        (Setting::Replicas, Field::Replicas),
        (Setting::MaxBytes, Field::MaxBytes),
        (Setting::Compression, Field::Compression),
        (Setting::Description, Field::Description),
        (Setting::PlacementCluster, Field::Placement),
        (Setting::PlacementTags, Field::Placement),
        (Setting::Metadata, Field::Metadata),
    ] {
        if bucket.explicit.contains(&setting) {
            s.explicit.insert(field);
        }
    }
    // NATS refuses a duplicate window longer than the max age: refused here, before anything is
    // sent.
    if let (Some(window), Some(age)) = (s.duplicate_window, s.max_age)
        && window > age
    {
        return Err(PubsubError::InvalidAnnotation {
            annotation: DUPLICATE_WINDOW_ANNOTATION,
            value: duration::format(window),
            expected: format!(
                "a duplicate window no longer than the max age ({}, {MAX_AGE_ANNOTATION}): NATS \
                 refuses a longer one",
                duration::format(age)
            ),
        });
    }
    Ok(s)
}

/// The stream's own limits (duplicate window, message limits, discard, consumer limits,
/// message TTLs), each parsed or refused with what it accepts.
fn stream_limits(
    annotations: &BTreeMap<String, String>,
    s: &mut StreamSettings,
) -> Result<(), PubsubError> {
    let get = |key: &str| annotations.get(key).map(|v| v.trim());
    let invalid = |annotation, value: &str, expected: &str| PubsubError::InvalidAnnotation {
        annotation,
        value: settings::shorten(value),
        expected: expected.to_owned(),
    };
    const COUNT: &str = "a positive whole number, or -1 for unlimited";
    let count = |annotation: &'static str| -> Result<Option<Option<i64>>, PubsubError> {
        let Some(v) = get(annotation) else {
            return Ok(None);
        };
        if v == "-1" {
            return Ok(Some(None));
        }
        match v.parse::<i64>() {
            Ok(n) if n > 0 => Ok(Some(Some(n))),
            _ => Err(invalid(annotation, v, COUNT)),
        }
    };
    let mut explicit = |field, set: bool| {
        if set {
            s.explicit.insert(field);
        }
    };
    if let Some(v) = get(DUPLICATE_WINDOW_ANNOTATION) {
        const EXPECTED: &str = "a Go duration of at least 100ms such as 2m or 1h, no longer than \
                                the max age";
        let d = duration::parse(v)
            .filter(|d| *d >= Duration::from_millis(100))
            .ok_or_else(|| invalid(DUPLICATE_WINDOW_ANNOTATION, v, EXPECTED))?;
        s.duplicate_window = Some(d);
        explicit(Field::DuplicateWindow, true);
    }
    if let Some(n) = count(MAX_MSGS_ANNOTATION)? {
        s.max_msgs = n;
        explicit(Field::MaxMsgs, true);
    }
    if let Some(n) = count(MAX_MSGS_PER_SUBJECT_ANNOTATION)? {
        s.max_msgs_per_subject = n;
        explicit(Field::MaxMsgsPerSubject, true);
    }
    if let Some(v) = get(MAX_MSG_SIZE_ANNOTATION) {
        s.max_msg_size =
            settings::max_value_size(v).map_err(|e| invalid(MAX_MSG_SIZE_ANNOTATION, v, e))?;
        explicit(Field::MaxMsgSize, true);
    }
    if let Some(v) = get(DISCARD_ANNOTATION) {
        s.discard = match v.to_ascii_lowercase().as_str() {
            "old" => Discard::Old,
            "new" => Discard::New,
            _ => {
                return Err(invalid(
                    DISCARD_ANNOTATION,
                    v,
                    "\"old\" (a full stream drops its oldest messages) or \"new\" (it refuses \
                     the publish)",
                ));
            }
        };
        explicit(Field::Discard, true);
    }
    if let Some(v) = get(CONSUMER_INACTIVE_THRESHOLD_ANNOTATION) {
        const EXPECTED: &str = "a Go duration such as 1h or 24h, or 0 for no limit";
        let d = duration::parse(v)
            .ok_or_else(|| invalid(CONSUMER_INACTIVE_THRESHOLD_ANNOTATION, v, EXPECTED))?;
        s.consumer_inactive_threshold = (!d.is_zero()).then_some(d);
        explicit(Field::ConsumerLimits, true);
    }
    if let Some(n) = count(CONSUMER_MAX_ACK_PENDING_ANNOTATION)? {
        s.consumer_max_ack_pending = n;
        explicit(Field::ConsumerLimits, true);
    }
    if let Some(v) = get(ALLOW_MSG_TTL_ANNOTATION) {
        s.allow_msg_ttl = settings::boolean(v).ok_or_else(|| {
            invalid(
                ALLOW_MSG_TTL_ANNOTATION,
                v,
                "\"true\" (publishers may give a message its own TTL; NATS cannot turn it off \
                 again) or \"false\"",
            )
        })?;
        explicit(Field::AllowMsgTtl, true);
    }
    if let Some(v) = get(RECREATE_CONSUMERS_ANNOTATION) {
        s.recreate_consumers = settings::boolean(v).ok_or_else(|| {
            invalid(
                RECREATE_CONSUMERS_ANNOTATION,
                v,
                "\"true\" (a durable consumer daprd cannot bind, with no subscriber, is deleted \
                 for daprd to make anew) or \"false\"",
            )
        })?;
    }
    Ok(())
}

/// The warning Interest retention needs: what it drops is gone for every app.
pub fn settings_warnings(s: &StreamSettings) -> Vec<Warning> {
    match s.retention {
        Retention::Limits => Vec::new(),
        Retention::Interest => vec![Warning {
            reason: "InterestRetention",
            message: "jetstreamkv.io/retention is \"interest\": messages published while no Dapr \
                      app is subscribed to their topic are dropped at once, and a new app never \
                      sees earlier messages; remove the annotation to keep the default \"limits\""
                .into(),
        }],
    }
}

/// The stream name: `streamName` of the Component, else the annotation, else
/// `<namespace>_<component>` with the dots of the Component name made `_`.
pub fn stream_name(
    stream_name_metadata: Option<&str>,
    settings: &StreamSettings,
    namespace: &str,
    component: &str,
) -> String {
    stream_name_metadata
        .or(settings.name.as_deref())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{namespace}_{}", component.replace('.', "_")))
}

/// What the dead-letter stream's name adds to the topics' stream's name.
pub const DEAD_LETTER_SUFFIX: &str = "_deadletter";

/// JetStream's longest stream name (also one directory name in file storage).
const MAX_STREAM_NAME: usize = 255;

/// The name of the stream that holds the dead-letter topics of the stream `stream`:
/// `<stream>_deadletter`; when that is longer than JetStream allows, the start of `stream`, a
/// hash of all of it, and the suffix (still unique, still recognisable).
pub fn dead_letter_stream_name(stream: &str) -> String {
    let name = format!("{stream}{DEAD_LETTER_SUFFIX}");
    if name.len() <= MAX_STREAM_NAME {
        return name;
    }
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(stream.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    // The start, cut on a character boundary, "_", 8 hex digits, the suffix.
    let mut keep = MAX_STREAM_NAME - DEAD_LETTER_SUFFIX.len() - hash.len() - 1;
    while !stream.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}_{hash}{DEAD_LETTER_SUFFIX}", &stream[..keep])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::failure::Failure as _;

    #[test]
    fn dead_letter_stream_names_fit_jetstream() {
        assert_eq!(
            dead_letter_stream_name("shop_events"),
            "shop_events_deadletter"
        );
        let long = "s".repeat(250);
        let name = dead_letter_stream_name(&long);
        assert_eq!(name.len(), 255);
        assert!(
            name.starts_with("sss") && name.ends_with("_deadletter"),
            "{name}"
        );
        assert!(stream_name_problem(&name).is_none());
        let other = dead_letter_stream_name(&format!("{}t", "s".repeat(249)));
        assert_ne!(
            name, other,
            "names that share their start differ by the hash"
        );
        let wide = dead_letter_stream_name(&"é".repeat(127));
        assert!(wide.len() <= 255 && wide.ends_with("_deadletter"), "{wide}");
    }

    fn ann(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_from_annotations() {
        let s = stream_settings(&ann(&[])).unwrap();
        assert_eq!(s, StreamSettings::default());

        let s = stream_settings(&ann(&[
            (SUBJECTS_ANNOTATION, "orders.>, audit"),
            (STREAM_ANNOTATION, "EVENTS"),
            (RETENTION_ANNOTATION, "Interest"),
            (STORAGE_ANNOTATION, "memory"),
            (REPLICAS_ANNOTATION, "3"),
            (MAX_AGE_ANNOTATION, "24h"),
            (MAX_BYTES_ANNOTATION, "1048576"),
            (ALLOW_DATA_LOSS_ANNOTATION, "true"),
        ]))
        .unwrap();
        assert_eq!(s.subjects, ["orders.>", "audit"]);
        assert_eq!(s.name.as_deref(), Some("EVENTS"));
        assert_eq!(s.retention, Retention::Interest);
        assert_eq!(s.storage, Storage::Memory);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.max_age, Some(Duration::from_secs(86400)));
        assert_eq!(s.max_bytes, Some(1048576));
        assert!(s.allow_data_loss);

        for (key, value, reason) in [
            (RETENTION_ANNOTATION, "workqueue", "WorkQueueRefused"),
            (RETENTION_ANNOTATION, "WorkQueue", "WorkQueueRefused"),
            (RETENTION_ANNOTATION, "forever", "InvalidAnnotation"),
            (STORAGE_ANNOTATION, "disk", "InvalidAnnotation"),
            (REPLICAS_ANNOTATION, "0", "InvalidAnnotation"),
            (REPLICAS_ANNOTATION, "7", "InvalidAnnotation"),
            (MAX_AGE_ANNOTATION, "1d", "InvalidAnnotation"),
            (MAX_BYTES_ANNOTATION, "lots", "InvalidAnnotation"),
            (
                "jetstreamkv.io/deletion-policy",
                "purge",
                "InvalidAnnotation",
            ),
            ("jetstreamkv.io/subject", "orders", "UnknownAnnotation"),
            (ALLOW_DATA_LOSS_ANNOTATION, "yes", "InvalidAnnotation"),
            (STREAM_ANNOTATION, "a.b", "InvalidStreamName"),
            ("jetstreamkv.io/history", "5", "InapplicableAnnotation"),
            ("jetstreamkv.io/ttl", "1h", "InapplicableAnnotation"),
            (
                "jetstreamkv.io/on-existing",
                "adopt",
                "InapplicableAnnotation",
            ),
        ] {
            let err = stream_settings(&ann(&[(key, value)])).unwrap_err();
            assert_eq!(err.reason(), reason, "{key}={value}: {err}");
        }
    }
}
