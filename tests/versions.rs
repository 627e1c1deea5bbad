//! The operator's resources move from `v1alpha1` to `v1beta1`, on the real API server: objects
//! stored at `v1alpha1` (by the CRDs of before) are read at both versions once the new CRDs are
//! applied (same schema: the API server converts by changing `apiVersion`), `kubectl get kvb`
//! works, and the migration of docs/upgrade.md rewrites every stored object at `v1beta1`
//! (resourceVersions change) so that `status.storedVersions` can be `[v1beta1]`. One test: CRDs
//! are cluster-wide.

use crate::support;

use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::schema::Crd;
use kube::Api;
use support::{TestNamespace, control_plane};

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    control_plane()
        .kubectl(args, stdin)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// The CRD as it was before v1beta1: v1alpha1 only, its storage version.
fn old_crd(crd: Crd) -> serde_json::Value {
    let mut old = serde_json::to_value(crd.needed()).unwrap();
    let versions = old["spec"]["versions"].as_array_mut().unwrap();
    versions.retain(|v| v["name"] == "v1alpha1");
    let v = versions[0].as_object_mut().unwrap();
    v.insert("storage".into(), true.into());
    v.remove("deprecated");
    v.remove("deprecationWarning");
    old
}

fn stored_versions(crd: Crd) -> Vec<String> {
    let out = kubectl(
        &[
            "get",
            "crd",
            &crd.name(),
            "-o",
            "jsonpath={.status.storedVersions}",
        ],
        None,
    );
    serde_json::from_str(&out).unwrap()
}

fn resource_version(args: &[&str]) -> String {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "jsonpath={.metadata.resourceVersion}"]);
    kubectl(&all, None)
}

#[tokio::test]
async fn objects_stored_at_v1alpha1_read_at_both_versions_and_migrate_to_v1beta1() {
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "versions").await;
    let policy = format!("versions-{}", ns.name);

    // The CRDs of before, and objects written through them.
    for crd in Crd::ALL {
        kubectl(
            &[
                "delete",
                "crd",
                &crd.name(),
                "--ignore-not-found",
                "--wait=true",
            ],
            None,
        );
        kubectl(
            &["apply", "--server-side", "-f", "-"],
            Some(&old_crd(crd).to_string()),
        );
    }
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
        None,
    );
    let objects = format!(
        "apiVersion: jetstreamkv.io/v1alpha1\nkind: KeyValueBucket\nmetadata:\n  name: orders\n  namespace: {ns}\nspec:\n  component: orders\n  bucket: orders\n---\n\
         apiVersion: jetstreamkv.io/v1alpha1\nkind: JetStreamStream\nmetadata:\n  name: events\n  namespace: {ns}\nspec:\n  component: events\n---\n\
         apiVersion: jetstreamkv.io/v1alpha1\nkind: NatsServerPolicy\nmetadata:\n  name: {policy}\nspec:\n  conditions:\n  - namespaces: [{ns}]\n  servers: [{{host: nats.example}}]\n  requireTLS: true\n",
        ns = ns.name
    );
    kubectl(&["apply", "-f", "-"], Some(&objects));
    for crd in Crd::ALL {
        assert_eq!(stored_versions(crd), ["v1alpha1"], "{crd:?}");
    }

    // The new CRDs: v1beta1 stored, v1alpha1 still served.
    control_plane().install_crds();
    for crd in Crd::ALL {
        assert_eq!(stored_versions(crd), ["v1alpha1", "v1beta1"], "{crd:?}");
    }
    for version in ["v1alpha1", "v1beta1"] {
        let read = kubectl(
            &[
                "get",
                &format!("keyvaluebuckets.{version}.jetstreamkv.io"),
                "-n",
                &ns.name,
                "orders",
                "-o",
                "json",
            ],
            None,
        );
        let read: serde_json::Value = serde_json::from_str(&read).unwrap();
        assert_eq!(read["apiVersion"], format!("jetstreamkv.io/{version}"));
        assert_eq!(read["spec"]["bucket"], "orders");
        let policy = kubectl(
            &[
                "get",
                &format!("natsserverpolicies.{version}.jetstreamkv.io"),
                &policy,
                "-o",
                "json",
            ],
            None,
        );
        let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
        assert_eq!(policy["spec"]["requireTLS"], true, "{version}");
    }
    let typed: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    assert_eq!(
        typed.get("orders").await.unwrap().spec.bucket.as_deref(),
        Some("orders")
    );
    let table = kubectl(&["get", "kvb", "-n", &ns.name], None);
    assert!(
        table.contains("orders") && table.contains("BUCKET"),
        "{table}"
    );

    // The migration of docs/upgrade.md: every object rewritten, then storedVersions.
    let before = [
        resource_version(&["kvb", "-n", &ns.name, "orders"]),
        resource_version(&["jetstreamstreams.jetstreamkv.io", "-n", &ns.name, "events"]),
        resource_version(&["natsserverpolicies.jetstreamkv.io", &policy]),
    ];
    for crd in Crd::ALL {
        let listed = kubectl(&["get", &crd.name(), "-A", "-o", "json"], None);
        kubectl(&["replace", "-f", "-"], Some(&listed));
        kubectl(
            &[
                "patch",
                "crd",
                &crd.name(),
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"storedVersions":["v1beta1"]}}"#,
            ],
            None,
        );
    }
    let after = [
        resource_version(&["kvb", "-n", &ns.name, "orders"]),
        resource_version(&["jetstreamstreams.jetstreamkv.io", "-n", &ns.name, "events"]),
        resource_version(&["natsserverpolicies.jetstreamkv.io", &policy]),
    ];
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(
            b, a,
            "the object was not written again (still stored at v1alpha1)"
        );
    }
    for crd in Crd::ALL {
        assert_eq!(stored_versions(crd), ["v1beta1"], "{crd:?}");
    }
    let read = kubectl(
        &[
            "get",
            "keyvaluebuckets.v1alpha1.jetstreamkv.io",
            "-n",
            &ns.name,
            "orders",
            "-o",
            "jsonpath={.spec.bucket}",
        ],
        None,
    );
    assert_eq!(read, "orders");
    kubectl(&["delete", "natsserverpolicy", &policy], None);
}
