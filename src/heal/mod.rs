//! Heal (opt-in, `--heal`): when a Component's KeyValueBucket or JetStreamStream turns Ready
//! after not being Ready, the Deployments and StatefulSets of its namespace that load the
//! Component and whose pods are crash-looping or not Ready are rolled out once, as `kubectl
//! rollout restart` does. Without it, a sidecar that died for want of its bucket waits for the
//! kubelet's back-off (up to 5 minutes), since Dapr never re-initialises a Component that did not
//! change.
//!
//! Which workloads is decided in [`decide`] (pure); this module reads the namespace's
//! workloads and pods, writes the restarts and tells the Component. It runs in the reconcile
//! that writes the transition, so only the leader heals. Each restart records the transition on
//! the workload ([`decide::HEALED_FOR`]) and is written over the workload's `resourceVersion`:
//! the same transition seen again (a retry, a restart of the operator, another leader) restarts
//! nothing twice.

pub mod decide;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::crd::MANAGER;
use crate::dapr::Component;
use crate::reconcile::Context;
use crate::reconcile::status::{Note, Reason};
use decide::{PodFacts, RateLimit, Restart, Skip, Transition, Workload, WorkloadKind};

/// Heal's settings, from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Restarts let through per minute, over every Component.
    pub max_per_minute: u32,
    /// A workload the operator restarted is not restarted again (for another transition) before
    /// this has passed.
    pub cooldown: Duration,
}

/// Heal's state, shared by every scope: the settings and the rate limit.
pub struct Healer {
    settings: Settings,
    limit: Mutex<RateLimit>,
    started: Instant,
}

impl Healer {
    pub fn new(settings: Settings) -> Healer {
        Healer {
            settings,
            limit: Mutex::new(RateLimit::new(settings.max_per_minute)),
            started: Instant::now(),
        }
    }

    fn take(&self) -> bool {
        let now = self.started.elapsed().as_secs_f64();
        self.limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(now)
    }
}

/// The Component's object (`kind`, a KeyValueBucket or JetStreamStream) turned Ready at
/// `since` (its Ready condition's `lastTransitionTime`): restart the workloads that load the
/// Component and are not well. Failures are logged and told on the Component, never fatal.
pub async fn on_ready(
    ctx: &Context,
    healer: &Healer,
    component: &Component,
    kind: &str,
    since: &str,
) {
    let transition = Transition {
        uid: component.uid().unwrap_or_default(),
        since: since.to_string(),
    };
    match heal(ctx, healer, component, &transition).await {
        Ok(Healed {
            restarted,
            limited,
            failed,
        }) => {
            let what = format!("{kind} {} turned Ready", component.name_any());
            if !restarted.is_empty() {
                let list = restarted
                    .iter()
                    .map(|r| format!("{}/{} ({})", r.kind.as_str(), r.name, r.why))
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::info!(restarted = %list, "{what}: rolled out the workloads that load it");
                crate::reconcile::report::publish(
                    ctx,
                    component,
                    Note::normal(
                        Reason::WorkloadsRestarted,
                        format!("{what}: restarted {list}, as kubectl rollout restart does"),
                    ),
                )
                .await;
            }
            if !limited.is_empty() {
                let list = limited.join(", ");
                crate::reconcile::report::publish(
                    ctx,
                    component,
                    Note::warning(
                        Reason::HealRateLimited,
                        format!(
                            "{what}, but restarting {list} would pass the operator's limit of {} restarts a minute (--heal-max-per-minute): the kubelet's back-off restarts them, or run kubectl rollout restart",
                            healer.settings.max_per_minute
                        ),
                    ),
                )
                .await;
            }
            if !failed.is_empty() {
                let list = failed
                    .iter()
                    .map(|(w, e)| format!("{w}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                ctx.metrics.api_write_failed();
                tracing::warn!(failed = %list, "{what}: could not restart some workloads");
                crate::reconcile::report::publish(
                    ctx,
                    component,
                    Note::warning(
                        Reason::HealFailed,
                        format!("{what}, but restarting failed: {list}. Check the operator's RBAC (heal.enabled in the chart), or run kubectl rollout restart"),
                    ),
                )
                .await;
            }
        }
        Err(e) => {
            ctx.metrics.api_write_failed();
            tracing::warn!(error = %e, "could not heal the workloads that load the Component");
            crate::reconcile::report::publish(
                ctx,
                component,
                Note::warning(
                    Reason::HealFailed,
                    format!(
                        "{kind} {} turned Ready, but the workloads that load it could not be restarted: {e}. Check the operator's RBAC (heal.enabled in the chart), or run kubectl rollout restart",
                        component.name_any()
                    ),
                ),
            )
            .await;
        }
    }
}

/// What a transition did.
#[derive(Default)]
struct Healed {
    restarted: Vec<Restart>,
    /// Left to the kubelet by the rate limit.
    limited: Vec<String>,
    /// Whose restart failed, and why.
    failed: Vec<(String, kube::Error)>,
}

/// Reads, decides, writes. Fails only when the workloads or pods cannot be read.
async fn heal(
    ctx: &Context,
    healer: &Healer,
    component: &Component,
    transition: &Transition,
) -> Result<Healed, kube::Error> {
    let ns = component.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let mut workloads: Vec<Workload> = deployments
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(Workload::of_deployment)
        .collect();
    workloads.extend(
        stateful_sets
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter_map(Workload::of_stateful_set),
    );
    let now = jiff::Timestamp::now();
    let cooldown = i64::try_from(healer.settings.cooldown.as_secs()).unwrap_or(i64::MAX);
    let (candidates, _) = decide::candidates(
        transition,
        &component.scopes,
        &workloads,
        now.as_second(),
        cooldown,
    );
    if candidates.is_empty() {
        return Ok(Healed::default());
    }
    // Their pods: one list of the namespace's, matched by each workload's selector.
    let pods: Vec<PodFacts> = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(PodFacts::of)
        .collect();
    let plan = decide::plan(
        transition,
        &component.scopes,
        &workloads,
        &pods,
        now.as_second(),
        cooldown,
        || healer.take(),
    );
    let mut healed = Healed {
        limited: plan
            .left
            .iter()
            .filter(|(_, why)| *why == Skip::RateLimited)
            .map(|(name, _)| name.clone())
            .collect(),
        ..Healed::default()
    };
    let stamp = now.round(jiff::Unit::Second).unwrap_or(now).to_string();
    for restart in plan.restart {
        // A merge patch as kubectl's, over the version read: a workload changed since (another
        // leader restarted it, a person edited it) is left alone.
        let patch = json!({
            "metadata": {
                "resourceVersion": restart.resource_version,
                "annotations": {
                    decide::HEALED_FOR: transition.key(),
                    decide::HEALED_AT: stamp,
                },
            },
            "spec": {"template": {"metadata": {"annotations": {decide::RESTARTED_AT: stamp}}}},
        });
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        let written = match restart.kind {
            WorkloadKind::Deployment => deployments
                .patch(&restart.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            WorkloadKind::StatefulSet => stateful_sets
                .patch(&restart.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        match written {
            Ok(()) => {
                ctx.metrics
                    .api_write(&format!("restart-{}", restart.kind.as_str().to_lowercase()));
                healed.restarted.push(restart);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::info!(workload = %restart.name, "changed since it was read: not restarted");
            }
            Err(e) => healed
                .failed
                .push((format!("{}/{}", restart.kind.as_str(), restart.name), e)),
        }
    }
    Ok(healed)
}
