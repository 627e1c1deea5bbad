//! The validating admission webhook: refuses, at `kubectl apply` time, `state.jetstream`
//! Components with a problem that only a change of the manifest can fix, with the reason and
//! message the operator would report on the KeyValueBucket.
//!
//! The decision is [`check::check_object`](crate::check::check_object), the same pure checks as
//! `check` and the reconciler, run on the object the API server sends; nothing is looked up
//! (no Secret, no NATS), so the webhook answers in microseconds and never depends on the leader.
//! It is served over TLS with either a certificate from a directory (a mounted Secret, e.g.
//! cert-manager's, reloaded when it is renewed) or a CA and serving certificate generated in
//! memory at start-up, whose CA the operator adds to its ValidatingWebhookConfiguration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::check::{ObjectCheck, check_object};

/// The path the API server posts AdmissionReviews to.
pub const PATH: &str = "/validate";
/// The largest AdmissionReview accepted.
const MAX_BODY: usize = crate::serving::MAX_WEBHOOK_BODY;
/// Open connections at most (the API servers keep a few each).
const MAX_CONNECTIONS: usize = 128;
/// How many CAs the self-signed mode keeps in a `caBundle`: one per replica that may still be
/// serving, newest first. Older ones belong to processes that are gone (their keys were only in
/// their memory), so dropping them is harmless.
const MAX_BUNDLED_CAS: usize = 8;
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

// ---------------------------------------------------------------------------------------------
// The decision (pure).

/// Answers one AdmissionReview (the request body): the review to send back.
pub fn review(body: &[u8], now_unix: i64) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .map_err(|e| e.to_string())
            .and_then(|r| r.try_into().map_err(|e| format!("{e}")))
        {
            Ok(request) => request,
            Err(e) => {
                return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}"))
                    .into_review();
            }
        };
    decide(&request, now_unix).into_review()
}

/// Whether to admit one request.
///
/// Only CREATE and UPDATE of `dapr.io` Components of type `state.jetstream` are looked at;
/// anything else (other kinds, other types, DELETE) is allowed. A Component is refused when the
/// checks find a problem only a change of the manifest can fix; on UPDATE, only when the change
/// brings a problem the object did not have, so that a Component that was already broken can
/// still be relabelled, fixed one problem at a time, deleted (its finalizer removed), and carry
/// the operator's own status annotations.
pub fn decide(request: &AdmissionRequest<DynamicObject>, now_unix: i64) -> AdmissionResponse {
    let allow = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request.kind.group != "dapr.io"
        || request.kind.kind != "Component"
    {
        return allow;
    }
    let Some(object) = &request.object else {
        return allow;
    };
    if object.metadata.deletion_timestamp.is_some() {
        // Being deleted: only finalizers and metadata can change, and refusing would keep the
        // Component (and its deletion) stuck.
        return allow;
    }
    let problems = problems_of(object, now_unix);
    let old = request
        .old_object
        .as_ref()
        .map(|old| problems_of(old, now_unix))
        .unwrap_or_default();
    let new: Vec<&(String, String)> = problems.iter().filter(|p| !old.contains(p)).collect();
    if new.is_empty() {
        return allow;
    }
    let mut message = String::from(if problems.len() == 1 {
        "this state.jetstream Component has a problem the operator would report: "
    } else {
        "this state.jetstream Component has problems the operator would report: "
    });
    for (i, (reason, text)) in problems.iter().enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        message.push_str(reason);
        message.push_str(": ");
        message.push_str(text);
    }
    allow.deny(message)
}

