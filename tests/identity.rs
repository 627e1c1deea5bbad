//! Identities (issue 27): the provisioning identity a NatsServerPolicy names. Against a real
//! nats-server in operator mode with a full (directory) resolver, every key minted here, and the
//! server's own JetStream API audit advisories (`$JS.EVENT.ADVISORY.API`) as the witness of who
//! made each create, update and delete.

use crate::support;
use support::needles::Needles;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt as _;
use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::credentials::jwt;
use jetstream_kv_operator::dapr::Component;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use nkeys::KeyPair;
use serde_json::{Value, json};
use support::daprd::{Daprd, resource_file};
use support::fixtures::{self, ComponentManifest, unique_bucket};
use support::nats::{NatsServer, user_connect_options};
use support::operator::Operator;
use support::{TestNamespace, control_plane, eventually};

const READY: Duration = Duration::from_secs(60);

/// The server in operator mode and the keys of its application account.
struct World {
    server: NatsServer,
    account: KeyPair,
    /// A signing key of the application account (what an admin gives the operator to mint
    /// users with).
    signing: KeyPair,
    /// The operator's key (signs account JWTs: what revokes a user) and the system account's.
    operator: KeyPair,
    system: KeyPair,
    /// Holds the resolver's directory.
    _resolver: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let signing = KeyPair::new_account();
        let mint = |r: Result<String, jwt::JwtError>| r.expect("minting");
        // The application account, with a signing key.
        let mut app = jwt::decode(&mint(jwt::account_jwt(
            &operator,
            &account.public_key(),
            "APP",
            true,
        )))
        .expect("a minted JWT decodes")
        .claims;
        app.nats
            .insert("signing_keys".into(), json!([signing.public_key()]));
        let app_jwt = mint(jwt::encode(&app, &operator));
        let resolver = tempfile::Builder::new()
            .prefix("jko-resolver-")
            .tempdir()
            .expect("a resolver directory");
        let config = format!(
            "operator: {op:?}\n\
             system_account: {sys:?}\n\
             resolver: {{\n  type: full\n  dir: {dir:?}\n  allow_delete: true\n  interval: \"2m\"\n}}\n\
             resolver_preload: {{\n  {sys}: {sys_jwt:?}\n  {app}: {app_jwt:?}\n}}\n",
            op = mint(jwt::operator_jwt(&operator, "jko-identity")),
            sys = system.public_key(),
            sys_jwt = mint(jwt::account_jwt(&operator, &system.public_key(), "SYS", false)),
            app = account.public_key(),
            app_jwt = app_jwt,
            dir = resolver.path(),
        );
        World {
            server: NatsServer::start_with_config(&config),
            account,
            signing,
            operator,
            system,
            _resolver: resolver,
        }
    })
}

/// A user of the application account: `(jwt, seed, public key)`. `permissions`: the
/// publish and subscribe allow lists (None: no restriction).
fn user(name: &str, permissions: Option<(&[String], &[&str])>) -> (String, String, String) {
    user_of(&KeyPair::new_user(), name, permissions)
}

/// [`user`] for the key pair `user` (a new JWT for the same user).
fn user_of(
    user: &KeyPair,
    name: &str,
    permissions: Option<(&[String], &[&str])>,
) -> (String, String, String) {
    let account = &world().account;
    let token = jwt::user_jwt(account, &user.public_key(), name, None).expect("minting");
    let token = match permissions {
        None => token,
        Some((publish, subscribe)) => {
            let mut claims = jwt::decode(&token).expect("a minted JWT decodes").claims;
            claims
                .nats
                .insert("pub".into(), json!({ "allow": publish }));
            claims
                .nats
                .insert("sub".into(), json!({ "allow": subscribe }));
            jwt::encode(&claims, account).expect("minting")
        }
    };
    (token, user.seed().expect("a seed"), user.public_key())
}

/// What an app needs of its bucket's data, and nothing of the JetStream API that changes
/// streams: daprd's reads and writes.
fn data_rights(bucket: &str) -> Vec<String> {
    vec![
        format!("$KV.{bucket}.>"),
        format!("$JS.API.STREAM.INFO.KV_{bucket}"),
        format!("$JS.API.DIRECT.GET.KV_{bucket}.>"),
    ]
}

/// A `.creds` file, as `nsc generate creds` writes one.
fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The operator's own namespace (where the admin keeps the provisioning Secrets).
fn operator_namespace() -> &'static str {
    static NS: OnceLock<String> = OnceLock::new();
    NS.get_or_init(|| {
        let name = format!("jko-operator-{}", support::random_suffix());
        control_plane()
            .kubectl(&["create", "namespace", &name], None)
            .expect("create the operator's namespace");
        name
    })
}

/// The operator as the chart runs it: the server policy enforced, its namespace known.
fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let namespace = operator_namespace();
        Operator::start_with_env(
            &control_plane().kubeconfig,
            &[
                "--server-policy",
                "enforce",
                "--resync-interval",
                "4s",
                "--max-backoff",
                "2s",
                "--nats-request-timeout",
                "2s",
            ],
            &[("OPERATOR_NAMESPACE", namespace)],
        )
    })
}

/// A NatsServerPolicy letting `namespace` use the test server, naming `secret` as the
/// provisioning identity when given.
fn policy(name: &str, namespace: &str, secret: Option<&str>) -> String {
    policy_minting(name, namespace, secret, None)
}

/// [`policy`], naming `mint` as the Secret of the signing key users are minted with.
fn policy_minting(name: &str, namespace: &str, secret: Option<&str>, mint: Option<&str>) -> String {
    let provisioning = secret
        .map(|s| format!("  provisioningCredentials:\n    secretName: {s}\n"))
        .into_iter()
        .chain(mint.map(|s| format!("  mintCredentials:\n    secretName: {s}\n")))
        .collect::<String>();
    format!(
        "apiVersion: jetstreamkv.io/v1alpha1\nkind: NatsServerPolicy\nmetadata:\n  name: {name}\nspec:\n  conditions:\n  - namespaces: [{namespace}]\n  servers: [{{host: \"127.0.0.1\"}}]\n{provisioning}"
    )
}

fn apply_json(object: &Value) {
    control_plane().apply(&serde_json::to_string(object).expect("JSON"));
}

/// A state store Component with its user's JWT and seed from the Secret `app`.
/// A pub/sub Component `events` in `namespace` on `topic` (its stream's subjects), whose own user
/// (`user_name`, in the Secret `events`) has data rights only: the stream lookup by topic and
/// publishing to it.
fn pubsub_with_data_rights(namespace: &str, user_name: &str, topic: &str) {
    let rights = vec!["$JS.API.STREAM.NAMES".to_owned(), topic.to_owned()];
    let (jwt, seed, _) = user(user_name, Some((&rights, &["_INBOX.>"])));
    apply_json(&fixtures::secret(
        namespace,
        "events",
        &[("jwt", &jwt), ("seed", &seed)],
    ));
    apply_json(
        &ComponentManifest::new(namespace, "events")
            .type_("pubsub.jetstream")
            .item("natsURL", &world().server.url())
            .item_from_secret("jwt", "events", Some("jwt"))
            .item_from_secret("seedKey", "events", Some("seed"))
            .annotation("jetstreamkv.io/subjects", topic)
            .json(),
    );
}

fn store(namespace: &str, bucket: &str, annotations: &[(&str, &str)]) -> Value {
    let mut c = ComponentManifest::store(namespace, "store", &world().server.url(), bucket)
        .item_from_secret("jwt", "app", Some("jwt"))
        .item_from_secret("seedKey", "app", Some("seed"));
    for (k, v) in annotations {
        c = c.annotation(&format!("jetstreamkv.io/{k}"), v);
    }
    c.json()
}

