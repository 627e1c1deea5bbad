//! The streams of a `pubsub.jetstream` Component: their settings from annotations, and [`plan`],
//! the create-or-verify decision (pure), in the shape of the bucket plan. A Component has up to
//! two streams, planned alike: its topics', and its dead-letter topics' ([`Role`],
//! [`dead_letter_stream_name`]).
//!
//! Defaults are what Dapr's own conformance stream uses: limits retention, file storage, discard
//! old, and a 2 minute duplicate window (daprd sets `Nats-Msg-Id` to the CloudEvent id, so
//! redeliveries of a publish inside the window are dropped). Subjects are added, never removed.
//! Nothing is sent that nats-server would refuse: overlaps with other streams (error 10065, the
//! `$KV.<bucket>.>` subjects of buckets included) and immutable changes are decided here.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::stream;

use super::subjects::{collide, covers};
use crate::failure::{Failure, Retry};
use crate::nats::stream::limits::{duplicate_window, storage_type};
use crate::nats::stream::planned::{Planned, PlannedAction, PlannedChange};
use crate::nats::stream::{
    Change, ChangeKind, Field, META_COMPONENT, META_MANAGED_BY, is_managed_by,
};

mod annotations;
mod config;

pub use config::{diff, shown_config, status_of};
use config::{replicas_change, retention};

pub use annotations::{
    ALLOW_DATA_LOSS_ANNOTATION, ALLOW_MSG_TTL_ANNOTATION, CONSUMER_INACTIVE_THRESHOLD_ANNOTATION,
    CONSUMER_MAX_ACK_PENDING_ANNOTATION, DEAD_LETTER_SUFFIX, DISCARD_ANNOTATION,
    DUPLICATE_WINDOW_ANNOTATION, Discard, MAX_AGE_ANNOTATION, MAX_BYTES_ANNOTATION,
    MAX_MSG_SIZE_ANNOTATION, MAX_MSGS_ANNOTATION, MAX_MSGS_PER_SUBJECT_ANNOTATION,
    REPLICAS_ANNOTATION, RETENTION_ANNOTATION, Retention, STORAGE_ANNOTATION, STREAM_ANNOTATION,
    SUBJECTS_ANNOTATION, StreamSettings, dead_letter_stream_name, settings_warnings, stream_name,
    stream_settings,
};

/// Dapr's duplicate window (NATS's default).
pub use crate::nats::stream::limits::DUPLICATE_WINDOW;

/// What a Component asks for.
#[derive(Clone, Copy, Debug)]
pub struct Desired<'a> {
    /// The stream name (valid).
    pub stream: &'a str,
    /// The subjects it must hold (from [`super::derive_subjects`]; non-empty for a create).
    pub subjects: &'a [String],
    /// The Component, as `namespace/name`.
    pub owner: &'a str,
    /// The settings from its annotations.
    pub settings: &'a StreamSettings,
    /// What the stream holds.
    pub role: Role,
}

/// What a stream of a Component holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The topics daprd publishes to and subscribes to.
    Topics,
    /// The dead-letter topics, apart: daprd publishes a dead letter with the failed message's
    /// `Nats-Msg-Id`, which the topics' stream would drop as a duplicate.
    DeadLetters,
}

/// Another stream on the same server (account), with its subjects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherStream {
    /// Its name.
    pub name: String,
    /// Its subjects.
    pub subjects: Vec<String>,
}

/// One of our subjects that another stream already holds (some subject matches both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// Our subject.
    pub subject: String,
    /// The other stream.
    pub stream: String,
    /// Its subject that overlaps ours.
    pub other_subject: String,
}

/// The other stream's name and subject are the server's text (any tenant of the account chose
/// them): shown made fit, as [`remote_text`](crate::nats::remote_text) makes them.
impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (stream, other) = (
            crate::nats::remote_text(&self.stream),
            crate::nats::remote_text(&self.other_subject),
        );
        match stream.strip_prefix("KV_") {
            Some(bucket) if other.starts_with("$KV.") => {
                write!(f, "{} overlaps {other} of KV bucket {bucket}", self.subject)
            }
            _ => write!(f, "{} overlaps {other} of stream {stream}", self.subject),
        }
    }
}

