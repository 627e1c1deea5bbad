//! What one namespace may provision: the `quota` of a `NatsServerPolicy`, each namespace the
//! policy applies to holding its own (pure).
//!
//! A platform team that shares one NATS account among many teams bounds each team's part of it:
//! how many buckets and streams, how many bytes their `max-bytes` add up to, which storage
//! types, how many replicas, and whether a size limit is required at all. Every quota of every
//! policy that applies to a namespace holds (a laxer policy does not lift another's limit).
//!
//! Usage is counted from the Components of the namespace, as the operator's own cache holds
//! them, never from a NATS listing: what a Component asks for by its annotations (see
//! [`Demand::of`]). The Components are admitted in the order they were created (then by name),
//! each when it fits beside those admitted before it, so that two Components created at once
//! can never both take the last place, and a Component deleted frees its place for the next one
//! waiting. A Component counts from the moment it is admitted, whether or not its bucket or
//! stream exists yet; one refused, or one whose annotations are invalid, counts nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dapr::Component;
use crate::settings::Storage;

/// The limits of one namespace. Absent limits are not enforced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceQuota {
    /// Most KV buckets (`state.jetstream` Components) in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buckets: Option<u32>,
    /// Most streams (`pubsub.jetstream` Components: the topics' stream; its dead-letter stream
    /// is not counted apart) in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    /// Most bytes the `jetstreamkv.io/max-bytes` of the namespace's buckets and streams add up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<i64>,
    /// The storage types allowed (`file`, `memory`); empty allows both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<Storage>,
    /// Most replicas of one bucket or stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// Every bucket and stream must set `jetstreamkv.io/max-bytes` (no unbounded one).
    #[serde(default)]
    pub require_max_bytes: bool,
}

/// What a Component provisions, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provision {
    /// A `state.jetstream` Component's KV bucket.
    Bucket,
    /// A `pubsub.jetstream` Component's stream.
    Stream,
}

impl Provision {
    fn noun(self) -> &'static str {
        match self {
            Self::Bucket => "bucket",
            Self::Stream => "stream",
        }
    }
}

/// What one Component asks of its namespace's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    /// A bucket or a stream.
    pub provision: Provision,
    /// Its storage type.
    pub storage: Storage,
    /// Its replicas.
    pub replicas: usize,
    /// Its `max-bytes`; None: unlimited.
    pub max_bytes: Option<i64>,
}

impl Demand {
    /// What `component` asks for by its annotations; None when it is not a Component the
    /// operator provisions for, or its annotations are invalid (it is refused for that, and
    /// provisions nothing).
    pub fn of(component: &Component) -> Option<Self> {
        use kube::ResourceExt as _;
        if component.is_jetstream_pubsub() {
            let s = crate::pubsub::stream::stream_settings(component.annotations()).ok()?;
            return Some(Self {
                provision: Provision::Stream,
                storage: s.storage,
                replicas: s.replicas,
                max_bytes: s.max_bytes,
            });
        }
        if component.is_jetstream_state_store() {
            let s = crate::settings::from_annotations(component.annotations()).ok()?;
            return Some(Self {
                provision: Provision::Bucket,
                storage: s.storage,
                replicas: s.replicas,
                max_bytes: s.max_bytes,
            });
        }
        None
    }
}

/// What the Components admitted so far use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Buckets.
    pub buckets: u32,
    /// Streams.
    pub streams: u32,
    /// The sum of their `max-bytes`.
    pub bytes: i64,
}

impl Usage {
    fn add(&mut self, d: &Demand) {
        match d.provision {
            Provision::Bucket => self.buckets = self.buckets.saturating_add(1),
            Provision::Stream => self.streams = self.streams.saturating_add(1),
        }
        self.bytes = self.bytes.saturating_add(d.max_bytes.unwrap_or(0).max(0));
    }
}

