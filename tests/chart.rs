//! The Helm chart, rendered by the real `helm` (no cluster needed): it lints, its values are
//! validated by its schema, the Deployment is hardened, and the operator's ServiceAccount gets
//! exactly the permissions it needs, in exactly the namespaces it watches.
//!
//! `helm` comes from `JKO_HELM_BIN`, else from `PATH`: run `eval "$(test-env/setup.sh)"` first.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

const RELEASE: &str = "kvo";
const RELEASE_NAMESPACE: &str = "jko-system";
/// `<release>-<chart>`: the name of every object of the release.
const FULLNAME: &str = "kvo-jetstream-kv-operator";
const NAMESPACED: &[&str] = &["--set", "watchNamespaces={team-a,team-b}"];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/jetstream-kv-operator")
}

fn helm_bin() -> PathBuf {
    let hint = r#"run `eval "$(test-env/setup.sh)"` to build helm and set JKO_HELM_BIN"#;
    if let Some(bin) = std::env::var_os("JKO_HELM_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "JKO_HELM_BIN={} does not exist: {hint}",
            bin.display()
        );
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("helm"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("helm is neither in JKO_HELM_BIN nor on PATH: {hint}"))
}

/// Runs helm; `Ok(stdout)` when it succeeds, `Err(stdout + stderr)` when it fails.
fn helm(args: &[&str]) -> Result<String, String> {
    let output = Command::new(helm_bin())
        .args(args)
        .output()
        .expect("helm runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

fn lint(extra: &[&str]) -> Result<String, String> {
    let chart = chart_dir();
    let mut args = vec!["lint", "--strict", chart.to_str().expect("UTF-8 path")];
    args.extend_from_slice(extra);
    helm(&args)
}

/// `helm template` with extra arguments (`--set ...`), as parsed objects.
fn try_render(extra: &[&str]) -> Result<Objects, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        RELEASE_NAMESPACE,
        "--kube-version",
        "1.33.0",
    ];
    args.extend_from_slice(extra);
    let manifest = helm(&args)?;
    let objects = serde_yaml::Deserializer::from_str(&manifest)
        .map(|document| Value::deserialize(document).expect("helm renders valid YAML"))
        .filter(|object| !object.is_null())
        .collect();
    Ok(Objects(objects))
}

fn render(extra: &[&str]) -> Objects {
    try_render(extra).unwrap_or_else(|error| panic!("helm template {extra:?} failed:\n{error}"))
}

/// The objects of a rendered release.
struct Objects(Vec<Value>);

impl Objects {
    /// Every object of `kind`, deserialized as the Kubernetes type a user's cluster would see.
    fn all<T: DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.0
            .iter()
            .filter(|object| object["kind"].as_str() == Some(kind))
            .map(|object| {
                serde_yaml::from_value(object.clone()).unwrap_or_else(|error| {
                    panic!("rendered {kind} is not a valid {kind}: {error}")
                })
            })
            .collect()
    }

    fn count(&self, kind: &str) -> usize {
        self.0
            .iter()
            .filter(|object| object["kind"].as_str() == Some(kind))
            .count()
    }

    fn deployment(&self) -> Deployment {
        let mut deployments = self.all::<Deployment>("Deployment");
        assert_eq!(deployments.len(), 1, "one Deployment");
        deployments.remove(0)
    }

    /// Every permission granted to the operator's ServiceAccount, through any binding.
    fn operator_grants(&self) -> BTreeSet<Grant> {
        let cluster_roles = self.all::<ClusterRole>("ClusterRole");
        let roles = self.all::<Role>("Role");
        let cluster_role = |name: &str| -> Vec<PolicyRule> {
            let role = cluster_roles
                .iter()
                .find(|role| role.metadata.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("binding refers to ClusterRole {name}, not rendered"));
            role.rules.clone().unwrap_or_default()
        };
        let mut grants = BTreeSet::new();
        for binding in self.all::<ClusterRoleBinding>("ClusterRoleBinding") {
            if binds_operator(binding.subjects.as_deref()) {
                assert_eq!(binding.role_ref.kind, "ClusterRole");
                add_grants(&mut grants, "*", &cluster_role(&binding.role_ref.name));
            }
        }
        for binding in self.all::<RoleBinding>("RoleBinding") {
            if !binds_operator(binding.subjects.as_deref()) {
                continue;
            }
            let namespace = binding
                .metadata
                .namespace
                .clone()
                .expect("namespaced binding");
            let rules = match binding.role_ref.kind.as_str() {
                "ClusterRole" => cluster_role(&binding.role_ref.name),
                "Role" => roles
                    .iter()
                    .find(|role| {
                        role.metadata.name.as_deref() == Some(binding.role_ref.name.as_str())
                            && role.metadata.namespace.as_deref() == Some(namespace.as_str())
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "RoleBinding {namespace}/{} has no Role",
                            binding.role_ref.name
                        )
                    })
                    .rules
                    .clone()
                    .unwrap_or_default(),
                other => panic!("unexpected roleRef kind {other}"),
            };
            add_grants(&mut grants, &namespace, &rules);
        }
        grants
    }
}

/// One permission: in a namespace (`*`: cluster-wide), on a resource (optionally one object).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    namespace: String,
    group: String,
    resource: String,
    verb: String,
    /// `*`: any object.
    object: String,
}

fn grant(namespace: &str, group: &str, resource: &str, verb: &str, object: &str) -> Grant {
    Grant {
        namespace: namespace.into(),
        group: group.into(),
        resource: resource.into(),
        verb: verb.into(),
        object: object.into(),
    }
}

fn add_grants(grants: &mut BTreeSet<Grant>, namespace: &str, rules: &[PolicyRule]) {
    for rule in rules {
        assert!(
            rule.non_resource_urls.is_none(),
            "no non-resource URLs: {rule:?}"
        );
        let objects = match rule.resource_names.as_deref() {
            None | Some([]) => vec!["*".to_owned()],
            Some(names) => names.to_vec(),
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for object in &objects {
                        grants.insert(grant(namespace, group, resource, verb, object));
                    }
                }
            }
        }
    }
}