/// The decision for one stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamPlan {
    /// The stream does not exist: create it.
    Create(Box<stream::Config>),
    /// A stream the operator created was deleted behind its back: create it again.
    Recreate(Box<stream::Config>),
    /// A stream the operator only verified has disappeared: report it, create nothing.
    Missing,
    /// The stream exists but Dapr cannot use it as it is, and the operator may not change it.
    NotUsable(String),
    /// Everything matches.
    InSync {
        /// Whether the operator manages the stream.
        managed: bool,
    },
    /// A managed stream that lacks subjects or whose settings differ: update it in place.
    Update {
        /// The configuration to send.
        config: Box<stream::Config>,
        /// Subjects added.
        added: Vec<String>,
        /// Settings changed.
        changes: Vec<Change>,
    },
    /// Differences that will not be applied; nothing is sent.
    Blocked {
        /// Whether the operator manages the stream.
        managed: bool,
        /// Why.
        reason: BlockReason,
        /// Subjects the stream lacks (for [`BlockReason::SubjectsNotCovered`]).
        missing: Vec<String>,
        /// Overlaps with other streams (for [`BlockReason::SubjectOverlap`]).
        overlaps: Vec<Overlap>,
        /// Settings that differ.
        changes: Vec<Change>,
    },
}

/// Why a plan cannot bring the stream to what the Component needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// A subject the stream needs is held by another stream (or a KV bucket).
    SubjectOverlap,
    /// A stream the operator only verifies lacks subjects daprd will use.
    SubjectsNotCovered,
    /// A stream the operator only verifies has other settings than the annotations ask.
    ConfigMismatch,
    /// NATS cannot change a setting of an existing stream.
    ImmutableFieldChanged,
    /// The change would discard messages and `allow-data-loss` is not set.
    DataLossRefused,
    /// Replicas above 1 on a server that is not clustered.
    UnsupportedByServer,
}

impl Failure for BlockReason {
    /// The condition reason.
    fn reason(&self) -> &'static str {
        match self {
            Self::SubjectOverlap => "SubjectOverlap",
            Self::SubjectsNotCovered => "SubjectsNotCovered",
            Self::ConfigMismatch => "ConfigMismatch",
            Self::ImmutableFieldChanged => "ImmutableFieldChanged",
            Self::DataLossRefused => "DataLossRefused",
            Self::UnsupportedByServer => "UnsupportedByServer",
        }
    }

    /// Blocked on a stream someone must change (or an annotation that allows it): looked at
    /// again at the drift check, when a Subscription changes, or when the Component does.
    fn retry(&self) -> Retry {
        Retry::Resync
    }
}

impl StreamPlan {
    /// What enforce mode would do to the stream `stream`, in the shape audit mode and a dry run
    /// show.
    pub fn describe(&self, stream: &str) -> Planned {
        match self {
            Self::Create(config) => Planned::new(
                stream,
                PlannedAction::Create,
                format!(
                    "the stream does not exist: create it with subjects {}",
                    config.subjects.join(", ")
                ),
            ),
            Self::Recreate(config) => Planned::new(
                stream,
                PlannedAction::Create,
                format!(
                    "the stream the operator created was deleted outside it: create it again with subjects {}",
                    config.subjects.join(", ")
                ),
            ),
            Self::Missing => Planned::new(
                stream,
                PlannedAction::None,
                "the stream was only verified and has disappeared: report it missing, create nothing",
            ),
            Self::NotUsable(why) => Planned::refused(stream, "StreamNotUsable", why.clone()),
            Self::InSync { .. } => Planned::new(
                stream,
                PlannedAction::None,
                "the stream matches the Component",
            ),
            Self::Update { added, changes, .. } => {
                let mut planned =
                    Planned::new(stream, PlannedAction::Update, "change the stream in place");
                if !added.is_empty() {
                    planned.changes.push(PlannedChange {
                        field: "subjects".to_owned(),
                        live: String::new(),
                        desired: format!("+{}", added.join(", +")),
                    });
                }
                planned.with_changes(changes)
            }
            Self::Blocked {
                reason,
                missing,
                overlaps,
                changes,
                ..
            } => Planned::refused(
                stream,
                reason.reason(),
                blocked_message(stream, *reason, missing, overlaps, changes),
            )
            .with_changes(changes),
        }
    }
}

