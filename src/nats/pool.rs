//! One NATS connection per (servers, credentials), shared by every Component that uses it.
//!
//! Each Component is a *user* of exactly one connection. When its servers or credentials change
//! (a rotated Secret) it moves to another connection, and a connection that no Component uses any
//! more is closed at once: idle connections never pile up and rotated credentials stop being used.
//!
//! A connection is identified by what it connects to, parsed: the servers' scheme, host and
//! port (spellings such as `nats://nats:4222?1` and `?2`, or a server listed twice, are one), and
//! the credentials. Each namespace may use at most so many distinct connections
//! ([`ConnectionPool::with_namespace_limit`]): past it a Component gets `NatsConnectionLimit`,
//! so one namespace cannot spend the process's file descriptors (each connection holds a relay
//! listener per server and two sockets per live link) and make every other namespace fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::NatsError;
use super::relay::{Relay, Violation};
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

    /// The key of `config`'s connection when its relays may dial what every name resolves to:
    /// a digest of its servers and credentials, which holds no secret.
    pub(crate) fn of(config: &StoreConfig) -> Self {
        Self::with_local(config, &[])
    }

    /// The key of `config`'s connection whose relays may (`true`) or may not dial a name of
    /// each server that resolves to a loopback, unspecified or link-local address (see
    /// [`super::relay`]); empty: all may.
    fn with_local(config: &StoreConfig, local_names: &[bool]) -> Self {
        let mut h = Sha256::new();
        match parse_servers(&config.servers) {
            Ok(target) => {
                for server in &target.identities {
                    h.update(server.as_bytes());
                    h.update([0]);
                }
                match &target.userinfo {
                    Some(UserInfo::Password(user, pass)) => {
                        h.update([2]);
                        h.update(user.as_bytes());
                        h.update([0]);
                        h.update(pass.expose().as_bytes());
                    }
                    Some(UserInfo::Token(token)) => {
                        h.update([3]);
                        h.update(token.expose().as_bytes());
                    }
                    None => {}
                }
            }
            // Fails to connect anyway: one key per text.
            Err(_) => h.update(config.servers.expose().as_bytes()),
        }
        h.update([0]);
        h.update(
            local_names
                .iter()
                .map(|b| u8::from(!*b))
                .collect::<Vec<u8>>(),
        );
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
    client: OnceCell<Open>,
}

/// An open connection: the client, and the relays it talks to its servers through (stopped
/// when this is dropped).
struct Open {
    client: Client,
    /// What the server reported as errors on it.
    errors: ServerErrors,
    _relay: Relay,
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
pub type LinkEvents = tokio::sync::mpsc::Receiver<(ConnectionKey, LinkEvent)>;

/// Link events waiting to be turned into reconciles at most. Events are hints (every Component
/// is resynced anyway): past this, new ones are dropped rather than held.
const MAX_PENDING_EVENTS: usize = 4096;
/// One lame duck event per connection per this long: a server may send its lame duck `INFO`
/// again and again.
const LAME_DUCK_QUIET: Duration = Duration::from_secs(30);
/// Distinct connections one namespace may use, by default.
pub const DEFAULT_NAMESPACE_CONNECTIONS: usize = 32;

/// The shared connections.
pub struct ConnectionPool {
    state: Mutex<State>,
    connect_timeout: Duration,
    request_timeout: Duration,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Every connection's client reports its link events here (few: one per transition; a
    /// bounded channel all the same).
    events: tokio::sync::mpsc::Sender<(ConnectionKey, LinkEvent)>,
    events_rx: Mutex<Option<LinkEvents>>,
    /// The last protocol violation of each connection's servers (see [`super::relay`]).
    violations: Arc<Mutex<HashMap<ConnectionKey, Violation>>>,
    /// Distinct connections per namespace at most (0: no limit).
    per_namespace: usize,
    /// The admin's policies, when enforced: which names may resolve to loopback.
    policy: Option<crate::policy::Enforcer>,
}

impl ConnectionPool {
    /// A pool whose connections time out after `connect_timeout` when connecting and after
    /// `request_timeout` on every request.
    pub fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        let (events, events_rx) = tokio::sync::mpsc::channel(MAX_PENDING_EVENTS);
        Self {
            state: Mutex::default(),
            connect_timeout,
            request_timeout,
            metrics,
            events,
            events_rx: Mutex::new(Some(events_rx)),
            violations: Arc::default(),
            per_namespace: DEFAULT_NAMESPACE_CONNECTIONS,
            policy: None,
        }
    }

