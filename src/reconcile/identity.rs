//! Who talks to NATS to provision for a Component: the provisioning identity a
//! `NatsServerPolicy` that allows the Component names (a Secret in the operator's namespace), or
//! else the Component's own credentials, as before. Every JetStream API call the operator makes
//! for a Component (reads, creates, updates, deletes) goes through [`connection`].
//!
//! The server policy is decided as before, on the Component's own servers and credentials; the
//! identity only replaces the credentials the operator connects with. Nothing of the Secret is
//! shown: a failure names the policy and says what is wrong with its Secret, never a value.

use std::borrow::Cow;

use super::context::{AdminSecretError, Context, admin_secret};
use crate::credentials::provisioning::{Identity, connect_as};
use crate::dapr::{NatsAuth, StoreConfig};
use crate::nats::NatsError;

/// The connection config the operator provisions with for `key`, and the policy whose identity
/// it is (None: the Component's own credentials).
pub struct Connection<'a> {
    /// What the pool connects with.
    pub config: Cow<'a, StoreConfig>,
    /// The NatsServerPolicy that names the identity.
    pub policy: Option<String>,
}

impl<'a> Connection<'a> {
    /// The Component's own credentials.
    pub fn own(store: &'a StoreConfig) -> Self {
        Self {
            config: Cow::Borrowed(store),
            policy: None,
        }
    }

    /// A refusal of the connection's credentials, told as the provisioning identity's when it is
    /// one (the Component's credentials are not the ones to fix).
    pub fn refused(&self, error: NatsError) -> NatsError {
        match (&self.policy, error) {
            (Some(policy), NatsError::AuthorizationFailed { .. }) => {
                NatsError::ProvisioningCredentials {
                    policy: policy.clone(),
                    detail: "the NATS server refused them (authorization violation)".into(),
                }
            }
            (_, error) => error,
        }
    }
}

/// The connection config for provisioning what `store` names, for the Component `key`
/// (`namespace/name`).
pub async fn connection<'a>(
    ctx: &Context,
    key: &str,
    store: &'a StoreConfig,
) -> Result<Connection<'a>, NatsError> {
    let own = Connection::own(store);
    let Some(policy) = &ctx.policy else {
        return Ok(own);
    };
    let namespace = key.split_once('/').map_or(key, |(ns, _)| ns);
    let has_credentials = store.auth != NatsAuth::None;
    let Some(provisioning) =
        policy.provisioning(namespace, store.servers.expose(), has_credentials)
    else {
        return Ok(own);
    };
    let unusable = |detail: String| {
        tracing::warn!(
            policy = %provisioning.policy,
            secret = %provisioning.secret_name,
            namespace = %ctx.operator_namespace,
            problem = %detail,
            "the provisioning credentials of a NatsServerPolicy cannot be used"
        );
        NatsError::ProvisioningCredentials {
            policy: provisioning.policy.clone(),
            detail,
        }
    };
    let data = match admin_secret(ctx, &provisioning.secret_name).await {
        Ok(data) => data,
        Err(AdminSecretError::Unusable(detail)) => return Err(unusable(detail)),
        Err(AdminSecretError::Unavailable(e)) => {
            tracing::warn!(error = %e, "reading a provisioning Secret failed");
            return Err(NatsError::ProvisioningCredentials {
                policy: provisioning.policy.clone(),
                detail: "their Secret could not be read now (retrying)".into(),
            });
        }
    };
    let now = jiff::Timestamp::now().as_second();
    let identity = Identity::from_secret(&data, now).map_err(|e| unusable(e.to_string()))?;
    if let Some(problem) = other_account(store, &identity, now) {
        return Err(unusable(problem));
    }
    tracing::debug!(policy = %provisioning.policy, auth = identity.kind(), "provisioning with the policy's identity");
    Ok(Connection {
        config: Cow::Owned(connect_as(store, &identity)),
        policy: Some(provisioning.policy),
    })
}

/// When both are users of JWT accounts, the provisioning user must be of the Component's
/// account: streams are made in the account that asks, and daprd looks in its own.
fn other_account(store: &StoreConfig, identity: &Identity, now: i64) -> Option<String> {
    let (NatsAuth::Jwt { jwt, seed }, Identity::Jwt { account, .. }) = (&store.auth, identity)
    else {
        return None;
    };
    let app = crate::credentials::check_user_credentials(jwt, seed, now).ok()?;
    (app.account != *account).then(|| {
        format!(
            "their user is of account {account} and the Component's of account {}: the bucket or stream would be made in an account the app does not use; name credentials of the apps' account",
            app.account
        )
    })
}

