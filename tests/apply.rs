//! `jetstream-kv-operator apply`, the binary as a self-hosted user runs it, on the same folder of
//! Component, Subscription and secret store files that Dapr's own sidecar (`daprd`, self-hosted
//! mode) reads, against a real nats-server: before `apply` daprd cannot use the state stores
//! (`bucket not found`) nor publish; after it, daprd saves and reads state and an app receives
//! what is published through a declarative Subscription file. Secrets from a local file store
//! and from the environment are used and never printed; a Component naming a store `apply`
//! cannot read gets its reason and nothing is created; `--dry-run` and a second `apply` send no
//! mutating JetStream request (nats-server's own API advisories say so, and saw the first
//! `apply`'s creates).

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::Value;

use support::daprd::Daprd;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `jetstream-kv-operator apply <args>` with `env` added to its environment.
fn apply(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_jetstream-kv-operator"))
        .arg("apply")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run jetstream-kv-operator apply");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.all()))
}

/// The Components of a JSON report: name → (state, reason).
fn states(report: &Value) -> Vec<(String, String, String)> {
    report["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["state"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The leak scan: none of `secrets` in what `apply` printed.
fn assert_never_printed(run: &Run, secrets: &[&str]) {
    let all = run.all();
    for secret in secrets {
        assert!(
            !all.contains(secret),
            "secret value {secret:?} printed:\n{all}"
        );
    }
}

/// nats-server's record of every JetStream API request: its API audit advisories, of the
/// requests that name a stream of one test (the server is shared by the module's tests, which
/// run in parallel), and the stream listings.
struct Advisories {
    _client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    /// What every stream name of the test holds.
    suffix: String,
}

impl Advisories {
    async fn watch(url: &str, suffix: &str) -> Self {
        let client = async_nats::connect(url).await.expect("connect the watcher");
        let subscriber = client
            .subscribe("$JS.EVENT.ADVISORY.API")
            .await
            .expect("subscribe to the API advisories");
        client.flush().await.expect("flush");
        Self {
            _client: client,
            subscriber,
            suffix: suffix.to_owned(),
        }
    }

    /// The subjects of the requests audited since the last call.
    async fn requests(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(500), self.subscriber.next()).await
        {
            let audit: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            let subject = audit["subject"].as_str().unwrap_or_default();
            if subject.contains(&self.suffix) || subject == "$JS.API.STREAM.LIST" {
                out.push(subject.to_owned());
            }
        }
        out
    }
}

/// The requests among `requests` that change a stream.
fn mutating(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|s| {
            ["CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE"]
                .iter()
                .any(|verb| s.starts_with(&format!("$JS.API.STREAM.{verb}.")))
        })
        .collect()
}

async fn stream_exists(url: &str, stream: &str) -> bool {
    support::jetstream(url)
        .await
        .get_stream(stream)
        .await
        .is_ok()
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write a resource file");
}

/// A state store whose natsURL is `url_item` and bucket `bucket_item` (YAML of the items).
fn state_store(name: &str, store: &str, url_item: &str, bucket_item: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: \
         state.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n{url_item}  - name: \
         bucket\n{bucket_item}auth:\n  secretStore: {store}\n"
    )
}

