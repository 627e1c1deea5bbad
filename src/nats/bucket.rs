//! Create or verify a KV bucket: the stream `KV_<bucket>` with subjects `$KV.<bucket>.>`.
//!
//! [`plan`] decides (pure: the live stream, the desired settings, the policy) and returns a value
//! tests can assert on; [`Bucket`] does the few NATS requests a plan needs.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::NatsError;
use crate::crd::{BucketConfig, BucketStatus};
use crate::failure::{Failure, Retry};
use crate::settings::{BucketSettings, OnExisting, Setting, Storage};

/// Stream metadata key that marks a stream as created by this operator.
pub const META_MANAGED_BY: &str = "jetstreamkv.io/managed-by";
/// Stream metadata key naming the Component (`namespace/name`) the operator created it for.
pub const META_COMPONENT: &str = "jetstreamkv.io/component";

/// The stream that holds a KV bucket.
pub fn stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// What a Component asks for.
#[derive(Clone, Copy, Debug)]
pub struct Desired<'a> {
    /// The bucket name (already validated).
    pub bucket: &'a str,
    /// The Component, as `namespace/name`.
    pub owner: &'a str,
    /// The settings from its annotations.
    pub settings: &'a BucketSettings,
}

/// One setting that differs between the live bucket and the Component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: &'static str,
    pub live: String,
    pub desired: String,
    pub kind: ChangeKind,
}

/// How a change can be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Applied in place, nothing lost.
    Safe,
    /// Applying it would discard stored data (needs `allow-data-loss`).
    DataLoss,
    /// NATS cannot change it on an existing stream.
    Immutable,
    /// The server cannot do it (replicas on a server that is not clustered).
    Unsupported,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.field, self.live, self.desired)
    }
}

/// The decision for one bucket.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// The bucket does not exist: create it.
    Create(Box<stream::Config>),
    /// A bucket the operator managed was deleted behind its back: create it again.
    Recreate(Box<stream::Config>),
    /// A bucket the operator only verified has disappeared: report it, create nothing.
    Missing,
    /// The stream exists but is not a KV bucket Dapr can bind to.
    NotKeyValue(String),
    /// Everything matches.
    InSync { managed: bool },
    /// A managed bucket whose settings differ: update it in place.
    Update {
        config: Box<stream::Config>,
        changes: Vec<Change>,
        adopt: bool,
    },
    /// Differences that will not be applied: data loss not allowed, immutable, unsupported, or a
    /// bucket that is only verified.
    Blocked {
        managed: bool,
        reason: BlockReason,
        changes: Vec<Change>,
    },
}

/// Why a plan cannot bring the bucket to the desired settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// The bucket is not managed by the operator: it is only verified.
    ConfigMismatch,
    DataLossRefused,
    ImmutableFieldChanged,
    UnsupportedByServer,
    /// The operator created the bucket for another Component: ownership is law, so this one
    /// only verifies it, whatever its annotations ask (adopt, allow-data-loss, delete).
    OwnedElsewhere,
}

impl Failure for BlockReason {
    /// The condition reason.
    fn reason(&self) -> &'static str {
        match self {
            Self::ConfigMismatch => "ConfigMismatch",
            Self::DataLossRefused => "DataLossRefused",
            Self::ImmutableFieldChanged => "ImmutableFieldChanged",
            Self::UnsupportedByServer => "UnsupportedByServer",
            Self::OwnedElsewhere => "BucketOwnedElsewhere",
        }
    }

    /// Blocked on a bucket someone must change (or an annotation that allows it): looked at
    /// again at the drift check.
    fn retry(&self) -> Retry {
        Retry::Resync
    }
}

/// The stream configuration a new bucket gets, following the NATS KV conventions.
pub fn desired_stream(d: &Desired<'_>) -> stream::Config {
    let s = d.settings;
    let max_age = s.ttl.unwrap_or(Duration::ZERO);
    let mut metadata = std::collections::HashMap::new();
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
        ..Default::default()
    }
}

