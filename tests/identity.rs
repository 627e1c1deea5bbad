//! Identities (issue 27): the provisioning identity a NatsServerPolicy names. Against a real
//! nats-server in operator mode with a full (directory) resolver, every key minted here, and the
//! server's own JetStream API audit advisories (`$JS.EVENT.ADVISORY.API`) as the witness of who
//! made each create, update and delete.

use crate::support;

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
    /// Holds the resolver's directory.
    _resolver: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let mint = |r: Result<String, jwt::JwtError>| r.expect("minting");
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
            app_jwt = mint(jwt::account_jwt(&operator, &account.public_key(), "APP", true)),
            dir = resolver.path(),
        );
        World {
            server: NatsServer::start_with_config(&config),
            account,
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
    let provisioning = secret
        .map(|s| format!("  provisioningCredentials:\n    secretName: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: jetstreamkv.io/v1alpha1\nkind: NatsServerPolicy\nmetadata:\n  name: {name}\nspec:\n  conditions:\n  - namespaces: [{namespace}]\n  servers: [{{host: \"127.0.0.1\"}}]\n{provisioning}"
    )
}

fn apply_json(object: &Value) {
    control_plane().apply(&serde_json::to_string(object).expect("JSON"));
}

/// A state store Component with its user's JWT and seed from the Secret `app`.
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
    let pub_rights = vec!["$JS.API.STREAM.NAMES".to_owned(), topic.clone()];
    let publisher = user("events", Some((&pub_rights, &["_INBOX.>"])));
    apply_json(&fixtures::secret(
        &covered.name,
        "events",
        &[("jwt", &publisher.0), ("seed", &publisher.1)],
    ));
    apply_json(
        &ComponentManifest::new(&covered.name, "events")
            .type_("pubsub.jetstream")
            .item("natsURL", &world().server.url())
            .item_from_secret("jwt", "events", Some("jwt"))
            .item_from_secret("seedKey", "events", Some("seed"))
            .annotation("jetstreamkv.io/subjects", &topic)
            .json(),
    );
    support::wait_jss(&covered.name, "events", "Ready=True", |s, _| s == "True").await;

    // Not covered: the same rights, its own credentials, the server's refusal; nothing made.
    let (refusal, message) = wait_refused(&client, &uncovered.name, "").await;
    eprintln!("without a provisioning identity: {refusal}: {message}");
    assert!(!stream_exists(&observer, &uncovered_bucket).await);
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
            "Components".to_owned(),
            get(&["get", "components", "-A", "-o", "yaml"]),
        ),
        ("/metrics".to_owned(), metrics),
    ];
    for ns in [&covered.name, &uncovered.name, &broken.name] {
        places.push((
            format!("the Secrets of {ns}"),
            secrets_text(&client, ns).await,
        ));
    }
    let leaks: Vec<String> = places
        .iter()
        .filter(|(_, text)| needles.iter().any(|n| holds_piece(text, n)))
        .map(|(place, _)| place.clone())
        .collect();
    assert!(leaks.is_empty(), "the admin's credentials in: {leaks:?}");
    // The scan finds them where they belong.
    assert!(holds_piece(
        &secrets_text(&client, operator_namespace()).await,
        &provisioner.1
    ));

    for name in &policies {
        let _ = cp.kubectl(&["delete", "natsserverpolicy", name], None);
    }
}

/// A JWT's signature: the part no other JWT shares.
fn signature_of(jwt: &str) -> String {
    jwt.rsplit('.').next().unwrap_or_default().to_owned()
}

/// Whether `text` holds any 16-character piece of `needle`.
fn holds_piece(text: &str, needle: &str) -> bool {
    let pieces: std::collections::HashSet<&[u8]> = needle.as_bytes().windows(16).collect();
    text.as_bytes().windows(16).any(|w| pieces.contains(w))
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
