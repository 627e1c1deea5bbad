//! The execute step: NATS only. Connects with the validated config, reads the live bucket, and
//! carries out the pure plan of [`crate::nats::bucket::plan`]; returns what it found and did, from
//! which [`super::status`] decides the conditions.

use async_nats::jetstream::stream;

use super::context::Context;
use crate::crd::BucketStatus;
use crate::dapr::StoreConfig;
use crate::metrics::Metrics;
use crate::nats::NatsError;
use crate::nats::bucket::{self, BlockReason, Desired, Plan};
use crate::nats::cluster;
use crate::nats::pool::{ConnectionPool, ServerErrors};
use crate::nats::stream::planned::Planned;
use crate::nats::stream::{Change, StreamClient, is_managed_by};
use crate::settings::BucketSettings;

pub use super::audit::Mode;

/// What the execute steps need: the shared NATS connections, the metrics, whether mutating
/// requests are sent, and where the provisioning identity of a NatsServerPolicy comes from. The
/// reconciler passes its context's ([`super::Context::nats`]); `apply` (Component files, no
/// cluster, so no policy) its own, without one.
#[derive(Clone, Copy)]
pub struct Nats<'a> {
    pub pool: &'a ConnectionPool,
    pub metrics: &'a Metrics,
    pub mode: Mode,
    /// The cluster whose policies may name a provisioning identity (see
    /// [`super::identity`]); None: every Component provisions with its own credentials.
    pub provisioning: Option<&'a Context>,
}

/// What the NATS side found and did: for a bucket, a [`BucketStep`]; for a pub/sub's streams,
/// a [`super::stream::StreamStep`].
#[derive(Debug)]
pub enum Progress<S = BucketStep> {
    /// Connecting, or reading the bucket, failed.
    NotConnected(NatsError),
    /// Connected to a server of this version; what happened to what it provisions, and in
    /// audit mode what enforce mode would have done (empty in enforce mode).
    Connected {
        version: String,
        step: Box<S>,
        planned: Vec<Planned>,
    },
}

/// What happened to the bucket. `facts` are the bucket's, as the status shows them.
#[derive(Debug)]
pub enum BucketStep {
    /// Created (or created again) by the operator.
    Created { facts: Option<BucketStatus> },
    /// Creating it failed.
    CreateFailed(NatsError),
    /// A bucket the operator only verified has disappeared.
    Missing,
    /// The stream is not a KV bucket, and why.
    NotKeyValue(String),
    /// Everything matches.
    InSync {
        facts: Option<BucketStatus>,
        managed: bool,
    },
    /// Updated in place (`adopt`: a bucket taken over); `changes` as the Event lists them.
    Updated {
        facts: Option<BucketStatus>,
        changes: String,
        adopt: bool,
    },
    /// The update failed.
    UpdateFailed {
        facts: Option<BucketStatus>,
        changes: String,
        error: NatsError,
    },
    /// Differences that are not applied; `why` says why the server cannot apply them, for
    /// [`BlockReason::UnsupportedByServer`] (else empty).
    Blocked {
        facts: Option<BucketStatus>,
        reason: BlockReason,
        changes: String,
        why: String,
    },
    /// A clustered stream that cannot take writes now: quorum lost, or no leader yet.
    Unavailable {
        facts: Option<BucketStatus>,
        error: NatsError,
    },
    /// A lower `replicas` waits until every replica is current (`behind` says which are not).
    ScaleDownWaits {
        facts: Option<BucketStatus>,
        changes: String,
        behind: String,
    },
    /// Another creator won twice in a row.
    CreateConflict,
    /// Audit mode: a create or an update planned and not carried out (`facts`: the bucket as
    /// it is, when it exists).
    NotCarriedOut {
        facts: Option<BucketStatus>,
        planned: Planned,
    },
}

/// The pool's client for provisioning what `store` names, with `key` recorded as its user, when
/// it is connected now: with the provisioning identity of the NatsServerPolicy that allows the
/// Component, if it names one, else with the Component's own credentials (see
/// [`super::identity`]).
pub async fn client(
    ctx: Nats<'_>,
    key: &str,
    store: &StoreConfig,
) -> Result<async_nats::Client, NatsError> {
    client_as(ctx, key, store)
        .await
        .map(|(client, _, _)| client)
}