/// A folder with two state stores, one reading its natsURL (with a password) and bucket from a
/// local file store, the other from the environment; daprd reads the folder, then `apply`
/// provisions it, then daprd saves and reads state in both. Nothing of the secrets is printed,
/// and a second `apply` changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn daprd_uses_the_buckets_apply_made_from_secrets_it_never_prints() {
    let server = support::nats();
    let sfx = support::random_suffix();
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("components");
    std::fs::create_dir_all(&folder).unwrap();
    // The server has no auth: the user and password are ignored there, but are secrets here.
    let password = format!("Zq7pass{sfx}");
    let url = format!("nats://app{sfx}:{password}@127.0.0.1:{}", server.port());
    let file_bucket = format!("Zq7file{sfx}");
    let env_bucket = format!("Zq7env{sfx}");
    let secrets_file = dir.path().join("secrets.json");
    std::fs::write(
        &secrets_file,
        serde_json::json!({"nats": {"url": url, "bucket": file_bucket}}).to_string(),
    )
    .unwrap();
    write(
        &folder,
        "files.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: files\nspec:\n  \
             type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    \
             value: {}\n",
            secrets_file.display()
        ),
    );
    write(
        &folder,
        "env.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: env\nspec:\n  type: \
         secretstores.local.env\n  version: v1\n  metadata:\n  - name: prefix\n    value: APP_\n",
    );
    write(
        &folder,
        "filestore.yaml",
        &state_store(
            "filestore",
            "files",
            "    secretKeyRef: {name: \"nats:url\"}\n",
            "    secretKeyRef: {name: \"nats:bucket\"}\n",
        ),
    );
    write(
        &folder,
        "envstore.yaml",
        &state_store(
            "envstore",
            "env",
            "    secretKeyRef: {name: NATS_URL}\n",
            "    secretKeyRef: {name: BUCKET, key: BUCKET}\n",
        ),
    );
    let env = [
        ("APP_NATS_URL", url.as_str()),
        ("APP_BUCKET", env_bucket.as_str()),
    ];
    let secrets = [
        password.as_str(),
        url.as_str(),
        file_bucket.as_str(),
        env_bucket.as_str(),
    ];
    let folder_arg = folder.to_str().unwrap();
    let app_id = format!("app{sfx}");

    // Before apply: daprd's fatal init error.
    let mut early = Daprd::start_in(&app_id, &folder, None, &env);
    let status = early
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("daprd kept running without its buckets:\n{}", early.log()));
    let log = early.log();
    assert!(!status.success(), "daprd exited successfully:\n{log}");
    assert!(
        log.contains("level=fatal") && log.contains("bucket not found"),
        "daprd did not fail with the missing bucket:\n{log}"
    );
    drop(early);

    let mut advisories = Advisories::watch(&server.url(), &sfx).await;
    let started = Instant::now();
    let first = apply(&[folder_arg], &env);
    eprintln!("apply took {:?}:\n{}", started.elapsed(), first.all());
    assert_eq!(first.code, Some(0), "{}", first.all());
    assert_never_printed(&first, &secrets);
    let lines: Vec<&str> = first.stdout.lines().collect();
    for name in ["filestore", "envstore"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("Component default/{name}: BucketManaged: "))),
            "{name} not ready:\n{}",
            first.stdout
        );
    }
    // The bucket names came from secrets: shown by where they came from.
    assert!(
        first.stdout.contains("created bucket <Secret nats:bucket"),
        "{}",
        first.stdout
    );
    assert_eq!(
        lines.last().copied(),
        Some("ok: 2 JetStream Components in 4 files: 2 ready, 0 not ready")
    );
    let requests = advisories.requests().await;
    let creates = mutating(&requests);
    // The instrument sees the first apply's creates (the positive control of the next step).
    assert!(
        creates
            .iter()
            .any(|s| s.ends_with(&format!("KV_{file_bucket}")))
            && creates
                .iter()
                .any(|s| s.ends_with(&format!("KV_{env_bucket}"))),
        "the first apply's creates were not audited: {requests:?}"
    );

    // A second apply: the same answer (JSON for scripts), nothing mutating sent.
    let second = apply(&[folder_arg, "-o", "json"], &env);
    assert_eq!(second.code, Some(0), "{}", second.all());
    assert_never_printed(&second, &secrets);
    let report = json(&second);
    assert_eq!(report["ok"], true);
    assert_eq!(
        states(&report),
        [
            (
                "envstore".to_owned(),
                "ready".to_owned(),
                "BucketManaged".to_owned()
            ),
            (
                "filestore".to_owned(),
                "ready".to_owned(),
                "BucketManaged".to_owned()
            ),
        ]
    );
    let requests = advisories.requests().await;
    assert!(!requests.is_empty(), "the second apply read nothing");
    assert!(
        mutating(&requests).is_empty(),
        "the second apply changed something: {requests:?}"
    );

    // daprd on the same folder, with the same environment: saves and reads state in both.
    let mut daprd = Daprd::start_in(&app_id, &folder, None, &env);
    daprd.wait_healthy();
    for store in ["filestore", "envstore"] {
        let saved = daprd.http(
            "POST",
            &format!("/v1.0/state/{store}"),
            Some(r#"[{"key":"order-1","value":{"item":"coffee"}}]"#),
        );
        assert_eq!(
            saved.map(|r| r.0),
            Some(204),
            "save in {store}:\n{}",
            daprd.log()
        );
        let read = daprd
            .http("GET", &format!("/v1.0/state/{store}/order-1"), None)
            .unwrap_or_else(|| panic!("read {store}: no answer:\n{}", daprd.log()));
        assert_eq!(read.0, 200, "read {store}: {read:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&read.1).unwrap(),
            serde_json::json!({"item": "coffee"})
        );
    }
}

