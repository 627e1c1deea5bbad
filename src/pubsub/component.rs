//! A `pubsub.jetstream` Component's configuration from its resolved metadata values, read with
//! the rules of Dapr's `pubsub/jetstream` (components-contrib) and of daprd (pure).
//!
//! What matters to the stream: where to connect and how (`natsURL`, `jwt`/`seedKey`, `token`,
//! `domain`, `apiPrefix`), which stream the topics are bound to (`streamName`), which topics daprd
//! will allow (`allowedTopics`, `publishingScopes`, `subscriptionScopes`) and whether daprd
//! prepends the namespace to topics (any value holding `{namespace}`). The consumer settings
//! (`durableName`, `replicas`, `memoryStorage`, ...) are Dapr's: only warned about.

use super::PubsubError;
use super::subjects::{DiscoveredTopic, TopicSource};
use crate::dapr::ComponentError;
use crate::dapr::store::{NatsAuth, StoreConfig, item, servers_with_origin, user_auth};
use crate::secret_value::SecretValue;

/// The template that makes daprd prepend the namespace to every topic.
const NAMESPACE_TEMPLATE: &str = "{namespace}";

/// Per-pod templates: each sidecar replaces them with its own values. (daprd replaces
/// `{namespace}` with `<namespace>.<appID>`, so it is per-app too.)
const POD_TEMPLATES: [&str; 4] = ["{uuid}", "{podName}", "{appID}", NAMESPACE_TEMPLATE];

/// Per-app topic lists (`publishingScopes`, `subscriptionScopes`): `app=t1,t2;app2=t3`.
pub type AppTopics = Vec<(String, Vec<String>)>;

/// What the operator needs of a `pubsub.jetstream` Component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubsubConfig {
    /// `natsURL` as given (may hold credentials).
    pub servers: SecretValue,
    /// Each server URL without its password or token (only `<Secret name, key>` when `natsURL`
    /// came from a Secret).
    pub redacted_servers: Vec<String>,
    /// How to authenticate: `jwt`/`seedKey`, `token`, user info in the URLs, or none.
    pub auth: NatsAuth,
    /// `streamName`: the stream every topic is bound to; None means daprd looks the stream up by
    /// subject.
    pub stream_name: Option<String>,
    /// `durableName`, as written (templates unresolved).
    pub durable_name: Option<String>,
    /// `domain`: the JetStream domain.
    pub domain: Option<String>,
    /// `apiPrefix`: the JetStream API prefix.
    pub api_prefix: Option<String>,
    /// Whether daprd prepends the namespace to every topic.
    pub namespace_scoped: bool,
    /// `allowedTopics`: when set, daprd refuses every other topic.
    pub allowed_topics: Vec<String>,
    /// `publishingScopes`.
    pub publishing_scopes: AppTopics,
    /// `subscriptionScopes`.
    pub subscription_scopes: AppTopics,
    /// The metadata items that configure Dapr's consumers but that users often mistake for stream
    /// settings (`replicas`, `memoryStorage`), as written.
    pub consumer_only: Vec<String>,
    /// `replicas`: the replicas of each consumer daprd creates, when a number.
    pub consumer_replicas: Option<usize>,
    /// What daprd will ask of its durable consumer (compared with one that exists).
    pub consumer: super::consumer::ConsumerAsk,
}

impl PubsubConfig {
    /// What the connection pool needs to reach the servers (shared with state stores: one
    /// connection per servers and credentials, whatever the Component type).
    pub fn connection(&self, stream: &str) -> StoreConfig {
        StoreConfig {
            servers: self.servers.clone(),
            redacted_servers: self.redacted_servers.clone(),
            bucket: stream.to_owned(),
            shown_bucket: stream.to_owned(),
            auth: self.auth.clone(),
            connection_name: None,
        }
    }

    /// The topics the Component itself names: `allowedTopics` and both scope lists.
    pub fn topics(&self) -> Vec<DiscoveredTopic> {
        let mut out: Vec<DiscoveredTopic> = self
            .allowed_topics
            .iter()
            .map(|t| DiscoveredTopic {
                topic: t.clone(),
                source: TopicSource::AllowedTopics,
            })
            .collect();
        for (scopes, source) in [
            (&self.publishing_scopes, TopicSource::PublishingScopes),
            (&self.subscription_scopes, TopicSource::SubscriptionScopes),
        ] {
            for (_, topics) in scopes {
                out.extend(topics.iter().map(|t| DiscoveredTopic {
                    topic: t.clone(),
                    source: source.clone(),
                }));
            }
        }
        out
    }
}

