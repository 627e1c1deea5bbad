//! The provisioning identity (pure): the credentials a `NatsServerPolicy` names, read from a
//! Secret in the operator's namespace, and the connection config that uses them in place of a
//! Component's own.
//!
//! The Secret holds exactly one of: `creds` (a `.creds` file, as `nsc generate creds` writes it),
//! `jwt` and `seed`, `user` and `password`, or `token`. Messages name keys, never values.

use std::collections::BTreeMap;

use super::{CredentialsError, check_user_credentials};
use crate::dapr::store::{NatsAuth, StoreConfig};
use crate::secret_value::SecretValue;

/// The credentials of a provisioning identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A user JWT and its seed (from `creds`, or `jwt` and `seed`); `account` is the user's
    /// account (not secret).
    Jwt {
        jwt: SecretValue,
        seed: SecretValue,
        account: String,
    },
    /// A user and password.
    Password { user: String, password: SecretValue },
    /// A token.
    Token(SecretValue),
}

/// Why the Secret's credentials cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the Secret holds none of creds, jwt and seed, user and password, or token")]
    Empty,
    #[error("the Secret holds several kinds of credentials ({0}); keep exactly one")]
    Several(String),
    #[error("the Secret has {present} but no {missing}")]
    Incomplete {
        present: &'static str,
        missing: &'static str,
    },
    #[error(
        "the Secret's creds is not a .creds file: it needs a user JWT block and a user nkey seed block"
    )]
    NotACredsFile,
    #[error("the Secret's {0} is not UTF-8 text")]
    NotText(String),
    #[error("the Secret's user JWT and seed cannot be used: {0}")]
    Credentials(CredentialsError),
}

impl Identity {
    /// The identity held in a Secret's `data`, checked at `now_unix` (a JWT: signed by an
    /// account, valid now, with the seed of its subject).
    pub fn from_secret(
        data: &BTreeMap<String, Vec<u8>>,
        now_unix: i64,
    ) -> Result<Self, IdentityError> {
        let text = |key: &str| -> Result<Option<SecretValue>, IdentityError> {
            match data.get(key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(bytes) => String::from_utf8(bytes.clone())
                    .map(|s| Some(SecretValue::new(s)))
                    .map_err(|_| IdentityError::NotText(key.to_owned())),
            }
        };
        let (creds, jwt, seed) = (text("creds")?, text("jwt")?, text("seed")?);
        let (user, password, token) = (text("user")?, text("password")?, text("token")?);
        let kinds: Vec<&str> = [
            ("creds", creds.is_some()),
            ("jwt and seed", jwt.is_some() || seed.is_some()),
            ("user and password", user.is_some() || password.is_some()),
            ("token", token.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if kinds.len() > 1 {
            return Err(IdentityError::Several(kinds.join(", ")));
        }
        let jwt_identity = |jwt: SecretValue, seed: SecretValue| {
            let user = check_user_credentials(&jwt, &seed, now_unix)
                .map_err(IdentityError::Credentials)?;
            Ok(Identity::Jwt {
                jwt,
                seed,
                account: user.account,
            })
        };
        match (creds, jwt, seed, user, password, token) {
            (Some(creds), ..) => {
                let (jwt, seed) = creds_file(creds.expose()).ok_or(IdentityError::NotACredsFile)?;
                jwt_identity(jwt, seed)
            }
            (_, Some(jwt), Some(seed), ..) => jwt_identity(jwt, seed),
            (_, Some(_), None, ..) => Err(IdentityError::Incomplete {
                present: "jwt",
                missing: "seed",
            }),
            (_, None, Some(_), ..) => Err(IdentityError::Incomplete {
                present: "seed",
                missing: "jwt",
            }),
            (.., Some(user), Some(password), _) => Ok(Identity::Password {
                user: user.expose().to_owned(),
                password,
            }),
            (.., Some(_), None, _) => Err(IdentityError::Incomplete {
                present: "user",
                missing: "password",
            }),
            (.., None, Some(_), _) => Err(IdentityError::Incomplete {
                present: "password",
                missing: "user",
            }),
            (.., Some(token)) => Ok(Identity::Token(token)),
            _ => Err(IdentityError::Empty),
        }
    }

    /// `jwt`, `userinfo` or `token`: for logs and metrics, never a value.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Jwt { .. } => "jwt",
            Self::Password { .. } => "userinfo",
            Self::Token(_) => "token",
        }
    }
}

/// The JWT and seed of a `.creds` file: the first line inside the first two `-----BEGIN ...`
/// blocks, in that order (user JWT, then user seed). None when it has fewer than two.
fn creds_file(text: &str) -> Option<(SecretValue, SecretValue)> {
    let mut blocks = Vec::with_capacity(2);
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("---") && line.contains("BEGIN") {
            let value = lines.by_ref().find(|l| !l.is_empty())?;
            if value.starts_with("---") {
                return None;
            }
            blocks.push(SecretValue::new(value));
            if blocks.len() == 2 {
                let seed = blocks.pop()?;
                let jwt = blocks.pop()?;
                return Some((jwt, seed));
            }
        }
    }
    None
}

