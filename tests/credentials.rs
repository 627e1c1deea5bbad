//! Secret references and NATS credentials, against the real API server and real nats-servers
//! (in operator mode with JWT accounts, or with a user and password): what a user sees on the
//! KeyValueBucket, and what the server sees (`/connz`, `/jsz`).
//!
//! Every credential a test hands to the operator is registered with [`secret`]; the last test
//! ([`z_no_credential_appears_in_logs_events_objects_or_metrics`]) waits for the others and looks
//! for all of them in the operator's log, the Events, the KeyValueBuckets, the Components and the
//! metrics.

use crate::support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::dapr::Component;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::fixtures::{
    self, ComponentManifest, item as value, secret_item as from_secret, unique_bucket,
};
use support::nats::NatsServer;
use support::needles::Needles;
use support::{RESYNC, TestNamespace, control_plane, eventually, operator, wait_condition};

const READY: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The credentials the tests use, and which tests are still running.

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Registers a credential for the leak test and returns it.
fn secret(value: impl Into<String>) -> String {
    let value = value.into();
    SECRETS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(value.clone());
    value
}

/// Marks a test as running until dropped (also when it panics).
struct Scenario;

impl Scenario {
    fn start() -> Self {
        RUNNING.fetch_add(1, Ordering::SeqCst);
        Scenario
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A user JWT and seed minted for the test, registered as secrets.
struct User {
    jwt: String,
    seed: String,
}

impl User {
    fn new((jwt, seed): (String, String)) -> Self {
        User {
            jwt: secret(jwt),
            seed: secret(seed),
        }
    }

    /// The user's public key (`U...`), as `/connz` shows it.
    fn public_key(&self) -> String {
        nkeys::KeyPair::from_seed(&self.seed)
            .expect("a minted seed")
            .public_key()
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests and objects.

/// A `state.jetstream` Component with the given metadata items.
fn component(ns: &str, name: &str, metadata: Vec<Value>) -> Value {
    metadata
        .into_iter()
        .fold(
            ComponentManifest::new(ns, name),
            ComponentManifest::raw_item,
        )
        .json()
}

/// The usual jwt + seedKey pair, from two keys of one Secret.
fn jwt_component(ns: &str, name: &str, url: &str, bucket: &str, secret: &str) -> Value {
    component(
        ns,
        name,
        vec![
            value("natsURL", url),
            value("bucket", bucket),
            from_secret("jwt", secret, Some("jwt")),
            from_secret("seedKey", secret, Some("seedKey")),
        ],
    )
}

fn apply(object: &Value) {
    control_plane().apply(&object.to_string());
}

/// Creates or replaces a Secret with exactly these keys and raw values.
async fn put_secret(client: &Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    api.patch(
        name,
        &PatchParams::apply("credentials-test").force(),
        &Patch::Apply(fixtures::secret(ns, name, data)),
    )
    .await
    .unwrap_or_else(|e| panic!("apply Secret {ns}/{name}: {e}"));
}

/// A jwt + seedKey Secret for `user`.
async fn put_user_secret(client: &Client, ns: &str, name: &str, user: &User) {
    put_secret(
        client,
        ns,
        name,
        &[("jwt", &user.jwt), ("seedKey", &user.seed)],
    )
    .await;
}

/// `(status, reason, message)` of a condition.
fn cond(kvb: &KeyValueBucket, type_: &str) -> (String, String, String) {
    let c = kvb
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {:?}", kvb.status));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

// ---------------------------------------------------------------------------------------------
// What the NATS server sees.

/// The open client connections: `(authorized user, account)` each.
fn connections(server: &NatsServer) -> Vec<(String, String)> {
    let connz = server.connz();
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["authorized_user"].as_str().unwrap_or_default().to_owned(),
                c["account"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Every NATS client that ever logged in or tried to, open or closed (a refused login included):
/// connections that sent a CONNECT (so have `lang`), not the bare TCP probe that the test
/// support uses to see the server is up.
fn logins_ever(server: &NatsServer) -> Vec<Value> {
    let connz = server.monitor("/connz?state=all&auth=1");
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c.get("lang").is_some())
        .cloned()
        .collect()
}

/// Waits until the server's open connections are exactly `users` (authorized user names).
async fn wait_connected_users(server: &NatsServer, users: &[String], what: &str) {
    let mut wanted = users.to_vec();
    wanted.sort();
    eventually(
        READY,
        what,
        || async {
            let mut now: Vec<String> = connections(server).into_iter().map(|(u, _)| u).collect();
            now.sort();
            (now == wanted).then_some(())
        },
        async || format!("{:#}\n{}", server.connz(), operator().log_tail()),
    )
    .await;
}

/// The streams of an account, from `/jsz`.
fn account_streams(server: &NatsServer, account: &str) -> Vec<String> {
    let jsz = server.monitor("/jsz?accounts=true&streams=true");
    jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["id"] == account || a["name"] == account)
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. jwt and seedKey (and natsURL) from Secrets.

#[tokio::test]
async fn jwt_and_seed_from_secrets_create_the_bucket_in_the_users_account() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "jwt-ready").await;
    let (server, accounts) = NatsServer::start_operator_mode();
    let user = User::new(accounts.new_user("orders", None));

    // As `kubectl create secret generic --from-file` makes it: each value ends with a line break,
    // which Dapr (Go's decoders) ignores.
    put_secret(
        &client,
        &ns.name,
        "nats-creds",
        &[
            ("jwt", &format!("{}\n", user.jwt)),
            ("seedKey", &format!("{}\n", user.seed)),
        ],
    )
    .await;
    // `secretKeyRef` without `key` reads the key named like the Secret.
    put_secret(&client, &ns.name, "user-jwt", &[("user-jwt", &user.jwt)]).await;
    put_secret(&client, &ns.name, "user-seed", &[("user-seed", &user.seed)]).await;
    put_secret(&client, &ns.name, "nats-url", &[("url", &server.url())]).await;

    let keyed = unique_bucket("keyed");
    let defaulted = unique_bucket("defaulted");
    apply(&jwt_component(
        &ns.name,
        "keyed",
        &server.url(),
        &keyed,
        "nats-creds",
    ));
    let mut with_defaults = component(
        &ns.name,
        "defaulted",
        vec![
            from_secret("natsURL", "nats-url", Some("url")),
            value("bucket", &defaulted),
            from_secret("jwt", "user-jwt", None),
            from_secret("seedKey", "user-seed", None),
        ],
    );
    // Naming the Kubernetes secret store explicitly is the same as naming none.
    with_defaults["auth"] = json!({"secretStore": "kubernetes"});
    apply(&with_defaults);

    for (name, bucket) in [("keyed", &keyed), ("defaulted", &defaulted)] {
        support::wait_kvb(&ns.name, name, "Ready", READY);
        let kvb = support::kvb(&client, &ns.name, name).await;
        assert_eq!(kvb.spec.auth.as_deref(), Some("jwt"), "{name}");
        // A natsURL from a Secret is shown as where it came from (issue 13).
        let servers = if name == "defaulted" {
            "<Secret nats-url, key url>".to_string()
        } else {
            server.url()
        };
        assert_eq!(kvb.spec.servers, vec![servers], "{name}");
        assert_eq!(kvb.spec.bucket.as_deref(), Some(bucket.as_str()));
        let (status, _, message) = cond(&kvb, "CredentialsResolved");
        assert_eq!(status, "True", "{name}");
        assert!(message.contains("auth: jwt"), "{name}: {message}");
        assert_eq!(cond(&kvb, "Ready").1, "BucketManaged", "{name}");
    }

    // The buckets are in the user's account, made over one connection as that user.
    let streams = account_streams(&server, &accounts.account_public_key());
    for bucket in [&keyed, &defaulted] {
        assert!(
            streams.contains(&format!("KV_{bucket}")),
            "KV_{bucket} not in the account: {streams:?}"
        );
    }
    assert_eq!(
        connections(&server),
        vec![(user.public_key(), accounts.account_public_key())],
        "one connection, as the user, in the app account"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Credentials checked before connecting.

#[tokio::test]
async fn invalid_credentials_are_named_and_never_sent_to_nats() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "jwt-invalid").await;
    let (server, accounts) = NatsServer::start_operator_mode();
    let user = User::new(accounts.new_user("orders", None));
    let other = User::new(accounts.new_user("other", None));
    let an_hour_ago = jiff::Timestamp::now().as_second() - 3600;
    let expired = User::new(accounts.new_user("expired", Some(an_hour_ago)));
    let account_jwt = secret(accounts.account_jwt.clone());
    let garbage_jwt = secret(format!("not-a-jwt-{}", support::random_suffix()));
    let garbage_seed = secret(format!("SU-not-a-seed-{}", support::random_suffix()));

    // (Component, jwt, seed, reason, what the message says)
    let cases: Vec<(&str, &str, &str, &str, String)> = vec![
        (
            "wrong-seed",
            &user.jwt,
            &other.seed,
            "SeedDoesNotMatchJwt",
            format!(
                "the seed (seedKey) is for user {} but the user JWT (jwt) is for user {}",
                other.public_key(),
                user.public_key()
            ),
        ),
        (
            "expired",
            &expired.jwt,
            &expired.seed,
            "JwtExpired",
            format!(
                "the user JWT (jwt) expired at {}",
                jiff::Timestamp::from_second(an_hour_ago).unwrap()
            ),
        ),
        (
            "account-jwt",
            &account_jwt,
            &user.seed,
            "JwtNotUser",
            "the user JWT (jwt) is an account JWT, not a user JWT".into(),
        ),
        (
            "garbage-jwt",
            &garbage_jwt,
            &user.seed,
            "JwtMalformed",
            "the user JWT (jwt) is malformed".into(),
        ),
        (
            "garbage-seed",
            &user.jwt,
            &garbage_seed,
            "SeedMalformed",
            "the seed (seedKey) is malformed".into(),
        ),
    ];
    for (name, jwt, seed, _, _) in &cases {
        put_secret(&client, &ns.name, name, &[("jwt", jwt), ("seedKey", seed)]).await;
        apply(&jwt_component(
            &ns.name,
            name,
            &server.url(),
            &unique_bucket("never"),
            name,
        ));
    }
    for (name, _, _, reason, says) in &cases {
        let kvb = wait_condition(
            &client,
            &ns.name,
            name,
            "CredentialsResolved",
            "False",
            reason,
        )
        .await;
        let (_, _, message) = cond(&kvb, "CredentialsResolved");
        assert!(message.contains(says.as_str()), "{name}: {message}");
        assert_eq!(
            cond(&kvb, "Ready"),
            ("False".into(), reason.to_string(), message.clone()),
            "{name}: Ready says the same"
        );
        assert_eq!(cond(&kvb, "Connected").1, "NotChecked", "{name}");
        assert_eq!(cond(&kvb, "Stalled").0, "True", "{name}: waits for a fix");
    }
    // A Warning Event tells `kubectl describe component` readers.
    eventually(
        READY,
        "a CredentialsInvalid Event on Component wrong-seed",
        || async {
            control_plane()
                .kubectl(
                    &[
                        "-n",
                        &ns.name,
                        "get",
                        "events",
                        "--field-selector",
                        "involvedObject.name=wrong-seed,reason=CredentialsInvalid,type=Warning",
                        "-o",
                        "name",
                    ],
                    None,
                )
                .ok()
                .filter(|out| !out.trim().is_empty())
        },
        async || support::describe(&ns.name, "component", "wrong-seed"),
    )
    .await;

    // Nothing reached the server: no connection, open or closed, and no failed login.
    let ever = logins_ever(&server);
    assert!(ever.is_empty(), "{ever:#?}");
    let log = std::fs::read_to_string(server.dir().join("nats-server.log")).unwrap_or_default();
    assert!(
        !log.to_lowercase().contains("authentication error")
            && !log.to_lowercase().contains("authorization violation"),
        "the server saw a login:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. What the server refuses.

#[tokio::test]
async fn server_refusals_are_mapped_to_reasons() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "jwt-refused").await;
    let (server, accounts) = NatsServer::start_operator_mode();
    let stranger = User::new(accounts.user_of_unknown_account("stranger"));
    let no_js = User::new(accounts.new_user_without_jetstream("nojs"));
    let limited = User::new(accounts.new_user_with_one_stream("limited"));
    for (name, user) in [
        ("stranger", &stranger),
        ("nojs", &no_js),
        ("limited", &limited),
    ] {
        put_user_secret(&client, &ns.name, name, user).await;
    }
    let url = server.url();
    apply(&jwt_component(
        &ns.name,
        "stranger",
        &url,
        &unique_bucket("s"),
        "stranger",
    ));
    apply(&jwt_component(
        &ns.name,
        "nojs",
        &url,
        &unique_bucket("n"),
        "nojs",
    ));
    apply(&jwt_component(
        &ns.name,
        "first",
        &url,
        &unique_bucket("first"),
        "limited",
    ));

    // A user signed by an account the server does not know: well-formed, refused at login.
    let kvb = wait_condition(
        &client,
        &ns.name,
        "stranger",
        "Connected",
        "False",
        "AuthorizationFailed",
    )
    .await;
    assert_eq!(cond(&kvb, "CredentialsResolved").0, "True");
    let (_, reason, message) = cond(&kvb, "Ready");
    assert_eq!(reason, "AuthorizationFailed");
    assert!(
        message.contains("authorization violation") && message.contains(&url),
        "{message}"
    );
    // The server saw the login and refused it.
    let log = std::fs::read_to_string(server.dir().join("nats-server.log")).unwrap_or_default();
    assert!(log.contains("authentication error"), "{log}");
    let ever = logins_ever(&server);
    assert!(
        ever.iter()
            .any(|c| c["reason"].as_str().is_some_and(|r| r.contains("Auth"))),
        "{ever:#?}"
    );

    // An account without JetStream.
    let kvb = wait_condition(
        &client,
        &ns.name,
        "nojs",
        "Ready",
        "False",
        "JetStreamDisabled",
    )
    .await;
    let (_, _, message) = cond(&kvb, "Ready");
    assert!(message.contains("JetStream is not enabled"), "{message}");

    // An account allowed one stream: the second bucket is over its limits.
    support::wait_kvb(&ns.name, "first", "Ready", READY);
    apply(&jwt_component(
        &ns.name,
        "second",
        &url,
        &unique_bucket("second"),
        "limited",
    ));
    let kvb = wait_condition(
        &client,
        &ns.name,
        "second",
        "BucketAvailable",
        "False",
        "AccountLimitsExceeded",
    )
    .await;
    let (_, reason, message) = cond(&kvb, "Ready");
    assert_eq!(reason, "AccountLimitsExceeded");
    assert!(message.contains("limits"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// 4. Secrets followed: created, rotated, deleted.

#[tokio::test]
async fn secrets_are_followed_when_created_rotated_and_deleted() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "jwt-rotate").await;
    let (server, accounts) = NatsServer::start_operator_mode();
    let first = User::new(accounts.new_user("first", None));
    let second = User::new(accounts.new_user("second", None));
    let bucket = unique_bucket("rotating");
    apply(&jwt_component(
        &ns.name,
        "rotating",
        &server.url(),
        &bucket,
        "rotating-creds",
    ));

    // The Secret does not exist yet.
    let kvb = wait_condition(
        &client,
        &ns.name,
        "rotating",
        "Ready",
        "False",
        "SecretNotFound",
    )
    .await;
    let (_, _, message) = cond(&kvb, "CredentialsResolved");
    assert!(
        message.contains("\"rotating-creds\"") && message.contains(&ns.name),
        "{message}"
    );
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    let before = components.get("rotating").await.unwrap();

    // Creating it is enough: no change to the Component.
    let created = Instant::now();
    put_user_secret(&client, &ns.name, "rotating-creds", &first).await;
    support::wait_kvb(&ns.name, "rotating", "Ready", READY);
    eprintln!(
        "Ready {:.1?} after the Secret was created",
        created.elapsed()
    );
    let after = components.get("rotating").await.unwrap();
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(after.spec, before.spec);
    wait_connected_users(&server, &[first.public_key()], "the first user connected").await;

    // Rotated to another valid user: a new connection as that user, the old one closed.
    let rotated = Instant::now();
    put_user_secret(&client, &ns.name, "rotating-creds", &second).await;
    wait_connected_users(
        &server,
        &[second.public_key()],
        "the second user connected and the first gone",
    )
    .await;
    eprintln!("reconnected {:.1?} after the rotation", rotated.elapsed());
    assert_eq!(cond(&kvb_now(&client, &ns.name).await, "Ready").0, "True");

    // Deleted: the Component says so, and the connection made with it is closed.
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .delete("rotating-creds", &DeleteParams::default())
        .await
        .unwrap();
    wait_condition(
        &client,
        &ns.name,
        "rotating",
        "Ready",
        "False",
        "SecretNotFound",
    )
    .await;
    wait_connected_users(
        &server,
        &[],
        "the connection closed once its Secret is gone",
    )
    .await;
}

async fn kvb_now(client: &Client, ns: &str) -> KeyValueBucket {
    support::kvb(client, ns, "rotating").await
}

// ---------------------------------------------------------------------------------------------
// 5. What the operator does not read.

#[tokio::test]
async fn other_secret_stores_env_refs_and_other_namespaces_are_not_read() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "jwt-unread").await;
    let elsewhere = TestNamespace::new(&client, "jwt-elsewhere").await;
    let (server, accounts) = NatsServer::start_operator_mode();
    let user = User::new(accounts.new_user("orders", None));
    // Valid credentials, in another namespace only.
    put_user_secret(&client, &elsewhere.name, "shared-creds", &user).await;
    let url = server.url();

    let mut vault = jwt_component(&ns.name, "vault", &url, "b_vault", "shared-creds");
    vault["auth"] = json!({"secretStore": "vault"});
    apply(&vault);
    apply(&component(
        &ns.name,
        "env",
        vec![
            value("natsURL", &url),
            value("bucket", "b_env"),
            from_secret("jwt", "shared-creds", Some("jwt")),
            json!({"name": "seedKey", "envRef": "NATS_SEED"}),
        ],
    ));
    apply(&jwt_component(
        &ns.name,
        "cross-namespace",
        &url,
        "b_cross",
        "shared-creds",
    ));

    let kvb = wait_condition(
        &client,
        &ns.name,
        "vault",
        "CredentialsResolved",
        "False",
        "SecretStoreUnsupported",
    )
    .await;
    let (_, _, message) = cond(&kvb, "Ready");
    assert!(message.contains("vault"), "{message}");

    let kvb = wait_condition(
        &client,
        &ns.name,
        "env",
        "CredentialsResolved",
        "False",
        "EnvRefUnsupported",
    )
    .await;
    let (_, _, message) = cond(&kvb, "Ready");
    assert!(message.contains("NATS_SEED"), "{message}");

    let kvb = wait_condition(
        &client,
        &ns.name,
        "cross-namespace",
        "CredentialsResolved",
        "False",
        "SecretNotFound",
    )
    .await;
    let (_, _, message) = cond(&kvb, "Ready");
    assert!(
        message.contains(&format!("namespace \"{}\"", ns.name))
            && !message.contains(&elsewhere.name),
        "{message}"
    );
    assert_eq!(
        logins_ever(&server),
        Vec::<Value>::new(),
        "no login attempted"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. One connection per server and credentials.

#[tokio::test]
async fn fifty_components_with_the_same_credentials_share_one_connection() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "jwt-shared").await;
    let (server, accounts) = NatsServer::start_operator_mode();
    let user = User::new(accounts.new_user("shared", None));
    put_user_secret(&client, &ns.name, "creds", &user).await;

    let started = Instant::now();
    let items: Vec<Value> = (0..50)
        .map(|i| {
            jwt_component(
                &ns.name,
                &format!("store-{i:02}"),
                &server.url(),
                &format!("shared_{i:02}"),
                "creds",
            )
        })
        .collect();
    apply(&json!({"apiVersion": "v1", "kind": "List", "items": items}));
    let kvbs: Api<KeyValueBucket> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        Duration::from_secs(180),
        "50 Ready KeyValueBuckets",
        || async {
            let list = kvbs.list(&Default::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|k| k.condition("Ready").is_some_and(|c| c.status == "True"))
                .count();
            (ready == 50).then_some(())
        },
        async || operator().log_tail(),
    )
    .await;
    eprintln!("50 Components Ready in {:.1?}", started.elapsed());

    assert_eq!(
        account_streams(&server, &accounts.account_public_key()).len(),
        50
    );
    assert_eq!(
        connections(&server),
        vec![(user.public_key(), accounts.account_public_key())],
        "one shared connection"
    );
    assert_eq!(
        logins_ever(&server).len(),
        1,
        "never more than one connection was opened"
    );

    // Once no Component uses it, the connection is closed.
    control_plane()
        .kubectl(&["-n", &ns.name, "delete", "components", "--all"], None)
        .unwrap();
    wait_connected_users(&server, &[], "the unused connection closed").await;
}

// ---------------------------------------------------------------------------------------------
// User and password in natsURL.

#[tokio::test]
async fn a_password_in_a_secret_url_is_used_and_never_shown() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "userinfo").await;
    let user = format!("alice-{}", support::random_suffix());
    let password = secret(format!("pw-{}", support::random_suffix()));
    let wrong = secret(format!("pw-{}", support::random_suffix()));
    let server = NatsServer::start_with_password(&user, &password);
    let port = server.port();
    let with = |pass: &str| format!("nats://{user}:{pass}@127.0.0.1:{port}");
    put_secret(&client, &ns.name, "nats-url", &[("url", &with(&password))]).await;
    put_secret(&client, &ns.name, "wrong-url", &[("url", &with(&wrong))]).await;
    for (name, secret) in [("userinfo", "nats-url"), ("wrong-password", "wrong-url")] {
        apply(&component(
            &ns.name,
            name,
            vec![
                from_secret("natsURL", secret, Some("url")),
                value("bucket", &unique_bucket(name.split('-').next().unwrap())),
            ],
        ));
    }
    // A natsURL from a Secret is shown as where it came from, not even redacted (issue 13).
    let shown = "<Secret nats-url, key url>".to_string();
    let shown_wrong = "<Secret wrong-url, key url>".to_string();

