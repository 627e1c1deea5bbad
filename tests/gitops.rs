//! No drift with GitOps tools: a pipeline that applies Components with server-side apply under
//! its own field manager (as Flux does) and the operator, which writes its status annotations on
//! the same Components, never conflict, and a re-apply of an unchanged manifest changes nothing.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::{RESYNC, TestNamespace, control_plane, nats, operator, wait_kvb};

const OPERATOR_MANAGER: &str = "jetstream-kv-operator";
const PIPELINE_MANAGER: &str = "flux";

fn manifest(ns: &str, url: &str, bucket: &str, annotations: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\n  \
         namespace: {ns}\n  labels:\n    app.kubernetes.io/part-of: shop\n  annotations:\n{annotations}\
         spec:\n  type: state.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n    \
         value: {url}\n  - name: bucket\n    value: {bucket}\n"
    )
}

/// `kubectl apply --server-side --field-manager=flux` without `--force-conflicts`: fails on any
/// conflict with another field manager.
fn pipeline_apply(manifest: &str) -> String {
    control_plane()
        .kubectl(
            &[
                "apply",
                "--server-side",
                &format!("--field-manager={PIPELINE_MANAGER}"),
                "-f",
                "-",
            ],
            Some(manifest),
        )
        .unwrap_or_else(|e| panic!("the pipeline's apply failed: {e}"))
}

/// `kubectl diff --server-side` as the pipeline, which is how Flux detects drift: `Ok(())` when
/// there is no difference, `Err(diff)` otherwise.
fn pipeline_diff(manifest: &str) -> Result<(), String> {
    control_plane()
        .kubectl(
            &[
                "diff",
                "--server-side",
                &format!("--field-manager={PIPELINE_MANAGER}"),
                "-f",
                "-",
            ],
            Some(manifest),
        )
        .map(|_| ())
}

