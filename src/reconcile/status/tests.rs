//! Table tests of the status decision, without any server: for each failure class, the
//! conditions, Ready's reason, Stalled or Reconciling, the retry and the Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::KeyValueBucketStatus;
use crate::dapr::Component;
use crate::nats::NatsError;
use crate::nats::bucket::BlockReason;
use crate::secret_value::SecretValue;
use crate::secrets::SecretError;
use crate::settings::{OBSERVED_GENERATION_ANNOTATION, READY_ANNOTATION, REASON_ANNOTATION};
use crate::validate::{Values, validate};

const NOW: i64 = 1_800_000_000;
const BUCKET: &str = "orders";

fn component(annotations: &str) -> Component {
    serde_yaml::from_str(&format!(
        "metadata:\n  name: c\n  namespace: n\n  generation: 3\n  annotations: {{{annotations}}}\n\
         spec:\n  type: state.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n    \
         secretKeyRef: {{name: s, key: url}}\n  - name: bucket\n    value: {BUCKET}\n"
    ))
    .unwrap()
}

fn values(url: &str) -> Result<Vec<(String, SecretValue)>, SecretError> {
    Ok(vec![
        ("natsURL".into(), SecretValue::new(url)),
        ("bucket".into(), SecretValue::new(BUCKET)),
    ])
}

fn facts(managed: bool) -> Option<BucketStatus> {
    Some(BucketStatus {
        stream: format!("KV_{BUCKET}"),
        managed,
        server_version: Some("2.12.0".into()),
        ..Default::default()
    })
}

fn connected(step: BucketStep) -> Progress {
    Progress::Connected {
        version: "2.12.0".into(),
        step: Box::new(step),
        planned: Vec::new(),
    }
}

/// What a user sees of an outcome: Ready, its reason, the kstatus condition, the retry, the
/// Event reasons.
#[derive(Debug, PartialEq)]
struct Seen {
    ready: Option<bool>,
    reason: String,
    kstatus: Option<ConditionType>,
    retry: Retry,
    events: Vec<String>,
}

fn seen(o: &Outcome) -> Seen {
    let ready = o.ready().expect("Ready is always decided");
    let kstatus = o
        .conditions
        .iter()
        .map(|c| c.type_)
        .find(|t| matches!(t, ConditionType::Stalled | ConditionType::Reconciling));
    Seen {
        ready: ready.status,
        reason: ready.reason.clone(),
        kstatus,
        retry: o.retry,
        events: o.events.iter().map(|e| e.reason.clone()).collect(),
    }
}

fn expect(
    ready: bool,
    reason: &str,
    kstatus: Option<ConditionType>,
    retry: Retry,
    events: &[&str],
) -> Seen {
    Seen {
        ready: Some(ready),
        reason: reason.into(),
        kstatus,
        retry,
        events: events.iter().map(|e| e.to_string()).collect(),
    }
}

fn decide_valid(progress: Progress, previous: Option<&Written>) -> Outcome {
    let c = component("");
    let values = values("nats://nats:4222");
    let v = validate(&c, Values::Read(&values), NOW);
    decide("c", previous, &v, Some(&progress))
}

fn written_with(bucket: Option<BucketStatus>) -> Written {
    let c = component("");
    let values = values("nats://nats:4222");
    let v = validate(&c, Values::Read(&values), NOW);
    Written {
        spec: understood("c", &v),
        generation: Some(1),
        status: KeyValueBucketStatus {
            bucket,
            ..Default::default()
        },
    }
}

fn unreachable() -> NatsError {
    NatsError::Unreachable {
        servers: "nats://nats:4222".into(),
        detail: "connection refused".into(),
    }
}

