//! The index: every piece of state the operator keeps per Component, in one place, with insert
//! and remove. What it last wrote (so a reconcile that starts before the watch caught up with our
//! own writes neither writes again nor repeats an Event; a KeyValueBucket or, for a
//! `pubsub.jetstream` Component, a JetStreamStream), its failures in a row (the back-off),
//! and which Components use which bucket or stream (fed by the KeyValueBucket and
//! JetStreamStream watches), so that finding the other users of a bucket or stream is a lookup,
//! and a deleted Component leaves nothing behind.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::crd::{KeyValueBucketSpec, KeyValueBucketStatus};
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

/// Which bucket or stream: its identity as the server reports it (`status.bucket.identity`,
/// `status.stream.identity`), never the text of a URL.
type Place = String;

/// An object the operator writes for a Component, that says which buckets or streams it uses.
pub trait Reports {
    /// Which of the index's use maps it feeds.
    const OWNED: Owned;
    /// The identities of what it last reached.
    fn places(&self) -> Vec<Place>;
}

/// The kinds of object that report uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned {
    /// A KeyValueBucket: its bucket.
    Bucket,
    /// A JetStreamStream: its stream and dead-letter stream.
    Stream,
}

impl Reports for crate::crd::KeyValueBucket {
    const OWNED: Owned = Owned::Bucket;
    fn places(&self) -> Vec<Place> {
        let bucket = self.status.as_ref().and_then(|s| s.bucket.as_ref());
        bucket
            .and_then(|b| b.identity.clone())
            .into_iter()
            .collect()
    }
}

impl Reports for crate::pubsub::JetStreamStream {
    const OWNED: Owned = Owned::Stream;
    fn places(&self) -> Vec<Place> {
        let Some(status) = &self.status else {
            return Vec::new();
        };
        [&status.stream, &status.dead_letter_stream]
            .into_iter()
            .flatten()
            .filter_map(|s| s.identity.clone())
            .collect()
    }
}

/// Which Components last reached which places, for one kind of object.
#[derive(Default)]
struct Uses {
    by_key: HashMap<String, Vec<Place>>,
    users: HashMap<Place, BTreeSet<String>>,
}

impl Uses {
    fn set(&mut self, key: &str, places: Vec<Place>) {
        self.drop(key);
        if places.is_empty() {
            return;
        }
        for place in &places {
            self.users
                .entry(place.clone())
                .or_default()
                .insert(key.to_owned());
        }
        self.by_key.insert(key.to_owned(), places);
    }

    fn drop(&mut self, key: &str) {
        for place in self.by_key.remove(key).unwrap_or_default() {
            if let Some(users) = self.users.get_mut(&place) {
                users.remove(key);
                if users.is_empty() {
                    self.users.remove(&place);
                }
            }
        }
    }

    fn holds(&self, key: &str) -> bool {
        self.by_key.contains_key(key) || self.users.values().any(|u| u.contains(key))
    }
}

#[derive(Default)]
struct State {
    written: HashMap<String, Written>,
    streams_written: HashMap<String, WrittenStream>,
    failures: HashMap<String, u32>,
    bucket_uses: Uses,
    stream_uses: Uses,
}

