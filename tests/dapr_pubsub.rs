//! Dapr's own sidecar, `daprd` (built by test-env/setup.sh with the NATS JetStream pub/sub),
//! against a stream the operator made for a `pubsub.jetstream` Component: before the stream
//! exists, daprd starts but its subscriptions fail and publishing through its HTTP API fails with
//! what Dapr reports; once the JetStreamStream is Ready, an app subscribed through declarative
//! Subscriptions (the same objects as on the API server, given to daprd as files) receives what
//! is published. A message the app fails lands on the Subscription's dead-letter topic, which the
//! operator put in a stream of its own (in the topics' stream, whose duplicate window drops a
//! publish with an id it has seen, daprd's dead letter would be lost), and an app subscribed to
//! that topic through daprd receives it.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use jetstream_kv_operator::crd::ConditionType;
use jetstream_kv_operator::pubsub::JetStreamStream;
use kube::Api;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use support::daprd::{Daprd, resource_file};
use support::{ComponentManifest, TestNamespace, client, control_plane, eventually, operator};

/// What the app received: the route and the request body (a CloudEvent).
pub(crate) type Delivery = (String, Value);

/// The app: an HTTP server on loopback. `/orders` and `/poison` take every message;
/// `/payments` fails every message with a 500; anything else (daprd's `/dapr/subscribe` and
/// `/dapr/config` probes) is 404.
pub(crate) async fn start_app() -> (u16, mpsc::UnboundedReceiver<Delivery>) {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind the app");
    let port = listener.local_addr().expect("app address").port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let status = match path.as_str() {
                            "/orders" | "/poison" => 200,
                            "/payments" => 500,
                            _ => 404,
                        };
                        if status != 404 {
                            let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let _ = tx.send((path, event));
                        }
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, rx)
}

fn manifest_object(manifest: &str) -> Value {
    serde_yaml::from_str(manifest).expect("the manifest is YAML")
}

/// A declarative Subscription (`dapr.io/v2alpha1`) `name` on the `events` Component: topic
/// `<name>.<suffix>` (each test its own subjects on the shared server), route `/<name>`.
pub(crate) fn subscription(ns: &str, name: &str, suffix: &str, dead_letter: Option<&str>) -> Value {
    let mut s = json!({
        "apiVersion": "dapr.io/v2alpha1",
        "kind": "Subscription",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "pubsubname": "events",
            "topic": format!("{name}.{suffix}"),
            "routes": {"default": format!("/{name}")},
        },
    });
    if let Some(dl) = dead_letter {
        s["spec"]["deadLetterTopic"] = json!(format!("{dl}.{suffix}"));
    }
    s
}

