//! Lets go of what the operator holds for Components that no longer exist (deleted Components get
//! no reconcile): their connection, their index entries, their metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::dapr::Component;
use crate::metrics::Metrics;
use crate::nats::pool::ConnectionPool;
use crate::reconcile::index::Index;

/// Longest time between two sweeps of deleted Components.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// What the operator holds per Component.
#[derive(Clone)]
pub struct Held {
    pub pool: Arc<ConnectionPool>,
    pub index: Arc<Index>,
    pub metrics: Arc<Metrics>,
}

/// Lets go of what the operator holds for a deleted Component: its connection (closed when no
/// other Component uses it), its index entries, its metrics.
pub fn forget_deleted(key: &str, held: &Held) {
    held.pool.release(key);
    held.metrics.set_state(key, None);
    held.index.remove(key);
}

/// Deletions are handled as the watch sees them; this catches the ones it missed (a deletion
/// while the watch re-listed, a reconcile that finished after the deletion).
pub async fn sweep(
    held: Held,
    components: Vec<Store<DeserializeGuard<Component>>>,
    synced: Vec<Arc<AtomicBool>>,
    every: Duration,
) {
    // An empty store before the first list says nothing about what exists. (Polled, not
    // `Store::wait_until_ready`: that wakes only one of several waiters.)
    while !synced.iter().all(|s| s.load(Ordering::Acquire)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let exists = |key: &str| {
            let (namespace, name) = key.split_once('/').unwrap_or_default();
            let reference = ObjectRef::new(name).within(namespace);
            components.iter().any(|s| s.get(&reference).is_some())
        };
        let known: Vec<String> = held
            .pool
            .users()
            .into_iter()
            .chain(held.index.keys())
            .collect();
        for key in known.iter().filter(|k| !exists(k)) {
            forget_deleted(key, &held);
        }
    }
}
