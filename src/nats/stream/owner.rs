//! Whose a stream is: the metadata marks the operator writes on every stream it creates, and
//! the stream's identity as the server reports it.

use async_nats::jetstream::stream;

/// Stream metadata key that marks a stream as created by this operator.
pub const META_MANAGED_BY: &str = "jetstreamkv.io/managed-by";
/// Stream metadata key naming the Component (`namespace/name`) the operator created it for.
pub const META_COMPONENT: &str = "jetstreamkv.io/component";

/// Whether the operator created this stream for this Component.
pub fn is_managed_by(config: &stream::Config, owner: &str) -> bool {
    owner_of(config) == Some(owner)
}

/// The Component (`namespace/name`) the operator created this stream for, if any.
pub fn owner_of(config: &stream::Config) -> Option<&str> {
    if !config.metadata.contains_key(META_MANAGED_BY) {
        return None;
    }
    config
        .metadata
        .get(META_COMPONENT)
        .map(String::as_str)
        .filter(|o| !o.is_empty())
}

/// The stream's identity as the server reports it (`identity` in the status of a bucket or a
/// stream): what decides whether two Components use the same stream, never the text of their
/// URLs. The creation time (nanoseconds) tells apart streams of one name in different accounts
/// or on different servers.
pub fn identity(info: &stream::Info, domain: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        domain.unwrap_or_default(),
        info.cluster
            .as_ref()
            .and_then(|c| c.name.as_deref())
            .unwrap_or_default(),
        &info.config.name,
        &format!("{:?}", info.created),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}
