//! `jetstream-kv-operator check`, the binary as CI runs it: on files, a directory and stdin, in
//! text and JSON, with its exit status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check")
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `check` from the fixtures directory (so file names in the output are short), with
/// `stdin` piped in when given.
fn check(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetstream-kv-operator"))
        .arg("check")
        .args(args)
        .current_dir(fixtures())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jetstream-kv-operator check");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for check");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout))
}

/// `(document, line, name, reason)` of each problem of a JSON report.
fn problems(report: &Value) -> Vec<(u64, u64, String, String)> {
    report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["document"].as_u64().expect("document"),
                p["line"].as_u64().expect("line"),
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_good_manifest_passes_with_a_one_line_summary_and_notes_on_secret_values() {
    let run = check(&["good.yaml"], None);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.last(),
        Some(&"ok: 2 JetStream Components in 6 documents (1 file), no problems")
    );
    // The Secret-backed values are not errors, but the user is told they were not checked.
    let notes: Vec<&&str> = lines.iter().filter(|l| l.contains(": note: ")).collect();
    assert_eq!(notes.len(), 4, "{}", run.stdout);
    assert!(
        notes[0].starts_with("good.yaml:37: document 4: Component shop/carts: note: metadata item \"natsURL\" comes from key \"url\" of Secret \"nats-creds\""),
        "{}",
        notes[0]
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn bad_components_get_the_operators_reasons_with_their_position() {
    let run = check(&["bad-components.yaml", "--output", "json"], None);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(report["ok"], false);
    let want = [
        (1, 3, "no-bucket", "MissingBucket"),
        (2, 14, "duplicate", "DuplicateMetadata"),
        (3, 29, "per-pod-bucket", "UnresolvableTemplate"),
        (4, 42, "typo", "UnknownAnnotation"),
        (5, 57, "two-problems", "InvalidAnnotation"),
        (5, 57, "two-problems", "InvalidNatsURL"),
        (6, 72, "vault", "SecretStoreUnsupported"),
        (7, 89, "from-env", "EnvRefUnsupported"),
        (8, 102, "jwt-only", "JwtWithoutSeed"),
        (9, 117, "old-version", "UnsupportedVersion"),
        (10, 130, "owner-mark", "ReservedMetadataKey"),
        (11, 145, "republish-loop", "InvalidAnnotation"),
        (
            12,
            160,
            "stream-annotation-on-store",
            "InapplicableAnnotation",
        ),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(d, l, n, r)| (*d, *l, n.to_string(), r.to_string()))
        .collect();
    assert_eq!(problems(&report), want);
    assert_eq!(report["summary"]["components"], 12);
    assert_eq!(report["summary"]["problems"], 13);
    // Every problem says what to do, and names the file.
    for p in report["problems"].as_array().unwrap() {
        assert_eq!(p["file"], "bad-components.yaml");
        assert_eq!(p["kind"], "Component");
        assert!(p["message"].as_str().unwrap().len() > 40, "{p}");
    }
    let typo = &report["problems"][3]["message"];
    assert!(
        typo.as_str()
            .unwrap()
            .contains("did you mean jetstreamkv.io/history?"),
        "{typo}"
    );
    // Annotations of the other kind are named.
    let inapplicable = report["problems"][12]["message"].as_str().unwrap();
    assert!(
        inapplicable.contains("jetstreamkv.io/retention apply to pubsub.jetstream Components only"),
        "{inapplicable}"
    );
    assert!(
        run.stderr
            .contains("error: 13 problems: 12 JetStream Components in 12 documents (1 file)"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_example_of_daprs_documentation_is_reported_with_its_placeholders() {
    let run = check(&["dapr-docs-jetstream.yaml"], None);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with(
            "dapr-docs-jetstream.yaml:3: document 1: Component <NAME>: InvalidBucketName: bucket name \"<bucketName>\" is not valid"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("dapr-docs-jetstream.yaml:3: document 1: Component <NAME>: JwtMalformed: the user JWT (jwt) is malformed"),
        "{}",
        lines[1]
    );
    // The inline credentials of the example are never echoed.
    for secret in [
        "eyJhbGciOiJ",
        "6yJV_adQssw5c",
        "SUACS34K232O",
        "5Z3POU7BNIL4Y",
    ] {
        assert!(!run.stdout.contains(secret), "{secret} printed");
        assert!(!run.stderr.contains(secret), "{secret} printed");
    }
}

#[test]
fn a_broken_yaml_document_is_reported_at_its_line_and_the_next_ones_are_still_checked() {
    let run = check(&["broken-yaml.yaml"], None);
    assert_eq!(run.code, Some(1));
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines[0].starts_with("broken-yaml.yaml:15:1: document 2: InvalidYAML: not valid YAML: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("broken-yaml.yaml:16: document 3: Component after: InvalidBucketName"),
        "{}",
        lines[1]
    );
}

#[test]
fn stdin_in_json_like_kustomize_build_piped_in() {
    // Several files concatenated as `kustomize build` would print them.
    let good = std::fs::read_to_string(fixtures().join("good.yaml")).unwrap();
    let docs = std::fs::read_to_string(fixtures().join("dapr-docs-jetstream.yaml")).unwrap();
    let input = format!("{good}---\n{docs}");
    let run = check(&["-", "-o", "json"], Some(&input));
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(
        problems(&report),
        [
            (7, 96, "<NAME>".into(), "InvalidBucketName".into()),
            (7, 96, "<NAME>".into(), "JwtMalformed".into()),
        ]
    );
    assert_eq!(report["problems"][0]["file"], "<stdin>");
    assert!(report["problems"][0].get("namespace").is_none());
    assert_eq!(
        report["summary"],
        serde_json::json!({"files": 1, "documents": 7, "components": 3, "problems": 2, "notes": 4})
    );
    assert_eq!(report["notes"][0]["reason"], "SecretValueNotChecked");
    assert_eq!(report["notes"][0]["namespace"], "shop");
    assert_eq!(report["notes"][0]["name"], "carts");
}

#[test]
fn a_bucket_annotation_on_a_pubsub_is_refused_by_name() {
    let run = check(&["bad-pubsub.yaml", "--output", "json"], None);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(
        problems(&report),
        [(
            1,
            3,
            "bucket-annotations-on-pubsub".into(),
            "InapplicableAnnotation".into()
        )]
    );
    let message = report["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "jetstreamkv.io/history, jetstreamkv.io/on-existing apply to state.jetstream \
             Components only"
        ),
        "{message}"
    );
}

#[test]
fn a_directory_is_walked_for_yaml_files_only() {
    let run = check(&["tree", "-o", "json"], None);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let report = json(&run);
    // tree/a.yaml is fine, tree/nested/b.yml has no bucket; notes.txt and .hidden/ are skipped.
    assert_eq!(
        report["summary"],
        serde_json::json!({"files": 2, "documents": 2, "components": 2, "problems": 1, "notes": 0})
    );
    assert_eq!(report["problems"][0]["file"], "tree/nested/b.yml");
    assert_eq!(report["problems"][0]["namespace"], "tree");
    assert_eq!(report["problems"][0]["reason"], "MissingBucket");
}

#[test]
fn several_paths_and_a_missing_one() {
    let run = check(&["good.yaml", "tree/a.yaml", "missing.yaml"], None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .starts_with("missing.yaml: Unreadable: cannot read it: No such file or directory"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("3 JetStream Components in 7 documents (2 files)"),
        "{}",
        run.stderr
    );
    let usage = check(&[], None);
    assert_eq!(usage.code, Some(2), "a path is required: {}", usage.stderr);
}

#[test]
fn inline_credentials_and_passwords_are_checked_but_never_printed() {
    use jetstream_kv_operator::credentials::jwt;
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let expired = jwt::user_jwt(&account, &user.public_key(), "dapr", Some(1_000_000_000)).unwrap();
    let seed = user.seed().unwrap();
    let password = "s3cr3t-Passw0rd";
    let manifest = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: leaky\n  namespace: ci\nspec:\n  type: state.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n    value: \"nats://app:{password}@nats:4222,ftp://app:{password}@other\"\n  - name: bucket\n    value: orders\n  - name: jwt\n    value: {expired}\n  - name: seedKey\n    value: {seed}\n"
    );
    for format in ["text", "json"] {
        let run = check(&["-", "--output", format], Some(&manifest));
        assert_eq!(run.code, Some(1));
        let all = format!("{}{}", run.stdout, run.stderr);
        for reason in ["InvalidNatsURL", "JwtExpired"] {
            assert!(all.contains(reason), "{format}: {reason} missing:\n{all}");
        }
        assert!(
            all.contains("#2 (not shown: natsURL holds credentials)"),
            "the bad entry named by position only: {all}"
        );
        for secret in [password, expired.as_str(), seed.as_str()] {
            assert!(
                !all.contains(secret),
                "{format}: a secret was printed:\n{all}"
            );
        }
    }
}

#[test]
fn a_minted_user_needs_jwt_and_seed_key_from_one_secret() {
    let component = |items: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: store\n  \
             namespace: shop\n  annotations:\n    jetstreamkv.io/credentials: mint\nspec:\n  \
             type: state.jetstream\n  version: v1\n  metadata:\n  - name: natsURL\n    value: \
             nats://nats:4222\n  - name: bucket\n    value: orders\n{items}"
        )
    };
    let refs = "  - name: jwt\n    secretKeyRef: {name: store-nats, key: jwt}\n  - name: seedKey\n    \
                secretKeyRef: {name: store-nats, key: seed}\n";
    let good = check(&["-", "-o", "json"], Some(&component(refs)));
    assert_eq!(good.code, Some(0), "{}{}", good.stdout, good.stderr);
    let bad = check(&["-", "-o", "json"], Some(&component("")));
    assert_eq!(bad.code, Some(1), "{}{}", bad.stdout, bad.stderr);
    let report = json(&bad);
    assert_eq!(report["problems"][0]["reason"], "MintedSecretReference");
    let message = report["problems"][0]["message"].as_str().unwrap();
    assert!(message.contains("secretKeyRefs to one Secret"), "{message}");
}