fn binds_operator(subjects: Option<&[k8s_openapi::api::rbac::v1::Subject]>) -> bool {
    subjects.unwrap_or_default().iter().any(|subject| {
        subject.kind == "ServiceAccount"
            && subject.name == FULLNAME
            && subject.namespace.as_deref() == Some(RELEASE_NAMESPACE)
    })
}

/// What the operator needs in each namespace it watches (`*`: all of them).
fn watched_namespace_grants(namespace: &str) -> Vec<Grant> {
    let mut grants = Vec::new();
    let mut add = |group: &str, resource: &str, verbs: &[&str]| {
        for verb in verbs {
            grants.push(grant(namespace, group, resource, verb, "*"));
        }
    };
    add("dapr.io", "components", &["get", "list", "watch", "patch"]);
    add("dapr.io", "components/finalizers", &["update"]);
    add("", "secrets", &["get", "list", "watch"]);
    let kvb_verbs = [
        "get", "list", "watch", "create", "patch", "update", "delete",
    ];
    add("jetstreamkv.io", "keyvaluebuckets", &kvb_verbs);
    add(
        "jetstreamkv.io",
        "keyvaluebuckets/status",
        &["get", "patch", "update"],
    );
    // pubsub.jetstream: its JetStreamStreams, and Dapr's Subscriptions read only.
    add("jetstreamkv.io", "jetstreamstreams", &kvb_verbs);
    add(
        "jetstreamkv.io",
        "jetstreamstreams/status",
        &["get", "patch", "update"],
    );
    add("dapr.io", "subscriptions", &["get", "list", "watch"]);
    add("events.k8s.io", "events", &["create", "patch"]);
    add("", "events", &["create", "patch"]);
    grants
}

/// The leader-election Lease: in the release namespace, and only the release's own Lease beyond
/// `create` (which cannot name an object that does not exist yet).
fn lease_grants() -> Vec<Grant> {
    let mut grants = vec![grant(
        RELEASE_NAMESPACE,
        "coordination.k8s.io",
        "leases",
        "create",
        "*",
    )];
    for verb in ["get", "update", "patch"] {
        grants.push(grant(
            RELEASE_NAMESPACE,
            "coordination.k8s.io",
            "leases",
            verb,
            FULLNAME,
        ));
    }
    grants
}

/// Read-only, cluster-wide: the admin's NatsServerPolicies and namespace labels (in every mode).
fn policy_grants() -> Vec<Grant> {
    let mut grants = Vec::new();
    for verb in ["get", "list", "watch"] {
        grants.push(grant(
            "*",
            "jetstreamkv.io",
            "natsserverpolicies",
            verb,
            "*",
        ));
        grants.push(grant("*", "", "namespaces", verb, "*"));
    }
    // The operator's own CRDs, by name: their schema is checked against the binary's.
    for crd in [
        "keyvaluebuckets.jetstreamkv.io",
        "jetstreamstreams.jetstreamkv.io",
        "natsserverpolicies.jetstreamkv.io",
    ] {
        grants.push(grant(
            "*",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "get",
            crd,
        ));
    }
    grants
}

fn operator_container(deployment: &Deployment) -> Container {
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .expect("pod spec");
    assert_eq!(pod.containers.len(), 1, "one container");
    pod.containers[0].clone()
}

fn env<'a>(container: &'a Container, name: &str) -> &'a EnvVar {
    let vars = container.env.as_deref().unwrap_or_default();
    let matching: Vec<_> = vars.iter().filter(|var| var.name == name).collect();
    assert_eq!(matching.len(), 1, "exactly one {name} in {vars:?}");
    matching[0]
}

fn env_value(container: &Container, name: &str) -> String {
    env(container, name)
        .value
        .clone()
        .unwrap_or_else(|| panic!("{name} has a literal value"))
}

fn env_field_path(container: &Container, name: &str) -> String {
    env(container, name)
        .value_from
        .as_ref()
        .and_then(|source| source.field_ref.as_ref())
        .map(|field| field.field_path.clone())
        .unwrap_or_else(|| panic!("{name} comes from the downward API"))
}

fn assert_schema_rejects(set: &str, path: &str) {
    let error = match try_render(&["--set", set]) {
        Ok(_) => panic!("--set {set} was accepted"),
        Err(error) => error,
    };
    assert!(
        error.contains("don't meet the specifications of the schema") && error.contains(path),
        "--set {set} should fail schema validation at {path}, got:\n{error}"
    );
}

#[test]
fn lint_passes_with_default_values() {
    if let Err(error) = lint(&[]) {
        panic!("helm lint --strict failed:\n{error}");
    }
}

#[test]
fn lint_passes_when_watching_listed_namespaces() {
    if let Err(error) = lint(NAMESPACED) {
        panic!("helm lint --strict {NAMESPACED:?} failed:\n{error}");
    }
}

#[test]
fn lint_passes_with_every_optional_object_enabled() {
    let all = [
        "--set",
        "replicas=2,serviceMonitor.enabled=true,podDisruptionBudget.enabled=true,networkPolicy.enabled=true,\
         prometheusRule.enabled=true,grafanaDashboard.enabled=true",
    ];
    if let Err(error) = lint(&all) {
        panic!("helm lint --strict {all:?} failed:\n{error}");
    }
}

#[test]
fn by_default_the_operator_watches_all_namespaces_with_one_cluster_role() {
    let objects = render(&[]);

    let bound: Vec<String> = objects
        .all::<ClusterRoleBinding>("ClusterRoleBinding")
        .into_iter()
        .filter(|binding| binds_operator(binding.subjects.as_deref()))
        .map(|binding| binding.role_ref.name)
        .collect();
    let policy_role = format!("{FULLNAME}-server-policy");
    assert_eq!(
        bound,
        [FULLNAME, policy_role.as_str()],
        "one ClusterRole bound to the operator, and the read-only policy one"
    );

    let expected: BTreeSet<Grant> = watched_namespace_grants("*")
        .into_iter()
        .chain(lease_grants())
        .chain(policy_grants())
        .collect();
    assert_eq!(
        objects.operator_grants(),
        expected,
        "exactly these permissions"
    );

    let operator = operator_container(&objects.deployment());
    assert_eq!(env_value(&operator, "WATCH_NAMESPACES"), "");
}