/// `store` connecting as `identity` instead of its own credentials: the same servers, in the
/// same order, without the user info of its URLs, and the identity's credentials. What is shown
/// (`redacted_servers`, the bucket) does not change.
pub fn connect_as(store: &StoreConfig, identity: &Identity) -> StoreConfig {
    let servers: Vec<String> = store
        .servers
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|raw| {
            let with_scheme = if raw.contains("://") {
                raw.to_owned()
            } else {
                format!("nats://{raw}")
            };
            match url::Url::parse(&with_scheme) {
                Ok(mut url) => {
                    let _ = url.set_password(None);
                    let _ = url.set_username("");
                    if let Identity::Password { user, password } = identity {
                        let _ = url.set_username(user);
                        let _ = url.set_password(Some(password.expose()));
                    }
                    // A comma would split the entry where the pool splits natsURL: it never
                    // stands for itself in user info, which the pool percent-decodes.
                    url.to_string().replace(',', "%2C")
                }
                // Fails to connect as it would have: nothing of it is used as credentials.
                Err(_) => raw
                    .rsplit_once('@')
                    .map_or(raw, |(_, host)| host)
                    .to_owned(),
            }
        })
        .collect();
    StoreConfig {
        servers: SecretValue::new(servers.join(",")),
        auth: match identity {
            Identity::Jwt { jwt, seed, .. } => NatsAuth::Jwt {
                jwt: jwt.clone(),
                seed: seed.clone(),
            },
            Identity::Password { .. } => NatsAuth::UserInfo,
            Identity::Token(token) => NatsAuth::Token(token.clone()),
        },
        ..store.clone()
    }
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

    fn user() -> (String, String, String) {
        let account = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let jwt = super::super::jwt::user_jwt(&account, &user.public_key(), "prov", None).unwrap();
        (jwt, user.seed().unwrap(), account.public_key())
    }

    #[test]
    fn each_kind_of_secret_is_read_and_mixtures_are_refused() {
        let (jwt, seed, account) = user();
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        );
        let want = Identity::Jwt {
            jwt: SecretValue::new(jwt.clone()),
            seed: SecretValue::new(seed.clone()),
            account: account.clone(),
        };
        assert_eq!(
            Identity::from_secret(&data(&[("creds", &creds)]), 0),
            Ok(want.clone())
        );
        assert_eq!(
            Identity::from_secret(&data(&[("jwt", &jwt), ("seed", &seed)]), 0),
            Ok(want)
        );
        assert_eq!(
            Identity::from_secret(&data(&[("user", "prov"), ("password", "pw")]), 0),
            Ok(Identity::Password {
                user: "prov".into(),
                password: SecretValue::new("pw")
            })
        );
        assert_eq!(
            Identity::from_secret(&data(&[("token", "t0k")]), 0),
            Ok(Identity::Token(SecretValue::new("t0k")))
        );
        let refused = [
            (data(&[]), "none of"),
            (data(&[("token", "t"), ("user", "u")]), "several kinds"),
            (data(&[("jwt", &jwt)]), "no seed"),
            (data(&[("password", "p")]), "no user"),
            (data(&[("creds", "just text")]), "not a .creds file"),
            (data(&[("jwt", &jwt), ("seed", "SUnope")]), "cannot be used"),
        ];
        for (secret, says) in refused {
            let e = Identity::from_secret(&secret, 0).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
            assert!(
                !e.contains(&seed) && !e.contains(&jwt) && !e.contains("SUnope"),
                "{e}"
            );
        }
        let binary = BTreeMap::from([("token".to_string(), vec![0xff, 0xfe])]);
        assert_eq!(
            Identity::from_secret(&binary, 0),
            Err(IdentityError::NotText("token".into()))
        );
    }

    #[test]
    fn the_connection_keeps_the_servers_and_drops_the_app_s_credentials() {
        let store = StoreConfig {
            servers: SecretValue::new("nats://app:s3cret@a:4222, b:4223"),
            redacted_servers: vec!["nats://app:***@a:4222".into(), "b:4223".into()],
            bucket: "orders".into(),
            shown_bucket: "orders".into(),
            auth: NatsAuth::UserInfo,
            connection_name: None,
        };
        let password = connect_as(
            &store,
            &Identity::Password {
                user: "prov".into(),
                password: SecretValue::new("p@ss,word"),
            },
        );
        let servers = password.servers.expose();
        assert!(
            !servers.contains("s3cret") && !servers.contains("app"),
            "{servers}"
        );
        assert!(servers.starts_with("nats://prov:p%40ss"), "{servers}");
        assert!(servers.contains("b:4223"), "{servers}");
        assert_eq!(password.redacted_servers, store.redacted_servers);
        let token = connect_as(&store, &Identity::Token(SecretValue::new("t")));
        assert_eq!(token.servers.expose(), "nats://a:4222,nats://b:4223");
        assert_eq!(token.auth, NatsAuth::Token(SecretValue::new("t")));
    }
}
