//! One NATS connection per (servers, credentials), shared by every Component that uses it.
//!
//! Each Component is a *user* of exactly one connection. When its servers or credentials change
//! (a rotated Secret) it moves to another connection, and a connection that no Component uses any
//! more is closed at once: idle connections never pile up and rotated credentials stop being used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::NatsError;
use crate::dapr::store::{NatsAuth, StoreConfig};
use crate::secret_value::SecretValue;

/// The identity of a connection: a digest of servers and credentials, so the key itself can be
/// logged or kept without holding a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectionKey([u8; 32]);

impl ConnectionKey {
    /// A key made up for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(n: u8) -> Self {
        Self([n; 32])
    }

    fn of(config: &StoreConfig) -> Self {
        let mut h = Sha256::new();
        h.update(config.servers.expose().as_bytes());
        h.update([0]);
        if let NatsAuth::Jwt { jwt, seed } = &config.auth {
            // The same credentials with or without a trailing line break are one connection.
            h.update(without_line_breaks(jwt).as_bytes());
            h.update([0]);
            h.update(without_line_breaks(seed).as_bytes());
        }
        if let NatsAuth::Token(token) = &config.auth {
            h.update([1]);
            h.update(token.expose().as_bytes());
        }
        Self(h.finalize().into())
    }
}

/// A JWT or seed as the Go decoders that `nats-server` and Dapr use read it: they skip `\r` and
/// `\n`, and Secrets made from files usually end with one.
fn without_line_breaks(value: &SecretValue) -> String {
    value
        .expose()
        .chars()
        .filter(|c| *c != '\r' && *c != '\n')
        .collect()
}

#[derive(Default)]
struct Slot {
    client: OnceCell<Client>,
}

#[derive(Default)]
struct State {
    slots: HashMap<ConnectionKey, Arc<Slot>>,
    /// Which connection each Component (`namespace/name`) uses.
    users: HashMap<String, ConnectionKey>,
}

/// What the NATS client of a shared connection reported about its link to the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The link is lost; the client reconnects in the background.
    Disconnected,
    /// The server is shutting down gracefully (lame duck mode) and will close the link.
    LameDuck,
    /// Connected (first connect or reconnect).
    Connected,
}

/// The receiving end of [`ConnectionPool::take_events`]: which connection, and what happened.
pub type LinkEvents = tokio::sync::mpsc::UnboundedReceiver<(ConnectionKey, LinkEvent)>;

/// The shared connections.
pub struct ConnectionPool {
    state: Mutex<State>,
    connect_timeout: Duration,
    request_timeout: Duration,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Every connection's client reports its link events here (few: one per transition).
    events: tokio::sync::mpsc::UnboundedSender<(ConnectionKey, LinkEvent)>,
    events_rx: Mutex<Option<LinkEvents>>,
}

