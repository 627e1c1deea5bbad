//! Steady state costs nothing: once a Component is Ready, resyncs write nothing to the API server
//! and send nothing but reads to NATS. Judged by the servers (resourceVersions, nats-server's
//! audit advisories) and by the operator's counters; a module of its own, so that the counters
//! count this test only.

use crate::support;

use std::time::Duration;

use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::dapr::Component;
use kube::Api;
use support::advisories::Advisories;
use support::{
    RESYNC, TestNamespace, component_yaml as component, control_plane, nats, operator,
    stream_config_json as stream_config, unique_bucket, wait_kvb,
};

const READY: Duration = Duration::from_secs(60);

#[tokio::test]
async fn steady_state_writes_nothing() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "steady").await;
    let bucket = unique_bucket("steady");
    control_plane().apply(&component(&ns.name, "steady", &nats().url(), &bucket, ""));
    wait_kvb(&ns.name, "steady", "Ready", READY);
    // Let the first resync after Ready pass, then watch three more.
    tokio::time::sleep(RESYNC * 2).await;
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    let kvb_rv = kvbs.get("steady").await.unwrap().metadata.resource_version;
    let component_rv = components
        .get("steady")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let config = stream_config(&nats().url(), &bucket).await.unwrap();
    let mutations = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("jetstream_kv_nats_requests_total{kind=\"create\"}")
                    || l.starts_with("jetstream_kv_nats_requests_total{kind=\"update\"}")
            })
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let reconciles = |m: &str| support::fixtures::metric(m, "jetstream_kv_reconciles_total");
    // nats-server's own record of every JetStream API request (an audit advisory each), whatever
    // the operator counts.
    let (audits, _watcher) = Advisories::start(&nats().url()).await;
    let (_, before) = operator().http_get("/metrics").expect("metrics");
    tokio::time::sleep(RESYNC * 3).await;
    let (_, after) = operator().http_get("/metrics").expect("metrics");
    let stream = format!("KV_{bucket}");
    let ours = audits.naming(&stream);
    // The instrument sees the resyncs' reads.
    assert!(
        !ours.is_empty(),
        "nats-server audited no request for {stream} in three resyncs: {:?}",
        audits.all()
    );
    let writes: Vec<_> = audits
        .mutating()
        .into_iter()
        .filter(|(_, s)| *s == stream)
        .collect();
    assert!(writes.is_empty(), "writes to {stream}: {writes:?}");
    eprintln!(
        "nats-server audited {} requests for {stream} in three resyncs, none a write",
        ours.len()
    );
    assert!(reconciles(&after) > reconciles(&before), "resyncs ran");
    assert_eq!(
        kvbs.get("steady").await.unwrap().metadata.resource_version,
        kvb_rv
    );
    assert_eq!(
        components
            .get("steady")
            .await
            .unwrap()
            .metadata
            .resource_version,
        component_rv
    );
    assert_eq!(stream_config(&nats().url(), &bucket).await.unwrap(), config);
    assert_eq!(
        mutations(&before),
        mutations(&after),
        "no create or update sent to NATS"
    );
}
