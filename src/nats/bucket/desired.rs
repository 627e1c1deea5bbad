//! What a Component asks of a bucket, and what the server that answers can do.

use crate::settings::BucketSettings;

/// The stream that holds a KV bucket.
pub fn stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// All the keys of a bucket, as a subject.
pub(super) fn all_keys(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// What a Component asks for.
#[derive(Clone, Copy, Debug)]
pub struct Desired<'a> {
    /// The bucket name (already validated).
    pub bucket: &'a str,
    /// The Component, as `namespace/name`.
    pub owner: &'a str,
    /// The settings from its annotations.
    pub settings: &'a BucketSettings,
}

/// What the plan needs to know of the server that answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    /// Whether it runs in a JetStream cluster (replicas > 1 possible).
    pub clustered: bool,
    /// Its version (major, minor, patch); `None` when it cannot be read (then the server decides).
    pub version: Option<Version>,
}

/// A nats-server version: major, minor, patch.
pub type Version = (u64, u64, u64);

/// The first version with per-key TTL and delete markers (`allow_msg_ttl`,
/// `subject_delete_marker_ttl`).
pub const PER_KEY_TTL: Version = (2, 11, 0);
/// The first version that turns per-key TTL on for an existing stream (2.11.0 and 2.11.1 refuse:
/// "message TTL status can not be changed after stream creation").
pub const PER_KEY_TTL_ON_EXISTING: Version = (2, 11, 2);

impl ServerFacts {
    /// Whether the server is known to be older than `version`.
    pub(super) fn older_than(&self, version: Version) -> bool {
        self.version.is_some_and(|v| v < version)
    }
}

/// Reads `2.15.1`, `v2.11.0-RC.3` or `2.12.0-dev` as (major, minor, patch).
pub fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim().trim_start_matches('v');
    let core = text.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

pub(super) fn version_text((major, minor, patch): Version) -> String {
    format!("{major}.{minor}.{patch}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_the_server_writes_them() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.11.0-RC.3"), Some((2, 11, 0)));
        assert_eq!(parse_version("2.12.0-dev"), Some((2, 12, 0)));
        assert_eq!(parse_version("2.10"), Some((2, 10, 0)));
        assert_eq!(parse_version("nightly"), None);
        assert_eq!(parse_version(""), None);
    }
}
