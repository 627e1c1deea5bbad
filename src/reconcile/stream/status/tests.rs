//! Table tests of the stream status decision, without any server: for each reason, Ready,
//! Stalled or Reconciling, the retry and the Events, as `reconcile/status/tests.rs` does for
//! buckets.

use super::*;
use crate::crd::ConditionType::{Reconciling, Stalled};
use crate::nats::NatsError;
use crate::nats::stream::{ChangeKind, Field};
use crate::pubsub::resource::JetStreamStreamStatus;
use crate::pubsub::stream::Overlap;
use crate::reconcile::index::Written;
use crate::reconcile::stream::execute::{Round, RoundEnd, StreamStep};
use crate::reconcile::stream::topics::prepare;
use crate::secret_value::SecretValue;
use crate::validate::{Values, validate_pubsub};
use Retry::{AwaitChange, Backoff, Resync};

const NOW: i64 = 1_800_000_000;
const KEY: &str = "shop/events";
const STREAM: &str = "shop_events";
const DEAD: &str = "shop_events_deadletter";

fn component(annotations: &str, metadata: &str) -> crate::dapr::Component {
    serde_yaml::from_str(&format!(
        "metadata:\n  name: events\n  namespace: shop\n  generation: 2\n  annotations: \
         {{{annotations}}}\nspec:\n  type: pubsub.jetstream\n  version: v1\n  metadata:\n  - \
         name: natsURL\n    value: nats://nats:4222\n{metadata}"
    ))
    .unwrap()
}

fn validation(annotations: &str, metadata: &str) -> PubsubValidation {
    let values: Result<Vec<(String, SecretValue)>, crate::secrets::SecretError> = Ok(vec![(
        "natsURL".into(),
        SecretValue::new("nats://nats:4222"),
    )]
    .into_iter()
    .chain(
        metadata
            .contains("streamName")
            .then(|| ("streamName".into(), SecretValue::new(STREAM))),
    )
    .collect());
    validate_pubsub(
        &component(annotations, metadata),
        Values::Read(&values),
        NOW,
    )
}

/// A valid Component with subjects `orders`, and its subjects step.
fn valid() -> (PubsubValidation, Prepared) {
    let v = validation("jetstreamkv.io/subjects: orders", "");
    let p = prepared(&v, Ok(&[]));
    (v, p)
}

fn prepared(
    v: &PubsubValidation,
    subscriptions: Result<&[crate::pubsub::Subscription], &Problem>,
) -> Prepared {
    let (config, settings) = v.valid().expect("valid");
    prepare("shop", "events", config, settings, subscriptions)
}

fn facts(name: &str, managed: bool) -> StreamStatus {
    StreamStatus {
        name: name.into(),
        managed,
        subjects: vec!["orders".into()],
        ..Default::default()
    }
}

fn topics(end: RoundEnd) -> Round {
    Round {
        role: Role::Topics,
        stream: STREAM.into(),
        owner_elsewhere: None,
        end,
    }
}

fn connected(rounds: Vec<Round>) -> Progress<StreamStep> {
    Progress::Connected {
        version: "2.12.0".into(),
        step: Box::new(StreamStep {
            clustered: false,
            rounds: Ok(rounds),
            durable: None,
        }),
        planned: Vec::new(),
    }
}

fn decide_with(progress: Progress<StreamStep>) -> StreamOutcome {
    let (v, p) = valid();
    decide(KEY, None, &v, Some(&p), Some(&progress))
}

fn unreachable() -> NatsError {
    NatsError::Unreachable {
        servers: "nats://nats:4222".into(),
        detail: "connection refused".into(),
    }
}

fn replicas(live: usize, desired: usize) -> Vec<Change> {
    vec![Change {
        field: Field::Replicas,
        live: live.to_string(),
        desired: desired.to_string(),
        kind: ChangeKind::Safe,
    }]
}

fn blocked(reason: BlockReason, facts: Option<StreamStatus>) -> RoundEnd {
    RoundEnd::Blocked {
        facts,
        reason,
        missing: vec!["audit".into()],
        overlaps: vec![Overlap {
            subject: "orders".into(),
            stream: "OTHER".into(),
            other_subject: "orders".into(),
        }],
        changes: replicas(1, 3),
    }
}

