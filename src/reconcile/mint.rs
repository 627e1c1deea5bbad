//! The mint step, before validation: for a state store or a pub/sub that asks for it
//! (`jetstreamkv.io/credentials: mint`), a user allowed exactly what daprd does with its bucket
//! or its streams and their subjects, signed with the account signing key of the
//! NatsServerPolicy that allows the Component, and written to the Secret its `jwt` and `seedKey`
//! name (in its namespace, owned by it). Validation then reads that Secret as it reads any other.
//!
//! Nothing of the signing key leaves the operator's namespace: the Secret written holds the
//! user's JWT and seed only. A resync that finds the user as it would mint it writes nothing.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt as _};

use super::context::{AdminSecretError, Context, admin_secret};
use super::status::{Note, Reason};
use crate::crd::ConditionType;
use crate::credentials::minted::{self, MintError, MintedSecret, SigningKey};
use crate::credentials::provisioning::Identity;
use crate::dapr::{Component, parse_metadata};
use crate::failure::Problem;
use crate::secret_value::SecretValue;
use crate::settings::CredentialsMode;

/// The annotation on a minted Secret naming its user's public key (not secret).
pub const MINTED_USER_ANNOTATION: &str = "jetstreamkv.io/minted-user";
/// The annotation on a minted Secret naming the policy whose key signed it.
pub const MINTED_BY_ANNOTATION: &str = "jetstreamkv.io/minted-by";

/// Mints the Component's user when it asks for one; the problem that stops it, if any. Nothing
/// is done (None) for a Component that does not ask, or whose manifest validation refuses
/// (validation says why).
pub(crate) async fn prepare(ctx: &Context, component: &Component, key: &str) -> Option<Problem> {
    if !asks_to_mint(component) {
        return None;
    }
    let entries = parse_metadata(component).ok()?;
    let target = minted::minted_secret(&entries).ok()?;
    match mint(ctx, component, key, &entries, &target).await {
        Ok(notes) => {
            for note in notes {
                super::report::publish(ctx, component, note).await;
            }
            None
        }
        Err(e) => Some(Problem::of(ConditionType::CredentialsResolved, &e)),
    }
}

/// Whether a Component of ours asks for a minted user (with annotations that parse).
fn asks_to_mint(component: &Component) -> bool {
    let mode = if component.is_jetstream_state_store() {
        crate::settings::from_annotations(component.annotations())
            .ok()
            .map(|s| s.credentials)
    } else if component.is_jetstream_pubsub() {
        crate::pubsub::stream::stream_settings(component.annotations())
            .ok()
            .map(|s| s.credentials)
    } else {
        None
    };
    mode == Some(CredentialsMode::Mint)
}