/// Checks the resolved metadata values of a `pubsub.jetstream` Component and builds its
/// configuration. Names match case-insensitively; the first item of a name counts; unknown names
/// are ignored, as Dapr ignores them.
pub fn pubsub_config(values: &[(String, SecretValue)]) -> Result<PubsubConfig, PubsubError> {
    pubsub_config_with_origins(values, |_| None)
}

/// [`pubsub_config`], where `origin` says for a metadata item (by its name as written) where its
/// value came from when that must be shown instead (a `natsURL` from a Secret is never shown).
pub fn pubsub_config_with_origins(
    values: &[(String, SecretValue)],
    origin: impl Fn(&str) -> Option<String>,
) -> Result<PubsubConfig, PubsubError> {
    let get = |wanted: &str| item(values, wanted);
    let present = |wanted| present_item(values, wanted);

    refuse_pod_templates(values)?;

    if present("natsURL").is_none() {
        return Err(ComponentError::MissingNatsURL.into());
    }
    let (servers, redacted_servers, has_userinfo) = servers_with_origin(values, &origin)?;

    let auth = auth(values, has_userinfo)?;

    let text = |wanted| present(wanted).map(|v| v.expose().to_owned());
    let stream_name = text("streamName");
    if let Some(name) = &stream_name
        && let Some(problem) = stream_name_problem(name)
    {
        return Err(PubsubError::InvalidStreamName {
            name: name.clone(),
            problem,
        });
    }

    consumer_names(values, &origin)?;

    let consumer_only = ["replicas", "memoryStorage"]
        .into_iter()
        .filter_map(|wanted| get(wanted).filter(|(_, v)| !v.is_empty()))
        .map(|(name, _)| name.to_owned())
        .collect();

    Ok(PubsubConfig {
        servers,
        redacted_servers,
        auth,
        stream_name,
        durable_name: text("durableName"),
        domain: text("domain"),
        api_prefix: text("apiPrefix"),
        // daprd checks every item, known to the component or not (a `consumerID` holding
        // `{namespace}` namespaces the topics of a component that never reads it).
        namespace_scoped: values
            .iter()
            .any(|(_, v)| v.expose().contains(NAMESPACE_TEMPLATE)),
        allowed_topics: text("allowedTopics")
            .map(|v| topic_list(&v))
            .unwrap_or_default(),
        publishing_scopes: text("publishingScopes")
            .map(|v| app_topics(&v))
            .unwrap_or_default(),
        subscription_scopes: text("subscriptionScopes")
            .map(|v| app_topics(&v))
            .unwrap_or_default(),
        consumer_only,
        consumer_replicas: text("replicas").and_then(|v| v.trim().parse().ok()),
        consumer: super::consumer::ConsumerAsk::from_values(values),
    })
}

