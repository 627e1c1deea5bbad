//! The Dapr `Component` resource (`components.dapr.io/v1alpha1`).
//!
//! Dapr's Component has fields at the root beside `spec` (`auth`, `scopes`), which kube's
//! `CustomResource` derive cannot express, so the type and its `Resource` impl are written here.
//! Reading is lenient: any missing or `null` piece takes its default, because a Component the
//! operator cannot deserialize would be invisible to it instead of reported.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The Component `spec.type` of Dapr's JetStream state store: the operator provisions its
/// KV bucket.
pub const JETSTREAM_STATE_TYPE: &str = "state.jetstream";

/// The Component `spec.type` of Dapr's JetStream pub/sub: the operator provisions its streams.
pub const JETSTREAM_PUBSUB_TYPE: &str = "pubsub.jetstream";

/// A Dapr Component, as served by the API server.
///
/// `apiVersion` and `kind` are not fields: they are fixed by the type, written on serialization
/// and checked (when present) on deserialization.
///
/// `Debug` shows the object's identity and spec without inline values and without annotations
/// (`kubectl.kubernetes.io/last-applied-configuration` holds the whole manifest, values and all).
#[derive(Clone, Default, PartialEq)]
pub struct Component {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// What the component is and how it is configured.
    pub spec: ComponentSpec,
    /// Where `secretKeyRef`s are resolved; absent means the Kubernetes secret store.
    pub auth: Option<ComponentAuth>,
    /// App IDs allowed to load the component; empty means all apps in the namespace.
    pub scopes: Vec<String>,
}

/// `spec` of a Dapr Component.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Component type, e.g. `state.jetstream`.
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub type_: String,
    /// Component version, e.g. `v1`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub version: String,
    /// Configuration items.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Vec<MetadataItem>,
    /// How long the sidecar waits for the component to initialise (a Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_timeout: Option<String>,
    /// Whether the sidecar keeps running when the component fails to initialise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_errors: Option<bool>,
}

/// One item of `spec.metadata`: a name and exactly one of `value`, `secretKeyRef`, `envRef`.
///
/// `Debug` never prints an inline value: users do write passwords, JWTs and seeds inline.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataItem {
    /// Item name; Dapr matches names case-insensitively.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Inline value: any JSON value (the CRD preserves unknown fields here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Value taken from a Secret in the Component's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// Value taken from an environment variable of the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_ref: Option<String>,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("generation", &self.metadata.generation)
            .field("spec", &self.spec)
            .field("auth", &self.auth)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for MetadataItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataItem")
            .field("name", &self.name)
            .field("value", &self.value.as_ref().map(|_| "<not shown>"))
            .field("secret_key_ref", &self.secret_key_ref)
            .field("env_ref", &self.env_ref)
            .finish()
    }
}

/// A reference to one key of a Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The key in the Secret; absent means the same as `name` (Dapr's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Root-level `auth` of a Component.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentAuth {
    /// Name of the Dapr secret store that resolves `secretKeyRef`s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_store: Option<String>,
}

impl Component {
    /// Whether this Component is a `state.jetstream` state store (type compared
    /// case-insensitively, as Dapr does).
    ///
    /// The version is deliberately not checked: a `state.jetstream` with an unsupported version
    /// is still ours, so that it gets a clear error instead of being silently ignored.
    pub fn is_jetstream_state_store(&self) -> bool {
        self.spec.type_.eq_ignore_ascii_case(JETSTREAM_STATE_TYPE)
    }

    /// Whether this Component is Dapr's `pubsub.jetstream` (type compared case-insensitively).
    pub fn is_jetstream_pubsub(&self) -> bool {
        self.spec.type_.eq_ignore_ascii_case(JETSTREAM_PUBSUB_TYPE)
    }

    /// Whether the operator provisions something for this Component: a state store's bucket
    /// or a pub/sub's stream.
    pub fn is_ours(&self) -> bool {
        self.is_jetstream_state_store() || self.is_jetstream_pubsub()
    }
}

