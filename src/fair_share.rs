//! Fair share of the reconcile workers between namespaces.
//!
//! The controller runs `--concurrency` reconciles at once, for all namespaces together. Without
//! a share, one namespace with many slow Components (silent NATS servers, each holding a worker
//! for a connect deadline) would hold every worker, and other namespaces' Components would wait
//! behind it. Each namespace may hold at most `limit` workers; a reconcile that finds its
//! namespace's share taken does not wait (waiting would hold a worker too): it is requeued a
//! moment later, and the worker goes to another namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Workers held per namespace.
pub struct NamespaceShare {
    limit: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// A worker held for a namespace; released when dropped.
pub struct Slot {
    namespace: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl NamespaceShare {
    /// At most `limit` (at least 1) reconciles per namespace at once.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            held: Arc::default(),
        }
    }

    /// The share of a namespace when `concurrency` workers run: half of them, so that other
    /// namespaces always have the other half; at least one.
    pub fn default_limit(concurrency: usize) -> usize {
        (concurrency / 2).max(1)
    }

    /// A worker for `namespace`, or None when its share is taken.
    pub fn try_acquire(&self, namespace: &str) -> Option<Slot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(namespace.to_string()).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            namespace: namespace.to_string(),
            held: self.held.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.namespace) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_holds_at_most_its_share_and_others_are_not_blocked() {
        let share = NamespaceShare::new(2);
        let a1 = share.try_acquire("a");
        let a2 = share.try_acquire("a");
        assert!(a1.is_some() && a2.is_some());
        assert!(share.try_acquire("a").is_none(), "a's share is taken");
        let b = share.try_acquire("b");
        assert!(b.is_some(), "b is not blocked by a");
        drop(a1);
        assert!(share.try_acquire("a").is_some(), "a slot came back");
        drop((a2, b));
        assert!(share.held.lock().unwrap().is_empty(), "no leftovers");
    }

    #[test]
    fn the_default_share_is_half_the_workers() {
        assert_eq!(NamespaceShare::default_limit(16), 8);
        assert_eq!(NamespaceShare::default_limit(1), 1);
        assert_eq!(NamespaceShare::default_limit(0), 1);
    }
}