#[test]
fn each_failure_class_gives_its_ready_reason_kstatus_retry_and_events() {
    use ConditionType::{Reconciling, Stalled};
    use Retry::{Backoff, Resync};
    let change = || "history 1 -> 5".to_owned();
    let cases: Vec<(&str, Outcome, Seen)> = vec![
        (
            "created",
            decide_valid(connected(BucketStep::Created { facts: facts(true) }), None),
            expect(true, "BucketManaged", None, Resync, &["BucketCreated"]),
        ),
        (
            "created again after a deletion behind our back",
            decide_valid(
                connected(BucketStep::Created { facts: facts(true) }),
                Some(&written_with(facts(true))),
            ),
            expect(true, "BucketManaged", None, Resync, &["BucketRecreated"]),
        ),
        (
            "in sync, only verified",
            decide_valid(
                connected(BucketStep::InSync {
                    facts: facts(false),
                    managed: false,
                }),
                None,
            ),
            expect(true, "BucketVerified", None, Resync, &[]),
        ),
        (
            "updated with new settings",
            decide_valid(
                connected(BucketStep::Updated {
                    facts: facts(true),
                    changes: change(),
                    adopt: false,
                }),
                None,
            ),
            expect(true, "BucketManaged", None, Resync, &["BucketUpdated"]),
        ),
        (
            "restored after drift: same settings as last time",
            decide_valid(
                connected(BucketStep::Updated {
                    facts: facts(true),
                    changes: change(),
                    adopt: false,
                }),
                Some(&written_with(facts(true))),
            ),
            expect(true, "BucketManaged", None, Resync, &["ConfigDrift"]),
        ),
        (
            "adopted",
            decide_valid(
                connected(BucketStep::Updated {
                    facts: facts(true),
                    changes: change(),
                    adopt: true,
                }),
                None,
            ),
            expect(true, "BucketManaged", None, Resync, &["BucketAdopted"]),
        ),
        (
            "NATS unreachable: retried, Reconciling",
            decide_valid(Progress::NotConnected(unreachable()), None),
            expect(false, "NatsUnavailable", Some(Reconciling), Backoff, &[]),
        ),
        (
            "credentials refused: retried, but Stalled",
            decide_valid(
                Progress::NotConnected(NatsError::AuthorizationFailed {
                    servers: "nats://nats:4222".into(),
                }),
                None,
            ),
            expect(false, "AuthorizationFailed", Some(Stalled), Backoff, &[]),
        ),
        (
            "create failed",
            decide_valid(
                connected(BucketStep::CreateFailed(NatsError::JetStreamDisabled {
                    servers: "nats://nats:4222".into(),
                })),
                None,
            ),
            expect(false, "JetStreamDisabled", Some(Stalled), Backoff, &[]),
        ),
        (
            "the server cannot create the bucket as asked (per-key TTL on nats-server 2.10)",
            decide_valid(
                connected(BucketStep::CreateFailed(NatsError::UnsupportedByServer {
                    detail: "jetstreamkv.io/limit-marker-ttl needs nats-server 2.11.0".into(),
                })),
                None,
            ),
            expect(false, "UnsupportedByServer", Some(Stalled), Backoff, &[]),
        ),
        (
            "blocked: the server cannot apply it",
            decide_valid(
                connected(BucketStep::Blocked {
                    facts: facts(true),
                    reason: BlockReason::UnsupportedByServer,
                    changes: change(),
                    why: "the server is not clustered; use replicas 1".into(),
                }),
                None,
            ),
            expect(false, "UnsupportedByServer", Some(Stalled), Resync, &[]),
        ),
        (
            "a verified bucket went missing",
            decide_valid(connected(BucketStep::Missing), None),
            expect(false, "BucketMissing", Some(Reconciling), Backoff, &[]),
        ),
        (
            "not a KV bucket",
            decide_valid(connected(BucketStep::NotKeyValue("no".into())), None),
            expect(false, "NotAKeyValueBucket", Some(Stalled), Resync, &[]),
        ),
        (
            "update failed",
            decide_valid(
                connected(BucketStep::UpdateFailed {
                    facts: facts(true),
                    changes: change(),
                    error: NatsError::Timeout {
                        what: "update".into(),
                    },
                }),
                None,
            ),
            expect(false, "NatsTimeout", Some(Reconciling), Backoff, &[]),
        ),
        (
            "blocked: data loss refused",
            decide_valid(
                connected(BucketStep::Blocked {
                    facts: facts(true),
                    reason: BlockReason::DataLossRefused,
                    changes: change(),
                    why: String::new(),
                }),
                None,
            ),
            expect(false, "DataLossRefused", Some(Stalled), Resync, &[]),
        ),
        (
            "lost the create race twice",
            decide_valid(connected(BucketStep::CreateConflict), None),
            expect(
                false,
                "BucketCreateConflict",
                Some(Reconciling),
                Backoff,
                &[],
            ),
        ),
    ];
    for (name, outcome, want) in cases {
        assert_eq!(seen(&outcome), want, "{name}");
        assert_eq!(outcome.wants_finalizer, Some(false), "{name}");
    }
}

