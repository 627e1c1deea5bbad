//! Dapr's own sidecar, `daprd` (built by test-env/setup.sh from Dapr's Go modules, with the NATS
//! JetStream state store), loading a Component file equal to the Component the operator
//! reconciled: before the bucket exists it refuses to start (Dapr's fatal component init error,
//! the failure the operator exists to prevent); once the KeyValueBucket is Ready it starts, and
//! state saved through its HTTP API lands in the operator's bucket and reads back. Also with
//! `jwt`/`seedKey` credentials against a nats-server in operator mode.

use crate::support;

use std::time::Duration;

use support::daprd::{Daprd, resource_file};
use support::nats::NatsServer;
use support::{ComponentManifest, TestNamespace, client, control_plane, operator, wait_kvb};

/// The Component as daprd reads it from a file.
fn component_file(object: &serde_json::Value) -> serde_json::Value {
    resource_file(object)
}

fn manifest_object(manifest: &str) -> serde_json::Value {
    serde_yaml::from_str(manifest).expect("the manifest is YAML")
}

/// The Component as the operator reconciled it, from the API server.
fn reconciled(ns: &str, name: &str) -> serde_json::Value {
    let json = control_plane()
        .kubectl(&["-n", ns, "get", "component", name, "-o", "json"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&json).expect("Component JSON")
}

/// The whole story against one nats-server: daprd refuses the Component before its bucket
/// exists, the operator creates the bucket, daprd then saves and reads state in it.
async fn daprd_round_trip(
    test: &str,
    manifest_for: impl Fn(&str, &str) -> String,
    nats_url: &str,
    connect: async_nats::ConnectOptions,
) {
    let client = client().await;
    let ns = TestNamespace::new(&client, test).await;
    let bucket = support::unique_bucket("dapr");
    let manifest = manifest_for(&ns.name, &bucket);
    let app_id = format!("app{}", support::random_suffix());

    // Before the operator has made the bucket: Dapr's fatal init error, within seconds.
    let mut early = Daprd::start(&app_id, &component_file(&manifest_object(&manifest)));
    let status = early
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("daprd kept running without its bucket:\n{}", early.log()));
    let log = early.log();
    assert!(!status.success(), "daprd exited successfully:\n{log}");
    assert!(
        log.contains("level=fatal") && log.contains("bucket not found"),
        "daprd did not fail with the missing bucket:\n{log}"
    );

    // The operator reconciles the Component; then daprd starts with the same Component.
    operator();
    control_plane().apply(&manifest);
    wait_kvb(&ns.name, "statestore", "Ready", Duration::from_secs(60));
    let object = reconciled(&ns.name, "statestore");
    assert_eq!(
        object["spec"],
        manifest_object(&manifest)["spec"],
        "the Component daprd loads is the one that was applied"
    );
    let mut daprd = Daprd::start(&app_id, &component_file(&object));
    let healthy_after = daprd.wait_healthy();
    eprintln!(
        "figures: daprd healthy {healthy_after:.1?} after start with the reconciled Component"
    );

    let saved = daprd.http(
        "POST",
        "/v1.0/state/statestore",
        Some(r#"[{"key":"order-1","value":{"item":"coffee","qty":2}}]"#),
    );
    assert_eq!(
        saved.as_ref().map(|s| s.0),
        Some(204),
        "save: {saved:?}\n{}",
        daprd.log()
    );
    let read = daprd
        .http("GET", "/v1.0/state/statestore/order-1", None)
        .unwrap_or_else(|| panic!("read failed:\n{}", daprd.log()));
    assert_eq!(read.0, 200, "read: {read:?}");
    let value: serde_json::Value = serde_json::from_str(&read.1).expect("JSON value");
    assert_eq!(value, serde_json::json!({"item": "coffee", "qty": 2}));

    // The state is in the operator's bucket, under daprd's key for this app.
    let nats = connect.connect(nats_url).await.expect("connect to NATS");
    let kv = async_nats::jetstream::new(nats)
        .get_key_value(&bucket)
        .await
        .expect("the operator's bucket");
    let mut keys = kv.keys().await.expect("keys");
    let mut found = Vec::new();
    use futures::StreamExt;
    while let Some(k) = keys.next().await {
        found.push(k.expect("key"));
    }
    assert!(
        found
            .iter()
            .any(|k| k.contains(&daprd.app_id) && k.ends_with("order-1")),
        "keys in {bucket}: {found:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn daprd_refuses_the_component_before_its_bucket_exists_then_stores_state_in_it() {
    let server = support::nats();
    let url = server.url();
    daprd_round_trip(
        "daprd",
        |ns, bucket| ComponentManifest::store(ns, "statestore", &url, bucket).yaml(),
        &server.url(),
        async_nats::ConnectOptions::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn daprd_with_jwt_and_seed_against_an_operator_mode_server() {
    let (server, accounts) = NatsServer::start_operator_mode();
    let (jwt, seed) = accounts.new_user("dapr", None);
    let url = server.url();
    let manifest = |ns: &str, bucket: &str| {
        ComponentManifest::store(ns, "statestore", &url, bucket)
            .item("jwt", &jwt)
            .item("seedKey", &seed)
            .yaml()
    };
    daprd_round_trip(
        "daprd-jwt",
        manifest,
        &server.url(),
        support::nats::user_connect_options(&jwt, &seed),
    )
    .await;
}
