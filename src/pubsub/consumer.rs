//! The durable consumer daprd will bind (pure): what a Component's metadata makes daprd ask of
//! it, read as components-contrib's `pubsub/jetstream` reads it, and the differences with a
//! consumer that already exists under its `durableName` (one made by an earlier version of the
//! Component, say). daprd cannot bind a durable consumer that differs: its subscription fails,
//! and keeps failing until someone deletes the consumer. The operator never touches Dapr's
//! consumers; it names the difference before daprd runs.

use std::time::Duration;

use async_nats::jetstream::consumer;

use crate::dapr::store::item;
use crate::secret_value::SecretValue;

/// What daprd asks of its consumers, from the Component's metadata. Fields daprd leaves to the
/// server's default when the item is absent are None: only what the Component sets is compared.
/// The fields whose absence daprd sends as zero, which the server keeps as zero (flow control,
/// heartbeat, rate limit, memory storage), are always compared, as the server compares them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerAsk {
    /// `deliverPolicy` (daprd's default: all); None when not one daprd takes (daprd refuses it).
    pub deliver_policy: Option<DeliverAsk>,
    /// `ackPolicy` (daprd's default, and for any other value: explicit).
    pub ack_policy: AckAsk,
    /// `queueGroupName`: the consumer's deliver group.
    pub deliver_group: Option<String>,
    /// `ackWait`, when set.
    pub ack_wait: Option<Duration>,
    /// `maxDeliver`, when set.
    pub max_deliver: Option<i64>,
    /// `maxAckPending`, when set.
    pub max_ack_pending: Option<i64>,
    /// `startSequence`, when set.
    pub start_sequence: Option<u64>,
    /// `flowControl`.
    pub flow_control: bool,
    /// `heartbeat` (zero: none).
    pub heartbeat: Duration,
    /// `rateLimit`, in bits per second (zero: none).
    pub rate_limit: u64,
    /// `memoryStorage`.
    pub memory_storage: bool,
    /// `replicas`, when set.
    pub replicas: Option<usize>,
}

/// A deliver policy daprd asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliverAsk {
    /// `all`, `last`, `new` or `sequence` (with its start).
    Policy(consumer::DeliverPolicy),
    /// `time`, from `startTime` (Unix seconds; None: not given, daprd sends no start time and
    /// the server refuses the consumer).
    ByStartTime(Option<i64>),
}

/// An ack policy daprd asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AckAsk {
    /// `explicit` (the default).
    #[default]
    Explicit,
    /// `all`.
    All,
    /// `none`.
    None,
}

impl ConsumerAsk {
    /// From the metadata values, as daprd reads them.
    pub fn from_values(values: &[(String, SecretValue)]) -> Self {
        let text = |wanted: &str| {
            item(values, wanted)
                .map(|(_, v)| v.expose().trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let number = |wanted: &str| text(wanted).and_then(|v| v.parse::<i64>().ok());
        let flag = |wanted: &str| text(wanted).is_some_and(|v| crate::dapr::metadata::is_true(&v));
        let duration = |wanted: &str| {
            text(wanted)
                .and_then(|v| crate::duration::parse(&v))
                .filter(|d| !d.is_zero())
        };
        let deliver_policy = match text("deliverPolicy").as_deref() {
            None | Some("all") => Some(DeliverAsk::Policy(consumer::DeliverPolicy::All)),
            Some("last") => Some(DeliverAsk::Policy(consumer::DeliverPolicy::Last)),
            Some("new") => Some(DeliverAsk::Policy(consumer::DeliverPolicy::New)),
            Some("sequence") => {
                text("startSequence")
                    .and_then(|v| v.parse().ok())
                    .map(|start_sequence| {
                        DeliverAsk::Policy(consumer::DeliverPolicy::ByStartSequence {
                            start_sequence,
                        })
                    })
            }
            Some("time") => Some(DeliverAsk::ByStartTime(number("startTime"))),
            Some(_) => None,
        };
        let ack_policy = match text("ackPolicy").as_deref() {
            Some("all") => AckAsk::All,
            Some("none") => AckAsk::None,
            _ => AckAsk::Explicit,
        };
        Self {
            deliver_policy,
            ack_policy,
            deliver_group: text("queueGroupName"),
            ack_wait: duration("ackWait"),
            max_deliver: number("maxDeliver").filter(|n| *n != 0),
            max_ack_pending: number("maxAckPending").filter(|n| *n != 0),
            start_sequence: text("startSequence")
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0),
            flow_control: flag("flowControl"),
            heartbeat: duration("heartbeat").unwrap_or_default(),
            rate_limit: text("rateLimit")
                .and_then(|v| v.parse().ok())
                .unwrap_or_default(),
            memory_storage: flag("memoryStorage"),
            replicas: number("replicas")
                .filter(|n| *n > 0)
                .and_then(|n| usize::try_from(n).ok()),
        }
    }
}

/// One field where the existing consumer differs from what daprd will ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The Component's metadata item (daprd's name for the field).
    pub field: &'static str,
    /// The existing consumer's value.
    pub live: String,
    /// What daprd will ask.
    pub asked: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} on the consumer, the Component asks {}",
            self.field, self.live, self.asked
        )
    }
}