    /// The timeout of every request on the pool's connections.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// At most `n` distinct connections per namespace (0: no limit).
    pub fn with_namespace_limit(mut self, n: usize) -> Self {
        self.per_namespace = n;
        self
    }

    /// Names that resolve to loopback, unspecified or link-local addresses are dialled only
    /// when a `host` pattern of a policy of the Component's namespace names them exactly.
    pub fn with_policy(mut self, policy: Option<crate::policy::Enforcer>) -> Self {
        self.policy = policy;
        self
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
        let slot = self.lock().slots.get(&key)?.clone();
        let open = slot.client.get()?;
        Some(open.client.connection_state() == async_nats::connection::State::Connected)
    }

    /// The connection for `config`, opened if needed, with `user` (the Component's
    /// `namespace/name`) recorded as using it. A Component that used another connection before
    /// leaves it (and it is closed if nobody else uses it).
    pub async fn connect(&self, user: &str, config: &StoreConfig) -> Result<Client, NatsError> {
        self.connect_with_errors(user, config)
            .await
            .map(|(client, _)| client)
    }

    /// [`Self::connect`], and what the server reports as errors on that connection (a
    /// permissions violation names the subject; see [`super::app_rights`]).
    pub async fn connect_with_errors(
        &self,
        user: &str,
        config: &StoreConfig,
    ) -> Result<(Client, ServerErrors), NatsError> {
        let namespace = user.split_once('/').map_or(user, |(ns, _)| ns);
        let local_names = self.local_names(namespace, config);
        let key = ConnectionKey::with_local(config, &local_names);
        let slot = {
            let mut state = self.lock();
            if let Err(e) = self.within_limit(&state, namespace, user, key) {
                // Whatever it used before is not this Component's any more.
                if let Some(old) = state.users.remove(user) {
                    self.close_if_unused(&mut state, old);
                }
                drop(state);
                self.update_gauge();
                return Err(e);
            }
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
            .get_or_try_init(|| self.open(config, key, &local_names, true))
            .await
            .map(|open| (open.client.clone(), open.errors.clone()));
        if result.is_err() {
            self.forget_violation(ConnectionKey::of(config));
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

    /// Whether `user` of `namespace` may use the connection `key`: one its namespace uses
    /// already, or a new one within the namespace's limit.
    fn within_limit(
        &self,
        state: &State,
        namespace: &str,
        user: &str,
        key: ConnectionKey,
    ) -> Result<(), NatsError> {
        if self.per_namespace == 0 {
            return Ok(());
        }
        let mut used = std::collections::HashSet::new();
        for (other, k) in &state.users {
            if other != user && other.split_once('/').is_some_and(|(ns, _)| ns == namespace) {
                if *k == key {
                    return Ok(());
                }
                used.insert(*k);
            }
        }
        if used.len() < self.per_namespace {
            return Ok(());
        }
        Err(NatsError::ConnectionLimit {
            namespace: namespace.to_string(),
            limit: self.per_namespace,
        })
    }

    /// For each server of `config`: whether a name of it may resolve to a loopback, unspecified
    /// or link-local address. Always with no policy enforced (mode `off`: every server is
    /// allowed); else only a name a `host` pattern of a policy of `namespace` names exactly.
    fn local_names(&self, namespace: &str, config: &StoreConfig) -> Vec<bool> {
        let Some(policy) = &self.policy else {
            return Vec::new();
        };
        let Ok(target) = parse_servers(&config.servers) else {
            return Vec::new();
        };
        target
            .addresses
            .iter()
            .map(|a| policy.names_exactly(namespace, a.host()))
            .collect()
    }

    /// How the servers of `config`'s connection last broke the NATS protocol (the relay dropped
    /// the link), if they did since the last [`Self::forget_violation`].
    pub fn violation(&self, config: &StoreConfig) -> Option<Violation> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ConnectionKey::of(config))
            .copied()
    }

    /// The connection of `config` worked: its last violation is history.
    pub fn connection_works(&self, config: &StoreConfig) {
        self.forget_violation(ConnectionKey::of(config));
    }

    fn forget_violation(&self, key: ConnectionKey) {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
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

    /// Number of open connections whose link is down (the client reconnects in the background).
    pub fn connections_down(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter_map(|s| s.client.get())
            .filter(|open| {
                open.client.connection_state() != async_nats::connection::State::Connected
            })
            .count()
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
        self.forget_violation(key);
        if let Some(slot) = state.slots.remove(&key)
            && let Some(client) = slot.client.get().map(|open| open.client.clone())
        {
            tracing::info!("closing a NATS connection no Component uses any more");
            tokio::spawn(async move {
                let _ = client.drain().await;
                // The relays stop with the slot.
                drop(slot);
            });
        }
    }

    fn update_gauge(&self) {
        if let Some(m) = &self.metrics {
            m.set_nats_connections(self.open_connections());
        }
    }

    /// A connection of its own for `config`, shared with nobody and closed when the returned
    /// value is dropped, through the same relays and policy as pooled ones, with what the
    /// server reports as errors (`-ERR`, such as a permissions violation) kept. For checks that
    /// must use exactly one Component's credentials (see [`super::app_rights`]).
    pub async fn connect_once(
        &self,
        namespace: &str,
        config: &StoreConfig,
    ) -> Result<OnceConnection, NatsError> {
        let local_names = self.local_names(namespace, config);
        let key = ConnectionKey::with_local(config, &local_names);
        // Its link events would reconcile the users of a pooled connection with the same key.
        let open = self.open(config, key, &local_names, false).await?;
        Ok(OnceConnection {
            client: open.client.clone(),
            errors: open.errors.clone(),
            _open: open,
        })
    }

    async fn open(
        &self,
        config: &StoreConfig,
        key: ConnectionKey,
        local_names: &[bool],
        link_events: bool,
    ) -> Result<Open, NatsError> {
        let server_errors = ServerErrors::default();
        let errors = server_errors.clone();
        let servers = config.redacted_servers.join(",");
        let target = parse_servers(&config.servers)?;
        let violation_key = ConnectionKey::of(config);
        let violations = self.violations.clone();
        let report_servers = servers.clone();
        let (relay, local) = Relay::start(
            &target.addresses,
            local_names,
            Arc::new(move |violation: Violation| {
                tracing::warn!(servers = %report_servers, violation = violation.describe(), "a NATS server broke the protocol; the operator dropped the connection");
                violations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(violation_key, violation);
            }),
        )
        .await
        .map_err(|_| NatsError::Unreachable {
            servers: servers.clone(),
            detail: "the operator could not open a loopback relay".into(),
        })?;
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
        let events = self.events.clone();
        let lame_duck = Quiet::new(LAME_DUCK_QUIET);
        options = options.event_callback(move |event| {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = &event {
                server_errors.push(text);
            }
            let link = match event {
                async_nats::Event::Disconnected => Some(LinkEvent::Disconnected),
                // A server may repeat its lame duck INFO without end: one per quiet period.
                async_nats::Event::LameDuckMode => lame_duck
                    .pass(std::time::Instant::now())
                    .then_some(LinkEvent::LameDuck),
                async_nats::Event::Connected => Some(LinkEvent::Connected),
                _ => None,
            };
            if let Some(link) = link.filter(|_| link_events) {
                // Nobody listening (tests, shutdown), or a full queue, is fine: events are
                // hints, and every Component is resynced anyway.
                let _ = events.try_send((key, link));
            }
            async {}
        });
        tracing::debug!(servers = %servers, "opening a NATS connection");
        // One deadline for the whole connect, however many servers are listed and however
        // slowly each one answers (a server trickling an endless INFO line included).
        // The client dials the relays (loopback), each relay its server: see `super::relay`.
        let connect = options.connect(local.as_slice());
        let result = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result.map_err(|e| (e.kind(), e.to_string())),
            Err(_) => Err((ConnectErrorKind::TimedOut, "deadline exceeded".to_string())),
        };
        let result = result.map_err(|(kind, detail)| {
            // What the relay saw is closer to the cause than what the client saw of the relay.
            (kind, relay.last_failure().unwrap_or(detail))
        });
        result.map(|client| Open { client, errors, _relay: relay }).map_err(|(kind, detail)| {
            // The detail stays in the operator's log: in a status it would tell whoever writes
            // a Component whether a port is closed, filtered or serving something else.
            tracing::warn!(servers = %servers, kind = ?kind, detail = %super::remote_text(&detail), "NATS connect failed");
            map_connect_error(&servers, kind)
        })
    }
}

/// What a server reported as errors on a connection (`-ERR` lines), the last few, each bounded.
#[derive(Clone, Default)]
pub struct ServerErrors(Arc<Mutex<std::collections::VecDeque<String>>>);

/// Server errors kept per connection at most.
const MAX_SERVER_ERRORS: usize = 64;

impl ServerErrors {
    fn push(&self, text: &str) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == MAX_SERVER_ERRORS {
            kept.pop_front();
        }
        // A server is untrusted: bounded text, no control characters (a subject is at most a
        // few hundred bytes in practice; a longer one is cut, and then not recognised).
        kept.push_back(
            text.chars()
                .filter(|c| !c.is_control())
                .take(1024)
                .collect(),
        );
    }