fn storage_type(storage: Storage) -> stream::StorageType {
    match storage {
        Storage::File => stream::StorageType::File,
        Storage::Memory => stream::StorageType::Memory,
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

/// NATS requires the duplicate window to be no longer than the max age.
fn duplicate_window(max_age: Duration) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(120);
    if max_age > Duration::ZERO && max_age < DEFAULT {
        max_age
    } else {
        DEFAULT
    }
}

/// Whether the operator created this stream for this Component.
pub fn is_managed_by(config: &stream::Config, owner: &str) -> bool {
    owner_of(config) == Some(owner)
}

/// The Component (`namespace/name`) the operator created this stream for, if any.
pub fn owner_of(config: &stream::Config) -> Option<&str> {
    if !config.metadata.contains_key(META_MANAGED_BY) {
        return None;
    }
    config
        .metadata
        .get(META_COMPONENT)
        .map(String::as_str)
        .filter(|o| !o.is_empty())
}

/// Decides what to do. `previously_managed` is what the last status said (None when there was
/// none); `clustered` whether the server runs in a cluster (replicas > 1 possible).
pub fn plan(
    d: &Desired<'_>,
    live: Option<&stream::Config>,
    previously_managed: Option<bool>,
    clustered: bool,
) -> Plan {
    let Some(live) = live else {
        return match previously_managed {
            Some(true) => Plan::Recreate(Box::new(desired_stream(d))),
            Some(false) => Plan::Missing,
            None => Plan::Create(Box::new(desired_stream(d))),
        };
    };
    if let Some(problem) = kv_problem(d.bucket, live) {
        return Plan::NotKeyValue(problem);
    }
    let managed = is_managed_by(live, d.owner);
    let mut changes = diff(d.settings, live, clustered);
    if !managed && owner_of(live).is_some() {
        // Ownership is law: another Component's bucket is never adopted, updated, purged or
        // deleted on this one's behalf. Asking to adopt it is refused; otherwise it is verified.
        changes.retain(|c| d.settings.explicit.contains(&setting_of(c.field)));
        return if changes.is_empty() && d.settings.on_existing != OnExisting::Adopt {
            Plan::InSync { managed: false }
        } else {
            Plan::Blocked {
                managed: false,
                reason: BlockReason::OwnedElsewhere,
                changes,
            }
        };
    }
    let adopt = !managed && d.settings.on_existing == OnExisting::Adopt;
    if !managed && !adopt {
        // Verify only: compare what the Component asks for explicitly, never touch the bucket.
        changes.retain(|c| d.settings.explicit.contains(&setting_of(c.field)));
        return if changes.is_empty() {
            Plan::InSync { managed: false }
        } else {
            Plan::Blocked {
                managed: false,
                reason: BlockReason::ConfigMismatch,
                changes,
            }
        };
    }
    if !adopt && changes.is_empty() {
        return Plan::InSync { managed: true };
    }
    let blocked = |kind: ChangeKind| changes.iter().any(|c| c.kind == kind);
    let reason = if blocked(ChangeKind::Immutable) {
        Some(BlockReason::ImmutableFieldChanged)
    } else if blocked(ChangeKind::Unsupported) {
        Some(BlockReason::UnsupportedByServer)
    } else if blocked(ChangeKind::DataLoss) && !d.settings.allow_data_loss {
        Some(BlockReason::DataLossRefused)
    } else {
        None
    };
    if let Some(reason) = reason {
        let kind = match reason {
            BlockReason::ImmutableFieldChanged => ChangeKind::Immutable,
            BlockReason::UnsupportedByServer => ChangeKind::Unsupported,
            _ => ChangeKind::DataLoss,
        };
        changes.retain(|c| c.kind == kind);
        return Plan::Blocked {
            managed: managed || adopt,
            reason,
            changes,
        };
    }
    Plan::Update {
        config: Box::new(updated_stream(d, live)),
        changes,
        adopt,
    }
}

fn setting_of(field: &str) -> Setting {
    match field {
        "history" => Setting::History,
        "ttl" => Setting::Ttl,
        "maxBytes" => Setting::MaxBytes,
        "maxValueSize" => Setting::MaxValueSize,
        "storage" => Setting::Storage,
        "replicas" => Setting::Replicas,
        "compression" => Setting::Compression,
        _ => Setting::Description,
    }
}

/// Why a stream is not a KV bucket Dapr can bind to, if it is not.
fn kv_problem(bucket: &str, live: &stream::Config) -> Option<String> {
    let subject = format!("$KV.{bucket}.>");
    if !live.subjects.contains(&subject) {
        return Some(format!(
            "stream {} exists but does not hold the subjects {subject}: it is not a KV bucket; use another bucket name or recreate it with `nats kv add {bucket}`",
            live.name
        ));
    }
    if live.max_messages_per_subject < 1 {
        return Some(format!(
            "stream {} keeps no value per key (max_msgs_per_subject {}), so Dapr cannot bind to it; set its history to 1 or more",
            live.name, live.max_messages_per_subject
        ));
    }
    None
}

/// The live config with the desired settings applied, keeping everything else the server has.
fn updated_stream(d: &Desired<'_>, live: &stream::Config) -> stream::Config {
    let want = desired_stream(d);
    let mut next = live.clone();
    next.max_messages_per_subject = want.max_messages_per_subject;
    next.max_age = want.max_age;
    next.max_bytes = want.max_bytes;
    next.max_message_size = want.max_message_size;
    next.num_replicas = want.num_replicas;
    next.compression = want.compression;
    next.description = want.description;
    if next.max_age > Duration::ZERO && next.duplicate_window > next.max_age {
        next.duplicate_window = next.max_age;
    }
    next.metadata.extend(want.metadata);
    next
}

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
pub fn diff(s: &BucketSettings, live: &stream::Config, clustered: bool) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |field, live: String, desired: String, kind| {
        out.push(Change {
            field,
            live,
            desired,
            kind,
        })
    };
    if live.max_messages_per_subject != s.history {
        let kind = if s.history < live.max_messages_per_subject {
            ChangeKind::DataLoss
        } else {
            ChangeKind::Safe
        };
        push(
            "history",
            live.max_messages_per_subject.to_string(),
            s.history.to_string(),
            kind,
        );
    }
    let want_ttl = s.ttl.unwrap_or(Duration::ZERO);
    if live.max_age != want_ttl {
        // Shorter, or a limit where there was none, expires values that are kept today.
        let loses = !want_ttl.is_zero() && (live.max_age.is_zero() || want_ttl < live.max_age);
        push("ttl", ttl(live.max_age), ttl(want_ttl), kind_of(loses));
    }
    let shrinks = |live: i64, want: i64| want >= 0 && (live < 0 || want < live);
    let want_bytes = s.max_bytes.unwrap_or(-1);
    if normal(live.max_bytes) != want_bytes {
        push(
            "maxBytes",
            limit(live.max_bytes),
            limit(want_bytes),
            kind_of(shrinks(normal(live.max_bytes), want_bytes)),
        );
    }
    let want_value = i64::from(s.max_value_size.unwrap_or(-1));
    let live_value = normal(i64::from(live.max_message_size));
    if live_value != want_value {
        push(
            "maxValueSize",
            limit(live_value),
            limit(want_value),
            kind_of(shrinks(live_value, want_value)),
        );
    }
    let want_storage = storage_type(s.storage);
    if live.storage != want_storage {
        push(
            "storage",
            storage_name(live.storage).into(),
            storage_name(want_storage).into(),
            ChangeKind::Immutable,
        );
    }
    if live.num_replicas.max(1) != s.replicas {
        let kind = if !clustered && s.replicas > 1 {
            ChangeKind::Unsupported
        } else {
            ChangeKind::Safe
        };
        push(
            "replicas",
            live.num_replicas.max(1).to_string(),
            s.replicas.to_string(),
            kind,
        );
    }
    let live_compressed = matches!(live.compression, Some(stream::Compression::S2));
    if live_compressed != s.compression {
        push(
            "compression",
            live_compressed.to_string(),
            s.compression.to_string(),
            ChangeKind::Safe,
        );
    }
    let live_description = live.description.clone().unwrap_or_default();
    let want_description = s.description.clone().unwrap_or_default();
    if live_description != want_description {
        push(
            "description",
            format!("{live_description:?}"),
            format!("{want_description:?}"),
            ChangeKind::Safe,
        );
    }
    out
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

fn storage_name(s: stream::StorageType) -> &'static str {
    match s {
        stream::StorageType::File => "file",
        stream::StorageType::Memory => "memory",
    }
}

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
        description: live.description.clone().filter(|d| !d.is_empty()),
    }
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
        server_version: server.map(|s| super::remote_text(&s.version)),
        identity: Some(identity(info, server.and_then(|s| s.domain.as_deref()))),
        config: live_config(&info.config),
        bytes: info.state.bytes,
        values: info.state.messages,
        cluster: super::cluster::stream_cluster(info),
    }
}

