//! Audit mode against the real API server and nats-server: 51 Components whose buckets and
//! streams are missing, differ, match, are refused or are to be deleted, beside buckets and
//! streams no Component names. In audit mode nats-server records no request that changes a
//! stream (its API audit advisories), no Component is written (resourceVersions), and every
//! KeyValueBucket and JetStreamStream shows its plan; enforce mode then sends exactly the
//! requests those plans name, seen by the same subscriber (the positive control).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::crd::MANAGER;
use jetstream_kv_operator::dapr::Component;
use jetstream_kv_operator::nats::bucket::{Desired, desired_stream};
use jetstream_kv_operator::nats::stream::planned::{Planned, PlannedAction};
use jetstream_kv_operator::pubsub::JetStreamStream;
use jetstream_kv_operator::settings::BucketSettings;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use support::advisories::Advisories;
use support::operator::Operator;
use support::{ComponentManifest, TestNamespace, control_plane, eventually, nats};

/// What a Component of the test is, and what enforce mode must do for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// No bucket: create.
    Missing,
    /// A bucket the operator made for it, with history 1; the Component asks 5: update.
    Differs,
    /// A bucket made by hand, adopted, with history 1; the Component asks 5: update.
    Adopted,
    /// A bucket made by hand, only verified; the Component asks history 5: refuse.
    Mismatch,
    /// A bucket made by hand that matches: nothing.
    Matches,
    /// A pub/sub Component whose stream is missing: create.
    StreamMissing,
    /// A Component deleted with deletion-policy delete and the operator's finalizer, whose
    /// bucket the operator made: delete.
    Deleted,
    /// No bucket, and a password in a natsURL read from a Secret: create, and never show it.
    UrlFromSecret,
}

const CASES: [(Case, usize); 8] = [
    (Case::Missing, 12),
    (Case::Differs, 10),
    (Case::Adopted, 5),
    (Case::Mismatch, 8),
    (Case::Matches, 5),
    (Case::StreamMissing, 8),
    (Case::Deleted, 3),
    (Case::UrlFromSecret, 1),
];

/// The action each case's plan shows.
fn expected_action(case: Case) -> PlannedAction {
    match case {
        Case::Missing | Case::StreamMissing | Case::UrlFromSecret => PlannedAction::Create,
        Case::Differs | Case::Adopted => PlannedAction::Update,
        Case::Mismatch => PlannedAction::Refuse,
        Case::Matches => PlannedAction::None,
        Case::Deleted => PlannedAction::Delete,
    }
}

fn operator(ns: &str, mode: &str) -> Operator {
    Operator::start(
        &control_plane().kubeconfig,
        &[
            "--mode",
            mode,
            "--namespaces",
            ns,
            "--resync-interval",
            "4s",
            "--max-backoff",
            "2s",
        ],
    )
}

