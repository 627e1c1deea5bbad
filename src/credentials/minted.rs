//! Users minted per Component (pure): the account signing key the admin provides, the exact
//! permissions of what daprd does with one bucket, and a user JWT that allows only those.
//!
//! The signing key's Secret (in the operator's namespace) holds `seed`: an account signing key
//! seed (`SA...`), and `account`: the account's public key (`A...`), needed when the seed is a
//! signing key rather than the account's own key (the user JWT then names the account as its
//! `issuer_account`). Messages name keys of the Secret, never values.

use std::collections::BTreeMap;

use nkeys::KeyPair;
use serde_json::{Value, json};

use super::jwt::{self, Claims, JwtError};
use crate::dapr::{MetadataEntry, ValueSource};
use crate::failure::{Failure, Retry};
use crate::secret_value::SecretValue;

/// Where a Component wants its minted user: the Secret (of its namespace) its `jwt` and
/// `seedKey` name, and the key of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintedSecret {
    /// The Secret's name.
    pub name: String,
    /// The key of the user JWT.
    pub jwt_key: String,
    /// The key of the user's seed.
    pub seed_key: String,
}

/// Why a user cannot be minted for a Component. Messages name Secrets, keys and policies,
/// never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The Component's `jwt` and `seedKey` do not name one Secret for the minted user.
    #[error(
        "jetstreamkv.io/credentials: mint needs jwt and seedKey to be secretKeyRefs to one Secret \
         (two keys of it, e.g. {{name: <component>-nats, key: jwt}} and {{name: <component>-nats, \
         key: seed}}): the operator writes the minted user there; {0}"
    )]
    Reference(&'static str),
    /// No policy that allows the Component names a signing key.
    #[error(
        "no NatsServerPolicy that allows namespace {namespace} to use these servers names \
         mintCredentials, so no user can be minted for it; ask the cluster admin for one, or \
         remove jetstreamkv.io/credentials: mint and name your own credentials"
    )]
    NotAllowed {
        /// The Component's namespace.
        namespace: String,
    },
    /// The policy's signing key cannot be used.
    #[error(
        "the mintCredentials of NatsServerPolicy {policy} cannot be used: {detail}; the cluster \
         admin must fix them"
    )]
    SigningKeyInvalid {
        /// The policy.
        policy: String,
        /// What is wrong, without a value.
        detail: String,
    },
    /// The Secret the Component names holds something the operator did not write.
    #[error(
        "the Secret {secret} that jwt and seedKey name exists and was not written by the \
         operator for this Component, which never overwrites it; name another Secret (one that \
         does not exist), or delete this one"
    )]
    SecretConflict {
        /// The Secret's name.
        secret: String,
    },
    /// Reading or writing a Secret failed for now.
    #[error("the minted user could not be written now ({0}); retrying")]
    Unavailable(String),
    /// The Component asks for something a minted user is not made for.
    #[error(
        "jetstreamkv.io/credentials: mint is not made for a pub/sub with {0} (its JetStream API \
         and acknowledgement subjects differ); remove it, or name your own credentials"
    )]
    Unsupported(&'static str),
    /// The user of a Component being deleted could not be revoked yet.
    #[error(
        "the NATS user minted for this Component could not be revoked yet ({0}); the Component \
         is kept until it is (retrying)"
    )]
    RevocationFailed(String),
    /// The user a new one replaces could not be revoked yet.
    #[error(
        "the NATS user minted earlier for this Component could not be revoked yet ({0}); its \
         replacement is minted once it is (retrying)"
    )]
    SupersededNotRevoked(String),
}

