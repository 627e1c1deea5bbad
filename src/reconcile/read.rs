//! The read step: what a reconcile needs from the cluster besides the Component itself, which the
//! watch delivers. The values of the Secrets it names (read when it reconciles, never cached),
//! and what the operator wrote before ([`super::context::Context::previous`]).

use kube::ResourceExt as _;

use super::context::Context;
use crate::dapr::{Component, parse_metadata};
use crate::secret_value::SecretValue;
use crate::secrets::SecretError;

/// The value of every metadata entry, reading each Secret they name once. Nothing is read when
/// the metadata does not parse: validation reports that first.
pub async fn secret_values(
    ctx: &Context,
    component: &Component,
) -> Result<Vec<(String, SecretValue)>, SecretError> {
    let Ok(entries) = parse_metadata(component) else {
        return Ok(Vec::new());
    };
    let namespace = component.namespace().unwrap_or_default();
    crate::secrets::resolve(&ctx.client, &namespace, &entries).await
}
