//! Generated artefacts are committed; this fails when a committed copy differs from what the Rust
//! types generate, and says how to regenerate it.

use jetstream_kv_operator::schema::Crd;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn assert_committed(kind: &str, crd: CustomResourceDefinition, file: &str, arg: &str) {
    // As `crd` prints it: a document of its own (see the upgrade test).
    let generated = format!(
        "---\n{}",
        serde_yaml::to_string(&crd).expect("render the CRD")
    );
    for path in [
        format!("crds/{file}"),
        format!("charts/jetstream-kv-operator/crds/{file}"),
    ] {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&path);
        let committed = std::fs::read_to_string(&full).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} differs from the {kind} Rust types; regenerate it with\n  cargo run -q -- crd{arg} > {path}"
        );
    }
}

#[test]
fn committed_keyvaluebucket_crds_match_the_rust_types() {
    assert_committed(
        "KeyValueBucket",
        Crd::KeyValueBucket.needed(),
        "keyvaluebucket.yaml",
        "",
    );
}

#[test]
fn committed_jetstreamstream_crds_match_the_rust_types() {
    assert_committed(
        "JetStreamStream",
        Crd::JetStreamStream.needed(),
        "jetstreamstream.yaml",
        " jetstreamstream",
    );
}

#[test]
fn committed_natsserverpolicy_crds_match_the_rust_types() {
    assert_committed(
        "NatsServerPolicy",
        Crd::NatsServerPolicy.needed(),
        "natsserverpolicy.yaml",
        " natsserverpolicy",
    );
}
