//! The app's own rights, checked as daprd will use them: with the Component's credentials, on a
//! connection of its own, the calls Dapr's `state.jetstream` store makes (nats.go's
//! `KeyValue(bucket)` at start-up, then get, set and delete), each made so that it changes
//! nothing. A right the user lacks shows as the server's permissions violation naming the
//! subject; the first one found is reported, with the subject as it may be shown.
//!
//! The probes ([`state_store_probes`]) are pure; [`check`] makes them.

use std::time::Duration;

use async_nats::HeaderMap;

use super::pool::ServerErrors;

/// The key the probes use: no daprd key has this form (daprd prefixes keys with the app id).
pub const PROBE_KEY: &str = "jetstream-kv-operator-rights-check";
/// A stream name no stream has: a publish that expects it is refused by JetStream, unstored.
const NO_SUCH_STREAM: &str = "jetstream-kv-operator-rights-check";

/// One call daprd makes, as the operator makes it without changing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The subject published to.
    pub subject: String,
    /// The same subject as it may be shown (the bucket may come from a Secret).
    pub shown: String,
    /// What daprd does with it.
    pub what: &'static str,
    /// The grant that allows it, as shown.
    pub grant: String,
    /// Headers of the request (a publish to the bucket expects a stream that does not exist, so
    /// JetStream refuses it and stores nothing).
    pub expect_no_stream: bool,
    /// The request's body.
    pub body: Vec<u8>,
}

/// A right the app's user lacks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the Component's own NATS user may not {action} {subject} ({what}), so daprd would fail on it; {fix} (the operator checked with the Component's credentials; the server refused)"
)]
pub struct Denied {
    /// `publish to`, `subscribe to` or `connect to`.
    pub action: &'static str,
    /// The subject (or servers) refused, as it may be shown.
    pub subject: String,
    /// What daprd does with it.
    pub what: &'static str,
    /// What to do, as shown.
    pub fix: String,
}

impl Denied {
    /// The servers refused the Component's own credentials (`servers` as shown).
    pub fn connect(servers: &str) -> Self {
        Self {
            action: "connect to",
            subject: servers.to_owned(),
            what: "daprd connects with the Component's credentials",
            fix: "check the Component's credentials: the server does not accept them".to_owned(),
        }
    }
}

