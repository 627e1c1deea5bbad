//! Where the operator may connect: `NatsServerPolicy`, a cluster-scoped resource owned by the
//! cluster admin (tenants who write Components cannot write it).
//!
//! Its shape follows what platform teams already know: *who* may use it is a list of
//! `conditions` (External Secrets' `ClusterSecretStore`: namespace names or a label selector),
//! *where* is a list of `servers` (Argo CD `AppProject` destinations: a host, a DNS suffix or an
//! IP range, each with optional ports), and *how* is `requireTLS` and `requireCredentials`.
//!
//! A Component is allowed when one policy that applies to its namespace allows every server of
//! its `natsURL`, with its scheme and auth kind. [`decide`] is pure and makes no DNS lookup: a
//! host name is matched as a name, an IP literal as an address, and a name never matches an IP
//! range (resolving it would let whoever controls DNS move the operator's connections).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The NATS port when a URL gives none.
pub const DEFAULT_NATS_PORT: u16 = 4222;

/// Which NATS servers which namespaces' Components may use.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "jetstreamkv.io",
    version = "v1beta1",
    kind = "NatsServerPolicy",
    shortname = "nsp",
    doc = "Which NATS servers the Components of which namespaces may use, with which schemes and auth. Cluster-scoped, written by the cluster admin. A Component no policy allows gets ServerNotAllowed, with no DNS lookup and no connection.",
    printcolumn = r#"{"name":"Require TLS","type":"boolean","jsonPath":".spec.requireTLS"}"#,
    printcolumn = r#"{"name":"Require Credentials","type":"boolean","jsonPath":".spec.requireCredentials"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NatsServerPolicySpec {
    /// Which namespaces this policy applies to: a namespace matching any condition. Empty means
    /// every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<NamespaceCondition>,
    /// The servers these namespaces may use. A server in `natsURL` must match one entry.
    #[serde(default)]
    pub servers: Vec<ServerPattern>,
    /// Only `tls://` servers (or servers the URL asks TLS of).
    #[serde(default, rename = "requireTLS")]
    pub require_tls: bool,
    /// Only Components that authenticate (user and password, token, or JWT): anonymous
    /// connections are refused.
    #[serde(default)]
    pub require_credentials: bool,
    /// Only buckets and streams whose names start with the Component's namespace and `_`
    /// (`team-a_orders`): on a NATS account shared by several namespaces, no namespace can take
    /// a name another namespace's Components will ask for (namespace names hold no `_`, so the
    /// prefix is unambiguous). The default pub/sub stream name, `<namespace>_<component>`, has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_namespace_prefix: bool,
    /// Credentials the operator uses, instead of each Component's own, for every JetStream API
    /// call it makes for the Components this policy allows (creating, changing, deleting and
    /// reading buckets and streams). Apps' users then need data rights only. A Component this
    /// policy does not allow never uses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_credentials: Option<ProvisioningCredentials>,
    /// An account signing key with which the operator mints, for each Component this policy
    /// allows that asks for it (`jetstreamkv.io/credentials: mint`), a user allowed exactly what
    /// daprd does with its bucket, written to the Secret its `jwt` and `seedKey` name. A
    /// Component this policy does not allow never gets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint_credentials: Option<MintCredentials>,
    /// What each namespace this policy applies to may provision, each on its own: the
    /// Components of a namespace share its quota (see [`crate::quota`]). Every quota of every
    /// policy that applies to a namespace holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<crate::quota::NamespaceQuota>,
}

/// Where the provisioning identity is: a Secret in the operator's own namespace, holding one of
/// `creds` (a `.creds` file), `jwt` and `seed`, `user` and `password`, or `token`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningCredentials {
    /// The Secret's name, in the operator's namespace (tenants cannot read or write it).
    pub secret_name: String,
}