async fn mint(
    ctx: &Context,
    component: &Component,
    key: &str,
    entries: &[crate::dapr::MetadataEntry],
    target: &MintedSecret,
) -> Result<Vec<Note>, MintError> {
    let namespace = component.namespace().unwrap_or_default();
    let Some((store, permissions)) = purpose(ctx, component, &namespace, entries).await? else {
        // Validation (or the stream's subjects step) says what is wrong.
        return Ok(Vec::new());
    };
    let not_allowed = || MintError::NotAllowed {
        namespace: namespace.clone(),
    };
    let policy = ctx.policy.as_ref().ok_or_else(not_allowed)?;
    let minting = policy
        .minting(&namespace, store.servers.expose())
        .ok_or_else(not_allowed)?;
    let signing_key = signing_key(ctx, &minting.policy, &minting.secret_name).await?;

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets
        .get_opt(&target.name)
        .await
        .map_err(|e| unavailable("reading the Secret", &e))?;
    let uid = component.uid().unwrap_or_default();
    let mut superseded = None;
    if let Some(existing) = &existing {
        let ours = existing
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.kind == "Component");
        if !ours {
            return Err(MintError::SecretConflict {
                secret: target.name.clone(),
            });
        }
        let data = existing.data.clone().unwrap_or_default();
        let value = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(SecretValue::new)
        };
        let (jwt, seed) = (value(&target.jwt_key), value(&target.seed_key));
        if let (Some(jwt), Some(s)) = (&jwt, &seed) {
            let now = jiff::Timestamp::now().as_second();
            if minted::is_current(jwt, s, &signing_key, &permissions, now) {
                return Ok(Vec::new());
            }
        }
        superseded = MintedUser::of(existing, target, key, signing_key.account());
    }
    // A new user every time: the one it replaces is revoked at this moment, which would revoke
    // a new JWT of the same user issued in the same second too.
    let user = nkeys::KeyPair::new_user();
    let mut notes = Vec::new();
    if let Some(earlier) = superseded {
        // Revoked before its Secret is replaced: a failure leaves the Secret naming it, and the
        // next attempt revokes it again.
        let note = revoke_user(ctx, &namespace, &store, &earlier, Why::Replaced)
            .await
            .map_err(MintError::SupersededNotRevoked)?;
        notes.push(note);
    }
    let jwt = minted::mint(&signing_key, &user.public_key(), key, &permissions).map_err(|_| {
        MintError::SigningKeyInvalid {
            policy: minting.policy.clone(),
            detail: "the signing key cannot sign".into(),
        }
    })?;
    let seed = user
        .seed()
        .map_err(|_| MintError::Unavailable("no seed".into()))?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                crate::crd::MANAGER.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (MINTED_USER_ANNOTATION.to_owned(), user.public_key()),
                (MINTED_BY_ANNOTATION.to_owned(), minting.policy.clone()),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: "dapr.io/v1alpha1".into(),
                kind: "Component".into(),
                name: component.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (target.jwt_key.clone(), ByteString(jwt.into_bytes())),
            (target.seed_key.clone(), ByteString(seed.into_bytes())),
        ])),
        ..Default::default()
    };
    secrets
        .patch(
            &target.name,
            &PatchParams::apply(crate::crd::MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| unavailable("writing the Secret", &e))?;
    tracing::info!(
        secret = %target.name,
        user = %user.public_key(),
        policy = %minting.policy,
        "minted a NATS user for the Component"
    );
    notes.insert(
        0,
        Note::normal(
        Reason::UserMinted,
        format!(
            "minted NATS user {user} (NatsServerPolicy {policy}) into Secret {secret}: publish {publish}; subscribe {subscribe}",
            user = user.public_key(),
            policy = minting.policy,
            secret = target.name,
            publish = permissions.publish.join(", "),
            subscribe = permissions.subscribe.join(", "),
        ),
    ),
    );
    Ok(notes)
}

/// The metadata values, resolved as validation resolves them, without the user's items (the
/// Secret they name may not be written yet); None when they cannot be (validation says why).
async fn values_without_user(
    ctx: &Context,
    namespace: &str,
    entries: &[crate::dapr::MetadataEntry],
) -> Option<Vec<(String, SecretValue)>> {
    let others: Vec<_> = entries
        .iter()
        .filter(|e| !e.name.eq_ignore_ascii_case("jwt") && !e.name.eq_ignore_ascii_case("seedKey"))
        .cloned()
        .collect();
    crate::secrets::resolve(&ctx.client, namespace, &others)
        .await
        .ok()
}

/// Where the Component's servers are (the bucket's, or a pub/sub's); None when they cannot be
/// read (validation says why).
async fn servers_of(
    ctx: &Context,
    component: &Component,
    namespace: &str,
    entries: &[crate::dapr::MetadataEntry],
) -> Option<crate::dapr::StoreConfig> {
    let values = values_without_user(ctx, namespace, entries).await?;
    if component.is_jetstream_pubsub() {
        let config = crate::pubsub::pubsub_config(&values).ok()?;
        Some(config.connection(""))
    } else {
        crate::dapr::store_config(&values).ok()
    }
}

