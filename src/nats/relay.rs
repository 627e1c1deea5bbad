//! A relay of our own between the NATS client and each NATS server, which checks what the server
//! sends before the client sees it.
//!
//! async-nats keeps a whole message in memory until it is complete, whatever size the server
//! announces (`MSG <subject> <sid> 2000000000`, then the bytes, slowly or fast), and a control
//! line until its end (an endless `INFO`): a NATS server named in a Component could make the
//! operator hold gigabytes. The client has no option to cap either, and it dials its sockets
//! itself (no custom transport). So every connection of the pool goes through a relay:
//!
//! - async-nats dials a loopback listener of the relay (one per server of `natsURL`, so its own
//!   order and reconnects are unchanged); the relay dials the real server (after the server
//!   policy allowed it: the relay never decides where to connect);
//! - what the client sends (CONNECT with the credentials, requests) goes to the server as it is:
//!   the credentials stay inside the process;
//! - what the server sends goes through [`Checker`], a streaming check of the NATS protocol:
//!   control lines at most [`MAX_CONTROL_LINE`], `MSG`/`HMSG` payloads at most [`MAX_MESSAGE`]
//!   (the operator's own traffic is JetStream API answers of a few KiB), only the operations of
//!   the protocol. On a violation the relay closes both sides and reports what was broken (our
//!   words, never the server's text);
//! - TLS: the relay can only check plaintext, so it speaks TLS with the server itself (after the
//!   plaintext `INFO`, when the URL is `tls://` or the server requires it, as async-nats does),
//!   trusting the platform's certificates as async-nats did, and hands the client a plaintext
//!   `INFO` that requires no TLS. `ws://` and `wss://` are refused before (see the pool).
//!
//! Who may use a relay, and where it dials:
//!
//! - a relay's listener serves only connections opened by this process (the socket at the
//!   other end is one of the process's own file descriptors): a sidecar or debug container
//!   sharing the pod's loopback gets nothing, and its tries never touch the live session;
//! - a relay never dials another relay of the process (a loopback or unspecified address on
//!   a relay's port): one Component cannot reach another's server through it;
//! - a name that resolves to a loopback, unspecified or link-local address is dialled only when
//!   the pool says so (the admin's policy names that host exactly, or no policy is enforced):
//!   a DNS name is only as trustworthy as whoever writes its records. An IP literal was judged
//!   by the policy as written.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use async_nats::ServerAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use super::peer::is_own_socket;

/// The longest control line (`INFO`, `MSG` header, `-ERR`) a server may send. A large cluster's
/// `INFO` is a few KiB.
pub const MAX_CONTROL_LINE: usize = 64 << 10;
/// The largest message a server may send (payload and headers). The operator only reads
/// JetStream API answers (a stream's info is a few KiB); nats-server's default `max_payload` is
/// 1 MB.
pub const MAX_MESSAGE: u64 = 1 << 20;
/// Bytes read from a server at once.
const READ_CHUNK: usize = 16 << 10;

/// How a server broke the protocol. The text is ours: nothing the server sent is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A control line longer than [`MAX_CONTROL_LINE`] (an endless `INFO`).
    LongLine,
    /// A message larger than [`MAX_MESSAGE`].
    LargeMessage,
    /// A line that is no NATS operation, or a first line that is not `INFO`.
    NotNats,
    /// A `MSG`/`HMSG` line that does not parse, or a payload not followed by a line break.
    Malformed,
}

impl Violation {
    /// What the server did, for a status.
    pub fn describe(self) -> &'static str {
        match self {
            Self::LongLine => "it sent a control line longer than 64 KiB",
            Self::LargeMessage => "it announced a message larger than 1 MiB",
            Self::NotNats => "it sent something that is not a NATS operation",
            Self::Malformed => "it sent a malformed message",
        }
    }
}

/// What the relay reports: a violation by the server after its first `INFO` (a violation
/// before it is folded like any failure to connect, and only logged).
pub type Report = Arc<dyn Fn(Violation) + Send + Sync>;

/// The relays of one connection: a loopback listener per server. Dropping it stops them all
/// (listeners and sessions).
pub struct Relay {
    accepts: Vec<AbortHandle>,
    ports: Vec<u16>,
    last_failure: Arc<Mutex<Option<String>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for accept in &self.accepts {
            accept.abort();
        }
        let mut ports = relay_ports();
        for port in &self.ports {
            ports.remove(port);
        }
    }
}

