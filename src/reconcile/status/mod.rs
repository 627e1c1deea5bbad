//! The status step (pure): from what validation found and what NATS said, the KeyValueBucket's
//! spec and conditions, `Ready`'s reason, Stalled or Reconciling, the retry, the Events, and what
//! the Component should carry (summary annotations, finalizer). No client: every decision here is
//! a value, table-tested below.

use kube::runtime::events::EventType;

use super::audit::not_carried_out;
use super::execute::{BucketStep, Progress};
use super::index::Written;
use crate::crd::{BucketStatus, ConditionSpec, ConditionType, KeyValueBucketSpec};
use crate::failure::{Failure, Problem, Retry};
use crate::nats::bucket;
use crate::nats::stream::planned::Planned;
use crate::settings::DeletionPolicy;
use crate::validate::Validation;

mod written;

pub use written::{bucket_status, component_patch, events};

/// The finalizer that holds a Component with `deletion-policy: delete` until its bucket or
/// streams are deleted (named for buckets: it is persisted on objects, so it stays).
pub const FINALIZER: &str = "jetstreamkv.io/bucket";

/// The operator's own reasons, for conditions and Events (failures bring theirs: [`Failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Resolved,
    Connected,
    BucketFound,
    InSync,
    NotChecked,
    BucketManaged,
    BucketVerified,
    BucketMissing,
    NotAKeyValueBucket,
    BucketCreateConflict,
    ReplicasNotCurrent,
    DeletionPending,
    BucketCreated,
    BucketRecreated,
    BucketUpdated,
    BucketAdopted,
    ConfigDrift,
    BucketRetained,
    BucketDeleted,
    StreamFound,
    StreamManaged,
    StreamVerified,
    StreamMissing,
    StreamNotUsable,
    StreamCreateConflict,
    StreamOwnedElsewhere,
    StreamCreated,
    StreamRecreated,
    StreamUpdated,
    StreamRetained,
    StreamDeleted,
    Covered,
    NoSubjects,
    TopicsNotCovered,
    SubscriptionsUnreadable,
    DeadLetterSubscriptionUnreachable,
    AuditMode,
    AppPermissionDenied,
    ConsumerRecreated,
    UserMinted,
    UserRevoked,
    MintedUserNotRevoked,
    WorkloadsRestarted,
    HealRateLimited,
    HealFailed,
}

impl Reason {
    /// The CamelCase reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "Resolved",
            Self::Connected => "Connected",
            Self::BucketFound => "BucketFound",
            Self::InSync => "InSync",
            Self::NotChecked => "NotChecked",
            Self::BucketManaged => "BucketManaged",
            Self::BucketVerified => "BucketVerified",
            Self::BucketMissing => "BucketMissing",
            Self::NotAKeyValueBucket => "NotAKeyValueBucket",
            Self::BucketCreateConflict => "BucketCreateConflict",
            Self::ReplicasNotCurrent => "ReplicasNotCurrent",
            Self::DeletionPending => "DeletionPending",
            Self::BucketCreated => "BucketCreated",
            Self::BucketRecreated => "BucketRecreated",
            Self::BucketUpdated => "BucketUpdated",
            Self::BucketAdopted => "BucketAdopted",
            Self::ConfigDrift => "ConfigDrift",
            Self::BucketRetained => "BucketRetained",
            Self::BucketDeleted => "BucketDeleted",
            Self::StreamFound => "StreamFound",
            Self::StreamManaged => "StreamManaged",
            Self::StreamVerified => "StreamVerified",
            Self::StreamMissing => "StreamMissing",
            Self::StreamNotUsable => "StreamNotUsable",
            Self::StreamCreateConflict => "StreamCreateConflict",
            Self::StreamOwnedElsewhere => "StreamOwnedElsewhere",
            Self::StreamCreated => "StreamCreated",
            Self::StreamRecreated => "StreamRecreated",
            Self::StreamUpdated => "StreamUpdated",
            Self::StreamRetained => "StreamRetained",
            Self::StreamDeleted => "StreamDeleted",
            Self::Covered => "Covered",
            Self::NoSubjects => "NoSubjects",
            Self::TopicsNotCovered => "TopicsNotCovered",
            Self::SubscriptionsUnreadable => "SubscriptionsUnreadable",
            Self::DeadLetterSubscriptionUnreachable => "DeadLetterSubscriptionUnreachable",
            Self::AuditMode => "AuditMode",
            Self::AppPermissionDenied => "AppPermissionDenied",
            Self::ConsumerRecreated => "ConsumerRecreated",
            Self::UserMinted => "UserMinted",
            Self::UserRevoked => "UserRevoked",
            Self::MintedUserNotRevoked => "MintedUserNotRevoked",
            Self::WorkloadsRestarted => "WorkloadsRestarted",
            Self::HealRateLimited => "HealRateLimited",
            Self::HealFailed => "HealFailed",
        }
    }
}