impl Failure for MintError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Reference(_) => "MintedSecretReference",
            Self::NotAllowed { .. } => "MintingNotAllowed",
            Self::SigningKeyInvalid { .. } => "MintingCredentialsInvalid",
            Self::SecretConflict { .. } => "MintedSecretConflict",
            Self::Unsupported(_) => "MintingNotSupported",
            Self::Unavailable(_) => "MintingFailed",
            Self::RevocationFailed(_) | Self::SupersededNotRevoked(_) => "RevocationFailed",
        }
    }

    fn retry(&self) -> Retry {
        match self {
            Self::Reference(_) | Self::SecretConflict { .. } | Self::Unsupported(_) => {
                Retry::AwaitChange
            }
            // A policy or the admin's Secret changes without a change of the Component.
            Self::NotAllowed { .. } | Self::SigningKeyInvalid { .. } => Retry::Resync,
            Self::Unavailable(_) | Self::RevocationFailed(_) | Self::SupersededNotRevoked(_) => {
                Retry::Backoff
            }
        }
    }
}

/// Where the minted user goes: the one Secret that the `jwt` and `seedKey` items (names matched
/// case-insensitively, as Dapr does) name with `secretKeyRef`, with two different keys.
pub fn minted_secret(entries: &[MetadataEntry]) -> Result<MintedSecret, MintError> {
    let source = |wanted: &str| {
        entries
            .iter()
            .find(|e| e.name.eq_ignore_ascii_case(wanted))
            .map(|e| &e.source)
    };
    let (jwt, seed) = match (source("jwt"), source("seedKey")) {
        (Some(jwt), Some(seed)) => (jwt, seed),
        _ => return Err(MintError::Reference("add both items")),
    };
    match (jwt, seed) {
        (
            ValueSource::Secret {
                name: jwt_secret,
                key: jwt_key,
            },
            ValueSource::Secret {
                name: seed_secret,
                key: seed_key,
            },
        ) => {
            if jwt_secret != seed_secret {
                return Err(MintError::Reference("they name two Secrets"));
            }
            if jwt_key == seed_key {
                return Err(MintError::Reference("they name the same key"));
            }
            Ok(MintedSecret {
                name: jwt_secret.clone(),
                jwt_key: jwt_key.clone(),
                seed_key: seed_key.clone(),
            })
        }
        _ => Err(MintError::Reference(
            "a value written in the Component is not the minted user's",
        )),
    }
}

/// An account signing key: signs the users minted for the Components a policy covers. Never
/// printed (its `Debug` shows the public keys only).
pub struct SigningKey {
    key: KeyPair,
    account: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.key.public_key())
            .field("account", &self.account)
            .finish()
    }
}

/// Why the signing key's Secret cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    #[error("the Secret has no seed (the account signing key's seed, SA...)")]
    NoSeed,
    #[error("the Secret's seed is not an account seed (SA...): {0}")]
    NotAccountSeed(&'static str),
    #[error("the Secret's account is not an account public key (A...)")]
    NotAccount,
}

impl SigningKey {
    /// The key held in a Secret's `data`.
    pub fn from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, SigningKeyError> {
        let text = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(v).trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let seed = text("seed").ok_or(SigningKeyError::NoSeed)?;
        let (prefix, _) = nkeys::decode_seed(&seed)
            .map_err(|_| SigningKeyError::NotAccountSeed("it is not an nkey seed"))?;
        if prefix != 0 {
            return Err(SigningKeyError::NotAccountSeed(
                "it is another kind of seed",
            ));
        }
        let key = KeyPair::from_seed(&seed)
            .map_err(|_| SigningKeyError::NotAccountSeed("it is not a valid nkey seed"))?;
        let account = match text("account") {
            None => key.public_key(),
            Some(account) => {
                let valid = account.starts_with('A') && KeyPair::from_public_key(&account).is_ok();
                if !valid {
                    return Err(SigningKeyError::NotAccount);
                }
                account
            }
        };
        Ok(Self { key, account })
    }

    /// A signing key from its key pair (`account`: the account it signs for).
    pub fn new(key: KeyPair, account: String) -> Self {
        Self { key, account }
    }

    /// The signing key's public key (the `iss` of the users it mints).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The account the minted users belong to.
    pub fn account(&self) -> &str {
        &self.account
    }
}

/// What a minted user may do: the subjects it may publish to and subscribe to; everything else
/// the server refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Publish allow list.
    pub publish: Vec<String>,
    /// Subscribe allow list.
    pub subscribe: Vec<String>,
}