/// The loopback ports every relay of the process listens on: never dialled by a relay.
fn relay_ports() -> std::sync::MutexGuard<'static, HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Aborts the task when dropped (a session ends with its listener).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Relay {
    /// Starts a relay for each of `servers`; returns it and the loopback addresses for the
    /// client, in the same order. `local_names[i]` says whether a name of server `i` may
    /// resolve to a loopback, unspecified or link-local address (missing: it may).
    pub async fn start(
        servers: &[ServerAddr],
        local_names: &[bool],
        report: Report,
    ) -> io::Result<(Self, Vec<ServerAddr>)> {
        let last_failure = Arc::new(Mutex::new(None));
        let mut relay = Self {
            accepts: Vec::new(),
            ports: Vec::new(),
            last_failure: last_failure.clone(),
        };
        let mut local = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
            let port = listener.local_addr()?.port();
            relay_ports().insert(port);
            relay.ports.push(port);
            local.push(
                format!("nats://127.0.0.1:{port}")
                    .parse::<ServerAddr>()
                    .map_err(io::Error::other)?,
            );
            let target = Target {
                server: server.clone(),
                local_names: local_names.get(i).copied().unwrap_or(true),
            };
            let accept = tokio::spawn(accept_loop(
                listener,
                target,
                report.clone(),
                last_failure.clone(),
            ));
            relay.accepts.push(accept.abort_handle());
        }
        Ok((relay, local))
    }

    /// Why the last attempt to reach a server failed (for the operator's log), if one did.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Where one relay dials.
#[derive(Clone)]
struct Target {
    server: ServerAddr,
    /// Whether a name may resolve to a loopback, unspecified or link-local address.
    local_names: bool,
}

async fn accept_loop(
    listener: TcpListener,
    target: Target,
    report: Report,
    last_failure: Arc<Mutex<Option<String>>>,
) {
    // The client holds one connection at a time: a new one of its own replaces the last.
    let current: Arc<Mutex<Option<AbortOnDrop>>> = Arc::default();
    let Ok(listening) = listener.local_addr() else {
        return;
    };
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors, say: try again in a moment.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (target, report, last_failure, current) = (
            target.clone(),
            report.clone(),
            last_failure.clone(),
            current.clone(),
        );
        // Checked off the accept loop, so that a flood of strangers does not delay the client,
        // and a few at a time for the whole process (each reads /proc). A connection waits its
        // turn (the operator's own connections come in waves: a wave of Components connects at
        // once, and a connection closed unchecked costs its reconcile a back-off); only past
        // WAITING of them at once is a new one closed unchecked, so a flood of strangers holds
        // a bounded number of sockets.
        static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
        static WAITING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);
        let Ok(waiting) = WAITING.try_acquire() else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(check) = CHECKS.acquire().await else {
                return;
            };
            let own = tokio::task::spawn_blocking(move || is_own_socket(peer, listening))
                .await
                .unwrap_or(false);
            drop((check, waiting));
            if !own {
                // At most one warning per minute: a flood of strangers does not flood the log.
                static LAST: Mutex<Option<std::time::Instant>> = Mutex::new(None);
                let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
                let now = std::time::Instant::now();
                if last
                    .is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(60))
                {
                    *last = Some(now);
                    tracing::warn!(
                        %peer,
                        "a connection to a NATS relay came from outside the operator's process; closed (told once a minute)"
                    );
                } else {
                    tracing::debug!(%peer, "a connection to a NATS relay from outside the process; closed");
                }
                return;
            }
            let session = AbortOnDrop(tokio::spawn(async move {
                session(client, &target, &report, &last_failure).await;
            }));
            // Replacing drops (aborts) the last session.
            *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
        });
    }
}

/// Whether a relay may dial `addr`, reached through `server`'s host: never another relay of
/// the process; a loopback, unspecified or link-local address only when it was written as an
/// IP literal or `local_names` allows it for a name.
fn may_dial(addr: SocketAddr, host_is_name: bool, local_names: bool) -> bool {
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), IpAddr::V4),
        v4 => v4,
    };
    let local = ip.is_loopback() || ip.is_unspecified();
    if local && relay_ports().contains(&addr.port()) {
        return false;
    }
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(host_is_name && !local_names && (local || link_local))
}

/// The byte stream to the server: TCP, or TLS over it.
trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// Why a session could not start.
enum SetupError {
    Io(String),
    Violation(Violation),
}

