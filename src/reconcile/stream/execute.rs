//! The execute step of a `pubsub.jetstream` Component: NATS only. Connects, lists the account's
//! streams when it needs them (below), and for the topics' stream, then the dead-letter stream,
//! carries out the pure plan of
//! [`crate::pubsub::stream::plan`]; returns what it found and did as a [`StreamStep`], from which
//! [`super::status`] decides the conditions. Nothing here decides a condition.

use async_nats::jetstream::{self, stream};

use super::topics::{Found, Prepared};
use crate::nats::NatsError;
use crate::nats::cluster;
use std::collections::HashSet;
use std::sync::Mutex;

use crate::nats::stream::planned::Planned;
use crate::nats::stream::{Change, StreamClient, is_managed_by, owner_of};
use crate::pubsub::PubsubConfig;
use crate::pubsub::consumer::{self, Difference, Recreate};
use crate::pubsub::resource::StreamStatus;
use crate::pubsub::stream::{
    BlockReason, Desired, OtherStream, Overlap, Role, StreamPlan, StreamSettings, plan, status_of,
    uncovered,
};
use crate::reconcile::execute::{Nats, Progress, client_with_refusals};
use crate::reconcile::index::WrittenStream;

/// What happened to a Component's streams, once connected.
#[derive(Debug)]
pub struct StreamStep {
    /// Whether the server runs in a cluster.
    pub clustered: bool,
    /// The streams of the account, listed (Err: listing failed, nothing else was done).
    pub rounds: Result<Vec<Round>, NatsError>,
    /// The Component's `durableName` and the consumer of that name on the topics' stream, read
    /// (never changed) once the stream is as the Component needs it.
    pub durable: Option<Durable>,
}

/// The durable consumer daprd will bind on the topics' stream: read, compared with what daprd
/// will ask, and, with `jetstreamkv.io/recreate-consumers`, deleted when daprd cannot bind it.
#[derive(Debug)]
pub struct Durable {
    /// The `durableName`.
    pub name: String,
    /// Where the consumer differs from what daprd will ask (empty: daprd can bind it); None:
    /// there is no consumer of that name.
    pub found: Result<Option<Vec<Difference>>, NatsError>,
    /// With the opt-in and differences: what was done with the consumer.
    pub recreate: Option<Result<Recreate, NatsError>>,
}

/// One stream's round: the topics' stream first, then the dead-letter stream when there is one.
/// A round that did not end well is the last.
#[derive(Debug)]
pub struct Round {
    /// What the stream holds.
    pub role: Role,
    /// Its name.
    pub stream: String,
    /// The Component (`namespace/name`) the operator made the stream for, when another one.
    pub owner_elsewhere: Option<String>,
    /// What happened.
    pub end: RoundEnd,
}

/// What happened to one stream. `facts` are the stream's, as the status shows them.
#[derive(Debug)]
pub enum RoundEnd {
    /// Reading the stream failed.
    FetchFailed(NatsError),
    /// No stream, and no subject known to create it with.
    NoSubjects,
    /// A clustered stream that cannot take writes now.
    Unavailable {
        facts: StreamStatus,
        error: NatsError,
    },
    /// Created (`recreated`: again, after it was deleted behind the operator's back).
    Created {
        facts: StreamStatus,
        recreated: bool,
    },
    /// Creating it failed.
    CreateFailed(NatsError),
    /// A stream the operator only verified has disappeared.
    Missing,
    /// Dapr cannot use the stream, and why.
    NotUsable(String),
    /// Everything matches.
    InSync { facts: StreamStatus },
    /// Updated in place.
    Updated {
        facts: StreamStatus,
        added: Vec<String>,
        changes: Vec<Change>,
    },
    /// The update failed.
    UpdateFailed {
        facts: StreamStatus,
        added: Vec<String>,
        changes: Vec<Change>,
        error: NatsError,
    },
    /// A lower `replicas` waits until every replica is current (`behind` says which are not).
    ScaleDownWaits {
        facts: StreamStatus,
        changes: Vec<Change>,
        behind: String,
    },
    /// Differences that are not applied; nothing was sent.
    Blocked {
        facts: Option<StreamStatus>,
        reason: BlockReason,
        missing: Vec<String>,
        overlaps: Vec<Overlap>,
        changes: Vec<Change>,
    },
    /// Another creator won twice in a row.
    CreateConflict,
    /// Audit mode: a create or an update planned and not carried out (`facts`: the stream as
    /// it is, when it exists).
    NotCarriedOut {
        facts: Option<StreamStatus>,
        planned: Planned,
    },
}

