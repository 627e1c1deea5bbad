//! Every integration test, in one binary: each file of `tests/` is a module of it. One binary is
//! compiled and linked once (26 binaries each compiled `support` and linked the whole crate).
//!
//! Each module starts its own servers (control plane, nats-server, operator, node), and some stop
//! or restart them, so a process runs the tests of **one** module: `test-env/run-tests.py` runs
//! the modules in parallel processes, and by hand
//! `cargo test --test integration reconcile::` runs one module (`support` refuses to start servers
//! for a process asked to run several).

mod support;

mod alerts;
mod apply;
mod audit;
mod chart;
mod check;
mod cluster;
mod credentials;
mod dapr_pubsub;
mod dapr_sidecar;
mod environment;
mod faults;
mod generated;
mod gitops;
mod heal;
mod health_judges;
mod hostile_server;
mod identity;
mod image;
mod install;
mod lifecycle;
mod nats_env;
mod node;
mod outage;
mod properties;
mod pubsub;
mod quota;
mod reconcile;
mod schema;
mod settings;
mod shared_cluster;
mod steady_state;
mod stream_settings;
mod tenancy;
mod upgrade;
mod versions;
mod webhook;

/// The modules `main_rs` declares unconditionally: `mod x;` lines with no attribute (a
/// `#[cfg(...)]` above one compiles it out).
fn declared_modules(main_rs: &str) -> Vec<&str> {
    let mut declared = Vec::new();
    let mut attribute = false;
    for line in main_rs.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';'))
            && !attribute
        {
            declared.push(name);
        }
        if !line.is_empty() && !line.starts_with("//") {
            // An attribute on a line of its own applies to the next item.
            attribute = line.starts_with("#[") && line.ends_with(']');
        }
    }
    declared
}

/// A test file (`tests/x.rs` or `tests/x/mod.rs`) that is not a module above would silently
/// never run (`autotests = false`).
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    // The instrument sees a module compiled out, or declared on the attribute's line.
    assert_eq!(
        declared_modules("mod a;\n#[cfg(any())]\nmod b;\n#[cfg(test)] mod c;\n// x\nmod d;\n"),
        ["a", "d"]
    );
    let listed = declared_modules(include_str!("main.rs"));
    let dir = support::repo_root().join("tests");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/ is readable") {
        let path = entry.expect("tests/ is readable").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let file = path.extension().is_some_and(|e| e == "rs") && stem != "main";
        let folder = path.join("mod.rs").is_file();
        if (file || folder) && !listed.contains(&stem) {
            missing.push(if folder {
                format!("tests/{stem}/mod.rs")
            } else {
                format!("tests/{stem}.rs")
            });
        }
    }
    assert!(
        missing.is_empty(),
        "add `mod <name>;` (with no #[cfg]) to tests/main.rs for {missing:?}: otherwise their \
         tests never run"
    );
}
