//! The stream settings of a `pubsub.jetstream` Component (issue 28), against the real
//! nats-server: each one set by annotation and read back from the server, changed in place,
//! and refused before anything is sent where the change would lose messages (without
//! `allow-data-loss`) or NATS cannot make it. What reaches NATS is measured by nats-server's own
//! API audit advisories.

use crate::support;

use std::time::Duration;

use async_nats::jetstream::stream;
use support::advisories::Advisories;
use support::{ComponentManifest, TestNamespace, control_plane, nats, operator};

async fn live(stream: &str) -> stream::Config {
    support::jetstream(&nats().url())
        .await
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"))
        .info()
        .await
        .expect("stream info")
        .config
        .clone()
}

fn component(ns: &str, subject: &str, settings: &[(&str, &str)]) -> String {
    ComponentManifest::new(ns, "events")
        .type_("pubsub.jetstream")
        .item("natsURL", &nats().url())
        .annotation("jetstreamkv.io/subjects", subject)
        .settings(settings)
        .yaml()
}

/// The Ready message once the JetStreamStream's Ready reason is `reason` and its message says
/// `says`.
async fn wait_reason(ns: &str, reason: &str, says: &str) -> String {
    support::eventually(
        Duration::from_secs(60),
        &format!("jss/events Ready reason {reason} saying {says:?}"),
        || async {
            let out = control_plane()
                .kubectl(&["-n", ns, "get", "jss", "events", "-o", "json"], None)
                .ok()?;
            let jss: serde_json::Value = serde_json::from_str(&out).ok()?;
            let ready = jss["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            let message = ready["message"].as_str()?.to_owned();
            (ready["reason"] == reason && message.contains(says)).then_some(message)
        },
        async || support::describe(ns, "jss", "events"),
    )
    .await
}

/// Annotations without their prefix, and values.
type Settings<'a> = &'a [(&'a str, &'a str)];

const ALL: [(&str, &str); 11] = [
    ("duplicate-window", "30s"),
    ("max-msgs", "1000"),
    ("max-msg-size", "64Ki"),
    ("max-msgs-per-subject", "100"),
    ("discard", "new"),
    ("compression", "s2"),
    ("description", "orders of the shop"),
    ("metadata", "{\"team\": \"shop\"}"),
    ("consumer-inactive-threshold", "1h"),
    ("consumer-max-ack-pending", "500"),
    ("allow-msg-ttl", "true"),
];

fn with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<_> = ALL
        .iter()
        .copied()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .collect();
    all.extend(changes.iter().copied().filter(|(_, v)| !v.is_empty()));
    all
}

