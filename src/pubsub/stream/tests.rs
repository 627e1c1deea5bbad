//! The plan, table-tested.

use std::collections::BTreeMap;

use super::*;
use crate::settings::Storage;

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
        role: Role::Topics,
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
            let fields: Vec<&str> = changes.iter().map(|c| c.field.name()).collect();
            format!("update +{} {}", added.join(","), fields.join(","))
        }
        StreamPlan::Blocked {
            reason,
            missing,
            overlaps,
            changes,
            ..
        } => {
            let fields: Vec<&str> = changes.iter().map(|c| c.field.name()).collect();
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
    live.max_consumers = 1000;
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
    assert_eq!(
        config.max_consumers, 1000,
        "settings no annotation manages are kept"
    );
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

/// Every pair compared: what [`overlaps`] must agree with.
fn overlaps_pairwise(subjects: &[String], own: &str, others: &[OtherStream]) -> Vec<Overlap> {
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

#[test]
fn the_indexed_overlap_check_finds_what_comparing_every_pair_finds() {
    let mut others = others();
    others.push(OtherStream {
        name: "WILD".into(),
        subjects: strings(&["*.created", "billing.*", ">"]),
    });
    others.push(OtherStream {
        name: "EVENTS".into(),
        subjects: strings(&["orders.>"]),
    });
    others.push(OtherStream {
        name: "MANY".into(),
        subjects: strings(&["orders.new", "orders.*", "audit.x.y", "billing.paid"]),
    });
    let ours = strings(&[
        "orders.new",
        "orders.>",
        "audit.x",
        "audit.x.y",
        "billing.paid",
        "$KV.cart.a",
        "shipping",
        "*.anything",
    ]);
    for own in ["EVENTS", "MANY", "none"] {
        assert_eq!(
            overlaps(&ours, own, &others),
            overlaps_pairwise(&ours, own, &others),
            "own {own}"
        );
    }
}

/// The other streams' subjects are the server's to choose (up to the listing's bound of
/// 100,000): a thousand of ours against them costs one pass, not ours × theirs. Comparing every
/// pair took 54 s here (10^8 comparisons; try `overlaps_pairwise` in its place), one pass well
/// under a second on a quiet machine: the bound leaves room for a loaded one.
#[test]
fn the_overlap_check_is_linear_in_the_other_streams_subjects() {
    let others: Vec<OtherStream> = (0..100)
        .map(|i| OtherStream {
            name: format!("S{i}"),
            subjects: (0..1000).map(|j| format!("s{i}-{j}.events.>")).collect(),
        })
        .collect();
    let ours: Vec<String> = (0..1000).map(|k| format!("ours{k}.>")).collect();
    let started = std::time::Instant::now();
    let found = overlaps(&ours, "OURS", &others);
    let took = started.elapsed();
    assert!(found.is_empty());
    assert!(
        took < std::time::Duration::from_secs(10),
        "1,000 subjects against 100,000 took {took:?}"
    );
}

#[test]
fn blocked_messages_say_what_to_do_and_stay_short() {
    let missing: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    let overlaps = overlaps(&strings(&["$KV.cart.a"]), "EVENTS", &others());
    let changes = vec![Change {
        field: crate::nats::stream::Field::Storage,
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

#[test]
fn the_dead_letter_stream_is_planned_like_the_topics_stream() {
    let settings = StreamSettings {
        max_age: Some(Duration::from_secs(3600)),
        replicas: 3,
        ..Default::default()
    };
    let topics = strings(&["orders", "payments"]);
    let dead = strings(&["poison"]);
    let main = Desired {
        stream: "shop_events",
        ..desired(&topics, &settings)
    };
    let dead_letters = Desired {
        stream: "shop_events_deadletter",
        subjects: &dead,
        role: Role::DeadLetters,
        ..main
    };
    let (a, b) = (desired_stream(&main), desired_stream(&dead_letters));
    assert_eq!(b.subjects, dead);
    assert!(is_managed_by(&b, OWNER), "the same ownership marker");
    assert!(
        b.description
            .as_deref()
            .unwrap_or_default()
            .contains("dead letters")
    );
    // The same settings, the duplicate window included: only name, subjects, description differ.
    let same = stream::Config {
        name: a.name.clone(),
        subjects: a.subjects.clone(),
        description: a.description.clone(),
        ..b.clone()
    };
    assert_eq!(same, a);

    // Created next to ours (the topics' stream is another stream of the account to it)...
    let ours_now = vec![OtherStream {
        name: "shop_events".into(),
        subjects: topics.clone(),
    }];
    let p = plan(&dead_letters, None, &ours_now, None, true);
    assert_eq!(outcome(&p), "create poison");
    // ...and never where another stream holds the subject: the topics' stream of before, with
    // its duplicate window, included.
    let holding = vec![OtherStream {
        name: "shop_events".into(),
        subjects: strings(&["orders", "payments", "poison"]),
    }];
    let p = plan(&dead_letters, None, &holding, None, true);
    assert_eq!(
        outcome(&p),
        "SubjectOverlap missing= overlaps=shop_events changes="
    );
    // A new dead-letter topic is added to it like any subject.
    let more = strings(&["poison", "rejects"]);
    let live = desired_stream(&dead_letters);
    let p = plan(
        &Desired {
            subjects: &more,
            ..dead_letters
        },
        Some(&live),
        &ours_now,
        None,
        true,
    );
    assert_eq!(outcome(&p), "update +rejects ");
}

fn annotated(items: &[(&str, &str)]) -> Result<StreamSettings, crate::pubsub::PubsubError> {
    stream_settings(
        &items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn the_stream_limits_are_read_sent_and_refused_with_what_they_accept() {
    use crate::failure::Failure as _;
    let s = annotated(&[
        (DUPLICATE_WINDOW_ANNOTATION, "30s"),
        (MAX_MSGS_ANNOTATION, "1000"),
        (MAX_MSG_SIZE_ANNOTATION, "1Mi"),
        (MAX_MSGS_PER_SUBJECT_ANNOTATION, "100"),
        (DISCARD_ANNOTATION, "New"),
        ("jetstreamkv.io/compression", "s2"),
        ("jetstreamkv.io/description", "orders of the shop"),
        ("jetstreamkv.io/placement-tags", "ssd, eu"),
        ("jetstreamkv.io/metadata", "{\"team\": \"shop\"}"),
        (CONSUMER_INACTIVE_THRESHOLD_ANNOTATION, "1h"),
        (CONSUMER_MAX_ACK_PENDING_ANNOTATION, "500"),
        (ALLOW_MSG_TTL_ANNOTATION, "true"),
    ])
    .unwrap();
    let subjects = strings(&["orders"]);
    let c = desired_stream(&desired(&subjects, &s));
    assert_eq!(c.duplicate_window, Duration::from_secs(30));
    assert_eq!(c.max_messages, 1000);
    assert_eq!(c.max_message_size, 1 << 20);
    assert_eq!(c.max_messages_per_subject, 100);
    assert_eq!(c.discard, stream::DiscardPolicy::New);
    assert_eq!(c.compression, Some(stream::Compression::S2));
    assert_eq!(c.description.as_deref(), Some("orders of the shop"));
    assert_eq!(c.placement.as_ref().unwrap().tags, ["ssd", "eu"]);
    assert_eq!(c.metadata["team"], "shop");
    assert!(is_managed_by(&c, OWNER), "the owner marks stay");
    let limits = c.consumer_limits.as_ref().unwrap();
    assert_eq!(
        (limits.inactive_threshold, limits.max_ack_pending),
        (Duration::from_secs(3600), 500)
    );
    assert!(c.allow_message_ttl);
    // What was sent is what is asked: no difference.
    assert_eq!(diff(&s, &c, false), vec![]);

    for (items, reason, says) in [
        (
            &[
                (DUPLICATE_WINDOW_ANNOTATION, "2h"),
                (MAX_AGE_ANNOTATION, "1h"),
            ][..],
            "InvalidAnnotation",
            "no longer than the max age (1h",
        ),
        (
            &[(DUPLICATE_WINDOW_ANNOTATION, "0")][..],
            "InvalidAnnotation",
            "at least 100ms",
        ),
        (
            &[(MAX_MSGS_ANNOTATION, "0")][..],
            "InvalidAnnotation",
            "-1 for unlimited",
        ),
        (
            &[(MAX_MSGS_PER_SUBJECT_ANNOTATION, "many")][..],
            "InvalidAnnotation",
            "whole number",
        ),
        (
            &[(MAX_MSG_SIZE_ANNOTATION, "3Gi")][..],
            "InvalidAnnotation",
            "2147483647",
        ),
        (
            &[(DISCARD_ANNOTATION, "oldest")][..],
            "InvalidAnnotation",
            "\"old\"",
        ),
        (
            &[(CONSUMER_MAX_ACK_PENDING_ANNOTATION, "-5")][..],
            "InvalidAnnotation",
            "whole number",
        ),
        (
            &[(CONSUMER_INACTIVE_THRESHOLD_ANNOTATION, "1d")][..],
            "InvalidAnnotation",
            "Go duration",
        ),
        (
            &[(ALLOW_MSG_TTL_ANNOTATION, "yes")][..],
            "InvalidAnnotation",
            "cannot turn it off",
        ),
        (
            &[("jetstreamkv.io/metadata", "{\"_nats.x\": \"1\"}")][..],
            "ReservedMetadataKey",
            "reserved",
        ),
    ] {
        let e = annotated(items).unwrap_err();
        assert_eq!(e.reason(), reason, "{items:?}: {e}");
        assert!(e.to_string().contains(says), "{items:?}: {e}");
    }
    // A state store refuses them by name.
    let bucket = crate::settings::from_annotations(
        &[(MAX_MSGS_ANNOTATION.to_string(), "5".to_string())].into(),
    )
    .unwrap_err();
    assert_eq!(bucket.reason(), "InapplicableAnnotation");
}

#[test]
fn stream_limit_changes_are_guarded_like_the_others() {
    let subjects = strings(&["orders"]);
    let base = annotated(&[
        (MAX_MSGS_ANNOTATION, "1000"),
        (MAX_MSGS_PER_SUBJECT_ANNOTATION, "100"),
        (MAX_MSG_SIZE_ANNOTATION, "1024"),
        (ALLOW_MSG_TTL_ANNOTATION, "true"),
    ])
    .unwrap();
    let live = desired_stream(&desired(&subjects, &base));
    let plan_of = |items: &[(&str, &str)]| {
        let s = annotated(items).unwrap();
        let p = plan(&desired(&subjects, &s), Some(&live), &[], None, false);
        (outcome(&p), p)
    };
    let keep = [(ALLOW_MSG_TTL_ANNOTATION, "true")];
    // Lower limits lose messages: refused without the opt-in, applied with it.
    for (key, lower) in [
        (MAX_MSGS_ANNOTATION, "10"),
        (MAX_MSGS_PER_SUBJECT_ANNOTATION, "1"),
        (MAX_MSG_SIZE_ANNOTATION, "512"),
    ] {
        let mut items = vec![
            (MAX_MSGS_ANNOTATION, "1000"),
            (MAX_MSGS_PER_SUBJECT_ANNOTATION, "100"),
            (MAX_MSG_SIZE_ANNOTATION, "1024"),
            keep[0],
        ];
        items.retain(|(k, _)| *k != key);
        items.push((key, lower));
        let (o, _) = plan_of(&items);
        assert!(o.starts_with("DataLossRefused"), "{key}: {o}");
        items.push((ALLOW_DATA_LOSS_ANNOTATION, "true"));
        let (_, p) = plan_of(&items);
        assert!(matches!(p, StreamPlan::Update { .. }), "{key}: {p:?}");
    }
    // Raised or removed limits, discard, window, compression, consumer limits: applied.
    let (_, p) = plan_of(&[
        (DISCARD_ANNOTATION, "new"),
        (DUPLICATE_WINDOW_ANNOTATION, "1m"),
        ("jetstreamkv.io/compression", "true"),
        (CONSUMER_MAX_ACK_PENDING_ANNOTATION, "10"),
        keep[0],
    ]);
    let StreamPlan::Update {
        config, changes, ..
    } = p
    else {
        panic!("{p:?}")
    };
    let fields: Vec<Field> = changes.iter().map(|c| c.field).collect();
    assert_eq!(
        fields,
        [
            Field::MaxMsgs,
            Field::MaxMsgSize,
            Field::MaxMsgsPerSubject,
            Field::Discard,
            Field::DuplicateWindow,
            Field::Compression,
            Field::ConsumerLimits
        ]
    );
    assert_eq!(config.max_messages, -1);
    assert_eq!(config.discard, stream::DiscardPolicy::New);
    assert_eq!(config.duplicate_window, Duration::from_secs(60));
    // Message TTLs cannot be turned off; placement is never moved: refused before sending.
    let (o, _) = plan_of(&[
        (MAX_MSGS_ANNOTATION, "1000"),
        (MAX_MSGS_PER_SUBJECT_ANNOTATION, "100"),
        (MAX_MSG_SIZE_ANNOTATION, "1024"),
    ]);
    assert!(o.starts_with("ImmutableFieldChanged"), "{o}");
    let (o, p) = plan_of(&[
        (MAX_MSGS_ANNOTATION, "1000"),
        (MAX_MSGS_PER_SUBJECT_ANNOTATION, "100"),
        (MAX_MSG_SIZE_ANNOTATION, "1024"),
        keep[0],
        ("jetstreamkv.io/placement-cluster", "east"),
    ]);
    assert!(o.starts_with("ImmutableFieldChanged"), "{o}");
    let StreamPlan::Blocked { changes, .. } = p else {
        panic!()
    };
    assert_eq!(
        changes[0].to_string(),
        "placement none -> cluster \"east\", tags []"
    );
    // A stream the operator only verifies is held to the annotations given, only.
    let mut foreign = live.clone();
    foreign.metadata.clear();
    foreign.description = Some("theirs".into());
    let s = annotated(&[(MAX_MSGS_ANNOTATION, "5")]).unwrap();
    let p = plan(&desired(&subjects, &s), Some(&foreign), &[], None, false);
    let StreamPlan::Blocked { changes, .. } = p else {
        panic!("{p:?}")
    };
    assert_eq!(
        changes.iter().map(|c| c.field).collect::<Vec<_>>(),
        [Field::MaxMsgs]
    );
}
