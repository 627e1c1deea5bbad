use super::*;

use serde_json::json;

fn deployment(name: &str, template_annotations: serde_json::Value) -> Workload {
    deployment_with(name, template_annotations, json!({}))
}

fn deployment_with(
    name: &str,
    template_annotations: serde_json::Value,
    annotations: serde_json::Value,
) -> Workload {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "resourceVersion": "7", "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}, "annotations": template_annotations}},
        },
    }))
    .expect("a Deployment");
    Workload::of_deployment(&d).expect("a spec")
}

fn dapr(app_id: &str) -> serde_json::Value {
    json!({"dapr.io/enabled": "true", "dapr.io/app-id": app_id})
}

fn pod(app: &str, name: &str, health: PodHealth) -> PodFacts {
    PodFacts {
        name: name.into(),
        labels: [("app".to_string(), app.to_string())].into(),
        health,
        deleting: false,
        created: Some(NOW - 600),
    }
}

fn transition() -> Transition {
    Transition {
        uid: "c0ffee".into(),
        since: "2026-12-07T18:00:00Z".into(),
    }
}

const NOW: i64 = 1_796_666_400; // 2026-12-07T18:00:00Z
const COOLDOWN: i64 = 300;

fn scopes(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_workload_loads_the_component_when_dapr_enabled_and_in_scope() {
    let app = deployment("app", dapr("orders"));
    assert_eq!(loads(&app, &[]), Ok(()), "no scopes: every app");
    assert_eq!(loads(&app, &scopes(&["orders", "billing"])), Ok(()));
    assert_eq!(
        loads(&app, &scopes(&["billing"])),
        Err(Skip::OutOfScope),
        "another app's Component"
    );
    let no_id = deployment("noid", json!({"dapr.io/enabled": "true"}));
    assert_eq!(loads(&no_id, &[]), Ok(()));
    assert_eq!(
        loads(&no_id, &scopes(&["noid"])),
        Err(Skip::OutOfScope),
        "no app id: never taken for a scoped app (not even by its name)"
    );
    for off in [
        json!({}),
        json!({"dapr.io/enabled": "false"}),
        json!({"dapr.io/enabled": "", "dapr.io/app-id": "orders"}),
    ] {
        assert_eq!(
            loads(&deployment("plain", off.clone()), &[]),
            Err(Skip::NotDaprEnabled),
            "{off}"
        );
    }
    for on in ["true", "True", "yes", "Y", "on", "1"] {
        assert!(
            deployment("x", json!({"dapr.io/enabled": on})).dapr_enabled(),
            "{on}"
        );
    }
}

#[test]
fn crash_looping_and_not_ready_pods_are_told_apart_from_their_status() {
    let of = |status: serde_json::Value| {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": {"app": "a"}},
            "status": status,
        }))
        .expect("a Pod");
        PodFacts::of(&pod).health
    };
    assert_eq!(
        of(json!({
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "daprd", "image": "", "imageID": "", "ready": false,
                "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        })),
        PodHealth::CrashLooping
    );
    assert_eq!(
        of(json!({"conditions": [{"type": "Ready", "status": "False"}]})),
        PodHealth::NotReady
    );
    assert_eq!(of(json!({})), PodHealth::NotReady, "no status yet");
    assert_eq!(
        of(json!({"conditions": [{"type": "Ready", "status": "True"}]})),
        PodHealth::Ready
    );
}

#[test]
fn only_unhealthy_workloads_in_scope_are_restarted() {
    let workloads = [
        deployment("orders", dapr("orders")),
        deployment("billing", dapr("billing")),
        deployment("healthy", dapr("healthy")),
        deployment("plain", json!({})),
    ];
    let pods = [
        pod("orders", "orders-1", PodHealth::CrashLooping),
        pod("billing", "billing-1", PodHealth::CrashLooping),
        pod("healthy", "healthy-1", PodHealth::Ready),
        pod("plain", "plain-1", PodHealth::CrashLooping),
    ];
    let plan = plan(
        &transition(),
        &scopes(&["orders", "healthy"]),
        &workloads,
        &pods,
        NOW,
        COOLDOWN,
        || true,
    );
    assert_eq!(
        plan.restart,
        [Restart {
            kind: WorkloadKind::Deployment,
            name: "orders".into(),
            resource_version: Some("7".into()),
            why: Unhealthy {
                pod: "orders-1".into(),
                health: PodHealth::CrashLooping
            },
        }]
    );
    // The out-of-scope and not Dapr-enabled ones are not even listed.
    assert_eq!(plan.left, [("Deployment/healthy".into(), Skip::Healthy)]);

    // No scopes: every Dapr-enabled workload, never the plain one.
    let all = super::plan(&transition(), &[], &workloads, &pods, NOW, COOLDOWN, || {
        true
    });
    let names: Vec<_> = all.restart.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["billing", "orders"]);
}

#[test]
fn a_not_ready_pod_counts_and_a_crash_loop_is_named_first() {
    let w = deployment("orders", dapr("orders"));
    assert_eq!(
        unhealthy(
            &w,
            &[
                pod("orders", "a", PodHealth::Ready),
                pod("orders", "b", PodHealth::NotReady),
                pod("orders", "c", PodHealth::CrashLooping),
            ],
            NOW
        ),
        Some(Unhealthy {
            pod: "c".into(),
            health: PodHealth::CrashLooping
        })
    );
    assert_eq!(
        unhealthy(&w, &[pod("orders", "b", PodHealth::NotReady)], NOW).map(|u| u.to_string()),
        Some("pod b not Ready".to_string())
    );
    // Another workload's pods, pods on their way out, or no pods: nothing to heal.
    assert_eq!(
        unhealthy(&w, &[pod("other", "x", PodHealth::CrashLooping)], NOW),
        None
    );
    let mut leaving = pod("orders", "old", PodHealth::CrashLooping);
    leaving.deleting = true;
    assert_eq!(unhealthy(&w, &[leaving], NOW), None);
    assert_eq!(unhealthy(&w, &[], NOW), None);
    // A pod made after the transition started with its bucket there: only starting.
    let mut new = pod("orders", "new", PodHealth::NotReady);
    new.created = Some(NOW + 1);
    assert_eq!(unhealthy(&w, &[new.clone()], NOW), None);
    new.created = Some(NOW);
    assert!(
        unhealthy(&w, &[new], NOW).is_some(),
        "the same second counts"
    );
}

#[test]
fn a_transition_restarts_a_workload_once() {
    let t = transition();
    let pods = [pod("orders", "orders-1", PodHealth::CrashLooping)];
    let restarted = deployment_with(
        "orders",
        dapr("orders"),
        json!({HEALED_FOR: t.key(), HEALED_AT: "2026-12-07T17:00:00Z"}),
    );
    let again = plan(&t, &[], &[restarted], &pods, NOW, COOLDOWN, || true);
    assert!(again.restart.is_empty(), "{again:?}");
    assert_eq!(
        again.left,
        [("Deployment/orders".into(), Skip::AlreadyRestarted)]
    );

    // A later transition of the same Component (Ready flipped again) is another key.
    let later = Transition {
        since: "2026-12-07T19:00:00Z".into(),
        ..t.clone()
    };
    assert_ne!(later.key(), t.key());
    let w = deployment_with(
        "orders",
        dapr("orders"),
        json!({HEALED_FOR: t.key(), HEALED_AT: "2026-12-07T17:00:00Z"}),
    );
    let next = plan(&later, &[], &[w], &pods, NOW, COOLDOWN, || true);
    assert_eq!(next.restart.len(), 1, "{next:?}");
}

#[test]
fn a_workload_restarted_lately_for_another_component_cools_down() {
    let at = jiff::Timestamp::from_second(NOW - 60)
        .expect("time")
        .to_string();
    let w = deployment_with(
        "orders",
        dapr("orders"),
        json!({HEALED_FOR: "other@2026-12-07T17:59:00Z", HEALED_AT: at}),
    );
    let pods = [pod("orders", "orders-1", PodHealth::CrashLooping)];
    let cooling = plan(
        &transition(),
        &[],
        std::slice::from_ref(&w),
        &pods,
        NOW,
        COOLDOWN,
        || true,
    );
    assert_eq!(
        cooling.left,
        [("Deployment/orders".into(), Skip::CoolingDown)]
    );
    let after = plan(
        &transition(),
        &[],
        &[w],
        &pods,
        NOW + COOLDOWN,
        COOLDOWN,
        || true,
    );
    assert_eq!(after.restart.len(), 1);
}

#[test]
fn past_the_rate_limit_a_workload_is_left_to_the_kubelet() {
    let workloads: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| deployment(n, dapr(n)))
        .collect();
    let pods: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| pod(n, n, PodHealth::CrashLooping))
        .collect();
    let mut limit = RateLimit::new(2);
    let plan = plan(&transition(), &[], &workloads, &pods, NOW, COOLDOWN, || {
        limit.take(0.0)
    });
    let names: Vec<_> = plan.restart.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(plan.left, [("Deployment/c".into(), Skip::RateLimited)]);
}