/// What a user sees of an outcome: Ready, its reason, the kstatus condition, the retry, the
/// Event reasons, and the condition that failed.
#[derive(Debug, PartialEq)]
struct Seen {
    ready: Option<bool>,
    reason: String,
    kstatus: Option<ConditionType>,
    retry: Retry,
    events: Vec<String>,
    failed: Option<ConditionType>,
}

fn seen(o: &StreamOutcome) -> Seen {
    let conditions = o.conditions();
    let ready = conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Ready)
        .expect("Ready is always decided");
    let kstatus = conditions
        .iter()
        .map(|c| c.type_)
        .find(|t| matches!(t, Stalled | Reconciling));
    let failed = conditions
        .iter()
        .filter(|c| c.type_ != ConditionType::Ready)
        .find(|c| c.status == Some(false))
        .map(|c| c.type_);
    Seen {
        ready: ready.status,
        reason: ready.reason.clone(),
        kstatus,
        retry: o.retry(),
        events: o.events.iter().map(|e| e.reason.clone()).collect(),
        failed,
    }
}

fn expect(
    ready: bool,
    reason: &str,
    kstatus: Option<ConditionType>,
    retry: Retry,
    events: &[&str],
    failed: Option<ConditionType>,
) -> Seen {
    Seen {
        ready: Some(ready),
        reason: reason.into(),
        kstatus,
        retry,
        events: events.iter().map(|e| e.to_string()).collect(),
        failed,
    }
}

