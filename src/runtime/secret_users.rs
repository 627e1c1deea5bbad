//! Which of our Components name which Secrets, kept from the Component watch. A Secret's event
//! (every Secret of the cluster is listed at each start) finds the Components to reconcile here
//! instead of scanning every cached Component: with 100,000 Components, a scan per Secret made
//! a start-up quadratic.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use kube::ResourceExt as _;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::dapr::Component;
use crate::dapr::metadata::secret_names;

/// `(namespace, name)` of a Component or a Secret.
type Key = (String, String);

/// The Secrets each of our Components names, both ways.
#[derive(Default)]
pub struct SecretUsers {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// `(namespace, Secret)` → the names of the Components of that namespace naming it.
    users: HashMap<Key, BTreeSet<String>>,
    /// `(namespace, Component)` → the Secrets it names (only Components naming any).
    named: HashMap<Key, BTreeSet<String>>,
    /// During a re-list: the Components listed so far.
    relisted: Option<HashSet<Key>>,
}

impl SecretUsers {
    /// Follows one event of the Component watch.
    pub fn event(&self, event: &watcher::Event<DeserializeGuard<Component>>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(c) => {
                state.set(c);
            }
            watcher::Event::Delete(c) => state.remove(&key_of(c)),
            watcher::Event::Init => state.relisted = Some(HashSet::new()),
            watcher::Event::InitApply(c) => {
                let key = state.set(c);
                state.relisted.get_or_insert_default().insert(key);
            }
            watcher::Event::InitDone => {
                // Deleted while the watch was away: listed no more.
                let seen = state.relisted.take().unwrap_or_default();
                let gone: Vec<Key> = state
                    .named
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    state.remove(&key);
                }
            }
        }
    }

    /// Our Components of the Secret's namespace that name it.
    pub fn users(
        &self,
        namespace: &str,
        secret: &str,
    ) -> Vec<ObjectRef<DeserializeGuard<Component>>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .users
            .get(&(namespace.to_owned(), secret.to_owned()))
            .into_iter()
            .flatten()
            .map(|name| ObjectRef::new(name).within(namespace))
            .collect()
    }
}

impl State {
    /// Records what the Component names now; returns its key.
    fn set(&mut self, c: &DeserializeGuard<Component>) -> Key {
        let key = key_of(c);
        self.remove(&key);
        let names = match &c.0 {
            Ok(component) if component.is_ours() => secret_names(component),
            _ => BTreeSet::new(),
        };
        if names.is_empty() {
            return key;
        }
        for secret in &names {
            self.users
                .entry((key.0.clone(), secret.clone()))
                .or_default()
                .insert(key.1.clone());
        }
        self.named.insert(key.clone(), names);
        key
    }

    fn remove(&mut self, key: &Key) {
        for secret in self.named.remove(key).into_iter().flatten() {
            let secret_key = (key.0.clone(), secret);
            if let Some(users) = self.users.get_mut(&secret_key) {
                users.remove(&key.1);
                if users.is_empty() {
                    self.users.remove(&secret_key);
                }
            }
        }
    }
}

fn key_of(c: &DeserializeGuard<Component>) -> Key {
    (c.namespace().unwrap_or_default(), c.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn component(
        ns: &str,
        name: &str,
        type_: &str,
        secrets: &[&str],
    ) -> DeserializeGuard<Component> {
        let metadata: Vec<_> = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"name": format!("item{i}"), "secretKeyRef": {"name": s, "key": "k"}}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": type_, "version": "v1", "metadata": metadata},
        }))
        .expect("a Component")
    }

    fn users(index: &SecretUsers, ns: &str, secret: &str) -> Vec<String> {
        let mut names: Vec<String> = index
            .users(ns, secret)
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn finds_our_components_of_the_secrets_namespace_that_name_it() {
        let index = SecretUsers::default();
        for c in [
            component("a", "store", "state.jetstream", &["creds", "tls"]),
            component("a", "events", "pubsub.jetstream", &["creds"]),
            component("a", "redis", "state.redis", &["creds"]),
            component("b", "store", "state.jetstream", &["creds"]),
        ] {
            index.event(&watcher::Event::Apply(c));
        }
        assert_eq!(users(&index, "a", "creds"), ["a/events", "a/store"]);
        assert_eq!(users(&index, "a", "tls"), ["a/store"]);
        assert_eq!(users(&index, "b", "creds"), ["b/store"]);
        assert!(users(&index, "a", "other").is_empty());
    }

    #[test]
    fn follows_changes_deletions_and_type_changes() {
        let index = SecretUsers::default();
        index.event(&watcher::Event::Apply(component(
            "a",
            "s",
            "state.jetstream",
            &["old"],
        )));
        index.event(&watcher::Event::Apply(component(
            "a",
            "s",
            "state.jetstream",
            &["new"],
        )));
        assert!(users(&index, "a", "old").is_empty());
        assert_eq!(users(&index, "a", "new"), ["a/s"]);
        // No longer ours: its Secrets trigger nothing (its cleanup is triggered by its own event).
        index.event(&watcher::Event::Apply(component(
            "a",
            "s",
            "state.redis",
            &["new"],
        )));
        assert!(users(&index, "a", "new").is_empty());
        index.event(&watcher::Event::Apply(component(
            "a",
            "t",
            "state.jetstream",
            &["x"],
        )));
        index.event(&watcher::Event::Delete(component(
            "a",
            "t",
            "state.jetstream",
            &["x"],
        )));
        assert!(users(&index, "a", "x").is_empty());
        assert!(index.state.lock().expect("lock").users.is_empty());
    }

    #[test]
    fn a_relist_drops_the_components_deleted_meanwhile() {
        let index = SecretUsers::default();
        index.event(&watcher::Event::Apply(component(
            "a",
            "kept",
            "state.jetstream",
            &["s"],
        )));
        index.event(&watcher::Event::Apply(component(
            "a",
            "gone",
            "state.jetstream",
            &["s"],
        )));
        index.event(&watcher::Event::Init);
        index.event(&watcher::Event::InitApply(component(
            "a",
            "kept",
            "state.jetstream",
            &["s"],
        )));
        // Until the list is done, the old entries still count.
        assert_eq!(users(&index, "a", "s"), ["a/gone", "a/kept"]);
        index.event(&watcher::Event::InitDone);
        assert_eq!(users(&index, "a", "s"), ["a/kept"]);
    }
}