#[test]
fn the_rate_limit_refills_over_a_minute() {
    let mut limit = RateLimit::new(6);
    assert!((0..6).all(|_| limit.take(100.0)));
    assert!(!limit.take(100.0), "the burst is the limit");
    assert!(!limit.take(105.0), "half a token after 5 s");
    assert!(limit.take(110.0), "one token per 10 s");
    assert!(!limit.take(110.0));
    // Never more than the limit, however long it was idle.
    assert!((0..6).all(|_| limit.take(10_000.0)));
    assert!(!limit.take(10_000.0));
    assert!(!RateLimit::new(0).take(0.0), "0 lets nothing through");
}

#[test]
fn a_workload_being_deleted_or_without_a_selector_is_left_alone() {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "gone", "deletionTimestamp": "2026-12-07T18:00:00Z"},
        "spec": {"selector": {"matchLabels": {"app": "gone"}},
                 "template": {"metadata": {"annotations": {"dapr.io/enabled": "true"}}}},
    }))
    .expect("a Deployment");
    let gone = Workload::of_deployment(&d).expect("a spec");
    let pods = [pod("gone", "gone-1", PodHealth::CrashLooping)];
    let p = plan(&transition(), &[], &[gone], &pods, NOW, COOLDOWN, || true);
    assert_eq!(p.left, [("Deployment/gone".into(), Skip::Deleting)]);

    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "all"},
        "spec": {"selector": {},
                 "template": {"metadata": {"annotations": {"dapr.io/enabled": "true"}}}},
    }))
    .expect("a Deployment");
    let all = Workload::of_deployment(&d).expect("a spec");
    assert_eq!(
        unhealthy(&all, &pods, NOW),
        None,
        "an empty selector selects no pod here"
    );
}

#[test]
fn stateful_sets_are_workloads_too() {
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}, "annotations": dapr("db")}}},
    }))
    .expect("a StatefulSet");
    let w = Workload::of_stateful_set(&s).expect("a spec");
    let p = plan(
        &transition(),
        &scopes(&["db"]),
        &[w],
        &[pod("db", "db-0", PodHealth::NotReady)],
        NOW,
        COOLDOWN,
        || true,
    );
    assert_eq!(p.restart.len(), 1);
    assert_eq!(p.restart[0].kind, WorkloadKind::StatefulSet);
}