#[test]
fn watching_listed_namespaces_grants_secrets_there_and_nowhere_else() {
    let objects = render(NAMESPACED);

    let expected: BTreeSet<Grant> = watched_namespace_grants("team-a")
        .into_iter()
        .chain(watched_namespace_grants("team-b"))
        .chain(lease_grants())
        .chain(policy_grants())
        .collect();
    assert_eq!(
        objects.operator_grants(),
        expected,
        "exactly these permissions"
    );

    for namespace in ["team-a", "team-b"] {
        let role = objects
            .all::<Role>("Role")
            .into_iter()
            .find(|role| role.metadata.namespace.as_deref() == Some(namespace))
            .unwrap_or_else(|| panic!("a Role in {namespace}"));
        let reads_secrets = role.rules.iter().flatten().any(|rule| {
            rule.resources
                .iter()
                .flatten()
                .any(|resource| resource == "secrets")
                && ["get", "list", "watch"]
                    .iter()
                    .all(|verb| rule.verbs.iter().any(|granted| granted == verb))
        });
        assert!(reads_secrets, "the Role in {namespace} reads Secrets");
    }

    for role in objects.all::<ClusterRole>("ClusterRole") {
        let touches_secrets = role.rules.iter().flatten().any(|rule| {
            rule.resources
                .iter()
                .flatten()
                .any(|resource| resource == "secrets" || resource == "*")
        });
        assert!(
            !touches_secrets,
            "ClusterRole {:?} grants Secrets",
            role.metadata.name
        );
    }
    assert_eq!(
        objects.count("ClusterRoleBinding"),
        1,
        "nothing bound cluster-wide but the read-only policy role"
    );

    let operator = operator_container(&objects.deployment());
    assert_eq!(env_value(&operator, "WATCH_NAMESPACES"), "team-a,team-b");
}

#[test]
fn secrets_get_only_mode_drops_list_and_watch_and_tells_the_operator() {
    let objects = render(&["--set", "rbac.secrets=get"]);
    let secrets: BTreeSet<String> = objects
        .operator_grants()
        .into_iter()
        .filter(|g| g.resource == "secrets")
        .map(|g| g.verb)
        .collect();
    assert_eq!(secrets, BTreeSet::from(["get".to_string()]));
    let operator = operator_container(&objects.deployment());
    assert_eq!(env_value(&operator, "WATCH_SECRETS"), "false");
    let default = operator_container(&render(&[]).deployment());
    assert_eq!(env_value(&default, "WATCH_SECRETS"), "true");
}

/// What heal adds in a watched namespace: read workloads and pods, patch workloads.
fn heal_grants(namespace: &str) -> Vec<Grant> {
    let mut grants = Vec::new();
    for resource in ["deployments", "statefulsets"] {
        for verb in ["get", "list", "patch"] {
            grants.push(grant(namespace, "apps", resource, verb, "*"));
        }
    }
    grants.push(grant(namespace, "", "pods", "list", "*"));
    grants
}

#[test]
fn heal_is_off_by_default_with_no_rbac_on_workloads_and_on_adds_exactly_its_own() {
    let touches_workloads =
        |g: &Grant| g.group == "apps" || g.resource == "pods" || g.resource == "*";
    for values in [&[][..], NAMESPACED] {
        let off = render(values);
        let found: Vec<Grant> = off
            .operator_grants()
            .into_iter()
            .filter(touches_workloads)
            .collect();
        assert!(found.is_empty(), "heal off grants {found:?}");
        let operator = operator_container(&off.deployment());
        assert!(
            !operator
                .env
                .iter()
                .flatten()
                .any(|e| e.name.starts_with("HEAL")),
            "heal off sets HEAL*: {:?}",
            operator.env
        );
    }

    let on = render(&[
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "heal.enabled=true",
        "--set",
        "heal.maxPerMinute=12",
        "--set",
        "heal.cooldown=90s",
    ]);
    let expected: BTreeSet<Grant> = watched_namespace_grants("team-a")
        .into_iter()
        .chain(watched_namespace_grants("team-b"))
        .chain(heal_grants("team-a"))
        .chain(heal_grants("team-b"))
        .chain(lease_grants())
        .chain(policy_grants())
        .collect();
    assert_eq!(on.operator_grants(), expected, "exactly these permissions");
    let operator = operator_container(&on.deployment());
    assert_eq!(env_value(&operator, "HEAL"), "true");
    assert_eq!(env_value(&operator, "HEAL_MAX_PER_MINUTE"), "12");
    assert_eq!(env_value(&operator, "HEAL_COOLDOWN"), "90s");
    let cluster_wide = render(&["--set", "heal.enabled=true"]);
    assert!(
        cluster_wide
            .operator_grants()
            .is_superset(&heal_grants("*").into_iter().collect()),
        "all namespaces: heal's grants cluster-wide"
    );
    assert!(lint(&["--set", "heal.enabled=true"]).is_ok());
    assert_schema_rejects("heal.cooldown=0s", "heal");
    assert_schema_rejects("heal.maxPerMinute=-1", "heal");
}

#[test]
fn the_operator_patches_its_crds_only_when_asked() {
    let crd_verbs = |objects: &Objects| -> BTreeSet<(String, String)> {
        objects
            .operator_grants()
            .into_iter()
            .filter(|g| g.resource == "customresourcedefinitions")
            .map(|g| (g.verb, g.object))
            .collect()
    };
    let names = [
        "keyvaluebuckets.jetstreamkv.io",
        "jetstreamstreams.jetstreamkv.io",
        "natsserverpolicies.jetstreamkv.io",
    ];
    let default = render(&[]);
    let get: BTreeSet<(String, String)> = names
        .iter()
        .map(|n| ("get".to_owned(), n.to_string()))
        .collect();
    assert_eq!(crd_verbs(&default), get);
    assert_eq!(
        env_value(&operator_container(&default.deployment()), "APPLY_CRDS"),
        "false"
    );
    let applying = render(&["--set", "crds.apply=true"]);
    let mut patch = get.clone();
    patch.extend(names.iter().map(|n| ("patch".to_owned(), n.to_string())));
    assert_eq!(crd_verbs(&applying), patch);
    assert_eq!(
        env_value(&operator_container(&applying.deployment()), "APPLY_CRDS"),
        "true"
    );
}

