//! A stream's settings: what the Component's settings mean for NATS, how a live stream's are
//! shown, and the differences between them.

use std::time::Duration;

use async_nats::jetstream::stream;

use super::{Discard, Retention, StreamSettings};
use crate::duration;
use crate::nats::stream::limits::{storage_name, storage_type};
use crate::nats::stream::{Change, ChangeKind, Field};
use crate::pubsub::resource::{StreamConfig, StreamStatus};

pub(super) fn retention(r: Retention) -> stream::RetentionPolicy {
    match r {
        Retention::Limits => stream::RetentionPolicy::Limits,
        Retention::Interest => stream::RetentionPolicy::Interest,
    }
}

pub(super) fn discard(d: Discard) -> stream::DiscardPolicy {
    match d {
        Discard::Old => stream::DiscardPolicy::Old,
        Discard::New => stream::DiscardPolicy::New,
    }
}

fn discard_name(d: stream::DiscardPolicy) -> &'static str {
    match d {
        stream::DiscardPolicy::Old => "old",
        stream::DiscardPolicy::New => "new",
    }
}

pub(super) fn placement(s: &StreamSettings) -> Option<stream::Placement> {
    if s.placement_cluster.is_none() && s.placement_tags.is_empty() {
        return None;
    }
    Some(stream::Placement {
        cluster: s.placement_cluster.clone(),
        tags: s.placement_tags.clone(),
    })
}

pub(super) fn consumer_limits(s: &StreamSettings) -> Option<stream::ConsumerLimits> {
    if s.consumer_inactive_threshold.is_none() && s.consumer_max_ack_pending.is_none() {
        return None;
    }
    Some(stream::ConsumerLimits {
        inactive_threshold: s.consumer_inactive_threshold.unwrap_or(Duration::ZERO),
        max_ack_pending: s.consumer_max_ack_pending.unwrap_or(0),
    })
}

/// The consumer limits as (inactive threshold, max ack pending), zero for none.
fn limits_of(c: Option<&stream::ConsumerLimits>) -> (Duration, i64) {
    c.map_or((Duration::ZERO, 0), |c| {
        (c.inactive_threshold, c.max_ack_pending.max(0))
    })
}

fn limits_text((inactive, pending): (Duration, i64)) -> String {
    let inactive = if inactive.is_zero() {
        "none".to_owned()
    } else {
        duration::format(inactive)
    };
    let pending = if pending <= 0 {
        "none".to_owned()
    } else {
        pending.to_string()
    };
    format!("inactiveThreshold {inactive}, maxAckPending {pending}")
}

fn placement_text(p: Option<&stream::Placement>) -> String {
    match p {
        None => "none".into(),
        Some(p) => format!(
            "cluster {:?}, tags [{}]",
            p.cluster.as_deref().unwrap_or_default(),
            p.tags.join(",")
        ),
    }
}