/// An Event to publish on the Component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

impl Note {
    /// A Normal Event with one of the operator's reasons.
    pub fn normal(reason: Reason, note: String) -> Self {
        Self {
            type_: EventType::Normal,
            reason: reason.as_str().to_owned(),
            note,
        }
    }

    pub(crate) fn warning(reason: Reason, note: String) -> Self {
        Self {
            type_: EventType::Warning,
            reason: reason.as_str().to_owned(),
            note,
        }
    }
}

/// What one reconcile decided, before anything is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The KeyValueBucket's spec: what the operator understood (never a secret).
    pub spec: KeyValueBucketSpec,
    /// Ready first, then the detail conditions, then Stalled or Reconciling after a failure.
    pub conditions: Vec<ConditionSpec>,
    /// Facts about the bucket.
    pub bucket: Option<BucketStatus>,
    /// Events for what was done (Ready transitions are added when written).
    pub events: Vec<Note>,
    /// When to look again.
    pub retry: Retry,
    /// Whether the Component should carry our finalizer; None when unknown (bad annotations).
    pub wants_finalizer: Option<bool>,
    /// Audit mode: what enforce mode would do (empty in enforce mode).
    pub plan: Vec<Planned>,
}

impl Outcome {
    /// The Ready condition.
    pub fn ready(&self) -> Option<&ConditionSpec> {
        self.conditions
            .iter()
            .find(|c| c.type_ == ConditionType::Ready)
    }

    /// Whether the credentials were resolved (else the connection made with older ones is not
    /// this Component's any more).
    pub fn credentials_resolved(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == ConditionType::CredentialsResolved && c.status == Some(true))
    }
}

/// A reconcile's conditions as they are decided: each step passes, or the first failure ends it.
struct Decision {
    conditions: Vec<ConditionSpec>,
    spec: KeyValueBucketSpec,
    bucket: Option<BucketStatus>,
    events: Vec<Note>,
    wants_finalizer: Option<bool>,
    plan: Vec<Planned>,
    /// A right the Component's own user lacks: the bucket is there, but not for daprd.
    app_denied: Option<Problem>,
}

impl Decision {
    fn new(name: &str, previous: Option<&Written>) -> Self {
        Self {
            conditions: Vec::new(),
            spec: KeyValueBucketSpec {
                component: name.to_owned(),
                ..Default::default()
            },
            bucket: previous.and_then(|p| p.status.bucket.clone()),
            events: Vec::new(),
            wants_finalizer: None,
            plan: Vec::new(),
            app_denied: None,
        }
    }

    fn pass(&mut self, type_: ConditionType, reason: Reason, message: impl Into<String>) {
        self.conditions.push(ConditionSpec {
            type_,
            status: Some(true),
            reason: reason.as_str().to_owned(),
            message: message.into(),
        });
    }

    /// Ends with `problem`: its condition False, the ones not reached Unknown, Ready False with
    /// its reason, and Stalled or Reconciling.
    fn fail(self, problem: Problem) -> Outcome {
        let retry = problem.retry;
        let conditions = close(&self.conditions, &ConditionType::DETAIL, Err(problem));
        self.into_outcome(conditions, retry)
    }

