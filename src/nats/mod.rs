//! NATS: shared connections ([`pool`]), each through the protocol-checking [`relay`], which
//! serves only the process's own sockets (`peer`); any JetStream stream ([`stream`]: client,
//! changes, owner marks, limits, subjects); a stream's cluster facts ([`cluster`]); and the
//! create-or-verify logic of KV buckets ([`bucket`]).

pub mod app_rights;
pub mod bucket;
pub mod cluster;
mod peer;
pub mod pool;
pub mod relay;
pub mod stream;

use async_nats::jetstream;

use crate::failure::{Failure, Retry};

/// The longest piece of text from a NATS server (a version, an error description) that goes
/// into a status or an Event.
pub const MAX_REMOTE_TEXT: usize = 128;

/// Text a NATS server sent, made fit to show: control characters dropped, at most
/// [`MAX_REMOTE_TEXT`] characters. A server is untrusted input: it could send a megabyte, or
/// terminal escapes, as its "version".
pub fn remote_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REMOTE_TEXT + 1)
        .collect();
    if out.chars().count() > MAX_REMOTE_TEXT {
        out = out.chars().take(MAX_REMOTE_TEXT).collect();
        out.push_str("...");
    }
    out
}

/// What went wrong talking to NATS, as a reason a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "cannot reach the NATS server at {servers}: {detail}; check natsURL and that the server is running"
    )]
    Unreachable { servers: String, detail: String },
    #[error(
        "the NATS server at {servers} broke the NATS protocol ({what}); the operator dropped the connection and retries. Check that natsURL names a NATS server you trust"
    )]
    ProtocolViolation { servers: String, what: &'static str },
    #[error(
        "the NATS server at {servers} refused the credentials (authorization violation); check the user, password or JWT in the Component's metadata and its Secrets"
    )]
    AuthorizationFailed { servers: String },
    #[error(
        "TLS with the NATS server at {servers} failed: {detail}; check the tls:// URL and the server certificate"
    )]
    Tls { servers: String, detail: String },
    #[error(
        "JetStream is not enabled for this account on {servers}; enable JetStream on the server and give the account JetStream limits"
    )]
    JetStreamDisabled { servers: String },
    #[error(
        "the account's JetStream limits are reached: {detail}; raise the account limits or free space"
    )]
    AccountLimits { detail: String },
    #[error(
        "no suitable placement for the bucket: {detail}; lower replicas or fix the placement annotations"
    )]
    NoSuitablePlacement { detail: String },
    #[error(
        "stream {stream} cannot take writes: quorum lost, only {up} of {replicas} replicas are up ({down_list} not reachable); it recovers when a majority of its servers is back",
        down_list = down.join(", ")
    )]
    QuorumLost {
        stream: String,
        replicas: usize,
        up: usize,
        down: Vec<String>,
    },
    #[error(
        "stream {stream} has no leader yet: its replicas are electing one after the leader was lost; retrying"
    )]
    NoStreamLeader { stream: String },
    #[error(
        "the JetStream cluster is not available (no meta leader): a majority of its servers is down, or they are electing a leader; it recovers when they are back"
    )]
    ClusterUnavailable,
    #[error("the NATS server cannot create the bucket as asked: {detail}")]
    UnsupportedByServer { detail: String },
    #[error("the NATS server did not answer in time ({what}); it may be overloaded or restarting")]
    Timeout { what: String },
    #[error(
        "the list of the account's streams {what}: the operator stops listing there to bound its memory, and cannot check this stream's subjects against the others; check that natsURL names a NATS server you trust, or use an account with fewer streams"
    )]
    ListingTooLong { what: String },
    #[error("NATS request failed ({what}): {detail}")]
    Request { what: String, detail: String },
    #[error(
        "the NATS server refused {what}: this user may not publish to {subject}; grant it that right, or let a NatsServerPolicy name a provisioning identity for this Component (see docs/credentials.md)"
    )]
    PermissionDenied { what: String, subject: String },
    #[error(
        "namespace {namespace} already uses {limit} distinct NATS connections (server lists and credentials), the operator's limit per namespace; let Components share natsURL and credentials, or ask the operator's admin to raise --max-nats-connections-per-namespace"
    )]
    ConnectionLimit { namespace: String, limit: usize },
    #[error(
        "the provisioning credentials that NatsServerPolicy {policy} names for this Component cannot be used: {detail}; the cluster admin must fix them (the Component needs no change)"
    )]
    ProvisioningCredentials { policy: String, detail: String },
}

