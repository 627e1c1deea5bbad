//! One setting that differs between a live stream and what its Component asks for.

/// A stream setting a diff compares; matched exhaustively wherever a change is judged, so a new
/// field cannot silently get another field's treatment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Values kept per key (a bucket's `max_messages_per_subject`).
    History,
    /// A bucket's TTL (the stream's max age).
    Ttl,
    /// A pub/sub stream's max age.
    MaxAge,
    MaxBytes,
    MaxValueSize,
    Storage,
    Replicas,
    /// A pub/sub stream's retention.
    Retention,
    Compression,
    Description,
    LimitMarkerTtl,
    Metadata,
    Republish,
    /// A pub/sub stream's duplicate window.
    DuplicateWindow,
    /// A pub/sub stream's message count limit.
    MaxMsgs,
    /// A pub/sub stream's message size limit.
    MaxMsgSize,
    /// A pub/sub stream's per-subject message limit.
    MaxMsgsPerSubject,
    /// A pub/sub stream's discard policy.
    Discard,
    /// A stream's placement (cluster and tags).
    Placement,
    /// A pub/sub stream's consumer limits (inactive threshold, max ack pending).
    ConsumerLimits,
    /// Whether messages may carry a TTL of their own.
    AllowMsgTtl,
}

impl Field {
    /// The name a change shows, as in the status's config.
    pub fn name(self) -> &'static str {
        match self {
            Self::History => "history",
            Self::Ttl => "ttl",
            Self::MaxAge => "maxAge",
            Self::MaxBytes => "maxBytes",
            Self::MaxValueSize => "maxValueSize",
            Self::Storage => "storage",
            Self::Replicas => "replicas",
            Self::Retention => "retention",
            Self::Compression => "compression",
            Self::Description => "description",
            Self::LimitMarkerTtl => "limitMarkerTtl",
            Self::Metadata => "metadata",
            Self::Republish => "republish",
            Self::DuplicateWindow => "duplicateWindow",
            Self::MaxMsgs => "maxMsgs",
            Self::MaxMsgSize => "maxMsgSize",
            Self::MaxMsgsPerSubject => "maxMsgsPerSubject",
            Self::Discard => "discard",
            Self::Placement => "placement",
            Self::ConsumerLimits => "consumerLimits",
            Self::AllowMsgTtl => "allowMsgTtl",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One setting that differs between the live stream and the Component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub field: Field,
    pub live: String,
    pub desired: String,
    pub kind: ChangeKind,
}

/// How a change can be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Applied in place, nothing lost.
    Safe,
    /// Applying it would discard stored data (needs `allow-data-loss`).
    DataLoss,
    /// NATS cannot change it on an existing stream.
    Immutable,
    /// The server cannot do it (replicas on a server that is not clustered).
    Unsupported,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.field, self.live, self.desired)
    }
}
