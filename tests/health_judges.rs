//! Health as Argo CD, kstatus and Flux judge it, with their own code: the judges program
//! (test-env/judges, built from Go modules by test-env/setup.sh) runs Argo CD's settings code on
//! a stock argocd-cm with deploy/argocd/argocd-cm.yaml merged in, then gitops-engine's
//! `health.GetResourceHealth` with Argo CD's Lua VM; kstatus' `status.Compute`; and Flux's CEL
//! evaluator on the `healthCheckExprs` of the Kustomization in docs/gitops.md. The objects are
//! captured from the operator running against the real API server and nats-servers, for every
//! state of the table in docs/gitops.md, and each verdict must be the one the table shows.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde_json::{Value, json};
use support::nats::NatsServer;
use support::{TestNamespace, control_plane, nats, operator, wait_condition, wait_kvb};

const KVB_SCRIPT: &str = "deploy/argocd/health-keyvaluebucket.lua";
const COMPONENT_SCRIPT: &str = "deploy/argocd/health-component.lua";
const ARGOCD_CM_PATCH: &str = "deploy/argocd/argocd-cm.yaml";
const DOCS: &str = "docs/gitops.md";
const KVB_KEY: &str = "resource.customizations.health.jetstreamkv.io_KeyValueBucket";
const COMPONENT_KEY: &str = "resource.customizations.health.dapr.io_Component";
const JSS_KEY: &str = "resource.customizations.health.jetstreamkv.io_JetStreamStream";

fn repo_file(path: &str) -> PathBuf {
    support::repo_root().join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn env_path(var: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run the tests after eval \"$(test-env/setup.sh)\"")
    })
}

/// One tool's verdict on one object.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    status: String,
    message: String,
    error: Option<String>,
}

/// The three verdicts on one object.
#[derive(Debug, Clone)]
struct Verdicts {
    argocd: Verdict,
    kstatus: Verdict,
    flux_cel: Option<Verdict>,
}

fn verdict(v: &Value) -> Verdict {
    Verdict {
        status: v["status"].as_str().unwrap_or_default().to_string(),
        message: v["message"].as_str().unwrap_or_default().to_string(),
        error: v["error"].as_str().map(str::to_string),
    }
}

/// Runs the judges on `objects`, with `patch` as the argocd-cm patch and, when given, the
/// `healthCheckExprs` of the Kustomization in `kustomization`.
fn judge_with(patch: &Path, kustomization: Option<&Path>, objects: &[Value]) -> Vec<Verdicts> {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("objects.json");
    let text: Vec<String> = objects.iter().map(Value::to_string).collect();
    std::fs::write(&input, text.join("\n")).expect("write the objects");
    let mut cmd = Command::new(env_path("JKO_JUDGES_BIN"));
    cmd.arg("-argocd-cm")
        .arg(env_path("JKO_ARGOCD_CM"))
        .arg("-argocd-cm-patch")
        .arg(patch);
    if let Some(k) = kustomization {
        cmd.arg("-flux-kustomization").arg(k);
    }
    let out = cmd.arg(&input).output().expect("run the judges");
    assert!(
        out.status.success(),
        "judges failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("judges print JSON");
    assert_eq!(results.len(), objects.len(), "one verdict per object");
    results
        .iter()
        .map(|r| Verdicts {
            argocd: verdict(&r["argocd"]),
            kstatus: verdict(&r["kstatus"]),
            flux_cel: r.get("fluxCEL").map(verdict),
        })
        .collect()
}

/// The Flux Kustomization of docs/gitops.md that has `healthCheckExprs`, as a file.
fn docs_kustomization(dir: &Path) -> PathBuf {
    let doc = read(DOCS);
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("closed code block")])
        .find(|b| b.contains("healthCheckExprs:"))
        .expect("docs/gitops.md has a Kustomization with healthCheckExprs");
    let kustomization = block
        .split("\n---\n")
        .find(|d| d.contains("healthCheckExprs:"))
        .unwrap();
    let path = dir.join("kustomization.yaml");
    std::fs::write(&path, kustomization).expect("write the Kustomization");
    path
}

