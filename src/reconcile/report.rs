//! The report step: Kubernetes writes only, and only what changed. The KeyValueBucket (spec, then
//! status), the Component's summary annotations and finalizer, and Events; what to write is
//! decided by [`super::status`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::Event;
use kube::{Resource as _, ResourceExt as _};
use serde_json::json;

use super::context::Context;
use super::index::{Owned, Written};
use super::status::{self, Note, Outcome};
use crate::crd::{KeyValueBucket, KeyValueBucketStatus, MANAGER};
use crate::dapr::Component;
use crate::failure::{Failure, Retry};

/// An API write failed; the object is retried with back-off.
#[derive(Debug, thiserror::Error)]
#[error("writing {what} failed: {source}")]
pub struct ReportError {
    what: std::borrow::Cow<'static, str>,
    #[source]
    source: kube::Error,
}

impl Failure for ReportError {
    fn reason(&self) -> &'static str {
        "ApiWriteFailed"
    }

    fn retry(&self) -> Retry {
        Retry::Backoff
    }
}

/// Writes what changed of a state store's `outcome`, given what was written before.
pub async fn report(
    component: &Component,
    key: &str,
    ctx: &Context,
    previous: Option<&Written>,
    outcome: &Outcome,
) -> Result<Vec<Condition>, ReportError> {
    let decided = Decided {
        spec: &outcome.spec,
        wants_finalizer: outcome.wants_finalizer,
        done: &outcome.events,
        warnings: &[],
    };
    let status = |previous: &KeyValueBucketStatus, generation| {
        status::bucket_status(
            previous,
            outcome,
            generation,
            component.metadata.generation,
            Time(jiff::Timestamp::now()),
        )
    };
    let written =
        write_owned::<KeyValueBucket>(component, key, ctx, previous, decided, status).await?;
    Ok(written.reconcile.conditions)
}

/// What a status decision of any kind gives the report, besides the status.
pub struct Decided<'a, Spec> {
    /// What the operator understood of the Component.
    pub spec: &'a Spec,
    /// Whether the Component should carry our finalizer; None when unknown.
    pub wants_finalizer: Option<bool>,
    /// Events for what was done.
    pub done: &'a [Note],
    /// Warnings the Component alone gives: published when `spec` changes.
    pub warnings: &'a [Note],
}

/// Writes what changed, the same for every kind: 1. the owned object (`K`: a KeyValueBucket
/// or a JetStreamStream), owned by the Component (garbage-collected with it), when what was
/// understood changed or it is not in the cache (new, or deleted by hand: then our memory of it
/// is stale; an apply of identical content changes nothing on the server); 2. its status, made
/// by `status` from the previous one and the object's generation, when anything in it changed
/// (or not cached); 3. and 4. the Component's annotations and finalizer, and the Events
/// ([`tell_component`]). Returns the status written.
pub async fn write_owned<K: Owned>(
    component: &Component,
    key: &str,
    ctx: &Context,
    previous: Option<&Written<K::Spec, K::Status>>,
    decided: Decided<'_, K::Spec>,
    status: impl FnOnce(&K::Status, Option<i64>) -> K::Status,
) -> Result<K::Status, ReportError> {
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        &component.namespace().unwrap_or_default(),
    );
    let cached = ctx.cached::<K>(component).is_some();
    let mut generation = previous.and_then(|p| p.generation);
    let understood_anew = previous.is_none_or(|p| p.spec != *decided.spec);
    if !cached || understood_anew {
        generation = apply_owned(ctx, &api, component, json!(decided.spec), kind.clone()).await?;
    }
    if understood_anew {
        for note in decided.warnings {
            publish(ctx, component, note.clone()).await;
        }
    }
    let previous_status = previous.map(|p| p.status.clone()).unwrap_or_default();
    let status = status(&previous_status, generation);
    if (!cached || status != previous_status)
        && let Err(e) = apply_status(
            ctx,
            &api,
            &component.name_any(),
            json!(status),
            format!("{kind} status"),
        )
        .await
    {
        // Deleted by hand: forget what we wrote so the next attempt writes it again.
        ctx.index.forget_written::<K>(key);
        return Err(e);
    }
    let written = Written {
        spec: decided.spec.clone(),
        generation,
        status: status.clone(),
    };
    ctx.index.set_written::<K>(key, written);
    tell_component(
        ctx,
        component,
        K::conditions(&previous_status),
        K::conditions(&status),
        decided.wants_finalizer,
        decided.done,
    )
    .await?;
    if let Some(healer) = &ctx.heal
        && !ctx.mode.is_audit()
        && let Some(since) = turned_ready(
            previous.is_some().then(|| K::conditions(&previous_status)),
            K::conditions(&status),
        )
    {
        crate::heal::on_ready(ctx, healer, component, &kind, &since).await;
    }
    Ok(status)
}