#[test]
fn the_mode_is_enforce_by_default_and_audit_is_one_value() {
    let default = operator_container(&render(&[]).deployment());
    assert_eq!(env_value(&default, "MODE"), "enforce");
    let audit = operator_container(&render(&["--set", "mode=audit"]).deployment());
    assert_eq!(env_value(&audit, "MODE"), "audit");
    assert_schema_rejects("mode=dry-run", "/mode");
}

#[test]
fn the_server_policy_is_enforced_by_default_and_one_line_allows_a_server() {
    let defaults = render(&[]);
    assert_eq!(
        env_value(&operator_container(&defaults.deployment()), "SERVER_POLICY"),
        "enforce"
    );
    assert_eq!(
        defaults.count("NatsServerPolicy"),
        0,
        "nothing allowed by default"
    );
    let one = render(&[
        "--set",
        "natsServerPolicy.servers={nats.nats.svc.cluster.local:4222,.nats.svc,10.0.0.0/8}",
    ]);
    let policies: Vec<Value> = one.all("NatsServerPolicy");
    assert_eq!(policies.len(), 1);
    let servers = serde_json::to_value(&policies[0]["spec"]["servers"]).unwrap();
    assert_eq!(
        servers,
        serde_json::json!([
            {"host": "nats.nats.svc.cluster.local", "ports": [4222]},
            {"hostSuffix": ".nats.svc"},
            {"cidr": "10.0.0.0/8"}
        ])
    );
    assert!(
        policies[0]["spec"]["conditions"].is_null(),
        "every namespace"
    );
}

#[test]
fn the_operator_can_never_write_secrets() {
    for values in [&[][..], NAMESPACED] {
        let writes: Vec<Grant> = render(values)
            .operator_grants()
            .into_iter()
            .filter(|grant| grant.resource == "secrets" || grant.resource == "*")
            .filter(|grant| !["get", "list", "watch"].contains(&grant.verb.as_str()))
            .collect();
        assert!(writes.is_empty(), "with {values:?}: {writes:?}");
    }
}

#[test]
fn the_lease_role_is_in_the_release_namespace_and_names_the_operators_lease() {
    let objects = render(&[]);
    let lease_roles: Vec<Role> = objects
        .all::<Role>("Role")
        .into_iter()
        .filter(|role| {
            role.rules
                .iter()
                .flatten()
                .any(|rule| rule.resources.iter().flatten().any(|r| r == "leases"))
        })
        .collect();
    assert_eq!(lease_roles.len(), 1, "one Role for the Lease");
    assert_eq!(
        lease_roles[0].metadata.namespace.as_deref(),
        Some(RELEASE_NAMESPACE)
    );

    let operator = operator_container(&objects.deployment());
    assert_eq!(env_value(&operator, "LEADER_ELECTION"), "true");
    // The Lease the Role names is the one the operator uses, in its own namespace.
    assert_eq!(env_value(&operator, "LEASE_NAME"), FULLNAME);
    assert_eq!(
        env_field_path(&operator, "LEASE_NAMESPACE"),
        "metadata.namespace"
    );
    assert_eq!(env_field_path(&operator, "POD_NAME"), "metadata.name");
}

#[test]
fn without_leader_election_there_is_no_lease_access_and_one_replica_only() {
    let objects = render(&["--set", "leaderElection.enabled=false"]);
    assert!(
        objects
            .operator_grants()
            .iter()
            .all(|grant| grant.resource != "leases"),
        "no Lease permission"
    );
    let operator = operator_container(&objects.deployment());
    assert_eq!(env_value(&operator, "LEADER_ELECTION"), "false");

    let error = try_render(&["--set", "leaderElection.enabled=false,replicas=2"])
        .err()
        .expect("two replicas without leader election are refused");
    assert!(error.contains("leaderElection.enabled"), "{error}");
}

#[test]
fn the_deployment_is_hardened() {
    let deployment = render(&[]).deployment();
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.clone())
        .expect("pod spec");
    let pod_security = pod.security_context.expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    assert_eq!(
        pod_security.seccomp_profile.map(|profile| profile.type_),
        Some("RuntimeDefault".to_owned())
    );

    let operator = operator_container(&deployment);
    let security = operator
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(65532));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert!(!security.privileged.unwrap_or(false), "not privileged");
    let capabilities = security.capabilities.expect("capabilities");
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(capabilities.add.unwrap_or_default(), Vec::<String>::new());
    assert_eq!(
        security.seccomp_profile.map(|profile| profile.type_),
        Some("RuntimeDefault".to_owned())
    );

    let resources = operator.resources.clone().expect("resources");
    assert!(resources.requests.is_some_and(|r| r.contains_key("memory")));
    assert!(resources.limits.is_some_and(|r| r.contains_key("memory")));

    let http_get = |probe: Option<&k8s_openapi::api::core::v1::Probe>| {
        probe
            .and_then(|probe| probe.http_get.as_ref())
            .map(|get| (get.path.clone().unwrap_or_default(), get.port.clone()))
    };
    let http_port =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into());
    assert_eq!(
        http_get(operator.liveness_probe.as_ref()),
        Some(("/healthz".to_owned(), http_port.clone()))
    );
    assert_eq!(
        http_get(operator.readiness_probe.as_ref()),
        Some(("/readyz".to_owned(), http_port))
    );
    let ports = operator.ports.clone().unwrap_or_default();
    assert!(
        ports
            .iter()
            .any(|port| port.name.as_deref() == Some("http") && port.container_port == 8080)
    );
    assert_eq!(env_value(&operator, "HTTP_ADDR"), "0.0.0.0:8080");
    assert_eq!(operator.args, Some(vec!["run".to_owned()]));
}

#[test]
fn the_image_tag_defaults_to_the_app_version() {
    let chart: Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml"),
    )
    .expect("Chart.yaml is YAML");
    let app_version = chart["appVersion"].as_str().expect("appVersion");
    // The image the chart runs by default is this crate's version: a release bumps both.
    assert_eq!(app_version, env!("CARGO_PKG_VERSION"), "appVersion");
    let image = operator_container(&render(&[]).deployment())
        .image
        .expect("image");
    assert!(image.ends_with(&format!(":{app_version}")), "{image}");

    let digest = format!("sha256:{}", "a".repeat(64));
    let pinned =
        operator_container(&render(&["--set", &format!("image.digest={digest}")]).deployment())
            .image
            .expect("image");
    assert!(pinned.ends_with(&format!("@{digest}")), "{pinned}");
}