/// What a blocked plan tells the user: what is wrong and what to change. Lists are cut to a few
/// entries (the status lists every topic).
pub fn blocked_message(
    stream: &str,
    reason: BlockReason,
    missing: &[String],
    overlaps: &[Overlap],
    changes: &[Change],
) -> String {
    fn few<T: std::fmt::Display>(items: &[T]) -> String {
        const SHOWN: usize = 5;
        let mut text: Vec<String> = items.iter().take(SHOWN).map(ToString::to_string).collect();
        if items.len() > SHOWN {
            text.push(format!("and {} more", items.len() - SHOWN));
        }
        text.join(", ")
    }
    match reason {
        BlockReason::SubjectOverlap => format!(
            "stream {stream} cannot hold the subjects the Component needs: {}; NATS lets one \
             subject belong to one stream only, so nothing was sent: rename the topics, or remove \
             the subjects from the other stream",
            few(overlaps)
        ),
        BlockReason::SubjectsNotCovered => format!(
            "stream {stream} was not created by the operator and does not hold {}; daprd will fail \
             to publish to or subscribe to these topics: add the subjects to the stream, or use a \
             stream the operator manages (remove streamName)",
            few(missing)
        ),
        BlockReason::ConfigMismatch => format!(
            "stream {stream} was not created by the operator and differs from the annotations: \
             {}; the operator only verifies it: change the annotations or fix the stream",
            few(changes)
        ),
        BlockReason::ImmutableFieldChanged => format!(
            "cannot change {} of stream {stream}: NATS cannot change it on an existing stream; \
             revert the annotation, or use a new stream (jetstreamkv.io/stream)",
            few(changes)
        ),
        BlockReason::DataLossRefused => format!(
            "refused to apply {} to stream {stream}: it would discard stored messages; set \
             jetstreamkv.io/allow-data-loss: \"true\" to apply it",
            few(changes)
        ),
        BlockReason::UnsupportedByServer => format!(
            "cannot apply {} to stream {stream}: the server is not clustered; use replicas 1",
            few(changes)
        ),
    }
}

