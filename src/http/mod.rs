//! The HTTP endpoint: `/healthz` (the process runs), `/readyz` (the caches are synced) and
//! `/metrics` (Prometheus text). Two endpoints and a metrics page do not need a web framework:
//! [`serve`] is the one serving loop, which the admission webhook uses too.

pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the endpoint reports.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    /// A CRD of the operator lacks a field it needs ([`crate::schema`]).
    schema_outdated: AtomicBool,
}

impl Health {
    /// Marks the operator ready (caches synced) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Records whether every CRD the operator needs has every field it needs.
    pub fn set_schema_current(&self, current: bool) {
        self.schema_outdated.store(!current, Ordering::Relaxed);
    }

    /// Whether the operator is ready: caches synced, and no CRD it needs outdated.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.schema_outdated.load(Ordering::Relaxed)
    }
}

/// Binds `addr` and serves until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(serve::serve(
        listener,
        None,
        crate::serving::HTTP_LIMITS,
        move |req| {
            let response = respond(&req, &health, &metrics);
            async move { response }
        },
    ))
}

fn respond<B>(req: &Request<B>, health: &Health, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body, content_type) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok".to_string(), "text/plain"),
        "/readyz" if health.is_ready() => (StatusCode::OK, "ok".to_string(), "text/plain"),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced yet".to_string(),
            "text/plain",
        ),
        "/metrics" => (
            StatusCode::OK,
            metrics.encode(health.is_ready()),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => (StatusCode::NOT_FOUND, "not found".to_string(), "text/plain"),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert("content-type", v);
    }
    response
}