impl ConnectionPool {
    /// A pool whose connections time out after `connect_timeout` when connecting and after
    /// `request_timeout` on every request.
    pub fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            state: Mutex::default(),
            connect_timeout,
            request_timeout,
            metrics,
            events,
            events_rx: Mutex::new(Some(events_rx)),
        }
    }

    /// The link events of every connection the pool opens (disconnected, lame duck, connected),
    /// for whoever turns them into reconciles. Only the first call gets them.
    pub fn take_events(&self) -> Option<LinkEvents> {
        self.events_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The Components (`namespace/name`) that use the connection `key`.
    pub fn users_of(&self, key: ConnectionKey) -> Vec<String> {
        let mut users: Vec<String> = self
            .lock()
            .users
            .iter()
            .filter(|(_, k)| **k == key)
            .map(|(user, _)| user.clone())
            .collect();
        users.sort();
        users
    }

    /// Whether the connection `key` is open and connected now; None when the pool holds no open
    /// connection for it (never opened, failed, or closed).
    pub fn is_connected(&self, key: ConnectionKey) -> Option<bool> {
        let client = self.lock().slots.get(&key)?.client.get().cloned()?;
        Some(client.connection_state() == async_nats::connection::State::Connected)
    }

    /// The connection for `config`, opened if needed, with `user` (the Component's
    /// `namespace/name`) recorded as using it. A Component that used another connection before
    /// leaves it (and it is closed if nobody else uses it).
    pub async fn connect(&self, user: &str, config: &StoreConfig) -> Result<Client, NatsError> {
        let key = ConnectionKey::of(config);
        let slot = {
            let mut state = self.lock();
            let slot = state.slots.entry(key).or_default().clone();
            if let Some(old) = state.users.insert(user.to_string(), key)
                && old != key
            {
                self.close_if_unused(&mut state, old);
            }
            slot
        };
        let result = slot
            .client
            .get_or_try_init(|| self.open(config))
            .await
            .cloned();
        if result.is_err() {
            // Forget the failed attempt so the next reconcile tries again.
            let mut state = self.lock();
            if state
                .slots
                .get(&key)
                .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.client.get().is_none())
            {
                state.slots.remove(&key);
            }
        }
        self.update_gauge();
        result
    }

    /// `user` no longer uses any connection (its Component was deleted or is not ours any more).
    pub fn release(&self, user: &str) {
        let mut state = self.lock();
        if let Some(key) = state.users.remove(user) {
            self.close_if_unused(&mut state, key);
        }
        drop(state);
        self.update_gauge();
    }

    /// The Components (`namespace/name`) that use a connection.
    pub fn users(&self) -> Vec<String> {
        self.lock().users.keys().cloned().collect()
    }

    /// Number of open connections.
    pub fn open_connections(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| s.client.get().is_some())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent (each update is a
        // single insert/remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_if_unused(&self, state: &mut State, key: ConnectionKey) {
        if state.users.values().any(|k| *k == key) {
            return;
        }
        if let Some(client) = state
            .slots
            .remove(&key)
            .and_then(|slot| slot.client.get().cloned())
        {
            tracing::info!("closing a NATS connection no Component uses any more");
            tokio::spawn(async move {
                let _ = client.drain().await;
            });
        }
    }

    fn update_gauge(&self) {
        if let Some(m) = &self.metrics {
            m.set_nats_connections(self.open_connections());
        }
    }

    async fn open(&self, config: &StoreConfig) -> Result<Client, NatsError> {
        let servers = config.redacted_servers.join(",");
        let target = parse_servers(&config.servers)?;
        let mut options = match &config.auth {
            NatsAuth::Jwt { jwt, seed } => {
                // Parsed like the credentials check parsed it, so a seed that passed the check
                // (line breaks and all) signs the nonce.
                let key_pair = Arc::new(crate::credentials::user_key_pair(seed).map_err(|_| {
                    // The credentials were checked before; this only guards a logic error.
                    NatsError::AuthorizationFailed {
                        servers: servers.clone(),
                    }
                })?);
                ConnectOptions::with_jwt(without_line_breaks(jwt), move |nonce| {
                    let key_pair = key_pair.clone();
                    async move { key_pair.sign(&nonce).map_err(async_nats::AuthError::new) }
                })
            }
            NatsAuth::Token(token) => ConnectOptions::with_token(token.expose().to_string()),
            _ => ConnectOptions::new(),
        };
        match &target.userinfo {
            Some(UserInfo::Password(user, pass)) => {
                options = options.user_and_password(user.clone(), pass.expose().to_string());
            }
            Some(UserInfo::Token(token)) => {
                options = options.token(token.expose().to_string());
            }
            None => {}
        }
        options = options
            .name("jetstream-kv-operator")
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.request_timeout))
            // Only the servers the Component lists (and the admin policy allowed): servers a
            // remote advertises (`connect_urls`) are never dialled.
            .ignore_discovered_servers()
            .retain_servers_order()
            // Reconnect for ever in the background: a NATS restart heals without us.
            .max_reconnects(None);
        let (events, key) = (self.events.clone(), ConnectionKey::of(config));
        options = options.event_callback(move |event| {
            let link = match event {
                async_nats::Event::Disconnected => Some(LinkEvent::Disconnected),
                async_nats::Event::LameDuckMode => Some(LinkEvent::LameDuck),
                async_nats::Event::Connected => Some(LinkEvent::Connected),
                _ => None,
            };
            if let Some(link) = link {
                // Nobody listening (tests, shutdown) is fine.
                let _ = events.send((key, link));
            }
            async {}
        });
        tracing::debug!(servers = %servers, "opening a NATS connection");
        // One deadline for the whole connect, however many servers are listed and however
        // slowly each one answers (a server trickling an endless INFO line included).
        let connect = options.connect(target.addresses.as_slice());
        let result = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result.map_err(|e| (e.kind(), e.to_string())),
            Err(_) => Err((ConnectErrorKind::TimedOut, "deadline exceeded".to_string())),
        };
        result.map_err(|(kind, detail)| {
            // The detail stays in the operator's log: in a status it would tell whoever writes
            // a Component whether a port is closed, filtered or serving something else.
            tracing::warn!(servers = %servers, kind = ?kind, detail = %super::remote_text(&detail), "NATS connect failed");
            map_connect_error(&servers, kind)
        })
    }
}