    /// Ends well: Ready True with `reason`.
    fn succeed(self, reason: Reason, message: String) -> Outcome {
        let conditions = close(
            &self.conditions,
            &ConditionType::DETAIL,
            Ok((reason.as_str(), message)),
        );
        self.into_outcome(conditions, Retry::Resync)
    }

    fn into_outcome(self, conditions: Vec<ConditionSpec>, retry: Retry) -> Outcome {
        Outcome {
            spec: self.spec,
            conditions,
            bucket: self.bucket,
            events: self.events,
            retry,
            wants_finalizer: self.wants_finalizer,
            plan: self.plan,
        }
    }
}

/// The conditions of a reconcile from the detail conditions decided so far (`passed`, in the
/// order of `detail`, the resource's steps) and its end: Ready True with a reason and message,
/// or a problem (its condition False, the steps not reached Unknown, Ready False with its reason,
/// then Stalled or Reconciling). Shared by every resource the operator writes.
pub fn close(
    passed: &[ConditionSpec],
    detail: &[ConditionType],
    end: Result<(&str, String), Problem>,
) -> Vec<ConditionSpec> {
    let mut decided = passed.to_vec();
    let (ready, unknown, kstatus) = match end {
        Ok((reason, message)) => (
            ConditionSpec {
                type_: ConditionType::Ready,
                status: Some(true),
                reason: reason.to_owned(),
                message,
            },
            "not checked".to_owned(),
            None,
        ),
        Err(problem) => {
            // The failure is what its condition says, whatever passed before it.
            decided.retain(|c| c.type_ != problem.condition);
            decided.push(ConditionSpec {
                type_: problem.condition,
                status: Some(false),
                reason: problem.reason.clone(),
                message: problem.message.clone(),
            });
            let kstatus = if problem.stalled {
                ConditionType::Stalled
            } else {
                ConditionType::Reconciling
            };
            (
                ConditionSpec {
                    type_: ConditionType::Ready,
                    status: Some(false),
                    reason: problem.reason.clone(),
                    message: problem.message.clone(),
                },
                format!(
                    "not checked while {} is False ({})",
                    problem.condition, problem.reason
                ),
                Some(ConditionSpec {
                    type_: kstatus,
                    status: Some(true),
                    reason: problem.reason,
                    message: problem.message,
                }),
            )
        }
    };
    let mut conditions = vec![ready];
    conditions.extend(detail.iter().map(|type_| {
        decided
            .iter()
            .find(|c| c.type_ == *type_)
            .cloned()
            .unwrap_or_else(|| ConditionSpec {
                type_: *type_,
                status: None,
                reason: Reason::NotChecked.as_str().to_owned(),
                message: unknown.clone(),
            })
    }));
    conditions.extend(kstatus);
    conditions
}

/// Whether the operator managed the bucket `bucket` when it last looked (facts about another
/// bucket, of a Component renamed to a new one, do not count).
pub fn previously_managed(previous: Option<&Written>, bucket: &str) -> Option<bool> {
    // `bucket` as shown (`<Secret name, key>` when it came from a Secret), like the facts.
    let stream = bucket::stream_name(bucket);
    previous
        .and_then(|p| p.status.bucket.as_ref())
        .filter(|b| b.stream == stream)
        .map(|b| b.managed)
}

/// The KeyValueBucket's spec: what the operator understood of the Component `name`, up to the
/// first problem (never a secret).
pub fn understood(name: &str, validation: &Validation) -> KeyValueBucketSpec {
    let mut spec = KeyValueBucketSpec {
        component: name.to_owned(),
        ..Default::default()
    };
    if let Some(settings) = &validation.settings {
        spec.config = Some(bucket::desired_config(settings));
        spec.on_existing = Some(settings.on_existing.as_str().to_owned());
        spec.deletion_policy = Some(settings.deletion_policy.as_str().to_owned());
    }
    if let Some(store) = &validation.config {
        spec.bucket = Some(store.shown_bucket.clone());
        spec.servers = store.redacted_servers.clone();
        spec.auth = Some(store.auth.kind().to_owned());
    }
    spec
}

