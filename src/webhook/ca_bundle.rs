//! The self-signed mode's CA in the ValidatingWebhookConfiguration's `caBundle`, kept there.

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};

use super::{REFRESH, WebhookError};

/// How many CAs the self-signed mode keeps in a `caBundle`: one per replica that may still be
/// serving, newest first. Older ones belong to processes that are gone (their keys were only in
/// their memory), so dropping them is harmless.
const MAX_BUNDLED_CAS: usize = 8;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
