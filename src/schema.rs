//! The schema the binary needs: the installed CRDs of the operator (KeyValueBucket,
//! JetStreamStream, NatsServerPolicy) compared with the ones it generates ([`crate::cli`]'s
//! `crd`). Helm installs `crds/` once and never upgrades them, so a new binary can run against an
//! old schema, where the API server prunes every field the old schema lacks: a status field
//! silently lost, or a NatsServerPolicy's restricting field silently off. A kind whose CRD lacks
//! a field the binary has is refused (no reconcile of it, no NATS request, no write), readiness
//! fails, and a log line and an Event name the missing fields and the fix. A policy CRD that
//! lacks a field refuses every Component while policies are enforced: fail closed.
//!
//! [`missing_fields`] and [`compare`] are pure; [`keep_checking`] reads the CRDs (get, by
//! name) at start and then periodically, so that applying the CRDs heals the operator without a
//! restart.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{CustomResourceExt as _, Resource as _};

use crate::crd::KeyValueBucket;
use crate::policy::NatsServerPolicy;
use crate::pubsub::JetStreamStream;

/// A CRD of the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Crd {
    KeyValueBucket,
    JetStreamStream,
    NatsServerPolicy,
}

impl Crd {
    pub const ALL: [Crd; 3] = [
        Self::KeyValueBucket,
        Self::JetStreamStream,
        Self::NatsServerPolicy,
    ];

    /// The CRD as this binary generates it (and `crd` prints it): every version it serves.
    pub fn needed(self) -> CustomResourceDefinition {
        crate::crd::served(match self {
            Self::KeyValueBucket => KeyValueBucket::crd(),
            Self::JetStreamStream => JetStreamStream::crd(),
            Self::NatsServerPolicy => NatsServerPolicy::crd(),
        })
    }

    /// Its name: `<plural>.<group>`.
    pub fn name(self) -> String {
        self.needed().metadata.name.unwrap_or_default()
    }

    /// The `crd` subcommand's argument for it.
    fn argument(self) -> &'static str {
        match self {
            Self::KeyValueBucket => "keyvaluebucket",
            Self::JetStreamStream => "jetstreamstream",
            Self::NatsServerPolicy => "natsserverpolicy",
        }
    }
}

/// The fields of `needed` that `installed` lacks, as dotted paths (`status.plan`,
/// `spec.servers[].ports`). A level where `installed` keeps unknown fields lacks nothing.
pub fn missing_fields(needed: &JSONSchemaProps, installed: &JSONSchemaProps) -> Vec<String> {
    let mut missing = Vec::new();
    walk("", needed, installed, &mut missing);
    missing
}