/// Where the account signing key is: a Secret in the operator's own namespace, holding `seed`
/// (the signing key's seed, `SA...`) and `account` (the account's public key, when the seed is a
/// signing key and not the account's own key).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MintCredentials {
    /// The Secret's name, in the operator's namespace (tenants cannot read or write it).
    pub secret_name: String,
    /// A Secret in the operator's namespace with which the operator revokes a minted user when
    /// its Component is deleted: `operatorSeed` (the seed of the operator, or of an operator
    /// signing key, that signs the account's JWT) and `systemCreds` (a `.creds` file of a user of
    /// the system account, to push the account's JWT to a full resolver). Without it, a deleted
    /// Component's user stays valid on the server (a Warning Event says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_secret_name: Option<String>,
}

/// The provisioning identity a Component gets: which policy names it, and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provisioning {
    /// The NatsServerPolicy that names it.
    pub policy: String,
    /// The Secret in the operator's namespace.
    pub secret_name: String,
}

/// Namespaces a policy applies to: those named, and those whose labels match the selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCondition {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// A label selector on namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// One allowed server: exactly one of `host`, `hostSuffix`, `cidr`; `ports` empty means any.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerPattern {
    /// A host name or IP address, exactly (case-insensitive; a trailing dot is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A DNS suffix: `.nats.svc.cluster.local` matches `a.nats.svc.cluster.local`, not the
    /// suffix itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_suffix: Option<String>,
    /// An IP range (`10.0.0.0/8`, `fd00::/8`): matches IP literals in URLs only, never names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Allowed ports; empty means any port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// One server of a `natsURL`, as the policy sees it (no credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRef {
    /// `nats`, `tls`, `ws` or `wss`.
    pub scheme: String,
    /// The host: a name (lower case, no trailing dot) or an IP literal (no brackets).
    pub host: String,
    /// The port (4222 when the URL gives none).
    pub port: u16,
}

impl ServerRef {
    /// The server from one `natsURL` entry; None when it does not parse (reported elsewhere).
    pub fn parse(entry: &str) -> Option<Self> {
        let with_scheme = if entry.contains("://") {
            entry.to_string()
        } else {
            format!("nats://{entry}")
        };
        let url = url::Url::parse(&with_scheme).ok()?;
        let host = match url.host()? {
            url::Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Self {
            scheme: url.scheme().to_ascii_lowercase(),
            host,
            port: url.port().unwrap_or(DEFAULT_NATS_PORT),
        })
    }

    /// `scheme://host:port`, the normalised form for display (never for deciding identity).
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.scheme, self.host, self.port)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self.scheme.as_str(), "tls" | "wss")
    }
}

/// What a Component asks of the network, as the policy sees it.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The Component's namespace.
    pub namespace: &'a str,
    /// That namespace's labels (for `namespaceSelector`).
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// The servers of its `natsURL`.
    pub servers: &'a [ServerRef],
    /// Whether it authenticates (user info in the URL, or a JWT).
    pub has_credentials: bool,
    /// The names its bucket or streams have on the server, each with what it is ("bucket",
    /// "stream"): values that may come from Secrets, never shown.
    pub names: &'a [(&'static str, String)],
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A policy allows every server.
    Allowed,
    /// No policy allows it; the message says why, without naming any policy's servers (a
    /// tenant learns nothing about what others may reach).
    NotAllowed(String),
    /// A policy allows the servers, but only for names that start with the namespace
    /// (`requireNamespacePrefix`), and a name does not.
    NameNotAllowed(String),
}

/// Decides whether `request` may connect, given every policy of the cluster. Pure: no DNS, no
/// connection.
pub fn decide(policies: &[NatsServerPolicySpec], request: &Request<'_>) -> Decision {
    let applicable: Vec<&NatsServerPolicySpec> = policies
        .iter()
        .filter(|p| applies_to(p, request.namespace, request.namespace_labels))
        .collect();
    if applicable.is_empty() {
        return Decision::NotAllowed(format!(
            "no NatsServerPolicy lets namespace {} use NATS servers; ask the cluster admin to allow the server in a NatsServerPolicy",
            request.namespace
        ));
    }
    // The most specific refusal across policies: the one that got furthest (past the servers,
    // a name), else the first.
    let mut refusal = None;
    for policy in applicable {
        match refuse(policy, request) {
            None => return Decision::Allowed,
            Some(why @ Decision::NameNotAllowed(_)) => refusal = Some(why),
            Some(why) => {
                refusal.get_or_insert(why);
            }
        }
    }
    refusal.unwrap_or_else(|| Decision::NotAllowed(String::new()))
}

