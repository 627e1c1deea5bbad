//! The status step of a `pubsub.jetstream` Component (pure): from what validation found, the
//! subjects step and what NATS said and did ([`super::execute::StreamStep`]), the
//! JetStreamStream's spec and conditions, `Ready`'s reason, Stalled or Reconciling, the retry,
//! the Events and whether the Component carries our finalizer. No client: every decision here
//! is a value, table-tested below.

use kube::runtime::events::EventType;

use super::execute::{Durable, Round, RoundEnd, StreamStep};
use super::topics::{Found, Prepared};
use crate::crd::{ConditionSpec, ConditionType};
use crate::failure::{Failure, Problem, Retry};
use crate::nats::stream::Change;
use crate::nats::stream::planned::Planned;
use crate::pubsub::component;
use crate::pubsub::consumer::Recreate;
use crate::pubsub::resource::{DETAIL_CONDITIONS, JetStreamStreamSpec, StreamStatus, TopicStatus};
use crate::pubsub::stream::{
    BlockReason, Desired, Role, StreamSettings, blocked_message, desired_stream, settings_warnings,
    shown_config,
};
use crate::pubsub::topics::{Held, INVISIBLE_TOPICS, subscribed_count, topic_statuses};
use crate::pubsub::{DiscoveredTopic, PubsubConfig, Subjects};
use crate::reconcile::audit::not_carried_out;
use crate::reconcile::execute::Progress;
use crate::reconcile::index::WrittenStream;
use crate::reconcile::status::{Note, Reason, close, deletion_pending_message, first_problem};
use crate::settings::{DeletionPolicy, RECREATE_CONSUMERS_ANNOTATION};
use crate::validate::PubsubValidation;

/// What one reconcile of a `pubsub.jetstream` Component decided, before anything is written.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamOutcome {
    /// What the operator understood of the Component (never a secret).
    pub spec: JetStreamStreamSpec,
    /// The detail conditions decided, in the pipeline's order.
    passed: Vec<ConditionSpec>,
    /// Ready True with a reason and message, or the problem that ended the reconcile.
    end: Result<(Reason, String), Problem>,
    /// The discovered topics and their coverage.
    pub topics: Vec<TopicStatus>,
    /// Facts about the stream.
    pub stream: Option<StreamStatus>,
    /// Facts about the dead-letter stream.
    pub dead_letter_stream: Option<StreamStatus>,
    /// Events for what was done.
    pub events: Vec<Note>,
    /// Warnings the Component alone gives (published when what the operator understood of it
    /// changes).
    pub warnings: Vec<Note>,
    /// Whether the Component should carry our finalizer; None when unknown.
    pub wants_finalizer: Option<bool>,
    /// Audit mode: what enforce mode would do to each stream (empty in enforce mode).
    pub plan: Vec<Planned>,
}

impl StreamOutcome {
    fn new(name: &str) -> Self {
        Self {
            spec: JetStreamStreamSpec {
                component: name.to_owned(),
                ..Default::default()
            },
            passed: Vec::new(),
            end: Ok((Reason::NotChecked, String::new())),
            topics: Vec::new(),
            stream: None,
            dead_letter_stream: None,
            events: Vec::new(),
            warnings: Vec::new(),
            wants_finalizer: None,
            plan: Vec::new(),
        }
    }

    /// A step passed; a later pass of the same condition says more (both streams found).
    fn pass(&mut self, type_: ConditionType, reason: Reason, message: impl Into<String>) {
        self.passed.retain(|c| c.type_ != type_);
        self.passed.push(ConditionSpec {
            type_,
            status: Some(true),
            reason: reason.as_str().to_owned(),
            message: message.into(),
        });
    }

    /// The conditions to write: Ready, the detail conditions, Stalled or Reconciling.
    pub fn conditions(&self) -> Vec<ConditionSpec> {
        let end = match &self.end {
            Ok((reason, message)) => Ok((reason.as_str(), message.clone())),
            Err(problem) => Err(problem.clone()),
        };
        close(&self.passed, &DETAIL_CONDITIONS, end)
    }

    /// When to look again.
    pub fn retry(&self) -> Retry {
        match &self.end {
            Ok(_) => Retry::Resync,
            Err(p) => p.retry,
        }
    }

    /// Whether the credentials were resolved (else the connection made with older ones is not
    /// this Component's any more).
    pub fn credentials_resolved(&self) -> bool {
        self.passed
            .iter()
            .any(|c| c.type_ == ConditionType::CredentialsResolved && c.status == Some(true))
    }