async fn session(
    client: TcpStream,
    target: &Target,
    report: &Report,
    last_failure: &Mutex<Option<String>>,
) {
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let mut probe = [0u8; 1];
    // Until the server's INFO, the client says nothing: a read that ends means it gave up (its
    // connect deadline), and the dial stops with it.
    let setup = tokio::select! {
        setup = setup(target) => setup,
        _ = client_read.read(&mut probe) => return,
    };
    let (upstream, info, rest) = match setup {
        Ok(ok) => ok,
        Err(SetupError::Io(detail)) => {
            tracing::debug!(%detail, "NATS server not reached");
            *last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(detail);
            return;
        }
        Err(SetupError::Violation(violation)) => {
            // Before the handshake a violation is folded like any failure to connect (a
            // status telling "something that is not NATS listens there" would scan ports); the
            // log tells the admin.
            let detail = format!("not a NATS server: {}", violation.describe());
            tracing::debug!(%detail, "NATS server not reached");
            *last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(detail);
            return;
        }
    };
    if client_write.write_all(&info).await.is_err() {
        return;
    }
    let (mut server_read, mut server_write) = tokio::io::split(upstream);
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let down = async {
        let mut checker = Checker::after_info();
        let result = forward(&mut checker, &rest, &mut client_write).await;
        let result = match result {
            Ok(()) => downstream(&mut checker, &mut server_read, &mut client_write).await,
            Err(e) => Err(e),
        };
        if let Err(Fault::Violation(violation)) = result {
            tracing::warn!(
                violation = violation.describe(),
                "a NATS server broke the protocol; connection dropped"
            );
            report(violation);
        }
    };
    // Whichever side ends, both are closed (dropped) with the session.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Dials the server, reads its INFO, speaks TLS if asked. Returns the stream, the INFO line for
/// the client and what the server sent after its INFO.
async fn setup(target: &Target) -> Result<(Box<dyn Upstream>, Vec<u8>, Vec<u8>), SetupError> {
    let server = &target.server;
    let io = |what: &str, e: &dyn std::fmt::Display| SetupError::Io(format!("{what}: {e}"));
    let addrs = tokio::net::lookup_host((server.host(), server.port()))
        .await
        .map_err(|e| io("name not resolved", &e))?;
    let host_is_name = server.host().parse::<IpAddr>().is_err();
    let mut tcp = None;
    let mut last = SetupError::Io("name resolved to no address".into());
    for addr in addrs {
        if !may_dial(addr, host_is_name, target.local_names) {
            last = SetupError::Io(
                "refused to dial a loopback, unspecified or link-local address (or the operator's own relay): a NatsServerPolicy host pattern must name the host exactly".into(),
            );
            continue;
        }
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = io("connect failed", &e),
        }
    }
    let mut tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);

    let (line, rest) = read_first_line(&mut tcp).await?;
    let Some(json) = line.strip_prefix(b"INFO ") else {
        return Err(SetupError::Violation(Violation::NotNats));
    };
    let Ok(serde_json::Value::Object(mut info)) = serde_json::from_slice::<serde_json::Value>(json)
    else {
        return Err(SetupError::Violation(Violation::NotNats));
    };
    let tls = server.tls_required()
        || info
            .get("tls_required")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
    let upstream: Box<dyn Upstream> = if tls {
        if !rest.is_empty() {
            // Before the client's TLS hello, a server has nothing more to say.
            return Err(SetupError::Violation(Violation::Malformed));
        }
        let config = tls_config().map_err(|e| io("TLS setup failed", &e))?;
        let name = rustls_pki_types::ServerName::try_from(server.host().to_string())
            .map_err(|e| io("TLS server name", &e))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| SetupError::Io(format!("TLS handshake failed: {}", tls_failure(&e))))?;
        // The client talks plaintext to us; we talk TLS to the server.
        info.insert("tls_required".into(), serde_json::Value::Bool(false));
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut shown = b"INFO ".to_vec();
    shown.extend_from_slice(serde_json::Value::Object(info).to_string().as_bytes());
    shown.extend_from_slice(b"\r\n");
    Ok((upstream, shown, rest))
}

/// Why a TLS handshake failed, in words that hold nothing of the server's name (which may come
/// from a Secret): rustls puts the name in its "not valid for name" error.
fn tls_failure(e: &io::Error) -> String {
    use rustls::{CertificateError, Error};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return e.kind().to_string();
    };
    match tls {
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the certificate is not valid for the server's name".into(),
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the certificate's issuer is not trusted".into()
        }
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the certificate has expired".into(),
        Error::InvalidCertificate(_) => "the certificate is not valid".into(),
        Error::AlertReceived(alert) => format!("the server sent the alert {alert:?}"),
        _ => "the TLS handshake failed".into(),
    }
}

