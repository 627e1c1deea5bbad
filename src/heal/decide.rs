//! Which workloads a Component's turn to Ready restarts (pure): the Deployments and
//! StatefulSets of its namespace that load it (Dapr-enabled, and in its `scopes` when it has
//! any), not already restarted for this transition nor lately, whose pods are crash-looping or
//! not Ready; at most as many as the rate limit lets through. Every decision is a value, tested
//! below without a client.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::core::{Selector, SelectorExt as _};

/// Pod template annotation that makes Dapr's injector add the sidecar.
pub const DAPR_ENABLED: &str = "dapr.io/enabled";
/// Pod template annotation naming the app, which a Component's `scopes` list.
pub const DAPR_APP_ID: &str = "dapr.io/app-id";
/// Pod template annotation `kubectl rollout restart` sets: a change of the template, so the
/// workload's controller replaces its pods.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Workload annotation: the transition it was last restarted for (see [`Transition::key`]).
pub const HEALED_FOR: &str = "jetstreamkv.io/healed-for";
/// Workload annotation: when the operator last restarted it (RFC 3339).
pub const HEALED_AT: &str = "jetstreamkv.io/healed-at";

/// A Component's object turning Ready: which one, and when (its Ready condition's
/// `lastTransitionTime`, which changes only when Ready flips).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The Component's uid (its KeyValueBucket or JetStreamStream is one per Component).
    pub uid: String,
    /// Ready's `lastTransitionTime`, as written (RFC 3339).
    pub since: String,
}

impl Transition {
    /// What a workload restarted for this transition records ([`HEALED_FOR`]): the same
    /// transition seen again (a retry, another leader, a restart) finds it and does nothing.
    pub fn key(&self) -> String {
        format!("{}@{}", self.uid, self.since)
    }
}

/// The two kinds of workload the operator restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
        }
    }
}

/// What the decision needs of a Deployment or StatefulSet.
#[derive(Clone, Debug)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    /// Its `resourceVersion`: the restart is written only over this version.
    pub resource_version: Option<String>,
    /// Its pod template's annotations.
    pub template_annotations: BTreeMap<String, String>,
    /// Its own annotations ([`HEALED_FOR`], [`HEALED_AT`]).
    pub annotations: BTreeMap<String, String>,
    /// Its pod selector; None when it cannot be read (then no pod is its).
    pub selector: Option<Selector>,
    /// Being deleted.
    pub deleting: bool,
}

impl Workload {
    pub fn of_deployment(d: &Deployment) -> Option<Workload> {
        let spec = d.spec.as_ref()?;
        Some(Self::new(
            WorkloadKind::Deployment,
            &d.metadata,
            &spec.template,
            &spec.selector,
        ))
    }

    pub fn of_stateful_set(s: &StatefulSet) -> Option<Workload> {
        let spec = s.spec.as_ref()?;
        Some(Self::new(
            WorkloadKind::StatefulSet,
            &s.metadata,
            &spec.template,
            &spec.selector,
        ))
    }

    fn new(
        kind: WorkloadKind,
        meta: &ObjectMeta,
        template: &PodTemplateSpec,
        selector: &LabelSelector,
    ) -> Workload {
        Workload {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
            template_annotations: template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            // An empty selector would select every pod of the namespace: the API server refuses
            // one on these kinds, and so does this.
            selector: Selector::try_from(selector.clone())
                .ok()
                .filter(|s| !s.selects_all()),
            deleting: meta.deletion_timestamp.is_some(),
        }
    }

