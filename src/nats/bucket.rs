//! Create or verify a KV bucket: the stream `KV_<bucket>` with subjects `$KV.<bucket>.>`.
//!
//! [`plan`] decides (pure: the live stream, the desired settings, the policy) and returns a value
//! tests can assert on; [`Bucket`] does the few NATS requests a plan needs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};

use super::NatsError;
use crate::crd::{BucketConfig, BucketStatus, RepublishConfig};
use crate::failure::{Failure, Retry};
use crate::settings::{
    BucketSettings, MAX_METADATA_ITEMS, MAX_METADATA_VALUE, OnExisting, Setting, SettingsError,
    Storage, is_reserved_metadata_key,
};

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

/// What the plan needs to know of the server that answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    /// Whether it runs in a JetStream cluster (replicas > 1 possible).
    pub clustered: bool,
    /// Its version (major, minor, patch); `None` when it cannot be read (then the server decides).
    pub version: Option<Version>,
}

/// A nats-server version: major, minor, patch.
pub type Version = (u64, u64, u64);

/// The first version with per-key TTL and delete markers (`allow_msg_ttl`,
/// `subject_delete_marker_ttl`).
pub const PER_KEY_TTL: Version = (2, 11, 0);
/// The first version that turns per-key TTL on for an existing stream (2.11.0 and 2.11.1 refuse:
/// "message TTL status can not be changed after stream creation").
pub const PER_KEY_TTL_ON_EXISTING: Version = (2, 11, 2);

impl ServerFacts {
    /// Whether the server is known to be older than `version`.
    fn older_than(&self, version: Version) -> bool {
        self.version.is_some_and(|v| v < version)
    }
}

/// Reads `2.15.1`, `v2.11.0-RC.3` or `2.12.0-dev` as (major, minor, patch).
pub fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim().trim_start_matches('v');
    let core = text.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