/// Reads the server's first line (without its line break), at most [`MAX_CONTROL_LINE`]
/// bytes; returns it and the bytes read after it.
async fn read_first_line(tcp: &mut TcpStream) -> Result<(Vec<u8>, Vec<u8>), SetupError> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| SetupError::Io(format!("read failed: {e}")))?;
        if n == 0 {
            return Err(SetupError::Io("closed before INFO".into()));
        }
        let start = seen.len();
        seen.extend_from_slice(&chunk[..n]);
        if let Some(at) = seen[start..].iter().position(|b| *b == b'\n') {
            let end = start + at;
            if end > MAX_CONTROL_LINE {
                return Err(SetupError::Violation(Violation::LongLine));
            }
            if end == 0 || seen[end - 1] != b'\r' {
                return Err(SetupError::Violation(Violation::Malformed));
            }
            let rest = seen.split_off(end + 1);
            seen.truncate(end - 1);
            return Ok((seen, rest));
        }
        if seen.len() > MAX_CONTROL_LINE {
            return Err(SetupError::Violation(Violation::LongLine));
        }
    }
}

/// The trust of a `tls://` server: the platform's certificates (what async-nats used when it
/// dialled itself), loaded once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "a platform certificate could not be loaded");
            }
            roots.add_parsable_certificates(loaded.certs);
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| e.to_string())
        })
        .clone()
}

enum Fault {
    Io,
    Violation(Violation),
}

/// Server to client: reads, checks, forwards, until either side ends or the server breaks the
/// protocol.
async fn downstream(
    checker: &mut Checker,
    server: &mut (impl AsyncRead + Unpin),
    client: &mut (impl AsyncWrite + Unpin),
) -> Result<(), Fault> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = server.read(&mut buf).await.map_err(|_| Fault::Io)?;
        if n == 0 {
            return Ok(());
        }
        forward(checker, &buf[..n], client).await?;
    }
}

/// Checks `data` and forwards what passed.
async fn forward(
    checker: &mut Checker,
    mut data: &[u8],
    client: &mut (impl AsyncWrite + Unpin),
) -> Result<(), Fault> {
    while !data.is_empty() {
        let (used, piece) = checker.feed(data).map_err(Fault::Violation)?;
        match piece {
            Piece::Partial => {}
            Piece::Line => client
                .write_all(checker.line())
                .await
                .map_err(|_| Fault::Io)?,
            Piece::Bytes => client
                .write_all(&data[..used])
                .await
                .map_err(|_| Fault::Io)?,
        }
        data = &data[used..];
    }
    Ok(())
}

/// Where the checker is in the server's byte stream.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// A control line (its bytes so far are in `line`).
    Line,
    /// So many more payload bytes.
    Payload(u64),
    /// The line break after a payload: so many of its two bytes to go.
    Trailer(u8),
}

/// What [`Checker::feed`] made of the bytes it used.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Part of a control line: kept until it is complete, nothing to forward yet.
    Partial,
    /// A complete, checked control line: forward [`Checker::line`].
    Line,
    /// Payload (or its line break): forward the bytes used as they are.
    Bytes,
}

/// A streaming check of what a NATS server sends a client: control lines end with `\r\n` within
/// [`MAX_CONTROL_LINE`] bytes and are NATS operations; `MSG`/`HMSG` announce at most
/// [`MAX_MESSAGE`] bytes, which follow with a line break. It holds one control line at most.
pub struct Checker {
    need: Need,
    line: Vec<u8>,
}

impl Checker {
    /// A checker for the stream after the server's first `INFO`.
    pub fn after_info() -> Self {
        Self {
            need: Need::Line,
            line: Vec::new(),
        }
    }