/// Why a Component does not fit its namespace's quota: the limit and the usage.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// A storage type the quota does not allow.
    #[error(
        "the namespace quota of the NatsServerPolicy allows {allowed} storage only, and this \
         {noun} asks for {asked}: set jetstreamkv.io/storage to an allowed type"
    )]
    Storage {
        /// What the Component asks for.
        asked: &'static str,
        /// What is allowed, comma separated.
        allowed: String,
        /// Bucket or stream.
        noun: &'static str,
    },
    /// More replicas than the ceiling.
    #[error(
        "the namespace quota of the NatsServerPolicy allows at most {limit} replicas, and this \
         {noun} asks for {asked}: lower jetstreamkv.io/replicas"
    )]
    Replicas {
        /// The ceiling.
        limit: u32,
        /// What the Component asks for.
        asked: usize,
        /// Bucket or stream.
        noun: &'static str,
    },
    /// No `max-bytes` where the quota requires one.
    #[error(
        "the namespace quota of the NatsServerPolicy requires a size limit: set \
         jetstreamkv.io/max-bytes on this {noun}"
    )]
    MaxBytesRequired {
        /// Bucket or stream.
        noun: &'static str,
    },
    /// The namespace has as many buckets or streams as it may.
    #[error(
        "the namespace quota of the NatsServerPolicy allows {limit} {noun}s, and {used} are \
         used by earlier Components of the namespace: delete one, or ask the cluster admin for \
         more (this Component is admitted as soon as there is room)"
    )]
    Count {
        /// The limit.
        limit: u32,
        /// How many are used.
        used: u32,
        /// Bucket or stream.
        noun: &'static str,
    },
    /// The namespace's `max-bytes` would add up to more than the quota.
    #[error(
        "the namespace quota of the NatsServerPolicy allows {limit} bytes of max-bytes in all, \
         {used} are used by earlier Components of the namespace, and this {noun} asks for \
         {asked}: lower jetstreamkv.io/max-bytes, free some, or ask the cluster admin for more \
         (this Component is admitted as soon as there is room)"
    )]
    Bytes {
        /// The limit.
        limit: i64,
        /// The sum of the earlier admitted Components' max-bytes.
        used: i64,
        /// What this Component asks for.
        asked: i64,
        /// Bucket or stream.
        noun: &'static str,
    },
}

impl crate::failure::Failure for QuotaExceeded {
    fn reason(&self) -> &'static str {
        "QuotaExceeded"
    }

    /// Another Component's deletion requeues the waiting ones at once, a change of the policy at
    /// the next drift check.
    fn retry(&self) -> crate::failure::Retry {
        crate::failure::Retry::Resync
    }
}

/// Why `d` does not fit `quota` beside `used`, or None.
pub fn refusal(quota: &NamespaceQuota, used: &Usage, d: &Demand) -> Option<QuotaExceeded> {
    let noun = d.provision.noun();
    if !quota.storage.is_empty() && !quota.storage.contains(&d.storage) {
        let allowed: Vec<&str> = quota.storage.iter().map(|s| s.as_str()).collect();
        return Some(QuotaExceeded::Storage {
            asked: d.storage.as_str(),
            allowed: allowed.join(", "),
            noun,
        });
    }
    if let Some(limit) = quota.max_replicas
        && d.replicas > usize::try_from(limit).unwrap_or(usize::MAX)
    {
        return Some(QuotaExceeded::Replicas {
            limit,
            asked: d.replicas,
            noun,
        });
    }
    if quota.require_max_bytes && d.max_bytes.is_none_or(|b| b <= 0) {
        return Some(QuotaExceeded::MaxBytesRequired { noun });
    }
    let (limit, count) = match d.provision {
        Provision::Bucket => (quota.max_buckets, used.buckets),
        Provision::Stream => (quota.max_streams, used.streams),
    };
    if let Some(limit) = limit
        && count >= limit
    {
        return Some(QuotaExceeded::Count {
            limit,
            used: count,
            noun,
        });
    }
    if let Some(limit) = quota.max_bytes {
        // An unbounded bucket under a byte quota has no size to count: it is refused as asking
        // for more than any quota.
        let asked = d.max_bytes.filter(|b| *b > 0);
        let fits = asked.is_some_and(|a| used.bytes.saturating_add(a) <= limit);
        if !fits {
            return Some(QuotaExceeded::Bytes {
                limit,
                used: used.bytes,
                asked: asked.unwrap_or(i64::MAX),
                noun,
            });
        }
    }
    None
}

