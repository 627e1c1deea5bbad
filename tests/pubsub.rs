//! Streams for Dapr `pubsub.jetstream` against the real servers, before the reconciler runs them:
//! the Subscription and JetStreamStream CRDs on a real API server agree with the Rust types, and
//! every stream plan is one a real nats-server accepts; what it would refuse is refused by the
//! plan first, with nothing sent.

use crate::support;

use std::collections::BTreeMap;

use async_nats::jetstream::{self, stream};
use jetstream_kv_operator::crd::{ConditionType, ReconcileStatus};
use jetstream_kv_operator::pubsub::resource::{
    JetStreamStreamSpec, JetStreamStreamStatus, StreamConfig, StreamStatus, TopicStatus,
};
use jetstream_kv_operator::pubsub::stream::{
    Desired, OtherStream, Role, STORAGE_ANNOTATION, SUBJECTS_ANNOTATION, plan, stream_settings,
};
use jetstream_kv_operator::pubsub::{
    JetStreamStream, StreamPlan, Subscription, derive_subjects, pubsub_config,
};
use jetstream_kv_operator::secret_value::SecretValue;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use support::advisories::Advisories;
use support::{TestNamespace, control_plane};

#[tokio::test]
async fn subscriptions_round_trip_through_the_crd_and_give_the_stream_its_subjects() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "pubsub-subscriptions").await;
    let api: Api<Subscription> = Api::namespaced(client.clone(), &ns.name);
    let mut with_dead_letter = Subscription::new(&ns.name, "payments", "events", "payments");
    with_dead_letter.spec.dead_letter_topic = "poison".into();
    for s in [
        Subscription::new(&ns.name, "orders", "events", "orders"),
        with_dead_letter,
        Subscription::new(&ns.name, "other", "another-pubsub", "audit"),
    ] {
        api.create(&PostParams::default(), &s)
            .await
            .expect("the Subscription CRD accepts the Rust type");
    }

    let listed = api.list(&ListParams::default()).await.expect("list");
    let mut topics = Vec::new();
    for s in listed.items.iter().filter(|s| s.uses(&ns.name, "events")) {
        topics.extend(s.topics());
    }
    let values = vec![
        (
            "natsURL".to_string(),
            SecretValue::new("nats://127.0.0.1:4222"),
        ),
        ("consumerID".to_string(), SecretValue::new("{namespace}")),
    ];
    let config = pubsub_config(&values).expect("valid Component");
    assert!(config.namespace_scoped);
    let subjects = derive_subjects(&[], &topics, Some(&ns.name)).expect("subjects");
    let prefixed = |t: &str| format!("{}{t}", ns.name);
    assert_eq!(
        subjects.subjects,
        [prefixed("orders"), prefixed("payments")]
    );
    assert_eq!(subjects.dead_letters, [prefixed("poison")]);
    assert!(subjects.uncovered.is_empty());
}

#[tokio::test]
async fn the_jetstreamstream_crd_takes_what_the_operator_writes() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "pubsub-jss").await;
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    let spec = JetStreamStreamSpec {
        component: "events".into(),
        stream: Some("EVENTS".into()),
        servers: vec!["nats://127.0.0.1:4222".into()],
        auth: Some("none".into()),
        topic_prefix: None,
        subjects: vec!["orders".into()],
        dead_letter_stream: Some("EVENTS_deadletter".into()),
        dead_letter_subjects: vec!["poison".into()],
        ..Default::default()
    };
    let created = api
        .create(
            &PostParams::default(),
            &JetStreamStream::new("events", spec.clone()),
        )
        .await
        .expect("create");
    assert_eq!(created.spec, spec);

    let status = JetStreamStreamStatus {
        reconcile: ReconcileStatus {
            observed_generation: created.metadata.generation,
            component_generation: Some(1),
            conditions: vec![Condition {
                type_: ConditionType::SubjectsCovered.as_str().into(),
                status: "False".into(),
                reason: "SubjectOverlap".into(),
                message: "poison overlaps poison of stream OTHER".into(),
                observed_generation: created.metadata.generation,
                // Whole seconds: what the API server keeps.
                last_transition_time: Time(
                    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now"),
                ),
            }],
        },
        topics: vec![TopicStatus {
            topic: "poison".into(),
            subject: "poison".into(),
            source: "dead-letter topic of Subscription payments".into(),
            stream: Some("EVENTS_deadletter".into()),
            covered: false,
            problem: Some("poison overlaps poison of stream OTHER".into()),
        }],
        stream: None,
        dead_letter_stream: Some(StreamStatus {
            name: "EVENTS_deadletter".into(),
            managed: true,
            subjects: vec!["orders".into()],
            config: StreamConfig {
                retention: "limits".into(),
                storage: "file".into(),
                replicas: 1,
                duplicate_window: "2m".into(),
                ..Default::default()
            },
            ..Default::default()
        }),
        // Audit mode's plan: every field kept by the schema.
        plan: vec![jetstream_kv_operator::nats::stream::planned::Planned {
            stream: "EVENTS".into(),
            action: jetstream_kv_operator::nats::stream::planned::PlannedAction::Update,
            changes: vec![
                jetstream_kv_operator::nats::stream::planned::PlannedChange {
                    field: "maxAge".into(),
                    live: "1h".into(),
                    desired: "2h".into(),
                },
            ],
            reason: Some("DataLossRefused".into()),
            message: "change the stream in place".into(),
        }],
    };
    let patch = serde_json::json!({
        "apiVersion": "jetstreamkv.io/v1beta1",
        "kind": "JetStreamStream",
        "status": status,
    });
    let patched = api
        .patch_status(
            "events",
            &PatchParams::apply("jetstream-kv-operator").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("status accepted by the generated schema");
    assert_eq!(patched.status.as_ref(), Some(&status));
    let c = patched
        .condition(ConditionType::SubjectsCovered)
        .expect("condition");
    assert_eq!(c.reason, "SubjectOverlap");

    // What `kubectl get jss` shows.
    let out = control_plane()
        .kubectl(&["get", "jss", "-n", &ns.name, "-o", "wide"], None)
        .expect("kubectl get jss");
    assert!(out.contains("STREAM"), "{out}");
    assert!(out.contains("EVENTS"), "{out}");
    assert!(out.contains("SUBJECTS"), "{out}");
    assert!(out.contains("DEADLETTERS"), "{out}");
    assert!(out.contains("EVENTS_deadletter"), "{out}");
}

fn owner() -> &'static str {
    "shop/events"
}

