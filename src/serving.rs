//! Limits every HTTP server of the operator applies (the health/metrics port and the webhook):
//! whoever can reach a port must not be able to hold the process's memory, sockets or tasks.
//!
//! - a cap on open connections: past it a new connection is closed at once;
//! - a header-read timeout (slowloris: request heads trickled a byte at a time);
//! - a per-request deadline (a body trickled just as slowly) and a lifetime per connection,
//!   which also bounds idle keep-alive connections;
//! - body limits are per endpoint (the webhook: [`MAX_WEBHOOK_BODY`]; the health and metrics
//!   endpoints read no body).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Time to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to send a whole request (head and body) and get the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest a connection stays open, busy or idle.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Open connections at most, per server: probes, a scraper or two, and the API servers' few
/// connections to the webhook.
pub const MAX_CONNECTIONS: usize = 128;
/// The largest AdmissionReview the webhook reads: like controller-runtime's 7 MiB (the API
/// server's own request limit is 3 MiB, and a review holds the object twice on UPDATE).
pub const MAX_WEBHOOK_BODY: usize = 7 << 20;

/// A cap on open connections.
#[derive(Clone)]
pub struct ConnectionCap(Arc<Semaphore>);

impl ConnectionCap {
    /// At most `n` connections at once.
    pub fn new(n: usize) -> Self {
        Self(Arc::new(Semaphore::new(n)))
    }

    /// A place for one more connection, or None when all are taken (close the new one).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
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
/// within [`REQUEST_TIMEOUT`] (else 503). `permit` is held until the connection ends.
pub async fn serve_connection<IO, F, Fut, B>(io: IO, handle: F, permit: OwnedSemaphorePermit)
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
    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
    drop(permit);
}