#[test]
fn the_schema_rejects_bad_values() {
    assert_schema_rejects("replicas=-1", "/replicas");
    assert_schema_rejects("logFormat=xml", "/logFormat");
    assert_schema_rejects("resyncInterval=often", "/resyncInterval");
    // Zero panicked the sweeper; an overflowing one wrapped (issue 13).
    assert_schema_rejects("resyncInterval=0s", "/resyncInterval");
    assert_schema_rejects("resyncInterval=0h0m00s", "/resyncInterval");
    assert_schema_rejects("resyncInterval=99999999999999999999h", "/resyncInterval");
    assert_schema_rejects("watchNamespaces={Team_A}", "/watchNamespaces/0");
    assert_schema_rejects("image.pullPolicy=Sometimes", "/image/pullPolicy");
    // A misspelt value is an error, not silently ignored.
    assert_schema_rejects("replica=2", "replica");
}

#[test]
fn optional_objects_are_off_by_default_and_select_the_operator_pods_when_on() {
    let defaults = render(&[]);
    for kind in ["ServiceMonitor", "PodDisruptionBudget"] {
        assert_eq!(defaults.count(kind), 0, "no {kind} by default");
    }
    // Issue 26: the NetworkPolicy is on by default, and an empty metricsFrom lets no source in
    // (it used to mean any source).
    let policies: Vec<Value> = defaults.all("NetworkPolicy");
    assert_eq!(policies.len(), 1, "a NetworkPolicy by default");
    assert_eq!(
        policies[0]["spec"]["ingress"],
        Value::Sequence(vec![]),
        "no ingress rule without metricsFrom or the webhook"
    );
    let scrapers = render(&[
        "--set",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
    ]);
    let scraped: Vec<Value> = scrapers.all("NetworkPolicy");
    let ingress = &scraped[0]["spec"]["ingress"];
    let rules = ingress.as_sequence().expect("ingress rules");
    assert_eq!(rules.len(), 1, "{ingress:?}");
    assert!(
        rules[0]["from"].as_sequence().is_some_and(|f| f.len() == 1),
        "the metrics port only from the listed source: {ingress:?}"
    );
    assert_eq!(defaults.count("Service"), 1, "the metrics Service");

    let enabled = render(&[
        "--set",
        "replicas=2,serviceMonitor.enabled=true,podDisruptionBudget.enabled=true,networkPolicy.enabled=true",
    ]);
    let deployment = enabled.deployment();
    let pod_labels = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .and_then(|metadata| metadata.labels.clone())
        .expect("pod labels");
    for kind in [
        "ServiceMonitor",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Service",
    ] {
        let objects: Vec<Value> = enabled.all(kind);
        assert_eq!(objects.len(), 1, "one {kind}");
        let spec = &objects[0]["spec"];
        let selector = if kind == "Service" {
            &spec["selector"]
        } else if kind == "NetworkPolicy" {
            &spec["podSelector"]["matchLabels"]
        } else {
            &spec["selector"]["matchLabels"]
        };
        let selector = selector
            .as_mapping()
            .unwrap_or_else(|| panic!("{kind} has a selector"));
        assert!(!selector.is_empty(), "{kind} selects something");
        for (key, value) in selector {
            let (key, value) = (key.as_str().expect("key"), value.as_str().expect("value"));
            assert_eq!(
                pod_labels.get(key).map(String::as_str),
                Some(value),
                "{kind} selects the pods"
            );
        }
    }
}

const WEBHOOK_ON: &[&str] = &["--set", "webhook.enabled=true"];
const WEBHOOK_CERT_MANAGER: &[&str] = &[
    "--set",
    "webhook.enabled=true,webhook.certManager.enabled=true",
];
/// `<fullname>-webhook`: the webhook's Service (and cert-manager Certificate).
const WEBHOOK_SERVICE: &str = "kvo-jetstream-kv-operator-webhook";

fn webhook_configuration(
    objects: &Objects,
) -> k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration {
    let mut all = objects.all("ValidatingWebhookConfiguration");
    assert_eq!(all.len(), 1, "one ValidatingWebhookConfiguration");
    all.remove(0)
}

#[test]
fn the_webhook_is_off_by_default() {
    for values in [&[][..], NAMESPACED] {
        let objects = render(values);
        for kind in ["ValidatingWebhookConfiguration", "Certificate", "Issuer"] {
            assert_eq!(objects.count(kind), 0, "{kind} with {values:?}");
        }
        let services: Vec<String> = objects
            .all::<k8s_openapi::api::core::v1::Service>("Service")
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        assert!(
            !services.contains(&WEBHOOK_SERVICE.to_owned()),
            "{services:?}"
        );
        let operator = operator_container(&objects.deployment());
        assert!(
            operator
                .env
                .iter()
                .flatten()
                .all(|var| !var.name.starts_with("WEBHOOK_")),
            "no webhook settings: {:?}",
            operator.env
        );
        let grants = objects.operator_grants();
        assert!(
            grants
                .iter()
                .all(|g| g.group != "admissionregistration.k8s.io"),
            "{grants:?}"
        );
    }
}

#[test]
fn lint_passes_with_the_webhook_on() {
    for values in [WEBHOOK_ON, WEBHOOK_CERT_MANAGER] {
        if let Err(error) = lint(values) {
            panic!("helm lint --strict {values:?} failed:\n{error}");
        }
    }
    let everything = [
        "--set",
        "webhook.enabled=true,networkPolicy.enabled=true,replicas=2",
        "--set",
        "watchNamespaces={team-a,team-b}",
    ];
    if let Err(error) = lint(&everything) {
        panic!("helm lint --strict {everything:?} failed:\n{error}");
    }
}