/// When Ready turned True between `previous` (None: nothing written before) and `conditions`:
/// its `lastTransitionTime` as the API server keeps it (whole seconds), so that the same
/// transition read back from the API (after a restart, by another leader) has the same text.
fn turned_ready(previous: Option<&[Condition]>, conditions: &[Condition]) -> Option<String> {
    let ready = |cs: &[Condition]| {
        cs.iter()
            .find(|c| c.type_ == crate::crd::ConditionType::Ready.as_str())
            .cloned()
    };
    let now = ready(conditions).filter(|c| c.status == "True")?;
    if previous.and_then(ready).is_some_and(|c| c.status == "True") {
        return None;
    }
    let at = now.last_transition_time.0;
    Some(
        jiff::Timestamp::from_second(at.as_second())
            .unwrap_or(at)
            .to_string(),
    )
}

/// The last two writes of a report, the same for a KeyValueBucket and a JetStreamStream:
/// 3. the summary annotations on the Component, for tools that only look at it, with our
/// finalizer when the deletion policy asks for one (one apply for both), when they changed;
/// 4. the Events: what was done (`done`), and Ready transitions from `previous` to `conditions`.
pub(crate) async fn tell_component(
    ctx: &Context,
    component: &Component,
    previous: &[Condition],
    conditions: &[Condition],
    wants_finalizer: Option<bool>,
    done: &[Note],
) -> Result<(), ReportError> {
    if let Some(patch) = status::component_patch(component, conditions, wants_finalizer) {
        apply_component(ctx, component, patch).await?;
    }
    for note in status::events(previous, conditions, done) {
        publish(ctx, component, note).await;
    }
    Ok(())
}

/// Applies the spec of the object of kind `K` the operator keeps for a Component (same name and
/// namespace, owned by it: garbage-collected with it); returns its generation.
pub(crate) async fn apply_owned<K>(
    ctx: &Context,
    api: &Api<K>,
    component: &Component,
    spec: serde_json::Value,
    what: impl Into<std::borrow::Cow<'static, str>>,
) -> Result<Option<i64>, ReportError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use k8s_openapi::Resource as _;
    let name = component.name_any();
    let owner = OwnerReference {
        api_version: Component::API_VERSION.into(),
        kind: Component::KIND.into(),
        name: name.clone(),
        uid: component.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let object = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {
            "name": name,
            "namespace": component.namespace().unwrap_or_default(),
            "ownerReferences": [owner],
            "labels": {"app.kubernetes.io/managed-by": MANAGER},
        },
        "spec": spec,
    });
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|source| ReportError {
            what: what.into(),
            source,
        })?;
    ctx.metrics
        .api_write(&format!("apply-{}", K::kind(&()).to_lowercase()));
    Ok(applied.meta().generation)
}

/// Applies the status of the object of kind `K` the operator keeps for a Component.
pub(crate) async fn apply_status<K>(
    ctx: &Context,
    api: &Api<K>,
    name: &str,
    status: serde_json::Value,
    what: impl Into<std::borrow::Cow<'static, str>>,
) -> Result<(), ReportError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(|source| ReportError {
        what: what.into(),
        source,
    })?;
    ctx.metrics
        .api_write(&format!("apply-{}-status", K::kind(&()).to_lowercase()));
    Ok(())
}

/// Deletes the object of kind `K` the operator keeps for a Component (same name and
/// namespace; gone already is fine), and forgets what was written of it.
pub async fn delete_owned<K: Owned>(
    ctx: &Context,
    component: &Component,
) -> Result<(), ReportError> {
    ctx.index.forget_written::<K>(&super::object_key(component));
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        &component.namespace().unwrap_or_default(),
    );
    match api
        .delete(&component.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => ctx
            .metrics
            .api_write(&format!("delete-{}", K::kind(&()).to_lowercase())),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(source) => {
            let what = format!("{} deletion", K::kind(&()));
            return Err(ReportError {
                what: what.into(),
                source,
            });
        }
    }
    Ok(())
}

