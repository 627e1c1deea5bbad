//! The validating admission webhook: refuses, at `kubectl apply` time, `state.jetstream`
//! Components with a problem that only a change of the manifest can fix, with the reason and
//! message the operator would report on the KeyValueBucket.
//!
//! The decision ([`admission`]) is [`crate::validate::check_object`], the same validation
//! pipeline as `check` and the reconciler, run on the object the API server sends; nothing is looked up
//! (no Secret, no NATS), so the webhook answers in microseconds and never depends on the leader.
//! It is served over TLS with either a certificate from a directory (a mounted Secret, e.g.
//! cert-manager's, reloaded when it is renewed) or a CA and serving certificate generated in
//! memory at start-up, whose CA the operator adds to its ValidatingWebhookConfiguration.
//!
//! The parts: [`admission`] (the decision, pure), [`certs`] (loading or generating the serving
//! certificate), [`reload`] (swapping it when the mounted one is renewed), [`ca_bundle`] (the
//! self-signed CA in the ValidatingWebhookConfiguration); served by [`crate::http::serve`].

pub mod admission;
pub mod ca_bundle;
pub mod certs;
pub mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::metrics::{Metrics, ReviewResult};

pub use admission::{decide, review};
pub use ca_bundle::{inject_ca_bundle, keep_ca_bundle, merge_ca_bundle};
pub use certs::{SelfSigned, load_cert_dir, self_signed, service_names};
pub use reload::{Certificates, tls_config};

/// The path the API server posts AdmissionReviews to.
pub const PATH: &str = "/validate";
/// The largest AdmissionReview accepted (the API server's own request limit is 3 MiB, and a
/// review holds the object twice on UPDATE).
const MAX_BODY: usize = crate::serving::MAX_WEBHOOK_BODY;
/// How often a certificate directory is re-read, and the `caBundle` re-asserted.
const REFRESH: Duration = Duration::from_secs(60);

/// What can go wrong setting up the webhook. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The certificate directory cannot be read or holds no usable pair.
    #[error("cannot load the webhook certificate from {dir}: {reason}")]
    Certificate {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Generating the self-signed CA or serving certificate failed.
    #[error("cannot generate the self-signed webhook certificate: {0}")]
    Generate(String),
    /// The TLS configuration was refused.
    #[error("cannot set up TLS for the webhook: {0}")]
    Tls(#[from] rustls::Error),
    /// The webhook configuration could not be read or patched.
    #[error("cannot set the caBundle of ValidatingWebhookConfiguration {name}: {source}")]
    CaBundle {
        /// The configuration's name.
        name: String,
        /// The API error.
        source: kube::Error,
    },
}

/// Binds `addr` and serves [`PATH`] over TLS until the task is dropped. Every replica serves:
/// the answer needs no cache and no leadership.
pub async fn serve(
    addr: SocketAddr,
    certificates: Arc<Certificates>,
    metrics: Arc<Metrics>,
) -> Result<impl std::future::Future<Output = ()>, WebhookError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(certificates)?));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| WebhookError::Generate(format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, path = PATH, "serving the validating admission webhook");
    Ok(crate::http::serve::serve(
        listener,
        Some(acceptor),
        crate::serving::WEBHOOK_LIMITS,
        move |req| {
            let metrics = metrics.clone();
            async move {
                let started = Instant::now();
                let (response, result) = handle(req).await;
                metrics.webhook_reviewed(result, started.elapsed());
                response
            }
        },
    ))
}

/// One request to the webhook (any body type, so that the limits can be tested without a TLS
/// client).
async fn handle<B>(req: Request<B>) -> (Response<Full<Bytes>>, ReviewResult)
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if req.uri().path() != PATH {
        return (
            plain(StatusCode::NOT_FOUND, "not found"),
            ReviewResult::Error,
        );
    }
    if req.method() != Method::POST {
        return (
            plain(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview"),
            ReviewResult::Error,
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return (
                plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
                ReviewResult::Error,
            );
        }
    };
    let answer = review(&body, jiff::Timestamp::now().as_second());
    // The API server gives every review a uid: an answer without one is to a body that was
    // not an AdmissionReview.
    let result = match &answer.response {
        Some(response) if response.uid.is_empty() => ReviewResult::Error,
        Some(response) if response.allowed => ReviewResult::Allowed,
        Some(_) => ReviewResult::Denied,
        None => ReviewResult::Error,
    };
    if let Some(response) = &answer.response
        && !response.allowed
    {
        tracing::info!(uid = %response.uid, "admission refused: {}", response.result.message);
    }
    match serde_json::to_vec(&answer) {
        Ok(json) => {
            let mut response = Response::new(Full::new(Bytes::from(json)));
            if let Ok(v) = "application/json".parse() {
                response.headers_mut().insert("content-type", v);
            }
            (response, result)
        }
        Err(_) => (
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the response",
            ),
            ReviewResult::Error,
        ),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: Vec<u8>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = PATH.parse().unwrap();
        req
    }

    /// The body limit pinned in bytes from outside (7 MiB, above the API server's 3 MiB
    /// objects): one byte more is refused with 413 before it is parsed; 7 MiB itself is read
    /// and answered (here: an AdmissionReview that is not one, so 200 with a refusal).
    #[tokio::test]
    async fn a_body_over_seven_mib_is_refused_with_413() {
        let (over, result) = handle(post(vec![b' '; (7 << 20) + 1])).await;
        assert_eq!(result, ReviewResult::Error);
        assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let (at, result) = handle(post(vec![b' '; 7 << 20])).await;
        assert_eq!(
            result,
            ReviewResult::Error,
            "spaces are not an AdmissionReview"
        );
        assert_eq!(at.status(), StatusCode::OK);
    }
}