async fn others(js: &jetstream::Context, own: &str) -> Vec<OtherStream> {
    use futures::TryStreamExt as _;
    let mut out = Vec::new();
    let mut streams = js.streams();
    while let Some(info) = streams.try_next().await.expect("list streams") {
        if info.config.name != own {
            out.push(OtherStream {
                name: info.config.name.clone(),
                subjects: info.config.subjects.clone(),
            });
        }
    }
    out
}

async fn live(js: &jetstream::Context, name: &str) -> Option<stream::Config> {
    js.get_stream(name)
        .await
        .ok()
        .map(|s| s.cached_info().config.clone())
}

/// A nats-server of the test's own with someone else's stream (AUDIT, `audit.>`) and a KV bucket
/// (`cart`, `$KV.cart.>`).
async fn server_with_others() -> (support::nats::NatsServer, jetstream::Context) {
    let server = support::nats::NatsServer::start();
    let js = support::jetstream(&server.url()).await;
    js.create_stream(stream::Config {
        name: "AUDIT".into(),
        subjects: vec!["audit.>".into()],
        ..Default::default()
    })
    .await
    .expect("foreign stream");
    js.create_key_value(jetstream::kv::Config {
        bucket: "cart".into(),
        ..Default::default()
    })
    .await
    .expect("bucket");
    (server, js)
}

#[tokio::test]
async fn every_plan_is_one_nats_server_accepts_and_every_refusal_one_it_refuses() {
    let (server, js) = server_with_others().await;
    let api_errors = || server.jsz()["api"]["errors"].as_u64().unwrap_or_default();

    let settings = stream_settings(&BTreeMap::from([(
        SUBJECTS_ANNOTATION.to_string(),
        "orders.>".to_string(),
    )]))
    .unwrap();
    let topics: Vec<_> = [Subscription::new("shop", "a", "events", "payments"), {
        let mut s = Subscription::new("shop", "b", "events", "orders.new");
        s.spec.dead_letter_topic = "poison".into();
        s
    }]
    .iter()
    .flat_map(Subscription::topics)
    .collect();
    let subjects = derive_subjects(&settings.subjects, &topics, None).unwrap();
    assert_eq!(subjects.subjects, ["orders.>", "payments"]);
    assert_eq!(subjects.dead_letters, ["poison"]);

    // Absent: created, with Dapr's defaults.
    let d = Desired {
        stream: "EVENTS",
        subjects: &subjects.subjects,
        owner: owner(),
        settings: &settings,
        role: Role::Topics,
    };
    let StreamPlan::Create(config) = plan(&d, None, &others(&js, "EVENTS").await, None, false)
    else {
        panic!("expected a create");
    };
    js.create_stream(*config).await.expect("created as planned");
    let created = live(&js, "EVENTS").await.expect("stream exists");
    assert_eq!(created.retention, stream::RetentionPolicy::Limits);
    assert_eq!(created.discard, stream::DiscardPolicy::Old);
    assert_eq!(created.duplicate_window.as_secs(), 120);
    // The dead-letter topics: a stream of their own, planned the same way, next to it.
    let dead = Desired {
        stream: "EVENTS_deadletter",
        subjects: &subjects.dead_letters,
        role: Role::DeadLetters,
        ..d
    };
    let StreamPlan::Create(config) = plan(
        &dead,
        None,
        &others(&js, "EVENTS_deadletter").await,
        None,
        false,
    ) else {
        panic!("expected a create");
    };
    js.create_stream(*config).await.expect("created as planned");
    let dead_created = live(&js, "EVENTS_deadletter").await.expect("exists");
    assert_eq!(dead_created.subjects, ["poison"]);
    assert_eq!(dead_created.duplicate_window.as_secs(), 120);
    // Each subject resolves to exactly its stream, as daprd looks it up.
    for (subject, stream) in [
        ("orders.new", "EVENTS"),
        ("payments", "EVENTS"),
        ("poison", "EVENTS_deadletter"),
    ] {
        let found = js.stream_by_subject(subject).await.expect("lookup");
        assert_eq!(found, stream, "{subject}");
    }
    // What daprd does with a failed message: publishes it to the dead-letter topic with the
    // same Nats-Msg-Id. The dead-letter stream stores it (the topics' stream would not).
    let with_id = |subject: &str| {
        let js = js.clone();
        let subject = subject.to_string();
        async move {
            js.send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .message_id("cloudevent-1")
                    .payload("m".into()),
            )
            .await
            .expect("publish")
            .await
            .expect("ack")
        }
    };
    assert!(!with_id("payments").await.duplicate);
    assert!(
        !with_id("poison").await.duplicate,
        "the dead letter is stored"
    );
    assert!(
        with_id("payments").await.duplicate,
        "in one stream it would be a duplicate"
    );
    // Publishing works on each subject daprd will use.
    for subject in ["orders.new", "payments", "poison"] {
        js.publish(subject, "m".into())
            .await
            .expect("publish")
            .await
            .unwrap_or_else(|e| panic!("stored on {subject}: {e}"));
    }
    let errors_before = api_errors();

    // In sync: nothing to send.
    let others_now = others(&js, "EVENTS").await;
    assert_eq!(
        plan(&d, Some(&created), &others_now, Some(true), false),
        StreamPlan::InSync { managed: true }
    );

    // A new Subscription: its subject is added, the old ones kept.
    let more: Vec<String> = [subjects.subjects.clone(), vec!["refunds".into()]].concat();
    let d_more = Desired {
        subjects: &more,
        ..d
    };
    let StreamPlan::Update { config, added, .. } =
        plan(&d_more, Some(&created), &others_now, Some(true), false)
    else {
        panic!("expected an update");
    };
    assert_eq!(added, ["refunds"]);
    js.update_stream(*config).await.expect("updated as planned");
    let updated = live(&js, "EVENTS").await.unwrap();
    assert_eq!(updated.subjects, ["orders.>", "payments", "refunds"]);

    // Refusals, decided before anything is sent.
    let blocked_reason = |p: StreamPlan| match p {
        StreamPlan::Blocked { reason, .. } => {
            use jetstream_kv_operator::failure::Failure as _;
            reason.reason()
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    let overlapping: Vec<String> = [more.clone(), vec!["audit.login".into()]].concat();
    let with_bucket: Vec<String> = [more.clone(), vec!["$KV.cart.k".into()]].concat();
    for (subjects, reason) in [
        (&overlapping, "SubjectOverlap"),
        (&with_bucket, "SubjectOverlap"),
    ] {
        let d = Desired { subjects, ..d };
        assert_eq!(
            blocked_reason(plan(&d, Some(&updated), &others_now, Some(true), false)),
            reason
        );
    }
    let memory = stream_settings(&BTreeMap::from([(
        STORAGE_ANNOTATION.to_string(),
        "memory".to_string(),
    )]))
    .unwrap();
    let d_memory = Desired {
        subjects: &more,
        settings: &memory,
        ..d
    };
    assert_eq!(
        blocked_reason(plan(
            &d_memory,
            Some(&updated),
            &others_now,
            Some(true),
            false
        )),
        "ImmutableFieldChanged"
    );
    // A stream the operator did not create is verified, never changed.
    let foreign = live(&js, "AUDIT").await.unwrap();
    let d_foreign = Desired {
        stream: "AUDIT",
        subjects: &more,
        ..d
    };
    assert_eq!(
        blocked_reason(plan(
            &d_foreign,
            Some(&foreign),
            &others(&js, "AUDIT").await,
            None,
            false
        )),
        "SubjectOverlap"
    );
    // `plan` is pure: that the operator sends none of these refusals is shown with the operator
    // running, in `what_nats_would_refuse_is_refused_first_each_with_its_reason_and_nothing_changes`.
    // Here: the server would have refused them (its own error counter moves), so the overlap
    // check matches the server's.
    let mut refused = updated.clone();
    refused.subjects.push("audit.login".into());
    let err = js
        .update_stream(refused)
        .await
        .expect_err("overlap refused");
    assert!(err.to_string().contains("overlap"), "{err}");
    let mut refused = updated.clone();
    refused.subjects.push("$KV.cart.k".into());
    js.update_stream(refused)
        .await
        .expect_err("bucket overlap refused");
    assert_eq!(
        api_errors(),
        errors_before + 2,
        "the server counted both refusals"
    );
}

// ---------------------------------------------------------------------------------------------
// The operator provisioning streams for pubsub.jetstream Components, on the real servers.

/// A `pubsub.jetstream` Component manifest with an inline `natsURL`.
fn pubsub_component(ns: &str, name: &str, url: &str) -> support::ComponentManifest {
    support::ComponentManifest::new(ns, name)
        .type_("pubsub.jetstream")
        .item("natsURL", url)
}

/// Creates a declarative Subscription.
async fn subscribe(
    client: &kube::Client,
    ns: &str,
    name: &str,
    pubsub: &str,
    topic: &str,
    dead_letter: Option<&str>,
) {
    let mut s = Subscription::new(ns, name, pubsub, topic);
    if let Some(d) = dead_letter {
        s.spec.dead_letter_topic = d.into();
    }
    Api::<Subscription>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .expect("create the Subscription");
}

/// Waits until the JetStreamStream's Ready condition has `status` and `reason`.
async fn wait_ready(
    client: &kube::Client,
    ns: &str,
    name: &str,
    status: &str,
    reason: &str,
) -> JetStreamStream {
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), ns);
    support::eventually(
        std::time::Duration::from_secs(60),
        &format!("jss/{name} in {ns} to have Ready={status} reason {reason}"),
        || async {
            let jss = api.get_opt(name).await.ok().flatten()?;
            let c = jss.condition(ConditionType::Ready)?;
            (c.status == status && c.reason == reason).then_some(jss)
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                support::describe(ns, "jss", name),
                support::operator().log_tail()
            )
        },
    )
    .await
}

