//! nats-server's own record of the JetStream API requests it serves: its API audit advisories
//! (`$JS.EVENT.ADVISORY.API`), one per request, whoever sent it and whatever the sender counts.

use std::sync::{Arc, Mutex};

/// The stream requests nats-server audits, as `(verb, stream)` (`("INFO", "KV_orders")`,
/// `("MSG.DELETE", "KV_orders")`), collected while the subscription lives.
#[derive(Clone, Default)]
pub struct Advisories(Arc<Mutex<Vec<(String, String)>>>);

/// The verbs of the stream requests that change a stream.
const MUTATING: [&str; 5] = ["CREATE", "UPDATE", "DELETE", "PURGE", "MSG.DELETE"];

impl Advisories {
    /// Subscribes on `url` (keep the client: the subscription lives as long as it does).
    pub async fn start(url: &str) -> (Self, async_nats::Client) {
        let client = async_nats::connect(url).await.expect("connect the watcher");
        let mut sub = client
            .subscribe("$JS.EVENT.ADVISORY.API.>")
            .await
            .expect("subscribe");
        // nats-server publishes its API audit on the bare subject; subscribe to both.
        let mut bare = client
            .subscribe("$JS.EVENT.ADVISORY.API")
            .await
            .expect("subscribe");
        client.flush().await.expect("flush");
        let seen = Self::default();
        let all = seen.clone();
        tokio::spawn(async move {
            use futures::StreamExt as _;
            loop {
                let message = tokio::select! {
                    Some(m) = sub.next() => m,
                    Some(m) = bare.next() => m,
                    else => break,
                };
                let Ok(audit) = serde_json::from_slice::<serde_json::Value>(&message.payload)
                else {
                    continue;
                };
                let subject = audit["subject"].as_str().unwrap_or_default();
                if let Some(request) = stream_request(subject) {
                    all.0.lock().unwrap().push(request);
                }
            }
        });
        (seen, client)
    }

    /// The requests that change a stream (create, update, delete, purge, message delete).
    pub fn mutating(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(verb, _)| MUTATING.contains(&verb.as_str()))
            .cloned()
            .collect()
    }

    /// Every stream request seen (reads included).
    pub fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }

    /// How many stream requests were seen (reads included).
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The verbs of the requests seen for `stream`, in the order they came.
    pub fn naming(&self, stream: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s == stream)
            .map(|(verb, _)| verb.clone())
            .collect()
    }

    /// How many `verb` requests were seen for `stream` (`""` for an account-wide request such as
    /// `LIST` or `NAMES`).
    pub fn count_of(&self, verb: &str, stream: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, s)| v == verb && s == stream)
            .count()
    }

    /// Waits until at least `n` `verb` requests for `stream` are seen, and returns how many.
    /// nats-server publishes its audit after it has answered, on another connection than the
    /// requester's: the advisory can arrive after the request's effect is visible.
    pub async fn wait_for(&self, verb: &str, stream: &str, n: usize) -> usize {
        crate::support::eventually(
            std::time::Duration::from_secs(10),
            &format!("{n} {verb} of {stream:?} audited"),
            || async {
                let seen = self.count_of(verb, stream);
                (seen >= n).then_some(seen)
            },
            async || format!("{:?}", self.all()),
        )
        .await
    }

    /// The requests seen since the last call (the first call: since the start), emptied out.
    pub fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// `(verb, stream)` of a stream request's subject: `$JS.API.STREAM.<VERB>.<stream>`, where a
/// message request's verb has two words (`MSG.GET`, `MSG.DELETE`).
fn stream_request(subject: &str) -> Option<(String, String)> {
    let rest = subject.strip_prefix("$JS.API.STREAM.")?;
    let (verb, stream) = rest.split_once('.').unwrap_or((rest, ""));
    if verb == "MSG" {
        let (second, stream) = stream.split_once('.').unwrap_or((stream, ""));
        return Some((format!("MSG.{second}"), stream.to_owned()));
    }
    Some((verb.to_owned(), stream.to_owned()))
}

#[test]
fn stream_requests_are_read_with_their_verb() {
    let request = |s: &str| stream_request(s).map(|(v, s)| format!("{v} {s}"));
    assert_eq!(
        request("$JS.API.STREAM.UPDATE.KV_a").as_deref(),
        Some("UPDATE KV_a")
    );
    assert_eq!(
        request("$JS.API.STREAM.MSG.GET.KV_a").as_deref(),
        Some("MSG.GET KV_a")
    );
    assert_eq!(
        request("$JS.API.STREAM.MSG.DELETE.KV_a").as_deref(),
        Some("MSG.DELETE KV_a")
    );
    assert_eq!(request("$JS.API.STREAM.LIST").as_deref(), Some("LIST "));
    assert_eq!(request("$JS.API.CONSUMER.INFO.KV_a.c"), None);
}