/// The inbox of Dapr's NATS clients: nats.go's `_INBOX.<id>` (Dapr gives no way to set another
/// prefix), where every reply to a request comes.
pub const DAPR_INBOX: &str = "_INBOX.>";

/// What daprd's `state.jetstream` store does with `bucket` and nothing else: bind to it at
/// start-up (`STREAM.INFO` of `KV_<bucket>`), get (direct get: the operator's buckets allow
/// it; a bucket made elsewhere without it is read with `STREAM.MSG.GET`), save and delete (a
/// publish on the key's subject), and the replies to these on its inbox.
pub fn state_store(bucket: &str) -> Permissions {
    Permissions {
        publish: vec![
            format!("$JS.API.STREAM.INFO.KV_{bucket}"),
            format!("$JS.API.DIRECT.GET.KV_{bucket}.>"),
            format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"),
            format!("$KV.{bucket}.>"),
        ],
        subscribe: vec![DAPR_INBOX.to_owned()],
    }
}

/// What daprd's `pubsub.jetstream` does with the streams of one Component and nothing else
/// (nats.go's JetStream API, as components-contrib's `pubsub/jetstream` calls it): publish on
/// each subject the streams hold (`topics`: the topics' and dead-letter subjects, prefix
/// applied, as the streams are made with them); when it subscribes, look the stream of the topic
/// up by subject (`by_subject`: without `streamName`), create the consumer on the stream
/// (`CONSUMER.CREATE.<s>` for an ephemeral one, `CONSUMER.CREATE.<s>.<name>.<filter>` for a
/// durable one, after its `CONSUMER.INFO`), read it again to bind to it, acknowledge each
/// message (`$JS.ACK.<s>.>`) and answer flow control (`$JS.FC.<s>.>`); and the replies and
/// deliveries on its inbox. `streams`: the stream and, when it has dead-letter topics, the
/// dead-letter stream.
pub fn pubsub(streams: &[&str], topics: &[String], by_subject: bool) -> Permissions {
    let mut publish = Vec::new();
    if by_subject {
        publish.push("$JS.API.STREAM.NAMES".to_owned());
    }
    for stream in streams {
        publish.extend([
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.>"),
            format!("$JS.ACK.{stream}.>"),
            format!("$JS.FC.{stream}.>"),
        ]);
    }
    publish.extend(topics.iter().cloned());
    Permissions {
        publish,
        subscribe: vec![DAPR_INBOX.to_owned()],
    }
}

/// A user JWT for `user_public_key`, signed by `key`, allowing exactly `permissions`, named
/// `name` (the Component's `namespace/name`, so the server's logs say whose it is).
pub fn mint(
    key: &SigningKey,
    user_public_key: &str,
    name: &str,
    permissions: &Permissions,
) -> Result<String, JwtError> {
    let mut claims = Claims::new("user", user_public_key, name);
    for field in ["subs", "data", "payload"] {
        claims.nats.insert(field.to_owned(), Value::from(-1));
    }
    claims
        .nats
        .insert("pub".to_owned(), json!({ "allow": permissions.publish }));
    claims
        .nats
        .insert("sub".to_owned(), json!({ "allow": permissions.subscribe }));
    if key.public_key() != key.account {
        claims.nats.insert(
            "issuer_account".to_owned(),
            Value::from(key.account.clone()),
        );
    }
    jwt::encode(&claims, &key.key)
}