/// Folds connect failures: refused, timed out, not resolvable, not NATS, TLS failures all read
/// the same in a status, so a Component cannot be used to scan ports. Only a refusal of the
/// credentials (which needs a NATS handshake) is told apart, because the fix is in the Component.
fn map_connect_error(servers: &str, kind: ConnectErrorKind) -> NatsError {
    let servers = servers.to_string();
    match kind {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            NatsError::AuthorizationFailed { servers }
        }
        _ => NatsError::Unreachable {
            servers,
            detail: "no NATS server answered in time (the operator's log says why)".into(),
        },
    }
}

enum UserInfo {
    Password(String, SecretValue),
    Token(SecretValue),
}

struct Target {
    addresses: Vec<async_nats::ServerAddr>,
    userinfo: Option<UserInfo>,
}

/// Splits a Dapr `natsURL` (comma-separated, each maybe with `user:pass@` or `token@`) into
/// addresses without credentials and the credentials, which the NATS client takes separately.
fn parse_servers(servers: &SecretValue) -> Result<Target, NatsError> {
    let mut addresses = Vec::new();
    let mut userinfo = None;
    for raw in servers
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let with_scheme = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("nats://{raw}")
        };
        let mut url = url::Url::parse(&with_scheme).map_err(|_| NatsError::Unreachable {
            servers: "natsURL".into(),
            detail: "a server URL does not parse".into(),
        })?;
        if userinfo.is_none() && !url.username().is_empty() {
            let user = percent_decode(url.username());
            userinfo = Some(match url.password() {
                Some(pass) => UserInfo::Password(user, SecretValue::new(percent_decode(pass))),
                None => UserInfo::Token(SecretValue::new(user)),
            });
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if matches!(url.scheme(), "ws" | "wss") {
            // async-nats is built without WebSocket support: it would dial the host as raw
            // TCP (to port 80 or 443), which is not what the URL asks for.
            return Err(NatsError::Unreachable {
                servers: "natsURL".into(),
                detail: "ws:// and wss:// servers are not supported by the operator; use nats:// or tls://".into(),
            });
        }
        let addr = url
            .as_str()
            .parse::<async_nats::ServerAddr>()
            .map_err(|_| NatsError::Unreachable {
                servers: "natsURL".into(),
                detail: "a server URL is not a NATS address".into(),
            })?;
        addresses.push(addr);
    }
    Ok(Target {
        addresses,
        userinfo,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_taken_out_of_the_addresses() {
        let t = parse_servers(&SecretValue::new(
            "nats://alice:p%40ss@127.0.0.1:4222, 127.0.0.1:4223",
        ))
        .unwrap();
        assert_eq!(t.addresses.len(), 2);
        for a in &t.addresses {
            assert!(!format!("{a:?}").contains("p@ss"));
            assert!(!format!("{a:?}").contains("alice"));
        }
        match t.userinfo {
            Some(UserInfo::Password(user, pass)) => {
                assert_eq!(user, "alice");
                assert_eq!(pass.expose(), "p@ss");
            }
            _ => panic!("expected user and password"),
        }
    }

    #[test]
    fn credentials_with_a_trailing_line_break_share_the_connection() {
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let config = |jwt: &str, seed: &str| StoreConfig {
            servers: SecretValue::new("nats://127.0.0.1:4222"),
            redacted_servers: vec!["nats://127.0.0.1:4222".into()],
            bucket: "b".into(),
            shown_bucket: "b".into(),
            auth: NatsAuth::Jwt {
                jwt: SecretValue::new(jwt),
                seed: SecretValue::new(seed),
            },
            connection_name: None,
        };
        assert_eq!(
            ConnectionKey::of(&config("eyJ.a.b", &seed)),
            ConnectionKey::of(&config("eyJ.a.b\n", &format!("{seed}\r\n")))
        );
        assert_ne!(
            ConnectionKey::of(&config("eyJ.a.b", &seed)),
            ConnectionKey::of(&config("eyJ.a.c", &seed))
        );
    }

    #[test]
    fn a_user_without_password_is_a_token() {
        let t = parse_servers(&SecretValue::new("nats://s3cr3t@localhost:4222")).unwrap();
        assert!(matches!(t.userinfo, Some(UserInfo::Token(ref v)) if v.expose() == "s3cr3t"));
    }
}
