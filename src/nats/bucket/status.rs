//! What a KeyValueBucket's status shows of a bucket: its settings, live and desired, and its
//! identity on the server.

use async_nats::jetstream::stream;

use super::desired::all_keys;
use super::diff::user_metadata;
use crate::crd::{BucketConfig, BucketStatus, RepublishConfig};
use crate::nats::stream::identity;
use crate::nats::stream::limits::{storage_name, storage_type};
use crate::settings::{BucketSettings, MAX_METADATA_ITEMS, MAX_METADATA_VALUE};

/// The settings of a live stream, as shown in status.
pub fn live_config(live: &stream::Config) -> BucketConfig {
    BucketConfig {
        history: live.max_messages_per_subject,
        ttl: (!live.max_age.is_zero()).then(|| crate::duration::format(live.max_age)),
        max_bytes: (live.max_bytes > 0).then_some(live.max_bytes),
        max_value_size: (live.max_message_size > 0).then_some(i64::from(live.max_message_size)),
        storage: storage_name(live.storage).into(),
        replicas: live.num_replicas.max(1) as i64,
        compression: matches!(live.compression, Some(stream::Compression::S2)),
        description: live
            .description
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(bounded),
        limit_marker_ttl: live
            .subject_delete_marker_ttl
            .filter(|d| !d.is_zero())
            .map(crate::duration::format),
        // What a server sent is bounded: a few items, each value cut.
        metadata: user_metadata(live)
            .take(MAX_METADATA_ITEMS)
            .map(|(k, v)| (bounded(k), bounded(v)))
            .collect(),
        republish: live.republish.as_ref().map(|r| {
            let bucket = live.name.strip_prefix("KV_").unwrap_or(&live.name);
            RepublishConfig {
                source: Some(bounded(&r.source))
                    .filter(|s| !s.is_empty() && s != ">" && *s != all_keys(bucket)),
                destination: bounded(&r.destination),
                headers_only: r.headers_only,
            }
        }),
    }
}

/// A text from the server for status: no control characters, at most [`MAX_METADATA_VALUE`]
/// characters.
fn bounded(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_METADATA_VALUE)
        .collect()
}

/// The settings a Component asks for, as shown in the KeyValueBucket spec.
pub fn desired_config(s: &BucketSettings) -> BucketConfig {
    BucketConfig {
        history: s.history,
        ttl: s.ttl.map(crate::duration::format),
        max_bytes: s.max_bytes.filter(|v| *v >= 0),
        max_value_size: s.max_value_size.filter(|v| *v >= 0).map(i64::from),
        storage: storage_name(storage_type(s.storage)).into(),
        replicas: s.replicas as i64,
        compression: s.compression,
        description: s.description.clone(),
        limit_marker_ttl: s.limit_marker_ttl.map(crate::duration::format),
        metadata: s.metadata.clone(),
        republish: s
            .republish_destination
            .as_ref()
            .map(|destination| RepublishConfig {
                source: s.republish_source.clone(),
                destination: destination.clone(),
                headers_only: s.republish_headers_only,
            }),
    }
}

/// The status facts of a live bucket.
pub fn status_of(
    info: &stream::Info,
    managed: bool,
    server: Option<&async_nats::ServerInfo>,
) -> BucketStatus {
    BucketStatus {
        stream: info.config.name.clone(),
        managed,
        server_version: server.map(|s| crate::nats::remote_text(&s.version)),
        identity: Some(identity(info, server.and_then(|s| s.domain.as_deref()))),
        config: live_config(&info.config),
        bytes: info.state.bytes,
        values: info.state.messages,
        cluster: crate::nats::cluster::stream_cluster(info),
    }
}