impl k8s_openapi::Resource for Component {
    const API_VERSION: &'static str = "dapr.io/v1alpha1";
    const GROUP: &'static str = "dapr.io";
    const KIND: &'static str = "Component";
    const VERSION: &'static str = "v1alpha1";
    const URL_PATH_SEGMENT: &'static str = "components";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for Component {
    const LIST_KIND: &'static str = "ComponentList";
}

impl k8s_openapi::Metadata for Component {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The serialized shape, borrowed, so that serializing needs no clone.
///
/// An empty spec is left out: a Component built only to carry metadata (say, for a server-side
/// apply of annotations) must never claim, and so overwrite, the user's spec.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireRef<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: &'a ObjectMeta,
    #[serde(skip_serializing_if = "is_empty_spec")]
    spec: &'a ComponentSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: &'a Option<ComponentAuth>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scopes: &'a [String],
}

/// The deserialized shape: everything optional.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    spec: ComponentSpec,
    #[serde(default)]
    auth: Option<ComponentAuth>,
    #[serde(default, deserialize_with = "null_as_default")]
    scopes: Vec<String>,
}

impl Serialize for Component {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use k8s_openapi::Resource as _;
        WireRef {
            api_version: Self::API_VERSION,
            kind: Self::KIND,
            metadata: &self.metadata,
            spec: &self.spec,
            auth: &self.auth,
            scopes: &self.scopes,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Component {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use k8s_openapi::Resource as _;
        use serde::de::Error as _;
        let wire = Wire::deserialize(deserializer)?;
        // Missing is fine (a bare spec in a test or a list item), a different type is not: that
        // would be some other object read as a Component.
        if let Some(api_version) = wire.api_version.filter(|v| v != Self::API_VERSION) {
            return Err(D::Error::custom(format!(
                "expected apiVersion {:?}, got {api_version:?}",
                Self::API_VERSION
            )));
        }
        if let Some(kind) = wire.kind.filter(|k| k != Self::KIND) {
            return Err(D::Error::custom(format!(
                "expected kind {:?}, got {kind:?}",
                Self::KIND
            )));
        }
        Ok(Self {
            metadata: wire.metadata,
            spec: wire.spec,
            auth: wire.auth,
            scopes: wire.scopes,
        })
    }
}

fn is_empty_spec(spec: &&ComponentSpec) -> bool {
    **spec == ComponentSpec::default()
}

/// Reads `null` as the type's default, as Go's JSON decoding does for Dapr itself.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_an_inline_value_or_the_last_applied_manifest() {
        let secret = "pa55w0rd-in-debug";
        let mut c = Component::default();
        c.metadata.name = Some("orders".into());
        c.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                format!("{{\"value\":\"nats://u:{secret}@h\"}}"),
            )]
            .into(),
        );
        c.spec.metadata = vec![MetadataItem {
            name: "natsURL".into(),
            value: Some(serde_json::json!(format!("nats://u:{secret}@h"))),
            ..Default::default()
        }];
        for text in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!text.contains(secret), "{text}");
            assert!(
                text.contains("natsURL") && text.contains("orders"),
                "{text}"
            );
        }
    }
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinition, JSONSchemaPropsOrArray,
    };
    use serde_json::json;

    fn from_yaml(yaml: &str) -> Component {
        serde_yaml::from_str(yaml).unwrap()
    }

    const FULL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
  namespace: shop
  annotations:
    jetstreamkv.io/history: "5"
spec:
  type: state.jetstream
  version: v1
  initTimeout: 10s
  ignoreErrors: true
  metadata:
  - name: natsURL
    value: nats://nats.nats.svc:4222
  - name: bucket
    value: orders
  - name: jwt
    secretKeyRef:
      name: nats-creds
      key: jwt
  - name: seedKey
    secretKeyRef:
      name: seed
  - name: other
    envRef: SOME_VAR
  - name: number
    value: 5
auth:
  secretStore: kubernetes