/// Waits until the JetStreamStream is Ready, managed, with its dead-letter stream.
async fn wait_managed_with_dead_letters(
    api: &Api<JetStreamStream>,
    ns: &str,
    name: &str,
) -> JetStreamStream {
    support::eventually(
        std::time::Duration::from_secs(60),
        &format!("jss/{name} Ready with its dead-letter stream"),
        || async {
            let jss = api.get_opt(name).await.ok().flatten()?;
            let ready = jss.condition(ConditionType::Ready)?;
            (ready.reason == "StreamManaged" && jss.status.as_ref()?.dead_letter_stream.is_some())
                .then_some(jss)
        },
        async || support::describe(ns, "jss", name),
    )
    .await
}

/// The stream's configuration as NATS reports it; None when it does not exist.
async fn stream_config(js: &jetstream::Context, name: &str) -> Option<serde_json::Value> {
    let mut stream = js.get_stream(name).await.ok()?;
    let info = stream.info().await.ok()?;
    Some(serde_json::to_value(&info.config).expect("stream config as JSON"))
}

#[tokio::test]
async fn a_component_and_its_subscriptions_get_a_stream_that_grows_with_them_and_outlives_it() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-streams").await;
    let url = support::nats().url();
    let js = support::jetstream(&url).await;
    // A value holding {namespace}: daprd puts the namespace before every topic, no separator.
    control_plane().apply(
        &pubsub_component(&ns.name, "events", &url)
            .item("consumerID", "{namespace}")
            .yaml(),
    );
    subscribe(&client, &ns.name, "orders", "events", "orders", None).await;
    subscribe(
        &client,
        &ns.name,
        "payments",
        "events",
        "payments",
        Some("poison"),
    )
    .await;
    // Another Component's Subscription: not this stream's.
    subscribe(&client, &ns.name, "audit", "other", "audit", None).await;

    let stream = format!("{}_events", ns.name);
    let p = |t: &str| format!("{}{t}", ns.name);
    // Ready with both Subscriptions seen: three topics, the dead-letter one in its stream.
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    let jss = support::eventually(
        std::time::Duration::from_secs(60),
        "jss/events Ready with the three topics covered",
        || async {
            let jss = api.get_opt("events").await.ok().flatten()?;
            let ready = jss.condition(ConditionType::Ready)?.reason == "StreamManaged";
            let topics = &jss.status.as_ref()?.topics;
            (ready && topics.len() == 3 && topics.iter().all(|t| t.covered)).then_some(jss)
        },
        async || support::describe(&ns.name, "jss", "events"),
    )
    .await;
    assert_eq!(jss.spec.stream.as_deref(), Some(stream.as_str()));
    assert_eq!(jss.spec.topic_prefix.as_deref(), Some(ns.name.as_str()));
    let created = live(&js, &stream)
        .await
        .expect("the stream exists on the server");
    let mut subjects = created.subjects.clone();
    subjects.sort();
    assert_eq!(subjects, [p("orders"), p("payments")]);
    assert_eq!(created.retention, stream::RetentionPolicy::Limits);
    assert_eq!(created.storage, stream::StorageType::File);
    assert_eq!(created.discard, stream::DiscardPolicy::Old);
    assert_eq!(created.duplicate_window.as_secs(), 120);
    // The dead-letter topic: in a stream of its own, with the same settings.
    let dead_letters = format!("{stream}_deadletter");
    let dead = live(&js, &dead_letters)
        .await
        .expect("the dead-letter stream exists on the server");
    assert_eq!(dead.subjects, [p("poison")]);
    assert_eq!(
        (
            dead.retention,
            dead.storage,
            dead.discard,
            dead.duplicate_window
        ),
        (
            created.retention,
            created.storage,
            created.discard,
            created.duplicate_window
        )
    );
    assert_eq!(
        (dead.max_age, dead.max_bytes, dead.num_replicas),
        (created.max_age, created.max_bytes, created.num_replicas)
    );
    // Each subject resolves to exactly the intended stream, as daprd looks it up.
    for (subject, want) in [
        (p("orders"), &stream),
        (p("payments"), &stream),
        (p("poison"), &dead_letters),
    ] {
        let found = js
            .stream_by_subject(subject.as_str())
            .await
            .expect("lookup");
        assert_eq!(&found, want, "{subject}");
    }
    assert_eq!(
        jss.spec.dead_letter_stream.as_deref(),
        Some(dead_letters.as_str())
    );
    assert_eq!(jss.spec.dead_letter_subjects, [p("poison")]);
    let status = jss.status.as_ref().expect("status");
    let shown = status
        .dead_letter_stream
        .as_ref()
        .expect("status.deadLetterStream");
    assert_eq!(
        (shown.name.as_str(), shown.managed, shown.subjects.clone()),
        (dead_letters.as_str(), true, vec![p("poison")])
    );
    let topics: Vec<(&str, &str, Option<&str>, bool)> = status
        .topics
        .iter()
        .map(|t| {
            (
                t.topic.as_str(),
                t.source.as_str(),
                t.stream.as_deref(),
                t.covered,
            )
        })
        .collect();
    assert!(
        topics.contains(&(
            "poison",
            "dead-letter topic of Subscription payments",
            Some(dead_letters.as_str()),
            true
        )),
        "{topics:?}"
    );
    let ready = jss.condition(ConditionType::Ready).expect("Ready");
    assert!(
        ready
            .message
            .contains(&format!("dead letters go to stream {dead_letters}")),
        "{}",
        ready.message
    );
    let covered = jss
        .condition(ConditionType::SubjectsCovered)
        .expect("SubjectsCovered");
    assert!(
        covered
            .message
            .contains("programmatic (/dapr/subscribe) and streaming subscriptions"),
        "the status says what the operator cannot see: {}",
        covered.message
    );
    // The Component carries the summary for tools that only look at it.
    let component = support::describe(&ns.name, "components.dapr.io", "events");
    assert!(
        component.contains("jetstreamkv.io/ready: \"true\""),
        "{component}"
    );

    // A new Subscription: its subject is added, none removed.
    subscribe(&client, &ns.name, "refunds", "events", "refunds", None).await;
    support::eventually(
        std::time::Duration::from_secs(60),
        "the new Subscription's subject on the stream",
        || async {
            let config = live(&js, &stream).await?;
            (config.subjects.contains(&p("refunds")) && config.subjects.len() == 3).then_some(())
        },
        async || support::describe(&ns.name, "jss", "events"),
    )
    .await;

    // Deleted with the default deletion policy: the stream and its messages stay.
    js.publish(p("orders"), "kept".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    control_plane()
        .kubectl(
            &[
                "-n",
                &ns.name,
                "delete",
                "component",
                "events",
                "--wait=true",
            ],
            None,
        )
        .expect("delete the Component");
    tokio::time::sleep(support::RESYNC + std::time::Duration::from_secs(1)).await;
    let mut kept = js.get_stream(&stream).await.expect("the stream is kept");
    assert_eq!(kept.info().await.expect("info").state.messages, 1);
    assert!(
        live(&js, &dead_letters).await.is_some(),
        "the dead-letter stream is kept"
    );
}