/// Decides the outcome of a reconcile of the Component `name` from what validation found and,
/// when it passed, what NATS said.
pub fn decide(
    name: &str,
    previous: Option<&Written>,
    validation: &Validation,
    progress: Option<&Progress>,
) -> Outcome {
    decide_with_app(name, previous, validation, progress, None)
}

/// [`decide`], with what the check of the Component's own rights found (see
/// [`crate::nats::app_rights`]): a bucket that is there but that daprd could not use is not
/// Ready (`BucketAvailable=False`, `AppPermissionDenied`, naming the subject).
pub fn decide_with_app(
    name: &str,
    previous: Option<&Written>,
    validation: &Validation,
    progress: Option<&Progress>,
    app: Option<&crate::nats::app_rights::Denied>,
) -> Outcome {
    let mut d = Decision::new(name, previous);
    d.app_denied = app.map(app_denied);
    d.spec = understood(name, validation);
    let (Some((store, settings)), Some(progress)) = (validation.valid(), progress) else {
        return d.fail(first_problem(&validation.findings));
    };
    // A minted user is revoked (or said not to be) when its Component is deleted.
    d.wants_finalizer = Some(
        settings.deletion_policy == DeletionPolicy::Delete
            || settings.credentials == crate::settings::CredentialsMode::Mint,
    );
    d.pass(
        ConditionType::CredentialsResolved,
        Reason::Resolved,
        format!(
            "metadata and credentials resolved (auth: {})",
            store.auth.kind()
        ),
    );
    let bucket_name = &store.shown_bucket;
    let stream = bucket::stream_name(bucket_name);
    d.bucket = d.bucket.take().filter(|b| b.stream == stream);
    let (version, step) = match progress {
        Progress::NotConnected(e) => return d.fail(Problem::of(ConditionType::Connected, e)),
        Progress::Connected {
            version,
            step,
            planned,
        } => {
            d.plan = planned.clone();
            (version, step)
        }
    };
    d.pass(
        ConditionType::Connected,
        Reason::Connected,
        format!(
            "connected to NATS {version} at {} with JetStream",
            store.redacted_servers.join(",")
        ),
    );
    let previous_config = previous.and_then(|p| p.spec.config.as_ref());
    let drift = previous_config == d.spec.config.as_ref();
    bucket_step(d, bucket_name, &stream, step, drift)
}

