//! The index: every piece of state the operator keeps per Component, in one place, with insert
//! and remove. What it last wrote (so a reconcile that starts before the watch caught up with our
//! own writes neither writes again nor repeats an Event; a KeyValueBucket or, for a
//! `pubsub.jetstream` Component, a JetStreamStream), its failures in a row (the back-off),
//! and which Components use which bucket (fed by the KeyValueBucket watch), so that finding the
//! other users of a bucket is a lookup, and a deleted Component leaves nothing behind.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::crd::{BucketConfig, KeyValueBucketSpec, KeyValueBucketStatus};
use crate::pubsub::resource::{JetStreamStreamSpec, JetStreamStreamStatus};

/// What the operator last wrote for a Component's JetStreamStream.
pub type WrittenStream = Written<JetStreamStreamSpec, JetStreamStreamStatus>;

/// What the operator last wrote for a Component's KeyValueBucket (or, as [`WrittenStream`], its
/// JetStreamStream).
#[derive(Clone, Debug, PartialEq)]
pub struct Written<Spec = KeyValueBucketSpec, Status = KeyValueBucketStatus> {
    /// The spec applied.
    pub spec: Spec,
    /// The object's generation after that.
    pub generation: Option<i64>,
    /// The status applied.
    pub status: Status,
}

/// Which bucket: its identity as the server reports it (`status.bucket.identity`), never the
/// text of a URL.
type Place = String;

/// What one KeyValueBucket says about its bucket.
#[derive(Clone, Debug, PartialEq)]
struct BucketUse {
    place: Place,
    config: Option<BucketConfig>,
}

#[derive(Default)]
struct State {
    written: HashMap<String, Written>,
    streams_written: HashMap<String, WrittenStream>,
    failures: HashMap<String, u32>,
    uses: HashMap<String, BucketUse>,
    users: HashMap<Place, BTreeSet<String>>,
}

/// Per-Component state, keyed `namespace/name`, shared by every reconcile.
#[derive(Default)]
pub struct Index {
    state: Mutex<State>,
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the operator last wrote for `key`.
    pub fn written(&self, key: &str) -> Option<Written> {
        self.lock().written.get(key).cloned()
    }

    /// Records what the operator wrote for `key`.
    pub fn set_written(&self, key: &str, written: Written) {
        self.lock().written.insert(key.to_owned(), written);
    }

    /// Forgets what was written for `key` (its KeyValueBucket is gone): the next reconcile writes
    /// it all again.
    pub fn forget_written(&self, key: &str) -> bool {
        self.lock().written.remove(key).is_some()
    }

    /// What the operator last wrote for the JetStreamStream of `key`.
    pub fn stream_written(&self, key: &str) -> Option<WrittenStream> {
        self.lock().streams_written.get(key).cloned()
    }

    /// Records what the operator wrote for the JetStreamStream of `key`.
    pub fn set_stream_written(&self, key: &str, written: WrittenStream) {
        self.lock().streams_written.insert(key.to_owned(), written);
    }

    /// Forgets what was written for the JetStreamStream of `key` (it is gone): the next
    /// reconcile writes it all again.
    pub fn forget_stream_written(&self, key: &str) {
        self.lock().streams_written.remove(key);
    }

    /// Counts one more failure in a row of `key`; returns the count.
    pub fn failed(&self, key: &str) -> u32 {
        let mut state = self.lock();
        let n = state.failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        *n
    }

