//! The certificate being served, swapped when the mounted one is renewed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::{load_cert_dir, provider};
use super::{REFRESH, WebhookError};

/// The serving certificate, swapped when the mounted one is renewed.
#[derive(Debug)]
pub struct Certificates {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Serves `key` until [`Certificates::replace`] swaps it.
    pub fn new(key: Arc<CertifiedKey>) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(key),
        })
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
    }

    /// Re-reads `dir` every minute and serves its pair when it changed and is valid; a broken
    /// pair (half-written during a renewal) is logged and the previous one kept.
    pub async fn watch_dir(self: Arc<Self>, dir: PathBuf) {
        let read = |dir: &Path| {
            (
                std::fs::read(dir.join("tls.crt")).ok(),
                std::fs::read(dir.join("tls.key")).ok(),
            )
        };
        let mut seen = read(&dir);
        loop {
            tokio::time::sleep(REFRESH).await;
            let now = read(&dir);
            if now == seen {
                continue;
            }
            match load_cert_dir(&dir) {
                Ok(key) => {
                    self.replace(Arc::new(key));
                    seen = now;
                    tracing::info!(dir = %dir.display(), "webhook certificate reloaded");
                }
                Err(e) => tracing::warn!("{e}; still serving the previous certificate"),
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|key| key.clone())
    }
}

/// The TLS configuration: HTTP/1.1 only (what the API server falls back to), TLS 1.2 and 1.3.
pub fn tls_config(certificates: Arc<Certificates>) -> Result<rustls::ServerConfig, WebhookError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
