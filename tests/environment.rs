//! The test environment itself: a real control plane (etcd, kube-apiserver, garbage collector),
//! the Dapr Component CRD, and kubectl, as every other integration test relies on them.

use crate::support;

use std::time::Duration;

use jetstream_kv_operator::dapr::Component;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

#[tokio::test]
async fn api_server_reports_its_real_version() {
    let client = support::client().await;
    let version = client.apiserver_version().await.expect("GET /version");
    let expected = include_str!("../test-env/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION in versions.env");
    assert_eq!(version.git_version, expected);
    assert_eq!(support::control_plane().version, expected);
}

#[tokio::test]
async fn kubectl_applied_component_reads_back_through_the_typed_api() {
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "env-component").await;
    support::control_plane().apply(&format!(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
  namespace: {ns}
auth:
  secretStore: vault
scopes: [orders, billing]
spec:
  type: state.jetstream
  version: v1
  metadata:
  - name: natsURL
    value: nats://nats:4222
  - name: replicas
    value: 3
  - name: jwt
    secretKeyRef: {{name: nats-user, key: jwt}}
"#,
        ns = ns.name
    ));
    let api: Api<Component> = Api::namespaced(client, &ns.name);
    let c = api
        .get("statestore")
        .await
        .expect("typed get of the Component");
    assert_eq!(c.spec.type_, "state.jetstream");
    assert_eq!(c.spec.version, "v1");
    assert_eq!(
        c.auth.as_ref().and_then(|a| a.secret_store.as_deref()),
        Some("vault")
    );
    assert_eq!(c.scopes, ["orders", "billing"]);
    let replicas = &c.spec.metadata[1];
    assert_eq!(replicas.name, "replicas");
    assert_eq!(
        replicas.value,
        Some(serde_json::json!(3)),
        "a JSON number stays a number"
    );
    let jwt = &c.spec.metadata[2];
    let secret_ref = jwt.secret_key_ref.as_ref().expect("secretKeyRef");
    assert_eq!(
        (secret_ref.name.as_str(), secret_ref.key.as_deref()),
        ("nats-user", Some("jwt"))
    );
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let client = support::client().await;
    let ns = support::TestNamespace::new(&client, "env-gc").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns.name);
    let owner: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "owner"}
    }))
    .unwrap();
    let owner = api.create(&PostParams::default(), &owner).await.unwrap();
    let owned: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "owned", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid.clone().unwrap()
        }]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &owned).await.unwrap();
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    support::eventually(
        Duration::from_secs(60),
        "the owned ConfigMap to be garbage-collected",
        || async {
            api.get_opt("owned")
                .await
                .ok()
                .and_then(|o| o.is_none().then_some(()))
        },
        async || support::describe(&ns.name, "configmap", "owned"),
    )
    .await;
}