/// The verdict on the Component `target` among the Components of its namespace (in any order;
/// each with its key `namespace/name`, creation time in seconds and demand): None when it is
/// admitted. The Components are admitted in creation order, each when it fits every quota
/// beside those admitted before it. Linear in the number of Components.
pub fn admit<'a>(
    quotas: &[NamespaceQuota],
    namespace: impl IntoIterator<Item = (&'a str, i64, Demand)>,
    target: &str,
    target_demand: &Demand,
) -> Option<QuotaExceeded> {
    if quotas.is_empty() {
        return None;
    }
    let mut ordered: Vec<(i64, &str, Demand)> = namespace
        .into_iter()
        .map(|(key, created, d)| (created, key, d))
        .collect();
    ordered.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut used = Usage::default();
    let first_refusal = |used: &Usage, d: &Demand| quotas.iter().find_map(|q| refusal(q, used, d));
    for (_, key, d) in &ordered {
        if *key == target {
            break;
        }
        if first_refusal(&used, d).is_none() {
            used.add(d);
        }
    }
    first_refusal(&used, target_demand)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure as _;

    fn bucket(bytes: Option<i64>) -> Demand {
        Demand {
            provision: Provision::Bucket,
            storage: Storage::File,
            replicas: 1,
            max_bytes: bytes,
        }
    }

    fn stream(bytes: Option<i64>) -> Demand {
        Demand {
            provision: Provision::Stream,
            ..bucket(bytes)
        }
    }

    #[test]
    fn each_limit_names_itself_and_the_usage() {
        let q = NamespaceQuota {
            max_buckets: Some(2),
            max_streams: Some(1),
            max_bytes: Some(1000),
            storage: vec![Storage::File],
            max_replicas: Some(1),
            require_max_bytes: true,
        };
        let used = Usage {
            buckets: 1,
            streams: 1,
            bytes: 600,
        };
        assert_eq!(refusal(&q, &used, &bucket(Some(400))), None);
        let e = refusal(&q, &used, &bucket(Some(401))).unwrap();
        assert_eq!(e.reason(), "QuotaExceeded");
        assert!(
            e.to_string()
                .contains("allows 1000 bytes of max-bytes in all, 600 are used"),
            "{e}"
        );
        assert!(e.to_string().contains("asks for 401"), "{e}");
        let e = refusal(&q, &used, &stream(Some(1))).unwrap();
        assert_eq!(
            e,
            QuotaExceeded::Count {
                limit: 1,
                used: 1,
                noun: "stream"
            }
        );
        assert!(e.to_string().contains("allows 1 streams, and 1 are used"));
        let e = refusal(&q, &used, &bucket(None)).unwrap();
        assert!(matches!(e, QuotaExceeded::MaxBytesRequired { .. }), "{e}");
        let memory = Demand {
            storage: Storage::Memory,
            ..bucket(Some(1))
        };
        let e = refusal(&q, &used, &memory).unwrap();
        assert!(
            e.to_string()
                .contains("allows file storage only, and this bucket asks for memory"),
            "{e}"
        );
        let three = Demand {
            replicas: 3,
            ..bucket(Some(1))
        };
        let e = refusal(&q, &used, &three).unwrap();
        assert!(e.to_string().contains("at most 1 replicas"), "{e}");
        // No limits: anything goes.
        let none = NamespaceQuota::default();
        let huge = Usage {
            buckets: u32::MAX,
            streams: u32::MAX,
            bytes: i64::MAX,
        };
        assert_eq!(refusal(&none, &huge, &bucket(None)), None);
        // Under a byte quota, an unbounded bucket does not fit.
        let bytes_only = NamespaceQuota {
            max_bytes: Some(10),
            ..Default::default()
        };
        assert!(refusal(&bytes_only, &Usage::default(), &bucket(None)).is_some());
    }

    #[test]
    fn components_are_admitted_in_creation_order_and_a_deletion_frees_a_place() {
        let q = [NamespaceQuota {
            max_buckets: Some(3),
            max_bytes: Some(100),
            ..Default::default()
        }];
        let all = [
            ("ns/d", 4, bucket(Some(10))),
            ("ns/c", 3, bucket(Some(10))),
            ("ns/a", 1, bucket(Some(10))),
            ("ns/big", 2, bucket(Some(95))),
            ("ns/b", 1, bucket(Some(10))),
            ("ns/s", 0, stream(Some(10))),
        ];
        let verdict = |target: &str, among: &[(&'static str, i64, Demand)]| {
            let d = among.iter().find(|(k, _, _)| *k == target).unwrap().2;
            admit(&q, among.iter().copied(), target, &d)
        };
        // s (a stream, 10 bytes), a, b (same second: by name) and c are admitted; big is over
        // the bytes (and, refused, takes no place), d over the count.
        for admitted in ["ns/s", "ns/a", "ns/b", "ns/c"] {
            assert_eq!(verdict(admitted, &all), None, "{admitted}");
        }
        assert!(matches!(
            verdict("ns/big", &all),
            Some(QuotaExceeded::Bytes {
                used: 30,
                asked: 95,
                ..
            })
        ));
        assert!(matches!(
            verdict("ns/d", &all),
            Some(QuotaExceeded::Count { used: 3, .. })
        ));
        // Whatever order they are given in, the verdicts agree.
        let mut reversed = all;
        reversed.reverse();
        assert_eq!(verdict("ns/c", &reversed), None);
        assert!(verdict("ns/d", &reversed).is_some());
        // b deleted: d is admitted, big is still over.
        let without_b: Vec<_> = all.iter().copied().filter(|c| c.0 != "ns/b").collect();
        assert_eq!(verdict("ns/d", &without_b), None);
        assert!(verdict("ns/big", &without_b).is_some());
        // No quota: nothing is counted.
        assert_eq!(admit(&[], all, "ns/d", &bucket(None)), None);
    }

    #[test]
    fn every_applicable_quota_holds() {
        let lax = NamespaceQuota {
            max_buckets: Some(10),
            ..Default::default()
        };
        let strict = NamespaceQuota {
            max_buckets: Some(1),
            ..Default::default()
        };
        let ns = [("ns/a", 1, bucket(None)), ("ns/b", 2, bucket(None))];
        assert!(admit(&[lax.clone(), strict], ns, "ns/b", &bucket(None)).is_some());
        assert!(admit(&[lax], ns, "ns/b", &bucket(None)).is_none());
    }
}