#[test]
fn the_webhook_checks_components_on_create_and_update_and_never_blocks_when_down() {
    let objects = render(WEBHOOK_ON);
    let configuration = webhook_configuration(&objects);
    assert_eq!(configuration.metadata.name.as_deref(), Some(FULLNAME));
    let webhooks = configuration.webhooks.expect("webhooks");
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    assert_eq!(webhook.name, "components.jetstreamkv.io");
    assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(webhook.side_effects, "None");
    assert_eq!(webhook.admission_review_versions, ["v1"]);
    assert_eq!(webhook.timeout_seconds, Some(5));
    assert!(webhook.namespace_selector.is_none(), "all namespaces");
    let rules = webhook.rules.as_deref().expect("rules");
    assert_eq!(rules.len(), 1);
    let rule = &rules[0];
    assert_eq!(
        rule.api_groups.as_deref(),
        Some(&["dapr.io".to_owned()][..])
    );
    assert_eq!(
        rule.api_versions.as_deref(),
        Some(&["v1alpha1".to_owned()][..])
    );
    assert_eq!(
        rule.resources.as_deref(),
        Some(&["components".to_owned()][..])
    );
    assert_eq!(
        rule.operations.as_deref(),
        Some(&["CREATE".to_owned(), "UPDATE".to_owned()][..])
    );

    // The API server reaches the operator's pods through the webhook Service, on the port the
    // operator listens on.
    let service_ref = webhook.client_config.service.as_ref().expect("a Service");
    assert_eq!(
        (service_ref.name.as_str(), service_ref.namespace.as_str()),
        (WEBHOOK_SERVICE, RELEASE_NAMESPACE)
    );
    assert_eq!(service_ref.path.as_deref(), Some("/validate"));
    let ca_bundle = webhook
        .client_config
        .ca_bundle
        .as_ref()
        .expect("Helm writes the CA into the caBundle");
    let service = objects
        .all::<k8s_openapi::api::core::v1::Service>("Service")
        .into_iter()
        .find(|s| s.metadata.name.as_deref() == Some(WEBHOOK_SERVICE))
        .expect("the webhook Service");
    let spec = service.spec.expect("spec");
    let port = &spec.ports.as_deref().expect("ports")[0];
    assert_eq!(Some(port.port), service_ref.port);
    let deployment = objects.deployment();
    let pod_labels = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    for (key, value) in spec.selector.expect("selector") {
        assert_eq!(pod_labels.get(&key), Some(&value), "selector {key}");
    }
    let operator = operator_container(&deployment);
    let container_port = operator
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("webhook"))
        .expect("a webhook container port");
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("webhook".into()))
    );
    assert_eq!(
        env_value(&operator, "WEBHOOK_ADDR"),
        format!("0.0.0.0:{}", container_port.container_port)
    );

    // Without cert-manager (issue 26, M4): Helm makes the CA and the serving certificate for
    // the Service's names, mounts them, and writes the CA into the caBundle itself. The operator
    // holds no right on webhook configurations (with patch it could point the webhook at
    // Secrets and an outside URL).
    let secret = objects
        .0
        .iter()
        .find(|o| {
            o["kind"].as_str() == Some("Secret")
                && o["metadata"]["name"].as_str() == Some(&format!("{WEBHOOK_SERVICE}-tls"))
        })
        .expect("the webhook's certificate Secret");
    let field = |key: &str| -> Vec<u8> {
        let text = secret["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}"));
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
            .unwrap_or_else(|e| panic!("{key} is base64: {e}"))
    };
    assert_eq!(
        field("ca.crt"),
        ca_bundle.0,
        "the caBundle is the Secret's CA"
    );
    let serving = String::from_utf8(field("tls.crt")).expect("PEM");
    assert!(
        serving.starts_with("-----BEGIN CERTIFICATE-----"),
        "{serving}"
    );
    assert!(
        String::from_utf8(field("tls.key"))
            .expect("PEM")
            .contains("PRIVATE KEY")
    );
    let dir = env_value(&operator, "WEBHOOK_CERT_DIR");
    assert!(
        operator
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == dir),
        "the certificate is mounted at WEBHOOK_CERT_DIR"
    );
    for var in ["WEBHOOK_SELF_SIGNED", "WEBHOOK_CONFIG_NAME"] {
        assert!(
            operator.env.iter().flatten().all(|v| v.name != var),
            "no {var}: the operator makes no certificate and injects no CA"
        );
    }
    assert!(
        objects
            .operator_grants()
            .iter()
            .all(|g| g.group != "admissionregistration.k8s.io"),
        "the operator needs no access to the webhook configuration"
    );
    // Nothing else changes.
    let rest: BTreeSet<Grant> = objects
        .operator_grants()
        .into_iter()
        .filter(|g| g.group != "admissionregistration.k8s.io")
        .collect();
    assert_eq!(rest, render(&[]).operator_grants());
}

/// Issue 26, M4: the certificate Helm makes is one the operator loads (`--webhook-cert-dir`, as
/// the Deployment mounts it), and it verifies against the caBundle for the Service's name, as
/// the API server checks it.
#[test]
fn the_certificate_helm_makes_is_served_and_verifies_against_the_ca_bundle() {
    use rustls_pki_types::pem::PemObject as _;
    let objects = render(WEBHOOK_ON);
    let secret = objects
        .0
        .iter()
        .find(|o| o["kind"].as_str() == Some("Secret"))
        .expect("the certificate Secret");
    let field = |key: &str| -> Vec<u8> {
        let text = secret["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}"));
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
            .unwrap_or_else(|e| panic!("{key} is base64: {e}"))
    };
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::write(dir.path().join("tls.crt"), field("tls.crt")).expect("tls.crt");
    std::fs::write(dir.path().join("tls.key"), field("tls.key")).expect("tls.key");
    let served = jetstream_kv_operator::webhook::load_cert_dir(dir.path())
        .unwrap_or_else(|e| panic!("the operator cannot load Helm's certificate: {e}"));

    let bundle = webhook_configuration(&objects).webhooks.expect("webhooks")[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("a caBundle");
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_slice_iter(&bundle.0) {
        roots
            .add(ca.expect("the caBundle is PEM"))
            .expect("a usable CA");
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        std::sync::Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("a verifier");
    let now = rustls_pki_types::UnixTime::now();
    for name in [
        format!("{WEBHOOK_SERVICE}.{RELEASE_NAMESPACE}.svc"),
        format!("{WEBHOOK_SERVICE}.{RELEASE_NAMESPACE}.svc.cluster.local"),
    ] {
        let server = rustls_pki_types::ServerName::try_from(name.clone()).expect("a name");
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &served.cert[0],
            &served.cert[1..],
            &server,
            &[],
            now,
        )
        .unwrap_or_else(|e| panic!("the certificate does not verify for {name}: {e}"));
    }
    let other = rustls_pki_types::ServerName::try_from("elsewhere.example").expect("a name");
    assert!(
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &served.cert[0],
            &[],
            &other,
            &[],
            now,
        )
        .is_err(),
        "the certificate is for the Service only"
    );
}