    /// Takes the latest permissions violation of a publish to a subject ending with `.{tail}`
    /// (the server's `-ERR` for a request it dropped, which the client then sees time out): that
    /// subject, as the server wrote it. Taken, so that one refusal explains one failure.
    pub fn take_publish_refusal(&self, tail: &str) -> Option<String> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let found = kept
            .iter()
            .rposition(|e| refused_publish(e).is_some_and(|s| s.ends_with(&format!(".{tail}"))))?;
        let line = kept.remove(found)?;
        refused_publish(&line).map(str::to_owned)
    }

    /// The errors so far, oldest first.
    pub fn seen(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The subject of a server error that is a publish permissions violation
/// (`Permissions Violation for Publish to "<subject>"`, in any case).
fn refused_publish(error: &str) -> Option<&str> {
    const SAID: &str = "permissions violation for publish to \"";
    let at = error.to_ascii_lowercase().find(SAID)? + SAID.len();
    let rest = error.get(at..)?;
    rest.split('"').next().filter(|s| !s.is_empty())
}

/// A connection of its own ([`ConnectionPool::connect_once`]); closed when dropped.
pub struct OnceConnection {
    /// The client.
    pub client: Client,
    /// What the server reported as errors on it.
    pub errors: ServerErrors,
    _open: Open,
}

/// Lets one event through per `period`.
struct Quiet {
    period: Duration,
    last: Mutex<Option<std::time::Instant>>,
}

impl Quiet {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(None),
        }
    }

    /// Whether an event at `now` passes (none passed within the period before it).
    fn pass(&self, now: std::time::Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = last.is_none_or(|at| now.saturating_duration_since(at) >= self.period);
        if quiet {
            *last = Some(now);
        }
        quiet
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
    /// The servers to dial, each once, in the order listed.
    addresses: Vec<async_nats::ServerAddr>,
    /// What identifies each of them: scheme, host and port (lower case, no trailing dot, the
    /// default port filled in); a path or query does not count.
    identities: Vec<String>,
    userinfo: Option<UserInfo>,
}