/// Applies nothing but the Component's name under our field manager: drops our annotations and
/// finalizer.
pub async fn release_component(ctx: &Context, component: &Component) -> Result<(), ReportError> {
    use k8s_openapi::Resource as _;
    let patch = json!({
        "apiVersion": Component::API_VERSION,
        "kind": Component::KIND,
        "metadata": {
            "name": component.name_any(),
            "namespace": component.namespace().unwrap_or_default(),
        },
    });
    apply_component(ctx, component, patch).await
}

/// The one write to a Component (annotations, finalizer); none in audit mode, which never
/// changes a Component.
pub(crate) async fn apply_component(
    ctx: &Context,
    component: &Component,
    patch: serde_json::Value,
) -> Result<(), ReportError> {
    if ctx.mode.is_audit() {
        tracing::debug!("audit mode: the Component's annotations and finalizer are not written");
        return Ok(());
    }
    let api: Api<Component> = Api::namespaced(
        ctx.client.clone(),
        &component.namespace().unwrap_or_default(),
    );
    api.patch_metadata(
        &component.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(|source| ReportError {
        what: "Component annotations".into(),
        source,
    })?;
    ctx.metrics.api_write("apply-component-annotations");
    Ok(())
}

/// The longest Event note the API server takes (events.k8s.io/v1 refuses a longer one, and
/// the Event would be lost).
const MAX_NOTE_BYTES: usize = 1024;

/// A note cut to [`MAX_NOTE_BYTES`] on a character boundary, marked as cut.
fn fit_note(mut note: String) -> String {
    const MARK: &str = "...";
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES - MARK.len();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str(MARK);
    }
    note
}

/// Publishes an Event on the Component; a failure is logged, never fatal.
pub async fn publish(ctx: &Context, component: &Component, note: Note) {
    let event = Event {
        type_: note.type_,
        reason: note.reason,
        note: Some(fit_note(note.note)),
        action: "Reconcile".into(),
        secondary: None,
    };
    match ctx
        .recorder
        .publish(&event, &component.object_ref(&()))
        .await
    {
        Ok(()) => ctx.metrics.api_write("event"),
        Err(e) => {
            ctx.metrics.api_write_failed();
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
}

#[cfg(test)]
mod note_tests {
    use super::*;

    #[test]
    fn a_note_fits_the_api_servers_limit_on_a_character_boundary() {
        assert_eq!(fit_note("short".into()), "short");
        let exact = "x".repeat(MAX_NOTE_BYTES);
        assert_eq!(fit_note(exact.clone()), exact);
        let long = "é".repeat(MAX_NOTE_BYTES);
        let fitted = fit_note(long);
        assert!(fitted.len() <= MAX_NOTE_BYTES, "{}", fitted.len());
        assert!(fitted.ends_with("..."));
    }
}

#[cfg(test)]
mod turned_ready_tests {
    use super::*;

    fn ready(status: &str, at: &str) -> Vec<Condition> {
        vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(at.parse().expect("time")),
        }]
    }

    #[test]
    fn ready_turns_true_from_false_or_from_nothing_written() {
        let t = "2026-12-07T18:00:00Z";
        assert_eq!(
            turned_ready(
                Some(&ready("False", "2026-12-07T17:00:00Z")),
                &ready("True", t)
            ),
            Some(t.to_string())
        );
        assert_eq!(
            turned_ready(Some(&ready("Unknown", t)), &ready("True", t)),
            Some(t.into())
        );
        assert_eq!(turned_ready(Some(&[]), &ready("True", t)), Some(t.into()));
        assert_eq!(turned_ready(None, &ready("True", t)), Some(t.into()));
        // Ready and still Ready (a resync), or not Ready: no transition to heal for.
        assert_eq!(
            turned_ready(Some(&ready("True", t)), &ready("True", t)),
            None
        );
        assert_eq!(
            turned_ready(Some(&ready("True", t)), &ready("False", t)),
            None
        );
        assert_eq!(turned_ready(None, &ready("False", t)), None);
        // Written with a fraction, read back from the API server without: one transition.
        assert_eq!(
            turned_ready(None, &ready("True", "2026-12-07T18:00:00.813172868Z")),
            Some(t.into())
        );
    }
}