fn component(ns: &str) -> Value {
    let out = control_plane()
        .kubectl(
            &[
                "-n",
                ns,
                "get",
                "component",
                "statestore",
                "-o",
                "json",
                "--show-managed-fields",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).expect("kubectl -o json")
}

fn resource_version(c: &Value) -> String {
    c["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

/// The fields a manager owns, as the API server's `fieldsV1` JSON.
fn owned_by(c: &Value, manager: &str) -> Vec<Value> {
    c["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .filter(|m| m["manager"] == manager)
        .map(|m| {
            assert_eq!(
                m["operation"], "Apply",
                "{manager} writes with server-side apply: {m}"
            );
            m["fieldsV1"].clone()
        })
        .collect()
}

async fn wait_for_annotations(ns: &str, reason: &str) -> Value {
    support::eventually(
        Duration::from_secs(60),
        &format!("the operator's annotations with reason {reason}"),
        || async {
            let c = component(ns);
            let a = &c["metadata"]["annotations"];
            (a["jetstreamkv.io/reason"] == reason
                && a["jetstreamkv.io/observed-generation"]
                    == c["metadata"]["generation"].to_string().as_str())
            .then_some(c)
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                support::describe(ns, "component", "statestore"),
                operator().log_tail()
            )
        },
    )
    .await
}

fn assert_operator_annotations(c: &Value, ready: &str, reason: &str) {
    let a = &c["metadata"]["annotations"];
    assert_eq!(a["jetstreamkv.io/ready"], ready, "{a:#}");
    assert_eq!(a["jetstreamkv.io/reason"], reason, "{a:#}");
    assert_eq!(
        a["jetstreamkv.io/observed-generation"],
        c["metadata"]["generation"].to_string().as_str(),
        "{a:#}"
    );
}

#[tokio::test]
async fn a_pipeline_reapplying_the_same_manifest_sees_no_conflict_and_changes_nothing() {
    reapplying_changes_nothing("gitops", "", false).await;
}

#[tokio::test]
async fn the_same_with_the_operators_finalizer_on_the_component() {
    // deletion-policy delete: the operator also owns a finalizer on the Component.
    reapplying_changes_nothing(
        "gitops-finalizer",
        "    jetstreamkv.io/deletion-policy: delete\n",
        true,
    )
    .await;
}

async fn reapplying_changes_nothing(test: &str, extra_annotations: &str, finalizer: bool) {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, test).await;
    let bucket = format!("gitops_{}", support::random_suffix());
    let annotations =
        format!("    team: shop\n    jetstreamkv.io/history: \"2\"\n{extra_annotations}");
    let m = manifest(&ns.name, &nats().url(), &bucket, &annotations);

    // Created by the pipeline, then made Ready by the operator.
    pipeline_apply(&m);
    wait_kvb(&ns.name, "statestore", "Ready", Duration::from_secs(60));
    let before = wait_for_annotations(&ns.name, "BucketManaged").await;
    assert_operator_annotations(&before, "true", "BucketManaged");

    // Each side owns its own fields: the operator exactly its three annotations, the pipeline
    // none of them.
    let mut metadata = serde_json::json!({"f:annotations": {
        "f:jetstreamkv.io/observed-generation": {},
        "f:jetstreamkv.io/ready": {},
        "f:jetstreamkv.io/reason": {},
    }});
    if finalizer {
        metadata["f:finalizers"] = serde_json::json!({"v:\"jetstreamkv.io/bucket\"": {}});
    }
    assert_eq!(
        owned_by(&before, OPERATOR_MANAGER),
        [serde_json::json!({ "f:metadata": metadata })],
        "the operator owns only its status annotations (and its finalizer)"
    );
    let theirs = owned_by(&before, PIPELINE_MANAGER);
    assert_eq!(theirs.len(), 1);
    let theirs = theirs[0].to_string();
    assert!(
        theirs.contains("f:spec") && theirs.contains("f:team"),
        "{theirs}"
    );
    assert!(!theirs.contains("jetstreamkv.io/ready"), "{theirs}");

    // What Flux does on every interval: a server-side dry-run diff, then an apply.
    pipeline_diff(&m).unwrap_or_else(|diff| panic!("the pipeline sees drift:\n{diff}"));
    let first = pipeline_apply(&m);
    let after_first = component(&ns.name);
    let second = pipeline_apply(&m);
    let after_second = component(&ns.name);
    for out in [&first, &second] {
        assert!(out.contains("serverside-applied"), "{out}");
    }
    assert_eq!(
        resource_version(&after_first),
        resource_version(&before),
        "the first re-apply of an unchanged manifest changed the Component:\n--- before:\n{:#}\n--- after:\n{:#}\n--- operator log:\n{}",
        before,
        after_first,
        operator().log_tail()
    );
    assert_eq!(
        resource_version(&after_second),
        resource_version(&after_first),
        "the second re-apply changed the Component"
    );
    assert_operator_annotations(&after_second, "true", "BucketManaged");
    assert_eq!(after_second["metadata"]["annotations"]["team"], "shop");

    // And the operator does not rewrite anything on its next resyncs either.
    tokio::time::sleep(RESYNC * 2).await;
    pipeline_diff(&m).unwrap_or_else(|diff| panic!("the pipeline sees drift:\n{diff}"));
    assert_eq!(
        resource_version(&component(&ns.name)),
        resource_version(&after_second)
    );
}

#[tokio::test]
async fn pipeline_changes_and_operator_annotations_never_overwrite_each_other() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "gitops-change").await;
    let bucket = format!("gitops_{}", support::random_suffix());
    let url = nats().url();
    pipeline_apply(&manifest(&ns.name, &url, &bucket, "    team: shop\n"));
    wait_kvb(&ns.name, "statestore", "Ready", Duration::from_secs(60));
    wait_for_annotations(&ns.name, "BucketManaged").await;

    // The pipeline changes a setting and drops its own annotation: no conflict, the operator
    // acts on the setting, and its annotations stay.
    let changed = manifest(
        &ns.name,
        &url,
        &bucket,
        "    jetstreamkv.io/history: \"4\"\n",
    );
    pipeline_apply(&changed);
    let js = support::jetstream(&url).await;
    support::eventually(
        Duration::from_secs(60),
        "history 4 on the bucket",
        || async {
            let mut stream = js.get_stream(format!("KV_{bucket}")).await.ok()?;
            let info = stream.info().await.ok()?;
            (info.config.max_messages_per_subject == 4).then_some(())
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                support::describe(&ns.name, "kvb", "statestore"),
                operator().log_tail()
            )
        },
    )
    .await;
    let c = component(&ns.name);
    assert_operator_annotations(&c, "true", "BucketManaged");
    assert!(
        c["metadata"]["annotations"].get("team").is_none(),
        "the pipeline's removal of its own annotation was kept"
    );

    // A spec change (a new generation): the operator reports on it, still without conflict.
    let spec_changed = changed.replace("  version: v1\n", "  version: v1\n  ignoreErrors: true\n");
    pipeline_apply(&spec_changed);
    let c = wait_for_annotations(&ns.name, "BucketManaged").await;
    assert_eq!(c["metadata"]["generation"], 2);
    assert_eq!(c["spec"]["ignoreErrors"], true);
    pipeline_diff(&spec_changed).unwrap_or_else(|diff| panic!("drift after the change:\n{diff}"));
    let rv = resource_version(&c);
    pipeline_apply(&spec_changed);
    assert_eq!(resource_version(&component(&ns.name)), rv);

    // A broken manifest: the operator's annotations say so, and the pipeline still applies the
    // fix without conflict.
    pipeline_apply(&spec_changed.replace(&format!("value: {bucket}"), "value: has.dot"));
    let c = wait_for_annotations(&ns.name, "InvalidBucketName").await;
    assert_operator_annotations(&c, "false", "InvalidBucketName");
    pipeline_apply(&spec_changed);
    let c = wait_for_annotations(&ns.name, "BucketManaged").await;
    assert_operator_annotations(&c, "true", "BucketManaged");
    assert_eq!(
        owned_by(&c, OPERATOR_MANAGER).len(),
        1,
        "one field manager entry for the operator"
    );
}

#[tokio::test]
async fn check_in_ci_reports_the_reason_the_operator_reports_in_the_cluster() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "gitops-check").await;
    let fixture = support::repo_root().join("tests/fixtures/check/bad-components.yaml");

    // What CI says about the manifest...
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetstream-kv-operator"))
        .args(["check", "--output", "json"])
        .arg(&fixture)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let mut first: Vec<(String, String)> = Vec::new();
    for p in report["problems"].as_array().expect("problems") {
        let name = p["name"].as_str().expect("name").to_owned();
        if !first.iter().any(|(n, _)| *n == name) {
            first.push((name, p["reason"].as_str().expect("reason").to_owned()));
        }
    }
    assert_eq!(first.len(), 12, "{report:#}");

    // ...is what the operator says once it is applied: the first problem of each Component is
    // the reason of its KeyValueBucket's Ready condition.
    control_plane()
        .kubectl(
            &["-n", &ns.name, "apply", "-f", support::path_str(&fixture)],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    for (name, reason) in &first {
        let kvb = support::wait_condition(&client, &ns.name, name, "Ready", "False", reason).await;
        let stalled = kvb.condition("Stalled").expect("Stalled");
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", reason.as_str()),
            "{name}"
        );
        let message = &kvb.condition("Ready").expect("Ready").message;
        let checked = report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap();
        assert_eq!(checked["message"], message.as_str(), "{name}: same message");
    }
}
