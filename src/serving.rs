//! Limits every HTTP server of the operator applies (the health/metrics port and the webhook):
//! whoever can reach a port must not be able to hold the process's memory, sockets or tasks, nor
//! keep anyone else out.
//!
//! - a cap on open connections per peer (one address; an IPv6 peer is its /64) and in all
//!   ([`Limits`]). A peer at its own cap gets its new connection closed at once. When the total
//!   is reached, a peer holding fewer connections than the largest holder still gets in: the
//!   largest holder's oldest connection is closed to make room. So one peer (or a few) holding
//!   every place never keeps the kubelet's probes or the API server out;
//! - a header-read timeout (slowloris: request heads trickled a byte at a time);
//! - a per-request deadline (a body trickled just as slowly) and a lifetime per connection,
//!   which also bounds idle keep-alive connections;
//! - body limits are per endpoint (the webhook: [`MAX_WEBHOOK_BODY`]; the health and metrics
//!   endpoints read no body).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;

/// Time to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to send a whole request (head and body) and get the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a connection stays open, busy or idle.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The health and metrics port: probes (a new connection each), a scraper or two.
pub const HTTP_LIMITS: Limits = Limits {
    per_peer: 16,
    total: 128,
};
/// The webhook: the API servers open a connection per concurrent review (HTTP/1.1).
pub const WEBHOOK_LIMITS: Limits = Limits {
    per_peer: 64,
    total: 256,
};
/// The largest AdmissionReview the webhook reads: like controller-runtime's 7 MiB (the API
/// server's own request limit is 3 MiB, and a review holds the object twice on UPDATE).
pub const MAX_WEBHOOK_BODY: usize = 7 << 20;

/// Open connections at most: per peer, and in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per peer address (an IPv6 peer: its /64).
    pub per_peer: usize,
    /// In all.
    pub total: usize,
}

/// Who holds which connections of one server; see the module's doc for the rule.
#[derive(Clone)]
pub struct Admission {
    limits: Limits,
    table: Arc<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    /// Per peer, its connections oldest first.
    peers: HashMap<IpAddr, Vec<Held>>,
    open: usize,
    next: u64,
}

struct Held {
    id: u64,
    evict: Arc<Notify>,
}

/// One admitted connection: its place is given back when this is dropped. [`Seat::evicted`]
/// resolves when the place was given to someone else (close the connection then).
pub struct Seat {
    table: Arc<Mutex<Table>>,
    peer: IpAddr,
    id: u64,
    evict: Arc<Notify>,
}

impl Seat {
    /// Resolves when this connection must close to make room for another peer's.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(self.peer, self.id);
    }
}

impl Table {
    fn remove(&mut self, peer: IpAddr, id: u64) -> bool {
        let Some(held) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Some(at) = held.iter().position(|h| h.id == id) else {
            return false;
        };
        held.remove(at);
        if held.is_empty() {
            self.peers.remove(&peer);
        }
        self.open -= 1;
        true
    }
}

/// The peer a connection counts against: its address, an IPv4-mapped one as IPv4, an IPv6 one
/// as its /64 (a host has a whole /64 to pick source addresses from).
pub fn peer_of(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

impl Admission {
    /// An empty table with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            table: Arc::default(),
        }
    }

    /// A place for a new connection from `addr`, or None (close it at once): the peer holds its
    /// cap, or every place is taken and the peer holds as many as the largest holder.
    pub fn admit(&self, addr: IpAddr) -> Option<Seat> {
        let peer = peer_of(addr);
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let holds = table.peers.get(&peer).map_or(0, Vec::len);
        if holds >= self.limits.per_peer {
            return None;
        }
        if table.open >= self.limits.total {
            let (largest, most) = table
                .peers
                .iter()
                .map(|(p, held)| (*p, held.len()))
                .max_by_key(|(_, n)| *n)?;
            if holds >= most {
                return None;
            }
            // The largest holder's oldest connection makes room.
            let victim = table.peers.get(&largest).and_then(|h| h.first());
            let victim = victim.map(|h| (h.id, h.evict.clone()));
            let (id, evict) = victim?;
            table.remove(largest, id);
            evict.notify_one();
        }
        table.next += 1;
        let id = table.next;
        let evict = Arc::new(Notify::new());
        table.peers.entry(peer).or_default().push(Held {
            id,
            evict: evict.clone(),
        });
        table.open += 1;
        Some(Seat {
            table: self.table.clone(),
            peer,
            id,
            evict,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).open
    }
}