    /// `Deployment/name`.
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }

    /// Whether Dapr injects its sidecar into its pods: `dapr.io/enabled` truthy as Dapr reads
    /// it (`true`, `yes`, `y`, `on`, `1`, any case).
    pub fn dapr_enabled(&self) -> bool {
        self.template_annotations
            .get(DAPR_ENABLED)
            .is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "true" | "yes" | "y" | "on" | "1"
                )
            })
    }

    /// Its Dapr app id (`dapr.io/app-id`), when set.
    pub fn app_id(&self) -> Option<&str> {
        self.template_annotations
            .get(DAPR_APP_ID)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// When the operator last restarted it, in seconds.
    fn healed_at(&self) -> Option<i64> {
        self.annotations
            .get(HEALED_AT)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
    }
}

/// Why a workload of the namespace is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Its pods have no Dapr sidecar: it does not load Components.
    NotDaprEnabled,
    /// The Component has scopes and its app id is not one of them (or it has none).
    OutOfScope,
    /// Already restarted for this transition.
    AlreadyRestarted,
    /// Restarted by the operator less than the cool-down ago (for another transition).
    CoolingDown,
    /// Being deleted.
    Deleting,
    /// Every pod of it is Ready (or it has none): nothing to heal.
    Healthy,
    /// Over the rate limit: the kubelet's back-off restarts it.
    RateLimited,
}

/// Whether a workload loads the Component: Dapr-enabled, and in `scopes` when there are any
/// (Dapr's rule: no scopes means every app).
pub fn loads(workload: &Workload, scopes: &[String]) -> Result<(), Skip> {
    if !workload.dapr_enabled() {
        return Err(Skip::NotDaprEnabled);
    }
    if scopes.is_empty() {
        return Ok(());
    }
    match workload.app_id() {
        Some(id) if scopes.iter().any(|s| s.trim() == id) => Ok(()),
        _ => Err(Skip::OutOfScope),
    }
}

/// The workloads that load the Component and may be restarted for `transition` (not yet for
/// it, not lately, not being deleted); their pods are looked at next, by [`unhealthy`]. Every
/// other workload is returned with why it is left alone.
pub fn candidates<'a>(
    transition: &Transition,
    scopes: &[String],
    workloads: &'a [Workload],
    now: i64,
    cooldown_seconds: i64,
) -> (Vec<&'a Workload>, Vec<(&'a Workload, Skip)>) {
    let key = transition.key();
    let mut chosen = Vec::new();
    let mut skipped = Vec::new();
    for w in workloads {
        let verdict = loads(w, scopes).and_then(|()| {
            if w.deleting {
                Err(Skip::Deleting)
            } else if w.annotations.get(HEALED_FOR) == Some(&key) {
                Err(Skip::AlreadyRestarted)
            } else if w
                .healed_at()
                .is_some_and(|at| now - at < cooldown_seconds && now >= at)
            {
                Err(Skip::CoolingDown)
            } else {
                Ok(())
            }
        });
        match verdict {
            Ok(()) => chosen.push(w),
            Err(why) => skipped.push((w, why)),
        }
    }
    (chosen, skipped)
}

/// How a pod of a workload is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodHealth {
    Ready,
    /// A container waits in CrashLoopBackOff (the kubelet's back-off between restarts).
    CrashLooping,
    /// Not Ready (starting, or failing its readiness probe).
    NotReady,
}

/// A pod as the decision sees it: its labels (which workload it is of) and its health.
#[derive(Clone, Debug)]
pub struct PodFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub health: PodHealth,
    /// Being deleted: a pod on its way out says nothing of the workload.
    pub deleting: bool,
    /// When it was created (seconds): a pod made after the transition started with its bucket
    /// there, and is only starting.
    pub created: Option<i64>,
}

impl PodFacts {
    pub fn of(pod: &Pod) -> PodFacts {
        let status = pod.status.as_ref();
        let statuses = status
            .into_iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
            .collect::<Vec<_>>();
        let crash_looping = statuses.iter().any(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("CrashLoopBackOff")
        });
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        PodFacts {
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            health: if crash_looping {
                PodHealth::CrashLooping
            } else if ready {
                PodHealth::Ready
            } else {
                PodHealth::NotReady
            },
            deleting: pod.metadata.deletion_timestamp.is_some(),
            created: pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
        }
    }
}