impl State {
    fn uses(&mut self, owned: Owned) -> &mut Uses {
        match owned {
            Owned::Bucket => &mut self.bucket_uses,
            Owned::Stream => &mut self.stream_uses,
        }
    }
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
    pub fn forget_stream_written(&self, key: &str) -> bool {
        self.lock().streams_written.remove(key).is_some()
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

    /// An object that reports uses was seen (watch): record what it last reached, by the
    /// identity the server reported.
    pub fn seen<O: Reports>(&self, key: &str, object: &O) {
        self.lock().uses(O::OWNED).set(key, object.places());
    }

    /// An object that reports uses was deleted (watch).
    pub fn gone<O: Reports>(&self, key: &str) {
        self.lock().uses(O::OWNED).drop(key);
    }

    /// After a re-list: keeps the uses of the keys `in_scope` accepts only when `seen`.
    pub fn relisted<O: Reports>(&self, in_scope: impl Fn(&str) -> bool, seen: &HashSet<String>) {
        let mut state = self.lock();
        let uses = state.uses(O::OWNED);
        let stale: Vec<String> = uses
            .by_key
            .keys()
            .filter(|k| in_scope(k) && !seen.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            uses.drop(&key);
        }
    }

    /// Other Components whose KeyValueBucket or JetStreamStream last reached the bucket or
    /// stream with this identity, as `namespace/name` in order.
    pub fn other_users(&self, key: &str, identity: &str) -> Vec<String> {
        let state = self.lock();
        let users: BTreeSet<&String> = [&state.bucket_uses, &state.stream_uses]
            .into_iter()
            .filter_map(|u| u.users.get(identity))
            .flatten()
            .filter(|other| *other != key)
            .collect();
        users.into_iter().cloned().collect()
    }

    /// Whether nothing is kept for `key`.
    pub fn is_empty_for(&self, key: &str) -> bool {
        let state = self.lock();
        !state.written.contains_key(key)
            && !state.streams_written.contains_key(key)
            && !state.failures.contains_key(key)
            && !state.bucket_uses.holds(key)
            && !state.stream_uses.holds(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BucketConfig, BucketStatus, KeyValueBucket};

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
        index.seen("a/one", &kvb("orders@1", 1));
        index.seen("b/two", &kvb("orders@1", 1));
        index.seen("c/three", &kvb("orders@1", 5));
        index.seen("d/four", &kvb("orders@2", 1));
        assert_eq!(index.other_users("a/one", "orders@1"), ["b/two", "c/three"]);
        // Moved to another bucket: no longer a user of the first.
        index.seen("b/two", &kvb("carts@1", 1));
        assert_eq!(index.other_users("a/one", "orders@1"), ["c/three"]);
        index.gone::<KeyValueBucket>("c/three");
        assert!(index.other_users("a/one", "orders@1").is_empty());
    }

    #[test]
    fn other_users_of_a_stream_count_with_those_of_a_bucket_of_the_same_identity() {
        use crate::pubsub::JetStreamStream;
        use crate::pubsub::resource::{JetStreamStreamSpec, JetStreamStreamStatus, StreamStatus};
        let jss = |stream: &str, dead_letters: Option<&str>| {
            let facts = |identity: &str| StreamStatus {
                identity: Some(identity.into()),
                ..Default::default()
            };
            let mut jss = JetStreamStream::new("c", JetStreamStreamSpec::default());
            jss.status = Some(JetStreamStreamStatus {
                stream: Some(facts(stream)),
                dead_letter_stream: dead_letters.map(facts),
                ..Default::default()
            });
            jss
        };
        let index = Index::default();
        index.seen("a/maker", &jss("events@1", Some("dead@1")));
        index.seen("a/user", &jss("events@1", Some("dead@1")));
        index.seen("b/reader", &jss("dead@1", None));
        assert_eq!(index.other_users("a/maker", "events@1"), ["a/user"]);
        assert_eq!(
            index.other_users("a/maker", "dead@1"),
            ["a/user", "b/reader"]
        );
        // A KeyValueBucket gone does not drop the same key's stream use.
        index.seen("a/user", &kvb("orders@1", 1));
        index.gone::<KeyValueBucket>("a/user");
        assert_eq!(index.other_users("a/maker", "events@1"), ["a/user"]);
        index.gone::<JetStreamStream>("a/user");
        assert!(index.other_users("a/maker", "events@1").is_empty());
        let seen = HashSet::from(["a/maker".to_owned()]);
        index.relisted::<JetStreamStream>(|k| k.starts_with("b/"), &seen);
        assert!(index.other_users("a/maker", "dead@1").is_empty());
        index.gone::<JetStreamStream>("a/maker");
        assert!(index.is_empty_for("a/maker") && index.is_empty_for("b/reader"));
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
        index.seen(key, &kvb("orders@1", 1));
        assert_eq!(index.keys(), [key]);
        index.remove(key);
        index.gone::<KeyValueBucket>(key);
        assert!(index.is_empty_for(key));
        assert!(index.keys().is_empty());
    }

    #[test]
    fn a_relist_drops_the_buckets_it_no_longer_lists_in_its_scope() {
        let index = Index::default();
        index.seen("a/one", &kvb("orders@1", 1));
        index.seen("a/two", &kvb("orders@1", 1));
        index.seen("b/three", &kvb("orders@1", 1));
        let seen = HashSet::from(["a/one".to_owned()]);
        index.relisted::<KeyValueBucket>(|k| k.starts_with("a/"), &seen);
        assert_eq!(index.other_users("x/y", "orders@1"), ["a/one", "b/three"]);
    }
}
