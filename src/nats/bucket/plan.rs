//! The decision for one bucket: create, update, verify or block, from the live stream, the
//! desired settings and what the server can do.

use async_nats::jetstream::stream;

use super::desired::{
    Desired, PER_KEY_TTL, PER_KEY_TTL_ON_EXISTING, ServerFacts, all_keys, version_text,
};
use super::diff::diff;
use super::stream_config::{desired_stream, updated_stream};
use crate::failure::{Failure, Retry};
use crate::nats::stream::planned::{Planned, PlannedAction};
use crate::nats::stream::{Change, ChangeKind, Field, is_managed_by, owner_of};
use crate::settings::{BucketSettings, OnExisting, Setting};

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

impl Plan {
    /// What enforce mode would do to the bucket's stream `stream` (as shown), in the shape
    /// audit mode and a dry run show; `server` says why an unsupported change cannot be made.
    pub fn describe(&self, stream: &str, server: &ServerFacts) -> Planned {
        match self {
            Self::Create(_) => Planned::new(
                stream,
                PlannedAction::Create,
                format!("the bucket does not exist: create stream {stream}"),
            ),
            Self::Recreate(_) => Planned::new(
                stream,
                PlannedAction::Create,
                format!(
                    "the bucket the operator created was deleted outside it: create stream {stream} again"
                ),
            ),
            Self::CannotCreate(why) => Planned::refused(
                stream,
                BlockReason::UnsupportedByServer.reason(),
                why.clone(),
            ),
            Self::Missing => Planned::new(
                stream,
                PlannedAction::None,
                "the bucket was only verified and has disappeared: report it missing, create nothing",
            ),
            Self::NotKeyValue(problem) => {
                Planned::refused(stream, "NotAKeyValueBucket", problem.clone())
            }
            Self::InSync { .. } => Planned::new(
                stream,
                PlannedAction::None,
                "the bucket matches the Component",
            ),
            Self::Update { changes, adopt, .. } => Planned::new(
                stream,
                PlannedAction::Update,
                if *adopt {
                    "adopt the bucket (jetstreamkv.io/on-existing: adopt) and change it in place"
                } else {
                    "change the bucket in place"
                },
            )
            .with_changes(changes),
            Self::Blocked {
                reason, changes, ..
            } => {
                let why = match reason {
                    BlockReason::UnsupportedByServer => why_unsupported(changes, server),
                    BlockReason::ConfigMismatch => {
                        "the bucket was not created by the operator: it is only verified".to_owned()
                    }
                    BlockReason::DataLossRefused => {
                        "the change would discard data and jetstreamkv.io/allow-data-loss is not set"
                            .to_owned()
                    }
                    BlockReason::ImmutableFieldChanged => {
                        "NATS cannot change these settings on an existing bucket".to_owned()
                    }
                    BlockReason::OwnedElsewhere => {
                        "the operator created the bucket for another Component".to_owned()
                    }
                };
                Planned::refused(stream, reason.reason(), why).with_changes(changes)
            }
        }
    }
}

/// Whether the Component sets the field by annotation (what a verified bucket is held to).
fn is_explicit(s: &BucketSettings, field: Field) -> bool {
    let settings: &[Setting] = match field {
        Field::History => &[Setting::History],
        Field::Ttl => &[Setting::Ttl],
        Field::MaxBytes => &[Setting::MaxBytes],
        Field::MaxValueSize => &[Setting::MaxValueSize],
        Field::Storage => &[Setting::Storage],
        Field::Replicas => &[Setting::Replicas],
        Field::Compression => &[Setting::Compression],
        Field::Description => &[Setting::Description],
        Field::LimitMarkerTtl => &[Setting::LimitMarkerTtl],
        Field::Metadata => &[Setting::Metadata],
        Field::Republish => &[
            Setting::RepublishSource,
            Setting::RepublishDestination,
            Setting::RepublishHeadersOnly,
        ],
        // A pub/sub stream's fields: a bucket's diff never has them.
        Field::MaxAge
        | Field::Retention
        | Field::DuplicateWindow
        | Field::MaxMsgs
        | Field::MaxMsgSize
        | Field::MaxMsgsPerSubject
        | Field::Discard
        | Field::Placement
        | Field::ConsumerLimits
        | Field::AllowMsgTtl => &[],
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
    if changes.iter().any(|c| c.field == Field::Replicas) {
        why.push("the server is not clustered; use replicas 1".to_owned());
    }
    if changes.iter().any(|c| c.field == Field::LimitMarkerTtl) {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::nats::bucket::{desired_config, live_config};
    use crate::settings::{MAX_METADATA_ITEMS, MAX_METADATA_VALUE, Storage};

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
            } => assert_eq!(changes[0].field, Field::History),
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
}