/// Runs the judges as documented: the argocd-cm patch of deploy/argocd and the Kustomization of
/// docs/gitops.md.
fn judge(objects: &[Value]) -> Vec<Verdicts> {
    let dir = tempfile::tempdir().expect("temp dir");
    let kustomization = docs_kustomization(dir.path());
    judge_with(&repo_file(ARGOCD_CM_PATCH), Some(&kustomization), objects)
}

/// The state table of docs/gitops.md: state -> [KVB Argo CD, KVB kstatus, Component Argo CD,
/// Component kstatus, Component Flux healthCheckExprs].
fn docs_state_table() -> BTreeMap<String, Vec<String>> {
    let doc = read(DOCS);
    let header = "| state | KeyValueBucket: Argo CD | KeyValueBucket: kstatus | Component: Argo CD | Component: kstatus | Component: Flux `healthCheckExprs` |";
    let start = doc
        .find(header)
        .expect("docs/gitops.md has the state table");
    doc[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<String> = row
                .split('|')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(cells.len(), 6, "{row}");
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

fn get_json(namespace: &str, kind: &str, name: &str) -> Value {
    let out = control_plane()
        .kubectl(&["-n", namespace, "get", kind, name, "-o", "json"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&out).expect("kubectl -o json")
}

/// Keeps a captured object next to the test's other output, for a look after a failure.
fn keep(name: &str, obj: &Value) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("health-captured");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(obj).unwrap_or_default(),
    );
}

// ---------------------------------------------------------------------------------------------
// The scripts as installed.

#[test]
fn the_argocd_cm_snippet_embeds_exactly_the_scripts_and_nothing_else() {
    let cm: Value = serde_yaml::from_str(&read(ARGOCD_CM_PATCH)).expect("argocd-cm.yaml is YAML");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().expect("data");
    // No useOpenLibs key: the scripts run with the libraries Argo CD loads by default.
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from([KVB_KEY, JSS_KEY, COMPONENT_KEY]));
    // A JetStreamStream carries the same conditions as a KeyValueBucket: the same script.
    for (key, script) in [
        (KVB_KEY, KVB_SCRIPT),
        (JSS_KEY, KVB_SCRIPT),
        (COMPONENT_KEY, COMPONENT_SCRIPT),
    ] {
        assert_eq!(
            data[key].as_str(),
            Some(read(script).as_str()),
            "{key} differs from {script}: copy the script into argocd-cm.yaml again"
        );
    }
}

/// Argo CD loads Lua's base and table libraries and a safe `os` for argocd-cm scripts, nothing
/// else (util/lua/lua.go); a call into any other library is an error, which Argo CD shows as
/// health Unknown. The branches test below runs every branch; this catches a library named in
/// code that no object reaches.
#[test]
fn the_scripts_name_no_library_argo_cd_does_not_load() {
    let forbidden = [
        "string.",
        "math.",
        "io.",
        "debug.",
        "coroutine.",
        "utf8.",
        "bit32.",
        "channel.",
        "require",
        "load(",
        "loadstring",
        "dofile",
        "loadfile",
        ":lower",
        ":upper",
        ":sub",
        ":find",
        ":match",
        ":gsub",
        ":gmatch",
        ":format",
        ":len",
        ":byte",
        ":rep",
    ];
    for script in [KVB_SCRIPT, COMPONENT_SCRIPT] {
        for (n, line) in read(script).lines().enumerate() {
            let code = line.split("--").next().unwrap_or_default();
            let code = code.split('"').step_by(2).collect::<String>(); // outside string literals
            for word in forbidden {
                assert!(
                    !code.contains(word),
                    "{script}:{}: `{word}`: Argo CD does not load that library for argocd-cm \
                     health scripts: {line}",
                    n + 1
                );
            }
        }
    }
}

