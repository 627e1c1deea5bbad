//! The stream of a `pubsub.jetstream` Component: its settings from annotations, and [`plan`], the
//! create-or-verify decision (pure), in the shape of the bucket plan.
//!
//! Defaults are what Dapr's own conformance stream uses: limits retention, file storage, discard
//! old, and a 2 minute duplicate window (daprd sets `Nats-Msg-Id` to the CloudEvent id, so
//! redeliveries of a publish inside the window are dropped). Subjects are added, never removed.
//! Nothing is sent that nats-server would refuse: overlaps with other streams (error 10065, the
//! `$KV.<bucket>.>` subjects of buckets included) and immutable changes are decided here.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::stream;

use super::resource::{StreamConfig, StreamStatus};
use super::subjects::{collide, covers};
use crate::duration;
use crate::failure::{Failure, Retry};
use crate::nats::bucket::{Change, ChangeKind, META_COMPONENT, META_MANAGED_BY, is_managed_by};
use crate::settings::Storage;

mod annotations;

pub use annotations::{
    ALLOW_DATA_LOSS_ANNOTATION, MAX_AGE_ANNOTATION, MAX_BYTES_ANNOTATION, REPLICAS_ANNOTATION,
    RETENTION_ANNOTATION, Retention, STORAGE_ANNOTATION, STREAM_ANNOTATION, SUBJECTS_ANNOTATION,
    StreamSettings, settings_warnings, stream_name, stream_settings,
};

/// Dapr's duplicate window.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

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

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stream.strip_prefix("KV_") {
            Some(bucket) if self.other_subject.starts_with("$KV.") => write!(
                f,
                "{} overlaps {} of KV bucket {bucket}",
                self.subject, self.other_subject
            ),
            _ => write!(
                f,
                "{} overlaps {} of stream {}",
                self.subject, self.other_subject, self.stream
            ),
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
    let metadata = HashMap::from([
        (META_MANAGED_BY.to_owned(), crate::crd::MANAGER.to_owned()),
        (META_COMPONENT.to_owned(), d.owner.to_owned()),
    ]);
    stream::Config {
        name: d.stream.to_owned(),
        subjects: d.subjects.to_vec(),
        retention: retention(s.retention),
        storage: storage(s.storage),
        num_replicas: s.replicas,
        max_age,
        max_bytes: s.max_bytes.unwrap_or(-1),
        discard: stream::DiscardPolicy::Old,
        duplicate_window: duplicate_window(max_age),
        description: Some(format!("Dapr pubsub.jetstream Component {}", d.owner)),
        metadata,
        ..Default::default()
    }
}

fn retention(r: Retention) -> stream::RetentionPolicy {
    match r {
        Retention::Limits => stream::RetentionPolicy::Limits,
        Retention::Interest => stream::RetentionPolicy::Interest,
    }
}

fn storage(s: Storage) -> stream::StorageType {
    match s {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
    }
}

/// NATS requires the duplicate window to be no longer than the max age.
fn duplicate_window(max_age: Duration) -> Duration {
    if max_age > Duration::ZERO && max_age < DUPLICATE_WINDOW {
        max_age
    } else {
        DUPLICATE_WINDOW
    }
}