/// Why a workload needs its restart: its first pod crash-looping, else its first not Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unhealthy {
    pub pod: String,
    pub health: PodHealth,
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.health {
            PodHealth::CrashLooping => "crash-looping",
            PodHealth::NotReady => "not Ready",
            PodHealth::Ready => "Ready",
        };
        write!(f, "pod {} {how}", self.pod)
    }
}

/// Whether a workload's pods (those its selector matches, not being deleted, made before the
/// transition at `since`, in seconds: a later one started with its bucket there) are
/// crash-looping or not Ready.
pub fn unhealthy(workload: &Workload, pods: &[PodFacts], since: i64) -> Option<Unhealthy> {
    let selector = workload.selector.as_ref()?;
    let mine = pods.iter().filter(|p| {
        !p.deleting && selector.matches(&p.labels) && p.created.is_none_or(|c| c <= since)
    });
    let mut not_ready = None;
    for pod in mine {
        match pod.health {
            PodHealth::CrashLooping => {
                return Some(Unhealthy {
                    pod: pod.name.clone(),
                    health: PodHealth::CrashLooping,
                });
            }
            PodHealth::NotReady if not_ready.is_none() => {
                not_ready = Some(Unhealthy {
                    pod: pod.name.clone(),
                    health: PodHealth::NotReady,
                })
            }
            _ => {}
        }
    }
    not_ready
}

/// Restarts let through per minute, over every Component: a token bucket holding up to
/// `per_minute` tokens, refilled continuously. Time is passed in (seconds, any origin).
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_minute: u32,
    tokens: f64,
    last: Option<f64>,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            tokens: f64::from(per_minute),
            last: None,
        }
    }

    /// Takes one restart's token at `now`; false when none is left.
    pub fn take(&mut self, now: f64) -> bool {
        let capacity = f64::from(self.per_minute);
        if let Some(last) = self.last {
            let elapsed = (now - last).max(0.0);
            self.tokens = (self.tokens + elapsed * capacity / 60.0).min(capacity);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A workload to restart, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub kind: WorkloadKind,
    pub name: String,
    pub resource_version: Option<String>,
    pub why: Unhealthy,
}

/// What a transition does: the restarts, and the workloads that loaded the Component but were
/// left alone, with why (those that do not load it are not listed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub restart: Vec<Restart>,
    pub left: Vec<(String, Skip)>,
}

/// The plan for `transition`: the candidates ([`candidates`]) whose pods are unhealthy, in
/// name order, as long as `limit` lets them through.
pub fn plan(
    transition: &Transition,
    scopes: &[String],
    workloads: &[Workload],
    pods: &[PodFacts],
    now: i64,
    cooldown_seconds: i64,
    mut limit: impl FnMut() -> bool,
) -> Plan {
    let (mut chosen, skipped) = candidates(transition, scopes, workloads, now, cooldown_seconds);
    // The transition's time; unreadable, every pod counts.
    let since = transition
        .since
        .parse::<jiff::Timestamp>()
        .map_or(i64::MAX, |t| t.as_second());
    chosen.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let mut plan = Plan {
        restart: Vec::new(),
        left: skipped
            .into_iter()
            .filter(|(_, why)| !matches!(why, Skip::NotDaprEnabled | Skip::OutOfScope))
            .map(|(w, why)| (w.display(), why))
            .collect(),
    };
    for w in chosen {
        match unhealthy(w, pods, since) {
            None => plan.left.push((w.display(), Skip::Healthy)),
            Some(_) if !limit() => plan.left.push((w.display(), Skip::RateLimited)),
            Some(why) => plan.restart.push(Restart {
                kind: w.kind,
                name: w.name.clone(),
                resource_version: w.resource_version.clone(),
                why,
            }),
        }
    }
    plan
}

#[cfg(test)]
mod tests;
