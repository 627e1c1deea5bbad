//! The one validation pipeline (pure): a `state.jetstream` Component, and the values of the
//! Secrets it names when they could be read, into a connection config and bucket settings, or the
//! problems that stop it.
//!
//! The reconciler runs it with the Secret values it read; `check` (CI) and the admission webhook
//! run it offline, where a value held in a Secret is a placeholder that passes the checks of its
//! item (and a note says what was skipped). The three therefore cannot disagree: a problem carries
//! the same CamelCase reason everywhere, and the first one is what the KeyValueBucket's `Ready`
//! condition shows.
//!
//! The steps, in order: Dapr's metadata rules ([`crate::dapr::parse_metadata`]), the bucket
//! settings annotations ([`crate::settings::from_annotations`]), the Secret values, the store's
//! own checks ([`crate::dapr::store::store_config_with_origins`]) and, when both are known, the NATS user credential
//! checks ([`crate::credentials::check_user_credentials`]). Independent steps all run, so that one
//! CI run shows every fix needed; what a step needs from an earlier failed one is skipped.

use kube::ResourceExt as _;
use serde::Deserialize as _;

use crate::crd::ConditionType;
use crate::dapr::store::{POD_TEMPLATES, StoreConfig, store_config_with_origins};
use crate::dapr::{Component, MetadataEntry, ValueSource, parse_metadata};
use crate::failure::{Failure, Problem};
use crate::secret_value::SecretValue;
use crate::secrets::SecretError;
use crate::settings::{BucketSettings, from_annotations};

/// What validation knows of the values held in Secrets.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// Read from the cluster (the reconciler): each metadata entry's value in order, or why a
    /// Secret could not be read.
    Read(&'a Result<Vec<(String, SecretValue)>, SecretError>),
    /// Not readable here (`check`, the webhook): placeholders, with a note on what is skipped.
    Offline,
}

/// What the checks say about one Component: problems in the reconciler's order, and notes on
/// checks skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentFindings {
    /// The first one is what the operator's `Ready` condition shows.
    pub problems: Vec<Problem>,
    /// Checks skipped because a value comes from a Secret (offline only).
    pub notes: Vec<String>,
}

impl ComponentFindings {
    /// The problems that only a change of the manifest can fix.
    pub fn permanent_problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_permanent())
    }
}

/// The outcome of validation.
#[derive(Clone, Debug, Default)]
pub struct Validation {
    /// Problems and notes.
    pub findings: ComponentFindings,
    /// The bucket settings, when every step up to them passed.
    pub settings: Option<BucketSettings>,
    /// The store's connection config, when every step up to it passed.
    pub store: Option<StoreConfig>,
}

impl Validation {
    /// The problem that stops the reconcile, if any.
    pub fn first_problem(&self) -> Option<&Problem> {
        self.findings.problems.first()
    }

    /// The connection config and settings, when nothing is wrong.
    pub fn valid(&self) -> Option<(&StoreConfig, &BucketSettings)> {
        match (&self.store, &self.settings) {
            (Some(store), Some(settings)) if self.findings.problems.is_empty() => {
                Some((store, settings))
            }
            _ => None,
        }
    }

    fn problem(&mut self, condition: ConditionType, failure: &(impl Failure + std::fmt::Display)) {
        self.findings.problems.push(Problem::of(condition, failure));
    }

    fn clean(&self) -> bool {
        self.findings.problems.is_empty()
    }
}

