//! One stream's round: plan ([`crate::pubsub::stream::plan`]), then create, update or report,
//! the same for the topics' stream and the dead-letter stream.

use async_nats::jetstream;
use kube::runtime::events::EventType;

use super::decide::StreamOutcome;
use crate::crd::ConditionType;
use crate::failure::{Failure, Problem, Retry};
use crate::nats::bucket::{Bucket, Change, is_managed_by};
use crate::pubsub::stream::{
    self, BlockReason, Desired, OtherStream, Role, StreamPlan, blocked_message, status_of,
};
use crate::pubsub::{DiscoveredTopic, Subjects};
use crate::reconcile::context::Context;
use crate::reconcile::status::Note;

/// What the plan of one stream works on, once the server is known.
pub(super) struct Round<'a> {
    pub ctx: &'a Context,
    pub target: Bucket<'a>,
    pub desired: Desired<'a>,
    pub others: Vec<OtherStream>,
    pub previously_managed: Option<bool>,
    pub clustered: bool,
    pub version: &'a str,
    pub topics: &'a [DiscoveredTopic],
    pub subjects: &'a Subjects,
    pub prefix: Option<&'a str>,
}

impl Round<'_> {
    /// Plans and applies; at most two rounds: a create that races with another creator plans
    /// again. Returns the stream and whether the operator manages it.
    pub async fn apply(
        &self,
        mut live: Option<jetstream::stream::Info>,
        o: &mut StreamOutcome,
    ) -> Result<(jetstream::stream::Info, bool), Problem> {
        let stream = self.desired.stream;
        for _ in 0..2 {
            let plan = stream::plan(
                &self.desired,
                live.as_ref().map(|i| &i.config),
                &self.others,
                self.previously_managed,
                self.clustered,
            );
            match plan {
                StreamPlan::Create(config) | StreamPlan::Recreate(config) => {
                    let info = self.create(*config).await?;
                    if is_managed_by(&info.config, self.desired.owner) {
                        o.events.push(self.created(&info));
                        return Ok((info, true));
                    }
                    live = Some(info);
                }
                StreamPlan::Missing => return Err(missing(stream)),
                StreamPlan::NotUsable(problem) => {
                    return Err(Problem::new(
                        ConditionType::StreamAvailable,
                        "StreamNotUsable",
                        problem,
                        Retry::Resync,
                    ));
                }
                StreamPlan::InSync { managed } => {
                    return live.map(|i| (i, managed)).ok_or_else(|| conflict(stream));
                }
                StreamPlan::Update {
                    config,
                    added,
                    changes,
                } => return Ok((self.update(*config, &added, &changes, o).await?, true)),
                StreamPlan::Blocked {
                    managed,
                    reason,
                    missing,
                    overlaps,
                    changes,
                } => {
                    if let Some(info) = &live {
                        self.found(info, managed, o);
                    }
                    let condition = match reason {
                        BlockReason::SubjectOverlap | BlockReason::SubjectsNotCovered => {
                            ConditionType::SubjectsCovered
                        }
                        _ if live.is_none() => ConditionType::StreamAvailable,
                        _ => ConditionType::ConfigSynced,
                    };
                    let mut message =
                        blocked_message(stream, reason, &missing, &overlaps, &changes);
                    if self.desired.role == Role::DeadLetters
                        && reason == BlockReason::SubjectOverlap
                    {
                        message.push_str(DEAD_LETTERS_APART);
                    }
                    return Err(Problem::new(
                        condition,
                        reason.reason(),
                        message,
                        reason.retry(),
                    ));
                }
            }
        }
        Err(conflict(stream))
    }

    async fn create(
        &self,
        config: jetstream::stream::Config,
    ) -> Result<jetstream::stream::Info, Problem> {
        self.ctx.metrics.nats_request("create");
        self.target
            .create(config)
            .await
            .map_err(|e| Problem::of(ConditionType::StreamAvailable, &e))
    }

    /// What the stream is called in messages.
    fn what(&self) -> &'static str {
        match self.desired.role {
            Role::Topics => "stream",
            Role::DeadLetters => "dead-letter stream",
        }
    }

    /// The Event of a stream the operator created: again, when it had managed it before.
    fn created(&self, info: &jetstream::stream::Info) -> Note {
        let (what, stream) = (self.what(), self.desired.stream);
        if self.previously_managed == Some(true) {
            Note {
                type_: EventType::Warning,
                reason: "StreamRecreated".into(),
                note: format!(
                    "{what} {stream} was deleted outside the operator; created it again (its messages were lost)"
                ),
            }
        } else {
            Note {
                type_: EventType::Normal,
                reason: "StreamCreated".into(),
                note: format!(
                    "created {what} {stream} with subjects {}",
                    info.config.subjects.join(", ")
                ),
            }
        }
    }

    async fn update(
        &self,
        config: jetstream::stream::Config,
        added: &[String],
        changes: &[Change],
        o: &mut StreamOutcome,
    ) -> Result<jetstream::stream::Info, Problem> {
        let (what_stream, stream) = (self.what(), self.desired.stream);
        self.ctx.metrics.nats_request("update");
        let mut what: Vec<String> = Vec::new();
        if !added.is_empty() {
            what.push(format!("added subjects {}", added.join(", ")));
        }
        what.extend(changes.iter().map(ToString::to_string));
        match self.target.update(config).await {
            Ok(info) => {
                o.events.push(Note {
                    type_: EventType::Normal,
                    reason: "StreamUpdated".into(),
                    note: format!("updated {what_stream} {stream}: {}", what.join("; ")),
                });
                Ok(info)
            }
            Err(e) => {
                o.pass(
                    ConditionType::StreamAvailable,
                    "StreamFound",
                    found_message(stream, true),
                );
                Err(Problem::new(
                    ConditionType::ConfigSynced,
                    e.reason(),
                    format!(
                        "updating {what_stream} {stream} ({}) failed: {e}",
                        what.join("; ")
                    ),
                    Retry::Backoff,
                ))
            }
        }
    }

    /// The stream is there: its status, StreamAvailable (for both streams once the second is
    /// found), and the topics it holds.
    pub fn found(&self, info: &jetstream::stream::Info, managed: bool, o: &mut StreamOutcome) {
        let status = Some(status_of(info, managed, self.version));
        match self.desired.role {
            Role::Topics => o.stream = status,
            Role::DeadLetters => o.dead_letter_stream = status,
        }
        let message = [&o.stream, &o.dead_letter_stream]
            .into_iter()
            .flatten()
            .map(|s| found_message(&s.name, s.managed))
            .collect::<Vec<_>>()
            .join("; ");
        o.pass(ConditionType::StreamAvailable, "StreamFound", message);
        o.show_topics(self.topics, self.subjects, self.prefix);
    }
}

/// Why dead-letter subjects may not share a stream with the topics.
const DEAD_LETTERS_APART: &str = " (dead-letter topics need a stream of their own: daprd \
    publishes a dead letter with the failed message's id as Nats-Msg-Id, so the topics' stream \
    would drop it as a duplicate)";

fn found_message(stream: &str, managed: bool) -> String {
    if managed {
        format!("stream {stream} exists; managed by the operator")
    } else {
        format!("stream {stream} exists; verified; not managed by the operator")
    }
}

fn missing(stream: &str) -> Problem {
    Problem::new(
        ConditionType::StreamAvailable,
        "StreamMissing",
        format!(
            "stream {stream} no longer exists; the operator only verified it, so it does not create it: recreate it, or remove streamName to let the operator manage a stream"
        ),
        Retry::Backoff,
    )
}

pub(super) fn conflict(stream: &str) -> Problem {
    Problem::new(
        ConditionType::StreamAvailable,
        "StreamCreateConflict",
        format!("stream {stream} kept changing while it was being created; retrying"),
        Retry::Backoff,
    )
}
