//! A stream's settings: what the Component's settings mean for NATS, how a live stream's are
//! shown, and the differences between them.

use std::time::Duration;

use async_nats::jetstream::stream;

use super::{Retention, StreamSettings};
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
    StreamConfig {
        retention: retention_name(c.retention).into(),
        storage: storage_name(c.storage).into(),
        replicas: i64::try_from(c.num_replicas.max(1)).unwrap_or(i64::MAX),
        max_age: (!c.max_age.is_zero()).then(|| duration::format(c.max_age)),
        max_bytes: (c.max_bytes > 0).then_some(c.max_bytes),
        duplicate_window: duration::format(c.duplicate_window),
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
    out
}
