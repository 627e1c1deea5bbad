//! `spec.metadata` read with Dapr's rules, before any Secret is read.
//!
//! The result says, for each item, either its inline value or which Secret key holds it. Reading
//! the Secrets is the next step's job (I/O); checking the values is [`super::store`]'s.

use std::collections::{BTreeSet, HashMap};

use super::ComponentError;
use super::component::{Component, MetadataItem};
use crate::secret_value::SecretValue;

/// Dapr versions of the `state.jetstream` component (empty is what Dapr assumes as `v1`).
const SUPPORTED_VERSIONS: [&str; 3] = ["v1", "v0", ""];

/// The most metadata items a Component may have. `state.jetstream` reads five; the cap keeps the
/// cost of a hostile manifest (the API server accepts about 1.5 MiB) small and bounded.
pub const MAX_ITEMS: usize = 256;

/// The longest metadata item name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The largest inline metadata value, in bytes. A user JWT is about 1 KiB; a `natsURL` with a
/// few servers well under that.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The secret store name under which Dapr reads Kubernetes Secrets.
const KUBERNETES_SECRET_STORE: &str = "kubernetes";

/// Whether a boolean metadata item is true as Dapr decodes it (Go's `strconv.ParseBool`).
pub(crate) fn is_true(text: &str) -> bool {
    matches!(text, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Where the value of one metadata item comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// Written in the Component. Wrapped because users do put credentials inline.
    Inline(SecretValue),
    /// A key of a Secret in the Component's own namespace.
    Secret {
        /// The Secret's name.
        name: String,
        /// The key (already defaulted to the Secret's name when the manifest omits it).
        key: String,
    },
}

/// One metadata item, with its name as written (matching is case-insensitive later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataEntry {
    /// The name as written in the manifest.
    pub name: String,
    /// Where its value comes from.
    pub source: ValueSource,
}

/// Which secret stores resolve a Component's `secretKeyRef`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretStores {
    /// Kubernetes Secrets of the Component's namespace (the operator): any other
    /// `auth.secretStore` is unsupported.
    Kubernetes,
    /// The local secret stores of a folder of Component files (`apply`), which check the
    /// `auth.secretStore` themselves when they resolve the references.
    Local,
}

/// Reads `spec.metadata` of a Component with Dapr's rules, in this order: the version, duplicate
/// names, `envRef`s, then `secretKeyRef`s against the secret store. The first broken rule is
/// returned, so the same manifest always gets the same reason.
pub fn parse_metadata(component: &Component) -> Result<Vec<MetadataEntry>, ComponentError> {
    parse_metadata_in(component, SecretStores::Kubernetes)
}

/// [`parse_metadata`], with the `secretKeyRef`s resolved by `stores`.
pub fn parse_metadata_in(
    component: &Component,
    stores: SecretStores,
) -> Result<Vec<MetadataEntry>, ComponentError> {
    let version = &component.spec.version;
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(ComponentError::UnsupportedVersion {
            version: version.clone(),
        });
    }
    let items = &component.spec.metadata;
    check_sizes(items)?;
    check_unique_names(items)?;
    if let Some((item, env)) = items.iter().find_map(|item| {
        item.env_ref
            .as_ref()
            .filter(|e| !e.is_empty())
            .map(|e| (item, e))
    }) {
        return Err(ComponentError::EnvRefUnsupported {
            name: item.name.clone(),
            env: env.clone(),
        });
    }
    let store = match stores {
        SecretStores::Kubernetes => secret_store(component),
        SecretStores::Local => None,
    };
    items.iter().map(|item| entry(item, store)).collect()
}

/// Names of the Secrets the Component references, so that a Secret event can be mapped back to
/// the Components that read it. Independent of whether the Component is otherwise valid.
pub fn secret_names(component: &Component) -> BTreeSet<String> {
    component
        .spec
        .metadata
        .iter()
        .filter_map(|item| item.secret_key_ref.as_ref())
        .filter(|r| !r.name.is_empty())
        .map(|r| r.name.clone())
        .collect()
}

/// The non-Kubernetes secret store the Component names, if any.
fn secret_store(component: &Component) -> Option<&str> {
    component
        .auth
        .as_ref()
        .and_then(|auth| auth.secret_store.as_deref())
        .filter(|store| !store.is_empty() && *store != KUBERNETES_SECRET_STORE)
}

