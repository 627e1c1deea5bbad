//! The operator's image as test-env/image.sh builds it here (with buildah, from scratch) agrees
//! with the Dockerfile users build with Docker: the final stage's labels, user, exposed port,
//! entrypoint and command, and its runtime contents (the binary, the libraries it links, CA
//! certificates, the nonroot user).
//!
//! Reads the OCI archive named by `JKO_OPERATOR_IMAGE_ARCHIVE` (`eval
//! "$(test-env/operator-image.sh)"`, or test-env/test.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The final stage of the Dockerfile: every instruction after its last FROM, continuation lines
/// joined, as (INSTRUCTION, arguments).
fn dockerfile_final_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("read the Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((op.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    let last_from = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    instructions.split_off(last_from)
}

/// `key="value" key2="value 2"` of a LABEL instruction.
fn labels(args: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("key=value");
        let after = after.strip_prefix('"').expect("quoted label values");
        let end = after.find('"').expect("closing quote");
        out.insert(key.trim().to_string(), after[..end].to_string());
        rest = after[end + 1..].trim();
    }
    out
}

struct Image {
    config: serde_json::Value,
    files: Vec<String>,
    dir: tempfile::TempDir,
    layers: Vec<PathBuf>,
}

fn load_image() -> Image {
    let archive = std::env::var("JKO_OPERATOR_IMAGE_ARCHIVE").unwrap_or_else(|_| {
        panic!(
            "JKO_OPERATOR_IMAGE_ARCHIVE is not set: eval \"$(test-env/operator-image.sh)\" first"
        )
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("tar")
        .args(["-xf", &archive, "-C"])
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "cannot unpack {archive}");
    let read_json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&path).expect("read a blob")).expect("JSON blob")
    };
    let blob = |digest: &serde_json::Value| {
        let digest = digest.as_str().expect("digest");
        dir.path()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
    };
    let index = read_json(dir.path().join("index.json"));
    let manifest = read_json(blob(&index["manifests"][0]["digest"]));
    let config = read_json(blob(&manifest["config"]["digest"]));
    let layers: Vec<PathBuf> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| blob(&l["digest"]))
        .collect();
    let mut files = Vec::new();
    for layer in &layers {
        let out = Command::new("tar")
            .arg("-tvf")
            .arg(layer)
            .output()
            .expect("list a layer");
        assert!(out.status.success(), "cannot list a layer");
        files.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    Image {
        config,
        files,
        dir,
        layers,
    }
}

impl Image {
    fn has(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        self.files
            .iter()
            .any(|l| l.ends_with(&format!(" {path}")) || l.ends_with(&format!(" ./{path}")))
    }

    fn read(&self, path: &str) -> String {
        let out_dir = self.dir.path().join("rootfs");
        std::fs::create_dir_all(&out_dir).expect("rootfs dir");
        for layer in &self.layers {
            let _ = Command::new("tar")
                .arg("-xf")
                .arg(layer)
                .arg("-C")
                .arg(&out_dir)
                .status();
        }
        std::fs::read_to_string(out_dir.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path} in the image: {e}"))
    }
}

#[test]
fn the_image_built_here_has_the_dockerfile_final_stage_metadata() {
    let stage = dockerfile_final_stage();
    let image = load_image();
    let config = &image.config["config"];
    let mut checked = Vec::new();
    for (op, args) in &stage {
        match op.as_str() {
            "FROM" => assert!(
                args.contains("distroless/cc"),
                "the final stage is no longer distroless/cc ({args}): update test-env/image.sh and this test"
            ),
            "LABEL" => {
                for (key, value) in labels(args) {
                    assert_eq!(
                        config["Labels"][&key].as_str(),
                        Some(value.as_str()),
                        "label {key}"
                    );
                }
            }
            "USER" => assert_eq!(config["User"].as_str(), Some(args.as_str()), "USER"),
            "EXPOSE" => {
                for port in args.split_whitespace() {
                    let key = if port.contains('/') {
                        port.to_string()
                    } else {
                        format!("{port}/tcp")
                    };
                    assert!(
                        config["ExposedPorts"].get(&key).is_some(),
                        "EXPOSE {port}: {config}"
                    );
                }
            }
            "ENTRYPOINT" | "CMD" => {
                let expected: serde_json::Value =
                    serde_json::from_str(args).expect("exec form (a JSON array)");
                let field = if op == "CMD" { "Cmd" } else { "Entrypoint" };
                assert_eq!(config[field], expected, "{op}");
            }
            "COPY" => {
                let target = args.split_whitespace().last().expect("a COPY target");
                assert!(image.has(target), "{target} is not in the image");
            }
            other => {
                panic!("the final stage has a {other} instruction that this test does not check")
            }
        }
        checked.push(op.clone());
    }
    for op in ["LABEL", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "COPY"] {
        assert!(
            checked.iter().any(|c| c == op),
            "no {op} in the final stage"
        );
    }
}

#[test]
fn the_image_holds_what_the_binary_needs_at_run_time() {
    let image = load_image();
    // What distroless/cc adds around the binary, that the operator uses: CA certificates for
    // tls:// NATS URLs, and the nonroot user the Dockerfile's USER names.
    assert!(image.has("/etc/ssl/certs/ca-certificates.crt"));
    let passwd = image.read("/etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "/etc/passwd:\n{passwd}"
    );
    // Every library the binary links, at the path the loader looks for it.
    let binary = image.dir.path().join("rootfs/jetstream-kv-operator");
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    let listed = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let libs: Vec<&str> = listed
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .collect();
    assert!(!libs.is_empty(), "ldd lists nothing: {listed}");
    for lib in libs {
        assert!(image.has(lib), "{lib} (ldd) is not in the image");
    }
    // And nothing that would make it more than distroless: no shell.
    assert!(!image.has("/bin/sh"));
}