/// The overlaps of `subjects` with the other streams' subjects (`own` excluded).
pub fn overlaps(subjects: &[String], own: &str, others: &[OtherStream]) -> Vec<Overlap> {
    let mut out = Vec::new();
    for other in others.iter().filter(|o| o.name != own) {
        for subject in subjects {
            if let Some(theirs) = other.subjects.iter().find(|t| collide(subject, t)) {
                out.push(Overlap {
                    subject: subject.clone(),
                    stream: other.name.clone(),
                    other_subject: theirs.clone(),
                });
            }
        }
    }
    out
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
    let missing: Vec<String> = d
        .subjects
        .iter()
        .filter(|s| !live.subjects.iter().any(|l| covers(l, s)))
        .cloned()
        .collect();
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
/// keeping everything else (one-way flags included) as the server has it.
fn updated_stream(d: &Desired<'_>, live: &stream::Config, missing: &[String]) -> stream::Config {
    let want = desired_stream(d);
    let mut next = live.clone();
    next.subjects.extend(missing.iter().cloned());
    next.retention = want.retention;
    next.num_replicas = want.num_replicas;
    next.max_age = want.max_age;
    next.max_bytes = want.max_bytes;
    if next.max_age > Duration::ZERO && next.duplicate_window > next.max_age {
        next.duplicate_window = next.max_age;
    }
    next.metadata.extend(want.metadata);
    next
}

fn replicas_change(live: usize, desired: usize, kind: ChangeKind) -> Change {
    Change {
        field: "replicas",
        live: live.to_string(),
        desired: desired.to_string(),
        kind,
    }
}

fn age(d: Duration) -> String {
    if d.is_zero() {
        "forever".into()
    } else {
        duration::format(d)
    }
}

fn bytes(b: i64) -> String {
    if b <= 0 {
        "unlimited".into()
    } else {
        b.to_string()
    }
}

fn retention_name(r: stream::RetentionPolicy) -> &'static str {
    match r {
        stream::RetentionPolicy::Limits => "limits",
        stream::RetentionPolicy::Interest => "interest",
        stream::RetentionPolicy::WorkQueue => "workqueue",
    }
}

fn storage_name(s: stream::StorageType) -> &'static str {
    match s {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    }
}

/// A stream's settings as the JetStreamStream shows them.
pub fn shown_config(c: &stream::Config) -> StreamConfig {
    StreamConfig {
        retention: retention_name(c.retention).into(),
        storage: storage_name(c.storage).into(),
        replicas: i64::try_from(c.num_replicas.max(1)).unwrap_or(i64::MAX),
        max_age: (!c.max_age.is_zero()).then(|| duration::format(c.max_age)),
        max_bytes: (c.max_bytes > 0).then_some(c.max_bytes),
        duplicate_window: duration::format(c.duplicate_window),
    }
}

/// The facts the JetStreamStream status shows about a live stream.
pub fn status_of(info: &stream::Info, managed: bool, server_version: &str) -> StreamStatus {
    StreamStatus {
        name: info.config.name.clone(),
        managed,
        server_version: Some(server_version.to_owned()),
        subjects: info.config.subjects.clone(),
        config: shown_config(&info.config),
        messages: info.state.messages,
        bytes: info.state.bytes,
        consumers: u64::try_from(info.state.consumer_count).unwrap_or(u64::MAX),
    }
}