    support::wait_kvb(&ns.name, "userinfo", "Ready", READY);
    let kvb = support::kvb(&client, &ns.name, "userinfo").await;
    assert_eq!(kvb.spec.servers, vec![shown.clone()]);
    assert_eq!(kvb.spec.auth.as_deref(), Some("userinfo"));
    // Authenticated connections only: the other Component's attempt with the wrong password can
    // be caught mid-handshake (an open connection with no user yet), which says nothing here.
    let authenticated: Vec<_> = connections(&server)
        .into_iter()
        .filter(|(authorized, _)| !authorized.is_empty())
        .collect();
    assert_eq!(
        authenticated,
        vec![(user.clone(), String::new())],
        "logged in as the URL's user"
    );

    let kvb = wait_condition(
        &client,
        &ns.name,
        "wrong-password",
        "Connected",
        "False",
        "AuthorizationFailed",
    )
    .await;
    let (_, _, message) = cond(&kvb, "Ready");
    assert!(
        message.contains(&shown_wrong) && !message.contains(&user),
        "where the URL came from, not the URL: {message}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. No credential anywhere.

/// Named to sort last: libtest starts tests in name order, so when this one starts every other
/// test of the binary has started (and registered its credentials); it then waits for them.
#[tokio::test]
async fn z_no_credential_appears_in_logs_events_objects_or_metrics() {
    let _scenario = Scenario::start();
    operator();
    let client = support::client().await;

    // A scenario of its own, so that the scan has something to find when run alone: a good user
    // with a seed that ends with a line break, a user the server refuses, a wrong seed.
    let ns = TestNamespace::new(&client, "leaks").await;
    let (server, accounts) = NatsServer::start_operator_mode();
    let good = User::new(accounts.new_user("good", None));
    let stranger = User::new(accounts.user_of_unknown_account("stranger"));
    put_secret(
        &client,
        &ns.name,
        "good",
        &[("jwt", &good.jwt), ("seedKey", &format!("{}\n", good.seed))],
    )
    .await;
    put_user_secret(&client, &ns.name, "stranger", &stranger).await;
    put_secret(
        &client,
        &ns.name,
        "mixed",
        &[("jwt", &good.jwt), ("seedKey", &stranger.seed)],
    )
    .await;
    for name in ["good", "stranger", "mixed"] {
        apply(&jwt_component(
            &ns.name,
            name,
            &server.url(),
            &unique_bucket(name),
            name,
        ));
    }
    support::wait_kvb(&ns.name, "good", "Ready", READY);
    wait_condition(
        &client,
        &ns.name,
        "stranger",
        "Ready",
        "False",
        "AuthorizationFailed",
    )
    .await;
    wait_condition(
        &client,
        &ns.name,
        "mixed",
        "Ready",
        "False",
        "SeedDoesNotMatchJwt",
    )
    .await;
    // The same credentials through pub/sub Components: their JetStreamStreams are read below.
    for (name, secret, ready) in [
        ("events-good", "good", "True"),
        ("events-mixed", "mixed", "False"),
    ] {
        let pubsub = ComponentManifest::new(&ns.name, name)
            .type_("pubsub.jetstream")
            .raw_item(value("natsURL", &server.url()))
            .raw_item(from_secret("jwt", secret, Some("jwt")))
            .raw_item(from_secret("seedKey", secret, Some("seedKey")))
            .annotation("jetstreamkv.io/subjects", &unique_bucket(name))
            .json();
        apply(&pubsub);
        support::wait_jss(&ns.name, name, &format!("Ready={ready}"), |s, _| s == ready).await;
    }

    // Wait for the other tests, then for a resync to log what it logs.
    eventually(
        Duration::from_secs(600),
        "the other tests to finish",
        || async { (RUNNING.load(Ordering::SeqCst) == 1).then_some(()) },
        async || String::new(),
    )
    .await;
    tokio::time::sleep(RESYNC * 2).await;

    let cp = control_plane();
    let get = |args: &[&str]| cp.kubectl(args, None).unwrap_or_else(|e| panic!("{e}"));
    let (_, metrics) = operator().http_get("/metrics").expect("metrics");
    let places = [
        ("the operator log", operator().logs()),
        ("Events", get(&["get", "events", "-A", "-o", "yaml"])),
        ("KeyValueBuckets", get(&["get", "kvb", "-A", "-o", "yaml"])),
        (
            "JetStreamStreams",
            get(&["get", "jetstreamstreams", "-A", "-o", "yaml"]),
        ),
        (
            "Components",
            get(&["get", "components", "-A", "-o", "yaml"]),
        ),
        ("/metrics", metrics),
    ];
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let needles = Needles::new(&secrets);
    let mut found = Vec::new();
    for (place, text) in &places {
        assert!(!text.is_empty(), "nothing read from {place}");
        found.extend(
            needles
                .find(text)
                .into_iter()
                .map(|at| format!("{place}: …{at}…")),
        );
    }
    eprintln!(
        "scanned {} credentials in {} bytes of logs, Events, objects (KeyValueBuckets, \
         JetStreamStreams, Components) and metrics",
        secrets.len(),
        places.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
    assert!(
        found.is_empty(),
        "credentials leaked:\n{}",
        found.join("\n")
    );
    // The scan does find them where they belong: in the Secrets.
    let secrets_yaml = get(&["get", "secrets", "-A", "-o", "yaml"]);
    assert!(
        !needles.find(&secrets_yaml).is_empty(),
        "the scan finds no credential even in the Secrets"
    );
}
