//! The stream configuration of a KV bucket: what a new bucket gets, and what an update sends.

use std::time::Duration;

use async_nats::jetstream::stream;

use super::desired::{Desired, stream_name};
use super::republish::republish;
use crate::nats::stream::limits::{duplicate_window, storage_type};
use crate::nats::stream::{META_COMPONENT, META_MANAGED_BY};
use crate::settings::{BucketSettings, is_reserved_metadata_key};

/// The stream configuration a new bucket gets, following the NATS KV conventions.
pub fn desired_stream(d: &Desired<'_>) -> stream::Config {
    let s = d.settings;
    let max_age = s.ttl.unwrap_or(Duration::ZERO);
    // The user's items, then the operator's marks (reserved keys never come from the user).
    let mut metadata: std::collections::HashMap<String, String> = s
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.insert(META_MANAGED_BY.to_string(), crate::crd::MANAGER.to_string());
    metadata.insert(META_COMPONENT.to_string(), d.owner.to_string());
    stream::Config {
        name: stream_name(d.bucket),
        subjects: vec![format!("$KV.{}.>", d.bucket)],
        max_messages_per_subject: s.history,
        max_age,
        max_bytes: s.max_bytes.unwrap_or(-1),
        max_message_size: s.max_value_size.unwrap_or(-1),
        storage: storage_type(s.storage),
        num_replicas: s.replicas,
        compression: s.compression.then_some(stream::Compression::S2),
        description: s.description.clone(),
        placement: placement(s),
        // KV semantics: a full bucket refuses new writes instead of dropping old values; values
        // are rolled up per key; deletes go through markers; reads can be served directly.
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window: duplicate_window(max_age),
        metadata,
        // Per-key TTL: markers need message TTLs on (nats-server turns them on itself unless it
        // is pedantic); both are sent so the stream says what it is.
        allow_message_ttl: s.limit_marker_ttl.is_some(),
        subject_delete_marker_ttl: s.limit_marker_ttl,
        republish: republish(d.bucket, s),
        ..Default::default()
    }
}

fn placement(s: &BucketSettings) -> Option<stream::Placement> {
    if s.placement_cluster.is_none() && s.placement_tags.is_empty() {
        return None;
    }
    Some(stream::Placement {
        cluster: s.placement_cluster.clone(),
        tags: s.placement_tags.clone(),
    })
}

/// The live config with the desired settings applied, keeping everything else the server has.
pub(super) fn updated_stream(d: &Desired<'_>, live: &stream::Config) -> stream::Config {
    let want = desired_stream(d);
    let mut next = live.clone();
    next.max_messages_per_subject = want.max_messages_per_subject;
    next.max_age = want.max_age;
    next.max_bytes = want.max_bytes;
    next.max_message_size = want.max_message_size;
    next.num_replicas = want.num_replicas;
    next.compression = want.compression;
    next.description = want.description;
    // Per-key TTL is never turned off (nats-server refuses; plan blocks it before).
    next.allow_message_ttl = live.allow_message_ttl || want.allow_message_ttl;
    next.subject_delete_marker_ttl = want.subject_delete_marker_ttl;
    next.republish = want.republish;
    // The user's items are replaced; the server's and the operator's keys are kept.
    next.metadata.retain(|k, _| is_reserved_metadata_key(k));
    if next.max_age > Duration::ZERO && next.duplicate_window > next.max_age {
        next.duplicate_window = next.max_age;
    }
    next.metadata.extend(want.metadata);
    next
}