/// The provisioning identity of `request`: that of the first policy, by name, that applies to
/// its namespace, allows it ([`decide`]'s rules, unchanged) and names credentials. None: the
/// Component provisions with its own credentials. Pure.
pub fn provisioning(
    policies: &[(String, NatsServerPolicySpec)],
    request: &Request<'_>,
) -> Option<Provisioning> {
    first_naming(policies, request, |p| {
        p.provisioning_credentials.as_ref().map(|c| &c.secret_name)
    })
}

/// The signing key `request` may have a user minted with: that of the first policy, by name,
/// that applies to its namespace, allows it ([`decide`]'s rules) and names `mintCredentials`.
/// None: no user is minted for it. Pure.
pub fn minting(
    policies: &[(String, NatsServerPolicySpec)],
    request: &Request<'_>,
) -> Option<Provisioning> {
    first_naming(policies, request, |p| {
        p.mint_credentials.as_ref().map(|c| &c.secret_name)
    })
}

/// The first policy, by name, that applies to `request`'s namespace, allows it and names a
/// Secret by `secret`, with that Secret.
fn first_naming(
    policies: &[(String, NatsServerPolicySpec)],
    request: &Request<'_>,
    secret: impl Fn(&NatsServerPolicySpec) -> Option<&String>,
) -> Option<Provisioning> {
    policies
        .iter()
        .filter(|(_, p)| applies_to(p, request.namespace, request.namespace_labels))
        .filter(|(_, p)| refuse(p, request).is_none())
        .filter_map(|(name, p)| secret(p).map(|s| (name, s)))
        .min_by(|a, b| a.0.cmp(b.0))
        .map(|(name, secret_name)| Provisioning {
            policy: name.clone(),
            secret_name: secret_name.clone(),
        })
}

/// Why one policy refuses the request, or None when it allows it.
fn refuse(policy: &NatsServerPolicySpec, request: &Request<'_>) -> Option<Decision> {
    refuse_servers(policy, request)
        .map(Decision::NotAllowed)
        .or_else(|| refuse_names(policy, request).map(Decision::NameNotAllowed))
}

/// A policy with `requireNamespacePrefix` refuses a name that does not start with the
/// namespace and `_`. The name is not shown (it may come from a Secret), only what it names.
fn refuse_names(policy: &NatsServerPolicySpec, request: &Request<'_>) -> Option<String> {
    if !policy.require_namespace_prefix {
        return None;
    }
    let prefix = format!("{}_", request.namespace);
    let (what, _) = request
        .names
        .iter()
        .find(|(_, n)| !n.starts_with(&prefix))?;
    Some(format!(
        "the NATS server policy lets namespace {ns} use only buckets and streams whose names start with {prefix}, and the {what} name does not; rename the {what} (a name such as {prefix}orders), so that no namespace can take another's names on a shared account",
        ns = request.namespace
    ))
}

/// Why one policy refuses the servers or the auth, or None when it allows them.
fn refuse_servers(policy: &NatsServerPolicySpec, request: &Request<'_>) -> Option<String> {
    if policy.require_credentials && !request.has_credentials {
        return Some(
            "the NATS server policy requires credentials: give natsURL a user and password, or use jwt and seedKey".into(),
        );
    }
    for server in request.servers {
        if policy.require_tls && !server.is_tls() {
            return Some(format!(
                "the NATS server policy requires TLS: use tls:// for {}",
                server.display()
            ));
        }
        if !policy.servers.iter().any(|p| matches(p, server)) {
            return Some(format!(
                "server {} is not allowed for namespace {} by any NatsServerPolicy; use an allowed server or ask the cluster admin to allow it",
                server.display(),
                request.namespace
            ));
        }
    }
    None
}