/// The rights of the Component's own user (what daprd will use), checked with its own
/// credentials on a connection of its own, once per credentials and bucket that pass: the
/// first right the server refuses (see [`crate::nats::app_rights`]). A check that cannot be
/// made (the server unreachable on a new connection) says nothing.
pub async fn app_rights(
    ctx: &Context,
    key: &str,
    store: &StoreConfig,
    probes: &[crate::nats::app_rights::Probe],
) -> Option<crate::nats::app_rights::Denied> {
    use crate::nats::app_rights::{self, Denied};
    // Checked for these credentials and these calls: a new bucket, stream, topic or durable
    // name is checked again.
    let calls: Vec<&str> = probes.iter().map(|p| p.subject.as_str()).collect();
    let checked = (crate::nats::pool::ConnectionKey::of(store), calls.join(" "));
    let lock = || ctx.rights_checked.lock().unwrap_or_else(|e| e.into_inner());
    if lock().get(key) == Some(&checked) {
        return None;
    }
    let namespace = key.split_once('/').map_or(key, |(ns, _)| ns);
    let has_credentials = store.auth != NatsAuth::None;
    let provisioned_by_policy = ctx.policy.as_ref().is_some_and(|p| {
        p.provisioning(namespace, store.servers.expose(), has_credentials)
            .is_some()
    });
    ctx.metrics.nats_request("rights");
    let timeout = ctx.pool.request_timeout();
    let denied = if provisioned_by_policy {
        // The Component's own credentials are used for nothing else: a connection of their
        // own, closed when the check is done.
        let connection = match ctx.pool.connect_once(namespace, store).await {
            Ok(connection) => connection,
            Err(NatsError::AuthorizationFailed { servers }) => {
                return Some(Denied::connect(&servers));
            }
            Err(e) => {
                tracing::debug!(error = %e, "the app's rights could not be checked now");
                return None;
            }
        };
        let (client, errors) = (&connection.client, &connection.errors);
        app_rights::check(client, errors, probes, timeout).await
    } else {
        // The Component provisions with its own credentials: the connection it uses is the
        // app's identity already.
        let Ok((client, errors)) = ctx.pool.connect_with_errors(key, store).await else {
            return None;
        };
        app_rights::check(&client, &errors, probes, timeout).await
    };
    if denied.is_none() {
        lock().insert(key.to_owned(), checked);
    } else {
        lock().remove(key);
    }
    denied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_value::SecretValue;

    fn jwt_user(account: &nkeys::KeyPair) -> (SecretValue, SecretValue) {
        let user = nkeys::KeyPair::new_user();
        let jwt =
            crate::credentials::jwt::user_jwt(account, &user.public_key(), "u", None).unwrap();
        (
            SecretValue::new(jwt),
            SecretValue::new(user.seed().unwrap()),
        )
    }

    #[test]
    fn a_provisioning_user_of_another_account_is_refused_when_both_are_jwt_users() {
        let (apps, others) = (nkeys::KeyPair::new_account(), nkeys::KeyPair::new_account());
        let (jwt, seed) = jwt_user(&apps);
        let store = StoreConfig {
            servers: SecretValue::new("nats://n:4222"),
            redacted_servers: vec!["nats://n:4222".into()],
            bucket: "b".into(),
            shown_bucket: "b".into(),
            auth: NatsAuth::Jwt { jwt, seed },
            connection_name: None,
        };
        let identity = |account: &nkeys::KeyPair| {
            let (jwt, seed) = jwt_user(account);
            Identity::Jwt {
                jwt,
                seed,
                account: account.public_key(),
            }
        };
        assert_eq!(other_account(&store, &identity(&apps), 0), None);
        let problem = other_account(&store, &identity(&others), 0).expect("refused");
        assert!(problem.contains(&others.public_key()), "{problem}");
        assert!(problem.contains(&apps.public_key()), "{problem}");
        // A password user: the account cannot be told, nothing is refused.
        let token = Identity::Token(SecretValue::new("t"));
        assert_eq!(other_account(&store, &token, 0), None);
    }
}
