//! Connection events drive status: when a shared connection goes down (or comes back), every
//! Component that uses it is reconciled at once, instead of at its next resync.
//!
//! A short grace period absorbs a failover: in a cluster the client reconnects to another server
//! within milliseconds, and a Component should not flap to `NatsUnavailable` for that. After it,
//! a connection still down makes its users reconcile (each finds the connection down and reports
//! `NatsUnavailable`); its return makes them reconcile again, only if they were told it was down.
//! One trigger per user per transition: no storm, however many Components share the connection.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use crate::dapr::Component;
use crate::nats::pool::{ConnectionKey, ConnectionPool, LinkEvent, LinkEvents};

/// How long a lost connection may take to come back before its Components are told: a client
/// fails over to another server of a cluster within milliseconds.
pub const GRACE: Duration = Duration::from_secs(2);

/// Reconcile triggers of one scope (all namespaces when `None`, or one namespace).
pub type Trigger = (
    Option<String>,
    futures::channel::mpsc::UnboundedSender<ObjectRef<DeserializeGuard<Component>>>,
);

/// Relays the pool's link events into the scopes' reconcile triggers until the pool is dropped.
pub async fn run(pool: &ConnectionPool, triggers: Vec<Trigger>) {
    let Some(events) = pool.take_events() else {
        return futures::future::pending().await;
    };
    relay(pool, events, GRACE, |users| {
        for user in users {
            let Some((namespace, name)) = user.split_once('/') else {
                continue;
            };
            for (scope, trigger) in &triggers {
                if scope.as_deref().is_none_or(|s| s == namespace) {
                    let _ = trigger.unbounded_send(ObjectRef::new(name).within(namespace));
                }
            }
        }
    })
    .await
}

/// What the relay needs to know about connections (the pool; a fake in tests).
pub trait Links {
    /// The Components (`namespace/name`) that use the connection.
    fn users_of(&self, key: ConnectionKey) -> Vec<String>;
    /// Whether the connection is connected now; None when it is not open.
    fn is_connected(&self, key: ConnectionKey) -> Option<bool>;
}

impl Links for ConnectionPool {
    fn users_of(&self, key: ConnectionKey) -> Vec<String> {
        ConnectionPool::users_of(self, key)
    }

    fn is_connected(&self, key: ConnectionKey) -> Option<bool> {
        ConnectionPool::is_connected(self, key)
    }
}

/// Turns link events into reconcile triggers: `trigger` gets the users (`namespace/name`) of a
/// connection that went down (after `grace`) or came back. Runs until the events end.
pub async fn relay<L: Links>(
    links: &L,
    mut events: LinkEvents,
    grace: Duration,
    mut trigger: impl FnMut(Vec<String>),
) {
    // Connections whose users were told the link is down.
    let mut down: HashSet<ConnectionKey> = HashSet::new();
    // Connections that went down, checked again when their grace ends.
    let mut pending: HashSet<ConnectionKey> = HashSet::new();
    let mut checks = FuturesUnordered::new();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some((key, event)) = event else { return };
                match event {
                    LinkEvent::Disconnected => {
                        if !down.contains(&key) && pending.insert(key) {
                            checks.push(async move {
                                tokio::time::sleep(grace).await;
                                key
                            });
                        }
                    }
                    LinkEvent::LameDuck => {
                        tracing::info!("a NATS server entered lame duck mode (shutting down); its clients move to another server when it closes the connection");
                    }
                    LinkEvent::Connected => {
                        pending.remove(&key);
                        if down.remove(&key) {
                            let users = links.users_of(key);
                            tracing::info!(components = users.len(), "NATS connection is back; reconciling the Components that use it");
                            trigger(users);
                        }
                    }
                }
            }
            Some(key) = checks.next(), if !checks.is_empty() => {
                if !pending.remove(&key) {
                    continue;
                }
                // Still down after the grace (closed connections have no users to tell).
                if links.is_connected(key) == Some(false) {
                    down.insert(key);
                    let users = links.users_of(key);
                    tracing::warn!(components = users.len(), "NATS connection lost; reconciling the Components that use it");
                    trigger(users);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Fake {
        connected: Mutex<bool>,
    }

    impl Links for Fake {
        fn users_of(&self, _key: ConnectionKey) -> Vec<String> {
            vec!["ns/a".into(), "ns/b".into()]
        }
        fn is_connected(&self, _key: ConnectionKey) -> Option<bool> {
            Some(*self.connected.lock().unwrap())
        }
    }

    fn key() -> ConnectionKey {
        ConnectionKey::for_tests(7)
    }

    /// Runs the relay over `script` (events, each after a pause) and returns the triggers with
    /// the virtual time they came at.
    async fn run(
        fake: &Fake,
        script: Vec<(Duration, LinkEvent, bool)>,
    ) -> Vec<(Duration, Vec<String>)> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let start = tokio::time::Instant::now();
        let triggers = Mutex::new(Vec::new());
        let relay = relay(fake, rx, Duration::from_secs(2), |users| {
            triggers.lock().unwrap().push((start.elapsed(), users))
        });
        let feed = async {
            for (pause, event, connected) in script {
                tokio::time::sleep(pause).await;
                *fake.connected.lock().unwrap() = connected;
                tx.send((key(), event)).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(tx);
        };
        futures::join!(relay, feed);
        triggers.into_inner().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_triggers_the_users_once_down_and_once_back() {
        let fake = Fake {
            connected: Mutex::new(true),
        };
        let secs = Duration::from_secs;
        let triggers = run(
            &fake,
            vec![
                (secs(0), LinkEvent::Connected, true),
                (secs(1), LinkEvent::Disconnected, false),
                // Reconnect attempts fail and report again: no second trigger.
                (secs(1), LinkEvent::Disconnected, false),
                (secs(5), LinkEvent::Connected, true),
            ],
        )
        .await;
        let users = vec!["ns/a".to_string(), "ns/b".to_string()];
        assert_eq!(triggers, [(secs(3), users.clone()), (secs(7), users)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_within_the_grace_triggers_nothing() {
        let fake = Fake {
            connected: Mutex::new(true),
        };
        let ms = Duration::from_millis;
        let triggers = run(
            &fake,
            vec![
                (ms(0), LinkEvent::Connected, true),
                (ms(1000), LinkEvent::Disconnected, false),
                (ms(50), LinkEvent::Connected, true),
                (ms(100), LinkEvent::LameDuck, true),
            ],
        )
        .await;
        assert_eq!(triggers, []);
    }
}