/// [`client`], and what the server reports as errors on its connection (a request it refuses
/// is told as refused, see [`StreamClient::with_refusals`]).
pub async fn client_with_refusals(
    ctx: Nats<'_>,
    key: &str,
    store: &StoreConfig,
) -> Result<(async_nats::Client, ServerErrors), NatsError> {
    client_as(ctx, key, store)
        .await
        .map(|(client, _, refusals)| (client, refusals))
}

/// [`client_with_refusals`], and the connection config it connected with.
async fn client_as(
    ctx: Nats<'_>,
    key: &str,
    store: &StoreConfig,
) -> Result<(async_nats::Client, StoreConfig, ServerErrors), NatsError> {
    let connection = match ctx.provisioning {
        Some(cluster) => super::identity::connection(cluster, key, store).await?,
        None => super::identity::Connection::own(store),
    };
    let store = connection.config.as_ref();
    let (client, refusals) = match ctx.pool.connect_with_errors(key, store).await {
        Ok(connected) => connected,
        Err(e) => return Err(connection.refused(told(ctx, store, e))),
    };
    if client.connection_state() != async_nats::connection::State::Connected {
        return Err(told(
            ctx,
            store,
            NatsError::Unreachable {
                servers: store.redacted_servers.join(","),
                detail: "the connection is down and reconnecting".into(),
            },
        ));
    }
    // A connection that works makes its last protocol violation history.
    ctx.pool.connection_works(store);
    Ok((client, connection.config.into_owned(), refusals))
}

/// A failure on the connection of `store`, as told: when the server broke the protocol (the
/// relay dropped it), that is what is told; the failure the client saw (a lost link, a timeout)
/// is only its consequence.
pub fn told(ctx: Nats<'_>, store: &StoreConfig, error: NatsError) -> NatsError {
    match ctx.pool.violation(store) {
        Some(violation) => NatsError::ProtocolViolation {
            servers: store.redacted_servers.join(","),
            what: violation.describe(),
        },
        None => error,
    }
}

/// A connected client and the live bucket (None when it does not exist). One NATS read.
pub async fn connect(
    ctx: Nats<'_>,
    key: &str,
    store: &StoreConfig,
) -> Result<(async_nats::Client, Option<stream::Info>, ServerErrors), NatsError> {
    let (client, used, refusals) = client_as(ctx, key, store).await?;
    let js = async_nats::jetstream::new(client.clone());
    ctx.metrics.nats_request("info");
    let live = StreamClient::new(&js, &bucket::stream_name(&store.bucket))
        .with_refusals(&refusals)
        .fetch()
        .await
        .map_err(|e| told(ctx, &used, e))?;
    Ok((client, live, refusals))
}

/// Connects, and brings the bucket to `settings`.
pub async fn execute(
    ctx: Nats<'_>,
    key: &str,
    store: &StoreConfig,
    settings: &BucketSettings,
    previously_managed: Option<bool>,
) -> Progress {
    let (client, live, refusals) = match connect(ctx, key, store).await {
        Ok(c) => c,
        Err(e) => return Progress::NotConnected(e),
    };
    let server = client.server_info();
    // The stream as shown: its name holds the bucket's, which may have come from a Secret.
    let shown_stream = bucket::stream_name(&store.shown_bucket);
    let js = async_nats::jetstream::new(client.clone());
    let target = Target {
        ctx,
        bucket: &StreamClient::new(&js, &bucket::stream_name(&store.bucket))
            .with_refusals(&refusals),
        desired: Desired {
            bucket: &store.bucket,
            owner: key,
            settings,
        },
        previously_managed,
        facts: bucket::ServerFacts {
            clustered: server.cluster.is_some(),
            version: bucket::parse_version(&server.version),
        },
        server: &server,
        shown_stream: &shown_stream,
    };
    let mut planned = None;
    let step = apply(&target, live, &mut planned).await;
    Progress::Connected {
        version: crate::nats::remote_text(&server.version),
        step: Box::new(step),
        planned: planned.into_iter().collect(),
    }
}

