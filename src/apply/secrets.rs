//! `secretKeyRef`s resolved as self-hosted daprd resolves them: from the secret store the
//! Component's `auth.secretStore` names, a `secretstores.local.file` (a JSON file) or
//! `secretstores.local.env` (the environment) Component given with it. Any other store, or none,
//! is refused with its reason ([`SecretError`]); nothing is guessed.
//!
//! daprd's rules, kept here: `secretKeyRef.key` defaults to its name; a key the secret does not
//! hold gives an empty value. The file store reads a JSON object whose nested keys are joined
//! with `nestedSeparator` (`:` by default) into secret names; with `multiValued: "true"` each
//! top-level key is a secret and the keys below it (joined the same way) are its keys. The env
//! store reads the variable `prefix` + name, never `APP_API_TOKEN` nor `DAPR_*` (empty instead).
//! Unlike daprd, a secret the file does not hold is an error (daprd logs it and goes on with an
//! empty value), and a value that is not a JSON string is refused (daprd would turn it into Go's
//! `%!s(...)` text).

use std::collections::BTreeMap;

use crate::dapr::metadata::{SecretStores, ValueSource, parse_metadata_in};
use crate::dapr::{Component, MetadataEntry};
use crate::secret_value::SecretValue;
use crate::secrets::SecretError;

/// The type of daprd's JSON file secret store.
pub const LOCAL_FILE: &str = "secretstores.local.file";
/// The type of daprd's environment secret store.
pub const LOCAL_ENV: &str = "secretstores.local.env";
/// The largest secrets file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A secret's keys and their values (None: not a JSON string).
type Keys = BTreeMap<String, Option<String>>;

/// One secret store Component of the files.
#[derive(Debug)]
enum Store {
    /// `secretstores.local.file`, read (Err: why it cannot be).
    File(Result<FileStore, String>),
    /// `secretstores.local.env` with its prefix.
    Env { prefix: String },
    /// Any other store type.
    Other { type_: String },
}

/// The secrets of a file store, by name.
#[derive(Debug, Default)]
struct FileStore {
    secrets: BTreeMap<String, Keys>,
}

/// The secret stores declared by a set of Component files, by name.
#[derive(Debug, Default)]
pub struct LocalStores {
    stores: BTreeMap<String, Store>,
}

impl LocalStores {
    /// The secret stores among `components` (every Component whose type starts with
    /// `secretstores.`), their files read now. A later store of the same name wins, as a later
    /// file does for daprd.
    pub fn new(components: &[Component]) -> Self {
        let mut stores = BTreeMap::new();
        for c in components {
            let type_ = c.spec.type_.to_ascii_lowercase();
            if !type_.starts_with("secretstores.") {
                continue;
            }
            let name = c.metadata.name.clone().unwrap_or_default();
            let store = if type_ == LOCAL_FILE {
                Store::File(read_file_store(c))
            } else if type_ == LOCAL_ENV {
                Store::Env {
                    prefix: store_metadata(c)
                        .ok()
                        .and_then(|m| m.get("prefix").cloned())
                        .unwrap_or_default(),
                }
            } else {
                Store::Other {
                    type_: c.spec.type_.clone(),
                }
            };
            stores.insert(name, store);
        }
        Self { stores }
    }

    /// Every metadata entry's value of `component`, its `secretKeyRef`s read from the store its
    /// `auth.secretStore` names; `env` reads the environment. Nothing is read when the metadata
    /// does not parse (validation reports that).
    pub fn resolve(
        &self,
        component: &Component,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, SecretValue)>, SecretError> {
        let Ok(entries) = parse_metadata_in(component, SecretStores::Local) else {
            return Ok(Vec::new());
        };
        let store_name = component
            .auth
            .as_ref()
            .and_then(|a| a.secret_store.as_deref())
            .filter(|s| !s.is_empty());
        let mut values = Vec::with_capacity(entries.len());
        for entry in &entries {
            let value = match &entry.source {
                ValueSource::Inline(v) => v.clone(),
                ValueSource::Secret { name, key } => {
                    let Some(store_name) = store_name else {
                        return Err(SecretError::NoLocalStore {
                            item: entry.name.clone(),
                        });
                    };
                    self.value(store_name, entry, name, key, env)?
                }
            };
            values.push((entry.name.clone(), value));
        }
        Ok(values)
    }