fn deliver_name(p: &consumer::DeliverPolicy) -> String {
    match p {
        consumer::DeliverPolicy::All => "all".into(),
        consumer::DeliverPolicy::Last => "last".into(),
        consumer::DeliverPolicy::New => "new".into(),
        consumer::DeliverPolicy::ByStartSequence { start_sequence } => {
            format!("sequence (from {start_sequence})")
        }
        consumer::DeliverPolicy::ByStartTime { start_time } => {
            start_time_name(Some(start_time.unix_timestamp()))
        }
        consumer::DeliverPolicy::LastPerSubject => "lastPerSubject".into(),
    }
}

fn start_time_name(unix: Option<i64>) -> String {
    match unix {
        Some(t) => format!("time (from startTime {t})"),
        None => "time (no startTime)".into(),
    }
}

fn duration_name(d: Duration) -> String {
    if d.is_zero() {
        "none".into()
    } else {
        crate::duration::format(d)
    }
}

fn ack_name(p: consumer::AckPolicy) -> &'static str {
    match p {
        consumer::AckPolicy::Explicit => "explicit",
        consumer::AckPolicy::All => "all",
        consumer::AckPolicy::None => "none",
        consumer::AckPolicy::FlowControl => "flowControl",
    }
}

/// Where `live` (the existing consumer of the durable name) differs from what daprd will ask
/// for `topics` (the topics the Component's apps subscribe to; daprd filters each subscription's
/// consumer on its topic); empty when daprd can bind it as it is.
pub fn differences(ask: &ConsumerAsk, live: &consumer::Config, topics: &[&str]) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut differ = |field, live: String, asked: String| {
        if live != asked {
            out.push(Difference { field, live, asked });
        }
    };
    match &ask.deliver_policy {
        Some(DeliverAsk::Policy(policy)) => differ(
            "deliverPolicy",
            deliver_name(&live.deliver_policy),
            deliver_name(policy),
        ),
        Some(DeliverAsk::ByStartTime(unix)) => differ(
            "deliverPolicy",
            deliver_name(&live.deliver_policy),
            start_time_name(*unix),
        ),
        None => {}
    }
    let asked_ack = match ask.ack_policy {
        AckAsk::Explicit => consumer::AckPolicy::Explicit,
        AckAsk::All => consumer::AckPolicy::All,
        AckAsk::None => consumer::AckPolicy::None,
    };
    differ(
        "ackPolicy",
        ack_name(live.ack_policy).into(),
        ack_name(asked_ack).into(),
    );
    let group = |g: Option<&str>| g.map_or_else(|| "none".to_owned(), |g| format!("{g:?}"));
    differ(
        "queueGroupName",
        group(live.deliver_group.as_deref()),
        group(ask.deliver_group.as_deref()),
    );
    if let Some(wait) = ask.ack_wait {
        differ(
            "ackWait",
            crate::duration::format(live.ack_wait),
            crate::duration::format(wait),
        );
    }
    if let Some(n) = ask.max_deliver {
        differ("maxDeliver", live.max_deliver.to_string(), n.to_string());
    }
    if let Some(n) = ask.max_ack_pending {
        differ(
            "maxAckPending",
            live.max_ack_pending.to_string(),
            n.to_string(),
        );
    }
    differ(
        "flowControl",
        live.flow_control.to_string(),
        ask.flow_control.to_string(),
    );
    differ(
        "heartbeat",
        duration_name(live.idle_heartbeat),
        duration_name(ask.heartbeat),
    );
    differ(
        "rateLimit",
        live.rate_limit.to_string(),
        ask.rate_limit.to_string(),
    );
    differ(
        "memoryStorage",
        live.memory_storage.to_string(),
        ask.memory_storage.to_string(),
    );
    if let Some(n) = ask.replicas {
        differ("replicas", live.num_replicas.to_string(), n.to_string());
    }
    // One durable consumer filters one topic (components-contrib #2385): each other topic's
    // subscription asks it for its own, and fails.
    if !live.filter_subject.is_empty()
        && let Some(other) = topics.iter().find(|t| **t != live.filter_subject)
    {
        differ(
            "filterSubject",
            format!("{:?}", crate::nats::remote_text(&live.filter_subject)),
            format!("{other:?} (a topic subscribed with this durableName)"),
        );
    }
    out
}