/// A Component whose secret store `apply` cannot read (a Vault store, a store that is not in
/// the files) gets its reason and nothing is created for it; the good Component beside it is
/// created (seen by the same advisories). Then `--dry-run` on a new bucket prints the plan and
/// sends nothing mutating, and `apply` after it creates the bucket (seen by the same subscriber).
#[tokio::test(flavor = "multi_thread")]
async fn unreadable_stores_and_dry_runs_create_nothing() {
    let server = support::nats();
    let sfx = support::random_suffix();
    let dir = tempfile::tempdir().expect("temp dir");
    let url_item = format!("    value: {}\n", server.url());
    let vault_bucket = format!("vault{sfx}");
    let missing_bucket = format!("nostore{sfx}");
    let good_bucket = format!("good{sfx}");
    write(
        dir.path(),
        "vault.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: vault\nspec:\n  type: \
         secretstores.hashicorp.vault\n  version: v1\n  metadata: []\n",
    );
    write(
        dir.path(),
        "a.yaml",
        &format!(
            "{}---\n{}---\n{}",
            state_store(
                "fromvault",
                "vault",
                &url_item,
                &format!(
                    "    value: {vault_bucket}\n  - name: jwt\n    secretKeyRef: {{name: j}}\n"
                )
            ),
            state_store(
                "nostore",
                "elsewhere",
                &url_item,
                &format!(
                    "    value: {missing_bucket}\n  - name: jwt\n    secretKeyRef: {{name: j}}\n"
                )
            ),
            state_store(
                "good",
                "none",
                &url_item,
                &format!("    value: {good_bucket}\n")
            ),
        ),
    );
    let path = dir.path().to_str().unwrap();
    let mut advisories = Advisories::watch(&server.url(), &sfx).await;
    let run = apply(&[path, "-o", "json"], &[]);
    assert_eq!(run.code, Some(1), "{}", run.all());
    let requests = advisories.requests().await;
    let creates = mutating(&requests);
    assert!(
        creates
            .iter()
            .any(|s| s.ends_with(&format!("KV_{good_bucket}"))),
        "the good Component's create was not audited: {requests:?}"
    );
    assert!(
        !creates
            .iter()
            .any(|s| s.contains(&vault_bucket) || s.contains(&missing_bucket)),
        "something was created for a Component whose store cannot be read: {requests:?}"
    );
    let report = json(&run);
    assert_eq!(
        states(&report),
        [
            (
                "fromvault".to_owned(),
                "notReady".to_owned(),
                "SecretStoreUnsupported".to_owned()
            ),
            (
                "nostore".to_owned(),
                "notReady".to_owned(),
                "SecretStoreUnsupported".to_owned()
            ),
            (
                "good".to_owned(),
                "ready".to_owned(),
                "BucketManaged".to_owned()
            ),
        ],
        "{}",
        run.all()
    );
    let message = |i: usize| {
        report["components"][i]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        message(0).contains("is of type secretstores.hashicorp.vault"),
        "{}",
        message(0)
    );
    assert!(
        message(1).contains("is not among the Components given"),
        "{}",
        message(1)
    );
    assert!(
        run.stderr
            .contains("error: not ok: 3 JetStream Components in 2 files: 1 ready, 2 not ready"),
        "{}",
        run.stderr
    );
    for bucket in [&vault_bucket, &missing_bucket] {
        assert!(!stream_exists(&server.url(), &format!("KV_{bucket}")).await);
    }

    // --dry-run on a new bucket: the plan, nothing mutating.
    let planned_bucket = format!("planned{sfx}");
    let dry = tempfile::tempdir().expect("temp dir");
    write(
        dry.path(),
        "s.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: planned\n  \
             annotations:\n    jetstreamkv.io/history: \"5\"\nspec:\n  type: state.jetstream\n  \
             version: v1\n  metadata:\n  - name: natsURL\n{url_item}  - name: bucket\n    value: \
             {planned_bucket}\n"
        ),
    );
    let dry_path = dry.path().to_str().unwrap();
    let run = apply(&[dry_path, "--dry-run"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let requests = advisories.requests().await;
    assert!(!requests.is_empty(), "the dry run read nothing");
    assert!(
        mutating(&requests).is_empty(),
        "the dry run changed something: {requests:?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "Component default/planned: planned: AuditMode: would create KV_{planned_bucket} \
             (the bucket does not exist: create stream KV_{planned_bucket})"
        )),
        "{}",
        run.stdout
    );
    assert!(!stream_exists(&server.url(), &format!("KV_{planned_bucket}")).await);
    // The same subscriber sees apply's create.
    let run = apply(&[dry_path], &[]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    let requests = advisories.requests().await;
    assert!(
        mutating(&requests)
            .iter()
            .any(|s| *s == &format!("$JS.API.STREAM.CREATE.KV_{planned_bucket}")),
        "apply after the dry run: {requests:?}"
    );
}