/// An HTTP/1 connection builder with the header-read timeout (which needs a timer).
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
}

/// Serves one connection with `service` within [`CONNECTION_LIFETIME`]; each request's answer
/// within [`REQUEST_TIMEOUT`] (else 503). `seat` is held until the connection ends, which is
/// at once when another peer is given its place.
pub async fn serve_connection<IO, F, Fut, B>(io: IO, handle: F, seat: Seat)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + From<&'static str> + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = hyper::service::service_fn(move |req| {
        let handle = handle.clone();
        async move {
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, handle(req)).await {
                Ok(response) => response,
                Err(_) => {
                    let mut late = hyper::Response::new(B::from("request timed out"));
                    *late.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    late
                }
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let connection = http1_builder().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
        _ = seat.evicted() => {}
    }
    drop(seat);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_gets_no_more_than_its_cap() {
        let admission = Admission::new(Limits {
            per_peer: 3,
            total: 100,
        });
        let held: Vec<Seat> = (0..3)
            .filter_map(|_| admission.admit(ip("10.0.0.1")))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(admission.admit(ip("10.0.0.1")).is_none());
        // The same peer spelt as an IPv4-mapped address, or another address of an IPv6 /64.
        assert!(admission.admit(ip("::ffff:10.0.0.1")).is_none());
        let v6: Vec<Seat> = (1..=3)
            .filter_map(|i| admission.admit(ip(&format!("fd00::{i}"))))
            .collect();
        assert_eq!(v6.len(), 3);
        assert!(admission.admit(ip("fd00::ffff:1")).is_none());
        assert!(admission.admit(ip("fd00:0:0:1::1")).is_some());
        drop(held);
        assert!(admission.admit(ip("10.0.0.1")).is_some());
    }

    #[tokio::test]
    async fn when_full_a_smaller_holder_gets_in_and_the_largest_makes_room() {
        let admission = Admission::new(Limits {
            per_peer: 8,
            total: 10,
        });
        let hog: Vec<Seat> = (0..8)
            .filter_map(|_| admission.admit(ip("10.0.0.66")))
            .collect();
        let other: Vec<Seat> = (0..2)
            .filter_map(|_| admission.admit(ip("10.0.0.2")))
            .collect();
        assert_eq!((hog.len(), other.len(), admission.open()), (8, 2, 10));
        // The kubelet: no connection yet, so it gets in; the hog's oldest is told to close.
        let probe = admission
            .admit(ip("10.0.0.9"))
            .expect("a probe is never refused");
        tokio::time::timeout(Duration::from_millis(100), hog[0].evicted())
            .await
            .expect("the largest holder's oldest connection is evicted");
        assert_eq!(admission.open(), 10);
        // The hog cannot take it back: it still holds the most.
        assert!(admission.admit(ip("10.0.0.66")).is_none());
        // Nobody else was told to close.
        for seat in hog.iter().skip(1).chain(&other).chain([&probe]) {
            assert!(
                tokio::time::timeout(Duration::from_millis(10), seat.evicted())
                    .await
                    .is_err()
            );
        }
        // Places given back count at once, evicted ones included (their drop is a no-op).
        drop(hog);
        assert_eq!(admission.open(), 3);
    }

    #[test]
    fn equal_holders_when_full_keep_their_places() {
        let admission = Admission::new(Limits {
            per_peer: 8,
            total: 4,
        });
        let seats: Vec<Seat> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .filter_map(|a| admission.admit(ip(a)))
            .collect();
        assert_eq!(seats.len(), 4);
        assert!(admission.admit(ip("10.0.0.1")).is_none());
    }
}
