//! What differs between a live bucket and what its Component asks for, field by field.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::stream;

use super::desired::{PER_KEY_TTL_ON_EXISTING, ServerFacts};
use super::republish::{live_republish, republish, republish_text};
use crate::nats::stream::limits::{storage_name, storage_type};
use crate::nats::stream::{Change, ChangeKind, Field};
use crate::settings::{BucketSettings, is_reserved_metadata_key};

fn limit(v: i64) -> String {
    if v < 0 {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn ttl(d: Duration) -> String {
    if d.is_zero() {
        "none".into()
    } else {
        crate::duration::format(d)
    }
}

/// Field-by-field differences after normalising defaults (unlimited is -1, no TTL is zero).
/// `exact_metadata`: the live user metadata must equal the Component's (a bucket the operator
/// keeps), or only hold its items (a bucket it verifies).
pub fn diff(
    bucket: &str,
    s: &BucketSettings,
    live: &stream::Config,
    server: &ServerFacts,
    exact_metadata: bool,
) -> Vec<Change> {
    [
        history(s, live),
        ttl_change(s, live),
        max_bytes(s, live),
        max_value_size(s, live),
        storage(s, live),
        replicas(s, live, server),
        compression(s, live),
        description(s, live),
        limit_marker_ttl(s, live, server),
        metadata_diff(&s.metadata, live, exact_metadata)
            .map(|(live, desired)| change(Field::Metadata, live, desired, ChangeKind::Safe)),
        republish_change(bucket, s, live),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn change(field: Field, live: String, desired: String, kind: ChangeKind) -> Change {
    Change {
        field,
        live,
        desired,
        kind,
    }
}

fn history(s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    if live.max_messages_per_subject == s.history {
        return None;
    }
    let kind = if s.history < live.max_messages_per_subject {
        ChangeKind::DataLoss
    } else {
        ChangeKind::Safe
    };
    Some(change(
        Field::History,
        live.max_messages_per_subject.to_string(),
        s.history.to_string(),
        kind,
    ))
}

fn ttl_change(s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    let want_ttl = s.ttl.unwrap_or(Duration::ZERO);
    if live.max_age == want_ttl {
        return None;
    }
    // Shorter, or a limit where there was none, expires values that are kept today.
    let loses = !want_ttl.is_zero() && (live.max_age.is_zero() || want_ttl < live.max_age);
    Some(change(
        Field::Ttl,
        ttl(live.max_age),
        ttl(want_ttl),
        kind_of(loses),
    ))
}

/// Whether a limit `want` keeps less than `live` (both normalised; -1 is unlimited).
fn shrinks(live: i64, want: i64) -> bool {
    want >= 0 && (live < 0 || want < live)
}

fn max_bytes(s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    let want_bytes = s.max_bytes.unwrap_or(-1);
    if normal(live.max_bytes) == want_bytes {
        return None;
    }
    Some(change(
        Field::MaxBytes,
        limit(live.max_bytes),
        limit(want_bytes),
        kind_of(shrinks(normal(live.max_bytes), want_bytes)),
    ))
}

fn max_value_size(s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    let want_value = i64::from(s.max_value_size.unwrap_or(-1));
    let live_value = normal(i64::from(live.max_message_size));
    if live_value == want_value {
        return None;
    }
    Some(change(
        Field::MaxValueSize,
        limit(live_value),
        limit(want_value),
        kind_of(shrinks(live_value, want_value)),
    ))
}

fn storage(s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    let want_storage = storage_type(s.storage);
    if live.storage == want_storage {
        return None;
    }
    Some(change(
        Field::Storage,
        storage_name(live.storage).into(),
        storage_name(want_storage).into(),
        ChangeKind::Immutable,
    ))
}

fn replicas(s: &BucketSettings, live: &stream::Config, server: &ServerFacts) -> Option<Change> {
    if live.num_replicas.max(1) == s.replicas {
        return None;
    }
    let kind = if !server.clustered && s.replicas > 1 {
        ChangeKind::Unsupported
    } else {
        ChangeKind::Safe
    };
    Some(change(
        Field::Replicas,
        live.num_replicas.max(1).to_string(),
        s.replicas.to_string(),
        kind,
    ))
}

fn compression(s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    let live_compressed = matches!(live.compression, Some(stream::Compression::S2));
    (live_compressed != s.compression).then(|| {
        change(
            Field::Compression,
            live_compressed.to_string(),
            s.compression.to_string(),
            ChangeKind::Safe,
        )
    })
}

fn description(s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    let live_description = live.description.clone().unwrap_or_default();
    let shown_live = crate::nats::remote_text(&live_description);
    let want_description = s.description.clone().unwrap_or_default();
    (live_description != want_description).then(|| {
        change(
            Field::Description,
            format!("{shown_live:?}"),
            format!("{want_description:?}"),
            ChangeKind::Safe,
        )
    })
}

fn limit_marker_ttl(
    s: &BucketSettings,
    live: &stream::Config,
    server: &ServerFacts,
) -> Option<Change> {
    let live_markers = live.subject_delete_marker_ttl.filter(|d| !d.is_zero());
    if live_markers == s.limit_marker_ttl {
        return None;
    }
    let kind = match (live_markers, s.limit_marker_ttl) {
        // nats-server cannot turn message TTLs off once on: off is a new bucket.
        (Some(_), None) => ChangeKind::Immutable,
        (None, Some(_))
            if !live.allow_message_ttl && server.older_than(PER_KEY_TTL_ON_EXISTING) =>
        {
            ChangeKind::Unsupported
        }
        // Markers are kept longer or shorter from now on; no value is lost either way.
        _ => ChangeKind::Safe,
    };
    let shown = |d: Option<Duration>| d.map_or_else(|| "none".to_owned(), crate::duration::format);
    Some(change(
        Field::LimitMarkerTtl,
        shown(live_markers),
        shown(s.limit_marker_ttl),
        kind,
    ))
}

fn republish_change(bucket: &str, s: &BucketSettings, live: &stream::Config) -> Option<Change> {
    let want_republish = republish(bucket, s);
    let live_republish = live_republish(bucket, live);
    (want_republish != live_republish).then(|| {
        change(
            Field::Republish,
            republish_text(live_republish.as_ref()),
            republish_text(want_republish.as_ref()),
            ChangeKind::Safe,
        )
    })
}

/// The user's items of a live stream's metadata (not the server's, not the operator's marks).
pub(super) fn user_metadata(live: &stream::Config) -> impl Iterator<Item = (&String, &String)> {
    live.metadata
        .iter()
        .filter(|(k, _)| !is_reserved_metadata_key(k))
}

/// How the live user metadata differs from `want`, as (live, desired) texts naming only the
/// differing keys (at most a few, each bounded: the live side is what a server sent).
fn metadata_diff(
    want: &BTreeMap<String, String>,
    live: &stream::Config,
    exact: bool,
) -> Option<(String, String)> {
    const SHOWN: usize = 5;
    let mut differing: Vec<&String> = want
        .iter()
        .filter(|(k, v)| live.metadata.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    if exact {
        differing.extend(
            user_metadata(live)
                .map(|(k, _)| k)
                .filter(|k| !want.contains_key(*k)),
        );
    }
    if differing.is_empty() {
        return None;
    }
    differing.sort();
    let text = |value: &dyn Fn(&String) -> Option<String>| {
        let mut items: Vec<String> = differing
            .iter()
            .take(SHOWN)
            .map(|k| {
                let v = value(k).map_or_else(|| "(none)".to_owned(), |v| format!("{v:?}"));
                format!("{:?}: {v}", crate::nats::remote_text(k))
            })
            .collect();
        if differing.len() > SHOWN {
            items.push(format!("and {} more", differing.len() - SHOWN));
        }
        format!("{{{}}}", items.join(", "))
    };
    Some((
        text(&|k| live.metadata.get(k).map(|v| crate::nats::remote_text(v))),
        text(&|k| want.get(k).map(|v| crate::nats::remote_text(v))),
    ))
}

fn kind_of(loses_data: bool) -> ChangeKind {
    if loses_data {
        ChangeKind::DataLoss
    } else {
        ChangeKind::Safe
    }
}

/// NATS reports "unlimited" as -1, and sometimes 0 for sizes that were never set.
fn normal(v: i64) -> i64 {
    if v <= 0 { -1 } else { v }
}
