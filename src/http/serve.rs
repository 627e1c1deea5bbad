//! The one HTTP/1.1 serving loop, plain or over TLS: the health and metrics endpoint and the
//! admission webhook both run on it, with the limits of [`crate::serving`] (connection caps per
//! peer and in all, header-read and per-request timeouts, a lifetime per connection).

use std::future::Future;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Longest TLS handshake: a client that stalls it holds nothing for longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` (through `tls` when given) and answers every request with
/// `handler`, until the returned future is dropped. At most `limits` connections are open.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: crate::serving::Limits,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let admission = crate::serving::Admission::new(limits);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        // Past the caps, the new connection is closed at once.
        let Some(seat) = admission.admit(peer.ip()) else {
            continue;
        };
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => crate::serving::serve_connection(stream, handler, seat).await,
                Some(acceptor) => {
                    // A connection evicted while in its handshake closes at once too.
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => done,
                        _ = seat.evicted() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            crate::serving::serve_connection(stream, handler, seat).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => {}
                    }
                }
            }
        });
    }
}