#[tokio::test]
async fn what_nats_would_refuse_is_refused_first_each_with_its_reason_and_nothing_changes() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-refusals").await;
    // A server of this test's own: every stream on it is known.
    let (server, js) = server_with_others().await;
    let url = server.url();
    let api_errors = || server.jsz()["api"]["errors"].as_u64().unwrap_or_default();
    js.create_stream(stream::Config {
        name: "FOREIGN".into(),
        subjects: vec!["shipping".into()],
        ..Default::default()
    })
    .await
    .expect("a stream made by someone else");
    let before: BTreeMap<&str, serde_json::Value> = [
        ("AUDIT", stream_config(&js, "AUDIT").await.expect("AUDIT")),
        (
            "KV_cart",
            stream_config(&js, "KV_cart").await.expect("KV_cart"),
        ),
        (
            "FOREIGN",
            stream_config(&js, "FOREIGN").await.expect("FOREIGN"),
        ),
    ]
    .into();
    // The operator asks about absent streams by listing, so any error from here on is a
    // request the server refused.
    let errors_before = api_errors();

    // An overlap with another stream, and with a bucket's $KV.cart.> subjects.
    control_plane().apply(
        &pubsub_component(&ns.name, "overlap", &url)
            .annotation(SUBJECTS_ANNOTATION, "audit.login")
            .yaml(),
    );
    control_plane().apply(
        &pubsub_component(&ns.name, "bucket", &url)
            .annotation(SUBJECTS_ANNOTATION, "*.cart.>")
            .yaml(),
    );
    // WorkQueue retention breaks Dapr's fan-out.
    control_plane().apply(
        &pubsub_component(&ns.name, "queue", &url)
            .annotation(SUBJECTS_ANNOTATION, "jobs")
            .annotation("jetstreamkv.io/retention", "workqueue")
            .yaml(),
    );
    // A stream someone else made, which does not cover a Subscription's topic.
    control_plane().apply(
        &pubsub_component(&ns.name, "foreign", &url)
            .item("streamName", "FOREIGN")
            .yaml(),
    );
    subscribe(&client, &ns.name, "returns", "foreign", "returns", None).await;

    let jss = wait_ready(&client, &ns.name, "overlap", "False", "SubjectOverlap").await;
    let message = &jss.condition(ConditionType::Ready).expect("Ready").message;
    assert!(
        message.contains("audit.login overlaps audit.> of stream AUDIT"),
        "{message}"
    );
    assert!(
        jss.condition(ConditionType::Stalled)
            .is_some_and(|c| c.status == "True")
    );
    // A leading wildcard would also cover the bucket's $KV.cart.> (and every reply under
    // _INBOX.): refused as a subject, before any overlap is looked for.
    let jss = wait_ready(&client, &ns.name, "bucket", "False", "InvalidSubject").await;
    let message = &jss.condition(ConditionType::Ready).expect("Ready").message;
    assert!(message.contains("wildcard as its first token"), "{message}");
    wait_ready(&client, &ns.name, "queue", "False", "WorkQueueRefused").await;
    let jss = wait_ready(&client, &ns.name, "foreign", "False", "SubjectsNotCovered").await;
    let returns = jss
        .status
        .as_ref()
        .and_then(|s| s.topics.iter().find(|t| t.topic == "returns"))
        .expect("the topic is listed");
    assert!(!returns.covered, "{returns:?}");
    // Listed, not asked for by name: asking for an absent stream is an error response.
    let names: Vec<String> = others(&js, "").await.into_iter().map(|o| o.name).collect();
    for name in ["overlap", "bucket", "queue"] {
        let stream = format!("{}_{name}", ns.name);
        assert!(!names.contains(&stream), "{stream} was created: {names:?}");
    }

    // An immutable change of a stream the operator manages: refused before anything is sent.
    control_plane().apply(
        &pubsub_component(&ns.name, "events", &url)
            .annotation(SUBJECTS_ANNOTATION, "orders")
            .yaml(),
    );
    wait_ready(&client, &ns.name, "events", "True", "StreamManaged").await;
    let stream = format!("{}_events", ns.name);
    let managed = stream_config(&js, &stream).await.expect("created");
    control_plane().apply(
        &pubsub_component(&ns.name, "events", &url)
            .annotation(SUBJECTS_ANNOTATION, "orders")
            .annotation(STORAGE_ANNOTATION, "memory")
            .yaml(),
    );
    let jss = wait_ready(
        &client,
        &ns.name,
        "events",
        "False",
        "ImmutableFieldChanged",
    )
    .await;
    let message = &jss.condition(ConditionType::Ready).expect("Ready").message;
    assert!(message.contains("storage"), "{message}");

    // Nothing the server would refuse was sent, and no stream changed.
    assert_eq!(
        api_errors(),
        errors_before,
        "a refused request reached the server"
    );
    assert_eq!(stream_config(&js, &stream).await.as_ref(), Some(&managed));
    for (name, config) in &before {
        assert_eq!(
            stream_config(&js, name).await.as_ref(),
            Some(config),
            "{name} changed"
        );
    }
}