/// Caps on the item count and on each name and inline value, checked before any per-item work.
fn check_sizes(items: &[MetadataItem]) -> Result<(), ComponentError> {
    if items.len() > MAX_ITEMS {
        return Err(ComponentError::TooMuchMetadata {
            what: format!("{} metadata items", items.len()),
            limit: format!("{MAX_ITEMS} items"),
        });
    }
    for (i, item) in items.iter().enumerate() {
        if item.name.len() > MAX_NAME_BYTES {
            return Err(ComponentError::TooMuchMetadata {
                what: format!(
                    "the name of metadata item #{} ({} bytes)",
                    i + 1,
                    item.name.len()
                ),
                limit: format!("{MAX_NAME_BYTES} bytes"),
            });
        }
        let value = match &item.value {
            None | Some(serde_json::Value::Null) => 0,
            Some(serde_json::Value::String(s)) => s.len(),
            // Compact JSON is at least as long as the count of its leaves; measured exactly only
            // for the rare non-string value.
            Some(other) => other.to_string().len(),
        };
        if value > MAX_VALUE_BYTES {
            return Err(ComponentError::TooMuchMetadata {
                what: format!("the value of metadata item {:?} ({value} bytes)", item.name),
                limit: format!("{MAX_VALUE_BYTES} bytes"),
            });
        }
    }
    Ok(())
}

/// Two names that differ only in case: one pass with a map, so the cost is linear in the items.
fn check_unique_names(items: &[MetadataItem]) -> Result<(), ComponentError> {
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (i, later) in items.iter().enumerate() {
        if let Some(&first) = seen.get(&later.name.to_ascii_lowercase()) {
            return Err(ComponentError::DuplicateMetadata {
                first: items[first].name.clone(),
                second: later.name.clone(),
            });
        }
        seen.insert(later.name.to_ascii_lowercase(), i);
    }
    Ok(())
}

/// One item's source (`envRef` is already ruled out). A `secretKeyRef` with a name wins over
/// `value`, as in Dapr.
fn entry(item: &MetadataItem, store: Option<&str>) -> Result<MetadataEntry, ComponentError> {
    let source = if let Some(secret) = item.secret_key_ref.as_ref().filter(|r| !r.name.is_empty()) {
        if let Some(store) = store {
            return Err(ComponentError::SecretStoreUnsupported {
                name: item.name.clone(),
                store: store.to_owned(),
            });
        }
        let key = match secret.key.as_deref() {
            Some(key) if !key.is_empty() => key.to_owned(),
            _ => secret.name.clone(),
        };
        ValueSource::Secret {
            name: secret.name.clone(),
            key,
        }
    } else {
        ValueSource::Inline(SecretValue::new(inline_value(item.value.as_ref())))
    };
    Ok(MetadataEntry {
        name: item.name.clone(),
        source,
    })
}