    /// The last complete control line, with its line break.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// Checks a prefix of `data` (never empty): returns how many bytes it used and what they
    /// were.
    pub fn feed(&mut self, data: &[u8]) -> Result<(usize, Piece), Violation> {
        match self.need {
            Need::Payload(left) => {
                let used = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - used as u64;
                self.need = if left == 0 {
                    Need::Trailer(2)
                } else {
                    Need::Payload(left)
                };
                Ok((used, Piece::Bytes))
            }
            Need::Trailer(left) => {
                let expected: &[u8] = if left == 2 { b"\r\n" } else { b"\n" };
                let used = data.len().min(expected.len());
                if data[..used] != expected[..used] {
                    return Err(Violation::Malformed);
                }
                let left = left - used as u8;
                self.need = if left == 0 {
                    Need::Line
                } else {
                    Need::Trailer(left)
                };
                Ok((used, Piece::Bytes))
            }
            Need::Line => {
                if self.line.ends_with(b"\n") {
                    // The last line was forwarded: start the next.
                    self.line.clear();
                }
                let (used, complete) = match data.iter().position(|b| *b == b'\n') {
                    Some(at) => (at + 1, true),
                    None => (data.len(), false),
                };
                if self.line.len() + used > MAX_CONTROL_LINE + 2 {
                    return Err(Violation::LongLine);
                }
                self.line.extend_from_slice(&data[..used]);
                if !complete {
                    return Ok((used, Piece::Partial));
                }
                if !self.line.ends_with(b"\r\n") {
                    return Err(Violation::Malformed);
                }
                let payload = operation(&self.line[..self.line.len() - 2])?;
                if let Some(size) = payload {
                    self.need = Need::Payload(size);
                    if size == 0 {
                        self.need = Need::Trailer(2);
                    }
                }
                Ok((used, Piece::Line))
            }
        }
    }
}