/// What `jetstreamkv.io/recreate-consumers` does with a durable consumer daprd cannot bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recreate {
    /// Delete it: daprd makes it anew, as the Component asks, when it subscribes.
    Delete,
    /// Keep it: a subscriber is bound to it (an app is receiving with it now).
    KeepBound,
    /// Keep it: the stream is not one the operator made for this Component, so the consumer
    /// cannot be said to be this Component's.
    KeepNotOurs,
    /// Keep it: audit mode changes nothing.
    KeepAudit,
}

impl Recreate {
    /// Why the consumer was kept, as the status says it (None: it is deleted).
    pub fn kept_because(self) -> Option<&'static str> {
        match self {
            Self::Delete => None,
            Self::KeepBound => Some("a subscriber is bound to it"),
            Self::KeepNotOurs => Some("the stream is not one the operator made for this Component"),
            Self::KeepAudit => Some("audit mode"),
        }
    }
}

/// Whether the opt-in deletes a consumer that differs from what daprd will ask: never one a
/// subscriber is bound to (`bound`: nats-server's `push_bound`), never one on a stream the
/// operator did not make for this Component (`ours`), never in audit mode.
pub fn recreate(bound: bool, ours: bool, audit: bool) -> Recreate {
    if audit {
        Recreate::KeepAudit
    } else if !ours {
        Recreate::KeepNotOurs
    } else if bound {
        Recreate::KeepBound
    } else {
        Recreate::Delete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(items: &[(&str, &str)]) -> ConsumerAsk {
        let values: Vec<(String, SecretValue)> = items
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(*v)))
            .collect();
        ConsumerAsk::from_values(&values)
    }

    fn live(deliver: consumer::DeliverPolicy) -> consumer::Config {
        consumer::Config {
            durable_name: Some("orders".into()),
            deliver_policy: deliver,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn a_consumer_made_for_other_metadata_is_named_field_by_field() {
        // components-contrib #2162: startTime removed, deliverPolicy now all.
        let d = differences(&ask(&[]), &live(consumer::DeliverPolicy::New), &[]);
        assert_eq!(
            d.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["deliverPolicy is new on the consumer, the Component asks all"]
        );
        assert!(
            differences(
                &ask(&[("deliverPolicy", "new")]),
                &live(consumer::DeliverPolicy::New),
                &[]
            )
            .is_empty()
        );
        // #2645: a queue subscription needs a consumer with a deliver group.
        let d = differences(
            &ask(&[("queueGroupName", "workers")]),
            &live(consumer::DeliverPolicy::All),
            &[],
        );
        assert_eq!(d[0].field, "queueGroupName");
        assert_eq!(
            (d[0].live.as_str(), d[0].asked.as_str()),
            ("none", "\"workers\"")
        );
        // Only what the Component sets is compared beyond the policies.
        let d = differences(
            &ask(&[
                ("ackWait", "1m"),
                ("maxDeliver", "5"),
                ("maxAckPending", "1000"),
                ("ackPolicy", "all"),
            ]),
            &live(consumer::DeliverPolicy::All),
            &[],
        );
        let fields: Vec<_> = d.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["ackPolicy", "ackWait", "maxDeliver"]);
        // A policy daprd refuses (it fails at start for that) is not compared.
        assert!(
            differences(
                &ask(&[("deliverPolicy", "sideways")]),
                &live(consumer::DeliverPolicy::New),
                &[]
            )
            .is_empty()
        );
        let seq = ask(&[("deliverPolicy", "sequence"), ("startSequence", "7")]);
        let d = differences(&seq, &live(consumer::DeliverPolicy::New), &[]);
        assert_eq!(d[0].asked, "sequence (from 7)");
    }

    #[test]
    fn the_fields_daprd_sends_as_zero_are_compared_as_the_server_compares_them() {
        // A consumer made with flow control, a heartbeat, a rate limit and in memory: a
        // Component that sets none of them makes daprd ask for zero of each.
        let mut made = live(consumer::DeliverPolicy::All);
        made.flow_control = true;
        made.idle_heartbeat = Duration::from_secs(5);
        made.rate_limit = 1_000_000;
        made.memory_storage = true;
        made.num_replicas = 1;
        let fields = |ask: &ConsumerAsk| {
            differences(ask, &made, &[])
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(&ask(&[])),
            [
                "flowControl is true on the consumer, the Component asks false",
                "heartbeat is 5s on the consumer, the Component asks none",
                "rateLimit is 1000000 on the consumer, the Component asks 0",
                "memoryStorage is true on the consumer, the Component asks false",
            ]
        );
        let same = ask(&[
            ("flowControl", "true"),
            ("heartbeat", "5s"),
            ("rateLimit", "1000000"),
            ("memoryStorage", "T"),
            ("replicas", "1"),
        ]);
        assert_eq!(fields(&same), Vec::<String>::new());
        let d = differences(&ask(&[("replicas", "3")]), &made, &[]);
        assert!(
            d.iter()
                .any(|d| d.to_string() == "replicas is 1 on the consumer, the Component asks 3")
        );
    }

    #[test]
    fn a_start_time_and_a_filter_subject_are_named() {
        // As nats-server answers CONSUMER.INFO for a consumer made from startTime 1767225600.
        let made: consumer::Config = serde_json::from_value(serde_json::json!({
            "durable_name": "orders",
            "deliver_policy": "by_start_time",
            "opt_start_time": "2026-01-01T00:00:00Z",
            "ack_policy": "explicit",
            "filter_subject": "orders",
        }))
        .expect("a consumer config");
        let time = |t: &str| ask(&[("deliverPolicy", "time"), ("startTime", t)]);
        assert!(differences(&time("1767225600"), &made, &["orders"]).is_empty());
        let d = differences(&time("1767225601"), &made, &["orders"]);
        assert_eq!(
            d[0].to_string(),
            "deliverPolicy is time (from startTime 1767225600) on the consumer, the Component \
             asks time (from startTime 1767225601)"
        );
        // components-contrib #2162: startTime removed.
        let d = differences(&ask(&[]), &made, &["orders"]);
        assert_eq!(d[0].asked, "all");
        // #2385: one durable name, two topics: the second topic's subscription fails.
        let d = differences(&time("1767225600"), &made, &["orders", "payments"]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].field, "filterSubject");
        assert_eq!(
            d[0].to_string(),
            "filterSubject is \"orders\" on the consumer, the Component asks \"payments\" (a \
             topic subscribed with this durableName)"
        );
    }

    #[test]
    fn a_consumer_is_deleted_only_when_unbound_ours_and_enforced() {
        assert_eq!(recreate(false, true, false), Recreate::Delete);
        assert_eq!(recreate(true, true, false), Recreate::KeepBound);
        assert_eq!(recreate(false, false, false), Recreate::KeepNotOurs);
        assert_eq!(recreate(true, false, false), Recreate::KeepNotOurs);
        assert_eq!(recreate(false, true, true), Recreate::KeepAudit);
        assert_eq!(Recreate::Delete.kept_because(), None);
    }
}