fn applies_to(
    policy: &NatsServerPolicySpec,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    policy.conditions.is_empty()
        || policy.conditions.iter().any(|c| {
            c.namespaces.iter().any(|n| n == namespace)
                || c.namespace_selector
                    .as_ref()
                    .is_some_and(|s| selects(s, labels))
        })
}

/// Kubernetes label selector semantics: every `matchLabels` pair and every expression holds.
/// An empty selector selects everything.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    pairs
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|e| expression_holds(e, labels))
}

fn expression_holds(e: &LabelSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = e.values.as_deref().unwrap_or_default();
    let value = labels.get(&e.key);
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // An operator Kubernetes does not know selects nothing.
        _ => false,
    }
}

fn matches(pattern: &ServerPattern, server: &ServerRef) -> bool {
    if !pattern.ports.is_empty() && !pattern.ports.contains(&server.port) {
        return false;
    }
    let ip: Option<IpAddr> = server.host.parse().ok();
    if let Some(host) = &pattern.host {
        let want = host.trim_end_matches('.').trim_matches(['[', ']']);
        return match (ip, want.parse::<IpAddr>()) {
            (Some(a), Ok(b)) => a == b,
            (None, Err(_)) => want.eq_ignore_ascii_case(&server.host),
            _ => false,
        };
    }
    if let Some(suffix) = &pattern.host_suffix {
        let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
        let suffix = suffix.trim_start_matches('.');
        return ip.is_none()
            && !suffix.is_empty()
            && server.host.len() > suffix.len()
            && server.host.ends_with(suffix)
            && server.host.as_bytes()[server.host.len() - suffix.len() - 1] == b'.';
    }
    if let Some(cidr) = &pattern.cidr {
        return ip.is_some_and(|ip| in_cidr(ip, cidr));
    }
    false
}

/// Whether a `host` pattern of a policy that applies to `namespace` names `host` exactly. Pure.
pub fn names_exactly(
    policies: &[NatsServerPolicySpec],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    host: &str,
) -> bool {
    let host = host.trim_end_matches('.').trim_matches(['[', ']']);
    policies
        .iter()
        .filter(|p| applies_to(p, namespace, labels))
        .flat_map(|p| &p.servers)
        .filter_map(|s| s.host.as_deref())
        .any(|h| {
            h.trim_end_matches('.')
                .trim_matches(['[', ']'])
                .eq_ignore_ascii_case(host)
        })
}

/// Whether `ip` lies in `cidr` (`a.b.c.d/n` or `x::/n`); a malformed range matches nothing.
pub fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    // An IPv4-mapped IPv6 address is its IPv4 address.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The servers of a `natsURL` for the policy (entries that do not parse are left out: the
/// `natsURL` check reports them first).
pub fn servers_of(nats_url: &str) -> Vec<ServerRef> {
    nats_url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(ServerRef::parse)
        .collect()
}