impl Failure for NatsError {
    /// The condition reason.
    fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "NatsUnavailable",
            Self::AuthorizationFailed { .. } => "AuthorizationFailed",
            Self::ProtocolViolation { .. } => "NatsProtocolViolation",
            Self::Tls { .. } => "TlsFailed",
            Self::JetStreamDisabled { .. } => "JetStreamDisabled",
            Self::AccountLimits { .. } => "AccountLimitsExceeded",
            Self::NoSuitablePlacement { .. } => "NoSuitablePlacement",
            Self::QuorumLost { .. } => "QuorumLost",
            Self::NoStreamLeader { .. } => "NoStreamLeader",
            Self::ClusterUnavailable => "JetStreamUnavailable",
            Self::UnsupportedByServer { .. } => "UnsupportedByServer",
            Self::Timeout { .. } => "NatsTimeout",
            Self::Request { .. } => "NatsRequestFailed",
            Self::PermissionDenied { .. } => "NatsPermissionDenied",
            Self::ListingTooLong { .. } => "StreamListingTooLong",
            Self::ConnectionLimit { .. } => "NatsConnectionLimit",
            Self::ProvisioningCredentials { .. } => "ProvisioningCredentialsInvalid",
        }
    }

    /// All NATS errors are retried with back-off, because the fix is often on the server side.
    fn retry(&self) -> Retry {
        Retry::Backoff
    }

    /// Whether retrying without a change anywhere cannot help (kstatus `Stalled`): credentials
    /// refused, JetStream off, limits, a server that breaks the protocol.
    fn stalled(&self) -> bool {
        !matches!(
            self,
            Self::Unreachable { .. }
                | Self::Timeout { .. }
                | Self::Request { .. }
                | Self::QuorumLost { .. }
                | Self::NoStreamLeader { .. }
                | Self::ClusterUnavailable
        )
    }
}

impl NatsError {
    /// Maps a JetStream API error to a reason by its NATS error code.
    pub(crate) fn from_jetstream(what: &str, err: &jetstream::Error) -> Self {
        let detail = remote_text(&err.to_string());
        match err.error_code() {
            // JetStream not enabled (for the account).
            jetstream::ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
            | jetstream::ErrorCode::JETSTREAM_NOT_ENABLED => Self::JetStreamDisabled {
                servers: "the server".into(),
            },
            // Maximum streams, storage or memory limits of the account.
            jetstream::ErrorCode::MAXIMUM_STREAMS_LIMIT
            | jetstream::ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
            | jetstream::ErrorCode::INSUFFICIENT_RESOURCES
            | jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED
            | jetstream::ErrorCode::MEMORY_RESOURCES_EXCEEDED => Self::AccountLimits { detail },
            // The meta leader is gone (quorum of servers lost) or being elected.
            jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE => Self::ClusterUnavailable,
            jetstream::ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
            | jetstream::ErrorCode::CLUSTER_NO_PEERS => Self::NoSuitablePlacement { detail },
            _ => Self::Request {
                what: what.into(),
                detail,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_text_is_bounded_and_has_no_control_characters() {
        assert_eq!(remote_text("2.12.1"), "2.12.1");
        let shown = remote_text(&format!("\u{1b}[31mred{}", "x".repeat(1 << 20)));
        assert!(
            shown.chars().count() <= MAX_REMOTE_TEXT + 3,
            "{}",
            shown.len()
        );
        assert!(!shown.contains('\u{1b}'));
        assert!(shown.ends_with("..."));
        assert_eq!(remote_text("a\nb\rc"), "abc");
    }
}