#[test]
fn the_reason_lists_match_the_reason_table_in_the_docs() {
    // docs/gitops.md has one row per reason: | `Reason` | Ready | Stalled | Reconciling | ...
    let doc = read(DOCS);
    let mut stalled = BTreeSet::new();
    let mut reconciling = BTreeSet::new();
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let reasons = cells[1].split(',').map(|r| r.trim().trim_matches('`'));
        match (cells[3], cells[4]) {
            ("True", _) => stalled.extend(reasons.map(str::to_string)),
            (_, "True") => reconciling.extend(reasons.map(str::to_string)),
            _ => {}
        }
    }
    let lua_table = |script: &str, table: &str| -> BTreeSet<String> {
        let text = read(script);
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
    assert!(stalled.len() > 20 && reconciling.len() > 5, "docs table");
    assert_eq!(lua_table(KVB_SCRIPT, "needs_change"), stalled);
    assert_eq!(lua_table(COMPONENT_SCRIPT, "transient"), reconciling);
    // The Flux example's transient list: the quoted names in its `in [...]`.
    let dir = tempfile::tempdir().unwrap();
    let kustomization = std::fs::read_to_string(docs_kustomization(dir.path())).unwrap();
    let list = kustomization
        .split("in [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("the inProgress expression lists the transient reasons");
    let cel: BTreeSet<String> = list
        .split(',')
        .map(|r| r.trim().trim_matches('\'').to_string())
        .collect();
    assert_eq!(cel, reconciling);
}

// ---------------------------------------------------------------------------------------------
// Every branch of the scripts, and of the Flux expressions, on hand-made objects.

/// A KeyValueBucket; `Value::Null` leaves the status out.
fn kvb(generation: i64, status: Value) -> Value {
    let mut k = json!({"apiVersion": "jetstreamkv.io/v1beta1", "kind": "KeyValueBucket",
           "metadata": {"name": "s", "namespace": "n", "generation": generation}});
    if !status.is_null() {
        k["status"] = status;
    }
    k
}

fn cond(t: &str, s: &str, reason: &str) -> Value {
    json!({"type": t, "status": s, "reason": reason, "message": format!("{reason} message"),
           "observedGeneration": 1})
}

/// A Component; `Value::Null` leaves the type or the annotations out.
fn comp(type_: Value, generation: i64, annotations: Value) -> Value {
    let mut c = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
           "metadata": {"name": "s", "namespace": "n", "generation": generation,
                        "annotations": annotations},
           "spec": {"type": type_, "version": "v1", "metadata": []}});
    if c["spec"]["type"].is_null() {
        c["spec"].as_object_mut().unwrap().remove("type");
    }
    if c["metadata"]["annotations"].is_null() {
        c["metadata"].as_object_mut().unwrap().remove("annotations");
    }
    c
}

fn ours(ready: &str, reason: &str, observed: &str) -> Value {
    json!({"jetstreamkv.io/ready": ready, "jetstreamkv.io/reason": reason,
           "jetstreamkv.io/observed-generation": observed, "other": "x\"y\\z\n\u{e9}"})
}