/// The bucket part of [`decide`]: `drift` tells whether the desired settings are the ones of
/// last time (so a bucket that differs was changed behind the operator's back).
fn bucket_step(
    mut d: Decision,
    name: &str,
    stream: &str,
    step: &BucketStep,
    drift: bool,
) -> Outcome {
    use ConditionType::{BucketAvailable, ConfigSynced};
    let found = |how: &str| format!("bucket {name} exists (stream {stream}){how}");
    match step {
        BucketStep::Created { facts } => created(d, name, stream, facts),
        BucketStep::CreateFailed(e) => d.fail(Problem::of(BucketAvailable, e)),
        BucketStep::Missing => d.fail(missing(name, stream)),
        BucketStep::NotKeyValue(problem) => d.fail(Problem::new(
            BucketAvailable,
            Reason::NotAKeyValueBucket.as_str(),
            problem.clone(),
            Retry::Resync,
        )),
        BucketStep::InSync { facts, managed } => {
            let how = if *managed {
                "; managed by the operator"
            } else {
                "; verified; not managed by the operator"
            };
            d.pass(BucketAvailable, Reason::BucketFound, found(how));
            d.pass(ConfigSynced, Reason::InSync, IN_SYNC);
            d.bucket = facts.clone();
            ready(d, name)
        }
        BucketStep::Updated {
            facts,
            changes,
            adopt,
        } => {
            d.pass(BucketAvailable, Reason::BucketFound, found(MANAGED));
            d.events.push(update_event(name, changes, *adopt, drift));
            // What changed is in the Event; the condition stays as it will read at the next
            // resync, so that resync writes nothing.
            d.pass(ConfigSynced, Reason::InSync, IN_SYNC);
            d.bucket = facts.clone();
            ready(d, name)
        }
        BucketStep::UpdateFailed {
            facts,
            changes,
            error,
        } => {
            d.pass(BucketAvailable, Reason::BucketFound, found(MANAGED));
            d.bucket = facts.clone();
            d.fail(Problem::new(
                ConfigSynced,
                error.reason(),
                format!("updating {changes} failed: {error}"),
                Retry::Backoff,
            ))
        }
        BucketStep::Blocked {
            facts,
            reason,
            changes,
            why,
        } => {
            d.pass(BucketAvailable, Reason::BucketFound, found(""));
            d.bucket = facts.clone();
            d.fail(Problem::new(
                ConfigSynced,
                reason.reason(),
                blocked_message(*reason, name, changes, why),
                reason.retry(),
            ))
        }
        BucketStep::Unavailable { facts, error } => {
            d.bucket = facts.clone();
            d.fail(Problem::of(BucketAvailable, error))
        }
        BucketStep::ScaleDownWaits {
            facts,
            changes,
            behind,
        } => {
            d.pass(BucketAvailable, Reason::BucketFound, found(MANAGED));
            d.bucket = facts.clone();
            d.fail(scale_down_waits(name, changes, behind))
        }
        BucketStep::NotCarriedOut { facts, planned } => {
            d.bucket = facts.clone();
            if facts.is_none() {
                return d.fail(not_carried_out(BucketAvailable, planned));
            }
            d.pass(BucketAvailable, Reason::BucketFound, found(""));
            d.fail(not_carried_out(ConfigSynced, planned))
        }
        BucketStep::CreateConflict => d.fail(Problem::new(
            BucketAvailable,
            Reason::BucketCreateConflict.as_str(),
            format!("bucket {name} kept changing while it was being created; retrying"),
            Retry::Backoff,
        )),
    }
}

/// A bucket the operator only verified is gone: it is not created again behind the user's back.
fn missing(name: &str, stream: &str) -> Problem {
    Problem::new(
        ConditionType::BucketAvailable,
        Reason::BucketMissing.as_str(),
        format!(
            "bucket {name} (stream {stream}) no longer exists; the operator only verified it, so it does not create it again: recreate it, or set jetstreamkv.io/on-existing: adopt and re-create the Component"
        ),
        Retry::Backoff,
    )
}

/// A scale-down waits for every replica to be current: NATS keeps only the leader's copy.
fn scale_down_waits(name: &str, changes: &str, behind: &str) -> Problem {
    Problem::new(
        ConditionType::ConfigSynced,
        Reason::ReplicasNotCurrent.as_str(),
        format!(
            "{changes} of bucket {name} waits until every replica is current ({behind}): NATS keeps only the leader's copy when it scales down; retrying"
        ),
        Retry::Backoff,
    )
}

const MANAGED: &str = "; managed by the operator";
const IN_SYNC: &str = "bucket settings match the Component";

/// Created (or created again, after a deletion behind the operator's back).
fn created(mut d: Decision, name: &str, stream: &str, facts: &Option<BucketStatus>) -> Outcome {
    let recreated = d.bucket.as_ref().map(|b| b.managed) == Some(true);
    d.events.push(if recreated {
        Note::warning(
            Reason::BucketRecreated,
            format!("bucket {name} was deleted outside the operator; created it again (its data was lost)"),
        )
    } else {
        Note::normal(
            Reason::BucketCreated,
            format!("created bucket {name} (stream {stream})"),
        )
    });
    d.pass(
        ConditionType::BucketAvailable,
        Reason::BucketFound,
        format!("bucket {name} exists (stream {stream}){MANAGED}"),
    );
    d.pass(ConditionType::ConfigSynced, Reason::InSync, IN_SYNC);
    d.bucket = facts.clone();
    ready(d, name)
}

/// The Event of an update: drift restored, a bucket adopted, or new settings applied.
fn update_event(name: &str, changes: &str, adopt: bool, drift: bool) -> Note {
    if !adopt && drift {
        Note::warning(
            Reason::ConfigDrift,
            format!("bucket {name} was changed outside the operator; restored {changes}"),
        )
    } else if adopt {
        Note::normal(
            Reason::BucketAdopted,
            format!("adopted bucket {name} and applied {changes}"),
        )
    } else {
        Note::normal(
            Reason::BucketUpdated,
            format!("updated bucket {name}: {changes}"),
        )
    }
}

