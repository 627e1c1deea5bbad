//! The one validation pipeline (pure): a `state.jetstream` Component, and the values of the
//! Secrets it names when they could be read, into a connection config and bucket settings, or the
//! problems that stop it; the same for a `pubsub.jetstream` Component ([`validate_pubsub`]),
//! into its config and stream settings. Annotations of the other kind are refused by name.
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
use crate::dapr::metadata::SecretStores;
use crate::dapr::store::{POD_TEMPLATES, StoreConfig, store_config_with_origins};
use crate::dapr::{Component, MetadataEntry, ValueSource, parse_metadata};
use crate::failure::{Failure, Problem};
use crate::pubsub::stream::{StreamSettings, stream_settings};
use crate::pubsub::{PubsubConfig, pubsub_config_with_origins};
use crate::secret_value::SecretValue;
use crate::secrets::SecretError;
use crate::settings::{BucketSettings, CredentialsMode, from_annotations};

/// What validation knows of the values held in Secrets.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// Read from the cluster (the reconciler): each metadata entry's value in order, or why a
    /// Secret could not be read.
    Read(&'a Result<Vec<(String, SecretValue)>, SecretError>),
    /// Not readable here (`check`, the webhook): placeholders, with a note on what is skipped.
    Offline,
    /// Read from the local secret stores of a folder of Component files (`apply`, as
    /// self-hosted daprd reads them): each metadata entry's value in order, or why a store or
    /// secret could not be read. The Component's `auth.secretStore` names one of those stores.
    SelfHosted(&'a Result<Vec<(String, SecretValue)>, SecretError>),
}

impl Values<'_> {
    /// The metadata as Dapr reads it where these values come from.
    fn parse(
        self,
        component: &Component,
    ) -> Result<Vec<MetadataEntry>, crate::dapr::ComponentError> {
        match self {
            Self::SelfHosted(_) => {
                crate::dapr::metadata::parse_metadata_in(component, SecretStores::Local)
            }
            Self::Read(_) | Self::Offline => parse_metadata(component),
        }
    }
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

/// The outcome of validation: for a state store, its connection config and bucket settings;
/// for a pub/sub ([`PubsubValidation`]), its config and stream settings.
#[derive(Clone, Debug)]
pub struct Validation<Config = StoreConfig, Settings = BucketSettings> {
    /// Problems and notes.
    pub findings: ComponentFindings,
    /// The settings from the annotations, when every step up to them passed.
    pub settings: Option<Settings>,
    /// The connection config, when every step up to it passed.
    pub config: Option<Config>,
}

/// What validation makes of a `pubsub.jetstream` Component.
pub type PubsubValidation = Validation<PubsubConfig, StreamSettings>;

impl<C, S> Default for Validation<C, S> {
    fn default() -> Self {
        Self {
            findings: ComponentFindings::default(),
            settings: None,
            config: None,
        }
    }
}

/// A validated connection config, as the admin's server policy judges it.
pub trait Servers {
    /// `natsURL`, as shown, and how the Component authenticates.
    fn servers(&self) -> (&SecretValue, &Vec<String>, &crate::dapr::NatsAuth);
}

impl Servers for StoreConfig {
    fn servers(&self) -> (&SecretValue, &Vec<String>, &crate::dapr::NatsAuth) {
        (&self.servers, &self.redacted_servers, &self.auth)
    }
}

impl Servers for PubsubConfig {
    fn servers(&self) -> (&SecretValue, &Vec<String>, &crate::dapr::NatsAuth) {
        (&self.servers, &self.redacted_servers, &self.auth)
    }
}

impl<C, S> Validation<C, S> {
    /// The problem that stops the reconcile, if any.
    pub fn first_problem(&self) -> Option<&Problem> {
        self.findings.problems.first()
    }

    /// The connection config and settings, when nothing is wrong.
    pub fn valid(&self) -> Option<(&C, &S)> {
        match (&self.config, &self.settings) {
            (Some(config), Some(settings)) if self.findings.problems.is_empty() => {
                Some((config, settings))
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
    let entries = values.parse(component);
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
    let mints = out
        .settings
        .as_ref()
        .is_some_and(|s| s.credentials == CredentialsMode::Mint);
    if let Some(e) = minted_secret_problem(mints, &entries) {
        out.problem(CredentialsResolved, &e);
        out.settings = None;
        return out;
    }
    let is_offline = matches!(values, Values::Offline);
    let Some((known, values)) = entry_values(&entries, values, &mut out.findings) else {
        return out;
    };
    match store_config_with_origins(&values, origin_in(&entries)) {
        Err(e) => out.problem(CredentialsResolved, &e),
        Ok(store) if out.clean() => out.config = Some(store),
        Ok(_) => {}
    }
    // The republish subjects are checked against the bucket, once it is known.
    if let (Some(settings), Some(store)) = (out.settings.as_mut(), out.config.as_ref())
        && settings.republish_destination.is_some()
    {
        if is_offline && origin_in(&entries)("bucket").is_some() {
            out.findings.notes.push(
                "the bucket name comes from a Secret, so only the operator checks the republish \
                 subjects against it (the source within $KV.<bucket>.>, the destination outside)"
                    .to_owned(),
            );
        } else if let Err(e) = crate::nats::bucket::check_republish(&store.bucket, settings) {
            out.problem(ConfigSynced, &e);
        }
    }
    check_credentials(&known, now_unix, &mut out.findings);
    out
}

/// For a Component that asks for a minted user (`mints`), what is wrong with where it would go:
/// the one Secret its `jwt` and `seedKey` name (both kinds, one rule).
fn minted_secret_problem(
    mints: bool,
    entries: &[MetadataEntry],
) -> Option<crate::credentials::minted::MintError> {
    if !mints {
        return None;
    }
    crate::credentials::minted::minted_secret(entries).err()
}

/// Each metadata entry's value when known (None: held in a Secret, offline).
type Known = Vec<(String, Option<SecretValue>)>;

/// Each metadata entry's value, known (inline, or read) or unknown offline (then a placeholder
/// that passes the checks of its item, and a note); None when a Secret could not be read (a
/// problem then says why).
fn entry_values(
    entries: &[MetadataEntry],
    values: Values<'_>,
    findings: &mut ComponentFindings,
) -> Option<(Known, Vec<(String, SecretValue)>)> {
    let known: Vec<(String, Option<SecretValue>)> = match values {
        Values::Read(Ok(read)) | Values::SelfHosted(Ok(read)) => read
            .iter()
            .map(|(n, v)| (n.clone(), Some(v.clone())))
            .collect(),
        Values::Read(Err(e)) | Values::SelfHosted(Err(e)) => {
            findings
                .problems
                .push(Problem::of(ConditionType::CredentialsResolved, e));
            return None;
        }
        Values::Offline => entries.iter().map(|e| offline(e, findings)).collect(),
    };
    let values = known
        .iter()
        .map(|(name, v)| (name.clone(), v.clone().unwrap_or_else(|| placeholder(name))))
        .collect();
    Some((known, values))
}

/// Where an item's value came from, when it must be shown instead of the value: a natsURL or
/// bucket read from a Secret is shown as its origin, never as itself.
fn origin_in(entries: &[MetadataEntry]) -> impl Fn(&str) -> Option<String> + '_ {
    move |item: &str| {
        entries
            .iter()
            .find(|e| e.name == item)
            .and_then(|e| match &e.source {
                ValueSource::Secret { name, key } => {
                    Some(crate::dapr::store::shown_origin(name, key))
                }
                ValueSource::Inline(_) => None,
            })
    }
}

/// The NATS user credential checks. They do not depend on the other items: run them whenever
/// both values are known and usable, so that a broken bucket name does not hide a broken JWT.
fn check_credentials(
    known: &[(String, Option<SecretValue>)],
    now_unix: i64,
    findings: &mut ComponentFindings,
) {
    let find = |wanted: &str| {
        known
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, v)| v.as_ref())
    };
    match (find("jwt"), find("seedKey")) {
        (Some(Some(jwt)), Some(Some(seed))) if usable(jwt) && usable(seed) => {
            if let Err(e) = crate::credentials::check_user_credentials(jwt, seed, now_unix) {
                findings
                    .problems
                    .push(Problem::of(ConditionType::CredentialsResolved, &e));
            }
        }
        (Some(None), Some(_)) | (Some(_), Some(None)) => findings.notes.push(
            "the user JWT and seed are not both inline, so only the operator checks them \
             (decoded, a user JWT, not expired, the seed matching it)"
                .to_owned(),
        ),
        _ => {}
    }
}

/// The same pipeline for a `pubsub.jetstream` Component: Dapr's metadata rules, the stream
/// annotations, the Secret values, the pub/sub's own checks (natsURL and credentials with the
/// state store's rules) and the NATS user credential checks.
pub fn validate_pubsub(
    component: &Component,
    values: Values<'_>,
    now_unix: i64,
) -> PubsubValidation {
    use ConditionType::{ConfigSynced, CredentialsResolved};
    let mut out = PubsubValidation::default();
    let entries = values.parse(component);
    if let Err(e) = &entries {
        out.problem(CredentialsResolved, e);
    }
    match stream_settings(component.annotations()) {
        Err(e) => out.problem(ConfigSynced, &e),
        Ok(settings) if out.clean() => out.settings = Some(settings),
        Ok(_) => {}
    }
    let Ok(entries) = entries else {
        return out;
    };
    let mints = out
        .settings
        .as_ref()
        .is_some_and(|s| s.credentials == CredentialsMode::Mint);
    if let Some(e) = minted_secret_problem(mints, &entries) {
        out.problem(CredentialsResolved, &e);
        out.settings = None;
        return out;
    }
    let Some((known, values)) = entry_values(&entries, values, &mut out.findings) else {
        return out;
    };
    match pubsub_config_with_origins(&values, origin_in(&entries)) {
        Err(e) => out.problem(CredentialsResolved, &e),
        Ok(config) if out.clean() => out.config = Some(config),
        Ok(_) => {}
    }
    check_credentials(&known, now_unix, &mut out.findings);
    out
}

/// The admin's server policy, once the connection config is known: a server no
/// NatsServerPolicy allows is a problem (`ServerNotAllowed`), decided before any DNS lookup or
/// connection. `decide` is the cluster's policies applied to the namespace (see
/// [`crate::policy`]).
pub fn check_server_policy<C: Servers, S>(
    validation: &mut Validation<C, S>,
    component: &Component,
    decide: impl FnOnce(&str, &str, bool, &[(&'static str, String)]) -> crate::policy::Decision,
) where
    Validation<C, S>: NamesOnServer,
{
    let names = validation.names_on_server(component);
    let servers = validation.config.as_ref().map(Servers::servers);
    let problem = server_policy_problem(component, servers, |ns, url, creds| {
        decide(ns, url, creds, &names)
    });
    validation.findings.problems.extend(problem);
}

/// The names a Component's bucket or streams have on the NATS server, each with what it is
/// ("bucket", "stream"), for a policy's `requireNamespacePrefix`. Empty when not known yet.
pub trait NamesOnServer {
    fn names_on_server(&self, component: &Component) -> Vec<(&'static str, String)>;
}

impl NamesOnServer for Validation<StoreConfig, BucketSettings> {
    fn names_on_server(&self, _: &Component) -> Vec<(&'static str, String)> {
        self.config
            .iter()
            .map(|c| ("bucket", c.bucket.clone()))
            .collect()
    }
}

/// The dead-letter stream's name extends the stream's, so the stream's is the one to hold.
impl NamesOnServer for PubsubValidation {
    fn names_on_server(&self, component: &Component) -> Vec<(&'static str, String)> {
        let (Some(config), Some(settings)) = (&self.config, &self.settings) else {
            return Vec::new();
        };
        let name = crate::pubsub::stream::stream_name(
            config.stream_name.as_deref(),
            settings,
            &component.namespace().unwrap_or_default(),
            &component.name_any(),
        );
        vec![("stream", name)]
    }
}

/// The `ServerNotAllowed` (or `NamespacePrefixRequired`) problem, when no NatsServerPolicy
/// allows the servers (or the names on them). `servers`: `natsURL`, as shown, and how the
/// Component authenticates (None: not known).
fn server_policy_problem(
    component: &Component,
    servers: Option<(&SecretValue, &Vec<String>, &crate::dapr::NatsAuth)>,
    decide: impl FnOnce(&str, &str, bool) -> crate::policy::Decision,
) -> Option<Problem> {
    let (servers, redacted_servers, auth) = servers?;
    let has_credentials = *auth != crate::dapr::NatsAuth::None;
    let namespace = component.namespace().unwrap_or_default();
    let why = match decide(&namespace, servers.expose(), has_credentials) {
        crate::policy::Decision::Allowed => return None,
        crate::policy::Decision::NameNotAllowed(why) => {
            return Some(Problem::new(
                ConditionType::Connected,
                "NamespacePrefixRequired",
                why,
                crate::failure::Retry::Resync,
            ));
        }
        crate::policy::Decision::NotAllowed(why) => why,
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
            redacted_servers.join(",")
        )
    } else {
        why
    };
    Some(Problem::new(
        ConditionType::Connected,
        "ServerNotAllowed",
        message,
        crate::failure::Retry::Resync,
    ))
}

/// The namespace's quota, once every other check passed (a Component refused for another
/// reason takes no place): `QuotaExceeded`, naming the limit and the usage, when the Component
/// does not fit beside the Components of its namespace admitted before it (see
/// [`crate::quota::admit`]). Decided before any NATS call. `namespace`: every Component of the
/// namespace that provisions something (this one included), as `(namespace/name, creation
/// time in seconds, demand)`.
pub fn check_quota<C, S>(
    validation: &mut Validation<C, S>,
    component: &Component,
    quotas: &[crate::quota::NamespaceQuota],
    namespace: &[(String, i64, crate::quota::Demand)],
) {
    if quotas.is_empty() || validation.valid().is_none() {
        return;
    }
    let Some(demand) = crate::quota::Demand::of(component) else {
        return;
    };
    let key = format!(
        "{}/{}",
        component.namespace().unwrap_or_default(),
        component.name_any()
    );
    let others = namespace.iter().map(|(k, t, d)| (k.as_str(), *t, *d));
    if let Some(exceeded) = crate::quota::admit(quotas, others, &key, &demand) {
        let condition = match demand.provision {
            crate::quota::Provision::Bucket => ConditionType::BucketAvailable,
            crate::quota::Provision::Stream => ConditionType::StreamAvailable,
        };
        validation.problem(condition, &exceeded);
    }
}

/// Offline, an inline value is known and a Secret's is not (a note says so).
fn offline(
    entry: &MetadataEntry,
    findings: &mut ComponentFindings,
) -> (String, Option<SecretValue>) {
    match &entry.source {
        ValueSource::Inline(value) => (entry.name.clone(), Some(value.clone())),
        ValueSource::Secret { name, key } => {
            findings.notes.push(format!(
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

/// Runs the pipeline offline on one `state.jetstream` or `pubsub.jetstream` Component at time `now_unix`: what `check`
/// and the webhook report.
pub fn check_component(component: &Component, now_unix: i64) -> ComponentFindings {
    if component.is_jetstream_pubsub() {
        return validate_pubsub(component, Values::Offline, now_unix).findings;
    }
    validate(component, Values::Offline, now_unix).findings
}

/// What the checks make of one object, given as the JSON the API server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectCheck {
    /// Not a Dapr Component of type `state.jetstream` or `pubsub.jetstream`: not the operator's business.
    NotOurs,
    /// A `dapr.io/v1alpha1` Component whose shape cannot be read, and why.
    Unreadable(String),
    /// A `state.jetstream` or `pubsub.jetstream` Component, checked.
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
        Ok(c) if c.is_ours() => ObjectCheck::Checked(check_component(&c, now_unix)),
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
        assert!(v.config.is_none());
    }

    #[test]
    fn offline_the_same_component_passes_with_a_note() {
        let c = component(FROM_SECRET, "");
        let found = check_component(&c, NOW);
        assert!(found.problems.is_empty(), "{found:?}");
        assert_eq!(found.notes.len(), 1);
    }

    #[test]
    fn a_minted_user_needs_jwt_and_seed_key_from_one_secret_everywhere() {
        let mint = "jetstreamkv.io/credentials: mint";
        let refs = "  - name: jwt\n    secretKeyRef: {name: store-nats, key: jwt}\n  - name: \
                    seedKey\n    secretKeyRef: {name: store-nats, key: seed}\n";
        let good = component(&format!("{FROM_SECRET}{refs}"), mint);
        assert!(check_component(&good, NOW).problems.is_empty());
        let reasons = |c: &Component| -> Vec<String> {
            check_component(c, NOW)
                .problems
                .iter()
                .map(|p| p.reason.clone())
                .collect()
        };
        // Without the items, or with another value: refused by check and the webhook (the
        // same function), and by the reconciler.
        assert_eq!(
            reasons(&component(FROM_SECRET, mint)),
            ["MintedSecretReference"]
        );
        let two = refs.replacen("store-nats", "other", 1);
        assert_eq!(
            reasons(&component(&format!("{FROM_SECRET}{two}"), mint)),
            ["MintedSecretReference"]
        );
        let values = read(&[("natsURL", "nats://nats:4222"), ("bucket", "orders")]);
        let v = validate(&component(FROM_SECRET, mint), Values::Read(&values), NOW);
        assert_eq!(v.findings.problems[0].reason, "MintedSecretReference");
        // A bad value is refused with what it accepts.
        assert_eq!(
            reasons(&component(
                FROM_SECRET,
                "jetstreamkv.io/credentials: borrowed"
            )),
            ["InvalidAnnotation"]
        );
        // A pub/sub, by the same rule.
        let as_pubsub = |mut c: Component| {
            c.spec.type_ = "pubsub.jetstream".into();
            c
        };
        assert!(
            check_component(&as_pubsub(good.clone()), NOW)
                .problems
                .is_empty()
        );
        assert_eq!(
            reasons(&as_pubsub(component(FROM_SECRET, mint))),
            ["MintedSecretReference"]
        );
        assert_eq!(
            reasons(&as_pubsub(component(
                FROM_SECRET,
                "jetstreamkv.io/credentials: borrowed"
            ))),
            ["InvalidAnnotation"]
        );
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
        assert!(v.settings.is_none() && v.config.is_none());
    }

    fn pubsub(metadata: &str, annotations: &str) -> Component {
        let mut c = component(metadata, annotations);
        c.spec.type_ = "pubsub.jetstream".into();
        c
    }

    #[test]
    fn a_pubsub_component_runs_the_same_steps_with_the_stream_annotations() {
        let c = pubsub(FROM_SECRET, "jetstreamkv.io/subjects: \"orders.>\"");
        let values = read(&[("natsURL", "nats://u:hunter2@nats:4222"), ("bucket", "x")]);
        let v = validate_pubsub(&c, Values::Read(&values), NOW);
        let (config, settings) = v.valid().expect("valid");
        assert_eq!(settings.subjects, ["orders.>"]);
        // From a Secret: shown as where it came from, never as itself.
        assert_eq!(config.redacted_servers, ["<Secret s, key url>"]);
        assert_eq!(config.auth.kind(), "userinfo");
        // Offline (check, webhook): a note, no problem.
        let found = check_component(&c, NOW);
        assert!(found.problems.is_empty(), "{found:?}");
        assert_eq!(found.notes.len(), 1);

        // Each step's problem, in the reconciler's order.
        let c = pubsub(FROM_SECRET, "jetstreamkv.io/retention: workqueue");
        let reasons: Vec<_> = check_component(&c, NOW)
            .problems
            .into_iter()
            .map(|p| (p.condition, p.reason))
            .collect();
        assert_eq!(
            reasons,
            [(ConditionType::ConfigSynced, "WorkQueueRefused".to_owned())]
        );
        let c = pubsub("  - name: natsURL\n    value: \"http://nats\"\n", "");
        let p = check_component(&c, NOW).problems;
        assert_eq!(p[0].reason, "InvalidNatsURL");
        assert_eq!(p[0].condition, ConditionType::CredentialsResolved);
        let c = pubsub(
            "  - name: natsURL\n    value: nats://nats:4222\n  - name: jwt\n    value: eyJ\n",
            "",
        );
        assert_eq!(
            check_component(&c, NOW).problems[0].reason,
            "JwtWithoutSeed"
        );
        // The stream settings too: `check` and the webhook refuse what NATS would.
        let c = pubsub(
            FROM_SECRET,
            "jetstreamkv.io/duplicate-window: 2h, jetstreamkv.io/max-age: 1h",
        );
        let p = check_component(&c, NOW).problems;
        assert_eq!(p[0].reason, "InvalidAnnotation");
        assert!(p[0].message.contains("no longer than the max age"), "{p:?}");
    }

    #[test]
    fn the_server_policy_refuses_a_pubsub_server_without_showing_a_secret_url() {
        let c = pubsub(FROM_SECRET, "");
        let values = read(&[("natsURL", "nats://u:hunter2@nats.internal:4222")]);
        let mut v = validate_pubsub(&c, Values::Read(&values), NOW);
        check_server_policy(&mut v, &c, |_, url, creds, _| {
            assert!(url.contains("hunter2") && creds);
            crate::policy::Decision::NotAllowed("nats.internal:4222 is not allowed".into())
        });
        let p = v.findings.problems.first().expect("refused");
        assert_eq!(
            (p.condition, p.reason.as_str()),
            (ConditionType::Connected, "ServerNotAllowed")
        );
        assert!(!p.message.contains("nats.internal"), "{}", p.message);
        assert!(p.message.contains("<Secret s, key url>"), "{}", p.message);
        assert!(v.valid().is_none());
    }

    #[test]
    fn the_quota_is_checked_last_and_names_the_limit_and_usage() {
        use crate::quota::{Demand, NamespaceQuota};
        let inline =
            "  - name: natsURL\n    value: nats://nats:4222\n  - name: bucket\n    value: orders\n";
        let c = component(inline, "jetstreamkv.io/max-bytes: \"600\"");
        let quota = [NamespaceQuota {
            max_bytes: Some(1000),
            ..Default::default()
        }];
        let earlier = Demand::of(&component(inline, "jetstreamkv.io/max-bytes: \"500\"")).unwrap();
        let this = Demand::of(&c).unwrap();
        let namespace = [("n/a".to_owned(), 1, earlier), ("n/c".to_owned(), 2, this)];
        let mut v = validate(&c, Values::Offline, NOW);
        check_quota(&mut v, &c, &quota, &namespace);
        let p = v.first_problem().expect("refused");
        assert_eq!(
            (p.condition, p.reason.as_str(), p.retry),
            (
                ConditionType::BucketAvailable,
                "QuotaExceeded",
                Retry::Resync
            )
        );
        assert!(p.message.contains("1000 bytes"), "{}", p.message);
        assert!(p.message.contains("500 are used"), "{}", p.message);
        // The earlier one gone: admitted.
        let mut v = validate(&c, Values::Offline, NOW);
        check_quota(&mut v, &c, &quota, &namespace[1..]);
        assert!(v.valid().is_some());
        // A Component refused for another reason is not held to the quota as well.
        let bad = component(inline, "jetstreamkv.io/history: \"0\"");
        let mut v = validate(&bad, Values::Offline, NOW);
        check_quota(&mut v, &bad, &quota, &namespace);
        let reasons: Vec<_> = v.findings.problems.iter().map(|p| &p.reason).collect();
        assert_eq!(reasons, ["InvalidAnnotation"]);
    }

    #[test]
    fn republish_subjects_are_checked_against_the_bucket_everywhere() {
        let inline =
            "  - name: natsURL\n    value: nats://nats:4222\n  - name: bucket\n    value: orders\n";
        let loop_ = "jetstreamkv.io/republish-destination: \"$KV.orders.copy.>\"";
        let found = check_component(&component(inline, loop_), NOW);
        let reasons: Vec<_> = found.problems.iter().map(|p| p.reason.as_str()).collect();
        assert_eq!(reasons, ["InvalidAnnotation"]);
        assert_eq!(found.problems[0].condition, ConditionType::ConfigSynced);
        assert!(found.problems[0].message.contains("in a loop"));
        // The reconciler agrees, with the values it read.
        let values = read(&[("natsURL", "nats://nats:4222"), ("bucket", "orders")]);
        let v = validate(&component(inline, loop_), Values::Read(&values), NOW);
        assert!(v.valid().is_none());
        assert_eq!(v.first_problem().unwrap().reason, "InvalidAnnotation");

        let fine = "jetstreamkv.io/republish-destination: \"changes.>\", \
                    jetstreamkv.io/republish-source: \"$KV.orders.>\"";
        let v = validate(&component(inline, fine), Values::Read(&values), NOW);
        let (_, settings) = v.valid().expect("valid");
        assert_eq!(settings.republish_source, None, "every key, normalised");

        // A bucket from a Secret: offline, a note instead of a guess.
        let from_secret = "  - name: natsURL\n    value: nats://nats:4222\n  - name: bucket\n    \
                           secretKeyRef: {name: s, key: bucket}\n";
        let found = check_component(&component(from_secret, loop_), NOW);
        assert!(found.problems.is_empty(), "{found:?}");
        assert!(
            found.notes.iter().any(|n| n.contains("republish")),
            "{found:?}"
        );
        let values = read(&[("natsURL", "nats://nats:4222"), ("bucket", "orders")]);
        let v = validate(&component(from_secret, loop_), Values::Read(&values), NOW);
        assert_eq!(v.first_problem().unwrap().reason, "InvalidAnnotation");
    }
}