/// The servers a minted user connects to and what it may do there: a state store's bucket, or
/// a pub/sub's streams and the subjects they hold (the rule the streams are made with, from the
/// Component and the declarative Subscriptions of its namespace). None when they are not known
/// (validation or the subjects step says why).
async fn purpose(
    ctx: &Context,
    component: &Component,
    namespace: &str,
    entries: &[crate::dapr::MetadataEntry],
) -> Result<Option<(crate::dapr::StoreConfig, minted::Permissions)>, MintError> {
    let Some(values) = values_without_user(ctx, namespace, entries).await else {
        return Ok(None);
    };
    if !component.is_jetstream_pubsub() {
        return Ok(crate::dapr::store_config(&values).ok().map(|store| {
            let permissions = minted::state_store(&store.bucket);
            (store, permissions)
        }));
    }
    let Ok(config) = crate::pubsub::pubsub_config(&values) else {
        return Ok(None);
    };
    if config.domain.is_some() {
        return Err(MintError::Unsupported("a JetStream domain"));
    }
    if config.api_prefix.is_some() {
        return Err(MintError::Unsupported("an apiPrefix"));
    }
    let Ok(settings) = crate::pubsub::stream::stream_settings(component.annotations()) else {
        return Ok(None);
    };
    let subscriptions = super::stream::subscriptions(ctx, namespace).await;
    let prepared = super::stream::topics::prepare(
        namespace,
        &component.name_any(),
        &config,
        &settings,
        subscriptions.as_deref(),
    );
    let Ok(found) = &prepared.subjects else {
        return Ok(None);
    };
    let subjects = &found.subjects;
    let mut streams = vec![prepared.stream.as_str()];
    if !subjects.dead_letters.is_empty() {
        streams.push(prepared.dead_letters.as_str());
    }
    let topics: Vec<String> = subjects
        .subjects
        .iter()
        .chain(&subjects.dead_letters)
        .cloned()
        .collect();
    let permissions = minted::pubsub(&streams, &topics, config.stream_name.is_none());
    Ok(Some((config.connection(&prepared.stream), permissions)))
}

/// When a Component being deleted has a minted user: revokes it where the policy that minted it
/// names a revocation Secret (the account's JWT, with the user revoked, signed again with the
/// operator key and pushed to the resolver on a system-account connection), and returns the
/// Event that says so; without one, the Warning Event that says the user stays valid. Nothing
/// (None) for a Component without a minted user. A revocation that fails keeps the Component
/// (its finalizer) and is retried.
pub(crate) async fn revoke(ctx: &Context, component: &Component) -> Result<Option<Note>, Problem> {
    if !component.is_jetstream_state_store() && !component.is_jetstream_pubsub() {
        return Ok(None);
    }
    let Ok(entries) = parse_metadata(component) else {
        return Ok(None);
    };
    let Ok(target) = minted::minted_secret(&entries) else {
        return Ok(None);
    };
    let namespace = component.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let failed = |detail: String| {
        Problem::of(
            ConditionType::CredentialsResolved,
            &MintError::RevocationFailed(detail),
        )
    };
    let secret = match secrets.get_opt(&target.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Ok(None),
        Err(e) => return Err(failed(unavailable("reading the Secret", &e).to_string())),
    };
    let uid = component.uid().unwrap_or_default();
    if !secret.owner_references().iter().any(|o| o.uid == uid) {
        return Ok(None);
    }
    let key = super::object_key(component);
    let Some(user) = MintedUser::of(&secret, &target, &key, "") else {
        return Ok(None);
    };
    let Some(store) = servers_of(ctx, component, &namespace, &entries).await else {
        return Err(failed("the Component's servers cannot be read".into()));
    };
    revoke_user(ctx, &namespace, &store, &user, Why::Deleted)
        .await
        .map(Some)
        .map_err(failed)
}

/// A user the operator minted, as its Secret names it.
struct MintedUser {
    /// Its public key.
    user: String,
    /// The policy whose signing key minted it.
    policy: String,
    /// Its account (from its JWT; `fallback` when the JWT no longer says).
    account: String,
    /// Whether the Secret still shows it is the Component's: only then is it revoked.
    proven: bool,
}