impl RoundEnd {
    /// Whether the operator made the stream (for this Component or another) and keeps it.
    pub fn is_managed(&self) -> bool {
        match self {
            Self::Created { facts, .. } | Self::InSync { facts } | Self::Updated { facts, .. } => {
                facts.managed
            }
            _ => false,
        }
    }

    /// Whether the stream is as the Component needs it.
    pub fn is_done(&self) -> bool {
        matches!(
            self,
            Self::Created { .. } | Self::InSync { .. } | Self::Updated { .. }
        )
    }
}

/// Connects, and brings the Component's streams to what `found` needs.
pub async fn execute(
    ctx: Nats<'_>,
    key: &str,
    (config, settings): (&PubsubConfig, &StreamSettings),
    prepared: &Prepared,
    found: &Found,
    previous: Option<&WrittenStream>,
) -> Progress<StreamStep> {
    let connected = client_with_refusals(ctx, key, &config.connection(&prepared.stream)).await;
    let (client, refusals) = match connected {
        Ok(connected) => connected,
        Err(e) => return Progress::NotConnected(e),
    };
    let server = client.server_info();
    let version = crate::nats::remote_text(&server.version);
    let clustered = server.cluster.is_some();
    let js = jetstream::new(client);
    let on = Server {
        ctx,
        js: &js,
        key,
        version: &version,
        domain: server.domain.as_deref(),
        clustered,
        settings,
        previous,
        planned: Mutex::default(),
        refusals: &refusals,
    };
    let rounds = on.rounds(prepared, found).await;
    let planned = on.planned.into_inner().unwrap_or_default();
    let subscribed = prepared.subscribed_subjects(found);
    let durable = durable(
        ctx,
        (&js, &refusals),
        (config, settings),
        &subscribed,
        &rounds,
    )
    .await;
    Progress::Connected {
        version,
        step: Box::new(StreamStep {
            clustered,
            rounds,
            durable,
        }),
        planned,
    }
}

/// The durable consumer daprd will bind, read when the Component names one (a name with a
/// per-pod template is each pod's own: not read) and the topics' stream is done; compared with
/// what daprd will ask for the `subscribed` subjects, and deleted when the Component opted in,
/// it differs, and [`consumer::recreate`] allows.
async fn durable(
    ctx: Nats<'_>,
    (js, refusals): (&jetstream::Context, &crate::nats::pool::ServerErrors),
    (config, settings): (&PubsubConfig, &StreamSettings),
    subscribed: &[String],
    rounds: &Result<Vec<Round>, NatsError>,
) -> Option<Durable> {
    let name = config.durable_name.as_ref().filter(|n| !n.contains('{'))?;
    let topics = rounds
        .as_ref()
        .ok()?
        .iter()
        .find(|r| r.role == Role::Topics && r.end.is_done())?;
    let on = StreamClient::new(js, &topics.stream).with_refusals(refusals);
    ctx.metrics.nats_request("consumer_info");
    let durable = |found, recreate| {
        Some(Durable {
            name: name.clone(),
            found,
            recreate,
        })
    };
    let info = match on.consumer(name).await {
        Ok(Some(info)) => info,
        Ok(None) => return durable(Ok(None), None),
        Err(e) => return durable(Err(e), None),
    };
    let subscribed: Vec<&str> = subscribed.iter().map(String::as_str).collect();
    let differences = consumer::differences(&config.consumer, &info.config, &subscribed);
    if !settings.recreate_consumers || differences.is_empty() {
        return durable(Ok(Some(differences)), None);
    }
    let ours = topics.owner_elsewhere.is_none() && topics.end.is_managed();
    let recreate = match consumer::recreate(info.push_bound, ours, ctx.mode.is_audit()) {
        Recreate::Delete => {
            ctx.metrics.nats_request("consumer_delete");
            on.delete_consumer(name).await.map(|()| Recreate::Delete)
        }
        kept => Ok(kept),
    };
    durable(Ok(Some(differences)), Some(recreate))
}

