//! The Argo CD health checks in deploy/argocd/, run by a real Lua 5.1 interpreter (Argo CD's
//! dialect, gopher-lua) the way Argo CD runs them: the object as the global `obj`, the script's
//! returned table `{status, message}` read back. The objects are captured from the operator
//! running against the real API server and nats-server, plus a few hand-made edge cases.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestNamespace, control_plane, nats, operator, wait_condition, wait_kvb};

const KVB_SCRIPT: &str = "deploy/argocd/health-keyvaluebucket.lua";
const COMPONENT_SCRIPT: &str = "deploy/argocd/health-component.lua";

fn repo_file(path: &str) -> PathBuf {
    support::repo_root().join(path)
}

fn lua_bin() -> String {
    std::env::var("JKO_LUA_BIN").unwrap_or_else(|_| "lua5.1".into())
}

/// A Lua table constructor (or scalar) for a JSON value, as Argo CD hands objects to Lua.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    let mut buf = [0u8; 4];
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Lua 5.1 has decimal escapes only; UTF-8 goes through as it is.
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03}", c as u32))
            }
            c => out.push_str(c.encode_utf8(&mut buf)),
        }
    }
    out.push('"');
    out
}

/// Runs a health script on an object: `(status, message)`.
fn health(script: &str, obj: &Value) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let harness = dir.path().join("harness.lua");
    let program = format!(
        "obj = {obj}\nlocal check = assert(loadfile({script}))\nlocal hs = check()\n\
         assert(type(hs) == \"table\", \"the script must return a table\")\n\
         assert(type(hs.status) == \"string\", \"status must be a string\")\n\
         io.write(hs.status, \"\\n\", tostring(hs.message or \"\"))\n",
        obj = lua_literal(obj),
        script = lua_string(support::path_str(&repo_file(script))),
    );
    std::fs::write(&harness, program).expect("write the harness");
    let out = Command::new(lua_bin())
        .arg(&harness)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {} (install Debian's lua5.1, or eval \"$(test-env/setup.sh)\"): {e}",
                lua_bin()
            )
        });
    assert!(
        out.status.success(),
        "{script} failed on {obj:#}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    assert!(
        [
            "Healthy",
            "Progressing",
            "Degraded",
            "Suspended",
            "Missing",
            "Unknown"
        ]
        .contains(&status),
        "{script}: {status:?} is not an Argo CD health status"
    );
    (status.to_string(), message.to_string())
}

fn get_json(namespace: &str, kind: &str, name: &str) -> Value {
    let out = control_plane()
        .kubectl(&["-n", namespace, "get", kind, name, "-o", "json"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).expect("kubectl -o json")
}

/// Keeps a captured object next to the test's other output, for a look after a failure.
fn keep(name: &str, obj: &Value) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("argocd-captured");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(obj).unwrap_or_default(),
    );
}

fn component(ns: &str, name: &str, url: &str, bucket: &str) -> String {
    support::ComponentManifest::store(ns, name, url, bucket).yaml()
}

#[test]
fn the_argocd_cm_snippet_embeds_exactly_the_scripts() {
    let text = std::fs::read_to_string(repo_file("deploy/argocd/argocd-cm.yaml")).unwrap();
    let cm: Value = serde_yaml::from_str(&text).expect("argocd-cm.yaml is YAML");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().expect("data");
    let want = [
        (
            "resource.customizations.health.jetstreamkv.io_KeyValueBucket",
            KVB_SCRIPT,
        ),
        (
            "resource.customizations.health.dapr.io_Component",
            COMPONENT_SCRIPT,
        ),
    ];
    assert_eq!(data.len(), want.len(), "{:?}", data.keys());
    for (key, script) in want {
        let source = std::fs::read_to_string(repo_file(script)).unwrap();
        assert_eq!(
            data[key].as_str(),
            Some(source.as_str()),
            "{key} differs from {script}: copy the script into argocd-cm.yaml again"
        );
    }
}