/// An object from the API server, as JSON.
fn get(ns: &str, kind: &str, name: &str) -> Value {
    let json = control_plane()
        .kubectl(&["-n", ns, "get", kind, name, "-o", "json"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&json).expect("JSON")
}

/// A stream's info as nats-server reports it.
async fn stream_info(url: &str, name: &str) -> async_nats::jetstream::stream::Info {
    let mut stream = support::jetstream(url)
        .await
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"));
    stream.info().await.expect("stream info").clone()
}

/// The next delivery to the app, within `timeout`.
async fn next(
    rx: &mut mpsc::UnboundedReceiver<Delivery>,
    timeout: Duration,
    daprd: &Daprd,
) -> Delivery {
    tokio::time::timeout(timeout, rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the app received nothing in {timeout:?}:\n{}", daprd.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn daprd_fails_to_publish_before_the_stream_then_the_app_receives_through_it() {
    round_trip("dapr-pubsub", false, &[]).await;
}

/// daprd 1.18.3's dead-letter publish carries the failed message's CloudEvent id as
/// `Nats-Msg-Id`: it is stored because the dead-letter topic has a stream of its own.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_the_app_fails_lands_on_the_dead_letter_topic() {
    round_trip("dapr-deadletter", true, &[]).await;
}

/// The same story with every stream setting away from its default (issue 28): daprd still
/// publishes, its app still receives, and the dead letter still lands, on streams that have
/// them (read back from the server, the dead-letter stream's too).
#[tokio::test(flavor = "multi_thread")]
async fn daprd_works_with_non_default_stream_settings() {
    round_trip(
        "dapr-settings",
        true,
        &[
            ("duplicate-window", "30s"),
            ("max-msgs", "10000"),
            ("max-msg-size", "64Ki"),
            ("max-msgs-per-subject", "1000"),
            ("discard", "new"),
            ("compression", "s2"),
            ("description", "the shop's events"),
            ("metadata", "{\"team\": \"shop\"}"),
            ("consumer-inactive-threshold", "1h"),
            ("consumer-max-ack-pending", "1000"),
            ("allow-msg-ttl", "true"),
        ],
    )
    .await;
}

/// The story against the shared nats-server; with `dead_letter`, also a message the app fails;
/// `settings`: `jetstreamkv.io/` annotations of the Component (without the prefix).
async fn round_trip(test: &str, dead_letter: bool, settings: &[(&str, &str)]) {
    let started = Instant::now();
    let server = support::nats();
    let client = client().await;
    let ns = TestNamespace::new(&client, test).await;
    let manifest = ComponentManifest::new(&ns.name, "events")
        .type_("pubsub.jetstream")
        .item("natsURL", &server.url())
        .item("deliverPolicy", "all")
        .settings(settings)
        .yaml();
    let component = manifest_object(&manifest);
    let sfx = support::random_suffix();
    let subscriptions = [
        subscription(&ns.name, "orders", &sfx, None),
        subscription(&ns.name, "payments", &sfx, Some("poison")),
        subscription(&ns.name, "poison", &sfx, None),
    ];
    let app_id = format!("app{}", support::random_suffix());

    // Before the operator has made the stream: daprd starts (the Component connects) and
    // is healthy, its subscriptions fail (and are retried), and publishing fails with what Dapr
    // says.
    let (early_port, _early_rx) = start_app().await;
    let mut early_resources = vec![resource_file(&component)];
    early_resources.extend(subscriptions.iter().map(resource_file));
    let mut early = Daprd::start_with(&app_id, &early_resources, Some(early_port));
    early.wait_healthy();
    let failed = format!(
        "Failed to start subscription for pubsub events, topic orders.{sfx}: failed to subscribe \
         to topic orders.{sfx}: nats: no stream matches subject"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !early.log().contains(&failed) {
        assert!(
            Instant::now() < deadline,
            "daprd did not report the failed subscription:\n{}",
            early.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = early
        .http(
            "POST",
            &format!("/v1.0/publish/events/orders.{sfx}"),
            Some(r#"{"item":"coffee"}"#),
        )
        .unwrap_or_else(|| panic!("publish: no answer:\n{}", early.log()));
    eprintln!("publish before the stream: {refused:?}");
    assert_eq!(refused.0, 500, "publish before the stream: {refused:?}");
    let error: Value = serde_json::from_str(&refused.1).expect("Dapr's error is JSON");
    assert_eq!(error["errorCode"], "ERR_PUBSUB_PUBLISH_MESSAGE", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!(
                "error when publishing to topic orders.{sfx} in pubsub events: nats: no response from stream"
            ))),
        "{error}"
    );
    drop(early);

    // The operator makes the stream for the Component and its Subscriptions.
    operator();
    control_plane().apply(&manifest);
    for s in &subscriptions {
        control_plane().apply(&serde_json::to_string(s).expect("JSON"));
    }
    let api: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    let jss = eventually(
        Duration::from_secs(60),
        "jss/events Ready=True with the three Subscriptions' topics covered",
        || async {
            let jss = api.get_opt("events").await.ok().flatten()?;
            let ready = jss.condition(ConditionType::Ready)?.status == "True";
            // orders, payments, poison as payments' dead-letter topic and as poison's topic.
            let topics = &jss.status.as_ref()?.topics;
            let covered = topics.iter().all(|t| t.covered);
            (ready && covered && topics.len() == 4).then_some(jss)
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                support::describe(&ns.name, "jss", "events"),
                operator().log_tail()
            )
        },
    )
    .await;
    let stream_name = jss
        .status
        .as_ref()
        .and_then(|s| s.stream.as_ref())
        .map(|s| s.name.clone())
        .expect("status.stream");
    let info = stream_info(&server.url(), &stream_name).await;
    let mut subjects = info.config.subjects.clone();
    subjects.sort();
    assert_eq!(
        subjects,
        [format!("orders.{sfx}"), format!("payments.{sfx}")]
    );
    // The dead-letter topic (subscribed to as well) in the dead-letter stream only.
    let dead_letters = jss
        .status
        .as_ref()
        .and_then(|s| s.dead_letter_stream.as_ref())
        .map(|s| s.name.clone())
        .expect("status.deadLetterStream");
    assert_eq!(dead_letters, format!("{stream_name}_deadletter"));
    let info = stream_info(&server.url(), &dead_letters).await;
    assert_eq!(info.config.subjects, [format!("poison.{sfx}")]);
    if !settings.is_empty() {
        for name in [&stream_name, &dead_letters] {
            let c = stream_info(&server.url(), name).await.config;
            assert_eq!(
                (
                    c.max_messages,
                    c.max_message_size,
                    c.max_messages_per_subject
                ),
                (10000, 64 * 1024, 1000),
                "{name}"
            );
            assert_eq!(c.discard, async_nats::jetstream::stream::DiscardPolicy::New);
            assert_eq!(c.duplicate_window, Duration::from_secs(30));
            assert_eq!(
                c.compression,
                Some(async_nats::jetstream::stream::Compression::S2)
            );
            assert_eq!(c.description.as_deref(), Some("the shop's events"));
            assert_eq!(c.metadata.get("team").map(String::as_str), Some("shop"));
            let limits = c.consumer_limits.expect("consumer limits");
            assert_eq!(limits.max_ack_pending, 1000);
            assert!(c.allow_message_ttl);
        }
    }
    let ready_after = started.elapsed();

    // daprd with the app and the Subscriptions, the same objects as on the API server.
    let (app_port, mut rx) = start_app().await;
    let mut resources = vec![resource_file(&get(&ns.name, "component", "events"))];
    for s in &subscriptions {
        let name = s["metadata"]["name"].as_str().expect("name");
        let object = get(&ns.name, "subscriptions.dapr.io", name);
        assert_eq!(object["spec"], s["spec"]);
        resources.push(resource_file(&object));
    }
    let mut daprd = Daprd::start_with(&app_id, &resources, Some(app_port));
    let healthy = daprd.wait_healthy();

    let published = daprd.http(
        "POST",
        &format!("/v1.0/publish/events/orders.{sfx}"),
        Some(r#"{"item":"coffee","qty":2}"#),
    );
    assert_eq!(
        published.as_ref().map(|p| p.0),
        Some(204),
        "publish: {published:?}\n{}",
        daprd.log()
    );
    let (route, event) = next(&mut rx, Duration::from_secs(20), &daprd).await;
    assert_eq!(route, "/orders", "{event}");
    assert_eq!(event["topic"], format!("orders.{sfx}"), "{event}");
    assert_eq!(event["pubsubname"], "events", "{event}");
    assert_eq!(event["source"], app_id.as_str(), "{event}");
    assert_eq!(
        event["data"],
        json!({"item": "coffee", "qty": 2}),
        "{event}"
    );

    if !dead_letter {
        eprintln!(
            "figures: jss Ready {ready_after:.1?} after start, daprd healthy in {healthy:.1?}, \
             total {:.1?}",
            started.elapsed()
        );
        return;
    }
    // The handler of `payments` fails: the message goes to the dead-letter topic `poison`.
    let published = daprd.http(
        "POST",
        &format!("/v1.0/publish/events/payments.{sfx}"),
        Some(r#"{"card":"declined"}"#),
    );
    assert_eq!(published.as_ref().map(|p| p.0), Some(204), "{published:?}");
    let mut routes = Vec::new();
    let mut failed_id = String::new();
    let dead = loop {
        let Ok(Some((route, event))) =
            tokio::time::timeout(Duration::from_secs(20), rx.recv()).await
        else {
            let topics = stream_info(&server.url(), &stream_name).await;
            let dead = stream_info(&server.url(), &dead_letters).await;
            panic!(
                "no dead letter in 20 s; the app saw {routes:?}; stream {stream_name} holds {} \
                 messages, {dead_letters} {}\n{}",
                topics.state.messages,
                dead.state.messages,
                daprd.log()
            );
        };
        routes.push(route.clone());
        if route == "/payments" {
            failed_id = event["id"].as_str().unwrap_or_default().to_string();
        }
        if route == "/poison" {
            break event;
        }
        assert_eq!(route, "/payments", "{event}");
    };
    assert_eq!(dead["data"], json!({"card": "declined"}), "{dead}");
    assert!(
        routes.starts_with(&["/payments".to_string()]),
        "the app saw {routes:?}"
    );
    // The same message (the same CloudEvent id), and it is stored in the dead-letter stream.
    assert_eq!(dead["id"].as_str(), Some(failed_id.as_str()), "{dead}");
    let info = stream_info(&server.url(), &dead_letters).await;
    assert_eq!(info.state.messages, 1, "the dead letter is stored once");
    eprintln!(
        "figures: jss Ready {ready_after:.1?} after start, daprd healthy in {healthy:.1?}, \
         deliveries {routes:?}, dead-letter stream {} messages, total {:.1?}",
        info.state.messages,
        started.elapsed()
    );
}

/// A `pubsub.jetstream` Component with a `durableName` and `deliverPolicy: all` (and
/// `annotations`), its Subscription, its stream made by the operator, and a durable consumer of
/// that name made beforehand with deliver policy `new` and the deliver subject
/// `<deliver_prefix><suffix>`, as an older deployment of the Component left it.
struct OldConsumer {
    ns: TestNamespace,
    sfx: String,
    durable: String,
    stream: String,
    js: async_nats::jetstream::Context,
    subscriptions: [Value; 1],
    deliver: String,
    /// The consumer as made (its creation time is the server's record).
    made: async_nats::jetstream::consumer::Info,
}

impl OldConsumer {
    async fn make(prefix: &str, annotations: &[(&str, &str)], deliver_prefix: &str) -> Self {
        use async_nats::jetstream::consumer;
        let server = support::nats();
        let client = client().await;
        let ns = TestNamespace::new(&client, prefix).await;
        let sfx = support::random_suffix();
        let durable = format!("orders-{sfx}");
        let mut manifest = ComponentManifest::new(&ns.name, "events")
            .type_("pubsub.jetstream")
            .item("natsURL", &server.url())
            .item("durableName", &durable)
            .item("deliverPolicy", "all");
        for (key, value) in annotations {
            manifest = manifest.annotation(key, value);
        }
        let subscriptions = [subscription(&ns.name, "orders", &sfx, None)];
        operator();
        control_plane().apply(&manifest.yaml());
        for s in &subscriptions {
            control_plane().apply(&serde_json::to_string(s).expect("JSON"));
        }
        let stream = format!("{}_events", ns.name);
        support::wait_jss(&ns.name, "events", "StreamManaged", |s, r| {
            s == "True" && r == "StreamManaged"
        })
        .await;
        let js = support::jetstream(&server.url()).await;
        let deliver = format!("{deliver_prefix}{sfx}");
        let made = js
            .get_stream(&stream)
            .await
            .expect("stream")
            .create_consumer(consumer::push::Config {
                durable_name: Some(durable.clone()),
                deliver_subject: deliver.clone(),
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                filter_subject: format!("orders.{sfx}"),
                ..Default::default()
            })
            .await
            .expect("the old consumer");
        let made = made.cached_info().clone();
        Self {
            ns,
            sfx,
            durable,
            stream,
            js,
            subscriptions,
            deliver,
            made,
        }
    }
}

/// A durable consumer made beforehand with deliver policy `new` (as an older deployment of the
/// Component made it), and a Component whose `deliverPolicy` is now `all`
/// (components-contrib #2162): the JetStreamStream names the field and both values before
/// daprd runs, and daprd's subscription then fails on that consumer (daprd 1.18.3 says only
/// "consumer name already in use"; the status says which field).
#[tokio::test(flavor = "multi_thread")]
async fn a_durable_consumer_that_differs_is_named_before_daprd_fails_on_it() {
    use async_nats::jetstream::consumer;
    let old = OldConsumer::make("dapr-consumer", &[], "_INBOX.old").await;
    let OldConsumer {
        ns,
        sfx,
        durable,
        stream,
        js,
        subscriptions,
        ..
    } = old;
    // Before daprd runs: the status names the field and both values.
    let jss = support::wait_jss(&ns.name, "events", "ConsumerMismatch", |_, r| {
        r == "ConsumerMismatch"
    })
    .await;
    let ready = jss["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    let message = ready["message"].as_str().unwrap().to_owned();
    eprintln!("status: {message}");
    assert!(
        message.contains("deliverPolicy") && message.contains("new") && message.contains("all"),
        "{message}"
    );
    assert!(message.contains(&durable), "{message}");

    // daprd fails on the same difference.
    let (app_port, _rx) = start_app().await;
    let mut resources = vec![resource_file(&get(&ns.name, "component", "events"))];
    for s in &subscriptions {
        let name = s["metadata"]["name"].as_str().expect("name");
        resources.push(resource_file(&get(&ns.name, "subscriptions.dapr.io", name)));
    }
    let app_id = format!("app{}", support::random_suffix());
    let mut daprd = Daprd::start_with(&app_id, &resources, Some(app_port));
    daprd.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(20);
    let failure = loop {
        let log = daprd.log();
        // daprd 1.18.3 asks the server to create the consumer; the server refuses a durable
        // name held by a consumer of another configuration.
        if let Some(line) = log.lines().find(|l| {
            l.contains(&format!("failed to subscribe to topic orders.{sfx}"))
                && l.contains(&format!(
                    "consumer name already in use: creating consumer \\\"{durable}\\\""
                ))
        }) {
            break line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "daprd did not fail on the consumer:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("daprd: {failure}");

    // The old consumer deleted by hand: daprd makes its own, and the operator finds nothing to
    // say about it (no false alarm on the consumer daprd made).
    js.get_stream(&stream)
        .await
        .expect("stream")
        .delete_consumer(&durable)
        .await
        .expect("deleted");
    eventually(
        Duration::from_secs(60),
        "daprd's own durable consumer, with deliver policy all",
        || async {
            let s = js.get_stream(&stream).await.ok()?;
            let info = s
                .consumer_info(&durable)
                .await
                .ok()
                .filter(|i| i.config.deliver_policy == consumer::DeliverPolicy::All)?;
            Some(info.config.clone())
        },
        async || daprd.log(),
    )
    .await;
    tokio::time::sleep(support::RESYNC * 2).await;
    support::wait_jss(&ns.name, "events", "StreamManaged", |s, r| {
        s == "True" && r == "StreamManaged"
    })
    .await;
}

/// `jetstreamkv.io/recreate-consumers: "true"` (components-contrib #2162 without the manual
/// `nats consumer rm`): a mismatching durable consumer is kept while a subscriber is bound to
/// it (its creation time, the server's own record, does not change over two resyncs) and the
/// status says why; once the subscriber is gone the operator deletes it, and daprd makes its
/// own and the app receives through it.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_opt_in_a_mismatching_consumer_is_made_anew_unless_a_subscriber_holds_it() {
    use async_nats::jetstream::consumer;
    let old = OldConsumer::make(
        "dapr-recreate",
        &[("jetstreamkv.io/recreate-consumers", "true")],
        "_INBOX.old",
    )
    .await;
    let OldConsumer {
        ns,
        sfx,
        durable,
        stream,
        js,
        subscriptions,
        deliver,
        made,
    } = old;
    let created = made.created;
    let server = support::nats();
    let holder = async_nats::connect(server.url()).await.expect("connect");
    let bound = holder.subscribe(deliver).await.expect("subscribe");
    holder.flush().await.expect("flush");
    let consumer_info = || async {
        js.get_stream(&stream)
            .await
            .ok()?
            .consumer_info(&durable)
            .await
            .ok()
    };
    eventually(
        Duration::from_secs(10),
        "the server to see the subscriber bound",
        || async { consumer_info().await.filter(|i| i.push_bound) },
        async || String::new(),
    )
    .await;
    let jss = support::wait_jss(&ns.name, "events", "ConsumerMismatch", |_, r| {
        r == "ConsumerMismatch"
    })
    .await;
    let message = jss["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        message.ends_with("did not delete it: a subscriber is bound to it"),
        "{message}"
    );
    tokio::time::sleep(support::RESYNC * 2).await;
    let kept = consumer_info().await.expect("the bound consumer is kept");
    assert_eq!(
        (kept.created, kept.config.deliver_policy),
        (created, consumer::DeliverPolicy::New),
        "the consumer a subscriber is bound to was touched"
    );

    // The subscriber gone: the operator deletes the consumer (the instrument sees the delete:
    // the consumer is gone), says so in an Event, and the stream is Ready.
    drop(bound);
    drop(holder);
    eventually(
        Duration::from_secs(60),
        "the unbound consumer deleted",
        || async { consumer_info().await.is_none().then_some(()) },
        async || support::describe(&ns.name, "jss", "events"),
    )
    .await;
    support::wait_jss(&ns.name, "events", "StreamManaged", |s, r| {
        s == "True" && r == "StreamManaged"
    })
    .await;
    // The Event is written after the status (seen missing once when read at once, fresh28).
    eventually(
        Duration::from_secs(30),
        &format!("a ConsumerRecreated Event naming {durable}"),
        || async {
            let events = control_plane()
                .kubectl(&["-n", &ns.name, "get", "events", "-o", "json"], None)
                .ok()?;
            (events.contains("ConsumerRecreated") && events.contains(&durable)).then_some(())
        },
        async || support::describe(&ns.name, "jss", "events"),
    )
    .await;

    // daprd makes its own consumer, as the Component asks, and the app receives through it.
    let (app_port, mut rx) = start_app().await;
    let mut resources = vec![resource_file(&get(&ns.name, "component", "events"))];
    for s in &subscriptions {
        let name = s["metadata"]["name"].as_str().expect("name");
        resources.push(resource_file(&get(&ns.name, "subscriptions.dapr.io", name)));
    }
    let app_id = format!("app{}", support::random_suffix());
    let mut daprd = Daprd::start_with(&app_id, &resources, Some(app_port));
    daprd.wait_healthy();
    let made_by_daprd = eventually(
        Duration::from_secs(30),
        "daprd's own durable consumer, with deliver policy all",
        || async {
            consumer_info()
                .await
                .filter(|i| i.config.deliver_policy == consumer::DeliverPolicy::All)
        },
        async || daprd.log(),
    )
    .await;
    assert_ne!(made_by_daprd.created, created);
    let published = daprd
        .http(
            "POST",
            &format!("/v1.0/publish/events/orders.{sfx}"),
            Some(r#"{"item":"tea"}"#),
        )
        .unwrap_or_else(|| panic!("publish: no answer:\n{}", daprd.log()));
    assert_eq!(published.0, 204, "publish: {published:?}");
    let delivery = next(&mut rx, Duration::from_secs(20), &daprd).await;
    eprintln!("delivered after the consumer was made anew: {delivery:?}");
}