fn blocked_message(reason: bucket::BlockReason, name: &str, what: &str, why: &str) -> String {
    match reason {
        bucket::BlockReason::ConfigMismatch => format!(
            "bucket {name} was not created by the operator and differs from the Component: {what}; the operator only verifies it: change the annotations, fix the bucket, or set jetstreamkv.io/on-existing: adopt"
        ),
        bucket::BlockReason::DataLossRefused => format!(
            "refused to apply {what} to bucket {name}: it would discard stored data; set jetstreamkv.io/allow-data-loss: \"true\" to apply it"
        ),
        bucket::BlockReason::ImmutableFieldChanged => format!(
            "cannot change {what} of bucket {name}: NATS cannot change it on an existing bucket (storage is fixed when it is created; per-key TTL, once on, stays on); revert the annotation, or move the data to a new bucket"
        ),
        bucket::BlockReason::UnsupportedByServer => {
            format!("cannot apply {what} to bucket {name}: {why}")
        }
        bucket::BlockReason::OwnedElsewhere => format!(
            "bucket {name} was created by the operator for another Component, so this one only verifies it: it is never adopted, changed, purged or deleted on this Component's behalf{}; use a bucket of this Component's own, or remove jetstreamkv.io/on-existing: adopt and the differing bucket annotations",
            if what.is_empty() {
                String::new()
            } else {
                format!(" (differs: {what})")
            }
        ),
    }
}

/// The problem of a right the Component's own user lacks: someone must grant it (Stalled),
/// looked at again at every resync.
pub(crate) fn app_denied(denied: &crate::nats::app_rights::Denied) -> Problem {
    Problem::new(
        ConditionType::BucketAvailable,
        Reason::AppPermissionDenied.as_str(),
        denied.to_string(),
        Retry::Resync,
    )
}

/// Ready True: managed, or only verified; unless the Component's own user lacks a right.
fn ready(mut d: Decision, name: &str) -> Outcome {
    if let Some(problem) = d.app_denied.take() {
        return d.fail(problem);
    }
    if d.bucket.as_ref().is_some_and(|b| b.managed) {
        let message = format!("bucket {name} is ready and managed by the operator");
        d.succeed(Reason::BucketManaged, message)
    } else {
        let message = format!(
            "bucket {name} is ready; it was created outside the operator and is only verified"
        );
        d.succeed(Reason::BucketVerified, message)
    }
}

/// A Component being deleted whose bucket cannot be deleted yet: keep the finalizer and the
/// spec last written, and say why the deletion waits.
pub fn deletion_pending(name: &str, previous: Option<&Written>, failure: &Problem) -> Outcome {
    let mut d = Decision::new(name, previous);
    if let Some(p) = previous {
        d.spec = p.spec.clone();
    }
    d.wants_finalizer = Some(true);
    d.fail(Problem::new(
        failure.condition,
        Reason::DeletionPending.as_str(),
        deletion_pending_message("bucket", failure),
        Retry::Backoff,
    ))
}

pub(crate) fn deletion_pending_message(what: &str, failure: &Problem) -> String {
    format!(
        "the Component is being deleted with jetstreamkv.io/deletion-policy: delete, and its {what} cannot be deleted yet: {} ({}); it is retried. Remove the deletion-policy annotation to keep the {what} and let the deletion finish",
        failure.message, failure.reason
    )
}

/// The problem that stops a reconcile after validation: the first one found.
pub fn first_problem(findings: &crate::validate::ComponentFindings) -> Problem {
    findings.problems.first().cloned().unwrap_or_else(|| {
        Problem::new(
            ConditionType::CredentialsResolved,
            Reason::NotChecked.as_str(),
            "the Component was not validated",
            Retry::Backoff,
        )
    })
}

#[cfg(test)]
mod tests;