/// The permanent problems `(reason, message)` of an object, in the reconciler's order.
fn problems_of(object: &DynamicObject, now_unix: i64) -> Vec<(String, String)> {
    let Ok(value) = serde_json::to_value(object) else {
        return Vec::new();
    };
    match check_object(&value, now_unix) {
        ObjectCheck::Checked(findings) => findings
            .permanent_problems()
            .map(|p| (p.reason.clone(), p.message.clone()))
            .collect(),
        // Allowed on purpose: the API server has already validated the object against Dapr's
        // CRD schema, so what our lenient model cannot read is a gap of the operator, not a
        // mistake of the user; the operator reports (or skips) it, and refusing it here would
        // block Dapr on the operator's own shortcoming.
        ObjectCheck::Unreadable(_) => Vec::new(),
        ObjectCheck::NotOurs => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates.

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

fn provider() -> CryptoProvider {
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

// ---------------------------------------------------------------------------------------------
// The caBundle.

/// The `caBundle` after adding `ours` to `existing` (PEM): ours first, then the other
/// certificates in their order, at most [`MAX_BUNDLED_CAS`] in all. Every replica adds its own
/// CA this way, so replicas do not undo each other.
pub fn merge_ca_bundle(existing: &str, ours: &str) -> String {
    let ours = ours.trim();
    let mut out = vec![ours.to_owned()];
    for block in pem_blocks(existing) {
        if out.len() >= MAX_BUNDLED_CAS {
            break;
        }
        if block != ours {
            out.push(block);
        }
    }
    let mut bundle = out.join("\n");
    bundle.push('\n');
    bundle
}

/// The PEM `CERTIFICATE` blocks of a bundle, trimmed.
fn pem_blocks(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let end = start + end + END.len();
        blocks.push(rest[start..end].trim().to_owned());
        rest = &rest[end..];
    }
    blocks
}

/// Adds `ca_pem` to the `caBundle` of every webhook of the ValidatingWebhookConfiguration
/// `name`, unless it is there already. Returns whether anything was written.
pub async fn inject_ca_bundle(
    client: kube::Client,
    name: &str,
    ca_pem: &str,
) -> Result<bool, WebhookError> {
    let fail = |source| WebhookError::CaBundle {
        name: name.to_owned(),
        source,
    };
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let config = api.get(name).await.map_err(fail)?;
    let mut webhooks = Vec::new();
    for webhook in config.webhooks.iter().flatten() {
        let existing = webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default();
        if pem_blocks(&existing).iter().any(|b| b == ca_pem.trim()) {
            continue;
        }
        let bundle = merge_ca_bundle(&existing, ca_pem);
        webhooks.push(serde_json::json!({
            "name": webhook.name,
            "clientConfig": {"caBundle": k8s_openapi::ByteString(bundle.into_bytes())},
        }));
    }
    if webhooks.is_empty() {
        return Ok(false);
    }
    // Strategic merge on `webhooks` (merge key `name`): only the caBundles change, whatever Helm
    // or anyone else owns in the rest of the object.
    let patch = serde_json::json!({ "webhooks": webhooks });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(fail)?;
    Ok(true)
}

/// Keeps `ca_pem` in the configuration's `caBundle`, checking every minute (another replica,
/// or a `helm upgrade`, may have rewritten it). Failures are logged and retried; with
/// `failurePolicy: Ignore` a missing CA only means requests are admitted unchecked meanwhile.
pub async fn keep_ca_bundle(client: kube::Client, name: String, ca_pem: String) {
    loop {
        tokio::time::sleep(REFRESH).await;
        match inject_ca_bundle(client.clone(), &name, &ca_pem).await {
            Ok(true) => tracing::info!(configuration = %name, "webhook CA added to the caBundle"),
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

/// Binds `addr` and serves [`PATH`] over TLS until the task is dropped. Every replica serves:
/// the answer needs no cache and no leadership.
pub async fn serve(
    addr: SocketAddr,
    certificates: Arc<Certificates>,
) -> Result<impl std::future::Future<Output = ()>, WebhookError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(certificates)?));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| WebhookError::Generate(format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, path = PATH, "serving the validating admission webhook");
    let cap = crate::serving::ConnectionCap::new(MAX_CONNECTIONS);
    Ok(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            // Past the cap, the new connection is closed at once.
            let Some(permit) = cap.admit() else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "webhook TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                crate::serving::serve_connection(stream, handle, permit).await;
            });
        }
    })
}