/// Runs the pipeline on one `state.jetstream` Component at time `now_unix`.
pub fn validate(component: &Component, values: Values<'_>, now_unix: i64) -> Validation {
    use ConditionType::{ConfigSynced, CredentialsResolved};
    let mut out = Validation::default();
    let entries = parse_metadata(component);
    if let Err(e) = &entries {
        out.problem(CredentialsResolved, e);
    }
    match from_annotations(component.annotations()) {
        Err(e) => out.problem(ConfigSynced, &e),
        Ok(settings) if out.clean() => out.settings = Some(settings),
        Ok(_) => {}
    }
    let Ok(entries) = entries else {
        return out;
    };
    // Each entry's value: known (inline, or read), or unknown offline (then a placeholder).
    let known: Vec<(String, Option<SecretValue>)> = match values {
        Values::Read(Ok(read)) => read
            .iter()
            .map(|(n, v)| (n.clone(), Some(v.clone())))
            .collect(),
        Values::Read(Err(e)) => {
            out.problem(CredentialsResolved, e);
            return out;
        }
        Values::Offline => entries.iter().map(|e| offline(e, &mut out)).collect(),
    };
    let values: Vec<(String, SecretValue)> = known
        .iter()
        .map(|(name, v)| (name.clone(), v.clone().unwrap_or_else(|| placeholder(name))))
        .collect();
    // A natsURL or bucket read from a Secret is shown as where it came from, never as itself.
    let origin = |item: &str| {
        entries
            .iter()
            .find(|e| e.name == item)
            .and_then(|e| match &e.source {
                ValueSource::Secret { name, key } => {
                    Some(crate::dapr::store::shown_origin(name, key))
                }
                ValueSource::Inline(_) => None,
            })
    };
    match store_config_with_origins(&values, origin) {
        Err(e) => out.problem(CredentialsResolved, &e),
        Ok(store) if out.clean() => out.store = Some(store),
        Ok(_) => {}
    }
    // The credential checks do not depend on the store's other items: run them whenever both
    // values are known and usable, so that a broken bucket name does not hide a broken JWT.
    let find = |wanted: &str| {
        known
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.as_ref())
    };
    match (find("jwt"), find("seedKey")) {
        (Some(Some(jwt)), Some(Some(seed))) if usable(jwt) && usable(seed) => {
            if let Err(e) = crate::credentials::check_user_credentials(jwt, seed, now_unix) {
                out.problem(CredentialsResolved, &e);
            }
        }
        (Some(None), Some(_)) | (Some(_), Some(None)) => out.findings.notes.push(
            "the user JWT and seed are not both inline, so only the operator checks them \
             (decoded, a user JWT, not expired, the seed matching it)"
                .to_owned(),
        ),
        _ => {}
    }
    out
}

/// The admin's server policy, once the store's config is known: a server no NatsServerPolicy
/// allows is a problem (`ServerNotAllowed`), decided before any DNS lookup or connection.
/// `decide` is the cluster's policies applied to the namespace (see [`crate::policy`]).
pub fn check_server_policy(
    validation: &mut Validation,
    component: &Component,
    decide: impl FnOnce(&str, &str, bool) -> crate::policy::Decision,
) {
    let Some(store) = &validation.store else {
        return;
    };
    let namespace = component.namespace().unwrap_or_default();
    let has_credentials = store.auth != crate::dapr::NatsAuth::None;
    let crate::policy::Decision::NotAllowed(why) =
        decide(&namespace, store.servers.expose(), has_credentials)
    else {
        return;
    };
    // The first natsURL item counts (Dapr's rule), whatever its case: when it came from a
    // Secret, the refusal (which names the server) is not shown.
    let from_secret = parse_metadata(component).is_ok_and(|entries| {
        entries
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case("natsURL"))
            .is_some_and(|e| matches!(e.source, ValueSource::Secret { .. }))
    });
    let message = if from_secret {
        format!(
            "the natsURL from {} names a NATS server that no NatsServerPolicy allows for namespace {namespace}; use an allowed server or ask the cluster admin to allow it",
            store.redacted_servers.join(",")
        )
    } else {
        why
    };
    validation.findings.problems.push(Problem::new(
        ConditionType::Connected,
        "ServerNotAllowed",
        message,
        crate::failure::Retry::Resync,
    ));
}

/// Offline, an inline value is known and a Secret's is not (a note says so).
fn offline(entry: &MetadataEntry, out: &mut Validation) -> (String, Option<SecretValue>) {
    match &entry.source {
        ValueSource::Inline(value) => (entry.name.clone(), Some(value.clone())),
        ValueSource::Secret { name, key } => {
            out.findings.notes.push(format!(
                "metadata item {:?} comes from key {key:?} of Secret {name:?}, which is not read \
                 offline: the Secret must exist in the Component's namespace and the key must \
                 hold a valid, non-empty value",
                entry.name
            ));
            (entry.name.clone(), None)
        }
    }
}

/// Whether a credential can be checked: present, and not a per-pod template (which
/// [`store_config_with_origins`] reports already).
fn usable(value: &SecretValue) -> bool {
    !value.is_empty() && !POD_TEMPLATES.iter().any(|t| value.expose().contains(t))
}

/// A stand-in for a value held in a Secret that passes the offline checks of its item: the
/// value is unknown, so only its presence counts.
fn placeholder(name: &str) -> SecretValue {
    let value = if name.eq_ignore_ascii_case("natsURL") {
        "nats://value-from-secret.invalid:4222"
    } else {
        "value-from-secret"
    };
    SecretValue::new(value)
}