#[test]
fn the_webhook_only_sees_the_watched_namespaces() {
    let objects = render(&[
        "--set",
        "webhook.enabled=true,webhook.failurePolicy=Fail",
        "--set",
        "watchNamespaces={team-a,team-b}",
    ]);
    let webhook = webhook_configuration(&objects).webhooks.expect("webhooks")[0].clone();
    assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
    let selector = webhook.namespace_selector.expect("a namespaceSelector");
    let expressions = selector.match_expressions.expect("matchExpressions");
    assert_eq!(expressions.len(), 1);
    assert_eq!(expressions[0].key, "kubernetes.io/metadata.name");
    assert_eq!(expressions[0].operator, "In");
    assert_eq!(
        expressions[0].values.as_deref(),
        Some(&["team-a".to_owned(), "team-b".to_owned()][..])
    );
}

#[test]
fn with_cert_manager_the_certificate_is_mounted_and_its_ca_injected() {
    let objects = render(WEBHOOK_CERT_MANAGER);
    let configuration = webhook_configuration(&objects);
    let annotations = configuration.metadata.annotations.expect("annotations");
    assert_eq!(
        annotations
            .get("cert-manager.io/inject-ca-from")
            .map(String::as_str),
        Some(format!("{RELEASE_NAMESPACE}/{WEBHOOK_SERVICE}").as_str())
    );
    assert_eq!(objects.count("Issuer"), 1);
    let certificate = objects
        .0
        .iter()
        .find(|o| o["kind"].as_str() == Some("Certificate"))
        .expect("a Certificate");
    assert_eq!(
        certificate["metadata"]["name"].as_str(),
        Some(WEBHOOK_SERVICE)
    );
    let secret = certificate["spec"]["secretName"]
        .as_str()
        .expect("secretName");
    let dns_names: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_sequence()
        .expect("dnsNames")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        dns_names.contains(&format!("{WEBHOOK_SERVICE}.{RELEASE_NAMESPACE}.svc").as_str()),
        "{dns_names:?}"
    );

    let deployment = objects.deployment();
    let operator = operator_container(&deployment);
    let dir = env_value(&operator, "WEBHOOK_CERT_DIR");
    let mount = operator
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == dir)
        .expect("the certificate is mounted at WEBHOOK_CERT_DIR");
    let volumes = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.volumes)
        .expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v.name == mount.name)
        .expect("the mounted volume");
    assert_eq!(
        volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some(secret)
    );
    for var in ["WEBHOOK_SELF_SIGNED", "WEBHOOK_CONFIG_NAME"] {
        assert!(
            operator.env.iter().flatten().all(|v| v.name != var),
            "no {var} with cert-manager"
        );
    }
    assert!(
        objects
            .operator_grants()
            .iter()
            .all(|g| g.group != "admissionregistration.k8s.io"),
        "cert-manager injects the CA: the operator needs no access to the configuration"
    );
}

#[test]
fn the_schema_checks_the_webhook_values() {
    assert_schema_rejects("webhook.failurePolicy=Maybe", "/webhook/failurePolicy");
    assert_schema_rejects("webhook.port=443", "/webhook/port");
    assert_schema_rejects("webhook.timeoutSeconds=60", "/webhook/timeoutSeconds");
    assert_schema_rejects("webhook.enable=true", "/webhook");
}

/// Provisioning identities (docs/credentials.md): the operator may get exactly the Secrets
/// named, in its own namespace, and knows that namespace; with none named, no such grant.
#[test]
fn provisioning_secrets_are_granted_by_name_in_the_release_namespace_only() {
    let objects = render(&[
        "--set",
        "watchNamespaces={team-a},natsServerPolicy.provisioningSecrets={nats-provisioner,nats-provisioner-b}",
    ]);
    let expected: BTreeSet<Grant> = watched_namespace_grants("team-a")
        .into_iter()
        .chain(lease_grants())
        .chain(policy_grants())
        .chain(
            ["nats-provisioner", "nats-provisioner-b"]
                .map(|name| grant(RELEASE_NAMESPACE, "", "secrets", "get", name)),
        )
        .collect();
    assert_eq!(
        objects.operator_grants(),
        expected,
        "exactly these permissions"
    );
    let operator = operator_container(&objects.deployment());
    assert_eq!(
        env_field_path(&operator, "OPERATOR_NAMESPACE"),
        "metadata.namespace"
    );
    let none = render(&["--set", "watchNamespaces={team-a}"]);
    assert!(
        none.operator_grants()
            .iter()
            .all(|g| g.namespace != RELEASE_NAMESPACE || g.resource != "secrets"),
        "a Secret of the release namespace granted with no provisioning Secret named"
    );
    assert_schema_rejects(
        "natsServerPolicy.provisioningSecrets={Not_A_Name}",
        "provisioningSecrets",
    );
}

#[test]
fn minted_users_add_writing_secrets_in_the_watched_namespaces_only() {
    let objects = render(&[
        "--set",
        "watchNamespaces={team-a},natsServerPolicy.mintUsers=true,natsServerPolicy.provisioningSecrets={nats-minter}",
    ]);
    let expected: BTreeSet<Grant> = watched_namespace_grants("team-a")
        .into_iter()
        .chain(lease_grants())
        .chain(policy_grants())
        .chain(["create", "patch"].map(|verb| grant("team-a", "", "secrets", verb, "*")))
        .chain([grant(
            RELEASE_NAMESPACE,
            "",
            "secrets",
            "get",
            "nats-minter",
        )])
        .collect();
    assert_eq!(
        objects.operator_grants(),
        expected,
        "exactly these permissions"
    );
    // Off by default: no Secret is written anywhere.
    assert!(
        render(&[])
            .operator_grants()
            .iter()
            .all(|g| g.resource != "secrets" || !["create", "patch"].contains(&g.verb.as_str())),
        "Secrets written without natsServerPolicy.mintUsers"
    );
}