    /// What NATS last said of a stream stays shown while NATS does not answer (an outage, or a
    /// deletion that waits for one), as a bucket's facts do; an answer, absence included,
    /// replaces it. Facts of another stream than the one meant now are not kept.
    fn keep_unanswered_facts(
        &mut self,
        previous: Option<&WrittenStream>,
        prepared: Option<&Prepared>,
        progress: Option<&Progress<StreamStep>>,
    ) {
        let Some(previous) = previous else { return };
        let rounds = match progress {
            Some(Progress::Connected { step, .. }) => step.rounds.as_ref().ok(),
            _ => None,
        };
        let unanswered = |role: Role| {
            rounds.is_none_or(|rounds| {
                rounds
                    .iter()
                    .any(|r| r.role == role && matches!(r.end, RoundEnd::FetchFailed(_)))
            })
        };
        let meant = |facts: &StreamStatus, name: Option<&str>| name.is_none_or(|n| facts.name == n);
        if self.stream.is_none() && unanswered(Role::Topics) {
            self.stream = previous
                .status
                .stream
                .clone()
                .filter(|f| meant(f, prepared.map(|p| p.stream.as_str())));
        }
        if self.dead_letter_stream.is_none() && unanswered(Role::DeadLetters) {
            self.dead_letter_stream = previous
                .status
                .dead_letter_stream
                .clone()
                .filter(|f| meant(f, prepared.map(|p| p.dead_letters.as_str())));
        }
    }

    /// The topics' statuses: each against the stream meant to hold it, once that was read.
    fn show_topics(&mut self, found: &Found, prefix: Option<&str>) {
        fn held<'a>(facts: &'a Option<StreamStatus>, name: &'a Option<String>) -> Held<'a> {
            Held {
                stream: facts
                    .as_ref()
                    .map(|s| s.name.as_str())
                    .or(name.as_deref())
                    .unwrap_or_default(),
                live: facts.as_ref().map(|s| s.subjects.as_slice()),
            }
        }
        self.topics = topic_statuses(
            &found.topics,
            &found.subjects,
            prefix,
            held(&self.stream, &self.spec.stream),
            held(&self.dead_letter_stream, &self.spec.dead_letter_stream),
        );
    }
}

/// Decides the outcome of a reconcile of the Component `key` (`namespace/name`) from what
/// validation found, the subjects step (when valid) and what NATS said and did (when the
/// subjects were known).
pub fn decide(
    key: &str,
    previous: Option<&WrittenStream>,
    validation: &PubsubValidation,
    prepared: Option<&Prepared>,
    progress: Option<&Progress<StreamStep>>,
) -> StreamOutcome {
    decide_with_app(key, previous, validation, prepared, progress, None)
}

/// [`decide`], with what the check of the Component's own rights found (see
/// [`crate::nats::app_rights`]): streams that are as needed but that daprd could not use are not
/// Ready (`StreamAvailable=False`, `AppPermissionDenied`, naming the subject).
pub fn decide_with_app(
    key: &str,
    previous: Option<&WrittenStream>,
    validation: &PubsubValidation,
    prepared: Option<&Prepared>,
    progress: Option<&Progress<StreamStep>>,
    app: Option<&crate::nats::app_rights::Denied>,
) -> StreamOutcome {
    let name = key.split_once('/').map_or(key, |(_, n)| n);
    let mut o = StreamOutcome::new(name);
    o.end = steps(&mut o, key, previous, validation, prepared, progress);
    o.keep_unanswered_facts(previous, prepared, progress);
    if let (Ok(_), Some(denied)) = (&o.end, app) {
        o.end = Err(Problem::new(
            ConditionType::StreamAvailable,
            Reason::AppPermissionDenied.as_str(),
            denied.to_string(),
            crate::failure::Retry::Resync,
        ));
    }
    if let Some(p) = prepared
        && let Ok(found) = &p.subjects
    {
        o.show_topics(found, p.prefix.as_deref());
    }
    o
}