/// Runs the pipeline offline on one `state.jetstream` Component at time `now_unix`: what `check`
/// and the webhook report.
pub fn check_component(component: &Component, now_unix: i64) -> ComponentFindings {
    validate(component, Values::Offline, now_unix).findings
}

/// What the checks make of one object, given as the JSON the API server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectCheck {
    /// Not a Dapr Component of type `state.jetstream`: not the operator's business.
    NotOurs,
    /// A `dapr.io/v1alpha1` Component whose shape cannot be read, and why.
    Unreadable(String),
    /// A `state.jetstream` Component, checked.
    Checked(ComponentFindings),
}

/// Runs [`check_component`] on one object of any kind, as JSON: the admission webhook's entry
/// point, with the same selection of objects as `check` on YAML documents.
pub fn check_object(object: &serde_json::Value, now_unix: i64) -> ObjectCheck {
    let field = |k: &str| object.get(k).and_then(serde_json::Value::as_str);
    if !is_component_type(field("apiVersion"), field("kind")) {
        return ObjectCheck::NotOurs;
    }
    match Component::deserialize(object) {
        Err(e) => ObjectCheck::Unreadable(e.to_string()),
        Ok(c) if c.is_jetstream_state_store() => {
            ObjectCheck::Checked(check_component(&c, now_unix))
        }
        Ok(_) => ObjectCheck::NotOurs,
    }
}

/// Whether an `apiVersion` and `kind` are a Dapr Component's.
pub fn is_component_type(api_version: Option<&str>, kind: Option<&str>) -> bool {
    use k8s_openapi::Resource as _;
    api_version == Some(Component::API_VERSION) && kind == Some(Component::KIND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Retry;
    use crate::secrets::SecretError;

    const NOW: i64 = 1_800_000_000;

    fn component(metadata: &str, annotations: &str) -> Component {
        serde_yaml::from_str(&format!(
            "metadata:\n  name: c\n  namespace: n\n  annotations: {{{annotations}}}\nspec:\n  \
             type: state.jetstream\n  version: v1\n  metadata:\n{metadata}"
        ))
        .unwrap()
    }

    const FROM_SECRET: &str = "  - name: natsURL\n    secretKeyRef: {name: s, key: url}\n  - \
                               name: bucket\n    value: orders\n";

    fn read(values: &[(&str, &str)]) -> Result<Vec<(String, SecretValue)>, SecretError> {
        Ok(values
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(*v)))
            .collect())
    }

    #[test]
    fn the_reconciler_validates_the_values_it_read() {
        let c = component(FROM_SECRET, "");
        let values = read(&[("natsURL", "nats://nats:4222"), ("bucket", "orders")]);
        let v = validate(&c, Values::Read(&values), NOW);
        let (store, settings) = v.valid().expect("valid");
        assert_eq!(store.bucket, "orders");
        assert_eq!(settings, &BucketSettings::default());
        assert!(v.findings.notes.is_empty());

        let bad = read(&[("natsURL", "http://nats"), ("bucket", "orders")]);
        let v = validate(&c, Values::Read(&bad), NOW);
        let p = v.first_problem().expect("a problem");
        assert_eq!(
            (p.condition, p.reason.as_str(), p.retry),
            (
                ConditionType::CredentialsResolved,
                "InvalidNatsURL",
                Retry::AwaitChange
            )
        );
        assert!(
            v.settings.is_some(),
            "settings passed before the store failed"
        );
        assert!(v.store.is_none());
    }

    #[test]
    fn offline_the_same_component_passes_with_a_note() {
        let c = component(FROM_SECRET, "");
        let found = check_component(&c, NOW);
        assert!(found.problems.is_empty(), "{found:?}");
        assert_eq!(found.notes.len(), 1);
    }

    #[test]
    fn a_secret_that_cannot_be_read_comes_after_the_annotations() {
        let c = component(FROM_SECRET, "jetstreamkv.io/history: \"0\"");
        let failed = Err(SecretError::Api {
            secret: "s".into(),
            detail: "boom".into(),
        });
        let v = validate(&c, Values::Read(&failed), NOW);
        let reasons: Vec<_> = v.findings.problems.iter().map(|p| &p.reason).collect();
        assert_eq!(reasons, ["InvalidAnnotation", "SecretReadFailed"]);
        assert_eq!(
            v.findings.problems[0].condition,
            ConditionType::ConfigSynced
        );
        assert_eq!(v.findings.problems[1].retry, Retry::Backoff);
        assert!(v.settings.is_none() && v.store.is_none());
    }
}