/// The value of the metadata item `wanted`, when it is set and not empty.
fn present_item(values: &[(String, SecretValue)], wanted: &str) -> Option<SecretValue> {
    item(values, wanted)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// Values the operator must use as they are: a per-pod template there cannot be resolved.
fn refuse_pod_templates(values: &[(String, SecretValue)]) -> Result<(), PubsubError> {
    for wanted in [
        "natsURL",
        "jwt",
        "seedKey",
        "token",
        "streamName",
        "domain",
        "apiPrefix",
    ] {
        if let Some((name, value)) = item(values, wanted)
            && let Some(template) = POD_TEMPLATES.iter().find(|t| value.expose().contains(*t))
        {
            return Err(ComponentError::UnresolvableTemplate {
                name: name.to_owned(),
                template: (*template).to_owned(),
            }
            .into());
        }
    }
    Ok(())
}

/// How the operator authenticates: a client certificate pair must be whole, and is refused
/// unless JWT credentials come first.
fn auth(values: &[(String, SecretValue)], has_userinfo: bool) -> Result<NatsAuth, PubsubError> {
    match (
        present_item(values, "tls_client_cert"),
        present_item(values, "tls_client_key"),
    ) {
        (Some(_), None) => return Err(PubsubError::TlsCertWithoutKey),
        (None, Some(_)) => return Err(PubsubError::TlsKeyWithoutCert),
        _ => {}
    }
    // Dapr prefers a client certificate over a token; both are files or values in the sidecar,
    // and a certificate names files only the sidecar has.
    Ok(match user_auth(values, has_userinfo)? {
        NatsAuth::Jwt { jwt, seed } => NatsAuth::Jwt { jwt, seed },
        _ if present_item(values, "tls_client_cert").is_some() => {
            return Err(PubsubError::TlsClientAuthUnsupported);
        }
        other => present_item(values, "token")
            .map(NatsAuth::Token)
            .unwrap_or(other),
    })
}

/// Why a name cannot be a JetStream stream name, if it cannot.
pub fn stream_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > 255 {
        return Some("it is longer than 255 bytes".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Some(format!(
            "it contains {c:?} (stream names may not hold '.', '*', '>', '/', '\\' or whitespace)"
        ));
    }
    None
}

/// The consumer names daprd will use (`durableName`, `queueGroupName`), refused when NATS or
/// the NATS protocol cannot take them: a durable name follows the stream name rules (no '.',
/// '*', '>', '/', '\\' or whitespace: a space breaks daprd's connection), a queue group holds no
/// whitespace. Per-pod templates are checked as if replaced by a plain word (`{namespace}` has a
/// warning of its own). A value from a Secret is shown as where it came from.
fn consumer_names(
    values: &[(String, SecretValue)],
    origin: &impl Fn(&str) -> Option<String>,
) -> Result<(), PubsubError> {
    for wanted in ["durableName", "queueGroupName"] {
        let Some((name, value)) = item(values, wanted) else {
            continue;
        };
        let mut text = value.expose().to_owned();
        for template in POD_TEMPLATES {
            text = text.replace(template, "x");
        }
        let problem = if wanted == "durableName" {
            stream_name_problem(&text).filter(|_| !text.is_empty())
        } else {
            text.chars()
                .find(|c| c.is_whitespace() || c.is_control())
                .map(|c| format!("it contains {c:?} (a queue group may not hold whitespace)"))
        };
        if let Some(problem) = problem {
            return Err(PubsubError::InvalidConsumerName {
                item: name.to_owned(),
                name: origin(name).unwrap_or_else(|| format!("{:?}", value.expose())),
                problem: problem.replace("stream names", "consumer names"),
            });
        }
    }
    Ok(())
}

/// Dapr's topic list: spaces removed, split on commas, duplicates dropped (first kept).
fn topic_list(value: &str) -> Vec<String> {
    let value: String = value.chars().filter(|c| *c != ' ').collect();
    let mut out: Vec<String> = Vec::new();
    for topic in value.split(',') {
        if !out.iter().any(|t| t == topic) {
            out.push(topic.to_owned());
        }
    }
    // An empty topic (from `a,,b`) names nothing daprd could publish to.
    out.retain(|t| !t.is_empty());
    out
}

/// Dapr's per-app scopes: `app1=t1,t2;app2=t3`, spaces removed; an entry without `=` is skipped.
fn app_topics(value: &str) -> AppTopics {
    let value: String = value.chars().filter(|c| *c != ' ').collect();
    value
        .split(';')
        .filter_map(|entry| entry.split_once('='))
        .map(|(app, topics)| (app.to_owned(), topic_list(topics)))
        .collect()
}

/// Something the Component asks for that works, but not as its author probably expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// CamelCase reason for the Event.
    pub reason: &'static str,
    /// What happens and what to do.
    pub message: String,
}

/// The warnings the Component alone gives: `subscribed` is how many distinct topics daprd will
/// create consumers for (declarative Subscriptions and `subscriptionScopes`); `clustered` whether
/// the server runs in a cluster, when known.
pub fn warnings(config: &PubsubConfig, subscribed: usize, clustered: Option<bool>) -> Vec<Warning> {
    let mut out = Vec::new();
    if let Some(replicas) = config.consumer_replicas.filter(|r| *r > 1)
        && clustered == Some(false)
    {
        out.push(Warning {
            reason: "ConsumerReplicasOnSingleServer",
            message: format!(
                "metadata item replicas asks daprd for consumers with {replicas} replicas, but                  the NATS server is not clustered, so it refuses them and every subscription                  fails; remove replicas or set it to 1"
            ),
        });
    }
    if let Some(durable) = &config.durable_name {
        if subscribed > 1 {
            out.push(Warning {
                reason: "DurableNameWithSeveralTopics",
                message: format!(
                    "durableName {durable:?} names one consumer, but {subscribed} topics are \
                     subscribed through this Component: every subscription after the first fails \
                     with \"subject does not match consumer\"; remove durableName or use one \
                     Component per topic"
                ),
            });
        }
        if durable.contains(NAMESPACE_TEMPLATE) {
            out.push(Warning {
                reason: "DurableNameWithNamespace",
                message: format!(
                    "durableName {durable:?} holds {{namespace}}, which daprd replaces with \
                     <namespace>.<appID>; a consumer name cannot hold '.', so subscribing fails; \
                     use {{appID}} or a fixed name instead"
                ),
            });
        }
    }
    for name in &config.consumer_only {
        out.push(Warning {
            reason: "ConsumerSettingOnly",
            message: format!(
                "metadata item {name:?} configures Dapr's consumers, not the stream; set the \
                 stream's with the jetstreamkv.io/replicas or jetstreamkv.io/storage annotation"
            ),
        });
    }
    out
}