/// The configuration of a new stream.
pub fn desired_stream(d: &Desired<'_>) -> stream::Config {
    let s = d.settings;
    let max_age = s.max_age.unwrap_or(Duration::ZERO);
    // The user's items, then the operator's marks (reserved keys never come from the user).
    let mut metadata: HashMap<String, String> = s
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.insert(META_MANAGED_BY.to_owned(), crate::crd::MANAGER.to_owned());
    metadata.insert(META_COMPONENT.to_owned(), d.owner.to_owned());
    let description = s.description.clone().unwrap_or_else(|| match d.role {
        Role::Topics => format!("Dapr pubsub.jetstream Component {}", d.owner),
        Role::DeadLetters => format!(
            "dead letters of Dapr pubsub.jetstream Component {}",
            d.owner
        ),
    });
    stream::Config {
        name: d.stream.to_owned(),
        subjects: d.subjects.to_vec(),
        retention: retention(s.retention),
        storage: storage_type(s.storage),
        num_replicas: s.replicas,
        max_age,
        max_bytes: s.max_bytes.unwrap_or(-1),
        max_messages: s.max_msgs.unwrap_or(-1),
        max_message_size: s.max_msg_size.unwrap_or(-1),
        max_messages_per_subject: s.max_msgs_per_subject.unwrap_or(-1),
        discard: config::discard(s.discard),
        duplicate_window: s
            .duplicate_window
            .unwrap_or_else(|| duplicate_window(max_age)),
        compression: s.compression.then_some(stream::Compression::S2),
        description: Some(description),
        placement: config::placement(s),
        consumer_limits: config::consumer_limits(s),
        allow_message_ttl: s.allow_msg_ttl,
        metadata,
        ..Default::default()
    }
}
/// The overlaps of `subjects` with the other streams' subjects (`own` excluded): for each other
/// stream in order, each of our subjects it holds, with the first of its subjects that collides.
///
/// The other streams come from the server, so their number is the server's to choose (up to
/// the listing's bound): comparing every pair would cost ours × theirs. Their subjects are
/// indexed by first token instead. Ours always start with a literal token (a leading wildcard
/// is refused), so only theirs with the same first token, or a wildcard there, can collide: one
/// pass over theirs, then for each of ours only the few that share its first token.
pub fn overlaps(subjects: &[String], own: &str, others: &[OtherStream]) -> Vec<Overlap> {
    const ANY: &str = "*";
    fn first(s: &str) -> &str {
        match s.split('.').next().unwrap_or_default() {
            "*" | ">" => ANY,
            token => token,
        }
    }
    // First token -> (stream index, subject index) of their subjects, in their order.
    let mut index: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, other) in others.iter().enumerate().filter(|(_, o)| o.name != own) {
        for (j, theirs) in other.subjects.iter().enumerate() {
            index.entry(first(theirs)).or_default().push((i, j));
        }
    }
    // (stream, our subject) -> the first of its subjects that collides.
    let mut found: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
    let no_candidates = Vec::new();
    for (k, ours) in subjects.iter().enumerate() {
        let key = first(ours);
        let wild = index.get(ANY).unwrap_or(&no_candidates);
        let candidates: Vec<&Vec<(usize, usize)>> = if key == ANY {
            // Not a subject we would send; compared with everything all the same.
            index.values().collect()
        } else {
            vec![index.get(key).unwrap_or(&no_candidates), wild]
        };
        for &(i, j) in candidates.into_iter().flatten() {
            if collide(ours, &others[i].subjects[j]) {
                let slot = found.entry((i, k)).or_insert(j);
                *slot = (*slot).min(j);
            }
        }
    }
    found
        .into_iter()
        .map(|((i, k), j)| Overlap {
            subject: subjects[k].clone(),
            stream: others[i].name.clone(),
            other_subject: others[i].subjects[j].clone(),
        })
        .collect()
}

/// The subjects the live stream does not cover: what a plan would add, and what only the other
/// streams' subjects are needed to check (an overlap needs a subject the stream lacks).
pub fn uncovered(subjects: &[String], live: &stream::Config) -> Vec<String> {
    subjects
        .iter()
        .filter(|s| !live.subjects.iter().any(|l| covers(l, s)))
        .cloned()
        .collect()
}

/// Decides what to do. `others` are the other streams of the account (with their subjects);
/// `previously_managed` is what the last status said (None when there was none); `clustered`
/// whether the server runs in a cluster.
pub fn plan(
    d: &Desired<'_>,
    live: Option<&stream::Config>,
    others: &[OtherStream],
    previously_managed: Option<bool>,
    clustered: bool,
) -> StreamPlan {
    let Some(live) = live else {
        if previously_managed == Some(false) {
            return StreamPlan::Missing;
        }
        let overlaps = overlaps(d.subjects, d.stream, others);
        if !overlaps.is_empty() {
            return blocked(false, BlockReason::SubjectOverlap, vec![], overlaps, vec![]);
        }
        if !clustered && d.settings.replicas > 1 {
            return blocked(
                false,
                BlockReason::UnsupportedByServer,
                vec![],
                vec![],
                vec![replicas_change(
                    1,
                    d.settings.replicas,
                    ChangeKind::Unsupported,
                )],
            );
        }
        let config = Box::new(desired_stream(d));
        return if previously_managed == Some(true) {
            StreamPlan::Recreate(config)
        } else {
            StreamPlan::Create(config)
        };
    };
    let managed = is_managed_by(live, d.owner);
    if let Some(problem) = unusable(live) {
        return StreamPlan::NotUsable(problem);
    }
    // What daprd will look up: each subject must be covered by this stream.
    let missing = uncovered(d.subjects, live);
    let overlaps = overlaps(&missing, d.stream, others);
    if !overlaps.is_empty() {
        return blocked(
            managed,
            BlockReason::SubjectOverlap,
            missing,
            overlaps,
            vec![],
        );
    }
    let mut changes = diff(d.settings, live, clustered);
    if !managed {
        // Verify only: never touch a stream someone else created.
        if !missing.is_empty() {
            return blocked(
                false,
                BlockReason::SubjectsNotCovered,
                missing,
                vec![],
                vec![],
            );
        }
        changes.retain(|c| d.settings.explicit.contains(&c.field));
        return if changes.is_empty() {
            StreamPlan::InSync { managed: false }
        } else {
            blocked(false, BlockReason::ConfigMismatch, vec![], vec![], changes)
        };
    }
    for (kind, reason) in [
        (ChangeKind::Immutable, BlockReason::ImmutableFieldChanged),
        (ChangeKind::Unsupported, BlockReason::UnsupportedByServer),
    ] {
        if changes.iter().any(|c| c.kind == kind) {
            changes.retain(|c| c.kind == kind);
            return blocked(true, reason, missing, vec![], changes);
        }
    }
    if !d.settings.allow_data_loss && changes.iter().any(|c| c.kind == ChangeKind::DataLoss) {
        changes.retain(|c| c.kind == ChangeKind::DataLoss);
        return blocked(true, BlockReason::DataLossRefused, missing, vec![], changes);
    }
    if missing.is_empty() && changes.is_empty() {
        return StreamPlan::InSync { managed: true };
    }
    StreamPlan::Update {
        config: Box::new(updated_stream(d, live, &missing)),
        added: missing,
        changes,
    }
}