/// understood → subjects → connected → each stream's round → covered → ready.
fn steps(
    o: &mut StreamOutcome,
    key: &str,
    previous: Option<&WrittenStream>,
    validation: &PubsubValidation,
    prepared: Option<&Prepared>,
    progress: Option<&Progress<StreamStep>>,
) -> Result<(Reason, String), Problem> {
    let (Some((config, settings)), Some(p)) = (validation.valid(), prepared) else {
        return Err(first_problem(&validation.findings));
    };
    // A minted user is revoked (or said not to be) when its Component is deleted.
    o.wants_finalizer = Some(
        settings.deletion_policy == DeletionPolicy::Delete
            || settings.credentials == crate::settings::CredentialsMode::Mint,
    );
    understood(&mut o.spec, config, settings, p);
    o.pass(
        ConditionType::CredentialsResolved,
        Reason::Resolved,
        format!(
            "metadata and credentials resolved (auth: {})",
            config.auth.kind()
        ),
    );
    let found = p.subjects.as_ref().map_err(Clone::clone)?;
    o.spec.subjects = found.subjects.subjects.clone();
    o.spec.dead_letter_subjects = found.subjects.dead_letters.clone();
    let (version, step) = match progress {
        None => return Err(first_problem(&validation.findings)),
        Some(Progress::NotConnected(e)) => return Err(Problem::of(ConditionType::Connected, e)),
        Some(Progress::Connected {
            version,
            step,
            planned,
        }) => {
            o.plan = planned.clone();
            (version, step)
        }
    };
    o.pass(
        ConditionType::Connected,
        Reason::Connected,
        format!(
            "connected to NATS {version} at {} with JetStream",
            config.redacted_servers.join(",")
        ),
    );
    // The warnings of the Component alone, published when what was understood changes.
    if previous.is_none_or(|p| p.spec != o.spec) {
        o.warnings = warnings(config, settings, &found.topics, step.clustered);
        o.warnings.extend(found.unreachable.iter().map(|p| Note {
            type_: EventType::Warning,
            reason: p.reason.clone(),
            note: p.message.clone(),
        }));
    }
    let rounds = step
        .rounds
        .as_ref()
        .map_err(|e| Problem::of(ConditionType::StreamAvailable, e))?;
    let namespace = key.split_once('/').map_or("", |(ns, _)| ns);
    let mut available = Vec::new();
    let mut managed = [false, false];
    for r in rounds {
        managed[usize::from(r.role == Role::DeadLetters)] = round(o, r, namespace, &mut available)?;
    }
    covered(&p.stream, &found.subjects)?;
    if let Some(problem) = &found.unreachable {
        return Err(problem.clone());
    }
    let dead_letters = (rounds.len() > 1).then_some((p.dead_letters.as_str(), managed[1]));
    o.pass(
        ConditionType::SubjectsCovered,
        Reason::Covered,
        format!(
            "stream {} holds every subject daprd will use for the {} topic(s) found{}; \
             {INVISIBLE_TOPICS}",
            p.stream,
            found
                .topics
                .len()
                .min(crate::pubsub::subjects::MAX_SUBJECTS),
            dead_letters
                .map(|(d, _)| format!(", dead-letter topics in stream {d}"))
                .unwrap_or_default()
        ),
    );
    if let Some(problem) = consumer_problem(o, &p.stream, step.durable.as_ref()) {
        return Err(problem);
    }
    o.pass(
        ConditionType::ConfigSynced,
        Reason::InSync,
        "stream settings match the Component",
    );
    let owner = rounds.first().and_then(|r| r.owner(namespace));
    Ok(ready(&p.stream, managed[0], owner, dead_letters))
}

/// The durable consumer daprd will bind, when it exists and differs from what the Component
/// makes daprd ask (`ConsumerMismatch`, naming each field and both values, and why the opt-in
/// kept it), or could not be read or deleted. A consumer the opt-in deleted is an Event.
fn consumer_problem(
    o: &mut StreamOutcome,
    stream: &str,
    durable: Option<&Durable>,
) -> Option<Problem> {
    let Durable {
        name,
        found,
        recreate,
    } = durable?;
    let differences = match found {
        Err(e) => return Some(Problem::of(ConditionType::ConfigSynced, e)),
        Ok(found) => found.as_ref().filter(|d| !d.is_empty())?,
    };
    let listed: Vec<String> = differences.iter().map(ToString::to_string).collect();
    let kept = match recreate {
        Some(Ok(Recreate::Delete)) => {
            o.events.push(Note::normal(
                Reason::ConsumerRecreated,
                format!(
                    "deleted the durable consumer {name} on stream {stream}, which daprd could \
                     not bind ({}); daprd makes it anew when it subscribes",
                    listed.join("; ")
                ),
            ));
            return None;
        }
        Some(Err(e)) => return Some(Problem::of(ConditionType::ConfigSynced, e)),
        Some(Ok(kept)) => kept
            .kept_because()
            .map(|why| format!("; {RECREATE_CONSUMERS_ANNOTATION} did not delete it: {why}"))
            .unwrap_or_default(),
        None => String::new(),
    };
    Some(Problem::new(
        ConditionType::ConfigSynced,
        "ConsumerMismatch",
        format!(
            "the durable consumer {name} on stream {stream} differs from what daprd will ask \
             for: {}; daprd cannot bind it, and its subscription fails (\"consumer name already \
             in use\") until the consumer is deleted (nats consumer rm {stream} {name}, or \
             {RECREATE_CONSUMERS_ANNOTATION}: \"true\") or the Component's metadata matches \
             it{kept}",
            listed.join("; ")
        ),
        Retry::Resync,
    ))
}