/// The Ready condition's (status, reason, message), when there is one.
async fn ready(client: &Client, ns: &str) -> Option<(String, String, String)> {
    let api: Api<KeyValueBucket> = Api::namespaced(client.clone(), ns);
    let kvb = api.get_opt("store").await.ok()??;
    let c = kvb.condition("Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits for Ready to be False with a reason (any, when `reason` is empty); returns it.
async fn wait_refused(client: &Client, ns: &str, reason: &str) -> (String, String) {
    eventually(
        READY,
        &format!("kvb/store in {ns} to be Ready=False {reason}"),
        || async {
            let (status, r, message) = ready(client, ns).await?;
            (status == "False" && r != "NotChecked" && (reason.is_empty() || r == reason))
                .then_some((r, message))
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                support::describe(ns, "kvb", "store"),
                operator().log_tail()
            )
        },
    )
    .await
}

/// Every JetStream API audit advisory of the account from now on, as the server sends it.
async fn advisories(observer: &(String, String, String)) -> Arc<Mutex<Vec<Value>>> {
    let client = user_connect_options(&observer.0, &observer.1)
        .connect(world().server.url())
        .await
        .expect("the observer connects");
    let mut sub = client
        .subscribe("$JS.EVENT.ADVISORY.API")
        .await
        .expect("subscribe to the API advisories");
    client.flush().await.expect("flush");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        let _keep = client;
        while let Some(msg) = sub.next().await {
            if let Ok(v) = serde_json::from_slice::<Value>(&msg.payload) {
                into.lock().unwrap().push(v);
            }
        }
    });
    seen
}

/// The advisories of calls that change `stream` (create, update, delete): (what, user key).
fn changes_of(seen: &Mutex<Vec<Value>>, stream: &str) -> Vec<(String, String)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|a| {
            let subject = a["subject"].as_str()?;
            let what = ["CREATE", "UPDATE", "DELETE"]
                .into_iter()
                .find(|w| subject == format!("$JS.API.STREAM.{w}.{stream}"))?;
            let client = &a["client"];
            let user = client["nkey"]
                .as_str()
                .or(client["user"].as_str())
                .unwrap_or_default();
            Some((what.to_owned(), user.to_owned()))
        })
        .collect()
}

/// A stream's configuration, as the account's own client sees it.
async fn stream_config(
    observer: &(String, String, String),
    stream: &str,
) -> Option<async_nats::jetstream::stream::Config> {
    let client = user_connect_options(&observer.0, &observer.1)
        .connect(world().server.url())
        .await
        .ok()?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.ok()?;
    Some(stream.info().await.ok()?.config.clone())
}

/// Whether the bucket's stream exists, as the account's own client sees it.
async fn stream_exists(observer: &(String, String, String), bucket: &str) -> bool {
    let client = user_connect_options(&observer.0, &observer.1)
        .connect(world().server.url())
        .await
        .expect("the observer connects");
    let js = async_nats::jetstream::new(client);
    js.get_stream(format!("KV_{bucket}")).await.is_ok()
}