impl MintedUser {
    /// The user a minted Secret names (its annotations), None when it names none. `proven`:
    /// whether the Secret still shows it is the Component's (see [`minted::proves`]).
    fn of(secret: &Secret, target: &MintedSecret, component: &str, fallback: &str) -> Option<Self> {
        let annotations = secret.annotations();
        let user = annotations.get(MINTED_USER_ANNOTATION)?.clone();
        let policy = annotations.get(MINTED_BY_ANNOTATION)?.clone();
        let value = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(SecretValue::new)
        };
        let (jwt, seed) = (value(&target.jwt_key), value(&target.seed_key));
        let proven = minted::proves(jwt.as_ref(), seed.as_ref(), &user, component);
        let account = jwt
            .as_ref()
            .and_then(|t| crate::credentials::jwt::decode(t.expose()).ok())
            .map(|d| d.claims.issuer_account().to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| fallback.to_owned());
        Some(Self {
            user,
            policy,
            account,
            proven,
        })
    }
}

/// Why a minted user goes.
#[derive(Clone, Copy)]
enum Why {
    /// Its Component is deleted.
    Deleted,
    /// A new user replaces it.
    Replaced,
}

impl Why {
    fn which(self) -> &'static str {
        match self {
            Self::Deleted => "minted for this Component",
            Self::Replaced => "minted earlier for this Component (replaced by a new one)",
        }
    }
}

/// One read-modify-write of an account's JWT at a time: two revocations at once would each push
/// the account with only their own user revoked.
static REVOKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Revokes `minted` on the Component's servers where the policy that minted it names a
/// revocation Secret: the Event that says so. Without one, the Warning Event that says the user
/// stays valid. Err: what failed (retried).
async fn revoke_user(
    ctx: &Context,
    namespace: &str,
    store: &crate::dapr::StoreConfig,
    minted: &MintedUser,
    why: Why,
) -> Result<Note, String> {
    let MintedUser {
        user,
        policy,
        account,
        proven,
    } = minted;
    let which = why.which();
    if !proven {
        return Ok(Note::warning(
            Reason::MintedUserNotRevoked,
            format!(
                "the NATS user {user} that the Secret's jetstreamkv.io/minted-user annotation names \
                 as {which} is not revoked: the Secret no longer holds its seed or its JWT, so the \
                 operator cannot tell it is this Component's; if it is, revoke it in account \
                 {account} by hand"
            ),
        ));
    }
    let revocation = ctx
        .policy
        .as_ref()
        .and_then(|p| p.mint_credentials(policy))
        .and_then(|c| c.revocation_secret_name);
    let Some(revocation) = revocation else {
        let gone = match why {
            Why::Deleted => "its Secret goes with the Component",
            Why::Replaced => "whoever holds its seed and JWT can still connect",
        };
        return Ok(Note::warning(
            Reason::MintedUserNotRevoked,
            format!(
                "the NATS user {user} {which} is not revoked: NatsServerPolicy {policy} names no \
                 revocationSecretName, so it stays valid on the server ({gone}); revoke it in \
                 account {account}, or remove the signing key that issued it from the account"
            ),
        ));
    };
    let (operator_key, system) = revocation_keys(ctx, policy, &revocation).await?;
    let config = crate::credentials::provisioning::connect_as(store, &system);
    let connection = ctx
        .pool
        .connect_once(namespace, &config)
        .await
        .map_err(|e| format!("connecting with the system account's user: {e}"))?;
    let client = &connection.client;
    let timeout = ctx.pool.request_timeout();
    let ask = |subject: String, body: Vec<u8>| async move {
        match tokio::time::timeout(timeout, client.request(subject, body.into())).await {
            Ok(Ok(reply)) => Ok(reply.payload),
            Ok(Err(e)) => Err(format!("the resolver did not answer: {e}")),
            Err(_) => Err("the resolver did not answer in time".to_owned()),
        }
    };
    let _one_at_a_time = REVOKING.lock().await;
    let current = ask(
        format!("$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"),
        Vec::new(),
    )
    .await?;
    let current = String::from_utf8_lossy(&current).into_owned();
    let now = jiff::Timestamp::now().as_second();
    let updated = minted::revoke_in_account(&current, account, user, now, &operator_key)
        .map_err(|e| e.to_string())?;
    let reply = ask("$SYS.REQ.CLAIMS.UPDATE".to_owned(), updated.into_bytes()).await?;
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
    if let Some(error) = reply.get("error") {
        let said: String = error
            .get("description")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("refused")
            .chars()
            .take(200)
            .collect();
        return Err(format!("the resolver refused the account's JWT: {said}"));
    }
    tracing::info!(%user, %account, %policy, "revoked a NATS user minted for a Component");
    Ok(Note::normal(
        Reason::UserRevoked,
        format!("the NATS user {user} {which} is revoked in account {account}"),
    ))
}