    /// The value of `key` of the secret `secret` of the store `store_name`.
    fn value(
        &self,
        store_name: &str,
        entry: &MetadataEntry,
        secret: &str,
        key: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SecretValue, SecretError> {
        let unsupported = |why: String| SecretError::LocalStoreUnsupported {
            item: entry.name.clone(),
            store: store_name.to_owned(),
            why,
        };
        let keys: Keys = match self.stores.get(store_name) {
            None => {
                return Err(unsupported(
                    "is not among the Components given (no secret store Component of that name)"
                        .to_owned(),
                ));
            }
            Some(Store::Other { type_ }) => {
                return Err(unsupported(format!("is of type {type_}")));
            }
            Some(Store::File(Err(detail))) => {
                return Err(SecretError::LocalStoreUnreadable {
                    store: store_name.to_owned(),
                    detail: detail.clone(),
                });
            }
            Some(Store::File(Ok(file))) => match file.secrets.get(secret) {
                Some(keys) => keys.clone(),
                None => {
                    return Err(SecretError::LocalNotFound {
                        secret: secret.to_owned(),
                        item: entry.name.clone(),
                        store: store_name.to_owned(),
                    });
                }
            },
            Some(Store::Env { prefix }) => {
                let variable = format!("{prefix}{secret}");
                let value = if env_allowed(&variable) {
                    env(&variable).unwrap_or_default()
                } else {
                    String::new()
                };
                BTreeMap::from([(secret.to_owned(), Some(value))])
            }
        };
        match keys.get(key) {
            Some(Some(value)) => Ok(SecretValue::new(value.clone())),
            Some(None) => Err(SecretError::LocalStoreUnreadable {
                store: store_name.to_owned(),
                detail: format!(
                    "key {key:?} of secret {secret:?} is not a JSON string (daprd would not read \
                     it as text): quote it"
                ),
            }),
            // daprd: a key the secret does not hold leaves the value empty.
            None => Ok(SecretValue::default()),
        }
    }
}

/// Whether the env store may read `variable` (daprd's deny list).
fn env_allowed(variable: &str) -> bool {
    let upper = variable.to_ascii_uppercase();
    upper != "APP_API_TOKEN" && !upper.starts_with("DAPR_")
}

/// A secret store Component's own metadata, by lower-case name: inline values only.
fn store_metadata(c: &Component) -> Result<BTreeMap<String, String>, String> {
    let entries = parse_metadata_in(c, SecretStores::Local).map_err(|e| e.to_string())?;
    entries
        .into_iter()
        .map(|e| match e.source {
            ValueSource::Inline(v) => Ok((e.name.to_ascii_lowercase(), v.expose().to_owned())),
            ValueSource::Secret { .. } => Err(format!(
                "its metadata item {:?} uses secretKeyRef; give it inline",
                e.name
            )),
        })
        .collect()
}

/// Reads a `secretstores.local.file` Component's file. The path is the store's `secretsFile`,
/// relative to the working directory as for daprd.
fn read_file_store(c: &Component) -> Result<FileStore, String> {
    let meta = store_metadata(c)?;
    let path = meta
        .get("secretsfile")
        .filter(|p| !p.is_empty())
        .ok_or("metadata item secretsFile is missing; set it to the JSON file of the secrets")?;
    let separator = meta
        .get("nestedseparator")
        .filter(|s| !s.is_empty())
        .map_or(":", String::as_str);
    let multi_valued = meta
        .get("multivalued")
        .is_some_and(|v| crate::dapr::metadata::is_true(v));
    let text = read_bounded(path)?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        // Only where: serde_json's message could quote the file's text.
        format!(
            "secretsFile {path:?} is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(top) = json else {
        return Err(format!("secretsFile {path:?} does not hold a JSON object"));
    };
    let mut store = FileStore::default();
    if multi_valued {
        for (name, value) in top {
            let keys = match value {
                serde_json::Value::String(s) => BTreeMap::from([(name.clone(), Some(s))]),
                serde_json::Value::Object(_) => {
                    let mut keys = Keys::new();
                    flatten(&mut Vec::new(), &value, separator, &mut keys);
                    keys
                }
                // daprd skips anything else at the top.
                _ => continue,
            };
            store.secrets.insert(name, keys);
        }
    } else {
        let mut flat = Keys::new();
        flatten(
            &mut Vec::new(),
            &serde_json::Value::Object(top),
            separator,
            &mut flat,
        );
        store.secrets = flat
            .into_iter()
            .map(|(name, value)| (name.clone(), BTreeMap::from([(name, value)])))
            .collect();
    }
    Ok(store)
}

fn read_bounded(path: &str) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("secretsFile {path:?} cannot be opened ({})", e.kind()))?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("secretsFile {path:?} cannot be read ({})", e.kind()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "secretsFile {path:?} is larger than {MAX_FILE_BYTES} bytes"
        ));
    }
    Ok(text)
}

