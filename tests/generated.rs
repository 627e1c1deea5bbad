//! Generated artefacts are committed; this fails when a committed copy differs from what the Rust
//! types generate, and says how to regenerate it.

use jetstream_kv_operator::crd::KeyValueBucket;
use jetstream_kv_operator::policy::NatsServerPolicy;
use kube::CustomResourceExt;

#[test]
fn committed_keyvaluebucket_crds_match_the_rust_types() {
    let generated = serde_yaml::to_string(&KeyValueBucket::crd()).expect("render the CRD");
    for path in [
        "crds/keyvaluebucket.yaml",
        "charts/jetstream-kv-operator/crds/keyvaluebucket.yaml",
    ] {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let committed = std::fs::read_to_string(&full).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} differs from the KeyValueBucket Rust types; regenerate it with\n  cargo run -q -- crd > {path}"
        );
    }
}

#[test]
fn committed_natsserverpolicy_crds_match_the_rust_types() {
    let generated = serde_yaml::to_string(&NatsServerPolicy::crd()).expect("render the CRD");
    for path in [
        "crds/natsserverpolicy.yaml",
        "charts/jetstream-kv-operator/crds/natsserverpolicy.yaml",
    ] {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let committed = std::fs::read_to_string(&full).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} differs from the NatsServerPolicy Rust types; regenerate it with\n  cargo run -q -- crd --policy > {path}"
        );
    }
}