/// The operator key and the system account's user a policy's revocation Secret holds.
async fn revocation_keys(
    ctx: &Context,
    policy: &str,
    secret_name: &str,
) -> Result<(nkeys::KeyPair, Identity), String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.operator_namespace);
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|e| unavailable("reading the revocation Secret", &e).to_string())?
        .ok_or_else(|| {
            format!("the revocationSecretName of NatsServerPolicy {policy} is not in the operator's namespace")
        })?;
    let data = secret.data.unwrap_or_default();
    let bytes = |k: &str| data.get(k).map(|v| v.0.clone()).unwrap_or_default();
    let seed = String::from_utf8(bytes("operatorSeed")).unwrap_or_default();
    let operator = nkeys::KeyPair::from_seed(seed.trim())
        .ok()
        .filter(|k| k.public_key().starts_with('O'))
        .ok_or_else(|| {
            format!(
                "the revocation Secret of NatsServerPolicy {policy} has no operatorSeed (SO...)"
            )
        })?;
    let creds = BTreeMap::from([("creds".to_owned(), bytes("systemCreds"))]);
    let system =
        Identity::from_secret(&creds, jiff::Timestamp::now().as_second()).map_err(|e| {
            format!("the systemCreds of NatsServerPolicy {policy}'s revocation Secret: {e}")
        })?;
    Ok((operator, system))
}

/// The signing key a policy names, read from its Secret in the operator's namespace.
async fn signing_key(
    ctx: &Context,
    policy: &str,
    secret_name: &str,
) -> Result<SigningKey, MintError> {
    let invalid = |detail: String| {
        tracing::warn!(
            policy = %policy,
            secret = %secret_name,
            namespace = %ctx.operator_namespace,
            problem = %detail,
            "the mintCredentials of a NatsServerPolicy cannot be used"
        );
        MintError::SigningKeyInvalid {
            policy: policy.to_owned(),
            detail,
        }
    };
    let data = match admin_secret(ctx, secret_name).await {
        Ok(data) => data,
        Err(AdminSecretError::Unusable(detail)) => return Err(invalid(detail)),
        Err(AdminSecretError::Unavailable(e)) => {
            return Err(unavailable("reading the signing key", &e));
        }
    };
    SigningKey::from_secret(&data).map_err(|e| invalid(e.to_string()))
}

/// A failed API call: its status code only (an API error can quote what was sent).
fn unavailable(what: &str, error: &kube::Error) -> MintError {
    let code = match error {
        kube::Error::Api(s) if s.code == 403 => {
            "HTTP 403: the operator may not do it; the chart grants it with \
             natsServerPolicy.mintUsers=true"
                .to_owned()
        }
        kube::Error::Api(s) => format!("HTTP {}", s.code),
        _ => "no answer".to_owned(),
    };
    tracing::warn!(%what, %code, "minting a user failed");
    MintError::Unavailable(format!("{what}: {code}"))
}