#[test]
fn every_branch_of_the_scripts_runs_in_argo_cds_lua_vm() {
    let jss = |status: Value| {
        let mut o = kvb(1, status);
        o["kind"] = json!("JetStreamStream");
        o
    };
    let kvb_cases = [
        (kvb(1, Value::Null), "Progressing"),
        // A JetStreamStream: the same script, under its own key.
        (jss(Value::Null), "Progressing"),
        (
            jss(
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "True", "StreamManaged")]}),
            ),
            "Healthy",
        ),
        (
            jss(
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "SubjectOverlap")]}),
            ),
            "Degraded",
        ),
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
        (
            kvb(
                1,
                json!({"observedGeneration": 1, "conditions": [
                cond("Ready", "False", "InvalidBucketName"), cond("Stalled", "True", "InvalidBucketName")]}),
            ),
            "Degraded",
        ),
        (
            kvb(
                1,
                json!({"observedGeneration": 1, "conditions": [
                cond("Ready", "False", "NatsUnavailable"), cond("Reconciling", "True", "NatsUnavailable")]}),
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
        (
            kvb(
                1,
                json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}),
            ),
            "Healthy",
        ),
    ];
    // Types: the operator's match is ASCII case-insensitive; the version is not looked at.
    let type_cases = [
        (json!("state.jetstream"), true),
        (json!("State.JetStream"), true),
        (json!("STATE.JETSTREAM"), true),
        (json!("sTATE.jETSTREAm"), true),
        (json!("state.redis"), false),
        (json!("pubsub.jetstream"), true),
        (json!("PubSub.JetStream"), true),
        (json!("pubsub.jetstrea"), false),
        (json!("pubsub.redis"), false),
        (json!("state.jetstrea"), false),
        (json!("state.jetstreamx"), false),
        (json!("state.jetstrean"), false),
        (json!("state.jetstreal"), false),
        (json!("state jetstream"), false),
        (json!("state.jetstre@m"), false),
        (json!("state.jetstre\u{e4}m"), false),
        (json!("\u{17f}tate.jetstream"), false), // U+017F, which Unicode folds to 's'
        (json!(""), false),
        (json!(42), false),
        (Value::Null, false),
    ];
    // (Component, Argo CD, Flux healthCheckExprs). Flux: None for objects the API server would
    // refuse (Dapr's schema wants a string type and a spec); CEL cannot read those.
    let mut comp_cases: Vec<(Value, &str, Option<&str>)> = type_cases
        .iter()
        .map(|(t, is_ours)| {
            let (argo, flux) = if *is_ours {
                ("Degraded", "Failed")
            } else {
                ("Healthy", "Current")
            };
            let flux = t.is_string().then_some(flux);
            (
                comp(t.clone(), 1, ours("false", "MissingBucket", "1")),
                argo,
                flux,
            )
        })
        .collect();
    let jetstream = || json!("state.jetstream");
    let pubsub = || json!("pubsub.jetstream");
    comp_cases.extend([
        (comp(pubsub(), 1, ours("true", "StreamManaged", "1")), "Healthy", Some("Current")),
        (comp(pubsub(), 1, ours("false", "StreamMissing", "1")), "Progressing", Some("InProgress")),
        (comp(pubsub(), 1, ours("false", "WorkQueueRefused", "1")), "Degraded", Some("Failed")),
        (comp(jetstream(), 1, Value::Null), "Progressing", Some("InProgress")),
        (comp(jetstream(), 1, json!({"unrelated": "a"})), "Progressing", Some("InProgress")),
        (comp(jetstream(), 1, ours("true", "BucketManaged", "1")), "Healthy", Some("Current")),
        (comp(jetstream(), 2, ours("true", "BucketManaged", "1")), "Progressing", Some("InProgress")),
        (comp(jetstream(), 1, ours("false", "", "1")), "Degraded", Some("Failed")),
        (comp(jetstream(), 1, ours("false", "NatsTimeout", "1")), "Progressing", Some("InProgress")),
        (comp(jetstream(), 1, ours("unknown", "", "1")), "Progressing", Some("InProgress")),
        (
            json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "bare"}}),
            "Healthy",
            None,
        ),
    ]);
    let objects: Vec<Value> = kvb_cases
        .iter()
        .map(|(o, _)| o.clone())
        .chain(comp_cases.iter().map(|(o, _, _)| o.clone()))
        .collect();
    let verdicts = judge(&objects);
    let wants = kvb_cases
        .iter()
        .map(|(_, w)| (*w, None))
        .chain(comp_cases.iter().map(|(_, w, f)| (*w, *f)));
    for ((obj, (argo, flux)), v) in objects.iter().zip(wants).zip(&verdicts) {
        assert_eq!(
            v.argocd.error, None,
            "Argo CD failed to run the script on {obj:#}"
        );
        assert_eq!(v.argocd.status, argo, "Argo CD on {obj:#}: {:?}", v.argocd);
        if let Some(flux) = flux {
            let f = v
                .flux_cel
                .as_ref()
                .expect("a Flux verdict for every Component");
            assert_eq!(f.error, None, "Flux on {obj:#}");
            assert_eq!(f.status, flux, "Flux on {obj:#}");
        }
        // kstatus never reads a Component's annotations: without a status, Current.
        if obj["kind"] == "Component" {
            assert_eq!(v.kstatus.status, "Current", "kstatus on {obj:#}");
        }
    }
}