scopes:
- checkout
- cart
"#;

    #[test]
    fn reads_a_full_component() {
        let c = from_yaml(FULL);
        assert_eq!(c.metadata.name.as_deref(), Some("statestore"));
        assert_eq!(c.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(c.spec.type_, "state.jetstream");
        assert_eq!(c.spec.version, "v1");
        assert_eq!(c.spec.init_timeout.as_deref(), Some("10s"));
        assert_eq!(c.spec.ignore_errors, Some(true));
        assert_eq!(c.spec.metadata.len(), 6);
        assert_eq!(
            c.spec.metadata[0].value,
            Some(json!("nats://nats.nats.svc:4222"))
        );
        assert_eq!(
            c.spec.metadata[2].secret_key_ref,
            Some(SecretKeyRef {
                name: "nats-creds".into(),
                key: Some("jwt".into())
            })
        );
        assert_eq!(
            c.spec.metadata[3].secret_key_ref.as_ref().unwrap().key,
            None
        );
        assert_eq!(c.spec.metadata[4].env_ref.as_deref(), Some("SOME_VAR"));
        assert_eq!(c.spec.metadata[5].value, Some(json!(5)));
        assert_eq!(c.auth.unwrap().secret_store.as_deref(), Some("kubernetes"));
        assert_eq!(c.scopes, ["checkout", "cart"]);
    }

    #[test]
    fn round_trip_keeps_api_version_kind_and_everything_else() {
        let c = from_yaml(FULL);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["apiVersion"], "dapr.io/v1alpha1");
        assert_eq!(v["kind"], "Component");
        assert_eq!(v["spec"]["type"], "state.jetstream");
        assert_eq!(v["spec"]["initTimeout"], "10s");
        assert_eq!(
            v["spec"]["metadata"][2]["secretKeyRef"]["name"],
            "nats-creds"
        );
        assert_eq!(v["auth"]["secretStore"], "kubernetes");
        let back: Component = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn serializing_writes_only_what_is_there() {
        let v = serde_json::to_value(Component::default()).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {}})
        );

        // A Component that only carries annotations does not touch the spec when applied.
        let mut c = Component::default();
        c.metadata.name = Some("statestore".into());
        c.metadata.annotations = Some([("jetstreamkv.io/ready".into(), "true".into())].into());
        let v = serde_json::to_value(&c).unwrap();
        assert!(v.get("spec").is_none(), "{v}");
        assert_eq!(v["metadata"]["annotations"]["jetstreamkv.io/ready"], "true");

        let mut c = Component::default();
        c.spec.type_ = "state.jetstream".into();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["spec"],
            json!({"type": "state.jetstream", "version": "", "metadata": []})
        );
    }

    #[test]
    fn missing_and_null_pieces_take_defaults() {
        let cases = [
            ("empty object", json!({})),
            ("no spec", json!({"metadata": {"name": "a"}})),
            ("null spec", json!({"spec": null})),
            ("empty spec", json!({"spec": {}})),
            (
                "null fields",
                json!({"spec": {"type": null, "version": null, "metadata": null}}),
            ),
            (
                "null scopes and auth",
                json!({"scopes": null, "auth": null}),
            ),
            ("null metadata", json!({"metadata": null})),
            (
                "item with only a name",
                json!({"spec": {"metadata": [{"name": "x"}]}}),
            ),
            (
                "item with null value",
                json!({"spec": {"metadata": [{"name": "x", "value": null}]}}),
            ),
            (
                "item without a name",
                json!({"spec": {"metadata": [{"value": "v"}]}}),
            ),
            (
                "secretKeyRef without key",
                json!({"spec": {"metadata": [{"name": "x", "secretKeyRef": {"name": "s"}}]}}),
            ),
        ];
        for (case, v) in cases {
            let c: Result<Component, _> = serde_json::from_value(v);
            assert!(c.is_ok(), "{case}: {c:?}");
        }
        let c: Component =
            serde_json::from_value(json!({"spec": {"metadata": [{"name": "x", "value": null}]}}))
                .unwrap();
        assert_eq!(c.spec.metadata[0].value, None);
    }

    #[test]
    fn another_kind_or_api_version_is_rejected() {
        for v in [
            json!({"apiVersion": "v1", "kind": "Component"}),
            json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration"}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment"}),
        ] {
            assert!(
                serde_json::from_value::<Component>(v.clone()).is_err(),
                "{v}"
            );
        }
    }

    #[test]
    fn jetstream_state_store_is_recognised_by_type_only() {
        let cases = [
            ("state.jetstream", "v1", true),
            ("STATE.JetStream", "v1", true),
            ("state.jetstream", "", true),
            // Ours even with a version Dapr rejects, so that the user gets told.
            ("state.jetstream", "v2", true),
            ("pubsub.jetstream", "v1", false),
            ("state.redis", "v1", false),
            ("state.jetstream2", "v1", false),
            ("", "", false),
        ];
        for (type_, version, ours) in cases {
            let mut c = Component::default();
            c.spec.type_ = type_.into();
            c.spec.version = version.into();
            assert_eq!(c.is_jetstream_state_store(), ours, "{type_} {version}");
        }
    }

    #[test]
    fn is_a_namespaced_kube_resource() {
        use kube::Resource as _;
        assert_eq!(Component::group(&()), "dapr.io");
        assert_eq!(Component::version(&()), "v1alpha1");
        assert_eq!(Component::kind(&()), "Component");
        assert_eq!(Component::plural(&()), "components");
        assert_eq!(Component::api_version(&()), "dapr.io/v1alpha1");
        assert_eq!(
            Component::url_path(&(), Some("shop")),
            "/apis/dapr.io/v1alpha1/namespaces/shop/components"
        );
        let c = from_yaml(FULL);
        assert_eq!(c.meta().name.as_deref(), Some("statestore"));
        let oref = c.object_ref(&());
        assert_eq!(oref.kind.as_deref(), Some("Component"));
        assert_eq!(oref.api_version.as_deref(), Some("dapr.io/v1alpha1"));
    }

    #[test]
    fn kube_api_accepts_it() {
        // Compiles only if Component satisfies every bound of Api; never called.
        fn _namespaced(client: kube::Client) -> kube::Api<Component> {
            kube::Api::namespaced(client, "shop")
        }
        fn _all(client: kube::Client) -> kube::Api<Component> {
            kube::Api::all(client)
        }
    }

    #[test]
    fn committed_crd_matches_the_model() {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(include_str!("../../crds/dapr-component.yaml")).unwrap();
        assert_eq!(crd.metadata.name.as_deref(), Some("components.dapr.io"));
        assert_eq!(crd.spec.group, "dapr.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "Component");
        assert_eq!(crd.spec.names.plural, "components");
        assert_eq!(crd.spec.names.list_kind.as_deref(), Some("ComponentList"));
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        // Dapr has no status: one written by us would be pruned.
        assert!(version.subresources.is_none());
        let root = version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let props = root.properties.as_ref().unwrap();
        assert!(!props.contains_key("status"));
        for key in ["apiVersion", "kind", "metadata", "spec", "auth", "scopes"] {
            assert!(props.contains_key(key), "{key}");
        }
        let spec = &props["spec"];
        assert_eq!(
            spec.required.as_deref(),
            Some(&["metadata".to_string(), "type".into(), "version".into()][..])
        );
        let item = spec.properties.as_ref().unwrap()["metadata"]
            .items
            .as_ref()
            .unwrap();
        let item = match item {
            JSONSchemaPropsOrArray::Schema(s) => s,
            other => panic!("metadata items: {other:?}"),
        };
        assert_eq!(item.required.as_deref(), Some(&["name".to_string()][..]));
        let item_props = item.properties.as_ref().unwrap();
        assert_eq!(
            item_props["value"].x_kubernetes_preserve_unknown_fields,
            Some(true)
        );
        assert_eq!(
            item_props["secretKeyRef"].required.as_deref(),
            Some(&["name".to_string()][..])
        );

        // A Component serialized by us validates structurally: every field we write exists.
        let v = serde_json::to_value(from_yaml(FULL)).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(props.contains_key(key), "{key}");
        }
        for key in v["spec"].as_object().unwrap().keys() {
            assert!(
                spec.properties.as_ref().unwrap().contains_key(key),
                "spec.{key}"
            );
        }
    }
}
