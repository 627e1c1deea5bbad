//! The serving certificate: loaded from a directory (a mounted `kubernetes.io/tls` Secret), or a
//! CA and serving certificate generated in memory.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::WebhookError;

/// A CA and a serving certificate signed by it, generated in memory.
pub struct SelfSigned {
    /// The CA certificate, PEM: what the webhook configuration's `caBundle` must hold.
    pub ca_pem: String,
    /// The serving certificate and its key.
    pub serving: Arc<CertifiedKey>,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned").finish_non_exhaustive()
    }
}

/// The DNS names a Service answers to in the cluster.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Generates a CA (its key never leaves this process) and a serving certificate for `names`
/// (DNS names or IP addresses), both valid from a day ago for ten years.
pub fn self_signed(names: &[String]) -> Result<SelfSigned, WebhookError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let err = |e: rcgen::Error| WebhookError::Generate(e.to_string());
    let today = jiff::Zoned::now().date();
    let date = |d: jiff::civil::Date| {
        rcgen::date_time_ymd(d.year().into(), d.month() as u8, d.day() as u8)
    };
    let not_before = date(today.yesterday().unwrap_or(today));
    let not_after = date(today.saturating_add(jiff::Span::new().years(10)));

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, "jetstream-kv-operator webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(err)?;
    let mut serving = CertificateParams::new(names.to_vec()).map_err(err)?;
    serving.distinguished_name.push(
        DnType::CommonName,
        names
            .first()
            .map_or("jetstream-kv-operator", String::as_str),
    );
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.not_before = not_before;
    serving.not_after = not_after;
    let cert = serving.signed_by(&key, &issuer).map_err(err)?;

    let chain = vec![cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| WebhookError::Generate(e.to_owned()))?;
    Ok(SelfSigned {
        ca_pem: ca_cert.pem(),
        serving: Arc::new(certified_key(chain, key)?),
    })
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    CertifiedKey::from_der(chain, key, &provider())
}

pub(super) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Reads `tls.crt` (the chain, leaf first) and `tls.key` from a directory, as a
/// `kubernetes.io/tls` Secret (cert-manager's) is mounted.
pub fn load_cert_dir(dir: &Path) -> Result<CertifiedKey, WebhookError> {
    let fail = |reason: String| WebhookError::Certificate {
        dir: dir.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(format!("tls.crt: {e}")))?;
    if chain.is_empty() {
        return Err(fail("tls.crt holds no certificate".to_owned()));
    }
    // The error of a key file says what is wrong with it, never what it holds.
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))
        .map_err(|e| fail(format!("tls.key: {e}")))?;
    certified_key(chain, key).map_err(|e| fail(format!("tls.crt and tls.key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_serve_the_names_asked_for() {
        let names = [
            service_names("kvo", "jko-system"),
            vec!["127.0.0.1".to_owned()],
        ]
        .concat();
        let generated = self_signed(&names).expect("generated");
        assert!(generated.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(generated.serving.cert.len(), 2, "leaf and CA");
        let ca = CertificateDer::from_pem_slice(generated.ca_pem.as_bytes()).expect("CA PEM");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("CA is a valid root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(provider()),
        )
        .build()
        .expect("verifier");
        use rustls::client::danger::ServerCertVerifier as _;
        let now = rustls_pki_types::UnixTime::now();
        for name in ["kvo.jko-system.svc", "127.0.0.1"] {
            let server_name = rustls_pki_types::ServerName::try_from(name).expect("name");
            verifier
                .verify_server_cert(
                    &generated.serving.cert[0],
                    &generated.serving.cert[1..],
                    &server_name,
                    &[],
                    now,
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = rustls_pki_types::ServerName::try_from("evil.example").expect("name");
        assert!(
            verifier
                .verify_server_cert(&generated.serving.cert[0], &[], &other, &[], now)
                .is_err()
        );
    }
}