impl Round {
    /// Who the stream is for, when the operator made it for another Component: named within
    /// `namespace`, counted elsewhere.
    fn owner(&self, namespace: &str) -> Option<String> {
        let owner = self.owner_elsewhere.as_deref()?;
        Some(match owner.split_once('/') {
            // The mark is the server's text: anyone with rights on the stream can write it.
            Some((ns, name)) if ns == namespace => {
                format!("Component {}", crate::nats::remote_text(name))
            }
            _ => "a Component of another namespace".to_owned(),
        })
    }
}

/// One stream's round: its facts, StreamAvailable (for both streams once the second is found),
/// the Events of what was done; Err: the problem that ends the reconcile. Ok: whether the
/// operator manages the stream.
fn round(
    o: &mut StreamOutcome,
    r: &Round,
    namespace: &str,
    available: &mut Vec<String>,
) -> Result<bool, Problem> {
    let (stream, what) = (r.stream.as_str(), what(r.role));
    let owner = r.owner(namespace);
    let facts = match &r.end {
        RoundEnd::Unavailable { facts, .. }
        | RoundEnd::Created { facts, .. }
        | RoundEnd::InSync { facts }
        | RoundEnd::Updated { facts, .. }
        | RoundEnd::UpdateFailed { facts, .. }
        | RoundEnd::ScaleDownWaits { facts, .. } => Some(facts),
        RoundEnd::Blocked { facts, .. } | RoundEnd::NotCarriedOut { facts, .. } => facts.as_ref(),
        _ => None,
    };
    let managed = facts.is_some_and(|f| f.managed);
    if let Some(facts) = facts {
        match r.role {
            Role::Topics => o.stream = Some(facts.clone()),
            Role::DeadLetters => o.dead_letter_stream = Some(facts.clone()),
        }
        if !matches!(r.end, RoundEnd::Unavailable { .. }) {
            available.push(found_message(stream, managed, owner.as_deref()));
            o.pass(
                ConditionType::StreamAvailable,
                Reason::StreamFound,
                available.join("; "),
            );
        }
    }
    if let Some(problem) = problem(r, owner.as_deref()) {
        return Err(problem);
    }
    match &r.end {
        RoundEnd::Created { facts, recreated } => {
            o.events.push(if *recreated {
                Note::warning(
                    Reason::StreamRecreated,
                    format!(
                        "{what} {stream} was deleted outside the operator; created it again (its messages were lost)"
                    ),
                )
            } else {
                Note::normal(
                    Reason::StreamCreated,
                    format!(
                        "created {what} {stream} with subjects {}",
                        facts.subjects.join(", ")
                    ),
                )
            });
            Ok(true)
        }
        RoundEnd::Updated { added, changes, .. } => {
            o.events.push(Note::normal(
                Reason::StreamUpdated,
                format!("updated {what} {stream}: {}", listed(added, changes)),
            ));
            Ok(true)
        }
        _ => Ok(managed),
    }
}

