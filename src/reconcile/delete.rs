//! Components that go away: one being deleted with our finalizer (`deletion-policy: delete`: its
//! bucket or streams are deleted when that is safe), one that changed type between
//! `state.jetstream` and `pubsub.jetstream` (the other kind's object goes), and one that is no
//! longer of either type (what the operator made for it is removed).

use kube::ResourceExt as _;
use kube::runtime::controller::Action;

use super::audit;
use super::context::Context;
use super::execute::connect;
use super::index::{Index, Owned};
use super::kind::{Bucket, Kind, Streams};
use super::report::{self, ReportError};
use super::status::{self, FINALIZER, Note, Reason};
use crate::crd::{ConditionType, KeyValueBucket};
use crate::dapr::Component;
use crate::failure::Problem;
use crate::nats::bucket;
use crate::nats::stream::planned::{Planned, PlannedAction};
use crate::nats::stream::{StreamClient, identity, is_managed_by};
use crate::pubsub::JetStreamStream;
use crate::settings::{READY_ANNOTATION, REASON_ANNOTATION};
use crate::validate::validate;

/// A Component being deleted. With our finalizer (deletion-policy: delete): delete its bucket or
/// streams if the operator created them for it and no other Component uses them, then let the
/// deletion finish; while that must wait, the KeyValueBucket or JetStreamStream says why
/// (`DeletionPending`).
pub async fn finalize(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError> {
    if !component.finalizers().iter().any(|f| f == FINALIZER) {
        ctx.pool.release(key);
        ctx.forget_rights(key);
        return Ok(Action::await_change());
    }
    if component.is_jetstream_pubsub() {
        finalize_kind::<Streams>(component, key, ctx).await
    } else {
        finalize_kind::<Bucket>(component, key, ctx).await
    }
}

/// What the deletion of a Component's bucket or streams did (in audit mode: would do): the
/// Event to publish, and each stream's plan.
pub struct Deletion {
    pub note: Note,
    pub planned: Vec<Planned>,
}

/// [`finalize`] for a Component of kind `K` that carries our finalizer.
async fn finalize_kind<K: Kind>(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError> {
    if ctx.mode.is_audit() {
        return audit_deletion::<K>(component, key, ctx).await;
    }
    // A minted user is revoked (or said not to be) before its Component goes.
    match super::mint::revoke(ctx, component).await {
        Ok(Some(note)) => report::publish(ctx, component, note).await,
        Ok(None) => {}
        Err(failure) => {
            let previous = ctx.previous::<K::Object>(key, component);
            let outcome = K::deletion_pending(key, previous.as_ref(), &failure);
            K::report(ctx, component, key, previous.as_ref(), &outcome).await?;
            return Ok(Action::requeue(ctx.backoff(key)));
        }
    }
    let note = if K::deletes(component) {
        match K::delete_provisioned(ctx, component, key).await {
            Ok(done) => done.note,
            Err(failure) => {
                // Keep the finalizer and say why the deletion waits.
                let previous = ctx.previous::<K::Object>(key, component);
                let outcome = K::deletion_pending(key, previous.as_ref(), &failure);
                K::report(ctx, component, key, previous.as_ref(), &outcome).await?;
                return Ok(Action::requeue(ctx.backoff(key)));
            }
        }
    } else {
        K::retained()
    };
    report::publish(ctx, component, note).await;
    // Applying nothing under our field manager drops our finalizer and annotations.
    report::release_component(ctx, component).await?;
    ctx.pool.release(key);
    ctx.forget_rights(key);
    ctx.metrics.set_state(key, None);
    ctx.index.remove(key);
    Ok(Action::await_change())
}

/// Audit mode: a Component being deleted keeps our finalizer (a Component is never changed), and
/// its KeyValueBucket or JetStreamStream shows what enforce mode would delete; nothing is.
async fn audit_deletion<K: Kind>(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError> {
    if !K::deletes(component) {
        tracing::info!(
            "audit mode: the Component keeps the operator's finalizer until enforce mode removes it"
        );
        return Ok(Action::await_change());
    }
    let previous = ctx.previous::<K::Object>(key, component);
    let (failure, planned) = match K::delete_provisioned(ctx, component, key).await {
        Ok(done) => match done.planned.iter().find(|p| p.action.mutates()) {
            Some(first) => (audit::not_carried_out(K::AVAILABLE, first), done.planned),
            None => (
                audit::not_carried_out(K::AVAILABLE, done.planned.first().unwrap_or(&nothing(key))),
                done.planned,
            ),
        },
        Err(failure) => (failure, Vec::new()),
    };
    let mut outcome = K::deletion_pending(key, previous.as_ref(), &failure);
    K::show_plan(&mut outcome, planned);
    K::report(ctx, component, key, previous.as_ref(), &outcome).await?;
    Ok(Action::requeue(ctx.resync()))
}

/// A plan of nothing for the Component `key`'s streams.
fn nothing(key: &str) -> Planned {
    Planned::new(key, PlannedAction::None, "nothing to delete")
}

/// Deletes the streams of a `pubsub.jetstream` Component being deleted (its topics' and its
/// dead-letter stream), each when the operator created it for this Component (never a stream
/// another Component or a person made).
pub(super) async fn delete_streams(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Deletion, Problem> {
    let validation = super::validated(ctx, component, crate::validate::validate_pubsub).await;
    let Some((config, settings)) = validation.valid() else {
        return Err(status::first_problem(&validation.findings));
    };
    let name = crate::pubsub::stream::stream_name(
        config.stream_name.as_deref(),
        settings,
        &component.namespace().unwrap_or_default(),
        &component.name_any(),
    );
    let client = super::execute::client(ctx.nats(), key, &config.connection(&name))
        .await
        .map_err(|e| Problem::of(ConditionType::Connected, &e))?;
    let domain = client.server_info().domain;
    let js = async_nats::jetstream::new(client);
    let namespace = component.namespace().unwrap_or_default();
    let place = Place {
        js: &js,
        domain: domain.as_deref(),
        namespace: &namespace,
    };
    let dead_letters = crate::pubsub::stream::dead_letter_stream_name(&name);
    let mut deleted = Vec::new();
    let mut kept = Vec::new();
    let mut planned = Vec::new();
    for (stream, topics) in [(name.as_str(), true), (dead_letters.as_str(), false)] {
        let why_kept = match delete_own_stream(ctx, &place, stream, key).await? {
            Gone::Deleted => {
                deleted.push(stream);
                planned.push(Planned::new(
                    stream,
                    PlannedAction::Delete,
                    "the Component is deleted with jetstreamkv.io/deletion-policy: delete: delete the stream and its messages",
                ));
                continue;
            }
            // No dead-letter stream: nothing to say.
            Gone::Absent if !topics => continue,
            Gone::Absent => format!("stream {stream} no longer exists; nothing to delete"),
            Gone::NotOurs => format!(
                "stream {stream} was not created by the operator for this Component, so it is kept"
            ),
            Gone::InUse(users) => format!("stream {stream} is kept: {users}"),
        };
        planned.push(Planned::new(stream, PlannedAction::None, why_kept.clone()));
        kept.push(why_kept);
    }
    let reason = if deleted.is_empty() {
        Reason::StreamRetained
    } else {
        Reason::StreamDeleted
    };
    let mut note: Vec<String> = (!deleted.is_empty())
        .then(|| {
            format!(
                "deleted stream {} and its messages (jetstreamkv.io/deletion-policy: delete)",
                deleted.join(" and ")
            )
        })
        .into_iter()
        .collect();
    note.extend(kept);
    Ok(Deletion {
        note: Note::normal(reason, note.join("; ")),
        planned,
    })
}

/// What became of a stream of a Component being deleted.
enum Gone {
    Deleted,
    Absent,
    NotOurs,
    /// Other Components still use it (who, as told).
    InUse(String),
}

/// The server the streams of a Component being deleted are on.
struct Place<'a> {
    js: &'a async_nats::jetstream::Context,
    domain: Option<&'a str>,
    /// The Component's namespace: users in it are named, others counted.
    namespace: &'a str,
}

/// Deletes the stream `name` when the operator created it for the Component `key` and no other
/// Component uses it.
async fn delete_own_stream(
    ctx: &Context,
    place: &Place<'_>,
    name: &str,
    key: &str,
) -> Result<Gone, Problem> {
    let stream = StreamClient::new(place.js, name);
    let live = stream
        .fetch()
        .await
        .map_err(|e| Problem::of(ConditionType::StreamAvailable, &e))?;
    let Some(live) = live else {
        return Ok(Gone::Absent);
    };
    if !is_managed_by(&live.config, key) {
        return Ok(Gone::NotOurs);
    }
    let identity = identity(&live, place.domain);
    if let Some(users) = still_used(&ctx.index, key, &identity, place.namespace) {
        return Ok(Gone::InUse(users));
    }
    if ctx.mode.is_audit() {
        // What enforce mode would delete; nothing is.
        return Ok(Gone::Deleted);
    }
    ctx.metrics.nats_request("delete");
    stream
        .delete()
        .await
        .map_err(|e| Problem::of(ConditionType::StreamAvailable, &e))?;
    Ok(Gone::Deleted)
}

/// Deletes the bucket of a Component being deleted, when that is safe; returns the Event to
/// publish.
pub(super) async fn delete_bucket(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Deletion, Problem> {
    let validation = super::validated(ctx, component, validate).await;
    let Some((store, _)) = validation.valid() else {
        return Err(status::first_problem(&validation.findings));
    };
    let name = &store.shown_bucket;
    let shown_stream = bucket::stream_name(name);
    let retained = |note: String| {
        Ok(Deletion {
            planned: vec![Planned::new(
                &shown_stream,
                PlannedAction::None,
                note.clone(),
            )],
            note: Note::normal(Reason::BucketRetained, note),
        })
    };
    let (client, live, _) = connect(ctx.nats(), key, store)
        .await
        .map_err(|e| Problem::of(ConditionType::Connected, &e))?;
    let Some(live) = live else {
        return retained(format!("bucket {name} no longer exists; nothing to delete"));
    };
    if !is_managed_by(&live.config, key) {
        return retained(format!(
            "bucket {name} was not created by the operator for this Component, so it is kept"
        ));
    }
    // Other users by the bucket's identity as the server reports it, never by URL text.
    let domain = client.server_info().domain;
    let identity = identity(&live, domain.as_deref());
    let namespace = component.namespace().unwrap_or_default();
    if let Some(users) = still_used(&ctx.index, key, &identity, &namespace) {
        return retained(format!("bucket {name} is kept: {users}"));
    }
    let deleted = Deletion {
        note: Note::normal(
            Reason::BucketDeleted,
            format!("deleted bucket {name} and its data (jetstreamkv.io/deletion-policy: delete)"),
        ),
        planned: vec![Planned::new(
            &shown_stream,
            PlannedAction::Delete,
            "the Component is deleted with jetstreamkv.io/deletion-policy: delete: delete the bucket and its data",
        )],
    };
    if ctx.mode.is_audit() {
        // What enforce mode would delete; nothing is.
        return Ok(deleted);
    }
    let js = async_nats::jetstream::new(client);
    ctx.metrics.nats_request("delete");
    StreamClient::new(&js, &bucket::stream_name(&store.bucket))
        .delete()
        .await
        .map_err(|e| Problem::of(ConditionType::BucketAvailable, &e))?;
    Ok(deleted)
}

/// Who else uses the bucket or stream with this identity, by what their KeyValueBuckets and
/// JetStreamStreams last reached (never by URL text), when anyone does: Components of
/// `namespace` named, Components of other namespaces counted, never named.
fn still_used(index: &Index, key: &str, identity: &str, namespace: &str) -> Option<String> {
    let users = index.other_users(key, identity);
    if users.is_empty() {
        return None;
    }
    let prefix = format!("{namespace}/");
    let (here, elsewhere): (Vec<&String>, Vec<&String>) =
        users.iter().partition(|u| u.starts_with(&prefix));
    let mut who: Vec<String> = here.iter().map(|u| u.to_string()).collect();
    if !elsewhere.is_empty() {
        who.push(format!(
            "{} Component(s) in other namespaces",
            elsewhere.len()
        ));
    }
    Some(format!("{} still use(s) it", who.join(", ")))
}

/// A Component that changed type between `state.jetstream` and `pubsub.jetstream`: the object
/// that reported the other kind (KeyValueBucket or JetStreamStream) goes at once, so that no
/// tool shows a Ready bucket or stream the Component no longer has. What was provisioned in
/// NATS stays.
pub async fn other_kind_gone(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<(), ReportError> {
    if component.is_jetstream_pubsub() {
        gone::<KeyValueBucket>(component, key, ctx).await?;
    } else {
        gone::<JetStreamStream>(component, key, ctx).await?;
    }
    Ok(())
}

/// Deletes the Component's object of kind `K` when one was written or is cached.
async fn gone<K: Owned>(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<bool, ReportError> {
    if !(ctx.index.forget_written::<K>(key) || ctx.cached::<K>(component).is_some()) {
        return Ok(false);
    }
    report::delete_owned::<K>(ctx, component).await?;
    tracing::info!(
        "the Component is no longer of the type it had; removed its {}",
        K::kind(&())
    );
    Ok(true)
}

/// A Component that is not (or no longer) of type `state.jetstream` or `pubsub.jetstream`:
/// remove what we made for it.
pub async fn forget(
    component: &Component,
    key: &str,
    ctx: &Context,
) -> Result<Action, ReportError> {
    ctx.pool.release(key);
    ctx.forget_rights(key);
    ctx.metrics.set_state(key, None);
    gone::<KeyValueBucket>(component, key, ctx).await?;
    let ours = component
        .annotations()
        .keys()
        .any(|k| k == READY_ANNOTATION || k == REASON_ANNOTATION)
        || component.finalizers().iter().any(|f| f == FINALIZER);
    if ours {
        // A pub/sub Component that changed type: its JetStreamStream goes (the stream stays).
        gone::<JetStreamStream>(component, key, ctx).await?;
        // Applying no annotations under our field manager removes the ones we own.
        report::release_component(ctx, component).await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::resource::{JetStreamStreamSpec, JetStreamStreamStatus, StreamStatus};

    fn jss(identity: &str) -> JetStreamStream {
        let mut jss = JetStreamStream::new("c", JetStreamStreamSpec::default());
        jss.status = Some(JetStreamStreamStatus {
            stream: Some(StreamStatus {
                identity: Some(identity.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        jss
    }

    #[test]
    fn users_in_the_namespace_are_named_and_the_others_only_counted() {
        let index = Index::default();
        assert_eq!(still_used(&index, "shop/maker", "events@1", "shop"), None);
        for key in [
            "shop/maker",
            "shop/user",
            "team-b/secret-app",
            "team-c/other",
        ] {
            index.seen(key, &jss("events@1"));
        }
        assert_eq!(
            still_used(&index, "shop/maker", "events@1", "shop").as_deref(),
            Some("shop/user, 2 Component(s) in other namespaces still use(s) it")
        );
        assert_eq!(still_used(&index, "shop/maker", "orders@1", "shop"), None);
    }
}