fn version_text((major, minor, patch): Version) -> String {
    format!("{major}.{minor}.{patch}")
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
    /// The bucket does not exist and the server cannot create it as asked (why, and what to do).
    CannotCreate(String),
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

/// All the keys of a bucket, as a subject.
fn all_keys(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// The republish a Component asks for, its source filled in (every key of the bucket).
fn republish(bucket: &str, s: &BucketSettings) -> Option<stream::Republish> {
    Some(stream::Republish {
        source: s
            .republish_source
            .clone()
            .unwrap_or_else(|| all_keys(bucket)),
        destination: s.republish_destination.clone()?,
        headers_only: s.republish_headers_only,
    })
}

/// A live republish with its source normalised: empty and `>` mean every subject of the
/// stream, which for a KV bucket is every key.
fn live_republish(bucket: &str, live: &stream::Config) -> Option<stream::Republish> {
    live.republish.as_ref().map(|r| stream::Republish {
        source: if r.source.is_empty() || r.source == ">" {
            all_keys(bucket)
        } else {
            r.source.clone()
        },
        destination: r.destination.clone(),
        headers_only: r.headers_only,
    })
}

/// Checks what the republish annotations ask against the bucket (known once the store's config
/// is): the source must be within the bucket's keys, the destination must not lead back into the
/// bucket (nats-server refuses the cycle), and the destination's `>` and `$N` / `{{wildcard(N)}}`
/// references must match the source's wildcards. A source naming every key is stored as `None`.
pub fn check_republish(bucket: &str, s: &mut BucketSettings) -> Result<(), SettingsError> {
    let Some(destination) = s.republish_destination.clone() else {
        return Ok(());
    };
    let keys = all_keys(bucket);
    let source = s.republish_source.clone().unwrap_or_else(|| keys.clone());
    let invalid =
        |setting: Setting, value: &str, expected: String| SettingsError::InvalidAnnotation {
            annotation: setting.annotation().to_owned(),
            value: crate::settings::shorten(value),
            expected,
        };
    if !crate::pubsub::subjects::covers(&keys, &source) {
        return Err(invalid(
            Setting::RepublishSource,
            &source,
            format!("a subject within the bucket's keys {keys}, e.g. {keys} for every key"),
        ));
    }
    if crate::pubsub::subjects::collide(&destination, &keys) {
        return Err(invalid(
            Setting::RepublishDestination,
            &destination,
            format!(
                "a subject outside the bucket's keys {keys}: republishing into the bucket would \
                 store every value again, in a loop (nats-server refuses it)"
            ),
        ));
    }
    let tokens: Vec<&str> = source.split('.').collect();
    let wildcards = tokens.iter().filter(|t| **t == "*").count();
    let source_rest = tokens.last() == Some(&">");
    let destination_rest = destination.ends_with(".>") || destination == ">";
    if destination.split('.').any(|t| t == "*") || source_rest != destination_rest {
        return Err(invalid(
            Setting::RepublishDestination,
            &destination,
            "a subject with no *, ending in > exactly when the source does (the rest of the \
             subject is carried over); the source's * are referenced as $1, $2... in order"
                .into(),
        ));
    }
    if let Some(n) = destination
        .split('.')
        .filter_map(wildcard_reference)
        .find(|n| *n == 0 || *n > wildcards)
    {
        return Err(invalid(
            Setting::RepublishDestination,
            &destination,
            format!(
                "references to the source's * from $1 to ${wildcards} only (it refers to ${n}; \
                 the source {source} has {wildcards})"
            ),
        ));
    }
    if source == keys {
        s.republish_source = None;
    }
    Ok(())
}

/// The source wildcard a destination token refers to: `$N` or `{{wildcard(N)}}`.
fn wildcard_reference(token: &str) -> Option<usize> {
    if let Some(n) = token.strip_prefix('$') {
        return n.parse().ok();
    }
    let inner = token.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let (name, args) = inner.split_once('(')?;
    if !name.trim().eq_ignore_ascii_case("wildcard") {
        return None;
    }
    args.strip_suffix(')')?.trim().parse().ok()
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
/// none); `server` what the server can do (replicas > 1 in a cluster, per-key TTL by version).
pub fn plan(
    d: &Desired<'_>,
    live: Option<&stream::Config>,
    previously_managed: Option<bool>,
    server: &ServerFacts,
) -> Plan {
    let Some(live) = live else {
        if previously_managed == Some(false) {
            return Plan::Missing;
        }
        if let Some(why) = cannot_create(d.settings, server) {
            return Plan::CannotCreate(why);
        }
        let config = Box::new(desired_stream(d));
        return match previously_managed {
            Some(true) => Plan::Recreate(config),
            _ => Plan::Create(config),
        };
    };
    if let Some(problem) = kv_problem(d.bucket, live) {
        return Plan::NotKeyValue(problem);
    }
    let managed = is_managed_by(live, d.owner);
    let adopt = !managed && d.settings.on_existing == OnExisting::Adopt && owner_of(live).is_none();
    // A bucket the operator keeps holds exactly the user's metadata; one it verifies holds at
    // least the items asked for.
    let mut changes = diff(d.bucket, d.settings, live, server, managed || adopt);
    if !managed && owner_of(live).is_some() {
        // Ownership is law: another Component's bucket is never adopted, updated, purged or
        // deleted on this one's behalf. Asking to adopt it is refused; otherwise it is verified.
        changes.retain(|c| is_explicit(d.settings, c.field));
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
    if !managed && !adopt {
        // Verify only: compare what the Component asks for explicitly, never touch the bucket.
        changes.retain(|c| is_explicit(d.settings, c.field));
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

/// Whether the Component sets the field by annotation (what a verified bucket is held to).
fn is_explicit(s: &BucketSettings, field: &str) -> bool {
    let settings: &[Setting] = match field {
        "history" => &[Setting::History],
        "ttl" => &[Setting::Ttl],
        "maxBytes" => &[Setting::MaxBytes],
        "maxValueSize" => &[Setting::MaxValueSize],
        "storage" => &[Setting::Storage],
        "replicas" => &[Setting::Replicas],
        "compression" => &[Setting::Compression],
        "limitMarkerTtl" => &[Setting::LimitMarkerTtl],
        "metadata" => &[Setting::Metadata],
        "republish" => &[
            Setting::RepublishSource,
            Setting::RepublishDestination,
            Setting::RepublishHeadersOnly,
        ],
        _ => &[Setting::Description],
    };
    settings.iter().any(|setting| s.explicit.contains(setting))
}

/// Why the server cannot create the bucket as asked, if it cannot: sent anyway, an older server
/// would ignore the fields it does not know and create a different bucket.
fn cannot_create(s: &BucketSettings, server: &ServerFacts) -> Option<String> {
    (s.limit_marker_ttl.is_some() && server.older_than(PER_KEY_TTL)).then(|| {
        format!(
            "{} needs nats-server {} or later, and the server is {}; upgrade the server or \
             remove the annotation",
            Setting::LimitMarkerTtl.annotation(),
            version_text(PER_KEY_TTL),
            server.version.map(version_text).unwrap_or_default()
        )
    })
}

/// Why the server cannot apply the unsupported ones among `changes`, and what to do.
pub fn why_unsupported(changes: &[Change], server: &ServerFacts) -> String {
    let mut why = Vec::new();
    if changes.iter().any(|c| c.field == "replicas") {
        why.push("the server is not clustered; use replicas 1".to_owned());
    }
    if changes.iter().any(|c| c.field == "limitMarkerTtl") {
        why.push(format!(
            "turning per-key TTL on for an existing bucket needs nats-server {} or later, and \
             the server is {}; upgrade the server, or remove {}",
            version_text(PER_KEY_TTL_ON_EXISTING),
            server.version.map(version_text).unwrap_or_default(),
            Setting::LimitMarkerTtl.annotation()
        ));
    }
    why.join("; ")
}

/// Why a stream is not a KV bucket Dapr can bind to, if it is not.
fn kv_problem(bucket: &str, live: &stream::Config) -> Option<String> {
    let subject = all_keys(bucket);
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
    let clustered = server.clustered;
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
    let live_markers = live.subject_delete_marker_ttl.filter(|d| !d.is_zero());
    if live_markers != s.limit_marker_ttl {
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
        let shown =
            |d: Option<Duration>| d.map_or_else(|| "none".to_owned(), crate::duration::format);
        push(
            "limitMarkerTtl",
            shown(live_markers),
            shown(s.limit_marker_ttl),
            kind,
        );
    }
    if let Some((live_text, desired_text)) = metadata_diff(&s.metadata, live, exact_metadata) {
        push("metadata", live_text, desired_text, ChangeKind::Safe);
    }
    let want_republish = republish(bucket, s);
    let live_republish = live_republish(bucket, live);
    if want_republish != live_republish {
        push(
            "republish",
            republish_text(live_republish.as_ref()),
            republish_text(want_republish.as_ref()),
            ChangeKind::Safe,
        );
    }
    out
}

fn republish_text(r: Option<&stream::Republish>) -> String {
    match r {
        None => "none".into(),
        Some(r) => format!(
            "{} to {}{}",
            super::remote_text(&r.source),
            super::remote_text(&r.destination),
            if r.headers_only {
                " (headers only)"
            } else {
                ""
            }
        ),
    }
}

/// The user's items of a live stream's metadata (not the server's, not the operator's marks).
fn user_metadata(live: &stream::Config) -> impl Iterator<Item = (&String, &String)> {
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
                format!("{:?}: {v}", super::remote_text(k))
            })
            .collect();
        if differing.len() > SHOWN {
            items.push(format!("and {} more", differing.len() - SHOWN));
        }
        format!("{{{}}}", items.join(", "))
    };
    Some((
        text(&|k| live.metadata.get(k).map(|v| super::remote_text(v))),
        text(&|k| want.get(k).map(|v| super::remote_text(v))),
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

    /// A plain stream by its name (a `pubsub.jetstream` Component's): the same requests.
    pub fn stream(js: &'a jetstream::Context, stream: &str) -> Self {
        Self {
            js,
            name: stream.to_owned(),
        }
    }

    /// The name and subjects of every stream of the account (one request per 256 streams).
    pub async fn all_streams(&self) -> Result<Vec<(String, Vec<String>)>, NatsError> {
        use futures::TryStreamExt as _;
        self.js
            .streams()
            .map_ok(|info| (info.config.name, info.config.subjects))
            .try_collect()
            .await
            .map_err(|e| request_error("list streams", &e))
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

    const SINGLE: ServerFacts = ServerFacts {
        clustered: false,
        version: Some((2, 15, 1)),
    };
    const CLUSTERED: ServerFacts = ServerFacts {
        clustered: true,
        version: Some((2, 15, 1)),
    };

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
        assert!(matches!(plan(&d, None, None, &SINGLE), Plan::Create(_)));
        assert!(matches!(
            plan(&d, None, Some(true), &SINGLE),
            Plan::Recreate(_)
        ));
        assert_eq!(plan(&d, None, Some(false), &SINGLE), Plan::Missing);
    }

    #[test]
    fn a_managed_bucket_in_sync_needs_nothing() {
        let s = settings();
        let d = desired(&s);
        let live = desired_stream(&d);
        assert_eq!(
            plan(&d, Some(&live), None, &SINGLE),
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
            plan(&d, Some(&live), None, &SINGLE),
            Plan::InSync { managed: false }
        );

        let mut explicit = settings();
        explicit.history = 3;
        explicit.explicit.insert(Setting::History);
        let d = desired(&explicit);
        match plan(&d, Some(&live), None, &SINGLE) {
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
        match plan(&desired(&s), Some(&live), None, &SINGLE) {
            Plan::Blocked {
                reason: BlockReason::DataLossRefused,
                changes,
                ..
            } => assert_eq!(changes[0].field, "history"),
            other => panic!("unexpected plan {other:?}"),
        }
        s.allow_data_loss = true;
        assert!(matches!(
            plan(&desired(&s), Some(&live), None, &SINGLE),
            Plan::Update { .. }
        ));
    }

    #[test]
    fn growing_limits_is_safe_and_shrinking_them_loses_data() {
        let s = settings();
        let live = desired_stream(&desired(&s));
        let mut ttl = settings();
        ttl.ttl = Some(Duration::from_secs(3600));
        let changes = diff("orders", &ttl, &live, &SINGLE, true);
        assert_eq!(
            changes[0].kind,
            ChangeKind::DataLoss,
            "a TTL where there was none"
        );
        let mut bigger = settings();
        bigger.history = 5;
        bigger.compression = true;
        assert!(
            diff("orders", &bigger, &live, &SINGLE, true)
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
            plan(&desired(&memory), Some(&live), None, &SINGLE),
            Plan::Blocked {
                reason: BlockReason::ImmutableFieldChanged,
                ..
            }
        ));
        let mut three = settings();
        three.replicas = 3;
        assert!(matches!(
            plan(&desired(&three), Some(&live), None, &SINGLE),
            Plan::Blocked {
                reason: BlockReason::UnsupportedByServer,
                ..
            }
        ));
        assert!(matches!(
            plan(&desired(&three), Some(&live), None, &CLUSTERED),
            Plan::Update { .. }
        ));
    }

    #[test]
    fn a_stream_that_is_not_a_kv_bucket_is_reported() {
        let s = settings();
        let mut live = desired_stream(&desired(&s));
        live.subjects = vec!["orders.>".into()];
        assert!(matches!(
            plan(&desired(&s), Some(&live), None, &SINGLE),
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
            match plan(&d, Some(&live), previously_managed, &SINGLE) {
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
            plan(&d, Some(&live), None, &SINGLE),
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
            plan(&d, Some(&live), None, &SINGLE),
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
        match plan(&desired(&s), Some(&live), None, &SINGLE) {
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

    fn with(f: impl FnOnce(&mut BucketSettings)) -> BucketSettings {
        let mut s = settings();
        f(&mut s);
        s
    }

    #[test]
    fn per_key_ttl_republish_and_metadata_go_to_a_new_bucket() {
        let s = with(|s| {
            s.limit_marker_ttl = Some(Duration::from_secs(30));
            s.metadata = BTreeMap::from([("team".into(), "shop".into())]);
            s.republish_destination = Some("changes.orders.>".into());
            s.republish_headers_only = true;
        });
        let c = desired_stream(&desired(&s));
        assert!(c.allow_message_ttl);
        assert_eq!(c.subject_delete_marker_ttl, Some(Duration::from_secs(30)));
        assert_eq!(c.metadata["team"], "shop");
        assert!(is_managed_by(&c, "shop/statestore"), "the marks stay");
        let r = c.republish.clone().expect("republish");
        assert_eq!(
            (r.source.as_str(), r.destination.as_str(), r.headers_only),
            ("$KV.orders.>", "changes.orders.>", true)
        );
        let plain = desired_stream(&desired(&settings()));
        assert!(!plain.allow_message_ttl && plain.subject_delete_marker_ttl.is_none());
        assert!(plain.republish.is_none());
        assert_eq!(
            plan(&desired(&s), Some(&c), None, &SINGLE),
            Plan::InSync { managed: true }
        );
    }

    #[test]
    fn per_key_ttl_turns_on_and_changes_but_never_turns_off() {
        let off = desired_stream(&desired(&settings()));
        let on = with(|s| s.limit_marker_ttl = Some(Duration::from_secs(30)));
        match plan(&desired(&on), Some(&off), None, &SINGLE) {
            Plan::Update {
                config, changes, ..
            } => {
                assert_eq!(changes[0].to_string(), "limitMarkerTtl none -> 30s");
                assert!(config.allow_message_ttl);
                assert_eq!(
                    config.subject_delete_marker_ttl,
                    Some(Duration::from_secs(30))
                );
            }
            other => panic!("unexpected plan {other:?}"),
        }
        let live_on = desired_stream(&desired(&on));
        let longer = with(|s| s.limit_marker_ttl = Some(Duration::from_secs(3600)));
        assert!(matches!(
            plan(&desired(&longer), Some(&live_on), None, &SINGLE),
            Plan::Update { .. }
        ));
        // Off once on: nats-server keeps message TTLs on, so it is refused before sending.
        match plan(&desired(&settings()), Some(&live_on), None, &SINGLE) {
            Plan::Blocked {
                reason: BlockReason::ImmutableFieldChanged,
                changes,
                ..
            } => assert_eq!(changes[0].to_string(), "limitMarkerTtl 30s -> none"),
            other => panic!("unexpected plan {other:?}"),
        }
        // An update of something else keeps message TTLs on.
        let mut ttl_only = off.clone();
        ttl_only.allow_message_ttl = true;
        let more = with(|s| s.history = 3);
        match plan(&desired(&more), Some(&ttl_only), None, &SINGLE) {
            Plan::Update { config, .. } => assert!(config.allow_message_ttl),
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn per_key_ttl_needs_a_server_that_has_it() {
        let on = with(|s| s.limit_marker_ttl = Some(Duration::from_secs(30)));
        let old = |version| ServerFacts {
            clustered: false,
            version: Some(version),
        };
        match plan(&desired(&on), None, None, &old((2, 10, 22))) {
            Plan::CannotCreate(why) => {
                assert!(why.contains("2.11.0") && why.contains("2.10.22"), "{why}")
            }
            other => panic!("unexpected plan {other:?}"),
        }
        assert!(matches!(
            plan(&desired(&on), None, None, &old((2, 11, 0))),
            Plan::Create(_)
        ));
        let unknown = ServerFacts {
            clustered: false,
            version: None,
        };
        assert!(matches!(
            plan(&desired(&on), None, None, &unknown),
            Plan::Create(_)
        ));
        let off = desired_stream(&desired(&settings()));
        match plan(&desired(&on), Some(&off), None, &old((2, 11, 1))) {
            Plan::Blocked {
                reason: BlockReason::UnsupportedByServer,
                changes,
                ..
            } => {
                let why = why_unsupported(&changes, &old((2, 11, 1)));
                assert!(why.contains("2.11.2") && why.contains("2.11.1"), "{why}");
                assert!(!why.contains("replicas"), "{why}");
            }
            other => panic!("unexpected plan {other:?}"),
        }
        assert!(matches!(
            plan(&desired(&on), Some(&off), None, &old((2, 11, 2))),
            Plan::Update { .. }
        ));
        let three = with(|s| s.replicas = 3);
        match plan(&desired(&three), Some(&off), None, &SINGLE) {
            Plan::Blocked { changes, .. } => {
                assert_eq!(
                    why_unsupported(&changes, &SINGLE),
                    "the server is not clustered; use replicas 1"
                )
            }
            other => panic!("unexpected plan {other:?}"),
        }
    }

    #[test]
    fn versions_are_read_as_the_server_writes_them() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.11.0-RC.3"), Some((2, 11, 0)));
        assert_eq!(parse_version("2.12.0-dev"), Some((2, 12, 0)));
        assert_eq!(parse_version("2.10"), Some((2, 10, 0)));
        assert_eq!(parse_version("nightly"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn metadata_is_kept_exactly_on_managed_buckets_and_at_least_on_verified_ones() {
        let asked = with(|s| {
            s.metadata = BTreeMap::from([("team".into(), "shop".into())]);
            s.explicit.insert(Setting::Metadata);
        });
        let mut live = desired_stream(&desired(&asked));
        live.metadata.insert("_nats.ver".into(), "2.15.1".into());
        live.metadata.insert("added-by-hand".into(), "x".into());
        // Managed: the extra item is drift, removed; the server's and our keys stay.
        match plan(&desired(&asked), Some(&live), None, &SINGLE) {
            Plan::Update {
                config, changes, ..
            } => {
                assert_eq!(
                    changes[0].to_string(),
                    r#"metadata {"added-by-hand": "x"} -> {"added-by-hand": (none)}"#
                );
                assert!(!config.metadata.contains_key("added-by-hand"));
                assert_eq!(config.metadata["team"], "shop");
                assert_eq!(config.metadata["_nats.ver"], "2.15.1");
                assert!(is_managed_by(&config, "shop/statestore"));
            }
            other => panic!("unexpected plan {other:?}"),
        }
        // Verified: other items are the owner's business; a differing asked item is a mismatch.
        let mut foreign = live.clone();
        foreign
            .metadata
            .retain(|k, _| !k.starts_with("jetstreamkv.io/"));
        assert_eq!(
            plan(&desired(&asked), Some(&foreign), None, &SINGLE),
            Plan::InSync { managed: false }
        );
        foreign.metadata.insert("team".into(), "billing".into());
        match plan(&desired(&asked), Some(&foreign), None, &SINGLE) {
            Plan::Blocked {
                reason: BlockReason::ConfigMismatch,
                changes,
                ..
            } => assert_eq!(
                changes[0].to_string(),
                r#"metadata {"team": "billing"} -> {"team": "shop"}"#
            ),
            other => panic!("unexpected plan {other:?}"),
        }
        // Not asked for: a verified bucket's metadata is not compared at all.
        let plain = settings();
        assert_eq!(
            plan(&desired(&plain), Some(&foreign), None, &SINGLE),
            Plan::InSync { managed: false }
        );
    }

    #[test]
    fn what_a_server_sends_as_metadata_is_bounded_in_messages_and_status() {
        let mut live = desired_stream(&desired(&settings()));
        for i in 0..1000 {
            live.metadata.insert(format!("k{i:04}"), "v".repeat(10_000));
        }
        let changes = diff("orders", &settings(), &live, &SINGLE, true);
        let shown = changes[0].to_string();
        assert!(
            shown.len() < 2000 && shown.contains("and 995 more"),
            "{}",
            shown.len()
        );
        let status = live_config(&live);
        assert_eq!(status.metadata.len(), MAX_METADATA_ITEMS);
        assert!(
            status
                .metadata
                .values()
                .all(|v| v.len() <= MAX_METADATA_VALUE)
        );
    }

    #[test]
    fn republish_changes_are_applied_and_shown() {
        let live = desired_stream(&desired(&settings()));
        let on = with(|s| s.republish_destination = Some("changes.orders.>".into()));
        match plan(&desired(&on), Some(&live), None, &SINGLE) {
            Plan::Update {
                config, changes, ..
            } => {
                assert_eq!(
                    changes[0].to_string(),
                    "republish none -> $KV.orders.> to changes.orders.>"
                );
                assert!(config.republish.is_some());
            }
            other => panic!("unexpected plan {other:?}"),
        }
        // nats-server fills an empty source with '>': the same as every key.
        let mut live_on = desired_stream(&desired(&on));
        live_on.republish.as_mut().unwrap().source = ">".into();
        assert_eq!(
            plan(&desired(&on), Some(&live_on), None, &SINGLE),
            Plan::InSync { managed: true }
        );
        let shown = live_config(&live_on).republish.unwrap();
        assert_eq!(shown.source, None);
        assert_eq!(Some(shown), desired_config(&on).republish);
        // Removed: applied too.
        assert!(matches!(
            plan(&desired(&settings()), Some(&live_on), None, &SINGLE),
            Plan::Update { .. }
        ));
    }

    #[test]
    fn republish_is_checked_against_the_bucket() {
        let check = |source: Option<&str>, destination: &str| {
            let mut s = with(|s| {
                s.republish_source = source.map(str::to_owned);
                s.republish_destination = Some(destination.to_owned());
            });
            check_republish("orders", &mut s).map(|()| s.republish_source)
        };
        assert_eq!(check(None, "changes.>"), Ok(None));
        assert_eq!(
            check(Some("$KV.orders.>"), "changes.>"),
            Ok(None),
            "normalised"
        );
        assert_eq!(
            check(Some("$KV.orders.*.new"), "changes.$1"),
            Ok(Some("$KV.orders.*.new".into()))
        );
        assert!(check(Some("$KV.orders.*"), "changes.{{wildcard(1)}}").is_ok());
        assert!(check(Some("$KV.orders.eu"), "changes.eu").is_ok());
        for (source, destination, annotation, mentions) in [
            (
                Some("$KV.other.>"),
                "changes.>",
                "republish-source",
                "$KV.orders.>",
            ),
            (
                Some("orders.>"),
                "changes.>",
                "republish-source",
                "within the bucket's keys",
            ),
            (
                None,
                "$KV.orders.copy.>",
                "republish-destination",
                "in a loop",
            ),
            (None, ">", "republish-destination", "in a loop"),
            (None, "changes.*", "republish-destination", "no *"),
            (None, "changes", "republish-destination", "ending in >"),
            (
                Some("$KV.orders.eu"),
                "changes.>",
                "republish-destination",
                "ending in >",
            ),
            (
                Some("$KV.orders.*"),
                "changes.$2",
                "republish-destination",
                "$2",
            ),
            (
                Some("$KV.orders.*"),
                "changes.{{wildcard(0)}}",
                "republish-destination",
                "$0",
            ),
        ] {
            let e = check(source, destination).expect_err(destination);
            assert_eq!(e.reason(), "InvalidAnnotation");
            let msg = e.to_string();
            assert!(msg.contains(annotation) && msg.contains(mentions), "{msg}");
        }
    }
}