/// The problem a round that did not end well ends the reconcile with (None: it ended well);
/// `owner`: who the operator made the stream for, when another Component (as it may be named
/// here).
fn problem(r: &Round, owner: Option<&str>) -> Option<Problem> {
    use ConditionType::{ConfigSynced, StreamAvailable, SubjectsCovered};
    let (stream, what) = (r.stream.as_str(), what(r.role));
    Some(match &r.end {
        RoundEnd::Created { .. } | RoundEnd::InSync { .. } | RoundEnd::Updated { .. } => {
            return None;
        }
        RoundEnd::FetchFailed(e) => Problem::of(StreamAvailable, e),
        RoundEnd::NotCarriedOut { facts, planned } => {
            let condition = if facts.is_some() {
                ConfigSynced
            } else {
                StreamAvailable
            };
            not_carried_out(condition, planned)
        }
        RoundEnd::Unavailable { error, .. } => Problem::of(StreamAvailable, error),
        RoundEnd::CreateFailed(e) => Problem::of(StreamAvailable, e),
        RoundEnd::NoSubjects => no_subjects(stream),
        RoundEnd::Missing => missing(stream),
        RoundEnd::NotUsable(why) => Problem::new(
            StreamAvailable,
            Reason::StreamNotUsable.as_str(),
            why.clone(),
            Retry::Resync,
        ),
        RoundEnd::CreateConflict => Problem::new(
            StreamAvailable,
            Reason::StreamCreateConflict.as_str(),
            format!("stream {stream} kept changing while it was being created; retrying"),
            Retry::Backoff,
        ),
        RoundEnd::UpdateFailed {
            added,
            changes,
            error,
            ..
        } => Problem::new(
            ConfigSynced,
            error.reason(),
            format!(
                "updating {what} {stream} ({}) failed: {error}",
                listed(added, changes)
            ),
            Retry::Backoff,
        ),
        RoundEnd::ScaleDownWaits {
            changes, behind, ..
        } => Problem::new(
            ConfigSynced,
            Reason::ReplicasNotCurrent.as_str(),
            format!(
                "{} of {what} {stream} waits until every replica is current ({behind}): NATS keeps only the leader's copy when it scales down; retrying",
                listed(&[], changes)
            ),
            Retry::Backoff,
        ),
        RoundEnd::Blocked {
            facts,
            reason,
            missing,
            overlaps,
            changes,
        } => {
            let condition = match reason {
                BlockReason::SubjectOverlap | BlockReason::SubjectsNotCovered => SubjectsCovered,
                _ if facts.is_none() => StreamAvailable,
                _ => ConfigSynced,
            };
            let mut message = blocked_message(stream, *reason, missing, overlaps, changes);
            let mut why = reason.reason().to_owned();
            if let Some(owner) = owner
                && matches!(
                    reason,
                    BlockReason::ConfigMismatch | BlockReason::SubjectsNotCovered
                )
            {
                why = Reason::StreamOwnedElsewhere.as_str().to_owned();
                message = owned_elsewhere(stream, owner, missing, changes);
            }
            if r.role == Role::DeadLetters && *reason == BlockReason::SubjectOverlap {
                message.push_str(DEAD_LETTERS_APART);
            }
            Problem::new(condition, why, message, reason.retry())
        }
    })
}

/// What a stream is called in messages.
fn what(role: Role) -> &'static str {
    match role {
        Role::Topics => "stream",
        Role::DeadLetters => "dead-letter stream",
    }
}

fn listed(added: &[String], changes: &[Change]) -> String {
    let mut what: Vec<String> = Vec::new();
    if !added.is_empty() {
        what.push(format!("added subjects {}", added.join(", ")));
    }
    what.extend(changes.iter().map(ToString::to_string));
    what.join("; ")
}

/// Why dead-letter subjects may not share a stream with the topics.
const DEAD_LETTERS_APART: &str = " (dead-letter topics need a stream of their own: daprd \
    publishes a dead letter with the failed message's id as Nats-Msg-Id, so the topics' stream \
    would drop it as a duplicate)";

fn found_message(stream: &str, managed: bool, owner: Option<&str>) -> String {
    match (managed, owner) {
        (true, _) => format!("stream {stream} exists; managed by the operator"),
        (false, Some(owner)) => format!(
            "stream {stream} exists; made by the operator for {owner}; only verified for this one"
        ),
        (false, None) => format!("stream {stream} exists; verified; not managed by the operator"),
    }
}

/// A stream the operator made for another Component, which this one asks something else of.
fn owned_elsewhere(stream: &str, owner: &str, missing: &[String], changes: &[Change]) -> String {
    let differs = listed(missing, changes).replace("added subjects", "lacks subjects");
    format!(
        "stream {stream} was created by the operator for {owner}, so this Component only \
         verifies it: it is never changed or deleted on this Component's behalf (differs: \
         {differs}); use a stream of this Component's own (remove streamName or \
         jetstreamkv.io/stream), or make the two Components ask the same"
    )
}

fn missing(stream: &str) -> Problem {
    Problem::new(
        ConditionType::StreamAvailable,
        Reason::StreamMissing.as_str(),
        format!(
            "stream {stream} no longer exists; the operator only verified it, so it does not create it: recreate it, or remove streamName to let the operator manage a stream"
        ),
        Retry::Backoff,
    )
}