#[tokio::test]
async fn a_nats_url_from_a_secret_is_never_shown() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-secret-url").await;
    let url = support::nats().url();
    let host = url.trim_start_matches("nats://").to_owned();
    let secret = support::fixtures::secret(
        &ns.name,
        "nats",
        &[("url", &format!("nats://dapr:hunter2@{host}"))],
    );
    control_plane().apply(&serde_yaml::to_string(&secret).expect("yaml"));
    let topic = format!("secret{}", support::random_suffix());
    control_plane().apply(
        &support::ComponentManifest::new(&ns.name, "events")
            .type_("pubsub.jetstream")
            .item_from_secret("natsURL", "nats", Some("url"))
            .annotation(SUBJECTS_ANNOTATION, &topic)
            .yaml(),
    );
    let jss = wait_ready(&client, &ns.name, "events", "True", "StreamManaged").await;
    assert_eq!(jss.spec.servers, ["<Secret nats, key url>"]);
    let shown = format!(
        "{}\n{}",
        support::describe(&ns.name, "jss", "events"),
        support::describe(&ns.name, "components.dapr.io", "events")
    );
    for secret in ["hunter2", host.as_str()] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
}

#[tokio::test]
async fn at_rest_nothing_is_written_and_deletion_policy_delete_deletes_only_its_own_stream() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-delete").await;
    let url = support::nats().url();
    let js = support::jetstream(&url).await;
    let topic = format!("deleted{}", support::random_suffix());
    control_plane().apply(
        &pubsub_component(&ns.name, "events", &url)
            .annotation(SUBJECTS_ANNOTATION, &topic)
            .annotation("jetstreamkv.io/deletion-policy", "delete")
            .yaml(),
    );
    let dead_topic = format!("{topic}dead");
    subscribe(
        &client,
        &ns.name,
        "failing",
        "events",
        &format!("{topic}in"),
        Some(&dead_topic),
    )
    .await;
    let stream = format!("{}_events", ns.name);
    let dead_letters = format!("{stream}_deadletter");
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    let jss = wait_managed_with_dead_letters(&api, &ns.name, "events").await;
    assert!(live(&js, &stream).await.is_some(), "created");
    assert_eq!(
        live(&js, &dead_letters).await.map(|c| c.subjects),
        Some(vec![dead_topic.clone()]),
        "the dead-letter stream created"
    );

    // Two resyncs later, nothing was written again.
    tokio::time::sleep(support::RESYNC * 2 + std::time::Duration::from_secs(1)).await;
    let again = api.get("events").await.expect("get");
    assert_eq!(
        again.metadata.resource_version, jss.metadata.resource_version,
        "a resync without change wrote the JetStreamStream"
    );
    // Deleted by hand: written again (the operator reads it from its cache, not the API).
    api.delete("events", &Default::default())
        .await
        .expect("delete the JetStreamStream");
    support::eventually(
        std::time::Duration::from_secs(60),
        "jss/events written again after its deletion",
        || async {
            let jss = api.get_opt("events").await.ok().flatten()?;
            (jss.metadata.uid != again.metadata.uid
                && jss.condition(ConditionType::Ready)?.status == "True")
                .then_some(())
        },
        async || support::describe(&ns.name, "jss", "events"),
    )
    .await;

    // A second Component naming the same stream only verifies it, and its deletion keeps it.
    control_plane().apply(
        &pubsub_component(&ns.name, "reader", &url)
            .item("streamName", &stream)
            .annotation("jetstreamkv.io/deletion-policy", "delete")
            .yaml(),
    );
    wait_ready(&client, &ns.name, "reader", "True", "StreamVerified").await;
    control_plane()
        .kubectl(
            &[
                "-n",
                &ns.name,
                "delete",
                "component",
                "reader",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        )
        .expect("the Component's deletion finishes");
    assert!(
        live(&js, &stream).await.is_some(),
        "kept: made for another Component"
    );
    assert!(
        live(&js, &dead_letters).await.is_some(),
        "its dead-letter stream kept too"
    );

    // Its own Component's deletion deletes it.
    control_plane()
        .kubectl(
            &[
                "-n",
                &ns.name,
                "delete",
                "component",
                "events",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        )
        .expect("the Component's deletion finishes");
    let names: Vec<String> = others(&js, "").await.into_iter().map(|o| o.name).collect();
    assert!(!names.contains(&stream), "{stream} deleted: {names:?}");
    assert!(
        !names.contains(&dead_letters),
        "{dead_letters} deleted: {names:?}"
    );
    let events = support::events_of(&ns.name, "events").await;
    assert!(
        events
            .iter()
            .any(|(reason, message)| reason == "StreamDeleted"
                && message.contains(&format!("{stream} and {dead_letters}"))),
        "{events:?}"
    );
}

#[tokio::test]
async fn with_stream_name_a_subscribed_dead_letter_topic_is_reported_and_its_dead_letters_kept() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-named-dead").await;
    let url = support::nats().url();
    let js = support::jetstream(&url).await;
    let sfx = support::random_suffix();
    let stream = format!("NAMED{sfx}");
    control_plane().apply(
        &pubsub_component(&ns.name, "events", &url)
            .item("streamName", &stream)
            .yaml(),
    );
    let (pay, poison) = (format!("pay{sfx}"), format!("poison{sfx}"));
    subscribe(&client, &ns.name, "payments", "events", &pay, Some(&poison)).await;
    // Someone subscribes to the dead letters: with streamName, daprd would bind that
    // subscription to the named stream, where no dead letter ever arrives.
    subscribe(&client, &ns.name, "poison", "events", &poison, None).await;

    let jss = wait_ready(
        &client,
        &ns.name,
        "events",
        "False",
        "DeadLetterSubscriptionUnreachable",
    )
    .await;
    let message = &jss.condition(ConditionType::Ready).expect("Ready").message;
    for said in [
        poison.as_str(),
        "remove streamName",
        &format!("{stream}_deadletter"),
    ] {
        assert!(message.contains(said), "{said} in: {message}");
    }
    let covered = jss
        .condition(ConditionType::SubjectsCovered)
        .expect("SubjectsCovered");
    assert_eq!(covered.status, "False");
    // The dead letters are kept all the same: their own stream holds the subject.
    assert_eq!(
        live(&js, &stream).await.map(|c| c.subjects),
        Some(vec![pay.clone()])
    );
    assert_eq!(
        live(&js, &format!("{stream}_deadletter"))
            .await
            .map(|c| c.subjects),
        Some(vec![poison.clone()])
    );
    let events = support::events_of(&ns.name, "events").await;
    assert!(
        events
            .iter()
            .any(|(reason, _)| reason == "DeadLetterSubscriptionUnreachable"),
        "a Warning Event says it: {events:?}"
    );
}