/// A pub/sub Component and a declarative Subscription file: before `apply` daprd cannot
/// publish; after it an app receives through daprd what daprd publishes.
#[tokio::test(flavor = "multi_thread")]
async fn daprd_publishes_and_receives_through_the_stream_apply_made() {
    let server = support::nats();
    let sfx = support::random_suffix();
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path();
    write(
        folder,
        "pubsub.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: events\nspec:\n  \
             type: pubsub.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n    value: \
             {}\n  - name: deliverPolicy\n    value: all\n  - name: streamName\n    value: \
             events{sfx}\n",
            server.url()
        ),
    );
    write(
        folder,
        "subscription.yaml",
        &format!(
            "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata:\n  name: orders\nspec:\n  \
             pubsubname: events\n  topic: orders.{sfx}\n  routes:\n    default: /orders\n"
        ),
    );
    let app_id = format!("app{sfx}");
    let publish = |daprd: &Daprd| {
        daprd
            .http(
                "POST",
                &format!("/v1.0/publish/events/orders.{sfx}"),
                Some(r#"{"item":"coffee"}"#),
            )
            .unwrap_or_else(|| panic!("publish: no answer:\n{}", daprd.log()))
    };

    let (early_port, _early_rx) = crate::dapr_pubsub::start_app().await;
    let mut early = Daprd::start_in(&app_id, folder, Some(early_port), &[]);
    early.wait_healthy();
    let refused = publish(&early);
    assert_eq!(refused.0, 500, "publish before apply: {refused:?}");
    drop(early);

    // A dry run: the plan, nothing mutating; then apply, seen by the same subscriber; then a
    // second apply, nothing mutating again.
    let path = folder.to_str().unwrap();
    let mut advisories = Advisories::watch(&server.url(), &sfx).await;
    let dry = apply(&[path, "--dry-run", "-o", "json"], &[]);
    assert_eq!(dry.code, Some(0), "{}", dry.all());
    let requests = advisories.requests().await;
    assert!(!requests.is_empty(), "the dry run read nothing");
    assert!(
        mutating(&requests).is_empty(),
        "the dry run changed something: {requests:?}"
    );
    let report = json(&dry);
    assert_eq!(
        states(&report),
        [(
            "events".to_owned(),
            "planned".to_owned(),
            "AuditMode".to_owned()
        )]
    );
    let planned = report["components"][0]["message"].as_str().unwrap();
    assert!(
        planned.starts_with(&format!("would create events{sfx} (")),
        "{planned}"
    );
    let run = apply(&[path], &[]);
    assert_eq!(run.code, Some(0), "{}", run.all());
    assert!(
        run.stdout.contains(&format!(
            "Component default/events: StreamManaged: stream events{sfx} is ready"
        )) && run.stdout.contains(&format!(
            "created stream events{sfx} with subjects orders.{sfx}"
        )),
        "{}",
        run.stdout
    );
    let requests = advisories.requests().await;
    assert!(
        mutating(&requests).contains(&&format!("$JS.API.STREAM.CREATE.events{sfx}")),
        "apply's create was not audited: {requests:?}"
    );
    let again = apply(&[path], &[]);
    assert_eq!(again.code, Some(0), "{}", again.all());
    let requests = advisories.requests().await;
    assert!(!requests.is_empty(), "the second apply read nothing");
    assert!(
        mutating(&requests).is_empty(),
        "the second apply changed something: {requests:?}"
    );

    let (port, mut rx) = crate::dapr_pubsub::start_app().await;
    let mut daprd = Daprd::start_in(&app_id, folder, Some(port), &[]);
    daprd.wait_healthy();
    let sent = publish(&daprd);
    assert_eq!(
        sent.0,
        204,
        "publish after apply: {sent:?}\n{}",
        daprd.log()
    );
    let (route, event) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the app received nothing:\n{}", daprd.log()));
    assert_eq!(route, "/orders");
    assert_eq!(
        event["data"],
        serde_json::json!({"item": "coffee"}),
        "{event}"
    );
}