/// With a policy naming a provisioning identity, an app user with data rights only is Ready, and
/// the server's advisories show every create, update and delete came from the provisioning user;
/// the same app user in a namespace no such policy covers gets the server's refusal, and one
/// whose policy names a Secret that is not there is told so. Nothing of the admin's credentials
/// appears in the tenants' namespaces, the status, Events, logs or metrics.
#[tokio::test]
async fn apps_with_data_rights_only_are_provisioned_by_the_policy_s_identity() {
    operator();
    let client = support::client().await;
    let covered = TestNamespace::new(&client, "covered").await;
    let uncovered = TestNamespace::new(&client, "uncovered").await;
    let broken = TestNamespace::new(&client, "broken").await;
    let suffix = support::random_suffix();

    let observer = user("observer", None);
    let seen = advisories(&observer).await;
    let provisioner = user("provisioner", None);
    let prov_secret = format!("provisioner-{suffix}");
    apply_json(&fixtures::secret(
        operator_namespace(),
        &prov_secret,
        &[("creds", &creds_file(&provisioner.0, &provisioner.1))],
    ));
    let policies = [
        format!("covered-{suffix}"),
        format!("uncovered-{suffix}"),
        format!("broken-{suffix}"),
    ];
    control_plane().apply(&policy(&policies[0], &covered.name, Some(&prov_secret)));
    control_plane().apply(&policy(&policies[1], &uncovered.name, None));
    control_plane().apply(&policy(
        &policies[2],
        &broken.name,
        Some(&format!("missing-{suffix}")),
    ));

    let bucket = |ns: &str| unique_bucket(&ns[..ns.find('-').unwrap_or(ns.len())]);
    let (covered_bucket, uncovered_bucket, broken_bucket) = (
        bucket(&covered.name),
        bucket(&uncovered.name),
        bucket(&broken.name),
    );
    let mut apps = Vec::new();
    for (ns, b) in [
        (&covered.name, &covered_bucket),
        (&uncovered.name, &uncovered_bucket),
        (&broken.name, &broken_bucket),
    ] {
        let app = user(&format!("app-{ns}"), Some((&data_rights(b), &["_INBOX.>"])));
        apply_json(&fixtures::secret(
            ns,
            "app",
            &[("jwt", &app.0), ("seed", &app.1)],
        ));
        apps.push(app);
    }
    apply_json(&store(
        &covered.name,
        &covered_bucket,
        &[("deletion-policy", "delete")],
    ));
    apply_json(&store(&uncovered.name, &uncovered_bucket, &[]));
    apply_json(&store(&broken.name, &broken_bucket, &[]));

    // Covered: Ready, made by the provisioning user.
    support::wait_kvb_of(operator(), &covered.name, "store", "Ready", READY);
    let (_, reason, _) = ready(&client, &covered.name).await.unwrap();
    assert_eq!(reason, "BucketManaged");
    // The app's data rights are enough for what daprd does with the bucket.
    let app = user_connect_options(&apps[0].0, &apps[0].1)
        .connect(world().server.url())
        .await
        .unwrap();
    let kv = async_nats::jetstream::new(app)
        .get_key_value(&covered_bucket)
        .await
        .expect("the app binds to its bucket");
    kv.put("k", "v".into()).await.expect("the app writes");

    // A pub/sub Component of the covered namespace: its stream is the provisioning user's too.
    // Its user's data rights: the stream lookup by topic, and publishing to it.
    let topic = unique_bucket("orders");
    pubsub_with_data_rights(&covered.name, "events", &topic);
    support::wait_jss(&covered.name, "events", "Ready=True", |s, _| s == "True").await;

    // Not covered: the same rights, its own credentials, the server's refusal; nothing made.
    // The server drops the create and the client sees no answer: the operator tells the
    // server's refusal, naming the subject, rather than a timeout.
    let (refusal, message) = wait_refused(&client, &uncovered.name, "NatsPermissionDenied").await;
    eprintln!("without a provisioning identity: {refusal}: {message}");
    assert!(
        message.contains(&format!(
            "may not publish to $JS.API.STREAM.CREATE.KV_{uncovered_bucket}"
        )),
        "{message}"
    );
    assert!(!stream_exists(&observer, &uncovered_bucket).await);
    // So is a pub/sub's: its user, with data rights only, may not list or create streams.
    pubsub_with_data_rights(&uncovered.name, "refused-events", &unique_bucket("refused"));
    let jss = support::wait_jss(&uncovered.name, "events", "NatsPermissionDenied", |_, r| {
        r == "NatsPermissionDenied"
    })
    .await;
    let message = jss["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    eprintln!("a pub/sub without a provisioning identity: {message}");
    assert!(
        message.contains("may not publish to $JS.API.STREAM."),
        "{message}"
    );
    // A policy naming a Secret that is not there: said, without the Secret's name.
    let (_, message) = wait_refused(&client, &broken.name, "ProvisioningCredentialsInvalid").await;
    assert!(message.contains(&policies[2]), "{message}");
    assert!(!message.contains("missing-"), "{message}");
    assert!(!stream_exists(&observer, &broken_bucket).await);

    // An update and a deletion, by the same identity.
    let components: Api<Component> = Api::namespaced(client.clone(), &covered.name);
    apply_json(&store(
        &covered.name,
        &covered_bucket,
        &[("deletion-policy", "delete"), ("history", "3")],
    ));
    let stream = format!("KV_{covered_bucket}");
    eventually(
        READY,
        "the bucket's history to become 3",
        || async {
            let config = stream_config(&observer, &stream).await?;
            (config.max_messages_per_subject == 3).then_some(())
        },
        async || operator().log_tail(),
    )
    .await;
    components
        .delete("store", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        READY,
        "the bucket to be deleted with its Component",
        || async { (!stream_exists(&observer, &covered_bucket).await).then_some(()) },
        async || operator().log_tail(),
    )
    .await;
    // Advisories are sent after the answers, on another connection: wait for the delete's.
    let changes = eventually(
        Duration::from_secs(10),
        "the delete's advisory",
        || async {
            let changes = changes_of(&seen, &stream);
            changes
                .iter()
                .any(|(w, _)| w == "DELETE")
                .then_some(changes)
        },
        async || format!("{:?}", seen.lock().unwrap()),
    )
    .await;
    eprintln!(
        "changes of {stream}: {changes:?}, provisioner {}",
        provisioner.2
    );
    for what in ["CREATE", "UPDATE", "DELETE"] {
        assert!(
            changes.iter().any(|(w, _)| w == what),
            "no {what} advisory for {stream}: {changes:?}\n{:?}",
            seen.lock().unwrap()
        );
    }
    assert!(
        changes.iter().all(|(_, u)| *u == provisioner.2),
        "a change of {stream} by another user than the provisioning one ({}): {changes:?}",
        provisioner.2
    );
    // Every change of this test's streams (the pub/sub's too) was the provisioning user's, and
    // no app user changed anything, in any namespace.
    let all = seen.lock().unwrap().clone();
    let changed: Vec<(&str, &str)> = all
        .iter()
        .filter_map(|a| {
            let subject = a["subject"].as_str()?;
            // This test's streams: its bucket's, and the pub/sub's (named for its namespace).
            let ours = subject.contains(&covered_bucket) || subject.contains(&covered.name);
            let changes = ours
                && ["CREATE", "UPDATE", "DELETE"]
                    .iter()
                    .any(|w| subject.starts_with(&format!("$JS.API.STREAM.{w}.")));
            let c = &a["client"];
            changes.then(|| {
                (
                    subject,
                    c["nkey"].as_str().or(c["user"].as_str()).unwrap_or(""),
                )
            })
        })
        .collect();
    assert!(
        changed
            .iter()
            .any(|(s, _)| s.starts_with("$JS.API.STREAM.CREATE.") && !s.contains(".KV_")),
        "no stream created for the pub/sub Component: {changed:?}"
    );
    assert!(
        changed.iter().all(|(_, u)| *u == provisioner.2),
        "{changed:?}"
    );
    for (i, app) in apps.iter().enumerate() {
        let by_app: Vec<&Value> = all
            .iter()
            .filter(|a| {
                let c = &a["client"];
                c["nkey"].as_str() == Some(&app.2) || c["user"].as_str() == Some(&app.2)
            })
            .filter(|a| {
                a["subject"]
                    .as_str()
                    .is_some_and(|s| !s.starts_with("$JS.API.STREAM.INFO."))
            })
            .collect();
        assert!(by_app.is_empty(), "app {i} changed streams: {by_app:?}");
    }

    // No key, seed or JWT of the admin's in the tenants' namespaces or anything they read.
    let needles = [provisioner.1.clone(), signature_of(&provisioner.0)];
    let leaks = leaks_in_tenant_places(
        &client,
        &[&covered.name, &uncovered.name, &broken.name],
        &needles,
    )
    .await;
    assert!(leaks.is_empty(), "the admin's credentials in: {leaks:?}");
    // The scan finds them where they belong.
    assert!(
        !Needles::pieces_of([provisioner.1.as_str()])
            .find(&secrets_text(&client, operator_namespace()).await)
            .is_empty()
    );

    for name in &policies {
        let _ = control_plane().kubectl(&["delete", "natsserverpolicy", name], None);
    }
}

/// A JWT's signature: the part no other JWT shares.
fn signature_of(jwt: &str) -> String {
    jwt.rsplit('.').next().unwrap_or_default().to_owned()
}

/// The places a tenant reads (the operator's log, Events, KeyValueBuckets, JetStreamStreams,
/// Components, `/metrics`, and the Secrets of `namespaces`) that hold any 16-character piece of
/// `needles`.
async fn leaks_in_tenant_places(
    client: &kube::Client,
    namespaces: &[&str],
    needles: &[String],
) -> Vec<String> {
    let cp = control_plane();
    let get = |args: &[&str]| cp.kubectl(args, None).unwrap_or_else(|e| panic!("{e}"));
    let (_, metrics) = operator().http_get("/metrics").expect("metrics");
    let mut places = vec![
        ("the operator log".to_owned(), operator().logs()),
        (
            "Events".to_owned(),
            get(&["get", "events", "-A", "-o", "yaml"]),
        ),
        (
            "KeyValueBuckets".to_owned(),
            get(&["get", "kvb", "-A", "-o", "yaml"]),
        ),
        (
            "JetStreamStreams".to_owned(),
            get(&["get", "jss", "-A", "-o", "yaml"]),
        ),
        (
            "Components".to_owned(),
            get(&["get", "components", "-A", "-o", "yaml"]),
        ),
        ("/metrics".to_owned(), metrics),
    ];
    for ns in namespaces {
        places.push((
            format!("the Secrets of {ns}"),
            secrets_text(client, ns).await,
        ));
    }
    let pieces = Needles::pieces_of(needles.iter().map(String::as_str));
    places
        .into_iter()
        .filter(|(_, text)| !pieces.find(text).is_empty())
        .map(|(place, _)| place)
        .collect()
}

/// Every value of every Secret of `ns`, decoded.
async fn secrets_text(client: &Client, ns: &str) -> String {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default())
        .await
        .expect("list Secrets");
    list.items
        .into_iter()
        .flat_map(|s| s.data.unwrap_or_default().into_values())
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// An app user missing one right daprd needs at start-up (`STREAM.INFO` of its bucket's stream):
/// `AppPermissionDenied` names the subject, and Dapr's own sidecar with that user fails at
/// start-up on exactly it (the server's log says which subject it refused, to whom). With the
/// right added to the user's JWT: Ready, and daprd saves and reads state.
#[tokio::test]
async fn a_right_the_app_lacks_is_named_before_daprd_fails_on_it() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "rights").await;
    let suffix = support::random_suffix();
    let observer = user("observer", None);
    let provisioner = user("provisioner", None);
    let prov_secret = format!("provisioner-rights-{suffix}");
    apply_json(&fixtures::secret(
        operator_namespace(),
        &prov_secret,
        &[("jwt", &provisioner.0), ("seed", &provisioner.1)],
    ));
    let policy_name = format!("rights-{suffix}");
    control_plane().apply(&policy(&policy_name, &ns.name, Some(&prov_secret)));

    let bucket = unique_bucket("rights");
    let info = format!("$JS.API.STREAM.INFO.KV_{bucket}");
    let key = KeyPair::new_user();
    let all = data_rights(&bucket);
    let without_info: Vec<String> = all.iter().filter(|s| **s != info).cloned().collect();
    assert_eq!(without_info.len(), all.len() - 1);
    let lacking = user_of(&key, "app-rights", Some((&without_info, &["_INBOX.>"])));
    apply_json(&fixtures::secret(
        &ns.name,
        "app",
        &[("jwt", &lacking.0), ("seed", &lacking.1)],
    ));
    apply_json(&store(&ns.name, &bucket, &[]));

    // A pub/sub Component whose user may look its stream up but not publish to its topic.
    let topic = format!("rights.orders.{}", support::random_suffix());
    let names = vec!["$JS.API.STREAM.NAMES".to_owned()];
    let publisher = user("pub-rights", Some((&names, &["_INBOX.>"])));
    apply_json(&fixtures::secret(
        &ns.name,
        "pubapp",
        &[("jwt", &publisher.0), ("seed", &publisher.1)],
    ));
    apply_json(
        &ComponentManifest::new(&ns.name, "events")
            .type_("pubsub.jetstream")
            .item("natsURL", &world().server.url())
            .item_from_secret("jwt", "pubapp", Some("jwt"))
            .item_from_secret("seedKey", "pubapp", Some("seed"))
            .annotation("jetstreamkv.io/subjects", &topic)
            .json(),
    );

    let (_, message) = wait_refused(&client, &ns.name, "AppPermissionDenied").await;
    assert!(
        message.contains(&format!("publish to {info} ")),
        "{message}"
    );
    assert!(message.contains("start-up"), "{message}");
    // The bucket is there (the provisioning identity made it): only the app's right is missing.
    assert!(stream_exists(&observer, &bucket).await);
    let jss = support::wait_jss(&ns.name, "events", "AppPermissionDenied", |s, r| {
        s == "False" && r == "AppPermissionDenied"
    })
    .await;
    let ready = jss["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .to_string();
    assert!(ready.contains(&format!("publish to {topic} ")), "{ready}");

    // daprd with the same user: fails at start-up, and what the server refused is that subject.
    let daprd_file = |jwt: &str, seed: &str| {
        resource_file(
            &ComponentManifest::store(&ns.name, "store", &world().server.url(), &bucket)
                .item("jwt", jwt)
                .item("seedKey", seed)
                .json(),
        )
    };
    let app_id = format!("rights{suffix}");
    let mut early = Daprd::start(&app_id, &daprd_file(&lacking.0, &lacking.1));
    let status = early
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("daprd started without the right:\n{}", early.log()));
    assert!(!status.success(), "{}", early.log());
    let log = early.log();
    assert!(
        log.contains("level=fatal") && log.contains("store"),
        "daprd did not fail on its state store:\n{log}"
    );
    let server_log =
        std::fs::read_to_string(world().server.dir().join("nats-server.log")).unwrap_or_default();
    let refused: Vec<&str> = server_log
        .lines()
        .filter(|l| l.contains(&key.public_key()) && l.contains("Violation"))
        .collect();
    eprintln!("the server refused daprd's user: {refused:?}");
    assert!(
        !refused.is_empty() && refused.iter().all(|l| l.contains(&format!("\"{info}\""))),
        "the server refused something else of daprd's user: {refused:?}"
    );

    // The right granted (a new JWT for the same user): Ready, and daprd saves and reads state.
    let granted = user_of(&key, "app-rights", Some((&all, &["_INBOX.>"])));
    apply_json(&fixtures::secret(
        &ns.name,
        "app",
        &[("jwt", &granted.0), ("seed", &granted.1)],
    ));
    support::wait_kvb_of(operator(), &ns.name, "store", "Ready", READY);
    let mut daprd = Daprd::start(&app_id, &daprd_file(&granted.0, &granted.1));
    daprd.wait_healthy();
    let saved = daprd.http(
        "POST",
        "/v1.0/state/store",
        Some(r#"[{"key":"order-1","value":{"item":"tea"}}]"#),
    );
    assert_eq!(
        saved.as_ref().map(|s| s.0),
        Some(204),
        "{saved:?}\n{}",
        daprd.log()
    );
    let read = daprd
        .http("GET", "/v1.0/state/store/order-1", None)
        .unwrap_or_else(|| panic!("read failed:\n{}", daprd.log()));
    assert_eq!(read.0, 200, "{read:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&read.1).unwrap(),
        json!({"item": "tea"})
    );
    let _ = control_plane().kubectl(&["delete", "natsserverpolicy", &policy_name], None);
}