/// Field-by-field differences between the settings and a live stream, after normalising
/// defaults (unlimited is -1, forever is zero).
pub fn diff(s: &StreamSettings, live: &stream::Config, clustered: bool) -> Vec<Change> {
    let mut out = Vec::new();
    let want_retention = retention(s.retention);
    if live.retention != want_retention {
        // Limits <-> Interest can change in place (WorkQueue streams are unusable anyway);
        // towards Interest, messages nobody is interested in are dropped.
        let kind = if want_retention == stream::RetentionPolicy::Interest {
            ChangeKind::DataLoss
        } else {
            ChangeKind::Safe
        };
        out.push(Change {
            field: "retention",
            live: retention_name(live.retention).into(),
            desired: retention_name(want_retention).into(),
            kind,
        });
    }
    let want_storage = storage(s.storage);
    if live.storage != want_storage {
        out.push(Change {
            field: "storage",
            live: storage_name(live.storage).into(),
            desired: storage_name(want_storage).into(),
            kind: ChangeKind::Immutable,
        });
    }
    let live_replicas = live.num_replicas.max(1);
    if live_replicas != s.replicas {
        let kind = if !clustered && s.replicas > 1 {
            ChangeKind::Unsupported
        } else {
            ChangeKind::Safe
        };
        out.push(replicas_change(live_replicas, s.replicas, kind));
    }
    let want_age = s.max_age.unwrap_or(Duration::ZERO);
    if live.max_age != want_age {
        let loses = !want_age.is_zero() && (live.max_age.is_zero() || want_age < live.max_age);
        out.push(Change {
            field: "maxAge",
            live: age(live.max_age),
            desired: age(want_age),
            kind: if loses {
                ChangeKind::DataLoss
            } else {
                ChangeKind::Safe
            },
        });
    }
    let live_bytes = if live.max_bytes <= 0 {
        -1
    } else {
        live.max_bytes
    };
    let want_bytes = s.max_bytes.unwrap_or(-1);
    if live_bytes != want_bytes {
        let loses = want_bytes > 0 && (live_bytes < 0 || want_bytes < live_bytes);
        out.push(Change {
            field: "maxBytes",
            live: bytes(live_bytes),
            desired: bytes(want_bytes),
            kind: if loses {
                ChangeKind::DataLoss
            } else {
                ChangeKind::Safe
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const OWNER: &str = "shop/events";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stream_names() {
        let s = StreamSettings::default();
        assert_eq!(stream_name(None, &s, "shop", "events"), "shop_events");
        assert_eq!(stream_name(None, &s, "shop", "events.v2"), "shop_events_v2");
        let named = StreamSettings {
            name: Some("EVENTS".into()),
            ..Default::default()
        };
        assert_eq!(stream_name(None, &named, "shop", "events"), "EVENTS");
        assert_eq!(stream_name(Some("DAPR"), &named, "shop", "e"), "DAPR");
    }

    fn desired<'a>(subjects: &'a [String], settings: &'a StreamSettings) -> Desired<'a> {
        Desired {
            stream: "EVENTS",
            subjects,
            owner: OWNER,
            settings,
        }
    }

    fn ours(subjects: &[&str]) -> stream::Config {
        let settings = StreamSettings::default();
        let subjects = strings(subjects);
        desired_stream(&desired(&subjects, &settings))
    }

    fn others() -> Vec<OtherStream> {
        vec![
            OtherStream {
                name: "KV_cart".into(),
                subjects: strings(&["$KV.cart.>"]),
            },
            OtherStream {
                name: "AUDIT".into(),
                subjects: strings(&["audit.>"]),
            },
            OtherStream {
                name: "EVENTS".into(),
                subjects: strings(&["orders"]),
            },
        ]
    }

    #[test]
    fn new_stream_has_dapr_safe_defaults() {
        let c = ours(&["orders", "payments"]);
        assert_eq!(c.name, "EVENTS");
        assert_eq!(c.subjects, strings(&["orders", "payments"]));
        assert_eq!(c.retention, stream::RetentionPolicy::Limits);
        assert_eq!(c.storage, stream::StorageType::File);
        assert_eq!(c.discard, stream::DiscardPolicy::Old);
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert_eq!(c.num_replicas, 1);
        assert!(!c.no_ack);
        assert!(is_managed_by(&c, OWNER));
        assert!(!is_managed_by(&c, "shop/other"));

        let short = StreamSettings {
            max_age: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        let subjects = strings(&["orders"]);
        let c = desired_stream(&desired(&subjects, &short));
        assert_eq!(c.duplicate_window, Duration::from_secs(30));
    }

    /// The outcome of a plan, in a form a table can hold.
    fn outcome(p: &StreamPlan) -> String {
        match p {
            StreamPlan::Create(c) => format!("create {}", c.subjects.join(",")),
            StreamPlan::Recreate(c) => format!("recreate {}", c.subjects.join(",")),
            StreamPlan::Missing => "missing".into(),
            StreamPlan::NotUsable(_) => "not usable".into(),
            StreamPlan::InSync { managed } => format!("in sync managed={managed}"),
            StreamPlan::Update { added, changes, .. } => {
                let fields: Vec<&str> = changes.iter().map(|c| c.field).collect();
                format!("update +{} {}", added.join(","), fields.join(","))
            }
            StreamPlan::Blocked {
                reason,
                missing,
                overlaps,
                changes,
                ..
            } => {
                let fields: Vec<&str> = changes.iter().map(|c| c.field).collect();
                let with: Vec<&str> = overlaps.iter().map(|o| o.stream.as_str()).collect();
                format!(
                    "{} missing={} overlaps={} changes={}",
                    reason.reason(),
                    missing.join(","),
                    with.join(","),
                    fields.join(",")
                )
            }
        }
    }

    #[test]
    fn plans() {
        let foreign = {
            let mut c = ours(&["orders"]);
            c.metadata.clear();
            c
        };
        let with = |f: &dyn Fn(&mut stream::Config)| {
            let mut c = ours(&["orders"]);
            f(&mut c);
            c
        };
        struct Case {
            name: &'static str,
            subjects: &'static [&'static str],
            settings: StreamSettings,
            live: Option<stream::Config>,
            previously_managed: Option<bool>,
            clustered: bool,
            want: &'static str,
        }
        let case = |name, subjects, live, want| Case {
            name,
            subjects,
            settings: StreamSettings::default(),
            live,
            previously_managed: None,
            clustered: false,
            want,
        };
        let cases = vec![
            case(
                "absent: create",
                &["orders", "poison"],
                None,
                "create orders,poison",
            ),
            Case {
                previously_managed: Some(true),
                ..case(
                    "ours, deleted behind our back",
                    &["orders"],
                    None,
                    "recreate orders",
                )
            },
            Case {
                previously_managed: Some(false),
                ..case("verified one gone", &["orders"], None, "missing")
            },
            case(
                "absent, but a bucket holds the subject",
                &["$KV.cart.k"],
                None,
                "SubjectOverlap missing= overlaps=KV_cart changes=",
            ),
            case(
                "absent, another stream holds a wider pattern",
                &["orders", "audit.login"],
                None,
                "SubjectOverlap missing= overlaps=AUDIT changes=",
            ),
            Case {
                settings: StreamSettings {
                    replicas: 3,
                    ..Default::default()
                },
                ..case(
                    "absent, replicas on a single server",
                    &["orders"],
                    None,
                    "UnsupportedByServer missing= overlaps= changes=replicas",
                )
            },
            case(
                "ours, in sync",
                &["orders"],
                Some(ours(&["orders"])),
                "in sync managed=true",
            ),
            case(
                "ours, covered by a wider live subject",
                &["orders.new"],
                Some(ours(&["orders.>"])),
                "in sync managed=true",
            ),
            case(
                "ours, a new subscription adds its subject",
                &["orders", "payments"],
                Some(ours(&["orders"])),
                "update +payments ",
            ),
            case(
                "ours, a subject no longer wanted is kept",
                &["payments"],
                Some(ours(&["orders", "payments"])),
                "in sync managed=true",
            ),
            case(
                "ours, a new subject overlaps another stream",
                &["orders", "audit.x"],
                Some(ours(&["orders"])),
                "SubjectOverlap missing=audit.x overlaps=AUDIT changes=",
            ),
            Case {
                settings: StreamSettings {
                    storage: Storage::Memory,
                    ..Default::default()
                },
                ..case(
                    "ours, storage change is immutable",
                    &["orders", "payments"],
                    Some(ours(&["orders"])),
                    "ImmutableFieldChanged missing=payments overlaps= changes=storage",
                )
            },
            Case {
                settings: StreamSettings {
                    max_age: Some(Duration::from_secs(3600)),
                    ..Default::default()
                },
                ..case(
                    "ours, a max age would drop messages",
                    &["orders"],
                    Some(ours(&["orders"])),
                    "DataLossRefused missing= overlaps= changes=maxAge",
                )
            },
            Case {
                settings: StreamSettings {
                    max_age: Some(Duration::from_secs(3600)),
                    allow_data_loss: true,
                    ..Default::default()
                },
                ..case(
                    "ours, a max age with allow-data-loss",
                    &["orders"],
                    Some(ours(&["orders"])),
                    "update + maxAge",
                )
            },
            Case {
                settings: StreamSettings {
                    retention: Retention::Interest,
                    allow_data_loss: true,
                    ..Default::default()
                },
                ..case(
                    "ours, interest asked for",
                    &["orders"],
                    Some(ours(&["orders"])),
                    "update + retention",
                )
            },
            Case {
                settings: StreamSettings {
                    replicas: 3,
                    ..Default::default()
                },
                clustered: true,
                ..case(
                    "ours, replicas in a cluster",
                    &["orders"],
                    Some(ours(&["orders"])),
                    "update + replicas",
                )
            },
            case(
                "foreign, covers everything",
                &["orders"],
                Some(foreign.clone()),
                "in sync managed=false",
            ),
            case(
                "foreign, a topic it does not cover",
                &["orders", "payments"],
                Some(foreign.clone()),
                "SubjectsNotCovered missing=payments overlaps= changes=",
            ),
            Case {
                settings: StreamSettings {
                    max_age: Some(Duration::from_secs(3600)),
                    ..Default::default()
                },
                ..case(
                    "foreign, unasked differences are not reported",
                    &["orders"],
                    Some(foreign.clone()),
                    "in sync managed=false",
                )
            },
            Case {
                settings: stream_settings(&BTreeMap::from([(
                    STORAGE_ANNOTATION.to_owned(),
                    "memory".to_owned(),
                )]))
                .unwrap(),
                ..case(
                    "foreign, an explicit setting differs",
                    &["orders"],
                    Some(foreign.clone()),
                    "ConfigMismatch missing= overlaps= changes=storage",
                )
            },
            case(
                "workqueue stream",
                &["orders"],
                Some(with(&|c| c.retention = stream::RetentionPolicy::WorkQueue)),
                "not usable",
            ),
            case(
                "sealed stream",
                &["orders"],
                Some(with(&|c| c.sealed = true)),
                "not usable",
            ),
        ];
        for c in cases {
            let subjects = strings(c.subjects);
            let d = desired(&subjects, &c.settings);
            let p = plan(
                &d,
                c.live.as_ref(),
                &others(),
                c.previously_managed,
                c.clustered,
            );
            assert_eq!(outcome(&p), c.want, "{}", c.name);
        }
    }

    #[test]
    fn update_appends_subjects_and_keeps_what_the_server_has() {
        let mut live = ours(&["orders"]);
        live.deny_delete = true;
        live.max_messages = 1000;
        live.metadata.insert("_nats.req.level".into(), "1".into());
        let settings = StreamSettings::default();
        let subjects = strings(&["orders", "payments"]);
        let StreamPlan::Update { config, added, .. } = plan(
            &desired(&subjects, &settings),
            Some(&live),
            &[],
            None,
            false,
        ) else {
            panic!("expected an update");
        };
        assert_eq!(added, strings(&["payments"]));
        assert_eq!(config.subjects, strings(&["orders", "payments"]));
        assert!(config.deny_delete, "one-way flags are kept");
        assert_eq!(config.max_messages, 1000);
        assert_eq!(config.metadata["_nats.req.level"], "1");
        assert!(is_managed_by(&config, OWNER));
    }

    #[test]
    fn overlap_messages_name_the_bucket_or_stream() {
        let o = overlaps(&strings(&["$KV.cart.a", "audit.x"]), "EVENTS", &others());
        let text: Vec<String> = o.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "$KV.cart.a overlaps $KV.cart.> of KV bucket cart",
                "audit.x overlaps audit.> of stream AUDIT"
            ]
        );
        assert!(overlaps(&strings(&["orders"]), "EVENTS", &others()).is_empty());
    }

    #[test]
    fn blocked_messages_say_what_to_do_and_stay_short() {
        let missing: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let overlaps = overlaps(&strings(&["$KV.cart.a"]), "EVENTS", &others());
        let changes = vec![Change {
            field: "storage",
            live: "file".into(),
            desired: "memory".into(),
            kind: ChangeKind::Immutable,
        }];
        for reason in [
            BlockReason::SubjectOverlap,
            BlockReason::SubjectsNotCovered,
            BlockReason::ConfigMismatch,
            BlockReason::ImmutableFieldChanged,
            BlockReason::DataLossRefused,
            BlockReason::UnsupportedByServer,
        ] {
            let msg = blocked_message("EVENTS", reason, &missing, &overlaps, &changes);
            assert!(msg.contains("EVENTS"), "{msg}");
            assert!(
                ["remove ", "add ", "change ", "revert ", "set ", "use "]
                    .iter()
                    .any(|t| msg.contains(t)),
                "{msg}"
            );
            assert!(msg.len() < 400, "{msg}");
        }
        let msg = blocked_message(
            "EVENTS",
            BlockReason::SubjectsNotCovered,
            &missing,
            &[],
            &[],
        );
        assert!(msg.contains("t4, and 15 more"), "{msg}");
        let msg = blocked_message("EVENTS", BlockReason::SubjectOverlap, &[], &overlaps, &[]);
        assert!(msg.contains("KV bucket cart"), "{msg}");
    }
}