/// Dapr's text for an inline value: a JSON string unquoted, anything else as compact JSON.
fn inline_value(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dapr::component::{ComponentAuth, SecretKeyRef};
    use crate::failure::Failure as _;
    use serde_json::json;

    fn component(version: &str, items: Vec<MetadataItem>) -> Component {
        let mut c = Component::default();
        c.spec.type_ = "state.jetstream".into();
        c.spec.version = version.into();
        c.spec.metadata = items;
        c
    }

    fn value(name: &str, value: serde_json::Value) -> MetadataItem {
        MetadataItem {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        }
    }

    fn secret(name: &str, secret: &str, key: Option<&str>) -> MetadataItem {
        MetadataItem {
            name: name.into(),
            secret_key_ref: Some(SecretKeyRef {
                name: secret.into(),
                key: key.map(Into::into),
            }),
            ..Default::default()
        }
    }

    fn env(name: &str, var: &str) -> MetadataItem {
        MetadataItem {
            name: name.into(),
            env_ref: Some(var.into()),
            ..Default::default()
        }
    }

    fn with_store(mut c: Component, store: Option<&str>) -> Component {
        c.auth = Some(ComponentAuth {
            secret_store: store.map(Into::into),
        });
        c
    }

    fn inline(entries: &[MetadataEntry], i: usize) -> &str {
        match &entries[i].source {
            ValueSource::Inline(v) => v.expose(),
            other => panic!("entry {i} is {other:?}"),
        }
    }

    #[test]
    fn supported_versions() {
        for (version, ok) in [
            ("v1", true),
            ("v0", true),
            ("", true),
            ("v2", false),
            ("V1", false),
            ("1", false),
        ] {
            let r = parse_metadata(&component(version, vec![]));
            match r {
                Ok(_) => assert!(ok, "{version} accepted"),
                Err(e) => {
                    assert!(!ok, "{version} rejected: {e}");
                    assert_eq!(e.reason(), "UnsupportedVersion");
                    assert!(e.to_string().contains(&format!("{version:?}")), "{e}");
                }
            }
        }
    }

    #[test]
    fn version_is_checked_before_anything_else() {
        let c = component(
            "v2",
            vec![env("a", "X"), value("b", json!(1)), value("B", json!(2))],
        );
        assert_eq!(
            parse_metadata(&c).unwrap_err().reason(),
            "UnsupportedVersion"
        );
    }

    #[test]
    fn inline_values_become_text_the_way_dapr_does() {
        let cases = [
            (Some(json!("nats://h:4222")), "nats://h:4222"),
            (Some(json!("")), ""),
            (Some(json!("5")), "5"),
            (Some(json!(5)), "5"),
            (Some(json!(-1)), "-1"),
            (Some(json!(2.5)), "2.5"),
            (Some(json!(true)), "true"),
            (Some(json!(false)), "false"),
            (Some(json!({"a": 1})), r#"{"a":1}"#),
            (
                Some(json!({"a": [1, "x"], "b": null})),
                r#"{"a":[1,"x"],"b":null}"#,
            ),
            (Some(json!([1, 2])), "[1,2]"),
            (Some(json!(null)), ""),
            (None, ""),
        ];
        for (v, want) in cases {
            let item = MetadataItem {
                name: "x".into(),
                value: v.clone(),
                ..Default::default()
            };
            let entries = parse_metadata(&component("v1", vec![item])).unwrap();
            assert_eq!(inline(&entries, 0), want, "{v:?}");
        }
    }

    #[test]
    fn names_are_kept_as_written_in_order() {
        let c = component(
            "v1",
            vec![value("natsURL", json!("n")), value("BUCKET", json!("b"))],
        );
        let names: Vec<_> = parse_metadata(&c)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["natsURL", "BUCKET"]);
    }

    #[test]
    fn caps_on_items_names_and_values_give_a_reason() {
        let many = (0..MAX_ITEMS + 1)
            .map(|i| value(&format!("item{i}"), json!("v")))
            .collect();
        let e = parse_metadata(&component("v1", many)).unwrap_err();
        assert_eq!(e.reason(), "TooMuchMetadata");
        assert!(e.to_string().contains("257 metadata items"), "{e}");

        let long_name = value(&"n".repeat(MAX_NAME_BYTES + 1), json!("v"));
        let e = parse_metadata(&component("v1", vec![long_name])).unwrap_err();
        assert_eq!(e.reason(), "TooMuchMetadata");
        // The name itself is not echoed: it could be anything.
        assert!(!e.to_string().contains(&"n".repeat(64)), "{e}");

        let big = value("natsURL", json!("x".repeat(MAX_VALUE_BYTES + 1)));
        let e = parse_metadata(&component("v1", vec![big])).unwrap_err();
        assert_eq!(e.reason(), "TooMuchMetadata");
        assert!(!e.to_string().contains("xxxxxxxx"), "{e}");

        // Exactly at the caps is fine.
        let ok = (0..MAX_ITEMS)
            .map(|i| value(&format!("item{i}"), json!("x".repeat(MAX_VALUE_BYTES))))
            .collect();
        assert!(parse_metadata(&component("v1", ok)).is_ok());
    }

    #[test]
    fn duplicate_check_is_one_pass_and_the_cap_comes_first() {
        // 80,000 distinct names took 46 s when every pair was compared; the map makes it one
        // pass (well under 2 s, even unoptimised on a busy machine), and the count cap refuses
        // them before any per-item work.
        let mut items: Vec<_> = (0..80_000)
            .map(|i| value(&format!("item{i}"), json!("v")))
            .collect();
        let started = std::time::Instant::now();
        assert!(check_unique_names(&items).is_ok());
        let took = started.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        items.push(value("ITEM79999", json!("v")));
        assert!(matches!(
            check_unique_names(&items),
            Err(ComponentError::DuplicateMetadata { ref first, ref second })
                if first == "item79999" && second == "ITEM79999"
        ));
        let e = parse_metadata(&component("v1", items)).unwrap_err();
        assert_eq!(e.reason(), "TooMuchMetadata");
    }

    #[test]
    fn duplicate_names_are_found_case_insensitively() {
        let cases = [
            (vec!["bucket", "Bucket"], Some(("bucket", "Bucket"))),
            (
                vec!["natsURL", "bucket", "NATSURL"],
                Some(("natsURL", "NATSURL")),
            ),
            (vec!["jwt", "jwt"], Some(("jwt", "jwt"))),
            (vec!["a", "b", "c", "B"], Some(("b", "B"))),
            (vec!["natsURL", "bucket", "jwt", "seedKey"], None),
        ];
        for (names, want) in cases {
            let items = names.iter().map(|n| value(n, json!("v"))).collect();
            let r = parse_metadata(&component("v1", items));
            match want {
                None => assert!(r.is_ok(), "{names:?}: {r:?}"),
                Some((first, second)) => {
                    let e = r.unwrap_err();
                    assert_eq!(
                        e,
                        ComponentError::DuplicateMetadata {
                            first: first.into(),
                            second: second.into()
                        },
                        "{names:?}"
                    );
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{first:?}")), "{msg}");
                    assert!(msg.contains(&format!("{second:?}")), "{msg}");
                }
            }
        }
    }

    #[test]
    fn duplicates_win_over_item_errors() {
        let c = component("v1", vec![env("jwt", "A"), value("JWT", json!("x"))]);
        assert_eq!(
            parse_metadata(&c).unwrap_err().reason(),
            "DuplicateMetadata"
        );
    }

    #[test]
    fn env_ref_is_reported() {
        let c = component(
            "v1",
            vec![value("bucket", json!("b")), env("jwt", "NATS_JWT")],
        );
        let e = parse_metadata(&c).unwrap_err();
        assert_eq!(
            e,
            ComponentError::EnvRefUnsupported {
                name: "jwt".into(),
                env: "NATS_JWT".into()
            }
        );
        assert!(e.to_string().contains("sidecar"), "{e}");
    }

    #[test]
    fn env_ref_is_checked_before_secret_stores() {
        let c = with_store(
            component(
                "v1",
                vec![secret("jwt", "creds", None), env("seedKey", "SEED")],
            ),
            Some("vault"),
        );
        assert_eq!(
            parse_metadata(&c).unwrap_err().reason(),
            "EnvRefUnsupported"
        );
    }

    #[test]
    fn secret_key_ref_key_defaults_to_the_secret_name() {
        let c = component(
            "v1",
            vec![
                secret("jwt", "creds", Some("user.jwt")),
                secret("seedKey", "seed", None),
                secret("natsURL", "url", Some("")),
            ],
        );
        let entries = parse_metadata(&c).unwrap();
        let sources: Vec<_> = entries.iter().map(|e| e.source.clone()).collect();
        assert_eq!(
            sources,
            [
                ValueSource::Secret {
                    name: "creds".into(),
                    key: "user.jwt".into()
                },
                ValueSource::Secret {
                    name: "seed".into(),
                    key: "seed".into()
                },
                ValueSource::Secret {
                    name: "url".into(),
                    key: "url".into()
                },
            ]
        );
    }

    #[test]
    fn secret_key_ref_needs_the_kubernetes_secret_store() {
        let base = component(
            "v1",
            vec![value("bucket", json!("b")), secret("jwt", "creds", None)],
        );
        let cases = [
            (None, None),
            (Some(None), None),
            (Some(Some("")), None),
            (Some(Some("kubernetes")), None),
            (Some(Some("vault")), Some("vault")),
            (Some(Some("Kubernetes")), Some("Kubernetes")),
        ];
        for (auth, rejected) in cases {
            let c = match auth {
                None => base.clone(),
                Some(store) => with_store(base.clone(), store),
            };
            let r = parse_metadata(&c);
            match rejected {
                None => assert!(r.is_ok(), "{auth:?}: {r:?}"),
                Some(store) => {
                    let e = r.unwrap_err();
                    assert_eq!(
                        e,
                        ComponentError::SecretStoreUnsupported {
                            name: "jwt".into(),
                            store: store.into()
                        }
                    );
                    assert!(e.to_string().contains(store), "{e}");
                }
            }
        }
    }

    #[test]
    fn another_secret_store_is_fine_without_secret_refs() {
        let c = with_store(
            component("v1", vec![value("bucket", json!("b"))]),
            Some("vault"),
        );
        assert!(parse_metadata(&c).is_ok());
    }

    #[test]
    fn inline_values_are_redacted_in_debug_output() {
        let c = component("v1", vec![value("seedKey", json!("SUAHIDDENSEED"))]);
        let entries = parse_metadata(&c).unwrap();
        assert!(!format!("{entries:?}").contains("SUAHIDDENSEED"));
    }

    #[test]
    fn secret_names_lists_each_referenced_secret_once() {
        let c = with_store(
            component(
                "v2", // even when the Component is otherwise invalid
                vec![
                    secret("jwt", "creds", Some("jwt")),
                    secret("seedKey", "creds", Some("seed")),
                    secret("natsURL", "url", None),
                    secret("empty", "", None),
                    value("bucket", json!("b")),
                ],
            ),
            Some("vault"),
        );
        let names: Vec<_> = secret_names(&c).into_iter().collect();
        assert_eq!(names, ["creds", "url"]);
        assert!(secret_names(&Component::default()).is_empty());
    }
}