#[test]
fn the_lua_reason_lists_match_the_reason_table_in_the_docs() {
    // docs/gitops.md has one row per reason: | `Reason` | Ready | Stalled | Reconciling | ...
    let doc = std::fs::read_to_string(repo_file("docs/gitops.md")).unwrap();
    let mut stalled = BTreeSet::new();
    let mut reconciling = BTreeSet::new();
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let reasons: Vec<&str> = cells[1]
            .split(',')
            .map(|r| r.trim().trim_matches('`'))
            .collect();
        match (cells[3], cells[4]) {
            ("True", _) => stalled.extend(reasons),
            (_, "True") => reconciling.extend(reasons),
            _ => {}
        }
    }
    let listed = |script: &str, table: &str| -> BTreeSet<String> {
        let text = std::fs::read_to_string(repo_file(script)).unwrap();
        let start = text
            .find(&format!("local {table} = {{"))
            .expect("the table");
        let body = &text[start..start + text[start..].find('}').unwrap()];
        body.split(',')
            .filter_map(|item| item.split_once(" = true"))
            .map(|(k, _)| {
                k.trim()
                    .rsplit(['{', '\n', ' '])
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let own = |s: &BTreeSet<&str>| s.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>();
    assert!(stalled.len() > 20 && reconciling.len() > 5, "docs table");
    assert_eq!(listed(KVB_SCRIPT, "needs_change"), own(&stalled));
    assert_eq!(listed(COMPONENT_SCRIPT, "transient"), own(&reconciling));
}

#[test]
fn edge_cases_of_hand_made_objects() {
    let kvb = |generation: i64, status: Value| {
        json!({"apiVersion": "jetstreamkv.io/v1alpha1", "kind": "KeyValueBucket",
               "metadata": {"name": "s", "generation": generation}, "status": status})
    };
    let cond = |t: &str, s: &str, reason: &str| json!({"type": t, "status": s, "reason": reason, "message": format!("{reason} message"), "observedGeneration": 1});
    let cases = [
        (kvb(1, Value::Null), "Progressing"),
        (kvb(1, json!({})), "Progressing"),
        (
            kvb(1, json!({"observedGeneration": 1, "conditions": []})),
            "Progressing",
        ),
        (
            kvb(
                2,
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "True", "BucketManaged")]}),
            ),
            "Progressing",
        ),
        (
            kvb(
                1,
                json!({"conditions": [cond("Ready", "True", "BucketVerified")]}),
            ),
            "Healthy",
        ),
        (
            kvb(
                2,
                json!({"conditions": [cond("Ready", "True", "BucketVerified")]}),
            ),
            "Progressing",
        ),
        // Without Stalled (an older operator), a reason that needs a change is still Degraded.
        (
            kvb(
                1,
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "MissingBucket")]}),
            ),
            "Degraded",
        ),
        (
            kvb(
                1,
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "NatsUnavailable")]}),
            ),
            "Progressing",
        ),
        (
            kvb(
                1,
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "Unknown", "Checking")]}),
            ),
            "Progressing",
        ),
    ];
    for (obj, want) in &cases {
        assert_eq!(health(KVB_SCRIPT, obj).0, *want, "{obj:#}");
    }

    let comp = |type_: &str, generation: i64, annotations: Value| {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
               "metadata": {"name": "s", "generation": generation, "annotations": annotations},
               "spec": {"type": type_, "version": "v1", "metadata": []}})
    };
    let ours = |ready: &str, reason: &str, observed: &str| {
        json!({"jetstreamkv.io/ready": ready, "jetstreamkv.io/reason": reason,
               "jetstreamkv.io/observed-generation": observed, "other": "x\"y\\z\n\u{e9}"})
    };
    let cases = [
        (comp("state.redis", 1, Value::Null), "Healthy"),
        (
            comp("pubsub.jetstream", 1, ours("false", "MissingBucket", "1")),
            "Healthy",
        ),
        (comp("state.jetstream", 1, Value::Null), "Progressing"),
        (
            comp("state.jetstream", 1, json!({"unrelated": "a"})),
            "Progressing",
        ),
        (
            comp("State.JetStream", 1, ours("true", "BucketManaged", "1")),
            "Healthy",
        ),
        (
            comp("state.jetstream", 2, ours("true", "BucketManaged", "1")),
            "Progressing",
        ),
        (
            comp(
                "state.jetstream",
                1,
                ours("false", "InvalidBucketName", "1"),
            ),
            "Degraded",
        ),
        (
            comp("state.jetstream", 1, ours("false", "", "1")),
            "Degraded",
        ),
        (
            comp("state.jetstream", 1, ours("false", "NatsTimeout", "1")),
            "Progressing",
        ),
        (
            comp("state.jetstream", 1, ours("unknown", "", "1")),
            "Progressing",
        ),
    ];
    for (obj, want) in &cases {
        assert_eq!(health(COMPONENT_SCRIPT, obj).0, *want, "{obj:#}");
    }
    // A Component without spec or metadata does not break the script.
    assert_eq!(
        health(COMPONENT_SCRIPT, &json!({"kind": "Component"})).0,
        "Healthy"
    );
}