/// Where and what to apply.
struct Target<'a> {
    ctx: Nats<'a>,
    bucket: &'a StreamClient<'a>,
    desired: Desired<'a>,
    previously_managed: Option<bool>,
    /// What the server can do.
    facts: bucket::ServerFacts,
    /// The server, for the bucket's facts (version, identity).
    server: &'a async_nats::ServerInfo,
    /// The stream as shown (the bucket name may have come from a Secret).
    shown_stream: &'a str,
}

impl Target<'_> {
    fn facts(&self, info: &stream::Info, managed: bool) -> Option<BucketStatus> {
        let mut facts = bucket::status_of(info, managed, Some(self.server));
        facts.stream = self.shown_stream.to_owned();
        Some(facts)
    }
}

/// Plans against the live bucket and carries the plan out. At most two rounds: a create that
/// races with another creator plans again against the bucket that won. In audit mode the plan
/// is described in `planned` and nothing that changes the bucket is sent.
async fn apply(
    t: &Target<'_>,
    mut live: Option<stream::Info>,
    planned: &mut Option<Planned>,
) -> BucketStep {
    let owner = t.desired.owner;
    // A clustered stream that cannot take writes is not available, whatever its settings say.
    if let Some(info) = &live
        && let Some(error) = cluster::availability_problem(info)
    {
        let managed = is_managed_by(&info.config, owner);
        return BucketStep::Unavailable {
            facts: t.facts(info, managed),
            error,
        };
    }
    for _ in 0..2 {
        let plan = bucket::plan(
            &t.desired,
            live.as_ref().map(|i| &i.config),
            t.previously_managed,
            &t.facts,
        );
        let live_facts = |managed: bool| live.as_ref().and_then(|i| t.facts(i, managed));
        if t.ctx.mode.is_audit() {
            let described = plan.describe(t.shown_stream, &t.facts);
            *planned = Some(described.clone());
            if described.action.mutates() {
                let managed = live
                    .as_ref()
                    .is_some_and(|i| is_managed_by(&i.config, owner));
                return BucketStep::NotCarriedOut {
                    facts: live_facts(managed),
                    planned: described,
                };
            }
        }
        return match plan {
            Plan::Create(config) | Plan::Recreate(config) => {
                t.ctx.metrics.nats_request("create");
                match t.bucket.create(*config).await {
                    Ok(info) if is_managed_by(&info.config, owner) => BucketStep::Created {
                        facts: t.facts(&info, true),
                    },
                    Ok(info) => {
                        // Someone else created it first: verify what they made.
                        live = Some(info);
                        continue;
                    }
                    Err(e) => BucketStep::CreateFailed(e),
                }
            }
            Plan::CannotCreate(why) => {
                BucketStep::CreateFailed(NatsError::UnsupportedByServer { detail: why })
            }
            Plan::Missing => BucketStep::Missing,
            Plan::NotKeyValue(problem) => BucketStep::NotKeyValue(problem),
            Plan::InSync { managed } => BucketStep::InSync {
                facts: live_facts(managed),
                managed,
            },
            Plan::Update {
                config,
                changes,
                adopt,
            } => {
                let changes = listed(&changes);
                if let Some(behind) = live
                    .as_ref()
                    .and_then(|i| cluster::scale_down_blocker(i, t.desired.settings.replicas))
                {
                    return BucketStep::ScaleDownWaits {
                        facts: live_facts(true),
                        changes,
                        behind,
                    };
                }
                t.ctx.metrics.nats_request("update");
                match t.bucket.update(*config).await {
                    Ok(info) => BucketStep::Updated {
                        facts: t.facts(&info, true),
                        changes,
                        adopt,
                    },
                    Err(error) => BucketStep::UpdateFailed {
                        facts: live_facts(true),
                        changes,
                        error,
                    },
                }
            }
            Plan::Blocked {
                managed,
                reason,
                changes,
            } => BucketStep::Blocked {
                facts: live_facts(managed),
                reason,
                why: match reason {
                    BlockReason::UnsupportedByServer => bucket::why_unsupported(&changes, &t.facts),
                    _ => String::new(),
                },
                changes: listed(&changes),
            },
        };
    }
    BucketStep::CreateConflict
}

fn listed(changes: &[Change]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