#[test]
fn validation_failures_wait_for_a_change_or_back_off() {
    use ConditionType::{Reconciling, Stalled};
    let c = component("");
    let bad_url = values("http://nats");
    let unreadable = Err(SecretError::Api {
        secret: "s".into(),
        detail: "the API server is away".into(),
    });
    let missing = Err(SecretError::NotFound {
        secret: "s".into(),
        item: "natsURL".into(),
        namespace: "n".into(),
    });
    let bad_annotation = component("jetstreamkv.io/history: \"0\"");
    let good = values("nats://nats:4222");
    let cases = [
        (
            &c,
            &bad_url,
            expect(
                false,
                "InvalidNatsURL",
                Some(Stalled),
                Retry::AwaitChange,
                &[],
            ),
        ),
        (
            &c,
            &unreadable,
            expect(
                false,
                "SecretReadFailed",
                Some(Reconciling),
                Retry::Backoff,
                &[],
            ),
        ),
        (
            &c,
            &missing,
            expect(
                false,
                "SecretNotFound",
                Some(Stalled),
                Retry::AwaitChange,
                &[],
            ),
        ),
        (
            &bad_annotation,
            &good,
            expect(
                false,
                "InvalidAnnotation",
                Some(Stalled),
                Retry::AwaitChange,
                &[],
            ),
        ),
    ];
    for (component, values, want) in cases {
        let v = validate(component, Values::Read(values), NOW);
        let outcome = decide("c", None, &v, None);
        assert_eq!(seen(&outcome), want);
        assert_eq!(
            outcome.wants_finalizer, None,
            "unknown before the annotations pass"
        );
        // Every detail condition is there: the failed one False, the others Unknown.
        let types: Vec<_> = outcome.conditions.iter().map(|c| c.type_).collect();
        assert_eq!(types[0], ConditionType::Ready);
        assert_eq!(types[1..5], ConditionType::DETAIL);
        let details = &outcome.conditions[1..5];
        assert_eq!(
            details.iter().filter(|c| c.status == Some(false)).count(),
            1
        );
        assert!(
            details
                .iter()
                .filter(|c| c.status.is_none())
                .all(|c| c.message.starts_with("not checked while "))
        );
    }
}

#[test]
fn success_sets_every_detail_condition_true_and_asks_for_the_finalizer_by_policy() {
    let c = component("jetstreamkv.io/deletion-policy: delete");
    let values = values("nats://nats:4222");
    let v = validate(&c, Values::Read(&values), NOW);
    let outcome = decide(
        "c",
        None,
        &v,
        Some(&connected(BucketStep::InSync {
            facts: facts(true),
            managed: true,
        })),
    );
    assert!(outcome.conditions.iter().all(|c| c.status == Some(true)));
    assert_eq!(outcome.conditions.len(), 5, "Ready and the four details");
    assert_eq!(outcome.wants_finalizer, Some(true));
    assert_eq!(outcome.spec.bucket.as_deref(), Some(BUCKET));
    assert_eq!(outcome.bucket, facts(true));
}

#[test]
fn facts_about_another_bucket_are_dropped() {
    let mut old = facts(true);
    if let Some(b) = old.as_mut() {
        b.stream = "KV_renamed".into();
    }
    let outcome = decide_valid(
        Progress::NotConnected(unreachable()),
        Some(&written_with(old.clone())),
    );
    assert_eq!(outcome.bucket, None);
    // Before validation passes they are kept.
    let c = component("");
    let v = validate(&c, Values::Read(&values("bad")), NOW);
    let outcome = decide("c", Some(&written_with(old.clone())), &v, None);
    assert_eq!(outcome.bucket, old);
}