/// Reserved subjects and leading wildcards (issue 26): as the stream annotation they are
/// refused with `InvalidSubject` and no stream is made; as a Subscription's topic the stream is
/// made without them and the topic is reported as not covered. Judged by nats-server's own list
/// of streams and their subjects; the positive control is the same Component shape with a plain
/// subject, whose stream the same listing sees.
#[tokio::test]
async fn reserved_subjects_and_leading_wildcards_are_refused_and_nothing_captures_them() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-reserved").await;
    let (server, js) = server_with_others().await;
    let url = server.url();
    let refused = ["_INBOX.>", "*.>", "*.API.>", "$SRV.>", "$MQTT.>", ">"];
    for (i, subject) in refused.iter().enumerate() {
        control_plane().apply(
            &pubsub_component(&ns.name, &format!("reserved-{i}"), &url)
                .annotation(SUBJECTS_ANNOTATION, subject)
                .yaml(),
        );
    }
    // The positive control, and a topic daprd would subscribe to on _INBOX.
    control_plane().apply(
        &pubsub_component(&ns.name, "plain", &url)
            .annotation(SUBJECTS_ANNOTATION, "orders.>")
            .yaml(),
    );
    subscribe(&client, &ns.name, "replies", "plain", "_INBOX.>", None).await;

    for (i, subject) in refused.iter().enumerate() {
        let jss = wait_ready(
            &client,
            &ns.name,
            &format!("reserved-{i}"),
            "False",
            "InvalidSubject",
        )
        .await;
        let message = &jss.condition(ConditionType::Ready).expect("Ready").message;
        assert!(message.contains(subject), "{subject}: {message}");
    }
    let jss = support::eventually(
        std::time::Duration::from_secs(60),
        "the _INBOX.> topic reported as not covered",
        || async {
            let jss = Api::<JetStreamStream>::namespaced(client.clone(), &ns.name)
                .get_opt("plain")
                .await
                .ok()
                .flatten()?;
            let topic = jss
                .status
                .as_ref()?
                .topics
                .iter()
                .find(|t| t.topic == "_INBOX.>")?
                .clone();
            Some((jss, topic))
        },
        async || support::describe(&ns.name, "jss", "plain"),
    )
    .await;
    assert!(!jss.1.covered, "{:?}", jss.1);

    // What the server holds: the plain stream (the instrument sees a stream when one is made),
    // and no subject of any stream under a reserved token or a leading wildcard.
    let listed = others(&js, "").await;
    let plain = format!("{}_plain", ns.name);
    let subjects: Vec<&String> = listed.iter().flat_map(|o| o.subjects.iter()).collect();
    assert!(
        listed
            .iter()
            .any(|o| o.name == plain && o.subjects.contains(&"orders.>".to_string())),
        "the plain stream was not made: {listed:?}"
    );
    for subject in subjects {
        assert!(
            !(subject.starts_with("_INBOX")
                || subject.starts_with('*')
                || subject.starts_with('>')
                || subject.starts_with("$SRV")
                || subject.starts_with("$MQTT")),
            "a stream captures {subject}: {listed:?}"
        );
    }
    for i in 0..refused.len() {
        let name = format!("{}_reserved-{i}", ns.name);
        assert!(
            listed.iter().all(|o| o.name != name),
            "{name} was made: {listed:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_another_component_uses_in_any_namespace_is_kept_when_its_maker_is_deleted() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-shared").await;
    let elsewhere = TestNamespace::new(&client, "pubsub-shared-far").await;
    let url = support::nats().url();
    let js = support::jetstream(&url).await;
    let sfx = support::random_suffix();
    let (topic, poison) = (format!("orders{sfx}"), format!("poison{sfx}"));
    control_plane().apply(
        &pubsub_component(&ns.name, "maker", &url)
            .annotation("jetstreamkv.io/deletion-policy", "delete")
            .yaml(),
    );
    subscribe(&client, &ns.name, "orders", "maker", &topic, Some(&poison)).await;
    let stream = format!("{}_maker", ns.name);
    let dead_letters = format!("{stream}_deadletter");
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    wait_managed_with_dead_letters(&api, &ns.name, "maker").await;
    for n in 0..3 {
        js.publish(topic.clone(), format!("message {n}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    // Another Component of the namespace, and one of another namespace, bind the stream by
    // name: each says truthfully whose it is, naming the maker only within its namespace.
    control_plane().apply(
        &pubsub_component(&ns.name, "user", &url)
            .item("streamName", &stream)
            .yaml(),
    );
    let user = wait_ready(&client, &ns.name, "user", "True", "StreamVerified").await;
    let said = &user.condition(ConditionType::Ready).expect("Ready").message;
    assert!(
        said.contains("the operator made it for Component maker"),
        "{said}"
    );
    assert!(!said.contains("outside the operator"), "{said}");
    control_plane().apply(
        &pubsub_component(&elsewhere.name, "far", &url)
            .item("streamName", &stream)
            .yaml(),
    );
    let far = wait_ready(&client, &elsewhere.name, "far", "True", "StreamVerified").await;
    let said = &far.condition(ConditionType::Ready).expect("Ready").message;
    assert!(said.contains("a Component of another namespace"), "{said}");
    assert!(
        !said.contains("Component maker") && !said.contains(&format!("{}/maker", ns.name)),
        "{said}"
    );

    // The maker goes with deletion-policy delete: both streams, and their messages, stay.
    control_plane()
        .kubectl(
            &[
                "-n",
                &ns.name,
                "delete",
                "component",
                "maker",
                "--wait=true",
                "--timeout=60s",
            ],
            None,
        )
        .expect("the Component's deletion finishes");
    let mut kept = js.get_stream(&stream).await.expect("the stream is kept");
    let info = kept.info().await.expect("stream info");
    assert_eq!(info.state.messages, 3, "its messages are kept");
    assert!(
        live(&js, &dead_letters).await.is_some(),
        "the dead-letter stream is kept"
    );
    let events = support::events_of(&ns.name, "maker").await;
    assert!(
        events
            .iter()
            .any(|(reason, message)| reason == "StreamRetained"
                && message.contains(&format!("{}/user", ns.name))
                && message.contains("1 Component(s) in other namespaces")
                && !message.contains(&elsewhere.name)),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_type_change_either_way_removes_the_other_kinds_object_and_bucket_annotations_are_refused()
 {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-retype").await;
    let url = support::nats().url();
    let topic = format!("retyped{}", support::random_suffix());
    let bucket = format!("retyped{}", support::random_suffix());
    let pubsub = || pubsub_component(&ns.name, "c", &url).annotation(SUBJECTS_ANNOTATION, &topic);

    // A bucket's annotations on a pub/sub are refused by name, not ignored.
    control_plane().apply(
        &pubsub()
            .annotation("jetstreamkv.io/history", "5")
            .annotation("jetstreamkv.io/on-existing", "adopt")
            .yaml(),
    );
    let refused = wait_ready(&client, &ns.name, "c", "False", "InapplicableAnnotation").await;
    let said = &refused
        .condition(ConditionType::Ready)
        .expect("Ready")
        .message;
    assert!(
        said.contains("jetstreamkv.io/history, jetstreamkv.io/on-existing apply to state.jetstream Components only"),
        "{said}"
    );
    control_plane().apply(&pubsub().yaml());
    wait_ready(&client, &ns.name, "c", "True", "StreamManaged").await;

    // pub/sub -> state store: the JetStreamStream goes at once.
    let streams: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    control_plane().apply(&support::ComponentManifest::store(&ns.name, "c", &url, &bucket).yaml());
    support::wait_condition(&client, &ns.name, "c", "Ready", "True", "BucketManaged").await;
    support::eventually(
        std::time::Duration::from_secs(30),
        "jss/c removed after the type change",
        || async { streams.get_opt("c").await.ok()?.is_none().then_some(()) },
        async || support::describe(&ns.name, "jss", "c"),
    )
    .await;

    // state store -> pub/sub: the KeyValueBucket goes.
    let buckets: Api<jetstream_kv_operator::crd::KeyValueBucket> =
        Api::namespaced(client.clone(), &ns.name);
    control_plane().apply(&pubsub().yaml());
    wait_ready(&client, &ns.name, "c", "True", "StreamManaged").await;
    support::eventually(
        std::time::Duration::from_secs(30),
        "kvb/c removed after the type change",
        || async { buckets.get_opt("c").await.ok()?.is_none().then_some(()) },
        async || support::describe(&ns.name, "kvb", "c"),
    )
    .await;
}

#[tokio::test]
async fn a_stream_deletion_that_waits_for_nats_shows_in_the_jetstreamstream() {
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-pending").await;
    let mut server = support::nats::NatsServer::start();
    let url = server.url();
    let topic = format!("pending{}", support::random_suffix());
    control_plane().apply(
        &pubsub_component(&ns.name, "doomed", &url)
            .annotation(SUBJECTS_ANNOTATION, &topic)
            .annotation("jetstreamkv.io/deletion-policy", "delete")
            .yaml(),
    );
    wait_ready(&client, &ns.name, "doomed", "True", "StreamManaged").await;
    let components: Api<jetstream_kv_operator::dapr::Component> =
        Api::namespaced(client.clone(), &ns.name);
    support::eventually(
        std::time::Duration::from_secs(30),
        "the finalizer on the Component",
        || async {
            let c = components.get_opt("doomed").await.ok()??;
            (!c.metadata.finalizers.unwrap_or_default().is_empty()).then_some(())
        },
        async || support::describe(&ns.name, "component", "doomed"),
    )
    .await;

    server.stop();
    components
        .delete("doomed", &Default::default())
        .await
        .expect("delete");
    let jss = wait_ready(&client, &ns.name, "doomed", "False", "DeletionPending").await;
    let said = &jss.condition(ConditionType::Ready).expect("Ready").message;
    assert!(said.contains("its stream cannot be deleted yet"), "{said}");
    assert!(
        jss.status
            .as_ref()
            .and_then(|s| s.stream.as_ref())
            .is_some(),
        "the stream's last facts are kept"
    );

    server.start_again();
    support::eventually(
        std::time::Duration::from_secs(60),
        "the deletion to finish once NATS is back",
        || async {
            components
                .get_opt("doomed")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
        async || support::describe(&ns.name, "component", "doomed"),
    )
    .await;
    let js = support::jetstream(&url).await;
    assert!(
        live(&js, &format!("{}_doomed", ns.name)).await.is_none(),
        "the stream was deleted"
    );
}

/// Issue 26 (L3): what another tenant of the account wrote on the server (a stream's name and
/// subjects, a bucket's description) reaches a status or an Event only made fit to show: no
/// control characters (a terminal escape would repaint the screen of whoever runs `kubectl
/// describe`), each name or subject at most 128 characters, a description at most 1,024, at
/// most 1,000 live subjects of a stream made elsewhere. The server keeps the texts as written (checked): the operator is what cuts them.
#[tokio::test]
async fn another_tenants_text_reaches_status_only_made_fit_to_show() {
    const ESC: char = '\u{1b}';
    let client = support::client().await;
    support::operator();
    let ns = TestNamespace::new(&client, "pubsub-text").await;
    let server = support::nats::NatsServer::start();
    let url = server.url();
    let js = support::jetstream(&url).await;
    let long = "z".repeat(5_000);
    let evil_name = format!("EVIL{ESC}[2J{}", "N".repeat(150));
    let evil_subject = format!("orders.{ESC}[31m{long}");
    js.create_stream(stream::Config {
        name: evil_name.clone(),
        subjects: vec![evil_subject.clone()],
        ..Default::default()
    })
    .await
    .expect("another tenant's stream");
    let wide: Vec<String> = (0..1_500).map(|i| format!("wide.{i}")).collect();
    js.create_stream(stream::Config {
        name: "WIDE".into(),
        subjects: wide.clone(),
        ..Default::default()
    })
    .await
    .expect("a stream of 1,500 subjects made elsewhere");
    let description = format!("line one\nline two {ESC}[31m{}", "z".repeat(3_000));
    js.create_key_value(jetstream::kv::Config {
        bucket: "described".into(),
        description: description.clone(),
        ..Default::default()
    })
    .await
    .expect("a bucket made elsewhere");
    // The server keeps each text as written.
    assert_eq!(
        live(&js, &evil_name).await.expect("EVIL").subjects,
        std::slice::from_ref(&evil_subject)
    );
    assert_eq!(
        live(&js, "KV_described")
            .await
            .expect("KV_described")
            .description,
        Some(description.clone())
    );

    control_plane().apply(
        &pubsub_component(&ns.name, "overlap", &url)
            .annotation(SUBJECTS_ANNOTATION, "orders.>")
            .yaml(),
    );
    control_plane().apply(
        &pubsub_component(&ns.name, "wide", &url)
            .item("streamName", "WIDE")
            .annotation(SUBJECTS_ANNOTATION, "wide.1")
            .yaml(),
    );
    control_plane()
        .apply(&support::ComponentManifest::store(&ns.name, "described", &url, "described").yaml());

    let overlap = wait_ready(&client, &ns.name, "overlap", "False", "SubjectOverlap").await;
    let message = &overlap
        .condition(ConditionType::Ready)
        .expect("Ready")
        .message;
    assert!(
        message.contains("orders.> overlaps orders.[31mzzz"),
        "{message}"
    );
    assert!(message.contains("of stream EVIL[2JNNN"), "{message}");
    assert!(!message.contains(&"z".repeat(128)), "cut at 128: {message}");
    let wide_jss = wait_ready(&client, &ns.name, "wide", "True", "StreamVerified").await;
    let facts = wide_jss
        .status
        .as_ref()
        .and_then(|s| s.stream.as_ref())
        .expect("the stream's facts");
    assert_eq!(
        facts.subjects,
        wide[..1_000],
        "the first 1,000 subjects shown"
    );
    support::wait_condition(
        &client,
        &ns.name,
        "described",
        "Ready",
        "True",
        "BucketVerified",
    )
    .await;
    let buckets: Api<jetstream_kv_operator::crd::KeyValueBucket> =
        Api::namespaced(client.clone(), &ns.name);
    let kvb = buckets.get("described").await.expect("kvb");
    let shown =
        serde_json::to_value(&kvb.status).expect("status")["bucket"]["config"]["description"]
            .as_str()
            .expect("the description is shown")
            .to_owned();
    assert!(shown.starts_with("line oneline two [31mzzz"), "{shown}");
    assert_eq!(
        shown.chars().count(),
        1_024,
        "a description is shown up to 1,024 characters"
    );

    // Nothing of the operator's, status or Event, carries a control character or a text of the
    // server's longer than shown.
    let statuses = [
        serde_json::to_string(&overlap.status).expect("json"),
        serde_json::to_string(&kvb.status).expect("json"),
        serde_json::to_string(&wide_jss.status).expect("json"),
        control_plane()
            .kubectl(&["get", "events", "-n", &ns.name, "-o", "json"], None)
            .expect("events"),
    ];
    for text in statuses {
        assert!(!text.contains(ESC) && !text.contains("\\u001b"), "{text}");
        if let Some(at) = text.find(&"z".repeat(1_025)) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(300)
                .map_or(0, |(i, _)| i);
            panic!("a text longer than shown: ...{}", &text[from..at + 10]);
        }
    }
}

/// Issue 24's benchmark: with a listing of the account's streams at every reconcile, 1,000
/// pub/sub Components beside 1,000 buckets spent the workers on resyncs that each read 1,400
/// streams, and new Components waited minutes. At rest a Component now reads its streams and
/// lists nothing; a new one lists the account's streams to check its creates.
/// Instrument: a nats-server of the test's own, whose audit advisories record every JetStream
/// request (the operator's counters are not consulted); it sees the resyncs' reads.
#[tokio::test]
async fn at_rest_a_component_reads_its_streams_and_lists_nothing() {
    let client = support::client().await;
    support::operator();
    let server = support::nats::NatsServer::start();
    let url = server.url();
    let ns = TestNamespace::new(&client, "pubsub-rest").await;
    let (audits, _watcher) = Advisories::start(&url).await;
    let topic = format!("rest{}", support::random_suffix());
    control_plane().apply(
        &pubsub_component(&ns.name, "events", &url)
            .annotation(SUBJECTS_ANNOTATION, &topic)
            .yaml(),
    );
    subscribe(
        &client,
        &ns.name,
        "failing",
        "events",
        &format!("{topic}in"),
        Some(&format!("{topic}dead")),
    )
    .await;
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    wait_managed_with_dead_letters(&api, &ns.name, "events").await;
    let verbs =
        |seen: &[(String, String)], verb: &str| seen.iter().filter(|(v, _)| v == verb).count();
    // The advisories trail the answers: wait for both creates to be audited.
    support::eventually(
        std::time::Duration::from_secs(10),
        "both streams' creates audited",
        || async { (verbs(&audits.all(), "CREATE") >= 2).then_some(()) },
        async || format!("{:?}", audits.all()),
    )
    .await;
    let made = audits.take();
    eprintln!("to Ready: {made:?}");
    assert!(
        verbs(&made, "CREATE") >= 2,
        "both streams created: {made:?}"
    );
    assert!(verbs(&made, "LIST") >= 1, "a create checked: {made:?}");

    tokio::time::sleep(support::RESYNC * 3).await;
    let resting = audits.take();
    eprintln!("three resyncs at rest: {resting:?}");
    assert!(
        verbs(&resting, "INFO") >= 2,
        "the instrument saw no resync's read: {resting:?}"
    );
    assert_eq!(
        verbs(&resting, "LIST") + verbs(&resting, "NAMES"),
        0,
        "a Component at rest listed the account's streams: {resting:?}"
    );
}