/// The judge itself: the Component script as it was before (string.lower, which Argo CD does
/// not load) is Unknown in Argo CD, for every Component: what the tests above would catch.
#[test]
fn a_script_calling_an_unloaded_library_is_unknown_in_argo_cd() {
    let mut patch: Value = serde_yaml::from_str(&read(ARGOCD_CM_PATCH)).unwrap();
    patch["data"][COMPONENT_KEY] = json!(
        "local hs = {status = \"Healthy\", message = \"\"}\n\
         if string.lower(obj.spec.type) == \"state.jetstream\" then hs.status = \"Progressing\" end\n\
         return hs\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("argocd-cm.yaml");
    std::fs::write(&path, serde_yaml::to_string(&patch).unwrap()).unwrap();
    let verdicts = judge_with(&path, None, &[comp(json!("state.redis"), 1, Value::Null)]);
    assert_eq!(verdicts[0].argocd.status, "Unknown", "{:?}", verdicts[0]);
    let error = verdicts[0].argocd.error.as_deref().unwrap_or_default();
    assert!(error.contains("lower"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Objects captured from the operator, for every state of the docs' table.

/// The columns of the docs' state table, by kind: KeyValueBucket (Argo CD, kstatus) and
/// Component (Argo CD, kstatus, Flux).
const KVB_COLUMNS: [usize; 2] = [0, 1];
const COMPONENT_COLUMNS: [usize; 3] = [2, 3, 4];

/// Objects captured in the states of the docs' table: (state, object).
#[derive(Default)]
struct Captures(Vec<(String, Value)>);

impl Captures {
    fn add(&mut self, state: &str, obj: Value) {
        let file = format!(
            "{}-{}",
            obj["kind"].as_str().unwrap_or("object").to_lowercase(),
            state.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        );
        keep(&file, &obj);
        self.0.push((state.to_string(), obj));
    }
}

fn kubectl_json(args: &[&str], stdin: Option<&str>) -> Value {
    let out = control_plane()
        .kubectl(args, stdin)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {out}"))
}

/// Waits until the JetStreamStream's Ready condition has `status` and `reason`; returns it.
async fn wait_jss(namespace: &str, name: &str, status: &str, reason: &str) -> Value {
    let what = format!("Ready={status} {reason}");
    support::wait_jss(namespace, name, &what, |s, r| s == status && r == reason).await
}

/// Waits until the operator's annotations on the Component report `reason` for its current
/// generation; returns the Component.
async fn wait_annotations(namespace: &str, name: &str, reason: &str) -> Value {
    support::eventually(
        Duration::from_secs(60),
        &format!("the annotations of component/{name} to say {reason}"),
        || async {
            let c = get_json(namespace, "component", name);
            let a = &c["metadata"]["annotations"];
            let generation = c["metadata"]["generation"].to_string();
            (a["jetstreamkv.io/reason"] == reason
                && a["jetstreamkv.io/observed-generation"].as_str() == Some(generation.as_str()))
            .then_some(c)
        },
        async || support::describe(namespace, "component", name),
    )
    .await
}

/// Waits until the KeyValueBucket is Stalled, whatever the reason; returns it and the reason.
async fn wait_stalled(namespace: &str, name: &str) -> (Value, String) {
    support::eventually(
        Duration::from_secs(60),
        &format!("kvb/{name} to be Stalled"),
        || async {
            let kvb = control_plane()
                .kubectl(&["-n", namespace, "get", "kvb", name, "-o", "json"], None)
                .ok()?;
            let kvb: Value = serde_json::from_str(&kvb).ok()?;
            let stalled = kvb["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Stalled" && c["status"] == "True")?
                .clone();
            Some((kvb, stalled["reason"].as_str()?.to_string()))
        },
        async || {
            format!(
                "{}\n--- operator log:\n{}",
                support::describe(namespace, "kvb", name),
                operator().log_tail()
            )
        },
    )
    .await
}

/// A `state.jetstream` Component with the given metadata items (YAML flow maps).
fn component_with(ns: &str, name: &str, items: &[String]) -> String {
    let items: String = items.iter().map(|i| format!("  - {i}\n")).collect();
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  type: state.jetstream\n  version: v1\n  metadata:\n{items}"
    )
}

#[tokio::test]
async fn verdicts_on_objects_captured_from_the_operator_are_the_ones_the_docs_promise() {
    operator();
    let client = support::client().await;
    let ns = TestNamespace::new(&client, "judges").await;
    let n = ns.name.as_str();
    let url = nats().url();
    let mut captures = Captures::default();

    // Just applied: the Component as the pipeline applied it, before the operator acted on it
    // (the response of the apply); a KeyValueBucket as created, before its first status (made
    // here the way the operator makes it: create, then write the status).
    let applied = kubectl_json(
        &["apply", "-f", "-", "-o", "json"],
        Some(&support::component_yaml(
            n,
            "ready",
            &url,
            &support::unique_bucket("judges"),
            "",
        )),
    );
    captures.add("just applied, no status or annotations yet", applied);
    let created = kubectl_json(
        &["create", "-f", "-", "-o", "json"],
        Some(&format!(
            "apiVersion: jetstreamkv.io/v1beta1\nkind: KeyValueBucket\nmetadata:\n  \
             name: no-status\n  namespace: {n}\nspec:\n  component: no-status\n"
        )),
    );
    assert!(created.get("status").is_none(), "{created:#}");
    captures.add("just applied, no status or annotations yet", created);

    // Ready.
    wait_kvb(n, "ready", "Ready", Duration::from_secs(60));
    captures.add("Ready", get_json(n, "kvb", "ready"));
    captures.add("Ready", wait_annotations(n, "ready", "BucketManaged").await);

    // JetStreamStreams of pub/sub Components, judged by the same checks as a KeyValueBucket:
    // Ready, and Reconciling on a closed port.
    let pubsub = |name: &str, url: &str| {
        support::ComponentManifest::new(n, name)
            .type_("pubsub.jetstream")
            .item("natsURL", url)
            .annotation("jetstreamkv.io/subjects", &support::unique_bucket(name))
            .yaml()
    };
    control_plane().apply(&pubsub("events", &url));
    captures.add(
        "Ready",
        wait_jss(n, "events", "True", "StreamManaged").await,
    );
    let closed = format!("nats://127.0.0.1:{}", support::process::free_port());
    control_plane().apply(&pubsub("events-down", &closed));
    captures.add(
        "Reconciling (`NatsUnavailable`)",
        wait_jss(n, "events-down", "False", "NatsUnavailable").await,
    );

    // Generation behind: a spec change the operator has not observed yet (the responses of the
    // patches are the objects right after the change).
    let patched = kubectl_json(
        &[
            "-n",
            n,
            "patch",
            "component",
            "ready",
            "--type=json",
            "-o",
            "json",
            "-p",
            r#"[{"op":"add","path":"/spec/ignoreErrors","value":true}]"#,
        ],
        None,
    );
    assert_eq!(patched["metadata"]["generation"], 2, "{patched:#}");
    captures.add(
        "generation behind (spec changed, not observed yet)",
        patched,
    );
    let patched = kubectl_json(
        &[
            "-n",
            n,
            "patch",
            "kvb",
            "ready",
            "--type=merge",
            "-o",
            "json",
            "-p",
            r#"{"spec":{"servers":["nats://127.0.0.1:1"]}}"#,
        ],
        None,
    );
    assert_ne!(
        patched["metadata"]["generation"], patched["status"]["observedGeneration"],
        "{patched:#}"
    );
    captures.add(
        "generation behind (spec changed, not observed yet)",
        patched,
    );

    // Stalled, one reason of each class of the docs' reason table.
    let js = support::jetstream(&url).await;
    let theirs = support::unique_bucket("theirs");
    js.create_key_value(kv::Config {
        bucket: theirs.clone(),
        history: 3,
        ..Default::default()
    })
    .await
    .expect("create a bucket outside the operator");
    let password = NatsServer::start_with_password("judge", "right-password");
    let wrong_password = format!("nats://judge:wrong-password@127.0.0.1:{}", password.port());
    let bucket = || support::unique_bucket("judges");
    let stalled = [
        (
            "Stalled, a manifest reason (`InvalidBucketName`)",
            "manifest",
            support::component_yaml(n, "manifest", &url, "has.dot", ""),
        ),
        (
            "Stalled, a Secret reason (`SecretNotFound`)",
            "secret",
            component_with(
                n,
                "secret",
                &[
                    "{name: natsURL, secretKeyRef: {name: no-such-secret, key: url}}".into(),
                    format!("{{name: bucket, value: {}}}", bucket()),
                ],
            ),
        ),
        (
            "Stalled, a credentials reason (`JwtMalformed`)",
            "credentials",
            component_with(
                n,
                "credentials",
                &[
                    format!("{{name: natsURL, value: '{url}'}}"),
                    format!("{{name: bucket, value: {}}}", bucket()),
                    "{name: jwt, value: not-a-jwt}".into(),
                    "{name: seedKey, value: SUAnotaseed}".into(),
                ],
            ),
        ),
        (
            "Stalled, an annotation reason (`InvalidAnnotation`)",
            "annotation",
            support::component_yaml(
                n,
                "annotation",
                &url,
                &bucket(),
                r#""jetstreamkv.io/storage": "ssd""#,
            ),
        ),
        (
            "Stalled, a bucket reason (`ConfigMismatch`)",
            "bucket",
            support::component_yaml(
                n,
                "bucket",
                &url,
                &theirs,
                r#""jetstreamkv.io/history": "7""#,
            ),
        ),
        (
            "Stalled, a NATS-side reason (`AuthorizationFailed`)",
            "nats-side",
            support::component_yaml(n, "nats-side", &wrong_password, &bucket(), ""),
        ),
    ];
    for (_, _, manifest) in &stalled {
        control_plane().apply(manifest);
    }
    for (state, name, _) in &stalled {
        let (kvb, reason) = wait_stalled(n, name).await;
        let want = state.split('`').nth(1).unwrap();
        assert_eq!(reason, want, "{name}: {kvb:#}");
        captures.add(state, kvb);
        captures.add(state, wait_annotations(n, name, &reason).await);
    }

    // Reconciling: NATS unreachable, retried.
    let mut down = NatsServer::start();
    let down_url = down.url();
    down.stop();
    control_plane().apply(&support::component_yaml(
        n,
        "outage",
        &down_url,
        &bucket(),
        "",
    ));
    wait_condition(
        &client,
        n,
        "outage",
        "Reconciling",
        "True",
        "NatsUnavailable",
    )
    .await;
    captures.add(
        "Reconciling (`NatsUnavailable`)",
        get_json(n, "kvb", "outage"),
    );
    captures.add(
        "Reconciling (`NatsUnavailable`)",
        wait_annotations(n, "outage", "NatsUnavailable").await,
    );

    // Terminating: a KeyValueBucket that another finalizer holds, deleted; a Component whose
    // bucket deletion waits for NATS (the operator's finalizer, DeletionPending).
    control_plane().apply(&support::component_yaml(n, "held", &url, &bucket(), ""));
    wait_kvb(n, "held", "Ready", Duration::from_secs(60));
    let hold = r#"{"metadata":{"finalizers":["example.com/hold"]}}"#;
    control_plane()
        .kubectl(
            &["-n", n, "patch", "kvb", "held", "--type=merge", "-p", hold],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    control_plane()
        .kubectl(&["-n", n, "delete", "kvb", "held", "--wait=false"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    let held = get_json(n, "kvb", "held");
    assert!(
        held["metadata"]["deletionTimestamp"].is_string(),
        "{held:#}"
    );
    captures.add("terminating, held by a finalizer", held);

    let mut doomed_server = NatsServer::start();
    control_plane().apply(&support::component_yaml(
        n,
        "doomed",
        &doomed_server.url(),
        &bucket(),
        r#""jetstreamkv.io/deletion-policy": "delete""#,
    ));
    wait_kvb(n, "doomed", "Ready", Duration::from_secs(60));
    wait_annotations(n, "doomed", "BucketManaged").await;
    support::eventually(
        Duration::from_secs(30),
        "the operator's finalizer on component/doomed",
        || async {
            let c = get_json(n, "component", "doomed");
            c["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
                .then_some(())
        },
        async || support::describe(n, "component", "doomed"),
    )
    .await;
    doomed_server.stop();
    control_plane()
        .kubectl(
            &["-n", n, "delete", "component", "doomed", "--wait=false"],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    wait_condition(&client, n, "doomed", "Ready", "False", "DeletionPending").await;
    let doomed = get_json(n, "component", "doomed");
    assert!(
        doomed["metadata"]["deletionTimestamp"].is_string(),
        "{doomed:#}"
    );
    captures.add("terminating, held by a finalizer", doomed);

    // Another Component type: the operator leaves it alone.
    let redis = kubectl_json(
        &["apply", "-f", "-", "-o", "json"],
        Some(&format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: cache\n  \
             namespace: {n}\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  \
             - name: redisHost\n    value: redis:6379\n"
        )),
    );
    captures.add("another Component type (`state.redis`)", redis);

    // The verdicts, against the docs' table.
    let table = docs_state_table();
    let objects: Vec<Value> = captures.0.iter().map(|(_, o)| o.clone()).collect();
    let verdicts = judge(&objects);
    let mut covered = BTreeSet::new();
    let mut report = String::from("\nstate | kind | Argo CD | kstatus | Flux CEL\n");
    for ((state, obj), v) in captures.0.iter().zip(&verdicts) {
        let row = table.get(state).unwrap_or_else(|| {
            panic!("{state:?} is not a row of the state table of docs/gitops.md")
        });
        let kind = obj["kind"].as_str().unwrap();
        let flux = v.flux_cel.as_ref().map(|f| f.status.as_str()).unwrap_or("");
        report.push_str(&format!(
            "{state} | {kind} | {} ({}) | {} | {flux}\n",
            v.argocd.status, v.argocd.message, v.kstatus.status
        ));
        assert_eq!(
            v.argocd.error, None,
            "Argo CD failed on {state} {kind}: {obj:#}"
        );
        let (got, columns): (Vec<&str>, &[usize]) = if kind != "Component" {
            (
                vec![v.argocd.status.as_str(), v.kstatus.status.as_str()],
                &KVB_COLUMNS[..],
            )
        } else {
            (
                vec![v.argocd.status.as_str(), v.kstatus.status.as_str(), flux],
                &COMPONENT_COLUMNS[..],
            )
        };
        let want: Vec<&str> = columns.iter().map(|&c| row[c].as_str()).collect();
        assert_eq!(
            got, want,
            "{state}, {kind}: Argo CD {:?}; object {obj:#}",
            v.argocd
        );
        covered.extend(columns.iter().map(|&c| (state.clone(), c)));
    }
    println!("{report}");
    // Every verdict the table promises was checked on a captured object.
    for (state, cells) in &table {
        for (c, cell) in cells.iter().enumerate() {
            assert!(
                cell == "–" || covered.contains(&(state.clone(), c)),
                "docs/gitops.md promises {cell} for {state:?} (column {c}): no captured object checks it"
            );
        }
    }

    // What an Argo CD user reads, besides the status.
    let message = |state: &str, kind: &str| {
        let i = captures
            .0
            .iter()
            .position(|(s, o)| s == state && o["kind"] == kind)
            .unwrap();
        verdicts[i].argocd.message.clone()
    };
    let m = message(
        "Stalled, a manifest reason (`InvalidBucketName`)",
        "Component",
    );
    assert_eq!(
        m,
        "Bucket not ready: InvalidBucketName; see kubectl describe keyvaluebucket manifest"
    );
    let m = message(
        "Stalled, a manifest reason (`InvalidBucketName`)",
        "KeyValueBucket",
    );
    assert!(
        m.starts_with("InvalidBucketName: bucket name \"has.dot\" is not valid"),
        "{m}"
    );
    let m = message("Reconciling (`NatsUnavailable`)", "Component");
    assert!(m.contains("retrying: NatsUnavailable"), "{m}");
    let m = message("terminating, held by a finalizer", "KeyValueBucket");
    assert_eq!(
        m,
        "Pending deletion; blocked by finalizers: example.com/hold"
    );
    let m = message(
        "generation behind (spec changed, not observed yet)",
        "Component",
    );
    assert!(m.contains("observe generation 2"), "{m}");

    // Let the held objects go.
    control_plane()
        .kubectl(
            &[
                "-n",
                n,
                "patch",
                "kvb",
                "held",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    doomed_server.start_again();
}
