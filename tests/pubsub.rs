//! Streams for Dapr `pubsub.jetstream` against the real servers, before the reconciler runs them:
//! the Subscription and JetStreamStream CRDs on a real API server agree with the Rust types, and
//! every stream plan is one a real nats-server accepts; what it would refuse is refused by the
//! plan first, with nothing sent.

mod support;

use std::collections::BTreeMap;

use async_nats::jetstream::{self, stream};
use jetstream_kv_operator::crd::ConditionType;
use jetstream_kv_operator::pubsub::resource::{
    JetStreamStreamSpec, JetStreamStreamStatus, TopicStatus,
};
use jetstream_kv_operator::pubsub::stream::{
    Desired, OtherStream, STORAGE_ANNOTATION, SUBJECTS_ANNOTATION, plan, stream_settings,
};
use jetstream_kv_operator::pubsub::{
    JetStreamStream, StreamPlan, Subscription, derive_subjects, pubsub_config,
};
use jetstream_kv_operator::secret_value::SecretValue;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
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
        [prefixed("orders"), prefixed("payments"), prefixed("poison")]
    );
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
        subjects: vec!["orders".into(), "poison".into()],
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
        topics: vec![TopicStatus {
            topic: "poison".into(),
            subject: "poison".into(),
            source: "dead-letter topic of Subscription payments".into(),
            covered: false,
            problem: Some("poison overlaps poison of stream OTHER".into()),
        }],
        stream: None,
    };
    let patch = serde_json::json!({
        "apiVersion": "jetstreamkv.io/v1alpha1",
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

#[tokio::test]
async fn every_plan_is_one_nats_server_accepts_and_refusals_send_nothing() {
    let server = support::nats::NatsServer::start();
    let js = support::jetstream(&server.url()).await;
    let api_errors = || server.jsz()["api"]["errors"].as_u64().unwrap_or_default();

    // Someone else's stream and a KV bucket on the same server.
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
    assert_eq!(subjects.subjects, ["orders.>", "payments", "poison"]);

    // Absent: created, with Dapr's defaults.
    let d = Desired {
        stream: "EVENTS",
        subjects: &subjects.subjects,
        owner: owner(),
        settings: &settings,
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
    assert_eq!(
        updated.subjects,
        ["orders.>", "payments", "poison", "refunds"]
    );

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
    assert_eq!(
        api_errors(),
        errors_before,
        "nothing was sent that the server refused"
    );

    // And the server would have refused them: the overlap check matches the server's.
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
}