/// The policies and namespace labels of the cluster, watched, for the reconciler.
#[derive(Clone)]
pub struct Enforcer {
    policies: kube::runtime::reflector::Store<NatsServerPolicy>,
    namespaces: kube::runtime::reflector::Store<
        kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>,
    >,
    synced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Enforcer {
    /// Starts watching NatsServerPolicies and namespace metadata (cluster-wide, read only).
    pub fn start(client: &kube::Client) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let (policies, policies_writer) = reflector::store();
        let (namespaces, namespaces_writer) = reflector::store();
        let policy_api: kube::Api<NatsServerPolicy> = kube::Api::all(client.clone());
        let namespace_api: kube::Api<
            kube::api::PartialObjectMeta<k8s_openapi::api::core::v1::Namespace>,
        > = kube::Api::all(client.clone());
        tokio::spawn(
            watcher(policy_api, watcher::Config::default().any_semantic())
                .default_backoff()
                .reflect(policies_writer)
                .for_each(|_| futures::future::ready(())),
        );
        tokio::spawn(
            watcher(namespace_api, watcher::Config::default().any_semantic())
                .default_backoff()
                .reflect(namespaces_writer)
                .for_each(|_| futures::future::ready(())),
        );
        let synced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, n, s) = (policies.clone(), namespaces.clone(), synced.clone());
        tokio::spawn(async move {
            let _ = p.wait_until_ready().await;
            let _ = n.wait_until_ready().await;
            s.store(true, std::sync::atomic::Ordering::Release);
        });
        Self {
            policies,
            namespaces,
            synced,
        }
    }

    /// Whether both caches have been listed (before that, every decision would be a refusal).
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a `host` pattern of a policy that applies to `namespace` names `host` exactly
    /// (case-insensitive, a trailing dot ignored): only then may the name resolve to a loopback,
    /// unspecified or link-local address (see [`crate::nats::relay`]).
    pub fn names_exactly(&self, namespace: &str, host: &str) -> bool {
        let labels = self.labels_of(namespace);
        let policies: Vec<NatsServerPolicySpec> = self
            .policies
            .state()
            .iter()
            .map(|p| p.spec.clone())
            .collect();
        names_exactly(&policies, namespace, &labels, host)
    }

    fn labels_of(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&kube::runtime::reflector::ObjectRef::new(namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// The quotas of every policy that applies to `namespace` (empty: none).
    pub fn quotas(&self, namespace: &str) -> Vec<crate::quota::NamespaceQuota> {
        let labels = self.labels_of(namespace);
        self.policies
            .state()
            .iter()
            .filter(|p| applies_to(&p.spec, namespace, &labels))
            .filter_map(|p| p.spec.quota.clone())
            .collect()
    }

    /// The provisioning identity of a Component of `namespace` using `nats_url` (see
    /// [`provisioning`]). No DNS, no connection.
    pub fn provisioning(
        &self,
        namespace: &str,
        nats_url: &str,
        has_credentials: bool,
    ) -> Option<Provisioning> {
        let policies: Vec<(String, NatsServerPolicySpec)> = self
            .policies
            .state()
            .iter()
            .map(|p| (kube::ResourceExt::name_any(p.as_ref()), p.spec.clone()))
            .collect();
        let labels = self.labels_of(namespace);
        let servers = servers_of(nats_url);
        provisioning(
            &policies,
            &Request {
                namespace,
                namespace_labels: &labels,
                servers: &servers,
                has_credentials,
                names: &[],
            },
        )
    }

    /// The signing key a Component of `namespace` using `nats_url` may have a user minted with
    /// (see [`minting`]). No DNS, no connection.
    pub fn minting(&self, namespace: &str, nats_url: &str) -> Option<Provisioning> {
        let policies: Vec<(String, NatsServerPolicySpec)> = self
            .policies
            .state()
            .iter()
            .map(|p| (kube::ResourceExt::name_any(p.as_ref()), p.spec.clone()))
            .collect();
        let labels = self.labels_of(namespace);
        let servers = servers_of(nats_url);
        minting(
            &policies,
            &Request {
                namespace,
                namespace_labels: &labels,
                servers: &servers,
                // A minted user authenticates with its JWT.
                has_credentials: true,
                names: &[],
            },
        )
    }

    /// The `mintCredentials` of the policy named `policy`, if it exists and names them.
    pub fn mint_credentials(&self, policy: &str) -> Option<MintCredentials> {
        self.policies
            .get(&kube::runtime::reflector::ObjectRef::new(policy))?
            .spec
            .mint_credentials
            .clone()
    }

    /// The decision for a Component of `namespace` using `nats_url`, whose bucket or streams
    /// have `names` on the server. No DNS, no connection.
    pub fn decide(
        &self,
        namespace: &str,
        nats_url: &str,
        has_credentials: bool,
        names: &[(&'static str, String)],
    ) -> Decision {
        let policies: Vec<NatsServerPolicySpec> = self
            .policies
            .state()
            .iter()
            .map(|p| p.spec.clone())
            .collect();
        let labels = self
            .namespaces
            .get(&kube::runtime::reflector::ObjectRef::new(namespace))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let servers = servers_of(nats_url);
        decide(
            &policies,
            &Request {
                namespace,
                namespace_labels: &labels,
                servers: &servers,
                has_credentials,
                names,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(pattern: &str) -> ServerPattern {
        let (kind, value) = pattern.split_once('=').unwrap();
        let (value, ports) = match value.split_once('@') {
            Some((v, p)) => (v, p.split('+').map(|p| p.parse().unwrap()).collect()),
            None => (value, vec![]),
        };
        let mut s = ServerPattern {
            ports,
            ..Default::default()
        };
        match kind {
            "host" => s.host = Some(value.into()),
            "suffix" => s.host_suffix = Some(value.into()),
            "cidr" => s.cidr = Some(value.into()),
            _ => unreachable!(),
        }
        s
    }

    fn policy(servers: &[&str]) -> NatsServerPolicySpec {
        NatsServerPolicySpec {
            servers: servers.iter().map(|s| server(s)).collect(),
            ..Default::default()
        }
    }

    fn allowed(policies: &[NatsServerPolicySpec], ns: &str, url: &str, creds: bool) -> bool {
        let labels = BTreeMap::from([("team".to_string(), ns.to_string())]);
        let servers = servers_of(url);
        decide(
            policies,
            &Request {
                namespace: ns,
                namespace_labels: &labels,
                servers: &servers,
                has_credentials: creds,
                names: &[],
            },
        ) == Decision::Allowed
    }

    #[test]
    fn servers_match_by_host_suffix_range_and_port_without_dns() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["host=nats.nats.svc"], "nats://nats.nats.svc:4222", true),
            (&["host=nats.nats.svc"], "NATS://NATS.nats.svc.:4222", true),
            (&["host=nats.nats.svc"], "nats.nats.svc", true),
            (&["host=nats.nats.svc@4222"], "nats.nats.svc", true),
            (
                &["host=nats.nats.svc@4222"],
                "nats://nats.nats.svc:4223",
                false,
            ),
            (&["host=nats.nats.svc"], "nats://evil.example:4222", false),
            (
                &["host=nats.nats.svc"],
                "nats://nats.nats.svc.evil.example",
                false,
            ),
            (
                &["suffix=.nats.svc.cluster.local"],
                "a.nats.svc.cluster.local",
                true,
            ),
            (
                &["suffix=nats.svc.cluster.local"],
                "a.nats.svc.cluster.local",
                true,
            ),
            (
                &["suffix=.nats.svc.cluster.local"],
                "nats.svc.cluster.local",
                false,
            ),
            (
                &["suffix=.svc.cluster.local"],
                "evilsvc.cluster.local",
                false,
            ),
            (&["cidr=10.0.0.0/8"], "10.1.2.3:4222", true),
            (&["cidr=10.0.0.0/8"], "11.1.2.3:4222", false),
            (&["cidr=10.0.0.0/8@4222"], "10.1.2.3:22", false),
            // A name never matches a range: no DNS lookup is made.
            (&["cidr=127.0.0.0/8"], "localhost:4222", false),
            (&["cidr=fd00::/8"], "[fd00::1]:4222", true),
            (&["cidr=0.0.0.0/0"], "[::1]:4222", false),
            (&["host=127.0.0.1"], "nats://127.0.0.1:4222", true),
            (&["host=::1"], "nats://[::1]:4222", true),
            (&["host=[::1]"], "nats://[::1]:4222", true),
            (&["cidr=not-a-range"], "10.0.0.1", false),
            // Every server of the list must be allowed.
            (&["host=a"], "nats://a:4222,nats://b:4222", false),
            (&["host=a", "host=b"], "nats://a:4222,nats://b:4222", true),
            (&[], "nats://a:4222", false),
        ];
        for (patterns, url, want) in cases {
            assert_eq!(
                allowed(&[policy(patterns)], "team-a", url, false),
                *want,
                "{patterns:?} {url}"
            );
        }
    }

    #[test]
    fn policies_apply_to_namespaces_by_name_or_selector() {
        let mut named = policy(&["host=a"]);
        named.conditions = vec![NamespaceCondition {
            namespaces: vec!["team-a".into()],
            namespace_selector: None,
        }];
        let mut selected = policy(&["host=b"]);
        selected.conditions = vec![NamespaceCondition {
            namespaces: vec![],
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "team".into(),
                    operator: "In".into(),
                    values: Some(vec!["team-b".into()]),
                }]),
                match_labels: None,
            }),
        }];
        let both = [named, selected];
        assert!(allowed(&both, "team-a", "nats://a", false));
        assert!(!allowed(&both, "team-a", "nats://b", false));
        assert!(allowed(&both, "team-b", "nats://b", false));
        assert!(!allowed(&both, "team-b", "nats://a", false));
        assert!(!allowed(&both, "team-c", "nats://a", false));
        // No policy at all: nothing is allowed (the chart writes the common one).
        assert!(!allowed(&[], "team-a", "nats://a", false));
    }

    #[test]
    fn scheme_and_credentials_requirements() {
        let mut strict = policy(&["host=a"]);
        strict.require_tls = true;
        strict.require_credentials = true;
        assert!(allowed(&[strict.clone()], "ns", "tls://a:4222", true));
        assert!(!allowed(&[strict.clone()], "ns", "nats://a:4222", true));
        assert!(!allowed(&[strict.clone()], "ns", "tls://a:4222", false));
        // Another policy for the same namespace may be laxer: any one allowing is enough.
        assert!(allowed(
            &[strict, policy(&["host=a"])],
            "ns",
            "nats://a",
            false
        ));
    }

    #[test]
    fn only_a_host_pattern_names_a_host_exactly() {
        let mut policies = vec![policy(&[
            "host=Nats.Local.",
            "suffix=.team-a.svc.cluster.local",
            "cidr=127.0.0.0/8",
        ])];
        policies[0].conditions = vec![NamespaceCondition {
            namespaces: vec!["team-a".into()],
            namespace_selector: None,
        }];
        let labels = BTreeMap::new();
        let named = |ns: &str, host: &str| names_exactly(&policies, ns, &labels, host);
        assert!(named("team-a", "nats.local"));
        assert!(named("team-a", "NATS.local."));
        assert!(!named("team-a", "evil.team-a.svc.cluster.local"));
        assert!(!named("team-a", "localhost"));
        assert!(!named("team-b", "nats.local"), "another namespace's policy");
    }

    #[test]
    fn the_provisioning_identity_is_the_first_covering_policy_s() {
        let named = |name: &str, ns: &str, servers: &[&str], secret: Option<&str>| {
            let mut p = policy(servers);
            p.conditions = vec![NamespaceCondition {
                namespaces: vec![ns.into()],
                namespace_selector: None,
            }];
            p.provisioning_credentials = secret.map(|s| ProvisioningCredentials {
                secret_name: s.into(),
            });
            (name.to_string(), p)
        };
        let policies = vec![
            named("z-team-a", "team-a", &["host=a"], Some("late")),
            named("b-team-a", "team-a", &["host=a"], Some("provisioner-a")),
            named("a-team-a-plain", "team-a", &["host=a"], None),
            named("c-team-b", "team-b", &["host=b"], None),
            named("d-strict", "team-c", &["host=a"], Some("strict")),
        ];
        let mut strict = policies.clone();
        strict[4].1.require_tls = true;
        let labels = BTreeMap::new();
        let who = |policies: &[(String, NatsServerPolicySpec)], ns: &str, url: &str| {
            let servers = servers_of(url);
            provisioning(
                policies,
                &Request {
                    namespace: ns,
                    namespace_labels: &labels,
                    servers: &servers,
                    has_credentials: true,
                    names: &[],
                },
            )
            .map(|p| (p.policy, p.secret_name))
        };
        assert_eq!(
            who(&policies, "team-a", "nats://a"),
            Some(("b-team-a".into(), "provisioner-a".into()))
        );
        // A server the naming policy does not allow, another namespace, a policy without
        // credentials, or one whose requirements the Component does not meet: its own.
        assert_eq!(who(&policies, "team-a", "nats://b"), None);
        assert_eq!(who(&policies, "team-b", "nats://b"), None);
        assert_eq!(who(&policies, "team-b", "nats://a"), None);
        assert_eq!(
            who(&policies, "team-c", "nats://a"),
            Some(("d-strict".into(), "strict".into()))
        );
        assert_eq!(who(&strict, "team-c", "nats://a"), None);
    }

    #[test]
    fn label_selectors_follow_kubernetes() {
        let labels = BTreeMap::from([("a".to_string(), "1".to_string())]);
        let req = |op: &str, values: &[&str]| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: op.into(),
                values: Some(values.iter().map(|v| v.to_string()).collect()),
            }]),
            match_labels: None,
        };
        assert!(selects(&LabelSelector::default(), &labels));
        assert!(selects(&req("In", &["1", "2"]), &labels));
        assert!(!selects(&req("NotIn", &["1"]), &labels));
        assert!(selects(&req("Exists", &[]), &labels));
        assert!(!selects(&req("DoesNotExist", &[]), &labels));
        assert!(!selects(&req("Sideways", &[]), &labels));
        let pairs = LabelSelector {
            match_labels: Some(BTreeMap::from([("a".into(), "2".into())])),
            match_expressions: None,
        };
        assert!(!selects(&pairs, &labels));
    }

    #[test]
    fn refusals_name_the_server_normalised_and_no_policy() {
        let servers = servers_of("NATS://Evil.Example.:4222/");
        assert_eq!(servers[0].display(), "nats://evil.example:4222");
        let labels = BTreeMap::new();
        let Decision::NotAllowed(why) = decide(
            &[policy(&["host=secret-internal-server"])],
            &Request {
                namespace: "team-a",
                namespace_labels: &labels,
                servers: &servers,
                has_credentials: false,
                names: &[],
            },
        ) else {
            panic!("allowed")
        };
        assert!(why.contains("nats://evil.example:4222"), "{why}");
        assert!(!why.contains("secret-internal-server"), "{why}");
    }

    #[test]
    fn a_prefix_policy_allows_only_names_of_the_namespace_and_never_shows_them() {
        let labels = BTreeMap::new();
        let servers = servers_of("nats://nats:4222");
        let prefixed = NatsServerPolicySpec {
            require_namespace_prefix: true,
            ..policy(&["host=nats"])
        };
        let ask = |policies: &[NatsServerPolicySpec], names: &[(&'static str, String)]| {
            decide(
                policies,
                &Request {
                    namespace: "team-a",
                    namespace_labels: &labels,
                    servers: &servers,
                    has_credentials: false,
                    names,
                },
            )
        };
        let own = [("stream", "team-a_orders".to_string())];
        assert_eq!(
            ask(std::slice::from_ref(&prefixed), &own),
            Decision::Allowed
        );
        for name in [
            "team-b_orders",
            "team-a-orders",
            "team_a_orders",
            "cart",
            "team-ab_x",
        ] {
            let Decision::NameNotAllowed(why) = ask(
                std::slice::from_ref(&prefixed),
                &[("bucket", name.to_string())],
            ) else {
                panic!("{name} allowed");
            };
            assert!(
                why.contains("start with team-a_") && why.contains("bucket"),
                "{why}"
            );
            assert!(!why.contains(name), "the name is not shown: {why}");
        }
        let other = [("bucket", "team-b_orders".to_string())];
        // Policies add up: another that allows the server without the rule allows the name.
        assert_eq!(
            ask(&[prefixed.clone(), policy(&["host=nats"])], &other),
            Decision::Allowed
        );
        // A refusal of the server by another policy does not hide the name's.
        assert!(matches!(
            ask(&[policy(&["host=elsewhere"]), prefixed], &other),
            Decision::NameNotAllowed(_)
        ));
    }
}