#[test]
fn each_stream_reason_gives_its_ready_kstatus_retry_and_events() {
    use ConditionType::{ConfigSynced, Connected, StreamAvailable, SubjectsCovered};
    let updated = RoundEnd::Updated {
        facts: facts(STREAM, true),
        added: vec!["audit".into()],
        changes: vec![],
    };
    let cases: Vec<(&str, StreamOutcome, Seen)> = vec![
        (
            "created",
            decide_with(connected(vec![topics(RoundEnd::Created {
                facts: facts(STREAM, true),
                recreated: false,
            })])),
            expect(
                true,
                "StreamManaged",
                None,
                Resync,
                &["StreamCreated"],
                None,
            ),
        ),
        (
            "created again after a deletion behind our back",
            decide_with(connected(vec![topics(RoundEnd::Created {
                facts: facts(STREAM, true),
                recreated: true,
            })])),
            expect(
                true,
                "StreamManaged",
                None,
                Resync,
                &["StreamRecreated"],
                None,
            ),
        ),
        (
            "in sync, verified",
            decide_with(connected(vec![topics(RoundEnd::InSync {
                facts: facts(STREAM, false),
            })])),
            expect(true, "StreamVerified", None, Resync, &[], None),
        ),
        (
            "updated",
            decide_with(connected(vec![topics(updated)])),
            expect(
                true,
                "StreamManaged",
                None,
                Resync,
                &["StreamUpdated"],
                None,
            ),
        ),
        (
            "not connected",
            decide_with(Progress::NotConnected(unreachable())),
            expect(
                false,
                "NatsUnavailable",
                Some(Reconciling),
                Backoff,
                &[],
                Some(Connected),
            ),
        ),
        (
            "listing the streams failed",
            decide_with(Progress::Connected {
                version: "2.12.0".into(),
                step: Box::new(StreamStep {
                    clustered: false,
                    rounds: Err(NatsError::Timeout {
                        what: "list streams".into(),
                    }),
                    durable: None,
                }),
                planned: Vec::new(),
            }),
            expect(
                false,
                "NatsTimeout",
                Some(Reconciling),
                Backoff,
                &[],
                Some(StreamAvailable),
            ),
        ),
        (
            "reading the stream failed",
            decide_with(connected(vec![topics(
                RoundEnd::FetchFailed(unreachable()),
            )])),
            expect(
                false,
                "NatsUnavailable",
                Some(Reconciling),
                Backoff,
                &[],
                Some(StreamAvailable),
            ),
        ),
        (
            "no subjects",
            decide_with(connected(vec![topics(RoundEnd::NoSubjects)])),
            expect(
                false,
                "NoSubjects",
                Some(Stalled),
                AwaitChange,
                &[],
                Some(SubjectsCovered),
            ),
        ),
        (
            "quorum lost",
            decide_with(connected(vec![topics(RoundEnd::Unavailable {
                facts: facts(STREAM, true),
                error: NatsError::NoStreamLeader {
                    stream: STREAM.into(),
                },
            })])),
            expect(
                false,
                "NoStreamLeader",
                Some(Reconciling),
                Backoff,
                &[],
                Some(StreamAvailable),
            ),
        ),
        (
            "create failed",
            decide_with(connected(vec![topics(RoundEnd::CreateFailed(
                unreachable(),
            ))])),
            expect(
                false,
                "NatsUnavailable",
                Some(Reconciling),
                Backoff,
                &[],
                Some(StreamAvailable),
            ),
        ),
        (
            "a verified stream went missing",
            decide_with(connected(vec![topics(RoundEnd::Missing)])),
            expect(
                false,
                "StreamMissing",
                Some(Reconciling),
                Backoff,
                &[],
                Some(StreamAvailable),
            ),
        ),
        (
            "not usable",
            decide_with(connected(vec![topics(RoundEnd::NotUsable(
                "sealed".into(),
            ))])),
            expect(
                false,
                "StreamNotUsable",
                Some(Stalled),
                Resync,
                &[],
                Some(StreamAvailable),
            ),
        ),
        (
            "create conflict",
            decide_with(connected(vec![topics(RoundEnd::CreateConflict)])),
            expect(
                false,
                "StreamCreateConflict",
                Some(Reconciling),
                Backoff,
                &[],
                Some(StreamAvailable),
            ),
        ),
        (
            "update failed",
            decide_with(connected(vec![topics(RoundEnd::UpdateFailed {
                facts: facts(STREAM, true),
                added: vec![],
                changes: replicas(1, 3),
                error: unreachable(),
            })])),
            expect(
                false,
                "NatsUnavailable",
                Some(Reconciling),
                Backoff,
                &[],
                Some(ConfigSynced),
            ),
        ),
        (
            "scale-down waits",
            decide_with(connected(vec![topics(RoundEnd::ScaleDownWaits {
                facts: facts(STREAM, true),
                changes: replicas(3, 1),
                behind: "n2 is lagging".into(),
            })])),
            expect(
                false,
                "ReplicasNotCurrent",
                Some(Reconciling),
                Backoff,
                &[],
                Some(ConfigSynced),
            ),
        ),
    ];
    let mut failures = Vec::new();
    for (name, outcome, want) in cases {
        let got = seen(&outcome);
        if got != want {
            failures.push(format!("{name}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_block_reason_fails_its_condition_and_stalls() {
    use ConditionType::{ConfigSynced, StreamAvailable, SubjectsCovered};
    for (reason, facts, condition) in [
        (BlockReason::SubjectOverlap, None, SubjectsCovered),
        (
            BlockReason::SubjectsNotCovered,
            Some(facts(STREAM, false)),
            SubjectsCovered,
        ),
        (
            BlockReason::ConfigMismatch,
            Some(facts(STREAM, false)),
            ConfigSynced,
        ),
        (
            BlockReason::ImmutableFieldChanged,
            Some(facts(STREAM, true)),
            ConfigSynced,
        ),
        (
            BlockReason::DataLossRefused,
            Some(facts(STREAM, true)),
            ConfigSynced,
        ),
        (BlockReason::UnsupportedByServer, None, StreamAvailable),
    ] {
        let o = decide_with(connected(vec![topics(blocked(reason, facts))]));
        let want = expect(
            false,
            reason.reason(),
            Some(Stalled),
            Resync,
            &[],
            Some(condition),
        );
        assert_eq!(seen(&o), want, "{reason:?}");
    }
}

#[test]
fn validation_and_subjects_problems_end_before_any_connection() {
    use ConditionType::{ConfigSynced, SubjectsCovered};
    let bad = validation("jetstreamkv.io/retention: forever", "");
    let o = decide(KEY, None, &bad, None, None);
    assert_eq!(
        seen(&o),
        expect(
            false,
            "InvalidAnnotation",
            Some(Stalled),
            AwaitChange,
            &[],
            Some(ConfigSynced)
        )
    );
    assert_eq!(
        o.wants_finalizer, None,
        "unknown while the annotations are bad"
    );

    let v = validation("jetstreamkv.io/subjects: orders", "");
    let problem = crate::reconcile::stream::topics::subscriptions_unreadable("shop", "forbidden");
    let p = prepared(&v, Err(&problem));
    let o = decide(KEY, None, &v, Some(&p), None);
    assert_eq!(
        seen(&o),
        expect(
            false,
            "SubscriptionsUnreadable",
            Some(Reconciling),
            Backoff,
            &[],
            Some(SubjectsCovered)
        )
    );
    assert!(
        o.credentials_resolved(),
        "credentials resolved before the subjects"
    );
}

#[test]
fn the_dead_letter_stream_is_reported_beside_the_topics_stream() {
    let dead = |end| Round {
        role: Role::DeadLetters,
        stream: DEAD.into(),
        owner_elsewhere: None,
        end,
    };
    let o = decide_with(connected(vec![
        topics(RoundEnd::InSync {
            facts: facts(STREAM, true),
        }),
        dead(RoundEnd::Created {
            facts: facts(DEAD, true),
            recreated: false,
        }),
    ]));
    assert_eq!(
        seen(&o),
        expect(
            true,
            "StreamManaged",
            None,
            Resync,
            &["StreamCreated"],
            None
        )
    );
    assert_eq!(
        o.dead_letter_stream.as_ref().map(|s| s.name.as_str()),
        Some(DEAD)
    );
    let ready = &o.conditions()[0];
    assert!(
        ready.message.contains("dead letters go to stream"),
        "{}",
        ready.message
    );
    assert!(
        o.events[0].note.contains("dead-letter stream"),
        "{:?}",
        o.events
    );

    // A dead-letter overlap says why dead letters need a stream of their own.
    let o = decide_with(connected(vec![
        topics(RoundEnd::InSync {
            facts: facts(STREAM, true),
        }),
        dead(blocked(BlockReason::SubjectOverlap, None)),
    ]));
    let ready = &o.conditions()[0];
    assert_eq!(ready.reason, "SubjectOverlap");
    assert!(ready.message.contains("Nats-Msg-Id"), "{}", ready.message);
}

#[test]
fn a_stream_made_for_another_component_says_so_naming_it_only_in_its_own_namespace() {
    let with_owner = |owner: &str, end| Round {
        owner_elsewhere: Some(owner.into()),
        ..topics(end)
    };
    let in_sync = || RoundEnd::InSync {
        facts: facts(STREAM, false),
    };
    let o = decide_with(connected(vec![with_owner("shop/maker", in_sync())]));
    let ready = &o.conditions()[0];
    assert_eq!(ready.reason, "StreamVerified");
    assert!(
        ready.message.contains("made it for Component maker"),
        "{}",
        ready.message
    );
    assert!(
        !ready.message.contains("outside the operator"),
        "{}",
        ready.message
    );

    let o = decide_with(connected(vec![with_owner("other/maker", in_sync())]));
    let ready = &o.conditions()[0];
    assert!(
        ready.message.contains("a Component of another namespace")
            && !ready.message.contains("other/maker")
            && !ready.message.contains("maker"),
        "{}",
        ready.message
    );

    // Asked something else of it: refused with its own reason, still truthful.
    let mismatch = blocked(BlockReason::ConfigMismatch, Some(facts(STREAM, false)));
    let o = decide_with(connected(vec![with_owner("shop/maker", mismatch)]));
    let ready = &o.conditions()[0];
    assert_eq!(ready.reason, "StreamOwnedElsewhere");
    assert!(
        ready.message.contains("for Component maker"),
        "{}",
        ready.message
    );
    assert_eq!(o.retry(), Resync);
}

#[test]
fn warnings_go_out_only_when_what_was_understood_changes() {
    let v = validation(
        "jetstreamkv.io/subjects: orders, jetstreamkv.io/retention: interest",
        "",
    );
    let p = prepared(&v, Ok(&[]));
    let progress = connected(vec![topics(RoundEnd::InSync {
        facts: facts(STREAM, true),
    })]);
    let first = decide(KEY, None, &v, Some(&p), Some(&progress));
    assert_eq!(
        first
            .warnings
            .iter()
            .map(|w| w.reason.as_str())
            .collect::<Vec<_>>(),
        ["InterestRetention"]
    );
    let previous = Written {
        spec: first.spec.clone(),
        generation: Some(1),
        status: JetStreamStreamStatus::default(),
    };
    let again = decide(KEY, Some(&previous), &v, Some(&p), Some(&progress));
    assert!(again.warnings.is_empty());
    assert_eq!(again.spec, first.spec);
    assert_eq!(again.wants_finalizer, Some(false));
}

#[test]
fn a_deletion_that_waits_shows_in_status_with_the_finalizer_kept() {
    let previous = Written {
        spec: JetStreamStreamSpec {
            component: "events".into(),
            stream: Some(STREAM.into()),
            ..Default::default()
        },
        generation: Some(1),
        status: JetStreamStreamStatus {
            stream: Some(facts(STREAM, true)),
            ..Default::default()
        },
    };
    let failure = Problem::of(ConditionType::Connected, &unreachable());
    let o = deletion_pending("events", Some(&previous), &failure);
    assert_eq!(
        seen(&o),
        expect(
            false,
            "DeletionPending",
            Some(Reconciling),
            Backoff,
            &[],
            Some(ConditionType::Connected)
        )
    );
    assert_eq!(o.wants_finalizer, Some(true));
    assert_eq!(o.spec, previous.spec);
    assert_eq!(o.stream, previous.status.stream);
    assert!(
        o.conditions()[0]
            .message
            .contains("its stream cannot be deleted yet")
    );
}

#[test]
fn the_last_facts_stay_while_nats_does_not_answer_and_an_answer_replaces_them() {
    let (v, p) = valid();
    let previous = Written {
        spec: JetStreamStreamSpec::default(),
        generation: Some(1),
        status: JetStreamStreamStatus {
            stream: Some(facts(STREAM, true)),
            dead_letter_stream: Some(facts(DEAD, true)),
            ..Default::default()
        },
    };
    let down = Progress::NotConnected(unreachable());
    let o = decide(KEY, Some(&previous), &v, Some(&p), Some(&down));
    assert_eq!(seen(&o).reason, "NatsUnavailable");
    assert_eq!(o.stream, previous.status.stream, "kept through an outage");

    let fetch_failed = connected(vec![topics(RoundEnd::FetchFailed(unreachable()))]);
    let o = decide(KEY, Some(&previous), &v, Some(&p), Some(&fetch_failed));
    assert_eq!(
        o.stream, previous.status.stream,
        "kept when reading it failed"
    );

    let gone = connected(vec![topics(RoundEnd::Missing)]);
    let o = decide(KEY, Some(&previous), &v, Some(&p), Some(&gone));
    assert_eq!(o.stream, None, "NATS said it is gone");
    assert_eq!(o.dead_letter_stream, None, "no dead-letter stream is meant");

    let renamed = Written {
        status: JetStreamStreamStatus {
            stream: Some(facts("OLD", true)),
            ..Default::default()
        },
        ..previous
    };
    let o = decide(KEY, Some(&renamed), &v, Some(&p), Some(&down));
    assert_eq!(
        o.stream, None,
        "another stream's facts are not shown as this one's"
    );
}

#[test]
fn a_right_the_app_lacks_keeps_the_stream_from_ready_and_names_the_subject() {
    let (v, p) = valid();
    let in_sync = connected(vec![topics(RoundEnd::InSync {
        facts: facts(STREAM, true),
    })]);
    let denied = crate::nats::app_rights::Denied {
        action: "publish to",
        subject: "orders".into(),
        what: "a publish",
        fix: "grant it publish on orders".into(),
    };
    let o = decide_with_app(KEY, None, &v, Some(&p), Some(&in_sync), Some(&denied));
    assert_eq!(
        seen(&o),
        expect(
            false,
            "AppPermissionDenied",
            Some(Stalled),
            Retry::Resync,
            &[],
            Some(ConditionType::StreamAvailable)
        )
    );
    let ready = o
        .conditions()
        .into_iter()
        .find(|c| c.type_ == ConditionType::Ready)
        .unwrap();
    assert!(
        ready.message.contains("publish to orders"),
        "{}",
        ready.message
    );
    // A failure of the streams themselves is that failure, not the app's.
    let failed = connected(vec![topics(RoundEnd::Missing)]);
    let o = decide_with_app(KEY, None, &v, Some(&p), Some(&failed), Some(&denied));
    assert_ne!(seen(&o).reason, "AppPermissionDenied");
}

#[test]
fn a_durable_consumer_that_differs_fails_config_synced_naming_the_field() {
    use crate::pubsub::consumer::{Difference, Recreate};
    use crate::reconcile::stream::execute::Durable;
    let (v, p) = valid();
    let with = |found: Result<Option<Vec<Difference>>, NatsError>,
                recreate: Option<Result<Recreate, NatsError>>| {
        let Progress::Connected {
            version,
            mut step,
            planned,
        } = connected(vec![topics(RoundEnd::InSync {
            facts: facts(STREAM, true),
        })])
        else {
            unreachable!()
        };
        step.durable = Some(Durable {
            name: "orders".into(),
            found,
            recreate,
        });
        decide(
            KEY,
            None,
            &v,
            Some(&p),
            Some(&Progress::Connected {
                version,
                step,
                planned,
            }),
        )
    };
    let differs = || {
        Ok(Some(vec![Difference {
            field: "deliverPolicy",
            live: "new".into(),
            asked: "all".into(),
        }]))
    };
    let o = with(differs(), None);
    assert_eq!(
        seen(&o),
        expect(
            false,
            "ConsumerMismatch",
            Some(Stalled),
            Resync,
            &[],
            Some(ConditionType::ConfigSynced)
        )
    );
    let message = |o: &StreamOutcome| {
        o.conditions()
            .into_iter()
            .find(|c| c.type_ == ConditionType::Ready)
            .unwrap()
            .message
    };
    let ready = message(&o);
    assert!(
        ready.contains(
            "durable consumer orders on stream shop_events differs from what daprd will ask \
             for: deliverPolicy is new on the consumer, the Component asks all"
        ),
        "{ready}"
    );
    assert!(
        ready.contains("jetstreamkv.io/recreate-consumers"),
        "{ready}"
    );
    // The same consumer as daprd asks: Ready; none yet: Ready (daprd makes it).
    assert_eq!(seen(&with(Ok(Some(vec![])), None)).ready, Some(true));
    assert_eq!(seen(&with(Ok(None), None)).ready, Some(true));
    // Unreadable: retried with back-off.
    assert_eq!(seen(&with(Err(unreachable()), None)).retry, Backoff);
    // With the opt-in: deleted, Ready, and an Event that says what and why.
    let o = with(differs(), Some(Ok(Recreate::Delete)));
    assert_eq!(seen(&o).ready, Some(true));
    assert_eq!(seen(&o).events, ["ConsumerRecreated"]);
    // Kept: the mismatch stands and says why the opt-in kept it.
    let o = with(differs(), Some(Ok(Recreate::KeepBound)));
    assert_eq!(seen(&o).reason, "ConsumerMismatch");
    assert!(
        message(&o).ends_with("did not delete it: a subscriber is bound to it"),
        "{}",
        message(&o)
    );
    // The delete failed: retried with back-off.
    assert_eq!(
        seen(&with(differs(), Some(Err(unreachable())))).retry,
        Backoff
    );
}