fn blocked(
    managed: bool,
    reason: BlockReason,
    missing: Vec<String>,
    overlaps: Vec<Overlap>,
    changes: Vec<Change>,
) -> StreamPlan {
    StreamPlan::Blocked {
        managed,
        reason,
        missing,
        overlaps,
        changes,
    }
}

/// Why Dapr cannot use a stream, whoever manages it, and the operator must not change it.
fn unusable(live: &stream::Config) -> Option<String> {
    if live.mirror.is_some() {
        return Some(format!(
            "stream {} is a mirror: it takes no publishes, so daprd cannot publish to it; point \
             the Component at another stream",
            live.name
        ));
    }
    if live.sealed {
        return Some(format!(
            "stream {} is sealed: it takes no publishes; point the Component at another stream",
            live.name
        ));
    }
    if live.retention == stream::RetentionPolicy::WorkQueue {
        return Some(format!(
            "stream {} has WorkQueue retention, which allows one consumer per subject and so \
             breaks Dapr's fan-out (NATS errors 10100/10101); NATS cannot change the retention \
             of a WorkQueue stream: use another stream",
            live.name
        ));
    }
    None
}

/// The live config with the missing subjects appended and the desired settings applied,
/// keeping everything else (one-way flags, placement, and the description and metadata when no
/// annotation sets them) as the server has it.
fn updated_stream(d: &Desired<'_>, live: &stream::Config, missing: &[String]) -> stream::Config {
    let want = desired_stream(d);
    let explicit = |f| d.settings.explicit.contains(&f);
    let mut next = live.clone();
    next.subjects.extend(missing.iter().cloned());
    next.retention = want.retention;
    next.num_replicas = want.num_replicas;
    next.max_age = want.max_age;
    next.max_bytes = want.max_bytes;
    next.max_messages = want.max_messages;
    next.max_message_size = want.max_message_size;
    next.max_messages_per_subject = want.max_messages_per_subject;
    next.discard = want.discard;
    next.duplicate_window = want.duplicate_window;
    next.compression = want.compression;
    next.consumer_limits = want.consumer_limits;
    // Never turned off (nats-server refuses; the plan blocks it before).
    next.allow_message_ttl = live.allow_message_ttl || want.allow_message_ttl;
    if next.max_age > Duration::ZERO && next.duplicate_window > next.max_age {
        next.duplicate_window = next.max_age;
    }
    if explicit(Field::Description) {
        next.description = want.description;
    }
    if explicit(Field::Metadata) {
        // The user's items are replaced; the server's and the operator's keys are kept.
        next.metadata
            .retain(|k, _| crate::settings::is_reserved_metadata_key(k));
    }
    next.metadata.extend(want.metadata);
    next
}

#[cfg(test)]
mod tests;
