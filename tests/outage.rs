//! An outage of NATS is seen at once, with the DEFAULT resync (5 minutes): the connection's own
//! events (disconnected, connected) reconcile every Component that uses it. Writes are counted
//! twice: by the operator and by a watch of the API server. A module of its own, so that the
//! operator runs with default flags and its counters count this test only.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::watcher;

use jetstream_kv_operator::crd::KeyValueBucket;
use kube::Api;
use kube::api::ListParams;
use support::nats::NatsServer;
use support::operator::Operator;
use support::{TestNamespace, component_yaml, control_plane, wait_kvb_of};

/// Components sharing the one connection.
const COMPONENTS: usize = 20;
/// What the issue asks: an outage shows within 10 s, and clears within 10 s of the return.
const WITHIN: Duration = Duration::from_secs(10);

fn status_writes(operator: &Operator) -> u64 {
    let (_, metrics) = operator.http_get("/metrics").expect("metrics");
    metrics
        .lines()
        .find(|l| {
            l.starts_with("jetstream_kv_api_writes_total")
                && l.contains("kind=\"apply-keyvaluebucket-status\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Writes to the KeyValueBuckets of `api`, as the API server reports them to a watch (one event
/// per change, after the initial list): counted by the server, whatever the operator counts.
fn writes_seen(api: Api<KeyValueBucket>) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => listed = true,
                Ok(watcher::Event::Apply(_)) if listed => {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    });
    count
}

/// Ready (status, reason) of every KeyValueBucket of the namespace.
async fn ready_of(api: &Api<KeyValueBucket>) -> Vec<(String, String, bool)> {
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .map(|k| {
                    let ready = k.condition("Ready");
                    let reconciling = k
                        .condition("Reconciling")
                        .is_some_and(|c| c.status == "True");
                    (
                        ready.map(|c| c.status.clone()).unwrap_or_default(),
                        ready.map(|c| c.reason.clone()).unwrap_or_default(),
                        reconciling,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until all COMPONENTS KeyValueBuckets match; returns how long it took.
async fn wait_all(
    api: &Api<KeyValueBucket>,
    operator: &Operator,
    what: &str,
    ok: impl Fn(&(String, String, bool)) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let all = ready_of(api).await;
        if all.len() == COMPONENTS && all.iter().all(&ok) {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "not all {what} after 60 s: {all:?}\n--- operator log:\n{}",
                operator.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nats_server_shows_within_seconds_with_the_default_resync() {
    let cp = control_plane();
    // Default flags: --resync-interval 5m, --max-backoff 2m.
    let operator = Operator::start(&cp.kubeconfig, &[]);
    let mut nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "outage").await;
    for i in 0..COMPONENTS {
        cp.apply(&component_yaml(
            &ns.name,
            &format!("c{i:02}"),
            &nats.url(),
            &support::unique_bucket("outage"),
            "",
        ));
    }
    for i in 0..COMPONENTS {
        wait_kvb_of(
            &operator,
            &ns.name,
            &format!("c{i:02}"),
            "Ready",
            WITHIN * 6,
        );
    }
    let api: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    let seen = writes_seen(api.clone());
    // Let the reconcile that Ready itself triggers settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_ready = status_writes(&operator);
    let seen_ready = seen.load(Ordering::SeqCst);

    tokio::task::block_in_place(|| nats.stop());
    let shown = wait_all(&api, &operator, "NatsUnavailable", |(s, r, reconciling)| {
        s == "False" && r == "NatsUnavailable" && *reconciling
    })
    .await;
    // Retries while it is down write nothing more: one status write per Component.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let writes_down = status_writes(&operator);
    assert_eq!(
        writes_down - writes_ready,
        COMPONENTS as u64,
        "one status write per Component for the outage"
    );
    let seen_down = seen.load(Ordering::SeqCst);
    assert_eq!(
        seen_down - seen_ready,
        COMPONENTS as u64,
        "the API server saw one write per Component for the outage"
    );

    tokio::task::block_in_place(|| nats.start_again());
    let cleared = wait_all(&api, &operator, "Ready again", |(s, _, reconciling)| {
        s == "True" && !reconciling
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status_writes(&operator) - writes_down,
        COMPONENTS as u64,
        "one status write per Component for the return"
    );
    assert_eq!(
        seen.load(Ordering::SeqCst) - seen_down,
        COMPONENTS as u64,
        "the API server saw one write per Component for the return"
    );
    eprintln!(
        "default resync: {COMPONENTS} Components showed NatsUnavailable {:.1} s after nats-server stopped, and Ready {:.1} s after it was back",
        shown.as_secs_f64(),
        cleared.as_secs_f64()
    );
    assert!(shown < WITHIN, "outage shown after {shown:?}");
    assert!(cleared < WITHIN, "return shown after {cleared:?}");
}
