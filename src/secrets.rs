//! Secret values and their resolution from Kubernetes Secrets, as Dapr does it in Kubernetes
//! mode: from the Component's own namespace only, `key` defaulting to the reference's name, the
//! raw bytes as the value, a missing Secret an error and a missing key an empty value. (The
//! local stores of self-hosted Dapr: [`crate::apply::secrets`]; their failures are here too.)

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::dapr::metadata::{MetadataEntry, ValueSource};
use crate::failure::{Failure, Retry};
use crate::secret_value::SecretValue;

/// A Secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "Secret {secret:?} (referenced by metadata item {item:?}) does not exist in namespace {namespace:?}; create it there: Secrets are only read from the Component's own namespace"
    )]
    NotFound {
        secret: String,
        item: String,
        namespace: String,
    },
    #[error(
        "the operator may not read Secret {secret:?} in namespace {namespace:?}; grant it get on Secrets there (is the namespace watched?)"
    )]
    Forbidden { secret: String, namespace: String },
    #[error("reading Secret {secret:?} failed: {detail}")]
    Api { secret: String, detail: String },
    /// Self-hosted (`apply`): a `secretKeyRef` with no `auth.secretStore`.
    #[error(
        "metadata item {item:?} uses secretKeyRef but the Component names no secret store: \
         self-hosted daprd reads secrets only from the store auth.secretStore names; set it to \
         a secretstores.local.file or secretstores.local.env Component given with this one, or \
         give the value directly"
    )]
    NoLocalStore { item: String },
    /// Self-hosted (`apply`): a secret store that is not a local one of the same files.
    #[error(
        "metadata item {item:?} uses secretKeyRef with secret store {store:?}, which {why}: \
         apply reads only secretstores.local.file and secretstores.local.env Components given \
         with this one; use one of those, or give the value directly"
    )]
    LocalStoreUnsupported {
        item: String,
        store: String,
        why: String,
    },
    /// Self-hosted (`apply`): a secret the local store does not hold.
    #[error(
        "secret {secret:?} (referenced by metadata item {item:?}) is not in secret store \
         {store:?}; add it there"
    )]
    LocalNotFound {
        secret: String,
        item: String,
        store: String,
    },
    /// Self-hosted (`apply`): a local secret store that cannot be read as daprd would.
    #[error("secret store {store:?} cannot be read: {detail}; fix it")]
    LocalStoreUnreadable { store: String, detail: String },
}

impl Failure for SecretError {
    /// The condition reason.
    fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } | Self::LocalNotFound { .. } => "SecretNotFound",
            Self::Forbidden { .. } => "SecretAccessDenied",
            Self::Api { .. } | Self::LocalStoreUnreadable { .. } => "SecretReadFailed",
            Self::NoLocalStore { .. } | Self::LocalStoreUnsupported { .. } => {
                "SecretStoreUnsupported"
            }
        }
    }

    /// Fixed by a change the operator watches (a Secret created, access granted), except a
    /// failed read, which is retried with back-off.
    fn retry(&self) -> Retry {
        match self {
            Self::Api { .. } => Retry::Backoff,
            _ => Retry::AwaitChange,
        }
    }
}

/// Resolves every metadata entry to its value, reading each referenced Secret once.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    entries: &[MetadataEntry],
) -> Result<Vec<(String, SecretValue)>, SecretError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secrets: BTreeMap<&str, Secret> = BTreeMap::new();
    let mut values = Vec::with_capacity(entries.len());
    for entry in entries {
        let value = match &entry.source {
            ValueSource::Inline(v) => v.clone(),
            ValueSource::Secret { name, key } => {
                if !secrets.contains_key(name.as_str()) {
                    let secret = api.get_opt(name).await.map_err(|e| match &e {
                        kube::Error::Api(s) if s.code == 403 => SecretError::Forbidden {
                            secret: name.clone(),
                            namespace: namespace.to_string(),
                        },
                        _ => SecretError::Api {
                            secret: name.clone(),
                            detail: e.to_string(),
                        },
                    })?;
                    let secret = secret.ok_or_else(|| SecretError::NotFound {
                        secret: name.clone(),
                        item: entry.name.clone(),
                        namespace: namespace.to_string(),
                    })?;
                    secrets.insert(name, secret);
                }
                value_of(&secrets[name.as_str()], key)
            }
        };
        values.push((entry.name.clone(), value));
    }
    Ok(values)
}

/// The value of a key of a Secret: its raw bytes, untrimmed; empty when the key is missing.
fn value_of(secret: &Secret, key: &str) -> SecretValue {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .unwrap_or_default();
    SecretValue::new(String::from_utf8_lossy(&bytes).into_owned())
}