/// The bucket's identity as the server reports it (see [`BucketStatus::identity`]): what decides
/// whether two Components use the same bucket, never the text of their URLs. The creation time
/// (nanoseconds) tells apart streams of one name in different accounts or on different servers.
pub fn identity(info: &stream::Info, domain: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        domain.unwrap_or_default(),
        info.cluster
            .as_ref()
            .and_then(|c| c.name.as_deref())
            .unwrap_or_default(),
        &info.config.name,
        &format!("{:?}", info.created),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The NATS side of one bucket: the requests a plan needs.
pub struct Bucket<'a> {
    js: &'a jetstream::Context,
    name: String,
}

impl<'a> Bucket<'a> {
    pub fn new(js: &'a jetstream::Context, bucket: &str) -> Self {
        Self {
            js,
            name: stream_name(bucket),
        }
    }

    /// The live stream, or None when it does not exist. One read request.
    pub async fn fetch(&self) -> Result<Option<stream::Info>, NatsError> {
        match self.js.get_stream(&self.name).await {
            Ok(stream) => Ok(Some(stream.cached_info().clone())),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                jetstream::context::GetStreamErrorKind::JetStream(js) => {
                    Err(NatsError::from_jetstream("stream info", &js))
                }
                _ => Err(request_error("stream info", &e)),
            },
        }
    }

    /// Creates the stream. When someone else created it meanwhile (error 10058), returns the
    /// existing one so the caller plans again against it.
    pub async fn create(&self, config: stream::Config) -> Result<stream::Info, NatsError> {
        let asked = config.clone();
        match self.js.create_stream(config).await {
            // The create response carries the stream info: asking again would be a second request.
            Ok(stream) => Ok(stream.cached_info().clone()),
            Err(e) => match e.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST =>
                {
                    self.fetch().await?.ok_or_else(|| NatsError::Request {
                        what: "create stream".into(),
                        detail: "the stream was reported to exist, then not found".into(),
                    })
                }
                jetstream::context::CreateStreamErrorKind::JetStream(js) => {
                    Err(super::cluster::with_placement_asked(
                        NatsError::from_jetstream("create stream", &js),
                        &asked,
                    ))
                }
                jetstream::context::CreateStreamErrorKind::JetStreamUnavailable => {
                    Err(NatsError::JetStreamDisabled {
                        servers: "the server".into(),
                    })
                }
                _ => Err(request_error("create stream", &e)),
            },
        }
    }

    /// Updates the stream in place.
    pub async fn update(&self, config: stream::Config) -> Result<stream::Info, NatsError> {
        let asked = config.clone();
        self.js
            .update_stream(config)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::UpdateStreamErrorKind::JetStream(js) => {
                    super::cluster::with_placement_asked(
                        NatsError::from_jetstream("update stream", &js),
                        &asked,
                    )
                }
                _ => request_error("update stream", &e),
            })
    }

    /// Deletes the stream and every value in it.
    pub async fn delete(&self) -> Result<(), NatsError> {
        self.js
            .delete_stream(&self.name)
            .await
            .map(|_| ())
            .map_err(|e| request_error("delete stream", &e))
    }
}