/// The publish allow list of a user minted for a state store's `bucket`: what daprd's
/// `state.jetstream` does with it, and nothing else.
fn minted_publish(bucket: &str) -> Value {
    json!([
        format!("$JS.API.STREAM.INFO.KV_{bucket}"),
        format!("$JS.API.DIRECT.GET.KV_{bucket}.>"),
        format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"),
        format!("$KV.{bucket}.>"),
    ])
}

/// A state store asking for a minted user, whose `jwt` and `seedKey` name the Secret
/// `store-nats` the operator writes it to.
fn minted_store(namespace: &str, bucket: &str) -> Value {
    ComponentManifest::store(namespace, "store", &world().server.url(), bucket)
        .item_from_secret("jwt", "store-nats", Some("jwt"))
        .item_from_secret("seedKey", "store-nats", Some("seed"))
        .annotation("jetstreamkv.io/credentials", "mint")
        .json()
}

/// A client of the minted user, and every error the server sends it.
async fn connect_collecting(
    jwt: &str,
    seed: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let into = errors.clone();
    let client = user_connect_options(jwt, seed)
        .event_callback(move |event| {
            let into = into.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    into.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(world().server.url())
        .await
        .expect("the minted user connects");
    (client, errors)
}

/// The admin's Secrets in the operator's namespace for minting: a provisioning identity, the
/// account signing key, and what revokes (the operator's key and a user of the system account).
struct MintingSecrets {
    provisioner: (String, String, String),
    prov_secret: String,
    signing_seed: String,
    key_secret: String,
    operator_seed: String,
    system_user: KeyPair,
    system_jwt: String,
    revocation_secret: String,
}

fn minting_secrets(suffix: &str) -> MintingSecrets {
    let provisioner = user("provisioner", None);
    let prov_secret = format!("provisioner-mint-{suffix}");
    apply_json(&fixtures::secret(
        operator_namespace(),
        &prov_secret,
        &[("jwt", &provisioner.0), ("seed", &provisioner.1)],
    ));
    let signing_seed = world().signing.seed().expect("a seed");
    let key_secret = format!("minter-{suffix}");
    apply_json(&fixtures::secret(
        operator_namespace(),
        &key_secret,
        &[
            ("seed", &signing_seed),
            ("account", &world().account.public_key()),
        ],
    ));
    // What revokes: the operator's key and a user of the system account.
    let operator_seed = world().operator.seed().expect("a seed");
    let system_user = KeyPair::new_user();
    let system_jwt =
        jwt::user_jwt(&world().system, &system_user.public_key(), "sys", None).expect("minting");
    let system_creds = creds_file(&system_jwt, &system_user.seed().expect("a seed"));
    let revocation_secret = format!("revoker-{suffix}");
    apply_json(&fixtures::secret(
        operator_namespace(),
        &revocation_secret,
        &[
            ("operatorSeed", &operator_seed),
            ("systemCreds", &system_creds),
        ],
    ));
    MintingSecrets {
        provisioner,
        prov_secret,
        signing_seed,
        key_secret,
        operator_seed,
        system_user,
        system_jwt,
        revocation_secret,
    }
}

/// A policy letting `namespace` use the test server, with the provisioning identity, signing
/// key and revocation Secret of `secrets`.
fn policy_revoking(name: &str, namespace: &str, secrets: &MintingSecrets) -> String {
    format!(
        "{}    revocationSecretName: {}\n",
        policy_minting(
            name,
            namespace,
            Some(&secrets.prov_secret),
            Some(&secrets.key_secret),
        ),
        secrets.revocation_secret
    )
}

/// A user minted per Component (`jetstreamkv.io/credentials: mint`) with the account signing
/// key a NatsServerPolicy names: written to the Secret the Component's `jwt` and `seedKey`
/// name, owned by the Component, allowed exactly what daprd does with its bucket. Dapr's own
/// sidecar saves and reads state with it (its secretKeyRefs resolved by Dapr from a secret
/// store holding that Secret's keys); the same user is refused by the server on another bucket's
/// subjects and on stream creation; a namespace whose policy names no signing key gets no user;
/// the signing key appears nowhere a tenant can read.
#[tokio::test]
async fn a_user_minted_for_a_component_does_what_daprd_needs_and_nothing_else() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "mint").await;
    let outside = TestNamespace::new(&client, "nomint").await;
    let suffix = support::random_suffix();
    let observer = user("observer", None);
    let keys = minting_secrets(&suffix);
    let MintingSecrets {
        provisioner,
        prov_secret,
        signing_seed,
        key_secret,
        operator_seed,
        system_user,
        system_jwt,
        ..
    } = &keys;
    let norevoke = TestNamespace::new(&client, "norevoke").await;
    let policies = [
        format!("mint-{suffix}"),
        format!("nomint-{suffix}"),
        format!("norevoke-{suffix}"),
    ];
    control_plane().apply(&policy_revoking(&policies[0], &ns.name, &keys));
    control_plane().apply(&policy(&policies[1], &outside.name, Some(prov_secret)));
    control_plane().apply(&policy_minting(
        &policies[2],
        &norevoke.name,
        Some(prov_secret),
        Some(key_secret),
    ));

    let bucket = unique_bucket("mint");
    let outside_bucket = unique_bucket("nomint");
    let component = minted_store(&ns.name, &bucket);
    apply_json(&component);
    apply_json(&minted_store(&outside.name, &outside_bucket));

    support::wait_kvb_of(operator(), &ns.name, "store", "Ready", READY);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret = secrets.get("store-nats").await.expect("the minted Secret");
    let owner = &secret.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Component", "store")
    );
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| String::from_utf8(data[k].0.clone()).expect("text");
    let (minted_jwt, minted_seed) = (text("jwt"), text("seed"));
    let claims = jwt::decode_verified(&minted_jwt).expect("the minted JWT verifies");
    assert_eq!(claims.iss, world().signing.public_key());
    assert_eq!(claims.issuer_account(), world().account.public_key());
    assert_eq!(
        claims.nats["pub"],
        json!({ "allow": minted_publish(&bucket) })
    );
    assert_eq!(claims.nats["sub"], json!({ "allow": ["_INBOX.>"] }));
    eprintln!("minted user {}: {:?}", claims.sub, claims.nats);
    let events = control_plane()
        .kubectl(&["get", "events", "-n", &ns.name, "-o", "yaml"], None)
        .expect("events");
    assert!(
        events.contains("UserMinted") && events.contains(&claims.sub),
        "{events}"
    );

    // Dapr's sidecar with the Component as the cluster holds it; its secretKeyRefs resolved by
    // Dapr from a secret store that holds the minted Secret's keys under its name.
    let app_id = format!("mint{suffix}");
    let minted = (minted_jwt.clone(), minted_seed.clone(), claims.sub.clone());
    let (mut daprd, _dir) =
        daprd_with_minted(&app_id, &component, "store-nats", &minted, &[], None);
    daprd.wait_healthy();
    let saved = daprd.http(
        "POST",
        "/v1.0/state/store",
        Some(r#"[{"key":"order-1","value":{"item":"tea"}}]"#),
    );
    assert_eq!(
        saved.as_ref().map(|s| s.0),
        Some(204),
        "{saved:?}\n{}",
        daprd.log()
    );
    let read = daprd
        .http("GET", "/v1.0/state/store/order-1", None)
        .unwrap_or_else(|| panic!("read failed:\n{}", daprd.log()));
    assert_eq!(read.0, 200, "{read:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&read.1).unwrap(),
        json!({"item": "tea"})
    );
    let deleted = daprd.http("DELETE", "/v1.0/state/store/order-1", None);
    assert_eq!(deleted.as_ref().map(|s| s.0), Some(204), "{deleted:?}");
    drop(daprd);

    // The same user on the test's own client: its bucket works; another bucket's subjects and
    // stream creation are refused by the server.
    let other = unique_bucket("other");
    let admin = user_connect_options(&observer.0, &observer.1)
        .connect(world().server.url())
        .await
        .expect("the observer connects");
    async_nats::jetstream::new(admin)
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: other.clone(),
            ..Default::default()
        })
        .await
        .expect("another bucket");
    let (app, errors) = connect_collecting(&minted_jwt, &minted_seed).await;
    let js = async_nats::jetstream::new(app.clone());
    let kv = js
        .get_key_value(&bucket)
        .await
        .expect("binds to its bucket");
    kv.put("k", "v".into()).await.expect("writes its bucket");
    assert!(js.get_key_value(&other).await.is_err());
    let _ = app.publish(format!("$KV.{other}.k"), "x".into()).await;
    let _ = app.subscribe(format!("$KV.{other}.>")).await;
    let created = unique_bucket("created");
    // A bucket's stream, created the way a KV client creates it.
    assert!(
        js.create_stream(async_nats::jetstream::stream::Config {
            name: format!("KV_{created}"),
            subjects: vec![format!("$KV.{created}.>")],
            ..Default::default()
        })
        .await
        .is_err()
    );
    let _ = app.flush().await;
    let seen = violations(
        &errors,
        &[
            format!("publish to \"$js.api.stream.info.kv_{other}\""),
            format!("publish to \"$kv.{other}.k\""),
            format!("subscription to \"$kv.{other}.>\""),
            format!("publish to \"$js.api.stream.create.kv_{created}\""),
        ],
    )
    .await;
    eprintln!("the server refused the minted user: {seen:?}");
    assert!(!stream_exists(&observer, &created).await);

    // A namespace whose policy names no signing key: told so, and no Secret written.
    let (_, message) = wait_refused(&client, &outside.name, "MintingNotAllowed").await;
    assert!(message.contains(&outside.name), "{message}");
    let outside_secrets: Api<Secret> = Api::namespaced(client.clone(), &outside.name);
    assert!(
        outside_secrets
            .get_opt("store-nats")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!stream_exists(&observer, &outside_bucket).await);

    // Nothing of the admin's keys where tenants read.
    let needles = [
        signing_seed.clone(),
        operator_seed.clone(),
        system_user.seed().expect("a seed"),
        signature_of(system_jwt),
        provisioner.1.clone(),
        signature_of(&provisioner.0),
    ];
    let get = |args: &[&str]| {
        control_plane()
            .kubectl(args, None)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let leaks = leaks_in_tenant_places(
        &client,
        &[&ns.name, &outside.name, &norevoke.name],
        &needles,
    )
    .await;
    assert!(leaks.is_empty(), "the admin's keys in: {leaks:?}");
    // The scan finds the signing key where it belongs.
    assert!(
        !Needles::pieces_of([signing_seed.as_str()])
            .find(&secrets_text(&client, operator_namespace()).await)
            .is_empty()
    );

    // The Component deleted: its user revoked, its connection closed and refused within
    // seconds.
    let (watched, _) = connect_collecting(&minted_jwt, &minted_seed).await;
    let components: Api<Component> = Api::namespaced(client.clone(), &ns.name);
    let deleted_at = std::time::Instant::now();
    components
        .delete("store", &DeleteParams::default())
        .await
        .unwrap();
    let refused = eventually(
        Duration::from_secs(20),
        "the minted user to be refused",
        || async {
            match user_connect_options(&minted_jwt, &minted_seed)
                .connect(world().server.url())
                .await
            {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        },
        async || operator().log_tail(),
    )
    .await;
    eprintln!(
        "the minted user refused {:?} after its Component's deletion: {refused}",
        deleted_at.elapsed()
    );
    assert!(
        refused.to_ascii_lowercase().contains("authorization"),
        "{refused}"
    );
    eventually(
        Duration::from_secs(10),
        "the open connection of the revoked user to be closed",
        || async {
            (watched.connection_state() != async_nats::connection::State::Connected).then_some(())
        },
        async || String::new(),
    )
    .await;
    let events = get(&["get", "events", "-n", &ns.name, "-o", "yaml"]);
    assert!(events.contains("UserRevoked"), "{events}");
    eventually(
        Duration::from_secs(30),
        "the minted Secret to go with its Component",
        || async {
            secrets
                .get_opt("store-nats")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
        async || String::new(),
    )
    .await;

    // A Secret of that name the operator did not write is never overwritten: said, and kept;
    // once it is gone, the user is minted.
    apply_json(&fixtures::secret(
        &norevoke.name,
        "store-nats",
        &[("jwt", "the team's own"), ("seed", "the team's own")],
    ));
    let kept_bucket = unique_bucket("norevoke");
    apply_json(&minted_store(&norevoke.name, &kept_bucket));
    let (_, message) = wait_refused(&client, &norevoke.name, "MintedSecretConflict").await;
    assert!(message.contains("store-nats"), "{message}");
    let kept: Api<Secret> = Api::namespaced(client.clone(), &norevoke.name);
    let theirs = kept
        .get("store-nats")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    assert_eq!(theirs["jwt"].0, b"the team's own");
    kept.delete("store-nats", &DeleteParams::default())
        .await
        .unwrap();

    // Without a revocation Secret: the deletion says the user stays valid, and it does.
    support::wait_kvb_of(operator(), &norevoke.name, "store", "Ready", READY);
    let kept_data = kept
        .get("store-nats")
        .await
        .unwrap()
        .data
        .unwrap_or_default();
    let kept_text = |k: &str| String::from_utf8(kept_data[k].0.clone()).expect("text");
    let (kept_jwt, kept_seed) = (kept_text("jwt"), kept_text("seed"));
    Api::<Component>::namespaced(client.clone(), &norevoke.name)
        .delete("store", &DeleteParams::default())
        .await
        .unwrap();
    let warning = events_showing(&norevoke.name, &["MintedUserNotRevoked"]).await;
    let kept_user = jwt::decode(&kept_jwt).unwrap().claims.sub;
    assert!(warning.contains(&kept_user), "{warning}");
    eventually(
        Duration::from_secs(30),
        "the minted Secret to go with its Component",
        || async {
            kept.get_opt("store-nats")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
        async || String::new(),
    )
    .await;
    user_connect_options(&kept_jwt, &kept_seed)
        .connect(world().server.url())
        .await
        .expect("a user not revoked still connects, as the Event and the docs say");

    for name in &policies {
        let _ = control_plane().kubectl(&["delete", "natsserverpolicy", name], None);
    }
}

/// The user minted into the Secret `store-nats` of `secrets`, once it is there and is not
/// `except`: `(jwt, seed, public key)`.
async fn minted_user(
    secrets: &Api<Secret>,
    except: Option<&str>,
) -> Option<(String, String, String)> {
    minted_user_in(secrets, "store-nats", except).await
}

/// [`minted_user`] in the Secret `name`.
async fn minted_user_in(
    secrets: &Api<Secret>,
    name: &str,
    except: Option<&str>,
) -> Option<(String, String, String)> {
    let secret = secrets.get_opt(name).await.ok()??;
    let user = secret
        .metadata
        .annotations?
        .get("jetstreamkv.io/minted-user")?
        .clone();
    if Some(user.as_str()) == except {
        return None;
    }
    let data = secret.data?;
    let text = |k: &str| String::from_utf8(data.get(k)?.0.clone()).ok();
    let (jwt, seed) = (text("jwt")?, text("seed")?);
    (jwt::decode_verified(&jwt).ok()?.sub == user).then_some((jwt, seed, user))
}

/// How a user connects now: Ok, or the server's refusal.
/// The Events of namespace `ns` (as YAML), once they show every piece of `text` (20 s at most).
async fn events_showing(ns: &str, text: &[&str]) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("Events in {ns} showing {text:?}"),
        || async {
            let events = control_plane()
                .kubectl(&["get", "events", "-n", ns, "-o", "yaml"], None)
                .expect("events");
            text.iter().all(|t| events.contains(t)).then_some(events)
        },
        async || operator().log_tail(),
    )
    .await
}

async fn connects(user: &(String, String, String)) -> Result<async_nats::Client, String> {
    user_connect_options(&user.0, &user.1)
        .connect(world().server.url())
        .await
        .map_err(|e| e.to_string())
}

/// Waits until `user` is refused by the server; the refusal and how long it took from `since`
/// (when it was `what`: "replaced", "deleted").
async fn wait_refused_user(
    user: &(String, String, String),
    since: std::time::Instant,
    what: &str,
) -> String {
    let refused = eventually(
        Duration::from_secs(20),
        &format!("the user {} to be refused", user.2),
        || async { connects(user).await.err() },
        async || operator().log_tail(),
    )
    .await;
    eprintln!(
        "user {} refused {:?} after it was {what}: {refused}",
        user.2,
        since.elapsed()
    );
    assert!(
        refused.to_ascii_lowercase().contains("authorization"),
        "{refused}"
    );
    refused
}

/// A minted user replaced by another (its Secret edited by hand; the Component now naming
/// another bucket) is revoked as it is replaced: the server refuses it and closes its
/// connection within seconds, while the new user connects and uses the bucket. Where the policy
/// names no revocation Secret, the replacement says (a Warning) that the earlier user stays
/// valid, and it does.
#[tokio::test]
async fn a_user_minted_again_revokes_the_one_it_replaces() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "remint").await;
    let norevoke = TestNamespace::new(&client, "remintkept").await;
    let suffix = support::random_suffix();
    let keys = minting_secrets(&suffix);
    let policies = [format!("remint-{suffix}"), format!("remintkept-{suffix}")];
    control_plane().apply(&policy_revoking(&policies[0], &ns.name, &keys));
    control_plane().apply(&policy_minting(
        &policies[1],
        &norevoke.name,
        Some(&keys.prov_secret),
        Some(&keys.key_secret),
    ));
    let bucket = unique_bucket("remint");
    apply_json(&minted_store(&ns.name, &bucket));
    support::wait_kvb_of(operator(), &ns.name, "store", "Ready", READY);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let first = minted_user(&secrets, None).await.expect("the minted user");
    let (watched, _) = connect_collecting(&first.0, &first.1).await;

    // The Secret edited by hand: a new user minted, the first one revoked.
    let edited = std::time::Instant::now();
    secrets
        .patch(
            "store-nats",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({ "stringData": { "jwt": "edited by hand" } })),
        )
        .await
        .expect("edit the minted Secret");
    let second = eventually(
        READY,
        "a new user minted into the edited Secret",
        || minted_user(&secrets, Some(&first.2)),
        async || operator().log_tail(),
    )
    .await;
    wait_refused_user(&first, edited, "replaced").await;
    eventually(
        Duration::from_secs(10),
        "the open connection of the replaced user to be closed",
        || async {
            (watched.connection_state() != async_nats::connection::State::Connected).then_some(())
        },
        async || String::new(),
    )
    .await;
    let app = connects(&second).await.expect("the new user connects");
    let kv = async_nats::jetstream::new(app)
        .get_key_value(&bucket)
        .await
        .expect("the new user binds to its bucket");
    kv.put("k", "v".into()).await.expect("and writes it");
    let events = control_plane()
        .kubectl(&["get", "events", "-n", &ns.name, "-o", "yaml"], None)
        .expect("events");
    assert!(
        events.contains("UserRevoked") && events.contains(&first.2),
        "{events}"
    );

    // The Component now names another bucket: the user minted for the first one is replaced
    // and revoked too.
    let moved = unique_bucket("moved");
    let since = std::time::Instant::now();
    apply_json(&minted_store(&ns.name, &moved));
    let third = eventually(
        READY,
        "a user minted for the other bucket",
        || minted_user(&secrets, Some(&second.2)),
        async || operator().log_tail(),
    )
    .await;
    wait_refused_user(&second, since, "replaced").await;
    let app = connects(&third).await.expect("the new user connects");
    support::wait_kvb_of(operator(), &ns.name, "store", "Ready", READY);
    async_nats::jetstream::new(app)
        .get_key_value(&moved)
        .await
        .expect("the new user binds to the other bucket");

    // The annotation edited to name another user (say another team's), the seed and JWT too:
    // the operator cannot tell that user is this Component's, so it says so and revokes
    // nothing; the other user still connects.
    let victim = user("victim", None);
    let since = std::time::Instant::now();
    secrets
        .patch(
            "store-nats",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({
                "metadata": { "annotations": { "jetstreamkv.io/minted-user": victim.2 } },
                "stringData": { "jwt": "edited by hand", "seed": "edited by hand" },
            })),
        )
        .await
        .expect("edit the minted Secret");
    let fourth = eventually(
        READY,
        "a new user minted into the edited Secret",
        || minted_user(&secrets, Some(&victim.2)),
        async || operator().log_tail(),
    )
    .await;
    let warning = events_showing(&ns.name, &["MintedUserNotRevoked", &victim.2]).await;
    assert!(warning.contains("cannot tell"), "{warning}");
    // Revocations take effect within a second or two (above): give this one longer to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    connects(&victim)
        .await
        .expect("a user the Secret does not prove is never revoked");
    connects(&fourth).await.expect("the new user connects");
    eprintln!(
        "a foreign user named by the annotation still connects {:?} after the edit",
        since.elapsed()
    );

    // No revocation Secret: the replacement says the earlier user stays valid, and it does.
    let kept_bucket = unique_bucket("remintkept");
    apply_json(&minted_store(&norevoke.name, &kept_bucket));
    support::wait_kvb_of(operator(), &norevoke.name, "store", "Ready", READY);
    let kept: Api<Secret> = Api::namespaced(client.clone(), &norevoke.name);
    let before = minted_user(&kept, None).await.expect("the minted user");
    kept.patch(
        "store-nats",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({ "stringData": { "jwt": "edited by hand" } })),
    )
    .await
    .expect("edit the minted Secret");
    eventually(
        READY,
        "a new user minted into the edited Secret",
        || minted_user(&kept, Some(&before.2)),
        async || operator().log_tail(),
    )
    .await;
    let warning = events_showing(&norevoke.name, &["MintedUserNotRevoked"]).await;
    assert!(warning.contains(&before.2), "{warning}");
    connects(&before)
        .await
        .expect("a replaced user not revoked still connects, as the Event and the docs say");

    for name in &policies {
        let _ = control_plane().kubectl(&["delete", "natsserverpolicy", name], None);
    }
}