async fn handle(req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let answer = review(&body, jiff::Timestamp::now().as_second());
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
            response
        }
        Err(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the response",
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

    const NOW: i64 = 1_750_000_000;

    fn component(bucket: &str, annotations: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "statestore", "namespace": "shop", "annotations": annotations},
            "spec": {"type": "state.jetstream", "version": "v1", "metadata": [
                {"name": "natsURL", "value": "nats://nats:4222"},
                {"name": "bucket", "value": bucket},
            ]},
        })
    }

    fn request(
        operation: &str,
        object: Option<serde_json::Value>,
        old: Option<serde_json::Value>,
    ) -> Vec<u8> {
        let kind = object
            .as_ref()
            .or(old.as_ref())
            .and_then(|o| o["kind"].as_str())
            .unwrap_or("Component")
            .to_owned();
        let group = if kind == "Component" { "dapr.io" } else { "" };
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": group, "version": "v1alpha1", "kind": kind},
                "resource": {"group": group, "version": "v1alpha1", "resource": "components"},
                "name": "statestore",
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }
        }))
        .expect("json")
    }

    fn answer(body: &[u8]) -> AdmissionResponse {
        let review = review(body, NOW);
        assert_eq!(review.types.api_version, "admission.k8s.io/v1");
        assert_eq!(review.types.kind, "AdmissionReview");
        review.response.expect("a response")
    }

    #[test]
    fn a_good_component_is_allowed_with_its_uid() {
        let r = answer(&request(
            "CREATE",
            Some(component("orders", serde_json::json!({}))),
            None,
        ));
        assert!(r.allowed, "{r:?}");
        assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    }

    #[test]
    fn a_bad_component_is_refused_with_the_operators_reasons_in_its_order() {
        let bad = component("a.b", serde_json::json!({"jetstreamkv.io/storage": "ssd"}));
        let r = answer(&request("CREATE", Some(bad), None));
        assert!(!r.allowed);
        let message = &r.result.message;
        let bucket = message.find("InvalidBucketName: bucket name \"a.b\"");
        let storage = message.find("InvalidAnnotation: annotation jetstreamkv.io/storage");
        assert!(
            bucket.is_some() && storage.is_some(),
            "both problems in {message}"
        );
        // The settings come before the store configuration, as in the reconciler.
        assert!(storage < bucket, "{message}");
    }

    #[test]
    fn secrets_are_never_in_the_message() {
        let mut c = component("orders", serde_json::json!({}));
        c["spec"]["metadata"][0]["value"] = "http://user:hunter2@nats:4222".into();
        let r = answer(&request("CREATE", Some(c), None));
        assert!(!r.allowed);
        assert!(r.result.message.contains("InvalidNatsURL"), "{r:?}");
        assert!(!r.result.message.contains("hunter2"), "{r:?}");
    }

    #[test]
    fn values_from_secrets_are_not_problems() {
        let mut c = component("orders", serde_json::json!({}));
        c["spec"]["metadata"][0] =
            serde_json::json!({"name": "natsURL", "secretKeyRef": {"name": "nats", "key": "url"}});
        let r = answer(&request("CREATE", Some(c), None));
        assert!(r.allowed, "{r:?}");
    }

    #[test]
    fn other_types_kinds_and_deletes_are_allowed() {
        let mut redis = component("a.b", serde_json::json!({}));
        redis["spec"]["type"] = "state.redis".into();
        assert!(answer(&request("CREATE", Some(redis), None)).allowed);
        let config_map = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"bucket": "a.b"}});
        assert!(answer(&request("CREATE", Some(config_map), None)).allowed);
        let bad = component("a.b", serde_json::json!({}));
        assert!(answer(&request("DELETE", None, Some(bad))).allowed);
    }

    #[test]
    fn an_unreadable_component_is_left_to_the_operator() {
        let mut c = component("orders", serde_json::json!({}));
        c["spec"]["metadata"] = serde_json::json!({"natsURL": "x"});
        assert!(answer(&request("CREATE", Some(c), None)).allowed);
    }

    #[test]
    fn updates_are_refused_only_for_new_problems() {
        let broken = component("a.b", serde_json::json!({}));
        let mut relabelled = broken.clone();
        relabelled["metadata"]["labels"] = serde_json::json!({"team": "shop"});
        relabelled["metadata"]["annotations"] =
            serde_json::json!({"jetstreamkv.io/ready": "false"});
        let r = answer(&request("UPDATE", Some(relabelled), Some(broken.clone())));
        assert!(
            r.allowed,
            "metadata of a broken Component can change: {r:?}"
        );

        let worse = component("a.c", serde_json::json!({}));
        let r = answer(&request("UPDATE", Some(worse), Some(broken.clone())));
        assert!(!r.allowed, "a different bad bucket is a new problem");

        let good = component("orders", serde_json::json!({}));
        let r = answer(&request("UPDATE", Some(broken.clone()), Some(good)));
        assert!(!r.allowed, "breaking a good Component is refused");

        let mut deleting = broken.clone();
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        let r = answer(&request("UPDATE", Some(deleting), Some(broken)));
        assert!(
            r.allowed,
            "a Component being deleted can lose its finalizer"
        );
    }

    #[test]
    fn garbage_gets_an_invalid_response() {
        let r = answer(b"{not json");
        assert!(!r.allowed);
        assert!(r.result.message.contains("not an AdmissionReview"), "{r:?}");
    }

    #[test]
    fn ca_bundles_keep_other_replicas_cas_newest_first_and_bounded() {
        let cert =
            |n: usize| format!("-----BEGIN CERTIFICATE-----\nAAA{n}\n-----END CERTIFICATE-----");
        assert_eq!(merge_ca_bundle("", &cert(1)), format!("{}\n", cert(1)));
        let two = merge_ca_bundle(&merge_ca_bundle("", &cert(1)), &cert(2));
        assert_eq!(two, format!("{}\n{}\n", cert(2), cert(1)));
        assert_eq!(
            merge_ca_bundle(&two, &cert(1)),
            format!("{}\n{}\n", cert(1), cert(2))
        );
        let mut bundle = String::new();
        for n in 0..20 {
            bundle = merge_ca_bundle(&bundle, &cert(n));
        }
        let blocks = pem_blocks(&bundle);
        assert_eq!(blocks.len(), MAX_BUNDLED_CAS);
        assert_eq!(blocks[0], cert(19));
    }

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