    /// `key` succeeded (or waits for a change): its back-off starts again.
    pub fn succeeded(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// A Component is gone: drop everything the operator kept for it. (What its KeyValueBucket
    /// says goes when the KeyValueBucket does, which garbage collection deletes with it.)
    pub fn remove(&self, key: &str) {
        let mut state = self.lock();
        state.written.remove(key);
        state.streams_written.remove(key);
        state.failures.remove(key);
    }

    /// The Components the operator holds state for.
    pub fn keys(&self) -> Vec<String> {
        let state = self.lock();
        let keys: BTreeSet<&String> = state
            .written
            .keys()
            .chain(state.streams_written.keys())
            .chain(state.failures.keys())
            .collect();
        keys.into_iter().cloned().collect()
    }

    /// A KeyValueBucket was seen (watch): record which bucket it last reached, by the identity
    /// the server reported, with which settings.
    pub fn bucket_seen(&self, key: &str, kvb: &crate::crd::KeyValueBucket) {
        let mut state = self.lock();
        state.drop_use(key);
        let Some(place) = kvb
            .status
            .as_ref()
            .and_then(|s| s.bucket.as_ref())
            .and_then(|b| b.identity.clone())
        else {
            return;
        };
        state
            .users
            .entry(place.clone())
            .or_default()
            .insert(key.to_owned());
        let config = kvb.spec.config.clone();
        state
            .uses
            .insert(key.to_owned(), BucketUse { place, config });
    }

    /// A KeyValueBucket was deleted (watch).
    pub fn bucket_gone(&self, key: &str) {
        self.lock().drop_use(key);
    }

    /// After a re-list: keeps the bucket uses of the keys `in_scope` accepts only when `seen`.
    pub fn buckets_relisted(&self, in_scope: impl Fn(&str) -> bool, seen: &HashSet<String>) {
        let mut state = self.lock();
        let stale: Vec<String> = state
            .uses
            .keys()
            .filter(|k| in_scope(k) && !seen.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            state.drop_use(&key);
        }
    }

    /// Other Components whose KeyValueBucket last reached the bucket with this identity, as
    /// `namespace/name` in order.
    pub fn other_users(&self, key: &str, identity: &str) -> Vec<String> {
        let state = self.lock();
        let Some(users) = state.users.get(identity) else {
            return Vec::new();
        };
        users
            .iter()
            .filter(|other| *other != key)
            .cloned()
            .collect()
    }

    /// Whether nothing is kept for `key`.
    pub fn is_empty_for(&self, key: &str) -> bool {
        let state = self.lock();
        !state.written.contains_key(key)
            && !state.streams_written.contains_key(key)
            && !state.failures.contains_key(key)
            && !state.uses.contains_key(key)
            && state.users.values().all(|u| !u.contains(key))
    }
}

impl State {
    fn drop_use(&mut self, key: &str) {
        if let Some(old) = self.uses.remove(key)
            && let Some(users) = self.users.get_mut(&old.place)
        {
            users.remove(key);
            if users.is_empty() {
                self.users.remove(&old.place);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BucketStatus, KeyValueBucket};

    fn kvb(identity: &str, history: i64) -> KeyValueBucket {
        let mut kvb = KeyValueBucket::new(
            "c",
            KeyValueBucketSpec {
                component: "c".into(),
                bucket: Some("orders".into()),
                servers: vec!["nats://nats:4222".into()],
                config: Some(BucketConfig {
                    history,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        kvb.status = Some(KeyValueBucketStatus {
            bucket: Some(BucketStatus {
                identity: Some(identity.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        kvb
    }

    #[test]
    fn other_users_of_a_bucket_are_a_lookup_by_server_identity() {
        let index = Index::default();
        index.bucket_seen("a/one", &kvb("orders@1", 1));
        index.bucket_seen("b/two", &kvb("orders@1", 1));
        index.bucket_seen("c/three", &kvb("orders@1", 5));
        index.bucket_seen("d/four", &kvb("orders@2", 1));
        assert_eq!(index.other_users("a/one", "orders@1"), ["b/two", "c/three"]);
        // Moved to another bucket: no longer a user of the first.
        index.bucket_seen("b/two", &kvb("carts@1", 1));
        assert_eq!(index.other_users("a/one", "orders@1"), ["c/three"]);
        index.bucket_gone("c/three");
        assert!(index.other_users("a/one", "orders@1").is_empty());
    }

    #[test]
    fn a_deleted_component_leaves_nothing_behind() {
        let index = Index::default();
        let key = "ns/c";
        index.set_written(
            key,
            Written {
                spec: kvb("orders@1", 1).spec,
                generation: Some(1),
                status: KeyValueBucketStatus::default(),
            },
        );
        assert_eq!(index.failed(key), 1);
        assert_eq!(index.failed(key), 2);
        index.bucket_seen(key, &kvb("orders@1", 1));
        assert_eq!(index.keys(), [key]);
        index.remove(key);
        index.bucket_gone(key);
        assert!(index.is_empty_for(key));
        assert!(index.keys().is_empty());
    }

    #[test]
    fn a_relist_drops_the_buckets_it_no_longer_lists_in_its_scope() {
        let index = Index::default();
        index.bucket_seen("a/one", &kvb("orders@1", 1));
        index.bucket_seen("a/two", &kvb("orders@1", 1));
        index.bucket_seen("b/three", &kvb("orders@1", 1));
        let seen = HashSet::from(["a/one".to_owned()]);
        index.buckets_relisted(|k| k.starts_with("a/"), &seen);
        assert_eq!(index.other_users("x/y", "orders@1"), ["a/one", "b/three"]);
    }
}