/// Dapr's sidecar with `component` as the cluster holds it (and `others`: Subscriptions), its
/// secretKeyRefs resolved by Dapr from a secret store that holds the minted Secret `secret`'s
/// `jwt` and `seed` under its name; the folder of that store goes with it.
fn daprd_with_minted(
    app_id: &str,
    component: &Value,
    secret: &str,
    user: &(String, String, String),
    others: &[Value],
    app_port: Option<u16>,
) -> (Daprd, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store_file = support::daprd::secret_store_file(
        dir.path(),
        "secrets",
        &json!({ secret: { "jwt": user.0, "seed": user.1 } }),
    );
    let mut with_store = component.clone();
    with_store["auth"] = json!({ "secretStore": "secrets" });
    let mut resources = vec![store_file, resource_file(&with_store)];
    resources.extend(others.iter().map(resource_file));
    (Daprd::start_with(app_id, &resources, app_port), dir)
}

/// The server's permissions violations `errors` holds for every one of `expected` (lower case),
/// once it holds them all.
async fn violations(errors: &Arc<Mutex<Vec<String>>>, expected: &[String]) -> Vec<String> {
    let expected: Vec<String> = expected.iter().map(|s| s.to_ascii_lowercase()).collect();
    eventually(
        Duration::from_secs(10),
        "the server's permissions violations",
        || async {
            let seen: Vec<String> = errors
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.to_ascii_lowercase())
                .collect();
            expected
                .iter()
                .all(|x| {
                    seen.iter()
                        .any(|e| e.contains("permissions violation") && e.contains(x.as_str()))
                })
                .then_some(seen)
        },
        async || format!("{:?}", errors.lock().unwrap()),
    )
    .await
}