/// Every leaf under `value`, its path joined with `separator` (array items by index); the first
/// of two equal paths is kept.
fn flatten(path: &mut Vec<String>, value: &serde_json::Value, separator: &str, out: &mut Keys) {
    let mut leaf = |path: &Vec<String>, text: Option<String>| {
        out.entry(path.join(separator)).or_insert(text);
    };
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                path.push(k.clone());
                flatten(path, v, separator, out);
                path.pop();
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(i.to_string());
                flatten(path, v, separator, out);
                path.pop();
            }
        }
        serde_json::Value::String(s) => leaf(path, Some(s.clone())),
        _ => leaf(path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure as _;

    fn component(yaml: &str) -> Component {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn store(name: &str, type_: &str, items: &[(&str, &str)]) -> Component {
        let metadata: Vec<_> = items
            .iter()
            .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": name},
            "spec": {"type": type_, "version": "v1", "metadata": metadata},
        }))
        .unwrap()
    }

    fn user(store: Option<&str>, refs: &[(&str, &str, Option<&str>)]) -> Component {
        let metadata: Vec<_> = refs
            .iter()
            .map(|(item, name, key)| {
                let mut r = serde_json::json!({"name": name});
                if let Some(k) = key {
                    r["key"] = serde_json::json!(k);
                }
                serde_json::json!({"name": item, "secretKeyRef": r})
            })
            .collect();
        let mut c = serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "s"},
            "spec": {"type": "state.jetstream", "version": "v1", "metadata": metadata},
        });
        if let Some(s) = store {
            c["auth"] = serde_json::json!({"secretStore": s});
        }
        serde_json::from_value(c).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn file_with(json: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), json).unwrap();
        f
    }

    fn exposed(values: &[(String, SecretValue)]) -> Vec<(&str, &str)> {
        values
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect()
    }

    #[test]
    fn a_file_store_is_flattened_with_its_separator() {
        let f = file_with(
            r#"{"nats": {"url": "nats://a:4222", "list": ["x", "y"]}, "b": "orders", "n": 5}"#,
        );
        let path = f.path().to_str().unwrap();
        let stores = LocalStores::new(&[store("files", LOCAL_FILE, &[("secretsFile", path)])]);
        let c = user(
            Some("files"),
            &[("natsURL", "nats:url", None), ("bucket", "b", Some("b"))],
        );
        let got = stores.resolve(&c, &no_env).unwrap();
        assert_eq!(
            exposed(&got),
            [("natsURL", "nats://a:4222"), ("bucket", "orders")]
        );
        // A key the secret does not hold: empty, as daprd.
        let c = user(Some("files"), &[("bucket", "b", Some("other"))]);
        assert_eq!(
            exposed(&stores.resolve(&c, &no_env).unwrap()),
            [("bucket", "")]
        );
        // Arrays by index; another separator.
        let stores = LocalStores::new(&[store(
            "files",
            LOCAL_FILE,
            &[("secretsFile", path), ("nestedSeparator", ".")],
        )]);
        let c = user(Some("files"), &[("bucket", "nats.list.1", None)]);
        assert_eq!(
            exposed(&stores.resolve(&c, &no_env).unwrap()),
            [("bucket", "y")]
        );
        // Not a string: refused, not turned into Go's %!s text.
        let c = user(Some("files"), &[("bucket", "n", None)]);
        let e = stores.resolve(&c, &no_env).unwrap_err();
        assert_eq!(e.reason(), "SecretReadFailed");
        assert!(e.to_string().contains("quote it"), "{e}");
        // Not there.
        let c = user(Some("files"), &[("bucket", "nope", None)]);
        let e = stores.resolve(&c, &no_env).unwrap_err();
        assert_eq!(e.reason(), "SecretNotFound");
    }

    #[test]
    fn a_multi_valued_file_store_has_secrets_with_keys() {
        let f =
            file_with(r#"{"nats": {"url": "nats://a:4222", "deep": {"k": "v"}}, "b": "orders"}"#);
        let path = f.path().to_str().unwrap();
        let stores = LocalStores::new(&[store(
            "files",
            LOCAL_FILE,
            &[("secretsFile", path), ("multiValued", "true")],
        )]);
        let c = user(
            Some("files"),
            &[
                ("natsURL", "nats", Some("url")),
                ("bucket", "b", None),
                ("name", "nats", Some("deep:k")),
            ],
        );
        let got = stores.resolve(&c, &no_env).unwrap();
        assert_eq!(
            exposed(&got),
            [
                ("natsURL", "nats://a:4222"),
                ("bucket", "orders"),
                ("name", "v")
            ]
        );
    }

    #[test]
    fn the_env_store_reads_prefixed_variables_but_not_daprs_own() {
        let stores = LocalStores::new(&[store("env", LOCAL_ENV, &[("prefix", "APP_")])]);
        let env = |name: &str| match name {
            "APP_URL" => Some("nats://e:4222".to_owned()),
            _ => Some("leak".to_owned()),
        };
        let c = user(
            Some("env"),
            &[("natsURL", "URL", None), ("bucket", "URL", Some("x"))],
        );
        assert_eq!(
            exposed(&stores.resolve(&c, &env).unwrap()),
            [("natsURL", "nats://e:4222"), ("bucket", "")]
        );
        let stores = LocalStores::new(&[store("env", LOCAL_ENV, &[])]);
        let c = user(Some("env"), &[("natsURL", "DAPR_API_TOKEN", None)]);
        assert_eq!(
            exposed(&stores.resolve(&c, &env).unwrap()),
            [("natsURL", "")]
        );
    }

    #[test]
    fn other_stores_and_no_store_are_refused_by_name() {
        let stores = LocalStores::new(&[store("vault", "secretstores.hashicorp.vault", &[])]);
        let e = stores
            .resolve(&user(Some("vault"), &[("jwt", "j", None)]), &no_env)
            .unwrap_err();
        assert_eq!(e.reason(), "SecretStoreUnsupported");
        assert!(
            e.to_string()
                .contains("of type secretstores.hashicorp.vault"),
            "{e}"
        );
        let e = stores
            .resolve(&user(Some("kubernetes"), &[("jwt", "j", None)]), &no_env)
            .unwrap_err();
        assert!(
            e.to_string().contains("is not among the Components given"),
            "{e}"
        );
        let e = stores
            .resolve(&user(None, &[("jwt", "j", None)]), &no_env)
            .unwrap_err();
        assert_eq!(e.reason(), "SecretStoreUnsupported");
        assert!(e.to_string().contains("names no secret store"), "{e}");
        // A file store whose file is broken: its reason, and nothing of the file shown.
        let f = file_with(r#"{"b": "hunter2secret" "#);
        let path = f.path().to_str().unwrap();
        let stores = LocalStores::new(&[store("files", LOCAL_FILE, &[("secretsFile", path)])]);
        let e = stores
            .resolve(&user(Some("files"), &[("bucket", "b", None)]), &no_env)
            .unwrap_err();
        assert_eq!(e.reason(), "SecretReadFailed");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // Inline values need no store.
        let c = component(
            "spec:\n  type: state.jetstream\n  metadata:\n  - name: bucket\n    value: b\n",
        );
        assert_eq!(
            exposed(&stores.resolve(&c, &no_env).unwrap()),
            [("bucket", "b")]
        );
    }
}