/// Whether a minted user's `jwt` and `seed` are what `key` would mint now for `permissions`:
/// signed by `key` for its account, for the seed's user, allowing exactly `permissions`, valid at
/// `now`. When they are, nothing is minted again.
pub fn is_current(
    jwt: &SecretValue,
    seed: &SecretValue,
    key: &SigningKey,
    permissions: &Permissions,
    now: i64,
) -> bool {
    let Ok(user) = super::check_user_credentials(jwt, seed, now) else {
        return false;
    };
    let Ok(claims) = jwt::decode_verified(jwt.expose()) else {
        return false;
    };
    let allows = |kind: &str| -> Option<Vec<String>> {
        let list = claims.nats.get(kind)?.get("allow")?.as_array()?;
        list.iter().map(|s| s.as_str().map(str::to_owned)).collect()
    };
    user.issuer == key.public_key()
        && user.account == key.account
        && allows("pub").as_ref() == Some(&permissions.publish)
        && allows("sub").as_ref() == Some(&permissions.subscribe)
        && claims.nats.get("sub").and_then(|s| s.get("deny")).is_none()
        && claims.nats.get("pub").and_then(|s| s.get("deny")).is_none()
}

/// Whether a minted Secret still shows that `user` (the public key its annotation names) is the
/// user minted for the Component `component` (`namespace/name`): its seed is that user's (no
/// one holds another user's seed), or its JWT is one the operator minted for that user and this
/// Component (verified, of that subject, named after the Component). A tenant can edit the
/// annotation of a Secret in its namespace; a user it cannot prove is never revoked, so no
/// tenant can have another's user revoked.
pub fn proves(
    jwt: Option<&SecretValue>,
    seed: Option<&SecretValue>,
    user: &str,
    component: &str,
) -> bool {
    let by_seed = seed
        .and_then(|s| super::user_key_pair(s).ok())
        .is_some_and(|k| k.public_key() == user);
    let by_jwt = jwt
        .and_then(|j| jwt::decode_verified(j.expose().trim()).ok())
        .is_some_and(|c| {
            c.claim_type() == Some("user") && c.sub == user && c.name.as_deref() == Some(component)
        });
    by_seed || by_jwt
}

/// Why an account's JWT cannot be given a revocation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    #[error("the resolver's account JWT does not verify or is not an account JWT")]
    NotAnAccount,
    #[error("the resolver's account JWT is for {found}, not for account {expected}")]
    OtherAccount { found: String, expected: String },
    #[error("the operator key cannot sign")]
    CannotSign,
}