/// The calls of Dapr's `state.jetstream` store on `bucket` (`shown`: the bucket as it may be
/// shown), in the order daprd makes them. `direct`: whether the bucket allows direct get (the
/// operator's do; a bucket made elsewhere may not), which decides how daprd reads.
pub fn state_store_probes(bucket: &str, shown: &str, direct: bool) -> Vec<Probe> {
    let probe = |subject: &dyn Fn(&str) -> String, what, grant: &dyn Fn(&str) -> String| Probe {
        subject: subject(bucket),
        shown: subject(shown),
        what,
        grant: grant(shown),
        expect_no_stream: false,
        body: Vec::new(),
    };
    let mut probes = vec![probe(
        &|b| format!("$JS.API.STREAM.INFO.KV_{b}"),
        "daprd's KeyValue(bucket) at start-up",
        &|b| format!("$JS.API.STREAM.INFO.KV_{b}"),
    )];
    probes.push(if direct {
        probe(
            &|b| format!("$JS.API.DIRECT.GET.KV_{b}.$KV.{b}.{PROBE_KEY}"),
            "a state get",
            &|b| format!("$JS.API.DIRECT.GET.KV_{b}.>"),
        )
    } else {
        let mut get = probe(
            &|b| format!("$JS.API.STREAM.MSG.GET.KV_{b}"),
            "a state get",
            &|b| format!("$JS.API.STREAM.MSG.GET.KV_{b}"),
        );
        get.body = format!(r#"{{"last_by_subj":"$KV.{bucket}.{PROBE_KEY}"}}"#).into_bytes();
        get
    });
    let mut put = probe(
        &|b| format!("$KV.{b}.{PROBE_KEY}"),
        "a state save or delete",
        &|b| format!("$KV.{b}.>"),
    );
    put.expect_no_stream = true;
    probes.push(put);
    probes
}

/// The calls of Dapr's `pubsub.jetstream` on `stream` that can be made so that nothing is
/// created, stored or refused as a request: the stream lookup by topic (without `streamName`)
/// and a publish (expecting another stream, which JetStream refuses without storing it).
/// `subject`: a topic subject of the stream without wildcards, when there is one.
///
/// A consumer's creation is not checked: short of creating one, the only probe is a request the
/// server refuses (and counts as an API error), which the operator never sends.
pub fn pubsub_probes(subject: Option<&str>, by_subject: bool) -> Vec<Probe> {
    let Some(topic) = subject else {
        return Vec::new();
    };
    let probe = |subject: String, what, grant: String| Probe {
        shown: subject.clone(),
        subject,
        what,
        grant,
        expect_no_stream: false,
        body: Vec::new(),
    };
    let mut probes = Vec::new();
    if by_subject {
        let mut names = probe(
            "$JS.API.STREAM.NAMES".into(),
            "daprd's lookup of the stream of a topic when it subscribes",
            "$JS.API.STREAM.NAMES".into(),
        );
        names.body = serde_json::json!({ "subject": topic })
            .to_string()
            .into_bytes();
        probes.push(names);
    }
    let mut publish = probe(topic.to_owned(), "a publish", topic.to_owned());
    publish.expect_no_stream = true;
    probes.push(publish);
    probes
}

/// What the server's errors say about `probe`: refused to publish to its subject, or to
/// subscribe to the inbox where the reply would come. Pure.
pub fn refusal(probe: &Probe, errors: &[String], inbox: &str) -> Option<Denied> {
    // `subject`: the quoted subject as the server writes it, whole or its start.
    let said = |kind: &str, subject: &str| {
        errors.iter().any(|e| {
            let lower = e.to_ascii_lowercase();
            lower.contains(&format!("permissions violation for {kind} to")) && e.contains(subject)
        })
    };
    if said("publish", &format!("\"{}\"", probe.subject)) {
        return Some(Denied {
            action: "publish to",
            subject: probe.shown.clone(),
            what: probe.what,
            fix: format!("grant it publish on {}", probe.grant),
        });
    }
    if said("subscription", &format!("\"{inbox}.")) {
        return Some(Denied {
            action: "subscribe to",
            subject: format!("{inbox}.>"),
            what: "every reply daprd waits for",
            fix: format!("grant it subscribe on {inbox}.>"),
        });
    }
    None
}

/// Makes `probes` on `client` (the Component's own credentials) in order, each within
/// `timeout`; the first right the server refuses, or None. A probe that gets no answer and no
/// refusal (a slow server) proves nothing and is not reported.
pub async fn check(
    client: &async_nats::Client,
    errors: &ServerErrors,
    probes: &[Probe],
    timeout: Duration,
) -> Option<Denied> {
    // async-nats takes replies on `_INBOX.<id>.*`, as nats.go does on `_INBOX.>`.
    let inbox = "_INBOX";
    for probe in probes {
        let mut headers = HeaderMap::new();
        if probe.expect_no_stream {
            headers.insert(async_nats::header::NATS_EXPECTED_STREAM, NO_SUCH_STREAM);
        }
        let request =
            client.request_with_headers(probe.subject.clone(), headers, probe.body.clone().into());
        let refused = async {
            // The server's -ERR comes at once; the request would only time out.
            loop {
                if let Some(denied) = refusal(probe, &errors.seen(), inbox) {
                    return denied;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                reply = request => match reply {
                    Ok(_) => None,
                    // No answer: a refusal may still be on its way.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        refusal(probe, &errors.seen(), inbox)
                    }
                },
                denied = refused => Some(denied),
            }
        })
        .await;
        match outcome {
            Ok(Some(denied)) => return Some(denied),
            Ok(None) => {}
            Err(_) => {
                if let Some(denied) = refusal(probe, &errors.seen(), inbox) {
                    return Some(denied);
                }
                tracing::debug!(subject = %probe.shown, "a rights probe got no answer; not reported");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probes_are_daprd_s_calls_and_show_only_the_shown_bucket() {
        let probes = state_store_probes("orders", "<Secret s, key bucket>", true);
        let subjects: Vec<&str> = probes.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "$JS.API.STREAM.INFO.KV_orders",
                "$JS.API.DIRECT.GET.KV_orders.$KV.orders.jetstream-kv-operator-rights-check",
                "$KV.orders.jetstream-kv-operator-rights-check",
            ]
        );
        for p in &probes {
            assert!(
                !p.shown.contains("orders") && !p.grant.contains("orders"),
                "{p:?}"
            );
        }
        assert!(probes[2].expect_no_stream);
        let indirect = state_store_probes("orders", "orders", false);
        assert_eq!(indirect[1].subject, "$JS.API.STREAM.MSG.GET.KV_orders");
        assert_eq!(indirect[1].grant, "$JS.API.STREAM.MSG.GET.KV_orders");
    }

    #[test]
    fn the_pubsub_probes_create_nothing_and_follow_daprd_s_subjects() {
        let probes = pubsub_probes(Some("orders"), true);
        let subjects: Vec<&str> = probes.iter().map(|p| p.subject.as_str()).collect();
        assert_eq!(subjects, ["$JS.API.STREAM.NAMES", "orders"]);
        assert_eq!(probes[0].body, br#"{"subject":"orders"}"#);
        assert!(probes[1].expect_no_stream);
        // With streamName, no lookup; no concrete subject, nothing to publish to.
        assert_eq!(pubsub_probes(Some("t"), false).len(), 1);
        assert!(pubsub_probes(None, true).is_empty());
    }

    #[test]
    fn a_refusal_is_the_server_s_permissions_violation_for_the_probe() {
        let probes = state_store_probes("orders", "orders", true);
        let error = |kind: &str, subject: &str| {
            vec![format!("Permissions Violation for {kind} to \"{subject}\"")]
        };
        let denied = refusal(
            &probes[0],
            &error("Publish", "$JS.API.STREAM.INFO.KV_orders"),
            "_INBOX",
        )
        .expect("refused");
        assert_eq!(denied.subject, "$JS.API.STREAM.INFO.KV_orders");
        let text = denied.to_string();
        assert!(
            text.contains("publish to $JS.API.STREAM.INFO.KV_orders"),
            "{text}"
        );
        assert!(text.contains("start-up"), "{text}");
        // Another subject's violation is not this probe's.
        assert_eq!(
            refusal(&probes[0], &error("Publish", "$KV.orders.x"), "_INBOX"),
            None
        );
        assert_eq!(
            refusal(
                &probes[0],
                &error("Publish", "$JS.API.STREAM.INFO.KV_orders2"),
                "_INBOX"
            )
            .map(|d| d.subject),
            None
        );
        // The inbox refused: named as daprd's replies.
        let inbox =
            refusal(&probes[1], &error("Subscription", "_INBOX.abc.*"), "_INBOX").expect("refused");
        assert_eq!(inbox.action, "subscribe to");
        assert_eq!(inbox.subject, "_INBOX.>");
    }
}