fn walk(path: &str, needed: &JSONSchemaProps, installed: &JSONSchemaProps, out: &mut Vec<String>) {
    if installed.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    if let Some(properties) = &needed.properties {
        for (name, field) in properties {
            let at = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            match installed.properties.as_ref().and_then(|p| p.get(name)) {
                Some(have) => walk(&at, field, have, out),
                None => out.push(at),
            }
        }
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &needed.items {
        let at = format!("{path}[]");
        match &installed.items {
            Some(JSONSchemaPropsOrArray::Schema(have)) => walk(&at, items, have, out),
            _ if items.properties.is_some() => out.push(at),
            _ => {}
        }
    }
}

/// Whether the installed CRD (None: not installed) serves every version the binary needs with
/// every field it has; Err: what is wrong and the fix, naming the missing fields.
pub fn compare(crd: Crd, installed: Option<&CustomResourceDefinition>) -> Result<(), String> {
    let needed = crd.needed();
    let name = crd.name();
    let fix = format!(
        "apply the operator's CRDs first (kubectl apply --server-side --force-conflicts -f the chart's crds/, or \
         `jetstream-kv-operator crd {} | kubectl apply --server-side --force-conflicts -f -`), then upgrade the \
         operator; until then it does not act on {}s",
        crd.argument(),
        needed.spec.names.kind
    );
    let Some(installed) = installed else {
        return Err(format!("CRD {name} is not installed: {fix}"));
    };
    let mut problems = Vec::new();
    for version in &needed.spec.versions {
        let Some(have) = installed
            .spec
            .versions
            .iter()
            .find(|v| v.name == version.name && v.served)
        else {
            problems.push(format!("version {} is not served", version.name));
            continue;
        };
        let schema = |v: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion| {
            v.schema.as_ref().and_then(|s| s.open_api_v3_schema.clone()).unwrap_or_default()
        };
        let missing = missing_fields(&schema(version), &schema(have));
        if !missing.is_empty() {
            problems.push(format!(
                "version {} lacks the field(s) {}",
                version.name,
                missing.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "CRD {name} is older than this operator: {}; the API server would drop these fields \
         from every object: {fix}",
        problems.join("; ")
    ))
}

/// What the last check found of each CRD: None until checked (every kind is refused until
/// then), Some(Err) when outdated.
#[derive(Debug, Default)]
pub struct SchemaGate {
    checked: RwLock<BTreeMap<Crd, Result<(), String>>>,
    /// Whether NatsServerPolicies are enforced (then their CRD gates every Component).
    policies: bool,
}

impl SchemaGate {
    /// A gate that refuses everything until checked; `policies`: whether NatsServerPolicies are
    /// enforced.
    pub fn new(policies: bool) -> Self {
        Self {
            checked: RwLock::default(),
            policies,
        }
    }

    /// A gate that lets everything through (tests, tools that do not reconcile).
    pub fn open() -> Self {
        let gate = Self::new(false);
        for crd in Crd::ALL {
            gate.set(crd, Ok(()));
        }
        gate
    }

    fn set(&self, crd: Crd, verdict: Result<(), String>) {
        if let Ok(mut checked) = self.checked.write() {
            checked.insert(crd, verdict);
        }
    }

    /// The CRDs this operator needs now.
    fn needed(&self) -> Vec<Crd> {
        Crd::ALL
            .into_iter()
            .filter(|c| *c != Crd::NatsServerPolicy || self.policies)
            .collect()
    }

    /// Why Components whose objects are of kind `crd` cannot be acted on now, if they cannot:
    /// that CRD, or the policy CRD while policies are enforced, is outdated or not checked yet.
    pub fn refuses(&self, crd: Crd) -> Option<String> {
        let checked = self.checked.read().ok()?;
        let mut gates = vec![crd];
        if self.policies {
            gates.push(Crd::NatsServerPolicy);
        }
        gates.into_iter().find_map(|c| match checked.get(&c) {
            None => Some(format!("CRD {} has not been checked yet", c.name())),
            Some(Ok(())) => None,
            Some(Err(why)) => Some(why.clone()),
        })
    }

    /// Whether every CRD needed is checked and up to date.
    pub fn all_current(&self) -> bool {
        let Ok(checked) = self.checked.read() else {
            return false;
        };
        self.needed()
            .iter()
            .all(|c| matches!(checked.get(c), Some(Ok(()))))
    }
}

/// Applies the CRDs this binary generates, by server-side apply under the operator's field
/// manager (`--apply-crds`, off by default): the CRDs must exist (the chart installs them), and
/// the operator may only patch these three by name. A failure is logged; the check that follows
/// says what is still missing.
pub async fn apply_crds(client: kube::Client) {
    use kube::api::{Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in Crd::ALL {
        let name = crd.name();
        let mut object = crd.needed();
        object.metadata.managed_fields = None;
        match api
            .patch(
                &name,
                &PatchParams::apply(crate::crd::MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
        {
            Ok(_) => tracing::info!(crd = %name, "applied the CRD this operator generates"),
            Err(e) => {
                tracing::error!(crd = %name, error = %e, "cannot apply the CRD; apply the operator's CRDs by hand")
            }
        }
    }
}

/// Checks the CRDs now and every `interval`: sets the gate, readiness (`outdated`), and on each
/// change says so: an error log line and a Warning Event on the CRD naming the missing fields
/// and the fix, or an info line when it is current again.
pub async fn keep_checking(
    client: kube::Client,
    gate: std::sync::Arc<SchemaGate>,
    health: std::sync::Arc<crate::http::Health>,
    recorder: Recorder,
    interval: Duration,
) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    loop {
        for crd in gate.needed() {
            let name = crd.name();
            let installed = match api.get_opt(&name).await {
                Ok(found) => found,
                Err(e) => {
                    // Cannot tell: keep what was decided (refused until a first answer).
                    tracing::warn!(crd = %name, error = %e, "cannot read the CRD; its kind stays as it was");
                    continue;
                }
            };
            let verdict = compare(crd, installed.as_ref());
            let before = gate.checked.read().ok().and_then(|c| c.get(&crd).cloned());
            if before.as_ref() != Some(&verdict) {
                match &verdict {
                    Err(why) => {
                        tracing::error!(crd = %name, "{why}");
                        if let Some(installed) = &installed {
                            let event = Event {
                                type_: EventType::Warning,
                                reason: "CrdOutdated".into(),
                                note: Some(why.clone()),
                                action: "CheckSchema".into(),
                                secondary: None,
                            };
                            if let Err(e) =
                                recorder.publish(&event, &installed.object_ref(&())).await
                            {
                                tracing::warn!(error = %e, "could not publish an Event");
                            }
                        }
                    }
                    Ok(()) => {
                        tracing::info!(crd = %name, "the CRD has every field this operator needs")
                    }
                }
                gate.set(crd, verdict);
            }
        }
        health.set_schema_current(gate.all_current());
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pruned(crd: Crd, path: &[&str]) -> CustomResourceDefinition {
        let mut installed = crd.needed();
        for version in &mut installed.spec.versions {
            let mut at = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
                .expect("a schema");
            let (last, parents) = path.split_last().expect("a path");
            for p in parents {
                at = at
                    .properties
                    .as_mut()
                    .and_then(|props| props.get_mut(*p))
                    .expect("the parent");
            }
            at.properties.as_mut().expect("properties").remove(*last);
        }
        installed
    }

    #[test]
    fn the_generated_crds_are_current() {
        for crd in Crd::ALL {
            assert_eq!(compare(crd, Some(&crd.needed())), Ok(()), "{crd:?}");
        }
    }

    #[test]
    fn a_pruned_field_is_named_with_the_fix() {
        let installed = pruned(Crd::KeyValueBucket, &["status", "plan"]);
        let why = compare(Crd::KeyValueBucket, Some(&installed)).unwrap_err();
        assert!(why.contains("lacks the field(s) status.plan"), "{why}");
        assert!(why.contains("apply the operator's CRDs first"), "{why}");
        let installed = pruned(Crd::NatsServerPolicy, &["spec", "requireTLS"]);
        let why = compare(Crd::NatsServerPolicy, Some(&installed)).unwrap_err();
        assert!(why.contains("spec.requireTLS"), "{why}");
        let why = compare(Crd::JetStreamStream, None).unwrap_err();
        assert!(why.contains("is not installed"), "{why}");
    }

    #[test]
    fn an_outdated_policy_crd_refuses_every_kind_while_policies_are_enforced() {
        let gate = SchemaGate::new(true);
        assert!(gate.refuses(Crd::KeyValueBucket).is_some(), "unchecked");
        gate.set(Crd::KeyValueBucket, Ok(()));
        gate.set(Crd::JetStreamStream, Ok(()));
        gate.set(Crd::NatsServerPolicy, Err("old".into()));
        assert_eq!(gate.refuses(Crd::KeyValueBucket).as_deref(), Some("old"));
        assert_eq!(gate.refuses(Crd::JetStreamStream).as_deref(), Some("old"));
        assert!(!gate.all_current());
        gate.set(Crd::NatsServerPolicy, Ok(()));
        assert_eq!(gate.refuses(Crd::KeyValueBucket), None);
        assert!(gate.all_current());
        // Without policies, their CRD gates nothing.
        let gate = SchemaGate::new(false);
        gate.set(Crd::KeyValueBucket, Ok(()));
        gate.set(Crd::JetStreamStream, Err("old".into()));
        assert_eq!(gate.refuses(Crd::KeyValueBucket), None);
        assert!(gate.refuses(Crd::JetStreamStream).is_some());
        assert!(!gate.all_current());
    }
}