/// `account_jwt` (the account's JWT as the resolver holds it) with `user` revoked at `now`
/// (every JWT of that user issued at or before `now` is refused), signed again by `operator`
/// (the operator's key or one of its signing keys). Every other claim is kept.
pub fn revoke_in_account(
    account_jwt: &str,
    account: &str,
    user: &str,
    now: i64,
    operator: &KeyPair,
) -> Result<String, RevokeError> {
    let mut claims = jwt::decode_verified(account_jwt).map_err(|_| RevokeError::NotAnAccount)?;
    if claims.claim_type() != Some("account") {
        return Err(RevokeError::NotAnAccount);
    }
    if claims.sub != account {
        return Err(RevokeError::OtherAccount {
            found: claims.sub,
            expected: account.to_owned(),
        });
    }
    let revocations = claims
        .nats
        .entry("revocations")
        .or_insert_with(|| json!({}));
    if !revocations.is_object() {
        *revocations = json!({});
    }
    if let Some(map) = revocations.as_object_mut() {
        map.insert(user.to_owned(), Value::from(now));
    }
    jwt::encode(&claims, operator).map_err(|_| RevokeError::CannotSign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_minted_secret_is_the_one_secret_jwt_and_seed_key_name() {
        let secret = |name: &str, key: &str| ValueSource::Secret {
            name: name.into(),
            key: key.into(),
        };
        let entry = |name: &str, source: ValueSource| MetadataEntry {
            name: name.into(),
            source,
        };
        let good = [
            entry("natsURL", ValueSource::Inline(SecretValue::new("nats://n"))),
            entry("JWT", secret("store-nats", "jwt")),
            entry("seedKey", secret("store-nats", "seed")),
        ];
        assert_eq!(
            minted_secret(&good),
            Ok(MintedSecret {
                name: "store-nats".into(),
                jwt_key: "jwt".into(),
                seed_key: "seed".into()
            })
        );
        let refused = [
            (vec![entry("jwt", secret("s", "jwt"))], "both"),
            (
                vec![
                    entry("jwt", secret("a", "jwt")),
                    entry("seedKey", secret("b", "seed")),
                ],
                "two Secrets",
            ),
            (
                vec![
                    entry("jwt", secret("a", "k")),
                    entry("seedKey", secret("a", "k")),
                ],
                "same key",
            ),
            (
                vec![
                    entry("jwt", ValueSource::Inline(SecretValue::new("eyJ"))),
                    entry("seedKey", secret("a", "seed")),
                ],
                "written in the Component",
            ),
        ];
        for (entries, says) in refused {
            let e = minted_secret(&entries).unwrap_err();
            assert_eq!(e.reason(), "MintedSecretReference");
            assert!(e.to_string().contains(says), "{e}");
            assert!(!e.to_string().contains("eyJ"), "{e}");
        }
    }

    #[test]
    fn a_revocation_keeps_the_account_s_claims_and_is_signed_by_the_operator() {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let token = jwt::account_jwt(&operator, &account.public_key(), "APP", true).unwrap();
        let user = KeyPair::new_user().public_key();
        let revoked = revoke_in_account(
            &token,
            &account.public_key(),
            &user,
            1_800_000_000,
            &operator,
        )
        .unwrap();
        let before = jwt::decode_verified(&token).unwrap();
        let after = jwt::decode_verified(&revoked).unwrap();
        assert_eq!(after.iss, operator.public_key());
        assert_eq!(after.sub, account.public_key());
        assert_eq!(
            after.nats["revocations"],
            json!({ user.clone(): 1_800_000_000 })
        );
        assert_eq!(after.nats["limits"], before.nats["limits"]);
        // Another revocation is added to the first.
        let second = KeyPair::new_user().public_key();
        let twice = revoke_in_account(
            &revoked,
            &account.public_key(),
            &second,
            1_800_000_001,
            &operator,
        )
        .unwrap();
        let twice = jwt::decode_verified(&twice).unwrap();
        assert_eq!(twice.nats["revocations"].as_object().unwrap().len(), 2);
        // Another account's JWT is refused.
        let other = KeyPair::new_account().public_key();
        assert!(matches!(
            revoke_in_account(&token, &other, &user, 0, &operator),
            Err(RevokeError::OtherAccount { .. })
        ));
    }

    #[test]
    fn the_signing_key_is_an_account_seed_and_names_its_account() {
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let seed = signing.seed().unwrap();
        let key = SigningKey::from_secret(&data(&[
            ("seed", &format!("{seed}\n")),
            ("account", &account.public_key()),
        ]))
        .unwrap();
        assert_eq!(key.account(), account.public_key());
        assert_eq!(key.public_key(), signing.public_key());
        assert!(!format!("{key:?}").contains(&seed));
        let own = SigningKey::from_secret(&data(&[("seed", &seed)])).unwrap();
        assert_eq!(own.account(), signing.public_key());
        let refused = [
            (data(&[]), SigningKeyError::NoSeed),
            (
                data(&[("seed", &KeyPair::new_user().seed().unwrap())]),
                SigningKeyError::NotAccountSeed("it is another kind of seed"),
            ),
            (
                data(&[("seed", "SAnope")]),
                SigningKeyError::NotAccountSeed("it is not an nkey seed"),
            ),
            (
                data(&[
                    ("seed", &seed),
                    ("account", &KeyPair::new_user().public_key()),
                ]),
                SigningKeyError::NotAccount,
            ),
        ];
        for (secret, error) in refused {
            assert_eq!(SigningKey::from_secret(&secret).unwrap_err(), error);
        }
    }

    #[test]
    fn a_minted_user_allows_exactly_its_bucket_and_is_current_until_something_changes() {
        let account = KeyPair::new_account();
        let key = SigningKey::new(KeyPair::new_account(), account.public_key());
        let user = KeyPair::new_user();
        let permissions = state_store("orders");
        let token = mint(&key, &user.public_key(), "shop/store", &permissions).unwrap();
        let claims = jwt::decode_verified(&token).unwrap();
        assert_eq!(claims.iss, key.public_key());
        assert_eq!(claims.issuer_account(), account.public_key());
        assert_eq!(claims.name.as_deref(), Some("shop/store"));
        assert_eq!(claims.exp, None);
        assert_eq!(
            claims.nats["pub"],
            json!({"allow": [
                "$JS.API.STREAM.INFO.KV_orders",
                "$JS.API.DIRECT.GET.KV_orders.>",
                "$JS.API.STREAM.MSG.GET.KV_orders",
                "$KV.orders.>"
            ]})
        );
        assert_eq!(claims.nats["sub"], json!({"allow": ["_INBOX.>"]}));

        let (jwt, seed) = (
            SecretValue::new(token),
            SecretValue::new(user.seed().unwrap()),
        );
        assert!(is_current(&jwt, &seed, &key, &permissions, 0));
        // Another bucket, another signing key, another user's seed: minted again.
        assert!(!is_current(&jwt, &seed, &key, &state_store("other"), 0));
        let other_key = SigningKey::new(KeyPair::new_account(), account.public_key());
        assert!(!is_current(&jwt, &seed, &other_key, &permissions, 0));
        let other_seed = SecretValue::new(KeyPair::new_user().seed().unwrap());
        assert!(!is_current(&jwt, &other_seed, &key, &permissions, 0));
    }

    #[test]
    fn a_pub_sub_user_allows_its_streams_consumers_and_topics_only() {
        let topics = ["orders.new".to_owned(), "poison".to_owned()];
        let p = pubsub(&["shop_events", "shop_events_deadletter"], &topics, true);
        assert_eq!(
            p.publish,
            [
                "$JS.API.STREAM.NAMES",
                "$JS.API.CONSUMER.CREATE.shop_events",
                "$JS.API.CONSUMER.CREATE.shop_events.>",
                "$JS.API.CONSUMER.INFO.shop_events.>",
                "$JS.ACK.shop_events.>",
                "$JS.FC.shop_events.>",
                "$JS.API.CONSUMER.CREATE.shop_events_deadletter",
                "$JS.API.CONSUMER.CREATE.shop_events_deadletter.>",
                "$JS.API.CONSUMER.INFO.shop_events_deadletter.>",
                "$JS.ACK.shop_events_deadletter.>",
                "$JS.FC.shop_events_deadletter.>",
                "orders.new",
                "poison",
            ]
        );
        assert_eq!(p.subscribe, [DAPR_INBOX]);
        // With streamName, daprd does not look the stream up.
        let named = pubsub(&["events"], &topics, false);
        assert!(!named.publish.iter().any(|s| s.contains("STREAM")));
        assert!(!named.publish.iter().any(|s| s.contains("DELETE")));
    }

    #[test]
    fn a_minted_user_is_proved_by_its_seed_or_by_its_jwt_named_after_the_component() {
        let key = SigningKey::new(KeyPair::new_account(), KeyPair::new_account().public_key());
        let user = KeyPair::new_user();
        let token = mint(&key, &user.public_key(), "shop/store", &state_store("o")).unwrap();
        let (jwt, seed) = (
            SecretValue::new(token),
            SecretValue::new(user.seed().unwrap()),
        );
        let edited = SecretValue::new("edited by hand");
        let me = user.public_key();
        assert!(proves(Some(&jwt), Some(&seed), &me, "shop/store"));
        assert!(proves(Some(&edited), Some(&seed), &me, "shop/store"));
        assert!(proves(Some(&jwt), Some(&edited), &me, "shop/store"));
        assert!(!proves(Some(&edited), Some(&edited), &me, "shop/store"));
        // Another user's key in the annotation: neither the seed nor the JWT is that user's.
        let other = KeyPair::new_user().public_key();
        assert!(!proves(Some(&jwt), Some(&seed), &other, "shop/store"));
        // Another Component's JWT copied in: not this Component's.
        assert!(!proves(Some(&jwt), None, &me, "team/store"));
    }
}