#[tokio::test]
async fn stream_settings_are_set_read_back_changed_and_guarded() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "stream-settings").await;
    let subject = format!("settings.{}", support::random_suffix());
    let stream = format!("{}_events", ns.name);
    let (audit, _watcher) = Advisories::start(&nats().url()).await;

    // Set: every setting, read back from the server.
    control_plane().apply(&component(&ns.name, &subject, &ALL));
    let jss = support::wait_jss(&ns.name, "events", "StreamManaged", |s, r| {
        s == "True" && r == "StreamManaged"
    })
    .await;
    let c = live(&stream).await;
    assert_eq!(c.duplicate_window, Duration::from_secs(30));
    assert_eq!(c.max_messages, 1000);
    assert_eq!(c.max_message_size, 64 * 1024);
    assert_eq!(c.max_messages_per_subject, 100);
    assert_eq!(c.discard, stream::DiscardPolicy::New);
    assert_eq!(c.compression, Some(stream::Compression::S2));
    assert_eq!(c.description.as_deref(), Some("orders of the shop"));
    assert_eq!(c.metadata.get("team").map(String::as_str), Some("shop"));
    let limits = c.consumer_limits.clone().expect("consumer limits");
    assert_eq!(limits.inactive_threshold, Duration::from_secs(3600));
    assert_eq!(limits.max_ack_pending, 500);
    assert!(c.allow_message_ttl);
    // The JetStreamStream shows them, asked (spec) and found (status).
    for config in [&jss["spec"]["config"], &jss["status"]["stream"]["config"]] {
        assert_eq!(config["maxMsgs"], 1000, "{config}");
        assert_eq!(config["discard"], "new", "{config}");
        assert_eq!(config["consumerMaxAckPending"], 500, "{config}");
        assert_eq!(config["allowMsgTtl"], true, "{config}");
    }

    // Changed in place: raised limits, discard, window, compression, text, consumer limits.
    let changed = with(&[
        ("duplicate-window", "1m"),
        ("max-msgs", "2000"),
        ("max-msgs-per-subject", "-1"),
        ("discard", "old"),
        ("compression", "false"),
        ("description", "orders, all of them"),
        ("metadata", "{\"team\": \"checkout\"}"),
        ("consumer-max-ack-pending", "800"),
    ]);
    control_plane().apply(&component(&ns.name, &subject, &changed));
    let c = support::eventually(
        Duration::from_secs(60),
        "the changed settings on the server",
        || async {
            let c = live(&stream).await;
            (c.max_messages == 2000 && c.discard == stream::DiscardPolicy::Old).then_some(c)
        },
        async || support::describe(&ns.name, "jss", "events"),
    )
    .await;
    assert_eq!(c.duplicate_window, Duration::from_secs(60));
    assert_eq!(c.max_messages_per_subject, -1);
    assert_ne!(c.compression, Some(stream::Compression::S2));
    assert_eq!(c.description.as_deref(), Some("orders, all of them"));
    assert_eq!(c.metadata.get("team").map(String::as_str), Some("checkout"));
    assert_eq!(c.consumer_limits.map(|l| l.max_ack_pending), Some(800));
    assert!(
        c.metadata.contains_key("jetstreamkv.io/component"),
        "the owner mark stays"
    );
    wait_reason(&ns.name, "StreamManaged", "").await;
    // The instrument sees the operator's updates.
    let updates = audit.wait_for("UPDATE", &stream, 1).await;

    // Refused before anything is sent: a lower limit (messages would be dropped), message
    // TTLs off and a placement move (NATS cannot make them).
    let refusals: [(Settings, &str, &str); 4] = [
        (
            &[("max-msgs", "10")],
            "DataLossRefused",
            "maxMsgs 2000 -> 10",
        ),
        (
            &[("max-msg-size", "1Ki")],
            "DataLossRefused",
            "maxMsgSize 65536 -> 1024",
        ),
        (
            &[("allow-msg-ttl", "")],
            "ImmutableFieldChanged",
            "allowMsgTtl true -> false",
        ),
        (
            &[("placement-cluster", "elsewhere")],
            "ImmutableFieldChanged",
            "placement none -> cluster \"elsewhere\"",
        ),
    ];
    for (change, reason, says) in refusals {
        let mut settings = changed.clone();
        settings.retain(|(k, _)| !change.iter().any(|(c, _)| c == k));
        settings.extend(change.iter().copied().filter(|(_, v)| !v.is_empty()));
        control_plane().apply(&component(&ns.name, &subject, &settings));
        wait_reason(&ns.name, reason, says).await;
    }
    // Over two resyncs: no update was sent for any of them.
    tokio::time::sleep(support::RESYNC * 2).await;
    assert_eq!(
        audit.count_of("UPDATE", &stream),
        updates,
        "an update of {stream} was sent for a refused change"
    );
    let c = live(&stream).await;
    assert_eq!((c.max_messages, c.max_message_size), (2000, 64 * 1024));
    assert!(c.allow_message_ttl);

    // With the opt-in, the lower limit is applied.
    let mut settings = changed.clone();
    settings.retain(|(k, _)| *k != "max-msgs");
    settings.extend([("max-msgs", "10"), ("allow-data-loss", "true")]);
    control_plane().apply(&component(&ns.name, &subject, &settings));
    support::eventually(
        Duration::from_secs(60),
        "max-msgs 10 on the server",
        || async { (live(&stream).await.max_messages == 10).then_some(()) },
        async || support::describe(&ns.name, "jss", "events"),
    )
    .await;

    // A duplicate window longer than the max age is refused by validation: nothing sent.
    let before = audit.count_of("UPDATE", &stream);
    let mut settings = changed.clone();
    settings.extend([("max-age", "30s")]);
    control_plane().apply(&component(&ns.name, &subject, &settings));
    wait_reason(
        &ns.name,
        "InvalidAnnotation",
        "no longer than the max age (30s",
    )
    .await;
    tokio::time::sleep(support::RESYNC).await;
    assert_eq!(audit.count_of("UPDATE", &stream), before);
}