#[tokio::test]
async fn health_of_objects_captured_from_the_operator() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "argocd").await;
    let n = &ns.name;
    let url = nats().url();

    // Progressing: a Component as the pipeline applied it, before the operator acted on it.
    let bucket = format!("argo_{}", support::random_suffix());
    let applied = control_plane()
        .kubectl(
            &["apply", "-f", "-", "-o", "json"],
            Some(&component(n, "ready", &url, &bucket)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let applied: Value = serde_json::from_str(&applied).unwrap();
    keep("component-just-applied", &applied);
    assert_eq!(health(COMPONENT_SCRIPT, &applied).0, "Progressing");

    // Healthy: Ready.
    wait_kvb(n, "ready", "Ready", Duration::from_secs(60));
    let kvb = get_json(n, "kvb", "ready");
    let comp = support::eventually(
        Duration::from_secs(30),
        "the Component's ready annotation",
        || async {
            let c = get_json(n, "component", "ready");
            (c["metadata"]["annotations"]["jetstreamkv.io/ready"] == "true").then_some(c)
        },
        async || support::describe(n, "component", "ready"),
    )
    .await;
    keep("kvb-ready", &kvb);
    keep("component-ready", &comp);
    let (status, message) = health(KVB_SCRIPT, &kvb);
    assert_eq!(status, "Healthy", "{message}");
    assert!(message.starts_with("BucketManaged: bucket "), "{message}");
    let (status, message) = health(COMPONENT_SCRIPT, &comp);
    assert_eq!(status, "Healthy", "{message}");
    assert_eq!(message, "Bucket ready (BucketManaged)");

    // Progressing: the spec changed and the operator has not reported on it yet (the patch's
    // response is the object right after the change).
    let patched = control_plane()
        .kubectl(
            &[
                "-n",
                n,
                "patch",
                "component",
                "ready",
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/spec/ignoreErrors","value":true}]"#,
                "-o",
                "json",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let patched: Value = serde_json::from_str(&patched).unwrap();
    keep("component-stale-generation", &patched);
    assert_eq!(patched["metadata"]["generation"], 2);
    let (status, message) = health(COMPONENT_SCRIPT, &patched);
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.contains("observe generation 2"), "{message}");

    // Progressing: NATS unreachable, retried (Reconciling=True).
    let mut down = support::nats::NatsServer::start();
    let down_url = down.url();
    down.stop();
    control_plane().apply(&component(n, "outage", &down_url, "argo_outage"));
    wait_condition(
        &client,
        n,
        "outage",
        "Reconciling",
        "True",
        "NatsUnavailable",
    )
    .await;
    let kvb = get_json(n, "kvb", "outage");
    keep("kvb-nats-unavailable", &kvb);
    let (status, message) = health(KVB_SCRIPT, &kvb);
    assert_eq!(status, "Progressing", "{message}");
    assert!(
        message.starts_with("NatsUnavailable: cannot reach"),
        "{message}"
    );
    let comp = get_json(n, "component", "outage");
    keep("component-nats-unavailable", &comp);
    assert_eq!(
        comp["metadata"]["annotations"]["jetstreamkv.io/reason"],
        "NatsUnavailable"
    );
    let (status, message) = health(COMPONENT_SCRIPT, &comp);
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.contains("retrying: NatsUnavailable"), "{message}");

    // Degraded: a bad manifest (Stalled=True).
    control_plane().apply(&component(n, "bad", &url, "has.dot"));
    wait_condition(&client, n, "bad", "Stalled", "True", "InvalidBucketName").await;
    let kvb = get_json(n, "kvb", "bad");
    keep("kvb-stalled", &kvb);
    let (status, message) = health(KVB_SCRIPT, &kvb);
    assert_eq!(status, "Degraded", "{message}");
    assert!(
        message.starts_with("InvalidBucketName: bucket name \"has.dot\" is not valid"),
        "{message}"
    );
    let comp = support::eventually(
        Duration::from_secs(30),
        "the Component's reason annotation",
        || async {
            let c = get_json(n, "component", "bad");
            (c["metadata"]["annotations"]["jetstreamkv.io/reason"] == "InvalidBucketName")
                .then_some(c)
        },
        async || support::describe(n, "component", "bad"),
    )
    .await;
    keep("component-stalled", &comp);
    let (status, message) = health(COMPONENT_SCRIPT, &comp);
    assert_eq!(status, "Degraded", "{message}");
    assert_eq!(
        message,
        "Bucket not ready: InvalidBucketName; see kubectl describe keyvaluebucket bad"
    );
}