/// The resourceVersion of every Component of `ns`.
async fn versions(api: &Api<Component>) -> BTreeMap<String, String> {
    api.list(&ListParams::default())
        .await
        .expect("list Components")
        .items
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap_or_default(),
                c.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn audit_changes_nothing_shows_every_plan_and_enforce_applies_them() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "audit").await;
    let url = nats().url();
    let js = support::jetstream(&url).await;
    let suffix = support::random_suffix();

    // The Components, and what NATS holds before the operator runs.
    let mut cases = BTreeMap::new();
    let password = format!("pw{}", support::random_suffix());
    let with_password = url.replacen("nats://", &format!("nats://audit:{password}@"), 1);
    assert_ne!(with_password, url, "{url}");
    let mut manifests = vec![
        serde_yaml::to_string(&support::fixtures::secret(
            &ns.name,
            "nats-url",
            &[("natsURL", &with_password)],
        ))
        .unwrap(),
    ];
    for (case, n) in CASES {
        for i in 0..n {
            let name = format!("{case:?}-{i}").to_lowercase();
            let bucket = format!("audit_{suffix}_{name}").replace('-', "_");
            let owner = format!("{}/{name}", ns.name);
            let manifest = ComponentManifest::store(&ns.name, &name, &url, &bucket);
            let history = BucketSettings::default();
            let manifest = match case {
                Case::Missing => manifest,
                Case::UrlFromSecret => ComponentManifest::new(&ns.name, &name)
                    .item_from_secret("natsURL", "nats-url", Some("natsURL"))
                    .item("bucket", &bucket),
                Case::Differs => {
                    let desired = Desired {
                        bucket: &bucket,
                        owner: &owner,
                        settings: &history,
                    };
                    js.create_stream(desired_stream(&desired))
                        .await
                        .expect("the operator's bucket");
                    manifest.settings(&[("history", "5")])
                }
                Case::Adopted | Case::Mismatch | Case::Matches => {
                    js.create_key_value(kv::Config {
                        bucket: bucket.clone(),
                        history: 1,
                        ..Default::default()
                    })
                    .await
                    .expect("a bucket made by hand");
                    match case {
                        Case::Adopted => {
                            manifest.settings(&[("history", "5"), ("on-existing", "adopt")])
                        }
                        Case::Mismatch => manifest.settings(&[("history", "5")]),
                        _ => manifest,
                    }
                }
                Case::StreamMissing => ComponentManifest::new(&ns.name, &name)
                    .type_("pubsub.jetstream")
                    .item("natsURL", &url)
                    .item("allowedTopics", &format!("orders{i},payments{i}")),
                Case::Deleted => {
                    let desired = Desired {
                        bucket: &bucket,
                        owner: &owner,
                        settings: &history,
                    };
                    js.create_stream(desired_stream(&desired))
                        .await
                        .expect("the operator's bucket");
                    manifest.settings(&[("deletion-policy", "delete")])
                }
            };
            manifests.push(manifest.yaml());
            cases.insert(name, case);
        }
    }
    // Buckets and streams no Component names: never touched.
    let mut extras = Vec::new();
    for i in 0..3 {
        let bucket = format!("audit_{suffix}_extra_{i}");
        js.create_key_value(kv::Config {
            bucket: bucket.clone(),
            ..Default::default()
        })
        .await
        .expect("an extra bucket");
        extras.push(format!("KV_{bucket}"));
    }
    for i in 0..2 {
        let name = format!("AUDIT_{suffix}_EXTRA_{i}");
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("audit.{suffix}.extra.{i}.>")],
            ..Default::default()
        })
        .await
        .expect("an extra stream");
        extras.push(name);
    }
    control_plane().apply(&manifests.join("---\n"));
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    for (name, case) in &cases {
        if *case == Case::Deleted {
            // The finalizer an earlier run in enforce mode added, under the operator's manager.
            let finalizer = serde_json::json!({
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "metadata": {"name": name, "finalizers": ["jetstreamkv.io/bucket"]},
            });
            components
                .patch_metadata(
                    name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(finalizer),
                )
                .await
                .expect("the operator's finalizer");
            components
                .delete(name, &DeleteParams::default())
                .await
                .expect("delete");
        }
    }
    let before = versions(&components).await;
    assert_eq!(before.len(), cases.len(), "every Component is there");

    // Audit mode.
    let (advisories, _watcher) = Advisories::start(&url).await;
    let audit = operator(&ns.name, "audit");
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    let jss: Api<JetStreamStream> = Api::namespaced(client.clone(), &ns.name);
    let plans = |kvbs: Api<KeyValueBucket>, jss: Api<JetStreamStream>| async move {
        let mut plans: BTreeMap<String, Vec<Planned>> = BTreeMap::new();
        for k in kvbs.list(&ListParams::default()).await.ok()?.items {
            let plan = k.status.map(|s| s.plan).unwrap_or_default();
            plans.insert(k.metadata.name.unwrap_or_default(), plan);
        }
        for s in jss.list(&ListParams::default()).await.ok()?.items {
            let plan = s.status.map(|s| s.plan).unwrap_or_default();
            plans.insert(s.metadata.name.unwrap_or_default(), plan);
        }
        Some(plans)
    };
    let started = std::time::Instant::now();
    let shown = eventually(
        Duration::from_secs(120),
        "every KeyValueBucket and JetStreamStream to show its plan",
        || {
            let (kvbs, jss, cases) = (kvbs.clone(), jss.clone(), &cases);
            async move {
                let plans = plans(kvbs, jss).await?;
                cases
                    .iter()
                    .all(|(name, case)| {
                        plans.get(name).and_then(|p| p.first()).map(|p| p.action)
                            == Some(expected_action(*case))
                    })
                    .then_some(plans)
            }
        },
        async || audit.log_tail(),
    )
    .await;
    eprintln!(
        "audit mode: {} plans shown in {:?}",
        shown.len(),
        started.elapsed()
    );
    // A resync more, to see that it stays so.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let in_audit = advisories.mutating();
    assert!(
        advisories.count() > 0,
        "nats-server audited the operator's reads in audit mode"
    );
    assert!(
        in_audit.is_empty(),
        "audit mode sent requests that change streams: {in_audit:?}"
    );
    assert_eq!(
        versions(&components).await,
        before,
        "audit mode wrote no Component"
    );
    for (name, case) in &cases {
        let plan = &shown[name][0];
        match case {
            Case::Differs | Case::Adopted => {
                assert_eq!(plan.changes.len(), 1, "{name}: {plan:?}");
                let change = &plan.changes[0];
                assert_eq!(
                    (
                        change.field.as_str(),
                        change.live.as_str(),
                        change.desired.as_str()
                    ),
                    ("history", "1", "5"),
                    "{name}"
                );
            }
            Case::Mismatch => {
                assert_eq!(plan.reason.as_deref(), Some("ConfigMismatch"), "{plan:?}");
                assert_eq!(plan.changes[0].field, "history", "{plan:?}");
            }
            _ => {}
        }
        // Ready says what exists: only a bucket that is there and as asked.
        if matches!(case, Case::Matches) {
            let kvb = kvbs.get(name).await.unwrap();
            assert_eq!(
                kvb.condition("Ready").map(|c| c.status.as_str()),
                Some("True")
            );
        }
        if matches!(case, Case::Missing | Case::Differs | Case::Adopted) {
            let kvb = kvbs.get(name).await.unwrap();
            let ready = kvb.condition("Ready").expect("Ready");
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_str()),
                ("False", "AuditMode")
            );
            assert!(
                ready.message.contains("--mode enforce"),
                "{}",
                ready.message
            );
            let available = kvb.condition("BucketAvailable").expect("BucketAvailable");
            let exists = *case != Case::Missing;
            assert_eq!(available.status == "True", exists, "{name}: {available:?}");
        }
    }
    // What came from a Secret is never shown: not in a plan, a status, an Event or the log.
    let get = |args: &[&str]| control_plane().kubectl(args, None).unwrap();
    for (place, text) in [
        ("the audit operator's log", audit.logs()),
        (
            "KeyValueBuckets",
            get(&["get", "kvb", "-n", &ns.name, "-o", "yaml"]),
        ),
        (
            "JetStreamStreams",
            get(&["get", "jss", "-n", &ns.name, "-o", "yaml"]),
        ),
        (
            "Events",
            get(&["get", "events", "-n", &ns.name, "-o", "yaml"]),
        ),
    ] {
        assert!(!text.is_empty(), "nothing read from {place}");
        assert!(
            !text.contains(&password),
            "the password leaked into {place}"
        );
    }
    audit.terminate();
    eprintln!(
        "audit mode: {} stream requests audited by nats-server, none changes a stream; {} Components unchanged",
        advisories.count(),
        before.len()
    );

    // Enforce mode applies the plans shown, and only them.
    let enforce = operator(&ns.name, "enforce");
    let wanted: BTreeSet<(String, String)> = shown
        .values()
        .flatten()
        .filter_map(|p| {
            let verb = match p.action {
                PlannedAction::Create => "CREATE",
                PlannedAction::Update => "UPDATE",
                PlannedAction::Delete => "DELETE",
                PlannedAction::None | PlannedAction::Refuse => return None,
            };
            Some((verb.to_owned(), p.stream.clone()))
        })
        .collect();
    assert_eq!(wanted.len(), 12 + 10 + 5 + 8 + 3 + 1, "{wanted:?}");
    let done = eventually(
        Duration::from_secs(120),
        "enforce mode to apply every plan",
        || {
            let advisories = advisories.clone();
            let wanted = &wanted;
            async move {
                let done: BTreeSet<(String, String)> = advisories.mutating().into_iter().collect();
                done.is_superset(wanted).then_some(done)
            }
        },
        async || enforce.log_tail(),
    )
    .await;
    // Wait for the results to be reported, then a resync more: nothing else is sent.
    eventually(
        Duration::from_secs(60),
        "the Components deleted with their buckets to be gone",
        || {
            let components = components.clone();
            let cases = &cases;
            async move {
                let left = versions(&components).await;
                cases
                    .iter()
                    .filter(|(_, c)| **c == Case::Deleted)
                    .all(|(name, _)| !left.contains_key(name))
                    .then_some(())
            }
        },
        async || enforce.log_tail(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent = advisories.mutating();
    let done_now: BTreeSet<(String, String)> = sent.iter().cloned().collect();
    assert_eq!(
        done_now, wanted,
        "enforce sent exactly the plans shown ({done:?})"
    );
    assert_eq!(sent.len(), wanted.len(), "each once: {sent:?}");
    for extra in &extras {
        assert!(!sent.iter().any(|(_, s)| s == extra), "{extra} was touched");
    }
    // The positive control of the Component check: enforce writes the summary annotations.
    let after = versions(&components).await;
    let rewritten = cases
        .iter()
        .filter(|(name, c)| **c == Case::Missing && after.get(*name) != before.get(*name))
        .count();
    assert_eq!(
        rewritten, 12,
        "enforce annotated the Components it created buckets for"
    );
    let mismatch = kvbs.get("mismatch-0").await.unwrap();
    assert_eq!(
        mismatch.condition("Ready").map(|c| c.reason.as_str()),
        Some("ConfigMismatch")
    );
    let history = js
        .get_stream(format!("KV_audit_{suffix}_differs_0"))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .max_messages_per_subject;
    assert_eq!(history, 5);
    eprintln!(
        "enforce mode: {} requests that change streams, exactly the {} plans shown",
        sent.len(),
        wanted.len()
    );
}
