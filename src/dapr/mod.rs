//! The Dapr `Component` and Dapr's own rules for a `state.jetstream` store, without I/O.
//!
//! - [`component`]: the `components.dapr.io` resource as the API server serves it;
//! - [`metadata`]: `spec.metadata` read with Dapr's rules into values or Secret references;
//! - [`store`]: the resolved values checked the way the `state.jetstream` store checks them.
//!
//! Every error here is a [`ComponentError`]: the manifest must change before retrying helps.

use crate::failure::{Failure, Retry};

pub mod component;
pub mod metadata;
pub mod store;

pub use component::{
    Component, ComponentAuth, ComponentSpec, JETSTREAM_PUBSUB_TYPE, JETSTREAM_STATE_TYPE,
    MetadataItem, SecretKeyRef,
};
pub use metadata::{MetadataEntry, ValueSource, parse_metadata, secret_names};
pub use store::{NatsAuth, StoreConfig, store_config};

/// A Component the operator cannot act on as written.
///
/// Messages say what to change in the manifest. They never hold a secret value: no JWT, no seed,
/// no password, and a `natsURL` only in its redacted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComponentError {
    /// `spec.version` is not one Dapr accepts for `state.jetstream`.
    #[error(
        "spec.version {version:?} is not supported for state.jetstream: set it to \"v1\" \
         (Dapr also accepts \"v0\" or an empty version)"
    )]
    UnsupportedVersion {
        /// The version as written.
        version: String,
    },

    /// Two metadata items whose names differ only in case (Dapr rejects this too).
    #[error(
        "metadata items {first:?} and {second:?} have the same name (names are \
         case-insensitive): keep only one of them"
    )]
    DuplicateMetadata {
        /// The spelling that comes first in `spec.metadata`.
        first: String,
        /// The later spelling.
        second: String,
    },

    /// More metadata, or longer names or values, than any `state.jetstream` Component needs.
    #[error(
        "{what} is more than the operator reads (at most {limit}): remove what the \
         state.jetstream store does not use"
    )]
    TooMuchMetadata {
        /// What is too big, e.g. `80000 metadata items`.
        what: String,
        /// The cap.
        limit: String,
    },

    /// A metadata item uses `envRef`, which only the sidecar can resolve.
    #[error(
        "metadata item {name:?} uses envRef {env:?}: the variable is resolved by the Dapr \
         sidecar from its own environment, which the operator cannot see; use value or \
         secretKeyRef instead"
    )]
    EnvRefUnsupported {
        /// The metadata item.
        name: String,
        /// The environment variable it names (a name, not a value).
        env: String,
    },

    /// A metadata item uses `secretKeyRef` with a secret store other than Kubernetes.
    #[error(
        "metadata item {name:?} uses secretKeyRef with secret store {store:?}: the operator \
         only reads Kubernetes Secrets; remove auth.secretStore (or set it to \"kubernetes\") \
         or give the value directly"
    )]
    SecretStoreUnsupported {
        /// The metadata item.
        name: String,
        /// The `auth.secretStore` of the Component.
        store: String,
    },

    /// `natsURL` is absent or empty.
    #[error(
        "metadata item natsURL is missing or empty: set it to the NATS server URL, for \
         example nats://nats.nats.svc:4222"
    )]
    MissingNatsURL,

    /// An entry of `natsURL` is not a NATS server address.
    #[error(
        "natsURL entry {url:?} is not a valid NATS server address ({problem}): use \
         nats://host:port, tls://host:port, ws://host:port, wss://host:port or host:port, \
         comma-separated for several servers"
    )]
    InvalidNatsURL {
        /// The entry with any password or token replaced by `***`.
        url: String,
        /// What is wrong with it.
        problem: String,
    },

    /// `bucket` is absent or empty.
    #[error("metadata item bucket is missing or empty: set it to the name of the KV bucket")]
    MissingBucket,

    /// `bucket` holds characters NATS does not allow in a bucket name.
    #[error(
        "bucket name {bucket:?} is not valid: use only letters A-Z and a-z, digits 0-9, '-' \
         and '_'"
    )]
    InvalidBucketName {
        /// The bucket name as written.
        bucket: String,
    },

    /// `jwt` is set but `seedKey` is not.
    #[error(
        "metadata item jwt is set but seedKey is missing or empty: NATS decentralized auth \
         needs both the user JWT and the user's nkey seed"
    )]
    JwtWithoutSeed,

    /// `seedKey` is set but `jwt` is not.
    #[error(
        "metadata item seedKey is set but jwt is missing or empty: NATS decentralized auth \
         needs both the user JWT and the user's nkey seed"
    )]
    SeedWithoutJwt,

    /// A value uses a Dapr per-pod template, which only exists inside each sidecar.
    #[error(
        "metadata item {name:?} uses the Dapr template {template}, which each sidecar \
         replaces with its own per-pod value; the operator cannot know that value, so use a \
         fixed value for {name:?}"
    )]
    UnresolvableTemplate {
        /// The metadata item.
        name: String,
        /// The template, e.g. `{podName}`.
        template: String,
    },
}