/// A user minted for a `pubsub.jetstream` Component (`jetstreamkv.io/credentials: mint`) is
/// allowed exactly what daprd's pub/sub does with the Component's streams and the subjects they
/// hold (from its declarative Subscriptions, dead-letter topic included): Dapr's own sidecar
/// with it publishes, the app receives, and a message the app fails reaches the dead-letter
/// topic's subscriber. The same user on the test's own client is refused by the server on
/// another stream's subject, on consumers of another stream and on stream creation; nothing of
/// the admin's keys appears where the tenant reads; after the Component's deletion the user is
/// refused within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_minted_for_a_pub_sub_publishes_and_receives_its_topics_only() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "mintps").await;
    let suffix = support::random_suffix();
    let keys = minting_secrets(&suffix);
    let policy_name = format!("mintps-{suffix}");
    control_plane().apply(&policy_revoking(&policy_name, &ns.name, &keys));
    let observer = user("observer", None);

    let component = ComponentManifest::new(&ns.name, "events")
        .type_("pubsub.jetstream")
        .item("natsURL", &world().server.url())
        .item("deliverPolicy", "all")
        .item_from_secret("jwt", "events-nats", Some("jwt"))
        .item_from_secret("seedKey", "events-nats", Some("seed"))
        .annotation("jetstreamkv.io/credentials", "mint")
        .json();
    apply_json(&component);
    let subscriptions = [
        crate::dapr_pubsub::subscription(&ns.name, "orders", &suffix, None),
        crate::dapr_pubsub::subscription(&ns.name, "payments", &suffix, Some("poison")),
        crate::dapr_pubsub::subscription(&ns.name, "poison", &suffix, None),
    ];
    for s in &subscriptions {
        apply_json(s);
    }
    let stream = format!("{}_events", ns.name);
    let dead_letters = format!("{stream}_deadletter");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let topics = [
        format!("orders.{suffix}"),
        format!("payments.{suffix}"),
        format!("poison.{suffix}"),
    ];
    let mut expected_publish = vec!["$JS.API.STREAM.NAMES".to_owned()];
    for s in [&stream, &dead_letters] {
        expected_publish.extend([
            format!("$JS.API.CONSUMER.CREATE.{s}"),
            format!("$JS.API.CONSUMER.CREATE.{s}.>"),
            format!("$JS.API.CONSUMER.INFO.{s}.>"),
            format!("$JS.ACK.{s}.>"),
            format!("$JS.FC.{s}.>"),
        ]);
    }
    expected_publish.extend(topics.iter().cloned());
    // Minted once the Subscriptions' topics are known (minted again as they are found).
    let minted = eventually(
        READY,
        "a user minted with the three Subscriptions' topics",
        || async {
            let minted = minted_user_in(&secrets, "events-nats", None).await?;
            let claims = jwt::decode_verified(&minted.0).ok()?;
            (claims.nats["pub"] == json!({ "allow": expected_publish })).then_some(minted)
        },
        async || {
            let now = minted_user_in(&secrets, "events-nats", None)
                .await
                .and_then(|m| jwt::decode_verified(&m.0).ok())
                .map(|c| c.nats["pub"].clone());
            format!(
                "minted now: {now:?}, wanted {expected_publish:?}\n{}\n--- operator log:\n{}",
                support::describe(&ns.name, "jss", "events"),
                operator().log_tail()
            )
        },
    )
    .await;
    let claims = jwt::decode_verified(&minted.0).expect("the minted JWT verifies");
    assert_eq!(claims.iss, world().signing.public_key());
    assert_eq!(claims.nats["sub"], json!({ "allow": ["_INBOX.>"] }));
    eprintln!("minted pub/sub user {}: {:?}", claims.sub, claims.nats);
    support::wait_jss(&ns.name, "events", "Ready=True", |s, _| s == "True").await;

    // daprd with the minted Secret: publishes; the app receives; a failed message reaches the
    // dead-letter topic's subscriber.
    let (app_port, mut rx) = crate::dapr_pubsub::start_app().await;
    let app_id = format!("mintps{suffix}");
    let cluster_component: Value = serde_json::from_str(
        &control_plane()
            .kubectl(
                &["-n", &ns.name, "get", "component", "events", "-o", "json"],
                None,
            )
            .expect("the Component"),
    )
    .expect("JSON");
    let (mut daprd, _dir) = daprd_with_minted(
        &app_id,
        &cluster_component,
        "events-nats",
        &minted,
        &subscriptions,
        Some(app_port),
    );
    daprd.wait_healthy();
    let mut received = Vec::new();
    for (topic, body) in [
        ("orders", r#"{"item":"tea"}"#),
        ("payments", r#"{"card":"declined"}"#),
    ] {
        let published = daprd.http(
            "POST",
            &format!("/v1.0/publish/events/{topic}.{suffix}"),
            Some(body),
        );
        assert_eq!(
            published.as_ref().map(|p| p.0),
            Some(204),
            "publish to {topic}: {published:?}\n{}",
            daprd.log()
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(received.contains(&"/orders".to_owned()) && received.contains(&"/poison".to_owned())) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((route, _))) => received.push(route),
            _ => panic!(
                "the app received {received:?} only, not /orders and /poison:\n{}",
                daprd.log()
            ),
        }
    }
    eprintln!("the app received, through daprd with the minted user: {received:?}");
    assert!(
        !daprd
            .log()
            .to_ascii_lowercase()
            .contains("permissions violation"),
        "{}",
        daprd.log()
    );
    drop(daprd);

    // The same user on the test's own client: another stream's subject and consumers, and
    // stream creation, are refused by the server.
    let other = format!("other_{suffix}");
    let admin = user_connect_options(&observer.0, &observer.1)
        .connect(world().server.url())
        .await
        .expect("the observer connects");
    async_nats::jetstream::new(admin)
        .create_stream(async_nats::jetstream::stream::Config {
            name: other.clone(),
            subjects: vec![format!("other.{suffix}")],
            ..Default::default()
        })
        .await
        .expect("another stream");
    let (app, errors) = connect_collecting(&minted.0, &minted.1).await;
    let js = async_nats::jetstream::new(app.clone());
    js.publish(format!("orders.{suffix}"), "own".into())
        .await
        .expect("publishes to its topic")
        .await
        .expect("stored in its stream");
    let _ = app.publish(format!("other.{suffix}"), "x".into()).await;
    let _ = app.subscribe(format!("other.{suffix}")).await;
    let _ = app
        .publish(format!("$JS.API.CONSUMER.CREATE.{other}"), "{}".into())
        .await;
    let created = format!("created_{suffix}");
    assert!(
        js.create_stream(async_nats::jetstream::stream::Config {
            name: created.clone(),
            subjects: vec![format!("created.{suffix}")],
            ..Default::default()
        })
        .await
        .is_err()
    );
    let _ = app.flush().await;
    let seen = violations(
        &errors,
        &[
            format!("publish to \"other.{suffix}\""),
            format!("subscription to \"other.{suffix}\""),
            format!("publish to \"$js.api.consumer.create.{other}\""),
            format!("publish to \"$js.api.stream.create.{created}\""),
        ],
    )
    .await;
    eprintln!("the server refused the minted pub/sub user: {seen:?}");

    // Nothing of the admin's keys where the tenant reads.
    let needles = [
        keys.signing_seed.clone(),
        keys.operator_seed.clone(),
        keys.system_user.seed().expect("a seed"),
        signature_of(&keys.system_jwt),
        keys.provisioner.1.clone(),
        signature_of(&keys.provisioner.0),
    ];
    let leaks = leaks_in_tenant_places(&client, &[&ns.name], &needles).await;
    assert!(leaks.is_empty(), "the admin's keys in: {leaks:?}");

    // The Component deleted: its user revoked within seconds.
    let deleted = std::time::Instant::now();
    Api::<Component>::namespaced(client.clone(), &ns.name)
        .delete("events", &DeleteParams::default())
        .await
        .unwrap();
    wait_refused_user(&minted, deleted, "deleted").await;
    // (Its Event is the second UserRevoked of this Component, after the user minted before the
    // Subscriptions were seen: the Event recorder counts it on the first one, note and all.)
    let said = operator()
        .logs()
        .lines()
        .any(|l| l.contains("revoked a NATS user") && l.contains(&minted.2));
    assert!(said, "{}", operator().log_tail());
    let _ = control_plane().kubectl(&["delete", "natsserverpolicy", &policy_name], None);
}