#[cfg(test)]
mod consumer_name_tests {
    use super::*;
    use crate::failure::Failure;

    fn config(items: &[(&str, &str)]) -> Result<PubsubConfig, PubsubError> {
        let values: Vec<(String, SecretValue)> = items
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(*v)))
            .collect();
        pubsub_config_with_origins(&values, |item| {
            (item == "queueGroupName").then(|| "<Secret s, key q>".to_owned())
        })
    }

    #[test]
    fn consumer_names_nats_cannot_take_are_refused_before_daprd_starts() {
        const URL: (&str, &str) = ("natsURL", "nats://nats:4222");
        for ok in ["orders", "orders-{appID}", "{podName}_x", ""] {
            assert!(config(&[URL, ("durableName", ok)]).is_ok(), "{ok:?}");
        }
        for (bad, says) in [
            ("my consumer", "' '"),
            ("orders.v2", "'.'"),
            ("a>b", "'>'"),
            ("a/b", "'/'"),
        ] {
            let e = config(&[URL, ("durableName", bad)]).unwrap_err();
            assert_eq!(e.reason(), "InvalidConsumerName", "{bad}");
            let text = e.to_string();
            assert!(
                text.contains(says) && text.contains("durableName"),
                "{text}"
            );
            assert!(text.contains("consumer names may not hold"), "{text}");
        }
        assert!(config(&[URL, ("queueGroupName", "workers.eu")]).is_ok());
        let e = config(&[URL, ("queueGroupName", "my workers")]).unwrap_err();
        assert_eq!(e.reason(), "InvalidConsumerName");
        // From a Secret: shown as where it came from, never as itself.
        assert!(e.to_string().contains("<Secret s, key q>"), "{e}");
        assert!(!e.to_string().contains("my workers"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Failure;

    fn values(items: &[(&str, &str)]) -> Vec<(String, SecretValue)> {
        items
            .iter()
            .map(|(n, v)| (n.to_string(), SecretValue::new(*v)))
            .collect()
    }

    fn config(items: &[(&str, &str)]) -> Result<PubsubConfig, PubsubError> {
        pubsub_config(&values(items))
    }

    const URL: (&str, &str) = ("natsURL", "nats://nats:4222");

    #[test]
    fn errors_in_dapr_order_with_their_reasons() {
        for (items, reason) in [
            (vec![], "MissingNatsURL"),
            (vec![("natsURL", " , ")], "MissingNatsURL"),
            (vec![URL, ("jwt", "eyJ")], "JwtWithoutSeed"),
            (vec![URL, ("seedKey", "SU")], "SeedWithoutJwt"),
            (vec![URL, ("tls_client_cert", "/c")], "TlsCertWithoutKey"),
            (vec![URL, ("tls_client_key", "/k")], "TlsKeyWithoutCert"),
            (
                vec![URL, ("tls_client_cert", "/c"), ("tls_client_key", "/k")],
                "TlsClientAuthUnsupported",
            ),
            (
                vec![URL, ("streamName", "dapr.events")],
                "InvalidStreamName",
            ),
            (vec![URL, ("streamName", "{appID}")], "UnresolvableTemplate"),
            (
                vec![URL, ("streamName", "s-{namespace}")],
                "UnresolvableTemplate",
            ),
            (
                vec![("natsURL", "nats://{podName}:4222")],
                "UnresolvableTemplate",
            ),
        ] {
            let err = config(&items).unwrap_err();
            assert_eq!(err.reason(), reason, "{items:?}: {err}");
        }
    }

    #[test]
    fn auth_kinds() {
        for (items, kind) in [
            (vec![URL], "none"),
            (vec![("natsURL", "nats://u:p@nats:4222")], "userinfo"),
            (vec![URL, ("token", "t0k")], "token"),
            (vec![URL, ("jwt", "eyJ"), ("seedKey", "SU")], "jwt"),
            (
                vec![URL, ("jwt", "eyJ"), ("seedKey", "SU"), ("token", "t")],
                "jwt",
            ),
        ] {
            assert_eq!(config(&items).unwrap().auth.kind(), kind, "{items:?}");
        }
        // The state store's rules: with credentials and several servers, nothing that could be
        // a piece of a password is shown.
        let c = config(&[("natsURL", "nats://u:secret@a:4222, nats://b:4222")]).unwrap();
        assert_eq!(
            c.redacted_servers,
            [
                "nats://***@a:4222",
                "#2 (not shown: natsURL holds credentials)"
            ]
        );
        let c = config(&[("natsURL", "nats://u:secret@a:4222")]).unwrap();
        assert_eq!(c.redacted_servers, ["nats://u:***@a:4222"]);
    }

    #[test]
    fn names_are_case_insensitive_and_first_wins() {
        let c = config(&[
            ("NATSURL", "nats://a:4222"),
            ("streamname", "EVENTS"),
            ("streamName", "OTHER"),
        ])
        .unwrap();
        assert_eq!(c.stream_name.as_deref(), Some("EVENTS"));
    }

    #[test]
    fn namespace_prefix_rule() {
        for (items, scoped) in [
            (vec![URL], false),
            (vec![URL, ("durableName", "{namespace}-c")], true),
            // An item pubsub.jetstream never reads still namespaces the topics.
            (vec![URL, ("consumerID", "{namespace}")], true),
            (vec![URL, ("durableName", "{appID}")], false),
        ] {
            assert_eq!(
                config(&items).unwrap().namespace_scoped,
                scoped,
                "{items:?}"
            );
        }
    }

    #[test]
    fn topic_lists_and_scopes_as_dapr_reads_them() {
        let c = config(&[
            URL,
            ("allowedTopics", "orders, payments,orders,,"),
            ("publishingScopes", "app1=orders,audit;app2=;broken"),
            ("subscriptionScopes", "app1 = orders ; app3=refunds"),
        ])
        .unwrap();
        assert_eq!(c.allowed_topics, ["orders", "payments"]);
        assert_eq!(
            c.publishing_scopes,
            vec![
                ("app1".to_string(), vec!["orders".into(), "audit".into()]),
                ("app2".to_string(), vec![])
            ]
        );
        assert_eq!(
            c.subscription_scopes,
            vec![
                ("app1".to_string(), vec!["orders".into()]),
                ("app3".to_string(), vec!["refunds".into()])
            ]
        );
        let topics: Vec<(String, TopicSource)> = c
            .topics()
            .into_iter()
            .map(|t| (t.topic, t.source))
            .collect();
        assert_eq!(topics.len(), 6);
        assert!(topics.contains(&("refunds".into(), TopicSource::SubscriptionScopes)));
        assert!(topics.contains(&("audit".into(), TopicSource::PublishingScopes)));
    }

    #[test]
    fn component_warnings() {
        let reasons = |items: &[(&str, &str)], subscribed| -> Vec<&'static str> {
            warnings(&config(items).unwrap(), subscribed, Some(true))
                .into_iter()
                .map(|w| w.reason)
                .collect()
        };
        assert!(reasons(&[URL], 5).is_empty());
        assert!(reasons(&[URL, ("durableName", "d")], 1).is_empty());
        assert_eq!(
            reasons(&[URL, ("durableName", "d")], 2),
            ["DurableNameWithSeveralTopics"]
        );
        assert_eq!(
            reasons(&[URL, ("durableName", "{namespace}")], 1),
            ["DurableNameWithNamespace"]
        );
        assert_eq!(
            reasons(&[URL, ("Replicas", "3"), ("memoryStorage", "true")], 0),
            ["ConsumerSettingOnly", "ConsumerSettingOnly"]
        );
        let w = warnings(&config(&[URL, ("replicas", "3")]).unwrap(), 0, None);
        assert!(w[0].message.contains("\"replicas\""), "{}", w[0].message);
        let single = |items: &[(&str, &str)], clustered| -> Vec<&'static str> {
            warnings(&config(items).unwrap(), 0, clustered)
                .into_iter()
                .map(|w| w.reason)
                .filter(|r| *r != "ConsumerSettingOnly")
                .collect()
        };
        assert_eq!(
            single(&[URL, ("replicas", "3")], Some(false)),
            ["ConsumerReplicasOnSingleServer"]
        );
        assert!(single(&[URL, ("replicas", "3")], Some(true)).is_empty());
        assert!(single(&[URL, ("replicas", "3")], None).is_empty());
        assert!(single(&[URL, ("replicas", "1")], Some(false)).is_empty());
    }

    #[test]
    fn no_secret_in_debug_output() {
        let c = config(&[
            ("natsURL", "nats://u:hunter2@a:4222"),
            ("jwt", "JWTSECRET"),
            ("seedKey", "SUSEED"),
        ])
        .unwrap();
        let text = format!("{c:?}");
        for secret in ["hunter2", "JWTSECRET", "SUSEED"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