fn request_error(what: &str, e: &dyn std::fmt::Display) -> NatsError {
    let detail = super::remote_text(&e.to_string());
    if detail.contains("timed out") {
        NatsError::Timeout { what: what.into() }
    } else if detail.contains("no responders") {
        NatsError::JetStreamDisabled {
            servers: "the server".into(),
        }
    } else {
        NatsError::Request {
            what: what.into(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BucketSettings {
        BucketSettings::default()
    }

    fn desired<'a>(s: &'a BucketSettings) -> Desired<'a> {
        Desired {
            bucket: "orders",
            owner: "shop/statestore",
            settings: s,
        }
    }

    #[test]
    fn a_new_bucket_follows_the_kv_conventions_and_is_marked_as_ours() {
        let s = settings();
        let c = desired_stream(&desired(&s));
        assert_eq!(c.name, "KV_orders");
        assert_eq!(c.subjects, ["$KV.orders.>"]);
        assert_eq!(c.max_messages_per_subject, 1);
        assert_eq!(c.storage, stream::StorageType::File);
        assert_eq!(c.num_replicas, 1);
        assert_eq!(c.max_bytes, -1);
        assert!(c.allow_rollup && c.deny_delete && c.allow_direct);
        assert_eq!(c.discard, stream::DiscardPolicy::New);
        assert!(is_managed_by(&c, "shop/statestore"));
        assert!(!is_managed_by(&c, "shop/other"));
    }

    #[test]
    fn missing_buckets_are_created_recreated_or_reported() {
        let s = settings();
        let d = desired(&s);
        assert!(matches!(plan(&d, None, None, false), Plan::Create(_)));
        assert!(matches!(
            plan(&d, None, Some(true), false),
            Plan::Recreate(_)
        ));
        assert_eq!(plan(&d, None, Some(false), false), Plan::Missing);
    }

    #[test]
    fn a_managed_bucket_in_sync_needs_nothing() {
        let s = settings();
        let d = desired(&s);
        let live = desired_stream(&d);
        assert_eq!(
            plan(&d, Some(&live), None, false),
            Plan::InSync { managed: true }
        );
    }

    #[test]
    fn a_foreign_bucket_is_verified_on_explicit_settings_only() {
        let s = settings();
        let d = desired(&s);
        let mut live = desired_stream(&d);
        live.metadata.clear();
        live.max_messages_per_subject = 5; // differs from the default, but not asked for
        assert_eq!(
            plan(&d, Some(&live), None, false),
            Plan::InSync { managed: false }
        );

        let mut explicit = settings();
        explicit.history = 3;
        explicit.explicit.insert(Setting::History);
        let d = desired(&explicit);
        match plan(&d, Some(&live), None, false) {
            Plan::Blocked {
                managed: false,
                reason: BlockReason::ConfigMismatch,
                changes,
            } => {
                assert_eq!(changes.len(), 1);
                assert_eq!(changes[0].to_string(), "history 5 -> 3");
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn data_loss_is_refused_unless_allowed() {
        let mut s = settings();
        let live = {
            let mut more = settings();
            more.history = 10;
            desired_stream(&desired(&more))
        };
        s.history = 2;
        match plan(&desired(&s), Some(&live), None, false) {
            Plan::Blocked {
                reason: BlockReason::DataLossRefused,
                changes,
                ..
            } => assert_eq!(changes[0].field, "history"),
            other => panic!("unexpected plan {other:?}"),
        }
        s.allow_data_loss = true;
        assert!(matches!(
            plan(&desired(&s), Some(&live), None, false),
            Plan::Update { .. }
        ));
    }

    #[test]
    fn growing_limits_is_safe_and_shrinking_them_loses_data() {
        let s = settings();
        let live = desired_stream(&desired(&s));
        let mut ttl = settings();
        ttl.ttl = Some(Duration::from_secs(3600));
        let changes = diff(&ttl, &live, false);
        assert_eq!(
            changes[0].kind,
            ChangeKind::DataLoss,
            "a TTL where there was none"
        );
        let mut bigger = settings();
        bigger.history = 5;
        bigger.compression = true;
        assert!(
            diff(&bigger, &live, false)
                .iter()
                .all(|c| c.kind == ChangeKind::Safe)
        );
    }

    #[test]
    fn storage_is_immutable_and_replicas_need_a_cluster() {
        let s = settings();
        let live = desired_stream(&desired(&s));
        let mut memory = settings();
        memory.storage = Storage::Memory;
        assert!(matches!(
            plan(&desired(&memory), Some(&live), None, false),
            Plan::Blocked {
                reason: BlockReason::ImmutableFieldChanged,
                ..
            }
        ));
        let mut three = settings();
        three.replicas = 3;
        assert!(matches!(
            plan(&desired(&three), Some(&live), None, false),
            Plan::Blocked {
                reason: BlockReason::UnsupportedByServer,
                ..
            }
        ));
        assert!(matches!(
            plan(&desired(&three), Some(&live), None, true),
            Plan::Update { .. }
        ));
    }

    #[test]
    fn a_stream_that_is_not_a_kv_bucket_is_reported() {
        let s = settings();
        let mut live = desired_stream(&desired(&s));
        live.subjects = vec!["orders.>".into()];
        assert!(matches!(
            plan(&desired(&s), Some(&live), None, false),
            Plan::NotKeyValue(_)
        ));
    }

    #[test]
    fn another_components_bucket_is_never_adopted_updated_or_purged() {
        let victim = settings();
        let live = desired_stream(&Desired {
            bucket: "orders",
            owner: "team-a/statestore",
            settings: &victim,
        });
        // Whatever the attacker asks: adopt, data loss allowed, a short TTL.
        let mut attack = settings();
        attack.on_existing = OnExisting::Adopt;
        attack.allow_data_loss = true;
        attack.ttl = Some(Duration::from_millis(100));
        attack.explicit.insert(Setting::Ttl);
        let d = Desired {
            bucket: "orders",
            owner: "team-b/statestore",
            settings: &attack,
        };
        for previously_managed in [None, Some(true), Some(false)] {
            match plan(&d, Some(&live), previously_managed, false) {
                Plan::Blocked {
                    managed: false,
                    reason: BlockReason::OwnedElsewhere,
                    changes,
                } => assert_eq!(changes.len(), 1, "{changes:?}"),
                other => panic!("unexpected plan {other:?}"),
            }
        }
        // Adopt with identical settings still does not move ownership.
        let mut same = settings();
        same.on_existing = OnExisting::Adopt;
        let d = Desired {
            bucket: "orders",
            owner: "team-b/statestore",
            settings: &same,
        };
        assert!(matches!(
            plan(&d, Some(&live), None, false),
            Plan::Blocked {
                reason: BlockReason::OwnedElsewhere,
                ..
            }
        ));
        // Without adopt and with matching settings it is verified, like any foreign bucket.
        let plain = settings();
        let d = Desired {
            bucket: "orders",
            owner: "team-b/statestore",
            settings: &plain,
        };
        assert_eq!(
            plan(&d, Some(&live), None, false),
            Plan::InSync { managed: false }
        );
        assert_eq!(owner_of(&live), Some("team-a/statestore"));
        assert_eq!(BlockReason::OwnedElsewhere.reason(), "BucketOwnedElsewhere");
    }

    #[test]
    fn updates_keep_server_fields_and_add_our_marks_when_adopting() {
        let mut s = settings();
        s.on_existing = OnExisting::Adopt;
        s.history = 4;
        let mut live = desired_stream(&desired(&settings()));
        live.metadata.clear();
        live.metadata.insert("_nats.ver".into(), "2.15.1".into());
        match plan(&desired(&s), Some(&live), None, false) {
            Plan::Update {
                config,
                adopt: true,
                ..
            } => {
                assert_eq!(config.max_messages_per_subject, 4);
                assert!(is_managed_by(&config, "shop/statestore"));
                assert_eq!(config.metadata["_nats.ver"], "2.15.1");
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }
}