#[test]
fn a_ready_transition_is_an_event_unless_something_was_done() {
    let status = |ready: bool, reason: &str| {
        let outcome = Outcome {
            spec: KeyValueBucketSpec::default(),
            conditions: vec![ConditionSpec {
                type_: ConditionType::Ready,
                status: Some(ready),
                reason: reason.into(),
                message: format!("{reason} happened"),
            }],
            bucket: None,
            events: Vec::new(),
            retry: Retry::Resync,
            wants_finalizer: None,
            plan: Vec::new(),
        };
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        bucket_status(
            &KeyValueBucketStatus::default(),
            &outcome,
            Some(1),
            Some(1),
            now,
        )
    };
    let none = KeyValueBucketStatus::default();
    let ok = status(true, "BucketManaged");
    let down = status(false, "NatsTimeout");
    let reasons = |notes: Vec<Note>| {
        notes
            .into_iter()
            .map(|n| (n.type_, n.reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        reasons(events(
            &none.reconcile.conditions,
            &ok.reconcile.conditions,
            &[]
        )),
        [(EventType::Normal, "BucketReady".to_owned())]
    );
    assert_eq!(
        reasons(events(
            &ok.reconcile.conditions,
            &down.reconcile.conditions,
            &[]
        )),
        [(EventType::Warning, "NatsUnavailable".to_owned())]
    );
    assert!(
        events(&ok.reconcile.conditions, &ok.reconcile.conditions, &[]).is_empty(),
        "no transition, no Event"
    );
    let done = [Note::normal(Reason::BucketCreated, "created".into())];
    assert_eq!(
        reasons(events(
            &none.reconcile.conditions,
            &ok.reconcile.conditions,
            &done
        )),
        [(EventType::Normal, "BucketCreated".to_owned())],
        "what was done is the Event"
    );
}

#[test]
fn the_component_is_written_only_when_its_summary_or_finalizer_differs() {
    let c = component("");
    let values = values("nats://nats:4222");
    let v = validate(&c, Values::Read(&values), NOW);
    let outcome = decide(
        "c",
        None,
        &v,
        Some(&connected(BucketStep::Created { facts: facts(true) })),
    );
    let status = bucket_status(
        &KeyValueBucketStatus::default(),
        &outcome,
        Some(1),
        Some(3),
        Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let patch = component_patch(&c, &status.reconcile.conditions, outcome.wants_finalizer)
        .expect("a first write");
    let annotations = &patch["metadata"]["annotations"];
    assert_eq!(annotations[READY_ANNOTATION], "true");
    assert_eq!(annotations[REASON_ANNOTATION], "BucketManaged");
    assert_eq!(annotations[OBSERVED_GENERATION_ANNOTATION], "3");
    assert!(patch["metadata"].get("finalizers").is_none());

    let mut annotated = c.clone();
    annotated.metadata.annotations = Some(
        [
            (READY_ANNOTATION, "true"),
            (REASON_ANNOTATION, "BucketManaged"),
            (OBSERVED_GENERATION_ANNOTATION, "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    assert_eq!(
        component_patch(&annotated, &status.reconcile.conditions, Some(false)),
        None
    );
    let with_finalizer =
        component_patch(&annotated, &status.reconcile.conditions, Some(true)).expect("finalizer");
    assert_eq!(with_finalizer["metadata"]["finalizers"][0], FINALIZER);
}

#[test]
fn a_pending_deletion_keeps_the_finalizer_and_the_spec() {
    let previous = written_with(facts(true));
    let failure = Problem::of(ConditionType::Connected, &unreachable());
    let outcome = deletion_pending("c", Some(&previous), &failure);
    assert_eq!(
        seen(&outcome),
        expect(
            false,
            "DeletionPending",
            Some(ConditionType::Reconciling),
            Retry::Backoff,
            &[]
        )
    );
    assert_eq!(outcome.wants_finalizer, Some(true));
    assert_eq!(outcome.spec, previous.spec);
    let ready = outcome.ready().unwrap();
    assert!(
        ready.message.contains("NatsUnavailable"),
        "{}",
        ready.message
    );
}

#[test]
fn a_refusal_says_why_the_server_cannot_and_what_cannot_change() {
    let why = "turning per-key TTL on for an existing bucket needs nats-server 2.11.2 or later";
    let message = blocked_message(
        BlockReason::UnsupportedByServer,
        "orders",
        "limitMarkerTtl none -> 30s",
        why,
    );
    assert!(
        message.contains("limitMarkerTtl none -> 30s") && message.contains(why),
        "{message}"
    );
    let message = blocked_message(
        BlockReason::ImmutableFieldChanged,
        "orders",
        "limitMarkerTtl 30s -> none",
        "",
    );
    assert!(
        message.contains("per-key TTL, once on, stays on"),
        "{message}"
    );
}

#[test]
fn close_orders_any_resources_conditions_the_same_way() {
    use crate::pubsub::resource::DETAIL_CONDITIONS;
    let passed = vec![ConditionSpec {
        type_: ConditionType::CredentialsResolved,
        status: Some(true),
        reason: "Resolved".into(),
        message: "ok".into(),
    }];
    let shown = |c: &[ConditionSpec]| -> Vec<(ConditionType, Option<bool>, String)> {
        c.iter()
            .map(|c| (c.type_, c.status, c.reason.clone()))
            .collect()
    };
    // A stream's failure: its condition False, the later ones Unknown, Stalled after.
    let problem = Problem::new(
        ConditionType::SubjectsCovered,
        "SubjectOverlap",
        "orders overlaps orders of stream OTHER",
        Retry::Resync,
    );
    let conditions = close(&passed, &DETAIL_CONDITIONS, Err(problem));
    use ConditionType::*;
    let not_checked = || "NotChecked".to_owned();
    assert_eq!(
        shown(&conditions),
        [
            (Ready, Some(false), "SubjectOverlap".to_owned()),
            (CredentialsResolved, Some(true), "Resolved".to_owned()),
            (Connected, None, not_checked()),
            (StreamAvailable, None, not_checked()),
            (SubjectsCovered, Some(false), "SubjectOverlap".to_owned()),
            (ConfigSynced, None, not_checked()),
            (Stalled, Some(true), "SubjectOverlap".to_owned()),
        ]
    );
    assert_eq!(
        conditions[2].message,
        "not checked while SubjectsCovered is False (SubjectOverlap)"
    );
    // A transient failure is Reconciling; success has neither.
    let transient = Problem::new(Connected, "NatsUnavailable", "down", Retry::Backoff);
    let conditions = close(&passed, &DETAIL_CONDITIONS, Err(transient));
    assert_eq!(conditions.last().map(|c| c.type_), Some(Reconciling));
    let conditions = close(
        &passed,
        &DETAIL_CONDITIONS,
        Ok(("StreamManaged", "ready".into())),
    );
    assert_eq!(conditions.len(), 1 + DETAIL_CONDITIONS.len());
    assert_eq!(conditions[0].reason, "StreamManaged");
}

#[test]
fn a_right_the_app_lacks_keeps_the_bucket_from_ready_and_names_the_subject() {
    let c = component("");
    let values = values("nats://nats:4222");
    let v = validate(&c, Values::Read(&values), NOW);
    let denied = crate::nats::app_rights::Denied {
        action: "publish to",
        subject: "$JS.API.STREAM.INFO.KV_orders".into(),
        what: "daprd's KeyValue(bucket) at start-up",
        fix: "grant it publish on $JS.API.STREAM.INFO.KV_orders".into(),
    };
    let created = connected(BucketStep::Created { facts: facts(true) });
    let o = decide_with_app("c", None, &v, Some(&created), Some(&denied));
    // Made, and said so; not Ready until the app's user can use it: someone must grant it.
    assert_eq!(
        seen(&o),
        expect(
            false,
            "AppPermissionDenied",
            Some(ConditionType::Stalled),
            Retry::Resync,
            &["BucketCreated"]
        )
    );
    let available = o
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::BucketAvailable)
        .unwrap();
    assert_eq!(available.status, Some(false));
    assert!(
        available.message.contains("$JS.API.STREAM.INFO.KV_orders"),
        "{}",
        available.message
    );
    // The detail before it still passed; nothing is lost of what NATS did.
    assert!(o.credentials_resolved());
    // A failure before the bucket is usable is that failure, not the app's.
    let failed = connected(BucketStep::Missing);
    let o = decide_with_app("c", None, &v, Some(&failed), Some(&denied));
    assert_eq!(seen(&o).reason, "BucketMissing");
}

#[test]
fn a_component_refused_for_its_size_is_written_only_to_take_back_a_true() {
    let mut oversized = serde_json::to_value(component("")).unwrap();
    let items = oversized["spec"]["metadata"].as_array_mut().unwrap();
    items.extend(
        (0..crate::dapr::metadata::MAX_ITEMS).map(|i| serde_json::json!({"name": format!("k{i}")})),
    );
    let c: Component = serde_json::from_value(oversized).unwrap();
    let values = values("nats://nats:4222");
    let v = validate(&c, Values::Read(&values), NOW);
    let outcome = decide("c", None, &v, None);
    let status = bucket_status(
        &KeyValueBucketStatus::default(),
        &outcome,
        Some(1),
        Some(3),
        Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let conditions = &status.reconcile.conditions;
    let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "TooMuchMetadata");
    assert_eq!(
        component_patch(&c, conditions, outcome.wants_finalizer),
        None
    );

    // Once Ready, then grown past the cap: the "true" it carries is taken back.
    let mut was_ready = c.clone();
    was_ready.metadata.annotations = Some(
        [
            (READY_ANNOTATION, "true"),
            (REASON_ANNOTATION, "BucketManaged"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    let patch = component_patch(&was_ready, conditions, outcome.wants_finalizer)
        .expect("the true taken back");
    assert_eq!(patch["metadata"]["annotations"][READY_ANNOTATION], "false");
    assert_eq!(
        patch["metadata"]["annotations"][REASON_ANNOTATION],
        "TooMuchMetadata"
    );
}