const MONITORING_ON: &[&str] = &[
    "--set",
    "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
];

#[test]
fn the_alerts_and_the_dashboard_are_off_by_default_and_opt_in() {
    let defaults = render(&[]);
    assert_eq!(
        defaults.count("PrometheusRule"),
        0,
        "no PrometheusRule by default"
    );
    assert!(
        defaults
            .all::<Value>("ConfigMap")
            .iter()
            .all(|m| m["metadata"]["labels"]["grafana_dashboard"].is_null()),
        "no dashboard ConfigMap by default"
    );
    if let Err(error) = lint(MONITORING_ON) {
        panic!("helm lint --strict {MONITORING_ON:?} failed:\n{error}");
    }
    let on = render(MONITORING_ON);
    let rules: Vec<Value> = on.all("PrometheusRule");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(
        rules[0]["metadata"]["namespace"].as_str(),
        Some(RELEASE_NAMESPACE)
    );
    // The alerts select what the chart's ServiceMonitor scrapes: its metrics Service's job.
    let monitors: Vec<Value> = on.all("ServiceMonitor");
    let services: Vec<Value> = on.all("Service");
    let job = services[0]["metadata"]["name"]
        .as_str()
        .expect("Service name");
    assert!(!monitors.is_empty());
    let exprs: Vec<&str> = rules[0]["spec"]["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter_map(|r| r["expr"].as_str())
        .collect();
    assert_eq!(exprs.len(), 13, "{exprs:?}");
    let matcher = format!(r#"job="{job}", namespace="{RELEASE_NAMESPACE}""#);
    for expr in &exprs {
        assert!(expr.contains(&matcher), "{expr} does not select {matcher}");
    }
    let maps: Vec<Value> = on.all("ConfigMap");
    let dashboard = maps
        .iter()
        .find(|m| m["metadata"]["labels"]["grafana_dashboard"].as_str() == Some("1"))
        .expect("a ConfigMap with the sidecar's label");
    let json = dashboard["data"]["jetstream-kv-operator.json"]
        .as_str()
        .expect("the dashboard JSON");
    let parsed: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(parsed["uid"].as_str(), Some("jetstream-kv-operator"));

    // Thresholds, the selector, the sidecar's label and extra alert labels are values.
    let custom = render(&[
        "--set",
        "prometheusRule.enabled=true,grafanaDashboard.enabled=true,\
         prometheusRule.componentsStalled.for=1h,prometheusRule.additionalLabels.team=platform,\
         grafanaDashboard.label=dashboards,grafanaDashboard.labelValue=nats",
        "--set-json",
        r#"prometheusRule.selector="job=\"kv\"""#,
        "--set-json",
        "prometheusRule.reconcileErrors.ratio=0.25",
    ]);
    let rules: Vec<Value> = custom.all("PrometheusRule");
    let all = rules[0]["spec"]["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .clone();
    let by_name = |name: &str| {
        all.iter()
            .find(|r| r["alert"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no alert {name}"))
            .clone()
    };
    let errors = by_name("JetStreamKVReconcileErrors");
    assert!(
        errors["expr"]
            .as_str()
            .is_some_and(|e| e.ends_with("> 0.25") && e.contains(r#"{job="kv"}"#)),
        "{errors:?}"
    );
    assert_eq!(
        by_name("JetStreamKVComponentsStalled")["for"].as_str(),
        Some("1h")
    );
    for rule in &all {
        assert_eq!(
            rule["labels"]["team"].as_str(),
            Some("platform"),
            "{rule:?}"
        );
        assert!(rule["labels"]["severity"].as_str().is_some(), "{rule:?}");
    }
    let maps: Vec<Value> = custom.all("ConfigMap");
    assert!(
        maps.iter()
            .any(|m| m["metadata"]["labels"]["dashboards"].as_str() == Some("nats")),
        "the sidecar's label is a value"
    );
}

#[test]
fn the_operator_is_told_its_memory_limit_for_the_memory_alert() {
    let container = operator_container(&render(&[]).deployment());
    let limit = env(&container, "MEMORY_LIMIT")
        .value_from
        .as_ref()
        .and_then(|source| source.resource_field_ref.as_ref())
        .expect("MEMORY_LIMIT comes from the container's resources");
    assert_eq!(limit.resource, "limits.memory");
    assert_eq!(limit.container_name.as_deref(), Some("operator"));
    let unlimited = operator_container(&render(&["--set", "resources.limits=null"]).deployment());
    assert!(
        unlimited
            .env
            .unwrap_or_default()
            .iter()
            .all(|e| e.name != "MEMORY_LIMIT"),
        "no limit, no MEMORY_LIMIT"
    );
}

#[test]
fn usage_series_are_off_unless_the_value_caps_them() {
    let off = operator_container(&render(&[]).deployment());
    assert!(
        off.env
            .unwrap_or_default()
            .iter()
            .all(|e| e.name != "USAGE_METRICS_MAX_COMPONENTS"),
        "usage series are opt-in"
    );
    let on =
        operator_container(&render(&["--set", "metrics.usage.maxComponents=500"]).deployment());
    assert_eq!(
        env(&on, "USAGE_METRICS_MAX_COMPONENTS").value.as_deref(),
        Some("500")
    );
    assert_schema_rejects(
        "metrics.usage.maxComponents=-1",
        "/metrics/usage/maxComponents",
    );
}

#[test]
fn the_schema_checks_the_alert_and_dashboard_values() {
    assert_schema_rejects(
        "prometheusRule.reconcileErrors.ratio=2",
        "/prometheusRule/reconcileErrors/ratio",
    );
    assert_schema_rejects(
        "prometheusRule.noLeader.for=soon",
        "/prometheusRule/noLeader/for",
    );
    assert_schema_rejects(
        "prometheusRule.runbookBaseURL=docs",
        "/prometheusRule/runbookBaseURL",
    );
    assert_schema_rejects("prometheusRule.selector={job}", "/prometheusRule/selector");
    assert_schema_rejects("prometheusRule.threshold=1", "threshold");
    assert_schema_rejects("grafanaDashboard.label=a b", "/grafanaDashboard/label");
}
