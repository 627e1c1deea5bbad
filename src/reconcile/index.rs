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

/// An object the operator writes for a Component (same name and namespace): a KeyValueBucket
/// for a state store, a JetStreamStream for a pub/sub. The index and the context are generic
/// over it; each kind says only where its state lives and what it reports.
pub trait Owned:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// What the operator understood of the Component.
    type Spec: Clone + PartialEq + serde::Serialize;
    /// What it says about the bucket or streams.
    type Status: Clone + Default + PartialEq + serde::Serialize;
    /// Where the index keeps this kind's state.
    fn slots(state: &mut State) -> &mut Slots<Self::Spec, Self::Status>;
    /// The scope's cache of this kind.
    fn cache(ctx: &super::Context) -> &kube::runtime::reflector::Store<Self>;
    /// What a cached object says was written.
    fn as_written(&self) -> Written<Self::Spec, Self::Status>;
    /// The identities of the buckets or streams it last reached.
    fn places(&self) -> Vec<Place>;
    /// The conditions a status holds.
    fn conditions(
        status: &Self::Status,
    ) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition];
}

impl Owned for crate::crd::KeyValueBucket {
    type Spec = KeyValueBucketSpec;
    type Status = KeyValueBucketStatus;
    fn slots(state: &mut State) -> &mut Slots<Self::Spec, Self::Status> {
        &mut state.buckets
    }
    fn cache(ctx: &super::Context) -> &kube::runtime::reflector::Store<Self> {
        &ctx.kvbs
    }
    fn as_written(&self) -> Written<Self::Spec, Self::Status> {
        Written {
            spec: self.spec.clone(),
            generation: self.metadata.generation,
            status: self.status.clone().unwrap_or_default(),
        }
    }
    fn places(&self) -> Vec<Place> {
        let bucket = self.status.as_ref().and_then(|s| s.bucket.as_ref());
        bucket
            .and_then(|b| b.identity.clone())
            .into_iter()
            .collect()
    }
    fn conditions(
        status: &Self::Status,
    ) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
        &status.reconcile.conditions
    }
}

impl Owned for crate::pubsub::JetStreamStream {
    type Spec = JetStreamStreamSpec;
    type Status = JetStreamStreamStatus;
    fn slots(state: &mut State) -> &mut Slots<Self::Spec, Self::Status> {
        &mut state.streams
    }
    fn cache(ctx: &super::Context) -> &kube::runtime::reflector::Store<Self> {
        &ctx.streams
    }
    fn as_written(&self) -> Written<Self::Spec, Self::Status> {
        Written {
            spec: self.spec.clone(),
            generation: self.metadata.generation,
            status: self.status.clone().unwrap_or_default(),
        }
    }
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
    fn conditions(
        status: &Self::Status,
    ) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
        &status.reconcile.conditions
    }
}

/// What was written of one kind for each Component, and which places each reached.
pub struct Slots<Spec, Status> {
    written: HashMap<String, Written<Spec, Status>>,
    uses: Uses,
}

impl<Spec, Status> Default for Slots<Spec, Status> {
    fn default() -> Self {
        Self {
            written: HashMap::new(),
            uses: Uses::default(),
        }
    }
}

impl<Spec, Status> Slots<Spec, Status> {
    fn holds(&self, key: &str) -> bool {
        self.written.contains_key(key) || self.uses.holds(key)
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

/// Everything the index holds, per kind of owned object and per Component.
#[derive(Default)]
pub struct State {
    buckets: Slots<KeyValueBucketSpec, KeyValueBucketStatus>,
    streams: Slots<JetStreamStreamSpec, JetStreamStreamStatus>,
    failures: HashMap<String, u32>,
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

    /// What the operator last wrote for `key`'s object of kind `K`.
    pub fn written<K: Owned>(&self, key: &str) -> Option<Written<K::Spec, K::Status>> {
        K::slots(&mut self.lock()).written.get(key).cloned()
    }

    /// Records what the operator wrote for `key`'s object of kind `K`.
    pub fn set_written<K: Owned>(&self, key: &str, written: Written<K::Spec, K::Status>) {
        K::slots(&mut self.lock())
            .written
            .insert(key.to_owned(), written);
    }

    /// Forgets what was written for `key`'s object of kind `K` (it is gone): the next reconcile
    /// writes it all again. Whether anything was remembered.
    pub fn forget_written<K: Owned>(&self, key: &str) -> bool {
        K::slots(&mut self.lock()).written.remove(key).is_some()
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

    /// A Component is gone: drop everything the operator kept for it, its uses too: a Component
    /// that is gone uses nothing, even while garbage collection has not yet deleted its
    /// KeyValueBucket or JetStreamStream (else deleting the maker of a bucket or stream right
    /// after its last other user would keep it).
    pub fn remove(&self, key: &str) {
        let mut state = self.lock();
        state.buckets.written.remove(key);
        state.streams.written.remove(key);
        state.buckets.uses.drop(key);
        state.streams.uses.drop(key);
        state.failures.remove(key);
    }

    /// The Components the operator holds state for.
    pub fn keys(&self) -> Vec<String> {
        let state = self.lock();
        let keys: BTreeSet<&String> = state
            .buckets
            .written
            .keys()
            .chain(state.streams.written.keys())
            .chain(state.failures.keys())
            .collect();
        keys.into_iter().cloned().collect()
    }

    /// An object that reports uses was seen (watch): record what it last reached, by the
    /// identity the server reported.
    pub fn seen<O: Owned>(&self, key: &str, object: &O) {
        O::slots(&mut self.lock()).uses.set(key, object.places());
    }

    /// An object that reports uses was deleted (watch).
    pub fn gone<O: Owned>(&self, key: &str) {
        O::slots(&mut self.lock()).uses.drop(key);
    }

    /// After a re-list: keeps the uses of the keys `in_scope` accepts only when `seen`.
    pub fn relisted<O: Owned>(&self, in_scope: impl Fn(&str) -> bool, seen: &HashSet<String>) {
        let mut state = self.lock();
        let uses = &mut O::slots(&mut state).uses;
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
        let users: BTreeSet<&String> = [&state.buckets.uses, &state.streams.uses]
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
        !state.buckets.holds(key) && !state.streams.holds(key) && !state.failures.contains_key(key)
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
        // A Component removed is no user, even before its JetStreamStream is deleted.
        index.seen("a/maker", &jss("events@1", None));
        index.seen("a/user", &jss("events@1", None));
        index.remove("a/user");
        assert!(index.other_users("a/maker", "events@1").is_empty());
    }

    #[test]
    fn a_deleted_component_leaves_nothing_behind() {
        let index = Index::default();
        let key = "ns/c";
        index.set_written::<KeyValueBucket>(
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