/// Splits a Dapr `natsURL` (comma-separated, each maybe with `user:pass@` or `token@`) into
/// addresses without credentials and the credentials, which the NATS client takes separately.
fn parse_servers(servers: &SecretValue) -> Result<Target, NatsError> {
    let mut addresses = Vec::new();
    let mut identities = Vec::new();
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
        let identity = format!(
            "{}://{}:{}",
            addr.scheme().to_ascii_lowercase(),
            addr.host().trim_end_matches('.').to_ascii_lowercase(),
            addr.port()
        );
        if !identities.contains(&identity) {
            identities.push(identity);
            addresses.push(addr);
        }
    }
    Ok(Target {
        addresses,
        identities,
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
    #[test]
    fn a_refused_publish_is_taken_once_by_the_request_it_explains() {
        let errors = super::ServerErrors::default();
        errors.push("permissions violation for subscription to \"_INBOX.x.*\"");
        errors.push("Permissions Violation for Publish to \"$JS.API.STREAM.CREATE.KV_a\"");
        errors.push("permissions violation for publish to \"$JS.API.STREAM.INFO.KV_a\"");
        // Another stream's, or a subject that only ends like it: not this request's.
        assert_eq!(errors.take_publish_refusal("STREAM.CREATE.KV_b"), None);
        assert_eq!(errors.take_publish_refusal("CREATE.KV_"), None);
        assert_eq!(
            errors.take_publish_refusal("STREAM.CREATE.KV_a").as_deref(),
            Some("$JS.API.STREAM.CREATE.KV_a")
        );
        // Taken: the next timeout of the same request is a timeout.
        assert_eq!(errors.take_publish_refusal("STREAM.CREATE.KV_a"), None);
        assert_eq!(
            errors.take_publish_refusal("STREAM.INFO.KV_a").as_deref(),
            Some("$JS.API.STREAM.INFO.KV_a")
        );
        assert_eq!(errors.seen().len(), 1);
    }

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

    fn store(servers: &str) -> StoreConfig {
        StoreConfig {
            servers: SecretValue::new(servers),
            redacted_servers: vec!["shown".into()],
            bucket: "b".into(),
            shown_bucket: "b".into(),
            auth: NatsAuth::None,
            connection_name: None,
        }
    }

    #[test]
    fn spellings_of_one_server_list_are_one_connection() {
        let key = |s: &str| ConnectionKey::of(&store(s));
        let one = key("nats://nats:4222");
        for spelling in [
            "nats://nats:4222?1",
            "nats://nats:4222?2",
            "NATS://Nats.:4222/",
            "nats",
            "nats://nats:4222#x",
            "nats://nats:4222,nats://nats:4222?8",
        ] {
            assert_eq!(key(spelling), one, "{spelling}");
        }
        assert_ne!(key("nats://nats:4223"), one);
        assert_ne!(key("tls://nats:4222"), one);
        assert_ne!(key("nats://u:p@nats:4222"), one, "credentials make another");
        assert_ne!(key("nats://u:p@nats:4222"), key("nats://u:q@nats:4222"));
        assert_ne!(
            key("nats://a,nats://b"),
            key("nats://b,nats://a"),
            "order counts"
        );
        // A server listed again is dialled once.
        let t = parse_servers(&SecretValue::new("nats://a:1?1,nats://A:1?2,nats://b:1")).unwrap();
        assert_eq!(t.addresses.len(), 2);
    }

    #[test]
    fn one_namespace_gets_so_many_distinct_connections() {
        let pool = ConnectionPool::new(Duration::from_secs(1), Duration::from_secs(1), None)
            .with_namespace_limit(2);
        let key = |s: &str| ConnectionKey::of(&store(s));
        let mut state = State::default();
        state.users.insert("a/one".into(), key("nats://u1:p@n"));
        state.users.insert("a/two".into(), key("nats://u2:p@n"));
        state
            .users
            .insert("a/two-again".into(), key("nats://u2:p@n"));
        state.users.insert("b/one".into(), key("nats://u9:p@n"));
        let limit = |user: &str, url: &str| pool.within_limit(&state, "a", user, key(url));
        // A third distinct connection for namespace a: refused, with its own reason.
        let Err(e) = limit("a/three", "nats://u3:p@n") else {
            panic!("a third connection")
        };
        assert_eq!(crate::failure::Failure::reason(&e), "NatsConnectionLimit");
        assert!(e.to_string().contains("namespace a already uses 2"), "{e}");
        // One it uses already, or one a Component moves to from its own: allowed.
        assert!(limit("a/three", "nats://u2:p@n").is_ok());
        assert!(limit("a/one", "nats://u3:p@n").is_ok());
        // Other namespaces count on their own.
        assert!(
            pool.within_limit(&state, "b", "b/two", key("nats://u3:p@n"))
                .is_ok()
        );
        let unlimited = ConnectionPool::new(Duration::from_secs(1), Duration::from_secs(1), None)
            .with_namespace_limit(0);
        assert!(
            unlimited
                .within_limit(&state, "a", "a/x", key("nats://u5:p@n"))
                .is_ok()
        );
    }

    #[test]
    fn a_provisioning_identity_is_a_connection_of_its_own() {
        use crate::credentials::provisioning::{Identity, connect_as};
        let identity = Identity::Token(SecretValue::new("provisioner"));
        let app_a = store("nats://app-a:p@nats:4222");
        let app_b = store("nats://app-b:q@nats:4222");
        let as_a = ConnectionKey::of(&connect_as(&app_a, &identity));
        // Never the connection made with a Component's own credentials...
        assert_ne!(as_a, ConnectionKey::of(&app_a));
        // ...and one connection for every Component that provisions with it.
        assert_eq!(as_a, ConnectionKey::of(&connect_as(&app_b, &identity)));
        let other = Identity::Token(SecretValue::new("another"));
        assert_ne!(as_a, ConnectionKey::of(&connect_as(&app_a, &other)));
    }

    #[test]
    fn a_lame_duck_flood_is_one_event_per_period() {
        let quiet = Quiet::new(Duration::from_secs(30));
        let start = std::time::Instant::now();
        let passed = (0..10_000)
            .filter(|i| quiet.pass(start + Duration::from_millis(*i)))
            .count();
        assert_eq!(passed, 1, "10,000 lame duck INFOs within 10 s");
        assert!(quiet.pass(start + Duration::from_secs(31)));
    }

    #[test]
    fn a_password_without_a_user_is_no_credential() {
        let t = parse_servers(&SecretValue::new("nats://:s3cr3t@localhost:4222")).unwrap();
        assert!(t.userinfo.is_none());
    }

    #[test]
    fn a_user_without_password_is_a_token() {
        let t = parse_servers(&SecretValue::new("nats://s3cr3t@localhost:4222")).unwrap();
        assert!(matches!(t.userinfo, Some(UserInfo::Token(ref v)) if v.expose() == "s3cr3t"));
    }
}