/// Checks a control line (without its line break); returns the size of the payload that follows
/// (for `MSG` and `HMSG`).
fn operation(line: &[u8]) -> Result<Option<u64>, Violation> {
    let text = std::str::from_utf8(line).map_err(|_| Violation::NotNats)?;
    // As async-nats matches them (case-sensitive prefixes).
    if matches!(text, "PING" | "PONG" | "+OK") {
        return Ok(None);
    }
    if text.starts_with("-ERR ") || text.starts_with("INFO ") {
        return Ok(None);
    }
    let args: Vec<&str> = if let Some(rest) = text.strip_prefix("MSG ") {
        rest.split_ascii_whitespace().collect()
    } else if let Some(rest) = text.strip_prefix("HMSG ") {
        rest.split_ascii_whitespace().collect()
    } else {
        return Err(Violation::NotNats);
    };
    let number = |s: &str| s.parse::<u64>().map_err(|_| Violation::Malformed);
    let total = if text.starts_with("MSG ") {
        // MSG <subject> <sid> [reply-to] <#bytes>
        if !(3..=4).contains(&args.len()) {
            return Err(Violation::Malformed);
        }
        number(args[args.len() - 1])?
    } else {
        // HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
        if !(4..=5).contains(&args.len()) {
            return Err(Violation::Malformed);
        }
        let header = number(args[args.len() - 2])?;
        let total = number(args[args.len() - 1])?;
        if header > total {
            return Err(Violation::Malformed);
        }
        total
    };
    number(args[1])?;
    if total > MAX_MESSAGE {
        return Err(Violation::LargeMessage);
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in chunks of `chunk` bytes; returns what was forwarded or the violation.
    fn run(stream: &[u8], chunk: usize) -> Result<Vec<u8>, Violation> {
        let mut checker = Checker::after_info();
        let mut out = Vec::new();
        for mut part in stream.chunks(chunk) {
            while !part.is_empty() {
                let (used, piece) = checker.feed(part)?;
                match piece {
                    Piece::Partial => {}
                    Piece::Line => out.extend_from_slice(checker.line()),
                    Piece::Bytes => out.extend_from_slice(&part[..used]),
                }
                part = &part[used..];
            }
        }
        Ok(out)
    }

    #[test]
    fn the_protocol_passes_unchanged_however_it_is_cut() {
        let stream = b"PING\r\n+OK\r\nMSG a.b 1 5\r\nhello\r\nMSG _INBOX.x 2 r.y 0\r\n\r\nHMSG a 3 12 14\r\nNATS/1.0\r\n\r\nhi\r\n-ERR 'x'\r\nINFO {\"a\":1}\r\nPONG\r\n";
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(
                run(stream, chunk).unwrap(),
                stream.to_vec(),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn violations_are_told_apart() {
        let cases: [(&[u8], Violation); 9] = [
            (b"MSG _INBOX.x 1 2000000000\r\n", Violation::LargeMessage),
            (b"HMSG a 1 10 2000000\r\n", Violation::LargeMessage),
            (b"HELLO\r\n", Violation::NotNats),
            (b"-ERR\r\n", Violation::NotNats),
            (b"MSG a 1 x\r\n", Violation::Malformed),
            (b"MSG a x 1\r\n", Violation::Malformed),
            (b"HMSG a 1 9 3\r\n", Violation::Malformed),
            (b"MSG a 1 2\r\nhiXX", Violation::Malformed),
            (b"PING\n", Violation::Malformed),
        ];
        for (stream, expected) in cases {
            assert_eq!(
                run(stream, 3),
                Err(expected),
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[test]
    fn an_endless_line_is_cut_at_the_cap() {
        let mut checker = Checker::after_info();
        let chunk = vec![b'x'; 4096];
        let mut fed = 0;
        let violation = loop {
            match checker.feed(&chunk) {
                Ok((used, _)) => fed += used,
                Err(v) => break v,
            }
            assert!(fed <= MAX_CONTROL_LINE + 4096, "fed {fed}");
        };
        assert_eq!(violation, Violation::LongLine);
        assert!(checker.line.capacity() <= 2 * MAX_CONTROL_LINE);
    }

    #[test]
    fn a_relay_dials_no_relay_and_names_reach_loopback_only_when_allowed() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        // IP literals were judged by the policy as written.
        assert!(may_dial(addr("127.0.0.1:4222"), false, false));
        assert!(may_dial(addr("169.254.1.1:4222"), false, false));
        // Names: loopback, unspecified and link-local only when allowed.
        for local in [
            "127.0.0.1:4222",
            "127.9.9.9:4222",
            "0.0.0.0:4222",
            "[::1]:4222",
            "[::]:4222",
            "[::ffff:127.0.0.1]:4222",
            "169.254.169.254:80",
            "[fe80::1]:4222",
        ] {
            assert!(!may_dial(addr(local), true, false), "{local}");
            assert!(may_dial(addr(local), true, true), "{local}");
        }
        assert!(may_dial(addr("10.1.2.3:4222"), true, false));
        // Never a relay of this process, however it is written.
        let port = 61_234;
        relay_ports().insert(port);
        for own in [
            format!("127.0.0.1:{port}"),
            format!("0.0.0.0:{port}"),
            format!("[::1]:{port}"),
        ] {
            assert!(!may_dial(addr(&own), false, true), "{own}");
        }
        assert!(may_dial(addr(&format!("10.1.2.3:{port}")), false, true));
        relay_ports().remove(&port);
    }

    #[test]
    fn a_tls_failure_is_told_without_the_server_name() {
        let error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                expected: rustls_pki_types::ServerName::try_from("secret-host.example")
                    .unwrap()
                    .to_owned(),
                presented: vec!["other.example".into()],
            });
        // What rustls says names the host; what the relay says does not.
        let io = io::Error::new(io::ErrorKind::InvalidData, error);
        assert!(io.to_string().contains("secret-host"), "{io}");
        let told = tls_failure(&io);
        assert_eq!(told, "the certificate is not valid for the server's name");
        assert!(!told.contains("example"));
        assert_eq!(
            tls_failure(&io::Error::other("secret-host.example")),
            io::ErrorKind::Other.to_string()
        );
    }

    #[test]
    fn the_largest_message_passes() {
        let mut stream = format!("MSG a 1 {MAX_MESSAGE}\r\n").into_bytes();
        stream.extend(std::iter::repeat_n(b'z', MAX_MESSAGE as usize));
        stream.extend_from_slice(b"\r\nPING\r\n");
        assert_eq!(run(&stream, READ_CHUNK).unwrap(), stream);
    }

    /// The caps in bytes, not relative to their constants (which a test reading them would
    /// follow anywhere): a 63 KiB `INFO` passes, a 65 KiB one is refused, and so is a message of
    /// 1 MiB and a byte.
    #[test]
    fn the_caps_are_64_kib_a_line_and_1_mib_a_message() {
        let info = |kib: usize| {
            let mut line = b"INFO {\"a\":\"".to_vec();
            line.resize(kib << 10, b'x');
            line.extend_from_slice(b"\"}\r\n");
            line
        };
        assert_eq!(run(&info(63), READ_CHUNK).unwrap(), info(63));
        assert_eq!(run(&info(65), READ_CHUNK), Err(Violation::LongLine));
        assert_eq!(
            run(b"MSG a 1 1048577\r\n", READ_CHUNK),
            Err(Violation::LargeMessage)
        );
    }
}