/// The user's items of a stream's metadata (not the server's, not the operator's marks).
fn user_metadata(live: &stream::Config) -> std::collections::BTreeMap<String, String> {
    live.metadata
        .iter()
        .filter(|(k, _)| !crate::settings::is_reserved_metadata_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// -1 for any limit that is not positive.
fn normal(v: i64) -> i64 {
    if v <= 0 { -1 } else { v }
}

/// Whether a limit `want` keeps less than `live` (both normalised; -1 is unlimited).
fn shrinks(live: i64, want: i64) -> bool {
    want > 0 && (live < 0 || want < live)
}

fn limit_change(field: Field, live: i64, want: i64) -> Option<Change> {
    let (live, want) = (normal(live), normal(want));
    (live != want).then(|| Change {
        field,
        live: bytes(live),
        desired: bytes(want),
        kind: if shrinks(live, want) {
            ChangeKind::DataLoss
        } else {
            ChangeKind::Safe
        },
    })
}

pub(super) fn replicas_change(live: usize, desired: usize, kind: ChangeKind) -> Change {
    Change {
        field: Field::Replicas,
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

/// A stream's settings as the JetStreamStream shows them.
pub fn shown_config(c: &stream::Config) -> StreamConfig {
    let positive = |v: i64| (v > 0).then_some(v);
    let (inactive, pending) = limits_of(c.consumer_limits.as_ref());
    StreamConfig {
        retention: retention_name(c.retention).into(),
        storage: storage_name(c.storage).into(),
        replicas: i64::try_from(c.num_replicas.max(1)).unwrap_or(i64::MAX),
        max_age: (!c.max_age.is_zero()).then(|| duration::format(c.max_age)),
        max_bytes: (c.max_bytes > 0).then_some(c.max_bytes),
        duplicate_window: duration::format(c.duplicate_window),
        max_msgs: positive(c.max_messages),
        max_msg_size: positive(i64::from(c.max_message_size)),
        max_msgs_per_subject: positive(c.max_messages_per_subject),
        discard: Some(discard_name(c.discard).to_owned()),
        compression: matches!(c.compression, Some(stream::Compression::S2)),
        description: c.description.clone().filter(|d| !d.is_empty()),
        placement_cluster: c
            .placement
            .as_ref()
            .and_then(|p| p.cluster.clone())
            .filter(|p| !p.is_empty()),
        placement_tags: c
            .placement
            .as_ref()
            .map(|p| p.tags.clone())
            .unwrap_or_default(),
        metadata: user_metadata(c),
        consumer_inactive_threshold: (!inactive.is_zero()).then(|| duration::format(inactive)),
        consumer_max_ack_pending: positive(pending),
        allow_msg_ttl: c.allow_message_ttl,
    }
}

/// The facts the JetStreamStream status shows about a live stream, on a server of this version
/// and JetStream domain.
pub fn status_of(
    info: &stream::Info,
    managed: bool,
    server_version: &str,
    domain: Option<&str>,
) -> StreamStatus {
    StreamStatus {
        name: info.config.name.clone(),
        managed,
        server_version: Some(server_version.to_owned()),
        identity: Some(crate::nats::stream::identity(info, domain)),
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
            field: Field::Retention,
            live: retention_name(live.retention).into(),
            desired: retention_name(want_retention).into(),
            kind,
        });
    }
    let want_storage = storage_type(s.storage);
    if live.storage != want_storage {
        out.push(Change {
            field: Field::Storage,
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
            field: Field::MaxAge,
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
            field: Field::MaxBytes,
            live: bytes(live_bytes),
            desired: bytes(want_bytes),
            kind: if loses {
                ChangeKind::DataLoss
            } else {
                ChangeKind::Safe
            },
        });
    }
    out.extend(stream_limits(s, live));
    out
}

/// The differences in the settings a pub/sub stream has beyond a bucket's: message limits,
/// discard, duplicate window, compression, consumer limits, message TTLs, and, when an
/// annotation sets them, description, metadata and placement.
fn stream_limits(s: &StreamSettings, live: &stream::Config) -> Vec<Change> {
    let explicit = |f| s.explicit.contains(&f);
    let change = |field, live: String, desired: String, kind| Change {
        field,
        live,
        desired,
        kind,
    };
    let mut out: Vec<Change> = [
        limit_change(Field::MaxMsgs, live.max_messages, s.max_msgs.unwrap_or(-1)),
        limit_change(
            Field::MaxMsgSize,
            i64::from(live.max_message_size),
            i64::from(s.max_msg_size.unwrap_or(-1)),
        ),
        limit_change(
            Field::MaxMsgsPerSubject,
            live.max_messages_per_subject,
            s.max_msgs_per_subject.unwrap_or(-1),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let want_discard = discard(s.discard);
    if live.discard != want_discard {
        out.push(change(
            Field::Discard,
            discard_name(live.discard).into(),
            discard_name(want_discard).into(),
            ChangeKind::Safe,
        ));
    }
    let want_window = s.duplicate_window.unwrap_or_else(|| {
        crate::nats::stream::limits::duplicate_window(s.max_age.unwrap_or(Duration::ZERO))
    });
    if live.duplicate_window != want_window {
        out.push(change(
            Field::DuplicateWindow,
            duration::format(live.duplicate_window),
            duration::format(want_window),
            ChangeKind::Safe,
        ));
    }
    let live_compressed = matches!(live.compression, Some(stream::Compression::S2));
    if live_compressed != s.compression {
        out.push(change(
            Field::Compression,
            live_compressed.to_string(),
            s.compression.to_string(),
            ChangeKind::Safe,
        ));
    }
    let (live_limits, want_limits) = (
        limits_of(live.consumer_limits.as_ref()),
        limits_of(consumer_limits(s).as_ref()),
    );
    if live_limits != want_limits {
        out.push(change(
            Field::ConsumerLimits,
            limits_text(live_limits),
            limits_text(want_limits),
            ChangeKind::Safe,
        ));
    }
    if live.allow_message_ttl != s.allow_msg_ttl {
        // nats-server cannot turn message TTLs off once on.
        let kind = if live.allow_message_ttl {
            ChangeKind::Immutable
        } else {
            ChangeKind::Safe
        };
        out.push(change(
            Field::AllowMsgTtl,
            live.allow_message_ttl.to_string(),
            s.allow_msg_ttl.to_string(),
            kind,
        ));
    }
    if explicit(Field::Description) {
        let live_description = live.description.clone().unwrap_or_default();
        let want_description = s.description.clone().unwrap_or_default();
        if live_description != want_description {
            out.push(change(
                Field::Description,
                format!("{live_description:?}"),
                format!("{want_description:?}"),
                ChangeKind::Safe,
            ));
        }
    }
    if explicit(Field::Metadata) {
        let live_metadata = user_metadata(live);
        if live_metadata != s.metadata {
            let text = |m: &std::collections::BTreeMap<String, String>| {
                serde_json::to_string(m).unwrap_or_default()
            };
            out.push(change(
                Field::Metadata,
                crate::settings::shorten(&text(&live_metadata)),
                crate::settings::shorten(&text(&s.metadata)),
                ChangeKind::Safe,
            ));
        }
    }
    if explicit(Field::Placement) {
        let want = placement(s);
        let same = match (&live.placement, &want) {
            (None, None) => true,
            (Some(l), Some(w)) => l.cluster == w.cluster && l.tags == w.tags,
            (Some(l), None) => l.cluster.is_none() && l.tags.is_empty(),
            (None, Some(_)) => false,
        };
        if !same {
            // The operator does not move streams between servers or clusters.
            out.push(change(
                Field::Placement,
                placement_text(live.placement.as_ref()),
                placement_text(want.as_ref()),
                ChangeKind::Immutable,
            ));
        }
    }
    out
}