impl ComponentError {
    /// The reason of a Component refused for its size, which the operator does not write to
    /// (see `reconcile::status::component_patch`).
    pub const TOO_MUCH_METADATA: &'static str = "TooMuchMetadata";
}

impl Failure for ComponentError {
    /// The CamelCase reason for conditions, events and metrics.
    fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedVersion { .. } => "UnsupportedVersion",
            Self::DuplicateMetadata { .. } => "DuplicateMetadata",
            Self::TooMuchMetadata { .. } => Self::TOO_MUCH_METADATA,
            Self::EnvRefUnsupported { .. } => "EnvRefUnsupported",
            Self::SecretStoreUnsupported { .. } => "SecretStoreUnsupported",
            Self::MissingNatsURL => "MissingNatsURL",
            Self::InvalidNatsURL { .. } => "InvalidNatsURL",
            Self::MissingBucket => "MissingBucket",
            Self::InvalidBucketName { .. } => "InvalidBucketName",
            Self::JwtWithoutSeed => "JwtWithoutSeed",
            Self::SeedWithoutJwt => "SeedWithoutJwt",
            Self::UnresolvableTemplate { .. } => "UnresolvableTemplate",
        }
    }

    /// Retrying without a change to the manifest cannot help: every variant is a property of
    /// what is written in the Component (or the Secrets it names, whose change triggers a new
    /// reconcile anyway).
    fn retry(&self) -> Retry {
        Retry::AwaitChange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<ComponentError> {
        vec![
            ComponentError::UnsupportedVersion {
                version: "v2".into(),
            },
            ComponentError::DuplicateMetadata {
                first: "bucket".into(),
                second: "Bucket".into(),
            },
            ComponentError::TooMuchMetadata {
                what: "300 metadata items".into(),
                limit: "256 items".into(),
            },
            ComponentError::EnvRefUnsupported {
                name: "jwt".into(),
                env: "NATS_JWT".into(),
            },
            ComponentError::SecretStoreUnsupported {
                name: "jwt".into(),
                store: "vault".into(),
            },
            ComponentError::MissingNatsURL,
            ComponentError::InvalidNatsURL {
                url: "http://h".into(),
                problem: "scheme".into(),
            },
            ComponentError::MissingBucket,
            ComponentError::InvalidBucketName {
                bucket: "a.b".into(),
            },
            ComponentError::JwtWithoutSeed,
            ComponentError::SeedWithoutJwt,
            ComponentError::UnresolvableTemplate {
                name: "bucket".into(),
                template: "{uuid}".into(),
            },
        ]
    }

    #[test]
    fn every_variant_has_its_own_camel_case_reason_and_is_permanent() {
        let errors = all();
        let reasons: std::collections::BTreeSet<_> = errors.iter().map(|e| e.reason()).collect();
        assert_eq!(reasons.len(), errors.len(), "reasons must be distinct");
        for e in &errors {
            let r = e.reason();
            assert!(r.starts_with(|c: char| c.is_ascii_uppercase()), "{r}");
            assert!(r.chars().all(|c| c.is_ascii_alphanumeric()), "{r}");
            // The reason is the variant name, so the Debug form starts with it.
            assert!(format!("{e:?}").starts_with(r), "{r} vs {e:?}");
            assert!(e.is_permanent());
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        for e in all() {
            let msg = e.to_string();
            let tells = ["set ", "use ", "keep ", "remove ", "needs "];
            assert!(tells.iter().any(|t| msg.contains(t)), "{msg}");
        }
    }
}