/// The server the streams are on, and what their rounds share.
struct Server<'a> {
    ctx: Nats<'a>,
    js: &'a jetstream::Context,
    key: &'a str,
    version: &'a str,
    domain: Option<&'a str>,
    clustered: bool,
    settings: &'a StreamSettings,
    previous: Option<&'a WrittenStream>,
    /// Audit mode: what enforce mode would do to each stream.
    planned: Mutex<Vec<Planned>>,
    /// What the server reported on the connection (its refusals).
    refusals: &'a crate::nats::pool::ServerErrors,
}

impl Server<'_> {
    /// The topics' stream, then the dead-letter stream (kept once made), each planned against
    /// the other streams as they are after the rounds before it.
    ///
    /// The account's streams are listed only when needed: to tell whether a stream the last
    /// status did not name exists (an absent stream then costs no failed request), and to check
    /// the subjects a create or an update would add against the other streams' (a stream that
    /// covers its subjects cannot overlap another: the server refuses overlapping streams). A
    /// stream in sync, at every resync, costs one info request instead of a listing of the
    /// account: with a listing per reconcile, 1,000 pub/sub Components beside 1,000 buckets
    /// spent the workers on resyncs that each read 1,400 streams, and new ones waited minutes.
    /// A failed listing fails every round, as before any round.
    async fn rounds(&self, p: &Prepared, found: &Found) -> Result<Vec<Round>, NatsError> {
        let mut all: Option<Vec<OtherStream>> = None;
        let mut names: Option<HashSet<String>> = None;
        let mut rounds = Vec::new();
        for (role, stream, subjects) in [
            (Role::Topics, &p.stream, &found.subjects.subjects),
            (
                Role::DeadLetters,
                &p.dead_letters,
                &found.subjects.dead_letters,
            ),
        ] {
            // A stream the last status named is read at once (gone, it is a create again).
            let listed = match (self.previously_managed(stream, role), all.as_deref()) {
                (Some(_), _) => true,
                (None, Some(all)) => all.iter().any(|s| &s.name == stream),
                (None, None) => self.names(&mut names).await?.contains(stream),
            };
            let live = match self.fetched(stream, listed).await {
                Ok(live) => live,
                Err(e) => {
                    rounds.push(round(role, stream, None, RoundEnd::FetchFailed(e)));
                    break;
                }
            };
            let owner = live
                .as_ref()
                .and_then(|i| owner_of(&i.config))
                .map(str::to_owned);
            if live.is_none() && subjects.is_empty() {
                // No dead-letter topic: no dead-letter stream, nothing to say.
                if role == Role::Topics {
                    rounds.push(round(role, stream, owner, RoundEnd::NoSubjects));
                }
                break;
            }
            let desired = Desired {
                stream,
                subjects,
                owner: self.key,
                settings: self.settings,
                role,
            };
            let adds = live
                .as_ref()
                .is_none_or(|i| !uncovered(subjects, &i.config).is_empty());
            if adds {
                self.listing(&mut all).await?;
            }
            let (end, info) = self
                .apply(desired, live, all.as_deref().unwrap_or_default())
                .await;
            let owner = info
                .as_ref()
                .and_then(|i| owner_of(&i.config))
                .map(str::to_owned)
                .or(owner);
            if let (Some(info), Some(all)) = (info, all.as_mut()) {
                all.retain(|s| &s.name != stream);
                all.push(OtherStream {
                    name: stream.clone(),
                    subjects: info.config.subjects,
                });
            }
            // In audit mode the dead-letter stream's plan is shown too, after a topics' stream
            // that was not created or updated.
            let done = end.is_done() || matches!(end, RoundEnd::NotCarriedOut { .. });
            rounds.push(round(role, stream, owner, end));
            if !done {
                break;
            }
        }
        for r in &mut rounds {
            r.owner_elsewhere = r.owner_elsewhere.take().filter(|o| o != self.key);
        }
        Ok(rounds)
    }

    /// The account's streams, listed once per reconcile when first needed.
    async fn listing(&self, all: &mut Option<Vec<OtherStream>>) -> Result<(), NatsError> {
        if all.is_none() {
            *all = Some(listed(self.ctx, self.js, self.refusals).await?);
        }
        Ok(())
    }

    /// The names of the account's streams, listed once per reconcile when first needed: what
    /// tells whether a stream exists without a failed request, at a fraction of a listing's
    /// bytes (no configuration, no state).
    async fn names<'n>(
        &self,
        names: &'n mut Option<HashSet<String>>,
    ) -> Result<&'n HashSet<String>, NatsError> {
        if names.is_none() {
            self.ctx.metrics.nats_request("names");
            let listed = StreamClient::names(self.js)
                .await
                .map_err(|e| crate::nats::stream::refused(e, self.refusals, "STREAM.NAMES"))?;
            *names = Some(listed.into_iter().collect());
        }
        Ok(names.get_or_insert_default())
    }

    /// The stream `stream` when it is `listed` (an absent stream costs no failed request).
    async fn fetched(&self, stream: &str, listed: bool) -> Result<Option<stream::Info>, NatsError> {
        if !listed {
            return Ok(None);
        }
        self.ctx.metrics.nats_request("info");
        StreamClient::new(self.js, stream)
            .with_refusals(self.refusals)
            .fetch()
            .await
    }

    /// What the last status said of this stream: whether the operator managed it.
    fn previously_managed(&self, stream: &str, role: Role) -> Option<bool> {
        self.previous
            .map(|p| &p.status)
            .and_then(|s| match role {
                Role::Topics => s.stream.as_ref(),
                Role::DeadLetters => s.dead_letter_stream.as_ref(),
            })
            .filter(|s| s.name == stream)
            .map(|s| s.managed)
    }

    /// Plans against the live stream and carries the plan out; at most two rounds: a create
    /// that races with another creator plans again. Returns what happened and the stream as it
    /// is now, when it exists.
    async fn apply(
        &self,
        desired: Desired<'_>,
        mut live: Option<stream::Info>,
        all: &[OtherStream],
    ) -> (RoundEnd, Option<stream::Info>) {
        let target = StreamClient::new(self.js, desired.stream).with_refusals(self.refusals);
        if let Some(info) = &live
            && let Some(error) = cluster::availability_problem(info)
        {
            let facts = self.facts(info, is_managed_by(&info.config, self.key));
            return (RoundEnd::Unavailable { facts, error }, live);
        }
        let previously_managed = self.previously_managed(desired.stream, desired.role);
        let others: Vec<OtherStream> = all
            .iter()
            .filter(|s| s.name != desired.stream)
            .cloned()
            .collect();
        for _ in 0..2 {
            let decided = plan(
                &desired,
                live.as_ref().map(|i| &i.config),
                &others,
                previously_managed,
                self.clustered,
            );
            if self.ctx.mode.is_audit() {
                let described = decided.describe(desired.stream);
                if let Ok(mut planned) = self.planned.lock() {
                    planned.push(described.clone());
                }
                if described.action.mutates() {
                    let facts = live
                        .as_ref()
                        .map(|i| self.facts(i, is_managed_by(&i.config, self.key)));
                    let end = RoundEnd::NotCarriedOut {
                        facts,
                        planned: described,
                    };
                    return (end, live);
                }
            }
            let end = match decided {
                StreamPlan::Create(config) | StreamPlan::Recreate(config) => {
                    self.ctx.metrics.nats_request("create");
                    match target.create(*config).await {
                        Ok(info) if is_managed_by(&info.config, self.key) => {
                            let end = RoundEnd::Created {
                                facts: self.facts(&info, true),
                                recreated: previously_managed == Some(true),
                            };
                            return (end, Some(info));
                        }
                        Ok(info) => {
                            // Someone else created it first: verify what they made.
                            live = Some(info);
                            continue;
                        }
                        Err(e) => RoundEnd::CreateFailed(e),
                    }
                }
                StreamPlan::Missing => RoundEnd::Missing,
                StreamPlan::NotUsable(why) => RoundEnd::NotUsable(why),
                StreamPlan::InSync { managed } => match &live {
                    Some(info) => RoundEnd::InSync {
                        facts: self.facts(info, managed),
                    },
                    None => RoundEnd::CreateConflict,
                },
                StreamPlan::Update {
                    config,
                    added,
                    changes,
                } => return self.update(&target, *config, added, changes, live).await,
                StreamPlan::Blocked {
                    managed,
                    reason,
                    missing,
                    overlaps,
                    changes,
                } => RoundEnd::Blocked {
                    facts: live.as_ref().map(|i| self.facts(i, managed)),
                    reason,
                    missing,
                    overlaps,
                    changes,
                },
            };
            return (end, live);
        }
        (RoundEnd::CreateConflict, live)
    }

    /// Updates a managed stream in place; a lower `replicas` first waits until every replica
    /// is current (NATS keeps only the leader's copy).
    async fn update(
        &self,
        target: &StreamClient<'_>,
        config: stream::Config,
        added: Vec<String>,
        changes: Vec<Change>,
        live: Option<stream::Info>,
    ) -> (RoundEnd, Option<stream::Info>) {
        let Some(info) = live else {
            return (RoundEnd::CreateConflict, None);
        };
        let facts = self.facts(&info, true);
        if let Some(behind) = cluster::scale_down_blocker(&info, self.settings.replicas) {
            let end = RoundEnd::ScaleDownWaits {
                facts,
                changes,
                behind,
            };
            return (end, Some(info));
        }
        self.ctx.metrics.nats_request("update");
        match target.update(config).await {
            Ok(updated) => {
                let end = RoundEnd::Updated {
                    facts: self.facts(&updated, true),
                    added,
                    changes,
                };
                (end, Some(updated))
            }
            Err(error) => {
                let end = RoundEnd::UpdateFailed {
                    facts,
                    added,
                    changes,
                    error,
                };
                (end, Some(info))
            }
        }
    }

    fn facts(&self, info: &stream::Info, managed: bool) -> StreamStatus {
        status_of(info, managed, self.version, self.domain)
    }
}

fn round(role: Role, stream: &str, owner: Option<String>, end: RoundEnd) -> Round {
    Round {
        role,
        stream: stream.to_owned(),
        owner_elsewhere: owner,
        end,
    }
}

/// The streams of the account, with their subjects (overlaps are decided before sending).
async fn listed(
    ctx: Nats<'_>,
    js: &jetstream::Context,
    refusals: &crate::nats::pool::ServerErrors,
) -> Result<Vec<OtherStream>, NatsError> {
    ctx.metrics.nats_request("list");
    let all = StreamClient::all(js)
        .await
        .map_err(|e| crate::nats::stream::refused(e, refusals, "STREAM.LIST"))?;
    Ok(all
        .into_iter()
        .map(|(name, subjects)| OtherStream { name, subjects })
        .collect())
}