/// The refusals that say NATS cannot make a change are ones nats-server itself refuses (its
/// own error counter moves): message TTLs turned off, a duplicate window longer than the max
/// age. (A placement move is the operator's own refusal: it never moves a stream.)
#[tokio::test]
async fn what_is_refused_as_impossible_nats_server_refuses() {
    let js = support::jetstream(&nats().url()).await;
    let errors = || nats().jsz()["api"]["errors"].as_u64().unwrap_or_default();
    let name = format!("TTLS{}", support::random_suffix());
    let subject = format!("ttls.{}", support::random_suffix());
    let created = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            allow_message_ttl: true,
            ..Default::default()
        })
        .await
        .expect("a stream with message TTLs")
        .cached_info()
        .config
        .clone();
    let before = errors();
    let mut off = created.clone();
    off.allow_message_ttl = false;
    let e = js.update_stream(off).await.expect_err("TTLs off refused");
    eprintln!("nats-server: {e}");
    let mut long_window = created.clone();
    long_window.max_age = Duration::from_secs(30);
    long_window.duplicate_window = Duration::from_secs(60);
    let e = js
        .update_stream(long_window)
        .await
        .expect_err("a window longer than the age refused");
    eprintln!("nats-server: {e}");
    assert_eq!(errors(), before + 2, "the server counted both refusals");
    // The operator's plan for the same: refused before sending, each with its reason.
    use jetstream_kv_operator::failure::Failure as _;
    use jetstream_kv_operator::pubsub::stream::{Desired, Role, StreamPlan, plan, stream_settings};
    let settings = stream_settings(&Default::default()).unwrap();
    let subjects = vec![subject];
    let d = Desired {
        stream: &name,
        subjects: &subjects,
        owner: "ns/events",
        settings: &settings,
        role: Role::Topics,
    };
    let mut ours = created.clone();
    ours.metadata.insert(
        "jetstreamkv.io/managed-by".into(),
        "jetstream-kv-operator".into(),
    );
    ours.metadata
        .insert("jetstreamkv.io/component".into(), "ns/events".into());
    match plan(&d, Some(&ours), &[], Some(true), false) {
        StreamPlan::Blocked { reason, .. } => assert_eq!(reason.reason(), "ImmutableFieldChanged"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let e = stream_settings(
        &[
            (
                "jetstreamkv.io/duplicate-window".to_string(),
                "1m".to_string(),
            ),
            ("jetstreamkv.io/max-age".to_string(), "30s".to_string()),
        ]
        .into(),
    )
    .unwrap_err();
    assert_eq!(e.reason(), "InvalidAnnotation");
    js.delete_stream(&name).await.expect("deleted");
}

/// A `durableName` NATS cannot take as a consumer name (components-contrib #1655: a space) is
/// refused before anything is sent: no request names the Component's stream, while the same
/// Component with a valid name gets its stream (the instrument sees requests).
#[tokio::test]
async fn an_invalid_consumer_name_is_refused_with_nothing_sent() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "consumer-name").await;
    let subject = format!("names.{}", support::random_suffix());
    let stream = format!("{}_events", ns.name);
    let (audit, _watcher) = Advisories::start(&nats().url()).await;
    let manifest = |durable: &str| {
        ComponentManifest::new(&ns.name, "events")
            .type_("pubsub.jetstream")
            .item("natsURL", &nats().url())
            .item("durableName", durable)
            .annotation("jetstreamkv.io/subjects", &subject)
            .yaml()
    };
    control_plane().apply(&manifest("my consumer"));
    let message = wait_reason(&ns.name, "InvalidConsumerName", "durableName").await;
    assert!(message.contains("\"my consumer\""), "{message}");
    tokio::time::sleep(support::RESYNC).await;
    assert_eq!(
        audit.naming(&stream),
        Vec::<String>::new(),
        "a request for {stream} was sent"
    );
    control_plane().apply(&manifest("my-consumer"));
    wait_reason(&ns.name, "StreamManaged", "").await;
    // The instrument sees the requests for the stream once there are some.
    audit.wait_for("CREATE", &stream, 1).await;
}