fn no_subjects(stream: &str) -> Problem {
    Problem::new(
        ConditionType::SubjectsCovered,
        Reason::NoSubjects.as_str(),
        format!(
            "stream {stream} is not created: no subject is known for it; add a declarative \
             Subscription naming this Component, allowedTopics, or the \
             jetstreamkv.io/subjects annotation ({INVISIBLE_TOPICS})"
        ),
        Retry::AwaitChange,
    )
}

/// Every discovered topic must have a subject in the stream.
fn covered(stream: &str, subjects: &Subjects) -> Result<(), Problem> {
    if subjects.uncovered.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = subjects
        .uncovered
        .iter()
        .take(5)
        .map(|u| format!("{} ({}): {}", u.subject, u.topic.source, u.problem))
        .collect();
    Err(Problem::new(
        ConditionType::SubjectsCovered,
        Reason::TopicsNotCovered.as_str(),
        format!(
            "stream {stream} cannot cover {} discovered topic(s): {}; daprd will fail to \
             publish or subscribe to them: rename the topics, or change the \
             jetstreamkv.io/subjects annotation",
            subjects.uncovered.len(),
            listed.join("; ")
        ),
        Retry::Resync,
    ))
}

/// Ready's reason and message; `owner`: who the operator made the stream for, when another
/// Component; `dead_letters`: the dead-letter stream, when there is one, and whether the
/// operator manages it.
fn ready(
    stream: &str,
    managed: bool,
    owner: Option<String>,
    dead_letters: Option<(&str, bool)>,
) -> (Reason, String) {
    let dead_letters = match dead_letters {
        Some((d, true)) => format!("; dead letters go to stream {d}, managed by the operator"),
        Some((d, false)) => format!("; dead letters go to stream {d}, only verified"),
        None => String::new(),
    };
    match (managed, owner) {
        (true, _) => (
            Reason::StreamManaged,
            format!("stream {stream} is ready and managed by the operator{dead_letters}"),
        ),
        (false, Some(owner)) => (
            Reason::StreamVerified,
            format!(
                "stream {stream} is ready; the operator made it for {owner}, so this Component \
                 only verifies it{dead_letters}"
            ),
        ),
        (false, None) => (
            Reason::StreamVerified,
            format!(
                "stream {stream} is ready; it was created outside the operator and is only \
                 verified{dead_letters}"
            ),
        ),
    }
}

/// The warnings of the Component alone, as Events.
fn warnings(
    config: &PubsubConfig,
    settings: &StreamSettings,
    topics: &[DiscoveredTopic],
    clustered: bool,
) -> Vec<Note> {
    component::warnings(config, subscribed_count(topics), Some(clustered))
        .into_iter()
        .chain(settings_warnings(settings))
        .map(|w| Note {
            type_: EventType::Warning,
            reason: w.reason.to_owned(),
            note: w.message,
        })
        .collect()
}

/// The spec: what the operator understood of the Component.
fn understood(
    spec: &mut JetStreamStreamSpec,
    config: &PubsubConfig,
    settings: &StreamSettings,
    p: &Prepared,
) {
    spec.stream = Some(p.stream.clone());
    spec.dead_letter_stream = Some(p.dead_letters.clone());
    spec.servers = config.redacted_servers.clone();
    spec.auth = Some(config.auth.kind().to_owned());
    spec.topic_prefix = p.prefix.clone();
    spec.deletion_policy = Some(settings.deletion_policy.as_str().to_owned());
    let mut config = shown_config(&desired_stream(&Desired {
        stream: &p.stream,
        subjects: &[],
        owner: "",
        settings,
        role: Role::Topics,
    }));
    // The operator's own description names the Component's owner mark, not known here.
    config.description = settings.description.clone();
    spec.config = Some(config);
}

/// A Component being deleted whose streams cannot be deleted yet: keep the finalizer, the spec
/// and the facts last written, and say why the deletion waits.
pub fn deletion_pending(
    name: &str,
    previous: Option<&WrittenStream>,
    failure: &Problem,
) -> StreamOutcome {
    let mut o = StreamOutcome::new(name);
    if let Some(p) = previous {
        o.spec = p.spec.clone();
        o.stream = p.status.stream.clone();
        o.dead_letter_stream = p.status.dead_letter_stream.clone();
        o.topics = p.status.topics.clone();
    }
    o.wants_finalizer = Some(true);
    o.end = Err(Problem::new(
        failure.condition,
        Reason::DeletionPending.as_str(),
        deletion_pending_message("stream", failure),
        Retry::Backoff,
    ));
    o
}

#[cfg(test)]
mod tests;
